//! Keras's weight and activity regularizers (`kernel_regularizer=L2(1e-4)`): penalties that
//! training adds to the loss. They change nothing at inference; `unetc train` adds them as
//! tf.keras does (every regularized weight's penalty, frozen layers' included, in the loss; the
//! trainable weights' penalty gradients in their gradients).

use crate::ir::value::{ArgValue, Value};
use serde_json::{json, Value as Json};

/// `l1 * sum(|w|) + l2 * sum(w^2)`: Keras's L1, L2 and L1L2.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Regularizer {
    pub l1: f64,
    pub l2: f64,
}

/// tf.keras 2.x's factor for `"l1"`, `"l2"` and `"l1_l2"` given by name.
const DEFAULT_FACTOR: f64 = 0.01;

impl Regularizer {
    /// The penalty of `w`: TensorFlow's `l2 * reduce_sum(square(w))` in float32, whose sum is a
    /// tree reduction; summed here in f64 (closer to that than a running float32 sum).
    pub fn penalty(&self, w: &[f32]) -> f64 {
        let mut total = 0.0f32;
        if self.l1 != 0.0 {
            let sum: f64 = w.iter().map(|v| f64::from(v.abs())).sum();
            total += self.l1 as f32 * sum as f32;
        }
        if self.l2 != 0.0 {
            let sum: f64 = w.iter().map(|&v| f64::from(v * v)).sum();
            total += self.l2 as f32 * sum as f32;
        }
        f64::from(total)
    }

    /// Adds the penalty's gradient to `grad` (`sign(0)` is 0, as TensorFlow's).
    pub fn add_gradient(&self, w: &[f32], grad: &mut [f32]) {
        let (l1, l2) = (self.l1 as f32, self.l2 as f32);
        for (g, &v) in grad.iter_mut().zip(w) {
            let sign = if v > 0.0 {
                1.0
            } else if v < 0.0 {
                -1.0
            } else {
                0.0
            };
            *g += l1 * sign + 2.0 * l2 * v;
        }
    }

    /// The spec's form (the factors as the float32 Keras keeps them): `{l2: 0.0001}`, `{l1: 0.001}` or `{l1: .., l2: ..}`.
    pub fn spec_text(&self) -> String {
        match (self.l1 != 0.0, self.l2 != 0.0) {
            (true, false) => format!("{{l1: {:?}}}", self.l1 as f32),
            (false, true) => format!("{{l2: {:?}}}", self.l2 as f32),
            (true, true) | (false, false) => {
                format!("{{l1: {:?}, l2: {:?}}}", self.l1 as f32, self.l2 as f32)
            }
        }
    }

    /// The tf.keras object that builds it (`tf.keras.regularizers.L2(0.0001)`).
    pub fn python(&self) -> String {
        match (self.l1 != 0.0, self.l2 != 0.0) {
            (true, false) => format!("tf.keras.regularizers.L1({:?})", self.l1 as f32),
            (false, true) => format!("tf.keras.regularizers.L2({:?})", self.l2 as f32),
            (true, true) | (false, false) => format!(
                "tf.keras.regularizers.L1L2(l1={:?}, l2={:?})",
                self.l1 as f32, self.l2 as f32
            ),
        }
    }

    pub fn config(&self) -> Json {
        json!({ "l1": self.l1, "l2": self.l2 })
    }

