//! Training on the emulated GPU (tests/kernel_emu/fake_driver.cpp built as a fake `libcuda.so`,
//! as tests/gpu_emulated.rs does): `CudaTrainer` (src/train/cuda.rs, kernels/train.cu) against
//! the CPU trainer, which itself matches tf.keras (tests/train.rs). Each case trains the same
//! model from the same weights on the same batches on both, and compares every step's loss and
//! every final weight. The weights must also have moved well beyond the tolerance, so a kernel
//! that did nothing, or stepped the wrong way, fails.
//!
//! Needs a C++17 compiler and NVRTC, as tests/gpu_emulated.rs (SKIP otherwise, unless
//! `UNETC_REQUIRE_GXX=1` / `UNETC_REQUIRE_NVRTC=1`).

mod common;

use common::*;
use std::path::Path;
use std::process::Command;
use unetc::exec::cuda;
use unetc::exec::Tensor;
use unetc::io::Weights;
use unetc::train::cuda::CudaTrainer;
use unetc::train::loss::Loss;
use unetc::train::optimizer::{Optimizer, OptimizerArgs};
use unetc::train::{BatchTargets, TrainConfig, Trainer};

const CHILD: &str = "UNETC_GPU_TRAIN_CHILD";

// A bias right before a (trainable) BatchNormalization gets a gradient that is zero up to
// rounding (the normalisation removes it), and Adam turns that noise into steps of either
// sign: such convolutions here have `use_bias: false`, as U-Nets with batch norm usually do.

/// Per-step loss, relative (f64 sums of f32 values that differ by summation order).
const LOSS_TOLERANCE: f64 = 1e-6;
/// Final weights, absolute plus relative to the weight (Adam divides by sqrt(v) + eps, so a
/// gradient that is a cancellation near zero turns f32 rounding into visible update
/// differences, as in tests/train.rs).
const WEIGHT_ABS: f32 = 5e-6;
const WEIGHT_REL: f32 = 1e-5;

fn skip_or_fail(var: &str, reason: &str) {
    if std::env::var(var).is_ok_and(|v| v == "1") {
        panic!("{var}=1 but {reason}");
    }
    println!("SKIP: {reason}");
}

#[test]
fn training_on_the_emulated_gpu_matches_the_cpu_trainer() {
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
    let dir = std::env::temp_dir().join(format!("unetc-fake-cuda-train-{}", std::process::id()));
    if let Err(log) = build_fake_driver(&cxx, &dir) {
        panic!("compiling the fake driver failed:\n{log}");
    }
    let mut path = dir.clone().into_os_string();
    if let Some(old) = std::env::var_os("LD_LIBRARY_PATH") {
        path.push(":");
        path.push(old);
    }
    let run = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_trains_on_the_emulated_gpu", "--nocapture"])
        .arg("--test-threads=1")
        .env("LD_LIBRARY_PATH", &path)
        .env(CHILD, "1")
        .output()
        .expect("the test executable runs again");
    let cli = keras_fixture_on_the_emulated_gpu(&dir, &path)
        .and_then(|()| resume_on_the_emulated_gpu(&dir, &path));
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
}

fn compile(text: &str) -> unetc::Compiled {
    let c = unetc::compile_source(
        Path::new("gpu_train.unet"),
        text.to_string(),
        &unetc::Options::default(),
        &mut unetc::expand::Session::new(),
    );
    assert!(!c.has_errors(), "{text}: {:?}", c.diags);
    c
}

