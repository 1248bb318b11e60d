//! UpSampling2D, Resizing, Cropping2D and ZeroPadding2D.

use super::{image, pair_json, Interpolation, LayerKind, PadMode, Shape, ShapeError};
use crate::ir::value::{ArgReader, MAX_DIM};
use serde_json::{json, Value as Json};

#[derive(Debug, Clone, PartialEq)]
pub struct UpSampling2D {
    pub size: [i64; 2],
    pub interpolation: Interpolation,
    /// unetc's extension (PyTorch's `align_corners=True`, not Keras): bilinear sampling that
    /// maps the corner pixels of input and output onto each other, source = out * (n-1)/(N-1).
    pub align_corners: bool,
}

impl LayerKind for UpSampling2D {
    const CLASS: &'static str = "UpSampling2D";
    const POSITIONAL: &'static [&'static str] = &["size", "data_format", "interpolation"];
    const KNOWN: &'static [&'static str] =
        &["size", "data_format", "interpolation", "align_corners"];
    const IMPORTED_CONFIG: &'static [&'static str] = &["size", "interpolation"];

    fn parse(r: &mut ArgReader) -> Self {
        r.choice(
            "data_format",
            &["channels_last"],
            "channels_last",
            Some("channels_last"),
        );
        UpSampling2D {
            size: r.pair_or("size", 1, 1 << 10, [2, 2]),
            interpolation: r.keyword("interpolation", Interpolation::Nearest, None),
            align_corners: r.bool_or("align_corners", false),
        }
    }

    fn infer(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        let [h, w, c] = image(inputs, Self::CLASS)?;
        if self.align_corners && self.interpolation != Interpolation::Bilinear {
            return Err(ShapeError::new(
                "E-align-corners",
                "align_corners applies to bilinear up-sampling only",
                "nearest repeats pixels",
            )
            .help("write `interpolation: \"bilinear\"`, or drop `align_corners`"));
        }
        let (oh, ow) = (h * self.size[0], w * self.size[1]);
        if oh > MAX_DIM || ow > MAX_DIM {
            return Err(ShapeError::new(
                "E-limit",
                format!("upsampling {{0}} gives {oh}x{ow}, larger than unetc's limit {MAX_DIM}"),
                "too large",
            ));
        }
        Ok(vec![oh, ow, c])
    }

    fn config(&self) -> Json {
        let mut config =
            json!({ "size": pair_json(self.size), "interpolation": self.interpolation });
        // Only where set: Keras's config has no such key.
        if self.align_corners {
            config["align_corners"] = json!(true);
        }
        config
    }

    fn beyond_keras(&self) -> Option<&'static str> {
        self.align_corners.then_some(
            "bilinear up-sampling with align_corners (PyTorch's); Keras's UpSampling2D samples at half-pixel centres only",
        )
    }
}

impl UpSampling2D {
    /// The resize every backend runs (output size from the output's shape).
    pub fn resize(&self) -> ImageResize {
        ImageResize::new(self.interpolation, self.align_corners)
    }
}

/// An image resize as every backend runs it, for UpSampling2D, Resizing, tf.image.resize and
/// `image.resize` Lambdas alike: from the input's height and width to the output's, as
/// TensorFlow's resize kernels sample (see `exec::cpu::kernels::ResizeAxis`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageResize {
    pub interpolation: Interpolation,
    /// PyTorch's `align_corners=True` (bilinear only): corner pixels map onto each other.
    pub align_corners: bool,
}

impl ImageResize {
    pub fn new(interpolation: Interpolation, align_corners: bool) -> ImageResize {
        ImageResize {
            interpolation,
            align_corners,
        }
    }

    /// tf.image.resize's `method` (half-pixel centres).
    pub fn tf(interpolation: Interpolation) -> ImageResize {
        ImageResize::new(interpolation, false)
    }
}

/// Keras's Resizing (a preprocessing layer): the image resized to `height x width` with
/// tf.image.resize (half-pixel centres, no antialias), whatever the input's size.
#[derive(Debug, Clone, PartialEq)]
pub struct Resizing {
    pub height: i64,
    pub width: i64,
    pub interpolation: Interpolation,
    /// Keras's centre crop to the target's aspect ratio first; refused by the shape rule.
    pub crop_to_aspect_ratio: bool,
}

