//! MaxPooling2D and GlobalAveragePooling2D.

use super::conv::WindowGeometry;
use super::{
    image, pair_json, product, same_size, valid_size, LayerKind, Padding, Shape, ShapeError,
};
use crate::ir::value::{ArgReader, MAX_DIM};
use serde_json::{json, Value as Json};

#[derive(Debug, Clone, PartialEq)]
pub struct MaxPooling2D {
    pub pool_size: [i64; 2],
    /// Keras: `strides=None` means `pool_size`.
    pub strides: [i64; 2],
    pub padding: Padding,
}

impl MaxPooling2D {
    /// The pooling window along rows (axis 0) or columns (axis 1) for input size `n` and output
    /// `out` (padded positions never win the max).
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

impl LayerKind for MaxPooling2D {
    const CLASS: &'static str = "MaxPooling2D";
    const POSITIONAL: &'static [&'static str] = &["pool_size", "strides", "padding"];
    const KNOWN: &'static [&'static str] = &["pool_size", "strides", "padding", "data_format"];
    const KERAS_ALIASES: &'static [&'static str] = &["MaxPool2D"];
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
        MaxPooling2D {
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

    fn macs(&self, _inputs: &[Shape], output: &Shape) -> u64 {
        // Comparisons, not multiply-accumulates: counted as zero MACs, like every FLOP counter.
        let _ = output;
        0
    }

    fn config(&self) -> Json {
        json!({ "pool_size": pair_json(self.pool_size), "strides": pair_json(self.strides), "padding": self.padding })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct GlobalAveragePooling2D {
    pub keepdims: bool,
}

impl LayerKind for GlobalAveragePooling2D {
    const CLASS: &'static str = "GlobalAveragePooling2D";
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
        GlobalAveragePooling2D {
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
        inputs.first().map_or(0, |s| product(s))
    }

    fn config(&self) -> Json {
        json!({ "keepdims": self.keepdims })
    }
}
