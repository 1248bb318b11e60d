//! The command line as issue 11 asked for it, run through the built binary: help on every
//! argument, `--format json` of `sizes`/`tiles`/`plan` against their text, `check -` and several
//! specs at once, the exit codes (0 fine, 1 spec errors, 2 usage or bad input file, 3 no answer),
//! no ONNX export with silent random weights, and spec outputs whose form follows the extension.

mod common;

use common::*;
use serde_json::Value as Json;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Runs the built `unetc` in the repository root with `stdin` as standard input.
fn unetc_with_input(args: &[&str], stdin: impl AsRef<[u8]>) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_unetc"))
        .args(args)
        .current_dir(root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("unetc runs");
    // A command that does not read its input may close it first: that is not a failure here.
    let _ = child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(stdin.as_ref());
    let out = child.wait_with_output().expect("unetc ends");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn unetc(args: &[&str]) -> (i32, String, String) {
    unetc_with_input(args, "")
}

fn json_of(args: &[&str]) -> Json {
    let (code, out, err) = unetc(args);
    assert_eq!(code, 0, "{args:?}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {out}"))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn temp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// A spec with errors (an unknown layer kind).
const BAD_SPEC: &str = "model {\n  input 8x8x1\n  conv2dd(4)\n}\n";

/// A valid spec whose output is a vector, not an image: it has no tiles.
const VECTOR_OUTPUT_SPEC: &str =
    "model {\n  input 8x8x1\n  conv2d(2, 3)\n  flatten()\n  dense(2)\n}\n";

/// What a CPU run of specs/original.unet holds for weights (floats x 4 bytes):
/// the 31,030,658 parameters as read, and prepared again: 2 x 31,030,658 = 62,061,316;
/// Winograd keeps 16 taps for 9 of every 3x3 conv with >= 8 input channels, 7 x sum(c x f) =
/// 7 x 3,137,536 = 21,962,752 (encoder 64x64 + 64x128 + 128x128 + 128x256 + 256x256 + 256x512 +
/// 512x512 + 512x1024 + 1024x1024 = 2,093,056; decoder 1024x512 + 512x512 + 512x256 + 256x256 +
/// 256x128 + 128x128 + 128x64 + 64x64 = 1,044,480; the 1->64 conv stays direct); and two
/// defaults per output channel of a layer with weights, 2 x 6,850 = 13,700 (convs 3,968 +
/// 1,920, transposed 960, head 2). 84,037,768 floats.
const ORIGINAL_CPU_WEIGHT_BYTES: u64 = 84_037_768 * 4;

#[test]
fn help_names_what_each_argument_is_for() {
    for (command, wanted) in [
        ("check", "`-` reads one from standard input"),
        ("export", "Replace the output file if it exists"),
        ("bench", "Timed forward passes"),
        ("sizes", "Try every input size from 1 up to this"),
        ("import", "The form of the spec"),
    ] {
        let (code, out, err) = unetc(&[command, "--help"]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains(wanted), "`unetc {command} --help`:\n{out}");
    }
}

fn value_after<'a>(line: &'a str, label: &str) -> &'a str {
    line.split_once(label)
        .unwrap_or_else(|| panic!("no `{label}` in `{line}`"))
        .1
        .trim()
}

