//! `unetc check --format json`. The schema is documented in README.md ("JSON output").

use crate::diag::{Severity, SourceMap};
use crate::Compiled;
use serde_json::{json, Value as Json};

/// Version of the JSON layout; bumped on incompatible changes.
pub const SCHEMA_VERSION: u32 = 1;

pub fn check_json(c: &Compiled) -> Json {
    let g = &c.graph;
    let layers: Vec<Json> = c
        .info
        .keras_order
        .iter()
        .map(|&id| {
            let node = g.node(id);
            let info = &c.info.layers[id.index()];
            let shape: Option<Vec<Json>> = info.shape.as_ref().map(|s| {
                std::iter::once(Json::Null)
                    .chain(s.iter().map(|&d| json!(d)))
                    .collect()
            });
            json!({
                "name": node.name,
                "class": node.op.class_name(),
                "kind": node.op.base_name(),
                "output_shape": shape,
                "params": info.params(),
                "trainable_params": info.trainable_params,
                "non_trainable_params": info.non_trainable_params,
                "trainable": node.trainable,
                "inputs": node.inputs.iter().map(|&i| g.node(i).name.clone()).collect::<Vec<_>>(),
                "config": node.op.config(),
                "weights": info.weights.iter().map(|w| json!({
                    "name": format!("{}/{}", node.name, w.name),
                    "shape": w.shape,
                    "trainable": w.trainable && node.trainable,
                })).collect::<Vec<_>>(),
                "macs": info.macs,
            })
        })
        .collect();
    let t = c.info.totals(g);
    json!({
        "schema": SCHEMA_VERSION,
        "model": g.name,
        "inputs": g.inputs.iter().map(|&i| g.node(i).name.clone()).collect::<Vec<_>>(),
        "outputs": g.outputs.iter().map(|&i| g.node(i).name.clone()).collect::<Vec<_>>(),
        "layers": layers,
        "totals": {
            "params": t.params,
            "trainable_params": t.trainable,
            "non_trainable_params": t.non_trainable,
            "macs": t.macs,
            "flops": t.macs.saturating_mul(2),
            "activation_bytes": t.activation_bytes,
            "peak_activation_bytes": t.peak_activation_bytes,
            // The planner needs a complete schedule, which a spec with errors may not have.
            "planned_arena_bytes": if c.has_errors() {
                None
            } else {
                crate::exec::plan::plan(g, &c.info).map(|p| p.arena_bytes(1))
            },
        },
        "diagnostics": diagnostics_json(&c.sources, c),
    })
}

fn diagnostics_json(sources: &SourceMap, c: &Compiled) -> Vec<Json> {
    c.diags
        .iter()
        .map(|d| {
            let location = d.primary.as_ref().map(|(span, label)| {
                let (line, column) = sources.line_col(*span);
                json!({ "file": sources.path(span.file).display().to_string(), "line": line, "column": column, "label": label })
            });
            json!({
                "severity": match d.severity { Severity::Error => "error", Severity::Warning => "warning" },
                "code": d.code,
                "message": d.message,
                "location": location,
                "help": d.help,
                "repeats": d.repeats,
            })
        })
        .collect()
}
