//! Reports over a checked model: the Keras summary (both layouts) and JSON.

pub mod diagram;
pub mod json;
pub mod plan;
pub mod sizes;
pub mod summary;
pub mod volume;

use crate::ir::{Graph, NodeId, ScopeId};
use crate::text::{bytes, si, thousands};
use crate::Compiled;
use std::collections::HashMap;
use summary::{SummaryModel, SummaryRow};

/// One row of the summary: a layer of the model itself, or a whole nested model.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Unit {
    Layer(NodeId),
    Nested(ScopeId),
}

/// One call Keras records (a node of a layer): a layer's call, or a nested model's call.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Call {
    Layer(NodeId),
    Nested(ScopeId),
}

/// The rows Keras's `model.summary()` prints, in its order. A nested model is one row (its
/// outputs, the sum of its parameters); connections into it name its output (`model[0][3]`).
/// A shared layer is one row listing every call's inputs; its call k is `layer[k][0]`.
pub fn summary_model(c: &Compiled) -> SummaryModel {
    let g: &Graph = &c.graph;
    let kept = &c.info.keras_order;
    if g.scopes.is_empty() && g.nodes.iter().all(|n| n.shares.is_none()) {
        return flat_summary_model(c);
    }
    let call_of = |id: NodeId| g.top_scope(id).map_or(Call::Layer(id), Call::Nested);
    let unit_of = |call: Call| match call {
        Call::Layer(id) => Unit::Layer(g.layer_owner(id)),
        Call::Nested(s) => Unit::Nested(g.scope_owner(s)),
    };
    // Call k of a nested model called more than once (`shared(model)`), in creation order.
    let mut scope_call = vec![0usize; g.scopes.len()];
    let mut scope_calls_made = vec![0usize; g.scopes.len()];
    for (k, slot) in scope_call.iter_mut().enumerate() {
        let owner = g.scope_owner(ScopeId(k as u32)).index();
        *slot = scope_calls_made[owner];
        scope_calls_made[owner] += 1;
    }
    // Call k of a shared layer (its first call is 0), in creation order.
    let mut call_number: HashMap<NodeId, usize> = HashMap::new();
    let mut calls_made: HashMap<NodeId, usize> = HashMap::new();
    for id in g.ids() {
        let owner = g.layer_owner(id);
        let n = calls_made.entry(owner).or_insert(0);
        call_number.insert(id, *n);
        *n += 1;
    }
    let mut calls: Vec<Call> = Vec::new();
    let mut call_index: HashMap<Call, usize> = HashMap::new();
    let mut units: Vec<Unit> = Vec::new();
    let mut unit_index: HashMap<Unit, usize> = HashMap::new();
    let mut ids: Vec<NodeId> = kept.clone();
    ids.sort();
    for id in ids {
        let call = call_of(id);
        if call_index.contains_key(&call) {
            continue;
        }
        call_index.insert(call, calls.len());
        calls.push(call);
        let unit = unit_of(call);
        if let std::collections::hash_map::Entry::Vacant(slot) = unit_index.entry(unit) {
            slot.insert(units.len());
            units.push(unit);
        }
    }
    // What a consumer outside `id`'s nested model sees: `name[call][output]`.
    let reference = |id: NodeId| -> (Call, String) {
        let call = call_of(id);
        let text = match call {
            Call::Layer(_) => format!(
                "{}[{}][0]",
                g.node(g.layer_owner(id)).name,
                call_number.get(&id).copied().unwrap_or(0)
            ),
            Call::Nested(s) => {
                let scope = &g.scopes[s.index()];
                let k = scope.outputs.iter().position(|&o| o == id).unwrap_or(0);
                format!("{}[{}][{k}]", scope.name, scope_call[s.index()])
            }
        };
        (call, text)
    };
    let call_inputs = |call: Call| -> Vec<NodeId> {
        match call {
            Call::Layer(id) => g.node(id).inputs.clone(),
            Call::Nested(s) => g.scopes[s.index()].inputs.clone(),
        }
    };
    let shape_of = |id: NodeId| -> Vec<Option<u64>> {
        std::iter::once(None)
            .chain(
                c.info.layers[id.index()]
                    .shape
                    .iter()
                    .flatten()
                    .map(|&d| Some(d.max(0) as u64)),
            )
            .collect()
    };
    let inputs_of: Vec<Vec<usize>> = calls
        .iter()
        .map(|&call| {
            call_inputs(call)
                .into_iter()
                .filter_map(|i| call_index.get(&reference(i).0).copied())
                .collect()
        })
        .collect();
    let layer_of: Vec<usize> = calls
        .iter()
        .map(|&call| unit_index[&unit_of(call)])
        .collect();
    let outputs: Vec<usize> = g
        .outputs
        .iter()
        .filter_map(|&o| call_index.get(&reference(o).0).copied())
        .collect();
    let order = crate::ir::keras_order(&inputs_of, &outputs, &layer_of, units.len());
    // A nested model's parameters: those of every layer in it (at any depth).
    let mut nested_params = vec![0u64; g.scopes.len()];
    for &id in kept {
        if let Some(s) = g.top_scope(id) {
            let sum = &mut nested_params[g.scope_owner(s).index()];
            *sum = sum.saturating_add(c.info.layers[id.index()].params());
        }
    }
    let mut calls_of: Vec<Vec<Call>> = vec![Vec::new(); units.len()];
    for (k, &call) in calls.iter().enumerate() {
        calls_of[layer_of[k]].push(call);
    }
    let rows: Vec<SummaryRow> = order
        .iter()
        .map(|&u| {
            let unit = units[u];
            // The unit's calls, in call order (a shared layer's first call first).
            let mut own = std::mem::take(&mut calls_of[u]);
            own.sort_by_key(|&call| match call {
                Call::Layer(id) => call_number.get(&id).copied().unwrap_or(0),
                Call::Nested(s) => scope_call[s.index()],
            });
            let connected_to = own
                .iter()
                .flat_map(|&call| call_inputs(call))
                .map(|i| reference(i).1)
                .collect();
            match unit {
                Unit::Layer(owner) => {
                    let node = g.node(owner);
                    let shapes: Vec<Vec<Option<u64>>> = own
                        .iter()
                        .map(|&call| match call {
                            Call::Layer(id) => shape_of(id),
                            Call::Nested(_) => Vec::new(),
                        })
                        .collect();
                    SummaryRow {
                        name: node.name.clone(),
                        class: node.op.class_name().to_string(),
                        output_shape: shape_of(owner),
                        extra_outputs: Vec::new(),
                        multiple: shapes.windows(2).any(|w| w[0] != w[1]),
                        is_input: matches!(node.op, crate::ir::Op::Input(_)),
                        params: c.info.layers[owner.index()].params(),
                        connected_to,
                    }
                }
                Unit::Nested(s) => {
                    let scope = &g.scopes[s.index()];
                    let params = nested_params[s.index()];
                    let mut shapes = scope.outputs.iter().map(|&o| shape_of(o));
                    // Calls giving other shapes print as "multiple", as for a shared layer.
                    let per_call: Vec<Vec<Vec<Option<u64>>>> = own
                        .iter()
                        .map(|&call| match call {
                            Call::Nested(c) => g.scopes[c.index()]
                                .outputs
                                .iter()
                                .map(|&o| shape_of(o))
                                .collect(),
                            Call::Layer(_) => Vec::new(),
                        })
                        .collect();
                    SummaryRow {
                        name: scope.name.clone(),
                        class: scope.class.class_name().to_string(),
                        output_shape: shapes.next().unwrap_or_default(),
                        extra_outputs: shapes.collect(),
                        multiple: per_call.windows(2).any(|w| w[0] != w[1]),
                        is_input: false,
                        params,
                        connected_to,
                    }
                }
            }
        })
        .collect();
    let totals = c.info.totals(g);
    // Keras: a layer called twice makes a model not sequential-like.
    let shared = units.len() < calls.len();
    let sequential_like = !shared && units_are_chain(&inputs_of, g.inputs.len());
    SummaryModel {
        name: g.name.clone(),
        sequential_like,
        rows,
        total_params: totals.params,
        trainable_params: totals.trainable,
        non_trainable_params: totals.non_trainable,
        trainable_bytes: totals.trainable_bytes,
        non_trainable_bytes: totals.non_trainable_bytes,
    }
}

