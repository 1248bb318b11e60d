//! Resource limits: absurd specs are refused, or reported with what they would need, quickly and
//! before anything big is allocated; deep nesting and recursion are errors, never stack overflows.
//!
//! Every test here runs in a test thread (2 MiB of stack) of a debug build and must finish in a
//! couple of seconds; each asserts a generous bound on its own time.

mod common;

use common::*;
use std::path::Path;
use std::time::{Duration, Instant};
use unetc::diag::render_plain;
use unetc::expand::Session;
use unetc::{compile_source, Compiled, Options};

/// The time any one compile here may take, in a debug build on a slow machine. The largest
/// (100,000 layers) takes about 5 s alone on the 2-core CI machine, and this binary's other
/// tests run beside it; 10 s was exceeded (10.5 s) when another build shared the cores, and
/// 20 s (23.9 s; 14.3 s alone) with three builds beside it. The bound is there to catch
/// quadratic work, which takes many minutes at these sizes.
const BOUND: Duration = Duration::from_secs(60);

fn compile_at(path: &Path, text: String) -> Compiled {
    let start = Instant::now();
    let c = compile_source(path, text, &Options::default(), &mut Session::new());
    // Rendering must be as quick and must not panic either.
    let _ = render_plain(&c.sources, &c.diags);
    if !c.has_errors() {
        let _ = unetc::report::summary::render(
            &unetc::report::summary_model(&c),
            unetc::report::summary::SummaryStyle::Legacy,
            None,
        );
    }
    // JSON and the extra lines run the executor's memory planner, which is quadratic in the
    // number of layers: only for graphs of ordinary size here.
    if c.graph.nodes.len() <= 10_000 {
        let _ = unetc::report::json::check_json(&c);
        if !c.has_errors() {
            let _ = unetc::report::extras_text(&c);
        }
    }
    let took = start.elapsed();
    eprintln!(
        "compiled {} bytes in {took:?}",
        c.sources.text(unetc::diag::FileId(0)).len()
    );
    assert!(took < BOUND, "took {took:?}");
    for d in &c.diags {
        for (span, _) in d.primary.iter().chain(d.secondary.iter()) {
            assert!(span.end as usize <= c.sources.text(span.file).len());
        }
    }
    c
}

fn dsl(text: &str) -> Compiled {
    compile_at(&root().join("specs").join("limits.unet"), text.to_string())
}

fn yaml(text: &str) -> Compiled {
    compile_at(&root().join("specs").join("limits.yaml"), text.to_string())
}

/// The spec has an error with this code, located in a file.
#[track_caller]
fn assert_error(c: &Compiled, code: &str) {
    assert!(
        c.diags
            .iter()
            .any(|d| d.is_error() && d.code == code && d.primary.is_some()),
        "expected an {code} error, got:\n{}",
        render_plain(&c.sources, &c.diags)
    );
}

// ---------------------------------------------------------------------------------------------
// Absurd sizes.

#[test]
fn billion_pixel_input_is_reported_with_its_memory() {
    // 31623 x 31623 = 10^9 pixels: `check` allocates nothing for it and says what it would need.
    let c = dsl("model {\n  input 31623x31623x1\n  conv2d(8, 3, padding: same)\n}\n");
    assert!(!c.has_errors(), "{}", render_plain(&c.sources, &c.diags));
    let totals = c.info.totals(&c.graph);
    // Input (4 GB) plus 8 channels (32 GB) of f32.
    assert_eq!(totals.activation_bytes, 31623 * 31623 * 9 * 4);
    let extras = unetc::report::extras_text(&c);
    assert!(extras.contains("GiB"), "{extras}");
}

#[test]
fn too_large_sizes_are_refused() {
    // Beyond 2^20 per dimension: refused where it is written.
    let c = dsl("model {\n  input 10000000x10000000x1\n}\n");
    assert_error(&c, "E-arg-type");
}

