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

/// A model whose input is not an image (UNETR's patches: tokens x features) runs `(N, T, F)`
/// arrays whole: tf.keras's output of the imported real model, from .npy to .npy; one `(T, F)`
/// array runs as a batch of one; another item shape is refused, naming the one the model takes.
#[test]
fn run_takes_token_arrays() {
    let dir = temp_dir("tokens");
    let spec = dir.join("unetr.unet");
    let (code, _, stderr) = unetc(&[
        "import",
        "tests/real_models/github_unetr_2d.json",
        "-o",
        s(&spec),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let (input, want) =
        io_tensors(&root().join("tests/real_models/github_unetr_2d.io.safetensors"));
    assert_eq!(input.shape, [2, 16, 48]);
    let weights = "tests/real_models/github_unetr_2d.weights.safetensors";
    let run = |x: &Tensor, name: &str| {
        let (xp, yp) = (
            dir.join(format!("{name}.x.npy")),
            dir.join(format!("{name}.y.npy")),
        );
        write_npy(&xp, x, false).unwrap();
        let (code, _, stderr) = unetc(&[
            "run",
            s(&spec),
            "--weights",
            weights,
            "--input",
            s(&xp),
            "--output",
            s(&yp),
            "--batch",
            "2",
            "--device",
            "cpu",
        ]);
        (code, stderr, read_npy(&yp).ok())
    };
    let max_err = |got: &Tensor, want: &[f32]| {
        got.data
            .iter()
            .zip(want)
            .fold(0.0f32, |m, (g, w)| m.max((g - w).abs()))
    };
    let (code, stderr, got) = run(&input, "batch");
    assert_eq!(code, 0, "{stderr}");
    let got = got.unwrap();
    assert_eq!(got.shape, want.shape);
    assert!(max_err(&got, &want.data) < 1e-5);
    let item = input.data.len() / 2;
    let one = Tensor::from_vec(&[16, 48], input.data[item..].to_vec()).unwrap();
    let (code, stderr, got) = run(&one, "one");
    assert_eq!(code, 0, "{stderr}");
    let got = got.unwrap();
    assert_eq!(got.shape, [1, 16, 16, 1]);
    assert!(max_err(&got, &want.data[want.data.len() / 2..]) < 1e-5);
    let wrong = Tensor::from_vec(&[2, 16, 47], vec![0.5; 2 * 16 * 47]).unwrap();
    let (code, stderr, got) = run(&wrong, "wrong");
    assert_ne!(code, 0);
    assert!(got.is_none());
    assert!(
        stderr.contains("the input has shape [2, 16, 47]; this model takes arrays of shape (N, 16, 48) (its input is not an image)"),
        "{stderr}"
    );
}

/// A volume model runs NDHWC arrays through the CLI: tf.keras's output of the 3-D golden
/// fixture from .npy to .npy (batch of 2, in passes of 1); one `(D, H, W, C)` volume without the
/// batch axis runs as a batch of one; a volume of another size is refused (this model's output
/// is flat, not a volume, so it cannot be tiled), naming the size.
#[test]
fn run_takes_ndhwc_volumes() {
    let dir = temp_dir("volume");
    let (input, want) = golden_io("edge_3d");
    let x = dir.join("x.npy");
    write_npy(&x, &input, false).unwrap();
    let spec = "tests/golden/edge_3d.unet";
    let weights = "tests/golden/edge_3d.weights.safetensors";
    let y = dir.join("y.npy");
    let (code, _, stderr) = unetc(&[
        "run",
        spec,
        "--weights",
        weights,
        "--input",
        s(&x),
        "--output",
        s(&y),
        "--device",
        "cpu",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let got = read_npy(&y).unwrap();
    assert_eq!(got.shape, want.shape);
    let scale = want.data.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let err = got
        .data
        .iter()
        .zip(&want.data)
        .fold(0.0f32, |m, (g, w)| m.max((g - w).abs()));
    assert!(err / scale < 1e-5, "max relative error {}", err / scale);

    let item = input.item_len();
    let one = Tensor::from_vec(&input.shape[1..], input.data[..item].to_vec()).unwrap();
    let x1 = dir.join("x1.npy");
    write_npy(&x1, &one, false).unwrap();
    let y1 = dir.join("y1.npy");
    let (code, _, stderr) = unetc(&[
        "run",
        spec,
        "--weights",
        weights,
        "--input",
        s(&x1),
        "--output",
        s(&y1),
        "--device",
        "cpu",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let got1 = read_npy(&y1).unwrap();
    assert_eq!(got1.shape, vec![1, want.shape[1]]);
    assert_eq!(got1.data, got.data[..want.shape[1]]);

    let wrong = Tensor::zeros(&[1, 6, 5, 5, 3]);
    let xw = dir.join("xw.npy");
    write_npy(&xw, &wrong, false).unwrap();
    let (code, _, stderr) = unetc(&[
        "run",
        spec,
        "--weights",
        weights,
        "--input",
        s(&xw),
        "--output",
        s(&dir.join("yw.npy")),
        "--device",
        "cpu",
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("takes exactly 6x5x4") && stderr.contains("not a volume"),
        "{stderr}"
    );
    assert!(!dir.join("yw.npy").exists());
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

// ---------------------------------------------------------------------------------------------
// Issue 11: bad values, alpha, ignored options, directory runs, missing directories, -o, sizes.

/// `unetc run SPEC --weights W --input IN -o OUT EXTRA...`.
fn run_spec(
    spec: &str,
    weights: &Path,
    input: &Path,
    output: &Path,
    extra: &[&str],
) -> (i32, String) {
    let mut args = vec![
        "run",
        spec,
        "--weights",
        s(weights),
        "--input",
        s(input),
        "-o",
        s(output),
    ];
    args.extend_from_slice(extra);
    let (code, _, stderr) = unetc(&args);
    if std::env::var_os("UNETC_TEST_SHOW").is_some() {
        eprintln!("--- {extra:?} -> {code}\n{stderr}");
    }
    (code, stderr)
}

fn init_weights(spec: &str, dir: &Path) -> PathBuf {
    let weights = dir.join("w.safetensors");
    let (code, _, stderr) = unetc(&["init-weights", spec, "-o", s(&weights), "--seed", "5"]);
    assert_eq!(code, 0, "{stderr}");
    weights
}

const SIGMOID_NET: &str = "tests/golden/bn_same_small.unet"; // 32x32x3 in, 32x32x1 out
const SOFTMAX_NET: &str = "tests/golden/original_small.unet"; // 108x108x1 in, 20x20x2 out

#[test]
fn nan_or_inf_in_an_input_array_is_an_error_naming_where() {
    let dir = temp_dir("nan-input");
    let weights = init_weights(SIGMOID_NET, &dir);
    let mut x = Tensor::zeros(&[1, 32, 32, 3]);
    x.data[(3 * 32 + 5) * 3 + 1] = f32::NAN; // [0, 3, 5, 1]
    x.data[(4 * 32 + 4) * 3] = f32::INFINITY;
    let input = dir.join("nan.npy");
    write_npy(&input, &x, false).unwrap();
    let out = dir.join("out.npy");
    let (code, stderr) = run_spec(SIGMOID_NET, &weights, &input, &out, &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("nan.npy")
            && stderr.contains("2 of 3072 values are NaN or infinite")
            && stderr.contains("index [0, 3, 5, 1]")
            && stderr.contains("is NaN")
            && stderr.contains("nan_to_num")
            && !stderr.contains("panicked"),
        "{stderr}"
    );
    assert!(!out.exists());
}

#[test]
fn nan_or_inf_in_a_weight_is_an_error_naming_the_tensor() {
    let dir = temp_dir("nan-weight");
    let good = init_weights(SIGMOID_NET, &dir);
    let c = unetc::runner::compile_checked(Path::new(SIGMOID_NET), None).unwrap();
    let expected = unetc::runner::expected_weights(&c);
    let mut w = unetc::io::load_weights(&good, &expected).unwrap();
    let mut bias = w.get("conv2d_3/bias").unwrap().clone();
    bias.data[2] = f32::NEG_INFINITY;
    w.insert("conv2d_3/bias".into(), bias);
    let bad = dir.join("bad.safetensors");
    unetc::io::save_weights(&bad, &w, false).unwrap();
    let input = dir.join("x.npy");
    write_npy(&input, &Tensor::zeros(&[1, 32, 32, 3]), false).unwrap();
    let out = dir.join("out.npy");
    let (code, stderr) = run_spec(SIGMOID_NET, &bad, &input, &out, &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("bad.safetensors")
            && stderr.contains("\"conv2d_3/bias\"")
            && stderr.contains("\"conv2d_3/bias\": 1 of 8 values is NaN or infinite")
            && stderr.contains("index [2]")
            && stderr.contains("-inf")
            && stderr.contains("export them again"),
        "{stderr}"
    );
    assert!(!out.exists());

    // Weights that reach a backend from elsewhere than a file are checked there too.
    let mut map: std::collections::HashMap<String, Tensor> =
        w.iter().map(|(n, t)| (n.to_string(), t.clone())).collect();
    map.get_mut("conv2d/kernel").unwrap().data[0] = f32::NAN;
    let e = unetc::exec::cpu::CpuModel::new(&c.graph, &c.info, &map)
        .err()
        .expect("NaN weights are refused")
        .to_string();
    assert!(
        e.contains("conv2d/kernel") && e.contains("conv2d_3/bias") && e.contains("NaN"),
        "{e}"
    );
}

/// A float32 TIFF is read by the streaming reader (towards .npy/.tif outputs), which refuses
/// its NaN by index; towards a .png the whole-image reader refuses float TIFFs.
#[test]
fn float_tiff_with_nan_is_refused_not_run() {
    let dir = temp_dir("float-tiff");
    let weights = init_weights(SIGMOID_NET, &dir);
    let mut pixels = vec![0.5f32; 32 * 32 * 3];
    pixels[7] = f32::NAN;
    let img = image::ImageBuffer::<image::Rgb<f32>, _>::from_raw(32, 32, pixels).unwrap();
    let tif = dir.join("float.tif");
    img.save(&tif).unwrap();
    let out = dir.join("out.npy");
    let (code, stderr) = run_spec(SIGMOID_NET, &weights, &tif, &out, &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("float.tif") && stderr.contains("NaN at index [0, 0, 2, 1]"),
        "{stderr}"
    );
    assert!(!out.exists());
    let png = dir.join("out.png");
    let (code, stderr) = run_spec(SIGMOID_NET, &weights, &tif, &png, &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("float.tif") && stderr.contains(".npy"),
        "{stderr}"
    );
    assert!(!png.exists());
}

#[test]
fn rgba_needs_alpha_drop_for_an_rgb_model_and_reaches_a_4_channel_model() {
    let dir = temp_dir("alpha");
    let weights = init_weights(SIGMOID_NET, &dir);
    let rgb = image::RgbImage::from_fn(32, 32, |x, y| {
        image::Rgb([(x * 8) as u8, (y * 8) as u8, 77])
    });
    let rgba = image::RgbaImage::from_fn(32, 32, |x, y| {
        let p = rgb.get_pixel(x, y).0;
        image::Rgba([p[0], p[1], p[2], (x * y % 256) as u8])
    });
    let (rgb_png, rgba_png) = (dir.join("rgb.png"), dir.join("rgba.png"));
    rgb.save(&rgb_png).unwrap();
    rgba.save(&rgba_png).unwrap();

    // RGBA into a 3-channel model: refused, with what to do.
    let out = dir.join("rgba.npy");
    let (code, stderr) = run_spec(SIGMOID_NET, &weights, &rgba_png, &out, &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("rgba.png")
            && stderr.contains("is an RGBA image: 4 channel(s) but the model takes 3")
            && stderr.contains("--alpha drop"),
        "{stderr}"
    );
    assert!(!out.exists());
    // With --alpha drop: exactly the RGB image's result, and --verbose says alpha was dropped.
    let (code, stderr) = run_spec(
        SIGMOID_NET,
        &weights,
        &rgba_png,
        &out,
        &["--alpha", "drop", "--verbose"],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("alpha channel dropped"), "{stderr}");
    let rgb_out = dir.join("rgb.npy");
    assert_eq!(
        run_spec(SIGMOID_NET, &weights, &rgb_png, &rgb_out, &[]).0,
        0
    );
    assert_eq!(read_npy(&out).unwrap(), read_npy(&rgb_out).unwrap());

    // Gray into an RGB model: no silent conversion.
    let gray_png = dir.join("gray.png");
    image::GrayImage::new(32, 32).save(&gray_png).unwrap();
    let (code, stderr) = run_spec(SIGMOID_NET, &weights, &gray_png, &dir.join("g.npy"), &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("is a gray image: 1 channel(s) but the model takes 3")
            && stderr.contains("convert it to RGB"),
        "{stderr}"
    );

    // A 4-channel model whose one 1x1 convolution reads only channel 3: its output is alpha.
    let spec = dir.join("four.unet");
    std::fs::write(
        &spec,
        "model \"four\" {\n  input 32x32x4\n  conv2d(1, 1)\n}\n",
    )
    .unwrap();
    let mut w = unetc::io::Weights::new();
    w.insert(
        "conv2d/kernel".into(),
        Tensor::from_vec(&[1, 1, 4, 1], vec![0.0, 0.0, 0.0, 1.0]).unwrap(),
    );
    w.insert("conv2d/bias".into(), Tensor::zeros(&[1]));
    let w4 = dir.join("four.safetensors");
    unetc::io::save_weights(&w4, &w, false).unwrap();
    let out4 = dir.join("four.npy");
    let (code, stderr) = run_spec(s(&spec), &w4, &rgba_png, &out4, &[]);
    assert_eq!(code, 0, "{stderr}");
    let got = read_npy(&out4).unwrap();
    let want: Vec<f32> = rgba.pixels().map(|p| f32::from(p.0[3]) / 255.0).collect();
    assert_eq!(got.shape, vec![1, 32, 32, 1]);
    assert!(
        got.data
            .iter()
            .zip(&want)
            .all(|(g, w)| (g - w).abs() < 1e-6),
        "the model did not get the alpha channel"
    );
}

#[test]
fn options_that_would_do_nothing_are_errors() {
    let dir = temp_dir("ignored-options");
    let sigmoid_w = init_weights(SIGMOID_NET, &dir);
    let x = dir.join("x.npy");
    write_npy(&x, &Tensor::zeros(&[1, 32, 32, 3]), false).unwrap();
    let npy = dir.join("out.npy");
    let png = dir.join("out.png");
    let cases: [(&Path, &[&str], &[&str]); 4] = [
        (
            &npy,
            &["--class", "0"],
            &["--class 0", ".npy", "write a .png"],
        ),
        (
            &npy,
            &["--threshold", "0.3"],
            &["--threshold 0.3", ".npy", "write a .png"],
        ),
        (
            &png,
            &["--class", "0", "--threshold", "0.3"],
            &["give one of them"],
        ),
        (&png, &["--class", "1"], &["--class 1", "1 channel(s)"]),
    ];
    for (out, extra, wanted) in cases {
        let (code, stderr) = run_spec(SIGMOID_NET, &sigmoid_w, &x, out, extra);
        assert_eq!(code, 2, "{extra:?}: {stderr}");
        assert!(
            wanted.iter().all(|w| stderr.contains(w)),
            "{extra:?}: {stderr}"
        );
        assert!(!out.exists(), "{extra:?}");
    }
    // --threshold on a one-channel net still works.
    let (code, stderr) = run_spec(SIGMOID_NET, &sigmoid_w, &x, &png, &["--threshold", "0.3"]);
    assert_eq!(code, 0, "{stderr}");

    // --threshold on a softmax net: the mask is the argmax; say so and what to use.
    let dir2 = temp_dir("ignored-options-softmax");
    let softmax_w = init_weights(SOFTMAX_NET, &dir2);
    let x1 = dir2.join("x.npy");
    write_npy(&x1, &Tensor::zeros(&[1, 108, 108, 1]), false).unwrap();
    let (code, stderr) = run_spec(
        SOFTMAX_NET,
        &softmax_w,
        &x1,
        &dir2.join("m.png"),
        &["--threshold", "0.7"],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("--threshold 0.7")
            && stderr.contains("2 channels")
            && stderr.contains("argmax")
            && stderr.contains("--class K"),
        "{stderr}"
    );
}

#[test]
fn directory_run_names_each_failure_goes_on_and_reruns_cleanly() {
    let dir = temp_dir("dir-run");
    let weights = init_weights(SIGMOID_NET, &dir);
    let inputs = dir.join("in");
    let outputs = dir.join("out");
    std::fs::create_dir_all(&inputs).unwrap();
    for name in ["a.npy", "b.npy", "c.1.npy", "c.2.npy"] {
        write_npy(&inputs.join(name), &Tensor::zeros(&[1, 32, 32, 3]), false).unwrap();
    }
    let b = inputs.join("b.npy");
    let good_b = std::fs::read(&b).unwrap();
    std::fs::write(&b, &good_b[..good_b.len() - 7]).unwrap();

    let (code, stderr) = run_spec(SIGMOID_NET, &weights, &inputs, &outputs, &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("b.npy: is truncated")
            && stderr.contains("1 of 4 inputs failed")
            && stderr.contains("3 output(s) written")
            && stderr.contains("--skip-existing"),
        "{stderr}"
    );
    // The inputs after the bad one were run; `c.1` and `c.2` keep apart.
    for name in ["a.png", "c.1.png", "c.2.png"] {
        assert!(outputs.join(name).exists(), "{name}: {stderr}");
    }
    assert!(!outputs.join("b.png").exists());

    // Rerun as it was: refused before any work, saying what to do.
    let (code, stderr) = run_spec(SIGMOID_NET, &weights, &inputs, &outputs, &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("3 of the 4 outputs exist already")
            && stderr.contains("--force")
            && stderr.contains("--skip-existing"),
        "{stderr}"
    );

    // Fixed, and rerun with --skip-existing: only b runs; the others are untouched.
    std::fs::write(&b, &good_b).unwrap();
    std::fs::write(outputs.join("a.png"), b"keep me").unwrap();
    let (code, stderr) = run_spec(
        SIGMOID_NET,
        &weights,
        &inputs,
        &outputs,
        &["--skip-existing"],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("3 of 4 input(s) skipped"), "{stderr}");
    assert!(outputs.join("b.png").exists());
    assert_eq!(std::fs::read(outputs.join("a.png")).unwrap(), b"keep me");

    // --force and --skip-existing together contradict each other.
    let (code, stderr) = run_spec(
        SIGMOID_NET,
        &weights,
        &inputs,
        &outputs,
        &["--skip-existing", "--force"],
    );
    assert_eq!(code, 2);
    assert!(stderr.contains("give one of them"), "{stderr}");

    // An output that is its own input: refused even with --force.
    let png_in = dir.join("self.png");
    image::RgbImage::new(32, 32).save(&png_in).unwrap();
    let before = std::fs::read(&png_in).unwrap();
    let (code, stderr) = run_spec(SIGMOID_NET, &weights, &png_in, &png_in, &["--force"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("over its own input"), "{stderr}");
    assert_eq!(std::fs::read(&png_in).unwrap(), before);

    // Two inputs with one output name: refused up front.
    write_npy(
        &inputs.join("a.NPY"),
        &Tensor::zeros(&[1, 32, 32, 3]),
        false,
    )
    .unwrap();
    image::RgbImage::new(32, 32)
        .save(inputs.join("a.png"))
        .unwrap();
    let (code, stderr) = run_spec(SIGMOID_NET, &weights, &inputs, &dir.join("out2"), &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("would both be written to"), "{stderr}");
}

#[test]
fn missing_output_directory_is_named_plainly() {
    let dir = temp_dir("missing-dir");
    let weights = init_weights(SIGMOID_NET, &dir);
    let x = dir.join("x.npy");
    write_npy(&x, &Tensor::zeros(&[1, 32, 32, 3]), false).unwrap();
    let out = dir.join("no").join("such").join("mask.png");
    let (code, stderr) = run_spec(SIGMOID_NET, &weights, &x, &out, &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(s(&out))
            && stderr.contains(&format!(
                "the directory `{}` does not exist",
                s(out.parent().unwrap())
            ))
            && !stderr.contains(".mask.png"),
        "{stderr}"
    );
}

#[test]
fn run_takes_dash_o_and_prints_sizes_as_width_by_height() {
    let (code, help, _) = unetc(&["run", "--help"]);
    assert_eq!(code, 0);
    assert!(
        help.contains("-o, --output <OUTPUT>")
            && help.contains("--skip-existing")
            && help.contains("--alpha <ALPHA>"),
        "{help}"
    );
    // A 40-wide, 37-high image on a same-padding net: the size is printed W x H, labelled.
    let dir = temp_dir("wxh");
    let weights = init_weights(SIGMOID_NET, &dir);
    let png = dir.join("wide.png");
    image::RgbImage::new(40, 37).save(&png).unwrap();
    let out = dir.join("mask.png");
    let (code, stderr) = run_spec(SIGMOID_NET, &weights, &png, &out, &["--verbose"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("input 40x37 (W x H)")
            && stderr.contains("40x37 (W x H) mirror-padded to 40x40 (W x H)")
            && !stderr.contains("37x40"),
        "{stderr}"
    );
    // The README shows this very output (the peak RSS is this machine's: a line of the same
    // form), and names only options that exist.
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    assert!(stderr.contains("\npeak RSS ") && readme.contains("\n  peak RSS "));
    for line in stderr.lines().filter(|l| !l.starts_with("peak RSS ")) {
        assert!(
            readme.contains(&format!("  {line}\n")),
            "README.md lacks the --verbose line {line:?}"
        );
    }
    let options = readme
        .split("`run` options: ")
        .nth(1)
        .and_then(|rest| rest.split("\n\n").next())
        .expect("README lists run's options");
    for option in options.split('`').filter(|o| o.starts_with('-')) {
        let name = option.split([' ', '/']).next().unwrap();
        assert!(
            help.contains(name),
            "README names {name}, which run --help lacks"
        );
    }
    // The long form still works.
    let out2 = dir.join("mask2.png");
    let (code, _, stderr) = unetc(&[
        "run",
        SIGMOID_NET,
        "--weights",
        s(&weights),
        "--input",
        s(&png),
        "--output",
        s(&out2),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&out2).unwrap());
}

/// An empty array is refused, not a panic.
#[test]
fn empty_input_array_is_an_error() {
    let dir = temp_dir("empty");
    let weights = init_weights(SIGMOID_NET, &dir);
    let x = dir.join("empty.npy");
    write_npy(&x, &Tensor::zeros(&[0, 32, 32, 3]), false).unwrap();
    let (code, stderr) = run_spec(SIGMOID_NET, &weights, &x, &dir.join("o.npy"), &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("empty.npy") && stderr.contains("empty"),
        "{stderr}"
    );
}

/// A random `[1, h, w, c]` array in [0, 1), written to `path`.
fn random_image(path: &Path, [h, w, c]: [usize; 3], seed: u64) -> Vec<f32> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let data: Vec<f32> = (0..h * w * c)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 40) as f32 / (1u64 << 24) as f32
        })
        .collect();
    write_npy(
        path,
        &Tensor::from_vec(&[1, h, w, c], data.clone()).unwrap(),
        false,
    )
    .unwrap();
    data
}

/// Exact tiles of a same-padding net with batch norm give the whole-image result: the image is
/// run whole (it fits the default budget) and in tiles (asked with --tile, and chosen from a
/// small --memory), and the outputs agree within 1e-6. The expected values are unetc's own
/// whole-image run, which tests/golden checks against tf.keras; what this checks is that tiling
/// changes nothing.
#[test]
fn exact_tiles_of_a_same_padding_net_equal_the_whole_image() {
    let dir = temp_dir("exact-tiles");
    let weights = init_weights(SIGMOID_NET, &dir);
    // 230 wide, 250 high: padded to 232x256 (multiples of 8, the net's stride).
    let x = dir.join("x.npy");
    random_image(&x, [250, 230, 3], 11);
    let whole = dir.join("whole.npy");
    let (code, stderr) = run_spec(SIGMOID_NET, &weights, &x, &whole, &["--verbose"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("1 forward pass(es)"), "{stderr}");
    let whole = read_npy(&whole).unwrap();
    assert_eq!(whole.shape, vec![1, 250, 230, 1]);
    let cases: [&[&str]; 3] = [
        &["--tile", "160"],
        &["--tile", "128x160", "--batch", "3"],
        // 1 MiB holds the weights and a ~136-pixel tile's arena, not the whole image's 2.7 MiB.
        &["--memory", "1MiB"],
    ];
    for (i, extra) in cases.iter().enumerate() {
        let out = dir.join(format!("tiled{i}.npy"));
        let mut args = extra.to_vec();
        args.push("--verbose");
        let (code, stderr) = run_spec(SIGMOID_NET, &weights, &x, &out, &args);
        assert_eq!(code, 0, "{extra:?}: {stderr}");
        assert!(
            stderr.contains("exact: halo 56 ≥ reach 51") && !stderr.contains("1 forward pass(es)"),
            "{extra:?}: {stderr}"
        );
        let tiled = read_npy(&out).unwrap();
        assert_eq!(tiled.shape, whole.shape);
        let err = max_abs_diff(&tiled.data, &whole.data);
        assert!(err <= 1e-6, "{extra:?}: tiled differs from whole by {err}");
    }
}

/// The same check can fail: two halves of a 256x232 image run separately (a halo of 0, what
/// `tiles` used to advise for same-padding nets) differ from the whole image near the cut, and
/// blended tiles are close but not equal (their error is stated as approximate).
#[test]
fn tiles_without_a_halo_or_blended_differ_from_the_whole_image() {
    let dir = temp_dir("halo0");
    let weights = init_weights(SIGMOID_NET, &dir);
    let (h, w, c) = (256, 232, 3);
    let x = dir.join("x.npy");
    let data = random_image(&x, [h, w, c], 12);
    let whole = dir.join("whole.npy");
    assert_eq!(run_spec(SIGMOID_NET, &weights, &x, &whole, &[]).0, 0);
    let whole = read_npy(&whole).unwrap();
    let mut stitched = Vec::new();
    for half in 0..2 {
        let rows = &data[half * (h / 2) * w * c..(half + 1) * (h / 2) * w * c];
        let part = dir.join(format!("half{half}.npy"));
        write_npy(
            &part,
            &Tensor::from_vec(&[1, h / 2, w, c], rows.to_vec()).unwrap(),
            false,
        )
        .unwrap();
        let out = dir.join(format!("half{half}_out.npy"));
        assert_eq!(run_spec(SIGMOID_NET, &weights, &part, &out, &[]).0, 0);
        stitched.extend(read_npy(&out).unwrap().data);
    }
    let err = max_abs_diff(&stitched, &whole.data);
    assert!(err > 1e-3, "halves without halo differ by only {err}");
    let blended = dir.join("blend.npy");
    let (code, stderr) = run_spec(
        SIGMOID_NET,
        &weights,
        &x,
        &blended,
        &["--tile", "128", "--tile-mode", "blend", "--verbose"],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("approximate"), "{stderr}");
    let err = max_abs_diff(&read_npy(&blended).unwrap().data, &whole.data);
    assert!(err > 1e-6 && err < 0.1, "blend error {err}");
}

/// A net with a layer that sees the whole image (a squeeze-excitation gate) runs whole when it
/// fits, and is refused exact tiles by the layer's name when it does not.
#[test]
fn a_net_that_sees_the_whole_image_is_not_tiled_silently() {
    let spec = "tests/fixtures/se_same.unet";
    let dir = temp_dir("nonlocal");
    let weights = init_weights(spec, &dir);
    let x = dir.join("x.npy");
    random_image(&x, [100, 90, 3], 13);
    let out = dir.join("o.npy");
    let (code, stderr) = run_spec(spec, &weights, &x, &out, &[]);
    assert_eq!(code, 0, "{stderr}");
    for extra in [&["--tile", "32"][..], &["--memory", "100KiB"]] {
        let out = dir.join("o2.npy");
        let (code, stderr) = run_spec(spec, &weights, &x, &out, extra);
        assert_eq!(code, 2, "{extra:?}: {stderr}");
        assert!(
            stderr.contains("tiling is not exact for this net: layer `reshape` (Reshape)")
                && stderr.contains("--tile-mode blend"),
            "{extra:?}: {stderr}"
        );
        assert!(!out.exists());
    }
    let (code, stdout, stderr) = unetc(&["tiles", spec, "--image", "500x500", "--memory", "1MiB"]);
    assert_eq!(code, 3, "{stdout}");
    assert!(stderr.contains("not exact"), "{stderr}");
}

/// Reflect padding inside a net mirrors at the image's edge; a tile's edge is not the image's, so
/// exact tiles are refused by the layer's name.
#[test]
fn reflect_padding_is_not_tiled_exactly() {
    let dir = temp_dir("reflect-tiles");
    let spec = dir.join("r.unet");
    std::fs::write(
        &spec,
        "model {\n  input 64x64x3\n  zero_padding2d(1, mode: reflect, name: \"pad\") -> conv2d(2, 3)\n}\n",
    )
    .unwrap();
    let s = spec.to_str().unwrap();
    let (code, stdout, stderr) = unetc(&["tiles", s, "--image", "500x500", "--memory", "1MiB"]);
    assert_eq!(code, 3, "{stdout}");
    assert!(
        stderr.contains("layer `pad` (ZeroPadding2D) mirrors or repeats the image's edge pixels"),
        "{stderr}"
    );
}

/// Bilinear up-sampling (half-pixel centres) reads the two pixels around its source point, one
/// more than repetition does. By hand for `conv2d(3) -> up_sampling2d(2, bilinear) ->
/// max_pooling2d(2) -> conv2d(3)` (same padding): output p reads pooled [p − 1, p + 1], the pool
/// up-sampled [2p − 2, 2p + 3]; up-sampled q reads around (q + 0.5)/2 − 0.5, so q = 2p − 2 reads
/// from ⌊p − 1.25⌋ = p − 2 and q = 2p + 3 up to ⌈p + 1.25⌉ = p + 2; the first conv ±1: [p − 3,
/// p + 3], reach 3 (nearest: [p − 1, p + 1] up there, reach 2), receptive field 7. The stride
/// is 1, so the halo is the reach: with a halo of 2 the tiles would differ. With aligned corners
/// the scale (n − 1)/(N − 1) depends on the whole image's size: exact tiles are refused.
#[test]
fn bilinear_reach_by_hand_and_aligned_corners_are_not_tiled() {
    let dir = temp_dir("bilinear-tiles");
    let spec = dir.join("b.unet");
    let net = |up: &str| {
        format!(
            "model {{\n  input 32x32x2\n  defaults conv2d(padding: same, activation: relu)\n  conv2d(3, 3) -> up_sampling2d(2, {up}, name: \"up\") -> max_pooling2d(2) -> conv2d(2, 3)\n}}\n"
        )
    };
    std::fs::write(&spec, net("interpolation: bilinear")).unwrap();
    let weights = init_weights(s(&spec), &dir);
    let x = dir.join("x.npy");
    random_image(&x, [70, 90, 2], 15);
    let whole = dir.join("whole.npy");
    let (code, stderr) = run_spec(s(&spec), &weights, &x, &whole, &[]);
    assert_eq!(code, 0, "{stderr}");
    let tiled = dir.join("tiled.npy");
    let (code, stderr) = run_spec(
        s(&spec),
        &weights,
        &x,
        &tiled,
        &["--tile", "24", "--verbose"],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("exact: halo 3 ≥ reach 3"), "{stderr}");
    let err = max_abs_diff(
        &read_npy(&tiled).unwrap().data,
        &read_npy(&whole).unwrap().data,
    );
    assert!(err <= 1e-6, "tiled differs from whole by {err}");

    std::fs::write(&spec, net("interpolation: bilinear, align_corners: true")).unwrap();
    let (code, stdout, stderr) = unetc(&["tiles", s(&spec), "--image", "90x70", "--tile", "24"]);
    assert_eq!(code, 3, "{stdout}");
    assert!(
        stderr.contains("layer `up` (UpSampling2D) samples with aligned corners"),
        "{stderr}"
    );
}

/// A valid-padding net with aligned corners: its overlap tiles would each sample on a grid of
/// their own (they differ by about 1e-2 here), so it runs as one tile over the mirror-padded
/// image, the same as `--tile` of that size, and a smaller `--tile` or budget is refused.
#[test]
fn valid_net_with_aligned_corners_runs_as_one_tile() {
    let dir = temp_dir("valid-aligned");
    let spec = dir.join("v.unet");
    std::fs::write(
        &spec,
        "model {\n  input 44x44x1\n  defaults conv2d(padding: valid, activation: relu)\n  conv2d(4, 3) -> max_pooling2d(2) -> conv2d(4, 3) -> up_sampling2d(2, interpolation: bilinear, align_corners: true, name: \"up\") -> conv2d(2, 3)\n}\n",
    )
    .unwrap();
    let weights = init_weights(s(&spec), &dir);
    let x = dir.join("x.npy");
    random_image(&x, [60, 60, 1], 16);
    // out = in − 8: the margin is 4, 60 + 8 = 68 is accepted (even, ≥ 10).
    let (a, b) = (dir.join("a.npy"), dir.join("b.npy"));
    let (code, stderr) = run_spec(s(&spec), &weights, &x, &a, &["--verbose"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("into one tile of 68x68"), "{stderr}");
    let (code, stderr) = run_spec(s(&spec), &weights, &x, &b, &["--tile", "68"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(read_npy(&a).unwrap().data, read_npy(&b).unwrap().data);
    for extra in [&["--tile", "44"][..], &["--memory", "64KiB"]] {
        let out = dir.join("c.npy");
        let (code, stderr) = run_spec(s(&spec), &weights, &x, &out, extra);
        assert_eq!(code, 2, "{extra:?}: {stderr}");
        assert!(
            stderr.contains("layer `up` (UpSampling2D) samples with aligned corners")
                && stderr.contains("68x68 (W x H), runs as one tile"),
            "{extra:?}: {stderr}"
        );
        assert!(!out.exists());
    }
}

/// `--tile` works for a valid-padding net (overlap-tile, exact) and its sizes are checked.
#[test]
fn tile_option_on_a_valid_net_and_bad_tile_options() {
    let dir = temp_dir("valid-tile");
    let weights = init_weights(SOFTMAX_NET, &dir);
    let x = dir.join("x.npy");
    random_image(&x, [70, 60, 1], 14);
    let spec_tile = dir.join("a.npy");
    let (code, stderr) = run_spec(SOFTMAX_NET, &weights, &x, &spec_tile, &["--verbose"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("tiles of 108x108 (W x H)"), "{stderr}");
    let bigger = dir.join("b.npy");
    let (code, stderr) = run_spec(
        SOFTMAX_NET,
        &weights,
        &x,
        &bigger,
        &["--tile", "124", "--verbose"],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("tiles of 124x124 (W x H)"), "{stderr}");
    let err = max_abs_diff(
        &read_npy(&spec_tile).unwrap().data,
        &read_npy(&bigger).unwrap().data,
    );
    assert!(err <= 1e-5, "valid tiles of two sizes differ by {err}");
    let bad: [(&[&str], &str); 5] = [
        (&["--tile", "102"], "102 is not one (nearest: 100 and 108)"),
        (&["--tile", "0"], "--tile 0: expected HxW"),
        (&["--tile-mode", "blend"], "exact already"),
        (&["--overlap", "0.5"], "add --tile-mode blend"),
        (&["--memory", "lots"], "--memory lots: expected a size"),
    ];
    for (extra, want) in bad {
        let out = dir.join("bad.npy");
        let (code, stderr) = run_spec(SOFTMAX_NET, &weights, &x, &out, extra);
        assert_eq!(code, 2, "{extra:?}: {stderr}");
        assert!(stderr.contains(want), "{extra:?}: {stderr}");
        assert!(!out.exists());
    }
}

/// A list file of inputs, split over two runs with --num-parts/--part-id (files[K::N] of the
/// sorted names): each input is written by exactly one part, a failed one is named, the rest
/// go on, and the exit status and message say how many failed.
#[test]
fn list_inputs_split_into_parts_and_failures_are_counted() {
    let dir = temp_dir("parts");
    let weights = init_weights(SIGMOID_NET, &dir);
    let names = ["a", "b", "c", "d", "e"];
    for (i, name) in names.iter().enumerate() {
        random_image(&dir.join(format!("{name}.npy")), [32, 32, 3], 20 + i as u64);
    }
    // `c` is broken: a truncated file.
    std::fs::write(dir.join("c.npy"), b"\x93NUMPY").unwrap();
    // Listed out of order, with a comment and a blank line: the split sorts them.
    let list = dir.join("inputs.txt");
    let lines: Vec<String> = ["e", "c", "a", "d", "b"]
        .iter()
        .map(|n| dir.join(format!("{n}.npy")).display().to_string())
        .collect();
    std::fs::write(&list, format!("# five inputs\n{}\n\n", lines.join("\n"))).unwrap();
    let out = dir.join("out.npy");
    // Sorted a b c d e: part 0 takes a, c, e; part 1 takes b, d.
    let (code, stderr) = run_spec(
        SIGMOID_NET,
        &weights,
        &list,
        &out,
        &["--num-parts", "2", "--part-id", "0"],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("c.npy") && stderr.contains("1 of 3 inputs failed"),
        "{stderr}"
    );
    let at = format!("@{}", list.display());
    let (code, stderr) = run_spec(
        SIGMOID_NET,
        &weights,
        Path::new(&at),
        &out,
        &["--num-parts", "2", "--part-id", "1"],
    );
    assert_eq!(code, 0, "{stderr}");
    let mut written: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    written.sort();
    assert_eq!(written, ["a.npy", "b.npy", "d.npy", "e.npy"]);
    for (extra, want) in [
        (&["--num-parts", "2", "--part-id", "2"][..], "K in 0..N"),
        (&["--num-parts", "0"][..], "--num-parts"),
    ] {
        let (code, stderr) = run_spec(SIGMOID_NET, &weights, &list, &dir.join("o2.npy"), extra);
        assert_eq!(code, 2, "{extra:?}: {stderr}");
        assert!(stderr.contains(want), "{extra:?}: {stderr}");
    }
    // One input file has nothing to split.
    let (code, stderr) = run_spec(
        SIGMOID_NET,
        &weights,
        &dir.join("a.npy"),
        &dir.join("one.npy"),
        &["--num-parts", "2"],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("would do nothing"), "{stderr}");
}

/// A model with several outputs: `run` writes the first and says so, naming the others.
#[test]
fn run_names_the_outputs_it_does_not_write() {
    let dir = temp_dir("multi-output");
    let spec = dir.join("two.unet");
    std::fs::write(
        &spec,
        "model {\n  input 8x8x1\n  a = conv2d(2, 1, name: \"main\")\n  b = a -> conv2d(1, 1, name: \"aux\")\n  output a, b\n}\n",
    )
    .unwrap();
    let weights = dir.join("w.safetensors");
    let (code, _, stderr) = unetc(&["init-weights", s(&spec), "-o", s(&weights)]);
    assert_eq!(code, 0, "{stderr}");
    let x = dir.join("x.npy");
    write_npy(
        &x,
        &Tensor::from_vec(&[1, 8, 8, 1], vec![0.5; 64]).unwrap(),
        false,
    )
    .unwrap();
    let y = dir.join("y.npy");
    let (code, _, stderr) = unetc(&[
        "run",
        s(&spec),
        "--weights",
        s(&weights),
        "--input",
        s(&x),
        "--output",
        s(&y),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr
            .contains("note: the model has 2 outputs; `run` writes the first, `main`, and not aux"),
        "{stderr}"
    );
    assert_eq!(read_npy(&y).unwrap().shape, vec![1, 8, 8, 2]);
}
