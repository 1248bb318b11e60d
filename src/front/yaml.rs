//! The YAML front end. A span-aware YAML reader (saphyr-parser events, which carry
//! positions for every node) builds a small tree; the tree is then mapped to the AST.
//! Values written as `$expr`, `inputs:` entries and `as:` targets use the DSL's syntax.

use crate::ast::*;
use crate::diag::{Diagnostic, FileId, Span};
use crate::front::dsl;
use crate::ir::NestedClass;
use saphyr_parser::{Event, Parser, ScalarStyle};

/// Nesting deeper than this is refused instead of risking the stack.
const MAX_DEPTH: usize = 128;

/// A YAML node with the byte span it was read from.
#[derive(Debug, Clone)]
pub enum Node {
    Scalar {
        text: String,
        quoted: bool,
        span: Span,
    },
    Seq(Vec<Node>, Span),
    Map(Vec<(Node, Node)>, Span),
}

impl Node {
    pub fn span(&self) -> Span {
        match self {
            Node::Scalar { span, .. } | Node::Seq(_, span) | Node::Map(_, span) => *span,
        }
    }

    fn describe(&self) -> &'static str {
        match self {
            Node::Scalar { .. } => "a scalar",
            Node::Seq(..) => "a list",
            Node::Map(..) => "a mapping",
        }
    }

    fn key_str(&self) -> Option<&str> {
        match self {
            Node::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }
}

/// Reads YAML text into a spanned tree (the first document only).
pub fn read_tree(file: FileId, text: &str) -> Result<Node, Diagnostic> {
    // saphyr reports positions in characters; spans are in bytes.
    let byte_of_char: Vec<usize> = text
        .char_indices()
        .map(|(i, _)| i)
        .chain(std::iter::once(text.len()))
        .collect();
    let to_byte = |c: usize| byte_of_char.get(c).copied().unwrap_or(text.len());
    let mut stack: Vec<(Node, Option<Node>)> = Vec::new();
    let mut root: Option<Node> = None;
    for item in Parser::new_from_str(text) {
        let (event, span) = item.map_err(|e| {
            let at = to_byte(e.marker().index());
            Diagnostic::error("E-yaml", format!("YAML syntax error: {}", e.info()))
                .at(Span::new(file, at, (at + 1).min(text.len())), "here")
        })?;
        let sp = Span::new(file, to_byte(span.start.index()), to_byte(span.end.index()));
        let finished = match event {
            Event::Scalar(value, style, _, _) => Some(Node::Scalar {
                text: value.into_owned(),
                quoted: !matches!(style, ScalarStyle::Plain),
                span: sp,
            }),
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(Diagnostic::error(
                        "E-limit",
                        format!("YAML nested more than {MAX_DEPTH} levels deep"),
                    )
                    .at(sp, "too deep"));
                }
                let node = if matches!(event, Event::SequenceStart(..)) {
                    Node::Seq(Vec::new(), sp)
                } else {
                    Node::Map(Vec::new(), sp)
                };
                stack.push((node, None));
                None
            }
            Event::SequenceEnd | Event::MappingEnd => stack.pop().map(|(mut node, _)| {
                let end = content_end(&node, text);
                if let Node::Seq(_, s) | Node::Map(_, s) = &mut node {
                    s.end = end.max(s.start);
                }
                node
            }),
            Event::Alias(_) => {
                return Err(
                    Diagnostic::error("E-yaml", "YAML aliases (*name) are not supported")
                        .at(sp, "alias")
                        .help("write the value out in full"),
                );
            }
            Event::DocumentEnd => break,
            _ => None,
        };
        if let Some(node) = finished {
            match stack.last_mut() {
                None => root = Some(node),
                Some((Node::Seq(items, _), _)) => items.push(node),
                Some((Node::Map(entries, _), pending_key)) => match pending_key.take() {
                    None => *pending_key = Some(node),
                    Some(key) => entries.push((key, node)),
                },
                Some((Node::Scalar { .. }, _)) => unreachable!("scalars are never on the stack"),
            }
        }
    }
    root.ok_or_else(|| {
        Diagnostic::error("E-yaml", "the YAML file is empty")
            .at(Span::new(file, 0, 0), "expected `model:` or `unet:`")
    })
}

