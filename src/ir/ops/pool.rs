//! The poolings: MaxPooling2D, AveragePooling2D, GlobalAveragePooling2D, GlobalMaxPooling2D.

use super::conv::WindowGeometry;
use super::{
    image, pair_json, product, same_size, valid_size, LayerKind, Padding, Shape, ShapeError,
};
use crate::ir::value::{ArgReader, MAX_DIM};
use serde_json::{json, Value as Json};

/// The 2-D poolings: one window rule (sizes, `same` padding, the floor warning) for both.
macro_rules! pooling2d {
    ($($(#[$doc:meta])* $name:ident, keras_alias: $alias:literal;)*) => {$(
$(#[$doc])*
        #[derive(Debug, Clone, PartialEq)]
pub struct $name {
    pub pool_size: [i64; 2],
    /// Keras: `strides=None` means `pool_size`.
    pub strides: [i64; 2],
    pub padding: Padding,
}

impl $name {
    /// The pooling window along rows (axis 0) or columns (axis 1) for input size `n` and output
    /// `out` (padded positions never win the max, and are left out of the mean).
    pub fn geometry(&self, axis: usize, n: usize, out: usize) -> WindowGeometry {
        WindowGeometry::new(
            self.pool_size[axis] as usize,
            self.strides[axis] as usize,
            1,
            self.padding,
            n,
            out,
        )
    }
}

impl LayerKind for $name {
    const CLASS: &'static str = stringify!($name);
    const POSITIONAL: &'static [&'static str] = &["pool_size", "strides", "padding"];
    const KNOWN: &'static [&'static str] = &["pool_size", "strides", "padding", "data_format"];
    const KERAS_ALIASES: &'static [&'static str] = &[$alias];
    const IMPORTED_CONFIG: &'static [&'static str] = &["pool_size", "strides", "padding"];

    fn parse(r: &mut ArgReader) -> Self {
        let pool_size = r.pair_or("pool_size", 1, MAX_DIM, [2, 2]);
        let strides = match r.peek("strides") {
            Some(crate::ir::value::Value::None) => {
                r.take_arg("strides");
                pool_size
            }
            _ => r.pair_or("strides", 1, MAX_DIM, pool_size),
        };
        r.choice(
            "data_format",
            &["channels_last"],
            "channels_last",
            Some("channels_last"),
        );
        $name {
            pool_size,
            strides,
            padding: r.keyword("padding", Padding::Valid, None),
        }
    }

    fn infer(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        let [h, w, c] = image(inputs, Self::CLASS)?;
        let mut out = [0i64; 2];
        for (axis, n) in [h, w].into_iter().enumerate() {
            let (k, s) = (self.pool_size[axis], self.strides[axis]);
            out[axis] = if self.padding == Padding::Same {
                same_size(n, s)
            } else {
                valid_size(n, k, s).ok_or_else(|| {
                    ShapeError::new(
                        "E-size",
                        format!(
                            "the {}x{} pool window is larger than {{0}}'s {h}x{w} output",
                            self.pool_size[0], self.pool_size[1]
                        ),
                        format!("pooling a {h}x{w} input"),
                    )
                    .help("use a larger input or fewer pooling steps")
                })?
            };
        }
        Ok(vec![out[0], out[1], c])
    }

    fn warnings(&self, inputs: &[Shape]) -> Vec<ShapeError> {
        let Ok([h, w, _]) = image(inputs, Self::CLASS) else {
            return Vec::new();
        };
        if self.padding != Padding::Valid {
            return Vec::new();
        }
        let dropped: Vec<String> = [("height", h, 0usize), ("width", w, 1)]
            .into_iter()
            .filter(|&(_, n, axis)| {
                let (k, s) = (self.pool_size[axis], self.strides[axis]);
                // U-Net style pooling (window == stride) of a size it does not divide.
                k == s && n >= k && n % s != 0
            })
            .map(|(what, n, _)| format!("{what} {n}"))
            .collect();
        if dropped.is_empty() {
            return Vec::new();
        }
        vec![ShapeError::new(
            "W-pool-floor",
            format!("pooling {{0}}'s {h}x{w} output drops its last row/column ({}); Keras floors", dropped.join(", ")),
            "odd size pooled",
        )
        .help("the up path will not get back to the skip's size; choose an input size from `unetc sizes`, or crop the skip")]
    }

    fn macs(&self, _inputs: &[Shape], _output: &Shape) -> u64 {
        // Comparisons or sums, not multiply-accumulates: zero MACs, as FLOP counters count them.
        0
    }

    fn config(&self) -> Json {
        json!({ "pool_size": pair_json(self.pool_size), "strides": pair_json(self.strides), "padding": self.padding })
    }
}

    )*};
}

pooling2d! {
    /// The maximum of each window; `same` pads with -inf.
    MaxPooling2D, keras_alias: "MaxPool2D";
    /// The mean of each window; under `same` the mean of the cells inside the input only.
    AveragePooling2D, keras_alias: "AvgPool2D";
}

/// The global poolings over height and width.
macro_rules! global_pooling2d {
    ($($(#[$doc:meta])* $name:ident, counts_macs: $counts_macs:literal;)*) => {$(
$(#[$doc])*
        #[derive(Debug, Clone, PartialEq)]
pub struct $name {
    pub keepdims: bool,
}

impl LayerKind for $name {
    const CLASS: &'static str = stringify!($name);
    const POSITIONAL: &'static [&'static str] = &["data_format", "keepdims"];
    const KNOWN: &'static [&'static str] = &["data_format", "keepdims"];
    const IMPORTED_CONFIG: &'static [&'static str] = &["keepdims"];

    fn parse(r: &mut ArgReader) -> Self {
        r.choice(
            "data_format",
            &["channels_last"],
            "channels_last",
            Some("channels_last"),
        );
        $name {
            keepdims: r.bool_or("keepdims", false),
        }
    }

    fn infer(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        let [_, _, c] = image(inputs, Self::CLASS)?;
        Ok(if self.keepdims {
            vec![1, 1, c]
        } else {
            vec![c]
        })
    }

    fn macs(&self, inputs: &[Shape], _output: &Shape) -> u64 {
        if $counts_macs {
            inputs.first().map_or(0, |s| product(s))
        } else {
            0
        }
    }

    fn config(&self) -> Json {
        json!({ "keepdims": self.keepdims })
    }
}
    )*};
}

global_pooling2d! {
    /// The mean over height and width (one MAC per input value, as the sum).
    GlobalAveragePooling2D, counts_macs: true;
    /// The maximum over height and width.
    GlobalMaxPooling2D, counts_macs: false;
}
