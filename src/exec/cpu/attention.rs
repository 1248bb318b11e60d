//! MultiHeadAttention, patch_extract and patch_embedding on the CPU (the trainer's forward and
//! backward passes call these too).

use super::gemm::{matmul, strided_product};
use super::kernels::exp;
use crate::ir::ops::AttentionDims;
use rayon::prelude::*;

/// Keras scales the projected queries by `1 / sqrt(key_dim)` (a Python float, cast to f32).
pub fn query_scale(key_dim: usize) -> f32 {
    (1.0 / (key_dim.max(1) as f64).sqrt()) as f32
}

/// `y[r, u] = bias[u] + sum_i x[r, i] w[i, u]` for `rows` rows.
fn project(x: &[f32], rows: usize, n_in: usize, w: &[f32], bias: &[f32], units: usize) -> Vec<f32> {
    let mut y = vec![0.0; rows * units];
    matmul(rows, units, n_in, x, w, &mut y, false);
    for row in y.chunks_exact_mut(units.max(1)) {
        for (v, b) in row.iter_mut().zip(bias) {
            *v += b;
        }
    }
    y
}

/// `values` folded by `f` in 8 interleaved lanes, then the lanes in order: independent chains
/// that vectorize (exact for max; for a sum, another rounding order than one chain's, which
/// TensorFlow's reductions do not follow either).
fn lanes(values: &[f32], init: f32, f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut acc = [init; 8];
    let mut chunks = values.chunks_exact(8);
    for chunk in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(chunk) {
            *a = f(*a, v);
        }
    }
    let tail = chunks.remainder().iter().fold(init, |a, &v| f(a, v));
    acc.iter().fold(tail, |a, &v| f(a, v))
}

/// Softmax of each row of `s` (`cols` values per row), in place, as Keras's: `exp(x - max)`
/// over its sum. Rows on all cores when there are many values.
pub(crate) fn softmax_rows(s: &mut [f32], cols: usize) {
    let row_softmax = |row: &mut [f32]| {
        let max = lanes(row, f32::NEG_INFINITY, f32::max);
        for v in row.iter_mut() {
            *v = exp(*v - max);
        }
        let sum = lanes(row, 0.0, |a, b| a + b);
        for v in row.iter_mut() {
            *v /= sum;
        }
    };
    if s.len() >= 1 << 15 {
        s.par_chunks_exact_mut(cols.max(1)).for_each(row_softmax);
    } else {
        s.chunks_exact_mut(cols.max(1)).for_each(row_softmax);
    }
}

/// How the scores are formed: `q k^T` with `q` scaled by `scale` after its projection, plus
/// `bias` (`[heads, tq, tv]`) before the softmax. MultiHeadAttention: [`ScoreTerms::keras`];
/// Swin's window attention adds its relative position bias and shifted-window mask.
#[derive(Debug, Clone, Copy)]
pub struct ScoreTerms<'a> {
    pub scale: f32,
    pub bias: Option<&'a [f32]>,
}

impl ScoreTerms<'_> {
    /// MultiHeadAttention's: `1 / sqrt(key_dim)`, no bias.
    pub fn keras(d: &AttentionDims) -> Self {
        ScoreTerms {
            scale: query_scale(d.key_dim),
            bias: None,
        }
    }
}

/// One item's projected queries (scaled), keys and values, and the attention weights of each
/// head (`[heads, tq, tv]`): what the output and the backward pass are computed from.
pub struct AttentionItem {
    pub q: Vec<f32>,
    pub k: Vec<f32>,
    pub v: Vec<f32>,
    pub p: Vec<f32>,
    /// The heads' attended values, `[tq, heads * value_dim]`.
    pub o: Vec<f32>,
}

