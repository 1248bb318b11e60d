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

// Diagnostics are returned by value on the error path only; their size costs nothing that matters.
#![allow(clippy::result_large_err)]

pub mod ast;
pub mod diag;
pub mod expand;
pub mod front;
pub mod infer;
pub mod ir;
pub mod report;
pub mod suggest;
pub mod text;

use diag::{Diagnostic, Severity, SourceMap};
use expand::Session;
use std::path::Path;

/// What a compile of one spec produced. `graph`/`info` are best-effort when there are errors.
pub struct Compiled {
    pub sources: SourceMap,
    pub graph: ir::Graph,
    pub info: infer::Inferred,
    /// Every diagnostic, in source order within each stage.
    pub diags: Vec<Diagnostic>,
}

impl Compiled {
    pub fn has_errors(&self) -> bool {
        self.diags.iter().any(|d| d.severity == Severity::Error)
    }
}

/// The largest spec file unetc reads (includes have the same limit).
pub const MAX_SPEC_BYTES: u64 = 64 << 20;

/// Options of a compile.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Replaces the shape of the model's (first) input layer: `--input-shape HxWxC`.
    pub input_shape: Option<Vec<i64>>,
    /// Makes this layer (of the model itself, not of a nested model) the model's only output:
    /// `run --output-layer NAME` (a deep-supervision head, or features).
    pub output_layer: Option<String>,
}

/// Reads, parses, expands and checks a spec file. `session` carries Keras's auto-name counters,
/// so several specs compiled with one session are named as one Keras session would name them.
pub fn compile_file(
    path: &Path,
    options: &Options,
    session: &mut Session,
) -> std::io::Result<Compiled> {
    // A spec is text written by a person or a tool: refuse devices and absurd sizes up front.
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    if meta.len() > MAX_SPEC_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "the spec is {} bytes, more than the {MAX_SPEC_BYTES} unetc reads",
                meta.len()
            ),
        ));
    }
    let text = std::fs::read(path)?;
    let text = String::from_utf8(text).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the spec is not UTF-8 text",
        )
    })?;
    Ok(compile_source(path, text, options, session))
}

/// As [`compile_file`], for text already in memory (`path` names it and anchors includes; its
/// extension says the language).
pub fn compile_source(
    path: &Path,
    text: String,
    options: &Options,
    session: &mut Session,
) -> Compiled {
    compile_source_as(path, front::Format::of_path(path), text, options, session)
}

/// As [`compile_source`], in the language `format` whatever `path` is called (standard input).
pub fn compile_source_as(
    path: &Path,
    format: front::Format,
    text: String,
    options: &Options,
    session: &mut Session,
) -> Compiled {
    let mut sources = SourceMap::new();
    let file = sources.add(path, text);
    let text = sources.text(file).to_string();
    let spec = match front::parse(format, file, &text) {
        Ok(spec) => spec,
        Err(diags) => {
            return Compiled {
                sources,
                graph: ir::Graph::default(),
                info: infer::Inferred::default(),
                diags,
            }
        }
    };
    let mut expanded =
        expand::expand_with(&spec, &mut sources, session, options.input_shape.clone());
    if let Some(name) = &options.output_layer {
        if let Err(d) = expanded.graph.select_output(name) {
            expanded.diags.push(d);
        }
    }
    let mut diags = expanded.diags;
    let info = infer::infer(&expanded.graph, &expanded.broken);
    diags.extend(info.diags.iter().cloned());
    // Report in reading order: file, then position.
    diags.sort_by_key(|d| d.primary.as_ref().map(|(s, _)| (s.file.0, s.start)));
    let diags = diag::merge_repeats(diags);
    Compiled {
        sources,
        graph: expanded.graph,
        info,
        diags,
    }
}
pub mod emit;
pub mod exec;
pub mod interop;
pub mod io;
pub mod runner;
pub mod train;
