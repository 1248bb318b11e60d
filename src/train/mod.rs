//! `unetc train`: Keras's training step on the CPU, f32. A step is what `train_on_batch` does:
//! the forward pass in training mode (batch statistics, dropout; BatchNormalization's moving
//! averages updated), the loss as Keras reduces it, the backward pass through every layer, and
//! the optimizer's update of every trainable variable. Frozen layers (`trainable: false`) get
//! neither updates nor optimizer state, and a frozen BatchNormalization runs in inference mode,
//! as in tf.keras 2. [`cuda::CudaTrainer`] runs the same step on the GPU for the kinds it
//! covers (`unetc train --device cuda`).

pub mod activations;
pub mod augment;
pub mod checkpoint;
pub mod cuda;
pub mod data;
pub mod fit;
pub mod layers;
pub mod loss;
pub mod math;
pub mod memory;
pub mod optimizer;
pub mod profile;

use crate::exec::{bind_weights, weight_slots, Tensor};
use crate::io::Weights;
use crate::ir::{NodeId, Op};
use crate::Compiled;
use layers::{Grad, Mode, Saved};
use loss::{Loss, Prediction, Targets};
use optimizer::Optimizer;
use std::collections::HashMap;

/// A layer's output shape without the batch, as sizes.
pub(crate) fn item_shape(c: &Compiled, id: NodeId) -> Vec<usize> {
    c.info.layers[id.index()]
        .shape
        .iter()
        .flatten()
        .map(|&d| d.max(0) as usize)
        .collect()
}

/// `256, 256, 1`: sizes as a tuple's inside.
pub(crate) fn dims_text(dims: &[usize]) -> String {
    dims.iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// How to train.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    pub optimizer: Optimizer,
    pub learning_rate: f32,
    /// Keras's decoupled weight decay (AdamW's, or any optimizer's `weight_decay`).
    pub weight_decay: Option<f32>,
    pub loss: Loss,
    /// The model's output is logits (`from_logits=True`).
    pub from_logits: bool,
    pub seed: u64,
}

/// One trainable variable: where it lives and its optimizer state.
struct Variable {
    node: NodeId,
    slot: usize,
    state: Vec<Vec<f32>>,
}

/// A model being trained: its weights (every slot [`bind_weights`] gives, filled in where the
/// layer has no such variable) and the optimizer's state.
pub struct Trainer<'c> {
    c: &'c Compiled,
    config: TrainConfig,
    params: HashMap<NodeId, Vec<Vec<f32>>>,
    variables: Vec<Variable>,
    /// Updates applied so far (Keras's `optimizer.iterations`).
    pub iterations: u64,
    rng: rand::rngs::StdRng,
    output: NodeId,
    /// Which forward values the backward pass reads; the rest are freed early.
    liveness: memory::Liveness,
    /// The most f32 values held between layers in any step so far (what
    /// [`memory::MemoryPlan::peak_elements`] predicts).
    peak_held: usize,
    /// The activity regularizers' penalty of the last forward pass (Keras adds each to the
    /// loss divided by the batch size).
    activity_penalty: f64,
}

/// Why a step cannot run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("{0}")]
    Setup(String),
    #[error("layer `{layer}` ({class}): {why}")]
    Layer {
        layer: String,
        class: &'static str,
        why: String,
    },
    #[error(
        "the loss is {value} at step {step}: training diverged (try a smaller --learning-rate)"
    )]
    NotFinite { step: u64, value: f64 },
}

/// Finds saved optimizer state: (layer, variable, slot) -> values.
pub type StateLookup<'a> = dyn Fn(&str, &str, usize) -> Option<Vec<f32>> + 'a;

