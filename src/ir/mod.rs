//! The layer graph: what the spec means once blocks, loops, includes, defaults and
//! templates are expanded. Nodes are Keras layers in creation order; edges are by index.

pub mod ops;
pub mod regularizer;
pub mod value;

use crate::diag::Span;
pub use ops::{Op, Shape, ShapeError, WeightSpec};

/// Index of a node in [`Graph::nodes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u32);

impl NodeId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// One Keras layer, applied once.
#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    pub op: Op,
    pub inputs: Vec<NodeId>,
    pub trainable: bool,
    /// Penalties training adds to the loss (`kernel_regularizer`, ...); none at inference.
    pub regularizers: regularizer::Regularizers,
    /// Where the layer was called.
    pub span: Span,
    /// True for layers created by an `include` (they are not reported as unused).
    pub included: bool,
    /// The innermost nested model the layer belongs to (`None`: the model itself).
    pub scope: Option<ScopeId>,
    /// A further call of a shared layer: the node of its first call, which owns the layer's
    /// name and weights (this node is named `layer[k]`, Keras's notation for call k).
    pub shares: Option<NodeId>,
}

/// Index of a nested model in [`Graph::scopes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ScopeId(pub u32);

impl ScopeId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// The Keras class of a model used as a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NestedClass {
    Functional,
    Sequential,
}

impl NestedClass {
    pub fn class_name(self) -> &'static str {
        match self {
            NestedClass::Functional => "Functional",
            NestedClass::Sequential => "Sequential",
        }
    }

    /// The spelling in specs (`block up(f) as sequential { .. }`).
    pub fn spec_name(self) -> &'static str {
        match self {
            NestedClass::Functional => "functional",
            NestedClass::Sequential => "sequential",
        }
    }

    pub fn from_spec_name(name: &str) -> Option<NestedClass> {
        match name {
            "functional" => Some(NestedClass::Functional),
            "sequential" => Some(NestedClass::Sequential),
            _ => None,
        }
    }

    /// Keras's auto-name base for an unnamed model of this class.
    pub fn auto_name_base(self) -> &'static str {
        match self {
            NestedClass::Functional => "model",
            NestedClass::Sequential => "sequential",
        }
    }
}

/// A model used as a layer of another (Keras prints it as one row). Its layers stay in the
/// flat node list, marked with [`Node::scope`]; executors run the flat graph.
#[derive(Debug, Clone)]
pub struct Scope {
    pub name: String,
    pub class: NestedClass,
    /// The enclosing nested model, if this one is nested in another.
    pub parent: Option<ScopeId>,
    /// The tensors the nested model is called on (its input layers stand for them).
    pub inputs: Vec<NodeId>,
    /// The names of its own input layers (they create no node: the call's tensors replace them).
    pub input_names: Vec<String>,
    /// The shapes its input layers declare (checked against the tensors it is called on), and
    /// where each is declared.
    pub input_shapes: Vec<(Vec<i64>, Span)>,
    /// Its outputs, in order (`model[0][k]` is `outputs[k]`).
    pub outputs: Vec<NodeId>,
    pub span: Span,
    /// A further call of a nested model (`x -> shared(model)`): the scope of its first call,
    /// which owns the name and weights. Its layers are copies whose nodes share the first
    /// call's layers (Keras prints one row; this call's outputs are `model[k][i]`).
    pub shares: Option<ScopeId>,
}

/// The spec's `train(...)` settings, evaluated: keyword arguments named in [`TRAIN_SETTINGS`].
#[derive(Debug, Clone)]
pub struct TrainSection {
    pub args: Vec<value::ArgValue>,
    pub span: Span,
}

/// What a spec's `train(...)` may set (Keras's compile and fit arguments `unetc train` takes).
pub const TRAIN_SETTINGS: &[&str] = &[
    "optimizer",
    "learning_rate",
    "beta_1",
    "beta_2",
    "epsilon",
    "momentum",
    "nesterov",
    "rho",
    "weight_decay",
    "loss",
    "from_logits",
    "batch_size",
    "epochs",
];

/// A model: nodes in creation order (inputs of a node may come later only in graph form,
/// where the order is fixed up by [`Graph::topological_order`]).
#[derive(Debug, Clone, Default)]
pub struct Graph {
    pub name: String,
    pub nodes: Vec<Node>,
    pub inputs: Vec<NodeId>,
    pub outputs: Vec<NodeId>,
    /// Nested models, outermost before the models nested in them.
    pub scopes: Vec<Scope>,
    /// The main spec's `train(...)` settings, if it has them.
    pub train: Option<TrainSection>,
}

