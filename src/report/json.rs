//! `--format json` of `check`, `sizes`, `tiles` and `plan`. The schemas are documented in
//! README.md ("JSON output").

use crate::diag::{Severity, SourceMap};
use crate::ir::Op;
use crate::report::plan::PlanReport;
use crate::report::sizes::{self, SizePair, TilePlan};
use crate::Compiled;
use serde_json::{json, Value as Json};
use std::path::Path;

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
            let mut layer = json!({
                "name": node.name,
                "class": node.op.class_name(),
                "kind": node.op.base_name(),
                "output_shape": shape,
                "params": info.params(),
                "trainable_params": info.trainable_params,
                "non_trainable_params": info.non_trainable_params,
                "trainable": node.trainable,
                "inputs": node.inputs.iter().map(|&i| g.node(i).name.clone()).collect::<Vec<_>>(),
                "config": node.op.built_config(&node.inputs.iter().map(|&i| c.info.layers[i.index()].shape.clone().unwrap_or_default()).collect::<Vec<_>>()),
                "weights": info.weights.iter().map(|w| json!({
                    "name": g.weight_name(id, w.name),
                    "shape": w.shape,
                    "trainable": w.trainable && node.trainable,
                })).collect::<Vec<_>>(),
                "macs": info.macs,
            });
            // Only for nested models' layers and shared layers' later calls.
            if let Some(scope) = node.scope {
                layer["nested_in"] = json!(g.scopes[scope.index()].name);
            }
            if let Some(owner) = node.shares {
                layer["shares"] = json!(g.node(owner).name);
            }
            layer
        })
        .collect();
    // Call k of each nested model (0: its first call; later calls come from `shared(model)`).
    let mut calls_made = vec![0usize; g.scopes.len()];
    let nested: Vec<Json> = g
        .scopes
        .iter()
        .enumerate()
        .map(|(k, s)| {
            let owner = g.scope_owner(crate::ir::ScopeId(k as u32)).index();
            let call = calls_made[owner];
            calls_made[owner] += 1;
            let names = |ids: &[crate::ir::NodeId]| -> Vec<String> {
                ids.iter().map(|&i| g.node(i).name.clone()).collect()
            };
            json!({
                "name": s.name,
                "class": s.class.class_name(),
                "parent": s.parent.map(|p| g.scopes[p.index()].name.clone()),
                "input_layers": s.input_names,
                "inputs": names(&s.inputs),
                "outputs": names(&s.outputs),
                "call": call,
            })
        })
        .collect();
    let t = c.info.totals(g);
    let mut out = json!({
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
    });
    if !nested.is_empty() {
        out["nested_models"] = json!(nested);
    }
    out
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

/// Version of `unetc sizes --format json`; bumped on incompatible changes.
pub const SIZES_SCHEMA_VERSION: u32 = 1;
/// Version of `unetc tiles --format json`.
pub const TILES_SCHEMA_VERSION: u32 = 2;
/// Version of `unetc plan --format json`.
pub const PLAN_SCHEMA_VERSION: u32 = 1;

fn size_pair_json(p: &SizePair) -> Json {
    json!({ "input": p.input, "output": p.output })
}

/// One axis of `sizes --format json`: its closed form, every accepted size, the nearest to `near`.
fn axis_json(found: &sizes::AxisSizes, label: &str, near: Option<usize>) -> Json {
    let closed = sizes::closed_form(found).map(|cf| {
        json!({
            "min": cf.min,
            "period": cf.period,
            "residue": cf.residue,
            "output": cf.output.map(|(scale, offset)| json!({ "scale": scale, "offset": offset })),
        })
    });
    let nearest = near.map(|n| {
        let (below, above) = sizes::nearest(found, n);
        json!({
            "to": n,
            "below": below.as_ref().map(size_pair_json),
            "above": above.as_ref().map(size_pair_json),
        })
    });
    json!({
        "axis": label,
        "closed_form": closed,
        "accepted": found.accepted.iter().map(size_pair_json).collect::<Vec<_>>(),
        "nearest": nearest,
    })
}

/// `unetc sizes --format json` for a volume model: the axes `depth`, `height`, `width`, each with
/// the other two at the spec's sizes (`varied_as_cube` when none worked so and the spec's cube
/// was varied whole).
pub fn volume_sizes_json(
    path: &Path,
    text: &str,
    base: [usize; 4],
    max: usize,
    near: Option<usize>,
) -> Json {
    let axes: Vec<Json> = (0..3)
        .map(|axis| {
            let found = crate::report::volume::probe_volume_axis(path, text, base, axis, max);
            let mut j = axis_json(&found, found.axis, near);
            j["varied_as_cube"] = json!(found.other_axis_held_at.is_some());
            j
        })
        .collect();
    json!({
        "schema": SIZES_SCHEMA_VERSION,
        "spec": path.display().to_string(),
        "input_shape": base,
        "max": max,
        "axes": axes,
        "skip_crops": [],
    })
}

/// `memory_per_tile` of `tiles --format json`.
fn memory_json(arena_bytes: u64, weight_bytes: u64) -> Json {
    json!({
        "batch": 1,
        "element_bytes": 4,
        "arena_bytes": arena_bytes,
        "weight_bytes": weight_bytes,
        "total_bytes": arena_bytes.saturating_add(weight_bytes),
    })
}

