//! BatchNormalization, GroupNormalization and LayerNormalization.

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
    const REGULARIZED: &'static [(&'static str, &'static str)] =
        &[("beta_regularizer", "beta"), ("gamma_regularizer", "gamma")];
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
            axis: r.int_or("axis", -5, 4, -1),
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
        // The axis is reported the way Keras stores it after build: as the positive index (of
        // an image when the input is unknown).
        self.built_config(&[vec![0; 3]])
    }

    fn built_config(&self, inputs: &[Shape]) -> Json {
        let rank = inputs.first().map_or(3, |s| s.len()) as i64 + 1;
        let axis = if self.axis < 0 {
            rank + self.axis
        } else {
            self.axis
        };
        json!({ "axis": [axis], "momentum": self.momentum, "epsilon": self.epsilon, "center": self.center, "scale": self.scale })
    }
}

/// Where the statistics of GroupNormalization and LayerNormalization come from, on one item
/// (row-major over its axes, NHWC without N) viewed as `[outer, span, groups, group_size]`:
/// one mean and variance per `(item, outer, group)`, over its `span * group_size` values.
/// `gamma` and `beta` are indexed by `group * group_size + j`, plus `position * channels`
/// where they vary along the span (LayerNormalization over more axes than the channels).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NormLayout {
    pub outer: usize,
    pub span: usize,
    pub groups: usize,
    pub group_size: usize,
    /// Whether `gamma`/`beta` have one value per span position too.
    pub affine_per_position: bool,
    /// Added to the variance (in f32, as TF does).
    pub epsilon: f32,
}

impl NormLayout {
    /// Values per item.
    pub fn item(&self) -> usize {
        self.outer * self.span * self.groups * self.group_size
    }

    /// Values of `gamma` (and `beta`).
    pub fn affine_len(&self) -> usize {
        let per_position = if self.affine_per_position {
            self.span
        } else {
            1
        };
        per_position * self.groups * self.group_size
    }
}

/// The initializers the normalizations accept for `beta` and `gamma` (as PReLU's alpha).
fn affine_initializers(r: &mut ArgReader) -> (String, String) {
    let beta = r.choice("beta_initializer", super::conv::INITIALIZERS, "zeros", None);
    let gamma = r.choice("gamma_initializer", super::conv::INITIALIZERS, "ones", None);
    (beta, gamma)
}

/// `gamma` (if `scale`) then `beta` (if `center`), both of `shape`, as Keras creates them.
fn affine_weights(
    shape: Vec<i64>,
    scale: bool,
    center: bool,
    gamma_initializer: &str,
    beta_initializer: &str,
) -> Vec<WeightSpec> {
    let mut w = Vec::new();
    if scale {
        w.push(WeightSpec {
            name: "gamma",
            shape: shape.clone(),
            trainable: true,
            initializer: gamma_initializer.into(),
        });
    }
    if center {
        w.push(WeightSpec {
            name: "beta",
            shape,
            trainable: true,
            initializer: beta_initializer.into(),
        });
    }
    w
}

/// tf.keras's GroupNormalization: the channels split into `groups` groups, each normalised over
/// H, W and its channels per item; `groups` = channels is InstanceNormalization.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupNormalization {
    pub groups: i64,
    pub epsilon: f64,
    pub center: bool,
    pub scale: bool,
    pub beta_initializer: String,
    pub gamma_initializer: String,
}

impl GroupNormalization {
    /// The statistics layout for an input of `shape` (its last axis the channels).
    pub fn layout(&self, shape: &[i64]) -> NormLayout {
        let dims: Vec<usize> = shape.iter().map(|&d| d.max(0) as usize).collect();
        let (channels, positions) = dims.split_last().unwrap_or((&0, &[]));
        let groups = self.groups.max(1) as usize;
        NormLayout {
            outer: 1,
            span: positions.iter().product(),
            groups,
            group_size: channels / groups,
            affine_per_position: false,
            epsilon: self.epsilon as f32,
        }
    }
}