impl Graph {
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.index()]
    }

    /// Makes the layer `name` the only output: a layer of the model itself, or one inside a
    /// nested model named by its path (`model/block_6_expand_relu`; in a nested model's second
    /// call `model/block_6_expand_relu[1]`, the names `check --format json` lists).
    pub fn select_output(&mut self, name: &str) -> Result<(), crate::diag::Diagnostic> {
        let top = self
            .ids()
            .find(|&id| self.node(id).scope.is_none() && self.node(id).name == name);
        let found = match top {
            Some(id) => Ok(id),
            None if name.contains('/') => self.nested_layer(name),
            None => Err(String::new()),
        };
        match found {
            Ok(id) => {
                self.outputs = vec![id];
                Ok(())
            }
            Err(why) => {
                let outputs: Vec<&str> = self
                    .outputs
                    .iter()
                    .map(|&id| self.node(id).name.as_str())
                    .collect();
                let message = if why.is_empty() {
                    format!("--output-layer `{name}`: the model has no layer of that name")
                } else {
                    format!("--output-layer `{name}`: {why}")
                };
                Err(
                    crate::diag::Diagnostic::error("E-output-layer", message).help(format!(
                        "name a layer of the model (`unetc check` lists them), or one inside a \
                     nested model by its path (`{}/LAYER`; `unetc check --format json` lists \
                     them with `nested_in`); the outputs are {}",
                        self.scopes.first().map_or("model", |s| s.name.as_str()),
                        outputs.join(", ")
                    )),
                )
            }
        }
    }

    /// The layer at `path` (`outer/inner/layer`): nested models' names from the outermost,
    /// then the layer's.
    fn nested_layer(&self, path: &str) -> Result<NodeId, String> {
        let segments: Vec<&str> = path.split('/').collect();
        let (layer, models) = segments
            .split_last()
            .expect("split yields one item at least");
        let scope_path = |mut scope: Option<ScopeId>| {
            let mut names = Vec::new();
            while let Some(s) = scope {
                names.push(self.scopes[s.index()].name.as_str());
                scope = self.scopes[s.index()].parent;
            }
            names.reverse();
            names
        };
        let matches: Vec<NodeId> = self
            .ids()
            .filter(|&id| {
                let node = self.node(id);
                node.name == *layer && node.scope.is_some() && scope_path(node.scope) == models
            })
            .collect();
        match matches[..] {
            [id] => Ok(id),
            [] => {
                let known =
                    (0..self.scopes.len() as u32).any(|s| scope_path(Some(ScopeId(s))) == models);
                if known {
                    Err(format!(
                        "the nested model `{}` has no layer `{layer}`",
                        models.join("/")
                    ))
                } else {
                    Err(format!(
                        "the model has no nested model `{}`",
                        models.join("/")
                    ))
                }
            }
            _ => Err(format!("{} layers have that path", matches.len())),
        }
    }

    pub fn ids(&self) -> impl Iterator<Item = NodeId> {
        (0..self.nodes.len() as u32).map(NodeId)
    }

    /// Consumers of each node.
    pub fn consumers(&self) -> Vec<Vec<NodeId>> {
        let mut out = vec![Vec::new(); self.nodes.len()];
        for id in self.ids() {
            for &input in &self.node(id).inputs {
                out[input.index()].push(id);
            }
        }
        out
    }

    /// Nodes from which an output can be reached (the layers Keras keeps in the model).
    pub fn reaches_output(&self) -> Vec<bool> {
        let mut keep = vec![false; self.nodes.len()];
        let mut stack: Vec<NodeId> = self.outputs.clone();
        while let Some(id) = stack.pop() {
            if std::mem::replace(&mut keep[id.index()], true) {
                continue;
            }
            stack.extend(self.node(id).inputs.iter().copied());
        }
        keep
    }

    /// A topological order (inputs before consumers), or the nodes of one cycle.
    pub fn topological_order(&self) -> Result<Vec<NodeId>, Vec<NodeId>> {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            Active,
            Done,
        }
        let mut mark = vec![Mark::New; self.nodes.len()];
        let mut order = Vec::with_capacity(self.nodes.len());
        for root in self.ids() {
            if mark[root.index()] != Mark::New {
                continue;
            }
            // Iterative DFS: (node, next input to visit).
            let mut stack = vec![(root, 0usize)];
            mark[root.index()] = Mark::Active;
            while let Some((id, next)) = stack.pop() {
                let inputs = &self.node(id).inputs;
                if next < inputs.len() {
                    stack.push((id, next + 1));
                    let input = inputs[next];
                    match mark[input.index()] {
                        Mark::New => {
                            mark[input.index()] = Mark::Active;
                            stack.push((input, 0));
                        }
                        Mark::Active => {
                            let start = stack.iter().position(|(n, _)| *n == input).unwrap_or(0);
                            return Err(stack[start..].iter().map(|(n, _)| *n).collect());
                        }
                        Mark::Done => {}
                    }
                } else {
                    mark[id.index()] = Mark::Done;
                    order.push(id);
                }
            }
        }
        Ok(order)
    }

    /// Keras's `model.layers` order: by decreasing depth (longest path to an output), ties broken
    /// by the order a depth-first walk from the outputs first reaches each layer.
    /// Only layers that lead to an output are listed. Requires an acyclic graph.
    pub fn keras_layer_order(&self) -> Vec<NodeId> {
        let inputs: Vec<Vec<usize>> = self
            .nodes
            .iter()
            .map(|n| n.inputs.iter().map(|i| i.index()).collect())
            .collect();
        let outputs: Vec<usize> = self.outputs.iter().map(|o| o.index()).collect();
        let units: Vec<usize> = (0..self.nodes.len()).collect();
        keras_order(&inputs, &outputs, &units, self.nodes.len())
            .into_iter()
            .map(|i| NodeId(i as u32))
            .collect()
    }

    /// The node that owns `id`'s layer (its first call; itself unless `id` calls a shared layer).
    pub fn layer_owner(&self, id: NodeId) -> NodeId {
        self.node(id).shares.unwrap_or(id)
    }

    /// The weight tensor name of variable `var` of `id`'s layer (`conv2d_3/kernel`): every
    /// call of a shared layer uses its first call's weights.
    pub fn weight_name(&self, id: NodeId, var: &str) -> String {
        format!("{}/{var}", self.node(self.layer_owner(id)).name)
    }

    /// The scope of the first call of nested model `s` (itself unless `s` is a later call).
    pub fn scope_owner(&self, s: ScopeId) -> ScopeId {
        self.scopes[s.index()].shares.unwrap_or(s)
    }

    /// The outermost nested model `id` belongs to (`None`: a layer of the model itself).
    pub fn top_scope(&self, id: NodeId) -> Option<ScopeId> {
        let mut scope = self.node(id).scope?;
        while let Some(parent) = self.scopes[scope.index()].parent {
            scope = parent;
        }
        Some(scope)
    }
}

