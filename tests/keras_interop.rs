//! Keras interop against real tf.keras. tools/keras_roundtrip.py built each seed spec's
//! `unetc export --to keras` code in tf.keras 2.21, found Keras's own summary identical to
//! `unetc check --style tf-keras` (tests/keras_json/roundtrip.txt), and saved the model's
//! `to_json()` here. `unetc import` must turn each JSON back into the spec's very graph.

mod common;

use common::*;
use std::path::Path;
use unetc::expand::Session;
use unetc::{compile_source, Options};

fn canonical(c: &unetc::Compiled) -> String {
    let g = &c.graph;
    let mut rows: Vec<String> = c
        .info
        .keras_order
        .iter()
        .map(|&id| {
            let node = g.node(id);
            let inputs: Vec<&str> = node
                .inputs
                .iter()
                .map(|&i| g.node(i).name.as_str())
                .collect();
            let input_shapes: Vec<Vec<i64>> = node
                .inputs
                .iter()
                .map(|&i| c.info.layers[i.index()].shape.clone().unwrap_or_default())
                .collect();
            format!(
                "{} {} {} {:?} {} {:?} {:?}",
                node.name,
                node.op.class_name(),
                node.op.built_config(&input_shapes),
                inputs,
                node.trainable || matches!(node.op, unetc::ir::Op::Input(_)),
                // The nested model holding the layer, and the layer a shared call calls.
                node.scope.map(|s| &g.scopes[s.index()].name),
                node.shares.map(|o| &g.node(o).name)
            )
        })
        .collect();
    rows.insert(0, format!("model {}", g.name));
    for scope in &g.scopes {
        rows.push(format!(
            "nested {} {} {:?}",
            scope.name,
            scope.class.class_name(),
            scope
                .outputs
                .iter()
                .map(|&o| &g.node(o).name)
                .collect::<Vec<_>>()
        ));
    }
    rows.join("\n")
}

#[test]
fn import_of_keras_json_gives_the_spec_graph() {
    let dir = root().join("tests/keras_json");
    let mut checked = 0;
    for (spec, json) in [
        ("specs/original.unet", "original"),
        ("specs/original_second_post.unet", "original_second_post"),
        ("specs/bn_same.unet", "bn_same"),
        ("specs/zhixuhao.unet", "zhixuhao"),
        ("specs/vgg16_unet.unet", "vgg16_unet"),
        ("specs/backbones/vgg16.unet", "vgg16"),
        ("specs/backbones/resnet50.unet", "resnet50"),
        ("tests/golden/edge_merges.unet", "edge_merges"),
        ("tests/golden/edge_norms.unet", "edge_norms"),
        ("tests/golden/edge_depthwise.unet", "edge_depthwise"),
        ("tests/golden/edge_tfops.unet", "edge_tfops"),
        ("tests/golden/edge_tfconst.unet", "edge_tfconst"),
        ("tests/golden/edge_tfreduce.unet", "edge_tfreduce"),
        ("tests/golden/edge_3d.unet", "edge_3d"),
        ("tests/golden/unet3d_small.unet", "unet3d_small"),
        ("tests/golden/unet3d_valid.unet", "unet3d_valid"),
        ("specs/tf_tutorial_unet.unet", "tf_tutorial_unet"),
        ("specs/shared_layers_unet.unet", "shared_layers_unet"),
        ("specs/siamese_unet.unet", "siamese_unet"),
        ("tests/golden/edge_fixed_dropout.unet", "edge_fixed_dropout"),
        ("tests/golden/edge_rescaling.unet", "edge_rescaling"),
        ("tests/golden/edge_normalization.unet", "edge_normalization"),
        ("tests/golden/edge_tfreshape.unet", "edge_tfreshape"),
        ("tests/golden/edge_gelu.unet", "edge_gelu"),
    ] {
        let text = std::fs::read_to_string(dir.join(format!("{json}.json"))).unwrap();
        let imported =
            unetc::interop::keras::import_json(&text).unwrap_or_else(|e| panic!("{json}: {e}"));
        let c = compile_source(
            Path::new("imported.unet"),
            imported.clone(),
            &Options::default(),
            &mut Session::new(),
        );
        assert!(
            !c.has_errors(),
            "{json}:\n{}\n{imported}",
            unetc::diag::render_plain(&c.sources, &c.diags)
        );
        assert_eq!(
            canonical(&c),
            canonical(&compile(Path::new(spec))),
            "{json}"
        );
        checked += 1;
    }
    assert_eq!(checked, 24);
}

