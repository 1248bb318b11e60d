//! Optimizers as tf_keras 2.x implements them (`tf_keras/src/optimizers/*.py`, the current
//! optimizer classes that `keras.optimizers.Adam` and friends are): each update, where epsilon
//! sits and how weight decay is applied, follows that source. Arithmetic in f32, as Keras's
//! float32 variables.

/// Keras's names and defaults.
#[derive(Debug, Clone, PartialEq)]
pub enum Optimizer {
    /// `m += (g - m)(1 - b1)`, `v += (g² - v)(1 - b2)`,
    /// `w -= m · lr·sqrt(1 - b2^t)/(1 - b1^t) / (sqrt(v) + eps)`.
    Adam {
        beta_1: f32,
        beta_2: f32,
        epsilon: f32,
    },
    /// Adam with decoupled weight decay `w -= w · wd · lr` before the update.
    AdamW {
        beta_1: f32,
        beta_2: f32,
        epsilon: f32,
    },
    /// `m = m·momentum - lr·g`; `w += m` (nesterov: `w += m·momentum - lr·g`).
    Sgd { momentum: f32, nesterov: bool },
    /// `v = rho·v + (1 - rho)·g²`; increment `lr·g / sqrt(v + eps)`; with momentum
    /// `m = momentum·m + increment`, `w -= m`.
    RmsProp {
        rho: f32,
        momentum: f32,
        epsilon: f32,
    },
}

/// Keras's defaults, by optimizer name.
pub const OPTIMIZERS: &[&str] = &["adam", "adamw", "sgd", "rmsprop"];

/// The arguments a command line or a spec's `train:` section gives; `None` takes Keras's
/// default for the chosen optimizer.
#[derive(Debug, Clone, Default)]
pub struct OptimizerArgs {
    pub beta_1: Option<f64>,
    pub beta_2: Option<f64>,
    pub epsilon: Option<f64>,
    pub momentum: Option<f64>,
    pub nesterov: bool,
    pub rho: Option<f64>,
    pub weight_decay: Option<f64>,
}

impl Optimizer {
    /// The optimizer `name` with `args`; the weight decay Keras applies (AdamW's default
    /// 0.004; the others none unless given). Errors name the argument that does not apply.
    pub fn new(name: &str, args: &OptimizerArgs) -> Result<(Optimizer, Option<f32>), String> {
        let f = |v: Option<f64>, default: f32| v.map_or(default, |v| v as f32);
        let refuse = |arg: &str, given: bool| {
            if given {
                Err(format!("--{arg} does not apply to {name}"))
            } else {
                Ok(())
            }
        };
        let opt = match name {
            "adam" | "adamw" => {
                refuse("momentum", args.momentum.is_some())?;
                refuse("rho", args.rho.is_some())?;
                refuse("nesterov", args.nesterov)?;
                let (beta_1, beta_2, epsilon) = (
                    f(args.beta_1, 0.9),
                    f(args.beta_2, 0.999),
                    f(args.epsilon, 1e-7),
                );
                if name == "adam" {
                    Optimizer::Adam {
                        beta_1,
                        beta_2,
                        epsilon,
                    }
                } else {
                    Optimizer::AdamW {
                        beta_1,
                        beta_2,
                        epsilon,
                    }
                }
            }
            "sgd" => {
                refuse("beta-1", args.beta_1.is_some())?;
                refuse("beta-2", args.beta_2.is_some())?;
                refuse("epsilon", args.epsilon.is_some())?;
                refuse("rho", args.rho.is_some())?;
                Optimizer::Sgd {
                    momentum: f(args.momentum, 0.0),
                    nesterov: args.nesterov,
                }
            }
            "rmsprop" => {
                refuse("beta-1", args.beta_1.is_some())?;
                refuse("beta-2", args.beta_2.is_some())?;
                refuse("nesterov", args.nesterov)?;
                Optimizer::RmsProp {
                    rho: f(args.rho, 0.9),
                    momentum: f(args.momentum, 0.0),
                    epsilon: f(args.epsilon, 1e-7),
                }
            }
            other => {
                return Err(format!(
                    "unknown optimizer `{other}`: use one of {}",
                    OPTIMIZERS.join(", ")
                ))
            }
        };
        let decay = match (&opt, args.weight_decay) {
            (Optimizer::AdamW { .. }, None) => Some(0.004),
            (_, wd) => wd.map(|v| v as f32),
        };
        for (arg, value) in [
            ("beta-1", args.beta_1),
            ("beta-2", args.beta_2),
            ("rho", args.rho),
            ("momentum", args.momentum),
        ] {
            if value.is_some_and(|v| !(0.0..1.0).contains(&v)) {
                return Err(format!("--{arg} must be in [0, 1)"));
            }
        }
        if args.epsilon.is_some_and(|v| !(v > 0.0 && v.is_finite())) {
            return Err("--epsilon must be a positive number".into());
        }
        if args
            .weight_decay
            .is_some_and(|v| !(v >= 0.0 && v.is_finite()))
        {
            return Err("--weight-decay must be zero or positive".into());
        }
        Ok((opt, decay))
    }

