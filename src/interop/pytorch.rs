//! PyTorch `state_dict`s saved as safetensors (`safetensors.torch.save_file(model.state_dict(),
//! path)`) converted to unetc's weights for a spec whose layers match the model's modules.
//!
//! A module is a key prefix (`enc.0` for `enc.0.weight`, `enc.0.bias`); each spec layer with
//! weights takes exactly one module, converted to the layer's Keras layout (OIHW / IOHW
//! kernels to `[k..., in, out]` / `[k..., out, in]`, Linear `[out, in]` to `[in, out]`, BatchNorm
//! `weight, bias, running_mean, running_var` to `gamma, beta, moving_mean, moving_variance`;
//! `num_batches_tracked` is ignored). Which module goes to which layer comes from a map
//! (`prefix -> layer` lines, e.g. the one `unetc import --map-out` writes from an ONNX export), or
//! is inferred: the modules in numeric-aware key order paired with the layers in spec order, or
//! else the one pairing the shapes allow. Anything else (a shape that fits no layer, two modules
//! that fit the same layer) is refused with a proposed map for the user to check.

use crate::exec::Tensor;
use crate::io::{NonFinite, Weights};
use crate::ir::ops::Op;
use crate::Compiled;
use safetensors::tensor::{Dtype, SafeTensors};
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;

/// Why a state_dict could not be converted; `proposal` is a map for the user to check and pass
/// back with `--map`, when unetc could not infer one.
#[derive(Debug)]
pub struct ConvertError {
    pub message: String,
    pub proposal: Option<String>,
}

impl std::fmt::Display for ConvertError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

fn fail<T>(message: impl Into<String>) -> Result<T, ConvertError> {
    Err(ConvertError {
        message: message.into(),
        proposal: None,
    })
}

/// One module of the state_dict: its key prefix and its tensors by parameter name.
#[derive(Debug)]
struct Module {
    prefix: String,
    params: BTreeMap<String, Tensor>,
}

impl Module {
    fn describe(&self) -> String {
        let parts: Vec<String> = self
            .params
            .iter()
            .map(|(n, t)| format!("{n} {:?}", t.shape))
            .collect();
        parts.join(", ")
    }
}

/// How a layer kind's weights are laid out in PyTorch.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Rule {
    /// Conv / ConvTranspose: `weight [a, b, k...]` -> `kernel [k..., b, a]`, `bias`.
    Conv,
    /// Depthwise conv (groups = channels): `weight [C*m, 1, k...]` -> `depthwise_kernel [k..., C, m]`.
    Depthwise,
    /// Linear: `weight [out, in]` -> `kernel [in, out]`, `bias`.
    Linear,
    /// BatchNorm: `weight, bias, running_mean, running_var`.
    BatchNorm,
    /// GroupNorm / InstanceNorm / LayerNorm: `weight, bias` -> `gamma, beta`.
    Affine,
    /// PReLU: `weight [C]` or `[1]` -> `alpha`.
    PRelu,
    /// torch.nn.MultiheadAttention: `in_proj_weight [3E, E]` (or `q/k/v_proj_weight [E, in]`),
    /// `in_proj_bias [3E]`, `out_proj.weight [E, E]`, `out_proj.bias` -> Keras's
    /// `query/kernel [in, H, D]`, ... `attention_output/kernel [H, D, E]` ([`attention`]).
    Attention,
    /// No single PyTorch module holds this kind's weights.
    Unsupported(&'static str),
    /// The kind has no weights.
    NoWeights,
}

fn rule(op: &Op) -> Rule {
    match op {
        Op::Conv2D(_) | Op::Conv3D(_) | Op::Conv2DTranspose(_) | Op::Conv3DTranspose(_) => {
            Rule::Conv
        }
        Op::DepthwiseConv2D(_) => Rule::Depthwise,
        Op::Dense(_) => Rule::Linear,
        Op::BatchNormalization(_) => Rule::BatchNorm,
        Op::GroupNormalization(_) | Op::LayerNormalization(_) => Rule::Affine,
        Op::PReLU(_) => Rule::PRelu,
        Op::MultiHeadAttention(_) => Rule::Attention,
        Op::PatchEmbedding(_) => Rule::Unsupported(
            "keras-unet-collection's patch_embedding has no torch.nn module to take its weights from",
        ),
        Op::SwinTransformerBlock(_) | Op::PatchMerging(_) | Op::PatchExpanding(_) => {
            Rule::Unsupported(
                "keras-unet-collection's Swin-UNET layers have no torch.nn module to take their weights from (the PyTorch Swin-UNet's blocks differ: its patch merging normalises first)",
            )
        }
        Op::Snake(_) => Rule::Unsupported(
            "keras-unet-collection's Snake has no torch.nn module to take its weight from",
        ),
        Op::Normalization(_) => Rule::Unsupported(
            "Keras's Normalization (mean, variance, count) has no PyTorch module; write the scaling as rescaling(scale, offset:) or give its weights in unetc's naming",
        ),
        Op::SeparableConv2D(_) => Rule::Unsupported(
            "a separable conv's two kernels are two PyTorch modules; write the layer as a depthwise conv2d (groups) followed by a 1x1 conv2d",
        ),
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
        | Op::LeakyReLU(_)
        | Op::ELU(_)
        | Op::AveragePooling2D(_)
        | Op::GlobalMaxPooling2D(_)
        | Op::SpatialDropout2D(_)
        | Op::GaussianNoise(_)
        | Op::GaussianDropout(_)
        | Op::TFOpLambda(_)
        | Op::Reshape(_)
        | Op::Lambda(_)
        | Op::Permute(_)
        | Op::MaxPooling3D(_)
        | Op::AveragePooling3D(_)
        | Op::UpSampling3D(_)
        | Op::Cropping3D(_)
        | Op::ZeroPadding3D(_)
        | Op::GlobalAveragePooling3D(_)
        | Op::FixedDropout(_)
        | Op::GELU(_)
        | Op::Rescaling(_)
        | Op::PatchExtract(_) => Rule::NoWeights,
    }
}

