//! The reference math of every layer kind, f32, NHWC. Each function takes the whole batch.
//! Shapes are per batch item (without the batch dimension).

// Kernels take data, shapes and weights as plain arguments: easier to read at the call site
// than a bag struct.
#![allow(clippy::too_many_arguments)]

use super::gemm::{matmul, matmul_serial};
use super::isa::Isa;
use crate::ir::ops::{
    Activation, ActivationFn, AveragePooling2D, AxisRead, BatchNormalization, Concatenate, Conv2D,
    Conv2DTranspose, Cropping2D, ImageResize, Interpolation, MaxPooling2D, MergeFn, NormLayout,
    ReLU, Softmax, TensorMergeOp, TensorOperand, WindowGeometry, ZeroPadding2D,
};
use rayon::prelude::*;

/// A convolution whose kernel (the GEMM's right-hand matrix) has at most this many floats
/// (2 MiB, a core's L2 cache) runs one im2col tile per task, each tile of at most
/// `TILE_FLOATS` (1 MiB: it stays in the core's cache between the gather and the product). Larger
/// kernels would be packed again by every task: their tiles (at most `SHARED_TILE_FLOATS`) are
/// gathered by all cores, then split across them by the GEMM.
const LOCAL_B_FLOATS: usize = 1 << 19;
const TILE_FLOATS: usize = 1 << 18;
const SHARED_TILE_FLOATS: usize = 1 << 21;

/// Convolutions whose patches have at most this many values (`kh * kw * c`, e.g. 9 for a 3x3
/// first layer on a grey image) multiply them directly ([`small_k_product`]): a GEMM with so
/// short an inner dimension spends its time packing, not multiplying.
const DIRECT_K: usize = 32;

/// One input of a convolution where it lies, e.g. a window of the activation arena (a crop, a
/// slice of a wider buffer): element `(n, y, x, ch)` is
/// `data[offset + n * item_stride + y * row_stride + x * pixel_stride + ch]`.
#[derive(Debug, Clone, Copy)]
pub struct Strided<'a> {
    pub data: &'a [f32],
    pub offset: usize,
    pub item_stride: usize,
    pub row_stride: usize,
    pub pixel_stride: usize,
    pub c: usize,
}

impl<'a> Strided<'a> {
    /// A dense `[batch, h, w, c]` tensor.
    pub fn dense(data: &'a [f32], [h, w, c]: [usize; 3]) -> Self {
        Strided {
            data,
            offset: 0,
            item_stride: h * w * c,
            row_stride: w * c,
            pixel_stride: c,
            c,
        }
    }

    pub(super) fn pixel(&self, n: usize, y: usize, x: usize) -> &'a [f32] {
        let at = self.offset + n * self.item_stride + y * self.row_stride + x * self.pixel_stride;
        &self.data[at..at + self.c]
    }
}

/// `parts` are the input's channels in order: one part, or the parts of an unbuilt channel
/// concatenation (read in place, never gathered into one tensor); `c` is their total.
///
/// im2col + GEMM on tiles of output pixels (see [`LOCAL_B_FLOATS`]); each tile's bias and
/// activation are applied while it is in cache.
pub fn conv2d(
    op: &Conv2D,
    parts: &[Strided],
    [h, w, c]: [usize; 3],
    kernel: &[f32],
    bias: Option<&[f32]>,
    activation: ActivationFn,
    out: &mut [f32],
    [oh, ow, f]: [usize; 3],
    batch: usize,
) {
    let (rows, cols) = (op.args.geometry(0, h, oh), op.args.geometry(1, w, ow));
    let g = PatchGeometry {
        kh: rows.kernel,
        kw: cols.kernel,
        sh: rows.stride,
        sw: cols.stride,
        dh: rows.dilation,
        dw: cols.dilation,
        top: rows.pad_before,
        left: cols.pad_before,
        h,
        w,
        c,
    };
    let k_len = g.kh * g.kw * c;
    let pixels = batch * oh * ow;
    let out = &mut out[..pixels * f];
    if pixels == 0 || f == 0 {
        return;
    }
    // A 1x1 convolution of a dense input is one matrix product over all pixels.
    let pointwise = g.kh == 1 && g.kw == 1 && g.sh == 1 && g.sw == 1 && g.top == 0 && g.left == 0;
    if let ([x], true) = (parts, pointwise) {
        if x.pixel_stride == c && x.row_stride == w * c && x.item_stride == h * w * c {
            matmul(
                pixels,
                f,
                c,
                &x.data[x.offset..x.offset + pixels * c],
                kernel,
                out,
                false,
            );
            bias_activation(out, f, bias, activation);
            return;
        }
    }
    if k_len <= DIRECT_K || k_len * f <= LOCAL_B_FLOATS {
        // Enough tiles to keep every core busy to the end, none larger than the cache allows.
        let tasks = 4 * rayon::current_num_threads();
        let tile = (TILE_FLOATS / k_len.max(1))
            .min(pixels.div_ceil(tasks))
            .max(1);
        out.par_chunks_mut(tile * f).enumerate().for_each_init(
            || vec![0.0f32; tile * k_len],
            |col, (t, y)| {
                let m = y.len() / f;
                let col = &mut col[..m * k_len];
                for (i, patch) in col.chunks_mut(k_len.max(1)).enumerate() {
                    let q = t * tile + i;
                    g.gather(parts, q / (oh * ow), q / ow % oh, q % ow, patch);
                }
                if k_len <= DIRECT_K {
                    small_k_product(f, k_len, col, kernel, y, Isa::current());
                } else {
                    matmul_serial(m, f, k_len, col, kernel, y, false);
                }
                bias_activation_serial(y, f, bias, activation);
            },
        );
        return;
    }
    let tile = (SHARED_TILE_FLOATS / k_len).clamp(1, pixels);
    let mut col = vec![0.0f32; tile * k_len];
    for (t, y) in out.chunks_mut(tile * f).enumerate() {
        let m = y.len() / f;
        let col = &mut col[..m * k_len];
        col.par_chunks_mut(k_len)
            .enumerate()
            .for_each(|(i, patch)| {
                let q = t * tile + i;
                g.gather(parts, q / (oh * ow), q / ow % oh, q % ow, patch);
            });
        matmul(m, f, k_len, col, kernel, y, false);
        bias_activation(y, f, bias, activation);
    }
}

