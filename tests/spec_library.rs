//! The spec library (specs/library/): named U-Net variants written in the spec language, each
//! printing exactly what `model.summary()` printed for its reference Keras implementation
//! (specs/library/generate.py wrote `<name>.summary.txt` from real tf.keras), in both formats,
//! with the reference's layer configs, and running as the reference ran.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use unetc::diag::SourceMap;
use unetc::front::{parse, Format};
use unetc::report::summary::SummaryStyle;

/// Every variant in the library; `every_library_spec_is_listed` keeps this complete.
const LIBRARY: &[&str] = &[
    "attention_unet",
    "resunet",
    "unet_plus_plus",
    "r2_unet",
    "unet_3plus",
    "mobilenetv2_unet",
    "unet3d",
    "vnet",
    "transunet",
    "swin_unet",
];

fn library_dir() -> PathBuf {
    root().join("specs/library")
}

#[test]
fn every_library_spec_prints_its_reference_summary_in_both_formats() {
    let mut compared = 0;
    for name in LIBRARY {
        let want = std::fs::read_to_string(library_dir().join(format!("{name}.summary.txt")))
            .unwrap_or_else(|e| panic!("{name}: reference summary: {e}"));
        for ext in ["unet", "yaml"] {
            let rel = Path::new("specs/library").join(format!("{name}.{ext}"));
            let got = check_text(&compile(&rel), SummaryStyle::TfKeras);
            let keras_part = &got[..got.len().min(want.len())];
            if keras_part != want {
                let line = keras_part
                    .lines()
                    .zip(want.lines())
                    .position(|(a, b)| a != b)
                    .unwrap_or_else(|| keras_part.lines().count());
                panic!(
                    "{} differs from Keras's summary at line {}:\n  unetc: {:?}\n  keras: {:?}",
                    rel.display(),
                    line + 1,
                    keras_part.lines().nth(line).unwrap_or("<end>"),
                    want.lines().nth(line).unwrap_or("<end>")
                );
            }
            // After Keras's table come unetc's own lines, nothing else.
            assert!(
                got[want.len()..].starts_with("MACs per image: "),
                "{}",
                rel.display()
            );
            compared += 1;
        }
    }
    assert_eq!(compared, LIBRARY.len() * 2);
}

/// Each layer, by name: class, Keras config, inputs and trainable flag, as `canonical_graph`
/// writes them, sorted by name (the spec creates layers in Keras's call order, the JSON lists
/// them in summary order).
fn layers_by_name(c: &unetc::Compiled) -> Vec<String> {
    let canonical = canonical_graph(c);
    let mut lines = canonical.lines();
    let header = lines.next().unwrap_or_default().to_string();
    let mut layers: Vec<String> = lines.map(String::from).collect();
    layers.sort();
    layers.insert(0, header);
    layers
}

/// Beyond the summary (names, shapes, parameters, connections): every layer's Keras config is
/// the reference model's, as `unetc import` reads its `to_json()` (generate.py wrote it), so
/// epsilons, momenta, initializers, paddings and interpolations are the reference's too.
#[test]
fn every_library_spec_has_the_reference_layer_configs() {
    for name in LIBRARY {
        let json = std::fs::read_to_string(library_dir().join(format!("{name}.json"))).unwrap();
        let imported = unetc::interop::keras::import_json(&json)
            .unwrap_or_else(|e| panic!("{name}: import: {e}"));
        let reference = unetc::compile_source(
            Path::new(&format!("{name}.unet")),
            imported,
            &unetc::Options::default(),
            &mut unetc::expand::Session::new(),
        );
        assert!(
            !reference.has_errors(),
            "{name}: the imported reference has errors"
        );
        let want = layers_by_name(&reference);
        let got = layers_by_name(&compile(
            &Path::new("specs/library").join(format!("{name}.unet")),
        ));
        assert_eq!(got.len(), want.len(), "{name}: layer count");
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g, w, "{name}: a layer differs from the reference's");
        }
    }
}

