//! Shape inference: every layer's output shape, weights, parameter counts and MACs, as a
//! side table indexed by node. Errors point at the layer's call and at its inputs.

use crate::diag::Diagnostic;
use crate::ir::{Graph, NodeId, Shape, WeightSpec};
use crate::text::shape_text;

/// Sizes beyond this are refused: no real network has them, and products stay in range.
pub const MAX_SIZE: i64 = 1 << 30;

#[derive(Debug, Clone, Default)]
pub struct LayerInfo {
    /// `None` when it could not be computed (an error here or upstream).
    pub shape: Option<Shape>,
    pub weights: Vec<WeightSpec>,
    pub trainable_params: u64,
    pub non_trainable_params: u64,
    /// The bytes of those parameters, as Keras sums them (float32 but for int64 counters).
    pub trainable_bytes: u64,
    pub non_trainable_bytes: u64,
    pub macs: u64,
}

impl LayerInfo {
    pub fn params(&self) -> u64 {
        self.trainable_params
            .saturating_add(self.non_trainable_params)
    }
}

/// Everything inference learned about a graph.
#[derive(Debug, Clone, Default)]
pub struct Inferred {
    pub layers: Vec<LayerInfo>,
    /// Keras's `model.layers`: the layers that lead to an output, in summary order.
    pub keras_order: Vec<NodeId>,
    /// An execution order (inputs first) of the kept layers.
    pub schedule: Vec<NodeId>,
    pub diags: Vec<Diagnostic>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub params: u64,
    pub trainable: u64,
    pub non_trainable: u64,
    /// The parameters' bytes (Keras's summary totals).
    pub trainable_bytes: u64,
    pub non_trainable_bytes: u64,
    pub macs: u64,
    /// Bytes of every layer output at batch 1, f32 (what Keras keeps alive).
    pub activation_bytes: u64,
    /// The most bytes alive at once at batch 1, f32, when each tensor is freed after its last use.
    pub peak_activation_bytes: u64,
}

