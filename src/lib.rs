//! unetc: a compiler for declarative U-Net descriptions.
//!
//! The pipeline, one module per stage, plain data between them:
//!
//! 1. [`front`]: spec text (YAML or the DSL) -> [`ast::Spec`], every node with its span.
//! 2. [`expand`]: blocks, loops, includes, defaults and the `unet` template -> [`ir::Graph`]
//!    of Keras layers with Keras's auto-names.
//! 3. [`infer`]: shapes, parameter counts and diagnostics, as a side table over the graph.
//! 4. [`report`]: the Keras summary (both layouts), JSON.
//!
//! [`compile`] chains them.

pub mod ast;
pub mod diag;
pub mod front;
pub mod report;
