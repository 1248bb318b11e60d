//! The convolutions: Conv2D (with `groups`), Conv2DTranspose, DepthwiseConv2D, SeparableConv2D.

use super::{
    image, pair_json, product, same_size, valid_size, ActivationFn, LayerKind, Padding, Shape,
    ShapeError, WeightSpec,
};
use crate::ir::value::{ArgReader, MAX_DIM};
use serde_json::{json, Value as Json};

pub(crate) const INITIALIZERS: &[&str] = &[
    "glorot_uniform",
    "glorot_normal",
    "he_normal",
    "he_uniform",
    "lecun_normal",
    "lecun_uniform",
    "zeros",
    "ones",
    "random_normal",
    "random_uniform",
    "truncated_normal",
    "orthogonal",
    "variance_scaling",
];

/// Arguments shared by both convolutions.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvArgs {
    pub filters: i64,
    pub kernel_size: [i64; 2],
    pub strides: [i64; 2],
    pub padding: Padding,
    pub dilation_rate: [i64; 2],
    pub activation: ActivationFn,
    pub use_bias: bool,
    pub kernel_initializer: String,
    pub bias_initializer: String,
}

const CONV_KNOWN: &[&str] = &[
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
];

fn parse_conv(r: &mut ArgReader, class: &str) -> ConvArgs {
    let example = format!(
        "{}(64, 3)",
        if class == "Conv2D" {
            "conv2d"
        } else {
            "conv2d_transpose"
        }
    );
    let filters = r.size("filters", &example).unwrap_or(1);
    let kernel_size = required_kernel_size(r, &example);
    ConvArgs {
        filters,
        kernel_size,
        strides: r.pair_or("strides", 1, MAX_DIM, [1, 1]),
        padding: r.keyword("padding", Padding::Valid, None),
        dilation_rate: r.pair_or("dilation_rate", 1, MAX_DIM, [1, 1]),
        activation: r.keyword(
            "activation",
            ActivationFn::Linear,
            Some(ActivationFn::Linear),
        ),
        use_bias: r.bool_or("use_bias", true),
        kernel_initializer: r.choice("kernel_initializer", INITIALIZERS, "glorot_uniform", None),
        bias_initializer: r.choice("bias_initializer", INITIALIZERS, "zeros", None),
    }
}

/// The required `kernel_size` (reported missing unless another required argument already is),
/// and the only `data_format` unetc runs.
fn required_kernel_size(r: &mut ArgReader, example: &str) -> [i64; 2] {
    let kernel_size = match r.pair("kernel_size", 1, MAX_DIM) {
        Some(k) => k,
        None => {
            if !r.has("kernel_size") && r.diags.iter().all(|d| d.code != "E-arg-missing") {
                r.missing("kernel_size", example);
            }
            [1, 1]
        }
    };
    r.choice(
        "data_format",
        &["channels_last"],
        "channels_last",
        Some("channels_last"),
    );
    kernel_size
}

/// Output height and width of a forward convolution window over an `h` x `w` input: Keras's
/// `conv_output_length` (`same`: ceil(n / s); `valid`: floor((n - span) / s) + 1).
fn window_output(
    kernel_size: [i64; 2],
    strides: [i64; 2],
    dilation_rate: [i64; 2],
    padding: Padding,
    [h, w]: [i64; 2],
) -> Result<[i64; 2], ShapeError> {
    let mut out = [0i64; 2];
    for (axis, n) in [h, w].into_iter().enumerate() {
        let span = (kernel_size[axis] - 1) * dilation_rate[axis] + 1;
        let s = strides[axis];
        out[axis] = if padding == Padding::Same {
            same_size(n, s)
        } else {
            valid_size(n, span, s).ok_or_else(|| {
                ShapeError::new(
                    "E-size",
                    format!(
                        "the {}x{} kernel does not fit in {{0}}'s {h}x{w} output (valid padding)",
                        kernel_size[0], kernel_size[1]
                    ),
                    format!(
                        "the {} would be {} or less",
                        if axis == 0 { "height" } else { "width" },
                        0
                    ),
                )
                .help("use a larger input, or `padding: same`")
            })?
        };
    }
    Ok(out)
}

