//! keras-unet-collection's Swin-UNET layers on the CPU: SwinTransformerBlock, patch_merging and
//! patch_expanding (the trainer's forward and backward passes call these too).

use super::attention::{softmax_rows, ScoreTerms};
use super::gemm::matmul;
use super::kernels;
use crate::ir::ops::{
    ActivationFn, AttentionDims, NormLayout, PatchExpanding, SwinGeometry, SwinTransformerBlock,
    SWIN_NORM_EPSILON,
};
use rayon::prelude::*;

/// The weights of a block as [`crate::exec::weight_slots`] binds them.
pub mod slot {
    pub const NORM1_GAMMA: usize = 0;
    pub const NORM1_BETA: usize = 1;
    pub const BIAS_TABLE: usize = 2;
    pub const QKV_KERNEL: usize = 3;
    pub const QKV_BIAS: usize = 4;
    pub const PROJ_KERNEL: usize = 5;
    pub const PROJ_BIAS: usize = 6;
    pub const NORM2_GAMMA: usize = 7;
    pub const NORM2_BETA: usize = 8;
    pub const FC1_KERNEL: usize = 9;
    pub const FC1_BIAS: usize = 10;
    pub const FC2_KERNEL: usize = 11;
    pub const FC2_BIAS: usize = 12;
    pub const MASK: usize = 13;
    pub const INDEX: usize = 14;
}

/// The class's LayerNormalization over each token's `channels` features.
fn token_norm(channels: usize) -> NormLayout {
    NormLayout {
        outer: 1,
        span: 1,
        groups: 1,
        group_size: channels,
        affine_per_position: false,
        epsilon: SWIN_NORM_EPSILON,
    }
}

/// One window's self-attention as MultiHeadAttention's sizes (`head_dim` per head).
fn window_dims(g: &SwinGeometry) -> AttentionDims {
    let n = g.window_tokens();
    AttentionDims {
        tq: n,
        eq: g.channels,
        tv: n,
        ek: g.channels,
        ev: g.channels,
        heads: g.heads,
        key_dim: g.head_dim(),
        value_dim: g.head_dim(),
        eo: g.channels,
    }
}

/// The fused `qkv` Dense split into MultiHeadAttention's eight weights: its columns
/// `[s * C + h * head_dim + j]` are query (s = 0), key, value of head h; then `proj`.
fn attention_weights(w: &[Vec<f32>], c: usize) -> Vec<Vec<f32>> {
    let (kernel, bias) = (&w[slot::QKV_KERNEL], &w[slot::QKV_BIAS]);
    let mut out = Vec::with_capacity(8);
    for s in 0..3 {
        let k: Vec<f32> = kernel
            .chunks_exact((3 * c).max(1))
            .flat_map(|row| row[s * c..(s + 1) * c].iter().copied())
            .collect();
        out.push(k);
        out.push(bias[s * c..(s + 1) * c].to_vec());
    }
    out.push(w[slot::PROJ_KERNEL].clone());
    out.push(w[slot::PROJ_BIAS].clone());
    out
}

/// The relative position bias of every head, `[heads, N, N]`:
/// `table[index[i, j], h]` (the index was checked against the arguments when bound).
fn position_bias(g: &SwinGeometry, table: &[f32], index: &[f32]) -> Vec<f32> {
    let n2 = g.window_tokens() * g.window_tokens();
    let mut bias = vec![0.0; g.heads * n2];
    for h in 0..g.heads {
        for (k, &row) in index.iter().enumerate().take(n2) {
            bias[h * n2 + k] = table[row as usize * g.heads + h];
        }
    }
    bias
}

/// The scores' bias of window `win`: the position bias plus the window's mask (if shifted).
fn window_bias(g: &SwinGeometry, position: &[f32], mask: &[f32], win: usize) -> Vec<f32> {
    let n2 = g.window_tokens() * g.window_tokens();
    if g.shift == 0 {
        return position.to_vec();
    }
    let m = &mask[win * n2..(win + 1) * n2];
    position
        .chunks_exact(n2.max(1))
        .flat_map(|head| head.iter().zip(m).map(|(b, v)| b + v))
        .collect()
}

