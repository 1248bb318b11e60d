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
        ("tests/golden/edge_tftensor.unet", "edge_tftensor"),
        ("tests/golden/edge_tfreduce.unet", "edge_tfreduce"),
        ("tests/golden/edge_3d.unet", "edge_3d"),
        ("tests/golden/unet3d_small.unet", "unet3d_small"),
        ("tests/golden/unet3d_valid.unet", "unet3d_valid"),
        ("specs/tf_tutorial_unet.unet", "tf_tutorial_unet"),
        ("specs/shared_layers_unet.unet", "shared_layers_unet"),
        ("specs/siamese_unet.unet", "siamese_unet"),
        ("tests/golden/edge_snake.unet", "edge_snake"),
        ("tests/golden/edge_fixed_dropout.unet", "edge_fixed_dropout"),
        ("tests/golden/edge_rescaling.unet", "edge_rescaling"),
        ("tests/golden/edge_normalization.unet", "edge_normalization"),
        ("tests/golden/edge_tfreshape.unet", "edge_tfreshape"),
        ("tests/golden/edge_gelu.unet", "edge_gelu"),
        ("tests/golden/edge_lambda.unet", "edge_lambda"),
        ("tests/golden/edge_custom_scale.unet", "edge_custom_scale"),
        (
            "tests/golden/edge_repeat_elements.unet",
            "edge_repeat_elements",
        ),
        ("tests/golden/edge_lambda_resize.unet", "edge_lambda_resize"),
        ("tests/golden/edge_tfindex.unet", "edge_tfindex"),
        ("tests/golden/edge_tfstep.unet", "edge_tfstep"),
        ("tests/golden/edge_tfpad.unet", "edge_tfpad"),
        ("tests/golden/edge_resizing.unet", "edge_resizing"),
        ("tests/golden/edge_tfactivations.unet", "edge_tfactivations"),
        ("tests/golden/edge_attention.unet", "edge_attention"),
        ("tests/golden/edge_patches.unet", "edge_patches"),
        ("tests/golden/edge_swin.unet", "edge_swin"),
        ("specs/library/swin_unet.unet", "swin_unet"),
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
    assert_eq!(checked, 39);
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
fn import_runs_only_the_lambda_functions_it_knows() {
    // segmentation_models' Linknet on ResNeXt50 as real tf.keras wrote it: its Lambda layers run
    // classification_models' slice_tensor (module, marshalled bytecode and arguments as Keras
    // recorded them).
    let json = std::fs::read_to_string(root().join("tests/real_models/sm_linknet_resnext50.json"))
        .unwrap();
    let spec = unetc::interop::keras::import_json(&json).unwrap();
    assert!(
        spec.contains("lambda(slice_tensor, start: 0, stop: 4, axis: 3, name: \"lambda\")"),
        "{}",
        &spec[..2000.min(spec.len())]
    );
    // The same layer from another module, without the function's bytecode, or with other
    // arguments is other Python code: refused, naming that layer alone (the others are known).
    let module = "\"module\": \"classification_models.models._common_blocks\"";
    let first = json.find(module).unwrap();
    let code = json[..first].rfind("\"function\": [").unwrap();
    let arguments = json[first..].find("\"arguments\": {").unwrap() + first;
    let altered = [
        json.replacen(module, "\"module\": \"my_blocks\"", 1),
        // Its bytecode removed.
        format!("{}\"function\": [\"\", null, null{}", &json[..code], {
            let rest = &json[code..];
            &rest[rest.find(", null, null").unwrap() + ", null, null".len()..]
        }),
        format!(
            "{}\"arguments\": {{\"start\": 0, \"stop\": 4}}{}",
            &json[..arguments],
            {
                let rest = &json[arguments..];
                &rest[rest.find('}').unwrap() + 1..]
            }
        ),
    ];
    for json in altered {
        let err = unetc::interop::keras::import_json(&json)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("layer `lambda` is a Lambda, which unetc does not know:"),
            "{err}"
        );
        assert!(
            err.contains("classification_models.models._common_blocks.slice_tensor"),
            "{err}"
        );
    }
}