/// The summary of a model without nested models or shared layers: one row per layer, in
/// Keras's order of the layer graph (the common case, kept linear for very large graphs).
fn flat_summary_model(c: &Compiled) -> SummaryModel {
    let g: &Graph = &c.graph;
    let rows: Vec<SummaryRow> = c
        .info
        .keras_order
        .iter()
        .map(|&id| {
            let node = g.node(id);
            let info = &c.info.layers[id.index()];
            let shape = std::iter::once(None)
                .chain(info.shape.iter().flatten().map(|&d| Some(d.max(0) as u64)))
                .collect();
            SummaryRow {
                name: node.name.clone(),
                class: node.op.class_name().to_string(),
                output_shape: shape,
                extra_outputs: Vec::new(),
                multiple: false,
                is_input: matches!(node.op, crate::ir::Op::Input(_)),
                params: info.params(),
                connected_to: node
                    .inputs
                    .iter()
                    .map(|&i| format!("{}[0][0]", g.node(i).name))
                    .collect(),
            }
        })
        .collect();
    let totals = c.info.totals(g);
    SummaryModel {
        name: g.name.clone(),
        sequential_like: is_chain(g, &c.info.keras_order),
        rows,
        total_params: totals.params,
        trainable_params: totals.trainable,
        non_trainable_params: totals.non_trainable,
        trainable_bytes: totals.trainable_bytes,
        non_trainable_bytes: totals.non_trainable_bytes,
    }
}

