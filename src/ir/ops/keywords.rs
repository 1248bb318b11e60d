//! Keras arguments, and unetc's extensions for PyTorch nets, that name one of a fixed set of
//! choices (`padding='same'`, `activation='relu'`, `interpolation='bilinear'`, `mode: reflect`)
//! as enums: every backend matches on them exhaustively, so a new choice is a compile error
//! wherever it must be handled.

/// An argument whose value is one of a fixed set of Keras names.
pub trait Keyword: Copy + Sized + 'static {
    /// Every name, in the order the variants are declared.
    const NAMES: &'static [&'static str];
    /// The name Keras writes in the layer's config.
    fn keras_name(self) -> &'static str;
    fn from_keras_name(name: &str) -> Option<Self>;
}

macro_rules! keyword_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vdoc])* $variant),* }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            /// The name Keras writes in the layer's config.
            pub fn keras_name(self) -> &'static str {
                match self { $($name::$variant => $text),* }
            }

            pub fn from_keras_name(name: &str) -> Option<$name> {
                $name::ALL.iter().copied().find(|k| k.keras_name() == name)
            }
        }

        impl Keyword for $name {
            const NAMES: &'static [&'static str] = &[$($text),*];

            fn keras_name(self) -> &'static str {
                $name::keras_name(self)
            }

            fn from_keras_name(name: &str) -> Option<$name> {
                $name::from_keras_name(name)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.keras_name())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.keras_name())
            }
        }
    };
}

keyword_enum! {
    /// Keras's `padding` of convolutions and poolings.
    Padding {
        Valid = "valid",
        /// Output `ceil(n / stride)`; the odd pixel of padding goes after (bottom/right).
        Same = "same",
    }
}

keyword_enum! {
    /// Keras's `interpolation` of UpSampling2D.
    Interpolation {
        Nearest = "nearest",
        /// Half-pixel centres, as tf.image.resize.
        Bilinear = "bilinear",
    }
}

keyword_enum! {
    /// unetc's `interpolation` of UpSampling3D (Keras's has none: it repeats voxels).
    VolumeInterpolation {
        Nearest = "nearest",
        /// PyTorch's `mode='trilinear'`: half-pixel centres (or aligned corners) on all three
        /// axes, the 3-D form of Keras's bilinear.
        Trilinear = "trilinear",
    }
}

keyword_enum! {
    /// What ZeroPadding2D/3D write outside their input: zeros (Keras), or unetc's extensions
    /// for PyTorch's `padding_mode`: the input mirrored without repeating its edge (`reflect`,
    /// ONNX `reflect`) or its edge repeated (`replicate`, ONNX `edge`).
    PadMode {
        Zeros = "constant",
        Reflect = "reflect",
        Replicate = "replicate",
        /// Mirrored with the edge repeated (TensorFlow's and NumPy's `symmetric`).
        Symmetric = "symmetric",
    }
}

impl PadMode {
    /// The input index an output index `i` (relative to the input's start, so negative in the
    /// leading padding) reads along an axis of `n` pixels; `None` where it reads a zero.
    /// Reflect needs `n > padding`, symmetric `n >= padding` (checked by the shape rules).
    pub fn source(self, i: i64, n: usize) -> Option<usize> {
        let n = n as i64;
        if (0..n).contains(&i) {
            return Some(i as usize);
        }
        match self {
            PadMode::Zeros => None,
            PadMode::Reflect => {
                let j = if i < 0 { -i } else { 2 * (n - 1) - i };
                (0..n).contains(&j).then_some(j as usize)
            }
            PadMode::Replicate => Some(i.clamp(0, n - 1) as usize),
            PadMode::Symmetric => {
                let j = if i < 0 { -i - 1 } else { 2 * n - 1 - i };
                (0..n).contains(&j).then_some(j as usize)
            }
        }
    }

    /// The most a side may be padded along an axis of `n` (the mirror modes read inside).
    pub fn max_padding(self, n: i64) -> i64 {
        match self {
            PadMode::Zeros | PadMode::Replicate => i64::MAX,
            PadMode::Reflect => n - 1,
            PadMode::Symmetric => n,
        }
    }
}

keyword_enum! {
    /// The activation functions Keras 2 accepts by name (`activation='relu'`).
    ActivationFn {
        Linear = "linear",
        Relu = "relu",
        Sigmoid = "sigmoid",
        /// Over the last axis (the channels).
        Softmax = "softmax",
        Tanh = "tanh",
        Elu = "elu",
        Selu = "selu",
        Softplus = "softplus",
        Softsign = "softsign",
        Swish = "swish",
        /// Keras's other name for swish; kept apart so the config says what the spec said.
        Silu = "silu",
        /// The exact (erf) form, Keras's default.
        Gelu = "gelu",
        Exponential = "exponential",
        /// Keras 2: `clip(0.2 x + 0.5, 0, 1)`.
        HardSigmoid = "hard_sigmoid",
        Relu6 = "relu6",
        Mish = "mish",
        /// Keras's `leaky_relu` function: negative slope 0.2.
        LeakyRelu = "leaky_relu",
    }
}