/// Slot `k` of the optimizer state of `layer/var` from `lookup`, `len` values long.
pub(crate) fn restored_slot(
    lookup: &StateLookup,
    layer: &str,
    var: &str,
    k: usize,
    len: usize,
) -> Result<Vec<f32>, String> {
    let values =
        lookup(layer, var, k).ok_or_else(|| format!("no optimizer state {k} for {layer}/{var}"))?;
    if values.len() != len {
        return Err(format!(
            "optimizer state {k} of {layer}/{var} has the wrong size"
        ));
    }
    Ok(values)
}

/// The gradients of one batch: per weight slot, and of the model's input.
pub struct Gradients {
    weights: HashMap<(NodeId, usize), Vec<f32>>,
    pub input: Option<Vec<f32>>,
}

/// The batch's targets: like the output, or class indices (sparse losses).
pub enum BatchTargets {
    Dense(Tensor),
    Classes {
        shape: Vec<usize>,
        classes: Vec<i64>,
    },
}

impl<'c> Trainer<'c> {
    pub fn new(
        c: &'c Compiled,
        weights: &Weights,
        config: TrainConfig,
    ) -> Result<Self, TrainError> {
        let [output] = c.graph.outputs[..] else {
            return Err(TrainError::Setup(format!(
                "training needs a model with one output; this one has {}",
                c.graph.outputs.len()
            )));
        };
        if c.graph.inputs.len() != 1 {
            return Err(TrainError::Setup(format!(
                "training needs a model with one input; this one has {}",
                c.graph.inputs.len()
            )));
        }
        // The loss's gradient at the output may be the logits': an output-space penalty
        // gradient would not add to it.
        let out_node = c.graph.node(output);
        if out_node.regularizers.activity.is_some() {
            return Err(TrainError::Setup(format!(
                "the output layer `{}` has an activity_regularizer, which unetc train applies \
                 to the other layers only; remove it from the spec to train without it",
                out_node.name
            )));
        }
        let params =
            bind_weights(&c.graph, &c.info, &c.info.schedule, weights).map_err(|problems| {
                TrainError::Setup(format!(
                    "the weights do not fit the model: {}",
                    problems.join("; ")
                ))
            })?;
        let variables = trainable_slots(c)
            .into_iter()
            .map(|(node, slot)| Variable {
                node,
                slot,
                state: vec![vec![0.0; params[&node][slot].len()]; config.optimizer.slots()],
            })
            .collect();
        Ok(Trainer {
            c,
            rng: crate::io::seeded_rng(config.seed),
            config,
            params,
            variables,
            iterations: 0,
            liveness: memory::Liveness::new(c, output),
            output,
            peak_held: 0,
            activity_penalty: 0.0,
        })
    }

    /// Every layer's output (and what its backward needs), in training or inference mode.
    #[allow(clippy::type_complexity)]
    fn forward(
        &mut self,
        x: &Tensor,
        training: bool,
    ) -> Result<(HashMap<NodeId, Tensor>, HashMap<NodeId, Saved>), TrainError> {
        let batch = x.shape[0];
        if batch > 1 {
            if let Some(why) = crate::exec::batch_one_only(&self.c.graph, &self.c.info) {
                return Err(TrainError::Setup(format!("a batch of {batch}: {why}")));
            }
        }
        let mut outputs: HashMap<NodeId, Tensor> = HashMap::new();
        let mut saved: HashMap<NodeId, Saved> = HashMap::new();
        self.activity_penalty = 0.0;
        for (at, &id) in self.c.info.schedule.iter().enumerate() {
            let node = self.c.graph.node(id);
            let out_shape = self.shape(id, batch);
            let result = {
                let inputs: Vec<&Tensor> = if matches!(node.op, Op::Input(_)) {
                    vec![x]
                } else {
                    node.inputs.iter().map(|i| &outputs[i]).collect()
                };
                let params = self.params.entry(self.c.graph.layer_owner(id)).or_default();
                let mut mode = Mode {
                    training,
                    layer_trainable: node.trainable,
                    rng: &mut self.rng,
                };
                profile::time(
                    || format!("forward {}", node.op.class_name()),
                    || layers::forward(&node.op, &inputs, &out_shape, params, &mut mode),
                )
            };
            let (out, s) = result.map_err(|e| self.layer_error(id, e.0))?;
            if let Some(r) = node.regularizers.activity {
                self.activity_penalty += r.penalty(&out.data) / batch.max(1) as f64;
            }
            outputs.insert(id, out);
            let free_now = if training {
                saved.insert(id, s);
                self.peak_held = self.peak_held.max(held(&outputs) + held_saved(&saved));
                &self.liveness.free_after[at]
            } else {
                &self.liveness.free_after_inference[at]
            };
            // Values no backward reads go as soon as the forward pass is done with them (their
            // shapes stay: backward sizes gradients by them).
            for freed in free_now {
                if let Some(t) = outputs.get_mut(freed) {
                    t.data = Vec::new();
                }
            }
        }
        Ok((outputs, saved))
    }

