//! Every layer kind in training: its forward pass in Keras's training mode and its backward
//! pass. Tensors are dense, NHWC with the batch first (`[N, features]` after Flatten).
//! One `match` over every kind in each direction: a new kind does not compile until it trains.

use super::activations;
use super::math::{add_column_sums, gemm, PatchMap};
use super::profile;
use crate::exec::cpu::isa::Isa;
use crate::exec::cpu::kernels::{ResizeAxis, Strided};
use crate::exec::cpu::winograd;
use crate::exec::cpu::{attention, swin};
use crate::exec::Tensor;
use crate::ir::ops::{
    ActivationFn, CustomScaleLayer, ImageResize, Interpolation, LambdaBody, MergeFn, NormLayout,
    Normalization, Op, PadMode, ReduceFn, Snake, TfCompute, UpSampling3D, VolumeInterpolation,
    WindowGeometry, GELU,
};
use rand_distr::{Distribution, StandardNormal, Uniform};

/// What the backward pass needs besides the layer's inputs and output.
#[derive(Debug, Default)]
pub struct Saved {
    /// The pre-activation of a layer with a fused activation (conv, dense), where
    /// [`activations::keeps_pre_activation`] says so.
    pub pre: Option<Vec<f32>>,
    /// Per-kind extras: BatchNormalization's batch mean and 1/std; a dropout mask; the
    /// depthwise result inside a separable convolution.
    pub aux: Vec<Vec<f32>>,
}

/// How a layer runs this step.
pub struct Mode<'r> {
    /// Keras's `training=True`: batch statistics, dropout and noise.
    pub training: bool,
    /// The layer's own `trainable` (a frozen BatchNormalization runs in inference mode).
    pub layer_trainable: bool,
    pub rng: &'r mut rand::rngs::StdRng,
}

/// Where the gradient handed to [`backward`] sits.
pub enum Grad {
    /// `dL/d(output)`.
    Output(Vec<f32>),
    /// `dL/d(pre-activation)` of the layer's output activation, or of its input for a layer
    /// that is only an activation: the loss computed it from the logits (Keras's
    /// `_keras_logits`).
    Logits(Vec<f32>),
}

/// Gradients of one layer: per input (in order) and per weight slot (`None` for slots that
/// receive none: BatchNormalization's moving statistics).
pub struct LayerGrads {
    pub inputs: Vec<Vec<f32>>,
    pub params: Vec<Option<Vec<f32>>>,
}

#[derive(Debug)]
pub struct Unsupported(pub String);

fn hwc(shape: &[usize]) -> Result<[usize; 4], Unsupported> {
    match shape {
        &[n, h, w, c] => Ok([n, h, w, c]),
        other => Err(Unsupported(format!(
            "training runs this layer on 4D (NHWC) tensors only, not {other:?}"
        ))),
    }
}

/// Where a layer's output activation finds its pre-activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreActivation {
    /// The layer is only the activation: its input.
    Input,
    /// Fused into a conv or dense: kept in [`Saved::pre`].
    Saved,
}

/// The output activation a layer applies last (fused into a conv or dense, or the layer itself).
pub fn output_activation(op: &Op) -> Option<(ActivationFn, PreActivation)> {
    let saved = |a: ActivationFn| Some((a, PreActivation::Saved));
    match op {
        Op::Conv2D(o) => saved(o.args.activation),
        Op::Conv2DTranspose(o) => saved(o.args.activation),
        Op::Conv3D(o) => saved(o.args.activation),
        Op::Conv3DTranspose(o) => saved(o.args.activation),
        Op::Dense(o) => saved(o.activation),
        Op::DepthwiseConv2D(o) => saved(o.activation),
        Op::SeparableConv2D(o) => saved(o.activation),
        Op::Activation(o) => Some((o.activation, PreActivation::Input)),
        Op::Softmax(o) => (o.axis == -1).then_some((ActivationFn::Softmax, PreActivation::Input)),
        Op::TFOpLambda(o) => match o.computes() {
            TfCompute::Activation(a) => Some((a, PreActivation::Input)),
            TfCompute::Merge(_)
            | TfCompute::TensorMerge(_)
            | TfCompute::Concat(_)
            | TfCompute::Scalar(_)
            | TfCompute::ReduceChannels(_)
            | TfCompute::ReduceImage(_)
            | TfCompute::Reshape
            | TfCompute::Slice
            | TfCompute::Resize(_)
            | TfCompute::Pad => None,
        },
        Op::Input(_)
        | Op::MultiHeadAttention(_)
        | Op::PatchExtract(_)
        | Op::PatchEmbedding(_)
        | Op::SwinTransformerBlock(_)
        | Op::PatchMerging(_)
        | Op::PatchExpanding(_)
        | Op::MaxPooling2D(_)
        | Op::UpSampling2D(_)
        | Op::Resizing(_)
        | Op::Cropping2D(_)
        | Op::ZeroPadding2D(_)
        | Op::Concatenate(_)
        | Op::Add(_)
        | Op::BatchNormalization(_)
        | Op::ReLU(_)
        | Op::Dropout(_)
        | Op::Flatten(_)
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
        | Op::GroupNormalization(_)
        | Op::LayerNormalization(_)
        | Op::Reshape(_)
        | Op::Lambda(_)
        | Op::Permute(_)
        | Op::MaxPooling3D(_)
        | Op::AveragePooling3D(_)
        | Op::UpSampling3D(_)
        | Op::Cropping3D(_)
        | Op::ZeroPadding3D(_)
        | Op::GlobalAveragePooling3D(_) => None,
    }
}

/// Which of a layer's forward values its backward pass reads (beyond their shapes, its
/// [`Saved`] and the gradient). The trainer frees every other value as soon as the forward
/// pass is done with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackwardReads {
    pub inputs: bool,
    pub output: bool,
}

pub fn backward_reads(op: &Op) -> BackwardReads {
    let reads = |inputs: bool, output: bool| BackwardReads { inputs, output };
    let nothing = reads(false, false);
    // A layer that is only its activation reads `z` (its input) or `y` (its output).
    let activation = |a: ActivationFn| match activations::derivative_reads(a) {
        activations::DerivativeReads::Nothing => nothing,
        activations::DerivativeReads::Input => reads(true, false),
        activations::DerivativeReads::Output => reads(false, true),
    };
    // A weighted layer reads its input for the kernel's gradient; its fused activation reads
    // the kept pre-activation or the output.
    let weighted = |a: ActivationFn| {
        reads(
            true,
            activations::derivative_reads(a) == activations::DerivativeReads::Output,
        )
    };
    let merge = |f: MergeFn| match f {
        MergeFn::Add | MergeFn::Subtract | MergeFn::Average => nothing,
        MergeFn::Multiply | MergeFn::Divide | MergeFn::Maximum | MergeFn::Minimum => {
            reads(true, false)
        }
    };
    match op {
        Op::Conv2D(o) => weighted(o.args.activation),
        Op::Conv2DTranspose(o) => weighted(o.args.activation),
        Op::Conv3D(o) => weighted(o.args.activation),
        Op::Conv3DTranspose(o) => weighted(o.args.activation),
        Op::Dense(o) => weighted(o.activation),
        Op::DepthwiseConv2D(o) => weighted(o.activation),
        Op::SeparableConv2D(o) => weighted(o.activation),
        Op::Activation(o) => activation(o.activation),
        Op::Softmax(_) => reads(false, true),
        Op::TFOpLambda(o) => match o.computes() {
            TfCompute::Activation(a) => activation(a),
            TfCompute::Merge(f) => merge(f),
            TfCompute::TensorMerge(m) => merge(m.function),
            TfCompute::Scalar(_) | TfCompute::ReduceChannels(_) => reads(true, false),
            TfCompute::ReduceImage(f) => backward_reads(&o.as_global_pooling(f)),
            TfCompute::Concat(_)
            | TfCompute::Reshape
            | TfCompute::Slice
            | TfCompute::Resize(_)
            | TfCompute::Pad => nothing,
        },
        Op::Lambda(o) => match &o.body {
            LambdaBody::SliceTensor { .. }
            | LambdaBody::ExpandDims { .. }
            | LambdaBody::RepeatElements { .. }
            | LambdaBody::Resize { .. } => nothing,
            LambdaBody::Arithmetic(_) => reads(true, false),
            LambdaBody::ScaledAdd { .. } => nothing,
        },
        Op::Add(_) => merge(MergeFn::Add),
        Op::Subtract(_) => merge(MergeFn::Subtract),
        Op::CustomScaleLayer(_) => nothing,
        Op::Average(_) => merge(MergeFn::Average),
        Op::Multiply(_) => merge(MergeFn::Multiply),
        Op::Maximum(_) => merge(MergeFn::Maximum),
        Op::Minimum(_) => merge(MergeFn::Minimum),
        Op::GlobalMaxPooling2D(_) => reads(true, true),
        // The projections' gradients need the inputs; the attention is recomputed from them.
        Op::MultiHeadAttention(_) | Op::PatchEmbedding(_) => reads(true, false),
        // The block is recomputed from its input; the linear layers' gradients need theirs.
        Op::SwinTransformerBlock(_) | Op::PatchMerging(_) | Op::PatchExpanding(_) => {
            reads(true, false)
        }
        // Only the input's shape.
        Op::PatchExtract(_) => reads(true, false),
        Op::MaxPooling2D(_)
        | Op::MaxPooling3D(_)
        | Op::BatchNormalization(_)
        | Op::GroupNormalization(_)
        | Op::LayerNormalization(_)
        | Op::ReLU(_)
        | Op::LeakyReLU(_)
        | Op::ELU(_)
        | Op::GELU(_)
        | Op::Snake(_)
        | Op::PReLU(_) => reads(true, false),
        Op::Input(_)
        | Op::AveragePooling2D(_)
        | Op::AveragePooling3D(_)
        | Op::GlobalAveragePooling2D(_)
        | Op::GlobalAveragePooling3D(_)
        | Op::UpSampling2D(_)
        | Op::Resizing(_)
        | Op::UpSampling3D(_)
        | Op::Cropping2D(_)
        | Op::Cropping3D(_)
        | Op::ZeroPadding2D(_)
        | Op::ZeroPadding3D(_)
        | Op::Concatenate(_)
        | Op::Flatten(_)
        | Op::Reshape(_)
        | Op::Permute(_)
        | Op::Rescaling(_)
        | Op::Normalization(_)
        | Op::Dropout(_)
        | Op::SpatialDropout2D(_)
        | Op::GaussianNoise(_)
        | Op::GaussianDropout(_)
        | Op::FixedDropout(_) => nothing,
    }
}

/// Whether the trainer may rebuild this layer's value from its inputs in the backward pass
/// instead of keeping it: pure copies (no weights, no randomness, no arithmetic), cheap next
/// to the convolution that reads them.
pub fn recomputable(op: &Op) -> bool {
    match op {
        Op::Concatenate(_)
        | Op::UpSampling2D(_)
        | Op::Resizing(_)
        | Op::UpSampling3D(_)
        | Op::Cropping2D(_)
        | Op::Cropping3D(_)
        | Op::ZeroPadding2D(_)
        | Op::ZeroPadding3D(_) => true,
        Op::Input(_)
        | Op::Conv2D(_)
        | Op::Conv2DTranspose(_)
        | Op::Conv3D(_)
        | Op::Conv3DTranspose(_)
        | Op::Dense(_)
        | Op::MultiHeadAttention(_)
        | Op::PatchExtract(_)
        | Op::PatchEmbedding(_)
        | Op::SwinTransformerBlock(_)
        | Op::PatchMerging(_)
        | Op::PatchExpanding(_)
        | Op::DepthwiseConv2D(_)
        | Op::SeparableConv2D(_)
        | Op::Dropout(_)
        | Op::SpatialDropout2D(_)
        | Op::FixedDropout(_)
        | Op::GaussianDropout(_)
        | Op::GaussianNoise(_)
        | Op::BatchNormalization(_)
        | Op::GroupNormalization(_)
        | Op::LayerNormalization(_)
        | Op::Activation(_)
        | Op::Softmax(_)
        | Op::TFOpLambda(_)
        | Op::Add(_)
        | Op::Subtract(_)
        | Op::CustomScaleLayer(_)
        | Op::Average(_)
        | Op::Multiply(_)
        | Op::Maximum(_)
        | Op::Minimum(_)
        | Op::GlobalMaxPooling2D(_)
        | Op::MaxPooling2D(_)
        | Op::MaxPooling3D(_)
        | Op::ReLU(_)
        | Op::LeakyReLU(_)
        | Op::ELU(_)
        | Op::GELU(_)
        | Op::Snake(_)
        | Op::PReLU(_)
        | Op::AveragePooling2D(_)
        | Op::AveragePooling3D(_)
        | Op::GlobalAveragePooling2D(_)
        | Op::GlobalAveragePooling3D(_)
        | Op::Flatten(_)
        | Op::Reshape(_)
        | Op::Lambda(_)
        | Op::Permute(_)
        | Op::Rescaling(_)
        | Op::Normalization(_) => false,
    }
}

