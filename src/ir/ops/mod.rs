//! Keras layer kinds. Here each kind has its arguments (with Keras's names and defaults), its
//! shape rule, its weights (hence parameter counts), its MACs and its config. Adding a kind takes
//! a struct that implements [`LayerKind`] (its weights name their initializers) and a line in
//! [`Op`], and then its handling elsewhere: the CPU and CUDA kernels, the plan, weight binding,
//! the receptive field, the diagram and ONNX export. Each of those decisions is a `match` over
//! every variant, so the compiler lists them; Keras import goes by class name.

mod activation;
mod attention;
mod conv;
mod dense;
mod input;
pub mod keywords;
mod lambda;
pub mod merge;
mod norm;
mod pool;
mod reshape;
mod resize;
mod swin;
mod tf_op;
mod volume;

pub use activation::{
    Activation, Dropout, FixedDropout, GaussianDropout, GaussianNoise, LeakyReLU, PReLU, ReLU,
    Rescaling, Snake, Softmax, SpatialDropout2D, ELU, GELU,
};
pub use attention::{AttentionDims, MultiHeadAttention, PatchEmbedding, PatchExtract};
pub use conv::{
    Conv2D, Conv2DTranspose, Depthwise, DepthwiseConv2D, SeparableConv2D, TransposeGeometry,
    WindowGeometry,
};
pub use dense::{Dense, Flatten};
pub use input::Input;
pub use keywords::{
    ActivationFn, Interpolation, Keyword, LambdaFunction, PadMode, Padding, TfFunction, TfPadMode,
    VolumeInterpolation,
};
pub use lambda::{Arithmetic, Expr, Lambda, LambdaBody};
pub use merge::{
    Add, Average, Concatenate, CustomScaleLayer, Maximum, MergeFn, Minimum, Multiply, Subtract,
};
pub use norm::{
    BatchNormalization, GroupNormalization, LayerNormalization, NormLayout, Normalization,
};
pub use pool::{AveragePooling2D, GlobalAveragePooling2D, GlobalMaxPooling2D, MaxPooling2D};
pub use reshape::{Permute, Reshape};
pub use resize::{Cropping2D, ImageResize, Resizing, UpSampling2D, ZeroPadding2D};
pub use swin::{
    PatchExpanding, PatchMerging, SwinGeometry, SwinTransformerBlock, SWIN_MASK_VALUE,
    SWIN_NORM_EPSILON,
};
pub use tf_op::{
    AxisRead, ImageReduceFn, IndexItem, ReduceFn, ScalarFn, ScalarOp, Subscript, TFOpLambda,
    TensorMergeOp, TensorOperand, TfCompute, TfConstant,
};
pub use volume::{
    AveragePooling3D, Conv3D, Conv3DArgs, Conv3DTranspose, Cropping3D, GlobalAveragePooling3D,
    MaxPooling3D, UpSampling3D, ZeroPadding3D,
};

use crate::diag::Diagnostic;
use crate::ir::value::ArgReader;
use serde_json::Value as Json;

/// An output shape without the batch dimension: `[H, W, C]`, `[D, H, W, C]` or `[N]`.
pub type Shape = Vec<i64>;

/// Why a layer cannot be applied to its inputs. `{0}`, `{1}`, ... in the texts stand for the
/// names of the layer's inputs; [`crate::infer`] fills them in.
#[derive(Debug, Clone, PartialEq)]
pub struct ShapeError {
    pub code: &'static str,
    pub message: String,
    pub label: String,
    pub help: Vec<String>,
}

impl ShapeError {
    pub fn new(code: &'static str, message: impl Into<String>, label: impl Into<String>) -> Self {
        ShapeError {
            code,
            message: message.into(),
            label: label.into(),
            help: Vec::new(),
        }
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help.push(help.into());
        self
    }
}

/// One weight tensor of a layer, named as Keras names it (`kernel`, `bias`, `gamma`, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct WeightSpec {
    pub name: &'static str,
    pub shape: Vec<i64>,
    /// Whether the variable is trainable when the layer is (BN moving statistics never are).
    pub trainable: bool,
    /// The Keras initializer that seeds it (`glorot_uniform`, `zeros`, ...).
    pub initializer: String,
}