/// Values in [-1, 1) from a small LCG (reproducible without a crate).
fn pseudo_random(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

struct Case {
    what: &'static str,
    spec: &'static str,
    optimizer: &'static str,
    args: OptimizerArgs,
    learning_rate: f32,
    loss: Loss,
    from_logits: bool,
}

fn config(case: &Case) -> TrainConfig {
    let (optimizer, weight_decay) = Optimizer::new(case.optimizer, &case.args).unwrap();
    TrainConfig {
        optimizer,
        learning_rate: case.learning_rate,
        weight_decay,
        loss: case.loss,
        from_logits: case.from_logits,
        seed: 5,
    }
}

/// Batches of 2 for the model's input and output; targets as the loss takes them.
fn batches(c: &unetc::Compiled, loss: Loss, seed: u64) -> Vec<(Tensor, BatchTargets)> {
    let shape = |id: unetc::ir::NodeId| -> Vec<usize> {
        let mut s = vec![2];
        s.extend(
            c.info.layers[id.index()]
                .shape
                .iter()
                .flatten()
                .map(|&d| d as usize),
        );
        s
    };
    let (xs, ys) = (shape(c.graph.inputs[0]), shape(c.graph.outputs[0]));
    let channels = *ys.last().unwrap();
    let pixels: usize = ys.iter().product::<usize>() / channels;
    (0..3u64)
        .map(|k| {
            let x =
                Tensor::from_vec(&xs, pseudo_random(seed * 10 + k, xs.iter().product())).unwrap();
            let r = pseudo_random(seed * 10 + k + 5, pixels);
            let class = |p: usize| ((r[p] + 1.0) * 0.5 * channels as f32) as usize % channels;
            let y = match loss {
                Loss::SparseCategoricalCrossentropy => BatchTargets::Classes {
                    shape: ys[..ys.len() - 1].to_vec(),
                    classes: (0..pixels).map(|p| class(p) as i64).collect(),
                },
                Loss::CategoricalCrossentropy => {
                    let mut v = vec![0.0f32; pixels * channels];
                    for p in 0..pixels {
                        v[p * channels + class(p)] = 1.0;
                    }
                    BatchTargets::Dense(Tensor::from_vec(&ys, v).unwrap())
                }
                Loss::MeanSquaredError => BatchTargets::Dense(
                    Tensor::from_vec(&ys, pseudo_random(seed + 77 + k, pixels * channels)).unwrap(),
                ),
                Loss::BinaryCrossentropy | Loss::Dice | Loss::BceDice | Loss::Focal => {
                    let v = pseudo_random(seed + 99 + k, pixels * channels)
                        .iter()
                        .map(|&u| if u > 0.0 { 1.0 } else { 0.0 })
                        .collect();
                    BatchTargets::Dense(Tensor::from_vec(&ys, v).unwrap())
                }
            };
            (x, y)
        })
        .collect()
}

/// Trains `case` on the CPU and on the (emulated) GPU; returns the worst loss and weight
/// differences and how far the weights moved.
fn compare(case: &Case, seed: u64) -> Result<String, String> {
    let c = compile(case.spec);
    let initial: Weights = unetc::runner::init_weights(&c, seed).unwrap();
    let data = batches(&c, case.loss, seed);
    let mut cpu = Trainer::new(&c, &initial, config(case)).map_err(|e| e.to_string())?;
    let mut gpu = CudaTrainer::new(&c, &initial, config(case), 2)
        .map_err(|e| format!("{}: {e}", case.what))?;
    let mut worst_loss = 0.0f64;
    for (x, y) in &data {
        let a = cpu.step(x, y).map_err(|e| e.to_string())?;
        let b = gpu.step(x, y).map_err(|e| format!("{}: {e}", case.what))?;
        let rel = (a - b).abs() / a.abs().max(1e-12);
        worst_loss = worst_loss.max(rel);
        if rel > LOSS_TOLERANCE {
            return Err(format!(
                "{}: loss CPU {a} vs GPU {b} (rel {rel:.2e})",
                case.what
            ));
        }
    }
    let (wc, wg) = (cpu.weights(), gpu.weights().map_err(|e| e.to_string())?);
    let (mut worst, mut moved) = (0.0f32, 0.0f32);
    for (name, t) in wc.iter() {
        let g = wg
            .get(name)
            .ok_or_else(|| format!("{}: the GPU lost {name}", case.what))?;
        for ((&a, &b), &w0) in t
            .data
            .iter()
            .zip(&g.data)
            .zip(&initial.get(name).unwrap().data)
        {
            let d = (a - b).abs();
            if d.is_nan() || d > WEIGHT_ABS + WEIGHT_REL * a.abs() {
                return Err(format!("{}: {name}: CPU {a} vs GPU {b}", case.what));
            }
            worst = worst.max(d);
            moved = moved.max((a - w0).abs());
        }
    }
    if moved < 100.0 * WEIGHT_ABS {
        return Err(format!(
            "{}: the weights hardly moved ({moved:e})",
            case.what
        ));
    }
    Ok(format!(
        "{}: worst loss rel {worst_loss:.1e}, worst weight {worst:.1e}, moved {moved:.2}",
        case.what
    ))
}

const UNET: &str = "model {
  input 16x16x3
  c1 = conv2d(4, 3, padding: same, use_bias: false) -> batch_normalization() -> activation(relu)
  p1 = c1 -> max_pooling2d(2)
  c2 = p1 -> conv2d(8, 3, padding: same, activation: relu) -> batch_normalization()
  u1 = c2 -> up_sampling2d(2)
  [u1, c1] -> concatenate() -> conv2d(4, 3, padding: same, activation: relu) -> conv2d(3, 1, activation: softmax)
}
";

