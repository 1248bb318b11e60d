//! Activation functions in training: the value and its derivative, as TensorFlow differentiates
//! them (ReLU's gradient is 0 at 0, as TF's ReluGrad takes `x > 0`).

use crate::exec::cpu::kernels::{sigmoid, tanh};
use crate::ir::ops::ActivationFn;
use rayon::prelude::*;

fn softplus(x: f32) -> f32 {
    value(ActivationFn::Softplus, x).unwrap_or(x)
}

const SELU_ALPHA: f32 = 1.673_263_2;
const SELU_SCALE: f32 = 1.050_701;

/// `f(x)` for the elementwise activations (the inference kernels' own functions); `None` for
/// softmax (it needs the whole pixel).
pub fn value(activation: ActivationFn, x: f32) -> Option<f32> {
    crate::exec::cpu::kernels::elementwise(activation).map(|f| f(x))
}

/// `f'(x)`; `None` for softmax.
pub fn derivative(activation: ActivationFn, x: f32) -> Option<f32> {
    let step = |inside: bool| if inside { 1.0 } else { 0.0 };
    Some(match activation {
        ActivationFn::Linear => 1.0,
        ActivationFn::Relu => step(x > 0.0),
        ActivationFn::Sigmoid => {
            let s = sigmoid(x);
            s * (1.0 - s)
        }
        ActivationFn::Softmax => return None,
        ActivationFn::Tanh => {
            let t = tanh(x);
            1.0 - t * t
        }
        ActivationFn::Elu => {
            if x > 0.0 {
                1.0
            } else {
                x.exp()
            }
        }
        ActivationFn::Selu => SELU_SCALE * if x > 0.0 { 1.0 } else { SELU_ALPHA * x.exp() },
        ActivationFn::Softplus => sigmoid(x),
        ActivationFn::Softsign => {
            let d = 1.0 + x.abs();
            1.0 / (d * d)
        }
        ActivationFn::Swish | ActivationFn::Silu => {
            let s = sigmoid(x);
            s + x * s * (1.0 - s)
        }
        ActivationFn::Gelu => {
            let cdf =
                0.5 * (1.0 + crate::exec::cpu::kernels::erf(x * std::f32::consts::FRAC_1_SQRT_2));
            let pdf = (-0.5 * x * x).exp() / (2.0 * std::f32::consts::PI).sqrt();
            cdf + x * pdf
        }
        ActivationFn::Exponential => x.exp(),
        // TF's clip_by_value passes the gradient where the value is not clipped.
        ActivationFn::HardSigmoid => {
            let v = 0.2 * x + 0.5;
            if (0.0..=1.0).contains(&v) {
                0.2
            } else {
                0.0
            }
        }
        ActivationFn::Relu6 => step(x > 0.0 && x < 6.0),
        ActivationFn::Mish => {
            let sp = softplus(x);
            let t = tanh(sp);
            t + x * (1.0 - t * t) * sigmoid(x)
        }
        ActivationFn::LeakyRelu => {
            if x > 0.0 {
                1.0
            } else {
                0.2
            }
        }
    })
}

/// Applies `activation` to `z` (`channels` values per pixel) into a new vector.
pub fn apply(activation: ActivationFn, z: &[f32], channels: usize) -> Vec<f32> {
    match activation {
        ActivationFn::Softmax => {
            let mut y = z.to_vec();
            y.par_chunks_mut(channels.max(1)).for_each(softmax_in_place);
            y
        }
        // Value by value, on all cores (the order of the values does not matter).
        other => z
            .par_iter()
            .map(|&v| value(other, v).unwrap_or(v))
            .collect(),
    }
}

/// What an activation's backward pass reads to turn `dL/dy` into `dL/dz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DerivativeReads {
    /// Nothing: `f'` is 1.
    Nothing,
    /// The pre-activation `z`.
    Input,
    /// The output `y` alone (ReLU's `y > 0` is TF's `z > 0`; softmax's Jacobian is in `y`), so
    /// `z` need not be kept for backward.
    Output,
}

pub fn derivative_reads(activation: ActivationFn) -> DerivativeReads {
    match activation {
        ActivationFn::Linear => DerivativeReads::Nothing,
        ActivationFn::Relu | ActivationFn::Relu6 | ActivationFn::Softmax => DerivativeReads::Output,
        ActivationFn::Sigmoid
        | ActivationFn::Tanh
        | ActivationFn::Elu
        | ActivationFn::Selu
        | ActivationFn::Softplus
        | ActivationFn::Softsign
        | ActivationFn::Swish
        | ActivationFn::Silu
        | ActivationFn::Gelu
        | ActivationFn::Exponential
        | ActivationFn::HardSigmoid
        | ActivationFn::Mish
        | ActivationFn::LeakyRelu => DerivativeReads::Input,
    }
}

/// Whether a layer with `activation` fused in keeps its pre-activation for the backward pass
/// or the loss: where the derivative reads it, and for softmax, whose logits a crossentropy
/// loss takes (sigmoid's are kept for its derivative already).
pub fn keeps_pre_activation(activation: ActivationFn) -> bool {
    match derivative_reads(activation) {
        DerivativeReads::Input => true,
        DerivativeReads::Output => activation == ActivationFn::Softmax,
        DerivativeReads::Nothing => false,
    }
}

