//! Moving models between unetc and other tools.

pub mod keras;
pub mod onnx;
pub mod onnx_import;
pub mod pycode;
pub mod pytorch;
pub mod verify;
