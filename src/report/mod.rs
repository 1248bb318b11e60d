//! Reports over a checked model: the Keras summary (both layouts) and JSON.

pub mod diagram;
pub mod json;
pub mod plan;
pub mod sizes;
pub mod summary;

use crate::ir::Graph;
use crate::text::{bytes, si, thousands};
use crate::Compiled;
use summary::{SummaryModel, SummaryRow};

/// The rows Keras's `model.summary()` prints, in its order.
pub fn summary_model(c: &Compiled) -> SummaryModel {
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
    }
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
