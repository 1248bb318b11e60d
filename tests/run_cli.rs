//! `unetc` as a user runs it: exit codes, `init-weights`, `run` with arrays, images, tiling,
//! and bad input that must end in a clear error with no output file left behind.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use unetc::exec::Tensor;
use unetc::io::npy::{read_npy, write_npy};

fn unetc(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_unetc"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("unetc runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("unetc-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn check_exit_codes() {
    assert_eq!(unetc(&["check", "specs/original.unet"]).0, 0);
    let dir = temp_dir("exit");
    let bad = dir.join("bad.unet");
    std::fs::write(&bad, "model {\n  input 8x8x1\n  conv2dd(4)\n}\n").unwrap();
    let (code, stdout, stderr) = unetc(&["check", s(&bad)]);
    assert_eq!(code, 1);
    assert!(
        stdout.is_empty() && stderr.contains("E-unknown-kind"),
        "{stderr}"
    );
    assert_eq!(unetc(&["check", "specs/does-not-exist.unet"]).0, 2);
    assert_eq!(
        unetc(&["check", "specs/original.unet", "--style", "nope"]).0,
        2
    );
    assert_eq!(
        unetc(&["check", "specs/original.unet", "--input-shape", "0x0x1"]).0,
        2
    );
}

/// The CLI reproduces tf.keras's output of a golden fixture, from .npy to .npy.
#[test]
fn run_matches_keras_through_the_command_line() {
    let dir = temp_dir("golden");
    let (input, want) = golden_io("original_small");
    let x = dir.join("x.npy");
    write_npy(&x, &input, false).unwrap();
    let y = dir.join("y.npy");
    let (code, _, stderr) = unetc(&[
        "run",
        "tests/golden/original_small.unet",
        "--weights",
        "tests/golden/original_small.weights.safetensors",
        "--input",
        s(&x),
        "--output",
        s(&y),
        "--batch",
        "2",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let got = read_npy(&y).unwrap();
    assert_eq!(got.shape, want.shape);
    let err = got
        .data
        .iter()
        .zip(&want.data)
        .fold(0.0f32, |m, (g, w)| m.max((g - w).abs()));
    assert!(err < 1e-5, "max abs error {err}");
}

/// A 50x50 image on a net that maps 108x108 to 20x20: overlap-tile covers all of it, and the
/// top-left output block is what the net gives for the image mirror-padded by 44 (numpy's
/// `reflect`, computed here independently).
#[test]
fn overlap_tile_covers_any_image_size() {
    let dir = temp_dir("tile");
    let weights = dir.join("w.safetensors");
    assert_eq!(
        unetc(&[
            "init-weights",
            "tests/golden/original_small.unet",
            "-o",
            s(&weights),
            "--seed",
            "3"
        ])
        .0,
        0
    );
    let (h, w) = (50usize, 50usize);
    let image: Vec<f32> = (0..h * w)
        .map(|i| ((i * 7919) % 251) as f32 / 251.0)
        .collect();
    let x = dir.join("big.npy");
    write_npy(
        &x,
        &Tensor::from_vec(&[1, h, w, 1], image.clone()).unwrap(),
        false,
    )
    .unwrap();
    let y = dir.join("big_out.npy");
    let (code, _, stderr) = unetc(&[
        "run",
        "tests/golden/original_small.unet",
        "--weights",
        s(&weights),
        "--input",
        s(&x),
        "--output",
        s(&y),
        "--verbose",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("overlapping"), "{stderr}");
    let got = read_npy(&y).unwrap();
    assert_eq!(got.shape, vec![1, h, w, 2]);
    // The first tile by hand: rows/cols -44..64 of the image, reflected at the edges.
    let reflect = |i: isize, n: usize| -> usize {
        let mut i = i;
        while i < 0 || i >= n as isize {
            i = if i < 0 { -i } else { 2 * (n as isize - 1) - i };
        }
        i as usize
    };
    let mut tile = vec![0.0f32; 108 * 108];
    for ty in 0..108 {
        for tx in 0..108 {
            tile[ty * 108 + tx] =
                image[reflect(ty as isize - 44, h) * w + reflect(tx as isize - 44, w)];
        }
    }
    let t = dir.join("tile.npy");
    write_npy(
        &t,
        &Tensor::from_vec(&[1, 108, 108, 1], tile).unwrap(),
        false,
    )
    .unwrap();
    let ty = dir.join("tile_out.npy");
    assert_eq!(
        unetc(&[
            "run",
            "tests/golden/original_small.unet",
            "--weights",
            s(&weights),
            "--input",
            s(&t),
            "--output",
            s(&ty)
        ])
        .0,
        0
    );
    let direct = read_npy(&ty).unwrap();
    for yy in 0..20 {
        for xx in 0..20 {
            for k in 0..2 {
                let a = got.data[(yy * w + xx) * 2 + k];
                let b = direct.data[(yy * 20 + xx) * 2 + k];
                assert!(
                    (a - b).abs() < 1e-6,
                    "({yy}, {xx}, {k}): tiled {a} vs direct {b}"
                );
            }
        }
    }
}

#[test]
fn png_in_mask_out() {
    let dir = temp_dir("png");
    let weights = dir.join("w.safetensors");
    assert_eq!(
        unetc(&[
            "init-weights",
            "tests/golden/bn_same_small.unet",
            "-o",
            s(&weights)
        ])
        .0,
        0
    );
    // bn_same_small takes RGB; make a 40x40 RGB PNG (a size it must pad to its multiple).
    let (shape_line, _) = {
        let (_, out, _) = unetc(&["check", "tests/golden/bn_same_small.unet"]);
        (
            out.lines()
                .find(|l| l.starts_with("input_1"))
                .unwrap_or("")
                .to_string(),
            (),
        )
    };
    assert!(shape_line.contains(", 3)"), "{shape_line}");
    let img = image::RgbImage::from_fn(40, 37, |x, y| {
        image::Rgb([(x * 6) as u8, (y * 6) as u8, 128])
    });
    let png = dir.join("in.png");
    img.save(&png).unwrap();
    let mask = dir.join("mask.png");
    let (code, _, stderr) = unetc(&[
        "run",
        "tests/golden/bn_same_small.unet",
        "--weights",
        s(&weights),
        "--input",
        s(&png),
        "--output",
        s(&mask),
        "--verbose",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let m = image::open(&mask).unwrap().to_luma8();
    assert_eq!(m.dimensions(), (40, 37));
    assert!(m.pixels().all(|p| p.0[0] == 0 || p.0[0] == 255));
    // Existing output without --force: refused, file unchanged.
    let before = std::fs::read(&mask).unwrap();
    let (code, _, stderr) = unetc(&[
        "run",
        "tests/golden/bn_same_small.unet",
        "--weights",
        s(&weights),
        "--input",
        s(&png),
        "--output",
        s(&mask),
    ]);
    assert_eq!(code, 2);
    assert!(stderr.contains("--force"), "{stderr}");
    assert_eq!(std::fs::read(&mask).unwrap(), before);
}

#[test]
fn bad_inputs_are_clear_errors_with_no_output_left() {
    let dir = temp_dir("bad");
    let weights = dir.join("w.safetensors");
    assert_eq!(
        unetc(&[
            "init-weights",
            "tests/golden/original_small.unet",
            "-o",
            s(&weights)
        ])
        .0,
        0
    );
    let out = dir.join("out.npy");
    // Wrong channel count: an RGB image into a 1-channel model.
    let png = dir.join("rgb.png");
    image::RgbImage::new(108, 108).save(&png).unwrap();
    let (code, _, stderr) = unetc(&[
        "run",
        "tests/golden/original_small.unet",
        "--weights",
        s(&weights),
        "--input",
        s(&png),
        "--output",
        s(&out),
    ]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("3 channel(s) but the model takes 1"),
        "{stderr}"
    );
    // Corrupt (truncated) weights.
    let bytes = std::fs::read(&weights).unwrap();
    let truncated = dir.join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let x = dir.join("x.npy");
    write_npy(&x, &Tensor::zeros(&[1, 108, 108, 1]), false).unwrap();
    let (code, _, stderr) = unetc(&[
        "run",
        "tests/golden/original_small.unet",
        "--weights",
        s(&truncated),
        "--input",
        s(&x),
        "--output",
        s(&out),
    ]);
    assert_eq!(code, 2);
    assert!(stderr.contains("truncated.safetensors"), "{stderr}");
    // Weights of another model: every problem named.
    let other = dir.join("other.safetensors");
    assert_eq!(
        unetc(&[
            "init-weights",
            "tests/golden/bn_same_small.unet",
            "-o",
            s(&other)
        ])
        .0,
        0
    );
    let (code, _, stderr) = unetc(&[
        "run",
        "tests/golden/original_small.unet",
        "--weights",
        s(&other),
        "--input",
        s(&x),
        "--output",
        s(&out),
    ]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("conv2d/kernel") && stderr.contains("batch_normalization"),
        "{stderr}"
    );
    // Asking for a GPU where there is none: one clear line that suggests the CPU.
    if unetc::exec::cuda::cuda_available().is_err() {
        let (code, _, stderr) = unetc(&[
            "run",
            "tests/golden/original_small.unet",
            "--weights",
            s(&weights),
            "--input",
            s(&x),
            "--output",
            s(&out),
            "--device",
            "cuda",
        ]);
        assert_eq!(code, 2);
        assert!(
            stderr.contains("--device cpu") && stderr.lines().count() == 1,
            "{stderr}"
        );
    }
    // A truncated npy input.
    let xb = std::fs::read(&x).unwrap();
    let bad_x = dir.join("bad.npy");
    std::fs::write(&bad_x, &xb[..xb.len() - 100]).unwrap();
    let (code, _, stderr) = unetc(&[
        "run",
        "tests/golden/original_small.unet",
        "--weights",
        s(&weights),
        "--input",
        s(&bad_x),
        "--output",
        s(&out),
    ]);
    assert_eq!(code, 2);
    assert!(stderr.contains("bad.npy"), "{stderr}");
    assert!(!out.exists(), "no output may be left behind");
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .collect();
    assert!(
        leftovers
            .iter()
            .all(|n| !n.to_string_lossy().contains(".tmp")),
        "{leftovers:?}"
    );
}

/// `unetc plan` on the original U-Net: its four skip crops are windows of the encoder outputs,
/// its four concatenations are never built (the decoder convolutions read both parts), and the
/// final Softmax layer runs in the last convolution's epilogue.
#[test]
fn plan_shows_the_free_plumbing_of_the_original_unet() {
    let (code, out, err) = unetc(&["plan", "specs/original.unet"]);
    assert_eq!(code, 0, "{err}");
    let rows = |what: &str| out.lines().filter(|l| l.contains(what)).count();
    assert_eq!(rows("nothing: a window of conv2d_"), 4, "{out}");
    assert_eq!(rows("nothing: never built"), 4, "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("conv2d_18 ") && l.contains("kernel + softmax")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("softmax ") && l.contains("fused into conv2d_18")),
        "{out}"
    );
    // bf16 halves the arena.
    let (_, bf16, _) = unetc(&["plan", "specs/original.unet", "--precision", "bf16"]);
    assert!(
        out.contains("arena of 165.6 MiB") && bf16.contains("arena of 82.8 MiB"),
        "{out}\n{bf16}"
    );
}
