//! File-driven tests over specs/: snapshots of `check` (text and JSON), byte-for-byte
//! comparison with what real tf.keras printed (../shared/truth), and YAML == DSL.

mod common;

use common::*;
use std::path::Path;
use unetc::diag::render_plain;
use unetc::report::summary::SummaryStyle;

/// Snapshot of `unetc check` (diagnostics, summary, extras) and of `--format json` for every spec.
/// Not the library's (specs/library/): tests/spec_library.rs holds each of those to the summary
/// and layer configs of its Keras reference, and their snapshots would be megabytes.
#[test]
fn snapshots_of_every_spec() {
    for rel in spec_files()
        .into_iter()
        .filter(|rel| !rel.starts_with("specs/library"))
    {
        let c = compile(&rel);
        let name = rel.with_extension("").to_string_lossy().replace('/', "__")
            + "_"
            + rel.extension().unwrap().to_str().unwrap();
        let mut text = render_plain(&c.sources, &c.diags);
        if !c.has_errors() {
            text.push_str(&check_text(&c, SummaryStyle::Legacy));
        }
        insta::assert_snapshot!(format!("{name}__text"), text);
        let json = serde_json::to_string_pretty(&unetc::report::json::check_json(&c)).unwrap();
        insta::assert_snapshot!(format!("{name}__json"), json);
    }
}

/// (spec without extension, truth model) for every spec that reproduces a seed model.
const SEED_SPECS: &[(&str, &str)] = &[
    ("specs/original", "seed000_original"),
    ("specs/template_original", "seed000_original"),
    ("specs/original_second_post", "seed001_original_second_post"),
    ("specs/bn_same", "seed002_bn_same"),
    ("specs/template_bn_same", "seed002_bn_same"),
    ("specs/zhixuhao", "seed003_zhixuhao"),
    ("specs/template_zhixuhao", "seed003_zhixuhao"),
    ("specs/vgg16_unet", "seed004_vgg16_unet"),
    ("specs/backbones/vgg16", "seed004_vgg16_full"),
    ("specs/backbones/resnet50", "seed004_resnet50_full"),
];

