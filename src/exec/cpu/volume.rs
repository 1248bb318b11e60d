//! CPU kernels of the 3-D kinds, on dense NDHWC items back to back: a convolution is, per
//! output depth slice, one im2col product; the rest are direct loops over the voxels.

use super::gemm::{matmul, matmul_serial};
use super::kernels::{bias_activation, ResizeAxis};
use crate::ir::ops::{
    AveragePooling3D, Conv3D, Conv3DTranspose, Cropping3D, MaxPooling3D, UpSampling3D,
    VolumeInterpolation, WindowGeometry, ZeroPadding3D,
};
use rayon::prelude::*;

/// `[d, h, w, c]` of a volume shape per item.
pub fn dhwc(s: &[usize]) -> [usize; 4] {
    match s {
        [d, h, w, c] => [*d, *h, *w, *c],
        _ => [0; 4],
    }
}

/// Floats of one task's im2col tile (1 MiB, as the 2-D convolution's): tiles of output voxels
/// whose patches fit, at least one voxel (a patch is no larger than the kernel's weights).
const TILE_FLOATS: usize = 1 << 18;

/// Conv3D: kernel `[kd, kh, kw, c, f]` (a `[kd*kh*kw*c, f]` matrix), bias `[f]`; im2col + GEMM
/// on tiles of output voxels, each task with its own bounded column buffer.
#[allow(clippy::too_many_arguments)]
pub fn conv3d(
    op: &Conv3D,
    x: &[f32],
    [d, h, w, c]: [usize; 4],
    kernel: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    [od, oh, ow, f]: [usize; 4],
) {
    let g = [
        op.geometry(0, d, od),
        op.geometry(1, h, oh),
        op.geometry(2, w, ow),
    ];
    let taps = g[0].kernel * g[1].kernel * g[2].kernel * c;
    let item_in = d * h * w * c;
    let voxels = out.len() / f.max(1);
    if voxels == 0 || f == 0 {
        return;
    }
    let tasks = 4 * rayon::current_num_threads();
    let tile = (TILE_FLOATS / taps.max(1))
        .min(voxels.div_ceil(tasks))
        .max(1);
    out.par_chunks_mut(tile * f).enumerate().for_each_init(
        || vec![0.0f32; tile * taps],
        |col, (t, dst)| {
            let m = dst.len() / f;
            let col = &mut col[..m * taps];
            col.fill(0.0);
            for (i, row) in col.chunks_mut(taps.max(1)).enumerate() {
                let q = t * tile + i;
                let (xo, y, z, n) = (q % ow, q / ow % oh, q / (ow * oh) % od, q / (ow * oh * od));
                let xin = &x[n * item_in..(n + 1) * item_in];
                let mut at = 0;
                for a in 0..g[0].kernel {
                    let iz = input_index(&g[0], z, a, d);
                    for b in 0..g[1].kernel {
                        let iy = input_index(&g[1], y, b, h);
                        for e in 0..g[2].kernel {
                            let ix = input_index(&g[2], xo, e, w);
                            if let (Some(iz), Some(iy), Some(ix)) = (iz, iy, ix) {
                                let src = ((iz * h + iy) * w + ix) * c;
                                row[at..at + c].copy_from_slice(&xin[src..src + c]);
                            }
                            at += c;
                        }
                    }
                }
            }
            matmul_serial(m, f, taps, col, kernel, dst, false);
        },
    );
    bias_activation(out, f, bias, op.args.activation);
}

/// The input position that tap `k` of output `o`'s window reads, `None` in the padding.
fn input_index(g: &WindowGeometry, o: usize, k: usize, n: usize) -> Option<usize> {
    let i = (o * g.stride + k * g.dilation).checked_sub(g.pad_before)?;
    (i < n).then_some(i)
}

/// Keras stores a 3-D transposed-conv kernel as `[kd, kh, kw, f, c]` (a `[taps * f, c]`
/// matrix); the product wants it `[c, taps * f]`.
pub fn transpose_kernel3d(kernel: &[f32], c: usize) -> Vec<f32> {
    let rows = kernel.len() / c.max(1);
    let mut wt = vec![0.0f32; kernel.len()];
    for r in 0..rows {
        for ci in 0..c {
            wt[ci * rows + r] = kernel[r * c + ci];
        }
    }
    wt
}