#[test]
fn export_names_every_layer_and_the_model() {
    let c = compile(Path::new("specs/bn_same.unet"));
    let code = unetc::interop::keras::export_python(&c.graph, &c.info);
    assert!(
        code.contains(
            r#"return tf.keras.Model(inputs=t_input_1, outputs=t_conv2d_18, name="U-Net")"#
        ),
        "{code}"
    );
    assert!(code.contains(r#"layers.BatchNormalization(axis=3, center=True, epsilon=0.001, momentum=0.99, scale=True, name="batch_normalization")(t_conv2d)"#), "{code}");
    let frozen = compile(Path::new("specs/vgg16_unet.unet"));
    assert!(
        unetc::interop::keras::export_python(&frozen.graph, &frozen.info)
            .contains(r#"name="block1_conv1", trainable=False"#)
    );
}

#[test]
fn import_refuses_what_unetc_cannot_run() {
    let bad = r#"{"class_name": "Functional", "config": {"name": "m", "layers": [
        {"class_name": "InputLayer", "config": {"batch_input_shape": [null, null, null, 3], "name": "input_1"}, "inbound_nodes": []}],
        "input_layers": [["input_1", 0, 0]], "output_layers": [["input_1", 0, 0]]}}"#;
    let err = unetc::interop::keras::import_json(bad).unwrap_err();
    assert!(err.to_string().contains("unknown size"), "{err}");
    let lstm = bad.replace(r#""batch_input_shape": [null, null, null, 3]"#, r#""batch_input_shape": [null, 8, 8, 3]"#).replace(
        r#""inbound_nodes": []}],"#,
        r#""inbound_nodes": []}, {"class_name": "LSTM", "config": {"name": "lstm"}, "inbound_nodes": [[["input_1", 0, 0, {}]]]}],"#,
    );
    let err = unetc::interop::keras::import_json(&lstm).unwrap_err();
    assert!(err.to_string().contains("LSTM"), "{err}");
    assert!(unetc::interop::keras::import_json("not json").is_err());
}

#[test]
fn import_refuses_a_lambda_layer_once_naming_it() {
    // A Lambda as tf.keras 2.21 writes it (the function is Python bytecode), twice.
    let lambda = |name: &str, input: &str| {
        format!(
            r#"{{"class_name": "Lambda", "config": {{"name": "{name}", "function": ["4wEAAAAA", null, null], "function_type": "lambda"}}, "name": "{name}", "inbound_nodes": [[["{input}", 0, 0, {{}}]]]}}"#
        )
    };
    let json = format!(
        r#"{{"class_name": "Functional", "config": {{"name": "m", "layers": [
        {{"class_name": "InputLayer", "config": {{"batch_input_shape": [null, 8, 8, 3], "name": "input_1"}}, "inbound_nodes": []}},
        {}, {}],
        "input_layers": [["input_1", 0, 0]], "output_layers": [["resize_b", 0, 0]]}}}}"#,
        lambda("resize_a", "input_1"),
        lambda("resize_b", "resize_a")
    );
    let err = unetc::interop::keras::import_json(&json)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("config.layers[1]: layer `resize_a` is a Lambda, which unetc does not know (so is `resize_b`)"),
        "{err}"
    );
    assert!(err.contains("Nearest known kind: TFOpLambda"), "{err}");
    assert_eq!(err.matches("Lambda,").count(), 1, "{err}");
    assert!(err.ends_with("nothing was imported"), "{err}");
}