/// How many values a layer's forward pass in training keeps for its backward pass besides
/// its output (what [`forward`] puts in [`Saved`]), for an input of `in_shape` and an output
/// of `out_shape`, batch first.
pub fn saved_elements(op: &Op, in_shapes: &[Vec<usize>], out_shape: &[usize]) -> usize {
    let in_shape: &[usize] = in_shapes.first().map_or(&[], Vec::as_slice);
    let out: usize = out_shape.iter().product();
    let pre = |a: ActivationFn| {
        if a != ActivationFn::Linear && activations::keeps_pre_activation(a) {
            out
        } else {
            0
        }
    };
    let mask = |rate: f64| if rate > 0.0 { out } else { 0 };
    match op {
        // The dropout mask of the attention weights, `[batch, heads, tq, tv]`.
        Op::MultiHeadAttention(o) if o.dropout > 0.0 => {
            let items: Vec<Vec<i64>> = in_shapes
                .iter()
                .map(|s| s.iter().skip(1).map(|&d| d as i64).collect())
                .collect();
            let d = o.dims(&items);
            out_shape.first().copied().unwrap_or(0) * d.heads * d.tq * d.tv
        }
        Op::MultiHeadAttention(_)
        | Op::PatchExtract(_)
        | Op::PatchEmbedding(_)
        | Op::SwinTransformerBlock(_)
        | Op::PatchMerging(_)
        | Op::PatchExpanding(_) => 0,
        Op::Conv2D(o) => pre(o.args.activation),
        Op::Conv2DTranspose(o) => pre(o.args.activation),
        Op::Conv3D(o) => pre(o.args.activation),
        Op::Conv3DTranspose(o) => pre(o.args.activation),
        Op::Dense(o) => pre(o.activation),
        Op::DepthwiseConv2D(o) => pre(o.activation),
        // The depthwise result between the two kernels.
        Op::SeparableConv2D(o) => {
            let c = in_shape.last().copied().unwrap_or(0);
            let pixels: usize = out_shape[..out_shape.len().saturating_sub(1)]
                .iter()
                .product();
            pre(o.activation) + pixels * c * o.depthwise.depth_multiplier.max(1) as usize
        }
        Op::Dropout(o) => mask(o.rate),
        Op::SpatialDropout2D(o) => mask(o.rate),
        Op::FixedDropout(o) => mask(o.rate),
        Op::GaussianDropout(o) => mask(o.rate),
        // The batch mean and 1/std per channel.
        Op::BatchNormalization(_) => 2 * out_shape.last().copied().unwrap_or(0),
        // The mean and 1/std per group.
        Op::GroupNormalization(_) | Op::LayerNormalization(_) => {
            let item: Vec<i64> = out_shape.iter().skip(1).map(|&d| d as i64).collect();
            op.norm_layout(&item).map_or(0, |l| {
                2 * l.groups * l.outer * out_shape.first().copied().unwrap_or(0)
            })
        }
        Op::Input(_)
        | Op::Activation(_)
        | Op::Softmax(_)
        | Op::TFOpLambda(_)
        | Op::Add(_)
        | Op::Subtract(_)
        | Op::CustomScaleLayer(_)
        | Op::Average(_)
        | Op::Multiply(_)
        | Op::Maximum(_)
        | Op::Minimum(_)
        | Op::GlobalMaxPooling2D(_)
        | Op::MaxPooling2D(_)
        | Op::MaxPooling3D(_)
        | Op::ReLU(_)
        | Op::LeakyReLU(_)
        | Op::ELU(_)
        | Op::GELU(_)
        | Op::Snake(_)
        | Op::PReLU(_)
        | Op::AveragePooling2D(_)
        | Op::AveragePooling3D(_)
        | Op::GlobalAveragePooling2D(_)
        | Op::GlobalAveragePooling3D(_)
        | Op::UpSampling2D(_)
        | Op::Resizing(_)
        | Op::UpSampling3D(_)
        | Op::Cropping2D(_)
        | Op::Cropping3D(_)
        | Op::ZeroPadding2D(_)
        | Op::ZeroPadding3D(_)
        | Op::Concatenate(_)
        | Op::Flatten(_)
        | Op::Reshape(_)
        | Op::Lambda(_)
        | Op::Permute(_)
        | Op::Rescaling(_)
        | Op::Normalization(_)
        | Op::GaussianNoise(_) => 0,
    }
}

/// The pre-activation a layer's output came from (see [`output_activation`]).
pub fn logits_of<'a>(op: &Op, input: &'a Tensor, saved: &'a Saved) -> Option<&'a [f32]> {
    match output_activation(op)?.1 {
        PreActivation::Input => Some(&input.data),
        PreActivation::Saved => saved.pre.as_deref(),
    }
}

/// Forward in training. `params` are the layer's weight slots in [`crate::exec::bind_weights`]'s
/// order; BatchNormalization updates its moving statistics in them, as Keras does during the
/// forward pass of a training step.
pub fn forward(
    op: &Op,
    inputs: &[&Tensor],
    out_shape: &[usize],
    params: &mut [Vec<f32>],
    mode: &mut Mode,
) -> Result<(Tensor, Saved), Unsupported> {
    let mut saved = Saved::default();
    let out_len: usize = out_shape.iter().product();
    let x = inputs.first().copied();
    let first = || x.map(|t| t.data.as_slice()).unwrap_or(&[]);
    let data: Vec<f32> = match op {
        Op::Input(_) => first().to_vec(),
        Op::Conv2D(o) => {
            let z = conv_forward(
                x.map(|t| t.shape.as_slice()).unwrap_or(&[]),
                first(),
                out_shape,
                conv_window(|a, n, m| o.args.geometry(a, n, m)),
                o.groups.max(1) as usize,
                &params[0],
                Some(&params[1]),
            )?;
            finish_activation(o.args.activation, z, out_shape, &mut saved)
        }
        Op::DepthwiseConv2D(o) => {
            let shape = &x.map(|t| t.shape.clone()).unwrap_or_default();
            let c = hwc(shape)?[3];
            let z = conv_forward(
                shape,
                first(),
                out_shape,
                conv_window(|a, n, m| o.depthwise.geometry(a, n, m)),
                c,
                &params[0],
                Some(&params[1]),
            )?;
            finish_activation(o.activation, z, out_shape, &mut saved)
        }
        Op::SeparableConv2D(o) => {
            let shape = &x.map(|t| t.shape.clone()).unwrap_or_default();
            let [n, _, _, c] = hwc(shape)?;
            let [_, oh, ow, f] = hwc(out_shape)?;
            let mid_shape = [n, oh, ow, c * o.depthwise.depth_multiplier.max(1) as usize];
            let mid = conv_forward(
                shape,
                first(),
                &mid_shape,
                conv_window(|a, n, m| o.depthwise.geometry(a, n, m)),
                c,
                &params[0],
                None,
            )?;
            let k = mid_shape[3];
            let mut z = vec![0.0f32; out_len];
            let rows = n * oh * ow;
            gemm(
                (rows, f, k),
                &mid,
                (k, 1),
                &params[1],
                (f, 1),
                &mut z,
                (f, 1),
                false,
            );
            add_bias(&mut z, &params[2]);
            saved.aux.push(mid);
            finish_activation(o.activation, z, out_shape, &mut saved)
        }
        Op::Conv2DTranspose(o) => {
            let shape = x.map(|t| t.shape.as_slice()).unwrap_or(&[]);
            let map = transpose_map(
                &|a, n, m| o.geometry(a, n, m),
                o.args.dilation_rate == [1, 1],
                shape,
                out_shape,
            )?;
            let mut z = transpose_forward(&map, first(), &params[0], spatial(shape)?.2);
            add_bias(&mut z, &params[1]);
            finish_activation(o.args.activation, z, out_shape, &mut saved)
        }
        Op::Conv3D(o) => {
            let z = conv_forward(
                x.map(|t| t.shape.as_slice()).unwrap_or(&[]),
                first(),
                out_shape,
                conv_window(|a, n, m| o.geometry(a, n, m)),
                1,
                &params[0],
                Some(&params[1]),
            )?;
            finish_activation(o.args.activation, z, out_shape, &mut saved)
        }
        Op::Conv3DTranspose(o) => {
            let shape = x.map(|t| t.shape.as_slice()).unwrap_or(&[]);
            let map = transpose_map(
                &|a, n, m| o.geometry(a, n, m),
                o.args.dilation_rate == [1, 1, 1],
                shape,
                out_shape,
            )?;
            let mut z = transpose_forward(&map, first(), &params[0], spatial(shape)?.2);
            add_bias(&mut z, &params[1]);
            finish_activation(o.args.activation, z, out_shape, &mut saved)
        }
        Op::MaxPooling3D(o) => pool_output(x, out_shape, |a, n, m| o.geometry(a, n, m), Pool::Max)?,
        Op::AveragePooling3D(o) => {
            pool_output(x, out_shape, |a, n, m| o.geometry(a, n, m), Pool::Average)?
        }
        Op::UpSampling3D(o) => resize_output(x, volume_resample(o), out_shape)?,
        Op::Cropping3D(o) => {
            let c = o.cropping;
            window_output(x, [c[0], c[2], c[4]], PadMode::Zeros, out_shape)?
        }
        Op::ZeroPadding3D(o) => {
            let p = o.padding;
            window_output(x, [-p[0], -p[2], -p[4]], o.mode, out_shape)?
        }
        Op::GlobalAveragePooling3D(_) => global_average_forward(
            first(),
            spatial(&x.map(|t| t.shape.clone()).unwrap_or_default())?,
        ),
        Op::Dense(o) => {
            let input = first();
            let units = o.units as usize;
            let n_in = x.and_then(|t| t.shape.last().copied()).unwrap_or(0);
            let rows = input.len() / n_in.max(1);
            let mut z = vec![0.0f32; out_len];
            gemm(
                (rows, units, n_in),
                input,
                (n_in, 1),
                &params[0],
                (units, 1),
                &mut z,
                (units, 1),
                false,
            );
            add_bias(&mut z, &params[1]);
            finish_activation(o.activation, z, out_shape, &mut saved)
        }
        Op::MultiHeadAttention(o) => {
            let d = o.dims(&item_shapes(inputs));
            let batch = out_shape.first().copied().unwrap_or(0);
            let key = inputs.get(2).unwrap_or(&inputs[1]);
            // Keras drops attention weights (after the softmax) in training; the mask is kept
            // for the backward pass.
            if mode.training && o.dropout > 0.0 {
                let len = batch * d.heads * d.tq * d.tv;
                saved.aux.push(dropout_mask(len, o.dropout, None, mode.rng));
            }
            let mut y = vec![0.0f32; out_len];
            attention::multi_head_attention(
                &d,
                &inputs[0].data,
                &inputs[1].data,
                &key.data,
                params,
                saved.aux.first().map(Vec::as_slice),
                &mut y,
                batch,
            );
            y
        }
        Op::PatchExtract(o) => {
            let [n, h, w, c] = hwc(&x.map(|t| t.shape.clone()).unwrap_or_default())?;
            let mut y = vec![0.0f32; out_len];
            let rows = (out_shape[1] as f64).sqrt().round() as usize;
            attention::patch_extract(
                first(),
                [h, w, c],
                o.side().max(1) as usize,
                rows,
                &mut y,
                n,
            );
            y
        }
        Op::SwinTransformerBlock(o) => {
            let drops = [o.mlp_drop, o.attn_drop, o.proj_drop, o.drop_path_prob];
            if mode.training && drops.iter().any(|&r| r > 0.0) {
                return Err(Unsupported(
                    "SwinTransformerBlock trains without its dropouts here: set mlp_drop, \
                     attn_drop, proj_drop and drop_path_prob to 0 (keras-unet-collection's \
                     swin_unet_2d does)"
                        .into(),
                ));
            }
            let mut y = vec![0.0f32; out_len];
            swin::swin_block(o, first(), params, &mut y, out_shape[0]);
            y
        }
        Op::PatchMerging(o) => {
            let mut y = vec![0.0f32; out_len];
            let c = x.and_then(|t| t.shape.last().copied()).unwrap_or(0);
            let units = out_shape.last().copied().unwrap_or(0);
            let grid = o.num_patch.map(|v| v as usize);
            swin::patch_merging(first(), grid, c, &params[0], &mut y, units, out_shape[0]);
            y
        }
        Op::PatchExpanding(o) => {
            let mut y = vec![0.0f32; out_len];
            let c = x.and_then(|t| t.shape.last().copied()).unwrap_or(0);
            swin::patch_expanding(o, first(), c, &params[0], &mut y, out_shape[0]);
            y
        }
        Op::PatchEmbedding(_) => {
            let mut y = vec![0.0f32; out_len];
            let (batch, tokens, units) = (out_shape[0], out_shape[1], out_shape[2]);
            let n_in = x.and_then(|t| t.shape.last().copied()).unwrap_or(0);
            attention::patch_embedding(
                first(),
                tokens,
                n_in,
                &params[0],
                &params[1],
                &params[2],
                units,
                &mut y,
                batch,
            );
            y
        }
        Op::MaxPooling2D(o) => pool_output(x, out_shape, |a, n, m| o.geometry(a, n, m), Pool::Max)?,
        Op::AveragePooling2D(o) => {
            pool_output(x, out_shape, |a, n, m| o.geometry(a, n, m), Pool::Average)?
        }
        Op::UpSampling2D(o) => resize_output(x, image_resample(o.resize()), out_shape)?,
        Op::Resizing(o) => resize_output(x, image_resample(o.resize()), out_shape)?,
        Op::Cropping2D(o) => window_output(
            x,
            [0, o.cropping[0], o.cropping[2]],
            PadMode::Zeros,
            out_shape,
        )?,
        Op::ZeroPadding2D(o) => {
            window_output(x, [0, -o.padding[0], -o.padding[2]], o.mode, out_shape)?
        }
        Op::Concatenate(o) => concat_forward(inputs, out_shape, o.axis),
        Op::Add(_) => merge_forward(inputs, out_shape, MergeFn::Add),
        Op::Multiply(_) => merge_forward(inputs, out_shape, MergeFn::Multiply),
        Op::Subtract(_) => merge_forward(inputs, out_shape, MergeFn::Subtract),
        Op::CustomScaleLayer(o) => scaled_add_forward(o, inputs, [0, 1], out_len),
        Op::Average(_) => merge_forward(inputs, out_shape, MergeFn::Average),
        Op::Maximum(_) => merge_forward(inputs, out_shape, MergeFn::Maximum),
        Op::Minimum(_) => merge_forward(inputs, out_shape, MergeFn::Minimum),
        Op::TFOpLambda(o) => match o.computes() {
            TfCompute::Merge(f) => merge_forward(inputs, out_shape, f),
            TfCompute::TensorMerge(m) => {
                let (padded, c) = constant_merge_operands(o, inputs, out_shape)?;
                let x = padded.as_ref().unwrap_or(inputs[0]);
                let operands = if m.constant_first { [&c, x] } else { [x, &c] };
                merge_forward(&operands, out_shape, m.function)
            }
            TfCompute::Concat(axis) => concat_forward(inputs, out_shape, axis),
            TfCompute::Activation(a) => activations::apply(a, first(), channels(out_shape)),
            TfCompute::Scalar(op) => first().iter().map(|&x| op.apply(x)).collect(),
            TfCompute::ReduceChannels(f) => {
                let c = inputs[0].shape.last().copied().unwrap_or(1).max(1);
                first().chunks(c).map(|p| f.apply(p)).collect()
            }
            TfCompute::Reshape => first().to_vec(),
            // As the global pooling it equals.
            TfCompute::ReduceImage(f) => {
                return forward(&o.as_global_pooling(f), inputs, out_shape, params, mode)
            }
            TfCompute::Pad => {
                let pad = Op::ZeroPadding2D(o.as_padding());
                return forward(&pad, inputs, out_shape, params, mode);
            }
            TfCompute::Slice => {
                let item = &inputs[0].shape[1..];
                let mut out = vec![0.0f32; out_len];
                let window = o.slice_window(item);
                let dims = crate::exec::plan::hwc(item);
                crate::exec::cpu::kernels::slice_window(first(), dims, window, &mut out);
                out
            }
            TfCompute::Resize(method) => {
                resize_output(x, image_resample(ImageResize::tf(method)), out_shape)?
            }
        },
        Op::Activation(o) => activations::apply(o.activation, first(), channels(out_shape)),
        Op::Softmax(o) => softmax_axis(first(), out_shape, o.axis),
        Op::ReLU(o) => first()
            .iter()
            .map(|&v| {
                relu_layer(
                    v,
                    o.max_value.map(|m| m as f32),
                    o.negative_slope as f32,
                    o.threshold as f32,
                )
                .0
            })
            .collect(),
        Op::LeakyReLU(o) => first()
            .iter()
            .map(|&v| if v > 0.0 { v } else { o.alpha as f32 * v })
            .collect(),
        Op::Rescaling(o) => first().iter().map(|&v| o.apply(v)).collect(),
        Op::GELU(_) => first().iter().map(|&v| GELU::apply(v)).collect(),
        Op::Normalization(_) => {
            let (mean, var) = (&params[0], &params[1]);
            let c = mean.len().max(1);
            first()
                .iter()
                .enumerate()
                .map(|(i, &v)| (v - mean[i % c]) / Normalization::denominator(var[i % c]))
                .collect()
        }
        Op::ELU(o) => first()
            .iter()
            .map(|&v| {
                if v > 0.0 {
                    v
                } else {
                    o.alpha as f32 * v.exp_m1()
                }
            })
            .collect(),
        Op::Snake(_) => {
            let beta = params[0].first().copied().unwrap_or(f32::NAN);
            first().iter().map(|&v| Snake::apply(v, beta)).collect()
        }
        Op::PReLU(_) => {
            let alpha = &params[0];
            first()
                .iter()
                .enumerate()
                .map(|(i, &v)| {
                    if v > 0.0 {
                        v
                    } else {
                        alpha[i % alpha.len().max(1)] * v
                    }
                })
                .collect()
        }
        Op::Flatten(_) | Op::Reshape(_) => first().to_vec(),
        Op::Lambda(o) => match &o.body {
            LambdaBody::SliceTensor { start, stop, .. } => {
                let c = x.and_then(|t| t.shape.last().copied()).unwrap_or(1);
                let mut out = vec![0.0f32; out_len];
                let channels = *start as usize..*stop as usize;
                crate::exec::cpu::kernels::slice_channels(first(), c, channels, &mut out);
                out
            }
            LambdaBody::ExpandDims { .. } => first().to_vec(),
            LambdaBody::RepeatElements { repeats, .. } => {
                let c = x.and_then(|t| t.shape.last().copied()).unwrap_or(1);
                let mut out = vec![0.0f32; out_len];
                crate::exec::cpu::kernels::repeat_channels(first(), c, *repeats as usize, &mut out);
                out
            }
            LambdaBody::Resize {
                method,
                align_corners,
                ..
            } => {
                let resize = ImageResize::new(*method, *align_corners);
                resize_output(x, image_resample(resize), out_shape)?
            }
            LambdaBody::Arithmetic(a) => first().iter().map(|&v| a.apply(v)).collect(),
            LambdaBody::ScaledAdd {
                first: i,
                second: j,
                scale,
                ..
            } => scaled_add_forward(
                &CustomScaleLayer { scale: *scale },
                inputs,
                [*i, *j],
                out_len,
            ),
        },
        Op::Permute(o) => {
            let item = permute_index(
                &x.map(|t| t.shape[1..].to_vec()).unwrap_or_default(),
                &o.source_axes(),
            );
            let per = item.len().max(1);
            (0..out_len)
                .map(|i| first()[i / per * per + item[i % per]])
                .collect()
        }
        Op::GlobalAveragePooling2D(_) => global_average_forward(
            first(),
            spatial(&x.map(|t| t.shape.clone()).unwrap_or_default())?,
        ),
        Op::GlobalMaxPooling2D(_) => {
            let (n, dims, c) = spatial(&x.map(|t| t.shape.clone()).unwrap_or_default())?;
            let pixels = dims.iter().product::<usize>().max(1);
            let mut y = vec![f32::NEG_INFINITY; n * c];
            for (i, px) in first().chunks(c.max(1)).enumerate() {
                let item = i / pixels;
                for (ch, &v) in px.iter().enumerate() {
                    y[item * c + ch] = y[item * c + ch].max(v);
                }
            }
            y
        }
        Op::Dropout(o) => dropout(first(), o.rate, None, mode, &mut saved),
        Op::FixedDropout(o) => {
            let shape = x.map(|t| t.shape.clone()).unwrap_or_default();
            shared_dropout(
                first(),
                o.rate,
                &shape,
                &o.mask_dims(&shape),
                mode,
                &mut saved,
            )
        }
        Op::SpatialDropout2D(o) => {
            let [_, h, w, c] = hwc(out_shape)?;
            dropout(first(), o.rate, Some((h * w, c)), mode, &mut saved)
        }
        Op::GaussianNoise(o) => {
            if mode.training {
                let std = o.stddev as f32;
                first()
                    .iter()
                    .map(|&v| {
                        v + std
                            * <StandardNormal as Distribution<f32>>::sample(
                                &StandardNormal,
                                mode.rng,
                            )
                    })
                    .collect()
            } else {
                first().to_vec()
            }
        }
        Op::GaussianDropout(o) => {
            if mode.training && o.rate > 0.0 {
                let std = (o.rate / (1.0 - o.rate)).sqrt() as f32;
                let noise: Vec<f32> = (0..first().len())
                    .map(|_| {
                        1.0 + std
                            * <StandardNormal as Distribution<f32>>::sample(
                                &StandardNormal,
                                mode.rng,
                            )
                    })
                    .collect();
                let y = first().iter().zip(&noise).map(|(v, m)| v * m).collect();
                saved.aux.push(noise);
                y
            } else {
                first().to_vec()
            }
        }
        Op::BatchNormalization(o) => {
            let c = channels(out_shape);
            if o.axis != -1 && o.axis != out_shape.len() as i64 - 1 {
                return Err(Unsupported(
                    "BatchNormalization trains over the last axis only".into(),
                ));
            }
            let batch_stats = mode.training && mode.layer_trainable;
            let eps = o.epsilon as f32;
            let (mean, var) = if batch_stats {
                let (mean, var) = channel_moments(first(), c);
                // Keras updates the moving averages in the forward pass. TF's fused kernel
                // (4D and 5D inputs) hands the moving variance the unbiased (n / (n - 1))
                // variance; the other path the biased one.
                let count = (first().len() / c.max(1)) as f32;
                let fused = matches!(out_shape.len(), 4 | 5);
                let bessel = if fused && count > 1.0 {
                    count / (count - 1.0)
                } else {
                    1.0
                };
                let m = o.momentum as f32;
                for ch in 0..c {
                    params[2][ch] = params[2][ch] * m + mean[ch] * (1.0 - m);
                    params[3][ch] = params[3][ch] * m + var[ch] * bessel * (1.0 - m);
                }
                (mean, var)
            } else {
                (params[2].clone(), params[3].clone())
            };
            let inv: Vec<f32> = var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
            let (gamma, beta) = (&params[0], &params[1]);
            let y = first()
                .iter()
                .enumerate()
                .map(|(i, &v)| {
                    let ch = i % c;
                    (v - mean[ch]) * inv[ch] * gamma[ch] + beta[ch]
                })
                .collect();
            saved.aux.push(mean);
            saved.aux.push(inv);
            y
        }
        Op::GroupNormalization(_) | Op::LayerNormalization(_) => {
            let layout = norm_layout(op, out_shape)?;
            let (y, stats) = normalize_forward(layout, &params[0], &params[1], first());
            saved.aux.push(stats);
            y
        }
    };
    debug_assert_eq!(data.len(), out_len);
    Ok((
        Tensor {
            shape: out_shape.to_vec(),
            data,
        },
        saved,
    ))
}

