//! The canonical DSL text of a spec: two-space indentation, one statement per line, arguments
//! as written (positional then keyword), comments kept before the statement they preceded.

use super::Comments;
use crate::ast::*;

/// Prints a whole spec in canonical DSL form.
pub fn print(spec: &Spec, source: &str) -> String {
    let mut p = Printer {
        out: String::new(),
        comments: Comments::scan(source),
        indent: 0,
    };
    let m = &spec.model;
    p.comments_before(m.span.start as usize);
    match &m.name {
        Some(n) => p.line(&format!("model {} {{", string_literal(&n.name))),
        None => p.line("model {"),
    }
    p.indent += 1;
    let mut items: Vec<(u32, Item)> = Vec::new();
    items.extend(m.defaults.iter().map(|d| (d.span.start, Item::Defaults(d))));
    items.extend(m.train.iter().map(|t| (t.span.start, Item::Train(t))));
    items.extend(m.blocks.iter().map(|b| (b.span.start, Item::Block(b))));
    items.extend(m.body.iter().map(|s| (stmt_span(s).start, Item::Stmt(s))));
    items.sort_by_key(|(start, _)| *start);
    for (start, item) in items {
        p.comments_before(start as usize);
        match item {
            Item::Defaults(d) => p.line(&format!("defaults {}", call_text(&d.kind.name, &d.args))),
            Item::Train(t) => p.line(&call_text("train", &t.args)),
            Item::Block(b) => p.block(b),
            Item::Stmt(s) => p.stmt(s),
        }
    }
    p.comments_before(m.span.end as usize);
    p.indent -= 1;
    p.line("}");
    for c in p.comments.rest() {
        p.line(&format!("#{c}"));
    }
    p.out
}

