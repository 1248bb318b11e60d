//! The fuzz targets' bodies, one function per target. The fuzz binaries in `fuzz_targets/` call
//! them, and `tests/fuzz_regressions.rs` (which includes this file with `#[path]`) feeds them every
//! file of `tests/fuzz_corpus/<target>/`, so a crash found by the fuzzer stays fixed in
//! `cargo test`. Each function must return normally for every input: a panic, an abort, a stack
//! overflow, a huge allocation or a hang is a bug in unetc.

use std::io::Write;
use std::path::{Path, PathBuf};
use unetc::diag::{render_plain, FileId};
use unetc::expand::Session;
use unetc::io::Expected;
use unetc::report::summary::{render, SummaryStyle};
use unetc::{compile_source, Options};

/// A fuzz target's body.
pub type Target = fn(&[u8]);

/// The targets, by the name of their binary and corpus folder.
pub const TARGETS: &[(&str, Target)] = &[
    ("dsl", dsl),
    ("yaml", yaml),
    ("check", check),
    ("safetensors", safetensors),
    ("npy", npy),
    ("image", image),
    ("onnx", onnx),
];

/// The DSL front end alone.
pub fn dsl(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = unetc::front::dsl::parse(FileId(0), &text);
}

/// The YAML front end alone.
pub fn yaml(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = unetc::front::yaml::parse(FileId(0), &text);
}

/// The whole `check` pipeline on the text, once as a `.unet` and once as a `.yaml` file, each in
/// specs/ so that includes of the real backbones resolve: compile, both summary layouts, the extra
/// lines, JSON and the rendered diagnostics. Every diagnostic must point inside a file read.
pub fn check(data: &[u8]) {
    let text = String::from_utf8_lossy(data).into_owned();
    for name in ["fuzz.unet", "fuzz.yaml"] {
        let path = specs_dir().join(name);
        let c = compile_source(
            &path,
            text.clone(),
            &Options::default(),
            &mut Session::new(),
        );
        for d in &c.diags {
            for (span, _) in d.primary.iter().chain(d.secondary.iter()) {
                let len = c.sources.text(span.file).len() as u32;
                assert!(
                    span.start <= span.end && span.end <= len,
                    "diagnostic {} `{}` has span {}..{} outside its file of {len} bytes",
                    d.code,
                    d.message,
                    span.start,
                    span.end
                );
            }
        }
        let _ = render_plain(&c.sources, &c.diags);
        let _ = unetc::report::json::check_json(&c).to_string();
        let model = unetc::report::summary_model(&c);
        let _ = render(&model, SummaryStyle::Legacy, None);
        let _ = render(&model, SummaryStyle::TfKeras, None);
        let _ = render(&model, SummaryStyle::Legacy, Some(40));
        let _ = unetc::report::extras_text(&c);
    }
}

/// The weights a small model expects (conv, transposed conv, batch norm, dense), so that the
/// reader gets past the header and compares names, shapes and dtypes.
fn expected_weights() -> Vec<Expected> {
    [
        ("conv2d/kernel", vec![1, 1, 2, 3]),
        ("conv2d/bias", vec![3]),
        ("conv2d_transpose/kernel", vec![2, 2, 3, 3]),
        ("batch_normalization/gamma", vec![3]),
        ("dense/kernel", vec![3, 2]),
    ]
    .into_iter()
    .map(|(name, shape)| Expected {
        name: name.to_string(),
        shape,
    })
    .collect()
}

/// The safetensors reader, on the bytes as a file; twice: against a small model's weights and
/// against a model with no weights.
pub fn safetensors(data: &[u8]) {
    with_file(data, "weights.safetensors", |path| {
        let _ = unetc::io::load_weights(path, &expected_weights());
        let _ = unetc::io::load_weights(path, &[]).map_err(|e| e.to_string());
    });
}

/// The `.npy` reader.
pub fn npy(data: &[u8]) {
    with_file(data, "array.npy", |path| {
        let _ = unetc::io::read_npy(path).map_err(|e| e.to_string());
    });
}

/// The ONNX importer (`unetc import model.onnx`); an imported spec is compiled too.
pub fn onnx(data: &[u8]) {
    if let Ok(m) = unetc::interop::onnx_import::import_onnx(data) {
        let _ = unetc::compile_source(
            std::path::Path::new("imported.unet"),
            m.spec,
            &unetc::Options::default(),
            &mut unetc::expand::Session::new(),
        );
    }
}

/// The PNG/TIFF reader.
pub fn image(data: &[u8]) {
    with_file(data, "image.png", |path| {
        let _ = unetc::io::read_image(path).map_err(|e| e.to_string());
    });
}

/// Writes `data` to a fresh temporary file named `name` and calls `f` with its path.
fn with_file(data: &[u8], name: &str, f: impl FnOnce(&Path)) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join(name);
    let mut file = std::fs::File::create(&path).expect("a temporary file");
    file.write_all(data).expect("writing the temporary file");
    drop(file);
    f(&path);
}

/// specs/ of the unetc checkout (this file is compiled both from fuzz/ and from the main crate).
fn specs_dir() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    if here.join("specs").is_dir() {
        here.join("specs")
    } else {
        here.join("..").join("specs")
    }
}