/// Conv3DTranspose: every input voxel's `[taps, f]` block (one product per input depth slice)
/// summed into the full result `(n - 1) * s + k` per axis, of which the output is a window.
#[allow(clippy::too_many_arguments)]
pub fn conv3d_transpose(
    op: &Conv3DTranspose,
    x: &[f32],
    [d, h, w, c]: [usize; 4],
    wt: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    [od, oh, ow, f]: [usize; 4],
    batch: usize,
) {
    let g = [
        op.geometry(0, d, od),
        op.geometry(1, h, oh),
        op.geometry(2, w, ow),
    ];
    let k = [g[0].kernel, g[1].kernel, g[2].kernel];
    let s = [g[0].stride, g[1].stride, g[2].stride];
    let full = [
        (d - 1) * s[0] + k[0],
        (h - 1) * s[1] + k[1],
        (w - 1) * s[2] + k[2],
    ];
    let cols = k[0] * k[1] * k[2] * f;
    // Input pixels per product: their blocks stay within about 4 MiB (at least one pixel, whose
    // block is no larger than the kernel's weights).
    let chunk = ((1usize << 20) / cols.max(1)).clamp(1, (h * w).max(1));
    let mut blocks = vec![0.0f32; chunk * cols];
    let mut result = vec![0.0f32; full[0] * full[1] * full[2] * f];
    for n in 0..batch {
        let xin = &x[n * d * h * w * c..(n + 1) * d * h * w * c];
        result.fill(0.0);
        for i in 0..d {
            let slice = &xin[i * h * w * c..(i + 1) * h * w * c];
            for first in (0..h * w).step_by(chunk) {
                let m = chunk.min(h * w - first);
                let src = &slice[first * c..(first + m) * c];
                let blocks = &mut blocks[..m * cols];
                matmul(m, cols, c, src, wt, blocks, false);
                for (j, block) in blocks.chunks(cols).enumerate() {
                    let pixel = first + j;
                    let (iy, ix) = (pixel / w, pixel % w);
                    for a in 0..k[0] {
                        for b in 0..k[1] {
                            for e in 0..k[2] {
                                let (z, y, xx) = (i * s[0] + a, iy * s[1] + b, ix * s[2] + e);
                                let at = ((z * full[1] + y) * full[2] + xx) * f;
                                let tap = ((a * k[1] + b) * k[2] + e) * f;
                                result[at..at + f]
                                    .iter_mut()
                                    .zip(&block[tap..tap + f])
                                    .for_each(|(r, v)| *r += v);
                            }
                        }
                    }
                }
            }
        }
        let item = &mut out[n * od * oh * ow * f..(n + 1) * od * oh * ow * f];
        for z in 0..od {
            for y in 0..oh {
                for xx in 0..ow {
                    let (fz, fy, fx) = (
                        z + g[0].crop_before,
                        y + g[1].crop_before,
                        xx + g[2].crop_before,
                    );
                    let dst = &mut item[((z * oh + y) * ow + xx) * f..][..f];
                    // Past the full result (output_padding): nothing but the bias.
                    if fz < full[0] && fy < full[1] && fx < full[2] {
                        let at = ((fz * full[1] + fy) * full[2] + fx) * f;
                        dst.copy_from_slice(&result[at..at + f]);
                    } else {
                        dst.fill(0.0);
                    }
                }
            }
        }
    }
    bias_activation(out, f, bias, op.args.activation);
}

/// A 3-D pooling: `combine` over the window's cells inside the input, then `finish` with the
/// number of those cells.
#[allow(clippy::too_many_arguments)]
fn pool3d(
    g: [WindowGeometry; 3],
    x: &[f32],
    [d, h, w, c]: [usize; 4],
    out: &mut [f32],
    [od, oh, ow, _]: [usize; 4],
    start: f32,
    combine: impl Fn(f32, f32) -> f32 + Sync,
    finish: impl Fn(&mut [f32], usize) + Sync,
) {
    let item_in = d * h * w * c;
    out.par_chunks_mut(c.max(1))
        .enumerate()
        .for_each(|(voxel, dst)| {
            let xo = voxel % ow;
            let y = voxel / ow % oh;
            let z = voxel / (ow * oh) % od;
            let n = voxel / (ow * oh * od);
            let xin = &x[n * item_in..(n + 1) * item_in];
            dst.fill(start);
            let mut cells = 0;
            for a in 0..g[0].kernel {
                let Some(iz) = input_index(&g[0], z, a, d) else {
                    continue;
                };
                for b in 0..g[1].kernel {
                    let Some(iy) = input_index(&g[1], y, b, h) else {
                        continue;
                    };
                    for e in 0..g[2].kernel {
                        let Some(ix) = input_index(&g[2], xo, e, w) else {
                            continue;
                        };
                        let src = &xin[((iz * h + iy) * w + ix) * c..][..c];
                        dst.iter_mut()
                            .zip(src)
                            .for_each(|(o, &v)| *o = combine(*o, v));
                        cells += 1;
                    }
                }
            }
            finish(dst, cells);
        });
}

pub fn max_pool3d(
    op: &MaxPooling3D,
    x: &[f32],
    in_shape: [usize; 4],
    out: &mut [f32],
    out_shape: [usize; 4],
) {
    let g = [0, 1, 2].map(|a| op.geometry(a, in_shape[a], out_shape[a]));
    pool3d(
        g,
        x,
        in_shape,
        out,
        out_shape,
        f32::NEG_INFINITY,
        f32::max,
        |_, _| {},
    );
}