    /// The most f32 values held between layers in any step so far: outputs, saved values and
    /// gradients of values (what [`memory::MemoryPlan::peak_elements`] predicts).
    pub fn peak_held_elements(&self) -> usize {
        self.peak_held
    }

    /// The value of a copy layer freed in the forward pass ([`memory::Liveness::recomputed`]),
    /// rebuilt from its inputs for a reader's backward.
    fn rebuild(
        &mut self,
        id: NodeId,
        outputs: &HashMap<NodeId, Tensor>,
    ) -> Result<Tensor, TrainError> {
        let node = self.c.graph.node(id);
        let inputs: Vec<&Tensor> = node.inputs.iter().map(|i| &outputs[i]).collect();
        let batch = inputs
            .first()
            .and_then(|t| t.shape.first().copied())
            .unwrap_or(0);
        let out_shape = self.shape(id, batch);
        let mut mode = Mode {
            training: true,
            layer_trainable: node.trainable,
            rng: &mut self.rng,
        };
        let params = self.params.entry(self.c.graph.layer_owner(id)).or_default();
        layers::forward(&node.op, &inputs, &out_shape, params, &mut mode)
            .map(|(t, _)| t)
            .map_err(|e| self.layer_error(id, e.0))
    }

    /// The model's output in inference mode (Keras's `predict`: moving statistics, no dropout).
    pub fn predict(&mut self, x: &Tensor) -> Result<Tensor, TrainError> {
        let (mut outputs, _) = self.forward(x, false)?;
        Ok(outputs
            .remove(&self.output)
            .unwrap_or_else(|| Tensor::zeros(&[0])))
    }

    /// The learning rate of the next updates (a schedule sets it before each step).
    pub fn set_learning_rate(&mut self, lr: f32) {
        self.config.learning_rate = lr;
    }

    /// A fresh stream of dropout and noise draws (each epoch starts one, so that a resumed
    /// run draws what an uninterrupted one would).
    pub fn reseed(&mut self, seed: u64) {
        self.rng = crate::io::seeded_rng(seed);
    }

    /// The optimizer's state: per trainable variable, `(layer, variable, slots)`.
    pub fn optimizer_state(&self) -> Vec<(String, &'static str, &[Vec<f32>])> {
        self.variables
            .iter()
            .map(|v| {
                let node = self.c.graph.node(v.node);
                (
                    node.name.clone(),
                    weight_slots(&node.op)[v.slot],
                    v.state.as_slice(),
                )
            })
            .collect()
    }

    /// Restores optimizer state saved by [`Trainer::optimizer_state`] and the update count.
    pub fn restore_optimizer(
        &mut self,
        lookup: &StateLookup,
        iterations: u64,
    ) -> Result<(), String> {
        for v in &mut self.variables {
            let node = self.c.graph.node(v.node);
            let var = weight_slots(&node.op)[v.slot];
            for (k, slot) in v.state.iter_mut().enumerate() {
                *slot = restored_slot(lookup, &node.name, var, k, slot.len())?;
            }
        }
        self.iterations = iterations;
        Ok(())
    }

