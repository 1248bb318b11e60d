//! The unetc DSL front end: pest grammar (grammar/unet.pest) -> AST.

use crate::ast::*;
use crate::diag::{Diagnostic, FileId, Span};
use crate::ir::NestedClass;
use pest::iterators::Pair;
use pest::Parser;

#[derive(pest_derive::Parser)]
#[grammar = "../grammar/unet.pest"]
struct DslParser;

/// Parses a whole DSL spec.
pub fn parse(file: FileId, text: &str) -> Result<Spec, Diagnostic> {
    check_nesting(file, text, 0)?;
    let mut pairs =
        DslParser::parse(Rule::file, text).map_err(|e| syntax_error(file, text, e, 0))?;
    let file_pair = pairs.next().expect("file rule always yields one pair");
    check_expr_depth(file, &file_pair, 0)?;
    let model = file_pair
        .into_inner()
        .find(|p| p.as_rule() == Rule::model)
        .expect("file contains a model");
    let b = Builder { file, offset: 0 };
    Ok(Spec {
        file,
        model: b.model(model),
    })
}

/// Parses one expression that sits at byte `offset` of `file` (used by the YAML front end for `$expr`).
pub fn parse_expr(file: FileId, text: &str, offset: usize) -> Result<Expr, Diagnostic> {
    let pair = parse_whole(Rule::expr, file, text, offset)?;
    Ok(Builder { file, offset }.expr(pair))
}

/// Parses a chain such as `skip[f] -> cropping2d(4)` (YAML `inputs:` entries).
pub fn parse_chain(file: FileId, text: &str, offset: usize) -> Result<Chain, Diagnostic> {
    let pair = parse_whole(Rule::chain, file, text, offset)?;
    Ok(Builder { file, offset }.chain(pair))
}

/// Parses a string body (no quotes) with `{expr}` interpolation.
pub fn parse_interpolated(file: FileId, text: &str, offset: usize) -> Result<Expr, Diagnostic> {
    if !text.contains('{') {
        let span = Span::new(file, offset, offset + text.len());
        return Ok(Expr::new(
            ExprKind::Str(vec![StrPart::Lit(text.to_string())]),
            span,
        ));
    }
    let quoted = format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""));
    // The opening quote shifts positions by one.
    let pair = parse_whole(Rule::string, file, &quoted, offset.saturating_sub(1))?;
    Ok(Builder {
        file,
        offset: offset.saturating_sub(1),
    }
    .string(pair))
}

fn parse_whole<'a>(
    rule: Rule,
    file: FileId,
    text: &'a str,
    offset: usize,
) -> Result<Pair<'a, Rule>, Diagnostic> {
    check_nesting(file, text, offset)?;
    let mut pairs =
        DslParser::parse(rule, text).map_err(|e| syntax_error(file, text, e, offset))?;
    let pair = pairs.next().expect("rule yields one pair");
    check_expr_depth(file, &pair, offset)?;
    let trimmed_end = text.trim_end().len();
    if pair.as_span().end() < trimmed_end {
        let at = offset + pair.as_span().end();
        return Err(Diagnostic::error(
            "E-syntax",
            format!("unexpected text after `{}`", pair.as_str()),
        )
        .at(Span::new(file, at, offset + trimmed_end), "not understood"));
    }
    Ok(pair)
}

/// Brackets (and strings, and `{...}` inside strings) nested deeper than this are refused before
/// parsing: the parser recurses on them.
const MAX_NESTING: usize = 64;

fn check_nesting(file: FileId, text: &str, offset: usize) -> Result<(), Diagnostic> {
    // What each open bracket or quote is; a `{` inside a string is an interpolation, code again.
    #[derive(PartialEq)]
    enum Open {
        Bracket,
        Str,
    }
    let mut stack: Vec<Open> = Vec::new();
    let mut in_comment = false;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        let in_string = stack.last() == Some(&Open::Str);
        if in_comment {
            in_comment = c != '\n';
            continue;
        }
        if in_string && escaped {
            escaped = false;
            continue;
        }
        let open = match c {
            '\\' if in_string => {
                escaped = true;
                None
            }
            // A string ends at its quote; the grammar allows no line break in it either.
            '"' | '\n' if in_string => {
                stack.pop();
                None
            }
            '{' if in_string => Some(Open::Bracket),
            _ if in_string => None,
            '"' => Some(Open::Str),
            '#' => {
                in_comment = true;
                None
            }
            '(' | '[' | '{' => Some(Open::Bracket),
            ')' | ']' | '}' => {
                stack.pop();
                None
            }
            _ => None,
        };
        if let Some(open) = open {
            stack.push(open);
            if stack.len() > MAX_NESTING {
                return Err(Diagnostic::error(
                    "E-limit",
                    format!("brackets and strings nested more than {MAX_NESTING} deep"),
                )
                .at(Span::new(file, offset + i, offset + i + 1), "too deep"));
            }
        }
    }
    Ok(())
}

