//! BatchNormalization.

use super::{LayerKind, Shape, ShapeError, WeightSpec};
use crate::ir::value::ArgReader;
use serde_json::{json, Value as Json};

#[derive(Debug, Clone, PartialEq)]
pub struct BatchNormalization {
    pub axis: i64,
    pub momentum: f64,
    /// Keras's default is 1e-3 (not PyTorch's 1e-5).
    pub epsilon: f64,
    pub center: bool,
    pub scale: bool,
}

impl LayerKind for BatchNormalization {
    const CLASS: &'static str = "BatchNormalization";
    const POSITIONAL: &'static [&'static str] = &["axis", "momentum", "epsilon", "center", "scale"];
    const KNOWN: &'static [&'static str] = &[
        "axis",
        "momentum",
        "epsilon",
        "center",
        "scale",
        "beta_initializer",
        "gamma_initializer",
        "moving_mean_initializer",
        "moving_variance_initializer",
    ];
    const IMPORTED_CONFIG: &'static [&'static str] =
        &["axis", "momentum", "epsilon", "center", "scale"];

    fn parse(r: &mut ArgReader) -> Self {
        for init in [
            "beta_initializer",
            "gamma_initializer",
            "moving_mean_initializer",
            "moving_variance_initializer",
        ] {
            r.choice(init, &["zeros", "ones"], "zeros", None);
        }
        BatchNormalization {
            axis: r.int_or("axis", -4, 3, -1),
            momentum: r.float_or("momentum", 0.0, 1.0, 0.99),
            epsilon: r.float_or("epsilon", 0.0, 1.0, 1e-3),
            center: r.bool_or("center", true),
            scale: r.bool_or("scale", true),
        }
    }

    fn infer(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        let shape = inputs[0].clone();
        let rank = shape.len() as i64 + 1;
        if !(self.axis == -1 || self.axis == rank - 1) {
            return Err(ShapeError::new(
                "E-axis",
                format!(
                    "unetc normalises the channel axis only (axis -1 or {}), not {}",
                    rank - 1,
                    self.axis
                ),
                "unsupported axis",
            ));
        }
        Ok(shape)
    }

    fn weights(&self, inputs: &[Shape]) -> Vec<WeightSpec> {
        let c = inputs.first().and_then(|s| s.last()).copied().unwrap_or(0);
        // Keras's defaults: the `*_initializer` arguments are read but not kept.
        let mut w = Vec::new();
        if self.scale {
            w.push(WeightSpec {
                name: "gamma",
                shape: vec![c],
                trainable: true,
                initializer: "ones".into(),
            });
        }
        if self.center {
            w.push(WeightSpec {
                name: "beta",
                shape: vec![c],
                trainable: true,
                initializer: "zeros".into(),
            });
        }
        w.push(WeightSpec {
            name: "moving_mean",
            shape: vec![c],
            trainable: false,
            initializer: "zeros".into(),
        });
        w.push(WeightSpec {
            name: "moving_variance",
            shape: vec![c],
            trainable: false,
            initializer: "ones".into(),
        });
        w
    }

    fn config(&self) -> Json {
        // The axis is reported the way Keras stores it after build: as the positive index.
        json!({ "axis": [if self.axis < 0 { 3 } else { self.axis }], "momentum": self.momentum, "epsilon": self.epsilon, "center": self.center, "scale": self.scale })
    }
}
