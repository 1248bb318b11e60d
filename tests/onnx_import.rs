//! `unetc import model.onnx`: U-Nets built in PyTorch and exported by torch.onnx.export
//! (tests/onnx_import/generate.py, with onnxruntime's output recorded beside each). Each imports,
//! runs on unetc's CPU executor with the input transposed to NHWC, and matches onnxruntime within
//! 1e-5 of the output's largest magnitude. Models unetc cannot map are refused naming the node.

mod common;

use common::*;
use std::path::Path;
use unetc::exec::cpu::CpuModel;
use unetc::exec::Tensor;
use unetc::runner::expected_weights;

/// NC... -> N...C
fn channels_last(t: &Tensor) -> Tensor {
    let (n, c) = (t.shape[0], t.shape[1]);
    let inner: usize = t.shape[2..].iter().product();
    let mut data = vec![0f32; t.data.len()];
    for b in 0..n {
        for ch in 0..c {
            for p in 0..inner {
                data[(b * inner + p) * c + ch] = t.data[(b * c + ch) * inner + p];
            }
        }
    }
    let mut shape = vec![n];
    shape.extend(&t.shape[2..]);
    shape.push(c);
    Tensor::from_vec(&shape, data).unwrap()
}

fn fixture(stem: &str) -> Vec<u8> {
    std::fs::read(root().join(format!("tests/onnx_import/{stem}.onnx"))).unwrap()
}

/// Imports, binds the weights through the same file path `unetc run` uses, runs on the CPU.
fn import_and_run(stem: &str) -> Result<f32, String> {
    import_and_run_spec(stem).map(|(e, _)| e)
}

fn import_and_run_spec(stem: &str) -> Result<(f32, String), String> {
    let m = unetc::interop::onnx_import::import_onnx(&fixture(stem)).map_err(|e| e.to_string())?;
    let c = unetc::compile_source(
        Path::new(&format!("{stem}.unet")),
        m.spec.clone(),
        &unetc::Options::default(),
        &mut unetc::expand::Session::new(),
    );
    assert!(
        !c.has_errors(),
        "{stem}: the imported spec does not check:\n{}",
        m.spec
    );
    let dir = tempfile::tempdir().unwrap();
    let wpath = dir.path().join("w.safetensors");
    unetc::io::save_weights(&wpath, &m.weights, false).unwrap();
    let weights = unetc::io::load_weights(&wpath, &expected_weights(&c))
        .unwrap_or_else(|e| panic!("{stem}: weights do not fit the spec: {e}\n{}", m.spec));
    let (input, want) =
        io_tensors(&root().join(format!("tests/onnx_import/{stem}.io.safetensors")));
    let got = CpuModel::new(&c.graph, &c.info, &weights)
        .expect("bind")
        .run(&channels_last(&input))
        .expect("run")
        .remove(0);
    Ok((rel_err(&got, &channels_last(&want)), m.spec))
}

