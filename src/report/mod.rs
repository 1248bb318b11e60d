//! Reports over a checked model: the Keras summary (both layouts) and JSON.

pub mod diagram;
pub mod json;
pub mod plan;
pub mod sizes;
pub mod summary;

use crate::ir::{Graph, NodeId, ScopeId};
use std::collections::HashMap;
use crate::text::{bytes, si, thousands};
use crate::Compiled;
use summary::{SummaryModel, SummaryRow};

/// One row of the summary: a layer of the model itself, or a whole nested model.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Unit {
    Layer(NodeId),
    Nested(ScopeId),
}

/// The rows Keras's `model.summary()` prints, in its order. A nested model is one row (its
/// outputs, the sum of its parameters); connections into it name its output (`model[0][3]`).
pub fn summary_model(c: &Compiled) -> SummaryModel {
    let g: &Graph = &c.graph;
    let kept = &c.info.keras_order;
    let unit_of = |id: NodeId| g.top_scope(id).map_or(Unit::Layer(id), Unit::Nested);
    // Units in the order their first layer appears in Keras's order of the flat graph.
    let mut units: Vec<Unit> = Vec::new();
    let mut index: HashMap<Unit, usize> = HashMap::new();
    for &id in kept {
        let u = unit_of(id);
        if !index.contains_key(&u) {
            index.insert(u, units.len());
            units.push(u);
        }
    }
    // What a consumer outside `id`'s nested model sees: `name[0][k]`.
    let reference = |id: NodeId| -> (Unit, String) {
        match unit_of(id) {
            Unit::Layer(_) => (Unit::Layer(id), format!("{}[0][0]", g.node(id).name)),
            Unit::Nested(s) => {
                let scope = &g.scopes[s.index()];
                let k = scope.outputs.iter().position(|&o| o == id).unwrap_or(0);
                (Unit::Nested(s), format!("{}[0][{k}]", scope.name))
            }
        }
    };
    let unit_inputs = |u: Unit| -> Vec<NodeId> {
        match u {
            Unit::Layer(id) => g.node(id).inputs.clone(),
            Unit::Nested(s) => g.scopes[s.index()].inputs.clone(),
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
    let inputs_of: Vec<Vec<usize>> = units
        .iter()
        .map(|&u| {
            unit_inputs(u)
                .into_iter()
                .filter_map(|i| index.get(&reference(i).0).copied())
                .collect()
        })
        .collect();
    let outputs: Vec<usize> = g
        .outputs
        .iter()
        .filter_map(|&o| index.get(&reference(o).0).copied())
        .collect();
    let order = crate::ir::keras_order(&inputs_of, &outputs);
    let rows: Vec<SummaryRow> = order
        .iter()
        .map(|&u| {
            let unit = units[u];
            let connected_to = unit_inputs(unit)
                .into_iter()
                .map(|i| reference(i).1)
                .collect();
            match unit {
                Unit::Layer(id) => {
                    let node = g.node(id);
                    SummaryRow {
                        name: node.name.clone(),
                        class: node.op.class_name().to_string(),
                        output_shape: shape_of(id),
                        extra_outputs: Vec::new(),
                        is_input: matches!(node.op, crate::ir::Op::Input(_)),
                        params: c.info.layers[id.index()].params(),
                        connected_to,
                    }
                }
                Unit::Nested(s) => {
                    let scope = &g.scopes[s.index()];
                    let params = kept
                        .iter()
                        .filter(|&&id| g.in_scope(id, s))
                        .map(|id| c.info.layers[id.index()].params())
                        .fold(0u64, u64::saturating_add);
                    let mut shapes = scope.outputs.iter().map(|&o| shape_of(o));
                    SummaryRow {
                        name: scope.name.clone(),
                        class: scope.class.class_name().to_string(),
                        output_shape: shapes.next().unwrap_or_default(),
                        extra_outputs: shapes.collect(),
                        is_input: false,
                        params,
                        connected_to,
                    }
                }
            }
        })
        .collect();
    let totals = c.info.totals(g);
    let sequential_like = g.scopes.is_empty() && is_chain(g, kept)
        || !g.scopes.is_empty() && units_are_chain(&inputs_of, g.inputs.len());
    SummaryModel {
        name: g.name.clone(),
        sequential_like,
        rows,
        total_params: totals.params,
        trainable_params: totals.trainable,
        non_trainable_params: totals.non_trainable,
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
    model_inputs == 1
        && inputs_of.iter().all(|i| i.len() <= 1)
        && consumers.iter().all(|&n| n <= 1)
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
