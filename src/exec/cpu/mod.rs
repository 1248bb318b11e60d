//! The CPU executor: the reference every faster backend is tested against. f32, NHWC,
//! im2col + GEMM convolutions on all cores, buffers reused as the plan says.

pub mod attention;
pub mod gemm;
pub mod isa;
pub mod kernels;
pub mod swin;
pub mod volume;
pub mod winograd;

use super::plan::{hwc, plan, reads_parts, Plan, Storage, Window, Work};
use super::tensor::Tensor;
use crate::infer::Inferred;
use crate::ir::ops::{
    Activation, Average, Concatenate, Maximum, Minimum, Multiply, Normalization, Snake, Subtract,
    TfCompute, GELU,
};
use crate::ir::ops::{CustomScaleLayer, ImageReduceFn, ImageResize, LambdaBody};
use crate::ir::{Graph, NodeId, Op};
use std::fmt;
use volume::dhwc;

pub use super::WeightSource;

#[derive(Debug, Clone, PartialEq)]
pub enum ExecError {
    /// The spec has errors or unknown shapes.
    NotCheckable,
    /// Weights missing or misshaped (names listed).
    Weights(Vec<String>),
    /// The input does not fit the model.
    Input(String),
    /// The run would need more memory than allowed.
    Memory { need: u64, limit: u64 },
    /// A layer configuration the executor does not implement.
    Unsupported(String),
}

impl fmt::Display for ExecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExecError::NotCheckable => write!(f, "the spec has errors; run `unetc check` on it"),
            ExecError::Weights(problems) => write!(f, "the weights do not fit the model:\n  {}", problems.join("\n  ")),
            ExecError::Input(m) => write!(f, "{m}"),
            ExecError::Memory { need, limit } => write!(
                f,
                "the run needs {} of activation memory, more than the memory budget of {}; use a smaller --batch, \
                 --tile HxW, or a larger --memory (default: half of the available memory)",
                crate::text::bytes(*need),
                crate::text::bytes(*limit)
            ),
            ExecError::Unsupported(m) => write!(f, "not supported by the CPU executor: {m}"),
        }
    }
}

impl std::error::Error for ExecError {}

/// Weights of one layer, in the layout its kernel wants.
enum Prepared {
    None,
    Conv {
        kernel: Vec<f32>,
        bias: Option<Vec<f32>>,
    },
    /// A 3x3 stride-1 Conv2D's kernel in Winograd's domain ([`winograd::transform_kernel`]);
    /// the Keras kernel itself is not kept.
    Winograd {
        u: Vec<f32>,
        bias: Option<Vec<f32>>,
    },
    ConvTranspose {
        kernel_t: Vec<f32>,
        bias: Option<Vec<f32>>,
    },
    /// Normalization: the mean and the denominator of each channel.
    Standardize {
        mean: Vec<f32>,
        denominator: Vec<f32>,
    },
    Norm {
        gamma: Option<Vec<f32>>,
        beta: Option<Vec<f32>>,
        mean: Vec<f32>,
        var: Vec<f32>,
    },
    Dense {
        kernel: Vec<f32>,
        bias: Option<Vec<f32>>,
    },
    /// MultiHeadAttention: `[Wq, bq, Wk, bk, Wv, bv, Wo, bo]` (zero biases where it has none).
    Attention {
        weights: Vec<Vec<f32>>,
    },
    PatchEmbedding {
        kernel: Vec<f32>,
        bias: Vec<f32>,
        positions: Vec<f32>,
    },
    /// Swin-UNET's layers: their weights as bound ([`swin::slot`] for a block).
    Weights {
        weights: Vec<Vec<f32>>,
    },
    PRelu {
        alpha: Vec<f32>,
    },
    /// Snake: its one weight, beta.
    Snake {
        beta: f32,
    },
    /// GroupNormalization, LayerNormalization: gamma and beta (ones and zeros if absent).
    Affine {
        gamma: Vec<f32>,
        beta: Vec<f32>,
    },
    Separable {
        depthwise: Vec<f32>,
        pointwise: Vec<f32>,
        bias: Option<Vec<f32>>,
    },
}

/// UNETC_WINOGRAD=0 keeps every convolution on im2col + GEMM (to compare the two).
fn winograd_enabled() -> bool {
    std::env::var_os("UNETC_WINOGRAD").is_none_or(|v| v != "0")
}

fn in_channels(graph: &Graph, info: &Inferred, id: NodeId) -> usize {
    graph
        .node(id)
        .inputs
        .first()
        .and_then(|p| info.layers[p.index()].shape.as_ref())
        .and_then(|s| s.last())
        .map_or(0, |&c| c.max(0) as usize)
}

/// The bytes a CPU run holds for weights, for the memory budget: the weights as read (kept to
/// bind each tile size) plus at most [`CpuModel::prepared_bytes`] — every parameter once more,
/// Winograd's 16 taps in place of 9 for the convolutions it computes, and the defaults bound for
/// absent ones (a zero bias, a unit gamma and zero beta: two per output channel at most).
pub fn resident_weight_bytes(graph: &Graph, info: &Inferred) -> u64 {
    let params = info.totals(graph).params;
    let defaults: u64 = graph
        .ids()
        .filter(|id| !info.layers[id.index()].weights.is_empty())
        .map(|id| {
            let channels = info.layers[id.index()]
                .shape
                .as_ref()
                .and_then(|s| s.last());
            2 * channels.map_or(0, |&c| c.max(0) as u64)
        })
        .fold(0u64, u64::saturating_add);
    let winograd_extra: u64 = if winograd_enabled() {
        graph
            .ids()
            .filter_map(|id| {
                let Op::Conv2D(op) = &graph.node(id).op else {
                    return None;
                };
                let c = in_channels(graph, info, id);
                winograd::applies(op, c).then(|| {
                    (winograd::TAPS as u64 - 9)
                        .saturating_mul(c as u64)
                        .saturating_mul(op.args.filters.max(0) as u64)
                })
            })
            .fold(0u64, u64::saturating_add)
    } else {
        0
    };
    params
        .saturating_mul(2)
        .saturating_add(winograd_extra)
        .saturating_add(defaults)
        .saturating_mul(4)
}

