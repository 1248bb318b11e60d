//! keras-unet-collection's Swin-UNET layers (Cao et al. 2021): `SwinTransformerBlock`
//! (window attention with a relative position bias, shifted windows, an MLP, two residuals),
//! `patch_merging` (the encoder's 2x down-sampling of tokens) and `patch_expanding` (the
//! decoder's up-sampling). Tokens are `(patches, features)`, the patches a `num_patch` grid in
//! row-major order, as the classes reshape them.

use super::{product, LayerKind, Shape, ShapeError, WeightSpec};
use crate::ir::value::{ArgReader, Value, MAX_DIM};
use serde_json::{json, Value as Json};

const KUC_TRANSFORMER: &[&str] = &["keras_unet_collection.transformer_layers"];

/// `(patches, features)` tokens, or the layer's E-rank error.
fn tokens(inputs: &[Shape], class: &str) -> Result<(i64, i64), ShapeError> {
    match inputs.first().map(|s| s.as_slice()) {
        Some(&[t, c]) => Ok((t, c)),
        _ => Err(ShapeError::new(
            "E-rank",
            format!("{class} takes tokens {{0}} as (patches, features)"),
            "not tokens",
        )),
    }
}

/// The E-shape error of a `num_patch` grid that is not the input's patch count.
fn grid_mismatch(class: &str, [h, w]: [i64; 2], t: i64) -> ShapeError {
    ShapeError::new(
        "E-shape",
        format!(
            "{class} reshapes {{0}}'s {t} patches as its num_patch grid {h}x{w} = {}; they must \
             be as many",
            h * w
        ),
        "patch count differs from num_patch",
    )
}

/// Where one window's tokens come from: token `t` of window `win` of a `[h, w]` grid cut into
/// `ws x ws` windows after the cyclic shift by `-shift` is patch `(row, col)`; the block's output
/// for that token goes back to the same patch (the reverse shift undoes the first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SwinGeometry {
    pub h: usize,
    pub w: usize,
    pub ws: usize,
    pub shift: usize,
    pub channels: usize,
    pub heads: usize,
    pub mlp: usize,
}

impl SwinGeometry {
    /// Tokens per window.
    pub fn window_tokens(&self) -> usize {
        self.ws * self.ws
    }

    /// Windows per item.
    pub fn windows(&self) -> usize {
        (self.h / self.ws.max(1)) * (self.w / self.ws.max(1))
    }

    /// f32 scratch of the CUDA block per item: nine `[L, C]` buffers (input, normalised,
    /// windows, q, k, v, attended, projected, first residual), the attention weights and the
    /// MLP's hidden layer.
    pub fn scratch_floats(&self) -> usize {
        let (l, n) = (self.h * self.w, self.window_tokens());
        9 * l * self.channels + self.windows() * self.heads * n * n + l * self.mlp
    }

    pub fn head_dim(&self) -> usize {
        self.channels / self.heads.max(1)
    }

    /// The patch index (`row * w + col`) of token `t` of window `win`.
    pub fn source(&self, win: usize, t: usize) -> usize {
        let per_row = self.w / self.ws.max(1);
        let (wy, wx) = (win / per_row.max(1), win % per_row.max(1));
        let (a, b) = (t / self.ws.max(1), t % self.ws.max(1));
        let row = (wy * self.ws + a + self.shift) % self.h.max(1);
        let col = (wx * self.ws + b + self.shift) % self.w.max(1);
        row * self.w + col
    }
}

/// keras-unet-collection's `SwinTransformerBlock`:
/// `x + attn(norm1(x))` then `y + mlp(norm2(y))`, the attention within `window_size` windows of
/// the `num_patch` grid (cyclically shifted by `shift_size` first, with a mask between the
/// wrapped parts), plus a learned bias per head and relative position; the MLP is
/// `Dense(num_mlp)`, GELU, `Dense(dim)`. Dropouts are applied in training only.
#[derive(Debug, Clone, PartialEq)]
pub struct SwinTransformerBlock {
    pub dim: i64,
    pub num_patch: [i64; 2],
    pub num_heads: i64,
    pub window_size: i64,
    pub shift_size: i64,
    pub num_mlp: i64,
    pub qkv_bias: bool,
    /// `None` (or 0, as Python's `or` reads it): `head_dim ** -0.5`.
    pub qk_scale: Option<f64>,
    pub mlp_drop: f64,
    pub attn_drop: f64,
    pub proj_drop: f64,
    pub drop_path_prob: f64,
}