/// `w`: `[Wq, bq, Wk, bk, Wv, bv, Wo, bo]` in Keras's layouts (the kernels `[E, heads, dim]` are
/// `[E, heads * dim]` row-major); `query`, `value`, `key` are one item each. `drop`: training's
/// dropout of the attention weights (0 or `1 / (1 - rate)` per weight, `[heads, tq, tv]`),
/// applied after the softmax as Keras applies it; `p` keeps the weights before it.
pub fn attend(
    d: &AttentionDims,
    query: &[f32],
    value: &[f32],
    key: &[f32],
    w: &[Vec<f32>],
    terms: ScoreTerms,
    drop: Option<&[f32]>,
) -> AttentionItem {
    let (hk, hv) = (d.hk(), d.hv());
    let mut q = project(query, d.tq, d.eq, &w[0], &w[1], hk);
    q.iter_mut().for_each(|x| *x *= terms.scale);
    let k = project(key, d.tv, d.ek, &w[2], &w[3], hk);
    let v = project(value, d.tv, d.ev, &w[4], &w[5], hv);
    let mut p = vec![0.0; d.heads * d.tq * d.tv];
    let mut o = vec![0.0; d.tq * hv];
    // On all cores when a head's products are large enough (as `matmul` decides).
    let parallel = |m: usize, n: usize, k: usize| (m as u64) * (n as u64) * (k as u64) >= 1 << 18;
    for h in 0..d.heads {
        let scores = &mut p[h * d.tq * d.tv..(h + 1) * d.tq * d.tv];
        // scores[t, u] = sum_j q[t, h, j] k[u, h, j]
        strided_product(
            (d.tq, d.tv, d.key_dim),
            (&q[h * d.key_dim..], hk, 1),
            (&k[h * d.key_dim..], 1, hk),
            (scores, d.tv, 1),
            false,
            parallel(d.tq, d.tv, d.key_dim),
        );
        if let Some(bias) = terms.bias {
            let bias = &bias[h * d.tq * d.tv..(h + 1) * d.tq * d.tv];
            scores.iter_mut().zip(bias).for_each(|(s, b)| *s += b);
        }
        softmax_rows(scores, d.tv);
        let dropped: Vec<f32>;
        let weights: &[f32] = match drop {
            Some(mask) => {
                let mask = &mask[h * d.tq * d.tv..(h + 1) * d.tq * d.tv];
                dropped = scores.iter().zip(mask).map(|(p, m)| p * m).collect();
                &dropped
            }
            None => scores,
        };
        // o[t, h, j] = sum_u weights[t, u] v[u, h, j]
        strided_product(
            (d.tq, d.value_dim, d.tv),
            (weights, d.tv, 1),
            (&v[h * d.value_dim..], hv, 1),
            (&mut o[h * d.value_dim..], hv, 1),
            false,
            parallel(d.tq, d.value_dim, d.tv),
        );
    }
    AttentionItem { q, k, v, p, o }
}

/// MultiHeadAttention over a batch: `out` is `[batch, tq, eo]`; `drop` is training's dropout
/// mask of every item's attention weights (`[batch, heads, tq, tv]`).
#[allow(clippy::too_many_arguments)]
pub fn multi_head_attention(
    d: &AttentionDims,
    query: &[f32],
    value: &[f32],
    key: &[f32],
    w: &[Vec<f32>],
    drop: Option<&[f32]>,
    out: &mut [f32],
    batch: usize,
) {
    let (q_len, v_len, k_len, y_len) = (d.tq * d.eq, d.tv * d.ev, d.tv * d.ek, d.tq * d.eo);
    let weights = d.heads * d.tq * d.tv;
    for n in 0..batch {
        let item = attend(
            d,
            &query[n * q_len..(n + 1) * q_len],
            &value[n * v_len..(n + 1) * v_len],
            &key[n * k_len..(n + 1) * k_len],
            w,
            ScoreTerms::keras(d),
            drop.map(|m| &m[n * weights..(n + 1) * weights]),
        );
        let y = project(&item.o, d.tq, d.hv(), &w[6], &w[7], d.eo);
        out[n * y_len..(n + 1) * y_len].copy_from_slice(&y);
    }
}

/// The gradients of one item's attention with respect to its inputs and the eight weights.
pub struct AttentionGrads {
    pub query: Vec<f32>,
    pub value: Vec<f32>,
    pub key: Vec<f32>,
    /// `[dWq, dbq, dWk, dbk, dWv, dbv, dWo, dbo]`.
    pub weights: Vec<Vec<f32>>,
    /// The gradient of the scores' bias (`[heads, tq, tv]`), added to where the terms have one.
    pub score_bias: Vec<f32>,
}