/// The deepest an expression tree may be (operators, negations, indices and nested values along
/// one path): evaluating and dropping expressions recurses on it.
const MAX_EXPR_DEPTH: usize = 256;

/// Refuses parse trees whose expressions would be deeper than [`MAX_EXPR_DEPTH`]: a long chain
/// such as `1 + 1 + ... + 1` or `a[0][0]...[0]` folds into a tree as deep as it is long. The
/// recursion here follows the parse tree, which [`check_nesting`] bounds.
fn check_expr_depth(file: FileId, p: &Pair<Rule>, offset: usize) -> Result<usize, Diagnostic> {
    let mut own = match p.as_rule() {
        Rule::list | Rule::paren | Rule::map | Rule::string | Rule::range | Rule::indexed => 1,
        _ => 0,
    };
    let mut deepest = 0;
    for child in p.clone().into_inner() {
        match child.as_rule() {
            rule if binop_of(rule).is_some() || matches!(rule, Rule::unary | Rule::not_op) => {
                own += 1
            }
            _ => {
                if p.as_rule() == Rule::indexed {
                    own += 1;
                }
                deepest = deepest.max(check_expr_depth(file, &child, offset)?);
            }
        }
    }
    let depth = own + deepest;
    if depth > MAX_EXPR_DEPTH {
        let s = p.as_span();
        return Err(Diagnostic::error(
            "E-limit",
            format!("an expression nested more than {MAX_EXPR_DEPTH} operations deep"),
        )
        .at(
            Span::new(file, offset + s.start(), offset + s.end()),
            "too deep",
        )
        .help("split it with a `for` loop or a block"));
    }
    Ok(depth)
}

fn syntax_error(
    file: FileId,
    text: &str,
    e: pest::error::Error<Rule>,
    offset: usize,
) -> Diagnostic {
    use pest::error::{ErrorVariant, InputLocation};
    let (start, end) = match e.location {
        InputLocation::Pos(p) => (p, p),
        InputLocation::Span((s, e)) => (s, e),
    };
    // Point at the whole offending token, not just its first byte.
    let end = if end > start {
        end
    } else {
        let rest = &text[start.min(text.len())..];
        let token_len = rest
            .char_indices()
            .find(|(_, c)| c.is_whitespace())
            .map_or(rest.len(), |(i, _)| i);
        start + token_len.max(rest.chars().next().map_or(0, char::len_utf8))
    };
    let expected = match &e.variant {
        ErrorVariant::ParsingError { positives, .. } => {
            let mut names: Vec<&str> = positives.iter().filter_map(|r| rule_name(*r)).collect();
            names.sort();
            names.dedup();
            names
        }
        ErrorVariant::CustomError { .. } => Vec::new(),
    };
    let found = text[start.min(text.len())..]
        .split_whitespace()
        .next()
        .unwrap_or("end of file");
    let message = if expected.is_empty() {
        format!("syntax error at `{found}`")
    } else {
        format!(
            "syntax error: expected {}, found `{found}`",
            expected.join(" or ")
        )
    };
    let mut d = Diagnostic::error("E-syntax", message).at(
        Span::new(file, offset + start, offset + end),
        "not understood here",
    );
    if found.starts_with("->") {
        d = d.help(
            "a chain starts from a layer call, a variable or a list of tensors: store a computed \
             value first (`parts = skips + [x]`, then `parts -> concatenate()`)",
        );
    } else if expected.iter().all(|e| *e == "an operator") {
        d = d.help("is a `)`, `]`, `}` or `,` missing before this?");
    }
    d.help("see the DSL reference in README.md (section `The DSL`)")
}

