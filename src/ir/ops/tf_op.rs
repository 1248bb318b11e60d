//! TFOpLambda: a TensorFlow function applied to Keras tensors (`x + s`, `x * g`,
//! `tf.concat([a, b], -1)`, `tf.nn.relu(x)`), which Keras wraps in a layer named after the
//! function (`tf.__operators__.add`, `tf.concat_1`, ...). No weights. Each function computes what
//! a Keras layer unetc already runs, so the backends reuse that layer's kernel.

use super::keywords::TfFunction;
use super::merge::{broadcast_shapes, Concatenate, MergeFn};
use super::reshape::Reshape;
use super::{ActivationFn, Interpolation, LayerKind, Shape, ShapeError};
use crate::ir::value::{ArgReader, MAX_DIM};
use serde_json::{json, Value as Json};

/// What a TensorFlow function computes, as the Keras layer that computes the same.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TfCompute {
    /// Two tensors, broadcast as NumPy does (Keras's merges broadcast the same way).
    Merge(MergeFn),
    /// `tf.concat(values, axis)`.
    Concat(i64),
    /// One tensor, elementwise.
    Activation(ActivationFn),
    /// One tensor and a Python number (`x + 1.0`, `1 - g`, `x * 0.5`, `x / 2.0`).
    Scalar(ScalarOp),
    /// `tf.reduce_mean(x, axis=-1, keepdims=True)` / `reduce_max`: one value per pixel.
    ReduceChannels(ReduceFn),
    /// The same values in another shape (`tf.expand_dims`, `tf.squeeze`, `tf.reshape`), as
    /// Keras's Reshape.
    Reshape,
    /// `tf.image.resize` to a whole multiple of the input's height and width: Keras's
    /// UpSampling2D by that factor (tf.image.resize with half-pixel centres, no antialias).
    Resize(Interpolation),
}

/// A reduction over the channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceFn {
    Mean,
    Max,
}

impl ReduceFn {
    /// The mean or the maximum of one pixel's channels (the mean as TensorFlow sums: in order,
    /// then divided by the count).
    pub fn apply(self, channels: &[f32]) -> f32 {
        match self {
            ReduceFn::Mean => channels.iter().sum::<f32>() / channels.len() as f32,
            ReduceFn::Max => channels.iter().copied().fold(f32::NEG_INFINITY, f32::max),
        }
    }
}

/// Arithmetic of one tensor with a constant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScalarFn {
    Add,
    Subtract,
    Multiply,
    Divide,
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
        }
    }

    /// The derivative of the output by the tensor operand at `x`.
    pub fn derivative(&self, x: f32) -> f32 {
        let c = self.c();
        match (self.function, self.constant_first) {
            (ScalarFn::Add, _) => 1.0,
            (ScalarFn::Subtract, false) => 1.0,
            (ScalarFn::Subtract, true) => -1.0,
            (ScalarFn::Multiply, _) => c,
            (ScalarFn::Divide, false) => 1.0 / c,
            (ScalarFn::Divide, true) => -c / (x * x),
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
    /// Whether the spec (or Keras's call) gave `axis` (the reductions need it).
    pub axis_given: bool,
    /// The reductions' `keepdims`.
    pub keepdims: Option<bool>,
    /// tf.reshape's `shape`, the batch's `-1` first (empty when not given).
    pub shape: Vec<i64>,
    /// tf.image.resize's `size` (height, width).
    pub size: Option<[i64; 2]>,
    /// tf.image.resize's `method`.
    pub method: Interpolation,
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
        if self.constant.is_some() {
            match self.function {
                TfFunction::OperatorsAdd | TfFunction::MathAdd => return scalar(ScalarFn::Add),
                TfFunction::MathMultiply => return scalar(ScalarFn::Multiply),
                TfFunction::MathSubtract => return scalar(ScalarFn::Subtract),
                TfFunction::MathTruediv => return scalar(ScalarFn::Divide),
                // Refused by infer (no constant operand); computed as without it.
                TfFunction::MathMaximum
                | TfFunction::MathMinimum
                | TfFunction::MathReduceMean
                | TfFunction::MathReduceMax
                | TfFunction::Concat
                | TfFunction::NnRelu
                | TfFunction::MathSigmoid
                | TfFunction::ExpandDims
                | TfFunction::CompatV1Squeeze
                | TfFunction::Reshape
                | TfFunction::ImageResize => {}
            }
        }
        match self.function {
            TfFunction::OperatorsAdd | TfFunction::MathAdd => TfCompute::Merge(MergeFn::Add),
            TfFunction::MathMultiply => TfCompute::Merge(MergeFn::Multiply),
            TfFunction::MathSubtract => TfCompute::Merge(MergeFn::Subtract),
            TfFunction::MathTruediv => TfCompute::Merge(MergeFn::Divide),
            TfFunction::MathMaximum => TfCompute::Merge(MergeFn::Maximum),
            TfFunction::MathMinimum => TfCompute::Merge(MergeFn::Minimum),
            TfFunction::Concat => TfCompute::Concat(self.axis),
            TfFunction::MathReduceMean => TfCompute::ReduceChannels(ReduceFn::Mean),
            TfFunction::MathReduceMax => TfCompute::ReduceChannels(ReduceFn::Max),
            TfFunction::NnRelu => TfCompute::Activation(ActivationFn::Relu),
            TfFunction::MathSigmoid => TfCompute::Activation(ActivationFn::Sigmoid),
            TfFunction::ExpandDims | TfFunction::CompatV1Squeeze | TfFunction::Reshape => {
                TfCompute::Reshape
            }
            TfFunction::ImageResize => TfCompute::Resize(self.method),
        }
    }
}

