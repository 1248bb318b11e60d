//! The CUDA backend: every layer on unetc's own kernels (CUDA C++ in kernels/, compiled at run
//! time by NVRTC for the device's architecture and cached on disk), launched through cudarc.
//! cudarc loads libcuda and libnvrtc dynamically, so the same binary builds and runs without
//! CUDA; [`cuda_available`] says whether a GPU can be used.
//!
//! Tensors live in one device arena (f32, or bf16 at `--precision bf16`) laid out by the same plan
//! as the CPU executor's. Convolutions run as implicit GEMMs on tensor cores (igemm.cu: bf16, tf32,
//! and f32 as 3xTF32), or the first-layer kernel for few input channels; the direct kernels in
//! conv.cu are the fallback for shapes those do not take. Other layers run one thread per output
//! value (layers.cu).

mod cache;

use super::plan::{hwc, plan, Plan, Storage, Window, Work};
use super::tensor::Tensor;
use super::{Precision, WeightSource};
use crate::infer::Inferred;
use crate::ir::ops::{
    ActivationFn, Average, ImageReduceFn, ImageResize, Interpolation, LambdaBody, Maximum, MergeFn,
    Minimum, Multiply, PadMode, ReduceFn, ScalarFn, ScalarOp, Subtract, TfCompute,
    VolumeInterpolation, WindowGeometry,
};
use crate::ir::{Graph, NodeId, Op};
use cudarc::driver::{
    CudaContext, CudaEvent, CudaFunction, CudaSlice, CudaStream, DeviceRepr, LaunchConfig,
    PushKernelArg, ValidAsZeroBits,
};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// The kernel sources, in the order they are concatenated into one NVRTC program.
pub const KERNEL_SOURCES: &[(&str, &str)] = &[
    ("common.cuh", include_str!("kernels/common.cuh")),
    ("elem.cuh", include_str!("kernels/elem.cuh")),
    ("conv.cu", include_str!("kernels/conv.cu")),
    ("layers.cu", include_str!("kernels/layers.cu")),
    ("attention.cu", include_str!("kernels/attention.cu")),
    ("swin.cu", include_str!("kernels/swin.cu")),
    ("volume.cu", include_str!("kernels/volume.cu")),
    ("igemm.cu", include_str!("kernels/igemm.cu")),
    ("first_layer.cu", include_str!("kernels/first_layer.cu")),
    ("train.cu", include_str!("kernels/train.cu")),
];

/// The layer kernels, each instantiated for f32 and bf16 arenas (`<name>_f32`, `<name>_bf16`).
pub const LAYER_KERNELS: &[&str] = &[
    "conv2d",
    "conv2d_transpose",
    "dense",
    "max_pool",
    "resize",
    "shift_window",
    "concat_part",
    "permute",
    "add",
    "scaled_add",
    "repeat_channels",
    "batch_norm",
    "standardize",
    "activation",
    "relu_layer",
    "scalar_op",
    "reduce_channels",
    "softmax",
    "global_average_pool",
    "global_max_pool",
    "average_pool",
    "merge",
    "merge_constant",
    "elu_layer",
    "prelu",
    "snake",
    "group_norm",
    "grouped_conv2d",
    "separable_conv2d",
    "conv_small_c",
    "splitk_reduce",
    "conv3d",
    "conv3d_transpose",
    "pool3d",
    "resample3d",
    "upsample3d_linear",
    "attention_project",
    "attention_output",
    "patch_extract",
    "patch_embedding",
    "swin_load",
    "swin_output",
    "patch_merging",
    "patch_expanding",
];

/// Inference kernels without an arena type (f32 scratch only).
pub const SCRATCH_KERNELS: &[&str] = &[
    "attention_scores",
    "attention_softmax",
    "attention_weighted",
    "swin_norm",
    "swin_gather",
    "swin_dense",
    "swin_scores_bias",
    "swin_scatter_add",
];

/// The training kernels (kernels/train.cu, f32 only), loaded by `unetc train --device cuda`
/// (src/train/cuda.rs), not by inference.
pub const TRAIN_KERNELS: &[&str] = &[
    "train_activation_backward",
    "train_softmax_backward",
    "train_scale_add",
    "train_window_add_f32",
    "train_conv2d_dx_f32",
    "train_conv2d_dw_f32",
    "train_bias_grad_f32",
    "train_conv2d_transpose_dx_f32",
    "train_conv2d_transpose_dw_f32",
    "train_max_pool_dx_f32",
    "train_average_pool_dx_f32",
    "train_resize_nearest_dx_f32",
    "train_resize_bilinear_dx_f32",
    "train_bn_moments_f32",
    "train_bn_moving",
    "train_bn_forward_f32",
    "train_bn_param_grads_f32",
    "train_bn_dx_f32",
    "train_loss_categorical",
    "train_loss_binary",
    "train_loss_mse",
    "train_sum_chunks",
    "train_sum_partials",
    "train_dice_grad",
    "train_adam",
    "train_sgd",
    "train_rmsprop",
];

/// The tensor-core convolutions (kernels/igemm.cu): `_small` ones take any alignment.
pub const IGEMM_KERNELS: &[&str] = &[
    "conv_igemm_bf16",
    "conv_igemm_bf16_small",
    "conv_igemm_tf32",
    "conv_igemm_tf32_small",
    "conv_igemm_bf16_head",
    "conv_igemm_bf16_small_head",
    "conv_igemm_tf32_head",
    "conv_igemm_tf32_small_head",
    "conv_igemm_f32x3",
    "conv_igemm_f32x3_small",
    "conv_igemm_f32x3_head",
    "conv_igemm_f32x3_small_head",
    "conv_igemm_bf16_splitk",
    "conv_igemm_tf32_splitk",
    "conv_igemm_f32x3_splitk",
];

/// Whether kernels/first_layer.cu takes a convolution (few input channels: the U-Net's first
/// layer), by the limits it documents.
pub fn small_c_fits(c: usize, [kh, kw]: [usize; 2], stride_w: usize, [dh, dw]: [usize; 2]) -> bool {
    c * kh * kw <= 64
        && c * ((kh.max(1) - 1) * dh + 1) * (31 * stride_w + (kw.max(1) - 1) * dw + 1) <= 2992
}

/// Whether a batch stays within the kernels' 32-bit indexing: every value's element count for
/// the whole batch (hence every GEMM's row count) fits an `int`, and the batch fits a grid's
/// z dimension. `Err` names the largest value and what to do.
pub fn index_limits(graph: &Graph, info: &Inferred, batch: usize) -> Result<(), String> {
    const GRID_Z: usize = 65535;
    if batch > GRID_Z {
        return Err(format!(
            "a batch of {batch} is more than the GPU kernels take ({GRID_Z}); use a smaller --batch"
        ));
    }
    let limit = i32::MAX as u128;
    for &id in &info.schedule {
        let Some(shape) = info.layers[id.index()].shape.as_ref() else {
            continue;
        };
        let per_item: u128 = shape.iter().map(|&d| d.max(0) as u128).product();
        if per_item * batch as u128 > limit {
            return Err(format!(
                "`{}` holds {} values for a batch of {batch}, more than the GPU kernels' 32-bit \
                 indexing allows ({limit}); use a smaller --batch, or tiles for large images",
                graph.node(id).name,
                per_item * batch as u128
            ));
        }
    }
    Ok(())
}

/// The largest 1x1 head kernels/igemm.cu fuses into the convolution before it.
const HEAD_MAX_FILTERS: usize = 8;

/// Every tensor-core kernel: each of [`IGEMM_KERNELS`] in its 128x128 block tile and, with
/// `_n64`, in the 128x64 one (for GEMMs with at most 64 columns).
pub fn igemm_kernel_names() -> Vec<String> {
    IGEMM_KERNELS
        .iter()
        .flat_map(|k| [k.to_string(), format!("{k}_n64")])
        .collect()
}

/// Every kernel the backend launches (each must exist in the compiled module).
pub fn kernel_names() -> Vec<String> {
    LAYER_KERNELS
        .iter()
        .flat_map(|k| [format!("{k}_f32"), format!("{k}_bf16")])
        .chain(SCRATCH_KERNELS.iter().map(|k| k.to_string()))
        .chain(igemm_kernel_names())
        .collect()
}

/// A tensor-core block tile, with the launch facts kernels/igemm.cu documents for it.
#[derive(Debug, Clone, Copy)]
struct Tile {
    /// 64 (the `_n64` kernels) or 128 GEMM columns per block.
    columns: usize,
    threads: u32,
    /// Dynamic shared memory, bytes.
    smem: u32,
    /// Blocks resident per SM (the split-K rule's R).
    per_sm: usize,
}

impl Tile {
    /// The tile for a GEMM with `columns` columns at a precision: 128x64 when 64 columns are
    /// enough (the U-Net's top level has 64 filters), else 128x128.
    fn for_columns(columns: usize, precision: Precision) -> Tile {
        let narrow = columns <= 64;
        match (precision, narrow) {
            (Precision::Bf16, false) => Tile {
                columns: 128,
                threads: 256,
                smem: 49152,
                per_sm: 2,
            },
            (Precision::Tf32, false) => Tile {
                columns: 128,
                threads: 256,
                smem: 98304,
                per_sm: 2,
            },
            (Precision::F32, false) => Tile {
                columns: 128,
                threads: 256,
                smem: 98304,
                per_sm: 1,
            },
            (Precision::Bf16, true) => Tile {
                columns: 64,
                threads: 128,
                smem: 49152,
                per_sm: 4,
            },
            (Precision::Tf32, true) => Tile {
                columns: 64,
                threads: 128,
                smem: 73728,
                per_sm: 3,
            },
            (Precision::F32, true) => Tile {
                columns: 64,
                threads: 128,
                smem: 98304,
                per_sm: 2,
            },
        }
    }

    fn suffix(&self) -> &'static str {
        if self.columns == 64 {
            "_n64"
        } else {
            ""
        }
    }
}

/// The dynamic shared memory a tensor-core kernel is launched with at `precision` (its tile's,
/// by the `_n64` suffix), or `None` for a kernel of another precision.
fn igemm_dynamic_smem(name: &str, precision: Precision) -> Option<u32> {
    let base = match precision {
        Precision::Bf16 => "conv_igemm_bf16",
        Precision::Tf32 => "conv_igemm_tf32",
        Precision::F32 => "conv_igemm_f32x3",
    };
    let columns = if name.ends_with("_n64") { 64 } else { 128 };
    name.starts_with(base)
        .then(|| Tile::for_columns(columns, precision).smem)
}

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
                crate::text::bytes(*need),
                crate::text::bytes(*free)
            ),
            CudaError::Model(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for CudaError {}

pub(crate) fn driver(e: impl fmt::Debug) -> CudaError {
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

/// Free memory on GPU 0 as the driver reports it; `None` without a usable GPU.
pub fn free_device_memory() -> Option<u64> {
    cuda_available().ok()?;
    let ctx = CudaContext::new(0).ok()?;
    ctx.mem_get_info().ok().map(|(free, _)| free as u64)
}

/// The NVRTC library's version (part of every cache key: a newer NVRTC writes PTX that an older
/// driver may reject, so its output must not be mistaken for another's).
pub fn nvrtc_version() -> Result<(i32, i32), CudaError> {
    if !nvrtc_available() {
        return Err(CudaError::Unavailable(
            "libnvrtc.so.13 (NVRTC, CUDA 13) is not installed".into(),
        ));
    }
    let (mut major, mut minor) = (0, 0);
    // SAFETY: two out-pointers to live integers; the library was found above.
    unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) }
        .result()
        .map_err(|e| CudaError::Compile(format!("nvrtcVersion: {e:?}")))?;
    Ok((major, minor))
}

/// Compiles the kernels to PTX for `arch` (e.g. `compute_90`), using the on-disk cache. The
/// driver JIT-compiles PTX at every load: the fallback where no cubin can be made or loaded.
pub fn compile(arch: &str) -> Result<String, CudaError> {
    let ptx = compile_cached(arch, "ptx")?;
    String::from_utf8(ptx)
        .map_err(|_| CudaError::Compile("NVRTC wrote PTX that is not UTF-8".into()))
}

/// Compiles the kernels to a cubin for a real architecture (`sm_90`), using the on-disk cache:
/// the driver loads it as it is, with no JIT at start-up.
pub fn compile_cubin(sm: &str) -> Result<Vec<u8>, CudaError> {
    compile_cached(sm, "cubin")
}

fn compile_cached(target: &str, ext: &str) -> Result<Vec<u8>, CudaError> {
    let version = nvrtc_version()?;
    let source = program_source();
    let key = cache::key(&source, COMPILE_OPTIONS, target, version);
    if let Some(body) = cache::load(&key, ext) {
        return Ok(body);
    }
    let body = nvrtc_compile(&source, target, ext == "cubin")?;
    cache::store(&key, ext, &body);
    Ok(body)
}

/// One NVRTC compile of `source` for `target`, returning the cubin or the PTX (without its NUL).
fn nvrtc_compile(source: &str, target: &str, cubin: bool) -> Result<Vec<u8>, CudaError> {
    use cudarc::nvrtc::{result, sys};
    let failed = |what: &str, e: result::NvrtcError| CudaError::Compile(format!("{what}: {e:?}"));
    let src = std::ffi::CString::new(source)
        .map_err(|_| CudaError::Compile("kernel source holds a NUL byte".into()))?;
    let prog = result::create_program(&src, Some(c"unetc_kernels.cu"))
        .map_err(|e| failed("nvrtcCreateProgram", e))?;
    let mut options: Vec<String> = COMPILE_OPTIONS.iter().map(|o| o.to_string()).collect();
    options.push(format!("--gpu-architecture={target}"));
    // SAFETY: `prog` was created above and is destroyed once, below, after its last use; the
    // buffers handed to NVRTC are sized by the size NVRTC reported.
    let out = unsafe {
        match result::compile_program(prog, &options) {
            Err(e) => Err(match result::get_program_log(prog) {
                Ok(log) => CudaError::Compile(
                    std::ffi::CStr::from_ptr(log.as_ptr())
                        .to_string_lossy()
                        .into_owned(),
                ),
                Err(_) => failed("nvrtcCompileProgram", e),
            }),
            Ok(()) if cubin => {
                let mut size = 0usize;
                sys::nvrtcGetCUBINSize(prog, &mut size)
                    .result()
                    .map_err(|e| failed("nvrtcGetCUBINSize", e))
                    .and_then(|()| {
                        let mut bytes = vec![0u8; size];
                        sys::nvrtcGetCUBIN(prog, bytes.as_mut_ptr().cast())
                            .result()
                            .map(|()| bytes)
                            .map_err(|e| failed("nvrtcGetCUBIN", e))
                    })
            }
            Ok(()) => result::get_ptx(prog)
                .map(|text| {
                    text.iter()
                        .take_while(|&&c| c != 0)
                        .map(|&c| c as u8)
                        .collect()
                })
                .map_err(|e| failed("nvrtcGetPTX", e)),
        }
    };
    // SAFETY: created above, not destroyed before.
    let _ = unsafe { result::destroy_program(prog) };
    out
}

/// How the kernels reached the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelImage {
    /// A cubin for the device's exact architecture (`sm_90`): no JIT at load.
    Cubin(String),
    /// PTX the driver JIT-compiled, and why no cubin was used.
    Ptx { arch: &'static str, why: String },
}

impl fmt::Display for KernelImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KernelImage::Cubin(sm) => write!(f, "{sm} cubin"),
            KernelImage::Ptx { arch, why } => {
                write!(f, "{arch} PTX, JIT-compiled by the driver ({why})")
            }
        }
    }
}

