//! Spans, source files and the one diagnostic type. Diagnostics are plain data;
//! they are rendered (with codespan-reporting) only at the edge.

use codespan_reporting::diagnostic::{Diagnostic as CsDiagnostic, Label, Severity as CsSeverity};
use codespan_reporting::files::SimpleFiles;
use codespan_reporting::term;
use std::path::{Path, PathBuf};

/// Index of a file in the [`SourceMap`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FileId(pub u32);

/// A byte range in one source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Span {
    pub file: FileId,
    pub start: u32,
    pub end: u32,
}

impl Span {
    pub fn new(file: FileId, start: usize, end: usize) -> Span {
        Span {
            file,
            start: start as u32,
            end: end.max(start) as u32,
        }
    }

    /// The smallest span covering both (same file assumed).
    pub fn to(self, other: Span) -> Span {
        Span {
            file: self.file,
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }
}

/// Every file read while compiling one spec (the spec and its includes).
#[derive(Default)]
pub struct SourceMap {
    files: SimpleFiles<String, String>,
    paths: Vec<PathBuf>,
}

impl SourceMap {
    pub fn new() -> SourceMap {
        SourceMap::default()
    }

    pub fn add(&mut self, path: impl AsRef<Path>, text: String) -> FileId {
        let path = path.as_ref();
        self.paths.push(path.to_path_buf());
        FileId(self.files.add(path.display().to_string(), text) as u32)
    }

    pub fn text(&self, file: FileId) -> &str {
        self.files
            .get(file.0 as usize)
            .map(|f| f.source().as_str())
            .unwrap_or("")
    }

    pub fn path(&self, file: FileId) -> &Path {
        &self.paths[file.0 as usize]
    }

    pub fn file_ids(&self) -> impl Iterator<Item = FileId> {
        (0..self.paths.len() as u32).map(FileId)
    }

    /// 1-based line and column of a span's start.
    pub fn line_col(&self, span: Span) -> (usize, usize) {
        let text = self.text(span.file);
        let start = (span.start as usize).min(text.len());
        let before = &text[..floor_char_boundary(text, start)];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, col)
    }
}

fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while i > 0 && !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Warning,
    Error,
}

/// One problem found in a spec: what, where, and how to fix it.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    pub severity: Severity,
    /// Stable short code, e.g. `E-concat-shape`; listed in the README.
    pub code: &'static str,
    pub message: String,
    /// The primary location and its label.
    pub primary: Option<(Span, String)>,
    /// Other places that explain the problem.
    pub secondary: Vec<(Span, String)>,
    /// `help: ...` lines: what to do about it.
    pub help: Vec<String>,
    /// How many times the same error came up at this place (see [`merge_repeats`]); 1 normally.
    pub repeats: usize,
}

impl Diagnostic {
    pub fn error(code: &'static str, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            code,
            message: message.into(),
            primary: None,
            secondary: Vec::new(),
            help: Vec::new(),
            repeats: 1,
        }
    }

    pub fn warning(code: &'static str, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(code, message)
        }
    }

    pub fn at(mut self, span: Span, label: impl Into<String>) -> Diagnostic {
        self.primary = Some((span, label.into()));
        self
    }

    pub fn also(mut self, span: Span, label: impl Into<String>) -> Diagnostic {
        self.secondary.push((span, label.into()));
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help.push(help.into());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    fn to_codespan(&self) -> CsDiagnostic<usize> {
        let severity = match self.severity {
            Severity::Warning => CsSeverity::Warning,
            Severity::Error => CsSeverity::Error,
        };
        let mut labels = Vec::new();
        if let Some((span, label)) = &self.primary {
            labels.push(
                Label::primary(span.file.0 as usize, span.start as usize..span.end as usize)
                    .with_message(label),
            );
        }
        for (span, label) in &self.secondary {
            labels.push(
                Label::secondary(span.file.0 as usize, span.start as usize..span.end as usize)
                    .with_message(label),
            );
        }
        CsDiagnostic::new(severity)
            .with_code(self.code)
            .with_message(&self.message)
            .with_labels(labels)
            .with_notes(
                self.help
                    .iter()
                    .map(|h| format!("help: {h}"))
                    .chain(self.repeats_note().map(|n| format!("note: {n}")))
                    .collect(),
            )
    }

    /// Says that this diagnostic stands for several, e.g. `reported once; affects 16 layers`.
    pub fn repeats_note(&self) -> Option<String> {
        match self.repeats {
            0 | 1 => None,
            n if self.code.starts_with("E-arg") => {
                Some(format!("reported once; affects {n} layers"))
            }
            n => Some(format!(
                "reported once; it comes up {n} times here (once per block call or loop pass)"
            )),
        }
    }
}

