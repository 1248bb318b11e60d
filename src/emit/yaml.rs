//! A spec as YAML. Layer items are flow mappings on one line (`- {conv2d: [64, 3], as: x}`);
//! values that are expressions become `$expr`; `inputs:` entries hold DSL chain text; a chain
//! of several calls becomes several items, the first taking the chain's source as `inputs:`.

use super::dsl::{chain_text, expr_text, float_text, source_text, target_text};
use super::{bound_names, Comments};
use crate::ast::*;

pub fn print(spec: &Spec, source: &str) -> String {
    let m = &spec.model;
    let mut p = Printer {
        out: String::new(),
        comments: Comments::scan(source),
        bound: bound_names(m),
    };
    p.comments_at(m.span.start as usize, 0);
    // A spec that is only the template prints as top-level `unet:`.
    if let (
        true,
        true,
        [Stmt::Chain {
            target: None,
            chain,
            ..
        }],
    ) = (
        m.defaults.is_empty() && m.train.is_none(),
        m.blocks.is_empty(),
        m.body.as_slice(),
    ) {
        if let (None, [call]) = (&chain.source, chain.calls.as_slice()) {
            if call.callee.name == "unet" && call.args.iter().all(|a| a.name.is_some()) {
                p.line(0, "unet:");
                if let Some(n) = &m.name {
                    p.line(1, &format!("name: {}", scalar_str(&n.name)));
                }
                for a in &call.args {
                    p.comments_at(a.value.span.start as usize, 1);
                    let name = &a.name.as_ref().expect("keyword argument").name;
                    p.line(1, &format!("{name}: {}", p.value(&a.value)));
                }
                p.rest(0);
                return p.out;
            }
        }
    }
    p.line(0, "model:");
    if let Some(n) = &m.name {
        p.line(1, &format!("name: {}", scalar_str(&n.name)));
    }
    if !m.defaults.is_empty() {
        p.line(1, "defaults:");
        for d in &m.defaults {
            p.comments_at(d.span.start as usize, 2);
            p.line(2, &format!("{}: {}", d.kind.name, p.args(&d.args)));
        }
    }
    if let Some(t) = &m.train {
        p.comments_at(t.span.start as usize, 1);
        p.line(1, &format!("train: {}", p.args(&t.args)));
    }
    if !m.blocks.is_empty() {
        p.line(1, "blocks:");
        for b in &m.blocks {
            p.comments_at(b.span.start as usize, 2);
            p.line(2, &format!("{}:", b.name.name));
            let params: Vec<&str> = b.params.iter().map(|x| x.name.as_str()).collect();
            p.line(3, &format!("params: [{}]", params.join(", ")));
            if let Some(class) = b.nested {
                p.line(3, &format!("as: {}", class.spec_name()));
            }
            p.line(3, "layers:");
            p.stmts(&b.body, 4);
        }
    }
    p.line(1, "layers:");
    p.stmts(&m.body, 2);
    p.rest(0);
    p.out
}

struct Printer {
    out: String,
    comments: Comments,
    bound: Vec<String>,
}

impl Printer {
    fn line(&mut self, indent: usize, text: &str) {
        for _ in 0..indent {
            self.out.push_str("  ");
        }
        self.out.push_str(text);
        self.out.push('\n');
    }

    fn comments_at(&mut self, offset: usize, indent: usize) {
        for c in self.comments.before(offset) {
            self.line(indent, &format!("#{c}"));
        }
    }

    fn rest(&mut self, indent: usize) {
        for c in self.comments.rest() {
            self.line(indent, &format!("#{c}"));
        }
    }

    fn stmts(&mut self, body: &[Stmt], indent: usize) {
        if body.is_empty() {
            // An empty list must still be a list.
            self.out.truncate(self.out.trim_end_matches('\n').len());
            self.out.push_str(" []\n");
            return;
        }
        for s in body {
            self.comments_at(super::dsl::stmt_span(s).start as usize, indent);
            self.stmt(s, indent);
        }
    }

    fn stmt(&mut self, s: &Stmt, indent: usize) {
        match s {
            Stmt::Chain { target, chain, .. } => {
                if chain.calls.is_empty() {
                    // Only a source: make it the current tensor.
                    let mut item = format!("inputs: {}", self.inputs(chain.source.as_ref()));
                    if let Some(t) = target {
                        item.push_str(&format!(", as: {}", plain_or_quoted(&target_text(t))));
                    }
                    self.line(indent, &format!("- {{{item}}}"));
                    return;
                }
                let last = chain.calls.len() - 1;
                for (i, call) in chain.calls.iter().enumerate() {
                    let mut item = format!("{}: {}", call.callee.name, self.args(&call.args));
                    if i == 0 && chain.source.is_some() {
                        item.push_str(&format!(", inputs: {}", self.inputs(chain.source.as_ref())));
                    }
                    if let (Some(t), true) = (target, i == last) {
                        item.push_str(&format!(", as: {}", plain_or_quoted(&target_text(t))));
                    }
                    self.line(indent, &format!("- {{{item}}}"));
                }
            }
            Stmt::For {
                vars, iter, body, ..
            } => {
                let names: Vec<&str> = vars.iter().map(|v| v.name.as_str()).collect();
                let head = if names.len() == 1 {
                    names[0].to_string()
                } else {
                    format!("[{}]", names.join(", "))
                };
                self.line(indent, &format!("- for: {head}"));
                let values = self.value(iter);
                self.line(indent + 1, &format!("in: {values}"));
                self.line(indent + 1, "do:");
                self.stmts(body, indent + 2);
            }
            Stmt::Include { path, args, .. } => {
                let mut item = format!("include: {}", self.value(path));
                for a in args {
                    if let Some(n) = &a.name {
                        item.push_str(&format!(", {}: {}", n.name, self.value(&a.value)));
                    }
                }
                self.line(indent, &format!("- {{{item}}}"));
            }
            Stmt::Output { sources, .. } => {
                let parts: Vec<String> = sources.iter().map(|s| quote(&source_text(s))).collect();
                self.line(indent, &format!("- {{output: [{}]}}", parts.join(", ")));
            }
            Stmt::Let { target, value, .. } => {
                let item = format!(
                    "value: {}, as: {}",
                    self.value(value),
                    plain_or_quoted(&target_text(target))
                );
                self.line(indent, &format!("- {{{item}}}"));
            }
            Stmt::If {
                branches,
                otherwise,
                ..
            } => self.if_item(branches, otherwise, indent),
        }
    }