/// The PyTorch parameter holding a unetc weight variable under `rule`.
fn torch_param(rule: Rule, var: &str) -> Option<&'static str> {
    match (rule, var) {
        (Rule::Conv | Rule::Linear, "kernel")
        | (Rule::Depthwise, "depthwise_kernel")
        | (Rule::BatchNorm | Rule::Affine, "gamma")
        | (Rule::PRelu, "alpha") => Some("weight"),
        (Rule::Conv | Rule::Depthwise | Rule::Linear, "bias")
        | (Rule::BatchNorm | Rule::Affine, "beta") => Some("bias"),
        (Rule::BatchNorm, "moving_mean") => Some("running_mean"),
        (Rule::BatchNorm, "moving_variance") => Some("running_var"),
        _ => None,
    }
}

/// A spec layer with weights, in spec order.
#[derive(Debug)]
struct Target {
    layer: String,
    kind: &'static str,
    rule: Rule,
    /// `(variable, Keras shape)`.
    vars: Vec<(String, Vec<usize>)>,
}

impl Target {
    fn describe(&self) -> String {
        let parts: Vec<String> = self
            .vars
            .iter()
            .map(|(v, s)| format!("{v} {s:?}"))
            .collect();
        format!("`{}` ({}: {})", self.layer, self.kind, parts.join(", "))
    }
}

fn targets(c: &Compiled) -> Vec<Target> {
    let mut out = Vec::new();
    for &id in &c.info.keras_order {
        let node = c.graph.node(id);
        let ws = &c.info.layers[id.index()].weights;
        // A shared layer's weights are its first call's.
        if node.shares.is_some() || ws.is_empty() {
            continue;
        }
        out.push(Target {
            layer: node.name.clone(),
            kind: node.op.base_name(),
            rule: rule(&node.op),
            vars: ws
                .iter()
                .map(|w| {
                    (
                        w.name.to_string(),
                        w.shape.iter().map(|&d| d as usize).collect(),
                    )
                })
                .collect(),
        });
    }
    out
}

/// `[a, b, k...]` -> `[k..., b, a]`.
fn kernel_to_keras(t: &Tensor) -> Tensor {
    let (a, b) = (t.shape[0], t.shape[1]);
    let ksz: usize = t.shape[2..].iter().product();
    let mut data = vec![0f32; t.data.len()];
    for i in 0..a {
        for j in 0..b {
            for p in 0..ksz {
                data[(p * b + j) * a + i] = t.data[(i * b + j) * ksz + p];
            }
        }
    }
    let mut shape = t.shape[2..].to_vec();
    shape.extend([b, a]);
    Tensor { shape, data }
}

/// The PyTorch shape of a weight whose Keras shape is `want`.
fn torch_shape(rule: Rule, want: &[usize]) -> Vec<usize> {
    let r = want.len();
    match rule {
        Rule::Conv if r >= 3 => [want[r - 1], want[r - 2]]
            .into_iter()
            .chain(want[..r - 2].iter().copied())
            .collect(),
        Rule::Depthwise if r >= 3 => [want[r - 2] * want[r - 1], 1]
            .into_iter()
            .chain(want[..r - 2].iter().copied())
            .collect(),
        Rule::Linear if r == 2 => vec![want[1], want[0]],
        Rule::PRelu => vec![*want.last().unwrap_or(&1)],
        Rule::Conv
        | Rule::Depthwise
        | Rule::Linear
        | Rule::BatchNorm
        | Rule::Affine
        | Rule::Attention
        | Rule::Unsupported(_)
        | Rule::NoWeights => want.to_vec(),
    }
}

/// Whether a PyTorch tensor of `shape` fits a weight whose Keras shape is `want`.
fn fits_var(rule: Rule, want: &[usize], shape: &[usize]) -> Result<(), String> {
    let torch = torch_shape(rule, want);
    // nn.PReLU() shares one slope across the channels.
    let shared_slope = rule == Rule::PRelu && shape == [1];
    let per_channel_slope =
        rule == Rule::PRelu && torch.iter().product::<usize>() == want.iter().product::<usize>();
    if (shape == torch.as_slice() && (rule != Rule::PRelu || per_channel_slope)) || shared_slope {
        Ok(())
    } else if rule == Rule::PRelu && !per_channel_slope {
        Err(format!(
            "is {shape:?}, but the layer's alpha {want:?} is not one slope per channel (give p_re_lu shared_axes over the spatial axes)"
        ))
    } else {
        Err(format!("is {shape:?}, the layer needs {torch:?}"))
    }
}

