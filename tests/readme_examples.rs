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

/// The README's sample `check` output is what `check` prints: the lines before its `...` begin
/// the output, the lines after it end it.
#[test]
fn readme_check_sample_is_what_check_prints() {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let sample = readme
        .split("$ unetc check specs/original.unet\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the README shows `$ unetc check specs/original.unet`");
    let (head, tail) = sample
        .split_once("...\n")
        .expect("the sample elides the middle with `...`");
    // Keras pads its table rows with spaces; the README does not keep trailing spaces.
    let printed: String = check_text(
        &compile(Path::new("specs/original.unet")),
        SummaryStyle::Legacy,
    )
    .lines()
    .map(|l| format!("{}\n", l.trim_end()))
    .collect();
    assert!(
        printed.starts_with(head),
        "README head:\n{head}\nprinted:\n{printed}"
    );
    assert!(
        printed.ends_with(tail),
        "README tail:\n{tail}\nprinted:\n{printed}"
    );
}

#[test]
fn readme_plan_train_figures_are_what_plan_train_prints() {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let (code, out, err) = unetc_cli(&[
        "plan",
        "specs/zhixuhao.unet",
        "--train",
        "--batch-size",
        "2",
    ]);
    assert_eq!(code, 0, "{err}");
    let summary: Vec<&str> = out.lines().rev().take(2).collect();
    for line in summary {
        assert!(
            readme.contains(&format!("  {line}\n")),
            "README (Training, Memory) does not show `unetc plan --train`'s line:\n{line}"
        );
    }
}
