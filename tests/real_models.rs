//! U-Nets as the Keras packages people use build them (keras-unet-collection, keras-unet,
//! segmentation_models, the TensorFlow tutorials, keras.io), recorded from real tf.keras by
//! tests/real_models/generate.py: `unetc import` takes each model's `to_json()`,
//! `check --style tf-keras` prints Keras's own summary byte for byte, and where Keras's output
//! is stored the CPU executor reproduces `model.predict` within 1e-5, with the stored weights
//! or, for large encoders, the formula's (tests/golden/README.md). Models with several outputs
//! (deep supervision) are compared on the first, and where generate.py stored the others
//! (`output_<layer>`), on every one, through the executor and `run --output-layer`.

mod common;

use common::*;
use std::path::Path;
use unetc::exec::cpu::CpuModel;
use unetc::io::load_weights;
use unetc::report::summary::SummaryStyle;
use unetc::runner::expected_weights;

fn recorded() -> Vec<String> {
    let mut stems: Vec<String> = std::fs::read_dir(root().join("tests/real_models"))
        .unwrap()
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".json")
                .filter(|s| *s != "manifest")
                .map(String::from)
        })
        .collect();
    stems.sort();
    stems
}

#[test]
fn real_package_unets_import_print_and_run_as_keras() {
    let dir = root().join("tests/real_models");
    let stems = recorded();
    assert!(stems.len() >= 31, "recorded models missing: {stems:?}");
    let mut ran = 0;
    for stem in &stems {
        let json = std::fs::read_to_string(dir.join(format!("{stem}.json"))).unwrap();
        let spec = unetc::interop::keras::import_json(&json)
            .unwrap_or_else(|e| panic!("{stem}: import: {e}"));
        let c = unetc::compile_source(
            Path::new(&format!("{stem}.unet")),
            spec,
            &unetc::Options::default(),
            &mut unetc::expand::Session::new(),
        );
        let printed = check_text(&c, SummaryStyle::TfKeras);
        let keras = std::fs::read_to_string(dir.join(format!("{stem}.summary.txt"))).unwrap();
        assert!(
            printed.starts_with(&keras),
            "{stem}: summary differs from Keras's\n--- unetc\n{printed}\n--- keras\n{keras}"
        );
        let weights_file = dir.join(format!("{stem}.weights.safetensors"));
        let io_file = dir.join(format!("{stem}.io.safetensors"));
        let weights = if weights_file.exists() {
            load_weights(&weights_file, &expected_weights(&c)).expect("weights fit")
        } else if io_file.exists() {
            // Large encoders: Keras ran with the formula's weights (generate.py).
            let mut w = unetc::io::Weights::new();
            for (name, t) in formula_weights(&c) {
                w.insert(name, t);
            }
            w
        } else {
            println!("{stem}: summary identical (not run)");
            continue;
        };
        let (inputs, want) = io_inputs(&io_file);
        let got = CpuModel::new(&c.graph, &c.info, &weights)
            .expect("bind")
            .run_inputs(&inputs)
            .expect("run")
            .remove(0);
        let err = rel_err(&got, &want);
        println!("{stem}: summary identical, CPU max relative error {err:.2e}");
        assert!(err <= 1e-5, "{stem}: {err:.3e}");
        ran += 1;
    }
    assert!(ran >= 27, "only {ran} models ran");
}

/// generate.py's manifest of the recorded models.
fn manifest(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap()
}

/// The spec `unetc import` makes of a recorded model's Keras JSON, and where it is written.
fn imported_spec(dir: &Path, tmp: &Path, stem: &str) -> (String, std::path::PathBuf) {
    let json = std::fs::read_to_string(dir.join(format!("{stem}.json"))).unwrap();
    let spec = unetc::interop::keras::import_json(&json).unwrap();
    let spec_path = tmp.join(format!("{stem}.unet"));
    std::fs::write(&spec_path, &spec).unwrap();
    (spec, spec_path)
}

