//! Lambda: a Keras layer that runs a Python function. unetc cannot run Python code; it runs
//! what it can read exactly: the functions of published packages that U-Net encoders are built
//! with, known by their module and name ([`LambdaFunction`]), and lambdas of scalar arithmetic
//! on the tensor (`lambda x: x / 255`, `lambda x: x * 2 - 1`), which Kaggle-style U-Nets put
//! first, Keras backend's `repeat_elements` over the channels, with which attention U-Nets
//! repeat their one-channel gate, and TensorFlow 1's `image.resize` by whole factors, with
//! which keras-unet-collection's ResUNet-a resizes its pooled ASPP branch. Import reads these
//! from the layer's config and bytecode (src/interop/keras.rs, src/interop/pycode.rs); any
//! other Lambda is refused there by name.

use super::keywords::{Interpolation, LambdaFunction};
use super::tf_op::{ScalarFn, ScalarOp};
use super::{image, LayerKind, Shape, ShapeError};
use crate::ir::value::{ArgReader, Value, MAX_DIM};
use serde_json::{json, Value as Json};

/// classification_models' channel axis for channels-last tensors (its functions take 3 or 1).
const CHANNELS_LAST: i64 = 3;

/// What a Lambda computes.
#[derive(Debug, Clone, PartialEq)]
pub enum LambdaBody {
    /// classification_models' `slice_tensor(x, start, stop, axis)`.
    SliceTensor { start: i64, stop: i64, axis: i64 },
    /// classification_models' `expand_dims(x, channels_axis)`.
    ExpandDims { channels_axis: i64 },
    /// `lambda x: <expression>`: scalar arithmetic applied to every value, in order (`x / 255`
    /// is one division; `(x - 0.5) / 0.5` a subtraction, then a division).
    Arithmetic(Arithmetic),
    /// `x[first] + x[second] * scale` of two inputs (keras_applications' and
    /// segmentation_models' InceptionResNetV2 residual, `lambda inputs, scale: inputs[0] +
    /// inputs[1] * scale`): what tf.keras's CustomScaleLayer computes.
    ScaledAdd {
        first: usize,
        second: usize,
        scale: f64,
        /// The expression as Python writes it (`x[0] + x[1] * 0.17`).
        text: String,
    },
    /// `K.repeat_elements(x, repeats, axis=3)`: input channel c becomes output channels
    /// `c * repeats .. (c + 1) * repeats` (attention U-Nets repeat a one-channel gate so).
    RepeatElements {
        repeats: i64,
        /// The channel axis as written: 3, or -1.
        axis: i64,
    },
    /// `image.resize(x, (h, w), ...)` of TensorFlow 1 (`tf.compat.v1.image.resize`) to a fixed
    /// size, a whole multiple of the input's: bilinear with aligned corners, or nearest
    /// (keras-unet-collection's ResUNet-a resizes its pooled ASPP branch so).
    Resize {
        size: [i64; 2],
        method: Interpolation,
        align_corners: bool,
    },
}

impl LambdaBody {
    /// The body of a lambda expression: arithmetic of one tensor, or `x[a] + x[b] * c`.
    pub fn from_expr(e: &Expr) -> Result<LambdaBody, String> {
        if e.item_count() == 0 {
            return Arithmetic::from_expr(e).map(LambdaBody::Arithmetic);
        }
        let item = |e: &Expr| match e {
            Expr::Item(k) => Some(*k),
            _ => None,
        };
        let constant = |e: &Expr| (e.x_count() + e.item_count() == 0).then(|| e.constant());
        let scaled = |e: &Expr| match e {
            Expr::Bin(ScalarFn::Multiply, a, b) => match (item(a), item(b)) {
                (Some(k), None) => constant(b).map(|c| (k, c)),
                (None, Some(k)) => constant(a).map(|c| (k, c)),
                (Some(_), Some(_)) | (None, None) => None,
            },
            _ => None,
        };
        let found = match e {
            Expr::Bin(ScalarFn::Add, a, b) if e.x_count() == 0 => match (item(a), item(b)) {
                (Some(first), None) => scaled(b).map(|(second, c)| (first, second, c)),
                (None, Some(first)) => scaled(a).map(|(second, c)| (first, second, c)),
                (Some(_), Some(_)) | (None, None) => None,
            },
            _ => None,
        };
        match found {
            Some((first, second, scale))
                if first != second && first.max(second) == 1 && scale.is_finite() =>
            {
                Ok(LambdaBody::ScaledAdd {
                    first,
                    second,
                    scale,
                    text: e.text(0),
                })
            }
            _ => Err(
                "of two inputs unetc runs `x[0] + x[1] * c` (a scaled residual) only; of one, \
                 arithmetic in `x`"
                    .into(),
            ),
        }
    }