fn rule_name(rule: Rule) -> Option<&'static str> {
    Some(match rule {
        Rule::model => "`model { ... }`",
        Rule::stmt | Rule::chain_stmt | Rule::assign_stmt | Rule::body => "a statement",
        Rule::call => "a layer call like `conv2d(64)`",
        Rule::source | Rule::chain => "a layer call or a reference",
        Rule::expr | Rule::atom | Rule::primary => "a value",
        Rule::ident | Rule::reference | Rule::indexed => "a name",
        Rule::string => "a string",
        Rule::shape => "a shape like `572x572x1`",
        Rule::int => "an integer",
        Rule::args | Rule::arg => "an argument",
        Rule::params => "a parameter name",
        Rule::nested_class => "`functional` or `sequential` (a nested model's Keras class)",
        Rule::EOI => "end of file",
        Rule::add
        | Rule::sub
        | Rule::mul
        | Rule::div
        | Rule::floordiv
        | Rule::rem
        | Rule::eq
        | Rule::ne
        | Rule::lt
        | Rule::le
        | Rule::gt
        | Rule::ge
        | Rule::and_op
        | Rule::or_op => "an operator",
        Rule::if_stmt => "`if`",
        Rule::else_clause | Rule::else_if => "`else`",
        Rule::index => "an index",
        _ => return None,
    })
}

struct Builder {
    file: FileId,
    offset: usize,
}

impl Builder {
    fn span(&self, p: &Pair<Rule>) -> Span {
        let s = p.as_span();
        Span::new(self.file, self.offset + s.start(), self.offset + s.end())
    }

    fn ident(&self, p: Pair<Rule>) -> Ident {
        Ident {
            name: p.as_str().to_string(),
            span: self.span(&p),
        }
    }

    fn model(&self, p: Pair<Rule>) -> Model {
        let span = self.span(&p);
        let mut model = Model {
            name: None,
            defaults: Vec::new(),
            train: None,
            blocks: Vec::new(),
            body: Vec::new(),
            span,
        };
        for item in p.into_inner() {
            match item.as_rule() {
                Rule::string => {
                    let s = self.span(&item);
                    model.name = Some(Ident {
                        name: unescape(inner_text(&item)),
                        span: s,
                    });
                }
                Rule::defaults_decl => {
                    for call in item.into_inner() {
                        let c = self.call(call);
                        model.defaults.push(Defaults {
                            kind: c.callee,
                            args: c.args,
                            span: c.span,
                        });
                    }
                }
                Rule::train_decl => {
                    if let Some(call) = item.into_inner().next() {
                        model.train = Some(self.call(call));
                    }
                }
                Rule::block_decl => model.blocks.push(self.block(item)),
                Rule::stmt => model.body.push(self.stmt(item)),
                _ => {}
            }
        }
        model
    }

    fn block(&self, p: Pair<Rule>) -> BlockDef {
        let span = self.span(&p);
        let mut inner = p.into_inner();
        let name = self.ident(inner.next().expect("block name"));
        let mut params = Vec::new();
        let mut body = Vec::new();
        let mut nested = None;
        for part in inner {
            match part.as_rule() {
                Rule::params => params = part.into_inner().map(|i| self.ident(i)).collect(),
                Rule::body => body = self.body(part),
                Rule::nested_as => {
                    nested = part
                        .into_inner()
                        .next()
                        .and_then(|c| NestedClass::from_spec_name(c.as_str()));
                }
                _ => {}
            }
        }
        BlockDef {
            name,
            params,
            body,
            nested,
            span,
        }
    }

    fn body(&self, p: Pair<Rule>) -> Vec<Stmt> {
        p.into_inner()
            .filter(|s| s.as_rule() == Rule::stmt)
            .map(|s| self.stmt(s))
            .collect()
    }

