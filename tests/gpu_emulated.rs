//! The whole CUDA backend on an emulated GPU: tests/kernel_emu/fake_driver.cpp is built as a fake
//! `libcuda.so` that runs unetc's real kernels on the CPU (emu.h), and this test's executable is
//! re-run with it on `LD_LIBRARY_PATH`, so cudarc loads it instead of NVIDIA's driver. The child
//! then runs every golden fixture through `CudaModel` (Rust launch code, plan windows, weight
//! packing, kernel parameters, launch shapes, kernels) at f32, tf32 and bf16 against tf.keras
//! and the CPU executor, times a run with a CUDA graph, and checks the free-memory refusal.
//! NVRTC is real (it compiles the PTX the fake driver is handed; the fake runs its own host
//! build of the same sources).
//!
//! Needs a C++17 compiler (`g++`, or `$CXX`) and NVRTC (libnvrtc.so.13 on LD_LIBRARY_PATH);
//! without one it prints `SKIP: <reason>`, unless `UNETC_REQUIRE_GXX=1` or
//! `UNETC_REQUIRE_NVRTC=1` makes that a failure.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;
use std::time::Instant;
use unetc::exec::cpu::CpuModel;
use unetc::exec::cuda::{self, CudaError, CudaModel};
use unetc::exec::{Precision, Tensor};

/// Set in the child's environment: the child test runs only there.
const CHILD: &str = "UNETC_GPU_EMULATED_CHILD";

fn skip_or_fail(var: &str, reason: &str) {
    if std::env::var(var).is_ok_and(|v| v == "1") {
        panic!("{var}=1 but {reason}");
    }
    println!("SKIP: {reason}");
}

#[test]
fn cuda_backend_runs_on_the_emulated_gpu() {
    if std::env::var_os(CHILD).is_some() {
        return;
    }
    if !cuda::nvrtc_available() {
        return skip_or_fail(
            "UNETC_REQUIRE_NVRTC",
            "libnvrtc.so.13 not found (CI installs it from PyPI; see .ci/run)",
        );
    }
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "g++".to_string());
    if let Err(e) = Command::new(&cxx).arg("--version").output() {
        return skip_or_fail(
            "UNETC_REQUIRE_GXX",
            &format!("no C++ compiler ({cxx}: {e})"),
        );
    }
    let started = Instant::now();
    let dir = std::env::temp_dir().join(format!("unetc-fake-cuda-{}", std::process::id()));
    if let Err(log) = build_fake_driver(&cxx, &dir) {
        panic!("compiling the fake driver failed:\n{log}");
    }
    println!("fake libcuda.so built in {:.1?}", started.elapsed());

    // glibc reads LD_LIBRARY_PATH at process start, so the fake needs a fresh process.
    let mut path = dir.clone().into_os_string();
    if let Some(old) = std::env::var_os("LD_LIBRARY_PATH") {
        path.push(":");
        path.push(old);
    }
    let run = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_runs_the_cuda_backend", "--nocapture"])
        .arg("--test-threads=1")
        .env("LD_LIBRARY_PATH", &path)
        .env(CHILD, "1")
        .output()
        .expect("the test executable runs again");
    let cli = command_line_on_the_emulated_gpu(&dir, &path);
    let _ = std::fs::remove_dir_all(&dir);
    println!("{}", String::from_utf8_lossy(&run.stdout));
    eprintln!("{}", String::from_utf8_lossy(&run.stderr));
    assert!(
        run.status.success(),
        "the emulated GPU run failed ({})",
        run.status
    );
    if let Err(e) = cli {
        panic!("the command line on the emulated GPU: {e}");
    }
    println!("whole test {:.1?}", started.elapsed());
}