/// The kernels as a module: a cubin for `sm_{major}{minor}` (compiled once, cached), or PTX
/// for the driver to JIT where NVRTC cannot target the device or the driver refuses the cubin.
fn load_kernels(
    ctx: &Arc<CudaContext>,
    (major, minor): (i32, i32),
) -> Result<(Arc<cudarc::driver::CudaModule>, KernelImage), CudaError> {
    let sm = format!("sm_{major}{minor}");
    let why = match compile_cubin(&sm) {
        Ok(cubin) => match ctx.load_module(cudarc::nvrtc::Ptx::from_binary(cubin)) {
            Ok(module) => return Ok((module, KernelImage::Cubin(sm))),
            Err(e) => format!("the driver refused the {sm} cubin: {e:?}"),
        },
        Err(CudaError::Compile(log)) => format!(
            "NVRTC made no {sm} cubin: {}",
            log.lines().next().unwrap_or("")
        ),
        Err(e) => return Err(e),
    };
    let arch = arch_name(major, minor);
    let module = ctx
        .load_module(cudarc::nvrtc::Ptx::from_src(compile(arch)?))
        .map_err(driver)?;
    Ok((module, KernelImage::Ptx { arch, why }))
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

/// A padding's mode as layers.cu's `pad_source` reads it.
fn pad_mode_code(mode: PadMode) -> i32 {
    match mode {
        PadMode::Zeros => 0,
        PadMode::Reflect => 1,
        PadMode::Replicate => 2,
        PadMode::Symmetric => 3,
    }
}

/// Merges as the `merge` kernel's codes (kernels/layers.cu).
fn merge_code(function: MergeFn) -> i32 {
    match function {
        MergeFn::Add | MergeFn::Average => 0,
        MergeFn::Multiply => 1,
        MergeFn::Subtract => 2,
        MergeFn::Maximum => 3,
        MergeFn::Minimum => 4,
        MergeFn::Divide => 5,
    }
}

/// The view of a constant operand of `item` shape (its batch axis dropped) against an output of
/// `out` shape: leading axes of size 1 added up to the output's rank, no batch stride. `None`
/// where a volume's view (depth and height folded into rows) cannot broadcast it.
fn constant_view(item: &[i64], out: &[usize]) -> Option<View> {
    let missing = out.len().checked_sub(item.len())?;
    let mut dims: Vec<usize> = vec![1; missing];
    dims.extend(item.iter().map(|&d| d.max(1) as usize));
    if let ([d, h, ..], [od, oh, ..]) = (&dims[..], out) {
        let folds = (d == od && h == oh) || (*d == 1 && *h == 1);
        if dims.len() == 4 && !folds {
            return None;
        }
    }
    let [h, w, c] = crate::exec::plan::hwc(&dims);
    Some(View {
        offset: 0,
        item_stride: 0,
        row_stride: (w * c) as i64,
        pixel_stride: c as i32,
        h: h as i32,
        w: w as i32,
        c: c as i32,
    })
}

/// keras-unet-collection's GELU layer in the kernels' `activate` (ACT_GELU_TANH).
const GELU_TANH_CODE: i32 = 16;

/// Keras activations as the kernels' codes (kernels/common.cuh).
pub fn activation_code(activation: ActivationFn) -> i32 {
    match activation {
        ActivationFn::Linear => 0,
        ActivationFn::Relu => 1,
        ActivationFn::Sigmoid => 2,
        ActivationFn::Softmax => 3,
        ActivationFn::Tanh => 4,
        ActivationFn::Elu => 5,
        ActivationFn::Selu => 6,
        ActivationFn::Softplus => 7,
        ActivationFn::Softsign => 8,
        ActivationFn::Swish | ActivationFn::Silu => 9,
        ActivationFn::Gelu => 10,
        ActivationFn::Exponential => 11,
        ActivationFn::HardSigmoid => 12,
        ActivationFn::Relu6 => 13,
        ActivationFn::Mish => 14,
        ActivationFn::LeakyRelu => 15,
    }
}

/// The resize kernels' mode (kernels/common.cuh): 0 nearest, 1 bilinear at half-pixel
/// centres, 2 bilinear with aligned corners.
pub fn resize_mode(op: ImageResize) -> i32 {
    match op.interpolation {
        Interpolation::Nearest => 0,
        Interpolation::Bilinear => 1 + i32::from(op.align_corners),
    }
}

/// An NHWC window of the arena as the kernels take it (`View` in kernels/common.cuh).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct View {
    pub offset: i64,
    pub item_stride: i64,
    pub row_stride: i64,
    pub pixel_stride: i32,
    pub h: i32,
    pub w: i32,
    pub c: i32,
}

// SAFETY: plain old data with the C layout of `struct View` (three i64 then four int).
unsafe impl DeviceRepr for View {}

impl View {
    /// The window of a plan for a batch: items of a buffer lie back to back.
    pub fn of(plan: &Plan, w: &Window, batch: usize) -> View {
        View {
            offset: plan.base(w, batch) as i64,
            item_stride: plan.item_stride(w) as i64,
            row_stride: w.row_stride as i64,
            pixel_stride: w.pixel_stride as i32,
            h: w.h as i32,
            w: w.w as i32,
            c: w.c as i32,
        }
    }

    /// `len` dense values per item starting at `offset` as a 1x1 window of `len` channels.
    fn flat(offset: i64, len: usize) -> View {
        View {
            offset,
            item_stride: len as i64,
            row_stride: len as i64,
            pixel_stride: len as i32,
            h: 1,
            w: 1,
            c: len as i32,
        }
    }

    fn elements(&self, batch: usize) -> usize {
        batch * (self.h.max(0) * self.w.max(0)) as usize * self.c.max(0) as usize
    }
}

/// A dense output `y` seen in the grid of `x` with `c` channels per pixel (for a layer whose
/// output drops or adds axes but keeps the values' order); an output placed in another tensor's
/// window is not run.
fn in_grid_of(layer: &str, x: View, y: View, c: i32) -> Result<View, CudaError> {
    let dense = y.pixel_stride == y.c && y.row_stride == y.w as i64 * y.c as i64;
    let count = |v: &View| v.h as i64 * v.w as i64 * v.c as i64;
    if !dense || count(&y) != x.h as i64 * x.w as i64 * c as i64 {
        return Err(CudaError::Model(format!(
            "`{layer}`: its output is not a dense tensor of the input's pixels; run it with \
             --device cpu"
        )));
    }
    Ok(View {
        offset: y.offset,
        item_stride: y.item_stride,
        row_stride: x.w as i64 * c as i64,
        pixel_stride: c,
        h: x.h,
        w: x.w,
        c,
    })
}

/// The tensor-core convolution's parameters (`ConvParams` in kernels/igemm.cu).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct ConvParams {
    pub x0: View,
    pub x1: View,
    pub y: View,
    pub n: i32,
    pub kh: i32,
    pub kw: i32,
    pub sh: i32,
    pub sw: i32,
    pub dh: i32,
    pub dw: i32,
    pub pt: i32,
    pub pl: i32,
    pub f: i32,
    pub k: i32,
    pub k_padded: i32,
    pub act: i32,
    pub mode: i32,
}

impl ConvParams {
    /// `geometry`: kernel, strides, dilation, padding before (transposed: the crop), as
    /// `[kh, kw, sh, sw, dh, dw, pt, pl]`.
    fn new(
        tc: &TensorCoreWeights,
        (x0, x1, y): (View, View, View),
        geometry: [i32; 8],
        act: i32,
        batch: usize,
    ) -> ConvParams {
        let [kh, kw, sh, sw, dh, dw, pt, pl] = geometry;
        ConvParams {
            x0,
            x1,
            y,
            n: batch as i32,
            kh,
            kw,
            sh,
            sw,
            dh,
            dw,
            pt,
            pl,
            f: y.c,
            k: tc.k as i32,
            k_padded: tc.k_padded as i32,
            act,
            mode: tc.mode,
        }
    }
}

// The kernel's static_assert says 176 bytes; a mismatch here would pass garbage.
const _: () = assert!(std::mem::size_of::<ConvParams>() == 176);

// SAFETY: plain old data with the C layout of `struct ConvParams`.
unsafe impl DeviceRepr for ConvParams {}

/// Rows of the tensor-core weight matrix are padded to this many values (the kernel's K tile).
pub const K_TILE: usize = 32;

/// A Conv2D kernel (HWIO, `k = kh*kw*c` rows of `f`) as the tensor-core kernel reads it: one
/// row of `k_padded` values per filter, zero beyond `k`.
pub fn pack_conv_weights(hwio: &[f32], k: usize, f: usize) -> (Vec<f32>, usize) {
    let k_padded = k.div_ceil(K_TILE) * K_TILE;
    let mut packed = vec![0.0f32; f * k_padded];
    for (kk, row) in hwio.chunks_exact(f.max(1)).take(k).enumerate() {
        for (o, &v) in row.iter().enumerate() {
            packed[o * k_padded + kk] = v;
        }
    }
    (packed, k_padded)
}

/// A Keras Conv2DTranspose kernel (`[kh, kw, f, c]`: already one row of `c` per GEMM column
/// `(a, b, o)`) with its rows padded to a multiple of [`K_TILE`].
pub fn pack_transpose_weights(keras: &[f32], c: usize) -> (Vec<f32>, usize) {
    let k_padded = c.div_ceil(K_TILE) * K_TILE;
    let rows = keras.len() / c.max(1);
    let mut packed = vec![0.0f32; rows * k_padded];
    for (r, row) in keras.chunks_exact(c.max(1)).enumerate() {
        packed[r * k_padded..r * k_padded + c].copy_from_slice(row);
    }
    (packed, k_padded)
}

/// Packed weights of a layer that runs on tensor cores.
struct TensorCoreWeights {
    packed: Arena,
    k: usize,
    k_padded: usize,
    /// 0: convolution; 1: transposed convolution with kernel == strides.
    mode: i32,
}

/// One layer's weights on the device, f32: `[kernel, bias]` (batch norm folded in when the plan
/// fused one) or `[gamma, beta, moving_mean, moving_variance]`.
struct DeviceWeights {
    tensors: Vec<CudaSlice<f32>>,
}

/// The activation arena: f32 values (f32 and tf32 precision) or bf16 bits.
enum Arena {
    F32(CudaSlice<f32>),
    Bf16(CudaSlice<u16>),
}

/// A model ready to run on the GPU.
pub struct CudaModel<'g> {
    graph: &'g Graph,
    info: &'g Inferred,
    plan: Plan,
    precision: Precision,
    stream: Arc<CudaStream>,
    ctx: Arc<CudaContext>,
    functions: HashMap<String, CudaFunction>,
    weights: HashMap<NodeId, DeviceWeights>,
    tensor_core: HashMap<NodeId, TensorCoreWeights>,
    /// Convolutions that also compute the 1x1 convolution reading them (kernels/igemm.cu
    /// `_head`): the convolution -> the 1x1 one, whose own step is then skipped.
    heads: HashMap<NodeId, NodeId>,
    weight_bytes: u64,
    /// Free device memory once the context and module were loaded, before any allocation.
    free_at_start: u64,
    /// Streaming multiprocessors: split-K fills them when a layer has too few output tiles.
    sm_count: usize,
    pub device_name: String,
    /// How the kernels were loaded (a cubin, or PTX for the driver's JIT) and how long compiling
    /// or reading them from the cache and loading them took.
    pub kernel_image: KernelImage,
    pub kernel_load: std::time::Duration,
}

/// What [`CudaModel::time`] measured.
#[derive(Debug, Clone)]
pub struct Timing {
    /// Milliseconds per batch, in run order: the network only, its input already on the device
    /// (as PyTorch's side of bench/compare.py is timed).
    pub times: Vec<f64>,
    /// Milliseconds per batch, in run order, end to end: the input's upload from pinned host
    /// memory (already converted to the arena's type), then the network.
    pub end_to_end_times: Vec<f64>,
    /// Whether the kernels were replayed as one CUDA graph.
    pub graph: bool,
    /// Why graph capture was not used, when it was asked for and failed.
    pub graph_note: Option<String>,
    /// Device memory in use by this model during the runs (driver's free memory before any
    /// allocation minus during the runs; includes the allocator's rounding).
    pub measured_device_bytes: u64,
}

const BLOCK: u32 = 256;