    fn stmt(&self, p: Pair<Rule>) -> Stmt {
        let inner = p.into_inner().next().expect("stmt has one child");
        let span = self.span(&inner);
        match inner.as_rule() {
            Rule::for_stmt => {
                let mut parts = inner.into_inner();
                let vars = parts
                    .next()
                    .expect("for vars")
                    .into_inner()
                    .map(|i| self.ident(i))
                    .collect();
                let iter = self.expr(parts.next().expect("for iterable"));
                let body = self.body(parts.next().expect("for body"));
                Stmt::For {
                    vars,
                    iter,
                    body,
                    span,
                }
            }
            Rule::if_stmt => self.if_stmt(inner),
            Rule::input_stmt => {
                // `input 572x572x1` is sugar for the call `input(shape: 572x572x1)`.
                let callee = Ident {
                    name: "input".into(),
                    span: Span::new(self.file, span.start as usize, span.start as usize + 5),
                };
                let args = match inner.into_inner().next() {
                    Some(a) if a.as_rule() == Rule::args => self.args(a),
                    Some(shape) => vec![Arg {
                        name: Some(Ident {
                            name: "shape".into(),
                            span: self.span(&shape),
                        }),
                        value: self.shape(shape),
                    }],
                    None => Vec::new(),
                };
                let call = Call { callee, args, span };
                Stmt::Chain {
                    target: None,
                    chain: Chain {
                        source: None,
                        calls: vec![call],
                        span,
                    },
                    span,
                }
            }
            Rule::include_stmt => {
                let mut parts = inner.into_inner();
                let path = self.string(parts.next().expect("include path"));
                let args = parts.next().map(|a| self.args(a)).unwrap_or_default();
                Stmt::Include { path, args, span }
            }
            Rule::output_stmt => Stmt::Output {
                sources: inner.into_inner().map(|s| self.source(s)).collect(),
                span,
            },
            Rule::chain_stmt | Rule::assign_stmt => {
                let mut target = None;
                let mut chain = None;
                for part in inner.into_inner() {
                    match part.as_rule() {
                        Rule::target => target = Some(self.target(part)),
                        Rule::chain => chain = Some(self.chain(part)),
                        Rule::expr => {
                            return Stmt::Let {
                                target: target.expect("an assignment has a target"),
                                value: self.expr(part),
                                span,
                            };
                        }
                        _ => {}
                    }
                }
                Stmt::Chain {
                    target,
                    chain: chain.expect("chain statement has a chain"),
                    span,
                }
            }
            r => unreachable!("unexpected statement rule {r:?}"),
        }
    }

    fn if_stmt(&self, p: Pair<Rule>) -> Stmt {
        let span = self.span(&p);
        let mut branches = Vec::new();
        let mut otherwise = Vec::new();
        let mut parts = p.into_inner();
        while let Some(part) = parts.next() {
            match part.as_rule() {
                // The `if` itself: its condition, then its body.
                Rule::expr => {
                    let cond = self.expr(part);
                    let body = self.body(parts.next().expect("if body"));
                    branches.push(Branch { cond, body });
                }
                Rule::else_if => {
                    let mut inner = part.into_inner();
                    let cond = self.expr(inner.next().expect("else if condition"));
                    let body = self.body(inner.next().expect("else if body"));
                    branches.push(Branch { cond, body });
                }
                _ => otherwise = self.body(part.into_inner().next().expect("else body")),
            }
        }
        Stmt::If {
            branches,
            otherwise,
            span,
        }
    }

    fn target(&self, p: Pair<Rule>) -> Target {
        let span = self.span(&p);
        let mut parts = p.into_inner();
        let name = self.ident(parts.next().expect("target name"));
        let index = parts.next().map(|i| self.index(i));
        Target { name, index, span }
    }

    /// `name`, `name[i]`, `name[i][j]`, `name[i, j]`.
    fn indexed(&self, p: Pair<Rule>) -> Expr {
        let mut parts = p.into_inner();
        let id = parts.next().expect("name");
        let mut e = Expr::new(ExprKind::Name(id.as_str().to_string()), self.span(&id));
        for index in parts {
            let s = e.span.to(self.span(&index));
            e = Expr::new(ExprKind::Index(Box::new(e), Box::new(self.index(index))), s);
        }
        e
    }

    /// The inside of `[i]`, or of `[i, j]` as the tuple `(i, j)`.
    fn index(&self, p: Pair<Rule>) -> Expr {
        let span = self.span(&p);
        let mut items: Vec<Expr> = p.into_inner().map(|e| self.expr(e)).collect();
        if items.len() == 1 {
            return items.pop().expect("one index");
        }
        Expr::new(ExprKind::Tuple(items), span)
    }