    /// Slots of state per variable (Adam's m and v, momentum, RMSprop's velocity).
    pub fn slots(&self) -> usize {
        match self {
            Optimizer::Adam { .. } | Optimizer::AdamW { .. } => 2,
            Optimizer::Sgd { momentum, .. } => usize::from(*momentum > 0.0),
            Optimizer::RmsProp { momentum, .. } => 1 + usize::from(*momentum > 0.0),
        }
    }

    /// One update of `w` from its gradient `g`; `step` counts from 1; `state` holds
    /// [`Optimizer::slots`] vectors like `w`.
    pub fn update(
        &self,
        w: &mut [f32],
        g: &[f32],
        state: &mut [Vec<f32>],
        lr: f32,
        step: u64,
        decay: Option<f32>,
    ) {
        // Keras's `_apply_weight_decay` runs before the update, for every optimizer given one.
        if let Some(wd) = decay {
            for v in w.iter_mut() {
                *v -= *v * wd * lr;
            }
        }
        match *self {
            Optimizer::Adam {
                beta_1,
                beta_2,
                epsilon,
            }
            | Optimizer::AdamW {
                beta_1,
                beta_2,
                epsilon,
            } => {
                let t = step as f32;
                let alpha = lr * (1.0 - beta_2.powf(t)).sqrt() / (1.0 - beta_1.powf(t));
                let (m, v) = state.split_at_mut(1);
                let (m, v) = (&mut m[0], &mut v[0]);
                for i in 0..w.len() {
                    m[i] += (g[i] - m[i]) * (1.0 - beta_1);
                    v[i] += (g[i] * g[i] - v[i]) * (1.0 - beta_2);
                    w[i] -= m[i] * alpha / (v[i].sqrt() + epsilon);
                }
            }
            Optimizer::Sgd { momentum, nesterov } => {
                if momentum > 0.0 {
                    let m = &mut state[0];
                    for i in 0..w.len() {
                        m[i] = -g[i] * lr + m[i] * momentum;
                        w[i] += if nesterov {
                            -g[i] * lr + m[i] * momentum
                        } else {
                            m[i]
                        };
                    }
                } else {
                    for i in 0..w.len() {
                        w[i] += -g[i] * lr;
                    }
                }
            }
            Optimizer::RmsProp {
                rho,
                momentum,
                epsilon,
            } => {
                let (velocity, rest) = state.split_at_mut(1);
                let velocity = &mut velocity[0];
                for i in 0..w.len() {
                    velocity[i] = rho * velocity[i] + (1.0 - rho) * g[i] * g[i];
                    let increment = lr * g[i] / (velocity[i] + epsilon).sqrt();
                    if momentum > 0.0 {
                        let m = &mut rest[0];
                        m[i] = momentum * m[i] + increment;
                        w[i] -= m[i];
                    } else {
                        w[i] -= increment;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two Adam steps on one weight, by hand from the formulas in tf_keras's adam.py:
    /// g = 0.5 then -0.25, lr 0.1, b1 0.9, b2 0.999, eps 1e-7.
    #[test]
    fn adam_by_hand() {
        let (opt, decay) = Optimizer::new("adam", &OptimizerArgs::default()).unwrap();
        assert_eq!(decay, None);
        let mut w = [1.0f32];
        let mut state = vec![vec![0.0f32]; opt.slots()];
        opt.update(&mut w, &[0.5], &mut state, 0.1, 1, decay);
        // m = 0.05, v = 0.00025, alpha = 0.1 sqrt(0.001) / 0.1 = 0.0316228;
        // w = 1 - 0.05 * 0.0316228 / (0.0158114 + 1e-7) = 0.9000006.
        assert!((w[0] - 0.900_000_6).abs() < 1e-6, "{}", w[0]);
        opt.update(&mut w, &[-0.25], &mut state, 0.1, 2, decay);
        // m = 0.045 - 0.025 = 0.02, v = 0.00024975 + 0.0000625 = 0.00031225,
        // alpha = 0.1 sqrt(1 - 0.998001) / (1 - 0.81) = 0.0235317;
        // w = 0.9000006 - 0.02 * 0.0235317 / (0.0176706 + 1e-7) = 0.8733670.
        assert!((w[0] - 0.873_367).abs() < 2e-6, "{}", w[0]);
    }

    #[test]
    fn arguments_that_do_not_apply_are_refused() {
        let args = OptimizerArgs {
            rho: Some(0.9),
            ..Default::default()
        };
        assert!(Optimizer::new("adam", &args).unwrap_err().contains("--rho"));
        assert!(Optimizer::new("adagrad", &OptimizerArgs::default()).is_err());
        let (_, decay) = Optimizer::new("adamw", &OptimizerArgs::default()).unwrap();
        assert_eq!(decay, Some(0.004));
    }
}