pub fn infer(graph: &Graph, broken: &[bool]) -> Inferred {
    let mut out = Inferred {
        layers: vec![LayerInfo::default(); graph.nodes.len()],
        ..Inferred::default()
    };
    let order = match graph.topological_order() {
        Ok(order) => order,
        Err(cycle) => {
            let names: Vec<&str> = cycle
                .iter()
                .map(|&id| graph.node(id).name.as_str())
                .collect();
            let first = graph.node(cycle[0]);
            let mut d = Diagnostic::error(
                "E-cycle",
                format!(
                    "the layers form a cycle: {} -> {}",
                    names.join(" -> "),
                    names[0]
                ),
            )
            .at(first.span, "part of a cycle")
            .help("a layer's inputs must not depend on its own output");
            for &id in &cycle[1..] {
                d = d.also(graph.node(id).span, format!("`{}`", graph.node(id).name));
            }
            out.diags.push(d);
            return out;
        }
    };
    for &id in &order {
        let node = graph.node(id);
        if broken.get(id.index()).copied().unwrap_or(false) {
            continue;
        }
        let inputs: Option<Vec<Shape>> = node
            .inputs
            .iter()
            .map(|&i| out.layers[i.index()].shape.clone())
            .collect();
        let Some(inputs) = inputs else { continue };
        let names: Vec<&str> = node
            .inputs
            .iter()
            .map(|&i| graph.node(i).name.as_str())
            .collect();
        let fill = |text: &str| fill_names(text, &names);
        for w in node.op.warnings(&inputs) {
            let mut d = Diagnostic::warning(
                w.code,
                format!(
                    "{} `{}`: {}",
                    node.op.class_name(),
                    node.name,
                    fill(&w.message)
                ),
            )
            .at(node.span, fill(&w.label));
            for h in &w.help {
                d = d.help(fill(h));
            }
            out.diags.push(d);
        }
        match node.op.infer(&inputs) {
            Ok(shape) => {
                if let Some(&bad) = shape.iter().find(|&&d| d <= 0 || d > MAX_SIZE) {
                    let what = if bad <= 0 {
                        "reaches zero or below"
                    } else {
                        "is larger than unetc's limit"
                    };
                    out.diags.push(
                        Diagnostic::error(
                            "E-size",
                            format!(
                                "{} `{}`: output size {what}: {}",
                                node.op.class_name(),
                                node.name,
                                shape_text(&shape)
                            ),
                        )
                        .at(node.span, format!("output {}", shape_text(&shape))),
                    );
                    continue;
                }
                let weights = node.op.weights(&inputs);
                if let Some(owner) = node.shares {
                    // Keras builds a layer once: a later call must fit the weights the first
                    // call made (its parameters are counted once, on the first call).
                    let first = &out.layers[owner.index()];
                    let fits = first.shape.is_none()
                        || first
                            .weights
                            .iter()
                            .map(|w| &w.shape)
                            .eq(weights.iter().map(|w| &w.shape));
                    if !fits {
                        out.diags.push(
                            Diagnostic::error(
                                "E-shared",
                                format!(
                                    "{} `{}`: this call's input ({}) needs other weights than the layer's first call made",
                                    node.op.class_name(),
                                    node.name,
                                    inputs.iter().map(|s| shape_text(s)).collect::<Vec<_>>().join(", ")
                                ),
                            )
                            .at(node.span, "inputs do not fit the shared layer")
                            .also(graph.node(owner).span, "its first call")
                            .help("a shared layer's every call needs inputs with the same channels"),
                        );
                        continue;
                    }
                    out.layers[id.index()] = LayerInfo {
                        macs: node.op.macs(&inputs, &shape),
                        shape: Some(shape),
                        weights,
                        trainable_params: 0,
                        non_trainable_params: 0,
                        trainable_bytes: 0,
                        non_trainable_bytes: 0,
                    };
                    continue;
                }
                let (mut trainable, mut frozen) = (0u64, 0u64);
                let (mut trainable_bytes, mut frozen_bytes) = (0u64, 0u64);
                for w in &weights {
                    let bytes = w.count().saturating_mul(node.op.value_bytes(w.name));
                    if w.trainable && node.trainable {
                        trainable = trainable.saturating_add(w.count());
                        trainable_bytes = trainable_bytes.saturating_add(bytes);
                    } else {
                        frozen = frozen.saturating_add(w.count());
                        frozen_bytes = frozen_bytes.saturating_add(bytes);
                    }
                }
                out.layers[id.index()] = LayerInfo {
                    macs: node.op.macs(&inputs, &shape),
                    shape: Some(shape),
                    weights,
                    trainable_params: trainable,
                    non_trainable_params: frozen,
                    trainable_bytes,
                    non_trainable_bytes: frozen_bytes,
                };
            }
            Err(e) => {
                let mut d = Diagnostic::error(
                    e.code,
                    format!(
                        "{} `{}`: {}",
                        node.op.class_name(),
                        node.name,
                        fill(&e.message)
                    ),
                )
                .at(node.span, fill(&e.label));
                for (&input, shape) in node.inputs.iter().zip(&inputs) {
                    let producer = graph.node(input);
                    if producer.span.file == node.span.file && producer.span != node.span {
                        d = d.also(
                            producer.span,
                            format!("`{}` is {}", producer.name, shape_text(shape)),
                        );
                    }
                }
                let recrop = match e.code {
                    "E-concat-shape" => recrop_help(graph, &out.layers, node, &inputs),
                    _ => Vec::new(),
                };
                if recrop.is_empty() {
                    for h in &e.help {
                        d = d.help(fill(h));
                    }
                }
                for h in recrop {
                    d = d.help(h);
                }
                out.diags.push(d);
            }
        }
    }
    // Outside a nested model only its outputs are seen (Keras: `model[0][k]`).
    for id in graph.ids() {
        let node = graph.node(id);
        for &input in &node.inputs {
            if let Some(hidden_in) = hidden_scope(graph, input, node.scope) {
                let scope = &graph.scopes[hidden_in.index()];
                out.diags.push(
                    Diagnostic::error(
                        "E-nested-ref",
                        format!(
                            "`{}` takes `{}`, a layer inside nested model `{}` that is not one of its outputs",
                            node.name,
                            graph.node(input).name,
                            scope.name
                        ),
                    )
                    .at(node.span, "takes a hidden layer")
                    .also(scope.span, format!("nested model `{}`", scope.name))
                    .help("add the layer to the nested model's `output`, or take one of its outputs"),
                );
            }
        }
    }
    // A nested model's input layers declare the shapes it takes, as Keras checks them.
    for scope in &graph.scopes {
        for (&input, (declared, span)) in scope.inputs.iter().zip(&scope.input_shapes) {
            let Some(actual) = &out.layers[input.index()].shape else {
                continue;
            };
            if actual == declared {
                continue;
            }
            // Keras runs a model on other sizes (with a warning), but its layers were built
            // for the declared rank and channels.
            let fits = actual.len() == declared.len() && actual.last() == declared.last();
            let message = format!(
                "nested model `{}` takes {} but is called on `{}`, which is {}",
                scope.name,
                shape_text(declared),
                graph.node(input).name,
                shape_text(actual)
            );
            let d = if fits {
                Diagnostic::warning("W-nested-input", message)
                    .at(*span, "built for another size")
                    .help("Keras runs it on the new size as unetc does (and warns as well); make the input layer's shape the tensor's to silence this")
            } else {
                Diagnostic::error("E-nested-input", message)
                    .at(*span, "its input layer")
                    .help("a model's layers are built for its inputs' rank and channels: make the input layer's shape the tensor's")
            };
            out.diags.push(d.also(scope.span, "called here"));
        }
    }
    let keep = graph.reaches_output();
    out.schedule = order.into_iter().filter(|id| keep[id.index()]).collect();
    out.keras_order = graph.keras_layer_order();
    out
}

