//! Conv2D and Conv2DTranspose.

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
    let kernel_size = match r.pair("kernel_size", 1, MAX_DIM) {
        Some(k) => k,
        None => {
            if !r.has("kernel_size") && r.diags.iter().all(|d| d.code != "E-arg-missing") {
                r.missing("kernel_size", &example);
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

    /// Rows (axis 0) or columns (axis 1) of zero padding before the input, for input size `n`
    /// and output size `out`: Keras's `same` rule, 0 for `valid`.
    pub fn pad_before(&self, axis: usize, n: usize, out: usize) -> usize {
        if self.padding == Padding::Same {
            super::same_pad_before(
                n,
                out,
                self.effective_kernel(axis) as usize,
                self.strides[axis] as usize,
            )
        } else {
            0
        }
    }
}

/// `Conv2D`: kernel `(kh, kw, in, out)`, bias `(out,)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Conv2D {
    pub args: ConvArgs,
}

impl LayerKind for Conv2D {
    const CLASS: &'static str = "Conv2D";
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
    ];

    fn parse(r: &mut ArgReader) -> Self {
        Conv2D {
            args: parse_conv(r, Self::CLASS),
        }
    }

    fn infer(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        let [h, w, _] = image(inputs, Self::CLASS)?;
        let a = &self.args;
        let mut out = [0i64; 2];
        for (axis, n) in [h, w].into_iter().enumerate() {
            let k = a.effective_kernel(axis);
            let s = a.strides[axis];
            out[axis] = if a.padding == Padding::Same {
                same_size(n, s)
            } else {
                valid_size(n, k, s).ok_or_else(|| {
                    ShapeError::new(
                        "E-size",
                        format!(
                            "the {}x{} kernel does not fit in {{0}}'s {h}x{w} output (valid padding)",
                            a.kernel_size[0], a.kernel_size[1]
                        ),
                        format!("the {} would be {} or less", if axis == 0 { "height" } else { "width" }, 0),
                    )
                    .help("use a larger input, or `padding: same`")
                })?
            };
        }
        Ok(vec![out[0], out[1], a.filters])
    }

    fn weights(&self, inputs: &[Shape]) -> Vec<WeightSpec> {
        let c_in = inputs.first().and_then(|s| s.last()).copied().unwrap_or(0);
        let a = &self.args;
        let mut w = vec![WeightSpec {
            name: "kernel",
            shape: vec![a.kernel_size[0], a.kernel_size[1], c_in, a.filters],
            trainable: true,
        }];
        if a.use_bias {
            w.push(WeightSpec {
                name: "bias",
                shape: vec![a.filters],
                trainable: true,
            });
        }
        w
    }

    fn macs(&self, inputs: &[Shape], output: &Shape) -> u64 {
        let c_in = inputs.first().and_then(|s| s.last()).copied().unwrap_or(0);
        product(output).saturating_mul(product(&[
            self.args.kernel_size[0],
            self.args.kernel_size[1],
            c_in,
        ]))
    }

    fn config(&self) -> Json {
        self.args.config()
    }
}

/// `Conv2DTranspose`: kernel `(kh, kw, out, in)`, bias `(out,)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Conv2DTranspose {
    pub args: ConvArgs,
    pub output_padding: Option<[i64; 2]>,
}

impl Conv2DTranspose {
    /// Where the output window starts in the full transposed-convolution result `(n - 1) * s + k`
    /// along an axis: TF pads the equivalent forward convolution (output -> input) the `same`
    /// way, so `same` crops `floor(total / 2)` first; `valid` starts at 0.
    pub fn crop_before(&self, axis: usize, n: usize, out: usize) -> usize {
        if self.args.padding == Padding::Same {
            let (k, s) = (
                self.args.kernel_size[axis] as usize,
                self.args.strides[axis] as usize,
            );
            ((n.max(1) - 1) * s + k).saturating_sub(out) / 2
        } else {
            0
        }
    }
}

impl LayerKind for Conv2DTranspose {
    const CLASS: &'static str = "Conv2DTranspose";
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
        }];
        if a.use_bias {
            w.push(WeightSpec {
                name: "bias",
                shape: vec![a.filters],
                trainable: true,
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
