//! What a training step holds between layers. A forward value stays until the backward pass
//! when some layer's backward reads it (its own, or a reader's: [`layers::backward_reads`]) or
//! the loss does; every other value is freed as soon as the forward pass has no more readers
//! for it, and the backward pass frees each layer's values once its backward is done. The
//! trainer frees by [`Liveness`]; `unetc plan --train` prints [`MemoryPlan`].

use super::layers;
use crate::ir::{NodeId, Op};
use crate::Compiled;
use serde::Serialize;

/// Who needs a forward value after the forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader {
    /// This layer's backward reads it.
    Backward(NodeId),
    /// The loss reads it (the output, or the logits under the output's activation).
    Loss,
}

/// Which values a training step keeps for backward, which it rebuilds there, and when the
/// others are freed; the same for every batch size.
#[derive(Debug, Clone)]
pub struct Liveness {
    /// Per schedule position: the values the forward pass frees once that layer is done.
    pub free_after: Vec<Vec<NodeId>>,
    /// The same in inference mode (validation, `predict`): every value but the output goes
    /// after its last reader.
    pub free_after_inference: Vec<Vec<NodeId>>,
    /// Per node index: who reads its value after the forward pass (empty: freed early).
    pub readers: Vec<Vec<Reader>>,
    /// Per node index: freed in the forward pass and rebuilt from its (kept) inputs for each
    /// reader's backward ([`layers::recomputable`]).
    pub recomputed: Vec<bool>,
}

impl Liveness {
    pub fn new(c: &Compiled, output: NodeId) -> Liveness {
        let schedule = &c.info.schedule;
        let count = c.graph.ids().map(|id| id.index() + 1).max().unwrap_or(0);
        let mut readers: Vec<Vec<Reader>> = vec![Vec::new(); count];
        let mut last_forward_read: Vec<Option<usize>> = vec![None; count];
        for (at, &id) in schedule.iter().enumerate() {
            let node = c.graph.node(id);
            let reads = layers::backward_reads(&node.op);
            // An activity regularizer's gradient is taken from the layer's output.
            if reads.output || node.regularizers.activity.is_some() {
                readers[id.index()].push(Reader::Backward(id));
            }
            for input in &node.inputs {
                last_forward_read[input.index()] = Some(at);
                if reads.inputs && !readers[input.index()].contains(&Reader::Backward(id)) {
                    readers[input.index()].push(Reader::Backward(id));
                }
            }
        }
        readers[output.index()].push(Reader::Loss);
        // The loss takes an activation layer's logits from its input.
        let out_op = &c.graph.node(output).op;
        if let Some((_, layers::PreActivation::Input)) = layers::output_activation(out_op) {
            for input in &c.graph.node(output).inputs {
                readers[input.index()].push(Reader::Loss);
            }
        }
        // A copy whose inputs are kept anyway is rebuilt in backward rather than kept (schedule
        // order: an input's own choice is made first).
        let mut recomputed = vec![false; count];
        for &id in schedule {
            let node = c.graph.node(id);
            let kept = |r: &[Reader]| !r.is_empty();
            recomputed[id.index()] = layers::recomputable(&node.op)
                && !node.inputs.is_empty()
                && readers[id.index()]
                    .iter()
                    .all(|r| matches!(r, Reader::Backward(by) if *by != id))
                && kept(&readers[id.index()])
                && node
                    .inputs
                    .iter()
                    .all(|i| kept(&readers[i.index()]) && !recomputed[i.index()]);
        }
        let mut free_after_inference = vec![Vec::new(); schedule.len()];
        for (at, &id) in schedule.iter().enumerate() {
            if id != output {
                let last = last_forward_read[id.index()].unwrap_or(at).max(at);
                free_after_inference[last].push(id);
            }
        }
        let mut free_after = vec![Vec::new(); schedule.len()];
        for (at, &id) in schedule.iter().enumerate() {
            if readers[id.index()].is_empty() || recomputed[id.index()] {
                // Freed after its last reader in the forward pass (or at once if none).
                let last = last_forward_read[id.index()].unwrap_or(at).max(at);
                free_after[last].push(id);
            }
        }
        Liveness {
            free_after,
            free_after_inference,
            readers,
            recomputed,
        }
    }

