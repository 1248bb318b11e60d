//! Concatenate and the elementwise merges (Add, Multiply, Subtract, Average, Maximum,
//! Minimum): several inputs, no weights.

use super::{LayerKind, Shape, ShapeError};
use crate::ir::value::ArgReader;
use crate::text::shape_text;
use serde_json::{json, Value as Json};

#[derive(Debug, Clone, PartialEq)]
pub struct Concatenate {
    pub axis: i64,
}

/// The Cropping2D argument that brings an `(h, w)` map down to `(th, tw)`, centred with the
/// odd pixel cropped at the bottom/right, as Keras users crop skips.
pub fn crop_to(h: i64, w: i64, th: i64, tw: i64) -> String {
    let (dh, dw) = (h - th, w - tw);
    let (t, l) = (dh / 2, dw / 2);
    cropping_text([t, dh - t, l, dw - l])
}

/// A Cropping2D's `[top, bottom, left, right]` as a spec writes it: `4`, `(4, 5)` or
/// `((4, 5), (4, 5))`.
pub fn cropping_text([t, b, l, r]: [i64; 4]) -> String {
    if t == b && l == r && t == l {
        format!("{t}")
    } else if t == b && l == r {
        format!("({t}, {l})")
    } else {
        format!("(({t}, {b}), ({l}, {r}))")
    }
}

impl LayerKind for Concatenate {
    const CLASS: &'static str = "Concatenate";
    const POSITIONAL: &'static [&'static str] = &["axis"];
    const KNOWN: &'static [&'static str] = &["axis"];
    const IMPORTED_CONFIG: &'static [&'static str] = &["axis"];

    fn parse(r: &mut ArgReader) -> Self {
        Concatenate {
            axis: r.int_or("axis", -5, 4, -1),
        }
    }

    fn infer(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        let first = &inputs[0];
        let rank = first.len() as i64;
        if inputs.iter().any(|s| s.len() != first.len()) {
            return Err(ShapeError::new(
                "E-concat-rank",
                "concatenate needs inputs of the same rank",
                "inputs differ in rank",
            ));
        }
        // Keras's axis counts the batch dimension; -1 is the last.
        let axis = if self.axis < 0 {
            rank + 1 + self.axis
        } else {
            self.axis
        };
        if axis < 1 || axis > rank {
            return Err(ShapeError::new(
                "E-axis",
                format!(
                    "concatenate axis {} is not a feature axis of a {}-D input",
                    self.axis,
                    rank + 1
                ),
                "bad axis",
            ));
        }
        let a = (axis - 1) as usize;
        let mismatch = inputs
            .iter()
            .position(|s| s.iter().enumerate().any(|(i, &d)| i != a && d != first[i]));
        if let Some(other) = mismatch {
            let sizes: Vec<String> = inputs
                .iter()
                .enumerate()
                .map(|(i, s)| format!("{{{i}}} is {}", spatial(s)))
                .collect();
            let mut err = ShapeError::new(
                "E-concat-shape",
                format!("inputs differ in size: {}", sizes.join(" but ")),
                format!("{} vs {}", spatial(first), spatial(&inputs[other])),
            );
            if rank == 3 && a == 2 {
                // Suggest cropping every larger input down to the smallest.
                let th = inputs.iter().map(|s| s[0]).min().unwrap_or(0);
                let tw = inputs.iter().map(|s| s[1]).min().unwrap_or(0);
                for (i, s) in inputs.iter().enumerate() {
                    if s[0] > th || s[1] > tw {
                        let crop = crop_to(s[0], s[1], th, tw);
                        err = err.help(format!(
                            "add `cropping2d({crop})` to {{{i}}} to crop it from {}x{} to {th}x{tw}",
                            s[0], s[1]
                        ));
                    }
                }
            }
            return Err(err);
        }
        let mut out = first.clone();
        out[a] = inputs.iter().map(|s| s[a]).sum();
        Ok(out)
    }

    fn config(&self) -> Json {
        json!({ "axis": self.axis })
    }

    fn arity() -> (usize, usize) {
        (2, usize::MAX)
    }
}

fn spatial(s: &Shape) -> String {
    match s.as_slice() {
        [h, w, _] => format!("{h}x{w}"),
        other => shape_text(other),
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Add;

impl LayerKind for Add {
    const CLASS: &'static str = "Add";
    const POSITIONAL: &'static [&'static str] = &[];
    const KNOWN: &'static [&'static str] = &[];
    const IMPORTED_CONFIG: &'static [&'static str] = &[];

    fn parse(_r: &mut ArgReader) -> Self {
        Add
    }

    fn infer(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        let first = &inputs[0];
        if let Some(i) = inputs.iter().position(|s| s != first) {
            return Err(ShapeError::new(
                "E-add-shape",
                format!(
                    "add needs inputs of one shape: {{0}} is {} but {{{i}}} is {}",
                    shape_text(first),
                    shape_text(&inputs[i])
                ),
                "shapes differ",
            ));
        }
        Ok(first.clone())
    }

    fn macs(&self, _inputs: &[Shape], _output: &Shape) -> u64 {
        0
    }

    fn config(&self) -> Json {
        json!({})
    }

    fn arity() -> (usize, usize) {
        (2, usize::MAX)
    }
}

/// tf.keras's InceptionResNetV2 residual: `inputs[0] + inputs[1] * scale` (its own layer class,
/// `tf_keras.applications.inception_resnet_v2.CustomScaleLayer`; U-Nets on that encoder have 40).
#[derive(Debug, Clone, PartialEq)]
pub struct CustomScaleLayer {
    pub scale: f64,
}