/// Window `win`'s rows of `tokens` (one item, `[L, C]`): `[N, C]`.
fn gather_window(g: &SwinGeometry, tokens: &[f32], win: usize) -> Vec<f32> {
    let c = g.channels;
    let mut out = Vec::with_capacity(g.window_tokens() * c);
    for t in 0..g.window_tokens() {
        let p = g.source(win, t);
        out.extend_from_slice(&tokens[p * c..(p + 1) * c]);
    }
    out
}

/// The attention branch of a block for every item: `[batch, L, C]` in patch order. q, k and v
/// of every token come from one product with the fused kernel (`q` scaled after its bias, as
/// the class does); each window's heads then attend on all cores (`q k^T`, plus the position
/// bias, plus the mask, softmax, times `v`), and one product projects every token.
fn window_attention(
    op: &SwinTransformerBlock,
    normed: &[f32],
    w: &[Vec<f32>],
    batch: usize,
) -> Vec<f32> {
    let g = op.geometry();
    let (l, c, n, hd) = (g.h * g.w, g.channels, g.window_tokens(), g.head_dim());
    let rows = batch * l;
    let width = 3 * c;
    let mut qkv = vec![0.0; rows * width];
    matmul(
        rows,
        width,
        c,
        normed,
        &w[slot::QKV_KERNEL],
        &mut qkv,
        false,
    );
    let scale = op.query_scale();
    for row in qkv.chunks_exact_mut(width.max(1)) {
        row.iter_mut()
            .zip(&w[slot::QKV_BIAS])
            .for_each(|(v, b)| *v += b);
        row[..c].iter_mut().for_each(|v| *v *= scale);
    }
    let position = position_bias(&g, &w[slot::BIAS_TABLE], &w[slot::INDEX]);
    let mask = &w[slot::MASK];
    let windows = g.windows();
    let attended: Vec<Vec<f32>> = (0..batch * windows)
        .into_par_iter()
        .map(|k| {
            let (item, win) = (k / windows, k % windows);
            let at: Vec<usize> = (0..n)
                .map(|t| (item * l + g.source(win, t)) * width)
                .collect();
            let mut out = vec![0.0f32; n * c];
            let mut scores = vec![0.0f32; n];
            for h in 0..g.heads {
                let bias = &position[h * n * n..(h + 1) * n * n];
                for i in 0..n {
                    let q = &qkv[at[i] + h * hd..at[i] + (h + 1) * hd];
                    for (j, s) in scores.iter_mut().enumerate() {
                        let key = &qkv[at[j] + c + h * hd..at[j] + c + (h + 1) * hd];
                        let dot: f32 = q.iter().zip(key).map(|(a, b)| a * b).sum();
                        *s = dot + bias[i * n + j];
                        if g.shift > 0 {
                            *s += mask[(win * n + i) * n + j];
                        }
                    }
                    softmax_rows(&mut scores, n);
                    let o = &mut out[i * c + h * hd..i * c + (h + 1) * hd];
                    for (j, &p) in scores.iter().enumerate() {
                        let v = &qkv[at[j] + 2 * c + h * hd..at[j] + 2 * c + (h + 1) * hd];
                        o.iter_mut().zip(v).for_each(|(o, v)| *o += p * v);
                    }
                }
            }
            out
        })
        .collect();
    // The heads' values back at their patches, then the projection of every token.
    let mut merged = vec![0.0; rows * c];
    for (k, out) in attended.iter().enumerate() {
        let (item, win) = (k / windows, k % windows);
        for t in 0..n {
            let p = item * l + g.source(win, t);
            merged[p * c..(p + 1) * c].copy_from_slice(&out[t * c..(t + 1) * c]);
        }
    }
    let mut y = vec![0.0; rows * c];
    matmul(rows, c, c, &merged, &w[slot::PROJ_KERNEL], &mut y, false);
    for row in y.chunks_exact_mut(c.max(1)) {
        row.iter_mut()
            .zip(&w[slot::PROJ_BIAS])
            .for_each(|(v, b)| *v += b);
    }
    y
}