    /// The inputs of `id` that its backward reads and that must be rebuilt first.
    pub fn rebuilt_for(&self, c: &Compiled, id: NodeId) -> Vec<NodeId> {
        let mut out: Vec<NodeId> = Vec::new();
        for &input in &c.graph.node(id).inputs {
            if self.recomputed[input.index()]
                && self.readers[input.index()].contains(&Reader::Backward(id))
                && !out.contains(&input)
            {
                out.push(input);
            }
        }
        out
    }
}

/// One layer's share of a training step's memory.
#[derive(Debug, Clone, Serialize)]
pub struct LayerMemory {
    pub name: String,
    pub class: &'static str,
    /// The layer's output values (the whole batch).
    pub output_elements: usize,
    /// Who reads the output after the forward pass ("loss" or layer names); empty: the forward
    /// pass frees it.
    pub kept_for: Vec<String>,
    /// Freed in the forward pass all the same, and rebuilt from its inputs for each of
    /// `kept_for` in the backward pass.
    pub recomputed: bool,
    /// Values the layer keeps for its own backward besides its output (pre-activation, dropout
    /// mask, batch statistics).
    pub saved_elements: usize,
}

/// A training step's memory at one batch size, in f32 values.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryPlan {
    pub batch: usize,
    pub layers: Vec<LayerMemory>,
    /// Values held at the end of the forward pass: kept outputs and saved extras.
    pub kept_elements: usize,
    /// Every layer's output, as a step that freed nothing would hold at that point.
    pub all_outputs_elements: usize,
    /// The most values held between layers at any point of the step (outputs, saved extras,
    /// gradients of the layers' values; a layer's own scratch space is not counted).
    pub peak_elements: usize,
    /// Weights (every slot), their gradients and the optimizer's state.
    pub weight_elements: usize,
    pub trainable_elements: usize,
    pub optimizer_slots: usize,
}

impl MemoryPlan {
    /// The step's peak in bytes: the values between layers at their peak, the weights, a
    /// gradient per weight and the optimizer's state.
    pub fn total_bytes(&self) -> u64 {
        let values = self.peak_elements as u64
            + 2 * self.weight_elements as u64
            + self.optimizer_slots as u64 * self.trainable_elements as u64;
        values.saturating_mul(4)
    }

