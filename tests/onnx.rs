//! `unetc export --to onnx`: the bytes are a well-formed ONNX model (read back here with a
//! minimal protobuf reader: versions, names, op types, attributes, initializers, a valid
//! topological order), and the model computes what unetc's CPU executor computes, checked by
//! running it in onnxruntime (tools/onnx_check.py) on every golden fixture, which together cover
//! every layer kind. Without onnxruntime the numeric test prints SKIP, unless
//! UNETC_REQUIRE_ONNXRUNTIME=1.

mod common;

use common::*;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Command;
use unetc::exec::cpu::CpuModel;
use unetc::exec::Tensor;
use unetc::expand::Session;
use unetc::interop::onnx::{export_onnx, IR_VERSION, OPSET};
use unetc::io::weights::load_weights;
use unetc::runner::{expected_weights, init_weights};
use unetc::{compile_source, Compiled, Options};

/// Largest |onnxruntime - unetc| relative to the largest |unetc| value of the output.
const TOLERANCE: f32 = 1e-4;

// ---------------------------------------------------------------------------------------------
// A minimal protobuf reader, for the ONNX messages the exporter writes
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Field<'a> {
    Varint(u64),
    Fixed32(u32),
    Fixed64,
    Bytes(&'a [u8]),
}

fn varint(buf: &[u8], i: &mut usize) -> u64 {
    let mut v = 0u64;
    let mut shift = 0;
    loop {
        let b = buf[*i];
        *i += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return v;
        }
        shift += 7;
        assert!(shift < 70, "varint too long");
    }
}

/// Every field of one message, in order; panics on malformed input.
fn fields(buf: &[u8]) -> Vec<(u32, Field<'_>)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < buf.len() {
        let key = varint(buf, &mut i);
        let number = (key >> 3) as u32;
        assert!(number > 0, "field number 0");
        let f = match key & 7 {
            0 => Field::Varint(varint(buf, &mut i)),
            1 => {
                i += 8;
                Field::Fixed64
            }
            2 => {
                let len = varint(buf, &mut i) as usize;
                let v = &buf[i..i + len];
                i += len;
                Field::Bytes(v)
            }
            5 => {
                let v = u32::from_le_bytes(buf[i..i + 4].try_into().unwrap());
                i += 4;
                Field::Fixed32(v)
            }
            w => panic!("unexpected wire type {w}"),
        };
        out.push((number, f));
    }
    assert_eq!(i, buf.len(), "message overruns its buffer");
    out
}

fn bytes_of<'a>(fs: &[(u32, Field<'a>)], n: u32) -> Vec<&'a [u8]> {
    fs.iter()
        .filter(|(k, _)| *k == n)
        .map(|(_, f)| match f {
            Field::Bytes(b) => *b,
            other => panic!("field {n} is not length-delimited: {other:?}"),
        })
        .collect()
}