    /// The loss of a batch in inference mode, and the output (validation).
    pub fn evaluate(
        &mut self,
        x: &Tensor,
        targets: &BatchTargets,
    ) -> Result<(f64, Tensor), TrainError> {
        let (outputs, _) = self.forward(x, false)?;
        let out_node = self.c.graph.node(self.output);
        let output = &outputs[&self.output];
        // Inference keeps no pre-activations; the logits are recovered from the output (exact
        // up to f32 away from saturation): log-odds of a sigmoid, log of a softmax (the loss is
        // the same for logits shifted by a constant per pixel).
        let recovered: Option<Vec<f32>> = self.takes_logits().then(|| {
            match layers::output_activation(&out_node.op).map(|(a, _)| a) {
                Some(crate::ir::ops::ActivationFn::Sigmoid) => output
                    .data
                    .iter()
                    .map(|&p| {
                        let p = p.clamp(1e-7, 1.0 - 1e-7);
                        (p / (1.0 - p)).ln()
                    })
                    .collect(),
                _ => output.data.iter().map(|&p| p.max(1e-30).ln()).collect(),
            }
        });
        let (loss, _, _) = self.loss(output, recovered.as_deref(), targets);
        let penalty = self.weight_penalty() + self.activity_penalty;
        Ok((loss + penalty, outputs[&self.output].clone()))
    }

    /// Whether the loss takes the logits of the model's output activation (Keras's
    /// `_keras_logits`: a softmax output for the categorical crossentropies, a sigmoid for the
    /// binary ones).
    fn takes_logits(&self) -> bool {
        let squash = layers::output_activation(&self.c.graph.node(self.output).op).map(|(a, _)| a);
        squash.is_some() && squash == self.config.loss.takes_logits_of()
    }

    /// The loss of `output` against `targets`, its gradient, and whether that gradient is with
    /// respect to `logits` (the output activation's input) rather than the output.
    fn loss(
        &self,
        output: &Tensor,
        logits: Option<&[f32]>,
        targets: &BatchTargets,
    ) -> (f64, Vec<f32>, bool) {
        let c = output.shape.last().copied().unwrap_or(1);
        // Keras hands a softmax/sigmoid output's logits to the crossentropies even with
        // `from_logits` (it warns); otherwise `from_logits` means the output is the logits.
        let (pred, grad_is_logits) = match (logits, self.config.from_logits) {
            (Some(z), _) => (
                Prediction::Logits {
                    logits: z,
                    output: &output.data,
                },
                true,
            ),
            (None, true) => (
                Prediction::Logits {
                    logits: &output.data,
                    output: &output.data,
                },
                false,
            ),
            (None, false) => (Prediction::Output(&output.data), false),
        };
        let (loss, grad) = match targets {
            BatchTargets::Dense(t) => {
                loss::loss_and_grad(self.config.loss, pred, Targets::Dense(&t.data), c)
            }
            BatchTargets::Classes { classes, .. } => {
                loss::loss_and_grad(self.config.loss, pred, Targets::Classes(classes), c)
            }
        };
        (loss, grad, grad_is_logits)
    }

    fn shape(&self, id: NodeId, batch: usize) -> Vec<usize> {
        let mut s = vec![batch];
        s.extend(item_shape(self.c, id));
        s
    }

    fn layer_error(&self, id: NodeId, why: String) -> TrainError {
        let node = self.c.graph.node(id);
        TrainError::Layer {
            layer: node.name.clone(),
            class: node.op.class_name(),
            why,
        }
    }

