//! `unetc import model.onnx`: a U-Net exported from PyTorch (torch.onnx.export) becomes a DSL
//! spec with an NHWC input and a safetensors file of weights in unetc's naming (`<layer>/kernel`
//! in HWIO, ...). The protobuf is decoded by prost from the subset of onnx.proto declared here.
//! Constant shape arithmetic (Shape/Gather/Concat/Cast/Slice/... feeding Resize or Pad) is
//! evaluated at import time. A node that cannot be mapped is named, with the reason, in one error,
//! and nothing is returned.

use crate::exec::Tensor;
use crate::io::Weights;
use prost::Message;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt::Write;

// --- The subset of onnx.proto (field numbers as in onnx/onnx.proto) ---

#[derive(Clone, PartialEq, Message)]
pub struct ModelProto {
    #[prost(int64, tag = "1")]
    pub ir_version: i64,
    #[prost(message, optional, tag = "7")]
    pub graph: Option<GraphProto>,
    #[prost(message, repeated, tag = "8")]
    pub opset_import: Vec<OperatorSetIdProto>,
}

#[derive(Clone, PartialEq, Message)]
pub struct OperatorSetIdProto {
    #[prost(string, tag = "1")]
    pub domain: String,
    #[prost(int64, tag = "2")]
    pub version: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct GraphProto {
    #[prost(message, repeated, tag = "1")]
    pub node: Vec<NodeProto>,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(message, repeated, tag = "5")]
    pub initializer: Vec<TensorProto>,
    #[prost(message, repeated, tag = "11")]
    pub input: Vec<ValueInfoProto>,
    #[prost(message, repeated, tag = "12")]
    pub output: Vec<ValueInfoProto>,
}

#[derive(Clone, PartialEq, Message)]
pub struct NodeProto {
    #[prost(string, repeated, tag = "1")]
    pub input: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    pub output: Vec<String>,
    #[prost(string, tag = "3")]
    pub name: String,
    #[prost(string, tag = "4")]
    pub op_type: String,
    #[prost(message, repeated, tag = "5")]
    pub attribute: Vec<AttributeProto>,
    #[prost(string, tag = "7")]
    pub domain: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct AttributeProto {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(float, tag = "2")]
    pub f: f32,
    #[prost(int64, tag = "3")]
    pub i: i64,
    #[prost(bytes = "vec", tag = "4")]
    pub s: Vec<u8>,
    #[prost(message, optional, tag = "5")]
    pub t: Option<TensorProto>,
    #[prost(float, repeated, tag = "7")]
    pub floats: Vec<f32>,
    #[prost(int64, repeated, tag = "8")]
    pub ints: Vec<i64>,
}

