//! Execution of a checked model: the plan (schedule, lifetimes, buffer reuse) and backends.

pub mod cpu;
pub mod cuda;
pub mod plan;
pub mod tensor;
pub mod tiling;

pub use tensor::Tensor;
