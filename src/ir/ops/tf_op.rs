//! TFOpLambda: a TensorFlow function applied to Keras tensors (`x + s`, `x * g`,
//! `tf.concat([a, b], -1)`, `tf.nn.relu(x)`), which Keras wraps in a layer named after the
//! function (`tf.__operators__.add`, `tf.concat_1`, ...). No weights. Each function computes what
//! a Keras layer unetc already runs, so the backends reuse that layer's kernel.

use super::keywords::TfFunction;
use super::merge::{broadcast_shapes, Concatenate, MergeFn};
use super::reshape::Reshape;
use super::{ActivationFn, Interpolation, LayerKind, PadMode, Shape, ShapeError, TfPadMode};
use crate::ir::value::{ArgReader, Value, MAX_DIM};
use serde_json::{json, Value as Json};
use std::sync::Arc;

/// What a TensorFlow function computes, as the Keras layer that computes the same.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TfCompute {
    /// Two tensors, broadcast as NumPy does (Keras's merges broadcast the same way).
    Merge(MergeFn),
    /// `tf.concat(values, axis)`.
    Concat(i64),
    /// One tensor, elementwise.
    Activation(ActivationFn),
    /// One tensor and a Python number (`x + 1.0`, `1 - g`, `x * 0.5`, `x / 2.0`,
    /// `tf.maximum(x, 0.0)`).
    Scalar(ScalarOp),
    /// `tf.reduce_mean(x, axis=-1, keepdims=True)` / `reduce_max`: one value per pixel.
    ReduceChannels(ReduceFn),
    /// `tf.reduce_mean(x, axis=[1, 2])` / `reduce_max`: one value per channel, as Keras's
    /// GlobalAveragePooling2D / GlobalMaxPooling2D compute it (`keepdims` as given).
    ReduceImage(ImageReduceFn),
    /// The same values in another shape (`tf.expand_dims`, `tf.squeeze`, `tf.reshape`), as
    /// Keras's Reshape.
    Reshape,
    /// `tf.image.resize` to `size` (half-pixel centres, no antialias), as Keras's Resizing
    /// (and, to a whole multiple of the input, its UpSampling2D).
    Resize(Interpolation),
    /// `x[...]`: a window of rows, columns and channels ([`TFOpLambda::slice_window`]), in the
    /// output's shape.
    Slice,
    /// One tensor and a constant tensor ([`TFOpLambda::operand`]), broadcast as NumPy does.
    TensorMerge(TensorMergeOp),
    /// `tf.pad` of an image's height and width: ZeroPadding2D ([`TFOpLambda::as_padding`]).
    Pad,
}

/// `f(x, c)` of a tensor and a constant tensor, or `f(c, x)` when the constant comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TensorMergeOp {
    pub function: MergeFn,
    pub constant_first: bool,
}

/// Bounds on a constant tensor operand (a spec is untrusted): values and axes.
pub const MAX_OPERAND_VALUES: usize = 1 << 24;
const MAX_OPERAND_RANK: usize = 5;

/// A constant tensor operand (`x + pos` where `pos` was computed outside the model, such as
/// UNETR's position embeddings of `tf.range`): Keras keeps its values in the model's JSON, so
/// the spec holds them too, as a nested list (`y: [[0.1, 0.2], [0.3, 0.4]]`).
#[derive(Debug, Clone, PartialEq)]
pub struct TensorOperand {
    /// As written (a leading 1 may be the batch axis; [`Self::item_shape`] says).
    pub shape: Vec<i64>,
    /// Row-major, float32 as TensorFlow converts them.
    pub values: Arc<[f32]>,
    /// The constant is the function's `x` (`pos - g`); otherwise its `y` (`g - pos`).
    pub first: bool,
}

impl TensorOperand {
    /// Reads a nested list of numbers: rectangular, finite in float32, within the bounds.
    pub fn from_value(value: &Value, first: bool) -> Result<TensorOperand, String> {
        let mut shape = Vec::new();
        let mut at = value;
        while let Value::List(items) = at {
            if shape.len() == MAX_OPERAND_RANK {
                return Err(format!("more than {MAX_OPERAND_RANK} nested lists"));
            }
            shape.push(items.len() as i64);
            match items.first() {
                Some(first) => at = first,
                None => return Err("an empty list".into()),
            }
        }
        let count = shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d as usize))
            .filter(|&n| n <= MAX_OPERAND_VALUES)
            .ok_or_else(|| format!("more than {MAX_OPERAND_VALUES} values"))?;
        let mut values = Vec::with_capacity(count);
        fn walk(v: &Value, shape: &[i64], out: &mut Vec<f32>) -> Result<(), String> {
            match (v, shape.split_first()) {
                (Value::List(items), Some((&n, rest))) if items.len() as i64 == n => {
                    items.iter().try_for_each(|item| walk(item, rest, out))
                }
                (Value::List(items), Some((&n, _))) => Err(format!(
                    "a list of {} where the others have {n}: the lists must be rectangular",
                    items.len()
                )),
                (Value::Int(i), None) => push(*i as f64, out),
                (Value::Float(x), None) => push(*x, out),
                (other, None) => Err(format!("{} where a number belongs", other.type_name())),
                (other, Some(_)) => Err(format!(
                    "{} where a list belongs: the lists must be rectangular",
                    other.type_name()
                )),
            }
        }
        fn push(x: f64, out: &mut Vec<f32>) -> Result<(), String> {
            let v = x as f32;
            if !v.is_finite() {
                return Err(format!(
                    "the value {x:?} at position {} is not a finite float32 number",
                    out.len()
                ));
            }
            out.push(v);
            Ok(())
        }
        walk(value, &shape, &mut values)?;
        Ok(TensorOperand {
            shape,
            values: values.into(),
            first,
        })
    }

    /// The constant's shape against a tensor of `x_rank` axes besides the batch: TensorFlow
    /// lines the axes up from the last, so one axis more than the tensor's is the batch's (of
    /// size 1, checked by the shape rule) and is dropped.
    pub fn item_shape(&self, x_rank: usize) -> &[i64] {
        if self.shape.len() == x_rank + 1 {
            &self.shape[1..]
        } else {
            &self.shape
        }
    }

    /// The values as a nested list, as Python and the spec write them.
    pub fn nested_text(&self) -> String {
        fn level(values: &[f32], shape: &[i64], out: &mut String) {
            match shape.split_first() {
                // Rust's shortest float32 text (`0.1`, `1e-5`) reads back as the same float32
                // in the DSL and in Python.
                None => out.push_str(&format!("{:?}", values[0])),
                Some((&n, rest)) => {
                    let step = values.len() / n.max(1) as usize;
                    out.push('[');
                    for (k, chunk) in values.chunks(step.max(1)).enumerate() {
                        if k > 0 {
                            out.push_str(", ");
                        }
                        level(chunk, rest, out);
                    }
                    out.push(']');
                }
            }
        }
        let mut out = String::new();
        level(&self.values, &self.shape, &mut out);
        out
    }
}

/// A reduction over height and width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageReduceFn {
    Mean,
    Max,
}

/// A reduction over the channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceFn {
    Mean,
    Max,
    /// The index of the largest channel (the first of equal ones, as TensorFlow's), as a float.
    Argmax,
}

impl ReduceFn {
    /// The mean or the maximum of one pixel's channels (the mean as TensorFlow sums: in order,
    /// then divided by the count).
    pub fn apply(self, channels: &[f32]) -> f32 {
        match self {
            ReduceFn::Mean => channels.iter().sum::<f32>() / channels.len() as f32,
            ReduceFn::Max => channels.iter().copied().fold(f32::NEG_INFINITY, f32::max),
            ReduceFn::Argmax => argmax(channels) as f32,
        }
    }
}

/// The index of the first largest value (0 for an empty slice).
pub fn argmax(values: &[f32]) -> usize {
    let mut best = 0;
    for (k, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = k;
        }
    }
    best
}

/// One item of a Python subscript (`x[..., 0:2]`, `x[:, :, :, 1]`, `x[..., tf.newaxis]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexItem {
    /// `...`: every axis the other items do not name.
    Ellipsis,
    /// `None` (`tf.newaxis`): a new axis of size 1.
    NewAxis,
    /// `start:stop:step`, the bounds optional (`:` is the whole axis, `::-1` reverses it), the
    /// step not 0; Python's rules for negatives and defaults.
    Range(Option<i64>, Option<i64>, i64),
    /// One position; the axis is dropped.
    At(i64),
}

/// The positions of one axis a subscript reads: `len` of them from `start`, `step` apart
/// (backwards when `step` is negative: `::-1` reverses the axis).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AxisRead {
    pub start: usize,
    pub step: isize,
    pub len: usize,
}

impl AxisRead {
    /// Every position of an axis of `n`, in order.
    pub fn whole(n: usize) -> AxisRead {
        Self::span(0..n)
    }