/// `dL/dz` from `dL/dy` (`dy`), with `z` the pre-activation and `y = f(z)`; each is read only
/// where [`derivative_reads`] says so (the other may be empty).
pub fn backward(
    activation: ActivationFn,
    z: &[f32],
    y: &[f32],
    dy: Vec<f32>,
    channels: usize,
) -> Vec<f32> {
    match activation {
        ActivationFn::Linear => dy,
        ActivationFn::Softmax => {
            let c = channels.max(1);
            let mut dz = vec![0.0f32; dy.len()];
            dz.par_chunks_mut(c)
                .zip(y.par_chunks(c))
                .zip(dy.par_chunks(c))
                .for_each(|((d, yy), g)| {
                    let dot: f32 = yy.iter().zip(g).map(|(a, b)| a * b).sum();
                    for ((o, &p), &gi) in d.iter_mut().zip(yy).zip(g) {
                        *o = p * (gi - dot);
                    }
                });
            dz
        }
        ActivationFn::Relu => y
            .par_iter()
            .zip(&dy)
            .map(|(&v, &g)| if v > 0.0 { g } else { 0.0 })
            .collect(),
        ActivationFn::Relu6 => y
            .par_iter()
            .zip(&dy)
            .map(|(&v, &g)| if v > 0.0 && v < 6.0 { g } else { 0.0 })
            .collect(),
        ActivationFn::Sigmoid
        | ActivationFn::Tanh
        | ActivationFn::Elu
        | ActivationFn::Selu
        | ActivationFn::Softplus
        | ActivationFn::Softsign
        | ActivationFn::Swish
        | ActivationFn::Silu
        | ActivationFn::Gelu
        | ActivationFn::Exponential
        | ActivationFn::HardSigmoid
        | ActivationFn::Mish
        | ActivationFn::LeakyRelu => z
            .par_iter()
            .zip(&dy)
            .map(|(&v, &g)| g * derivative(activation, v).unwrap_or(1.0))
            .collect(),
    }
}

pub fn softmax_in_place(v: &mut [f32]) {
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

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [ActivationFn; 17] = [
        ActivationFn::Linear,
        ActivationFn::Relu,
        ActivationFn::Sigmoid,
        ActivationFn::Tanh,
        ActivationFn::Elu,
        ActivationFn::Selu,
        ActivationFn::Softplus,
        ActivationFn::Softsign,
        ActivationFn::Swish,
        ActivationFn::Silu,
        ActivationFn::Gelu,
        ActivationFn::Exponential,
        ActivationFn::HardSigmoid,
        ActivationFn::Relu6,
        ActivationFn::Mish,
        ActivationFn::LeakyRelu,
        ActivationFn::Softmax,
    ];

    #[test]
    fn derivatives_match_central_differences() {
        for activation in ALL {
            if activation == ActivationFn::Softmax {
                continue;
            }
            // Points away from the kinks (0, 6, ±2.5 for hard_sigmoid).
            for x in [-3.1f64, -1.3, -0.4, 0.35, 1.7, 4.2, 7.3] {
                let h = 1e-3;
                let f = |v: f64| value(activation, v as f32).unwrap() as f64;
                let numeric = (f(x + h) - f(x - h)) / (2.0 * h);
                let analytic = derivative(activation, x as f32).unwrap() as f64;
                assert!(
                    (numeric - analytic).abs() <= 2e-3 * (1.0 + numeric.abs()),
                    "{activation:?} at {x}: numeric {numeric}, analytic {analytic}"
                );
            }
        }
    }

    #[test]
    fn activations_read_from_the_output_give_the_derivative_at_the_input() {
        let z: Vec<f32> = (-40..=40).map(|i| i as f32 * 0.25).collect();
        let dy: Vec<f32> = (0..z.len()).map(|i| 1.0 + i as f32 * 0.01).collect();
        for a in [ActivationFn::Relu, ActivationFn::Relu6] {
            assert_eq!(derivative_reads(a), DerivativeReads::Output);
            let y = apply(a, &z, 1);
            let from_output = backward(a, &[], &y, dy.clone(), 1);
            let from_input: Vec<f32> = z
                .iter()
                .zip(&dy)
                .map(|(&v, &g)| g * derivative(a, v).unwrap())
                .collect();
            assert_eq!(from_output, from_input, "{a:?}");
        }
    }

    #[test]
    fn softmax_backward_matches_central_differences() {
        let z = [0.3f32, -1.2, 2.0, 0.1];
        let dy = [0.5f32, -0.25, 1.0, 0.75];
        let y = apply(ActivationFn::Softmax, &z, 4);
        let dz = backward(ActivationFn::Softmax, &z, &y, dy.to_vec(), 4);
        for i in 0..4 {
            let loss = |shift: f32| {
                let mut zz = z;
                zz[i] += shift;
                let yy = apply(ActivationFn::Softmax, &zz, 4);
                yy.iter().zip(&dy).map(|(a, b)| (a * b) as f64).sum::<f64>()
            };
            let numeric = (loss(1e-3) - loss(-1e-3)) / 2e-3;
            assert!(
                (numeric - dz[i] as f64).abs() < 1e-3,
                "{i}: {numeric} vs {}",
                dz[i]
            );
        }
    }
}
