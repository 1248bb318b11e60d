//! The training loop over arrays: `.npy` inputs and targets, batches in order (or shuffled per
//! epoch with the seed), a fixed number of steps or epochs, the per-step log, the final weights.

use super::loss::Loss;
use super::{BatchTargets, TrainConfig, Trainer};
use crate::exec::Tensor;
use crate::io::{read_npy_as_stored, save_weights, Weights};
use crate::runner::RunError;
use crate::Compiled;
use rand::seq::SliceRandom;
use std::path::{Path, PathBuf};

/// How long to train: Keras's `steps` (batches) or `epochs` (passes over the data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Length {
    Steps(u64),
    Epochs(u64),
}

#[derive(Debug, Clone)]
pub struct FitOptions {
    pub inputs: PathBuf,
    pub targets: PathBuf,
    pub batch_size: usize,
    pub length: Length,
    /// Shuffle the samples each epoch (with the config's seed), as `fit(shuffle=True)`.
    pub shuffle: bool,
}

/// One logged step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepLog {
    pub step: u64,
    pub epoch: u64,
    pub loss: f64,
}

/// The arrays to train on, checked against the model.
pub struct Dataset {
    pub inputs: Tensor,
    pub targets: Targets,
}

pub enum Targets {
    Dense(Tensor),
    /// One class index per output pixel, `[N, H, W]`.
    Classes {
        shape: Vec<usize>,
        classes: Vec<i64>,
    },
}

fn usage(text: String) -> RunError {
    RunError::Usage(text)
}