    /// Consecutive positions, forwards.
    pub fn span(r: std::ops::Range<usize>) -> AxisRead {
        AxisRead {
            start: r.start,
            step: 1,
            len: r.len(),
        }
    }

    /// The `k`-th position read.
    pub fn at(&self, k: usize) -> usize {
        (self.start as isize + k as isize * self.step) as usize
    }

    pub fn positions(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.len).map(|k| self.at(k))
    }

    /// The positions as a range when they are consecutive and forwards.
    pub fn range(&self) -> Option<std::ops::Range<usize>> {
        (self.step == 1 || self.len <= 1).then_some(self.start..self.start + self.len)
    }

    /// Every position of an axis of `n`, in order.
    pub fn is_whole(&self, n: usize) -> bool {
        self.range() == Some(0..n)
    }
}

/// The part of an image (or of a tensor's channels) a subscript reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceWindow {
    pub rows: AxisRead,
    pub cols: AxisRead,
    pub channels: AxisRead,
}

/// A subscript as Python writes it; unetc runs those that keep the batch whole, slice or pick an
/// image's rows, columns and channels (the last axis of other tensors), and add or drop axes of
/// size 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscript(pub Vec<IndexItem>);

/// Bounds on a subscript's text and items (a spec is untrusted).
const MAX_SUBSCRIPT_TEXT: usize = 256;
const MAX_SUBSCRIPT_ITEMS: usize = 8;

impl Subscript {
    /// Reads `[..., 0:2]` (the brackets optional); items `...`, `None`, `tf.newaxis`,
    /// `np.newaxis`, `:`, `a:`, `:b`, `a:b`, `a:b:step` (`::2`, `::-1`) and integers.
    pub fn parse(text: &str) -> Result<Subscript, String> {
        if text.len() > MAX_SUBSCRIPT_TEXT {
            return Err(format!("longer than {MAX_SUBSCRIPT_TEXT} characters"));
        }
        let t = text.trim();
        let t = match (t.strip_prefix('['), t.ends_with(']')) {
            (Some(inner), true) => &inner[..inner.len() - 1],
            (None, false) => t,
            _ => return Err("unbalanced brackets".into()),
        };
        let int = |s: &str| -> Result<i64, String> {
            s.trim()
                .parse::<i64>()
                .ok()
                .filter(|v| v.unsigned_abs() <= MAX_DIM as u64)
                .ok_or_else(|| format!("`{}` is not a whole number (within ±{MAX_DIM})", s.trim()))
        };
        let bound = |s: &str| -> Result<Option<i64>, String> {
            match s.trim() {
                "" | "None" => Ok(None),
                s => int(s).map(Some),
            }
        };
        let mut items = Vec::new();
        for part in t.split(',') {
            if items.len() == MAX_SUBSCRIPT_ITEMS {
                return Err(format!("more than {MAX_SUBSCRIPT_ITEMS} items"));
            }
            let part = part.trim();
            let item = match part {
                "..." | "Ellipsis" => IndexItem::Ellipsis,
                "None" | "tf.newaxis" | "np.newaxis" | "newaxis" => IndexItem::NewAxis,
                "" => return Err("an empty item (two commas, or none at all)".into()),
                p if p.contains(':') => {
                    let bounds: Vec<&str> = p.split(':').collect();
                    match bounds[..] {
                        [a, b] => IndexItem::Range(bound(a)?, bound(b)?, 1),
                        [a, b, step] => match bound(step)? {
                            Some(0) => return Err(format!("`{p}`: a step of 0")),
                            step => IndexItem::Range(bound(a)?, bound(b)?, step.unwrap_or(1)),
                        },
                        _ => return Err(format!("`{p}`: more than two colons")),
                    }
                }
                p => IndexItem::At(int(p)?),
            };
            items.push(item);
        }
        if items.iter().filter(|i| **i == IndexItem::Ellipsis).count() > 1 {
            return Err("more than one `...`".into());
        }
        Ok(Subscript(items))
    }

    /// The subscript as Python writes it, brackets included (`[..., 0:2]`).
    pub fn text(&self) -> String {
        let bound = |b: Option<i64>| b.map(|v| v.to_string()).unwrap_or_default();
        let items: Vec<String> = self
            .0
            .iter()
            .map(|item| match item {
                IndexItem::Ellipsis => "...".to_string(),
                IndexItem::NewAxis => "None".to_string(),
                IndexItem::Range(a, b, 1) => format!("{}:{}", bound(*a), bound(*b)),
                IndexItem::Range(a, b, step) => format!("{}:{}:{step}", bound(*a), bound(*b)),
                IndexItem::At(k) => k.to_string(),
            })
            .collect();
        format!("[{}]", items.join(", "))
    }

    /// What the subscript does to a tensor of `shape` (the batch axis not included): the
    /// output's shape and the window read, or why unetc does not run it.
    pub fn apply(&self, shape: &[i64]) -> Result<(Shape, SliceWindow), String> {
        let rank = shape.len() + 1;
        let consumes = |i: &IndexItem| matches!(i, IndexItem::Range(..) | IndexItem::At(_));
        let named = self.0.iter().filter(|i| consumes(i)).count();
        if named > rank {
            return Err(format!(
                "{named} indices for a tensor of {rank} axes (the batch's included)"
            ));
        }
        let mut items: Vec<IndexItem> = Vec::new();
        for &item in &self.0 {
            if item == IndexItem::Ellipsis {
                items.extend(std::iter::repeat_n(
                    IndexItem::Range(None, None, 1),
                    rank - named,
                ));
            } else {
                items.push(item);
            }
        }
        if !self.0.contains(&IndexItem::Ellipsis) {
            items.extend(std::iter::repeat_n(
                IndexItem::Range(None, None, 1),
                rank - named,
            ));
        }
        let channels = shape.last().copied().unwrap_or(1);
        // An image's height and width may be sliced (a crop); other axes are kept whole.
        let image = shape.len() == 3;
        let whole = |n: i64| AxisRead::whole(n as usize);
        let mut window = SliceWindow {
            rows: whole(if image { shape[0] } else { 1 }),
            cols: whole(if image { shape[1] } else { 1 }),
            channels: whole(channels),
        };
        let mut out = Vec::new();
        let mut axis = 0usize;
        for item in items {
            let (n, last) = match axis {
                0 => (0, false),
                // Past the last axis only for new axes (indices were counted above).
                a => (shape.get(a - 1).copied().unwrap_or(1), a == shape.len()),
            };
            match item {
                IndexItem::Ellipsis => {}
                IndexItem::NewAxis if axis == 0 => {
                    return Err("a new axis before the batch axis moves the batch".into())
                }
                IndexItem::NewAxis => out.push(1),
                // `:` or `0:` keeps the whole batch.
                IndexItem::Range(None | Some(0), None, 1) if axis == 0 => axis += 1,
                IndexItem::Range(..) | IndexItem::At(_) if axis == 0 => {
                    return Err("the batch axis must stay whole (`:` or `...` first)".into())
                }
                IndexItem::Range(a, b, step) => {
                    let read = python_slice(a, b, step, n);
                    if read.len == 0 {
                        return Err(format!(
                            "`{}` of axis {axis} (of {n}) is empty",
                            Subscript(vec![item]).text().trim_matches(['[', ']'])
                        ));
                    } else if last {
                        window.channels = read;
                    } else if image && axis == 1 {
                        window.rows = read;
                    } else if image && axis == 2 {
                        window.cols = read;
                    } else if !read.is_whole(n as usize) {
                        return Err(format!(
                            "axis {axis} (of {n}) is sliced; unetc slices an image's height, width \
                             and channels only"
                        ));
                    }
                    out.push(read.len as i64);
                    axis += 1;
                }
                IndexItem::At(k) => {
                    let at = if k < 0 { k + n } else { k };
                    if !(0..n).contains(&at) {
                        return Err(format!(
                            "index {k} is out of range for axis {axis} of size {n}"
                        ));
                    }
                    // The axis is dropped: the window's values in order are the output's.
                    let one = AxisRead::span(at as usize..at as usize + 1);
                    if last {
                        window.channels = one;
                    } else if image && axis == 1 {
                        window.rows = one;
                    } else if image && axis == 2 {
                        window.cols = one;
                    } else if n != 1 {
                        return Err(format!(
                            "index {k} picks one position of axis {axis} (of {n}); unetc picks \
                             an image's row, column or channel, or drops axes of size 1"
                        ));
                    }
                    axis += 1;
                }
            }
        }
        if out.len() > 3 {
            return Err(format!(
                "the result would have {} axes besides the batch; unetc's tensors have at most 3",
                out.len()
            ));
        }
        Ok((out, window))
    }

