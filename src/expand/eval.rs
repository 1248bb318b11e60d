//! Evaluation of expressions: arithmetic, ranges, strings, variables.

use super::{slot_key, value_depth, value_weight, Context, Expander};
use crate::ast::{BinOp, Expr, ExprKind, StrPart};
use crate::diag::Diagnostic;
use crate::ir::value::Value;

/// Ranges longer than this are refused (they would only make absurd graphs).
const MAX_RANGE: i64 = 10_000;
/// The longest string a spec may compute (interpolation, `+`), in bytes.
pub const MAX_STRING: usize = 1 << 20;
/// The most items a list computed with `+` may have.
pub const MAX_LIST: usize = 1 << 20;
/// How deeply computed lists and mappings may nest.
pub const MAX_VALUE_DEPTH: usize = 256;

impl<'s> Expander<'_> {
    pub(super) fn eval(&mut self, cx: &Context<'s>, expr: &Expr) -> Option<Value> {
        let span = expr.span;
        match &expr.kind {
            ExprKind::Int(i) => Some(Value::Int(*i)),
            ExprKind::Float(x) => Some(Value::Float(*x)),
            ExprKind::Bool(b) => Some(Value::Bool(*b)),
            ExprKind::None => Some(Value::None),
            ExprKind::Str(parts) => {
                let mut s = String::new();
                for part in parts {
                    let piece = match part {
                        StrPart::Lit(l) => l.clone(),
                        StrPart::Expr(e) => self.eval(cx, e)?.to_string(),
                    };
                    if s.len() + piece.len() > MAX_STRING {
                        self.too_long(span, "string", MAX_STRING);
                        return None;
                    }
                    s.push_str(&piece);
                }
                if !self.charge(1 + s.len() / 16, span) {
                    return None;
                }
                Some(Value::Str(s))
            }
            // A bare word: a variable if one has that name, else the word itself (`relu`, `same`).
            ExprKind::Name(name) => match cx.vars.get(name) {
                Some(v) => {
                    if !self.charge(value_weight(v), span) {
                        return None;
                    }
                    Some(v.clone())
                }
                None => Some(Value::Str(name.clone())),
            },
            ExprKind::Index(base, index) => {
                let index_value = self.eval(cx, index)?;
                if let ExprKind::Name(name) = &base.kind {
                    let key = slot_key(name, &index_value);
                    if let Some(v) = cx.vars.get(&key) {
                        if !self.charge(value_weight(v), span) {
                            return None;
                        }
                        return Some(v.clone());
                    }
                    if !cx.vars.contains_key(name) {
                        let mut set: Vec<&str> = cx
                            .vars
                            .keys()
                            .filter(|k| k.starts_with(&format!("{name}[")))
                            .map(String::as_str)
                            .collect();
                        set.sort();
                        let mut d =
                            Diagnostic::error("E-unknown-name", format!("`{key}` is not set"))
                                .at(span, "no value stored here");
                        d = if set.is_empty() {
                            d.help(format!("store into it first: `{key} = ...`"))
                        } else {
                            d.help(format!("set so far: {}", set.join(", ")))
                        };
                        self.error(d);
                        return None;
                    }
                }
                let base_value = self.eval(cx, base)?;
                match (&base_value, &index_value) {
                    (Value::List(items), Value::Int(i)) => {
                        let n = items.len() as i64;
                        let j = if *i < 0 { n + i } else { *i };
                        if (0..n).contains(&j) {
                            Some(items[j as usize].clone())
                        } else {
                            self.error(
                                Diagnostic::error(
                                    "E-index",
                                    format!("index {i} is out of range for a list of {n}"),
                                )
                                .at(span, "out of range"),
                            );
                            None
                        }
                    }
                    (Value::Map(entries), Value::Str(k)) => {
                        match entries.iter().find(|(key, _)| key == k) {
                            Some((_, v)) => Some(v.clone()),
                            None => {
                                self.error(
                                    Diagnostic::error("E-index", format!("no key `{k}`"))
                                        .at(span, "missing key"),
                                );
                                None
                            }
                        }
                    }
                    _ => {
                        self.error(
                            Diagnostic::error(
                                "E-type",
                                format!(
                                    "cannot index {} with {}",
                                    base_value.type_name(),
                                    index_value.type_name()
                                ),
                            )
                            .at(span, "bad index"),
                        );
                        None
                    }
                }
            }
            ExprKind::List(items) | ExprKind::Tuple(items) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    out.push(self.eval(cx, item)?);
                }
                self.nested(Value::List(out), span)
            }
            ExprKind::Map(entries) => {
                let mut out = Vec::with_capacity(entries.len());
                for (k, v) in entries {
                    out.push((k.name.clone(), self.eval(cx, v)?));
                }
                self.nested(Value::Map(out), span)
            }
            ExprKind::Range {
                start,
                end,
                inclusive,
            } => {
                let (a, b) = (self.eval(cx, start)?, self.eval(cx, end)?);
                let (Value::Int(a), Value::Int(b)) = (a, b) else {
                    let d = Diagnostic::error("E-type", "a range needs integer bounds")
                        .at(span, "not integers");
                    self.error(with_word_note(cx, d, &[start, end]));
                    return None;
                };
                let b = if *inclusive { b.saturating_add(1) } else { b };
                if b.saturating_sub(a) > MAX_RANGE {
                    self.error(
                        Diagnostic::error(
                            "E-limit",
                            format!("range of more than {MAX_RANGE} values"),
                        )
                        .at(span, "too long"),
                    );
                    return None;
                }
                if !self.charge(b.saturating_sub(a).max(0) as usize, span) {
                    return None;
                }
                Some(Value::List((a..b).map(Value::Int).collect()))
            }
            ExprKind::Neg(inner) => match self.eval(cx, inner)? {
                Value::Int(i) => Some(Value::Int(i.checked_neg().unwrap_or(i64::MAX))),
                Value::Float(x) => Some(Value::Float(-x)),
                other => {
                    self.error(
                        Diagnostic::error("E-type", format!("cannot negate {}", other.type_name()))
                            .at(span, "not a number"),
                    );
                    None
                }
            },
            ExprKind::Not(inner) => match self.eval(cx, inner)? {
                Value::Bool(b) => Some(Value::Bool(!b)),
                other => {
                    self.not_boolean("not", &other, inner.span);
                    None
                }
            },
            ExprKind::Binary(op @ (BinOp::And | BinOp::Or), l, r) => {
                // Short-circuit, as Python does: `i > 0 and x[i - 1] == 2` is safe at i = 0.
                let word = op.symbol();
                let a = match self.eval(cx, l)? {
                    Value::Bool(a) => a,
                    other => {
                        self.not_boolean(word, &other, l.span);
                        return None;
                    }
                };
                if a == (*op == BinOp::Or) {
                    return Some(Value::Bool(a));
                }
                match self.eval(cx, r)? {
                    Value::Bool(b) => Some(Value::Bool(b)),
                    other => {
                        self.not_boolean(word, &other, r.span);
                        None
                    }
                }
            }
            ExprKind::Binary(
                op @ (BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge),
                l,
                r,
            ) => {
                let (a, b) = (self.eval(cx, l)?, self.eval(cx, r)?);
                if !self.charge(value_weight(&a) + value_weight(&b), span) {
                    return None;
                }
                let result = compare(*op, &a, &b);
                if result.is_none() {
                    self.error(
                        Diagnostic::error(
                            "E-type",
                            format!(
                                "cannot compare {} {} {}",
                                a.type_name(),
                                op.symbol(),
                                b.type_name()
                            ),
                        )
                        .at(span, "not comparable")
                        .help("`<`, `<=`, `>`, `>=` compare numbers or strings; `==` and `!=` compare anything"),
                    );
                }
                result.map(Value::Bool)
            }
            ExprKind::Binary(op, l, r) => {
                let (a, b) = (self.eval(cx, l)?, self.eval(cx, r)?);
                match (&a, &b) {
                    (Value::Str(x), Value::Str(y)) if x.len() + y.len() > MAX_STRING => {
                        self.too_long(span, "string", MAX_STRING);
                        return None;
                    }
                    (Value::List(x), Value::List(y)) if x.len() + y.len() > MAX_LIST => {
                        self.too_long(span, "list", MAX_LIST);
                        return None;
                    }
                    _ => {}
                }
                if !self.charge(value_weight(&a) + value_weight(&b), span) {
                    return None;
                }
                let result = binary(*op, &a, &b);
                if result.is_none() {
                    let d = Diagnostic::error(
                        "E-type",
                        format!(
                            "cannot compute {} {} {}",
                            a.type_name(),
                            op.symbol(),
                            b.type_name()
                        ),
                    )
                    .at(
                        span,
                        "invalid arithmetic (or overflow, or division by zero)",
                    );
                    self.error(with_word_note(cx, d, &[l, r]));
                }
                result
            }
        }
    }
}

