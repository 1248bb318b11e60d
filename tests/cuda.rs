//! The CUDA backend. Kernels are compiled with NVRTC for sm_90 here and in CI (no GPU needed);
//! with a GPU, every spec (at a small input) and every golden fixture runs on it and must match
//! the CPU executor within 1e-4 relative. Without a GPU these print `SKIP: <reason>`; with
//! `UNETC_REQUIRE_GPU=1` (or `UNETC_REQUIRE_NVRTC=1` for the compile test) they fail instead.

mod common;

use common::*;
use std::path::Path;
use unetc::exec::cpu::CpuModel;
use unetc::exec::cuda::{self, CudaModel};
use unetc::exec::{Precision, Tensor};
use unetc::runner::init_weights;

fn skip_or_fail(var: &str, reason: &str) {
    if std::env::var(var).is_ok_and(|v| v == "1") {
        panic!("{var}=1 but {reason}");
    }
    println!("SKIP: {reason}");
}

#[test]
fn kernels_compile_for_sm_90() {
    if !cuda::nvrtc_available() {
        return skip_or_fail(
            "UNETC_REQUIRE_NVRTC",
            "libnvrtc.so.13 not found (CI installs it from PyPI; see .ci/run)",
        );
    }
    // A private cache directory, so this really compiles.
    let dir = std::env::temp_dir().join(format!("unetc-nvrtc-{}", std::process::id()));
    std::env::set_var("UNETC_CACHE_DIR", &dir);
    let started = std::time::Instant::now();
    let ptx = cuda::compile("compute_90").unwrap_or_else(|e| panic!("{e}"));
    println!("PTX for compute_90 compiled in {:.1?}", started.elapsed());
    let train = cuda::TRAIN_KERNELS.iter().map(|s| s.to_string());
    for name in cuda::kernel_names().into_iter().chain(train.clone()) {
        assert!(
            ptx.contains(&format!(".entry {name}(")),
            "kernel {name} missing from the PTX"
        );
    }
    // The second compile comes from the cache, identical.
    assert_eq!(cuda::compile("compute_90").unwrap(), ptx);
    // Where ptxas is available (CI installs it beside NVRTC), assemble for sm_90 and refuse spills.
    if let Some(ptxas) = std::env::var_os("UNETC_PTXAS") {
        let file = dir.join("kernels.ptx");
        std::fs::write(&file, &ptx).unwrap();
        let out = std::process::Command::new(ptxas)
            .args(["-arch=sm_90", "-v", "-o"])
            .arg(dir.join("kernels.cubin"))
            .arg(&file)
            .output()
            .expect("ptxas runs");
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "ptxas failed:\n{log}");
        println!("{log}");
        for line in log.lines().filter(|l| l.contains("spill")) {
            assert!(
                line.contains("0 bytes spill stores") && line.contains("0 bytes spill loads"),
                "register spills: {line}"
            );
        }
    }
    // The cubin the GPU loads without JIT: an ELF holding every kernel, then read from the cache.
    let started = std::time::Instant::now();
    let cubin = cuda::compile_cubin("sm_90").unwrap_or_else(|e| panic!("{e}"));
    println!(
        "sm_90 cubin compiled in {:.1?} ({} bytes)",
        started.elapsed(),
        cubin.len()
    );
    assert!(cubin.starts_with(b"\x7fELF"), "not an ELF image");
    for name in cuda::kernel_names().into_iter().chain(train) {
        let symbol = format!("\0{name}\0");
        assert!(
            cubin.windows(symbol.len()).any(|w| w == symbol.as_bytes()),
            "kernel {name} missing from the cubin"
        );
    }
    let started = std::time::Instant::now();
    assert_eq!(cuda::compile_cubin("sm_90").unwrap(), cubin);
    println!(
        "sm_90 cubin read from the cache in {:.1?}",
        started.elapsed()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn gpu() -> bool {
    match cuda::cuda_available() {
        Ok(()) => true,
        Err(reason) => {
            skip_or_fail("UNETC_REQUIRE_GPU", &reason);
            false
        }
    }
}

fn seeded_input(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    Tensor::from_vec(
        shape,
        (0..n)
            .map(|i| ((i * 2654435761) % 997) as f32 / 997.0)
            .collect(),
    )
    .unwrap()
}

/// Every spec in specs/, at a small input where it allows one, on the GPU and on the CPU.
#[test]
fn every_spec_matches_the_cpu_executor() {
    if !gpu() {
        return;
    }
    for rel in spec_files() {
        let c = compile_small(&rel);
        assert!(!c.has_errors(), "{}", rel.display());
        let weights: std::collections::HashMap<String, Tensor> = init_weights(&c, 7)
            .unwrap()
            .iter()
            .map(|(n, t)| (n.to_string(), t.clone()))
            .collect();
        let cpu = CpuModel::new(&c.graph, &c.info, &weights).unwrap();
        let mut shape = vec![2];
        shape.extend(cpu.input_shape());
        let x = seeded_input(&shape);
        let want = cpu.run(&x).unwrap().remove(0);
        let gpu = CudaModel::new(&c.graph, &c.info, &weights, Precision::F32)
            .unwrap_or_else(|e| panic!("{}: {e}", rel.display()));
        let got = gpu.run(&x).unwrap().remove(0);
        let err = rel_err(&got, &want);
        println!("{}: max relative difference {err:.2e}", rel.display());
        assert!(err <= 1e-4, "{}: {err:e}", rel.display());
    }
}

/// Every golden fixture (real tf.keras numbers) on the GPU.
#[test]
fn every_golden_fixture_matches_on_the_gpu() {
    if !gpu() {
        return;
    }
    for entry in std::fs::read_dir(root().join("tests/golden")).unwrap() {
        let path = entry.unwrap().path();
        let Some(stem) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".io.safetensors"))
            .map(String::from)
        else {
            continue;
        };
        let spec = Path::new("tests/golden").join(format!("{stem}.unet"));
        let c = compile(&spec);
        let weights_file = root().join(format!("tests/golden/{stem}.weights.safetensors"));
        if !weights_file.exists() {
            continue; // the full-size fixture is covered by the CPU golden test
        }
        let weights =
            unetc::io::weights::load_weights(&weights_file, &unetc::runner::expected_weights(&c))
                .unwrap();
        let (input, want) = golden_io(&stem);
        for (precision, tolerance) in gpu_tolerances(&stem) {
            let got = CudaModel::new(&c.graph, &c.info, &weights, precision)
                .unwrap()
                .run(&input)
                .unwrap()
                .remove(0);
            let err = rel_err(&got, &want);
            println!(
                "{stem} {}: max relative difference to tf.keras {err:.2e}",
                precision.name()
            );
            assert!(err <= tolerance, "{stem} {}: {err:e}", precision.name());
        }
    }
}

