//! The execution plan, shared by every backend: a schedule (inputs before consumers), which
//! layers run a kernel and which cost nothing, where each value lives, and where each buffer
//! sits in one activation arena.
//!
//! Values live in *windows* of buffers, so that U-Net plumbing costs no copies:
//! - a channel concatenation whose inputs' producers can write anywhere gets one buffer, and
//!   each producer writes straight into its channel slice (`Work::Concat` copies only the rest);
//! - a channel concatenation read only by convolutions is never built: the convolutions read its
//!   parts ([`Storage::Parts`]);
//! - a crop is a window of its input; Dropout is its input;
//! - a BatchNormalization after a convolution is folded into the convolution's weights, and an
//!   activation layer after it into its epilogue ([`Fused`]).
//!
//! Volumes (`[D, H, W, C]` values of the 3-D kinds) take none of the crop, concatenation or
//! fusion paths: each is a whole dense buffer, its rows the (depth, row) pairs ([`hwc`]), and
//! the 3-D kernels read it so.
//!
//! Buffers are placed largest first at the lowest offset that no buffer alive at the same time
//! occupies, which keeps the arena close to the live-set minimum.

use crate::infer::Inferred;
use crate::ir::ops::{ActivationFn, BatchNormalization, Conv2D};
use crate::ir::{Graph, NodeId, Op};

/// A window of a buffer, per batch item: element `(y, x, c)` of the value is at
/// `offset + y * row_stride + x * pixel_stride + c` within one item of the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub buffer: usize,
    pub offset: usize,
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub row_stride: usize,
    pub pixel_stride: usize,
}

impl Window {
    /// A whole buffer holding `[h, w, c]` contiguously.
    fn whole(buffer: usize, [h, w, c]: [usize; 3]) -> Window {
        Window {
            buffer,
            offset: 0,
            h,
            w,
            c,
            row_stride: w * c,
            pixel_stride: c,
        }
    }

    pub fn len(&self) -> usize {
        self.h * self.w * self.c
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the window is its buffer's values in order (nothing skipped).
    pub fn is_dense(&self) -> bool {
        self.pixel_stride == self.c && self.row_stride == self.w * self.c
    }

    /// Element offsets (within an item) of the window's first and one past its last element.
    pub fn span(&self) -> std::ops::Range<usize> {
        if self.is_empty() {
            return self.offset..self.offset;
        }
        let last = self.offset
            + (self.h - 1) * self.row_stride
            + (self.w - 1) * self.pixel_stride
            + self.c;
        self.offset..last
    }
}

/// Where a layer's value is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    Window(Window),
    /// A channel concatenation that is never built: its parts, in channel order.
    Parts(Vec<Window>),
}

impl Storage {
    pub fn windows(&self) -> &[Window] {
        match self {
            Storage::Window(w) => std::slice::from_ref(w),
            Storage::Parts(p) => p,
        }
    }
}

/// Layers folded into a convolution: a BatchNormalization (into its weights and bias) and an
/// activation (into its epilogue; `None`: the convolution's own activation).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fused {
    pub batch_norm: Option<NodeId>,
    pub activation: Option<ActivationFn>,
    /// The activation layer whose activation is `activation`.
    pub activation_layer: Option<NodeId>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Work {
    /// Run the layer's kernel: read the inputs' storage, write the layer's window.
    Kernel,
    /// Nothing to run: the value is a view (crop, dropout, unbuilt concatenation) or was
    /// computed by the convolution it is fused into.
    Nothing,
    /// A built concatenation: copy these inputs (by position) into their slices; the others
    /// were written there by their producers.
    Concat(Vec<usize>),
}

#[derive(Debug, Clone)]
pub struct Step {
    pub node: NodeId,
    pub work: Work,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buffer {
    /// Elements per batch item.
    pub len: usize,
    /// Offset in the arena, per batch item (multiply by the batch).
    pub offset: usize,
    /// First and last step (schedule positions) that use it.
    pub first: usize,
    pub last: usize,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// Per node id: where its value is (`None` for layers that are not scheduled).
    pub storage: Vec<Option<Storage>>,
    /// Per node id: what is folded into it (convolutions and dense layers only).
    pub fused: Vec<Fused>,
    pub buffers: Vec<Buffer>,
    /// Arena size in f32 elements per batch item.
    pub arena_len: usize,
    /// The most elements alive at one step (the lower bound for any arena).
    pub live_minimum: usize,
}

impl Plan {
    /// Arena size in bytes for a batch of f32 values.
    pub fn arena_bytes(&self, batch: usize) -> u64 {
        self.arena_bytes_of(batch, 4)
    }