    fn chain(&self, p: Pair<Rule>) -> Chain {
        let span = self.span(&p);
        let mut parts = p.into_inner();
        let first = parts.next().expect("chain source");
        let mut calls = Vec::new();
        let source = {
            let inner = first.into_inner().next().expect("source child");
            if inner.as_rule() == Rule::call {
                calls.push(self.call(inner));
                None
            } else {
                Some(self.source_inner(inner))
            }
        };
        calls.extend(parts.map(|c| self.call(c)));
        Chain {
            source,
            calls,
            span,
        }
    }

    fn source(&self, p: Pair<Rule>) -> Source {
        let inner = p.into_inner().next().expect("source child");
        if inner.as_rule() == Rule::call {
            let span = self.span(&inner);
            let call = self.call(inner);
            return Source::List(
                vec![Chain {
                    source: None,
                    calls: vec![call],
                    span,
                }],
                span,
            );
        }
        self.source_inner(inner)
    }

    fn source_inner(&self, p: Pair<Rule>) -> Source {
        let span = self.span(&p);
        match p.as_rule() {
            Rule::list_source => {
                Source::List(p.into_inner().map(|c| self.chain(c)).collect(), span)
            }
            Rule::reference => Source::Ref(self.indexed(p)),
            r => unreachable!("unexpected source rule {r:?}"),
        }
    }

    fn call(&self, p: Pair<Rule>) -> Call {
        let span = self.span(&p);
        let mut parts = p.into_inner();
        let callee = self.ident(parts.next().expect("callee"));
        let args = parts.next().map(|a| self.args(a)).unwrap_or_default();
        Call { callee, args, span }
    }

    fn args(&self, p: Pair<Rule>) -> Vec<Arg> {
        p.into_inner()
            .map(|arg| {
                let mut parts: Vec<Pair<Rule>> = arg.into_inner().collect();
                let value = self.expr(parts.pop().expect("argument value"));
                let name = parts.pop().map(|n| self.ident(n));
                Arg { name, value }
            })
            .collect()
    }

    fn shape(&self, p: Pair<Rule>) -> Expr {
        let span = self.span(&p);
        let dims = p
            .as_str()
            .split('x')
            .map(|d| {
                let kind = d.parse().map_or(ExprKind::Int(i64::MAX), ExprKind::Int);
                Expr::new(kind, span)
            })
            .collect();
        Expr::new(ExprKind::Tuple(dims), span)
    }

    fn expr(&self, p: Pair<Rule>) -> Expr {
        // The grammar gives a flat run of prefixes, operands and operators; precedence is
        // applied here (see `BinOp::precedence`).
        let mut tokens: Vec<Token> = Vec::new();
        for part in p.into_inner() {
            let token = match part.as_rule() {
                Rule::unary => Token::Neg,
                Rule::not_op => Token::Not(self.span(&part)),
                rule => match binop_of(rule) {
                    Some(op) => Token::Op(op),
                    None => Token::Operand(self.primary(part)),
                },
            };
            tokens.push(token);
        }
        let mut tokens = tokens.into_iter().peekable();
        climb(&mut tokens, 0)
    }

    fn primary(&self, p: Pair<Rule>) -> Expr {
        let span = self.span(&p);
        let kind = match p.as_rule() {
            Rule::shape => return self.shape(p),
            Rule::int => ExprKind::Int(p.as_str().parse().unwrap_or(i64::MAX)),
            Rule::float => ExprKind::Float(p.as_str().parse().unwrap_or(f64::NAN)),
            Rule::boolean => ExprKind::Bool(p.as_str() == "true"),
            Rule::none => ExprKind::None,
            Rule::string => return self.string(p),
            Rule::list => ExprKind::List(p.into_inner().map(|e| self.expr(e)).collect()),
            Rule::paren => {
                let trailing_comma = p.as_str().trim_end_matches(')').trim_end().ends_with(',');
                let mut items: Vec<Expr> = p.into_inner().map(|e| self.expr(e)).collect();
                if items.len() == 1 && !trailing_comma {
                    return items.pop().expect("one item");
                }
                ExprKind::Tuple(items)
            }
            Rule::map => ExprKind::Map(
                p.into_inner()
                    .map(|entry| {
                        let mut kv = entry.into_inner();
                        let k = self.ident(kv.next().expect("map key"));
                        let v = self.expr(kv.next().expect("map value"));
                        (k, v)
                    })
                    .collect(),
            ),
            Rule::range => {
                let mut parts = p.into_inner();
                let start = self.primary(parts.next().expect("range start"));
                // A lone atom (see `range` in the grammar).
                let Some(op) = parts.next() else {
                    return start;
                };
                let inclusive = op.as_rule() == Rule::range_incl;
                let end = self.primary(parts.next().expect("range end"));
                ExprKind::Range {
                    start: Box::new(start),
                    end: Box::new(end),
                    inclusive,
                }
            }
            Rule::indexed => return self.indexed(p),
            Rule::expr => return self.expr(p),
            r => unreachable!("unexpected expression rule {r:?}"),
        };
        Expr::new(kind, span)
    }

