//! The training loop over arrays: `.npy` inputs and targets, batches in order (or shuffled per
//! epoch with the seed), a fixed number of steps or epochs, the per-step log, the final weights.

use super::loss::Loss;
use super::{BatchTargets, TrainConfig, Trainer};
use crate::exec::Tensor;
use crate::io::{read_npy_as_stored, save_weights, Weights};
use crate::runner::{Device, RunError};
use crate::Compiled;
use rand::seq::SliceRandom;
use std::path::{Path, PathBuf};

/// How long to train: Keras's `steps` (batches) or `epochs` (passes over the data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Length {
    Steps(u64),
    Epochs(u64),
}

/// Where the training samples come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// `.npy` inputs (NHWC) and targets.
    Arrays { inputs: PathBuf, targets: PathBuf },
    /// A folder of images and masks (README "Training").
    Folder(PathBuf),
}

/// Where the validation samples come from.
#[derive(Debug, Clone)]
pub enum Validation {
    None,
    Folder(PathBuf),
    /// This fraction of the training samples (the last ones after a seeded shuffle).
    Split(f64),
}

/// The learning rate over training.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Schedule {
    Constant,
    /// Multiplied by `gamma` every `every` epochs.
    Step {
        every: u64,
        gamma: f32,
    },
    /// Keras's CosineDecay over the whole run, down to `min`.
    Cosine {
        min: f32,
    },
}

/// Which validation figure decides the best model and early stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Monitor {
    ValLoss,
    ValDice,
}

#[derive(Debug, Clone)]
pub struct FitOptions {
    pub source: Source,
    pub validation: Validation,
    pub batch_size: usize,
    pub length: Length,
    /// Shuffle the samples each epoch (with the config's seed), as `fit(shuffle=True)`.
    pub shuffle: bool,
    pub augment: super::augment::Augment,
    pub schedule: Schedule,
    pub monitor: Monitor,
    /// Stop after this many epochs without improvement of the monitored figure.
    pub patience: Option<u64>,
    /// Written atomically after each epoch: weights, optimizer state, epoch and step.
    pub checkpoint: Option<PathBuf>,
    /// A checkpoint to continue from.
    pub resume: Option<PathBuf>,
    /// Written whenever the monitored figure improves.
    pub best: Option<PathBuf>,
    pub force: bool,
    /// Where the steps run: [`Device::Cuda`] trains on the GPU (src/train/cuda.rs); validation
    /// then runs on the CPU from the GPU's weights, and checkpoints pass through a CPU
    /// trainer holding the GPU's state.
    pub device: Device,
}

/// The trainer a run steps: the CPU's or the GPU's.
enum Engine<'c> {
    Cpu(Box<Trainer<'c>>),
    Cuda(Box<super::cuda::CudaTrainer<'c>>),
}

impl Engine<'_> {
    fn iterations(&self) -> u64 {
        match self {
            Engine::Cpu(t) => t.iterations,
            Engine::Cuda(t) => t.iterations,
        }
    }

    fn reseed(&mut self, seed: u64) {
        match self {
            Engine::Cpu(t) => t.reseed(seed),
            Engine::Cuda(t) => t.reseed(seed),
        }
    }

    fn set_learning_rate(&mut self, lr: f32) {
        match self {
            Engine::Cpu(t) => t.set_learning_rate(lr),
            Engine::Cuda(t) => t.set_learning_rate(lr),
        }
    }

    fn step(&mut self, x: &Tensor, y: &BatchTargets) -> Result<f64, RunError> {
        match self {
            Engine::Cpu(t) => t.step(x, y),
            Engine::Cuda(t) => t.step(x, y),
        }
        .map_err(|e| usage(e.to_string()))
    }

    fn weights(&self) -> Result<Weights, RunError> {
        match self {
            Engine::Cpu(t) => Ok(t.weights()),
            Engine::Cuda(t) => t.weights().map_err(|e| usage(e.to_string())),
        }
    }
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
    format!("({})", super::dims_text(s))
}