#[test]
fn million_filters_are_counted_not_allocated() {
    let c = dsl("model {\n  input 8x8x1\n  conv2d(1000000, 3)\n  conv2d(1000000, 3)\n}\n");
    assert!(!c.has_errors(), "{}", render_plain(&c.sources, &c.diags));
    // 9 * 10^12 weights in the second conv: reported, never materialised.
    assert_eq!(
        c.info.totals(&c.graph).params,
        (9 + 1) * 1_000_000 + 9 * 1_000_000 * 1_000_000 + 1_000_000
    );
    // The template refuses 10^6 filters (2^20 is the most any level may have).
    let c = dsl("model {\n  unet(input: 64x64x1, depth: 4, filters: 1000000)\n}\n");
    assert_error(&c, "E-arg-type");
    let c = dsl("model {\n  unet(input: 64x64x1, depth: 12, filters: 65536)\n}\n");
    assert_error(&c, "E-limit");
}

#[test]
fn depth_40_is_refused() {
    let c = dsl("model {\n  unet(input: 572x572x1, depth: 40)\n}\n");
    assert_error(&c, "E-arg-type");
    let c = yaml("unet:\n  input: [572, 572, 1]\n  depth: 40\n");
    assert_error(&c, "E-arg-type");
    // Written out by hand, 40 poolings run out of pixels.
    let c = dsl("model {\n  input 572x572x1\n  for i in 0..40 { max_pooling2d(2) }\n}\n");
    assert_error(&c, "E-size");
}

// ---------------------------------------------------------------------------------------------
// Loops, strings, blocks.

#[test]
fn million_iteration_loops_are_refused() {
    let c = dsl("model {\n  input 8x8x1\n  for i in 0..1000000 { dense(1) }\n}\n");
    assert_error(&c, "E-limit");
    // 10^6 layers through nested loops: stopped at the layer limit.
    let c = dsl(
        "model {\n  input 8x8x1\n  for i in 0..1000 { for j in 0..1000 { activation(relu) } }\n}\n",
    );
    assert_error(&c, "E-limit");
    // 10^9 iterations that create nothing: stopped by the work limit.
    let c = dsl(
        "model {\n  input 8x8x1\n  for i in 0..1000 { for j in 0..1000 { for k in 0..1000 { } } }\n}\n",
    );
    assert_error(&c, "E-limit");
}

#[test]
fn exploding_strings_are_refused() {
    // Each block doubles the string: 2^40 bytes at the end.
    let mut spec = String::from("model {\n  input 8x8x1\n");
    for i in 0..40 {
        spec.push_str(&format!(
            "  block b{i}(s) {{ b{}(\"{{s}}{{s}}\") }}\n",
            i + 1
        ));
    }
    spec.push_str("  block b40(s) { activation(relu, name: s) }\n  b0(\"xxxxxxxxxxxxxxxx\")\n}\n");
    let c = dsl(&spec);
    assert_error(&c, "E-limit");
    // The same through nested loops and `+`.
    let mut spec = String::from("model {\n  input 8x8x1\n  for s0 in [\"ab\"] {\n");
    for i in 0..40 {
        spec.push_str(&format!("  for s{} in [s{i} + s{i}] {{\n", i + 1));
    }
    spec.push_str("  activation(relu, name: s40)\n");
    spec.push_str(&"}\n".repeat(41));
    spec.push_str("}\n");
    let c = dsl(&spec);
    assert_error(&c, "E-limit");
}

#[test]
fn growing_lists_are_refused() {
    // Each loop nests and multiplies the list: 10^40 items at the end.
    let mut spec =
        String::from("model {\n  input 8x8x1\n  for l0 in [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]] {\n");
    for i in 0..40 {
        let l = format!("l{i}");
        spec.push_str(&format!(
            "  for l{} in [[{l}, {l}, {l}, {l}, {l}, {l}, {l}, {l}, {l}, {l}]] {{\n",
            i + 1
        ));
    }
    spec.push_str("  activation(relu)\n");
    spec.push_str(&"}\n".repeat(41));
    spec.push_str("}\n");
    let c = dsl(&spec);
    assert_error(&c, "E-limit");
}

