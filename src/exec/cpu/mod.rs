//! The CPU executor: the reference every faster backend is tested against. f32, NHWC,
//! im2col + GEMM convolutions on all cores, buffers reused as the plan says.

mod gemm;
pub mod kernels;

use super::plan::{plan, Plan};
use super::tensor::Tensor;
use crate::infer::Inferred;
use crate::ir::{Graph, NodeId, Op};
use std::fmt;

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
                "the run needs {} of activation memory, more than the limit of {}; use a smaller batch or tiles",
                crate::report::bytes(*need),
                crate::report::bytes(*limit)
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
    ConvTranspose {
        kernel_t: Vec<f32>,
        bias: Option<Vec<f32>>,
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
}

/// A model ready to run on the CPU.
pub struct CpuModel<'g> {
    graph: &'g Graph,
    info: &'g Inferred,
    plan: Plan,
    prepared: Vec<Prepared>,
    /// Refuse runs whose activations need more than this many bytes.
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
            super::bind_weights(graph, info, &nodes, weights).map_err(ExecError::Weights)?;
        let mut prepared: Vec<Prepared> = (0..graph.nodes.len()).map(|_| Prepared::None).collect();
        for &id in &nodes {
            let node = graph.node(id);
            let Some(mut w) = bound.remove(&id) else {
                continue;
            };
            prepared[id.index()] = match &node.op {
                Op::Conv2D(_) => Prepared::Conv {
                    bias: Some(w.pop().unwrap_or_default()),
                    kernel: w.pop().unwrap_or_default(),
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
                Op::BatchNormalization(_) => {
                    let (var, mean, beta, gamma) = (w.pop(), w.pop(), w.pop(), w.pop());
                    Prepared::Norm {
                        gamma,
                        beta,
                        mean: mean.unwrap_or_default(),
                        var: var.unwrap_or_default(),
                    }
                }
                Op::Dense(_) => Prepared::Dense {
                    bias: Some(w.pop().unwrap_or_default()),
                    kernel: w.pop().unwrap_or_default(),
                },
                _ => Prepared::None,
            };
        }
        Ok(CpuModel {
            graph,
            info,
            plan,
            prepared,
            memory_limit: 16 << 30,
        })
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
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
        let want = self.input_shape();
        if self.graph.inputs.len() != 1 {
            return Err(ExecError::Unsupported("models with several inputs".into()));
        }
        if input.shape.len() != want.len() + 1 || input.shape[1..] != want[..] {
            return Err(ExecError::Input(format!(
                "the input has shape {:?} but the model takes (N, {})",
                input.shape,
                want.iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let batch = input.shape[0];
        let need = self.plan.arena_bytes(batch);
        if need > self.memory_limit {
            return Err(ExecError::Memory {
                need,
                limit: self.memory_limit,
            });
        }
        let mut arena = vec![0.0f32; self.plan.arena_len * batch];
        let scaled = |r: &std::ops::Range<usize>| r.start * batch..r.end * batch;
        // UNETC_PROFILE=1 prints each layer's time to stderr (for performance work).
        let profile = std::env::var_os("UNETC_PROFILE").is_some();
        for step in &self.plan.steps {
            let node = self.graph.node(step.node);
            let out_shape = self.shape(step.node);
            let in_shapes: Vec<Vec<usize>> = node.inputs.iter().map(|&p| self.shape(p)).collect();
            let in_ranges: Vec<_> = step.inputs.iter().map(scaled).collect();
            let (out, ins) = split_arena(&mut arena, scaled(&step.output), &in_ranges);
            let start = std::time::Instant::now();
            self.layer(step.node, &ins, &in_shapes, input, out, &out_shape, batch);
            if profile {
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
        Ok(self
            .plan
            .outputs
            .iter()
            .zip(&self.graph.outputs)
            .map(|(r, &id)| {
                let mut shape = vec![batch];
                shape.extend(self.shape(id));
                Tensor {
                    shape,
                    data: arena[scaled(r)].to_vec(),
                }
            })
            .collect())
    }

    #[allow(clippy::too_many_arguments)]
    fn layer(
        &self,
        id: NodeId,
        ins: &[&[f32]],
        in_shapes: &[Vec<usize>],
        input: &Tensor,
        out: &mut [f32],
        out_shape: &[usize],
        batch: usize,
    ) {
        let node = self.graph.node(id);
        let hwc = |s: &[usize]| -> [usize; 3] {
            [
                s[0],
                s.get(1).copied().unwrap_or(1),
                s.get(2).copied().unwrap_or(1),
            ]
        };
        let channels = out_shape.last().copied().unwrap_or(1);
        match (&node.op, &self.prepared[id.index()]) {
            (Op::Input(_), _) => out.copy_from_slice(&input.data),
            (Op::Conv2D(op), Prepared::Conv { kernel, bias }) => kernels::conv2d(
                op,
                ins[0],
                hwc(&in_shapes[0]),
                kernel,
                bias.as_deref(),
                out,
                hwc(out_shape),
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
            (Op::Dense(op), Prepared::Dense { kernel, bias }) => {
                let n_in = in_shapes[0].last().copied().unwrap_or(1);
                let rows = ins[0].len() / n_in.max(1);
                kernels::dense(
                    ins[0],
                    n_in,
                    kernel,
                    bias.as_deref(),
                    &op.activation,
                    out,
                    channels,
                    rows,
                )
            }
            (Op::MaxPooling2D(op), _) => {
                kernels::max_pool(op, ins[0], hwc(&in_shapes[0]), out, hwc(out_shape), batch)
            }
            (Op::UpSampling2D(op), _) => {
                kernels::upsample(op, ins[0], hwc(&in_shapes[0]), out, hwc(out_shape))
            }
            (Op::Cropping2D(op), _) => {
                kernels::crop(op, ins[0], hwc(&in_shapes[0]), out, hwc(out_shape))
            }
            (Op::ZeroPadding2D(op), _) => {
                kernels::zero_pad(op, ins[0], hwc(&in_shapes[0]), out, hwc(out_shape))
            }
            (Op::Concatenate(op), _) => kernels::concatenate(op, ins, in_shapes, out, batch),
            (Op::Add(_), _) => kernels::add(ins, out),
            (Op::Activation(op), _) => kernels::activation_layer(op, ins[0], out, channels),
            (Op::ReLU(op), _) => kernels::relu_layer(op, ins[0], out),
            (Op::Softmax(op), _) => {
                let mut full = vec![batch];
                full.extend_from_slice(out_shape);
                kernels::softmax_layer(op, ins[0], out, &full)
            }
            (Op::Dropout(_), _) | (Op::Flatten(_), _) => out.copy_from_slice(ins[0]),
            (Op::GlobalAveragePooling2D(_), _) => {
                kernels::global_average_pool(ins[0], hwc(&in_shapes[0]), out, batch)
            }
            // Weights were checked in `new`; a layer without them cannot be reached here.
            (
                Op::Conv2D(_) | Op::Conv2DTranspose(_) | Op::BatchNormalization(_) | Op::Dense(_),
                _,
            ) => out.fill(f32::NAN),
        }
    }
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