impl ConvArgs {
    fn config(&self) -> Json {
        json!({
            "filters": self.filters,
            "kernel_size": pair_json(self.kernel_size),
            "strides": pair_json(self.strides),
            "padding": self.padding,
            "dilation_rate": pair_json(self.dilation_rate),
            "activation": self.activation,
            "use_bias": self.use_bias,
            "kernel_initializer": self.kernel_initializer,
            "bias_initializer": self.bias_initializer,
        })
    }

    /// Kernel extent with dilation: `(k - 1) * d + 1`.
    fn effective_kernel(&self, axis: usize) -> i64 {
        (self.kernel_size[axis] - 1) * self.dilation_rate[axis] + 1
    }

    /// The window along rows (axis 0) or columns (axis 1) for input size `n` and output `out`.
    pub fn geometry(&self, axis: usize, n: usize, out: usize) -> WindowGeometry {
        WindowGeometry::new(
            self.kernel_size[axis] as usize,
            self.strides[axis] as usize,
            self.dilation_rate[axis] as usize,
            self.padding,
            n,
            out,
        )
    }
}

/// One axis of a sliding window (a convolution's or a max pooling's) from `n` input pixels to
/// `out`: the one geometry that the CPU kernels, the CUDA launches, the ONNX export and the
/// receptive field read, so that they cannot disagree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowGeometry {
    pub kernel: usize,
    pub stride: usize,
    pub dilation: usize,
    /// Zero rows (columns) before the input.
    pub pad_before: usize,
    /// Zero rows (columns) after the input.
    pub pad_after: usize,
}

impl WindowGeometry {
    /// Keras's rule: `same` pads `max((out - 1) * s + span - n, 0)` zeros, `floor` half of them
    /// before and the odd one after; `valid` pads none.
    pub(crate) fn new(
        kernel: usize,
        stride: usize,
        dilation: usize,
        padding: Padding,
        n: usize,
        out: usize,
    ) -> Self {
        let span = kernel.saturating_sub(1) * dilation + 1;
        let total = match padding {
            Padding::Same => (out.saturating_sub(1) * stride + span).saturating_sub(n),
            Padding::Valid => 0,
        };
        WindowGeometry {
            kernel,
            stride,
            dilation,
            pad_before: total / 2,
            pad_after: total - total / 2,
        }
    }

    /// Input pixels one window covers: `(kernel - 1) * dilation + 1`.
    pub fn span(&self) -> usize {
        self.kernel.saturating_sub(1) * self.dilation + 1
    }
}

/// One axis of a transposed convolution from `n` input pixels to `out`: the output is the
/// pixels `[crop_before, crop_before + out)` of the full result `(n - 1) * stride + kernel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransposeGeometry {
    pub kernel: usize,
    pub stride: usize,
    /// Pixels of the full result before the output. TF pads the equivalent forward convolution
    /// (output -> input) the `same` way, so `same` crops `floor(extra / 2)` first; `valid` none.
    pub crop_before: usize,
    /// Pixels of the full result after the output.
    pub crop_after: usize,
    /// Output pixels past the end of the full result (`valid` with kernel < stride, or
    /// `output_padding`): nothing reaches them but the bias.
    pub extend_after: usize,
}

/// `Conv2D`: kernel `(kh, kw, in / groups, out)`, bias `(out,)`. With `groups` > 1 the input
/// and output channels split into that many groups in order, each convolved on its own.
#[derive(Debug, Clone, PartialEq)]
pub struct Conv2D {
    pub args: ConvArgs,
    pub groups: i64,
}