fn shape_text(s: &[usize]) -> String {
    format!(
        "({})",
        s.iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Reads and checks the arrays: the inputs fit the model's input, the targets its output (class
/// indices in range for the sparse loss), the same number of samples in both.
pub fn load_dataset(c: &Compiled, opts: &FitOptions, loss: Loss) -> Result<Dataset, RunError> {
    let inputs = read_npy_as_stored(&opts.inputs).map_err(RunError::Io)?;
    let raw_targets = read_npy_as_stored(&opts.targets).map_err(RunError::Io)?;
    let model_shape = |id: crate::ir::NodeId| -> Vec<usize> {
        c.info.layers[id.index()]
            .shape
            .iter()
            .flatten()
            .map(|&d| d.max(0) as usize)
            .collect()
    };
    let input_shape = model_shape(c.graph.inputs[0]);
    let output_shape = model_shape(c.graph.outputs[0]);
    let x_item = inputs.shape.get(1..).unwrap_or(&[]);
    if x_item != input_shape.as_slice() {
        return Err(usage(format!(
            "{}: the inputs have shape {} but the model takes (N, {}): save them as \
             [samples, height, width, channels] float32 of the model's input size",
            opts.inputs.display(),
            shape_text(&inputs.shape),
            input_shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let n = inputs.shape[0];
    if n == 0 {
        return Err(usage(format!(
            "{}: holds no samples",
            opts.inputs.display()
        )));
    }
    if raw_targets.shape.first() != Some(&n) {
        return Err(usage(format!(
            "{}: {} samples of targets for {n} inputs: give one target per input",
            opts.targets.display(),
            raw_targets.shape.first().copied().unwrap_or(0)
        )));
    }
    let t_item = &raw_targets.shape[1..];
    let targets = if loss.sparse() {
        let classes_count = output_shape.last().copied().unwrap_or(1);
        let pixels = &output_shape[..output_shape.len().saturating_sub(1)];
        let fits = t_item == pixels
            || (t_item.len() == pixels.len() + 1
                && t_item[..pixels.len()] == *pixels
                && t_item.last() == Some(&1));
        if !fits {
            return Err(usage(format!(
                "{}: sparse targets have shape {} but the model's output is (N, {}): give one \
                 class index per output pixel, (N, {})",
                opts.targets.display(),
                shape_text(&raw_targets.shape),
                output_shape
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                pixels
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let mut classes = Vec::with_capacity(raw_targets.data.len());
        for (i, &v) in raw_targets.data.iter().enumerate() {
            if v.fract() != 0.0 || v < 0.0 || v as usize >= classes_count {
                return Err(usage(format!(
                    "{}: target {v} at flat index {i} is not a class index of the model's {} \
                     output channels (0 to {})",
                    opts.targets.display(),
                    classes_count,
                    classes_count - 1
                )));
            }
            classes.push(v as i64);
        }
        let mut shape = vec![n];
        shape.extend_from_slice(pixels);
        Targets::Classes { shape, classes }
    } else {
        if t_item != output_shape.as_slice() {
            return Err(usage(format!(
                "{}: the targets have shape {} but the model's output is (N, {}){}",
                opts.targets.display(),
                shape_text(&raw_targets.shape),
                output_shape
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                if t_item.len() + 1 == output_shape.len() {
                    "; class indices need --loss sparse_categorical_crossentropy"
                } else {
                    ""
                }
            )));
        }
        Targets::Dense(raw_targets)
    };
    Ok(Dataset { inputs, targets })
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.inputs.shape[0]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The samples `indices`, as one batch.
    pub fn batch(&self, indices: &[usize]) -> (Tensor, BatchTargets) {
        let gather = |t: &Tensor| {
            let item = t.item_len();
            let mut data = Vec::with_capacity(indices.len() * item);
            for &i in indices {
                data.extend_from_slice(&t.data[i * item..(i + 1) * item]);
            }
            let mut shape = t.shape.clone();
            shape[0] = indices.len();
            Tensor { shape, data }
        };
        let targets = match &self.targets {
            Targets::Dense(t) => BatchTargets::Dense(gather(t)),
            Targets::Classes { shape, classes } => {
                let item: usize = shape[1..].iter().product();
                let mut out = Vec::with_capacity(indices.len() * item);
                for &i in indices {
                    out.extend_from_slice(&classes[i * item..(i + 1) * item]);
                }
                let mut s = shape.clone();
                s[0] = indices.len();
                BatchTargets::Classes {
                    shape: s,
                    classes: out,
                }
            }
        };
        (gather(&self.inputs), targets)
    }
}

/// Trains `c` from `initial` weights; calls `on_step` after each step. Returns the final
/// weights and the log.
pub fn fit(
    c: &Compiled,
    initial: &Weights,
    config: TrainConfig,
    opts: &FitOptions,
    on_step: &mut dyn FnMut(&StepLog, u64),
) -> Result<(Weights, Vec<StepLog>), RunError> {
    if opts.batch_size == 0 {
        return Err(usage("--batch-size must be at least 1".into()));
    }
    let data = load_dataset(c, opts, config.loss)?;
    let n = data.len();
    let per_epoch = n.div_ceil(opts.batch_size) as u64;
    let total = match opts.length {
        Length::Steps(s) => s,
        Length::Epochs(e) => e.saturating_mul(per_epoch),
    };
    let mut shuffle_rng = crate::io::seeded_rng(config.seed ^ 0x5eed_5eed);
    let mut trainer = Trainer::new(c, initial, config).map_err(|e| usage(e.to_string()))?;
    let mut log = Vec::new();
    let mut order: Vec<usize> = (0..n).collect();
    let mut step = 0u64;
    let mut epoch = 0u64;
    'epochs: while step < total {
        epoch += 1;
        if opts.shuffle {
            order.shuffle(&mut shuffle_rng);
        }
        for chunk in order.chunks(opts.batch_size) {
            if step >= total {
                break 'epochs;
            }
            let (x, y) = data.batch(chunk);
            let loss = trainer.step(&x, &y).map_err(|e| usage(e.to_string()))?;
            step += 1;
            let entry = StepLog { step, epoch, loss };
            on_step(&entry, total);
            log.push(entry);
        }
    }
    Ok((trainer.weights(), log))
}

/// `{"steps": [{"step": 1, "epoch": 1, "loss": ...}, ...]}`.
pub fn log_json(log: &[StepLog]) -> String {
    let steps: Vec<serde_json::Value> = log
        .iter()
        .map(|s| serde_json::json!({"step": s.step, "epoch": s.epoch, "loss": s.loss}))
        .collect();
    serde_json::to_string_pretty(&serde_json::json!({ "steps": steps })).unwrap_or_default() + "\n"
}

/// Writes the final weights and the log.
pub fn write_results(
    weights: &Weights,
    out: &Path,
    log: &[StepLog],
    log_path: Option<&Path>,
    force: bool,
) -> Result<(), RunError> {
    save_weights(out, weights, force).map_err(RunError::Io)?;
    if let Some(p) = log_path {
        crate::io::write_atomic(p, force, |w| w.write_all(log_json(log).as_bytes()))
            .map_err(RunError::Io)?;
    }
    Ok(())
}
