//! The execution plan: a schedule (inputs before consumers), each tensor's lifetime, and
//! buffer reuse: a tensor takes the smallest free buffer that fits once its producer runs,
//! and gives it back after its last consumer, so the arena stays near the live-set minimum.

use crate::infer::Inferred;
use crate::ir::{Graph, NodeId};

/// Index of a buffer in [`Plan::buffer_sizes`].
pub type BufferId = usize;

#[derive(Debug, Clone)]
pub struct Step {
    pub node: NodeId,
    /// The buffers holding this layer's inputs, in input order.
    pub inputs: Vec<BufferId>,
    pub output: BufferId,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// Size of each buffer in f32 elements per batch item.
    pub buffer_sizes: Vec<usize>,
    /// Which buffer holds each model output, in output order.
    pub outputs: Vec<BufferId>,
}

impl Plan {
    /// Arena size in bytes for a batch (f32).
    pub fn arena_bytes(&self, batch: usize) -> u64 {
        self.buffer_sizes.iter().fold(0u64, |acc, &n| {
            acc.saturating_add((n as u64).saturating_mul(4).saturating_mul(batch as u64))
        })
    }
}

/// Plans the kept layers of a checked graph. `None` if a shape is unknown (the spec has errors).
pub fn plan(graph: &Graph, info: &Inferred) -> Option<Plan> {
    let order = &info.schedule;
    let mut position = vec![usize::MAX; graph.nodes.len()];
    for (i, &id) in order.iter().enumerate() {
        position[id.index()] = i;
    }
    let elements: Vec<usize> = order
        .iter()
        .map(|&id| {
            info.layers[id.index()]
                .shape
                .as_ref()
                .map(|s| s.iter().map(|&d| d as usize).product())
        })
        .collect::<Option<_>>()?;
    // Last step reading each tensor; model outputs live to the end.
    let mut last_use: Vec<usize> = (0..order.len()).collect();
    for (i, &id) in order.iter().enumerate() {
        for &input in &graph.node(id).inputs {
            let p = position[input.index()];
            last_use[p] = last_use[p].max(i);
        }
    }
    for &out in &graph.outputs {
        last_use[position[out.index()]] = usize::MAX;
    }

    let mut buffer_sizes: Vec<usize> = Vec::new();
    let mut free: Vec<BufferId> = Vec::new();
    let mut holder: Vec<BufferId> = vec![usize::MAX; order.len()];
    let mut steps = Vec::with_capacity(order.len());
    for (i, &id) in order.iter().enumerate() {
        let need = elements[i];
        // Best fit among free buffers; otherwise grow the largest free one, or add a buffer.
        let best = free
            .iter()
            .enumerate()
            .filter(|(_, &b)| buffer_sizes[b] >= need)
            .min_by_key(|(_, &b)| buffer_sizes[b])
            .map(|(slot, _)| slot)
            .or_else(|| (0..free.len()).max_by_key(|&slot| buffer_sizes[free[slot]]));
        let buffer = match best {
            Some(slot) => {
                let b = free.swap_remove(slot);
                buffer_sizes[b] = buffer_sizes[b].max(need);
                b
            }
            None => {
                buffer_sizes.push(need);
                buffer_sizes.len() - 1
            }
        };
        holder[i] = buffer;
        let inputs: Vec<BufferId> = graph
            .node(id)
            .inputs
            .iter()
            .map(|&p| holder[position[p.index()]])
            .collect();
        steps.push(Step {
            node: id,
            inputs,
            output: buffer,
        });
        // Inputs whose last reader was this step give their buffers back (after the output was
        // placed, so no layer writes where it reads).
        let mut released: Vec<usize> = graph
            .node(id)
            .inputs
            .iter()
            .map(|&p| position[p.index()])
            .collect();
        released.sort_unstable();
        released.dedup();
        for p in released {
            if last_use[p] == i {
                free.push(holder[p]);
            }
        }
        if last_use[i] == i {
            // Nobody reads it (cannot happen for kept layers, but stay safe).
            free.push(buffer);
        }
    }
    let outputs = graph
        .outputs
        .iter()
        .map(|&o| holder[position[o.index()]])
        .collect();
    Some(Plan {
        steps,
        buffer_sizes,
        outputs,
    })
}