    /// The plan of `c` trained with `optimizer_slots` state vectors per trainable variable.
    pub fn new(c: &Compiled, batch: usize, optimizer_slots: usize) -> Result<MemoryPlan, String> {
        let [output] = c.graph.outputs[..] else {
            return Err(format!(
                "training needs a model with one output; this one has {}",
                c.graph.outputs.len()
            ));
        };
        let live = Liveness::new(c, output);
        let count = live.readers.len();
        let shape = |id: NodeId| {
            let mut s = vec![batch];
            s.extend(super::item_shape(c, id));
            s
        };
        let too_big = || format!("a batch of {batch} has more values than this machine can count");
        // Checked once here: the model's values and their sums fit, so the rest cannot overflow.
        let mut total = 0usize;
        for &id in &c.info.schedule {
            let n = shape(id)
                .iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d))
                .ok_or_else(too_big)?;
            total = total
                .checked_add(n.checked_mul(8).ok_or_else(too_big)?)
                .ok_or_else(too_big)?;
        }
        let mut out = vec![0usize; count];
        let mut saved = vec![0usize; count];
        for &id in &c.info.schedule {
            let node = c.graph.node(id);
            let out_shape = shape(id);
            let in_shapes: Vec<Vec<usize>> = node.inputs.iter().map(|&i| shape(i)).collect();
            out[id.index()] = out_shape.iter().product();
            saved[id.index()] = layers::saved_elements(&node.op, &in_shapes, &out_shape);
        }
        let (forward_peak, kept, end_of_forward) = simulate_forward(c, &live, &out, &saved);
        let backward_peak = simulate_backward(c, &live, output, &out, end_of_forward);
        let layers = c
            .info
            .schedule
            .iter()
            .map(|&id| {
                let node = c.graph.node(id);
                LayerMemory {
                    name: node.name.clone(),
                    class: node.op.class_name(),
                    output_elements: out[id.index()],
                    kept_for: live.readers[id.index()]
                        .iter()
                        .map(|r| match r {
                            Reader::Loss => "loss".to_string(),
                            Reader::Backward(by) => c.graph.node(*by).name.clone(),
                        })
                        .collect(),
                    saved_elements: saved[id.index()],
                    recomputed: live.recomputed[id.index()],
                }
            })
            .collect();
        let (mut weight_elements, mut trainable_elements) = (0, 0);
        for &id in &c.info.schedule {
            let node = c.graph.node(id);
            if node.shares.is_some() {
                continue;
            }
            for w in &c.info.layers[id.index()].weights {
                let n = w
                    .shape
                    .iter()
                    .map(|&d| d.max(0) as usize)
                    .product::<usize>();
                weight_elements += n;
                if node.trainable && w.trainable {
                    trainable_elements += n;
                }
            }
        }
        Ok(MemoryPlan {
            batch,
            layers,
            kept_elements: kept,
            all_outputs_elements: out.iter().sum(),
            peak_elements: forward_peak.max(backward_peak),
            weight_elements,
            trainable_elements,
            optimizer_slots,
        })
    }
}

/// The forward pass: (peak, values kept at its end, per node the value still held).
fn simulate_forward(
    c: &Compiled,
    live: &Liveness,
    out: &[usize],
    saved: &[usize],
) -> (usize, usize, Vec<usize>) {
    let mut held = vec![0usize; out.len()];
    let (mut now, mut peak) = (0usize, 0usize);
    for (at, &id) in c.info.schedule.iter().enumerate() {
        held[id.index()] = out[id.index()] + saved[id.index()];
        now += held[id.index()];
        peak = peak.max(now);
        for freed in &live.free_after[at] {
            now -= out[freed.index()];
            held[freed.index()] -= out[freed.index()];
        }
    }
    (peak, now, held)
}

/// The backward pass's peak, starting from what the forward pass left (`held`), as
/// [`super::Trainer::gradients`] runs it: the loss's gradient held throughout, each layer's
/// incoming gradient, its input gradients, then its own values freed.
fn simulate_backward(
    c: &Compiled,
    live: &Liveness,
    output: NodeId,
    out: &[usize],
    mut held: Vec<usize>,
) -> usize {
    let dout = out[output.index()];
    let mut pending: Vec<Option<usize>> = vec![None; out.len()];
    let mut peak = 0usize;
    for &id in c.info.schedule.iter().rev() {
        let node = c.graph.node(id);
        if matches!(node.op, Op::Input(_)) {
            continue;
        }
        let incoming = if id == output {
            Some(dout)
        } else {
            pending[id.index()].take()
        };
        if let Some(dy) = incoming {
            let values: usize = held.iter().sum();
            let grads: usize = pending.iter().flatten().sum();
            let dxs: usize = node.inputs.iter().map(|i| out[i.index()]).sum();
            let rebuilt: usize = live.rebuilt_for(c, id).iter().map(|i| out[i.index()]).sum();
            peak = peak.max(values + rebuilt + grads + dout + dy + dxs);
            for input in &node.inputs {
                pending[input.index()].get_or_insert(out[input.index()]);
            }
        }
        held[id.index()] = 0;
    }
    peak
}