/// Without a GPU, asking for CUDA is a clear error, never a panic.
#[test]
fn no_gpu_is_a_clear_error() {
    if cuda::cuda_available().is_ok() {
        println!("SKIP: a GPU is present");
        return;
    }
    let c = compile(Path::new("tests/golden/edge_resize.unet"));
    let weights: std::collections::HashMap<String, Tensor> = std::collections::HashMap::new();
    let err = CudaModel::new(&c.graph, &c.info, &weights, Precision::F32)
        .err()
        .expect("no GPU here");
    assert!(err.to_string().contains("use --device cpu"), "{err}");
}

/// Without a GPU, `unetc train --device cuda` is one clear error before any work, and writes
/// nothing.
#[test]
fn training_without_a_gpu_is_a_clear_error() {
    if cuda::cuda_available().is_ok() {
        println!("SKIP: a GPU is present");
        return;
    }
    let base = common::root().join("tests/train/same_unet_adam_cce");
    let dir = tempfile::tempdir().unwrap();
    let json = std::fs::read_to_string(base.with_extension("json")).unwrap();
    let spec = dir.path().join("m.unet");
    std::fs::write(&spec, unetc::interop::keras::import_json(&json).unwrap()).unwrap();
    let out = dir.path().join("final.safetensors");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_unetc"))
        .arg("train")
        .arg(&spec)
        .arg("--weights")
        .arg(base.with_extension("init.safetensors"))
        .arg("--inputs")
        .arg(base.with_extension("x.npy"))
        .arg("--targets")
        .arg(base.with_extension("y.npy"))
        .args(["--steps", "1", "--device", "cuda", "-o"])
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    assert!(
        stderr.contains("--device cuda: no usable CUDA GPU") && stderr.contains("use --device cpu"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(!out.exists());
}

/// The tf.keras training fixtures through `unetc train --device cuda` on a real GPU, compared
/// with Keras as on the CPU (tests/train.rs). Fixtures with a kind the GPU does not train are
/// refused by name; the two U-Nets must run. (Checked on the emulated GPU by
/// tests/gpu_train_emulated.rs; on a real GPU this is the first check.)
#[test]
fn training_fixtures_match_keras_on_the_gpu() {
    if !gpu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut ran = Vec::new();
    for name in train_fixtures() {
        let started = std::time::Instant::now();
        match run_train_fixture(&name, dir.path(), &["--device", "cuda"], None) {
            Ok(line) => ran.push(format!("{line}; {:.2?} in all", started.elapsed())),
            Err(e) if e.contains("train this model with --device cpu") => {
                println!("refused: {e}")
            }
            Err(e) => panic!("{e}"),
        }
    }
    println!("{}", ran.join("\n"));
    for must in ["same_unet_adam_cce", "valid_unet_adam_bce_dice"] {
        assert!(
            ran.iter().any(|l| l.starts_with(must)),
            "{must} did not run"
        );
    }
}