/// A PyTorch tensor that fits (`fits_var`) in the Keras layout `want`.
fn to_keras(rule: Rule, want: &[usize], t: &Tensor) -> Tensor {
    match rule {
        // Depthwise: PyTorch's output channel c*m + j is Keras's [.., c, j], so the same move.
        Rule::Conv | Rule::Depthwise if want.len() >= 3 => {
            let mut k = kernel_to_keras(t);
            k.shape = want.to_vec();
            k
        }
        Rule::Linear if want.len() == 2 => {
            let (i, o) = (want[0], want[1]);
            let mut data = vec![0f32; t.data.len()];
            for a in 0..o {
                for b in 0..i {
                    data[b * o + a] = t.data[a * i + b];
                }
            }
            Tensor {
                shape: want.to_vec(),
                data,
            }
        }
        Rule::PRelu => {
            let n: usize = want.iter().product();
            let data = if t.data.len() == n {
                t.data.clone()
            } else {
                vec![t.data[0]; n]
            };
            Tensor {
                shape: want.to_vec(),
                data,
            }
        }
        Rule::Conv
        | Rule::Depthwise
        | Rule::Linear
        | Rule::BatchNorm
        | Rule::Affine
        | Rule::Attention
        | Rule::Unsupported(_)
        | Rule::NoWeights => t.clone(),
    }
}

/// Whether the module's tensors fit the target's weights (names and shapes; nothing copied),
/// or why not.
fn fit(target: &Target, m: &Module) -> Result<(), String> {
    if let Rule::Unsupported(why) = target.rule {
        return Err(why.to_string());
    }
    if target.rule == Rule::Attention {
        return attention::layout(target, m).map(|_| ());
    }
    let mut needed = BTreeSet::new();
    for (var, want) in &target.vars {
        let Some(p) = torch_param(target.rule, var) else {
            return Err(format!(
                "unetc does not know the PyTorch name of {} weight `{var}`",
                target.kind
            ));
        };
        needed.insert(p);
        let Some(t) = m.params.get(p) else {
            return Err(format!(
                "it has no `{p}` (it has {}); the layer needs it for `{var}`",
                m.describe()
            ));
        };
        fits_var(target.rule, want, &t.shape).map_err(|e| format!("its `{p}` {e}"))?;
    }
    if let Some(extra) = m.params.keys().find(|k| !needed.contains(k.as_str())) {
        return Err(format!(
            "it has `{extra}` {:?}, which the layer has no place for",
            m.params[extra].shape
        ));
    }
    Ok(())
}

/// The module's tensors as the target's weights, or why they do not fit.
fn convert(target: &Target, m: &Module) -> Result<Vec<(String, Tensor)>, String> {
    if target.rule == Rule::Attention {
        return attention::convert(target, m);
    }
    fit(target, m)?;
    let mut out = Vec::new();
    for (var, want) in &target.vars {
        if let Some(t) = torch_param(target.rule, var).and_then(|p| m.params.get(p)) {
            out.push((
                format!("{}/{var}", target.layer),
                to_keras(target.rule, want, t),
            ));
        }
    }
    Ok(out)
}

/// torch.nn.MultiheadAttention as Keras's MultiHeadAttention. PyTorch projects to
/// `embed_dim = E` split into `num_heads` heads of `E / num_heads`, scales the query by
/// `1 / sqrt(E / num_heads)` and projects back to `E`, as Keras does with `key_dim =
/// value_dim = E / num_heads` and the query's width as output: so each projection `W [E, in]`
/// is Keras's kernel `[in, H, D]` transposed (`kernel[i, h, d] = W[h D + d, i]`) and
/// `out_proj.weight [E, E]` is `attention_output/kernel [H, D, E]` transposed.
mod attention {
    use super::{Module, Target};
    use crate::exec::Tensor;

    /// The sizes of one attention layer, checked against a module's tensors.
    pub(super) struct Layout {
        /// Query, key and value projections in one `in_proj_weight`.
        packed: bool,
        /// `embed_dim`.
        e: usize,
        /// Keras's query, key and value input widths.
        inputs: [usize; 3],
        bias: bool,
    }

    const ROLES: [&str; 3] = ["query", "key", "value"];