    /// `- if:` with `then:`; each `else if` is an `else:` holding the next `- if:` item.
    fn if_item(&mut self, branches: &[Branch], otherwise: &[Stmt], indent: usize) {
        let mut indent = indent;
        for (i, branch) in branches.iter().enumerate() {
            if i > 0 {
                self.line(indent + 1, "else:");
                indent += 2;
            }
            // The condition is DSL text, as `inputs:` and `as:` are.
            self.line(
                indent,
                &format!("- if: {}", plain_or_quoted(&expr_text(&branch.cond))),
            );
            self.line(indent + 1, "then:");
            self.stmts(&branch.body, indent + 2);
        }
        if !otherwise.is_empty() {
            self.line(indent + 1, "else:");
            self.stmts(otherwise, indent + 2);
        }
    }

    /// `inputs:` as DSL text: one reference, or a list of chains.
    fn inputs(&self, source: Option<&Source>) -> String {
        match source {
            Some(Source::List(chains, _)) => {
                let parts: Vec<String> = chains
                    .iter()
                    .map(|c| plain_or_quoted(&chain_text(c)))
                    .collect();
                format!("[{}]", parts.join(", "))
            }
            Some(s @ Source::Ref(_)) => plain_or_quoted(&source_text(s)),
            None => "[]".into(),
        }
    }

    /// Call arguments: `[]`-less scalar for one positional, a list (keywords in a trailing
    /// mapping), or a mapping of keywords.
    fn args(&self, args: &[Arg]) -> String {
        let positional: Vec<String> = args
            .iter()
            .filter(|a| a.name.is_none())
            .map(|a| self.value(&a.value))
            .collect();
        let keywords: Vec<String> = args
            .iter()
            .filter_map(|a| {
                a.name
                    .as_ref()
                    .map(|n| format!("{}: {}", n.name, self.value(&a.value)))
            })
            .collect();
        match (positional.len(), keywords.is_empty()) {
            (0, true) => "{}".into(),
            (0, false) => format!("{{{}}}", keywords.join(", ")),
            // A single positional list would read as several positionals: keep it in a list.
            (1, true) if !positional[0].starts_with('[') && !positional[0].starts_with('{') => {
                positional[0].clone()
            }
            (_, true) => format!("[{}]", positional.join(", ")),
            (_, false) => format!("[{}, {{{}}}]", positional.join(", "), keywords.join(", ")),
        }
    }

    fn value(&self, e: &Expr) -> String {
        match &e.kind {
            ExprKind::Int(i) => i.to_string(),
            ExprKind::Float(x) => float_text(*x),
            ExprKind::Bool(b) => b.to_string(),
            ExprKind::None => "null".into(),
            ExprKind::Str(parts) => match parts.as_slice() {
                [] => "\"\"".into(),
                [StrPart::Lit(l)] if !l.contains('{') => scalar_str(l),
                _ => {
                    // Interpolated: the YAML front end reads `{expr}` in any string.
                    let text: String = parts
                        .iter()
                        .map(|part| match part {
                            StrPart::Lit(l) => l.clone(),
                            StrPart::Expr(x) => format!("{{{}}}", expr_text(x)),
                        })
                        .collect();
                    quote(&text)
                }
            },
            // A bound name is a variable; any other bare word is the string itself.
            ExprKind::Name(n) if !self.bound.contains(n) => scalar_str(n),
            ExprKind::List(items) | ExprKind::Tuple(items) => {
                format!(
                    "[{}]",
                    items
                        .iter()
                        .map(|i| self.value(i))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
            ExprKind::Map(entries) => {
                let parts: Vec<String> = entries
                    .iter()
                    .map(|(k, v)| format!("{}: {}", k.name, self.value(v)))
                    .collect();
                format!("{{{}}}", parts.join(", "))
            }
            _ => plain_or_quoted(&format!("${}", expr_text(e))),
        }
    }
}

/// DSL text that YAML reads back unchanged as a plain scalar stays plain (`$f`, `up`);
/// anything with spaces or flow indicators is quoted.
fn plain_or_quoted(s: &str) -> String {
    let simple = s.trim_start_matches('$');
    if !simple.is_empty()
        && simple
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !simple.starts_with(|c: char| c.is_ascii_digit())
    {
        s.to_string()
    } else {
        quote(s)
    }
}

/// A string as a YAML scalar: plain when YAML reads it back as the same string, quoted otherwise.
fn scalar_str(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'))
        && !s.starts_with(['-', '.'])
        && s.parse::<f64>().is_err()
        && !matches!(
            s,
            "true"
                | "false"
                | "True"
                | "False"
                | "TRUE"
                | "FALSE"
                | "null"
                | "Null"
                | "NULL"
                | "~"
                | "yes"
                | "no"
                | "on"
                | "off"
        )
        && !s
            .split('x')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    if plain {
        s.to_string()
    } else {
        quote(s)
    }
}

/// A double-quoted YAML string (YAML escapes are a superset of these).
fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
