//! `unetc train --data DIR`: image/mask folders, validation Dice, checkpoints and --resume, the
//! log, and bad data named by file before training. The data are generated here: bright disks on
//! a noisy background (masks 0/255), as a user's folder of PNGs.

use image::{GrayImage, Luma};
use std::path::Path;
use std::process::Command;

/// Writes `count` 32x32 images of disks and their 0/255 masks into `dir/{images,masks}`.
fn disks(dir: &Path, count: usize, seed: u64) {
    std::fs::create_dir_all(dir.join("images")).unwrap();
    std::fs::create_dir_all(dir.join("masks")).unwrap();
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    let mut next = move || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (s >> 40) as f32 / (1u64 << 24) as f32
    };
    for i in 0..count {
        let (mut image, mut mask) = (GrayImage::new(32, 32), GrayImage::new(32, 32));
        let blobs: Vec<(f32, f32, f32)> = (0..3)
            .map(|_| (4.0 + 24.0 * next(), 4.0 + 24.0 * next(), 2.5 + 3.0 * next()))
            .collect();
        for y in 0..32 {
            for x in 0..32 {
                let inside = blobs
                    .iter()
                    .any(|&(cx, cy, r)| (x as f32 - cx).powi(2) + (y as f32 - cy).powi(2) <= r * r);
                let v = 0.2 + if inside { 0.5 } else { 0.0 } + 0.2 * (next() - 0.5);
                image.put_pixel(x, y, Luma([(v.clamp(0.0, 1.0) * 255.0) as u8]));
                mask.put_pixel(x, y, Luma([if inside { 255 } else { 0 }]));
            }
        }
        image.save(dir.join(format!("images/d{i:02}.png"))).unwrap();
        mask.save(dir.join(format!("masks/d{i:02}_mask.png")))
            .unwrap();
    }
}

const SPEC: &str = "model {\n  input 32x32x1\n  d = conv2d(8, 3, padding: same, activation: relu)\n  x = max_pooling2d(2) -> conv2d(16, 3, padding: same, activation: relu)\n  x = conv2d_transpose(8, 2, strides: 2)\n  [d, x] -> concatenate() -> conv2d(8, 3, padding: same, activation: relu) -> conv2d(1, 1, activation: sigmoid)\n}\n";

fn train(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_unetc"))
        .arg("train")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn folder_training_learns_and_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    disks(&d.join("train"), 24, 1);
    disks(&d.join("val"), 8, 2);
    std::fs::write(d.join("m.unet"), SPEC).unwrap();
    let p = |name: &str| d.join(name).to_str().unwrap().to_string();
    let common = [
        p("m.unet"),
        "--data".into(),
        p("train"),
        "--val".into(),
        p("val"),
        "--batch-size".into(),
        "4".into(),
        "--learning-rate".into(),
        "0.01".into(),
    ];
    let common: Vec<&str> = common.iter().map(String::as_str).collect();
    // Six epochs in one run, with the log.
    let mut args = common.clone();
    args.extend(["--epochs", "6", "-o"]);
    let (full, log) = (p("full.safetensors"), p("log.json"));
    args.extend([full.as_str(), "--log", log.as_str()]);
    let (ok, err) = train(&args);
    assert!(ok, "{err}");
    let log: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("log.json")).unwrap()).unwrap();
    let epochs = log["epochs"].as_array().unwrap();
    assert_eq!(epochs.len(), 6);
    assert_eq!(log["steps"].as_array().unwrap().len(), 36);
    let dice = |e: &serde_json::Value| e["val_mean_dice"].as_f64().unwrap();
    eprintln!(
        "validation Dice by epoch: {:?}",
        epochs.iter().map(dice).collect::<Vec<_>>()
    );
    // The disks are bright: a few epochs separate them (measured 0.93 at epoch 6: 0, 0, 0.23, 0.91, 0.96, 0.93).
    assert!(
        dice(&epochs[5]) > 0.7,
        "validation Dice {} after 6 epochs: {err}",
        dice(&epochs[5])
    );
    assert!(epochs[5]["loss"].as_f64().unwrap() < epochs[0]["loss"].as_f64().unwrap());
    // Three epochs with a checkpoint, then --resume to six: the same weights, byte for byte.
    let (half, ckpt) = (p("half.safetensors"), p("half.ckpt"));
    let mut first = common.clone();
    first.extend([
        "--epochs",
        "3",
        "-o",
        half.as_str(),
        "--checkpoint",
        ckpt.as_str(),
    ]);
    assert!(train(&first).0);
    let resumed = p("resumed.safetensors");
    let mut second = common.clone();
    second.extend([
        "--epochs",
        "6",
        "-o",
        resumed.as_str(),
        "--resume",
        ckpt.as_str(),
    ]);
    let (ok, err) = train(&second);
    assert!(ok, "{err}");
    assert_eq!(
        std::fs::read(d.join("full.safetensors")).unwrap(),
        std::fs::read(d.join("resumed.safetensors")).unwrap(),
        "a resumed run must end where an uninterrupted one does"
    );
    // The trained weights run.
    let run = Command::new(env!("CARGO_BIN_EXE_unetc"))
        .args([
            "run",
            &p("m.unet"),
            "--weights",
            &full,
            "--input",
            &p("val/images/d00.png"),
            "-o",
            &p("mask.png"),
            "--device",
            "cpu",
        ])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
}