/// Keras's layer order (see [`Graph::keras_layer_order`]) over any DAG of calls, given as each
/// call's inputs, where `layer_of[call]` is the layer (of `layers`) a call calls: a shared
/// layer has several calls, a nested model is one layer called once. As tf_keras's
/// `_map_graph_network`: a call's depth is raised to its layer's depth so far, and a layer is
/// ordered by its deepest call, ties by the order a walk from the outputs first meets it.
/// Returns the layers met, in order.
pub fn keras_order(
    inputs_of: &[Vec<usize>],
    outputs: &[usize],
    layer_of: &[usize],
    layers: usize,
) -> Vec<usize> {
    // Pre-order indices of a DFS from the outputs, visiting inputs in their listed order.
    let mut first_seen = vec![usize::MAX; inputs_of.len()];
    let mut post_order = Vec::new();
    let mut visited = vec![false; inputs_of.len()];
    let mut counter = 0usize;
    for &out in outputs {
        let mut stack = vec![(out, 0usize)];
        if visited[out] {
            continue;
        }
        visited[out] = true;
        first_seen[out] = counter;
        counter += 1;
        while let Some((id, next)) = stack.pop() {
            let inputs = &inputs_of[id];
            if next < inputs.len() {
                stack.push((id, next + 1));
                let input = inputs[next];
                if !visited[input] {
                    visited[input] = true;
                    first_seen[input] = counter;
                    counter += 1;
                    stack.push((input, 0));
                }
            } else {
                post_order.push(id);
            }
        }
    }
    // Depth: longest path to an output, computed in reverse topological order.
    let mut depth = vec![0usize; inputs_of.len()];
    let mut layer_depth = vec![0usize; layers];
    let mut layer_seen = vec![usize::MAX; layers];
    let mut met = Vec::new();
    for &id in post_order.iter().rev() {
        let layer = layer_of[id];
        let d = depth[id].max(layer_depth[layer]);
        layer_depth[layer] = d;
        depth[id] = d;
        if layer_seen[layer] == usize::MAX {
            met.push(layer);
        }
        layer_seen[layer] = layer_seen[layer].min(first_seen[id]);
        for &input in &inputs_of[id] {
            depth[input] = depth[input].max(d + 1);
        }
    }
    met.sort_by_key(|&l| (std::cmp::Reverse(layer_depth[l]), layer_seen[l]));
    met
}
