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
}

impl TfFunction {
    /// The base of Keras's names for the layer: `tf.` and the function.
    pub fn layer_name_base(self) -> &'static str {
        match self {
            TfFunction::OperatorsAdd => "tf.__operators__.add",
            TfFunction::MathAdd => "tf.math.add",
            TfFunction::MathMultiply => "tf.math.multiply",
            TfFunction::MathSubtract => "tf.math.subtract",
            TfFunction::MathMaximum => "tf.math.maximum",
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
}

impl TFOpLambda {
    pub fn computes(&self) -> TfCompute {
        match self.function {
            TfFunction::OperatorsAdd | TfFunction::MathAdd => TfCompute::Merge(MergeFn::Add),
            TfFunction::MathMultiply => TfCompute::Merge(MergeFn::Multiply),
            TfFunction::MathSubtract => TfCompute::Merge(MergeFn::Subtract),
            TfFunction::MathMaximum => TfCompute::Merge(MergeFn::Maximum),
            TfFunction::MathMinimum => TfCompute::Merge(MergeFn::Minimum),
            TfFunction::Concat => TfCompute::Concat(self.axis),
            TfFunction::NnRelu => TfCompute::Activation(ActivationFn::Relu),
            TfFunction::MathSigmoid => TfCompute::Activation(ActivationFn::Sigmoid),
        }
    }
}

impl LayerKind for TFOpLambda {
    const CLASS: &'static str = "TFOpLambda";
    const POSITIONAL: &'static [&'static str] = &["function", "axis"];
    const KNOWN: &'static [&'static str] = &["function", "axis"];
    /// `import` reads the function and the call's arguments itself (they are not in the config).
    const IMPORTED_CONFIG: &'static [&'static str] = &["function"];

    fn parse(r: &mut ArgReader) -> Self {
        if !r.has("function") {
            r.missing("function", "tf_op(\"__operators__.add\")");
        }
        TFOpLambda {
            function: r.keyword("function", TfFunction::OperatorsAdd, None),
            axis: r.int_or("axis", -5, 4, -1),
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
        match self.computes() {
            TfCompute::Merge(_) => {
                takes(2)?;
                broadcast_shapes(inputs, name)
            }
            TfCompute::Concat(axis) => Concatenate { axis }.infer(inputs),
            TfCompute::Activation(_) => {
                takes(1)?;
                Ok(inputs[0].clone())
            }
        }
    }

    fn config(&self) -> Json {
        match self.computes() {
            TfCompute::Concat(axis) => json!({ "function": self.function, "axis": axis }),
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