/// The MLP's first layer on normalised tokens: `activation(normed fc1 + bias)`, `[rows, mlp]`.
fn mlp_hidden(
    g: &SwinGeometry,
    w: &[Vec<f32>],
    normed: &[f32],
    activation: ActivationFn,
) -> Vec<f32> {
    let rows = normed.len() / g.channels.max(1);
    let mut hidden = vec![0.0; rows * g.mlp];
    kernels::dense(
        normed,
        g.channels,
        &w[slot::FC1_KERNEL],
        Some(&w[slot::FC1_BIAS]),
        activation,
        &mut hidden,
        g.mlp,
        rows,
    );
    hidden
}

/// SwinTransformerBlock over a batch: `x1 = x + attn(norm1(x))`, `out = x1 + mlp(norm2(x1))`.
pub fn swin_block(
    op: &SwinTransformerBlock,
    x: &[f32],
    w: &[Vec<f32>],
    out: &mut [f32],
    batch: usize,
) {
    let g = op.geometry();
    let c = g.channels;
    let rows = x.len() / c.max(1);
    let mut normed = vec![0.0; x.len()];
    kernels::normalize(
        token_norm(c),
        &w[slot::NORM1_GAMMA],
        &w[slot::NORM1_BETA],
        x,
        &mut normed,
    );
    let attended = window_attention(op, &normed, w, batch);
    for ((o, a), b) in out.iter_mut().zip(x).zip(&attended) {
        *o = a + b;
    }
    kernels::normalize(
        token_norm(c),
        &w[slot::NORM2_GAMMA],
        &w[slot::NORM2_BETA],
        out,
        &mut normed,
    );
    let hidden = mlp_hidden(&g, w, &normed, ActivationFn::Gelu);
    // out += hidden fc2 + bias
    matmul(rows, c, g.mlp, &hidden, &w[slot::FC2_KERNEL], out, true);
    for row in out.chunks_exact_mut(c.max(1)) {
        row.iter_mut()
            .zip(&w[slot::FC2_BIAS])
            .for_each(|(v, b)| *v += b);
    }
}

/// patch_merging's gather: `[L / 4, 4 C]` with the 2x2 neighbours' features in the class's
/// order (rows, columns): (0, 0), (1, 0), (0, 1), (1, 1).
pub fn merge_neighbours(x: &[f32], [h, w]: [usize; 2], c: usize, batch: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(x.len());
    for n in 0..batch {
        let item = &x[n * h * w * c..(n + 1) * h * w * c];
        for i in 0..h / 2 {
            for j in 0..w / 2 {
                for (di, dj) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                    let p = (2 * i + di) * w + 2 * j + dj;
                    out.extend_from_slice(&item[p * c..(p + 1) * c]);
                }
            }
        }
    }
    out
}

/// The backward of [`merge_neighbours`].
pub fn merge_neighbours_backward(
    dy: &[f32],
    [h, w]: [usize; 2],
    c: usize,
    batch: usize,
) -> Vec<f32> {
    let mut dx = vec![0.0; batch * h * w * c];
    let mut chunks = dy.chunks_exact(c.max(1));
    for n in 0..batch {
        let item = &mut dx[n * h * w * c..(n + 1) * h * w * c];
        for i in 0..h / 2 {
            for j in 0..w / 2 {
                for (di, dj) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                    let p = (2 * i + di) * w + 2 * j + dj;
                    if let Some(g) = chunks.next() {
                        item[p * c..(p + 1) * c].copy_from_slice(g);
                    }
                }
            }
        }
    }
    dx
}

/// patch_merging: the neighbours side by side, then the bias-free Dense.
pub fn patch_merging(
    x: &[f32],
    grid: [usize; 2],
    c: usize,
    kernel: &[f32],
    out: &mut [f32],
    units: usize,
    batch: usize,
) {
    let merged = merge_neighbours(x, grid, c, batch);
    let rows = merged.len() / (4 * c).max(1);
    matmul(rows, units, 4 * c, &merged, kernel, out, false);
}

