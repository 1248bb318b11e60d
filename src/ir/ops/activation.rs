//! Activation, ReLU, Softmax and the Dropout kinds: shape-preserving, no weights.

use super::{ActivationFn, LayerKind, Shape, ShapeError, WeightSpec};
use crate::exec::cpu::kernels::tanh;
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

/// The `efficientnet` package's `FixedDropout` (segmentation_models' EfficientNet encoders):
/// a Dropout whose `noise_shape` may leave the batch size `None`. The identity at inference;
/// in training one mask entry covers every axis where `noise_shape` is 1.
#[derive(Debug, Clone, PartialEq)]
pub struct FixedDropout {
    pub rate: f64,
    pub noise_shape: Option<Vec<Option<i64>>>,
}

impl FixedDropout {
    /// The mask's extent per axis of an input of `shape` (batch first): the axis's size, or 1
    /// where the mask is shared along it.
    pub fn mask_dims(&self, shape: &[usize]) -> Vec<usize> {
        match &self.noise_shape {
            None => shape.to_vec(),
            Some(ns) => shape
                .iter()
                .zip(ns)
                .map(|(&d, n)| if *n == Some(1) { 1 } else { d })
                .collect(),
        }
    }
}

impl LayerKind for FixedDropout {
    const CLASS: &'static str = "FixedDropout";
    const POSITIONAL: &'static [&'static str] = &["rate", "noise_shape", "seed"];
    const KNOWN: &'static [&'static str] = &["rate", "noise_shape", "seed"];
    const IMPORTED_CONFIG: &'static [&'static str] = &["rate", "noise_shape"];

    fn parse(r: &mut ArgReader) -> Self {
        if !r.has("rate") {
            r.missing("rate", "fixed_dropout(0.2, noise_shape: (none, 1, 1, 1))");
        }
        r.int("seed", i64::MIN, i64::MAX);
        FixedDropout {
            rate: r.float_or("rate", 0.0, 1.0, 0.0),
            noise_shape: r.noise_shape("noise_shape"),
        }
    }

    fn infer(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        let shape = same_shape(inputs)?;
        if let Some(ns) = &self.noise_shape {
            let fits = ns.len() == shape.len() + 1
                && ns[1..]
                    .iter()
                    .zip(&shape)
                    .all(|(n, &d)| matches!(n, None | Some(1)) || *n == Some(d));
            if !fits {
                let text: Vec<String> = ns
                    .iter()
                    .map(|n| n.map_or("none".into(), |v| v.to_string()))
                    .collect();
                return Err(ShapeError::new(
                    "E-shape",
                    format!(
                        "noise_shape ({}) does not fit {{0}}'s shape (batch, {})",
                        text.join(", "),
                        shape
                            .iter()
                            .map(i64::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    "noise_shape does not fit",
                )
                .help("give one entry per axis, batch first: none, 1 or the axis's size"));
            }
        }
        Ok(shape)
    }

    fn config(&self) -> Json {
        json!({ "rate": self.rate, "noise_shape": self.noise_shape, "seed": null })
    }
}

/// Keras's Rescaling, `x * scale + offset` (`Rescaling(1. / 255)` on a U-Net's input): both
/// numbers converted to the tensor's float32, the product rounded before the sum, as Keras
/// computes it. A number each (Keras also takes one per channel; unetc does not).
#[derive(Debug, Clone, PartialEq)]
pub struct Rescaling {
    pub scale: f64,
    pub offset: f64,
}

impl Rescaling {
    pub fn apply(&self, x: f32) -> f32 {
        let scaled = x * self.scale as f32;
        scaled + self.offset as f32
    }
}

impl LayerKind for Rescaling {
    const CLASS: &'static str = "Rescaling";
    const POSITIONAL: &'static [&'static str] = &["scale", "offset"];
    const KNOWN: &'static [&'static str] = &["scale", "offset"];
    const IMPORTED_CONFIG: &'static [&'static str] = &["scale", "offset"];

    fn parse(r: &mut ArgReader) -> Self {
        if !r.has("scale") {
            r.missing("scale", "rescaling(0.00392156862745098)");
        }
        let finite = f32::MAX as f64;
        Rescaling {
            scale: r.float_or("scale", -finite, finite, 1.0),
            offset: r.float_or("offset", -finite, finite, 0.0),
        }
    }

    fn infer(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        same_shape(inputs)
    }

    fn config(&self) -> Json {
        json!({ "scale": self.scale, "offset": self.offset })
    }
}

/// keras-unet-collection's `GELU` layer (`keras_unet_collection.activations`): the tanh
/// approximation `0.5 x (1 + tanh(0.7978845608028654 (x + 0.044715 x^3)))`, in float32 and in
/// that order, as its call() computes it (Keras's `gelu` activation is the exact erf form).
#[derive(Debug, Clone, PartialEq)]
pub struct GELU {}

impl GELU {
    const C: f32 = 0.797_884_6;
    const A: f32 = 0.044715;

