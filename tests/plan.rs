//! The execution plan of every spec and golden fixture: replayed element by element (at small
//! input sizes), no step reads a value that has been overwritten, no step writes over its own
//! inputs, outputs survive to the end; the arena is close to the live-set minimum; and the U-Net
//! plumbing costs what it should (crops and concatenations elided or written in place).

mod common;

use common::*;
use std::collections::HashMap;
use unetc::exec::plan::{plan, Plan, Storage, Window, Work};
use unetc::ir::NodeId;
use unetc::Compiled;

/// Arena elements of a window (batch 1).
fn elements(p: &Plan, w: &Window) -> Vec<usize> {
    let base = p.buffers[w.buffer].offset + w.offset;
    let mut out = Vec::with_capacity(w.len());
    for y in 0..w.h {
        for x in 0..w.w {
            for c in 0..w.c {
                out.push(base + y * w.row_stride + x * w.pixel_stride + c);
            }
        }
    }
    out
}

/// The elements of a value and which layer's kernel writes each: a kernel writes its own
/// window; a view (crop, dropout, fused layer) shows elements its input's writers wrote; a built
/// concatenation's slices are written by their producers or by its own copies; an unbuilt one
/// is its parts.
fn expected(
    c: &Compiled,
    p: &Plan,
    id: NodeId,
    memo: &mut HashMap<NodeId, Vec<(usize, NodeId)>>,
) -> Vec<(usize, NodeId)> {
    if let Some(v) = memo.get(&id) {
        return v.clone();
    }
    let g = &c.graph;
    let step = p.steps.iter().find(|s| s.node == id).expect("scheduled");
    let writers_of = |input: NodeId, memo: &mut HashMap<NodeId, Vec<(usize, NodeId)>>| {
        expected(c, p, input, memo)
            .into_iter()
            .collect::<HashMap<usize, NodeId>>()
    };
    let v: Vec<(usize, NodeId)> =
        match (&step.work, p.storage[id.index()].as_ref().expect("stored")) {
            (_, Storage::Parts(_)) => {
                let mut out = Vec::new();
                for &i in &g.node(id).inputs {
                    out.extend(expected(c, p, i, memo));
                }
                out
            }
            (Work::Kernel, Storage::Window(w)) => {
                elements(p, w).into_iter().map(|e| (e, id)).collect()
            }
            (Work::Nothing, Storage::Window(w)) => {
                let from = writers_of(g.node(id).inputs[0], memo);
                elements(p, w)
                    .into_iter()
                    .map(|e| (e, *from.get(&e).expect("a view inside its input")))
                    .collect()
            }
            (Work::Concat(copies), Storage::Window(whole)) => {
                let mut out = Vec::new();
                let mut channel = 0;
                for (k, &input) in g.node(id).inputs.iter().enumerate() {
                    let ch = c.info.layers[input.index()].shape.as_ref().unwrap()[2] as usize;
                    let slice = Window {
                        offset: whole.offset + channel,
                        c: ch,
                        ..*whole
                    };
                    if copies.contains(&k) {
                        out.extend(elements(p, &slice).into_iter().map(|e| (e, id)));
                    } else {
                        let from = writers_of(input, memo);
                        out.extend(elements(p, &slice).into_iter().map(|e| {
                            (
                                e,
                                *from
                                    .get(&e)
                                    .expect("a part written in place is in its slice"),
                            )
                        }));
                    }
                    channel += ch;
                }
                out
            }
        };
    memo.insert(id, v.clone());
    v
}

/// Replays the plan on an arena of tags (the layer that last wrote each element): every value a
/// step reads, and every output at the end, must still hold what its writers wrote; no kernel
/// writes where it reads.
fn replay(c: &Compiled, p: &Plan, what: &str) {
    let g = &c.graph;
    let mut arena: Vec<Option<NodeId>> = vec![None; p.arena_len];
    let mut memo = HashMap::new();
    let check = |arena: &[Option<NodeId>], value: &[(usize, NodeId)], id: NodeId, at: &str| {
        for &(e, writer) in value {
            assert!(
                arena[e] == Some(writer),
                "{what}: `{}` is read at {at}, but element {e} was overwritten",
                g.node(id).name
            );
        }
    };
    for step in &p.steps {
        let node = g.node(step.node);
        let mut reads = std::collections::HashSet::new();
        for &input in &node.inputs {
            let value = expected(c, p, input, &mut memo);
            check(&arena, &value, input, &node.name);
            reads.extend(value.iter().map(|&(e, _)| e));
        }
        if step.work == Work::Nothing {
            continue;
        }
        let mine = expected(c, p, step.node, &mut memo);
        for (e, writer) in mine {
            if writer == step.node {
                assert!(
                    !reads.contains(&e),
                    "{what}: `{}` writes where it reads",
                    node.name
                );
                arena[e] = Some(step.node);
            }
        }
    }
    for &out in &g.outputs {
        let value = expected(c, p, out, &mut memo);
        check(&arena, &value, out, "the end");
    }
}