    /// A spec value: `{l2: 0.0001}`, `{l1: 0.001, l2: 0.0001}`, or a name Keras accepts
    /// (`l1`, `l2`, `l1_l2`: factor 0.01). `None` (Keras's default) is no regularizer.
    pub fn from_value(value: &Value) -> Result<Option<Regularizer>, String> {
        let factor = |v: &Value, key: &str| {
            let f = match v {
                Value::Int(i) => *i as f64,
                Value::Float(f) => *f,
                other => {
                    return Err(format!(
                        "`{key}` must be a number, not {}",
                        other.type_name()
                    ))
                }
            };
            if f.is_finite() && f >= 0.0 {
                Ok(f)
            } else {
                Err(format!(
                    "`{key}` must be a finite number of at least 0, not {f}"
                ))
            }
        };
        match value {
            Value::None => Ok(None),
            Value::Str(name) => match name.as_str() {
                "l1" => Ok(Some(Regularizer {
                    l1: DEFAULT_FACTOR,
                    l2: 0.0,
                })),
                "l2" => Ok(Some(Regularizer {
                    l1: 0.0,
                    l2: DEFAULT_FACTOR,
                })),
                "l1_l2" => Ok(Some(Regularizer {
                    l1: DEFAULT_FACTOR,
                    l2: DEFAULT_FACTOR,
                })),
                other => Err(format!(
                    "`{other}` is no regularizer unetc knows: `l1`, `l2`, `l1_l2`, or \
                     `{{l1: 0.001}}`, `{{l2: 0.0001}}`, `{{l1: .., l2: ..}}`"
                )),
            },
            Value::Map(entries) => {
                let mut r = Regularizer { l1: 0.0, l2: 0.0 };
                for (key, v) in entries {
                    match key.as_str() {
                        "l1" => r.l1 = factor(v, key)?,
                        "l2" => r.l2 = factor(v, key)?,
                        other => {
                            return Err(format!("a regularizer has `l1` and `l2`, not `{other}`"))
                        }
                    }
                }
                Ok(Some(r))
            }
            other => Err(format!(
                "a regularizer is `{{l2: 0.0001}}`, `{{l1: ..}}`, `{{l1: .., l2: ..}}` or a \
                 name (`l2`), not {}",
                other.type_name()
            )),
        }
    }

    /// A Keras config's regularizer (`{"class_name": "L2", "config": {"l2": 1e-4}}`, or Keras's
    /// name for one); `Err` for a class unetc does not know.
    pub fn from_keras(v: &Json) -> Result<Option<Regularizer>, String> {
        if v.is_null() {
            return Ok(None);
        }
        if let Some(name) = v.as_str() {
            return Regularizer::from_value(&Value::Str(name.to_string()));
        }
        let class = v.get("class_name").and_then(Json::as_str).unwrap_or("?");
        let config = v.get("config");
        let factor = |key: &str| -> Result<f64, String> {
            match config.and_then(|c| c.get(key)) {
                None | Some(Json::Null) => Ok(0.0),
                Some(x) => x
                    .as_f64()
                    .filter(|f| f.is_finite() && *f >= 0.0)
                    .ok_or_else(|| format!("{class}'s `{key}` is not a number of at least 0")),
            }
        };
        match class {
            "L1" | "l1" => Ok(Some(Regularizer {
                l1: factor("l1")?,
                l2: 0.0,
            })),
            "L2" | "l2" => Ok(Some(Regularizer {
                l1: 0.0,
                l2: factor("l2")?,
            })),
            "L1L2" | "l1_l2" => Ok(Some(Regularizer {
                l1: factor("l1")?,
                l2: factor("l2")?,
            })),
            other => Err(format!(
                "the regularizer {other} is not one unetc knows (L1, L2, L1L2)"
            )),
        }
    }
}

/// The argument of a layer's output regularizer, which every kind takes.
pub const ACTIVITY: &str = "activity_regularizer";

/// Every regularizer argument of a kind whose weight regularizers are `regularized`
/// ([`crate::ir::ops::LayerKind::REGULARIZED`]): those and [`ACTIVITY`].
pub fn arguments(
    regularized: &'static [(&'static str, &'static str)],
) -> impl Iterator<Item = &'static str> {
    regularized.iter().map(|&(arg, _)| arg).chain([ACTIVITY])
}

