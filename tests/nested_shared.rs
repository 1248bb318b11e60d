//! Issue 12: nested models (a Functional or Sequential model used as a layer) and shared layers
//! (one layer called on several tensors). Expected summaries and outputs are tf.keras's, recorded
//! by tests/real_models/generate.py (tf_tutorial_unet: the TensorFlow segmentation tutorial's
//! U-Net; shared_layers_unet: a U-Net whose layers are called more than once).

mod common;

use common::*;
use std::path::Path;
use unetc::diag::{render_plain, SourceMap};
use unetc::exec::cpu::CpuModel;
use unetc::expand::Session;
use unetc::front::{parse, Format};
use unetc::io::load_weights;
use unetc::ir::NestedClass;
use unetc::report::summary::SummaryStyle;
use unetc::runner::expected_weights;
use unetc::{compile_source, Compiled, Options};

fn compiled(name: &str, text: &str) -> Compiled {
    compile_source(
        Path::new(name),
        text.to_string(),
        &Options::default(),
        &mut Session::new(),
    )
}

fn ok(name: &str, text: &str) -> Compiled {
    let c = compiled(name, text);
    assert!(
        !c.has_errors(),
        "{name}:\n{}\n{text}",
        render_plain(&c.sources, &c.diags)
    );
    c
}

fn errors(name: &str, text: &str) -> String {
    let c = compiled(name, text);
    assert!(c.has_errors(), "{name}: expected an error\n{text}");
    render_plain(&c.sources, &c.diags)
}

/// `c` prints tf.keras's summary of `stem` and computes its `model.predict` within 1e-5.
fn prints_and_runs_as_keras(what: &str, c: &Compiled, stem: &str) {
    let dir = root().join("tests/real_models");
    let keras = std::fs::read_to_string(dir.join(format!("{stem}.summary.txt"))).unwrap();
    let printed = check_text(c, SummaryStyle::TfKeras);
    assert!(
        printed.starts_with(&keras),
        "{what}: summary differs from Keras's\n--- unetc\n{printed}\n--- keras\n{keras}"
    );
    let weights = load_weights(
        &dir.join(format!("{stem}.weights.safetensors")),
        &expected_weights(c),
    )
    .expect("tf.keras's weights fit");
    let (inputs, want) = io_inputs(&dir.join(format!("{stem}.io.safetensors")));
    let got = CpuModel::new(&c.graph, &c.info, &weights)
        .expect("bind")
        .run_inputs(&inputs)
        .expect("run")
        .remove(0);
    let err = rel_err(&got, &want);
    println!("{what}: summary identical, CPU max relative error {err:.2e}");
    assert!(err <= 1e-5, "{what}: {err:.3e}");
}

/// The spec printed as DSL and as YAML (`fmt`, `convert`) builds the same nested/shared graph.
fn round_trips(name: &str, text: &str) {
    let want = canonical_graph(&ok(name, text));
    let path = Path::new(name);
    let mut sources = SourceMap::new();
    let file = sources.add(path, text.to_string());
    let spec = parse(Format::of_path(path), file, text).expect("parses");
    let dsl = unetc::emit::dsl::print(&spec, text);
    let yaml = unetc::emit::yaml::print(&spec, text);
    assert_eq!(canonical_graph(&ok("p.unet", &dsl)), want, "as DSL:\n{dsl}");
    assert_eq!(
        canonical_graph(&ok("p.yaml", &yaml)),
        want,
        "as YAML:\n{yaml}"
    );
}

#[test]
fn the_tutorial_unet_written_with_nested_models_is_keras_s() {
    for ext in ["unet", "yaml"] {
        let rel = format!("specs/tf_tutorial_unet.{ext}");
        let c = compile(Path::new(&rel));
        assert!(!c.has_errors(), "{}", render_plain(&c.sources, &c.diags));
        let scopes: Vec<(&str, NestedClass, usize)> = c
            .graph
            .scopes
            .iter()
            .map(|s| (s.name.as_str(), s.class, s.outputs.len()))
            .collect();
        assert_eq!(
            scopes,
            [
                ("model", NestedClass::Functional, 5),
                ("sequential", NestedClass::Sequential, 1),
                ("sequential_1", NestedClass::Sequential, 1),
                ("sequential_2", NestedClass::Sequential, 1),
                ("sequential_3", NestedClass::Sequential, 1),
            ]
        );
        // Keras's auto-names are global across nested models.
        let last = c.graph.node(c.graph.outputs[0]);
        assert_eq!(last.name, "conv2d_transpose_4");
        prints_and_runs_as_keras(&rel, &c, "tf_tutorial_unet");
    }
    let text = std::fs::read_to_string(root().join("specs/tf_tutorial_unet.unet")).unwrap();
    round_trips("tf_tutorial_unet.unet", &text);
}

