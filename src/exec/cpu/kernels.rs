//! The reference math of every layer kind, f32, NHWC. Each function takes the whole batch.
//! Shapes are per batch item (without the batch dimension).

// Kernels take data, shapes and weights as plain arguments: easier to read at the call site
// than a bag struct.
#![allow(clippy::too_many_arguments)]

use super::gemm::matmul;
use crate::ir::ops::{
    Activation, BatchNormalization, Concatenate, Conv2D, Conv2DTranspose, Cropping2D, MaxPooling2D,
    ReLU, Softmax, UpSampling2D, ZeroPadding2D,
};
use rayon::prelude::*;

/// im2col tiles are kept under this many floats (64 MiB).
const TILE_FLOATS: usize = 1 << 21;

pub fn conv2d(
    op: &Conv2D,
    x: &[f32],
    [h, w, c]: [usize; 3],
    kernel: &[f32],
    bias: Option<&[f32]>,
    activation: &str,
    out: &mut [f32],
    [oh, ow, f]: [usize; 3],
    batch: usize,
) {
    let a = &op.args;
    let (kh, kw) = (a.kernel_size[0] as usize, a.kernel_size[1] as usize);
    let (sh, sw) = (a.strides[0] as usize, a.strides[1] as usize);
    let (dh, dw) = (a.dilation_rate[0] as usize, a.dilation_rate[1] as usize);
    let (top, left) = (a.pad_before(0, h, oh), a.pad_before(1, w, ow));
    let k_len = kh * kw * c;
    let pointwise = kh == 1 && kw == 1 && sh == 1 && sw == 1 && top == 0 && left == 0;
    for n in 0..batch {
        let xin = &x[n * h * w * c..(n + 1) * h * w * c];
        let yout = &mut out[n * oh * ow * f..(n + 1) * oh * ow * f];
        if pointwise {
            // A 1x1 convolution is one matrix product over all pixels.
            matmul(oh * ow, f, c, xin, kernel, yout, false);
        } else {
            let rows_per_tile = (TILE_FLOATS / (ow * k_len).max(1)).clamp(1, oh);
            let mut col = vec![0.0f32; rows_per_tile * ow * k_len];
            for r0 in (0..oh).step_by(rows_per_tile) {
                let r1 = (r0 + rows_per_tile).min(oh);
                let m = (r1 - r0) * ow;
                col[..m * k_len]
                    .par_chunks_mut(k_len)
                    .enumerate()
                    .for_each(|(p, patch)| {
                        let (oy, ox) = (r0 + p / ow, p % ow);
                        for ky in 0..kh {
                            let iy = (oy * sh + ky * dh) as isize - top as isize;
                            for kx in 0..kw {
                                let ix = (ox * sw + kx * dw) as isize - left as isize;
                                let dst = &mut patch[(ky * kw + kx) * c..(ky * kw + kx + 1) * c];
                                if iy >= 0 && (iy as usize) < h && ix >= 0 && (ix as usize) < w {
                                    let src = (iy as usize * w + ix as usize) * c;
                                    dst.copy_from_slice(&xin[src..src + c]);
                                } else {
                                    dst.fill(0.0);
                                }
                            }
                        }
                    });
                matmul(
                    m,
                    f,
                    k_len,
                    &col[..m * k_len],
                    kernel,
                    &mut yout[r0 * ow * f..r1 * ow * f],
                    false,
                );
            }
        }
        bias_activation(yout, f, bias, activation);
    }
}

