//! The worked example of the README (the original U-Net, in the DSL and in YAML) really
//! compiles, and to the same model as specs/original.unet.

mod common;

use common::*;
use std::path::Path;
use unetc::diag::render_plain;
use unetc::expand::Session;
use unetc::report::summary::{render, SummaryStyle};
use unetc::{compile_source, report, Options};

/// Fenced blocks of the README with the given info string, after the language heading.
fn blocks(lang: &str) -> Vec<String> {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let section = readme
        .split("## The spec language")
        .nth(1)
        .expect("language section");
    let fence = format!("```{lang}\n");
    section
        .split(&fence)
        .skip(1)
        .map(|b| b.split("```").next().unwrap_or("").to_string())
        .collect()
}

fn summary_of(name: &str, text: &str) -> String {
    let c = compile_source(
        Path::new(name),
        text.to_string(),
        &Options::default(),
        &mut Session::new(),
    );
    assert!(!c.has_errors(), "{}", render_plain(&c.sources, &c.diags));
    render(&report::summary_model(&c), SummaryStyle::Legacy, None)
}

#[test]
fn readme_examples_build_the_original_unet() {
    let reference = render(
        &report::summary_model(&compile(Path::new("specs/original.unet"))),
        SummaryStyle::Legacy,
        None,
    );
    let dsl: Vec<String> = blocks("")
        .into_iter()
        .filter(|b| b.trim_start().starts_with("# seed 000"))
        .collect();
    let yaml = blocks("yaml");
    assert!(
        !dsl.is_empty() && !yaml.is_empty(),
        "README lost its worked examples"
    );
    for b in &dsl {
        assert_eq!(summary_of("readme.unet", b), reference);
    }
    for b in &yaml {
        if b.contains("model:") || b.contains("unet:") {
            assert_eq!(summary_of("readme.yaml", b), reference);
        }
    }
}