const VALID: &str = "model {
  input 20x20x2
  c1 = conv2d(4, 3, activation: relu)
  p1 = c1 -> max_pooling2d(2)
  c2 = p1 -> conv2d(6, 3, activation: tanh) -> dropout(0.3)
  u1 = c2 -> conv2d_transpose(4, 2, strides: 2)
  k1 = c1 -> cropping2d(2)
  [u1, k1] -> add() -> spatial_dropout2d(0.25) -> conv2d(1, 1, activation: sigmoid)
}
";

const SMALL_SOFTMAX: &str = "model {
  input 6x6x2
  conv2d(4, 3, padding: same, activation: elu) -> conv2d(3, 1) -> softmax()
}
";

const SMALL_SIGMOID: &str = "model {
  input 6x6x2
  conv2d(4, 3, padding: same, activation: tanh) -> conv2d(1, 1, activation: sigmoid)
}
";

const SMALL_SIGMOID3: &str = "model {
  input 6x6x2
  conv2d(4, 3, strides: 2, padding: same, activation: swish) -> conv2d_transpose(3, 3, strides: 2, padding: same, activation: sigmoid)
}
";

const SMALL_LINEAR: &str = "model {
  input 6x6x2
  conv2d(4, 3, dilation_rate: 2, padding: same) -> re_lu() -> conv2d(2, 1)
}
";

const FROZEN: &str = "model {
  input 8x8x2
  conv2d(4, 3, padding: same, trainable: false) -> batch_normalization(trainable: false) -> activation(relu) -> conv2d(4, 3, padding: same, use_bias: false) -> batch_normalization(momentum: 0.9) -> activation(sigmoid) -> conv2d(2, 1, activation: softmax)
}
";

const POOLS: &str = "model {
  input 10x10x2
  conv2d(3, 3, padding: same, activation: relu) -> max_pooling2d(3, strides: 2, padding: same) -> conv2d(4, 1, activation: tanh) -> average_pooling2d(3, strides: 2, padding: same) -> zero_padding2d(((1, 0), (2, 1))) -> conv2d(2, 3, activation: softmax)
}
";

const DENSE: &str = "model {
  input 6x6x2
  dense(5, activation: gelu) -> conv2d(4, 3, padding: same) -> dense(3, activation: softmax)
}
";

const BILINEAR: &str = "model {
  input 5x4x2
  conv2d(3, 3, padding: same, activation: tanh) -> up_sampling2d((2, 3), interpolation: bilinear) -> conv2d(3, 3, padding: same) -> up_sampling2d(2, interpolation: bilinear, align_corners: true) -> conv2d(2, 1, activation: sigmoid)
}
";