/// The nested model that hides `input` from a layer in scope `at`: `input` must be in `at`
/// (or a model around it), or an output of every nested model between.
fn hidden_scope(
    graph: &Graph,
    input: NodeId,
    at: Option<crate::ir::ScopeId>,
) -> Option<crate::ir::ScopeId> {
    let encloses = |outer: Option<crate::ir::ScopeId>| {
        let mut s = at;
        loop {
            if s == outer {
                return true;
            }
            match s {
                Some(inner) => s = graph.scopes[inner.index()].parent,
                None => return false,
            }
        }
    };
    let mut s = graph.node(input).scope;
    while !encloses(s) {
        let scope = s?;
        if !graph.scopes[scope.index()].outputs.contains(&input) {
            return Some(scope);
        }
        s = graph.scopes[scope.index()].parent;
    }
    None
}

/// A concatenation whose cropped inputs do not match its uncropped ones: the fix is the crop
/// already there (`cropping2d(6)` where 4 was meant), not one more crop of the up path. Empty
/// when no input comes from a Cropping2D, or the uncropped inputs disagree among themselves.
fn recrop_help(
    graph: &Graph,
    layers: &[LayerInfo],
    node: &crate::ir::Node,
    inputs: &[Shape],
) -> Vec<String> {
    let cropping = |id: NodeId| match &graph.node(id).op {
        crate::ir::Op::Cropping2D(c) => Some(c.cropping),
        _ => None,
    };
    let uncropped: Vec<(NodeId, &Shape)> = node
        .inputs
        .iter()
        .zip(inputs)
        .filter(|(&id, s)| cropping(id).is_none() && s.len() == 3)
        .map(|(&id, s)| (id, s))
        .collect();
    let Some(&(reference, target)) = uncropped.first() else {
        return Vec::new();
    };
    if uncropped
        .iter()
        .any(|(_, s)| s[0] != target[0] || s[1] != target[1])
    {
        return Vec::new();
    }
    let (th, tw) = (target[0], target[1]);
    let mut help = Vec::new();
    for (&id, shape) in node.inputs.iter().zip(inputs) {
        let (Some(old), [h, w, _]) = (cropping(id), shape.as_slice()) else {
            continue;
        };
        let crop = graph.node(id);
        let Some(&source) = crop.inputs.first() else {
            continue;
        };
        let Some([sh, sw, _]) = layers[source.index()].shape.as_deref() else {
            continue;
        };
        if (*h, *w) == (th, tw) {
            continue;
        }
        let source_name = &graph.node(source).name;
        let reference_name = &graph.node(reference).name;
        if *sh >= th && *sw >= tw {
            let new = crate::ir::ops::merge::crop_to(*sh, *sw, th, tw);
            help.push(format!(
                "change `{}`'s cropping from {} to `cropping2d({new})`: it crops `{source_name}` \
                 from {sh}x{sw} to {h}x{w}, but `{reference_name}` is {th}x{tw}",
                crop.name,
                crate::ir::ops::merge::cropping_text(old),
            ));
        } else {
            help.push(format!(
                "`{source_name}` is {sh}x{sw}, smaller than `{reference_name}` ({th}x{tw}) before \
                 `{}` crops it: remove that crop and crop `{reference_name}` instead, or choose \
                 an input size from `unetc sizes`",
                crop.name
            ));
        }
    }
    help
}

