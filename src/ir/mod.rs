//! The layer graph: what the spec means once blocks, loops, includes, defaults and
//! templates are expanded. Nodes are Keras layers in creation order; edges are by index.

pub mod ops;
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
    /// Where the layer was called.
    pub span: Span,
    /// True for layers created by an `include` (they are not reported as unused).
    pub included: bool,
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
    /// The main spec's `train(...)` settings, if it has them.
    pub train: Option<TrainSection>,
}

impl Graph {
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.index()]
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
        // Pre-order indices of a DFS from the outputs, visiting inputs in their listed order.
        let mut first_seen = vec![usize::MAX; self.nodes.len()];
        let mut post_order = Vec::new();
        let mut visited = vec![false; self.nodes.len()];
        let mut counter = 0usize;
        for &out in &self.outputs {
            let mut stack = vec![(out, 0usize)];
            if visited[out.index()] {
                continue;
            }
            visited[out.index()] = true;
            first_seen[out.index()] = counter;
            counter += 1;
            while let Some((id, next)) = stack.pop() {
                let inputs = &self.node(id).inputs;
                if next < inputs.len() {
                    stack.push((id, next + 1));
                    let input = inputs[next];
                    if !visited[input.index()] {
                        visited[input.index()] = true;
                        first_seen[input.index()] = counter;
                        counter += 1;
                        stack.push((input, 0));
                    }
                } else {
                    post_order.push(id);
                }
            }
        }
        // Depth: longest path to an output, computed in reverse topological order.
        let mut depth = vec![0usize; self.nodes.len()];
        for &id in post_order.iter().rev() {
            let d = depth[id.index()];
            for &input in &self.node(id).inputs {
                depth[input.index()] = depth[input.index()].max(d + 1);
            }
        }
        let mut layers = post_order;
        layers.sort_by_key(|id| (std::cmp::Reverse(depth[id.index()]), first_seen[id.index()]));
        layers
    }
}
