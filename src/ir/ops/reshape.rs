//! Reshape and Permute: the same values in another shape or axis order (squeeze-excitation
//! blocks reshape a pooled `(C,)` vector to `(1, 1, C)`).

use super::{product, LayerKind, Shape, ShapeError};
use crate::ir::value::{ArgReader, MAX_DIM};
use serde_json::{json, Value as Json};

/// The most axes (besides the batch) a tensor has in unetc: images `(H, W, C)`.
const MAX_RANK: usize = 3;

fn rank_error(what: &str, rank: usize) -> ShapeError {
    ShapeError::new(
        "E-rank",
        format!("{what} has {rank} axes; unetc's tensors have 1 to {MAX_RANK} (besides the batch)"),
        "unsupported rank",
    )
}

/// `(7, -1)`: the numbers as written, without a batch axis.
fn tuple_text(dims: &[i64]) -> String {
    let items: Vec<String> = dims.iter().map(i64::to_string).collect();
    if items.len() == 1 {
        format!("({},)", items[0])
    } else {
        format!("({})", items.join(", "))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Reshape {
    /// Without the batch dimension; at most one `-1` (inferred from the input's size).
    pub target_shape: Vec<i64>,
}

impl LayerKind for Reshape {
    const CLASS: &'static str = "Reshape";
    const POSITIONAL: &'static [&'static str] = &["target_shape"];
    const KNOWN: &'static [&'static str] = &["target_shape"];
    const IMPORTED_CONFIG: &'static [&'static str] = &["target_shape"];

    fn parse(r: &mut ArgReader) -> Self {
        if !r.has("target_shape") {
            r.missing("target_shape", "reshape((1, 1, 64))");
        }
        Reshape {
            target_shape: r.int_list("target_shape", -1, MAX_DIM),
        }
    }

    fn infer(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        let target = &self.target_shape;
        if target.is_empty() || target.len() > MAX_RANK {
            return Err(rank_error("target_shape", target.len()));
        }
        if target.contains(&0) {
            return Err(ShapeError::new(
                "E-arg-value",
                "target_shape has an axis of size 0",
                "size 0",
            ));
        }
        let unknown = target.iter().filter(|&&d| d == -1).count();
        if unknown > 1 {
            return Err(ShapeError::new(
                "E-arg-value",
                "target_shape may have one -1 (the axis computed from the input's size), not several",
                "several -1",
            ));
        }
        let total = product(&inputs[0]);
        let known = product(
            &target
                .iter()
                .copied()
                .filter(|&d| d != -1)
                .collect::<Vec<_>>(),
        );
        let fits = if unknown == 1 {
            total % known == 0
        } else {
            total == known
        };
        if !fits {
            return Err(ShapeError::new(
                "E-reshape",
                format!(
                    "{{0}} has {total} values, which do not make target_shape {}",
                    tuple_text(target)
                ),
                "sizes differ",
            )
            .help("the product of target_shape must equal the product of the input's shape (a -1 takes what is left)"));
        }
        Ok(target
            .iter()
            .map(|&d| if d == -1 { (total / known) as i64 } else { d })
            .collect())
    }

    fn config(&self) -> Json {
        json!({ "target_shape": self.target_shape })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Permute {
    /// Keras's `dims`: a permutation of `1..=rank` (axis 0 is the batch, which stays).
    pub dims: Vec<i64>,
}

impl Permute {
    /// The input axis (0-based, without the batch) each output axis takes.
    pub fn source_axes(&self) -> Vec<usize> {
        self.dims.iter().map(|&d| (d - 1).max(0) as usize).collect()
    }
}

impl LayerKind for Permute {
    const CLASS: &'static str = "Permute";
    const POSITIONAL: &'static [&'static str] = &["dims"];
    const KNOWN: &'static [&'static str] = &["dims"];
    const IMPORTED_CONFIG: &'static [&'static str] = &["dims"];

    fn parse(r: &mut ArgReader) -> Self {
        if !r.has("dims") {
            r.missing("dims", "permute((2, 1, 3))");
        }
        Permute {
            dims: r.int_list("dims", 1, MAX_RANK as i64),
        }
    }

    fn infer(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        let input = &inputs[0];
        let mut sorted = self.dims.clone();
        sorted.sort_unstable();
        let identity: Vec<i64> = (1..=input.len() as i64).collect();
        if sorted != identity {
            return Err(ShapeError::new(
                "E-arg-value",
                format!(
                    "dims {} is no permutation of the axes 1..={} of {{0}} {}",
                    tuple_text(&self.dims),
                    input.len(),
                    crate::text::shape_text(input)
                ),
                "not a permutation",
            )
            .help("name every axis but the batch once, counting from 1: `permute((2, 1, 3))` swaps height and width"));
        }
        Ok(self.source_axes().iter().map(|&a| input[a]).collect())
    }

    fn config(&self) -> Json {
        json!({ "dims": self.dims })
    }
}