/// Backward: the gradients of the layer's inputs and weight slots from its output's.
pub fn backward(
    op: &Op,
    inputs: &[&Tensor],
    output: &Tensor,
    saved: &Saved,
    params: &[Vec<f32>],
    grad: Grad,
    mode: &Mode,
) -> Result<LayerGrads, Unsupported> {
    let x = inputs.first().copied();
    let x_shape = x.map(|t| t.shape.clone()).unwrap_or_default();
    let first = || x.map(|t| t.data.as_slice()).unwrap_or(&[]);
    let none = |n: usize| vec![None; n];
    // The gradient at the pre-activation of a layer whose last step is `activation`.
    let pre_grad = |activation: ActivationFn, grad: Grad, pre: Option<&[f32]>| -> Vec<f32> {
        match grad {
            Grad::Logits(dz) => dz,
            Grad::Output(dy) => activations::backward(
                activation,
                pre.unwrap_or(&[]),
                &output.data,
                dy,
                channels(&output.shape),
            ),
        }
    };
    let output_grad = |grad: Grad| match grad {
        Grad::Output(dy) | Grad::Logits(dy) => dy,
    };
    Ok(match op {
        Op::Input(_) => LayerGrads {
            inputs: vec![],
            params: vec![],
        },
        Op::Conv2D(o) => {
            let dz = pre_grad(o.args.activation, grad, saved.pre.as_deref());
            let (dx, dk, db) = conv_backward(
                &x_shape,
                first(),
                &output.shape,
                conv_window(|a, n, m| o.args.geometry(a, n, m)),
                o.groups.max(1) as usize,
                &params[0],
                &dz,
            )?;
            LayerGrads {
                inputs: vec![dx],
                params: vec![Some(dk), Some(db)],
            }
        }
        Op::DepthwiseConv2D(o) => {
            let dz = pre_grad(o.activation, grad, saved.pre.as_deref());
            let c = hwc(&x_shape)?[3];
            let (dx, dk, db) = conv_backward(
                &x_shape,
                first(),
                &output.shape,
                conv_window(|a, n, m| o.depthwise.geometry(a, n, m)),
                c,
                &params[0],
                &dz,
            )?;
            LayerGrads {
                inputs: vec![dx],
                params: vec![Some(dk), Some(db)],
            }
        }
        Op::SeparableConv2D(o) => {
            let dz = pre_grad(o.activation, grad, saved.pre.as_deref());
            let [n, _, _, c] = hwc(&x_shape)?;
            let [_, oh, ow, f] = hwc(&output.shape)?;
            let k = c * o.depthwise.depth_multiplier.max(1) as usize;
            let mid = &saved.aux[0];
            let rows = n * oh * ow;
            let mut dpoint = vec![0.0f32; k * f];
            gemm(
                (k, f, rows),
                mid,
                (1, k),
                &dz,
                (f, 1),
                &mut dpoint,
                (f, 1),
                false,
            );
            let mut dmid = vec![0.0f32; rows * k];
            gemm(
                (rows, k, f),
                &dz,
                (f, 1),
                &params[1],
                (1, f),
                &mut dmid,
                (k, 1),
                false,
            );
            let mut db = vec![0.0f32; f];
            add_column_sums(&dz, f, &mut db);
            let (dx, ddepth, _) = conv_backward(
                &x_shape,
                first(),
                &[n, oh, ow, k],
                conv_window(|a, n, m| o.depthwise.geometry(a, n, m)),
                c,
                &params[0],
                &dmid,
            )?;
            LayerGrads {
                inputs: vec![dx],
                params: vec![Some(ddepth), Some(dpoint), Some(db)],
            }
        }
        Op::Conv2DTranspose(o) => {
            let dz = pre_grad(o.args.activation, grad, saved.pre.as_deref());
            let map = transpose_map(
                &|a, n, m| o.geometry(a, n, m),
                o.args.dilation_rate == [1, 1],
                &x_shape,
                &output.shape,
            )?;
            let (dx, dk, db) =
                transpose_backward(&map, first(), &params[0], spatial(&x_shape)?.2, &dz);
            LayerGrads {
                inputs: vec![dx],
                params: vec![Some(dk), Some(db)],
            }
        }
        Op::Conv3D(o) => {
            let dz = pre_grad(o.args.activation, grad, saved.pre.as_deref());
            let (dx, dk, db) = conv_backward(
                &x_shape,
                first(),
                &output.shape,
                conv_window(|a, n, m| o.geometry(a, n, m)),
                1,
                &params[0],
                &dz,
            )?;
            LayerGrads {
                inputs: vec![dx],
                params: vec![Some(dk), Some(db)],
            }
        }
        Op::Conv3DTranspose(o) => {
            let dz = pre_grad(o.args.activation, grad, saved.pre.as_deref());
            let map = transpose_map(
                &|a, n, m| o.geometry(a, n, m),
                o.args.dilation_rate == [1, 1, 1],
                &x_shape,
                &output.shape,
            )?;
            let (dx, dk, db) =
                transpose_backward(&map, first(), &params[0], spatial(&x_shape)?.2, &dz);
            LayerGrads {
                inputs: vec![dx],
                params: vec![Some(dk), Some(db)],
            }
        }
        Op::MaxPooling3D(o) => input_grads(pool_grads(
            x,
            output,
            |a, n, m| o.geometry(a, n, m),
            Pool::MaxEveryTie,
            &output_grad(grad),
        )?),
        Op::AveragePooling3D(o) => input_grads(pool_grads(
            x,
            output,
            |a, n, m| o.geometry(a, n, m),
            Pool::Average,
            &output_grad(grad),
        )?),
        Op::UpSampling3D(o) => input_grads(resize_grads(
            &x_shape,
            volume_resample(o),
            output,
            &output_grad(grad),
        )?),
        Op::Cropping3D(o) => {
            let c = o.cropping;
            input_grads(window_grads(
                &x_shape,
                [c[0], c[2], c[4]],
                PadMode::Zeros,
                output,
                &output_grad(grad),
            )?)
        }
        Op::ZeroPadding3D(o) => {
            let p = o.padding;
            input_grads(window_grads(
                &x_shape,
                [-p[0], -p[2], -p[4]],
                o.mode,
                output,
                &output_grad(grad),
            )?)
        }
        Op::GlobalAveragePooling3D(_) => LayerGrads {
            inputs: vec![global_average_backward(
                &output_grad(grad),
                spatial(&x_shape)?,
            )],
            params: vec![],
        },
        Op::Dense(o) => {
            let dz = pre_grad(o.activation, grad, saved.pre.as_deref());
            let n_in = x_shape.last().copied().unwrap_or(0);
            let (dx, dk, db) = dense_backward(first(), n_in, &params[0], &dz, o.units as usize);
            LayerGrads {
                inputs: vec![dx],
                params: vec![Some(dk), Some(db)],
            }
        }
        Op::MultiHeadAttention(o) => {
            let d = o.dims(&item_shapes(inputs));
            let dy = output_grad(grad);
            let key = inputs.get(2).unwrap_or(&inputs[1]);
            let mut grads = attention::AttentionGrads {
                query: Vec::new(),
                value: Vec::new(),
                key: Vec::new(),
                weights: params.iter().map(|p| vec![0.0f32; p.len()]).collect(),
                score_bias: Vec::new(),
            };
            let (mut dq, mut dv, mut dk) = (Vec::new(), Vec::new(), Vec::new());
            let (q_len, v_len, k_len) = (d.tq * d.eq, d.tv * d.ev, d.tv * d.ek);
            let weights = d.heads * d.tq * d.tv;
            let mask = saved.aux.first();
            for n in 0..output.shape.first().copied().unwrap_or(0) {
                attention::attend_backward(
                    &d,
                    &inputs[0].data[n * q_len..(n + 1) * q_len],
                    &inputs[1].data[n * v_len..(n + 1) * v_len],
                    &key.data[n * k_len..(n + 1) * k_len],
                    params,
                    attention::ScoreTerms::keras(&d),
                    mask.map(|m| &m[n * weights..(n + 1) * weights]),
                    &dy[n * d.tq * d.eo..(n + 1) * d.tq * d.eo],
                    &mut grads,
                );
                dq.extend_from_slice(&grads.query);
                dv.extend_from_slice(&grads.value);
                dk.extend_from_slice(&grads.key);
            }
            let mut input_grads = vec![dq];
            if inputs.len() > 2 {
                input_grads.extend([dv, dk]);
            } else {
                // The value is the key too.
                dv.iter_mut().zip(&dk).for_each(|(a, b)| *a += b);
                input_grads.push(dv);
            }
            LayerGrads {
                inputs: input_grads,
                params: grads.weights.into_iter().map(Some).collect(),
            }
        }
        Op::PatchExtract(o) => {
            let [n, h, w, c] = hwc(&x_shape)?;
            let rows = (output.shape[1] as f64).sqrt().round() as usize;
            input_grads(attention::patch_extract_backward(
                &output_grad(grad),
                [h, w, c],
                o.side().max(1) as usize,
                rows,
                n,
            ))
        }
        Op::SwinTransformerBlock(o) => {
            let grads =
                swin::swin_block_backward(o, first(), params, &output_grad(grad), output.shape[0]);
            LayerGrads {
                inputs: vec![grads.input],
                params: grads.weights,
            }
        }
        Op::PatchMerging(o) => {
            let c = x_shape.last().copied().unwrap_or(0);
            let grid = o.num_patch.map(|v| v as usize);
            let merged = swin::merge_neighbours(first(), grid, c, output.shape[0]);
            let units = output.shape.last().copied().unwrap_or(0);
            let (dmerged, dk, _) =
                dense_backward(&merged, 4 * c, &params[0], &output_grad(grad), units);
            LayerGrads {
                inputs: vec![swin::merge_neighbours_backward(
                    &dmerged,
                    grid,
                    c,
                    output.shape[0],
                )],
                params: vec![Some(dk)],
            }
        }
        Op::PatchExpanding(o) => {
            let (dx, dk) = swin::patch_expanding_backward(
                o,
                first(),
                x_shape.last().copied().unwrap_or(0),
                &params[0],
                &output_grad(grad),
                output.shape[0],
            );
            LayerGrads {
                inputs: vec![dx],
                params: vec![Some(dk)],
            }
        }
        Op::PatchEmbedding(_) => {
            let dy = output_grad(grad);
            let (tokens, units) = (output.shape[1], output.shape[2]);
            let n_in = x_shape.last().copied().unwrap_or(0);
            let (dx, dk, db) = dense_backward(first(), n_in, &params[0], &dy, units);
            // Each position's embedding: the sum over the batch of its token's gradient.
            let mut dpos = vec![0.0f32; tokens * units];
            for (r, row) in dy.chunks_exact(units.max(1)).enumerate() {
                let at = (r % tokens.max(1)) * units;
                dpos[at..at + units]
                    .iter_mut()
                    .zip(row)
                    .for_each(|(a, b)| *a += b);
            }
            LayerGrads {
                inputs: vec![dx],
                params: vec![Some(dk), Some(db), Some(dpos)],
            }
        }
        Op::MaxPooling2D(o) => input_grads(pool_grads(
            x,
            output,
            |a, n, m| o.geometry(a, n, m),
            Pool::Max,
            &output_grad(grad),
        )?),
        Op::AveragePooling2D(o) => input_grads(pool_grads(
            x,
            output,
            |a, n, m| o.geometry(a, n, m),
            Pool::Average,
            &output_grad(grad),
        )?),
        Op::UpSampling2D(o) => input_grads(resize_grads(
            &x_shape,
            image_resample(o.resize()),
            output,
            &output_grad(grad),
        )?),
        Op::Resizing(o) => input_grads(resize_grads(
            &x_shape,
            image_resample(o.resize()),
            output,
            &output_grad(grad),
        )?),
        Op::Cropping2D(o) => input_grads(window_grads(
            &x_shape,
            [0, o.cropping[0], o.cropping[2]],
            PadMode::Zeros,
            output,
            &output_grad(grad),
        )?),
        Op::ZeroPadding2D(o) => input_grads(window_grads(
            &x_shape,
            [0, -o.padding[0], -o.padding[2]],
            o.mode,
            output,
            &output_grad(grad),
        )?),
        Op::Concatenate(o) => LayerGrads {
            inputs: concat_backward(inputs, &output.shape, o.axis, &output_grad(grad)),
            params: vec![],
        },
        Op::Add(_) => merge_grads(inputs, output, MergeFn::Add, grad),
        Op::Multiply(_) => merge_grads(inputs, output, MergeFn::Multiply, grad),
        Op::Subtract(_) => merge_grads(inputs, output, MergeFn::Subtract, grad),
        // d/da = 1, d/db = scale.
        Op::CustomScaleLayer(o) => input_grads_of(o.gradients(output_grad(grad)).to_vec()),
        Op::Average(_) => merge_grads(inputs, output, MergeFn::Average, grad),
        Op::Maximum(_) => merge_grads(inputs, output, MergeFn::Maximum, grad),
        Op::Minimum(_) => merge_grads(inputs, output, MergeFn::Minimum, grad),
        Op::TFOpLambda(o) => match o.computes() {
            TfCompute::Merge(f) => merge_grads(inputs, output, f, grad),
            // The constant gets no gradient; the tensor's, summed where it was broadcast.
            TfCompute::TensorMerge(m) => {
                let (padded, c) = constant_merge_operands(o, inputs, &output.shape)?;
                let x = padded.as_ref().unwrap_or(inputs[0]);
                let (operands, at) = if m.constant_first {
                    ([&c, x], 1)
                } else {
                    ([x, &c], 0)
                };
                let mut grads = merge_grads(&operands, output, m.function, grad);
                LayerGrads {
                    inputs: vec![grads.inputs.swap_remove(at)],
                    params: vec![],
                }
            }
            TfCompute::Concat(axis) => LayerGrads {
                inputs: concat_backward(inputs, &output.shape, axis, &output_grad(grad)),
                params: vec![],
            },
            TfCompute::Activation(a) => input_grads(pre_grad(a, grad, Some(first()))),
            TfCompute::Scalar(op) => LayerGrads {
                inputs: vec![output_grad(grad)
                    .iter()
                    .zip(first().iter())
                    .map(|(&g, &x)| g * op.derivative(x))
                    .collect()],
                params: vec![],
            },
            // TensorFlow registers no gradient for argmax: its input gets none (not zeros), so
            // the layers only before it get no update, as Keras skips variables without a
            // gradient (AdamW's decay included).
            TfCompute::ReduceChannels(ReduceFn::Argmax) => LayerGrads {
                inputs: vec![],
                params: vec![],
            },
            TfCompute::ReduceChannels(f) => {
                let c = x_shape.last().copied().unwrap_or(1).max(1);
                let dy = output_grad(grad);
                let mut dx = vec![0.0f32; first().len()];
                for ((pixel, d), &g) in first().chunks(c).zip(dx.chunks_mut(c)).zip(dy.iter()) {
                    match f {
                        ReduceFn::Mean => d.iter_mut().for_each(|v| *v = g / c as f32),
                        // Handled above: no gradient at all.
                        ReduceFn::Argmax => {}
                        // TensorFlow's reduce_max gradient: shared equally among tied maxima.
                        ReduceFn::Max => {
                            let m = f.apply(pixel);
                            let ties = pixel.iter().filter(|&&v| v == m).count() as f32;
                            for (v, &p) in d.iter_mut().zip(pixel) {
                                if p == m {
                                    *v = g / ties;
                                }
                            }
                        }
                    }
                }
                input_grads(dx)
            }
            TfCompute::Reshape => input_grads(output_grad(grad)),
            TfCompute::ReduceImage(f) => {
                return backward(
                    &o.as_global_pooling(f),
                    inputs,
                    output,
                    saved,
                    params,
                    grad,
                    mode,
                )
            }
            TfCompute::Pad => {
                let pad = Op::ZeroPadding2D(o.as_padding());
                return backward(&pad, inputs, output, saved, params, grad, mode);
            }
            // The gradient goes back to the values read; the others get none.
            TfCompute::Slice => {
                let dy = output_grad(grad);
                let item = &x_shape[1..];
                let [h, w, c] = crate::exec::plan::hwc(item);
                let [rows, cols, channels] = o.slice_window(item);
                let mut dx = vec![0.0f32; x_shape.iter().product()];
                let per_out = (rows.len * cols.len * channels.len).max(1);
                for (d, g) in dx.chunks_mut((h * w * c).max(1)).zip(dy.chunks(per_out)) {
                    let mut g = g.iter();
                    for y in rows.positions() {
                        for x in cols.positions() {
                            let pixel = &mut d[(y * w + x) * c..][..c];
                            for (ch, &v) in channels.positions().zip(g.by_ref()) {
                                pixel[ch] = v;
                            }
                        }
                    }
                }
                input_grads(dx)
            }
            TfCompute::Resize(method) => input_grads(resize_grads(
                &x_shape,
                image_resample(ImageResize::tf(method)),
                output,
                &output_grad(grad),
            )?),
        },
        Op::Activation(o) => input_grads(pre_grad(o.activation, grad, Some(first()))),
        Op::Softmax(o) => {
            let dx = match grad {
                Grad::Logits(dz) => dz,
                Grad::Output(dy) => softmax_axis_backward(&output.data, &dy, &output.shape, o.axis),
            };
            input_grads(dx)
        }
        Op::ReLU(o) => {
            let dy = output_grad(grad);
            let dx = first()
                .iter()
                .zip(&dy)
                .map(|(&v, &g)| {
                    g * relu_layer(
                        v,
                        o.max_value.map(|m| m as f32),
                        o.negative_slope as f32,
                        o.threshold as f32,
                    )
                    .1
                })
                .collect();
            input_grads(dx)
        }
        Op::LeakyReLU(o) => {
            let dy = output_grad(grad);
            let a = o.alpha as f32;
            LayerGrads {
                inputs: vec![first()
                    .iter()
                    .zip(&dy)
                    .map(|(&v, &g)| if v > 0.0 { g } else { a * g })
                    .collect()],
                params: vec![],
            }
        }
        Op::Rescaling(o) => {
            let scale = o.scale as f32;
            input_grads(output_grad(grad).iter().map(|g| g * scale).collect())
        }
        Op::GELU(_) => input_grads(
            output_grad(grad)
                .iter()
                .zip(first())
                .map(|(&g, &x)| g * GELU::derivative(x))
                .collect(),
        ),
        // The statistics are not trainable: no gradient for them.
        Op::Normalization(_) => {
            let var = &params[1];
            let c = var.len().max(1);
            let dx = output_grad(grad)
                .iter()
                .enumerate()
                .map(|(i, &g)| g / Normalization::denominator(var[i % c]))
                .collect();
            LayerGrads {
                inputs: vec![dx],
                params: vec![None, None],
            }
        }
        Op::ELU(o) => {
            let dy = output_grad(grad);
            let a = o.alpha as f32;
            LayerGrads {
                inputs: vec![first()
                    .iter()
                    .zip(&dy)
                    .map(|(&v, &g)| if v > 0.0 { g } else { a * v.exp() * g })
                    .collect()],
                params: vec![],
            }
        }
        Op::Snake(_) => {
            let dy = output_grad(grad);
            let beta = params[0].first().copied().unwrap_or(f32::NAN);
            let mut dbeta = 0.0f64;
            let dx = first()
                .iter()
                .zip(&dy)
                .map(|(&v, &g)| {
                    dbeta += (Snake::beta_derivative(v, beta) * g) as f64;
                    Snake::derivative(v, beta) * g
                })
                .collect();
            LayerGrads {
                inputs: vec![dx],
                params: vec![Some(vec![dbeta as f32])],
            }
        }
        Op::PReLU(_) => {
            let dy = output_grad(grad);
            let alpha = &params[0];
            let len = alpha.len().max(1);
            let mut dalpha = vec![0.0f32; alpha.len()];
            let dx = first()
                .iter()
                .zip(&dy)
                .enumerate()
                .map(|(i, (&v, &g))| {
                    if v > 0.0 {
                        g
                    } else {
                        dalpha[i % len] += v.min(0.0) * g;
                        alpha[i % len] * g
                    }
                })
                .collect();
            LayerGrads {
                inputs: vec![dx],
                params: vec![Some(dalpha)],
            }
        }
        Op::Permute(o) => {
            let dy = output_grad(grad);
            let item = permute_index(&x_shape[1..], &o.source_axes());
            let per = item.len().max(1);
            let mut dx = vec![0.0f32; dy.len()];
            for (i, g) in dy.iter().enumerate() {
                dx[i / per * per + item[i % per]] = *g;
            }
            input_grads(dx)
        }
        Op::Flatten(_) | Op::Reshape(_) | Op::GaussianNoise(_) => input_grads(output_grad(grad)),
        Op::Lambda(o) => match &o.body {
            // The slice's gradient goes back to its channels; the others get none.
            LambdaBody::SliceTensor { start, stop, .. } => {
                let dy = output_grad(grad);
                let c = x_shape.last().copied().unwrap_or(1).max(1);
                let channels = *start as usize..*stop as usize;
                let mut dx = vec![0.0f32; x_shape.iter().product()];
                for (pixel, g) in dx.chunks_mut(c).zip(dy.chunks(channels.len().max(1))) {
                    pixel[channels.clone()].copy_from_slice(g);
                }
                input_grads(dx)
            }
            LambdaBody::ExpandDims { .. } => input_grads(output_grad(grad)),
            LambdaBody::Resize {
                method,
                align_corners,
                ..
            } => {
                let resize = ImageResize::new(*method, *align_corners);
                input_grads(resize_grads(
                    &x_shape,
                    image_resample(resize),
                    output,
                    &output_grad(grad),
                )?)
            }
            // Each input channel sums the gradients of its repeats.
            LambdaBody::RepeatElements { repeats, .. } => {
                let dy = output_grad(grad);
                let repeats = (*repeats as usize).max(1);
                let dx = dy.chunks(repeats).map(|group| group.iter().sum()).collect();
                input_grads(dx)
            }
            LambdaBody::Arithmetic(a) => input_grads(
                output_grad(grad)
                    .iter()
                    .zip(first().iter())
                    .map(|(&g, &v)| g * a.derivative(v))
                    .collect(),
            ),
            // d/dx[first] = 1, d/dx[second] = scale.
            LambdaBody::ScaledAdd {
                first: i, scale, ..
            } => {
                let [da, db] = CustomScaleLayer { scale: *scale }.gradients(output_grad(grad));
                input_grads_of(if *i == 0 { vec![da, db] } else { vec![db, da] })
            }
        },
        Op::Dropout(_) | Op::SpatialDropout2D(_) | Op::GaussianDropout(_) | Op::FixedDropout(_) => {
            let dy = output_grad(grad);
            let dx = match saved.aux.first() {
                Some(mask) => dy.iter().zip(mask).map(|(g, m)| g * m).collect(),
                None => dy,
            };
            input_grads(dx)
        }
        Op::GlobalAveragePooling2D(_) => LayerGrads {
            inputs: vec![global_average_backward(
                &output_grad(grad),
                spatial(&x_shape)?,
            )],
            params: vec![],
        },
        Op::GlobalMaxPooling2D(_) => {
            let (_, dims, c) = spatial(&x_shape)?;
            let per_item = dims.iter().product::<usize>() * c;
            let dy = output_grad(grad);
            let mut dx = vec![0.0f32; first().len()];
            // tf.reduce_max's gradient: shared equally by every value equal to the maximum.
            let mut ties = vec![0usize; output.data.len()];
            for (i, &v) in first().iter().enumerate() {
                let o = i / per_item.max(1) * c + i % c;
                if v == output.data[o] {
                    ties[o] += 1;
                }
            }
            for (i, &v) in first().iter().enumerate() {
                let o = i / per_item.max(1) * c + i % c;
                if v == output.data[o] {
                    dx[i] = dy[o] / ties[o] as f32;
                }
            }
            input_grads(dx)
        }
        Op::BatchNormalization(_) => {
            let dy = output_grad(grad);
            let c = channels(&output.shape);
            let (mean, inv) = (&saved.aux[0], &saved.aux[1]);
            let gamma = &params[0];
            let xhat = |i: usize, v: f32| (v - mean[i % c]) * inv[i % c];
            let mut dgamma = vec![0.0f32; c];
            let mut dbeta = vec![0.0f32; c];
            for (i, (&v, &g)) in first().iter().zip(&dy).enumerate() {
                dgamma[i % c] += g * xhat(i, v);
                dbeta[i % c] += g;
            }
            let batch_stats = mode.training && mode.layer_trainable;
            let dx = if batch_stats {
                let count = (first().len() / c.max(1)) as f32;
                first()
                    .iter()
                    .zip(&dy)
                    .enumerate()
                    .map(|(i, (&v, &g))| {
                        let ch = i % c;
                        gamma[ch] * inv[ch] / count
                            * (count * g - dbeta[ch] - xhat(i, v) * dgamma[ch])
                    })
                    .collect()
            } else {
                dy.iter()
                    .enumerate()
                    .map(|(i, &g)| g * gamma[i % c] * inv[i % c])
                    .collect()
            };
            LayerGrads {
                inputs: vec![dx],
                params: vec![Some(dgamma), Some(dbeta), None, None],
            }
        }
        Op::GroupNormalization(_) | Op::LayerNormalization(_) => {
            let layout = norm_layout(op, &output.shape)?;
            let (dx, dgamma, dbeta) = normalize_backward(
                layout,
                &params[0],
                first(),
                &saved.aux[0],
                &output_grad(grad),
            );
            LayerGrads {
                inputs: vec![dx],
                params: vec![Some(dgamma), Some(dbeta)],
            }
        }
    })
    .map(|mut g| {
        // Layers without weight gradients still report one entry per slot.
        if g.params.is_empty() {
            g.params = none(params.len());
        }
        g
    })
}