/// `wt` is the kernel rearranged to `[in, kh * kw * out]` (see [`transpose_kernel`]).
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
    let a = &op.args;
    let (kh, kw) = (a.kernel_size[0] as usize, a.kernel_size[1] as usize);
    let (sh, sw) = (a.strides[0] as usize, a.strides[1] as usize);
    let (fh, fw) = ((h - 1) * sh + kh, (w - 1) * sw + kw);
    let (y0, x0) = (op.crop_before(0, h, oh), op.crop_before(1, w, ow));
    let cols = kh * kw * f;
    let mut y = vec![0.0f32; h * w * cols];
    let mut full = vec![0.0f32; fh * fw * f];
    for n in 0..batch {
        let xin = &x[n * h * w * c..(n + 1) * h * w * c];
        matmul(h * w, cols, c, xin, wt, &mut y, false);
        full.fill(0.0);
        // Scatter each input pixel's kh x kw x f block into the full result. Output rows are
        // gathered per row in parallel: row fy takes input rows i with fy = i * sh + ka.
        full.par_chunks_mut(fw * f)
            .enumerate()
            .for_each(|(fy, dst_row)| {
                for ka in 0..kh {
                    if fy < ka || (fy - ka) % sh != 0 || (fy - ka) / sh >= h {
                        continue;
                    }
                    let i = (fy - ka) / sh;
                    for j in 0..w {
                        let row = &y[(i * w + j) * cols..(i * w + j + 1) * cols];
                        for kb in 0..kw {
                            let dst = &mut dst_row[(j * sw + kb) * f..(j * sw + kb + 1) * f];
                            let src = &row[(ka * kw + kb) * f..(ka * kw + kb + 1) * f];
                            dst.iter_mut().zip(src).for_each(|(d, v)| *d += v);
                        }
                    }
                }
            });
        let yout = &mut out[n * oh * ow * f..(n + 1) * oh * ow * f];
        for oy in 0..oh {
            for ox in 0..ow {
                let (fy, fx) = (oy + y0, ox + x0);
                let dst = &mut yout[(oy * ow + ox) * f..(oy * ow + ox + 1) * f];
                if fy < fh && fx < fw {
                    dst.copy_from_slice(&full[(fy * fw + fx) * f..(fy * fw + fx + 1) * f]);
                } else {
                    dst.fill(0.0);
                }
            }
        }
        bias_activation(yout, f, bias, &a.activation);
    }
}