/// depth_to_space of a `[h, w, r * r * oc]` grid (TF's order: depth `(i * r + j) * oc + ch`
/// goes to position `(y * r + i, x * r + j)`), or its inverse (`inverse`: space to depth).
fn depth_to_space(
    x: &[f32],
    [h, w]: [usize; 2],
    r: usize,
    oc: usize,
    batch: usize,
    inverse: bool,
) -> Vec<f32> {
    let mut out = vec![0.0; x.len()];
    let depth = r * r * oc;
    for n in 0..batch {
        let base = n * h * w * depth;
        for y in 0..h {
            for xx in 0..w {
                for i in 0..r {
                    for j in 0..r {
                        let src = base + (y * w + xx) * depth + (i * r + j) * oc;
                        let dst = base + ((y * r + i) * w * r + xx * r + j) * oc;
                        let (from, to) = if inverse { (dst, src) } else { (src, dst) };
                        out[to..to + oc].copy_from_slice(&x[from..from + oc]);
                    }
                }
            }
        }
    }
    out
}

/// patch_expanding's grid, rate and features per output position.
fn expanding_sizes(op: &PatchExpanding) -> ([usize; 2], usize, usize) {
    (
        op.num_patch.map(|v| v.max(0) as usize),
        op.upsample_rate.max(1) as usize,
        op.out_channels().max(0) as usize,
    )
}

/// patch_expanding: the bias-free 1x1 convolution to `r * embed_dim` features, then
/// depth_to_space (tokens and image share one layout).
pub fn patch_expanding(
    op: &PatchExpanding,
    x: &[f32],
    c: usize,
    kernel: &[f32],
    out: &mut [f32],
    batch: usize,
) {
    let (grid, r, oc) = expanding_sizes(op);
    let rows = x.len() / c.max(1);
    let mut conv = vec![0.0; rows * r * r * oc];
    matmul(rows, r * r * oc, c, x, kernel, &mut conv, false);
    out.copy_from_slice(&depth_to_space(&conv, grid, r, oc, batch, false));
}

/// The gradients of a block with respect to its input and its fifteen weight slots (none for
/// the mask and the index, which are constants).
pub struct SwinGrads {
    pub input: Vec<f32>,
    pub weights: Vec<Option<Vec<f32>>>,
}

