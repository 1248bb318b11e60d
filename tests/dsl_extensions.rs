//! Issue 12, part 4: value variables, conditionals, `cropping2d(to: t)`, lists built in loops and
//! two-index variables. Each construct expands to exactly the layer graph of the hand-unrolled
//! spec, in the DSL and in YAML, and survives `fmt` and `convert` in both directions.

mod common;

use common::*;
use std::path::Path;
use unetc::diag::{render_plain, SourceMap};
use unetc::expand::Session;
use unetc::front::{parse, Format};
use unetc::{compile_source, Compiled, Options};

fn compiled(name: &str, text: &str, input_shape: Option<Vec<i64>>) -> Compiled {
    compile_source(
        Path::new(name),
        text.to_string(),
        &Options {
            input_shape,
            output_layer: None,
        },
        &mut Session::new(),
    )
}

/// The canonical graph of a spec that must compile without errors.
fn graph(name: &str, text: &str) -> String {
    let c = compiled(name, text, None);
    assert!(
        !c.has_errors(),
        "{name}:\n{}\n{text}",
        render_plain(&c.sources, &c.diags)
    );
    canonical_graph(&c)
}

/// The spec printed as DSL and as YAML (what `fmt` and `convert` write).
fn printed(name: &str, text: &str) -> (String, String) {
    let path = Path::new(name);
    let mut sources = SourceMap::new();
    let file = sources.add(path, text.to_string());
    let spec = parse(Format::of_path(path), file, text).expect("spec parses");
    (
        unetc::emit::dsl::print(&spec, text),
        unetc::emit::yaml::print(&spec, text),
    )
}

/// Asserts that `text` expands to `expected`, and so do its DSL and YAML prints, and that
/// printing the DSL print again changes nothing.
fn same_graph_everywhere(name: &str, text: &str, expected: &str) {
    assert_eq!(graph(name, text), expected, "{name}");
    let (dsl, yaml) = printed(name, text);
    assert_eq!(
        graph("printed.unet", &dsl),
        expected,
        "{name} as DSL:\n{dsl}"
    );
    assert_eq!(
        graph("printed.yaml", &yaml),
        expected,
        "{name} as YAML:\n{yaml}"
    );
    assert_eq!(
        printed("printed.unet", &dsl).0,
        dsl,
        "fmt is not idempotent"
    );
    // YAML -> DSL -> graph closes the circle.
    let (from_yaml, _) = printed("printed.yaml", &yaml);
    assert_eq!(
        graph("again.unet", &from_yaml),
        expected,
        "{name} YAML as DSL:\n{from_yaml}"
    );
}

const UNROLLED_VALUES: &str = r#"model {
  input 64x64x3
  conv2d(16, 3, padding: same) -> dropout(0.1)
  conv2d(32, 3, padding: same) -> dropout(0.2)
  conv2d(64, 3, padding: same, name: "last_64")
}"#;

#[test]
fn value_variables_are_used_in_arguments_loops_and_strings() {
    let expected = graph("unrolled.unet", UNROLLED_VALUES);
    let dsl = r#"model {
  input 64x64x3
  n = 16
  depth = 2
  rates = [0.1, 0.2]
  for level in 0..depth {
    conv2d(n, 3, padding: same) -> dropout(rates[level])
    n = n * 2
  }
  conv2d(n, 3, padding: same, name: "last_{n}")
}"#;
    same_graph_everywhere("values.unet", dsl, &expected);
    let yaml = r#"model:
  input: [64, 64, 3]
  layers:
    - {value: 16, as: n}
    - {value: 2, as: depth}
    - {value: [0.1, 0.2], as: rates}
    - for: level
      in: $0..depth
      do:
        - conv2d: [$n, 3, {padding: same}]
        - dropout: "$rates[level]"
        - {value: $n * 2, as: n}
    - conv2d: [$n, 3, {padding: same, name: "last_{n}"}]
"#;
    same_graph_everywhere("values.yaml", yaml, &expected);
}

#[test]
fn a_value_assignment_leaves_the_current_tensor_alone() {
    // `n = 16` between two layers does not break the chain; neither does copying a value
    // with the chain form `r = rates[0]`.
    let expected = graph(
        "unrolled.unet",
        "model {\n  input 8x8x1\n  conv2d(4, 1)\n  conv2d(16, 1)\n  dropout(0.5)\n}",
    );
    let dsl = r#"model {
  input 8x8x1
  conv2d(4, 1)
  n = 16
  rates = [0.5]
  conv2d(n, 1)
  r = rates[0]
  dropout(r)
}"#;
    same_graph_everywhere("let.unet", dsl, &expected);
}

