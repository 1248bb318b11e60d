//! InputLayer.

use super::{LayerKind, Shape, ShapeError};
use crate::ir::value::{ArgReader, Value, MAX_DIM};
use serde_json::{json, Value as Json};

#[derive(Debug, Clone, PartialEq)]
pub struct Input {
    /// Without the batch dimension.
    pub shape: Vec<i64>,
}

impl LayerKind for Input {
    const CLASS: &'static str = "InputLayer";
    const POSITIONAL: &'static [&'static str] = &["shape"];
    const KNOWN: &'static [&'static str] = &["shape"];
    // The input layer is written from `batch_input_shape` by the importer itself.
    const IMPORTED_CONFIG: &'static [&'static str] = &[];

    fn parse(r: &mut ArgReader) -> Self {
        if !r.has("shape") {
            r.missing("shape", "input 572x572x1");
            return Input {
                shape: vec![1, 1, 1],
            };
        }
        Input {
            shape: r.shape("shape").unwrap_or_else(|| vec![1, 1, 1]),
        }
    }

    fn infer(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        if !inputs.is_empty() {
            return Err(ShapeError::new(
                "E-arity",
                "an input layer takes no inputs",
                "has inputs",
            ));
        }
        Ok(self.shape.clone())
    }

    fn config(&self) -> Json {
        let mut shape: Vec<Json> = vec![Json::Null];
        shape.extend(self.shape.iter().map(|&d| json!(d)));
        json!({ "batch_input_shape": shape })
    }

    fn arity() -> (usize, usize) {
        (0, 0)
    }
}

impl ArgReader<'_> {
    /// A shape: a list of 1 to 4 positive sizes (4: a volume, D x H x W x C).
    pub fn shape(&mut self, name: &str) -> Option<Vec<i64>> {
        let dims: Option<Vec<i64>> = match self.peek(name)? {
            Value::List(items) if (1..=4).contains(&items.len()) => items
                .iter()
                .map(|v| match v {
                    Value::Int(i) if (1..=MAX_DIM).contains(i) => Some(*i),
                    _ => None,
                })
                .collect(),
            _ => None,
        };
        if dims.is_none() {
            let arg = self.take_arg(name)?;
            self.diags.push(
                crate::diag::Diagnostic::error(
                    "E-arg-type",
                    format!(
                        "input `{name}` must be H x W x C (or D x H x W x C) with sizes in 1..={MAX_DIM}, found `{}`",
                        arg.value
                    ),
                )
                .at(arg.span, "not a valid shape")
                .help("for example `input 572x572x1` (YAML: `input: [572, 572, 1]`)"),
            );
            return None;
        }
        self.take_arg(name);
        dims
    }
}