/// A layer's regularizers: of its weights, by Keras variable name, and of its output.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Regularizers {
    /// `(argument, variable, regularizer)`: `("kernel_regularizer", "kernel", L2(1e-4))`.
    pub weights: Vec<(&'static str, &'static str, Regularizer)>,
    /// `activity_regularizer`: a penalty on the layer's output, divided by the batch size.
    pub activity: Option<Regularizer>,
}

impl Regularizers {
    pub fn is_empty(&self) -> bool {
        self.weights.is_empty() && self.activity.is_none()
    }

    /// The regularizer of the variable `var`, if any.
    pub fn of(&self, var: &str) -> Option<Regularizer> {
        self.weights
            .iter()
            .find(|(_, v, _)| *v == var)
            .map(|&(_, _, r)| r)
    }

    /// Every regularizer argument with its value, in the spec's form (`kernel_regularizer:
    /// {l2: 0.0001}`).
    pub fn spec_args(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .weights
            .iter()
            .map(|(arg, _, r)| format!("{arg}: {}", r.spec_text()))
            .collect();
        if let Some(r) = self.activity {
            out.push(format!("{ACTIVITY}: {}", r.spec_text()));
        }
        out
    }

    /// Takes the regularizer arguments out of a layer call's arguments: `regularized` maps the
    /// kind's arguments to its variables (`kernel_regularizer` -> `kernel`); every kind takes
    /// `activity_regularizer`. Returns them and the errors, by argument.
    pub fn take(
        args: &mut Vec<ArgValue>,
        regularized: &'static [(&'static str, &'static str)],
    ) -> (Regularizers, Vec<(ArgValue, String)>) {
        let mut out = Regularizers::default();
        let mut errors = Vec::new();
        let mut i = 0;
        while i < args.len() {
            let name = args[i].name.clone().unwrap_or_default();
            if !arguments(regularized).any(|arg| arg == name) {
                i += 1;
                continue;
            }
            let slot = regularized.iter().find(|(arg, _)| *arg == name);
            let arg = args.remove(i);
            match (Regularizer::from_value(&arg.value), slot) {
                (Ok(None), _) => {}
                (Ok(Some(r)), Some(&(a, var))) => out.weights.push((a, var, r)),
                (Ok(Some(r)), None) => out.activity = Some(r),
                (Err(why), _) => errors.push((arg, why)),
            }
        }
        (out, errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn penalty_and_gradient_are_keras_formulas() {
        let r = Regularizer { l1: 0.5, l2: 0.25 };
        let w = [2.0f32, -1.0, 0.0];
        // 0.5 * (2 + 1 + 0) + 0.25 * (4 + 1 + 0) = 1.5 + 1.25
        assert_eq!(r.penalty(&w), 2.75);
        let mut g = [1.0f32; 3];
        r.add_gradient(&w, &mut g);
        // 1 + 0.5 * sign(w) + 2 * 0.25 * w
        assert_eq!(g, [1.0 + 0.5 + 1.0, 1.0 - 0.5 - 0.5, 1.0]);
    }

    #[test]
    fn spec_and_keras_forms_read_alike() {
        let keras =
            serde_json::json!({"class_name": "L1L2", "config": {"l1": 0.001, "l2": 0.0001}});
        let r = Regularizer::from_keras(&keras).unwrap().unwrap();
        assert_eq!(
            r,
            Regularizer {
                l1: 0.001,
                l2: 0.0001
            }
        );
        assert_eq!(r.spec_text(), "{l1: 0.001, l2: 0.0001}");
        assert_eq!(
            Regularizer::from_value(&Value::Str("l2".into())).unwrap(),
            Some(Regularizer { l1: 0.0, l2: 0.01 })
        );
        assert!(Regularizer::from_keras(
            &serde_json::json!({"class_name": "OrthogonalRegularizer"})
        )
        .is_err());
        assert!(
            Regularizer::from_value(&Value::Map(vec![("l3".into(), Value::Float(1.0))])).is_err()
        );
    }
}