    fn shape<'a>(target: &'a Target, var: &str) -> Option<&'a [usize]> {
        target
            .vars
            .iter()
            .find(|(v, _)| v == var)
            .map(|(_, s)| s.as_slice())
    }

    pub(super) fn layout(target: &Target, m: &Module) -> Result<Layout, String> {
        let kernel = |role: &str| shape(target, &format!("{role}/kernel"));
        let (Some(&[eq, h, d]), Some(&[ek, _, _]), Some(&[ev, _, dv]), Some(&[_, _, eo])) = (
            kernel("query"),
            kernel("key"),
            kernel("value"),
            shape(target, "attention_output/kernel"),
        ) else {
            return Err("internal: a MultiHeadAttention without its kernels".into());
        };
        let e = h * d;
        if dv != d || eo != e {
            return Err(format!(
                "torch.nn.MultiheadAttention has value heads as wide as key heads and gives \
                 embed_dim = num_heads x key_dim = {e} features; this layer has value_dim {dv}, \
                 key_dim {d} and output width {eo}"
            ));
        }
        let bias = shape(target, "query/bias").is_some();
        let packed = m.params.contains_key("in_proj_weight");
        let mut want: Vec<(String, Vec<usize>)> = Vec::new();
        if packed {
            want.push(("in_proj_weight".into(), vec![3 * e, eq]));
        } else {
            for (role, width) in ["q", "k", "v"].into_iter().zip([eq, ek, ev]) {
                want.push((format!("{role}_proj_weight"), vec![e, width]));
            }
        }
        want.push(("out_proj.weight".into(), vec![e, e]));
        if bias {
            want.push(("in_proj_bias".into(), vec![3 * e]));
            want.push(("out_proj.bias".into(), vec![e]));
        }
        for (name, dims) in &want {
            match m.params.get(name) {
                None => {
                    return Err(format!(
                        "it has no `{name}` (it has {}); the layer needs it{}",
                        m.describe(),
                        if name.ends_with("bias") {
                            " (use_bias: true)"
                        } else {
                            ""
                        }
                    ))
                }
                Some(t) if t.shape != *dims => {
                    return Err(format!(
                        "its `{name}` is {:?}, the layer needs {dims:?} (query {eq}, key {ek}, \
                         value {ev} wide; {h} heads of {d})",
                        t.shape
                    ))
                }
                Some(_) => {}
            }
        }
        if let Some(extra) = m.params.keys().find(|k| !want.iter().any(|(n, _)| n == *k)) {
            return Err(format!(
                "it has `{extra}` {:?}, which the layer has no place for{}",
                m.params[extra].shape,
                if extra.contains("bias") {
                    " (use_bias: false)"
                } else {
                    ""
                }
            ));
        }
        if packed && (ek != eq || ev != eq) {
            return Err(format!(
                "its packed in_proj_weight takes keys and values as wide as the query ({eq}); \
                 this layer's are {ek} and {ev}"
            ));
        }
        Ok(Layout {
            packed,
            e,
            inputs: [eq, ek, ev],
            bias,
        })
    }

    /// `w [e, width]` (rows `row0..row0 + e` of a packed weight) as `[width, e]`, Keras's
    /// kernel with its heads' axes `[H, D]` flattened.
    fn transposed(w: &Tensor, row0: usize, e: usize, width: usize) -> Vec<f32> {
        let mut out = vec![0f32; e * width];
        for r in 0..e {
            for i in 0..width {
                out[i * e + r] = w.data[(row0 + r) * width + i];
            }
        }
        out
    }

    pub(super) fn convert(target: &Target, m: &Module) -> Result<Vec<(String, Tensor)>, String> {
        let l = layout(target, m)?;
        let e = l.e;
        let mut out = Vec::new();
        let mut put = |var: &str, data: Vec<f32>| {
            if let Some(dims) = shape(target, var) {
                out.push((
                    format!("{}/{var}", target.layer),
                    Tensor {
                        shape: dims.to_vec(),
                        data,
                    },
                ));
            }
        };
        for (k, role) in ROLES.into_iter().enumerate() {
            let width = l.inputs[k];
            let data = if l.packed {
                transposed(&m.params["in_proj_weight"], k * e, e, width)
            } else {
                let name = format!("{}_proj_weight", &role[..1]);
                transposed(&m.params[&name], 0, e, width)
            };
            put(&format!("{role}/kernel"), data);
            if l.bias {
                put(
                    &format!("{role}/bias"),
                    m.params["in_proj_bias"].data[k * e..(k + 1) * e].to_vec(),
                );
            }
        }
        put(
            "attention_output/kernel",
            transposed(&m.params["out_proj.weight"], 0, e, e),
        );
        if l.bias {
            put(
                "attention_output/bias",
                m.params["out_proj.bias"].data.clone(),
            );
        }
        Ok(out)
    }
}

/// Numeric-aware order of module paths: `enc.2` before `enc.10`.
fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut x, mut y) = (a.split('.'), b.split('.'));
    loop {
        match (x.next(), y.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(p), Some(q)) => {
                let o = match (p.parse::<u64>(), q.parse::<u64>()) {
                    (Ok(m), Ok(n)) => m.cmp(&n).then(p.cmp(q)),
                    (Ok(_), Err(_)) => Ordering::Less,
                    (Err(_), Ok(_)) => Ordering::Greater,
                    (Err(_), Err(_)) => p.cmp(q),
                };
                if o != Ordering::Equal {
                    return o;
                }
            }
        }
    }
}