impl LayerKind for GroupNormalization {
    const CLASS: &'static str = "GroupNormalization";
    const REGULARIZED: &'static [(&'static str, &'static str)] =
        &[("beta_regularizer", "beta"), ("gamma_regularizer", "gamma")];
    const POSITIONAL: &'static [&'static str] = &["groups", "axis", "epsilon", "center", "scale"];
    const KNOWN: &'static [&'static str] = &[
        "groups",
        "axis",
        "epsilon",
        "center",
        "scale",
        "beta_initializer",
        "gamma_initializer",
    ];
    const IMPORTED_CONFIG: &'static [&'static str] = &[
        "groups",
        "axis",
        "epsilon",
        "center",
        "scale",
        "beta_initializer",
        "gamma_initializer",
    ];

    fn parse(r: &mut ArgReader) -> Self {
        // Only the channel axis: the config then always says -1, as Keras keeps it.
        r.int_or("axis", -1, -1, -1);
        let (beta_initializer, gamma_initializer) = affine_initializers(r);
        GroupNormalization {
            groups: r.int_or("groups", 1, i64::from(i32::MAX), 32),
            epsilon: r.float_or("epsilon", 0.0, 1.0, 1e-3),
            center: r.bool_or("center", true),
            scale: r.bool_or("scale", true),
            beta_initializer,
            gamma_initializer,
        }
    }

    fn infer(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        let shape = inputs[0].clone();
        let channels = shape.last().copied().unwrap_or(0);
        let groups = self.groups;
        // Keras's own messages (build() of tf_keras's GroupNormalization).
        if channels < groups {
            return Err(ShapeError::new(
                "E-groups",
                format!(
                    "Number of groups ({groups}) cannot be more than the number of channels ({channels})."
                ),
                format!("{groups} groups for {channels} channels"),
            )
            .help(format!("use a number of groups that divides {channels}")));
        }
        if channels % groups != 0 {
            return Err(ShapeError::new(
                "E-groups",
                format!(
                    "Number of groups ({groups}) must be a multiple of the number of channels ({channels})."
                ),
                format!("{channels} channels do not split into {groups} groups"),
            )
            .help(format!(
                "the channels must be a multiple of the groups: use a number of groups that divides {channels}"
            )));
        }
        Ok(shape)
    }

    fn weights(&self, inputs: &[Shape]) -> Vec<WeightSpec> {
        let c = inputs.first().and_then(|s| s.last()).copied().unwrap_or(0);
        affine_weights(
            vec![c],
            self.scale,
            self.center,
            &self.gamma_initializer,
            &self.beta_initializer,
        )
    }

    fn config(&self) -> Json {
        json!({
            "groups": self.groups,
            "axis": -1,
            "epsilon": self.epsilon,
            "center": self.center,
            "scale": self.scale,
            "beta_initializer": self.beta_initializer,
            "gamma_initializer": self.gamma_initializer,
        })
    }
}

/// tf.keras's LayerNormalization: each item normalised over `axis` (Keras counts the batch as
/// axis 0; negative axes count from the end). unetc takes trailing axes: `-1` (per pixel over
/// the channels), `[2, 3]`, `[1, 2, 3]` (over the whole item).
#[derive(Debug, Clone, PartialEq)]
pub struct LayerNormalization {
    /// As given (the order of `gamma`'s axes).
    pub axis: Vec<i64>,
    pub epsilon: f64,
    pub center: bool,
    pub scale: bool,
    pub beta_initializer: String,
    pub gamma_initializer: String,
}

impl LayerNormalization {
    /// The axes as Keras keeps them after build: counted from the batch's 0, in the given order.
    pub fn positive_axes(&self, rank: usize) -> Vec<i64> {
        let rank = rank as i64 + 1;
        self.axis
            .iter()
            .map(|&a| if a < 0 { a + rank } else { a })
            .collect()
    }

    /// The statistics layout for an input of `shape`; the axes are a trailing run (`infer`).
    pub fn layout(&self, shape: &[i64]) -> NormLayout {
        let dims: Vec<usize> = shape.iter().map(|&d| d.max(0) as usize).collect();
        let first = self
            .positive_axes(dims.len())
            .into_iter()
            .min()
            .unwrap_or(dims.len() as i64)
            .clamp(1, dims.len().max(1) as i64) as usize
            - 1;
        let (kept, normalized) = dims.split_at(first.min(dims.len()));
        let (channels, span) = normalized.split_last().unwrap_or((&1, &[]));
        NormLayout {
            outer: kept.iter().product(),
            span: span.iter().product(),
            groups: 1,
            group_size: *channels,
            affine_per_position: true,
            epsilon: self.epsilon as f32,
        }
    }
}