/// For one item of shape `in_shape`, the input index of each output index of a permutation
/// whose output axis `k` is input axis `source[k]`.
fn permute_index(in_shape: &[usize], source: &[usize]) -> Vec<usize> {
    let rank = in_shape.len();
    let mut strides = vec![1usize; rank];
    for a in (0..rank.saturating_sub(1)).rev() {
        strides[a] = strides[a + 1] * in_shape[a + 1];
    }
    let out_dims: Vec<usize> = source.iter().map(|&a| in_shape[a]).collect();
    let total: usize = in_shape.iter().product();
    (0..total)
        .map(|mut flat| {
            let mut index = 0;
            for k in (0..out_dims.len()).rev() {
                let i = flat % out_dims[k].max(1);
                flat /= out_dims[k].max(1);
                index += i * strides[source[k]];
            }
            index
        })
        .collect()
}

/// The mean over every pixel (or voxel) per item and channel.
fn global_average_forward(x: &[f32], (n, dims, c): (usize, [usize; 3], usize)) -> Vec<f32> {
    let pixels = dims.iter().product::<usize>().max(1);
    let mut y = vec![0.0f32; n * c];
    for (i, px) in x.chunks(c.max(1)).enumerate() {
        let item = i / pixels;
        for (ch, v) in px.iter().enumerate() {
            y[item * c + ch] += v / pixels as f32;
        }
    }
    y
}

