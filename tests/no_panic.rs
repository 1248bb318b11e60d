//! No input makes unetc panic: every spec in specs/ is mutated many ways (bytes deleted,
//! duplicated, replaced by tokens that matter to the parsers) and compiled; each compile must
//! return normally, and every diagnostic must point inside a file that was read.

mod common;

use common::*;
use unetc::diag::render_plain;
use unetc::expand::Session;
use unetc::{compile_source, Options};

/// A small deterministic generator (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const TOKENS: &[&str] = &[
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    ",",
    ":",
    "->",
    "=",
    "\"",
    "#",
    "\n",
    "-",
    "0",
    "-1",
    "99999999999999999999",
    "1e308",
    "x",
    "0x0x0",
    "..=",
    "..",
    "//",
    "none",
    "true",
    "for",
    "block",
    "model",
    "include",
    "input",
    "output",
    "$",
    "${",
    "- ",
    "  ",
    "*",
    "&a",
    "!!str",
    "'",
    "cropping2d(1000)",
    "max_pooling2d(0)",
    "conv2d(0, 0)",
    "unet(depth: 12)",
];

fn mutate(text: &str, rng: &mut Rng) -> String {
    let mut bytes = text.as_bytes().to_vec();
    for _ in 0..1 + rng.below(3) {
        let at = rng.below(bytes.len() + 1);
        match rng.below(4) {
            0 => {
                let end = (at + 1 + rng.below(12)).min(bytes.len());
                bytes.drain(at.min(end)..end);
            }
            1 => {
                let tok = TOKENS[rng.below(TOKENS.len())].as_bytes();
                bytes.splice(at..at, tok.iter().copied());
            }
            2 if !bytes.is_empty() => {
                let from = rng.below(bytes.len());
                let end = (from + 1 + rng.below(40)).min(bytes.len());
                let chunk: Vec<u8> = bytes[from..end].to_vec();
                bytes.splice(at.min(bytes.len())..at.min(bytes.len()), chunk);
            }
            _ => {
                if at < bytes.len() {
                    bytes[at] = b"0123456789abcxyz_:-[]{}(),\" \n"[rng.below(29)];
                }
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

#[test]
fn mutated_specs_never_panic() {
    // UNETC_MUTANTS / UNETC_SEED widen the search locally; CI runs the default.
    let per_file: usize = std::env::var("UNETC_MUTANTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(150);
    let seed: u64 = std::env::var("UNETC_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x9E37_79B9_7F4A_7C15);
    let mut rng = Rng(seed | 1);
    let mut with_errors = 0;
    let mut total = 0;
    for rel in spec_files() {
        let text = std::fs::read_to_string(root().join(&rel)).unwrap();
        for _ in 0..per_file {
            let mutated = mutate(&text, &mut rng);
            // Keep the path (and so includes and the format) of the original file.
            let c = compile_source(
                &root().join(&rel),
                mutated.clone(),
                &Options::default(),
                &mut Session::new(),
            );
            total += 1;
            if c.has_errors() {
                with_errors += 1;
            }
            for d in &c.diags {
                if let Some((span, _)) = &d.primary {
                    let len = c.sources.text(span.file).len() as u32;
                    assert!(
                        span.start <= span.end && span.end <= len,
                        "span outside the file for {}:\n{mutated}",
                        d.message
                    );
                }
            }
            // Rendering must not panic either.
            let _ = render_plain(&c.sources, &c.diags);
            let _ = unetc::report::json::check_json(&c);
        }
    }
    // The mutations must actually break things most of the time, or this test proves little.
    assert!(
        with_errors * 2 > total,
        "only {with_errors} of {total} mutants had errors"
    );
}
