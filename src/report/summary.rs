//! Keras `model.summary()` text, byte for byte.
//!
//! Two layouts are reproduced (see `../shared/truth/README.md`, "Printed summary"):
//! - [`SummaryStyle::Legacy`]: TF 2.2–2.5, the table printed in the seed documents. Cells are
//!   truncated at fixed column ends, layers are separated by `_` rules, extra connections get
//!   their own rows, totals carry thousands separators.
//! - [`SummaryStyle::TfKeras`]: tf_keras 2.21. Cells wrap onto continuation lines instead of
//!   being cut, layers are separated by blank lines, totals carry a float32 memory size.
//!
//! Both are ports of Keras's own `print_summary`, so widths other than the default behave as
//! Keras's `line_length=n` would.

use crate::text::{shape_repr, thousands};
use std::fmt::Write as _;

/// One row of the summary, in Keras's row order (the caller orders rows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SummaryRow {
    pub name: String,
    /// Keras class name, e.g. "Conv2D", "InputLayer".
    pub class: String,
    /// Batch dim first as None, e.g. [None, Some(572), Some(572), Some(1)].
    pub output_shape: Vec<Option<u64>>,
    /// A nested model's further outputs: the cell then lists every output shape.
    pub extra_outputs: Vec<Vec<Option<u64>>>,
    /// A shared layer whose calls give different shapes: Keras prints `multiple`.
    pub multiple: bool,
    /// InputLayer: shape printed as a list `[(None, 572, 572, 1)]`.
    pub is_input: bool,
    pub params: u64,
    /// e.g. ["cropping2d[0][0]", "conv2d_transpose[0][0]"]; empty for inputs.
    pub connected_to: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SummaryModel {
    pub name: String,
    pub rows: Vec<SummaryRow>,
    /// True for pure chains: 3 columns, no "Connected to".
    pub sequential_like: bool,
    pub total_params: u64,
    pub trainable_params: u64,
    pub non_trainable_params: u64,
    /// Bytes of the parameters, as Keras's tf_keras layout prints them.
    pub trainable_bytes: u64,
    pub non_trainable_bytes: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SummaryStyle {
    Legacy,
    TfKeras,
}

/// Renders the summary exactly as Keras prints it, final newline included.
///
/// `line_length`: None = Keras default (98 functional / 65 sequential-like). Some(n) = Keras's
/// `line_length=n`.
pub fn render(model: &SummaryModel, style: SummaryStyle, line_length: Option<usize>) -> String {
    let layout = Layout::new(model.sequential_like, style, line_length);
    let mut out = String::new();
    push_line(&mut out, &format!("Model: \"{}\"", model.name));
    push_line(&mut out, &"_".repeat(layout.line_length));
    match style {
        SummaryStyle::Legacy => render_legacy(&mut out, model, &layout),
        SummaryStyle::TfKeras => render_tf_keras(&mut out, model, &layout),
    }
    push_line(&mut out, &"_".repeat(layout.line_length));
    out
}

/// Column geometry: Keras computes column ends as `int(line_length * fraction)`.
struct Layout {
    line_length: usize,
    positions: Vec<usize>,
    header: &'static [&'static str],
}

impl Layout {
    fn new(sequential_like: bool, style: SummaryStyle, line_length: Option<usize>) -> Layout {
        let (default_length, fractions, header): (usize, &[f64], &'static [&'static str]) =
            match (sequential_like, style) {
                (true, _) => (65, &[0.45, 0.85, 1.0], &SEQUENTIAL_HEADER),
                (false, SummaryStyle::Legacy) => (98, &[0.33, 0.55, 0.67, 1.0], &FUNCTIONAL_HEADER),
                (false, SummaryStyle::TfKeras) => (98, &[0.3, 0.6, 0.7, 1.0], &FUNCTIONAL_HEADER),
            };
        let line_length = line_length.unwrap_or(default_length);
        // Same f64 product and truncation as Python's `int(line_length * p)`.
        let positions = fractions
            .iter()
            .map(|p| (line_length as f64 * p) as usize)
            .collect();
        Layout {
            line_length,
            positions,
            header,
        }
    }
}

