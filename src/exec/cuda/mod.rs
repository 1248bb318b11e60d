//! The CUDA backend: every layer on unetc's own kernels (CUDA C++ in kernels/, compiled at run
//! time by NVRTC for the device's architecture and cached on disk), launched through cudarc.
//! cudarc loads libcuda and libnvrtc dynamically, so the same binary builds and runs without
//! CUDA; [`cuda_available`] says whether a GPU can be used.
//!
//! Tensors live in one device arena laid out by the same plan as the CPU executor's. This first
//! backend is f32 and direct (one thread per output value): correct first, fast later.

mod cache;

use super::plan::{plan, Plan};
use super::tensor::Tensor;
use super::WeightSource;
use crate::infer::Inferred;
use crate::ir::{Graph, NodeId, Op};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, LaunchConfig, PushKernelArg,
};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// The kernel sources, in the order they are concatenated into one NVRTC program.
pub const KERNEL_SOURCES: &[(&str, &str)] = &[
    ("common.cuh", include_str!("kernels/common.cuh")),
    ("conv.cu", include_str!("kernels/conv.cu")),
    ("layers.cu", include_str!("kernels/layers.cu")),
];

/// Every kernel the backend launches (each must exist in the compiled module).
pub const KERNEL_NAMES: &[&str] = &[
    "conv2d_f32",
    "conv2d_transpose_f32",
    "dense_f32",
    "max_pool_f32",
    "upsample_f32",
    "shift_window_f32",
    "concat_part_f32",
    "add_f32",
    "batch_norm_f32",
    "activation_f32",
    "relu_layer_f32",
    "softmax_f32",
    "global_average_pool_f32",
];

/// NVRTC options used for every compile (part of the cache key).
pub const COMPILE_OPTIONS: &[&str] = &["--std=c++17"];

/// The whole program: the header first, then every kernel file.
pub fn program_source() -> String {
    KERNEL_SOURCES
        .iter()
        .map(|(name, src)| format!("// ---- {name}\n{src}\n"))
        .collect()
}

#[derive(Debug, Clone, PartialEq)]
pub enum CudaError {
    /// No usable GPU or driver: the message says what is missing.
    Unavailable(String),
    /// NVRTC rejected the kernels (a bug in unetc): the compiler log.
    Compile(String),
    /// The driver refused an operation.
    Driver(String),
    /// The run needs more device memory than is free.
    Memory { need: u64, free: u64 },
    /// Weights missing or misshaped, or the spec has errors.
    Model(String),
}