    pub fn apply(x: f32) -> f32 {
        0.5 * x * (1.0 + tanh(Self::C * (x + Self::A * x.powi(3))))
    }

    pub fn derivative(x: f32) -> f32 {
        let t = tanh(Self::C * (x + Self::A * x.powi(3)));
        0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * Self::C * (1.0 + 3.0 * Self::A * x * x)
    }
}

impl LayerKind for GELU {
    const CLASS: &'static str = "GELU";
    const POSITIONAL: &'static [&'static str] = &[];
    const KNOWN: &'static [&'static str] = &[];
    const IMPORTED_CONFIG: &'static [&'static str] = &[];
    const KERAS_MODULES: &'static [&'static str] = &["keras_unet_collection.activations"];

    fn parse(_: &mut ArgReader) -> Self {
        GELU {}
    }

    fn infer(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        same_shape(inputs)
    }

    fn config(&self) -> Json {
        json!({})
    }
}

/// keras-unet-collection's `Snake` layer (`keras_unet_collection.activations`; Ziyin et al.
/// 2020): `x + (1 / beta) * sin(beta * x)^2` in float32, with `beta` the layer's one scalar
/// weight `beta_factor` (starting at the `beta` argument). As in that class the layer is not
/// trainable unless `trainable: true` is given; then `beta_factor` trains too.
#[derive(Debug, Clone, PartialEq)]
pub struct Snake {
    pub beta: f64,
}

impl Snake {
    /// As its call() computes it: `x + (1 / beta) * square(sin(beta * x))`.
    pub fn apply(x: f32, beta: f32) -> f32 {
        let s = (beta * x).sin();
        x + (1.0 / beta) * (s * s)
    }

    /// d/dx: `1 + sin(2 beta x)`.
    pub fn derivative(x: f32, beta: f32) -> f32 {
        1.0 + (2.0 * beta * x).sin()
    }

    /// d/d beta: `x sin(2 beta x) / beta - sin(beta x)^2 / beta^2`.
    pub fn beta_derivative(x: f32, beta: f32) -> f32 {
        let s = (beta * x).sin();
        x * (2.0 * beta * x).sin() / beta - s * s / (beta * beta)
    }
}

impl LayerKind for Snake {
    const CLASS: &'static str = "Snake";
    const POSITIONAL: &'static [&'static str] = &["beta"];
    const KNOWN: &'static [&'static str] = &["beta"];
    const IMPORTED_CONFIG: &'static [&'static str] = &["beta"];
    const KERAS_MODULES: &'static [&'static str] = &["keras_unet_collection.activations"];

    fn parse(r: &mut ArgReader) -> Self {
        let beta = r.float_or("beta", -1e6, 1e6, 0.5);
        if beta == 0.0 {
            r.reject("beta", "Snake divides by beta: give a non-zero beta");
        }
        Snake { beta }
    }

    fn infer(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        same_shape(inputs)
    }

    fn weights(&self, _inputs: &[Shape]) -> Vec<WeightSpec> {
        vec![WeightSpec {
            name: "beta_factor",
            shape: Vec::new(),
            trainable: true,
            initializer: format!("constant({})", as_keras_float(self.beta)),
        }]
    }

    fn config(&self) -> Json {
        json!({ "beta": as_keras_float(self.beta) })
    }

    fn trainable_by_default() -> bool {
        false
    }
}

/// Keras's float arguments are float32 in the layer's config (`LeakyReLU().alpha` prints
/// 0.30000001192092896): the config shows the value as Keras stores it.
fn as_keras_float(x: f64) -> f64 {
    x as f32 as f64
}

/// `x if x >= 0 else alpha * x`; tf.keras 2's default alpha is 0.3.
#[derive(Debug, Clone, PartialEq)]
pub struct LeakyReLU {
    pub alpha: f64,
}

impl LayerKind for LeakyReLU {
    const CLASS: &'static str = "LeakyReLU";
    const POSITIONAL: &'static [&'static str] = &["alpha"];
    const KNOWN: &'static [&'static str] = &["alpha"];
    const IMPORTED_CONFIG: &'static [&'static str] = &["alpha"];

    fn parse(r: &mut ArgReader) -> Self {
        LeakyReLU {
            alpha: r.float_or("alpha", f64::MIN, f64::MAX, 0.3),
        }
    }

    fn infer(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        same_shape(inputs)
    }

    fn config(&self) -> Json {
        json!({ "alpha": as_keras_float(self.alpha) })
    }
}

/// `x if x > 0 else alpha * (exp(x) - 1)`.
#[derive(Debug, Clone, PartialEq)]
pub struct ELU {
    pub alpha: f64,
}