impl LayerKind for Conv2D {
    const CLASS: &'static str = "Conv2D";
    const REGULARIZED: &'static [(&'static str, &'static str)] = &[
        ("kernel_regularizer", "kernel"),
        ("bias_regularizer", "bias"),
    ];
    const POSITIONAL: &'static [&'static str] = &["filters", "kernel_size", "strides", "padding"];
    const KNOWN: &'static [&'static str] = CONV_KNOWN;
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
        let args = parse_conv(r, Self::CLASS);
        let groups = r.int_or("groups", 1, MAX_DIM, 1);
        if args.filters % groups != 0 {
            r.diags.push(
                crate::diag::Diagnostic::error(
                    "E-arg-value",
                    format!(
                        "`conv2d` argument `filters` ({}) must be divisible by `groups` ({groups})",
                        args.filters
                    ),
                )
                .at(r.call_span(), "filters % groups != 0"),
            );
        }
        Conv2D { args, groups }
    }

    fn infer(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        let [h, w, c] = image(inputs, Self::CLASS)?;
        let a = &self.args;
        if c % self.groups != 0 {
            return Err(ShapeError::new(
                "E-groups",
                format!(
                    "{{0}} has {c} channels, which do not split into {} groups",
                    self.groups
                ),
                format!("{c} channels, groups {}", self.groups),
            )
            .help("Keras needs the input channels divisible by `groups`"));
        }
        let [oh, ow] = window_output(a.kernel_size, a.strides, a.dilation_rate, a.padding, [h, w])?;
        Ok(vec![oh, ow, a.filters])
    }

    fn weights(&self, inputs: &[Shape]) -> Vec<WeightSpec> {
        let c_in = inputs.first().and_then(|s| s.last()).copied().unwrap_or(0);
        let a = &self.args;
        let mut w = vec![WeightSpec {
            name: "kernel",
            shape: vec![
                a.kernel_size[0],
                a.kernel_size[1],
                c_in / self.groups,
                a.filters,
            ],
            trainable: true,
            initializer: a.kernel_initializer.clone(),
        }];
        if a.use_bias {
            w.push(WeightSpec {
                name: "bias",
                shape: vec![a.filters],
                trainable: true,
                initializer: a.bias_initializer.clone(),
            });
        }
        w
    }

    fn macs(&self, inputs: &[Shape], output: &Shape) -> u64 {
        let c_in = inputs.first().and_then(|s| s.last()).copied().unwrap_or(0);
        product(output).saturating_mul(product(&[
            self.args.kernel_size[0],
            self.args.kernel_size[1],
            c_in / self.groups,
        ]))
    }

    fn config(&self) -> Json {
        let mut c = self.args.config();
        // Keras's default 1 is left out, so that ungrouped layers' configs (reports, exported
        // code, snapshots) read as before.
        if self.groups != 1 {
            c["groups"] = json!(self.groups);
        }
        c
    }
}

/// `Conv2DTranspose`: kernel `(kh, kw, out, in)`, bias `(out,)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Conv2DTranspose {
    pub args: ConvArgs,
    pub output_padding: Option<[i64; 2]>,
}

impl Conv2DTranspose {
    /// The transposed window along rows (axis 0) or columns (axis 1) for input size `n` and
    /// output `out`.
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

impl LayerKind for Conv2DTranspose {
    const CLASS: &'static str = "Conv2DTranspose";
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
        let args = parse_conv(r, Self::CLASS);
        let output_padding = r.pair("output_padding", 0, MAX_DIM);
        if let Some(op) = output_padding {
            if op[0] >= args.strides[0] || op[1] >= args.strides[1] {
                r.diags.push(
                    crate::diag::Diagnostic::error(
                        "E-arg-value",
                        "`conv2d_transpose` argument `output_padding` must be smaller than `strides`",
                    )
                    .at(r.call_span(), "output_padding >= strides"),
                );
            }
        }
        Conv2DTranspose {
            args,
            output_padding,
        }
    }

    fn infer(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        let [h, w, _] = image(inputs, Self::CLASS)?;
        let a = &self.args;
        let mut out = [0i64; 2];
        for (axis, n) in [h, w].into_iter().enumerate() {
            let k = a.effective_kernel(axis);
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
        Ok(vec![out[0], out[1], a.filters])
    }

    fn weights(&self, inputs: &[Shape]) -> Vec<WeightSpec> {
        let c_in = inputs.first().and_then(|s| s.last()).copied().unwrap_or(0);
        let a = &self.args;
        let mut w = vec![WeightSpec {
            name: "kernel",
            shape: vec![a.kernel_size[0], a.kernel_size[1], a.filters, c_in],
            trainable: true,
            initializer: a.kernel_initializer.clone(),
        }];
        if a.use_bias {
            w.push(WeightSpec {
                name: "bias",
                shape: vec![a.filters],
                trainable: true,
                initializer: a.bias_initializer.clone(),
            });
        }
        w
    }

    fn macs(&self, inputs: &[Shape], _output: &Shape) -> u64 {
        let input = inputs.first().cloned().unwrap_or_default();
        product(&input).saturating_mul(product(&[
            self.args.kernel_size[0],
            self.args.kernel_size[1],
            self.args.filters,
        ]))
    }

    fn config(&self) -> Json {
        let mut c = self.args.config();
        c["output_padding"] = match self.output_padding {
            Some(p) => pair_json(p),
            None => Json::Null,
        };
        c
    }
}

/// The depthwise stage of DepthwiseConv2D and SeparableConv2D: each input channel `c`
/// convolved with its own `depth_multiplier` kernels into output channels `c * dm .. c * dm + dm`.
/// Its kernel `(kh, kw, in, dm)` is, flat, a grouped Conv2D kernel `(kh, kw, 1, in * dm)` with
/// `in` groups, which is how every backend runs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Depthwise {
    pub kernel_size: [i64; 2],
    pub strides: [i64; 2],
    pub padding: Padding,
    pub depth_multiplier: i64,
    pub dilation_rate: [i64; 2],
    pub depthwise_initializer: String,
}