/// The encoder in a file of its own, included as a nested model (`include ... (nested:
/// functional)`): the same model, summary and numbers.
#[test]
fn a_spec_included_as_a_nested_model_is_keras_s() {
    let rel = "tests/fixtures/nested/tutorial_include.unet";
    let c = compile(Path::new(rel));
    assert!(!c.has_errors(), "{}", render_plain(&c.sources, &c.diags));
    assert_eq!(c.graph.scopes[0].name, "model");
    assert_eq!(c.graph.scopes[0].input_names, ["input_1"]);
    prints_and_runs_as_keras(rel, &c, "tf_tutorial_unet");
}

#[test]
fn import_keeps_nested_models_nested() {
    let json =
        std::fs::read_to_string(root().join("tests/real_models/tf_tutorial_unet.json")).unwrap();
    let spec = unetc::interop::keras::import_json(&json).expect("imports");
    assert_eq!(spec.matches(" as functional {").count(), 1, "{spec}");
    assert_eq!(spec.matches(" as sequential {").count(), 4, "{spec}");
    let c = ok("imported.unet", &spec);
    let classes: Vec<(&str, NestedClass)> = c
        .graph
        .scopes
        .iter()
        .map(|s| (s.name.as_str(), s.class))
        .collect();
    assert_eq!(classes[0], ("model", NestedClass::Functional));
    assert_eq!(c.graph.scopes[0].input_names, ["input_1"]);
    // The imported spec survives fmt and convert with its nesting.
    round_trips("imported.unet", &spec);
}

#[test]
fn shared_layers_print_and_run_as_keras() {
    let text = std::fs::read_to_string(root().join("specs/shared_layers_unet.unet")).unwrap();
    let c = ok("shared.unet", &text);
    let calls: Vec<&str> = c
        .graph
        .nodes
        .iter()
        .filter(|n| n.shares.is_some())
        .map(|n| n.name.as_str())
        .collect();
    assert_eq!(calls, ["max_pooling2d[1]", "conv2d_2[1]", "conv2d_4[1]"]);
    // Parameters are counted once per layer, as Keras counts them (6,881).
    assert_eq!(c.info.totals(&c.graph).params, 6881);
    prints_and_runs_as_keras("shared.unet", &c, "shared_layers_unet");
    round_trips("shared.unet", &text);
    let json =
        std::fs::read_to_string(root().join("tests/real_models/shared_layers_unet.json")).unwrap();
    let spec = unetc::interop::keras::import_json(&json).expect("imports");
    assert_eq!(spec.matches("-> shared(").count(), 3, "{spec}");
    assert_eq!(
        canonical_graph(&ok("imported.unet", &spec)),
        canonical_graph(&c),
        "import builds the same graph as the spec"
    );
}

#[test]
fn nested_and_shared_misuse_is_reported() {
    let e = errors(
        "a.unet",
        "model {\n  input 8x8x3\n  x = conv2d(4, 3)\n  x -> shared(nope)\n}\n",
    );
    assert!(
        e.contains("E-shared") && e.contains("not a layer defined before"),
        "{e}"
    );
    let e = errors(
        "b.unet",
        "model {\n  i = input(shape: 8x8x3)\n  x = conv2d(4, 3)\n  x -> shared(i)\n}\n",
    );
    assert!(e.contains("an input layer cannot be called"), "{e}");
    // Weights made for 3 channels cannot take 4.
    let e = errors(
        "c.unet",
        "model {\n  input 8x8x3\n  c = conv2d(4, 3, padding: same)\n  c -> shared(c)\n}\n",
    );
    assert!(
        e.contains("E-shared") && e.contains("needs other weights"),
        "{e}"
    );
    let e = errors(
        "d.unet",
        "model {\n  block two() as functional {\n    a = input(shape: 8x8x3)\n    b = input(shape: 8x8x3)\n    [a, b] -> add()\n  }\n  input 8x8x3\n  two()\n}\n",
    );
    assert!(e.contains("more `input` layers than tensors"), "{e}");
    assert_eq!(
        e.matches("error[").count(),
        1,
        "one error, no follow-on: {e}"
    );
    // Keras builds a nested model's layers for its inputs' rank and channels; another size it
    // runs (with a warning).
    let nested = |shape: &str| {
        format!("model {{\n  block m() as functional {{\n    input(shape: {shape})\n    conv2d(4, 3)\n  }}\n  input 8x8x3\n  m()\n}}\n")
    };
    let e = errors(
        "j.unet",
        "model {\n  block m() as functional {\n    input(shape: 8x8x3)\n    conv2d(4, 3, name: \"hidden\")\n    conv2d(4, 3)\n  }\n  input 8x8x3\n  m()\n  hidden -> conv2d(2, 1)\n}\n",
    );
    assert!(
        e.contains("E-nested-ref") && e.contains("not one of its outputs"),
        "{e}"
    );
    let e = errors("h.unet", &nested("8x8x5"));
    assert!(
        e.contains("E-nested-input") && e.contains("takes (None, 8, 8, 5)"),
        "{e}"
    );
    let c = ok("i.unet", &nested("16x16x3"));
    let warned = render_plain(&c.sources, &c.diags);
    assert!(warned.contains("W-nested-input"), "{warned}");
    let e = errors(
        "e.unet",
        "model {\n  block m() as functional { conv2d(4, 3) }\n  input 8x8x3\n  m(name: \"x\")\n  m(name: \"x\")\n}\n",
    );
    assert!(e.contains("E-duplicate-name"), "{e}");
    let e = errors(
        "f.unet",
        "model {\n  block m() as dense { conv2d(4, 3) }\n  input 8x8x3\n  m()\n}\n",
    );
    assert!(e.contains("expected `functional` or `sequential`"), "{e}");
    let e = errors(
        "g.yaml",
        "model:\n  blocks:\n    m:\n      as: dense\n      layers:\n        - conv2d: 4\n  layers:\n    - input: [8, 8, 3]\n    - m: []\n",
    );
    assert!(e.contains("`functional` or `sequential`"), "{e}");
}