/// A grouped convolution, direct: `x` dense `[batch, h, w, c]`, `kernel` `[kh, kw, c / groups, f]`
/// (Keras's layout), output channel `o` reading the input channels of its group
/// `o / (f / groups)`; taps in the padding are zeros. A depthwise kernel `[kh, kw, c, dm]` is
/// this kernel with `groups = c` (output channel `ch * dm + m`).
pub fn grouped_conv2d(
    [rows, cols]: [WindowGeometry; 2],
    groups: usize,
    x: &[f32],
    [h, w, c]: [usize; 3],
    kernel: &[f32],
    bias: Option<&[f32]>,
    activation: ActivationFn,
    out: &mut [f32],
    [oh, ow, f]: [usize; 3],
) {
    let groups = groups.max(1);
    let (c_group, f_group) = (c / groups, (f / groups).max(1));
    out.par_chunks_mut((ow * f).max(1))
        .enumerate()
        .for_each(|(row, y)| {
            let (n, oy) = (row / oh.max(1), row % oh.max(1));
            let item = &x[n * h * w * c..][..h * w * c];
            for ox in 0..ow {
                let px = &mut y[ox * f..(ox + 1) * f];
                px.fill(0.0);
                for ky in 0..rows.kernel {
                    let Some(iy) = (oy * rows.stride + ky * rows.dilation)
                        .checked_sub(rows.pad_before)
                        .filter(|&iy| iy < h)
                    else {
                        continue;
                    };
                    for kx in 0..cols.kernel {
                        let Some(ix) = (ox * cols.stride + kx * cols.dilation)
                            .checked_sub(cols.pad_before)
                            .filter(|&ix| ix < w)
                        else {
                            continue;
                        };
                        let input = &item[(iy * w + ix) * c..][..c];
                        let taps = &kernel[(ky * cols.kernel + kx) * c_group * f..][..c_group * f];
                        for (o, acc) in px.iter_mut().enumerate() {
                            let first = (o / f_group) * c_group;
                            *acc += input[first..first + c_group]
                                .iter()
                                .zip(taps[o..].iter().step_by(f))
                                .map(|(a, b)| a * b)
                                .sum::<f32>();
                        }
                    }
                }
            }
            bias_activation_serial(y, f, bias, activation);
        });
}

/// Keras's SeparableConv2D: the depthwise stage (`[kh, kw, c, dm]`, no bias) into a buffer of
/// `c * dm` channels, then the pointwise 1x1 convolution (`[c * dm, f]`), its bias and
/// activation.
pub fn separable_conv2d(
    geometry: [WindowGeometry; 2],
    x: &[f32],
    [h, w, c]: [usize; 3],
    depthwise: &[f32],
    pointwise: &[f32],
    bias: Option<&[f32]>,
    activation: ActivationFn,
    out: &mut [f32],
    [oh, ow, f]: [usize; 3],
    batch: usize,
) {
    let mid_channels = pointwise.len() / f.max(1);
    let pixels = batch * oh * ow;
    let mut mid = vec![0.0f32; pixels * mid_channels];
    grouped_conv2d(
        geometry,
        c,
        x,
        [h, w, c],
        depthwise,
        None,
        ActivationFn::Linear,
        &mut mid,
        [oh, ow, mid_channels],
    );
    matmul(
        pixels,
        f,
        mid_channels,
        &mid,
        pointwise,
        &mut out[..pixels * f],
        false,
    );
    bias_activation(out, f, bias, activation);
}

/// Where a convolution's taps fall in its input.
struct PatchGeometry {
    kh: usize,
    kw: usize,
    sh: usize,
    sw: usize,
    dh: usize,
    dw: usize,
    top: usize,
    left: usize,
    h: usize,
    w: usize,
    c: usize,
}

impl PatchGeometry {
    /// Output pixel `(n, oy, ox)`'s patch, `[kh, kw, c]` with the parts' channels side by side
    /// (the kernel's row order); taps in the padding are zeros.
    fn gather(&self, parts: &[Strided], n: usize, oy: usize, ox: usize, patch: &mut [f32]) {
        for ky in 0..self.kh {
            let iy = (oy * self.sh + ky * self.dh).checked_sub(self.top);
            for kx in 0..self.kw {
                let ix = (ox * self.sw + kx * self.dw).checked_sub(self.left);
                let tap = (ky * self.kw + kx) * self.c;
                let dst = &mut patch[tap..tap + self.c];
                match (iy, ix) {
                    (Some(iy), Some(ix)) if iy < self.h && ix < self.w => {
                        let mut at = 0;
                        for part in parts {
                            match part.pixel(n, iy, ix) {
                                // One channel (a grey image): not worth a call to memcpy.
                                [v] => dst[at] = *v,
                                px => dst[at..at + px.len()].copy_from_slice(px),
                            }
                            at += part.c;
                        }
                    }
                    _ => dst.fill(0.0),
                }
            }
        }
    }
}