fn global_average_backward(dy: &[f32], (n, dims, c): (usize, [usize; 3], usize)) -> Vec<f32> {
    let pixels = dims.iter().product::<usize>().max(1);
    (0..n * pixels * c)
        .map(|i| dy[i / (pixels * c) * c + i % c] / pixels as f32)
        .collect()
}

fn channels(shape: &[usize]) -> usize {
    shape.last().copied().unwrap_or(1).max(1)
}

fn add_bias(z: &mut [f32], bias: &[f32]) {
    if bias.is_empty() {
        return;
    }
    for px in z.chunks_mut(bias.len()) {
        for (v, b) in px.iter_mut().zip(bias) {
            *v += b;
        }
    }
}

/// Applies a fused activation, keeping the pre-activation for backward when it is needed.
fn finish_activation(
    activation: ActivationFn,
    z: Vec<f32>,
    out_shape: &[usize],
    saved: &mut Saved,
) -> Vec<f32> {
    if activation == ActivationFn::Linear {
        return z;
    }
    let y = activations::apply(activation, &z, channels(out_shape));
    if activations::keeps_pre_activation(activation) {
        saved.pre = Some(z);
    }
    y
}

/// A convolution's window per axis from its geometry rule.
type ConvWindow<'a> = Box<dyn Fn(usize, usize, usize) -> WindowGeometry + 'a>;

fn conv_window<'a>(
    geometry: impl Fn(usize, usize, usize) -> WindowGeometry + 'a,
) -> ConvWindow<'a> {
    Box::new(geometry)
}

/// A tensor's batch, spatial extent `[depth, height, width]` (depth 1 for an image) and
/// channels.
fn spatial(shape: &[usize]) -> Result<(usize, [usize; 3], usize), Unsupported> {
    match shape {
        &[n, h, w, c] => Ok((n, [1, h, w], c)),
        &[n, d, h, w, c] => Ok((n, [d, h, w], c)),
        other => Err(Unsupported(format!(
            "training runs this layer on images (N, H, W, C) or volumes (N, D, H, W, C), not \
             {other:?}"
        ))),
    }
}

/// The window along each spatial axis `[depth, height, width]`: the op's own axes for a volume;
/// for an image a depth of one tap and the op's axes 0 and 1.
fn axes_geometry(
    x_dims: [usize; 3],
    out_dims: [usize; 3],
    volume: bool,
    window: &ConvWindow,
) -> [WindowGeometry; 3] {
    if volume {
        [0, 1, 2].map(|k| window(k, x_dims[k], out_dims[k]))
    } else {
        let one = WindowGeometry {
            kernel: 1,
            stride: 1,
            dilation: 1,
            pad_before: 0,
            pad_after: 0,
        };
        [
            one,
            window(0, x_dims[1], out_dims[1]),
            window(1, x_dims[2], out_dims[2]),
        ]
    }
}

fn conv_map(
    x_shape: &[usize],
    out_shape: &[usize],
    window: &ConvWindow,
    channels: [usize; 2],
) -> Result<PatchMap, Unsupported> {
    let (n, dims, c) = spatial(x_shape)?;
    let (_, out_dims, _) = spatial(out_shape)?;
    let g = axes_geometry(dims, out_dims, x_shape.len() == 5, window);
    Ok(PatchMap {
        batch: n,
        grid: out_dims,
        kernel: g.map(|a| a.kernel),
        stride: g.map(|a| a.stride),
        dilation: g.map(|a| a.dilation),
        offset: g.map(|a| a.pad_before),
        image: [dims[0], dims[1], dims[2], c],
        channels,
    })
}

/// Patch rows per product: a tile of at most this many floats (4 MiB) stays in cache between
/// its gather and its product, and bounds the memory of a convolution's patches.
const TILE_FLOATS: usize = 1 << 20;

fn tile_rows(row_len: usize, rows: usize) -> usize {
    (TILE_FLOATS / row_len.max(1)).clamp(1, rows.max(1))
}

/// `[(a, b, i), o]` from a kernel stored `[kh, kw, o_total, i_total]`-style: element
/// `(tap, i, o)` read at `kernel[(tap * rows + r(i)) * cols + c(o)]`. Used to swap a kernel's
/// last two axes (one group's block of them).
fn swap_last_axes(
    kernel: &[f32],
    taps: usize,
    (rows, cols): (usize, usize),
    (row0, row_n): (usize, usize),
    (col0, col_n): (usize, usize),
) -> Vec<f32> {
    let mut out = vec![0.0f32; taps * col_n * row_n];
    for t in 0..taps {
        for i in 0..col_n {
            for o in 0..row_n {
                out[(t * col_n + i) * row_n + o] = kernel[(t * rows + row0 + o) * cols + col0 + i];
            }
        }
    }
    out
}

/// How training computes a convolution's products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConvPath {
    /// Patch matrices and GEMMs: any convolution.
    Im2col,
    /// Winograd's F(2x2, 3x3) ([`winograd`]) where the layer qualifies, else [`ConvPath::Im2col`].
    Winograd,
}

impl ConvPath {
    /// Winograd unless `UNETC_WINOGRAD=0` (as for inference; to compare the two).
    fn chosen() -> ConvPath {
        static PATH: std::sync::OnceLock<ConvPath> = std::sync::OnceLock::new();
        *PATH.get_or_init(|| {
            if std::env::var_os("UNETC_WINOGRAD").is_some_and(|v| v == "0") {
                ConvPath::Im2col
            } else {
                ConvPath::Winograd
            }
        })
    }
}

/// The convolution as Winograd's F(2x2, 3x3) sees it, if it is one that code computes: an
/// image, one group, a 3x3 window of stride 1 without dilation on both axes.
fn winograd_geometry(
    path: ConvPath,
    x_shape: &[usize],
    out_shape: &[usize],
    window: &ConvWindow,
    groups: usize,
) -> Option<winograd::Geometry> {
    let (&[_, h, w, c], &[_, oh, ow, f], 1, ConvPath::Winograd) =
        (x_shape, out_shape, groups, path)
    else {
        return None;
    };
    let (rows, cols) = (window(0, h, oh), window(1, w, ow));
    let fits = |a: &WindowGeometry| a.kernel == 3 && a.stride == 1 && a.dilation == 1;
    (fits(&rows) && fits(&cols)).then_some(winograd::Geometry {
        h,
        w,
        c,
        oh,
        ow,
        f,
        top: rows.pad_before,
        left: cols.pad_before,
    })
}

/// A grouped convolution (groups = 1 is a plain one; groups = channels with kernel
/// `[kh, kw, c, dm]` is depthwise, whose layout is the grouped `[kh, kw, 1, c * dm]`).
fn conv_forward(
    x_shape: &[usize],
    x: &[f32],
    out_shape: &[usize],
    window: ConvWindow,
    groups: usize,
    kernel: &[f32],
    bias: Option<&[f32]>,
) -> Result<Vec<f32>, Unsupported> {
    profile::time(
        || format!("· convolution {x_shape:?} -> {out_shape:?}"),
        || {
            conv_forward_by(
                ConvPath::chosen(),
                x_shape,
                x,
                out_shape,
                window,
                groups,
                kernel,
                bias,
            )
        },
    )
}