/// `unetc run` and `unetc bench` with `--device cuda` on the emulated GPU, as a user runs them:
/// an input larger than the spec's (so the overlap-tile path runs on the GPU, in batches) gives
/// the CPU's output; bench reports the CUDA graph and the device memory.
fn command_line_on_the_emulated_gpu(
    dir: &Path,
    library_path: &std::ffi::OsStr,
) -> Result<(), String> {
    let unetc = |args: &[&str]| -> Result<String, String> {
        let out = Command::new(env!("CARGO_BIN_EXE_unetc"))
            .args(args)
            .current_dir(root())
            .env("LD_LIBRARY_PATH", library_path)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "unetc {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let file = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let spec = "tests/golden/original_small.unet";
    unetc(&[
        "init-weights",
        spec,
        "-o",
        &file("w.safetensors"),
        "--seed",
        "3",
    ])?;
    // 150x131: not the spec's 108x108, so the image is covered by overlap tiles.
    let (h, w) = (150usize, 131usize);
    let image: Vec<f32> = (0..h * w)
        .map(|i| ((i * 2654435761) % 1009) as f32 / 1009.0)
        .collect();
    let x = Tensor::from_vec(&[1, h, w, 1], image).unwrap();
    unetc::io::npy::write_npy(Path::new(&file("x.npy")), &x, true).map_err(|e| e.to_string())?;
    let mut outputs = Vec::new();
    for (device, precision) in [("cpu", "f32"), ("cuda", "f32"), ("cuda", "bf16")] {
        let out = file(&format!("y_{device}_{precision}.npy"));
        let args = [
            "run",
            spec,
            "--weights",
            &file("w.safetensors"),
            "--input",
            &file("x.npy"),
            "--output",
            &out,
            "--device",
            device,
            "--precision",
            precision,
            "--batch",
            "2",
        ];
        unetc(&args)?;
        outputs.push(unetc::io::npy::read_npy(Path::new(&out)).map_err(|e| e.to_string())?);
    }
    for (k, (name, tolerance)) in [("f32", 1e-4), ("bf16", 2e-2)].iter().enumerate() {
        let err = rel_err(&outputs[k + 1], &outputs[0]);
        println!(
            "unetc run --device cuda --precision {name} (tiled 150x131): {err:.2e} from the CPU"
        );
        if err > *tolerance || outputs[k + 1].shape != outputs[0].shape {
            return Err(format!("run --precision {name}: {err:e} from the CPU"));
        }
    }
    let json = unetc(&[
        "bench",
        spec,
        "--device",
        "cuda",
        "--precision",
        "bf16",
        "--batch",
        "2",
        "--iterations",
        "2",
        "--warmup",
        "1",
        "--format",
        "json",
    ])?;
    let report: serde_json::Value = serde_json::from_str(&json).map_err(|e| e.to_string())?;
    println!("unetc bench --device cuda: {report}");
    let planned = report["peak_device_memory_bytes"].as_u64().unwrap_or(0);
    let measured = report["measured_device_memory_bytes"].as_u64().unwrap_or(0);
    if report["cuda_graph"] != true || planned == 0 || measured < planned {
        return Err(format!("bench report: {report}"));
    }
    // The emulated device is sm_90: the kernels arrive as a cubin, and the end-to-end figure
    // (with the upload) is reported beside the network-only one.
    let network = report["median_ms"].as_f64().unwrap_or(f64::NAN);
    let end_to_end = report["end_to_end_median_ms"].as_f64().unwrap_or(f64::NAN);
    if report["kernels"] != "sm_90 cubin" || !(network > 0.0 && end_to_end > 0.0) {
        return Err(format!("bench report (kernels, timings): {report}"));
    }
    Ok(())
}

/// The real package U-Nets with stored weights (tests/real_models), compiled from the spec
/// `unetc import` makes of their Keras JSON: (name, compiled, weights, io).
fn real_models() -> Vec<(
    String,
    unetc::Compiled,
    std::path::PathBuf,
    std::path::PathBuf,
)> {
    let dir = root().join("tests/real_models");
    let mut stems: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".weights.safetensors").map(String::from)
        })
        .collect();
    stems.sort();
    stems
        .into_iter()
        .map(|stem| {
            let json = std::fs::read_to_string(dir.join(format!("{stem}.json"))).unwrap();
            let spec = unetc::interop::keras::import_json(&json).unwrap();
            let c = unetc::compile_source(
                Path::new(&format!("{stem}.unet")),
                spec,
                &unetc::Options::default(),
                &mut unetc::expand::Session::new(),
            );
            let weights = dir.join(format!("{stem}.weights.safetensors"));
            let io = dir.join(format!("{stem}.io.safetensors"));
            (stem, c, weights, io)
        })
        .collect()
}

