//! Values computed while expanding a spec, and the reader that turns a call's
//! arguments into a layer's typed Keras arguments with precise diagnostics.

use crate::diag::{Diagnostic, Span};
use crate::ir::ops::keywords::Keyword;
use crate::ir::NodeId;
use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    None,
    List(Vec<Value>),
    Map(Vec<(String, Value)>),
    /// The output of a layer.
    Tensor(NodeId),
    /// A reference to a layer name that is not defined yet (graph form; resolved after expansion).
    Pending(String),
}

impl Value {
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Bool(_) => "a boolean",
            Value::Str(_) => "a string",
            Value::None => "none",
            Value::List(_) => "a list",
            Value::Map(_) => "a mapping",
            Value::Tensor(_) | Value::Pending(_) => "a tensor",
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Str(s) => write!(f, "{s}"),
            Value::None => write!(f, "none"),
            Value::List(items) => {
                write!(f, "[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{item}")?;
                }
                write!(f, "]")
            }
            Value::Map(entries) => {
                write!(f, "{{")?;
                for (i, (k, v)) in entries.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{k}: {v}")?;
                }
                write!(f, "}}")
            }
            Value::Tensor(id) => write!(f, "<tensor {}>", id.0),
            Value::Pending(name) => write!(f, "{name}"),
        }
    }
}

/// One argument of a call, after evaluation.
#[derive(Debug, Clone)]
pub struct ArgValue {
    pub name: Option<String>,
    pub value: Value,
    /// The argument's span (its value's, for positional arguments).
    pub span: Span,
    /// The keyword's span, for keyword arguments.
    pub name_span: Option<Span>,
}

/// Hands out a layer's arguments by Keras name and reports what is wrong with them.
pub struct ArgReader<'a> {
    kind: &'a str,
    call_span: Span,
    args: Vec<(String, ArgValue, bool)>,
    pub diags: Vec<Diagnostic>,
}

/// Upper bound for sizes and counts in a spec; keeps every product below u64's range.
pub const MAX_DIM: i64 = 1 << 20;

impl<'a> ArgReader<'a> {
    /// Names positional arguments by `positional` (Keras's parameter order).
    pub fn new(kind: &'a str, call_span: Span, args: Vec<ArgValue>, positional: &[&str]) -> Self {
        let mut diags = Vec::new();
        let mut named: Vec<(String, ArgValue, bool)> = Vec::new();
        let mut position = 0;
        for arg in args {
            let name = match &arg.name {
                Some(n) => n.clone(),
                None => {
                    let Some(p) = positional.get(position) else {
                        diags.push(
                            Diagnostic::error(
                                "E-arg-count",
                                format!(
                                    "`{kind}` takes at most {} positional argument(s)",
                                    positional.len()
                                ),
                            )
                            .at(arg.span, "extra argument")
                            .help(format!(
                                "`{kind}`'s positional arguments are: {}",
                                if positional.is_empty() {
                                    "none".to_string()
                                } else {
                                    positional.join(", ")
                                }
                            )),
                        );
                        continue;
                    };
                    position += 1;
                    p.to_string()
                }
            };
            if let Some((_, prev, _)) = named.iter().find(|(n, _, _)| *n == name) {
                diags.push(
                    Diagnostic::error("E-arg-duplicate", format!("argument `{name}` given twice"))
                        .at(arg.name_span.unwrap_or(arg.span), "second value")
                        .also(prev.name_span.unwrap_or(prev.span), "first value"),
                );
                continue;
            }
            named.push((name, arg, false));
        }
        ArgReader {
            kind,
            call_span,
            args: named,
            diags,
        }
    }

    pub fn call_span(&self) -> Span {
        self.call_span
    }

    pub fn peek(&self, name: &str) -> Option<&Value> {
        self.args
            .iter()
            .find(|(n, _, used)| n == name && !used)
            .map(|(_, a, _)| &a.value)
    }

    pub fn take_arg(&mut self, name: &str) -> Option<ArgValue> {
        self.take(name)
    }

    fn take(&mut self, name: &str) -> Option<ArgValue> {
        let entry = self
            .args
            .iter_mut()
            .find(|(n, _, used)| n == name && !used)?;
        entry.2 = true;
        Some(entry.1.clone())
    }