#[test]
fn blocks_nested_ten_thousand_deep_are_refused() {
    let mut spec = String::from("model {\n  input 8x8x1\n");
    for i in 0..10_000 {
        spec.push_str(&format!("  block b{i}() {{ b{}() }}\n", i + 1));
    }
    spec.push_str("  block b10000() { activation(relu) }\n  b0()\n}\n");
    let c = dsl(&spec);
    assert_error(&c, "E-recursion");
}

#[test]
fn recursive_blocks_are_refused() {
    let c = dsl("model {\n  input 8x8x1\n  block a(f) { conv2d(f) -> a(f) }\n  a(4)\n}\n");
    assert_error(&c, "E-recursion");
    let c = dsl("model {\n  input 8x8x1\n  block a() { b() }\n  block b() { a() }\n  a()\n}\n");
    assert_error(&c, "E-recursion");
    let c = yaml(
        "model:\n  input: [8, 8, 1]\n  blocks:\n    a:\n      params: []\n      layers:\n        - a:\n  layers:\n    - a:\n",
    );
    assert_error(&c, "E-recursion");
}

/// Issue 11: a call of the block inside a loop of its own body (a misplaced `}`) fanned out as
/// 4^64 calls before the depth limit; it is one `E-recursion` and no other diagnostic.
#[test]
fn recursion_through_loops_is_one_error() {
    let c = dsl("model {\n  input 8x8x1\n  block a(f) {\n    for g in [1, 2, 3, 4] {\n      for h in [1, 2] { s[h] = a(g) }\n    }\n    conv2d(f, 1)\n  }\n  a(4)\n}\n");
    assert_eq!(c.diags.len(), 1, "{}", render_plain(&c.sources, &c.diags));
    assert_error(&c, "E-recursion");
    // Through another block, in a loop.
    let c = dsl("model {\n  input 8x8x1\n  block a(f) { for g in [1, 2, 3] { b(g) } }\n  block b(f) { for g in [1, 2, 3] { a(g) } }\n  a(4)\n}\n");
    assert_eq!(c.diags.len(), 1, "{}", render_plain(&c.sources, &c.diags));
    assert!(
        c.diags[0].message.contains("a -> b -> a"),
        "{}",
        c.diags[0].message
    );
    let c = yaml(
        "model:\n  input: [8, 8, 1]\n  blocks:\n    a:\n      params: [f]\n      layers:\n        - for: g\n          in: [1, 2, 3, 4]\n          do:\n            - a: $g\n  layers:\n    - a: 4\n",
    );
    assert_eq!(c.diags.len(), 1, "{}", render_plain(&c.sources, &c.diags));
    assert_error(&c, "E-recursion");
}

/// Going over the layer limit in nested loops is one `E-limit`, not one per loop pass.
#[test]
fn the_layer_limit_is_reported_once() {
    let c = dsl(
        "model {\n  input 8x8x1\n  for i in 0..400 { for j in 0..400 { activation(relu) } }\n}\n",
    );
    assert_error(&c, "E-limit");
    assert_eq!(c.diags.len(), 1, "{}", render_plain(&c.sources, &c.diags));
}

#[test]
fn blocks_that_fan_out_are_stopped() {
    // b40 calls b39 twice, ... : 2^40 calls that create nothing.
    let mut spec = String::from("model {\n  input 8x8x1\n  block b0() { }\n");
    for i in 1..=40 {
        spec.push_str(&format!(
            "  block b{i}() {{ b{}(); b{}() }}\n",
            i - 1,
            i - 1
        ));
    }
    spec.push_str("  b40()\n  activation(relu)\n}\n");
    let c = dsl(&spec);
    assert_error(&c, "E-limit");
}

// ---------------------------------------------------------------------------------------------
// Nesting.