/// The reference at a small input with the formula's weights (generate.py ran it in tf.keras):
/// the CPU executor gives the same output within 1e-5 of its largest value.
#[test]
fn every_library_spec_runs_as_its_reference_on_the_cpu() {
    for name in LIBRARY {
        let rel = Path::new("specs/library").join(format!("{name}.unet"));
        let c = compile_small(&rel);
        assert!(!c.has_errors(), "{name}");
        let (input, want) = io_tensors(&library_dir().join(format!("{name}.io.safetensors")));
        assert_eq!(
            input.shape[1..],
            small_input(name)
                .expect("a small size")
                .iter()
                .map(|&d| d as usize)
                .collect::<Vec<_>>()[..],
            "{name}: the recorded run is not at the spec's small size"
        );
        let got = unetc::exec::cpu::CpuModel::new(&c.graph, &c.info, &formula_weights(&c))
            .expect("bind")
            .run(&input)
            .expect("run")
            .remove(0);
        let err = rel_err(&got, &want);
        println!("{name}: CPU max relative error {err:.2e}");
        assert!(err <= 1e-5, "{name}: {err:.3e}");
    }
}

/// The YAML form is what `unetc convert --to yaml` makes of the DSL form, comments included, so
/// the two cannot drift apart.
#[test]
fn the_yaml_forms_are_the_converted_dsl_forms() {
    for name in LIBRARY {
        let rel = Path::new("specs/library").join(format!("{name}.unet"));
        let text = std::fs::read_to_string(root().join(&rel)).unwrap();
        let mut sources = SourceMap::new();
        let file = sources.add(&rel, text.clone());
        let spec = parse(Format::Dsl, file, &text).expect("library spec parses");
        let converted = unetc::emit::yaml::print(&spec, &text);
        let committed =
            std::fs::read_to_string(library_dir().join(format!("{name}.yaml"))).unwrap();
        assert_eq!(
            converted, committed,
            "{name}.yaml is not `unetc convert specs/library/{name}.unet --to yaml`"
        );
    }
}

/// Each spec opens with a comment naming the paper and the implementation it matches.
#[test]
fn every_library_spec_names_its_paper_and_reference() {
    for name in LIBRARY {
        for ext in ["unet", "yaml"] {
            let text =
                std::fs::read_to_string(library_dir().join(format!("{name}.{ext}"))).unwrap();
            let header: String = text
                .lines()
                .take_while(|l| l.starts_with('#'))
                .collect::<Vec<_>>()
                .join("\n");
            assert!(
                header.contains(" et al. ") || header.contains(" and "),
                "{name}.{ext}: the opening comment names no paper's authors:\n{header}"
            );
            assert!(
                header.contains("Matches "),
                "{name}.{ext}: the opening comment names no reference implementation:\n{header}"
            );
        }
    }
}

#[test]
fn every_library_spec_is_listed() {
    let mut found: Vec<String> = std::fs::read_dir(library_dir())
        .unwrap()
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".unet").map(String::from)
        })
        .collect();
    found.sort();
    let mut listed: Vec<String> = LIBRARY.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(found, listed);
}

/// The README's library table lists every spec with its real layer count and length.
#[test]
fn the_readme_table_is_true() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    for name in LIBRARY {
        let row = readme
            .lines()
            .find(|l| l.starts_with(&format!("| `{name}` |")))
            .unwrap_or_else(|| panic!("README: no library row for {name}"));
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        // "", spec, paper, reference, layers, lines, ""
        let c = compile(&Path::new("specs/library").join(format!("{name}.unet")));
        assert_eq!(cells[4], c.graph.nodes.len().to_string(), "{name}: layers");
        let text = std::fs::read_to_string(library_dir().join(format!("{name}.unet"))).unwrap();
        assert_eq!(cells[5], text.lines().count().to_string(), "{name}: lines");
    }
}
