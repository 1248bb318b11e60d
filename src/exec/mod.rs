//! Execution of a checked model: the plan (schedule, lifetimes, buffer reuse) and backends.

pub mod cpu;
pub mod cuda;
pub mod plan;
pub mod tensor;
pub mod tiling;

pub use tensor::Tensor;

use crate::infer::Inferred;
use crate::ir::ops::{AttentionDims, TFOpLambda};
use crate::ir::{Graph, NodeId, Op};
use std::collections::HashMap;

/// Which executor a run's weights are held by, for the memory budget: the CPU holds the weights
/// as read plus their prepared copies; a GPU's budget (device memory) holds one copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightHome {
    Cpu,
    Cuda,
}

impl WeightHome {
    /// Bytes of weights a run of `c` holds where the budget is counted.
    pub fn resident_bytes(self, c: &crate::Compiled) -> u64 {
        match self {
            WeightHome::Cpu => cpu::resident_weight_bytes(&c.graph, &c.info),
            WeightHome::Cuda => c.info.totals(&c.graph).params.saturating_mul(4),
        }
    }
}

/// The batch size of `inputs` (one tensor per model input, each `(N, ...)` of its input's shape
/// with the same N), or what is wrong with them.
pub fn batch_of_inputs(graph: &Graph, info: &Inferred, inputs: &[Tensor]) -> Result<usize, String> {
    if inputs.len() != graph.inputs.len() {
        return Err(format!(
            "the model takes {} input(s), but {} were given",
            graph.inputs.len(),
            inputs.len()
        ));
    }
    for (k, (input, &id)) in inputs.iter().zip(&graph.inputs).enumerate() {
        let want: Vec<String> = info.layers[id.index()]
            .shape
            .iter()
            .flatten()
            .map(|d| d.to_string())
            .collect();
        let got: Vec<String> = input.shape.iter().skip(1).map(|d| d.to_string()).collect();
        if got != want || input.shape.first() != inputs[0].shape.first() {
            return Err(format!(
                "input {k} has shape {:?} but the model takes (N, {}) there, N the same for every \
                 input",
                input.shape,
                want.join(", ")
            ));
        }
    }
    let batch = inputs
        .first()
        .map_or(0, |t| t.shape.first().copied().unwrap_or(0));
    // The graph is scanned only where it matters (batch 1 is the common case).
    match (batch > 1).then(|| batch_one_only(graph, info)).flatten() {
        Some(why) => Err(format!("a batch of {batch}: {why}")),
        None => Ok(batch),
    }
}

/// Why the model runs at batch 1 only, if it does: a TensorFlow function (`x * g`) of tensors
/// of different ranks broadcasts them as NumPy does, from the last axis, so the batch axis of
/// the shorter one lines up with another axis of the longer one (tf.keras fails at batch 2, or
/// computes something else where that axis has the batch's size). Keras's merge layers line the
/// batch axes up instead; unetc computes that, which equals TensorFlow's only at batch 1.
pub fn batch_one_only(graph: &Graph, info: &Inferred) -> Option<String> {
    use crate::ir::ops::TfCompute;
    graph.nodes.iter().find_map(|node| {
        let Op::TFOpLambda(op) = &node.op else {
            return None;
        };
        let ranks: Vec<usize> = node
            .inputs
            .iter()
            .map(|p| info.layers[p.index()].shape.as_ref().map_or(0, Vec::len))
            .collect();
        let mixed = ranks.iter().any(|&r| r != ranks[0]);
        match op.computes() {
            TfCompute::Merge(_) if mixed => Some(format!(
                "`{}` applies tf.{} to tensors of different ranks, which TensorFlow broadcasts \
                 from the last axis, not lining up the batch axes (tf.keras computes it at batch \
                 1 only); run one image at a time (batch 1), or give the operands the same rank \
                 (`x[:, None, None, :]`)",
                node.name,
                op.function.keras_name()
            )),
            // A constant has no batch axis to misalign: TensorFlow lines it up as unetc does.
            TfCompute::Merge(_)
            | TfCompute::TensorMerge(_)
            | TfCompute::Concat(_)
            | TfCompute::Activation(_)
            | TfCompute::Scalar(_)
            | TfCompute::ReduceChannels(_)
            | TfCompute::ReduceImage(_)
            | TfCompute::Reshape
            | TfCompute::Resize(_)
            | TfCompute::Slice
            | TfCompute::Pad => None,
        }
    })
}

