//! `unetc run` and `unetc init-weights`: spec + weights + images or arrays in, probabilities or
//! masks out. Images of any size are covered by tiles (see [`crate::exec::tiling`]).

use crate::diag::render_plain;
use crate::exec::cpu::{CpuModel, ExecError, WeightSource};
use crate::exec::tiling::{extract_tile, overlap_tiles};
use crate::exec::{Precision, Tensor};
use crate::expand::Session;
use crate::io::weights::{init_tensor, load_weights, save_weights, seeded_rng, Expected, Weights};
use crate::io::IoError;
use crate::ir::Op;
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
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Spec(d) => write!(f, "{d}"),
            RunError::Io(e) => write!(f, "{e}"),
            RunError::Exec(e) => write!(f, "{e}"),
            RunError::Usage(m) => write!(f, "{m}"),
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
    let c = compile_file(spec, &Options { input_shape }, &mut Session::new())
        .map_err(|e| RunError::Usage(format!("cannot read `{}`: {e}", spec.display())))?;
    if c.has_errors() {
        return Err(RunError::Spec(render_plain(&c.sources, &c.diags)));
    }
    Ok(c)
}

/// Every weight tensor the model needs, with its Keras shape.
pub fn expected_weights(c: &Compiled) -> Vec<Expected> {
    c.info
        .keras_order
        .iter()
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

/// Seeded weights following each layer's initializers and Keras's batch-norm defaults.
pub fn init_weights(c: &Compiled, seed: u64) -> Result<Weights, RunError> {
    let mut rng = seeded_rng(seed);
    let mut weights = Weights::new();
    for &id in &c.info.keras_order {
        let node = c.graph.node(id);
        for w in &c.info.layers[id.index()].weights {
            let initializer = match (&node.op, w.name) {
                (Op::Conv2D(op), "kernel") => op.args.kernel_initializer.as_str(),
                (Op::Conv2DTranspose(op), "kernel") => op.args.kernel_initializer.as_str(),
                (Op::Conv2D(op), "bias") => op.args.bias_initializer.as_str(),
                (Op::Conv2DTranspose(op), "bias") => op.args.bias_initializer.as_str(),
                (Op::Dense(op), "kernel") => op.kernel_initializer.as_str(),
                (_, "gamma" | "moving_variance") => "ones",
                _ => "zeros",
            };
            let shape: Vec<usize> = w.shape.iter().map(|&d| d as usize).collect();
            let t = init_tensor(initializer, &shape, &mut rng)?;
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
    fn resolve(self) -> Result<Device, RunError> {
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
            _ => Backend::Cpu(CpuModel::new(&c.graph, &c.info, weights)?),
        })
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
    pub class: Option<usize>,
    pub threshold: f32,
    /// Images (or tiles) per forward pass.
    pub batch: usize,
    pub force: bool,
    pub precision: Precision,
}

/// What a run did, for `--verbose`.
#[derive(Debug, Clone, Default)]
pub struct RunReport {
    /// The backend that ran: "cpu" or "cuda".
    pub device: &'static str,
    pub files: usize,
    pub forward_passes: usize,
    pub arena_bytes: u64,
    /// Device memory for activations and weights (CUDA only).
    pub device_bytes: Option<u64>,
    pub notes: Vec<String>,
}

/// The model for one input size, with its weights bound.
struct Sized {
    compiled: Compiled,
}

/// Runs a spec over one input file or a directory of them.
pub fn run(
    spec: &Path,
    opts: &RunOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<RunReport, RunError> {
    let device = opts.device.resolve()?;
    let base = compile_checked(spec, None)?;
    let weights = load_weights(&opts.weights, &expected_weights(&base))?;
    let files = input_files(&opts.input)?;
    let to_dir = opts.input.is_dir();
    if to_dir {
        std::fs::create_dir_all(&opts.output).map_err(|e| {
            RunError::Usage(format!(
                "cannot create output directory `{}`: {e}",
                opts.output.display()
            ))
        })?;
    }
    let mut report = RunReport {
        files: files.len(),
        ..RunReport::default()
    };
    for (i, file) in files.iter().enumerate() {
        let out_path = if to_dir {
            let stem = file.file_stem().unwrap_or_default();
            opts.output
                .join(Path::new(stem).with_extension(opts.output_extension()))
        } else {
            opts.output.clone()
        };
        let kind = output_kind(&out_path, opts)?;
        let input = read_input(file)?;
        let result = predict(
            spec,
            &base,
            &weights,
            &input,
            opts.batch,
            (device, opts.precision),
            &mut report,
        )?;
        write_output(&out_path, &result, kind, opts.force)?;
        progress(i + 1, files.len());
    }
    Ok(report)
}

impl RunOptions {
    fn output_extension(&self) -> &'static str {
        if self.output.extension().is_some_and(|e| e == "npy") {
            "npy"
        } else {
            "png"
        }
    }
}

fn input_files(input: &Path) -> Result<Vec<PathBuf>, RunError> {
    if !input.is_dir() {
        return Ok(vec![input.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(input)
        .map_err(|e| RunError::Usage(format!("cannot list `{}`: {e}", input.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            matches!(
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
            "`{}` holds no .png, .tif or .npy files",
            input.display()
        )));
    }
    Ok(files)
}

fn read_input(path: &Path) -> Result<Tensor, RunError> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    Ok(match ext.as_deref() {
        Some("npy") => crate::io::npy::read_npy(path)?,
        Some("png" | "tif" | "tiff") => crate::io::image::read_image(path)?,
        _ => {
            return Err(RunError::Usage(format!(
                "`{}`: inputs are .npy, .png or .tif files",
                path.display()
            )))
        }
    })
}

fn output_kind(path: &Path, opts: &RunOptions) -> Result<OutputKind, RunError> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("npy") => Ok(OutputKind::Probabilities),
        Some("png") => Ok(match opts.class {
            Some(class) => OutputKind::ClassProbability { class },
            None => OutputKind::Mask {
                threshold: opts.threshold,
            },
        }),
        _ => Err(RunError::Usage(format!(
            "`{}`: outputs are .npy (probabilities) or .png (masks)",
            path.display()
        ))),
    }
}

/// The model's output for a batch of images of any size.
fn predict(
    spec: &Path,
    base: &Compiled,
    weights: &Weights,
    input: &Tensor,
    batch: usize,
    (device, precision): (Device, Precision),
    report: &mut RunReport,
) -> Result<Tensor, RunError> {
    let model_in: Vec<usize> = base.info.layers[base.graph.inputs[0].index()]
        .shape
        .iter()
        .flatten()
        .map(|&d| d as usize)
        .collect();
    let out_id = *base
        .graph
        .outputs
        .first()
        .ok_or_else(|| RunError::Usage("the model has no output".into()))?;
    let model_out: Vec<usize> = base.info.layers[out_id.index()]
        .shape
        .iter()
        .flatten()
        .map(|&d| d as usize)
        .collect();
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
    if c != model_in[2] {
        return Err(RunError::Usage(format!(
            "the input has {c} channel(s) but the model takes {} (its input is {}x{}x{})",
            model_in[2], model_in[0], model_in[1], model_in[2]
        )));
    }
    if [h, w] == [model_in[0], model_in[1]] {
        return forward(base, weights, input, batch, device, precision, report);
    }
    if model_out.len() != 3 {
        return Err(RunError::Usage(format!(
            "the input is {h}x{w} but the model takes exactly {}x{} (its output is not an image, so it cannot be tiled)",
            model_in[0], model_in[1]
        )));
    }
    let same_size = model_out[0] == model_in[0] && model_out[1] == model_in[1];
    if same_size {
        // Same-padding net: mirror-pad up to the next size it accepts, run, crop back.
        let (ph, pw) = (
            accepted_size(spec, h, true, model_in[1])?,
            accepted_size(spec, w, false, model_in[0])?,
        );
        let sized = Sized {
            compiled: compile_checked(spec, Some(vec![ph as i64, pw as i64, c as i64]))?,
        };
        let mut padded = Tensor::zeros(&[n, ph, pw, c]);
        for i in 0..n {
            let item = &input.data[i * h * w * c..(i + 1) * h * w * c];
            let dst = &mut padded.data[i * ph * pw * c..(i + 1) * ph * pw * c];
            extract_tile(
                item,
                [h, w, c],
                ((ph - h) / 2, (pw - w) / 2),
                (0, 0),
                (ph, pw),
                dst,
            );
        }
        report.notes.push(format!(
            "{h}x{w} padded to {ph}x{pw} (mirror) and cropped back"
        ));
        let out = forward(
            &sized.compiled,
            weights,
            &padded,
            batch,
            device,
            precision,
            report,
        )?;
        let k = out.shape[3];
        let mut cropped = Tensor::zeros(&[n, h, w, k]);
        let (oy, ox) = ((ph - h) / 2, (pw - w) / 2);
        for i in 0..n {
            for y in 0..h {
                let src = ((i * ph + y + oy) * pw + ox) * k;
                let dst = ((i * h + y) * w) * k;
                cropped.data[dst..dst + w * k].copy_from_slice(&out.data[src..src + w * k]);
            }
        }
        return Ok(cropped);
    }
    // Valid-padding net: overlap-tile.
    let (Some(ty), Some(tx)) = (
        overlap_tiles(h, model_in[0], model_out[0]),
        overlap_tiles(w, model_in[1], model_out[1]),
    ) else {
        return Err(RunError::Usage(format!(
            "the input is {h}x{w}; the model maps {}x{} to {}x{}, which does not tile (use --input-shape sizes from `unetc check`)",
            model_in[0], model_in[1], model_out[0], model_out[1]
        )));
    };
    let (th, tw, k) = (model_in[0], model_in[1], model_out[2]);
    let (oh, ow) = (model_out[0], model_out[1]);
    let mut out = Tensor::zeros(&[n, h, w, k]);
    let mut positions: Vec<(usize, usize, usize)> = Vec::new();
    for i in 0..n {
        for &y in &ty.starts {
            for &x in &tx.starts {
                positions.push((i, y, x));
            }
        }
    }
    report.notes.push(format!(
        "{h}x{w} covered by {} overlapping {th}x{tw} tiles per image",
        ty.starts.len() * tx.starts.len()
    ));
    for chunk in positions.chunks(batch.max(1)) {
        let mut tiles = Tensor::zeros(&[chunk.len(), th, tw, c]);
        for (t, &(i, y, x)) in chunk.iter().enumerate() {
            let item = &input.data[i * h * w * c..(i + 1) * h * w * c];
            // Tile input rows [y, y + th) of the image padded by the margin on each side.
            extract_tile(
                item,
                [h, w, c],
                (ty.pad_before, tx.pad_before),
                (y, x),
                (th, tw),
                &mut tiles.data[t * th * tw * c..(t + 1) * th * tw * c],
            );
        }
        let result = forward(
            base,
            weights,
            &tiles,
            chunk.len(),
            device,
            precision,
            report,
        )?;
        for (t, &(i, y, x)) in chunk.iter().enumerate() {
            for yy in 0..oh.min(h.saturating_sub(y)) {
                let cols = ow.min(w.saturating_sub(x));
                let src = ((t * oh + yy) * ow) * k;
                let dst = ((i * h + y + yy) * w + x) * k;
                out.data[dst..dst + cols * k].copy_from_slice(&result.data[src..src + cols * k]);
            }
        }
    }
    Ok(out)
}

/// The smallest size >= `n` along one axis that the spec accepts without errors or floored
/// pooling, with the same output size as input size.
fn accepted_size(spec: &Path, n: usize, height: bool, other: usize) -> Result<usize, RunError> {
    for candidate in n..n + 4096 {
        let shape = if height {
            vec![candidate as i64, other as i64, 1]
        } else {
            vec![other as i64, candidate as i64, 1]
        };
        let Ok(c) = compile_file(
            spec,
            &Options {
                input_shape: Some(shape),
            },
            &mut Session::new(),
        ) else {
            continue;
        };
        let clean = !c
            .diags
            .iter()
            .any(|d| d.is_error() || d.code == "W-pool-floor");
        let out_ok = c
            .graph
            .outputs
            .first()
            .and_then(|&o| c.info.layers[o.index()].shape.clone())
            .is_some_and(|s| s.len() == 3 && s[if height { 0 } else { 1 }] as usize == candidate);
        if clean && out_ok {
            return Ok(candidate);
        }
    }
    Err(RunError::Usage(format!(
        "no input size from {n} to {} suits this model",
        n + 4095
    )))
}

fn forward(
    c: &Compiled,
    weights: &Weights,
    input: &Tensor,
    batch: usize,
    device: Device,
    precision: Precision,
    report: &mut RunReport,
) -> Result<Tensor, RunError> {
    let model = Backend::new(device, c, weights, precision)?;
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
        report.device = if matches!(model, Backend::Cuda(_)) {
            "cuda"
        } else {
            "cpu"
        };
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
    if kind == OutputKind::Probabilities {
        return Ok(crate::io::npy::write_npy(path, out, force)?);
    }
    let [n, h, w, k] = [out.shape[0], out.shape[1], out.shape[2], out.shape[3]];
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
            _ => {
                let arg = p
                    .iter()
                    .enumerate()
                    .fold(0, |best, (i, &v)| if v > p[best] { i } else { best });
                (arg * 255 / (k - 1).max(1)) as u8
            }
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
    pub median_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
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
    let model = Backend::new(device, &c, &w, precision)?;
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
    let mut times = match &model {
        // CUDA events around the launches: no host copies in the figure.
        Backend::Cuda(m) => {
            let t = m
                .time(&input, iterations.max(1), cuda_graph)
                .map_err(|e| RunError::Usage(e.to_string()))?;
            graph_used = t.graph;
            notes.extend(t.graph_note);
            measured = Some(t.measured_device_bytes);
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
    times.sort_by(f64::total_cmp);
    let median = if times.len() % 2 == 1 {
        times[times.len() / 2]
    } else {
        (times[times.len() / 2 - 1] + times[times.len() / 2]) / 2.0
    };
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
        images_per_s: batch.max(1) as f64 / (median / 1e3),
        gflop_per_image: flops / 1e9,
        gflops_per_s: flops * batch.max(1) as f64 / (median / 1e3) / 1e9,
        planned_arena_bytes: model.arena_bytes(batch.max(1)),
        peak_device_memory_bytes: model.device_bytes(batch.max(1)),
        measured_device_memory_bytes: measured,
        cuda_graph: graph_used,
        notes,
        peak_rss_bytes: peak_rss(),
    })
}

/// Peak resident set size of this process (Linux `/proc/self/status` VmHWM).
pub fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