impl LayerKind for ELU {
    const CLASS: &'static str = "ELU";
    const POSITIONAL: &'static [&'static str] = &["alpha"];
    const KNOWN: &'static [&'static str] = &["alpha"];
    const IMPORTED_CONFIG: &'static [&'static str] = &["alpha"];

    fn parse(r: &mut ArgReader) -> Self {
        ELU {
            alpha: r.float_or("alpha", f64::MIN, f64::MAX, 1.0),
        }
    }

    fn infer(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        same_shape(inputs)
    }

    fn config(&self) -> Json {
        json!({ "alpha": as_keras_float(self.alpha) })
    }
}

/// `x if x >= 0 else alpha * x` with a learned `alpha` per element, shared along
/// `shared_axes` (Keras counts the batch as axis 0: `[1, 2]` is one alpha per channel).
#[derive(Debug, Clone, PartialEq)]
pub struct PReLU {
    pub shared_axes: Vec<i64>,
    pub alpha_initializer: String,
}

impl PReLU {
    /// The shape of `alpha` for an input of `shape` (without the batch).
    pub fn alpha_shape(&self, shape: &[i64]) -> Vec<i64> {
        let mut alpha = shape.to_vec();
        for &axis in &self.shared_axes {
            if let Some(d) = usize::try_from(axis - 1)
                .ok()
                .and_then(|a| alpha.get_mut(a))
            {
                *d = 1;
            }
        }
        alpha
    }
}

impl LayerKind for PReLU {
    const CLASS: &'static str = "PReLU";
    const REGULARIZED: &'static [(&'static str, &'static str)] = &[("alpha_regularizer", "alpha")];
    const POSITIONAL: &'static [&'static str] = &["alpha_initializer"];
    const KNOWN: &'static [&'static str] = &["alpha_initializer", "shared_axes"];
    const IMPORTED_CONFIG: &'static [&'static str] = &["alpha_initializer", "shared_axes"];

    fn parse(r: &mut ArgReader) -> Self {
        PReLU {
            alpha_initializer: r.choice(
                "alpha_initializer",
                super::conv::INITIALIZERS,
                "zeros",
                None,
            ),
            shared_axes: r.int_list("shared_axes", 1, 8),
        }
    }

    fn infer(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        let shape = same_shape(inputs)?;
        if let Some(&axis) = self.shared_axes.iter().find(|&&a| a as usize > shape.len()) {
            return Err(ShapeError::new(
                "E-axis",
                format!(
                    "PReLU shared axis {axis} is not an axis of {{0}} (axes 1..={})",
                    shape.len()
                ),
                "bad shared_axes",
            ));
        }
        Ok(shape)
    }

    fn weights(&self, inputs: &[Shape]) -> Vec<WeightSpec> {
        let Some(shape) = inputs.first() else {
            return Vec::new();
        };
        vec![WeightSpec {
            name: "alpha",
            shape: self.alpha_shape(shape),
            trainable: true,
            initializer: self.alpha_initializer.clone(),
        }]
    }

    fn config(&self) -> Json {
        json!({
            "alpha_initializer": self.alpha_initializer,
            "alpha_regularizer": null,
            "alpha_constraint": null,
            "shared_axes": if self.shared_axes.is_empty() { Json::Null } else { json!(self.shared_axes) },
        })
    }
}

/// Keras's noise and dropout layers that are the identity at inference, as Dropout is:
/// SpatialDropout2D (whole channels), GaussianNoise (additive), GaussianDropout (multiplicative).
macro_rules! identity_at_inference {
    ($($(#[$doc:meta])* $name:ident { $arg:ident in $lo:literal ..= $hi:literal }, example: $example:literal;)*) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq)]
        pub struct $name {
            pub $arg: f64,
        }

        impl LayerKind for $name {
            const CLASS: &'static str = stringify!($name);
            const POSITIONAL: &'static [&'static str] = &[stringify!($arg), "seed"];
            const KNOWN: &'static [&'static str] = &[stringify!($arg), "seed"];
            const IMPORTED_CONFIG: &'static [&'static str] = &[stringify!($arg)];

            fn parse(r: &mut ArgReader) -> Self {
                if !r.has(stringify!($arg)) {
                    r.missing(stringify!($arg), $example);
                }
                r.int("seed", i64::MIN, i64::MAX);
                $name {
                    $arg: r.float_or(stringify!($arg), $lo, $hi, 0.0),
                }
            }

            fn infer(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
                same_shape(inputs)
            }

            fn config(&self) -> Json {
                json!({ stringify!($arg): self.$arg, "seed": null })
            }
        }
    )*};
}

identity_at_inference! {
    /// Drops whole channels in training.
    SpatialDropout2D { rate in 0.0 ..= 1.0 }, example: "spatial_dropout2d(0.1)";
    /// Adds N(0, stddev²) noise in training.
    GaussianNoise { stddev in 0.0 ..= 1e30 }, example: "gaussian_noise(0.1)";
    /// Multiplies by N(1, rate / (1 - rate)) noise in training.
    GaussianDropout { rate in 0.0 ..= 1.0 }, example: "gaussian_dropout(0.1)";
}