/// Where weights come from (a safetensors file, or anything that maps names to tensors).
pub trait WeightSource {
    fn get(&self, name: &str) -> Option<&Tensor>;
}

impl WeightSource for HashMap<String, Tensor> {
    fn get(&self, name: &str) -> Option<&Tensor> {
        HashMap::get(self, name)
    }
}

/// Each layer's weights in Keras layout and a fixed order — Conv2D, Conv2DTranspose, Conv3D,
/// Conv3DTranspose, Dense:
/// `[kernel, bias]`; DepthwiseConv2D: `[depthwise_kernel, bias]`; SeparableConv2D:
/// `[depthwise_kernel, pointwise_kernel, bias]`; BatchNormalization: `[gamma, beta, moving_mean, moving_variance]` — with
/// the optional ones a layer does not have filled in (bias 0, gamma 1, beta 0), so every backend
/// runs one code path. Every missing, misshaped or non-finite tensor is reported, all at once, by
/// name.
pub fn bind_weights(
    graph: &Graph,
    info: &Inferred,
    nodes: &[NodeId],
    weights: &dyn WeightSource,
) -> Result<HashMap<NodeId, Vec<Vec<f32>>>, Vec<String>> {
    let mut problems = Vec::new();
    let mut bound = HashMap::new();
    for &id in nodes {
        let node = graph.node(id);
        // A TensorFlow function's constant tensor is the spec's, not the weights file's: bound
        // as the layer's one tensor, so that a device gets it as it gets weights.
        if let Op::TFOpLambda(TFOpLambda {
            operand: Some(constant),
            ..
        }) = &node.op
        {
            bound.insert(id, vec![constant.values.to_vec()]);
            continue;
        }
        let specs = &info.layers[id.index()].weights;
        let channels = info.layers[id.index()]
            .shape
            .as_ref()
            .and_then(|s| s.last())
            .copied()
            .unwrap_or(1)
            .max(0) as usize;
        // `fallback`: the value and count to use where the kind has no such variable.
        let mut fetch = |var: &str, fallback: Option<(f32, usize)>| -> Option<Vec<f32>> {
            let Some(spec) = specs.iter().find(|w| w.name == var) else {
                return fallback.map(|(v, len)| vec![v; len]);
            };
            let name = graph.weight_name(id, var);
            let want: Vec<usize> = spec.shape.iter().map(|&d| d as usize).collect();
            match weights.get(&name) {
                None => {
                    problems.push(format!("missing `{name}` (shape {want:?})"));
                    None
                }
                Some(t) if t.shape != want => {
                    problems.push(format!(
                        "`{name}` has shape {:?} but the model needs {want:?}",
                        t.shape
                    ));
                    None
                }
                // Weights from a file were checked when read; other sources are checked here, so
                // that no backend ever computes with a NaN or infinite weight.
                Some(t) => match tensor::NonFinite::find(&t.data) {
                    Some(found) => {
                        problems.push(format!("`{name}`: {}", found.describe(&t.shape)));
                        None
                    }
                    None => match constant_mismatch(&node.op, var, &name, &t.data) {
                        Some(problem) => {
                            problems.push(problem);
                            None
                        }
                        None => Some(t.data.clone()),
                    },
                },
            }
        };
        let affine_len = {
            let shape = info.layers[id.index()].shape.as_deref().unwrap_or(&[]);
            node.op.norm_layout(shape).map(|l| l.affine_len())
        };
        let tensors: Vec<Option<Vec<f32>>> = weight_slots(&node.op)
            .iter()
            .map(|&slot| {
                // A kind without the optional variable computes as if it were neutral.
                let len = affine_len.unwrap_or(channels);
                let fallback = match slot {
                    "bias" | "beta" => Some((0.0, len)),
                    "query/bias" | "key/bias" | "value/bias" | "attention_output/bias" => {
                        attention_bias_len(graph, info, id, slot).map(|n| (0.0, n))
                    }
                    "gamma" => Some((1.0, len)),
                    "attn_qkv/bias" => Some((0.0, 3 * channels)),
                    // Not read without a shift; one value, as a device buffer cannot be empty.
                    "attn_mask" => Some((0.0, 1)),
                    _ => None,
                };
                fetch(slot, fallback)
            })
            .collect();
        if tensors.is_empty() {
            continue;
        }
        if let Some(all) = tensors.into_iter().collect::<Option<Vec<_>>>() {
            bound.insert(id, all);
        }
    }
    if problems.is_empty() {
        Ok(bound)
    } else {
        Err(problems)
    }
}