#[test]
fn import_keeps_regularizers_and_names_what_it_drops() {
    // tests/train/regularized_adam_cce.json: real tf.keras's to_json() of a model with L1, L2
    // and L1L2 regularizers (tests/train.rs trains it against Keras's own steps).
    let json =
        std::fs::read_to_string(root().join("tests/train/regularized_adam_cce.json")).unwrap();
    let spec = unetc::interop::keras::import_json(&json).unwrap();
    for want in [
        "kernel_regularizer: {l2: 0.01}, trainable: false, name: \"frozen_conv\"",
        "kernel_regularizer: {l2: 0.01}, bias_regularizer: {l1: 0.01}",
        "beta_regularizer: {l2: 0.01}, gamma_regularizer: {l1: 0.001, l2: 0.01}",
        "depthwise_regularizer: {l1: 0.001}",
        "kernel_regularizer: {l1: 0.0001, l2: 0.0001}",
    ] {
        assert!(spec.contains(want), "missing {want:?} in:\n{spec}");
    }
    // A constraint (training only; unetc applies none) is named in a comment where the layer
    // is; activity regularizers are kept (tests/train.rs trains two against Keras), and
    // `train` refuses one on the output layer; a regularizer class unetc does not know stops
    // the import. The first layer with these keys is frozen_conv, the last the output conv2d_1.
    let constrained = json.replacen(
        r#""kernel_constraint": null"#,
        r#""kernel_constraint": {"module": "keras.constraints", "class_name": "MaxNorm", "config": {"max_value": 2, "axis": 0}}"#,
        1,
    );
    let spec = unetc::interop::keras::import_json(&constrained).unwrap();
    assert!(
        spec.contains("# Keras's kernel_constraint MaxNorm of `frozen_conv` is not imported"),
        "{spec}"
    );
    assert!(spec.contains("activity_regularizer: {l1: 0.001}"), "{spec}");
    assert!(spec.contains("activity_regularizer: {l2: 0.01}"), "{spec}");
    let last = json.rfind(r#""activity_regularizer": null"#).unwrap();
    let on_output = format!(
        "{}{}{}",
        &json[..last],
        r#""activity_regularizer": {"module": "keras.regularizers", "class_name": "L1", "config": {"l1": 0.5}}"#,
        &json[last + r#""activity_regularizer": null"#.len()..]
    );
    let spec = unetc::interop::keras::import_json(&on_output).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let spec_path = dir.path().join("m.unet");
    std::fs::write(&spec_path, &spec).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_unetc"))
        .args(["train", spec_path.to_str().unwrap(), "--inputs"])
        .arg(root().join("tests/train/regularized_adam_cce.x.npy"))
        .arg("--targets")
        .arg(root().join("tests/train/regularized_adam_cce.y.npy"))
        .args(["--steps", "1", "-o"])
        .arg(dir.path().join("w.safetensors"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(
            "the output layer `conv2d_1` has an activity_regularizer, which unetc train applies \
             to the other layers only"
        ),
        "{stderr}"
    );
    let unknown = json.replacen(
        r#""bias_regularizer": null"#,
        r#""bias_regularizer": {"module": "keras.regularizers", "class_name": "OrthogonalRegularizer", "config": {"factor": 0.01}}"#,
        1,
    );
    let err = unetc::interop::keras::import_json(&unknown)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("layer `frozen_conv`'s bias_regularizer: the regularizer OrthogonalRegularizer is not one unetc knows"),
        "{err}"
    );
}

#[test]
fn import_says_what_an_unread_lambda_likely_does() {
    // Lambdas as CPython marshals them (tests/fixtures/lambda_bytecode/generate.py), in a Lambda
    // layer as tf.keras writes one.
    for version in ["3.8", "3.11", "3.13"] {
        let fixture: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(
                root().join(format!("tests/fixtures/lambda_bytecode/{version}.json")),
            )
            .unwrap(),
        )
        .unwrap();
        for (source, hint) in [
            (
                "K.repeat_elements(x, 2, axis=3) * x",
                "Its function calls repeat_elements, as attention U-Nets do to repeat a \
                 one-channel gate over the channels: `multiply` broadcasts such a gate by itself",
            ),
            (
                "image.resize(x, (8, 8), method='bilinear')",
                "Its function is `image.resize(x, (8, 8), method='bilinear')`: bilinear without \
                 align_corners is TensorFlow 2's half-pixel resize or TensorFlow 1's \
                 corner-anchored one",
            ),
            (
                "image.resize(x * 2, (8, 8))",
                "Its function resizes: `up_sampling2d(size: (2, 2), interpolation: bilinear)`",
            ),
        ] {
            let code = fixture["refused"][source].as_str().unwrap();
            let json = format!(
                r#"{{"class_name": "Functional", "config": {{"name": "m", "layers": [
                {{"class_name": "InputLayer", "config": {{"batch_input_shape": [null, 8, 8, 1], "name": "input_1"}}, "inbound_nodes": []}},
                {{"class_name": "Lambda", "config": {{"name": "lambda", "function": ["{code}", null, null], "function_type": "lambda", "module": "__main__", "arguments": {{}}}}, "inbound_nodes": [[["input_1", 0, 0, {{}}]]]}}],
                "input_layers": [["input_1", 0, 0]], "output_layers": [["lambda", 0, 0]]}}}}"#
            );
            let err = unetc::interop::keras::import_json(&json)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("layer `lambda` is a Lambda"),
                "{version} {source}: {err}"
            );
            assert!(err.contains(hint), "{version} {source}: {err}");
        }
    }
}

