//! The execution plan: a schedule (inputs before consumers), each tensor's lifetime, and
//! where each tensor lives in one activation arena. Tensors are placed largest first at the
//! lowest offset that no tensor alive at the same time occupies, which keeps the arena close
//! to the live-set minimum (the most bytes alive at any one step).

use crate::infer::Inferred;
use crate::ir::{Graph, NodeId};
use std::ops::Range;

#[derive(Debug, Clone)]
pub struct Step {
    pub node: NodeId,
    /// Where this layer's inputs are in the arena (per batch item: multiply by the batch).
    pub inputs: Vec<Range<usize>>,
    pub output: Range<usize>,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// Arena size in f32 elements per batch item.
    pub arena_len: usize,
    /// Where each model output is, in output order.
    pub outputs: Vec<Range<usize>>,
    /// The most elements alive at one step (the lower bound for any arena).
    pub live_minimum: usize,
}

impl Plan {
    /// Arena size in bytes for a batch (f32).
    pub fn arena_bytes(&self, batch: usize) -> u64 {
        (self.arena_len as u64)
            .saturating_mul(4)
            .saturating_mul(batch as u64)
    }
}

/// Plans the kept layers of a checked graph. `None` if a shape is unknown (the spec has errors).
pub fn plan(graph: &Graph, info: &Inferred) -> Option<Plan> {
    let order = &info.schedule;
    let n = order.len();
    let mut position = vec![usize::MAX; graph.nodes.len()];
    for (i, &id) in order.iter().enumerate() {
        position[id.index()] = i;
    }
    let sizes: Vec<usize> = order
        .iter()
        .map(|&id| {
            info.layers[id.index()]
                .shape
                .as_ref()
                .map(|s| s.iter().map(|&d| d.max(0) as usize).product())
        })
        .collect::<Option<_>>()?;
    // Each tensor lives from its producer's step to its last reader's (outputs: to the end).
    let mut last_use: Vec<usize> = (0..n).collect();
    for (i, &id) in order.iter().enumerate() {
        for &input in &graph.node(id).inputs {
            let p = *position.get(input.index())?;
            if p >= n {
                return None;
            }
            last_use[p] = last_use[p].max(i);
        }
    }
    for &out in &graph.outputs {
        let p = *position.get(out.index())?;
        // An output outside the schedule (a graph with errors): nothing to plan.
        if p >= n {
            return None;
        }
        last_use[p] = n.saturating_sub(1);
    }
    let offsets = place(&sizes, &last_use);
    let range = |i: usize| offsets[i]..offsets[i] + sizes[i];
    let steps = order
        .iter()
        .enumerate()
        .map(|(i, &id)| Step {
            node: id,
            inputs: graph
                .node(id)
                .inputs
                .iter()
                .map(|&p| range(position[p.index()]))
                .collect(),
            output: range(i),
        })
        .collect();
    let arena_len = (0..n).map(|i| offsets[i] + sizes[i]).max().unwrap_or(0);
    let mut live = vec![0usize; n + 1];
    for i in 0..n {
        live[i] = live[i].wrapping_add(sizes[i]);
        live[last_use[i] + 1] = live[last_use[i] + 1].wrapping_sub(sizes[i]);
    }
    let (mut running, mut live_minimum) = (0usize, 0usize);
    for l in live.iter().take(n) {
        running = running.wrapping_add(*l);
        live_minimum = live_minimum.max(running);
    }
    let outputs = graph
        .outputs
        .iter()
        .map(|&o| range(position[o.index()]))
        .collect();
    Some(Plan {
        steps,
        arena_len,
        outputs,
        live_minimum,
    })
}

/// Greedy by size: each tensor (largest first) goes to the lowest offset where it overlaps no
/// already placed tensor whose lifetime `[birth, last_use]` intersects its own.
fn place(sizes: &[usize], last_use: &[usize]) -> Vec<usize> {
    // Two orders, keep the smaller arena: largest first, and longest-lived first.
    let mut by_size: Vec<usize> = (0..sizes.len()).collect();
    by_size.sort_by_key(|&i| (std::cmp::Reverse(sizes[i]), i));
    let mut by_span: Vec<usize> = (0..sizes.len()).collect();
    by_span.sort_by_key(|&i| {
        (
            std::cmp::Reverse(last_use[i] - i),
            std::cmp::Reverse(sizes[i]),
            i,
        )
    });
    let a = place_in_order(sizes, last_use, &by_size);
    let b = place_in_order(sizes, last_use, &by_span);
    let extent = |o: &[usize]| (0..sizes.len()).map(|i| o[i] + sizes[i]).max().unwrap_or(0);
    if extent(&b) < extent(&a) {
        b
    } else {
        a
    }
}

fn place_in_order(sizes: &[usize], last_use: &[usize], by_size: &[usize]) -> Vec<usize> {
    let mut offsets = vec![0usize; sizes.len()];
    let mut placed: Vec<usize> = Vec::new();
    for &t in by_size {
        let overlaps_in_time = |o: usize| o <= last_use[t] && t <= last_use[o];
        let mut busy: Vec<(usize, usize)> = placed
            .iter()
            .filter(|&&o| overlaps_in_time(o))
            .map(|&o| (offsets[o], offsets[o] + sizes[o]))
            .collect();
        busy.sort_unstable();
        let mut offset = 0usize;
        for (start, end) in busy {
            if start >= offset + sizes[t] {
                break;
            }
            offset = offset.max(end);
        }
        offsets[t] = offset;
        placed.push(t);
    }
    offsets
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_needs_two_slots() {
        // a -> b -> c -> d, sizes 4, 3, 4, 2: at most two tensors are alive at once.
        let sizes = [4, 3, 4, 2];
        let last_use = [1, 2, 3, 3];
        let offsets = place(&sizes, &last_use);
        let arena = (0..4).map(|i| offsets[i] + sizes[i]).max().unwrap();
        assert_eq!(arena, 7);
        // Tensors alive together never overlap.
        for a in 0..4 {
            for b in 0..4 {
                let together = a != b && a <= last_use[b] && b <= last_use[a];
                let disjoint =
                    offsets[a] + sizes[a] <= offsets[b] || offsets[b] + sizes[b] <= offsets[a];
                assert!(!together || disjoint, "{a} and {b}");
            }
        }
    }
}
