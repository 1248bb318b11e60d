//! `unetc train --device cuda`: the training step of [`super::Trainer`] on the GPU, f32 with
//! f32 master weights. Every layer output, pre-activation, dropout mask and gradient lives in
//! one f32 device arena laid out for the largest batch; weights, their gradients and the
//! optimizer's state are device buffers of their own. The forward pass reuses the inference
//! kernels (kernels/conv.cu, layers.cu); backward, losses and optimizers are
//! kernels/train.cu. Every reduction sums in a fixed order (one thread per sum), so a run
//! repeats bit for bit. Dropout masks are drawn on the host from the CPU trainer's random
//! stream, so both trainers drop the same values.
//!
//! Only the kinds [`gpu_kind`] accepts train here; a model with any other is refused before
//! anything is allocated, naming the layer.

use super::layers::{self, PreActivation};
use super::loss::Loss;
use super::optimizer::Optimizer;
use super::{
    item_shape, named_weights, trainable_slots, BatchTargets, StateLookup, TrainConfig, TrainError,
};
use crate::exec::cuda::{
    self, activation_code, driver, grid, resize_mode, CudaError, OpenDevice, View,
};
use crate::exec::{bind_weights, weight_slots, Tensor};
use crate::io::Weights;
use crate::ir::ops::{
    ActivationFn, AveragePooling2D, BatchNormalization, Conv2D, Conv2DTranspose, Cropping2D, Dense,
    ImageResize, MaxPooling2D, PadMode, ZeroPadding2D,
};
use crate::ir::{NodeId, Op};
use crate::Compiled;
use cudarc::driver::{CudaSlice, PushKernelArg};
use std::collections::{HashMap, HashSet};

