//! Execution of a checked model: the plan (schedule, lifetimes, buffer reuse) and backends.

pub mod cpu;
pub mod cuda;
pub mod plan;
pub mod tensor;
pub mod tiling;

pub use tensor::Tensor;

use crate::infer::Inferred;
use crate::ir::{Graph, NodeId, Op};
use std::collections::HashMap;

/// Where weights come from (a safetensors file, or anything that maps names to tensors).
pub trait WeightSource {
    fn get(&self, name: &str) -> Option<&Tensor>;
}

impl WeightSource for HashMap<String, Tensor> {
    fn get(&self, name: &str) -> Option<&Tensor> {
        HashMap::get(self, name)
    }
}

/// Each layer's weights in Keras layout and a fixed order — Conv2D, Conv2DTranspose, Dense:
/// `[kernel, bias]`; BatchNormalization: `[gamma, beta, moving_mean, moving_variance]` — with
/// the optional ones a layer does not have filled in (bias 0, gamma 1, beta 0), so every backend
/// runs one code path. Every missing or misshaped tensor is reported, all at once, by name.
pub fn bind_weights(
    graph: &Graph,
    info: &Inferred,
    nodes: &[NodeId],
    weights: &dyn WeightSource,
) -> Result<HashMap<NodeId, Vec<Vec<f32>>>, Vec<String>> {
    let mut problems = Vec::new();
    let mut bound = HashMap::new();
    for &id in nodes {
        let node = graph.node(id);
        let specs = &info.layers[id.index()].weights;
        let channels = info.layers[id.index()]
            .shape
            .as_ref()
            .and_then(|s| s.last())
            .copied()
            .unwrap_or(1)
            .max(0) as usize;
        let mut fetch = |var: &str, fallback: Option<f32>| -> Option<Vec<f32>> {
            let Some(spec) = specs.iter().find(|w| w.name == var) else {
                return fallback.map(|v| vec![v; channels]);
            };
            let name = format!("{}/{}", node.name, var);
            let want: Vec<usize> = spec.shape.iter().map(|&d| d as usize).collect();
            match weights.get(&name) {
                None => {
                    problems.push(format!("missing `{name}` (shape {want:?})"));
                    None
                }
                Some(t) if t.shape != want => {
                    problems.push(format!(
                        "`{name}` has shape {:?} but the model needs {want:?}",
                        t.shape
                    ));
                    None
                }
                Some(t) => Some(t.data.clone()),
            }
        };
        let tensors = match &node.op {
            Op::Conv2D(_) | Op::Conv2DTranspose(_) | Op::Dense(_) => {
                vec![fetch("kernel", None), fetch("bias", Some(0.0))]
            }
            Op::BatchNormalization(_) => vec![
                fetch("gamma", Some(1.0)),
                fetch("beta", Some(0.0)),
                fetch("moving_mean", None),
                fetch("moving_variance", None),
            ],
            _ => continue,
        };
        if let Some(all) = tensors.into_iter().collect::<Option<Vec<_>>>() {
            bound.insert(id, all);
        }
    }
    if problems.is_empty() {
        Ok(bound)
    } else {
        Err(problems)
    }
}
