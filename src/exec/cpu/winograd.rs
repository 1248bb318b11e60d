//! 3x3 stride-1 convolutions by Winograd's minimal filtering F(2x2, 3x3) (Lavin & Gray, 2015):
//! each 2x2 block of outputs ("tile") costs 16 multiplies per channel pair instead of 36.
//!
//! The kernel is transformed once when the model is prepared (`U = G g Gᵀ`, 16 matrices of
//! `[c, f]`). A run transforms blocks of input tiles (`V = Bᵀ d B`, 16 matrices of
//! `[tiles, c]`), multiplies the 16 pairs (`M = V U`, the GEMMs that hold nearly all the work) and
//! transforms back (`Y = Aᵀ M A`), adding bias and activation while the block is in cache.
//! The transforms only add and subtract (and halve, in `G`), so the result stays within a few
//! units in the last place of the direct sum (the tests below compare the two). F(4x4, 3x3)
//! would save another 44% of the multiplies, but its error in f32 is ten times larger, most of
//! unetc's 1e-5 budget in one layer (bench/winograd_error.py).

use super::gemm::strided_product;
use super::isa::Isa;
use super::kernels::{bias_activation_serial, Strided};
use crate::ir::ops::{ActivationFn, Conv2D};
use rayon::prelude::*;
use std::ops::Range;

/// Taps of the transformed tile (4x4).
pub const TAPS: usize = 16;

/// How a convolution is cut into pieces of work (sizes in floats and tiles); tests use small ones.
#[derive(Debug, Clone, Copy)]
struct Blocking {
    /// Kernels of at most this many floats per tap (`c * f`) are packed again for every small
    /// segment of tiles at little cost; larger ones are multiplied in large blocks.
    small_kernel: usize,
    /// A segment's transformed input and products (`16 * tiles * (c + f)` floats) aim at this
    /// many floats...
    segment: usize,
    /// ...with at least this many tiles, so that packing a tap's kernel is repaid.
    min_segment_tiles: usize,
    /// A block of a large kernel's convolution aims at this many floats...
    block: usize,
    /// ...with at least this many tiles, for the same reason.
    min_block_tiles: usize,
}

impl Blocking {
    /// A 256 KiB kernel per tap, 512 KiB segments (a core's L2 cache), 4 MiB blocks.
    const DEFAULT: Blocking = Blocking {
        small_kernel: 1 << 16,
        segment: 1 << 17,
        min_segment_tiles: 64,
        block: 1 << 20,
        min_block_tiles: 256,
    };
}

/// Below this many input channels the im2col path is as fast (the transforms are not repaid):
/// a first layer on an RGB image stays direct.
const MIN_CHANNELS: usize = 8;

/// Whether [`conv2d`] computes this convolution: a 3x3 kernel, stride 1, no dilation, one group,
/// and enough channels to repay the transforms.
pub fn applies(op: &Conv2D, c: usize) -> bool {
    let a = &op.args;
    a.kernel_size == [3, 3]
        && a.strides == [1, 1]
        && a.dilation_rate == [1, 1]
        && op.groups == 1
        && repays(c)
        && a.filters > 0
}

/// Whether a 3x3 stride-1 convolution over `c` input channels is worth the transforms.
pub fn repays(c: usize) -> bool {
    c >= MIN_CHANNELS
}

/// `U = G g Gᵀ` for every `(c, f)` of a Keras kernel `[3, 3, c, f]`, laid out `[16, c, f]`.
/// `None` if `kernel` is not `9 * c * f` floats.
pub fn transform_kernel(kernel: &[f32], c: usize, f: usize) -> Option<Vec<f32>> {
    let cf = c.checked_mul(f)?;
    if kernel.len() != cf.checked_mul(9)? {
        return None;
    }
    // Blocks of channel pairs on all cores, each writing its part of the 16 taps' rows: the
    // same arithmetic for every pair, only spread over the cores.
    let mut u = vec![0.0f32; TAPS * cf];
    let mut blocks: Vec<Vec<&mut [f32]>> = (0..cf.div_ceil(KERNEL_BLOCK))
        .map(|_| Vec::with_capacity(TAPS))
        .collect();
    for tap_row in u.chunks_mut(cf.max(1)) {
        for (b, part) in tap_row.chunks_mut(KERNEL_BLOCK).enumerate() {
            blocks[b].push(part);
        }
    }
    blocks.into_par_iter().enumerate().for_each(|(b, mut out)| {
        let first = b * KERNEL_BLOCK;
        for k in 0..out[0].len() {
            let at = first + k;
            let g = |ky: usize, kx: usize| kernel[(ky * 3 + kx) * cf + at];
            // Rows first: t[i][kx] = (G g)[i][kx], G = [1 0 0; ½ ½ ½; ½ -½ ½; 0 0 1].
            let mut t = [[0.0f32; 3]; 4];
            for (kx, col) in (0..3).map(|kx| (kx, [g(0, kx), g(1, kx), g(2, kx)])) {
                t[0][kx] = col[0];
                t[1][kx] = 0.5 * (col[0] + col[1] + col[2]);
                t[2][kx] = 0.5 * (col[0] - col[1] + col[2]);
                t[3][kx] = col[2];
            }
            for (i, row) in t.iter().enumerate() {
                let v = [
                    row[0],
                    0.5 * (row[0] + row[1] + row[2]),
                    0.5 * (row[0] - row[1] + row[2]),
                    row[2],
                ];
                for (j, value) in v.into_iter().enumerate() {
                    out[i * 4 + j][k] = value;
                }
            }
        }
    });
    Some(u)
}

