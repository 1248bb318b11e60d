//! The seed documents print Keras summary tables themselves. Each complete row they show is
//! compared, by position, with the row unetc prints for the spec of that model: class, output
//! shape and parameter count always; the layer name too, except for input layers whose number
//! depends on how many models the notebook had built before.

mod common;

use common::*;
use std::path::Path;
use unetc::report::summary::SummaryStyle;

#[derive(Debug, PartialEq)]
struct Row {
    name: String,
    class: String,
    shape: String,
    params: String,
}

/// Rows of every legacy summary table in `text`, table by table. Column ends come from the
/// header: `Output Shape` at 32 (functional, 98 wide) or 29 (sequential, 65 wide).
fn tables(text: &str) -> Vec<Vec<Row>> {
    let mut out = Vec::new();
    let mut current: Option<(usize, usize, Vec<Row>)> = None;
    for line in text.lines() {
        if line.starts_with("Layer (type)") {
            if let Some((_, _, rows)) = current.take() {
                out.push(rows);
            }
            let shape_col = line.find("Output Shape").expect("header");
            let params_col = line.find("Param #").expect("header");
            current = Some((shape_col, params_col, Vec::new()));
            continue;
        }
        let Some((shape_col, params_col, rows)) = current.as_mut() else {
            continue;
        };
        if line.trim().is_empty() || line.starts_with("Total params") || line.starts_with("Model:")
        {
            out.push(std::mem::take(rows));
            current = None;
            continue;
        }
        let complete = line.len() >= *params_col + 8;
        if line.starts_with(['_', '=', ' ']) || !complete || !line.is_char_boundary(*shape_col) {
            continue;
        }
        let (layer, rest) = line.split_at(*shape_col);
        let Some((name, class)) = layer.trim_end().split_once(" (") else {
            continue;
        };
        let (shape, rest) = rest.split_at(*params_col - *shape_col);
        rows.push(Row {
            name: name.to_string(),
            class: class.trim_end_matches(')').to_string(),
            shape: shape.trim_end().to_string(),
            params: rest.split_whitespace().next().unwrap_or("").to_string(),
        });
    }
    if let Some((_, _, rows)) = current {
        out.push(rows);
    }
    out.into_iter().filter(|t| !t.is_empty()).collect()
}

fn compare(doc: &str, table: &[Row], spec: &str, after: &[&str], names_exact: bool) -> usize {
    let earlier: Vec<&Path> = after.iter().map(Path::new).collect();
    let c = compile_after(Path::new(spec), &earlier);
    let ours = tables(&check_text(&c, SummaryStyle::Legacy)).remove(0);
    assert!(
        table.len() <= ours.len(),
        "{doc}: document table longer than {spec}'s"
    );
    for (i, (d, u)) in table.iter().zip(&ours).enumerate() {
        let what = format!("{doc} row {} vs {spec}", i + 1);
        assert_eq!(d.class, u.class, "{what}");
        assert_eq!(d.shape, u.shape, "{what}");
        assert_eq!(d.params, u.params, "{what}");
        if names_exact || d.class != "InputLayer" {
            assert_eq!(d.name, u.name, "{what}");
        }
    }
    table.len()
}

fn document(name: &str) -> Option<String> {
    let dir = shared("seeds")?;
    Some(std::fs::read_to_string(dir.join(name)).expect("seed document"))
}

#[test]
fn document_000_rows_match_when_built_after_001() {
    let Some(doc) = document("000_d10d76809e328308.txt") else {
        return;
    };
    let t = tables(&doc);
    assert_eq!(t.len(), 1);
    // 37 layers; every row of the document's table is compared, names included.
    let n = compare(
        "000",
        &t[0],
        "specs/original.unet",
        &["specs/original_second_post.unet"],
        true,
    );
    assert_eq!(n, 37);
}

#[test]
fn document_001_rows_match() {
    let Some(doc) = document("001_c4a308199ec5d0ae.txt") else {
        return;
    };
    let t = tables(&doc);
    assert_eq!(
        compare("001", &t[0], "specs/original_second_post.unet", &[], true),
        36
    );
}

#[test]
fn document_003_rows_match() {
    let Some(doc) = document("003_00b0f858fb6af6eb.txt") else {
        return;
    };
    let t = tables(&doc);
    assert_eq!(compare("003", &t[0], "specs/zhixuhao.unet", &[], true), 39);
}

#[test]
fn document_004_rows_match() {
    let Some(doc) = document("004_46c7d1f3a9e38380.txt") else {
        return;
    };
    let t = tables(&doc);
    // ResNet50, VGG16, VGG16 cut at block4_pool (+ extra layers), VGG16 taps, the VGG16 U-Net:
    // the notebook shows each table only in part.
    assert_eq!(
        t.len(),
        5,
        "tables found: {:?}",
        t.iter().map(|r| r.len()).collect::<Vec<_>>()
    );
    let mut compared = 0;
    compared += compare(
        "004 resnet50",
        &t[0],
        "specs/backbones/resnet50.unet",
        &[],
        false,
    );
    compared += compare("004 vgg16", &t[1], "specs/backbones/vgg16.unet", &[], false);
    compared += compare(
        "004 model_6",
        &t[2],
        "specs/backbones/vgg16.unet",
        &[],
        false,
    );
    compared += compare(
        "004 model_7",
        &t[3],
        "specs/backbones/vgg16.unet",
        &[],
        false,
    );
    compared += compare("004 model_8", &t[4], "specs/vgg16_unet.unet", &[], false);
    assert!(compared >= 15, "only {compared} rows compared");
}
