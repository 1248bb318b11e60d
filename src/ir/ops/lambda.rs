//! Lambda: a Keras layer that runs a Python function. unetc cannot run Python code; it runs the
//! functions of published packages that U-Net encoders are built with, known by their module and
//! name ([`LambdaFunction`]), and computes what their source computes. Import recognises them
//! from the layer's config (src/interop/keras.rs); any other Lambda is refused there by name.

use super::keywords::LambdaFunction;
use super::{image, LayerKind, Shape, ShapeError};
use crate::ir::value::{ArgReader, MAX_DIM};
use serde_json::{json, Value as Json};

/// classification_models' channel axis for channels-last tensors (its functions take 3 or 1).
const CHANNELS_LAST: i64 = 3;

#[derive(Debug, Clone, PartialEq)]
pub struct Lambda {
    pub function: LambdaFunction,
    /// slice_tensor's `start` and `stop`: channels `start..stop`.
    pub start: i64,
    pub stop: i64,
    /// slice_tensor's `axis`, expand_dims's `channels_axis`: 3 (channels last) is what unetc
    /// runs; 1 is PyTorch's channels-first layout.
    pub axis: i64,
}

impl Lambda {
    /// slice_tensor's channels `start..stop` (checked by `infer`).
    pub fn channels(&self) -> std::ops::Range<usize> {
        self.start.max(0) as usize..self.stop.max(0) as usize
    }

    /// The Lambda's `arguments`, as Keras records them.
    pub fn arguments(&self) -> Json {
        match self.function {
            LambdaFunction::SliceTensor => {
                json!({ "start": self.start, "stop": self.stop, "axis": self.axis })
            }
            LambdaFunction::ExpandDims => json!({ "channels_axis": self.axis }),
        }
    }
}

impl LayerKind for Lambda {
    const CLASS: &'static str = "Lambda";
    const POSITIONAL: &'static [&'static str] = &["function"];
    const KNOWN: &'static [&'static str] = &["function", "start", "stop", "axis", "channels_axis"];
    /// `import` reads the function and its `arguments` itself.
    const IMPORTED_CONFIG: &'static [&'static str] = &[];

    fn parse(r: &mut ArgReader) -> Self {
        if !r.has("function") {
            r.missing(
                "function",
                "lambda(slice_tensor, start: 0, stop: 4, axis: 3)",
            );
        }
        let function = r.keyword("function", LambdaFunction::SliceTensor, None);
        let example = match function {
            LambdaFunction::SliceTensor => "lambda(slice_tensor, start: 0, stop: 4, axis: 3)",
            LambdaFunction::ExpandDims => "lambda(expand_dims, channels_axis: 3)",
        };
        let value = |r: &mut ArgReader, name: &str| -> i64 {
            if function.arguments().contains(&name) {
                if !r.has(name) {
                    r.missing(name, example);
                }
                r.int_or(name, 0, MAX_DIM, 0)
            } else {
                r.reject(name, &format!("is not an argument of {function}"));
                0
            }
        };
        let start = value(r, "start");
        let stop = value(r, "stop");
        let axis = match function {
            LambdaFunction::SliceTensor => {
                let axis = value(r, "axis");
                value(r, "channels_axis");
                axis
            }
            LambdaFunction::ExpandDims => {
                value(r, "axis");
                value(r, "channels_axis")
            }
        };
        Lambda {
            function,
            start,
            stop,
            axis,
        }
    }

    fn infer(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        if self.axis != CHANNELS_LAST {
            return Err(ShapeError::new(
                "E-arg-value",
                format!(
                    "{} with {} {}: unetc runs the channels-last form ({} 3) only",
                    self.function,
                    self.function.arguments().last().copied().unwrap_or("axis"),
                    self.axis,
                    self.function.arguments().last().copied().unwrap_or("axis"),
                ),
                "channels last only",
            ));
        }
        match self.function {
            LambdaFunction::SliceTensor => {
                let [h, w, c] = image(inputs, "slice_tensor")?;
                if !(self.start < self.stop && self.stop <= c) {
                    return Err(ShapeError::new(
                        "E-arg-value",
                        format!(
                            "slice_tensor takes channels `start` to `stop` with start < stop <= \
                             the input's {c} channels, not {}..{}",
                            self.start, self.stop
                        ),
                        "channels out of range",
                    ));
                }
                Ok(vec![h, w, self.stop - self.start])
            }
            LambdaFunction::ExpandDims => match inputs.first().map(Vec::as_slice) {
                Some(&[c]) => Ok(vec![1, 1, c]),
                Some(other) => Err(ShapeError::new(
                    "E-rank",
                    format!(
                        "expand_dims takes a vector (None, C) (a pooled feature map), but {{0}} \
                         has shape {}",
                        crate::text::shape_text(other)
                    ),
                    "input is not a vector",
                )),
                None => Err(ShapeError::new(
                    "E-arity",
                    "expand_dims needs an input",
                    "no input",
                )),
            },
        }
    }

    fn config(&self) -> Json {
        json!({
            "function": self.function,
            "module": self.function.module(),
            "arguments": self.arguments(),
        })
    }
}