const UNROLLED_CONDITIONS: &str = r#"model {
  input 64x64x1
  defaults conv2d(kernel_size: 3, padding: same, activation: relu)
  conv2d(8) -> batch_normalization()
  max_pooling2d(2)
  conv2d(16)
  max_pooling2d(2)
  conv2d(32) -> dropout(0.5)
  max_pooling2d(2)
  conv2d(64) -> dropout(0.5)
}"#;

#[test]
fn conditionals_choose_layers_per_iteration() {
    let expected = graph("unrolled.unet", UNROLLED_CONDITIONS);
    let dsl = r#"model {
  input 64x64x1
  defaults conv2d(kernel_size: 3, padding: same, activation: relu)
  depth = 3
  widths = [8, 16, 32, 64]
  for level in 0..=depth {
    conv2d(widths[level])
    if level == 0 and not (depth < 1) {
      batch_normalization()
    } else if level >= depth - 1 or level > 99 {
      dropout(0.5)
    } else {
      # nothing at level 1
    }
    if level != depth { max_pooling2d(2) }
  }
}"#;
    same_graph_everywhere("if.unet", dsl, &expected);
    let yaml = r#"model:
  input: [64, 64, 1]
  defaults:
    conv2d: {kernel_size: 3, padding: same, activation: relu}
  layers:
    - {value: 3, as: depth}
    - {value: [8, 16, 32, 64], as: widths}
    - for: level
      in: $0..=depth
      do:
        - conv2d: "$widths[level]"
        - if: level == 0 and not (depth < 1)
          then:
            - batch_normalization:
          else:
            - if: $level >= depth - 1 or level > 99
              then:
                - dropout: 0.5
        - if: level != depth
          then:
            - max_pooling2d: 2
"#;
    same_graph_everywhere("if.yaml", yaml, &expected);
}

#[test]
fn comparisons_follow_python() {
    // Each condition is true; a false one would leave out its layer.
    let conditions = [
        "1 == 1.0",
        "2 != 3",
        "\"abc\" < \"abd\"",
        "-1 <= 0",
        "2.5 > 2",
        "3 >= 3",
        "[1, 2] == [1, 2]",
        "not 1 > 2",
        "not false and true or false",
        "false or 1 + 1 == 2",
        "none == none",
        // `and` does not evaluate its right side once the left is false.
        "not (false and xs[5] == 1)",
        "true or xs[5] == 1",
    ];
    for cond in conditions {
        let text =
            format!("model {{\n  input 4x4x1\n  xs = [1]\n  if {cond} {{ conv2d(1, 1) }}\n}}");
        let c = compiled("cmp.unet", &text, None);
        assert!(
            !c.has_errors() && c.graph.nodes.len() == 2,
            "`{cond}`: {}",
            render_plain(&c.sources, &c.diags)
        );
        let (dsl, yaml) = printed("cmp.unet", &text);
        assert_eq!(graph("p.unet", &dsl), canonical_graph(&c), "{dsl}");
        assert_eq!(graph("p.yaml", &yaml), canonical_graph(&c), "{yaml}");
    }
}

/// The 2015 U-Net's skips at 572x572, with the crops written out (seed 000's numbers).
const UNROLLED_CROPS: &str = r#"model {
  input 572x572x1
  defaults conv2d(kernel_size: 3, activation: relu)
  block double(f) { conv2d(f) -> conv2d(f) }
  for f in [64, 128, 256, 512] { skip[f] = double(f); max_pooling2d(2) }
  double(1024)
  for f, crop in [(512, 4), (256, 16), (128, 40), (64, 88)] {
    up = conv2d_transpose(f, 2, strides: 2)
    [skip[f] -> cropping2d(crop), up] -> concatenate(axis: 3) -> double(f)
  }
  conv2d(2, 1, activation: none) -> softmax()
}"#;

const CROP_TO: &str = r#"model {
  input 572x572x1
  defaults conv2d(kernel_size: 3, activation: relu)
  block double(f) { conv2d(f) -> conv2d(f) }
  for f in [64, 128, 256, 512] { skip[f] = double(f); max_pooling2d(2) }
  double(1024)
  for f in [512, 256, 128, 64] {
    up = conv2d_transpose(f, 2, strides: 2)
    [skip[f] -> cropping2d(to: up), up] -> concatenate(axis: 3) -> double(f)
  }
  conv2d(2, 1, activation: none) -> softmax()
}"#;