/// Keras's AveragePooling3D: under `same`, the mean of the window's cells inside the input.
pub fn average_pool3d(
    op: &AveragePooling3D,
    x: &[f32],
    in_shape: [usize; 4],
    out: &mut [f32],
    out_shape: [usize; 4],
) {
    let g = [0, 1, 2].map(|a| op.geometry(a, in_shape[a], out_shape[a]));
    pool3d(
        g,
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

/// Nearest: each output voxel copies the input voxel it lies in, `in[z / sd, y / sh, x / sw]`.
/// Trilinear: per axis the two input voxels around the output's source coordinate (half-pixel
/// centres, or aligned corners), blended along width, then height, then depth.
pub fn upsample3d(
    op: &UpSampling3D,
    x: &[f32],
    [d, h, w, c]: [usize; 4],
    out: &mut [f32],
    [od, oh, ow, _]: [usize; 4],
) {
    let size = op.size.map(|v| v.max(1) as usize);
    match op.interpolation {
        VolumeInterpolation::Nearest => {
            copy_voxels(x, [d, h, w, c], out, [od, oh, ow], |[z, y, xx]| {
                Some([z / size[0], y / size[1], xx / size[2]])
            });
        }
        VolumeInterpolation::Trilinear => {
            if d == 0 || h == 0 || w == 0 {
                return;
            }
            let item_in = d * h * w * c;
            let axes =
                [(d, od), (h, oh), (w, ow)].map(|(n, o)| ResizeAxis::new(n, o, op.align_corners));
            out.par_chunks_mut(c.max(1))
                .enumerate()
                .for_each(|(voxel, dst)| {
                    let xo = voxel % ow;
                    let y = voxel / ow % oh;
                    let z = voxel / (ow * oh) % od;
                    let n = voxel / (ow * oh * od);
                    let xin = &x[n * item_in..(n + 1) * item_in];
                    let (z0, z1, dz) = axes[0].linear(z);
                    let (y0, y1, dy) = axes[1].linear(y);
                    let (x0, x1, dx) = axes[2].linear(xo);
                    let at = |iz: usize, iy: usize, ix: usize| ((iz * h + iy) * w + ix) * c;
                    let corners = [
                        at(z0, y0, x0),
                        at(z0, y0, x1),
                        at(z0, y1, x0),
                        at(z0, y1, x1),
                        at(z1, y0, x0),
                        at(z1, y0, x1),
                        at(z1, y1, x0),
                        at(z1, y1, x1),
                    ];
                    for (ch, o) in dst.iter_mut().enumerate() {
                        let v = corners.map(|k| xin[k + ch]);
                        let lerp = |a: f32, b: f32, t: f32| a + (b - a) * t;
                        let front = lerp(lerp(v[0], v[1], dx), lerp(v[2], v[3], dx), dy);
                        let back = lerp(lerp(v[4], v[5], dx), lerp(v[6], v[7], dx), dy);
                        *o = lerp(front, back, dz);
                    }
                });
        }
    }
}

pub fn crop3d(
    op: &Cropping3D,
    x: &[f32],
    in_shape: [usize; 4],
    out: &mut [f32],
    [od, oh, ow, _]: [usize; 4],
) {
    let k = op.cropping.map(|v| v.max(0) as usize);
    copy_voxels(x, in_shape, out, [od, oh, ow], |[z, y, xx]| {
        Some([z + k[0], y + k[2], xx + k[4]])
    });
}

/// Zeros outside the input, or (`mode`) the input mirrored or its edge repeated.
pub fn zero_pad3d(
    op: &ZeroPadding3D,
    x: &[f32],
    [d, h, w, c]: [usize; 4],
    out: &mut [f32],
    [od, oh, ow, _]: [usize; 4],
) {
    let p = op.padding;
    copy_voxels(x, [d, h, w, c], out, [od, oh, ow], |[z, y, xx]| {
        Some([
            op.mode.source(z as i64 - p[0], d)?,
            op.mode.source(y as i64 - p[2], h)?,
            op.mode.source(xx as i64 - p[4], w)?,
        ])
    });
}

/// Every output voxel's channels from the input voxel `source` names (zeros for `None`).
fn copy_voxels(
    x: &[f32],
    [d, h, w, c]: [usize; 4],
    out: &mut [f32],
    [od, oh, ow]: [usize; 3],
    source: impl Fn([usize; 3]) -> Option<[usize; 3]> + Sync,
) {
    let item_in = d * h * w * c;
    out.par_chunks_mut(c.max(1))
        .enumerate()
        .for_each(|(voxel, dst)| {
            let xo = voxel % ow;
            let y = voxel / ow % oh;
            let z = voxel / (ow * oh) % od;
            let n = voxel / (ow * oh * od);
            match source([z, y, xo]) {
                Some([iz, iy, ix]) => {
                    let at = n * item_in + ((iz * h + iy) * w + ix) * c;
                    dst.copy_from_slice(&x[at..at + c]);
                }
                None => dst.fill(0.0),
            }
        });
}