#[test]
fn bad_folders_are_named_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("m.unet"), SPEC).unwrap();
    let p = |name: &str| d.join(name).to_str().unwrap().to_string();
    let attempt = |data: &str| {
        let (ok, err) = train(&[&p("m.unet"), "--data", &p(data), "-o", &p("w.safetensors")]);
        assert!(!ok);
        assert!(!d.join("w.safetensors").exists());
        err
    };
    // No images/masks folders.
    std::fs::create_dir_all(d.join("empty")).unwrap();
    assert!(attempt("empty").contains("a folder of images"));
    // An image without its mask.
    disks(&d.join("unpaired"), 2, 3);
    std::fs::remove_file(d.join("unpaired/masks/d01_mask.png")).unwrap();
    let err = attempt("unpaired");
    assert!(
        err.contains("1 image(s) without a mask") && err.contains("d01.png"),
        "{err}"
    );
    // A mask of another size.
    disks(&d.join("sizes"), 2, 4);
    GrayImage::new(16, 32)
        .save(d.join("sizes/masks/d01_mask.png"))
        .unwrap();
    let err = attempt("sizes");
    assert!(
        err.contains("d01_mask.png") && err.contains("is 16x32 (W x H)"),
        "{err}"
    );
    // A class the one-channel head cannot have.
    disks(&d.join("classes"), 2, 5);
    let mut m = GrayImage::new(32, 32);
    m.put_pixel(3, 2, Luma([7]));
    m.save(d.join("classes/masks/d00_mask.png")).unwrap();
    let err = attempt("classes");
    assert!(
        err.contains("d00_mask.png") && err.contains("value 7 at pixel (3, 2)"),
        "{err}"
    );
    // RGB images for a gray network.
    disks(&d.join("rgb"), 2, 6);
    image::RgbImage::new(32, 32)
        .save(d.join("rgb/images/d00.png"))
        .unwrap();
    let err = attempt("rgb");
    assert!(
        err.contains("d00.png") && err.contains("network takes 1 channel"),
        "{err}"
    );
}

#[test]
fn the_specs_train_settings_apply_and_flags_override_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    disks(&d.join("train"), 8, 7);
    let with_train = SPEC.replacen(
        "input 32x32x1\n",
        "input 32x32x1\n  train(optimizer: sgd, learning_rate: 0.05, momentum: 0.5, loss: dice, batch_size: 4, epochs: 2)\n",
        1,
    );
    std::fs::write(d.join("t.unet"), &with_train).unwrap();
    let p = |name: &str| d.join(name).to_str().unwrap().to_string();
    let epochs_of = |log: &str| -> Vec<serde_json::Value> {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(log).unwrap()).unwrap();
        v["epochs"].as_array().unwrap().clone()
    };
    let (ok, err) = train(&[
        &p("t.unet"),
        "--data",
        &p("train"),
        "-o",
        &p("a.safetensors"),
        "--log",
        &p("a.json"),
    ]);
    assert!(ok, "{err}");
    let epochs = epochs_of(&p("a.json"));
    assert_eq!(epochs.len(), 2, "epochs: 2 from the spec");
    assert!((epochs[0]["learning_rate"].as_f64().unwrap() - 0.05).abs() < 1e-9);
    // Dice loss (from the spec) is at most 1; the default binary crossentropy is not bounded so.
    assert!(epochs.iter().all(|e| e["loss"].as_f64().unwrap() <= 1.0));
    let (ok, err) = train(&[
        &p("t.unet"),
        "--data",
        &p("train"),
        "--learning-rate",
        "0.01",
        "--epochs",
        "1",
        "-o",
        &p("b.safetensors"),
        "--log",
        &p("b.json"),
    ]);
    assert!(ok, "{err}");
    let epochs = epochs_of(&p("b.json"));
    assert_eq!(epochs.len(), 1, "--epochs overrides the spec");
    assert!((epochs[0]["learning_rate"].as_f64().unwrap() - 0.01).abs() < 1e-9);
    // A misspelt setting is the spec's error, at its place, with the nearest name.
    std::fs::write(
        d.join("typo.unet"),
        with_train.replace("learning_rate", "learning_rat"),
    )
    .unwrap();
    let (ok, err) = train(&[
        &p("typo.unet"),
        "--data",
        &p("train"),
        "-o",
        &p("c.safetensors"),
    ]);
    assert!(!ok);
    assert!(
        err.contains("`train` has no argument `learning_rat`") && err.contains("learning_rate"),
        "{err}"
    );
    // A value of the wrong kind.
    std::fs::write(
        d.join("bad.unet"),
        with_train.replace("batch_size: 4", "batch_size: 0"),
    )
    .unwrap();
    let (ok, err) = train(&[
        &p("bad.unet"),
        "--data",
        &p("train"),
        "-o",
        &p("c.safetensors"),
    ]);
    assert!(!ok);
    assert!(err.contains("batch_size"), "{err}");
}