#[test]
fn cropping_to_a_tensor_computes_the_crop() {
    let expected = graph("unrolled.unet", UNROLLED_CROPS);
    same_graph_everywhere("crop_to.unet", CROP_TO, &expected);
    let yaml = r#"model:
  input: [572, 572, 1]
  defaults:
    conv2d: {kernel_size: 3, activation: relu}
  blocks:
    double:
      params: [f]
      layers:
        - conv2d: $f
        - conv2d: $f
  layers:
    - for: f
      in: [64, 128, 256, 512]
      do:
        - {double: $f, as: "skip[f]"}
        - max_pooling2d: 2
    - double: 1024
    - for: f
      in: [512, 256, 128, 64]
      do:
        - {conv2d_transpose: [$f, 2, {strides: 2}], as: up}
        - {cropping2d: {to: $up}, inputs: "skip[f]", as: cropped}
        - {concatenate: {axis: 3}, inputs: [cropped, up]}
        - double: $f
    - conv2d: [2, 1, {activation: null}]
    - softmax:
"#;
    same_graph_everywhere("crop_to.yaml", yaml, &expected);
}

/// Two floor poolings make the up path's size depend on the input size, and with it the crop.
const CROP_TO_FLOOR: &str = r#"model {
  input 11x11x1
  big = conv2d(2, 1, padding: same)
  small = max_pooling2d(2) -> max_pooling2d(2) -> up_sampling2d(4)
  [big -> cropping2d(to: small), small] -> concatenate()
}"#;

#[test]
fn crop_to_is_shape_dependent_and_recomputed_per_input_size() {
    let text = CROP_TO_FLOOR.to_string();
    let mut sources = SourceMap::new();
    let file = sources.add(Path::new("floor.unet"), text.clone());
    let spec = parse(Format::Dsl, file, &text).unwrap();
    let expanded = unetc::expand::expand(&spec, &mut sources, &mut Session::new());
    assert!(
        expanded.shape_dependent,
        "`sizes` must recompile such a spec"
    );
    let crop = |shape: Option<Vec<i64>>| -> String {
        let c = compiled("floor.unet", CROP_TO_FLOOR, shape);
        assert!(!c.has_errors(), "{}", render_plain(&c.sources, &c.diags));
        let node = c
            .graph
            .nodes
            .iter()
            .find(|n| n.op.class_name() == "Cropping2D")
            .expect("a crop");
        node.op.config()["cropping"].to_string()
    };
    // 11 -> 5 -> 2 -> 8: 3 rows off, the odd one at the bottom; 12 -> 6 -> 3 -> 12: none.
    assert_eq!(crop(None), "[[1,2],[1,2]]");
    assert_eq!(crop(Some(vec![12, 12, 1])), "[[0,0],[0,0]]");
    assert_eq!(crop(Some(vec![13, 12, 1])), "[[0,1],[0,0]]");
}

#[test]
fn crop_to_puts_the_odd_pixel_at_the_bottom_right() {
    let explicit = graph(
        "explicit.unet",
        &CROP_TO_FLOOR.replace("cropping2d(to: small)", "cropping2d(((1, 2), (1, 2)))"),
    );
    same_graph_everywhere("floor.unet", CROP_TO_FLOOR, &explicit);
}

const UNROLLED_SKIPS: &str = r#"model {
  input 32x32x1
  a = conv2d(4, 3, padding: same)
  b = max_pooling2d(2) -> conv2d(8, 3, padding: same)
  c = max_pooling2d(2) -> conv2d(16, 3, padding: same)
  up = c -> up_sampling2d(2) -> conv2d(8, 2, padding: same)
  joined = [b, up] -> concatenate()
  first = a -> conv2d(1, 1)
  output joined, first
}"#;

#[test]
fn lists_of_tensors_are_built_in_loops_and_indexed_from_the_end() {
    let expected = graph("unrolled.unet", UNROLLED_SKIPS);
    let dsl = r#"model {
  input 32x32x1
  skips = []
  for f in [4, 8, 16] {
    if f > 4 { max_pooling2d(2) }
    x = conv2d(f, 3, padding: same)
    skips = skips + [x]
  }
  up = skips[-1] -> up_sampling2d(2) -> conv2d(8, 2, padding: same)
  parts = [skips[-2]] + [up]
  joined = parts -> concatenate()
  first = skips[0] -> conv2d(1, 1)
  output joined, first
}"#;
    same_graph_everywhere("skips.unet", dsl, &expected);
}

