//! Property tests of the `unet` template and of mutated specs.
//!
//! 1. Random valid `unet` templates (depth 1–5, filters, convs, padding valid/same, kernel sizes
//!    1/3/5, up modes transpose/upsample, batch norm, dropout, heads, input sizes) compile to the
//!    layers, shapes and parameter counts that a closed-form computation written here predicts,
//!    independently of unetc's own shape rules; input sizes the closed form rejects must give an
//!    error instead.
//! 2. Random mutations of the template's arguments (deleted, swapped, retyped values) either give
//!    errors whose spans lie inside the file, or compile to exactly what the closed form predicts
//!    for the mutated arguments: never a panic, never an `Ok` with a wrong shape.
//! 3. Random token mutations of every spec in specs/ never panic, and every diagnostic points
//!    inside the file; a spec that still compiles has a known, positive shape for every layer.

mod common;

use common::*;
use proptest::prelude::*;
use proptest::test_runner::Config;
use std::path::PathBuf;
use unetc::diag::render_plain;
use unetc::expand::Session;
use unetc::{compile_source, Compiled, Options};

// ---------------------------------------------------------------------------------------------
// The closed form.

/// Template arguments as the test generates them (always of the right types).
#[derive(Debug, Clone)]
struct Template {
    h: i64,
    w: i64,
    c: i64,
    depth: i64,
    filters: i64,
    convs: i64,
    kernel: i64,
    same: bool,
    upsample: bool,
    batch_norm: bool,
    dropout: bool,
    crop: bool,
    skip_first: bool,
    classes: i64,
    head_activation: &'static str,
    head_layer: bool,
}

/// One layer the closed form predicts: Keras class, output (H, W, C), parameters.
#[derive(Debug, Clone, PartialEq)]
struct Layer {
    class: &'static str,
    shape: [i64; 3],
    params: u64,
}

/// What the template must build: every layer in creation order, or `None` when the input size
/// cannot go through the network (a size reaches zero, or an up path outgrows its skip).
fn closed_form(t: &Template) -> Option<Vec<Layer>> {
    let k = t.kernel;
    let shrink = if t.same { 0 } else { k - 1 };
    let f = |level: i64| t.filters << level;
    let mut layers = vec![Layer {
        class: "InputLayer",
        shape: [t.h, t.w, t.c],
        params: 0,
    }];
    // One template conv: conv (+ batch norm + activation).
    let conv = |layers: &mut Vec<Layer>, hw: [i64; 2], cin: i64, cout: i64| -> Option<[i64; 2]> {
        let out = [hw[0] - shrink, hw[1] - shrink];
        if out[0] < 1 || out[1] < 1 {
            return None;
        }
        let shape = [out[0], out[1], cout];
        layers.push(Layer {
            class: "Conv2D",
            shape,
            params: (k * k * cin * cout + cout) as u64,
        });
        if t.batch_norm {
            layers.push(Layer {
                class: "BatchNormalization",
                shape,
                params: 4 * cout as u64,
            });
            layers.push(Layer {
                class: "Activation",
                shape,
                params: 0,
            });
        }
        Some(out)
    };
    let dropout_levels = [t.depth - 1, t.depth];

    let mut hw = [t.h, t.w];
    let mut cin = t.c;
    let mut skips = Vec::new();
    for level in 0..=t.depth {
        for _ in 0..t.convs {
            hw = conv(&mut layers, hw, cin, f(level))?;
            cin = f(level);
        }
        if t.dropout && dropout_levels.contains(&level) {
            layers.push(Layer {
                class: "Dropout",
                shape: [hw[0], hw[1], cin],
                params: 0,
            });
        }
        if level < t.depth {
            skips.push(hw);
            // Keras's pooling floors.
            hw = [hw[0] / 2, hw[1] / 2];
            if hw[0] < 1 || hw[1] < 1 {
                return None;
            }
            layers.push(Layer {
                class: "MaxPooling2D",
                shape: [hw[0], hw[1], cin],
                params: 0,
            });
        }
    }
    for level in (0..t.depth).rev() {
        let up = [hw[0] * 2, hw[1] * 2];
        if t.upsample {
            layers.push(Layer {
                class: "UpSampling2D",
                shape: [up[0], up[1], cin],
                params: 0,
            });
            layers.push(Layer {
                class: "Conv2D",
                shape: [up[0], up[1], f(level)],
                params: (4 * cin * f(level) + f(level)) as u64,
            });
        } else {
            layers.push(Layer {
                class: "Conv2DTranspose",
                shape: [up[0], up[1], f(level)],
                params: (4 * cin * f(level) + f(level)) as u64,
            });
        }
        let skip = skips[level as usize];
        if skip[0] < up[0] || skip[1] < up[1] || (!t.crop && skip != up) {
            return None;
        }
        if skip != up {
            layers.push(Layer {
                class: "Cropping2D",
                shape: [up[0], up[1], f(level)],
                params: 0,
            });
        }
        layers.push(Layer {
            class: "Concatenate",
            shape: [up[0], up[1], 2 * f(level)],
            params: 0,
        });
        hw = up;
        cin = 2 * f(level);
        for _ in 0..t.convs {
            hw = conv(&mut layers, hw, cin, f(level))?;
            cin = f(level);
        }
    }
    layers.push(Layer {
        class: "Conv2D",
        shape: [hw[0], hw[1], t.classes],
        params: (cin * t.classes + t.classes) as u64,
    });
    if t.head_layer {
        match t.head_activation {
            "softmax" => layers.push(Layer {
                class: "Softmax",
                shape: [hw[0], hw[1], t.classes],
                params: 0,
            }),
            "linear" => {}
            _ => layers.push(Layer {
                class: "Activation",
                shape: [hw[0], hw[1], t.classes],
                params: 0,
            }),
        }
    }
    Some(layers)
}