#[test]
fn call_lambdas_import_from_every_python() {
    // Lambdas returning one call as CPython marshals them (tests/fixtures/lambda_bytecode):
    // `K.repeat_elements` with `K` a global, a closure variable holding Keras backend, or
    // through `tf.keras.backend`, the repeats bound by `arguments` or not; TensorFlow 1's
    // `image.resize` sized by a tuple or by a closure list's slice. Each imports as the spec
    // lambda generate.py names (`spec`), with the closure's values as tf.keras writes them, or
    // is refused.
    let mut imported = 0;
    for version in ["3.6", "3.7", "3.8", "3.9", "3.10", "3.11", "3.12", "3.13"] {
        let fixture: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(
                root().join(format!("tests/fixtures/lambda_bytecode/{version}.json")),
            )
            .unwrap(),
        )
        .unwrap();
        for case in fixture["calls"].as_array().unwrap() {
            let source = case["source"].as_str().unwrap();
            let closure = case.get("closure").unwrap_or(&serde_json::Value::Null);
            let arguments = match case.get("bound") {
                Some(n) => format!(r#"{{"repnum": {n}}}"#),
                None => "{}".into(),
            };
            let json = format!(
                r#"{{"class_name": "Functional", "config": {{"name": "m", "layers": [
                {{"class_name": "InputLayer", "config": {{"batch_input_shape": [null, 4, 4, 2], "name": "input_1"}}, "inbound_nodes": []}},
                {{"class_name": "Lambda", "config": {{"name": "gate", "function": ["{}", null, {closure}], "function_type": "lambda", "module": "__main__", "arguments": {arguments}}}, "inbound_nodes": [[["input_1", 0, 0, {{}}]]]}}],
                "input_layers": [["input_1", 0, 0]], "output_layers": [["gate", 0, 0]]}}}}"#,
                case["code"].as_str().unwrap()
            );
            let got = unetc::interop::keras::import_json(&json);
            let Some(want) = case["spec"].as_str() else {
                assert!(got.is_err(), "{version} `{source}` imported:\n{got:?}");
                continue;
            };
            let spec = got.unwrap_or_else(|e| panic!("{version} `{source}`: {e}"));
            let line = format!(r#"lambda({want:?}, name: "gate")"#);
            assert!(
                spec.contains(&line),
                "{version} `{source}`: {line} not in\n{spec}"
            );
            imported += 1;
        }
    }
    assert_eq!(imported, 8 * 9);
}