impl fmt::Display for CudaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CudaError::Unavailable(why) => write!(f, "no usable CUDA GPU: {why}; use --device cpu"),
            CudaError::Compile(log) => write!(f, "NVRTC could not compile unetc's kernels (please report this):\n{log}"),
            CudaError::Driver(e) => write!(f, "CUDA driver error: {e}"),
            CudaError::Memory { need, free } => write!(
                f,
                "the run needs {} of device memory but only {} is free; use a smaller --batch or tiles",
                crate::report::bytes(*need),
                crate::report::bytes(*free)
            ),
            CudaError::Model(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for CudaError {}

fn driver(e: impl fmt::Debug) -> CudaError {
    CudaError::Driver(format!("{e:?}"))
}

/// Whether libnvrtc can be loaded (kernels can be compiled; no GPU needed).
pub fn nvrtc_available() -> bool {
    // SAFETY: only probes whether the shared library can be opened.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// Whether a CUDA driver and at least one device are present. Never panics.
pub fn cuda_available() -> Result<(), String> {
    // SAFETY: only probes whether the shared library can be opened.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err("the CUDA driver library (libcuda.so) is not installed".into());
    }
    match CudaContext::device_count() {
        Ok(n) if n > 0 => {}
        Ok(_) => return Err("the CUDA driver reports no devices".into()),
        Err(e) => return Err(format!("the CUDA driver reports {e:?}")),
    }
    if !nvrtc_available() {
        return Err("libnvrtc.so.13 (NVRTC, CUDA 13) is not installed".into());
    }
    Ok(())
}

/// Compiles the kernels to PTX for `arch` (e.g. `compute_90`), using the on-disk cache.
pub fn compile(arch: &'static str) -> Result<String, CudaError> {
    if !nvrtc_available() {
        return Err(CudaError::Unavailable(
            "libnvrtc.so.13 (NVRTC, CUDA 13) is not installed".into(),
        ));
    }
    let source = program_source();
    let key = cache::key(&source, COMPILE_OPTIONS, arch);
    if let Some(ptx) = cache::load(&key) {
        return Ok(ptx);
    }
    let opts = cudarc::nvrtc::CompileOptions {
        arch: Some(arch),
        options: COMPILE_OPTIONS.iter().map(|s| s.to_string()).collect(),
        name: Some("unetc_kernels.cu".into()),
        ..Default::default()
    };
    let ptx = cudarc::nvrtc::compile_ptx_with_opts(&source, opts).map_err(|e| match e {
        cudarc::nvrtc::CompileError::CompileError { log, .. } => {
            CudaError::Compile(log.to_string_lossy().into_owned())
        }
        other => CudaError::Compile(format!("{other:?}")),
    })?;
    let text = ptx.to_src();
    cache::store(&key, &text);
    Ok(text)
}

/// `compute_XY` for a compute capability (NVRTC takes a `&'static str`).
fn arch_name(major: i32, minor: i32) -> &'static str {
    match (major, minor) {
        (7, 0) => "compute_70",
        (7, 5) => "compute_75",
        (8, 0) => "compute_80",
        (8, 6) => "compute_86",
        (8, 9) => "compute_89",
        (9, 0) => "compute_90",
        (10, 0) => "compute_100",
        (12, 0) => "compute_120",
        // Newer devices run PTX for the newest architecture NVRTC 13 knows here.
        _ => "compute_90",
    }
}

/// Keras activation names as the kernels' codes (kernels/common.cuh).
pub fn activation_code(name: &str) -> i32 {
    match name {
        "relu" => 1,
        "sigmoid" => 2,
        "softmax" => 3,
        "tanh" => 4,
        "elu" => 5,
        "selu" => 6,
        "softplus" => 7,
        "softsign" => 8,
        "swish" | "silu" => 9,
        "gelu" => 10,
        "exponential" => 11,
        "hard_sigmoid" => 12,
        "relu6" => 13,
        "mish" => 14,
        "leaky_relu" => 15,
        _ => 0,
    }
}

/// One layer's weights on the device (absent bias/gamma/beta become zeros/ones).
struct DeviceWeights {
    tensors: Vec<CudaSlice<f32>>,
}

/// A model ready to run on the GPU.
pub struct CudaModel<'g> {
    graph: &'g Graph,
    info: &'g Inferred,
    plan: Plan,
    stream: Arc<CudaStream>,
    ctx: Arc<CudaContext>,
    functions: HashMap<&'static str, CudaFunction>,
    weights: HashMap<NodeId, DeviceWeights>,
    pub device_name: String,
}

const BLOCK: u32 = 256;

