//! Front ends: spec text (YAML or the DSL) -> one AST.

pub mod dsl;
pub mod yaml;

use crate::ast::Spec;
use crate::diag::{Diagnostic, FileId};
use std::path::Path;

/// The spec formats unetc reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Dsl,
}

impl Format {
    /// `.yaml`/`.yml` are YAML; everything else (`.unet`) is the DSL.
    pub fn of_path(path: &Path) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some("yaml" | "yml") => Format::Yaml,
            _ => Format::Dsl,
        }
    }
}

pub fn parse(format: Format, file: FileId, text: &str) -> Result<Spec, Vec<Diagnostic>> {
    match format {
        Format::Yaml => yaml::parse(file, text),
        Format::Dsl => dsl::parse(file, text).map_err(|d| vec![d]),
    }
}