    /// Parses a spec's expression (`"x / 255"`, `"x[0] + x[1] * 0.17"`,
    /// `"K.repeat_elements(x, 8, axis=3)"`).
    pub fn parse(text: &str) -> Result<LambdaBody, String> {
        if text.contains('(') && !text.trim_start().starts_with(['(', '-']) {
            if let Ok(call) = parse_call(text) {
                match call.function {
                    "repeat_elements" => return parse_repeat_elements(&call),
                    "resize" if call.module.last() == Some(&"image") => return parse_resize(&call),
                    _ => {}
                }
            }
        }
        LambdaBody::from_expr(&parse_expr(text)?)
    }

    /// Python's text of a call body (`K.repeat_elements(x, 8, axis=3)`); `None` for others.
    fn call_text(&self) -> Option<String> {
        match self {
            LambdaBody::RepeatElements { repeats, axis } => {
                Some(format!("K.repeat_elements(x, {repeats}, axis={axis})"))
            }
            LambdaBody::Resize {
                size: [h, w],
                method,
                align_corners,
            } => Some(match (method, align_corners) {
                (Interpolation::Bilinear, _) => format!(
                    "image.resize(x, ({h}, {w}), method='bilinear', align_corners={})",
                    if *align_corners { "True" } else { "False" }
                ),
                (Interpolation::Nearest, _) => {
                    format!("image.resize(x, ({h}, {w}), method='nearest')")
                }
            }),
            LambdaBody::SliceTensor { .. }
            | LambdaBody::ExpandDims { .. }
            | LambdaBody::Arithmetic(_)
            | LambdaBody::ScaledAdd { .. } => None,
        }
    }
}

/// A value in a lambda's call as the spec writes it (Python's syntax).
#[derive(Debug, Clone, PartialEq)]
enum PyValue {
    /// The lambda's tensor, `x`.
    X,
    Int(i64),
    /// `(16, 16)`.
    Ints(Vec<i64>),
    Str(String),
    Bool(bool),
}

/// `module.function(args, key=value)` as a lambda body writes it: the module's dotted names,
/// the function's name, and its arguments.
struct PyCall<'a> {
    module: Vec<&'a str>,
    function: &'a str,
    args: Vec<PyValue>,
    keywords: Vec<(&'a str, PyValue)>,
}

impl PyCall<'_> {
    /// Binds the arguments to `params` (the function's parameters after the tensor, in order),
    /// Python's way: positional first, then keywords, each once. The tensor `x` comes first.
    fn bind(&self, params: &[&str]) -> Result<Vec<Option<PyValue>>, String> {
        let mut args = self.args.iter();
        if args.next() != Some(&PyValue::X) {
            return Err("the first argument is the tensor `x`".into());
        }
        let mut bound: Vec<Option<PyValue>> = vec![None; params.len()];
        for (k, a) in args.enumerate() {
            let slot = bound
                .get_mut(k)
                .ok_or(format!("more than {} arguments", params.len() + 1))?;
            *slot = Some(a.clone());
        }
        for (key, value) in &self.keywords {
            let k = params
                .iter()
                .position(|p| p == key)
                .ok_or(format!("`{key}` is not an argument unetc reads"))?;
            if bound[k].replace(value.clone()).is_some() {
                return Err(format!("`{key}` given twice"));
            }
        }
        Ok(bound)
    }
}

