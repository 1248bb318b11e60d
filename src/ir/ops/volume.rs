//! The 3-D (volume) kinds of 3-D U-Nets: Conv3D, Conv3DTranspose, MaxPooling3D,
//! AveragePooling3D, UpSampling3D, Cropping3D, ZeroPadding3D, GlobalAveragePooling3D. Their
//! values are `[D, H, W, C]` per item (NDHWC); every axis follows the 2-D kinds' rules.

use super::conv::{TransposeGeometry, WindowGeometry, INITIALIZERS};
use super::{
    product, same_size, valid_size, ActivationFn, LayerKind, PadMode, Padding, Shape, ShapeError,
    VolumeInterpolation, WeightSpec,
};
use crate::ir::value::{ArgReader, Value, MAX_DIM};
use serde_json::{json, Value as Json};

/// Requires a rank-4 (D, H, W, C) input, as every 3-D layer does.
pub(crate) fn volume(inputs: &[Shape], class: &str) -> Result<[i64; 4], ShapeError> {
    match inputs.first().map(|s| s.as_slice()) {
        Some(&[d, h, w, c]) => Ok([d, h, w, c]),
        Some(other) => Err(ShapeError::new(
            "E-rank",
            format!(
                "{class} expects a volume input (None, D, H, W, C), but {{0}} has shape {}",
                crate::text::shape_text(other)
            ),
            "input is not a volume",
        )
        .help("3-D layers need `input DxHxWxC`; 2-D layers take `input HxWxC`")),
        None => Err(ShapeError::new(
            "E-arity",
            format!("{class} needs an input"),
            "no input",
        )),
    }
}

fn triple_json(p: [i64; 3]) -> Json {
    json!([p[0], p[1], p[2]])
}

fn dims_text(v: [i64; 3]) -> String {
    format!("{}x{}x{}", v[0], v[1], v[2])
}

fn channels_last(r: &mut ArgReader) {
    r.choice(
        "data_format",
        &["channels_last"],
        "channels_last",
        Some("channels_last"),
    );
}

/// Output sizes of a window over `[d, h, w]`: Keras's `conv_output_length` per axis.
fn window_output(
    class: &str,
    kernel: [i64; 3],
    strides: [i64; 3],
    dilation: [i64; 3],
    padding: Padding,
    input: [i64; 3],
) -> Result<[i64; 3], ShapeError> {
    let mut out = [0i64; 3];
    for axis in 0..3 {
        let span = (kernel[axis] - 1) * dilation[axis] + 1;
        out[axis] = match padding {
            Padding::Same => same_size(input[axis], strides[axis]),
            Padding::Valid => valid_size(input[axis], span, strides[axis]).ok_or_else(|| {
                ShapeError::new(
                    "E-size",
                    format!(
                        "the {} {} window does not fit in {{0}}'s {} output (valid padding)",
                        dims_text(kernel),
                        class,
                        dims_text(input)
                    ),
                    format!(
                        "{} {} too small",
                        ["depth", "height", "width"][axis],
                        input[axis]
                    ),
                )
                .help("use a larger input, or `padding: same`")
            })?,
        };
    }
    Ok(out)
}

/// Arguments of both 3-D convolutions.
#[derive(Debug, Clone, PartialEq)]
pub struct Conv3DArgs {
    pub filters: i64,
    pub kernel_size: [i64; 3],
    pub strides: [i64; 3],
    pub padding: Padding,
    pub dilation_rate: [i64; 3],
    pub activation: ActivationFn,
    pub use_bias: bool,
    pub kernel_initializer: String,
    pub bias_initializer: String,
}

impl Conv3DArgs {
    fn parse(r: &mut ArgReader, example: &str) -> Self {
        let filters = r.size("filters", example).unwrap_or(1);
        let kernel_size = match r.triple("kernel_size", 1, MAX_DIM) {
            Some(k) => k,
            None => {
                if !r.has("kernel_size") && r.diags.iter().all(|d| d.code != "E-arg-missing") {
                    r.missing("kernel_size", example);
                }
                [1, 1, 1]
            }
        };
        channels_last(r);
        Conv3DArgs {
            filters,
            kernel_size,
            strides: r.triple_or("strides", 1, MAX_DIM, [1, 1, 1]),
            padding: r.keyword("padding", Padding::Valid, None),
            dilation_rate: r.triple_or("dilation_rate", 1, MAX_DIM, [1, 1, 1]),
            activation: r.keyword(
                "activation",
                ActivationFn::Linear,
                Some(ActivationFn::Linear),
            ),
            use_bias: r.bool_or("use_bias", true),
            kernel_initializer: r.choice(
                "kernel_initializer",
                INITIALIZERS,
                "glorot_uniform",
                None,
            ),
            bias_initializer: r.choice("bias_initializer", INITIALIZERS, "zeros", None),
        }
    }