#[test]
fn every_output_of_a_deep_supervision_model_matches_keras() {
    // generate.py stores each further output of a multi-output model as
    // `output_<layer name>` and lists the output layers in the manifest: every head of the
    // executor matches Keras's, and `unetc run --output-layer NAME` writes that head.
    let dir = root().join("tests/real_models");
    let manifest = manifest(&dir);
    let tmp = fresh_temp_dir("real_models_output_layer");
    let mut heads = 0;
    for (stem, entry) in manifest["models"].as_object().unwrap() {
        let Some(names) = entry.get("output_layers").and_then(|n| n.as_array()) else {
            continue;
        };
        let names: Vec<&str> = names.iter().map(|n| n.as_str().unwrap()).collect();
        let (_, spec_path) = imported_spec(&dir, &tmp, stem);
        let c = compile(&spec_path);
        let weights_file = dir.join(format!("{stem}.weights.safetensors"));
        let weights = load_weights(&weights_file, &expected_weights(&c)).expect("weights fit");
        let io_file = dir.join(format!("{stem}.io.safetensors"));
        let (inputs, _) = io_inputs(&io_file);
        let got = CpuModel::new(&c.graph, &c.info, &weights)
            .expect("bind")
            .run_inputs(&inputs)
            .expect("run");
        assert_eq!(got.len(), names.len(), "{stem}");
        let input_npy = tmp.join(format!("{stem}.x.npy"));
        unetc::io::write_npy(&input_npy, &inputs[0], true).unwrap();
        let run_to = |out: &Path, extra: &[&str]| {
            let mut args = vec![
                "run",
                path_str(&spec_path),
                "--weights",
                path_str(&weights_file),
                "--input",
                path_str(&input_npy),
                "-o",
                path_str(out),
                "--device",
                "cpu",
            ];
            args.extend_from_slice(extra);
            let (code, stdout, stderr) = unetc_cli(&args);
            (code, format!("{stdout}{stderr}"))
        };
        for (k, (name, head)) in names.iter().zip(&got).enumerate().skip(1) {
            let want = io_tensor(&io_file, &format!("output_{name}"));
            let err = rel_err(head, &want);
            assert!(err <= 1e-5, "{stem} output {k} `{name}`: {err:.3e}");
            let out = tmp.join(format!("{stem}.{k}.npy"));
            let (code, stderr) = run_to(&out, &["--output-layer", name]);
            assert_eq!(code, 0, "{stem} --output-layer {name}: {stderr}");
            let written = unetc::io::read_npy(&out).unwrap();
            let err = rel_err(&written, &want);
            assert!(err <= 1e-5, "{stem} run --output-layer {name}: {err:.3e}");
            heads += 1;
        }
        // Without --output-layer `run` writes the first output and says how to choose.
        let (code, stderr) = run_to(&tmp.join(format!("{stem}.first.npy")), &[]);
        assert_eq!(code, 0, "{stem}: {stderr}");
        assert!(
            stderr.contains("choose one with --output-layer NAME"),
            "{stderr}"
        );
        // A name that is no layer: one error naming the outputs.
        let none = tmp.join("none.npy");
        let (code, stderr) = run_to(&none, &["--output-layer", "no_such_layer"]);
        assert_ne!(code, 0);
        assert!(
            stderr.contains("--output-layer `no_such_layer`: the model has no layer of that name")
                && stderr.contains(names[0]),
            "{stderr}"
        );
    }
    assert!(heads >= 4, "only {heads} further outputs checked");
}

