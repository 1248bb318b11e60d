//! U-Nets as the Keras packages people use build them (keras-unet-collection, keras-unet,
//! segmentation_models, the TensorFlow tutorials, keras.io), recorded from real tf.keras by
//! tests/real_models/generate.py: `unetc import` takes each model's `to_json()`,
//! `check --style tf-keras` prints Keras's own summary byte for byte, and where Keras's output
//! is stored the CPU executor reproduces `model.predict` within 1e-5, with the stored weights
//! or, for large encoders, the formula's (tests/golden/README.md). Models with several outputs
//! (deep supervision) are compared on the first.

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