/// The golden fixtures with stored weights, sorted.
fn fixtures() -> Vec<String> {
    let mut stems: Vec<String> = std::fs::read_dir(root().join("tests/golden"))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().ok()?;
            let stem = name.strip_suffix(".io.safetensors")?.to_string();
            // The full-size fixture has no stored weights (the CPU golden test covers it).
            root()
                .join(format!("tests/golden/{stem}.weights.safetensors"))
                .exists()
                .then_some(stem)
        })
        .collect();
    stems.sort();
    stems
}

#[test]
fn child_runs_the_cuda_backend() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    if let Err(reason) = cuda::cuda_available() {
        if !cuda::nvrtc_available() {
            return skip_or_fail("UNETC_REQUIRE_NVRTC", &reason);
        }
        panic!("the fake libcuda.so was not usable: {reason}");
    }
    // Every problem is collected, so that one run reports them all.
    let mut failures = Vec::new();
    let mut graph_checked = false;
    // The golden fixtures, then the real package U-Nets of tests/real_models (imported from
    // their Keras JSON) that have stored weights.
    let mut models: Vec<(
        String,
        unetc::Compiled,
        std::path::PathBuf,
        std::path::PathBuf,
    )> = fixtures()
        .into_iter()
        .map(|stem| {
            let c = compile(&Path::new("tests/golden").join(format!("{stem}.unet")));
            let dir = root().join("tests/golden");
            let weights = dir.join(format!("{stem}.weights.safetensors"));
            let io = dir.join(format!("{stem}.io.safetensors"));
            (stem, c, weights, io)
        })
        .collect();
    models.extend(real_models());
    for (stem, c, weights_file, io_file) in models {
        let weights =
            unetc::io::weights::load_weights(&weights_file, &unetc::runner::expected_weights(&c))
                .unwrap();
        let (inputs, want) = io_inputs(&io_file);
        let cpu = CpuModel::new(&c.graph, &c.info, &weights)
            .unwrap()
            .run_inputs(&inputs)
            .unwrap()
            .remove(0);
        for (precision, tolerance) in gpu_tolerances(&stem) {
            let what = format!("{stem} {}", precision.name());
            let started = Instant::now();
            let model = match CudaModel::new(&c.graph, &c.info, &weights, precision) {
                Ok(m) => m,
                Err(e) => {
                    failures.push(format!("{what}: CudaModel::new: {e}"));
                    continue;
                }
            };
            assert!(
                model.device_name.contains("emulated"),
                "{}",
                model.device_name
            );
            let got = match model.run_inputs(&inputs) {
                Ok(mut out) => out.remove(0),
                Err(e) => {
                    failures.push(format!("{what}: run: {e}"));
                    continue;
                }
            };
            let (keras, vs_cpu) = (rel_err(&got, &want), rel_err(&got, &cpu));
            println!(
                "{what}: max relative difference to tf.keras {keras:.2e}, to the CPU executor \
                 {vs_cpu:.2e} ({:.1?})",
                started.elapsed()
            );
            if keras > tolerance || vs_cpu > tolerance {
                failures.push(format!(
                    "{what}: {keras:e} from tf.keras, {vs_cpu:e} from the CPU (tolerance {tolerance:e})"
                ));
            }
            // Once per precision: a timed run replayed from a CUDA graph, then a new run (a new
            // arena) must give the same outputs.
            if stem == "bn_same_small" {
                graph_checked = true;
                if let Err(e) = timed_run_with_graph(&model, &inputs[0], &got) {
                    failures.push(format!("{what}: {e}"));
                }
            }
        }
    }
    assert!(graph_checked, "bn_same_small is a golden fixture");
    failures.extend(fused_heads_match_the_cpu_executor());
    if let Err(e) = memory_is_checked_before_allocating() {
        failures.push(e);
    }
    large_shared_memory_needs_the_attribute();
    if let Err(e) = shared_memory_limit_is_checked() {
        failures.push(e);
    }
    assert!(
        failures.is_empty(),
        "the CUDA backend failed on the emulated GPU:\n  {}",
        failures.join("\n  ")
    );
}

