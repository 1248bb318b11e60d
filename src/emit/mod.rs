//! Printing the AST back out: the DSL (`unetc fmt`, `unetc convert --to dsl`) and YAML
//! (`unetc convert --to yaml`). Both forms print the same AST, so a round trip through either
//! gives the same layer graph; the tests check that for every spec.

pub mod dsl;
pub mod yaml;

use crate::ast::*;

/// Comments of the source, with where they start, so printers can put them back.
pub struct Comments {
    /// (byte offset, text without the `#`), in order.
    items: Vec<(usize, String)>,
    next: usize,
}

impl Comments {
    /// Finds `#` comments outside strings. `yaml` files use the same `#` syntax.
    pub fn scan(text: &str) -> Comments {
        let mut items = Vec::new();
        let mut in_string: Option<char> = None;
        let mut chars = text.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match (in_string, c) {
                (Some('"'), '\\') => {
                    chars.next();
                }
                (Some(q), c) if c == q => in_string = None,
                (Some(_), _) => {}
                (None, '"' | '\'') => {
                    // In YAML an apostrophe inside a plain word is not a quote.
                    let prev = text[..i].chars().next_back();
                    if c == '"' || prev.is_none_or(|p| !p.is_alphanumeric()) {
                        in_string = Some(c);
                    }
                }
                (None, '#') => {
                    let end = text[i..].find('\n').map_or(text.len(), |e| i + e);
                    items.push((i, text[i + 1..end].trim_end().to_string()));
                    while chars.peek().is_some_and(|(j, _)| *j < end) {
                        chars.next();
                    }
                }
                (None, '\n') => in_string = None,
                _ => {}
            }
        }
        Comments { items, next: 0 }
    }

    /// Comments that start before `offset` and were not printed yet.
    pub fn before(&mut self, offset: usize) -> Vec<String> {
        let mut out = Vec::new();
        while self.next < self.items.len() && self.items[self.next].0 < offset {
            out.push(self.items[self.next].1.clone());
            self.next += 1;
        }
        out
    }

    /// Everything left (comments after the last statement).
    pub fn rest(&mut self) -> Vec<String> {
        self.before(usize::MAX)
    }
}

/// Every name a spec binds (block parameters, loop variables, assignment targets): in YAML these
/// are written `$name`; any other bare word is a plain string.
pub fn bound_names(model: &Model) -> Vec<String> {
    fn body(stmts: &[Stmt], out: &mut Vec<String>) {
        for s in stmts {
            match s {
                Stmt::Chain {
                    target: Some(t), ..
                } => out.push(t.name.name.clone()),
                Stmt::For { vars, body: b, .. } => {
                    out.extend(vars.iter().map(|v| v.name.clone()));
                    body(b, out);
                }
                Stmt::Let { target, .. } => out.push(target.name.name.clone()),
                Stmt::If {
                    branches,
                    otherwise,
                    ..
                } => {
                    for b in branches {
                        body(&b.body, out);
                    }
                    body(otherwise, out);
                }
                Stmt::Chain { target: None, .. } | Stmt::Include { .. } | Stmt::Output { .. } => {}
            }
        }
    }
    let mut out = Vec::new();
    for b in &model.blocks {
        out.extend(b.params.iter().map(|p| p.name.clone()));
        body(&b.body, &mut out);
    }
    body(&model.body, &mut out);
    out.sort();
    out.dedup();
    out
}
