//! Losses as tf_keras 2.x computes them in `model.fit`/`train_on_batch`: the per-pixel loss
//! (reduced over the last axis), then the mean over batch and pixels (`SUM_OVER_BATCH_SIZE`).
//! A softmax or sigmoid output hands the crossentropies its logits (Keras's `_keras_logits`),
//! so they are computed stably from the logits, unclipped; other outputs are clipped to
//! `[1e-7, 1 - 1e-7]` as Keras's backend does.

use crate::ir::ops::ActivationFn;

/// Keras's `backend.epsilon()`.
const EPSILON: f32 = 1e-7;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    CategoricalCrossentropy,
    SparseCategoricalCrossentropy,
    BinaryCrossentropy,
    MeanSquaredError,
    /// `1 - (2 Σ y p + 1) / (Σ y + Σ p + 1)` over the whole batch.
    Dice,
    /// Binary crossentropy plus dice.
    BceDice,
    /// Keras's `binary_focal_crossentropy` (gamma 2, no class balancing).
    Focal,
}

impl Loss {
    pub const NAMES: &'static [&'static str] = &[
        "categorical_crossentropy",
        "sparse_categorical_crossentropy",
        "binary_crossentropy",
        "mse",
        "dice",
        "bce_dice",
        "focal",
    ];

    pub fn parse(name: &str) -> Option<Loss> {
        Some(match name {
            "categorical_crossentropy" => Loss::CategoricalCrossentropy,
            "sparse_categorical_crossentropy" => Loss::SparseCategoricalCrossentropy,
            "binary_crossentropy" => Loss::BinaryCrossentropy,
            "mse" | "mean_squared_error" => Loss::MeanSquaredError,
            "dice" => Loss::Dice,
            "bce_dice" => Loss::BceDice,
            "focal" | "binary_focal_crossentropy" => Loss::Focal,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Loss::CategoricalCrossentropy => "categorical_crossentropy",
            Loss::SparseCategoricalCrossentropy => "sparse_categorical_crossentropy",
            Loss::BinaryCrossentropy => "binary_crossentropy",
            Loss::MeanSquaredError => "mse",
            Loss::Dice => "dice",
            Loss::BceDice => "bce_dice",
            Loss::Focal => "focal",
        }
    }

    /// Whether targets are class indices (one per pixel) rather than a tensor like the output.
    pub fn sparse(self) -> bool {
        self == Loss::SparseCategoricalCrossentropy
    }

    /// The output activation whose logits this loss takes (Keras's `_keras_logits`).
    pub fn takes_logits_of(self) -> Option<ActivationFn> {
        match self {
            Loss::CategoricalCrossentropy | Loss::SparseCategoricalCrossentropy => {
                Some(ActivationFn::Softmax)
            }
            Loss::BinaryCrossentropy | Loss::BceDice | Loss::Focal => Some(ActivationFn::Sigmoid),
            Loss::MeanSquaredError | Loss::Dice => None,
        }
    }
}

/// What the loss reads of the model's output.
pub enum Prediction<'a> {
    /// Probabilities (or values) as the model outputs them.
    Output(&'a [f32]),
    /// Logits: pre-softmax or pre-sigmoid values (`from_logits`, or an output activation whose
    /// logits Keras hands over). The output is still given, for dice.
    Logits {
        logits: &'a [f32],
        output: &'a [f32],
    },
}