/// Why the values of weight `var` (named `name`) are not the constant the layer computes from
/// its arguments (Swin's mask and position index; the kernels index with the latter); `None`
/// when they are, or when the weight is no such constant.
pub fn constant_mismatch(op: &Op, var: &str, name: &str, data: &[f32]) -> Option<String> {
    let expected = op.constant_weight(var)?;
    let at = expected.iter().zip(data).position(|(a, b)| a != b)?;
    Some(format!(
        "`{name}` is not what {} computes from the layer's arguments (first difference at value \
         {at}: {} where {} is expected); the weights were written for another configuration",
        op.class_name(),
        data[at],
        expected[at],
    ))
}

/// A MultiHeadAttention layer's sizes from its inputs' inferred shapes; `None` for other layers.
pub fn attention_dims(graph: &Graph, info: &Inferred, id: NodeId) -> Option<AttentionDims> {
    let node = graph.node(id);
    let Op::MultiHeadAttention(op) = &node.op else {
        return None;
    };
    let shapes: Vec<Vec<i64>> = node
        .inputs
        .iter()
        .map(|&i| info.layers[i.index()].shape.clone().unwrap_or_default())
        .collect();
    Some(op.dims(&shapes))
}

/// The length of a MultiHeadAttention bias (for a layer with `use_bias: false`).
fn attention_bias_len(graph: &Graph, info: &Inferred, id: NodeId, slot: &str) -> Option<usize> {
    let d = attention_dims(graph, info, id)?;
    Some(match slot {
        "value/bias" => d.hv(),
        "attention_output/bias" => d.eo,
        _ => d.hk(),
    })
}

/// The weight slots [`bind_weights`] gives each kind, in order (Keras's variable names).
pub fn weight_slots(op: &Op) -> &'static [&'static str] {
    match op {
        Op::Conv2D(_)
        | Op::Conv2DTranspose(_)
        | Op::Dense(_)
        | Op::Conv3D(_)
        | Op::Conv3DTranspose(_) => &["kernel", "bias"],
        Op::BatchNormalization(_) => &["gamma", "beta", "moving_mean", "moving_variance"],
        Op::PReLU(_) => &["alpha"],
        Op::Snake(_) => &["beta_factor"],
        // Always all eight: zeros where `use_bias` is off.
        Op::MultiHeadAttention(_) => &[
            "query/kernel",
            "query/bias",
            "key/kernel",
            "key/bias",
            "value/kernel",
            "value/bias",
            "attention_output/kernel",
            "attention_output/bias",
        ],
        Op::PatchEmbedding(_) => &["proj/kernel", "proj/bias", "pos_embed/embeddings"],
        // Always all fifteen: a zero qkv bias where `qkv_bias` is off, a mask of one unused
        // value without a shift; the mask and the index are checked against what the arguments
        // give.
        Op::SwinTransformerBlock(_) => &[
            "norm1/gamma",
            "norm1/beta",
            "attn_pos",
            "attn_qkv/kernel",
            "attn_qkv/bias",
            "attn_proj/kernel",
            "attn_proj/bias",
            "norm2/gamma",
            "norm2/beta",
            "mlp_0/kernel",
            "mlp_0/bias",
            "mlp_1/kernel",
            "mlp_1/bias",
            "attn_mask",
            "attn_pos_ind",
        ],
        Op::PatchMerging(_) => &["linear_trans/kernel"],
        Op::PatchExpanding(_) => &["linear_trans1/kernel"],
        // Keras's `count` is not needed to normalise.
        Op::Normalization(_) => &["mean", "variance"],
        // Always `[gamma, beta]`: ones and zeros where `scale` / `center` are off.
        Op::GroupNormalization(_) | Op::LayerNormalization(_) => &["gamma", "beta"],
        Op::DepthwiseConv2D(_) => &["depthwise_kernel", "bias"],
        Op::SeparableConv2D(_) => &["depthwise_kernel", "pointwise_kernel", "bias"],
        // Layers without weights.
        Op::Input(_)
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
        | Op::Reshape(_)
        | Op::Lambda(_)
        | Op::Permute(_)
        | Op::PatchExtract(_)
        | Op::MaxPooling3D(_)
        | Op::AveragePooling3D(_)
        | Op::UpSampling3D(_)
        | Op::Cropping3D(_)
        | Op::ZeroPadding3D(_)
        | Op::GlobalAveragePooling3D(_) => &[],
    }
}

