//! Expansion: AST -> layer graph. Runs the spec like the Keras code it stands for: blocks are
//! called, loops unrolled, includes inlined, defaults merged, the `unet` template built, and
//! layers named in creation order as a fresh Keras session names them.

mod eval;
mod template;

use crate::ast::*;
use crate::diag::{Diagnostic, SourceMap, Span};
use crate::front::{self, Format};
use crate::ir::ops::{parse_call, Op, KINDS};
use crate::ir::regularizer::Regularizers;
use crate::ir::value::{ArgReader, ArgValue, Value};
use crate::ir::{Graph, NestedClass, Node, NodeId, Scope, ScopeId, Shape};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Calls nested deeper than this (blocks calling blocks, includes including) are refused.
const MAX_CALL_DEPTH: usize = 64;
/// A spec may create at most this many layers (loops over huge ranges are refused).
pub const MAX_LAYERS: usize = 100_000;
/// The most work one expansion may do, in units of loop iterations, block calls, includes and
/// values built or copied (see [`Expander::charge`]): nested loops or blocks that create nothing
/// would otherwise run for ever.
pub const MAX_WORK: u64 = 2_000_000;
/// The largest included spec file read, in bytes.
pub const MAX_INCLUDE_BYTES: u64 = 64 << 20;

/// Keras's name counters: one per base name, shared by every model built in one session.
#[derive(Debug, Default, Clone)]
pub struct Session {
    counters: HashMap<String, usize>,
}

impl Session {
    pub fn new() -> Session {
        Session::default()
    }

    /// The next auto-name for `base`: `conv2d`, `conv2d_1`, ...; inputs count from one (`input_1`).
    pub fn auto_name(&mut self, base: &str) -> String {
        let n = self.counters.entry(base.to_string()).or_insert(0);
        let name = match (*n, base) {
            (_, "input") => format!("input_{}", *n + 1),
            (0, _) => base.to_string(),
            (k, _) => format!("{base}_{k}"),
        };
        *n += 1;
        name
    }
}

/// The layer graph and everything found wrong while building it.
pub struct Expanded {
    pub graph: Graph,
    /// Nodes whose arguments or inputs were wrong: later stages skip them quietly.
    pub broken: Vec<bool>,
    pub diags: Vec<Diagnostic>,
    /// The expansion looked at shapes (the `unet` template's `crop: auto`): at another input
    /// size it may build another graph.
    pub shape_dependent: bool,
}

/// Expands a parsed spec. Included files are read and added to `sources`.
pub fn expand(spec: &Spec, sources: &mut SourceMap, session: &mut Session) -> Expanded {
    expand_with(spec, sources, session, None)
}

/// As [`expand`], replacing the shape of the first input layer created.
pub fn expand_with(
    spec: &Spec,
    sources: &mut SourceMap,
    session: &mut Session,
    input_shape: Option<Vec<i64>>,
) -> Expanded {
    let mut x = Expander {
        input_shape,
        sources,
        session,
        graph: Graph::default(),
        broken: Vec::new(),
        names: HashMap::new(),
        pending: Vec::new(),
        diags: Vec::new(),
        include_stack: Vec::new(),
        shapes: Vec::new(),
        work: 0,
        halted: false,
        block_stack: Vec::new(),
        faulty_defaults: Vec::new(),
        shape_dependent: false,
        scope_stack: Vec::new(),
        shared_calls: HashMap::new(),
    };
    let path = x.sources.path(spec.file).to_path_buf();
    if let Ok(canonical) = path.canonicalize() {
        x.include_stack.push(canonical);
    }
    let mut cx = Context::new(&spec.model, None, false, None);
    x.collect_defaults(&mut cx, &spec.model);
    if let Some(call) = &spec.model.train {
        x.collect_train(&mut cx, call);
    }
    let last = x.run_body(&mut cx, &spec.model.body, 0);
    x.graph.name = match &spec.model.name {
        Some(name) => name.name.clone(),
        None => x.session.auto_name("model"),
    };
    if x.graph.outputs.is_empty() {
        x.graph.outputs = x.tensors_of(last.as_ref());
    }
    // After a limit or a recursion the graph is a fragment: unresolved names and unused layers
    // in it would only be follow-on errors.
    if !x.halted {
        x.resolve_pending();
        x.check_inputs(spec);
        x.warn_unused();
    } else {
        x.drop_pending();
    }
    Expanded {
        graph: x.graph,
        broken: x.broken,
        diags: x.diags,
        shape_dependent: x.shape_dependent,
    }
}

/// One call of a nested model: a block defined `as functional`/`as sequential`, or an
/// `include` with `nested:`.
struct NestedCall<'a> {
    class: NestedClass,
    /// The block's name or the included file, for messages.
    label: &'a str,
    span: Span,
    name: Option<ArgValue>,
    trainable: Option<ArgValue>,
    input: Option<Value>,
}

/// What a spec (the main one or an included one) sees: its blocks, defaults and variables.
struct Context<'s> {
    blocks: HashMap<String, &'s BlockDef>,
    defaults: HashMap<String, Vec<ArgValue>>,
    vars: HashMap<String, Value>,
    /// The tensor the next statement consumes by default.
    current: Option<Value>,
    /// Layers created here come from an include.
    included: bool,
    /// `include ... (trainable: false)`
    frozen: bool,
    /// An include's input: replaces the included spec's input layer.
    input_binding: Option<Value>,
    /// Inside a nested model's body: the model, and the call's tensors its `input` layers
    /// stand for (taken in order).
    nested: Option<(ScopeId, Vec<Value>)>,
}

impl<'s> Context<'s> {
    fn new(
        model: &'s Model,
        input_binding: Option<Value>,
        included: bool,
        trainable: Option<bool>,
    ) -> Self {
        Context {
            blocks: model
                .blocks
                .iter()
                .map(|b| (b.name.name.clone(), b))
                .collect(),
            defaults: HashMap::new(),
            vars: HashMap::new(),
            current: None,
            included,
            frozen: trainable == Some(false),
            input_binding,
            nested: None,
        }
    }

    /// A block call: same blocks and defaults, fresh variables.
    fn for_block(&self, current: Option<Value>) -> Self {
        Context {
            blocks: self.blocks.clone(),
            defaults: self.defaults.clone(),
            vars: HashMap::new(),
            current,
            included: self.included,
            frozen: self.frozen,
            input_binding: self.input_binding.clone(),
            nested: None,
        }
    }
}

struct Expander<'a> {
    /// `--input-shape`: used for the first input layer.
    input_shape: Option<Vec<i64>>,
    sources: &'a mut SourceMap,
    session: &'a mut Session,
    graph: Graph,
    broken: Vec<bool>,
    /// Layer name -> node, for references and duplicate checks.
    names: HashMap<String, NodeId>,
    /// Inputs naming layers not defined yet: (node, input slot, name, span).
    pending: Vec<(NodeId, usize, String, Span)>,
    diags: Vec<Diagnostic>,
    include_stack: Vec<PathBuf>,
    /// Shapes computed on demand (the template needs them for `crop: auto`).
    shapes: Vec<Option<Option<Shape>>>,
    /// Work done so far, against [`MAX_WORK`].
    work: u64,
    /// A limit was reached or a block called itself (reported once); expansion stops.
    halted: bool,
    /// The blocks being called, innermost last, by the span of their names: a block already on
    /// it calls itself, which never ends (conditions could stop it, but unbounded recursion is
    /// what the limits keep out: expansion stays a bounded unrolling).
    block_stack: Vec<(Span, String)>,
    /// Layer kinds whose `defaults` had an error: a missing argument of such a layer is most
    /// likely the misspelled default, so it is not reported again.
    faulty_defaults: Vec<String>,
    /// A shape was asked for while expanding ([`Expanded::shape_dependent`]).
    shape_dependent: bool,
    /// The nested models being expanded, innermost last: new layers belong to the last.
    scope_stack: Vec<ScopeId>,
    /// Calls made so far of each shared layer (by its first call).
    shared_calls: HashMap<NodeId, usize>,
}