/// LayerNormalization's epsilon in the class.
pub const SWIN_NORM_EPSILON: f32 = 1e-5;
/// What the shifted-window mask adds between tokens from different regions.
pub const SWIN_MASK_VALUE: f32 = -100.0;

impl SwinTransformerBlock {
    pub fn geometry(&self) -> SwinGeometry {
        let u = |v: i64| v.max(0) as usize;
        SwinGeometry {
            h: u(self.num_patch[0]),
            w: u(self.num_patch[1]),
            ws: u(self.window_size),
            shift: u(self.shift_size),
            channels: u(self.dim),
            heads: u(self.num_heads),
            mlp: u(self.num_mlp),
        }
    }

    /// The epsilon of the block's two LayerNormalizations.
    pub fn norm_epsilon(&self) -> f32 {
        SWIN_NORM_EPSILON
    }

    /// The query scale as the class computes it (`qk_scale or head_dim ** -0.5`, cast to f32
    /// when it multiplies the queries).
    pub fn query_scale(&self) -> f32 {
        match self.qk_scale {
            Some(s) if s != 0.0 => s as f32,
            _ => (self.geometry().head_dim().max(1) as f64).powf(-0.5) as f32,
        }
    }

    /// `attn_pos_ind`: the row of the bias table for each pair of a window's tokens,
    /// `(dy + ws - 1) * (2 ws - 1) + (dx + ws - 1)`, `[N, N]`.
    pub fn relative_position_index(&self) -> Vec<f32> {
        let ws = self.geometry().ws as i64;
        let n = ws * ws;
        let mut index = Vec::with_capacity((n * n).max(0) as usize);
        for i in 0..n {
            for j in 0..n {
                let dy = i / ws - j / ws + ws - 1;
                let dx = i % ws - j % ws + ws - 1;
                index.push((dy * (2 * ws - 1) + dx) as f32);
            }
        }
        index
    }

    /// `attn_mask` of a shifted block, `[windows, N, N]`: `-100` between two tokens of a window
    /// that come from different regions of the shifted grid (the class labels nine regions
    /// by the slices `[0, -ws)`, `[-ws, -shift)`, `[-shift, end)` of each side), 0 otherwise;
    /// empty without a shift.
    pub fn attention_mask(&self) -> Vec<f32> {
        let g = self.geometry();
        if g.shift == 0 || g.ws == 0 {
            return Vec::new();
        }
        let region = |i: usize, n: usize| {
            if i + g.ws < n {
                0
            } else if i + g.shift < n {
                1
            } else {
                2
            }
        };
        let n = g.window_tokens();
        let per_row = g.w / g.ws;
        let mut mask = Vec::with_capacity(g.windows() * n * n);
        for win in 0..g.windows() {
            // The region of each token of the window, before any shift (the class labels the
            // unshifted grid and partitions it directly).
            let label = |t: usize| {
                let row = (win / per_row) * g.ws + t / g.ws;
                let col = (win % per_row) * g.ws + t % g.ws;
                region(row, g.h) * 3 + region(col, g.w)
            };
            for i in 0..n {
                for j in 0..n {
                    mask.push(if label(i) == label(j) {
                        0.0
                    } else {
                        SWIN_MASK_VALUE
                    });
                }
            }
        }
        mask
    }
}