/// `a^T b` for `a: [rows, m]`, `b: [rows, n]`, added to `acc: [m, n]`.
fn add_at_b(acc: &mut [f32], a: &[f32], b: &[f32], rows: usize, m: usize, n: usize) {
    strided_product((m, n, rows), (a, 1, m), (b, n, 1), (acc, n, 1), true, false);
}

/// `a b^T` for `a: [rows, n]`, `b: [m, n]`: `[rows, m]`.
fn a_bt(a: &[f32], b: &[f32], rows: usize, n: usize, m: usize) -> Vec<f32> {
    let mut y = vec![0.0; rows * m];
    strided_product(
        (rows, m, n),
        (a, n, 1),
        (b, 1, n),
        (&mut y, m, 1),
        false,
        false,
    );
    y
}

fn add_column_sums(acc: &mut [f32], g: &[f32], cols: usize) {
    for row in g.chunks_exact(cols.max(1)) {
        for (a, v) in acc.iter_mut().zip(row) {
            *a += v;
        }
    }
}

/// Backward of one item: `dy` is `[tq, eo]`; weight gradients are added to `grads.weights`;
/// `drop` is the forward pass's dropout mask of this item's attention weights.
#[allow(clippy::too_many_arguments)]
pub fn attend_backward(
    d: &AttentionDims,
    query: &[f32],
    value: &[f32],
    key: &[f32],
    w: &[Vec<f32>],
    terms: ScoreTerms,
    drop: Option<&[f32]>,
    dy: &[f32],
    grads: &mut AttentionGrads,
) {
    let (hk, hv) = (d.hk(), d.hv());
    let item = attend(d, query, value, key, w, terms, drop);
    // Output projection.
    add_at_b(&mut grads.weights[6], &item.o, dy, d.tq, hv, d.eo);
    add_column_sums(&mut grads.weights[7], dy, d.eo);
    let d_o = a_bt(dy, &w[6], d.tq, d.eo, hv);
    let (mut dq, mut dk, mut dv) = (
        vec![0.0; d.tq * hk],
        vec![0.0; d.tv * hk],
        vec![0.0; d.tv * hv],
    );
    for h in 0..d.heads {
        let p = &item.p[h * d.tq * d.tv..(h + 1) * d.tq * d.tv];
        let mask = drop.map(|m| &m[h * d.tq * d.tv..(h + 1) * d.tq * d.tv]);
        // The weights the values were attended with (after dropout).
        let used: Vec<f32> = match mask {
            Some(m) => p.iter().zip(m).map(|(p, m)| p * m).collect(),
            None => p.to_vec(),
        };
        // dp[t, u] = sum_j do[t, h, j] v[u, h, j]
        let mut dp = vec![0.0; d.tq * d.tv];
        strided_product(
            (d.tq, d.tv, d.value_dim),
            (&d_o[h * d.value_dim..], hv, 1),
            (&item.v[h * d.value_dim..], 1, hv),
            (&mut dp, d.tv, 1),
            false,
            false,
        );
        // dv[u, h, j] = sum_t used[t, u] do[t, h, j]
        strided_product(
            (d.tv, d.value_dim, d.tq),
            (&used, 1, d.tv),
            (&d_o[h * d.value_dim..], hv, 1),
            (&mut dv[h * d.value_dim..], hv, 1),
            false,
            false,
        );
        // Through the dropout to the softmax's output, then the softmax backward:
        // ds = p (dp - sum_u dp p).
        if let Some(m) = mask {
            dp.iter_mut().zip(m).for_each(|(g, m)| *g *= m);
        }
        for (dp_row, p_row) in dp.chunks_exact_mut(d.tv).zip(p.chunks_exact(d.tv)) {
            let dot: f32 = dp_row.iter().zip(p_row).map(|(a, b)| a * b).sum();
            for (g, &pv) in dp_row.iter_mut().zip(p_row) {
                *g = pv * (*g - dot);
            }
        }
        if terms.bias.is_some() {
            let acc = &mut grads.score_bias[h * d.tq * d.tv..(h + 1) * d.tq * d.tv];
            acc.iter_mut().zip(&dp).for_each(|(a, g)| *a += g);
        }
        // dq[t, h, :] = ds k_h; dk[u, h, :] = ds^T q_h (q already scaled).
        strided_product(
            (d.tq, d.key_dim, d.tv),
            (&dp, d.tv, 1),
            (&item.k[h * d.key_dim..], hk, 1),
            (&mut dq[h * d.key_dim..], hk, 1),
            false,
            false,
        );
        strided_product(
            (d.tv, d.key_dim, d.tq),
            (&dp, 1, d.tv),
            (&item.q[h * d.key_dim..], hk, 1),
            (&mut dk[h * d.key_dim..], hk, 1),
            false,
            false,
        );
    }
    // The query was scaled after its projection.
    dq.iter_mut().for_each(|g| *g *= terms.scale);
    add_at_b(&mut grads.weights[0], query, &dq, d.tq, d.eq, hk);
    add_column_sums(&mut grads.weights[1], &dq, hk);
    add_at_b(&mut grads.weights[2], key, &dk, d.tv, d.ek, hk);
    add_column_sums(&mut grads.weights[3], &dk, hk);
    add_at_b(&mut grads.weights[4], value, &dv, d.tv, d.ev, hv);
    add_column_sums(&mut grads.weights[5], &dv, hv);
    grads.query = a_bt(&dq, &w[0], d.tq, hk, d.eq);
    grads.key = a_bt(&dk, &w[2], d.tv, hk, d.ek);
    grads.value = a_bt(&dv, &w[4], d.tv, hv, d.ev);
}