impl Depthwise {
    fn parse(r: &mut ArgReader, example: &str) -> Self {
        let kernel_size = required_kernel_size(r, example);
        let strides = r.pair_or("strides", 1, MAX_DIM, [1, 1]);
        let padding = r.keyword("padding", Padding::Valid, None);
        let depth_multiplier = r.int_or("depth_multiplier", 1, MAX_DIM, 1);
        let dilation_rate = r.pair_or("dilation_rate", 1, MAX_DIM, [1, 1]);
        // tf.nn.depthwise_conv2d has one of the two only; Keras refuses both at construction.
        if strides.iter().any(|&s| s > 1) && dilation_rate.iter().any(|&d| d > 1) {
            r.diags.push(
                crate::diag::Diagnostic::error(
                    "E-arg-value",
                    format!(
                        "`{}` cannot have `strides` > 1 with `dilation_rate` > 1",
                        example.split('(').next().unwrap_or_default()
                    ),
                )
                .at(r.call_span(), "strides and dilation_rate both > 1"),
            );
        }
        Depthwise {
            kernel_size,
            strides,
            padding,
            depth_multiplier,
            dilation_rate,
            depthwise_initializer: r.choice(
                "depthwise_initializer",
                INITIALIZERS,
                "glorot_uniform",
                None,
            ),
        }
    }

    /// The window along rows (axis 0) or columns (axis 1) for input size `n` and output `out`.
    pub fn geometry(&self, axis: usize, n: usize, out: usize) -> WindowGeometry {
        WindowGeometry::new(
            self.kernel_size[axis] as usize,
            self.strides[axis] as usize,
            self.dilation_rate[axis] as usize,
            self.padding,
            n,
            out,
        )
    }

    /// Output `[h, w, in * depth_multiplier]` of the depthwise stage.
    fn infer(&self, inputs: &[Shape], class: &str) -> Result<[i64; 3], ShapeError> {
        let [h, w, c] = image(inputs, class)?;
        let [oh, ow] = window_output(
            self.kernel_size,
            self.strides,
            self.dilation_rate,
            self.padding,
            [h, w],
        )?;
        Ok([oh, ow, c * self.depth_multiplier])
    }

    fn weight(&self, inputs: &[Shape]) -> WeightSpec {
        let c_in = inputs.first().and_then(|s| s.last()).copied().unwrap_or(0);
        WeightSpec {
            name: "depthwise_kernel",
            shape: vec![
                self.kernel_size[0],
                self.kernel_size[1],
                c_in,
                self.depth_multiplier,
            ],
            trainable: true,
            initializer: self.depthwise_initializer.clone(),
        }
    }

    /// One multiply-accumulate per kernel tap per depthwise output value.
    fn macs(&self, inputs: &[Shape]) -> u64 {
        self.infer(inputs, "").map_or(0, |out| {
            product(&out).saturating_mul(product(&self.kernel_size))
        })
    }

    fn config(&self) -> Json {
        json!({
            "kernel_size": pair_json(self.kernel_size),
            "strides": pair_json(self.strides),
            "padding": self.padding,
            "depth_multiplier": self.depth_multiplier,
            "dilation_rate": pair_json(self.dilation_rate),
            "depthwise_initializer": self.depthwise_initializer,
        })
    }
}

fn bias_weight(channels: i64, initializer: &str) -> WeightSpec {
    WeightSpec {
        name: "bias",
        shape: vec![channels],
        trainable: true,
        initializer: initializer.to_string(),
    }
}