#[allow(clippy::too_many_arguments)]
fn conv_forward_by(
    path: ConvPath,
    x_shape: &[usize],
    x: &[f32],
    out_shape: &[usize],
    window: ConvWindow,
    groups: usize,
    kernel: &[f32],
    bias: Option<&[f32]>,
) -> Result<Vec<f32>, Unsupported> {
    let mut z = vec![0.0f32; out_shape.iter().product()];
    let geo = winograd_geometry(path, x_shape, out_shape, &window, groups)
        .filter(|geo| winograd::repays(geo.c));
    let u = geo.and_then(|geo| winograd::transform_kernel(kernel, geo.c, geo.f));
    if let (Some(geo), Some(u)) = (geo, u) {
        let ops = winograd::Ops {
            u: &u,
            bias,
            activation: ActivationFn::Linear,
            isa: Isa::current(),
        };
        let parts = [Strided::dense(x, [geo.h, geo.w, geo.c])];
        winograd::conv2d(&parts, geo, ops, &mut z, x_shape[0]);
        return Ok(z);
    }
    let c = spatial(x_shape)?.2;
    let f = channels(out_shape);
    let (cg, fg) = (c / groups, f / groups);
    for g in 0..groups {
        let map = conv_map(x_shape, out_shape, &window, [g * cg, cg])?;
        let (m, k) = (map.rows(), map.row_len());
        let tile = tile_rows(k, m);
        let mut patches = vec![0.0f32; tile * k];
        for r0 in (0..m).step_by(tile) {
            let rows = tile.min(m - r0);
            map.gather_rows(x, r0, &mut patches[..rows * k]);
            gemm(
                (rows, fg, k),
                &patches,
                (k, 1),
                &kernel[g * fg..],
                (f, 1),
                &mut z[r0 * f + g * fg..],
                (f, 1),
                false,
            );
        }
    }
    if let Some(b) = bias {
        add_bias(&mut z, b);
    }
    Ok(z)
}

/// (input gradient, kernel gradient, bias gradient) of [`conv_forward`].
#[allow(clippy::type_complexity)]
fn conv_backward(
    x_shape: &[usize],
    x: &[f32],
    out_shape: &[usize],
    window: ConvWindow,
    groups: usize,
    kernel: &[f32],
    dz: &[f32],
) -> Result<(Vec<f32>, Vec<f32>, Vec<f32>), Unsupported> {
    conv_backward_by(
        ConvPath::chosen(),
        x_shape,
        x,
        out_shape,
        window,
        groups,
        kernel,
        dz,
    )
}

#[allow(clippy::type_complexity, clippy::too_many_arguments)]
fn conv_backward_by(
    path: ConvPath,
    x_shape: &[usize],
    x: &[f32],
    out_shape: &[usize],
    window: ConvWindow,
    groups: usize,
    kernel: &[f32],
    dz: &[f32],
) -> Result<(Vec<f32>, Vec<f32>, Vec<f32>), Unsupported> {
    let c = spatial(x_shape)?.2;
    let f = channels(out_shape);
    let (cg, fg) = (c / groups, f / groups);
    let batch = x_shape.first().copied().unwrap_or(0);
    let geo = winograd_geometry(path, x_shape, out_shape, &window, groups);
    let shapes = || format!("{x_shape:?} -> {out_shape:?}");
    // Input gradient: a convolution of dz with the kernel turned by 180°, channels swapped.
    let data_geo = geo.filter(|geo| winograd::repays(geo.f));
    let data = data_geo.and_then(|geo| {
        let back = geo.input_gradient()?;
        let u = winograd::transform_kernel_for_input_gradient(kernel, geo.c, geo.f)?;
        Some((back, u))
    });
    let dx = profile::time(
        || format!("· input gradient {}", shapes()),
        || -> Result<Vec<f32>, Unsupported> {
            let mut dx = vec![0.0f32; x.len()];
            if let Some((back, u)) = data {
                let ops = winograd::Ops {
                    u: &u,
                    bias: None,
                    activation: ActivationFn::Linear,
                    isa: Isa::current(),
                };
                let parts = [Strided::dense(dz, [back.h, back.w, back.c])];
                winograd::conv2d(&parts, back, ops, &mut dx, batch);
                return Ok(dx);
            }
            for g in 0..groups {
                let map = conv_map(x_shape, out_shape, &window, [g * cg, cg])?;
                let taps = map.taps();
                // Per input pixel, the dz values of the outputs that read it, times the kernel
                // with its last two axes swapped.
                let swapped = swap_last_axes(kernel, taps, (cg, f), (0, cg), (g * fg, fg));
                let pixels = x.len() / c.max(1);
                let row_len = taps * fg;
                let tile = tile_rows(row_len, pixels);
                let mut rows_buf = vec![0.0f32; tile * row_len];
                for p0 in (0..pixels).step_by(tile) {
                    let n = tile.min(pixels - p0);
                    map.gather_reverse(dz, f, [g * fg, fg], p0, &mut rows_buf[..n * row_len]);
                    gemm(
                        (n, cg, row_len),
                        &rows_buf,
                        (row_len, 1),
                        &swapped,
                        (cg, 1),
                        &mut dx[p0 * c + g * cg..],
                        (c, 1),
                        true,
                    );
                }
            }
            Ok(dx)
        },
    )?;
    let weights_geo = geo.filter(|geo| winograd::kernel_gradient_repays(geo, batch));
    let dk = profile::time(
        || format!("· kernel gradient {}", shapes()),
        || -> Result<Vec<f32>, Unsupported> {
            if let Some(geo) = weights_geo {
                return Ok(winograd::kernel_gradient(x, dz, geo, batch, Isa::current()));
            }
            let mut dk = vec![0.0f32; kernel.len()];
            for g in 0..groups {
                let map = conv_map(x_shape, out_shape, &window, [g * cg, cg])?;
                let (m, k) = (map.rows(), map.row_len());
                // patches^T x dz, tile by tile.
                let tile = tile_rows(k, m);
                let mut patches = vec![0.0f32; tile * k];
                for r0 in (0..m).step_by(tile) {
                    let rows = tile.min(m - r0);
                    map.gather_rows(x, r0, &mut patches[..rows * k]);
                    gemm(
                        (k, fg, rows),
                        &patches,
                        (1, k),
                        &dz[r0 * f + g * fg..],
                        (f, 1),
                        &mut dk[g * fg..],
                        (f, 1),
                        true,
                    );
                }
            }
            Ok(dk)
        },
    )?;
    let mut db = vec![0.0f32; f];
    add_column_sums(dz, f, &mut db);
    Ok((dx, dk, db))
}

/// A transposed convolution's patch map: the output is the image, the input the row grid.
/// `geometry(axis, in, out)` is the op's own rule; images get a depth of one tap.
fn transpose_map(
    geometry: &dyn Fn(usize, usize, usize) -> crate::ir::ops::TransposeGeometry,
    dilation_is_one: bool,
    x_shape: &[usize],
    out_shape: &[usize],
) -> Result<PatchMap, Unsupported> {
    let (n, dims, _) = spatial(x_shape)?;
    let (_, out_dims, f) = spatial(out_shape)?;
    if !dilation_is_one {
        return Err(Unsupported(
            "transposed convolutions with dilation_rate other than 1 do not train yet".into(),
        ));
    }
    let volume = x_shape.len() == 5;
    let axis = |k: usize| {
        if volume {
            Some(geometry(k, dims[k], out_dims[k]))
        } else if k == 0 {
            None
        } else {
            Some(geometry(k - 1, dims[k], out_dims[k]))
        }
    };
    let g = [axis(0), axis(1), axis(2)];
    Ok(PatchMap {
        batch: n,
        grid: dims,
        kernel: g.map(|a| a.map_or(1, |a| a.kernel)),
        stride: g.map(|a| a.map_or(1, |a| a.stride)),
        dilation: [1, 1, 1],
        offset: g.map(|a| a.map_or(0, |a| a.crop_before)),
        image: [out_dims[0], out_dims[1], out_dims[2], f],
        channels: [0, f],
    })
}

/// A transposed convolution: per output pixel, the input values whose taps reach it, times the
/// kernel `[taps, out, in]` with its last two axes swapped.
fn transpose_forward(map: &PatchMap, x: &[f32], kernel: &[f32], c: usize) -> Vec<f32> {
    let f = map.image[3];
    let taps = map.taps();
    let swapped = swap_last_axes(kernel, taps, (f, c), (0, f), (0, c));
    let pixels = map.batch * map.image[..3].iter().product::<usize>();
    let row_len = taps * c;
    let tile = tile_rows(row_len, pixels);
    let mut rows_buf = vec![0.0f32; tile * row_len];
    let mut z = vec![0.0f32; pixels * f];
    for p0 in (0..pixels).step_by(tile) {
        let n = tile.min(pixels - p0);
        map.gather_reverse(x, c, [0, c], p0, &mut rows_buf[..n * row_len]);
        gemm(
            (n, f, row_len),
            &rows_buf,
            (row_len, 1),
            &swapped,
            (f, 1),
            &mut z[p0 * f..],
            (f, 1),
            false,
        );
    }
    z
}

/// (input gradient, kernel gradient, bias gradient) of [`transpose_forward`]: the kernel
/// `[taps, out, in]` is the `[k, in]` matrix of output patches.
#[allow(clippy::type_complexity)]
fn transpose_backward(
    map: &PatchMap,
    x: &[f32],
    kernel: &[f32],
    c: usize,
    dz: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let rows = map.rows();
    let k = map.row_len();
    let mut dx = vec![0.0f32; rows * c];
    let mut dk = vec![0.0f32; k * c];
    let tile = tile_rows(k, rows);
    let mut patches = vec![0.0f32; tile * k];
    for r0 in (0..rows).step_by(tile) {
        let m = tile.min(rows - r0);
        map.gather_rows(dz, r0, &mut patches[..m * k]);
        gemm(
            (m, c, k),
            &patches,
            (k, 1),
            kernel,
            (c, 1),
            &mut dx[r0 * c..],
            (c, 1),
            false,
        );
        gemm(
            (k, c, m),
            &patches,
            (1, k),
            &x[r0 * c..],
            (c, 1),
            &mut dk,
            (c, 1),
            true,
        );
    }
    let mut db = vec![0.0f32; map.image[3]];
    add_column_sums(dz, db.len(), &mut db);
    (dx, dk, db)
}

/// A layer that has only an input gradient.
/// A Dense's gradients on rows of `n_in` features: `(dx, dkernel, dbias)` from `dz` (the
/// gradient at its output before any activation).
pub(crate) fn dense_backward(
    x: &[f32],
    n_in: usize,
    kernel: &[f32],
    dz: &[f32],
    units: usize,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let rows = x.len() / n_in.max(1);
    let mut dx = vec![0.0f32; rows * n_in];
    gemm(
        (rows, n_in, units),
        dz,
        (units, 1),
        kernel,
        (1, units),
        &mut dx,
        (n_in, 1),
        false,
    );
    let mut dk = vec![0.0f32; n_in * units];
    gemm(
        (n_in, units, rows),
        x,
        (1, n_in),
        dz,
        (units, 1),
        &mut dk,
        (units, 1),
        false,
    );
    let mut db = vec![0.0f32; units];
    add_column_sums(dz, units, &mut db);
    (dx, dk, db)
}

/// The inputs' shapes per item (without the batch), as the ops' shape rules take them.
fn item_shapes(inputs: &[&Tensor]) -> Vec<Vec<i64>> {
    inputs
        .iter()
        .map(|t| t.shape.iter().skip(1).map(|&d| d as i64).collect())
        .collect()
}

fn input_grads(dx: Vec<f32>) -> LayerGrads {
    input_grads_of(vec![dx])
}

/// The gradients of several inputs, in input order; no parameters.
fn input_grads_of(inputs: Vec<Vec<f32>>) -> LayerGrads {
    LayerGrads {
        inputs,
        params: vec![],
    }
}

/// CustomScaleLayer's forward, and its Lambda form's: `inputs[a] + inputs[b] * scale`.
fn scaled_add_forward(
    op: &CustomScaleLayer,
    inputs: &[&Tensor],
    [a, b]: [usize; 2],
    len: usize,
) -> Vec<f32> {
    let data = |k: usize| inputs.get(k).map(|t| t.data.as_slice()).unwrap_or(&[]);
    let mut out = vec![0.0; len];
    op.apply_all(data(a), data(b), &mut out);
    out
}

/// Max or average pooling of `x` with the op's window rule `geometry`.
fn pool_output(
    x: Option<&Tensor>,
    out_shape: &[usize],
    geometry: impl Fn(usize, usize, usize) -> WindowGeometry,
    pool: Pool,
) -> Result<Vec<f32>, Unsupported> {
    let (windows, shape) = pool_windows(x, out_shape, geometry)?;
    Ok(pool_forward(
        x.map_or(&[][..], |t| &t.data),
        shape,
        out_shape,
        windows,
        pool,
    ))
}

/// The input gradient of [`pool_output`].
fn pool_grads(
    x: Option<&Tensor>,
    output: &Tensor,
    geometry: impl Fn(usize, usize, usize) -> WindowGeometry,
    pool: Pool,
    dy: &[f32],
) -> Result<Vec<f32>, Unsupported> {
    let (windows, shape) = pool_windows(x, &output.shape, geometry)?;
    Ok(pool_backward(
        x.map_or(&[][..], |t| &t.data),
        shape,
        &output.shape,
        windows,
        pool,
        dy,
    ))
}

/// A resize of `x` to `out_shape` per spatial axis (up-sampling, Resizing, tf.image.resize).
fn resize_output(
    x: Option<&Tensor>,
    resample: Resample,
    out_shape: &[usize],
) -> Result<Vec<f32>, Unsupported> {
    let (data, shape) = x.map_or((&[][..], &[][..]), |t| (&t.data[..], &t.shape[..]));
    let mut y = vec![0.0f32; out_shape.iter().product()];
    for_each_resize_tap(resample, spatial(shape)?, out_shape, |src, dst, wt| {
        y[dst] += wt * data[src]
    })?;
    Ok(y)
}

/// The input gradient of [`resize_output`].
fn resize_grads(
    x_shape: &[usize],
    resample: Resample,
    output: &Tensor,
    dy: &[f32],
) -> Result<Vec<f32>, Unsupported> {
    let mut dx = vec![0.0f32; x_shape.iter().product()];
    for_each_resize_tap(
        resample,
        spatial(x_shape)?,
        &output.shape,
        |src, dst, wt| dx[src] += wt * dy[dst],
    )?;
    Ok(dx)
}

/// A crop (`shift` forward) or zero padding (`shift` back) of `x`, per spatial axis.
fn window_output(
    x: Option<&Tensor>,
    shift: [i64; 3],
    mode: PadMode,
    out_shape: &[usize],
) -> Result<Vec<f32>, Unsupported> {
    let (data, shape) = x.map_or((&[][..], &[][..]), |t| (&t.data[..], &t.shape[..]));
    let mut y = vec![0.0f32; out_shape.iter().product()];
    window_copy(spatial(shape)?, out_shape, shift, mode, |s, d| {
        y[d] = data[s]
    })?;
    Ok(y)
}