    /// Arena size in bytes for a batch of values of `element_bytes` each.
    pub fn arena_bytes_of(&self, batch: usize, element_bytes: u64) -> u64 {
        (self.arena_len as u64)
            .saturating_mul(element_bytes)
            .saturating_mul(batch as u64)
    }

    /// The window of a node whose value is one window (every node but unbuilt concatenations).
    pub fn window(&self, id: NodeId) -> Option<Window> {
        match self.storage.get(id.index())? {
            Some(Storage::Window(w)) => Some(*w),
            _ => None,
        }
    }

    /// Arena offset (in elements) of item `n`'s element 0 of a window, for a batch.
    pub fn base(&self, w: &Window, batch: usize) -> usize {
        self.buffers[w.buffer].offset * batch + w.offset
    }

    /// Elements between consecutive batch items of a window's buffer.
    pub fn item_stride(&self, w: &Window) -> usize {
        self.buffers[w.buffer].len
    }
}

/// A shape per item as `[h, w, c]`: the last axis is the channels, the one before it the
/// width, all others the height (rank 1: `[1, 1, n]`).
pub fn hwc(shape: &[usize]) -> [usize; 3] {
    match shape {
        [] => [1, 1, 1],
        [c] => [1, 1, *c],
        [rest @ .., w, c] => [rest.iter().product(), *w, *c],
    }
}

/// Whether a layer's kernels read inputs through any window (the layers whose kernels index
/// NHWC with strides); the others need their inputs dense.
fn reads_windows(graph: &Graph, info: &Inferred, id: NodeId) -> bool {
    match &graph.node(id).op {
        // A grouped convolution's direct kernel reads its input dense.
        Op::Conv2D(conv) => conv.groups == 1,
        Op::Conv2DTranspose(_)
        | Op::MaxPooling2D(_)
        | Op::UpSampling2D(_)
        | Op::Resizing(_)
        | Op::Cropping2D(_)
        | Op::ZeroPadding2D(_)
        | Op::BatchNormalization(_)
        | Op::Activation(_)
        | Op::ReLU(_)
        | Op::Add(_)
        | Op::Dropout(_)
        | Op::GlobalAveragePooling2D(_) => true,
        Op::Concatenate(_) => concat_on_channels(graph, info, id),
        // The newer kinds' kernels read dense inputs (a gather first where needed).
        Op::Input(_)
        | Op::Dense(_)
        | Op::MultiHeadAttention(_)
        | Op::PatchExtract(_)
        | Op::PatchEmbedding(_)
        | Op::SwinTransformerBlock(_)
        | Op::PatchMerging(_)
        | Op::PatchExpanding(_)
        | Op::Flatten(_)
        | Op::Reshape(_)
        | Op::Lambda(_)
        | Op::Permute(_)
        | Op::Softmax(_)
        | Op::Multiply(_)
        | Op::Subtract(_)
        | Op::CustomScaleLayer(_)
        | Op::Average(_)
        | Op::Maximum(_)
        | Op::Minimum(_)
        | Op::TFOpLambda(_)
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
        | Op::DepthwiseConv2D(_)
        | Op::SeparableConv2D(_)
        | Op::Conv3D(_)
        | Op::Conv3DTranspose(_)
        | Op::MaxPooling3D(_)
        | Op::AveragePooling3D(_)
        | Op::UpSampling3D(_)
        | Op::Cropping3D(_)
        | Op::ZeroPadding3D(_)
        | Op::GlobalAveragePooling3D(_) => false,
    }
}

/// Whether a layer's kernel can write its output into a window of a wider buffer.
fn writes_windows(op: &Op) -> bool {
    match op {
        Op::Conv2D(a) => a.groups == 1 && a.args.activation != ActivationFn::Softmax,
        Op::Conv2DTranspose(a) => a.args.activation != ActivationFn::Softmax,
        Op::Activation(a) => a.activation != ActivationFn::Softmax,
        Op::MaxPooling2D(_)
        | Op::UpSampling2D(_)
        | Op::Resizing(_)
        | Op::Cropping2D(_)
        | Op::ZeroPadding2D(_)
        | Op::BatchNormalization(_)
        | Op::ReLU(_)
        | Op::Add(_)
        | Op::Dropout(_) => true,
        // Softmax needs its whole row; the others write dense buffers of their own.
        Op::Input(_)
        | Op::Concatenate(_)
        | Op::Softmax(_)
        | Op::Flatten(_)
        | Op::Reshape(_)
        | Op::Lambda(_)
        | Op::Permute(_)
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
        | Op::TFOpLambda(_)
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
        | Op::DepthwiseConv2D(_)
        | Op::SeparableConv2D(_)
        | Op::Conv3D(_)
        | Op::Conv3DTranspose(_)
        | Op::MaxPooling3D(_)
        | Op::AveragePooling3D(_)
        | Op::UpSampling3D(_)
        | Op::Cropping3D(_)
        | Op::ZeroPadding3D(_)
        | Op::GlobalAveragePooling3D(_) => false,
    }
}

/// The channel axis of a concatenation over 4-D values (`None`: another axis or rank).
fn concat_on_channels(graph: &Graph, info: &Inferred, id: NodeId) -> bool {
    let Op::Concatenate(op) = &graph.node(id).op else {
        return false;
    };
    let rank = info.layers[id.index()]
        .shape
        .as_ref()
        .map_or(0, |s| s.len()) as i64;
    rank == 3 && (op.axis == -1 || op.axis == rank)
}

/// Whether a layer's kernel reads an unbuilt concatenation's parts in place (both backends'
/// convolutions take up to two parts; every other kernel needs one window).
pub fn reads_parts(op: &Op) -> bool {
    match op {
        Op::Conv2D(conv) => conv.groups == 1,
        Op::Input(_)
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
        | Op::Reshape(_)
        | Op::Lambda(_)
        | Op::Permute(_)
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
        | Op::TFOpLambda(_)
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
        | Op::DepthwiseConv2D(_)
        | Op::SeparableConv2D(_)
        | Op::Conv3D(_)
        | Op::Conv3DTranspose(_)
        | Op::MaxPooling3D(_)
        | Op::AveragePooling3D(_)
        | Op::UpSampling3D(_)
        | Op::Cropping3D(_)
        | Op::ZeroPadding3D(_)
        | Op::GlobalAveragePooling3D(_) => false,
    }
}

/// A layer whose kernel can take a batch normalization into its weights and an activation
/// layer into its epilogue: Conv2D, the one kernel on both backends with a fused epilogue.
fn fusion_head(op: &Op) -> Option<&Conv2D> {
    match op {
        // A grouped convolution runs its own direct kernel, without the fused epilogue.
        Op::Conv2D(conv) => (conv.groups == 1).then_some(conv),
        Op::Input(_)
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
        | Op::Reshape(_)
        | Op::Lambda(_)
        | Op::Permute(_)
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
        | Op::TFOpLambda(_)
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
        | Op::DepthwiseConv2D(_)
        | Op::SeparableConv2D(_)
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

/// A normalization that [`super::bind_and_fold`] can fold into the convolution before it.
fn foldable_norm(op: &Op) -> Option<&BatchNormalization> {
    match op {
        Op::BatchNormalization(bn) => Some(bn),
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
        | Op::Activation(_)
        | Op::ReLU(_)
        | Op::Softmax(_)
        | Op::Dropout(_)
        | Op::Flatten(_)
        | Op::Reshape(_)
        | Op::Lambda(_)
        | Op::Permute(_)
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
        | Op::TFOpLambda(_)
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
        | Op::DepthwiseConv2D(_)
        | Op::SeparableConv2D(_)
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

/// The activation an activation layer applies, if it can run in a convolution's epilogue.
/// Softmax is over the channels of each pixel (a Softmax layer only on the last axis); it runs
/// after the convolution, in place, so a convolution fused with it writes a dense buffer.
fn epilogue_activation(op: &Op, rank: usize) -> Option<ActivationFn> {
    match op {
        Op::Activation(a) => Some(a.activation),
        Op::Softmax(s) => (s.axis == -1 || s.axis == rank as i64).then_some(ActivationFn::Softmax),
        Op::ReLU(r) => (r.max_value.is_none() && r.negative_slope == 0.0 && r.threshold == 0.0)
            .then_some(ActivationFn::Relu),
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
        | Op::Dropout(_)
        | Op::Flatten(_)
        | Op::Reshape(_)
        | Op::Lambda(_)
        | Op::Permute(_)
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
        | Op::TFOpLambda(_)
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
        | Op::DepthwiseConv2D(_)
        | Op::SeparableConv2D(_)
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Runs a kernel into a buffer of its own (or a slice of a concatenation's).
    Owns,
    /// Folded or fused into the convolution before it: its value is the convolution's.
    Fused,
    /// Its value is the window of its input's value that starts `top` rows and `left` columns
    /// in (a crop), or the value itself (dropout: 0, 0).
    ViewOfInput { top: usize, left: usize },
    /// A concatenation built in a buffer of its own.
    BuiltConcat,
    /// A concatenation never built.
    Parts,
}

/// Plans the kept layers of a checked graph. `None` if a shape is unknown (the spec has errors).
pub fn plan(graph: &Graph, info: &Inferred) -> Option<Plan> {
    let order = &info.schedule;
    let n = order.len();
    let count = graph.nodes.len();
    let mut position = vec![usize::MAX; count];
    for (i, &id) in order.iter().enumerate() {
        position[id.index()] = i;
    }
    let shape = |id: NodeId| -> Option<Vec<usize>> {
        info.layers
            .get(id.index())?
            .shape
            .as_ref()
            .map(|s| s.iter().map(|&d| d.max(0) as usize).collect())
    };
    let mut shapes = vec![Vec::new(); count];
    let mut consumers: Vec<Vec<NodeId>> = vec![Vec::new(); count];
    for &id in order {
        shapes[id.index()] = shape(id)?;
        for &input in &graph.node(id).inputs {
            if position.get(input.index()).is_none_or(|&p| p >= n) {
                return None;
            }
            consumers[input.index()].push(id);
        }
    }
    let mut is_output = vec![false; count];
    for &out in &graph.outputs {
        // An output outside the schedule (a graph with errors): nothing to plan.
        if position.get(out.index()).is_none_or(|&p| p >= n) {
            return None;
        }
        is_output[out.index()] = true;
    }
    // The single reader of a value, when the value is not a model output.
    let only_consumer = |id: NodeId| match consumers[id.index()].as_slice() {
        [one] if !is_output[id.index()] => Some(*one),
        _ => None,
    };

    // 1. Fusion: Conv2D [-> BatchNormalization] [-> activation layer], each link the only
    //    reader of the one before.
    let mut fused = vec![Fused::default(); count];
    let mut kind = vec![Kind::Owns; count];
    for &id in order {
        let Some(conv) = fusion_head(&graph.node(id).op) else {
            continue;
        };
        let mut tail = id;
        // A normalization folds into the weights only after a linear convolution:
        // BN(relu(conv(x))) is not relu of any convolution (keras-unet's custom_unet has
        // Conv2D(activation="relu") -> BatchNormalization).
        let linear = conv.args.activation == ActivationFn::Linear;
        if let (true, Some(next)) = (linear, only_consumer(tail)) {
            if let Some(bn) = foldable_norm(&graph.node(next).op) {
                let rank = shapes[next.index()].len() as i64;
                if bn.axis == -1 || bn.axis == rank {
                    fused[id.index()].batch_norm = Some(next);
                    kind[next.index()] = Kind::Fused;
                    tail = next;
                }
            }
        }
        if conv.args.activation == ActivationFn::Linear {
            if let Some(next) = only_consumer(tail) {
                let rank = shapes[next.index()].len();
                if let Some(act) = epilogue_activation(&graph.node(next).op, rank) {
                    fused[id.index()].activation = Some(act);
                    fused[id.index()].activation_layer = Some(next);
                    kind[next.index()] = Kind::Fused;
                }
            }
        }
    }

    // 2. Views: dropout, crops whose readers take windows, concatenations read only by
    //    convolutions. Model outputs are always built densely.
    let readers_take_windows = |id: NodeId| {
        consumers[id.index()]
            .iter()
            .all(|&c| reads_windows(graph, info, c))
    };
    for &id in order {
        if is_output[id.index()] || kind[id.index()] != Kind::Owns {
            continue;
        }
        kind[id.index()] = match &graph.node(id).op {
            Op::Dropout(_) => Kind::ViewOfInput { top: 0, left: 0 },
            Op::Cropping2D(op) if readers_take_windows(id) => Kind::ViewOfInput {
                top: op.cropping[0] as usize,
                left: op.cropping[2] as usize,
            },
            Op::Concatenate(_) if concat_on_channels(graph, info, id) => {
                let parts = graph.node(id).inputs.len();
                let readers_take_parts = consumers[id.index()]
                    .iter()
                    .all(|&c| reads_parts(&graph.node(c).op));
                if readers_take_parts && parts <= 2 {
                    Kind::Parts
                } else {
                    Kind::BuiltConcat
                }
            }
            Op::Cropping2D(_)
            | Op::Concatenate(_)
            | Op::Input(_)
            | Op::Conv2D(_)
            | Op::Conv2DTranspose(_)
            | Op::MaxPooling2D(_)
            | Op::UpSampling2D(_)
            | Op::Resizing(_)
            | Op::ZeroPadding2D(_)
            | Op::Add(_)
            | Op::BatchNormalization(_)
            | Op::Activation(_)
            | Op::ReLU(_)
            | Op::Softmax(_)
            | Op::Flatten(_)
            | Op::Reshape(_)
            | Op::Lambda(_)
            | Op::Permute(_)
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
            | Op::TFOpLambda(_)
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
            | Op::DepthwiseConv2D(_)
            | Op::SeparableConv2D(_)
            | Op::Conv3D(_)
            | Op::Conv3DTranspose(_)
            | Op::MaxPooling3D(_)
            | Op::AveragePooling3D(_)
            | Op::UpSampling3D(_)
            | Op::Cropping3D(_)
            | Op::ZeroPadding3D(_)
            | Op::GlobalAveragePooling3D(_) => Kind::Owns,
        };
    }
    // A view whose value is read densely, or a part of a part list, must be built: resolve
    // those, inputs first, by making the layer own its value.
    for &id in order {
        let node = graph.node(id);
        if kind[id.index()] == Kind::Parts
            && node.inputs.iter().any(|&p| kind[p.index()] == Kind::Parts)
        {
            kind[id.index()] = Kind::BuiltConcat;
        }
        if matches!(kind[id.index()], Kind::ViewOfInput { .. })
            && (node.inputs.iter().any(|&p| kind[p.index()] == Kind::Parts)
                || !readers_take_windows(id))
        {
            kind[id.index()] = Kind::Owns;
        }
    }
    // Outputs must be dense: views are never outputs (above), and a convolution whose fused
    // tail is an output is never placed in a concatenation's slice (below).

    // 3. The root of a value: follow views back to the layer that computes it.
    let root = |mut id: NodeId| {
        while matches!(kind[id.index()], Kind::Fused | Kind::ViewOfInput { .. }) {
            id = graph.node(id).inputs[0];
        }
        id
    };
    let mut root_of_output = vec![false; count];
    for &out in &graph.outputs {
        root_of_output[root(out).index()] = true;
    }
    // Everything that reads a root's value, through its views.
    let mut readers_of_root: Vec<Vec<NodeId>> = vec![Vec::new(); count];
    for &id in order {
        for &input in &graph.node(id).inputs {
            readers_of_root[root(input).index()].push(id);
        }
    }

    // 4. Built concatenations: producers that can write into their slice do.
    let mut slice_of: Vec<Option<(NodeId, usize)>> = vec![None; count];
    let mut copies: Vec<Vec<usize>> = vec![Vec::new(); count];
    for &id in order {
        if kind[id.index()] != Kind::BuiltConcat || !concat_on_channels(graph, info, id) {
            continue;
        }
        let mut channel = 0usize;
        for (k, &input) in graph.node(id).inputs.iter().enumerate() {
            let r = root(input);
            let r_node = graph.node(r);
            // A crop that removes nothing has its root's shape and window: placing works too.
            let placeable = kind[r.index()] == Kind::Owns
                && slice_of[r.index()].is_none()
                && fused[r.index()].activation != Some(ActivationFn::Softmax)
                && !root_of_output[r.index()]
                && writes_windows(&r_node.op)
                && shapes[r.index()] == shapes[input.index()]
                && readers_of_root[r.index()]
                    .iter()
                    .all(|&c| reads_windows(graph, info, c))
                // One value in two slices of the same concatenation needs a copy.
                && !graph.node(id).inputs[..k].iter().any(|&p| root(p) == r);
            if placeable {
                slice_of[r.index()] = Some((id, channel));
            } else {
                copies[id.index()].push(k);
            }
            channel += hwc(&shapes[input.index()])[2];
        }
    }

    // 5. Buffers and storage, in schedule order (inputs resolved before their readers).
    let mut buffers: Vec<Buffer> = Vec::new();
    let mut storage: Vec<Option<Storage>> = vec![None; count];
    let mut owned_buffer: Vec<Option<usize>> = vec![None; count];
    let new_buffer = |len: usize, at: usize, buffers: &mut Vec<Buffer>| {
        buffers.push(Buffer {
            len,
            offset: 0,
            first: at,
            last: at,
        });
        buffers.len() - 1
    };
    // Concatenation buffers exist from their first slice's producer on.
    for &id in order {
        if kind[id.index()] == Kind::BuiltConcat && concat_on_channels(graph, info, id) {
            let dims = hwc(&shapes[id.index()]);
            let b = new_buffer(dims.iter().product(), position[id.index()], &mut buffers);
            owned_buffer[id.index()] = Some(b);
        }
    }
    for (i, &id) in order.iter().enumerate() {
        let node = graph.node(id);
        let dims = hwc(&shapes[id.index()]);
        let s = match kind[id.index()] {
            Kind::Owns | Kind::BuiltConcat => {
                if let Some((concat, channel)) = slice_of[id.index()] {
                    let b = owned_buffer[concat.index()]?;
                    buffers[b].first = buffers[b].first.min(i);
                    let total = hwc(&shapes[concat.index()])[2];
                    Storage::Window(Window {
                        buffer: b,
                        offset: channel,
                        h: dims[0],
                        w: dims[1],
                        c: dims[2],
                        row_stride: dims[1] * total,
                        pixel_stride: total,
                    })
                } else {
                    let b = match owned_buffer[id.index()] {
                        Some(b) => b,
                        None => new_buffer(dims.iter().product(), i, &mut buffers),
                    };
                    Storage::Window(Window::whole(b, dims))
                }
            }
            Kind::Fused => storage[node.inputs[0].index()].clone()?,
            // A view's input is one window: a view of an unbuilt concatenation owns its value.
            Kind::ViewOfInput { top, left } => match storage[node.inputs[0].index()].clone()? {
                Storage::Window(w) => Storage::Window(Window {
                    offset: w.offset + top * w.row_stride + left * w.pixel_stride,
                    h: dims[0],
                    w: dims[1],
                    c: dims[2],
                    ..w
                }),
                parts @ Storage::Parts(_) => parts,
            },
            Kind::Parts => Storage::Parts(
                node.inputs
                    .iter()
                    .map(|&p| match &storage[p.index()] {
                        Some(Storage::Window(w)) => Some(*w),
                        _ => None,
                    })
                    .collect::<Option<Vec<_>>>()?,
            ),
        };
        storage[id.index()] = Some(s);
    }
    // Lifetimes: a buffer lives until the last step reading any window of it; outputs to the end.
    for (i, &id) in order.iter().enumerate() {
        for &input in &graph.node(id).inputs {
            for w in storage[input.index()].as_ref()?.windows() {
                buffers[w.buffer].last = buffers[w.buffer].last.max(i);
            }
        }
        for w in storage[id.index()].as_ref()?.windows() {
            buffers[w.buffer].first = buffers[w.buffer].first.min(i);
            buffers[w.buffer].last = buffers[w.buffer].last.max(i);
        }
    }
    for &out in &graph.outputs {
        for w in storage[out.index()].as_ref()?.windows() {
            buffers[w.buffer].last = n.saturating_sub(1);
        }
    }

    // 6. Placement.
    let sizes: Vec<usize> = buffers.iter().map(|b| b.len).collect();
    let spans: Vec<(usize, usize)> = buffers.iter().map(|b| (b.first, b.last)).collect();
    let offsets = place(&sizes, &spans);
    for (b, &o) in buffers.iter_mut().zip(&offsets) {
        b.offset = o;
    }
    let arena_len = buffers.iter().map(|b| b.offset + b.len).max().unwrap_or(0);
    let mut live = vec![0i128; n + 1];
    for b in &buffers {
        live[b.first] += b.len as i128;
        live[b.last + 1] -= b.len as i128;
    }
    let (mut running, mut live_minimum) = (0i128, 0i128);
    for l in live.iter().take(n) {
        running += l;
        live_minimum = live_minimum.max(running);
    }

    let steps = order
        .iter()
        .map(|&id| Step {
            node: id,
            work: match kind[id.index()] {
                Kind::Owns => Work::Kernel,
                Kind::Fused | Kind::ViewOfInput { .. } | Kind::Parts => Work::Nothing,
                Kind::BuiltConcat if concat_on_channels(graph, info, id) => {
                    Work::Concat(std::mem::take(&mut copies[id.index()]))
                }
                // A concatenation on another axis: the general kernel, dense inputs.
                Kind::BuiltConcat => Work::Kernel,
            },
        })
        .collect();
    Some(Plan {
        steps,
        storage,
        fused,
        buffers,
        arena_len,
        live_minimum: live_minimum as usize,
    })
}

/// Greedy placement: each buffer goes to the lowest offset where it overlaps no already placed
/// buffer whose lifetime `[first, last]` intersects its own. Two orders are tried (largest
/// first, longest-lived first); the smaller arena wins.
fn place(sizes: &[usize], spans: &[(usize, usize)]) -> Vec<usize> {
    let mut by_size: Vec<usize> = (0..sizes.len()).collect();
    by_size.sort_by_key(|&i| (std::cmp::Reverse(sizes[i]), i));
    let mut by_span: Vec<usize> = (0..sizes.len()).collect();
    by_span.sort_by_key(|&i| {
        (
            std::cmp::Reverse(spans[i].1 - spans[i].0),
            std::cmp::Reverse(sizes[i]),
            i,
        )
    });
    let a = place_in_order(sizes, spans, &by_size);
    let b = place_in_order(sizes, spans, &by_span);
    let extent = |o: &[usize]| (0..sizes.len()).map(|i| o[i] + sizes[i]).max().unwrap_or(0);
    if extent(&b) < extent(&a) {
        b
    } else {
        a
    }
}

fn place_in_order(sizes: &[usize], spans: &[(usize, usize)], order: &[usize]) -> Vec<usize> {
    let mut offsets = vec![0usize; sizes.len()];
    let mut placed: Vec<usize> = Vec::new();
    for &t in order {
        let overlaps_in_time = |o: usize| spans[o].0 <= spans[t].1 && spans[t].0 <= spans[o].1;
        let mut busy: Vec<(usize, usize)> = placed
            .iter()
            .filter(|&&o| overlaps_in_time(o))
            .map(|&o| (offsets[o], offsets[o] + sizes[o]))
            .collect();
        busy.sort_unstable();
        let mut offset = 0usize;
        for (start, end) in busy {
            if start >= offset + sizes[t] {
                break;
            }
            offset = offset.max(end);
        }
        offsets[t] = offset;
        placed.push(t);
    }
    offsets
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_needs_two_slots() {
        // a -> b -> c -> d, sizes 4, 3, 4, 2: at most two tensors are alive at once.
        let sizes = [4, 3, 4, 2];
        let spans = [(0, 1), (1, 2), (2, 3), (3, 3)];
        let offsets = place(&sizes, &spans);
        let arena = (0..4).map(|i| offsets[i] + sizes[i]).max().unwrap();
        assert_eq!(arena, 7);
        // Buffers alive together never overlap.
        for a in 0..4 {
            for b in 0..4 {
                let together = a != b && spans[a].0 <= spans[b].1 && spans[b].0 <= spans[a].1;
                let disjoint =
                    offsets[a] + sizes[a] <= offsets[b] || offsets[b] + sizes[b] <= offsets[a];
                assert!(!together || disjoint, "{a} and {b}");
            }
        }
    }

    #[test]
    fn hwc_of_every_rank() {
        assert_eq!(hwc(&[7]), [1, 1, 7]);
        assert_eq!(hwc(&[5, 7]), [1, 5, 7]);
        assert_eq!(hwc(&[4, 5, 7]), [4, 5, 7]);
    }
}