/// A layer kind as the GPU trainer runs it.
#[derive(Clone, Copy)]
pub enum Kind<'a> {
    Input,
    Conv(&'a Conv2D),
    /// Dense on pixels (a 1x1 convolution: its kernel `[C, units]` is HWIO with H = W = 1).
    Dense(&'a Dense),
    ConvTranspose(&'a Conv2DTranspose),
    BatchNorm(&'a BatchNormalization),
    /// An activation layer (Activation, Softmax, plain ReLU).
    Activation(ActivationFn),
    MaxPool(&'a MaxPooling2D),
    AveragePool(&'a AveragePooling2D),
    /// ZeroPadding2D with zeros (not reflect/replicate).
    Pad(&'a ZeroPadding2D),
    Resize(ImageResize),
    Crop(&'a Cropping2D),
    /// Over the channels.
    Concat,
    /// Dropout (`spatial`: SpatialDropout2D, one draw per item and channel).
    Dropout {
        rate: f64,
        spatial: bool,
    },
    Add,
}

impl Kind<'_> {
    /// The activation fused into a convolution.
    fn fused(&self) -> Option<ActivationFn> {
        match self {
            Kind::Conv(o) => Some(o.args.activation),
            Kind::Dense(o) => Some(o.activation),
            Kind::ConvTranspose(o) => Some(o.args.activation),
            Kind::Input
            | Kind::BatchNorm(_)
            | Kind::Activation(_)
            | Kind::MaxPool(_)
            | Kind::AveragePool(_)
            | Kind::Pad(_)
            | Kind::Resize(_)
            | Kind::Crop(_)
            | Kind::Concat
            | Kind::Dropout { .. }
            | Kind::Add => None,
        }
    }
}

/// How the GPU trainer runs a layer, or why it cannot. One arm per kind.
pub fn gpu_kind(op: &Op) -> Result<Kind<'_>, String> {
    let no = |why: &str| Err(why.to_string());
    match op {
        Op::Input(_) => Ok(Kind::Input),
        Op::MaxPooling2D(o) => Ok(Kind::MaxPool(o)),
        Op::AveragePooling2D(o) => Ok(Kind::AveragePool(o)),
        Op::ZeroPadding2D(o) if o.mode != PadMode::Zeros => {
            no("reflect and replicate padding have no GPU backward yet")
        }
        Op::ZeroPadding2D(o) => Ok(Kind::Pad(o)),
        Op::Cropping2D(o) => Ok(Kind::Crop(o)),
        Op::Activation(o) => Ok(Kind::Activation(o.activation)),
        Op::Dropout(o) => Ok(Kind::Dropout {
            rate: o.rate,
            spatial: false,
        }),
        Op::SpatialDropout2D(o) => Ok(Kind::Dropout {
            rate: o.rate,
            spatial: true,
        }),
        Op::Add(_) => Ok(Kind::Add),
        Op::Conv2D(o) if o.groups != 1 => no("grouped convolutions have no GPU backward yet"),
        Op::Conv2D(o) => Ok(Kind::Conv(o)),
        Op::Conv2DTranspose(o) if o.args.dilation_rate != [1, 1] => {
            no("dilated transposed convolutions have no GPU backward")
        }
        Op::Conv2DTranspose(o) => Ok(Kind::ConvTranspose(o)),
        Op::BatchNormalization(o) if o.axis != -1 && o.axis != 3 => {
            no("BatchNormalization trains over the last axis only")
        }
        Op::BatchNormalization(o) => Ok(Kind::BatchNorm(o)),
        Op::Softmax(o) if o.axis != -1 && o.axis != 3 => {
            no("Softmax trains on the GPU over the last axis only")
        }
        Op::Softmax(_) => Ok(Kind::Activation(ActivationFn::Softmax)),
        Op::ReLU(o) if o.max_value.is_some() || o.negative_slope != 0.0 || o.threshold != 0.0 => {
            no("a ReLU with max_value, negative_slope or threshold has no GPU backward yet")
        }
        Op::ReLU(_) => Ok(Kind::Activation(ActivationFn::Relu)),
        Op::UpSampling2D(o) => Ok(Kind::Resize(o.resize())),
        Op::Resizing(o) => Ok(Kind::Resize(o.resize())),
        Op::Concatenate(o) if o.axis != -1 && o.axis != 3 => {
            no("Concatenate trains on the GPU over the channels only")
        }
        Op::Concatenate(_) => Ok(Kind::Concat),
        Op::Dense(o) => Ok(Kind::Dense(o)),
        Op::DepthwiseConv2D(_)
        | Op::SeparableConv2D(_)
        | Op::MultiHeadAttention(_)
        | Op::PatchExtract(_)
        | Op::PatchEmbedding(_)
        | Op::SwinTransformerBlock(_)
        | Op::PatchMerging(_)
        | Op::PatchExpanding(_)
        | Op::Flatten(_)
        | Op::GlobalAveragePooling2D(_)
        | Op::GlobalMaxPooling2D(_)
        | Op::Multiply(_)
        | Op::Subtract(_)
        | Op::CustomScaleLayer(_)
        | Op::Average(_)
        | Op::Maximum(_)
        | Op::Minimum(_)
        | Op::LeakyReLU(_)
        | Op::ELU(_)
        | Op::PReLU(_)
        | Op::GELU(_)
        | Op::Snake(_)
        | Op::Rescaling(_)
        | Op::Normalization(_)
        | Op::GroupNormalization(_)
        | Op::LayerNormalization(_)
        | Op::GaussianNoise(_)
        | Op::GaussianDropout(_)
        | Op::FixedDropout(_)
        | Op::Reshape(_)
        | Op::Lambda(_)
        | Op::Permute(_)
        | Op::TFOpLambda(_)
        | Op::Conv3D(_)
        | Op::Conv3DTranspose(_)
        | Op::MaxPooling3D(_)
        | Op::AveragePooling3D(_)
        | Op::UpSampling3D(_)
        | Op::Cropping3D(_)
        | Op::ZeroPadding3D(_)
        | Op::GlobalAveragePooling3D(_) => no("this kind has no GPU backward yet"),
    }
}

/// Where one layer's tensors sit in the arena (element offsets), and its item shape.
#[derive(Debug, Clone, Copy)]
struct Slots {
    out: usize,
    grad: usize,
    /// The fused activation's input (conv with a non-linear activation).
    pre: Option<usize>,
    /// Scratch for the gradient at the activation's input.
    dpre: Option<usize>,
    /// Dropout's mask.
    mask: Option<usize>,
    /// `[h, w, c]`.
    shape: [usize; 3],
}

impl Slots {
    fn item(&self) -> usize {
        self.shape.iter().product()
    }

    /// A dense NHWC tensor at `offset` with this layer's shape.
    fn view(&self, offset: usize) -> View {
        let [h, w, c] = self.shape;
        View {
            offset: offset as i64,
            item_stride: (h * w * c) as i64,
            row_stride: (w * c) as i64,
            pixel_stride: c as i32,
            h: h as i32,
            w: w as i32,
            c: c as i32,
        }
    }
}

/// One trainable variable: its weight slot and optimizer state on the device.
struct Variable {
    node: NodeId,
    slot: usize,
    state: Vec<CudaSlice<f32>>,
}

/// The loss buffers: targets, per-value losses, partial sums.
struct LossBuffers {
    dense: CudaSlice<f32>,
    classes: CudaSlice<i32>,
    values: CudaSlice<f64>,
    partial: CudaSlice<f64>,
    sums: CudaSlice<f64>,
}

/// What the loss reads: logits (at `z`) with the output (at `out`), or the output.
#[derive(Clone, Copy)]
enum Pred {
    Logits { z: usize, out: usize },
    Output(usize),
}

/// Values per partial sum of the loss reductions.
const CHUNK: usize = 256;

/// A model being trained on the GPU.
pub struct CudaTrainer<'c> {
    c: &'c Compiled,
    config: TrainConfig,
    dev: OpenDevice,
    max_batch: usize,
    slots: HashMap<NodeId, Slots>,
    arena: CudaSlice<f32>,
    /// The first gradient element and the count of them (zeroed before each backward pass).
    grads_at: (usize, usize),
    params: HashMap<NodeId, Vec<CudaSlice<f32>>>,
    /// Per layer with weights that get gradients: the kernel's (or gamma's) and the bias's
    /// (or beta's).
    weight_grads: HashMap<NodeId, Vec<CudaSlice<f32>>>,
    /// BatchNormalization's batch mean and variance.
    batch_stats: HashMap<NodeId, (CudaSlice<f32>, CudaSlice<f32>)>,
    variables: Vec<Variable>,
    /// The layers (owners of shared ones) whose weights got gradients this step.
    graded: HashSet<NodeId>,
    loss_buffers: LossBuffers,
    /// Updates applied so far (Keras's `optimizer.iterations`).
    pub iterations: u64,
    rng: rand::rngs::StdRng,
    output: NodeId,
    input: NodeId,
}

fn device(e: CudaError) -> TrainError {
    TrainError::Setup(e.to_string())
}

/// A size as the kernels take it: every tensor is checked to hold at most `i32::MAX` values
/// (`layout`), so its dimensions, and the kernel sizes bounded by the spec's limits, fit.
fn i(v: usize) -> i32 {
    v as i32
}

/// Binds each argument (a reference) to a local so that it outlives the launch, then launches
/// `name` with one thread per value of `total`.
macro_rules! launch {
    ($dev:expr, $name:expr, $total:expr; $($arg:expr),* $(,)?) => {{
        let f = $dev.functions.get($name).ok_or_else(|| {
            CudaError::Compile(format!("kernel {} was not loaded", $name))
        })?;
        let mut b = $dev.stream.launch_builder(f);
        launch!(@push b; $($arg),*);
        // SAFETY: the arguments follow the kernel's signature in kernels/train.cu (or the
        // inference kernel named), every window lies in the arena laid out for the largest
        // batch, and weight pointers are live device buffers of the sizes the kernel reads.
        unsafe { b.launch(grid($total)) }.map(|_| ()).map_err(driver)
    }};
    (@push $b:ident; ) => {};
    (@push $b:ident; $first:expr $(, $rest:expr)*) => {
        let arg = $first;
        $b.arg(arg);
        launch!(@push $b; $($rest),*);
    };
}

impl<'c> CudaTrainer<'c> {
    /// Checks every layer, binds the weights and lays out the arena for batches up to
    /// `max_batch`.
    pub fn new(
        c: &'c Compiled,
        weights: &Weights,
        config: TrainConfig,
        max_batch: usize,
    ) -> Result<Self, TrainError> {
        let ([output], [input]) = (&c.graph.outputs[..], &c.graph.inputs[..]) else {
            return Err(TrainError::Setup(
                "training needs a model with one input and one output".into(),
            ));
        };
        for &id in &c.info.schedule {
            let node = c.graph.node(id);
            let refuse = |why: String| TrainError::Layer {
                layer: node.name.clone(),
                class: node.op.class_name(),
                why: format!("{why}; train this model with --device cpu"),
            };
            if !node.regularizers.is_empty() {
                return Err(refuse(
                    "its regularizers (kernel_regularizer, ...) are applied by the CPU trainer \
                     only"
                        .into(),
                ));
            }
            let kind = gpu_kind(&node.op).map_err(refuse)?;
            // The GPU's Add sums whole tensors. The compiler refuses Adds of different shapes
            // (E-add-shape); this guard keeps a later change there from summing out of bounds.
            if matches!(kind, Kind::Add)
                && node
                    .inputs
                    .iter()
                    .any(|&k| item_shape(c, k) != item_shape(c, id))
            {
                return Err(refuse(
                    "an Add that broadcasts has no GPU training yet".into(),
                ));
            }
            let bn = matches!(node.op, Op::BatchNormalization(_));
            if node.shares.is_some() && bn {
                return Err(refuse(
                    "a shared BatchNormalization has no GPU training yet".into(),
                ));
            }
            if item_shape(c, id).len() != 3 {
                return Err(refuse(
                    "GPU training takes images (NHWC tensors) only".into(),
                ));
            }
        }
        let params =
            bind_weights(&c.graph, &c.info, &c.info.schedule, weights).map_err(|problems| {
                TrainError::Setup(format!(
                    "the weights do not fit the model: {}",
                    problems.join("; ")
                ))
            })?;
        let max_batch = max_batch.max(1);
        let (slots, grads_at, total) = layout(c, max_batch)?;
        let names: Vec<&str> = cuda::TRAIN_KERNELS
            .iter()
            .chain(FORWARD_KERNELS)
            .copied()
            .collect();
        let dev = cuda::open_device(&names).map_err(device)?;
        let out_len = slots[output].item() * max_batch;
        let weight_floats: usize = params.values().flatten().map(Vec::len).sum();
        let need = (total as u64
            + 3 * weight_floats as u64 * (1 + config.optimizer.slots()) as u64)
            .saturating_mul(4)
            .saturating_add(out_len as u64 * 20);
        let free = dev.ctx.mem_get_info().map_err(driver).map_err(device)?.0 as u64;
        if need > free {
            return Err(device(CudaError::Memory { need, free }));
        }
        let stream = dev.stream.clone();
        let alloc = |n: usize| stream.alloc_zeros::<f32>(n.max(1)).map_err(driver);
        let upload = |v: &[f32]| stream.clone_htod(v).map_err(driver);
        let arena = alloc(total).map_err(device)?;
        let mut device_params = HashMap::new();
        let mut weight_grads = HashMap::new();
        let mut batch_stats = HashMap::new();
        for (&id, values) in &params {
            // A shared layer's later calls use its first call's weights.
            if c.graph.node(id).shares.is_some() {
                continue;
            }
            let slots_of = values
                .iter()
                .map(|v| upload(v))
                .collect::<Result<Vec<_>, _>>()
                .map_err(device)?;
            device_params.insert(id, slots_of);
            let kind = gpu_kind(&c.graph.node(id).op).map_err(TrainError::Setup)?;
            let graded = matches!(
                kind,
                Kind::Conv(_) | Kind::Dense(_) | Kind::ConvTranspose(_) | Kind::BatchNorm(_)
            );
            if graded && values.len() >= 2 {
                let pair = vec![
                    alloc(values[0].len()).map_err(device)?,
                    alloc(values[1].len()).map_err(device)?,
                ];
                weight_grads.insert(id, pair);
            }
            if let Kind::BatchNorm(_) = kind {
                let n = values[0].len();
                let pair = (alloc(n).map_err(device)?, alloc(n).map_err(device)?);
                batch_stats.insert(id, pair);
            }
        }
        let variables = trainable_slots(c)
            .into_iter()
            .map(|(node, slot)| {
                let len = params[&node][slot].len();
                let state = (0..config.optimizer.slots())
                    .map(|_| alloc(len))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Variable { node, slot, state })
            })
            .collect::<Result<Vec<_>, CudaError>>()
            .map_err(device)?;
        let c_out = slots[output].shape[2].max(1);
        let chunks = out_len.div_ceil(CHUNK).max(1);
        let loss_buffers = LossBuffers {
            dense: alloc(out_len).map_err(device)?,
            classes: stream
                .alloc_zeros::<i32>((out_len / c_out).max(1))
                .map_err(driver)
                .map_err(device)?,
            values: stream
                .alloc_zeros::<f64>(out_len.max(1))
                .map_err(driver)
                .map_err(device)?,
            partial: stream
                .alloc_zeros::<f64>(3 * chunks)
                .map_err(driver)
                .map_err(device)?,
            sums: stream
                .alloc_zeros::<f64>(3)
                .map_err(driver)
                .map_err(device)?,
        };
        Ok(CudaTrainer {
            c,
            rng: crate::io::seeded_rng(config.seed),
            config,
            dev,
            max_batch,
            slots,
            arena,
            grads_at,
            params: device_params,
            weight_grads,
            batch_stats,
            variables,
            graded: HashSet::new(),
            loss_buffers,
            iterations: 0,
            output: *output,
            input: *input,
        })
    }

    /// Which kernels ran the step: the device and how its kernels were loaded.
    pub fn describe(&self) -> String {
        let name = self.dev.ctx.name().unwrap_or_else(|_| "CUDA device".into());
        format!("{name} ({})", self.dev.kernel_image)
    }

    /// The learning rate of the next updates.
    pub fn set_learning_rate(&mut self, lr: f32) {
        self.config.learning_rate = lr;
    }

    /// A fresh stream of dropout draws (as [`super::Trainer::reseed`]).
    pub fn reseed(&mut self, seed: u64) {
        self.rng = crate::io::seeded_rng(seed);
    }

    /// Every variable of the model (trainable or not), copied back from the device.
    pub fn weights(&self) -> Result<Weights, TrainError> {
        let mut host = HashMap::new();
        for (&id, slots) in &self.params {
            let values = slots
                .iter()
                .map(|s| self.dev.stream.clone_dtoh(s).map_err(driver))
                .collect::<Result<Vec<_>, _>>()
                .map_err(device)?;
            host.insert(id, values);
        }
        Ok(named_weights(self.c, &host))
    }

    /// The optimizer's state copied back from the device: per trainable variable `(layer,
    /// variable, slots)`, as [`super::Trainer::optimizer_state`] lists it.
    #[allow(clippy::type_complexity)]
    pub fn optimizer_state(
        &self,
    ) -> Result<Vec<(String, &'static str, Vec<Vec<f32>>)>, TrainError> {
        self.variables
            .iter()
            .map(|v| {
                let node = self.c.graph.node(v.node);
                let slots = v
                    .state
                    .iter()
                    .map(|s| self.dev.stream.clone_dtoh(s).map_err(driver))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(device)?;
                Ok((node.name.clone(), weight_slots(&node.op)[v.slot], slots))
            })
            .collect()
    }

    /// Restores optimizer state (as [`super::Trainer::restore_optimizer`]) and the update count.
    pub fn restore_optimizer(
        &mut self,
        lookup: &StateLookup,
        iterations: u64,
    ) -> Result<(), String> {
        for v in &mut self.variables {
            let node = self.c.graph.node(v.node);
            let var = weight_slots(&node.op)[v.slot];
            for (k, slot) in v.state.iter_mut().enumerate() {
                let values = super::restored_slot(lookup, &node.name, var, k, slot.len())?;
                self.dev
                    .stream
                    .memcpy_htod(&values, slot)
                    .map_err(|e| driver(e).to_string())?;
            }
        }
        self.iterations = iterations;
        Ok(())
    }

    /// One training step on a batch; returns the loss computed before the update.
    pub fn step(&mut self, x: &Tensor, targets: &BatchTargets) -> Result<f64, TrainError> {
        let batch = x.shape.first().copied().unwrap_or(0);
        let item_in = self.slots[&self.input].item();
        if batch == 0 || batch > self.max_batch || x.data.len() != batch * item_in {
            return Err(TrainError::Setup(format!(
                "a batch of shape {:?} does not fit the GPU trainer (batches of 1 to {} of {:?})",
                x.shape, self.max_batch, self.slots[&self.input].shape
            )));
        }
        self.forward(x, batch).map_err(device)?;
        let (start, len) = self.grads_at;
        let mut grads = self.arena.slice_mut(start..start + len);
        self.dev
            .stream
            .memset_zeros(&mut grads)
            .map_err(|e| device(driver(e)))?;
        let (loss, grad_is_logits) = self.loss(batch, targets).map_err(device)?;
        if !loss.is_finite() {
            return Err(TrainError::NotFinite {
                step: self.iterations + 1,
                value: loss,
            });
        }
        self.backward(batch, grad_is_logits).map_err(device)?;
        self.apply().map_err(device)?;
        Ok(loss)
    }

    /// The forward pass in training mode; BatchNormalization's moving statistics move.
    fn forward(&mut self, x: &Tensor, batch: usize) -> Result<(), CudaError> {
        let n = i(batch);
        let c = self.c;
        for &id in &c.info.schedule {
            let node = c.graph.node(id);
            let s = self.slots[&id];
            let total = batch * s.item();
            let y = s.view(s.out);
            let xs = node.inputs.first().map(|k| self.slots[k]);
            let xs = || xs.ok_or_else(missing);
            match gpu_kind(&node.op).map_err(CudaError::Model)? {
                Kind::Input => {
                    let mut dst = self.arena.slice_mut(s.out..s.out + total);
                    self.dev
                        .stream
                        .memcpy_htod(&x.data, &mut dst)
                        .map_err(driver)?;
                }
                Kind::Conv(o) => {
                    let xs = xs()?;
                    let g = conv_geometry(o, &xs, &s);
                    self.conv_forward(id, xs, s, g, o.args.activation, batch)?;
                }
                Kind::Dense(o) => {
                    let xs = xs()?;
                    self.conv_forward(id, xs, s, DENSE_GEOMETRY, o.activation, batch)?;
                }
                Kind::ConvTranspose(o) => {
                    let xs = xs()?;
                    let (rows, cols) = (
                        o.geometry(0, xs.shape[0], s.shape[0]),
                        o.geometry(1, xs.shape[1], s.shape[1]),
                    );
                    let target = s.view(s.pre.unwrap_or(s.out));
                    let w = &self.params[&c.graph.layer_owner(id)];
                    launch!(self.dev, "conv2d_transpose_f32", total;
                        &mut self.arena, &xs.view(xs.out), &target, &w[0], &w[1],
                        &i(rows.kernel), &i(cols.kernel), &i(rows.stride), &i(cols.stride),
                        &i(rows.crop_before), &i(cols.crop_before), &0i32, &n)?;
                    self.activate(o.args.activation, s, s.pre, batch)?;
                }
                Kind::BatchNorm(o) => {
                    let xs = xs()?;
                    let eps = o.epsilon as f32;
                    let channels = i(s.shape[2]);
                    let p = self.params.get_mut(&id).ok_or_else(missing)?;
                    let (gb, moving) = p.split_at_mut(2);
                    let (mm, mv) = moving.split_at_mut(1);
                    if node.trainable {
                        let (mean, var) = self.batch_stats.get_mut(&id).ok_or_else(missing)?;
                        launch!(self.dev, "train_bn_moments_f32", s.shape[2];
                            &mut self.arena, &xs.view(xs.out), &mut *mean, &mut *var, &n)?;
                        // TF's fused kernel hands the moving variance n / (n - 1) times the
                        // batch variance (as the CPU trainer).
                        let count = (batch * s.shape[0] * s.shape[1]) as f32;
                        let bessel = if count > 1.0 {
                            count / (count - 1.0)
                        } else {
                            1.0
                        };
                        launch!(self.dev, "train_bn_moving", s.shape[2];
                            &mut mm[0], &mut mv[0], &*mean, &*var, &channels,
                            &(o.momentum as f32), &bessel)?;
                        launch!(self.dev, "train_bn_forward_f32", total;
                            &mut self.arena, &xs.view(xs.out), &y, &gb[0], &gb[1], &*mean,
                            &*var, &eps, &n)?;
                    } else {
                        // A frozen BatchNormalization runs in inference mode (Keras 2).
                        launch!(self.dev, "train_bn_forward_f32", total;
                            &mut self.arena, &xs.view(xs.out), &y, &gb[0], &gb[1], &mm[0],
                            &mv[0], &eps, &n)?;
                    }
                }
                Kind::Activation(a) => {
                    let xs = xs()?;
                    self.activate(a, s, Some(xs.out), batch)?;
                }
                Kind::MaxPool(o) => {
                    let xs = xs()?;
                    let (rows, cols) = (
                        o.geometry(0, xs.shape[0], s.shape[0]),
                        o.geometry(1, xs.shape[1], s.shape[1]),
                    );
                    launch!(self.dev, "max_pool_f32", total;
                        &mut self.arena, &xs.view(xs.out), &y, &i(rows.kernel),
                        &i(cols.kernel), &i(rows.stride), &i(cols.stride),
                        &i(rows.pad_before), &i(cols.pad_before), &n)?;
                }
                Kind::AveragePool(o) => {
                    let xs = xs()?;
                    let (rows, cols) = (
                        o.geometry(0, xs.shape[0], s.shape[0]),
                        o.geometry(1, xs.shape[1], s.shape[1]),
                    );
                    launch!(self.dev, "average_pool_f32", total;
                        &mut self.arena, &xs.view(xs.out), &y, &i(rows.kernel),
                        &i(cols.kernel), &i(rows.stride), &i(cols.stride),
                        &i(rows.pad_before), &i(cols.pad_before), &n)?;
                }
                Kind::Pad(o) => {
                    let xs = xs()?;
                    launch!(self.dev, "shift_window_f32", total;
                        &mut self.arena, &xs.view(xs.out), &y, &-(o.padding[0] as i32),
                        &-(o.padding[2] as i32), &0i32, &n)?;
                }
                Kind::Resize(o) => {
                    let xs = xs()?;
                    launch!(self.dev, "resize_f32", total;
                        &mut self.arena, &xs.view(xs.out), &y, &resize_mode(o), &n)?;
                }
                Kind::Crop(o) => {
                    let xs = xs()?;
                    launch!(self.dev, "shift_window_f32", total;
                        &mut self.arena, &xs.view(xs.out), &y, &(o.cropping[0] as i32),
                        &(o.cropping[2] as i32), &0i32, &n)?;
                }
                Kind::Concat => {
                    let mut first = 0;
                    for k in &node.inputs {
                        let xs = self.slots[k];
                        let part = channel_slice(&s, s.out, first, xs.shape[2]);
                        first += xs.shape[2];
                        launch!(self.dev, "shift_window_f32", batch * xs.item();
                            &mut self.arena, &xs.view(xs.out), &part, &0i32, &0i32, &0i32,
                            &n)?;
                    }
                }
                Kind::Dropout { rate, spatial } => {
                    let units = spatial.then_some((s.shape[0] * s.shape[1], s.shape[2]));
                    self.dropout(id, xs()?, rate, units, batch)?
                }
                Kind::Add => {
                    for (k, input) in node.inputs.iter().enumerate() {
                        let xs = self.slots[input];
                        let store = i32::from(k == 0);
                        launch!(self.dev, "train_scale_add", total;
                            &mut self.arena, &(xs.out as i64), &0i64, &(s.out as i64),
                            &(total as i64), &0i32, &store)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// `out = activation(z)` where `z` is at `pre` (the layer's own pre-activation or its
    /// input); nothing where the activation is linear and `pre` is the layer's own (absent).
    fn activate(
        &mut self,
        activation: ActivationFn,
        s: Slots,
        pre: Option<usize>,
        batch: usize,
    ) -> Result<(), CudaError> {
        let Some(z) = pre else {
            return Ok(());
        };
        let total = batch * s.item();
        let n = i(batch);
        let code = match activation {
            ActivationFn::Softmax => 0,
            other => activation_code(other),
        };
        launch!(self.dev, "activation_f32", total;
            &mut self.arena, &s.view(z), &s.view(s.out), &code, &n)?;
        if activation == ActivationFn::Softmax {
            let pixels = (batch * s.shape[0] * s.shape[1]) as i64;
            launch!(self.dev, "softmax_f32", pixels as usize;
                &mut self.arena, &(s.out as i64), &pixels, &i(s.shape[2]), &1i64)?;
        }
        Ok(())
    }

    /// Dropout in training: a mask from the host's draws (the CPU trainer's sequence), then
    /// `out = x * mask`; a copy where the rate is 0.
    fn dropout(
        &mut self,
        id: NodeId,
        xs: Slots,
        rate: f64,
        units: Option<(usize, usize)>,
        batch: usize,
    ) -> Result<(), CudaError> {
        let s = self.slots[&id];
        let total = batch * s.item();
        let mask_at = s.mask.ok_or_else(missing)?;
        let use_mask = i32::from(rate > 0.0);
        if rate > 0.0 {
            let mask = layers::dropout_mask(total, rate, units, &mut self.rng);
            let mut dst = self.arena.slice_mut(mask_at..mask_at + total);
            self.dev
                .stream
                .memcpy_htod(&mask, &mut dst)
                .map_err(driver)?;
        }
        launch!(self.dev, "train_scale_add", total;
            &mut self.arena, &(xs.out as i64), &(mask_at as i64), &(s.out as i64),
            &(total as i64), &use_mask, &1i32)
    }

    /// The loss of the batch and its gradient into the output's gradient slot; whether that
    /// gradient is at the logits (the output activation's input), as the CPU trainer decides.
    fn loss(&mut self, batch: usize, targets: &BatchTargets) -> Result<(f64, bool), CudaError> {
        let out_node = self.c.graph.node(self.output);
        let s = self.slots[&self.output];
        let total = batch * s.item();
        let c = s.shape[2].max(1);
        let pixels = total / c;
        let squash = layers::output_activation(&out_node.op);
        let logits = match squash {
            Some((a, at)) if Some(a) == self.config.loss.takes_logits_of() => match at {
                PreActivation::Saved => s.pre,
                PreActivation::Input => Some(self.slots[&out_node.inputs[0]].out),
            },
            _ => None,
        };
        let (pred, grad_is_logits) = match (logits, self.config.from_logits) {
            (Some(z), _) => (Pred::Logits { z, out: s.out }, true),
            (None, true) => (
                Pred::Logits {
                    z: s.out,
                    out: s.out,
                },
                false,
            ),
            (None, false) => (Pred::Output(s.out), false),
        };
        let (p_off, is_logits) = match pred {
            Pred::Logits { z, .. } => (z, 1i32),
            Pred::Output(out) => (out, 0i32),
        };
        // Targets onto the device.
        let b = &mut self.loss_buffers;
        let stream = &self.dev.stream;
        let sparse = match targets {
            BatchTargets::Dense(t) => {
                if t.data.len() != total {
                    return Err(CudaError::Model(format!(
                        "the targets hold {} values for an output of {total}",
                        t.data.len()
                    )));
                }
                let mut dst = b.dense.slice_mut(0..total);
                stream.memcpy_htod(&t.data, &mut dst).map_err(driver)?;
                false
            }
            BatchTargets::Classes { classes, .. } => {
                if classes.len() != pixels {
                    return Err(CudaError::Model(format!(
                        "the targets hold {} classes for an output of {pixels} pixels",
                        classes.len()
                    )));
                }
                let as_i32 = classes
                    .iter()
                    .map(|&k| i32::try_from(k))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| CudaError::Model("a class index beyond 32 bits".into()))?;
                let mut dst = b.classes.slice_mut(0..pixels);
                stream.memcpy_htod(&as_i32, &mut dst).map_err(driver)?;
                true
            }
        };
        let g = s.grad as i64;
        let (t64, p64, c32) = (total as i64, pixels as i64, i(c));
        // The mean of the per-value losses over `count` values.
        let mean_of = |this: &mut Self, count: usize| -> Result<f64, CudaError> {
            let sums = this.sum(count, None)?;
            Ok(sums[0] / count.max(1) as f64)
        };
        let value = match (self.config.loss, pred, sparse) {
            (Loss::CategoricalCrossentropy, _, false)
            | (Loss::SparseCategoricalCrossentropy, _, true) => {
                let b = &mut self.loss_buffers;
                launch!(self.dev, "train_loss_categorical", pixels;
                    &mut self.arena, &(p_off as i64), &is_logits, &b.dense, &b.classes,
                    &i32::from(sparse), &mut b.values, &g, &p64, &c32)?;
                mean_of(self, pixels)?
            }
            (Loss::BinaryCrossentropy | Loss::Focal, _, false) => {
                let kind = i32::from(self.config.loss == Loss::Focal);
                self.binary(p_off, s.out, is_logits, total, kind)?;
                mean_of(self, total)?
            }
            (Loss::MeanSquaredError, Pred::Output(out), false) => {
                let b = &mut self.loss_buffers;
                launch!(self.dev, "train_loss_mse", total;
                    &mut self.arena, &(out as i64), &b.dense, &mut b.values, &g, &t64)?;
                mean_of(self, total)?
            }
            (Loss::Dice, Pred::Output(out), false) => self.dice(out, total, 0)?,
            (Loss::BceDice, Pred::Logits { z, out }, false) => {
                self.binary(z, out, 1, total, 0)?;
                let bce = mean_of(self, total)?;
                bce + self.dice(out, total, 2)?
            }
            (Loss::BceDice, Pred::Output(out), false) => {
                self.binary(out, out, 0, total, 0)?;
                let bce = mean_of(self, total)?;
                bce + self.dice(out, total, 1)?
            }
            // As the CPU trainer: a loss given what it does not take has no value.
            (
                Loss::CategoricalCrossentropy
                | Loss::SparseCategoricalCrossentropy
                | Loss::BinaryCrossentropy
                | Loss::Focal
                | Loss::MeanSquaredError
                | Loss::Dice
                | Loss::BceDice,
                _,
                _,
            ) => f64::NAN,
        };
        Ok((value, grad_is_logits))
    }

    /// Binary crossentropy (kind 0) or focal (1) per value into the loss buffers, the gradient
    /// into the output's gradient slot.
    fn binary(
        &mut self,
        p_off: usize,
        out_off: usize,
        logits: i32,
        total: usize,
        kind: i32,
    ) -> Result<(), CudaError> {
        let g = self.slots[&self.output].grad as i64;
        let b = &mut self.loss_buffers;
        launch!(self.dev, "train_loss_binary", total;
            &mut self.arena, &(p_off as i64), &(out_off as i64), &logits, &b.dense,
            &mut b.values, &g, &(total as i64), &kind)
    }

    /// Dice over the batch from the output at `out`: the loss, and its gradient stored (mode
    /// 0), added (1) or added through the sigmoid (2) into the output's gradient slot.
    fn dice(&mut self, out: usize, total: usize, mode: i32) -> Result<f64, CudaError> {
        let sums = self.sum(total, Some(out))?;
        let g = self.slots[&self.output].grad as i64;
        let b = &mut self.loss_buffers;
        launch!(self.dev, "train_dice_grad", total;
            &mut self.arena, &(out as i64), &b.dense, &b.sums, &g, &(total as i64), &mode)?;
        let (num, den) = (2.0 * sums[0] + 1.0, sums[1] + sums[2] + 1.0);
        Ok(1.0 - num / den)
    }

    /// Sums of `count` values in fixed-order chunks: the per-value losses, or (`dice`: the
    /// output's offset) Σ p·y, Σ y, Σ p.
    fn sum(&mut self, count: usize, dice: Option<usize>) -> Result<[f64; 3], CudaError> {
        let chunks = count.div_ceil(CHUNK).max(1);
        let b = &mut self.loss_buffers;
        launch!(self.dev, "train_sum_chunks", chunks;
            &b.values, &self.arena, &(dice.unwrap_or(0) as i64), &b.dense,
            &i32::from(dice.is_some()), &(count as i64), &(CHUNK as i64), &mut b.partial)?;
        launch!(self.dev, "train_sum_partials", 1;
            &b.partial, &(chunks as i64), &mut b.sums)?;
        let host = self.dev.stream.clone_dtoh(&b.sums).map_err(driver)?;
        Ok([host[0], host[1], host[2]])
    }

    /// The backward pass, in reverse schedule order, from the gradient the loss left in the
    /// output's slot (every other gradient zeroed before).
    fn backward(&mut self, batch: usize, grad_is_logits: bool) -> Result<(), CudaError> {
        let n = i(batch);
        let c = self.c;
        let mut reached: HashSet<NodeId> = HashSet::from([self.output]);
        self.graded.clear();
        for &id in c.info.schedule.iter().rev() {
            let node = c.graph.node(id);
            // As the CPU trainer: a layer whose output the loss does not reach gets nothing.
            if !reached.contains(&id) {
                continue;
            }
            reached.extend(node.inputs.iter().copied());
            let s = self.slots[&id];
            let total = batch * s.item();
            let at_logits = id == self.output && grad_is_logits;
            let dy = s.view(s.grad);
            let xs = node.inputs.first().map(|k| self.slots[k]);
            let xs = || xs.ok_or_else(missing);
            // Whether an input wants a gradient (the model's input does not).
            let wants = |k: &NodeId| !matches!(c.graph.node(*k).op, Op::Input(_));
            let first_wants = node.inputs.first().is_some_and(wants);
            match gpu_kind(&node.op).map_err(CudaError::Model)? {
                Kind::Input => {}
                Kind::Conv(o) => {
                    let xs = xs()?;
                    let dz = self.pre_gradient(o.args.activation, s, s.pre, at_logits, batch)?;
                    let g = conv_geometry(o, &xs, &s);
                    self.conv_backward(id, xs, s, dz, g, first_wants, batch)?;
                }
                Kind::Dense(o) => {
                    let xs = xs()?;
                    let dz = self.pre_gradient(o.activation, s, s.pre, at_logits, batch)?;
                    self.conv_backward(id, xs, s, dz, DENSE_GEOMETRY, first_wants, batch)?;
                }
                Kind::ConvTranspose(o) => {
                    let xs = xs()?;
                    let dz = self.pre_gradient(o.args.activation, s, s.pre, at_logits, batch)?;
                    let (rows, cols) = (
                        o.geometry(0, xs.shape[0], s.shape[0]),
                        o.geometry(1, xs.shape[1], s.shape[1]),
                    );
                    let g = [
                        i(rows.kernel),
                        i(cols.kernel),
                        i(rows.stride),
                        i(cols.stride),
                        i(rows.crop_before),
                        i(cols.crop_before),
                    ];
                    let dz = s.view(dz);
                    let owner = c.graph.layer_owner(id);
                    let add = i32::from(!self.graded.insert(owner));
                    let pair = self.weight_grads.get_mut(&owner).ok_or_else(missing)?;
                    let (dw, db) = pair.split_at_mut(1);
                    let w = &self.params[&owner];
                    launch!(self.dev, "train_conv2d_transpose_dw_f32", w[0].len();
                        &mut self.arena, &xs.view(xs.out), &dz, &mut dw[0], &g[0], &g[1],
                        &g[2], &g[3], &g[4], &g[5], &add, &n)?;
                    launch!(self.dev, "train_bias_grad_f32", s.shape[2];
                        &mut self.arena, &dz, &mut db[0], &add, &n)?;
                    if first_wants {
                        launch!(self.dev, "train_conv2d_transpose_dx_f32", batch * xs.item();
                            &mut self.arena, &dz, &xs.view(xs.grad), &w[0], &g[0], &g[1],
                            &g[2], &g[3], &g[4], &g[5], &n)?;
                    }
                }
                Kind::BatchNorm(o) => {
                    let xs = xs()?;
                    let eps = o.epsilon as f32;
                    let p = &self.params[&id];
                    let (mean, var) = match self.batch_stats.get(&id) {
                        Some((m, v)) if node.trainable => (m, v),
                        _ => (&p[2], &p[3]),
                    };
                    // Not shared (refused above): its own gradient.
                    self.graded.insert(id);
                    let pair = self.weight_grads.get_mut(&id).ok_or_else(missing)?;
                    let (dgamma, dbeta) = pair.split_at_mut(1);
                    launch!(self.dev, "train_bn_param_grads_f32", s.shape[2];
                        &mut self.arena, &xs.view(xs.out), &dy, mean, var, &eps,
                        &mut dgamma[0], &mut dbeta[0], &n)?;
                    if first_wants {
                        launch!(self.dev, "train_bn_dx_f32", total;
                            &mut self.arena, &xs.view(xs.out), &dy, &xs.view(xs.grad), &p[0],
                            mean, var, &dgamma[0], &dbeta[0], &eps,
                            &i32::from(node.trainable), &n)?;
                    }
                }
                Kind::Activation(a) => {
                    let xs = xs()?;
                    let dz = self.pre_gradient(a, s, Some(xs.out), at_logits, batch)?;
                    if first_wants {
                        self.add_into(dz, None, xs.grad, total)?;
                    }
                }
                Kind::MaxPool(o) => {
                    let xs = xs()?;
                    let (rows, cols) = (
                        o.geometry(0, xs.shape[0], s.shape[0]),
                        o.geometry(1, xs.shape[1], s.shape[1]),
                    );
                    if first_wants {
                        launch!(self.dev, "train_max_pool_dx_f32", batch * xs.item();
                            &mut self.arena, &xs.view(xs.out), &dy, &xs.view(xs.grad),
                            &i(rows.kernel), &i(cols.kernel), &i(rows.stride),
                            &i(cols.stride), &i(rows.pad_before), &i(cols.pad_before), &n)?;
                    }
                }
                Kind::AveragePool(o) => {
                    let xs = xs()?;
                    let (rows, cols) = (
                        o.geometry(0, xs.shape[0], s.shape[0]),
                        o.geometry(1, xs.shape[1], s.shape[1]),
                    );
                    if first_wants {
                        launch!(self.dev, "train_average_pool_dx_f32", batch * xs.item();
                            &mut self.arena, &dy, &xs.view(xs.grad), &i(rows.kernel),
                            &i(cols.kernel), &i(rows.stride), &i(cols.stride),
                            &i(rows.pad_before), &i(cols.pad_before), &n)?;
                    }
                }
                Kind::Pad(o) => {
                    let xs = xs()?;
                    let (t, l) = (o.padding[0] as i32, o.padding[2] as i32);
                    if first_wants {
                        launch!(self.dev, "train_window_add_f32", batch * xs.item();
                            &mut self.arena, &dy, &xs.view(xs.grad), &t, &l, &n)?;
                    }
                }
                Kind::Resize(o) => {
                    let xs = xs()?;
                    let total = batch * xs.item();
                    if first_wants {
                        match resize_mode(o) {
                            0 => launch!(self.dev, "train_resize_nearest_dx_f32", total;
                                &mut self.arena, &dy, &xs.view(xs.grad), &n)?,
                            mode => launch!(self.dev, "train_resize_bilinear_dx_f32", total;
                                &mut self.arena, &dy, &xs.view(xs.grad), &mode, &n)?,
                        }
                    }
                }
                Kind::Crop(o) => {
                    let xs = xs()?;
                    let (t, l) = (-(o.cropping[0] as i32), -(o.cropping[2] as i32));
                    if first_wants {
                        launch!(self.dev, "train_window_add_f32", batch * xs.item();
                            &mut self.arena, &dy, &xs.view(xs.grad), &t, &l, &n)?;
                    }
                }
                Kind::Concat => {
                    let mut first = 0;
                    for k in &node.inputs {
                        let xs = self.slots[k];
                        let part = channel_slice(&s, s.grad, first, xs.shape[2]);
                        first += xs.shape[2];
                        if wants(k) {
                            launch!(self.dev, "train_window_add_f32", batch * xs.item();
                                &mut self.arena, &part, &xs.view(xs.grad), &0i32, &0i32, &n)?;
                        }
                    }
                }
                Kind::Dropout { rate, .. } => {
                    let xs = xs()?;
                    // A rate of 0 drew no mask: the gradient passes as it is.
                    let mask = if rate > 0.0 { s.mask } else { None };
                    if first_wants {
                        self.add_into(s.grad, mask, xs.grad, total)?;
                    }
                }
                Kind::Add => {
                    for k in &node.inputs {
                        if wants(k) {
                            let dst = self.slots[k].grad;
                            self.add_into(s.grad, None, dst, total)?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// A convolution (kernel HWIO, `g` = kernel, stride, dilation, padding before, rows then
    /// columns) into the layer's pre-activation or output, then its activation.
    fn conv_forward(
        &mut self,
        id: NodeId,
        xs: Slots,
        s: Slots,
        g: [i32; 8],
        activation: ActivationFn,
        batch: usize,
    ) -> Result<(), CudaError> {
        let n = i(batch);
        let target = s.view(s.pre.unwrap_or(s.out));
        let w = &self.params[&self.c.graph.layer_owner(id)];
        launch!(self.dev, "conv2d_f32", batch * s.item();
            &mut self.arena, &xs.view(xs.out), &View::default(), &target, &w[0], &w[1], &g[0],
            &g[1], &g[2], &g[3], &g[4], &g[5], &g[6], &g[7], &0i32, &n)?;
        self.activate(activation, s, s.pre, batch)
    }

    /// A convolution's kernel and bias gradients from `dz` (at the activation's input), and
    /// its input's where `input_grad`.
    #[allow(clippy::too_many_arguments)]
    fn conv_backward(
        &mut self,
        id: NodeId,
        xs: Slots,
        s: Slots,
        dz: usize,
        g: [i32; 8],
        input_grad: bool,
        batch: usize,
    ) -> Result<(), CudaError> {
        let n = i(batch);
        let dz = s.view(dz);
        let owner = self.c.graph.layer_owner(id);
        // A shared layer's calls add to one gradient.
        let add = i32::from(!self.graded.insert(owner));
        let pair = self.weight_grads.get_mut(&owner).ok_or_else(missing)?;
        let (dw, db) = pair.split_at_mut(1);
        let w = &self.params[&owner];
        launch!(self.dev, "train_conv2d_dw_f32", w[0].len();
            &mut self.arena, &xs.view(xs.out), &dz, &mut dw[0], &g[0], &g[1], &g[2], &g[3],
            &g[4], &g[5], &g[6], &g[7], &add, &n)?;
        launch!(self.dev, "train_bias_grad_f32", s.shape[2];
            &mut self.arena, &dz, &mut db[0], &add, &n)?;
        if input_grad {
            launch!(self.dev, "train_conv2d_dx_f32", batch * xs.item();
                &mut self.arena, &dz, &xs.view(xs.grad), &w[0], &g[0], &g[1], &g[2], &g[3],
                &g[4], &g[5], &g[6], &g[7], &n)?;
        }
        Ok(())
    }

    /// `dst += src * mask` (dense; no mask: `dst += src`).
    fn add_into(
        &mut self,
        src: usize,
        mask: Option<usize>,
        dst: usize,
        total: usize,
    ) -> Result<(), CudaError> {
        launch!(self.dev, "train_scale_add", total;
            &mut self.arena, &(src as i64), &(mask.unwrap_or(0) as i64), &(dst as i64),
            &(total as i64), &i32::from(mask.is_some()), &0i32)
    }

    /// The gradient at the input of a layer's output activation (`z` where the activation
    /// read it): the layer's gradient itself where the activation is linear or the loss gave
    /// the logits' gradient, else through the derivative into the layer's scratch.
    fn pre_gradient(
        &mut self,
        activation: ActivationFn,
        s: Slots,
        z: Option<usize>,
        at_logits: bool,
        batch: usize,
    ) -> Result<usize, CudaError> {
        let (Some(z), Some(dz), false) = (z, s.dpre, at_logits) else {
            return Ok(s.grad);
        };
        let total = batch * s.item();
        if activation == ActivationFn::Softmax {
            let pixels = batch * s.shape[0] * s.shape[1];
            launch!(self.dev, "train_softmax_backward", pixels;
                &mut self.arena, &(s.out as i64), &(s.grad as i64), &(dz as i64),
                &(pixels as i64), &i(s.shape[2]))?;
        } else {
            launch!(self.dev, "train_activation_backward", total;
                &mut self.arena, &(z as i64), &(s.grad as i64), &(dz as i64), &(total as i64),
                &activation_code(activation))?;
        }
        Ok(dz)
    }

    /// One optimizer update of every trainable variable.
    fn apply(&mut self) -> Result<(), CudaError> {
        self.iterations += 1;
        let lr = self.config.learning_rate;
        let wd = self.config.weight_decay.unwrap_or(0.0);
        let t = self.iterations as f32;
        for v in &mut self.variables {
            // As the CPU trainer: a variable without a gradient this step is left alone.
            if !self.graded.contains(&v.node) {
                continue;
            }
            let g = self
                .weight_grads
                .get(&v.node)
                .and_then(|g| g.get(v.slot))
                .ok_or_else(missing)?;
            let w = self
                .params
                .get_mut(&v.node)
                .and_then(|p| p.get_mut(v.slot))
                .ok_or_else(missing)?;
            let len = w.len() as i64;
            match self.config.optimizer {
                Optimizer::Adam {
                    beta_1,
                    beta_2,
                    epsilon,
                }
                | Optimizer::AdamW {
                    beta_1,
                    beta_2,
                    epsilon,
                } => {
                    // As the CPU optimizer computes it, in f32 on the host.
                    let alpha = lr * (1.0 - beta_2.powf(t)).sqrt() / (1.0 - beta_1.powf(t));
                    let (m, rest) = v.state.split_at_mut(1);
                    launch!(self.dev, "train_adam", len as usize;
                        w, g, &mut m[0], &mut rest[0], &len, &lr, &beta_1, &beta_2, &epsilon,
                        &alpha, &wd)?;
                }
                Optimizer::Sgd { momentum, nesterov } => {
                    let use_m = i32::from(momentum > 0.0);
                    // Without momentum there is no state: the gradient stands in (never read).
                    let m: &CudaSlice<f32> = v.state.first().unwrap_or(g);
                    launch!(self.dev, "train_sgd", len as usize;
                        w, g, m, &use_m, &len, &lr, &momentum, &i32::from(nesterov), &wd)?;
                }
                Optimizer::RmsProp {
                    rho,
                    momentum,
                    epsilon,
                } => {
                    let use_mom = i32::from(momentum > 0.0);
                    let (velocity, rest) = v.state.split_at_mut(1);
                    let mom: &CudaSlice<f32> = rest.first().unwrap_or(g);
                    launch!(self.dev, "train_rmsprop", len as usize;
                        w, g, &mut velocity[0], mom, &use_mom, &len, &lr, &rho, &momentum,
                        &epsilon, &wd)?;
                }
            }
        }
        Ok(())
    }
}

/// The inference kernels the forward pass runs.
const FORWARD_KERNELS: &[&str] = &[
    "average_pool_f32",
    "conv2d_f32",
    "conv2d_transpose_f32",
    "activation_f32",
    "softmax_f32",
    "max_pool_f32",
    "resize_f32",
    "shift_window_f32",
];

/// Dense on pixels as a convolution: 1x1, stride 1, no padding.
const DENSE_GEOMETRY: [i32; 8] = [1, 1, 1, 1, 1, 1, 0, 0];

/// A Conv2D's kernel, strides, dilation and padding before, rows then columns.
fn conv_geometry(o: &Conv2D, xs: &Slots, s: &Slots) -> [i32; 8] {
    let (rows, cols) = (
        o.args.geometry(0, xs.shape[0], s.shape[0]),
        o.args.geometry(1, xs.shape[1], s.shape[1]),
    );
    [
        i(rows.kernel),
        i(cols.kernel),
        i(rows.stride),
        i(cols.stride),
        i(rows.dilation),
        i(cols.dilation),
        i(rows.pad_before),
        i(cols.pad_before),
    ]
}

fn missing() -> CudaError {
    CudaError::Model("internal error: a GPU training buffer is missing (please report this)".into())
}

/// Channels `[first, first + c)` of a layer's tensor at `base` (a concatenation's part).
fn channel_slice(s: &Slots, base: usize, first: usize, c: usize) -> View {
    let mut v = s.view(base + first);
    v.c = c as i32;
    v
}

/// The arena's layout: every layer's output, then every gradient (contiguous, zeroed each
/// step), then pre-activations, their gradients and masks; element offsets for batches of
/// `max_batch`. Sizes are checked: no tensor may exceed what the kernels index.
#[allow(clippy::type_complexity)]
fn layout(
    c: &Compiled,
    max_batch: usize,
) -> Result<(HashMap<NodeId, Slots>, (usize, usize), usize), TrainError> {
    let mut slots = HashMap::new();
    let mut at = 0usize;
    let too_big = || {
        TrainError::Setup(format!(
            "a layer at batch size {max_batch} is too large for the GPU trainer's 32-bit \
             tensor sizes: use a smaller --batch-size"
        ))
    };
    let take = |at: &mut usize, len: usize| -> Result<usize, TrainError> {
        let start = *at;
        *at = at.checked_add(len).ok_or_else(too_big)?;
        Ok(start)
    };
    let sized: Vec<(NodeId, [usize; 3], usize)> = c
        .info
        .schedule
        .iter()
        .map(|&id| {
            let s = item_shape(c, id);
            let shape = [s[0], s[1], s[2]];
            let len = shape
                .iter()
                .try_fold(max_batch, |a, &d| a.checked_mul(d))
                .filter(|&l| l <= i32::MAX as usize)
                .ok_or_else(too_big)?;
            Ok((id, shape, len))
        })
        .collect::<Result<_, TrainError>>()?;
    let mut outs = HashMap::new();
    for &(id, _, len) in &sized {
        outs.insert(id, take(&mut at, len)?);
    }
    let grads_start = at;
    let mut grads = HashMap::new();
    for &(id, _, len) in &sized {
        grads.insert(id, take(&mut at, len)?);
    }
    let grads_len = at - grads_start;
    for &(id, shape, len) in &sized {
        let kind = gpu_kind(&c.graph.node(id).op).map_err(TrainError::Setup)?;
        let pre = match kind.fused() {
            Some(a) if a != ActivationFn::Linear => Some(take(&mut at, len)?),
            Some(_) | None => None,
        };
        let layer_activation = matches!(kind, Kind::Activation(_));
        let dpre = if pre.is_some() || layer_activation {
            Some(take(&mut at, len)?)
        } else {
            None
        };
        let mask = if matches!(kind, Kind::Dropout { .. }) {
            Some(take(&mut at, len)?)
        } else {
            None
        };
        slots.insert(
            id,
            Slots {
                out: outs[&id],
                grad: grads[&id],
                pre,
                dpre,
                mask,
                shape,
            },
        );
    }
    Ok((slots, (grads_start, grads_len), at))
}