/// `message` with every run of digits as `#` and Keras's auto-name suffixes (`_#`) dropped:
/// `max_pooling2d_1` and `max_pooling2d` read the same.
fn without_numbers(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut in_digits = false;
    for c in message.chars() {
        if c.is_ascii_digit() {
            if !in_digits {
                out.push('#');
            }
            in_digits = true;
        } else {
            in_digits = false;
            out.push(c);
        }
    }
    out.replace("_#", "")
}

/// One diagnostic per cause: the same error at the same place (a misspelled default read by
/// every conv, a mistake in a loop's body or a block called many times) is kept once, the first
/// time it comes up, with the number of repeats. "The same" means same code, same place and the
/// same message up to its numbers (a loop's passes differ in their sizes and layer names).
pub fn merge_repeats(diags: Vec<Diagnostic>) -> Vec<Diagnostic> {
    let mut out: Vec<Diagnostic> = Vec::with_capacity(diags.len());
    let mut first: std::collections::HashMap<(Severity, &'static str, Span, String), usize> =
        std::collections::HashMap::new();
    for d in diags {
        let Some((span, _)) = d.primary else {
            out.push(d);
            continue;
        };
        match first.entry((d.severity, d.code, span, without_numbers(&d.message))) {
            std::collections::hash_map::Entry::Occupied(e) => out[*e.get()].repeats += d.repeats,
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(out.len());
                out.push(d);
            }
        }
    }
    out
}

/// Renders diagnostics as plain text, the way `unetc check` prints them without colour.
pub fn render_plain(sources: &SourceMap, diagnostics: &[Diagnostic]) -> String {
    let config = term::Config::default();
    let mut out = String::new();
    for d in diagnostics {
        match term::emit_into_string(&config, &sources.files, &clamp(sources, d).to_codespan()) {
            Ok(s) => out.push_str(&s),
            Err(_) => out.push_str(&format!("{:?}: {}\n", d.severity, d.message)),
        }
        // One blank line between diagnostics.
        if !out.ends_with("\n\n") {
            out.push('\n');
        }
    }
    out
}

/// Renders diagnostics with colours to a terminal stream.
pub fn render_colored(
    sources: &SourceMap,
    diagnostics: &[Diagnostic],
    stream: &mut term::termcolor::StandardStream,
) {
    let config = term::Config::default();
    let styles = term::Styles::default();
    let mut writer = term::StylesWriter::new(stream, &styles);
    for d in diagnostics {
        let _ = term::emit_to_write_style(
            &mut writer,
            &config,
            &sources.files,
            &clamp(sources, d).to_codespan(),
        );
    }
}

/// Spans must lie inside their file on char boundaries, or the renderer refuses them.
fn clamp(sources: &SourceMap, d: &Diagnostic) -> Diagnostic {
    let fix = |s: Span| {
        let text = sources.text(s.file);
        let start = floor_char_boundary(text, (s.start as usize).min(text.len()));
        let end = floor_char_boundary(text, (s.end as usize).min(text.len())).max(start);
        Span::new(s.file, start, end)
    };
    let mut d = d.clone();
    if let Some((span, _)) = &mut d.primary {
        *span = fix(*span);
    }
    for (span, _) in &mut d.secondary {
        *span = fix(*span);
    }
    d
}
