//! Execution of a checked model.

pub mod tensor;

pub use tensor::Tensor;