impl WeightSpec {
    pub fn count(&self) -> u64 {
        self.shape
            .iter()
            .fold(1u64, |acc, &d| acc.saturating_mul(d.max(0) as u64))
    }
}

/// What every layer kind provides.
pub trait LayerKind {
    /// Keras's class name, as printed in summaries.
    const CLASS: &'static str;
    /// Keras's positional parameter order.
    const POSITIONAL: &'static [&'static str];
    /// Every argument the kind accepts (besides `name` and `trainable`).
    const KNOWN: &'static [&'static str];
    /// Other Keras class names of the kind (`MaxPool2D` for MaxPooling2D).
    const KERAS_ALIASES: &'static [&'static str] = &[];
    /// The Python modules a to_json() `module` must name for a class from outside Keras (none:
    /// Keras's own class, whatever the module says).
    const KERAS_MODULES: &'static [&'static str] = &[];
    /// The keys of a Keras layer config that `unetc import` carries into the spec; the others
    /// (`data_format`, `dtype`, regularizers, ...) must have values unetc follows anyway.
    const IMPORTED_CONFIG: &'static [&'static str];
    /// The kind's weight regularizer arguments and the variables they regularize
    /// (`kernel_regularizer` -> `kernel`); every kind also takes `activity_regularizer`.
    const REGULARIZED: &'static [(&'static str, &'static str)] = &[];
    /// Reads the arguments, leaving diagnostics in the reader.
    fn parse(args: &mut ArgReader) -> Self;
    /// Output shape from input shapes.
    fn infer(&self, inputs: &[Shape]) -> Result<Shape, ShapeError>;
    /// Problems that do not stop inference (Keras accepts them).
    fn warnings(&self, _inputs: &[Shape]) -> Vec<ShapeError> {
        Vec::new()
    }
    fn weights(&self, _inputs: &[Shape]) -> Vec<WeightSpec> {
        Vec::new()
    }
    /// Multiply-accumulates per image.
    fn macs(&self, _inputs: &[Shape], _output: &Shape) -> u64 {
        0
    }
    /// Keras's `get_config()` for the arguments unetc models (normalised, defaults filled in).
    fn config(&self) -> Json;
    /// The config once Keras has built the layer on `inputs` (BatchNormalization's axis becomes
    /// the positive index, which depends on the rank).
    fn built_config(&self, _inputs: &[Shape]) -> Json {
        self.config()
    }
    /// The base of Keras's auto-names when it is not the spec kind (TFOpLambda is named after
    /// its function: `tf.concat`, `tf.concat_1`).
    fn auto_name_base(&self) -> Option<&'static str> {
        None
    }
    /// Why tf.keras cannot express this layer's arguments (unetc's extensions beyond Keras,
    /// such as PyTorch's `align_corners`); `None` for a layer Keras builds as it is.
    fn beyond_keras(&self) -> Option<&'static str> {
        None
    }
    /// The values of a non-trainable weight that the layer computes from its arguments
    /// (Swin's attention mask and position index); `None` for a weight learned or initialised.
    fn constant_weight(&self, _weight: &str) -> Option<Vec<f32>> {
        None
    }
    /// Bytes of one value of the weight `weight` (Keras keeps every weight in float32 but
    /// Normalization's int64 `count`); the summary's byte totals add them up.
    fn value_bytes(&self, _weight: &str) -> u64 {
        4
    }
    /// Keras's class of this layer (TFOpLambda's `x[...]` is a SlicingOpLambda).
    fn keras_class(&self) -> &'static str {
        Self::CLASS
    }
    /// How many inputs the layer takes: `(min, max)`.
    fn arity() -> (usize, usize) {
        (1, 1)
    }
    /// Whether the Keras class takes its `name` argument as a prefix of its inner layers'
    /// names and leaves the layer to Keras's auto-names (keras-unet-collection's Swin-UNET
    /// classes): exported code sets the spec's name on the layer itself.
    const NAME_IS_PREFIX: bool = false;
    /// Whether a layer is trainable when the spec does not say (keras-unet-collection's Snake
    /// is not, as its class defaults to `trainable=False`).
    fn trainable_by_default() -> bool {
        true
    }
}