// Resizing by ratios (up one axis and down the other; nearest to an odd size) and back.
const RESIZING: &str = "model {
  input 6x5x2
  conv2d(3, 3, padding: same, activation: tanh) -> resizing(4, 8) -> conv2d(3, 3, padding: same) -> resizing(7, 11, interpolation: nearest) -> conv2d(3, 3, padding: same) -> resizing(6, 5) -> conv2d(2, 1, activation: sigmoid)
}
";

const SHARED: &str = "model {
  input 6x6x4
  x = conv2d(4, 3, padding: same, activation: relu, name: \"c\")
  y = x -> shared(c)
  [x, y] -> concatenate() -> conv2d(2, 1, activation: softmax)
}
";

fn cases() -> Vec<Case> {
    let args = |f: &dyn Fn(&mut OptimizerArgs)| {
        let mut a = OptimizerArgs::default();
        f(&mut a);
        a
    };
    vec![
        Case {
            what: "U-Net, Adam, categorical crossentropy",
            spec: UNET,
            optimizer: "adam",
            args: OptimizerArgs::default(),
            learning_rate: 0.01,
            loss: Loss::CategoricalCrossentropy,
            from_logits: false,
        },
        Case {
            what: "valid U-Net with crop, transpose, add, dropouts; SGD nesterov, bce_dice",
            spec: VALID,
            optimizer: "sgd",
            args: args(&|a| {
                a.momentum = Some(0.9);
                a.nesterov = true;
            }),
            learning_rate: 0.1,
            loss: Loss::BceDice,
            from_logits: false,
        },
        Case {
            what: "AdamW, sparse categorical crossentropy (softmax layer)",
            spec: SMALL_SOFTMAX,
            optimizer: "adamw",
            args: args(&|a| a.weight_decay = Some(0.05)),
            learning_rate: 0.01,
            loss: Loss::SparseCategoricalCrossentropy,
            from_logits: false,
        },
        Case {
            what: "SGD with momentum, binary crossentropy",
            spec: SMALL_SIGMOID,
            optimizer: "sgd",
            args: args(&|a| a.momentum = Some(0.5)),
            learning_rate: 0.1,
            loss: Loss::BinaryCrossentropy,
            from_logits: false,
        },
        Case {
            what: "RMSprop with momentum, focal",
            spec: SMALL_SIGMOID,
            optimizer: "rmsprop",
            args: args(&|a| a.momentum = Some(0.5)),
            learning_rate: 0.01,
            loss: Loss::Focal,
            from_logits: false,
        },
        Case {
            what: "RMSprop, dice",
            spec: SMALL_SIGMOID3,
            optimizer: "rmsprop",
            args: OptimizerArgs::default(),
            learning_rate: 0.01,
            loss: Loss::Dice,
            from_logits: false,
        },
        Case {
            what: "SGD with weight decay, mse (dilated conv, ReLU layer)",
            spec: SMALL_LINEAR,
            optimizer: "sgd",
            args: args(&|a| a.weight_decay = Some(0.01)),
            learning_rate: 0.05,
            loss: Loss::MeanSquaredError,
            from_logits: false,
        },
        Case {
            what: "Adam, categorical crossentropy on sigmoid outputs (clipped, normalised)",
            spec: SMALL_SIGMOID3,
            optimizer: "adam",
            args: OptimizerArgs::default(),
            learning_rate: 0.01,
            loss: Loss::CategoricalCrossentropy,
            from_logits: false,
        },
        Case {
            what: "Adam, binary crossentropy from_logits on a linear output",
            spec: SMALL_LINEAR,
            optimizer: "adam",
            args: OptimizerArgs::default(),
            learning_rate: 0.01,
            loss: Loss::BinaryCrossentropy,
            from_logits: true,
        },
        Case {
            what: "frozen conv and BN, BN momentum 0.9, Adam, categorical crossentropy",
            spec: FROZEN,
            optimizer: "adam",
            args: OptimizerArgs::default(),
            learning_rate: 0.01,
            loss: Loss::CategoricalCrossentropy,
            from_logits: false,
        },
        Case {
            what: "overlapping max and average pools (same), zero padding, Adam",
            spec: POOLS,
            optimizer: "adam",
            args: OptimizerArgs::default(),
            learning_rate: 0.01,
            loss: Loss::CategoricalCrossentropy,
            from_logits: false,
        },
        Case {
            what: "Dense on pixels (gelu, softmax head), RMSprop, sparse categorical",
            spec: DENSE,
            optimizer: "rmsprop",
            args: OptimizerArgs::default(),
            learning_rate: 0.01,
            loss: Loss::SparseCategoricalCrossentropy,
            from_logits: false,
        },
        Case {
            what: "bilinear up-sampling (half-pixel, (2, 3); aligned corners), SGD, bce",
            spec: BILINEAR,
            optimizer: "sgd",
            args: OptimizerArgs::default(),
            learning_rate: 0.5,
            loss: Loss::BinaryCrossentropy,
            from_logits: false,
        },
        Case {
            what: "Resizing by ratios (bilinear up and down, nearest), SGD, bce",
            spec: RESIZING,
            optimizer: "sgd",
            args: OptimizerArgs::default(),
            learning_rate: 0.5,
            loss: Loss::BinaryCrossentropy,
            from_logits: false,
        },
        Case {
            // SGD: Adam here turns one near-zero (cancelling) gradient element's rounding into
            // a 5e-6 update difference (SGD shows the gradients agree to 2e-10).
            what: "a shared convolution (two calls, one gradient), SGD with momentum",
            spec: SHARED,
            optimizer: "sgd",
            args: args(&|a| a.momentum = Some(0.9)),
            learning_rate: 0.1,
            loss: Loss::CategoricalCrossentropy,
            from_logits: false,
        },
    ]
}