/// Replaces `{0}`, `{1}`, ... with backquoted input names.
fn fill_names(text: &str, names: &[&str]) -> String {
    let mut s = text.to_string();
    for (i, name) in names.iter().enumerate() {
        s = s.replace(&format!("{{{i}}}"), &format!("`{name}`"));
    }
    s
}

impl Inferred {
    pub fn totals(&self, graph: &Graph) -> Totals {
        let mut t = Totals::default();
        for &id in &self.keras_order {
            let l = &self.layers[id.index()];
            t.trainable = t.trainable.saturating_add(l.trainable_params);
            t.non_trainable = t.non_trainable.saturating_add(l.non_trainable_params);
            t.trainable_bytes = t.trainable_bytes.saturating_add(l.trainable_bytes);
            t.non_trainable_bytes = t.non_trainable_bytes.saturating_add(l.non_trainable_bytes);
            t.macs = t.macs.saturating_add(l.macs);
            t.activation_bytes = t.activation_bytes.saturating_add(self.output_bytes(id));
        }
        t.params = t.trainable.saturating_add(t.non_trainable);
        t.peak_activation_bytes = self.peak_live_bytes(graph);
        t
    }

    fn output_bytes(&self, id: NodeId) -> u64 {
        self.layers[id.index()].shape.as_ref().map_or(0, |s| {
            s.iter()
                .fold(4u64, |acc, &d| acc.saturating_mul(d.max(0) as u64))
        })
    }

    /// Peak of live bytes over the schedule: a tensor lives from its producer to its last consumer
    /// (model outputs to the end); the layer running holds its inputs and its output at once.
    pub fn peak_live_bytes(&self, graph: &Graph) -> u64 {
        let n = self.schedule.len();
        let mut position = vec![usize::MAX; graph.nodes.len()];
        for (i, &id) in self.schedule.iter().enumerate() {
            position[id.index()] = i;
        }
        let mut last_use: Vec<usize> = (0..n).collect();
        for (i, &id) in self.schedule.iter().enumerate() {
            for &input in &graph.node(id).inputs {
                let p = position[input.index()];
                if p != usize::MAX {
                    last_use[p] = last_use[p].max(i);
                }
            }
        }
        for &out in &graph.outputs {
            if position[out.index()] != usize::MAX {
                last_use[position[out.index()]] = n.saturating_sub(1);
            }
        }
        // Difference array over schedule positions.
        let mut delta = vec![0i128; n + 1];
        for (i, &id) in self.schedule.iter().enumerate() {
            let bytes = self.output_bytes(id) as i128;
            delta[i] += bytes;
            delta[last_use[i] + 1] -= bytes;
        }
        let (mut live, mut peak) = (0i128, 0i128);
        for d in delta.iter().take(n) {
            live += d;
            peak = peak.max(live);
        }
        peak.clamp(0, u64::MAX as i128) as u64
    }
}