/// Channel pairs per task of [`transform_kernel`].
const KERNEL_BLOCK: usize = 1 << 14;

/// The transformed kernel ([`transform_kernel`], `[16, f, c]`) of the convolution that gives a
/// convolution's input gradient from its output gradient: the Keras kernel `[3, 3, c, f]` turned
/// by 180° with its channel axes swapped, `g'[ky, kx, o, i] = g[2 - ky, 2 - kx, i, o]`.
pub fn transform_kernel_for_input_gradient(kernel: &[f32], c: usize, f: usize) -> Option<Vec<f32>> {
    let cf = c.checked_mul(f)?;
    if kernel.len() != cf.checked_mul(9)? {
        return None;
    }
    let mut turned = vec![0.0f32; 9 * cf];
    turned
        .par_chunks_mut(cf.max(1))
        .enumerate()
        .for_each(|(tap, to)| {
            let from = &kernel[(8 - tap) * cf..(9 - tap) * cf];
            for i in 0..c {
                for o in 0..f {
                    to[o * c + i] = from[i * f + o];
                }
            }
        });
    transform_kernel(&turned, f, c)
}

/// The convolution's shape: input `[h, w, c]` (in `parts`, as for the im2col path), output
/// `[oh, ow, f]`, padding before the first row and column.
#[derive(Debug, Clone, Copy)]
pub struct Geometry {
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub oh: usize,
    pub ow: usize,
    pub f: usize,
    pub top: usize,
    pub left: usize,
}

impl Geometry {
    /// The geometry of the convolution that gives this one's input gradient (its output
    /// gradient in, `[h, w, c]` out, kernel from [`transform_kernel_for_input_gradient`]): input
    /// pixel `i` takes output gradients `i + pad - 2 ..= i + pad`. `None` if a padding before
    /// exceeds 2 (no output reads that input pixel's neighbourhood the usual way).
    pub fn input_gradient(&self) -> Option<Geometry> {
        Some(Geometry {
            h: self.oh,
            w: self.ow,
            c: self.f,
            oh: self.h,
            ow: self.w,
            f: self.c,
            top: 2usize.checked_sub(self.top)?,
            left: 2usize.checked_sub(self.left)?,
        })
    }

    /// Tiles across an output row, and down one batch item.
    fn tiles(&self) -> (usize, usize) {
        (self.ow.div_ceil(2), self.oh.div_ceil(2))
    }

    /// Where tile row `g` (counted over the whole batch) starts in the dense output.
    fn out_start(&self, g: usize) -> usize {
        let th = self.tiles().1;
        let (n, ty) = (g / th, g % th);
        (n * self.oh + (2 * ty).min(self.oh)) * self.ow * self.f
    }
}

/// The convolution of `parts` (the input's channels in order) with the transformed kernel
/// `ops.u` into the dense output `out` `[batch, oh, ow, f]`.
///
/// A block's transformed input is laid out `[tiles, 16, c]` and its products `[tiles, 16, f]`, so
/// each tile's transforms read and write one contiguous run; the GEMMs take tap `t` as the
/// strided rows `t, 16 + t, …`.
pub fn conv2d(parts: &[Strided], geo: Geometry, ops: Ops, out: &mut [f32], batch: usize) {
    conv2d_blocked(parts, geo, ops, out, batch, Blocking::DEFAULT)
}

/// The transformed kernel ([`transform_kernel`]) and what is applied after it.
#[derive(Debug, Clone, Copy)]
pub struct Ops<'a> {
    pub u: &'a [f32],
    pub bias: Option<&'a [f32]>,
    pub activation: ActivationFn,
    pub isa: Isa,
}