impl LayerKind for LayerNormalization {
    const CLASS: &'static str = "LayerNormalization";
    const REGULARIZED: &'static [(&'static str, &'static str)] =
        &[("beta_regularizer", "beta"), ("gamma_regularizer", "gamma")];
    const POSITIONAL: &'static [&'static str] = &["axis", "epsilon", "center", "scale"];
    const KNOWN: &'static [&'static str] = &[
        "axis",
        "epsilon",
        "center",
        "scale",
        "beta_initializer",
        "gamma_initializer",
    ];
    const IMPORTED_CONFIG: &'static [&'static str] = &[
        "axis",
        "epsilon",
        "center",
        "scale",
        "beta_initializer",
        "gamma_initializer",
    ];

    fn parse(r: &mut ArgReader) -> Self {
        let axis = if r.has("axis") {
            r.int_list("axis", -4, 3)
        } else {
            vec![-1]
        };
        let (beta_initializer, gamma_initializer) = affine_initializers(r);
        LayerNormalization {
            axis: if axis.is_empty() { vec![-1] } else { axis },
            epsilon: r.float_or("epsilon", 0.0, 1.0, 1e-3),
            center: r.bool_or("center", true),
            scale: r.bool_or("scale", true),
            beta_initializer,
            gamma_initializer,
        }
    }

    fn infer(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        let shape = inputs[0].clone();
        let rank = shape.len();
        let mut axes = self.positive_axes(rank);
        if let Some(&bad) = axes.iter().find(|&&a| a < 1 || a as usize > rank) {
            return Err(ShapeError::new(
                "E-axis",
                format!(
                    "LayerNormalization axis {bad} is out of range for {{0}} of rank {}",
                    rank + 1
                ),
                "bad axis",
            ));
        }
        axes.sort_unstable();
        if axes.windows(2).any(|w| w[0] == w[1]) {
            return Err(ShapeError::new(
                "E-axis",
                format!("Duplicate axis: {:?}", self.axis),
                "duplicate axis",
            ));
        }
        // A trailing run of axes after the batch: the kernels' statistics layout.
        let trailing: Vec<i64> = ((rank + 1 - axes.len()) as i64..=rank as i64).collect();
        if axes != trailing {
            return Err(ShapeError::new(
                "E-axis",
                format!(
                    "unetc normalises a trailing run of axes after the batch (-1, [{}, {rank}], {:?}), not {:?}",
                    rank.saturating_sub(1),
                    (1..=rank).collect::<Vec<_>>(),
                    self.axis
                ),
                "unsupported axis",
            ));
        }
        Ok(shape)
    }

    fn weights(&self, inputs: &[Shape]) -> Vec<WeightSpec> {
        let Some(shape) = inputs.first() else {
            return Vec::new();
        };
        // Keras's param shape: the input's size on each axis, in the order given.
        let param: Vec<i64> = self
            .positive_axes(shape.len())
            .iter()
            .filter_map(|&a| usize::try_from(a - 1).ok().and_then(|k| shape.get(k)))
            .copied()
            .collect();
        affine_weights(
            param,
            self.scale,
            self.center,
            &self.gamma_initializer,
            &self.beta_initializer,
        )
    }

    fn config(&self) -> Json {
        // Keras keeps the axis as a list of positive axes once built (for image inputs).
        self.built_config(&[vec![0; 3]])
    }

    fn built_config(&self, inputs: &[Shape]) -> Json {
        // Positive axes of the input it was built on (tokens `(T, E)`: `[2]`).
        let rank = inputs.first().map_or(3, Vec::len);
        json!({
            "axis": self.positive_axes(rank),
            "epsilon": self.epsilon,
            "center": self.center,
            "scale": self.scale,
            "beta_initializer": self.beta_initializer,
            "gamma_initializer": self.gamma_initializer,
        })
    }
}

/// Keras's Normalization (the first layer of keras.applications' EfficientNets):
/// `(x - mean) / max(sqrt(variance), 1e-7)` per channel, `mean` and `variance` non-trainable
/// weights (with Keras's `count`, unused at inference). Only the channel axis, and only the
/// form whose statistics are weights (Keras's `mean=`/`variance=` constants and `invert=True`
/// are refused).
#[derive(Debug, Clone, PartialEq)]
pub struct Normalization {
    pub axis: i64,
}

impl Normalization {
    /// Keras's `backend.epsilon()`: the least denominator.
    pub const EPSILON: f32 = 1e-7;

    /// The denominator of a channel whose variance is `var`, as Keras computes it in float32.
    pub fn denominator(var: f32) -> f32 {
        var.sqrt().max(Self::EPSILON)
    }
}

impl LayerKind for Normalization {
    const CLASS: &'static str = "Normalization";
    const POSITIONAL: &'static [&'static str] = &["axis", "mean", "variance", "invert"];
    const KNOWN: &'static [&'static str] = &["axis", "mean", "variance", "invert"];
    const IMPORTED_CONFIG: &'static [&'static str] = &["axis", "mean", "variance", "invert"];

    fn parse(r: &mut ArgReader) -> Self {
        use crate::ir::value::Value;
        for constant in ["mean", "variance"] {
            match r.peek(constant) {
                None | Some(Value::None) => {
                    r.take_arg(constant);
                }
                Some(_) => r.reject(
                    constant,
                    "unetc reads the statistics from the layer's weights (`mean`, `variance`); \
                     leave it none and put the values in the weights file",
                ),
            }
        }
        if matches!(r.peek("invert"), Some(Value::Bool(true))) {
            r.reject(
                "invert",
                "unetc runs the normalization, not its inverse; leave invert false",
            );
        }
        r.bool_or("invert", false);
        Normalization {
            axis: r.int_or("axis", -5, 4, -1),
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
        let stat = |name, initializer: &str, shape| WeightSpec {
            name,
            shape,
            trainable: false,
            initializer: initializer.into(),
        };
        vec![
            stat("mean", "zeros", vec![c]),
            stat("variance", "ones", vec![c]),
            // Keras's int64 count of the samples adapt() saw.
            stat("count", "zeros", vec![]),
        ]
    }

    fn value_bytes(&self, weight: &str) -> u64 {
        if weight == "count" {
            8
        } else {
            4
        }
    }

    fn config(&self) -> Json {
        json!({ "axis": [self.axis], "invert": false, "mean": null, "variance": null })
    }
}