/// Parses `module.function(x, 8, axis=3)`: names, whole numbers, tuples of them, quoted
/// strings, True/False and `x`; nothing nested deeper than one tuple.
fn parse_call(text: &str) -> Result<PyCall<'_>, String> {
    let t = text.trim();
    let open = t.find('(').ok_or("a call `function(x, ...)`")?;
    let inner = t[open + 1..]
        .strip_suffix(')')
        .ok_or("a call ending in `)`")?;
    let mut path: Vec<&str> = t[..open].trim().split('.').collect();
    let identifier = |p: &str| {
        !p.is_empty()
            && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !p.starts_with(|c: char| c.is_ascii_digit())
    };
    if !path.iter().all(|p| identifier(p)) {
        return Err(format!("`{}` is not a function's name", &t[..open]));
    }
    let function = path.pop().unwrap_or_default();
    // Split at the commas outside a tuple's parentheses.
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (k, c) in inner.char_indices() {
        match c {
            '(' if depth == 0 => depth = 1,
            '(' => return Err("tuples inside tuples".into()),
            ')' if depth == 1 => depth = 0,
            ')' => return Err("a `)` without its `(`".into()),
            ',' if depth == 0 => {
                parts.push(&inner[start..k]);
                start = k + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("a `(` without its `)`".into());
    }
    parts.push(&inner[start..]);
    let value = |v: &str| -> Result<PyValue, String> {
        let v = v.trim();
        let quoted = |q: char| v.len() >= 2 && v.starts_with(q) && v.ends_with(q);
        Ok(match v {
            "x" => PyValue::X,
            "True" => PyValue::Bool(true),
            "False" => PyValue::Bool(false),
            _ if quoted('\'') || quoted('"') => PyValue::Str(v[1..v.len() - 1].to_string()),
            _ if v.starts_with('(') => {
                let inside = v.strip_prefix('(').and_then(|i| i.strip_suffix(')'));
                let inside = inside.ok_or(format!("`{v}` is not a tuple"))?;
                let items = inside.split(',').map(str::trim);
                let items: Vec<&str> = items.filter(|i| !i.is_empty()).collect();
                PyValue::Ints(
                    items
                        .iter()
                        .map(|i| {
                            i.parse::<i64>()
                                .map_err(|_| format!("`{i}` is not a whole number"))
                        })
                        .collect::<Result<_, _>>()?,
                )
            }
            _ => PyValue::Int(
                v.parse::<i64>()
                    .map_err(|_| format!("`{v}` is not a value unetc reads"))?,
            ),
        })
    };
    let (mut args, mut keywords) = (Vec::new(), Vec::new());
    for part in parts {
        match part.split_once('=') {
            Some((key, v)) if identifier(key.trim()) => keywords.push((key.trim(), value(v)?)),
            Some(_) => return Err(format!("`{}` is not an argument", part.trim())),
            None if !keywords.is_empty() => {
                return Err("a positional argument after a keyword".into())
            }
            None => args.push(value(part)?),
        }
    }
    Ok(PyCall {
        module: path,
        function,
        args,
        keywords,
    })
}

/// `K.repeat_elements(x, rep, axis)` as Python may write it: the function under any module
/// name (`K.`, `backend.`, `tf.keras.backend.`), `rep` and `axis` by position or keyword.
fn parse_repeat_elements(call: &PyCall) -> Result<LambdaBody, String> {
    let usage = "write `K.repeat_elements(x, 8, axis=3)`: the tensor `x`, a whole number of \
                 repeats, and the channel axis 3 (or -1)";
    let bound = call
        .bind(&["rep", "axis"])
        .map_err(|e| format!("{e}: {usage}"))?;
    let number = |v: &Option<PyValue>, what: &str| match v {
        None => Err(format!("{what} is missing: {usage}")),
        Some(PyValue::Int(i)) => Ok(*i),
        Some(_) => Err(format!("{what} is not a whole number: {usage}")),
    };
    let repeats = number(&bound[0], "`rep`")?;
    let axis = number(&bound[1], "`axis`")?;
    if !(1..=MAX_DIM).contains(&repeats) {
        return Err(format!(
            "`rep` {repeats} is not a number of repeats (1 to {MAX_DIM})"
        ));
    }
    Ok(LambdaBody::RepeatElements { repeats, axis })
}

/// `image.resize(x, (h, w), method='bilinear', align_corners=True)`: TensorFlow 1's resize
/// (`tf.compat.v1.image.resize`, what keras-unet-collection's ResUNet-a calls) in the forms
/// unetc computes exactly by whole factors: bilinear with aligned corners, and nearest.
fn parse_resize(call: &PyCall) -> Result<LambdaBody, String> {
    let usage = "write `image.resize(x, (16, 16), method='bilinear', align_corners=True)` or \
                 `image.resize(x, (16, 16), method='nearest')`";
    let bound = call
        .bind(&["size", "method", "align_corners"])
        .map_err(|e| format!("{e}: {usage}"))?;
    let size = match &bound[0] {
        Some(PyValue::Ints(v)) => match v[..] {
            [h, w] if (1..=MAX_DIM).contains(&h) && (1..=MAX_DIM).contains(&w) => [h, w],
            _ => return Err(format!("the size is (height, width), each 1 to {MAX_DIM}")),
        },
        Some(_) => return Err(format!("the size is a tuple (height, width): {usage}")),
        None => return Err(format!("the size is missing: {usage}")),
    };
    let method = match &bound[1] {
        Some(PyValue::Str(m)) if m == "bilinear" => Interpolation::Bilinear,
        Some(PyValue::Str(m)) if m == "nearest" || m == "nearest_neighbor" => {
            Interpolation::Nearest
        }
        None => Interpolation::Bilinear,
        Some(_) => return Err(format!("the method is 'bilinear' or 'nearest': {usage}")),
    };
    let align_corners = match &bound[2] {
        Some(PyValue::Bool(b)) => Some(*b),
        None => None,
        Some(_) => return Err(format!("align_corners is True or False: {usage}")),
    };
    match (method, align_corners) {
        (Interpolation::Bilinear, Some(true)) => Ok(LambdaBody::Resize {
            size,
            method,
            align_corners: true,
        }),
        (Interpolation::Nearest, None | Some(false)) => Ok(LambdaBody::Resize {
            size,
            method,
            align_corners: false,
        }),
        (Interpolation::Bilinear, None) => Err(format!(
            "bilinear without align_corners is TensorFlow 2's half-pixel resize or TensorFlow \
             1's corner-anchored one, which unetc cannot tell apart: {usage}, or \
             `tf_op(\"image.resize\", size: (16, 16))` for TensorFlow 2's"
        )),
        (Interpolation::Bilinear, Some(false)) | (Interpolation::Nearest, Some(true)) => Err(
            format!("TensorFlow 1's resize in that form is not one unetc runs: {usage}"),
        ),
    }
}

/// A Python expression in `x` with `x` once and numbers: a chain of [`ScalarOp`]s.
#[derive(Debug, Clone, PartialEq)]
pub struct Arithmetic {
    pub ops: Vec<ScalarOp>,
    /// The expression as Python writes it (`x / 255`), for the spec and `export --to keras`.
    pub text: String,
}

impl Arithmetic {
    pub fn apply(&self, x: f32) -> f32 {
        self.ops.iter().fold(x, |v, op| op.apply(v))
    }

    /// The derivative of the chain at `x`.
    pub fn derivative(&self, x: f32) -> f32 {
        let mut v = x;
        let mut d = 1.0f32;
        for op in &self.ops {
            d *= op.derivative(v);
            v = op.apply(v);
        }
        d
    }

    /// Parses `x / 255`, `(x - 0.5) / 0.5`, `1 - x`, `-x`, ... (numbers, `x` once, `+ - * /`,
    /// parentheses, unary minus).
    pub fn parse(text: &str) -> Result<Arithmetic, String> {
        Arithmetic::from_expr(&parse_expr(text)?)
    }

    /// The chain of an expression tree with `x` exactly once; its text is the tree's.
    pub fn from_expr(e: &Expr) -> Result<Arithmetic, String> {
        if e.item_count() != 0 {
            return Err("`x[k]` (an input of several) in a one-input expression".into());
        }
        if e.x_count() != 1 {
            return Err(format!(
                "an expression with `x` exactly once, not {} times",
                e.x_count()
            ));
        }
        let mut ops = Vec::new();
        e.chain(&mut ops);
        Ok(Arithmetic {
            ops,
            text: e.text(0),
        })
    }
}

/// An expression's tree from its text: numbers, `x`, `x[k]`, `+ - * /`, parentheses, unary
/// minus.
fn parse_expr(text: &str) -> Result<Expr, String> {
    let mut p = ExprParser {
        s: text.as_bytes(),
        at: 0,
        depth: 0,
    };
    let e = p.sum()?;
    p.skip_space();
    if p.at != p.s.len() {
        return Err(format!("unexpected `{}`", &text[p.at..]));
    }
    Ok(e)
}

/// An arithmetic expression in `x`: from the spec's text or from Python bytecode.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    X,
    /// `x[k]`: input k of a lambda of several inputs.
    Item(usize),
    Int(i64),
    Float(f64),
    Neg(Box<Expr>),
    Bin(ScalarFn, Box<Expr>, Box<Expr>),
}

