//! ONNX export: `unetc export SPEC --to onnx --weights W` (or `--random-weights`) writes an ONNX
//! model (opset 17, IR version 8) of the network with its weights, for Netron and onnxruntime.
//!
//! - The model takes and returns NHWC tensors, as Keras and unetc do. One `Transpose` after each
//!   image input turns NHWC into NCHW, the body runs in NCHW with ONNX's own operators, and one
//!   `Transpose` before each image output turns it back. Tensors that are not images (after
//!   `Flatten`, `Dense` on vectors, `GlobalAveragePooling2D`) keep Keras's layout; a `Flatten` of
//!   an image first transposes back to NHWC, because Keras flattens in NHWC order.
//! - Every node that computes a layer is named after the Keras layer; helper nodes are named
//!   `<layer>/<what>`. Initializers are named `<layer>/<variable>` in ONNX's layouts (Conv kernel
//!   OIHW, ConvTranspose kernel IOHW, a Dense kernel `[in, out]` for MatMul/Gemm or `[out, in, 1, 1]`
//!   when the Dense acts on an image and runs as a 1x1 Conv). Graph inputs and outputs are named
//!   after the input and output layers; the batch dimension is the symbol `N`.
//! - Keras's padding rules are written out as explicit `pads`: `same` convolutions and poolings put
//!   the odd pixel at the bottom/right, and a Conv2DTranspose's cropping and appended rows become
//!   ConvTranspose `pads` and `output_padding`.
//!
//! The protobuf encoding is written here (a varint/length-delimited writer for the few messages an
//! ONNX model needs; field numbers from onnx.proto), so nothing is needed at build time.

use crate::exec::cpu::kernels::ResizeAxis;
use crate::exec::cpu::WeightSource;
use crate::infer::Inferred;
use crate::ir::ops::{
    ActivationFn, AttentionDims, Average, AxisRead, ImageReduceFn, ImageResize, Interpolation,
    LambdaBody, Maximum, MergeFn, Minimum, Multiply, NormLayout, Normalization, PadMode, ReduceFn,
    ScalarFn, Subtract, SwinTransformerBlock, TensorOperand, TfCompute, VolumeInterpolation,
    WindowGeometry, ZeroPadding2D,
};
use crate::ir::{Graph, NodeId, Op};
use std::collections::HashSet;

/// The ONNX operator set the export targets (default domain).
pub const OPSET: i64 = 17;
/// The ONNX IR version of the file (IR 8 goes with opsets up to 18).
pub const IR_VERSION: i64 = 8;

// ---------------------------------------------------------------------------------------------
// Protobuf writer
// ---------------------------------------------------------------------------------------------

/// A protobuf message under construction.
#[derive(Default)]
struct Pb {
    buf: Vec<u8>,
}

impl Pb {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    fn key(&mut self, field: u32, wire: u32) {
        self.varint(u64::from((field << 3) | wire));
    }

    /// An `int32`/`int64`/enum field (negative values as 10-byte varints, as protobuf does).
    fn int(&mut self, field: u32, v: i64) {
        self.key(field, 0);
        self.varint(v as u64);
    }

    fn float(&mut self, field: u32, v: f32) {
        self.key(field, 5);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    fn bytes(&mut self, field: u32, b: &[u8]) {
        self.key(field, 2);
        self.varint(b.len() as u64);
        self.buf.extend_from_slice(b);
    }

    fn string(&mut self, field: u32, s: &str) {
        self.bytes(field, s.as_bytes());
    }

    fn message(&mut self, field: u32, m: &Pb) {
        self.bytes(field, &m.buf);
    }
}

// Field numbers (onnx.proto).
mod field {
    pub const MODEL_IR_VERSION: u32 = 1;
    pub const MODEL_PRODUCER_NAME: u32 = 2;
    pub const MODEL_PRODUCER_VERSION: u32 = 3;
    pub const MODEL_DOC_STRING: u32 = 6;
    pub const MODEL_GRAPH: u32 = 7;
    pub const MODEL_OPSET_IMPORT: u32 = 8;
    pub const OPSET_DOMAIN: u32 = 1;
    pub const OPSET_VERSION: u32 = 2;
    pub const GRAPH_NODE: u32 = 1;
    pub const GRAPH_NAME: u32 = 2;
    pub const GRAPH_INITIALIZER: u32 = 5;
    pub const GRAPH_DOC_STRING: u32 = 10;
    pub const GRAPH_INPUT: u32 = 11;
    pub const GRAPH_OUTPUT: u32 = 12;
    pub const GRAPH_VALUE_INFO: u32 = 13;
    pub const NODE_INPUT: u32 = 1;
    pub const NODE_OUTPUT: u32 = 2;
    pub const NODE_NAME: u32 = 3;
    pub const NODE_OP_TYPE: u32 = 4;
    pub const NODE_ATTRIBUTE: u32 = 5;
    pub const ATTR_NAME: u32 = 1;
    pub const ATTR_F: u32 = 2;
    pub const ATTR_I: u32 = 3;
    pub const ATTR_S: u32 = 4;
    pub const ATTR_INTS: u32 = 8;
    pub const ATTR_TYPE: u32 = 20;
    pub const TENSOR_DIMS: u32 = 1;
    pub const TENSOR_DATA_TYPE: u32 = 2;
    pub const TENSOR_NAME: u32 = 8;
    pub const TENSOR_RAW_DATA: u32 = 9;
    pub const VALUE_NAME: u32 = 1;
    pub const VALUE_TYPE: u32 = 2;
    pub const TYPE_TENSOR: u32 = 1;
    pub const TYPE_TENSOR_ELEM_TYPE: u32 = 1;
    pub const TYPE_TENSOR_SHAPE: u32 = 2;
    pub const SHAPE_DIM: u32 = 1;
    pub const DIM_VALUE: u32 = 1;
    pub const DIM_PARAM: u32 = 2;
}

// AttributeProto.AttributeType and TensorProto.DataType values.
const ATTR_FLOAT: i64 = 1;
const ATTR_INT: i64 = 2;
const ATTR_STRING: i64 = 3;
const ATTR_INTS: i64 = 7;
const DT_FLOAT: i64 = 1;
const DT_INT64: i64 = 7;

/// The symbolic batch dimension.
const BATCH: &str = "N";

// ---------------------------------------------------------------------------------------------
// The ONNX graph as plain data
// ---------------------------------------------------------------------------------------------

enum Attr {
    Int(i64),
    Float(f32),
    Ints(Vec<i64>),
    Str(&'static str),
}

struct OnnxNode {
    name: String,
    op_type: &'static str,
    inputs: Vec<String>,
    outputs: Vec<String>,
    attrs: Vec<(&'static str, Attr)>,
}

enum Data {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

struct Initializer {
    name: String,
    dims: Vec<i64>,
    data: Data,
}

/// A value's declared type: f32 with these dimensions (`None` is the batch symbol).
struct ValueInfo {
    name: String,
    dims: Vec<Option<i64>>,
}

fn encode_attr(name: &str, value: &Attr) -> Pb {
    let mut a = Pb::default();
    a.string(field::ATTR_NAME, name);
    match value {
        Attr::Int(i) => {
            a.int(field::ATTR_TYPE, ATTR_INT);
            a.int(field::ATTR_I, *i);
        }
        Attr::Float(f) => {
            a.int(field::ATTR_TYPE, ATTR_FLOAT);
            a.float(field::ATTR_F, *f);
        }
        Attr::Ints(v) => {
            a.int(field::ATTR_TYPE, ATTR_INTS);
            for &i in v {
                a.int(field::ATTR_INTS, i);
            }
        }
        Attr::Str(s) => {
            a.int(field::ATTR_TYPE, ATTR_STRING);
            a.string(field::ATTR_S, s);
        }
    }
    a
}

fn encode_node(n: &OnnxNode) -> Pb {
    let mut p = Pb::default();
    for i in &n.inputs {
        p.string(field::NODE_INPUT, i);
    }
    for o in &n.outputs {
        p.string(field::NODE_OUTPUT, o);
    }
    p.string(field::NODE_NAME, &n.name);
    p.string(field::NODE_OP_TYPE, n.op_type);
    for (name, value) in &n.attrs {
        p.message(field::NODE_ATTRIBUTE, &encode_attr(name, value));
    }
    p
}

fn encode_tensor(t: &Initializer) -> Pb {
    let mut p = Pb::default();
    for &d in &t.dims {
        p.int(field::TENSOR_DIMS, d);
    }
    let raw: Vec<u8> = match &t.data {
        Data::F32(v) => {
            p.int(field::TENSOR_DATA_TYPE, DT_FLOAT);
            v.iter().flat_map(|x| x.to_le_bytes()).collect()
        }
        Data::I64(v) => {
            p.int(field::TENSOR_DATA_TYPE, DT_INT64);
            v.iter().flat_map(|x| x.to_le_bytes()).collect()
        }
    };
    p.string(field::TENSOR_NAME, &t.name);
    p.bytes(field::TENSOR_RAW_DATA, &raw);
    p
}

fn encode_value_info(v: &ValueInfo) -> Pb {
    let mut shape = Pb::default();
    for d in &v.dims {
        let mut dim = Pb::default();
        match d {
            Some(n) => dim.int(field::DIM_VALUE, *n),
            None => dim.string(field::DIM_PARAM, BATCH),
        }
        shape.message(field::SHAPE_DIM, &dim);
    }
    let mut tensor = Pb::default();
    tensor.int(field::TYPE_TENSOR_ELEM_TYPE, DT_FLOAT);
    tensor.message(field::TYPE_TENSOR_SHAPE, &shape);
    let mut ty = Pb::default();
    ty.message(field::TYPE_TENSOR, &tensor);
    let mut p = Pb::default();
    p.string(field::VALUE_NAME, &v.name);
    p.message(field::VALUE_TYPE, &ty);
    p
}

// ---------------------------------------------------------------------------------------------
// Export
// ---------------------------------------------------------------------------------------------

/// Keras's `selu` constants.
const SELU_ALPHA: f32 = 1.673_263_2;
const SELU_SCALE: f32 = 1.050_701;

struct Exporter<'a> {
    graph: &'a Graph,
    info: &'a Inferred,
    weights: &'a dyn WeightSource,
    nodes: Vec<OnnxNode>,
    initializers: Vec<Initializer>,
    value_info: Vec<ValueInfo>,
    inputs: Vec<ValueInfo>,
    outputs: Vec<ValueInfo>,
    /// Per layer: the ONNX value that holds its output in the body's layout.
    values: Vec<String>,
    /// Weight problems (missing, misshaped), reported together.
    problems: Vec<String>,
}

/// The ONNX model (serialized `ModelProto`) of a checked graph with its weights.
///
/// `weights` holds `<layer>/<variable>` tensors in Keras layouts, as
/// [`crate::io::weights::load_weights`] and [`crate::runner::init_weights`] give them. Every
/// missing or misshaped tensor is reported in one error.
pub fn export_onnx(
    graph: &Graph,
    info: &Inferred,
    weights: &dyn WeightSource,
) -> Result<Vec<u8>, String> {
    if graph.inputs.is_empty() || graph.outputs.is_empty() {
        return Err("the model has no input or no output".into());
    }
    let mut e = Exporter {
        graph,
        info,
        weights,
        nodes: Vec::new(),
        initializers: Vec::new(),
        value_info: Vec::new(),
        inputs: Vec::new(),
        outputs: Vec::new(),
        values: graph.nodes.iter().map(|n| n.name.clone()).collect(),
        problems: Vec::new(),
    };
    e.build()?;
    if !e.problems.is_empty() {
        return Err(format!(
            "the weights do not fit the model:\n  {}",
            e.problems.join("\n  ")
        ));
    }
    let bytes = e.encode();
    if bytes.len() > i32::MAX as usize {
        return Err(format!(
            "the model is {} bytes, more than protobuf's 2 GiB limit of one ONNX file",
            bytes.len()
        ));
    }
    Ok(bytes)
}

/// Keras axis (batch is 0; negative from the end) of a tensor whose per-item shape has `rank`
/// dimensions, as the axis of the ONNX tensor (NCHW for images).
fn onnx_axis(axis: i64, rank: usize, image: bool) -> i64 {
    let full = rank as i64 + 1;
    let a = if axis < 0 { full + axis } else { axis };
    if image {
        // The channels move to axis 1, the spatial axes one up.
        if a == rank as i64 {
            1
        } else {
            a + 1
        }
    } else {
        a
    }
}

/// Whether a value of this per-item rank runs channels first in the body: images
/// `[H, W, C]` (NCHW) and volumes `[D, H, W, C]` (NCDHW).
fn channels_first(rank: usize) -> bool {
    rank == 3 || rank == 4
}

/// The Transpose `perm` from Keras's channels-last layout to the body's channels-first one.
fn to_channels_first(rank: usize) -> Vec<i64> {
    let mut perm = vec![0, rank as i64];
    perm.extend(1..rank as i64);
    perm
}

/// The Transpose `perm` from the body's channels-first layout back to channels last.
fn to_channels_last(rank: usize) -> Vec<i64> {
    let mut perm = vec![0];
    perm.extend(2..=rank as i64);
    perm.push(1);
    perm
}

/// ONNX `pads` (`[top, left, bottom, right]`) of a sliding window over an input of `[h, w]`
/// rows and columns to an output starting `[oh, ow, ..]`, from the layer's own geometry.
fn window_pads(
    geometry: impl Fn(usize, usize, usize) -> WindowGeometry,
    [h, w]: [i64; 2],
    out_shape: &[i64],
) -> [i64; 4] {
    let mut pads = [0i64; 4];
    for (axis, n) in [h, w].into_iter().enumerate() {
        let g = geometry(axis, n as usize, out_shape[axis] as usize);
        pads[axis] = g.pad_before as i64;
        pads[axis + 2] = g.pad_after as i64;
    }
    pads
}

/// A Conv node's window and groups (ONNX attributes).
struct ConvWindow {
    kernel_size: [i64; 2],
    strides: [i64; 2],
    dilation_rate: [i64; 2],
    pads: [i64; 4],
    groups: i64,
}

impl Exporter<'_> {
    /// The initializer `<layer>/<var>` of a convolution kernel given in Keras's HWIO layout
    /// `[kh, kw, c / groups, f]`, transposed to ONNX's OIHW; its name. A transposed convolution's
    /// `[kh, kw, out, in]` comes out as ONNX's `[in, out, kh, kw]` the same way.
    fn conv_kernel(&mut self, id: NodeId, var: &str, hwio: [i64; 4]) -> String {
        let kernel_name = self.graph.weight_name(id, var);
        if let Some(k) = self.weight(id, var) {
            let [kh, kw, c, f] = hwio.map(|d| d as usize);
            let mut oihw = vec![0.0f32; k.len()];
            for ky in 0..kh {
                for kx in 0..kw {
                    for ci in 0..c {
                        for o in 0..f {
                            oihw[((o * c + ci) * kh + ky) * kw + kx] =
                                k[((ky * kw + kx) * c + ci) * f + o];
                        }
                    }
                }
            }
            self.init_f32(
                kernel_name.clone(),
                vec![hwio[3], hwio[2], hwio[0], hwio[1]],
                oihw,
            );
        }
        kernel_name
    }