/// Where an operand of a failed range or arithmetic is a bare word that names no variable in
/// scope, it was taken as a string: say so. The usual causes: a misspelt variable, or a block
/// body using a variable of the model around it (a block sees only its parameters).
fn with_word_note(cx: &Context<'_>, d: Diagnostic, operands: &[&Expr]) -> Diagnostic {
    let word = operands.iter().find_map(|e| match &e.kind {
        ExprKind::Name(name) if !cx.vars.contains_key(name) => Some(name),
        _ => None,
    });
    let Some(name) = word else { return d };
    let variables = cx
        .vars
        .keys()
        .filter(|k| !k.contains('['))
        .map(String::as_str);
    let taken = format!("`{name}` is no variable here, so it is the string \"{name}\"");
    d.help(match crate::suggest::closest(name, variables) {
        Some(s) => format!("{taken}: did you mean `{s}`?"),
        None => format!(
            "{taken}; inside a block only the block's parameters are variables: pass outer \
             values in (`block b(..., {name})`)"
        ),
    })
}

impl Expander<'_> {
    /// `and`, `or` and `not` take booleans.
    fn not_boolean(&mut self, word: &str, found: &Value, span: crate::diag::Span) {
        self.error(
            Diagnostic::error(
                "E-type",
                format!(
                    "`{word}` takes true or false, found {} (`{found}`)",
                    found.type_name()
                ),
            )
            .at(span, "not a boolean")
            .help("compare it first: `n > 0`, `mode == \"upsample\"`"),
        );
    }

    fn too_long(&mut self, span: crate::diag::Span, what: &str, limit: usize) {
        self.error(
            Diagnostic::error(
                "E-limit",
                format!("this {what} would be longer than unetc's limit of {limit}"),
            )
            .at(span, "too long"),
        );
    }

    /// A list or mapping just built: refused if nested deeper than [`MAX_VALUE_DEPTH`].
    fn nested(&mut self, v: Value, span: crate::diag::Span) -> Option<Value> {
        // The items were checked when they were built, so this recursion is bounded.
        if value_depth(&v) > MAX_VALUE_DEPTH {
            self.error(
                Diagnostic::error(
                    "E-limit",
                    format!("lists and mappings nested more than {MAX_VALUE_DEPTH} deep"),
                )
                .at(span, "too deep"),
            );
            return None;
        }
        let n = match &v {
            Value::List(items) => items.len(),
            Value::Map(entries) => entries.len(),
            _ => 0,
        };
        self.charge(1 + n, span).then_some(v)
    }
}