/// U-Net++ (depth 3) with two-index variables `x[i, j]`, lists built in loops and a condition:
/// the graph of the hand-unrolled tests/fixtures/unet_plus_plus.unet, node for node.
const UNET_PLUS_PLUS: &str = r#"model "unet_plus_plus" {
  input 64x64x1
  defaults conv2d(kernel_size: 3, padding: same, activation: relu)
  block double(f) { conv2d(f) -> conv2d(f) }
  block up(x, f) { x -> conv2d_transpose(f, 2, strides: 2) }

  depth = 3
  filters = []
  f = 16
  for level in 0..=depth {
    filters = filters + [f]
    f = f * 2
  }
  # One diagonal at a time, as the paper's code: X^{d,0}, then X^{d-1,1} ... X^{0,d}.
  for d in 0..=depth {
    if d == 0 {
      x[0, 0] = double(filters[0])
    } else {
      x[d, 0] = x[d - 1, 0] -> max_pooling2d(2) -> double(filters[d])
    }
    for j in 1..=d {
      i = d - j
      dense = []
      for k in 0..j { dense = dense + [x[i, k]] }
      u = up(x[i + 1, j - 1], filters[i])
      dense = dense + [u]
      x[i, j] = dense -> concatenate() -> double(filters[i])
    }
  }
  x[0, depth] -> conv2d(1, 1, activation: sigmoid)
}"#;

#[test]
fn unet_plus_plus_with_two_index_variables_matches_the_unrolled_fixture() {
    let fixture = compile(Path::new("tests/fixtures/unet_plus_plus.unet"));
    assert!(!fixture.has_errors());
    let expected = canonical_graph(&fixture);
    same_graph_everywhere("unet_plus_plus.unet", UNET_PLUS_PLUS, &expected);
}

#[test]
fn two_index_slots_are_distinct_from_lists_and_from_each_other() {
    let expected = graph(
        "unrolled.unet",
        "model {\n  input 8x8x1\n  a = conv2d(1, 1)\n  b = conv2d(2, 1)\n  [a, b] -> concatenate()\n}",
    );
    let dsl = r#"model {
  input 8x8x1
  for i, j in [(0, 1), (1, 0)] { g[i, j] = conv2d(i * 2 + j, 1) }
  [g[0, 1], g[1, 0]] -> concatenate()
}"#;
    same_graph_everywhere("slots.unet", dsl, &expected);
}

#[test]
fn conditions_inside_loops_count_as_work() {
    // A million tests that create nothing still stop at the work limit, quickly.
    let text = "model {\n  input 8x8x1\n  for i in 0..10000 { for j in 0..10000 { if i == j and false { conv2d(1) } } }\n}";
    let start = std::time::Instant::now();
    let c = compiled("work.unet", text, None);
    assert!(start.elapsed() < std::time::Duration::from_secs(10));
    let out = render_plain(&c.sources, &c.diags);
    assert!(out.contains("E-limit"), "{out}");
    assert_eq!(out.matches("error[").count(), 1, "{out}");
}

#[test]
fn a_long_else_if_chain_nests_nothing() {
    // 5,000 branches in a test thread's 2 MiB stack: parsed, expanded and printed flat.
    let mut text = String::from("model {\n  input 8x8x1\n  n = 4999\n  if n == 0 { conv2d(1, 1) }");
    for i in 1..5_000 {
        text.push_str(&format!(" else if n == {i} {{ conv2d({}, 1) }}", i % 7 + 1));
    }
    text.push_str(" else { dropout(0.5) }\n}\n");
    let c = compiled("chain.unet", &text, None);
    assert!(!c.has_errors(), "{}", render_plain(&c.sources, &c.diags));
    assert_eq!(c.graph.nodes.len(), 2);
    // Only the DSL: YAML nests each `else if` two levels deeper (as `else: [- if: ...]`).
    let mut sources = SourceMap::new();
    let file = sources.add(Path::new("chain.unet"), text.clone());
    let spec = parse(Format::Dsl, file, &text).unwrap();
    let dsl = unetc::emit::dsl::print(&spec, &text);
    assert_eq!(graph("p.unet", &dsl), canonical_graph(&c));
}