fn str_of(fs: &[(u32, Field<'_>)], n: u32) -> String {
    bytes_of(fs, n)
        .last()
        .map(|b| String::from_utf8(b.to_vec()).expect("UTF-8"))
        .unwrap_or_default()
}

fn strs_of(fs: &[(u32, Field<'_>)], n: u32) -> Vec<String> {
    bytes_of(fs, n)
        .into_iter()
        .map(|b| String::from_utf8(b.to_vec()).expect("UTF-8"))
        .collect()
}

fn ints_of(fs: &[(u32, Field<'_>)], n: u32) -> Vec<i64> {
    fs.iter()
        .filter(|(k, _)| *k == n)
        .map(|(_, f)| match f {
            Field::Varint(v) => *v as i64,
            other => panic!("field {n} is not a varint: {other:?}"),
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq)]
enum AttrValue {
    Int(i64),
    Float(f32),
    Ints(Vec<i64>),
    Str(String),
}

#[derive(Debug, Clone)]
struct Node {
    name: String,
    op_type: String,
    inputs: Vec<String>,
    outputs: Vec<String>,
    attrs: HashMap<String, AttrValue>,
}

#[derive(Debug, Clone)]
struct Init {
    dims: Vec<i64>,
    data_type: i64,
    raw_len: usize,
    floats: Vec<f32>,
}

/// A value's dimensions: `Ok(size)` or `Err(symbol)`.
type Dims = Vec<Result<i64, String>>;

#[derive(Debug)]
struct Model {
    ir_version: i64,
    opsets: Vec<(String, i64)>,
    producer: String,
    graph_name: String,
    nodes: Vec<Node>,
    inits: HashMap<String, Init>,
    init_order: Vec<String>,
    inputs: Vec<(String, Dims)>,
    outputs: Vec<(String, Dims)>,
    value_info: Vec<(String, Dims)>,
}

fn value_info(buf: &[u8]) -> (String, Dims) {
    let fs = fields(buf);
    let name = str_of(&fs, 1);
    let ty = fields(bytes_of(&fs, 2)[0]);
    let tensor = fields(bytes_of(&ty, 1)[0]);
    assert_eq!(ints_of(&tensor, 1), [1], "elem_type float");
    let shape = fields(bytes_of(&tensor, 2)[0]);
    let dims = bytes_of(&shape, 1)
        .into_iter()
        .map(|d| {
            let d = fields(d);
            match ints_of(&d, 1).first() {
                Some(&v) => Ok(v),
                None => Err(str_of(&d, 2)),
            }
        })
        .collect();
    (name, dims)
}

fn parse_model(bytes: &[u8]) -> Model {
    let m = fields(bytes);
    let graph = fields(bytes_of(&m, 7)[0]);
    let nodes = bytes_of(&graph, 1)
        .into_iter()
        .map(|b| {
            let fs = fields(b);
            let attrs = bytes_of(&fs, 5)
                .into_iter()
                .map(|a| {
                    let a = fields(a);
                    let name = str_of(&a, 1);
                    let value = match ints_of(&a, 20)[..] {
                        [1] => match a.iter().find(|(k, _)| *k == 2) {
                            Some((_, Field::Fixed32(v))) => AttrValue::Float(f32::from_bits(*v)),
                            other => panic!("float attribute {name}: {other:?}"),
                        },
                        [2] => AttrValue::Int(ints_of(&a, 3)[0]),
                        [3] => AttrValue::Str(str_of(&a, 4)),
                        [7] => AttrValue::Ints(ints_of(&a, 8)),
                        ref t => panic!("attribute {name} has type {t:?}"),
                    };
                    (name, value)
                })
                .collect();
            Node {
                name: str_of(&fs, 3),
                op_type: str_of(&fs, 4),
                inputs: strs_of(&fs, 1),
                outputs: strs_of(&fs, 2),
                attrs,
            }
        })
        .collect();
    let mut inits = HashMap::new();
    let mut init_order = Vec::new();
    for b in bytes_of(&graph, 5) {
        let fs = fields(b);
        let name = str_of(&fs, 8);
        let raw = bytes_of(&fs, 9).first().copied().unwrap_or(&[]);
        let data_type = ints_of(&fs, 2)[0];
        let floats = if data_type == 1 {
            raw.chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect()
        } else {
            Vec::new()
        };
        init_order.push(name.clone());
        let fresh = inits
            .insert(
                name.clone(),
                Init {
                    dims: ints_of(&fs, 1),
                    data_type,
                    raw_len: raw.len(),
                    floats,
                },
            )
            .is_none();
        assert!(fresh, "initializer `{name}` twice");
    }
    Model {
        ir_version: ints_of(&m, 1)[0],
        opsets: bytes_of(&m, 8)
            .into_iter()
            .map(|b| {
                let fs = fields(b);
                (str_of(&fs, 1), ints_of(&fs, 2)[0])
            })
            .collect(),
        producer: str_of(&m, 2),
        graph_name: str_of(&graph, 2),
        nodes,
        inits,
        init_order,
        inputs: bytes_of(&graph, 11).into_iter().map(value_info).collect(),
        outputs: bytes_of(&graph, 12).into_iter().map(value_info).collect(),
        value_info: bytes_of(&graph, 13).into_iter().map(value_info).collect(),
    }
}

/// The checks every exported model must pass: versions, a valid topological order in which each
/// value is defined once, every initializer used and consistent with its dims, a node named
/// after each Keras layer, inputs and outputs named after their layers with the batch as `N`.
fn check_structure(c: &Compiled, m: &Model) {
    assert_eq!(m.ir_version, IR_VERSION);
    assert_eq!(m.opsets, [(String::new(), OPSET)]);
    assert_eq!(m.producer, "unetc");
    assert!(!m.graph_name.is_empty());
    let mut defined: HashSet<String> = m.inits.keys().cloned().collect();
    for (name, dims) in &m.inputs {
        assert!(
            defined.insert(name.clone()),
            "input `{name}` also an initializer"
        );
        assert_eq!(dims[0], Err("N".to_string()), "dynamic batch of `{name}`");
    }
    let mut used = HashSet::new();
    let mut node_names = HashSet::new();
    for n in &m.nodes {
        assert!(
            node_names.insert(n.name.clone()),
            "node name `{}` twice",
            n.name
        );
        for i in &n.inputs {
            if i.is_empty() {
                continue;
            }
            assert!(
                defined.contains(i),
                "`{}` reads `{i}` before it is defined",
                n.name
            );
            used.insert(i.clone());
        }
        for o in &n.outputs {
            assert!(defined.insert(o.clone()), "`{o}` defined twice");
        }
    }
    for (name, init) in &m.inits {
        assert!(used.contains(name), "initializer `{name}` unused");
        let count: i64 = init.dims.iter().product();
        let width = if init.data_type == 1 { 4 } else { 8 };
        assert_eq!(init.raw_len as i64, count * width, "size of `{name}`");
    }
    for (name, dims) in m.outputs.iter().chain(&m.value_info) {
        assert!(
            defined.contains(name),
            "`{name}` declared but never computed"
        );
        assert_eq!(dims[0], Err("N".to_string()), "dynamic batch of `{name}`");
    }
    // Names: a node per Keras layer, inputs and outputs after their layers (NHWC shapes).
    for &id in &c.info.keras_order {
        let node = c.graph.node(id);
        if !matches!(node.op, unetc::ir::Op::Input(_)) {
            assert!(
                node_names.contains(&node.name),
                "no node named `{}`",
                node.name
            );
        }
    }
    let keras_dims = |id: unetc::ir::NodeId| -> Dims {
        let mut d = vec![Err("N".to_string())];
        d.extend(
            c.info.layers[id.index()]
                .shape
                .as_ref()
                .unwrap()
                .iter()
                .map(|&v| Ok(v)),
        );
        d
    };
    let inputs: Vec<_> = c
        .graph
        .inputs
        .iter()
        .map(|&id| (c.graph.node(id).name.clone(), keras_dims(id)))
        .collect();
    assert_eq!(m.inputs, inputs);
    let outputs: Vec<_> = c
        .graph
        .outputs
        .iter()
        .map(|&id| (c.graph.node(id).name.clone(), keras_dims(id)))
        .collect();
    assert_eq!(m.outputs, outputs);
    // Every Keras weight is an initializer of the same size (ONNX layouts may permute it).
    for &id in &c.info.keras_order {
        for w in &c.info.layers[id.index()].weights {
            // Integer counters (Normalization's `count`) are not needed to run.
            if c.graph.node(id).op.value_bytes(w.name) != 4 {
                continue;
            }
            let name = format!("{}/{}", c.graph.node(id).name, w.name);
            let init = m
                .inits
                .get(&name)
                .unwrap_or_else(|| panic!("no initializer `{name}`"));
            assert_eq!(init.floats.len() as u64, w.count(), "size of `{name}`");
        }
    }
}

fn compile_text(name: &str, text: &str) -> Compiled {
    let c = compile_source(
        Path::new(name),
        text.to_string(),
        &Options::default(),
        &mut Session::new(),
    );
    assert!(
        !c.has_errors(),
        "{}",
        unetc::diag::render_plain(&c.sources, &c.diags)
    );
    c
}

const TINY: &str = "model \"tiny\" {
  input 8x8x3
  x = conv2d(4, 3, padding: same, activation: relu)
  max_pooling2d(2)
  up = conv2d_transpose(4, 2, strides: 2)
  [x, up] -> concatenate()
  conv2d(2, 1, activation: softmax)
}
";

#[test]
fn a_small_unet_exports_to_the_expected_onnx_graph() {
    let c = compile_text("tiny.unet", TINY);
    let w = init_weights(&c, 3).unwrap();
    let bytes = export_onnx(&c.graph, &c.info, &w).expect("export");
    let m = parse_model(&bytes);
    check_structure(&c, &m);
    assert_eq!(m.graph_name, "tiny");
    let ops: Vec<(&str, &str)> = m
        .nodes
        .iter()
        .map(|n| (n.name.as_str(), n.op_type.as_str()))
        .collect();
    assert_eq!(
        ops,
        [
            ("input_1/to_nchw", "Transpose"),
            ("conv2d", "Conv"),
            ("conv2d/relu", "Relu"),
            ("max_pooling2d", "MaxPool"),
            ("conv2d_transpose", "ConvTranspose"),
            ("concatenate", "Concat"),
            ("conv2d_1", "Conv"),
            ("conv2d_1/softmax", "Softmax"),
            ("conv2d_1/to_nhwc", "Transpose"),
        ]
    );
    let node = |name: &str| m.nodes.iter().find(|n| n.name == name).unwrap();
    assert_eq!(
        node("input_1/to_nchw").attrs["perm"],
        AttrValue::Ints(vec![0, 3, 1, 2])
    );
    assert_eq!(
        node("conv2d").attrs["pads"],
        AttrValue::Ints(vec![1, 1, 1, 1])
    );
    assert_eq!(
        node("conv2d").inputs,
        ["input_1/nchw", "conv2d/kernel", "conv2d/bias"]
    );
    assert_eq!(
        node("conv2d_transpose").attrs["pads"],
        AttrValue::Ints(vec![0; 4])
    );
    assert_eq!(node("concatenate").attrs["axis"], AttrValue::Int(1));
    assert_eq!(node("conv2d_1/softmax").attrs["axis"], AttrValue::Int(1));
    assert_eq!(node("conv2d_1/to_nhwc").outputs, ["conv2d_1"]);
    // Kernels in ONNX layouts: Conv OIHW, ConvTranspose IOHW (in = 4, out = 4).
    assert_eq!(m.inits["conv2d/kernel"].dims, [4, 3, 3, 3]);
    assert_eq!(m.inits["conv2d_transpose/kernel"].dims, [4, 4, 2, 2]);
    assert_eq!(m.inits["conv2d_1/kernel"].dims, [2, 8, 1, 1]);
    // conv2d/kernel[o, i, y, x] is Keras's kernel[y, x, i, o].
    let keras = &w.get("conv2d/kernel").unwrap().data;
    let onnx = &m.inits["conv2d/kernel"].floats;
    for (o, i, y, x) in [(0, 0, 0, 0), (3, 2, 1, 0), (1, 2, 2, 1)] {
        assert_eq!(
            onnx[((o * 3 + i) * 3 + y) * 3 + x],
            keras[((y * 3 + x) * 3 + i) * 4 + o]
        );
    }
    // conv2d_transpose/kernel[i, o, y, x] is Keras's kernel[y, x, o, i].
    let keras = &w.get("conv2d_transpose/kernel").unwrap().data;
    let onnx = &m.inits["conv2d_transpose/kernel"].floats;
    for (i, o, y, x) in [(0, 1, 0, 1), (3, 2, 1, 0), (2, 3, 1, 1)] {
        assert_eq!(
            onnx[((i * 4 + o) * 2 + y) * 2 + x],
            keras[((y * 2 + x) * 4 + o) * 4 + i]
        );
    }
    // Biases unchanged, in the order the layers come.
    assert_eq!(
        m.inits["conv2d/bias"].floats,
        w.get("conv2d/bias").unwrap().data
    );
    assert_eq!(m.init_order[0], "conv2d/kernel");
    // Intermediate layer outputs carry NCHW shapes for Netron.
    let vi: HashMap<_, _> = m.value_info.iter().cloned().collect();
    assert_eq!(
        vi["max_pooling2d"],
        vec![Err("N".into()), Ok(4), Ok(4), Ok(4)]
    );
    assert_eq!(
        vi["conv2d_1/nchw"],
        vec![Err("N".into()), Ok(2), Ok(8), Ok(8)]
    );
}

#[test]
fn keras_padding_rules_become_explicit_pads() {
    let c = compile_text(
        "pads.unet",
        "model {
  input 6x7x2
  x = conv2d(2, 2, padding: same, name: even)
  [
    x -> conv2d(2, 3, strides: 2, padding: same, name: strided) -> flatten(),
    x -> max_pooling2d(3, strides: 2, padding: same, name: pool) -> flatten(),
    x -> conv2d_transpose(2, 3, strides: 2, padding: same, name: t_same) -> flatten(),
    x -> conv2d_transpose(2, 1, strides: 2, name: t_short) -> flatten(),
    x -> conv2d_transpose(2, 3, strides: 2, padding: same, output_padding: 1, name: t_op) -> flatten(),
  ] -> concatenate()
}
",
    );
    let w = init_weights(&c, 1).unwrap();
    let m = parse_model(&export_onnx(&c.graph, &c.info, &w).unwrap());
    check_structure(&c, &m);
    let attr = |node: &str, a: &str| {
        m.nodes
            .iter()
            .find(|n| n.name == node)
            .unwrap_or_else(|| panic!("node {node}"))
            .attrs
            .get(a)
            .cloned()
    };
    let ints = |v: &[i64]| Some(AttrValue::Ints(v.to_vec()));
    // [top, left, bottom, right]; the odd pixel bottom/right.
    assert_eq!(attr("even", "pads"), ints(&[0, 0, 1, 1]));
    assert_eq!(attr("strided", "pads"), ints(&[0, 1, 1, 1]));
    assert_eq!(attr("pool", "pads"), ints(&[0, 1, 1, 1]));
    // full 13x15, same keeps 12x14 from row/column 0.
    assert_eq!(attr("t_same", "pads"), ints(&[0, 0, 1, 1]));
    assert_eq!(attr("t_same", "output_padding"), None);
    // k < s, valid: full 11x13, Keras 12x14 (a zero row and column appended).
    assert_eq!(attr("t_short", "output_padding"), ints(&[1, 1]));
    // output_padding 1 under same: Keras's size is 2 * n, the full result's rows from 0.
    assert_eq!(attr("t_op", "pads"), ints(&[0, 0, 1, 1]));
    // A Flatten of an image transposes back to NHWC first.
    let flat = m.nodes.iter().position(|n| n.op_type == "Flatten").unwrap();
    assert_eq!(m.nodes[flat - 1].op_type, "Transpose");
    assert_eq!(
        m.nodes[flat - 1].attrs["perm"],
        AttrValue::Ints(vec![0, 2, 3, 1])
    );
}

#[test]
fn missing_and_misshaped_weights_are_reported_by_name() {
    let c = compile_text("tiny.unet", TINY);
    let mut w: HashMap<String, Tensor> = init_weights(&c, 0)
        .unwrap()
        .iter()
        .map(|(n, t)| (n.to_string(), t.clone()))
        .collect();
    w.remove("conv2d/bias");
    w.insert("conv2d_1/kernel".into(), Tensor::zeros(&[1, 1, 8, 3]));
    let err = export_onnx(&c.graph, &c.info, &w).unwrap_err();
    assert!(err.contains("missing `conv2d/bias`"), "{err}");
    assert!(
        err.contains("`conv2d_1/kernel` has shape [1, 1, 8, 3]"),
        "{err}"
    );
}

#[test]
fn every_golden_model_exports_to_a_well_formed_graph() {
    for stem in golden_stems() {
        let (c, w) = golden(&stem);
        let bytes = export_onnx(&c.graph, &c.info, &w).expect("export");
        let m = parse_model(&bytes);
        check_structure(&c, &m);
    }
}

// ---------------------------------------------------------------------------------------------
// Numbers: onnxruntime against the CPU executor
// ---------------------------------------------------------------------------------------------

/// Golden fixtures with stored weights (original_full has none: 124 MB; its layers are all in
/// original_small).
fn golden_stems() -> Vec<String> {
    let mut stems: Vec<String> = std::fs::read_dir(root().join("tests/golden"))
        .unwrap()
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .to_str()?
                .strip_suffix(".weights.safetensors")
                .map(String::from)
        })
        .collect();
    stems.sort();
    assert!(stems.len() >= 10, "fixtures missing: {stems:?}");
    stems
}

fn golden(stem: &str) -> (Compiled, unetc::io::Weights) {
    let c = compile(&Path::new("tests/golden").join(format!("{stem}.unet")));
    assert!(
        !c.has_errors(),
        "{}",
        unetc::diag::render_plain(&c.sources, &c.diags)
    );
    let weights = load_weights(
        &root().join(format!("tests/golden/{stem}.weights.safetensors")),
        &expected_weights(&c),
    )
    .expect("fixture weights fit the spec");
    (c, weights)
}

fn max_relative_error(got: &Tensor, want: &Tensor) -> f32 {
    assert_eq!(got.shape, want.shape);
    let scale = want
        .data
        .iter()
        .fold(0.0f32, |m, v| m.max(v.abs()))
        .max(f32::MIN_POSITIVE);
    got.data
        .iter()
        .zip(&want.data)
        .fold(0.0f32, |m, (g, w)| m.max((g - w).abs()))
        / scale
}

fn onnxruntime_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import onnxruntime, numpy"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        if std::env::var("UNETC_REQUIRE_ONNXRUNTIME").as_deref() == Ok("1") {
            panic!("UNETC_REQUIRE_ONNXRUNTIME=1 but `python3 -c 'import onnxruntime'` fails");
        }
        println!("SKIP: onnxruntime not installed (pip install onnxruntime)");
    }
    ok
}

