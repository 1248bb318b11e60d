//! `unetc convert-weights --from pytorch`: PyTorch state_dicts saved with
//! `safetensors.torch.save_file` (tests/onnx_import/generate.py, real PyTorch) converted for the
//! spec `unetc import` wrote from the same model's ONNX export; the converted weights run on
//! unetc's CPU executor and match PyTorch's own output (`torch_output`) within 1e-5 of its
//! largest magnitude. And the refusals: a shape that fits no layer, an ambiguous pairing, a
//! missing tensor, a wrong dtype, each named.

mod common;

use common::*;
use safetensors::tensor::{Dtype, TensorView};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use unetc::exec::cpu::CpuModel;
use unetc::exec::Tensor;
use unetc::interop::pytorch::{convert_state_dict, Binding};
use unetc::runner::expected_weights;

fn unetc(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_unetc"))
        .args(args)
        .output()
        .unwrap()
}

fn fixture(name: &str) -> PathBuf {
    root().join("tests/onnx_import").join(name)
}

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

fn io(stem: &str, name: &str) -> Tensor {
    io_at(&fixture(&format!("{stem}.io.safetensors")), name)
}

/// One f32 tensor of a recorded io file.
fn io_at(path: &Path, name: &str) -> Tensor {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let v = st.tensor(name).unwrap();
    let data = v
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Tensor::from_vec(v.shape(), data).unwrap()
}

/// Runs `spec` with the weights file `w` (read the way `unetc run` reads it) on the fixture's
/// input; the largest error relative to PyTorch's output.
fn error_vs_pytorch(stem: &str, spec: &Path, w: &Path) -> f32 {
    let c = unetc::runner::compile_checked(spec, None).unwrap();
    let weights = unetc::io::load_weights(w, &expected_weights(&c)).unwrap();
    let got = CpuModel::new(&c.graph, &c.info, &weights)
        .unwrap()
        .run(&channels_last(&io(stem, "input")))
        .unwrap()
        .remove(0);
    rel_err(&got, &channels_last(&io(stem, "torch_output")))
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// import (spec, ONNX weights, map) then convert-weights; returns (spec, converted, onnx weights,
/// convert's output).
fn import_and_convert(
    dir: &Path,
    stem: &str,
    use_map: bool,
) -> (PathBuf, PathBuf, PathBuf, Output) {
    let spec = dir.join(format!("{stem}.unet"));
    let onnx_w = dir.join(format!("{stem}.onnx.safetensors"));
    let map = dir.join(format!("{stem}.map"));
    let out = unetc(&[
        "import".as_ref(),
        fixture(&format!("{stem}.onnx")).as_os_str(),
        "-o".as_ref(),
        spec.as_os_str(),
        "--weights-out".as_ref(),
        onnx_w.as_os_str(),
        "--map-out".as_ref(),
        map.as_os_str(),
    ]);
    assert!(out.status.success(), "{stem}: {}", stderr(&out));
    let conv = dir.join(format!("{stem}.converted.safetensors"));
    let sd = fixture(&format!("{stem}.state_dict.safetensors"));
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "convert-weights".as_ref(),
        spec.as_os_str(),
        sd.as_os_str(),
        "--from".as_ref(),
        "pytorch".as_ref(),
        "-o".as_ref(),
        conv.as_os_str(),
    ];
    if use_map {
        args.extend(["--map".as_ref(), map.as_os_str()]);
    }
    let out = unetc(&args);
    (spec, conv, onnx_w, out)
}