/// One thread per value of a flat index space, in blocks of 256.
pub(crate) fn grid(total: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (total.div_ceil(BLOCK as usize).max(1) as u32, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Round to nearest even, as the kernels store bf16 (NaN stays a quiet NaN).
pub fn f32_to_bf16(v: f32) -> u16 {
    let u = v.to_bits();
    if u & 0x7fff_ffff > 0x7f80_0000 {
        return ((u >> 16) | 0x40) as u16;
    }
    (u.wrapping_add(0x7fff + ((u >> 16) & 1)) >> 16) as u16
}

pub fn bf16_to_f32(v: u16) -> f32 {
    f32::from_bits((v as u32) << 16)
}

/// The element types an arena can hold, with their kernel-name suffix.
trait Element: DeviceRepr + ValidAsZeroBits + Copy + Default + Unpin {
    const SUFFIX: &'static str;
    fn from_f32(v: f32) -> Self;
    fn to_f32(self) -> f32;
}

impl Element for f32 {
    const SUFFIX: &'static str = "_f32";
    fn from_f32(v: f32) -> Self {
        v
    }
    fn to_f32(self) -> f32 {
        self
    }
}

impl Element for u16 {
    const SUFFIX: &'static str = "_bf16";
    fn from_f32(v: f32) -> Self {
        f32_to_bf16(v)
    }
    fn to_f32(self) -> f32 {
        bf16_to_f32(self)
    }
}

/// GPU 0 opened for a trainer: its context, one stream, and the named kernels of the program.
pub struct OpenDevice {
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    pub functions: HashMap<String, CudaFunction>,
    pub kernel_image: KernelImage,
}

/// Opens GPU 0 and loads `names` from unetc's kernels (compiled by NVRTC, cached).
pub fn open_device(names: &[&str]) -> Result<OpenDevice, CudaError> {
    cuda_available().map_err(CudaError::Unavailable)?;
    let ctx = CudaContext::new(0).map_err(driver)?;
    // SAFETY: the trainer runs every allocation, copy and launch on this one stream.
    unsafe { ctx.disable_event_tracking() };
    let stream = ctx.new_stream().map_err(driver)?;
    let capability = ctx.compute_capability().map_err(driver)?;
    let (module, kernel_image) = load_kernels(&ctx, capability)?;
    let mut functions = HashMap::new();
    for name in names {
        let f = module.load_function(name).map_err(driver)?;
        functions.insert(name.to_string(), f);
    }
    Ok(OpenDevice {
        ctx,
        stream,
        functions,
        kernel_image,
    })
}

impl<'g> CudaModel<'g> {
    pub fn new(
        graph: &'g Graph,
        info: &'g Inferred,
        weights: &dyn WeightSource,
        precision: Precision,
    ) -> Result<Self, CudaError> {
        cuda_available().map_err(CudaError::Unavailable)?;
        let plan = plan(graph, info).ok_or_else(|| {
            CudaError::Model("the spec has errors; run `unetc check` on it".into())
        })?;
        let ctx = CudaContext::new(0).map_err(driver)?;
        // One stream of our own (the legacy default stream cannot be captured into a CUDA
        // graph); everything runs on it in order, so cudarc's cross-stream event tracking is
        // not needed.
        // SAFETY: every allocation, copy and launch of this model uses this one stream.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().map_err(driver)?;
        let free_at_start = ctx.mem_get_info().map_err(driver)?.0 as u64;
        let (major, minor) = ctx.compute_capability().map_err(driver)?;
        let loading = std::time::Instant::now();
        let (module, kernel_image) = load_kernels(&ctx, (major, minor))?;
        let mut functions = HashMap::new();
        for name in kernel_names() {
            let f = module.load_function(&name).map_err(driver)?;
            functions.insert(name, f);
        }
        let device_name = ctx.name().unwrap_or_else(|_| "CUDA device".into());
        let sm_count = ctx
            .attribute(
                cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
            )
            .map_err(driver)?
            .max(1) as usize;
        let mut model = CudaModel {
            graph,
            info,
            plan,
            precision,
            stream,
            ctx,
            functions,
            weights: HashMap::new(),
            tensor_core: HashMap::new(),
            heads: HashMap::new(),
            weight_bytes: 0,
            free_at_start,
            sm_count,
            device_name,
            kernel_image,
            kernel_load: std::time::Duration::ZERO,
        };
        model.allow_dynamic_shared_memory()?;
        model.kernel_load = loading.elapsed();
        model.upload_weights(weights)?;
        model.heads = model.find_heads();
        Ok(model)
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Raises the dynamic shared memory limit of every tensor-core kernel this precision
    /// launches to what its largest tile asks for (above 48 KiB the driver refuses a launch
    /// unless the function allows it), after checking the device's opt-in limit, so a device
    /// with less shared memory gets this error instead of a failed launch.
    fn allow_dynamic_shared_memory(&self) -> Result<(), CudaError> {
        use cudarc::driver::sys::{CUdevice_attribute, CUfunction_attribute};
        let optin = self
            .ctx
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)
            .map_err(driver)?
            .max(0) as u32;
        for name in igemm_kernel_names() {
            let Some(needed) = igemm_dynamic_smem(&name, self.precision) else {
                continue;
            };
            let function = &self.functions[&name];
            let fixed = function
                .get_attribute(CUfunction_attribute::CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES)
                .map_err(driver)?
                .max(0) as u32;
            if fixed + needed > optin {
                return Err(CudaError::Unavailable(format!(
                    "{} allows {} of shared memory per block, but unetc's {} tensor-core kernel \
                     `{name}` needs {}; try another --precision",
                    self.device_name,
                    crate::text::bytes(optin as u64),
                    self.precision.name(),
                    crate::text::bytes((fixed + needed) as u64),
                )));
            }
            function
                .set_attribute(
                    CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    needed as i32,
                )
                .map_err(driver)?;
        }
        Ok(())
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    fn shape(&self, id: NodeId) -> Vec<usize> {
        self.info.layers[id.index()]
            .shape
            .iter()
            .flatten()
            .map(|&d| d as usize)
            .collect()
    }

    /// Uploads each layer's weights, checked and folded by [`super::bind_and_fold`].
    fn upload_weights(&mut self, weights: &dyn WeightSource) -> Result<(), CudaError> {
        let bound = super::bind_and_fold(self.graph, self.info, &self.plan, weights).map_err(
            |problems| {
                CudaError::Model(format!(
                    "the weights do not fit the model:\n  {}",
                    problems.join("\n  ")
                ))
            },
        )?;
        for (id, host) in bound {
            if let Some(tc) = self.pack_for_tensor_cores(id, &host)? {
                self.tensor_core.insert(id, tc);
            }
            let tensors = host
                .iter()
                .map(|h| {
                    self.weight_bytes += 4 * h.len() as u64;
                    self.stream.clone_htod(h).map_err(driver)
                })
                .collect::<Result<Vec<_>, _>>()?;
            self.weights.insert(id, DeviceWeights { tensors });
        }
        Ok(())
    }

    /// Packs a layer's weights for the tensor-core kernel, if the layer runs there: every
    /// Conv2D, and Conv2DTranspose whose kernel equals its strides (each output pixel then
    /// comes from exactly one input pixel, so the kernel's scatter covers the output).
    fn pack_for_tensor_cores(
        &mut self,
        id: NodeId,
        host: &[Vec<f32>],
    ) -> Result<Option<TensorCoreWeights>, CudaError> {
        let node = self.graph.node(id);
        let in_shape = self.shape(node.inputs[0]);
        let out_shape = self.shape(id);
        let [h, w, c] = hwc(&in_shape);
        let [oh, ow, f] = hwc(&out_shape);
        let (packed, k, k_padded, mode) = match &node.op {
            // Grouped convolutions run the direct kernel.
            Op::Conv2D(op) if op.groups != 1 => return Ok(None),
            Op::Conv2D(op) => {
                if self.small_c(id).is_some() {
                    return Ok(None);
                }
                let k = op.args.kernel_size[0] as usize * op.args.kernel_size[1] as usize * c;
                let (packed, k_padded) = pack_conv_weights(&host[0], k, f);
                (packed, k, k_padded, 0)
            }
            Op::Conv2DTranspose(op) => {
                let (rows, cols) = (op.geometry(0, h, oh), op.geometry(1, w, ow));
                let covered = rows.kernel == rows.stride
                    && cols.kernel == cols.stride
                    && op.args.dilation_rate == [1, 1]
                    && oh + rows.crop_before <= h * rows.stride
                    && ow + cols.crop_before <= w * cols.stride;
                if !covered {
                    return Ok(None);
                }
                let (packed, k_padded) = pack_transpose_weights(&host[0], c);
                (packed, c, k_padded, 1)
            }
            // Their own kernels (Dense, the normalizations) or no weights at all.
            Op::Input(_)
            | Op::MaxPooling2D(_)
            | Op::UpSampling2D(_)
            | Op::Resizing(_)
            | Op::Cropping2D(_)
            | Op::ZeroPadding2D(_)
            | Op::Concatenate(_)
            | Op::Add(_)
            | Op::BatchNormalization(_)
            | Op::Activation(_)
            | Op::ReLU(_)
            | Op::Softmax(_)
            | Op::Dropout(_)
            | Op::Flatten(_)
            | Op::Reshape(_)
            | Op::Lambda(_)
            | Op::Permute(_)
            | Op::Dense(_)
            | Op::MultiHeadAttention(_)
            | Op::PatchExtract(_)
            | Op::PatchEmbedding(_)
            | Op::SwinTransformerBlock(_)
            | Op::PatchMerging(_)
            | Op::PatchExpanding(_)
            | Op::GlobalAveragePooling2D(_)
            | Op::Multiply(_)
            | Op::Subtract(_)
            | Op::CustomScaleLayer(_)
            | Op::Average(_)
            | Op::Maximum(_)
            | Op::Minimum(_)
            | Op::TFOpLambda(_)
            | Op::LeakyReLU(_)
            | Op::ELU(_)
            | Op::Rescaling(_)
            | Op::GELU(_)
            | Op::Snake(_)
            | Op::Normalization(_)
            | Op::PReLU(_)
            | Op::AveragePooling2D(_)
            | Op::GlobalMaxPooling2D(_)
            | Op::SpatialDropout2D(_)
            | Op::GaussianNoise(_)
            | Op::GaussianDropout(_)
            | Op::FixedDropout(_)
            | Op::GroupNormalization(_)
            | Op::LayerNormalization(_)
            | Op::DepthwiseConv2D(_)
            | Op::SeparableConv2D(_)
            | Op::Conv3D(_)
            | Op::Conv3DTranspose(_)
            | Op::MaxPooling3D(_)
            | Op::AveragePooling3D(_)
            | Op::UpSampling3D(_)
            | Op::Cropping3D(_)
            | Op::ZeroPadding3D(_)
            | Op::GlobalAveragePooling3D(_) => return Ok(None),
        };
        let packed = match self.precision {
            Precision::Bf16 => {
                let bits: Vec<u16> = packed.iter().map(|&v| f32_to_bf16(v)).collect();
                self.weight_bytes += 2 * bits.len() as u64;
                Arena::Bf16(self.stream.clone_htod(&bits).map_err(driver)?)
            }
            _ => {
                self.weight_bytes += 4 * packed.len() as u64;
                Arena::F32(self.stream.clone_htod(&packed).map_err(driver)?)
            }
        };
        Ok(Some(TensorCoreWeights {
            packed,
            k,
            k_padded,
            mode,
        }))
    }

    /// A convolution on tensor cores (kernels/igemm.cu): the fast kernel when every input
    /// window is aligned for 16-byte copies, the element-wise one otherwise.
    #[allow(clippy::too_many_arguments)]
    fn launch_tensor_core<T: Element>(
        &self,
        arena: &mut CudaSlice<T>,
        tc: &TensorCoreWeights,
        bias: &CudaSlice<f32>,
        (x0, x1, y): (View, View, View),
        geometry: [i32; 8],
        act: i32,
        batch: usize,
    ) -> Result<(), CudaError> {
        let [kh, kw, ..] = geometry;
        let params = ConvParams::new(tc, (x0, x1, y), geometry, act, batch);
        let bf16 = self.precision == Precision::Bf16;
        let fast = Self::aligned_for_copies(bf16, &x0, &x1);
        let (m, n) = if tc.mode == 0 {
            (batch * (y.h * y.w) as usize, y.c as usize)
        } else {
            (
                batch * (x0.h * x0.w) as usize,
                (kh * kw) as usize * y.c as usize,
            )
        };
        let tile = Tile::for_columns(n, self.precision);
        let splits = if fast && tc.mode == 0 {
            self.splits(tc, y, batch)
        } else {
            1
        };
        let name = self.igemm_name(fast, if splits > 1 { "_splitk" } else { "" }, tile);
        let config = LaunchConfig {
            grid_dim: (
                m.div_ceil(128) as u32,
                n.div_ceil(tile.columns) as u32,
                splits as u32,
            ),
            block_dim: (tile.threads, 1, 1),
            shared_mem_bytes: tile.smem,
        };
        let stream = &self.stream;
        let (ptr, _sync) = cudarc::driver::DevicePtrMut::device_ptr_mut(arena, stream);
        let mut b = self.igemm_args(&name, &ptr, tc, bias, &params);
        // Split-K: raw f32 sums go to the workspace after the arena's last buffer (its byte
        // offset is a multiple of 4: `workspace_start`), then one kernel reduces them.
        let partial = ptr + (self.workspace_start(batch) * std::mem::size_of::<T>()) as u64;
        let splits_i = splits as i32;
        if splits > 1 {
            b.arg(&partial).arg(&splits_i);
        }
        // SAFETY: matches conv_igemm_*(x*, y*, const w*, const float* bias, ConvParams) (and
        // `_splitk`: float* partial, int splits) with the launch shape kernels/igemm.cu
        // documents; windows come from the plan; the packed weights hold n rows of k_padded
        // values (the element type matches the kernel's); the workspace holds splits*m*n floats
        // (`alloc` sized it with `workspace_floats`).
        unsafe { b.launch(config).map_err(driver)? };
        drop(b);
        if splits > 1 {
            let nb = batch as i32;
            let mut r = stream.launch_builder(self.function::<T>("splitk_reduce"));
            r.arg(&ptr)
                .arg(&partial)
                .arg(bias)
                .arg(&y)
                .arg(&nb)
                .arg(&splits_i)
                .arg(&act);
            // SAFETY: matches splitk_reduce_<T>(void*, const float*, const float*, View, int,
            // int, int); reads the splits the kernel above wrote, writes the planned window.
            unsafe { r.launch(grid(y.elements(batch))).map_err(driver)? };
        }
        Ok(())
    }

    /// A launch of tensor-core kernel `name` with the arguments every variant starts with:
    /// input arena, output arena (the same allocation: the plan keeps the output window apart
    /// from the inputs), packed weights, bias, parameters.
    fn igemm_args<'a>(
        &'a self,
        name: &str,
        arena: &'a cudarc::driver::sys::CUdeviceptr,
        tc: &'a TensorCoreWeights,
        bias: &'a CudaSlice<f32>,
        params: &'a ConvParams,
    ) -> cudarc::driver::LaunchArgs<'a> {
        let mut b = self.stream.launch_builder(&self.functions[name]);
        b.arg(arena).arg(arena);
        match &tc.packed {
            Arena::Bf16(w) => b.arg(w),
            Arena::F32(w) => b.arg(w),
        };
        b.arg(bias).arg(params);
        b
    }

    /// The tensor-core kernel for this model's precision: `conv_igemm_{bf16,tf32,f32x3}`, then
    /// `_small` for inputs the 16-byte copies cannot read, then `suffix`, then the tile's.
    fn igemm_name(&self, fast: bool, suffix: &str, tile: Tile) -> String {
        let base = match self.precision {
            Precision::Bf16 => "conv_igemm_bf16",
            Precision::Tf32 => "conv_igemm_tf32",
            Precision::F32 => "conv_igemm_f32x3",
        };
        let small = if fast { "" } else { "_small" };
        format!("{base}{small}{suffix}{}", tile.suffix())
    }

    /// How many slices of K a convolution's GEMM is split into (1: none), by the rule in
    /// kernels/igemm.cu: enough blocks for every SM, at least 4 K tiles per slice, at most 16.
    fn splits(&self, tc: &TensorCoreWeights, y: View, batch: usize) -> usize {
        if tc.mode != 0 {
            return 1;
        }
        let m = batch * (y.h.max(0) * y.w.max(0)) as usize;
        let n = y.c.max(0) as usize;
        let tile = Tile::for_columns(n, self.precision);
        let blocks = m.div_ceil(128) * n.div_ceil(tile.columns);
        let k_tiles = tc.k.div_ceil(K_TILE);
        let splits = (tile.per_sm * self.sm_count / blocks.max(1))
            .min(k_tiles / 4)
            .min(16);
        if splits >= 2 {
            splits
        } else {
            1
        }
    }

    /// Floats of workspace a batch needs: the largest split-K layer's partial sums, or the
    /// largest attention's scratch.
    fn workspace_floats(&self, batch: usize) -> usize {
        let mut most = 0;
        for &id in &self.info.schedule {
            if let Some(d) = self.attention_dims(id) {
                most = most.max(batch * d.scratch_floats());
            }
            if let Op::SwinTransformerBlock(op) = &self.graph.node(id).op {
                most = most.max(batch * op.geometry().scratch_floats());
            }
        }
        for (id, tc) in &self.tensor_core {
            if tc.mode != 0 || self.heads.contains_key(id) {
                continue;
            }
            let Some(w) = self.plan.window(*id) else {
                continue;
            };
            let y = View::of(&self.plan, &w, batch);
            let splits = self.splits(tc, y, batch);
            if splits > 1 {
                most = most.max(splits * batch * w.h * w.w * w.c);
            }
        }
        most
    }

    /// Where the workspace starts in the arena, in arena elements (after every buffer, at a
    /// 16-byte boundary).
    fn workspace_start(&self, batch: usize) -> usize {
        (self.plan.arena_len * batch).div_ceil(8) * 8
    }

    /// Arena elements for a batch: the planned buffers, then the split-K workspace.
    fn arena_elements(&self, batch: usize) -> usize {
        let floats = self.workspace_floats(batch);
        if floats == 0 {
            return self.plan.arena_len * batch;
        }
        self.workspace_start(batch) + floats * 4 / self.element_bytes() as usize
    }

    /// A convolution on tensor cores with the 1x1 convolution `head` in its epilogue: writes
    /// the head's output, never the convolution's.
    #[allow(clippy::too_many_arguments)]
    fn launch_head<T: Element>(
        &self,
        arena: &mut CudaSlice<T>,
        tc: &TensorCoreWeights,
        bias: &CudaSlice<f32>,
        (x0, x1, y): (View, View, View),
        geometry: [i32; 8],
        act: i32,
        head: NodeId,
        batch: usize,
    ) -> Result<(), CudaError> {
        let params = ConvParams::new(tc, (x0, x1, y), geometry, act, batch);
        let Op::Conv2D(op) = &self.graph.node(head).op else {
            return Ok(());
        };
        let head_act = activation_code(
            self.plan.fused[head.index()]
                .activation
                .unwrap_or(op.args.activation),
        );
        let head_y = View::of(&self.plan, &self.window(head)?, batch);
        let head_f = head_y.c;
        let hw = self.weights_of(head)?;
        let bf16 = self.precision == Precision::Bf16;
        let tile = Tile::for_columns(y.c as usize, self.precision);
        let name = self.igemm_name(Self::aligned_for_copies(bf16, &x0, &x1), "_head", tile);
        let m = batch * (y.h * y.w) as usize;
        let config = LaunchConfig {
            grid_dim: (m.div_ceil(128) as u32, 1, 1),
            block_dim: (tile.threads, 1, 1),
            shared_mem_bytes: tile.smem,
        };
        let stream = &self.stream;
        let (ptr, _sync) = cudarc::driver::DevicePtrMut::device_ptr_mut(arena, stream);
        let mut b = self.igemm_args(&name, &ptr, tc, bias, &params);
        b.arg(&hw.tensors[0])
            .arg(&hw.tensors[1])
            .arg(&head_y)
            .arg(&head_f)
            .arg(&head_act);
        // SAFETY: matches conv_igemm_*_head(x*, y*, const w*, const float*, ConvParams, const
        // float* head_w [f][head_f], const float* head_bias, View, int, int) with the launch
        // shape kernels/igemm.cu documents; find_heads checked its limits (mode 0, f <= 128,
        // head_f <= 8, no softmax before the head); windows come from the plan.
        unsafe { b.launch(config).map_err(driver)? };
        Ok(())
    }

    /// Whether both inputs allow the tensor-core kernels' 16-byte copies.
    fn aligned_for_copies(bf16: bool, x0: &View, x1: &View) -> bool {
        let e = if bf16 { 8 } else { 4 };
        let aligned = |v: &View| {
            v.c == 0
                || (v.c % e == 0
                    && v.offset % e as i64 == 0
                    && v.pixel_stride % e == 0
                    && v.row_stride % e as i64 == 0
                    && v.item_stride % e as i64 == 0)
        };
        aligned(x0) && aligned(x1)
    }

    /// The input window of a Conv2D that kernels/first_layer.cu takes (one input, few channels).
    fn small_c(&self, id: NodeId) -> Option<Window> {
        let node = self.graph.node(id);
        let Op::Conv2D(op) = &node.op else {
            return None;
        };
        if op.groups != 1 {
            return None;
        }
        let a = &op.args;
        let x = self.plan.window(node.inputs[0])?;
        let k = a.kernel_size.map(|v| v as usize);
        let d = a.dilation_rate.map(|v| v as usize);
        small_c_fits(x.c, k, a.strides[1] as usize, d).then_some(x)
    }

    /// Pairs (convolution on tensor cores, 1x1 convolution that alone reads it) whose second
    /// can run in the first's epilogue: the U-Net's head. The first's output is then never
    /// written (its buffer stays planned, unused).
    fn find_heads(&self) -> HashMap<NodeId, NodeId> {
        let plan = &self.plan;
        // Which working steps read each buffer, and which buffers hold model outputs.
        let mut readers: HashMap<usize, Vec<NodeId>> = HashMap::new();
        for step in plan.steps.iter().filter(|s| s.work != Work::Nothing) {
            for &input in &self.graph.node(step.node).inputs {
                for w in plan.storage[input.index()].iter().flat_map(|s| s.windows()) {
                    readers.entry(w.buffer).or_default().push(step.node);
                }
            }
        }
        let output_buffers: Vec<usize> = self
            .graph
            .outputs
            .iter()
            .filter_map(|&o| plan.window(o).map(|w| w.buffer))
            .collect();
        let mut heads = HashMap::new();
        for step in plan.steps.iter().filter(|s| s.work == Work::Kernel) {
            let b = step.node;
            let Op::Conv2D(head) = &self.graph.node(b).op else {
                continue;
            };
            let h = &head.args;
            let f2 = h.filters.max(0) as usize;
            if head.groups != 1
                || h.kernel_size != [1, 1]
                || h.strides != [1, 1]
                || h.dilation_rate != [1, 1]
                || !(1..=HEAD_MAX_FILTERS).contains(&f2)
            {
                continue;
            }
            let Some(x) = plan.window(self.graph.node(b).inputs[0]) else {
                continue;
            };
            // The convolution whose window the head reads, through fused layers and dropout.
            let Some(a) = plan.steps.iter().find(|s| {
                s.work == Work::Kernel
                    && matches!(self.graph.node(s.node).op, Op::Conv2D(_))
                    && plan.window(s.node) == Some(x)
            }) else {
                continue;
            };
            let a = a.node;
            let Some(tc) = self.tensor_core.get(&a) else {
                continue;
            };
            let Op::Conv2D(first) = &self.graph.node(a).op else {
                continue;
            };
            let act = plan.fused[a.index()]
                .activation
                .unwrap_or(first.args.activation);
            let alone = readers
                .get(&x.buffer)
                .is_some_and(|r| r.iter().all(|&n| n == b));
            if tc.mode == 0
                && act != ActivationFn::Softmax
                && x.c <= 128
                && x.is_dense()
                && alone
                && !output_buffers.contains(&x.buffer)
            {
                heads.insert(a, b);
            }
        }
        heads
    }

    fn element_bytes(&self) -> u64 {
        match self.precision {
            Precision::Bf16 => 2,
            Precision::F32 | Precision::Tf32 => 4,
        }
    }

    /// Device memory a batch needs for activations (the arena, with the split-K workspace).
    pub fn arena_bytes(&self, batch: usize) -> u64 {
        (self.arena_elements(batch) as u64).saturating_mul(self.element_bytes())
    }

    /// Device memory the model holds: its weights as uploaded.
    pub fn weight_bytes(&self) -> u64 {
        self.weight_bytes
    }

    /// Runs a batch `[N, H, W, C]`; returns the model's outputs (f32).
    pub fn run(&self, input: &Tensor) -> Result<Vec<Tensor>, CudaError> {
        self.run_inputs(std::slice::from_ref(input))
    }

    /// Runs a batch through a model with one or more inputs: `inputs[k]` for the model's
    /// input `k`, every one with the same batch size.
    pub fn run_inputs(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, CudaError> {
        let batch = self.check_inputs(inputs)?;
        match self.alloc(batch)? {
            Arena::F32(mut a) => {
                self.forward(&mut a, inputs, batch)?;
                self.outputs(&a, batch)
            }
            Arena::Bf16(mut a) => {
                self.forward(&mut a, inputs, batch)?;
                self.outputs(&a, batch)
            }
        }
    }

    /// Times `iterations` batches twice with CUDA events: the kernels alone, then the input's
    /// upload from pinned memory and the kernels. The kernels are replayed as one CUDA graph when `graph` is asked for and capture works.
    /// `UNETC_PROFILE=1` also prints each layer's time once, to stderr.
    pub fn time(
        &self,
        input: &Tensor,
        iterations: usize,
        graph: bool,
    ) -> Result<Timing, CudaError> {
        let batch = self.check_inputs(std::slice::from_ref(input))?;
        match self.alloc(batch)? {
            Arena::F32(mut a) => self.time_in(&mut a, input, batch, iterations, graph),
            Arena::Bf16(mut a) => self.time_in(&mut a, input, batch, iterations, graph),
        }
    }

    fn time_in<T: Element>(
        &self,
        arena: &mut CudaSlice<T>,
        input: &Tensor,
        batch: usize,
        iterations: usize,
        graph: bool,
    ) -> Result<Timing, CudaError> {
        let measured_device_bytes = self
            .free_at_start
            .saturating_sub(self.ctx.mem_get_info().map_err(driver)?.0 as u64);
        self.upload_input(arena, self.graph.inputs[0], input, batch)?;
        if std::env::var_os("UNETC_PROFILE").is_some() {
            self.profile(arena, batch)?;
        }
        let (captured, graph_note) = if graph {
            match self.capture(arena, batch) {
                Ok(g) => (g, None),
                Err(e) => (
                    None,
                    Some(format!("CUDA graph capture failed ({e}); launched eagerly")),
                ),
            }
        } else {
            (None, None)
        };
        // The input once more, staged in page-locked host memory in the arena's type, for the
        // end-to-end figure (an upload as fast as the bus allows, with no conversion in it).
        let w = self.dense_window(self.graph.inputs[0])?;
        let input_start = self.plan.base(&w, batch);
        let input_len = w.len() * batch;
        // SAFETY: every element is written below before the buffer is read.
        let mut pinned = unsafe { self.ctx.alloc_pinned::<T>(input_len) }.map_err(driver)?;
        for (to, &from) in pinned
            .as_mut_slice()
            .map_err(driver)?
            .iter_mut()
            .zip(&input.data)
        {
            *to = T::from_f32(from);
        }
        let mut times = Vec::with_capacity(iterations);
        let mut end_to_end_times = Vec::with_capacity(iterations);
        for upload in [false, true] {
            for _ in 0..iterations {
                let start = self.timing_event()?;
                let end = self.timing_event()?;
                start.record(&self.stream).map_err(driver)?;
                if upload {
                    let mut view = arena.slice_mut(input_start..input_start + input_len);
                    self.stream
                        .memcpy_htod(&pinned, &mut view)
                        .map_err(driver)?;
                }
                // Without the upload, later layers may have reused the input's memory: the
                // kernels then read other values, which does not change their speed.
                match &captured {
                    Some(g) => g.launch().map_err(driver)?,
                    None => self.kernels(arena, batch)?,
                }
                end.record(&self.stream).map_err(driver)?;
                end.synchronize().map_err(driver)?;
                let ms = start.elapsed_ms(&end).map_err(driver)? as f64;
                if upload {
                    end_to_end_times.push(ms);
                } else {
                    times.push(ms);
                }
            }
        }
        Ok(Timing {
            times,
            end_to_end_times,
            graph: captured.is_some(),
            graph_note,
            measured_device_bytes,
        })
    }

    /// Records every kernel of a forward pass into a CUDA graph (the input is uploaded
    /// outside it, before each replay).
    fn capture<T: Element>(
        &self,
        arena: &mut CudaSlice<T>,
        batch: usize,
    ) -> Result<Option<cudarc::driver::CudaGraph>, CudaError> {
        use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
        self.stream
            .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(driver)?;
        let launched = self.kernels(arena, batch);
        // End the capture whatever happened, so the stream is usable again.
        let graph = self
            .stream
            .end_capture(CUgraphInstantiate_flags(0))
            .map_err(driver);
        launched?;
        graph
    }

    /// An event for timing work on the stream.
    fn timing_event(&self) -> Result<CudaEvent, CudaError> {
        self.ctx
            .new_event(Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT))
            .map_err(driver)
    }

    /// One eager pass with an event pair around each step; prints each layer's time.
    fn profile<T: Element>(&self, arena: &mut CudaSlice<T>, batch: usize) -> Result<(), CudaError> {
        let mut marks = Vec::new();
        for step in &self.plan.steps {
            if step.work == Work::Nothing {
                continue;
            }
            let start = self.timing_event()?;
            let end = self.timing_event()?;
            start.record(&self.stream).map_err(driver)?;
            self.step(step, arena, batch)?;
            end.record(&self.stream).map_err(driver)?;
            marks.push((step.node, start, end));
        }
        self.stream.synchronize().map_err(driver)?;
        let mut total = 0.0;
        for (id, start, end) in &marks {
            let ms = start.elapsed_ms(end).map_err(driver)? as f64;
            total += ms;
            let node = self.graph.node(*id);
            let macs = self.info.layers[id.index()].macs as f64 * batch as f64;
            let tc = if self.tensor_core.contains_key(id) {
                " tensor cores"
            } else {
                ""
            };
            eprintln!(
                "{ms:>9.3} ms  {:>7.1} TFLOP/s  {} ({}{tc})",
                2.0 * macs / (ms * 1e9),
                node.name,
                node.op.class_name()
            );
        }
        eprintln!("{total:>9.3} ms  in all (eager, with a gap between launches)");
        Ok(())
    }

    /// The batch size of `inputs`, one tensor per model input, each of its input's shape.
    fn check_inputs(&self, inputs: &[Tensor]) -> Result<usize, CudaError> {
        let batch =
            super::batch_of_inputs(self.graph, self.info, inputs).map_err(CudaError::Model)?;
        index_limits(self.graph, self.info, batch).map_err(CudaError::Model)?;
        Ok(batch)
    }

    /// The arena for a batch, after checking that it fits in free device memory.
    fn alloc(&self, batch: usize) -> Result<Arena, CudaError> {
        let need = self.arena_bytes(batch);
        let (free, _) = self.ctx.mem_get_info().map_err(driver)?;
        if need > free as u64 {
            return Err(CudaError::Memory {
                need,
                free: free as u64,
            });
        }
        let len = self.arena_elements(batch);
        Ok(match self.precision {
            Precision::Bf16 => Arena::Bf16(self.stream.alloc_zeros::<u16>(len).map_err(driver)?),
            Precision::F32 | Precision::Tf32 => {
                Arena::F32(self.stream.alloc_zeros::<f32>(len).map_err(driver)?)
            }
        })
    }

    fn forward<T: Element>(
        &self,
        arena: &mut CudaSlice<T>,
        inputs: &[Tensor],
        batch: usize,
    ) -> Result<(), CudaError> {
        for (&id, input) in self.graph.inputs.iter().zip(inputs) {
            self.upload_input(arena, id, input, batch)?;
        }
        self.kernels(arena, batch)
    }

    /// Copies the batch into input layer `id`'s buffer (converted to the arena's type).
    fn upload_input<T: Element>(
        &self,
        arena: &mut CudaSlice<T>,
        id: NodeId,
        input: &Tensor,
        batch: usize,
    ) -> Result<(), CudaError> {
        let w = self.dense_window(id)?;
        let start = self.plan.base(&w, batch);
        let mut view = arena.slice_mut(start..start + w.len() * batch);
        let host: Vec<T> = input.data.iter().map(|&v| T::from_f32(v)).collect();
        self.stream.memcpy_htod(&host, &mut view).map_err(driver)
    }

    /// Every kernel of a forward pass, in plan order (the input already uploaded).
    fn kernels<T: Element>(&self, arena: &mut CudaSlice<T>, batch: usize) -> Result<(), CudaError> {
        for step in &self.plan.steps {
            self.step(step, arena, batch)?;
        }
        Ok(())
    }

    fn step<T: Element>(
        &self,
        step: &super::plan::Step,
        arena: &mut CudaSlice<T>,
        batch: usize,
    ) -> Result<(), CudaError> {
        match &step.work {
            Work::Nothing => Ok(()),
            // A 1x1 head computed in the epilogue of the convolution before it.
            Work::Kernel if self.heads.values().any(|&h| h == step.node) => Ok(()),
            Work::Concat(copies) => self.concat_copies(arena, step.node, copies, batch),
            Work::Kernel => self.launch(step.node, arena, batch),
        }
    }

    fn outputs<T: Element>(
        &self,
        arena: &CudaSlice<T>,
        batch: usize,
    ) -> Result<Vec<Tensor>, CudaError> {
        let mut outputs = Vec::new();
        for &id in &self.graph.outputs {
            let w = self.dense_window(id)?;
            let start = self.plan.base(&w, batch);
            let view = arena.slice(start..start + w.len() * batch);
            let data: Vec<T> = self.stream.clone_dtoh(&view).map_err(driver)?;
            let mut shape = vec![batch];
            shape.extend(self.shape(id));
            outputs.push(Tensor {
                shape,
                data: data.into_iter().map(T::to_f32).collect(),
            });
        }
        Ok(outputs)
    }

    /// The window of a value the plan keeps dense (inputs of Dense/Flatten/Softmax, outputs).
    /// A MultiHeadAttention layer's sizes; `None` for other layers.
    fn attention_dims(&self, id: NodeId) -> Option<crate::ir::ops::AttentionDims> {
        super::attention_dims(self.graph, self.info, id)
    }

    /// MultiHeadAttention: the three projections into f32 scratch (the arena's workspace), the
    /// heads, and the output projection back into the arena.
    fn attention<T: Element>(
        &self,
        id: NodeId,
        arena: &mut CudaSlice<T>,
        batch: usize,
    ) -> Result<(), CudaError> {
        let node = self.graph.node(id);
        let d = self.attention_dims(id).ok_or_else(|| {
            CudaError::Model(format!("internal: `{}` is not attention", node.name))
        })?;
        let w = self.weights_of(id)?;
        let plan = &self.plan;
        let offset = |input: usize| -> Result<i64, CudaError> {
            let source = node.inputs.get(input).copied().unwrap_or(node.inputs[1]);
            Ok(plan.base(&self.dense_window(source)?, batch) as i64)
        };
        let (q_off, v_off, k_off) = (offset(0)?, offset(1)?, offset(2)?);
        let y_off = plan.base(&self.dense_window(id)?, batch) as i64;
        let stream = &self.stream;
        let (ptr, _sync) = cudarc::driver::DevicePtrMut::device_ptr_mut(arena, stream);
        let start = ptr + (self.workspace_start(batch) * std::mem::size_of::<T>()) as u64;
        let (hk, hv) = (d.hk(), d.hv());
        let floats = |n: usize| (n * 4) as u64;
        let q = start;
        let k = q + floats(batch * d.tq * hk);
        let v = k + floats(batch * d.tv * hk);
        let o = v + floats(batch * d.tv * hv);
        let p = o + floats(batch * d.tq * hv);
        let i = |v: usize| v as i32;
        let scale = crate::exec::cpu::attention::query_scale(d.key_dim);
        let project = self.function::<T>("attention_project");
        for (x_off, scratch, rows, n_in, units, wk, scale) in [
            (q_off, q, batch * d.tq, d.eq, hk, 0, scale),
            (k_off, k, batch * d.tv, d.ek, hk, 2, 1.0f32),
            (v_off, v, batch * d.tv, d.ev, hv, 4, 1.0f32),
        ] {
            let (r, ni, u) = (i(rows), i(n_in), i(units));
            // SAFETY: matches attention_project_<T>(void*, i64, const float*, const float*,
            // float*, int, int, int, float); the input is dense in the arena; the scratch lies
            // in the workspace `alloc` sized with `workspace_floats` (scratch_floats per item).
            unsafe {
                stream
                    .launch_builder(project)
                    .arg(&ptr)
                    .arg(&x_off)
                    .arg(&w.tensors[wk])
                    .arg(&w.tensors[wk + 1])
                    .arg(&scratch)
                    .arg(&r)
                    .arg(&ni)
                    .arg(&u)
                    .arg(&scale)
                    .launch(grid(rows * units))
                    .map_err(driver)?;
            }
        }
        let weights = batch * d.heads * d.tq * d.tv;
        let dims = [batch, d.tq, d.tv, d.heads, d.key_dim].map(i);
        let mut b = stream.launch_builder(&self.functions["attention_scores"]);
        b.arg(&q).arg(&k).arg(&p);
        for v in &dims {
            b.arg(v);
        }
        // SAFETY: matches attention_scores(const float* x2, float*, int x5); q, k and p are
        // the scratch regions above, of the sizes those offsets give.
        unsafe { b.launch(grid(weights)).map_err(driver)? };
        let (rows, len) = ((batch * d.heads * d.tq) as i64, i(d.tv));
        let mut b = stream.launch_builder(&self.functions["attention_softmax"]);
        b.arg(&p).arg(&rows).arg(&len);
        // SAFETY: matches attention_softmax(float*, i64, int); p holds rows * len weights.
        unsafe { b.launch(grid(rows as usize)).map_err(driver)? };
        let dims = [batch, d.tq, d.tv, d.heads, d.value_dim].map(i);
        let mut b = stream.launch_builder(&self.functions["attention_weighted"]);
        b.arg(&p).arg(&v).arg(&o);
        for v in &dims {
            b.arg(v);
        }
        // SAFETY: matches attention_weighted(const float* x2, float*, int x5).
        unsafe { b.launch(grid(batch * d.tq * hv)).map_err(driver)? };
        let (r, ni, u) = (i(batch * d.tq), i(hv), i(d.eo));
        // SAFETY: matches attention_output_<T>(void*, i64, const float*, const float*, const
        // float*, int, int, int); writes the layer's dense window.
        unsafe {
            stream
                .launch_builder(self.function::<T>("attention_output"))
                .arg(&ptr)
                .arg(&y_off)
                .arg(&o)
                .arg(&w.tensors[6])
                .arg(&w.tensors[7])
                .arg(&r)
                .arg(&ni)
                .arg(&u)
                .launch(grid(batch * d.tq * d.eo))
                .map_err(driver)?;
        }
        Ok(())
    }

    /// One thread per output value of a kernel that reads its one input and writes its output
    /// dense in the arena: `kernel_<T>(void* arena, i64 x_off, i64 y_off, const float*
    /// weights[0..weights], int ints...)` (the patch and Swin-UNET layers).
    fn dense_io<T: Element>(
        &self,
        kernel: &str,
        id: NodeId,
        arena: &mut CudaSlice<T>,
        batch: usize,
        weights: usize,
        ints: &[usize],
    ) -> Result<(), CudaError> {
        let node = self.graph.node(id);
        let x_off = self.plan.base(&self.dense_window(node.inputs[0])?, batch) as i64;
        let y_window = self.dense_window(id)?;
        let y_off = self.plan.base(&y_window, batch) as i64;
        let n_out = View::of(&self.plan, &y_window, batch).elements(batch);
        let ints: Vec<i32> = ints.iter().map(|&v| v as i32).collect();
        let tensors = match weights {
            0 => &[][..],
            n => &self.weights_of(id)?.tensors[..n],
        };
        let mut b = self.stream.launch_builder(self.function::<T>(kernel));
        b.arg(&mut *arena).arg(&x_off).arg(&y_off);
        for t in tensors {
            b.arg(t);
        }
        for v in &ints {
            b.arg(v);
        }
        // SAFETY: the caller names a kernel of this signature (its comment gives it); both
        // values are dense windows the plan keeps inside the arena; the weights were uploaded
        // with the shapes the kernel indexes.
        unsafe { b.launch(grid(n_out)).map_err(driver)? };
        Ok(())
    }

    /// SwinTransformerBlock in f32 scratch (the arena's workspace, laid out as
    /// [`SwinGeometry::scratch_floats`] counts it): the input, norm1, the windows, q, k and v,
    /// the heads on attention.cu's kernels plus the bias, the projection, the first residual,
    /// norm2 and the MLP; its second layer and the second residual write the arena.
    fn swin_block<T: Element>(
        &self,
        id: NodeId,
        op: &crate::ir::ops::SwinTransformerBlock,
        arena: &mut CudaSlice<T>,
        batch: usize,
    ) -> Result<(), CudaError> {
        use crate::exec::cpu::swin::slot;
        let node = self.graph.node(id);
        let g = op.geometry();
        let w = self.weights_of(id)?;
        let plan = &self.plan;
        let x_off = plan.base(&self.dense_window(node.inputs[0])?, batch) as i64;
        let y_off = plan.base(&self.dense_window(id)?, batch) as i64;
        let stream = &self.stream;
        let (ptr, _sync) = cudarc::driver::DevicePtrMut::device_ptr_mut(arena, stream);
        let start = ptr + (self.workspace_start(batch) * std::mem::size_of::<T>()) as u64;
        let (l, c, n, windows) = (g.h * g.w, g.channels, g.window_tokens(), g.windows());
        let rows = batch * l;
        let rc = (rows * c * 4) as u64;
        let [x0, normed, gathered, q, k, v, attended, projected, x1] =
            std::array::from_fn(|k| start + k as u64 * rc);
        let scores = start + 9 * rc;
        let hidden = scores + (batch * windows * g.heads * n * n * 4) as u64;
        let i = |v: usize| v as i32;
        let (rows64, total) = (rows as i64, (rows * c) as i64);
        // SAFETY (every launch below): the arguments match the kernel's C signature in
        // kernels/swin.cu or attention.cu; the scratch regions above lie in the workspace
        // `workspace_floats` sized with `scratch_floats`; x and y are dense in the arena.
        unsafe {
            stream
                .launch_builder(self.function::<T>("swin_load"))
                .arg(&ptr)
                .arg(&x_off)
                .arg(&x0)
                .arg(&total)
                .launch(grid(rows * c))
                .map_err(driver)?;
        }
        let eps = op.norm_epsilon();
        let norm = |from: u64, to: u64, gamma: usize, beta: usize| -> Result<(), CudaError> {
            unsafe {
                stream
                    .launch_builder(&self.functions["swin_norm"])
                    .arg(&from)
                    .arg(&to)
                    .arg(&w.tensors[gamma])
                    .arg(&w.tensors[beta])
                    .arg(&rows64)
                    .arg(&i(c))
                    .arg(&eps)
                    .launch(grid(rows))
                    .map_err(driver)
            }
            .map(|_| ())
        };
        norm(x0, normed, slot::NORM1_GAMMA, slot::NORM1_BETA)?;
        let shape = [batch, g.h, g.w, g.ws, g.shift, c].map(i);
        let mut b = stream.launch_builder(&self.functions["swin_gather"]);
        b.arg(&normed).arg(&gathered);
        for v in &shape {
            b.arg(v);
        }
        unsafe { b.launch(grid(rows * c)).map_err(driver)? };
        let dense = |x: u64,
                     kernel: usize,
                     bias: usize,
                     out: u64,
                     (n_in, units, stride, col0): (usize, usize, usize, usize),
                     scale: f32,
                     act: i32|
         -> Result<(), CudaError> {
            unsafe {
                stream
                    .launch_builder(&self.functions["swin_dense"])
                    .arg(&x)
                    .arg(&w.tensors[kernel])
                    .arg(&w.tensors[bias])
                    .arg(&out)
                    .arg(&rows64)
                    .arg(&i(n_in))
                    .arg(&i(units))
                    .arg(&i(stride))
                    .arg(&i(col0))
                    .arg(&scale)
                    .arg(&act)
                    .launch(grid(rows * units))
                    .map_err(driver)
            }
            .map(|_| ())
        };
        let linear = activation_code(ActivationFn::Linear);
        for (out, col0, scale) in [(q, 0, op.query_scale()), (k, c, 1.0), (v, 2 * c, 1.0)] {
            let geometry = (c, c, 3 * c, col0);
            dense(
                gathered,
                slot::QKV_KERNEL,
                slot::QKV_BIAS,
                out,
                geometry,
                scale,
                linear,
            )?;
        }
        let items = batch * windows;
        let dims = [items, n, n, g.heads, g.head_dim()].map(i);
        let mut b = stream.launch_builder(&self.functions["attention_scores"]);
        b.arg(&q).arg(&k).arg(&scores);
        for v in &dims {
            b.arg(v);
        }
        unsafe { b.launch(grid(items * g.heads * n * n)).map_err(driver)? };
        let masked = i32::from(g.shift > 0);
        let mask = if g.shift > 0 {
            slot::MASK
        } else {
            slot::BIAS_TABLE
        };
        let (bias_dims, items64) = ([windows, g.heads, n].map(i), items as i64);
        let mut b = stream.launch_builder(&self.functions["swin_scores_bias"]);
        b.arg(&scores)
            .arg(&w.tensors[slot::BIAS_TABLE])
            .arg(&w.tensors[slot::INDEX])
            .arg(&w.tensors[mask])
            .arg(&items64);
        for v in &bias_dims {
            b.arg(v);
        }
        b.arg(&masked);
        unsafe { b.launch(grid(items * g.heads * n * n)).map_err(driver)? };
        let (softmax_rows, len) = ((items * g.heads * n) as i64, i(n));
        let mut b = stream.launch_builder(&self.functions["attention_softmax"]);
        b.arg(&scores).arg(&softmax_rows).arg(&len);
        unsafe { b.launch(grid(softmax_rows as usize)).map_err(driver)? };
        let mut b = stream.launch_builder(&self.functions["attention_weighted"]);
        b.arg(&scores).arg(&v).arg(&attended);
        for v in &dims {
            b.arg(v);
        }
        unsafe { b.launch(grid(rows * c)).map_err(driver)? };
        let geometry = (c, c, c, 0);
        dense(
            attended,
            slot::PROJ_KERNEL,
            slot::PROJ_BIAS,
            projected,
            geometry,
            1.0,
            linear,
        )?;
        let mut b = stream.launch_builder(&self.functions["swin_scatter_add"]);
        b.arg(&x0).arg(&projected).arg(&x1);
        for v in &shape {
            b.arg(v);
        }
        unsafe { b.launch(grid(rows * c)).map_err(driver)? };
        norm(x1, normed, slot::NORM2_GAMMA, slot::NORM2_BETA)?;
        let geometry = (c, g.mlp, g.mlp, 0);
        let gelu = activation_code(ActivationFn::Gelu);
        dense(
            normed,
            slot::FC1_KERNEL,
            slot::FC1_BIAS,
            hidden,
            geometry,
            1.0,
            gelu,
        )?;
        unsafe {
            stream
                .launch_builder(self.function::<T>("swin_output"))
                .arg(&ptr)
                .arg(&y_off)
                .arg(&hidden)
                .arg(&w.tensors[slot::FC2_KERNEL])
                .arg(&w.tensors[slot::FC2_BIAS])
                .arg(&x1)
                .arg(&rows64)
                .arg(&i(g.mlp))
                .arg(&i(c))
                .launch(grid(rows * c))
                .map_err(driver)?;
        }
        Ok(())
    }

    fn dense_window(&self, id: NodeId) -> Result<Window, CudaError> {
        match self.plan.window(id) {
            Some(w) if w.is_dense() => Ok(w),
            _ => Err(CudaError::Model(format!(
                "internal: `{}` is not stored densely (please report this)",
                self.graph.node(id).name
            ))),
        }
    }

    fn window(&self, id: NodeId) -> Result<Window, CudaError> {
        self.plan.window(id).ok_or_else(|| {
            CudaError::Model(format!(
                "internal: `{}` has no single window (please report this)",
                self.graph.node(id).name
            ))
        })
    }

    fn function<T: Element>(&self, kernel: &str) -> &CudaFunction {
        &self.functions[&format!("{kernel}{}", T::SUFFIX)]
    }

    /// Copies the parts of a built concatenation that their producers did not write in place.
    fn concat_copies<T: Element>(
        &self,
        arena: &mut CudaSlice<T>,
        id: NodeId,
        copies: &[usize],
        batch: usize,
    ) -> Result<(), CudaError> {
        let whole = self.window(id)?;
        let inputs = &self.graph.node(id).inputs;
        let mut channel = 0;
        for (k, &p) in inputs.iter().enumerate() {
            let c = hwc(&self.shape(p))[2];
            if copies.contains(&k) {
                let x = View::of(&self.plan, &self.window(p)?, batch);
                let slice = Window {
                    offset: whole.offset + channel,
                    c,
                    ..whole
                };
                self.shift_window(
                    arena,
                    x,
                    View::of(&self.plan, &slice, batch),
                    (0, 0),
                    PadMode::Zeros,
                    batch,
                )?;
            }
            channel += c;
        }
        Ok(())
    }

    /// The same values in another shape (Flatten, Reshape, tf.reshape and kin): a flat copy
    /// between dense windows.
    fn flat_copy<T: Element>(
        &self,
        arena: &mut CudaSlice<T>,
        id: NodeId,
        batch: usize,
    ) -> Result<(), CudaError> {
        let input = self.graph.node(id).inputs[0];
        let len: usize = self.shape(input).iter().product();
        let x = self.plan.base(&self.dense_window(input)?, batch) as i64;
        let y = self.plan.base(&self.dense_window(id)?, batch) as i64;
        self.shift_window(
            arena,
            View::flat(x, len),
            View::flat(y, len),
            (0, 0),
            PadMode::Zeros,
            batch,
        )
    }

    /// An image resize (UpSampling2D, Resizing, tf.image.resize) from `x`'s size to `y`'s.
    fn resize<T: Element>(
        &self,
        arena: &mut CudaSlice<T>,
        x: View,
        y: View,
        op: ImageResize,
        batch: usize,
    ) -> Result<(), CudaError> {
        let ints = [resize_mode(op), batch as i32];
        let mut b = self.stream.launch_builder(self.function::<T>("resize"));
        b.arg(arena).arg(&x).arg(&y);
        for v in &ints {
            b.arg(v);
        }
        // SAFETY: matches resize_<T>(void*, View, View, int, int); both windows lie inside the
        // arena as planned.
        unsafe { b.launch(grid(y.elements(batch))).map_err(driver)? };
        Ok(())
    }

    /// GlobalAveragePooling2D / GlobalMaxPooling2D (`kernel`) of `x` into `id`'s dense output.
    fn global_pool<T: Element>(
        &self,
        arena: &mut CudaSlice<T>,
        id: NodeId,
        x: View,
        kernel: &str,
        batch: usize,
    ) -> Result<(), CudaError> {
        let y_off = self.plan.base(&self.dense_window(id)?, batch) as i64;
        let nb = batch as i32;
        // SAFETY: matches global_*_pool_<T>(void*, View, i64, int); the output's dense
        // window holds batch x channels values.
        unsafe {
            self.stream
                .launch_builder(self.function::<T>(kernel))
                .arg(&mut *arena)
                .arg(&x)
                .arg(&y_off)
                .arg(&nb)
                .launch(grid(batch * x.c.max(0) as usize))
                .map_err(driver)?;
        }
        Ok(())
    }

    fn shift_window<T: Element>(
        &self,
        arena: &mut CudaSlice<T>,
        x: View,
        y: View,
        (top, left): (i32, i32),
        mode: PadMode,
        batch: usize,
    ) -> Result<(), CudaError> {
        let nb = batch as i32;
        let mode = pad_mode_code(mode);
        // SAFETY: matches shift_window_<T>(void*, View, View, int, int, int, int); both windows
        // lie inside the arena as planned.
        unsafe {
            self.stream
                .launch_builder(self.function::<T>("shift_window"))
                .arg(arena)
                .arg(&x)
                .arg(&y)
                .arg(&top)
                .arg(&left)
                .arg(&mode)
                .arg(&nb)
                .launch(grid(y.elements(batch)))
                .map_err(driver)?;
        }
        Ok(())
    }

    /// `y = a + b * scale` elementwise (`scaled_add`, kernels/layers.cu).
    fn scaled_add<T: Element>(
        &self,
        arena: &mut CudaSlice<T>,
        [a, b]: [View; 2],
        y: View,
        scale: f64,
        batch: usize,
    ) -> Result<(), CudaError> {
        let (scale, nb) = (scale as f32, batch as i32);
        // SAFETY: matches scaled_add_<T>(void*, View, View, View, float, int); the views lie
        // inside the arena as planned.
        unsafe {
            self.stream
                .launch_builder(self.function::<T>("scaled_add"))
                .arg(arena)
                .arg(&a)
                .arg(&b)
                .arg(&y)
                .arg(&scale)
                .arg(&nb)
                .launch(grid(y.elements(batch)))
                .map_err(driver)?;
        }
        Ok(())
    }

    /// Each channel of `x` `repeats` times in a row (`repeat_channels`, kernels/layers.cu).
    fn repeat_channels<T: Element>(
        &self,
        arena: &mut CudaSlice<T>,
        x: View,
        y: View,
        repeats: i64,
        batch: usize,
    ) -> Result<(), CudaError> {
        let (repeats, nb) = (repeats as i32, batch as i32);
        // SAFETY: matches repeat_channels_<T>(void*, View, View, int, int); the views lie
        // inside the arena as planned, and y has x's channels times `repeats`.
        unsafe {
            self.stream
                .launch_builder(self.function::<T>("repeat_channels"))
                .arg(arena)
                .arg(&x)
                .arg(&y)
                .arg(&repeats)
                .arg(&nb)
                .launch(grid(y.elements(batch)))
                .map_err(driver)?;
        }
        Ok(())
    }

    /// `y = f(x, c)` elementwise (`scalar_op`, kernels/layers.cu); `x` may be `y` itself.
    fn scalar_op<T: Element>(
        &self,
        arena: &mut CudaSlice<T>,
        op: &ScalarOp,
        x: View,
        y: View,
        batch: usize,
    ) -> Result<(), CudaError> {
        let code: i32 = match op.function {
            ScalarFn::Add => 0,
            ScalarFn::Subtract => 1,
            ScalarFn::Multiply => 2,
            ScalarFn::Divide => 3,
            ScalarFn::Maximum => 4,
            ScalarFn::Minimum => 5,
        };
        let (k, first, nb) = (op.c(), i32::from(op.constant_first), batch as i32);
        // SAFETY: matches scalar_op_<T>(void*, View, View, int, float, int, int); both views
        // lie inside the arena as planned.
        unsafe {
            self.stream
                .launch_builder(self.function::<T>("scalar_op"))
                .arg(arena)
                .arg(&x)
                .arg(&y)
                .arg(&code)
                .arg(&k)
                .arg(&first)
                .arg(&nb)
                .launch(grid(y.elements(batch)))
                .map_err(driver)?;
        }
        Ok(())
    }

    /// A grouped convolution (Conv2D with groups, DepthwiseConv2D: `per_group` = 1) on the
    /// direct kernel `grouped_conv2d` (kernels/conv.cu); weights `[kernel, bias]`.
    #[allow(clippy::too_many_arguments)]
    fn grouped_conv<T: Element>(
        &self,
        arena: &mut CudaSlice<T>,
        (x, y): (View, View),
        [kernel, bias]: [&CudaSlice<f32>; 2],
        [rows, cols]: [WindowGeometry; 2],
        per_group: usize,
        activation: ActivationFn,
        batch: usize,
    ) -> Result<(), CudaError> {
        let ints = [
            rows.kernel,
            cols.kernel,
            rows.stride,
            cols.stride,
            rows.dilation,
            cols.dilation,
            rows.pad_before,
            cols.pad_before,
            per_group,
        ]
        .map(|v| v as i32);
        let mut b = self
            .stream
            .launch_builder(self.function::<T>("grouped_conv2d"));
        b.arg(&mut *arena).arg(&x).arg(&y).arg(kernel).arg(bias);
        for v in &ints {
            b.arg(v);
        }
        let (act, nb) = (activation_code(activation), batch as i32);
        b.arg(&act).arg(&nb);
        // SAFETY: matches grouped_conv2d_<T>(void*, View, View, const float*, const float*,
        // int x11) in kernels/conv.cu; windows from the plan; f32 weights in Keras's layout.
        unsafe { b.launch(grid(y.elements(batch))).map_err(driver)? };
        if activation == ActivationFn::Softmax {
            self.softmax_over_channels(arena, y, batch)?;
        }
        Ok(())
    }

    fn weights_of(&self, id: NodeId) -> Result<&DeviceWeights, CudaError> {
        self.weights.get(&id).ok_or_else(|| {
            CudaError::Model(format!("no weights for `{}`", self.graph.node(id).name))
        })
    }

    fn launch<T: Element>(
        &self,
        id: NodeId,
        arena: &mut CudaSlice<T>,
        batch: usize,
    ) -> Result<(), CudaError> {
        let node = self.graph.node(id);
        let out_shape = self.shape(id);
        let in_shapes: Vec<Vec<usize>> = node.inputs.iter().map(|&p| self.shape(p)).collect();
        let plan = &self.plan;
        let nb = batch as i32;
        let i = |v: usize| v as i32;
        let x_view = |k: usize| -> Result<View, CudaError> {
            Ok(View::of(plan, &self.window(node.inputs[k])?, batch))
        };
        // Every input's window, for the merges. A volume's view folds depth and height into its
        // rows, so the kernel broadcasts them only together.
        let x_views = || -> Result<Vec<View>, CudaError> {
            for s in &in_shapes {
                if let ([d, h, ..], [od, oh, ..]) = (&s[..], &out_shape[..]) {
                    let folds = (d == od && h == oh) || (*d == 1 && *h == 1);
                    if s.len() == 4 && !folds {
                        return Err(CudaError::Model(format!(
                            "`{}`: broadcasting a volume over depth or height alone is not run on \
                             the GPU yet; run it with --device cpu",
                            node.name
                        )));
                    }
                }
            }
            (0..node.inputs.len()).map(x_view).collect()
        };
        let y = View::of(plan, &self.window(id)?, batch);
        let n_out = y.elements(batch);
        let stream = &self.stream;
        // SAFETY (every launch below): the arguments match the kernel's C signature in
        // kernels/*.cu in order and type; windows come from the plan, which keeps each value
        // inside the arena (arena_len * batch elements) and a layer's output apart from its
        // inputs; weight buffers were uploaded with the shapes the kernels index.
        match &node.op {
            // Uploaded by `upload_input` before the kernels.
            Op::Input(_) => {}
            // The 3-D kinds (kernels/volume.cu): views whose rows are (depth, row) pairs, with
            // each view's depth passed beside it.
            Op::Conv3D(op) => {
                let (xd, yd) = (in_shapes[0][0], out_shape[0]);
                let g = [0, 1, 2].map(|a| op.geometry(a, in_shapes[0][a], out_shape[a]));
                let w = self.weights_of(id)?;
                let ints = [
                    i(xd),
                    i(yd),
                    i(g[0].kernel),
                    i(g[1].kernel),
                    i(g[2].kernel),
                    i(g[0].stride),
                    i(g[1].stride),
                    i(g[2].stride),
                    i(g[0].dilation),
                    i(g[1].dilation),
                    i(g[2].dilation),
                    i(g[0].pad_before),
                    i(g[1].pad_before),
                    i(g[2].pad_before),
                    activation_code(op.args.activation),
                    nb,
                ];
                let x = x_view(0)?;
                let mut b = stream.launch_builder(self.function::<T>("conv3d"));
                b.arg(&mut *arena)
                    .arg(&x)
                    .arg(&y)
                    .arg(&w.tensors[0])
                    .arg(&w.tensors[1]);
                for v in &ints {
                    b.arg(v);
                }
                unsafe { b.launch(grid(n_out)).map_err(driver)? };
                if op.args.activation == ActivationFn::Softmax {
                    self.softmax_over_channels(arena, y, batch)?;
                }
            }
            Op::Conv3DTranspose(op) => {
                let (xd, yd) = (in_shapes[0][0], out_shape[0]);
                let g = [0, 1, 2].map(|a| op.geometry(a, in_shapes[0][a], out_shape[a]));
                let w = self.weights_of(id)?;
                let ints = [
                    i(xd),
                    i(yd),
                    i(g[0].kernel),
                    i(g[1].kernel),
                    i(g[2].kernel),
                    i(g[0].stride),
                    i(g[1].stride),
                    i(g[2].stride),
                    i(g[0].crop_before),
                    i(g[1].crop_before),
                    i(g[2].crop_before),
                    activation_code(op.args.activation),
                    nb,
                ];
                let x = x_view(0)?;
                let mut b = stream.launch_builder(self.function::<T>("conv3d_transpose"));
                b.arg(&mut *arena)
                    .arg(&x)
                    .arg(&y)
                    .arg(&w.tensors[0])
                    .arg(&w.tensors[1]);
                for v in &ints {
                    b.arg(v);
                }
                unsafe { b.launch(grid(n_out)).map_err(driver)? };
                if op.args.activation == ActivationFn::Softmax {
                    self.softmax_over_channels(arena, y, batch)?;
                }
            }
            Op::MaxPooling3D(op) => {
                let g = [0, 1, 2].map(|a| op.geometry(a, in_shapes[0][a], out_shape[a]));
                let depths = (in_shapes[0][0], out_shape[0]);
                self.pool3d::<T>(arena, (x_view(0)?, y), depths, g, false, batch)?;
            }
            Op::AveragePooling3D(op) => {
                let g = [0, 1, 2].map(|a| op.geometry(a, in_shapes[0][a], out_shape[a]));
                let depths = (in_shapes[0][0], out_shape[0]);
                self.pool3d::<T>(arena, (x_view(0)?, y), depths, g, true, batch)?;
            }
            Op::UpSampling3D(op) => {
                let repeat = op.size.map(|v| v as i32);
                let depths = (in_shapes[0][0], out_shape[0]);
                match op.interpolation {
                    VolumeInterpolation::Nearest => {
                        let copy = ([0; 3], PadMode::Zeros);
                        self.resample3d::<T>(arena, (x_view(0)?, y), depths, repeat, copy, batch)?
                    }
                    VolumeInterpolation::Trilinear => {
                        let ints = [
                            i(depths.0),
                            i(depths.1),
                            repeat[0],
                            repeat[1],
                            repeat[2],
                            i32::from(op.align_corners),
                            nb,
                        ];
                        let x = x_view(0)?;
                        let mut b = stream.launch_builder(self.function::<T>("upsample3d_linear"));
                        b.arg(&mut *arena).arg(&x).arg(&y);
                        for v in &ints {
                            b.arg(v);
                        }
                        // SAFETY: matches upsample3d_linear_<T>(void*, View, View, int x 7)
                        // in volume.cu; both windows lie inside the arena as planned.
                        unsafe { b.launch(grid(n_out)).map_err(driver)? };
                    }
                }
            }
            Op::Cropping3D(op) => {
                let k = op.cropping;
                let first = [k[0], k[2], k[4]].map(|v| v as i32);
                let depths = (in_shapes[0][0], out_shape[0]);
                let window = (first, PadMode::Zeros);
                self.resample3d::<T>(arena, (x_view(0)?, y), depths, [1; 3], window, batch)?;
            }
            Op::ZeroPadding3D(op) => {
                let p = op.padding;
                let first = [p[0], p[2], p[4]].map(|v| -(v as i32));
                let depths = (in_shapes[0][0], out_shape[0]);
                let window = (first, op.mode);
                self.resample3d::<T>(arena, (x_view(0)?, y), depths, [1; 3], window, batch)?;
            }
            // The mean over the view's rows (depth x height) and columns: all the voxels.
            Op::GlobalAveragePooling3D(_) => {
                let x = x_view(0)?;
                let y_off = plan.base(&self.dense_window(id)?, batch) as i64;
                unsafe {
                    stream
                        .launch_builder(self.function::<T>("global_average_pool"))
                        .arg(&mut *arena)
                        .arg(&x)
                        .arg(&y_off)
                        .arg(&nb)
                        .launch(grid(batch * x.c.max(0) as usize))
                        .map_err(driver)?;
                }
            }
            Op::Conv2D(op) if op.groups != 1 => {
                let [h, wd, c] = hwc(&in_shapes[0]);
                let (oh, ow) = (y.h as usize, y.w as usize);
                let window = [op.args.geometry(0, h, oh), op.args.geometry(1, wd, ow)];
                let w = self.weights_of(id)?;
                let weights = [&w.tensors[0], &w.tensors[1]];
                let per_group = c / op.groups as usize;
                let views = (x_view(0)?, y);
                self.grouped_conv::<T>(
                    arena,
                    views,
                    weights,
                    window,
                    per_group,
                    op.args.activation,
                    batch,
                )?;
            }
            Op::DepthwiseConv2D(op) => {
                let [h, wd, _] = hwc(&in_shapes[0]);
                let (oh, ow) = (y.h as usize, y.w as usize);
                let d = &op.depthwise;
                let window = [d.geometry(0, h, oh), d.geometry(1, wd, ow)];
                let w = self.weights_of(id)?;
                let weights = [&w.tensors[0], &w.tensors[1]];
                self.grouped_conv::<T>(
                    arena,
                    (x_view(0)?, y),
                    weights,
                    window,
                    1,
                    op.activation,
                    batch,
                )?;
            }
            Op::SeparableConv2D(op) => {
                let [h, wd, c] = hwc(&in_shapes[0]);
                let (oh, ow) = (y.h as usize, y.w as usize);
                let d = &op.depthwise;
                let [rows, cols] = [d.geometry(0, h, oh), d.geometry(1, wd, ow)];
                let w = self.weights_of(id)?;
                let ints = [
                    i(rows.kernel),
                    i(cols.kernel),
                    i(rows.stride),
                    i(cols.stride),
                    i(rows.dilation),
                    i(cols.dilation),
                    i(rows.pad_before),
                    i(cols.pad_before),
                    i(c * d.depth_multiplier as usize),
                    activation_code(op.activation),
                    nb,
                ];
                let x = x_view(0)?;
                let mut b = stream.launch_builder(self.function::<T>("separable_conv2d"));
                b.arg(&mut *arena)
                    .arg(&x)
                    .arg(&y)
                    .arg(&w.tensors[0])
                    .arg(&w.tensors[1])
                    .arg(&w.tensors[2]);
                for v in &ints {
                    b.arg(v);
                }
                // SAFETY: matches separable_conv2d_<T>(void*, View, View, const float* x3,
                // int x11) in kernels/conv.cu; weights bound as [depthwise, pointwise, bias].
                unsafe { b.launch(grid(n_out)).map_err(driver)? };
                if op.activation == ActivationFn::Softmax {
                    self.softmax_over_channels(arena, y, batch)?;
                }
            }
            Op::Conv2D(op) => {
                let a = &op.args;
                let (x0, x1) = match &plan.storage[node.inputs[0].index()] {
                    Some(Storage::Parts(parts)) if parts.len() == 2 => (
                        View::of(plan, &parts[0], batch),
                        View::of(plan, &parts[1], batch),
                    ),
                    _ => (x_view(0)?, View::default()),
                };
                let [h, wd, _] = hwc(&in_shapes[0]);
                let (oh, ow) = (y.h as usize, y.w as usize);
                let (rows, cols) = (a.geometry(0, h, oh), a.geometry(1, wd, ow));
                let activation = plan.fused[id.index()].activation.unwrap_or(a.activation);
                let act = activation_code(activation);
                let w = self.weights_of(id)?;
                let geometry = [
                    i(rows.kernel),
                    i(cols.kernel),
                    i(rows.stride),
                    i(cols.stride),
                    i(rows.dilation),
                    i(cols.dilation),
                    i(rows.pad_before),
                    i(cols.pad_before),
                ];
                if let Some(&head) = self.heads.get(&id) {
                    // The fused head writes the 1x1 convolution's output (its activation
                    // included); this convolution's own output is never written.
                    let tc = &self.tensor_core[&id];
                    let views = (x0, x1, y);
                    let bias = &w.tensors[1];
                    return self.launch_head(arena, tc, bias, views, geometry, act, head, batch);
                }
                let ints: Vec<i32> = geometry.iter().copied().chain([act, nb]).collect();
                if self.small_c(id).is_some() {
                    let mut b = stream.launch_builder(self.function::<T>("conv_small_c"));
                    b.arg(&mut *arena)
                        .arg(&x0)
                        .arg(&y)
                        .arg(&w.tensors[0])
                        .arg(&w.tensors[1]);
                    for v in &ints {
                        b.arg(v);
                    }
                    let config = LaunchConfig {
                        grid_dim: (
                            (y.w.max(1) as u32).div_ceil(32),
                            (y.h.max(1) as u32).div_ceil(16),
                            batch as u32,
                        ),
                        block_dim: (256, 1, 1),
                        shared_mem_bytes: 0,
                    };
                    // SAFETY: matches conv_small_c_<T>(void*, View, View, const float*, const
                    // float*, int x10) (kernels/first_layer.cu) with its launch shape; within
                    // its limits (small_c_fits); planned windows; f32 HWIO weights.
                    unsafe { b.launch(config).map_err(driver)? };
                } else if let Some(tc) = self.tensor_core.get(&id) {
                    let views = (x0, x1, y);
                    self.launch_tensor_core(arena, tc, &w.tensors[1], views, geometry, act, batch)?;
                } else {
                    let mut b = stream.launch_builder(self.function::<T>("conv2d"));
                    b.arg(&mut *arena)
                        .arg(&x0)
                        .arg(&x1)
                        .arg(&y)
                        .arg(&w.tensors[0])
                        .arg(&w.tensors[1]);
                    for v in &ints {
                        b.arg(v);
                    }
                    unsafe { b.launch(grid(n_out)).map_err(driver)? };
                }
                if activation == ActivationFn::Softmax {
                    self.softmax_over_channels(arena, y, batch)?;
                }
            }
            Op::Conv2DTranspose(op) => {
                let a = &op.args;
                let [h, wd, _] = hwc(&in_shapes[0]);
                let (oh, ow) = (y.h as usize, y.w as usize);
                let (rows, cols) = (op.geometry(0, h, oh), op.geometry(1, wd, ow));
                let w = self.weights_of(id)?;
                let x = x_view(0)?;
                let act = activation_code(a.activation);
                if let Some(tc) = self.tensor_core.get(&id) {
                    let geometry = [
                        i(rows.kernel),
                        i(cols.kernel),
                        i(rows.stride),
                        i(cols.stride),
                        1,
                        1,
                        i(rows.crop_before),
                        i(cols.crop_before),
                    ];
                    let views = (x, View::default(), y);
                    self.launch_tensor_core(arena, tc, &w.tensors[1], views, geometry, act, batch)?;
                } else {
                    let ints = [
                        i(rows.kernel),
                        i(cols.kernel),
                        i(rows.stride),
                        i(cols.stride),
                        i(rows.crop_before),
                        i(cols.crop_before),
                        act,
                        nb,
                    ];
                    let mut b = stream.launch_builder(self.function::<T>("conv2d_transpose"));
                    b.arg(&mut *arena)
                        .arg(&x)
                        .arg(&y)
                        .arg(&w.tensors[0])
                        .arg(&w.tensors[1]);
                    for v in &ints {
                        b.arg(v);
                    }
                    unsafe { b.launch(grid(n_out)).map_err(driver)? };
                }
                if a.activation == ActivationFn::Softmax {
                    self.softmax_over_channels(arena, y, batch)?;
                }
            }
            Op::MultiHeadAttention(_) => self.attention::<T>(id, arena, batch)?,
            Op::PatchExtract(op) => {
                let [h, wd, c] = hwc(&in_shapes[0]);
                let rows = (out_shape[0] as f64).sqrt().round() as usize;
                let ints = [h, wd, c, op.side().max(1) as usize, rows, batch];
                // Matches patch_extract_<T>(void*, i64, i64, int x6).
                self.dense_io::<T>("patch_extract", id, arena, batch, 0, &ints)?;
            }
            Op::SwinTransformerBlock(op) => self.swin_block::<T>(id, op, arena, batch)?,
            Op::PatchMerging(op) => {
                let [h, wd] = op.num_patch.map(|v| v as usize);
                let ints = [h, wd, in_shapes[0][1], out_shape[1], batch];
                // Matches patch_merging_<T>(void*, i64, i64, const float*, int x5); the
                // kernel was uploaded as [4 C, units].
                self.dense_io::<T>("patch_merging", id, arena, batch, 1, &ints)?;
            }
            Op::PatchExpanding(op) => {
                let [h, wd] = op.num_patch.map(|v| v as usize);
                let (r, oc) = (op.upsample_rate as usize, op.out_channels() as usize);
                let ints = [h, wd, in_shapes[0][1], r, oc, batch];
                // Matches patch_expanding_<T>(void*, i64, i64, const float*, int x6); the
                // kernel was uploaded as [1, 1, C, r * r * oc].
                self.dense_io::<T>("patch_expanding", id, arena, batch, 1, &ints)?;
            }
            Op::PatchEmbedding(_) => {
                let (tokens, n_in) = (in_shapes[0][0], in_shapes[0][1]);
                let ints = [batch * tokens, tokens, n_in, out_shape[1]];
                // Matches patch_embedding_<T>(void*, i64, i64, const float* x3, int x4); the
                // weights were uploaded as [n_in, units], [units], [tokens, units].
                self.dense_io::<T>("patch_embedding", id, arena, batch, 3, &ints)?;
            }
            Op::Dense(op) => {
                let n_in = in_shapes[0].last().copied().unwrap_or(1);
                let units = out_shape.last().copied().unwrap_or(1);
                let rows = n_out / units.max(1);
                let w = self.weights_of(id)?;
                let x_off = plan.base(&self.dense_window(node.inputs[0])?, batch) as i64;
                let y_off = plan.base(&self.dense_window(id)?, batch) as i64;
                let act = activation_code(op.activation);
                let (r, ni, u) = (i(rows), i(n_in), i(units));
                unsafe {
                    stream
                        .launch_builder(self.function::<T>("dense"))
                        .arg(&mut *arena)
                        .arg(&x_off)
                        .arg(&y_off)
                        .arg(&w.tensors[0])
                        .arg(&w.tensors[1])
                        .arg(&r)
                        .arg(&ni)
                        .arg(&u)
                        .arg(&act)
                        .launch(grid(n_out))
                        .map_err(driver)?;
                }
                if op.activation == ActivationFn::Softmax {
                    self.softmax_in_place(arena, y_off, rows as i64, u, 1)?;
                }
            }
            Op::MaxPooling2D(op) => {
                let [h, wd, _] = hwc(&in_shapes[0]);
                let (oh, ow) = (y.h as usize, y.w as usize);
                let window = [op.geometry(0, h, oh), op.geometry(1, wd, ow)];
                self.pool::<T>(arena, "max_pool", x_view(0)?, y, window, batch)?;
            }
            Op::AveragePooling2D(op) => {
                let [h, wd, _] = hwc(&in_shapes[0]);
                let (oh, ow) = (y.h as usize, y.w as usize);
                let window = [op.geometry(0, h, oh), op.geometry(1, wd, ow)];
                self.pool::<T>(arena, "average_pool", x_view(0)?, y, window, batch)?;
            }
            Op::UpSampling2D(op) => self.resize::<T>(arena, x_view(0)?, y, op.resize(), batch)?,
            Op::Resizing(op) => self.resize::<T>(arena, x_view(0)?, y, op.resize(), batch)?,
            Op::Cropping2D(op) => {
                let (t, l) = (op.cropping[0] as i32, op.cropping[2] as i32);
                self.shift_window(arena, x_view(0)?, y, (t, l), PadMode::Zeros, batch)?;
            }
            Op::ZeroPadding2D(op) => {
                let (t, l) = (-(op.padding[0] as i32), -(op.padding[2] as i32));
                self.shift_window(arena, x_view(0)?, y, (t, l), op.mode, batch)?;
            }
            // The identity at inference: a copy into the layer's own buffer.
            Op::Dropout(_)
            | Op::SpatialDropout2D(_)
            | Op::GaussianNoise(_)
            | Op::GaussianDropout(_)
            | Op::FixedDropout(_) => {
                self.shift_window(arena, x_view(0)?, y, (0, 0), PadMode::Zeros, batch)?
            }
            Op::Permute(op) => self.permute::<T>(arena, id, &op.source_axes(), batch)?,
            Op::Flatten(_) | Op::Reshape(_) => self.flat_copy(arena, id, batch)?,
            Op::Lambda(op) => match &op.body {
                // The input's window of channels `start..stop`, copied.
                LambdaBody::SliceTensor { start, stop, .. } => {
                    let mut x = x_view(0)?;
                    x.offset += start;
                    x.c = (stop - start) as i32;
                    self.shift_window(arena, x, y, (0, 0), PadMode::Zeros, batch)?
                }
                LambdaBody::ExpandDims { .. } => self.flat_copy(arena, id, batch)?,
                LambdaBody::RepeatElements { repeats, .. } => {
                    self.repeat_channels::<T>(arena, x_view(0)?, y, *repeats, batch)?
                }
                LambdaBody::Resize {
                    method,
                    align_corners,
                    ..
                } => {
                    let resize = ImageResize::new(*method, *align_corners);
                    self.resize::<T>(arena, x_view(0)?, y, resize, batch)?
                }
                LambdaBody::ScaledAdd {
                    first,
                    second,
                    scale,
                    ..
                } => {
                    let inputs = [x_view(*first)?, x_view(*second)?];
                    self.scaled_add::<T>(arena, inputs, y, *scale, batch)?
                }
                // One scalar_op per operation: the first from the input, the others in place.
                LambdaBody::Arithmetic(a) => {
                    let mut from = x_view(0)?;
                    if a.ops.is_empty() {
                        self.shift_window(arena, from, y, (0, 0), PadMode::Zeros, batch)?;
                    }
                    for op in &a.ops {
                        self.scalar_op::<T>(arena, op, from, y, batch)?;
                        from = y;
                    }
                }
            },
            // Only concatenations on another axis than the channels run a kernel.
            Op::Concatenate(op) => self.concat::<T>(arena, id, op.axis, batch)?,
            Op::TFOpLambda(op) => match op.computes() {
                TfCompute::Merge(function) => {
                    self.merge::<T>(arena, function, x_views()?, y, batch)?
                }
                TfCompute::TensorMerge(m) => {
                    let x = x_views()?[0];
                    let item = op
                        .operand
                        .as_ref()
                        .map_or(&[][..], |t| t.item_shape(in_shapes[0].len()));
                    let kv = constant_view(item, &out_shape).ok_or_else(|| {
                        CudaError::Model(format!(
                            "`{}`: broadcasting a constant over a volume's depth or height \
                             alone is not run on the GPU yet; run it with --device cpu",
                            node.name
                        ))
                    })?;
                    let k = &self.weights_of(id)?.tensors[0];
                    let (code, first, nb) = (
                        merge_code(m.function),
                        i32::from(m.constant_first),
                        batch as i32,
                    );
                    // SAFETY: matches merge_constant_<T>(void*, View, const float*, View, View,
                    // int, int, int); `kv` indexes `k` (the constant's values) only, as
                    // constant_view builds it from the constant's own shape.
                    unsafe {
                        stream
                            .launch_builder(self.function::<T>("merge_constant"))
                            .arg(&mut *arena)
                            .arg(&x)
                            .arg(k)
                            .arg(&kv)
                            .arg(&y)
                            .arg(&code)
                            .arg(&first)
                            .arg(&nb)
                            .launch(grid(n_out))
                            .map_err(driver)?;
                    }
                }
                TfCompute::Concat(axis) => self.concat::<T>(arena, id, axis, batch)?,
                TfCompute::Activation(act) => self.activation(arena, x_view(0)?, y, act, batch)?,
                TfCompute::Scalar(op) => self.scalar_op::<T>(arena, &op, x_view(0)?, y, batch)?,
                TfCompute::ReduceChannels(f) => {
                    let code: i32 = match f {
                        ReduceFn::Mean => 0,
                        ReduceFn::Max => 1,
                        ReduceFn::Argmax => 2,
                    };
                    let x = x_view(0)?;
                    // Argmax drops the channel axis: its output read in the input's grid.
                    let y = match f {
                        ReduceFn::Argmax => in_grid_of(&node.name, x, y, 1)?,
                        ReduceFn::Mean | ReduceFn::Max => y,
                    };
                    // SAFETY: matches reduce_channels_<T>(void*, View, View, int, int).
                    unsafe {
                        stream
                            .launch_builder(self.function::<T>("reduce_channels"))
                            .arg(&mut *arena)
                            .arg(&x)
                            .arg(&y)
                            .arg(&code)
                            .arg(&nb)
                            .launch(grid(n_out))
                            .map_err(driver)?;
                    }
                }
                TfCompute::Reshape => self.flat_copy(arena, id, batch)?,
                TfCompute::ReduceImage(f) => {
                    let kernel = match f {
                        ImageReduceFn::Mean => "global_average_pool",
                        ImageReduceFn::Max => "global_max_pool",
                    };
                    self.global_pool(arena, id, x_view(0)?, kernel, batch)?
                }
                // The input's window, copied (in the input's grid when the subscript adds or
                // drops axes). Steps of rows and columns scale the view's strides (backwards
                // when negative); a channel step is copied one channel at a time.
                TfCompute::Slice => {
                    let [rows, cols, channels] = op.slice_window(&in_shapes[0]);
                    let mut x = x_view(0)?;
                    x.offset += rows.start as i64 * x.row_stride
                        + cols.start as i64 * x.pixel_stride as i64
                        + channels.start as i64;
                    x.row_stride *= rows.step as i64;
                    x.pixel_stride *= cols.step as i32;
                    x.h = rows.len as i32;
                    x.w = cols.len as i32;
                    x.c = channels.len as i32;
                    let y = if in_shapes[0].len() == out_shape.len() {
                        y
                    } else {
                        in_grid_of(&node.name, x, y, x.c)?
                    };
                    if channels.range().is_some() {
                        self.shift_window(arena, x, y, (0, 0), PadMode::Zeros, batch)?
                    } else {
                        for k in 0..channels.len {
                            let from = View {
                                offset: x.offset + k as i64 * channels.step as i64,
                                c: 1,
                                ..x
                            };
                            let to = View {
                                offset: y.offset + k as i64,
                                c: 1,
                                ..y
                            };
                            self.shift_window(arena, from, to, (0, 0), PadMode::Zeros, batch)?
                        }
                    }
                }
                TfCompute::Resize(method) => {
                    self.resize::<T>(arena, x_view(0)?, y, ImageResize::tf(method), batch)?
                }
                TfCompute::Pad => {
                    let pad = op.as_padding();
                    let (t, l) = (-(pad.padding[0] as i32), -(pad.padding[2] as i32));
                    self.shift_window(arena, x_view(0)?, y, (t, l), pad.mode, batch)?
                }
            },
            Op::Add(_) => {
                for k in 1..node.inputs.len() {
                    let a = if k == 1 { x_view(0)? } else { y };
                    let b_view = x_view(k)?;
                    unsafe {
                        stream
                            .launch_builder(self.function::<T>("add"))
                            .arg(&mut *arena)
                            .arg(&a)
                            .arg(&b_view)
                            .arg(&y)
                            .arg(&nb)
                            .launch(grid(n_out))
                            .map_err(driver)?;
                    }
                }
            }
            Op::Multiply(_) => self.merge::<T>(arena, Multiply::FUNCTION, x_views()?, y, batch)?,
            Op::Subtract(_) => self.merge::<T>(arena, Subtract::FUNCTION, x_views()?, y, batch)?,
            Op::CustomScaleLayer(op) => {
                self.scaled_add::<T>(arena, [x_view(0)?, x_view(1)?], y, op.scale, batch)?
            }
            Op::Average(_) => self.merge::<T>(arena, Average::FUNCTION, x_views()?, y, batch)?,
            Op::Maximum(_) => self.merge::<T>(arena, Maximum::FUNCTION, x_views()?, y, batch)?,
            Op::Minimum(_) => self.merge::<T>(arena, Minimum::FUNCTION, x_views()?, y, batch)?,
            Op::LeakyReLU(op) => {
                // Keras's ReLU layer with only a negative slope is LeakyReLU.
                let (has_max, mx, slope, t) = (0i32, 0.0f32, op.alpha as f32, 0.0f32);
                let x = x_view(0)?;
                unsafe {
                    stream
                        .launch_builder(self.function::<T>("relu_layer"))
                        .arg(&mut *arena)
                        .arg(&x)
                        .arg(&y)
                        .arg(&has_max)
                        .arg(&mx)
                        .arg(&slope)
                        .arg(&t)
                        .arg(&nb)
                        .launch(grid(n_out))
                        .map_err(driver)?;
                }
            }
            Op::ELU(op) => {
                let x = x_view(0)?;
                let alpha = op.alpha as f32;
                unsafe {
                    stream
                        .launch_builder(self.function::<T>("elu_layer"))
                        .arg(&mut *arena)
                        .arg(&x)
                        .arg(&y)
                        .arg(&alpha)
                        .arg(&nb)
                        .launch(grid(n_out))
                        .map_err(driver)?;
                }
            }
            Op::GELU(_) => self.elementwise(arena, x_view(0)?, y, GELU_TANH_CODE, batch)?,
            Op::Rescaling(op) => {
                // As Keras: the product (scalar_op multiply), rounded, then the sum (scalar_op
                // add, in place).
                let x = x_view(0)?;
                let first = 0i32;
                for (code, k, from) in [(2i32, op.scale as f32, x), (0, op.offset as f32, y)] {
                    // SAFETY: matches scalar_op_<T>(void*, View, View, int, float, int, int).
                    unsafe {
                        stream
                            .launch_builder(self.function::<T>("scalar_op"))
                            .arg(&mut *arena)
                            .arg(&from)
                            .arg(&y)
                            .arg(&code)
                            .arg(&k)
                            .arg(&first)
                            .arg(&nb)
                            .launch(grid(n_out))
                            .map_err(driver)?;
                    }
                }
            }
            Op::Snake(_) => {
                let w = self.weights_of(id)?;
                let x = x_view(0)?;
                // SAFETY: matches snake_<T>(void*, View, View, const float*, int).
                unsafe {
                    stream
                        .launch_builder(self.function::<T>("snake"))
                        .arg(&mut *arena)
                        .arg(&x)
                        .arg(&y)
                        .arg(&w.tensors[0])
                        .arg(&nb)
                        .launch(grid(n_out))
                        .map_err(driver)?;
                }
            }
            Op::PReLU(op) => {
                let w = self.weights_of(id)?;
                let shape: Vec<i64> = in_shapes[0].iter().map(|&d| d as i64).collect();
                let alpha_shape: Vec<usize> =
                    op.alpha_shape(&shape).iter().map(|&d| d as usize).collect();
                let [ah, aw, ac] = hwc(&alpha_shape).map(i);
                let x = x_view(0)?;
                unsafe {
                    stream
                        .launch_builder(self.function::<T>("prelu"))
                        .arg(&mut *arena)
                        .arg(&x)
                        .arg(&y)
                        .arg(&w.tensors[0])
                        .arg(&ah)
                        .arg(&aw)
                        .arg(&ac)
                        .arg(&nb)
                        .launch(grid(n_out))
                        .map_err(driver)?;
                }
            }
            Op::BatchNormalization(op) => {
                let w = self.weights_of(id)?;
                let x = x_view(0)?;
                let eps = op.epsilon as f32;
                unsafe {
                    stream
                        .launch_builder(self.function::<T>("batch_norm"))
                        .arg(&mut *arena)
                        .arg(&x)
                        .arg(&y)
                        .arg(&w.tensors[0])
                        .arg(&w.tensors[1])
                        .arg(&w.tensors[2])
                        .arg(&w.tensors[3])
                        .arg(&eps)
                        .arg(&nb)
                        .launch(grid(n_out))
                        .map_err(driver)?;
                }
            }
            Op::Normalization(_) => {
                let w = self.weights_of(id)?;
                let x = x_view(0)?;
                unsafe {
                    stream
                        .launch_builder(self.function::<T>("standardize"))
                        .arg(&mut *arena)
                        .arg(&x)
                        .arg(&y)
                        .arg(&w.tensors[0])
                        .arg(&w.tensors[1])
                        .arg(&nb)
                        .launch(grid(n_out))
                        .map_err(driver)?;
                }
            }
            Op::GroupNormalization(_) | Op::LayerNormalization(_) => {
                let shape: Vec<i64> = in_shapes[0].iter().map(|&d| d as i64).collect();
                let layout = node.op.norm_layout(&shape).ok_or_else(|| {
                    CudaError::Model(format!("`{}`: no normalization layout", node.name))
                })?;
                let w = self.weights_of(id)?;
                let x = x_view(0)?;
                let ints = [
                    i(layout.outer),
                    i(layout.span),
                    i(layout.groups),
                    i(layout.group_size),
                    i32::from(layout.affine_per_position),
                ];
                let mut b = stream.launch_builder(self.function::<T>("group_norm"));
                b.arg(&mut *arena)
                    .arg(&x)
                    .arg(&y)
                    .arg(&w.tensors[0])
                    .arg(&w.tensors[1]);
                for v in &ints {
                    b.arg(v);
                }
                b.arg(&layout.epsilon).arg(&nb);
                unsafe {
                    b.launch(grid(batch * layout.outer * layout.groups))
                        .map_err(driver)?
                };
            }
            Op::Activation(op) => self.activation(arena, x_view(0)?, y, op.activation, batch)?,
            Op::ReLU(op) => {
                let has_max = i32::from(op.max_value.is_some());
                let (mx, slope, t) = (
                    op.max_value.unwrap_or(0.0) as f32,
                    op.negative_slope as f32,
                    op.threshold as f32,
                );
                let x = x_view(0)?;
                unsafe {
                    stream
                        .launch_builder(self.function::<T>("relu_layer"))
                        .arg(&mut *arena)
                        .arg(&x)
                        .arg(&y)
                        .arg(&has_max)
                        .arg(&mx)
                        .arg(&slope)
                        .arg(&t)
                        .arg(&nb)
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
                let items: usize = out_shape.iter().product();
                let x = plan.base(&self.dense_window(node.inputs[0])?, batch) as i64;
                let yo = plan.base(&self.dense_window(id)?, batch) as i64;
                self.shift_window(
                    arena,
                    View::flat(x, items),
                    View::flat(yo, items),
                    (0, 0),
                    PadMode::Zeros,
                    batch,
                )?;
                self.softmax_in_place(arena, yo, outer, len, inner)?;
            }
            Op::GlobalMaxPooling2D(_) => {
                self.global_pool(arena, id, x_view(0)?, "global_max_pool", batch)?
            }
            Op::GlobalAveragePooling2D(_) => {
                self.global_pool(arena, id, x_view(0)?, "global_average_pool", batch)?
            }
        }
        Ok(())
    }

    /// `pool3d` (kernels/volume.cu): the maximum or the mean over the windows of `g` along
    /// depth, rows and columns.
    fn pool3d<T: Element>(
        &self,
        arena: &mut CudaSlice<T>,
        (x, y): (View, View),
        (xd, yd): (usize, usize),
        g: [WindowGeometry; 3],
        average: bool,
        batch: usize,
    ) -> Result<(), CudaError> {
        let i = |v: usize| v as i32;
        let ints = [
            i(xd),
            i(yd),
            i(g[0].kernel),
            i(g[1].kernel),
            i(g[2].kernel),
            i(g[0].stride),
            i(g[1].stride),
            i(g[2].stride),
            i(g[0].pad_before),
            i(g[1].pad_before),
            i(g[2].pad_before),
            i32::from(average),
            batch as i32,
        ];
        let mut b = self.stream.launch_builder(self.function::<T>("pool3d"));
        b.arg(&mut *arena).arg(&x).arg(&y);
        for v in &ints {
            b.arg(v);
        }
        // SAFETY: as in `layer`: the arguments match `pool3d` in volume.cu.
        unsafe { b.launch(grid(y.elements(batch))).map_err(driver)? };
        Ok(())
    }

    /// `resample3d` (kernels/volume.cu): output voxel (z, y, x) reads input voxel
    /// `(z / repeat[0] + first[0], ...)`, zero outside the input.
    fn resample3d<T: Element>(
        &self,
        arena: &mut CudaSlice<T>,
        (x, y): (View, View),
        (xd, yd): (usize, usize),
        repeat: [i32; 3],
        (first, mode): ([i32; 3], PadMode),
        batch: usize,
    ) -> Result<(), CudaError> {
        let ints = [
            xd as i32,
            yd as i32,
            repeat[0],
            repeat[1],
            repeat[2],
            first[0],
            first[1],
            first[2],
            pad_mode_code(mode),
            batch as i32,
        ];
        let mut b = self.stream.launch_builder(self.function::<T>("resample3d"));
        b.arg(&mut *arena).arg(&x).arg(&y);
        for v in &ints {
            b.arg(v);
        }
        // SAFETY: as in `layer`: the arguments match `resample3d` in volume.cu.
        unsafe { b.launch(grid(y.elements(batch))).map_err(driver)? };
        Ok(())
    }

    /// A pooling kernel (`max_pool`, `average_pool`) over the windows of the op's geometry
    /// along rows and columns.
    fn pool<T: Element>(
        &self,
        arena: &mut CudaSlice<T>,
        kernel: &str,
        x: View,
        y: View,
        [rows, cols]: [WindowGeometry; 2],
        batch: usize,
    ) -> Result<(), CudaError> {
        let ints = [
            rows.kernel as i32,
            cols.kernel as i32,
            rows.stride as i32,
            cols.stride as i32,
            rows.pad_before as i32,
            cols.pad_before as i32,
            batch as i32,
        ];
        let mut b = self.stream.launch_builder(self.function::<T>(kernel));
        b.arg(&mut *arena).arg(&x).arg(&y);
        for v in &ints {
            b.arg(v);
        }
        // SAFETY: as in `layer`: the arguments match the kernel's signature in layers.cu.
        unsafe { b.launch(grid(y.elements(batch))).map_err(driver)? };
        Ok(())
    }

    /// An elementwise merge of `inputs` into `y`, left to right (Keras's order), broadcasting
    /// sides of size 1; Average divides by the count at the last step.
    /// Concatenates the inputs of `id` along Keras's `axis` (counting the batch axis) into its
    /// dense output.
    fn concat<T: Element>(
        &self,
        arena: &mut CudaSlice<T>,
        id: NodeId,
        axis: i64,
        batch: usize,
    ) -> Result<(), CudaError> {
        let node = self.graph.node(id);
        let in_shapes: Vec<Vec<usize>> = node.inputs.iter().map(|&p| self.shape(p)).collect();
        let plan = &self.plan;
        let stream = &self.stream;
        let i = |v: usize| v as i32;
        let rank = in_shapes[0].len() as i64 + 1;
        let axis = (if axis < 0 { rank + axis } else { axis } - 1) as usize;
        let outer = (batch * in_shapes[0][..axis].iter().product::<usize>()) as i64;
        let lens: Vec<usize> = in_shapes
            .iter()
            .map(|s| s[axis..].iter().product())
            .collect();
        let total = i(lens.iter().sum());
        let y_off = plan.base(&self.dense_window(id)?, batch) as i64;
        let mut at = 0usize;
        for (&p, &len) in node.inputs.iter().zip(&lens) {
            let xo = plan.base(&self.dense_window(p)?, batch) as i64;
            let (l, a) = (i(len), i(at));
            // SAFETY: matches concat_part_<T>(void*, i64 x3, int x3) in kernels/layers.cu;
            // dense windows from the plan, each inside the arena.
            unsafe {
                stream
                    .launch_builder(self.function::<T>("concat_part"))
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
        Ok(())
    }

    fn permute<T: Element>(
        &self,
        arena: &mut CudaSlice<T>,
        id: NodeId,
        source: &[usize],
        batch: usize,
    ) -> Result<(), CudaError> {
        let node = self.graph.node(id);
        let in_shape = self.shape(node.inputs[0]);
        let plan = &self.plan;
        let rank = in_shape.len();
        let mut in_strides = vec![1usize; rank];
        for a in (0..rank.saturating_sub(1)).rev() {
            in_strides[a] = in_strides[a + 1] * in_shape[a + 1];
        }
        // Fewer than three axes: leading axes of size 1.
        let pad = 3 - rank.min(3);
        let (mut dims, mut strides) = ([1usize; 3], [0i64; 3]);
        for (k, &a) in source.iter().enumerate().take(3) {
            dims[pad + k] = in_shape[a];
            strides[pad + k] = in_strides[a] as i64;
        }
        let per_image = in_shape.iter().product::<usize>() as i64;
        let total = per_image * batch as i64;
        let xo = plan.base(&self.dense_window(node.inputs[0])?, batch) as i64;
        let yo = plan.base(&self.dense_window(id)?, batch) as i64;
        let (d1, d2) = (dims[1] as i32, dims[2] as i32);
        // SAFETY: matches permute_<T>(void*, i64 x3, int x2, i64 x4) in kernels/layers.cu; dense
        // windows from the plan, each inside the arena.
        unsafe {
            self.stream
                .launch_builder(self.function::<T>("permute"))
                .arg(&mut *arena)
                .arg(&xo)
                .arg(&yo)
                .arg(&total)
                .arg(&d1)
                .arg(&d2)
                .arg(&strides[0])
                .arg(&strides[1])
                .arg(&strides[2])
                .arg(&per_image)
                .launch(grid(total as usize))
                .map_err(driver)?;
        }
        Ok(())
    }

    fn merge<T: Element>(
        &self,
        arena: &mut CudaSlice<T>,
        function: MergeFn,
        inputs: Vec<View>,
        y: View,
        batch: usize,
    ) -> Result<(), CudaError> {
        let code = merge_code(function);
        let nb = batch as i32;
        for k in 1..inputs.len() {
            let a = if k == 1 { inputs[0] } else { y };
            let last = k + 1 == inputs.len();
            let divisor = match function {
                MergeFn::Average if last => inputs.len() as f32,
                MergeFn::Add
                | MergeFn::Average
                | MergeFn::Multiply
                | MergeFn::Subtract
                | MergeFn::Maximum
                | MergeFn::Minimum
                | MergeFn::Divide => 1.0f32,
            };
            // SAFETY: as in `layer`: the arguments match `merge` in layers.cu.
            unsafe {
                self.stream
                    .launch_builder(self.function::<T>("merge"))
                    .arg(&mut *arena)
                    .arg(&a)
                    .arg(&inputs[k])
                    .arg(&y)
                    .arg(&code)
                    .arg(&divisor)
                    .arg(&nb)
                    .launch(grid(y.elements(batch)))
                    .map_err(driver)?;
            }
        }
        Ok(())
    }

    fn elementwise<T: Element>(
        &self,
        arena: &mut CudaSlice<T>,
        x: View,
        y: View,
        act: i32,
        batch: usize,
    ) -> Result<(), CudaError> {
        let nb = batch as i32;
        // SAFETY: matches activation_<T>(void*, View, View, int, int); planned windows.
        unsafe {
            self.stream
                .launch_builder(self.function::<T>("activation"))
                .arg(arena)
                .arg(&x)
                .arg(&y)
                .arg(&act)
                .arg(&nb)
                .launch(grid(y.elements(batch)))
                .map_err(driver)?;
        }
        Ok(())
    }

    /// `activation` of every value of `x` into `y`; softmax over each pixel's channels.
    fn activation<T: Element>(
        &self,
        arena: &mut CudaSlice<T>,
        x: View,
        y: View,
        activation: ActivationFn,
        batch: usize,
    ) -> Result<(), CudaError> {
        match activation {
            // A copy, then the softmax in place.
            ActivationFn::Softmax => {
                self.elementwise(arena, x, y, activation_code(ActivationFn::Linear), batch)?;
                self.softmax_over_channels(arena, y, batch)
            }
            other => self.elementwise(arena, x, y, activation_code(other), batch),
        }
    }

    /// Softmax over the channels of every pixel of a dense window, in place.
    fn softmax_over_channels<T: Element>(
        &self,
        arena: &mut CudaSlice<T>,
        y: View,
        batch: usize,
    ) -> Result<(), CudaError> {
        let pixels = batch * (y.h.max(0) * y.w.max(0)) as usize;
        self.softmax_in_place(arena, y.offset, pixels as i64, y.c.max(1), 1)
    }

    fn softmax_in_place<T: Element>(
        &self,
        arena: &mut CudaSlice<T>,
        off: i64,
        outer: i64,
        len: i32,
        inner: i64,
    ) -> Result<(), CudaError> {
        // SAFETY: matches softmax_<T>(void*, i64, i64, int, i64); outer*len*inner dense values
        // start at `off`, inside the arena.
        unsafe {
            self.stream
                .launch_builder(self.function::<T>("softmax"))
                .arg(arena)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_beyond_32_bit_indexing_are_refused() {
        let c = crate::compile_file(
            std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/specs/original.unet")),
            &crate::Options::default(),
            &mut crate::expand::Session::new(),
        )
        .unwrap();
        assert!(index_limits(&c.graph, &c.info, 8).is_ok());
        // The largest value, conv2d, holds 570 * 570 * 64 = 20,793,600 per image: 103 images are
        // 2,141,740,800 <= 2^31 - 1 = 2,147,483,647; 104 images are 2,162,534,400, over it.
        assert!(index_limits(&c.graph, &c.info, 103).is_ok());
        let err = index_limits(&c.graph, &c.info, 104).unwrap_err();
        assert!(
            err.contains("`conv2d") && err.contains("smaller --batch"),
            "{err}"
        );
        assert!(index_limits(&c.graph, &c.info, 70_000).is_err());
    }

    #[test]
    fn conv_weights_become_one_padded_row_per_filter() {
        // HWIO with k = 3 rows of f = 2: hwio[kk * f + o] = 10 * kk + o.
        let hwio = [0.0, 1.0, 10.0, 11.0, 20.0, 21.0];
        let (packed, k_padded) = pack_conv_weights(&hwio, 3, 2);
        assert_eq!(k_padded, 32);
        assert_eq!(&packed[..3], &[0.0, 10.0, 20.0]);
        assert!(packed[3..32].iter().all(|&v| v == 0.0));
        assert_eq!(&packed[32..35], &[1.0, 11.0, 21.0]);
    }

    #[test]
    fn transposed_weights_keep_their_rows() {
        let keras: Vec<f32> = (0..2 * 33).map(|v| v as f32).collect();
        let (packed, k_padded) = pack_transpose_weights(&keras, 33);
        assert_eq!(k_padded, 64);
        assert_eq!(&packed[64..97], &keras[33..66]);
        assert!(packed[33..64].iter().all(|&v| v == 0.0));
    }

    #[test]
    fn bf16_rounds_to_nearest_even() {
        assert_eq!(f32_to_bf16(1.0), 0x3f80);
        // Exactly halfway: to the even neighbour, down then up.
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f80_8000)), 0x3f80);
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f81_8000)), 0x3f82);
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f80_8001)), 0x3f81);
        assert!(bf16_to_f32(f32_to_bf16(f32::NAN)).is_nan());
        assert_eq!(bf16_to_f32(f32_to_bf16(-2.5)), -2.5);
    }
}