#[test]
fn pytorch_unets_import_and_match_onnxruntime() {
    let expected_to_run = [
        "plain_bilinear",
        "plain_transpose",
        "plain_transpose_dynamo",
        "plain_align_corners",
        "plain_resize_ratio",
        "plain_kinds",
        "plain_kinds3d",
        "plain_reflect_pad",
        "plain_unet3d_trilinear",
        "plain_trilinear_aligned",
        "monai_unet",
        "monai_unet3d",
        "monai_basicunet",
        "monai_attentionunet",
        "monai_basicunet_interp",
        "monai_basicunet3d_interp",
        "monai_dynunet",
        "smp_unet",
        "smp_unetplusplus",
        "smp_linknet",
        "nnunet_plain",
        "nnunet_plain3d",
        "nnunet_resenc",
    ];
    for stem in expected_to_run {
        let (e, spec) = import_and_run_spec(stem).unwrap_or_else(|e| panic!("{stem}: {e}"));
        println!("{stem}: max relative error vs onnxruntime {e:.2e}");
        assert!(e <= 1e-5, "{stem}: {e:.3e}");
        // The layer kinds each model is there to exercise (see generate.py).
        let uses: &[&str] = match stem {
            "plain_bilinear" => &[
                "batch_normalization(",
                "interpolation: \"bilinear\"",
                "max_pooling2d(",
            ],
            "plain_transpose" => &["conv2d_transpose(", "cropping2d("],
            "plain_kinds" => &[
                "zero_padding2d(padding: ((0, 1), (1, 2))",
                "groups: 4",
                "dilation_rate: (2, 2), use_bias: true, groups: 2",
                "elu(alpha: 0.7",
                "leaky_re_lu(alpha: 0.2",
                "average_pooling2d(pool_size: (3, 3)",
                "global_average_pooling2d(",
                "tf_op(\"math.multiply\"",
                "subtract(",
                "activation: \"softmax\"",
            ],
            "plain_kinds3d" => &[
                "max_pooling3d(",
                "up_sampling3d(",
                "conv3d_transpose(",
                "group_normalization(groups: 3",
            ],
            "plain_align_corners" => &["interpolation: \"bilinear\", align_corners: true"],
            "plain_resize_ratio" => &[
                "resizing(height: 9, width: 13, interpolation: \"bilinear\"",
                "resizing(height: 18, width: 15, interpolation: \"bilinear\"",
            ],
            "nnunet_plain" => &[
                "conv2d_transpose(",
                "group_normalization(groups: 4",
                "leaky_re_lu(alpha: 0.01",
            ],
            "nnunet_plain3d" => &["conv3d(", "conv3d_transpose(", "group_normalization("],
            // The residual encoder's strided shortcut: an average pool and a 1x1 conv.
            "nnunet_resenc" => &["add(", "average_pooling2d(", "conv2d_transpose("],
            "plain_reflect_pad" => &[
                "zero_padding2d(padding: ((1, 1), (1, 1)), mode: \"reflect\"",
                "zero_padding2d(padding: ((0, 3), (2, 1)), mode: \"replicate\"",
                "zero_padding2d(padding: ((1, 2), (3, 0)), mode: \"reflect\"",
                "zero_padding2d(padding: ((2, 2), (2, 2)), mode: \"replicate\"",
            ],
            // ReplicationPad3d, ReflectionPad3d, F.pad modes, padding_mode="replicate".
            "plain_unet3d_trilinear" => &[
                "up_sampling3d(size: (2, 2, 2), interpolation: \"trilinear\", name",
                "zero_padding3d(padding: ((1, 1), (1, 1), (1, 1)), mode: \"replicate\"",
                "zero_padding3d(padding: ((1, 1), (1, 1), (1, 1)), mode: \"reflect\"",
                "zero_padding3d(padding: ((0, 2), (2, 0), (1, 1)), mode: \"replicate\"",
                "zero_padding3d(padding: ((1, 0), (2, 1), (0, 1)), mode: \"replicate\"",
                "zero_padding3d(padding: ((1, 2), (0, 1), (2, 1)), mode: \"reflect\"",
            ],
            "plain_trilinear_aligned" => &[
                "up_sampling3d(size: (2, 3, 2), interpolation: \"trilinear\", align_corners: true, name",
                "up_sampling3d(size: (1, 2, 3), interpolation: \"trilinear\", name",
            ],
            "monai_basicunet3d_interp" => &["interpolation: \"trilinear\", align_corners: true"],
            "monai_unet" => &[
                "group_normalization(groups: 4",
                "p_re_lu(",
                "add(",
                "zero_padding2d(",
            ],
            "monai_unet3d" => &[
                "conv3d(",
                "conv3d_transpose(",
                "cropping3d(",
                "group_normalization(",
            ],
            "monai_basicunet" => &["leaky_re_lu(alpha: 0.1"],
            "monai_basicunet_interp" => &["align_corners: true"],
            "monai_dynunet" => &["conv2d_transpose(", "group_normalization("],
            "monai_attentionunet" => &["tf_op(\"math.multiply\"", "batch_normalization("],
            "smp_unet" => &[
                "batch_normalization(",
                "interpolation: \"nearest\"",
                "max_pooling2d(pool_size: (3, 3)",
            ],
            _ => &[],
        };
        for u in uses {
            assert!(spec.contains(u), "{stem}: no `{u}` in\n{spec}");
        }
    }
}

#[test]
fn unsupported_nodes_are_named() {
    let cases = [
        ("plain_hardswish", "node `/1/HardSwish` (HardSwish): operator HardSwish on the image tensor has no unetc layer"),
    ];
    for (stem, want) in cases {
        let e = import_and_run(stem).expect_err(stem);
        assert!(e.contains(want), "{stem}: {e}");
    }
}

#[test]
fn garbage_and_truncated_files_error_cleanly() {
    use unetc::interop::onnx_import::import_onnx;
    let e = import_onnx(b"this is not a protobuf \xff\xff\xff")
        .err()
        .expect("garbage");
    assert!(e.0.contains("not an ONNX model"), "{e}");
    let good = fixture("plain_transpose");
    for cut in [1, 7, 100, good.len() / 3, good.len() / 2, good.len() - 5] {
        // Truncation is refused by the decoder or leaves a model without its nodes' inputs;
        // either way an error, never a panic.
        assert!(import_onnx(&good[..cut]).is_err(), "cut at {cut} accepted");
    }
    // Every single-byte corruption of a small model errors or imports, without a panic.
    let small = fixture("plain_align_corners");
    for i in 0..small.len() {
        let mut b = small.clone();
        b[i] ^= 0x5a;
        let _ = import_onnx(&b);
    }
}

