//! One rendered diagnostic per error kind, as `unetc check` prints it (without colour).
//! Every one names the layer and points at the spec line and column.

use std::path::Path;
use unetc::diag::render_plain;
use unetc::expand::Session;
use unetc::{compile_source, Options};

fn check(name: &str, text: &str) -> String {
    let c = compile_source(
        Path::new(name),
        text.to_string(),
        &Options::default(),
        &mut Session::new(),
    );
    render_plain(&c.sources, &c.diags)
}

/// Each `(line, message)`: the line as the fourth of a small model (after a conv of `filters`
/// channels on a 4x4x2 input) gives the message, pointed at that line.
fn refused_at_line_4(file: &str, filters: u32, cases: &[(&str, &str)]) {
    for (line, want) in cases {
        let out = check(
            file,
            &format!("model {{\n  input 4x4x2\n  x = conv2d({filters}, 1)\n  {line}\n}}\n"),
        );
        assert!(out.contains(want), "{line}: missing {want:?} in:\n{out}");
        assert!(
            out.contains(&format!("{file}:4:")),
            "{line}: not pointed at:\n{out}"
        );
    }
}

#[test]
fn concatenate_with_mismatched_sizes_suggests_the_crop() {
    let out = check(
        "concat.unet",
        r#"model {
  input 572x572x1
  defaults conv2d(kernel_size: 3, activation: relu)
  conv4 = conv2d(64) -> conv2d(64)
  max_pooling2d(2) -> conv2d(128) -> conv2d(128)
  up6 = conv2d_transpose(64, 2, strides: 2)
  [conv4, up6] -> concatenate(axis: 3)
}"#,
    );
    insta::assert_snapshot!(out, @"
    error[E-concat-shape]: Concatenate `concatenate`: inputs differ in size: `conv2d_1` is 568x568 but `conv2d_transpose` is 560x560
      ┌─ concat.unet:7:19
      │
    4 │   conv4 = conv2d(64) -> conv2d(64)
      │                         ---------- `conv2d_1` is (None, 568, 568, 64)
    5 │   max_pooling2d(2) -> conv2d(128) -> conv2d(128)
    6 │   up6 = conv2d_transpose(64, 2, strides: 2)
      │         ----------------------------------- `conv2d_transpose` is (None, 560, 560, 64)
    7 │   [conv4, up6] -> concatenate(axis: 3)
      │                   ^^^^^^^^^^^^^^^^^^^^ 568x568 vs 560x560
      │
      = help: add `cropping2d(4)` to `conv2d_1` to crop it from 568x568 to 560x560
    ");
}