/// A model ready to run on the CPU.
pub struct CpuModel<'g> {
    graph: &'g Graph,
    info: &'g Inferred,
    plan: Plan,
    prepared: Vec<Prepared>,
    /// The last run's activation arena, kept for the next: a fresh one is faulted in page by
    /// page as the layers first write it, on every run (tens of ms for a 572x572 U-Net).
    arena: std::sync::Mutex<Vec<f32>>,
    /// The instructions the CPU offers the hand-written kernels (detected once).
    isa: isa::Isa,
    /// Refuse runs whose activations need more than this many bytes (default: half of the
    /// memory the system reports available; `run` sets its `--memory`).
    pub memory_limit: u64,
}

impl<'g> CpuModel<'g> {
    /// Binds weights to the model; every missing or misshaped tensor is reported at once.
    pub fn new(
        graph: &'g Graph,
        info: &'g Inferred,
        weights: &dyn WeightSource,
    ) -> Result<Self, ExecError> {
        let plan = plan(graph, info).ok_or(ExecError::NotCheckable)?;
        let nodes: Vec<NodeId> = plan.steps.iter().map(|s| s.node).collect();
        let mut bound =
            super::bind_and_fold(graph, info, &plan, weights).map_err(ExecError::Weights)?;
        let mut prepared: Vec<Prepared> = (0..graph.nodes.len()).map(|_| Prepared::None).collect();
        let winograd_enabled = winograd_enabled();
        let in_channels = |id: NodeId| in_channels(graph, info, id);
        for &id in &nodes {
            let node = graph.node(id);
            let Some(mut w) = bound.remove(&id) else {
                continue;
            };
            prepared[id.index()] = match &node.op {
                Op::Conv2D(op) if winograd_enabled && winograd::applies(op, in_channels(id)) => {
                    let bias = Some(w.pop().unwrap_or_default());
                    let kernel = w.pop().unwrap_or_default();
                    let (c, f) = (in_channels(id), op.args.filters as usize);
                    match winograd::transform_kernel(&kernel, c, f) {
                        Some(u) => Prepared::Winograd { u, bias },
                        None => Prepared::Conv { kernel, bias },
                    }
                }
                Op::Conv2D(_) | Op::DepthwiseConv2D(_) | Op::Conv3D(_) => Prepared::Conv {
                    bias: Some(w.pop().unwrap_or_default()),
                    kernel: w.pop().unwrap_or_default(),
                },
                Op::SeparableConv2D(_) => Prepared::Separable {
                    bias: Some(w.pop().unwrap_or_default()),
                    pointwise: w.pop().unwrap_or_default(),
                    depthwise: w.pop().unwrap_or_default(),
                },
                Op::Conv2DTranspose(op) => {
                    if op.args.dilation_rate != [1, 1] {
                        return Err(ExecError::Unsupported(format!(
                            "`{}`: dilated transposed convolution",
                            node.name
                        )));
                    }
                    let c = info.layers[node.inputs[0].index()]
                        .shape
                        .as_ref()
                        .and_then(|s| s.last())
                        .copied()
                        .unwrap_or(0) as usize;
                    let [kh, kw] = op.args.kernel_size.map(|v| v as usize);
                    let bias = Some(w.pop().unwrap_or_default());
                    let kernel_t = kernels::transpose_kernel(
                        &w.pop().unwrap_or_default(),
                        [kh, kw, op.args.filters as usize, c],
                    );
                    Prepared::ConvTranspose { kernel_t, bias }
                }
                Op::Conv3DTranspose(_) => {
                    let c = info.layers[node.inputs[0].index()]
                        .shape
                        .as_ref()
                        .and_then(|s| s.last())
                        .copied()
                        .unwrap_or(0) as usize;
                    let bias = Some(w.pop().unwrap_or_default());
                    let kernel_t = volume::transpose_kernel3d(&w.pop().unwrap_or_default(), c);
                    Prepared::ConvTranspose { kernel_t, bias }
                }
                Op::BatchNormalization(_) => {
                    let (var, mean, beta, gamma) = (w.pop(), w.pop(), w.pop(), w.pop());
                    Prepared::Norm {
                        gamma,
                        beta,
                        mean: mean.unwrap_or_default(),
                        var: var.unwrap_or_default(),
                    }
                }
                Op::Normalization(_) => {
                    let var = w.pop().unwrap_or_default();
                    Prepared::Standardize {
                        mean: w.pop().unwrap_or_default(),
                        denominator: var.into_iter().map(Normalization::denominator).collect(),
                    }
                }
                Op::Dense(_) => Prepared::Dense {
                    bias: Some(w.pop().unwrap_or_default()),
                    kernel: w.pop().unwrap_or_default(),
                },
                Op::MultiHeadAttention(_) => Prepared::Attention { weights: w },
                Op::SwinTransformerBlock(_) | Op::PatchMerging(_) | Op::PatchExpanding(_) => {
                    Prepared::Weights { weights: w }
                }
                Op::PatchEmbedding(_) => Prepared::PatchEmbedding {
                    positions: w.pop().unwrap_or_default(),
                    bias: w.pop().unwrap_or_default(),
                    kernel: w.pop().unwrap_or_default(),
                },
                Op::PReLU(_) => Prepared::PRelu {
                    alpha: w.pop().unwrap_or_default(),
                },
                Op::Snake(_) => Prepared::Snake {
                    beta: w
                        .pop()
                        .unwrap_or_default()
                        .first()
                        .copied()
                        .unwrap_or(f32::NAN),
                },
                Op::GroupNormalization(_) | Op::LayerNormalization(_) => Prepared::Affine {
                    beta: w.pop().unwrap_or_default(),
                    gamma: w.pop().unwrap_or_default(),
                },
                // Layers without weights (bind_weights binds none for them).
                Op::Input(_)
                | Op::PatchExtract(_)
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
                | Op::AveragePooling2D(_)
                | Op::GlobalMaxPooling2D(_)
                | Op::SpatialDropout2D(_)
                | Op::GaussianNoise(_)
                | Op::GaussianDropout(_)
                | Op::FixedDropout(_)
                | Op::MaxPooling3D(_)
                | Op::AveragePooling3D(_)
                | Op::UpSampling3D(_)
                | Op::Cropping3D(_)
                | Op::ZeroPadding3D(_)
                | Op::GlobalAveragePooling3D(_) => Prepared::None,
            };
        }
        Ok(CpuModel {
            graph,
            info,
            plan,
            prepared,
            arena: Default::default(),
            isa: isa::Isa::current(),
            memory_limit: crate::train::available_memory() / 2,
        })
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Bytes of the weights as this model holds them (packed, transformed, folded).
    pub fn prepared_bytes(&self) -> u64 {
        let floats: usize = self
            .prepared
            .iter()
            .map(|p| match p {
                Prepared::None => 0,
                Prepared::Conv { kernel, bias } | Prepared::Dense { kernel, bias } => {
                    kernel.len() + bias.as_ref().map_or(0, Vec::len)
                }
                Prepared::Winograd { u, bias } => u.len() + bias.as_ref().map_or(0, Vec::len),
                Prepared::ConvTranspose { kernel_t, bias } => {
                    kernel_t.len() + bias.as_ref().map_or(0, Vec::len)
                }
                Prepared::Standardize { mean, denominator } => mean.len() + denominator.len(),
                Prepared::Norm {
                    gamma,
                    beta,
                    mean,
                    var,
                } => {
                    gamma.as_ref().map_or(0, Vec::len)
                        + beta.as_ref().map_or(0, Vec::len)
                        + mean.len()
                        + var.len()
                }
                Prepared::Separable {
                    depthwise,
                    pointwise,
                    bias,
                } => depthwise.len() + pointwise.len() + bias.as_ref().map_or(0, Vec::len),
                Prepared::PRelu { alpha } => alpha.len(),
                Prepared::Snake { .. } => 1,
                Prepared::Attention { weights } | Prepared::Weights { weights } => {
                    weights.iter().map(Vec::len).sum()
                }
                Prepared::PatchEmbedding {
                    kernel,
                    bias,
                    positions,
                } => kernel.len() + bias.len() + positions.len(),
                Prepared::Affine { gamma, beta } => gamma.len() + beta.len(),
            })
            .sum();
        4 * floats as u64
    }

    /// The model's input shape (per item).
    pub fn input_shape(&self) -> Vec<usize> {
        let input = self.graph.inputs[0];
        self.shape(input)
    }

    fn shape(&self, id: NodeId) -> Vec<usize> {
        self.info.layers[id.index()]
            .shape
            .iter()
            .flatten()
            .map(|&d| d as usize)
            .collect()
    }

    /// Runs a batch `[N, H, W, C]` through the model; returns its outputs.
    pub fn run(&self, input: &Tensor) -> Result<Vec<Tensor>, ExecError> {
        if self.graph.inputs.len() != 1 {
            return Err(ExecError::Unsupported("models with several inputs".into()));
        }
        self.run_inputs(std::slice::from_ref(input))
    }

    /// Runs a batch through a model with one or more inputs (as a siamese U-Net takes two
    /// images): `inputs[k]` for the model's input `k`, every one with the same batch size.
    pub fn run_inputs(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, ExecError> {
        let batch =
            super::batch_of_inputs(self.graph, self.info, inputs).map_err(ExecError::Input)?;
        let need = self.plan.arena_bytes(batch);
        if need > self.memory_limit {
            return Err(ExecError::Memory {
                need,
                limit: self.memory_limit,
            });
        }
        // Runs at the same time on other threads find no kept arena and allocate their own.
        let mut arena = std::mem::take(&mut *self.arena.lock().unwrap_or_else(|e| e.into_inner()));
        arena.clear();
        arena.resize(self.plan.arena_len * batch, 0.0);
        // UNETC_PROFILE=1 prints each layer's time to stderr (for performance work).
        let profile = std::env::var_os("UNETC_PROFILE").is_some();
        for step in &self.plan.steps {
            let start = std::time::Instant::now();
            match &step.work {
                Work::Nothing => continue,
                Work::Concat(copies) => self.concat_copies(&mut arena, step.node, copies, batch),
                Work::Kernel => self.kernel_step(&mut arena, step.node, inputs, batch),
            }
            if profile {
                let node = self.graph.node(step.node);
                let ms = start.elapsed().as_secs_f64() * 1e3;
                let macs = self.info.layers[step.node.index()].macs as f64 * batch as f64;
                eprintln!(
                    "{:>9.2} ms  {:>7.1} GFLOP/s  {} ({})",
                    ms,
                    2.0 * macs / (ms * 1e6),
                    node.name,
                    node.op.class_name()
                );
            }
        }
        let outputs = self
            .graph
            .outputs
            .iter()
            .map(|&id| {
                let mut shape = vec![batch];
                shape.extend(self.shape(id));
                let data = match &self.plan.storage[id.index()] {
                    Some(s) => gather(&arena, &self.plan, s, batch),
                    None => Vec::new(),
                };
                Tensor { shape, data }
            })
            .collect();
        *self.arena.lock().unwrap_or_else(|e| e.into_inner()) = arena;
        Ok(outputs)
    }

    /// Copies the inputs of a built concatenation that were not written in place.
    fn concat_copies(&self, arena: &mut [f32], id: NodeId, copies: &[usize], batch: usize) {
        let Some(whole) = self.plan.window(id) else {
            return;
        };
        let inputs = &self.graph.node(id).inputs;
        let mut channel_of = Vec::with_capacity(inputs.len());
        let mut channel = 0;
        for &p in inputs {
            channel_of.push(channel);
            channel += hwc(&self.shape(p))[2];
        }
        for &k in copies {
            let Some(source) = self.plan.storage[inputs[k].index()].as_ref() else {
                continue;
            };
            let data = gather(arena, &self.plan, source, batch);
            let c = hwc(&self.shape(inputs[k]))[2];
            let slice = Window {
                offset: whole.offset + channel_of[k],
                c,
                ..whole
            };
            scatter(arena, &self.plan, &slice, batch, &data);
        }
    }

    /// Runs one layer's kernel: dense inputs are read in place, others gathered (but
    /// convolutions read any window in place: [`Self::conv_step`]); a dense output is written in
    /// place, a window of a wider buffer through a scatter.
    fn kernel_step(&self, arena: &mut [f32], id: NodeId, inputs: &[Tensor], batch: usize) {
        let node = self.graph.node(id);
        if reads_parts(&node.op) {
            return self.conv_step(arena, id, batch);
        }
        let out_shape = self.shape(id);
        let in_shapes: Vec<Vec<usize>> = node.inputs.iter().map(|&p| self.shape(p)).collect();
        let Some(out_window) = self.plan.window(id) else {
            return;
        };
        let out_range = dense_range(&self.plan, &out_window, batch);
        let sources: Vec<Source> = node
            .inputs
            .iter()
            .map(|&p| match &self.plan.storage[p.index()] {
                Some(Storage::Window(w)) => match dense_range(&self.plan, w, batch) {
                    Some(r) if out_range.as_ref().is_none_or(|o| disjoint(o, &r)) => {
                        Source::Arena(r)
                    }
                    _ => Source::Owned(gather_window(arena, &self.plan, w, batch)),
                },
                Some(s) => Source::Owned(gather(arena, &self.plan, s, batch)),
                None => Source::Owned(Vec::new()),
            })
            .collect();
        match out_range {
            Some(out_range) => {
                let ranges: Vec<_> = sources
                    .iter()
                    .filter_map(|s| match s {
                        Source::Arena(r) => Some(r.clone()),
                        Source::Owned(_) => None,
                    })
                    .collect();
                let (out, borrowed) = split_arena(arena, out_range, &ranges);
                let mut borrowed = borrowed.into_iter();
                let ins: Vec<&[f32]> = sources
                    .iter()
                    .map(|s| match s {
                        Source::Arena(_) => borrowed.next().unwrap_or(&[]),
                        Source::Owned(v) => v.as_slice(),
                    })
                    .collect();
                self.layer(id, &ins, &in_shapes, inputs, out, &out_shape, batch);
            }
            None => {
                let mut out = vec![0.0f32; out_window.len() * batch];
                {
                    let shared: &[f32] = arena;
                    let ins: Vec<&[f32]> = sources
                        .iter()
                        .map(|s| match s {
                            Source::Arena(r) => &shared[r.clone()],
                            Source::Owned(v) => v.as_slice(),
                        })
                        .collect();
                    self.layer(id, &ins, &in_shapes, inputs, &mut out, &out_shape, batch);
                }
                scatter(arena, &self.plan, &out_window, batch, &out);
            }
        }
    }

    /// A convolution reads each window of its input (a crop, the parts of an unbuilt
    /// concatenation) where it lies in the arena: the decoder's inputs are never gathered.
    fn conv_step(&self, arena: &mut [f32], id: NodeId, batch: usize) {
        let node = self.graph.node(id);
        let (Some(out_window), Some(Some(storage))) = (
            self.plan.window(id),
            node.inputs
                .first()
                .map(|p| self.plan.storage[p.index()].as_ref()),
        ) else {
            return;
        };
        let windows = storage.windows();
        // Each window is read from its buffer's region of the arena (all batch items).
        let regions: Vec<_> = windows
            .iter()
            .map(|w| {
                let b = &self.plan.buffers[w.buffer];
                b.offset * batch..(b.offset + b.len) * batch
            })
            .collect();
        let run = |regions: &[&[f32]], out: &mut [f32]| {
            let parts: Vec<_> = windows
                .iter()
                .zip(regions)
                .map(|(w, &data)| kernels::Strided {
                    data,
                    offset: w.offset,
                    item_stride: self.plan.item_stride(w),
                    row_stride: w.row_stride,
                    pixel_stride: w.pixel_stride,
                    c: w.c,
                })
                .collect();
            self.conv(id, &parts, &self.shape(node.inputs[0]), out, batch);
        };
        match dense_range(&self.plan, &out_window, batch) {
            Some(out_range) if regions.iter().all(|r| disjoint(r, &out_range)) => {
                let (out, ins) = split_arena(arena, out_range, &regions);
                run(&ins, out);
            }
            _ => {
                let mut out = vec![0.0f32; out_window.len() * batch];
                let shared: &[f32] = arena;
                let ins: Vec<&[f32]> = regions.iter().map(|r| &shared[r.clone()]).collect();
                run(&ins, &mut out);
                scatter(arena, &self.plan, &out_window, batch, &out);
            }
        }
    }

    /// A convolution over `parts`, its input's channels in order.
    fn conv(
        &self,
        id: NodeId,
        parts: &[kernels::Strided],
        in_shape: &[usize],
        out: &mut [f32],
        batch: usize,
    ) {
        let node = self.graph.node(id);
        let Op::Conv2D(op) = &node.op else {
            return out.fill(f32::NAN);
        };
        let activation = self.plan.fused[id.index()]
            .activation
            .unwrap_or(op.args.activation);
        let ([h, w, c], [oh, ow, f]) = (hwc3(in_shape), hwc3(&self.shape(id)));
        match &self.prepared[id.index()] {
            Prepared::Conv { kernel, bias } => kernels::conv2d(
                op,
                parts,
                [h, w, c],
                kernel,
                bias.as_deref(),
                activation,
                out,
                [oh, ow, f],
                batch,
            ),
            Prepared::Winograd { u, bias } => {
                let (rows, cols) = (op.args.geometry(0, h, oh), op.args.geometry(1, w, ow));
                let geometry = winograd::Geometry {
                    h,
                    w,
                    c,
                    oh,
                    ow,
                    f,
                    top: rows.pad_before,
                    left: cols.pad_before,
                };
                let ops = winograd::Ops {
                    u,
                    bias: bias.as_deref(),
                    activation,
                    isa: self.isa,
                };
                winograd::conv2d(parts, geometry, ops, out, batch)
            }
            // Weights were checked in `new`; a layer without them cannot be reached here.
            Prepared::None
            | Prepared::ConvTranspose { .. }
            | Prepared::Norm { .. }
            | Prepared::Dense { .. }
            | Prepared::Attention { .. }
            | Prepared::Weights { .. }
            | Prepared::PatchEmbedding { .. }
            | Prepared::PRelu { .. }
            | Prepared::Snake { .. }
            | Prepared::Affine { .. }
            | Prepared::Separable { .. }
            | Prepared::Standardize { .. } => out.fill(f32::NAN),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn layer(
        &self,
        id: NodeId,
        ins: &[&[f32]],
        in_shapes: &[Vec<usize>],
        inputs: &[Tensor],
        out: &mut [f32],
        out_shape: &[usize],
        batch: usize,
    ) {
        let node = self.graph.node(id);
        let hwc = hwc3;
        let channels = out_shape.last().copied().unwrap_or(1);
        match (&node.op, &self.prepared[id.index()]) {
            (Op::Input(_), _) => {
                // Checked by run_inputs: one tensor of this input's shape per model input.
                let k = self.graph.inputs.iter().position(|&i| i == id);
                if let Some(input) = k.and_then(|k| inputs.get(k)) {
                    out.copy_from_slice(&input.data);
                }
            }
            // Grouped convolutions read their input dense (the plan gathers it).
            (Op::Conv2D(op), Prepared::Conv { kernel, bias }) if op.groups != 1 => {
                let [h, w, _] = hwc(&in_shapes[0]);
                let [oh, ow, _] = hwc(out_shape);
                kernels::grouped_conv2d(
                    [op.args.geometry(0, h, oh), op.args.geometry(1, w, ow)],
                    op.groups as usize,
                    ins[0],
                    hwc(&in_shapes[0]),
                    kernel,
                    bias.as_deref(),
                    op.args.activation,
                    out,
                    hwc(out_shape),
                )
            }
            (Op::DepthwiseConv2D(op), Prepared::Conv { kernel, bias }) => {
                let [h, w, c] = hwc(&in_shapes[0]);
                let [oh, ow, _] = hwc(out_shape);
                let d = &op.depthwise;
                kernels::grouped_conv2d(
                    [d.geometry(0, h, oh), d.geometry(1, w, ow)],
                    c,
                    ins[0],
                    [h, w, c],
                    kernel,
                    bias.as_deref(),
                    op.activation,
                    out,
                    hwc(out_shape),
                )
            }
            (
                Op::SeparableConv2D(op),
                Prepared::Separable {
                    depthwise,
                    pointwise,
                    bias,
                },
            ) => {
                let [h, w, _] = hwc(&in_shapes[0]);
                let [oh, ow, _] = hwc(out_shape);
                let d = &op.depthwise;
                kernels::separable_conv2d(
                    [d.geometry(0, h, oh), d.geometry(1, w, ow)],
                    ins[0],
                    hwc(&in_shapes[0]),
                    depthwise,
                    pointwise,
                    bias.as_deref(),
                    op.activation,
                    out,
                    hwc(out_shape),
                    batch,
                )
            }
            // Convolutions normally run in `conv_step`, reading windows in place.
            (Op::Conv2D(_), _) => self.conv(
                id,
                &[kernels::Strided::dense(ins[0], hwc3(&in_shapes[0]))],
                &in_shapes[0],
                out,
                batch,
            ),
            (Op::Conv2DTranspose(op), Prepared::ConvTranspose { kernel_t, bias }) => {
                kernels::conv2d_transpose(
                    op,
                    ins[0],
                    hwc(&in_shapes[0]),
                    kernel_t,
                    bias.as_deref(),
                    out,
                    hwc(out_shape),
                    batch,
                )
            }
            (
                Op::BatchNormalization(op),
                Prepared::Norm {
                    gamma,
                    beta,
                    mean,
                    var,
                },
            ) => kernels::batch_norm(
                op,
                ins[0],
                out,
                channels,
                gamma.as_deref(),
                beta.as_deref(),
                mean,
                var,
            ),
            (Op::Normalization(_), Prepared::Standardize { mean, denominator }) => {
                kernels::standardize(ins[0], out, mean, denominator)
            }
            (Op::Dense(op), Prepared::Dense { kernel, bias }) => {
                let n_in = in_shapes[0].last().copied().unwrap_or(1);
                let rows = ins[0].len() / n_in.max(1);
                kernels::dense(
                    ins[0],
                    n_in,
                    kernel,
                    bias.as_deref(),
                    op.activation,
                    out,
                    channels,
                    rows,
                )
            }
            (Op::MultiHeadAttention(op), Prepared::Attention { weights }) => {
                let d = op.dims(&item_shapes(in_shapes));
                let key = ins.get(2).unwrap_or(&ins[1]);
                attention::multi_head_attention(&d, ins[0], ins[1], key, weights, None, out, batch)
            }
            (Op::PatchExtract(op), _) => {
                let side = op.side().max(1) as usize;
                let rows = (out_shape[0] as f64).sqrt().round() as usize;
                attention::patch_extract(ins[0], hwc3(&in_shapes[0]), side, rows, out, batch)
            }
            (
                Op::PatchEmbedding(_),
                Prepared::PatchEmbedding {
                    kernel,
                    bias,
                    positions,
                },
            ) => attention::patch_embedding(
                ins[0],
                in_shapes[0][0],
                in_shapes[0][1],
                kernel,
                bias,
                positions,
                out_shape[1],
                out,
                batch,
            ),
            (Op::SwinTransformerBlock(op), Prepared::Weights { weights }) => {
                swin::swin_block(op, ins[0], weights, out, batch)
            }
            (Op::PatchMerging(op), Prepared::Weights { weights }) => swin::patch_merging(
                ins[0],
                op.num_patch.map(|v| v as usize),
                in_shapes[0][1],
                &weights[0],
                out,
                channels,
                batch,
            ),
            (Op::PatchExpanding(op), Prepared::Weights { weights }) => {
                swin::patch_expanding(op, ins[0], in_shapes[0][1], &weights[0], out, batch)
            }
            (Op::MaxPooling2D(op), _) => {
                kernels::max_pool(op, ins[0], hwc(&in_shapes[0]), out, hwc(out_shape))
            }
            (Op::AveragePooling2D(op), _) => {
                kernels::average_pool(op, ins[0], hwc(&in_shapes[0]), out, hwc(out_shape))
            }
            (Op::UpSampling2D(op), _) => {
                kernels::resize(op.resize(), ins[0], hwc(&in_shapes[0]), out, hwc(out_shape))
            }
            (Op::Resizing(op), _) => {
                kernels::resize(op.resize(), ins[0], hwc(&in_shapes[0]), out, hwc(out_shape))
            }
            (Op::Cropping2D(op), _) => {
                kernels::crop(op, ins[0], hwc(&in_shapes[0]), out, hwc(out_shape))
            }
            (Op::ZeroPadding2D(op), _) => {
                kernels::zero_pad(op, ins[0], hwc(&in_shapes[0]), out, hwc(out_shape))
            }
            (Op::Concatenate(op), _) => kernels::concatenate(op, ins, in_shapes, out, batch),
            (Op::Add(_), _) => kernels::add(ins, out),
            (Op::TFOpLambda(op), _) => match op.computes() {
                TfCompute::Merge(function) => {
                    kernels::merge(function, ins, in_shapes, out, out_shape, batch)
                }
                TfCompute::TensorMerge(m) => {
                    if let Some(constant) = &op.operand {
                        kernels::merge_with_constant(
                            m,
                            ins[0],
                            &in_shapes[0],
                            constant,
                            out,
                            out_shape,
                            batch,
                        )
                    }
                }
                TfCompute::Concat(axis) => {
                    kernels::concatenate(&Concatenate { axis }, ins, in_shapes, out, batch)
                }
                TfCompute::Activation(activation) => {
                    kernels::activation_layer(&Activation { activation }, ins[0], out, channels)
                }
                TfCompute::Scalar(op) => {
                    for (o, &x) in out.iter_mut().zip(ins[0].iter()) {
                        *o = op.apply(x);
                    }
                }
                TfCompute::ReduceChannels(f) => {
                    let c = in_shapes[0].last().copied().unwrap_or(1).max(1);
                    for (o, pixel) in out.iter_mut().zip(ins[0].chunks(c)) {
                        *o = f.apply(pixel);
                    }
                }
                TfCompute::Reshape => out.copy_from_slice(ins[0]),
                TfCompute::ReduceImage(ImageReduceFn::Mean) => {
                    kernels::global_average_pool(ins[0], hwc(&in_shapes[0]), out, batch)
                }
                TfCompute::ReduceImage(ImageReduceFn::Max) => {
                    kernels::global_max_pool(ins[0], hwc(&in_shapes[0]), out, batch)
                }
                TfCompute::Slice => {
                    let c = in_shapes[0].last().copied().unwrap_or(1);
                    // The window is in plan::hwc's view of the input (not `hwc` above, which
                    // keeps a rank-2 tensor's axes as height and width).
                    let dims = super::plan::hwc(&in_shapes[0]);
                    let window = op.slice_window(&in_shapes[0]);
                    match window.map(|axis| axis.range()) {
                        // Every pixel, consecutive channels: the parallel channel copy.
                        [Some(rows), Some(cols), Some(channels)]
                            if rows.len() * cols.len() == dims[0] * dims[1] =>
                        {
                            kernels::slice_channels(ins[0], c, channels, out)
                        }
                        _ => kernels::slice_window(ins[0], dims, window, out),
                    }
                }
                TfCompute::Resize(method) => kernels::resize(
                    ImageResize {
                        interpolation: method,
                        align_corners: false,
                    },
                    ins[0],
                    hwc(&in_shapes[0]),
                    out,
                    hwc(out_shape),
                ),
                TfCompute::Pad => kernels::zero_pad(
                    &op.as_padding(),
                    ins[0],
                    hwc(&in_shapes[0]),
                    out,
                    hwc(out_shape),
                ),
            },
            (Op::Multiply(_), _) => {
                kernels::merge(Multiply::FUNCTION, ins, in_shapes, out, out_shape, batch)
            }
            (Op::Subtract(_), _) => {
                kernels::merge(Subtract::FUNCTION, ins, in_shapes, out, out_shape, batch)
            }
            (Op::CustomScaleLayer(op), _) => op.apply_all(ins[0], ins[1], out),
            (Op::Average(_), _) => {
                kernels::merge(Average::FUNCTION, ins, in_shapes, out, out_shape, batch)
            }
            (Op::Maximum(_), _) => {
                kernels::merge(Maximum::FUNCTION, ins, in_shapes, out, out_shape, batch)
            }
            (Op::Minimum(_), _) => {
                kernels::merge(Minimum::FUNCTION, ins, in_shapes, out, out_shape, batch)
            }
            (Op::LeakyReLU(op), _) => kernels::leaky_relu(op.alpha as f32, ins[0], out),
            (Op::ELU(op), _) => kernels::elu(op.alpha as f32, ins[0], out),
            (Op::GELU(_), _) => kernels::map_values(ins[0], out, GELU::apply),
            (Op::Snake(_), Prepared::Snake { beta }) => {
                kernels::map_values(ins[0], out, |x| Snake::apply(x, *beta))
            }
            (Op::Rescaling(op), _) => {
                for (o, &x) in out.iter_mut().zip(ins[0].iter()) {
                    *o = op.apply(x);
                }
            }
            (Op::PReLU(op), Prepared::PRelu { alpha }) => {
                let shape: Vec<i64> = in_shapes[0].iter().map(|&d| d as i64).collect();
                let alpha_shape: Vec<usize> =
                    op.alpha_shape(&shape).iter().map(|&d| d as usize).collect();
                kernels::prelu(alpha, &alpha_shape, ins[0], &in_shapes[0], out)
            }
            (
                Op::GroupNormalization(_) | Op::LayerNormalization(_),
                Prepared::Affine { gamma, beta },
            ) => {
                let shape: Vec<i64> = in_shapes[0].iter().map(|&d| d as i64).collect();
                match node.op.norm_layout(&shape) {
                    Some(layout) => kernels::normalize(layout, gamma, beta, ins[0], out),
                    None => out.fill(f32::NAN),
                }
            }
            (Op::Activation(op), _) => kernels::activation_layer(op, ins[0], out, channels),
            (Op::ReLU(op), _) => kernels::relu_layer(op, ins[0], out),
            (Op::Softmax(op), _) => {
                let mut full = vec![batch];
                full.extend_from_slice(out_shape);
                kernels::softmax_layer(op, ins[0], out, &full)
            }
            // The identity at inference.
            (
                Op::Dropout(_)
                | Op::SpatialDropout2D(_)
                | Op::GaussianNoise(_)
                | Op::GaussianDropout(_)
                | Op::FixedDropout(_)
                | Op::Flatten(_)
                | Op::Reshape(_),
                _,
            ) => out.copy_from_slice(ins[0]),
            (Op::Lambda(op), _) => match &op.body {
                LambdaBody::SliceTensor { start, stop, .. } => {
                    let c = in_shapes[0].last().copied().unwrap_or(1);
                    kernels::slice_channels(ins[0], c, *start as usize..*stop as usize, out)
                }
                LambdaBody::ExpandDims { .. } => out.copy_from_slice(ins[0]),
                LambdaBody::RepeatElements { repeats, .. } => {
                    let c = in_shapes[0].last().copied().unwrap_or(1);
                    kernels::repeat_channels(ins[0], c, *repeats as usize, out)
                }
                LambdaBody::Resize {
                    method,
                    align_corners,
                    ..
                } => kernels::resize(
                    ImageResize::new(*method, *align_corners),
                    ins[0],
                    hwc(&in_shapes[0]),
                    out,
                    hwc(out_shape),
                ),
                LambdaBody::Arithmetic(a) => {
                    for (o, &x) in out.iter_mut().zip(ins[0].iter()) {
                        *o = a.apply(x);
                    }
                }
                LambdaBody::ScaledAdd {
                    first,
                    second,
                    scale,
                    ..
                } => CustomScaleLayer { scale: *scale }.apply_all(ins[*first], ins[*second], out),
            },
            (Op::Permute(op), _) => {
                kernels::permute(ins[0], &in_shapes[0], &op.source_axes(), out, batch)
            }
            (Op::GlobalAveragePooling2D(_), _) => {
                kernels::global_average_pool(ins[0], hwc(&in_shapes[0]), out, batch)
            }
            (Op::GlobalMaxPooling2D(_), _) => {
                kernels::global_max_pool(ins[0], hwc(&in_shapes[0]), out, batch)
            }
            (Op::Conv3D(op), Prepared::Conv { kernel, bias }) => volume::conv3d(
                op,
                ins[0],
                dhwc(&in_shapes[0]),
                kernel,
                bias.as_deref(),
                out,
                dhwc(out_shape),
            ),
            (Op::Conv3DTranspose(op), Prepared::ConvTranspose { kernel_t, bias }) => {
                volume::conv3d_transpose(
                    op,
                    ins[0],
                    dhwc(&in_shapes[0]),
                    kernel_t,
                    bias.as_deref(),
                    out,
                    dhwc(out_shape),
                    batch,
                )
            }
            (Op::MaxPooling3D(op), _) => {
                volume::max_pool3d(op, ins[0], dhwc(&in_shapes[0]), out, dhwc(out_shape))
            }
            (Op::AveragePooling3D(op), _) => {
                volume::average_pool3d(op, ins[0], dhwc(&in_shapes[0]), out, dhwc(out_shape))
            }
            (Op::UpSampling3D(op), _) => {
                volume::upsample3d(op, ins[0], dhwc(&in_shapes[0]), out, dhwc(out_shape))
            }
            (Op::Cropping3D(op), _) => {
                volume::crop3d(op, ins[0], dhwc(&in_shapes[0]), out, dhwc(out_shape))
            }
            (Op::ZeroPadding3D(op), _) => {
                volume::zero_pad3d(op, ins[0], dhwc(&in_shapes[0]), out, dhwc(out_shape))
            }
            // The mean over depth, height and width: over the volume's voxels as one axis.
            (Op::GlobalAveragePooling3D(_), _) => {
                let [d, h, w, c] = dhwc(&in_shapes[0]);
                kernels::global_average_pool(ins[0], [d * h, w, c], out, batch)
            }
            // Weights were checked in `new`; a layer without them cannot be reached here.
            (
                Op::Conv2DTranspose(_)
                | Op::BatchNormalization(_)
                | Op::Normalization(_)
                | Op::Dense(_)
                | Op::MultiHeadAttention(_)
                | Op::PatchEmbedding(_)
                | Op::SwinTransformerBlock(_)
                | Op::PatchMerging(_)
                | Op::PatchExpanding(_)
                | Op::PReLU(_)
                | Op::Snake(_)
                | Op::GroupNormalization(_)
                | Op::LayerNormalization(_)
                | Op::DepthwiseConv2D(_)
                | Op::SeparableConv2D(_)
                | Op::Conv3D(_)
                | Op::Conv3DTranspose(_),
                _,
            ) => out.fill(f32::NAN),
        }
    }
}

/// `[h, w, c]` of a 3-D shape per item (missing trailing axes count as 1).
/// The shapes per item as the ops' shape rules take them.
fn item_shapes(shapes: &[Vec<usize>]) -> Vec<Vec<i64>> {
    shapes
        .iter()
        .map(|s| s.iter().map(|&d| d as i64).collect())
        .collect()
}

fn hwc3(s: &[usize]) -> [usize; 3] {
    [
        s.first().copied().unwrap_or(1),
        s.get(1).copied().unwrap_or(1),
        s.get(2).copied().unwrap_or(1),
    ]
}

/// Where a kernel's input comes from: a dense range of the arena, or a gathered copy.
enum Source {
    Arena(std::ops::Range<usize>),
    Owned(Vec<f32>),
}

fn disjoint(a: &std::ops::Range<usize>, b: &std::ops::Range<usize>) -> bool {
    a.end <= b.start || b.end <= a.start
}

/// The arena range of a window that is a whole buffer, for a batch (items back to back).
fn dense_range(plan: &Plan, w: &Window, batch: usize) -> Option<std::ops::Range<usize>> {
    let buffer = &plan.buffers[w.buffer];
    (w.offset == 0 && w.is_dense() && w.len() == buffer.len).then(|| {
        let start = buffer.offset * batch;
        start..start + buffer.len * batch
    })
}

/// Arena index of each item's pixel rows of a window: calls `row(n, y, start)` where `start`
/// is the index of element (n, y, 0, 0).
fn for_each_row(plan: &Plan, w: &Window, batch: usize, mut row: impl FnMut(usize, usize, usize)) {
    let base = plan.base(w, batch);
    let item = plan.item_stride(w);
    for n in 0..batch {
        for y in 0..w.h {
            row(n, y, base + n * item + y * w.row_stride);
        }
    }
}

/// A window's values, dense `[batch, h, w, c]`.
fn gather_window(arena: &[f32], plan: &Plan, w: &Window, batch: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(w.len() * batch);
    for_each_row(plan, w, batch, |_, _, start| {
        for x in 0..w.w {
            let p = start + x * w.pixel_stride;
            out.extend_from_slice(&arena[p..p + w.c]);
        }
    });
    out
}

/// A value's data, dense `[batch, h, w, c]` (parts of an unbuilt concatenation interleaved).
fn gather(arena: &[f32], plan: &Plan, s: &Storage, batch: usize) -> Vec<f32> {
    match s {
        Storage::Window(w) => gather_window(arena, plan, w, batch),
        Storage::Parts(parts) => {
            let total: usize = parts.iter().map(|p| p.c).sum();
            let first = parts[0];
            let mut out = vec![0.0f32; first.h * first.w * total * batch];
            let mut at = 0;
            for p in parts {
                let dense = gather_window(arena, plan, p, batch);
                for (pixel, values) in dense.chunks(p.c.max(1)).enumerate() {
                    let dst = pixel * total + at;
                    out[dst..dst + p.c].copy_from_slice(values);
                }
                at += p.c;
            }
            out
        }
    }
}

/// Writes dense `[batch, h, w, c]` data into a window.
fn scatter(arena: &mut [f32], plan: &Plan, w: &Window, batch: usize, data: &[f32]) {
    let mut src = data.chunks(w.c.max(1));
    for_each_row(plan, w, batch, |_, _, start| {
        for x in 0..w.w {
            let p = start + x * w.pixel_stride;
            if let Some(values) = src.next() {
                arena[p..p + w.c].copy_from_slice(values);
            }
        }
    });
}

/// The output region mutably and the input regions shared, from one arena. The planner
/// guarantees that a step's output does not overlap its inputs.
fn split_arena<'a>(
    arena: &'a mut [f32],
    out: std::ops::Range<usize>,
    inputs: &[std::ops::Range<usize>],
) -> (&'a mut [f32], Vec<&'a [f32]>) {
    let (before, rest) = arena.split_at_mut(out.start);
    let (out_slice, after) = rest.split_at_mut(out.end - out.start);
    let (before, after): (&'a [f32], &'a [f32]) = (before, after);
    let ins = inputs
        .iter()
        .map(|r| {
            if r.end <= out.start {
                &before[r.clone()]
            } else {
                assert!(
                    r.start >= out.end,
                    "the plan placed an input inside its layer's output"
                );
                &after[r.start - out.end..r.end - out.end]
            }
        })
        .collect();
    (out_slice, ins)
}
