//! The summary renderer against what real Keras printed for the seed models
//! (`../shared/truth/<model>.summary.*.txt`), with rows and totals taken from `<model>.json`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde_json::Value;
use unetc::report::summary::{render, SummaryModel, SummaryRow, SummaryStyle};

/// Every model with a JSON file. `seed000_original.after_seed001_same_session` has summaries
/// only (its layer names differ from the JSON's fresh-session ones) and is covered elsewhere.
const MODELS: [&str; 7] = [
    "seed000_original",
    "seed001_original_second_post",
    "seed002_bn_same",
    "seed003_zhixuhao",
    "seed004_vgg16_unet",
    "seed004_vgg16_full",
    "seed004_resnet50_full",
];

fn truth_dir() -> Option<PathBuf> {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/truth"));
    if dir.is_dir() {
        Some(dir.to_path_buf())
    } else {
        println!("SKIP: ../shared/truth not found");
        None
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn as_u64(v: &Value, what: &str) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("{what}: expected an integer, got {v}"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("expected a list of strings")
        .iter()
        .map(|s| s.as_str().expect("expected a string").to_string())
        .collect()
}

fn summary_row(layer: &Value) -> SummaryRow {
    let class = layer["class"].as_str().expect("class").to_string();
    SummaryRow {
        name: layer["name"].as_str().expect("name").to_string(),
        output_shape: layer["output_shape"]
            .as_array()
            .expect("output_shape")
            .iter()
            .map(Value::as_u64)
            .collect(),
        extra_outputs: Vec::new(),
        multiple: false,
        is_input: class == "InputLayer",
        class,
        params: as_u64(&layer["params"], "params"),
        connected_to: strings(&layer["connected_to"]),
    }
}

/// Keras prints 3 columns when the graph is a single chain: one input, no layer with more than
/// one inbound layer, and no layer feeding more than one other layer.
fn is_chain(layers: &[Value]) -> bool {
    let inbound: Vec<Vec<String>> = layers.iter().map(|l| strings(&l["inbound"])).collect();
    let sources = inbound.iter().filter(|i| i.is_empty()).count();
    let mut fed = HashSet::new();
    let single_consumer = inbound.iter().flatten().all(|name| fed.insert(name));
    sources == 1 && inbound.iter().all(|i| i.len() <= 1) && single_consumer
}

fn summary_model(json: &Value) -> SummaryModel {
    let layers = json["layers"].as_array().expect("layers");
    let totals = &json["totals"];
    SummaryModel {
        name: json["model_name"].as_str().expect("model_name").to_string(),
        rows: layers.iter().map(summary_row).collect(),
        sequential_like: is_chain(layers),
        total_params: as_u64(&totals["total"], "total"),
        trainable_params: as_u64(&totals["trainable"], "trainable"),
        non_trainable_params: as_u64(&totals["non_trainable"], "non_trainable"),
        // Every weight of these models is float32.
        trainable_bytes: as_u64(&totals["trainable"], "trainable") * 4,
        non_trainable_bytes: as_u64(&totals["non_trainable"], "non_trainable") * 4,
    }
}

/// Describes the first difference between two texts, showing both lines with `{:?}` so
/// trailing spaces are visible; None when they are equal.
fn first_difference(expected: &str, got: &str) -> Option<String> {
    if expected == got {
        return None;
    }
    let (mut want, mut have) = (expected.split_inclusive('\n'), got.split_inclusive('\n'));
    for line_no in 1.. {
        match (want.next(), have.next()) {
            (Some(w), Some(h)) if w == h => continue,
            (w, h) => {
                return Some(format!(
                    "first difference at line {line_no}:\n  expected: {w:?}\n  got:      {h:?}"
                ))
            }
        }
    }
    unreachable!("texts differ, so some line differs")
}

/// Renders every model in one style and compares it with `<model>.<suffix>`; reports all
/// mismatches at once.
fn check_all(style: SummaryStyle, line_length: Option<usize>, suffix: &str) {
    let Some(dir) = truth_dir() else { return };
    let failures: Vec<String> = MODELS
        .iter()
        .filter_map(|model| {
            let json: Value = serde_json::from_str(&read(&dir.join(format!("{model}.json"))))
                .unwrap_or_else(|e| panic!("{model}.json: {e}"));
            let expected = read(&dir.join(format!("{model}.{suffix}")));
            let got = render(&summary_model(&json), style, line_length);
            first_difference(&expected, &got).map(|diff| format!("{model}.{suffix}: {diff}"))
        })
        .collect();
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

#[test]
fn legacy_default_width_matches_truth() {
    check_all(SummaryStyle::Legacy, None, "summary.legacy98.txt");
}

#[test]
fn tf_keras_default_width_matches_truth() {
    check_all(SummaryStyle::TfKeras, None, "summary.default.txt");
}

#[test]
fn tf_keras_line_length_200_matches_truth() {
    check_all(SummaryStyle::TfKeras, Some(200), "summary.txt");
}

#[test]
fn only_vgg16_full_is_a_chain() {
    let Some(dir) = truth_dir() else { return };
    for model in MODELS {
        let json: Value = serde_json::from_str(&read(&dir.join(format!("{model}.json")))).unwrap();
        let layers = json["layers"].as_array().unwrap();
        assert_eq!(is_chain(layers), model == "seed004_vgg16_full", "{model}");
    }
}