macro_rules! ops {
    ($($variant:ident : $kind:literal $(| $alias:literal)*),* $(,)?) => {
        /// A layer with its arguments.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Op { $($variant($variant)),* }

        /// Spec kind names (snake_case, as Keras auto-names them) and their aliases.
        pub const KINDS: &[&str] = &[$($kind $(, $alias)*),*];

        /// Every kind once: its spec name and its Keras class.
        pub const KIND_CLASSES: &[(&str, &str)] = &[$(($kind, $variant::CLASS)),*];

        impl Op {
            /// Parses a call of `kind`; `None` if the kind is unknown.
            pub fn parse(kind: &str, args: &mut ArgReader) -> Option<Op> {
                match kind {
                    $($kind $(| $alias)* => Some(Op::$variant($variant::parse(args))),)*
                    _ => None,
                }
            }

            pub fn known_args(kind: &str) -> &'static [&'static str] {
                match kind {
                    $($kind $(| $alias)* => $variant::KNOWN,)*
                    _ => &[],
                }
            }

            pub fn positional(kind: &str) -> &'static [&'static str] {
                match kind {
                    $($kind $(| $alias)* => $variant::POSITIONAL,)*
                    _ => &[],
                }
            }

            /// The spec kind of a Keras class name and the config keys `import` takes;
            /// `None` for a class unetc does not know.
            pub fn for_keras_class(
                class: &str,
                module: Option<&str>,
            ) -> Option<(&'static str, &'static [&'static str])> {
                $(
                    if (class == $variant::CLASS || $variant::KERAS_ALIASES.contains(&class))
                        && ($variant::KERAS_MODULES.is_empty()
                            || module.is_some_and(|m| $variant::KERAS_MODULES.contains(&m)))
                    {
                        return Some(($kind, $variant::IMPORTED_CONFIG));
                    }
                )*
                None
            }

            /// The weight regularizer arguments of the kind spelled `kind`.
            pub fn regularized(kind: &str) -> &'static [(&'static str, &'static str)] {
                match kind {
                    $($kind $(| $alias)* => $variant::REGULARIZED,)*
                    _ => &[],
                }
            }

            /// The modules a class from outside Keras comes from (empty for Keras's own).
            pub fn keras_modules(kind: &str) -> &'static [&'static str] {
                match kind {
                    $($kind $(| $alias)* => $variant::KERAS_MODULES,)*
                    _ => &[],
                }
            }

            pub fn class_name(&self) -> &'static str {
                match self { $(Op::$variant(op) => op.keras_class()),* }
            }

            /// The base of Keras's auto-names: `conv2d`, `max_pooling2d`, `re_lu`, ...
            pub fn base_name(&self) -> &'static str {
                match self { $(Op::$variant(_) => $kind),* }
            }

            /// The base of the layer's Keras auto-names: usually the spec kind.
            pub fn auto_name_base(&self) -> &'static str {
                match self { $(Op::$variant(op) => op.auto_name_base().unwrap_or($kind)),* }
            }

            pub fn infer(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
                match self { $(Op::$variant(op) => op.infer(inputs)),* }
            }

            pub fn warnings(&self, inputs: &[Shape]) -> Vec<ShapeError> {
                match self { $(Op::$variant(op) => op.warnings(inputs)),* }
            }

            pub fn weights(&self, inputs: &[Shape]) -> Vec<WeightSpec> {
                match self { $(Op::$variant(op) => op.weights(inputs)),* }
            }

            pub fn macs(&self, inputs: &[Shape], output: &Shape) -> u64 {
                match self { $(Op::$variant(op) => op.macs(inputs, output)),* }
            }

            pub fn config(&self) -> Json {
                match self { $(Op::$variant(op) => op.config()),* }
            }

            pub fn built_config(&self, inputs: &[Shape]) -> Json {
                match self { $(Op::$variant(op) => op.built_config(inputs)),* }
            }

            pub fn constant_weight(&self, weight: &str) -> Option<Vec<f32>> {
                match self { $(Op::$variant(op) => op.constant_weight(weight)),* }
            }

            pub fn value_bytes(&self, weight: &str) -> u64 {
                match self { $(Op::$variant(op) => op.value_bytes(weight)),* }
            }

            pub fn name_is_prefix(&self) -> bool {
                match self { $(Op::$variant(_) => $variant::NAME_IS_PREFIX),* }
            }

            pub fn trainable_by_default(&self) -> bool {
                match self { $(Op::$variant(_) => $variant::trainable_by_default()),* }
            }

            /// [`Op::trainable_by_default`] of the kind spelled `kind` (true if unknown).
            pub fn kind_trainable_by_default(kind: &str) -> bool {
                match kind {
                    $($kind $(| $alias)* => $variant::trainable_by_default(),)*
                    _ => true,
                }
            }

            pub fn arity(&self) -> (usize, usize) {
                match self { $(Op::$variant(_) => $variant::arity()),* }
            }

            pub fn beyond_keras(&self) -> Option<&'static str> {
                match self { $(Op::$variant(op) => op.beyond_keras()),* }
            }
        }
    };
}