    /// The regularizers' penalty on the current weights: tf.keras adds every regularized
    /// weight's (frozen layers' too) to the loss it minimizes and reports, in layer order.
    fn weight_penalty(&self) -> f64 {
        let mut total = 0.0f32;
        for &id in &self.c.info.keras_order {
            let node = self.c.graph.node(id);
            if node.regularizers.weights.is_empty() || node.shares.is_some() {
                continue;
            }
            for (slot, var) in weight_slots(&node.op).iter().enumerate() {
                let w = self.params.get(&id).and_then(|p| p.get(slot));
                if let (Some(r), Some(w)) = (node.regularizers.of(var), w) {
                    total += r.penalty(w) as f32;
                }
            }
        }
        f64::from(total)
    }

    /// One training step on a batch; returns the loss computed before the update.
    pub fn step(&mut self, x: &Tensor, targets: &BatchTargets) -> Result<f64, TrainError> {
        let (loss, grads) = self.gradients(x, targets)?;
        profile::time(|| "optimizer".into(), || self.apply(&grads));
        profile::report(self.iterations);
        Ok(loss)
    }

    /// The forward pass in training mode (BatchNormalization's moving averages move), the loss
    /// and the gradient of every weight slot that gets one, by `(layer name, variable)`. No
    /// update.
    pub fn gradients(
        &mut self,
        x: &Tensor,
        targets: &BatchTargets,
    ) -> Result<(f64, Gradients), TrainError> {
        let schedule = self.c.info.schedule.clone();
        let (mut outputs, mut saved) = self.forward(x, true)?;
        // The loss, from the logits where Keras takes them.
        let out_node = self.c.graph.node(self.output);
        let output = &outputs[&self.output];
        let logits = if self.takes_logits() {
            let input = out_node.inputs.first().map_or(output, |i| &outputs[i]);
            layers::logits_of(&out_node.op, input, &saved[&self.output])
        } else {
            None
        };
        let (loss, dout, grad_is_logits) =
            profile::time(|| "loss".into(), || self.loss(output, logits, targets));
        let loss = loss + self.weight_penalty() + self.activity_penalty;
        if !loss.is_finite() {
            return Err(TrainError::NotFinite {
                step: self.iterations + 1,
                value: loss,
            });
        }

        // Backward, in reverse schedule order.
        let mut grads: HashMap<NodeId, Vec<f32>> = HashMap::new();
        let mut weight_grads: HashMap<(NodeId, usize), Vec<f32>> = HashMap::new();
        for &id in schedule.iter().rev() {
            let node = self.c.graph.node(id);
            // The input's gradient stays in `grads` (gradient checks read it).
            if matches!(node.op, Op::Input(_)) {
                continue;
            }
            let grad = if id == self.output {
                if grad_is_logits {
                    Grad::Logits(dout.clone())
                } else {
                    Grad::Output(dout.clone())
                }
            } else {
                // An activity regularizer's gradient joins the one from the layers after.
                let activity = node.regularizers.activity.map(|r| {
                    let y = &outputs[&id].data;
                    let mut g = vec![0.0f32; y.len()];
                    r.add_gradient(y, &mut g);
                    let per_item = 1.0 / x.shape[0].max(1) as f32;
                    g.iter_mut().for_each(|v| *v *= per_item);
                    g
                });
                match (grads.remove(&id), activity) {
                    (Some(mut g), Some(a)) => {
                        g.iter_mut().zip(&a).for_each(|(g, a)| *g += a);
                        Grad::Output(g)
                    }
                    (Some(g), None) | (None, Some(g)) => Grad::Output(g),
                    (None, None) => {
                        free(&mut outputs, &mut saved, id);
                        continue;
                    }
                }
            };
            let dy_len = match &grad {
                Grad::Output(g) | Grad::Logits(g) => g.len(),
            };
            let rebuilt = self.liveness.rebuilt_for(self.c, id);
            for &copy in &rebuilt {
                let value = self.rebuild(copy, &outputs)?;
                outputs.insert(copy, value);
            }
            let inputs: Vec<&Tensor> = node.inputs.iter().map(|i| &outputs[i]).collect();
            let mode = Mode {
                training: true,
                layer_trainable: node.trainable,
                rng: &mut self.rng,
            };
            let owner = self.c.graph.layer_owner(id);
            let params = &self.params[&owner];
            let g = profile::time(
                || format!("backward {}", node.op.class_name()),
                || {
                    layers::backward(
                        &node.op,
                        &inputs,
                        &outputs[&id],
                        &saved[&id],
                        params,
                        grad,
                        &mode,
                    )
                },
            )
            .map_err(|e| self.layer_error(id, e.0))?;
            let dx_len: usize = g.inputs.iter().map(Vec::len).sum();
            self.peak_held = self.peak_held.max(
                held(&outputs)
                    + held_saved(&saved)
                    + grads.values().map(Vec::len).sum::<usize>()
                    + dout.len()
                    + dy_len
                    + dx_len,
            );
            // A gradient of the wrong length would add up silently short: say so instead.
            for (input, dx) in node.inputs.iter().zip(&g.inputs) {
                let want = outputs[input].shape.iter().product::<usize>();
                if dx.len() != want {
                    return Err(self.layer_error(
                        id,
                        format!(
                            "internal error: the gradient of input `{}` has {} values, not {want}",
                            self.c.graph.node(*input).name,
                            dx.len()
                        ),
                    ));
                }
            }
            free(&mut outputs, &mut saved, id);
            for copy in rebuilt {
                if let Some(t) = outputs.get_mut(&copy) {
                    t.data = Vec::new();
                }
            }
            for (input, dx) in node.inputs.iter().zip(g.inputs) {
                match grads.get_mut(input) {
                    Some(acc) => acc.iter_mut().zip(&dx).for_each(|(a, d)| *a += d),
                    None => {
                        grads.insert(*input, dx);
                    }
                }
            }
            // Every call of a shared layer adds to its one gradient.
            for (slot, dw) in g.params.into_iter().enumerate() {
                if let Some(dw) = dw {
                    match weight_grads.get_mut(&(owner, slot)) {
                        Some(acc) => acc.iter_mut().zip(&dw).for_each(|(a, d)| *a += d),
                        None => {
                            weight_grads.insert((owner, slot), dw);
                        }
                    }
                }
            }
        }

        // The regularizers' gradients, for the variables the optimizer updates.
        for v in &self.variables {
            let node = self.c.graph.node(v.node);
            let Some(r) = weight_slots(&node.op)
                .get(v.slot)
                .and_then(|var| node.regularizers.of(var))
            else {
                continue;
            };
            let w = &self.params[&v.node][v.slot];
            let g = weight_grads
                .entry((v.node, v.slot))
                .or_insert_with(|| vec![0.0; w.len()]);
            r.add_gradient(w, g);
        }
        let input_grad = self.c.graph.inputs.first().and_then(|i| grads.remove(i));
        Ok((
            loss,
            Gradients {
                weights: weight_grads,
                input: input_grad,
            },
        ))
    }

