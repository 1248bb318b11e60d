//! `unetc run` and `unetc init-weights`: spec + weights + images or arrays in, probabilities or
//! masks out. Images of any size are covered by tiles (see [`crate::exec::tiling`]).

use crate::diag::render_plain;
use crate::exec::cpu::{CpuModel, ExecError, WeightSource};
use crate::exec::tiling::{blend_weights, mirror_index, Span};
use crate::exec::{Precision, Tensor};
use crate::expand::Session;
use crate::io::stream::{
    NpySink, NpySource, RegionSink, RegionSource, Samples, TensorSink, TensorSource, TiffSink,
    TiffSource,
};
use crate::io::weights::{init_tensor, load_weights, save_weights, seeded_rng, Expected, Weights};
use crate::io::{ChannelLayout, IoError};
use crate::report::sizes::{plan_image, Stitch, TileMode, TilePlan, TileRequest};
use crate::{compile_file, Compiled, Options};
use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub enum RunError {
    /// The spec has errors (rendered diagnostics).
    Spec(String),
    Io(IoError),
    Exec(ExecError),
    /// The request cannot be done as asked (what to do instead is in the text).
    Usage(String),
    /// Something went wrong with one input file.
    Input {
        input: PathBuf,
        error: Box<RunError>,
    },
    /// A directory run processed every input, and some failed (each was reported as it failed).
    SomeFailed {
        failed: usize,
        total: usize,
        written: usize,
        skipped: usize,
    },
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Spec(d) => write!(f, "{d}"),
            RunError::Io(e) => write!(f, "{e}"),
            RunError::Exec(e) => write!(f, "{e}"),
            RunError::Usage(m) => write!(f, "{m}"),
            // I/O errors name their file already; the rest get the input's name in front.
            RunError::Input { input, error } => match error.as_ref() {
                RunError::Io(e) if e.path().is_some() => write!(f, "{e}"),
                other => write!(f, "{}: {other}", input.display()),
            },
            RunError::SomeFailed {
                failed,
                total,
                written,
                skipped,
            } => {
                write!(
                    f,
                    "{failed} of {total} inputs failed (each is named above); {written} output(s) \
                     written"
                )?;
                if *skipped > 0 {
                    write!(f, ", {skipped} skipped (output already there)")?;
                }
                write!(
                    f,
                    "\nhelp: fix or remove the failed inputs, then run again with --skip-existing \
                     to process only the inputs that have no output yet"
                )
            }
        }
    }
}

impl std::error::Error for RunError {}

impl From<IoError> for RunError {
    fn from(e: IoError) -> Self {
        RunError::Io(e)
    }
}

impl From<ExecError> for RunError {
    fn from(e: ExecError) -> Self {
        RunError::Exec(e)
    }
}

impl WeightSource for Weights {
    fn get(&self, name: &str) -> Option<&Tensor> {
        Weights::get(self, name)
    }
}

/// Compiles a spec, failing with its rendered diagnostics if it has errors.
pub fn compile_checked(spec: &Path, input_shape: Option<Vec<i64>>) -> Result<Compiled, RunError> {
    let options = Options {
        input_shape,
        output_layer: None,
    };
    compile_checked_with(spec, &options)
}

/// As [`compile_checked`], with all the compile's options.
pub fn compile_checked_with(spec: &Path, options: &Options) -> Result<Compiled, RunError> {
    let c = compile_file(spec, options, &mut Session::new())
        .map_err(|e| RunError::Usage(format!("cannot read `{}`: {e}", spec.display())))?;
    if c.has_errors() {
        return Err(RunError::Spec(render_plain(&c.sources, &c.diags)));
    }
    Ok(c)
}

/// A spec file, or its text read once (so that later compiles at other input sizes see the same
/// spec even if the file changes; includes are still read from their files).
#[derive(Clone, Copy)]
struct SpecSource<'a> {
    path: &'a Path,
    text: Option<&'a str>,
    /// The layer run as the model's only output (`run --output-layer`).
    output_layer: Option<&'a str>,
}

impl SpecSource<'_> {
    fn compile(&self, input_shape: Option<Vec<i64>>) -> std::io::Result<Compiled> {
        let options = Options {
            input_shape,
            output_layer: self.output_layer.map(str::to_string),
        };
        match self.text {
            Some(text) => Ok(crate::compile_source(
                self.path,
                text.to_string(),
                &options,
                &mut Session::new(),
            )),
            None => compile_file(self.path, &options, &mut Session::new()),
        }
    }

    /// The spec's text: the one held, else the file's.
    fn text(&self) -> Result<String, RunError> {
        match self.text {
            Some(text) => Ok(text.to_string()),
            None => std::fs::read_to_string(self.path).map_err(|e| {
                RunError::Usage(format!("cannot read `{}`: {e}", self.path.display()))
            }),
        }
    }

    /// As [`compile_checked`].
    fn compile_checked(&self, input_shape: Option<Vec<i64>>) -> Result<Compiled, RunError> {
        let c = self
            .compile(input_shape)
            .map_err(|e| RunError::Usage(format!("cannot read `{}`: {e}", self.path.display())))?;
        if c.has_errors() {
            return Err(RunError::Spec(render_plain(&c.sources, &c.diags)));
        }
        Ok(c)
    }
}

/// Every weight tensor the model needs, with its Keras shape.
pub fn expected_weights(c: &Compiled) -> Vec<Expected> {
    c.info
        .keras_order
        .iter()
        // A shared layer's weights are its first call's.
        .filter(|&&id| c.graph.node(id).shares.is_none())
        .flat_map(|&id| {
            let node = c.graph.node(id);
            c.info.layers[id.index()]
                .weights
                .iter()
                .map(move |w| Expected {
                    name: format!("{}/{}", node.name, w.name),
                    shape: w.shape.iter().map(|&d| d as usize).collect(),
                })
        })
        .collect()
}

/// Seeded weights, each variable drawn by the initializer its layer kind declares for it.
pub fn init_weights(c: &Compiled, seed: u64) -> Result<Weights, RunError> {
    let mut rng = seeded_rng(seed);
    let mut weights = Weights::new();
    for &id in &c.info.keras_order {
        let node = c.graph.node(id);
        if node.shares.is_some() {
            continue;
        }
        for w in &c.info.layers[id.index()].weights {
            let shape: Vec<usize> = w.shape.iter().map(|&d| d as usize).collect();
            // Constants of the layer's arguments (Swin's mask and position index).
            let t = match node.op.constant_weight(w.name) {
                Some(values) => Tensor::from_vec(&shape, values).ok_or_else(|| {
                    RunError::Usage(format!(
                        "internal: `{}/{}` has the wrong size",
                        node.name, w.name
                    ))
                })?,
                None => init_tensor(&w.initializer, &shape, &mut rng)?,
            };
            weights.insert(format!("{}/{}", node.name, w.name), t);
        }
    }
    Ok(weights)
}

pub fn write_initial_weights(
    spec: &Path,
    out: &Path,
    seed: u64,
    force: bool,
) -> Result<usize, RunError> {
    let c = compile_checked(spec, None)?;
    let weights = init_weights(&c, seed)?;
    save_weights(out, &weights, force)?;
    Ok(weights.len())
}

/// What to write for each image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OutputKind {
    /// `.npy`: the model's output as f32.
    Probabilities,
    /// `.png`: argmax for several channels, `> threshold` for one; values spread over 0..=255.
    Mask { threshold: f32 },
    /// `.png`: one channel's probability as 8-bit gray.
    ClassProbability { class: usize },
    /// `.npy`/`.tif` with `--labels`: one uint8 label per pixel ([`Samples::Label`]).
    Labels { threshold: f32 },
}

impl OutputKind {
    /// What a streamed `.npy`/`.tif` output stores; `None`: not a streamed kind.
    fn samples(self) -> Option<Samples> {
        match self {
            OutputKind::Probabilities => Some(Samples::Float32),
            OutputKind::Labels { threshold } => Some(Samples::Label { threshold }),
            OutputKind::Mask { .. } | OutputKind::ClassProbability { .. } => None,
        }
    }
}

/// Where to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Cpu,
    Cuda,
    /// The GPU when one is usable, else the CPU.
    Auto,
}

impl Device {
    pub fn parse(s: &str) -> Result<Device, RunError> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" | "gpu" => Ok(Device::Cuda),
            "auto" => Ok(Device::Auto),
            other => Err(RunError::Usage(format!(
                "--device {other}: use cpu, cuda or auto"
            ))),
        }
    }

    /// Picks the concrete device; `cuda` without a usable GPU is an error naming what is missing.
    /// Where a run on this (resolved) device holds its weights.
    pub fn weight_home(self) -> crate::exec::WeightHome {
        match self {
            Device::Cpu | Device::Auto => crate::exec::WeightHome::Cpu,
            Device::Cuda => crate::exec::WeightHome::Cuda,
        }
    }

    pub fn resolve(self) -> Result<Device, RunError> {
        match (self, crate::exec::cuda::cuda_available()) {
            (Device::Cpu, _) | (Device::Auto, Err(_)) => Ok(Device::Cpu),
            (Device::Cuda | Device::Auto, Ok(())) => Ok(Device::Cuda),
            (Device::Cuda, Err(why)) => Err(RunError::Usage(format!(
                "--device cuda: no usable CUDA GPU ({why}); use --device cpu"
            ))),
        }
    }
}

/// A model bound to one backend.
enum Backend<'g> {
    Cpu(CpuModel<'g>),
    Cuda(Box<crate::exec::cuda::CudaModel<'g>>),
}

impl<'g> Backend<'g> {
    fn new(
        device: Device,
        c: &'g Compiled,
        weights: &dyn WeightSource,
        precision: Precision,
        budget: u64,
    ) -> Result<Self, RunError> {
        Ok(match device {
            Device::Cuda => Backend::Cuda(Box::new(
                crate::exec::cuda::CudaModel::new(&c.graph, &c.info, weights, precision)
                    .map_err(|e| RunError::Usage(e.to_string()))?,
            )),
            _ if precision != Precision::F32 => {
                return Err(RunError::Usage(format!(
                    "--precision {}: the CPU executor computes in f32 only; use --device cuda \
                     (with a GPU) or --precision f32",
                    precision.name()
                )))
            }
            _ => {
                let mut model = CpuModel::new(&c.graph, &c.info, weights)?;
                model.memory_limit = budget;
                Backend::Cpu(model)
            }
        })
    }

    fn name(&self) -> &'static str {
        match self {
            Backend::Cpu(_) => "cpu",
            Backend::Cuda(_) => "cuda",
        }
    }

    /// Device memory the backend holds for a batch: activations and weights (CUDA only).
    fn device_bytes(&self, batch: usize) -> Option<u64> {
        match self {
            Backend::Cpu(_) => None,
            Backend::Cuda(m) => Some(m.arena_bytes(batch) + m.weight_bytes()),
        }
    }

    fn run(&self, input: &Tensor) -> Result<Vec<Tensor>, RunError> {
        match self {
            Backend::Cpu(m) => Ok(m.run(input)?),
            Backend::Cuda(m) => m.run(input).map_err(|e| RunError::Usage(e.to_string())),
        }
    }

    fn arena_bytes(&self, batch: usize) -> u64 {
        match self {
            Backend::Cpu(m) => m.plan().arena_bytes(batch),
            Backend::Cuda(m) => m.arena_bytes(batch),
        }
    }
}

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub device: Device,
    pub weights: PathBuf,
    pub input: PathBuf,
    pub output: PathBuf,
    /// Write this output channel's probability as gray (`.png` output only).
    pub class: Option<usize>,
    /// Mask threshold for one-channel outputs (`.png` or `labels`); `None` means 0.5.
    pub threshold: Option<f32>,
    /// A `.npy`/`.tif` output holds uint8 labels instead of probabilities.
    pub labels: bool,
    /// Images (or tiles) per forward pass.
    pub batch: usize,
    /// Replace existing outputs.
    pub force: bool,
    /// Leave inputs whose output already exists alone.
    pub skip_existing: bool,
    pub alpha: AlphaMode,
    pub precision: Precision,
    /// Tiles and the memory budget; `None`: exact tiles within [`default_memory_budget`].
    pub tiling: Option<TileRequest>,
    /// Run only the inputs `K, K + N, K + 2N, ...` (`part_id` K of `num_parts` N) of the
    /// sorted inputs of a directory or list (nnU-Net's `files[K::N]`).
    pub num_parts: usize,
    pub part_id: usize,
    /// Write this layer's output instead of the model's (first) output.
    pub output_layer: Option<String>,
}