/// `DepthwiseConv2D`: depthwise kernel `(kh, kw, in, dm)`, bias `(in * dm,)`.
#[derive(Debug, Clone, PartialEq)]
pub struct DepthwiseConv2D {
    pub depthwise: Depthwise,
    pub activation: ActivationFn,
    pub use_bias: bool,
    pub bias_initializer: String,
}

impl LayerKind for DepthwiseConv2D {
    const CLASS: &'static str = "DepthwiseConv2D";
    const REGULARIZED: &'static [(&'static str, &'static str)] = &[
        ("depthwise_regularizer", "depthwise_kernel"),
        ("bias_regularizer", "bias"),
    ];
    const POSITIONAL: &'static [&'static str] =
        &["kernel_size", "strides", "padding", "depth_multiplier"];
    const KNOWN: &'static [&'static str] = &[
        "kernel_size",
        "strides",
        "padding",
        "depth_multiplier",
        "data_format",
        "dilation_rate",
        "activation",
        "use_bias",
        "depthwise_initializer",
        "bias_initializer",
    ];
    const IMPORTED_CONFIG: &'static [&'static str] = &[
        "kernel_size",
        "strides",
        "padding",
        "depth_multiplier",
        "dilation_rate",
        "activation",
        "use_bias",
        "depthwise_initializer",
        "bias_initializer",
    ];

    fn parse(r: &mut ArgReader) -> Self {
        let depthwise = Depthwise::parse(r, "depthwise_conv2d(3)");
        DepthwiseConv2D {
            depthwise,
            activation: r.keyword(
                "activation",
                ActivationFn::Linear,
                Some(ActivationFn::Linear),
            ),
            use_bias: r.bool_or("use_bias", true),
            bias_initializer: r.choice("bias_initializer", INITIALIZERS, "zeros", None),
        }
    }

    fn infer(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        Ok(self.depthwise.infer(inputs, Self::CLASS)?.to_vec())
    }

    fn weights(&self, inputs: &[Shape]) -> Vec<WeightSpec> {
        let mut w = vec![self.depthwise.weight(inputs)];
        if self.use_bias {
            let channels = self.depthwise.weight(inputs).shape[2..].iter().product();
            w.push(bias_weight(channels, &self.bias_initializer));
        }
        w
    }

    fn macs(&self, inputs: &[Shape], _output: &Shape) -> u64 {
        self.depthwise.macs(inputs)
    }

    fn config(&self) -> Json {
        let mut c = self.depthwise.config();
        c["activation"] = json!(self.activation);
        c["use_bias"] = json!(self.use_bias);
        c["bias_initializer"] = json!(self.bias_initializer);
        c
    }
}

/// `SeparableConv2D`: the depthwise stage, then a 1x1 convolution to `filters`: depthwise kernel
/// `(kh, kw, in, dm)`, pointwise kernel `(1, 1, in * dm, filters)`, bias `(filters,)` (added
/// after the pointwise stage, as is the activation).
#[derive(Debug, Clone, PartialEq)]
pub struct SeparableConv2D {
    pub filters: i64,
    pub depthwise: Depthwise,
    pub pointwise_initializer: String,
    pub activation: ActivationFn,
    pub use_bias: bool,
    pub bias_initializer: String,
}

