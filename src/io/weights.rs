//! Weights in safetensors files, and the Keras initializers that make fresh ones.
//!
//! Tensor names are `<layer>/<variable>` (`conv2d_3/kernel`, `conv2d_3/bias`,
//! `batch_normalization/gamma`, `beta`, `moving_mean`, `moving_variance`, `dense/kernel`); shapes
//! are in Keras layouts (Conv2D kernel `[kh, kw, in, out]`, Conv2DTranspose `[kh, kw, out, in]`,
//! Dense `[in, out]`); the dtype is F32, and every value must be finite (no NaN or infinity).

use super::atomic::write_atomic;
use super::{IoError, NonFinite, WeightProblem, MAX_DATA_BYTES, MAX_ELEMENTS};
use crate::exec::Tensor;
use rand::SeedableRng;
use rand_distr::{Distribution, Normal, Uniform};
use safetensors::tensor::{Dtype, SafeTensorError, SafeTensors, View};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::path::Path;

/// One weight the model expects: its full name (`conv2d_3/kernel`) and shape (Keras layout).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub name: String,
    pub shape: Vec<usize>,
}

/// Weights by full name, in name order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Weights {
    tensors: BTreeMap<String, Tensor>,
}

impl Weights {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(name)
    }

    /// The names, in sorted order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// Adds or replaces a tensor.
    pub fn insert(&mut self, name: String, t: Tensor) {
        self.tensors.insert(name, t);
    }

    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// `(name, tensor)` in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.tensors.iter().map(|(n, t)| (n.as_str(), t))
    }
}

/// The safetensors header may be up to 100 MB (the crate's own limit); the data up to
/// [`MAX_DATA_BYTES`].
const MAX_FILE_BYTES: u64 = MAX_DATA_BYTES + 8 + 100_000_000;

/// Reads a safetensors file and checks it against `expected`: every missing, unexpected,
/// misshaped or wrongly typed tensor, and every tensor holding NaN or infinite values (with the
/// first bad index and the count), is reported by name, all at once, in one
/// [`IoError::Weights`], before any work starts.
pub fn load_weights(path: &Path, expected: &[Expected]) -> Result<Weights, IoError> {
    let buf = read_weights_file(path)?;
    let st = SafeTensors::deserialize(&buf).map_err(|e| format_error(path, buf.len(), e))?;

    let mut problems = Vec::new();
    let mut weights = Weights::new();
    let wanted: HashSet<&str> = expected.iter().map(|e| e.name.as_str()).collect();
    for exp in expected {
        let view = match st.tensor(&exp.name) {
            Ok(v) => v,
            Err(_) => {
                problems.push(WeightProblem::Missing {
                    name: exp.name.clone(),
                    shape: exp.shape.clone(),
                });
                continue;
            }
        };
        let mut ok = true;
        if view.dtype() != Dtype::F32 {
            problems.push(WeightProblem::Dtype {
                name: exp.name.clone(),
                found: format!("{:?}", view.dtype()),
            });
            ok = false;
        }
        if view.shape() != exp.shape.as_slice() {
            problems.push(WeightProblem::Shape {
                name: exp.name.clone(),
                found: view.shape().to_vec(),
                expected: exp.shape.clone(),
            });
            ok = false;
        }
        if ok {
            // The view's byte length was validated against shape and dtype by the crate.
            let data: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            // A NaN or infinity in any weight spreads to every output pixel it reaches, and the
            // mask made from it looks plausible: refuse it here, by name.
            if let Some(found) = NonFinite::find(&data) {
                problems.push(WeightProblem::NonFinite {
                    name: exp.name.clone(),
                    shape: exp.shape.clone(),
                    found,
                });
            } else if problems.is_empty() {
                weights.insert(
                    exp.name.clone(),
                    Tensor {
                        shape: exp.shape.clone(),
                        data,
                    },
                );
            }
        }
    }
    let mut extra: Vec<(&str, Vec<usize>)> = st
        .iter()
        .filter(|(n, _)| !wanted.contains(n))
        .map(|(n, v)| (n, v.shape().to_vec()))
        .collect();
    extra.sort();
    for (name, shape) in extra {
        problems.push(WeightProblem::Unexpected {
            name: name.to_string(),
            shape,
        });
    }
    if !problems.is_empty() {
        return Err(IoError::Weights {
            path: path.to_path_buf(),
            problems,
        });
    }
    Ok(weights)
}

