//! Flatten and Dense.

use super::{product, ActivationFn, LayerKind, Shape, ShapeError, WeightSpec};
use crate::ir::value::{ArgReader, MAX_DIM};
use serde_json::{json, Value as Json};

#[derive(Debug, Clone, PartialEq)]
pub struct Flatten;

impl LayerKind for Flatten {
    const CLASS: &'static str = "Flatten";
    const POSITIONAL: &'static [&'static str] = &["data_format"];
    const KNOWN: &'static [&'static str] = &["data_format"];
    const IMPORTED_CONFIG: &'static [&'static str] = &[];

    fn parse(r: &mut ArgReader) -> Self {
        r.choice(
            "data_format",
            &["channels_last"],
            "channels_last",
            Some("channels_last"),
        );
        Flatten
    }

    fn infer(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        let n = product(&inputs[0]);
        if n > (1u64 << 40) {
            return Err(ShapeError::new(
                "E-limit",
                "flattening {0} gives more than 2^40 features",
                "too large",
            ));
        }
        Ok(vec![n as i64])
    }

    fn config(&self) -> Json {
        json!({})
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Dense {
    pub units: i64,
    pub activation: ActivationFn,
    pub use_bias: bool,
    pub kernel_initializer: String,
}

impl LayerKind for Dense {
    const CLASS: &'static str = "Dense";
    const REGULARIZED: &'static [(&'static str, &'static str)] = &[
        ("kernel_regularizer", "kernel"),
        ("bias_regularizer", "bias"),
    ];
    const POSITIONAL: &'static [&'static str] = &["units", "activation", "use_bias"];
    const KNOWN: &'static [&'static str] = &[
        "units",
        "activation",
        "use_bias",
        "kernel_initializer",
        "bias_initializer",
    ];
    const IMPORTED_CONFIG: &'static [&'static str] = &[
        "units",
        "activation",
        "use_bias",
        "kernel_initializer",
        "bias_initializer",
    ];

    fn parse(r: &mut ArgReader) -> Self {
        let units = r
            .size("units", "dense(1000, activation: softmax)")
            .unwrap_or(1);
        r.choice("bias_initializer", &["zeros", "ones"], "zeros", None);
        Dense {
            units: units.min(MAX_DIM),
            activation: r.keyword(
                "activation",
                ActivationFn::Linear,
                Some(ActivationFn::Linear),
            ),
            use_bias: r.bool_or("use_bias", true),
            kernel_initializer: r.choice(
                "kernel_initializer",
                &[
                    "glorot_uniform",
                    "glorot_normal",
                    "he_normal",
                    "he_uniform",
                    "lecun_normal",
                    "lecun_uniform",
                    "zeros",
                    "ones",
                ],
                "glorot_uniform",
                None,
            ),
        }
    }

    fn infer(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        let mut out = inputs[0].clone();
        match out.last_mut() {
            Some(last) => *last = self.units,
            None => {
                return Err(ShapeError::new(
                    "E-rank",
                    "dense needs an input with features",
                    "scalar input",
                ))
            }
        }
        Ok(out)
    }

    fn weights(&self, inputs: &[Shape]) -> Vec<WeightSpec> {
        let n_in = inputs.first().and_then(|s| s.last()).copied().unwrap_or(0);
        let mut w = vec![WeightSpec {
            name: "kernel",
            shape: vec![n_in, self.units],
            trainable: true,
            initializer: self.kernel_initializer.clone(),
        }];
        if self.use_bias {
            w.push(WeightSpec {
                name: "bias",
                shape: vec![self.units],
                trainable: true,
                // `bias_initializer` is read but not kept: Dense biases start at zero.
                initializer: "zeros".into(),
            });
        }
        w
    }

    fn macs(&self, inputs: &[Shape], output: &Shape) -> u64 {
        let n_in = inputs.first().and_then(|s| s.last()).copied().unwrap_or(0);
        product(output).saturating_mul(n_in.max(0) as u64)
    }

    fn config(&self) -> Json {
        json!({ "units": self.units, "activation": self.activation, "use_bias": self.use_bias, "kernel_initializer": self.kernel_initializer })
    }
}