    fn type_error(&mut self, name: &str, arg: &ArgValue, expected: &str) {
        self.diags.push(
            Diagnostic::error(
                "E-arg-type",
                format!(
                    "`{}` argument `{name}` must be {expected}, found {} `{}`",
                    self.kind,
                    arg.value.type_name(),
                    arg.value
                ),
            )
            .at(arg.span, format!("expected {expected}")),
        );
    }

    fn range_error(&mut self, name: &str, arg: &ArgValue, what: String) {
        self.diags.push(
            Diagnostic::error(
                "E-arg-value",
                format!("`{}` argument `{name}`: {what}", self.kind),
            )
            .at(arg.span, what),
        );
    }

    /// Refuses an argument given (when another excludes it): `what` says why.
    pub fn reject(&mut self, name: &str, what: &str) {
        if let Some(arg) = self.take(name) {
            self.range_error(name, &arg, what.to_string());
        }
    }

    /// A required argument is missing.
    pub fn missing(&mut self, name: &str, example: &str) {
        let kind = self.kind;
        self.diags.push(
            Diagnostic::error("E-arg-missing", format!("`{kind}` needs argument `{name}`"))
                .at(self.call_span, format!("`{name}` missing"))
                .help(format!("for example `{example}`")),
        );
    }

    /// An integer in `lo..=hi`.
    pub fn int(&mut self, name: &str, lo: i64, hi: i64) -> Option<i64> {
        let arg = self.take(name)?;
        match arg.value {
            // Keras's `None`: the default.
            Value::None => None,
            Value::Int(i) if (lo..=hi).contains(&i) => Some(i),
            Value::Int(i) => {
                self.range_error(name, &arg, format!("{i} is out of range {lo}..={hi}"));
                None
            }
            _ => {
                self.type_error(name, &arg, "an integer");
                None
            }
        }
    }

    pub fn int_or(&mut self, name: &str, lo: i64, hi: i64, default: i64) -> i64 {
        self.int(name, lo, hi).unwrap_or(default)
    }

    /// A required positive size (filters, units).
    pub fn size(&mut self, name: &str, example: &str) -> Option<i64> {
        if !self.has(name) {
            self.missing(name, example);
            return None;
        }
        self.int(name, 1, MAX_DIM)
    }

    pub fn has(&self, name: &str) -> bool {
        self.args.iter().any(|(n, _, used)| n == name && !used)
    }

    pub fn float_or(&mut self, name: &str, lo: f64, hi: f64, default: f64) -> f64 {
        let Some(arg) = self.take(name) else {
            return default;
        };
        let x = match arg.value {
            Value::Float(x) => x,
            Value::Int(i) => i as f64,
            Value::None => return default,
            _ => {
                self.type_error(name, &arg, "a number");
                return default;
            }
        };
        if !(lo..=hi).contains(&x) {
            self.range_error(name, &arg, format!("{x} is out of range {lo}..={hi}"));
            return default;
        }
        x
    }

    pub fn bool_or(&mut self, name: &str, default: bool) -> bool {
        let Some(arg) = self.take(name) else {
            return default;
        };
        match arg.value {
            Value::Bool(b) => b,
            _ => {
                self.type_error(name, &arg, "true or false");
                default
            }
        }
    }

    /// One of a [`Keyword`]'s names (as [`ArgReader::choice`]); `none` counts as `none_means`.
    pub fn keyword<K: Keyword>(&mut self, name: &str, default: K, none_means: Option<K>) -> K {
        let chosen = self.choice(
            name,
            K::NAMES,
            default.keras_name(),
            none_means.map(K::keras_name),
        );
        K::from_keras_name(&chosen).unwrap_or(default)
    }

    /// One of `choices`; `none` counts as `none_means` when given.
    pub fn choice(
        &mut self,
        name: &str,
        choices: &[&str],
        default: &str,
        none_means: Option<&str>,
    ) -> String {
        let Some(arg) = self.take(name) else {
            return default.to_string();
        };
        match &arg.value {
            Value::Str(s) if choices.contains(&s.as_str()) => s.clone(),
            Value::None if none_means.is_some() => none_means.unwrap_or(default).to_string(),
            Value::Str(s) => {
                let hint = crate::suggest::closest(s, choices.iter().copied());
                let mut d = Diagnostic::error(
                    "E-arg-value",
                    format!("`{}` argument `{name}` cannot be `{s}`", self.kind),
                )
                .at(arg.span, format!("expected one of: {}", choices.join(", ")));
                if let Some(h) = hint {
                    d = d.help(format!("did you mean `{h}`?"));
                }
                self.diags.push(d);
                default.to_string()
            }
            _ => {
                self.type_error(name, &arg, "a string");
                default.to_string()
            }
        }
    }