#[derive(Clone, PartialEq, Message)]
pub struct StringStringEntryProto {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct TensorProto {
    #[prost(int64, repeated, tag = "1")]
    pub dims: Vec<i64>,
    #[prost(int32, tag = "2")]
    pub data_type: i32,
    #[prost(float, repeated, tag = "4")]
    pub float_data: Vec<f32>,
    #[prost(int32, repeated, tag = "5")]
    pub int32_data: Vec<i32>,
    #[prost(int64, repeated, tag = "7")]
    pub int64_data: Vec<i64>,
    #[prost(string, tag = "8")]
    pub name: String,
    #[prost(bytes = "vec", tag = "9")]
    pub raw_data: Vec<u8>,
    #[prost(double, repeated, tag = "10")]
    pub double_data: Vec<f64>,
    #[prost(message, repeated, tag = "13")]
    pub external_data: Vec<StringStringEntryProto>,
    #[prost(int32, tag = "14")]
    pub data_location: i32,
}

#[derive(Clone, PartialEq, Message)]
pub struct ValueInfoProto {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub r#type: Option<TypeProto>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TypeProto {
    #[prost(message, optional, tag = "1")]
    pub tensor_type: Option<TypeTensor>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TypeTensor {
    #[prost(int32, tag = "1")]
    pub elem_type: i32,
    #[prost(message, optional, tag = "2")]
    pub shape: Option<TensorShapeProto>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TensorShapeProto {
    #[prost(message, repeated, tag = "1")]
    pub dim: Vec<Dimension>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Dimension {
    #[prost(int64, optional, tag = "1")]
    pub dim_value: Option<i64>,
    #[prost(string, optional, tag = "2")]
    pub dim_param: Option<String>,
}

// --- Values during import ---

/// The largest dimension of a tensor the spec computes, and the largest pad.
const MAX_DIM: usize = 1 << 24;

/// Constants (weights, shape arithmetic) are kept to this many elements.
const MAX_CONST_ELEMENTS: usize = 1 << 28;

#[derive(Debug, Clone)]
enum Data {
    F(Vec<f32>),
    I(Vec<i64>),
}

#[derive(Debug, Clone)]
struct Const {
    dims: Vec<usize>,
    data: Data,
}

impl Const {
    fn ints(&self) -> Vec<i64> {
        match &self.data {
            Data::I(v) => v.clone(),
            Data::F(v) => v.iter().map(|&x| x as i64).collect(),
        }
    }
    fn floats(&self) -> Vec<f32> {
        match &self.data {
            Data::F(v) => v.clone(),
            Data::I(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }
    fn len(&self) -> usize {
        match &self.data {
            Data::F(v) => v.len(),
            Data::I(v) => v.len(),
        }
    }
}

/// A tensor the spec computes: its layer (variable) and NCHW / NCDHW shape, batch first.
#[derive(Debug, Clone)]
struct Act {
    var: String,
    shape: Vec<usize>,
    /// Every value is >= 0 (a ReLU's or sigmoid's output): zero padding equals -inf padding
    /// for a max-pool.
    nonneg: bool,
}

#[derive(Debug, Clone)]
enum Val {
    Act(Act),
    Const(Const),
}

#[derive(Debug, Clone, PartialEq)]
pub struct OnnxImportError(pub String);

impl std::fmt::Display for OnnxImportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for OnnxImportError {}

fn err<T>(m: impl Into<String>) -> Result<T, OnnxImportError> {
    Err(OnnxImportError(m.into()))
}

/// The imported model: the DSL spec and its weights.
pub struct Imported {
    pub spec: String,
    pub weights: Weights,
    /// `(PyTorch module, layer)` for each layer with weights, in order: the module when all its
    /// weights come from initializers of one module (`enc.0.weight`, `enc.0.bias` -> `enc.0`), as
    /// torch.onnx.export names them when it does not fold them; `None` otherwise. The map
    /// `unetc convert-weights --from pytorch --map` reads.
    pub torch_map: Vec<(Option<String>, String)>,
}

impl Imported {
    /// The text of the map file (`unetc import --map-out`).
    pub fn torch_map_text(&self) -> String {
        let mut s = String::from(
            "# PyTorch module -> unetc layer, from the ONNX initializer names (unetc import).
# For `unetc convert-weights SPEC STATE_DICT --from pytorch --map THIS_FILE`.
",
        );
        for (m, l) in &self.torch_map {
            match m {
                Some(m) => {
                    let _ = writeln!(s, "{m} -> {l}");
                }
                None => {
                    let _ = writeln!(
                        s,
                        "? MODULE -> {l}   # its weights were not named after a module in the ONNX file: name the PyTorch module"
                    );
                }
            }
        }
        s
    }
}

fn tensor_const(t: &TensorProto) -> Result<Const, OnnxImportError> {
    if t.data_location == 1 || !t.external_data.is_empty() {
        return err(format!(
            "tensor `{}` keeps its data in an external file; unetc reads self-contained models only (export with torch.onnx.export(..., external_data=False), or re-save with onnx.save(onnx.load(path), path2, save_as_external_data=False))",
            t.name
        ));
    }
    let mut dims = Vec::with_capacity(t.dims.len().min(8));
    let mut n: usize = 1;
    for &d in &t.dims {
        let d = usize::try_from(d).map_err(|_| {
            OnnxImportError(format!("tensor `{}` has a negative dimension", t.name))
        })?;
        n = n
            .checked_mul(d)
            .filter(|&n| n <= MAX_CONST_ELEMENTS)
            .ok_or_else(|| {
                OnnxImportError(format!("tensor `{}` is too large ({:?})", t.name, t.dims))
            })?;
        dims.push(d);
    }
    let raw = &t.raw_data;
    let data = match t.data_type {
        // FLOAT
        1 => Data::F(if !raw.is_empty() {
            if raw.len() != n * 4 {
                return err(format!(
                    "tensor `{}`: {} bytes of data for {n} floats",
                    t.name,
                    raw.len()
                ));
            }
            raw.chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        } else {
            t.float_data.clone()
        }),
        // DOUBLE
        11 => Data::F(if !raw.is_empty() {
            if raw.len() != n * 8 {
                return err(format!(
                    "tensor `{}`: {} bytes of data for {n} doubles",
                    t.name,
                    raw.len()
                ));
            }
            raw.chunks_exact(8)
                .map(|b| {
                    f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32
                })
                .collect()
        } else {
            t.double_data.iter().map(|&x| x as f32).collect()
        }),
        // INT64
        7 => Data::I(if !raw.is_empty() {
            if raw.len() != n * 8 {
                return err(format!(
                    "tensor `{}`: {} bytes of data for {n} int64s",
                    t.name,
                    raw.len()
                ));
            }
            raw.chunks_exact(8)
                .map(|b| i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
                .collect()
        } else {
            t.int64_data.clone()
        }),
        // INT32, INT8, UINT8, BOOL (int32_data holds them all)
        6 | 2 | 3 | 9 => Data::I(if !raw.is_empty() {
            let w = if t.data_type == 6 { 4 } else { 1 };
            if raw.len() != n * w {
                return err(format!(
                    "tensor `{}`: {} bytes of data for {n} values",
                    t.name,
                    raw.len()
                ));
            }
            match t.data_type {
                6 => raw
                    .chunks_exact(4)
                    .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64)
                    .collect(),
                3 => raw.iter().map(|&b| b as i8 as i64).collect(),
                _ => raw.iter().map(|&b| b as i64).collect(),
            }
        } else {
            t.int32_data.iter().map(|&x| x as i64).collect()
        }),
        other => {
            return err(format!(
                "tensor `{}` has ONNX data type {other}; unetc imports float32/float64/int tensors",
                t.name
            ))
        }
    };
    let c = Const { dims, data };
    if c.len() != n {
        return err(format!(
            "tensor `{}`: {} values for shape {:?}",
            t.name,
            c.len(),
            t.dims
        ));
    }
    Ok(c)
}

/// A DSL identifier from an ONNX node name (`/encoder/conv1/Conv` -> `encoder_conv1_Conv`).
fn ident(raw: &str) -> String {
    let mut s: String = raw
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    while s.contains("__") {
        s = s.replace("__", "_");
    }
    let s = s.trim_matches('_').to_string();
    if s.is_empty() || s.starts_with(|c: char| c.is_ascii_digit()) {
        format!("n_{s}")
    } else {
        s
    }
}

fn tuple(v: &[i64]) -> String {
    let parts: Vec<String> = v.iter().map(|x| x.to_string()).collect();
    format!("({})", parts.join(", "))
}

fn float(x: f32) -> String {
    // Shortest text that reads back to the same f32, written with a decimal point.
    let s = format!("{x:?}");
    if s.contains('.') || s.contains('e') {
        s
    } else {
        format!("{s}.0")
    }
}

struct Importer<'a> {
    vals: HashMap<String, Val>,
    names: HashSet<String>,
    body: String,
    weights: Weights,
    node: &'a NodeProto,
    /// The ai.onnx opset the model is written in.
    opset: i64,
    /// The graph's initializer names.
    inits: HashSet<String>,
    /// Per layer with weights, in order: the module prefixes of its initializers.
    origins: Vec<(String, BTreeSet<String>)>,
}

/// Reads an ONNX model (the serialized ModelProto) into a spec and weights.
pub fn import_onnx(bytes: &[u8]) -> Result<Imported, OnnxImportError> {
    let model = ModelProto::decode(bytes).map_err(|e| {
        OnnxImportError(format!("not an ONNX model (protobuf decoding failed: {e})"))
    })?;
    let Some(graph) = model.graph.as_ref() else {
        return err("not an ONNX model: no graph");
    };
    if let Some(o) = model
        .opset_import
        .iter()
        .find(|o| (o.domain.is_empty() || o.domain == "ai.onnx") && !(11..=22).contains(&o.version))
    {
        return err(format!(
            "ONNX opset {} is outside the opsets unetc imports (11 to 22); export with opset_version=17",
            o.version
        ));
    }
    let mut vals: HashMap<String, Val> = HashMap::new();
    for t in &graph.initializer {
        vals.insert(t.name.clone(), Val::Const(tensor_const(t)?));
    }
    let inputs: Vec<&ValueInfoProto> = graph
        .input
        .iter()
        .filter(|i| !vals.contains_key(&i.name))
        .collect();
    if inputs.len() != 1 {
        return err(format!(
            "the graph has {} inputs; unetc imports models with one image input",
            inputs.len()
        ));
    }
    let input = inputs[0];
    let dims: Vec<Option<i64>> = input
        .r#type
        .as_ref()
        .and_then(|t| t.tensor_type.as_ref())
        .and_then(|t| t.shape.as_ref())
        .map(|s| {
            s.dim
                .iter()
                .map(|d| d.dim_value.filter(|&v| v > 0))
                .collect()
        })
        .unwrap_or_default();
    if !(dims.len() == 4 || dims.len() == 5) || dims[1..].iter().any(Option::is_none) {
        return err(format!(
            "input `{}` needs a fixed NCHW or NCDHW shape (got {:?}); export without dynamic_axes on the spatial and channel dimensions",
            input.name, dims
        ));
    }
    let mut shape: Vec<usize> = vec![1];
    for d in &dims[1..] {
        let d = d.unwrap_or(1);
        if d > 1 << 20 {
            return err(format!(
                "input `{}`: dimension {d} is too large",
                input.name
            ));
        }
        shape.push(d as usize);
    }
    // NCHW -> the spec's NHWC: H x W x C.
    let mut nhwc: Vec<String> = shape[2..].iter().map(|d| d.to_string()).collect();
    nhwc.push(shape[1].to_string());
    let in_name = ident(&input.name);
    let body = format!(
        "  input(shape: {}, name: {})\n",
        nhwc.join("x"),
        crate::emit::dsl::string_literal(&in_name)
    );
    vals.insert(
        input.name.clone(),
        Val::Act(Act {
            var: in_name.clone(),
            shape,
            nonneg: false,
        }),
    );
    let opset = model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map_or(0, |o| o.version);
    let empty = NodeProto::default();
    let mut im = Importer {
        vals,
        names: HashSet::from([in_name]),
        body,
        weights: Weights::new(),
        node: &empty,
        opset,
        inits: graph.initializer.iter().map(|t| t.name.clone()).collect(),
        origins: Vec::new(),
    };
    for node in &graph.node {
        im.node = node;
        im.step().map_err(|e| {
            let name = if node.name.is_empty() {
                node.output.first().cloned().unwrap_or_default()
            } else {
                node.name.clone()
            };
            OnnxImportError(format!("node `{name}` ({}): {}", node.op_type, e.0))
        })?;
    }
    if graph.output.is_empty() {
        return err("the graph has no outputs");
    }
    let mut outs = Vec::new();
    for o in &graph.output {
        match im.vals.get(&o.name) {
            Some(Val::Act(a)) => outs.push(a.var.clone()),
            Some(Val::Const(_)) => return err(format!("output `{}` is a constant", o.name)),
            None => return err(format!("output `{}` is computed by no node", o.name)),
        }
    }
    let mut out = String::from(
        "# Imported from ONNX by unetc. The input is NHWC (height x width x channels), where\n# the ONNX model's is NCHW; outputs are NHWC too.\n",
    );
    let name = if graph.name.is_empty() {
        "model"
    } else {
        graph.name.as_str()
    };
    let _ = writeln!(
        out,
        "model {} {{",
        crate::emit::dsl::string_literal(&ident(name))
    );
    out.push_str(&im.body);
    let _ = writeln!(out, "  output {}", outs.join(", "));
    out.push_str("}\n");
    let torch_map = im
        .origins
        .into_iter()
        .map(|(layer, p)| {
            let one = (p.len() == 1).then(|| p.into_iter().next()).flatten();
            (one.filter(|p| !p.is_empty()), layer)
        })
        .collect();
    Ok(Imported {
        spec: out,
        weights: im.weights,
        torch_map,
    })
}

type R<T> = Result<T, OnnxImportError>;

impl Importer<'_> {
    fn attr(&self, name: &str) -> Option<&AttributeProto> {
        self.node.attribute.iter().find(|a| a.name == name)
    }
    fn int(&self, name: &str, default: i64) -> i64 {
        self.attr(name).map_or(default, |a| a.i)
    }
    fn flt(&self, name: &str, default: f32) -> f32 {
        self.attr(name).map_or(default, |a| a.f)
    }
    fn ints(&self, name: &str) -> Option<Vec<i64>> {
        self.attr(name).map(|a| a.ints.clone())
    }
    fn text(&self, name: &str, default: &str) -> String {
        self.attr(name).map_or(default.to_string(), |a| {
            String::from_utf8_lossy(&a.s).into_owned()
        })
    }

    fn input(&self, k: usize) -> R<&Val> {
        let name = self
            .node
            .input
            .get(k)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| OnnxImportError(format!("input {k} is missing")))?;
        self.vals.get(name).ok_or_else(|| {
            OnnxImportError(format!("input `{name}` is computed by no earlier node"))
        })
    }
    fn opt_input(&self, k: usize) -> R<Option<&Val>> {
        match self.node.input.get(k) {
            Some(n) if !n.is_empty() => self.input(k).map(Some),
            _ => Ok(None),
        }
    }
    fn act(&self, k: usize) -> R<Act> {
        match self.input(k)? {
            Val::Act(a) => Ok(a.clone()),
            Val::Const(_) => err(format!(
                "input {k} is a constant where unetc expects the image tensor"
            )),
        }
    }
    fn konst(&self, k: usize) -> R<Const> {
        match self.input(k)? {
            Val::Const(c) => Ok(c.clone()),
            Val::Act(_) => err(format!(
                "input {k} depends on the image where unetc needs a constant (a weight or a shape)"
            )),
        }
    }
    fn all_const(&self) -> bool {
        self.node
            .input
            .iter()
            .filter(|n| !n.is_empty())
            .all(|n| matches!(self.vals.get(n), Some(Val::Const(_))))
    }
    fn set(&mut self, v: Val) -> R<()> {
        let out = self
            .node
            .output
            .first()
            .ok_or_else(|| OnnxImportError("no output".into()))?;
        self.vals.insert(out.clone(), v);
        Ok(())
    }
    fn fresh(&mut self, base: &str) -> String {
        let base = ident(base);
        let mut name = base.clone();
        let mut k = 1;
        while !self.names.insert(name.clone()) {
            name = format!("{base}_{k}");
            k += 1;
        }
        name
    }
    fn layer_name(&mut self) -> String {
        let base = if self.node.name.is_empty() {
            self.node
                .output
                .first()
                .cloned()
                .unwrap_or_else(|| self.node.op_type.clone())
        } else {
            self.node.name.clone()
        };
        self.fresh(&base)
    }
    /// Writes `src -> call(args, name: "name")`.
    fn emit(&mut self, srcs: &[&str], call: &str, args: &str, name: &str) {
        let src = if srcs.len() == 1 {
            srcs[0].to_string()
        } else {
            format!("[{}]", srcs.join(", "))
        };
        let sep = if args.is_empty() { "" } else { ", " };
        let _ = writeln!(
            self.body,
            "  {src} -> {call}({args}{sep}name: {})",
            crate::emit::dsl::string_literal(name)
        );
    }
    fn weight(&mut self, layer: &str, var: &str, dims: Vec<usize>, data: Vec<f32>) -> R<()> {
        let t = Tensor::from_vec(&dims, data).ok_or_else(|| {
            OnnxImportError(format!(
                "weight {layer}/{var}: shape {dims:?} does not fit its values"
            ))
        })?;
        self.weights.insert(format!("{layer}/{var}"), t);
        // Initializers that are not `module.param` (folded constants) leave the set empty.
        let mut from = BTreeSet::new();
        for i in &self.node.input {
            if self.inits.contains(i) {
                match i.rsplit_once('.') {
                    Some((m, _)) => from.insert(m.to_string()),
                    None => from.insert(String::new()),
                };
            }
        }
        match self.origins.last_mut() {
            Some((l, set)) if l == layer => set.extend(from),
            _ => self.origins.push((layer.to_string(), from)),
        }
        Ok(())
    }
    /// A (transposed) convolution's weight `[a, b, k...]` as Keras's `[k..., b, a]` and its bias
    /// of `filters` values, if there is one.
    fn kernel_and_bias(
        &mut self,
        layer: &str,
        w: &Const,
        (a, b): (usize, usize),
        bias: Option<Val>,
        filters: usize,
    ) -> R<()> {
        let wv = w.floats();
        let ksz: usize = w.dims[2..].iter().product();
        let mut kernel = vec![0f32; wv.len()];
        for i in 0..a {
            for j in 0..b {
                for p in 0..ksz {
                    kernel[(p * b + j) * a + i] = wv[(i * b + j) * ksz + p];
                }
            }
        }
        let mut kd: Vec<usize> = w.dims[2..].to_vec();
        kd.extend([b, a]);
        self.weight(layer, "kernel", kd, kernel)?;
        if let Some(bias) = bias {
            let values = match bias {
                Val::Const(c) if c.len() == filters => c.floats(),
                _ => return err(format!("bias is not a constant of {filters} values")),
            };
            self.weight(layer, "bias", vec![filters], values)?;
        }
        Ok(())
    }
    fn out_act(&mut self, var: String, shape: Vec<usize>, nonneg: bool) -> R<()> {
        // Bounded sizes keep every later shape computation far from overflow.
        if shape.iter().any(|&d| d > MAX_DIM) {
            return err(format!("the output shape {shape:?} is too large"));
        }
        self.set(Val::Act(Act { var, shape, nonneg }))
    }
    /// One activation in, same shape out.
    fn unary(&mut self, call: &str, args: &str, nonneg: bool) -> R<()> {
        let x = self.act(0)?;
        let name = self.layer_name();
        self.emit(&[&x.var], call, args, &name);
        self.out_act(name, x.shape, nonneg)
    }

    fn step(&mut self) -> R<()> {
        let node = self.node;
        if !(node.domain.is_empty() || node.domain == "ai.onnx") {
            return err(format!("operator domain `{}` is not ONNX's", node.domain));
        }
        let op = node.op_type.as_str();
        if op == "Constant" {
            let t = self
                .attr("value")
                .and_then(|a| a.t.as_ref())
                .ok_or_else(|| OnnxImportError("Constant without a tensor `value`".into()))?;
            let c = tensor_const(t)?;
            return self.set(Val::Const(c));
        }
        if self.all_const() && !node.input.is_empty() && op != "Shape" {
            let c = self.fold(op)?;
            return self.set(Val::Const(c));
        }
        match op {
            "Identity" | "Dropout" => {
                let v = self.input(0)?.clone();
                self.set(v)
            }
            "Shape" => {
                let shape = match self.input(0)? {
                    Val::Act(a) => a.shape.clone(),
                    Val::Const(c) => c.dims.clone(),
                };
                let d: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
                self.set(Val::Const(Const {
                    dims: vec![d.len()],
                    data: Data::I(d),
                }))
            }
            "Conv" => self.conv(),
            "ConvTranspose" => self.conv_transpose(),
            "BatchNormalization" => self.batch_norm(),
            "InstanceNormalization" => self.instance_norm(),
            "Relu" => self.unary("activation", "activation: \"relu\"", true),
            "Sigmoid" => self.unary("activation", "activation: \"sigmoid\"", true),
            "Tanh" => self.unary("activation", "activation: \"tanh\"", false),
            "Elu" => {
                let a = self.flt("alpha", 1.0);
                self.unary("elu", &format!("alpha: {}", float(a)), false)
            }
            "LeakyRelu" => {
                let a = self.flt("alpha", 0.01);
                self.unary("leaky_re_lu", &format!("alpha: {}", float(a)), false)
            }
            "PRelu" => self.prelu(),
            "Softmax" => {
                let x = self.act(0)?;
                if self.opset < 13 {
                    return err("Softmax before opset 13 normalizes over all axes from `axis` on, not over the channels; export with opset_version >= 13");
                }
                let axis = self.int("axis", -1);
                let rank = x.shape.len() as i64;
                if axis != 1 && axis != 1 - rank {
                    return err(format!(
                        "softmax over axis {axis}; unetc maps softmax over the channels (axis 1) only"
                    ));
                }
                self.unary("activation", "activation: \"softmax\"", true)
            }
            "MaxPool" | "AveragePool" => self.pool(op == "MaxPool"),
            "GlobalAveragePool" => {
                let x = self.act(0)?;
                let call = if x.shape.len() == 5 {
                    "global_average_pooling3d"
                } else {
                    "global_average_pooling2d"
                };
                let name = self.layer_name();
                self.emit(&[&x.var], call, "keepdims: true", &name);
                let mut s = x.shape.clone();
                for d in &mut s[2..] {
                    *d = 1;
                }
                self.out_act(name, s, x.nonneg)
            }
            "Concat" => self.concat(),
            "Add" | "Mul" | "Sub" => self.merge(op),
            "Resize" | "Upsample" => self.resize(op == "Upsample"),
            "Pad" => self.pad(),
            other => err(format!(
                "operator {other} on the image tensor has no unetc layer (unetc maps Conv, ConvTranspose, BatchNormalization, InstanceNormalization, Relu, LeakyRelu, PRelu, Sigmoid, Tanh, Elu, Softmax, MaxPool, AveragePool, GlobalAveragePool, Concat, Add, Mul, Sub, Resize, Upsample, Pad, Dropout, Identity)"
            )),
        }
    }

    /// Spatial pads [begin..., end...] of a node (`pads` attribute, or `auto_pad`).
    fn spatial_pads(
        &self,
        n: usize,
        spatial: &[usize],
        k: &[i64],
        s: &[i64],
        d: &[i64],
    ) -> R<Vec<(i64, i64)>> {
        let auto = self.text("auto_pad", "NOTSET");
        let mut out = Vec::with_capacity(n);
        match auto.as_str() {
            "NOTSET" => {
                let p = self.ints("pads").unwrap_or_else(|| vec![0; 2 * n]);
                if p.len() != 2 * n || p.iter().any(|&x| !(0..=MAX_DIM as i64).contains(&x)) {
                    return err(format!(
                        "pads {p:?} are not {} non-negative numbers (at most {MAX_DIM})",
                        2 * n
                    ));
                }
                for i in 0..n {
                    out.push((p[i], p[n + i]));
                }
            }
            "VALID" => out.resize(n, (0, 0)),
            "SAME_UPPER" | "SAME_LOWER" => {
                for i in 0..n {
                    let total = same_total(spatial[i] as i64, k[i], s[i], d[i]);
                    let small = total / 2;
                    out.push(if auto == "SAME_UPPER" {
                        (small, total - small)
                    } else {
                        (total - small, small)
                    });
                }
            }
            other => return err(format!("auto_pad `{other}` is not ONNX's")),
        }
        Ok(out)
    }

    fn geometry(&self, n: usize, key: &str, default: i64) -> R<Vec<i64>> {
        let v = self.ints(key).unwrap_or_else(|| vec![default; n]);
        if v.len() != n || v.iter().any(|x| !(1..=1 << 16).contains(x)) {
            return err(format!("{key} {v:?} are not {n} positive numbers"));
        }
        Ok(v)
    }

    /// Writes explicit zero padding before a 'valid' layer where the pads are not Keras's
    /// 'same'; returns the source variable and the padding keyword.
    fn pads_before(
        &mut self,
        x: &Act,
        pads: &[(i64, i64)],
        k: &[i64],
        s: &[i64],
        d: &[i64],
    ) -> R<(String, Vec<usize>, &'static str)> {
        let n = pads.len();
        if pads.iter().all(|&p| p == (0, 0)) {
            return Ok((x.var.clone(), x.shape.clone(), "valid"));
        }
        let same = (0..n).all(|i| {
            let total = same_total(x.shape[2 + i] as i64, k[i], s[i], d[i]);
            pads[i] == (total / 2, total - total / 2)
        });
        if same {
            return Ok((x.var.clone(), x.shape.clone(), "same"));
        }
        let (name, _) = self.zero_pad(x, pads);
        let mut shape = x.shape.clone();
        for i in 0..n {
            shape[2 + i] += (pads[i].0 + pads[i].1) as usize;
        }
        Ok((name, shape, "valid"))
    }

    /// Writes a ZeroPadding layer before the node's layer; returns its name and 'valid'.
    fn zero_pad(&mut self, x: &Act, pads: &[(i64, i64)]) -> (String, &'static str) {
        let base = format!("{}_pad", self.node.name);
        let name = self.fresh(&base);
        let parts: Vec<String> = pads.iter().map(|(a, b)| format!("({a}, {b})")).collect();
        let call = if pads.len() == 3 {
            "zero_padding3d"
        } else {
            "zero_padding2d"
        };
        self.emit(
            &[&x.var],
            call,
            &format!("padding: ({})", parts.join(", ")),
            &name,
        );
        (name, "valid")
    }

    /// A (transposed) convolution's input, weight and optional bias, and its spatial rank,
    /// after checking the weight has one axis per spatial axis plus two.
    fn conv_operands(&self, what: &str) -> R<(Act, Const, Option<Val>, usize)> {
        let x = self.act(0)?;
        let w = self.konst(1)?;
        let b = self.opt_input(2)?.cloned();
        let n = x.shape.len() - 2;
        if w.dims.len() != n + 2 {
            return err(format!("weight of shape {:?} for a {n}-D {what}", w.dims));
        }
        Ok((x, w, b, n))
    }

    fn conv(&mut self) -> R<()> {
        let (x, w, b, n) = self.conv_operands("convolution")?;
        let (o, ig) = (w.dims[0], w.dims[1]);
        let k: Vec<i64> = w.dims[2..].iter().map(|&d| d as i64).collect();
        let s = self.geometry(n, "strides", 1)?;
        let d = self.geometry(n, "dilations", 1)?;
        let g = self.int("group", 1);
        let c = x.shape[1];
        if g < 1
            || c % g as usize != 0
            || ig.checked_mul(g as usize) != Some(c)
            || o % g as usize != 0
        {
            return err(format!(
                "group {g} does not fit {c} input channels and a weight of shape {:?}",
                w.dims
            ));
        }
        if s.iter().zip(&d).any(|(&s, &d)| s > 1 && d > 1) {
            return err(
                "strides and dilations both above 1; Keras convolutions take one or the other",
            );
        }
        let pads = self.spatial_pads(n, &x.shape[2..], &k, &s, &d)?;
        let (src, in_shape, padding) = self.pads_before(&x, &pads, &k, &s, &d)?;
        let name = self.layer_name();
        let call = if n == 3 { "conv3d" } else { "conv2d" };
        let use_bias = b.is_some();
        let groups = if n == 3 && g != 1 {
            return err("grouped 3-D convolution; unetc's Conv3D has groups 1");
        } else if n == 3 {
            String::new()
        } else {
            format!(", groups: {g}")
        };
        self.emit(
            &[&src],
            call,
            &format!(
                "filters: {o}, kernel_size: {}, strides: {}, padding: \"{padding}\", dilation_rate: {}, use_bias: {}{groups}",
                tuple(&k),
                tuple(&s),
                tuple(&d),
                use_bias
            ),
            &name,
        );
        // [O, I/g, k...] -> [k..., I/g, O]
        self.kernel_and_bias(&name, &w, (o, ig), b, o)?;
        let mut shape = vec![x.shape[0], o];
        for i in 0..n {
            let span = (k[i] - 1) * d[i] + 1;
            let len = in_shape[2 + i] as i64;
            let out = if padding == "same" {
                (len + s[i] - 1) / s[i]
            } else {
                if len < span {
                    return err(format!(
                        "kernel {k:?} is larger than the padded input {:?}",
                        &in_shape[2..]
                    ));
                }
                (len - span) / s[i] + 1
            };
            shape.push(out as usize);
        }
        self.out_act(name, shape, false)
    }

    fn conv_transpose(&mut self) -> R<()> {
        let (x, w, b, n) = self.conv_operands("transposed convolution")?;
        let (ci, o) = (w.dims[0], w.dims[1]);
        if ci != x.shape[1] {
            return err(format!(
                "weight {:?} for {} input channels",
                w.dims, x.shape[1]
            ));
        }
        if self.int("group", 1) != 1 {
            return err("grouped transposed convolution; Keras's Conv2DTranspose has no groups");
        }
        let k: Vec<i64> = w.dims[2..].iter().map(|&d| d as i64).collect();
        let s = self.geometry(n, "strides", 1)?;
        let d = self.geometry(n, "dilations", 1)?;
        if d.iter().any(|&d| d != 1) {
            return err("dilated transposed convolution is not supported yet");
        }
        if self.attr("output_shape").is_some() || self.text("auto_pad", "NOTSET") != "NOTSET" {
            return err("output_shape / auto_pad on ConvTranspose are not supported yet; export with explicit padding");
        }
        let pads = self.spatial_pads(n, &x.shape[2..], &k, &s, &d)?;
        let op = self.ints("output_padding").unwrap_or_else(|| vec![0; n]);
        if op.len() != n || op.iter().any(|&p| !(0..=MAX_DIM as i64).contains(&p)) {
            return err(format!(
                "output_padding {op:?} is not {n} non-negative numbers"
            ));
        }
        // PyTorch: out = (n-1)s + k - begin - end + output_padding, cropped from the full
        // (n-1)s + k at `begin`. Keras 'same' (no output_padding): n*s, cropped at
        // max(k-s, 0)/2; 'valid': the full length.
        let mut outs = Vec::new();
        let mut same = true;
        let mut crop = Vec::new();
        for i in 0..n {
            let len = x.shape[2 + i] as i64;
            let full = (len - 1) * s[i] + k[i];
            let out = full - pads[i].0 - pads[i].1 + op[i];
            if out < 1 {
                return err("the output would be empty");
            }
            outs.push(out as usize);
            same &= out == len * s[i] && pads[i].0 == (k[i] - s[i]).max(0) / 2;
            let end = pads[i].1 - op[i];
            if end < 0 {
                return err(format!(
                    "output_padding {op:?} beyond the end padding {:?} is not supported yet",
                    pads
                ));
            }
            crop.push((pads[i].0, end));
        }
        let padding = if same { "same" } else { "valid" };
        let name = self.layer_name();
        let call = if n == 3 {
            "conv3d_transpose"
        } else {
            "conv2d_transpose"
        };
        self.emit(
            &[&x.var],
            call,
            &format!(
                "filters: {o}, kernel_size: {}, strides: {}, padding: \"{padding}\", use_bias: {}",
                tuple(&k),
                tuple(&s),
                b.is_some()
            ),
            &name,
        );
        // [I, O, k...] -> [k..., O, I]
        self.kernel_and_bias(&name, &w, (ci, o), b, o)?;
        let mut shape = vec![x.shape[0], o];
        shape.extend(&outs);
        let mut var = name;
        if !same && crop.iter().any(|&c| c != (0, 0)) {
            let cname = self.fresh(&format!("{var}_crop"));
            let parts: Vec<String> = crop.iter().map(|(a, b)| format!("({a}, {b})")).collect();
            let call = if n == 3 { "cropping3d" } else { "cropping2d" };
            self.emit(
                &[&var],
                call,
                &format!("cropping: ({})", parts.join(", ")),
                &cname,
            );
            var = cname;
        }
        self.out_act(var, shape, false)
    }

    fn per_channel(&self, k: usize, c: usize, what: &str) -> R<Vec<f32>> {
        let v = self.konst(k)?;
        if v.len() != c {
            return err(format!("{what} has {} values for {c} channels", v.len()));
        }
        Ok(v.floats())
    }

    fn batch_norm(&mut self) -> R<()> {
        let x = self.act(0)?;
        if self.node.output.len() > 1 && self.node.output[1..].iter().any(|o| !o.is_empty()) {
            return err("BatchNormalization in training mode (running statistics as outputs); export the model in eval() mode");
        }
        let c = x.shape[1];
        let gamma = self.per_channel(1, c, "scale")?;
        let beta = self.per_channel(2, c, "bias")?;
        let mean = self.per_channel(3, c, "mean")?;
        let var = self.per_channel(4, c, "variance")?;
        let eps = self.flt("epsilon", 1e-5);
        let name = self.layer_name();
        self.emit(
            &[&x.var],
            "batch_normalization",
            &format!("axis: -1, epsilon: {}", float(eps)),
            &name,
        );
        self.weight(&name, "gamma", vec![c], gamma)?;
        self.weight(&name, "beta", vec![c], beta)?;
        self.weight(&name, "moving_mean", vec![c], mean)?;
        self.weight(&name, "moving_variance", vec![c], var)?;
        self.out_act(name, x.shape, false)
    }

    fn instance_norm(&mut self) -> R<()> {
        let x = self.act(0)?;
        let c = x.shape[1];
        let gamma = self.per_channel(1, c, "scale")?;
        let beta = self.per_channel(2, c, "bias")?;
        let eps = self.flt("epsilon", 1e-5);
        let name = self.layer_name();
        // Instance normalization is group normalization with one channel per group.
        self.emit(
            &[&x.var],
            "group_normalization",
            &format!("groups: {c}, axis: -1, epsilon: {}", float(eps)),
            &name,
        );
        self.weight(&name, "gamma", vec![c], gamma)?;
        self.weight(&name, "beta", vec![c], beta)?;
        self.out_act(name, x.shape, false)
    }

    fn prelu(&mut self) -> R<()> {
        let x = self.act(0)?;
        let slope = self.konst(1)?;
        let c = x.shape[1];
        let n = x.shape.len() - 2;
        // A slope per channel ([C] or [C,1,1]) or one shared slope ([1]).
        let per: Vec<f32> =
            if slope.len() == c && slope.dims.iter().filter(|&&d| d != 1).count() <= 1 {
                slope.floats()
            } else if slope.len() == 1 {
                vec![slope.floats()[0]; c]
            } else {
                return err(format!(
                    "slope of shape {:?}; unetc maps a slope per channel or one shared slope",
                    slope.dims
                ));
            };
        let name = self.layer_name();
        let shared: Vec<i64> = (1..=n as i64).collect();
        self.emit(
            &[&x.var],
            "p_re_lu",
            &format!("shared_axes: {}", tuple(&shared)),
            &name,
        );
        let mut dims = vec![1; n];
        dims.push(c);
        self.weight(&name, "alpha", dims, per)?;
        self.out_act(name, x.shape, false)
    }

    fn pool(&mut self, max: bool) -> R<()> {
        let x = self.act(0)?;
        let n = x.shape.len() - 2;
        let k = self.geometry(n, "kernel_shape", 1)?;
        let s = self.geometry(n, "strides", 1)?;
        let d = self.geometry(n, "dilations", 1)?;
        if d.iter().any(|&d| d != 1) {
            return err("dilated pooling has no Keras layer");
        }
        let pads = self.spatial_pads(n, &x.shape[2..], &k, &s, &d)?;
        // Output length by ONNX's rule (floor, or ceil with ceil_mode).
        let ceil = self.int("ceil_mode", 0) == 1;
        let mut outs = Vec::new();
        for i in 0..n {
            let len = x.shape[2 + i] as i64 + pads[i].0 + pads[i].1;
            if len < k[i] {
                return err("the pooling window is larger than the input");
            }
            let floor = (len - k[i]) / s[i] + 1;
            let ceiled = (len - k[i] + s[i] - 1) / s[i] + 1;
            if ceil && ceiled != floor {
                return err("ceil_mode changes the output size here; Keras pooling has no ceil mode (export with ceil_mode=False)");
            }
            outs.push(floor as usize);
        }
        let all_zero = pads.iter().all(|&p| p == (0, 0));
        let same = (0..n).all(|i| {
            let total = same_total(x.shape[2 + i] as i64, k[i], s[i], 1);
            pads[i] == (total / 2, total - total / 2)
        }) && (0..n)
            .all(|i| outs[i] as i64 == (x.shape[2 + i] as i64 + s[i] - 1) / s[i]);
        let include_pad = self.int("count_include_pad", 0) == 1;
        let (src, padding) = if all_zero {
            (x.var.clone(), "valid")
        } else if same && (max || !include_pad) {
            (x.var.clone(), "same")
        } else if max && x.nonneg {
            // Every value is >= 0, so zero padding picks the same maxima as ONNX's -inf.
            self.zero_pad(&x, &pads)
        } else if !max && include_pad {
            // ONNX averages over the zeros of the padding here, as zero padding does.
            self.zero_pad(&x, &pads)
        } else {
            return err(format!(
                "pads {pads:?} are neither none nor Keras's 'same' for this input, and cannot be written as zero padding"
            ));
        };
        let name = self.layer_name();
        let call = match (max, n) {
            (true, 3) => "max_pooling3d",
            (false, 3) => "average_pooling3d",
            (true, _) => "max_pooling2d",
            (false, _) => "average_pooling2d",
        };
        self.emit(
            &[&src],
            call,
            &format!(
                "pool_size: {}, strides: {}, padding: \"{padding}\"",
                tuple(&k),
                tuple(&s)
            ),
            &name,
        );
        let mut shape = vec![x.shape[0], x.shape[1]];
        shape.extend(&outs);
        self.out_act(name, shape, x.nonneg)
    }

    fn concat(&mut self) -> R<()> {
        let mut acts = Vec::new();
        for k in 0..self.node.input.len() {
            acts.push(self.act(k)?);
        }
        let Some(first) = acts.first().cloned() else {
            return err("no inputs");
        };
        let rank = first.shape.len() as i64;
        let axis = self.int("axis", 1);
        if axis != 1 && axis != 1 - rank {
            return err(format!(
                "concatenation along axis {axis}; unetc maps the channel axis (1) only"
            ));
        }
        let mut c = 0;
        for a in &acts {
            if a.shape.len() != first.shape.len() || a.shape[2..] != first.shape[2..] {
                return err(format!(
                    "inputs of shapes {:?} and {:?}",
                    first.shape, a.shape
                ));
            }
            c += a.shape[1];
        }
        let name = self.layer_name();
        let vars: Vec<&str> = acts.iter().map(|a| a.var.as_str()).collect();
        self.emit(&vars, "concatenate", "axis: -1", &name);
        let mut shape = first.shape.clone();
        shape[1] = c;
        let nonneg = acts.iter().all(|a| a.nonneg);
        self.out_act(name, shape, nonneg)
    }

    fn merge(&mut self, op: &str) -> R<()> {
        let a = self.act(0).map_err(|_| {
            OnnxImportError(format!("{op} with a constant operand is not supported yet"))
        })?;
        let b = self.act(1).map_err(|_| {
            OnnxImportError(format!("{op} with a constant operand is not supported yet"))
        })?;
        if a.shape != b.shape {
            // Broadcasting (an attention gate's [N,1,H,W] * [N,C,H,W]): a TFOpLambda, which
            // broadcasts as TensorFlow does. Same rank, each axis equal or 1 on one side.
            let fits = a.shape.len() == b.shape.len()
                && a.shape
                    .iter()
                    .zip(&b.shape)
                    .all(|(&p, &q)| p == q || p == 1 || q == 1)
                && a.shape[0] == b.shape[0];
            if !fits {
                return err(format!(
                    "{op} of shapes {:?} and {:?}: unetc maps equal shapes, or broadcasting over axes of size 1",
                    a.shape, b.shape
                ));
            }
            let function = match op {
                "Add" => "math.add",
                "Mul" => "math.multiply",
                _ => "math.subtract",
            };
            let shape: Vec<usize> = a
                .shape
                .iter()
                .zip(&b.shape)
                .map(|(&p, &q)| p.max(q))
                .collect();
            let name = self.layer_name();
            self.emit(
                &[&a.var, &b.var],
                "tf_op",
                &format!("\"{function}\""),
                &name,
            );
            return self.out_act(name, shape, false);
        }
        let call = match op {
            "Add" => "add",
            "Mul" => "multiply",
            _ => "subtract",
        };
        let name = self.layer_name();
        self.emit(&[&a.var, &b.var], call, "", &name);
        self.out_act(name, a.shape, false)
    }

    fn resize(&mut self, upsample: bool) -> R<()> {
        let x = self.act(0)?;
        let n = x.shape.len() - 2;
        let mode = self.text("mode", "nearest");
        let ctm = self.text("coordinate_transformation_mode", "half_pixel");
        // Scales from `scales` (input 2, or 1 for Upsample) or `sizes` (input 3).
        let scales_in = if upsample { 1 } else { 2 };
        // The output's spatial sizes where `sizes` gives them.
        let mut given_sizes: Option<Vec<i64>> = None;
        let mut scales: Option<Vec<f32>> = match self.opt_input(scales_in)? {
            Some(Val::Const(c)) if c.len() > 0 => Some(c.floats()),
            Some(Val::Const(_)) | None => None,
            Some(Val::Act(_)) => return err("the scales depend on the image"),
        };
        if scales.is_none() && !upsample {
            if let Some(v) = self.opt_input(3)? {
                let sizes = match v {
                    Val::Const(c) => c.ints(),
                    Val::Act(_) => return err("the sizes depend on the image"),
                };
                if sizes.len() != x.shape.len() {
                    return err(format!("sizes {sizes:?} for a {}-D tensor", x.shape.len()));
                }
                scales = Some(
                    sizes
                        .iter()
                        .zip(&x.shape)
                        .map(|(&s, &d)| s as f32 / d as f32)
                        .collect(),
                );
                given_sizes = Some(sizes[2..].to_vec());
            }
        }
        let Some(scales) = scales else {
            return err("neither scales nor sizes are given");
        };
        if scales.len() != x.shape.len() || scales[0] != 1.0 || scales[1] != 1.0 {
            return err(format!("scales {scales:?} resize the batch or channels"));
        }
        let whole = scales[2..]
            .iter()
            .all(|&f| (1.0..=1024.0).contains(&f) && f.fract() == 0.0);
        if !whole {
            return self.resize_by_ratio(&x, &scales[2..], given_sizes, &mode, &ctm);
        }
        let size: Vec<i64> = scales[2..].iter().map(|&f| f as i64).collect();
        let mut align_corners = false;
        let interpolation = match mode.as_str() {
            // Nearest with a whole factor repeats each pixel for every transform but one
            // that shifts (tf_crop_and_resize is refused below); half_pixel with
            // round_prefer_floor also picks floor(i / f) for whole f.
            "nearest" => {
                let nm = self.text("nearest_mode", "round_prefer_floor");
                let repeat = match ctm.as_str() {
                    "asymmetric" => nm == "floor" || size.iter().all(|&f| f == 1),
                    "half_pixel" | "pytorch_half_pixel" => {
                        nm == "round_prefer_floor" || nm == "floor"
                    }
                    _ => false,
                };
                if !repeat {
                    return err(format!(
                        "nearest resizing with {ctm} / {nm} is not pixel repetition"
                    ));
                }
                "nearest"
            }
            "linear" | "bilinear" | "trilinear" => {
                let linear = match n {
                    2 => "bilinear",
                    3 => "trilinear",
                    _ => {
                        return err(format!(
                            "linear resizing of a {n}-D tensor has no unetc layer"
                        ))
                    }
                };
                match ctm.as_str() {
                    "half_pixel" | "pytorch_half_pixel" => linear,
                    "align_corners" => {
                        align_corners = true;
                        linear
                    }
                    other => {
                        return err(format!("{linear} resizing with coordinate transformation `{other}` has no unetc layer"))
                    }
                }
            }
            other => return err(format!("resize mode `{other}` has no unetc layer")),
        };
        if upsample && mode == "linear" {
            // Opset 7-9 Upsample's linear is asymmetric, not Keras's half-pixel bilinear.
            return err(
                "Upsample (opset < 10) linear mode is asymmetric; re-export with opset >= 11",
            );
        }
        let name = self.layer_name();
        let aligned = if align_corners {
            ", align_corners: true"
        } else {
            ""
        };
        let (call, args) = match (n, interpolation) {
            (3, "nearest") => ("up_sampling3d", format!("size: {}", tuple(&size))),
            (3, _) => (
                "up_sampling3d",
                format!(
                    "size: {}, interpolation: \"{interpolation}\"{aligned}",
                    tuple(&size)
                ),
            ),
            _ => (
                "up_sampling2d",
                format!(
                    "size: {}, interpolation: \"{interpolation}\"{aligned}",
                    tuple(&size)
                ),
            ),
        };
        self.emit(&[&x.var], call, &args, &name);
        let mut shape = x.shape.clone();
        for i in 0..n {
            shape[2 + i] *= size[i] as usize;
        }
        self.out_act(name, shape, x.nonneg)
    }

    /// A Resize to a size that is not a whole multiple of the input: Keras's Resizing, where
    /// it samples as TensorFlow does (bilinear at half-pixel centres, 2-D, to exactly
    /// `input x scale` or to given sizes, so that the scale is input / output).
    fn resize_by_ratio(
        &mut self,
        x: &Act,
        scales: &[f32],
        given_sizes: Option<Vec<i64>>,
        mode: &str,
        ctm: &str,
    ) -> R<()> {
        let why = |what: String| {
            err(format!(
                "{what}; unetc resizes by other than whole factors only as Keras's Resizing \
                 does: 2-D, bilinear, half-pixel centres"
            ))
        };
        if x.shape.len() != 4 {
            return why(format!(
                "scales {scales:?} resize a {}-D tensor",
                x.shape.len() - 2
            ));
        }
        if !matches!(mode, "linear" | "bilinear") {
            return why(format!("{mode} resizing by scales {scales:?}"));
        }
        let sizes = match given_sizes {
            Some(sizes) => sizes,
            None => {
                let mut sizes = Vec::new();
                for (&f, &n) in scales.iter().zip(&x.shape[2..]) {
                    let out = f * n as f32;
                    if out.fract() != 0.0 {
                        return why(format!(
                            "scale {f} of {n} pixels gives {out}, not a whole number of pixels \
                             (ONNX samples by the scale, TensorFlow by the sizes' ratio)"
                        ));
                    }
                    sizes.push(out as i64);
                }
                sizes
            }
        };
        let (oh, ow) = (sizes[0], sizes[1]);
        let max = crate::ir::value::MAX_DIM;
        if !(1..=max).contains(&oh) || !(1..=max).contains(&ow) {
            return why(format!("output size {oh}x{ow} is out of range"));
        }
        match ctm {
            "half_pixel" => {}
            // PyTorch's half-pixel samples an output of one pixel at the input's first.
            "pytorch_half_pixel" if oh > 1 && ow > 1 => {}
            other => return why(format!("coordinate transformation `{other}`")),
        }
        let name = self.layer_name();
        self.emit(
            &[&x.var],
            "resizing",
            &format!("height: {oh}, width: {ow}, interpolation: \"bilinear\""),
            &name,
        );
        let shape = vec![x.shape[0], x.shape[1], oh as usize, ow as usize];
        self.out_act(name, shape, x.nonneg)
    }

    fn pad(&mut self) -> R<()> {
        let x = self.act(0)?;
        let r = x.shape.len();
        let mode = self.text("mode", "constant");
        let pads = match self.opt_input(1)? {
            Some(Val::Const(c)) => c.ints(),
            Some(Val::Act(_)) => return err("the pads depend on the image"),
            None => self.ints("pads").unwrap_or_default(),
        };
        if self.opt_input(3)?.is_some() {
            return err("Pad with `axes` is not supported yet");
        }
        if pads.len() != 2 * r {
            return err(format!("pads {pads:?} are not {} numbers", 2 * r));
        }
        if pads.iter().all(|&p| p == 0) {
            // No padding in any mode: the identity.
            return self.set(Val::Act(x));
        }
        if pads[0] != 0 || pads[1] != 0 || pads[r] != 0 || pads[r + 1] != 0 {
            return err("padding of the batch or channel axis");
        }
        if pads.iter().any(|&p| p < 0) {
            return err(format!(
                "negative pads {pads:?} (cropping) are not supported yet"
            ));
        }
        let n = r - 2;
        let pad_mode = match mode.as_str() {
            "constant" => {
                let value = match self.opt_input(2)? {
                    Some(Val::Const(c)) if c.len() == 1 => c.floats()[0],
                    Some(_) => return err("the constant value is not one number"),
                    None => self.flt("value", 0.0),
                };
                if value != 0.0 {
                    return err(format!(
                        "constant padding with {value}; unetc pads with zeros only"
                    ));
                }
                ""
            }
            "reflect" => ", mode: \"reflect\"",
            "edge" => ", mode: \"replicate\"",
            other => return err(format!("pad mode `{other}` is not ONNX's")),
        };
        let sp: Vec<(i64, i64)> = (0..n).map(|i| (pads[2 + i], pads[r + 2 + i])).collect();
        if mode == "reflect" {
            if let Some(i) = (0..n).find(|&i| sp[i].0.max(sp[i].1) >= x.shape[2 + i] as i64) {
                return err(format!(
                    "reflect padding by {:?} of an axis of {} pixels; it needs more pixels than the padding",
                    sp[i],
                    x.shape[2 + i]
                ));
            }
        }
        let name = self.layer_name();
        let parts: Vec<String> = sp.iter().map(|(a, b)| format!("({a}, {b})")).collect();
        let call = if n == 3 {
            "zero_padding3d"
        } else {
            "zero_padding2d"
        };
        self.emit(
            &[&x.var],
            call,
            &format!("padding: ({}){pad_mode}", parts.join(", ")),
            &name,
        );
        let mut shape = x.shape.clone();
        for i in 0..n {
            shape[2 + i] += (sp[i].0 + sp[i].1) as usize;
        }
        self.out_act(name, shape, false)
    }

    /// Evaluates a node whose inputs are all constants (shape arithmetic).
    fn fold(&self, op: &str) -> R<Const> {
        let c0 = self.konst(0)?;
        let ints_of = |k: usize| -> R<Vec<i64>> { Ok(self.konst(k)?.ints()) };
        match op {
            "Identity" | "Dropout" => Ok(c0),
            "Cast" => {
                let to = self.int("to", 1);
                Ok(match to {
                    1 | 10 | 11 => Const {
                        dims: c0.dims.clone(),
                        data: Data::F(c0.floats()),
                    },
                    _ => Const {
                        dims: c0.dims.clone(),
                        data: Data::I(c0.ints()),
                    },
                })
            }
            "Shape" => {
                let d: Vec<i64> = c0.dims.iter().map(|&d| d as i64).collect();
                Ok(Const {
                    dims: vec![d.len()],
                    data: Data::I(d),
                })
            }
            "Unsqueeze" | "Squeeze" | "Reshape" | "Flatten" => {
                // Element order is unchanged; only the shape is recomputed.
                let dims = match op {
                    "Reshape" => {
                        let want = ints_of(1)?;
                        let mut dims = Vec::new();
                        let mut infer = None;
                        for (i, &w) in want.iter().enumerate() {
                            if w == -1 {
                                infer = Some(i);
                                dims.push(1);
                            } else if w == 0 {
                                dims.push(*c0.dims.get(i).unwrap_or(&0));
                            } else if w > 0 {
                                dims.push(w as usize);
                            } else {
                                return err(format!("reshape to {want:?}"));
                            }
                        }
                        if let Some(i) = infer {
                            let rest: usize = dims.iter().product();
                            if rest == 0 {
                                return err(format!("reshape to {want:?}"));
                            }
                            dims[i] = c0.len() / rest;
                        }
                        dims
                    }
                    _ => vec![c0.len()],
                };
                if dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) != Some(c0.len()) {
                    return err(format!("reshape of {} values to {dims:?}", c0.len()));
                }
                Ok(Const {
                    dims,
                    data: c0.data,
                })
            }
            "Concat" => {
                let mut all_int = true;
                let mut parts = Vec::new();
                for k in 0..self.node.input.len() {
                    let c = self.konst(k)?;
                    if c.dims.len() > 1 {
                        return err(
                            "folding a concatenation of tensors of rank > 1 is not supported",
                        );
                    }
                    all_int &= matches!(c.data, Data::I(_));
                    parts.push(c);
                }
                let n: usize = parts.iter().map(Const::len).sum();
                if all_int {
                    let v: Vec<i64> = parts.iter().flat_map(Const::ints).collect();
                    Ok(Const {
                        dims: vec![n],
                        data: Data::I(v),
                    })
                } else {
                    let v: Vec<f32> = parts.iter().flat_map(Const::floats).collect();
                    Ok(Const {
                        dims: vec![n],
                        data: Data::F(v),
                    })
                }
            }
            "Gather" => {
                if c0.dims.len() > 1 {
                    return err("folding Gather on a tensor of rank > 1 is not supported");
                }
                let idx = self.konst(1)?;
                let len = c0.len() as i64;
                let mut out_i = Vec::new();
                let mut out_f = Vec::new();
                for &i in &idx.ints() {
                    let j = if i < 0 { i + len } else { i };
                    if !(0..len).contains(&j) {
                        return err(format!("index {i} out of {len}"));
                    }
                    match &c0.data {
                        Data::I(v) => out_i.push(v[j as usize]),
                        Data::F(v) => out_f.push(v[j as usize]),
                    }
                }
                let dims = idx.dims.clone();
                Ok(match c0.data {
                    Data::I(_) => Const {
                        dims,
                        data: Data::I(out_i),
                    },
                    Data::F(_) => Const {
                        dims,
                        data: Data::F(out_f),
                    },
                })
            }
            "Slice" => {
                let starts = ints_of(1)?;
                let ends = ints_of(2)?;
                let rank = c0.dims.len();
                let axes = match self.opt_input(3)? {
                    Some(_) => ints_of(3)?,
                    None => (0..starts.len() as i64).collect(),
                };
                let steps = match self.opt_input(4)? {
                    Some(_) => ints_of(4)?,
                    None => vec![1; starts.len()],
                };
                if ends.len() != starts.len()
                    || axes.len() != starts.len()
                    || steps.len() != starts.len()
                {
                    return err("slice bounds of different lengths");
                }
                // The kept indices along each axis.
                let mut keep: Vec<Vec<usize>> = c0.dims.iter().map(|&d| (0..d).collect()).collect();
                for k in 0..starts.len() {
                    let a = if axes[k] < 0 {
                        axes[k] + rank as i64
                    } else {
                        axes[k]
                    };
                    if !(0..rank as i64).contains(&a) {
                        return err(format!("slice axis {}", axes[k]));
                    }
                    let len = c0.dims[a as usize] as i64;
                    let sp = steps[k];
                    if sp == 0 {
                        return err("slice step 0");
                    }
                    let norm = |v: i64| if v < 0 { v.saturating_add(len) } else { v };
                    let mut idx = Vec::new();
                    if sp > 0 {
                        let (mut i, e) =
                            (norm(starts[k]).clamp(0, len), norm(ends[k]).clamp(0, len));
                        while i < e {
                            idx.push(i as usize);
                            i += sp;
                        }
                    } else {
                        let (mut i, e) = (
                            norm(starts[k]).clamp(-1, len - 1),
                            norm(ends[k]).clamp(-1, len - 1),
                        );
                        while i > e {
                            idx.push(i as usize);
                            i += sp;
                        }
                    }
                    keep[a as usize] = idx;
                }
                let dims: Vec<usize> = keep.iter().map(Vec::len).collect();
                let n: usize = dims.iter().product();
                // Row-major strides of the source.
                let mut stride = vec![1usize; rank];
                for i in (0..rank.saturating_sub(1)).rev() {
                    stride[i] = stride[i + 1] * c0.dims[i + 1];
                }
                let mut src = Vec::with_capacity(n);
                for flat in 0..n {
                    let (mut rest, mut at) = (flat, 0);
                    for i in (0..rank).rev() {
                        at += keep[i][rest % dims[i]] * stride[i];
                        rest /= dims[i];
                    }
                    src.push(at);
                }
                Ok(match c0.data {
                    Data::I(v) => Const {
                        dims,
                        data: Data::I(src.iter().map(|&i| v[i]).collect()),
                    },
                    Data::F(v) => Const {
                        dims,
                        data: Data::F(src.iter().map(|&i| v[i]).collect()),
                    },
                })
            }
            "Transpose" => {
                // Only 2-D tensors arise in PyTorch's pad arithmetic.
                let perm = self.ints("perm");
                match c0.dims.len() {
                    0 | 1 => Ok(c0),
                    2 if perm.as_deref() == Some(&[0, 1]) => Ok(c0),
                    2 if perm.as_deref().is_none_or(|p| p == [1, 0]) => {
                        let (r, c) = (c0.dims[0], c0.dims[1]);
                        let pick = |i: usize| (i % r) * c + i / r;
                        Ok(match &c0.data {
                            Data::I(v) => Const {
                                dims: vec![c, r],
                                data: Data::I((0..r * c).map(|i| v[pick(i)]).collect()),
                            },
                            Data::F(v) => Const {
                                dims: vec![c, r],
                                data: Data::F((0..r * c).map(|i| v[pick(i)]).collect()),
                            },
                        })
                    }
                    _ => err("folding a transpose of rank > 2 is not supported"),
                }
            }
            "ConstantOfShape" => {
                let dims: Vec<usize> = c0.ints().iter().map(|&d| d.max(0) as usize).collect();
                let n = dims
                    .iter()
                    .try_fold(1usize, |a, &d| a.checked_mul(d))
                    .filter(|&n| n <= MAX_CONST_ELEMENTS)
                    .ok_or_else(|| OnnxImportError("too large".into()))?;
                let value = self
                    .attr("value")
                    .and_then(|a| a.t.as_ref())
                    .map(tensor_const)
                    .transpose()?;
                Ok(match value.map(|v| v.data) {
                    Some(Data::F(v)) => Const {
                        dims,
                        data: Data::F(vec![v.first().copied().unwrap_or(0.0); n]),
                    },
                    Some(Data::I(v)) => Const {
                        dims,
                        data: Data::I(vec![v.first().copied().unwrap_or(0); n]),
                    },
                    None => Const {
                        dims,
                        data: Data::F(vec![0.0; n]),
                    },
                })
            }
            "Add" | "Sub" | "Mul" | "Div" => {
                let c1 = self.konst(1)?;
                let (a, b) = (c0, c1);
                let n = a.len().max(b.len());
                if a.len() == 0 || b.len() == 0 {
                    return err("folding arithmetic on an empty constant is not supported");
                }
                if !(a.len() == b.len() || a.len() == 1 || b.len() == 1) {
                    return err(
                        "folding a broadcast of constants of different shapes is not supported",
                    );
                }
                let dims = if a.len() >= b.len() {
                    a.dims.clone()
                } else {
                    b.dims.clone()
                };
                if let (Data::I(x), Data::I(y)) = (&a.data, &b.data) {
                    let mut v = Vec::with_capacity(n);
                    for i in 0..n {
                        let (p, q) = (x[i % x.len()], y[i % y.len()]);
                        v.push(
                            match op {
                                "Add" => p.checked_add(q),
                                "Sub" => p.checked_sub(q),
                                "Mul" => p.checked_mul(q),
                                _ => p.checked_div_euclid(q),
                            }
                            .ok_or_else(|| {
                                OnnxImportError("integer overflow or division by zero".into())
                            })?,
                        );
                    }
                    Ok(Const {
                        dims,
                        data: Data::I(v),
                    })
                } else {
                    let (x, y) = (a.floats(), b.floats());
                    let v = (0..n)
                        .map(|i| {
                            let (p, q) = (x[i % x.len()], y[i % y.len()]);
                            match op {
                                "Add" => p + q,
                                "Sub" => p - q,
                                "Mul" => p * q,
                                _ => p / q,
                            }
                        })
                        .collect();
                    Ok(Const {
                        dims,
                        data: Data::F(v),
                    })
                }
            }
            "Floor" | "Ceil" => {
                let f = if op == "Floor" { f32::floor } else { f32::ceil };
                Ok(Const {
                    dims: c0.dims.clone(),
                    data: match c0.data {
                        Data::F(v) => Data::F(v.into_iter().map(f).collect()),
                        d @ Data::I(_) => d,
                    },
                })
            }
            other => err(format!(
                "folding the constant operator {other} is not supported"
            )),
        }
    }
}

/// Keras's total 'same' padding along one axis.
fn same_total(len: i64, k: i64, s: i64, d: i64) -> i64 {
    let out = (len + s - 1) / s;
    ((out - 1) * s + (k - 1) * d + 1 - len).max(0)
}