/// The modules of a safetensors state_dict, in numeric-aware order of their paths.
fn read_modules(bytes: &[u8]) -> Result<Vec<Module>, ConvertError> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| ConvertError {
        message: format!("not a safetensors file: {e}"),
        proposal: None,
    })?;
    let mut by_prefix: BTreeMap<String, BTreeMap<String, Tensor>> = BTreeMap::new();
    let mut names: Vec<String> = st.names().into_iter().map(str::to_string).collect();
    names.sort();
    for key in names {
        let view = st.tensor(&key).map_err(|e| ConvertError {
            message: format!("tensor `{key}`: {e}"),
            proposal: None,
        })?;
        let Some((prefix, param)) = key.rsplit_once('.') else {
            return fail(format!(
                "tensor `{key}` has no module path (`module.param`); unetc maps modules to layers, so save the state_dict of a model that wraps its layers in modules"
            ));
        };
        // BatchNorm's step counter: no weight of the network.
        if param == "num_batches_tracked" {
            continue;
        }
        if view.dtype() != Dtype::F32 {
            return fail(format!(
                "tensor `{key}` is {:?}; unetc reads float32 weights: save `{{k: v.float() for k, v in model.state_dict().items()}}`",
                view.dtype()
            ));
        }
        // The crate checked the byte length against shape and dtype.
        let data: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if let Some(bad) = NonFinite::find(&data) {
            return fail(format!("tensor `{key}`: {}", bad.describe(view.shape())));
        }
        by_prefix.entry(prefix.to_string()).or_default().insert(
            param.to_string(),
            Tensor {
                shape: view.shape().to_vec(),
                data,
            },
        );
    }
    // torch.nn.MultiheadAttention keeps its output projection as a submodule (`attn.out_proj`):
    // one module with the attention's own tensors, as the layer is one.
    let attentions: Vec<String> = by_prefix
        .iter()
        .filter(|(_, params)| {
            params.contains_key("in_proj_weight") || params.contains_key("q_proj_weight")
        })
        .map(|(prefix, _)| prefix.clone())
        .collect();
    for prefix in attentions {
        if let Some(out) = by_prefix.remove(&format!("{prefix}.out_proj")) {
            let params = by_prefix.entry(prefix).or_default();
            for (name, t) in out {
                params.insert(format!("out_proj.{name}"), t);
            }
        }
    }
    let mut modules: Vec<Module> = by_prefix
        .into_iter()
        .map(|(prefix, params)| Module { prefix, params })
        .collect();
    modules.sort_by(|a, b| natural_cmp(&a.prefix, &b.prefix));
    Ok(modules)
}

/// How the modules were matched to the layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    /// The `--map` file.
    Map,
    /// Modules in numeric-aware key order = layers in spec order, every shape fitting.
    Order,
    /// The only pairing the shapes allow.
    Shapes,
}

impl Binding {
    pub fn describe(self) -> &'static str {
        match self {
            Binding::Map => "by the map",
            Binding::Order => "by module order (every shape fits)",
            Binding::Shapes => "by shape (the only pairing the shapes allow)",
        }
    }

    /// A stable one-word name (`map`, `order`, `shapes`) for programs.
    pub fn key(self) -> &'static str {
        match self {
            Binding::Map => "map",
            Binding::Order => "order",
            Binding::Shapes => "shapes",
        }
    }
}

/// The result of a conversion.
#[derive(Debug)]
pub struct Converted {
    pub weights: Weights,
    pub binding: Binding,
    pub modules: usize,
    /// The modules a `-` line of the map left unused.
    pub ignored: Vec<String>,
    /// With [`Binding::Order`]: the layers whose shapes fit other modules too, so that only the
    /// module order placed them.
    pub order_only: usize,
}

/// The longest map text unetc reads.
pub const MAX_MAP_BYTES: usize = 4 << 20;

/// Reads a map file: at most one byte past [`MAX_MAP_BYTES`], so that the parser reports a longer
/// one instead of unetc reading it whole.
pub fn read_map_file(path: &std::path::Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(MAX_MAP_BYTES as u64 + 1)
        .read_to_string(&mut text)?;
    Ok(text)
}

/// Reads a map: `prefix -> layer` lines, `prefix -> -` for a module to leave unused, `#`
/// comments. Returns `(line, prefix, layer or None)`.
fn parse_map(text: &str) -> Result<Vec<(usize, String, Option<String>)>, ConvertError> {
    if text.len() > MAX_MAP_BYTES {
        return fail(format!(
            "the map is {} bytes; unetc reads maps of up to {MAX_MAP_BYTES}",
            text.len()
        ));
    }
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let body = raw.split('#').next().unwrap_or("").trim();
        if body.is_empty() {
            continue;
        }
        if body.starts_with('?') {
            return fail(format!(
                "map line {line} is marked `?` (a guess unetc could not confirm): check it, fix it if needed and delete the `?`"
            ));
        }
        let Some((l, r)) = body.split_once("->") else {
            return fail(format!(
                "map line {line}: expected `pytorch.module.prefix -> unetc_layer` (or `-> -` to leave the module unused), found `{body}`"
            ));
        };
        let (l, r) = (l.trim(), r.trim());
        if l.is_empty() || r.is_empty() {
            return fail(format!(
                "map line {line}: both sides of `->` must be named, found `{body}`"
            ));
        }
        out.push((
            line,
            l.to_string(),
            (r != "-").then(|| r.trim_matches('"').to_string()),
        ));
    }
    Ok(out)
}