fn plan_of(c: &Compiled) -> Plan {
    plan(&c.graph, &c.info).expect("a plan for a checked spec")
}

#[test]
fn plans_replay_soundly() {
    let mut cases: Vec<(String, Compiled)> = Vec::new();
    for rel in spec_files() {
        // A YAML spec has its DSL twin's graph (tests/check_specs.rs): replay one of them.
        if rel.extension().is_some_and(|e| e == "yaml")
            && root().join(rel.with_extension("unet")).exists()
        {
            continue;
        }
        let c = compile_small(&rel);
        assert!(!c.has_errors(), "{}", rel.display());
        cases.push((rel.display().to_string(), c));
    }
    for entry in std::fs::read_dir(root().join("tests/golden")).unwrap() {
        let path = entry.unwrap().path();
        // original_full is the original U-Net, replayed above.
        if path.extension().is_some_and(|e| e == "unet") && !path.ends_with("original_full.unet") {
            let rel = path.strip_prefix(root()).unwrap().to_path_buf();
            cases.push((rel.display().to_string(), compile(&rel)));
        }
    }
    for (what, c) in &cases {
        let p = plan_of(c);
        replay(c, &p, what);
        assert!(p.arena_len >= p.live_minimum, "{what}");
        println!("{what}: {}", summary(c, &p));
    }
}

/// What the plan did with the plumbing: `kernels`, copies, views and fusions, counted.
fn summary(c: &Compiled, p: &Plan) -> String {
    let (mut kernels, mut views, mut unbuilt, mut in_place, mut copied) = (0, 0, 0, 0, 0);
    let (mut bn, mut act) = (0, 0);
    for step in &p.steps {
        match (&step.work, &p.storage[step.node.index()]) {
            (Work::Kernel, _) => kernels += 1,
            (Work::Nothing, Some(Storage::Parts(_))) => unbuilt += 1,
            (Work::Nothing, _) => views += 1,
            (Work::Concat(copies), _) => {
                copied += copies.len();
                in_place += c.graph.node(step.node).inputs.len() - copies.len();
            }
        }
        bn += usize::from(p.fused[step.node.index()].batch_norm.is_some());
        act += usize::from(p.fused[step.node.index()].activation.is_some());
    }
    format!(
        "{kernels} kernels, {views} views (incl. {bn} folded batch norms, {act} fused activations), \
         {unbuilt} unbuilt concats, concat parts {in_place} in place / {copied} copied; \
         arena {} vs live minimum {}",
        p.arena_len, p.live_minimum
    )
}

/// Volumes (`[D, H, W, C]` values) are planned as whole dense buffers whose rows are the
/// (depth, row) pairs: no crop windows, no concatenation slices or parts (those are the 2-D
/// paths), so every 3-D kernel reads and writes dense NDHWC.
#[test]
fn volumes_are_planned_dense() {
    for rel in [
        "tests/golden/unet3d_valid.unet",
        "tests/golden/edge_3d.unet",
    ] {
        let c = compile(std::path::Path::new(rel));
        let p = plan_of(&c);
        for step in &p.steps {
            let rank = c.info.layers[step.node.index()]
                .shape
                .as_ref()
                .map_or(0, |s| s.len());
            if rank != 4 {
                continue;
            }
            let name = &c.graph.node(step.node).name;
            match &p.storage[step.node.index()] {
                Some(Storage::Window(w)) => {
                    assert!(w.is_dense() && w.offset == 0, "{rel}: {name}: {w:?}");
                    assert_eq!(w.len(), p.buffers[w.buffer].len, "{rel}: {name}");
                }
                other => panic!("{rel}: {name}: {other:?}"),
            }
        }
    }
}