    /// [`Self::conv_kernel`] for a 3-D kernel `[kd, kh, kw, c, f]`, to ONNX's `[f, c, kd, kh, kw]`
    /// (a Conv3DTranspose's `[kd, kh, kw, out, in]` to `[in, out, kd, kh, kw]` the same way).
    fn conv_kernel3d(&mut self, id: NodeId, dhwio: [i64; 5]) -> String {
        let kernel_name = format!("{}/kernel", self.graph.node(id).name);
        if let Some(k) = self.weight(id, "kernel") {
            let taps = (dhwio[0] * dhwio[1] * dhwio[2]) as usize;
            let [c, f] = [dhwio[3] as usize, dhwio[4] as usize];
            let mut oidhw = vec![0.0f32; k.len()];
            for t in 0..taps {
                for ci in 0..c {
                    for o in 0..f {
                        oidhw[(o * c + ci) * taps + t] = k[(t * c + ci) * f + o];
                    }
                }
            }
            self.init_f32(
                kernel_name.clone(),
                vec![dhwio[4], dhwio[3], dhwio[0], dhwio[1], dhwio[2]],
                oidhw,
            );
        }
        kernel_name
    }

    /// ONNX `pads` (`[front, top, left, back, bottom, right]`) of a 3-D sliding window.
    fn window_pads3d(
        geometry: impl Fn(usize, usize, usize) -> WindowGeometry,
        input: &[i64],
        out_shape: &[i64],
    ) -> Vec<i64> {
        let mut pads = vec![0i64; 6];
        for axis in 0..3 {
            let g = geometry(axis, input[axis] as usize, out_shape[axis] as usize);
            pads[axis] = g.pad_before as i64;
            pads[axis + 3] = g.pad_after as i64;
        }
        pads
    }

    fn conv_node(&mut self, name: String, inputs: Vec<String>, out: String, window: ConvWindow) {
        let mut attrs = vec![
            ("kernel_shape", Attr::Ints(window.kernel_size.to_vec())),
            ("strides", Attr::Ints(window.strides.to_vec())),
            ("dilations", Attr::Ints(window.dilation_rate.to_vec())),
            ("pads", Attr::Ints(window.pads.to_vec())),
        ];
        // ONNX's default is 1; ungrouped convolutions export as before.
        if window.groups != 1 {
            attrs.push(("group", Attr::Int(window.groups)));
        }
        self.node(name, "Conv", inputs, out, attrs);
    }

    fn shape(&self, id: NodeId) -> Result<&[i64], String> {
        self.info.layers[id.index()]
            .shape
            .as_deref()
            .ok_or_else(|| {
                format!(
                    "the shape of `{}` is unknown: the spec has errors; run `unetc check` on it",
                    self.graph.node(id).name
                )
            })
    }

    /// The ONNX dimensions of a layer's output in the body (NCHW for images).
    fn body_dims(shape: &[i64]) -> Vec<Option<i64>> {
        let mut dims = vec![None];
        if let [spatial @ .., c] = shape {
            if channels_first(shape.len()) {
                dims.push(Some(*c));
                dims.extend(spatial.iter().map(|&d| Some(d)));
                return dims;
            }
        }
        {
            dims.extend(shape.iter().map(|&d| Some(d)));
        }
        dims
    }

    fn keras_dims(shape: &[i64]) -> Vec<Option<i64>> {
        let mut dims = vec![None];
        dims.extend(shape.iter().map(|&d| Some(d)));
        dims
    }

