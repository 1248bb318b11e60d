//! `unetc plan`: what each layer costs at run time — a kernel, a copy, or nothing (a view, a
//! fused layer, a concatenation never built) — and where its value lives in the arena.

use crate::exec::plan::{Plan, Storage, Window, Work};
use crate::ir::{NodeId, Op};
use crate::text::bytes;
use crate::Compiled;
use serde::Serialize;
use std::fmt::Write;

/// What one scheduled layer costs at run time.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "work", rename_all = "snake_case")]
pub enum StepWork {
    /// The model's input, copied into the arena.
    Upload,
    /// A kernel runs, possibly with a batch norm folded into its weights and an activation
    /// layer in its epilogue.
    Kernel {
        folded_batch_norm: Option<String>,
        activation: Option<String>,
    },
    /// A concatenation never built: its readers read these parts.
    NeverBuilt { parts: Vec<String> },
    /// A crop: a window of the value of layer `source`.
    WindowOf { source: String },
    /// A dropout at inference: the value of layer `source` itself.
    SameAs { source: String },
    /// Computed by the kernel of `convolution`.
    FusedInto { convolution: String },
    /// No work and no other layer to name.
    Nothing,
    /// A built concatenation: `copied` parts copied, `in_place` written there by their producers.
    Copy { copied: usize, in_place: usize },
}

impl StepWork {
    pub fn costs_nothing(&self) -> bool {
        match self {
            StepWork::NeverBuilt { .. }
            | StepWork::WindowOf { .. }
            | StepWork::SameAs { .. }
            | StepWork::FusedInto { .. }
            | StepWork::Nothing => true,
            StepWork::Upload | StepWork::Kernel { .. } | StepWork::Copy { .. } => false,
        }
    }

    /// The `work` column of `unetc plan`.
    fn text(&self) -> String {
        match self {
            StepWork::Upload => "upload".to_string(),
            StepWork::Kernel {
                folded_batch_norm,
                activation,
            } => {
                let mut s = "kernel".to_string();
                if let Some(bn) = folded_batch_norm {
                    let _ = write!(s, " + folded {bn}");
                }
                if let Some(act) = activation {
                    let _ = write!(s, " + {act}");
                }
                s
            }
            StepWork::NeverBuilt { parts } => format!(
                "nothing: never built; its readers read {}",
                parts.join(" + ")
            ),
            StepWork::WindowOf { source } => format!("nothing: a window of {source}"),
            StepWork::SameAs { source } => format!("nothing: is {source}"),
            StepWork::FusedInto { convolution } => format!("nothing: fused into {convolution}"),
            StepWork::Nothing => "nothing".to_string(),
            StepWork::Copy { copied, in_place } => {
                format!("copy {copied} part(s); {in_place} written in place by their producers")
            }
        }
    }
}

/// Where a layer's value lives in the arena.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Place {
    pub buffer: usize,
    /// Offset of the buffer in the arena, per image.
    pub offset_bytes: u64,
    /// Whether the value is only part of the buffer (a crop, a slice of a concatenation).
    pub window: bool,
}

/// One scheduled layer of the plan. The work's fields sit beside `layer` in the JSON, so none of
/// them may be called `layer` or `place`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanRow {
    pub layer: String,
    #[serde(flatten)]
    pub work: StepWork,
    /// `None` for a concatenation never built (its parts have places).
    pub place: Option<Place>,
}

/// `unetc plan` as data: the text and the JSON are both printed from this.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanReport {
    pub element_bytes: u64,
    pub steps: Vec<PlanRow>,
    /// Steps that run work (kernels, uploads, copies).
    pub working_steps: usize,
    /// Layers that cost nothing.
    pub free_layers: usize,
    pub buffers: usize,
    /// The arena for one image.
    pub arena_bytes: u64,
    pub arena_elements: usize,
    /// The most bytes alive at once, the least any arena could have.
    pub live_minimum_bytes: u64,
}