    /// One optimizer update of every trainable variable from `grads`.
    pub fn apply(&mut self, grads: &Gradients) {
        let weight_grads = &grads.weights;
        self.iterations += 1;
        let (lr, step, decay) = (
            self.config.learning_rate,
            self.iterations,
            self.config.weight_decay,
        );
        for v in &mut self.variables {
            let Some(g) = weight_grads.get(&(v.node, v.slot)) else {
                continue;
            };
            let Some(w) = self.params.get_mut(&v.node).and_then(|p| p.get_mut(v.slot)) else {
                continue;
            };
            self.config
                .optimizer
                .update(w, g, &mut v.state, lr, step, decay);
        }
    }

    /// The gradient of `(layer, variable)` in `grads`, if that variable got one.
    pub fn weight_gradient<'g>(
        &self,
        grads: &'g Gradients,
        layer: &str,
        variable: &str,
    ) -> Option<&'g [f32]> {
        let id = self
            .c
            .graph
            .ids()
            .find(|&id| self.c.graph.node(id).name == layer)?;
        let slot = weight_slots(&self.c.graph.node(id).op)
            .iter()
            .position(|v| *v == variable)?;
        grads.weights.get(&(id, slot)).map(|g| g.as_slice())
    }

    /// Replaces one variable's values (for gradient checks and tools); false if there is none
    /// of that name and size.
    pub fn set_weight(&mut self, layer: &str, variable: &str, values: &[f32]) -> bool {
        let Some(id) = self
            .c
            .graph
            .ids()
            .find(|&id| self.c.graph.node(id).name == layer)
        else {
            return false;
        };
        let Some(slot) = weight_slots(&self.c.graph.node(id).op)
            .iter()
            .position(|v| *v == variable)
        else {
            return false;
        };
        match self.params.get_mut(&id).and_then(|p| p.get_mut(slot)) {
            Some(w) if w.len() == values.len() => {
                w.copy_from_slice(values);
                true
            }
            _ => false,
        }
    }

    /// Every variable of the model (trainable or not), named as unetc names weights.
    pub fn weights(&self) -> Weights {
        named_weights(self.c, &self.params)
    }
}

