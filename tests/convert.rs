//! `unetc convert` and `unetc fmt`: every spec printed as DSL and as YAML parses back to the same
//! layer graph, and formatting is idempotent.

mod common;

use common::*;
use std::path::Path;
use unetc::diag::{render_plain, SourceMap};
use unetc::expand::Session;
use unetc::front::{parse, Format};
use unetc::{compile_source, Options};

fn canonical(path: &Path, text: &str) -> String {
    let c = compile_source(
        path,
        text.to_string(),
        &Options::default(),
        &mut Session::new(),
    );
    assert!(
        !c.has_errors(),
        "{}:\n{}\n{text}",
        path.display(),
        render_plain(&c.sources, &c.diags)
    );
    canonical_graph(&c)
}

fn printed(rel: &Path, to: Format) -> String {
    let text = std::fs::read_to_string(root().join(rel)).unwrap();
    let mut sources = SourceMap::new();
    let file = sources.add(rel, text.clone());
    let spec = parse(Format::of_path(rel), file, &text).expect("spec parses");
    match to {
        Format::Dsl => unetc::emit::dsl::print(&spec, &text),
        Format::Yaml => unetc::emit::yaml::print(&spec, &text),
    }
}

#[test]
fn every_spec_round_trips_through_both_forms() {
    for rel in spec_files() {
        let original = canonical(
            &root().join(&rel),
            &std::fs::read_to_string(root().join(&rel)).unwrap(),
        );
        // Printed files sit beside the original, so includes resolve the same way.
        for (to, ext) in [(Format::Dsl, "unet"), (Format::Yaml, "yaml")] {
            let text = printed(&rel, to);
            let path = root().join(rel.with_extension(format!("roundtrip.{ext}")));
            assert_eq!(
                canonical(&path, &text),
                original,
                "{} as {ext}:\n{text}",
                rel.display()
            );
        }
    }
}

/// The 3-D specs (volume inputs `DxHxWxC`, the 3-D kinds' triples and nested croppings, the
/// template's `dims: 3`, `cropping3d(to:)`) print as DSL and as YAML and parse back to the same
/// graph.
#[test]
fn volume_specs_round_trip_through_both_forms() {
    for rel in [
        "tests/golden/edge_3d.unet",
        "tests/golden/unet3d_small.unet",
        "tests/golden/unet3d_valid.unet",
        "tests/fixtures/template_unet3d.unet",
        "tests/fixtures/template_unet3d_valid.yaml",
        "tests/fixtures/volume_pytorch_modes.yaml",
        "tests/fixtures/volume_trilinear.unet",
    ] {
        let rel = Path::new(rel);
        let original = canonical(
            &root().join(rel),
            &std::fs::read_to_string(root().join(rel)).unwrap(),
        );
        for (to, ext) in [(Format::Dsl, "unet"), (Format::Yaml, "yaml")] {
            let text = printed(rel, to);
            let path = root().join(rel.with_extension(format!("roundtrip.{ext}")));
            assert_eq!(
                canonical(&path, &text),
                original,
                "{} as {ext}:\n{text}",
                rel.display()
            );
        }
    }
}

#[test]
fn fmt_is_idempotent_and_keeps_comments() {
    for rel in spec_files()
        .into_iter()
        .filter(|r| r.extension().is_some_and(|e| e == "unet"))
    {
        let once = printed(&rel, Format::Dsl);
        let mut sources = SourceMap::new();
        let file = sources.add(&rel, once.clone());
        let spec = parse(Format::Dsl, file, &once).expect("formatted spec parses");
        let twice = unetc::emit::dsl::print(&spec, &once);
        assert_eq!(once, twice, "{}", rel.display());
        let original = std::fs::read_to_string(root().join(&rel)).unwrap();
        for comment in original
            .lines()
            .filter_map(|l| l.trim_start().strip_prefix('#'))
        {
            assert!(
                once.contains(comment.trim_end()),
                "{}: lost comment {comment:?}",
                rel.display()
            );
        }
    }
}