/// `unetc tiles --format json` for a volume of `volume` (depth, height, width); every per-axis
/// number is `{"depth", "height", "width"}`.
pub fn volume_tiles_json(
    path: &Path,
    volume: [usize; 3],
    budget: u64,
    p: &crate::report::volume::VolumePlan,
) -> Json {
    use crate::report::sizes::Stitch;
    let dhw = |v: [usize; 3]| json!({ "depth": v[0], "height": v[1], "width": v[2] });
    let mode = match p.stitch {
        Stitch::Whole => "whole",
        Stitch::OverlapTile => "overlap-tile",
        Stitch::Exact => "exact",
        Stitch::Blend(_) => "blend",
    };
    let t = p.tiles();
    json!({
        "schema": TILES_SCHEMA_VERSION,
        "spec": path.display().to_string(),
        "volume": dhw(volume),
        "memory_budget_bytes": budget,
        "mode": mode,
        "exact": !matches!(p.stitch, Stitch::Blend(_)),
        "padded": dhw(p.padded),
        "tile": { "input": dhw(p.tile_in), "output": dhw(p.tile_out) },
        "halo": dhw(p.halo),
        "reach": p.reach.map(dhw),
        "receptive_field": dhw(p.receptive_field),
        "overlap": dhw(p.overlap()),
        "tiles": { "depth": t[0], "height": t[1], "width": t[2], "total": t[0] * t[1] * t[2] },
        "memory_per_tile": memory_json(p.arena_bytes, p.weight_bytes),
    })
}

/// `unetc sizes --format json`: the same probes and closed forms as the text, every accepted size
/// listed. `c` is the spec compiled at its own input shape `base` (for its skip crops).
pub fn sizes_json(
    path: &Path,
    text: &str,
    c: &Compiled,
    base: [usize; 3],
    max: usize,
    near: Option<usize>,
) -> Json {
    let square = base[0] == base[1];
    // A square input is varied as a square, so one axis answers for both.
    let axes: &[usize] = if square { &[0] } else { &[0, 1] };
    let axes: Vec<Json> = axes
        .iter()
        .map(|&axis| {
            let found = sizes::probe_axis(path, text, base, axis, max);
            let label = if square {
                "height_and_width"
            } else {
                found.axis
            };
            let mut j = axis_json(&found, label, near);
            j["other_axis_held_at"] = json!(found.other_axis_held_at);
            j
        })
        .collect();
    let skip_crops: Vec<Json> = c
        .info
        .keras_order
        .iter()
        .filter_map(|&id| {
            let node = c.graph.node(id);
            // Only crops are listed: the skip crops a valid-padding U-Net needs.
            let Op::Cropping2D(op) = &node.op else {
                return None;
            };
            Some(json!({ "layer": node.name, "cropping": op.cropping }))
        })
        .collect();
    json!({
        "schema": SIZES_SCHEMA_VERSION,
        "spec": path.display().to_string(),
        "input_shape": base,
        "max": max,
        "axes": axes,
        "skip_crops": skip_crops,
    })
}

/// `unetc tiles --format json`: the numbers of the text, for an image of `image` (height, width).
pub fn tiles_json(path: &Path, image: (usize, usize), budget: u64, p: &TilePlan) -> Json {
    use crate::report::sizes::Stitch;
    let wh = |(h, w): (usize, usize)| json!({ "width": w, "height": h });
    let (mode, weights) = match p.stitch {
        Stitch::Whole => ("whole", None),
        Stitch::OverlapTile => ("overlap-tile", None),
        Stitch::Exact => ("exact", None),
        Stitch::Blend(w) => ("blend", Some(w.name())),
    };
    let (rows, cols) = p.tiles();
    json!({
        "schema": TILES_SCHEMA_VERSION,
        "spec": path.display().to_string(),
        "image": { "width": image.1, "height": image.0 },
        "memory_budget_bytes": budget,
        "mode": mode,
        "exact": !matches!(p.stitch, Stitch::Blend(_)),
        "blend_weights": weights,
        "padded": wh(p.padded),
        "tile": { "input": wh(p.tile_in), "output": wh(p.tile_out) },
        "halo": p.halo,
        "reach": p.reach,
        "not_tileable_exactly": p.non_local.as_ref().map(|n| json!({ "layer": n.layer, "class": n.class })),
        "receptive_field": p.receptive_field,
        "overlap": p.overlap(),
        "tiles": { "columns": cols, "rows": rows, "total": rows * cols },
        "memory_per_tile": memory_json(p.arena_bytes, p.weight_bytes),
    })
}

/// `unetc plan --format json`: [`PlanReport`] with the schema, the spec and the model's name.
pub fn plan_json(path: &Path, c: &Compiled, report: &PlanReport) -> Json {
    Json::Object(plan_object(serde_json::to_value(report), path, c))
}

/// `unetc plan --train --format json`: the training step's memory plan (sizes in f32 values)
/// and the whole step's estimate in bytes, with the same header.
pub fn train_plan_json(path: &Path, c: &Compiled, plan: &crate::train::memory::MemoryPlan) -> Json {
    let mut object = plan_object(serde_json::to_value(plan), path, c);
    object.insert("total_bytes".into(), json!(plan.total_bytes()));
    Json::Object(object)
}

/// A plan's fields with the schema, the spec and the model's name.
fn plan_object(
    value: serde_json::Result<Json>,
    path: &Path,
    c: &Compiled,
) -> serde_json::Map<String, Json> {
    let mut object = match value {
        Ok(Json::Object(map)) => map,
        // A derived Serialize of a struct is always an object.
        Ok(_) | Err(_) => serde_json::Map::new(),
    };
    object.insert("schema".into(), json!(PLAN_SCHEMA_VERSION));
    object.insert("spec".into(), json!(path.display().to_string()));
    object.insert("model".into(), json!(c.graph.name));
    object
}