const SEQUENTIAL_HEADER: [&str; 3] = ["Layer (type)", "Output Shape", "Param #"];
const FUNCTIONAL_HEADER: [&str; 4] = ["Layer (type)", "Output Shape", "Param #", "Connected to"];

/// The cells Keras prints for a layer's first line: name, shape and params, plus the
/// connections cell (in the style's own form) for functional models.
fn leading_fields(row: &SummaryRow, connections: Option<String>) -> Vec<String> {
    let shape = if row.multiple {
        "multiple".to_string()
    } else if row.extra_outputs.is_empty() {
        shape_repr(&row.output_shape, row.is_input)
    } else {
        // Python's str of a list of shapes, as Keras prints a multi-output model's.
        let all: Vec<String> = std::iter::once(&row.output_shape)
            .chain(&row.extra_outputs)
            .map(|s| shape_repr(s, false))
            .collect();
        format!("[{}]", all.join(", "))
    };
    let mut fields = vec![
        format!("{} ({})", row.name, row.class),
        shape,
        row.params.to_string(),
    ];
    fields.extend(connections);
    fields
}

fn push_line(out: &mut String, line: &str) {
    out.push_str(line);
    out.push('\n');
}

// ---------------------------------------------------------------------------------------------
// Legacy layout (TF 2.2–2.5)

fn render_legacy(out: &mut String, model: &SummaryModel, layout: &Layout) {
    push_line(out, &legacy_line(layout.header, &layout.positions));
    push_line(out, &"=".repeat(layout.line_length));
    for (i, row) in model.rows.iter().enumerate() {
        for line in legacy_row_lines(row, model.sequential_like, &layout.positions) {
            push_line(out, &line);
        }
        // The rule after the last layer doubles as the table's closing `=` rule.
        let rule = if i + 1 == model.rows.len() { "=" } else { "_" };
        push_line(out, &rule.repeat(layout.line_length));
    }
    push_line(
        out,
        &format!("Total params: {}", thousands(model.total_params)),
    );
    push_line(
        out,
        &format!("Trainable params: {}", thousands(model.trainable_params)),
    );
    push_line(
        out,
        &format!(
            "Non-trainable params: {}",
            thousands(model.non_trainable_params)
        ),
    );
}

/// The first line carries the first connection; every further connection gets a row of its
/// own with the other cells empty.
fn legacy_row_lines(row: &SummaryRow, sequential_like: bool, positions: &[usize]) -> Vec<String> {
    if sequential_like {
        return vec![legacy_line(&leading_fields(row, None), positions)];
    }
    let first = row.connected_to.first().cloned().unwrap_or_default();
    let mut lines = vec![legacy_line(&leading_fields(row, Some(first)), positions)];
    for connection in row.connected_to.iter().skip(1) {
        lines.push(legacy_line(&["", "", "", connection], positions));
    }
    lines
}

/// Keras 2.2–2.5 `print_row`: each field overwrites the previous line's last character with a
/// space, then the line is cut (or padded) to the field's column end.
fn legacy_line<S: AsRef<str>>(fields: &[S], positions: &[usize]) -> String {
    let mut line: Vec<char> = Vec::new();
    for (i, (field, &end)) in fields.iter().zip(positions).enumerate() {
        if i > 0 {
            line.pop();
            line.push(' ');
        }
        line.extend(field.as_ref().chars());
        line.resize(end, ' ');
    }
    line.into_iter().collect()
}

// ---------------------------------------------------------------------------------------------
// tf_keras 2.21 layout

fn render_tf_keras(out: &mut String, model: &SummaryModel, layout: &Layout) {
    let blank = " ".repeat(layout.line_length);
    push_lines(out, &wrapped_lines(layout.header, &layout.positions));
    push_line(out, &"=".repeat(layout.line_length));
    for row in &model.rows {
        let connections = (!model.sequential_like).then(|| python_list_repr(&row.connected_to));
        push_lines(
            out,
            &wrapped_lines(&leading_fields(row, connections), &layout.positions),
        );
        push_line(out, &blank);
    }
    push_line(out, &"=".repeat(layout.line_length));
    // Keras sums the weights' byte sizes.
    let (trainable, frozen) = (model.trainable_bytes, model.non_trainable_bytes);
    let totals = [
        (
            "Total params",
            model.total_params,
            trainable.saturating_add(frozen),
        ),
        ("Trainable params", model.trainable_params, trainable),
        ("Non-trainable params", model.non_trainable_params, frozen),
    ];
    for (label, count, bytes) in totals {
        push_line(
            out,
            &format!("{label}: {count} ({})", readable_memory_size(bytes)),
        );
    }
}