impl LayerKind for SwinTransformerBlock {
    const CLASS: &'static str = "SwinTransformerBlock";
    const POSITIONAL: &'static [&'static str] = &[
        "dim",
        "num_patch",
        "num_heads",
        "window_size",
        "shift_size",
        "num_mlp",
        "qkv_bias",
        "qk_scale",
        "mlp_drop",
        "attn_drop",
        "proj_drop",
        "drop_path_prob",
    ];
    const KNOWN: &'static [&'static str] = Self::POSITIONAL;
    const IMPORTED_CONFIG: &'static [&'static str] = Self::POSITIONAL;
    const KERAS_MODULES: &'static [&'static str] = KUC_TRANSFORMER;
    const NAME_IS_PREFIX: bool = true;

    fn parse(r: &mut ArgReader) -> Self {
        let example =
            "swin_transformer_block(dim: 32, num_patch: (16, 16), num_heads: 4, window_size: 4)";
        let dim = r.size("dim", example).unwrap_or(1).min(MAX_DIM);
        if !r.has("num_patch") {
            r.missing("num_patch", example);
        }
        let num_patch = r.pair_or("num_patch", 1, MAX_DIM, [1, 1]);
        let num_heads = r.size("num_heads", example).unwrap_or(1).min(MAX_DIM);
        let window_size = r.int_or("window_size", 1, 4096, 7);
        // The class asserts `shift_size < window_size`.
        let shift_size = r.int_or("shift_size", 0, window_size - 1, 0);
        let qk_scale = match r.peek("qk_scale") {
            None | Some(Value::None) => {
                r.take_arg("qk_scale");
                None
            }
            Some(_) => Some(r.float_or("qk_scale", 0.0, 1e6, 0.0)),
        };
        let drop = |r: &mut ArgReader, name: &str| r.float_or(name, 0.0, 1.0, 0.0);
        SwinTransformerBlock {
            dim,
            num_patch,
            num_heads,
            window_size,
            shift_size,
            num_mlp: r.int_or("num_mlp", 1, MAX_DIM, 1024),
            qkv_bias: r.bool_or("qkv_bias", true),
            qk_scale,
            mlp_drop: drop(r, "mlp_drop"),
            attn_drop: drop(r, "attn_drop"),
            proj_drop: drop(r, "proj_drop"),
            drop_path_prob: drop(r, "drop_path_prob"),
        }
    }

    fn infer(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        let class = Self::CLASS;
        let (t, c) = tokens(inputs, class)?;
        let [h, w] = self.num_patch;
        if t != h * w {
            return Err(grid_mismatch(class, self.num_patch, t));
        }
        if c != self.dim {
            return Err(ShapeError::new(
                "E-shape",
                format!(
                    "{class} of dim {} adds its attention and MLP back to {{0}}'s {c} features; \
                     dim must be the input's features",
                    self.dim
                ),
                "features differ from dim",
            ));
        }
        if c % self.num_heads != 0 {
            return Err(ShapeError::new(
                "E-shape",
                format!(
                    "{class} splits {c} features into {} heads; they must divide evenly",
                    self.num_heads
                ),
                "features not divisible by num_heads",
            ));
        }
        let ws = self.window_size;
        if ws > h.min(w) {
            return Err(ShapeError::new(
                "E-shape",
                format!(
                    "{class}'s window_size {ws} is larger than its {h}x{w} patch grid; the class \
                     then shrinks the block's window but not its attention's position table, \
                     and Keras fails; use a window of at most {}",
                    h.min(w)
                ),
                "window larger than the grid",
            ));
        }
        if h % ws != 0 || w % ws != 0 {
            return Err(ShapeError::new(
                "E-shape",
                format!(
                    "{class} cuts its {h}x{w} patch grid into {ws}x{ws} windows; both sides \
                     must be multiples of window_size (Keras's reshape fails otherwise)"
                ),
                "grid not divisible into windows",
            ));
        }
        let g = self.geometry();
        let scores = (g.windows() as u64)
            .saturating_mul((g.window_tokens() * g.window_tokens()) as u64)
            .saturating_mul(g.heads as u64);
        if scores > 1 << 28 {
            return Err(ShapeError::new(
                "E-limit",
                format!(
                    "{class} with {} windows of {} tokens and {} heads is larger than unetc \
                     computes (2^28 attention weights per item)",
                    g.windows(),
                    g.window_tokens(),
                    g.heads
                ),
                "too large",
            ));
        }
        Ok(vec![t, c])
    }

    fn weights(&self, inputs: &[Shape]) -> Vec<WeightSpec> {
        let c = inputs.first().and_then(|s| s.last()).copied().unwrap_or(0);
        let g = self.geometry();
        let (n, table) = (g.window_tokens() as i64, (2 * g.ws as i64 - 1).pow(2));
        let spec = |name: &'static str, shape: Vec<i64>, initializer: &str| WeightSpec {
            name,
            shape,
            trainable: true,
            initializer: initializer.into(),
        };
        // Keras's order: the trainable variables of norm1, the window attention (its bias table
        // first), norm2 and the MLP; then the block's mask and the attention's index.
        let mut w = vec![
            spec("norm1/gamma", vec![c], "ones"),
            spec("norm1/beta", vec![c], "zeros"),
            spec("attn_pos", vec![table, self.num_heads], "zeros"),
            spec("attn_qkv/kernel", vec![c, 3 * self.dim], "glorot_uniform"),
        ];
        if self.qkv_bias {
            w.push(spec("attn_qkv/bias", vec![3 * self.dim], "zeros"));
        }
        w.extend([
            spec("attn_proj/kernel", vec![c, self.dim], "glorot_uniform"),
            spec("attn_proj/bias", vec![self.dim], "zeros"),
            spec("norm2/gamma", vec![c], "ones"),
            spec("norm2/beta", vec![c], "zeros"),
            spec("mlp_0/kernel", vec![c, self.num_mlp], "glorot_uniform"),
            spec("mlp_0/bias", vec![self.num_mlp], "zeros"),
            spec(
                "mlp_1/kernel",
                vec![self.num_mlp, self.dim],
                "glorot_uniform",
            ),
            spec("mlp_1/bias", vec![self.dim], "zeros"),
        ]);
        let constant = |name: &'static str, shape: Vec<i64>| WeightSpec {
            name,
            shape,
            trainable: false,
            initializer: "constant".into(),
        };
        if g.shift > 0 {
            w.push(constant("attn_mask", vec![g.windows() as i64, n, n]));
        }
        w.push(constant("attn_pos_ind", vec![n, n]));
        w
    }

    fn constant_weight(&self, weight: &str) -> Option<Vec<f32>> {
        match weight {
            "attn_mask" => Some(self.attention_mask()),
            "attn_pos_ind" => Some(self.relative_position_index()),
            _ => None,
        }
    }

    fn value_bytes(&self, weight: &str) -> u64 {
        // Keras keeps the mask in float64 and the index in int64.
        match weight {
            "attn_mask" | "attn_pos_ind" => 8,
            _ => 4,
        }
    }

    fn macs(&self, inputs: &[Shape], _output: &Shape) -> u64 {
        let Ok((t, c)) = tokens(inputs, Self::CLASS) else {
            return 0;
        };
        let g = self.geometry();
        let (t, c, n, m) = (
            t.max(0) as u64,
            c.max(0) as u64,
            g.window_tokens() as u64,
            g.mlp as u64,
        );
        // qkv, scores, weighted values, projection, the MLP's two layers.
        t * c * 3 * c + 2 * t * n * c + t * c * c + 2 * t * c * m
    }

    fn config(&self) -> Json {
        json!({
            "dim": self.dim,
            "num_patch": self.num_patch,
            "num_heads": self.num_heads,
            "window_size": self.window_size,
            "shift_size": self.shift_size,
            "num_mlp": self.num_mlp,
            "qkv_bias": self.qkv_bias,
            "qk_scale": self.qk_scale,
            "mlp_drop": self.mlp_drop,
            "attn_drop": self.attn_drop,
            "proj_drop": self.proj_drop,
            "drop_path_prob": self.drop_path_prob,
        })
    }
}