/// The plan, one row per scheduled layer, then the arena.
pub fn plan_report(c: &Compiled, plan: &Plan, element_bytes: u64) -> PlanReport {
    let g = &c.graph;
    let name = |id: NodeId| g.node(id).name.clone();
    // Who folded or fused a layer: the convolution that absorbed it.
    let mut absorbed_by: Vec<Option<NodeId>> = vec![None; g.nodes.len()];
    for step in &plan.steps {
        let fused = &plan.fused[step.node.index()];
        for layer in [fused.batch_norm, fused.activation_layer]
            .into_iter()
            .flatten()
        {
            absorbed_by[layer.index()] = Some(step.node);
        }
    }
    let place = |w: &Window| -> Place {
        let b = &plan.buffers[w.buffer];
        Place {
            buffer: w.buffer,
            offset_bytes: b.offset as u64 * element_bytes,
            window: !(w.offset == 0 && w.is_dense() && w.len() == b.len),
        }
    };
    let steps: Vec<PlanRow> = plan
        .steps
        .iter()
        .map(|step| {
            let id = step.node;
            let node = g.node(id);
            let fused = &plan.fused[id.index()];
            let work = match (&step.work, &node.op) {
                (Work::Kernel, Op::Input(_)) => StepWork::Upload,
                (Work::Kernel, _) => StepWork::Kernel {
                    folded_batch_norm: fused.batch_norm.map(name),
                    activation: fused.activation.map(|a| a.keras_name().to_string()),
                },
                (Work::Nothing, Op::Concatenate(_)) => StepWork::NeverBuilt {
                    parts: node.inputs.iter().map(|&i| name(i)).collect(),
                },
                (Work::Nothing, Op::Cropping2D(_)) => StepWork::WindowOf {
                    source: name(node.inputs[0]),
                },
                (Work::Nothing, Op::Dropout(_)) => StepWork::SameAs {
                    source: name(node.inputs[0]),
                },
                // The layers the plan folds or fuses into a convolution, and the kinds it never
                // leaves without work (named, so that a new kind is placed in one of the arms).
                (
                    Work::Nothing,
                    Op::BatchNormalization(_)
                    | Op::Activation(_)
                    | Op::ReLU(_)
                    | Op::Softmax(_)
                    | Op::Input(_)
                    | Op::Conv2D(_)
                    | Op::Conv2DTranspose(_)
                    | Op::MaxPooling2D(_)
                    | Op::UpSampling2D(_)
                    | Op::Resizing(_)
                    | Op::ZeroPadding2D(_)
                    | Op::Add(_)
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
                    | Op::GlobalAveragePooling3D(_),
                ) => match absorbed_by[id.index()] {
                    Some(conv) => StepWork::FusedInto {
                        convolution: name(conv),
                    },
                    None => StepWork::Nothing,
                },
                (Work::Concat(copies), _) => StepWork::Copy {
                    copied: copies.len(),
                    in_place: node.inputs.len() - copies.len(),
                },
            };
            let place = match plan.storage[id.index()].as_ref() {
                Some(Storage::Window(w)) => Some(place(w)),
                Some(Storage::Parts(_)) | None => None,
            };
            PlanRow {
                layer: node.name.clone(),
                work,
                place,
            }
        })
        .collect();
    let free_layers = steps.iter().filter(|r| r.work.costs_nothing()).count();
    PlanReport {
        element_bytes,
        working_steps: steps.len() - free_layers,
        free_layers,
        steps,
        buffers: plan.buffers.len(),
        arena_bytes: plan.arena_len as u64 * element_bytes,
        arena_elements: plan.arena_len,
        live_minimum_bytes: plan.live_minimum as u64 * element_bytes,
    }
}

/// The plan as a table, one row per scheduled layer, then the arena.
pub fn plan_text(c: &Compiled, plan: &Plan, element_bytes: u64) -> String {
    let report = plan_report(c, plan, element_bytes);
    let rows: Vec<[String; 3]> = report
        .steps
        .iter()
        .map(|r| {
            let place = match &r.place {
                Some(p) => format!(
                    "buffer {} @ {}{}",
                    p.buffer,
                    bytes(p.offset_bytes),
                    if p.window { " (window)" } else { "" }
                ),
                None => "-".to_string(),
            };
            [r.layer.clone(), r.work.text(), place]
        })
        .collect();
    let widths = [0, 1].map(|k| rows.iter().map(|r| r[k].len()).max().unwrap_or(0));
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<w0$}  {:<w1$}  where",
        "layer",
        "work",
        w0 = widths[0],
        w1 = widths[1]
    );
    for r in &rows {
        let _ = writeln!(
            out,
            "{:<w0$}  {:<w1$}  {}",
            r[0],
            r[1],
            r[2],
            w0 = widths[0],
            w1 = widths[1]
        );
    }
    let _ = writeln!(
        out,
        "\n{} steps run work, {} layers cost nothing; {} buffers in one arena of {} per image ({} elements of {} bytes); the most alive at once is {}",
        report.working_steps,
        report.free_layers,
        report.buffers,
        bytes(report.arena_bytes),
        report.arena_elements,
        report.element_bytes,
        bytes(report.live_minimum_bytes),
    );
    out
}

/// `unetc plan --train`: what a training step keeps for the backward pass, layer by layer, and
/// its peak ([`crate::train::memory::MemoryPlan`]).
pub fn train_text(p: &crate::train::memory::MemoryPlan, optimizer: &str) -> String {
    let b = |elements: usize| bytes(elements as u64 * 4);
    let name_w = p
        .layers
        .iter()
        .map(|l| l.name.len())
        .max()
        .unwrap_or(5)
        .max(5);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<name_w$}  {:>10}  {:>10}  kept for",
        "layer", "output", "saved"
    );
    for l in &p.layers {
        let kept = if l.kept_for.is_empty() {
            "- (freed in the forward pass)".to_string()
        } else if l.recomputed {
            format!("- (rebuilt from its inputs for {})", l.kept_for.join(", "))
        } else {
            l.kept_for.join(", ")
        };
        let saved = if l.saved_elements == 0 {
            "-".to_string()
        } else {
            b(l.saved_elements)
        };
        let _ = writeln!(
            s,
            "{:<name_w$}  {:>10}  {:>10}  {kept}",
            l.name,
            b(l.output_elements),
            saved
        );
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "batch {}, f32: the forward pass ends holding {} for the backward pass (all outputs \
         together: {}); between layers the step peaks at {} (values, saved extras, gradients; a \
         layer's scratch space is not counted)",
        p.batch,
        b(p.kept_elements),
        b(p.all_outputs_elements),
        b(p.peak_elements)
    );
    let _ = writeln!(
        s,
        "weights {}, their gradients {}, {optimizer} state {} ({} slot(s) per trainable value); \
         a step needs about {} in all",
        b(p.weight_elements),
        b(p.weight_elements),
        b(p.optimizer_slots * p.trainable_elements),
        p.optimizer_slots,
        bytes(p.total_bytes())
    );
    s
}