fn grid(total: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (total.div_ceil(BLOCK as usize).max(1) as u32, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

impl<'g> CudaModel<'g> {
    pub fn new(
        graph: &'g Graph,
        info: &'g Inferred,
        weights: &dyn WeightSource,
    ) -> Result<Self, CudaError> {
        cuda_available().map_err(CudaError::Unavailable)?;
        let plan = plan(graph, info).ok_or_else(|| {
            CudaError::Model("the spec has errors; run `unetc check` on it".into())
        })?;
        let ctx = CudaContext::new(0).map_err(driver)?;
        let stream = ctx.default_stream();
        let (major, minor) = ctx.compute_capability().map_err(driver)?;
        let ptx = compile(arch_name(major, minor))?;
        let module = ctx
            .load_module(cudarc::nvrtc::Ptx::from_src(ptx))
            .map_err(driver)?;
        let mut functions = HashMap::new();
        for &name in KERNEL_NAMES {
            functions.insert(name, module.load_function(name).map_err(driver)?);
        }
        let device_name = ctx.name().unwrap_or_else(|_| "CUDA device".into());
        let mut model = CudaModel {
            graph,
            info,
            plan,
            stream,
            ctx,
            functions,
            weights: HashMap::new(),
            device_name,
        };
        model.upload_weights(weights)?;
        Ok(model)
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    fn shape(&self, id: NodeId) -> Vec<usize> {
        self.info.layers[id.index()]
            .shape
            .iter()
            .flatten()
            .map(|&d| d as usize)
            .collect()
    }

    /// Uploads each layer's weights, checked by [`super::bind_weights`].
    fn upload_weights(&mut self, weights: &dyn WeightSource) -> Result<(), CudaError> {
        let nodes: Vec<NodeId> = self.plan.steps.iter().map(|s| s.node).collect();
        let bound =
            super::bind_weights(self.graph, self.info, &nodes, weights).map_err(|problems| {
                CudaError::Model(format!(
                    "the weights do not fit the model:\n  {}",
                    problems.join("\n  ")
                ))
            })?;
        for (id, host) in bound {
            let tensors = host
                .iter()
                .map(|h| self.stream.clone_htod(h).map_err(driver))
                .collect::<Result<Vec<_>, _>>()?;
            self.weights.insert(id, DeviceWeights { tensors });
        }
        Ok(())
    }

    /// Device memory a batch needs beyond the weights (the activation arena).
    pub fn arena_bytes(&self, batch: usize) -> u64 {
        self.plan.arena_bytes(batch)
    }

    /// Runs a batch `[N, H, W, C]`; returns the model's outputs.
    pub fn run(&self, input: &Tensor) -> Result<Vec<Tensor>, CudaError> {
        let want = self.shape(self.graph.inputs[0]);
        if input.shape.len() != want.len() + 1 || input.shape[1..] != want[..] {
            return Err(CudaError::Model(format!(
                "the input has shape {:?} but the model takes (N, {:?})",
                input.shape, want
            )));
        }
        let batch = input.shape[0];
        let need = self.arena_bytes(batch);
        let (free, _) = self.ctx.mem_get_info().map_err(driver)?;
        if need > free as u64 {
            return Err(CudaError::Memory {
                need,
                free: free as u64,
            });
        }
        let mut arena = self
            .stream
            .alloc_zeros::<f32>(self.plan.arena_len * batch)
            .map_err(driver)?;
        for step in &self.plan.steps {
            self.launch(step, &mut arena, input, batch)?;
        }
        let mut outputs = Vec::new();
        for (range, &id) in self.plan.outputs.iter().zip(&self.graph.outputs) {
            let view = arena.slice(range.start * batch..range.end * batch);
            let data = self.stream.clone_dtoh(&view).map_err(driver)?;
            let mut shape = vec![batch];
            shape.extend(self.shape(id));
            outputs.push(Tensor { shape, data });
        }
        Ok(outputs)
    }

    /// Timing helper: runs `iterations` batches and returns each one's milliseconds (CUDA events).
    pub fn time(&self, input: &Tensor, iterations: usize) -> Result<Vec<f64>, CudaError> {
        let batch = input.shape[0];
        let mut arena = self
            .stream
            .alloc_zeros::<f32>(self.plan.arena_len * batch)
            .map_err(driver)?;
        let mut times = Vec::new();
        for _ in 0..iterations {
            let start = self.ctx.new_event(None).map_err(driver)?;
            let end = self.ctx.new_event(None).map_err(driver)?;
            start.record(&self.stream).map_err(driver)?;
            for step in &self.plan.steps {
                self.launch(step, &mut arena, input, batch)?;
            }
            end.record(&self.stream).map_err(driver)?;
            end.synchronize().map_err(driver)?;
            times.push(start.elapsed_ms(&end).map_err(driver)? as f64);
        }
        Ok(times)
    }

    fn launch(
        &self,
        step: &super::plan::Step,
        arena: &mut CudaSlice<f32>,
        input: &Tensor,
        batch: usize,
    ) -> Result<(), CudaError> {
        let node = self.graph.node(step.node);
        let out_shape = self.shape(step.node);
        let in_shapes: Vec<Vec<usize>> = node.inputs.iter().map(|&p| self.shape(p)).collect();
        let y_off = (step.output.start * batch) as i64;
        let x_off = step.inputs.first().map_or(0, |r| (r.start * batch) as i64);
        let n_out = out_shape.iter().product::<usize>() * batch;
        let i = |v: usize| v as i32;
        let hwc = |s: &[usize]| {
            [
                s[0],
                s.get(1).copied().unwrap_or(1),
                s.get(2).copied().unwrap_or(1),
            ]
        };
        let f = |name: &str| &self.functions[name];
        let w = self.weights.get(&step.node);
        let stream = &self.stream;
        // SAFETY (every launch below): the arguments match the kernel's C signature in
        // kernels/*.cu in order and type; offsets and sizes come from the plan, which keeps each
        // tensor inside the arena (arena_len * batch elements) and a layer's output apart from
        // its inputs; weight buffers were uploaded with the shapes the kernels index.
        match &node.op {
            Op::Input(_) => {
                let mut view = arena.slice_mut(step.output.start * batch..step.output.end * batch);
                stream.memcpy_htod(&input.data, &mut view).map_err(driver)?;
            }
            Op::Conv2D(op) => {
                let a = &op.args;
                let [h, wd, c] = hwc(&in_shapes[0]);
                let [oh, ow, fo] = hwc(&out_shape);
                let (kh, kw) = (a.kernel_size[0] as usize, a.kernel_size[1] as usize);
                let (sh, sw) = (a.strides[0] as usize, a.strides[1] as usize);
                let (dh, dw) = (a.dilation_rate[0] as usize, a.dilation_rate[1] as usize);
                let (pt, pl) = (a.pad_before(0, h, oh), a.pad_before(1, wd, ow));
                let dw_ =
                    w.ok_or_else(|| CudaError::Model(format!("no weights for `{}`", node.name)))?;
                let act = activation_code(&a.activation);
                let (bn, hh, ww, cc, ohh, oww, ff) =
                    (i(batch), i(h), i(wd), i(c), i(oh), i(ow), i(fo));
                let (khh, kww, shh, sww, dhh, dww, ptt, pll) =
                    (i(kh), i(kw), i(sh), i(sw), i(dh), i(dw), i(pt), i(pl));
                self.launch_weighted(
                    "conv2d_f32",
                    arena,
                    x_off,
                    y_off,
                    dw_,
                    &[
                        bn, hh, ww, cc, ohh, oww, ff, khh, kww, shh, sww, dhh, dww, ptt, pll, act,
                    ],
                    n_out,
                )?;
                if a.activation == "softmax" {
                    self.softmax_in_place(arena, y_off, (n_out / fo.max(1)) as i64, i(fo), 1)?;
                }
            }
            Op::Conv2DTranspose(op) => {
                let a = &op.args;
                let [h, wd, c] = hwc(&in_shapes[0]);
                let [oh, ow, fo] = hwc(&out_shape);
                let (kh, kw) = (a.kernel_size[0] as usize, a.kernel_size[1] as usize);
                let (sh, sw) = (a.strides[0] as usize, a.strides[1] as usize);
                let (y0, x0) = (op.crop_before(0, h, oh), op.crop_before(1, wd, ow));
                let dw_ =
                    w.ok_or_else(|| CudaError::Model(format!("no weights for `{}`", node.name)))?;
                let act = activation_code(&a.activation);
                let (bn, hh, ww, cc, ohh, oww, ff) =
                    (i(batch), i(h), i(wd), i(c), i(oh), i(ow), i(fo));
                let (khh, kww, shh, sww, y0_, x0_) = (i(kh), i(kw), i(sh), i(sw), i(y0), i(x0));
                self.launch_weighted(
                    "conv2d_transpose_f32",
                    arena,
                    x_off,
                    y_off,
                    dw_,
                    &[
                        bn, hh, ww, cc, ohh, oww, ff, khh, kww, shh, sww, y0_, x0_, act,
                    ],
                    n_out,
                )?;
                if a.activation == "softmax" {
                    self.softmax_in_place(arena, y_off, (n_out / fo.max(1)) as i64, i(fo), 1)?;
                }
            }
            Op::Dense(op) => {
                let n_in = in_shapes[0].last().copied().unwrap_or(1);
                let units = out_shape.last().copied().unwrap_or(1);
                let rows = n_out / units.max(1);
                let dw_ =
                    w.ok_or_else(|| CudaError::Model(format!("no weights for `{}`", node.name)))?;
                let act = activation_code(&op.activation);
                let (r, ni, u) = (i(rows), i(n_in), i(units));
                self.launch_weighted(
                    "dense_f32",
                    arena,
                    x_off,
                    y_off,
                    dw_,
                    &[r, ni, u, act],
                    n_out,
                )?;
                if op.activation == "softmax" {
                    self.softmax_in_place(arena, y_off, rows as i64, u, 1)?;
                }
            }
            Op::MaxPooling2D(op) => {
                let [h, wd, c] = hwc(&in_shapes[0]);
                let [oh, ow, _] = hwc(&out_shape);
                let (kh, kw) = (op.pool_size[0] as usize, op.pool_size[1] as usize);
                let (sh, sw) = (op.strides[0] as usize, op.strides[1] as usize);
                let (pt, pl) = (op.pad_before(0, h, oh), op.pad_before(1, wd, ow));
                let args = [
                    i(batch),
                    i(h),
                    i(wd),
                    i(c),
                    i(oh),
                    i(ow),
                    i(kh),
                    i(kw),
                    i(sh),
                    i(sw),
                    i(pt),
                    i(pl),
                ];
                let mut b = stream.launch_builder(f("max_pool_f32"));
                b.arg(&mut *arena).arg(&x_off).arg(&y_off);
                for a in &args {
                    b.arg(a);
                }
                unsafe { b.launch(grid(n_out)).map_err(driver)? };
            }
            Op::UpSampling2D(op) => {
                let [h, wd, c] = hwc(&in_shapes[0]);
                let [oh, ow, _] = hwc(&out_shape);
                let args = [
                    i(batch),
                    i(h),
                    i(wd),
                    i(c),
                    i(oh),
                    i(ow),
                    op.size[0] as i32,
                    op.size[1] as i32,
                    i32::from(op.interpolation == "bilinear"),
                ];
                let mut b = stream.launch_builder(f("upsample_f32"));
                b.arg(&mut *arena).arg(&x_off).arg(&y_off);
                for a in &args {
                    b.arg(a);
                }
                unsafe { b.launch(grid(n_out)).map_err(driver)? };
            }
            Op::Cropping2D(_) | Op::ZeroPadding2D(_) => {
                let [h, wd, c] = hwc(&in_shapes[0]);
                let [oh, ow, _] = hwc(&out_shape);
                let (t, l) = match &node.op {
                    Op::Cropping2D(op) => (op.cropping[0] as i32, op.cropping[2] as i32),
                    Op::ZeroPadding2D(op) => (-(op.padding[0] as i32), -(op.padding[2] as i32)),
                    _ => (0, 0),
                };
                let args = [i(batch), i(h), i(wd), i(c), i(oh), i(ow), t, l];
                let mut b = stream.launch_builder(f("shift_window_f32"));
                b.arg(&mut *arena).arg(&x_off).arg(&y_off);
                for a in &args {
                    b.arg(a);
                }
                unsafe { b.launch(grid(n_out)).map_err(driver)? };
            }
            Op::Concatenate(op) => {
                let rank = in_shapes[0].len() as i64 + 1;
                let axis = (if op.axis < 0 { rank + op.axis } else { op.axis } - 1) as usize;
                let outer = (batch * in_shapes[0][..axis].iter().product::<usize>()) as i64;
                let lens: Vec<usize> = in_shapes
                    .iter()
                    .map(|s| s[axis..].iter().product())
                    .collect();
                let total = i(lens.iter().sum());
                let mut at = 0usize;
                for (range, &len) in step.inputs.iter().zip(&lens) {
                    let xo = (range.start * batch) as i64;
                    let (l, a) = (i(len), i(at));
                    unsafe {
                        stream
                            .launch_builder(f("concat_part_f32"))
                            .arg(&mut *arena)
                            .arg(&xo)
                            .arg(&y_off)
                            .arg(&outer)
                            .arg(&l)
                            .arg(&total)
                            .arg(&a)
                            .launch(grid(outer as usize * len))
                            .map_err(driver)?;
                    }
                    at += len;
                }
            }
            Op::Add(_) => {
                let n = n_out as i64;
                let first = (step.inputs[0].start * batch) as i64;
                for (k, range) in step.inputs.iter().enumerate().skip(1) {
                    let a_off = if k == 1 { first } else { y_off };
                    let b_off = (range.start * batch) as i64;
                    unsafe {
                        stream
                            .launch_builder(f("add_f32"))
                            .arg(&mut *arena)
                            .arg(&a_off)
                            .arg(&b_off)
                            .arg(&y_off)
                            .arg(&n)
                            .launch(grid(n_out))
                            .map_err(driver)?;
                    }
                }
            }
            Op::BatchNormalization(op) => {
                let c = i(out_shape.last().copied().unwrap_or(1));
                let dw_ =
                    w.ok_or_else(|| CudaError::Model(format!("no weights for `{}`", node.name)))?;
                let (eps, n) = (op.epsilon as f32, n_out as i64);
                unsafe {
                    stream
                        .launch_builder(f("batch_norm_f32"))
                        .arg(&mut *arena)
                        .arg(&x_off)
                        .arg(&y_off)
                        .arg(&dw_.tensors[0])
                        .arg(&dw_.tensors[1])
                        .arg(&dw_.tensors[2])
                        .arg(&dw_.tensors[3])
                        .arg(&eps)
                        .arg(&n)
                        .arg(&c)
                        .launch(grid(n_out))
                        .map_err(driver)?;
                }
            }
            Op::Activation(op) => {
                let (n, act) = (n_out as i64, activation_code(&op.activation));
                self.elementwise(
                    arena,
                    x_off,
                    y_off,
                    n,
                    if op.activation == "softmax" { 0 } else { act },
                )?;
                if op.activation == "softmax" {
                    let c = out_shape.last().copied().unwrap_or(1);
                    self.softmax_in_place(arena, y_off, (n_out / c.max(1)) as i64, i(c), 1)?;
                }
            }
            Op::Dropout(_) | Op::Flatten(_) => {
                self.elementwise(arena, x_off, y_off, n_out as i64, 0)?
            }
            Op::ReLU(op) => {
                let (n, has_max) = (n_out as i64, i32::from(op.max_value.is_some()));
                let (mx, slope, t) = (
                    op.max_value.unwrap_or(0.0) as f32,
                    op.negative_slope as f32,
                    op.threshold as f32,
                );
                unsafe {
                    stream
                        .launch_builder(f("relu_layer_f32"))
                        .arg(&mut *arena)
                        .arg(&x_off)
                        .arg(&y_off)
                        .arg(&n)
                        .arg(&has_max)
                        .arg(&mx)
                        .arg(&slope)
                        .arg(&t)
                        .launch(grid(n_out))
                        .map_err(driver)?;
                }
            }
            Op::Softmax(op) => {
                let mut full = vec![batch];
                full.extend(&out_shape);
                let rank = full.len() as i64;
                let axis = (if op.axis < 0 { rank + op.axis } else { op.axis }) as usize;
                let outer = full[..axis].iter().product::<usize>() as i64;
                let len = i(full[axis]);
                let inner = full[axis + 1..].iter().product::<usize>() as i64;
                self.elementwise(arena, x_off, y_off, n_out as i64, 0)?;
                self.softmax_in_place(arena, y_off, outer, len, inner)?;
            }
            Op::GlobalAveragePooling2D(_) => {
                let [h, wd, c] = hwc(&in_shapes[0]);
                let (nb, hw, cc) = (i(batch), i(h * wd), i(c));
                unsafe {
                    stream
                        .launch_builder(f("global_average_pool_f32"))
                        .arg(&mut *arena)
                        .arg(&x_off)
                        .arg(&y_off)
                        .arg(&nb)
                        .arg(&hw)
                        .arg(&cc)
                        .launch(grid(batch * c))
                        .map_err(driver)?;
                }
            }
        }
        Ok(())
    }

    /// Launches a kernel with weights: `(arena, x_off, y_off, weights[0], weights[1], ints...)`.
    #[allow(clippy::too_many_arguments)]
    fn launch_weighted(
        &self,
        name: &str,
        arena: &mut CudaSlice<f32>,
        x_off: i64,
        y_off: i64,
        w: &DeviceWeights,
        ints: &[i32],
        total: usize,
    ) -> Result<(), CudaError> {
        let mut b = self.stream.launch_builder(&self.functions[name]);
        b.arg(arena)
            .arg(&x_off)
            .arg(&y_off)
            .arg(&w.tensors[0])
            .arg(&w.tensors[1]);
        for v in ints {
            b.arg(v);
        }
        // SAFETY: `name` is one of conv2d_f32, conv2d_transpose_f32, dense_f32, whose C signatures
        // are (float*, i64, i64, const float*, const float*, int...) with the ints in this order
        // (kernels/conv.cu); offsets and sizes come from the plan, weights were uploaded checked.
        unsafe { b.launch(grid(total)).map_err(driver)? };
        Ok(())
    }

    fn elementwise(
        &self,
        arena: &mut CudaSlice<f32>,
        x_off: i64,
        y_off: i64,
        n: i64,
        act: i32,
    ) -> Result<(), CudaError> {
        // SAFETY: matches activation_f32(float*, i64, i64, i64, int); both ranges hold n values.
        unsafe {
            self.stream
                .launch_builder(&self.functions["activation_f32"])
                .arg(arena)
                .arg(&x_off)
                .arg(&y_off)
                .arg(&n)
                .arg(&act)
                .launch(grid(n as usize))
                .map_err(driver)?;
        }
        Ok(())
    }

    fn softmax_in_place(
        &self,
        arena: &mut CudaSlice<f32>,
        off: i64,
        outer: i64,
        len: i32,
        inner: i64,
    ) -> Result<(), CudaError> {
        // SAFETY: matches softmax_f32(float*, i64, i64, i64, int, i64); outer*len*inner values
        // start at `off`, inside the arena.
        unsafe {
            self.stream
                .launch_builder(&self.functions["softmax_f32"])
                .arg(arena)
                .arg(&off)
                .arg(&off)
                .arg(&outer)
                .arg(&len)
                .arg(&inner)
                .launch(grid((outer * inner) as usize))
                .map_err(driver)?;
        }
        Ok(())
    }
}