/// The input gradient of [`window_output`].
fn window_grads(
    x_shape: &[usize],
    shift: [i64; 3],
    mode: PadMode,
    output: &Tensor,
    dy: &[f32],
) -> Result<Vec<f32>, Unsupported> {
    let mut dx = vec![0.0f32; x_shape.iter().product()];
    // Reflect and replicate padding read an input pixel more than once: its gradients add up.
    window_copy(spatial(x_shape)?, &output.shape, shift, mode, |s, d| {
        dx[s] += dy[d]
    })?;
    Ok(dx)
}

#[derive(Clone, Copy, PartialEq)]
enum Pool {
    /// The gradient goes to the first largest value of a window, as TF's MaxPoolGrad (2-D).
    Max,
    /// The gradient goes to every largest value of a window, as TF's MaxPool3DGrad.
    MaxEveryTie,
    Average,
}

/// A pooling's window per spatial axis (images: one tap of depth) and the input's layout.
#[allow(clippy::type_complexity)]
fn pool_windows(
    x: Option<&Tensor>,
    out_shape: &[usize],
    geometry: impl Fn(usize, usize, usize) -> WindowGeometry,
) -> Result<([WindowGeometry; 3], (usize, [usize; 3], usize)), Unsupported> {
    let shape = x.map(|t| t.shape.clone()).unwrap_or_default();
    let (n, dims, c) = spatial(&shape)?;
    let (_, out_dims, _) = spatial(out_shape)?;
    let window: ConvWindow = Box::new(geometry);
    Ok((
        axes_geometry(dims, out_dims, shape.len() == 5, &window),
        (n, dims, c),
    ))
}

/// For each output value, the input indices of its window that lie inside the input (padding
/// is skipped: max pooling ignores it and TF's average divides by the values inside).
fn for_each_window(
    (n, [d, h, w], c): (usize, [usize; 3], usize),
    out_shape: &[usize],
    windows: [WindowGeometry; 3],
    mut visit: impl FnMut(usize, &mut dyn Iterator<Item = usize>),
) {
    let Ok((_, [od, oh, ow], _)) = spatial(out_shape) else {
        return;
    };
    let dims = [d, h, w];
    for item in 0..n {
        for oz in 0..od {
            for oy in 0..oh {
                for ox in 0..ow {
                    let start = [oz, oy, ox]
                        .iter()
                        .zip(&windows)
                        .map(|(&o, g)| (o * g.stride) as isize - g.pad_before as isize)
                        .collect::<Vec<_>>();
                    for ch in 0..c {
                        let o = (((item * od + oz) * oh + oy) * ow + ox) * c + ch;
                        let (k0, k1, k2) =
                            (windows[0].kernel, windows[1].kernel, windows[2].kernel);
                        let start = &start;
                        let mut taps = (0..k0 * k1 * k2).filter_map(move |t| {
                            let tap = [t / (k1 * k2), t / k2 % k1, t % k2];
                            let mut at = [0usize; 3];
                            for a in 0..3 {
                                let p = start[a] + tap[a] as isize;
                                if p < 0 || p >= dims[a] as isize {
                                    return None;
                                }
                                at[a] = p as usize;
                            }
                            Some((((item * d + at[0]) * h + at[1]) * w + at[2]) * c + ch)
                        });
                        visit(o, &mut taps);
                    }
                }
            }
        }
    }
}

fn pool_forward(
    x: &[f32],
    shape: (usize, [usize; 3], usize),
    out_shape: &[usize],
    windows: [WindowGeometry; 3],
    pool: Pool,
) -> Vec<f32> {
    let mut y = vec![0.0f32; out_shape.iter().product()];
    for_each_window(shape, out_shape, windows, |o, taps| {
        y[o] = match pool {
            Pool::Max | Pool::MaxEveryTie => taps.map(|i| x[i]).fold(f32::NEG_INFINITY, f32::max),
            Pool::Average => {
                let (sum, count) = taps.fold((0.0f32, 0usize), |(s, n), i| (s + x[i], n + 1));
                sum / count.max(1) as f32
            }
        }
    });
    y
}

fn pool_backward(
    x: &[f32],
    shape: (usize, [usize; 3], usize),
    out_shape: &[usize],
    windows: [WindowGeometry; 3],
    pool: Pool,
    dy: &[f32],
) -> Vec<f32> {
    // Sized by the shape: average pooling's input values are freed before backward.
    let (n, dims, c) = shape;
    let mut dx = vec![0.0f32; n * dims.iter().product::<usize>() * c];
    for_each_window(shape, out_shape, windows, |o, taps| match pool {
        // The first largest value takes the gradient, as TF's MaxPoolGrad.
        Pool::Max => {
            let mut best: Option<usize> = None;
            for i in taps {
                if best.is_none_or(|b| x[i] > x[b]) {
                    best = Some(i);
                }
            }
            if let Some(b) = best {
                dx[b] += dy[o];
            }
        }
        Pool::MaxEveryTie => {
            let taps: Vec<usize> = taps.collect();
            let best = taps.iter().map(|&i| x[i]).fold(f32::NEG_INFINITY, f32::max);
            for i in taps {
                if x[i] == best {
                    dx[i] += dy[o];
                }
            }
        }
        Pool::Average => {
            let taps: Vec<usize> = taps.collect();
            let share = dy[o] / taps.len().max(1) as f32;
            for i in taps {
                dx[i] += share;
            }
        }
    });
    dx
}

/// How an up-sampling reads its input: linear (else nearest) per spatial axis `[depth,
/// height, width]`, and whether the linear axes align corners (else half-pixel centres).
#[derive(Clone, Copy)]
struct Resample {
    linear: [bool; 3],
    align_corners: bool,
}

fn image_resample(resize: ImageResize) -> Resample {
    let linear = match resize.interpolation {
        Interpolation::Nearest => false,
        Interpolation::Bilinear => true,
    };
    Resample {
        linear: [false, linear, linear],
        align_corners: resize.align_corners,
    }
}

fn volume_resample(op: &UpSampling3D) -> Resample {
    let linear = match op.interpolation {
        VolumeInterpolation::Nearest => false,
        VolumeInterpolation::Trilinear => true,
    };
    Resample {
        linear: [linear; 3],
        align_corners: op.align_corners,
    }
}