/// `sizes --format json` states the original U-Net's closed form, the sizes the text lists and
/// the same nearest sizes.
#[test]
fn sizes_json_has_the_numbers_of_the_text() {
    let args = [
        "sizes",
        "specs/original.unet",
        "--max",
        "600",
        "--near",
        "500",
    ];
    let (code, text, err) = unetc(&args);
    assert_eq!(code, 0, "{err}");
    let json = json_of(&[&args[..], &["--format", "json"]].concat());
    assert_eq!(json["schema"], 1);
    assert_eq!(json["spec"], "specs/original.unet");
    assert_eq!(json["input_shape"], serde_json::json!([572, 572, 1]));
    assert_eq!(json["max"], 600);
    let axes = json["axes"].as_array().unwrap();
    assert_eq!(axes.len(), 1, "a square input is one axis");
    let axis = &axes[0];
    assert_eq!(axis["axis"], "height_and_width");
    // in ≡ 12 mod 16, in ≥ 188; out = in − 184
    let cf = &axis["closed_form"];
    assert_eq!(
        (&cf["residue"], &cf["period"], &cf["min"]),
        (&12.into(), &16.into(), &188.into())
    );
    assert_eq!(cf["output"]["scale"].as_f64(), Some(1.0));
    assert_eq!(cf["output"]["offset"].as_f64(), Some(-184.0));
    assert!(text.contains("valid: in ≡ 12 mod 16, in ≥ 188"), "{text}");
    assert!(text.contains("output: out = in − 184"), "{text}");
    // Every accepted size up to --max, each with its output; the text shows the first six.
    let accepted: Vec<(u64, u64)> = axis["accepted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["input"].as_u64().unwrap(), p["output"].as_u64().unwrap()))
        .collect();
    let expected: Vec<(u64, u64)> = (188..=600).step_by(16).map(|n| (n, n - 184)).collect();
    assert_eq!(accepted, expected);
    let smallest_line = text.lines().find(|l| l.contains("smallest:")).unwrap();
    let smallest: Vec<String> = accepted
        .iter()
        .take(6)
        .map(|(i, o)| format!("{i} → {o}"))
        .collect();
    assert_eq!(value_after(smallest_line, "smallest:"), smallest.join(", "));
    let nearest = &axis["nearest"];
    assert_eq!(nearest["to"], 500);
    assert_eq!(
        nearest["below"],
        serde_json::json!({"input": 492, "output": 308})
    );
    assert_eq!(
        nearest["above"],
        serde_json::json!({"input": 508, "output": 324})
    );
    assert!(
        text.contains("nearest to 500: 492 (output 308) and 508 (output 324)"),
        "{text}"
    );
    // skip crops: 4/16/40/88
    let crops: Vec<Json> = json["skip_crops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["cropping"][0].clone())
        .collect();
    assert_eq!(crops, [4, 16, 40, 88].map(Json::from));
    assert!(text.contains("skip crops: 4/16/40/88"), "{text}");
}

#[test]
fn tiles_json_has_the_numbers_of_the_text() {
    let args = [
        "tiles",
        "specs/original.unet",
        "--image",
        "2048x1536",
        "--memory",
        "2GiB",
        "--max",
        "1800",
    ];
    let (code, text, err) = unetc(&args);
    assert_eq!(code, 0, "{err}");
    let json = json_of(&[&args[..], &["--format", "json"]].concat());
    let n = |v: &Json| v.as_u64().unwrap();
    assert_eq!(json["schema"], 2);
    assert_eq!(
        (n(&json["image"]["width"]), n(&json["image"]["height"])),
        (2048, 1536)
    );
    assert_eq!(json["mode"], "overlap-tile");
    assert_eq!(json["exact"], true);
    assert_eq!(n(&json["memory_budget_bytes"]), 2 << 30);
    // Square here: 2048 - 184 would allow more, --max 1800 caps it.
    let side = |v: &Json| {
        assert_eq!(v["width"], v["height"]);
        n(&v["width"])
    };
    let (tile_in, tile_out) = (side(&json["tile"]["input"]), side(&json["tile"]["output"]));
    assert!(tile_in <= 1800);
    assert_eq!(
        tile_in - tile_out,
        184,
        "the original U-Net loses 184 pixels"
    );
    assert_eq!(tile_in % 16, 12);
    let (halo, field) = (n(&json["halo"]), n(&json["receptive_field"]));
    assert_eq!(halo, 92);
    assert!(text.contains(&format!(
        "tile: {tile_in}x{tile_in} in -> {tile_out}x{tile_out} out (halo {halo} pixels each side; receptive field {field})"
    )), "{text}");
    assert!(
        text.contains(&format!(
            "overlap between neighbouring input tiles: {} pixels",
            n(&json["overlap"])
        )),
        "{text}"
    );
    let tiles = &json["tiles"];
    // Tiles step by the output tile rounded down to the 16-pixel grid.
    let step = tile_out / 16 * 16;
    assert_eq!(n(&tiles["columns"]), (2048 - tile_out).div_ceil(step) + 1);
    assert_eq!(n(&tiles["rows"]), (1536 - tile_out).div_ceil(step) + 1);
    assert_eq!(n(&tiles["total"]), n(&tiles["rows"]) * n(&tiles["columns"]));
    assert!(
        text.contains(&format!(
            "tiles: {} x {} = {}",
            n(&tiles["columns"]),
            n(&tiles["rows"]),
            n(&tiles["total"])
        )),
        "{text}"
    );
    let memory = &json["memory_per_tile"];
    let total = n(&memory["total_bytes"]);
    assert_eq!(
        total,
        n(&memory["arena_bytes"]) + n(&memory["weight_bytes"])
    );
    assert!(total <= 2 << 30);
    assert_eq!(n(&memory["weight_bytes"]), ORIGINAL_CPU_WEIGHT_BYTES);
    assert!(
        text.contains(&format!(
            "weights {} =",
            unetc::text::bytes(n(&memory["weight_bytes"]))
        )),
        "{text}"
    );
}

#[test]
fn plan_json_has_the_rows_of_the_text() {
    let (code, text, err) = unetc(&["plan", "specs/original.unet"]);
    assert_eq!(code, 0, "{err}");
    let json = json_of(&["plan", "specs/original.unet", "--format", "json"]);
    assert_eq!(json["schema"], 1);
    assert_eq!(json["element_bytes"], 4);
    let steps = json["steps"].as_array().unwrap();
    // One text row per step, in the same order (after the header, before the blank line).
    let rows: Vec<&str> = text.lines().skip(1).take_while(|l| !l.is_empty()).collect();
    assert_eq!(rows.len(), steps.len());
    for (row, step) in rows.iter().zip(steps) {
        let layer = step["layer"].as_str().unwrap();
        assert_eq!(row.split_whitespace().next(), Some(layer));
        match &step["place"] {
            Json::Null => assert!(row.ends_with(" -"), "{row}"),
            place => assert!(
                row.contains(&format!("buffer {} @ ", place["buffer"])),
                "{row} / {place}"
            ),
        }
    }
    let with_work = |w: &str| steps.iter().filter(|s| s["work"] == w).count();
    assert_eq!(with_work("window_of"), 4);
    assert_eq!(with_work("never_built"), 4);
    let softmax = steps.iter().find(|s| s["layer"] == "softmax").unwrap();
    assert_eq!(softmax["work"], "fused_into");
    assert_eq!(softmax["convolution"], "conv2d_18");
    let crop = steps.iter().find(|s| s["work"] == "window_of").unwrap();
    assert_eq!(
        (&crop["layer"], &crop["source"]),
        (&"cropping2d".into(), &"conv2d_7".into())
    );
    let conv = steps.iter().find(|s| s["layer"] == "conv2d_18").unwrap();
    assert_eq!(
        (&conv["work"], &conv["activation"]),
        (&"kernel".into(), &"softmax".into())
    );
    let n = |k: &str| json[k].as_u64().unwrap();
    assert_eq!(n("working_steps") + n("free_layers"), steps.len() as u64);
    assert_eq!(n("arena_bytes"), n("arena_elements") * 4);
    assert!(text.contains(&format!(
        "{} steps run work, {} layers cost nothing; {} buffers in one arena of {} per image ({} elements of 4 bytes); the most alive at once is {}",
        n("working_steps"),
        n("free_layers"),
        n("buffers"),
        unetc::text::bytes(n("arena_bytes")),
        n("arena_elements"),
        unetc::text::bytes(n("live_minimum_bytes")),
    )), "{text}");
}

#[test]
fn check_reads_standard_input() {
    let dsl = std::fs::read_to_string(root().join("specs/original.unet")).unwrap();
    let yaml = std::fs::read_to_string(root().join("specs/original.yaml")).unwrap();
    let (_, from_file, _) = unetc(&["check", "specs/original.unet"]);
    assert!(
        from_file.contains("Total params: 31,030,658"),
        "{from_file}"
    );
    let (code, out, err) = unetc_with_input(&["check", "-"], &dsl);
    assert_eq!((code, out.as_str()), (0, from_file.as_str()), "{err}");
    let (code, out, err) = unetc_with_input(&["check", "-", "--stdin-format", "yaml"], &yaml);
    assert_eq!((code, out.as_str()), (0, from_file.as_str()), "{err}");
    // YAML read as the DSL: a syntax error at <stdin>, and a note on how to read YAML.
    let (code, out, err) = unetc_with_input(&["check", "-"], &yaml);
    assert_eq!(code, 1);
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains("<stdin>:") && err.contains("--stdin-format yaml"),
        "{err}"
    );
    // Errors point into <stdin>.
    let (code, _, err) = unetc_with_input(&["check", "-"], BAD_SPEC);
    assert_eq!(code, 1);
    assert!(
        err.contains("E-unknown-kind") && err.contains("<stdin>:3"),
        "{err}"
    );
    // Not UTF-8, or standard input twice: clear errors, exit 2.
    let (code, _, err) = unetc_with_input(&["check", "-"], b"model {\xff\n");
    assert_eq!(code, 2);
    assert!(
        err.contains("standard input") && err.contains("UTF-8"),
        "{err}"
    );
    let (code, _, err) = unetc(&["check", "-", "-"]);
    assert_eq!(code, 2);
    assert!(err.contains("standard input"), "{err}");
}

#[test]
fn check_takes_several_specs_and_exits_with_the_worst() {
    let dir = temp();
    let bad = dir.path().join("bad.unet");
    std::fs::write(&bad, BAD_SPEC).unwrap();
    let (_, original, _) = unetc(&["check", "specs/original.unet"]);
    let (_, bn, _) = unetc(&["check", "specs/bn_same.yaml"]);
    let (code, out, err) = unetc(&["check", "specs/original.unet", "specs/bn_same.yaml"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        format!("==> specs/original.unet <==\n{original}\n==> specs/bn_same.yaml <==\n{bn}")
    );
    // A spec with errors: 1; a missing file besides: 2. The others are still checked.
    let (code, out, err) = unetc(&["check", s(&bad), "specs/original.unet"]);
    assert_eq!(code, 1);
    assert!(
        out.contains(&original) && err.contains("E-unknown-kind"),
        "{err}"
    );
    let (code, out, err) = unetc(&[
        "check",
        "specs/missing.unet",
        s(&bad),
        "specs/original.unet",
    ]);
    assert_eq!(code, 2);
    assert!(
        out.contains(&original) && err.contains("specs/missing.unet"),
        "{err}"
    );
    // --after applies to each spec: both tables continue the names of the first post.
    let (code, after_one, err) = unetc(&[
        "check",
        "specs/original_second_post.unet",
        "--after",
        "specs/original.unet",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(after_one.contains("input_2"), "{after_one}");
    let (code, out, err) = unetc(&[
        "check",
        "specs/original_second_post.unet",
        "specs/original_second_post.unet",
        "--after",
        "specs/original.unet",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.matches(&after_one).count(), 2, "{out}");
    // JSON: an array of the single-spec objects, each with its file.
    let (code, out, _) = unetc(&["check", "specs/original.unet", s(&bad), "--format", "json"]);
    assert_eq!(code, 1);
    let objects: Vec<Json> = serde_json::from_str(&out).unwrap();
    assert_eq!(objects.len(), 2);
    assert_eq!(objects[0]["file"], "specs/original.unet");
    assert_eq!(objects[0]["totals"]["params"], 31_030_658);
    assert_eq!(objects[1]["file"], s(&bad));
    assert_eq!(objects[1]["diagnostics"][0]["code"], "E-unknown-kind");
    // One spec: the object itself, as before.
    let single = json_of(&["check", "specs/original.unet", "--format", "json"]);
    assert!(single.is_object() && single.get("file").is_none());
}

/// 0: fine; 1: the spec has errors; 2: usage, unreadable or invalid input file; 3: a valid
/// request with no answer.
#[test]
fn exit_codes_say_what_went_wrong() {
    let dir = temp();
    let bad = dir.path().join("bad.unet");
    std::fs::write(&bad, BAD_SPEC).unwrap();
    let vector = dir.path().join("vector.unet");
    std::fs::write(&vector, VECTOR_OUTPUT_SPEC).unwrap();
    let not_json = dir.path().join("model.json");
    std::fs::write(&not_json, "{ this is not JSON").unwrap();
    let not_a_model = dir.path().join("other.json");
    std::fs::write(&not_a_model, "{\"hello\": 1}").unwrap();
    let cases: &[(&[&str], i32, &str)] = &[
        (&["check", "specs/original.unet"], 0, ""),
        (&["check", s(&bad)], 1, "E-unknown-kind"),
        (&["tiles", s(&bad), "--image", "64x64"], 1, "E-unknown-kind"),
        (&["check", "specs/missing.unet"], 2, "cannot read"),
        (
            &["check", "specs/original.unet", "--style", "nope"],
            2,
            "nope",
        ),
        (&["sizes", "specs/original.unet", "--max", "0"], 2, "--max"),
        (
            &["tiles", "specs/original.unet", "--image", "big"],
            2,
            "WxH",
        ),
        (&["import", s(&not_json)], 2, "not JSON"),
        (&["import", s(&not_a_model)], 2, "config"),
        (
            &[
                "tiles",
                "specs/original.unet",
                "--image",
                "512x512",
                "--memory",
                "1MiB",
                "--max",
                "400",
            ],
            3,
            "the memory budget 1.0 MiB is too small for this net",
        ),
        (
            &["tiles", s(&vector), "--image", "64x64", "--max", "16"],
            3,
            "not an image",
        ),
    ];
    for &(args, want, message) in cases {
        let (code, out, err) = unetc(args);
        assert_eq!(code, want, "{args:?}: {err}");
        assert!(err.contains(message), "{args:?}: {err}");
        if want == 3 {
            assert!(out.is_empty(), "{args:?}: {out}");
        }
    }
}

#[test]
fn onnx_export_needs_weights_or_an_explicit_random_choice() {
    let dir = temp();
    let out = dir.path().join("m.onnx");
    let spec = "tests/golden/original_small.unet";
    let (code, _, err) = unetc(&["export", spec, "--to", "onnx", "-o", s(&out)]);
    assert_eq!(code, 2);
    assert!(
        err.contains("--weights w.safetensors") && err.contains("--random-weights"),
        "{err}"
    );
    assert!(!out.exists());
    // --seed only with --random-weights; --random-weights not with --weights.
    let (code, _, _) = unetc(&["export", spec, "--to", "onnx", "--seed", "3", "-o", s(&out)]);
    assert_eq!(code, 2);
    let (code, _, _) = unetc(&[
        "export",
        spec,
        "--to",
        "onnx",
        "--random-weights",
        "--weights",
        "tests/golden/original_small.weights.safetensors",
        "-o",
        s(&out),
    ]);
    assert_eq!(code, 2);
    assert!(!out.exists());
    let (code, _, err) = unetc(&[
        "export",
        spec,
        "--to",
        "onnx",
        "--random-weights",
        "--seed",
        "3",
        "-o",
        s(&out),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("random weights, seed 3"), "{err}");
    assert!(out.exists());
    let trained = dir.path().join("trained.onnx");
    let (code, _, err) = unetc(&[
        "export",
        spec,
        "--to",
        "onnx",
        "--weights",
        "tests/golden/original_small.weights.safetensors",
        "-o",
        s(&trained),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("random"), "{err}");
    // Keras code has no weights of either kind.
    let (code, _, _) = unetc(&["export", spec, "--to", "keras", "--random-weights"]);
    assert_eq!(code, 2);
}

fn summary_of(spec: &Path) -> String {
    let (code, out, err) = unetc(&["check", s(spec)]);
    assert_eq!(code, 0, "{}: {err}", spec.display());
    out
}

#[test]
fn import_and_convert_write_the_form_their_output_is_named() {
    let dir = temp();
    let json = "tests/keras_json/original.json";
    let at = |name: &str| -> PathBuf { dir.path().join(name) };
    for name in ["m.unet", "m.yaml", "m.yml"] {
        let (code, _, err) = unetc(&["import", json, "-o", s(&at(name))]);
        assert_eq!(code, 0, "{name}: {err}");
    }
    let written = |name: &str| std::fs::read_to_string(at(name)).unwrap();
    assert!(
        written("m.unet").contains("model \"model\" {"),
        "{}",
        written("m.unet")
    );
    assert!(
        written("m.yaml").contains("model:"),
        "{}",
        written("m.yaml")
    );
    assert_eq!(written("m.yaml"), written("m.yml"));
    let dsl_summary = summary_of(&at("m.unet"));
    assert!(
        dsl_summary.contains("Total params: 31,030,658"),
        "{dsl_summary}"
    );
    assert_eq!(summary_of(&at("m.yaml")), dsl_summary);
    // Standard output: the DSL, or what --to asks for.
    let (_, out, _) = unetc(&["import", json]);
    assert_eq!(out, written("m.unet"));
    let (_, out, _) = unetc(&["import", json, "--to", "yaml"]);
    assert_eq!(out, written("m.yaml"));
    // A name that says no form, or another form than --to: refused, nothing written.
    for args in [
        &["import", json, "-o", s(&at("m.txt"))][..],
        &["import", json, "-o", s(&at("m"))],
        &["import", json, "--to", "dsl", "-o", s(&at("other.yaml"))],
        &[
            "convert",
            "specs/original.unet",
            "--to",
            "yaml",
            "-o",
            s(&at("other.unet")),
        ],
    ] {
        let (code, _, err) = unetc(args);
        assert_eq!(code, 2, "{args:?}");
        assert!(
            err.contains(".unet") && err.contains(".yaml"),
            "{args:?}: {err}"
        );
    }
    for name in ["m.txt", "m", "other.yaml", "other.unet"] {
        assert!(!at(name).exists(), "{name} was written");
    }
}

/// `check` on a spec that fails at its own size points to `unetc sizes SPEC`, and that command
/// then answers (it used to refuse the spec for the very errors it was sent to fix); its
/// suggestions are sizes `check` accepts.
#[test]
fn sizes_answers_for_a_spec_that_fails_at_its_own_size() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("odd.unet");
    let text = std::fs::read_to_string(root().join("specs/original.unet"))
        .unwrap()
        .replace("572x572x1", "390x389x1");
    std::fs::write(&spec, &text).unwrap();
    let spec_arg = spec.to_str().unwrap();
    let (code, _, err) = unetc(&["check", spec_arg]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("help: heights that work near 390: 380 (output 196) and 396 (output 212); widths that work near 389: 380 (output 196) and 396 (output 212)"),
        "{err}"
    );
    assert!(
        err.contains(&format!("`unetc sizes {spec_arg}` lists them all")),
        "{err}"
    );
    let (code, out, err) = unetc(&["sizes", spec_arg]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("does not work at its own input size"), "{err}");
    assert!(out.contains("valid: in ≡ 12 mod 16, in ≥ 188"), "{out}");
    for shape in ["380x380x1", "396x380x1", "380x396x1"] {
        let (code, _, err) = unetc(&["check", spec_arg, "--input-shape", shape]);
        assert_eq!(code, 0, "{shape}: {err}");
    }
    let (code, out, err) = unetc(&["tiles", spec_arg, "--image", "1000x800", "--memory", "2GiB"]);
    assert_eq!(code, 0, "{err}");
    // ORIGINAL_CPU_WEIGHT_BYTES = 336,151,072 bytes = 320.6 MiB.
    assert!(out.contains("+ weights 320.6 MiB"), "{out}");
}

/// Volume (3-D U-Net) specs: `plan` and `diagram` answer (the diagram labels sizes as `44³`);
/// `sizes` answers per axis (tests/volumes.rs checks its numbers), `tiles` takes `--image
/// DxHxW` and refuses WxH, `sizes --format json` lists the three axes.
#[test]
fn volumes_plan_draw_sizes_and_tiles() {
    let spec = "tests/golden/unet3d_valid.unet";
    let (code, plan, stderr) = unetc(&["plan", spec]);
    assert_eq!(code, 0, "{stderr}");
    assert!(plan.contains("cropping3d"), "{plan}");
    let (code, svg, stderr) = unetc(&["diagram", spec]);
    assert_eq!(code, 0, "{stderr}");
    assert!(svg.contains("44³") && svg.contains("4³"), "{svg}");
    let (code, out, stderr) = unetc(&["sizes", spec, "--max", "50"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(out.contains("depth, sizes 1..=50:"), "{out}");
    let (code, _, stderr) = unetc(&["tiles", spec, "--image", "100x100"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("expected DxHxW"), "{stderr}");
    // JSON: three axes, each `in ≡ 0 mod 4, in ≥ 44` (derived in tests/volumes.rs).
    let (code, out, stderr) = unetc(&["sizes", spec, "--format", "json", "--max", "50"]);
    assert_eq!(code, 0, "{stderr}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    let axes = j["axes"].as_array().unwrap();
    assert_eq!(axes.len(), 3, "{out}");
    for (a, name) in axes.iter().zip(["depth", "height", "width"]) {
        assert_eq!(a["axis"], name);
        assert_eq!(a["closed_form"]["min"], 44);
        assert_eq!(a["closed_form"]["period"], 4);
    }
    let (code, out, stderr) = unetc(&[
        "check",
        spec,
        "--input-shape",
        "60x60x60x1",
        "--style",
        "tf-keras",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(out.contains("(None, 20, 20, 20, 2)"), "{out}");
}

/// README "Tiles" shows `tiles` on seed 002's net for an 8000x8000 image: every line is what the
/// program prints.
#[test]
fn readme_tiles_example_is_what_tiles_prints() {
    let (code, text, err) = unetc(&[
        "tiles",
        "specs/bn_same.yaml",
        "--image",
        "8000x8000",
        "--memory",
        "4GiB",
    ]);
    assert_eq!(code, 0, "{err}");
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let block = readme
        .split("$ unetc tiles specs/bn_same.yaml --image 8000x8000 --memory 4GiB\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("README shows the example");
    assert_eq!(block, text);
}

/// `tiles --format json` for a same-padding net: the exact mode with its halo and reach, and the
/// blend mode marked not exact.
#[test]
fn tiles_json_for_a_same_padding_net_says_the_mode() {
    let base = [
        "tiles",
        "specs/bn_same.yaml",
        "--image",
        "8000x8000",
        "--memory",
        "4GiB",
        "--format",
        "json",
    ];
    let json = json_of(&base);
    assert_eq!(json["mode"], "exact");
    assert_eq!(json["exact"], true);
    // By hand as in tests/sizes.rs for depth 4 (stride 16): two 3x3 convs per level at strides
    // 1, 2, 4, 8, 16 (bottom), 8, 4, 2, 1: 2·46 = 92; the four 2x2 pools 1 + 2 + 4 + 8 = 15:
    // reach 107, rounded up to the grid of 16: halo 112.
    assert_eq!(
        (json["reach"].as_u64(), json["halo"].as_u64()),
        (Some(107), Some(112))
    );
    assert_eq!(json["not_tileable_exactly"], Json::Null);
    let blend = json_of(&[&base[..], &["--tile-mode", "blend", "--blend", "constant"]].concat());
    assert_eq!(blend["mode"], "blend");
    assert_eq!(blend["exact"], false);
    assert_eq!(blend["blend_weights"], "constant");
}