#[test]
fn child_trains_on_the_emulated_gpu() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let mut failures = Vec::new();
    for (k, case) in cases().iter().enumerate() {
        match compare(case, 3 + k as u64) {
            Ok(line) => println!("{line}"),
            Err(e) => failures.push(e),
        }
    }
    // The same run twice on the GPU: bit for bit (fixed-order reductions).
    let case = &cases()[0];
    let c = compile(case.spec);
    let initial = unetc::runner::init_weights(&c, 1).unwrap();
    let data = batches(&c, case.loss, 1);
    let run = || {
        let mut t = CudaTrainer::new(&c, &initial, config(case), 2).unwrap();
        let losses: Vec<f64> = data.iter().map(|(x, y)| t.step(x, y).unwrap()).collect();
        (losses, t.weights().unwrap())
    };
    let (l1, w1) = run();
    let (l2, w2) = run();
    assert_eq!(l1, l2, "losses differ between two GPU runs");
    for (name, t) in w1.iter() {
        assert_eq!(
            t.data,
            w2.get(name).unwrap().data,
            "{name} differs between two GPU runs"
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A kind without a GPU backward is refused before anything is allocated (no GPU needed),
/// naming the layer and its kind.
#[test]
fn kinds_without_a_gpu_backward_are_refused_by_name() {
    let c = compile("model {\n  input 6x6x2\n  conv2d(4, 3) -> flatten() -> dense(3)\n}\n");
    let initial = unetc::runner::init_weights(&c, 1).unwrap();
    let case = &cases()[0];
    let err = match CudaTrainer::new(&c, &initial, config(case), 2) {
        Ok(_) => panic!("a Flatten/Dense model was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("Flatten"), "{err}");
    assert!(err.contains("--device cpu"), "{err}");
}

/// The tf.keras training fixtures (tests/train/) through `unetc train --device cuda` on the
/// emulated GPU, compared with Keras as tests/train.rs compares the CPU's run. Fixtures with a
/// kind the GPU does not train must be refused by name before training; at least the two
/// U-Nets must run.
fn keras_fixture_on_the_emulated_gpu(
    dir: &Path,
    library_path: &std::ffi::OsStr,
) -> Result<(), String> {
    let (mut ran, mut refused) = (Vec::new(), Vec::new());
    for name in train_fixtures() {
        match run_train_fixture(&name, dir, &["--device", "cuda"], Some(library_path)) {
            Ok(line) => ran.push(line),
            Err(e)
                if e.starts_with("unetc train:")
                    && e.contains("train this model with --device cpu") =>
            {
                let why = e.lines().find(|l| l.contains("--device cpu")).unwrap_or("");
                refused.push(format!("{name} ({})", why.trim()))
            }
            Err(e) => return Err(e),
        }
    }
    println!("Keras fixtures on the emulated GPU:\n{}", ran.join("\n"));
    println!("refused by kind:\n{}", refused.join("\n"));
    for must in ["same_unet_adam_cce", "valid_unet_adam_bce_dice"] {
        if !ran.iter().any(|l| l.starts_with(must)) {
            return Err(format!(
                "{must} did not run on the GPU (refused: {refused:?})"
            ));
        }
    }
    Ok(())
}

/// `unetc train --device cuda` with validation and a checkpoint: two epochs in one run end
/// where one epoch, a checkpoint and `--resume` to two end, byte for byte (weights and Adam's
/// state pass through the checkpoint); the validation figures are logged.
fn resume_on_the_emulated_gpu(dir: &Path, library_path: &std::ffi::OsStr) -> Result<(), String> {
    let base = root().join("tests/train/same_unet_adam_cce");
    let json = std::fs::read_to_string(base.with_extension("json")).map_err(|e| e.to_string())?;
    let spec = dir.join("resume.unet");
    let text = unetc::interop::keras::import_json(&json).map_err(|e| format!("{e:?}"))?;
    std::fs::write(&spec, text).map_err(|e| e.to_string())?;
    let file = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let train = |extra: &[&str]| -> Result<(), String> {
        let out = Command::new(env!("CARGO_BIN_EXE_unetc"))
            .arg("train")
            .arg(&spec)
            .arg("--weights")
            .arg(base.with_extension("init.safetensors"))
            .arg("--inputs")
            .arg(base.with_extension("x.npy"))
            .arg("--targets")
            .arg(base.with_extension("y.npy"))
            .args(["--batch-size", "2", "--val-split", "0.25", "--seed", "3"])
            .args(["--device", "cuda", "--force"])
            .args(extra)
            .env("LD_LIBRARY_PATH", library_path)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "unetc train {}: {}",
                extra.join(" "),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    };
    let (full, log) = (file("full.safetensors"), file("full.json"));
    train(&["--epochs", "2", "-o", &full, "--log", &log])?;
    let (half, ckpt, resumed) = (
        file("half.safetensors"),
        file("half.ckpt"),
        file("resumed.safetensors"),
    );
    train(&["--epochs", "1", "-o", &half, "--checkpoint", &ckpt])?;
    train(&["--epochs", "2", "-o", &resumed, "--resume", &ckpt])?;
    let read = |p: &str| std::fs::read(p).map_err(|e| e.to_string());
    if read(&full)? != read(&resumed)? {
        return Err("a resumed GPU run does not end where an uninterrupted one does".into());
    }
    if read(&full)? == read(&half)? {
        return Err("the second epoch changed nothing".into());
    }
    let log: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&log).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    let epochs = log["epochs"].as_array().ok_or("no epochs in the log")?;
    if epochs.len() != 2 || epochs.iter().any(|e| e["val_loss"].as_f64().is_none()) {
        return Err(format!("validation missing from the log: {log}"));
    }
    Ok(())
}