#[test]
fn state_dicts_convert_and_match_pytorch() {
    let dir = tempfile::tempdir().unwrap();
    // (model, map from `unetc import --map-out`?, how the modules are bound)
    let cases = [
        ("plain_transpose", true, "bound by the map"),
        ("smp_unet_small", true, "bound by the map"),
        ("monai_basicunet", true, "bound by the map"),
        // Twelve Sequential modules: `10` and `11` come after `9` only in numeric order.
        ("plain_sequential", false, "bound by module order"),
    ];
    for (stem, use_map, how) in cases {
        let (spec, conv, onnx_w, out) = import_and_convert(dir.path(), stem, use_map);
        let msg = stderr(&out);
        assert!(out.status.success(), "{stem}: {msg}");
        assert!(msg.contains(how), "{stem}: {msg}");
        if stem == "plain_sequential" {
            // Three 4->4 convolutions and three BatchNorms of 4: only the order tells them apart.
            assert!(
                msg.contains("note: 6 of the layers have shapes other modules have too"),
                "{msg}"
            );
        }
        let e = error_vs_pytorch(stem, &spec, &conv);
        println!("{stem}: state_dict converted by unetc vs PyTorch {e:.2e}");
        assert!(e <= 1e-5, "{stem}: {e:.3e}");
        // The same values as the ONNX export's initializers, laid out by the ONNX importer.
        let c = unetc::runner::compile_checked(&spec, None).unwrap();
        let a = unetc::io::load_weights(&conv, &expected_weights(&c)).unwrap();
        let b = unetc::io::load_weights(&onnx_w, &expected_weights(&c)).unwrap();
        assert!(
            a == b,
            "{stem}: converted weights differ from the ONNX ones"
        );
    }
}

/// torch.nn.MultiheadAttention's state_dict (tests/pytorch_attention/generate.py, real PyTorch):
/// a packed in_proj_weight with biases and separate q/k/v_proj_weight of other widths without
/// biases, converted for the hand-written spec of the same net; unetc's output matches
/// PyTorch's. A spec whose attention does not match the module is refused, saying why.
#[test]
fn multihead_attention_state_dicts_convert_and_match_pytorch() {
    let dir = tempfile::tempdir().unwrap();
    let here = root().join("tests/pytorch_attention");
    let (spec, sd) = (
        here.join("attention.unet"),
        here.join("attention.state_dict.safetensors"),
    );
    let conv = dir.path().join("attention.safetensors");
    let convert = |spec: &Path| {
        unetc(&[
            "convert-weights".as_ref(),
            spec.as_os_str(),
            sd.as_os_str(),
            "--from".as_ref(),
            "pytorch".as_ref(),
            "-o".as_ref(),
            conv.as_os_str(),
            "--force".as_ref(),
        ])
    };
    let out = convert(&spec);
    assert!(out.status.success(), "{}", stderr(&out));
    let c = unetc::runner::compile_checked(&spec, None).unwrap();
    let weights = unetc::io::load_weights(&conv, &expected_weights(&c)).unwrap();
    let read = |name: &str| channels_last(&io_at(&here.join("attention.io.safetensors"), name));
    let got = CpuModel::new(&c.graph, &c.info, &weights)
        .unwrap()
        .run(&read("input"))
        .unwrap()
        .remove(0);
    let e = rel_err(&got, &read("torch_output"));
    println!("attention: state_dict converted by unetc vs PyTorch {e:.2e}");
    assert!(e <= 1e-5, "{e:.3e}");
    // The cross-attention with biases, which the module does not have; with heads too narrow
    // for the module's embed_dim of 8: both refused, saying why.
    for (from, to, why) in [
        (
            "num_heads: 4, key_dim: 2, use_bias: false",
            "num_heads: 4, key_dim: 2",
            "it has no `in_proj_bias`",
        ),
        (
            "num_heads: 4, key_dim: 2, use_bias: false",
            "num_heads: 2, key_dim: 2, use_bias: false",
            "`cross`: torch.nn.MultiheadAttention has value heads as wide as key heads and gives embed_dim = num_heads x key_dim = 4 features; this layer has value_dim 2, key_dim 2 and output width 8",
        ),
    ] {
        let text = std::fs::read_to_string(&spec).unwrap();
        assert!(text.contains(from));
        let bad = dir.path().join("bad.unet");
        std::fs::write(&bad, text.replace(from, to)).unwrap();
        let out = convert(&bad);
        assert!(!out.status.success());
        assert!(stderr(&out).contains(why), "{to}: {}", stderr(&out));
    }
}