    fn node(
        &mut self,
        name: impl Into<String>,
        op_type: &'static str,
        inputs: Vec<String>,
        output: impl Into<String>,
        attrs: Vec<(&'static str, Attr)>,
    ) {
        self.nodes.push(OnnxNode {
            name: name.into(),
            op_type,
            inputs,
            outputs: vec![output.into()],
            attrs,
        });
    }

    fn init_f32(&mut self, name: String, dims: Vec<i64>, data: Vec<f32>) -> String {
        if self.initializers.iter().any(|t| t.name == name) {
            // A shared layer's later call: its first call made the initializer.
            return name;
        }
        self.initializers.push(Initializer {
            name: name.clone(),
            dims,
            data: Data::F32(data),
        });
        name
    }

    /// A rank-0 int64 (Gather by it drops the axis).
    fn init_i64_scalar(&mut self, name: String, value: i64) -> String {
        self.initializers.push(Initializer {
            name: name.clone(),
            dims: vec![],
            data: Data::I64(vec![value]),
        });
        name
    }

    fn init_i64(&mut self, name: String, data: Vec<i64>) -> String {
        self.initializers.push(Initializer {
            name: name.clone(),
            dims: vec![data.len() as i64],
            data: Data::I64(data),
        });
        name
    }

    /// ZeroPadding2D (and tf.pad) of an NCHW image of `[h, w]`: ONNX's Pad, or for the
    /// symmetric mirror (which Pad lacks) each axis as the concatenation of its first `before`
    /// rows reversed, the rows, and its last `after` rows reversed (negative-step Slices).
    fn pad_image(
        &mut self,
        name: String,
        x: String,
        out: String,
        op: &ZeroPadding2D,
        [h, w]: [i64; 2],
    ) {
        let [t, b, l, r] = op.padding;
        let mode = match op.mode {
            PadMode::Zeros => "constant",
            PadMode::Reflect => "reflect",
            PadMode::Replicate => "edge",
            PadMode::Symmetric => {
                // The last node carries the layer's name.
                let rows = format!("{name}/rows");
                let h_part = format!("{name}/h");
                self.mirror_axis(&h_part, h_part.clone(), x, rows.clone(), (2, h), [t, b]);
                self.mirror_axis(&format!("{name}/w"), name, rows, out, (3, w), [l, r]);
                return;
            }
        };
        let pads = self.init_i64(format!("{name}/pads"), vec![0, 0, t, l, 0, 0, b, r]);
        self.node(
            name,
            "Pad",
            vec![x, pads],
            out,
            vec![("mode", Attr::Str(mode))],
        );
    }

    /// `x` padded along `axis` (of `n`) by its own first `before` and last `after` positions,
    /// each reversed: the symmetric mirror; `node` names the Concat, `name` prefixes the rest.
    fn mirror_axis(
        &mut self,
        name: &str,
        node: String,
        x: String,
        out: String,
        (axis, n): (i64, i64),
        pad: [i64; 2],
    ) {
        let mut parts = Vec::new();
        let [before, after] = pad;
        // A backward Slice from `start` to before `end` (`-n - 1`: through position 0).
        let slice = |this: &mut Self, what: &str, start: i64, end: i64| {
            let starts = this.init_i64(format!("{name}/{what}/starts"), vec![start]);
            let ends = this.init_i64(format!("{name}/{what}/ends"), vec![end]);
            let axes = this.init_i64(format!("{name}/{what}/axes"), vec![axis]);
            let steps = this.init_i64(format!("{name}/{what}/steps"), vec![-1]);
            let part = format!("{name}/{what}");
            this.node(
                part.clone(),
                "Slice",
                vec![x.clone(), starts, ends, axes, steps],
                part.clone(),
                vec![],
            );
            part
        };
        if before > 0 {
            let part = slice(self, "before", before - 1, -n - 1);
            parts.push(part);
        }
        parts.push(x.clone());
        if after > 0 {
            let end = n - 1 - after;
            let part = slice(self, "after", n - 1, if end < 0 { -n - 1 } else { end });
            parts.push(part);
        }
        self.node(node, "Concat", parts, out, vec![("axis", Attr::Int(axis))]);
    }

    /// An NCHW Resize from `[h, w]` to `[oh, ow]`: by whole factors as `scales` (what
    /// UpSampling2D writes), bilinear to any other size as `sizes` (batch and channels from the
    /// input's shape), sampling as TensorFlow's resize; nearest by other ratios as two Gathers
    /// of the rows and columns TensorFlow picks.
    fn resize_image(
        &mut self,
        name: String,
        x: String,
        out: String,
        op: ImageResize,
        [h, w]: [i64; 2],
        [oh, ow]: [i64; 2],
    ) {
        let whole = h > 0 && w > 0 && oh % h == 0 && ow % w == 0;
        if op.interpolation == Interpolation::Nearest && !whole {
            // Nearest by a ratio picks TensorFlow's rows and columns: Resize's
            // tf_half_pixel_for_nn divides by out/in where TensorFlow multiplies by in/out, and
            // picks a neighbour where the two round apart (one row in 41 from 2, say).
            let picks = |n: i64, out: i64| {
                let axis = ResizeAxis::new(n.max(1) as usize, out.max(1) as usize, false);
                (0..out.max(1) as usize)
                    .map(|o| axis.nearest(o) as i64)
                    .collect::<Vec<_>>()
            };
            let rows = self.init_i64(format!("{name}/rows"), picks(h, oh));
            let cols = self.init_i64(format!("{name}/cols"), picks(w, ow));
            let picked = format!("{name}/rows_picked");
            self.node(
                picked.clone(),
                "Gather",
                vec![x, rows],
                picked.clone(),
                vec![("axis", Attr::Int(2))],
            );
            self.node(
                name,
                "Gather",
                vec![picked, cols],
                out,
                vec![("axis", Attr::Int(3))],
            );
            return;
        }
        let (mode, transform) = match (op.interpolation, op.align_corners) {
            (Interpolation::Bilinear, true) => ("linear", "align_corners"),
            (Interpolation::Bilinear, false) => ("linear", "half_pixel"),
            // floor(o / s) by a whole factor s (other ratios gather above).
            (Interpolation::Nearest, _) => ("nearest", "asymmetric"),
        };
        let mut attrs = vec![
            ("mode", Attr::Str(mode)),
            ("coordinate_transformation_mode", Attr::Str(transform)),
        ];
        if mode == "nearest" {
            attrs.push(("nearest_mode", Attr::Str("floor")));
        }
        let inputs = if whole {
            let scales = self.init_f32(
                format!("{name}/scales"),
                vec![4],
                vec![1.0, 1.0, (oh / h) as f32, (ow / w) as f32],
            );
            vec![x, String::new(), scales]
        } else {
            let shape = format!("{name}/shape");
            self.node(
                shape.clone(),
                "Shape",
                vec![x.clone()],
                shape.clone(),
                vec![],
            );
            let starts = self.init_i64(format!("{name}/nc/starts"), vec![0]);
            let ends = self.init_i64(format!("{name}/nc/ends"), vec![2]);
            let nc = format!("{name}/nc");
            self.node(
                nc.clone(),
                "Slice",
                vec![shape, starts, ends],
                nc.clone(),
                vec![],
            );
            let hw = self.init_i64(format!("{name}/hw"), vec![oh, ow]);
            let sizes = format!("{name}/sizes");
            self.node(
                sizes.clone(),
                "Concat",
                vec![nc, hw],
                sizes.clone(),
                vec![("axis", Attr::Int(0))],
            );
            vec![x, String::new(), String::new(), sizes]
        };
        self.node(name, "Resize", inputs, out, attrs);
    }

    /// Reshape (or, with `permute`'s Keras dims, Transpose) in Keras's NHWC order: an image
    /// goes back to NHWC first, and an image result returns to NCHW after.
    fn in_keras_order(
        &mut self,
        name: String,
        x: String,
        out: String,
        in_shape: &[i64],
        out_shape: &[i64],
        permute: Option<&[i64]>,
    ) {
        let image = channels_first(out_shape.len());
        let mut input = x;
        if in_shape.len() == 3 {
            let nhwc = format!("{name}/nhwc");
            self.node(
                nhwc.clone(),
                "Transpose",
                vec![input],
                nhwc.clone(),
                vec![("perm", Attr::Ints(vec![0, 2, 3, 1]))],
            );
            input = nhwc;
        }
        let result = if image {
            format!("{name}/nhwc_out")
        } else {
            out.clone()
        };
        if let Some(dims) = permute {
            let perm: Vec<i64> = std::iter::once(0).chain(dims.iter().copied()).collect();
            self.node(
                name.clone(),
                "Transpose",
                vec![input],
                result.clone(),
                vec![("perm", Attr::Ints(perm))],
            );
        } else {
            // 0 keeps the batch dimension (ONNX Reshape's allowzero = 0).
            let dims: Vec<i64> = std::iter::once(0)
                .chain(out_shape.iter().copied())
                .collect();
            let shape = self.init_i64(format!("{name}/shape"), dims);
            self.node(
                name.clone(),
                "Reshape",
                vec![input, shape],
                result.clone(),
                vec![],
            );
        }
        if image {
            let nchw = format!("{name}/nchw");
            self.node(
                nchw,
                "Transpose",
                vec![result],
                out,
                vec![("perm", Attr::Ints(vec![0, 3, 1, 2]))],
            );
        }
    }

    /// `a + b * scale`, the product first as TensorFlow computes it (CustomScaleLayer and its
    /// Lambda form): a Mul node and the Add named `name`.
    fn scaled_add(&mut self, name: String, [a, b]: [String; 2], out: String, scale: f64) {
        let c = self.scalar(format!("{name}/scale"), scale as f32);
        let scaled = format!("{name}/scaled");
        self.node(
            format!("{name}/mul"),
            "Mul",
            vec![b, c],
            scaled.clone(),
            vec![],
        );
        self.node(name, "Add", vec![a, scaled], out, vec![]);
    }

    /// A TFOpLambda's constant tensor as an initializer of the body's layout: the batch axis
    /// and leading 1s up to a tensor of `rank` axes besides the batch, channels first for
    /// images and volumes.
    fn constant_operand(&mut self, name: &str, constant: &TensorOperand, rank: usize) -> String {
        let item = constant.item_shape(rank);
        let mut dims: Vec<usize> = vec![1; rank + 1 - item.len().min(rank)];
        dims.extend(item.iter().map(|&d| d.max(1) as usize));
        let values = &constant.values[..];
        let (dims, data) = if channels_first(rank) {
            // [1, p..., c] to [1, c, p...]: each channel's positions together.
            let c = dims[rank];
            let positions = values.len() / c.max(1);
            let mut chw = vec![0.0f32; values.len()];
            for p in 0..positions {
                for k in 0..c {
                    chw[k * positions + p] = values[p * c + k];
                }
            }
            let mut moved = vec![1, c];
            moved.extend(&dims[1..rank]);
            (moved, chw)
        } else {
            (dims, values.to_vec())
        };
        let dims = dims.iter().map(|&d| d as i64).collect();
        self.init_f32(format!("{name}/constant"), dims, data)
    }

    fn scalar(&mut self, name: String, v: f32) -> String {
        self.init_f32(name, Vec::new(), vec![v])
    }

    /// A weight tensor of layer `id` in Keras's layout, checked against the inferred shape.
    fn weight(&mut self, id: NodeId, var: &str) -> Option<Vec<f32>> {
        let spec = self.info.layers[id.index()]
            .weights
            .iter()
            .find(|w| w.name == var)?;
        let name = self.graph.weight_name(id, var);
        let want: Vec<usize> = spec.shape.iter().map(|&d| d as usize).collect();
        match self.weights.get(&name) {
            None => {
                self.problems
                    .push(format!("missing `{name}` (shape {want:?})"));
                None
            }
            Some(t) if t.shape != want => {
                self.problems.push(format!(
                    "`{name}` has shape {:?} but the model needs {want:?}",
                    t.shape
                ));
                None
            }
            Some(t) => {
                let node = self.graph.node(id);
                match crate::exec::constant_mismatch(&node.op, var, &name, &t.data) {
                    Some(problem) => {
                        self.problems.push(problem);
                        None
                    }
                    None => Some(t.data.clone()),
                }
            }
        }
    }

    /// A weight stored with other dims of the same row-major values (`[E, heads, dim]` as
    /// `[E, heads * dim]`).
    fn weight_as(&mut self, id: NodeId, var: &str, dims: Vec<i64>) -> Option<String> {
        let name = self.graph.weight_name(id, var);
        let data = self.weight(id, var)?;
        Some(self.init_f32(name, dims, data))
    }

    /// A node whose output value is named as the node (`at`); returns that name.
    fn value(
        &mut self,
        at: String,
        op_type: &'static str,
        inputs: Vec<String>,
        attrs: Vec<(&'static str, Attr)>,
    ) -> String {
        self.node(at.clone(), op_type, inputs, at.clone(), attrs);
        at
    }

    /// `x W + b` on the last axis (no Add where the layer has no bias).
    fn linear(
        &mut self,
        id: NodeId,
        at: &str,
        x: String,
        [kernel, bias]: [&str; 2],
        [n_in, units]: [usize; 2],
    ) -> String {
        let w = self
            .weight_as(id, kernel, vec![n_in as i64, units as i64])
            .unwrap_or_default();
        let product = self.value(format!("{at}/matmul"), "MatMul", vec![x, w], vec![]);
        match self.weight_as(id, bias, vec![units as i64]) {
            Some(b) => self.value(format!("{at}/add"), "Add", vec![product, b], vec![]),
            None => product,
        }
    }

    /// MultiHeadAttention: the projections, `softmax(q k^T)` per head (q scaled as Keras
    /// scales it) and the output projection. Image inputs become token lists
    /// `(N, H * W, C)` first, and the result an image again.
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &mut self,
        id: NodeId,
        name: &str,
        d: &AttentionDims,
        inputs: &[String],
        in_shapes: &[Vec<i64>],
        out_shape: &[i64],
        out: String,
    ) {
        let rank = in_shapes[0].len();
        let perm = |p: Vec<i64>| vec![("perm", Attr::Ints(p))];
        let tokens = |this: &mut Self, k: usize, x: &String| -> String {
            if !channels_first(rank) {
                return x.clone();
            }
            let mut last = vec![0];
            last.extend(2..=rank as i64);
            last.push(1);
            let nhwc = this.value(
                format!("{name}/in{k}/nhwc"),
                "Transpose",
                vec![x.clone()],
                perm(last),
            );
            let features = *in_shapes[k].last().unwrap_or(&1);
            let shape = this.init_i64(format!("{name}/in{k}/shape"), vec![0, -1, features]);
            this.value(
                format!("{name}/in{k}/tokens"),
                "Reshape",
                vec![nhwc, shape],
                vec![],
            )
        };
        let query = tokens(self, 0, &inputs[0]);
        let value = tokens(self, 1, &inputs[1]);
        let key = match inputs.get(2) {
            Some(k) => tokens(self, 2, k),
            None => value.clone(),
        };
        let (heads, kd, vd) = (d.heads as i64, d.key_dim as i64, d.value_dim as i64);
        let q = self.linear(
            id,
            &format!("{name}/query"),
            query,
            ["query/kernel", "query/bias"],
            [d.eq, d.hk()],
        );
        let scale = self.scalar(
            format!("{name}/scale"),
            crate::exec::cpu::attention::query_scale(d.key_dim),
        );
        let q = self.value(
            format!("{name}/query/scaled"),
            "Mul",
            vec![q, scale],
            vec![],
        );
        let k = self.linear(
            id,
            &format!("{name}/key"),
            key,
            ["key/kernel", "key/bias"],
            [d.ek, d.hk()],
        );
        let v = self.linear(
            id,
            &format!("{name}/value"),
            value,
            ["value/kernel", "value/bias"],
            [d.ev, d.hv()],
        );
        // (N, T, heads, dim), then heads before tokens.
        let split = |this: &mut Self, x: String, what: &str, dim: i64, order: Vec<i64>| {
            let shape = this.init_i64(
                format!("{name}/{what}/heads_shape"),
                vec![0, -1, heads, dim],
            );
            let four = this.value(
                format!("{name}/{what}/heads"),
                "Reshape",
                vec![x, shape],
                vec![],
            );
            this.value(
                format!("{name}/{what}/by_head"),
                "Transpose",
                vec![four],
                perm(order),
            )
        };
        let q = split(self, q, "query", kd, vec![0, 2, 1, 3]);
        let k = split(self, k, "key", kd, vec![0, 2, 3, 1]);
        let v = split(self, v, "value", vd, vec![0, 2, 1, 3]);
        let scores = self.value(format!("{name}/scores"), "MatMul", vec![q, k], vec![]);
        let weights = self.value(
            format!("{name}/softmax"),
            "Softmax",
            vec![scores],
            vec![("axis", Attr::Int(-1))],
        );
        let attended = self.value(
            format!("{name}/attended"),
            "MatMul",
            vec![weights, v],
            vec![],
        );
        let back = self.value(
            format!("{name}/attended/by_token"),
            "Transpose",
            vec![attended],
            perm(vec![0, 2, 1, 3]),
        );
        let shape = self.init_i64(format!("{name}/attended/shape"), vec![0, -1, d.hv() as i64]);
        let merged = self.value(
            format!("{name}/attended/merged"),
            "Reshape",
            vec![back, shape],
            vec![],
        );
        let y = self.linear(
            id,
            &format!("{name}/output"),
            merged,
            ["attention_output/kernel", "attention_output/bias"],
            [d.hv(), d.eo],
        );
        if channels_first(rank) {
            let dims: Vec<i64> = std::iter::once(0)
                .chain(out_shape.iter().copied())
                .collect();
            let shape = self.init_i64(format!("{name}/out/shape"), dims);
            let image = self.value(
                format!("{name}/out/nhwc"),
                "Reshape",
                vec![y, shape],
                vec![],
            );
            self.node(
                name.to_string(),
                "Transpose",
                vec![image],
                out,
                perm(to_channels_first(rank)),
            );
        } else {
            self.node(name.to_string(), "Identity", vec![y], out, vec![]);
        }
    }

    /// keras-unet-collection's SwinTransformerBlock on tokens `[N, L, C]`: the windows are
    /// gathered by one index (cyclic shift and partition), the heads taken from the fused qkv
    /// projection, the relative position bias gathered from its table by the position index and
    /// the mask added per window, and the outputs go back to their patches by the inverse index.
    fn swin_block(
        &mut self,
        id: NodeId,
        name: &str,
        op: &SwinTransformerBlock,
        x: String,
        out: String,
    ) {
        let g = op.geometry();
        let (l, c, n, windows) = (g.h * g.w, g.channels, g.window_tokens(), g.windows());
        let (heads, hd) = (g.heads as i64, g.head_dim() as i64);
        let v = |step: &str| format!("{name}/{step}");
        let i64s = |v: &[usize]| v.iter().map(|&x| x as i64).collect::<Vec<_>>();
        // Two-pass moments over the features, as TF computes them.
        let norm = |this: &mut Self, at: &str, x: String, [gamma, beta]: [&str; 2]| -> String {
            let at = format!("{name}/{at}");
            let reduce = || vec![("axes", Attr::Ints(vec![-1])), ("keepdims", Attr::Int(1))];
            let mean = this.value(
                format!("{at}/mean"),
                "ReduceMean",
                vec![x.clone()],
                reduce(),
            );
            let d = this.value(format!("{at}/centred"), "Sub", vec![x, mean], vec![]);
            let sq = this.value(
                format!("{at}/square"),
                "Mul",
                vec![d.clone(), d.clone()],
                vec![],
            );
            let var = this.value(format!("{at}/variance"), "ReduceMean", vec![sq], reduce());
            let eps = this.scalar(format!("{at}/epsilon"), op.norm_epsilon());
            let shifted = this.value(format!("{at}/var_eps"), "Add", vec![var, eps], vec![]);
            let std = this.value(format!("{at}/std"), "Sqrt", vec![shifted], vec![]);
            let xhat = this.value(format!("{at}/xhat"), "Div", vec![d, std], vec![]);
            let gamma = this.weight_as_is(id, gamma);
            let scaled = this.value(format!("{at}/scaled"), "Mul", vec![xhat, gamma], vec![]);
            let beta = this.weight_as_is(id, beta);
            this.value(format!("{at}/out"), "Add", vec![scaled, beta], vec![])
        };
        let normed = norm(self, "norm1", x.clone(), ["norm1/gamma", "norm1/beta"]);
        let order: Vec<usize> = (0..windows)
            .flat_map(|win| (0..n).map(move |t| g.source(win, t)))
            .collect();
        let mut inverse = vec![0; l];
        for (k, &p) in order.iter().enumerate() {
            inverse[p] = k;
        }
        let order = self.init_i64(v("window_order"), i64s(&order));
        let gathered = self.value(
            v("windows"),
            "Gather",
            vec![normed, order],
            vec![("axis", Attr::Int(1))],
        );
        let shape = self.init_i64(v("windows_shape"), vec![-1, n as i64, c as i64]);
        let windows_x = self.value(v("windows/rows"), "Reshape", vec![gathered, shape], vec![]);
        // q, k, v: the fused projection viewed as [rows, N, 3, heads, head_dim], moved to
        // [3, rows, heads, N, head_dim] and taken apart.
        let qkv = self.linear(
            id,
            &v("qkv"),
            windows_x,
            ["attn_qkv/kernel", "attn_qkv/bias"],
            [c, 3 * c],
        );
        let shape = self.init_i64(v("qkv/heads_shape"), vec![0, n as i64, 3, heads, hd]);
        let five = self.value(v("qkv/heads"), "Reshape", vec![qkv, shape], vec![]);
        let split = self.value(
            v("qkv/by_head"),
            "Transpose",
            vec![five],
            vec![("perm", Attr::Ints(vec![2, 0, 3, 1, 4]))],
        );
        let mut parts = Vec::new();
        for (s, what) in ["query", "key", "value"].iter().enumerate() {
            let at = self.init_i64_scalar(v(&format!("{what}/index")), s as i64);
            parts.push(self.value(
                v(what),
                "Gather",
                vec![split.clone(), at],
                vec![("axis", Attr::Int(0))],
            ));
        }
        let scale = self.scalar(v("scale"), op.query_scale());
        let q = self.value(
            v("query/scaled"),
            "Mul",
            vec![parts[0].clone(), scale],
            vec![],
        );
        let k = self.value(
            v("key/transposed"),
            "Transpose",
            vec![parts[1].clone()],
            vec![("perm", Attr::Ints(vec![0, 1, 3, 2]))],
        );
        let scores = self.value(v("scores"), "MatMul", vec![q, k], vec![]);
        // The bias table's rows by the position index: [N * N, heads] -> [heads, N, N].
        let (nw, nn) = (windows as i64, n as i64);
        let table = self.weight_as_is(id, "attn_pos");
        let index: Vec<i64> = self
            .weight(id, "attn_pos_ind")
            .unwrap_or_default()
            .iter()
            .map(|&i| i as i64)
            .collect();
        let index = self.init_i64(self.graph.weight_name(id, "attn_pos_ind"), index);
        let rows = self.value(v("position/rows"), "Gather", vec![table, index], vec![]);
        let by_head = self.value(
            v("position/by_head"),
            "Transpose",
            vec![rows],
            vec![("perm", Attr::Ints(vec![1, 0]))],
        );
        let shape = self.init_i64(v("position/shape"), vec![heads, nn, nn]);
        let position = self.value(v("position"), "Reshape", vec![by_head, shape], vec![]);
        let mut biased = self.value(
            v("scores/positioned"),
            "Add",
            vec![scores, position],
            vec![],
        );
        if op.geometry().shift > 0 {
            // The mask of each window, over all heads.
            let mask = self.weight(id, "attn_mask").unwrap_or_default();
            let mask = self.init_f32(
                self.graph.weight_name(id, "attn_mask"),
                vec![nw, 1, nn, nn],
                mask,
            );
            let shape = self.init_i64(v("scores/by_window_shape"), vec![-1, nw, heads, nn, nn]);
            let by_window = self.value(
                v("scores/by_window"),
                "Reshape",
                vec![biased, shape],
                vec![],
            );
            let masked = self.value(v("scores/masked"), "Add", vec![by_window, mask], vec![]);
            let shape = self.init_i64(v("scores/shape"), vec![-1, heads, nn, nn]);
            biased = self.value(v("scores/flat"), "Reshape", vec![masked, shape], vec![]);
        }
        let p = self.value(
            v("softmax"),
            "Softmax",
            vec![biased],
            vec![("axis", Attr::Int(-1))],
        );
        let attended = self.value(v("attended"), "MatMul", vec![p, parts[2].clone()], vec![]);
        let back = self.value(
            v("attended/by_token"),
            "Transpose",
            vec![attended],
            vec![("perm", Attr::Ints(vec![0, 2, 1, 3]))],
        );
        let shape = self.init_i64(v("attended/shape"), vec![-1, l as i64, c as i64]);
        let merged = self.value(v("attended/merged"), "Reshape", vec![back, shape], vec![]);
        let y = self.linear(
            id,
            &v("proj"),
            merged,
            ["attn_proj/kernel", "attn_proj/bias"],
            [c, c],
        );
        let inverse = self.init_i64(v("patch_order"), i64s(&inverse));
        let y = self.value(
            v("unwindowed"),
            "Gather",
            vec![y, inverse],
            vec![("axis", Attr::Int(1))],
        );
        let x1 = self.value(v("residual1"), "Add", vec![x, y], vec![]);
        let normed = norm(self, "norm2", x1.clone(), ["norm2/gamma", "norm2/beta"]);
        let hidden = self.linear(
            id,
            &v("mlp_0"),
            normed,
            ["mlp_0/kernel", "mlp_0/bias"],
            [c, g.mlp],
        );
        let activated = v("mlp_0/gelu");
        self.activation(
            &activated,
            ActivationFn::Gelu,
            hidden,
            activated.clone(),
            -1,
        );
        let y = self.linear(
            id,
            &v("mlp_1"),
            activated,
            ["mlp_1/kernel", "mlp_1/bias"],
            [g.mlp, c],
        );
        self.node(name, "Add", vec![x1, y], out, vec![]);
    }

    /// A weight stored unchanged (Keras's layout is ONNX's: 1-D vectors, Dense kernels).
    fn weight_as_is(&mut self, id: NodeId, var: &str) -> String {
        let name = self.graph.weight_name(id, var);
        let dims: Vec<i64> = self.info.layers[id.index()]
            .weights
            .iter()
            .find(|w| w.name == var)
            .map(|w| w.shape.clone())
            .unwrap_or_default();
        if let Some(data) = self.weight(id, var) {
            self.init_f32(name.clone(), dims, data);
        }
        name
    }

    fn build(&mut self) -> Result<(), String> {
        let graph = self.graph;
        // Names of the values a layer's output lives in.
        let mut seen_outputs = HashSet::new();
        for &out in &graph.outputs {
            if !seen_outputs.insert(out) {
                return Err(format!(
                    "`{}` is an output twice; ONNX outputs need distinct names",
                    graph.node(out).name
                ));
            }
            if channels_first(self.shape(out)?.len()) {
                self.values[out.index()] = format!("{}/nchw", graph.node(out).name);
            }
        }
        for &input in &graph.inputs {
            let name = graph.node(input).name.clone();
            let shape = self.shape(input)?.to_vec();
            self.inputs.push(ValueInfo {
                name: name.clone(),
                dims: Self::keras_dims(&shape),
            });
            if channels_first(shape.len()) {
                let value = format!("{name}/nchw");
                self.node(
                    format!("{name}/to_nchw"),
                    "Transpose",
                    vec![name.clone()],
                    value.clone(),
                    vec![("perm", Attr::Ints(to_channels_first(shape.len())))],
                );
                self.values[input.index()] = value;
            } else {
                self.values[input.index()] = name;
            }
        }
        let outputs: HashSet<NodeId> = graph.outputs.iter().copied().collect();
        for &id in &self.info.schedule {
            if matches!(graph.node(id).op, Op::Input(_)) {
                continue;
            }
            self.layer(id)?;
            if !outputs.contains(&id) {
                let dims = Self::body_dims(self.shape(id)?);
                self.value_info.push(ValueInfo {
                    name: self.values[id.index()].clone(),
                    dims,
                });
            }
        }
        let input_names: HashSet<String> = self.inputs.iter().map(|v| v.name.clone()).collect();
        for &out in &graph.outputs {
            let layer = graph.node(out).name.clone();
            let shape = self.shape(out)?.to_vec();
            let mut name = layer.clone();
            if input_names.contains(&name) {
                name = format!("{layer}/output");
            }
            if channels_first(shape.len()) {
                self.value_info.push(ValueInfo {
                    name: self.values[out.index()].clone(),
                    dims: Self::body_dims(&shape),
                });
                let value = self.values[out.index()].clone();
                self.node(
                    format!("{layer}/to_nhwc"),
                    "Transpose",
                    vec![value],
                    name.clone(),
                    vec![("perm", Attr::Ints(to_channels_last(shape.len())))],
                );
            } else if name != self.values[out.index()] {
                let value = self.values[out.index()].clone();
                self.node(
                    format!("{layer}/output"),
                    "Identity",
                    vec![value],
                    name.clone(),
                    vec![],
                );
            }
            self.outputs.push(ValueInfo {
                name,
                dims: Self::keras_dims(&shape),
            });
        }
        Ok(())
    }

    /// Emits the nodes of one layer, whose output goes to `self.values[id]`.
    fn layer(&mut self, id: NodeId) -> Result<(), String> {
        let graph = self.graph;
        let node = graph.node(id);
        let name = node.name.clone();
        let out = self.values[id.index()].clone();
        let xs: Vec<String> = node
            .inputs
            .iter()
            .map(|&i| self.values[i.index()].clone())
            .collect();
        let in_shapes: Vec<Vec<i64>> = node
            .inputs
            .iter()
            .map(|&i| self.shape(i).map(<[i64]>::to_vec))
            .collect::<Result<_, _>>()?;
        let out_shape = self.shape(id)?.to_vec();
        let image = channels_first(out_shape.len());
        let x = || xs[0].clone();
        let need_image = |what: &str| -> Result<[i64; 3], String> {
            match in_shapes.first().map(Vec::as_slice) {
                Some(&[h, w, c]) => Ok([h, w, c]),
                _ => Err(format!("`{name}` ({what}) needs an image input")),
            }
        };
        let need_volume = |what: &str| -> Result<[i64; 4], String> {
            match in_shapes.first().map(Vec::as_slice) {
                Some(&[d, h, w, c]) => Ok([d, h, w, c]),
                _ => Err(format!("`{name}` ({what}) needs a volume input")),
            }
        };
        match &node.op {
            Op::Input(_) => {}
            Op::Conv2D(op) => {
                let a = &op.args;
                let [h, w, c] = need_image("Conv2D")?;
                let pads = window_pads(|axis, n, out| a.geometry(axis, n, out), [h, w], &out_shape);
                let hwio = [a.kernel_size[0], a.kernel_size[1], c / op.groups, a.filters];
                let kernel = self.conv_kernel(id, "kernel", hwio);
                let mut inputs = vec![x(), kernel];
                if a.use_bias {
                    inputs.push(self.weight_as_is(id, "bias"));
                }
                let pre = self.pre_activation(a.activation, &out);
                let window = ConvWindow {
                    kernel_size: a.kernel_size,
                    strides: a.strides,
                    dilation_rate: a.dilation_rate,
                    pads,
                    groups: op.groups,
                };
                self.conv_node(name.clone(), inputs, pre.clone(), window);
                self.activation_after(&name, a.activation, pre, out, 1);
            }
            Op::DepthwiseConv2D(op) => {
                let d = &op.depthwise;
                let [h, w, c] = need_image("DepthwiseConv2D")?;
                let pads = window_pads(|axis, n, out| d.geometry(axis, n, out), [h, w], &out_shape);
                // [kh, kw, c, dm] is, flat, the grouped kernel [kh, kw, 1, c * dm] of c groups.
                let hwio = [
                    d.kernel_size[0],
                    d.kernel_size[1],
                    1,
                    c * d.depth_multiplier,
                ];
                let kernel = self.conv_kernel(id, "depthwise_kernel", hwio);
                let mut inputs = vec![x(), kernel];
                if op.use_bias {
                    inputs.push(self.weight_as_is(id, "bias"));
                }
                let pre = self.pre_activation(op.activation, &out);
                let window = ConvWindow {
                    kernel_size: d.kernel_size,
                    strides: d.strides,
                    dilation_rate: d.dilation_rate,
                    pads,
                    groups: c,
                };
                self.conv_node(name.clone(), inputs, pre.clone(), window);
                self.activation_after(&name, op.activation, pre, out, 1);
            }
            Op::SeparableConv2D(op) => {
                let d = &op.depthwise;
                let [h, w, c] = need_image("SeparableConv2D")?;
                let pads = window_pads(|axis, n, out| d.geometry(axis, n, out), [h, w], &out_shape);
                let mid = c * d.depth_multiplier;
                let hwio = [d.kernel_size[0], d.kernel_size[1], 1, mid];
                let depthwise_kernel = self.conv_kernel(id, "depthwise_kernel", hwio);
                let depthwise = format!("{name}/depthwise");
                let window = ConvWindow {
                    kernel_size: d.kernel_size,
                    strides: d.strides,
                    dilation_rate: d.dilation_rate,
                    pads,
                    groups: c,
                };
                self.conv_node(
                    depthwise.clone(),
                    vec![x(), depthwise_kernel],
                    depthwise.clone(),
                    window,
                );
                let pointwise_kernel =
                    self.conv_kernel(id, "pointwise_kernel", [1, 1, mid, op.filters]);
                let mut inputs = vec![depthwise, pointwise_kernel];
                if op.use_bias {
                    inputs.push(self.weight_as_is(id, "bias"));
                }
                let pre = self.pre_activation(op.activation, &out);
                let pointwise = ConvWindow {
                    kernel_size: [1, 1],
                    strides: [1, 1],
                    dilation_rate: [1, 1],
                    pads: [0; 4],
                    groups: 1,
                };
                self.conv_node(name.clone(), inputs, pre.clone(), pointwise);
                self.activation_after(&name, op.activation, pre, out, 1);
            }
            Op::Conv2DTranspose(op) => {
                let a = &op.args;
                if a.dilation_rate != [1, 1] {
                    return Err(format!(
                        "`{name}`: dilated transposed convolutions are not exported"
                    ));
                }
                let [h, w, c] = need_image("Conv2DTranspose")?;
                let [kh, kw] = a.kernel_size;
                let f = a.filters;
                // ONNX's pads crop the full result; output_padding extends it (zeros + bias).
                let mut pads = [0i64; 4];
                let mut output_padding = [0i64; 2];
                for (axis, n) in [h, w].into_iter().enumerate() {
                    let g = op.geometry(axis, n as usize, out_shape[axis] as usize);
                    pads[axis] = g.crop_before as i64;
                    pads[axis + 2] = g.crop_after as i64;
                    output_padding[axis] = g.extend_after as i64;
                }
                // Keras's (kh, kw, out, in) to ONNX's (in, out, kh, kw): the same move of the
                // spatial axes last as a convolution's HWIO to OIHW.
                let kernel_name = self.conv_kernel(id, "kernel", [kh, kw, f, c]);
                let mut inputs = vec![x(), kernel_name];
                if a.use_bias {
                    inputs.push(self.weight_as_is(id, "bias"));
                }
                let pre = self.pre_activation(a.activation, &out);
                let mut attrs = vec![
                    ("kernel_shape", Attr::Ints(vec![kh, kw])),
                    ("strides", Attr::Ints(a.strides.to_vec())),
                    ("pads", Attr::Ints(pads.to_vec())),
                ];
                if output_padding != [0, 0] {
                    attrs.push(("output_padding", Attr::Ints(output_padding.to_vec())));
                }
                self.node(name.clone(), "ConvTranspose", inputs, pre.clone(), attrs);
                self.activation_after(&name, a.activation, pre, out, 1);
            }
            Op::MaxPooling2D(op) => {
                let [h, w, _] = need_image("MaxPooling2D")?;
                let pads =
                    window_pads(|axis, n, out| op.geometry(axis, n, out), [h, w], &out_shape);
                self.node(
                    name,
                    "MaxPool",
                    vec![x()],
                    out,
                    vec![
                        ("kernel_shape", Attr::Ints(op.pool_size.to_vec())),
                        ("strides", Attr::Ints(op.strides.to_vec())),
                        ("pads", Attr::Ints(pads.to_vec())),
                    ],
                );
            }
            Op::UpSampling2D(op) => {
                let [h, w, _] = need_image("UpSampling2D")?;
                let (oh, ow) = (out_shape[0], out_shape[1]);
                self.resize_image(name, x(), out, op.resize(), [h, w], [oh, ow]);
            }
            Op::Resizing(op) => {
                let [h, w, _] = need_image("Resizing")?;
                let (oh, ow) = (out_shape[0], out_shape[1]);
                self.resize_image(name, x(), out, op.resize(), [h, w], [oh, ow]);
            }
            Op::Cropping2D(op) => {
                let [h, w, _] = need_image("Cropping2D")?;
                let [t, b, l, r] = op.cropping;
                let starts = self.init_i64(format!("{name}/starts"), vec![t, l]);
                let ends = self.init_i64(format!("{name}/ends"), vec![h - b, w - r]);
                let axes = self.init_i64(format!("{name}/axes"), vec![2, 3]);
                self.node(name, "Slice", vec![x(), starts, ends, axes], out, vec![]);
            }
            Op::ZeroPadding2D(op) => {
                let [h, w, _] = need_image("ZeroPadding2D")?;
                self.pad_image(name, x(), out, op, [h, w]);
            }
            Op::Concatenate(op) => {
                let axis = onnx_axis(op.axis, out_shape.len(), image);
                self.node(name, "Concat", xs, out, vec![("axis", Attr::Int(axis))]);
            }
            Op::Add(_) => {
                let op_type = if xs.len() == 2 { "Add" } else { "Sum" };
                self.node(name, op_type, xs, out, vec![]);
            }
            Op::BatchNormalization(op) => {
                let c = *out_shape.last().unwrap_or(&1);
                let gamma = if op.scale {
                    self.weight_as_is(id, "gamma")
                } else if image {
                    self.init_f32(format!("{name}/ones"), vec![c], vec![1.0; c as usize])
                } else {
                    String::new()
                };
                let beta = if op.center {
                    self.weight_as_is(id, "beta")
                } else if image {
                    self.init_f32(format!("{name}/zeros"), vec![c], vec![0.0; c as usize])
                } else {
                    String::new()
                };
                let mean = self.weight_as_is(id, "moving_mean");
                let var = self.weight_as_is(id, "moving_variance");
                if image {
                    self.node(
                        name,
                        "BatchNormalization",
                        vec![x(), gamma, beta, mean, var],
                        out,
                        vec![("epsilon", Attr::Float(op.epsilon as f32))],
                    );
                } else {
                    // Channels last: the formula, with broadcasting over the last axis.
                    let eps = self.scalar(format!("{name}/epsilon"), op.epsilon as f32);
                    self.node(
                        format!("{name}/var_eps"),
                        "Add",
                        vec![var, eps],
                        format!("{name}/var_eps"),
                        vec![],
                    );
                    self.node(
                        format!("{name}/std"),
                        "Sqrt",
                        vec![format!("{name}/var_eps")],
                        format!("{name}/std"),
                        vec![],
                    );
                    let mut steps: Vec<Step> = vec![
                        ("Sub", "centered", vec![mean], vec![]),
                        ("Div", "normalized", vec![format!("{name}/std")], vec![]),
                    ];
                    if op.scale {
                        steps.push(("Mul", "scaled", vec![gamma], vec![]));
                    }
                    if op.center {
                        steps.push(("Add", "shifted", vec![beta], vec![]));
                    }
                    self.chain(&name, x(), out, steps);
                }
            }
            Op::Activation(op) => {
                let axis = if image { 1 } else { -1 };
                self.activation(&name, op.activation, x(), out, axis);
            }
            Op::ReLU(op) => self.relu_layer(&name, op, x(), out),
            Op::Softmax(op) => {
                let axis = onnx_axis(op.axis, out_shape.len(), image);
                self.node(
                    name,
                    "Softmax",
                    vec![x()],
                    out,
                    vec![("axis", Attr::Int(axis))],
                );
            }
            Op::Dropout(_) => self.node(name, "Identity", vec![x()], out, vec![]),
            Op::Flatten(_) => {
                let mut input = x();
                if channels_first(in_shapes[0].len()) {
                    let nhwc = format!("{name}/nhwc");
                    self.node(
                        nhwc.clone(),
                        "Transpose",
                        vec![input],
                        nhwc.clone(),
                        vec![("perm", Attr::Ints(to_channels_last(in_shapes[0].len())))],
                    );
                    input = nhwc;
                }
                self.node(
                    name,
                    "Flatten",
                    vec![input],
                    out,
                    vec![("axis", Attr::Int(1))],
                );
            }
            // Both act on Keras's NHWC order: an image goes back to NHWC first, and an image
            // result returns to NCHW after.
            Op::Reshape(_) => self.in_keras_order(name, x(), out, &in_shapes[0], &out_shape, None),
            Op::Lambda(op) => match &op.body {
                // Channels are axis 1 of an NCHW image.
                LambdaBody::SliceTensor { start, stop, .. } => {
                    need_image("slice_tensor")?;
                    let starts = self.init_i64(format!("{name}/starts"), vec![*start]);
                    let ends = self.init_i64(format!("{name}/ends"), vec![*stop]);
                    let axes = self.init_i64(format!("{name}/axes"), vec![1]);
                    self.node(name, "Slice", vec![x(), starts, ends, axes], out, vec![]);
                }
                LambdaBody::ExpandDims { .. } => {
                    self.in_keras_order(name, x(), out, &in_shapes[0], &out_shape, None)
                }
                LambdaBody::Resize {
                    method,
                    align_corners,
                    ..
                } => {
                    let [h, w, _] = need_image("image.resize")?;
                    let resize = ImageResize::new(*method, *align_corners);
                    let (oh, ow) = (out_shape[0], out_shape[1]);
                    self.resize_image(name, x(), out, resize, [h, w], [oh, ow]);
                }
                // Output channel k is input channel k / repeats: a Gather on axis 1.
                LambdaBody::RepeatElements { repeats, .. } => {
                    need_image("repeat_elements")?;
                    let c = in_shapes[0].last().copied().unwrap_or(1);
                    let indices = (0..c * repeats).map(|k| k / repeats).collect();
                    let indices = self.init_i64(format!("{name}/indices"), indices);
                    let axis = vec![("axis", Attr::Int(1))];
                    self.node(name, "Gather", vec![x(), indices], out, axis);
                }
                LambdaBody::ScaledAdd {
                    first,
                    second,
                    scale,
                    ..
                } => {
                    let inputs = [xs[*first].clone(), xs[*second].clone()];
                    self.scaled_add(name, inputs, out, *scale)
                }
                // One node per operation; the last one is named after the layer.
                LambdaBody::Arithmetic(a) => {
                    let mut from = x();
                    let n = a.ops.len();
                    if n == 0 {
                        self.node(
                            name.clone(),
                            "Identity",
                            vec![from.clone()],
                            out.clone(),
                            vec![],
                        );
                    }
                    for (k, op) in a.ops.iter().enumerate() {
                        let c = self.scalar(format!("{name}/constant_{k}"), op.c());
                        let inputs = if op.constant_first {
                            vec![c, from.clone()]
                        } else {
                            vec![from.clone(), c]
                        };
                        let op_type = match op.function {
                            ScalarFn::Add => "Add",
                            ScalarFn::Subtract => "Sub",
                            ScalarFn::Multiply => "Mul",
                            ScalarFn::Divide => "Div",
                            ScalarFn::Maximum => "Max",
                            ScalarFn::Minimum => "Min",
                        };
                        let (node_name, to) = if k + 1 == n {
                            (name.clone(), out.clone())
                        } else {
                            (format!("{name}/{k}"), format!("{name}/{k}:0"))
                        };
                        self.node(node_name, op_type, inputs, to.clone(), vec![]);
                        from = to;
                    }
                }
            },
            Op::Permute(op) => {
                self.in_keras_order(name, x(), out, &in_shapes[0], &out_shape, Some(&op.dims))
            }
            Op::MultiHeadAttention(op) => {
                let d = op.dims(&in_shapes);
                self.attention(id, &name, &d, &xs, &in_shapes, &out_shape, out)
            }
            Op::PatchExtract(op) => {
                let [h, w, c] = need_image("patch_extract")?;
                let (p, rows) = (op.side(), (out_shape[0] as f64).sqrt().round() as i64);
                // Whole patches only: the first rows * p rows and columns.
                let mut input = x();
                if rows * p != h || rows * p != w {
                    let (starts, ends, axes) = (
                        self.init_i64(format!("{name}/starts"), vec![0, 0]),
                        self.init_i64(format!("{name}/ends"), vec![rows * p, rows * p]),
                        self.init_i64(format!("{name}/axes"), vec![2, 3]),
                    );
                    let cropped = format!("{name}/whole_patches");
                    self.node(
                        cropped.clone(),
                        "Slice",
                        vec![input, starts, ends, axes],
                        cropped.clone(),
                        vec![],
                    );
                    input = cropped;
                }
                // (N, C, i, a, j, b) -> (N, i, j, a, b, C) -> (N, i * rows + j, (a * p + b) * C + c).
                let split = self.init_i64(format!("{name}/split"), vec![0, c, rows, p, rows, p]);
                let (six, moved) = (format!("{name}/six"), format!("{name}/moved"));
                self.node(
                    six.clone(),
                    "Reshape",
                    vec![input, split],
                    six.clone(),
                    vec![],
                );
                self.node(
                    moved.clone(),
                    "Transpose",
                    vec![six],
                    moved.clone(),
                    vec![("perm", Attr::Ints(vec![0, 2, 4, 3, 5, 1]))],
                );
                let tokens =
                    self.init_i64(format!("{name}/shape"), vec![0, rows * rows, p * p * c]);
                self.node(name, "Reshape", vec![moved, tokens], out, vec![]);
            }
            Op::SwinTransformerBlock(op) => self.swin_block(id, &name, op, x(), out),
            Op::PatchMerging(op) => {
                let ([h, w], c) = (op.num_patch, in_shapes[0][1]);
                // The 2x2 neighbours of each merged token next to each other, in the class's
                // order, then viewed as one token of 4 C features.
                let mut order = Vec::with_capacity((h * w) as usize);
                for i in 0..h / 2 {
                    for j in 0..w / 2 {
                        for (di, dj) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                            order.push((2 * i + di) * w + 2 * j + dj);
                        }
                    }
                }
                let order = self.init_i64(format!("{name}/neighbours"), order);
                let gathered = self.value(
                    format!("{name}/gather"),
                    "Gather",
                    vec![x(), order],
                    vec![("axis", Attr::Int(1))],
                );
                let shape =
                    self.init_i64(format!("{name}/merged_shape"), vec![0, h * w / 4, 4 * c]);
                let merged = self.value(
                    format!("{name}/merged"),
                    "Reshape",
                    vec![gathered, shape],
                    vec![],
                );
                let kernel = self.weight_as_is(id, "linear_trans/kernel");
                self.node(name, "MatMul", vec![merged, kernel], out, vec![]);
            }
            Op::PatchExpanding(op) => {
                let ([h, w], c) = (op.num_patch, in_shapes[0][1]);
                let (r, oc) = (op.upsample_rate, op.out_channels());
                let kernel = self
                    .weight_as(id, "linear_trans1/kernel", vec![c, r * op.embed_dim])
                    .unwrap_or_default();
                let conv = self.value(format!("{name}/conv"), "MatMul", vec![x(), kernel], vec![]);
                // depth_to_space: depth (i * r + j) * oc + ch to position (y * r + i, x * r + j).
                let six = self.init_i64(format!("{name}/blocks_shape"), vec![-1, h, w, r, r, oc]);
                let blocks =
                    self.value(format!("{name}/blocks"), "Reshape", vec![conv, six], vec![]);
                let moved = self.value(
                    format!("{name}/moved"),
                    "Transpose",
                    vec![blocks],
                    vec![("perm", Attr::Ints(vec![0, 1, 3, 2, 4, 5]))],
                );
                if op.return_vector {
                    let shape = self.init_i64(format!("{name}/shape"), vec![-1, h * w * r * r, oc]);
                    self.node(name, "Reshape", vec![moved, shape], out, vec![]);
                } else {
                    // An image: NCHW in the graph's body.
                    let shape = self.init_i64(format!("{name}/shape"), vec![-1, h * r, w * r, oc]);
                    let image = self.value(
                        format!("{name}/nhwc"),
                        "Reshape",
                        vec![moved, shape],
                        vec![],
                    );
                    self.node(
                        name,
                        "Transpose",
                        vec![image],
                        out,
                        vec![("perm", Attr::Ints(vec![0, 3, 1, 2]))],
                    );
                }
            }
            Op::PatchEmbedding(_) => {
                let kernel = self.weight_as_is(id, "proj/kernel");
                let bias = self.weight_as_is(id, "proj/bias");
                let positions = self.weight_as_is(id, "pos_embed/embeddings");
                let (product, projected) = (format!("{name}/matmul"), format!("{name}/proj"));
                self.node(
                    product.clone(),
                    "MatMul",
                    vec![x(), kernel],
                    product.clone(),
                    vec![],
                );
                self.node(
                    projected.clone(),
                    "Add",
                    vec![product, bias],
                    projected.clone(),
                    vec![],
                );
                self.node(name, "Add", vec![projected, positions], out, vec![]);
            }
            Op::Dense(op) => {
                let n_in = *in_shapes[0].last().unwrap_or(&1);
                let units = op.units;
                let pre = self.pre_activation(op.activation, &out);
                if channels_first(in_shapes[0].len()) {
                    // On an image (NCHW here): a 1x1 convolution, kernel [out, in, 1, 1] (and
                    // [out, in, 1, 1, 1] on a volume).
                    let ones = vec![1i64; in_shapes[0].len() - 1];
                    let kernel_name = format!("{name}/kernel");
                    if let Some(k) = self.weight(id, "kernel") {
                        let (n, u) = (n_in as usize, units as usize);
                        let mut oi = vec![0.0f32; k.len()];
                        for i in 0..n {
                            for o in 0..u {
                                oi[o * n + i] = k[i * u + o];
                            }
                        }
                        let mut dims = vec![units, n_in];
                        dims.extend(&ones);
                        self.init_f32(kernel_name.clone(), dims, oi);
                    }
                    let mut inputs = vec![x(), kernel_name];
                    if op.use_bias {
                        inputs.push(self.weight_as_is(id, "bias"));
                    }
                    self.node(
                        name.clone(),
                        "Conv",
                        inputs,
                        pre.clone(),
                        vec![("kernel_shape", Attr::Ints(ones))],
                    );
                    self.activation_after(&name, op.activation, pre, out, 1);
                } else if in_shapes[0].len() == 1 {
                    let kernel = self.weight_as_is(id, "kernel");
                    let mut inputs = vec![x(), kernel];
                    if op.use_bias {
                        inputs.push(self.weight_as_is(id, "bias"));
                    }
                    self.node(name.clone(), "Gemm", inputs, pre.clone(), vec![]);
                    self.activation_after(&name, op.activation, pre, out, -1);
                } else {
                    let kernel = self.weight_as_is(id, "kernel");
                    if op.use_bias {
                        let bias = self.weight_as_is(id, "bias");
                        let product = format!("{name}/matmul");
                        self.node(
                            product.clone(),
                            "MatMul",
                            vec![x(), kernel],
                            product.clone(),
                            vec![],
                        );
                        self.node(
                            name.clone(),
                            "Add",
                            vec![product, bias],
                            pre.clone(),
                            vec![],
                        );
                    } else {
                        self.node(
                            name.clone(),
                            "MatMul",
                            vec![x(), kernel],
                            pre.clone(),
                            vec![],
                        );
                    }
                    self.activation_after(&name, op.activation, pre, out, -1);
                }
            }
            Op::GlobalMaxPooling2D(op) => {
                need_image("GlobalMaxPooling2D")?;
                self.node(
                    name,
                    "ReduceMax",
                    vec![x()],
                    out,
                    vec![
                        ("axes", Attr::Ints(vec![2, 3])),
                        ("keepdims", Attr::Int(i64::from(op.keepdims))),
                    ],
                );
            }
            Op::AveragePooling2D(op) => {
                let [h, w, _] = need_image("AveragePooling2D")?;
                let mut pads = [0i64; 4];
                for (axis, n) in [h, w].into_iter().enumerate() {
                    let g = op.geometry(axis, n as usize, out_shape[axis] as usize);
                    pads[axis] = g.pad_before as i64;
                    pads[axis + 2] = g.pad_after as i64;
                }
                // count_include_pad 0: the mean of the cells inside the input, as Keras.
                self.node(
                    name,
                    "AveragePool",
                    vec![x()],
                    out,
                    vec![
                        ("kernel_shape", Attr::Ints(op.pool_size.to_vec())),
                        ("strides", Attr::Ints(op.strides.to_vec())),
                        ("pads", Attr::Ints(pads.to_vec())),
                    ],
                );
            }
            Op::Multiply(_) => {
                self.merge(&name, Multiply::FUNCTION, xs, out, &in_shapes, &out_shape)?
            }
            Op::Subtract(_) => {
                self.merge(&name, Subtract::FUNCTION, xs, out, &in_shapes, &out_shape)?
            }
            Op::CustomScaleLayer(op) => {
                self.scaled_add(name, [xs[0].clone(), xs[1].clone()], out, op.scale)
            }
            Op::Average(_) => {
                self.merge(&name, Average::FUNCTION, xs, out, &in_shapes, &out_shape)?
            }
            Op::Maximum(_) => {
                self.merge(&name, Maximum::FUNCTION, xs, out, &in_shapes, &out_shape)?
            }
            Op::Minimum(_) => {
                self.merge(&name, Minimum::FUNCTION, xs, out, &in_shapes, &out_shape)?
            }
            Op::TFOpLambda(op) => match op.computes() {
                TfCompute::Merge(function) => {
                    self.merge(&name, function, xs, out, &in_shapes, &out_shape)?
                }
                TfCompute::TensorMerge(m) => {
                    let Some(constant) = &op.operand else {
                        return Err(format!("`{name}`: internal: no constant tensor"));
                    };
                    if in_shapes[0].len() != out_shape.len() {
                        return Err(format!(
                            "`{name}`: the constant {:?} adds axes to the tensor; ONNX export \
                             handles a constant that broadcasts into the tensor's shape only",
                            constant.shape
                        ));
                    }
                    let c = self.constant_operand(&name, constant, in_shapes[0].len());
                    let inputs = if m.constant_first {
                        vec![c, x()]
                    } else {
                        vec![x(), c]
                    };
                    let op_type = match m.function {
                        MergeFn::Add | MergeFn::Average => "Add",
                        MergeFn::Multiply => "Mul",
                        MergeFn::Subtract => "Sub",
                        MergeFn::Maximum => "Max",
                        MergeFn::Minimum => "Min",
                        MergeFn::Divide => "Div",
                    };
                    self.node(name, op_type, inputs, out, vec![]);
                }
                TfCompute::Concat(axis) => {
                    let axis = onnx_axis(axis, out_shape.len(), image);
                    self.node(name, "Concat", xs, out, vec![("axis", Attr::Int(axis))]);
                }
                TfCompute::Activation(activation) => {
                    let axis = if image { 1 } else { -1 };
                    self.activation(&name, activation, x(), out, axis);
                }
                TfCompute::Scalar(op) => {
                    let c = self.scalar(format!("{name}/constant"), op.c());
                    let inputs = if op.constant_first {
                        vec![c, x()]
                    } else {
                        vec![x(), c]
                    };
                    let op_type = match op.function {
                        ScalarFn::Add => "Add",
                        ScalarFn::Subtract => "Sub",
                        ScalarFn::Multiply => "Mul",
                        ScalarFn::Divide => "Div",
                        ScalarFn::Maximum => "Max",
                        ScalarFn::Minimum => "Min",
                    };
                    self.node(name, op_type, inputs, out, vec![]);
                }
                // ArgMax gives int64 indices: cast to float, then the channel axis dropped
                // (an image's NCHW result goes back to Keras's order).
                TfCompute::ReduceChannels(ReduceFn::Argmax) => {
                    let (indices, floats) = (format!("{name}/indices"), format!("{name}/float"));
                    let axis = if channels_first(in_shapes[0].len()) {
                        1
                    } else {
                        -1
                    };
                    self.node(
                        indices.clone(),
                        "ArgMax",
                        vec![x()],
                        indices.clone(),
                        vec![
                            ("axis", Attr::Int(axis)),
                            ("keepdims", Attr::Int(1)),
                            ("select_last_index", Attr::Int(0)),
                        ],
                    );
                    self.node(
                        floats.clone(),
                        "Cast",
                        vec![indices],
                        floats.clone(),
                        vec![("to", Attr::Int(1))],
                    );
                    let mut kept = in_shapes[0].clone();
                    if let Some(c) = kept.last_mut() {
                        *c = 1;
                    }
                    self.in_keras_order(name, floats, out, &kept, &out_shape, None)
                }
                TfCompute::ReduceChannels(f) => {
                    let axis = if image { 1 } else { -1 };
                    let op_type = match f {
                        ReduceFn::Mean => "ReduceMean",
                        ReduceFn::Max => "ReduceMax",
                        ReduceFn::Argmax => "ArgMax",
                    };
                    self.node(
                        name,
                        op_type,
                        vec![x()],
                        out,
                        vec![("axes", Attr::Ints(vec![axis])), ("keepdims", Attr::Int(1))],
                    );
                }
                TfCompute::Reshape => {
                    self.in_keras_order(name, x(), out, &in_shapes[0], &out_shape, None)
                }
                TfCompute::ReduceImage(f) => {
                    need_image("a reduction over height and width")?;
                    let op_type = match f {
                        ImageReduceFn::Mean => "ReduceMean",
                        ImageReduceFn::Max => "ReduceMax",
                    };
                    let keepdims = i64::from(op.keepdims == Some(true));
                    self.node(
                        name,
                        op_type,
                        vec![x()],
                        out,
                        vec![
                            ("axes", Attr::Ints(vec![2, 3])),
                            ("keepdims", Attr::Int(keepdims)),
                        ],
                    );
                }
                // The rows, columns (axes 2, 3 of an NCHW image) and channels (axis 1 of an
                // image, the last axis otherwise) read, then reshaped in Keras's order when the
                // subscript adds or drops axes.
                TfCompute::Slice => {
                    let item: Vec<usize> = in_shapes[0].iter().map(|&d| d as usize).collect();
                    let [rows, cols, channels] = op.slice_window(&item);
                    let image = channels_first(item.len());
                    let mut sliced_shape = in_shapes[0].clone();
                    if image {
                        sliced_shape = vec![rows.len as i64, cols.len as i64, channels.len as i64];
                    } else if let Some(c) = sliced_shape.last_mut() {
                        *c = channels.len as i64;
                    }
                    // (axis, start, end, step) of every axis not read whole, in ONNX's terms;
                    // the end of a backward read through position 0 is before every position
                    // (-n - 1 counts from the end to -1).
                    let mut cut: Vec<[i64; 4]> = Vec::new();
                    let axes: Vec<(i64, &AxisRead, usize)> = match item[..] {
                        [h, w, c] if image => vec![(2, &rows, h), (3, &cols, w), (1, &channels, c)],
                        _ => vec![(-1, &channels, item.last().copied().unwrap_or(1))],
                    };
                    for (axis, read, n) in axes {
                        if !read.is_whole(n) {
                            let start = read.start as i64;
                            let end = start + read.len as i64 * read.step as i64;
                            let end = if end < 0 { -(n as i64) - 1 } else { end };
                            cut.push([axis, start, end, read.step as i64]);
                        }
                    }
                    let same = sliced_shape == out_shape;
                    // Every value (and a tensor of no axes but the batch): nothing to slice.
                    let whole = cut.is_empty();
                    let sliced = if whole {
                        x()
                    } else {
                        let sliced = if same {
                            out.clone()
                        } else {
                            format!("{name}/sliced")
                        };
                        let mut list = |what: &str, k: usize| {
                            self.init_i64(
                                format!("{name}/{what}"),
                                cut.iter().map(|c| c[k]).collect(),
                            )
                        };
                        let starts = list("starts", 1);
                        let ends = list("ends", 2);
                        let axes = list("axes", 0);
                        let steps = list("steps", 3);
                        let node = if same { name.clone() } else { sliced.clone() };
                        let inputs = vec![x(), starts, ends, axes, steps];
                        self.node(node, "Slice", inputs, sliced.clone(), vec![]);
                        sliced
                    };
                    match (whole, same) {
                        (true, true) => self.node(name, "Identity", vec![sliced], out, vec![]),
                        (false, true) => {}
                        (_, false) => {
                            self.in_keras_order(name, sliced, out, &sliced_shape, &out_shape, None)
                        }
                    }
                }
                TfCompute::Resize(method) => {
                    let [h, w, _] = need_image("tf.image.resize")?;
                    let (oh, ow) = (out_shape[0], out_shape[1]);
                    self.resize_image(name, x(), out, ImageResize::tf(method), [h, w], [oh, ow]);
                }
                TfCompute::Pad => {
                    let [h, w, _] = need_image("tf.pad")?;
                    let pad = op.as_padding();
                    self.pad_image(name, x(), out, &pad, [h, w]);
                }
            },
            Op::LeakyReLU(op) => self.node(
                name,
                "LeakyRelu",
                vec![x()],
                out,
                vec![("alpha", Attr::Float(op.alpha as f32))],
            ),
            Op::ELU(op) => self.node(
                name,
                "Elu",
                vec![x()],
                out,
                vec![("alpha", Attr::Float(op.alpha as f32))],
            ),
            Op::Rescaling(op) => {
                let scale = self.scalar(format!("{name}/scale"), op.scale as f32);
                let offset = self.scalar(format!("{name}/offset"), op.offset as f32);
                let scaled = format!("{name}/scaled");
                self.node(
                    format!("{name}/mul"),
                    "Mul",
                    vec![x(), scale],
                    scaled.clone(),
                    vec![],
                );
                self.node(name, "Add", vec![scaled, offset], out, vec![]);
            }
            Op::PReLU(op) => {
                if in_shapes[0].len() == 4 {
                    return Err(format!(
                        "`{name}`: PReLU on a volume is not exported to ONNX yet"
                    ));
                }
                let alpha_shape = op.alpha_shape(&in_shapes[0]);
                let data = self.weight(id, "alpha").unwrap_or_default();
                // The body is NCHW: alpha goes from (h, w, c) to (c, h, w).
                let (dims, data) = match alpha_shape.as_slice() {
                    &[ah, aw, ac] if !data.is_empty() => {
                        let (ah, aw, ac) = (ah as usize, aw as usize, ac as usize);
                        let mut chw = vec![0.0f32; data.len()];
                        for y in 0..ah {
                            for xx in 0..aw {
                                for c in 0..ac {
                                    chw[(c * ah + y) * aw + xx] = data[(y * aw + xx) * ac + c];
                                }
                            }
                        }
                        (vec![ac as i64, ah as i64, aw as i64], chw)
                    }
                    _ => (alpha_shape.clone(), data),
                };
                let slope = self.init_f32(format!("{name}/alpha"), dims, data);
                self.node(name, "PRelu", vec![x(), slope], out, vec![]);
            }
            Op::Snake(_) => {
                // x + (1 / beta) * sin(beta x)^2, as keras-unet-collection computes it.
                let beta = self.weight(id, "beta_factor").unwrap_or_default();
                let beta = self.init_f32(format!("{name}/beta_factor"), Vec::new(), beta);
                let steps: [(&str, &str, Vec<String>); 5] = [
                    ("bx", "Mul", vec![beta.clone(), x()]),
                    ("sin", "Sin", vec![format!("{name}/bx")]),
                    (
                        "sq",
                        "Mul",
                        vec![format!("{name}/sin"), format!("{name}/sin")],
                    ),
                    ("inv", "Reciprocal", vec![beta]),
                    (
                        "term",
                        "Mul",
                        vec![format!("{name}/inv"), format!("{name}/sq")],
                    ),
                ];
                for (value, op_type, inputs) in steps {
                    let v = format!("{name}/{value}");
                    self.node(v.clone(), op_type, inputs, v, vec![]);
                }
                self.node(
                    name.clone(),
                    "Add",
                    vec![x(), format!("{name}/term")],
                    out,
                    vec![],
                );
            }
            Op::GELU(_) => {
                // 0.5 x (1 + tanh(c (x + a x^3))), as keras-unet-collection computes it.
                let [a, c, one, half] = [
                    ("a", 0.044715f32),
                    ("c", 0.797_884_6),
                    ("one", 1.0),
                    ("half", 0.5),
                ]
                .map(|(k, v)| self.scalar(format!("{name}/{k}"), v));
                let steps: [(&str, &str, Vec<String>); 7] = [
                    ("x2", "Mul", vec![x(), x()]),
                    ("x3", "Mul", vec![format!("{name}/x2"), x()]),
                    ("ax3", "Mul", vec![format!("{name}/x3"), a]),
                    ("inner", "Add", vec![x(), format!("{name}/ax3")]),
                    ("u", "Mul", vec![format!("{name}/inner"), c]),
                    ("t", "Tanh", vec![format!("{name}/u")]),
                    ("one_plus", "Add", vec![format!("{name}/t"), one]),
                ];
                for (value, op_type, inputs) in steps {
                    let v = format!("{name}/{value}");
                    self.node(v.clone(), op_type, inputs, v, vec![]);
                }
                let half_x = format!("{name}/half_x");
                self.node(
                    half_x.clone(),
                    "Mul",
                    vec![x(), half],
                    half_x.clone(),
                    vec![],
                );
                self.node(
                    name.clone(),
                    "Mul",
                    vec![half_x, format!("{name}/one_plus")],
                    out,
                    vec![],
                );
            }
            Op::Normalization(_) => {
                // Keras's formula, (x - mean) / max(sqrt(variance), 1e-7), on the weights as
                // they are, shaped [c, 1, ...] to broadcast in the NCHW body.
                let c = *out_shape.last().unwrap_or(&1);
                let mut dims = vec![c];
                if image {
                    dims.resize(out_shape.len(), 1);
                }
                let [mean, var] = ["mean", "variance"].map(|v| {
                    let data = self.weight(id, v).unwrap_or_default();
                    self.init_f32(self.graph.weight_name(id, v), dims.clone(), data)
                });
                let eps = self.scalar(format!("{name}/epsilon"), Normalization::EPSILON);
                let [centred, std, denominator] =
                    ["centred", "std", "denominator"].map(|v| format!("{name}/{v}"));
                self.node(
                    centred.clone(),
                    "Sub",
                    vec![x(), mean],
                    centred.clone(),
                    vec![],
                );
                self.node(std.clone(), "Sqrt", vec![var], std.clone(), vec![]);
                self.node(
                    denominator.clone(),
                    "Max",
                    vec![std, eps],
                    denominator.clone(),
                    vec![],
                );
                self.node(name, "Div", vec![centred, denominator], out, vec![]);
            }
            Op::GroupNormalization(_) | Op::LayerNormalization(_) => {
                let layout = node
                    .op
                    .norm_layout(&in_shapes[0])
                    .ok_or_else(|| format!("`{name}`: no normalization layout"))?;
                self.normalization(id, &name, x(), out, &in_shapes[0], layout)?;
            }
            Op::SpatialDropout2D(_)
            | Op::GaussianNoise(_)
            | Op::GaussianDropout(_)
            | Op::FixedDropout(_) => self.node(name, "Identity", vec![x()], out, vec![]),
            Op::Conv3D(op) => {
                let a = &op.args;
                let [_, _, _, c] = need_volume("Conv3D")?;
                let pads = Self::window_pads3d(
                    |axis, n, out| op.geometry(axis, n, out),
                    &in_shapes[0],
                    &out_shape,
                );
                let k = a.kernel_size;
                let kernel = self.conv_kernel3d(id, [k[0], k[1], k[2], c, a.filters]);
                let mut inputs = vec![x(), kernel];
                if a.use_bias {
                    inputs.push(self.weight_as_is(id, "bias"));
                }
                let pre = self.pre_activation(a.activation, &out);
                self.node(
                    name.clone(),
                    "Conv",
                    inputs,
                    pre.clone(),
                    vec![
                        ("kernel_shape", Attr::Ints(k.to_vec())),
                        ("strides", Attr::Ints(a.strides.to_vec())),
                        ("dilations", Attr::Ints(a.dilation_rate.to_vec())),
                        ("pads", Attr::Ints(pads)),
                    ],
                );
                self.activation_after(&name, a.activation, pre, out, 1);
            }
            Op::Conv3DTranspose(op) => {
                let a = &op.args;
                let [d, h, w, c] = need_volume("Conv3DTranspose")?;
                let k = a.kernel_size;
                // ONNX's pads crop the full result; output_padding extends it (zeros + bias).
                let mut pads = vec![0i64; 6];
                let mut output_padding = vec![0i64; 3];
                for (axis, n) in [d, h, w].into_iter().enumerate() {
                    let g = op.geometry(axis, n as usize, out_shape[axis] as usize);
                    pads[axis] = g.crop_before as i64;
                    pads[axis + 3] = g.crop_after as i64;
                    output_padding[axis] = g.extend_after as i64;
                }
                let kernel = self.conv_kernel3d(id, [k[0], k[1], k[2], a.filters, c]);
                let mut inputs = vec![x(), kernel];
                if a.use_bias {
                    inputs.push(self.weight_as_is(id, "bias"));
                }
                let pre = self.pre_activation(a.activation, &out);
                let mut attrs = vec![
                    ("kernel_shape", Attr::Ints(k.to_vec())),
                    ("strides", Attr::Ints(a.strides.to_vec())),
                    ("pads", Attr::Ints(pads)),
                ];
                if output_padding.iter().any(|&p| p != 0) {
                    attrs.push(("output_padding", Attr::Ints(output_padding)));
                }
                self.node(name.clone(), "ConvTranspose", inputs, pre.clone(), attrs);
                self.activation_after(&name, a.activation, pre, out, 1);
            }
            Op::MaxPooling3D(op) => {
                need_volume("MaxPooling3D")?;
                let pads = Self::window_pads3d(
                    |axis, n, out| op.geometry(axis, n, out),
                    &in_shapes[0],
                    &out_shape,
                );
                self.node(
                    name,
                    "MaxPool",
                    vec![x()],
                    out,
                    vec![
                        ("kernel_shape", Attr::Ints(op.pool_size.to_vec())),
                        ("strides", Attr::Ints(op.strides.to_vec())),
                        ("pads", Attr::Ints(pads)),
                    ],
                );
            }
            Op::AveragePooling3D(op) => {
                need_volume("AveragePooling3D")?;
                let pads = Self::window_pads3d(
                    |axis, n, out| op.geometry(axis, n, out),
                    &in_shapes[0],
                    &out_shape,
                );
                // count_include_pad 0: the mean of the cells inside the input, as Keras.
                self.node(
                    name,
                    "AveragePool",
                    vec![x()],
                    out,
                    vec![
                        ("kernel_shape", Attr::Ints(op.pool_size.to_vec())),
                        ("strides", Attr::Ints(op.strides.to_vec())),
                        ("pads", Attr::Ints(pads)),
                    ],
                );
            }
            Op::UpSampling3D(op) => {
                need_volume("UpSampling3D")?;
                let mut factors = vec![1.0, 1.0];
                factors.extend(op.size.map(|v| v as f32));
                let scales = self.init_f32(format!("{name}/scales"), vec![5], factors);
                let attrs = match op.interpolation {
                    VolumeInterpolation::Nearest => vec![
                        ("mode", Attr::Str("nearest")),
                        ("coordinate_transformation_mode", Attr::Str("asymmetric")),
                        ("nearest_mode", Attr::Str("floor")),
                    ],
                    VolumeInterpolation::Trilinear => vec![
                        ("mode", Attr::Str("linear")),
                        (
                            "coordinate_transformation_mode",
                            Attr::Str(if op.align_corners {
                                "align_corners"
                            } else {
                                "half_pixel"
                            }),
                        ),
                    ],
                };
                self.node(name, "Resize", vec![x(), String::new(), scales], out, attrs);
            }
            Op::Cropping3D(op) => {
                let [d, h, w, _] = need_volume("Cropping3D")?;
                let k = op.cropping;
                let starts = self.init_i64(format!("{name}/starts"), vec![k[0], k[2], k[4]]);
                let ends =
                    self.init_i64(format!("{name}/ends"), vec![d - k[1], h - k[3], w - k[5]]);
                let axes = self.init_i64(format!("{name}/axes"), vec![2, 3, 4]);
                self.node(name, "Slice", vec![x(), starts, ends, axes], out, vec![]);
            }
            Op::ZeroPadding3D(op) => {
                need_volume("ZeroPadding3D")?;
                let p = op.padding;
                let pads = self.init_i64(
                    format!("{name}/pads"),
                    vec![0, 0, p[0], p[2], p[4], 0, 0, p[1], p[3], p[5]],
                );
                let mode = onnx_pad_mode(op.mode, &name)?;
                self.node(
                    name,
                    "Pad",
                    vec![x(), pads],
                    out,
                    vec![("mode", Attr::Str(mode))],
                );
            }
            Op::GlobalAveragePooling3D(op) => {
                need_volume("GlobalAveragePooling3D")?;
                self.node(
                    name,
                    "ReduceMean",
                    vec![x()],
                    out,
                    vec![
                        ("axes", Attr::Ints(vec![2, 3, 4])),
                        ("keepdims", Attr::Int(i64::from(op.keepdims))),
                    ],
                );
            }
            Op::GlobalAveragePooling2D(op) => {
                need_image("GlobalAveragePooling2D")?;
                self.node(
                    name,
                    "ReduceMean",
                    vec![x()],
                    out,
                    vec![
                        ("axes", Attr::Ints(vec![2, 3])),
                        ("keepdims", Attr::Int(i64::from(op.keepdims))),
                    ],
                );
            }
        }
        Ok(())
    }