impl Expr {
    /// The whole number a constant expression is (`3`, `-1`); `None` otherwise.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Expr::Int(i) => Some(*i),
            Expr::Neg(e) => e.as_int()?.checked_neg(),
            Expr::X | Expr::Item(_) | Expr::Float(_) | Expr::Bin(..) => None,
        }
    }

    fn x_count(&self) -> usize {
        match self {
            Expr::X => 1,
            Expr::Item(_) | Expr::Int(_) | Expr::Float(_) => 0,
            Expr::Neg(e) => e.x_count(),
            Expr::Bin(_, a, b) => a.x_count() + b.x_count(),
        }
    }

    fn item_count(&self) -> usize {
        match self {
            Expr::Item(_) => 1,
            Expr::X | Expr::Int(_) | Expr::Float(_) => 0,
            Expr::Neg(e) => e.item_count(),
            Expr::Bin(_, a, b) => a.item_count() + b.item_count(),
        }
    }

    /// The value of an expression without `x` (Python's arithmetic, in f64).
    fn constant(&self) -> f64 {
        match self {
            Expr::X | Expr::Item(_) => f64::NAN,
            Expr::Int(i) => *i as f64,
            Expr::Float(f) => *f,
            Expr::Neg(e) => -e.constant(),
            Expr::Bin(f, a, b) => {
                let (a, b) = (a.constant(), b.constant());
                match f {
                    ScalarFn::Add => a + b,
                    ScalarFn::Subtract => a - b,
                    ScalarFn::Multiply => a * b,
                    ScalarFn::Divide => a / b,
                    ScalarFn::Maximum => a.max(b),
                    ScalarFn::Minimum => a.min(b),
                }
            }
        }
    }

    /// The operations from `x` outwards (the innermost first).
    fn chain(&self, ops: &mut Vec<ScalarOp>) {
        match self {
            Expr::X | Expr::Item(_) | Expr::Int(_) | Expr::Float(_) => {}
            Expr::Neg(e) => {
                e.chain(ops);
                ops.push(ScalarOp {
                    function: ScalarFn::Multiply,
                    constant: -1.0,
                    constant_first: false,
                });
            }
            Expr::Bin(f, a, b) => {
                let (inner, constant, constant_first) = if a.x_count() == 1 {
                    (a, b.constant(), false)
                } else {
                    (b, a.constant(), true)
                };
                inner.chain(ops);
                ops.push(ScalarOp {
                    function: *f,
                    constant,
                    constant_first,
                });
            }
        }
    }

    /// Python's text, with the parentheses its precedence needs (`prec`: of the context).
    fn text(&self, prec: u8) -> String {
        match self {
            Expr::X => "x".into(),
            Expr::Item(k) => format!("x[{k}]"),
            Expr::Int(i) => i.to_string(),
            Expr::Float(f) => format!("{f:?}"),
            Expr::Neg(e) => {
                let t = format!("-{}", e.text(3));
                if prec > 2 {
                    format!("({t})")
                } else {
                    t
                }
            }
            Expr::Bin(f, a, b) => {
                let call = |name: &str| format!("tf.math.{name}({}, {})", a.text(0), b.text(0));
                let (sym, own) = match f {
                    ScalarFn::Add => ("+", 1),
                    ScalarFn::Subtract => ("-", 1),
                    ScalarFn::Multiply => ("*", 2),
                    ScalarFn::Divide => ("/", 2),
                    // A call binds as an atom: no parentheses around it.
                    ScalarFn::Maximum => return call("maximum"),
                    ScalarFn::Minimum => return call("minimum"),
                };
                // Left-associative: the right operand needs parentheses at equal precedence.
                let t = format!("{} {sym} {}", a.text(own), b.text(own + 1));
                if own < prec {
                    format!("({t})")
                } else {
                    t
                }
            }
        }
    }
}