#[test]
fn deep_brackets_are_errors_not_overflows() {
    for (open, close) in [("(", ")"), ("[", "]"), ("{", "}")] {
        let n = 100_000;
        let c = dsl(&format!(
            "model {{\n  input 8x8x1\n  conv2d({}1{})\n}}\n",
            open.repeat(n),
            close.repeat(n)
        ));
        assert_error(&c, "E-limit");
    }
    // Strings inside interpolations inside strings...
    let c = dsl(&format!(
        "model {{\n  input 8x8x1\n  conv2d(1, name: {}x{})\n}}\n",
        "\"{".repeat(10_000),
        "}\"".repeat(10_000)
    ));
    assert_error(&c, "E-limit");
    // ... also when a `#` in a string looks like a comment.
    let c = dsl(&format!(
        "model {{\n  input 8x8x1\n  conv2d(1, name: {}x)\n}}\n",
        "\"#{".repeat(10_000)
    ));
    assert!(c.has_errors());
    // Nested loops.
    let c = dsl(&format!(
        "model {{\n  input 8x8x1\n{}  activation(relu)\n{}}}\n",
        "for i in [1] {\n".repeat(5000),
        "}\n".repeat(5000)
    ));
    assert_error(&c, "E-limit");
}

#[test]
fn long_expressions_are_errors_not_overflows() {
    let n = 100_000;
    let sum = vec!["1"; n].join(" + ");
    let c = dsl(&format!("model {{\n  input 8x8x1\n  conv2d({sum})\n}}\n"));
    assert_error(&c, "E-limit");
    let c = dsl(&format!(
        "model {{\n  input 8x8x1\n  conv2d({}1)\n}}\n",
        "- ".repeat(n)
    ));
    assert_error(&c, "E-limit");
    let c = dsl(&format!(
        "model {{\n  input 8x8x1\n  for l in [[1]] {{ conv2d(l{}) }}\n}}\n",
        "[0]".repeat(n)
    ));
    assert_error(&c, "E-limit");
    // The same through YAML's `$expr`.
    let c = yaml(&format!(
        "model:\n  input: [8, 8, 1]\n  layers:\n    - conv2d: ${sum}\n"
    ));
    assert_error(&c, "E-limit");
    // Moderate expressions still work.
    let sum = vec!["1"; 100].join(" + ");
    let c = dsl(&format!(
        "model {{\n  input 8x8x1\n  conv2d({sum}, 1)\n}}\n"
    ));
    assert!(!c.has_errors(), "{}", render_plain(&c.sources, &c.diags));
}

#[test]
fn deep_yaml_is_an_error_not_an_overflow() {
    let n = 100_000;
    let c = yaml(&format!(
        "model:\n  input: [8, 8, 1]\n  layers:\n    - conv2d: {}1{}\n",
        "[".repeat(n),
        "]".repeat(n)
    ));
    // The YAML reader's own recursion limit, or unetc's.
    assert!(
        c.diags
            .iter()
            .any(|d| d.is_error() && matches!(d.code, "E-limit" | "E-yaml")),
        "{:?}",
        c.diags.first().map(|d| &d.message)
    );
    let c = yaml(&format!(
        "model:\n  input: [8, 8, 1]\n  layers:\n    - conv2d: {}1{}\n",
        "{a: ".repeat(n),
        "}".repeat(n)
    ));
    assert!(c.has_errors());
    let mut block = String::from("model:\n  layers:\n");
    for i in 0..2000 {
        block.push_str(&" ".repeat(4 + 2 * i));
        block.push_str("- \n");
    }
    let c = yaml(&block);
    assert!(c.has_errors());
}

// ---------------------------------------------------------------------------------------------
// Files.