fn conv2d_blocked(
    parts: &[Strided],
    geo: Geometry,
    ops: Ops,
    out: &mut [f32],
    batch: usize,
    cut: Blocking,
) {
    let Ops {
        u,
        bias,
        activation,
        isa,
    } = ops;
    let Geometry { c, f, .. } = geo;
    let (tw, th) = geo.tiles();
    let tile_rows = batch * th;
    if tile_rows == 0 || tw == 0 || f == 0 || c == 0 {
        return;
    }
    let out = &mut out[..batch * geo.oh * geo.ow * f];
    let multiply = |tiles: usize, v: &[f32], m: &mut [f32], parallel: bool| {
        for tap in 0..TAPS {
            strided_product(
                (tiles, f, c),
                (&v[tap * c..], TAPS * c, 1),
                (&u[tap * c * f..], f, 1),
                (&mut m[tap * f..], TAPS * f, 1),
                false,
                parallel,
            );
        }
    };
    if tile_rows >= 2 * rayon::current_num_threads() && c * f <= cut.small_kernel {
        // Each core takes whole tile rows, in segments small enough that a segment's transformed
        // input and products stay in its cache from the input transform to the output's.
        let segment = (cut.segment / (TAPS * (c + f)))
            .max(cut.min_segment_tiles)
            .min(tw);
        split_rows(geo, 0..tile_rows, out)
            .into_par_iter()
            .for_each_init(
                || {
                    (
                        vec![0.0f32; segment * TAPS * c],
                        vec![0.0f32; segment * TAPS * f],
                    )
                },
                |(v, m), (g, y)| {
                    for first in (0..tw).step_by(segment) {
                        let txs = first..(first + segment).min(tw);
                        let (v, m) = (
                            &mut v[..txs.len() * TAPS * c],
                            &mut m[..txs.len() * TAPS * f],
                        );
                        transform_input(parts, geo, g, txs.clone(), v, isa);
                        multiply(txs.len(), v, m, false);
                        transform_output(geo, g, txs, m, bias, activation, y, isa);
                    }
                },
            );
    } else {
        // Large kernels (deep layers): blocks of whole tile rows, one at a time, large enough
        // that packing `U` for the GEMMs is repaid; all cores on each stage of a block.
        let target = (cut.block / (TAPS * (c + f))).max(cut.min_block_tiles);
        let rows_per_block = (target / tw).clamp(1, tile_rows);
        let mut v = vec![0.0f32; rows_per_block * tw * TAPS * c];
        let mut m = vec![0.0f32; rows_per_block * tw * TAPS * f];
        let mut rows = split_rows(geo, 0..tile_rows, out).into_iter();
        for first in (0..tile_rows).step_by(rows_per_block) {
            let block: Vec<_> = rows.by_ref().take(rows_per_block).collect();
            let tiles = block.len() * tw;
            let (v, m) = (&mut v[..tiles * TAPS * c], &mut m[..tiles * TAPS * f]);
            v.par_chunks_mut(tw * TAPS * c)
                .enumerate()
                .for_each(|(i, v)| transform_input(parts, geo, first + i, 0..tw, v, isa));
            multiply(tiles, v, m, true);
            m.par_chunks(tw * TAPS * f)
                .zip(block)
                .for_each(|(m, (g, y))| {
                    transform_output(geo, g, 0..tw, m, bias, activation, y, isa)
                });
        }
    }
}

/// The dense output cut into tile rows `rows` (counted over the batch), each one or two output
/// rows (the last of a batch item is one when the height is odd).
fn split_rows(
    geo: Geometry,
    rows: std::ops::Range<usize>,
    mut y: &mut [f32],
) -> Vec<(usize, &mut [f32])> {
    let mut cut = Vec::with_capacity(rows.len());
    for g in rows {
        let len = geo.out_start(g + 1) - geo.out_start(g);
        let (row, rest) = std::mem::take(&mut y).split_at_mut(len);
        cut.push((g, row));
        y = rest;
    }
    cut
}

