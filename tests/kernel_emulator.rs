//! The hand-written convolution kernels run on the CPU: harnesses in tests/kernel_emu/ compile
//! their device code as host C++ against an emulator of the CUDA built-ins, mma.sync, ldmatrix
//! and cp.async (fragment layouts from the PTX ISA), and check every entry point against a naive
//! double-precision convolution. This needs a C++17 compiler (`g++`, or `$CXX`); without one it
//! prints `SKIP: <reason>`, unless `UNETC_REQUIRE_GXX=1`, which makes that a failure.

use std::path::Path;
use std::process::Command;

/// Compiles tests/kernel_emu/`harness`.cpp with -DUNETC_EMULATE and runs it; it exits nonzero
/// when a kernel run fails.
fn build_and_run(harness: &str) {
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "g++".to_string());
    if let Err(e) = Command::new(&cxx).arg("--version").output() {
        let reason = format!("no C++ compiler ({cxx}: {e})");
        if std::env::var("UNETC_REQUIRE_GXX").is_ok_and(|v| v == "1") {
            panic!("UNETC_REQUIRE_GXX=1 but {reason}");
        }
        println!("SKIP: {reason}");
        return;
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let source = manifest.join(format!("tests/kernel_emu/{harness}.cpp"));
    // One directory per harness: the tests run in parallel.
    let dir =
        std::env::temp_dir().join(format!("unetc-kernel-emu-{}-{harness}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join(harness);

    let out = Command::new(&cxx)
        .args(["-std=c++17", "-O2", "-pthread", "-DUNETC_EMULATE"])
        // The kernels type-pun shared and global memory as CUDA allows; host C++ must not assume
        // strict aliasing there.
        .args(["-fno-strict-aliasing", "-Wno-unknown-pragmas", "-o"])
        .arg(&exe)
        .arg(&source)
        .output()
        .expect("the C++ compiler runs");
    assert!(
        out.status.success(),
        "compiling the emulator harness {harness} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let run = Command::new(&exe).output().expect("the harness runs");
    let _ = std::fs::remove_dir_all(&dir);
    println!("{}", String::from_utf8_lossy(&run.stdout));
    assert!(
        run.status.success(),
        "emulated kernels failed ({}):\n{}",
        run.status,
        String::from_utf8_lossy(&run.stderr)
    );
}

/// igemm.cu: the tensor-core implicit-GEMM convolutions, with and without the fused 1x1 head.
#[test]
fn igemm_kernels_match_the_reference_under_the_emulator() {
    build_and_run("conv_igemm_test");
}

/// first_layer.cu: the direct convolution for few input channels.
#[test]
fn first_layer_kernels_match_the_reference_under_the_emulator() {
    build_and_run("first_layer_test");
}