    /// An elementwise merge: one `op_type` node over all inputs when it takes any number
    /// (`variadic`) or two; otherwise a chain, left to right as Keras computes it.
    #[allow(clippy::too_many_arguments)]
    fn merge(
        &mut self,
        name: &str,
        function: MergeFn,
        xs: Vec<String>,
        out: String,
        in_shapes: &[Vec<i64>],
        out_shape: &[i64],
    ) -> Result<(), String> {
        // NCHW in the body: numpy broadcasting lines up only when the ranks agree.
        if in_shapes.iter().any(|s| s.len() != out_shape.len()) {
            return Err(format!(
                "`{name}` merges inputs of different ranks; ONNX export handles merges of equal \
                 rank (broadcasting sides of size 1) only"
            ));
        }
        // The ONNX operator, and whether it takes any number of inputs (else a chain of pairs).
        let (op_type, variadic) = match function {
            MergeFn::Add => ("Add", false),
            MergeFn::Multiply => ("Mul", false),
            MergeFn::Subtract => ("Sub", false),
            MergeFn::Average => ("Mean", true),
            MergeFn::Maximum => ("Max", true),
            MergeFn::Minimum => ("Min", true),
            MergeFn::Divide => ("Div", false),
        };
        if variadic || xs.len() == 2 {
            self.node(name.to_string(), op_type, xs, out, vec![]);
            return Ok(());
        }
        let mut acc = xs[0].clone();
        for (k, input) in xs.iter().enumerate().skip(1) {
            let (node_name, value) = if k + 1 == xs.len() {
                (name.to_string(), out.clone())
            } else {
                let v = format!("{name}/{k}");
                (v.clone(), v)
            };
            self.node(
                node_name,
                op_type,
                vec![acc, input.clone()],
                value.clone(),
                vec![],
            );
            acc = value;
        }
        Ok(())
    }