    /// Keras's record of the subscript (`slice_spec` in a SlicingOpLambda's call): a list of
    /// `{"class_name": "__ellipsis__"}`, `null`, integers and `{"start", "stop", "step"}`
    /// (older: under `config` of a `__slice__`), or one of them alone.
    pub fn from_keras(spec: &Json) -> Result<Subscript, String> {
        let one = |v: &Json| -> Result<IndexItem, String> {
            let bound = |b: Option<&Json>| match b {
                None | Some(Json::Null) => Ok(None),
                Some(Json::Number(n)) => n
                    .as_i64()
                    .filter(|v| v.unsigned_abs() <= MAX_DIM as u64)
                    .map(Some)
                    .ok_or_else(|| format!("the bound {n} is not a whole number unetc takes")),
                Some(other) => Err(format!("the bound {other} is not a number")),
            };
            match v {
                Json::Null => Ok(IndexItem::NewAxis),
                Json::Number(_) => bound(Some(v)).map(|b| IndexItem::At(b.unwrap_or(0))),
                Json::Object(o) => match o.get("class_name").and_then(Json::as_str) {
                    Some("__ellipsis__") => Ok(IndexItem::Ellipsis),
                    // tf_keras 2.x writes a slice as its three fields; older versions put them
                    // under `config` of a `__slice__`.
                    class @ (Some("__slice__") | None) => {
                        let c = if class.is_some() {
                            o.get("config")
                        } else {
                            Some(v)
                        };
                        let get = |k: &str| c.and_then(|c| c.get(k));
                        let step = match bound(get("step"))? {
                            Some(0) => return Err("a step of 0".into()),
                            step => step.unwrap_or(1),
                        };
                        Ok(IndexItem::Range(
                            bound(get("start"))?,
                            bound(get("stop"))?,
                            step,
                        ))
                    }
                    _ => Err(format!("the item {v} is no slice, index, None or ...")),
                },
                other => Err(format!("the item {other} is no slice, index, None or ...")),
            }
        };
        let items = match spec {
            Json::Array(items) if items.len() <= MAX_SUBSCRIPT_ITEMS => {
                items.iter().map(one).collect::<Result<Vec<_>, _>>()?
            }
            Json::Array(_) => return Err(format!("more than {MAX_SUBSCRIPT_ITEMS} items")),
            item => vec![one(item)?],
        };
        if items.iter().filter(|i| **i == IndexItem::Ellipsis).count() > 1 {
            return Err("more than one `...`".into());
        }
        Ok(Subscript(items))
    }

    /// The subscript as SlicingOpLambda's `slice_spec` argument, slices as the dicts Keras
    /// serializes (`[Ellipsis, {"start": 0, "stop": 2, "step": None}]`).
    pub fn python_spec(&self) -> String {
        let bound = |b: Option<i64>| b.map(|v| v.to_string()).unwrap_or_else(|| "None".into());
        let items: Vec<String> = self
            .0
            .iter()
            .map(|item| match item {
                IndexItem::Ellipsis => "Ellipsis".to_string(),
                IndexItem::NewAxis => "None".to_string(),
                IndexItem::Range(a, b, step) => format!(
                    "{{\"start\": {}, \"stop\": {}, \"step\": {}}}",
                    bound(*a),
                    bound(*b),
                    if *step == 1 {
                        "None".to_string()
                    } else {
                        step.to_string()
                    }
                ),
                IndexItem::At(k) => k.to_string(),
            })
            .collect();
        format!("[{}]", items.join(", "))
    }
}

/// The positions `start:stop:step` reads from an axis of `n`, as Python's `slice.indices`
/// (and TensorFlow's strided slice) finds them: negative bounds count from the end, bounds
/// are clamped, and a negative step starts from the end by default.
fn python_slice(start: Option<i64>, stop: Option<i64>, step: i64, n: i64) -> AxisRead {
    let (lower, upper) = if step < 0 { (-1, n - 1) } else { (0, n) };
    let clamp = |v: Option<i64>, default: i64| match v {
        None => default,
        Some(v) if v < 0 => (v + n).max(lower),
        Some(v) => v.min(upper),
    };
    let (first, end) = if step < 0 {
        (clamp(start, upper), clamp(stop, lower))
    } else {
        (clamp(start, lower), clamp(stop, upper))
    };
    let len = match (end - first).signum() == step.signum() {
        true => ((end - first).abs() - 1) / step.abs() + 1,
        false => 0,
    };
    AxisRead {
        start: first.max(0) as usize,
        step: step as isize,
        len: len as usize,
    }
}

/// Arithmetic of one tensor with a constant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScalarFn {
    Add,
    Subtract,
    Multiply,
    Divide,
    /// `tf.math.maximum`.
    Maximum,
    /// `tf.math.minimum`.
    Minimum,
}

/// `f(x, c)`, or `f(c, x)` when the constant comes first (`1 - g`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScalarOp {
    pub function: ScalarFn,
    pub constant: f64,
    pub constant_first: bool,
}

impl ScalarOp {
    /// The constant as the tensor's element type (TensorFlow converts the Python number so).
    pub fn c(&self) -> f32 {
        self.constant as f32
    }

    pub fn apply(&self, x: f32) -> f32 {
        let c = self.c();
        let (a, b) = if self.constant_first { (c, x) } else { (x, c) };
        match self.function {
            ScalarFn::Add => a + b,
            ScalarFn::Subtract => a - b,
            ScalarFn::Multiply => a * b,
            ScalarFn::Divide => a / b,
            ScalarFn::Maximum => a.max(b),
            ScalarFn::Minimum => a.min(b),
        }
    }

    /// The derivative of the output by the tensor operand at `x`. At a tie TensorFlow's
    /// maximum and minimum send the gradient to their first operand.
    pub fn derivative(&self, x: f32) -> f32 {
        let c = self.c();
        match (self.function, self.constant_first) {
            (ScalarFn::Add, _) => 1.0,
            (ScalarFn::Subtract, false) => 1.0,
            (ScalarFn::Subtract, true) => -1.0,
            (ScalarFn::Multiply, _) => c,
            (ScalarFn::Divide, false) => 1.0 / c,
            (ScalarFn::Divide, true) => -c / (x * x),
            (ScalarFn::Maximum, false) => f32::from(u8::from(x >= c)),
            (ScalarFn::Maximum, true) => f32::from(u8::from(x > c)),
            (ScalarFn::Minimum, false) => f32::from(u8::from(x <= c)),
            (ScalarFn::Minimum, true) => f32::from(u8::from(x < c)),
        }
    }
}

/// A constant operand (a Python number) of an arithmetic function, and its place.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TfConstant {
    pub value: f64,
    /// The constant is the function's `x` (`1 - g`); otherwise its `y` (`g - 1`).
    pub first: bool,
}

impl TfFunction {
    /// The elementwise function of two operands this function computes, if it is one.
    pub fn merge_fn(self) -> Option<MergeFn> {
        match self {
            TfFunction::OperatorsAdd | TfFunction::MathAdd | TfFunction::NnBiasAdd => {
                Some(MergeFn::Add)
            }
            TfFunction::MathMultiply => Some(MergeFn::Multiply),
            TfFunction::MathSubtract => Some(MergeFn::Subtract),
            TfFunction::MathTruediv => Some(MergeFn::Divide),
            TfFunction::MathMaximum => Some(MergeFn::Maximum),
            TfFunction::MathMinimum => Some(MergeFn::Minimum),
            TfFunction::MathReduceMean
            | TfFunction::MathReduceMax
            | TfFunction::Concat
            | TfFunction::NnRelu
            | TfFunction::MathSigmoid
            | TfFunction::ExpandDims
            | TfFunction::CompatV1Squeeze
            | TfFunction::Reshape
            | TfFunction::ImageResize
            | TfFunction::MathArgmax
            | TfFunction::Cast
            | TfFunction::OperatorsGetitem
            | TfFunction::MathTanh
            | TfFunction::NnSoftmax
            | TfFunction::NnLeakyRelu
            | TfFunction::NnRelu6
            | TfFunction::NnElu
            | TfFunction::NnSelu
            | TfFunction::NnSilu
            | TfFunction::NnGelu
            | TfFunction::MathSoftplus
            | TfFunction::NnSoftsign
            | TfFunction::MathExp
            | TfFunction::CompatV1Pad => None,
        }
    }