/// Deep supervision as keras-unet-collection's u2net_2d writes it: each side output is a conv
/// with its activation layer (fused into the conv), an output of the model and a part of a
/// concatenation. The conv must not be placed in the concatenation's slice, which would leave
/// the output strided (the CUDA backend reads outputs densely: it failed on kuc_u2net_2d_ds).
#[test]
fn outputs_behind_a_fused_activation_stay_dense() {
    let text = r#"model {
  input 8x8x3
  x = conv2d(4, 3, padding: same)
  a = x -> conv2d(2, 3, padding: same) -> activation(sigmoid, name: "sup0")
  b = x -> conv2d(2, 3, padding: same) -> activation(sigmoid, name: "sup1")
  d = x -> conv2d(2, 3, padding: same) -> activation(sigmoid, name: "sup2")
  f = [a, b, d] -> concatenate() -> conv2d(2, 1) -> activation(sigmoid, name: "final")
  output a, b, d, f
}"#;
    let c = unetc::compile_source(
        std::path::Path::new("deep_supervision.unet"),
        text.to_string(),
        &unetc::Options::default(),
        &mut unetc::expand::Session::new(),
    );
    assert!(!c.has_errors());
    let p = plan_of(&c);
    for &out in &c.graph.outputs {
        let w = p.window(out).expect("stored");
        assert!(w.is_dense(), "{} is not dense", c.graph.node(out).name);
    }
    replay(&c, &p, "deep_supervision");
}

/// `unetc plan --train` on a model small enough to count by hand (batch 1, values per layer:
/// input 8·8·1 = 64, conv2d 8·8·2 = 128, max_pooling2d 4·4·2 = 32, up_sampling2d 128,
/// concatenate 8·8·4 = 256, conv2d_1 8·8·1 = 64).
#[test]
fn plan_train_keeps_what_backward_reads() {
    let dir = fresh_temp_dir("plan-train");
    let spec = dir.join("small.unet");
    std::fs::write(
        &spec,
        "model \"small\" {\n  input 8x8x1\n  c = conv2d(2, 3, padding: same, activation: relu)\n  \
         u = c -> max_pooling2d(2) -> up_sampling2d(2)\n  \
         [c, u] -> concatenate() -> conv2d(1, 1, activation: sigmoid)\n}\n",
    )
    .unwrap();
    let (code, out, err) = unetc_cli(&[
        "plan",
        path_str(&spec),
        "--train",
        "--batch-size",
        "1",
        "--format",
        "json",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let kept: Vec<(String, Vec<String>, bool)> = v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let by = l["kept_for"].as_array().unwrap();
            (
                l["name"].as_str().unwrap().to_string(),
                by.iter().map(|b| b.as_str().unwrap().to_string()).collect(),
                l["recomputed"].as_bool().unwrap(),
            )
        })
        .collect();
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    // conv2d reads its input; its ReLU's derivative reads its own output (no pre-activation
    // kept), as does max pooling's backward; up-sampling and concatenation read no values, so
    // the pooled value and the up-sampled one go in the forward pass (the up-sampling is not
    // rebuilt: its input is not kept); conv2d_1 reads the concatenation; the loss reads the
    // sigmoid head, which keeps its logits (64 saved values).
    assert_eq!(
        kept,
        vec![
            ("input_1".into(), s(&["conv2d"]), false),
            ("conv2d".into(), s(&["conv2d", "max_pooling2d"]), false),
            ("max_pooling2d".into(), vec![], false),
            ("up_sampling2d".into(), vec![], false),
            ("concatenate".into(), s(&["conv2d_1"]), false),
            ("conv2d_1".into(), s(&["loss"]), false),
        ]
    );
    // Kept at the end of the forward pass: 64 + 128 + 256 + 64 + 64 (logits) = 576 of 672.
    assert_eq!(v["kept_elements"], 576);
    assert_eq!(v["all_outputs_elements"], 672);
    // The peak is the concatenation's backward: values still held 64 + 128 + 256 = 448, the
    // loss's gradient 64, the incoming gradient 256 and the two input gradients 128 + 128.
    assert_eq!(v["peak_elements"], 448 + 64 + 256 + 256);
    // Weights: 3·3·1·2 + 2 and 1·1·4·1 + 1 = 25, Adam's two slots.
    assert_eq!(v["weight_elements"], 25);
    assert_eq!(v["total_bytes"], (1024 + 2 * 25 + 2 * 25) * 4);
}
