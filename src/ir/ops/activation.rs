//! Activation, ReLU, Softmax and Dropout: shape-preserving, no weights.

use super::{ActivationFn, LayerKind, Shape, ShapeError};
use crate::ir::value::ArgReader;
use serde_json::{json, Value as Json};

fn same_shape(inputs: &[Shape]) -> Result<Shape, ShapeError> {
    inputs
        .first()
        .cloned()
        .ok_or_else(|| ShapeError::new("E-arity", "the layer needs an input", "no input"))
}

#[derive(Debug, Clone, PartialEq)]
pub struct Activation {
    pub activation: ActivationFn,
}

impl LayerKind for Activation {
    const CLASS: &'static str = "Activation";
    const POSITIONAL: &'static [&'static str] = &["activation"];
    const KNOWN: &'static [&'static str] = &["activation"];
    const IMPORTED_CONFIG: &'static [&'static str] = &["activation"];

    fn parse(r: &mut ArgReader) -> Self {
        if !r.has("activation") {
            r.missing("activation", "activation(relu)");
        }
        Activation {
            activation: r.keyword(
                "activation",
                ActivationFn::Linear,
                Some(ActivationFn::Linear),
            ),
        }
    }

    fn infer(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        same_shape(inputs)
    }

    fn config(&self) -> Json {
        json!({ "activation": self.activation })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ReLU {
    pub max_value: Option<f64>,
    pub negative_slope: f64,
    pub threshold: f64,
}

impl LayerKind for ReLU {
    const CLASS: &'static str = "ReLU";
    const POSITIONAL: &'static [&'static str] = &["max_value", "negative_slope", "threshold"];
    const KNOWN: &'static [&'static str] = &["max_value", "negative_slope", "threshold"];
    const IMPORTED_CONFIG: &'static [&'static str] = &["max_value", "negative_slope", "threshold"];

    fn parse(r: &mut ArgReader) -> Self {
        let max_value = match r.peek("max_value") {
            Some(crate::ir::value::Value::None) | None => {
                r.take_arg("max_value");
                None
            }
            Some(_) => Some(r.float_or("max_value", 0.0, f64::MAX, f64::MAX)),
        };
        ReLU {
            max_value,
            negative_slope: r.float_or("negative_slope", 0.0, f64::MAX, 0.0),
            threshold: r.float_or("threshold", f64::MIN, f64::MAX, 0.0),
        }
    }

    fn infer(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        same_shape(inputs)
    }

    fn config(&self) -> Json {
        json!({ "max_value": self.max_value, "negative_slope": self.negative_slope, "threshold": self.threshold })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Softmax {
    pub axis: i64,
}

impl LayerKind for Softmax {
    const CLASS: &'static str = "Softmax";
    const POSITIONAL: &'static [&'static str] = &["axis"];
    const KNOWN: &'static [&'static str] = &["axis"];
    const IMPORTED_CONFIG: &'static [&'static str] = &["axis"];

    fn parse(r: &mut ArgReader) -> Self {
        Softmax {
            axis: r.int_or("axis", -4, 3, -1),
        }
    }

    fn infer(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        let shape = same_shape(inputs)?;
        let rank = shape.len() as i64 + 1;
        if self.axis >= rank || self.axis < -rank || self.axis == 0 || self.axis == -rank {
            return Err(ShapeError::new(
                "E-axis",
                format!("softmax axis {} is not a feature axis of {{0}}", self.axis),
                "bad axis",
            ));
        }
        Ok(shape)
    }

    fn config(&self) -> Json {
        json!({ "axis": self.axis })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Dropout {
    pub rate: f64,
}

impl LayerKind for Dropout {
    const CLASS: &'static str = "Dropout";
    const POSITIONAL: &'static [&'static str] = &["rate", "noise_shape", "seed"];
    const KNOWN: &'static [&'static str] = &["rate", "seed"];
    const IMPORTED_CONFIG: &'static [&'static str] = &["rate"];

    fn parse(r: &mut ArgReader) -> Self {
        if !r.has("rate") {
            r.missing("rate", "dropout(0.5)");
        }
        r.int("seed", i64::MIN, i64::MAX);
        Dropout {
            rate: r.float_or("rate", 0.0, 1.0, 0.0),
        }
    }

    fn infer(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        same_shape(inputs)
    }

    fn config(&self) -> Json {
        json!({ "rate": self.rate, "noise_shape": null })
    }
}