ops! {
    Input: "input" | "input_layer",
    Conv2D: "conv2d",
    Conv2DTranspose: "conv2d_transpose",
    MaxPooling2D: "max_pooling2d" | "max_pool2d",
    UpSampling2D: "up_sampling2d" | "upsampling2d",
    Resizing: "resizing",
    Cropping2D: "cropping2d",
    ZeroPadding2D: "zero_padding2d",
    Concatenate: "concatenate",
    Add: "add",
    BatchNormalization: "batch_normalization",
    Activation: "activation",
    ReLU: "re_lu" | "relu_layer",
    Softmax: "softmax",
    Dropout: "dropout",
    Flatten: "flatten",
    Dense: "dense",
    GlobalAveragePooling2D: "global_average_pooling2d",
    Multiply: "multiply",
    Subtract: "subtract",
    Average: "average",
    Maximum: "maximum",
    Minimum: "minimum",
    LeakyReLU: "leaky_re_lu" | "leaky_relu_layer",
    ELU: "elu",
    PReLU: "p_re_lu" | "prelu",
    AveragePooling2D: "average_pooling2d" | "avg_pool2d",
    GlobalMaxPooling2D: "global_max_pooling2d",
    SpatialDropout2D: "spatial_dropout2d",
    GaussianNoise: "gaussian_noise",
    GaussianDropout: "gaussian_dropout",
    GroupNormalization: "group_normalization",
    LayerNormalization: "layer_normalization",
    DepthwiseConv2D: "depthwise_conv2d",
    SeparableConv2D: "separable_conv2d",
    TFOpLambda: "tf_op",
    Lambda: "lambda",
    CustomScaleLayer: "custom_scale_layer",
    Reshape: "reshape",
    Permute: "permute",
    Conv3D: "conv3d",
    Conv3DTranspose: "conv3d_transpose",
    MaxPooling3D: "max_pooling3d" | "max_pool3d",
    AveragePooling3D: "average_pooling3d" | "avg_pool3d",
    UpSampling3D: "up_sampling3d" | "upsampling3d",
    Cropping3D: "cropping3d",
    ZeroPadding3D: "zero_padding3d",
    GlobalAveragePooling3D: "global_average_pooling3d",
    FixedDropout: "fixed_dropout",
    Rescaling: "rescaling",
    Normalization: "normalization",
    GELU: "gelu",
    Snake: "snake",
    MultiHeadAttention: "multi_head_attention",
    PatchExtract: "patch_extract",
    PatchEmbedding: "patch_embedding",
    SwinTransformerBlock: "swin_transformer_block",
    PatchMerging: "patch_merging",
    PatchExpanding: "patch_expanding",
}