/// [`is_chain`] over the summary's units (nested models as one).
fn units_are_chain(inputs_of: &[Vec<usize>], model_inputs: usize) -> bool {
    let mut consumers = vec![0usize; inputs_of.len()];
    for inputs in inputs_of {
        for &i in inputs {
            consumers[i] += 1;
        }
    }
    model_inputs == 1 && inputs_of.iter().all(|i| i.len() <= 1) && consumers.iter().all(|&n| n <= 1)
}

/// Keras prints pure chains (one input, every layer feeding at most one other) in 3 columns.
fn is_chain(g: &Graph, kept: &[crate::ir::NodeId]) -> bool {
    let consumers = g.consumers();
    let mut is_kept = vec![false; g.nodes.len()];
    for &id in kept {
        is_kept[id.index()] = true;
    }
    g.inputs.len() == 1
        && kept.iter().all(|&id| g.node(id).inputs.len() <= 1)
        && kept.iter().all(|&id| {
            consumers[id.index()]
                .iter()
                .filter(|c| is_kept[c.index()])
                .count()
                <= 1
        })
}

/// What `unetc check` prints on standard output for a spec without errors: the Keras summary in
/// `style`, then [`extras_text`]. Empty when the spec has errors.
pub fn check_text(
    c: &Compiled,
    style: summary::SummaryStyle,
    line_length: Option<usize>,
) -> String {
    if c.has_errors() {
        return String::new();
    }
    let mut out = summary::render(&summary_model(c), style, line_length);
    out.push_str(&extras_text(c));
    out
}

/// unetc's own lines after the Keras table: compute and memory at batch 1.
pub fn extras_text(c: &Compiled) -> String {
    let t = c.info.totals(&c.graph);
    // The planner needs a complete schedule, which a spec with errors may not have.
    let arena = if c.has_errors() {
        0
    } else {
        crate::exec::plan::plan(&c.graph, &c.info).map_or(0, |p| p.arena_bytes(1))
    };
    let mut text = format!(
        "MACs per image: {} ({})\nFLOPs per image: {} ({})\nActivation memory (batch 1, f32): {} for all layer outputs; {} live at most; {} planned arena\n",
        thousands(t.macs),
        si(t.macs as f64, ""),
        thousands(t.macs.saturating_mul(2)),
        si(t.macs.saturating_mul(2) as f64, ""),
        bytes(t.activation_bytes),
        bytes(t.peak_activation_bytes),
        bytes(arena),
    );
    if arena > 0 && arena < t.peak_activation_bytes {
        // "Live at most" counts every layer output as its own tensor; the plan does not build
        // some of them (README, "What `check` prints").
        text.push_str(
            "(less than live at most: the plan does not build every output; batch norm and \
             activations run inside the convolution before them, crops and dropout are views of \
             their input, concatenations are written in place or never built)\n",
        );
    }
    text
}
