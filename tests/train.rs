//! `unetc train` against real tf.keras (tests/train/generate.py): the loss of every step and
//! every weight after the last step, for each optimizer and loss, through the command line as a
//! user runs it (`unetc import` of the Keras JSON, then `unetc train ... --log`).

mod common;

use common::*;
use std::path::Path;
use std::process::Command;

#[test]
fn training_steps_match_tf_keras() {
    let names = train_fixtures();
    assert!(names.len() >= 12, "fixtures missing: {names:?}");
    let dir = tempfile::tempdir().unwrap();
    let mut report = Vec::new();
    for name in &names {
        match run_train_fixture(name, dir.path(), &[], None) {
            Ok(line) => report.push(line),
            Err(e) => panic!("{e}"),
        }
    }
    eprintln!("{}", report.join("\n"));
}

#[test]
fn bad_training_data_is_named_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let base = root().join("tests/train/frozen_rmsprop_sparse");
    let json = std::fs::read_to_string(base.with_extension("json")).unwrap();
    let spec = dir.path().join("m.unet");
    std::fs::write(&spec, unetc::interop::keras::import_json(&json).unwrap()).unwrap();
    let run = |targets: &Path, loss: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_unetc"))
            .arg("train")
            .arg(&spec)
            .arg("--inputs")
            .arg(base.with_extension("x.npy"))
            .arg("--targets")
            .arg(targets)
            .args(["--loss", loss, "-o"])
            .arg(dir.path().join("w.safetensors"))
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(!dir.path().join("w.safetensors").exists());
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    // Class indices with the dense loss: told to use the sparse one.
    let err = run(&base.with_extension("y.npy"), "categorical_crossentropy");
    assert!(err.contains("sparse_categorical_crossentropy"), "{err}");
    // A class the head lacks (the model has 4 output channels).
    let bad = dir.path().join("bad.npy");
    let mut labels = vec![0i32; 9 * 12 * 12];
    labels[5] = 4;
    write_i32_npy(&bad, &[9, 12, 12], &labels);
    let err = run(&bad, "sparse_categorical_crossentropy");
    assert!(
        err.contains("target 4 at flat index 5") && err.contains("0 to 3"),
        "{err}"
    );
    // Fewer targets than inputs.
    let short = dir.path().join("short.npy");
    write_i32_npy(&short, &[2, 12, 12], &vec![0; 2 * 12 * 12]);
    let err = run(&short, "sparse_categorical_crossentropy");
    assert!(err.contains("2 samples of targets for 9 inputs"), "{err}");
    // An unknown loss.
    let err = run(&base.with_extension("y.npy"), "hinge");
    assert!(err.contains("unknown loss `hinge`"), "{err}");
}

fn write_i32_npy(path: &Path, shape: &[usize], data: &[i32]) {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let mut header = format!(
        "{{'descr': '<i4', 'fortran_order': False, 'shape': ({},), }}",
        dims.join(", ")
    );
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for v in data {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(path, bytes).unwrap();
}