/// [`bind_weights`] for the layers a plan runs, with each batch normalization that the plan
/// fused into a convolution folded into that convolution's kernel and bias:
/// `gamma (conv(x) + b - mean) / sqrt(var + eps) + beta = conv_{w s}(x) + (b - mean) s + beta`
/// with `s = gamma / sqrt(var + eps)` per output channel.
pub fn bind_and_fold(
    graph: &Graph,
    info: &Inferred,
    plan: &plan::Plan,
    weights: &dyn WeightSource,
) -> Result<HashMap<NodeId, Vec<Vec<f32>>>, Vec<String>> {
    let nodes: Vec<NodeId> = plan.steps.iter().map(|s| s.node).collect();
    let mut bound = bind_weights(graph, info, &nodes, weights)?;
    for &id in &nodes {
        let Some(bn) = plan.fused[id.index()].batch_norm else {
            continue;
        };
        let Op::BatchNormalization(op) = &graph.node(bn).op else {
            continue;
        };
        let (Some(norm), Some(conv)) = (bound.remove(&bn), bound.get_mut(&id)) else {
            continue;
        };
        let [gamma, beta, mean, var] = &norm[..] else {
            continue;
        };
        let scale: Vec<f64> = gamma
            .iter()
            .zip(var)
            .map(|(&g, &v)| g as f64 / (v as f64 + op.epsilon).sqrt())
            .collect();
        let f = scale.len().max(1);
        for (i, w) in conv[0].iter_mut().enumerate() {
            *w = (*w as f64 * scale[i % f]) as f32;
        }
        for (o, b) in conv[1].iter_mut().enumerate() {
            *b = ((*b as f64 - mean[o] as f64) * scale[o] + beta[o] as f64) as f32;
        }
    }
    Ok(bound)
}

/// Number formats a backend computes in. The CPU executor is always f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// f32 storage and arithmetic (on the GPU, convolutions run as 3xTF32 on tensor cores:
    /// each operand split into two tf32 parts, three products, f32 accumulation).
    #[default]
    F32,
    /// f32 storage; convolutions multiply in tf32 (10-bit mantissa) and accumulate in f32.
    Tf32,
    /// bf16 storage; convolutions multiply in bf16 and accumulate in f32.
    Bf16,
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Tf32 => "tf32",
            Precision::Bf16 => "bf16",
        }
    }
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" => Ok(Precision::F32),
            "tf32" => Ok(Precision::Tf32),
            "bf16" => Ok(Precision::Bf16),
            other => Err(format!(
                "unknown precision `{other}`: use f32, tf32 or bf16"
            )),
        }
    }
}