/// patch_extract: `out[n, i * rows + j, (a * p + b) * c + ch] = x[n, i * p + a, j * p + b, ch]`
/// for the `rows x rows` whole patches of side `p` (extra rows and columns are not read).
pub fn patch_extract(
    x: &[f32],
    [h, w, c]: [usize; 3],
    p: usize,
    rows: usize,
    out: &mut [f32],
    batch: usize,
) {
    let patch = p * p * c;
    for n in 0..batch {
        let image = &x[n * h * w * c..(n + 1) * h * w * c];
        let tokens = &mut out[n * rows * rows * patch..(n + 1) * rows * rows * patch];
        for (t, token) in tokens.chunks_exact_mut(patch.max(1)).enumerate() {
            let (i, j) = (t / rows, t % rows);
            for a in 0..p {
                let start = ((i * p + a) * w + j * p) * c;
                token[a * p * c..(a + 1) * p * c].copy_from_slice(&image[start..start + p * c]);
            }
        }
    }
}

/// The backward of [`patch_extract`]: each token's values back to their pixels (the pixels no
/// patch reads get zero).
pub fn patch_extract_backward(
    dy: &[f32],
    [h, w, c]: [usize; 3],
    p: usize,
    rows: usize,
    batch: usize,
) -> Vec<f32> {
    let mut dx = vec![0.0; batch * h * w * c];
    let patch = p * p * c;
    for n in 0..batch {
        let image = &mut dx[n * h * w * c..(n + 1) * h * w * c];
        let tokens = &dy[n * rows * rows * patch..(n + 1) * rows * rows * patch];
        for (t, token) in tokens.chunks_exact(patch.max(1)).enumerate() {
            let (i, j) = (t / rows, t % rows);
            for a in 0..p {
                let start = ((i * p + a) * w + j * p) * c;
                image[start..start + p * c].copy_from_slice(&token[a * p * c..(a + 1) * p * c]);
            }
        }
    }
    dx
}

/// patch_embedding: `out[n, t, :] = x[n, t, :] kernel + bias + positions[t, :]`.
#[allow(clippy::too_many_arguments)]
pub fn patch_embedding(
    x: &[f32],
    tokens: usize,
    n_in: usize,
    kernel: &[f32],
    bias: &[f32],
    positions: &[f32],
    units: usize,
    out: &mut [f32],
    batch: usize,
) {
    let rows = batch * tokens;
    matmul(rows, units, n_in, x, kernel, out, false);
    for (r, row) in out.chunks_exact_mut(units.max(1)).enumerate() {
        let pos = &positions[(r % tokens.max(1)) * units..][..units];
        for ((v, b), q) in row.iter_mut().zip(bias).zip(pos) {
            *v += b + q;
        }
    }
}
