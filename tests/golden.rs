//! Numeric truth from an independent implementation: real tf.keras (tests/golden/generate.py)
//! ran small versions of every seed architecture, edge cases of every layer kind, and the full
//! original U-Net at its smallest input. unetc's CPU executor must reproduce its outputs.

mod common;

use common::*;
use std::path::Path;
use unetc::exec::cpu::CpuModel;
use unetc::exec::Tensor;
use unetc::io::weights::load_weights;
use unetc::ir::Op;
use unetc::runner::expected_weights;

/// Largest |unetc - keras| relative to the largest |keras| value of the output.
const TOLERANCE: f32 = 1e-5;

fn max_relative_error(got: &Tensor, want: &Tensor) -> f32 {
    assert_eq!(got.shape, want.shape);
    let scale = want
        .data
        .iter()
        .fold(0.0f32, |m, v| m.max(v.abs()))
        .max(f32::MIN_POSITIVE);
    got.data
        .iter()
        .zip(&want.data)
        .fold(0.0f32, |m, (g, w)| m.max((g - w).abs()))
        / scale
}

fn check_fixture(stem: &str) -> f32 {
    let spec = Path::new("tests/golden").join(format!("{stem}.unet"));
    let c = compile(&spec);
    assert!(
        !c.has_errors(),
        "{}",
        unetc::diag::render_plain(&c.sources, &c.diags)
    );
    let (input, want) = golden_io(stem);
    let weights_file = root().join(format!("tests/golden/{stem}.weights.safetensors"));
    let got = if weights_file.exists() {
        let weights = load_weights(&weights_file, &expected_weights(&c))
            .expect("fixture weights fit the spec");
        CpuModel::new(&c.graph, &c.info, &weights)
            .expect("bind")
            .run(&input)
            .expect("run")
            .remove(0)
    } else {
        // Too big to store: regenerate with the formula.
        CpuModel::new(&c.graph, &c.info, &formula_weights(&c))
            .expect("bind")
            .run(&input)
            .expect("run")
            .remove(0)
    };
    let err = max_relative_error(&got, &want);
    if std::env::var("GOLDEN_DEBUG").is_ok() && err > TOLERANCE {
        let bad: Vec<usize> = (0..want.data.len())
            .filter(|&i| (got.data[i] - want.data[i]).abs() > 1e-4)
            .collect();
        println!(
            "{stem}: {} bad of {}, first {:?}",
            bad.len(),
            want.data.len(),
            &bad[..bad.len().min(10)]
        );
    }
    println!("{stem}: max relative error {err:.2e}");
    err
}

#[test]
fn cpu_executor_matches_tf_keras_on_every_fixture() {
    let mut stems: Vec<String> = std::fs::read_dir(root().join("tests/golden"))
        .unwrap()
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .to_str()?
                .strip_suffix(".io.safetensors")
                .map(String::from)
        })
        .collect();
    stems.sort();
    assert!(stems.len() >= 10, "fixtures missing: {stems:?}");
    let mut failures = Vec::new();
    for stem in &stems {
        let err = check_fixture(stem);
        if err.is_nan() || err > TOLERANCE {
            failures.push(format!("{stem}: {err:.2e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "over tolerance {TOLERANCE:e}: {failures:?}"
    );
}

/// The formula really is the generator's: the stored weights of a fixture equal it exactly.
#[test]
fn weight_formula_matches_the_generator() {
    let c = compile(Path::new("tests/golden/original_small.unet"));
    let weights = load_weights(
        &root().join("tests/golden/original_small.weights.safetensors"),
        &expected_weights(&c),
    )
    .unwrap();
    for &id in &c.info.keras_order {
        let node = c.graph.node(id);
        for w in &c.info.layers[id.index()].weights {
            let name = format!("{}/{}", node.name, w.name);
            let class = if matches!(node.op, Op::Conv2DTranspose(_)) {
                "Conv2DTranspose"
            } else {
                "other"
            };
            let stored = weights.get(&name).unwrap();
            assert_eq!(stored, &formula(&name, &stored.shape, class), "{name}");
        }
    }
}

/// The memory budget counts a CPU run's weights as the estimate says (`tiles`/`run --memory`):
/// never less than what the model holds (the tensors as read + its prepared copies), and within
/// 2% of it on the small U-Nets (the estimate must count Winograd's 16 taps for 9).
#[test]
fn cpu_weight_estimate_covers_what_the_model_holds() {
    let mut stems: Vec<String> = std::fs::read_dir(root().join("tests/golden"))
        .unwrap()
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            Some(name.strip_suffix(".weights.safetensors")?.to_string())
        })
        .collect();
    stems.sort();
    assert!(stems.len() > 20, "{stems:?}");
    for stem in &stems {
        let spec = Path::new("tests/golden").join(format!("{stem}.unet"));
        let c = compile(&spec);
        let weights = load_weights(
            &root().join(format!("tests/golden/{stem}.weights.safetensors")),
            &expected_weights(&c),
        )
        .expect("fixture weights fit the spec");
        let model = CpuModel::new(&c.graph, &c.info, &weights).expect("bind");
        let read: u64 = weights.iter().map(|(_, t)| 4 * t.data.len() as u64).sum();
        let held = read + model.prepared_bytes();
        let estimate = unetc::exec::cpu::resident_weight_bytes(&c.graph, &c.info);
        println!("{stem}: read {read}, held {held}, estimate {estimate}");
        assert!(
            held <= estimate,
            "{stem}: holds {held} bytes, estimate {estimate}"
        );
        // The tiny edge nets' default-bias allowance is a larger share; the U-Nets are close.
        if ["original_small", "bn_same_small", "zhixuhao_small"].contains(&stem.as_str()) {
            assert!(
                estimate - held <= estimate / 50,
                "{stem}: holds {held}, estimate {estimate}"
            );
            assert!(
                model.prepared_bytes() > read,
                "{stem}: Winograd's taps are held"
            );
        }
    }
}

/// Swin's mask and position index are constants of the layer's arguments; a weights file whose
/// values differ (written for another window or grid, or corrupted: the kernels index the bias
/// table with it) is refused by name before anything runs, on every backend.
#[test]
fn a_swin_constant_that_differs_from_the_arguments_is_refused() {
    let c = compile(Path::new("tests/golden/edge_swin.unet"));
    let path = root().join("tests/golden/edge_swin.weights.safetensors");
    for (name, at, value) in [
        ("swin_transformer_block_1/attn_pos_ind", 5, 1000.0),
        ("swin_transformer_block_1/attn_mask", 3, -7.0),
    ] {
        let mut weights = load_weights(&path, &expected_weights(&c)).unwrap();
        let mut t = weights.get(name).unwrap().clone();
        t.data[at] = value;
        weights.insert(name.to_string(), t);
        let err = match CpuModel::new(&c.graph, &c.info, &weights) {
            Ok(_) => panic!("{name}: a wrong constant was accepted"),
            Err(e) => e.to_string(),
        };
        let want = format!(
            "`{name}` is not what SwinTransformerBlock computes from the layer's arguments"
        );
        assert!(
            err.contains(&want) && err.contains(&format!("{value}")),
            "{err}"
        );
        // The ONNX export reads the weights itself: it refuses them too.
        let err = unetc::interop::onnx::export_onnx(&c.graph, &c.info, &weights).unwrap_err();
        assert!(err.contains(&want), "{err}");
    }
}