    fn config(&self) -> Json {
        json!({
            "filters": self.filters,
            "kernel_size": triple_json(self.kernel_size),
            "strides": triple_json(self.strides),
            "padding": self.padding,
            "dilation_rate": triple_json(self.dilation_rate),
            "activation": self.activation,
            "use_bias": self.use_bias,
            "kernel_initializer": self.kernel_initializer,
            "bias_initializer": self.bias_initializer,
        })
    }

    fn bias(&self) -> Option<WeightSpec> {
        self.use_bias.then(|| WeightSpec {
            name: "bias",
            shape: vec![self.filters],
            trainable: true,
            initializer: self.bias_initializer.clone(),
        })
    }
}

const CONV3D_KNOWN: &[&str] = &[
    "filters",
    "kernel_size",
    "strides",
    "padding",
    "dilation_rate",
    "activation",
    "use_bias",
    "kernel_initializer",
    "bias_initializer",
    "data_format",
    "groups",
];

/// `Conv3D`: kernel `(kd, kh, kw, in, out)`, bias `(out,)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Conv3D {
    pub args: Conv3DArgs,
}

impl Conv3D {
    /// The window along depth (0), rows (1) or columns (2) for input size `n`, output `out`.
    pub fn geometry(&self, axis: usize, n: usize, out: usize) -> WindowGeometry {
        WindowGeometry::new(
            self.args.kernel_size[axis] as usize,
            self.args.strides[axis] as usize,
            self.args.dilation_rate[axis] as usize,
            self.args.padding,
            n,
            out,
        )
    }
}

impl LayerKind for Conv3D {
    const CLASS: &'static str = "Conv3D";
    const REGULARIZED: &'static [(&'static str, &'static str)] = &[
        ("kernel_regularizer", "kernel"),
        ("bias_regularizer", "bias"),
    ];
    const POSITIONAL: &'static [&'static str] = &["filters", "kernel_size", "strides", "padding"];
    const KNOWN: &'static [&'static str] = CONV3D_KNOWN;
    const KERAS_ALIASES: &'static [&'static str] = &["Convolution3D"];
    const IMPORTED_CONFIG: &'static [&'static str] = &[
        "filters",
        "kernel_size",
        "strides",
        "padding",
        "dilation_rate",
        "activation",
        "use_bias",
        "kernel_initializer",
        "bias_initializer",
        "groups",
    ];

    fn parse(r: &mut ArgReader) -> Self {
        let args = Conv3DArgs::parse(r, "conv3d(32, 3)");
        // Keras's grouped Conv3D is not run by unetc: refuse it rather than run it ungrouped.
        if let Some(groups) = r.int("groups", 1, MAX_DIM) {
            if groups != 1 {
                r.diags.push(
                    crate::diag::Diagnostic::error(
                        "E-arg-value",
                        format!("`conv3d` argument `groups` is {groups}; unetc runs Conv3D with groups 1 only"),
                    )
                    .at(r.call_span(), "grouped 3-D convolution")
                    .help("use `groups: 1`"),
                );
            }
        }
        Conv3D { args }
    }

    fn infer(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        let [d, h, w, _] = volume(inputs, Self::CLASS)?;
        let a = &self.args;
        let [od, oh, ow] = window_output(
            Self::CLASS,
            a.kernel_size,
            a.strides,
            a.dilation_rate,
            a.padding,
            [d, h, w],
        )?;
        Ok(vec![od, oh, ow, a.filters])
    }

    fn weights(&self, inputs: &[Shape]) -> Vec<WeightSpec> {
        let c_in = inputs.first().and_then(|s| s.last()).copied().unwrap_or(0);
        let k = self.args.kernel_size;
        let mut w = vec![WeightSpec {
            name: "kernel",
            shape: vec![k[0], k[1], k[2], c_in, self.args.filters],
            trainable: true,
            initializer: self.args.kernel_initializer.clone(),
        }];
        w.extend(self.args.bias());
        w
    }

    fn macs(&self, inputs: &[Shape], output: &Shape) -> u64 {
        let c_in = inputs.first().and_then(|s| s.last()).copied().unwrap_or(0);
        let k = self.args.kernel_size;
        product(output).saturating_mul(product(&[k[0], k[1], k[2], c_in]))
    }

    fn config(&self) -> Json {
        self.args.config()
    }
}