/// `V = Bᵀ d B` (Bᵀ = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]) for tiles `txs` of tile row
/// `g` (counted over the batch) into `v` (`[tiles, 16, c]`).
fn transform_input(
    parts: &[Strided],
    geo: Geometry,
    g: usize,
    txs: Range<usize>,
    v: &mut [f32],
    isa: Isa,
) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx2` is only detected on CPUs with AVX2 and FMA.
        Isa::Avx2 => unsafe { transform_input_avx2(parts, geo, g, txs, v) },
        _ => transform_input_portable(parts, geo, g, txs, v),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn transform_input_avx2(
    parts: &[Strided],
    geo: Geometry,
    g: usize,
    txs: Range<usize>,
    v: &mut [f32],
) {
    transform_input_portable(parts, geo, g, txs, v)
}

#[inline(always)]
fn transform_input_portable(
    parts: &[Strided],
    geo: Geometry,
    g: usize,
    txs: Range<usize>,
    v: &mut [f32],
) {
    let Geometry { h, w, c, .. } = geo;
    let (_, th) = geo.tiles();
    let (n, ty) = (g / th, g % th);
    let widest = parts.iter().map(|p| p.c).max().unwrap_or(0);
    let zeros = vec![0.0f32; widest];
    let rows: [Option<usize>; 4] =
        std::array::from_fn(|r| (2 * ty + r).checked_sub(geo.top).filter(|&y| y < h));
    for (tx, vt) in txs.zip(v.chunks_mut(TAPS * c)) {
        let cols: [Option<usize>; 4] =
            std::array::from_fn(|s| (2 * tx + s).checked_sub(geo.left).filter(|&x| x < w));
        let mut at = 0;
        for part in parts {
            // The tile's 4x4 pixels of this part where they lie; zeros in the padding.
            let d: [&[f32]; TAPS] = std::array::from_fn(|k| match (rows[k / 4], cols[k % 4]) {
                (Some(iy), Some(ix)) => part.pixel(n, iy, ix),
                _ => &zeros[..part.c],
            });
            input_tile(&d, vt, c, at);
            at += part.c;
        }
    }
}

/// `Bᵀ d B` of one tile's channels `at..at + d[0].len()` (`d`: the 16 pixels' values) into
/// `vt` (`[16, c]`), eight channels at a time (one AVX register), then one by one.
#[inline(always)]
fn input_tile(d: &[&[f32]; TAPS], vt: &mut [f32], c: usize, at: usize) {
    let width = d[0].len();
    let mut ch = 0;
    while ch + LANES <= width {
        input_lanes::<LANES>(d, vt, c, at, ch);
        ch += LANES;
    }
    while ch < width {
        input_lanes::<1>(d, vt, c, at, ch);
        ch += 1;
    }
}

/// Channels per step of the transforms: eight f32 fill an AVX register.
const LANES: usize = 8;

#[inline(always)]
fn input_lanes<const L: usize>(d: &[&[f32]; TAPS], vt: &mut [f32], c: usize, at: usize, ch: usize) {
    // Rows first, t = Bᵀ d (column by column), then the rows of t times B.
    let mut t = [[0.0f32; L]; TAPS];
    for s in 0..4 {
        let p = |r: usize| lanes::<L>(&d[r * 4 + s][ch..]);
        let (d0, d1, d2, d3) = (p(0), p(1), p(2), p(3));
        t[s] = sub(&d0, &d2);
        t[4 + s] = add(&d1, &d2);
        t[8 + s] = sub(&d2, &d1);
        t[12 + s] = sub(&d1, &d3);
    }
    for i in 0..4 {
        let r = &t[4 * i..4 * i + 4];
        let out = [
            sub(&r[0], &r[2]),
            add(&r[1], &r[2]),
            sub(&r[2], &r[1]),
            sub(&r[1], &r[3]),
        ];
        for (j, value) in out.iter().enumerate() {
            let k = 4 * i + j;
            vt[k * c + at + ch..k * c + at + ch + L].copy_from_slice(value);
        }
    }
}

#[inline(always)]
fn lanes<const L: usize>(x: &[f32]) -> [f32; L] {
    std::array::from_fn(|i| x[i])
}

#[inline(always)]
fn add<const L: usize>(a: &[f32; L], b: &[f32; L]) -> [f32; L] {
    std::array::from_fn(|i| a[i] + b[i])
}

#[inline(always)]
fn sub<const L: usize>(a: &[f32; L], b: &[f32; L]) -> [f32; L] {
    std::array::from_fn(|i| a[i] - b[i])
}

/// `Y = Aᵀ M A` (Aᵀ = [1 1 1 0; 0 1 -1 -1]) plus bias and activation for tiles `txs` of tile
/// row `g` from `m` (`[tiles, 16, f]`) into `y`, the tile row's one or two dense output rows.
#[allow(clippy::too_many_arguments)]
fn transform_output(
    geo: Geometry,
    g: usize,
    txs: Range<usize>,
    m: &[f32],
    bias: Option<&[f32]>,
    activation: ActivationFn,
    y: &mut [f32],
    isa: Isa,
) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx2` is only detected on CPUs with AVX2 and FMA.
        Isa::Avx2 => unsafe { transform_output_avx2(geo, g, txs, m, bias, activation, y) },
        _ => transform_output_portable(geo, g, txs, m, bias, activation, y),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn transform_output_avx2(
    geo: Geometry,
    g: usize,
    txs: Range<usize>,
    m: &[f32],
    bias: Option<&[f32]>,
    activation: ActivationFn,
    y: &mut [f32],
) {
    transform_output_portable(geo, g, txs, m, bias, activation, y)
}

#[inline(always)]
fn transform_output_portable(
    geo: Geometry,
    g: usize,
    txs: Range<usize>,
    m: &[f32],
    bias: Option<&[f32]>,
    activation: ActivationFn,
    y: &mut [f32],
) {
    let Geometry { oh, ow, f, .. } = geo;
    let (_, th) = geo.tiles();
    let out_rows = (oh - 2 * (g % th)).min(2);
    // The tile's 2x2 outputs, `[4, f]`, before they are copied into place.
    let mut res = vec![0.0f32; 4 * f];
    for (tx, mt) in txs.zip(m.chunks_exact(TAPS * f)) {
        let mut o = 0;
        while o + LANES <= f {
            output_lanes::<LANES>(mt, bias, &mut res, f, o);
            o += LANES;
        }
        while o < f {
            output_lanes::<1>(mt, bias, &mut res, f, o);
            o += 1;
        }
        let out_cols = (ow - 2 * tx).min(2);
        for dy in 0..out_rows {
            let at = (dy * ow + 2 * tx) * f;
            let dst = &mut y[at..at + out_cols * f];
            dst.copy_from_slice(&res[2 * dy * f..(2 * dy + out_cols) * f]);
            bias_activation_serial(dst, f, None, activation);
        }
    }
}

#[inline(always)]
fn output_lanes<const L: usize>(
    mt: &[f32],
    bias: Option<&[f32]>,
    res: &mut [f32],
    f: usize,
    o: usize,
) {
    // Rows first: s_0 = m_0 + m_1 + m_2, s_1 = m_1 - m_2 - m_3 (column by column); then the
    // same over the columns of s.
    let mut s = [[0.0f32; L]; 8];
    for col in 0..4 {
        let q = |r: usize| lanes::<L>(&mt[(r * 4 + col) * f + o..]);
        let (m0, m1, m2, m3) = (q(0), q(1), q(2), q(3));
        s[col] = add(&add(&m0, &m1), &m2);
        s[4 + col] = sub(&sub(&m1, &m2), &m3);
    }
    let b: [f32; L] = bias.map_or([0.0; L], |b| lanes(&b[o..]));
    for row in 0..2 {
        let r = &s[4 * row..4 * row + 4];
        let left = add(&add(&add(&r[0], &r[1]), &r[2]), &b);
        let right = add(&sub(&sub(&r[1], &r[2]), &r[3]), &b);
        res[2 * row * f + o..2 * row * f + o + L].copy_from_slice(&left);
        res[(2 * row + 1) * f + o..(2 * row + 1) * f + o + L].copy_from_slice(&right);
    }
}