/// The test can fail: two 4->4 convolutions swapped in the map (the shapes allow it) give a
/// clearly different output.
#[test]
fn a_swapped_map_line_changes_the_output() {
    let dir = tempfile::tempdir().unwrap();
    let stem = "plain_transpose";
    let (spec, _, _, out) = import_and_convert(dir.path(), stem, true);
    assert!(out.status.success(), "{}", stderr(&out));
    let map = dir.path().join(format!("{stem}.map"));
    let text = std::fs::read_to_string(&map).unwrap();
    assert!(
        text.contains("\nd1.3 -> ") && text.contains("\nc1.3 -> "),
        "{text}"
    );
    let swapped = text
        .replace("\nd1.3 -> ", "\nTMP -> ")
        .replace("\nc1.3 -> ", "\nd1.3 -> ")
        .replace("\nTMP -> ", "\nc1.3 -> ");
    std::fs::write(&map, swapped).unwrap();
    let conv = dir.path().join("swapped.safetensors");
    let sd = fixture(&format!("{stem}.state_dict.safetensors"));
    let out = unetc(&[
        "convert-weights".as_ref(),
        spec.as_os_str(),
        sd.as_os_str(),
        "--from".as_ref(),
        "pytorch".as_ref(),
        "--map".as_ref(),
        map.as_os_str(),
        "-o".as_ref(),
        conv.as_os_str(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let e = error_vs_pytorch(stem, &spec, &conv);
    assert!(e > 1e-3, "swapped convolutions still match: {e:.3e}");
}

/// Without a map, models whose module order is not their spec order are refused, naming the
/// first mismatch, and a proposed map is written next to the output; nothing else is written.
#[test]
fn without_a_map_unordered_models_are_refused_with_a_proposal() {
    let dir = tempfile::tempdir().unwrap();
    let (_, conv, _, out) = import_and_convert(dir.path(), "plain_transpose", false);
    assert_eq!(out.status.code(), Some(2));
    let msg = stderr(&out);
    // PyTorch's keys sort `c1` before `d1`; the spec starts with d1's 3->4 convolution.
    assert!(
        msg.contains("in module order, layer 1 of 23, `d1_d1_0_Conv` (conv2d: kernel [3, 3, 3, 4], bias [4]), meets module `c1.0`: its `weight` is [4, 8, 3, 3], the layer needs [4, 3, 3, 3]"),
        "{msg}"
    );
    assert!(
        msg.contains(
            "fits 4 modules (`c1.1`, `c1.4`, `d1.1`, `d1.4`), and nothing tells them apart"
        ),
        "{msg}"
    );
    assert!(!conv.exists());
    // The README shows this refusal: its detail lines are what unetc prints.
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    for line in msg.lines().skip(1).take(2) {
        assert!(readme.contains(line), "README lacks:\n{line}");
    }
    let proposal = conv.with_extension("proposed.map");
    let text = std::fs::read_to_string(&proposal).unwrap();
    assert!(
        text.contains("? c1.1 -> d1_d1_1_BatchNormalization"),
        "{text}"
    );
    // The 8->16 transposed convolution `u2` is the only module of its shape.
    assert!(
        text.contains("\nu2 -> u2_ConvTranspose   # the only module that fits\n"),
        "{text}"
    );
}

// ---- Refusals on small hand-made state_dicts ----

const SPEC: &str = r#"model "m" {
  input(shape: 8x8x3, name: "x")
  x -> conv2d(filters: 4, kernel_size: 3, padding: "same", name: "stem")
  stem -> batch_normalization(name: "bn")
  bn -> conv2d(filters: 4, kernel_size: 3, padding: "same", use_bias: false, name: "c1")
  c1 -> conv2d(filters: 4, kernel_size: 3, padding: "same", use_bias: false, name: "c2")
  c2 -> conv2d(filters: 2, kernel_size: 1, name: "head")
  output head
}
"#;

fn compiled() -> unetc::Compiled {
    compile(SPEC)
}

fn compile(spec: &str) -> unetc::Compiled {
    let c = unetc::compile_source(
        Path::new("m.unet"),
        spec.to_string(),
        &unetc::Options::default(),
        &mut unetc::expand::Session::new(),
    );
    assert!(!c.has_errors());
    c
}

/// A safetensors file of `(key, dtype, shape)`, values k * 0.01 + position.
fn state_dict(tensors: &[(&str, Dtype, &[usize])]) -> Vec<u8> {
    let bufs: Vec<Vec<u8>> = tensors
        .iter()
        .enumerate()
        .map(|(k, (_, dt, shape))| {
            let n: usize = shape.iter().product();
            match dt {
                Dtype::F32 => (0..n)
                    .flat_map(|i| (k as f32 + i as f32 * 0.01).to_le_bytes())
                    .collect(),
                Dtype::F64 => (0..n)
                    .flat_map(|i| (k as f64 + i as f64 * 0.01).to_le_bytes())
                    .collect(),
                Dtype::I64 => (0..n).flat_map(|i| (i as i64).to_le_bytes()).collect(),
                other => panic!("{other:?}"),
            }
        })
        .collect();
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .zip(&bufs)
        .map(|((name, dt, shape), b)| {
            (
                name.to_string(),
                TensorView::new(*dt, shape.to_vec(), b).unwrap(),
            )
        })
        .collect();
    safetensors::tensor::serialize(views, None).unwrap()
}

/// The modules of a model with a stem, its BatchNorm, two blocks and a head, keyed the way
/// PyTorch names attributes (`head` sorts before `stem`, so module order is not spec order).
fn good() -> Vec<(&'static str, Dtype, &'static [usize])> {
    vec![
        ("stem.weight", Dtype::F32, &[4, 3, 3, 3]),
        ("stem.bias", Dtype::F32, &[4]),
        ("norm.weight", Dtype::F32, &[4]),
        ("norm.bias", Dtype::F32, &[4]),
        ("norm.running_mean", Dtype::F32, &[4]),
        ("norm.running_var", Dtype::F32, &[4]),
        ("norm.num_batches_tracked", Dtype::I64, &[]),
        ("blocks.0.weight", Dtype::F32, &[4, 4, 3, 3]),
        ("blocks.1.weight", Dtype::F32, &[4, 4, 3, 3]),
        ("head.weight", Dtype::F32, &[2, 4, 1, 1]),
        ("head.bias", Dtype::F32, &[2]),
    ]
}

const GOOD_MAP: &str = "stem -> stem\nnorm -> bn\nblocks.0 -> c1\nblocks.1 -> c2\nhead -> head\n";

#[test]
fn ambiguous_pairing_is_refused_and_the_checked_proposal_works() {
    let c = compiled();
    let sd = state_dict(&good());
    let e = convert_state_dict(&c, &sd, None).unwrap_err();
    assert!(
        e.message.contains("in module order, layer 1 of 5, `stem` (conv2d: kernel [3, 3, 3, 4], bias [4]), meets module `blocks.0`: its `weight` is [4, 4, 3, 3], the layer needs [4, 3, 3, 3]"),
        "{}",
        e.message
    );
    assert!(
        e.message.contains(
            "by shape, layer `c1` (conv2d: kernel [3, 3, 4, 4]) fits 2 modules (`blocks.0`, `blocks.1`), and nothing tells them apart"
        ),
        "{}",
        e.message
    );
    let proposal = e.proposal.expect("a proposal");
    assert!(proposal.contains("stem -> stem   # the only module that fits"));
    assert!(proposal.contains("norm -> bn   # the only module that fits"));
    assert!(proposal.contains("? blocks.0 -> c1   # fits 2 module(s); the others: `blocks.1`"));
    // Passed back unchecked, it is refused; checked (the `?` deleted), it converts.
    let e = convert_state_dict(&c, &sd, Some(&proposal)).unwrap_err();
    assert!(e.message.contains("is marked `?`"), "{}", e.message);
    let checked = proposal.replace("? ", "");
    let w = convert_state_dict(&c, &sd, Some(&checked)).unwrap();
    assert_eq!(w.binding, Binding::Map);
    // blocks.1 (tensor 8 of the file: values 8.00, 8.01, ...) is c2's kernel, OIHW -> HWIO:
    // weight[o=1][i=0][0][0] is at 1 * 36 = 36, i.e. 8.36; Keras [0][0][0][1] is at index 1.
    let k = w.weights.get("c2/kernel").unwrap();
    assert_eq!(k.shape, vec![3, 3, 4, 4]);
    assert!((k.data[1] - 8.36).abs() < 1e-5, "{}", k.data[1]);
    // BatchNorm's four tensors by name; num_batches_tracked ignored.
    assert_eq!(w.weights.len(), 2 + 4 + 1 + 1 + 2);
    assert!((w.weights.get("bn/moving_variance").unwrap().data[0] - 5.0).abs() < 1e-6);
}

#[test]
fn a_shape_that_fits_no_layer_is_named() {
    let c = compiled();
    let mut t = good();
    t[9] = ("head.weight", Dtype::F32, &[2, 5, 1, 1]);
    let sd = state_dict(&t);
    let e = convert_state_dict(&c, &sd, None).unwrap_err();
    assert!(
        e.message.contains(
            "by shape, no module fits layer `head` (conv2d: kernel [1, 1, 4, 2], bias [2]) (it needs PyTorch weight [2, 4, 1, 1], bias [2])"
        ),
        "{}",
        e.message
    );
    let e = convert_state_dict(&c, &sd, Some(GOOD_MAP)).unwrap_err();
    assert_eq!(
        e.message,
        "map line 5: module `head` does not fit layer `head` (conv2d: kernel [1, 1, 4, 2], bias [2]): its `weight` is [2, 5, 1, 1], the layer needs [2, 4, 1, 1]"
    );
}

#[test]
fn a_missing_tensor_is_named() {
    let c = compiled();
    let t: Vec<_> = good()
        .into_iter()
        .filter(|(n, _, _)| *n != "norm.running_var")
        .collect();
    let e = convert_state_dict(&c, &state_dict(&t), Some(GOOD_MAP)).unwrap_err();
    assert!(
        e.message.starts_with(
            "map line 2: module `norm` does not fit layer `bn` (batch_normalization: gamma [4], beta [4], moving_mean [4], moving_variance [4]): it has no `running_var`"
        ),
        "{}",
        e.message
    );
}

#[test]
fn a_wrong_dtype_is_named() {
    let c = compiled();
    let mut t = good();
    t[0] = ("stem.weight", Dtype::F64, &[4, 3, 3, 3]);
    let e = convert_state_dict(&c, &state_dict(&t), Some(GOOD_MAP)).unwrap_err();
    assert!(
        e.message
            .starts_with("tensor `stem.weight` is F64; unetc reads float32 weights"),
        "{}",
        e.message
    );
}

#[test]
fn every_module_must_be_used_or_left_out_by_name() {
    let c = compiled();
    let mut t = good();
    t.push(("aux.weight", Dtype::F32, &[3, 4, 1, 1]));
    let sd = state_dict(&t);
    let e = convert_state_dict(&c, &sd, Some(GOOD_MAP)).unwrap_err();
    assert!(
        e.message.contains(
            "the map leaves 1 module(s) of the state_dict unmentioned: `aux` (map each to a layer, or to `-` to leave it unused)"
        ),
        "{}",
        e.message
    );
    assert!(e
        .proposal
        .unwrap()
        .contains("? aux -> -   # fits no free layer: weight [3, 4, 1, 1]"));
    let w = convert_state_dict(&c, &sd, Some(&format!("{GOOD_MAP}aux -> -\n"))).unwrap();
    assert_eq!(w.ignored, vec!["aux".to_string()]);
    // A layer mapped twice, a module that is not there, a layer that is not there.
    for (map, want) in [
        (
            format!("{GOOD_MAP}aux -> c1\n"),
            "map line 6: layer `c1` already takes a module on line 3",
        ),
        (
            format!("{GOOD_MAP}nope -> -\n"),
            "map line 6: the state_dict has no module `nope`",
        ),
        (
            GOOD_MAP.replace("head -> head", "head -> tail"),
            "map line 5: the spec has no layer `tail` with weights",
        ),
    ] {
        let e = convert_state_dict(&c, &sd, Some(&map)).unwrap_err();
        assert!(e.message.starts_with(want), "{}", e.message);
    }
}

/// Module order (blocks, head, norm, stem) is not spec order, but every layer's shapes fit one
/// module only: bound by shape, each tensor where it belongs.
#[test]
fn shapes_that_allow_one_pairing_bind_without_a_map() {
    let one_block = SPEC.replace(
        "  c1 -> conv2d(filters: 4, kernel_size: 3, padding: \"same\", use_bias: false, name: \"c2\")\n  c2 -> conv2d",
        "  c1 -> conv2d",
    );
    assert_ne!(one_block, SPEC);
    let c = compile(&one_block);
    let t: Vec<_> = good()
        .into_iter()
        .filter(|(n, _, _)| *n != "blocks.1.weight")
        .collect();
    let w = convert_state_dict(&c, &state_dict(&t), None).unwrap();
    assert_eq!(w.binding, Binding::Shapes);
    // head.bias is tensor 9 of this file (blocks.1 left out): 9.00, 9.01.
    assert_eq!(w.weights.get("head/bias").unwrap().data, vec![9.0, 9.01]);
    // stem.weight[o=0][i=1][0][0] (index 9: 0.09) is Keras stem/kernel[0][0][1][0], index 4.
    assert!((w.weights.get("stem/kernel").unwrap().data[4] - 0.09).abs() < 1e-6);
}

/// A layer whose weights the ONNX export folded (nn.PReLU's slopes, reshaped) gets a `?` line
/// in the imported map; with it filled in, the map binds the model.
#[test]
fn an_imported_map_names_the_layers_it_could_not_trace() {
    let dir = tempfile::tempdir().unwrap();
    let stem = "plain_sequential";
    let (spec, _, _, out) = import_and_convert(dir.path(), stem, true);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("map line 10 is marked `?`"),
        "{}",
        stderr(&out)
    );
    let map = dir.path().join(format!("{stem}.map"));
    let text = std::fs::read_to_string(&map).unwrap();
    let unknown = "? MODULE -> n_10_PRelu   # its weights were not named after a module in the ONNX file: name the PyTorch module";
    assert!(text.contains(unknown), "{text}");
    std::fs::write(&map, text.replace(unknown, "10 -> n_10_PRelu")).unwrap();
    let conv = dir.path().join("filled.safetensors");
    let sd = fixture(&format!("{stem}.state_dict.safetensors"));
    let out = unetc(&[
        "convert-weights".as_ref(),
        spec.as_os_str(),
        sd.as_os_str(),
        "--from".as_ref(),
        "pytorch".as_ref(),
        "--map".as_ref(),
        map.as_os_str(),
        "-o".as_ref(),
        conv.as_os_str(),
    ]);
    assert!(
        stderr(&out).contains("bound by the map"),
        "{}",
        stderr(&out)
    );
    let e = error_vs_pytorch(stem, &spec, &conv);
    assert!(e <= 1e-5, "{e:.3e}");
}
