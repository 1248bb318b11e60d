//! Every input the fuzzers found a crash or hang with, and a small seed corpus, fed again to the
//! same entry points as the fuzz targets (`fuzz/src/lib.rs`, included here): each must return
//! normally, and quickly. Files live in `tests/fuzz_corpus/<target>/`; README.md ("What unetc
//! guarantees on bad input") says how to run the fuzzers and add what they find.

#[path = "../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod targets;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The longest one input may take in a debug build (the fuzzers' own limit is 10 s in release).
const BOUND: Duration = Duration::from_secs(10);

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fuzz_corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn run(target: &str) {
    let (_, entry) = targets::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .expect("a known target");
    let files = corpus(target);
    assert!(!files.is_empty(), "no corpus for {target}");
    let mut failures = Vec::new();
    for file in &files {
        let data = std::fs::read(file).expect("readable corpus file");
        let start = Instant::now();
        let result = std::panic::catch_unwind(|| entry(&data));
        let took = start.elapsed();
        if result.is_err() {
            failures.push(format!("{}: panicked", file.display()));
        } else if took > BOUND {
            failures.push(format!("{}: took {took:?}", file.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} inputs failed:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

#[test]
fn dsl() {
    run("dsl");
}

#[test]
fn yaml() {
    run("yaml");
}

#[test]
fn check() {
    run("check");
}

#[test]
fn safetensors() {
    run("safetensors");
}

#[test]
fn npy() {
    run("npy");
}

#[test]
fn image() {
    run("image");
}

#[test]
fn onnx() {
    run("onnx");
}

/// The corpus stays small: it is in the repository.
#[test]
fn corpus_is_small() {
    let total: u64 = targets::TARGETS
        .iter()
        .flat_map(|(name, _)| corpus(name))
        .map(|f| std::fs::metadata(f).map_or(0, |m| m.len()))
        .sum();
    assert!(total < 1 << 20, "tests/fuzz_corpus holds {total} bytes");
}