impl CustomScaleLayer {
    /// `a + b * scale` in float32, in TensorFlow's order (the product first).
    pub fn apply(&self, a: f32, b: f32) -> f32 {
        a + b * self.scale as f32
    }

    /// [`Self::apply`] over whole tensors, into `out`.
    pub fn apply_all(&self, a: &[f32], b: &[f32], out: &mut [f32]) {
        for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
            *o = self.apply(a, b);
        }
    }

    /// The gradients of `a` and `b` from the output's: `dy` and `dy * scale`.
    pub fn gradients(&self, dy: Vec<f32>) -> [Vec<f32>; 2] {
        let scale = self.scale as f32;
        let db = dy.iter().map(|g| g * scale).collect();
        [dy, db]
    }
}

impl LayerKind for CustomScaleLayer {
    const CLASS: &'static str = "CustomScaleLayer";
    const POSITIONAL: &'static [&'static str] = &["scale"];
    const KNOWN: &'static [&'static str] = &["scale"];
    const IMPORTED_CONFIG: &'static [&'static str] = &["scale"];
    /// Where tf.keras (and Keras 2 before it) define the class.
    const KERAS_MODULES: &'static [&'static str] = &[
        "tf_keras.src.applications.inception_resnet_v2",
        "keras.src.applications.inception_resnet_v2",
        "keras.applications.inception_resnet_v2",
    ];

    fn parse(r: &mut ArgReader) -> Self {
        if !r.has("scale") {
            r.missing("scale", "[x, up] -> custom_scale_layer(0.17)");
        }
        CustomScaleLayer {
            scale: r.float_or("scale", -f64::MAX, f64::MAX, 1.0),
        }
    }

    fn infer(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        let [a, b] = inputs else {
            return Err(ShapeError::new(
                "E-arity",
                format!("CustomScaleLayer takes 2 inputs, not {}", inputs.len()),
                "wrong number of inputs",
            ));
        };
        if a != b {
            return Err(ShapeError::new(
                "E-merge-shape",
                format!(
                    "CustomScaleLayer needs inputs of one shape: {{0}} is {} but {{1}} is {}",
                    shape_text(a),
                    shape_text(b)
                ),
                "shapes differ",
            ));
        }
        Ok(a.clone())
    }

    fn config(&self) -> Json {
        json!({ "scale": self.scale })
    }

    fn arity() -> (usize, usize) {
        (2, 2)
    }
}

/// What an elementwise merge computes from its inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MergeFn {
    Add,
    Multiply,
    /// Exactly two inputs: the first minus the second.
    Subtract,
    Average,
    Maximum,
    Minimum,
    /// Exactly two inputs: the first divided by the second (tf.math.truediv only; Keras has no
    /// such merge layer).
    Divide,
}

/// Keras's shape rule for elementwise merges (`_Merge._compute_elemwise_op_output_shape`):
/// shapes aligned at the last axis, each axis equal or 1 in one of them (broadcast), a missing
/// leading axis counting as 1.
pub fn broadcast_shapes(inputs: &[Shape], class: &str) -> Result<Shape, ShapeError> {
    let mut out: Shape = inputs.first().cloned().unwrap_or_default();
    for (i, s) in inputs.iter().enumerate().skip(1) {
        let rank = out.len().max(s.len());
        let at = |v: &Shape, k: usize| {
            let missing = rank - v.len();
            if k < missing {
                1
            } else {
                v[k - missing]
            }
        };
        let mut next = Vec::with_capacity(rank);
        for k in 0..rank {
            let (a, b) = (at(&out, k), at(s, k));
            next.push(if a == b || b == 1 {
                a
            } else if a == 1 {
                b
            } else {
                return Err(ShapeError::new(
                    "E-merge-shape",
                    format!(
                        "{class} needs inputs whose shapes match or broadcast (each axis equal, \
                         or 1 in one of them): {{0}} is {} but {{{i}}} is {}",
                        shape_text(&inputs[0]),
                        shape_text(s)
                    ),
                    "shapes differ",
                )
                .help("give a gate one channel to scale every channel, or make the shapes equal"));
            });
        }
        out = next;
    }
    Ok(out)
}

/// The Keras merges that apply one function elementwise, with broadcasting: one struct each, as
/// Keras has one class each.
macro_rules! elementwise_merge {
    ($($(#[$doc:meta])* $name:ident = $function:ident, max_inputs: $max:expr;)*) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq)]
        pub struct $name;

        impl $name {
            pub const FUNCTION: MergeFn = MergeFn::$function;
        }

        impl LayerKind for $name {
            const CLASS: &'static str = stringify!($name);
            const POSITIONAL: &'static [&'static str] = &[];
            const KNOWN: &'static [&'static str] = &[];
            const IMPORTED_CONFIG: &'static [&'static str] = &[];

            fn parse(_r: &mut ArgReader) -> Self {
                $name
            }

            fn infer(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
                broadcast_shapes(inputs, Self::CLASS)
            }

            fn config(&self) -> Json {
                json!({})
            }

            fn arity() -> (usize, usize) {
                (2, $max)
            }
        }
    )*};
}

elementwise_merge! {
    /// `x * g`: attention gates, squeeze-and-excitation.
    Multiply = Multiply, max_inputs: usize::MAX;
    /// `a - b`, exactly two inputs.
    Subtract = Subtract, max_inputs: 2;
    Average = Average, max_inputs: usize::MAX;
    Maximum = Maximum, max_inputs: usize::MAX;
    Minimum = Minimum, max_inputs: usize::MAX;
}