    /// Keras's "int or tuple of 2 ints" (kernel_size, strides, pool_size, size, padding).
    pub fn pair_or(&mut self, name: &str, lo: i64, hi: i64, default: [i64; 2]) -> [i64; 2] {
        self.pair(name, lo, hi).unwrap_or(default)
    }

    pub fn pair(&mut self, name: &str, lo: i64, hi: i64) -> Option<[i64; 2]> {
        let arg = self.take(name)?;
        let pair = match &arg.value {
            Value::None => return None,
            Value::Int(i) => Some([*i, *i]),
            Value::List(items) if items.len() == 2 => match (&items[0], &items[1]) {
                (Value::Int(a), Value::Int(b)) => Some([*a, *b]),
                _ => None,
            },
            _ => None,
        };
        let Some(pair) = pair else {
            self.type_error(name, &arg, "an integer or a pair of integers");
            return None;
        };
        if pair.iter().any(|v| !(lo..=hi).contains(v)) {
            self.range_error(name, &arg, format!("values must be in {lo}..={hi}"));
            return None;
        }
        Some(pair)
    }

    /// Keras's "int or tuple of 3 ints" of the 3-D layers (kernel_size, strides, pool_size).
    pub fn triple_or(&mut self, name: &str, lo: i64, hi: i64, default: [i64; 3]) -> [i64; 3] {
        self.triple(name, lo, hi).unwrap_or(default)
    }

    pub fn triple(&mut self, name: &str, lo: i64, hi: i64) -> Option<[i64; 3]> {
        let arg = self.take(name)?;
        let triple = match &arg.value {
            Value::None => return None,
            Value::Int(i) => Some([*i; 3]),
            Value::List(items) if items.len() == 3 => match (&items[0], &items[1], &items[2]) {
                (Value::Int(a), Value::Int(b), Value::Int(c)) => Some([*a, *b, *c]),
                _ => None,
            },
            _ => None,
        };
        let Some(triple) = triple else {
            self.type_error(name, &arg, "an integer or a triple of integers");
            return None;
        };
        if triple.iter().any(|v| !(lo..=hi).contains(v)) {
            self.range_error(name, &arg, format!("values must be in {lo}..={hi}"));
            return None;
        }
        Some(triple)
    }

    /// Keras's 3-D cropping/padding argument: `c`, `(d, h, w)` or
    /// `((front, back), (top, bottom), (left, right))`; returned as those six.
    pub fn six_or(&mut self, name: &str, default: [i64; 6]) -> [i64; 6] {
        let Some(arg) = self.take(name) else {
            return default;
        };
        let int = |v: &Value| match v {
            Value::Int(i) => Some(*i),
            _ => None,
        };
        let pair = |v: &Value| match v {
            Value::Int(i) => Some([*i, *i]),
            Value::List(p) if p.len() == 2 => Some([int(&p[0])?, int(&p[1])?]),
            _ => None,
        };
        let six = match &arg.value {
            Value::Int(c) => Some([*c; 6]),
            Value::List(items) if items.len() == 3 => {
                let all_ints = items.iter().all(|v| matches!(v, Value::Int(_)));
                let all_pairs = items.iter().all(|v| matches!(v, Value::List(_)));
                if all_ints || all_pairs {
                    match (pair(&items[0]), pair(&items[1]), pair(&items[2])) {
                        (Some(d), Some(h), Some(w)) => Some([d[0], d[1], h[0], h[1], w[0], w[1]]),
                        _ => None,
                    }
                } else {
                    None
                }
            }
            _ => None,
        };
        match six {
            Some(f) if f.iter().all(|v| (0..=MAX_DIM).contains(v)) => f,
            Some(_) => {
                self.range_error(name, &arg, format!("values must be in 0..={MAX_DIM}"));
                default
            }
            None => {
                self.type_error(
                    name,
                    &arg,
                    "`c`, `(d, h, w)` or `((front, back), (top, bottom), (left, right))`",
                );
                default
            }
        }
    }