/// Reads and checks the arrays: the inputs fit the model's input, the targets its output (class
/// indices in range for the sparse loss), the same number of samples in both.
pub fn load_dataset(
    c: &Compiled,
    inputs_path: &Path,
    targets_path: &Path,
    loss: Loss,
) -> Result<Dataset, RunError> {
    let inputs = read_npy_as_stored(inputs_path).map_err(RunError::Io)?;
    let raw_targets = crate::io::read_npy_targets(targets_path).map_err(RunError::Io)?;
    let model_shape = |id| super::item_shape(c, id);
    let input_shape = model_shape(c.graph.inputs[0]);
    let output_shape = model_shape(c.graph.outputs[0]);
    let x_item = inputs.shape.get(1..).unwrap_or(&[]);
    if x_item != input_shape.as_slice() {
        return Err(usage(format!(
            "{}: the inputs have shape {} but the model takes (N, {}): save them as \
             [samples, height, width, channels] float32 of the model's input size",
            inputs_path.display(),
            shape_text(&inputs.shape),
            super::dims_text(&input_shape)
        )));
    }
    let n = inputs.shape[0];
    if n == 0 {
        return Err(usage(format!(
            "{}: holds no samples",
            inputs_path.display()
        )));
    }
    if raw_targets.shape.first() != Some(&n) {
        return Err(usage(format!(
            "{}: {} samples of targets for {n} inputs: give one target per input",
            targets_path.display(),
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
                targets_path.display(),
                shape_text(&raw_targets.shape),
                super::dims_text(&output_shape),
                super::dims_text(pixels)
            )));
        }
        let mut classes = Vec::with_capacity(raw_targets.data.len());
        for (i, &v) in raw_targets.data.iter().enumerate() {
            if v.fract() != 0.0 || v < 0.0 || v as usize >= classes_count {
                return Err(usage(format!(
                    "{}: target {v} at flat index {i} is not a class index of the model's {} \
                     output channels (0 to {})",
                    targets_path.display(),
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
                targets_path.display(),
                shape_text(&raw_targets.shape),
                super::dims_text(&output_shape),
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
    /// A copy of the samples `keep`.
    fn subset(&self, keep: &[usize]) -> Dataset {
        let (inputs, targets) = self.batch(keep);
        Dataset {
            inputs,
            targets: match targets {
                BatchTargets::Dense(t) => Targets::Dense(t),
                BatchTargets::Classes { shape, classes } => Targets::Classes { shape, classes },
            },
        }
    }

    fn empty() -> Dataset {
        Dataset {
            inputs: Tensor::zeros(&[0]),
            targets: Targets::Dense(Tensor::zeros(&[0])),
        }
    }

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

/// Samples to train or validate on.
enum Data {
    Arrays(Dataset),
    Folder {
        samples: Vec<super::data::Sample>,
        geometry: super::data::Geometry,
    },
}

impl Data {
    fn len(&self) -> usize {
        match self {
            Data::Arrays(d) => d.len(),
            Data::Folder { samples, .. } => samples.len(),
        }
    }

    fn batch(
        &self,
        indices: &[usize],
        loss: Loss,
        cut: super::data::Cut,
        augment: &super::augment::Augment,
    ) -> (Tensor, BatchTargets) {
        match self {
            Data::Arrays(d) => d.batch(indices),
            Data::Folder { samples, geometry } => {
                super::data::batch(samples, indices, geometry, loss, cut, augment)
            }
        }
    }

    /// Two disjoint subsets, `a` and `b` (sample indices).
    fn split(self, a: &[usize], b: &[usize]) -> (Data, Data) {
        match self {
            Data::Arrays(d) => (Data::Arrays(d.subset(a)), Data::Arrays(d.subset(b))),
            Data::Folder { samples, geometry } => {
                let mut slots: Vec<Option<super::data::Sample>> =
                    samples.into_iter().map(Some).collect();
                let mut take =
                    |keep: &[usize]| keep.iter().filter_map(|&i| slots[i].take()).collect();
                let first = take(a);
                let second = take(b);
                (
                    Data::Folder {
                        samples: first,
                        geometry,
                    },
                    Data::Folder {
                        samples: second,
                        geometry,
                    },
                )
            }
        }
    }
}

fn load(c: &Compiled, source: &Source, loss: Loss) -> Result<Data, RunError> {
    match source {
        Source::Arrays { inputs, targets } => {
            Ok(Data::Arrays(load_dataset(c, inputs, targets, loss)?))
        }
        Source::Folder(dir) => {
            let geometry = super::data::Geometry::of(c)?;
            let pairs = super::data::find_pairs(dir)?;
            Ok(Data::Folder {
                samples: super::data::load_samples(&pairs, &geometry)?,
                geometry,
            })
        }
    }
}

/// One epoch's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochLog {
    pub epoch: u64,
    /// Mean training loss of the epoch's steps.
    pub loss: f64,
    pub learning_rate: f32,
    pub val: Option<ValMetrics>,
}

/// Validation figures: loss (inference mode) and, per class, Dice and IoU over the whole set
/// (argmax for several output channels, 0.5 for one).
#[derive(Debug, Clone, PartialEq)]
pub struct ValMetrics {
    pub loss: f64,
    pub dice: Vec<f64>,
    pub iou: Vec<f64>,
}

impl ValMetrics {
    /// Mean Dice over the foreground classes (every class but 0 when there are several; the
    /// one class of a sigmoid output).
    pub fn mean_dice(&self) -> f64 {
        let fg = if self.dice.len() > 1 {
            &self.dice[1..]
        } else {
            &self.dice[..]
        };
        fg.iter().sum::<f64>() / fg.len().max(1) as f64
    }

    pub fn mean_iou(&self) -> f64 {
        let fg = if self.iou.len() > 1 {
            &self.iou[1..]
        } else {
            &self.iou[..]
        };
        fg.iter().sum::<f64>() / fg.len().max(1) as f64
    }
}

/// What [`fit`] reports as it goes.
pub enum Event<'a> {
    Step {
        log: &'a StepLog,
        total: u64,
    },
    Epoch(&'a EpochLog),
    /// Early stopping ended the run after this epoch.
    Stopped {
        epoch: u64,
        best: f64,
    },
}

/// The result of a run.
pub struct FitResult {
    pub weights: Weights,
    pub steps: Vec<StepLog>,
    pub epochs: Vec<EpochLog>,
}

/// A per-epoch seed: every random stream restarts from (seed, epoch, purpose), so that a run
/// resumed at an epoch boundary draws what an uninterrupted run would.
fn epoch_seed(seed: u64, epoch: u64, purpose: u64) -> u64 {
    seed ^ epoch.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ purpose.wrapping_mul(0xd6e8_feb8_6659_fd93)
}

/// Trains `c` from `initial` weights (or the checkpoint in `opts.resume`).
pub fn fit(
    c: &Compiled,
    initial: &Weights,
    config: TrainConfig,
    opts: &FitOptions,
    on_event: &mut dyn FnMut(Event),
) -> Result<FitResult, RunError> {
    if opts.batch_size == 0 {
        return Err(usage("--batch-size must be at least 1".into()));
    }
    let (loss, seed, base_lr) = (config.loss, config.seed, config.learning_rate);
    let mut train = load(c, &opts.source, loss)?;
    let val = match &opts.validation {
        Validation::None => None,
        Validation::Folder(dir) => Some(load(c, &Source::Folder(dir.clone()), loss)?),
        Validation::Split(fraction) => {
            if !(*fraction > 0.0 && *fraction < 1.0) {
                return Err(usage(
                    "--val-split must be between 0 and 1 (e.g. 0.2)".into(),
                ));
            }
            let n = train.len();
            let n_val = ((n as f64 * fraction).round() as usize).clamp(1, n.saturating_sub(1));
            if n < 2 {
                return Err(usage("--val-split needs at least 2 samples".into()));
            }
            let mut order: Vec<usize> = (0..n).collect();
            order.shuffle(&mut crate::io::seeded_rng(epoch_seed(seed, 0, 3)));
            let (t, v) = order.split_at(n - n_val);
            let (mut t, mut v) = (t.to_vec(), v.to_vec());
            t.sort_unstable();
            v.sort_unstable();
            // Both subsets from one load: split the samples.
            let whole = std::mem::replace(&mut train, Data::Arrays(Dataset::empty()));
            let (tr, va) = whole.split(&t, &v);
            train = tr;
            Some(va)
        }
    };
    let n = train.len();
    let per_epoch = n.div_ceil(opts.batch_size) as u64;
    let total = match opts.length {
        Length::Steps(s) => s,
        Length::Epochs(e) => e.saturating_mul(per_epoch),
    };
    let need = super::training_memory(c, opts.batch_size.min(n.max(1)), config.optimizer.slots());
    let have = super::available_memory();
    let on_gpu = match opts.device {
        Device::Cuda => true,
        Device::Cpu | Device::Auto => false,
    };
    if !on_gpu && need > have {
        return Err(usage(format!(
            "training at batch size {} needs about {} of memory (`unetc plan --train` shows what is \
             kept for the backward pass), more than the {} available: use a smaller --batch-size",
            opts.batch_size.min(n.max(1)),
            crate::text::bytes(need),
            crate::text::bytes(have)
        )));
    }
    let cpu_config = config.clone();
    let mut epoch = 0u64;
    let mut trainer = if on_gpu {
        // A checkpoint is read (and written) through a CPU trainer holding the same state.
        let mut resumed = None;
        if let Some(path) = &opts.resume {
            let mut cpu =
                Trainer::new(c, initial, config.clone()).map_err(|e| usage(e.to_string()))?;
            epoch = super::checkpoint::restore(c, &mut cpu, path)?;
            resumed = Some(cpu);
        }
        let start = resumed.as_ref().map(|t| t.weights());
        let max_batch = opts.batch_size.min(n.max(1));
        let mut t =
            super::cuda::CudaTrainer::new(c, start.as_ref().unwrap_or(initial), config, max_batch)
                .map_err(|e| usage(e.to_string()))?;
        if let Some(cpu) = &resumed {
            let state = cpu.optimizer_state();
            t.restore_optimizer(&state_lookup(&state), cpu.iterations)
                .map_err(usage)?;
        }
        Engine::Cuda(Box::new(t))
    } else {
        Engine::Cpu(Box::new(
            Trainer::new(c, initial, config).map_err(|e| usage(e.to_string()))?,
        ))
    };
    if let (Some(path), Engine::Cpu(t)) = (&opts.resume, &mut trainer) {
        epoch = super::checkpoint::restore(c, t, path)?;
    }
    let mut steps = Vec::new();
    let mut epochs = Vec::new();
    let mut best: Option<f64> = None;
    let mut since_best = 0u64;
    let mut order: Vec<usize> = (0..n).collect();
    while trainer.iterations() < total {
        epoch += 1;
        trainer.reseed(epoch_seed(seed, epoch, 1));
        order.sort_unstable();
        if opts.shuffle {
            order.shuffle(&mut crate::io::seeded_rng(epoch_seed(seed, epoch, 2)));
        }
        let lr = match opts.schedule {
            Schedule::Constant | Schedule::Cosine { .. } => base_lr,
            Schedule::Step { every, gamma } => {
                base_lr * gamma.powi(((epoch - 1) / every.max(1)) as i32)
            }
        };
        // Batches are cut and augmented on a second thread while the step computes (at most
        // two waiting); leaving the loop early drops the receiver, which stops the producer.
        let (train_ref, order_ref, augment, batch_size) =
            (&train, &order, &opts.augment, opts.batch_size);
        let (sum, count) = std::thread::scope(|scope| -> Result<(f64, u64), RunError> {
            let (sender, batches) = std::sync::mpsc::sync_channel(2);
            scope.spawn(move || {
                for chunk in order_ref.chunks(batch_size) {
                    let batch = train_ref.batch(
                        chunk,
                        loss,
                        super::data::Cut::Random { seed, epoch },
                        augment,
                    );
                    if sender.send(batch).is_err() {
                        break;
                    }
                }
            });
            let mut sum = 0.0f64;
            let mut count = 0u64;
            let mut batches = batches.into_iter();
            while let Some((x, y)) =
                super::profile::time(|| "waiting for the batch".into(), || batches.next())
            {
                if trainer.iterations() >= total {
                    break;
                }
                let step_lr = match opts.schedule {
                    Schedule::Cosine { min } => {
                        let t = (trainer.iterations() as f64 / total.max(1) as f64).min(1.0);
                        let alpha = (min / base_lr) as f64;
                        (base_lr as f64
                            * ((1.0 - alpha) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
                                + alpha)) as f32
                    }
                    Schedule::Constant | Schedule::Step { .. } => lr,
                };
                trainer.set_learning_rate(step_lr);
                let value = trainer.step(&x, &y)?;
                let entry = StepLog {
                    step: trainer.iterations(),
                    epoch,
                    loss: value,
                };
                on_event(Event::Step { log: &entry, total });
                steps.push(entry);
                sum += value;
                count += 1;
            }
            Ok((sum, count))
        })?;
        let val_metrics = match (&val, &mut trainer) {
            (Some(v), Engine::Cpu(t)) => Some(validate(t, v, opts.batch_size, loss)?),
            (Some(v), Engine::Cuda(t)) => {
                let weights = t.weights().map_err(|e| usage(e.to_string()))?;
                let mut cpu = Trainer::new(c, &weights, cpu_config.clone())
                    .map_err(|e| usage(e.to_string()))?;
                Some(validate(&mut cpu, v, opts.batch_size, loss)?)
            }
            (None, _) => None,
        };
        let entry = EpochLog {
            epoch,
            loss: sum / count.max(1) as f64,
            learning_rate: lr,
            val: val_metrics,
        };
        on_event(Event::Epoch(&entry));
        match (&opts.checkpoint, &trainer) {
            (Some(path), Engine::Cpu(t)) => super::checkpoint::save(t, epoch, path)?,
            (Some(path), Engine::Cuda(t)) => {
                let weights = t.weights().map_err(|e| usage(e.to_string()))?;
                let state = t.optimizer_state().map_err(|e| usage(e.to_string()))?;
                let mut cpu = Trainer::new(c, &weights, cpu_config.clone())
                    .map_err(|e| usage(e.to_string()))?;
                cpu.restore_optimizer(&state_lookup(&state), t.iterations)
                    .map_err(usage)?;
                super::checkpoint::save(&cpu, epoch, path)?;
            }
            (None, _) => {}
        }
        // The monitored figure: lower is better for the loss, higher for Dice.
        let figure = match (&entry.val, opts.monitor) {
            (Some(v), Monitor::ValLoss) => Some(v.loss),
            (Some(v), Monitor::ValDice) => Some(-v.mean_dice()),
            (None, _) => None,
        };
        epochs.push(entry);
        if let Some(f) = figure {
            if best.is_none_or(|b| f < b) {
                best = Some(f);
                since_best = 0;
                if let Some(path) = &opts.best {
                    save_weights(path, &trainer.weights()?, true).map_err(RunError::Io)?;
                }
            } else {
                since_best += 1;
                if opts.patience.is_some_and(|p| since_best >= p) {
                    on_event(Event::Stopped {
                        epoch,
                        best: best.map_or(f64::NAN, |b| {
                            if opts.monitor == Monitor::ValDice {
                                -b
                            } else {
                                b
                            }
                        }),
                    });
                    break;
                }
            }
        }
    }
    Ok(FitResult {
        weights: trainer.weights()?,
        steps,
        epochs,
    })
}

/// Finds a trainer's optimizer state `(layer, variable, slots)` by layer, variable and slot
/// (moving it between the CPU's and the GPU's trainers).
fn state_lookup<'s, S: AsRef<[Vec<f32>]>>(
    state: &'s [(String, &'static str, S)],
) -> impl Fn(&str, &str, usize) -> Option<Vec<f32>> + 's {
    move |layer, var, k| {
        state
            .iter()
            .find(|(l, v, _)| l == layer && *v == var)
            .and_then(|(_, _, slots)| slots.as_ref().get(k).cloned())
    }
}

/// Loss, Dice and IoU over a validation set, in inference mode.
fn validate(
    trainer: &mut Trainer,
    data: &Data,
    batch_size: usize,
    loss: Loss,
) -> Result<ValMetrics, RunError> {
    let n = data.len();
    let order: Vec<usize> = (0..n).collect();
    let none = super::augment::Augment::none();
    let (mut loss_sum, mut weight) = (0.0f64, 0usize);
    let mut counts: Vec<[u64; 3]> = Vec::new(); // per class: intersection, predicted, true
    for chunk in order.chunks(batch_size) {
        let (x, y) = data.batch(chunk, loss, super::data::Cut::Centre, &none);
        let (l, out) = trainer.evaluate(&x, &y).map_err(|e| usage(e.to_string()))?;
        loss_sum += l * chunk.len() as f64;
        weight += chunk.len();
        let c = out.shape.last().copied().unwrap_or(1).max(1);
        let classes = if c == 1 { 2 } else { c };
        if counts.is_empty() {
            counts = vec![[0; 3]; classes];
        }
        for (p, pixel) in out.data.chunks(c).enumerate() {
            let predicted = if c == 1 {
                usize::from(pixel[0] > 0.5)
            } else {
                pixel
                    .iter()
                    .enumerate()
                    .fold(0, |best, (k, &v)| if v > pixel[best] { k } else { best })
            };
            let truth = match &y {
                BatchTargets::Dense(t) if c == 1 => usize::from(t.data[p] > 0.5),
                BatchTargets::Dense(t) => {
                    let row = &t.data[p * c..(p + 1) * c];
                    row.iter()
                        .enumerate()
                        .fold(0, |best, (k, &v)| if v > row[best] { k } else { best })
                }
                BatchTargets::Classes { classes, .. } => classes[p] as usize,
            };
            if predicted == truth {
                counts[truth][0] += 1;
            }
            counts[predicted][1] += 1;
            counts[truth.min(classes - 1)][2] += 1;
        }
    }
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 1.0 };
    let (mut dice, mut iou): (Vec<f64>, Vec<f64>) = counts
        .iter()
        .map(|&[i, p, t]| {
            let (i, p, t) = (i as f64, p as f64, t as f64);
            (ratio(2.0 * i, p + t), ratio(i, p + t - i))
        })
        .unzip();
    // A sigmoid output has one class: the foreground.
    if counts.len() == 2 && dice.len() == 2 {
        let one_channel = matches!(data, Data::Arrays(d) if matches!(&d.targets, Targets::Dense(t) if t.shape.last() == Some(&1)))
            || matches!(data, Data::Folder { geometry, .. } if geometry.classes == 1);
        if one_channel {
            dice.remove(0);
            iou.remove(0);
        }
    }
    Ok(ValMetrics {
        loss: loss_sum / weight.max(1) as f64,
        dice,
        iou,
    })
}