impl LayerKind for SeparableConv2D {
    const CLASS: &'static str = "SeparableConv2D";
    const REGULARIZED: &'static [(&'static str, &'static str)] = &[
        ("depthwise_regularizer", "depthwise_kernel"),
        ("pointwise_regularizer", "pointwise_kernel"),
        ("bias_regularizer", "bias"),
    ];
    const POSITIONAL: &'static [&'static str] = &["filters", "kernel_size", "strides", "padding"];
    const KERAS_ALIASES: &'static [&'static str] = &["SeparableConvolution2D"];
    const KNOWN: &'static [&'static str] = &[
        "filters",
        "kernel_size",
        "strides",
        "padding",
        "data_format",
        "dilation_rate",
        "depth_multiplier",
        "activation",
        "use_bias",
        "depthwise_initializer",
        "pointwise_initializer",
        "bias_initializer",
    ];
    const IMPORTED_CONFIG: &'static [&'static str] = &[
        "filters",
        "kernel_size",
        "strides",
        "padding",
        "dilation_rate",
        "depth_multiplier",
        "activation",
        "use_bias",
        "depthwise_initializer",
        "pointwise_initializer",
        "bias_initializer",
    ];

    fn parse(r: &mut ArgReader) -> Self {
        let example = "separable_conv2d(64, 3)";
        let filters = r.size("filters", example).unwrap_or(1);
        let depthwise = Depthwise::parse(r, example);
        SeparableConv2D {
            filters,
            depthwise,
            pointwise_initializer: r.choice(
                "pointwise_initializer",
                INITIALIZERS,
                "glorot_uniform",
                None,
            ),
            activation: r.keyword(
                "activation",
                ActivationFn::Linear,
                Some(ActivationFn::Linear),
            ),
            use_bias: r.bool_or("use_bias", true),
            bias_initializer: r.choice("bias_initializer", INITIALIZERS, "zeros", None),
        }
    }

    fn infer(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        let [h, w, _] = self.depthwise.infer(inputs, Self::CLASS)?;
        Ok(vec![h, w, self.filters])
    }

    fn weights(&self, inputs: &[Shape]) -> Vec<WeightSpec> {
        let depthwise = self.depthwise.weight(inputs);
        let mid: i64 = depthwise.shape[2..].iter().product();
        let mut w = vec![
            depthwise,
            WeightSpec {
                name: "pointwise_kernel",
                shape: vec![1, 1, mid, self.filters],
                trainable: true,
                initializer: self.pointwise_initializer.clone(),
            },
        ];
        if self.use_bias {
            w.push(bias_weight(self.filters, &self.bias_initializer));
        }
        w
    }

    /// The depthwise stage's, plus `in * dm` per pointwise output value.
    fn macs(&self, inputs: &[Shape], output: &Shape) -> u64 {
        let mid = self
            .depthwise
            .infer(inputs, Self::CLASS)
            .map_or(0, |[_, _, c]| c);
        self.depthwise
            .macs(inputs)
            .saturating_add(product(output).saturating_mul(product(&[mid])))
    }

    fn config(&self) -> Json {
        let mut c = self.depthwise.config();
        c["filters"] = json!(self.filters);
        c["pointwise_initializer"] = json!(self.pointwise_initializer);
        c["activation"] = json!(self.activation);
        c["use_bias"] = json!(self.use_bias);
        c["bias_initializer"] = json!(self.bias_initializer);
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_padding_puts_the_odd_pixel_last() {
        let pads = |n, out, k, s| {
            let g = WindowGeometry::new(k, s, 1, Padding::Same, n, out);
            (g.pad_before, g.pad_after)
        };
        assert_eq!(pads(6, 3, 3, 2), (0, 1));
        assert_eq!(pads(5, 5, 2, 1), (0, 1));
        assert_eq!(pads(5, 5, 3, 1), (1, 1));
        let dilated = WindowGeometry::new(3, 1, 2, Padding::Same, 5, 5);
        assert_eq!(
            (dilated.span(), dilated.pad_before, dilated.pad_after),
            (5, 2, 2)
        );
        let valid = WindowGeometry::new(3, 2, 1, Padding::Valid, 8, 3);
        assert_eq!((valid.pad_before, valid.pad_after), (0, 0));
    }

    #[test]
    fn transposed_output_is_a_window_of_the_full_result() {
        let up = |k: i64, s: i64, padding| Conv2DTranspose {
            args: ConvArgs {
                filters: 1,
                kernel_size: [k, k],
                strides: [s, s],
                padding,
                dilation_rate: [1, 1],
                activation: ActivationFn::Linear,
                use_bias: true,
                kernel_initializer: "glorot_uniform".into(),
                bias_initializer: "zeros".into(),
            },
            output_padding: None,
        };
        // same, k 3, s 2: full 3 * 2 + 3 = 9 for out 8: the odd pixel is cropped after.
        let g = up(3, 2, Padding::Same).geometry(0, 4, 8);
        assert_eq!((g.crop_before, g.crop_after, g.extend_after), (0, 1, 0));
        // same, k 4, s 2: full 10 for out 8: one pixel each side.
        let g = up(4, 2, Padding::Same).geometry(0, 4, 8);
        assert_eq!((g.crop_before, g.crop_after, g.extend_after), (1, 1, 0));
        // valid, k 1, s 2: full 7 for out 8: the last output pixel lies past it.
        let g = up(1, 2, Padding::Valid).geometry(0, 4, 8);
        assert_eq!((g.crop_before, g.crop_after, g.extend_after), (0, 0, 1));
    }
}