    /// A list of integers in `lo..=hi` (`None` and absence: an empty list), e.g. PReLU's
    /// `shared_axes`; a single integer is a list of one.
    pub fn int_list(&mut self, name: &str, lo: i64, hi: i64) -> Vec<i64> {
        let Some(arg) = self.take(name) else {
            return Vec::new();
        };
        let list: Option<Vec<i64>> = match &arg.value {
            Value::None => Some(Vec::new()),
            Value::Int(i) => Some(vec![*i]),
            Value::List(items) => items
                .iter()
                .map(|v| match v {
                    Value::Int(i) => Some(*i),
                    _ => None,
                })
                .collect(),
            _ => None,
        };
        let Some(list) = list else {
            self.type_error(name, &arg, "a list of integers");
            return Vec::new();
        };
        if list.iter().any(|v| !(lo..=hi).contains(v)) {
            self.range_error(name, &arg, format!("values must be in {lo}..={hi}"));
            return Vec::new();
        }
        list
    }

    /// Dropout's `noise_shape`: `none`, or one entry per axis (batch first), each `none` (the
    /// input's size) or a size of at least 1.
    pub fn noise_shape(&mut self, name: &str) -> Option<Vec<Option<i64>>> {
        let arg = self.take(name)?;
        let list: Option<Vec<Option<i64>>> = match &arg.value {
            Value::None => return None,
            Value::List(items) => items
                .iter()
                .map(|v| match v {
                    Value::None => Some(None),
                    Value::Int(i) if *i >= 1 => Some(Some(*i)),
                    _ => None,
                })
                .collect(),
            _ => None,
        };
        if list.is_none() {
            self.type_error(name, &arg, "none or a list of sizes (>= 1) and nones");
        }
        list
    }

    /// Keras's cropping/padding argument: `c`, `(h, w)` or `((top, bottom), (left, right))`.
    pub fn four_or(&mut self, name: &str, default: [i64; 4]) -> [i64; 4] {
        let Some(arg) = self.take(name) else {
            return default;
        };
        let int = |v: &Value| match v {
            Value::Int(i) => Some(*i),
            _ => None,
        };
        let four = match &arg.value {
            Value::Int(c) => Some([*c; 4]),
            Value::List(items) if items.len() == 2 => match (&items[0], &items[1]) {
                (Value::Int(h), Value::Int(w)) => Some([*h, *h, *w, *w]),
                (Value::List(hs), Value::List(ws)) if hs.len() == 2 && ws.len() == 2 => {
                    match (int(&hs[0]), int(&hs[1]), int(&ws[0]), int(&ws[1])) {
                        (Some(t), Some(b), Some(l), Some(r)) => Some([t, b, l, r]),
                        _ => None,
                    }
                }
                _ => None,
            },
            _ => None,
        };
        match four {
            Some(f) if f.iter().all(|v| (0..=MAX_DIM).contains(v)) => f,
            Some(_) => {
                self.range_error(name, &arg, format!("values must be in 0..={MAX_DIM}"));
                default
            }
            None => {
                self.type_error(
                    name,
                    &arg,
                    "`c`, `(h, w)` or `((top, bottom), (left, right))`",
                );
                default
            }
        }
    }

    /// Reports every argument that no one asked for.
    pub fn finish(mut self, known: &[&str]) -> Vec<Diagnostic> {
        let kind = self.kind;
        for (name, arg, used) in &self.args {
            if *used {
                continue;
            }
            let span = arg.name_span.unwrap_or(arg.span);
            self.diags.push(unknown_argument(kind, name, span, known));
        }
        self.diags
    }
}

/// `kind` has no argument `name` (written at `span`); `known` are the ones it has.
pub fn unknown_argument(kind: &str, name: &str, span: Span, known: &[&str]) -> Diagnostic {
    let d = Diagnostic::error(
        "E-arg-unknown",
        format!("`{kind}` has no argument `{name}`"),
    )
    .at(span, "unknown argument");
    match crate::suggest::closest(name, known.iter().copied()) {
        Some(h) => d.help(format!("did you mean `{h}`?")),
        None => d.help(format!("`{kind}` takes: {}", known.join(", "))),
    }
}