#[test]
fn layer_names_that_start_with_a_keyword_import() {
    // A DeepLabV3+ tutorial names its head `output_layer`: the spec's `output_layer -> ...`
    // once read as `output` of `_layer`. Names that are keywords get a variable of their own.
    let names = [
        "output_layer",
        "output",
        "input_image",
        "format",
        "iffy",
        "else_branch",
        "include_top",
    ];
    let mut layers = vec![r#"{"class_name": "InputLayer", "config": {"batch_input_shape": [null, 8, 8, 1], "name": "input_1"}, "inbound_nodes": []}"#.to_string()];
    let mut previous = "input_1";
    for name in names {
        layers.push(format!(
            r#"{{"class_name": "Activation", "config": {{"name": "{name}", "activation": "relu"}}, "inbound_nodes": [[["{previous}", 0, 0, {{}}]]]}}"#
        ));
        previous = name;
    }
    let json = format!(
        r#"{{"class_name": "Functional", "config": {{"name": "m", "layers": [{}], "input_layers": [["input_1", 0, 0]], "output_layers": [["{previous}", 0, 0]]}}}}"#,
        layers.join(", ")
    );
    let spec = unetc::interop::keras::import_json(&json).unwrap();
    let c = compile_source(
        Path::new("imported.unet"),
        spec.clone(),
        &Options::default(),
        &mut Session::new(),
    );
    assert!(
        !c.has_errors(),
        "{}\n{spec}",
        unetc::diag::render_plain(&c.sources, &c.diags)
    );
    let got: Vec<&str> = c.graph.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(got[1..], names, "{spec}");
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
    // keras-unet-collection's Snake is known from its own module only.
    let snake =
        unetc::interop::keras::import_json(&model("Snake", "keras_unet_collection.activations"))
            .unwrap();
    assert!(snake.contains("snake(name: \"act\")"), "{snake}");
    let snake = unetc::interop::keras::import_json(&model("Snake", "my_package.layers"))
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
fn import_reads_numbers_and_tensors_either_side_and_refuses_other_constants() {
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
        err.contains("takes the constant \"a\" first; unetc runs numbers and tensors of numbers"),
        "{err}"
    );
    // A tensor of numbers is the spec's constant tensor; a ragged one is refused.
    let second = text.replacen("\"y\": 4.0", "\"y\": [1.0, 2.0]", 1);
    assert_ne!(second, text);
    let spec = unetc::interop::keras::import_json(&second).unwrap();
    assert!(
        spec.contains("tf_op(function: \"math.truediv\", y: [1.0, 2.0], "),
        "{spec}"
    );
    let ragged = text.replacen("\"y\": 4.0", "\"y\": [[1.0], [2.0, 3.0]]", 1);
    let err = unetc::interop::keras::import_json(&ragged)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("takes a constant tensor of shape [2, 1] as `y`, which unetc does not read: a list of 2 where the others have 1: the lists must be rectangular"),
        "{err}"
    );
    // A constant string is quoted as it is.
    let third = text.replacen("\"y\": 4.0", "\"y\": \"b\"", 1);
    let err = unetc::interop::keras::import_json(&third)
        .unwrap_err()
        .to_string();
    assert!(err.contains("takes the constant \"b\" as `y`"), "{err}");
}

/// `unetc import` compiles what it is about to write (both forms) and refuses on a mismatch.
/// Every recorded Keras model passes the check as DSL and as YAML (no false refusal).
#[test]
fn import_checks_the_spec_it_writes() {
    use unetc::interop::verify::{checked_spec, keras_layers};
    let mut checked = 0;
    for dir in ["tests/real_models", "tests/keras_json"] {
        let mut files: Vec<_> = std::fs::read_dir(root().join(dir))
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().is_some_and(|e| e == "json")
                    && p.file_stem().is_some_and(|s| s != "manifest")
            })
            .collect();
        files.sort();
        for path in files {
            let json = std::fs::read_to_string(&path).unwrap();
            let layers = keras_layers(&json);
            assert!(!layers.is_empty(), "{}", path.display());
            let dsl = unetc::interop::keras::import_json(&json).unwrap();
            for yaml in [false, true] {
                if let Err(e) = checked_spec(&dsl, yaml, Some(&layers), None) {
                    panic!("{} (yaml: {yaml}): {e}", path.display());
                }
            }
            checked += 1;
        }
    }
    assert!(checked >= 50, "{checked}");
}

/// The check can fail: texts altered after the import are refused, naming what differs.
#[test]
fn the_import_check_refuses_altered_specs() {
    use unetc::interop::verify::{check_same, checked_spec, keras_layers};
    let json =
        std::fs::read_to_string(root().join("tests/real_models/siamese_sequential.json")).unwrap();
    let layers = keras_layers(&json);
    let dsl = unetc::interop::keras::import_json(&json).unwrap();
    assert!(checked_spec(&dsl, false, Some(&layers), None).is_ok());
    // A layer renamed: the summary no longer lists Keras's layers.
    let renamed = dsl.replace("subtract_1", "subtract_9");
    assert_ne!(renamed, dsl);
    let e = checked_spec(&renamed, false, Some(&layers), None).unwrap_err();
    assert!(
        e.contains("internal error")
            && e.contains(
                "row 5 is subtract_9 (Subtract), Keras's layer 5 is subtract_1 (Subtract)"
            ),
        "{e}"
    );
    // A text that does not compile.
    let broken = dsl.replace("-> subtract(", "-> subtrakt(");
    let e = checked_spec(&broken, false, Some(&layers), None).unwrap_err();
    assert!(
        e.contains("does not compile") && e.contains("subtrakt"),
        "{e}"
    );
    // The YAML form compared with the DSL's model: another filter count is another summary.
    let reference = compile_source(
        Path::new("imported.unet"),
        dsl.clone(),
        &Options::default(),
        &mut Session::new(),
    );
    let want = {
        use unetc::report::summary::SummaryStyle;
        let mut s = unetc::report::check_text(&reference, SummaryStyle::TfKeras, None);
        s.push_str(&unetc::report::check_text(
            &reference,
            SummaryStyle::Legacy,
            None,
        ));
        s
    };
    let yaml = checked_spec(&dsl, true, Some(&layers), None).unwrap();
    assert!(check_same(&reference, &want, &yaml, "a.yaml").is_ok());
    let altered = yaml.replacen("filters: 8", "filters: 9", 1);
    assert_ne!(altered, yaml);
    let e = check_same(&reference, &want, &altered, "a.yaml").unwrap_err();
    assert!(e.contains("another summary"), "{e}");
    // Weights brought by an ONNX import must be the ones the spec needs.
    let mut weights = unetc::io::Weights::new();
    for e in unetc::runner::expected_weights(&reference) {
        let n: usize = e.shape.iter().product();
        weights.insert(
            e.name.clone(),
            unetc::exec::Tensor::from_vec(&e.shape, vec![0.0; n]).unwrap(),
        );
    }
    assert!(checked_spec(&dsl, false, None, Some(&weights)).is_ok());
    weights.insert(
        "conv2d_1/bias".into(),
        unetc::exec::Tensor::from_vec(&[3], vec![0.0; 3]).unwrap(),
    );
    let e = checked_spec(&dsl, false, None, Some(&weights)).unwrap_err();
    assert!(e.contains("`conv2d_1/bias` of shape [8]"), "{e}");
}

