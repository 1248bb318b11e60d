//! Reports over a checked model: the Keras summary (both layouts) and JSON.

pub mod diagram;
pub mod json;
pub mod plan;
pub mod sizes;
pub mod summary;

/// Python's repr of a shape with the batch dimension: `(None, 570, 570, 64)`.
pub fn shape_text(dims: &[i64]) -> String {
    let shape: Vec<Option<u64>> = std::iter::once(None)
        .chain(dims.iter().map(|&d| Some(d.max(0) as u64)))
        .collect();
    summary::shape_repr(&shape, false)
}

use crate::ir::Graph;
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
    format!(
        "MACs per image: {} ({})\nFLOPs per image: {} ({})\nActivation memory (batch 1, f32): {} for all layer outputs; {} live at most; {} planned arena\n",
        thousands(t.macs),
        si(t.macs as f64, ""),
        thousands(t.macs.saturating_mul(2)),
        si(t.macs.saturating_mul(2) as f64, ""),
        bytes(t.activation_bytes),
        bytes(t.peak_activation_bytes),
        bytes(arena),
    )
}

pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn si(x: f64, unit: &str) -> String {
    let (v, p) = if x >= 1e12 {
        (x / 1e12, "T")
    } else if x >= 1e9 {
        (x / 1e9, "G")
    } else if x >= 1e6 {
        (x / 1e6, "M")
    } else if x >= 1e3 {
        (x / 1e3, "k")
    } else {
        (x, "")
    };
    format!("{v:.1} {p}{unit}").trim_end().to_string()
}

pub fn bytes(b: u64) -> String {
    let x = b as f64;
    if x >= (1u64 << 30) as f64 {
        format!("{:.2} GiB", x / (1u64 << 30) as f64)
    } else if x >= (1u64 << 20) as f64 {
        format!("{:.1} MiB", x / (1u64 << 20) as f64)
    } else if x >= 1024.0 {
        format!("{:.1} KiB", x / 1024.0)
    } else {
        format!("{b} B")
    }
}