    fn string(&self, p: Pair<Rule>) -> Expr {
        let span = self.span(&p);
        let mut parts = Vec::new();
        for part in p.into_inner() {
            match part.as_rule() {
                Rule::string_text => push_lit(&mut parts, part.as_str()),
                Rule::string_escape => push_lit(&mut parts, &unescape(part.as_str())),
                Rule::interp => {
                    let e = part.into_inner().next().expect("interpolated expr");
                    parts.push(StrPart::Expr(self.expr(e)));
                }
                _ => {}
            }
        }
        Expr::new(ExprKind::Str(parts), span)
    }
}

fn push_lit(parts: &mut Vec<StrPart>, s: &str) {
    if let Some(StrPart::Lit(last)) = parts.last_mut() {
        last.push_str(s);
    } else {
        parts.push(StrPart::Lit(s.to_string()));
    }
}

fn inner_text<'a>(p: &Pair<'a, Rule>) -> &'a str {
    let s = p.as_str();
    &s[1..s.len() - 1]
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some(other) => out.push(other),
                None => {}
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// One piece of an expression's flat run (see `Builder::expr`).
enum Token {
    Operand(Expr),
    Op(BinOp),
    Neg,
    Not(Span),
}

fn binop_of(rule: Rule) -> Option<BinOp> {
    Some(match rule {
        Rule::add => BinOp::Add,
        Rule::sub => BinOp::Sub,
        Rule::mul => BinOp::Mul,
        Rule::div => BinOp::Div,
        Rule::floordiv => BinOp::FloorDiv,
        Rule::rem => BinOp::Mod,
        Rule::eq => BinOp::Eq,
        Rule::ne => BinOp::Ne,
        Rule::lt => BinOp::Lt,
        Rule::le => BinOp::Le,
        Rule::gt => BinOp::Gt,
        Rule::ge => BinOp::Ge,
        Rule::and_op => BinOp::And,
        Rule::or_op => BinOp::Or,
        _ => return None,
    })
}

/// Precedence climbing over the tokens: operators binding tighter than `min` fold first, all
/// left-associative. The recursion is as deep as the precedence levels plus the prefixes, which
/// `check_expr_depth` bounds.
fn climb(tokens: &mut std::iter::Peekable<std::vec::IntoIter<Token>>, min: u8) -> Expr {
    let mut lhs = prefixed(tokens);
    while let Some(Token::Op(op)) = tokens.peek() {
        let op = *op;
        if op.precedence() <= min {
            break;
        }
        tokens.next();
        let rhs = climb(tokens, op.precedence());
        let span = lhs.span.to(rhs.span);
        lhs = Expr::new(ExprKind::Binary(op, Box::new(lhs), Box::new(rhs)), span);
    }
    lhs
}

/// An operand with its prefixes: `-` binds tightest, `not` takes a whole comparison.
fn prefixed(tokens: &mut std::iter::Peekable<std::vec::IntoIter<Token>>) -> Expr {
    match tokens.next() {
        Some(Token::Neg) => {
            let inner = prefixed(tokens);
            let span = inner.span;
            Expr::new(ExprKind::Neg(Box::new(inner)), span)
        }
        Some(Token::Not(at)) => {
            let inner = climb(tokens, NOT_PRECEDENCE);
            let span = at.to(inner.span);
            Expr::new(ExprKind::Not(Box::new(inner)), span)
        }
        Some(Token::Operand(e)) => e,
        // The grammar puts an operand after every prefix and operator.
        Some(Token::Op(_)) | None => unreachable!("an expression ends in an operand"),
    }
}
