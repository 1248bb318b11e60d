//! Every file in specs/ parses with its front end (the full pipeline is tested in check_specs.rs).

use std::path::{Path, PathBuf};
use unetc::diag::{render_plain, SourceMap};
use unetc::front::{parse, Format};

fn spec_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("specs/ exists") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            spec_files(&path, out);
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("unet" | "yaml" | "yml")
        ) {
            out.push(path);
        }
    }
}

#[test]
fn every_spec_parses() {
    let mut files = Vec::new();
    spec_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("specs"),
        &mut files,
    );
    files.sort();
    let mut failures = String::new();
    for path in &files {
        let text = std::fs::read_to_string(path).expect("readable spec");
        let mut sources = SourceMap::new();
        let file = sources.add(path, text.clone());
        if let Err(diags) = parse(Format::of_path(path), file, &text) {
            failures.push_str(&render_plain(&sources, &diags));
        }
    }
    assert!(failures.is_empty(), "{failures}");
}