#[test]
fn concatenate_in_yaml_points_into_the_yaml_file() {
    let out = check(
        "concat.yaml",
        r#"model:
  input: [63, 63, 1]
  layers:
    - {conv2d: [8, 3], as: skip}
    - max_pooling2d: 2
    - {conv2d_transpose: [8, 2, {strides: 2}], as: up}
    - {concatenate: [], inputs: [skip, up]}
"#,
    );
    insta::assert_snapshot!(out, @"
    warning[W-pool-floor]: MaxPooling2D `max_pooling2d`: pooling `conv2d`'s 61x61 output drops its last row/column (height 61, width 61); Keras floors
      ┌─ concat.yaml:5:7
      │
    5 │     - max_pooling2d: 2
      │       ^^^^^^^^^^^^^^^^ odd size pooled
      │
      = help: the up path will not get back to the skip's size; choose an input size from `unetc sizes`, or crop the skip

    error[E-concat-shape]: Concatenate `concatenate`: inputs differ in size: `conv2d` is 61x61 but `conv2d_transpose` is 60x60
      ┌─ concat.yaml:7:7
      │
    4 │     - {conv2d: [8, 3], as: skip}
      │       -------------------------- `conv2d` is (None, 61, 61, 8)
    5 │     - max_pooling2d: 2
    6 │     - {conv2d_transpose: [8, 2, {strides: 2}], as: up}
      │       ------------------------------------------------ `conv2d_transpose` is (None, 60, 60, 8)
    7 │     - {concatenate: [], inputs: [skip, up]}
      │       ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^ 61x61 vs 60x60
      │
      = help: add `cropping2d(((0, 1), (0, 1)))` to `conv2d` to crop it from 61x61 to 60x60
    ");
}

#[test]
fn crop_larger_than_its_input() {
    let out = check(
        "crop.unet",
        "model {\n  input 30x30x1\n  conv2d(8, 3) -> cropping2d(14)\n}\n",
    );
    insta::assert_snapshot!(out, @"
    error[E-crop]: Cropping2D `cropping2d`: cropping ((14, 14), (14, 14)) removes all of `conv2d`'s 28x28 output
      ┌─ crop.unet:3:19
      │
    3 │   conv2d(8, 3) -> cropping2d(14)
      │   ------------    ^^^^^^^^^^^^^^ crops 28x28 from 28x28
      │   │                
      │   `conv2d` is (None, 28, 28, 8)
      │
      = help: crop less than 28 rows and 28 columns in total
    ");
}

#[test]
fn pool_larger_than_its_input() {
    let out = check(
        "pool.unet",
        "model {\n  input 8x8x1\n  max_pooling2d(2) -> max_pooling2d(16)\n}\n",
    );
    insta::assert_snapshot!(out, @"
    error[E-size]: MaxPooling2D `max_pooling2d_1`: the 16x16 pool window is larger than `max_pooling2d`'s 4x4 output
      ┌─ pool.unet:3:23
      │
    3 │   max_pooling2d(2) -> max_pooling2d(16)
      │   ----------------    ^^^^^^^^^^^^^^^^^ pooling a 4x4 input
      │   │                    
      │   `max_pooling2d` is (None, 4, 4, 1)
      │
      = help: use a larger input or fewer pooling steps
    ");
}

#[test]
fn size_reaching_zero() {
    let out = check(
        "zero.unet",
        "model {\n  input 16x16x1\n  defaults conv2d(kernel_size: 3)\n  for i in 1..=9 { conv2d(4) }\n}\n",
    );
    insta::assert_snapshot!(out, @"
    error[E-size]: Conv2D `conv2d_7`: the 3x3 kernel does not fit in `conv2d_6`'s 2x2 output (valid padding)
      ┌─ zero.unet:4:20
      │
    4 │   for i in 1..=9 { conv2d(4) }
      │                    ^^^^^^^^^ the height would be 0 or less
      │
      = help: use a larger input, or `padding: same`
    ");
}

#[test]
fn pooling_an_odd_size_is_a_warning() {
    let out = check(
        "odd.unet",
        "model {\n  input 9x8x1\n  max_pooling2d(2)\n}\n",
    );
    insta::assert_snapshot!(out, @"
    warning[W-pool-floor]: MaxPooling2D `max_pooling2d`: pooling `input_1`'s 9x8 output drops its last row/column (height 9); Keras floors
      ┌─ odd.unet:3:3
      │
    3 │   max_pooling2d(2)
      │   ^^^^^^^^^^^^^^^^ odd size pooled
      │
      = help: the up path will not get back to the skip's size; choose an input size from `unetc sizes`, or crop the skip
    ");
}

#[test]
fn unknown_layer_kind() {
    let out = check(
        "kind.unet",
        "model {\n  input 64x64x1\n  conv2dd(16, 3)\n}\n",
    );
    insta::assert_snapshot!(out, @"
    error[E-unknown-kind]: unknown layer kind or block `conv2dd`
      ┌─ kind.unet:3:3
      │
    3 │   conv2dd(16, 3)
      │   ^^^^^^^ not a layer kind or block
      │
      = help: did you mean `conv2d`?
    ");
}

#[test]
fn unknown_argument() {
    let out = check(
        "arg.unet",
        "model {\n  input 64x64x1\n  conv2d(16, 3, activaton: relu)\n}\n",
    );
    insta::assert_snapshot!(out, @"
    error[E-arg-unknown]: `conv2d` has no argument `activaton`
      ┌─ arg.unet:3:17
      │
    3 │   conv2d(16, 3, activaton: relu)
      │                 ^^^^^^^^^ unknown argument
      │
      = help: did you mean `activation`?
    ");
}

#[test]
fn mistyped_argument_in_yaml() {
    let out = check(
        "type.yaml",
        "model:\n  input: [64, 64, 1]\n  layers:\n    - conv2d: {filters: sixteen, kernel_size: 3, padding: smae}\n",
    );
    insta::assert_snapshot!(out, @"
    error[E-arg-type]: `conv2d` argument `filters` must be an integer, found a string `sixteen`
      ┌─ type.yaml:4:25
      │
    4 │     - conv2d: {filters: sixteen, kernel_size: 3, padding: smae}
      │                         ^^^^^^^ expected an integer

    error[E-arg-value]: `conv2d` argument `padding` cannot be `smae`
      ┌─ type.yaml:4:59
      │
    4 │     - conv2d: {filters: sixteen, kernel_size: 3, padding: smae}
      │                                                           ^^^^ expected one of: valid, same
      │
      = help: did you mean `same`?
    ");
}

#[test]
fn unknown_name() {
    let out = check(
        "name.unet",
        "model {\n  input 64x64x1\n  x = conv2d(4, 3)\n  [x, skipp] -> add()\n}\n",
    );
    insta::assert_snapshot!(out, @"
    error[E-unknown-name]: no layer or variable named `skipp`
      ┌─ name.unet:4:17
      │
    4 │   [x, skipp] -> add()
      │                 ^^^^^ unknown name
    ");
}

#[test]
fn duplicate_name() {
    let out = check(
        "dup.unet",
        "model {\n  input 64x64x1\n  conv2d(4, 3, name: \"conv2d\")\n  conv2d(4, 3)\n}\n",
    );
    insta::assert_snapshot!(out, @r#"
    error[E-duplicate-name]: the name `conv2d` is used 2 times in the model
      ┌─ dup.unet:4:3
      │
    3 │   conv2d(4, 3, name: "conv2d")
      │   ---------------------------- first layer with this name
    4 │   conv2d(4, 3)
      │   ^^^^^^^^^^^^ second layer with this name
      │
      = help: all layer names must be unique; rename one (an explicit name does not advance Keras's auto-name counter)
    "#);
}

#[test]
fn cycle() {
    let out = check(
        "cycle.yaml",
        "model:\n  input: [32, 32, 3]\n  layers:\n    - {conv2d: [8, 3], name: a, inputs: b}\n    - {conv2d: [8, 3], name: b, inputs: a}\n  outputs: [b]\n",
    );
    insta::assert_snapshot!(out, @"
    warning[W-unused]: layer `input_1` does not lead to the model's output
      ┌─ cycle.yaml:2:3
      │
    2 │   input: [32, 32, 3]
      │   ^^^^^^^^^^^^^^^^^^ unused; Keras leaves it out of the model
      │
      = help: use its result, or remove it

    error[E-cycle]: the layers form a cycle: a -> b -> a
      ┌─ cycle.yaml:4:7
      │
    4 │     - {conv2d: [8, 3], name: a, inputs: b}
      │       ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^ part of a cycle
    5 │     - {conv2d: [8, 3], name: b, inputs: a}
      │       ------------------------------------ `b`
      │
      = help: a layer's inputs must not depend on its own output
    ");
}

#[test]
fn unused_layer_is_a_warning() {
    let out = check(
        "unused.unet",
        "model {\n  input 64x64x1\n  side = conv2d(4, 3)\n  input_1 -> conv2d(8, 3)\n}\n",
    );
    insta::assert_snapshot!(out, @"
    warning[W-unused]: layer `conv2d` does not lead to the model's output
      ┌─ unused.unet:3:10
      │
    3 │   side = conv2d(4, 3)
      │          ^^^^^^^^^^^^ unused; Keras leaves it out of the model
      │
      = help: use its result, or remove it
    ");
}

#[test]
fn missing_include() {
    let out = check(
        "inc.unet",
        "model {\n  include \"backbones/nope.unet\" (trainable: false)\n}\n",
    );
    insta::assert_snapshot!(out, @r#"
    error[E-include]: cannot read included spec `backbones/nope.unet`: No such file or directory (os error 2)
      ┌─ inc.unet:2:11
      │
    2 │   include "backbones/nope.unet" (trainable: false)
      │           ^^^^^^^^^^^^^^^^^^^^^ missing include
      │
      = help: include paths are relative to the including file
    "#);
}

#[test]
fn dsl_syntax_error() {
    let out = check(
        "syntax.unet",
        "model {\n  input 64x64x1\n  conv2d(16, 3 -> relu\n}\n",
    );
    insta::assert_snapshot!(out, @"
    error[E-syntax]: syntax error: expected an operator, found `->`
      ┌─ syntax.unet:3:16
      │
    3 │   conv2d(16, 3 -> relu
      │                ^^ not understood here
      │
      = help: a chain starts from a layer call, a variable or a list of tensors: store a computed value first (`parts = skips + [x]`, then `parts -> concatenate()`)
      = help: see the DSL reference in README.md (section `The DSL`)
    ");
}

#[test]
fn yaml_syntax_error() {
    let out = check("syntax.yaml", "model:\n  input: [64, 64, 1\n  layers: []\n");
    insta::assert_snapshot!(out, @"
    error[E-yaml]: YAML syntax error: illegal placement of ':' indicator
      ┌─ syntax.yaml:3:9
      │
    3 │   layers: []
      │         ^ here
    ");
}

#[test]
fn block_called_with_wrong_arguments() {
    let out = check(
        "block.unet",
        "model {\n  input 64x64x1\n  block double(f) { conv2d(f, 3) -> conv2d(f, 3) }\n  double(8, 3)\n  double()\n}\n",
    );
    insta::assert_snapshot!(out, @"
    error[E-arg-unknown]: block `double` takes 1 argument(s)
      ┌─ block.unet:4:13
      │
    3 │   block double(f) { conv2d(f, 3) -> conv2d(f, 3) }
      │         ------ `double(f)` is defined here
    4 │   double(8, 3)
      │             ^ not a parameter

    error[E-arg-missing]: block `double` needs f
      ┌─ block.unet:5:3
      │
    3 │   block double(f) { conv2d(f, 3) -> conv2d(f, 3) }
      │         ------ defined here
    4 │   double(8, 3)
    5 │   double()
      │   ^^^^^^^^ missing arguments
    ");
}

#[test]
fn recursive_block() {
    let out = check(
        "rec.unet",
        "model {\n  input 64x64x1\n  block forever(f) { forever(f) }\n  forever(8)\n}\n",
    );
    insta::assert_snapshot!(out, @"
    error[E-recursion]: block `forever` calls itself
      ┌─ rec.unet:3:22
      │
    3 │   block forever(f) { forever(f) }
      │         -------      ^^^^^^^ `forever` called again here
      │         │             
      │         inside the body of this block
      │
      = help: a block cannot call itself, directly or through other blocks: repeat with a `for` loop instead. If a closing `}` is misplaced, the call belongs after the block's end
    ");
}

/// Issue 11: a block that calls itself inside a loop (a misplaced `}`) ran for minutes, printing
/// the same `E-limit` again and again. It is one `E-recursion`, at once.
#[test]
fn recursion_through_a_loop_is_one_error() {
    let spec = "model {
  input 64x64x1
  block conv_block(f) {
    for g in [64, 128, 256, 512] {
      skip[g] = conv_block(g)
      max_pooling2d(2)
    }
    conv2d(f, 3)
  }
  conv_block(8)
}
";
    let start = std::time::Instant::now();
    let out = check("loop.unet", spec);
    assert!(start.elapsed() < std::time::Duration::from_secs(1));
    insta::assert_snapshot!(out, @"
    error[E-recursion]: block `conv_block` calls itself
      ┌─ loop.unet:5:17
      │
    3 │   block conv_block(f) {
      │         ---------- inside the body of this block
    4 │     for g in [64, 128, 256, 512] {
    5 │       skip[g] = conv_block(g)
      │                 ^^^^^^^^^^ `conv_block` called again here
      │
      = help: a block cannot call itself, directly or through other blocks: repeat with a `for` loop instead. If a closing `}` is misplaced, the call belongs after the block's end
    ");
}

/// Issue 11: a misspelled argument in `defaults` is one error with the did-you-mean, not one per
/// layer followed by a "needs argument" for each; a bad value there is one error with a note.
#[test]
fn a_typo_in_defaults_is_reported_once() {
    let spec = "model {
  input 64x64x1
  defaults conv2d(kernal_size: 3, padding: smae, activation: relu)
  block double(f) { conv2d(f) -> conv2d(f) }
  for f in [8, 16] { skip[f] = double(f); max_pooling2d(2) }
  double(32)
  for f in [16, 8] {
    up = conv2d_transpose(f, 2, strides: 2)
    [skip[f], up] -> concatenate() -> double(f)
  }
  conv2d(2, 1)
}
";
    let out = check("typo.unet", spec);
    insta::assert_snapshot!(out, @"
    error[E-arg-unknown]: `conv2d` has no argument `kernal_size`
      ┌─ typo.unet:3:19
      │
    3 │   defaults conv2d(kernal_size: 3, padding: smae, activation: relu)
      │                   ^^^^^^^^^^^ unknown argument
      │
      = help: did you mean `kernel_size`?

    error[E-arg-value]: `conv2d` argument `padding` cannot be `smae`
      ┌─ typo.unet:3:44
      │
    3 │   defaults conv2d(kernal_size: 3, padding: smae, activation: relu)
      │                                            ^^^^ expected one of: valid, same
      │
      = help: did you mean `same`?
      = note: reported once; affects 11 layers
    ");
    let c = compile_source(
        Path::new("typo.unet"),
        spec.to_string(),
        &Options::default(),
        &mut Session::new(),
    );
    let json = unetc::report::json::check_json(&c);
    let diags = json["diagnostics"].as_array().expect("diagnostics");
    assert_eq!(diags.len(), 2, "{json:#}");
    assert_eq!(diags[0]["repeats"], 1);
    assert_eq!(diags[1]["repeats"], 11);
}

/// Issue 11: an error in a loop's body is reported once, not once per pass, even where the
/// passes' messages differ in their numbers.
#[test]
fn an_error_in_a_loop_is_reported_once() {
    let spec = "model {
  input 64x64x1
  for f in [8, 16, 32] { conv2d(f, 3, strides: 0) }
}
";
    let out = check("loop.unet", spec);
    assert_eq!(out.matches("error[").count(), 1, "{out}");
    insta::assert_snapshot!(out, @"
    error[E-arg-value]: `conv2d` argument `strides`: values must be in 1..=1048576
      ┌─ loop.unet:3:48
      │
    3 │   for f in [8, 16, 32] { conv2d(f, 3, strides: 0) }
      │                                                ^ values must be in 1..=1048576
      │
      = note: reported once; affects 3 layers
    ");
    let yaml = "model:
  input: [64, 64, 1]
  layers:
    - for: f
      in: [8, 16, 32]
      do:
        - conv2d: [$f, 3, {strides: 0}]
";
    let out = check("loop.yaml", yaml);
    assert_eq!(out.matches("error[").count(), 1, "{out}");
    // Each pass names its own layer and sizes: still one cause.
    let spec = "model {\n  input 64x64x1\n  for k in [70, 80] { input_1 -> max_pooling2d(k) }\n}\n";
    let out = check("sizes.unet", spec);
    assert_eq!(out.matches("error[").count(), 1, "{out}");
    assert!(
        out.contains("note: reported once; it comes up 2 times here"),
        "{out}"
    );
}

/// Several independent mistakes are all reported in one run, in reading order.
#[test]
fn keeps_going_after_the_first_error() {
    let out = check(
        "many.unet",
        "model {\n  input 64x64x3\n  conv2dd(16, 3)\n  conv2d(16, 3, activaton: relu)\n  conv2d(16, 3, padding: smae)\n  x = conv2d(8, 3, name: \"a\")\n  conv2d(8, 3, name: \"a\")\n}\n",
    );
    let errors = out.matches("error[").count();
    assert_eq!(errors, 4, "{out}");
    insta::assert_snapshot!(out, @r#"
    error[E-unknown-kind]: unknown layer kind or block `conv2dd`
      ┌─ many.unet:3:3
      │
    3 │   conv2dd(16, 3)
      │   ^^^^^^^ not a layer kind or block
      │
      = help: did you mean `conv2d`?

    error[E-arg-unknown]: `conv2d` has no argument `activaton`
      ┌─ many.unet:4:17
      │
    4 │   conv2d(16, 3, activaton: relu)
      │                 ^^^^^^^^^ unknown argument
      │
      = help: did you mean `activation`?

    error[E-arg-value]: `conv2d` argument `padding` cannot be `smae`
      ┌─ many.unet:5:26
      │
    5 │   conv2d(16, 3, padding: smae)
      │                          ^^^^ expected one of: valid, same
      │
      = help: did you mean `same`?

    error[E-duplicate-name]: the name `a` is used 2 times in the model
      ┌─ many.unet:7:3
      │
    6 │   x = conv2d(8, 3, name: "a")
      │       ----------------------- first layer with this name
    7 │   conv2d(8, 3, name: "a")
      │   ^^^^^^^^^^^^^^^^^^^^^^^ second layer with this name
      │
      = help: all layer names must be unique; rename one (an explicit name does not advance Keras's auto-name counter)
    "#);
}

/// Issue 11: a skip cropped by 6 where 4 was meant: the help fixes the crop that is there,
/// instead of suggesting a crop of the up path.
#[test]
fn a_wrong_skip_crop_is_fixed_where_it_is() {
    let out = check(
        "crop.unet",
        "model {
  input 140x140x1
  defaults conv2d(kernel_size: 3, activation: relu)
  skip = conv2d(8) -> conv2d(8)
  max_pooling2d(2) -> conv2d(16) -> conv2d(16)
  up = conv2d_transpose(8, 2, strides: 2)
  [skip -> cropping2d(6), up] -> concatenate()
}
",
    );
    insta::assert_snapshot!(out, @"
    error[E-concat-shape]: Concatenate `concatenate`: inputs differ in size: `cropping2d` is 124x124 but `conv2d_transpose` is 128x128
      ┌─ crop.unet:7:34
      │
    6 │   up = conv2d_transpose(8, 2, strides: 2)
      │        ---------------------------------- `conv2d_transpose` is (None, 128, 128, 8)
    7 │   [skip -> cropping2d(6), up] -> concatenate()
      │            -------------         ^^^^^^^^^^^^^ 124x124 vs 128x128
      │            │                      
      │            `cropping2d` is (None, 124, 124, 8)
      │
      = help: change `cropping2d`'s cropping from 6 to `cropping2d(4)`: it crops `conv2d_1` from 136x136 to 124x124, but `conv2d_transpose` is 128x128
    ");
}

#[test]
fn a_condition_that_is_not_a_boolean_is_a_type_error_at_the_condition() {
    let out = check(
        "cond.unet",
        r#"model {
  input 64x64x1
  depth = 4
  if depth - 1 { dropout(0.5) }
}"#,
    );
    insta::assert_snapshot!(out, @"
    error[E-type]: an `if` condition must be true or false, found an integer (`3`)
      ┌─ cond.unet:4:6
      │
    4 │   if depth - 1 { dropout(0.5) }
      │      ^^^^^^^^^ not a boolean
      │
      = help: compare it: `if level == depth - 1 { ... }`
    ");
}

#[test]
fn an_unknown_variable_in_a_condition_suggests_the_closest_one() {
    let out = check(
        "cond.unet",
        r#"model {
  input 64x64x1
  depth = 4
  for level in 0..depth {
    conv2d(8, 3)
    if levl == depth - 1 { dropout(0.5) }
  }
}"#,
    );
    insta::assert_snapshot!(out, @"
    error[E-unknown-name]: no variable named `levl` in this condition
      ┌─ cond.unet:6:8
      │
    6 │     if levl == depth - 1 { dropout(0.5) }
      │        ^^^^ unknown variable
      │
      = help: did you mean `level`?
      = note: reported once; it comes up 4 times here (once per block call or loop pass)
    ");
}

#[test]
fn and_or_not_take_booleans() {
    let out = check(
        "bool.unet",
        r#"model {
  input 64x64x1
  n = 2
  if n > 1 and n { conv2d(8, 3) }
}"#,
    );
    insta::assert_snapshot!(out, @r#"
    error[E-type]: `and` takes true or false, found an integer (`2`)
      ┌─ bool.unet:4:16
      │
    4 │   if n > 1 and n { conv2d(8, 3) }
      │                ^ not a boolean
      │
      = help: compare it first: `n > 0`, `mode == "upsample"`
    "#);
}

#[test]
fn a_value_variable_used_as_a_layer_input_is_a_type_error() {
    let out = check(
        "value.unet",
        r#"model {
  input 64x64x1
  x = conv2d(8, 3)
  n = 16
  n -> conv2d(8, 3)
  [x, n] -> concatenate()
}"#,
    );
    insta::assert_snapshot!(out, @"
    error[E-type]: `n` is a value (an integer: 16), not a tensor; a layer's input must be a tensor
      ┌─ value.unet:5:3
      │
    5 │   n -> conv2d(8, 3)
      │   ^ a value, not a tensor
      │
      = help: values go into a layer's arguments (`conv2d(n)`); tensors come from layers (`x = conv2d(8)`) or are lists of them (`skips = skips + [x]`)

    error[E-type]: `n` is a value (an integer: 16), not a tensor; a layer's input must be a tensor
      ┌─ value.unet:6:7
      │
    6 │   [x, n] -> concatenate()
      │       ^ a value, not a tensor
      │
      = help: values go into a layer's arguments (`conv2d(n)`); tensors come from layers (`x = conv2d(8)`) or are lists of them (`skips = skips + [x]`)
    ");
}

#[test]
fn cropping_to_a_larger_tensor_is_refused() {
    let out = check(
        "crop.unet",
        r#"model {
  input 64x64x1
  big = conv2d(8, 3)
  small = conv2d(8, 3)
  small -> cropping2d(to: big)
}"#,
    );
    insta::assert_snapshot!(out, @"
    error[E-crop]: cannot crop 60x60 to 62x62: `to` is larger than the input
      ┌─ crop.unet:5:27
      │
    5 │   small -> cropping2d(to: big)
      │                           ^^^ larger than the input
      │
      = help: crop the larger tensor to the smaller one: `big -> cropping2d(to: small)`
    ");
}

#[test]
fn cropping_to_a_value_is_refused() {
    let out = check(
        "crop.unet",
        r#"model {
  input 64x64x1
  conv2d(8, 3) -> cropping2d(to: 4)
}"#,
    );
    insta::assert_snapshot!(out, @"
    error[E-type]: `to` takes the tensor to crop to, found an integer (`4`)
      ┌─ crop.unet:3:34
      │
    3 │   conv2d(8, 3) -> cropping2d(to: 4)
      │                                  ^ not a tensor
      │
      = help: for example `skip -> cropping2d(to: up)`
    ");
}

#[test]
fn cropping_with_both_cropping_and_to_is_refused() {
    let out = check(
        "crop.unet",
        r#"model {
  input 64x64x1
  up = conv2d(8, 3)
  conv2d(8, 3) -> cropping2d(2, to: up)
}"#,
    );
    insta::assert_snapshot!(out, @"
    error[E-arg-duplicate]: `cropping2d` takes `cropping` or `to`, not both
      ┌─ crop.unet:4:30
      │
    4 │   conv2d(8, 3) -> cropping2d(2, to: up)
      │                              ^  -- and computed from `to`
      │                              │   
      │                              cropping given
    ");
}

#[test]
fn a_list_index_out_of_range_says_how_long_the_list_is() {
    let out = check(
        "index.unet",
        r#"model {
  input 64x64x1
  skips = []
  for f in [8, 16] { x = conv2d(f, 3); skips = skips + [x] }
  skips[-3] -> conv2d(1, 1)
}"#,
    );
    insta::assert_snapshot!(out, @"
    error[E-index]: index -3 is out of range for a list of 2
      ┌─ index.unet:5:3
      │
    5 │   skips[-3] -> conv2d(1, 1)
      │   ^^^^^^^^^ out of range
    ");
}

#[test]
fn an_unset_two_index_slot_lists_the_slots_set() {
    let out = check(
        "grid.unet",
        r#"model {
  input 64x64x1
  for i in 0..2 { x[i, 0] = conv2d(8, 3) }
  x[1, 1] -> conv2d(1, 1)
}"#,
    );
    insta::assert_snapshot!(out, @"
    error[E-unknown-name]: `x[1, 1]` is not set
      ┌─ grid.unet:4:3
      │
    4 │   x[1, 1] -> conv2d(1, 1)
      │   ^^^^^^^ no value stored here
      │
      = help: set so far: x[0, 0], x[1, 0]
    ");
}

#[test]
fn a_chain_cannot_start_from_a_computed_value() {
    let out = check(
        "chain.unet",
        r#"model {
  input 64x64x1
  x = conv2d(8, 3)
  skips = [x]
  y = skips + [x] -> concatenate()
}"#,
    );
    insta::assert_snapshot!(out, @"
    error[E-syntax]: syntax error: expected a statement or an operator, found `->`
      ┌─ chain.unet:5:19
      │
    5 │   y = skips + [x] -> concatenate()
      │                   ^^ not understood here
      │
      = help: a chain starts from a layer call, a variable or a list of tensors: store a computed value first (`parts = skips + [x]`, then `parts -> concatenate()`)
      = help: see the DSL reference in README.md (section `The DSL`)
    ");
}

#[test]
fn a_yaml_condition_points_into_the_yaml_file() {
    let out = check(
        "cond.yaml",
        r#"model:
  input: [64, 64, 1]
  layers:
    - {value: 3, as: depth}
    - if: "depth + levl"
      then:
        - dropout: 0.5
    - if: depth * 2
      then:
        - dropout: 0.5
"#,
    );
    insta::assert_snapshot!(out, @r#"
    error[E-unknown-name]: no variable named `levl` in this condition
      ┌─ cond.yaml:5:20
      │
    5 │     - if: "depth + levl"
      │                    ^^^^ unknown variable
      │
      = help: a bare word in a condition must be a variable; a string is quoted: "levl"

    error[E-type]: an `if` condition must be true or false, found an integer (`6`)
      ┌─ cond.yaml:8:11
      │
    8 │     - if: depth * 2
      │           ^^^^^^^^^ not a boolean
      │
      = help: compare it: `if level == depth - 1 { ... }`
    "#);
}

#[test]
fn a_yaml_value_needs_a_variable() {
    let out = check(
        "value.yaml",
        r#"model:
  input: [64, 64, 1]
  layers:
    - {value: 4}
    - if: true
      else: []
"#,
    );
    insta::assert_snapshot!(out, @"
    error[E-yaml-form]: `value:` needs `as:` (the variable to store it in)
      ┌─ value.yaml:4:8
      │
    4 │     - {value: 4}
      │        ^^^^^ no `as:`

    error[E-yaml-form]: `if:` needs `then:` (the items to run when the condition holds)
      ┌─ value.yaml:5:7
      │
    5 │     - if: true
      │       ^^ no `then:`
    ");
}

/// The new kinds' argument errors (issue 12): channels that do not split into groups, a
/// depthwise convolution with both strides and dilation (Keras refuses it), LayerNormalization
/// over axes that are not a trailing run.
#[test]
fn group_and_axis_errors_of_the_new_kinds() {
    let out = check(
        "groups.unet",
        "model {
  input 16x16x6
  conv2d(8, 3, groups: 4)
  input_1 -> group_normalization(groups: 4)
  input_1 -> depthwise_conv2d(3, strides: 2, dilation_rate: 2)
  input_1 -> layer_normalization(axis: [1, 2])
}
",
    );
    insta::assert_snapshot!(out, @"
    warning[W-unused]: layer `conv2d` does not lead to the model's output
      ┌─ groups.unet:3:3
      │
    3 │   conv2d(8, 3, groups: 4)
      │   ^^^^^^^^^^^^^^^^^^^^^^^ unused; Keras leaves it out of the model
      │
      = help: use its result, or remove it

    error[E-groups]: Conv2D `conv2d`: `input_1` has 6 channels, which do not split into 4 groups
      ┌─ groups.unet:3:3
      │
    2 │   input 16x16x6
      │   ------------- `input_1` is (None, 16, 16, 6)
    3 │   conv2d(8, 3, groups: 4)
      │   ^^^^^^^^^^^^^^^^^^^^^^^ 6 channels, groups 4
      │
      = help: Keras needs the input channels divisible by `groups`

    warning[W-unused]: layer `group_normalization` does not lead to the model's output
      ┌─ groups.unet:4:14
      │
    4 │   input_1 -> group_normalization(groups: 4)
      │              ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^ unused; Keras leaves it out of the model
      │
      = help: use its result, or remove it

    error[E-groups]: GroupNormalization `group_normalization`: Number of groups (4) must be a multiple of the number of channels (6).
      ┌─ groups.unet:4:14
      │
    2 │   input 16x16x6
      │   ------------- `input_1` is (None, 16, 16, 6)
    3 │   conv2d(8, 3, groups: 4)
    4 │   input_1 -> group_normalization(groups: 4)
      │              ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^ 6 channels do not split into 4 groups
      │
      = help: the channels must be a multiple of the groups: use a number of groups that divides 6

    error[E-arg-value]: `depthwise_conv2d` cannot have `strides` > 1 with `dilation_rate` > 1
      ┌─ groups.unet:5:14
      │
    5 │   input_1 -> depthwise_conv2d(3, strides: 2, dilation_rate: 2)
      │              ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^ strides and dilation_rate both > 1

    error[E-axis]: LayerNormalization `layer_normalization`: unetc normalises a trailing run of axes after the batch (-1, [2, 3], [1, 2, 3]), not [1, 2]
      ┌─ groups.unet:6:14
      │
    2 │   input 16x16x6
      │   ------------- `input_1` is (None, 16, 16, 6)
      ·
    6 │   input_1 -> layer_normalization(axis: [1, 2])
      │              ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^ unsupported axis
    ");
}

/// A block body sees only its parameters: a model variable used there is a bare word, so a
/// string; the error says so instead of leaving "not integers" unexplained.
#[test]
fn a_model_variable_used_inside_a_block_is_explained() {
    let out = check(
        "block.unet",
        r#"model {
  input 32x32x3
  stack = 2
  block convs(f) { for i in 0..stack { conv2d(f, 3) } }
  convs(8)
}"#,
    );
    insta::assert_snapshot!(out, @r#"
    error[E-type]: a range needs integer bounds
      ┌─ block.unet:4:29
      │
    4 │   block convs(f) { for i in 0..stack { conv2d(f, 3) } }
      │                             ^^^^^^^^ not integers
      │
      = help: `stack` is no variable here, so it is the string "stack"; inside a block only the block's parameters are variables: pass outer values in (`block b(..., stack)`)
    "#);
}

#[test]
fn a_misspelt_variable_in_arithmetic_suggests_the_closest_one() {
    let out = check(
        "arith.unet",
        r#"model {
  input 32x32x3
  depth = 4
  n = dpeth - 1
  conv2d(8, 3)
}"#,
    );
    insta::assert_snapshot!(out, @r#"
    error[E-type]: cannot compute a string - an integer
      ┌─ arith.unet:4:7
      │
    4 │   n = dpeth - 1
      │       ^^^^^^^^^ invalid arithmetic (or overflow, or division by zero)
      │
      = help: `dpeth` is no variable here, so it is the string "dpeth": did you mean `depth`?
    "#);
}

#[test]
fn reshape_and_permute_that_do_not_fit_their_input() {
    let out = check(
        "reshape.unet",
        r#"model {
  input 6x5x8
  a = reshape((7, -1))
  b = input_1 -> permute((1, 1, 3))
  c = input_1 -> reshape((2, -1, -1))
  output a, b, c
}"#,
    );
    insta::assert_snapshot!(out, @r"
    error[E-reshape]: Reshape `reshape`: `input_1` has 240 values, which do not make target_shape (7, -1)
      ┌─ reshape.unet:3:7
      │
    2 │   input 6x5x8
      │   ----------- `input_1` is (None, 6, 5, 8)
    3 │   a = reshape((7, -1))
      │       ^^^^^^^^^^^^^^^^ sizes differ
      │
      = help: the product of target_shape must equal the product of the input's shape (a -1 takes what is left)

    error[E-arg-value]: Permute `permute`: dims (1, 1, 3) is no permutation of the axes 1..=3 of `input_1` (None, 6, 5, 8)
      ┌─ reshape.unet:4:18
      │
    2 │   input 6x5x8
      │   ----------- `input_1` is (None, 6, 5, 8)
    3 │   a = reshape((7, -1))
    4 │   b = input_1 -> permute((1, 1, 3))
      │                  ^^^^^^^^^^^^^^^^^^ not a permutation
      │
      = help: name every axis but the batch once, counting from 1: `permute((2, 1, 3))` swaps height and width

    error[E-arg-value]: Reshape `reshape_1`: target_shape may have one -1 (the axis computed from the input's size), not several
      ┌─ reshape.unet:5:18
      │
    2 │   input 6x5x8
      │   ----------- `input_1` is (None, 6, 5, 8)
      ·
    5 │   c = input_1 -> reshape((2, -1, -1))
      │                  ^^^^^^^^^^^^^^^^^^^^ several -1
    ");
}

/// The 3-D kinds' misuses are one clear error each, at the layer: a 3-D layer on an image (and
/// a 2-D one on a volume), a window larger than the volume, a crop removing a whole axis, a
/// grouped Conv3D and a dilated Conv3DTranspose (which unetc refuses rather than run wrongly),
/// `output_padding` not below `strides`, and a malformed 3-D cropping argument.
#[test]
fn errors_of_the_3d_kinds() {
    let out = check(
        "volume.unet",
        "model {
  input 8x8x8x2
  v = input_1
  img = input(shape: 8x8x2)
  a = img -> conv3d(4, 3)
  b = v -> conv2d(4, 3)
  c = v -> max_pooling3d(16)
  d = v -> cropping3d(((4, 4), (0, 0), (0, 0)))
  e = v -> conv3d(4, 3, groups: 2)
  f = v -> conv3d_transpose(4, 2, strides: 2, dilation_rate: 2)
  g = v -> conv3d_transpose(4, 3, strides: 2, output_padding: 2)
  h = v -> zero_padding3d(((1, 2), (3, 4)))
  output a, b, c, d, e, f, g, h
}
",
    );
    for want in [
        "Conv3D `conv3d`: Conv3D expects a volume input (None, D, H, W, C), but `input_2` has shape (None, 8, 8, 2)",
        "3-D layers need `input DxHxWxC`",
        "Conv2D `conv2d`: Conv2D expects an image input (None, H, W, C), but `input_1` has shape (None, 8, 8, 8, 2)",
        "the 16x16x16 MaxPooling3D window does not fit in `input_1`'s 8x8x8 output",
        "cropping ((4, 4), (0, 0), (0, 0)) removes all of `input_1`'s 8x8x8 output",
        "`conv3d` argument `groups` is 2; unetc runs Conv3D with groups 1 only",
        "`conv3d_transpose` with `dilation_rate` other than 1 is not run by unetc",
        "`conv3d_transpose` argument `output_padding` must be smaller than `strides`",
        "`zero_padding3d` argument `padding` must be `c`, `(d, h, w)` or `((front, back), (top, bottom), (left, right))`",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    assert!(!out.contains("panick"), "{out}");
}

#[test]
fn tf_op_constants_and_reductions_are_refused_where_tensorflow_differs() {
    let cases = [
        (
            "x -> tf_op(\"math.subtract\", x: 1.0, y: 2.0)",
            "takes one constant: `y: c` (the tensor first, `g - c`) or `x: c`",
        ),
        (
            "x -> tf_op(\"nn.relu\", y: 0.0)",
            "tf.nn.relu takes no constant operand",
        ),
        (
            "[x, x] -> tf_op(\"math.add\", y: 1.0)",
            "with a constant operand (`x:` or `y:`) takes 1 tensor, not 2",
        ),
        (
            "x -> tf_op(\"math.multiply\", y: \"a\")",
            "argument `y` must be a number",
        ),
        (
            "x -> tf_op(\"math.reduce_mean\", keepdims: true)",
            "runs over the channel axis only: `axis: -1` (or 3), not every axis (no `axis`)",
        ),
        (
            "x -> tf_op(\"math.reduce_max\", axis: 1, keepdims: true)",
            "runs over the channel axis only: `axis: -1` (or 3), not 1",
        ),
        (
            "x -> tf_op(\"math.reduce_max\", axis: -1)",
            "runs with `keepdims: true` only",
        ),
        (
            "x -> tf_op(concat, axis: -1, keepdims: true)",
            "tf.concat takes no `keepdims`",
        ),
    ];
    refused_at_line_4("tf_op.unet", 2, &cases);
}

#[test]
fn lambda_functions_are_refused_where_unetc_would_run_them_wrongly() {
    let cases = [
        (
            "x -> lambda(slice_tensor, start: 0, stop: 4, axis: 1)",
            "slice_tensor with axis 1: unetc runs the channels-last form (axis 3) only",
        ),
        (
            "x -> lambda(slice_tensor, start: 2, stop: 6, axis: 3)",
            "slice_tensor takes channels `start` to `stop` with start < stop <= the input's 4 \
             channels, not 2..6",
        ),
        (
            "x -> lambda(slice_tensor, start: 2, stop: 2, axis: 3)",
            "not 2..2",
        ),
        (
            "x -> lambda(slice_tensor, start: 0, axis: 3)",
            "`lambda` needs argument `stop`",
        ),
        (
            "x -> lambda(slice_tensor, start: 0, stop: 2, axis: 3, channels_axis: 3)",
            "argument `channels_axis`: is not an argument of slice_tensor",
        ),
        (
            "x -> lambda(expand_dims, channels_axis: 3)",
            "expand_dims takes a vector (None, C) (a pooled feature map), but `conv2d` has shape \
             (None, 4, 4, 4)",
        ),
        (
            "x -> lambda(slice_tensor, start: -1, stop: 2, axis: 3)",
            "-1 is out of range",
        ),
        (
            "x -> lambda(reverse)",
            "not a function unetc knows (slice_tensor, expand_dims), arithmetic in `x` \
             (`\"x / 255\"`) nor `\"K.repeat_elements(x, 8, axis=3)\"`: `r` is not \
             arithmetic unetc runs",
        ),
        (
            "x -> lambda(\"K.repeat_elements(x, 2)\")",
            "`axis` is missing: write `K.repeat_elements(x, 8, axis=3)`",
        ),
        (
            "x -> lambda(\"K.repeat_elements(x, 2, axis=2)\")",
            "repeat_elements on axis 2: unetc repeats the channels (axis 3 or -1) only",
        ),
        (
            "x -> lambda(\"x * x\")",
            "an expression with `x` exactly once, not 2 times",
        ),
        (
            "x -> lambda(\"x ** 2\")",
            "`**` is not arithmetic unetc runs",
        ),
        (
            "[x, x] -> lambda(\"x[0] * x[1]\")",
            "of two inputs unetc runs `x[0] + x[1] * c` (a scaled residual) only",
        ),
        (
            "x -> lambda(\"x[0] + x[1] * 0.5\")",
            "`x[0] + x[1] * c` takes 2 inputs, not 1",
        ),
        (
            "x -> lambda(\"x / 255\", start: 1)",
            "argument `start`: is not an argument of an arithmetic lambda",
        ),
    ];
    refused_at_line_4("lambda.unet", 4, &cases);
}

#[test]
fn regularizers_are_checked_where_they_are_written() {
    let cases = [
        (
            "x -> conv2d(2, 1, kernel_regularizer: l3)",
            "`conv2d` argument `kernel_regularizer`: `l3` is no regularizer unetc knows",
        ),
        (
            "x -> conv2d(2, 1, bias_regularizer: {l2: -0.1})",
            "`l2` must be a finite number of at least 0, not -0.1",
        ),
        (
            "x -> conv2d(2, 1, kernel_regularizer: {l3: 0.1})",
            "a regularizer has `l1` and `l2`, not `l3`",
        ),
        (
            "x -> batch_normalization(kernel_regularizer: {l2: 0.1})",
            "`batch_normalization` has no argument `kernel_regularizer`",
        ),
        (
            "x -> max_pooling2d(activity_regularizer: 0.1)",
            "a regularizer is `{l2: 0.0001}`, `{l1: ..}`, `{l1: .., l2: ..}` or a name (`l2`), \
             not a number",
        ),
    ];
    refused_at_line_4("reg.unet", 4, &cases);
    // In `defaults`, for every layer of the kind.
    let out = check(
        "reg.unet",
        "model {\n  input 4x4x2\n  defaults conv2d(kernel_regularizer: {l2: 0.001})\n  conv2d(4, 1)\n}\n",
    );
    assert!(!out.contains("error"), "{out}");
}

#[test]
fn normalization_forms_unetc_does_not_run_are_refused() {
    let cases = [
        (
            "x -> normalization(mean: 0.5, variance: 2.0)",
            "argument `mean`: unetc reads the statistics from the layer's weights",
        ),
        (
            "x -> normalization(invert: true)",
            "argument `invert`: unetc runs the normalization, not its inverse",
        ),
        (
            "x -> normalization(axis: 1)",
            "unetc normalises the channel axis only (axis -1 or 3), not 1",
        ),
    ];
    refused_at_line_4("norm.unet", 2, &cases);
}

#[test]
fn tf_op_reshapes_and_resize_are_refused_where_they_cannot_run() {
    let cases = [
        (
            "x -> tf_op(\"compat.v1.squeeze\", axis: -1)",
            "Can not squeeze dim[3], expected a dimension of 1, got 2",
        ),
        (
            "x -> tf_op(\"compat.v1.squeeze\")",
            "tf.compat.v1.squeeze needs an `axis` in 1..=3 or -3..=-1",
        ),
        (
            "x -> tf_op(expand_dims, axis: 0)",
            "tf.expand_dims needs an `axis` in 1..=4 or -4..=-1 that is not the batch axis (0), not 0",
        ),
        (
            "x -> tf_op(expand_dims, axis: 1)",
            "tf.expand_dims would give 4 axes besides the batch",
        ),
        (
            "x -> tf_op(reshape, shape: (2, 4, 4))",
            "tf.reshape runs with `shape` starting with -1 (the batch)",
        ),
        (
            "x -> tf_op(reshape, shape: (-1, 4, -1))",
            "`shape` may have one -1 (the batch's), not several",
        ),
        (
            "x -> tf_op(reshape, shape: (-1, 5, 4))",
            "has 32 values, which do not make target_shape (5, 4)",
        ),
        // Any size runs (6x8 from 4x4 too); Keras's Resizing's crop to the aspect ratio does not.
        (
            "x -> resizing(6, 8, crop_to_aspect_ratio: true)",
            "Resizing with crop_to_aspect_ratio is not run by unetc yet",
        ),
        (
            "x -> tf_op(\"image.resize\")",
            "tf.image.resize needs `size`",
        ),
        (
            "x -> tf_op(\"image.resize\", size: (8, 8), method: bicubic)",
            "method",
        ),
        (
            "x -> tf_op(expand_dims, axis: -1, size: (8, 8))",
            "tf.expand_dims takes no `size` (image.resize does)",
        ),
    ];
    refused_at_line_4("tf_op.unet", 2, &cases);
}

#[test]
fn fixed_dropout_noise_shape_that_does_not_fit() {
    let out = check(
        "fixed_dropout.unet",
        r#"model {
  input 6x5x8
  a = fixed_dropout(0.2, noise_shape: (none, 1, 1))
  b = input_1 -> fixed_dropout(0.2, noise_shape: (none, 1, 1, 4))
  c = input_1 -> fixed_dropout(0.2, noise_shape: (none, 0, 1, 1))
  output a, b, c
}"#,
    );
    // Too few axes, a channel count that is neither 1 nor the input's, a size below 1.
    assert_eq!(
        out.matches("noise_shape (none, 1, 1) does not fit `input_1`'s shape (batch, 6, 5, 8)")
            .count(),
        1,
        "{out}"
    );
    assert!(
        out.contains("noise_shape (none, 1, 1, 4) does not fit `input_1`'s shape (batch, 6, 5, 8)"),
        "{out}"
    );
    assert!(
        out.contains("give one entry per axis, batch first: none, 1 or the axis's size"),
        "{out}"
    );
    assert!(
        out.contains("none or a list of sizes (>= 1) and nones"),
        "{out}"
    );
}

/// unetc's 3-D extensions for PyTorch nets: aligned corners need trilinear sampling, reflect
/// padding needs more voxels than it pads, and an unknown mode or interpolation lists the
/// choices.
#[test]
fn volume_interpolation_and_padding_mode_misuse() {
    for (body, want) in [
        (
            "up_sampling3d(2, align_corners: true)",
            "error[E-align-corners]: UpSampling3D `up_sampling3d`: align_corners applies to trilinear up-sampling only",
        ),
        (
            "zero_padding3d(((0, 0), (5, 1), (0, 0)), mode: reflect)",
            "needs an input larger than the padding on each side, but `input_1` is 4x5x6",
        ),
        (
            "zero_padding3d(1, mode: edge)",
            "expected one of: constant, reflect, replicate",
        ),
        (
            "up_sampling3d(2, interpolation: bilinear)",
            "expected one of: nearest, trilinear",
        ),
    ] {
        let out = check(
            "v.unet",
            &format!("model {{\n  input 4x5x6x2\n  {body}\n}}\n"),
        );
        assert!(out.contains(want), "{body}:\n{out}");
        assert!(out.contains("┌─ v.unet:3:"), "{body}:\n{out}");
    }
}

#[test]
fn errors_of_the_attention_kinds() {
    let out = check(
        "attention.unet",
        "model {
  input 7x6x4
  t = reshape((42, 4))
  short = input_1 -> reshape((21, 8))
  a = [t, short] -> multi_head_attention(num_heads: 2, key_dim: 4)
  b = [t, t, short] -> multi_head_attention(num_heads: 2, key_dim: 4)
  c = [t, t] -> multi_head_attention(num_heads: 2, key_dim: 4, attention_axes: (2))
  d = [input_1, t] -> multi_head_attention(num_heads: 2, key_dim: 4)
  e = input_1 -> patch_extract((2, 2))
  f = t -> patch_extract((2, 2))
  g = t -> patch_embedding(40, 8)
  output a, b, c, d, e, f, g
}
",
    );
    for want in [
        // Different token counts are fine for a query and its value: a is not an error.
        "MultiHeadAttention's value `reshape` and key `reshape_1` must have the same tokens (every axis but the last), not [42, 4] and [21, 8]",
        "unetc attends over every axis between the batch and the features ([1]), not [2]",
        "MultiHeadAttention's query `input_1`, value `reshape` and key must have the same rank",
        "patch_extract takes an image `reshape` (height, width, channels)",
        "patch_embedding adds 40 position embeddings to `reshape`'s 42 patches; they must be as many",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    // 2x2 patches of 7x6 give 3x3 (the last row is in none): e is not an error, nor is a.
    assert!(!out.contains("`patch_extract`:"), "{out}");
    assert!(!out.contains("`multi_head_attention`:"), "{out}");
}

#[test]
fn errors_of_the_swin_kinds() {
    let out = check(
        "swin.unet",
        "model {
  input 8x8x4
  t = reshape((64, 4))
  a = t -> swin_transformer_block(dim: 4, num_patch: (8, 4), num_heads: 2, window_size: 2)
  b = t -> swin_transformer_block(dim: 6, num_patch: (8, 8), num_heads: 2, window_size: 2)
  c = t -> swin_transformer_block(dim: 4, num_patch: (8, 8), num_heads: 3, window_size: 2)
  d = t -> swin_transformer_block(dim: 4, num_patch: (8, 8), num_heads: 2, window_size: 3)
  e = t -> swin_transformer_block(dim: 4, num_patch: (8, 8), num_heads: 2, window_size: 16)
  f = t -> swin_transformer_block(dim: 4, num_patch: (8, 8), num_heads: 2, window_size: 4, shift_size: 4)
  g = t -> patch_merging((4, 16), embed_dim: 4)
  h = t -> patch_merging((1, 64), embed_dim: 4)
  i = t -> patch_expanding(num_patch: (8, 8), embed_dim: 6, upsample_rate: 4)
  j = t -> patch_expanding(num_patch: (8, 8), embed_dim: 8, upsample_rate: 2)
  output a, b, c, d, e, f, g, h, i, j
}
",
    );
    for want in [
        "SwinTransformerBlock reshapes `reshape`'s 64 patches as its num_patch grid 8x4 = 32; they must be as many",
        "SwinTransformerBlock of dim 6 adds its attention and MLP back to `reshape`'s 4 features; dim must be the input's features",
        "SwinTransformerBlock splits 4 features into 3 heads; they must divide evenly",
        "SwinTransformerBlock cuts its 8x8 patch grid into 3x3 windows; both sides must be multiples of window_size",
        "SwinTransformerBlock's window_size 16 is larger than its 8x8 patch grid",
        "`swin_transformer_block` argument `shift_size`: 4 is out of range 0..=3",
        "patch_merging halves its 1x64 patch grid; both sides must be even",
        "patch_expanding's depth_to_space(4) spreads 24 features over 4x4 positions; embed_dim 6 must be a multiple of upsample_rate",
        "patch_expanding with return_vector reshapes its 4 features per position as `reshape`'s 4 // 2 = 2",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    // 4x16 = 64 patches: g is not an error.
    assert!(
        !out.contains("`patch_merging`:\n  ┌─ swin.unet:11"),
        "{out}"
    );
}

/// A TensorFlow function's constant tensor (`y: [[...]]`): read as a rectangular nested list of
/// finite float32 numbers, broadcast from the last axis as TensorFlow does, and refused with the
/// reason where it is not.
#[test]
fn errors_of_constant_tensor_operands() {
    let out = check(
        "constants.unet",
        "model {
  input 4x3x2
  x = conv2d(2, 1)
  a = x -> tf_op(\"__operators__.add\", y: [[1.0], [2.0, 3.0]])
  b = x -> tf_op(\"__operators__.add\", y: [1e39, 1.0])
  c = x -> tf_op(\"__operators__.add\", y: [[[[[[1.0]]]]]])
  d = x -> tf_op(\"__operators__.add\", y: [1.0, 2.0, 3.0])
  e = x -> tf_op(\"__operators__.add\", y: [[[[1.0, 2.0]]], [[[1.0, 2.0]]]])
  f = x -> tf_op(\"math.multiply\", x: [1.0, 2.0], y: 2.0)
  g = x -> tf_op(\"nn.relu\", y: [1.0, 2.0])
  h = x -> tf_op(\"__operators__.add\", y: [])
  i = x -> tf_op(\"__operators__.add\", y: [\"a\", \"b\"])
  j = x -> tf_op(\"math.subtract\", x: [[[[[1.0]]]]])
  k = x -> tf_op(\"math.subtract\", y: [[[0.5, 1.5]]])
  output a, b, c, d, e, f, g, h, i, j, k
}
",
    );
    for want in [
        "`tf_op` argument `y`: not a constant tensor unetc reads (a nested list of numbers): a list of 2 where the others have 1: the lists must be rectangular",
        "the value 1e39 at position 0 is not a finite float32 number",
        "more than 5 nested lists",
        "the constant of shape [3] does not broadcast with `conv2d` (None, 4, 3, 2)",
        "the constant of shape [2, 1, 1, 2] lines up with `conv2d` (None, 4, 3, 2) from the last axis, so its first axis of 2 meets the batch axis",
        "`tf_op` argument `y`: takes one constant, `x:` or `y:`, not both",
        "tf.nn.relu takes no constant tensor",
        "an empty list",
        "a string where a number belongs",
        "the constant of shape [1, 1, 1, 1, 1] has more axes than `conv2d` (None, 4, 3, 2), its batch axis included",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    // k broadcasts: no error at its line.
    assert!(!out.contains("constants.unet:14"), "{out}");
}

/// tf.pad, tf.nn.bias_add and stepped subscripts that unetc does not run: one error each, at
/// the layer, saying what runs instead.
#[test]
fn tf_pad_bias_add_and_steps_misused() {
    refused_at_line_4(
        "tfpad.unet",
        3,
        &[
            (
                r#"x -> tf_op("compat.v1.pad", paddings: ((0, 0), (5, 1), (1, 1), (0, 0)), mode: "SYMMETRIC")"#,
                "symmetric padding by (top, bottom, left, right) [5, 1, 1, 1] needs an input at least as large as the padding",
            ),
            (
                r#"x -> tf_op("compat.v1.pad", paddings: ((0, 0), (1, 1), (1, 1), (0, 1)))"#,
                "the batch and channel pairs must be (0, 0)",
            ),
            (
                r#"x -> tf_op("compat.v1.pad", paddings: ((0, 0), (1, 1)))"#,
                "needs a (before, after) pair for each of the batch, height, width and channels",
            ),
            (
                r#"x -> tf_op("compat.v1.pad", paddings: ((0, 0), (4, 0), (1, 1), (0, 0)), mode: "REFLECT")"#,
                "reflect padding by (top, bottom, left, right) [4, 0, 1, 1] needs an input larger",
            ),
            (
                r#"x -> tf_op("compat.v1.pad", paddings: ((0, 0), (-1, 0)))"#,
                "must be one (before, after) pair of sizes",
            ),
            (
                r#"x -> tf_op("compat.v1.pad", paddings: ((0, 0), (1, 1), (1, 1), (0, 0)), mode: "wrap")"#,
                r#"must be "CONSTANT", "REFLECT" or "SYMMETRIC""#,
            ),
            (
                r#"x -> tf_op("nn.bias_add", y: [1.0, 2.0])"#,
                "the bias has shape [2]; it must have one value per channel of `conv2d` (3)",
            ),
            (
                r#"x -> tf_op("nn.bias_add")"#,
                "needs its bias as `y:`, one value per channel",
            ),
            (
                r#"x -> tf_op("__operators__.getitem", index: "[..., ::0]")"#,
                "a step of 0",
            ),
            (
                r#"x -> tf_op("__operators__.getitem", index: "[:, 3:1:1]")"#,
                "`3:1` of axis 1 (of 4) is empty",
            ),
        ],
    );
}