/// The targets: a tensor like the output, or class indices (sparse).
pub enum Targets<'a> {
    Dense(&'a [f32]),
    Classes(&'a [i64]),
}

/// (loss, gradient with respect to what the prediction holds: the output or the logits).
pub fn loss_and_grad(
    loss: Loss,
    pred: Prediction,
    targets: Targets,
    channels: usize,
) -> (f64, Vec<f32>) {
    let c = channels.max(1);
    match (loss, pred, targets) {
        (Loss::CategoricalCrossentropy, pred, Targets::Dense(y)) => {
            categorical(pred, |p, k| y[p * c + k], c)
        }
        (Loss::SparseCategoricalCrossentropy, pred, Targets::Classes(classes)) => categorical(
            pred,
            |p, k| if classes[p] == k as i64 { 1.0 } else { 0.0 },
            c,
        ),
        (Loss::BinaryCrossentropy, pred, Targets::Dense(y)) => binary(pred, y),
        (Loss::Focal, pred, Targets::Dense(y)) => focal(pred, y),
        (Loss::MeanSquaredError, Prediction::Output(p), Targets::Dense(y)) => {
            let n = p.len().max(1) as f64;
            let loss = p
                .iter()
                .zip(y)
                .map(|(&a, &b)| ((a - b) as f64).powi(2))
                .sum::<f64>()
                / n;
            let grad = p
                .iter()
                .zip(y)
                .map(|(&a, &b)| (2.0 * (a - b) as f64 / n) as f32)
                .collect();
            (loss, grad)
        }
        (Loss::Dice, Prediction::Output(p), Targets::Dense(y)) => dice(p, y),
        (Loss::BceDice, Prediction::Logits { logits, output }, Targets::Dense(y)) => {
            let (l1, g1) = binary(Prediction::Logits { logits, output }, y);
            let (l2, g2) = dice(output, y);
            // Dice's gradient is with respect to the output: through the sigmoid to the logits.
            let grad = g1
                .iter()
                .zip(&g2)
                .zip(output)
                .map(|((a, b), &s)| a + b * s * (1.0 - s))
                .collect();
            (l1 + l2, grad)
        }
        (Loss::BceDice, Prediction::Output(p), Targets::Dense(y)) => {
            let (l1, g1) = binary(Prediction::Output(p), y);
            let (l2, g2) = dice(p, y);
            (l1 + l2, g1.iter().zip(&g2).map(|(a, b)| a + b).collect())
        }
        // The trainer pairs losses and targets (sparse targets only for the sparse loss) and
        // hands logits only to the losses that take them.
        (_, _, _) => (f64::NAN, Vec::new()),
    }
}

fn categorical(
    pred: Prediction,
    target: impl Fn(usize, usize) -> f32,
    c: usize,
) -> (f64, Vec<f32>) {
    match pred {
        Prediction::Logits { logits, .. } => {
            let pixels = logits.len() / c;
            let mut grad = vec![0.0f32; logits.len()];
            let mut total = 0.0f64;
            for p in 0..pixels {
                let z = &logits[p * c..(p + 1) * c];
                let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
                let sum: f64 = z.iter().map(|&v| (v as f64 - max).exp()).sum();
                let log_sum = sum.ln() + max;
                let mut weight = 0.0f64;
                for (k, &zk) in z.iter().enumerate() {
                    let t = target(p, k) as f64;
                    total += t * (log_sum - zk as f64);
                    weight += t;
                }
                for (k, &zk) in z.iter().enumerate() {
                    let soft = (zk as f64 - max).exp() / sum;
                    grad[p * c + k] =
                        ((soft * weight - target(p, k) as f64) / pixels as f64) as f32;
                }
            }
            (total / pixels.max(1) as f64, grad)
        }
        Prediction::Output(out) => {
            // Keras: normalise each pixel to sum 1, clip, -Σ y log p.
            let pixels = out.len() / c;
            let mut grad = vec![0.0f32; out.len()];
            let mut total = 0.0f64;
            for p in 0..pixels {
                let o = &out[p * c..(p + 1) * c];
                let s: f64 = o.iter().map(|&v| v as f64).sum();
                // d/do_j of -Σ_k t_k log(clip(o_k / s)).
                let mut dq = vec![0.0f64; c];
                for k in 0..c {
                    let q = o[k] as f64 / s;
                    let clipped = q.clamp(EPSILON as f64, 1.0 - EPSILON as f64);
                    let t = target(p, k) as f64;
                    total -= t * clipped.ln();
                    if q > EPSILON as f64 && q < 1.0 - EPSILON as f64 {
                        dq[k] = -t / clipped;
                    }
                }
                let dot: f64 = (0..c).map(|k| dq[k] * o[k] as f64).sum::<f64>() / s;
                for j in 0..c {
                    grad[p * c + j] = ((dq[j] - dot) / s / pixels as f64) as f32;
                }
            }
            (total / pixels.max(1) as f64, grad)
        }
    }
}

fn binary(pred: Prediction, y: &[f32]) -> (f64, Vec<f32>) {
    let n = y.len().max(1) as f64;
    match pred {
        Prediction::Logits { logits, .. } => {
            // TF's sigmoid_cross_entropy_with_logits: max(z, 0) - z y + log(1 + e^-|z|).
            let mut total = 0.0f64;
            let grad = logits
                .iter()
                .zip(y)
                .map(|(&z, &t)| {
                    let (z, t) = (z as f64, t as f64);
                    total += z.max(0.0) - z * t + (-z.abs()).exp().ln_1p();
                    ((1.0 / (1.0 + (-z).exp()) - t) / n) as f32
                })
                .collect();
            (total / n, grad)
        }
        Prediction::Output(p) => {
            // Keras: clip to [eps, 1 - eps], then -(y log(p + eps) + (1 - y) log(1 - p + eps)).
            let eps = EPSILON as f64;
            let mut total = 0.0f64;
            let grad = p
                .iter()
                .zip(y)
                .map(|(&v, &t)| {
                    let (v, t) = (v as f64, t as f64);
                    let q = v.clamp(eps, 1.0 - eps);
                    total -= t * (q + eps).ln() + (1.0 - t) * (1.0 - q + eps).ln();
                    let inside = v > eps && v < 1.0 - eps;
                    let d = if inside {
                        -t / (q + eps) + (1.0 - t) / (1.0 - q + eps)
                    } else {
                        0.0
                    };
                    (d / n) as f32
                })
                .collect();
            (total / n, grad)
        }
    }
}

/// Keras's `binary_focal_crossentropy(gamma=2)`: `(1 - p_t)^2 * bce` with `p_t` from the
/// (unclipped) probabilities and `bce` as [`binary`] computes it.
fn focal(pred: Prediction, y: &[f32]) -> (f64, Vec<f32>) {
    const GAMMA: f64 = 2.0;
    let n = y.len().max(1) as f64;
    let (probs, logits): (Vec<f64>, Option<&[f32]>) = match &pred {
        Prediction::Logits { logits, output } => {
            (output.iter().map(|&v| v as f64).collect(), Some(logits))
        }
        Prediction::Output(p) => (p.iter().map(|&v| v as f64).collect(), None),
    };
    let (_, bce_grad_mean) = binary(pred, y);
    let mut total = 0.0f64;
    let mut grad = vec![0.0f32; y.len()];
    for i in 0..y.len() {
        let (p, t) = (probs[i], y[i] as f64);
        let pt = t * p + (1.0 - t) * (1.0 - p);
        let factor = (1.0 - pt).powf(GAMMA);
        // The per-element bce and its derivative (with respect to what the prediction holds).
        let (bce, dbce) = match logits {
            Some(z) => {
                let z = z[i] as f64;
                (
                    z.max(0.0) - z * t + (-z.abs()).exp().ln_1p(),
                    bce_grad_mean[i] as f64 * n,
                )
            }
            None => {
                let eps = EPSILON as f64;
                let q = p.clamp(eps, 1.0 - eps);
                (
                    -(t * (q + eps).ln() + (1.0 - t) * (1.0 - q + eps).ln()),
                    bce_grad_mean[i] as f64 * n,
                )
            }
        };
        // d factor / dp, then to the logits through the sigmoid where the prediction is logits.
        let dpt_dp = 2.0 * t - 1.0;
        let mut dfactor = -GAMMA * (1.0 - pt).powf(GAMMA - 1.0) * dpt_dp;
        if logits.is_some() {
            dfactor *= p * (1.0 - p);
        }
        total += factor * bce;
        grad[i] = ((dfactor * bce + factor * dbce) / n) as f32;
    }
    (total / n, grad)
}

fn dice(p: &[f32], y: &[f32]) -> (f64, Vec<f32>) {
    let inter: f64 = p.iter().zip(y).map(|(&a, &b)| a as f64 * b as f64).sum();
    let sum_y: f64 = y.iter().map(|&v| v as f64).sum();
    let sum_p: f64 = p.iter().map(|&v| v as f64).sum();
    let num = 2.0 * inter + 1.0;
    let den = sum_y + sum_p + 1.0;
    let grad = y
        .iter()
        .map(|&t| (-(2.0 * t as f64 * den - num) / (den * den)) as f32)
        .collect();
    (1.0 - num / den, grad)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every loss's gradient against central differences of its value.
    #[test]
    fn gradients_match_central_differences() {
        let z = [0.3f32, -1.1, 0.8, 2.0, -0.4, 0.05];
        let y = [0.0f32, 1.0, 0.0, 1.0, 0.0, 1.0];
        let onehot = [1.0f32, 0.0, 0.0, 0.0, 1.0, 0.0];
        let sigmoid = |v: &[f32]| {
            v.iter()
                .map(|&x| 1.0 / (1.0 + (-x).exp()))
                .collect::<Vec<_>>()
        };
        let softmax = |v: &[f32]| {
            let mut out = v.to_vec();
            out.chunks_mut(3)
                .for_each(crate::train::activations::softmax_in_place);
            out
        };
        type Case<'a> = (Loss, bool, &'a [f32], usize);
        let cases: [Case; 10] = [
            (Loss::CategoricalCrossentropy, true, &onehot, 3),
            (Loss::CategoricalCrossentropy, false, &onehot, 3),
            (Loss::BinaryCrossentropy, true, &y, 1),
            (Loss::BinaryCrossentropy, false, &y, 1),
            (Loss::Focal, true, &y, 1),
            (Loss::Focal, false, &y, 1),
            (Loss::BceDice, true, &y, 1),
            (Loss::BceDice, false, &y, 1),
            (Loss::Dice, false, &y, 1),
            (Loss::MeanSquaredError, false, &y, 1),
        ];
        for (loss, logits, target, c) in cases {
            let squash = |v: &[f32]| if c == 3 { softmax(v) } else { sigmoid(v) };
            // The prediction is a function of `z`: logits directly, or the squashed output.
            let eval = |zz: &[f32]| {
                let out = squash(zz);
                let pred = if logits {
                    Prediction::Logits {
                        logits: zz,
                        output: &out,
                    }
                } else {
                    Prediction::Output(&out)
                };
                loss_and_grad(loss, pred, Targets::Dense(target), c)
            };
            let (_, grad) = eval(&z);
            for i in 0..z.len() {
                let shifted = |h: f32| {
                    let mut zz = z;
                    zz[i] += h;
                    eval(&zz).0
                };
                let numeric = (shifted(1e-3) - shifted(-1e-3)) / 2e-3;
                // The analytic gradient is with respect to the prediction: chain through the
                // squashing for output predictions.
                let analytic = if logits {
                    grad[i] as f64
                } else {
                    let out = squash(&z);
                    if c == 3 {
                        let p = i / 3 * 3;
                        (0..3)
                            .map(|k| {
                                let d = if k == i % 3 { 1.0 } else { 0.0 };
                                grad[p + k] as f64 * out[p + k] as f64 * (d - out[i] as f64)
                            })
                            .sum()
                    } else {
                        grad[i] as f64 * (out[i] * (1.0 - out[i])) as f64
                    }
                };
                assert!(
                    (numeric - analytic).abs() < 1e-3 * (1.0 + numeric.abs()),
                    "{loss:?} logits={logits} at {i}: numeric {numeric}, analytic {analytic}"
                );
            }
        }
    }
}
