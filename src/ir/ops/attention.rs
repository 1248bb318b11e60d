//! Attention: tf.keras's MultiHeadAttention, and keras-unet-collection's patch_extract and
//! patch_embedding (the vision-transformer bottleneck of its TransUNet).
//!
//! Tokens are every axis between the batch and the last: `(T, E)` token lists, or `(H, W, C)`
//! images attended over all their pixels (Keras's default `attention_axes`).

use super::{conv::INITIALIZERS, product, LayerKind, Shape, ShapeError, WeightSpec};
use crate::ir::value::{ArgReader, MAX_DIM};
use serde_json::{json, Value as Json};

/// The sizes one MultiHeadAttention call works with (per item of the batch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionDims {
    /// Query tokens and their features.
    pub tq: usize,
    pub eq: usize,
    /// Key/value tokens, the key's and the value's features.
    pub tv: usize,
    pub ek: usize,
    pub ev: usize,
    pub heads: usize,
    pub key_dim: usize,
    pub value_dim: usize,
    /// Output features.
    pub eo: usize,
}

impl AttentionDims {
    /// Features of all heads' queries (and keys): `heads * key_dim`.
    pub fn hk(&self) -> usize {
        self.heads * self.key_dim
    }

    /// Features of all heads' values: `heads * value_dim`.
    pub fn hv(&self) -> usize {
        self.heads * self.value_dim
    }

    /// f32 values of the projected queries, keys and values, the attended values and the
    /// attention weights, per item.
    pub fn scratch_floats(&self) -> usize {
        self.tq * self.hk()
            + self.tv * self.hk()
            + self.tv * self.hv()
            + self.tq * self.hv()
            + self.heads * self.tq * self.tv
    }
}

/// `split_tokens([16, 8])` is `(16, 8)`; `(H, W, C)` is `(H * W, C)`.
fn split_tokens(shape: &[i64]) -> (usize, usize) {
    match shape.split_last() {
        Some((&last, rest)) => (product(rest) as usize, last.max(0) as usize),
        None => (1, 0),
    }
}

/// tf.keras's MultiHeadAttention, called as `(query, value)` or `(query, value, key)`:
/// `softmax(q k^T / sqrt(key_dim)) v` per head, the heads projected back to the query's
/// features (or `output_shape`).
#[derive(Debug, Clone, PartialEq)]
pub struct MultiHeadAttention {
    pub num_heads: i64,
    pub key_dim: i64,
    /// `None`: `key_dim`.
    pub value_dim: Option<i64>,
    /// Applied to the attention weights in training only.
    pub dropout: f64,
    pub use_bias: bool,
    /// Output features; `None`: the query's.
    pub output_shape: Option<i64>,
    /// As given; `None` or every axis between the batch and the features.
    pub attention_axes: Option<Vec<i64>>,
    pub kernel_initializer: String,
    pub bias_initializer: String,
}

impl MultiHeadAttention {
    pub fn value_dim(&self) -> i64 {
        self.value_dim.unwrap_or(self.key_dim)
    }

    /// The sizes for inputs `[query, value, key?]`.
    pub fn dims(&self, inputs: &[Shape]) -> AttentionDims {
        let (tq, eq) = inputs.first().map_or((0, 0), |s| split_tokens(s));
        let (tv, ev) = inputs.get(1).map_or((0, 0), |s| split_tokens(s));
        let ek = inputs.get(2).map_or(ev, |s| split_tokens(s).1);
        AttentionDims {
            tq,
            eq,
            tv,
            ek,
            ev,
            heads: self.num_heads.max(0) as usize,
            key_dim: self.key_dim.max(0) as usize,
            value_dim: self.value_dim().max(0) as usize,
            eo: self.output_shape.map_or(eq, |o| o.max(0) as usize),
        }
    }
}