/// The trainable variables, `(layer, weight slot)` in schedule order: a shared layer's later
/// calls use (and train) its first call's variables; frozen layers have none.
pub(crate) fn trainable_slots(c: &Compiled) -> Vec<(NodeId, usize)> {
    let mut out = Vec::new();
    for &id in &c.info.schedule {
        let node = c.graph.node(id);
        if node.shares.is_some() {
            continue;
        }
        let specs = &c.info.layers[id.index()].weights;
        for (slot, name) in weight_slots(&node.op).iter().enumerate() {
            if node.trainable && specs.iter().any(|w| w.name == *name && w.trainable) {
                out.push((id, slot));
            }
        }
    }
    out
}

/// `params` (every layer's weight slots) as weights named the way unetc names them.
pub(crate) fn named_weights(c: &Compiled, params: &HashMap<NodeId, Vec<Vec<f32>>>) -> Weights {
    let mut out = Weights::new();
    for &id in &c.info.keras_order {
        let node = c.graph.node(id);
        if node.shares.is_some() {
            continue;
        }
        let Some(params) = params.get(&id) else {
            continue;
        };
        for (slot, name) in weight_slots(&node.op).iter().enumerate() {
            let Some(spec) = c.info.layers[id.index()]
                .weights
                .iter()
                .find(|w| w.name == *name)
            else {
                continue;
            };
            let shape: Vec<usize> = spec.shape.iter().map(|&d| d as usize).collect();
            if let Some(t) = Tensor::from_vec(&shape, params[slot].clone()) {
                out.insert(format!("{}/{}", node.name, name), t);
            }
        }
    }
    out
}

/// About how many bytes a training step at `batch` holds at its peak ([`memory::MemoryPlan`]:
/// the values kept for the backward pass and the gradients in flight, plus the weights, their
/// gradients and the optimizer's state), to refuse a batch that cannot fit before anything is
/// allocated. `u64::MAX` where the sizes overflow.
pub fn training_memory(c: &Compiled, batch: usize, optimizer_slots: usize) -> u64 {
    memory::MemoryPlan::new(c, batch, optimizer_slots).map_or(u64::MAX, |p| p.total_bytes())
}

/// Asks the C allocator to keep freed memory for reuse instead of handing it back to the system
/// (glibc: no `mmap` for large blocks, no trimming). A training step frees and allocates the
/// same large activations and gradients every step; returned to the system, each comes back as
/// fresh pages that the kernel must fault in and zero again. For a process that trains.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes the allocator's tuning parameters; it is called before the
    // training threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

/// Memory this process may use: what the system reports available (Linux), else 16 GiB.
pub fn available_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("MemAvailable:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<u64>().ok())
        })
        .map_or(16 << 30, |kib| kib.saturating_mul(1024))
}