    /// GroupNormalization and LayerNormalization in the NCHW body, from Reshape, ReduceMean,
    /// Sub, Mul, Add, Sqrt and Div: two-pass moments as TF computes them (onnxruntime's
    /// LayerNormalization takes the variance as E[x^2] - E[x]^2, which loses digits when the
    /// mean is large; opset 17 has no GroupNormalization). The value is viewed as
    /// `[N, groups, group_size, H, W]` (channels outermost in NCHW); the statistics reduce the
    /// group's channels and the normalised spatial axes.
    fn normalization(
        &mut self,
        id: NodeId,
        name: &str,
        x: String,
        out: String,
        shape: &[i64],
        layout: NormLayout,
    ) -> Result<(), String> {
        let (h, w, c) = match *shape {
            [h, w, c] => (h, w, c),
            [c] => (1, 1, c),
            // Tokens (N, T, E), channels last: normalised as the image (N, E, T, 1).
            [t, e] => {
                let swap = || vec![("perm", Attr::Ints(vec![0, 2, 1]))];
                let nct = self.value(format!("{name}/nct"), "Transpose", vec![x], swap());
                let to_image = self.init_i64(format!("{name}/image_shape"), vec![0, e, t, 1]);
                let image = self.value(
                    format!("{name}/as_image"),
                    "Reshape",
                    vec![nct, to_image],
                    vec![],
                );
                let normalized = format!("{name}/normalized_image");
                self.normalization(id, name, image, normalized.clone(), &[t, 1, e], layout)?;
                let to_tokens = self.init_i64(format!("{name}/nct_shape"), vec![0, e, t]);
                let back = self.value(
                    format!("{name}/nct_out"),
                    "Reshape",
                    vec![normalized, to_tokens],
                    vec![],
                );
                self.node(
                    format!("{name}/tokens"),
                    "Transpose",
                    vec![back],
                    out,
                    swap(),
                );
                return Ok(());
            }
            _ => {
                return Err(format!(
                    "`{name}`: ONNX export normalises images or vectors only, not {shape:?}"
                ))
            }
        };
        let (groups, group_size) = (layout.groups as i64, layout.group_size as i64);
        // The spatial axes inside the statistics: both when one per item, W alone when one per
        // row (LayerNormalization over [2, 3]), none when one per pixel.
        let (norm_h, norm_w) = (
            layout.outer == 1,
            layout.outer == 1 || layout.outer as i64 == h,
        );
        let mut axes = vec![2];
        axes.extend(norm_h.then_some(3));
        axes.extend(norm_w.then_some(4));
        // gamma and beta broadcast over [1, groups, group_size, Ha, Wa].
        let per_position = layout.affine_per_position;
        let ha = if per_position && norm_h { h } else { 1 };
        let wa = if per_position && norm_w { w } else { 1 };
        let affine_dims = vec![1, groups, group_size, ha, wa];
        let mut affine = |var: &str, absent: f32| -> String {
            let keras = self
                .weight(id, var)
                .unwrap_or_else(|| vec![absent; layout.affine_len()]);
            let mut data = Vec::with_capacity((groups * group_size * ha * wa) as usize);
            for k in 0..(groups * group_size) as usize {
                for p in 0..(ha * wa) as usize {
                    let position = if per_position {
                        p * layout.groups * layout.group_size
                    } else {
                        0
                    };
                    data.push(keras.get(position + k).copied().unwrap_or(absent));
                }
            }
            self.init_f32(format!("{name}/{var}"), affine_dims.clone(), data)
        };
        let gamma = affine("gamma", 1.0);
        let beta = affine("beta", 0.0);
        let grouped_shape = self.init_i64(
            format!("{name}/grouped_shape"),
            vec![0, groups, group_size, h, w],
        );
        let body_shape = if shape.len() == 3 {
            vec![0, c, h, w]
        } else {
            vec![0, c]
        };
        let body_shape = self.init_i64(format!("{name}/body_shape"), body_shape);
        let eps = self.scalar(format!("{name}/epsilon"), layout.epsilon);
        let v = |step: &str| format!("{name}/{step}");
        let reduce = || {
            vec![
                ("axes", Attr::Ints(axes.clone())),
                ("keepdims", Attr::Int(1)),
            ]
        };
        self.node(
            v("grouped"),
            "Reshape",
            vec![x, grouped_shape],
            v("grouped"),
            vec![],
        );
        self.node(
            v("mean"),
            "ReduceMean",
            vec![v("grouped")],
            v("mean"),
            reduce(),
        );
        self.node(
            v("centered"),
            "Sub",
            vec![v("grouped"), v("mean")],
            v("centered"),
            vec![],
        );
        self.node(
            v("squared"),
            "Mul",
            vec![v("centered"), v("centered")],
            v("squared"),
            vec![],
        );
        self.node(
            v("variance"),
            "ReduceMean",
            vec![v("squared")],
            v("variance"),
            reduce(),
        );
        self.node(
            v("shifted"),
            "Add",
            vec![v("variance"), eps],
            v("shifted"),
            vec![],
        );
        self.node(v("std"), "Sqrt", vec![v("shifted")], v("std"), vec![]);
        self.node(
            v("normalized"),
            "Div",
            vec![v("centered"), v("std")],
            v("normalized"),
            vec![],
        );
        self.node(
            v("scaled"),
            "Mul",
            vec![v("normalized"), gamma],
            v("scaled"),
            vec![],
        );
        self.node(
            v("shifted_out"),
            "Add",
            vec![v("scaled"), beta],
            v("shifted_out"),
            vec![],
        );
        self.node(
            name.to_string(),
            "Reshape",
            vec![v("shifted_out"), body_shape],
            out,
            vec![],
        );
        Ok(())
    }

