//! TFOpLambda: a TensorFlow function applied to Keras tensors (`x + s`, `x * g`,
//! `tf.concat([a, b], -1)`, `tf.nn.relu(x)`), which Keras wraps in a layer named after the
//! function (`tf.__operators__.add`, `tf.concat_1`, ...). No weights. Each function computes what
//! a Keras layer unetc already runs, so the backends reuse that layer's kernel.

use super::keywords::TfFunction;
use super::merge::{broadcast_shapes, Concatenate, MergeFn};
use super::{ActivationFn, LayerKind, Shape, ShapeError};
use crate::ir::value::ArgReader;
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
                | TfFunction::MathSigmoid => {}
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
        }
    }
}

impl LayerKind for TFOpLambda {
    const CLASS: &'static str = "TFOpLambda";
    const POSITIONAL: &'static [&'static str] = &["function", "axis"];
    const KNOWN: &'static [&'static str] = &["function", "axis", "x", "y", "keepdims"];
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
        }
    }

    fn auto_name_base(&self) -> Option<&'static str> {
        Some(self.function.layer_name_base())
    }

    fn arity() -> (usize, usize) {
        (1, usize::MAX)
    }
}