impl Op {
    /// The statistics layout of a normalization computed from its input (GroupNormalization,
    /// LayerNormalization) for an input of `shape`; `None` for every other kind, BatchNormalization
    /// included (its statistics are weights).
    pub fn norm_layout(&self, shape: &[i64]) -> Option<NormLayout> {
        match self {
            Op::GroupNormalization(op) => Some(op.layout(shape)),
            Op::LayerNormalization(op) => Some(op.layout(shape)),
            Op::Input(_)
            | Op::Conv2D(_)
            | Op::Conv2DTranspose(_)
            | Op::MaxPooling2D(_)
            | Op::UpSampling2D(_)
            | Op::Resizing(_)
            | Op::Cropping2D(_)
            | Op::ZeroPadding2D(_)
            | Op::Concatenate(_)
            | Op::Add(_)
            | Op::BatchNormalization(_)
            | Op::Activation(_)
            | Op::ReLU(_)
            | Op::Softmax(_)
            | Op::Dropout(_)
            | Op::Flatten(_)
            | Op::Dense(_)
            | Op::MultiHeadAttention(_)
            | Op::PatchExtract(_)
            | Op::PatchEmbedding(_)
            | Op::SwinTransformerBlock(_)
            | Op::PatchMerging(_)
            | Op::PatchExpanding(_)
            | Op::GlobalAveragePooling2D(_)
            | Op::Multiply(_)
            | Op::Subtract(_)
            | Op::CustomScaleLayer(_)
            | Op::Average(_)
            | Op::Maximum(_)
            | Op::Minimum(_)
            | Op::LeakyReLU(_)
            | Op::ELU(_)
            | Op::Rescaling(_)
            | Op::GELU(_)
            | Op::Snake(_)
            | Op::Normalization(_)
            | Op::PReLU(_)
            | Op::AveragePooling2D(_)
            | Op::GlobalMaxPooling2D(_)
            | Op::SpatialDropout2D(_)
            | Op::GaussianNoise(_)
            | Op::GaussianDropout(_)
            | Op::FixedDropout(_)
            | Op::DepthwiseConv2D(_)
            | Op::SeparableConv2D(_)
            | Op::TFOpLambda(_)
            | Op::Lambda(_)
            | Op::Reshape(_)
            | Op::Permute(_)
            | Op::Conv3D(_)
            | Op::Conv3DTranspose(_)
            | Op::MaxPooling3D(_)
            | Op::AveragePooling3D(_)
            | Op::UpSampling3D(_)
            | Op::Cropping3D(_)
            | Op::ZeroPadding3D(_)
            | Op::GlobalAveragePooling3D(_) => None,
        }
    }
}

/// Requires a rank-3 (H, W, C) input, as every 2-D layer does.
pub(crate) fn image(inputs: &[Shape], class: &str) -> Result<[i64; 3], ShapeError> {
    match inputs.first().map(|s| s.as_slice()) {
        Some(&[h, w, c]) => Ok([h, w, c]),
        Some(other) => Err(ShapeError::new(
            "E-rank",
            format!(
                "{class} expects an image input (None, H, W, C), but {{0}} has shape {}",
                crate::text::shape_text(other)
            ),
            "input is not an image",
        )),
        None => Err(ShapeError::new(
            "E-arity",
            format!("{class} needs an input"),
            "no input",
        )),
    }
}

/// `out = floor((n - k) / s) + 1` with Keras's error when the window does not fit.
pub(crate) fn valid_size(n: i64, k: i64, s: i64) -> Option<i64> {
    if n < k {
        None
    } else {
        Some((n - k) / s + 1)
    }
}

pub(crate) fn same_size(n: i64, s: i64) -> i64 {
    (n + s - 1) / s
}

pub(crate) fn pair_json(p: [i64; 2]) -> Json {
    serde_json::json!([p[0], p[1]])
}

pub(crate) fn product(dims: &[i64]) -> u64 {
    dims.iter()
        .fold(1u64, |acc, &d| acc.saturating_mul(d.max(0) as u64))
}

/// Parses one argument reader fully, returning the op and every diagnostic.
pub fn parse_call(kind: &str, mut args: ArgReader) -> (Option<Op>, Vec<Diagnostic>) {
    let op = Op::parse(kind, &mut args);
    let known = Op::known_args(kind);
    (op, args.finish(known))
}