#[test]
fn a_batch_that_cannot_fit_in_memory_is_refused_before_training() {
    // One 2048x2048 image and sixty-four 64-channel convolutions at full size: each keeps its
    // 1 GiB output for the backward pass (its ReLU's derivative reads it), 64 GiB in all, more
    // than a test machine has (`unetc plan --train` shows the plan). The estimate refuses it
    // before allocating anything.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("big/images")).unwrap();
    std::fs::create_dir_all(d.join("big/masks")).unwrap();
    GrayImage::new(2048, 2048)
        .save(d.join("big/images/a.png"))
        .unwrap();
    GrayImage::new(2048, 2048)
        .save(d.join("big/masks/a.png"))
        .unwrap();
    let spec = "model {\n  input 2048x2048x1\n  for i in 0..64 { conv2d(64, 3, padding: same, activation: relu) }\n  conv2d(1, 1, activation: sigmoid)\n}\n";
    std::fs::write(d.join("big.unet"), spec).unwrap();
    let p = |name: &str| d.join(name).to_str().unwrap().to_string();
    let started = std::time::Instant::now();
    let (ok, err) = train(&[
        &p("big.unet"),
        "--data",
        &p("big"),
        "-o",
        &p("w.safetensors"),
    ]);
    assert!(!ok);
    assert!(
        err.contains("needs about") && err.contains("use a smaller --batch-size"),
        "{err}"
    );
    assert!(
        started.elapsed().as_secs() < 60,
        "refused only after {:?}",
        started.elapsed()
    );
}

#[test]
fn a_killed_run_leaves_its_last_checkpoint_whole() {
    // Killed (SIGKILL, harsher than Ctrl-C) while it trains and rewrites its checkpoint every
    // epoch: the checkpoint on disk is the last complete one, and a run resumes from it.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    disks(&d.join("train"), 8, 9);
    std::fs::write(d.join("m.unet"), SPEC).unwrap();
    let p = |name: &str| d.join(name).to_str().unwrap().to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_unetc"))
        .args([
            "train",
            &p("m.unet"),
            "--data",
            &p("train"),
            "--batch-size",
            "4",
            "--epochs",
            "100000",
        ])
        .args([
            "-o",
            &p("never.safetensors"),
            "--checkpoint",
            &p("run.ckpt"),
        ])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while !d.join("run.ckpt").exists() && started.elapsed().as_secs() < 120 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // A few more epochs, so that the kill may land inside a rewrite.
    std::thread::sleep(std::time::Duration::from_millis(700));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!d.join("never.safetensors").exists());
    // `--epochs 1` is behind the checkpoint: the run loads it and writes its weights.
    let (ok, err) = train(&[
        &p("m.unet"),
        "--data",
        &p("train"),
        "--batch-size",
        "4",
        "--epochs",
        "1",
        "--resume",
        &p("run.ckpt"),
        "-o",
        &p("resumed.safetensors"),
    ]);
    assert!(ok, "{err}");
    assert!(d.join("resumed.safetensors").exists());
}