/// The kernel gradient (`[3, 3, c, f]`, Keras's layout) of the convolution `geo` from its input
/// `x` (dense `[batch, h, w, c]`) and its output gradient `dy` (dense `[batch, oh, ow, f]`).
///
/// The output is `Y = Aᵀ [Σ_c U ⊙ V] A` per tile with `U = G g Gᵀ`, so the gradient is
/// `dg = Gᵀ dU G` with `dU = Σ_tiles V ⊙ N`, `N = A dY Aᵀ`: 16 products `Vᵀ N` over the tiles
/// (`[c, tiles] x [tiles, f]`) instead of 9 over the pixels. Small kernels: tile rows are cut
/// into a number of chunks fixed by the shapes, each summed into its own partial `dU` on one
/// core, the partials added in chunk order; large kernels: blocks of tile rows one after
/// another, each product on all cores. Either way the sum's order does not depend on the
/// number of threads, so the result is the same run to run.
pub fn kernel_gradient(x: &[f32], dy: &[f32], geo: Geometry, batch: usize, isa: Isa) -> Vec<f32> {
    kernel_gradient_blocked(x, dy, geo, batch, isa, Blocking::DEFAULT)
}

/// Floats of partial sums the small-kernel path of [`kernel_gradient`] may hold (16 MiB).
const PARTIALS_FLOATS: usize = 1 << 22;

/// Below this many tiles (over the batch), [`kernel_gradient`]'s 16 products are too short to
/// repay reading and writing `dU` (16 `[c, f]` matrices): deep layers of a small image.
const MIN_GRADIENT_TILES: usize = 256;

/// Whether [`kernel_gradient`] is worth its transforms for `geo` at `batch`.
pub fn kernel_gradient_repays(geo: &Geometry, batch: usize) -> bool {
    let (tw, th) = geo.tiles();
    repays(geo.c) && repays(geo.f) && batch * tw * th >= MIN_GRADIENT_TILES
}

fn kernel_gradient_blocked(
    x: &[f32],
    dy: &[f32],
    geo: Geometry,
    batch: usize,
    isa: Isa,
    cut: Blocking,
) -> Vec<f32> {
    let Geometry { h, w, c, f, .. } = geo;
    let cf = c * f;
    let (tw, th) = geo.tiles();
    let tile_rows = batch * th;
    let mut du = vec![0.0f32; TAPS * cf];
    if tile_rows > 0 && tw > 0 && cf > 0 {
        let parts = [Strided::dense(x, [h, w, c])];
        let parts = &parts[..];
        // du[tap] += Vᵀ N over `tiles` tiles of `v` (`[tiles, 16, c]`) and `n` (`[tiles, 16, f]`).
        let multiply = |tiles: usize, v: &[f32], n: &[f32], du: &mut [f32], parallel: bool| {
            for tap in 0..TAPS {
                strided_product(
                    (c, f, tiles),
                    (&v[tap * c..], 1, TAPS * c),
                    (&n[tap * f..], TAPS * f, 1),
                    (&mut du[tap * cf..], f, 1),
                    true,
                    parallel,
                );
            }
        };
        if tile_rows >= 2 && cf <= cut.small_kernel {
            let chunks = (PARTIALS_FLOATS / (TAPS * cf)).clamp(1, 32).min(tile_rows);
            let rows_per_chunk = tile_rows.div_ceil(chunks);
            let segment = (cut.segment / (TAPS * (c + f)))
                .max(cut.min_segment_tiles)
                .min(tw);
            let partials: Vec<Vec<f32>> = (0..tile_rows)
                .step_by(rows_per_chunk)
                .collect::<Vec<_>>()
                .into_par_iter()
                .map(|first_row| {
                    let mut partial = vec![0.0f32; TAPS * cf];
                    let mut v = vec![0.0f32; segment * TAPS * c];
                    let mut n = vec![0.0f32; segment * TAPS * f];
                    for g in first_row..(first_row + rows_per_chunk).min(tile_rows) {
                        for first in (0..tw).step_by(segment) {
                            let txs = first..(first + segment).min(tw);
                            let (v, n) = (
                                &mut v[..txs.len() * TAPS * c],
                                &mut n[..txs.len() * TAPS * f],
                            );
                            transform_input(parts, geo, g, txs.clone(), v, isa);
                            transform_output_gradient(dy, geo, g, txs.clone(), n, isa);
                            multiply(txs.len(), v, n, &mut partial, false);
                        }
                    }
                    partial
                })
                .collect();
            du.par_chunks_mut(1 << 12).enumerate().for_each(|(i, out)| {
                let at = i << 12;
                for partial in &partials {
                    for (o, p) in out.iter_mut().zip(&partial[at..]) {
                        *o += p;
                    }
                }
            });
        } else {
            let target = (cut.block / (TAPS * (c + f))).max(cut.min_block_tiles);
            let rows_per_block = (target / tw).clamp(1, tile_rows);
            let mut v = vec![0.0f32; rows_per_block * tw * TAPS * c];
            let mut n = vec![0.0f32; rows_per_block * tw * TAPS * f];
            for first in (0..tile_rows).step_by(rows_per_block) {
                let rows = rows_per_block.min(tile_rows - first);
                let tiles = rows * tw;
                let (v, n) = (&mut v[..tiles * TAPS * c], &mut n[..tiles * TAPS * f]);
                v.par_chunks_mut(tw * TAPS * c)
                    .zip(n.par_chunks_mut(tw * TAPS * f))
                    .enumerate()
                    .for_each(|(i, (v, n))| {
                        transform_input(parts, geo, first + i, 0..tw, v, isa);
                        transform_output_gradient(dy, geo, first + i, 0..tw, n, isa);
                    });
                multiply(tiles, v, n, &mut du, true);
            }
        }
    }
    // dg = Gᵀ dU G, Gᵀ = [1 ½ ½ 0; 0 ½ -½ 0; 0 ½ ½ 1], for every channel pair.
    let mut dg = vec![0.0f32; 9 * cf];
    let gt = |a: f32, b: f32, c: f32, d: f32| [a + 0.5 * (b + c), 0.5 * (b - c), 0.5 * (b + c) + d];
    for at in 0..cf {
        let m = |i: usize, j: usize| du[(i * 4 + j) * cf + at];
        // Columns first: t[j] = Gᵀ (column j of dU).
        let t: [[f32; 3]; 4] = std::array::from_fn(|j| gt(m(0, j), m(1, j), m(2, j), m(3, j)));
        for ky in 0..3 {
            let row = gt(t[0][ky], t[1][ky], t[2][ky], t[3][ky]);
            for (kx, value) in row.into_iter().enumerate() {
                dg[(ky * 3 + kx) * cf + at] = value;
            }
        }
    }
    dg
}