fn assert_matches_truth(rel: &Path, got: &str, truth_file: &Path) {
    let want = std::fs::read_to_string(truth_file).expect("truth file");
    let keras_part = &got[..got.len().min(want.len())];
    if keras_part != want {
        let line = keras_part
            .lines()
            .zip(want.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        panic!(
            "{} differs from {} at line {}:\n  got:  {:?}\n  want: {:?}",
            rel.display(),
            truth_file.display(),
            line + 1,
            keras_part.lines().nth(line).unwrap_or(""),
            want.lines().nth(line).unwrap_or("")
        );
    }
    // After the Keras part come unetc's own lines, and nothing else.
    assert!(
        got[want.len()..].starts_with("MACs per image: "),
        "{}",
        rel.display()
    );
}

#[test]
fn summaries_match_tf_keras_byte_for_byte() {
    let Some(truth) = shared("truth") else { return };
    let mut checked = 0;
    for (stem, model) in SEED_SPECS {
        for ext in ["unet", "yaml"] {
            let rel = Path::new(stem).with_extension(ext);
            if !common::root().join(&rel).exists() {
                continue;
            }
            let c = compile(&rel);
            for (style, suffix) in [
                (SummaryStyle::Legacy, "summary.legacy98.txt"),
                (SummaryStyle::TfKeras, "summary.default.txt"),
            ] {
                assert_matches_truth(
                    &rel,
                    &check_text(&c, style),
                    &truth.join(format!("{model}.{suffix}")),
                );
                checked += 1;
            }
        }
    }
    // Every seed model in both formats, both styles (template specs on top).
    assert!(checked >= 7 * 2 * 2, "only {checked} comparisons ran");
}

#[test]
fn line_length_200_matches_tf_keras() {
    let Some(truth) = shared("truth") else { return };
    for (stem, model) in SEED_SPECS {
        let rel = Path::new(stem).with_extension("unet");
        if !common::root().join(&rel).exists() {
            continue;
        }
        let c = compile(&rel);
        let got = unetc::report::summary::render(
            &unetc::report::summary_model(&c),
            SummaryStyle::TfKeras,
            Some(200),
        );
        let want = std::fs::read_to_string(truth.join(format!("{model}.summary.txt"))).unwrap();
        assert_eq!(got, want, "{}", rel.display());
    }
}

/// Document 000 was printed after document 001's model in one session: with the same history,
/// unetc prints document 000's names too.
#[test]
fn seed000_after_seed001_in_one_session() {
    let Some(truth) = shared("truth") else { return };
    let c = compile_after(
        Path::new("specs/original.unet"),
        &[Path::new("specs/original_second_post.yaml")],
    );
    assert_matches_truth(
        Path::new("specs/original.unet"),
        &check_text(&c, SummaryStyle::Legacy),
        &truth.join("seed000_original.after_seed001_same_session.summary.legacy98.txt"),
    );
}

fn canonical(rel: &Path) -> String {
    let c = compile(rel);
    assert!(!c.has_errors(), "{}", render_plain(&c.sources, &c.diags));
    canonical_graph(&c)
}

#[test]
fn yaml_and_dsl_forms_expand_to_the_same_graph() {
    let mut pairs = 0;
    for rel in spec_files() {
        if rel.extension().and_then(|e| e.to_str()) != Some("unet") {
            continue;
        }
        let yaml = rel.with_extension("yaml");
        if !common::root().join(&yaml).exists() {
            continue;
        }
        assert_eq!(
            canonical(&rel),
            canonical(&yaml),
            "{} vs {}",
            rel.display(),
            yaml.display()
        );
        pairs += 1;
    }
    assert!(pairs >= 7, "only {pairs} YAML/DSL pairs");
}

/// The `unet` template builds exactly the graph the hand-written Keras code builds.
#[test]
fn template_specs_expand_to_the_hand_written_graphs() {
    for (template, hand) in [
        ("specs/template_original.yaml", "specs/original.unet"),
        ("specs/template_bn_same.unet", "specs/bn_same.unet"),
        ("specs/template_zhixuhao.yaml", "specs/zhixuhao.unet"),
    ] {
        if common::root().join(template).exists() {
            assert_eq!(
                canonical(Path::new(template)),
                canonical(Path::new(hand)),
                "{template} vs {hand}"
            );
        }
    }
}

/// Issue 11: the template's up layer takes none of `conv`'s settings (the `upsample` conv used
/// to take its activation and initializer, silently): it is exactly the README's
/// `up_sampling2d(2) -> conv2d(f, 2, padding: same)` or `conv2d_transpose(f, 2, strides: 2)`,
/// plus what `up: {...}` gives.
#[test]
fn the_template_up_layer_is_what_the_readme_says() {
    let compile = |name: &str, text: &str| {
        let c = unetc::compile_source(
            Path::new(name),
            text.to_string(),
            &unetc::Options::default(),
            &mut unetc::expand::Session::new(),
        );
        assert!(!c.has_errors(), "{}", render_plain(&c.sources, &c.diags));
        canonical_graph(&c)
    };
    let conv = "kernel_size: 3, padding: same, activation: relu, kernel_initializer: he_normal, use_bias: false";
    for (up, up_layer) in [
        (
            "upsample",
            "up_sampling2d(2) -> conv2d(f, 2, padding: same)",
        ),
        ("transpose", "conv2d_transpose(f, 2, strides: 2)"),
        (
            "{mode: upsample, activation: relu}",
            "up_sampling2d(2) -> conv2d(f, 2, padding: same, activation: relu)",
        ),
    ] {
        let template = compile(
            "t.unet",
            &format!("model {{\n  unet(input: 32x32x1, depth: 2, filters: 8, conv: {{{conv}}}, up: {up}, skip: {{crop: none}})\n}}\n"),
        );
        let hand = compile(
            "h.unet",
            &format!(
                "model {{
  input 32x32x1
  block double(f) {{ conv2d(f, {conv}) -> conv2d(f, {conv}) }}
  for f in [8, 16] {{ skip[f] = double(f); max_pooling2d(pool_size: (2, 2)) }}
  double(32)
  for f in [16, 8] {{
    up = {up_layer}
    [skip[f], up] -> concatenate() -> double(f)
  }}
  conv2d(2, 1, activation: softmax)
}}
"
            ),
        );
        assert_eq!(template, hand, "up: {up}");
    }
}