impl<'s> Expander<'_> {
    fn error(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    /// Stops the expansion with `d`, the one diagnostic for it: whatever would follow from a
    /// half-built graph is not reported.
    fn halt(&mut self, d: Diagnostic) {
        if !self.halted {
            self.halted = true;
            self.error(d);
        }
    }

    /// Counts `units` of work done at `span`; false (with one `E-limit` for the whole expansion)
    /// once [`MAX_WORK`] is exceeded, and the caller stops.
    pub(super) fn charge(&mut self, units: usize, span: Span) -> bool {
        self.work = self.work.saturating_add(units as u64);
        if self.work <= MAX_WORK && !self.halted {
            return true;
        }
        self.halt(
            Diagnostic::error(
                "E-limit",
                format!("the spec does more than {MAX_WORK} steps of work while expanding"),
            )
            .at(span, "stopped here")
            .help(
                "loops, block calls and includes multiply: check for nested loops over long \
                 ranges, blocks that call other blocks many times, or values that grow",
            ),
        );
        false
    }

    /// False (with one `E-limit` for the whole expansion) once the spec has created more than
    /// [`MAX_LAYERS`] layers; `span` is the loop or call that went over.
    fn within_layer_limit(&mut self, span: Span) -> bool {
        if self.graph.nodes.len() <= MAX_LAYERS && !self.halted {
            return true;
        }
        self.halt(
            Diagnostic::error(
                "E-limit",
                format!("the spec creates more than {MAX_LAYERS} layers"),
            )
            .at(span, "stopped here")
            .help("check the ranges of the loops around this place"),
        );
        false
    }

    fn run_body(&mut self, cx: &mut Context<'s>, body: &'s [Stmt], depth: usize) -> Option<Value> {
        for stmt in body {
            if !self.within_layer_limit(stmt.span()) {
                return cx.current.clone();
            }
            self.stmt(cx, stmt, depth);
        }
        cx.current.clone()
    }

    fn stmt(&mut self, cx: &mut Context<'s>, stmt: &'s Stmt, depth: usize) {
        match stmt {
            Stmt::Chain { target, chain, .. } => {
                let result = self.chain(cx, chain, depth);
                if let Some(t) = target {
                    self.assign(cx, t, result.clone());
                }
                // `x = rates[0]` copies a value: only tensors become the current tensor.
                if result.as_ref().is_some_and(is_tensor_like) {
                    cx.current = result;
                }
            }
            Stmt::Let { target, value, .. } => {
                let result = self.eval(cx, value);
                self.assign(cx, target, result);
            }
            Stmt::If {
                branches,
                otherwise,
                span,
            } => {
                for branch in branches {
                    // Inside a loop every test is work, even when no branch creates anything.
                    if !self.charge(1, *span) {
                        return;
                    }
                    match self.condition(cx, &branch.cond) {
                        Some(true) => {
                            self.run_body(cx, &branch.body, depth);
                            return;
                        }
                        Some(false) => {}
                        // Reported; running another branch would only add follow-on errors.
                        None => return,
                    }
                }
                self.run_body(cx, otherwise, depth);
            }
            Stmt::For {
                vars,
                iter,
                body,
                span,
            } => self.for_loop(cx, vars, iter, body, *span, depth),
            Stmt::Include { path, args, span } => self.include(cx, path, args, *span, depth),
            Stmt::Output { sources, .. } => {
                let mut outputs = Vec::new();
                for source in sources {
                    let v = self.source(cx, source, depth);
                    if let Some(v) = &v {
                        self.expect_tensor(v, source_span(source), "an output");
                    }
                    outputs.extend(self.tensors_of(v.as_ref()));
                }
                if let Some((scope, _)) = &cx.nested {
                    self.graph.scopes[scope.index()].outputs = outputs.clone();
                    cx.current = Some(match outputs.as_slice() {
                        [one] => Value::Tensor(*one),
                        _ => Value::List(outputs.into_iter().map(Value::Tensor).collect()),
                    });
                } else if !cx.included {
                    self.graph.outputs = outputs;
                } else {
                    cx.current = Some(Value::List(
                        outputs.into_iter().map(Value::Tensor).collect(),
                    ));
                }
            }
        }
    }

    fn assign(&mut self, cx: &mut Context<'s>, target: &'s Target, value: Option<Value>) {
        let Some(value) = value else { return };
        let key = match &target.index {
            None => target.name.name.clone(),
            Some(index) => match self.eval(cx, index) {
                Some(i) => slot_key(&target.name.name, &i),
                None => return,
            },
        };
        cx.vars.insert(key, value);
    }

    fn for_loop(
        &mut self,
        cx: &mut Context<'s>,
        vars: &'s [Ident],
        iter: &'s Expr,
        body: &'s [Stmt],
        span: Span,
        depth: usize,
    ) {
        let Some(items) = self.eval(cx, iter) else {
            return;
        };
        let Value::List(items) = items else {
            self.error(
                Diagnostic::error(
                    "E-type",
                    format!(
                        "`for` loops over a list or range, found {}",
                        items.type_name()
                    ),
                )
                .at(iter.span, "not a list"),
            );
            return;
        };
        for item in items {
            if !self.charge(1, span) {
                return;
            }
            if vars.len() == 1 {
                cx.vars.insert(vars[0].name.clone(), item);
            } else {
                match item {
                    Value::List(parts) if parts.len() == vars.len() => {
                        for (var, part) in vars.iter().zip(parts) {
                            cx.vars.insert(var.name.clone(), part);
                        }
                    }
                    other => {
                        self.error(
                            Diagnostic::error(
                                "E-type",
                                format!("`for` with {} variables needs items with {} values, found `{other}`", vars.len(), vars.len()),
                            )
                            .at(iter.span, "items do not match the loop variables")
                            .also(span, "in this loop"),
                        );
                        return;
                    }
                }
            }
            self.run_body(cx, body, depth);
            if !self.within_layer_limit(span) {
                return;
            }
        }
    }

    /// Evaluates a chain: its source (or the incoming tensor), then each call in turn.
    fn chain(&mut self, cx: &mut Context<'s>, chain: &'s Chain, depth: usize) -> Option<Value> {
        let mut value = match &chain.source {
            None => cx.current.clone(),
            Some(source) => {
                let v = self.source(cx, source, depth)?;
                if !chain.calls.is_empty() && !self.source_is_tensor(source, &v) {
                    return None;
                }
                Some(v)
            }
        };
        for call in &chain.calls {
            value = self.call(cx, call, value, depth);
            value.as_ref()?;
        }
        value
    }

    fn source(&mut self, cx: &mut Context<'s>, source: &'s Source, depth: usize) -> Option<Value> {
        match source {
            Source::Ref(expr) => self.reference(cx, expr),
            Source::List(chains, _) => {
                let mut items = Vec::new();
                for chain in chains {
                    items.push(self.chain(cx, chain, depth)?);
                }
                Some(Value::List(items))
            }
        }
    }

    /// A tensor reference: a variable, `var[index]`, or a layer name (maybe defined later).
    fn reference(&mut self, cx: &mut Context<'s>, expr: &'s Expr) -> Option<Value> {
        match &expr.kind {
            ExprKind::Name(name) => {
                match cx.vars.get(name) {
                    // A string in a tensor position names a layer (`for tap in [block1_conv2, ...]`).
                    Some(Value::Str(layer)) => {
                        let layer = layer.clone();
                        return Some(
                            self.names
                                .get(&layer)
                                .map_or(Value::Pending(layer), |&id| Value::Tensor(id)),
                        );
                    }
                    Some(v) => {
                        let units = value_weight(v);
                        if !self.charge(units, expr.span) {
                            return None;
                        }
                        return Some(v.clone());
                    }
                    None => {}
                }
                if let Some(&id) = self.names.get(name) {
                    return Some(Value::Tensor(id));
                }
                Some(Value::Pending(name.clone()))
            }
            ExprKind::Index(..) => match self.eval(cx, expr)? {
                Value::Str(layer) => Some(
                    self.names
                        .get(&layer)
                        .map_or(Value::Pending(layer), |&id| Value::Tensor(id)),
                ),
                v => Some(v),
            },
            _ => {
                self.error(
                    Diagnostic::error("E-type", "expected a tensor reference")
                        .at(expr.span, "not a reference"),
                );
                None
            }
        }
    }

    /// Flattens a value into node ids (ignoring pending references).
    fn tensors_of(&self, value: Option<&Value>) -> Vec<NodeId> {
        match value {
            Some(Value::Tensor(id)) => vec![*id],
            Some(Value::List(items)) => items
                .iter()
                .flat_map(|v| self.tensors_of(Some(v)))
                .collect(),
            _ => Vec::new(),
        }
    }

    fn call(
        &mut self,
        cx: &mut Context<'s>,
        call: &'s Call,
        input: Option<Value>,
        depth: usize,
    ) -> Option<Value> {
        let name = call.callee.name.as_str();
        if depth > MAX_CALL_DEPTH {
            self.halt(
                Diagnostic::error(
                    "E-recursion",
                    format!("calls nested more than {MAX_CALL_DEPTH} deep"),
                )
                .at(call.callee.span, "here")
                .help("a block must not call itself, directly or through other blocks"),
            );
            return None;
        }
        if let Some(block) = cx.blocks.get(name).copied() {
            return self.call_block(cx, block, call, input, depth);
        }
        let mut args = self.eval_args(cx, &call.args)?;
        // A crop whose `to` is wrong is still made (broken), so its input is not reported unused.
        let mut crop_failed = false;
        if let kind @ ("cropping2d" | "cropping3d") = canonical_kind(name) {
            (args, crop_failed) = self.crop_to(kind, args, input.as_ref(), call);
        }
        if name == "unet" {
            return self.template(cx, call, args, input);
        }
        if name == "input" {
            if let Some((scope, bindings)) = &mut cx.nested {
                // Without a tensor for it (reported), it stays an input layer of its own, so
                // that what follows it is not reported too.
                if let Some(bound) = self.nested_input(*scope, bindings, args.clone(), call) {
                    return Some(bound);
                }
            }
            if let Some(binding) = cx.input_binding.clone() {
                return Some(binding);
            }
        }
        if name == "shared" {
            return self.call_shared(cx, args, input, call);
        }
        if !KINDS.contains(&name) {
            let candidates = KINDS
                .iter()
                .copied()
                .chain(cx.blocks.keys().map(String::as_str))
                .chain(["unet"]);
            let mut d = Diagnostic::error(
                "E-unknown-kind",
                format!("unknown layer kind or block `{name}`"),
            )
            .at(call.callee.span, "not a layer kind or block");
            d = match crate::suggest::closest(name, candidates) {
                Some(s) => d.help(format!("did you mean `{s}`?")),
                None => d.help("layer kinds are Keras's in snake_case: conv2d, max_pooling2d, conv2d_transpose, ..."),
            };
            self.error(d);
            return None;
        }
        let mut merged = args;
        if let Some(defaults) = cx
            .defaults
            .get(name)
            .or_else(|| cx.defaults.get(canonical_kind(name)))
        {
            for d in defaults {
                let given = merged
                    .iter()
                    .any(|a| a.name.as_deref() == d.name.as_deref());
                let positional_covers = d.name.as_deref().is_some_and(|n| {
                    let pos = Op::positional(name);
                    let n_positional = merged.iter().filter(|a| a.name.is_none()).count();
                    pos.iter().take(n_positional).any(|p| *p == n)
                });
                if !given && !positional_covers {
                    merged.push(d.clone());
                }
            }
        }
        let inputs = if name == "input" {
            Vec::new()
        } else {
            input.into_iter().collect()
        };
        let id = self.add_layer(cx, name, merged, inputs, call.span, call.callee.span)?;
        if crop_failed {
            self.broken[id.index()] = true;
        }
        Some(Value::Tensor(id))
    }

    fn eval_args(&mut self, cx: &mut Context<'s>, args: &'s [Arg]) -> Option<Vec<ArgValue>> {
        let mut out = Vec::new();
        let mut ok = true;
        for arg in args {
            match self.eval(cx, &arg.value) {
                Some(value) => out.push(ArgValue {
                    name: arg.name.as_ref().map(|n| n.name.clone()),
                    value,
                    span: arg.value.span,
                    name_span: arg.name.as_ref().map(|n| n.span),
                }),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    /// Creates one layer: splits off `name` and `trainable`, parses the Keras arguments,
    /// names it, and wires its inputs. Returns `None` if it could not be created at all.
    fn add_layer(
        &mut self,
        cx: &Context<'s>,
        kind: &str,
        mut args: Vec<ArgValue>,
        input: Vec<Value>,
        span: Span,
        kind_span: Span,
    ) -> Option<NodeId> {
        let explicit_name = take_kwarg(&mut args, "name");
        let trainable = take_kwarg(&mut args, "trainable");
        let (regularizers, bad_regularizers) = Regularizers::take(&mut args, Op::regularized(kind));
        for (arg, why) in &bad_regularizers {
            let at = arg.name_span.unwrap_or(arg.span);
            self.error(
                Diagnostic::error(
                    "E-arg-value",
                    format!(
                        "`{kind}` argument `{}`: {why}",
                        arg.name.as_deref().unwrap_or_default()
                    ),
                )
                .at(at, "not a regularizer"),
            );
        }
        let reader = ArgReader::new(kind, span, args, Op::positional(kind));
        let (op, mut arg_diags) = parse_call(kind, reader);
        let mut broken = !arg_diags.is_empty();
        if self
            .faulty_defaults
            .iter()
            .any(|k| k == canonical_kind(kind))
        {
            // Most likely the argument the misspelled default meant: a follow-on error.
            arg_diags.retain(|d| d.code != "E-arg-missing");
        }
        self.diags.extend(arg_diags);
        let mut op = op?;
        if let (Op::Input(input), true) = (&mut op, self.graph.inputs.is_empty()) {
            if let Some(shape) = self.input_shape.take() {
                input.shape = shape;
            }
        }
        let name = match explicit_name {
            Some(ArgValue {
                value: Value::Str(s),
                span,
                ..
            }) => {
                if s.is_empty() || s.chars().any(|c| c.is_whitespace() || c == '[' || c == ']') {
                    self.error(
                        Diagnostic::error("E-name", format!("`{s}` is not a usable layer name"))
                            .at(span, "bad name")
                            .help("layer names are non-empty and have no spaces or brackets"),
                    );
                }
                s
            }
            Some(other) => {
                self.error(
                    Diagnostic::error("E-arg-type", "`name` must be a string")
                        .at(other.span, "not a string"),
                );
                self.session.auto_name(op.auto_name_base())
            }
            None => self.session.auto_name(op.auto_name_base()),
        };
        let trainable = match trainable {
            Some(ArgValue {
                value: Value::Bool(b),
                ..
            }) => b,
            Some(other) => {
                self.error(
                    Diagnostic::error("E-arg-type", "`trainable` must be true or false")
                        .at(other.span, "not a boolean"),
                );
                true
            }
            None => op.trainable_by_default(),
        } && !cx.frozen;

        // Inputs: the incoming value flattened; pending names are resolved after expansion.
        let mut inputs = Vec::new();
        let mut pending = Vec::new();
        for v in &input {
            flatten(v, &mut inputs, &mut pending);
        }
        let id = NodeId(self.graph.nodes.len() as u32);
        let (min, max) = op.arity();
        let n_inputs = inputs.len();
        if n_inputs < min || n_inputs > max {
            let want = match (min, max) {
                (0, 0) => "no inputs".to_string(),
                (1, 1) => "one input".to_string(),
                (m, usize::MAX) => format!("at least {m} inputs"),
                (m, n) => format!("{m} to {n} inputs"),
            };
            let mut d = Diagnostic::error(
                "E-arity",
                format!("`{kind}` takes {want}, but gets {n_inputs}"),
            )
            .at(kind_span, format!("{n_inputs} input(s)"));
            if min >= 2 {
                d = d.help(format!(
                    "give it a list: `[a, b] -> {kind}()` (YAML: `inputs: [a, b]`)"
                ));
            } else if n_inputs == 0 {
                d = d.help("start the model with `input HxWxC`, or give this layer an input: `x -> layer(...)`");
            } else {
                d = d.help("apply it to one tensor");
            }
            self.error(d);
            broken = true;
        }
        if let Some(&prev) = self.names.get(&name) {
            let prev_span = self.graph.node(prev).span;
            self.error(
                Diagnostic::error("E-duplicate-name", format!("the name `{name}` is used 2 times in the model"))
                    .at(span, "second layer with this name")
                    .also(prev_span, "first layer with this name")
                    .help("all layer names must be unique; rename one (an explicit name does not advance Keras's auto-name counter)"),
            );
            broken = true;
        } else {
            self.names.insert(name.clone(), id);
        }
        for (slot, (pname, pspan)) in pending {
            self.pending.push((id, slot, pname, pspan.unwrap_or(span)));
        }
        if matches!(op, Op::Input(_)) && !self.graph.inputs.contains(&id) {
            self.graph.inputs.push(id);
        }
        self.graph.nodes.push(Node {
            name,
            op,
            inputs,
            trainable,
            regularizers,
            span,
            included: cx.included,
            scope: self.scope_stack.last().copied(),
            shares: None,
        });
        self.broken.push(broken);
        Some(id)
    }

    fn call_block(
        &mut self,
        cx: &mut Context<'s>,
        block: &'s BlockDef,
        call: &'s Call,
        input: Option<Value>,
        depth: usize,
    ) -> Option<Value> {
        if let Some(at) = self
            .block_stack
            .iter()
            .position(|(span, _)| *span == block.name.span)
        {
            self.recursion(block, call, at);
            return None;
        }
        // A call copies the blocks and defaults it sees.
        if !self.charge(1 + cx.blocks.len() + cx.defaults.len(), call.span) {
            return None;
        }
        let mut args = self.eval_args(cx, &call.args)?;
        // A nested model's own arguments (`name`, `trainable`) are not the block's parameters.
        let nested_args = block.nested.map(|_| {
            (
                take_kwarg(&mut args, "name"),
                take_kwarg(&mut args, "trainable"),
            )
        });
        let mut inner = cx.for_block(input.clone());
        let mut positional = block.params.iter();
        let mut bound: Vec<&str> = Vec::new();
        for arg in args {
            let param = match &arg.name {
                Some(n) => block.params.iter().find(|p| &p.name == n),
                None => positional.next(),
            };
            match param {
                Some(p) if !bound.contains(&p.name.as_str()) => {
                    bound.push(&p.name);
                    inner.vars.insert(p.name.clone(), arg.value);
                }
                Some(p) => self.error(
                    Diagnostic::error(
                        "E-arg-duplicate",
                        format!(
                            "block `{}` parameter `{}` given twice",
                            block.name.name, p.name
                        ),
                    )
                    .at(arg.span, "second value"),
                ),
                None => {
                    let params: Vec<&str> = block.params.iter().map(|p| p.name.as_str()).collect();
                    self.error(
                        Diagnostic::error(
                            "E-arg-unknown",
                            match &arg.name {
                                Some(n) => {
                                    format!("block `{}` has no parameter `{n}`", block.name.name)
                                }
                                None => format!(
                                    "block `{}` takes {} argument(s)",
                                    block.name.name,
                                    params.len()
                                ),
                            },
                        )
                        .at(arg.name_span.unwrap_or(arg.span), "not a parameter")
                        .also(
                            block.name.span,
                            format!(
                                "`{}({})` is defined here",
                                block.name.name,
                                params.join(", ")
                            ),
                        ),
                    );
                }
            }
        }
        let missing: Vec<&Ident> = block
            .params
            .iter()
            .filter(|p| !bound.contains(&p.name.as_str()))
            .collect();
        if !missing.is_empty() {
            let names: Vec<&str> = missing.iter().map(|p| p.name.as_str()).collect();
            self.error(
                Diagnostic::error(
                    "E-arg-missing",
                    format!("block `{}` needs {}", block.name.name, names.join(", ")),
                )
                .at(call.span, "missing arguments")
                .also(block.name.span, "defined here"),
            );
            return None;
        }
        self.block_stack
            .push((block.name.span, block.name.name.clone()));
        let result = match (block.nested, nested_args) {
            (Some(class), Some((name, trainable))) => {
                let nested = NestedCall {
                    class,
                    label: &block.name.name,
                    span: call.span,
                    name,
                    trainable,
                    input,
                };
                self.call_nested(inner, &block.body, nested, depth)
            }
            _ => self.run_body(&mut inner, &block.body, depth + 1),
        };
        self.block_stack.pop();
        result
    }

    /// A block defined `as functional` / `as sequential`: its layers become a nested model,
    /// named like Keras names one (`model`, `sequential_1`, ...) unless the call names it.
    fn call_nested(
        &mut self,
        mut inner: Context<'s>,
        body: &'s [Stmt],
        nested: NestedCall<'_>,
        depth: usize,
    ) -> Option<Value> {
        let NestedCall {
            class,
            label,
            span,
            name,
            trainable,
            input,
        } = nested;
        let explicit = match name {
            Some(ArgValue {
                value: Value::Str(s),
                ..
            }) => Some(s),
            Some(other) => {
                self.error(
                    Diagnostic::error("E-arg-type", "`name` must be a string")
                        .at(other.span, "not a string"),
                );
                None
            }
            None => None,
        };
        match trainable {
            Some(ArgValue {
                value: Value::Bool(b),
                ..
            }) => inner.frozen |= !b,
            Some(other) => self.error(
                Diagnostic::error("E-arg-type", "`trainable` must be true or false")
                    .at(other.span, "not a boolean"),
            ),
            None => {}
        }
        // Keras names a Sequential when it is created (before its layers), a Functional
        // model after the layers it is built from.
        let early_name = match (&explicit, class) {
            (None, NestedClass::Sequential) => Some(self.session.auto_name(class.auto_name_base())),
            _ => None,
        };
        let id = ScopeId(self.graph.scopes.len() as u32);
        let inputs = self.tensors_of(input.as_ref());
        self.graph.scopes.push(Scope {
            name: String::new(),
            class,
            parent: self.scope_stack.last().copied(),
            inputs,
            input_names: Vec::new(),
            input_shapes: Vec::new(),
            outputs: Vec::new(),
            span,
            shares: None,
        });
        let bindings: Vec<Value> = match input {
            Some(Value::List(items)) => items.into_iter().rev().collect(),
            Some(v) => vec![v],
            None => Vec::new(),
        };
        inner.nested = Some((id, bindings));
        self.scope_stack.push(id);
        let last = self.run_body(&mut inner, body, depth + 1);
        self.scope_stack.pop();
        let name = explicit
            .or(early_name)
            .unwrap_or_else(|| self.session.auto_name(class.auto_name_base()));
        let taken =
            self.names.contains_key(&name) || self.graph.scopes.iter().any(|s| s.name == name);
        if taken {
            self.error(
                Diagnostic::error(
                    "E-duplicate-name",
                    format!("the name `{name}` is used 2 times in the model"),
                )
                .at(span, "a second layer or nested model with this name")
                .help(
                    "layer and nested model names must be unique; give this call another `name:`",
                ),
            );
        }
        let fallback = self.tensors_of(last.as_ref());
        let scope = &mut self.graph.scopes[id.index()];
        scope.name = name;
        if scope.outputs.is_empty() {
            scope.outputs = fallback;
        }
        let outputs = self.graph.scopes[id.index()].outputs.clone();
        match outputs.as_slice() {
            [] => {
                self.error(
                    Diagnostic::error(
                        "E-no-input",
                        format!("nested model `{label}` has no output"),
                    )
                    .at(span, "called here")
                    .help("end its body with a layer, or with `output a, b`"),
                );
                None
            }
            [one] => Some(Value::Tensor(*one)),
            many => Some(Value::List(
                many.iter().copied().map(Value::Tensor).collect(),
            )),
        }
    }

    /// `x -> shared(layer)`: calls an existing layer again (Keras's shared layers): same kind,
    /// arguments and weights, a new node named `layer[k]` for its call k.
    fn call_shared(
        &mut self,
        cx: &Context<'s>,
        args: Vec<ArgValue>,
        input: Option<Value>,
        call: &Call,
    ) -> Option<Value> {
        let usage = "`shared` takes one layer: `x -> shared(conv_a)` calls layer `conv_a` again";
        if let Some(scope) = self.shared_model(&args) {
            return self.call_shared_model(cx, scope, input, call);
        }
        let target = match args.as_slice() {
            [ArgValue {
                name: None,
                value: Value::Tensor(id),
                ..
            }] => Some(*id),
            [ArgValue {
                name: None,
                value: Value::Str(layer),
                ..
            }] => self.names.get(layer).copied(),
            _ => None,
        };
        let Some(target) = target else {
            let at = args.first().map_or(call.span, |a| a.span);
            self.error(
                Diagnostic::error("E-shared", usage)
                    .at(at, "not a layer defined before this call")
                    .help("name the layer (`name: \"conv_a\"`) and call it before sharing it"),
            );
            return None;
        };
        let owner = self.graph.layer_owner(target);
        let owner_node = self.graph.node(owner);
        let op = owner_node.op.clone();
        if matches!(op, Op::Input(_)) || owner_node.scope != self.scope_stack.last().copied() {
            let what = if matches!(op, Op::Input(_)) {
                "an input layer cannot be called"
            } else {
                "a layer can only be shared within the model (or nested model) that created it"
            };
            self.error(
                Diagnostic::error("E-shared", format!("`{}`: {what}", owner_node.name))
                    .at(call.span, "cannot share this layer"),
            );
            return None;
        }
        let calls = self.shared_calls.entry(owner).or_insert(1);
        *calls += 1;
        let calls = *calls - 1;
        let name = format!("{}[{calls}]", owner_node.name);
        let trainable = owner_node.trainable;
        let mut inputs = Vec::new();
        let mut pending = Vec::new();
        if let Some(v) = &input {
            flatten(v, &mut inputs, &mut pending);
        }
        let id = NodeId(self.graph.nodes.len() as u32);
        let (min, max) = op.arity();
        let n_inputs = inputs.len();
        let mut broken = self.broken[owner.index()];
        if n_inputs < min || n_inputs > max {
            self.error(
                Diagnostic::error(
                    "E-arity",
                    format!(
                        "shared layer `{}` gets {n_inputs} input(s) here",
                        self.graph.node(owner).name
                    ),
                )
                .at(call.span, "wrong number of inputs")
                .also(self.graph.node(owner).span, "its first call"),
            );
            broken = true;
        }
        for (slot, (pname, pspan)) in pending {
            self.pending
                .push((id, slot, pname, pspan.unwrap_or(call.span)));
        }
        self.graph.nodes.push(Node {
            name,
            op,
            inputs,
            trainable,
            // The weights' penalties count once, at the layer's first call; its output's count
            // at every call, as Keras adds an activity regularizer's loss per call.
            regularizers: Regularizers {
                weights: Vec::new(),
                activity: self.graph.node(owner).regularizers.activity,
            },
            span: call.span,
            included: cx.included,
            scope: self.scope_stack.last().copied(),
            shares: Some(owner),
        });
        self.broken.push(broken);
        Some(Value::Tensor(id))
    }

    /// The nested model `shared(...)` names, if it names one: by its name (`shared("encoder")`),
    /// or by the variable holding its output(s) (`shared(enc)`), called in this (nested) model.
    fn shared_model(&self, args: &[ArgValue]) -> Option<ScopeId> {
        let here = self.scope_stack.last().copied();
        let of_tensor = |id: NodeId| -> Option<ScopeId> {
            let mut s = self.graph.node(id).scope?;
            loop {
                let scope = &self.graph.scopes[s.index()];
                if scope.parent == here {
                    return scope.outputs.contains(&id).then_some(s);
                }
                s = scope.parent?;
            }
        };
        let scope = match args {
            [ArgValue {
                name: None,
                value: Value::Str(name),
                ..
            }] if !self.names.contains_key(name) => self
                .graph
                .scopes
                .iter()
                .position(|s| &s.name == name && s.shares.is_none())
                .map(|k| ScopeId(k as u32)),
            [ArgValue {
                name: None,
                value: Value::Tensor(id),
                ..
            }] => of_tensor(*id),
            [ArgValue {
                name: None,
                value: Value::List(items),
                ..
            }] => {
                let scopes: Option<Vec<ScopeId>> = items
                    .iter()
                    .map(|v| match v {
                        Value::Tensor(id) => of_tensor(*id),
                        _ => None,
                    })
                    .collect();
                match scopes?.as_slice() {
                    [first, rest @ ..] if rest.iter().all(|s| s == first) => Some(*first),
                    _ => None,
                }
            }
            _ => None,
        }?;
        Some(self.graph.scope_owner(scope))
    }

    /// `x -> shared(model)`: nested model `owner` called again (as siamese U-Nets call one
    /// encoder on two images). Its layers (and the models nested in it) are copied for this
    /// call; each copy shares its layer's weights, as a shared layer's later call does.
    fn call_shared_model(
        &mut self,
        cx: &Context<'s>,
        owner: ScopeId,
        input: Option<Value>,
        call: &Call,
    ) -> Option<Value> {
        let first = self.graph.scopes[owner.index()].clone();
        let tensors = self.tensors_of(input.as_ref());
        if tensors.len() != first.inputs.len() {
            self.error(
                Diagnostic::error(
                    "E-arity",
                    format!(
                        "nested model `{}` takes {} tensor(s); this call gives {}",
                        first.name,
                        first.inputs.len(),
                        tensors.len()
                    ),
                )
                .at(call.span, "wrong number of inputs")
                .also(first.span, "its first call"),
            );
            return None;
        }
        // The scopes to copy: `owner` and those nested in it (outermost first, as stored).
        let inside = |graph: &Graph, mut s: ScopeId| loop {
            if s == owner {
                return true;
            }
            match graph.scopes[s.index()].parent {
                Some(p) => s = p,
                None => return false,
            }
        };
        let copied: Vec<ScopeId> = (0..self.graph.scopes.len() as u32)
            .map(ScopeId)
            .filter(|&s| inside(&self.graph, s))
            .collect();
        let nodes: Vec<NodeId> = self
            .graph
            .ids()
            .filter(|&id| {
                self.graph
                    .node(id)
                    .scope
                    .is_some_and(|s| inside(&self.graph, s))
            })
            .collect();
        if self
            .pending
            .iter()
            .any(|(id, ..)| nodes.binary_search(id).is_ok())
        {
            self.error(
                Diagnostic::error(
                    "E-shared",
                    format!(
                        "nested model `{}` refers to a layer by a name defined after it, so it \
                         cannot be called again",
                        first.name
                    ),
                )
                .at(call.span, "called again here")
                .also(first.span, "its first call")
                .help("define the layers a nested model takes before the model"),
            );
            return None;
        }
        let mut node_map: HashMap<NodeId, NodeId> = first
            .inputs
            .iter()
            .copied()
            .zip(tensors.iter().copied())
            .collect();
        let mut scope_map: HashMap<ScopeId, ScopeId> = HashMap::new();
        for &s in &copied {
            let old = self.graph.scopes[s.index()].clone();
            let new = ScopeId(self.graph.scopes.len() as u32);
            scope_map.insert(s, new);
            self.graph.scopes.push(Scope {
                parent: if s == owner {
                    self.scope_stack.last().copied()
                } else {
                    old.parent.and_then(|p| scope_map.get(&p).copied())
                },
                // Filled in below, once the layers are copied.
                inputs: Vec::new(),
                outputs: Vec::new(),
                span: call.span,
                shares: Some(self.graph.scope_owner(s)),
                ..old
            });
        }
        for &id in &nodes {
            let old = self.graph.node(id).clone();
            let layer = self.graph.layer_owner(id);
            let calls = self.shared_calls.entry(layer).or_insert(1);
            *calls += 1;
            let name = format!("{}[{}]", self.graph.node(layer).name, *calls - 1);
            let new = NodeId(self.graph.nodes.len() as u32);
            node_map.insert(id, new);
            let inputs = old
                .inputs
                .iter()
                .map(|i| node_map.get(i).copied().unwrap_or(*i))
                .collect();
            self.graph.nodes.push(Node {
                name,
                inputs,
                span: call.span,
                included: cx.included,
                scope: old.scope.and_then(|s| scope_map.get(&s).copied()),
                shares: Some(layer),
                ..old
            });
            self.broken.push(self.broken[id.index()]);
        }
        let remap = |ids: &[NodeId]| -> Vec<NodeId> {
            ids.iter()
                .map(|i| node_map.get(i).copied().unwrap_or(*i))
                .collect()
        };
        for (&s, &new) in &scope_map {
            let (inputs, outputs) = {
                let old = &self.graph.scopes[s.index()];
                (remap(&old.inputs), remap(&old.outputs))
            };
            let scope = &mut self.graph.scopes[new.index()];
            scope.inputs = inputs;
            scope.outputs = outputs;
        }
        let outputs = self.graph.scopes[scope_map[&owner].index()].outputs.clone();
        match outputs.as_slice() {
            [one] => Some(Value::Tensor(*one)),
            many => Some(Value::List(
                many.iter().copied().map(Value::Tensor).collect(),
            )),
        }
    }

    /// An `input` layer of a nested model: it stands for the next tensor the model is called
    /// on, creates no node, and takes its name (Keras's `input_N` counts it).
    fn nested_input(
        &mut self,
        scope: ScopeId,
        bindings: &mut Vec<Value>,
        mut args: Vec<ArgValue>,
        call: &Call,
    ) -> Option<Value> {
        let name = match take_kwarg(&mut args, "name") {
            Some(ArgValue {
                value: Value::Str(s),
                ..
            }) => s,
            _ => self.session.auto_name("input"),
        };
        let reader = ArgReader::new("input", call.span, args, Op::positional("input"));
        let (op, arg_diags) = parse_call("input", reader);
        self.diags.extend(arg_diags);
        let scope_entry = &mut self.graph.scopes[scope.index()];
        scope_entry.input_names.push(name);
        if let Some(Op::Input(input)) = op {
            scope_entry.input_shapes.push((input.shape, call.span));
        }
        let binding = bindings.pop();
        if binding.is_none() {
            self.error(
                Diagnostic::error(
                    "E-arity",
                    "this nested model has more `input` layers than tensors it is called on",
                )
                .at(call.span, "no tensor for this input")
                .help("call it on a list with one tensor per input: `[a, b] -> model()`"),
            );
        }
        binding
    }

    /// `block` is called while `self.block_stack[at..]` runs: it would call itself for ever.
    fn recursion(&mut self, block: &BlockDef, call: &Call, at: usize) {
        let name = &block.name.name;
        let mut cycle: Vec<&str> = self.block_stack[at..]
            .iter()
            .map(|(_, n)| n.as_str())
            .collect();
        cycle.push(name);
        let message = if cycle.len() == 2 {
            format!("block `{name}` calls itself")
        } else {
            format!("block `{name}` calls itself through {}", cycle.join(" -> "))
        };
        self.halt(
            Diagnostic::error("E-recursion", message)
                .at(call.callee.span, format!("`{name}` called again here"))
                .also(block.name.span, "inside the body of this block")
                .help(
                    "a block cannot call itself, directly or through other blocks: repeat with \
                     a `for` loop instead. If a closing `}` is misplaced, the call belongs after \
                     the block's end",
                ),
        );
    }

    fn include(
        &mut self,
        cx: &mut Context<'s>,
        path: &'s Expr,
        args: &'s [Arg],
        span: Span,
        depth: usize,
    ) {
        let Some(Value::Str(rel)) = self.eval(cx, path) else {
            self.error(
                Diagnostic::error("E-include", "`include` takes a file path string")
                    .at(path.span, "not a path"),
            );
            return;
        };
        let Some(args) = self.eval_args(cx, args) else {
            return;
        };
        let mut trainable = None;
        let mut binding = None;
        let mut nested = None;
        let mut nested_name = None;
        for arg in args {
            match (arg.name.as_deref(), arg.value) {
                (Some("trainable"), Value::Bool(b)) => trainable = Some(b),
                (Some("input"), v @ (Value::Tensor(_) | Value::Pending(_) | Value::List(_))) => {
                    binding = Some(v)
                }
                (Some("nested"), Value::Str(class)) if NestedClass::from_spec_name(&class).is_some() => {
                    nested = NestedClass::from_spec_name(&class)
                }
                (Some("name"), value @ Value::Str(_)) => {
                    nested_name = Some(ArgValue {
                        name: Some("name".into()),
                        value,
                        span: arg.span,
                        name_span: arg.name_span,
                    })
                }
                (name, value) => self.error(
                    Diagnostic::error(
                        "E-arg-unknown",
                        format!("`include` takes `trainable: true|false`, `input: <tensor>`, `nested: functional|sequential` and `name: \"...\"` (with `nested`), not `{}: {value}`", name.unwrap_or("_")),
                    )
                    .at(arg.name_span.unwrap_or(arg.span), "not understood"),
                ),
            }
        }
        // Reading and parsing a file: far more than a loop iteration.
        if !self.charge(100, span) {
            return;
        }
        let including = self.sources.path(span.file).to_path_buf();
        let file_path = including.parent().unwrap_or(Path::new(".")).join(&rel);
        let canonical = file_path.canonicalize().unwrap_or(file_path.clone());
        if self.include_stack.contains(&canonical) {
            self.error(
                Diagnostic::error(
                    "E-include-cycle",
                    format!(
                        "`{rel}` includes itself (through {} file(s))",
                        self.include_stack.len()
                    ),
                )
                .at(path.span, "include cycle"),
            );
            return;
        }
        if depth >= MAX_CALL_DEPTH {
            self.error(
                Diagnostic::error(
                    "E-include-cycle",
                    format!("includes and block calls nested more than {MAX_CALL_DEPTH} deep"),
                )
                .at(path.span, "too deep"),
            );
            return;
        }
        let text = match read_spec_file(&file_path) {
            Ok(t) => t,
            Err(e) => {
                self.error(
                    Diagnostic::error(
                        "E-include",
                        format!("cannot read included spec `{}`: {e}", file_path.display()),
                    )
                    .at(path.span, "missing include")
                    .help("include paths are relative to the including file"),
                );
                return;
            }
        };
        if !self.charge(text.len() / 64, span) {
            return;
        }
        let file = self.sources.add(&file_path, text);
        let text = self.sources.text(file).to_string();
        let spec = match front::parse(Format::of_path(&file_path), file, &text) {
            Ok(spec) => spec,
            Err(diags) => {
                self.diags.extend(diags);
                self.error(
                    Diagnostic::error("E-include", format!("included spec `{rel}` has errors"))
                        .at(path.span, "included here"),
                );
                return;
            }
        };
        self.include_stack.push(canonical);
        let frozen = trainable.or(if cx.frozen { Some(false) } else { None });
        if let Some(class) = nested {
            // The included model as one layer: its input layers stand for `input:` (or the
            // current tensor), and it keeps the name its spec gives it unless `name:` is given.
            let mut inner = Context::new(&spec.model, None, true, frozen);
            self.collect_defaults(&mut inner, &spec.model);
            let name = nested_name.or_else(|| {
                spec.model.name.as_ref().map(|n| ArgValue {
                    name: Some("name".into()),
                    value: Value::Str(n.name.clone()),
                    span: n.span,
                    name_span: None,
                })
            });
            let call = NestedCall {
                class,
                label: &rel,
                span,
                name,
                trainable: None,
                input: binding.or_else(|| cx.current.clone()),
            };
            let result = self.call_nested(inner, &spec.model.body, call, depth + 1);
            self.include_stack.pop();
            if let Some(v) = result {
                cx.current = Some(v);
            }
            return;
        }
        if let Some(list @ Value::List(_)) = &binding {
            self.error(
                Diagnostic::error(
                    "E-arg-type",
                    format!("`input: {list}`: a spec included flat takes one tensor"),
                )
                .at(span, "several tensors")
                .help("include it `nested: functional` to call it on several tensors"),
            );
            self.include_stack.pop();
            return;
        }
        if let Some(name) = nested_name {
            self.error(
                Diagnostic::error(
                    "E-arg-unknown",
                    "`name` names an included nested model: add `nested: functional`",
                )
                .at(name.span, "only with `nested:`"),
            );
        }
        let mut inner = Context::new(&spec.model, binding, true, frozen);
        self.collect_defaults(&mut inner, &spec.model);
        let last = self.run_body(&mut inner, &spec.model.body, depth + 1);
        self.include_stack.pop();
        if let Some(v) = last {
            cx.current = Some(v);
        }
    }

    /// The spec's `train(...)`: keyword arguments that `unetc train` reads.
    fn collect_train(&mut self, cx: &mut Context<'s>, call: &'s crate::ast::Call) {
        let Some(args) = self.eval_args(cx, &call.args) else {
            return;
        };
        let known = crate::ir::TRAIN_SETTINGS;
        let mut kept = Vec::new();
        for a in args {
            match a.name.as_deref() {
                Some(n) if known.contains(&n) => kept.push(a),
                Some(n) => self.error(crate::ir::value::unknown_argument(
                    "train",
                    n,
                    a.name_span.unwrap_or(a.span),
                    known,
                )),
                None => self.error(
                    Diagnostic::error("E-train", "`train` takes keyword arguments only")
                        .at(a.span, "positional argument")
                        .help("name it: train(optimizer: adam, learning_rate: 0.0001, loss: binary_crossentropy)"),
                ),
            }
        }
        self.graph.train = Some(crate::ir::TrainSection {
            args: kept,
            span: call.span,
        });
    }

    fn collect_defaults(&mut self, cx: &mut Context<'s>, model: &'s Model) {
        for d in &model.defaults {
            let Some(args) = self.eval_args(cx, &d.args) else {
                continue;
            };
            let kind = d.kind.name.as_str();
            if !KINDS.contains(&kind) {
                self.error(
                    Diagnostic::error(
                        "E-unknown-kind",
                        format!("`defaults` for unknown layer kind `{kind}`"),
                    )
                    .at(d.kind.span, "unknown kind"),
                );
                continue;
            }
            let known = Op::known_args(kind);
            let mut faulty = false;
            for a in &args {
                match a.name.as_deref() {
                    Some(n) if known.contains(&n) || is_layer_kwarg(kind, n) => {}
                    Some(n) => {
                        faulty = true;
                        self.error(crate::ir::value::unknown_argument(
                            kind,
                            n,
                            a.name_span.unwrap_or(a.span),
                            known,
                        ));
                    }
                    None => self.error(
                        Diagnostic::error("E-defaults", "defaults take keyword arguments only")
                            .at(a.span, "positional argument")
                            .help(format!(
                                "write it as `name: value`, e.g. `{kind}({}: ...)`",
                                Op::positional(kind).first().unwrap_or(&"arg")
                            )),
                    ),
                }
            }
            if faulty {
                self.faulty_defaults.push(canonical_kind(kind).to_string());
            }
            // An unknown argument is reported here, once, not again by every layer of the kind.
            cx.defaults
                .entry(canonical_kind(kind).to_string())
                .or_default()
                .extend(args.into_iter().filter(|a| {
                    a.name
                        .as_deref()
                        .is_some_and(|n| known.contains(&n) || is_layer_kwarg(kind, n))
                }));
        }
    }

    /// After a halt: the placeholders of names not resolved are taken out (unreported: they
    /// would only be follow-on errors), so that no later stage meets one.
    fn drop_pending(&mut self) {
        let mut slots: Vec<(NodeId, usize)> = std::mem::take(&mut self.pending)
            .into_iter()
            .map(|(node, slot, _, _)| (node, slot))
            .collect();
        slots.sort_by(|a, b| b.cmp(a));
        slots.dedup();
        for (node, slot) in slots {
            let inputs = &mut self.graph.nodes[node.index()].inputs;
            if slot < inputs.len() {
                inputs.remove(slot);
            }
            self.broken[node.index()] = true;
        }
    }

    fn resolve_pending(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        let mut unresolved: Vec<(NodeId, usize)> = Vec::new();
        for (node, slot, name, span) in pending {
            match self.names.get(&name) {
                Some(&id) => self.graph.nodes[node.index()].inputs[slot] = id,
                None => {
                    let mut d = Diagnostic::error(
                        "E-unknown-name",
                        format!("no layer or variable named `{name}`"),
                    )
                    .at(span, "unknown name");
                    if let Some(s) =
                        crate::suggest::closest(&name, self.names.keys().map(String::as_str))
                    {
                        d = d.help(format!("did you mean `{s}`?"));
                    }
                    self.error(d);
                    unresolved.push((node, slot));
                    self.broken[node.index()] = true;
                }
            }
        }
        // Unresolved inputs point at the node itself; drop them so the graph stays well-formed.
        unresolved.sort_by(|a, b| b.cmp(a));
        for (node, slot) in unresolved {
            self.graph.nodes[node.index()].inputs.remove(slot);
        }
    }

    fn check_inputs(&mut self, spec: &Spec) {
        if self.graph.inputs.is_empty() && !self.graph.nodes.is_empty() {
            self.error(
                Diagnostic::error("E-no-input", "the model has no input layer")
                    .at(spec.model.span, "no `input` in this model")
                    .help("start the model with `input 572x572x1` (YAML: `input: [572, 572, 1]`)"),
            );
        }
    }

    fn warn_unused(&mut self) {
        let keep = self.graph.reaches_output();
        for id in self.graph.ids() {
            let node = self.graph.node(id);
            if !keep[id.index()] && !node.included && !self.broken[id.index()] {
                let d = Diagnostic::warning(
                    "W-unused",
                    format!("layer `{}` does not lead to the model's output", node.name),
                )
                .at(node.span, "unused; Keras leaves it out of the model")
                .help("use its result, or remove it");
                self.diags.push(d);
            }
        }
    }

    /// A layer's input must be tensors: a value variable there (`n = 16; n -> conv2d(8)`) is an
    /// `E-type` at the entry that holds it.
    fn source_is_tensor(&mut self, source: &Source, value: &Value) -> bool {
        match (source, value) {
            (Source::List(chains, _), Value::List(items)) if chains.len() == items.len() => chains
                .iter()
                .zip(items)
                .all(|(c, v)| self.expect_tensor(v, c.span, "a layer's input")),
            _ => self.expect_tensor(value, source_span(source), "a layer's input"),
        }
    }

    /// False, with an `E-type` at `span`, when `value` is not a tensor (or a list of them).
    fn expect_tensor(&mut self, value: &Value, span: Span, role: &str) -> bool {
        if is_tensor_like(value) {
            return true;
        }
        let text = self.sources.text(span.file);
        let written = text
            .get(span.start as usize..span.end as usize)
            .unwrap_or("this");
        let mut shown = value.to_string();
        if shown.chars().count() > 40 {
            shown = shown.chars().take(40).collect::<String>() + "...";
        }
        self.error(
            Diagnostic::error(
                "E-type",
                format!(
                    "`{written}` is a value ({}: {shown}), not a tensor; {role} must be a tensor",
                    value.type_name()
                ),
            )
            .at(span, "a value, not a tensor")
            .help(
                "values go into a layer's arguments (`conv2d(n)`); tensors come from layers \
                 (`x = conv2d(8)`) or are lists of them (`skips = skips + [x]`)",
            ),
        );
        false
    }

    /// Evaluates an `if` condition: it must be true or false, and every bare word in it must be
    /// a variable (a misspelt one would otherwise be a string, and the test quietly false).
    fn condition(&mut self, cx: &Context<'s>, cond: &Expr) -> Option<bool> {
        if self.unknown_names_in_condition(cx, cond) > 0 {
            return None;
        }
        match self.eval(cx, cond)? {
            Value::Bool(b) => Some(b),
            other => {
                self.error(
                    Diagnostic::error(
                        "E-type",
                        format!(
                            "an `if` condition must be true or false, found {} (`{other}`)",
                            other.type_name()
                        ),
                    )
                    .at(cond.span, "not a boolean")
                    .help("compare it: `if level == depth - 1 { ... }`"),
                );
                None
            }
        }
    }

    /// Reports each bare word of a condition that names no variable (with the closest
    /// variable); how many there were.
    fn unknown_names_in_condition(&mut self, cx: &Context<'s>, e: &Expr) -> usize {
        match &e.kind {
            ExprKind::Name(name) => {
                if cx.vars.contains_key(name) {
                    return 0;
                }
                let prefix = format!("{name}[");
                let mut d = if cx.vars.keys().any(|k| k.starts_with(&prefix)) {
                    Diagnostic::error(
                        "E-type",
                        format!(
                            "`{name}` is an indexed variable; a condition needs one of its slots"
                        ),
                    )
                    .at(e.span, "no index")
                    .help(format!("for example `{name}[0]`"))
                } else {
                    Diagnostic::error(
                        "E-unknown-name",
                        format!("no variable named `{name}` in this condition"),
                    )
                    .at(e.span, "unknown variable")
                };
                let variables = cx
                    .vars
                    .keys()
                    .filter(|k| !k.contains('['))
                    .map(String::as_str);
                d = match crate::suggest::closest(name, variables) {
                    Some(s) => d.help(format!("did you mean `{s}`?")),
                    None => d.help(format!(
                        "a bare word in a condition must be a variable; a string is quoted: \"{name}\""
                    )),
                };
                self.error(d);
                1
            }
            // The base of `skip[f]` may be a slot variable; evaluation reports unset slots.
            ExprKind::Index(base, index) => {
                let in_base = match base.kind {
                    ExprKind::Name(_) => 0,
                    _ => self.unknown_names_in_condition(cx, base),
                };
                in_base + self.unknown_names_in_condition(cx, index)
            }
            ExprKind::Binary(_, l, r)
            | ExprKind::Range {
                start: l, end: r, ..
            } => self.unknown_names_in_condition(cx, l) + self.unknown_names_in_condition(cx, r),
            ExprKind::Neg(x) | ExprKind::Not(x) => self.unknown_names_in_condition(cx, x),
            ExprKind::List(items) | ExprKind::Tuple(items) => items
                .iter()
                .map(|i| self.unknown_names_in_condition(cx, i))
                .sum(),
            ExprKind::Map(entries) => entries
                .iter()
                .map(|(_, v)| self.unknown_names_in_condition(cx, v))
                .sum(),
            ExprKind::Str(parts) => parts
                .iter()
                .map(|p| match p {
                    StrPart::Expr(x) => self.unknown_names_in_condition(cx, x),
                    StrPart::Lit(_) => 0,
                })
                .sum(),
            ExprKind::Int(_) | ExprKind::Float(_) | ExprKind::Bool(_) | ExprKind::None => 0,
        }
    }

    /// `cropping2d(to: t)`: replaces `to` by the `cropping` that brings the input down to `t`'s
    /// height and width, centred with the odd pixel at the bottom/right (the template's
    /// `crop: auto`). The layer is then an ordinary Cropping2D. `cropping3d(to: t)` likewise
    /// over depth, height and width.
    fn crop_to(
        &mut self,
        kind: &str,
        mut args: Vec<ArgValue>,
        input: Option<&Value>,
        call: &Call,
    ) -> (Vec<ArgValue>, bool) {
        let Some(to) = take_kwarg(&mut args, "to") else {
            return (args, false);
        };
        let to_span = to.name_span.unwrap_or(to.span);
        if let Some(given) = args
            .iter()
            .find(|a| a.name.is_none() || a.name.as_deref() == Some("cropping"))
        {
            self.error(
                Diagnostic::error(
                    "E-arg-duplicate",
                    format!("`{kind}` takes `cropping` or `to`, not both"),
                )
                .at(given.span, "cropping given")
                .also(to_span, "and computed from `to`"),
            );
            return (args, true);
        }
        let target = match to.value {
            Value::Tensor(id) => id,
            Value::Str(name) | Value::Pending(name) => match self.names.get(&name) {
                Some(&id) => id,
                None => {
                    self.error(
                        Diagnostic::error(
                            "E-crop",
                            format!("`to: {name}` names no layer made before this crop"),
                        )
                        .at(to.span, "unknown tensor")
                        .help("`to` takes a tensor whose size is known here: a variable or an earlier layer's name"),
                    );
                    return (args, true);
                }
            },
            other => {
                self.error(
                    Diagnostic::error(
                        "E-type",
                        format!(
                            "`to` takes the tensor to crop to, found {} (`{other}`)",
                            other.type_name()
                        ),
                    )
                    .at(to.span, "not a tensor")
                    .help(format!("for example `skip -> {kind}(to: up)`")),
                );
                return (args, true);
            }
        };
        // Without one input tensor the layer's arity error says what is wrong.
        let Some(Value::Tensor(source)) = input else {
            return (args, false);
        };
        let source = *source;
        let (Some(have), Some(want)) = (self.shape_of(source), self.shape_of(target)) else {
            self.error(
                Diagnostic::error(
                    "E-crop",
                    "cannot compute the crop: the size of the input or of `to` is unknown",
                )
                .at(call.span, "size unknown")
                .help("fix the errors above this layer first"),
            );
            return (args, true);
        };
        let (rank, what) = if kind == "cropping3d" {
            (4, "volumes (depth, height, width, channels)")
        } else {
            (3, "images (height, width, channels)")
        };
        if have.len() != rank || want.len() != rank {
            self.error(
                Diagnostic::error(
                    "E-rank",
                    format!(
                        "`{kind}(to: ...)` crops {what}: the input is {} and `to` is {}",
                        crate::text::shape_text(&have),
                        crate::text::shape_text(&want)
                    ),
                )
                .at(
                    call.span,
                    if rank == 4 {
                        "not volumes"
                    } else {
                        "not images"
                    },
                ),
            );
            return (args, true);
        }
        let spatial = rank - 1;
        let (have, want) = (&have[..spatial], &want[..spatial]);
        if have.iter().zip(want).any(|(h, w)| w > h) {
            let dims = |v: &[i64]| v.iter().map(i64::to_string).collect::<Vec<_>>().join("x");
            self.error(
                Diagnostic::error(
                    "E-crop",
                    format!(
                        "cannot crop {} to {}: `to` is larger than the input",
                        dims(have),
                        dims(want)
                    ),
                )
                .at(to.span, "larger than the input")
                .help(format!(
                    "crop the larger tensor to the smaller one: `big -> {kind}(to: small)`"
                )),
            );
            return (args, true);
        }
        args.push(ArgValue {
            name: Some("cropping".into()),
            value: template::crop_arg(have, want),
            span: to.span,
            name_span: to.name_span,
        });
        (args, false)
    }

    /// The output shape of a node created so far, if it can be computed.
    fn shape_of(&mut self, id: NodeId) -> Option<Shape> {
        self.shape_dependent = true;
        while self.shapes.len() < self.graph.nodes.len() {
            let i = self.shapes.len();
            let node = &self.graph.nodes[i];
            if self.broken[i] {
                self.shapes.push(Some(None));
                continue;
            }
            let inputs: Option<Vec<Shape>> = node
                .inputs
                .iter()
                .map(|&p| {
                    if p.index() < i {
                        self.shapes[p.index()].clone().flatten()
                    } else {
                        None
                    }
                })
                .collect();
            let shape = inputs.and_then(|ins| node.op.infer(&ins).ok());
            self.shapes.push(Some(shape));
        }
        self.shapes.get(id.index()).cloned().flatten().flatten()
    }
}

fn flatten(
    v: &Value,
    inputs: &mut Vec<NodeId>,
    pending: &mut Vec<(usize, (String, Option<Span>))>,
) {
    match v {
        Value::Tensor(id) => inputs.push(*id),
        Value::Pending(name) => {
            pending.push((inputs.len(), (name.clone(), None)));
            // Placeholder; replaced (or removed) by resolve_pending.
            inputs.push(NodeId(u32::MAX));
        }
        Value::List(items) => items.iter().for_each(|i| flatten(i, inputs, pending)),
        _ => {}
    }
}

/// Whether a value can feed a layer: a tensor, a layer not defined yet, or a non-empty list of
/// them.
fn is_tensor_like(v: &Value) -> bool {
    match v {
        Value::Tensor(_) | Value::Pending(_) => true,
        Value::List(items) => !items.is_empty() && items.iter().all(is_tensor_like),
        Value::Int(_)
        | Value::Float(_)
        | Value::Bool(_)
        | Value::Str(_)
        | Value::None
        | Value::Map(_) => false,
    }
}

fn source_span(source: &Source) -> Span {
    match source {
        Source::Ref(e) => e.span,
        Source::List(_, span) => *span,
    }
}

/// The variable name of one slot: `skip[64]`, `x[1, 2]` (two indices are a list).
pub(super) fn slot_key(name: &str, index: &Value) -> String {
    match index {
        Value::List(items) if items.len() >= 2 => {
            let parts: Vec<String> = items.iter().map(Value::to_string).collect();
            format!("{name}[{}]", parts.join(", "))
        }
        other => format!("{name}[{other}]"),
    }
}

/// An argument every layer of `kind` takes besides its kind's own: `trainable` and the
/// regularizers.
fn is_layer_kwarg(kind: &str, name: &str) -> bool {
    name == "trainable"
        || crate::ir::regularizer::arguments(Op::regularized(kind)).any(|a| a == name)
}

fn take_kwarg(args: &mut Vec<ArgValue>, name: &str) -> Option<ArgValue> {
    let i = args.iter().position(|a| a.name.as_deref() == Some(name))?;
    Some(args.remove(i))
}

/// Aliases share their canonical kind's defaults.
fn canonical_kind(kind: &str) -> &str {
    match kind {
        "max_pool2d" => "max_pooling2d",
        "upsampling2d" => "up_sampling2d",
        "max_pool3d" => "max_pooling3d",
        "avg_pool3d" => "average_pooling3d",
        "upsampling3d" => "up_sampling3d",
        "relu_layer" => "re_lu",
        "input_layer" => "input",
        k => k,
    }
}

/// Reads an included spec: a regular file of at most [`MAX_INCLUDE_BYTES`] UTF-8 bytes (not a
/// device or pipe, which could be endless).
fn read_spec_file(path: &Path) -> std::io::Result<String> {
    use std::io::{Error, ErrorKind, Read};
    let file = std::fs::File::open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(Error::new(ErrorKind::InvalidInput, "not a regular file"));
    }
    if meta.len() > MAX_INCLUDE_BYTES {
        return Err(Error::new(
            ErrorKind::InvalidData,
            format!(
                "{} bytes, more than the {MAX_INCLUDE_BYTES} bytes unetc reads as a spec",
                meta.len()
            ),
        ));
    }
    let mut text = String::new();
    file.take(MAX_INCLUDE_BYTES).read_to_string(&mut text)?;
    Ok(text)
}

/// How much work copying a value is, for [`Expander::charge`]: one unit per value, plus one per
/// 16 bytes of string.
pub(super) fn value_weight(v: &Value) -> usize {
    match v {
        Value::Str(s) | Value::Pending(s) => 1 + s.len() / 16,
        Value::List(items) => 1 + items.iter().map(value_weight).sum::<usize>(),
        Value::Map(entries) => {
            1 + entries
                .iter()
                .map(|(k, v)| 1 + k.len() / 16 + value_weight(v))
                .sum::<usize>()
        }
        _ => 1,
    }
}

/// How deeply lists and mappings nest in a value.
pub(super) fn value_depth(v: &Value) -> usize {
    match v {
        Value::List(items) => 1 + items.iter().map(value_depth).max().unwrap_or(0),
        Value::Map(entries) => {
            1 + entries
                .iter()
                .map(|(_, v)| value_depth(v))
                .max()
                .unwrap_or(0)
        }
        _ => 0,
    }
}