fn timed_run_with_graph(model: &CudaModel, input: &Tensor, first: &Tensor) -> Result<(), String> {
    let timing = model
        .time(input, 2, true)
        .map_err(|e| format!("time: {e}"))?;
    let (arena, weights) = (model.arena_bytes(input.shape[0]), model.weight_bytes());
    println!(
        "  time(): graph used: {}{}, {:?} ms, measured device memory {} bytes (planned arena \
         {arena} + weights {weights})",
        timing.graph,
        timing
            .graph_note
            .as_deref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default(),
        timing.times,
        timing.measured_device_bytes,
    );
    if !timing.graph {
        return Err("time: the CUDA graph was not used (the emulated driver captures)".into());
    }
    if timing.measured_device_bytes < arena + weights {
        return Err("time: measured device memory below the planned figure".into());
    }
    let again = model
        .run(input)
        .map_err(|e| format!("second run: {e}"))?
        .remove(0);
    if again.data != first.data {
        return Err(format!(
            "second run differs from the first by {:e}",
            rel_err(&again, first)
        ));
    }
    Ok(())
}

/// The golden fixtures' last convolutions have too few input channels for the tensor cores, so
/// the fused 1x1 heads (kernels/igemm.cu `_head`) run on small specs of their own, against the
/// CPU executor: a softmax and a sigmoid head, on aligned and unaligned inputs.
fn fused_heads_match_the_cpu_executor() -> Vec<String> {
    let specs = [
        (
            "head_softmax",
            "input 20x18x3\n  conv2d(16, 3) -> conv2d(16, 3) -> conv2d(3, 1, activation: softmax)",
        ),
        (
            "head_sigmoid",
            "input 17x9x2\n  conv2d(10, 3) -> conv2d(8, 3) -> conv2d(1, 1, activation: sigmoid)",
        ),
        // Not a head: the up-sampling kernel's align_corners mode (no golden fixture has it,
        // tf.keras cannot build it; tests/onnx_import.rs checks the CPU against onnxruntime).
        (
            "upsample_align_corners",
            "input 7x5x3\n  conv2d(4, 3) -> up_sampling2d((2, 3), interpolation: bilinear, align_corners: true) -> conv2d(2, 1, activation: sigmoid)",
        ),
        // Nor this: the window kernel's reflect and replicate padding (PyTorch's padding_mode).
        (
            "pad_reflect_replicate",
            "input 7x5x3\n  conv2d(4, 3) -> zero_padding2d(((1, 3), (4, 2)), mode: reflect) -> zero_padding2d(((2, 0), (1, 3)), mode: replicate) -> conv2d(2, 3, activation: sigmoid)",
        ),
        // Their 3-D forms: trilinear up-sampling (half-pixel and aligned corners, a different
        // factor per axis) and reflect / replicate padding of a volume.
        (
            "upsample3d_trilinear",
            "input 3x5x4x2\n  conv3d(3, 1) -> up_sampling3d((2, 3, 2), interpolation: trilinear) -> up_sampling3d((1, 2, 3), interpolation: trilinear, align_corners: true) -> conv3d(2, 1, activation: sigmoid)",
        ),
        (
            "pad3d_reflect_replicate",
            "input 3x5x4x2\n  conv3d(3, 1) -> zero_padding3d(((1, 2), (4, 0), (2, 3)), mode: reflect) -> zero_padding3d(((2, 0), (1, 3), (0, 2)), mode: replicate) -> conv3d(2, 3, activation: sigmoid)",
        ),
    ];
    let dir = std::env::temp_dir().join(format!("unetc-emulated-heads-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut failures = Vec::new();
    for (name, body) in specs {
        let file = dir.join(format!("{name}.unet"));
        let text =
            format!("model {{\n  defaults conv2d(padding: same, activation: relu)\n  {body}\n}}\n");
        std::fs::write(&file, text).unwrap();
        let c = unetc::compile_file(
            &file,
            &Default::default(),
            &mut unetc::expand::Session::new(),
        )
        .unwrap();
        assert!(
            !c.has_errors(),
            "{}",
            unetc::diag::render_plain(&c.sources, &c.diags)
        );
        let weights: std::collections::HashMap<String, Tensor> = unetc::runner::init_weights(&c, 7)
            .unwrap()
            .iter()
            .map(|(n, t)| (n.to_string(), t.clone()))
            .collect();
        let cpu = CpuModel::new(&c.graph, &c.info, &weights).unwrap();
        let mut shape = vec![2];
        shape.extend(cpu.input_shape());
        let n: usize = shape.iter().product();
        let data = (0..n)
            .map(|i| ((i * 7919) % 1009) as f32 / 1009.0 - 0.5)
            .collect();
        let input = Tensor::from_vec(&shape, data).unwrap();
        let want = cpu.run(&input).unwrap().remove(0);
        for (precision, tolerance) in [
            (Precision::F32, 1e-4),
            (Precision::Tf32, 3e-3),
            (Precision::Bf16, 2e-2),
        ] {
            let what = format!("{name} {}", precision.name());
            let got = CudaModel::new(&c.graph, &c.info, &weights, precision)
                .and_then(|m| m.run(&input))
                .map(|mut out| out.remove(0));
            match got {
                Ok(got) => {
                    let err = rel_err(&got, &want);
                    println!("{what}: max relative difference to the CPU executor {err:.2e}");
                    if err > tolerance {
                        failures.push(format!("{what}: {err:e} (tolerance {tolerance:e})"));
                    }
                }
                Err(e) => failures.push(format!("{what}: {e}")),
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    failures
}

/// A batch whose arena does not fit in the free device memory is a `CudaError::Memory`: the
/// fake driver's free memory is its total minus the live allocations, so most of it is taken
/// first.
/// On a device that allows only 64 KiB of shared memory per block, a precision whose tiles need
/// 96 KiB is refused when the model is made, by name, not at a failed launch; bf16 (48 KiB) runs.
fn shared_memory_limit_is_checked() -> Result<(), String> {
    let stem = "zhixuhao_small";
    let c = compile(&Path::new("tests/golden").join(format!("{stem}.unet")));
    let weights = unetc::io::weights::load_weights(
        &root().join(format!("tests/golden/{stem}.weights.safetensors")),
        &unetc::runner::expected_weights(&c),
    )
    .unwrap();
    let (input, _) = golden_io(stem);
    std::env::set_var("UNETC_FAKE_SMEM_OPTIN", "65536");
    let f32_model = CudaModel::new(&c.graph, &c.info, &weights, Precision::F32).map(|_| ());
    let bf16_run = CudaModel::new(&c.graph, &c.info, &weights, Precision::Bf16)
        .and_then(|m| m.run(&input))
        .map(|_| ());
    std::env::remove_var("UNETC_FAKE_SMEM_OPTIN");
    match f32_model {
        Err(cuda::CudaError::Unavailable(why)) if why.contains("64.0 KiB of shared memory") => {
            println!("shared memory limit: {why}")
        }
        other => {
            return Err(format!(
                "shared memory limit: expected a refusal naming 64 KiB, got {other:?}"
            ))
        }
    }
    bf16_run.map_err(|e| format!("shared memory limit: bf16 (48 KiB tiles) refused: {e}"))
}

fn memory_is_checked_before_allocating() -> Result<(), String> {
    let stem = "zhixuhao_small";
    let c = compile(&Path::new("tests/golden").join(format!("{stem}.unet")));
    let weights = unetc::io::weights::load_weights(
        &root().join(format!("tests/golden/{stem}.weights.safetensors")),
        &unetc::runner::expected_weights(&c),
    )
    .unwrap();
    let (input, _) = golden_io(stem);
    let model = CudaModel::new(&c.graph, &c.info, &weights, Precision::F32).unwrap();
    let need = model.arena_bytes(input.shape[0]);
    let ctx = cudarc::driver::CudaContext::new(0).unwrap();
    let (free, _) = ctx.mem_get_info().unwrap();
    let stream = ctx.default_stream();
    // SAFETY: never read; only holds device memory.
    let hog = unsafe { stream.alloc::<u8>(free - (need / 2) as usize) }.unwrap();
    let refused = model.run(&input);
    drop(hog);
    match refused {
        Err(CudaError::Memory { need: n, free: f }) if n == need && f < need => {
            println!("memory check: a batch needing {n} bytes with {f} free is refused");
        }
        other => {
            return Err(format!(
                "memory check: expected CudaError::Memory, got {:?}",
                other.map(|_| ())
            ))
        }
    }
    model
        .run(&input)
        .map(|_| ())
        .map_err(|e| format!("memory check: no run once memory is free: {e}"))
}

/// The fake driver refuses a launch with more than 48 KiB of dynamic shared memory unless
/// `CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES` allows it, as the real driver does.
fn large_shared_memory_needs_the_attribute() {
    use cudarc::driver::sys::{CUfunction_attribute, CUresult};
    use cudarc::driver::{LaunchConfig, PushKernelArg};
    let ctx = cudarc::driver::CudaContext::new(0).unwrap();
    let ptx = cuda::compile("compute_90").unwrap();
    let module = ctx.load_module(cudarc::nvrtc::Ptx::from_src(ptx)).unwrap();
    let f = module.load_function("conv_igemm_tf32").unwrap();
    let stream = ctx.default_stream();
    let buf = stream.alloc_zeros::<f32>(1024).unwrap();
    // n = 0 and f = 0: a grid of empty tiles (nothing to read or write).
    let x0 = cuda::View {
        h: 1,
        w: 1,
        c: 4,
        ..Default::default()
    };
    let params = cuda::ConvParams {
        x0,
        kh: 1,
        kw: 1,
        sh: 1,
        sw: 1,
        dh: 1,
        dw: 1,
        k: 4,
        k_padded: 32,
        ..Default::default()
    };
    let config = LaunchConfig {
        grid_dim: (1, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 98304,
    };
    let launch = || {
        let mut b = stream.launch_builder(&f);
        b.arg(&buf).arg(&buf).arg(&buf).arg(&buf).arg(&params);
        // SAFETY: the signature of conv_igemm_tf32; every pointer is a live 4 KiB buffer.
        unsafe { b.launch(config) }.map(|_| ())
    };
    let refused = launch().expect_err("98304 bytes without the attribute");
    assert_eq!(refused.0, CUresult::CUDA_ERROR_INVALID_VALUE);
    f.set_attribute(
        CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
        98304,
    )
    .unwrap();
    launch().expect("98304 bytes with the attribute");
    stream.synchronize().unwrap();
    println!("shared memory check: 96 KiB needs the attribute, as on a real GPU");
}