/// A nested model called on two images (siamese change-detection U-Nets): tf.keras's JSON
/// imports with the second call as `shared(model)`, prints Keras's one row connected to both
/// calls (`encoder[1][k]` downstream), holds one set of weights and runs as `model.predict`.
/// specs/siamese_unet.unet writes the same model by hand.
#[test]
fn a_nested_model_called_twice_is_keras_s() {
    for (stem, model, layers_per_call) in [
        ("siamese_unet", "encoder", 11),
        ("siamese_sequential", "stem", 3),
    ] {
        let json =
            std::fs::read_to_string(root().join(format!("tests/real_models/{stem}.json"))).unwrap();
        let spec = unetc::interop::keras::import_json(&json).expect("imports");
        assert_eq!(spec.matches("-> shared(").count(), 1, "{spec}");
        let c = ok("imported.unet", &spec);
        // Two calls of one model: the second's scope and layers point at the first's.
        let calls: Vec<(&str, Option<u32>)> = c
            .graph
            .scopes
            .iter()
            .map(|s| (s.name.as_str(), s.shares.map(|o| o.0)))
            .collect();
        assert_eq!(calls, [(model, None), (model, Some(0))], "{stem}");
        let copies = c.graph.nodes.iter().filter(|n| n.shares.is_some()).count();
        assert_eq!(
            copies, layers_per_call,
            "{stem}: one copy per layer of the model"
        );
        // One set of weights: every weight name belongs to a first call (no `[k]` names).
        let names = expected_weights(&c);
        assert!(
            names.iter().all(|e| !e.name.contains('[')),
            "{stem}: {:?}",
            names.iter().map(|e| &e.name).collect::<Vec<_>>()
        );
        prints_and_runs_as_keras(stem, &c, stem);
        round_trips("imported.unet", &spec);
    }
    for ext in ["unet", "yaml"] {
        let rel = format!("specs/siamese_unet.{ext}");
        let c = compile(Path::new(&rel));
        assert!(!c.has_errors(), "{}", render_plain(&c.sources, &c.diags));
        prints_and_runs_as_keras(&rel, &c, "siamese_unet");
    }
    let text = std::fs::read_to_string(root().join("specs/siamese_unet.unet")).unwrap();
    round_trips("siamese_unet.unet", &text);
}