/// `Conv3DTranspose`: kernel `(kd, kh, kw, out, in)`, bias `(out,)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Conv3DTranspose {
    pub args: Conv3DArgs,
    pub output_padding: Option<[i64; 3]>,
}

impl Conv3DTranspose {
    /// The transposed window along depth (0), rows (1) or columns (2): the same rule as
    /// Conv2DTranspose's per axis.
    pub fn geometry(&self, axis: usize, n: usize, out: usize) -> TransposeGeometry {
        let (kernel, stride) = (
            self.args.kernel_size[axis] as usize,
            self.args.strides[axis] as usize,
        );
        let full = (n.max(1) - 1) * stride + kernel;
        let crop_before = match self.args.padding {
            Padding::Same => full.saturating_sub(out) / 2,
            Padding::Valid => 0,
        };
        TransposeGeometry {
            kernel,
            stride,
            crop_before,
            crop_after: full.saturating_sub(crop_before + out),
            extend_after: (crop_before + out).saturating_sub(full),
        }
    }
}

impl LayerKind for Conv3DTranspose {
    const CLASS: &'static str = "Conv3DTranspose";
    const REGULARIZED: &'static [(&'static str, &'static str)] = &[
        ("kernel_regularizer", "kernel"),
        ("bias_regularizer", "bias"),
    ];
    const POSITIONAL: &'static [&'static str] = &["filters", "kernel_size", "strides", "padding"];
    const KNOWN: &'static [&'static str] = &[
        "filters",
        "kernel_size",
        "strides",
        "padding",
        "output_padding",
        "dilation_rate",
        "activation",
        "use_bias",
        "kernel_initializer",
        "bias_initializer",
        "data_format",
    ];
    const KERAS_ALIASES: &'static [&'static str] = &["Convolution3DTranspose"];
    const IMPORTED_CONFIG: &'static [&'static str] = &[
        "filters",
        "kernel_size",
        "strides",
        "padding",
        "output_padding",
        "dilation_rate",
        "activation",
        "use_bias",
        "kernel_initializer",
        "bias_initializer",
    ];

    fn parse(r: &mut ArgReader) -> Self {
        let args = Conv3DArgs::parse(r, "conv3d_transpose(32, 2, strides: 2)");
        let output_padding = r.triple("output_padding", 0, MAX_DIM);
        if let Some(op) = output_padding {
            if (0..3).any(|a| op[a] >= args.strides[a]) {
                r.diags.push(
                    crate::diag::Diagnostic::error(
                        "E-arg-value",
                        "`conv3d_transpose` argument `output_padding` must be smaller than `strides`",
                    )
                    .at(r.call_span(), "output_padding >= strides"),
                );
            }
        }
        if args.dilation_rate != [1, 1, 1] {
            r.diags.push(
                crate::diag::Diagnostic::error(
                    "E-arg-value",
                    "`conv3d_transpose` with `dilation_rate` other than 1 is not run by unetc",
                )
                .at(r.call_span(), "dilated transposed convolution")
                .help("use `dilation_rate: 1`"),
            );
        }
        Conv3DTranspose {
            args,
            output_padding,
        }
    }

    fn infer(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        let [d, h, w, _] = volume(inputs, Self::CLASS)?;
        let a = &self.args;
        let mut out = [0i64; 3];
        for (axis, n) in [d, h, w].into_iter().enumerate() {
            let k = (a.kernel_size[axis] - 1) * a.dilation_rate[axis] + 1;
            let s = a.strides[axis];
            out[axis] = match self.output_padding {
                // Keras's deconv_output_length with output_padding.
                Some(op) => {
                    let pad = if a.padding == Padding::Same { k / 2 } else { 0 };
                    (n - 1) * s + k - 2 * pad + op[axis]
                }
                None if a.padding == Padding::Same => n * s,
                None => n * s + (k - s).max(0),
            };
        }
        Ok(vec![out[0], out[1], out[2], a.filters])
    }

    fn weights(&self, inputs: &[Shape]) -> Vec<WeightSpec> {
        let c_in = inputs.first().and_then(|s| s.last()).copied().unwrap_or(0);
        let k = self.args.kernel_size;
        let mut w = vec![WeightSpec {
            name: "kernel",
            shape: vec![k[0], k[1], k[2], self.args.filters, c_in],
            trainable: true,
            initializer: self.args.kernel_initializer.clone(),
        }];
        w.extend(self.args.bias());
        w
    }

    fn macs(&self, inputs: &[Shape], _output: &Shape) -> u64 {
        let input = inputs.first().cloned().unwrap_or_default();
        let k = self.args.kernel_size;
        product(&input).saturating_mul(product(&[k[0], k[1], k[2], self.args.filters]))
    }

    fn config(&self) -> Json {
        let mut c = self.args.config();
        c["output_padding"] = match self.output_padding {
            Some(p) => triple_json(p),
            None => Json::Null,
        };
        c
    }
}