struct ExprParser<'a> {
    s: &'a [u8],
    at: usize,
    /// Parentheses and unary minuses open at this point (bounded: the parser recurses).
    depth: usize,
}

/// The deepest nesting of parentheses and unary minuses an expression may have.
const MAX_NESTING: usize = 32;

impl ExprParser<'_> {
    fn skip_space(&mut self) {
        while self.s.get(self.at).is_some_and(u8::is_ascii_whitespace) {
            self.at += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_space();
        self.s.get(self.at).copied()
    }

    fn sum(&mut self) -> Result<Expr, String> {
        let mut e = self.product()?;
        while let Some(c @ (b'+' | b'-')) = self.peek() {
            self.at += 1;
            let f = if c == b'+' {
                ScalarFn::Add
            } else {
                ScalarFn::Subtract
            };
            e = Expr::Bin(f, Box::new(e), Box::new(self.product()?));
        }
        Ok(e)
    }

    fn product(&mut self) -> Result<Expr, String> {
        let mut e = self.factor()?;
        while let Some(c @ (b'*' | b'/')) = self.peek() {
            self.at += 1;
            if self.s.get(self.at) == Some(&c) {
                return Err(format!("`{0}{0}` is not arithmetic unetc runs", c as char));
            }
            let f = if c == b'*' {
                ScalarFn::Multiply
            } else {
                ScalarFn::Divide
            };
            e = Expr::Bin(f, Box::new(e), Box::new(self.factor()?));
        }
        Ok(e)
    }

    fn factor(&mut self) -> Result<Expr, String> {
        if matches!(self.peek(), Some(b'-' | b'(')) {
            if self.depth == MAX_NESTING {
                return Err(format!("nesting deeper than {MAX_NESTING} levels"));
            }
            self.depth += 1;
            let e = self.nested();
            self.depth -= 1;
            return e;
        }
        self.atom()
    }

    /// `-factor` or `(sum)`.
    fn nested(&mut self) -> Result<Expr, String> {
        if self.peek() == Some(b'-') {
            self.at += 1;
            return Ok(Expr::Neg(Box::new(self.factor()?)));
        }
        self.at += 1;
        let e = self.sum()?;
        if self.peek() != Some(b')') {
            return Err("a `(` without its `)`".into());
        }
        self.at += 1;
        Ok(e)
    }

    fn atom(&mut self) -> Result<Expr, String> {
        match self.peek() {
            Some(b'x') => {
                self.at += 1;
                if self
                    .s
                    .get(self.at)
                    .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
                {
                    return Err("names other than `x`".into());
                }
                if self.peek() != Some(b'[') {
                    return Ok(Expr::X);
                }
                // `x[k]`: input k.
                self.at += 1;
                let start = self.at;
                while self.s.get(self.at).is_some_and(u8::is_ascii_digit) {
                    self.at += 1;
                }
                let index = std::str::from_utf8(&self.s[start..self.at])
                    .ok()
                    .and_then(|t| t.parse::<usize>().ok());
                match (index, self.peek()) {
                    (Some(k), Some(b']')) => {
                        self.at += 1;
                        Ok(Expr::Item(k))
                    }
                    _ => Err("`x[k]` with a whole number k".into()),
                }
            }
            Some(c) if c.is_ascii_digit() || c == b'.' => {
                let start = self.at;
                while self.s.get(self.at).is_some_and(|c| {
                    c.is_ascii_digit()
                        || matches!(c, b'.' | b'e' | b'E')
                        || (matches!(c, b'+' | b'-')
                            && matches!(self.s.get(self.at - 1), Some(b'e' | b'E')))
                }) {
                    self.at += 1;
                }
                let t = std::str::from_utf8(&self.s[start..self.at]).unwrap_or("");
                if let Ok(i) = t.parse::<i64>() {
                    Ok(Expr::Int(i))
                } else {
                    t.parse::<f64>()
                        .ok()
                        .filter(|f| f.is_finite())
                        .map(Expr::Float)
                        .ok_or_else(|| format!("`{t}` is not a number"))
                }
            }
            Some(c) => Err(format!("`{}` is not arithmetic unetc runs", c as char)),
            None => Err("the expression ends too early".into()),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Lambda {
    pub body: LambdaBody,
}

impl Lambda {
    /// The Lambda's `arguments`, as Keras records them (none for an arithmetic lambda).
    pub fn arguments(&self) -> Json {
        match &self.body {
            LambdaBody::SliceTensor { start, stop, axis } => {
                json!({ "start": start, "stop": stop, "axis": axis })
            }
            LambdaBody::ExpandDims { channels_axis } => json!({ "channels_axis": channels_axis }),
            LambdaBody::Arithmetic(_)
            | LambdaBody::ScaledAdd { .. }
            | LambdaBody::RepeatElements { .. }
            | LambdaBody::Resize { .. } => Json::Null,
        }
    }

    /// The Python function, as `export --to keras` writes it.
    pub fn python_function(&self) -> String {
        match &self.body {
            LambdaBody::SliceTensor { .. } => LambdaFunction::SliceTensor.to_string(),
            LambdaBody::ExpandDims { .. } => LambdaFunction::ExpandDims.to_string(),
            LambdaBody::Arithmetic(Arithmetic { text, .. })
            | LambdaBody::ScaledAdd { text, .. } => {
                format!("lambda x: {text}")
            }
            LambdaBody::RepeatElements { .. } | LambdaBody::Resize { .. } => {
                format!("lambda x: {}", self.body.call_text().unwrap_or_default())
            }
        }
    }

    /// The function as the spec writes it: a known function's name or the expression.
    pub fn spec_function(&self) -> String {
        match &self.body {
            LambdaBody::SliceTensor { .. } => LambdaFunction::SliceTensor.to_string(),
            LambdaBody::ExpandDims { .. } => LambdaFunction::ExpandDims.to_string(),
            LambdaBody::Arithmetic(Arithmetic { text, .. })
            | LambdaBody::ScaledAdd { text, .. } => {
                format!("{text:?}")
            }
            LambdaBody::RepeatElements { .. } | LambdaBody::Resize { .. } => {
                format!("{:?}", self.body.call_text().unwrap_or_default())
            }
        }
    }
}

impl LayerKind for Lambda {
    const CLASS: &'static str = "Lambda";
    const POSITIONAL: &'static [&'static str] = &["function"];
    const KNOWN: &'static [&'static str] = &["function", "start", "stop", "axis", "channels_axis"];
    /// `import` reads the function and its `arguments` itself.
    const IMPORTED_CONFIG: &'static [&'static str] = &[];

    fn parse(r: &mut ArgReader) -> Self {
        if !r.has("function") {
            r.missing("function", "lambda(\"x / 255\")");
        }
        // A string that is no known function's name is an expression in `x`.
        let arithmetic = match r.peek("function") {
            Some(Value::Str(s)) if LambdaFunction::from_keras_name(s).is_none() => {
                Some(LambdaBody::parse(s))
            }
            _ => None,
        };
        let function = match &arithmetic {
            Some(Ok(_)) => {
                let _ = r.take_arg("function");
                None
            }
            Some(Err(why)) => {
                r.reject(
                    "function",
                    &format!(
                        "not a function unetc knows ({}), arithmetic in `x` (`\"x / 255\"`) \
                         nor `\"K.repeat_elements(x, 8, axis=3)\"`: {why}",
                        <LambdaFunction as super::Keyword>::NAMES.join(", ")
                    ),
                );
                None
            }
            None => Some(r.keyword("function", LambdaFunction::SliceTensor, None)),
        };
        let takes: &[&str] = function.map_or(&[], |f| f.arguments());
        let example = match function {
            Some(LambdaFunction::SliceTensor) => "lambda(slice_tensor, start: 0, stop: 4, axis: 3)",
            Some(LambdaFunction::ExpandDims) => "lambda(expand_dims, channels_axis: 3)",
            None => "lambda(\"x / 255\")",
        };
        let what = function.map_or("an arithmetic lambda".to_string(), |f| f.to_string());
        let value = |r: &mut ArgReader, name: &str| -> i64 {
            if takes.contains(&name) {
                if !r.has(name) {
                    r.missing(name, example);
                }
                r.int_or(name, 0, MAX_DIM, 0)
            } else {
                r.reject(name, &format!("is not an argument of {what}"));
                0
            }
        };
        let (start, stop, axis, channels_axis) = (
            value(r, "start"),
            value(r, "stop"),
            value(r, "axis"),
            value(r, "channels_axis"),
        );
        let body = match (function, arithmetic) {
            (Some(LambdaFunction::SliceTensor), _) => LambdaBody::SliceTensor { start, stop, axis },
            (Some(LambdaFunction::ExpandDims), _) => LambdaBody::ExpandDims { channels_axis },
            (None, Some(Ok(body))) => body,
            // Reported above; an identity stands in.
            (None, Some(Err(_)) | None) => LambdaBody::Arithmetic(Arithmetic {
                ops: Vec::new(),
                text: "x".into(),
            }),
        };
        Lambda { body }
    }

    fn infer(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        let channels_last = |name: &str, arg: &str, axis: i64| {
            if axis == CHANNELS_LAST {
                Ok(())
            } else {
                Err(ShapeError::new(
                    "E-arg-value",
                    format!(
                        "{name} with {arg} {axis}: unetc runs the channels-last form ({arg} 3) \
                         only"
                    ),
                    "channels last only",
                ))
            }
        };
        let one_input = || match inputs.len() {
            1 => Ok(()),
            n => Err(ShapeError::new(
                "E-arity",
                format!("this Lambda takes 1 input, not {n}"),
                "wrong number of inputs",
            )),
        };
        match &self.body {
            LambdaBody::SliceTensor { start, stop, axis } => {
                one_input()?;
                channels_last("slice_tensor", "axis", *axis)?;
                let [h, w, c] = image(inputs, "slice_tensor")?;
                if !(start < stop && *stop <= c) {
                    return Err(ShapeError::new(
                        "E-arg-value",
                        format!(
                            "slice_tensor takes channels `start` to `stop` with start < stop <= \
                             the input's {c} channels, not {start}..{stop}"
                        ),
                        "channels out of range",
                    ));
                }
                Ok(vec![h, w, stop - start])
            }
            LambdaBody::ExpandDims { channels_axis } => {
                one_input()?;
                channels_last("expand_dims", "channels_axis", *channels_axis)?;
                match inputs.first().map(Vec::as_slice) {
                    Some(&[c]) => Ok(vec![1, 1, c]),
                    Some(other) => Err(ShapeError::new(
                        "E-rank",
                        format!(
                            "expand_dims takes a vector (None, C) (a pooled feature map), but \
                             {{0}} has shape {}",
                            crate::text::shape_text(other)
                        ),
                        "input is not a vector",
                    )),
                    None => Err(ShapeError::new(
                        "E-arity",
                        "expand_dims needs an input",
                        "no input",
                    )),
                }
            }
            LambdaBody::Arithmetic(_) => match inputs {
                [x] => Ok(x.clone()),
                _ => Err(ShapeError::new(
                    "E-arity",
                    format!(
                        "a one-input arithmetic Lambda takes 1 input, not {}",
                        inputs.len()
                    ),
                    "wrong number of inputs",
                )),
            },
            LambdaBody::ScaledAdd { .. } => match inputs {
                [a, b] if a == b => Ok(a.clone()),
                [a, b] => Err(ShapeError::new(
                    "E-merge-shape",
                    format!(
                        "x[0] + x[1] * c needs inputs of one shape: {{0}} is {} but {{1}} is {}",
                        crate::text::shape_text(a),
                        crate::text::shape_text(b)
                    ),
                    "shapes differ",
                )),
                _ => Err(ShapeError::new(
                    "E-arity",
                    format!("`x[0] + x[1] * c` takes 2 inputs, not {}", inputs.len()),
                    "wrong number of inputs",
                )),
            },
            LambdaBody::RepeatElements { repeats, axis } => {
                one_input()?;
                let [h, w, c] = image(inputs, "repeat_elements")?;
                if !matches!(axis, 3 | -1) {
                    return Err(ShapeError::new(
                        "E-arg-value",
                        format!(
                            "repeat_elements on axis {axis}: unetc repeats the channels (axis 3 \
                             or -1) only"
                        ),
                        "channels only",
                    ));
                }
                match c.checked_mul(*repeats).filter(|&n| n <= MAX_DIM) {
                    Some(channels) => Ok(vec![h, w, channels]),
                    None => Err(ShapeError::new(
                        "E-arg-value",
                        format!(
                            "repeat_elements makes {c} x {repeats} channels, more than unetc's \
                             limit of {MAX_DIM}"
                        ),
                        "too many channels",
                    )),
                }
            }
            LambdaBody::Resize { size: [oh, ow], .. } => {
                one_input()?;
                let [h, w, c] = image(inputs, "image.resize")?;
                if oh % h != 0 || ow % w != 0 {
                    return Err(ShapeError::new(
                        "E-arg-value",
                        format!(
                            "image.resize to {oh}x{ow} from {h}x{w}: unetc resizes to whole \
                             multiples of the input's height and width only"
                        ),
                        "not a whole multiple",
                    ));
                }
                Ok(vec![*oh, *ow, c])
            }
        }
    }

    fn config(&self) -> Json {
        let known = |f: LambdaFunction| json!({ "function": f, "module": f.module(), "arguments": self.arguments() });
        match &self.body {
            LambdaBody::SliceTensor { .. } => known(LambdaFunction::SliceTensor),
            LambdaBody::ExpandDims { .. } => known(LambdaFunction::ExpandDims),
            LambdaBody::Arithmetic(_)
            | LambdaBody::ScaledAdd { .. }
            | LambdaBody::RepeatElements { .. }
            | LambdaBody::Resize { .. } => {
                json!({ "function": self.python_function() })
            }
        }
    }

    fn arity() -> (usize, usize) {
        (1, 2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_reads_as_python_and_prints_back() {
        for (text, x, want) in [
            ("x / 255", 51.0f32, 0.2f32),
            ("(x - 0.5) / 0.5", 1.0, 1.0),
            ("1 - x", 0.25, 0.75),
            ("x * 2.5 - 1", 2.0, 4.0),
            ("-x", 3.0, -3.0),
            ("2 * (x + 1)", 1.0, 4.0),
            ("x / 127.5 - 1.0", 255.0, 1.0),
        ] {
            let a = Arithmetic::parse(text).unwrap();
            assert_eq!(a.text, text);
            assert_eq!(a.apply(x), want, "{text}");
        }
        // Derivative of 1 / (x + 1) at 1: -1 / 4.
        for (text, repeats, axis) in [
            ("K.repeat_elements(x, 8, axis=3)", 8, 3),
            ("keras.backend.repeat_elements(x, 2, -1)", 2, -1),
            ("repeat_elements(x, rep=4, axis=3)", 4, 3),
        ] {
            assert_eq!(
                LambdaBody::parse(text).unwrap(),
                LambdaBody::RepeatElements { repeats, axis },
                "{text}"
            );
        }
        for (text, size, method, aligned) in [
            (
                "image.resize(x, (16, 16), method='bilinear', align_corners=True)",
                [16, 16],
                Interpolation::Bilinear,
                true,
            ),
            (
                "tf.compat.v1.image.resize(x, (8, 4), 'nearest')",
                [8, 4],
                Interpolation::Nearest,
                false,
            ),
        ] {
            assert_eq!(
                LambdaBody::parse(text).unwrap(),
                LambdaBody::Resize {
                    size,
                    method,
                    align_corners: aligned
                },
                "{text}"
            );
        }
        for bad in [
            "image.resize(x, (16, 16))",
            "image.resize(x, (16, 16), method='bilinear', align_corners=False)",
            "image.resize(x, (16, 16), method='bicubic', align_corners=True)",
            "image.resize(x, 16, method='nearest')",
            "image.resize(x, (0, 16), method='nearest')",
            "image.resize(x, ((1, 2), 3), method='nearest')",
            "image.resize(x, (1)\u{e9}, method='nearest')",
            "image.resize(x, (\u{e9}), method='nearest')",
            "image.resize(x, '\u{e9}, method='nearest')",
            "\u{e9}.resize(x, (1, 1))",
            "K.repeat_elements(x, 0, axis=3)",
            "K.repeat_elements(x, 2)",
            "K.repeat_elements(y, 2, 3)",
            "K.repeat_elements(x, 2, 3, 4)",
            "K.repeat_elements(x, axis=3, 2)",
            "K.repeat_elements(x, 2.5, axis=3)",
            "K.repeat_elements(x, 2, axis=3, rep=2)",
            "f(K).repeat_elements(x, 2, axis=3)",
            "K.repeat_elements(x, 99999999999999999999, axis=3)",
        ] {
            assert!(LambdaBody::parse(bad).is_err(), "{bad}");
        }
        // Text from the spec is untrusted: strings of the pieces a call is made of (and a
        // two-byte character) are parsed or refused, never a panic.
        let pieces = ["(", ")", "1", "é", ", ", "'", "=", "x", "True"];
        let mut state = 0x2545_f491_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..50_000 {
            let len = (next() % 9) as usize;
            let text: String = (0..len)
                .map(|_| pieces[(next() % pieces.len() as u64) as usize])
                .collect();
            let _ = LambdaBody::parse(&format!("image.resize(x, {text})"));
            let _ = LambdaBody::parse(&text);
        }
        let a = Arithmetic::parse("1 / (x + 1)").unwrap();
        assert_eq!(a.derivative(1.0), -0.25);
        for bad in ["x * x", "2", "y + 1", "x ** 2", "x +", "(x", "abs(x)"] {
            assert!(Arithmetic::parse(bad).is_err(), "{bad}");
        }
        // Deep nesting is refused, not recursed into.
        let deep = format!("{}x{}", "(".repeat(100_000), ")".repeat(100_000));
        assert!(Arithmetic::parse(&deep)
            .unwrap_err()
            .contains("nesting deeper than 32"));
        assert!(Arithmetic::parse(&"-".repeat(100_000)).is_err());
        let nested = format!("{}x{}", "(".repeat(32), ")".repeat(32));
        assert_eq!(Arithmetic::parse(&nested).unwrap().ops, vec![]);
    }
}