/// Converts a PyTorch state_dict (safetensors bytes) to the weights of the compiled spec `c`,
/// using `map` (the text of a map file) when given.
pub fn convert_state_dict(
    c: &Compiled,
    bytes: &[u8],
    map: Option<&str>,
) -> Result<Converted, ConvertError> {
    let modules = read_modules(bytes)?;
    let targets = targets(c);
    if let Some(t) = targets
        .iter()
        .find(|t| matches!(t.rule, Rule::Unsupported(_)))
    {
        let why = match t.rule {
            Rule::Unsupported(why) => why,
            Rule::Conv
            | Rule::Depthwise
            | Rule::Linear
            | Rule::BatchNorm
            | Rule::Affine
            | Rule::PRelu
            | Rule::Attention
            | Rule::NoWeights => "",
        };
        return fail(format!("layer {}: {why}", t.describe()));
    }
    match map {
        Some(text) => by_map(&targets, &modules, text),
        None => infer(&targets, &modules),
    }
}

fn collect(
    pairs: &[(usize, usize)],
    targets: &[Target],
    modules: &[Module],
) -> Result<Weights, String> {
    let mut w = Weights::new();
    for &(t, m) in pairs {
        for (name, tensor) in convert(&targets[t], &modules[m])? {
            w.insert(name, tensor);
        }
    }
    Ok(w)
}

fn by_map(targets: &[Target], modules: &[Module], text: &str) -> Result<Converted, ConvertError> {
    let lines = parse_map(text)?;
    let mod_ix: HashMap<&str, usize> = modules
        .iter()
        .enumerate()
        .map(|(i, m)| (m.prefix.as_str(), i))
        .collect();
    let tgt_ix: HashMap<&str, usize> = targets
        .iter()
        .enumerate()
        .map(|(i, t)| (t.layer.as_str(), i))
        .collect();
    let mut module_line: HashMap<usize, usize> = HashMap::new();
    let mut target_line: HashMap<usize, usize> = HashMap::new();
    let mut pairs = Vec::new();
    let mut ignored = Vec::new();
    for (line, prefix, layer) in &lines {
        let Some(&m) = mod_ix.get(prefix.as_str()) else {
            return fail(format!(
                "map line {line}: the state_dict has no module `{prefix}` (its modules: {})",
                list(modules.iter().map(|m| m.prefix.as_str()))
            ));
        };
        if let Some(first) = module_line.insert(m, *line) {
            return fail(format!(
                "map line {line}: module `{prefix}` is already mapped on line {first}"
            ));
        }
        let Some(layer) = layer else {
            ignored.push(prefix.clone());
            continue;
        };
        let Some(&t) = tgt_ix.get(layer.as_str()) else {
            return fail(format!(
                "map line {line}: the spec has no layer `{layer}` with weights (its layers with weights: {})",
                list(targets.iter().map(|t| t.layer.as_str()))
            ));
        };
        if let Some(first) = target_line.insert(t, *line) {
            return fail(format!(
                "map line {line}: layer `{layer}` already takes a module on line {first}"
            ));
        }
        if let Err(why) = fit(&targets[t], &modules[m]) {
            return fail(format!(
                "map line {line}: module `{prefix}` does not fit layer {}: {why}",
                targets[t].describe()
            ));
        }
        pairs.push((t, m));
    }
    let unmapped: Vec<usize> = (0..targets.len())
        .filter(|t| !target_line.contains_key(t))
        .collect();
    let unused: Vec<usize> = (0..modules.len())
        .filter(|m| !module_line.contains_key(m))
        .collect();
    if !unmapped.is_empty() || !unused.is_empty() {
        let mut problems = Vec::new();
        if !unmapped.is_empty() {
            problems.push(format!(
                "the map gives no module to {} layer(s) with weights: {}",
                unmapped.len(),
                list(unmapped.iter().map(|&t| targets[t].layer.as_str()))
            ));
        }
        if !unused.is_empty() {
            problems.push(format!(
                "the map leaves {} module(s) of the state_dict unmentioned: {} (map each to a layer, or to `-` to leave it unused)",
                unused.len(),
                list(unused.iter().map(|&m| modules[m].prefix.as_str()))
            ));
        }
        // The user's lines, then guesses for the rest, marked `?`.
        let fits: Vec<Vec<bool>> = targets
            .iter()
            .map(|t| modules.iter().map(|m| fit(t, m).is_ok()).collect())
            .collect();
        let mut forced: Vec<Option<usize>> = vec![None; targets.len()];
        let mut skip: Vec<bool> = vec![false; modules.len()];
        for &(t, m) in &pairs {
            forced[t] = Some(m);
        }
        for &m in module_line.keys() {
            skip[m] = true;
        }
        let mut text = text.trim_end().to_string();
        text.push_str(
            "\n# unetc: the lines below complete the map; check each and delete its `?`.\n",
        );
        text.push_str(&guesses(targets, modules, &fits, &forced, skip, false));
        return Err(ConvertError {
            message: problems.join("\n"),
            proposal: Some(text),
        });
    }
    let weights = collect(&pairs, targets, modules).map_err(|e| ConvertError {
        message: e,
        proposal: None,
    })?;
    Ok(Converted {
        weights,
        binding: Binding::Map,
        modules: modules.len(),
        ignored,
        order_only: 0,
    })
}