/// Parses a whole YAML spec.
pub fn parse(file: FileId, text: &str) -> Result<Spec, Vec<Diagnostic>> {
    let root = read_tree(file, text).map_err(|d| vec![d])?;
    let mut cx = Cx {
        file,
        text,
        diags: Vec::new(),
    };
    let model = cx.spec(&root);
    if cx.diags.is_empty() {
        Ok(Spec { file, model })
    } else {
        Err(cx.diags)
    }
}

struct Cx<'a> {
    file: FileId,
    text: &'a str,
    diags: Vec<Diagnostic>,
}

impl Cx<'_> {
    fn error(&mut self, span: Span, message: String, label: &str) {
        self.diags
            .push(Diagnostic::error("E-yaml-form", message).at(span, label));
    }

    fn spec(&mut self, root: &Node) -> Model {
        let span = root.span();
        let mut model = Model {
            name: None,
            defaults: Vec::new(),
            train: None,
            blocks: Vec::new(),
            body: Vec::new(),
            span,
        };
        let Node::Map(entries, _) = root else {
            self.error(
                span,
                format!(
                    "a spec is a mapping with `model:` or `unet:`, found {}",
                    root.describe()
                ),
                "expected a mapping",
            );
            return model;
        };
        for (key, value) in entries {
            match key.key_str() {
                Some("model") => self.model(value, &mut model),
                Some("unet") => {
                    // `unet: {...}` is a model whose body is one call of the template.
                    let Node::Map(args, _) = value else {
                        self.error(
                            value.span(),
                            "`unet:` takes a mapping of template settings".into(),
                            "expected a mapping",
                        );
                        continue;
                    };
                    let mut call_args = Vec::new();
                    for (k, v) in args {
                        if k.key_str() == Some("name") {
                            model.name = self.ident_value(v);
                        } else if let Some(arg) = self.kwarg(k, v) {
                            call_args.push(arg);
                        }
                    }
                    let call = Call {
                        callee: Ident {
                            name: "unet".into(),
                            span: key.span(),
                        },
                        args: call_args,
                        span: key.span().to(value.span()),
                    };
                    model.body.push(Stmt::Chain {
                        target: None,
                        chain: Chain {
                            source: None,
                            calls: vec![call],
                            span: value.span(),
                        },
                        span: value.span(),
                    });
                }
                _ => self.error(
                    key.span(),
                    format!("unknown top-level key `{}`", key.key_str().unwrap_or("?")),
                    "expected `model` or `unet`",
                ),
            }
        }
        model
    }

    fn model(&mut self, node: &Node, model: &mut Model) {
        let Node::Map(entries, _) = node else {
            self.error(
                node.span(),
                "`model:` takes a mapping".into(),
                "expected a mapping",
            );
            return;
        };
        for (key, value) in entries {
            match key.key_str().unwrap_or("") {
                "name" => model.name = self.ident_value(value),
                "input" => {
                    let span = key.span().to(value.span());
                    let call = self.call_from("input", key.span(), value, span);
                    model.body.push(chain_stmt(None, None, call, span));
                }
                "defaults" => {
                    for (kind, args) in self.map_entries(value) {
                        let Some(kind_name) = kind.key_str() else {
                            continue;
                        };
                        let call = self.call_from(
                            kind_name,
                            kind.span(),
                            args,
                            kind.span().to(args.span()),
                        );
                        model.defaults.push(Defaults {
                            kind: call.callee,
                            args: call.args,
                            span: call.span,
                        });
                    }
                }
                "train" => {
                    let span = key.span().to(value.span());
                    model.train = Some(self.call_from("train", key.span(), value, span));
                }
                "blocks" => {
                    for (name, def) in self.map_entries(value) {
                        model.blocks.push(self.block(name, def));
                    }
                }
                "layers" => model.body.extend(self.stmts(value)),
                "outputs" | "output" => {
                    let sources = self.sources(value);
                    model.body.push(Stmt::Output {
                        sources,
                        span: key.span().to(value.span()),
                    });
                }
                other => self.error(
                    key.span(),
                    format!("unknown key `{other}` in `model:`"),
                    "expected name, input, defaults, train, blocks, layers or outputs",
                ),
            }
        }
    }

    fn map_entries<'n>(&mut self, node: &'n Node) -> Vec<(&'n Node, &'n Node)> {
        match node {
            Node::Map(entries, _) => entries.iter().map(|(k, v)| (k, v)).collect(),
            Node::Scalar {
                text,
                quoted: false,
                ..
            } if text.is_empty() || text == "~" || text == "null" => Vec::new(),
            _ => {
                self.error(
                    node.span(),
                    format!("expected a mapping, found {}", node.describe()),
                    "expected a mapping",
                );
                Vec::new()
            }
        }
    }

    fn block(&mut self, name: &Node, def: &Node) -> BlockDef {
        let name = Ident {
            name: name.key_str().unwrap_or("").to_string(),
            span: name.span(),
        };
        let mut params = Vec::new();
        let mut body = Vec::new();
        let mut nested = None;
        for (key, value) in self.map_entries(def) {
            match key.key_str().unwrap_or("") {
                "params" => match value {
                    Node::Seq(items, _) => {
                        for item in items {
                            if let Some(id) = self.ident_value(item) {
                                params.push(id);
                            }
                        }
                    }
                    other => {
                        if let Some(id) = self.ident_value(other) {
                            params.push(id);
                        }
                    }
                },
                "layers" => body = self.stmts(value),
                "as" => match value.key_str().and_then(NestedClass::from_spec_name) {
                    Some(class) => nested = Some(class),
                    None => self.error(
                        value.span(),
                        "`as` of a block is `functional` or `sequential`".to_string(),
                        "each call of the block is then a nested Keras model of that class",
                    ),
                },
                other => self.error(
                    key.span(),
                    format!("unknown key `{other}` in a block"),
                    "expected `params`, `layers` or `as`",
                ),
            }
        }
        BlockDef {
            name,
            params,
            body,
            nested,
            span: def.span(),
        }
    }

    fn stmts(&mut self, node: &Node) -> Vec<Stmt> {
        match node {
            Node::Seq(items, _) => items.iter().filter_map(|i| self.stmt(i)).collect(),
            _ => {
                self.error(
                    node.span(),
                    format!("`layers:` takes a list, found {}", node.describe()),
                    "expected a list of layers",
                );
                Vec::new()
            }
        }
    }

    fn stmt(&mut self, node: &Node) -> Option<Stmt> {
        let span = node.span();
        let Node::Map(entries, _) = node else {
            // A bare word is a call without arguments (`- softmax`).
            if let Node::Scalar {
                text,
                quoted: false,
                span,
            } = node
            {
                let callee = Ident {
                    name: text.clone(),
                    span: *span,
                };
                let call = Call {
                    callee,
                    args: Vec::new(),
                    span: *span,
                };
                return Some(chain_stmt(None, None, call, *span));
            }
            self.error(
                span,
                format!(
                    "a layer is a mapping like `conv2d: [64, 3]`, found {}",
                    node.describe()
                ),
                "expected a mapping",
            );
            return None;
        };
        let get = |k: &str| {
            entries
                .iter()
                .find(|(key, _)| key.key_str() == Some(k))
                .map(|(k, v)| (k, v))
        };
        if let Some((_, vars)) = get("for") {
            let vars: Vec<Ident> = match vars {
                Node::Seq(items, _) => items.iter().filter_map(|v| self.ident_value(v)).collect(),
                v => self.ident_value(v).into_iter().collect(),
            };
            let Some((_, iter)) = get("in") else {
                self.error(
                    span,
                    "`for:` needs `in:` (the values to loop over)".into(),
                    "missing `in:`",
                );
                return None;
            };
            let iter = self.expr(iter);
            let body = get("do").map(|(_, b)| self.stmts(b)).unwrap_or_default();
            for (k, _) in entries {
                if !matches!(k.key_str(), Some("for" | "in" | "do")) {
                    self.error(
                        k.span(),
                        format!(
                            "unknown key `{}` in a `for:` loop",
                            k.key_str().unwrap_or("?")
                        ),
                        "expected for, in, do",
                    );
                }
            }
            return Some(Stmt::For {
                vars,
                iter,
                body,
                span,
            });
        }
        if let Some((key, cond)) = get("if") {
            return self.if_item(entries, key, cond, span);
        }
        if let Some((key, value)) = get("value") {
            // `- {value: 16, as: n}`: a value variable (the DSL's `n = 16`).
            let value = self.expr(value);
            let mut target = None;
            for (k, v) in entries {
                match k.key_str() {
                    Some("value") => {}
                    Some("as") => target = self.target(v),
                    other => self.error(
                        k.span(),
                        format!("unknown key `{}` in a `value:` item", other.unwrap_or("?")),
                        "expected value, as",
                    ),
                }
            }
            let Some(target) = target else {
                if !entries.iter().any(|(k, _)| k.key_str() == Some("as")) {
                    self.error(
                        key.span(),
                        "`value:` needs `as:` (the variable to store it in)".into(),
                        "no `as:`",
                    );
                }
                return None;
            };
            return Some(Stmt::Let {
                target,
                value,
                span,
            });
        }
        if let Some((_, path)) = get("include") {
            let path = self.expr(path);
            let args = entries
                .iter()
                .filter(|(k, _)| k.key_str() != Some("include"))
                .filter_map(|(k, v)| self.kwarg(k, v))
                .collect();
            return Some(Stmt::Include { path, args, span });
        }
        if let Some((key, value)) = get("output").or_else(|| get("outputs")) {
            let sources = self.sources(value);
            return Some(Stmt::Output {
                sources,
                span: key.span().to(value.span()),
            });
        }
        // A call: exactly one key names the layer kind or block; `name`, `inputs`, `as` are extras.
        let mut callee: Option<(&Node, &Node)> = None;
        let mut name = None;
        let mut source = None;
        let mut target = None;
        for (k, v) in entries {
            match k.key_str().unwrap_or("") {
                "name" => name = Some((k, v)),
                "inputs" => source = Some(self.inputs(v)),
                "as" => target = self.target(v),
                _ if callee.is_some() => {
                    self.error(
                        k.span(),
                        format!(
                            "one layer per list item: found both `{}` and `{}`",
                            callee.and_then(|c| c.0.key_str()).unwrap_or("?"),
                            k.key_str().unwrap_or("?")
                        ),
                        "second layer kind",
                    );
                }
                _ => callee = Some((k, v)),
            }
        }
        let Some((kind, args)) = callee else {
            // `- {inputs: x, as: y}`: no layer, just make `x` the current tensor.
            if let Some(Some(source)) = source {
                return Some(Stmt::Chain {
                    target,
                    chain: Chain {
                        source: Some(source),
                        calls: Vec::new(),
                        span,
                    },
                    span,
                });
            }
            self.error(
                span,
                "this item names no layer kind (like `conv2d:`)".into(),
                "no layer kind",
            );
            return None;
        };
        let mut call = self.call_from(kind.key_str().unwrap_or(""), kind.span(), args, span);
        if let Some((k, v)) = name {
            if let Some(arg) = self.kwarg(k, v) {
                call.args.push(arg);
            }
        }
        Some(chain_stmt(target, source.flatten(), call, span))
    }

    /// `- if: <condition>` with `then:` and `else:` item lists. The condition is DSL text (a
    /// leading `$` is allowed, as in any YAML expression); `else:` holding one `if:` item is
    /// the DSL's `else if`.
    fn if_item(
        &mut self,
        entries: &[(Node, Node)],
        key: &Node,
        cond: &Node,
        span: Span,
    ) -> Option<Stmt> {
        let cond = match cond {
            Node::Scalar { .. } => self.dsl_text(cond, dsl::parse_expr)?,
            other => {
                self.error(
                    other.span(),
                    format!(
                        "`if:` takes a condition such as `level == depth - 1`, found {}",
                        other.describe()
                    ),
                    "expected a condition",
                );
                return None;
            }
        };
        let mut then = Vec::new();
        let mut otherwise = Vec::new();
        let mut has_then = false;
        for (k, v) in entries {
            match k.key_str() {
                Some("if") => {}
                Some("then") => {
                    has_then = true;
                    then = self.stmts(v);
                }
                Some("else") => otherwise = self.stmts(v),
                other => self.error(
                    k.span(),
                    format!("unknown key `{}` in an `if:` item", other.unwrap_or("?")),
                    "expected if, then, else",
                ),
            }
        }
        if !has_then {
            self.error(
                key.span(),
                "`if:` needs `then:` (the items to run when the condition holds)".into(),
                "no `then:`",
            );
            return None;
        }
        let mut branches = vec![Branch { cond, body: then }];
        // `else:` holding only an `if:` item is `else if`: one flat chain, as the DSL's.
        if let [Stmt::If { .. }] = otherwise.as_slice() {
            if let Some(Stmt::If {
                branches: more,
                otherwise: rest,
                ..
            }) = otherwise.pop()
            {
                branches.extend(more);
                otherwise = rest;
            }
        }
        Some(Stmt::If {
            branches,
            otherwise,
            span,
        })
    }

    /// `conv2d: 64`, `conv2d: [64, 3, {strides: 2}]`, `conv2d: {filters: 64}`, `softmax:`.
    fn call_from(&mut self, kind: &str, kind_span: Span, args: &Node, span: Span) -> Call {
        let callee = Ident {
            name: kind.to_string(),
            span: kind_span,
        };
        let mut out = Vec::new();
        match args {
            Node::Scalar {
                text,
                quoted: false,
                ..
            } if text.is_empty() || text == "~" || text == "null" => {}
            // `input: [572, 572, 1]` is the shape itself, not three positional arguments.
            Node::Seq(items, _)
                if kind == "input" && items.iter().all(|i| matches!(i, Node::Scalar { .. })) =>
            {
                out.push(Arg {
                    name: Some(Ident {
                        name: "shape".into(),
                        span: args.span(),
                    }),
                    value: self.expr(args),
                })
            }
            Node::Seq(items, _) => {
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Node::Map(entries, _) if i + 1 == items.len() => {
                            out.extend(entries.iter().filter_map(|(k, v)| self.kwarg(k, v)));
                        }
                        _ => out.push(Arg {
                            name: None,
                            value: self.expr(item),
                        }),
                    }
                }
            }
            Node::Map(entries, _)
                if kind != "input" || entries.iter().any(|(k, _)| k.key_str() == Some("shape")) =>
            {
                out.extend(entries.iter().filter_map(|(k, v)| self.kwarg(k, v)));
            }
            other if kind == "input" => out.push(Arg {
                name: Some(Ident {
                    name: "shape".into(),
                    span: other.span(),
                }),
                value: self.expr(other),
            }),
            other => out.push(Arg {
                name: None,
                value: self.expr(other),
            }),
        }
        Call {
            callee,
            args: out,
            span,
        }
    }

    fn kwarg(&mut self, key: &Node, value: &Node) -> Option<Arg> {
        let name = self.ident_value(key)?;
        Some(Arg {
            name: Some(name),
            value: self.expr(value),
        })
    }

    fn ident_value(&mut self, node: &Node) -> Option<Ident> {
        match node {
            Node::Scalar { text, span, .. } => Some(Ident {
                name: text.clone(),
                span: *span,
            }),
            other => {
                self.error(
                    other.span(),
                    format!("expected a name, found {}", other.describe()),
                    "expected a name",
                );
                None
            }
        }
    }

    fn inputs(&mut self, node: &Node) -> Option<Source> {
        let entries: Vec<&Node> = match node {
            Node::Seq(items, _) => items.iter().collect(),
            single => vec![single],
        };
        let mut chains = Vec::new();
        for entry in &entries {
            if let Some(chain) = self.dsl_text(entry, dsl::parse_chain) {
                chains.push(chain);
            }
        }
        if let (Node::Scalar { .. }, [chain]) = (node, chains.as_slice()) {
            if chain.calls.is_empty() {
                return chain.source.clone();
            }
        }
        Some(Source::List(chains, node.span()))
    }

    fn sources(&mut self, node: &Node) -> Vec<Source> {
        let entries: Vec<&Node> = match node {
            Node::Seq(items, _) => items.iter().collect(),
            single => vec![single],
        };
        entries
            .into_iter()
            .filter_map(|e| {
                let chain = self.dsl_text(e, dsl::parse_chain)?;
                match (chain.source.clone(), chain.calls.is_empty()) {
                    (Some(src), true) => Some(src),
                    _ => Some(Source::List(vec![chain.clone()], chain.span)),
                }
            })
            .collect()
    }

    fn target(&mut self, node: &Node) -> Option<Target> {
        let expr = self.dsl_text(node, dsl::parse_expr)?;
        match expr.kind {
            ExprKind::Name(name) => Some(Target {
                name: Ident {
                    name,
                    span: expr.span,
                },
                index: None,
                span: expr.span,
            }),
            ExprKind::Index(base, index) => match base.kind {
                ExprKind::Name(name) => Some(Target {
                    name: Ident {
                        name,
                        span: base.span,
                    },
                    index: Some(*index),
                    span: expr.span,
                }),
                _ => {
                    self.error(
                        expr.span,
                        "`as:` takes a variable like `x` or `skip[f]`".into(),
                        "not a variable",
                    );
                    None
                }
            },
            _ => {
                self.error(
                    expr.span,
                    "`as:` takes a variable like `x` or `skip[f]`".into(),
                    "not a variable",
                );
                None
            }
        }
    }

    /// Parses a scalar's text with a DSL rule, keeping positions in the YAML file.
    fn dsl_text<T>(
        &mut self,
        node: &Node,
        parse: fn(FileId, &str, usize) -> Result<T, Diagnostic>,
    ) -> Option<T> {
        let Node::Scalar { text, quoted, span } = node else {
            self.error(
                node.span(),
                format!(
                    "expected a reference like `conv2d_1` or `skip[f]`, found {}",
                    node.describe()
                ),
                "expected a reference",
            );
            return None;
        };
        let body = text.strip_prefix('$').unwrap_or(text);
        let offset = self.text_offset(*span, *quoted) + (text.len() - body.len());
        match parse(self.file, body, offset) {
            Ok(v) => Some(v),
            Err(d) => {
                self.diags.push(d);
                None
            }
        }
    }

    /// Where a scalar's text starts: after the quote for quoted scalars.
    fn text_offset(&self, span: Span, quoted: bool) -> usize {
        let start = span.start as usize;
        let first = self.text.as_bytes().get(start);
        if quoted && matches!(first, Some(b'"' | b'\'')) {
            start + 1
        } else {
            start
        }
    }

    fn expr(&mut self, node: &Node) -> Expr {
        let span = node.span();
        match node {
            Node::Seq(items, _) => Expr::new(
                ExprKind::List(items.iter().map(|i| self.expr(i)).collect()),
                span,
            ),
            Node::Map(entries, _) => {
                let mut out = Vec::new();
                for (k, v) in entries {
                    if let Some(id) = self.ident_value(k) {
                        out.push((id, self.expr(v)));
                    }
                }
                Expr::new(ExprKind::Map(out), span)
            }
            Node::Scalar {
                text,
                quoted: false,
                ..
            } => {
                if let Some(kind) = plain_scalar(text) {
                    return Expr::new(kind, span);
                }
                if text.starts_with('$') || is_shape(text) {
                    return self
                        .dsl_text(node, dsl::parse_expr)
                        .unwrap_or(Expr::new(ExprKind::None, span));
                }
                self.interpolated(node)
            }
            // `"$expr"`: quoted so that flow indicators ([ ] , { }) may appear in it.
            Node::Scalar { text, .. } if text.starts_with('$') => self
                .dsl_text(node, dsl::parse_expr)
                .unwrap_or(Expr::new(ExprKind::None, span)),
            Node::Scalar { .. } => self.interpolated(node),
        }
    }

    fn interpolated(&mut self, node: &Node) -> Expr {
        let Node::Scalar { text, quoted, span } = node else {
            unreachable!()
        };
        let offset = self.text_offset(*span, *quoted);
        match dsl::parse_interpolated(self.file, text, offset) {
            Ok(mut e) => {
                e.span = *span;
                e
            }
            Err(d) => {
                self.diags.push(d);
                Expr::new(ExprKind::None, *span)
            }
        }
    }
}