/// Runs `bytes` on `input` in onnxruntime through tools/onnx_check.py; returns the outputs and
/// the checker's line. `want` gives the expected output shapes (read_npy reads a rank-3 array as
/// one HWC image and puts a batch of 1 in front; that is undone here).
fn run_onnxruntime(
    dir: &Path,
    stem: &str,
    bytes: &[u8],
    input: &Tensor,
    want: &[Tensor],
) -> Result<(Vec<Tensor>, String), String> {
    run_onnxruntime_inputs(dir, stem, bytes, std::slice::from_ref(input), want)
}

/// [`run_onnxruntime`] for a model of one or more inputs (in the model's input order).
fn run_onnxruntime_inputs(
    dir: &Path,
    stem: &str,
    bytes: &[u8],
    inputs: &[Tensor],
    want: &[Tensor],
) -> Result<(Vec<Tensor>, String), String> {
    let model = dir.join(format!("{stem}.onnx"));
    let y = dir.join(format!("{stem}.out.npy"));
    std::fs::write(&model, bytes).unwrap();
    let mut files = Vec::new();
    for (k, input) in inputs.iter().enumerate() {
        let x = dir.join(format!("{stem}.in{k}.npy"));
        unetc::io::npy::write_npy(&x, input, true).unwrap();
        files.push(x.to_string_lossy().into_owned());
    }
    let run = Command::new("python3")
        .arg(root().join("tools/onnx_check.py"))
        .arg(&model)
        .arg(files.join(","))
        .arg(&y)
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&run.stdout).to_string();
    if !run.status.success() {
        return Err(format!(
            "onnx_check.py failed:\n{stdout}{}",
            String::from_utf8_lossy(&run.stderr)
        ));
    }
    let mut outputs = Vec::new();
    for (i, w) in want.iter().enumerate() {
        let path = if i == 0 {
            y.clone()
        } else {
            dir.join(format!("{stem}.out.{i}.npy"))
        };
        let mut got = unetc::io::npy::read_npy(&path).map_err(|e| e.to_string())?;
        if got.shape.len() == 4 && w.shape.len() == 3 && got.shape[0] == 1 {
            got.shape.remove(0);
        }
        if got.shape != w.shape {
            return Err(format!(
                "output {i}: onnxruntime gives shape {:?}, unetc {:?}",
                got.shape, w.shape
            ));
        }
        outputs.push(got);
    }
    let checker = stdout
        .lines()
        .find(|l| l.starts_with("onnx.checker"))
        .unwrap_or("onnx.checker: not reported")
        .to_string();
    Ok((outputs, checker))
}