/// A model whose imported spec does not compile (a Keras Normalization with constant
/// statistics, which unetc reads from weights only): `unetc import` says so and writes nothing.
#[test]
fn import_writes_nothing_when_its_spec_does_not_compile() {
    let json =
        std::fs::read_to_string(root().join("tests/keras_json/edge_normalization.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let layer = v["config"]["layers"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|l| l["class_name"] == "Normalization")
        .unwrap();
    layer["config"]["mean"] = serde_json::json!(0.5);
    layer["config"]["variance"] = serde_json::json!(2.0);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("m.json");
    std::fs::write(&input, v.to_string()).unwrap();
    for out in ["m.unet", "m.yaml"] {
        let out = dir.path().join(out);
        let run = std::process::Command::new(env!("CARGO_BIN_EXE_unetc"))
            .arg("import")
            .arg(&input)
            .arg("-o")
            .arg(&out)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(2), "{stderr}");
        // A value Keras gave that unetc does not run: a limit, said with the spec's error.
        assert!(
            stderr.contains("unetc reads this model but does not run all of it")
                && stderr.contains("unetc reads the statistics from the layer's weights")
                && stderr.contains("nothing was written"),
            "{stderr}"
        );
        assert!(!out.exists());
    }
}

/// MultiHeadAttention reads its `value` and `key` from the call's keyword arguments; a mask, a
/// causal mask, returned scores or a regularizer unetc does not apply are refused by name.
#[test]
fn import_refuses_what_attention_does_not_run() {
    let text =
        std::fs::read_to_string(root().join("tests/keras_json/edge_attention.json")).unwrap();
    let base: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(unetc::interop::keras::import_json(&text).is_ok());
    let attention = |json: &mut serde_json::Value| -> usize {
        json["config"]["layers"]
            .as_array()
            .unwrap()
            .iter()
            .position(|l| l["class_name"] == "MultiHeadAttention")
            .unwrap()
    };
    type Change = fn(&mut serde_json::Value);
    let cases: [(&str, Change, &str); 4] = [
        (
            "mask",
            |l| l["inbound_nodes"][0][0][3]["attention_mask"] = serde_json::json!(["conv2d", 0, 0]),
            "is given an attention_mask; unetc attends over every token",
        ),
        (
            "causal",
            |l| l["inbound_nodes"][0][0][3]["use_causal_mask"] = serde_json::json!(true),
            "uses a causal mask",
        ),
        (
            "scores",
            |l| l["inbound_nodes"][0][0][3]["return_attention_scores"] = serde_json::json!(true),
            "returns its attention scores as a second output",
        ),
        (
            "regularizer",
            |l| {
                l["config"]["kernel_regularizer"] =
                    serde_json::json!({"class_name": "L2", "config": {"l2": 0.01}})
            },
            "has a kernel_regularizer, which `unetc train` does not apply to this kind",
        ),
    ];
    for (what, change, want) in cases {
        let mut json = base.clone();
        let k = attention(&mut json);
        change(&mut json["config"]["layers"][k]);
        let err = unetc::interop::keras::import_json(&json.to_string())
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{what}: {err}");
        assert!(err.contains("multi_head_attention"), "{what}: {err}");
        assert!(err.ends_with("nothing was imported"), "{what}: {err}");
    }
}