impl LayerKind for MultiHeadAttention {
    const CLASS: &'static str = "MultiHeadAttention";
    const REGULARIZED: &'static [(&'static str, &'static str)] = &[];
    const POSITIONAL: &'static [&'static str] = &["num_heads", "key_dim", "value_dim", "dropout"];
    const KNOWN: &'static [&'static str] = &[
        "num_heads",
        "key_dim",
        "value_dim",
        "dropout",
        "use_bias",
        "output_shape",
        "attention_axes",
        "kernel_initializer",
        "bias_initializer",
    ];
    const IMPORTED_CONFIG: &'static [&'static str] = Self::KNOWN;

    fn parse(r: &mut ArgReader) -> Self {
        let example = "multi_head_attention(num_heads: 4, key_dim: 32)";
        let num_heads = r.size("num_heads", example).unwrap_or(1);
        let key_dim = r.size("key_dim", example).unwrap_or(1);
        let value_dim = r.has("value_dim").then(|| r.int("value_dim", 1, MAX_DIM));
        let output_shape = r
            .has("output_shape")
            .then(|| r.int("output_shape", 1, MAX_DIM));
        let attention_axes = r
            .has("attention_axes")
            .then(|| r.int_list("attention_axes", -4, 3));
        MultiHeadAttention {
            num_heads: num_heads.min(MAX_DIM),
            key_dim: key_dim.min(MAX_DIM),
            value_dim: value_dim.flatten(),
            dropout: r.float_or("dropout", 0.0, 1.0, 0.0),
            use_bias: r.bool_or("use_bias", true),
            output_shape: output_shape.flatten(),
            attention_axes,
            kernel_initializer: r.choice(
                "kernel_initializer",
                INITIALIZERS,
                "glorot_uniform",
                None,
            ),
            bias_initializer: r.choice("bias_initializer", INITIALIZERS, "zeros", None),
        }
    }

    fn infer(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        let (query, value) = (&inputs[0], &inputs[1]);
        let key = inputs.get(2).unwrap_or(value);
        if query.len() < 2 {
            return Err(ShapeError::new(
                "E-rank",
                "MultiHeadAttention needs a query {0} with tokens and features, as (tokens, \
                 features) or (height, width, channels)",
                "no token axis",
            ));
        }
        if value.len() != query.len() || key.len() != query.len() {
            return Err(ShapeError::new(
                "E-rank",
                "MultiHeadAttention's query {0}, value {1} and key must have the same rank",
                "ranks differ",
            ));
        }
        if key[..key.len() - 1] != value[..value.len() - 1] {
            return Err(ShapeError::new(
                "E-shape",
                format!(
                    "MultiHeadAttention's value {{1}} and key {{2}} must have the same tokens \
                     (every axis but the last), not {value:?} and {key:?}"
                ),
                "tokens differ",
            ));
        }
        if let Some(axes) = &self.attention_axes {
            let rank = query.len() as i64 + 1;
            let mut given: Vec<i64> = axes
                .iter()
                .map(|&a| if a < 0 { a + rank } else { a })
                .collect();
            given.sort_unstable();
            let default: Vec<i64> = (1..rank - 1).collect();
            if given != default {
                return Err(ShapeError::new(
                    "E-axis",
                    format!(
                        "unetc attends over every axis between the batch and the features \
                         ({default:?}), not {axes:?}"
                    ),
                    "unsupported attention_axes",
                ));
            }
        }
        let d = self.dims(inputs);
        let scores = (d.tq as u64)
            .saturating_mul(d.tv as u64)
            .saturating_mul(d.heads as u64);
        // The weights of every head are held at once (1 GiB of f32 at the limit).
        if scores > 1 << 28 || d.hk() as u64 > 1 << 24 || d.hv() as u64 > 1 << 24 {
            return Err(ShapeError::new(
                "E-limit",
                format!(
                    "MultiHeadAttention of {} query tokens on {} tokens with {} heads is larger \
                     than unetc computes (2^28 attention weights per item)",
                    d.tq, d.tv, d.heads
                ),
                "too large",
            ));
        }
        let mut out = query.clone();
        if let Some(last) = out.last_mut() {
            *last = d.eo as i64;
        }
        Ok(out)
    }

    fn weights(&self, inputs: &[Shape]) -> Vec<WeightSpec> {
        let d = self.dims(inputs);
        let (h, k, v) = (self.num_heads, self.key_dim, self.value_dim());
        let kernel = |name: &'static str, shape: Vec<i64>| WeightSpec {
            name,
            shape,
            trainable: true,
            initializer: self.kernel_initializer.clone(),
        };
        let bias = |name: &'static str, shape: Vec<i64>| WeightSpec {
            name,
            shape,
            trainable: true,
            initializer: self.bias_initializer.clone(),
        };
        // Keras's order: query, key, value, attention_output; each kernel then its bias.
        let mut w = Vec::new();
        for (name_k, name_b, e_in, width) in [
            ("query/kernel", "query/bias", d.eq, k),
            ("key/kernel", "key/bias", d.ek, k),
            ("value/kernel", "value/bias", d.ev, v),
        ] {
            w.push(kernel(name_k, vec![e_in as i64, h, width]));
            if self.use_bias {
                w.push(bias(name_b, vec![h, width]));
            }
        }
        w.push(kernel("attention_output/kernel", vec![h, v, d.eo as i64]));
        if self.use_bias {
            w.push(bias("attention_output/bias", vec![d.eo as i64]));
        }
        w
    }

    fn macs(&self, inputs: &[Shape], _output: &Shape) -> u64 {
        let d = self.dims(inputs);
        let m = |a: usize, b: usize, c: usize| (a as u64) * (b as u64) * (c as u64);
        m(d.tq, d.eq, d.hk())
            + m(d.tv, d.ek, d.hk())
            + m(d.tv, d.ev, d.hv())
            + m(d.tq, d.tv, d.hk())
            + m(d.tq, d.tv, d.hv())
            + m(d.tq, d.hv(), d.eo)
    }

    fn config(&self) -> Json {
        json!({
            "num_heads": self.num_heads,
            "key_dim": self.key_dim,
            "value_dim": self.value_dim(),
            "dropout": self.dropout,
            "use_bias": self.use_bias,
            "output_shape": self.output_shape,
            "kernel_initializer": self.kernel_initializer,
            "bias_initializer": self.bias_initializer,
        })
    }

    fn arity() -> (usize, usize) {
        (2, 3)
    }
}