/// The log as JSON: `{"steps": [...], "epochs": [...]}`.
pub fn log_json_full(steps: &[StepLog], epochs: &[EpochLog]) -> String {
    let steps: Vec<serde_json::Value> = steps
        .iter()
        .map(|s| serde_json::json!({"step": s.step, "epoch": s.epoch, "loss": s.loss}))
        .collect();
    let epochs: Vec<serde_json::Value> = epochs
        .iter()
        .map(|e| {
            let mut v = serde_json::json!({"epoch": e.epoch, "loss": e.loss, "learning_rate": e.learning_rate});
            if let Some(m) = &e.val {
                v["val_loss"] = m.loss.into();
                v["val_dice"] = m.dice.clone().into();
                v["val_iou"] = m.iou.clone().into();
                v["val_mean_dice"] = m.mean_dice().into();
                v["val_mean_iou"] = m.mean_iou().into();
            }
            v
        })
        .collect();
    serde_json::to_string_pretty(&serde_json::json!({ "steps": steps, "epochs": epochs }))
        .unwrap_or_default()
        + "\n"
}

/// One row per epoch: `epoch,loss,learning_rate,val_loss,val_mean_dice,val_mean_iou`.
pub fn log_csv(epochs: &[EpochLog]) -> String {
    let mut out = String::from("epoch,loss,learning_rate,val_loss,val_mean_dice,val_mean_iou\n");
    for e in epochs {
        let (vl, vd, vi) = match &e.val {
            Some(m) => (
                m.loss.to_string(),
                m.mean_dice().to_string(),
                m.mean_iou().to_string(),
            ),
            None => (String::new(), String::new(), String::new()),
        };
        out += &format!(
            "{},{},{},{vl},{vd},{vi}\n",
            e.epoch, e.loss, e.learning_rate
        );
    }
    out
}

/// Writes the final weights and the log (`.csv`: one row per epoch; otherwise JSON).
pub fn write_results(
    result: &FitResult,
    out: &Path,
    log_path: Option<&Path>,
    force: bool,
) -> Result<(), RunError> {
    save_weights(out, &result.weights, force).map_err(RunError::Io)?;
    if let Some(p) = log_path {
        let text = if p.extension().is_some_and(|e| e == "csv") {
            log_csv(&result.epochs)
        } else {
            log_json_full(&result.steps, &result.epochs)
        };
        crate::io::write_atomic(p, force, |w| w.write_all(text.as_bytes()))
            .map_err(RunError::Io)?;
    }
    Ok(())
}
