//! The `unetc` command line. Only argument handling and printing live here.

use clap::{Parser, Subcommand, ValueEnum};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;
use unetc::diag::{render_colored, render_plain};
use unetc::expand::Session;
use unetc::report::summary::{render, SummaryStyle};
use unetc::{compile_file, report, Options};

#[derive(Parser)]
#[command(
    name = "unetc",
    version,
    about = "A compiler for declarative U-Net descriptions"
)]
struct Cli {
    /// When to use colours in diagnostics (`NO_COLOR` is honoured by `auto`).
    #[arg(long, value_enum, default_value_t = Color::Auto, global = true)]
    color: Color,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Infer every shape, report mistakes, and print the model summary as Keras would.
    #[command(
        after_help = "Examples:\n  unetc check specs/original.unet\n  unetc check specs/bn_same.yaml --style tf-keras\n  unetc check specs/original.unet --input-shape 380x380x1 --format json"
    )]
    Check {
        /// The spec file (.unet for the DSL, .yaml/.yml for YAML).
        spec: PathBuf,
        /// Summary layout: `legacy` is the classic TF 2.2-2.5 table, `tf-keras` today's tf_keras 2.x.
        #[arg(long, value_enum, default_value_t = Style::Legacy)]
        style: Style,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Override the model's input shape, e.g. 380x380x1.
        #[arg(long, value_parser = parse_shape)]
        input_shape: Option<ShapeArg>,
        /// Keras's `line_length` for the summary.
        #[arg(long, value_parser = clap::value_parser!(u16).range(40..=1000))]
        line_length: Option<u16>,
        /// Build these specs first in the same Keras session (auto-names continue from them).
        #[arg(long, value_name = "SPEC")]
        after: Vec<PathBuf>,
        /// Print how long each stage took (to stderr).
        #[arg(long)]
        timings: bool,
    },
    /// Run a spec on images or arrays (CPU): probabilities (.npy) or masks (.png) out.
    #[command(
        after_help = "Examples:\n  unetc init-weights specs/original.unet -o original.safetensors --seed 1\n  unetc run specs/original.unet --weights original.safetensors --input cells.png --output mask.png\n  unetc run specs/bn_same.yaml --weights w.safetensors --input batch.npy --output probs.npy\n  unetc run specs/original.unet --weights w.safetensors --input images/ --output masks/\n\nImages (PNG/TIFF) are scaled to [0, 1]; .npy inputs (NHWC or HWC, f32 or u8) are used as they are.\nImages of other sizes than the spec's input are tiled (valid padding: overlap-tile) or padded\nand cropped back (same padding)."
    )]
    Run {
        spec: PathBuf,
        /// Weights (safetensors, tensors named `<layer>/<variable>`).
        #[arg(long)]
        weights: PathBuf,
        /// An image (.png, .tif), an array (.npy), or a directory of them.
        #[arg(long)]
        input: PathBuf,
        /// .npy for probabilities, .png for a mask; a directory when the input is one.
        #[arg(long)]
        output: PathBuf,
        /// Write this class's probability as 8-bit gray instead of a mask.
        #[arg(long)]
        class: Option<usize>,
        /// Threshold for one-channel (sigmoid) outputs.
        #[arg(long, default_value_t = 0.5)]
        threshold: f32,
        /// Images or tiles per forward pass.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=4096))]
        batch: u16,
        /// `cpu`, `cuda`, or `auto` (the GPU when there is one).
        #[arg(long, default_value = "auto")]
        device: String,
        /// Replace existing outputs.
        #[arg(long)]
        force: bool,
        /// Print the plan's memory and how the input was covered.
        #[arg(long)]
        verbose: bool,
    },
    /// Time a spec's forward pass: warm-up, then the median of several timed runs.
    #[command(
        after_help = "Examples:\n  unetc bench specs/original.unet --device cpu\n  unetc bench specs/bn_same.yaml --batch 2 --iterations 10 --format json\n\nbench/compare_cpu.py runs this beside PyTorch on the same network."
    )]
    Bench {
        spec: PathBuf,
        /// `cpu`, `cuda`, or `auto` (the GPU when there is one).
        #[arg(long, default_value = "auto")]
        device: String,
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=4096))]
        batch: u16,
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100000))]
        iterations: u32,
        #[arg(long, default_value_t = 1)]
        warmup: u32,
        /// Weights to use (default: seeded ones; speed does not depend on the values).
        #[arg(long)]
        weights: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Write seeded weights following each layer's initializers (and Keras's batch-norm defaults).
    InitWeights {
        spec: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long)]
        force: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Style {
    Legacy,
    TfKeras,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum Format {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum Color {
    Auto,
    Always,
    Never,
}

/// `HxWxC` from the command line (a newtype: clap would read a bare `Vec` as repeated values).
#[derive(Clone, Debug)]
struct ShapeArg(Vec<i64>);

fn parse_shape(s: &str) -> Result<ShapeArg, String> {
    let dims: Result<Vec<i64>, _> = s
        .split(['x', 'X', ','])
        .map(|d| d.trim().parse::<i64>())
        .collect();
    match dims {
        Ok(d)
            if (1..=3).contains(&d.len())
                && d.iter()
                    .all(|&v| (1..=unetc::ir::value::MAX_DIM).contains(&v)) =>
        {
            Ok(ShapeArg(d))
        }
        _ => Err(format!(
            "expected HxWxC with sizes in 1..={}, e.g. 572x572x1",
            unetc::ir::value::MAX_DIM
        )),
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let color = match cli.color {
        Color::Always => true,
        Color::Never => false,
        Color::Auto => std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
    };
    match cli.command {
        Command::Check {
            spec,
            style,
            format,
            input_shape,
            line_length,
            after,
            timings,
        } => check(
            &spec,
            style,
            format,
            input_shape.map(|s| s.0),
            line_length.map(usize::from),
            &after,
            timings,
            color,
        ),
        Command::Run {
            spec,
            weights,
            input,
            output,
            class,
            threshold,
            batch,
            device,
            force,
            verbose,
        } => {
            let device = match unetc::runner::Device::parse(&device) {
                Ok(d) => d,
                Err(e) => return run_error(e),
            };
            let opts = unetc::runner::RunOptions {
                device,
                weights,
                input,
                output,
                class,
                threshold,
                batch: batch as usize,
                force,
            };
            run(&spec, &opts, verbose)
        }
        Command::Bench {
            spec,
            device,
            batch,
            iterations,
            warmup,
            weights,
            format,
        } => {
            let device = match unetc::runner::Device::parse(&device) {
                Ok(d) => d,
                Err(e) => return run_error(e),
            };
            match unetc::runner::bench(
                &spec,
                device,
                weights.as_deref(),
                batch as usize,
                warmup as usize,
                iterations as usize,
            ) {
                Ok(r) if format == Format::Json => {
                    println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
                    ExitCode::SUCCESS
                }
                Ok(r) => {
                    println!(
                        "{}  {}  batch {}  {} {} ({} threads): {:.1} ms/batch (min {:.1}, max {:.1})  {:.2} img/s  {:.1} GFLOP/s  arena {}  peak RSS {}",
                        r.model,
                        r.input_shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x"),
                        r.batch,
                        r.precision,
                        r.device,
                        r.threads,
                        r.median_ms,
                        r.min_ms,
                        r.max_ms,
                        r.images_per_s,
                        r.gflops_per_s,
                        unetc::report::bytes(r.planned_arena_bytes),
                        r.peak_rss_bytes.map_or("unknown".into(), unetc::report::bytes),
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => run_error(e),
            }
        }
        Command::InitWeights {
            spec,
            output,
            seed,
            force,
        } => match unetc::runner::write_initial_weights(&spec, &output, seed, force) {
            Ok(n) => {
                eprintln!("wrote {n} tensors to {}", output.display());
                ExitCode::SUCCESS
            }
            Err(e) => run_error(e),
        },
    }
}

fn run(spec: &std::path::Path, opts: &unetc::runner::RunOptions, verbose: bool) -> ExitCode {
    let bar = indicatif::ProgressBar::new(0);
    if !std::io::stderr().is_terminal() {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let result = unetc::runner::run(spec, opts, &mut |done, total| {
        if total > 1 {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        }
    });
    bar.finish_and_clear();
    match result {
        Ok(report) => {
            if verbose {
                eprintln!(
                    "{} file(s) on {}, {} forward pass(es), planned activation arena {}",
                    report.files,
                    report.device,
                    report.forward_passes,
                    unetc::report::bytes(report.arena_bytes)
                );
                for note in &report.notes {
                    eprintln!("{note}");
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => run_error(e),
    }
}

/// Spec errors exit with 1, everything else (files, usage) with 2.
fn run_error(e: unetc::runner::RunError) -> ExitCode {
    match e {
        unetc::runner::RunError::Spec(diags) => {
            eprint!("{diags}");
            ExitCode::from(1)
        }
        e => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn check(
    spec: &std::path::Path,
    style: Style,
    format: Format,
    input_shape: Option<Vec<i64>>,
    line_length: Option<usize>,
    after: &[PathBuf],
    timings: bool,
    color: bool,
) -> ExitCode {
    let mut session = Session::new();
    for earlier in after {
        match compile_file(earlier, &Options::default(), &mut session) {
            Ok(c) if !c.has_errors() => {}
            Ok(c) => {
                print_diags(&c, color);
                return ExitCode::from(1);
            }
            Err(e) => {
                eprintln!("error: cannot read `{}`: {e}", earlier.display());
                return ExitCode::from(2);
            }
        }
    }
    let start = Instant::now();
    let compiled = match compile_file(spec, &Options { input_shape }, &mut session) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: cannot read `{}`: {e}", spec.display());
            return ExitCode::from(2);
        }
    };
    let compiled_at = start.elapsed();
    let failed = compiled.has_errors();
    let mut out = String::new();
    if format == Format::Json {
        out =
            serde_json::to_string_pretty(&report::json::check_json(&compiled)).unwrap_or_default();
        out.push('\n');
    } else if !failed {
        let style = match style {
            Style::Legacy => SummaryStyle::Legacy,
            Style::TfKeras => SummaryStyle::TfKeras,
        };
        out.push_str(&render(
            &report::summary_model(&compiled),
            style,
            line_length,
        ));
        out.push_str(&report::extras_text(&compiled));
    }
    let reported_at = start.elapsed();
    if format == Format::Text {
        print_diags(&compiled, color);
    }
    let mut stdout = std::io::stdout().lock();
    if stdout
        .write_all(out.as_bytes())
        .and_then(|_| stdout.flush())
        .is_err()
    {
        return ExitCode::from(2);
    }
    if timings {
        eprintln!(
            "timings: parse+expand+infer {:.3} ms, report {:.3} ms, total {:.3} ms",
            compiled_at.as_secs_f64() * 1e3,
            (reported_at - compiled_at).as_secs_f64() * 1e3,
            reported_at.as_secs_f64() * 1e3
        );
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn print_diags(c: &unetc::Compiled, color: bool) {
    if c.diags.is_empty() {
        return;
    }
    if color {
        let mut stream = codespan_reporting::term::termcolor::StandardStream::stderr(
            codespan_reporting::term::termcolor::ColorChoice::Always,
        );
        render_colored(&c.sources, &c.diags, &mut stream);
    } else {
        eprint!("{}", render_plain(&c.sources, &c.diags));
    }
}