#[test]
fn onnxruntime_matches_the_cpu_executor_on_every_golden_model() {
    if !onnxruntime_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for stem in golden_stems() {
        let (c, w) = golden(&stem);
        let (input, keras) = golden_io(&stem);
        let want = CpuModel::new(&c.graph, &c.info, &w)
            .expect("bind")
            .run(&input)
            .expect("run");
        let bytes = export_onnx(&c.graph, &c.info, &w).expect("export");
        let (got, checker) = match run_onnxruntime(dir.path(), &stem, &bytes, &input, &want) {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("{stem}: {e}"));
                continue;
            }
        };
        let err = max_relative_error(&got[0], &want[0]);
        let vs_keras = max_relative_error(&got[0], &keras);
        println!(
            "{stem}: {} nodes, max relative error {err:.2e} against unetc, {vs_keras:.2e} against tf.keras; {checker}",
            parse_model(&bytes).nodes.len()
        );
        if err.is_nan() || err > TOLERANCE {
            failures.push(format!(
                "{stem}: max relative error {err:.2e} > {TOLERANCE:.0e}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Paths the golden models do not take: a rank-2 input (no transposes), Dense as MatMul on a
/// rank-3 tensor, BatchNormalization and Softmax off the image layout (channels last), the ReLU
/// layer with a threshold and no maximum, an activation after Dense, and two outputs (one an
/// image, one a vector), and resizes by ratios where ONNX's half-pixel nearest would pick
/// other rows than TensorFlow's (2 rows to 41: one of them; exported as Gathers instead).
#[test]
fn onnxruntime_matches_the_cpu_executor_off_the_image_layout() {
    if !onnxruntime_available() {
        return;
    }
    let specs = [
        (
            "vectors",
            "model {
  input(shape: [4, 6])
  dense(5, activation: gelu)
  batch_normalization(epsilon: 0.01)
  re_lu(negative_slope: 0.3, threshold: -0.2)
  x = softmax(axis: 1)
  a = x -> dense(3, use_bias: false) -> batch_normalization(center: false) -> flatten()
  [a, x -> flatten()] -> concatenate() -> dense(7, activation: swish) -> softmax()
}
",
        ),
        (
            "two_outputs",
            "model {
  input 7x6x3
  x = conv2d(5, 3, strides: 2, padding: same, activation: mish)
  img = x -> conv2d_transpose(4, 3, strides: 2, padding: same, activation: selu)
  vec = x -> global_average_pooling2d() -> batch_normalization(scale: false) -> dense(3, activation: softmax)
  output img, vec
}
",
        ),
        (
            "resize_ratios",
            "model {
  input 2x3x2
  a = resizing(41, 47, interpolation: nearest) -> flatten()
  b = input_1 -> resizing(9, 5) -> resizing(4, 11, interpolation: nearest) -> flatten()
  [a, b] -> concatenate()
}
",
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for (stem, text) in specs {
        let c = compile_text(&format!("{stem}.unet"), text);
        let w = init_weights(&c, 7).unwrap();
        let mut shape = vec![2usize];
        shape.extend(
            c.info.layers[c.graph.inputs[0].index()]
                .shape
                .as_ref()
                .unwrap()
                .iter()
                .map(|&d| d as usize),
        );
        let n: usize = shape.iter().product();
        let data = (0..n)
            .map(|i| ((i * 7919 % 1000) as f32 / 250.0 - 2.0) * 1.5)
            .collect();
        let input = Tensor::from_vec(&shape, data).unwrap();
        let want = CpuModel::new(&c.graph, &c.info, &w)
            .expect("bind")
            .run(&input)
            .expect("run");
        let bytes = export_onnx(&c.graph, &c.info, &w).expect("export");
        check_structure(&c, &parse_model(&bytes));
        match run_onnxruntime(dir.path(), stem, &bytes, &input, &want) {
            Ok((got, checker)) => {
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    let err = max_relative_error(g, w);
                    println!("{stem} output {i}: max relative error {err:.2e}; {checker}");
                    if err.is_nan() || err > TOLERANCE {
                        failures.push(format!(
                            "{stem} output {i}: max relative error {err:.2e} > {TOLERANCE:.0e}"
                        ));
                    }
                }
            }
            Err(e) => failures.push(format!("{stem}: {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn write_onnx_writes_the_file_the_cli_asks_for() {
    use unetc::interop::onnx::{write_onnx, OnnxWeights};
    std::env::set_current_dir(root()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("model.onnx");
    let spec = Path::new("tests/golden/resnet_small.unet");
    let weights = Path::new("tests/golden/resnet_small.weights.safetensors");
    let s = write_onnx(spec, OnnxWeights::File(weights), &out, false).expect("export");
    assert_eq!(s.random_seed, None);
    let bytes = std::fs::read(&out).unwrap();
    assert_eq!(s.bytes, bytes.len());
    let m = parse_model(&bytes);
    assert_eq!((s.nodes, s.initializers), (m.nodes.len(), m.inits.len()));
    assert_eq!(m.graph_name, "resnet_small");
    // Exactly the file's weights, Conv kernels permuted to OIHW.
    let (c, w) = golden("resnet_small");
    let keras = &w.get("predictions/kernel").unwrap().data;
    assert_eq!(&m.inits["predictions/kernel"].floats, keras);
    check_structure(&c, &m);
    // An existing file is kept without --force; random weights only when asked for.
    let random = OnnxWeights::Random { seed: 7 };
    let err = write_onnx(spec, random, &out, false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("exists"), "{err}");
    let s = write_onnx(spec, random, &out, true).expect("export with seeded weights");
    assert_eq!(s.random_seed, Some(7));
    // Weights that do not fit are reported by name before anything is written.
    let other = dir.path().join("other.onnx");
    let wrong = Path::new("tests/golden/vgg_small.weights.safetensors");
    assert!(write_onnx(spec, OnnxWeights::File(wrong), &other, false).is_err());
    assert!(!other.exists());
}

/// Nested models and shared layers (tests/real_models, imported from tf.keras's JSON): the
/// graph runs flat in onnxruntime, a shared layer's weights are one initializer used by each
/// call, and the outputs are tf.keras's `model.predict` within 1e-5.
#[test]
fn nested_models_and_shared_layers_export_as_keras_computes_them() {
    let dir = root().join("tests/real_models");
    let tmp = tempfile::tempdir().unwrap();
    // Weights read by several nodes: shared_layers_unet's two shared convolutions' kernels
    // and biases (its shared pooling has none); the siamese encoder's 3 convolutions (kernel, bias)
    // and 3 batch normalizations (4 each); the siamese stem's convolution and normalization.
    for (stem, shared_weights) in [
        ("tf_tutorial_unet", 0),
        ("shared_layers_unet", 2 * 2),
        ("siamese_unet", 3 * 2 + 3 * 4),
        ("siamese_sequential", 2 + 4),
    ] {
        let json = std::fs::read_to_string(dir.join(format!("{stem}.json"))).unwrap();
        let spec = unetc::interop::keras::import_json(&json).expect("imports");
        let c = compile_text(&format!("{stem}.unet"), &spec);
        let w = load_weights(
            &dir.join(format!("{stem}.weights.safetensors")),
            &expected_weights(&c),
        )
        .expect("tf.keras's weights fit");
        let bytes = export_onnx(&c.graph, &c.info, &w).expect("export");
        let m = parse_model(&bytes);
        let names: HashSet<&String> = m.init_order.iter().collect();
        assert_eq!(
            names.len(),
            m.init_order.len(),
            "{stem}: duplicate initializers"
        );
        // Each weight of a shared layer is one initializer that several nodes read.
        let readers = |name: &str| {
            m.nodes
                .iter()
                .filter(|n| n.inputs.iter().any(|i| i == name))
                .count()
        };
        let shared = names.iter().filter(|n| readers(n) > 1).count();
        assert_eq!(
            shared, shared_weights,
            "{stem}: initializers read by several nodes"
        );
        if !onnxruntime_available() {
            continue;
        }
        let (inputs, keras) = io_inputs(&dir.join(format!("{stem}.io.safetensors")));
        let (got, checker) = run_onnxruntime_inputs(
            tmp.path(),
            stem,
            &bytes,
            &inputs,
            std::slice::from_ref(&keras),
        )
        .unwrap_or_else(|e| panic!("{stem}: {e}"));
        let err = max_relative_error(&got[0], &keras);
        println!("{stem}: onnxruntime against tf.keras: max relative error {err:.2e}; {checker}");
        assert!(err <= 1e-5, "{stem}: {err:.2e}");
    }
}