/// What a spec's `train(...)` sets (README "Training"); the command line overrides each.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpecSettings {
    pub optimizer: Option<String>,
    pub learning_rate: Option<f64>,
    pub beta_1: Option<f64>,
    pub beta_2: Option<f64>,
    pub epsilon: Option<f64>,
    pub momentum: Option<f64>,
    pub nesterov: Option<bool>,
    pub rho: Option<f64>,
    pub weight_decay: Option<f64>,
    pub loss: Option<String>,
    pub from_logits: Option<bool>,
    pub batch_size: Option<u64>,
    pub epochs: Option<u64>,
}

/// Reads the spec's `train(...)` settings, checking types and ranges; the diagnostics point at
/// the spec.
pub fn spec_settings(c: &Compiled) -> Result<SpecSettings, Vec<crate::diag::Diagnostic>> {
    let Some(section) = &c.graph.train else {
        return Ok(SpecSettings::default());
    };
    let mut r = crate::ir::value::ArgReader::new("train", section.span, section.args.clone(), &[]);
    let float = |r: &mut crate::ir::value::ArgReader, name: &str, lo: f64, hi: f64| {
        r.has(name).then(|| r.float_or(name, lo, hi, f64::NAN))
    };
    let s = SpecSettings {
        optimizer: r
            .has("optimizer")
            .then(|| r.choice("optimizer", optimizer::OPTIMIZERS, "adam", None)),
        learning_rate: float(&mut r, "learning_rate", 1e-12, 1e6),
        beta_1: float(&mut r, "beta_1", 0.0, 0.999_999),
        beta_2: float(&mut r, "beta_2", 0.0, 0.999_999),
        epsilon: float(&mut r, "epsilon", 1e-20, 1.0),
        momentum: float(&mut r, "momentum", 0.0, 0.999_999),
        nesterov: r.has("nesterov").then(|| r.bool_or("nesterov", false)),
        rho: float(&mut r, "rho", 0.0, 0.999_999),
        weight_decay: float(&mut r, "weight_decay", 0.0, 1e3),
        loss: r
            .has("loss")
            .then(|| r.choice("loss", Loss::NAMES, "binary_crossentropy", None)),
        from_logits: r
            .has("from_logits")
            .then(|| r.bool_or("from_logits", false)),
        batch_size: r
            .has("batch_size")
            .then(|| r.int("batch_size", 1, 65_536).map(|v| v as u64))
            .flatten(),
        epochs: r
            .has("epochs")
            .then(|| r.int("epochs", 1, 1_000_000).map(|v| v as u64))
            .flatten(),
    };
    let diags = r.finish(crate::ir::TRAIN_SETTINGS);
    let bad_float = [
        s.learning_rate,
        s.beta_1,
        s.beta_2,
        s.epsilon,
        s.momentum,
        s.rho,
        s.weight_decay,
    ]
    .iter()
    .any(|v| v.is_some_and(f64::is_nan));
    if diags.is_empty() && !bad_float {
        Ok(s)
    } else {
        Err(diags)
    }
}

/// f32 values held in `outputs`.
fn held(outputs: &HashMap<NodeId, Tensor>) -> usize {
    outputs.values().map(|t| t.data.len()).sum()
}

/// f32 values held in `saved`.
fn held_saved(saved: &HashMap<NodeId, Saved>) -> usize {
    saved
        .values()
        .map(|s| s.pre.as_ref().map_or(0, Vec::len) + s.aux.iter().map(Vec::len).sum::<usize>())
        .sum()
}

/// Frees a layer's value and saved extras once its backward is done (its readers ran first).
fn free(outputs: &mut HashMap<NodeId, Tensor>, saved: &mut HashMap<NodeId, Saved>, id: NodeId) {
    if let Some(t) = outputs.get_mut(&id) {
        t.data = Vec::new();
    }
    saved.remove(&id);
}