/// keras-unet-collection's `patch_merging`: the `num_patch` grid's 2x2 neighbours side by side
/// (`x[0::2, 0::2]`, `x[1::2, 0::2]`, `x[0::2, 1::2]`, `x[1::2, 1::2]` concatenated on the
/// features), then `Dense(2 * embed_dim, use_bias=False)`.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchMerging {
    pub num_patch: [i64; 2],
    pub embed_dim: i64,
}

impl LayerKind for PatchMerging {
    const CLASS: &'static str = "patch_merging";
    const POSITIONAL: &'static [&'static str] = &["num_patch", "embed_dim"];
    const KNOWN: &'static [&'static str] = &["num_patch", "embed_dim"];
    const IMPORTED_CONFIG: &'static [&'static str] = &["num_patch", "embed_dim"];
    const KERAS_MODULES: &'static [&'static str] = KUC_TRANSFORMER;
    const NAME_IS_PREFIX: bool = true;

    fn parse(r: &mut ArgReader) -> Self {
        let example = "patch_merging(num_patch: (16, 16), embed_dim: 32)";
        if !r.has("num_patch") {
            r.missing("num_patch", example);
        }
        PatchMerging {
            num_patch: r.pair_or("num_patch", 1, MAX_DIM, [2, 2]),
            embed_dim: r.size("embed_dim", example).unwrap_or(1).min(MAX_DIM),
        }
    }

    fn infer(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        let (t, _) = tokens(inputs, Self::CLASS)?;
        let [h, w] = self.num_patch;
        if t != h * w {
            return Err(grid_mismatch(Self::CLASS, self.num_patch, t));
        }
        if h % 2 != 0 || w % 2 != 0 {
            return Err(ShapeError::new(
                "E-shape",
                format!(
                    "patch_merging halves its {h}x{w} patch grid; both sides must be even \
                     (the class asserts it)"
                ),
                "odd patch grid",
            ));
        }
        Ok(vec![t / 4, 2 * self.embed_dim])
    }

    fn weights(&self, inputs: &[Shape]) -> Vec<WeightSpec> {
        let c = inputs.first().and_then(|s| s.last()).copied().unwrap_or(0);
        vec![WeightSpec {
            name: "linear_trans/kernel",
            shape: vec![4 * c, 2 * self.embed_dim],
            trainable: true,
            initializer: "glorot_uniform".into(),
        }]
    }

    fn macs(&self, inputs: &[Shape], output: &Shape) -> u64 {
        let c = inputs.first().and_then(|s| s.last()).copied().unwrap_or(0);
        product(output).saturating_mul(4 * c.max(0) as u64)
    }

    fn config(&self) -> Json {
        json!({ "num_patch": self.num_patch, "embed_dim": self.embed_dim })
    }
}

