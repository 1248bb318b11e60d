//! Per-layer comparison with the JSON that real tf.keras wrote for each seed model
//! (../shared/truth/<model>.json): row order, names, classes, output shapes, parameter counts,
//! trainable flags, inbound layers, weight names/shapes/trainability and Keras config values.

mod common;

use common::*;
use serde_json::Value;
use std::path::Path;

const MODELS: &[(&str, &str)] = &[
    ("specs/original.unet", "seed000_original"),
    (
        "specs/original_second_post.yaml",
        "seed001_original_second_post",
    ),
    ("specs/bn_same.unet", "seed002_bn_same"),
    ("specs/template_bn_same.yaml", "seed002_bn_same"),
    ("specs/zhixuhao.yaml", "seed003_zhixuhao"),
    ("specs/vgg16_unet.unet", "seed004_vgg16_unet"),
    ("specs/backbones/vgg16.yaml", "seed004_vgg16_full"),
    ("specs/backbones/resnet50.unet", "seed004_resnet50_full"),
];

#[test]
fn every_layer_matches_keras() {
    let Some(truth) = shared("truth") else { return };
    for (spec, model) in MODELS {
        let want: Value = serde_json::from_str(
            &std::fs::read_to_string(truth.join(format!("{model}.json"))).unwrap(),
        )
        .unwrap();
        let c = compile(Path::new(spec));
        let got = unetc::report::json::check_json(&c);
        let (wl, gl) = (
            want["layers"].as_array().unwrap(),
            got["layers"].as_array().unwrap(),
        );
        assert_eq!(wl.len(), gl.len(), "{spec}: number of layers");
        assert_eq!(want["model_name"], got["model"], "{spec}");
        for (w, g) in wl.iter().zip(gl) {
            let at = format!("{spec} layer {}", w["name"]);
            for (wk, gk) in [
                ("name", "name"),
                ("class", "class"),
                ("output_shape", "output_shape"),
                ("params", "params"),
                ("trainable_params", "trainable_params"),
                ("non_trainable_params", "non_trainable_params"),
                ("inbound", "inputs"),
            ] {
                assert_eq!(w[wk], g[gk], "{at}: {wk}");
            }
            // Keras marks an InputLayer trainable or not without consequence; compare real layers.
            if w["class"] != "InputLayer" {
                assert_eq!(w["trainable"], g["trainable"], "{at}: trainable");
            }
            let (ww, gw) = (
                w["weights"].as_array().unwrap(),
                g["weights"].as_array().unwrap(),
            );
            assert_eq!(ww.len(), gw.len(), "{at}: weights");
            for (a, b) in ww.iter().zip(gw) {
                for key in ["name", "shape", "trainable"] {
                    assert_eq!(a[key], b[key], "{at}: weight {key}");
                }
            }
            for (key, value) in w["config"].as_object().unwrap() {
                if key == "dtype" || key == "data_format" {
                    continue;
                }
                assert_eq!(&g["config"][key], value, "{at}: config `{key}`");
            }
        }
        let (wt, gt) = (&want["totals"], &got["totals"]);
        assert_eq!(wt["total"], gt["params"], "{spec}");
        assert_eq!(wt["trainable"], gt["trainable_params"], "{spec}");
        assert_eq!(wt["non_trainable"], gt["non_trainable_params"], "{spec}");
    }
}