#[test]
fn cli_writes_spec_and_weights_and_names_the_node_on_failure() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("m.unet");
    let w = dir.path().join("m.safetensors");
    let onnx = root().join("tests/onnx_import/plain_bilinear.onnx");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_unetc"))
        .args(["import"])
        .arg(&onnx)
        .arg("-o")
        .arg(&spec)
        .arg("--weights-out")
        .arg(&w)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&spec).unwrap();
    assert!(text.contains("NHWC"), "{text}");
    assert!(text.contains("input(shape: 64x64x3"), "{text}");
    assert!(w.exists());
    // The failing model writes nothing.
    let spec2 = dir.path().join("n.unet");
    let w2 = dir.path().join("n.safetensors");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_unetc"))
        .arg("import")
        .arg(root().join("tests/onnx_import/plain_hardswish.onnx"))
        .arg("-o")
        .arg(&spec2)
        .arg("--weights-out")
        .arg(&w2)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("node `/1/HardSwish`"), "{err}");
    assert!(!spec2.exists() && !w2.exists());
}

/// `align_corners: true` (unetc's extension for PyTorch's bilinear) round-trips through
/// `export --to onnx` into onnxruntime, and `export --to keras` refuses it by name.
#[test]
fn align_corners_exports_to_onnx_and_is_refused_for_keras() {
    beyond_keras_round_trip(
        "plain_align_corners",
        "`Resize`: bilinear up-sampling with align_corners",
    );
}

/// So do `mode: reflect` and `mode: replicate` on zero_padding2d (PyTorch's padding modes).
#[test]
fn padding_modes_export_to_onnx_and_are_refused_for_keras() {
    beyond_keras_round_trip(
        "plain_reflect_pad",
        "`conv_Pad`: reflect or replicate padding (PyTorch's padding_mode)",
    );
}

/// The 3-D forms: trilinear up-sampling (with and without aligned corners) and reflect /
/// replicate padding of volumes.
#[test]
fn trilinear_and_volume_padding_modes_export_to_onnx_and_are_refused_for_keras() {
    beyond_keras_round_trip(
        "plain_trilinear_aligned",
        "trilinear up-sampling (PyTorch's); Keras's UpSampling3D repeats voxels only",
    );
    beyond_keras_round_trip(
        "plain_unet3d_trilinear",
        "reflect or replicate padding (PyTorch's padding_mode); Keras's ZeroPadding3D pads with zeros only",
    );
}

fn beyond_keras_round_trip(stem: &str, refusal: &str) {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("ac.unet");
    let w = dir.path().join("ac.safetensors");
    let fixture_path = root().join(format!("tests/onnx_import/{stem}.onnx"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_unetc"))
        .arg("import")
        .arg(&fixture_path)
        .arg("-o")
        .arg(&spec)
        .arg("--weights-out")
        .arg(&w)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let keras = std::process::Command::new(env!("CARGO_BIN_EXE_unetc"))
        .args(["export", "--to", "keras"])
        .arg(&spec)
        .output()
        .unwrap();
    assert_eq!(keras.status.code(), Some(2));
    let err = String::from_utf8_lossy(&keras.stderr);
    assert!(
        err.contains("tf.keras cannot express") && err.contains(refusal),
        "{err}"
    );
    let available = std::process::Command::new("python3")
        .args(["-c", "import onnxruntime, numpy"])
        .status()
        .is_ok_and(|s| s.success());
    if !available {
        println!("SKIP: onnxruntime not installed");
        return;
    }
    let model = dir.path().join("ac.onnx");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_unetc"))
        .args(["export", "--to", "onnx", "--weights"])
        .arg(&w)
        .arg(&spec)
        .arg("-o")
        .arg(&model)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (input, want) =
        io_tensors(&root().join(format!("tests/onnx_import/{stem}.io.safetensors")));
    let x = dir.path().join("in.npy");
    let y = dir.path().join("out.npy");
    unetc::io::write_npy(&x, &channels_last(&input), true).unwrap();
    let run = std::process::Command::new("python3")
        .arg(root().join("tools/onnx_check.py"))
        .args([&model, &x, &y])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let got = unetc::io::read_npy(&y).unwrap();
    let e = rel_err(&got, &channels_last(&want));
    println!("{stem}: unetc's ONNX export in onnxruntime vs PyTorch's in onnxruntime {e:.2e}");
    assert!(e <= 1e-5, "{e:.3e}");
}