/// Each (input index, output index, weight) of a resize from the input's to the output's size
/// per spatial axis `[depth, height, width]`: nearest copies, linear axes as TF's resize with
/// half-pixel centres, or with aligned corners where `resample` says so (`ResizeAxis`).
fn for_each_resize_tap(
    resample: Resample,
    (n, [d, h, w], c): (usize, [usize; 3], usize),
    out_shape: &[usize],
    mut tap: impl FnMut(usize, usize, f32),
) -> Result<(), Unsupported> {
    let (_, [od, oh, ow], _) = spatial(out_shape)?;
    let axes = [(d, od), (h, oh), (w, ow)]
        .map(|(len, out)| ResizeAxis::new(len, out, resample.align_corners));
    // Per output coordinate along axis `a`: (low, high, fraction towards high).
    let axis = |o: usize, a: usize| {
        if resample.linear[a] {
            axes[a].linear(o)
        } else {
            let i = axes[a].nearest(o);
            (i, i, 0.0f32)
        }
    };
    if d == 0 || h == 0 || w == 0 {
        return Ok(());
    }
    for item in 0..n {
        for oz in 0..od {
            let (z0, z1, dz) = axis(oz, 0);
            for oy in 0..oh {
                let (y0, y1, dy) = axis(oy, 1);
                for ox in 0..ow {
                    let (x0, x1, dx) = axis(ox, 2);
                    let out = (((item * od + oz) * oh + oy) * ow + ox) * c;
                    for k in 0..8 {
                        let (zz, wz) = if k & 4 == 0 { (z0, 1.0 - dz) } else { (z1, dz) };
                        let (yy, wy) = if k & 2 == 0 { (y0, 1.0 - dy) } else { (y1, dy) };
                        let (xx, wx) = if k & 1 == 0 { (x0, 1.0 - dx) } else { (x1, dx) };
                        let wt = wz * wy * wx;
                        if wt == 0.0 {
                            continue;
                        }
                        let src = (((item * d + zz) * h + yy) * w + xx) * c;
                        for ch in 0..c {
                            tap(src + ch, out + ch, wt);
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// Copies between an input and an output window of it: output pixel `p` is input pixel
/// `p + shift` per spatial axis `[depth, height, width]` (a crop shifts forward, a padding
/// back); pixels outside the input are skipped. `copy(input index, output index)`.
fn window_copy(
    (n, [d, h, w], c): (usize, [usize; 3], usize),
    out_shape: &[usize],
    shift: [i64; 3],
    mode: PadMode,
    mut copy: impl FnMut(usize, usize),
) -> Result<(), Unsupported> {
    let (_, [od, oh, ow], _) = spatial(out_shape)?;
    let inside = |p: i64, len: usize| mode.source(p, len);
    for item in 0..n {
        for oz in 0..od {
            let Some(z) = inside(oz as i64 + shift[0], d) else {
                continue;
            };
            for oy in 0..oh {
                let Some(y) = inside(oy as i64 + shift[1], h) else {
                    continue;
                };
                for ox in 0..ow {
                    let Some(x) = inside(ox as i64 + shift[2], w) else {
                        continue;
                    };
                    let src = (((item * d + z) * h + y) * w + x) * c;
                    let dst = (((item * od + oz) * oh + oy) * ow + ox) * c;
                    for ch in 0..c {
                        copy(src + ch, dst + ch);
                    }
                }
            }
        }
    }
    Ok(())
}

/// `[outer, len, inner]` of a shape around `axis` (Keras numbering, batch = 0, -1 = last).
fn split_axis(shape: &[usize], axis: i64) -> (usize, usize, usize) {
    let rank = shape.len() as i64;
    let a = if axis < 0 { rank + axis } else { axis }.clamp(0, rank - 1) as usize;
    (
        shape[..a].iter().product(),
        shape[a],
        shape[a + 1..].iter().product(),
    )
}

fn concat_forward(inputs: &[&Tensor], out_shape: &[usize], axis: i64) -> Vec<f32> {
    let (outer, total, inner) = split_axis(out_shape, axis);
    let mut y = vec![0.0f32; outer * total * inner];
    let mut at = 0;
    for t in inputs {
        let (_, len, _) = split_axis(&t.shape, axis);
        for o in 0..outer {
            let src = &t.data[o * len * inner..(o + 1) * len * inner];
            let dst = (o * total + at) * inner;
            y[dst..dst + len * inner].copy_from_slice(src);
        }
        at += len;
    }
    y
}

fn concat_backward(
    inputs: &[&Tensor],
    out_shape: &[usize],
    axis: i64,
    dy: &[f32],
) -> Vec<Vec<f32>> {
    let (outer, total, inner) = split_axis(out_shape, axis);
    let mut at = 0;
    inputs
        .iter()
        .map(|t| {
            let (_, len, _) = split_axis(&t.shape, axis);
            let mut dx = vec![0.0f32; t.shape.iter().product()];
            for o in 0..outer {
                let src = (o * total + at) * inner;
                dx[o * len * inner..(o + 1) * len * inner]
                    .copy_from_slice(&dy[src..src + len * inner]);
            }
            at += len;
            dx
        })
        .collect()
}

/// The index into `input` (broadcast against `out`, aligned at the last axis) of each output
/// element.
fn broadcast_index(input: &[usize], out: &[usize]) -> Vec<usize> {
    let rank = out.len();
    let missing = rank - input.len().min(rank);
    let dims: Vec<usize> = (0..rank)
        .map(|k| if k < missing { 1 } else { input[k - missing] })
        .collect();
    let mut strides = vec![0usize; rank];
    let mut s = 1;
    for k in (0..rank).rev() {
        strides[k] = if dims[k] == 1 { 0 } else { s };
        s *= dims[k];
    }
    let total: usize = out.iter().product();
    (0..total)
        .map(|mut flat| {
            let mut idx = 0;
            for k in (0..rank).rev() {
                let i = flat % out[k].max(1);
                flat /= out[k].max(1);
                idx += i * strides[k];
            }
            idx
        })
        .collect()
}

/// A TFOpLambda's constant as a tensor of the output's rank (batch first; its batch axis of 1
/// broadcasts), for the merges' broadcasting; and the tensor operand with leading axes of 1
/// added where its rank is below the output's (`None`: the tensor as it is, not copied).
fn constant_merge_operands(
    o: &crate::ir::ops::TFOpLambda,
    inputs: &[&Tensor],
    out_shape: &[usize],
) -> Result<(Option<Tensor>, Tensor), Unsupported> {
    let (Some(x), Some(constant)) = (inputs.first(), &o.operand) else {
        return Err(Unsupported(
            "internal: a tensor merge without its operands".into(),
        ));
    };
    let pad = |item: Vec<usize>| {
        let mut shape = vec![1; out_shape.len().saturating_sub(item.len() + 1)];
        shape.extend(item);
        shape
    };
    let padded = (x.shape.len() < out_shape.len()).then(|| {
        let mut shape = vec![x.shape.first().copied().unwrap_or(1)];
        shape.extend(pad(x.shape.get(1..).unwrap_or_default().to_vec()));
        Tensor {
            shape,
            data: x.data.clone(),
        }
    });
    let c_item: Vec<usize> = constant
        .item_shape(x.shape.len().saturating_sub(1))
        .iter()
        .map(|&d| d as usize)
        .collect();
    let mut c_shape = vec![1];
    c_shape.extend(pad(c_item));
    Ok((
        padded,
        Tensor {
            shape: c_shape,
            data: constant.values.to_vec(),
        },
    ))
}

fn merge_forward(inputs: &[&Tensor], out_shape: &[usize], f: MergeFn) -> Vec<f32> {
    let maps: Vec<Vec<usize>> = inputs
        .iter()
        .map(|t| broadcast_index(&t.shape, out_shape))
        .collect();
    let total: usize = out_shape.iter().product();
    (0..total)
        .map(|o| {
            let value = |k: usize| inputs[k].data[maps[k][o]];
            let mut acc = value(0);
            for k in 1..inputs.len() {
                let v = value(k);
                acc = match f {
                    MergeFn::Add | MergeFn::Average => acc + v,
                    MergeFn::Multiply => acc * v,
                    MergeFn::Subtract => acc - v,
                    MergeFn::Maximum => acc.max(v),
                    MergeFn::Minimum => acc.min(v),
                    MergeFn::Divide => acc / v,
                };
            }
            if f == MergeFn::Average {
                acc / inputs.len() as f32
            } else {
                acc
            }
        })
        .collect()
}

fn merge_grads(inputs: &[&Tensor], _output: &Tensor, f: MergeFn, grad: Grad) -> LayerGrads {
    let dy = match grad {
        Grad::Output(dy) | Grad::Logits(dy) => dy,
    };
    let out_shape = &_output.shape;
    let maps: Vec<Vec<usize>> = inputs
        .iter()
        .map(|t| broadcast_index(&t.shape, out_shape))
        .collect();
    let mut dxs: Vec<Vec<f32>> = inputs
        .iter()
        .map(|t| vec![0.0f32; t.shape.iter().product()])
        .collect();
    let n = inputs.len();
    for (o, &g) in dy.iter().enumerate() {
        let value = |k: usize| inputs[k].data[maps[k][o]];
        match f {
            MergeFn::Add => (0..n).for_each(|k| dxs[k][maps[k][o]] += g),
            MergeFn::Average => (0..n).for_each(|k| dxs[k][maps[k][o]] += g / n as f32),
            MergeFn::Subtract => {
                dxs[0][maps[0][o]] += g;
                dxs[1][maps[1][o]] -= g;
            }
            // d(a / b) = da / b - a db / b^2.
            MergeFn::Divide => {
                let (a, b) = (value(0), value(1));
                dxs[0][maps[0][o]] += g / b;
                dxs[1][maps[1][o]] -= g * a / (b * b);
            }
            MergeFn::Multiply => {
                for k in 0..n {
                    let others: f32 = (0..n).filter(|&j| j != k).map(value).product();
                    dxs[k][maps[k][o]] += g * others;
                }
            }
            // Pairwise in order, as Keras folds them; TF's gradient of maximum(x, y) goes to x
            // where x >= y (minimum: x <= y).
            MergeFn::Maximum | MergeFn::Minimum => {
                let mut owner = 0;
                let mut best = value(0);
                for k in 1..n {
                    let v = value(k);
                    let keep = if f == MergeFn::Maximum {
                        best >= v
                    } else {
                        best <= v
                    };
                    if !keep {
                        owner = k;
                        best = v;
                    }
                }
                dxs[owner][maps[owner][o]] += g;
            }
        }
    }
    LayerGrads {
        inputs: dxs,
        params: vec![],
    }
}

fn softmax_axis(x: &[f32], shape: &[usize], axis: i64) -> Vec<f32> {
    let (outer, len, inner) = split_axis(shape, axis);
    let mut y = x.to_vec();
    for o in 0..outer {
        for i in 0..inner {
            let idx = |k: usize| (o * len + k) * inner + i;
            let max = (0..len)
                .map(|k| x[idx(k)])
                .fold(f32::NEG_INFINITY, f32::max);
            let sum: f32 = (0..len).map(|k| (x[idx(k)] - max).exp()).sum();
            for k in 0..len {
                y[idx(k)] = (x[idx(k)] - max).exp() / sum;
            }
        }
    }
    y
}

fn softmax_axis_backward(y: &[f32], dy: &[f32], shape: &[usize], axis: i64) -> Vec<f32> {
    let (outer, len, inner) = split_axis(shape, axis);
    let mut dx = vec![0.0f32; y.len()];
    for o in 0..outer {
        for i in 0..inner {
            let idx = |k: usize| (o * len + k) * inner + i;
            let dot: f32 = (0..len).map(|k| y[idx(k)] * dy[idx(k)]).sum();
            for k in 0..len {
                dx[idx(k)] = y[idx(k)] * (dy[idx(k)] - dot);
            }
        }
    }
    dx
}

/// Keras's ReLU layer: (value, derivative).
fn relu_layer(v: f32, max: Option<f32>, slope: f32, threshold: f32) -> (f32, f32) {
    if max.is_some_and(|m| v >= m) {
        (max.unwrap_or(v), 0.0)
    } else if v > threshold {
        (v, 1.0)
    } else if v == threshold {
        (v, 0.0)
    } else {
        (slope * (v - threshold), slope)
    }
}

/// Dropout-style masks: `units` = `Some((pixels, channels))` drops whole channels per item
/// (SpatialDropout2D). Keeps the mask (already scaled by 1 / (1 - rate)) for backward.
fn dropout(
    x: &[f32],
    rate: f64,
    units: Option<(usize, usize)>,
    mode: &mut Mode,
    saved: &mut Saved,
) -> Vec<f32> {
    if !mode.training || rate <= 0.0 {
        return x.to_vec();
    }
    let mask = dropout_mask(x.len(), rate, units, mode.rng);
    let y = x.iter().zip(&mask).map(|(v, m)| v * m).collect();
    saved.aux.push(mask);
    y
}

/// Dropout's mask for `len` values (`rate` > 0): 0 or `1 / (1 - rate)` per value, or per
/// (item, channel) where `units` gives (pixels, channels) (SpatialDropout2D), expanded to every
/// value. The draws are the CPU and GPU trainers' common sequence.
pub(crate) fn dropout_mask(
    len: usize,
    rate: f64,
    units: Option<(usize, usize)>,
    rng: &mut rand::rngs::StdRng,
) -> Vec<f32> {
    let keep = 1.0 - rate;
    let uniform = Uniform::new(0.0f64, 1.0).expect("a valid range");
    let scale = if keep > 0.0 { (1.0 / keep) as f32 } else { 0.0 };
    let mut draw = || {
        if uniform.sample(rng) < keep {
            scale
        } else {
            0.0
        }
    };
    match units {
        None => (0..len).map(|_| draw()).collect(),
        Some((pixels, c)) => {
            let items = len / (pixels * c).max(1);
            let per_channel: Vec<f32> = (0..items * c).map(|_| draw()).collect();
            (0..len)
                .map(|i| per_channel[i / (pixels * c).max(1) * c + i % c.max(1)])
                .collect()
        }
    }
}

/// Dropout with one mask entry per element of `mask_dims` (an input of `shape`, batch first),
/// shared along the axes where it is 1 (FixedDropout's `noise_shape`). Keeps the mask (scaled
/// by 1 / (1 - rate)) for backward.
fn shared_dropout(
    x: &[f32],
    rate: f64,
    shape: &[usize],
    mask_dims: &[usize],
    mode: &mut Mode,
    saved: &mut Saved,
) -> Vec<f32> {
    if !mode.training || rate <= 0.0 {
        return x.to_vec();
    }
    let keep = 1.0 - rate;
    let uniform = Uniform::new(0.0f64, 1.0).expect("a valid range");
    let scale = if keep > 0.0 { (1.0 / keep) as f32 } else { 0.0 };
    let draws: Vec<f32> = (0..mask_dims.iter().product::<usize>())
        .map(|_| {
            if uniform.sample(mode.rng) < keep {
                scale
            } else {
                0.0
            }
        })
        .collect();
    let mask: Vec<f32> = (0..x.len())
        .map(|i| {
            let (mut rest, mut at, mut stride) = (i, 0, 1);
            for (&d, &m) in shape.iter().zip(mask_dims).rev() {
                let coord = rest % d.max(1);
                rest /= d.max(1);
                if m != 1 {
                    at += coord * stride;
                    stride *= m;
                }
            }
            draws[at]
        })
        .collect();
    let y = x.iter().zip(&mask).map(|(v, m)| v * m).collect();
    saved.aux.push(mask);
    y
}

fn channel_moments(x: &[f32], c: usize) -> (Vec<f32>, Vec<f32>) {
    let count = (x.len() / c.max(1)).max(1) as f64;
    let mut mean = vec![0.0f64; c];
    for (i, &v) in x.iter().enumerate() {
        mean[i % c] += v as f64;
    }
    mean.iter_mut().for_each(|m| *m /= count);
    let mut var = vec![0.0f64; c];
    for (i, &v) in x.iter().enumerate() {
        let d = v as f64 - mean[i % c];
        var[i % c] += d * d;
    }
    (
        mean.iter().map(|&m| m as f32).collect(),
        var.iter().map(|&v| (v / count) as f32).collect(),
    )
}

fn norm_layout(op: &Op, shape: &[usize]) -> Result<NormLayout, Unsupported> {
    let item: Vec<i64> = shape.iter().skip(1).map(|&d| d as i64).collect();
    op.norm_layout(&item)
        .ok_or_else(|| Unsupported("not a normalization layer".into()))
}

/// Group/layer normalization forward; the statistics (mean, 1/std per group) for backward.
pub(crate) fn normalize_forward(
    layout: NormLayout,
    gamma: &[f32],
    beta: &[f32],
    x: &[f32],
) -> (Vec<f32>, Vec<f32>) {
    let mut y = vec![0.0f32; x.len()];
    let mut stats = Vec::new();
    for_each_norm_group(layout, x.len(), |values, affine| {
        let count = values.len() as f32;
        let mean = values.iter().map(|&i| x[i]).sum::<f32>() / count;
        let var = values
            .iter()
            .map(|&i| (x[i] - mean) * (x[i] - mean))
            .sum::<f32>()
            / count;
        let inv = 1.0 / (var + layout.epsilon).sqrt();
        for (&i, &a) in values.iter().zip(affine) {
            y[i] = (x[i] - mean) * inv * gamma[a] + beta[a];
        }
        stats.push(mean);
        stats.push(inv);
    });
    (y, stats)
}

pub(crate) fn normalize_backward(
    layout: NormLayout,
    gamma: &[f32],
    x: &[f32],
    stats: &[f32],
    dy: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut dx = vec![0.0f32; x.len()];
    let mut dgamma = vec![0.0f32; gamma.len()];
    let mut dbeta = vec![0.0f32; gamma.len()];
    let mut group = 0;
    for_each_norm_group(layout, x.len(), |values, affine| {
        let (mean, inv) = (stats[2 * group], stats[2 * group + 1]);
        group += 1;
        let count = values.len() as f32;
        let (mut sum_d, mut sum_dx) = (0.0f32, 0.0f32);
        for (&i, &a) in values.iter().zip(affine) {
            let xhat = (x[i] - mean) * inv;
            let d = dy[i] * gamma[a];
            sum_d += d;
            sum_dx += d * xhat;
            dgamma[a] += dy[i] * xhat;
            dbeta[a] += dy[i];
        }
        for (&i, &a) in values.iter().zip(affine) {
            let xhat = (x[i] - mean) * inv;
            let d = dy[i] * gamma[a];
            dx[i] = inv / count * (count * d - sum_d - xhat * sum_dx);
        }
    });
    (dx, dgamma, dbeta)
}

/// Each normalization group: the flat indices of its values and their gamma/beta indices.
fn for_each_norm_group(layout: NormLayout, len: usize, mut visit: impl FnMut(&[usize], &[usize])) {
    let NormLayout {
        outer,
        span,
        groups,
        group_size,
        affine_per_position,
        ..
    } = layout;
    let chunk = span * groups * group_size;
    let mut values = Vec::with_capacity(span * group_size);
    let mut affine = Vec::with_capacity(span * group_size);
    for base in (0..len).step_by(chunk.max(1)) {
        let _ = outer;
        for g in 0..groups {
            values.clear();
            affine.clear();
            for p in 0..span {
                for j in 0..group_size {
                    let at = (p * groups + g) * group_size + j;
                    values.push(base + at);
                    let ap = if affine_per_position { p } else { 0 };
                    affine.push((ap * groups + g) * group_size + j);
                }
            }
            visit(&values, &affine);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [-1, 1).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn assert_close(what: &str, got: &[f32], want: &[f32]) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        let scale = want.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
        for (i, (a, b)) in got.iter().zip(want).enumerate() {
            assert!((a - b).abs() <= 1e-5 * scale, "{what}: [{i}] {a} vs {b}");
        }
    }

    /// The Winograd path gives what patch matrices give, forward and backward, for 3x3
    /// stride-1 convolutions (same and valid; channel counts on both sides of the threshold),
    /// and a 3x3 with stride 2 is left to patch matrices.
    #[test]
    fn winograd_and_patch_matrices_agree() {
        for (c, f, same, stride) in [
            (8, 8, true, 1),
            (16, 9, false, 1),
            (3, 12, true, 1),
            (12, 3, false, 1),
            (8, 8, true, 2),
        ] {
            // 2 x 17 x 16 tiles: enough for the kernel gradient's Winograd path too.
            let (n, h, w) = (2, 33, 31);
            let window = |s: usize| {
                conv_window(move |_, size, _| WindowGeometry {
                    kernel: 3,
                    stride: s,
                    dilation: 1,
                    pad_before: usize::from(same),
                    pad_after: usize::from(same) + size % s,
                })
            };
            let out = |size: usize| {
                if same {
                    size.div_ceil(stride)
                } else {
                    (size - 3) / stride + 1
                }
            };
            let (x_shape, out_shape) = ([n, h, w, c], [n, out(h), out(w), f]);
            let x = values(n * h * w * c, c as u64);
            let kernel = values(9 * c * f, 7 + f as u64);
            let bias = values(f, 3);
            let dz = values(out_shape.iter().product(), 11);
            let label = format!("c {c} f {f} same {same} stride {stride}");
            let run = |path| {
                let z = conv_forward_by(
                    path,
                    &x_shape,
                    &x,
                    &out_shape,
                    window(stride),
                    1,
                    &kernel,
                    Some(&bias),
                )
                .expect("forward");
                let (dx, dk, db) = conv_backward_by(
                    path,
                    &x_shape,
                    &x,
                    &out_shape,
                    window(stride),
                    1,
                    &kernel,
                    &dz,
                )
                .expect("backward");
                (z, dx, dk, db)
            };
            let (z, dx, dk, db) = run(ConvPath::Winograd);
            let (z0, dx0, dk0, db0) = run(ConvPath::Im2col);
            assert_close(&format!("z {label}"), &z, &z0);
            assert_close(&format!("dx {label}"), &dx, &dx0);
            assert_close(&format!("dk {label}"), &dk, &dk0);
            assert_eq!(db, db0);
            let geometry =
                winograd_geometry(ConvPath::Winograd, &x_shape, &out_shape, &window(stride), 1);
            assert_eq!(geometry.is_some(), stride == 1, "{label}");
            let both = geometry.is_some_and(|g| winograd::kernel_gradient_repays(&g, n));
            assert_eq!(both, stride == 1 && c >= 8 && f >= 8, "{label}");
        }
    }
}