/// Keras stores a transposed-conv kernel as `[kh, kw, out, in]`; the GEMM wants `[in, kh*kw*out]`.
pub fn transpose_kernel(kernel: &[f32], [kh, kw, f, c]: [usize; 4]) -> Vec<f32> {
    let mut wt = vec![0.0f32; kernel.len()];
    for a in 0..kh {
        for b in 0..kw {
            for o in 0..f {
                for ci in 0..c {
                    wt[ci * kh * kw * f + (a * kw + b) * f + o] =
                        kernel[((a * kw + b) * f + o) * c + ci];
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
    activation: &str,
    out: &mut [f32],
    units: usize,
    rows: usize,
) {
    matmul(rows, units, n_in, x, kernel, out, false);
    bias_activation(out, units, bias, activation);
}

pub fn bias_activation(y: &mut [f32], channels: usize, bias: Option<&[f32]>, activation: &str) {
    if let Some(b) = bias {
        y.par_chunks_mut(channels)
            .for_each(|px| px.iter_mut().zip(b).for_each(|(v, bb)| *v += bb));
    }
    activate(y, channels, activation);
}

/// Applies a Keras activation; `softmax` works over the last axis (`channels` values).
pub fn activate(y: &mut [f32], channels: usize, activation: &str) {
    match activation {
        "linear" => {}
        "softmax" => y.par_chunks_mut(channels.max(1)).for_each(softmax_in_place),
        other => {
            let f = elementwise(other);
            y.par_chunks_mut(1 << 14)
                .for_each(|chunk| chunk.iter_mut().for_each(|v| *v = f(*v)));
        }
    }
}

fn elementwise(name: &str) -> fn(f32) -> f32 {
    fn sigmoid(x: f32) -> f32 {
        1.0 / (1.0 + (-x).exp())
    }
    fn softplus(x: f32) -> f32 {
        // log(1 + e^x) without overflow.
        if x > 20.0 {
            x
        } else {
            x.exp().ln_1p()
        }
    }
    match name {
        "relu" => |x| x.max(0.0),
        "sigmoid" => sigmoid,
        "tanh" => f32::tanh,
        "elu" => |x| if x > 0.0 { x } else { x.exp_m1() },
        "selu" => |x| {
            const ALPHA: f32 = 1.673_263_2;
            const SCALE: f32 = 1.050_701;
            SCALE * if x > 0.0 { x } else { ALPHA * x.exp_m1() }
        },
        "softplus" => softplus,
        "softsign" => |x| x / (1.0 + x.abs()),
        "swish" | "silu" => |x| x * sigmoid(x),
        "gelu" => |x| 0.5 * x * (1.0 + libm::erff(x / std::f32::consts::SQRT_2)),
        "exponential" => f32::exp,
        "hard_sigmoid" => |x| (0.2 * x + 0.5).clamp(0.0, 1.0),
        "relu6" => |x| x.clamp(0.0, 6.0),
        "mish" => |x| x * softplus(x).tanh(),
        "leaky_relu" => |x| if x >= 0.0 { x } else { 0.2 * x },
        _ => |x| x,
    }
}

fn softmax_in_place(v: &mut [f32]) {
    let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f32;
    for x in v.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
    for x in v.iter_mut() {
        *x /= sum;
    }
}

pub fn activation_layer(op: &Activation, x: &[f32], out: &mut [f32], channels: usize) {
    out.copy_from_slice(x);
    activate(out, channels, &op.activation);
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

pub fn max_pool(
    op: &MaxPooling2D,
    x: &[f32],
    [h, w, c]: [usize; 3],
    out: &mut [f32],
    [oh, ow, _]: [usize; 3],
    batch: usize,
) {
    let (kh, kw) = (op.pool_size[0] as usize, op.pool_size[1] as usize);
    let (sh, sw) = (op.strides[0] as usize, op.strides[1] as usize);
    let (top, left) = (op.pad_before(0, h, oh), op.pad_before(1, w, ow));
    out.par_chunks_mut(ow * c).enumerate().for_each(|(row, o)| {
        let (n, oy) = (row / oh, row % oh);
        let xin = &x[n * h * w * c..(n + 1) * h * w * c];
        for ox in 0..ow {
            let dst = &mut o[ox * c..(ox + 1) * c];
            dst.fill(f32::NEG_INFINITY);
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
                    dst.iter_mut().zip(src).for_each(|(d, s)| *d = d.max(*s));
                }
            }
        }
    });
    let _ = batch;
}

pub fn upsample(
    op: &UpSampling2D,
    x: &[f32],
    [h, w, c]: [usize; 3],
    out: &mut [f32],
    [oh, ow, _]: [usize; 3],
) {
    let (sh, sw) = (op.size[0] as usize, op.size[1] as usize);
    let bilinear = op.interpolation == "bilinear";
    out.par_chunks_mut(ow * c).enumerate().for_each(|(row, o)| {
        let (n, oy) = (row / oh, row % oh);
        let xin = &x[n * h * w * c..(n + 1) * h * w * c];
        if !bilinear {
            let iy = oy / sh;
            for ox in 0..ow {
                let src = (iy * w + ox / sw) * c;
                o[ox * c..(ox + 1) * c].copy_from_slice(&xin[src..src + c]);
            }
            return;
        }
        // TF's resize_bilinear with half-pixel centres.
        let (y_lo, y_hi, dy) = lerp_coords(oy, sh, h);
        for ox in 0..ow {
            let (x_lo, x_hi, dx) = lerp_coords(ox, sw, w);
            for ch in 0..c {
                let at = |yy: usize, xx: usize| xin[(yy * w + xx) * c + ch];
                let top = at(y_lo, x_lo) + (at(y_lo, x_hi) - at(y_lo, x_lo)) * dx;
                let bottom = at(y_hi, x_lo) + (at(y_hi, x_hi) - at(y_hi, x_lo)) * dx;
                o[ox * c + ch] = top + (bottom - top) * dy;
            }
        }
    });
}

fn lerp_coords(out_index: usize, scale: usize, n: usize) -> (usize, usize, f32) {
    let src = (out_index as f32 + 0.5) / scale as f32 - 0.5;
    let floor = src.floor();
    let lo = floor.max(0.0) as usize;
    let hi = (src.ceil().max(0.0) as usize).min(n - 1);
    (lo.min(n - 1), hi, src - floor)
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
        if oy >= t && oy - t < h {
            let src = ((n * h + oy - t) * w) * c;
            o[l * c..(l + w) * c].copy_from_slice(&x[src..src + w * c]);
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