impl TFOpLambda {
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
            | TfFunction::ImageResize => {
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

    /// The shape after tf.image.resize: `size` must be a whole multiple of the input's height
    /// and width (an up-sampling, what U-Nets do).
    fn resized(&self, shape: &Shape) -> Result<Shape, ShapeError> {
        let name = self.function.layer_name_base();
        let [h, w, c] = super::image(std::slice::from_ref(shape), name)?;
        let Some([oh, ow]) = self.size else {
            return Err(ShapeError::new(
                "E-arg-missing",
                format!("{name} needs `size`: `tf_op(\"image.resize\", size: (64, 64))`"),
                "no size",
            ));
        };
        if oh % h != 0 || ow % w != 0 {
            return Err(ShapeError::new(
                "E-arg-value",
                format!(
                    "{name} to {oh}x{ow} from {h}x{w}: unetc resizes to whole multiples of the \
                     input's height and width only (an up-sampling by whole factors)"
                ),
                "not a whole multiple",
            )
            .help("use up_sampling2d(size: (fy, fx), interpolation: bilinear) for whole factors"));
        }
        Ok(vec![oh, ow, c])
    }

    /// tf.image.resize as the UpSampling2D it equals, from its input and output shapes.
    pub fn as_up_sampling(&self, input: &[i64], output: &[i64]) -> super::UpSampling2D {
        let factor = |a: usize| {
            let (i, o) = (input.get(a).copied(), output.get(a).copied());
            match (i, o) {
                (Some(i), Some(o)) if i > 0 => o / i,
                _ => 1,
            }
        };
        super::UpSampling2D {
            size: [factor(0), factor(1)],
            interpolation: self.method,
            align_corners: false,
        }
    }
}

impl LayerKind for TFOpLambda {
    const CLASS: &'static str = "TFOpLambda";
    const POSITIONAL: &'static [&'static str] = &["function", "axis"];
    const KNOWN: &'static [&'static str] = &[
        "function", "axis", "x", "y", "keepdims", "shape", "size", "method",
    ];
    /// `import` reads the function and the call's arguments itself (they are not in the config).
    const IMPORTED_CONFIG: &'static [&'static str] = &["function"];

    fn parse(r: &mut ArgReader) -> Self {
        if !r.has("function") {
            r.missing("function", "tf_op(\"__operators__.add\")");
        }
        let function = r.keyword("function", TfFunction::OperatorsAdd, None);
        let axis_given = r.has("axis");
        let axis = r.int_or("axis", -5, 4, -1);
        let keepdims = r.has("keepdims").then(|| r.bool_or("keepdims", false));
        let shape = r.int_list("shape", -1, MAX_DIM);
        let size = r.pair("size", 1, MAX_DIM);
        let method = r.keyword("method", Interpolation::Bilinear, None);
        let lim = f64::MAX;
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
            axis_given,
            keepdims,
            shape,
            size,
            method,
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
        match (self.constant, self.computes()) {
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
                     math.add, math.subtract, math.multiply and math.truediv)"
                ),
                "constant operand given",
            )),
            (None, TfCompute::Merge(_)) => {
                takes(2)?;
                broadcast_shapes(inputs, name)
            }
            (None, TfCompute::ReduceChannels(_)) => {
                takes(1)?;
                let shape = &inputs[0];
                // Keras's axes count the batch axis: the channels are -1 or the rank minus 1.
                let last = shape.len() as i64;
                if !self.axis_given || (self.axis != -1 && self.axis != last) {
                    return Err(ShapeError::new(
                        "E-arg-value",
                        format!(
                            "{name} runs over the channel axis only: `axis: -1` (or {last}), \
                             not {}",
                            if self.axis_given {
                                self.axis.to_string()
                            } else {
                                "every axis (no `axis`)".into()
                            }
                        ),
                        "reduces the channels only",
                    ));
                }
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
                Ok(inputs[0].clone())
            }
            (None, TfCompute::Reshape) => {
                takes(1)?;
                self.reshaped(&inputs[0])
            }
            (None, TfCompute::Resize(_)) => {
                takes(1)?;
                self.resized(&inputs[0])
            }
        }
    }

    fn config(&self) -> Json {
        match self.computes() {
            TfCompute::Concat(axis) => json!({ "function": self.function, "axis": axis }),
            TfCompute::ReduceChannels(_) => json!({
                "function": self.function, "axis": self.axis, "keepdims": self.keepdims
            }),
            TfCompute::Scalar(s) => {
                let place = if s.constant_first { "x" } else { "y" };
                json!({ "function": self.function, place: s.constant })
            }
            TfCompute::Merge(_) | TfCompute::Activation(_) => json!({ "function": self.function }),
            TfCompute::Reshape if self.function == TfFunction::Reshape => {
                json!({ "function": self.function, "shape": self.shape })
            }
            TfCompute::Reshape => json!({ "function": self.function, "axis": self.axis }),
            TfCompute::Resize(method) => json!({
                "function": self.function, "size": self.size.map(|s| s.to_vec()), "method": method
            }),
        }
    }

    fn auto_name_base(&self) -> Option<&'static str> {
        Some(self.function.layer_name_base())
    }

    fn arity() -> (usize, usize) {
        (1, usize::MAX)
    }
}