/// keras-unet-collection's `patch_expanding`: the `num_patch` grid through a 1x1
/// `Conv2D(upsample_rate * embed_dim, use_bias=False)`, then `depth_to_space(upsample_rate)`;
/// with `return_vector` reshaped back to tokens of half the input's features (the class's
/// `C // 2`), else the image.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchExpanding {
    pub num_patch: [i64; 2],
    pub embed_dim: i64,
    pub upsample_rate: i64,
    pub return_vector: bool,
}

impl PatchExpanding {
    /// Features per output position: `upsample_rate * embed_dim / upsample_rate^2`.
    pub fn out_channels(&self) -> i64 {
        self.embed_dim / self.upsample_rate.max(1)
    }
}

impl LayerKind for PatchExpanding {
    const CLASS: &'static str = "patch_expanding";
    const POSITIONAL: &'static [&'static str] =
        &["num_patch", "embed_dim", "upsample_rate", "return_vector"];
    const KNOWN: &'static [&'static str] = Self::POSITIONAL;
    const IMPORTED_CONFIG: &'static [&'static str] = Self::POSITIONAL;
    const KERAS_MODULES: &'static [&'static str] = KUC_TRANSFORMER;
    const NAME_IS_PREFIX: bool = true;

    fn parse(r: &mut ArgReader) -> Self {
        let example = "patch_expanding(num_patch: (8, 8), embed_dim: 64, upsample_rate: 2)";
        if !r.has("num_patch") {
            r.missing("num_patch", example);
        }
        let num_patch = r.pair_or("num_patch", 1, MAX_DIM, [1, 1]);
        let embed_dim = r.size("embed_dim", example).unwrap_or(1).min(MAX_DIM);
        let upsample_rate = r.size("upsample_rate", example).unwrap_or(1).min(4096);
        PatchExpanding {
            num_patch,
            embed_dim,
            upsample_rate,
            return_vector: r.bool_or("return_vector", true),
        }
    }

    fn infer(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        let (t, c) = tokens(inputs, Self::CLASS)?;
        let [h, w] = self.num_patch;
        if t != h * w {
            return Err(grid_mismatch(Self::CLASS, self.num_patch, t));
        }
        let (e, r) = (self.embed_dim, self.upsample_rate);
        if (r * e) % (r * r) != 0 {
            return Err(ShapeError::new(
                "E-shape",
                format!(
                    "patch_expanding's depth_to_space({r}) spreads {} features over {r}x{r} \
                     positions; embed_dim {e} must be a multiple of upsample_rate",
                    r * e
                ),
                "embed_dim not divisible by upsample_rate",
            ));
        }
        let out_c = self.out_channels();
        if !self.return_vector {
            return Ok(vec![h * r, w * r, out_c]);
        }
        if out_c != c / 2 {
            return Err(ShapeError::new(
                "E-shape",
                format!(
                    "patch_expanding with return_vector reshapes its {out_c} features per \
                     position as {{0}}'s {c} // 2 = {}; embed_dim / upsample_rate must equal \
                     that (Keras's reshape gives another batch size otherwise)",
                    c / 2
                ),
                "features differ",
            ));
        }
        Ok(vec![t * r * r, c / 2])
    }

    fn weights(&self, inputs: &[Shape]) -> Vec<WeightSpec> {
        let c = inputs.first().and_then(|s| s.last()).copied().unwrap_or(0);
        vec![WeightSpec {
            name: "linear_trans1/kernel",
            shape: vec![1, 1, c, self.upsample_rate * self.embed_dim],
            trainable: true,
            initializer: "glorot_uniform".into(),
        }]
    }

    fn macs(&self, inputs: &[Shape], _output: &Shape) -> u64 {
        let (t, c) = tokens(inputs, Self::CLASS).unwrap_or((0, 0));
        (t.max(0) as u64)
            .saturating_mul(c.max(0) as u64)
            .saturating_mul((self.upsample_rate * self.embed_dim).max(0) as u64)
    }

    fn config(&self) -> Json {
        json!({
            "num_patch": self.num_patch,
            "embed_dim": self.embed_dim,
            "upsample_rate": self.upsample_rate,
            "return_vector": self.return_vector,
        })
    }
}