#[test]
fn include_cycles_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.unet"),
        "model {\n  input 8x8x1\n  include \"b.unet\"\n}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("b.unet"),
        "model {\n  include \"a.unet\"\n  conv2d(1)\n}\n",
    )
    .unwrap();
    let text = std::fs::read_to_string(dir.path().join("a.unet")).unwrap();
    let c = compile_at(&dir.path().join("a.unet"), text);
    assert_error(&c, "E-include-cycle");
    // A file that includes itself.
    let c = compile_at(
        &dir.path().join("self.unet"),
        "model {\n  include \"self.unet\"\n}\n".to_string(),
    );
    assert!(c.has_errors());
    std::fs::write(
        dir.path().join("self.yaml"),
        "model:\n  layers:\n    - include: self.yaml\n",
    )
    .unwrap();
    let c = compile_at(
        &dir.path().join("self.yaml"),
        "model:\n  layers:\n    - include: self.yaml\n".to_string(),
    );
    assert_error(&c, "E-include-cycle");
}

#[test]
fn includes_nested_too_deep_are_errors() {
    // g0 includes g1 includes ... g99: refused at depth 64, without overflowing the stack.
    let dir = tempfile::tempdir().unwrap();
    for i in 0..100 {
        std::fs::write(
            dir.path().join(format!("g{i}.unet")),
            format!("model {{\n  include \"g{}.unet\"\n}}\n", i + 1),
        )
        .unwrap();
    }
    std::fs::write(dir.path().join("g100.unet"), "model {\n  input 8x8x1\n}\n").unwrap();
    let c = compile_at(
        &dir.path().join("main.unet"),
        "model {\n  include \"g0.unet\"\n  activation(relu)\n}\n".to_string(),
    );
    assert_error(&c, "E-include-cycle");
}

#[test]
fn includes_that_fan_out_are_stopped() {
    // f30 includes f29 twice, ...: 2^30 includes.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f0.unet"), "model {\n}\n").unwrap();
    for i in 1..=30 {
        std::fs::write(
            dir.path().join(format!("f{i}.unet")),
            format!(
                "model {{\n  include \"f{}.unet\"\n  include \"f{}.unet\"\n}}\n",
                i - 1,
                i - 1
            ),
        )
        .unwrap();
    }
    let c = compile_at(
        &dir.path().join("main.unet"),
        "model {\n  input 8x8x1\n  include \"f30.unet\"\n  activation(relu)\n}\n".to_string(),
    );
    assert_error(&c, "E-limit");
}

#[test]
fn endless_or_special_includes_are_refused() {
    if Path::new("/dev/zero").exists() {
        let c = dsl("model {\n  input 8x8x1\n  include \"/dev/zero\"\n}\n");
        assert_error(&c, "E-include");
    }
    let dir = tempfile::tempdir().unwrap();
    let c = compile_at(
        &dir.path().join("main.unet"),
        "model {\n  input 8x8x1\n  include \".\"\n}\n".to_string(),
    );
    assert_error(&c, "E-include");
}

#[test]
fn hundred_thousand_layers_are_handled() {
    // 100,000 layers (1.5 MB) is the limit, and such a spec compiles. (The names are Keras's
    // auto-names, `re_lu_99998` at the end.)
    let mut spec = String::from("model {\n  input 8x8x1\n");
    spec.push_str(&"  re_lu()\n".repeat(99_999));
    spec.push_str("}\n");
    assert!(spec.len() > 1_000_000);
    let c = dsl(&spec);
    assert!(!c.has_errors(), "{}", render_plain(&c.sources, &c.diags));
    assert_eq!(c.graph.nodes.len(), 100_000);
    assert_eq!(c.graph.nodes.last().unwrap().name, "re_lu_99998");
    // (`million_iteration_loops_are_refused` goes past the limit.)
}

#[test]
fn many_megabytes_of_text_are_handled() {
    // 4 MB: a comment, then a tiny model; and 4 MB of garbage.
    let comment = "# ".to_string() + &"x".repeat(4 << 20) + "\n";
    let c = dsl(&format!(
        "{comment}model {{\n  input 8x8x1\n  conv2d(1, 1)\n}}\n"
    ));
    assert!(!c.has_errors(), "{}", render_plain(&c.sources, &c.diags));
    let c = dsl(&"model { ".repeat(1 << 19));
    assert!(c.has_errors());
    let c = yaml(&"- a\n".repeat(1 << 18));
    assert!(c.has_errors());
}