/// The bytes of a weights file (safetensors), its size bounded before it is read.
pub fn read_weights_file(path: &Path) -> Result<Vec<u8>, IoError> {
    let file = std::fs::File::open(path).map_err(|e| IoError::os(path, "cannot open", e))?;
    let meta = file
        .metadata()
        .map_err(|e| IoError::os(path, "cannot read", e))?;
    if meta.is_dir() {
        return Err(IoError::invalid(
            path,
            "is a directory, not a safetensors file",
        ));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(IoError::invalid(
            path,
            format!(
                "is {} bytes, more than the {MAX_FILE_BYTES} bytes unetc reads as weights",
                meta.len()
            ),
        ));
    }
    // The length is checked; `take` bounds the read even if the file grows meanwhile.
    let mut buf = Vec::with_capacity(if meta.is_file() {
        meta.len() as usize
    } else {
        0
    });
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(|e| IoError::os(path, "cannot read", e))?;
    if buf.len() as u64 > MAX_FILE_BYTES {
        return Err(IoError::invalid(
            path,
            format!("is more than the {MAX_FILE_BYTES} bytes unetc reads as weights"),
        ));
    }
    Ok(buf)
}

/// Writes `weights` as an F32 safetensors file, atomically, tensors in name order (the same
/// weights always give the same bytes); an existing file is replaced only with `force`.
pub fn save_weights(path: &Path, weights: &Weights, force: bool) -> Result<(), IoError> {
    for (name, t) in weights.iter() {
        if t.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) != Some(t.data.len()) {
            return Err(IoError::invalid(
                path,
                format!(
                    "cannot write tensor \"{name}\": shape {:?} with {} values (internal error)",
                    t.shape,
                    t.data.len()
                ),
            ));
        }
    }
    let bytes = safetensors::tensor::serialize(weights.iter().map(|(n, t)| (n, F32View(t))), None)
        .map_err(|e| IoError::invalid(path, format!("cannot encode the weights: {e}")))?;
    write_atomic(path, force, |out| out.write_all(&bytes))
}

/// A tensor as safetensors sees it: F32, little-endian bytes made when asked for.
struct F32View<'a>(&'a Tensor);

impl View for F32View<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }

    fn shape(&self) -> &[usize] {
        &self.0.shape
    }

    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Owned(self.0.data.iter().flat_map(|v| v.to_le_bytes()).collect())
    }

    fn data_len(&self) -> usize {
        self.0.data.len() * 4
    }
}

fn format_error(path: &Path, len: usize, e: SafeTensorError) -> IoError {
    use SafeTensorError as E;
    let what = match &e {
        E::HeaderTooSmall => format!("is too short ({len} bytes) to be a safetensors file"),
        E::HeaderTooLarge | E::InvalidHeaderLength => format!(
            "is not a safetensors file: its first 8 bytes declare a header that does not fit \
             in its {len} bytes"
        ),
        E::InvalidHeader(_) | E::InvalidHeaderDeserialization(_) | E::JsonError(_) => {
            format!("is not a safetensors file: its header is not valid JSON ({e})")
        }
        E::MetadataIncompleteBuffer => format!(
            "is truncated or damaged: its header declares more or less tensor data than the \
             file's {len} bytes hold"
        ),
        _ => format!("is not a valid safetensors file ({e})"),
    };
    IoError::invalid(path, what)
}

/// A seeded random number generator for [`init_tensor`]: the same seed gives the same weights
/// (with the same version of `rand`).
pub fn seeded_rng(seed: u64) -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(seed)
}

/// Keras's `_compute_fans` on a stored shape: `(fan_in, fan_out)`.
pub fn compute_fans(shape: &[usize]) -> (f64, f64) {
    match shape {
        [] => (1.0, 1.0),
        [n] => (*n as f64, *n as f64),
        [i, o] => (*i as f64, *o as f64),
        _ => {
            let rf: f64 = shape[..shape.len() - 2].iter().map(|&d| d as f64).product();
            (
                shape[shape.len() - 2] as f64 * rf,
                shape[shape.len() - 1] as f64 * rf,
            )
        }
    }
}

/// The factor that makes a normal cut at two standard deviations have the wanted deviation
/// (Keras's `VarianceScaling`).
const TRUNCATION_CORRECTION: f64 = 0.879_625_661_034_239_8;

/// How a tensor's values are drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Init {
    Constant(f32),
    /// Normal with this standard deviation, redrawn beyond two of them.
    Truncated(f64),
    Normal(f64),
    /// Uniform in `[-limit, limit)`.
    Uniform(f64),
}