    /// Where a layer's main op writes before its built-in activation (`out` when linear).
    fn pre_activation(&self, activation: ActivationFn, out: &str) -> String {
        if activation == ActivationFn::Linear {
            out.to_string()
        } else {
            format!("{out}/preact")
        }
    }

    /// A layer's built-in activation (Conv2D, Dense): nodes named `<layer>/<activation>`.
    fn activation_after(
        &mut self,
        layer: &str,
        act: ActivationFn,
        pre: String,
        out: String,
        axis: i64,
    ) {
        if act != ActivationFn::Linear {
            self.activation(&format!("{layer}/{act}"), act, pre, out, axis);
        }
    }

    /// A chain of ops from `x` to `out`: each step takes the previous value as its first input,
    /// then its extra inputs. The last node is named `name`, the others `name/<suffix>`.
    fn chain(&mut self, name: &str, x: String, out: String, steps: Vec<Step>) {
        let mut current = x;
        let last = steps.len() - 1;
        for (i, (op_type, suffix, extra, attrs)) in steps.into_iter().enumerate() {
            let (node_name, value) = if i == last {
                (name.to_string(), out.clone())
            } else {
                let v = format!("{name}/{suffix}");
                (v.clone(), v)
            };
            let mut inputs = vec![current];
            inputs.extend(extra);
            self.node(node_name, op_type, inputs, value.clone(), attrs);
            current = value;
        }
    }