/// The backward of [`swin_block`] (without dropouts): the forward pass is recomputed from the
/// input; `dy` is `[batch, L, C]`.
pub fn swin_block_backward(
    op: &SwinTransformerBlock,
    x: &[f32],
    w: &[Vec<f32>],
    dy: &[f32],
    batch: usize,
) -> SwinGrads {
    use crate::train::layers::{dense_backward, normalize_backward, normalize_forward};
    let g = op.geometry();
    let (l, c, n) = (g.h * g.w, g.channels, g.window_tokens());
    let layout = token_norm(c);
    // Forward.
    let (normed1, stats1) =
        normalize_forward(layout, &w[slot::NORM1_GAMMA], &w[slot::NORM1_BETA], x);
    let attended = window_attention(op, &normed1, w, batch);
    let x1: Vec<f32> = x.iter().zip(&attended).map(|(a, b)| a + b).collect();
    let (normed2, stats2) =
        normalize_forward(layout, &w[slot::NORM2_GAMMA], &w[slot::NORM2_BETA], &x1);
    let z1 = mlp_hidden(&g, w, &normed2, ActivationFn::Linear);
    let gelu = kernels::elementwise(ActivationFn::Gelu).unwrap_or(|v| v);
    let hidden: Vec<f32> = z1.iter().map(|&v| gelu(v)).collect();
    // The MLP branch.
    let (dhidden, dfc2, dfc2_bias) = dense_backward(&hidden, g.mlp, &w[slot::FC2_KERNEL], dy, c);
    let dz1: Vec<f32> = dhidden
        .iter()
        .zip(&z1)
        .map(|(d, &z)| {
            d * crate::train::activations::derivative(ActivationFn::Gelu, z).unwrap_or(1.0)
        })
        .collect();
    let (dnormed2, dfc1, dfc1_bias) =
        dense_backward(&normed2, c, &w[slot::FC1_KERNEL], &dz1, g.mlp);
    let (dx1_norm, dgamma2, dbeta2) =
        normalize_backward(layout, &w[slot::NORM2_GAMMA], &x1, &stats2, &dnormed2);
    let dx1: Vec<f32> = dy.iter().zip(&dx1_norm).map(|(a, b)| a + b).collect();
    // The attention branch, window by window.
    let d = window_dims(&g);
    let weights = attention_weights(w, c);
    let position = position_bias(&g, &w[slot::BIAS_TABLE], &w[slot::INDEX]);
    let mut grads = super::attention::AttentionGrads {
        query: Vec::new(),
        value: Vec::new(),
        key: Vec::new(),
        weights: weights.iter().map(|p| vec![0.0; p.len()]).collect(),
        score_bias: vec![0.0; g.heads * n * n],
    };
    let mut dnormed1 = vec![0.0; x.len()];
    for item in 0..batch {
        let base = item * l * c;
        for win in 0..g.windows() {
            let xw = gather_window(&g, &normed1[base..base + l * c], win);
            let dyw = gather_window(&g, &dx1[base..base + l * c], win);
            let bias = window_bias(&g, &position, &w[slot::MASK], win);
            let terms = ScoreTerms {
                scale: op.query_scale(),
                bias: Some(&bias),
            };
            super::attention::attend_backward(
                &d, &xw, &xw, &xw, &weights, terms, None, &dyw, &mut grads,
            );
            for t in 0..n {
                let p = base + g.source(win, t) * c;
                for j in 0..c {
                    dnormed1[p + j] +=
                        grads.query[t * c + j] + grads.key[t * c + j] + grads.value[t * c + j];
                }
            }
        }
    }
    let (dx_norm, dgamma1, dbeta1) =
        normalize_backward(layout, &w[slot::NORM1_GAMMA], x, &stats1, &dnormed1);
    let input: Vec<f32> = dx1.iter().zip(&dx_norm).map(|(a, b)| a + b).collect();
    // The eight attention gradients back into the fused qkv kernel's columns.
    let mut dqkv = vec![0.0; c * 3 * c];
    let mut dqkv_bias = vec![0.0; 3 * c];
    for s in 0..3 {
        for i in 0..c {
            dqkv[i * 3 * c + s * c..i * 3 * c + (s + 1) * c]
                .copy_from_slice(&grads.weights[2 * s][i * c..(i + 1) * c]);
        }
        dqkv_bias[s * c..(s + 1) * c].copy_from_slice(&grads.weights[2 * s + 1]);
    }
    // Each bias table row collects the score gradients of the pairs that index it.
    let mut dtable = vec![0.0; w[slot::BIAS_TABLE].len()];
    for h in 0..g.heads {
        for (k, &row) in w[slot::INDEX].iter().enumerate().take(n * n) {
            dtable[row as usize * g.heads + h] += grads.score_bias[h * n * n + k];
        }
    }
    let mut it = grads.weights.into_iter().skip(6);
    let (dproj, dproj_bias) = (it.next(), it.next());
    SwinGrads {
        input,
        weights: vec![
            Some(dgamma1),
            Some(dbeta1),
            Some(dtable),
            Some(dqkv),
            Some(dqkv_bias),
            dproj,
            dproj_bias,
            Some(dgamma2),
            Some(dbeta2),
            Some(dfc1),
            Some(dfc1_bias),
            Some(dfc2),
            Some(dfc2_bias),
            None,
            None,
        ],
    }
}

/// The backward of [`patch_expanding`]: `(dx, dkernel)`.
pub fn patch_expanding_backward(
    op: &PatchExpanding,
    x: &[f32],
    c: usize,
    kernel: &[f32],
    dy: &[f32],
    batch: usize,
) -> (Vec<f32>, Vec<f32>) {
    let (grid, r, oc) = expanding_sizes(op);
    use crate::train::layers::dense_backward;
    let dconv = depth_to_space(dy, grid, r, oc, batch, true);
    let (dx, dk, _) = dense_backward(x, c, kernel, &dconv, r * r * oc);
    (dx, dk)
}