fn chain_stmt(target: Option<Target>, source: Option<Source>, call: Call, span: Span) -> Stmt {
    Stmt::Chain {
        target,
        chain: Chain {
            source,
            calls: vec![call],
            span,
        },
        span,
    }
}

/// YAML 1.2 core schema scalars: null, booleans, integers, floats.
fn plain_scalar(text: &str) -> Option<ExprKind> {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Some(ExprKind::None),
        "true" | "True" | "TRUE" => return Some(ExprKind::Bool(true)),
        "false" | "False" | "FALSE" => return Some(ExprKind::Bool(false)),
        _ => {}
    }
    if let Ok(i) = text.parse::<i64>() {
        return Some(ExprKind::Int(i));
    }
    let looks_numeric = text
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_digit() || c == '-' || c == '+' || c == '.');
    if looks_numeric {
        if let Ok(f) = text.parse::<f64>() {
            return Some(ExprKind::Float(f));
        }
    }
    None
}

fn is_shape(text: &str) -> bool {
    let parts: Vec<&str> = text.split('x').collect();
    parts.len() >= 2
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Where a collection's text ends: after its last child, plus a closing `}`/`]` of flow style.
/// (The end event of a block collection sits at the next token, often on a later line.)
fn content_end(node: &Node, text: &str) -> u32 {
    let (children_end, start) = match node {
        Node::Seq(items, s) => (items.iter().map(|i| i.span().end).max(), s.start),
        Node::Map(entries, s) => (entries.iter().map(|(_, v)| v.span().end).max(), s.start),
        Node::Scalar { span, .. } => return span.end,
    };
    let end = children_end.unwrap_or(start) as usize;
    let rest = text.get(end..).unwrap_or("");
    let trimmed = rest.trim_start_matches([' ', '\t', '\r', '\n', ',']);
    match trimmed.chars().next() {
        Some(c @ ('}' | ']')) if is_flow_open(text, start as usize, c) => {
            (text.len() - trimmed.len() + 1) as u32
        }
        _ => end as u32,
    }
}

fn is_flow_open(text: &str, start: usize, close: char) -> bool {
    let open = if close == '}' { '{' } else { '[' };
    text.get(start..).and_then(|s| s.chars().next()) == Some(open)
}
