//! Every layer kind is complete (issue 12): for each kind `Op` has, this walks what must exist
//! besides its shape rule, and fails naming the kind and what is missing.
//!
//! - a real tf.keras golden fixture with stored weights that uses it (tests/golden/); the CPU
//!   executor (tests/golden.rs), the CUDA kernels on the GPU emulator (tests/gpu_emulated.rs) and
//!   onnxruntime (tests/onnx.rs) are each checked against every such fixture, so a kind without
//!   a CPU kernel, a CUDA kernel or an ONNX mapping fails there;
//! - a Keras import mapping: its Keras class imports as this kind;
//! - an ONNX mapping: the fixture exports, and the layer appears in the ONNX graph by name.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::path::Path;
use unetc::ir::ops::KIND_CLASSES;
use unetc::ir::Op;

/// Golden fixtures with stored weights: stem -> compiled spec.
fn golden_fixtures() -> BTreeMap<String, unetc::Compiled> {
    std::fs::read_dir(root().join("tests/golden"))
        .unwrap()
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            let stem = name.strip_suffix(".weights.safetensors")?.to_string();
            let spec = format!("tests/golden/{stem}.unet");
            Some((stem, compile(Path::new(&spec))))
        })
        .collect()
}

#[test]
fn every_kind_has_a_fixture_a_keras_mapping_and_an_onnx_mapping() {
    let fixtures = golden_fixtures();
    assert!(fixtures.len() >= 10, "fixtures missing");
    let mut missing = Vec::new();
    for &(kind, class) in KIND_CLASSES {
        match Op::for_keras_class(class, Op::keras_modules(kind).first().copied()) {
            Some((imported, _)) if imported == kind => {}
            other => missing.push(format!("{kind}: Keras class {class} imports as {other:?}")),
        }
        let user = fixtures.iter().find_map(|(stem, c)| {
            c.graph
                .nodes
                .iter()
                .find(|n| n.op.class_name() == class)
                .map(|n| (stem, c, n.name.clone()))
        });
        let Some((stem, c, layer)) = user else {
            missing.push(format!(
                "{kind}: no golden fixture with weights uses {class} (tests/golden/generate.py)"
            ));
            continue;
        };
        let weights = unetc::io::load_weights(
            &root().join(format!("tests/golden/{stem}.weights.safetensors")),
            &unetc::runner::expected_weights(c),
        )
        .unwrap();
        match unetc::interop::onnx::export_onnx(&c.graph, &c.info, &weights) {
            Ok(bytes) => {
                let named = bytes.windows(layer.len()).any(|w| w == layer.as_bytes());
                // The input layer is the graph's input, named after it as well.
                if !named {
                    missing.push(format!(
                        "{kind}: layer `{layer}` of {stem} is not in its ONNX export"
                    ));
                }
            }
            Err(e) => missing.push(format!("{kind}: {stem} does not export to ONNX: {e}")),
        }
    }
    assert!(
        missing.is_empty(),
        "incomplete kinds:\n{}",
        missing.join("\n")
    );
}