/// The 3-D poolings: one window rule for both.
macro_rules! pooling3d {
    ($($(#[$doc:meta])* $name:ident, keras_alias: $alias:literal;)*) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq)]
        pub struct $name {
            pub pool_size: [i64; 3],
            /// Keras: `strides=None` means `pool_size`.
            pub strides: [i64; 3],
            pub padding: Padding,
        }

        impl $name {
            /// The pooling window along depth (0), rows (1) or columns (2).
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
            const KNOWN: &'static [&'static str] =
                &["pool_size", "strides", "padding", "data_format"];
            const KERAS_ALIASES: &'static [&'static str] = &[$alias];
            const IMPORTED_CONFIG: &'static [&'static str] = &["pool_size", "strides", "padding"];

            fn parse(r: &mut ArgReader) -> Self {
                let pool_size = r.triple_or("pool_size", 1, MAX_DIM, [2, 2, 2]);
                let strides = match r.peek("strides") {
                    Some(Value::None) => {
                        r.take_arg("strides");
                        pool_size
                    }
                    _ => r.triple_or("strides", 1, MAX_DIM, pool_size),
                };
                channels_last(r);
                $name {
                    pool_size,
                    strides,
                    padding: r.keyword("padding", Padding::Valid, None),
                }
            }

            fn infer(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
                let [d, h, w, c] = volume(inputs, Self::CLASS)?;
                let [od, oh, ow] = window_output(
                    Self::CLASS,
                    self.pool_size,
                    self.strides,
                    [1, 1, 1],
                    self.padding,
                    [d, h, w],
                )?;
                Ok(vec![od, oh, ow, c])
            }

            fn warnings(&self, inputs: &[Shape]) -> Vec<ShapeError> {
                let Ok([d, h, w, _]) = volume(inputs, Self::CLASS) else {
                    return Vec::new();
                };
                if self.padding != Padding::Valid {
                    return Vec::new();
                }
                let dropped: Vec<String> = [("depth", d), ("height", h), ("width", w)]
                    .into_iter()
                    .enumerate()
                    .filter(|&(axis, (_, n))| {
                        let (k, s) = (self.pool_size[axis], self.strides[axis]);
                        k == s && n >= k && n % s != 0
                    })
                    .map(|(_, (what, n))| format!("{what} {n}"))
                    .collect();
                if dropped.is_empty() {
                    return Vec::new();
                }
                vec![ShapeError::new(
                    "W-pool-floor",
                    format!(
                        "pooling {{0}}'s {} output drops its last slice ({}); Keras floors",
                        dims_text([d, h, w]),
                        dropped.join(", ")
                    ),
                    "odd size pooled",
                )
                .help("the up path will not get back to the skip's size; choose an input size from `unetc sizes`, or crop the skip")]
            }

            fn config(&self) -> Json {
                json!({
                    "pool_size": triple_json(self.pool_size),
                    "strides": triple_json(self.strides),
                    "padding": self.padding,
                })
            }
        }
    )*};
}

