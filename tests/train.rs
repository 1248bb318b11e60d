//! `unetc train` against real tf.keras (tests/train/generate.py): the loss of every step and
//! every weight after the last step, for each optimizer and loss, through the command line as a
//! user runs it (`unetc import` of the Keras JSON, then `unetc train ... --log`).

mod common;

use common::*;
use std::path::Path;
use std::process::Command;

fn fixtures() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root().join("tests/train"))
        .unwrap()
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            Some(name.strip_suffix(".expected.json")?.to_string())
        })
        .collect();
    names.sort();
    names
}

fn all_weights(path: &Path) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let data = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            (name, view.shape().to_vec(), data)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn training_steps_match_tf_keras() {
    let names = fixtures();
    assert!(names.len() >= 12, "fixtures missing: {names:?}");
    let dir = tempfile::tempdir().unwrap();
    let mut report = Vec::new();
    for name in &names {
        let base = root().join("tests/train").join(name);
        let expected: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(base.with_extension("expected.json")).unwrap(),
        )
        .unwrap();
        let json = std::fs::read_to_string(base.with_extension("json")).unwrap();
        let spec = dir.path().join(format!("{name}.unet"));
        std::fs::write(&spec, unetc::interop::keras::import_json(&json).unwrap()).unwrap();
        let out = dir.path().join(format!("{name}.final.safetensors"));
        let log = dir.path().join(format!("{name}.log.json"));
        let flags: Vec<String> = expected["flags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap().to_string())
            .collect();
        let status = Command::new(env!("CARGO_BIN_EXE_unetc"))
            .arg("train")
            .arg(&spec)
            .arg("--weights")
            .arg(base.with_extension("init.safetensors"))
            .arg("--inputs")
            .arg(base.with_extension("x.npy"))
            .arg("--targets")
            .arg(base.with_extension("y.npy"))
            .args(&flags)
            .args(["--no-shuffle", "--no-augment", "-o"])
            .arg(&out)
            .arg("--log")
            .arg(&log)
            .output()
            .unwrap();
        assert!(
            status.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&status.stderr)
        );
        // Losses: within 1e-5 relative at every step.
        let got: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&log).unwrap()).unwrap();
        let want = expected["steps"].as_array().unwrap();
        let have = got["steps"].as_array().unwrap();
        assert_eq!(want.len(), have.len(), "{name}: step count");
        let mut worst_loss = 0.0f64;
        for (w, h) in want.iter().zip(have) {
            let (a, b) = (w["loss"].as_f64().unwrap(), h["loss"].as_f64().unwrap());
            worst_loss = worst_loss.max((a - b).abs() / a.abs());
        }
        assert!(
            worst_loss <= 1e-5,
            "{name}: loss differs by {worst_loss:e} relative"
        );
        // Weights: every tensor, named alike. Adam and RMSprop divide by sqrt(v) + epsilon, so
        // a gradient that is near zero (a sum that cancels to ~1e-6 of its terms) turns float
        // rounding differences into visible update differences; measured worst 1.8e-5 absolute
        // (valid_unet_adam_bce_dice, one of 288 kernel values; TF's own gradient there is
        // -2.2e-6 against a largest 0.059). Hence 1e-5 relative plus 3e-5 absolute.
        let (want_w, have_w) = (
            all_weights(&base.with_extension("final.safetensors")),
            all_weights(&out),
        );
        let names_of = |v: &[(String, Vec<usize>, Vec<f32>)]| {
            v.iter().map(|t| t.0.clone()).collect::<Vec<_>>()
        };
        assert_eq!(names_of(&want_w), names_of(&have_w), "{name}: tensor names");
        let mut worst = (0.0f32, String::new());
        for ((n, ws, w), (_, hs, h)) in want_w.iter().zip(&have_w) {
            assert_eq!(ws, hs, "{name}: {n} shape");
            for (a, b) in w.iter().zip(h) {
                let d = (a - b).abs();
                assert!(
                    d <= 1e-5 * a.abs() + 3e-5,
                    "{name}: {n}: Keras {a}, unetc {b}"
                );
                if d > worst.0 {
                    worst = (d, n.clone());
                }
            }
        }
        report.push(format!(
            "{name}: loss {worst_loss:.1e} rel, weights {:.1e} abs ({})",
            worst.0, worst.1
        ));
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