#[test]
fn a_model_tensorflow_runs_at_batch_one_only_is_refused_at_batch_two() {
    // UNet 3+'s classification-guided module multiplies each (None, H, W, 1) head by a
    // (None, 1) gate as a TensorFlow function: NumPy broadcasting lines the gate's batch axis
    // up with the width, so tf.keras runs it at batch 1 only (generate.py stores its output at
    // batch 1). unetc runs it at batch 1 (the test above) and refuses a batch of 2, naming the
    // layer, instead of computing what tf.keras does not.
    let dir = root().join("tests/real_models");
    let stem = "github_unet3plus_cgm";
    let json = std::fs::read_to_string(dir.join(format!("{stem}.json"))).unwrap();
    let spec = unetc::interop::keras::import_json(&json).unwrap();
    let c = unetc::compile_source(
        Path::new(&format!("{stem}.unet")),
        spec,
        &unetc::Options::default(),
        &mut unetc::expand::Session::new(),
    );
    let weights_file = dir.join(format!("{stem}.weights.safetensors"));
    let weights = load_weights(&weights_file, &expected_weights(&c)).expect("weights fit");
    let (inputs, _) = io_inputs(&dir.join(format!("{stem}.io.safetensors")));
    let one = &inputs[0];
    let mut two = one.clone();
    two.shape[0] = 2;
    two.data.extend_from_slice(&one.data);
    let model = CpuModel::new(&c.graph, &c.info, &weights).expect("bind");
    assert!(model.run(one).is_ok());
    let err = model.run(&two).expect_err("batch 2 refused").to_string();
    assert!(
        err.contains("a batch of 2")
            && err.contains("`tf.math.multiply`")
            && err.contains("batch 1"),
        "{err}"
    );
}

#[test]
fn a_layer_inside_a_nested_model_is_an_output_by_its_path() {
    // generate.py stores, for the models that nest others, Keras's value of some inner layers
    // (`tap_<nested>/<layer>`, `[k]` for the nested model's call k), computed by a Keras model
    // from the nested model's inputs to that layer. `--output-layer nested/layer` selects the
    // same layer: checked through the executor, and through `unetc run` for one-input models.
    let dir = root().join("tests/real_models");
    let manifest = manifest(&dir);
    let tmp = fresh_temp_dir("real_models_nested_taps");
    let mut taps = 0;
    for (stem, entry) in manifest["models"].as_object().unwrap() {
        let Some(paths) = entry.get("nested_taps").and_then(|n| n.as_array()) else {
            continue;
        };
        let (spec, spec_path) = imported_spec(&dir, &tmp, stem);
        let weights_file = dir.join(format!("{stem}.weights.safetensors"));
        let io_file = dir.join(format!("{stem}.io.safetensors"));
        let (inputs, _) = io_inputs(&io_file);
        // The weights file is the whole model's (as `run` reads it).
        let whole = compile(&spec_path);
        let weights = load_weights(&weights_file, &expected_weights(&whole)).expect("weights");
        for path in paths.iter().map(|p| p.as_str().unwrap()) {
            let want = io_tensor(&io_file, &format!("tap_{path}"));
            let options = unetc::Options {
                output_layer: Some(path.to_string()),
                ..Default::default()
            };
            let c = unetc::compile_source(
                &spec_path,
                spec.clone(),
                &options,
                &mut unetc::expand::Session::new(),
            );
            assert!(!c.has_errors(), "{stem} {path}: {:?}", c.diags);
            let got = CpuModel::new(&c.graph, &c.info, &weights)
                .expect("bind")
                .run_inputs(&inputs)
                .expect("run")
                .remove(0);
            let err = rel_err(&got, &want);
            assert!(err <= 1e-5, "{stem} `{path}`: {err:.3e}");
            if inputs.len() == 1 {
                let input_npy = tmp.join(format!("{stem}.x.npy"));
                unetc::io::write_npy(&input_npy, &inputs[0], true).unwrap();
                let out = tmp.join(format!("{stem}.{taps}.npy"));
                let (code, stdout, stderr) = unetc_cli(&[
                    "run",
                    path_str(&spec_path),
                    "--weights",
                    path_str(&weights_file),
                    "--input",
                    path_str(&input_npy),
                    "-o",
                    path_str(&out),
                    "--device",
                    "cpu",
                    "--output-layer",
                    path,
                ]);
                assert_eq!(code, 0, "{stem} --output-layer {path}: {stdout}{stderr}");
                let err = rel_err(&unetc::io::read_npy(&out).unwrap(), &want);
                assert!(err <= 1e-5, "{stem} run --output-layer {path}: {err:.3e}");
            }
            taps += 1;
        }
    }
    assert!(taps >= 5, "only {taps} nested layers checked");
}