pooling3d! {
    /// The maximum of each window; `same` pads with -inf.
    MaxPooling3D, keras_alias: "MaxPool3D";
    /// The mean of each window; under `same` the mean of the cells inside the input only.
    AveragePooling3D, keras_alias: "AvgPool3D";
}

/// `UpSampling3D`: each voxel repeated `size` times along each axis (Keras has no
/// interpolation for 3-D), or unetc's `interpolation: trilinear` (PyTorch's).
#[derive(Debug, Clone, PartialEq)]
pub struct UpSampling3D {
    pub size: [i64; 3],
    /// unetc's extension: Keras's UpSampling3D repeats voxels only.
    pub interpolation: VolumeInterpolation,
    /// unetc's extension (PyTorch's `align_corners=True`): trilinear sampling that maps the
    /// corner voxels of input and output onto each other, source = out * (n-1)/(N-1).
    pub align_corners: bool,
}

impl LayerKind for UpSampling3D {
    const CLASS: &'static str = "UpSampling3D";
    const POSITIONAL: &'static [&'static str] = &["size", "data_format"];
    const KNOWN: &'static [&'static str] =
        &["size", "data_format", "interpolation", "align_corners"];
    const IMPORTED_CONFIG: &'static [&'static str] = &["size"];

    fn parse(r: &mut ArgReader) -> Self {
        channels_last(r);
        UpSampling3D {
            size: r.triple_or("size", 1, 1 << 10, [2, 2, 2]),
            interpolation: r.keyword("interpolation", VolumeInterpolation::Nearest, None),
            align_corners: r.bool_or("align_corners", false),
        }
    }

    fn infer(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        let [d, h, w, c] = volume(inputs, Self::CLASS)?;
        if self.align_corners && self.interpolation != VolumeInterpolation::Trilinear {
            return Err(ShapeError::new(
                "E-align-corners",
                "align_corners applies to trilinear up-sampling only",
                "nearest repeats voxels",
            )
            .help("write `interpolation: \"trilinear\"`, or drop `align_corners`"));
        }
        let out = [d * self.size[0], h * self.size[1], w * self.size[2]];
        if out.iter().any(|&n| n > MAX_DIM) {
            return Err(ShapeError::new(
                "E-limit",
                format!(
                    "upsampling {{0}} gives {}, larger than unetc's limit {MAX_DIM}",
                    dims_text(out)
                ),
                "too large",
            ));
        }
        Ok(vec![out[0], out[1], out[2], c])
    }

    fn config(&self) -> Json {
        let mut config = json!({ "size": triple_json(self.size) });
        // Only where set: Keras's config has no such keys.
        if self.interpolation != VolumeInterpolation::Nearest {
            config["interpolation"] = json!(self.interpolation);
        }
        if self.align_corners {
            config["align_corners"] = json!(true);
        }
        config
    }

    fn beyond_keras(&self) -> Option<&'static str> {
        match self.interpolation {
            VolumeInterpolation::Nearest => None,
            VolumeInterpolation::Trilinear => {
                Some("trilinear up-sampling (PyTorch's); Keras's UpSampling3D repeats voxels only")
            }
        }
    }
}

/// `((front, back), (top, bottom), (left, right))` in Keras's nested form.
fn nested(v: [i64; 6]) -> Json {
    json!([[v[0], v[1]], [v[2], v[3]], [v[4], v[5]]])
}

#[derive(Debug, Clone, PartialEq)]
pub struct Cropping3D {
    /// front, back, top, bottom, left, right
    pub cropping: [i64; 6],
}