enum Item<'a> {
    Defaults(&'a Defaults),
    Train(&'a crate::ast::Call),
    Block(&'a BlockDef),
    Stmt(&'a Stmt),
}

struct Printer {
    out: String,
    comments: Comments,
    indent: usize,
}

impl Printer {
    fn line(&mut self, text: &str) {
        for _ in 0..self.indent {
            self.out.push_str("  ");
        }
        self.out.push_str(text);
        self.out.push('\n');
    }

    fn comments_before(&mut self, offset: usize) {
        for c in self.comments.before(offset) {
            self.line(&format!("#{c}"));
        }
    }

    fn block(&mut self, b: &BlockDef) {
        let params: Vec<&str> = b.params.iter().map(|p| p.name.as_str()).collect();
        let nested = b
            .nested
            .map_or(String::new(), |c| format!(" as {}", c.spec_name()));
        let head = format!("block {}({}){nested}", b.name.name, params.join(", "));
        // A one-statement body without comments stays on one line.
        let inner_comment = !self.comments_peek_before(b.span.end as usize).is_empty();
        if let ([single @ Stmt::Chain { .. }], false) = (b.body.as_slice(), inner_comment) {
            self.line(&format!("{head} {{ {} }}", chain_stmt_text(single)));
            return;
        }
        self.line(&format!("{head} {{"));
        self.indent += 1;
        for s in &b.body {
            self.comments_before(stmt_span(s).start as usize);
            self.stmt(s);
        }
        self.comments_before(b.span.end as usize);
        self.indent -= 1;
        self.line("}");
    }

    fn comments_peek_before(&self, offset: usize) -> Vec<String> {
        self.comments.items[self.comments.next..]
            .iter()
            .take_while(|(o, _)| *o < offset)
            .map(|(_, c)| c.clone())
            .collect()
    }

    fn stmt(&mut self, s: &Stmt) {
        match s {
            Stmt::Chain { .. } => {
                let text = chain_stmt_text(s);
                self.line(&text);
            }
            Stmt::For {
                vars,
                iter,
                body,
                span,
            } => {
                let names: Vec<&str> = vars.iter().map(|v| v.name.as_str()).collect();
                self.line(&format!(
                    "for {} in {} {{",
                    names.join(", "),
                    expr_text(iter)
                ));
                self.body(body, span.end);
                self.line("}");
            }
            Stmt::Include { path, args, .. } => {
                let mut text = format!("include {}", expr_text(path));
                if !args.is_empty() {
                    text.push_str(&format!(" ({})", args_text(args)));
                }
                self.line(&text);
            }
            Stmt::Output { sources, .. } => {
                let parts: Vec<String> = sources.iter().map(source_text).collect();
                self.line(&format!("output {}", parts.join(", ")));
            }
            Stmt::Let { target, value, .. } => {
                self.line(&format!(
                    "{} = {}",
                    target_text(target),
                    let_value_text(value)
                ));
            }
            Stmt::If { .. } => self.if_stmt(s),
        }
    }

    fn if_stmt(&mut self, s: &Stmt) {
        let Stmt::If {
            branches,
            otherwise,
            span,
        } = s
        else {
            return;
        };
        for (i, branch) in branches.iter().enumerate() {
            let head = if i == 0 { "if" } else { "} else if" };
            self.line(&format!("{head} {} {{", expr_text(&branch.cond)));
            // Comments up to the next branch's condition belong to this body.
            let end = match (branches.get(i + 1), otherwise.first()) {
                (Some(next), _) => next.cond.span.start,
                (None, Some(first)) => stmt_span(first).start,
                (None, None) => span.end,
            };
            self.body(&branch.body, end);
        }
        if !otherwise.is_empty() {
            self.line("} else {");
            self.body(otherwise, span.end);
        }
        self.line("}");
    }

    /// An indented body, with the comments before `end` that sit inside it.
    fn body(&mut self, body: &[Stmt], end: u32) {
        self.indent += 1;
        for s in body {
            self.comments_before(stmt_span(s).start as usize);
            self.stmt(s);
        }
        self.comments_before(end as usize);
        self.indent -= 1;
    }
}

/// A value assignment's right side. One that would read back as a chain (`y`, `a[i]`,
/// `[a, b]`: tensors made current) is parenthesised, which keeps it a value.
fn let_value_text(e: &Expr) -> String {
    fn reads_as_chain(e: &Expr) -> bool {
        match &e.kind {
            ExprKind::Name(_) => true,
            ExprKind::Index(base, _) => reads_as_chain(base),
            ExprKind::List(items) => !items.is_empty() && items.iter().all(reads_as_chain),
            _ => false,
        }
    }
    let text = expr_text(e);
    if reads_as_chain(e) {
        format!("({text})")
    } else {
        text
    }
}

pub fn stmt_span(s: &Stmt) -> crate::diag::Span {
    match s {
        Stmt::Chain { span, .. }
        | Stmt::For { span, .. }
        | Stmt::Include { span, .. }
        | Stmt::Output { span, .. }
        | Stmt::Let { span, .. }
        | Stmt::If { span, .. } => *span,
    }
}

fn chain_stmt_text(s: &Stmt) -> String {
    let Stmt::Chain { target, chain, .. } = s else {
        return String::new();
    };
    let mut text = String::new();
    if let Some(t) = target {
        text.push_str(&target_text(t));
        text.push_str(" = ");
    }
    text.push_str(&chain_text(chain));
    text
}

pub fn target_text(t: &Target) -> String {
    match &t.index {
        Some(i) => format!("{}[{}]", t.name.name, index_text(i)),
        None => t.name.name.clone(),
    }
}

/// The inside of `[...]`: a two-index slot `x[i, j]` holds the tuple `(i, j)`.
fn index_text(i: &Expr) -> String {
    match &i.kind {
        ExprKind::Tuple(items) if items.len() == 2 => {
            format!("{}, {}", expr_text(&items[0]), expr_text(&items[1]))
        }
        _ => expr_text(i),
    }
}

/// `source -> call -> call` in DSL syntax (also what YAML `inputs:` entries hold).
pub fn chain_text(c: &Chain) -> String {
    let mut parts: Vec<String> = Vec::new();
    if let Some(s) = &c.source {
        parts.push(source_text(s));
    }
    for call in &c.calls {
        parts.push(input_sugar(call).unwrap_or_else(|| call_text(&call.callee.name, &call.args)));
    }
    parts.join(" -> ")
}

/// `input(shape: 572x572x1)` prints as `input 572x572x1`.
fn input_sugar(call: &Call) -> Option<String> {
    if call.callee.name != "input" || call.args.len() != 1 {
        return None;
    }
    let arg = &call.args[0];
    if arg.name.as_ref().is_some_and(|n| n.name != "shape") {
        return None;
    }
    match &arg.value.kind {
        ExprKind::Tuple(items) | ExprKind::List(items)
            if !items.is_empty()
                && items
                    .iter()
                    .all(|i| matches!(i.kind, ExprKind::Int(v) if v > 0)) =>
        {
            let dims: Vec<String> = items.iter().map(expr_text).collect();
            Some(format!("input {}", dims.join("x")))
        }
        _ => None,
    }
}

pub fn source_text(s: &Source) -> String {
    match s {
        Source::Ref(e) => expr_text(e),
        Source::List(chains, _) => {
            let parts: Vec<String> = chains.iter().map(chain_text).collect();
            format!("[{}]", parts.join(", "))
        }
    }
}

pub fn call_text(name: &str, args: &[Arg]) -> String {
    format!("{name}({})", args_text(args))
}

pub fn args_text(args: &[Arg]) -> String {
    let parts: Vec<String> = args
        .iter()
        .map(|a| match &a.name {
            Some(n) => format!("{}: {}", n.name, expr_text(&a.value)),
            None => expr_text(&a.value),
        })
        .collect();
    parts.join(", ")
}

/// How tightly an expression binds when printed (see `BinOp::precedence`); atoms bind tightest.
fn precedence(e: &Expr) -> u8 {
    match &e.kind {
        ExprKind::Binary(op, ..) => op.precedence(),
        ExprKind::Not(_) => NOT_PRECEDENCE,
        ExprKind::Range { .. } => 0,
        _ => ATOM,
    }
}

const ATOM: u8 = 7;

pub fn expr_text(e: &Expr) -> String {
    match &e.kind {
        ExprKind::Int(i) => i.to_string(),
        ExprKind::Float(x) => float_text(*x),
        ExprKind::Bool(b) => b.to_string(),
        ExprKind::None => "none".into(),
        ExprKind::Str(parts) => {
            let mut s = String::from("\"");
            for part in parts {
                match part {
                    StrPart::Lit(l) => s.push_str(&escape(l)),
                    StrPart::Expr(x) => s.push_str(&format!("{{{}}}", expr_text(x))),
                }
            }
            s.push('"');
            s
        }
        ExprKind::Name(n) => n.clone(),
        ExprKind::Index(base, index) => {
            // Ranges and operators are not indexable without parentheses.
            let b = expr_text(base);
            let b = if precedence(base) < ATOM {
                format!("({b})")
            } else {
                b
            };
            format!("{b}[{}]", index_text(index))
        }
        ExprKind::List(items) => format!(
            "[{}]",
            items.iter().map(expr_text).collect::<Vec<_>>().join(", ")
        ),
        ExprKind::Tuple(items) if items.len() == 1 => format!("({},)", expr_text(&items[0])),
        ExprKind::Tuple(items) => format!(
            "({})",
            items.iter().map(expr_text).collect::<Vec<_>>().join(", ")
        ),
        ExprKind::Map(entries) => {
            let parts: Vec<String> = entries
                .iter()
                .map(|(k, v)| format!("{}: {}", k.name, expr_text(v)))
                .collect();
            format!("{{{}}}", parts.join(", "))
        }
        ExprKind::Range {
            start,
            end,
            inclusive,
        } => {
            format!(
                "{}{}{}",
                expr_text(start),
                if *inclusive { "..=" } else { ".." },
                expr_text(end)
            )
        }
        ExprKind::Binary(op, l, r) => {
            let p = precedence(e);
            let wrap = |x: &Expr, right: bool| {
                let t = expr_text(x);
                // Left-associative: a right operand of equal precedence needs parentheses.
                if precedence(x) < p || (right && precedence(x) == p) {
                    format!("({t})")
                } else {
                    t
                }
            };
            format!("{} {} {}", wrap(l, false), op.symbol(), wrap(r, true))
        }
        ExprKind::Not(x) => {
            let t = expr_text(x);
            if precedence(x) < NOT_PRECEDENCE {
                format!("not ({t})")
            } else {
                format!("not {t}")
            }
        }
        ExprKind::Neg(x) => {
            let t = expr_text(x);
            if precedence(x) < ATOM {
                format!("-({t})")
            } else {
                format!("-{t}")
            }
        }
    }
}

/// A float the DSL reads back as the same float (never as an integer).
pub fn float_text(x: f64) -> String {
    let s = format!("{x:?}");
    if x.is_finite() {
        s
    } else {
        // The DSL has no infinities or NaN; a large finite stand-in keeps the file parseable.
        "1e308".into()
    }
}

pub fn string_literal(s: &str) -> String {
    format!("\"{}\"", escape(s))
}

fn escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            // `{` starts an interpolation; a literal one cannot be written, so it is escaped.
            '{' => out.push_str("\\{"),
            c => out.push(c),
        }
    }
    out
}