fn push_lines(out: &mut String, lines: &[String]) {
    for line in lines {
        push_line(out, line);
    }
}

/// tf_keras `print_row`: prints chunks of every cell side by side, line after line, until all
/// cells are used up. Nothing is truncated.
fn wrapped_lines<S: AsRef<str>>(fields: &[S], positions: &[usize]) -> Vec<String> {
    let mut left: Vec<&str> = fields.iter().map(AsRef::as_ref).collect();
    let mut lines = Vec::new();
    while left.iter().any(|cell| !cell.is_empty()) {
        let mut line = String::from(" ");
        let mut width = 1;
        for (col, cell) in left.iter_mut().enumerate() {
            let start = if col > 0 { positions[col - 1] } else { 0 };
            let end = positions[col];
            let last = col + 1 == positions.len();
            // Two spaces delimit columns, and the leading space of the row shifts every
            // column but the last by one.
            let gap = if last { 0 } else { 2 };
            let chunk_width = (end - start).saturating_sub(if last { 0 } else { 3 });
            let (chunk, rest) = take_chunk(cell, chunk_width);
            *cell = rest;
            line.push_str(chunk);
            width += chunk.chars().count() + gap;
            line.push_str(&" ".repeat(gap + end.saturating_sub(width)));
            width = width.max(end);
        }
        lines.push(line);
    }
    lines
}

/// Splits off the next chunk of a cell: at most `width` characters, and cut right after the
/// first `),` `},` `],` or `',` in them, which is how Keras puts one connection per line.
fn take_chunk(cell: &str, width: usize) -> (&str, &str) {
    // Keras would loop forever on a zero-width column; always make progress instead.
    let width = width.max(1);
    let fit_end = cell
        .char_indices()
        .nth(width)
        .map_or(cell.len(), |(i, _)| i);
    let fit = &cell[..fit_end];
    let cut = ["),", "},", "],", "',"]
        .iter()
        .filter_map(|mark| fit.find(mark).map(|i| i + mark.len()))
        .min()
        .unwrap_or(fit_end);
    cell.split_at(cut)
}

/// Python's `str(list_of_str)`: `['a[0][0]', 'b[0][0]']`.
fn python_list_repr(items: &[String]) -> String {
    let reprs: Vec<String> = items.iter().map(|s| python_str_repr(s)).collect();
    format!("[{}]", reprs.join(", "))
}

