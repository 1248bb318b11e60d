//! A dense f32 tensor in NHWC order (or `[N, features]` after Flatten/Dense).

/// Row-major f32 data with its shape; the first dimension is the batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Tensor {
    /// A zero-filled tensor. Callers check sizes against limits before calling.
    pub fn zeros(shape: &[usize]) -> Tensor {
        Tensor {
            shape: shape.to_vec(),
            data: vec![0.0; shape.iter().product()],
        }
    }

    /// Wraps data whose length must equal the shape's element count.
    pub fn from_vec(shape: &[usize], data: Vec<f32>) -> Option<Tensor> {
        (shape.iter().product::<usize>() == data.len()).then(|| Tensor {
            shape: shape.to_vec(),
            data,
        })
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Number of elements of one batch item.
    pub fn item_len(&self) -> usize {
        self.shape.iter().skip(1).product()
    }
}

/// Where an array holds NaN or infinite values: how many, and the first one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NonFinite {
    /// Flat (row-major) index of the first bad value.
    pub first: usize,
    pub first_kind: NonFiniteKind,
    pub count: usize,
}

/// Which kind of non-finite value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonFiniteKind {
    NaN,
    PlusInfinity,
    MinusInfinity,
}

impl NonFinite {
    /// Scans `data`; `None` when every value is finite.
    pub fn find(data: &[f32]) -> Option<NonFinite> {
        let first = data.iter().position(|v| !v.is_finite())?;
        let value = data[first];
        Some(NonFinite {
            first,
            first_kind: if value.is_nan() {
                NonFiniteKind::NaN
            } else if value > 0.0 {
                NonFiniteKind::PlusInfinity
            } else {
                NonFiniteKind::MinusInfinity
            },
            count: data[first..].iter().filter(|v| !v.is_finite()).count(),
        })
    }

    /// "2 of 48 values are NaN or infinite (the first, at index [0, 1, 2, 0] of shape
    /// [1, 4, 4, 3], is NaN)".
    pub fn describe(&self, shape: &[usize]) -> String {
        let index = index_list(shape, self.first);
        let total: usize = shape.iter().product();
        let what = match self.first_kind {
            NonFiniteKind::NaN => "NaN",
            NonFiniteKind::PlusInfinity => "+inf",
            NonFiniteKind::MinusInfinity => "-inf",
        };
        let verb = if self.count == 1 { "is" } else { "are" };
        format!(
            "{} of {total} values {verb} NaN or infinite (the first, at index {index} of shape \
             {shape:?}, is {what})",
            self.count
        )
    }
}

/// A flat row-major index as `[i, j, ...]` for an array of `shape`.
fn index_list(shape: &[usize], flat: usize) -> String {
    let mut rest = flat;
    let mut index = vec![0usize; shape.len()];
    for (slot, &dim) in index.iter_mut().zip(shape).rev() {
        if dim > 0 {
            *slot = rest % dim;
            rest /= dim;
        }
    }
    format!(
        "[{}]",
        index
            .iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}