    /// A Keras activation from `x` to `out`; `axis` is the channel axis (for softmax).
    fn activation(&mut self, name: &str, act: ActivationFn, x: String, out: String, axis: i64) {
        let unary = |op: &'static str| -> Vec<Step> { vec![(op, "", vec![], vec![])] };
        let steps: Vec<Step> = match act {
            ActivationFn::Relu => unary("Relu"),
            ActivationFn::Sigmoid => unary("Sigmoid"),
            ActivationFn::Tanh => unary("Tanh"),
            ActivationFn::Softplus => unary("Softplus"),
            ActivationFn::Softsign => unary("Softsign"),
            ActivationFn::Exponential => unary("Exp"),
            ActivationFn::Softmax => vec![("Softmax", "", vec![], vec![("axis", Attr::Int(axis))])],
            ActivationFn::Elu => vec![("Elu", "", vec![], vec![("alpha", Attr::Float(1.0))])],
            ActivationFn::Selu => vec![(
                "Selu",
                "",
                vec![],
                vec![
                    ("alpha", Attr::Float(SELU_ALPHA)),
                    ("gamma", Attr::Float(SELU_SCALE)),
                ],
            )],
            ActivationFn::HardSigmoid => vec![(
                "HardSigmoid",
                "",
                vec![],
                vec![("alpha", Attr::Float(0.2)), ("beta", Attr::Float(0.5))],
            )],
            ActivationFn::LeakyRelu => {
                vec![("LeakyRelu", "", vec![], vec![("alpha", Attr::Float(0.2))])]
            }
            ActivationFn::Relu6 => {
                let lo = self.scalar(format!("{name}/min"), 0.0);
                let hi = self.scalar(format!("{name}/max"), 6.0);
                vec![("Clip", "", vec![lo, hi], vec![])]
            }
            ActivationFn::Swish | ActivationFn::Silu => vec![
                ("Sigmoid", "sigmoid", vec![], vec![]),
                ("Mul", "", vec![x.clone()], vec![]),
            ],
            ActivationFn::Mish => vec![
                ("Softplus", "softplus", vec![], vec![]),
                ("Tanh", "tanh", vec![], vec![]),
                ("Mul", "", vec![x.clone()], vec![]),
            ],
            ActivationFn::Gelu => {
                // Keras's exact gelu: 0.5 * x * (1 + erf(x / sqrt(2))) (ONNX Gelu is opset 20).
                let sqrt2 = self.scalar(format!("{name}/sqrt2"), std::f32::consts::SQRT_2);
                let one = self.scalar(format!("{name}/one"), 1.0);
                let half = self.scalar(format!("{name}/half"), 0.5);
                vec![
                    ("Div", "div", vec![sqrt2], vec![]),
                    ("Erf", "erf", vec![], vec![]),
                    ("Add", "add", vec![one], vec![]),
                    ("Mul", "mul", vec![x.clone()], vec![]),
                    ("Mul", "", vec![half], vec![]),
                ]
            }
            ActivationFn::Linear => unary("Identity"),
        };
        self.chain(name, x, out, steps);
    }

