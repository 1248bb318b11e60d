//! Checkpoints: every weight, the optimizer's state and where training stands, in one
//! safetensors file written atomically after each epoch (an interrupted run leaves the previous
//! checkpoint whole). Tensors: `<layer>/<variable>` as in a weights file,
//! `optimizer/<k>/<layer>/<variable>` for the optimizer's k-th slot (Adam: 0 = m, 1 = v), and
//! `checkpoint/progress` = `[epoch, update count]` (exact in f32 below 2^24).

use super::Trainer;
use crate::exec::Tensor;
use crate::io::{load_weights, save_weights, Expected, Weights};
use crate::runner::{expected_weights, RunError};
use crate::Compiled;
use std::path::Path;

const PROGRESS: &str = "checkpoint/progress";

fn slot_name(k: usize, layer: &str, var: &str) -> String {
    format!("optimizer/{k}/{layer}/{var}")
}

/// Writes `trainer`'s state after `epoch` to `path`, replacing the previous checkpoint.
pub fn save(trainer: &Trainer, epoch: u64, path: &Path) -> Result<(), RunError> {
    let mut all: Weights = trainer.weights();
    for (layer, var, slots) in trainer.optimizer_state() {
        for (k, values) in slots.iter().enumerate() {
            all.insert(
                slot_name(k, &layer, var),
                Tensor {
                    shape: vec![values.len()],
                    data: values.clone(),
                },
            );
        }
    }
    all.insert(
        PROGRESS.into(),
        Tensor {
            shape: vec![2],
            data: vec![epoch as f32, trainer.iterations as f32],
        },
    );
    save_weights(path, &all, true).map_err(RunError::Io)
}

/// Loads a checkpoint written by [`save`] into `trainer` (weights, optimizer state, update
/// count); returns the epoch it was written after. The optimizer must be the one it was written
/// with (its state tensors must all be there).
pub fn restore(c: &Compiled, trainer: &mut Trainer, path: &Path) -> Result<u64, RunError> {
    let mut expected = expected_weights(c);
    for (layer, var, slots) in trainer.optimizer_state() {
        for (k, values) in slots.iter().enumerate() {
            expected.push(Expected {
                name: slot_name(k, &layer, var),
                shape: vec![values.len()],
            });
        }
    }
    expected.push(Expected {
        name: PROGRESS.into(),
        shape: vec![2],
    });
    let stored = load_weights(path, &expected).map_err(|e| {
        RunError::Usage(format!(
            "{e}\n(--resume takes a checkpoint written by `unetc train --checkpoint` with the same \
             spec and optimizer)"
        ))
    })?;
    let progress = &stored.get(PROGRESS).expect("checked by load_weights").data;
    let (epoch, iterations) = (progress[0], progress[1]);
    if epoch < 0.0 || iterations < 0.0 || epoch.fract() != 0.0 || iterations.fract() != 0.0 {
        return Err(RunError::Usage(format!(
            "{}: `{PROGRESS}` is not a checkpoint's [epoch, step]",
            path.display()
        )));
    }
    for e in expected_weights(c) {
        let t = stored.get(&e.name).expect("checked by load_weights");
        let (layer, var) = e.name.rsplit_once('/').unwrap_or((&e.name, ""));
        trainer.set_weight(layer, var, &t.data);
    }
    trainer
        .restore_optimizer(
            &|layer, var, k| {
                stored
                    .get(&slot_name(k, layer, var))
                    .map(|t| t.data.clone())
            },
            iterations as u64,
        )
        .map_err(RunError::Usage)?;
    Ok(epoch as u64)
}
