//! `unetc import` checks the spec it is about to write: the importer's DSL compiles without
//! errors; the text in the form written (the DSL, or YAML printed from it) compiles to the same
//! summary (both layouts) and weights; for a Keras model the summary lists the model's own
//! layers, by name and class, in its `config.layers` order (the order Keras prints); for an
//! ONNX model the weights it brings are the ones the spec needs. A failure is a bug in unetc (or
//! a form the spec cannot express): the caller writes nothing.

use crate::diag::{render_plain, Severity};
use crate::expand::Session;
use crate::io::Weights;
use crate::report::summary::SummaryStyle;
use crate::{compile_source, Compiled, Options};
use serde_json::Value as Json;
use std::path::Path;

/// The top-level layers of a Keras model's `to_json()`, `(name, class)` in `config.layers`
/// order, classes as the summary prints them; empty if the JSON has no such list.
pub fn keras_layers(json: &str) -> Vec<(String, String)> {
    let Ok(root) = serde_json::from_str::<Json>(json) else {
        return Vec::new();
    };
    let sequential = root.get("class_name").and_then(Json::as_str) == Some("Sequential");
    let layers = root
        .get("config")
        .and_then(|c| c.get("layers"))
        .and_then(Json::as_array);
    layers
        .into_iter()
        .flatten()
        .filter_map(|l| {
            let class = l.get("class_name").and_then(Json::as_str)?;
            // The outer name, as the importer's (the config's differs for some classes).
            let name = l
                .get("name")
                .or_else(|| l.get("config").and_then(|c| c.get("name")))
                .and_then(Json::as_str)?;
            // A Sequential model's input layer is no row of its summary.
            if sequential && class == "InputLayer" {
                return None;
            }
            // tf.keras before 2.4 called a nested Functional model `Model`.
            let class = if class == "Model" {
                "Functional"
            } else {
                class
            };
            Some((name.to_string(), class.to_string()))
        })
        .collect()
}

fn compiled(name: &str, text: &str) -> Compiled {
    compile_source(
        Path::new(name),
        text.to_string(),
        &Options::default(),
        &mut Session::new(),
    )
}

/// Both summary layouts of a compiled spec.
fn summaries(c: &Compiled) -> String {
    let mut s = crate::report::check_text(c, SummaryStyle::TfKeras, None);
    s.push_str(&crate::report::check_text(c, SummaryStyle::Legacy, None));
    s
}

/// The first line where `a` and `b` differ, for the message.
fn first_difference(a: &str, b: &str) -> String {
    let (mut la, mut lb) = (a.lines(), b.lines());
    for line in 1.. {
        match (la.next(), lb.next()) {
            (None, None) => break,
            (x, y) if x == y => continue,
            (x, y) => {
                return format!(
                    "line {line}: `{}` vs `{}`",
                    x.unwrap_or("(end)").trim_end(),
                    y.unwrap_or("(end)").trim_end()
                )
            }
        }
    }
    "none".into()
}

/// What `unetc import` may write, checked (see the module's comment): `dsl` is what the
/// importer made; `yaml` asks for the YAML form. `keras_layers`: the model's own layers (Keras
/// import); `weights`: the weights written beside the spec (ONNX import). Returns the text to
/// write, or why not.
pub fn checked_spec(
    dsl: &str,
    yaml: bool,
    keras_layers: Option<&[(String, String)]>,
    weights: Option<&Weights>,
) -> Result<String, String> {
    let bug = |what: String| {
        format!(
            "internal error: the spec unetc made for this model {what}; nothing was written. \
             This is a bug in unetc's importer (or a form a spec cannot express): please report \
             it with the model file"
        )
    };
    let c = compiled("imported.unet", dsl);
    // What the model's own arguments ask and unetc does not run (a subscript of the height,
    // bicubic resizing, Normalization's constant mean, a tensor of more axes) is a limit of
    // unetc, not a bug of the importer, which wrote them as Keras gave them.
    let errors = || c.diags.iter().filter(|d| d.severity == Severity::Error);
    let limit = |code: &str| matches!(code, "E-subscript" | "E-arg-value" | "E-rank");
    if c.has_errors() && errors().all(|d| limit(d.code)) {
        return Err(format!(
            "unetc reads this model but does not run all of it:\n{}; nothing was written",
            render_plain(&c.sources, &c.diags).trim_end()
        ));
    }
    if c.has_errors() {
        return Err(bug(format!(
            "does not compile:\n{}",
            render_plain(&c.sources, &c.diags)
        )));
    }
    let want = summaries(&c);
    if let Some(layers) = keras_layers {
        let model = crate::report::summary_model(&c);
        let rows: Vec<(String, String)> = model
            .rows
            .iter()
            .map(|r| (r.name.clone(), r.class.clone()))
            .collect();
        if rows != layers {
            let at = rows
                .iter()
                .zip(layers)
                .position(|(a, b)| a != b)
                .unwrap_or(rows.len().min(layers.len()));
            let show = |v: Option<&(String, String)>| {
                v.map_or("(none)".to_string(), |(n, c)| format!("{n} ({c})"))
            };
            return Err(bug(format!(
                "prints other layers than the Keras model has: row {} is {}, Keras's layer {} is {} ({} rows, {} layers)",
                at + 1,
                show(rows.get(at)),
                at + 1,
                show(layers.get(at)),
                rows.len(),
                layers.len()
            )));
        }
    }
    if let Some(weights) = weights {
        let expected = crate::runner::expected_weights(&c);
        for e in &expected {
            match weights.get(&e.name) {
                Some(t) if t.shape == e.shape => {}
                Some(t) => {
                    return Err(bug(format!(
                        "needs `{}` of shape {:?}, but the imported weight is {:?}",
                        e.name, e.shape, t.shape
                    )))
                }
                None => {
                    return Err(bug(format!(
                        "needs the weight `{}`, which the import did not make",
                        e.name
                    )))
                }
            }
        }
        if expected.len() != weights.len() {
            return Err(bug(format!(
                "needs {} weight tensors, but the import made {}",
                expected.len(),
                weights.len()
            )));
        }
    }
    if !yaml {
        return Ok(dsl.to_string());
    }
    let mut sources = crate::diag::SourceMap::new();
    let file = sources.add(Path::new("imported.unet"), dsl.to_string());
    let parsed = crate::front::parse(crate::front::Format::Dsl, file, dsl).map_err(|d| {
        bug(format!(
            "cannot be read back:\n{}",
            render_plain(&sources, &d)
        ))
    })?;
    let text = crate::emit::yaml::print(&parsed, dsl);
    check_same(&c, &want, &text, "imported.yaml").map_err(|e| bug(format!("as YAML {e}")))?;
    Ok(text)
}

/// `text` (a spec in the form of `name`'s extension) compiles to the summaries `want` and the
/// weights of `reference`.
pub fn check_same(reference: &Compiled, want: &str, text: &str, name: &str) -> Result<(), String> {
    let c = compiled(name, text);
    if c.has_errors() {
        return Err(format!(
            "does not compile:\n{}",
            render_plain(&c.sources, &c.diags)
        ));
    }
    let got = summaries(&c);
    if got != want {
        return Err(format!(
            "prints another summary than the model it was made from: {}",
            first_difference(&got, want)
        ));
    }
    let names = |c: &Compiled| -> Vec<(String, Vec<usize>)> {
        crate::runner::expected_weights(c)
            .into_iter()
            .map(|e| (e.name, e.shape))
            .collect()
    };
    if names(&c) != names(reference) {
        return Err("needs other weights than the model it was made from".into());
    }
    Ok(())
}