/// The total parameter count by formula, level by level (no layer list involved).
fn params_formula(t: &Template) -> u64 {
    let (k, n) = (t.kernel, t.convs);
    let f = |level: i64| t.filters << level;
    let bn = if t.batch_norm { 4 } else { 0 };
    // `n` convs from `cin` to `cout`, each with its bias (and batch norm).
    let convs = |cin: i64, cout: i64| {
        (k * k * cin * cout + cout) + (n - 1) * (k * k * cout * cout + cout) + n * bn * cout
    };
    let mut total = 0;
    for level in 0..=t.depth {
        total += convs(if level == 0 { t.c } else { f(level - 1) }, f(level));
    }
    for level in 0..t.depth {
        // The 2x2 up convolution (transposed, or after the upsampling) and the convs after the
        // concatenation of skip and up path (2 f channels).
        total += 4 * f(level + 1) * f(level) + f(level);
        total += convs(2 * f(level), f(level));
    }
    total += f(0) * t.classes + t.classes;
    total as u64
}

// ---------------------------------------------------------------------------------------------
// Spec text.

/// A template argument's value as written in the spec; mutations may make it the wrong type.
#[derive(Debug, Clone, PartialEq)]
enum Val {
    Int(i64),
    Float(f64),
    Word(&'static str),
    Str(&'static str),
    Bool(bool),
    Shape(i64, i64, i64),
    Map(Vec<(&'static str, Val)>),
    List(Vec<Val>),
    None,
}

impl Val {
    fn dsl(&self) -> String {
        match self {
            Val::Int(i) => i.to_string(),
            Val::Float(x) => format!("{x:?}"),
            Val::Word(w) => w.to_string(),
            Val::Str(s) => format!("\"{s}\""),
            Val::Bool(b) => b.to_string(),
            Val::Shape(h, w, c) => format!("{h}x{w}x{c}"),
            Val::Map(entries) => {
                let inner: Vec<String> = entries
                    .iter()
                    .map(|(k, v)| format!("{k}: {}", v.dsl()))
                    .collect();
                format!("{{{}}}", inner.join(", "))
            }
            Val::List(items) => {
                let inner: Vec<String> = items.iter().map(Val::dsl).collect();
                format!("[{}]", inner.join(", "))
            }
            Val::None => "none".into(),
        }
    }

    fn yaml(&self) -> String {
        match self {
            Val::Int(i) => i.to_string(),
            Val::Float(x) => format!("{x:?}"),
            Val::Word(w) => w.to_string(),
            Val::Str(s) => format!("\"{s}\""),
            Val::Bool(b) => b.to_string(),
            Val::Shape(h, w, c) => format!("[{h}, {w}, {c}]"),
            Val::Map(entries) => {
                let inner: Vec<String> = entries
                    .iter()
                    .map(|(k, v)| format!("{k}: {}", v.yaml()))
                    .collect();
                format!("{{{}}}", inner.join(", "))
            }
            Val::List(items) => {
                let inner: Vec<String> = items.iter().map(Val::yaml).collect();
                format!("[{}]", inner.join(", "))
            }
            Val::None => "null".into(),
        }
    }
}

/// The template's keyword arguments, in order.
fn arguments(t: &Template) -> Vec<(&'static str, Val)> {
    let mut args = vec![
        ("input", Val::Shape(t.h, t.w, t.c)),
        ("depth", Val::Int(t.depth)),
        ("filters", Val::Int(t.filters)),
        ("convs", Val::Int(t.convs)),
        (
            "conv",
            Val::Map(vec![
                ("kernel_size", Val::Int(t.kernel)),
                ("padding", Val::Word(if t.same { "same" } else { "valid" })),
                ("activation", Val::Word("relu")),
            ]),
        ),
        (
            "up",
            Val::Word(if t.upsample { "upsample" } else { "transpose" }),
        ),
        ("batch_norm", Val::Bool(t.batch_norm)),
        (
            "skip",
            Val::Map(vec![
                ("crop", Val::Word("auto")),
                (
                    "order",
                    Val::Word(if t.skip_first {
                        "skip_first"
                    } else {
                        "up_first"
                    }),
                ),
            ]),
        ),
        (
            "head",
            Val::Map(vec![
                ("classes", Val::Int(t.classes)),
                ("activation", Val::Word(t.head_activation)),
                ("layer", Val::Bool(t.head_layer)),
            ]),
        ),
    ];
    if t.dropout {
        args.push(("dropout", Val::Float(0.5)));
    }
    args
}

fn spec_text(args: &[(&'static str, Val)], yaml: bool) -> String {
    if yaml {
        let mut s = String::from("unet:\n");
        for (k, v) in args {
            s.push_str(&format!("  {k}: {}\n", v.yaml()));
        }
        s
    } else {
        let inner: Vec<String> = args
            .iter()
            .map(|(k, v)| format!("{k}: {}", v.dsl()))
            .collect();
        format!("model {{\n  unet({})\n}}\n", inner.join(",\n       "))
    }
}

/// What the template must make of (possibly mutated) arguments.
#[derive(Debug)]
enum Verdict {
    /// Valid arguments, read the way the README documents them (deleted ones take defaults).
    Valid(Template),
    /// Arguments the template must refuse with an error.
    Invalid,
    /// Arguments whose meaning this test does not model (say, extra keyword arguments of the
    /// head's conv); only "no panic, spans inside the file" is checked.
    Unsure,
}

fn interpret(args: &[(&'static str, Val)]) -> Verdict {
    use Verdict::*;
    let mut t = Template {
        h: 0,
        w: 0,
        c: 0,
        depth: 4,
        filters: 64,
        convs: 2,
        kernel: 3,
        same: true,
        upsample: false,
        batch_norm: false,
        dropout: false,
        crop: true,
        skip_first: true,
        classes: 2,
        head_activation: "softmax",
        head_layer: false,
    };
    let mut input = false;
    let mut unsure = false;
    let word = |v: &Val| match v {
        Val::Word(w) | Val::Str(w) => Some(*w),
        _ => None,
    };
    for (k, v) in args {
        match (*k, v) {
            ("input", Val::Shape(h, w, c)) if *h >= 1 && *w >= 1 && *c >= 1 => {
                (t.h, t.w, t.c) = (*h, *w, *c);
                input = true;
            }
            ("depth", Val::Int(d)) if (1..=12).contains(d) => t.depth = *d,
            ("filters", Val::Int(f)) if (1..=1 << 16).contains(f) => t.filters = *f,
            ("convs", Val::Int(n)) if (1..=8).contains(n) => t.convs = *n,
            // Entries replace the defaults {kernel_size: 3, padding: same, activation: relu}.
            ("conv", Val::Map(entries)) => {
                for (ck, cv) in entries {
                    match (*ck, cv) {
                        ("kernel_size", Val::Int(k)) if (1..=64).contains(k) => t.kernel = *k,
                        ("kernel_size", Val::Int(k)) if *k < 1 => return Invalid,
                        ("kernel_size", Val::List(items)) if matches!(items.as_slice(), [Val::Int(a), Val::Int(b)] if a == b && (1..=64).contains(a)) =>
                        {
                            let Val::Int(k) = items[0] else {
                                unreachable!()
                            };
                            t.kernel = k;
                        }
                        ("kernel_size", _) => unsure = true,
                        ("padding", v) if word(v) == Some("same") => t.same = true,
                        ("padding", v) if word(v) == Some("valid") => t.same = false,
                        ("padding", _) => return Invalid,
                        ("activation", v) if word(v) == Some("relu") || *v == Val::None => {}
                        ("activation", _) => unsure = true,
                        // Not an argument of Conv2D.
                        _ => return Invalid,
                    }
                }
            }
            ("up", v) if word(v) == Some("upsample") => t.upsample = true,
            ("up", v) if word(v) == Some("transpose") => t.upsample = false,
            ("up", Val::Map(entries)) if entries.is_empty() => {}
            ("up", Val::Map(_)) => unsure = true,
            ("batch_norm", Val::Bool(b)) => t.batch_norm = *b,
            ("dropout", Val::Float(r)) if (0.0..1.0).contains(r) => t.dropout = true,
            ("dropout", Val::None) => t.dropout = false,
            ("skip", Val::Map(entries)) => {
                for (sk, sv) in entries {
                    match (*sk, word(sv)) {
                        ("crop", Some("auto")) => t.crop = true,
                        ("crop", Some("none")) => t.crop = false,
                        ("crop", None) if *sv == Val::None => t.crop = false,
                        ("order", Some("skip_first")) => t.skip_first = true,
                        ("order", Some("up_first")) => t.skip_first = false,
                        _ => return Invalid,
                    }
                }
            }
            ("head", Val::Map(entries)) => {
                for (hk, hv) in entries {
                    match (*hk, hv) {
                        ("classes", Val::Int(c)) if (1..=1 << 16).contains(c) => t.classes = *c,
                        ("classes", _) => return Invalid,
                        ("activation", Val::None) => t.head_activation = "linear",
                        ("activation", v) if matches!(word(v), Some("softmax" | "sigmoid")) => {
                            t.head_activation = word(v).unwrap()
                        }
                        ("activation", _) => unsure = true,
                        ("layer", Val::Bool(b)) => t.head_layer = *b,
                        ("layer", _) => return Invalid,
                        // Other keys are keyword arguments of the head's conv.
                        _ => unsure = true,
                    }
                }
            }
            _ => return Invalid,
        }
    }
    if !input || (t.filters << t.depth) > 1 << 20 {
        return Invalid;
    }
    if unsure {
        Unsure
    } else {
        Valid(t)
    }
}

// ---------------------------------------------------------------------------------------------
// Checks.

fn compile_text(text: &str, yaml: bool) -> Compiled {
    let name = if yaml { "prop.yaml" } else { "prop.unet" };
    compile_source(
        &root().join("specs").join(name),
        text.to_string(),
        &Options::default(),
        &mut Session::new(),
    )
}

/// Every diagnostic points inside a file that was read; errors have a location.
fn spans_inside(c: &Compiled, text: &str) -> Result<(), TestCaseError> {
    for d in &c.diags {
        if d.is_error() {
            prop_assert!(
                d.primary.is_some(),
                "error without a location: {} {}\n{text}",
                d.code,
                d.message
            );
        }
        for (span, _) in d.primary.iter().chain(d.secondary.iter()) {
            let len = c.sources.text(span.file).len() as u32;
            prop_assert!(
                span.start <= span.end && span.end <= len,
                "{} `{}`: span {}..{} outside the file of {len} bytes\n{text}",
                d.code,
                d.message,
                span.start,
                span.end
            );
        }
    }
    // Rendering never panics.
    let _ = render_plain(&c.sources, &c.diags);
    let _ = unetc::report::json::check_json(c);
    Ok(())
}

/// The compiled graph is exactly the closed form's layer list, with its total.
fn matches_closed_form(c: &Compiled, t: &Template, text: &str) -> Result<(), TestCaseError> {
    let expected = match closed_form(t) {
        Some(layers) => layers,
        None => {
            prop_assert!(
                c.has_errors(),
                "the closed form rejects this input size, unetc accepts it:\n{text}"
            );
            prop_assert!(c
                .diags
                .iter()
                .any(|d| d.is_error() && matches!(d.code, "E-size" | "E-concat-shape")));
            return Ok(());
        }
    };
    prop_assert!(
        !c.has_errors(),
        "unexpected errors:\n{}\n{text}",
        render_plain(&c.sources, &c.diags)
    );
    let got: Vec<Layer> = c
        .graph
        .nodes
        .iter()
        .zip(&c.info.layers)
        .map(|(node, info)| {
            let shape = info.shape.clone().expect("every shape is known");
            Layer {
                class: leak(node.op.class_name()),
                shape: [shape[0], shape[1], shape[2]],
                params: info.params(),
            }
        })
        .collect();
    prop_assert_eq!(&got, &expected, "{}", text);
    let totals = c.info.totals(&c.graph);
    let by_layers: u64 = expected.iter().map(|l| l.params).sum();
    prop_assert_eq!(totals.params, by_layers);
    prop_assert_eq!(totals.params, params_formula(t), "{}", text);
    let bn_params: u64 = expected
        .iter()
        .filter(|l| l.class == "BatchNormalization")
        .map(|l| l.params / 2)
        .sum();
    prop_assert_eq!(totals.non_trainable, bn_params);
    // The model's output is the last layer, with the classes as channels.
    let last = expected.last().unwrap();
    prop_assert_eq!(c.graph.outputs.len(), 1);
    prop_assert_eq!(
        c.info.layers[c.graph.outputs[0].index()].shape.clone(),
        Some(last.shape.to_vec())
    );
    Ok(())
}

fn leak(s: &str) -> &'static str {
    // A handful of distinct class names: interning them costs nothing.
    for known in [
        "InputLayer",
        "Conv2D",
        "Conv2DTranspose",
        "BatchNormalization",
        "Activation",
        "Dropout",
        "MaxPooling2D",
        "UpSampling2D",
        "Cropping2D",
        "Concatenate",
        "Softmax",
    ] {
        if s == known {
            return known;
        }
    }
    Box::leak(s.to_string().into_boxed_str())
}

// ---------------------------------------------------------------------------------------------
// Strategies.

prop_compose! {
    fn template()(
        depth in 1i64..=5,
        filters in 1i64..=16,
        convs in 1i64..=3,
        kernel in prop_oneof![Just(1i64), Just(3), Just(5)],
        same in any::<bool>(),
        upsample in any::<bool>(),
        batch_norm in any::<bool>(),
        dropout in any::<bool>(),
        skip_first in any::<bool>(),
        classes in 1i64..=4,
        head_activation in prop_oneof![Just("softmax"), Just("sigmoid")],
        head_layer in any::<bool>(),
        c in 1i64..=4,
    )(
        // Sizes around those that fit: most go through, some do not.
        h in 1i64..=(8 << depth) + 40,
        w in 1i64..=(8 << depth) + 40,
        depth in Just(depth), filters in Just(filters), convs in Just(convs),
        kernel in Just(kernel), same in Just(same), upsample in Just(upsample),
        batch_norm in Just(batch_norm), dropout in Just(dropout), skip_first in Just(skip_first),
        classes in Just(classes), head_activation in Just(head_activation),
        head_layer in Just(head_layer), c in Just(c),
    ) -> Template {
        Template {
            h, w, c, depth, filters, convs, kernel, same, upsample, batch_norm, dropout,
            crop: true, skip_first, classes, head_activation, head_layer,
        }
    }
}

/// Values a mutation may put in place of an argument.
fn wrong_value() -> impl Strategy<Value = Val> {
    prop_oneof![
        (-3i64..=20).prop_map(Val::Int),
        Just(Val::Int(1 << 40)),
        Just(Val::Float(2.5)),
        Just(Val::Float(0.5)),
        Just(Val::Word("same")),
        Just(Val::Word("upsample")),
        Just(Val::Word("bogus")),
        Just(Val::Str("")),
        Just(Val::Bool(true)),
        Just(Val::None),
        Just(Val::Shape(0, 3, 1)),
        Just(Val::Shape(64, 64, 1)),
        Just(Val::List(vec![])),
        Just(Val::List(vec![Val::Int(3), Val::Int(3)])),
        Just(Val::Map(vec![])),
        Just(Val::Map(vec![("kernel_size", Val::Int(0))])),
    ]
}

#[derive(Debug, Clone)]
enum Mutation {
    /// Delete the argument (or, inside a map, the entry) at this index.
    Delete(usize, Option<usize>),
    /// Swap the values of two arguments.
    Swap(usize, usize),
    /// Give an argument (or a map entry) a value of another type or range.
    Retype(usize, Option<usize>, Val),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (0usize..10, proptest::option::of(0usize..3)).prop_map(|(i, j)| Mutation::Delete(i, j)),
        (0usize..10, 0usize..10).prop_map(|(i, j)| Mutation::Swap(i, j)),
        (0usize..10, proptest::option::of(0usize..3), wrong_value())
            .prop_map(|(i, j, v)| Mutation::Retype(i, j, v)),
    ]
}

fn apply(args: &mut Vec<(&'static str, Val)>, m: &Mutation) {
    let n = args.len();
    match m {
        Mutation::Delete(i, None) => {
            args.remove(i % n);
        }
        Mutation::Delete(i, Some(j)) => match &mut args[i % n].1 {
            Val::Map(entries) if !entries.is_empty() => {
                let len = entries.len();
                entries.remove(j % len);
            }
            _ => {
                args.remove(i % n);
            }
        },
        Mutation::Swap(i, j) => {
            let (a, b) = (args[i % n].1.clone(), args[j % n].1.clone());
            args[i % n].1 = b;
            args[j % n].1 = a;
        }
        Mutation::Retype(i, j, v) => match (&mut args[i % n].1, j) {
            (Val::Map(entries), Some(j)) if !entries.is_empty() => {
                let len = entries.len();
                entries[j % len].1 = v.clone();
            }
            (slot, _) => *slot = v.clone(),
        },
    }
}

// ---------------------------------------------------------------------------------------------
// Token mutations of the seed specs.

/// Byte ranges of the value tokens of a spec: numbers, shapes, bare words and strings.
fn value_tokens(text: &str) -> Vec<(usize, usize)> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'#' {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
        } else if c == b'"' {
            let start = i;
            i += 1;
            while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\n' {
                i += 1;
            }
            i = (i + 1).min(bytes.len());
            out.push((start, i));
        } else if c.is_ascii_alphanumeric() || c == b'_' {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            out.push((start, i));
        } else {
            i += 1;
        }
    }
    out
}

const REPLACEMENTS: &[&str] = &[
    "0", "1", "-1", "3", "7", "1000000", "2.5", "same", "valid", "relu", "none", "true", "\"x\"",
    "[]", "[1, 2]", "{}", "0x0x1", "5x5x1", "skip", "conv2d",
];

#[derive(Debug, Clone)]
enum TokenMutation {
    Delete(usize),
    Swap(usize, usize),
    Replace(usize, usize),
}

fn token_mutation() -> impl Strategy<Value = TokenMutation> {
    prop_oneof![
        any::<usize>().prop_map(TokenMutation::Delete),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| TokenMutation::Swap(a, b)),
        (any::<usize>(), 0..REPLACEMENTS.len()).prop_map(|(a, r)| TokenMutation::Replace(a, r)),
    ]
}

fn mutate_tokens(text: &str, mutations: &[TokenMutation]) -> String {
    let mut text = text.to_string();
    for m in mutations {
        let tokens = value_tokens(&text);
        if tokens.is_empty() {
            break;
        }
        let pick = |i: usize| tokens[i % tokens.len()];
        text = match m {
            TokenMutation::Delete(i) => {
                let (s, e) = pick(*i);
                format!("{}{}", &text[..s], &text[e..])
            }
            TokenMutation::Swap(a, b) => {
                let (mut x, mut y) = (pick(*a), pick(*b));
                if x.0 > y.0 {
                    std::mem::swap(&mut x, &mut y);
                }
                if x.1 > y.0 {
                    continue;
                }
                format!(
                    "{}{}{}{}{}",
                    &text[..x.0],
                    &text[y.0..y.1],
                    &text[x.1..y.0],
                    &text[x.0..x.1],
                    &text[y.1..]
                )
            }
            TokenMutation::Replace(i, r) => {
                let (s, e) = pick(*i);
                format!("{}{}{}", &text[..s], REPLACEMENTS[*r], &text[e..])
            }
        };
    }
    text
}

fn seed_specs() -> Vec<(PathBuf, String)> {
    spec_files()
        .into_iter()
        .map(|rel| {
            let path = root().join(&rel);
            let text = std::fs::read_to_string(&path).expect("readable spec");
            (path, text)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The properties.

proptest! {
    #![proptest_config(Config { cases: 256, ..Config::default() })]

    /// Valid templates build exactly the closed form's layers; impossible sizes are errors.
    #[test]
    fn template_matches_closed_form(t in template(), yaml in any::<bool>()) {
        let text = spec_text(&arguments(&t), yaml);
        let c = compile_text(&text, yaml);
        spans_inside(&c, &text)?;
        matches_closed_form(&c, &t, &text)?;
    }

    /// Mutated template arguments: an error with a location, or exactly the closed form of what
    /// the mutated spec says.
    #[test]
    fn mutated_template_is_error_or_right(
        t in template(),
        mutations in proptest::collection::vec(mutation(), 1..=3),
        yaml in any::<bool>(),
    ) {
        let mut args = arguments(&t);
        for m in &mutations {
            if args.is_empty() {
                break;
            }
            apply(&mut args, m);
        }
        let text = spec_text(&args, yaml);
        let c = compile_text(&text, yaml);
        spans_inside(&c, &text)?;
        match interpret(&args) {
            Verdict::Valid(t) => matches_closed_form(&c, &t, &text)?,
            Verdict::Invalid => prop_assert!(
                c.has_errors(),
                "a mutated spec the template must refuse compiled:\n{text}"
            ),
            Verdict::Unsure => {}
        }
    }
}

proptest! {
    #![proptest_config(Config { cases: 320, ..Config::default() })]

    /// Token mutations of the seed specs: never a panic, every diagnostic inside the file, and a
    /// spec that still compiles has a known, positive shape for every layer it keeps.
    #[test]
    fn mutated_seed_specs_never_panic(
        which in any::<usize>(),
        mutations in proptest::collection::vec(token_mutation(), 1..=3),
    ) {
        let specs = seed_specs();
        let (path, text) = &specs[which % specs.len()];
        let mutated = mutate_tokens(text, &mutations);
        let c = compile_source(path, mutated.clone(), &Options::default(), &mut Session::new());
        spans_inside(&c, &mutated)?;
        if !c.has_errors() {
            for &id in &c.info.keras_order {
                let shape = c.info.layers[id.index()].shape.clone();
                prop_assert!(
                    matches!(&shape, Some(s) if s.iter().all(|&d| d > 0)),
                    "layer `{}` has shape {:?} in a spec without errors:\n{}",
                    c.graph.node(id).name,
                    shape,
                    mutated
                );
            }
            let model = unetc::report::summary_model(&c);
            let _ = unetc::report::summary::render(
                &model,
                unetc::report::summary::SummaryStyle::Legacy,
                None,
            );
        }
    }
}

/// The closed form itself, on the paper's U-Net (572x572 valid, depth 4, 64 filters): 388x388
/// output and 31,030,658 parameters, as the README and tf.keras say.
#[test]
fn closed_form_knows_the_original() {
    let t = Template {
        h: 572,
        w: 572,
        c: 1,
        depth: 4,
        filters: 64,
        convs: 2,
        kernel: 3,
        same: false,
        upsample: false,
        batch_norm: false,
        dropout: false,
        crop: true,
        skip_first: true,
        classes: 2,
        head_activation: "softmax",
        head_layer: true,
    };
    let layers = closed_form(&t).unwrap();
    assert_eq!(layers.last().unwrap().shape, [388, 388, 2]);
    assert_eq!(params_formula(&t), 31_030_658);
    let text = spec_text(&arguments(&t), false);
    let c = compile_text(&text, false);
    assert!(!c.has_errors(), "{}", render_plain(&c.sources, &c.diags));
    assert_eq!(c.info.totals(&c.graph).params, 31_030_658);
}

// Recursion hidden in loops (issue 11: a misplaced `}` put a loop that calls the block into the
// block's own body, and the expansion fanned out for minutes).

/// A block `b` whose body reaches a call of itself inside `loops` nested loops (each over
/// `items` values), directly or through a second block `c`; the model calls `b` from a loop or
/// not. Layers before and after the call are real convolutions.
fn recursive_spec(loops: usize, items: usize, through_c: bool, called_in_loop: bool) -> String {
    let list: Vec<String> = (1..=items).map(|i| (4 * i).to_string()).collect();
    let list = list.join(", ");
    let call = if through_c { "c(v0)" } else { "b(v0)" };
    let mut body = String::from("    conv2d(f, 3, padding: same)\n");
    let mut close = String::new();
    for depth in 0..loops {
        let indent = "  ".repeat(depth + 2);
        body.push_str(&format!("{indent}for v{depth} in [{list}] {{\n"));
        close = format!("{indent}}}\n{close}");
    }
    let indent = "  ".repeat(loops + 2);
    // The innermost loop's variable is `v{loops-1}`; `v0` exists in every case but the loopless.
    let call = if loops == 0 {
        call.replace("v0", "f")
    } else {
        call.to_string()
    };
    body.push_str(&format!(
        "{indent}skip[f] = {call}\n{indent}max_pooling2d(2)\n"
    ));
    body.push_str(&close);
    let c_block = if through_c {
        "  block c(g) { conv2d(g, 1) -> b(g) }\n"
    } else {
        ""
    };
    let top = if called_in_loop {
        format!("  for f in [{list}] {{ b(f) }}\n")
    } else {
        "  b(8)\n".to_string()
    };
    format!("model {{\n  input 64x64x1\n  block b(f) {{\n{body}  }}\n{c_block}{top}}}\n")
}

proptest! {
    #![proptest_config(Config { cases: 64, ..Config::default() })]

    /// Exactly one diagnostic, `E-recursion`, quickly, however the loops multiply.
    #[test]
    fn recursion_through_loops_is_one_error(
        loops in 0usize..=3,
        items in 1usize..=6,
        through_c in any::<bool>(),
        called_in_loop in any::<bool>(),
    ) {
        let text = recursive_spec(loops, items, through_c, called_in_loop);
        let start = std::time::Instant::now();
        let c = compile_text(&text, false);
        let took = start.elapsed();
        prop_assert!(took < std::time::Duration::from_secs(2), "took {took:?}:\n{text}");
        spans_inside(&c, &text)?;
        prop_assert_eq!(c.diags.len(), 1, "{}\n{}", text, render_plain(&c.sources, &c.diags));
        prop_assert_eq!(c.diags[0].code, "E-recursion");
    }
}