/// `N = A dY Aᵀ` (A = [1 0; 1 1; 1 -1; 0 -1]) for tiles `txs` of tile row `g` of the output
/// gradient `dy` (dense `[batch, oh, ow, f]`; zeros past its edge) into `n` (`[tiles, 16, f]`).
fn transform_output_gradient(
    dy: &[f32],
    geo: Geometry,
    g: usize,
    txs: Range<usize>,
    n: &mut [f32],
    isa: Isa,
) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Isa::Avx2` is only detected on CPUs with AVX2 and FMA.
        Isa::Avx2 => unsafe { transform_output_gradient_avx2(dy, geo, g, txs, n) },
        _ => transform_output_gradient_portable(dy, geo, g, txs, n),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn transform_output_gradient_avx2(
    dy: &[f32],
    geo: Geometry,
    g: usize,
    txs: Range<usize>,
    n: &mut [f32],
) {
    transform_output_gradient_portable(dy, geo, g, txs, n)
}

#[inline(always)]
fn transform_output_gradient_portable(
    dy: &[f32],
    geo: Geometry,
    g: usize,
    txs: Range<usize>,
    n: &mut [f32],
) {
    let Geometry { oh, ow, f, .. } = geo;
    let (_, th) = geo.tiles();
    let (item, ty) = (g / th, g % th);
    let zeros = vec![0.0f32; f];
    for (tx, nt) in txs.zip(n.chunks_exact_mut(TAPS * f)) {
        // The tile's 2x2 output gradients where they lie, zeros past the edge.
        let d: [&[f32]; 4] = std::array::from_fn(|k| {
            let (oy, ox) = (2 * ty + k / 2, 2 * tx + k % 2);
            if oy < oh && ox < ow {
                let at = ((item * oh + oy) * ow + ox) * f;
                &dy[at..at + f]
            } else {
                &zeros[..]
            }
        });
        let mut o = 0;
        while o + LANES <= f {
            output_gradient_lanes::<LANES>(&d, nt, f, o);
            o += LANES;
        }
        while o < f {
            output_gradient_lanes::<1>(&d, nt, f, o);
            o += 1;
        }
    }
}

#[inline(always)]
fn output_gradient_lanes<const L: usize>(d: &[&[f32]; 4], nt: &mut [f32], f: usize, o: usize) {
    let y: [[f32; L]; 4] = std::array::from_fn(|k| lanes::<L>(&d[k][o..]));
    let zero = [0.0f32; L];
    // Rows of A dY: y0, y0 + y1, y0 - y1, -y1 (each a pair of columns).
    let rows = [
        [y[0], y[1]],
        [add(&y[0], &y[2]), add(&y[1], &y[3])],
        [sub(&y[0], &y[2]), sub(&y[1], &y[3])],
        [sub(&zero, &y[2]), sub(&zero, &y[3])],
    ];
    for (i, [a, b]) in rows.iter().enumerate() {
        let out = [*a, add(a, b), sub(a, b), sub(&zero, b)];
        for (j, value) in out.iter().enumerate() {
            let k = 4 * i + j;
            nt[k * f + o..k * f + o + L].copy_from_slice(value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [-1, 1).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// The direct sum in f64: `y[n, oy, ox, o] = b[o] + Σ x[n, oy + ky - top, ox + kx - left, ch]
    /// k[ky, kx, ch, o]`, taps outside the input being zero.
    fn direct(x: &[f32], geo: Geometry, kernel: &[f32], bias: &[f32], batch: usize) -> Vec<f32> {
        let Geometry {
            h,
            w,
            c,
            oh,
            ow,
            f,
            top,
            left,
        } = geo;
        let mut y = vec![0.0f32; batch * oh * ow * f];
        for n in 0..batch {
            for oy in 0..oh {
                for ox in 0..ow {
                    for o in 0..f {
                        let mut sum = bias[o] as f64;
                        for ky in 0..3 {
                            for kx in 0..3 {
                                let (Some(iy), Some(ix)) =
                                    ((oy + ky).checked_sub(top), (ox + kx).checked_sub(left))
                                else {
                                    continue;
                                };
                                if iy >= h || ix >= w {
                                    continue;
                                }
                                for ch in 0..c {
                                    sum += x[((n * h + iy) * w + ix) * c + ch] as f64
                                        * kernel[((ky * 3 + kx) * c + ch) * f + o] as f64;
                                }
                            }
                        }
                        y[((n * oh + oy) * ow + ox) * f + o] = sum as f32;
                    }
                }
            }
        }
        y
    }

    /// Runs [`conv2d`] on `x` split into channel parts of the given widths (each read from its
    /// own strided buffer, as the arena holds an unbuilt concatenation) and compares with
    /// [`direct`].
    fn check(h: usize, w: usize, widths: &[usize], f: usize, same: bool, batch: usize) {
        check_cut(h, w, widths, f, same, batch, Blocking::DEFAULT)
    }

    fn check_cut(
        h: usize,
        w: usize,
        widths: &[usize],
        f: usize,
        same: bool,
        batch: usize,
        cut: Blocking,
    ) {
        let c: usize = widths.iter().sum();
        let (oh, ow, top, left) = if same {
            (h, w, 1, 1)
        } else {
            (h - 2, w - 2, 0, 0)
        };
        let geo = Geometry {
            h,
            w,
            c,
            oh,
            ow,
            f,
            top,
            left,
        };
        let x = values(batch * h * w * c, 1 + h as u64 * 31 + c as u64);
        let kernel = values(9 * c * f, 7 + f as u64);
        let bias = values(f, 3);
        // Each part lives in a buffer with 2 spare channels per pixel and 3 spare floats first.
        let buffers: Vec<Vec<f32>> = widths
            .iter()
            .scan(0, |first, &pc| {
                let mut buf = vec![f32::NAN; 3 + batch * h * w * (pc + 2)];
                for p in 0..batch * h * w {
                    for ch in 0..pc {
                        buf[3 + p * (pc + 2) + ch] = x[p * c + *first + ch];
                    }
                }
                *first += pc;
                Some(buf)
            })
            .collect();
        let parts: Vec<Strided> = buffers
            .iter()
            .zip(widths)
            .map(|(data, &pc)| Strided {
                data,
                offset: 3,
                item_stride: h * w * (pc + 2),
                row_stride: w * (pc + 2),
                pixel_stride: pc + 2,
                c: pc,
            })
            .collect();
        let u = transform_kernel(&kernel, c, f).expect("kernel size");
        let want = direct(&x, geo, &kernel, &bias, batch);
        let scale = want.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
        // The portable code, and the CPU's best (the same on a CPU without AVX2).
        for isa in [Isa::Portable, Isa::detect()] {
            let mut y = vec![f32::NAN; batch * oh * ow * f];
            let ops = Ops {
                u: &u,
                bias: Some(&bias),
                activation: ActivationFn::Linear,
                isa,
            };
            conv2d_blocked(&parts, geo, ops, &mut y, batch, cut);
            for (i, (a, b)) in y.iter().zip(&want).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-5 * scale,
                    "{isa:?} {h}x{w}, parts {widths:?}, f {f}, same {same}, batch {batch}: \
                     y[{i}] = {a}, direct {b}"
                );
            }
        }
    }

    #[test]
    fn equals_the_direct_sum_on_edge_shapes() {
        for &(h, w) in &[(3, 3), (4, 5), (7, 6), (9, 9), (12, 17)] {
            for same in [true, false] {
                for &(widths, f) in &[
                    (&[8][..], 1),
                    (&[13][..], 5),
                    (&[5, 8][..], 16),
                    (&[64][..], 33),
                ] {
                    check(h, w, widths, f, same, 1);
                }
            }
        }
        // Batches: odd heights end each item on a one-row tile row.
        check(7, 6, &[9, 3], 7, true, 3);
        check(5, 9, &[16], 4, false, 2);
    }

    #[test]
    fn same_padding_with_one_row_and_column() {
        check(1, 1, &[8], 3, true, 2);
        check(1, 6, &[8], 3, true, 1);
        check(6, 1, &[8], 3, true, 1);
    }

    #[test]
    fn segments_and_blocks() {
        // Small kernels: tile rows on all cores, each in segments of 7 tiles (the last shorter).
        let small = Blocking {
            small_kernel: 1 << 16,
            segment: 1,
            min_segment_tiles: 7,
            block: 1,
            min_block_tiles: 1,
        };
        check_cut(9, 31, &[5, 11], 6, true, 2, small);
        check_cut(12, 17, &[16], 9, false, 1, small);
        // Large kernels: blocks of 3 tile rows (the last shorter), one at a time.
        let large = Blocking {
            small_kernel: 0,
            min_block_tiles: 3 * 8,
            ..small
        };
        check_cut(23, 15, &[8, 8], 10, true, 2, large);
        // The defaults on a layer large enough for several segments per row.
        check(10, 300, &[64], 64, false, 1);
    }

    /// The kernel and input gradients of the convolution `geo` in f64 by their definitions:
    /// `dk[ky, kx, ch, o] = Σ x[n, oy + ky - top, ox + kx - left, ch] dy[n, oy, ox, o]`, and
    /// `dx` scatters `dy[n, oy, ox, o] k[ky, kx, ch, o]` to the pixel each tap reads.
    fn direct_gradients(
        x: &[f32],
        dy: &[f32],
        kernel: &[f32],
        geo: Geometry,
        batch: usize,
    ) -> (Vec<f32>, Vec<f32>) {
        let Geometry {
            h,
            w,
            c,
            oh,
            ow,
            f,
            top,
            left,
        } = geo;
        let mut dk = vec![0.0f64; 9 * c * f];
        let mut dx = vec![0.0f64; batch * h * w * c];
        for n in 0..batch {
            for oy in 0..oh {
                for ox in 0..ow {
                    for ky in 0..3 {
                        for kx in 0..3 {
                            let (Some(iy), Some(ix)) =
                                ((oy + ky).checked_sub(top), (ox + kx).checked_sub(left))
                            else {
                                continue;
                            };
                            if iy >= h || ix >= w {
                                continue;
                            }
                            for ch in 0..c {
                                let xi = ((n * h + iy) * w + ix) * c + ch;
                                for o in 0..f {
                                    let g = dy[((n * oh + oy) * ow + ox) * f + o] as f64;
                                    let ki = ((ky * 3 + kx) * c + ch) * f + o;
                                    dk[ki] += x[xi] as f64 * g;
                                    dx[xi] += kernel[ki] as f64 * g;
                                }
                            }
                        }
                    }
                }
            }
        }
        let narrow = |v: Vec<f64>| v.into_iter().map(|v| v as f32).collect();
        (narrow(dk), narrow(dx))
    }

    fn assert_close(what: &str, got: &[f32], want: &[f32]) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        let scale = want.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
        for (i, (a, b)) in got.iter().zip(want).enumerate() {
            assert!(
                (a - b).abs() <= 1e-5 * scale,
                "{what}: [{i}] = {a}, direct {b} (scale {scale})"
            );
        }
    }

    /// Both gradients through Winograd's transforms against [`direct_gradients`].
    fn check_gradients(h: usize, w: usize, c: usize, f: usize, same: bool, batch: usize) {
        let (oh, ow, top) = if same { (h, w, 1) } else { (h - 2, w - 2, 0) };
        let geo = Geometry {
            h,
            w,
            c,
            oh,
            ow,
            f,
            top,
            left: top,
        };
        let x = values(batch * h * w * c, 11 + h as u64);
        let dy = values(batch * oh * ow * f, 5 + w as u64);
        let kernel = values(9 * c * f, 17 + c as u64);
        let (want_dk, want_dx) = direct_gradients(&x, &dy, &kernel, geo, batch);
        let small = Blocking {
            small_kernel: 1 << 16,
            segment: 1,
            min_segment_tiles: 3,
            block: 1,
            min_block_tiles: 1,
        };
        let large = Blocking {
            small_kernel: 0,
            min_block_tiles: 2 * ow.div_ceil(2),
            ..small
        };
        let label = format!("{h}x{w}, c {c}, f {f}, same {same}, batch {batch}");
        for isa in [Isa::Portable, Isa::detect()] {
            for cut in [Blocking::DEFAULT, small, large] {
                let dk = kernel_gradient_blocked(&x, &dy, geo, batch, isa, cut);
                assert_close(&format!("dk {label} {isa:?} {cut:?}"), &dk, &want_dk);
            }
            let back = geo.input_gradient().expect("3x3 padding");
            let u = transform_kernel_for_input_gradient(&kernel, c, f).expect("kernel size");
            let ops = Ops {
                u: &u,
                bias: None,
                activation: ActivationFn::Linear,
                isa,
            };
            let mut dx = vec![f32::NAN; batch * h * w * c];
            conv2d(
                &[Strided::dense(&dy, [oh, ow, f])],
                back,
                ops,
                &mut dx,
                batch,
            );
            assert_close(&format!("dx {label} {isa:?}"), &dx, &want_dx);
        }
    }

    #[test]
    fn gradients_equal_their_definitions() {
        check_gradients(3, 3, 8, 1, true, 1);
        check_gradients(3, 3, 8, 2, false, 1);
        check_gradients(7, 6, 9, 13, true, 2);
        check_gradients(7, 6, 9, 13, false, 2);
        check_gradients(12, 17, 16, 8, true, 1);
        check_gradients(5, 9, 3, 33, false, 3);
        check_gradients(1, 1, 8, 8, true, 2);
    }

    #[test]
    fn refuses_a_kernel_of_the_wrong_size() {
        assert!(transform_kernel(&[0.0; 10], 1, 1).is_none());
        assert!(transform_kernel(&[0.0; 18], 2, 1).is_some());
        assert!(transform_kernel_for_input_gradient(&[0.0; 17], 2, 1).is_none());
    }
}