/// The list file `input` names: `@list.txt` (any name after the `@`) or a path ending in
/// `.txt`.
fn list_file(input: &Path) -> Option<PathBuf> {
    let text = input.to_str()?;
    match text.strip_prefix('@') {
        Some(rest) => Some(PathBuf::from(rest)),
        None => input
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("txt"))
            .then(|| input.to_path_buf()),
    }
}

/// The inputs a list file names, one path a line (blank lines and `#` comments skipped),
/// relative to the current directory as a shell would take them.
fn list_inputs(list: &Path) -> Result<Vec<PathBuf>, RunError> {
    let text = std::fs::read_to_string(list)
        .map_err(|e| RunError::Usage(format!("cannot read the list `{}`: {e}", list.display())))?;
    let files: Vec<PathBuf> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(PathBuf::from)
        .collect();
    if files.is_empty() {
        return Err(RunError::Usage(format!(
            "the list `{}` names no input (one path a line)",
            list.display()
        )));
    }
    Ok(files)
}

/// The memory budget when none is given: 90% of the GPU's free memory when the run goes to
/// a GPU, else half of the memory Linux reports available (MemAvailable).
pub fn default_memory_budget(device: Device) -> u64 {
    let gpu = match device.resolve() {
        Ok(Device::Cuda) => crate::exec::cuda::free_device_memory(),
        Ok(Device::Cpu | Device::Auto) | Err(_) => None,
    };
    match gpu {
        Some(free) => free / 10 * 9,
        None => crate::train::available_memory() / 2,
    }
}

/// What to do with the alpha channel of an image that has one (gray+alpha, RGBA).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AlphaMode {
    /// Alpha is a channel like the others: a model taking 2 (gray+alpha) or 4 (RGBA) channels
    /// gets it, and any other model refuses the image, saying to use `Drop`.
    #[default]
    Keep,
    /// Remove the alpha channel before the model sees the image.
    Drop,
}