impl LayerKind for Cropping3D {
    const CLASS: &'static str = "Cropping3D";
    const POSITIONAL: &'static [&'static str] = &["cropping", "data_format"];
    const KNOWN: &'static [&'static str] = &["cropping", "data_format"];
    const IMPORTED_CONFIG: &'static [&'static str] = &["cropping"];

    fn parse(r: &mut ArgReader) -> Self {
        channels_last(r);
        Cropping3D {
            cropping: r.six_or("cropping", [1; 6]),
        }
    }

    fn infer(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        let [d, h, w, c] = volume(inputs, Self::CLASS)?;
        let k = self.cropping;
        let out = [d - k[0] - k[1], h - k[2] - k[3], w - k[4] - k[5]];
        if out.iter().any(|&n| n <= 0) {
            return Err(ShapeError::new(
                "E-crop",
                format!(
                    "cropping (({}, {}), ({}, {}), ({}, {})) removes all of {{0}}'s {} output",
                    k[0],
                    k[1],
                    k[2],
                    k[3],
                    k[4],
                    k[5],
                    dims_text([d, h, w])
                ),
                format!(
                    "crops {} from {}",
                    dims_text([k[0] + k[1], k[2] + k[3], k[4] + k[5]]),
                    dims_text([d, h, w])
                ),
            )
            .help(format!("crop less than {} in total", dims_text([d, h, w]))));
        }
        Ok(vec![out[0], out[1], out[2], c])
    }

    fn config(&self) -> Json {
        json!({ "cropping": nested(self.cropping) })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ZeroPadding3D {
    /// front, back, top, bottom, left, right
    pub padding: [i64; 6],
    /// unetc's extension (PyTorch's ReflectionPad3d / ReplicationPad3d); Keras pads zeros.
    pub mode: PadMode,
}

impl LayerKind for ZeroPadding3D {
    const CLASS: &'static str = "ZeroPadding3D";
    const POSITIONAL: &'static [&'static str] = &["padding", "data_format"];
    const KNOWN: &'static [&'static str] = &["padding", "data_format", "mode"];
    const IMPORTED_CONFIG: &'static [&'static str] = &["padding"];

    fn parse(r: &mut ArgReader) -> Self {
        channels_last(r);
        ZeroPadding3D {
            padding: r.six_or("padding", [1; 6]),
            mode: r.keyword("mode", PadMode::Zeros, None),
        }
    }

    fn infer(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        let [d, h, w, c] = volume(inputs, Self::CLASS)?;
        let p = self.padding;
        let too_small = [d, h, w]
            .iter()
            .enumerate()
            .any(|(axis, &n)| p[2 * axis].max(p[2 * axis + 1]) > self.mode.max_padding(n));
        if too_small {
            let than = match self.mode {
                PadMode::Symmetric => "at least as large as",
                PadMode::Zeros | PadMode::Reflect | PadMode::Replicate => "larger than",
            };
            return Err(ShapeError::new(
                "E-shape",
                format!(
                    "{} padding by (front, back, top, bottom, left, right) {p:?} needs an input {than} the padding on each side, but {{0}} is {}",
                    self.mode,
                    dims_text([d, h, w])
                ),
                "too small to mirror",
            )
            .help("pad less, or use `mode: \"replicate\"`"));
        }
        Ok(vec![d + p[0] + p[1], h + p[2] + p[3], w + p[4] + p[5], c])
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
                "reflect or replicate padding (PyTorch's padding_mode); Keras's ZeroPadding3D pads with zeros only",
            ),
            PadMode::Symmetric => Some(
                "symmetric padding (tf.pad's SYMMETRIC); Keras's ZeroPadding3D pads with zeros only",
            ),
        }
    }
}

/// The mean over depth, height and width (one MAC per input value, as the sum).
#[derive(Debug, Clone, PartialEq)]
pub struct GlobalAveragePooling3D {
    pub keepdims: bool,
}

impl LayerKind for GlobalAveragePooling3D {
    const CLASS: &'static str = "GlobalAveragePooling3D";
    const POSITIONAL: &'static [&'static str] = &["data_format", "keepdims"];
    const KNOWN: &'static [&'static str] = &["data_format", "keepdims"];
    const KERAS_ALIASES: &'static [&'static str] = &["GlobalAvgPool3D"];
    const IMPORTED_CONFIG: &'static [&'static str] = &["keepdims"];

    fn parse(r: &mut ArgReader) -> Self {
        channels_last(r);
        GlobalAveragePooling3D {
            keepdims: r.bool_or("keepdims", false),
        }
    }

    fn infer(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        let [_, _, _, c] = volume(inputs, Self::CLASS)?;
        Ok(if self.keepdims {
            vec![1, 1, 1, c]
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