/// `==` compares numbers by value (`1 == 1.0`) and anything else structurally; the orderings
/// take two numbers or two strings. `None`: not comparable.
fn compare(op: BinOp, a: &Value, b: &Value) -> Option<bool> {
    use std::cmp::Ordering;
    let order: Option<Ordering> = match (a, b) {
        (Value::Int(x), Value::Int(y)) => Some(x.cmp(y)),
        (Value::Str(x), Value::Str(y)) => Some(x.cmp(y)),
        _ => match (number(a), number(b)) {
            // NaN is unordered: every comparison but `!=` is false, as in Python.
            (Some(x), Some(y)) => x.partial_cmp(&y),
            _ => {
                return match op {
                    BinOp::Eq => Some(a == b),
                    BinOp::Ne => Some(a != b),
                    _ => None,
                }
            }
        },
    };
    Some(match (op, order) {
        (BinOp::Ne, None) => true,
        (_, None) => false,
        (BinOp::Eq, Some(o)) => o == Ordering::Equal,
        (BinOp::Ne, Some(o)) => o != Ordering::Equal,
        (BinOp::Lt, Some(o)) => o == Ordering::Less,
        (BinOp::Le, Some(o)) => o != Ordering::Greater,
        (BinOp::Gt, Some(o)) => o == Ordering::Greater,
        (BinOp::Ge, Some(o)) => o != Ordering::Less,
        (
            BinOp::Add
            | BinOp::Sub
            | BinOp::Mul
            | BinOp::Div
            | BinOp::FloorDiv
            | BinOp::Mod
            | BinOp::And
            | BinOp::Or,
            Some(_),
        ) => return None,
    })
}

/// Python semantics: `/` gives a float, `//` and `%` floor.
fn binary(op: BinOp, a: &Value, b: &Value) -> Option<Value> {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => {
            let (x, y) = (*x, *y);
            Some(match op {
                BinOp::Add => Value::Int(x.checked_add(y)?),
                BinOp::Sub => Value::Int(x.checked_sub(y)?),
                BinOp::Mul => Value::Int(x.checked_mul(y)?),
                BinOp::Div if y != 0 => Value::Float(x as f64 / y as f64),
                BinOp::FloorDiv if y != 0 => Value::Int(floor_div(x, y)?),
                BinOp::Mod if y != 0 => {
                    Value::Int(x.checked_sub(floor_div(x, y)?.checked_mul(y)?)?)
                }
                _ => return None,
            })
        }
        (Value::Str(x), Value::Str(y)) if op == BinOp::Add => Some(Value::Str(format!("{x}{y}"))),
        (Value::List(x), Value::List(y)) if op == BinOp::Add => {
            Some(Value::List(x.iter().chain(y).cloned().collect()))
        }
        _ => {
            let x = number(a)?;
            let y = number(b)?;
            Some(Value::Float(match op {
                BinOp::Add => x + y,
                BinOp::Sub => x - y,
                BinOp::Mul => x * y,
                BinOp::Div if y != 0.0 => x / y,
                BinOp::FloorDiv if y != 0.0 => (x / y).floor(),
                BinOp::Mod if y != 0.0 => x - y * (x / y).floor(),
                _ => return None,
            }))
        }
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Int(i) => Some(*i as f64),
        Value::Float(x) => Some(*x),
        _ => None,
    }
}

/// Python's `//`: rounds towards negative infinity.
fn floor_div(x: i64, y: i64) -> Option<i64> {
    let q = x.checked_div(y)?;
    Some(if x % y != 0 && ((x < 0) != (y < 0)) {
        q - 1
    } else {
        q
    })
}