    /// The base of Keras's names for the layer: `tf.` and the function.
    pub fn layer_name_base(self) -> &'static str {
        match self {
            TfFunction::OperatorsAdd => "tf.__operators__.add",
            TfFunction::MathAdd => "tf.math.add",
            TfFunction::MathMultiply => "tf.math.multiply",
            TfFunction::MathSubtract => "tf.math.subtract",
            TfFunction::MathTruediv => "tf.math.truediv",
            TfFunction::MathMaximum => "tf.math.maximum",
            TfFunction::MathReduceMean => "tf.math.reduce_mean",
            TfFunction::MathReduceMax => "tf.math.reduce_max",
            TfFunction::MathMinimum => "tf.math.minimum",
            TfFunction::Concat => "tf.concat",
            TfFunction::NnRelu => "tf.nn.relu",
            TfFunction::MathSigmoid => "tf.math.sigmoid",
            TfFunction::ExpandDims => "tf.expand_dims",
            TfFunction::CompatV1Squeeze => "tf.compat.v1.squeeze",
            TfFunction::Reshape => "tf.reshape",
            TfFunction::ImageResize => "tf.image.resize",
            TfFunction::MathArgmax => "tf.math.argmax",
            TfFunction::Cast => "tf.cast",
            TfFunction::OperatorsGetitem => "tf.__operators__.getitem",
            TfFunction::MathTanh => "tf.math.tanh",
            TfFunction::NnSoftmax => "tf.nn.softmax",
            TfFunction::NnLeakyRelu => "tf.nn.leaky_relu",
            TfFunction::NnRelu6 => "tf.nn.relu6",
            TfFunction::NnElu => "tf.nn.elu",
            TfFunction::NnSelu => "tf.nn.selu",
            TfFunction::NnSilu => "tf.nn.silu",
            TfFunction::NnGelu => "tf.nn.gelu",
            TfFunction::MathSoftplus => "tf.math.softplus",
            TfFunction::NnSoftsign => "tf.nn.softsign",
            TfFunction::MathExp => "tf.math.exp",
            TfFunction::NnBiasAdd => "tf.nn.bias_add",
            TfFunction::CompatV1Pad => "tf.compat.v1.pad",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TFOpLambda {
    pub function: TfFunction,
    /// `tf.concat`'s axis (counting the batch axis, as Keras's Concatenate); unused otherwise.
    pub axis: i64,
    /// The constant operand of `+`, `-`, `*`, `/` (`y: 0.5`, or `x: 1.0` to put it first).
    pub constant: Option<TfConstant>,
    /// A constant tensor operand of `+`, `-`, `*`, `/`, maximum and minimum (`y: [[...]]`).
    pub operand: Option<TensorOperand>,
    /// Whether the spec (or Keras's call) gave `axis` (the reductions need it).
    pub axis_given: bool,
    /// `axis` given as a list of several (`axis=[1, 2]`: the reductions over height and width).
    pub axes: Vec<i64>,
    /// The reductions' `keepdims`.
    pub keepdims: Option<bool>,
    /// tf.reshape's `shape`, the batch's `-1` first (empty when not given).
    pub shape: Vec<i64>,
    /// tf.image.resize's `size` (height, width).
    pub size: Option<[i64; 2]>,
    /// tf.image.resize's `method`.
    pub method: Interpolation,
    /// tf.cast's `dtype` (float32 runs; others are refused by the shape rule).
    pub dtype: Option<String>,
    /// `x[...]`'s subscript.
    pub index: Option<Subscript>,
    /// tf.pad's `paddings`: (before, after) per axis, the batch's first.
    pub paddings: Vec<[i64; 2]>,
    /// tf.pad's `mode`.
    pub pad_mode: TfPadMode,
}

impl TFOpLambda {
    pub fn computes(&self) -> TfCompute {
        let scalar = |function| {
            let c = self.constant.unwrap_or(TfConstant {
                value: 0.0,
                first: false,
            });
            TfCompute::Scalar(ScalarOp {
                function,
                constant: c.value,
                constant_first: c.first,
            })
        };
        // A constant tensor or number as one operand of an elementwise function of two.
        if let (Some(operand), Some(function)) = (&self.operand, self.function.merge_fn()) {
            return TfCompute::TensorMerge(TensorMergeOp {
                function,
                constant_first: operand.first,
            });
        }
        if let (Some(_), Some(function)) = (self.constant, self.function.merge_fn()) {
            match function {
                MergeFn::Add | MergeFn::Average => return scalar(ScalarFn::Add),
                MergeFn::Multiply => return scalar(ScalarFn::Multiply),
                MergeFn::Subtract => return scalar(ScalarFn::Subtract),
                MergeFn::Divide => return scalar(ScalarFn::Divide),
                MergeFn::Maximum => return scalar(ScalarFn::Maximum),
                MergeFn::Minimum => return scalar(ScalarFn::Minimum),
            }
        }
        match self.function {
            // bias_add without its constant is refused by the shape rule.
            TfFunction::OperatorsAdd | TfFunction::MathAdd | TfFunction::NnBiasAdd => {
                TfCompute::Merge(MergeFn::Add)
            }
            TfFunction::MathMultiply => TfCompute::Merge(MergeFn::Multiply),
            TfFunction::MathSubtract => TfCompute::Merge(MergeFn::Subtract),
            TfFunction::MathTruediv => TfCompute::Merge(MergeFn::Divide),
            TfFunction::MathMaximum => TfCompute::Merge(MergeFn::Maximum),
            TfFunction::MathMinimum => TfCompute::Merge(MergeFn::Minimum),
            TfFunction::Concat => TfCompute::Concat(self.axis),
            TfFunction::MathReduceMean if self.axes.len() > 1 => {
                TfCompute::ReduceImage(ImageReduceFn::Mean)
            }
            TfFunction::MathReduceMax if self.axes.len() > 1 => {
                TfCompute::ReduceImage(ImageReduceFn::Max)
            }
            TfFunction::MathReduceMean => TfCompute::ReduceChannels(ReduceFn::Mean),
            TfFunction::MathReduceMax => TfCompute::ReduceChannels(ReduceFn::Max),
            TfFunction::NnRelu => TfCompute::Activation(ActivationFn::Relu),
            TfFunction::MathSigmoid => TfCompute::Activation(ActivationFn::Sigmoid),
            TfFunction::ExpandDims | TfFunction::CompatV1Squeeze | TfFunction::Reshape => {
                TfCompute::Reshape
            }
            TfFunction::ImageResize => TfCompute::Resize(self.method),
            TfFunction::MathArgmax => TfCompute::ReduceChannels(ReduceFn::Argmax),
            // float32 to float32 (an argmax's indices are held as float32 already).
            TfFunction::Cast => TfCompute::Activation(ActivationFn::Linear),
            TfFunction::OperatorsGetitem => TfCompute::Slice,
            TfFunction::MathTanh => TfCompute::Activation(ActivationFn::Tanh),
            TfFunction::NnSoftmax => TfCompute::Activation(ActivationFn::Softmax),
            TfFunction::NnLeakyRelu => TfCompute::Activation(ActivationFn::LeakyRelu),
            TfFunction::NnRelu6 => TfCompute::Activation(ActivationFn::Relu6),
            TfFunction::NnElu => TfCompute::Activation(ActivationFn::Elu),
            TfFunction::NnSelu => TfCompute::Activation(ActivationFn::Selu),
            TfFunction::NnSilu => TfCompute::Activation(ActivationFn::Silu),
            TfFunction::NnGelu => TfCompute::Activation(ActivationFn::Gelu),
            TfFunction::MathSoftplus => TfCompute::Activation(ActivationFn::Softplus),
            TfFunction::NnSoftsign => TfCompute::Activation(ActivationFn::Softsign),
            TfFunction::MathExp => TfCompute::Activation(ActivationFn::Exponential),
            TfFunction::CompatV1Pad => TfCompute::Pad,
        }
    }

    /// tf.pad as the ZeroPadding2D it equals (the shape rule checks that it is one: the batch
    /// and the channels not padded).
    pub fn as_padding(&self) -> super::ZeroPadding2D {
        let pad = |axis: usize| self.paddings.get(axis).copied().unwrap_or([0, 0]);
        let ([t, b], [l, r]) = (pad(1), pad(2));
        super::ZeroPadding2D {
            padding: [t, b, l, r],
            mode: match self.pad_mode {
                TfPadMode::Constant => PadMode::Zeros,
                TfPadMode::Reflect => PadMode::Reflect,
                TfPadMode::Symmetric => PadMode::Symmetric,
            },
        }
    }

    /// The Keras layer `tf.reduce_mean(x, axis=[1, 2])` / `reduce_max` computes the same as.
    pub fn as_global_pooling(&self, f: ImageReduceFn) -> super::Op {
        let keepdims = self.keepdims.unwrap_or(false);
        match f {
            ImageReduceFn::Mean => {
                super::Op::GlobalAveragePooling2D(super::GlobalAveragePooling2D { keepdims })
            }
            ImageReduceFn::Max => {
                super::Op::GlobalMaxPooling2D(super::GlobalMaxPooling2D { keepdims })
            }
        }
    }

    /// Keras's class: `x[...]` makes a SlicingOpLambda, the other functions a TFOpLambda.
    pub fn class_of_call(&self) -> &'static str {
        match self.function {
            TfFunction::OperatorsGetitem => "SlicingOpLambda",
            TfFunction::OperatorsAdd
            | TfFunction::MathAdd
            | TfFunction::MathMultiply
            | TfFunction::MathSubtract
            | TfFunction::MathTruediv
            | TfFunction::MathMaximum
            | TfFunction::MathReduceMean
            | TfFunction::MathReduceMax
            | TfFunction::MathMinimum
            | TfFunction::Concat
            | TfFunction::NnRelu
            | TfFunction::MathSigmoid
            | TfFunction::ExpandDims
            | TfFunction::CompatV1Squeeze
            | TfFunction::Reshape
            | TfFunction::ImageResize
            | TfFunction::MathArgmax
            | TfFunction::Cast
            | TfFunction::MathTanh
            | TfFunction::NnSoftmax
            | TfFunction::NnLeakyRelu
            | TfFunction::NnRelu6
            | TfFunction::NnElu
            | TfFunction::NnSelu
            | TfFunction::NnSilu
            | TfFunction::NnGelu
            | TfFunction::MathSoftplus
            | TfFunction::NnSoftsign
            | TfFunction::MathExp
            | TfFunction::NnBiasAdd
            | TfFunction::CompatV1Pad => Self::CLASS,
        }
    }

    /// The rows, columns and channels `x[...]` reads from an input of `shape` (the batch axis
    /// not included), in the `[h, w, c]` view of the executors ([`crate::exec::plan::hwc`]:
    /// only an image's rows and columns are ever cut); the whole input for the other functions
    /// and where the shape rule refused.
    pub fn slice_window(&self, shape: &[usize]) -> [AxisRead; 3] {
        let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        let [h, w, c] = crate::exec::plan::hwc(shape).map(AxisRead::whole);
        match self.index.as_ref().map(|index| index.apply(&dims)) {
            Some(Ok((_, win))) if shape.len() == 3 => [win.rows, win.cols, win.channels],
            Some(Ok((_, win))) => [h, w, win.channels],
            Some(Err(_)) | None => [h, w, c],
        }
    }
}

impl TFOpLambda {
    /// The shape of `f(x, c)` for a tensor of `shape` and the constant tensor `operand`:
    /// TensorFlow's broadcasting, lining the axes up from the last, with the batch axis kept.
    fn with_operand(&self, shape: &Shape, operand: &TensorOperand) -> Result<Shape, ShapeError> {
        let name = self.function.layer_name_base();
        let text = crate::text::shape_text;
        if operand.shape.len() > shape.len() + 1 {
            return Err(ShapeError::new(
                "E-merge-shape",
                format!(
                    "the constant of shape {:?} has more axes than {{0}} {}, its batch axis \
                     included",
                    operand.shape,
                    text(shape)
                ),
                "constant has too many axes",
            ));
        }
        if operand.shape.len() == shape.len() + 1 && operand.shape[0] != 1 {
            return Err(ShapeError::new(
                "E-merge-shape",
                format!(
                    "the constant of shape {:?} lines up with {{0}} {} from the last axis, so its \
                     first axis of {} meets the batch axis; TensorFlow would make every batch \
                     {} items: give the constant a first axis of 1, or none",
                    operand.shape,
                    text(shape),
                    operand.shape[0],
                    operand.shape[0]
                ),
                "constant has a batch axis",
            ));
        }
        let item = operand.item_shape(shape.len()).to_vec();
        let out = broadcast_shapes(&[shape.clone(), item], name).map_err(|_| {
            ShapeError::new(
                "E-merge-shape",
                format!(
                    "the constant of shape {:?} does not broadcast with {{0}} {} (from the last \
                     axis, each axis equal or 1 in one of them)",
                    operand.shape,
                    text(shape)
                ),
                "constant does not broadcast",
            )
        })?;
        if out.len() > 4 {
            return Err(ShapeError::new(
                "E-rank",
                format!(
                    "{name} would give {} axes besides the batch; unetc's tensors have 1 to 4",
                    out.len()
                ),
                "unsupported rank",
            ));
        }
        Ok(out)
    }