impl LayerKind for Resizing {
    const CLASS: &'static str = "Resizing";
    const POSITIONAL: &'static [&'static str] = &["height", "width", "interpolation"];
    const KNOWN: &'static [&'static str] =
        &["height", "width", "interpolation", "crop_to_aspect_ratio"];
    const IMPORTED_CONFIG: &'static [&'static str] =
        &["height", "width", "interpolation", "crop_to_aspect_ratio"];

    fn parse(r: &mut ArgReader) -> Self {
        Resizing {
            height: r.size("height", "resizing(256, 256)").unwrap_or(1),
            width: r.size("width", "resizing(256, 256)").unwrap_or(1),
            interpolation: r.keyword("interpolation", Interpolation::Bilinear, None),
            crop_to_aspect_ratio: r.bool_or("crop_to_aspect_ratio", false),
        }
    }

    fn infer(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        let [_, _, c] = image(inputs, Self::CLASS)?;
        if self.crop_to_aspect_ratio {
            return Err(ShapeError::new(
                "E-arg-value",
                "Resizing with crop_to_aspect_ratio is not run by unetc yet",
                "crop_to_aspect_ratio",
            )
            .help(
                "crop the input to the target's aspect ratio with cropping2d first (Keras crops the \
                 centre), then resize with `crop_to_aspect_ratio: false`",
            ));
        }
        Ok(vec![self.height, self.width, c])
    }

    fn config(&self) -> Json {
        json!({
            "height": self.height,
            "width": self.width,
            "interpolation": self.interpolation,
            "crop_to_aspect_ratio": self.crop_to_aspect_ratio,
        })
    }
}

impl Resizing {
    pub fn resize(&self) -> ImageResize {
        ImageResize::tf(self.interpolation)
    }
}

/// `((top, bottom), (left, right))` in Keras's nested form.
fn nested(v: [i64; 4]) -> Json {
    json!([[v[0], v[1]], [v[2], v[3]]])
}

#[derive(Debug, Clone, PartialEq)]
pub struct Cropping2D {
    /// top, bottom, left, right
    pub cropping: [i64; 4],
}

impl LayerKind for Cropping2D {
    const CLASS: &'static str = "Cropping2D";
    const POSITIONAL: &'static [&'static str] = &["cropping", "data_format"];
    const KNOWN: &'static [&'static str] = &["cropping", "data_format"];
    const IMPORTED_CONFIG: &'static [&'static str] = &["cropping"];

    fn parse(r: &mut ArgReader) -> Self {
        r.choice(
            "data_format",
            &["channels_last"],
            "channels_last",
            Some("channels_last"),
        );
        Cropping2D {
            cropping: r.four_or("cropping", [0; 4]),
        }
    }

    fn infer(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        let [h, w, c] = image(inputs, Self::CLASS)?;
        let [t, b, l, r] = self.cropping;
        let (oh, ow) = (h - t - b, w - l - r);
        if oh <= 0 || ow <= 0 {
            return Err(ShapeError::new(
                "E-crop",
                format!("cropping (({t}, {b}), ({l}, {r})) removes all of {{0}}'s {h}x{w} output"),
                format!("crops {}x{} from {h}x{w}", t + b, l + r),
            )
            .help(format!("crop less than {h} rows and {w} columns in total")));
        }
        Ok(vec![oh, ow, c])
    }

    fn config(&self) -> Json {
        json!({ "cropping": nested(self.cropping) })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ZeroPadding2D {
    /// top, bottom, left, right
    pub padding: [i64; 4],
    pub mode: PadMode,
}

impl LayerKind for ZeroPadding2D {
    const CLASS: &'static str = "ZeroPadding2D";
    const POSITIONAL: &'static [&'static str] = &["padding", "data_format"];
    const KNOWN: &'static [&'static str] = &["padding", "data_format", "mode"];
    const IMPORTED_CONFIG: &'static [&'static str] = &["padding"];

    fn parse(r: &mut ArgReader) -> Self {
        r.choice(
            "data_format",
            &["channels_last"],
            "channels_last",
            Some("channels_last"),
        );
        ZeroPadding2D {
            padding: r.four_or("padding", [1; 4]),
            mode: r.keyword("mode", PadMode::Zeros, None),
        }
    }

    fn infer(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        let [h, w, c] = image(inputs, Self::CLASS)?;
        let [t, b, l, r] = self.padding;
        let most = |n: i64| self.mode.max_padding(n);
        if t.max(b) > most(h) || l.max(r) > most(w) {
            let than = match self.mode {
                PadMode::Symmetric => "at least as large as",
                PadMode::Zeros | PadMode::Reflect | PadMode::Replicate => "larger than",
            };
            return Err(ShapeError::new(
                "E-shape",
                format!(
                    "{} padding by (top, bottom, left, right) {:?} needs an input {than} the padding on each side, but {{0}} is {h}x{w}",
                    self.mode, self.padding
                ),
                "too small to mirror",
            )
            .help("pad less, or use `mode: \"replicate\"`"));
        }
        Ok(vec![h + t + b, w + l + r, c])
    }

    fn config(&self) -> Json {
        let mut config = json!({ "padding": nested(self.padding) });
        // Only where set: Keras's config has no such key.
        if self.mode != PadMode::Zeros {
            config["mode"] = json!(self.mode);
        }
        config
    }

    fn beyond_keras(&self) -> Option<&'static str> {
        match self.mode {
            PadMode::Zeros => None,
            PadMode::Reflect | PadMode::Replicate => Some(
                "reflect or replicate padding (PyTorch's padding_mode); Keras's ZeroPadding2D pads with zeros only",
            ),
            PadMode::Symmetric => Some(
                "symmetric padding (tf.pad's SYMMETRIC); Keras's ZeroPadding2D pads with zeros only",
            ),
        }
    }
}