/// The weights are shared, not copied: changing the encoder's first kernel changes what both
/// calls compute (the two images' features stay equal for equal images).
#[test]
fn a_shared_nested_model_uses_one_set_of_weights() {
    let text = "model {\n  block enc() as functional {\n    input(shape: 8x8x2)\n    conv2d(3, 3, padding: same, name: \"c\")\n  }\n  a = input(shape: 8x8x2, name: \"a\")\n  b = input(shape: 8x8x2, name: \"b\")\n  x = a -> enc(name: \"e\")\n  y = b -> shared(e)\n  [x, y] -> subtract()\n}\n";
    let c = ok("w.unet", text);
    let names: Vec<String> = expected_weights(&c).into_iter().map(|e| e.name).collect();
    assert_eq!(names, ["c/kernel", "c/bias"]);
    let mut w = unetc::io::Weights::new();
    for (name, t) in formula_weights(&c) {
        w.insert(name, t);
    }
    let image = unetc::exec::Tensor::from_vec(
        &[1, 8, 8, 2],
        (0..128).map(|i| (i % 7) as f32 * 0.25 - 0.5).collect(),
    )
    .unwrap();
    let other = unetc::exec::Tensor::from_vec(&[1, 8, 8, 2], vec![0.5; 128]).unwrap();
    let run = |a: &unetc::exec::Tensor, b: &unetc::exec::Tensor| {
        CpuModel::new(&c.graph, &c.info, &w)
            .unwrap()
            .run_inputs(&[a.clone(), b.clone()])
            .unwrap()
            .remove(0)
    };
    // Same image on both sides: the same weights give a difference of exactly zero.
    assert!(run(&image, &image).data.iter().all(|&v| v == 0.0));
    // Different images: not zero (the test can fail).
    assert!(run(&image, &other).data.iter().any(|&v| v != 0.0));
    // Wrong inputs are named: a missing one, another shape, batches that differ.
    let model = CpuModel::new(&c.graph, &c.info, &w).unwrap();
    let wrong = |inputs: &[unetc::exec::Tensor]| model.run_inputs(inputs).unwrap_err().to_string();
    let e = wrong(std::slice::from_ref(&image));
    assert!(
        e.contains("the model takes 2 input(s), but 1 were given"),
        "{e}"
    );
    let small = unetc::exec::Tensor::from_vec(&[1, 4, 8, 2], vec![0.5; 64]).unwrap();
    let e = wrong(&[image.clone(), small]);
    assert!(
        e.contains("input 1 has shape [1, 4, 8, 2] but the model takes (N, 8, 8, 2)"),
        "{e}"
    );
    let two = unetc::exec::Tensor::from_vec(&[2, 8, 8, 2], vec![0.5; 256]).unwrap();
    let e = wrong(&[image.clone(), two]);
    assert!(e.contains("N the same for every input"), "{e}");
}

#[test]
fn calling_a_nested_model_again_wrongly_is_reported() {
    let model = |call: &str| {
        format!("model {{\n  block enc() as functional {{\n    input(shape: 8x8x2)\n    conv2d(3, 3, padding: same)\n  }}\n  a = input(shape: 8x8x2, name: \"a\")\n  b = input(shape: 8x8x2, name: \"b\")\n  w = input(shape: 8x8x5, name: \"w\")\n  x = a -> enc(name: \"e\")\n  {call}\n}}\n")
    };
    let e = errors("a.unet", &model("[a, b] -> shared(e)"));
    assert!(
        e.contains("E-arity") && e.contains("takes 1 tensor(s); this call gives 2"),
        "{e}"
    );
    let e = errors("b.unet", &model("w -> shared(e)"));
    assert!(
        e.contains("E-nested-input") && e.contains("(None, 8, 8, 5)"),
        "{e}"
    );
    // A name that is neither a layer nor a nested model.
    let e = errors("c.unet", &model("b -> shared(\"nope\")"));
    assert!(e.contains("E-shared"), "{e}");
}

/// Keras's JSON refers to a nested model's calls from 1 (its own first node is left out);
/// a reference to a call the model does not have is refused by name.
#[test]
fn import_refuses_a_call_a_nested_model_does_not_have() {
    let json =
        std::fs::read_to_string(root().join("tests/real_models/siamese_sequential.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let layers = v["config"]["layers"].as_array_mut().unwrap();
    let sub = layers
        .iter_mut()
        .find(|l| l["config"]["name"] == "subtract")
        .unwrap();
    assert_eq!(
        sub["inbound_nodes"][0][1][1], 2,
        "Keras numbers the second call 2"
    );
    sub["inbound_nodes"][0][1][1] = serde_json::json!(3);
    let e = unetc::interop::keras::import_json(&v.to_string()).unwrap_err();
    assert!(e.0.contains("`stem` has no call"), "{e}");
}

/// A nested model's call binds its tensors to the model's `input_layers` in that order, whatever
/// order its layer list has (tests/real_models/nested_two_inputs: inputs [inner_b, inner_a]).
#[test]
fn import_binds_a_nested_model_s_inputs_in_keras_s_order() {
    let json =
        std::fs::read_to_string(root().join("tests/real_models/nested_two_inputs.json")).unwrap();
    let want = canonical_graph(&ok(
        "a.unet",
        &unetc::interop::keras::import_json(&json).expect("imports"),
    ));
    assert!(
        want.contains(r#"inputs ["inner_b", "inner_a"] ["conv2d_2", "conv2d_3"]"#),
        "{want}"
    );
    let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let nested = v["config"]["layers"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|l| l["class_name"] == "Functional")
        .unwrap();
    nested["config"]["layers"]
        .as_array_mut()
        .unwrap()
        .swap(0, 1);
    let swapped = unetc::interop::keras::import_json(&v.to_string()).expect("imports");
    assert_eq!(canonical_graph(&ok("b.unet", &swapped)), want);
}