/// `y[m, f] = col[m, k] x kernel[k, f]` for a short `k`, vectorised over the `f` outputs: each
/// patch value scales a kernel row into accumulators that stay in registers.
fn small_k_product(f: usize, k: usize, col: &[f32], kernel: &[f32], y: &mut [f32], isa: Isa) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx2` is only detected on CPUs with AVX2 and FMA.
        Isa::Avx2 => unsafe { small_k_product_avx2(f, k, col, kernel, y) },
        _ => small_k_product_portable(f, k, col, kernel, y),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn small_k_product_avx2(f: usize, k: usize, col: &[f32], kernel: &[f32], y: &mut [f32]) {
    small_k_product_portable(f, k, col, kernel, y)
}

#[inline(always)]
fn small_k_product_portable(f: usize, k: usize, col: &[f32], kernel: &[f32], y: &mut [f32]) {
    const LANES: usize = 16;
    let blocks = f / LANES * LANES;
    for (r, acc) in y.chunks_mut(f).enumerate() {
        let patch = &col[r * k..(r + 1) * k];
        for o in (0..blocks).step_by(LANES) {
            let mut sum = [0.0f32; LANES];
            for (t, &v) in patch.iter().enumerate() {
                let row = &kernel[t * f + o..t * f + o + LANES];
                for (s, &wv) in sum.iter_mut().zip(row) {
                    *s += v * wv;
                }
            }
            acc[o..o + LANES].copy_from_slice(&sum);
        }
        for (o, out) in acc.iter_mut().enumerate().skip(blocks) {
            *out = patch
                .iter()
                .enumerate()
                .map(|(t, &v)| v * kernel[t * f + o])
                .sum();
        }
    }
}

/// `wt` is the kernel rearranged to `[kh, in, kw * out]` (see [`transpose_kernel`]): kernel row
/// `ka` maps an input row's pixels to their `kw x out` blocks of output row `i * sh + ka`.
pub fn conv2d_transpose(
    op: &Conv2DTranspose,
    x: &[f32],
    [h, w, c]: [usize; 3],
    wt: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    [oh, ow, f]: [usize; 3],
    batch: usize,
) {
    let (rows, cols) = (op.geometry(0, h, oh), op.geometry(1, w, ow));
    let (kh, kw) = (rows.kernel, cols.kernel);
    let (sh, sw) = (rows.stride, cols.stride);
    let (fh, fw) = ((h - 1) * sh + kh, (w - 1) * sw + kw);
    let (y0, x0) = (rows.crop_before, cols.crop_before);
    let cols = kw * f;
    let wt_row = |ka: usize| &wt[ka * c * cols..(ka + 1) * c * cols];
    let out = &mut out[..batch * oh * ow * f];
    let no_overlap = kh == sh && kw == sw && x0 == 0 && ow == w * sw;
    if no_overlap && c * cols <= LOCAL_B_FLOATS {
        // The input pixels' blocks tile the output without overlapping, so each output row is
        // one product, written in place: input row i times kernel row ka. (Only for a kernel
        // small enough to stay in cache: each task packs it again.)
        out.par_chunks_mut(ow * f)
            .enumerate()
            .for_each(|(row, dst)| {
                let (n, fy) = (row / oh, row % oh + y0);
                if fy < h * sh {
                    let (i, ka) = (fy / sh, fy % sh);
                    let src = &x[(n * h + i) * w * c..(n * h + i + 1) * w * c];
                    matmul_serial(w, cols, c, src, wt_row(ka), dst, false);
                } else {
                    dst.fill(0.0);
                }
                bias_activation_serial(dst, f, bias, op.args.activation);
            });
        return;
    }
    // Per kernel row ka, every input pixel's kw x f block, summed into the full (uncropped)
    // result: input row i into full row i * sh + ka. The output is a window of the full result,
    // or all of it (then it is summed in place).
    let whole = y0 == 0 && x0 == 0 && oh == fh && ow == fw;
    let mut y = vec![0.0f32; h * w * cols];
    let mut full_buffer = vec![0.0f32; if whole { 0 } else { fh * fw * f }];
    for n in 0..batch {
        let xin = &x[n * h * w * c..(n + 1) * h * w * c];
        let yout = &mut out[n * oh * ow * f..(n + 1) * oh * ow * f];
        let full: &mut [f32] = if whole { yout } else { &mut full_buffer };
        full.par_chunks_mut(fw * f).for_each(|row| row.fill(0.0));
        for ka in 0..kh {
            matmul(h * w, cols, c, xin, wt_row(ka), &mut y, false);
            // Distinct input rows add into distinct full rows: one task each.
            full.par_chunks_mut(fw * f)
                .skip(ka)
                .step_by(sh)
                .zip(y.par_chunks(w * cols))
                .for_each(|(dst_row, src_row)| {
                    for (j, block) in src_row.chunks(cols).enumerate() {
                        let dst = &mut dst_row[j * sw * f..(j * sw + kw) * f];
                        dst.iter_mut().zip(block).for_each(|(d, v)| *d += v);
                    }
                });
        }
        let yout = &mut out[n * oh * ow * f..(n + 1) * oh * ow * f];
        if !whole {
            yout.par_chunks_mut(ow * f)
                .enumerate()
                .for_each(|(oy, dst)| {
                    let fy = oy + y0;
                    for (ox, px) in dst.chunks_mut(f).enumerate() {
                        let fx = ox + x0;
                        if fy < fh && fx < fw {
                            let at = (fy * fw + fx) * f;
                            px.copy_from_slice(&full_buffer[at..at + f]);
                        } else {
                            px.fill(0.0);
                        }
                    }
                });
        }
        bias_activation(yout, f, bias, op.args.activation);
    }
}

/// Keras stores a transposed-conv kernel as `[kh, kw, out, in]`; the products want
/// `[kh, in, kw * out]`.
pub fn transpose_kernel(kernel: &[f32], [kh, kw, f, c]: [usize; 4]) -> Vec<f32> {
    let mut wt = vec![0.0f32; kernel.len()];
    for a in 0..kh {
        for b in 0..kw {
            for o in 0..f {
                for ci in 0..c {
                    wt[((a * c + ci) * kw + b) * f + o] = kernel[((a * kw + b) * f + o) * c + ci];
                }
            }
        }
    }
    wt
}

pub fn dense(
    x: &[f32],
    n_in: usize,
    kernel: &[f32],
    bias: Option<&[f32]>,
    activation: ActivationFn,
    out: &mut [f32],
    units: usize,
    rows: usize,
) {
    matmul(rows, units, n_in, x, kernel, out, false);
    bias_activation(out, units, bias, activation);
}

pub fn bias_activation(
    y: &mut [f32],
    channels: usize,
    bias: Option<&[f32]>,
    activation: ActivationFn,
) {
    // Whole pixels per task, so that the bias and a softmax line up with each chunk.
    let c = channels.max(1);
    y.par_chunks_mut(c * (1usize << 14).div_ceil(c))
        .for_each(|chunk| bias_activation_serial(chunk, c, bias, activation));
}

/// [`bias_activation`] on the calling thread, for `y` holding whole pixels.
pub(super) fn bias_activation_serial(
    y: &mut [f32],
    channels: usize,
    bias: Option<&[f32]>,
    activation: ActivationFn,
) {
    let c = channels.max(1);
    if let Some(b) = bias {
        if activation == ActivationFn::Relu {
            // The common epilogue in one pass.
            return y.chunks_mut(c).for_each(|px| {
                px.iter_mut()
                    .zip(b)
                    .for_each(|(v, bb)| *v = (*v + bb).max(0.0))
            });
        }
        y.chunks_mut(c)
            .for_each(|px| px.iter_mut().zip(b).for_each(|(v, bb)| *v += bb));
    }
    match (activation, elementwise(activation)) {
        (ActivationFn::Linear, _) => {}
        // Inlined, not called through a pointer per value.
        (ActivationFn::Relu, _) => y.iter_mut().for_each(|v| *v = v.max(0.0)),
        (ActivationFn::Gelu, _) => y.iter_mut().for_each(|v| *v = gelu(*v)),
        (_, Some(f)) => y.iter_mut().for_each(|v| *v = f(*v)),
        (_, None) => y.chunks_mut(c).for_each(softmax_in_place),
    }
}

/// Applies a Keras activation; `softmax` works over the last axis (`channels` values).
/// `out[i] = f(x[i])`, on all cores for large tensors (a transformer's GELU over its MLP).
pub fn map_values(x: &[f32], out: &mut [f32], f: impl Fn(f32) -> f32 + Sync) {
    const CHUNK: usize = 1 << 14;
    let apply = |(o, x): (&mut [f32], &[f32])| {
        for (o, &x) in o.iter_mut().zip(x) {
            *o = f(x);
        }
    };
    if out.len() < 2 * CHUNK {
        apply((out, x));
    } else {
        out.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .for_each(apply);
    }
}

pub fn activate(y: &mut [f32], channels: usize, activation: ActivationFn) {
    bias_activation(y, channels, None, activation);
}

/// erf in float32 without branches or calls, so that loops over it vectorize: `x P(x²) / Q(x²)`
/// on [-3.92, 3.92] (beyond, erf is 1 in float32 but for 5e-8), P and Q of degree 5 fitted to
/// erf by weighted least squares toward the minimax error, P(0) = 2/√π (1.6e-8 in exact
/// arithmetic; as float32 computes it, 4.2e-7 absolute, near ±3.6, and 2.2e-7 relative near 0).
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    const P: [f32; 6] = [
        std::f32::consts::FRAC_2_SQRT_PI,
        0.192_763_25,
        0.053_060_395,
        0.003_868_303_7,
        2.874_802_2e-4,
        2.034_753_9e-6,
    ];
    const Q: [f32; 6] = [
        1.0,
        0.504_163_6,
        0.115_084_305,
        0.015_172_241,
        0.001_188_112_4,
        3.807_089e-5,
    ];
    let x = x.clamp(-3.92, 3.92);
    let t = x * x;
    let p = ((((P[5] * t + P[4]) * t + P[3]) * t + P[2]) * t + P[1]) * t + P[0];
    let q = ((((Q[5] * t + Q[4]) * t + Q[3]) * t + Q[2]) * t + Q[1]) * t + Q[0];
    x * p / q
}

/// e^x in float32 without branches or calls, so that loops over it vectorize: x = n ln 2 + r
/// with |r| <= ln 2 / 2 (n ln 2 exact by Cody and Waite's split of ln 2), e^r by its Taylor
/// polynomial of degree 7 (truncation 5.2e-9 relative), times 2^n built from exponent bits in two
/// halves so that subnormal results are right too; inf from 88.73, 0 below -103.98, as e^x
/// rounds in float32.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    // ln 2 = LN2_HI + LN2_LO; LN2_HI has 9 significant bits, so n LN2_HI is exact.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and taking away 1.5 * 2^23 rounds to the nearest integer (round() is a call on
    // the baseline x86-64).
    const SHIFTER: f32 = 12_582_912.0;
    let x = x.clamp(-104.0, 88.8);
    let shifted = x * std::f32::consts::LOG2_E + SHIFTER;
    let n = shifted - SHIFTER;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = ((((((r * (1.0 / 5040.0) + 1.0 / 720.0) * r + 1.0 / 120.0) * r + 1.0 / 24.0) * r
        + 1.0 / 6.0)
        * r
        + 0.5)
        * r
        + 1.0)
        * r
        + 1.0;
    // n is in [-150, 128], the low bits of `shifted` (integer arithmetic, no conversion):
    // each half's biased exponent is in [52, 191].
    let n = shifted.to_bits() as i32 - SHIFTER.to_bits() as i32;
    let half = n >> 1;
    let two_to = |k: i32| f32::from_bits(((k + 127) as u32) << 23);
    p * two_to(half) * two_to(n - half)
}

/// `1 / (1 + e^-x)`, from `e^-|x|` so that nothing overflows.
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    let e = exp(-x.abs());
    let r = 1.0 / (1.0 + e);
    if x >= 0.0 {
        r
    } else {
        e * r
    }
}

/// tanh in float32 without branches or calls, so that loops over it vectorize: `x P(x²) / Q(x²)`
/// on [-9, 9] (beyond, tanh is ±1 in float32 to within half an ulp), P of degree 6 and Q of
/// degree 3 fitted to tanh's relative error by tools/fits/tanh_fit.py (1.1e-8 in exact
/// arithmetic; as float32 computes it, 3.2e-7 absolute and relative, 5.4 ulp at most, where
/// libm's tanhf is a call per value). Clamped to [-1, 1].
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    const P: [f32; 7] = [
        1.0,
        0.130_878_4,
        0.003_108_221_3,
        1.119_854_8e-5,
        -2.040_246_4e-8,
        5.362_039_6e-11,
        -8.701_302e-14,
    ];
    const Q: [f32; 4] = [1.0, 0.464_211_7, 0.024_512_2, 2.552_334e-4];
    let x = x.clamp(-9.0, 9.0);
    let t = x * x;
    let p = (((((P[6] * t + P[5]) * t + P[4]) * t + P[3]) * t + P[2]) * t + P[1]) * t + P[0];
    let q = ((Q[3] * t + Q[2]) * t + Q[1]) * t + Q[0];
    (x * p / q).clamp(-1.0, 1.0)
}

/// Keras's exact GELU, `x Φ(x) = x (1 + erf(x / √2)) / 2`.
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// The activation as a function of one value; `None` for softmax, which needs the whole pixel.
pub fn elementwise(activation: ActivationFn) -> Option<fn(f32) -> f32> {
    fn softplus(x: f32) -> f32 {
        // log(1 + e^x) without overflow.
        if x > 20.0 {
            x
        } else {
            x.exp().ln_1p()
        }
    }
    Some(match activation {
        ActivationFn::Linear => |x| x,
        ActivationFn::Relu => |x| x.max(0.0),
        ActivationFn::Sigmoid => sigmoid,
        ActivationFn::Softmax => return None,
        ActivationFn::Tanh => tanh,
        ActivationFn::Elu => |x| if x > 0.0 { x } else { x.exp_m1() },
        ActivationFn::Selu => |x| {
            const ALPHA: f32 = 1.673_263_2;
            const SCALE: f32 = 1.050_701;
            SCALE * if x > 0.0 { x } else { ALPHA * x.exp_m1() }
        },
        ActivationFn::Softplus => softplus,
        ActivationFn::Softsign => |x| x / (1.0 + x.abs()),
        ActivationFn::Swish | ActivationFn::Silu => |x| x * sigmoid(x),
        ActivationFn::Gelu => gelu,
        ActivationFn::Exponential => exp,
        ActivationFn::HardSigmoid => |x| (0.2 * x + 0.5).clamp(0.0, 1.0),
        ActivationFn::Relu6 => |x| x.clamp(0.0, 6.0),
        ActivationFn::Mish => |x| x * tanh(softplus(x)),
        ActivationFn::LeakyRelu => |x| if x >= 0.0 { x } else { 0.2 * x },
    })
}

fn softmax_in_place(v: &mut [f32]) {
    let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for x in v.iter_mut() {
        *x = exp(*x - max);
    }
    // Summed in order after the exponentials (which then vectorize), as before.
    let sum: f32 = v.iter().sum();
    for x in v.iter_mut() {
        *x /= sum;
    }
}

pub fn activation_layer(op: &Activation, x: &[f32], out: &mut [f32], channels: usize) {
    out.copy_from_slice(x);
    activate(out, channels, op.activation);
}

pub fn relu_layer(op: &ReLU, x: &[f32], out: &mut [f32]) {
    let (max, slope, t) = (
        op.max_value.map(|m| m as f32),
        op.negative_slope as f32,
        op.threshold as f32,
    );
    out.par_iter_mut().zip(x.par_iter()).for_each(|(o, &v)| {
        *o = if max.is_some_and(|m| v >= m) {
            max.unwrap_or(v)
        } else if v >= t {
            v
        } else {
            slope * (v - t)
        };
    });
}

/// Softmax over `axis` (Keras numbering: batch is 0, -1 the last). `shape` includes the batch.
pub fn softmax_layer(op: &Softmax, x: &[f32], out: &mut [f32], shape: &[usize]) {
    out.copy_from_slice(x);
    let rank = shape.len() as i64;
    let axis = if op.axis < 0 { rank + op.axis } else { op.axis } as usize;
    let (outer, len, inner): (usize, usize, usize) = (
        shape[..axis].iter().product(),
        shape[axis],
        shape[axis + 1..].iter().product(),
    );
    if inner == 1 {
        out.par_chunks_mut(len.max(1)).for_each(softmax_in_place);
        return;
    }
    let mut lane = vec![0.0f32; len];
    for o in 0..outer {
        for i in 0..inner {
            for (l, v) in lane.iter_mut().enumerate() {
                *v = out[(o * len + l) * inner + i];
            }
            softmax_in_place(&mut lane);
            for (l, v) in lane.iter().enumerate() {
                out[(o * len + l) * inner + i] = *v;
            }
        }
    }
}

pub fn batch_norm(
    op: &BatchNormalization,
    x: &[f32],
    out: &mut [f32],
    c: usize,
    gamma: Option<&[f32]>,
    beta: Option<&[f32]>,
    mean: &[f32],
    var: &[f32],
) {
    // Keras at inference: gamma * (x - mean) / sqrt(var + epsilon) + beta.
    let eps = op.epsilon as f32;
    let inv: Vec<f32> = var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
    out.par_chunks_mut(c)
        .zip(x.par_chunks(c))
        .for_each(|(o, xi)| {
            for ch in 0..c {
                let mut v = (xi[ch] - mean[ch]) * inv[ch];
                if let Some(g) = gamma {
                    v *= g[ch];
                }
                if let Some(b) = beta {
                    v += b[ch];
                }
                o[ch] = v;
            }
        });
}

/// Keras's Normalization: `(x - mean) / denominator` per channel (the last axis).
pub fn standardize(x: &[f32], out: &mut [f32], mean: &[f32], denominator: &[f32]) {
    let c = mean.len().max(1);
    out.par_chunks_mut(c)
        .zip(x.par_chunks(c))
        .for_each(|(o, xi)| {
            for ((o, &x), (&m, &d)) in o.iter_mut().zip(xi).zip(mean.iter().zip(denominator)) {
                *o = (x - m) / d;
            }
        });
}

pub fn max_pool(
    op: &MaxPooling2D,
    x: &[f32],
    in_shape: [usize; 3],
    out: &mut [f32],
    out_shape: [usize; 3],
) {
    let window = PoolWindow::of([
        op.geometry(0, in_shape[0], out_shape[0]),
        op.geometry(1, in_shape[1], out_shape[1]),
    ]);
    window.run(
        x,
        in_shape,
        out,
        out_shape,
        f32::NEG_INFINITY,
        f32::max,
        |_, _| {},
    );
}

/// Keras's AveragePooling2D: under `same`, the mean of the window's cells inside the input.
pub fn average_pool(
    op: &AveragePooling2D,
    x: &[f32],
    in_shape: [usize; 3],
    out: &mut [f32],
    out_shape: [usize; 3],
) {
    let window = PoolWindow::of([
        op.geometry(0, in_shape[0], out_shape[0]),
        op.geometry(1, in_shape[1], out_shape[1]),
    ]);
    window.run(
        x,
        in_shape,
        out,
        out_shape,
        0.0,
        |a, b| a + b,
        |px, cells| {
            let scale = 1.0 / cells.max(1) as f32;
            px.iter_mut().for_each(|v| *v *= scale);
        },
    );
}

/// A pooling window's geometry: size, strides and the padding before the first row/column.
struct PoolWindow {
    size: [usize; 2],
    strides: [usize; 2],
    pad: [usize; 2],
}

impl PoolWindow {
    /// From the op's geometry along rows and columns.
    fn of([rows, cols]: [WindowGeometry; 2]) -> PoolWindow {
        PoolWindow {
            size: [rows.kernel, cols.kernel],
            strides: [rows.stride, cols.stride],
            pad: [rows.pad_before, cols.pad_before],
        }
    }

    /// Every output pixel starts at `init`, combines the window's cells inside the input with
    /// `combine`, and is finished by `finish(pixel, cells counted)`. Items of the batch follow
    /// each other in `x` and `out`.
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        x: &[f32],
        [h, w, c]: [usize; 3],
        out: &mut [f32],
        [oh, ow, _]: [usize; 3],
        init: f32,
        combine: impl Fn(f32, f32) -> f32 + Sync,
        finish: impl Fn(&mut [f32], usize) + Sync,
    ) {
        let ([kh, kw], [sh, sw], [top, left]) = (self.size, self.strides, self.pad);
        out.par_chunks_mut(ow * c).enumerate().for_each(|(row, o)| {
            let (n, oy) = (row / oh, row % oh);
            let xin = &x[n * h * w * c..(n + 1) * h * w * c];
            for ox in 0..ow {
                let dst = &mut o[ox * c..(ox + 1) * c];
                dst.fill(init);
                let mut cells = 0;
                for ky in 0..kh {
                    let iy = (oy * sh + ky) as isize - top as isize;
                    if iy < 0 || iy as usize >= h {
                        continue;
                    }
                    for kx in 0..kw {
                        let ix = (ox * sw + kx) as isize - left as isize;
                        if ix < 0 || ix as usize >= w {
                            continue;
                        }
                        let src = &xin[(iy as usize * w + ix as usize) * c..][..c];
                        dst.iter_mut()
                            .zip(src)
                            .for_each(|(d, s)| *d = combine(*d, *s));
                        cells += 1;
                    }
                }
                finish(dst, cells);
            }
        });
    }
}

/// An image resized from `[h, w]` to `[oh, ow]` (UpSampling2D, Resizing, tf.image.resize).
pub fn resize(
    op: ImageResize,
    x: &[f32],
    [h, w, c]: [usize; 3],
    out: &mut [f32],
    [oh, ow, _]: [usize; 3],
) {
    if h == 0 || w == 0 || oh == 0 || ow == 0 {
        return;
    }
    let rows = ResizeAxis::new(h, oh, op.align_corners);
    let cols = ResizeAxis::new(w, ow, op.align_corners);
    out.par_chunks_mut(ow * c).enumerate().for_each(|(row, o)| {
        let (n, oy) = (row / oh, row % oh);
        let xin = &x[n * h * w * c..(n + 1) * h * w * c];
        match op.interpolation {
            Interpolation::Nearest => {
                let iy = rows.nearest(oy);
                for ox in 0..ow {
                    let src = (iy * w + cols.nearest(ox)) * c;
                    o[ox * c..(ox + 1) * c].copy_from_slice(&xin[src..src + c]);
                }
            }
            Interpolation::Bilinear => {
                let (y_lo, y_hi, dy) = rows.linear(oy);
                for ox in 0..ow {
                    let (x_lo, x_hi, dx) = cols.linear(ox);
                    for ch in 0..c {
                        let at = |yy: usize, xx: usize| xin[(yy * w + xx) * c + ch];
                        let top = at(y_lo, x_lo) + (at(y_lo, x_hi) - at(y_lo, x_lo)) * dx;
                        let bottom = at(y_hi, x_lo) + (at(y_hi, x_hi) - at(y_hi, x_lo)) * dx;
                        o[ox * c + ch] = top + (bottom - top) * dy;
                    }
                }
            }
        }
    });
}

/// How one axis of a resize from `n` to `out` positions reads its input, as TensorFlow's
/// resize kernels compute it: the scale `n / out` in f32 (`(n - 1) / (out - 1)` with aligned
/// corners, as PyTorch's), then per output position `o` the nearest input
/// `floor((o + 0.5) * scale)` (half-pixel centres) or the two inputs around
/// `(o + 0.5) * scale - 0.5` (`o * scale` with aligned corners) and the fraction between.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ResizeAxis {
    n: usize,
    scale: f32,
    align_corners: bool,
}

impl ResizeAxis {
    pub(crate) fn new(n: usize, out: usize, align_corners: bool) -> ResizeAxis {
        let scale = match (align_corners, out) {
            (true, 2..) => (n.max(1) - 1) as f32 / (out - 1) as f32,
            (true, _) => 0.0,
            (false, _) => n as f32 / out.max(1) as f32,
        };
        ResizeAxis {
            n: n.max(1),
            scale,
            align_corners,
        }
    }

    pub(crate) fn nearest(&self, o: usize) -> usize {
        (((o as f32 + 0.5) * self.scale).floor() as usize).min(self.n - 1)
    }

    /// `(low, high, fraction towards high)`, both clamped to the axis.
    pub(crate) fn linear(&self, o: usize) -> (usize, usize, f32) {
        let src = if self.align_corners {
            o as f32 * self.scale
        } else {
            (o as f32 + 0.5) * self.scale - 0.5
        };
        let floor = src.floor();
        let lo = (floor.max(0.0) as usize).min(self.n - 1);
        let hi = (src.ceil().max(0.0) as usize).min(self.n - 1);
        (lo, hi, src - floor)
    }
}

pub fn crop(
    op: &Cropping2D,
    x: &[f32],
    [h, w, c]: [usize; 3],
    out: &mut [f32],
    [oh, ow, _]: [usize; 3],
) {
    let [t, _, l, _] = op.cropping.map(|v| v as usize);
    out.par_chunks_mut(ow * c).enumerate().for_each(|(row, o)| {
        let (n, oy) = (row / oh, row % oh);
        let src = ((n * h + oy + t) * w + l) * c;
        o.copy_from_slice(&x[src..src + ow * c]);
    });
}

/// Channels `channels` of every pixel of `x` (`c` channels a pixel): classification_models'
/// `slice_tensor` (a Lambda).
pub fn slice_channels(x: &[f32], c: usize, channels: std::ops::Range<usize>, out: &mut [f32]) {
    let k = channels.len();
    if k == 0 || c == 0 {
        return;
    }
    out.par_chunks_mut(k)
        .zip(x.par_chunks(c))
        .with_min_len(1024)
        .for_each(|(o, pixel)| o.copy_from_slice(&pixel[channels.clone()]));
}

/// `x[:, rows, cols, channels]` of each item of `x` (`[h, w, c]` per item), in order; each axis
/// read at its positions (`::2` every other one, `::-1` backwards).
pub fn slice_window(
    x: &[f32],
    [h, w, c]: [usize; 3],
    [rows, cols, channels]: [AxisRead; 3],
    out: &mut [f32],
) {
    let per_item = h * w * c;
    let k = channels.len;
    let per_out = rows.len * cols.len * k;
    if per_item == 0 || per_out == 0 {
        return;
    }
    for (item, o) in x.chunks(per_item).zip(out.chunks_mut(per_out)) {
        let mut pixels = o.chunks_mut(k);
        for y in rows.positions() {
            for (px, to) in cols.positions().zip(pixels.by_ref()) {
                let pixel = &item[(y * w + px) * c..][..c];
                match channels.range() {
                    Some(range) => to.copy_from_slice(&pixel[range]),
                    None => {
                        for (v, ch) in to.iter_mut().zip(channels.positions()) {
                            *v = pixel[ch];
                        }
                    }
                }
            }
        }
    }
}

/// `K.repeat_elements` on the channels: each of a pixel's `c` channels `repeats` times in a row.
pub fn repeat_channels(x: &[f32], c: usize, repeats: usize, out: &mut [f32]) {
    if c == 0 || repeats == 0 {
        return;
    }
    out.par_chunks_mut(c * repeats)
        .zip(x.par_chunks(c))
        .with_min_len(1024)
        .for_each(|(o, pixel)| {
            for (group, &v) in o.chunks_mut(repeats).zip(pixel) {
                group.fill(v);
            }
        });
}

pub fn zero_pad(
    op: &ZeroPadding2D,
    x: &[f32],
    [h, w, c]: [usize; 3],
    out: &mut [f32],
    [oh, ow, _]: [usize; 3],
) {
    let [t, _, l, _] = op.padding.map(|v| v as usize);
    out.par_chunks_mut(ow * c).enumerate().for_each(|(row, o)| {
        let (n, oy) = (row / oh, row % oh);
        o.fill(0.0);
        let Some(sy) = op.mode.source(oy as i64 - t as i64, h) else {
            return;
        };
        let src = ((n * h + sy) * w) * c;
        o[l * c..(l + w) * c].copy_from_slice(&x[src..src + w * c]);
        // Reflect / replicate: the columns outside the input, from its row.
        for ox in (0..l).chain(l + w..ow) {
            if let Some(sx) = op.mode.source(ox as i64 - l as i64, w) {
                o.copy_within(((l + sx) * c)..((l + sx + 1) * c), ox * c);
            }
        }
    });
}

/// Concatenation along `axis` (Keras numbering); `shapes` are per item.
pub fn concatenate(
    op: &Concatenate,
    inputs: &[&[f32]],
    shapes: &[Vec<usize>],
    out: &mut [f32],
    batch: usize,
) {
    let rank = shapes[0].len() as i64 + 1;
    let axis = if op.axis < 0 { rank + op.axis } else { op.axis } as usize - 1;
    let outer: usize = batch * shapes[0][..axis].iter().product::<usize>();
    let chunks: Vec<usize> = shapes.iter().map(|s| s[axis..].iter().product()).collect();
    let total: usize = chunks.iter().sum();
    out.par_chunks_mut(total)
        .take(outer)
        .enumerate()
        .for_each(|(o, dst)| {
            let mut at = 0;
            for (input, &len) in inputs.iter().zip(&chunks) {
                dst[at..at + len].copy_from_slice(&input[o * len..(o + 1) * len]);
                at += len;
            }
        });
}

pub fn add(inputs: &[&[f32]], out: &mut [f32]) {
    out.copy_from_slice(inputs[0]);
    for input in &inputs[1..] {
        out.par_iter_mut()
            .zip(input.par_iter())
            .for_each(|(o, v)| *o += v);
    }
}

/// Keras's elementwise merges with broadcasting: `shapes` are the inputs' shapes per item,
/// `out_shape` the output's (Keras's rule: axes aligned at the end, 1 broadcasts), the items of
/// the batch back to back. Inputs combine left to right, as Keras does (`Average` sums, then
/// divides by the count).
pub fn merge(
    function: MergeFn,
    inputs: &[&[f32]],
    shapes: &[Vec<usize>],
    out: &mut [f32],
    out_shape: &[usize],
    batch: usize,
) {
    let combine = |a: f32, b: f32| match function {
        MergeFn::Add | MergeFn::Average => a + b,
        MergeFn::Multiply => a * b,
        MergeFn::Subtract => a - b,
        MergeFn::Maximum => a.max(b),
        MergeFn::Minimum => a.min(b),
        MergeFn::Divide => a / b,
    };
    let item: usize = out_shape.iter().product();
    let rank = out_shape.len();
    // Per input, the stride of each output axis into it (0 where it broadcasts).
    let strides: Vec<Vec<usize>> = shapes
        .iter()
        .map(|shape| {
            let mut strides = vec![0; rank];
            let mut stride = 1;
            for (k, &d) in shape.iter().enumerate().rev() {
                let axis = rank - shape.len() + k;
                if d != 1 {
                    strides[axis] = stride;
                }
                stride *= d;
            }
            strides
        })
        .collect();
    let lens: Vec<usize> = shapes.iter().map(|s| s.iter().product()).collect();
    let same = shapes.iter().all(|s| s.as_slice() == out_shape);
    out.par_chunks_mut(item.max(1))
        .enumerate()
        .take(batch)
        .for_each(|(n, o)| {
            if same {
                o.copy_from_slice(&inputs[0][n * item..][..item]);
                for input in &inputs[1..] {
                    let src = &input[n * item..][..item];
                    o.iter_mut()
                        .zip(src)
                        .for_each(|(a, &b)| *a = combine(*a, b));
                }
            } else {
                let mut index = vec![0usize; rank];
                for value in o.iter_mut() {
                    let at = |i: usize| {
                        let offset: usize = index.iter().zip(&strides[i]).map(|(x, s)| x * s).sum();
                        inputs[i][n * lens[i] + offset]
                    };
                    let mut acc = at(0);
                    for i in 1..inputs.len() {
                        acc = combine(acc, at(i));
                    }
                    *value = acc;
                    // The next output index, last axis fastest.
                    for k in (0..rank).rev() {
                        index[k] += 1;
                        if index[k] < out_shape[k] {
                            break;
                        }
                        index[k] = 0;
                    }
                }
            }
            if function == MergeFn::Average {
                let count = inputs.len() as f32;
                o.iter_mut().for_each(|v| *v /= count);
            }
        });
}

/// `f(x, c)` (or `f(c, x)`) of a tensor and a constant tensor, item by item: the constant has
/// no batch axis, so each item of `x` meets the same values.
pub fn merge_with_constant(
    m: TensorMergeOp,
    x: &[f32],
    x_shape: &[usize],
    constant: &TensorOperand,
    out: &mut [f32],
    out_shape: &[usize],
    batch: usize,
) {
    let item: Vec<usize> = constant
        .item_shape(x_shape.len())
        .iter()
        .map(|&d| d as usize)
        .collect();
    let (x_len, out_len) = (
        x_shape.iter().product::<usize>(),
        out_shape.iter().product(),
    );
    let shapes = if m.constant_first {
        [item, x_shape.to_vec()]
    } else {
        [x_shape.to_vec(), item]
    };
    for n in 0..batch {
        let x = &x[n * x_len..][..x_len];
        let inputs = if m.constant_first {
            [&constant.values[..], x]
        } else {
            [x, &constant.values[..]]
        };
        let o = &mut out[n * out_len..][..out_len];
        merge(m.function, &inputs, &shapes, o, out_shape, 1);
    }
}

/// LeakyReLU: `x` if `x >= 0`, else `alpha * x`.
pub fn leaky_relu(alpha: f32, x: &[f32], out: &mut [f32]) {
    out.par_iter_mut()
        .zip(x.par_iter())
        .for_each(|(o, &v)| *o = if v >= 0.0 { v } else { alpha * v });
}

/// The ELU layer: `x` if `x > 0`, else `alpha * (exp(x) - 1)`.
pub fn elu(alpha: f32, x: &[f32], out: &mut [f32]) {
    out.par_iter_mut()
        .zip(x.par_iter())
        .for_each(|(o, &v)| *o = if v > 0.0 { v } else { alpha * v.exp_m1() });
}

/// PReLU: `x` if `x >= 0`, else `alpha * x`, with `alpha` of `alpha_shape` broadcast over each
/// item of `shape` (its shared axes are 1).
pub fn prelu(alpha: &[f32], alpha_shape: &[usize], x: &[f32], shape: &[usize], out: &mut [f32]) {
    let item: usize = shape.iter().product();
    // Stride of each axis into alpha (0 where shared).
    let mut strides = vec![0; shape.len()];
    let mut stride = 1;
    for k in (0..shape.len()).rev() {
        if alpha_shape.get(k).copied().unwrap_or(1) != 1 {
            strides[k] = stride;
        }
        stride *= alpha_shape.get(k).copied().unwrap_or(1);
    }
    out.par_chunks_mut(item.max(1))
        .zip(x.par_chunks(item.max(1)))
        .for_each(|(o, xs)| {
            for (i, (o, &v)) in o.iter_mut().zip(xs).enumerate() {
                let mut rest = i;
                let mut a = 0;
                for k in (0..shape.len()).rev() {
                    a += (rest % shape[k]) * strides[k];
                    rest /= shape[k];
                }
                *o = if v >= 0.0 { v } else { alpha[a] * v };
            }
        });
}

pub fn global_max_pool(x: &[f32], [h, w, c]: [usize; 3], out: &mut [f32], batch: usize) {
    for n in 0..batch {
        let dst = &mut out[n * c..(n + 1) * c];
        dst.fill(f32::NEG_INFINITY);
        for p in 0..h * w {
            let src = &x[(n * h * w + p) * c..][..c];
            dst.iter_mut().zip(src).for_each(|(d, s)| *d = d.max(*s));
        }
    }
}

pub fn global_average_pool(x: &[f32], [h, w, c]: [usize; 3], out: &mut [f32], batch: usize) {
    for n in 0..batch {
        let dst = &mut out[n * c..(n + 1) * c];
        dst.fill(0.0);
        for p in 0..h * w {
            let src = &x[(n * h * w + p) * c..][..c];
            dst.iter_mut().zip(src).for_each(|(d, s)| *d += s);
        }
        let scale = 1.0 / (h * w) as f32;
        dst.iter_mut().for_each(|d| *d *= scale);
    }
}

/// GroupNormalization and LayerNormalization: per statistic group of `layout` (items back to
/// back in `x`), the mean and then the mean of squared differences, in f32 as `tf.nn.moments`
/// computes them; then TF's `batch_normalization`: `x * inv + (beta - mean * inv)` with
/// `inv = gamma / sqrt(var + epsilon)`.
pub fn normalize(layout: NormLayout, gamma: &[f32], beta: &[f32], x: &[f32], out: &mut [f32]) {
    let NormLayout {
        span,
        groups,
        group_size,
        affine_per_position,
        epsilon,
        ..
    } = layout;
    let chunk = span * groups * group_size;
    let count = (span * group_size) as f32;
    if span == 1 && groups == 1 {
        // One group of contiguous values per chunk (LayerNormalization over tokens' features):
        // the same sums in the same order, without the general indexing.
        let rows = (1usize << 14).div_ceil(chunk.max(1));
        out.par_chunks_mut(chunk.max(1) * rows)
            .zip(x.par_chunks(chunk.max(1) * rows))
            .for_each(|(o, xs)| {
                for (o, xs) in o
                    .chunks_exact_mut(chunk.max(1))
                    .zip(xs.chunks_exact(chunk.max(1)))
                {
                    let mean = xs.iter().sum::<f32>() / count;
                    let var = xs.iter().map(|&v| (v - mean) * (v - mean)).sum::<f32>() / count;
                    let inv = 1.0 / (var + epsilon).sqrt();
                    for (((o, &v), &g), &b) in o.iter_mut().zip(xs).zip(gamma).zip(beta) {
                        let scale = inv * g;
                        *o = v * scale + (b - mean * scale);
                    }
                }
            });
        return;
    }
    // Offset of value (position, group, j) in a chunk, and of its gamma/beta.
    let at = |p: usize, g: usize, j: usize| (p * groups + g) * group_size + j;
    let affine_at = |p: usize, g: usize, j: usize| {
        let p = if affine_per_position { p } else { 0 };
        at(p, g, j)
    };
    out.par_chunks_mut(chunk.max(1))
        .zip(x.par_chunks(chunk.max(1)))
        .for_each(|(o, xs)| {
            for g in 0..groups {
                let values = || (0..span).flat_map(move |p| (0..group_size).map(move |j| (p, j)));
                let mean = values().map(|(p, j)| xs[at(p, g, j)]).sum::<f32>() / count;
                let var = values()
                    .map(|(p, j)| {
                        let d = xs[at(p, g, j)] - mean;
                        d * d
                    })
                    .sum::<f32>()
                    / count;
                let inv = 1.0 / (var + epsilon).sqrt();
                for (p, j) in values() {
                    let scale = inv * gamma[affine_at(p, g, j)];
                    o[at(p, g, j)] =
                        xs[at(p, g, j)] * scale + (beta[affine_at(p, g, j)] - mean * scale);
                }
            }
        });
}

/// Permute: output axis k takes input axis `source[k]` (axes without the batch, dense, row-major;
/// fewer than three axes are padded with leading ones).
pub fn permute(x: &[f32], in_shape: &[usize], source: &[usize], out: &mut [f32], batch: usize) {
    let rank = in_shape.len();
    // Input strides (in values) of each input axis, then the stride each output axis walks.
    let mut in_strides = vec![1usize; rank];
    for a in (0..rank.saturating_sub(1)).rev() {
        in_strides[a] = in_strides[a + 1] * in_shape[a + 1];
    }
    let pad = 3 - rank.min(3);
    let mut dims = [1usize; 3];
    let mut strides = [0usize; 3];
    for (k, &a) in source.iter().enumerate().take(3) {
        dims[pad + k] = in_shape[a];
        strides[pad + k] = in_strides[a];
    }
    let per_image: usize = in_shape.iter().product();
    for n in 0..batch {
        let src = &x[n * per_image..][..per_image];
        let mut dst = out[n * per_image..][..per_image].iter_mut();
        for i in 0..dims[0] {
            for j in 0..dims[1] {
                let row = i * strides[0] + j * strides[1];
                for k in 0..dims[2] {
                    if let Some(d) = dst.next() {
                        *d = src[row + k * strides[2]];
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `step`-th float32 in `range` (by bit pattern, both signs).
    fn sweep(range: std::ops::RangeInclusive<f32>, step: u32) -> impl Iterator<Item = f32> {
        (0..=0x7f80_0000u32)
            .step_by(step as usize)
            .flat_map(|b| [f32::from_bits(b), -f32::from_bits(b)])
            .filter(move |x| range.contains(x))
    }

    /// The largest error in units of the float32 spacing at the true value.
    fn max_ulp(f: fn(f32) -> f32, exact: fn(f64) -> f64, xs: impl Iterator<Item = f32>) -> f64 {
        xs.map(|x| {
            let want = exact(x as f64);
            let spacing = (want.abs() as f32).max(f32::MIN_POSITIVE);
            let ulp = (f32::from_bits(spacing.to_bits() + 1) - spacing) as f64;
            (f(x) as f64 - want).abs() / ulp
        })
        .fold(0.0, f64::max)
    }

    #[test]
    fn exp_is_within_two_ulp_and_saturates_as_float32_does() {
        let ulp = max_ulp(exp, f64::exp, sweep(-103.0..=88.7, 97));
        assert!(ulp <= 2.0, "exp: {ulp} ulp");
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-104.0), 0.0);
        assert_eq!(exp(-1000.0), 0.0);
        assert_eq!(exp(89.0), f32::INFINITY);
        assert!(exp(-100.0) > 0.0 && (exp(-100.0) as f64 / (-100f64).exp() - 1.0).abs() < 0.1);
        assert!(exp(f32::NAN).is_nan());
    }

    #[test]
    fn sigmoid_tanh_and_erf_are_within_their_stated_errors() {
        let sig = max_ulp(
            sigmoid,
            |x| 1.0 / (1.0 + (-x).exp()),
            sweep(-80.0..=80.0, 97),
        );
        assert!(sig <= 3.0, "sigmoid: {sig} ulp");
        assert_eq!(sigmoid(200.0), 1.0);
        assert_eq!(sigmoid(-200.0), 0.0);
        let xs = || sweep(-12.0..=12.0, 97);
        let abs = |f: fn(f32) -> f32, exact: fn(f64) -> f64| {
            xs().map(|x| (f(x) as f64 - exact(x as f64)).abs())
                .fold(0.0, f64::max)
        };
        let rel = |f: fn(f32) -> f32, exact: fn(f64) -> f64| {
            xs().filter(|&x| x != 0.0)
                .map(|x| (f(x) as f64 / exact(x as f64) - 1.0).abs())
                .fold(0.0, f64::max)
        };
        // tanh: 3.2e-7 (tools/fits/tanh_fit.py), never beyond ±1.
        let (ta, tr) = (abs(tanh, f64::tanh), rel(tanh, f64::tanh));
        assert!(
            ta <= 3.3e-7 && tr <= 3.3e-7,
            "tanh: {ta} absolute, {tr} relative"
        );
        assert!(xs().all(|x| tanh(x).abs() <= 1.0));
        // erf: 4.2e-7 absolute (its doc comment).
        let erf64 = |x: f64| libm_erf(x);
        assert!(abs(erf, erf64) <= 4.2e-7, "erf: {}", abs(erf, erf64));
    }

    /// erf in float64 by its Maclaurin series (|x| < 3) and the continued fraction of erfc
    /// (beyond): a reference independent of the float32 fit.
    fn libm_erf(x: f64) -> f64 {
        let a = x.abs();
        let v = if a < 3.0 {
            let (mut term, mut sum, mut k) = (a, a, 0.0);
            while term.abs() > 1e-17 * sum.abs() {
                k += 1.0;
                term *= -a * a / k;
                sum += term / (2.0 * k + 1.0);
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            // erfc(a) = e^{-a^2} / sqrt(pi) * 1 / (a + 1/2 / (a + 1 / (a + 3/2 / (a + ...))))
            let mut f = a;
            for k in (1..60).rev() {
                f = a + (k as f64 / 2.0) / f;
            }
            1.0 - (-a * a).exp() / std::f64::consts::PI.sqrt() / f
        };
        v.copysign(x)
    }

    #[test]
    fn small_k_product_is_the_same_sum_on_every_isa() {
        // f = 37: two 16-wide blocks and a tail of 5; k = 9 (a 3x3 kernel on one channel).
        let (m, k, f) = (5, 9, 37);
        let value = |i: usize| ((i * 7919) % 113) as f32 / 56.5 - 1.0;
        let col: Vec<f32> = (0..m * k).map(value).collect();
        let kernel: Vec<f32> = (0..k * f).map(|i| value(i + 1000)).collect();
        let want: Vec<f32> = (0..m * f)
            .map(|i| {
                let (r, o) = (i / f, i % f);
                (0..k)
                    .map(|t| col[r * k + t] as f64 * kernel[t * f + o] as f64)
                    .sum::<f64>() as f32
            })
            .collect();
        for isa in [Isa::Portable, Isa::detect()] {
            let mut y = vec![f32::NAN; m * f];
            small_k_product(f, k, &col, &kernel, &mut y, isa);
            for (i, (a, b)) in y.iter().zip(&want).enumerate() {
                assert!((a - b).abs() <= 1e-6, "{isa:?}: y[{i}] = {a}, want {b}");
            }
        }
    }
}