/// Python's `repr(str)`: single quotes unless the text holds a `'` and no `"`.
fn python_str_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// tf_keras `readable_memory_size`: 1024-based units, two decimals (Rust and Python both round
/// exact ties to even, so the digits agree).
fn readable_memory_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["Byte", "KB", "MB", "GB", "TB", "PB"];
    let mut size = bytes as f64;
    for unit in &UNITS[..UNITS.len() - 1] {
        if size / 1024.0 < 1.0 {
            return format!("{size:.2} {unit}");
        }
        size /= 1024.0;
    }
    format!("{size:.2} {}", UNITS[UNITS.len() - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_repr_matches_python() {
        let conv = [None, Some(570), Some(570), Some(64)];
        assert_eq!(shape_repr(&conv, false), "(None, 570, 570, 64)");
        assert_eq!(shape_repr(&[None, Some(25088)], false), "(None, 25088)");
        assert_eq!(shape_repr(&[None], false), "(None,)");
        let input = [None, Some(572), Some(572), Some(1)];
        assert_eq!(shape_repr(&input, true), "[(None, 572, 572, 1)]");
    }

    #[test]
    fn chunks_wrap_at_width_and_after_list_separators() {
        assert_eq!(
            take_chunk("max_pooling2d (MaxPooling2D)", 26),
            ("max_pooling2d (MaxPooling2", "D)")
        );
        assert_eq!(
            take_chunk("['batch_normalization_1[0][0]']", 30),
            ("['batch_normalization_1[0][0]'", "]")
        );
        // Cut after the first `',` even though the whole cell would fit in 200 columns.
        assert_eq!(
            take_chunk("['cropping2d[0][0]', 'conv2d_transpose[0][0]']", 140),
            ("['cropping2d[0][0]',", " 'conv2d_transpose[0][0]']")
        );
        assert_eq!(
            take_chunk("(None, 128, 128, 128)", 26),
            ("(None, 128, 128, 128)", "")
        );
    }

    fn row(name: &str, class: &str, shape: &[u64], params: u64, inbound: &[&str]) -> SummaryRow {
        SummaryRow {
            name: name.into(),
            class: class.into(),
            output_shape: std::iter::once(None)
                .chain(shape.iter().copied().map(Some))
                .collect(),
            extra_outputs: Vec::new(),
            multiple: false,
            is_input: false,
            params,
            connected_to: inbound.iter().map(|s| format!("{s}[0][0]")).collect(),
        }
    }

    #[test]
    fn tf_keras_row_wraps_long_name() {
        let pool = row(
            "max_pooling2d",
            "MaxPooling2D",
            &[284, 284, 64],
            0,
            &["conv2d_1"],
        );
        let layout = Layout::new(false, SummaryStyle::TfKeras, None);
        let fields = leading_fields(&pool, Some(python_list_repr(&pool.connected_to)));
        let lines = wrapped_lines(&fields, &layout.positions);
        // Lines from seed000_original.summary.default.txt.
        assert_eq!(
            lines,
            [
                " max_pooling2d (MaxPooling2  (None, 284, 284, 64)         0         ['conv2d_1[0][0]']            ",
                " D)                                                                                               ",
            ]
        );
    }

    #[test]
    fn legacy_rows_truncate_and_split_connections() {
        let layout = Layout::new(false, SummaryStyle::Legacy, None);
        assert_eq!(layout.positions, [32, 53, 65, 98]);
        let concat = row(
            "concatenate",
            "Concatenate",
            &[56, 56, 1024],
            0,
            &["cropping2d", "conv2d_transpose"],
        );
        let up = row(
            "conv2d_transpose",
            "Conv2DTranspose",
            &[56, 56, 512],
            2097664,
            &["conv2d_9"],
        );
        // Lines from seed000_original.summary.legacy98.txt.
        assert_eq!(
            legacy_row_lines(&up, false, &layout.positions),
            ["conv2d_transpose (Conv2DTranspo (None, 56, 56, 512)  2097664     conv2d_9[0][0]                   "]
        );
        assert_eq!(
            legacy_row_lines(&concat, false, &layout.positions),
            [
                "concatenate (Concatenate)       (None, 56, 56, 1024) 0           cropping2d[0][0]                 ",
                "                                                                 conv2d_transpose[0][0]           ",
            ]
        );
    }

    #[test]
    fn layouts_scale_like_keras() {
        let at = |seq, style, len| Layout::new(seq, style, len).positions;
        assert_eq!(at(false, SummaryStyle::TfKeras, None), [29, 58, 68, 98]);
        assert_eq!(
            at(false, SummaryStyle::TfKeras, Some(200)),
            [60, 120, 140, 200]
        );
        assert_eq!(at(true, SummaryStyle::TfKeras, None), [29, 55, 65]);
        assert_eq!(at(true, SummaryStyle::Legacy, Some(200)), [90, 170, 200]);
    }

    #[test]
    fn totals_formatting() {
        assert_eq!(thousands(31030658), "31,030,658");
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(readable_memory_size(31030658 * 4), "118.37 MB");
        assert_eq!(readable_memory_size(0), "0.00 Byte");
        assert_eq!(readable_memory_size(138357544 * 4), "527.79 MB");
    }

    #[test]
    fn python_repr_of_connections() {
        let items = vec!["a[0][0]".to_string(), "b[0][0]".to_string()];
        assert_eq!(python_list_repr(&items), "['a[0][0]', 'b[0][0]']");
        assert_eq!(python_list_repr(&[]), "[]");
        assert_eq!(python_str_repr("it's"), "\"it's\"");
    }
}