keyword_enum! {
    /// The TensorFlow functions unetc runs, by the name Keras records in the layer's config
    /// (`function`): `+` records `__operators__.add`, `*` `math.multiply`, `-` `math.subtract`.
    TfFunction {
        OperatorsAdd = "__operators__.add",
        MathAdd = "math.add",
        MathMultiply = "math.multiply",
        MathSubtract = "math.subtract",
        /// `x / y` (`/` records it); with a constant operand only.
        MathTruediv = "math.truediv",
        MathMaximum = "math.maximum",
        /// Over the channel axis with `keepdims=True` only (CBAM's channel pooling).
        MathReduceMean = "math.reduce_mean",
        /// Over the channel axis with `keepdims=True` only.
        MathReduceMax = "math.reduce_max",
        MathMinimum = "math.minimum",
        Concat = "concat",
        NnRelu = "nn.relu",
        MathSigmoid = "math.sigmoid",
        /// `tf.expand_dims(x, axis)`: an axis of size 1 (not before the batch).
        ExpandDims = "expand_dims",
        /// What `tf.squeeze(x, axis)` records: the axis of size 1 removed.
        CompatV1Squeeze = "compat.v1.squeeze",
        /// `tf.reshape(x, (-1, ...))`: the batch first, the other sizes fixed.
        Reshape = "reshape",
        /// `tf.image.resize(x, size, method)` to a whole multiple of the input's size.
        ImageResize = "image.resize",
        /// `tf.argmax(x, axis=-1)`: the index of each pixel's largest channel (the first of
        /// equals), the channel axis dropped; an integer tensor, held as float32 values.
        MathArgmax = "math.argmax",
        /// `tf.cast(x, dtype=tf.float32)`: float32 only (unetc's values are float32).
        Cast = "cast",
        /// `x[...]` (Keras's SlicingOpLambda): channels sliced or picked, axes of size 1
        /// added or dropped.
        OperatorsGetitem = "__operators__.getitem",
        /// `tf.tanh` / `tf.nn.tanh`.
        MathTanh = "math.tanh",
        /// `tf.nn.softmax(x)` over the last axis (the channels).
        NnSoftmax = "nn.softmax",
        /// `tf.nn.leaky_relu(x)`: TensorFlow's default slope 0.2.
        NnLeakyRelu = "nn.leaky_relu",
        NnRelu6 = "nn.relu6",
        NnElu = "nn.elu",
        NnSelu = "nn.selu",
        /// `tf.nn.silu` and `tf.nn.swish` (which records this name).
        NnSilu = "nn.silu",
        /// `tf.nn.gelu(x)`: the exact (erf) form, TensorFlow's default.
        NnGelu = "nn.gelu",
        /// `tf.math.softplus` and `tf.nn.softplus`.
        MathSoftplus = "math.softplus",
        NnSoftsign = "nn.softsign",
        MathExp = "math.exp",
        /// `tf.nn.bias_add(x, bias)`: a constant of one value per channel added (what
        /// `preprocess_input` of VGG16 and ResNet50 records, after reversing the channels).
        NnBiasAdd = "nn.bias_add",
        /// `tf.pad(x, paddings, mode)` (Keras records tf.compat.v1.pad) of an image's height
        /// and width: ZeroPadding2D with TensorFlow's CONSTANT (zeros) or REFLECT mode.
        CompatV1Pad = "compat.v1.pad",
    }
}

keyword_enum! {
    /// tf.pad's `mode`, as TensorFlow spells it (it also takes lower case, read as the same).
    TfPadMode {
        Constant = "CONSTANT",
        /// Mirrored without repeating the edge: ZeroPadding2D's `reflect`.
        Reflect = "REFLECT",
        /// Mirrored with the edge repeated: ZeroPadding2D's `symmetric`.
        Symmetric = "SYMMETRIC",
    }
}

keyword_enum! {
    /// The Python functions of a Keras `Lambda` layer that unetc runs: functions of published
    /// packages, known by their module and name (the layer's config names both).
    LambdaFunction {
        /// classification_models' `slice_tensor(x, start, stop, axis)`: `x[:, :, :, start:stop]`
        /// (the channel groups of ResNeXt's grouped convolutions in segmentation_models).
        SliceTensor = "slice_tensor",
        /// classification_models' `expand_dims(x, channels_axis)`: `x[:, None, None, :]` (the
        /// pooled vector of a squeeze-excitation block as a 1x1 image).
        ExpandDims = "expand_dims",
    }
}

impl LambdaFunction {
    /// The Python module that defines the function (a Lambda's config names it as `module`).
    pub fn module(self) -> &'static str {
        match self {
            LambdaFunction::SliceTensor | LambdaFunction::ExpandDims => {
                "classification_models.models._common_blocks"
            }
        }
    }

    /// The names of the function's `arguments` besides the tensor, as Keras records them.
    pub fn arguments(self) -> &'static [&'static str] {
        match self {
            LambdaFunction::SliceTensor => &["start", "stop", "axis"],
            LambdaFunction::ExpandDims => &["channels_axis"],
        }
    }
}