/// What [`run`] tells its caller while it works.
#[derive(Debug)]
pub enum RunEvent<'a> {
    /// `done` of `total` inputs are finished (written, skipped or failed); `input` last.
    Progress {
        input: &'a Path,
        done: usize,
        total: usize,
    },
    /// `done` of the `total` tiles of the current input have been run.
    Tiles { done: usize, total: usize },
    /// An input of a directory run failed; the run goes on with the next one.
    Failed { error: &'a RunError },
    /// An input was not run because its output exists (`skip_existing`).
    Skipped { input: &'a Path, output: &'a Path },
    /// Something the user should know about the whole run, said once before it starts.
    Note { text: &'a str },
}

/// What a run did, for `--verbose`.
#[derive(Debug, Clone, Default)]
pub struct RunReport {
    /// The backend that ran: "cpu" or "cuda".
    pub device: &'static str,
    pub files: usize,
    /// Outputs written.
    pub written: usize,
    /// Inputs left alone because their output exists (`skip_existing`).
    pub skipped: usize,
    pub forward_passes: usize,
    pub arena_bytes: u64,
    /// Device memory for activations and weights (CUDA only).
    pub device_bytes: Option<u64>,
    pub notes: Vec<String>,
}

/// One input file and the file its output goes to.
struct Job {
    input: PathBuf,
    output: PathBuf,
}

/// `W x H` sizes everywhere a size is printed, labelled, as `unetc tiles --image` takes them.
fn size_wh(h: usize, w: usize) -> String {
    format!("{w}x{h} (W x H)")
}

/// Runs a spec over one input file or a directory of them.
///
/// What can be checked before the first forward pass is checked first: the options against the
/// model, which outputs exist already, and the weights. With one input its failure is the error.
/// In a directory run each failing input is reported through `events` as it fails, the others
/// are still run, and the result is [`RunError::SomeFailed`].
pub fn run(
    spec: &Path,
    opts: &RunOptions,
    events: &mut dyn FnMut(RunEvent<'_>),
) -> Result<RunReport, RunError> {
    if opts.force && opts.skip_existing {
        return Err(RunError::Usage(
            "--force replaces existing outputs and --skip-existing leaves them alone: give one \
             of them"
                .into(),
        ));
    }
    let device = opts.device.resolve()?;
    let base = compile_checked_with(
        spec,
        &Options {
            input_shape: None,
            output_layer: opts.output_layer.clone(),
        },
    )?;
    // `run` writes one output per input: the model's first. Say so where there are more.
    if let [first, rest @ ..] = &base.graph.outputs[..] {
        if !rest.is_empty() {
            let names: Vec<&str> = rest
                .iter()
                .map(|&id| base.graph.node(id).name.as_str())
                .collect();
            let text = format!(
                "the model has {} outputs; `run` writes the first, `{}`, and not {} (choose \
                 one with --output-layer NAME)",
                rest.len() + 1,
                base.graph.node(*first).name,
                names.join(", ")
            );
            events(RunEvent::Note { text: &text });
        }
    }
    // A directory or a list file: many inputs, one output directory.
    let to_dir = opts.input.is_dir() || list_file(&opts.input).is_some();
    if (opts.num_parts, opts.part_id) != (1, 0) && !to_dir {
        return Err(RunError::Usage(
            "--num-parts and --part-id split the inputs of a directory or a list file; with one \
             input file they would do nothing"
                .into(),
        ));
    }
    if opts.num_parts == 0 || opts.part_id >= opts.num_parts {
        return Err(RunError::Usage(format!(
            "--part-id {} of --num-parts {}: give N >= 1 and K in 0..N (K = 0 .. {})",
            opts.part_id,
            opts.num_parts,
            opts.num_parts.saturating_sub(1)
        )));
    }
    let model_is_volume = base.info.layers[base.graph.inputs[0].index()]
        .shape
        .as_ref()
        .is_some_and(|s| s.len() == 4);
    let kind = output_kind(&base, opts, to_dir.then_some(model_is_volume))?;
    let jobs = plan_jobs(opts, to_dir.then_some(model_is_volume))?;
    if !opts.force && !opts.skip_existing {
        refuse_existing_outputs(&jobs, opts, to_dir)?;
    }
    let model_channels = model_input_channels(&base)?;
    // The weights file is the whole model's: layers past a chosen output keep theirs.
    let weights = match &opts.output_layer {
        Some(_) => load_weights(
            &opts.weights,
            &expected_weights(&compile_checked(spec, None)?),
        )?,
        None => load_weights(&opts.weights, &expected_weights(&base))?,
    };
    if to_dir {
        std::fs::create_dir_all(&opts.output).map_err(|e| {
            RunError::Usage(format!(
                "cannot create output directory `{}`: {e}",
                opts.output.display()
            ))
        })?;
    }
    let mut report = RunReport {
        files: jobs.len(),
        ..RunReport::default()
    };
    let context = RunContext {
        spec,
        base: &base,
        weights: &weights,
        device,
        model_channels,
        model_is_volume,
        kind,
    };
    let mut tiling = opts
        .tiling
        .clone()
        .unwrap_or_else(|| TileRequest::new(default_memory_budget(device)));
    tiling.weights_on = device.weight_home();
    tiling.output_layer = opts.output_layer.clone();
    let mut failed = 0;
    for (i, job) in jobs.iter().enumerate() {
        if opts.skip_existing && job.output.symlink_metadata().is_ok() {
            report.skipped += 1;
            events(RunEvent::Skipped {
                input: &job.input,
                output: &job.output,
            });
        } else {
            let notes_before = report.notes.len();
            match run_one(&context, job, opts, &tiling, &mut report, events) {
                Ok(()) => report.written += 1,
                Err(error) => {
                    let error = RunError::Input {
                        input: job.input.clone(),
                        error: Box::new(error),
                    };
                    if !to_dir {
                        return Err(error);
                    }
                    failed += 1;
                    events(RunEvent::Failed { error: &error });
                }
            }
            // With several inputs, each note says which one it is about.
            if to_dir {
                for note in &mut report.notes[notes_before..] {
                    *note = format!("{}: {note}", job.input.display());
                }
            }
        }
        events(RunEvent::Progress {
            input: &job.input,
            done: i + 1,
            total: jobs.len(),
        });
    }
    if failed > 0 {
        return Err(RunError::SomeFailed {
            failed,
            total: jobs.len(),
            written: report.written,
            skipped: report.skipped,
        });
    }
    Ok(report)
}

/// What every input of a run shares.
struct RunContext<'a> {
    spec: &'a Path,
    base: &'a Compiled,
    weights: &'a Weights,
    device: Device,
    model_channels: usize,
    /// The model takes `(D, H, W, C)` volumes.
    model_is_volume: bool,
    kind: OutputKind,
}

/// Reads, runs and writes one input.
fn run_one(
    context: &RunContext<'_>,
    job: &Job,
    opts: &RunOptions,
    tiling: &TileRequest,
    report: &mut RunReport,
    events: &mut dyn FnMut(RunEvent<'_>),
) -> Result<(), RunError> {
    let predict_with = Predict {
        spec: SpecSource {
            path: context.spec,
            text: None,
            output_layer: opts.output_layer.as_deref(),
        },
        base: context.base,
        bound: None,
        weights: context.weights,
        batch: opts.batch,
        device: context.device,
        precision: opts.precision,
        tiling,
    };
    // Blended tiles are summed into the whole output, so a blend run is not streamed.
    let blend = match tiling.mode {
        TileMode::Blend => true,
        TileMode::Exact => false,
    };
    let streamed_kind = context.kind.samples().is_some();
    // Only an image model's input is streamed tile by tile (tokens and vectors run whole).
    let image_model = model_input_shape(context.base).len() == 3;
    if streamed_kind && image_model && !blend {
        if let Some(mut source) = open_streamed(&job.input, opts.alpha, context, tiling, report)? {
            let [n, h, w, _] = source.shape();
            let model_in = model_input_shape(context.base);
            if model_in.len() != 3 || model_in[..2] != [h, w] {
                return predict_streamed(
                    &predict_with,
                    source.as_mut(),
                    (&job.output, context.kind),
                    opts.force,
                    report,
                    &mut |done, total| events(RunEvent::Tiles { done, total }),
                );
            }
            // The model's own size: small; run as a whole (a valid net then gives its own,
            // smaller output, as for any input of that size).
            let mut input = Tensor::zeros(&source.shape());
            for i in 0..n {
                let item = input.item_len();
                source.read_region(i, 0..h, 0..w, &mut input.data[i * item..(i + 1) * item])?;
            }
            let result = predict(&predict_with, &input, report, &mut |done, total| {
                events(RunEvent::Tiles { done, total })
            })?;
            return write_output(&job.output, &result, context.kind, opts.force);
        }
    }
    if context.model_is_volume {
        if let Some((mut source, shape, header)) = open_volume(&job.input, report)? {
            let [n, d, h, w, c] = shape;
            let model_in = model_input_shape(context.base);
            match plan_volume_run(&predict_with, shape, &model_in, report)? {
                VolumeRun::Whole => {
                    // The model's own size: read whole and run as it is.
                    let mut input = Tensor::zeros(&[n, d, h, w, c]);
                    for (plane, values) in input.data.chunks_mut(h * w * c).enumerate() {
                        source.read_region(plane, 0..h, 0..w, values)?;
                    }
                    let result = forward(
                        context.base,
                        None,
                        context.weights,
                        &input,
                        opts.batch,
                        (context.device, opts.precision, tiling.budget),
                        report,
                    )?;
                    return write_result(job, &input, &result, header, context.kind, opts, report);
                }
                VolumeRun::Tiled(tiled) => {
                    let (plan, sized) = &*tiled;
                    let k = model_output_shape(sized)?.last().copied().unwrap_or(1);
                    let mut sink = create_volume_sink(
                        &job.output,
                        [n, d, h, w, k],
                        header,
                        opts.force,
                        report,
                    )?;
                    run_volume_tiles(
                        &predict_with,
                        (plan, sized),
                        shape,
                        (source.as_mut(), sink.as_mut()),
                        report,
                        &mut |done, total| events(RunEvent::Tiles { done, total }),
                    )?;
                    return Ok(sink.finish()?);
                }
            }
        }
    }
    let (input, header) = if crate::io::nifti::is_nifti(&job.input) {
        if !context.model_is_volume {
            return Err(RunError::Usage(format!(
                "`{}` is a NIfTI volume, but this model takes images (H, W, C)",
                job.input.display()
            )));
        }
        let (tensor, header) = crate::io::nifti::read_nifti(&job.input)?;
        report.notes.push(format!(
            "NIfTI volume {}x{}x{} (D x H x W = k, j, i), {} channel(s)",
            tensor.shape[1], tensor.shape[2], tensor.shape[3], tensor.shape[4]
        ));
        (tensor, Some(header))
    } else {
        let input = read_input(
            &job.input,
            opts.alpha,
            (context.model_channels, context.model_is_volume),
            &mut report.notes,
        )?;
        (input, None)
    };
    let result = predict(&predict_with, &input, report, &mut |done, total| {
        events(RunEvent::Tiles { done, total })
    })?;
    write_result(job, &input, &result, header, context.kind, opts, report)
}

/// The output of a model whose input is not an image (tokens `[T, F]`, a vector `[F]`, such as
/// UNETR's patches): the array is a batch of such items, run whole (nothing to tile).
fn predict_arrays(
    p: &Predict<'_>,
    input: &Tensor,
    model_in: &[usize],
    report: &mut RunReport,
) -> Result<Tensor, RunError> {
    // `read_npy` takes a rank-3 array for one HWC image: its leading 1 goes again.
    let mut shape = input.shape.clone();
    while shape.len() > model_in.len() + 1 && shape[0] == 1 {
        shape.remove(0);
    }
    let stored = shape.clone();
    if shape.len() == model_in.len() {
        shape.insert(0, 1);
    }
    if shape.len() != model_in.len() + 1 || shape[1..] != *model_in || shape[0] == 0 {
        return Err(RunError::Usage(format!(
            "the input has shape {stored:?}; this model takes arrays of shape (N, {}) (its \
             input is not an image)",
            model_in
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    if p.tiling.tile.is_some() || p.tiling.tile_3d.is_some() {
        return Err(RunError::Usage(
            "--tile: this model's input is not an image, so it is run whole".into(),
        ));
    }
    let items = Tensor {
        shape,
        data: input.data.clone(),
    };
    forward(
        p.base,
        p.bound,
        p.weights,
        &items,
        p.batch,
        (p.device, p.precision, p.tiling.budget),
        report,
    )
}

/// Writes the output of a run held in memory: NIfTI (with `header`'s affine), or as `kind` says.
fn write_result(
    job: &Job,
    input: &Tensor,
    result: &Tensor,
    header: Option<crate::io::nifti::NiftiHeader>,
    kind: OutputKind,
    opts: &RunOptions,
    report: &mut RunReport,
) -> Result<(), RunError> {
    if crate::io::nifti::is_nifti(&job.output) {
        return write_nifti_output(&job.output, input, result, header, opts.force, report);
    }
    write_output(&job.output, result, kind, opts.force)
}

/// A volume input streamed from its file: an f32 `.npy` of rank 4 (DHWC) or 5 (NDHWC) through a
/// memory map, or a NIfTI volume (a `.nii` mapped; a `.nii.gz` decompressed into a temporary
/// file, then mapped). With its `(N, D, H, W, C)` shape and, for NIfTI, its header. `None` when
/// the input is read whole instead (other `.npy` dtypes).
#[allow(clippy::type_complexity)]
fn open_volume(
    input: &Path,
    report: &mut RunReport,
) -> Result<
    Option<(
        Box<dyn RegionSource + Send>,
        [usize; 5],
        Option<crate::io::nifti::NiftiHeader>,
    )>,
    RunError,
> {
    use crate::report::volume::dhw;
    if crate::io::nifti::is_nifti(input) {
        let source = crate::io::nifti::NiftiSource::open(input)?;
        let [d, h, w, c] = source.volume_shape();
        report.notes.push(format!(
            "NIfTI volume {} (D x H x W = k, j, i), {c} channel(s), {}",
            dhw([d, h, w]),
            if crate::io::nifti::is_gz(input) {
                "decompressed to a temporary file and memory-mapped"
            } else {
                "memory-mapped"
            }
        ));
        let header = source.header().clone();
        return Ok(Some((Box::new(source), [1, d, h, w, c], Some(header))));
    }
    let npy = input
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npy"));
    if !npy {
        return Ok(None);
    }
    let Some(source) = NpySource::open_volume(input)? else {
        return Ok(None);
    };
    let Some(shape @ [n, d, h, w, c]) = source.volume_shape() else {
        return Ok(None);
    };
    report.notes.push(format!(
        "input {} (D x H x W), {c} channel(s){}, memory-mapped",
        dhw([d, h, w]),
        if n > 1 {
            format!(", {n} volumes")
        } else {
            String::new()
        }
    ));
    Ok(Some((Box::new(source), shape, None)))
}

/// The file a tiled volume run writes as tiles finish: `.npy` (NDHWC float32) or `.nii`/
/// `.nii.gz` (one volume, with `header`'s affine; a blank one for a non-NIfTI input, said in a
/// note), both through a memory map.
fn create_volume_sink(
    output: &Path,
    [n, d, h, w, k]: [usize; 5],
    header: Option<crate::io::nifti::NiftiHeader>,
    force: bool,
    report: &mut RunReport,
) -> Result<Box<dyn RegionSink + Send>, RunError> {
    if crate::io::nifti::is_nifti(output) {
        if n != 1 {
            return Err(RunError::Usage(format!(
                "`{}`: {n} volumes cannot go into one NIfTI file; write a .npy",
                output.display()
            )));
        }
        let header = header.unwrap_or_else(|| {
            report.notes.push(
                "the input is not NIfTI: the output has unit spacing and no affine (qform/sform \
                 codes 0)"
                    .into(),
            );
            crate::io::nifti::NiftiHeader::blank()
        });
        let sink = crate::io::nifti::NiftiSink::create(output, [d, h, w, k], &header, force)?;
        return Ok(Box::new(sink));
    }
    let npy = output
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npy"));
    if !npy {
        return Err(RunError::Usage(format!(
            "`{}`: a volume model's output is a .npy (N, D, H, W, C) or a .nii/.nii.gz",
            output.display()
        )));
    }
    let sink = NpySink::create(output, &[n, d, h, w, k], Samples::Float32, force)?;
    Ok(Box::new(sink))
}

/// Writes a volume model's output as NIfTI with the input's affine and spacing (a blank header
/// for a non-NIfTI input, said in a note). The output must cover the input's voxels one to one,
/// or the affine would not hold.
fn write_nifti_output(
    path: &Path,
    input: &Tensor,
    result: &Tensor,
    header: Option<crate::io::nifti::NiftiHeader>,
    force: bool,
    report: &mut RunReport,
) -> Result<(), RunError> {
    let spatial = |t: &Tensor| -> Option<Vec<usize>> {
        match t.shape.len() {
            5 => Some(t.shape[1..4].to_vec()),
            4 => Some(t.shape[..3].to_vec()),
            _ => None,
        }
    };
    let (si, so) = (spatial(input), spatial(result));
    if si.is_none() || si != so {
        return Err(RunError::Usage(format!(
            "the output has shape {:?}, not the input's voxels {:?} (D x H x W): a NIfTI output \
             keeps the input's affine, which would not hold; write a .npy",
            result.shape,
            si.unwrap_or_default()
        )));
    }
    let header = header.unwrap_or_else(|| {
        report.notes.push(
            "the input is not NIfTI: the output has unit spacing and no affine (qform/sform \
             codes 0)"
                .into(),
        );
        crate::io::nifti::NiftiHeader::blank()
    });
    Ok(crate::io::nifti::write_nifti(path, result, &header, force)?)
}

/// A source that streams `input` (an f32 `.npy` through a memory map, or a TIFF a chunk at a
/// time), with its channels checked against the model; `None` when the input is read whole
/// instead (other `.npy` dtypes, PNG; a TIFF the streaming reader does not handle but the
/// whole-image reader may, said in a note).
fn open_streamed(
    input: &Path,
    alpha: AlphaMode,
    context: &RunContext<'_>,
    tiling: &TileRequest,
    report: &mut RunReport,
) -> Result<Option<Box<dyn RegionSource + Send>>, RunError> {
    let ext = input
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let source: Box<dyn RegionSource + Send> = match ext.as_deref() {
        Some("npy") => match NpySource::open(input)? {
            Some(s) => {
                let [n, h, w, c] = s.shape();
                report.notes.push(format!(
                    "input {}, {c} channel(s){}, memory-mapped",
                    size_wh(h, w),
                    if n > 1 {
                        format!(", {n} images")
                    } else {
                        String::new()
                    }
                ));
                Box::new(s)
            }
            None => return Ok(None),
        },
        Some("tif" | "tiff") => {
            // Decoded chunks kept for neighbouring tiles: an eighth of the budget, 4-256 MiB.
            let cache = (tiling.budget / 8).clamp(4 << 20, 256 << 20) as usize;
            let mut s = match TiffSource::open(input, cache) {
                Ok(s) => s,
                Err(why) => {
                    // Read whole if the whole-image reader can; else its refusal stands.
                    let whole = crate::io::image::read_image_with_layout(input);
                    return match whole {
                        Ok(_) => {
                            report.notes.push(format!("not streamed: {why}"));
                            Ok(None)
                        }
                        Err(_) => Err(RunError::Io(why)),
                    };
                }
            };
            if image_channels(s.layout(), alpha, context.model_channels, &mut report.notes)? {
                s.drop_alpha();
            }
            let [_, h, w, c] = s.shape();
            report.notes.push(format!(
                "input {}, {c} channel(s), read from the TIFF a chunk at a time",
                size_wh(h, w)
            ));
            Box::new(s)
        }
        _ => return Ok(None),
    };
    Ok(Some(source))
}

/// The output file for `[n, h, w, k]` probabilities, written as tiles finish: `.npy` through a
/// memory map, `.tif`/`.tiff` as a tiled float32 BigTIFF.
fn create_sink(
    output: &Path,
    shape: [usize; 4],
    kind: OutputKind,
    force: bool,
) -> Result<Box<dyn RegionSink + Send>, RunError> {
    let ext = output
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let samples = kind.samples().ok_or_else(|| {
        RunError::Usage(format!(
            "`{}`: internal error: a .png output is not streamed",
            output.display()
        ))
    })?;
    match ext.as_deref() {
        Some("tif" | "tiff") => Ok(Box::new(TiffSink::create(output, shape, samples, force)?)),
        Some("npy") => Ok(Box::new(NpySink::create(output, &shape, samples, force)?)),
        _ => Err(RunError::Usage(format!(
            "`{}`: streamed outputs are .npy or .tif",
            output.display()
        ))),
    }
}

/// The model's input shape without the batch axis.
fn model_input_shape(c: &Compiled) -> Vec<usize> {
    c.info.layers[c.graph.inputs[0].index()]
        .shape
        .iter()
        .flatten()
        .map(|&d| d as usize)
        .collect()
}

/// [`predict`] from a streamed source into `output`, tile by tile: neither the input nor the
/// output is ever held whole, only a batch of tiles and what the source caches.
fn predict_streamed(
    p: &Predict<'_>,
    source: &mut (dyn RegionSource + Send),
    (output, kind): (&Path, OutputKind),
    force: bool,
    report: &mut RunReport,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(), RunError> {
    let model_in = model_input_shape(p.base);
    let model_out = model_output_shape(p.base)?;
    let [n, h, w, c] = source.shape();
    if n == 0 || h == 0 || w == 0 {
        return Err(RunError::Usage(format!(
            "the input has shape {:?}: it is empty",
            [n, h, w, c]
        )));
    }
    if model_in.len() != 3 || model_out.len() != 3 {
        return Err(RunError::Usage(format!(
            "the input is {} but the model takes exactly {:?} (its output is not an image, so it \
             cannot be tiled)",
            size_wh(h, w),
            model_in
        )));
    }
    if c != model_in[2] {
        return Err(RunError::Usage(format!(
            "the input has {c} channel(s) but the model takes {} (its input shape is {}x{}x{} \
             (H x W x C))",
            model_in[2], model_in[0], model_in[1], model_in[2]
        )));
    }
    let batch = p.batch.max(1);
    let (plan, sized) = plan_tiles(p, &model_in, [n, h, w, c], batch, report)?;
    match plan.stitch {
        Stitch::Blend(_) => {
            return Err(RunError::Usage(
                "blended tiles are averaged into the whole output, which a streamed run does \
                 not hold; use exact tiles (the default --tile-mode exact)"
                    .into(),
            ))
        }
        Stitch::Whole | Stitch::OverlapTile | Stitch::Exact => {}
    }
    let model = Backend::new(p.device, &sized, p.weights, p.precision, p.tiling.budget)?;
    let (th, tw) = plan.tile_in;
    let (oh, ow) = plan.tile_out;
    let k = model_output_shape(&sized)?.last().copied().unwrap_or(1);
    let mut sink = create_sink(output, [n, h, w, k], kind, force)?;
    let plan = &plan;
    pipeline(
        &model,
        tile_positions(plan, n),
        batch,
        &[th, tw, c],
        (source, sink.as_mut()),
        &|source, chunk, tiles, scratch| fill_tiles(source, plan, chunk, tiles, scratch),
        &|sink, chunk, result| {
            for (t, &(i, row, col)) in chunk.iter().enumerate() {
                let ((y0, y1), (x0, x1)) = (kept(row, h), kept(col, w));
                if x0 >= x1 {
                    continue;
                }
                for oy in y0..y1 {
                    let y = (row.offset + oy as isize) as usize;
                    let x = (col.offset + x0 as isize) as usize;
                    let src = ((t * oh + oy) * ow + x0) * k;
                    sink.write_run(i, y, x, &result.data[src..src + (x1 - x0) * k])?;
                }
            }
            Ok(())
        },
        report,
        progress,
    )?;
    Ok(sink.finish()?)
}

/// Cuts tiles into a batch's input tensor: `(source, tile positions, tiles, scratch)`.
type FillTiles<'f, P> = dyn Fn(&mut dyn RegionSource, &[P], &mut Tensor, &mut Vec<f32>) -> Result<(), RunError>
    + Sync
    + 'f;
/// Writes the kept outputs of a batch's tiles: `(sink, tile positions, model output)`.
type WriteTiles<'f, P> =
    dyn Fn(&mut dyn RegionSink, &[P], &Tensor) -> Result<(), IoError> + Sync + 'f;

/// Runs `model` on every tile at `positions`, in batches of `batch` tiles of `tile` (the shape
/// of one tile without the batch axis), from `source` into `sink`; images and volumes alike.
/// Three stages overlap: a reader thread cuts the next batch of tiles from the source while
/// this thread runs the model on the current one and a writer thread writes the previous one's
/// kept outputs. Rendezvous channels (capacity 0): at most two batches of tiles and two of
/// outputs exist at once. The first error in pipeline order (reading, computing, writing) is
/// the result.
#[allow(clippy::too_many_arguments)]
fn pipeline<P: Copy + Send + Sync>(
    model: &Backend<'_>,
    positions: impl Iterator<Item = P>,
    batch: usize,
    tile: &[usize],
    (source, sink): (&mut (dyn RegionSource + Send), &mut (dyn RegionSink + Send)),
    fill: &FillTiles<'_, P>,
    write: &WriteTiles<'_, P>,
    report: &mut RunReport,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(), RunError> {
    let batch = batch.max(1);
    let (positions, total) = {
        let all: Vec<P> = positions.collect();
        let total = all.len();
        (all, total)
    };
    let (written, outcome) = std::thread::scope(|scope| {
        let (tiles_tx, tiles_rx) =
            std::sync::mpsc::sync_channel::<Result<(Vec<P>, Tensor), RunError>>(0);
        let (out_tx, out_rx) = std::sync::mpsc::sync_channel::<(Vec<P>, Tensor)>(0);
        let positions = &positions;
        let reader = scope.spawn(move || {
            let mut scratch = Vec::new();
            for chunk in positions.chunks(batch) {
                let mut shape = vec![chunk.len()];
                shape.extend_from_slice(tile);
                let mut tiles = Tensor::zeros(&shape);
                let item =
                    fill(source, chunk, &mut tiles, &mut scratch).map(|()| (chunk.to_vec(), tiles));
                let failed = item.is_err();
                // A send fails when the compute stage has stopped: stop too.
                if tiles_tx.send(item).is_err() || failed {
                    break;
                }
            }
        });
        let writer = scope.spawn(move || -> Result<(), RunError> {
            for (chunk, result) in out_rx {
                write(sink, &chunk, &result)?;
                sink.release();
            }
            Ok(())
        });
        let mut outcome: Result<(), RunError> = Ok(());
        let mut done = 0;
        for item in tiles_rx.iter() {
            let (chunk, tiles) = match item {
                Ok(x) => x,
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            };
            report.arena_bytes = report.arena_bytes.max(model.arena_bytes(chunk.len()));
            if let Some(d) = model.device_bytes(chunk.len()) {
                report.device_bytes = Some(report.device_bytes.unwrap_or(0).max(d));
            }
            report.device = model.name();
            report.forward_passes += 1;
            let result = match model.run(&tiles) {
                Ok(mut r) => r.remove(0),
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            };
            done += chunk.len();
            // A send fails when the writer has stopped on an error, which `join` gives.
            if out_tx.send((chunk, result)).is_err() {
                break;
            }
            progress(done, total);
        }
        // Unblock the other stages, then collect them.
        drop(tiles_rx);
        drop(out_tx);
        let stage_failed =
            |what: &str| RunError::Usage(format!("internal error: the {what} thread panicked"));
        let written = writer
            .join()
            .unwrap_or_else(|_| Err(stage_failed("writer")));
        let read = reader.join().map_err(|_| stage_failed("reader"));
        (written, outcome.and(read))
    });
    outcome?;
    written
}

impl RunOptions {
    /// The kind of file a directory run writes for an image or `.npy` input: `.npy` when the
    /// output directory's name ends in `.npy` or the model takes volumes, else `.png`. (NIfTI
    /// inputs give NIfTI outputs: [`output_name`].)
    fn output_extension(&self, volume_model: bool) -> &'static str {
        if volume_model || self.output.extension().is_some_and(|e| e == "npy") {
            "npy"
        } else {
            "png"
        }
    }
}

/// The file name a directory run writes for `input`: a NIfTI volume's name as it is (`.nii` or
/// `.nii.gz`: the output keeps its affine), else the input's stem with `extension`.
fn output_name(input: &Path, extension: &str) -> std::ffi::OsString {
    if crate::io::nifti::is_nifti(input) {
        if let Some(name) = input.file_name() {
            return name.to_os_string();
        }
    }
    // `stem.ext`, not `with_extension`, which would cut `a.1` and `a.2` both to `a`.
    let mut name = input.file_stem().unwrap_or_default().to_os_string();
    name.push(".");
    name.push(extension);
    name
}

/// Each input with its output path; two inputs that would write the same output, or an output
/// that is its own input, are errors. `to_dir`: a directory run, for a volume model or not.
fn plan_jobs(opts: &RunOptions, to_dir: Option<bool>) -> Result<Vec<Job>, RunError> {
    let jobs = if let Some(volume_model) = to_dir {
        jobs_for_directory(opts, volume_model)?
    } else {
        vec![Job {
            input: opts.input.clone(),
            output: opts.output.clone(),
        }]
    };
    for job in &jobs {
        let same_file = match (job.input.canonicalize(), job.output.canonicalize()) {
            (Ok(input), Ok(output)) => input == output,
            _ => false,
        };
        if same_file {
            return Err(RunError::Usage(format!(
                "`{}` would be written over its own input; write the output somewhere else",
                job.output.display()
            )));
        }
    }
    Ok(jobs)
}

fn jobs_for_directory(opts: &RunOptions, volume_model: bool) -> Result<Vec<Job>, RunError> {
    let mut inputs = match list_file(&opts.input) {
        Some(list) => list_inputs(&list)?,
        None => directory_inputs(&opts.input)?,
    };
    inputs.sort();
    // nnU-Net's split: files[K::N] of the sorted names.
    let inputs: Vec<PathBuf> = inputs
        .into_iter()
        .skip(opts.part_id)
        .step_by(opts.num_parts.max(1))
        .collect();
    let mut jobs: Vec<Job> = Vec::with_capacity(inputs.len());
    let mut by_output: std::collections::HashMap<PathBuf, usize> = Default::default();
    for input in inputs {
        let output = opts
            .output
            .join(output_name(&input, opts.output_extension(volume_model)));
        if let Some(&earlier) = by_output.get(&output) {
            return Err(RunError::Usage(format!(
                "`{}` and `{}` would both be written to `{}`; rename one of them or move it to \
                 another directory",
                jobs[earlier].input.display(),
                input.display(),
                output.display()
            )));
        }
        by_output.insert(output.clone(), jobs.len());
        jobs.push(Job { input, output });
    }
    Ok(jobs)
}

/// Without `--force` or `--skip-existing`, outputs that exist stop the run before any work.
fn refuse_existing_outputs(jobs: &[Job], opts: &RunOptions, to_dir: bool) -> Result<(), RunError> {
    let existing: Vec<&Path> = jobs
        .iter()
        .map(|j| j.output.as_path())
        .filter(|p| p.symlink_metadata().is_ok())
        .collect();
    let Some(first) = existing.first() else {
        return Ok(());
    };
    if !to_dir {
        return Err(RunError::Io(IoError::Exists {
            path: first.to_path_buf(),
        }));
    }
    let shown: Vec<String> = existing
        .iter()
        .take(3)
        .map(|p| format!("`{}`", p.display()))
        .collect();
    let more = if existing.len() > shown.len() {
        ", ..."
    } else {
        ""
    };
    Err(RunError::Usage(format!(
        "{} of the {} outputs exist already in `{}` ({}{more}); use --force to replace them, \
         or --skip-existing to run only the inputs that have no output yet",
        existing.len(),
        jobs.len(),
        opts.output.display(),
        shown.join(", ")
    )))
}

/// The `.png`, `.tif`/`.tiff`, `.npy` and `.nii`/`.nii.gz` files of an input directory, in
/// name order.
fn directory_inputs(input: &Path) -> Result<Vec<PathBuf>, RunError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(input)
        .map_err(|e| RunError::Usage(format!("cannot list `{}`: {e}", input.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            crate::io::nifti::is_nifti(p)
                || matches!(
                    p.extension()
                        .and_then(|e| e.to_str())
                        .map(str::to_ascii_lowercase)
                        .as_deref(),
                    Some("png" | "tif" | "tiff" | "npy")
                )
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(RunError::Usage(format!(
            "`{}` holds no .png, .tif, .npy or .nii/.nii.gz files",
            input.display()
        )));
    }
    Ok(files)
}

/// The channel count of the model's input (the last axis of its `(H, W, C)` shape).
fn model_input_channels(c: &Compiled) -> Result<usize, RunError> {
    c.info.layers[c.graph.inputs[0].index()]
        .shape
        .as_ref()
        .and_then(|s| s.last())
        .map(|&d| d as usize)
        .ok_or_else(|| RunError::Usage("the model's input has no shape".into()))
}

/// The model's output shape without the batch axis.
fn model_output_shape(c: &Compiled) -> Result<Vec<usize>, RunError> {
    let out_id = *c
        .graph
        .outputs
        .first()
        .ok_or_else(|| RunError::Usage("the model has no output".into()))?;
    Ok(c.info.layers[out_id.index()]
        .shape
        .iter()
        .flatten()
        .map(|&d| d as usize)
        .collect())
}

/// Reads an input. Images keep every channel they store unless `alpha` says to drop alpha, and
/// must then have the model's channel count: nothing is converted silently.
fn read_input(
    path: &Path,
    alpha: AlphaMode,
    (model_channels, model_is_volume): (usize, bool),
    notes: &mut Vec<String>,
) -> Result<Tensor, RunError> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let tensor = match ext.as_deref() {
        Some("npy") => crate::io::npy::read_npy(path)?,
        Some("png" | "tif" | "tiff") => {
            let (tensor, layout) = crate::io::image::read_image_with_layout(path)?;
            fit_image_channels(tensor, layout, alpha, model_channels, notes)?
        }
        _ => {
            return Err(RunError::Usage(
                "inputs are .npy, .png, .tif or .nii/.nii.gz files".to_string(),
            ))
        }
    };
    // (A volume model's arrays are described by `predict_volume`.)
    if let (&[n, h, w, c], false) = (&tensor.shape[..], model_is_volume) {
        notes.push(format!(
            "input {}, {c} channel(s){}",
            size_wh(h, w),
            if n > 1 {
                format!(", {n} images")
            } else {
                String::new()
            }
        ));
    }
    Ok(tensor)
}

/// Applies `--alpha` and checks the image's channels against the model's, with a message that
/// says what the image is and what to do.
fn fit_image_channels(
    tensor: Tensor,
    layout: ChannelLayout,
    alpha: AlphaMode,
    model_channels: usize,
    notes: &mut Vec<String>,
) -> Result<Tensor, RunError> {
    if image_channels(layout, alpha, model_channels, notes)? {
        Ok(drop_last_channel(&tensor))
    } else {
        Ok(tensor)
    }
}

/// Whether to drop an image's alpha channel (`--alpha drop`), after checking that its channels
/// then are the model's; the error says what the image is and what to do.
fn image_channels(
    layout: ChannelLayout,
    alpha: AlphaMode,
    model_channels: usize,
    notes: &mut Vec<String>,
) -> Result<bool, RunError> {
    let (drop, layout) = match alpha {
        AlphaMode::Drop if layout.has_alpha() => {
            notes.push(format!(
                "{} image: alpha channel dropped (--alpha drop)",
                layout.name()
            ));
            (true, layout.without_alpha())
        }
        AlphaMode::Drop | AlphaMode::Keep => (false, layout),
    };
    let channels = layout.channels();
    if channels == model_channels {
        return Ok(drop);
    }
    let what = format!(
        "is {} image: {channels} channel(s) but the model takes {model_channels}",
        layout.with_article()
    );
    let help = if layout.has_alpha() && channels - 1 == model_channels {
        "the alpha channel is not dropped silently: pass --alpha drop to ignore it, or save the \
         image without alpha"
            .to_string()
    } else {
        let wanted = match (layout, model_channels) {
            (ChannelLayout::Multichannel(_), n) => {
                format!("{n} channels (an OME-TIFF of {n} channel pages, or a .npy)")
            }
            (_, 1) => "gray".to_string(),
            (_, 2) => "gray+alpha".to_string(),
            (_, 3) => "RGB".to_string(),
            (_, 4) => "RGBA".to_string(),
            (_, n) => format!(
                "a {n}-channel .npy array or OME-TIFF (PNG and other TIFF images have at most 4 \
                 channels)"
            ),
        };
        format!("unetc does not convert images silently: convert it to {wanted} first")
    };
    Err(RunError::Usage(format!("{what}; {help}")))
}

/// A `[N, H, W, C]` tensor without its last channel.
fn drop_last_channel(t: &Tensor) -> Tensor {
    let c = t.shape.last().copied().unwrap_or(1);
    let mut shape = t.shape.clone();
    if let Some(last) = shape.last_mut() {
        *last = c.saturating_sub(1);
    }
    Tensor {
        shape,
        data: t
            .data
            .chunks_exact(c.max(1))
            .flat_map(|px| &px[..c.saturating_sub(1)])
            .copied()
            .collect(),
    }
}

/// What every output of the run is, from the output's extension and the options; options that
/// would do nothing for that output are errors that say why.
/// `to_dir`: a directory run, for a volume model or not.
fn output_kind(
    base: &Compiled,
    opts: &RunOptions,
    to_dir: Option<bool>,
) -> Result<OutputKind, RunError> {
    let out_shape = model_output_shape(base)?;
    let channels = out_shape.last().copied().unwrap_or(1);
    let ext = if let Some(volume_model) = to_dir {
        Some(opts.output_extension(volume_model).to_string())
    } else if crate::io::nifti::is_nifti(&opts.output) {
        Some("nii".to_string())
    } else {
        opts.output
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
    };
    match ext.as_deref() {
        Some("npy" | "tif" | "tiff") if opts.labels => {
            if let Some(class) = opts.class {
                return Err(RunError::Usage(format!(
                    "--class {class} shows one channel's probability in a .png; --labels writes \
                     each pixel's label, so give one of them"
                )));
            }
            if out_shape.len() != 3 {
                return Err(RunError::Usage(format!(
                    "--labels: the model's output has shape {out_shape:?}, not (H, W, C); \
                     write its probabilities (drop --labels)"
                )));
            }
            if channels > 256 {
                return Err(RunError::Usage(format!(
                    "--labels: the model has {channels} output channels, more than a uint8 \
                     label holds (256); write the probabilities (drop --labels)"
                )));
            }
            match opts.threshold {
                Some(t) if channels > 1 => Err(RunError::Usage(format!(
                    "--threshold {t} applies to one-channel (sigmoid) outputs; this model's \
                     output has {channels} channels, so each label is the most likely channel \
                     (argmax): drop --threshold"
                ))),
                Some(t) if !t.is_finite() => Err(RunError::Usage(format!(
                    "--threshold {t}: give a finite number"
                ))),
                threshold => Ok(OutputKind::Labels {
                    threshold: threshold.unwrap_or(0.5),
                }),
            }
        }
        Some(ext @ ("npy" | "tif" | "tiff" | "nii")) => {
            if opts.labels {
                return Err(RunError::Usage(format!(
                    "--labels: a .{ext} output holds the probabilities (float32); labels go to \
                     a .npy or .tif output"
                )));
            }
            if let Some(class) = opts.class {
                return Err(RunError::Usage(format!(
                    "--class {class} picks the channel a .png output shows as gray; a .{ext} \
                     output holds all {channels} channel(s), so --class would do nothing: drop \
                     it, or write a .png"
                )));
            }
            if let Some(t) = opts.threshold {
                return Err(RunError::Usage(format!(
                    "--threshold {t} makes a .png mask; a .{ext} output holds the \
                     probabilities, unthresholded, so --threshold would do nothing: drop it, or \
                     write a .png"
                )));
            }
            Ok(OutputKind::Probabilities)
        }
        Some("png") if opts.labels => Err(RunError::Usage(
            "--labels makes a .npy or .tif output hold labels; a .png output is a mask already \
             (labels spread over 0-255): drop --labels, or write a .tif"
                .into(),
        )),
        Some("png") => {
            if out_shape.len() != 3 {
                return Err(RunError::Usage(format!(
                    "the model's output has shape {out_shape:?}, not (H, W, C): it cannot be a \
                     .png mask; write a .npy"
                )));
            }
            match (opts.class, opts.threshold) {
                (Some(class), Some(t)) => Err(RunError::Usage(format!(
                    "--class {class} writes that channel's probability as gray, unthresholded, \
                     so --threshold {t} would do nothing: give one of them"
                ))),
                (Some(class), None) if class >= channels => Err(RunError::Usage(format!(
                    "--class {class}: the model's output has {channels} channel(s), numbered 0 \
                     to {}",
                    channels.saturating_sub(1)
                ))),
                (Some(class), None) => Ok(OutputKind::ClassProbability { class }),
                (None, Some(t)) if channels > 1 => Err(RunError::Usage(format!(
                    "--threshold {t} applies to one-channel (sigmoid) outputs; this model's \
                     output has {channels} channels, so each mask pixel is its most likely channel \
                     (argmax) and no threshold is used. Drop --threshold; for one \
                     channel's probability as gray use --class K, for all of them a .npy output"
                ))),
                (None, Some(t)) if !t.is_finite() => Err(RunError::Usage(format!(
                    "--threshold {t}: give a finite number"
                ))),
                (None, threshold) => Ok(OutputKind::Mask {
                    threshold: threshold.unwrap_or(0.5),
                }),
            }
        }
        _ if opts.output.is_dir() => Err(RunError::Usage(format!(
            "`{}` is a directory; with one input file, give the output file (.npy for \
             probabilities, .png for a mask)",
            opts.output.display()
        ))),
        _ => Err(RunError::Usage(format!(
            "`{}`: outputs are .npy or .tif (probabilities), .nii/.nii.gz (a volume's \
             probabilities) or .png (masks)",
            opts.output.display()
        ))),
    }
}

/// What `predict` needs besides the input.
struct Predict<'a> {
    spec: SpecSource<'a>,
    base: &'a Compiled,
    /// `base` with `weights` already bound, when the caller keeps one (else each pass binds them).
    bound: Option<&'a Backend<'a>>,
    weights: &'a Weights,
    batch: usize,
    device: Device,
    precision: Precision,
    tiling: &'a TileRequest,
}

/// The model's output for a batch of images of any size.
fn predict(
    p: &Predict<'_>,
    input: &Tensor,
    report: &mut RunReport,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Tensor, RunError> {
    let (base, batch, device, precision) = (p.base, p.batch, p.device, p.precision);
    let budget = p.tiling.budget;
    let model_in: Vec<usize> = base.info.layers[base.graph.inputs[0].index()]
        .shape
        .iter()
        .flatten()
        .map(|&d| d as usize)
        .collect();
    let model_out = model_output_shape(base)?;
    if model_in.len() == 4 {
        return predict_volume(p, input, &model_in, report, progress);
    }
    if model_in.len() < 3 {
        return predict_arrays(p, input, &model_in, report);
    }
    if input.shape.len() != 4 || model_in.len() != 3 {
        return Err(RunError::Usage(format!(
            "the input has shape {:?}; unetc runs image models on (N, H, W, C) inputs",
            input.shape
        )));
    }
    let [n, h, w, c] = [
        input.shape[0],
        input.shape[1],
        input.shape[2],
        input.shape[3],
    ];
    if n == 0 || h == 0 || w == 0 {
        return Err(RunError::Usage(format!(
            "the input has shape {:?}: it is empty",
            input.shape
        )));
    }
    if c != model_in[2] {
        return Err(RunError::Usage(format!(
            "the input has {c} channel(s) but the model takes {} (its input shape is {}x{}x{} \
             (H x W x C))",
            model_in[2], model_in[0], model_in[1], model_in[2]
        )));
    }
    if let (None, Some(t)) = (p.tiling.tile, p.tiling.tile_3d) {
        return Err(RunError::Usage(format!(
            "--tile {}x{}x{} is a volume's tile (DxHxW); this model takes images: give HxW or N",
            t[0], t[1], t[2]
        )));
    }
    let same_size = model_out.len() == 3 && model_out[..2] == model_in[..2];
    // A valid net on an input of its own size gives its own (smaller) output; so does a model
    // whose output is not an image.
    if [h, w] == [model_in[0], model_in[1]] && (!same_size || p.tiling.tile.is_none()) {
        let weight_bytes = p.tiling.weights_on.resident_bytes(base);
        let fits = crate::exec::plan::plan(&base.graph, &base.info).is_none_or(|plan| {
            plan.arena_bytes(batch.clamp(1, n))
                .saturating_add(weight_bytes)
                <= budget
        });
        if !same_size || fits {
            return forward(
                base,
                p.bound,
                p.weights,
                input,
                batch,
                (device, precision, budget),
                report,
            );
        }
    }
    if model_out.len() != 3 {
        return Err(RunError::Usage(format!(
            "the input is {} but the model takes exactly {} (its output is not an image, so it \
             cannot be tiled)",
            size_wh(h, w),
            size_wh(model_in[0], model_in[1])
        )));
    }
    let (plan, sized) = plan_tiles(p, &model_in, [n, h, w, c], batch, report)?;
    let model = Backend::new(device, &sized, p.weights, precision, budget)?;
    let (th, tw) = plan.tile_in;
    let (oh, ow) = plan.tile_out;
    let k = model_output_shape(&sized)?.last().copied().unwrap_or(1);
    let (rows, cols) = plan.tiles();
    let blend = match plan.stitch {
        Stitch::Blend(kind) => Some((blend_weights(oh, kind), blend_weights(ow, kind))),
        Stitch::Whole | Stitch::OverlapTile | Stitch::Exact => None,
    };
    let mut out = Tensor::zeros(&[n, h, w, k]);
    let mut weight_sum = vec![0.0f32; if blend.is_some() { n * h * w } else { 0 }];
    let positions: Vec<(usize, Span, Span)> = tile_positions(&plan, n).collect();
    let total = n * rows * cols;
    let mut done = 0;
    let mut source = TensorSource { tensor: input };
    let mut scratch = Vec::new();
    for chunk in positions.chunks(batch.max(1)) {
        let mut tiles = Tensor::zeros(&[chunk.len(), th, tw, c]);
        fill_tiles(&mut source, &plan, chunk, &mut tiles, &mut scratch)?;
        report.arena_bytes = report.arena_bytes.max(model.arena_bytes(chunk.len()));
        if let Some(d) = model.device_bytes(chunk.len()) {
            report.device_bytes = Some(report.device_bytes.unwrap_or(0).max(d));
        }
        report.device = model.name();
        report.forward_passes += 1;
        let result = model.run(&tiles)?.remove(0);
        for (t, &(i, row, col)) in chunk.iter().enumerate() {
            // Kept tile outputs that land inside the image.
            let ((y0, y1), (x0, x1)) = (kept(row, h), kept(col, w));
            if x0 >= x1 {
                continue;
            }
            for oy in y0..y1 {
                let y = (row.offset + oy as isize) as usize;
                let x = (col.offset + x0 as isize) as usize;
                let src = ((t * oh + oy) * ow + x0) * k;
                let dst = ((i * h + y) * w + x) * k;
                let len = (x1 - x0) * k;
                match &blend {
                    None => out.data[dst..dst + len].copy_from_slice(&result.data[src..src + len]),
                    Some((wy, wx)) => {
                        for (j, ox) in (x0..x1).enumerate() {
                            let weight = wy[oy] * wx[ox];
                            weight_sum[(i * h + y) * w + x + j] += weight;
                            for ch in 0..k {
                                out.data[dst + j * k + ch] +=
                                    weight * result.data[src + j * k + ch];
                            }
                        }
                    }
                }
            }
        }
        done += chunk.len();
        progress(done, total);
    }
    if blend.is_some() {
        for (px, &s) in out.data.chunks_mut(k).zip(&weight_sum) {
            for v in px {
                *v /= s;
            }
        }
    }
    Ok(out)
}

/// The tile plan for `[n, h, w, c]` images on `p`'s model, the model compiled at the tile's
/// size, and a note saying how the image is covered.
fn plan_tiles(
    p: &Predict<'_>,
    model_in: &[usize],
    [_, h, w, c]: [usize; 4],
    batch: usize,
    report: &mut RunReport,
) -> Result<(TilePlan, Compiled), RunError> {
    let text = p.spec.text()?;
    let mut request = p.tiling.clone();
    request.batch = batch.max(1);
    request.spec_tile_first = true;
    let plan = plan_image(
        p.spec.path,
        &text,
        [model_in[0], model_in[1], model_in[2]],
        (h, w),
        &request,
    )
    .map_err(|e| RunError::Usage(format!("the input is {}: {e}", size_wh(h, w))))?;
    let sized = p.spec.compile_checked(Some(vec![
        plan.tile_in.0 as i64,
        plan.tile_in.1 as i64,
        c as i64,
    ]))?;
    let (th, tw) = plan.tile_in;
    let (rows, cols) = plan.tiles();
    report.notes.push(match plan.stitch {
        Stitch::Whole if plan.padded == (h, w) => format!("{} in one pass", size_wh(h, w)),
        Stitch::Whole => format!(
            "{} mirror-padded to {} and cropped back",
            size_wh(h, w),
            size_wh(plan.padded.0, plan.padded.1)
        ),
        Stitch::OverlapTile if rows * cols == 1 => format!(
            "{} mirror-padded by the margin into one tile of {}",
            size_wh(h, w),
            size_wh(th, tw)
        ),
        Stitch::OverlapTile => format!(
            "{} covered by {} overlapping tiles of {} per image",
            size_wh(h, w),
            rows * cols,
            size_wh(th, tw)
        ),
        Stitch::Exact | Stitch::Blend(_) => format!(
            "{}{}, covered by {cols} x {rows} tiles of {} per image; {}",
            size_wh(h, w),
            if plan.padded == (h, w) {
                String::new()
            } else {
                format!(
                    " mirror-padded to {}",
                    size_wh(plan.padded.0, plan.padded.1)
                )
            },
            size_wh(th, tw),
            plan.mode_text()
        ),
    });
    Ok((plan, sized))
}

/// The source indices `start - pad .. start - pad + len` of an axis of length `n`, mirrored
/// at its ends, and the range that holds them.
fn mirrored(
    start: usize,
    len: usize,
    pad: usize,
    n: usize,
) -> (Vec<usize>, std::ops::Range<usize>) {
    let idx: Vec<usize> = (0..len)
        .map(|t| mirror_index((start + t) as isize - pad as isize, n))
        .collect();
    let lo = idx.iter().copied().min().unwrap_or(0);
    let hi = idx.iter().copied().max().map_or(0, |m| m + 1);
    (idx, lo..hi)
}

/// Fills `out` (`[ys.len(), xs.len(), c]`) with rows `ys` and columns `xs` (each with the range
/// holding it, from [`mirrored`]) of plane `plane` of `source`, reading only that rectangle.
fn fill_plane(
    source: &mut dyn RegionSource,
    plane: usize,
    (ys, rows): (&[usize], &std::ops::Range<usize>),
    (xs, cols): (&[usize], &std::ops::Range<usize>),
    out: &mut [f32],
    scratch: &mut Vec<f32>,
) -> Result<(), RunError> {
    let c = source.shape()[3];
    let (region_w, tw) = (cols.len(), xs.len());
    scratch.clear();
    scratch.resize(rows.len() * region_w * c, 0.0);
    source.read_region(plane, rows.clone(), cols.clone(), scratch)?;
    // Mapped pages of this rectangle go back now, not after the batch.
    source.release();
    // Runs of consecutive source columns (the tile's interior) are copied whole.
    let mut runs: Vec<(usize, usize, usize)> = Vec::new(); // (tile x, source x, length)
    for (tx, &sx) in xs.iter().enumerate() {
        match runs.last_mut() {
            Some((x0, s0, len)) if *x0 + *len == tx && *s0 + *len == sx => *len += 1,
            _ => runs.push((tx, sx, 1)),
        }
    }
    for (ty, &sy) in ys.iter().enumerate() {
        for &(tx, sx, len) in &runs {
            let src = ((sy - rows.start) * region_w + (sx - cols.start)) * c;
            let dst = (ty * tw + tx) * c;
            out[dst..dst + len * c].copy_from_slice(&scratch[src..src + len * c]);
        }
    }
    Ok(())
}

/// Fills `tiles` (`[chunk.len(), th, tw, c]`) with the mirror-padded input tiles at `chunk`'s
/// positions, reading from `source` only the rectangle each tile needs.
fn fill_tiles(
    source: &mut dyn RegionSource,
    plan: &TilePlan,
    chunk: &[(usize, Span, Span)],
    tiles: &mut Tensor,
    scratch: &mut Vec<f32>,
) -> Result<(), RunError> {
    let [_, h, w, c] = source.shape();
    let (th, tw) = plan.tile_in;
    let (py, px) = plan.pad_before;
    for (t, &(i, row, col)) in chunk.iter().enumerate() {
        let (ys, rows) = mirrored(row.start, th, py, h);
        let (xs, cols) = mirrored(col.start, tw, px, w);
        let out = &mut tiles.data[t * th * tw * c..(t + 1) * th * tw * c];
        fill_plane(source, i, (&ys, &rows), (&xs, &cols), out, scratch)?;
    }
    Ok(())
}

/// The tile output indices a span keeps that land inside an axis of length `len`.
fn kept(s: Span, len: usize) -> (usize, usize) {
    let lo = (s.keep.0 as isize).max(-s.offset);
    let hi = (s.keep.1 as isize).min(len as isize - s.offset);
    (lo.max(0) as usize, hi.max(0) as usize)
}

/// Every tile position `(image, row span, column span)` of `n` images, row by row.
fn tile_positions(plan: &TilePlan, n: usize) -> impl Iterator<Item = (usize, Span, Span)> + '_ {
    (0..n).flat_map(move |i| {
        plan.rows
            .iter()
            .flat_map(move |&row| plan.cols.iter().map(move |&col| (i, row, col)))
    })
}

/// A volume model (input `(D, H, W, C)`) on an NDHWC array, or one `(D, H, W, C)` volume, in
/// memory. At the model's own size it runs as it is; other sizes (or volumes over the memory
/// budget) are tiled as [`plan_volume_run`] says.
fn predict_volume(
    p: &Predict<'_>,
    input: &Tensor,
    model_in: &[usize],
    report: &mut RunReport,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Tensor, RunError> {
    use crate::report::volume::dhw;
    let shape: Option<[usize; 5]> = match input.shape[..] {
        [n, d, h, w, c] => Some([n, d, h, w, c]),
        [d, h, w, c] => Some([1, d, h, w, c]),
        _ => None,
    };
    let Some(shape @ [n, d, h, w, c]) = shape else {
        return Err(RunError::Usage(format!(
            "the input has shape {:?}; this volume model takes (N, D, H, W, C) arrays of \
             {}x{} volumes (D x H x W x C channels; any D, H, W), or one (D, H, W, C) volume",
            input.shape,
            dhw([model_in[0], model_in[1], model_in[2]]),
            model_in[3]
        )));
    };
    match plan_volume_run(p, shape, model_in, report)? {
        VolumeRun::Whole => forward(
            p.base,
            p.bound,
            p.weights,
            &Tensor {
                shape: vec![n, d, h, w, c],
                data: input.data.clone(),
            },
            p.batch,
            (p.device, p.precision, p.tiling.budget),
            report,
        ),
        VolumeRun::Tiled(tiled) => {
            let (plan, sized) = &*tiled;
            let k = model_output_shape(sized)?.last().copied().unwrap_or(1);
            let mut out = Tensor::zeros(&[n, d, h, w, k]);
            let mut source = TensorSource { tensor: input };
            let mut sink = TensorSink { tensor: &mut out };
            run_volume_tiles(
                p,
                (plan, sized),
                shape,
                (&mut source, &mut sink),
                report,
                progress,
            )?;
            Ok(out)
        }
    }
}

/// How a volume run covers its input.
enum VolumeRun {
    /// The model as it is, on the whole input (the model's own size).
    Whole,
    /// Tiles, and the model compiled at the tile's size.
    Tiled(Box<(crate::report::volume::VolumePlan, Compiled)>),
}

/// Checks `[n, d, h, w, c]` volumes against `p`'s volume model (input `model_in`, `(D, H, W,
/// C)`) and plans their run: at the model's own size the model as it is; other sizes (or
/// volumes over the memory budget) tiled along depth, height and width as
/// [`crate::report::volume::plan_volume`] says: exact tiles for same-padding nets, the
/// overlap-tile for valid ones, each mirror-padded as images are. A note says which.
fn plan_volume_run(
    p: &Predict<'_>,
    [n, d, h, w, c]: [usize; 5],
    model_in: &[usize],
    report: &mut RunReport,
) -> Result<VolumeRun, RunError> {
    use crate::report::volume::{dhw, plan_volume};
    let (base, batch) = (p.base, p.batch);
    let budget = p.tiling.budget;
    let model_dhw = [model_in[0], model_in[1], model_in[2]];
    if let (Some((th, tw)), None) = (p.tiling.tile, p.tiling.tile_3d) {
        return Err(RunError::Usage(format!(
            "--tile {th}x{tw} is an image's tile (HxW); this model takes volumes: give DxHxW \
             (depth first) or N"
        )));
    }
    if [n, d, h, w, c].contains(&0) {
        return Err(RunError::Usage(format!(
            "the input has shape {:?} (N, D, H, W, C): it is empty",
            [n, d, h, w, c]
        )));
    }
    if c != model_in[3] {
        return Err(RunError::Usage(format!(
            "the input has {c} channel(s) but the model takes {} (its input shape is {}x{} \
             (D x H x W x C))",
            model_in[3],
            dhw(model_dhw),
            model_in[3]
        )));
    }
    let model_out = model_output_shape(base)?;
    let same_size = model_out.len() == 4 && model_out[..3] == model_in[..3];
    let volume = [d, h, w];
    if volume == model_dhw && (!same_size || p.tiling.tile_3d.is_none()) {
        let fits = crate::exec::plan::plan(&base.graph, &base.info)
            .is_none_or(|plan| plan.arena_bytes(batch.clamp(1, n)) <= budget);
        if !same_size || fits {
            report
                .notes
                .push(format!("{n} volume(s) of {}x{c}", dhw(model_dhw)));
            return Ok(VolumeRun::Whole);
        }
    }
    if model_out.len() != 4 {
        return Err(RunError::Usage(format!(
            "the input is {} (D x H x W) but the model takes exactly {} (its output is not a \
             volume, so it cannot be tiled)",
            dhw(volume),
            dhw(model_dhw)
        )));
    }
    let text = p.spec.text()?;
    let mut request = p.tiling.clone();
    request.batch = batch.max(1);
    request.spec_tile_first = true;
    let plan = plan_volume(
        p.spec.path,
        &text,
        [model_in[0], model_in[1], model_in[2], model_in[3]],
        volume,
        &request,
    )
    .map_err(|e| RunError::Usage(format!("the input is {} (D x H x W): {e}", dhw(volume))))?;
    let t = plan.tile_in;
    let sized =
        p.spec
            .compile_checked(Some(vec![t[0] as i64, t[1] as i64, t[2] as i64, c as i64]))?;
    report.notes.push(format!(
        "{} (D x H x W){}, covered by {} tiles of {} per volume; {}",
        dhw(volume),
        if plan.padded == volume {
            String::new()
        } else {
            format!(" mirror-padded to {}", dhw(plan.padded))
        },
        dhw(plan.tiles()),
        dhw(t),
        plan.mode_text()
    ));
    Ok(VolumeRun::Tiled(Box::new((plan, sized))))
}

/// Runs the tiles of `plan` (on `sized`, the model at the tile's size) over `[n, d, h, w, c]`
/// volumes from `source` (planes `[n·d, h, w, c]`) into `sink` (planes `[n·d, h, w, k]`),
/// through [`pipeline`]: only the planes' rectangles a batch of tiles needs are read.
fn run_volume_tiles(
    p: &Predict<'_>,
    (plan, sized): (&crate::report::volume::VolumePlan, &Compiled),
    [n, d, h, w, c]: [usize; 5],
    (source, sink): (&mut (dyn RegionSource + Send), &mut (dyn RegionSink + Send)),
    report: &mut RunReport,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(), RunError> {
    if source.shape() != [n * d, h, w, c] {
        return Err(RunError::Usage(format!(
            "internal error: a source of planes {:?} for volumes {:?}",
            source.shape(),
            [n, d, h, w, c]
        )));
    }
    let model = Backend::new(p.device, sized, p.weights, p.precision, p.tiling.budget)?;
    let (t, o) = (plan.tile_in, plan.tile_out);
    let k = model_output_shape(sized)?.last().copied().unwrap_or(1);
    // Every tile: (volume, depth span, height span, width span).
    let positions = (0..n).flat_map(|i| {
        plan.spans[0].iter().flat_map(move |&sd| {
            plan.spans[1]
                .iter()
                .flat_map(move |&sh| plan.spans[2].iter().map(move |&sw| (i, sd, sh, sw)))
        })
    });
    let tile_len = t[0] * t[1] * t[2] * c;
    let plane_len = t[1] * t[2] * c;
    pipeline(
        &model,
        positions,
        p.batch,
        &[t[0], t[1], t[2], c],
        (source, sink),
        &|source, chunk, tiles, scratch| {
            for (j, &(i, sd, sh, sw)) in chunk.iter().enumerate() {
                let (zs, _) = mirrored(sd.start, t[0], plan.pad_before[0], d);
                let (ys, rows) = mirrored(sh.start, t[1], plan.pad_before[1], h);
                let (xs, cols) = mirrored(sw.start, t[2], plan.pad_before[2], w);
                let tile = &mut tiles.data[j * tile_len..(j + 1) * tile_len];
                for (tz, &z) in zs.iter().enumerate() {
                    let out = &mut tile[tz * plane_len..(tz + 1) * plane_len];
                    fill_plane(source, i * d + z, (&ys, &rows), (&xs, &cols), out, scratch)?;
                }
            }
            Ok(())
        },
        &|sink, chunk, result| {
            for (j, &(i, sd, sh, sw)) in chunk.iter().enumerate() {
                // Kept tile outputs that land inside the volume.
                let ((z0, z1), (y0, y1), (x0, x1)) = (kept(sd, d), kept(sh, h), kept(sw, w));
                if x0 >= x1 {
                    continue;
                }
                for oz in z0..z1 {
                    let z = (sd.offset + oz as isize) as usize;
                    for oy in y0..y1 {
                        let y = (sh.offset + oy as isize) as usize;
                        let x = (sw.offset + x0 as isize) as usize;
                        let src = (((j * o[0] + oz) * o[1] + oy) * o[2] + x0) * k;
                        sink.write_run(i * d + z, y, x, &result.data[src..src + (x1 - x0) * k])?;
                    }
                }
            }
            Ok(())
        },
        report,
        progress,
    )
}

/// `input` through `c` in batches of `batch`, on `bound` when given (`c` with its weights bound).
#[allow(clippy::too_many_arguments)]
fn forward(
    c: &Compiled,
    bound: Option<&Backend<'_>>,
    weights: &Weights,
    input: &Tensor,
    batch: usize,
    (device, precision, budget): (Device, Precision, u64),
    report: &mut RunReport,
) -> Result<Tensor, RunError> {
    let owned;
    let model = match bound {
        Some(m) => m,
        None => {
            owned = Backend::new(device, c, weights, precision, budget)?;
            &owned
        }
    };
    let n = input.shape[0];
    let item = input.item_len();
    let mut outputs: Vec<Tensor> = Vec::new();
    for start in (0..n).step_by(batch.max(1)) {
        let end = (start + batch.max(1)).min(n);
        let mut shape = input.shape.clone();
        shape[0] = end - start;
        let part = Tensor {
            shape,
            data: input.data[start * item..end * item].to_vec(),
        };
        report.arena_bytes = report.arena_bytes.max(model.arena_bytes(end - start));
        if let Some(d) = model.device_bytes(end - start) {
            report.device_bytes = Some(report.device_bytes.unwrap_or(0).max(d));
        }
        report.device = model.name();
        report.forward_passes += 1;
        outputs.push(model.run(&part)?.remove(0));
    }
    let mut shape = outputs[0].shape.clone();
    shape[0] = n;
    Ok(Tensor {
        shape,
        data: outputs.into_iter().flat_map(|t| t.data).collect(),
    })
}

fn write_output(path: &Path, out: &Tensor, kind: OutputKind, force: bool) -> Result<(), RunError> {
    let tiff = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("tif") || e.eq_ignore_ascii_case("tiff"));
    let labels = matches!(kind, OutputKind::Labels { .. });
    if (kind == OutputKind::Probabilities && tiff) || labels {
        let [n, h, w, k] = out.shape[..] else {
            return Err(RunError::Usage(format!(
                "the model's output has shape {:?}, not (N, H, W, C): it cannot be a {}; \
                 write the probabilities to a .npy",
                out.shape,
                if labels { "label image" } else { "TIFF" }
            )));
        };
        let mut sink = create_sink(path, [n, h, w, k], kind, force)?;
        for (row, values) in out.data.chunks(w * k).enumerate() {
            sink.write_run(row / h, row % h, 0, values)?;
        }
        return Ok(sink.finish()?);
    }
    if kind == OutputKind::Probabilities {
        return Ok(crate::io::npy::write_npy(path, out, force)?);
    }
    let [n, h, w, k] = out.shape[..] else {
        return Err(RunError::Usage(format!(
            "the model's output has shape {:?}, not (N, H, W, C): it cannot be a .png mask; \
             write a .npy",
            out.shape
        )));
    };
    if n != 1 {
        return Err(RunError::Usage(format!(
            "{n} images cannot go into one PNG; write .npy, or give a directory of images"
        )));
    }
    let pixels: Vec<u8> = out
        .data
        .chunks(k)
        .map(|p| match kind {
            OutputKind::ClassProbability { class } => {
                (p.get(class).copied().unwrap_or(0.0).clamp(0.0, 1.0) * 255.0).round() as u8
            }
            OutputKind::Mask { threshold } if k == 1 => {
                if p[0] > threshold {
                    255
                } else {
                    0
                }
            }
            _ => (crate::io::stream::argmax(p) * 255 / (k - 1).max(1)) as u8,
        })
        .collect();
    if let OutputKind::ClassProbability { class } = kind {
        if class >= k {
            return Err(RunError::Usage(format!(
                "--class {class}: the model has {k} output channel(s)"
            )));
        }
    }
    Ok(crate::io::image::write_mask_png(
        path, h, w, &pixels, force,
    )?)
}

/// Timing of a model on the CPU, with the figures `unetc bench` prints.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchReport {
    pub spec: String,
    pub model: String,
    pub input_shape: Vec<usize>,
    pub batch: usize,
    pub device: String,
    pub precision: String,
    pub threads: usize,
    pub warmup: usize,
    pub iterations: usize,
    /// Milliseconds per batch, median: on CUDA the network alone, its input already on the device.
    pub median_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    /// Every timed pass's milliseconds, in the order they ran.
    pub times_ms: Vec<f64>,
    pub images_per_s: f64,
    pub gflop_per_image: f64,
    pub gflops_per_s: f64,
    pub planned_arena_bytes: u64,
    /// Device memory unetc allocates for the run (arena + weights), CUDA only.
    pub peak_device_memory_bytes: Option<u64>,
    /// What the driver reports in use by the model during the runs (CUDA only).
    pub measured_device_memory_bytes: Option<u64>,
    /// Whether the kernels ran as one replayed CUDA graph.
    pub cuda_graph: bool,
    /// CUDA: median milliseconds per batch with the input's upload from pinned host memory.
    pub end_to_end_median_ms: Option<f64>,
    /// CUDA: how the kernels reached the device (`sm_90 cubin`, or PTX for the driver's JIT).
    pub kernels: Option<String>,
    /// CUDA: milliseconds to compile (or read from the cache) and load the kernels.
    pub kernel_load_ms: Option<f64>,
    pub notes: Vec<String>,
    /// The process's peak resident memory (Linux VmHWM), when known.
    pub peak_rss_bytes: Option<u64>,
}

/// What `unetc bench` times.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub device: Device,
    /// Weights to use; seeded ones when `None`.
    pub weights: Option<PathBuf>,
    pub batch: usize,
    pub warmup: usize,
    pub iterations: usize,
    pub precision: Precision,
    /// Replay the kernels as one CUDA graph (CUDA only).
    pub cuda_graph: bool,
}

/// Times `iterations` forward passes of a batch (after `warmup` untimed ones). Weights come from
/// a file, or are seeded ones when none is given (speed does not depend on their values).
pub fn bench(spec: &Path, opts: &BenchOptions) -> Result<BenchReport, RunError> {
    let BenchOptions {
        device,
        ref weights,
        batch,
        warmup,
        iterations,
        precision,
        cuda_graph,
    } = *opts;
    let weights = weights.as_deref();
    let device = device.resolve()?;
    let c = compile_checked(spec, None)?;
    let w = match weights {
        Some(path) => load_weights(path, &expected_weights(&c))?,
        None => init_weights(&c, 1)?,
    };
    let shape: Vec<usize> = c.info.layers[c.graph.inputs[0].index()]
        .shape
        .iter()
        .flatten()
        .map(|&d| d as usize)
        .collect();
    let model = Backend::new(device, &c, &w, precision, default_memory_budget(device))?;
    let mut full = vec![batch.max(1)];
    full.extend(&shape);
    let n: usize = full.iter().product();
    let input = Tensor::from_vec(
        &full,
        (0..n)
            .map(|i| ((i * 2654435761) % 1000) as f32 / 1000.0)
            .collect(),
    )
    .ok_or_else(|| RunError::Usage("input size overflow".into()))?;
    for _ in 0..warmup {
        model.run(&input)?;
    }
    let (mut graph_used, mut notes, mut measured) = (false, Vec::new(), None);
    let mut end_to_end = None;
    let mut times = match &model {
        // CUDA events around the launches: no host copies in the figure.
        Backend::Cuda(m) => {
            let t = m
                .time(&input, iterations.max(1), cuda_graph)
                .map_err(|e| RunError::Usage(e.to_string()))?;
            graph_used = t.graph;
            notes.extend(t.graph_note);
            measured = Some(t.measured_device_bytes);
            end_to_end = Some(median(t.end_to_end_times));
            t.times
        }
        Backend::Cpu(_) => {
            let mut times = Vec::with_capacity(iterations.max(1));
            for _ in 0..iterations.max(1) {
                let start = std::time::Instant::now();
                model.run(&input)?;
                times.push(start.elapsed().as_secs_f64() * 1e3);
            }
            times
        }
    };
    let times_ms = times.clone();
    times.sort_by(f64::total_cmp);
    let median = median(times.clone());
    let flops = c.info.totals(&c.graph).macs.saturating_mul(2) as f64;
    Ok(BenchReport {
        spec: spec.display().to_string(),
        model: c.graph.name.clone(),
        input_shape: shape,
        batch: batch.max(1),
        device: match &model {
            Backend::Cuda(m) => format!("cuda ({})", m.device_name),
            Backend::Cpu(_) => "cpu".into(),
        },
        precision: precision.name().into(),
        threads: rayon::current_num_threads(),
        warmup,
        iterations: times.len(),
        median_ms: median,
        min_ms: times[0],
        max_ms: times[times.len() - 1],
        times_ms,
        images_per_s: batch.max(1) as f64 / (median / 1e3),
        gflop_per_image: flops / 1e9,
        gflops_per_s: flops * batch.max(1) as f64 / (median / 1e3) / 1e9,
        planned_arena_bytes: model.arena_bytes(batch.max(1)),
        peak_device_memory_bytes: model.device_bytes(batch.max(1)),
        measured_device_memory_bytes: measured,
        cuda_graph: graph_used,
        end_to_end_median_ms: end_to_end,
        kernels: match &model {
            Backend::Cuda(m) => Some(m.kernel_image.to_string()),
            Backend::Cpu(_) => None,
        },
        kernel_load_ms: match &model {
            Backend::Cuda(m) => Some(m.kernel_load.as_secs_f64() * 1e3),
            Backend::Cpu(_) => None,
        },
        notes,
        peak_rss_bytes: peak_rss(),
    })
}

/// The median of some timings (at least one).
fn median(mut times: Vec<f64>) -> f64 {
    times.sort_by(f64::total_cmp);
    match times.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => times[n / 2],
        n => (times[n / 2 - 1] + times[n / 2]) / 2.0,
    }
}

/// Peak resident set size of this process (Linux `/proc/self/status` VmHWM).
pub fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

self_cell::self_cell!(
    /// A compiled model with its weights bound to a backend (which borrows the graph).
    struct BoundModel {
        owner: Compiled,
        #[covariant]
        dependent: Backend,
    }
);

/// A spec compiled and its weights bound once, for many inputs in one process (the Python
/// package's `Model`): what `unetc run` does per file, without the start-up per call.
pub struct Loaded {
    spec: PathBuf,
    /// The spec's text as compiled at load time.
    text: String,
    weights: Weights,
    device: Device,
    precision: Precision,
    /// Memory the model may use (the machine's default, as `unetc run` without --memory).
    budget: u64,
    /// The layer run as the model's output (`output_layer=`), else the model's first output.
    output_layer: Option<String>,
    /// The names of the spec's outputs (before `output_layer` chose one).
    spec_outputs: Vec<String>,
    bound: BoundModel,
}

impl Loaded {
    /// Compiles `spec`, loads `weights` (checked against the model) and binds them on `device`;
    /// `output_layer` names the layer whose output `predict` returns (else the model's first).
    pub fn load(
        spec: &Path,
        weights: &Path,
        device: Device,
        precision: Precision,
        output_layer: Option<&str>,
    ) -> Result<Loaded, RunError> {
        let device = device.resolve()?;
        let whole = compile_checked(spec, None)?;
        let spec_outputs = whole.graph.outputs.iter();
        let spec_outputs = spec_outputs
            .map(|&id| whole.graph.node(id).name.clone())
            .collect();
        // The weights file is the whole model's: layers past a chosen output keep theirs.
        let weights = load_weights(weights, &expected_weights(&whole))?;
        let base = match output_layer {
            Some(name) => {
                let options = Options {
                    input_shape: None,
                    output_layer: Some(name.to_string()),
                };
                compile_checked_with(spec, &options)?
            }
            None => whole,
        };
        let text = base
            .sources
            .file_ids()
            .next()
            .map(|f| base.sources.text(f).to_string())
            .unwrap_or_default();
        let budget = default_memory_budget(device);
        let bound = BoundModel::try_new(base, |c| {
            Backend::new(device, c, &weights, precision, budget)
        })?;
        Ok(Loaded {
            spec: spec.to_path_buf(),
            text,
            weights,
            device,
            precision,
            budget,
            output_layer: output_layer.map(str::to_string),
            spec_outputs,
            bound,
        })
    }

    /// The names of the spec's outputs, in its order (the first is `predict`'s unless
    /// `output_layer` chose another layer).
    pub fn spec_outputs(&self) -> &[String] {
        &self.spec_outputs
    }

    /// The model's input shape without the batch axis (`[H, W, C]`, or `[D, H, W, C]`).
    pub fn input_shape(&self) -> Vec<usize> {
        let c = self.bound.borrow_owner();
        c.info.layers[c.graph.inputs[0].index()]
            .shape
            .iter()
            .flatten()
            .map(|&d| d as usize)
            .collect()
    }

    /// The model's output shape without the batch axis.
    pub fn output_shape(&self) -> Result<Vec<usize>, RunError> {
        model_output_shape(self.bound.borrow_owner())
    }

    /// "cpu" or "cuda": where the model runs.
    pub fn device(&self) -> &'static str {
        match self.device {
            Device::Cuda => "cuda",
            Device::Cpu | Device::Auto => "cpu",
        }
    }

    /// The output for `input`, `[N, ...]` with the model's own input shape after `N`, in
    /// forward passes of `batch` items.
    pub fn predict(&self, input: &Tensor, batch: usize) -> Result<Tensor, RunError> {
        let want = self.input_shape();
        if input.shape.len() != want.len() + 1 || input.shape[1..] != want[..] {
            return Err(RunError::Usage(format!(
                "the input has shape {:?} but the model takes (N, {}); for images of other \
                 sizes use predict_large",
                input.shape,
                want.iter()
                    .map(usize::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        self.predict_large(input, batch).map(|(out, _)| out)
    }

    /// As `unetc run` on an array: images of other sizes than the model's are overlap-tiled
    /// (valid padding) or mirror-padded and cropped back (same padding). The report's notes say
    /// which.
    pub fn predict_large(
        &self,
        input: &Tensor,
        batch: usize,
    ) -> Result<(Tensor, RunReport), RunError> {
        if let Some(found) = crate::io::NonFinite::find(&input.data) {
            return Err(RunError::Usage(format!(
                "{}; unetc refuses such inputs because the output would be meaningless: replace \
                 them (e.g. numpy.nan_to_num)",
                found.describe(&input.shape)
            )));
        }
        let mut report = RunReport::default();
        let spec = SpecSource {
            path: &self.spec,
            text: Some(&self.text),
            output_layer: self.output_layer.as_deref(),
        };
        let mut tiling = TileRequest::new(self.budget);
        tiling.output_layer = self.output_layer.clone();
        tiling.weights_on = self.device.weight_home();
        let out = predict(
            &Predict {
                spec,
                base: self.bound.borrow_owner(),
                bound: Some(self.bound.borrow_dependent()),
                weights: &self.weights,
                batch,
                device: self.device,
                precision: self.precision,
                tiling: &tiling,
            },
            input,
            &mut report,
            &mut |_, _| {},
        )?;
        Ok((out, report))
    }
}