#[test]
fn import_tells_custom_classes_from_keras_layers_it_lacks() {
    // A GELU class of another package than keras-unet-collection (whose GELU unetc knows),
    // and a Keras layer unetc has no kind for (module keras.layers).
    let model = |class: &str, module: &str| {
        format!(
            r#"{{"class_name": "Functional", "config": {{"name": "m", "layers": [
            {{"class_name": "InputLayer", "config": {{"batch_input_shape": [null, 8, 8, 3], "name": "input_1"}}, "inbound_nodes": []}},
            {{"module": "{module}", "class_name": "{class}", "config": {{"name": "act", "trainable": false}}, "name": "act", "inbound_nodes": [[["input_1", 0, 0, {{}}]]]}}],
            "input_layers": [["input_1", 0, 0]], "output_layers": [["act", 0, 0]]}}}}"#
        )
    };
    let known =
        unetc::interop::keras::import_json(&model("GELU", "keras_unet_collection.activations"))
            .unwrap();
    assert!(
        known.contains("gelu(trainable: false, name: \"act\")"),
        "{known}"
    );
    let gelu = unetc::interop::keras::import_json(&model("GELU", "my_package.layers"))
        .unwrap_err()
        .to_string();
    assert!(
        gelu.contains("custom layer class from `my_package.layers`"),
        "{gelu}"
    );
    // Not ELU, whose name is nearest: what it computes may be either gelu.
    assert!(
        gelu.contains("nearest known kinds are `activation(gelu)`"),
        "{gelu}"
    );
    assert!(!gelu.contains("kind: ELU"), "{gelu}");
    assert!(gelu.ends_with("nothing was imported"), "{gelu}");
    let snake =
        unetc::interop::keras::import_json(&model("Snake", "keras_unet_collection.activations"))
            .unwrap_err()
            .to_string();
    assert!(snake.contains("whose call() is Python code"), "{snake}");
    assert!(!snake.contains("nearest"), "{snake}");
    let unit = unetc::interop::keras::import_json(&model("UnitNormalization", "keras.layers"))
        .unwrap_err()
        .to_string();
    assert!(
        unit.contains("layer `act` is a UnitNormalization, which unetc does not know"),
        "{unit}"
    );
    assert!(!unit.contains("custom"), "{unit}");
}

#[test]
fn import_reads_numbers_either_side_and_refuses_other_constants() {
    let text = std::fs::read_to_string(root().join("tests/keras_json/edge_tfconst.json")).unwrap();
    let spec = unetc::interop::keras::import_json(&text).unwrap();
    // `1 - gate`: Keras records the number first as `_CONSTANT_VALUE`.
    assert!(
        spec.contains("tf_op(function: \"math.subtract\", x: 1.0, name: \"tf.math.subtract\")"),
        "{spec}"
    );
    assert!(
        spec.contains("tf_op(function: \"math.truediv\", y: 4.0, name: \"tf.math.truediv\")"),
        "{spec}"
    );
    let first = text.replacen(
        "\"_CONSTANT_VALUE\", -1, 1.0",
        "\"_CONSTANT_VALUE\", -1, \"a\"",
        1,
    );
    assert_ne!(first, text);
    let err = unetc::interop::keras::import_json(&first)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("takes the constant \"a\" first; unetc runs numbers only"),
        "{err}"
    );
    let second = text.replacen("\"y\": 4.0", "\"y\": [1.0, 2.0]", 1);
    assert_ne!(second, text);
    let err = unetc::interop::keras::import_json(&second)
        .unwrap_err()
        .to_string();
    assert!(err.contains("takes the constant [1.0,2.0] as `y`"), "{err}");
}