/// At most 8 names, then a count.
fn list<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let all: Vec<&str> = names.collect();
    let mut s: Vec<String> = all.iter().take(8).map(|n| format!("`{n}`")).collect();
    if all.len() > 8 {
        s.push(format!("and {} more", all.len() - 8));
    }
    s.join(", ")
}

fn infer(targets: &[Target], modules: &[Module]) -> Result<Converted, ConvertError> {
    let n = targets.len();
    // The pairs the shapes force: a layer only one free module fits, or a module that fits
    // only one free layer, until nothing changes.
    let fits: Vec<Vec<bool>> = targets
        .iter()
        .map(|t| modules.iter().map(|m| fit(t, m).is_ok()).collect())
        .collect();
    let mut of_target: Vec<Option<usize>> = vec![None; n];
    let mut of_module: Vec<Option<usize>> = vec![None; modules.len()];
    loop {
        let mut changed = false;
        for t in 0..n {
            if of_target[t].is_some() {
                continue;
            }
            let free: Vec<usize> = (0..modules.len())
                .filter(|&m| of_module[m].is_none() && fits[t][m])
                .collect();
            if free.len() == 1 {
                of_target[t] = Some(free[0]);
                of_module[free[0]] = Some(t);
                changed = true;
            }
        }
        for m in 0..modules.len() {
            if of_module[m].is_some() {
                continue;
            }
            let free: Vec<usize> = (0..n)
                .filter(|&t| of_target[t].is_none() && fits[t][m])
                .collect();
            if free.len() == 1 {
                of_target[free[0]] = Some(m);
                of_module[m] = Some(free[0]);
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    // 1. Module order (it agrees with every forced pair: those hold in any pairing that fits).
    let mut order_problem = None;
    if modules.len() == n {
        for i in 0..n {
            if let Err(why) = fit(&targets[i], &modules[i]) {
                order_problem = Some(format!(
                    "in module order, layer {} of {n}, {}, meets module `{}`: {why}",
                    i + 1,
                    targets[i].describe(),
                    modules[i].prefix
                ));
                break;
            }
        }
        if order_problem.is_none() {
            let pairs: Vec<(usize, usize)> = (0..n).map(|i| (i, i)).collect();
            let weights = collect(&pairs, targets, modules).map_err(|e| ConvertError {
                message: e,
                proposal: None,
            })?;
            return Ok(Converted {
                weights,
                binding: Binding::Order,
                modules: modules.len(),
                ignored: Vec::new(),
                order_only: of_target.iter().filter(|m| m.is_none()).count(),
            });
        }
    } else {
        order_problem = Some(format!(
            "the state_dict has {} modules with tensors, the spec {n} layers with weights",
            modules.len()
        ));
    }
    // 2. The only pairing the shapes allow.
    if of_target.iter().all(Option::is_some) && of_module.iter().all(Option::is_some) {
        let pairs: Vec<(usize, usize)> = of_target
            .iter()
            .enumerate()
            .filter_map(|(t, m)| m.map(|m| (t, m)))
            .collect();
        let weights = collect(&pairs, targets, modules).map_err(|e| ConvertError {
            message: e,
            proposal: None,
        })?;
        return Ok(Converted {
            weights,
            binding: Binding::Shapes,
            modules: modules.len(),
            ignored: Vec::new(),
            order_only: 0,
        });
    }
    // 3. Refuse, naming the first problem, with a proposed map.
    // A layer no free module fits says more than an ambiguous one: name it first.
    let free_fits = |t: usize| (0..modules.len()).any(|m| of_module[m].is_none() && fits[t][m]);
    let first_open = (0..n)
        .find(|&t| of_target[t].is_none() && !free_fits(t))
        .or_else(|| (0..n).find(|&t| of_target[t].is_none()));
    let shape_problem = match first_open {
        Some(t) => {
            let free: Vec<&str> = (0..modules.len())
                .filter(|&m| of_module[m].is_none() && fits[t][m])
                .map(|m| modules[m].prefix.as_str())
                .collect();
            if free.is_empty() {
                // An attention's module is told by its tensors' names: say why each free one
                // does not fit.
                let near: Vec<String> = (0..modules.len())
                    .filter(|&m| {
                        of_module[m].is_none()
                            && targets[t].rule == Rule::Attention
                            && modules[m].params.keys().any(|k| k.ends_with("proj_weight"))
                    })
                    .filter_map(|m| {
                        fit(&targets[t], &modules[m])
                            .err()
                            .map(|why| format!("; `{}`: {why}", modules[m].prefix))
                    })
                    .collect();
                format!(
                    "by shape, no module fits layer {} (it needs PyTorch {}){}",
                    targets[t].describe(),
                    torch_needs(&targets[t]),
                    near.concat()
                )
            } else {
                format!(
                    "by shape, layer {} fits {} modules ({}), and nothing tells them apart",
                    targets[t].describe(),
                    free.len(),
                    list(free.into_iter())
                )
            }
        }
        None => {
            let m = (0..modules.len())
                .find(|&m| of_module[m].is_none())
                .unwrap_or(0);
            format!(
                "module `{}` ({}) fits no layer of the spec",
                modules.get(m).map_or("", |m| m.prefix.as_str()),
                modules.get(m).map_or(String::new(), Module::describe)
            )
        }
    };
    Err(ConvertError {
        message: format!(
            "cannot tell which PyTorch module holds which layer's weights:\n  {}\n  {shape_problem}",
            order_problem.unwrap_or_default()
        ),
        proposal: Some(proposal(targets, modules, &fits, &of_target)),
    })
}

/// The PyTorch names and shapes a layer's weights take.
fn torch_needs(t: &Target) -> String {
    if t.rule == Rule::Attention {
        return "in_proj_weight (or q/k/v_proj_weight), out_proj.weight and their biases of a \
                torch.nn.MultiheadAttention"
            .into();
    }
    let parts: Vec<String> = t
        .vars
        .iter()
        .map(|(v, want)| {
            let p = torch_param(t.rule, v).unwrap_or("?");
            format!("{p} {:?}", torch_shape(t.rule, want))
        })
        .collect();
    parts.join(", ")
}

/// A map for the user to check: the forced pairs as they are, the rest guessed (each free layer
/// takes the first free module in key order that fits it) and marked `?`.
fn proposal(
    targets: &[Target],
    modules: &[Module],
    fits: &[Vec<bool>],
    forced: &[Option<usize>],
) -> String {
    let mut s = String::from(
        "# A proposed map from PyTorch modules to unetc layers (`unetc convert-weights --map`).\n# Lines marked `?` are guesses: check each against the model's code, fix it, delete the `?`.\n# `module -> -` leaves a module's tensors unused.\n",
    );
    s.push_str(&guesses(
        targets,
        modules,
        fits,
        forced,
        vec![false; modules.len()],
        true,
    ));
    s
}

/// Map lines: the `forced` pairs (written only when `write_forced`), a `?` guess for every other
/// layer, and `? module -> -` for every module neither forced, guessed nor `taken` already.
fn guesses(
    targets: &[Target],
    modules: &[Module],
    fits: &[Vec<bool>],
    forced: &[Option<usize>],
    mut taken: Vec<bool>,
    write_forced: bool,
) -> String {
    for m in forced.iter().flatten() {
        taken[*m] = true;
    }
    let mut s = String::new();
    for (t, target) in targets.iter().enumerate() {
        match forced[t] {
            Some(m) => {
                if write_forced {
                    let _ = writeln!(
                        s,
                        "{} -> {}   # the only module that fits",
                        modules[m].prefix, target.layer
                    );
                }
            }
            None => {
                let cands: Vec<usize> = (0..modules.len()).filter(|&m| fits[t][m]).collect();
                let guess = cands.iter().copied().find(|&m| !taken[m]);
                match guess {
                    Some(m) => {
                        taken[m] = true;
                        let others: Vec<&str> = cands
                            .iter()
                            .filter(|&&o| o != m)
                            .map(|&o| modules[o].prefix.as_str())
                            .collect();
                        let _ = writeln!(
                            s,
                            "? {} -> {}   # fits {} module(s); the others: {}",
                            modules[m].prefix,
                            target.layer,
                            cands.len(),
                            list(others.into_iter())
                        );
                    }
                    None => {
                        let _ = writeln!(
                            s,
                            "? MODULE -> {}   # no free module fits; it needs {}",
                            target.layer,
                            torch_needs(target)
                        );
                    }
                }
            }
        }
    }
    for (m, module) in modules.iter().enumerate() {
        if !taken[m] {
            let _ = writeln!(
                s,
                "? {} -> -   # fits no free layer: {}",
                module.prefix,
                module.describe()
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order_compares_numbers_as_numbers() {
        let mut v = vec!["enc.10", "enc.2", "dec.0", "enc.2.conv", "enc.1a", "enc.1"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            v,
            ["dec.0", "enc.1", "enc.2", "enc.2.conv", "enc.10", "enc.1a"]
        );
    }

    #[test]
    fn kernel_layout_moves_out_and_in_to_the_end() {
        // weight[o=0][i=0][kh=0][kw=2] = 7 in a [2, 1, 1, 3] weight is at index 2;
        // Keras [1, 3, 1, 2] puts [kh=0][kw=2][i=0][o=0] at (2 * 1 + 0) * 2 + 0 = 4.
        let mut data = vec![0f32; 6];
        data[2] = 7.0;
        let k = kernel_to_keras(&Tensor {
            shape: vec![2, 1, 1, 3],
            data,
        });
        assert_eq!(k.shape, vec![1, 3, 1, 2]);
        assert_eq!(k.data.iter().position(|&v| v == 7.0), Some(4));
    }

    #[test]
    fn map_lines_marked_unchecked_are_refused() {
        let e = parse_map("a.0 -> conv\n? a.1 -> bn\n").unwrap_err();
        assert!(e.message.contains("line 2 is marked `?`"), "{}", e.message);
        let ok = parse_map("# c\na.0 -> conv  # x\n\naux -> -\n").unwrap();
        assert_eq!(
            ok,
            vec![
                (2, "a.0".to_string(), Some("conv".to_string())),
                (4, "aux".to_string(), None)
            ]
        );
    }
}