    /// The shape after tf.expand_dims, tf.squeeze or tf.reshape of a tensor of `shape`. Axes
    /// count the batch as Keras's do; the batch axis itself stays.
    fn reshaped(&self, shape: &Shape) -> Result<Shape, ShapeError> {
        let name = self.function.layer_name_base();
        let rank = shape.len() as i64 + 1;
        let axis_error = |range: String| {
            ShapeError::new(
                "E-arg-value",
                format!(
                    "{name} needs an `axis` in {range} that is not the batch axis (0), not {}",
                    if self.axis_given {
                        self.axis.to_string()
                    } else {
                        "none".into()
                    }
                ),
                "axis",
            )
        };
        let mut out = shape.clone();
        match self.function {
            TfFunction::ExpandDims => {
                // The new axis's place in the result (rank + 1 axes).
                let at = if self.axis < 0 {
                    self.axis + rank + 1
                } else {
                    self.axis
                };
                if !self.axis_given || !(1..=rank).contains(&at) {
                    return Err(axis_error(format!("1..={rank} or -{rank}..=-1")));
                }
                out.insert(at as usize - 1, 1);
            }
            TfFunction::CompatV1Squeeze => {
                let at = if self.axis < 0 {
                    self.axis + rank
                } else {
                    self.axis
                };
                if !self.axis_given || !(1..rank).contains(&at) {
                    return Err(axis_error(format!(
                        "1..={} or -{}..=-1",
                        rank - 1,
                        rank - 1
                    )));
                }
                let size = out.remove(at as usize - 1);
                if size != 1 {
                    // TensorFlow's own message.
                    return Err(ShapeError::new(
                        "E-shape",
                        format!(
                            "Can not squeeze dim[{at}], expected a dimension of 1, got {size}                              ({{0}} has shape {})",
                            crate::text::shape_text(shape)
                        ),
                        "axis is not of size 1",
                    ));
                }
            }
            TfFunction::OperatorsAdd
            | TfFunction::MathAdd
            | TfFunction::MathMultiply
            | TfFunction::MathSubtract
            | TfFunction::MathTruediv
            | TfFunction::MathMaximum
            | TfFunction::MathReduceMean
            | TfFunction::MathReduceMax
            | TfFunction::MathMinimum
            | TfFunction::Concat
            | TfFunction::NnRelu
            | TfFunction::MathSigmoid
            | TfFunction::ImageResize
            | TfFunction::MathArgmax
            | TfFunction::Cast
            | TfFunction::OperatorsGetitem
            | TfFunction::MathTanh
            | TfFunction::NnSoftmax
            | TfFunction::NnLeakyRelu
            | TfFunction::NnRelu6
            | TfFunction::NnElu
            | TfFunction::NnSelu
            | TfFunction::NnSilu
            | TfFunction::NnGelu
            | TfFunction::MathSoftplus
            | TfFunction::NnSoftsign
            | TfFunction::MathExp
            | TfFunction::NnBiasAdd
            | TfFunction::CompatV1Pad => {
                return Err(ShapeError::new(
                    "E-arg-value",
                    format!("{name} does not reshape"),
                    "not a reshape",
                ))
            }
            TfFunction::Reshape => {
                // tf.reshape: `-1` for the batch, then fixed sizes (Keras's Reshape's rules).
                let Some((&-1, rest)) = self.shape.split_first() else {
                    return Err(ShapeError::new(
                        "E-arg-value",
                        format!(
                            "{name} runs with `shape` starting with -1 (the batch), then the                              sizes of each item: `shape: (-1, 32, 32, 1)`"
                        ),
                        "shape must start with -1",
                    ));
                };
                if rest.contains(&-1) {
                    return Err(ShapeError::new(
                        "E-arg-value",
                        format!("{name}: `shape` may have one -1 (the batch's), not several"),
                        "several -1",
                    ));
                }
                return Reshape {
                    target_shape: rest.to_vec(),
                }
                .infer(std::slice::from_ref(shape));
            }
        }
        if out.is_empty() || out.len() > 3 {
            return Err(ShapeError::new(
                "E-rank",
                format!(
                    "{name} would give {} axes besides the batch; unetc's tensors have 1 to 3",
                    out.len()
                ),
                "unsupported rank",
            ));
        }
        Ok(out)
    }

    /// The shape after tf.pad: an image's height and width padded, as ZeroPadding2D pads them.
    fn padded(&self, shape: &Shape) -> Result<Shape, ShapeError> {
        let name = self.function.layer_name_base();
        if self.paddings.len() != 4 {
            return Err(ShapeError::new(
                "E-arg-value",
                format!(
                    "{name} pads images: `paddings` needs a (before, after) pair for each of the \
                     batch, height, width and channels, not {} pairs",
                    self.paddings.len()
                ),
                "four pairs",
            )
            .help("`paddings: ((0, 0), (1, 1), (1, 1), (0, 0))`"));
        }
        if self.paddings[0] != [0, 0] || self.paddings[3] != [0, 0] {
            return Err(ShapeError::new(
                "E-arg-value",
                format!(
                    "{name} pads an image's height and width; the batch and channel pairs must \
                     be (0, 0), not {:?} and {:?}",
                    self.paddings[0], self.paddings[3]
                ),
                "height and width only",
            ));
        }
        super::image(std::slice::from_ref(shape), name)?;
        self.as_padding().infer(std::slice::from_ref(shape))
    }