    /// Keras's ReLU layer: `max_value` if x >= max_value, else x if x >= threshold, else
    /// negative_slope * (x - threshold).
    fn relu_layer(&mut self, name: &str, op: &crate::ir::ops::ReLU, x: String, out: String) {
        let (slope, t) = (op.negative_slope as f32, op.threshold as f32);
        if t == 0.0 {
            match (op.max_value, slope == 0.0) {
                (None, true) => return self.node(name, "Relu", vec![x], out, vec![]),
                (Some(m), true) => {
                    let lo = self.scalar(format!("{name}/min"), 0.0);
                    let hi = self.scalar(format!("{name}/max"), m as f32);
                    return self.node(name, "Clip", vec![x, lo, hi], out, vec![]);
                }
                (None, false) => {
                    return self.node(
                        name,
                        "LeakyRelu",
                        vec![x],
                        out,
                        vec![("alpha", Attr::Float(slope))],
                    )
                }
                (Some(_), false) => {}
            }
        }
        // The general case, as Where nodes.
        let th = self.scalar(format!("{name}/threshold"), t);
        let sl = self.scalar(format!("{name}/negative_slope"), slope);
        let v = |s: &str| format!("{name}/{s}");
        self.node(
            v("shifted"),
            "Sub",
            vec![x.clone(), th.clone()],
            v("shifted"),
            vec![],
        );
        self.node(v("leak"), "Mul", vec![v("shifted"), sl], v("leak"), vec![]);
        self.node(
            v("active"),
            "GreaterOrEqual",
            vec![x.clone(), th],
            v("active"),
            vec![],
        );
        match op.max_value {
            None => self.node(name, "Where", vec![v("active"), x, v("leak")], out, vec![]),
            Some(m) => {
                let mx = self.scalar(format!("{name}/max_value"), m as f32);
                self.node(
                    v("below_max"),
                    "Where",
                    vec![v("active"), x.clone(), v("leak")],
                    v("below_max"),
                    vec![],
                );
                self.node(
                    v("saturated"),
                    "GreaterOrEqual",
                    vec![x, mx.clone()],
                    v("saturated"),
                    vec![],
                );
                self.node(
                    name,
                    "Where",
                    vec![v("saturated"), mx, v("below_max")],
                    out,
                    vec![],
                );
            }
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut g = Pb::default();
        for n in &self.nodes {
            g.message(field::GRAPH_NODE, &encode_node(n));
        }
        let model_name = if self.graph.name.is_empty() {
            "model"
        } else {
            self.graph.name.as_str()
        };
        g.string(field::GRAPH_NAME, model_name);
        for t in &self.initializers {
            g.message(field::GRAPH_INITIALIZER, &encode_tensor(t));
        }
        g.string(
            field::GRAPH_DOC_STRING,
            "Exported by unetc. Inputs and outputs are NHWC (as in Keras); the body runs in NCHW.",
        );
        for v in &self.inputs {
            g.message(field::GRAPH_INPUT, &encode_value_info(v));
        }
        for v in &self.outputs {
            g.message(field::GRAPH_OUTPUT, &encode_value_info(v));
        }
        for v in &self.value_info {
            g.message(field::GRAPH_VALUE_INFO, &encode_value_info(v));
        }
        let mut opset = Pb::default();
        opset.string(field::OPSET_DOMAIN, "");
        opset.int(field::OPSET_VERSION, OPSET);
        let mut m = Pb::default();
        m.int(field::MODEL_IR_VERSION, IR_VERSION);
        m.string(field::MODEL_PRODUCER_NAME, "unetc");
        m.string(field::MODEL_PRODUCER_VERSION, env!("CARGO_PKG_VERSION"));
        m.string(
            field::MODEL_DOC_STRING,
            &format!("{model_name}: a Keras model exported by unetc (NHWC in and out)"),
        );
        m.message(field::MODEL_GRAPH, &g);
        m.message(field::MODEL_OPSET_IMPORT, &opset);
        m.buf
    }
}

/// One op of a [`Exporter::chain`]: op type, value suffix, extra inputs, attributes.
type Step = (
    &'static str,
    &'static str,
    Vec<String>,
    Vec<(&'static str, Attr)>,
);

/// What [`write_onnx`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct OnnxSummary {
    pub nodes: usize,
    pub initializers: usize,
    pub bytes: usize,
    /// The seed of the random weights, when they were not read from a file.
    pub random_seed: Option<u64>,
}

/// Where the exported model's weights come from. There is no default: an ONNX file with random
/// weights looks like a trained one, so asking for them must be explicit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnnxWeights<'a> {
    /// A safetensors file with tensors named `<layer>/<variable>`.
    File(&'a std::path::Path),
    /// Seeded random weights, as `unetc init-weights --seed N` writes them.
    Random { seed: u64 },
}

/// `unetc export SPEC --to onnx (--weights W | --random-weights [--seed N]) -o OUT [--force]`:
/// compiles the spec, reads (or seeds) the weights and writes the ONNX model atomically.
pub fn write_onnx(
    spec: &std::path::Path,
    weights: OnnxWeights<'_>,
    out: &std::path::Path,
    force: bool,
) -> Result<OnnxSummary, crate::runner::RunError> {
    use crate::runner::{compile_checked, expected_weights, init_weights, RunError};
    let c = compile_checked(spec, None)?;
    let (w, random_seed) = match weights {
        OnnxWeights::File(path) => (crate::io::load_weights(path, &expected_weights(&c))?, None),
        OnnxWeights::Random { seed } => (init_weights(&c, seed)?, Some(seed)),
    };
    let bytes = export_onnx(&c.graph, &c.info, &w).map_err(RunError::Usage)?;
    crate::io::write_atomic(out, force, |f| f.write_all(&bytes))?;
    let (nodes, initializers) = count_top_level(&bytes);
    Ok(OnnxSummary {
        nodes,
        initializers,
        bytes: bytes.len(),
        random_seed,
    })
}

/// Node and initializer counts of a model this module wrote (for the CLI's message).
fn count_top_level(model: &[u8]) -> (usize, usize) {
    fn fields(buf: &[u8]) -> Vec<(u32, &[u8])> {
        let mut out = Vec::new();
        let mut i = 0;
        let varint = |i: &mut usize| -> Option<u64> {
            let mut v = 0u64;
            for shift in (0..64).step_by(7) {
                let b = *buf.get(*i)?;
                *i += 1;
                v |= u64::from(b & 0x7f) << shift;
                if b < 0x80 {
                    return Some(v);
                }
            }
            None
        };
        while i < buf.len() {
            let Some(key) = varint(&mut i) else { break };
            match key & 7 {
                0 => {
                    varint(&mut i);
                }
                5 => i += 4,
                1 => i += 8,
                2 => {
                    let Some(len) = varint(&mut i) else { break };
                    let end = (i + len as usize).min(buf.len());
                    out.push(((key >> 3) as u32, &buf[i..end]));
                    i = end;
                }
                _ => break,
            }
        }
        out
    }
    let graph = fields(model)
        .into_iter()
        .find(|(f, _)| *f == field::MODEL_GRAPH)
        .map(|(_, b)| b)
        .unwrap_or(&[]);
    let g = fields(graph);
    (
        g.iter().filter(|(f, _)| *f == field::GRAPH_NODE).count(),
        g.iter()
            .filter(|(f, _)| *f == field::GRAPH_INITIALIZER)
            .count(),
    )
}

/// ONNX Pad's `mode` for a padding's mode.
/// ONNX Pad's mode; ONNX has no symmetric mirror.
fn onnx_pad_mode(mode: PadMode, name: &str) -> Result<&'static str, String> {
    match mode {
        PadMode::Zeros => Ok("constant"),
        PadMode::Reflect => Ok("reflect"),
        PadMode::Replicate => Ok("edge"),
        PadMode::Symmetric => Err(format!(
            "`{name}` pads symmetrically (the edge repeated in the mirror), which ONNX's Pad \
             cannot express (its modes: constant, reflect, edge)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_encode_like_protobuf() {
        let mut p = Pb::default();
        p.varint(300);
        assert_eq!(p.buf, [0xac, 0x02]);
        let mut p = Pb::default();
        p.int(1, -1);
        assert_eq!(p.buf.len(), 11);
    }

    #[test]
    fn keras_axes_map_to_nchw() {
        assert_eq!(onnx_axis(-1, 3, true), 1);
        assert_eq!(onnx_axis(3, 3, true), 1);
        assert_eq!(onnx_axis(1, 3, true), 2);
        assert_eq!(onnx_axis(2, 3, true), 3);
        assert_eq!(onnx_axis(-1, 1, false), 1);
        // Volumes: NDHWC axes 1, 2, 3, 4 to NCDHW 2, 3, 4, 1.
        assert_eq!(onnx_axis(-1, 4, true), 1);
        assert_eq!(onnx_axis(1, 4, true), 2);
        assert_eq!(onnx_axis(3, 4, true), 4);
        assert_eq!(to_channels_first(4), vec![0, 4, 1, 2, 3]);
        assert_eq!(to_channels_last(4), vec![0, 2, 3, 4, 1]);
        assert_eq!(to_channels_first(3), vec![0, 3, 1, 2]);
        assert_eq!(to_channels_last(3), vec![0, 2, 3, 1]);
    }
}
