//! `unetc plan`: what each layer costs at run time — a kernel, a copy, or nothing (a view, a
//! fused layer, a concatenation never built) — and where its value lives in the arena.

use crate::exec::plan::{Plan, Storage, Window, Work};
use crate::ir::{NodeId, Op};
use crate::report::bytes;
use crate::Compiled;
use std::fmt::Write;

/// The plan as a table, one row per scheduled layer, then the arena.
pub fn plan_text(c: &Compiled, plan: &Plan, element_bytes: u64) -> String {
    let g = &c.graph;
    let name = |id: NodeId| g.node(id).name.as_str();
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
    let where_ = |w: &Window| -> String {
        let b = &plan.buffers[w.buffer];
        let mut s = format!(
            "buffer {} @ {}",
            w.buffer,
            bytes(b.offset as u64 * element_bytes)
        );
        if !(w.offset == 0 && w.is_dense() && w.len() == b.len) {
            s.push_str(" (window)");
        }
        s
    };
    let mut rows: Vec<[String; 3]> = Vec::new();
    let (mut kernels, mut free) = (0, 0);
    for step in &plan.steps {
        let id = step.node;
        let node = g.node(id);
        let fused = &plan.fused[id.index()];
        let storage = plan.storage[id.index()].as_ref();
        let work = match (&step.work, &node.op) {
            (Work::Kernel, Op::Input(_)) => "upload".to_string(),
            (Work::Kernel, _) => {
                let mut s = "kernel".to_string();
                if let Some(bn) = fused.batch_norm {
                    let _ = write!(s, " + folded {}", name(bn));
                }
                if let Some(act) = &fused.activation {
                    let _ = write!(s, " + {act}");
                }
                s
            }
            (Work::Nothing, Op::Concatenate(_)) => format!(
                "nothing: never built; its readers read {}",
                node.inputs
                    .iter()
                    .map(|&i| name(i))
                    .collect::<Vec<_>>()
                    .join(" + ")
            ),
            (Work::Nothing, Op::Cropping2D(_)) => {
                format!("nothing: a window of {}", name(node.inputs[0]))
            }
            (Work::Nothing, Op::Dropout(_)) => format!("nothing: is {}", name(node.inputs[0])),
            (Work::Nothing, _) => match absorbed_by[id.index()] {
                Some(conv) => format!("nothing: fused into {}", name(conv)),
                None => "nothing".to_string(),
            },
            (Work::Concat(copies), _) => {
                let in_place = node.inputs.len() - copies.len();
                format!(
                    "copy {} part(s); {in_place} written in place by their producers",
                    copies.len()
                )
            }
        };
        if matches!(step.work, Work::Nothing) {
            free += 1;
        } else {
            kernels += 1;
        }
        let place = match storage {
            Some(Storage::Window(w)) => where_(w),
            Some(Storage::Parts(_)) | None => "-".to_string(),
        };
        rows.push([node.name.clone(), work, place]);
    }
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
        "\n{kernels} steps run work, {free} layers cost nothing; {} buffers in one arena of {} per image ({} elements of {element_bytes} bytes); the most alive at once is {}",
        plan.buffers.len(),
        bytes(plan.arena_len as u64 * element_bytes),
        plan.arena_len,
        bytes(plan.live_minimum as u64 * element_bytes),
    );
    out
}