/// keras-unet-collection's `patch_extract`: `tf.image.extract_patches` of square
/// `patch_size[0]` patches (it reads the first size for both sides), reshaped to
/// `(patches, patch_size^2 * channels)`; the image must give as many patch rows as columns.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchExtract {
    pub patch_size: [i64; 2],
}

impl PatchExtract {
    /// The side of the square patches the class extracts.
    pub fn side(&self) -> i64 {
        self.patch_size[0]
    }
}

const KUC_TRANSFORMER: &[&str] = &["keras_unet_collection.transformer_layers"];

impl LayerKind for PatchExtract {
    const CLASS: &'static str = "patch_extract";
    const POSITIONAL: &'static [&'static str] = &["patch_size"];
    const KNOWN: &'static [&'static str] = &["patch_size"];
    const IMPORTED_CONFIG: &'static [&'static str] = &["patch_size"];
    const KERAS_MODULES: &'static [&'static str] = KUC_TRANSFORMER;

    fn parse(r: &mut ArgReader) -> Self {
        if !r.has("patch_size") {
            r.missing("patch_size", "patch_extract((2, 2))");
        }
        PatchExtract {
            patch_size: r.pair_or("patch_size", 1, 4096, [1, 1]),
        }
    }

    fn infer(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        let [h, w, c] = match inputs[0][..] {
            [h, w, c] => [h, w, c],
            _ => {
                return Err(ShapeError::new(
                    "E-rank",
                    "patch_extract takes an image {0} (height, width, channels)",
                    "not an image",
                ))
            }
        };
        let p = self.side();
        let (rows, cols) = (h / p, w / p);
        if rows < 1 || rows != cols {
            return Err(ShapeError::new(
                "E-shape",
                format!(
                    "patch_extract of {p}x{p} patches from a {h}x{w} image gives {rows}x{cols} \
                     patches; keras-unet-collection's class reshapes them as a square of at \
                     least one, which fails in Keras"
                ),
                "not a square of patches",
            ));
        }
        Ok(vec![rows * rows, p * p * c])
    }

    fn config(&self) -> Json {
        json!({ "patch_size": self.patch_size })
    }
}

/// keras-unet-collection's `patch_embedding`: `Dense(embed_dim)` of each patch plus a learned
/// position embedding `Embedding(num_patch, embed_dim)` of the patch's index.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchEmbedding {
    pub num_patch: i64,
    pub embed_dim: i64,
}

impl LayerKind for PatchEmbedding {
    const CLASS: &'static str = "patch_embedding";
    const POSITIONAL: &'static [&'static str] = &["num_patch", "embed_dim"];
    const KNOWN: &'static [&'static str] = &["num_patch", "embed_dim"];
    const IMPORTED_CONFIG: &'static [&'static str] = &["num_patch", "embed_dim"];
    const KERAS_MODULES: &'static [&'static str] = KUC_TRANSFORMER;

    fn parse(r: &mut ArgReader) -> Self {
        let example = "patch_embedding(num_patch: 64, embed_dim: 128)";
        PatchEmbedding {
            num_patch: r.size("num_patch", example).unwrap_or(1).min(MAX_DIM),
            embed_dim: r.size("embed_dim", example).unwrap_or(1).min(MAX_DIM),
        }
    }

    fn infer(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        match inputs[0][..] {
            [t, _] if t == self.num_patch => Ok(vec![t, self.embed_dim]),
            [t, _] => Err(ShapeError::new(
                "E-shape",
                format!(
                    "patch_embedding adds {} position embeddings to {{0}}'s {t} patches; they \
                     must be as many",
                    self.num_patch
                ),
                "patch count differs",
            )),
            _ => Err(ShapeError::new(
                "E-rank",
                "patch_embedding takes patches {0} as (patches, features)",
                "not patches",
            )),
        }
    }

    fn weights(&self, inputs: &[Shape]) -> Vec<WeightSpec> {
        let features = inputs.first().and_then(|s| s.last()).copied().unwrap_or(0);
        let spec = |name: &'static str, shape: Vec<i64>, initializer: &str| WeightSpec {
            name,
            shape,
            trainable: true,
            initializer: initializer.into(),
        };
        // The class's Dense `proj` (kernel, bias) then Embedding `pos_embed`, as Keras lists them.
        vec![
            spec(
                "proj/kernel",
                vec![features, self.embed_dim],
                "glorot_uniform",
            ),
            spec("proj/bias", vec![self.embed_dim], "zeros"),
            spec(
                "pos_embed/embeddings",
                vec![self.num_patch, self.embed_dim],
                "random_uniform",
            ),
        ]
    }

    fn macs(&self, inputs: &[Shape], output: &Shape) -> u64 {
        let features = inputs.first().and_then(|s| s.last()).copied().unwrap_or(0);
        product(output).saturating_mul(features.max(0) as u64)
    }

    fn config(&self) -> Json {
        json!({ "num_patch": self.num_patch, "embed_dim": self.embed_dim })
    }
}
