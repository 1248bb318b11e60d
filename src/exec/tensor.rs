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