/// The Keras initializers by name, snake_case (`he_normal`) or class name (`HeNormal`), with
/// Keras's default arguments: he_normal, he_uniform, glorot_normal, glorot_uniform, lecun_normal,
/// lecun_uniform, zeros, ones, random_normal (stddev 0.05), random_uniform (±0.05),
/// truncated_normal (stddev 0.05), variance_scaling (scale 1, fan_in, truncated normal: the
/// arguments of an imported VarianceScaling are not kept). Fans are Keras's `_compute_fans` of the stored shape.
pub fn init_tensor(
    initializer: &str,
    shape: &[usize],
    rng: &mut impl rand::Rng,
) -> Result<Tensor, IoError> {
    let err = |problem: String| IoError::Initializer {
        name: initializer.to_string(),
        problem,
    };
    let count = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|&c| c <= MAX_ELEMENTS)
        .ok_or_else(|| {
            err(format!(
                "shape {shape:?} has more than the {MAX_ELEMENTS} elements unetc allows"
            ))
        })?;
    let key: String = initializer
        .chars()
        .filter(|c| *c != '_')
        .flat_map(char::to_lowercase)
        .collect();
    let (fan_in, fan_out) = compute_fans(shape);
    let fan_avg = (fan_in + fan_out) / 2.0;
    // VarianceScaling: scale / max(1, fan).
    let var = |scale: f64, fan: f64| scale / fan.max(1.0);
    // `constant(v)`: every element v (Snake's beta_factor starts at its `beta`).
    let constant = key
        .strip_prefix("constant(")
        .and_then(|v| v.strip_suffix(')'))
        .and_then(|v| v.parse::<f32>().ok())
        .filter(|v| v.is_finite());
    let init = match (key.as_str(), constant) {
        (_, Some(v)) => Init::Constant(v),
        (key, None) => match key {
            "zeros" | "zero" => Init::Constant(0.0),
            "ones" | "one" => Init::Constant(1.0),
            "henormal" => Init::Truncated(var(2.0, fan_in).sqrt() / TRUNCATION_CORRECTION),
            "heuniform" => Init::Uniform((3.0 * var(2.0, fan_in)).sqrt()),
            "glorotnormal" | "xaviernormal" => {
                Init::Truncated(var(1.0, fan_avg).sqrt() / TRUNCATION_CORRECTION)
            }
            "glorotuniform" | "xavieruniform" => Init::Uniform((3.0 * var(1.0, fan_avg)).sqrt()),
            "lecunnormal" => Init::Truncated(var(1.0, fan_in).sqrt() / TRUNCATION_CORRECTION),
            "lecununiform" => Init::Uniform((3.0 * var(1.0, fan_in)).sqrt()),
            "randomnormal" | "normal" => Init::Normal(0.05),
            "randomuniform" | "uniform" => Init::Uniform(0.05),
            "truncatednormal" => Init::Truncated(0.05),
            "variancescaling" => Init::Truncated(var(1.0, fan_in).sqrt() / TRUNCATION_CORRECTION),
            _ => {
                return Err(err(
                    "is not an initializer unetc knows; use he_normal, he_uniform, glorot_normal, \
                 glorot_uniform, lecun_normal, lecun_uniform, zeros, ones, random_normal, \
                 random_uniform, truncated_normal or variance_scaling"
                        .to_string(),
                ))
            }
        },
    };
    let data: Vec<f32> = match init {
        Init::Constant(c) => vec![c; count],
        Init::Normal(sd) => {
            let d = Normal::new(0.0, sd).map_err(|e| err(e.to_string()))?;
            (0..count).map(|_| d.sample(rng) as f32).collect()
        }
        Init::Truncated(sd) => {
            let d = Normal::new(0.0, sd).map_err(|e| err(e.to_string()))?;
            let cut = 2.0 * sd;
            (0..count)
                .map(|_| loop {
                    let x: f64 = d.sample(rng);
                    if x.abs() <= cut {
                        break x as f32;
                    }
                })
                .collect()
        }
        Init::Uniform(limit) => {
            let d = Uniform::new(-limit, limit).map_err(|e| err(e.to_string()))?;
            (0..count).map(|_| d.sample(rng) as f32).collect()
        }
    };
    Ok(Tensor {
        shape: shape.to_vec(),
        data,
    })
}