    /// The shape after tf.image.resize: `size` with the input's channels.
    fn resized(&self, shape: &Shape) -> Result<Shape, ShapeError> {
        let name = self.function.layer_name_base();
        let [_, _, c] = super::image(std::slice::from_ref(shape), name)?;
        let Some([oh, ow]) = self.size else {
            return Err(ShapeError::new(
                "E-arg-missing",
                format!("{name} needs `size`: `tf_op(\"image.resize\", size: (64, 64))`"),
                "no size",
            ));
        };
        Ok(vec![oh, ow, c])
    }
}

impl LayerKind for TFOpLambda {
    const CLASS: &'static str = "TFOpLambda";
    const POSITIONAL: &'static [&'static str] = &["function", "axis"];
    const KNOWN: &'static [&'static str] = &[
        "function", "axis", "x", "y", "keepdims", "shape", "size", "method", "dtype", "index",
        "paddings", "mode",
    ];
    /// What `x[...]` records.
    const KERAS_ALIASES: &'static [&'static str] = &["SlicingOpLambda"];
    /// `import` reads the function and the call's arguments itself (they are not in the config).
    const IMPORTED_CONFIG: &'static [&'static str] = &["function"];

    fn parse(r: &mut ArgReader) -> Self {
        if !r.has("function") {
            r.missing("function", "tf_op(\"__operators__.add\")");
        }
        let function = r.keyword("function", TfFunction::OperatorsAdd, None);
        let axis_given = r.has("axis");
        // One axis, or several as a list (`axis: (1, 2)`); a list of one is that axis.
        let (axis, axes) = match r.peek("axis") {
            Some(Value::List(_)) => match r.int_list("axis", -5, 4)[..] {
                [one] => (one, Vec::new()),
                ref several => (-1, several.to_vec()),
            },
            _ => (r.int_or("axis", -5, 4, -1), Vec::new()),
        };
        let keepdims = r.has("keepdims").then(|| r.bool_or("keepdims", false));
        let shape = r.int_list("shape", -1, MAX_DIM);
        let size = r.pair("size", 1, MAX_DIM);
        let method = r.keyword("method", Interpolation::Bilinear, None);
        let dtype = match r.peek("dtype") {
            Some(Value::Str(d)) => {
                let d = d.clone();
                let _ = r.take_arg("dtype");
                Some(d)
            }
            Some(_) => {
                r.reject("dtype", "must be a string: `dtype: \"float32\"`");
                None
            }
            None => None,
        };
        let index = match r.peek("index") {
            Some(Value::Str(text)) => match Subscript::parse(text) {
                Ok(index) => {
                    let _ = r.take_arg("index");
                    Some(index)
                }
                Err(why) => {
                    r.reject(
                        "index",
                        &format!("not a subscript unetc reads (`\"[..., 0:2]\"`): {why}"),
                    );
                    None
                }
            },
            Some(_) => {
                r.reject("index", "must be a string: `index: \"[..., 0:2]\"`");
                None
            }
            None => None,
        };
        let paddings = match r.peek("paddings") {
            Some(value) => {
                let pair = |v: &Value| match v {
                    Value::List(p) => match p[..] {
                        [Value::Int(a), Value::Int(b)]
                            if (0..=MAX_DIM).contains(&a) && (0..=MAX_DIM).contains(&b) =>
                        {
                            Some([a, b])
                        }
                        _ => None,
                    },
                    _ => None,
                };
                let pairs = match value {
                    Value::List(items) if items.len() <= 5 => {
                        items.iter().map(pair).collect::<Option<Vec<_>>>()
                    }
                    _ => None,
                };
                match pairs {
                    Some(pairs) => {
                        let _ = r.take_arg("paddings");
                        pairs
                    }
                    None => {
                        r.reject(
                            "paddings",
                            &format!(
                                "must be one (before, after) pair of sizes in 0..={MAX_DIM} per \
                                 axis, the batch's first: `paddings: ((0, 0), (1, 1), (1, 1), \
                                 (0, 0))`"
                            ),
                        );
                        Vec::new()
                    }
                }
            }
            None => Vec::new(),
        };
        // TensorFlow reads the mode in any case.
        let pad_mode = match r.peek("mode") {
            Some(Value::Str(m)) => match TfPadMode::from_keras_name(&m.to_uppercase()) {
                Some(mode) => {
                    let _ = r.take_arg("mode");
                    mode
                }
                None => {
                    r.reject("mode", "must be \"CONSTANT\", \"REFLECT\" or \"SYMMETRIC\"");
                    TfPadMode::Constant
                }
            },
            Some(_) => {
                r.reject("mode", "must be a string: `mode: \"REFLECT\"`");
                TfPadMode::Constant
            }
            None => TfPadMode::Constant,
        };
        let lim = f64::MAX;
        // A nested list is a constant tensor; a number, a Python number.
        let mut operand = None;
        for (place, first) in [("x", true), ("y", false)] {
            if let Some(value @ Value::List(_)) = r.peek(place) {
                match TensorOperand::from_value(value, first) {
                    Ok(t) if operand.is_none() => {
                        let _ = r.take_arg(place);
                        operand = Some(t);
                    }
                    Ok(_) => r.reject(place, "takes one constant, `x:` or `y:`, not both"),
                    Err(why) => r.reject(
                        place,
                        &format!(
                            "not a constant tensor unetc reads (a nested list of numbers): {why}"
                        ),
                    ),
                }
            }
        }
        if operand.is_some() {
            for place in ["x", "y"] {
                r.reject(place, "takes one constant, `x:` or `y:`, not both");
            }
        }
        let constant = match (r.has("x"), r.has("y")) {
            (true, true) => {
                let _ = r.float_or("x", -lim, lim, 0.0);
                r.reject(
                    "y",
                    "takes one constant: `y: c` (the tensor first, `g - c`) or `x: c` (the \
                     constant first, `c - g`), not both",
                );
                None
            }
            (true, false) => Some(TfConstant {
                value: r.float_or("x", -lim, lim, 0.0),
                first: true,
            }),
            (false, true) => Some(TfConstant {
                value: r.float_or("y", -lim, lim, 0.0),
                first: false,
            }),
            (false, false) => None,
        };
        TFOpLambda {
            function,
            axis,
            constant,
            operand,
            axis_given,
            axes,
            keepdims,
            shape,
            size,
            method,
            dtype,
            index,
            paddings,
            pad_mode,
        }
    }

    fn infer(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        let name = self.function.layer_name_base();
        let takes = |n: usize| {
            if inputs.len() == n {
                Ok(())
            } else {
                Err(ShapeError::new(
                    "E-arity",
                    format!("{name} takes {n} tensor(s), not {}", inputs.len()),
                    "wrong number of inputs",
                ))
            }
        };
        let misplaced = [
            ("shape", !self.shape.is_empty(), TfFunction::Reshape),
            ("size", self.size.is_some(), TfFunction::ImageResize),
            ("dtype", self.dtype.is_some(), TfFunction::Cast),
            ("index", self.index.is_some(), TfFunction::OperatorsGetitem),
            (
                "paddings",
                !self.paddings.is_empty(),
                TfFunction::CompatV1Pad,
            ),
        ];
        for (arg, given, owner) in misplaced {
            if given && self.function != owner {
                return Err(ShapeError::new(
                    "E-arg-value",
                    format!("{name} takes no `{arg}` ({} does)", owner.keras_name()),
                    format!("{arg} given"),
                ));
            }
        }
        if !self.axes.is_empty() && !matches!(self.computes(), TfCompute::ReduceImage(_)) {
            return Err(ShapeError::new(
                "E-arg-value",
                format!(
                    "{name} takes one `axis` here, not the list {:?} (a list of axes is for \
                     math.reduce_mean and math.reduce_max over height and width: `axis: (1, 2)`)",
                    self.axes
                ),
                "one axis",
            ));
        }
        if self.function == TfFunction::NnSoftmax && self.axis_given {
            let last = inputs.first().map_or(0, Vec::len) as i64;
            if self.axis != -1 && self.axis != last {
                return Err(ShapeError::new(
                    "E-arg-value",
                    format!(
                        "{name} runs over the channel axis only: `axis: -1` (or {last}), not {}",
                        self.axis
                    ),
                    "over the channels only",
                ));
            }
        }
        // Keras's axes count the batch axis: the channels are -1 or the rank minus 1.
        // `no_axis` says what TensorFlow does without one.
        let channel_axis = |shape: &Shape, no_axis: &str| {
            let last = shape.len() as i64;
            if self.axis_given && (self.axis == -1 || self.axis == last) {
                return Ok(());
            }
            Err(ShapeError::new(
                "E-arg-value",
                format!(
                    "{name} runs over the channel axis only: `axis: -1` (or {last}), not {}",
                    if self.axis_given {
                        self.axis.to_string()
                    } else {
                        no_axis.to_string()
                    }
                ),
                "over the channels only",
            ))
        };
        if self.function == TfFunction::NnBiasAdd {
            let channels = inputs.first().and_then(|s| s.last().copied());
            let bias = self.operand.as_ref().filter(|t| !t.first);
            match (bias, channels) {
                (Some(t), Some(c)) if t.shape == [c] => {}
                (Some(t), _) => {
                    return Err(ShapeError::new(
                        "E-merge-shape",
                        format!(
                            "{name}: the bias has shape {:?}; it must have one value per channel \
                             of {{0}} ({})",
                            t.shape,
                            channels.map_or("?".into(), |c| c.to_string())
                        ),
                        "one value per channel",
                    ))
                }
                (None, _) => {
                    return Err(ShapeError::new(
                        "E-arg-missing",
                        format!(
                            "{name} needs its bias as `y:`, one value per channel: \
                             `tf_op(\"nn.bias_add\", y: [-103.939, -116.779, -123.68])`"
                        ),
                        "no bias",
                    ))
                }
            }
        }
        if let Some(operand) = &self.operand {
            return match self.computes() {
                TfCompute::TensorMerge(_) => {
                    takes(1)?;
                    self.with_operand(&inputs[0], operand)
                }
                TfCompute::Merge(_)
                | TfCompute::Concat(_)
                | TfCompute::Activation(_)
                | TfCompute::Scalar(_)
                | TfCompute::ReduceChannels(_)
                | TfCompute::ReduceImage(_)
                | TfCompute::Reshape
                | TfCompute::Resize(_)
                | TfCompute::Slice
                | TfCompute::Pad => Err(ShapeError::new(
                    "E-arg-value",
                    format!(
                        "{name} takes no constant tensor (`x:`/`y:` lists are for \
                         __operators__.add, math.add, math.subtract, math.multiply, \
                         math.truediv, math.maximum and math.minimum)"
                    ),
                    "constant operand given",
                )),
            };
        }
        match (self.constant, self.computes()) {
            (_, TfCompute::TensorMerge(_)) => Err(ShapeError::new(
                "E-arg-missing",
                format!("{name}: internal: a tensor merge without its constant"),
                "no constant operand",
            )),
            (Some(_), TfCompute::Scalar(_)) if inputs.len() != 1 => Err(ShapeError::new(
                "E-arity",
                format!(
                    "{name} with a constant operand (`x:` or `y:`) takes 1 tensor, not {}",
                    inputs.len()
                ),
                "wrong number of inputs",
            )),
            (Some(_), TfCompute::Scalar(_)) => Ok(inputs[0].clone()),
            (None, TfCompute::Scalar(_)) => Err(ShapeError::new(
                "E-arg-missing",
                format!(
                    "{name} runs with a constant operand only (`x -> tf_op(\"{}\", y: 2.0)`)",
                    self.function.keras_name()
                ),
                "no constant operand",
            )),
            (Some(_), _) => Err(ShapeError::new(
                "E-arg-value",
                format!(
                    "{name} takes no constant operand (`x:`/`y:` are for __operators__.add, \
                     math.add, math.subtract, math.multiply, math.truediv, math.maximum and \
                     math.minimum)"
                ),
                "constant operand given",
            )),
            (None, TfCompute::Merge(_)) => {
                takes(2)?;
                broadcast_shapes(inputs, name)
            }
            (None, TfCompute::ReduceImage(_)) => {
                takes(1)?;
                let [_, _, c] = super::image(inputs, name)?;
                let mut axes: Vec<i64> = self
                    .axes
                    .iter()
                    .map(|&a| if a < 0 { a + 4 } else { a })
                    .collect();
                axes.sort_unstable();
                if axes != [1, 2] {
                    return Err(ShapeError::new(
                        "E-arg-value",
                        format!(
                            "{name} over the axes {:?}: unetc reduces over the channels \
                             (`axis: -1`) or over height and width (`axis: (1, 2)`) only",
                            self.axes
                        ),
                        "height and width only",
                    ));
                }
                Ok(if self.keepdims == Some(true) {
                    vec![1, 1, c]
                } else {
                    vec![c]
                })
            }
            (None, TfCompute::ReduceChannels(ReduceFn::Argmax)) => {
                takes(1)?;
                let shape = &inputs[0];
                channel_axis(shape, "the batch axis (TensorFlow's default, no `axis`)")?;
                if self.keepdims.is_some() {
                    return Err(ShapeError::new(
                        "E-arg-value",
                        format!("{name} takes no `keepdims` (it drops the channel axis)"),
                        "keepdims given",
                    ));
                }
                Ok(shape[..shape.len().saturating_sub(1)].to_vec())
            }
            (None, TfCompute::ReduceChannels(_)) => {
                takes(1)?;
                let shape = &inputs[0];
                channel_axis(shape, "every axis (no `axis`)")?;
                if self.keepdims != Some(true) {
                    return Err(ShapeError::new(
                        "E-arg-value",
                        format!(
                            "{name} runs with `keepdims: true` only (the channel axis kept, of \
                             size 1)"
                        ),
                        "keepdims: true needed",
                    ));
                }
                let mut out = shape.clone();
                if let Some(c) = out.last_mut() {
                    *c = 1;
                }
                Ok(out)
            }
            (None, _) if self.keepdims.is_some() => Err(ShapeError::new(
                "E-arg-value",
                format!("{name} takes no `keepdims` (math.reduce_mean and math.reduce_max do)"),
                "keepdims given",
            )),
            (None, TfCompute::Concat(axis)) => Concatenate { axis }.infer(inputs),
            (None, TfCompute::Activation(_)) => {
                takes(1)?;
                match (self.function, self.dtype.as_deref()) {
                    (TfFunction::Cast, Some("float32")) => {}
                    (TfFunction::Cast, dtype) => {
                        return Err(ShapeError::new(
                            "E-arg-value",
                            format!(
                                "{name} runs to `dtype: \"float32\"` only (unetc computes in \
                                 float32), not {}",
                                dtype.map_or("no dtype".to_string(), |d| format!("{d:?}"))
                            ),
                            "float32 only",
                        ))
                    }
                    _ => {}
                }
                Ok(inputs[0].clone())
            }
            (None, TfCompute::Slice) => {
                takes(1)?;
                let Some(index) = &self.index else {
                    return Err(ShapeError::new(
                        "E-arg-missing",
                        format!("{name} needs `index`: `tf_op(\"__operators__.getitem\", index: \"[..., 0:2]\")`"),
                        "no index",
                    ));
                };
                index
                    .apply(&inputs[0])
                    .map(|(shape, _)| shape)
                    .map_err(|why| {
                        ShapeError::new(
                            "E-subscript",
                            format!(
                                "{name}: `x{}` of {{0}} {}: {why}",
                                index.text(),
                                crate::text::shape_text(&inputs[0])
                            ),
                            "not run by unetc",
                        )
                    })
            }
            (None, TfCompute::Reshape) => {
                takes(1)?;
                self.reshaped(&inputs[0])
            }
            (None, TfCompute::Resize(_)) => {
                takes(1)?;
                self.resized(&inputs[0])
            }
            (None, TfCompute::Pad) => {
                takes(1)?;
                self.padded(&inputs[0])
            }
        }
    }

    fn config(&self) -> Json {
        match self.computes() {
            TfCompute::Concat(axis) => json!({ "function": self.function, "axis": axis }),
            TfCompute::ReduceChannels(ReduceFn::Argmax) => {
                json!({ "function": self.function, "axis": self.axis })
            }
            TfCompute::ReduceChannels(_) => json!({
                "function": self.function, "axis": self.axis, "keepdims": self.keepdims
            }),
            TfCompute::Scalar(s) => {
                let place = if s.constant_first { "x" } else { "y" };
                json!({ "function": self.function, place: s.constant })
            }
            TfCompute::Activation(_) if self.function == TfFunction::Cast => {
                json!({ "function": self.function, "dtype": self.dtype })
            }
            TfCompute::Activation(_) if self.axis_given => {
                json!({ "function": self.function, "axis": self.axis })
            }
            TfCompute::ReduceImage(_) => json!({
                "function": self.function, "axis": self.axes, "keepdims": self.keepdims.unwrap_or(false)
            }),
            TfCompute::Merge(_) | TfCompute::Activation(_) => json!({ "function": self.function }),
            TfCompute::Reshape if self.function == TfFunction::Reshape => {
                json!({ "function": self.function, "shape": self.shape })
            }
            TfCompute::Reshape => json!({ "function": self.function, "axis": self.axis }),
            TfCompute::Resize(method) => json!({
                "function": self.function, "size": self.size.map(|s| s.to_vec()), "method": method
            }),
            TfCompute::Slice => json!({
                "function": self.function, "index": self.index.as_ref().map(Subscript::text)
            }),
            TfCompute::Pad => json!({
                "function": self.function, "paddings": self.paddings, "mode": self.pad_mode
            }),
            // The values are the spec's; the report gives their shape.
            TfCompute::TensorMerge(m) => {
                let place = if m.constant_first { "x" } else { "y" };
                let shape = self.operand.as_ref().map(|t| t.shape.clone());
                json!({ "function": self.function, place: { "shape": shape } })
            }
        }
    }

    fn auto_name_base(&self) -> Option<&'static str> {
        Some(self.function.layer_name_base())
    }

    fn keras_class(&self) -> &'static str {
        self.class_of_call()
    }

    fn arity() -> (usize, usize) {
        (1, usize::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(index: &str, shape: &[i64]) -> Result<(Shape, AxisRead), String> {
        Subscript::parse(index)?
            .apply(shape)
            .map(|(shape, window)| (shape, window.channels))
    }

    fn s(r: std::ops::Range<usize>) -> AxisRead {
        AxisRead::span(r)
    }

    #[test]
    fn subscripts_as_python_reads_them() {
        // (subscript, input shape without the batch, output shape, channels read)
        type Case<'a> = (&'a str, &'a [i64], &'a [i64], AxisRead);
        let cases: &[Case] = &[
            ("[..., 1:3]", &[6, 5, 4], &[6, 5, 2], s(1..3)),
            ("[:, :, :, 2]", &[6, 5, 4], &[6, 5], s(2..3)),
            ("[..., -1:]", &[6, 5, 4], &[6, 5, 1], s(3..4)),
            ("[..., -2]", &[6, 5, 4], &[6, 5], s(2..3)),
            ("[..., :10]", &[6, 5, 4], &[6, 5, 4], s(0..4)),
            ("[..., None]", &[6, 5], &[6, 5, 1], s(0..5)),
            ("[..., tf.newaxis]", &[], &[1], s(0..1)),
            ("[:, None, None, :]", &[3], &[1, 1, 3], s(0..3)),
            ("[0:, :, :, -2]", &[6, 5, 4], &[6, 5], s(2..3)),
            ("[:, 0]", &[1, 7], &[7], s(0..7)),
            ("[:]", &[6, 5, 4], &[6, 5, 4], s(0..4)),
            ("[..., 1:3:1]", &[6, 5, 4], &[6, 5, 2], s(1..3)),
        ];
        for (index, shape, out, window) in cases {
            assert_eq!(
                apply(index, shape),
                Ok((out.to_vec(), *window)),
                "{index} of {shape:?}"
            );
        }
    }

    #[test]
    fn subscripts_pick_an_image_row_column_or_pixel() {
        let window = |index: &str| {
            let (shape, w) = Subscript::parse(index).unwrap().apply(&[6, 5, 4]).unwrap();
            (shape, w.rows, w.cols, w.channels)
        };
        assert_eq!(window("[:, 0]"), (vec![5, 4], s(0..1), s(0..5), s(0..4)));
        assert_eq!(
            window("[:, :, -1]"),
            (vec![6, 4], s(0..6), s(4..5), s(0..4))
        );
        assert_eq!(window("[:, 2, 3]"), (vec![4], s(2..3), s(3..4), s(0..4)));
        assert_eq!(
            window("[:, 1:4, 2, 1:3]"),
            (vec![3, 2], s(1..4), s(2..3), s(1..3))
        );
        assert_eq!(
            window("[:, -1, ..., 0]"),
            (vec![5], s(5..6), s(0..5), s(0..1))
        );
    }

    #[test]
    fn stepped_subscripts_read_as_python_slices_do() {
        // (subscript of an axis of 7, the positions Python's list(range(7))[...] gives)
        let cases: &[(&str, &[usize])] = &[
            ("::2", &[0, 2, 4, 6]),
            ("1::3", &[1, 4]),
            ("::-1", &[6, 5, 4, 3, 2, 1, 0]),
            ("5:1:-2", &[5, 3]),
            ("-2::-3", &[5, 2]),
            (":-8:-1", &[6, 5, 4, 3, 2, 1, 0]),
            ("10:4:-1", &[6, 5]),
            ("-100:3:2", &[0, 2]),
            ("2:2:-1", &[]),
            ("::100", &[0]),
        ];
        for (item, want) in cases {
            let Ok(Subscript(items)) = Subscript::parse(item) else {
                panic!("{item}")
            };
            let IndexItem::Range(a, b, step) = items[0] else {
                panic!("{item}")
            };
            let read = python_slice(a, b, step, 7);
            assert_eq!(read.positions().collect::<Vec<_>>(), *want, "{item}");
        }
        let window = |index: &str| Subscript::parse(index).unwrap().apply(&[6, 5, 4]).unwrap();
        let (shape, w) = window("[..., ::-1]");
        assert_eq!(shape, vec![6, 5, 4]);
        assert_eq!(w.channels.positions().collect::<Vec<_>>(), [3, 2, 1, 0]);
        let (shape, w) = window("[:, ::2, 1::2]");
        assert_eq!((shape, w.rows.len, w.cols.len), (vec![3, 2, 4], 3, 2));
    }

    #[test]
    fn subscripts_crop_an_image() {
        let window = |index: &str, shape: &[i64]| Subscript::parse(index).unwrap().apply(shape);
        assert_eq!(
            window("[:, 1:-1, 1:4, 1:3]", &[6, 5, 4]),
            Ok((
                vec![4, 3, 2],
                SliceWindow {
                    rows: s(1..5),
                    cols: s(1..4),
                    channels: s(1..3)
                }
            ))
        );
        assert_eq!(
            window("[:, 2:, :-1, 0]", &[6, 5, 4]),
            Ok((
                vec![4, 4],
                SliceWindow {
                    rows: s(2..6),
                    cols: s(0..4),
                    channels: s(0..1)
                }
            ))
        );
        // Not an image: rows and columns stay 0..1.
        assert_eq!(
            window("[..., 1:]", &[7]),
            Ok((
                vec![6],
                SliceWindow {
                    rows: s(0..1),
                    cols: s(0..1),
                    channels: s(1..7)
                }
            ))
        );
    }

    #[test]
    fn subscripts_unetc_does_not_run_are_refused() {
        for (index, shape) in [
            ("[1:, ...]", &[6, 5, 4][..]),
            ("[0]", &[6, 5, 4]),
            ("[None, ...]", &[6, 5, 4]),
            ("[:, 1:3]", &[5, 4]),
            ("[:, 1:1]", &[6, 5, 4]),
            ("[:, 6]", &[6, 5, 4]),
            ("[:, :, -6]", &[6, 5, 4]),
            ("[:, 2]", &[6, 5]),
            ("[..., 4]", &[6, 5, 4]),
            ("[..., -5]", &[6, 5, 4]),
            ("[..., 3:1]", &[6, 5, 4]),
            ("[:, :, :, :, :]", &[6, 5, 4]),
            ("[..., None, None]", &[6, 5]),
        ] {
            assert!(apply(index, shape).is_err(), "{index} of {shape:?}");
        }
        for bad in [
            "[..., ...]",
            "[..., ::0]",
            "[..., 1:2:3:4]",
            "[1.5]",
            "[a]",
            "[,]",
            "[..., 0:2",
            "[99999999999999999999]",
            "[0, 0, 0, 0, 0, 0, 0, 0, 0]",
        ] {
            assert!(Subscript::parse(bad).is_err(), "{bad}");
        }
        assert!(Subscript::parse(&"0,".repeat(200)).is_err());
    }

    #[test]
    fn keras_records_read_as_the_same_subscript() {
        let spec = serde_json::json!([
            {"class_name": "__ellipsis__"},
            {"start": -1, "stop": null, "step": null},
        ]);
        let index = Subscript::from_keras(&spec).unwrap();
        assert_eq!(index.text(), "[..., -1:]");
        assert_eq!(Subscript::parse(&index.text()).unwrap(), index);
        let old = serde_json::json!([
            {"class_name": "__slice__", "config": {"start": null, "stop": null, "step": null}},
            null,
            2,
        ]);
        assert_eq!(Subscript::from_keras(&old).unwrap().text(), "[:, None, 2]");
        let stepped = serde_json::json!([
            {"class_name": "__ellipsis__"},
            {"start": null, "stop": null, "step": -1},
        ]);
        let index = Subscript::from_keras(&stepped).unwrap();
        assert_eq!(index.text(), "[..., ::-1]");
        assert_eq!(Subscript::parse(&index.text()).unwrap(), index);
        assert_eq!(
            index.python_spec(),
            r#"[Ellipsis, {"start": None, "stop": None, "step": -1}]"#
        );
        for bad in [
            serde_json::json!([{"start": 0, "stop": 4, "step": 0}]),
            serde_json::json!(["x"]),
            serde_json::json!([1.5]),
            serde_json::json!([{"class_name": "__ellipsis__"}, {"class_name": "__ellipsis__"}]),
        ] {
            assert!(Subscript::from_keras(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn argmax_takes_the_first_of_equal_values() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
        assert_eq!(argmax(&[-1.0]), 0);
        assert_eq!(argmax(&[]), 0);
    }
}
