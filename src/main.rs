//! The `unetc` command line. Only argument handling and printing live here.

use clap::{Parser, Subcommand, ValueEnum};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use unetc::diag::{render_colored, render_plain};
use unetc::expand::Session;
use unetc::report::summary::SummaryStyle;
use unetc::{compile_file, report, Options};

/// `println!` that does not panic when standard output is a closed pipe (`unetc ... | head`).
macro_rules! say {
    ($($t:tt)*) => {{
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

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

// Parsed once per process: the size of the largest variant (train's options) costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Infer every shape, report mistakes, and print the model summary as Keras would.
    #[command(
        after_help = "Examples:\n  unetc check specs/original.unet\n  unetc check specs/bn_same.yaml --style tf-keras\n  unetc check specs/original.unet --input-shape 380x380x1 --format json"
    )]
    Check {
        /// Spec files (.unet for the DSL, .yaml/.yml for YAML); `-` reads one from standard input.
        #[arg(value_name = "SPEC", required = true, num_args = 1..)]
        specs: Vec<PathBuf>,
        /// The language of the spec read from standard input (`-`).
        #[arg(long, value_enum, default_value_t = SpecFormat::Dsl)]
        stdin_format: SpecFormat,
        /// Summary layout: `legacy` is the classic TF 2.2-2.5 table, `tf-keras` today's tf_keras 2.x.
        #[arg(long, value_enum, default_value_t = Style::Legacy)]
        style: Style,
        /// `text`: the Keras summary; `json`: one object per spec (README: "JSON output").
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
        after_help = "Examples:\n  unetc init-weights specs/original.unet -o original.safetensors --seed 1\n  unetc run specs/original.unet --weights original.safetensors --input cells.png -o mask.png\n  unetc run specs/bn_same.yaml --weights w.safetensors --input batch.npy -o probs.npy\n  unetc run specs/original.unet --weights w.safetensors --input images/ -o masks/ --skip-existing\n  unetc run specs/bn_same.yaml --weights w.safetensors --input big.png -o mask.png --memory 4GiB\n  unetc run specs/bn_same.yaml --weights w.safetensors --input @list.txt -o masks/ --num-parts 2 --part-id 0\n\nImages (PNG/TIFF) are scaled to [0, 1] and keep every channel they store (gray 1, gray+alpha 2,\nRGB 3, RGBA 4), which must match the spec's input: nothing is converted unless --alpha drop says\nso. .npy inputs (NHWC or HWC, f32, f64 or u8) are used as they are; NaN or infinite values in\ninputs or weights are errors. Images of other sizes than the spec's input are tiled (valid\npadding: overlap-tile) or padded and cropped back (same padding); sizes are printed W x H.\nA same-padding net's image that does not fit --memory (default: half of the available memory)\nruns in exact tiles, equal to the whole-image run; `unetc tiles` shows the plan for a size.\nA volume model (D x H x W x C) takes NDHWC .npy or NIfTI .nii/.nii.gz (output .nii/.nii.gz\nkeeps the input's affine) and is tiled in 3-D the same way (`unetc tiles SPEC --image DxHxW`).\nA directory or list run goes on past a failed input, names it, and exits 2 at the end, saying\nhow many failed."
    )]
    Run {
        /// The spec file (.unet for the DSL, .yaml/.yml for YAML).
        spec: PathBuf,
        /// Weights (safetensors, tensors named `<layer>/<variable>`).
        #[arg(long)]
        weights: PathBuf,
        /// An image (.png, .tif), an array (.npy), a directory of them, or a list file of them
        /// (`@list` or a `.txt` file: one path a line, `#` comments).
        #[arg(long)]
        input: PathBuf,
        /// Where to write: for one input a file, .npy or .tif (probabilities; a tiled float32
        /// BigTIFF) or .png (mask); for a directory of inputs a directory (created if missing)
        /// of one .png per input (.npy if the directory's name ends in .npy). A float32 .npy or
        /// a TIFF input to a .npy/.tif output is streamed tile by tile, never held whole.
        #[arg(short = 'o', long)]
        output: PathBuf,
        /// Write this output channel's probability as 8-bit gray instead of a mask (.png only).
        #[arg(long)]
        class: Option<usize>,
        /// Mask threshold for one-channel (sigmoid) outputs, .png or --labels [default: 0.5];
        /// models with several output channels take the argmax instead.
        #[arg(long)]
        threshold: Option<f32>,
        /// A .npy or .tif output holds one uint8 label per pixel instead of the probabilities:
        /// the most likely channel's index, or 1/0 above/below --threshold for one channel.
        #[arg(long)]
        labels: bool,
        /// An image's alpha channel: `keep` gives it to the model as a channel (2- or 4-channel
        /// models; others refuse the image), `drop` removes it.
        #[arg(long, value_enum, default_value_t = AlphaArg::Keep)]
        alpha: AlphaArg,
        /// Images or tiles per forward pass.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=4096))]
        batch: u16,
        /// `cpu`, `cuda`, or `auto` (the GPU when there is one).
        #[arg(long, default_value = "auto")]
        device: String,
        /// Replace existing outputs.
        #[arg(long)]
        force: bool,
        /// Leave inputs whose output exists alone (to finish or redo part of a directory run).
        #[arg(long)]
        skip_existing: bool,
        /// Print each input's size (W x H), the plan's memory and how the input was covered.
        #[arg(long)]
        verbose: bool,
        /// `f32`, `tf32` or `bf16` (tf32/bf16: tensor-core convolutions; CUDA only).
        #[arg(long, default_value = "f32")]
        precision: String,
        #[command(flatten)]
        tiling: TileArgs,
        /// Split the sorted inputs of a directory or list into N parts (for N processes or
        /// machines); with --part-id K this run takes inputs K, K+N, K+2N, ... (nnU-Net's rule).
        #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        num_parts: u32,
        /// Which part this run takes, 0 .. N-1 (see --num-parts).
        #[arg(long, value_name = "K", default_value_t = 0)]
        part_id: u32,
        /// Write this layer's output instead of the model's first output (another output of a
        /// deep-supervision model, or a layer's features; inside a nested model by its path,
        /// `encoder/conv2d`, `encoder/conv2d[1]` in its second call); later layers are not run.
        #[arg(long, value_name = "NAME")]
        output_layer: Option<String>,
    },
    /// Time a spec's forward pass: warm-up, then the median of several timed runs.
    #[command(
        after_help = "Examples:\n  unetc bench specs/original.unet --device cpu\n  unetc bench specs/bn_same.yaml --batch 2 --iterations 10 --format json\n\nbench/compare_cpu.py runs this beside PyTorch on the same network."
    )]
    Bench {
        /// The spec file (.unet for the DSL, .yaml/.yml for YAML).
        spec: PathBuf,
        /// `cpu`, `cuda`, or `auto` (the GPU when there is one).
        #[arg(long, default_value = "auto")]
        device: String,
        /// Images per forward pass.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=4096))]
        batch: u16,
        /// Timed forward passes; the median is reported.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100000))]
        iterations: u32,
        /// Untimed forward passes before the timed ones.
        #[arg(long, default_value_t = 1)]
        warmup: u32,
        /// Weights to use (default: seeded ones; speed does not depend on the values).
        #[arg(long)]
        weights: Option<PathBuf>,
        /// `text`: one line; `json`: every measurement as one object.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// `f32`, `tf32` or `bf16` (tf32/bf16: tensor-core convolutions; CUDA only).
        #[arg(long, default_value = "f32")]
        precision: String,
        /// Launch every kernel each time instead of replaying one CUDA graph.
        #[arg(long)]
        no_cuda_graph: bool,
    },
    /// Which input sizes the spec accepts, in closed form, and the output size each gives.
    #[command(
        after_help = "Examples:\n  unetc sizes specs/original.unet\n  unetc sizes specs/bn_same.yaml --near 500\n  unetc sizes specs/original.unet --format json"
    )]
    Sizes {
        /// The spec file (.unet for the DSL, .yaml/.yml for YAML).
        spec: PathBuf,
        /// Also show the accepted sizes nearest to N.
        #[arg(long, value_name = "N")]
        near: Option<usize>,
        /// Try every input size from 1 up to this.
        #[arg(long, default_value_t = 2048, value_parser = clap::value_parser!(u32).range(1..=16384))]
        max: u32,
        /// `text` or `json` (README: "JSON output").
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Plan tiles for an image: tile size within a memory budget, mode, halo, tile count.
    #[command(
        after_help = "Examples:\n  unetc tiles specs/original.unet --image 2048x1536\n  unetc tiles specs/original.unet --image 10000x10000 --memory 2GiB --format json\n  unetc tiles specs/bn_same.yaml --image 8000x8000 --memory 4GiB\n  unetc tiles specs/bn_same.yaml --image 8000x8000 --tile 2048 --tile-mode blend --overlap 0.25\n  unetc tiles specs/library/unet3d.unet --image 155x240x240 --memory 4GiB   (a volume: DxHxW)\n\nA same-padding net runs whole (mirror-padded to a size it accepts) when that fits the budget,\nelse in exact tiles (halo >= the reach of an output pixel, tiles on the net's stride grid:\nthe whole-image result) or, with --tile-mode blend, in blended tiles (approximate). A net with\na layer that sees the whole image (global pooling, Flatten, Reshape, ...) is named and refused\nexact tiles. Valid-padding nets use the paper's overlap-tile (exact). No tile is larger than\nthe image needs.\n\nExits with 3 when no tile fits the budget (or the model cannot be tiled as asked)."
    )]
    Tiles {
        /// The spec file (.unet for the DSL, .yaml/.yml for YAML).
        spec: PathBuf,
        /// Image size WxH, e.g. 2048x1536; for a volume model DxHxW (depth first, as the
        /// array's axes), e.g. 160x192x160. Or labelled, any order, the same for both:
        /// H=1536,W=2048 or D=160,H=192,W=160.
        #[arg(long, value_name = "WxH|DxHxW|H=..,W=..[,D=..]")]
        image: String,
        #[command(flatten)]
        tiling: TileArgs,
        /// The largest tile side to try.
        #[arg(long, default_value_t = 2048, value_parser = clap::value_parser!(u32).range(1..=16384))]
        max: u32,
        /// `text` or `json` (README: "JSON output").
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Convert a spec between the DSL and YAML (same layer graph, comments kept).
    #[command(
        after_help = "Examples:\n  unetc convert specs/original.unet --to yaml\n  unetc convert specs/bn_same.yaml --to dsl -o bn_same.unet"
    )]
    Convert {
        /// The spec file (.unet for the DSL, .yaml/.yml for YAML).
        spec: PathBuf,
        /// The form to print: `yaml` or `dsl`.
        #[arg(long, value_enum)]
        to: SpecFormat,
        /// Write here instead of standard output (.yaml/.yml for YAML, .unet for the DSL).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Replace the output file if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Print a DSL spec in canonical form (or rewrite it with --write).
    #[command(
        after_help = "Examples:\n  unetc fmt specs/original.unet\n  unetc fmt specs/original.unet --write\n  unetc fmt specs/original.unet --check"
    )]
    Fmt {
        /// The DSL spec file (.unet).
        spec: PathBuf,
        /// Rewrite the file in place.
        #[arg(long)]
        write: bool,
        /// Exit with 1 if the file is not formatted.
        #[arg(long)]
        check: bool,
    },
    /// Write the model for another tool: tf.keras Python code, or ONNX (opset 17) with weights.
    #[command(
        after_help = "Examples:\n  unetc export specs/original.unet --to keras -o original_keras.py\n  TF_USE_LEGACY_KERAS=1 python original_keras.py   # prints the same summary\n  unetc export specs/original.unet --to onnx --weights w.safetensors -o original.onnx\n  unetc export specs/original.unet --to onnx --random-weights --seed 1 -o untrained.onnx"
    )]
    Export {
        /// The spec file (.unet for the DSL, .yaml/.yml for YAML).
        spec: PathBuf,
        /// `keras` (Python code) or `onnx` (a model file with weights).
        #[arg(long, value_enum)]
        to: ExportFormat,
        /// The weights for `--to onnx` (safetensors, tensors named `<layer>/<variable>`).
        #[arg(long, conflicts_with = "random_weights")]
        weights: Option<PathBuf>,
        /// For `--to onnx` without trained weights: seeded random ones, as `init-weights` writes.
        #[arg(long)]
        random_weights: bool,
        /// The seed of `--random-weights`.
        #[arg(long, requires = "random_weights", value_name = "N")]
        seed: Option<u64>,
        /// The file to write (required for onnx; keras code goes to standard output without it).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Replace the output file if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Read a tf.keras functional model's `to_json()` and write a unetc spec (DSL or YAML).
    #[command(
        after_help = "Examples:\n  python -c 'import tensorflow as tf; print(tf.keras.models.load_model(\"m.keras\").to_json())' > m.json\n  unetc import m.json -o m.unet\n  unetc import m.json -o m.yaml\n  unetc import m.json --to yaml\n\nThe output file's extension picks the form: .unet for the DSL, .yaml/.yml for YAML."
    )]
    Import {
        /// The JSON file a Keras model's `to_json()` wrote, or an ONNX model (`.onnx`, e.g. from
        /// PyTorch's torch.onnx.export).
        json: PathBuf,
        /// ONNX import: write the model's weights here (safetensors, unetc's naming and layouts).
        #[arg(long)]
        weights_out: Option<PathBuf>,
        /// ONNX import: write which PyTorch module feeds which layer (from the initializer names),
        /// the map `unetc convert-weights --from pytorch --map` reads.
        #[arg(long, requires = "weights_out")]
        map_out: Option<PathBuf>,
        /// The form of the spec (default: from the output file's extension; DSL on standard output).
        #[arg(long, value_enum)]
        to: Option<SpecFormat>,
        /// Write here (.unet or .yaml/.yml) instead of standard output.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Replace the output file if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Print a shell completion script.
    #[command(
        after_help = "Examples:\n  unetc completions bash > /etc/bash_completion.d/unetc\n  unetc completions zsh > ~/.zfunc/_unetc"
    )]
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Draw the network: an SVG in the style of the U-Net paper's Figure 1, or Graphviz DOT.
    #[command(
        after_help = "Examples:\n  unetc diagram specs/original.unet -o unet.svg\n  unetc diagram specs/vgg16_unet.unet --format dot | dot -Tpng > vgg16_unet.png"
    )]
    Diagram {
        /// The spec file (.unet for the DSL, .yaml/.yml for YAML).
        spec: PathBuf,
        /// `svg` (a figure) or `dot` (Graphviz, every layer).
        #[arg(long, value_enum, default_value_t = DiagramFormat::Svg)]
        format: DiagramFormat,
        /// Write here instead of standard output.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Replace the output file if it exists.
        #[arg(long)]
        force: bool,
    },
    /// The execution plan: which layers run a kernel, which cost nothing (views, fused layers,
    /// concatenations never built), and where each value lives in the activation arena.
    #[command(
        after_help = "Examples:\n  unetc plan specs/original.unet\n  unetc plan specs/bn_same.yaml --precision bf16\n  unetc plan specs/original.unet --format json\n  unetc plan specs/zhixuhao.unet --train --batch-size 2"
    )]
    Plan {
        /// The spec file (.unet for the DSL, .yaml/.yml for YAML).
        spec: PathBuf,
        /// Element size of the arena: `f32`/`tf32` (4 bytes) or `bf16` (2 bytes).
        #[arg(long, default_value = "f32")]
        precision: String,
        /// `text` (a table) or `json` (README: "JSON output").
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Plan a training step instead: which values are kept for the backward pass, which are
        /// freed early, and the step's peak memory.
        #[arg(long)]
        train: bool,
        /// With --train: samples per step [default: the spec's train(batch_size:), else 32].
        #[arg(long, requires = "train", value_parser = clap::value_parser!(u32).range(1..=65536))]
        batch_size: Option<u32>,
        /// With --train: adam, adamw, sgd or rmsprop [default: the spec's, else adam].
        #[arg(long, requires = "train")]
        optimizer: Option<String>,
    },
    /// Train a spec on arrays, step for step as tf.keras's `train_on_batch` (CPU, f32).
    #[command(
        after_help = "Examples:\n  unetc train specs/bn_same.yaml --inputs x.npy --targets y.npy --loss categorical_crossentropy --epochs 5 -o trained.safetensors\n  unetc train model.unet --weights init.safetensors --inputs x.npy --targets y.npy --optimizer sgd --learning-rate 0.01 --momentum 0.9 --nesterov --loss binary_crossentropy --batch-size 2 --steps 4 --no-shuffle -o final.safetensors --log log.json\n\nInputs: NHWC float32 .npy of the model's input size. Targets: NHWC like the output (one-hot or\nbinary, float32), or NHW integer class indices (uint8, int32, int64) for\nsparse_categorical_crossentropy. Without --weights the spec's initializers draw the initial\nweights (--seed). The output holds every weight, BatchNormalization's moving statistics included."
    )]
    Train(TrainArgs),
    /// Write seeded weights following each layer's initializers (and Keras's batch-norm defaults).
    #[command(
        after_help = "Examples:\n  unetc init-weights specs/original.unet -o original.safetensors --seed 1\n  unetc init-weights specs/bn_same.yaml -o bn.safetensors --force"
    )]
    InitWeights {
        /// The spec file (.unet for the DSL, .yaml/.yml for YAML).
        spec: PathBuf,
        /// The safetensors file to write.
        #[arg(short, long)]
        output: PathBuf,
        /// Seed of the random initializers (the same seed gives the same weights).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Replace the output file if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Convert another framework's weights (a PyTorch state_dict saved as safetensors) to
    /// unetc's naming and layouts for a spec whose layers match the model's modules.
    #[command(
        after_help = "Examples:\n  unetc convert-weights model.unet state_dict.safetensors --from pytorch -o model.safetensors\n  unetc convert-weights model.unet state_dict.safetensors --from pytorch --map model.map -o model.safetensors\n\nWithout --map, the modules in numeric-aware key order are paired with the spec's layers in\norder, or else by the only pairing their shapes allow; when neither works, nothing is converted\nand a proposed map is written (OUTPUT with the extension .proposed.map) for you to check.\n`unetc import model.onnx --map-out model.map` writes the map from an ONNX export."
    )]
    ConvertWeights {
        /// The spec file (.unet for the DSL, .yaml/.yml for YAML).
        spec: PathBuf,
        /// The weights to convert: `safetensors.torch.save_file(model.state_dict(), PATH)`.
        weights: PathBuf,
        /// The framework the weights come from.
        #[arg(long, value_enum)]
        from: WeightsFrom,
        /// `pytorch.module -> unetc_layer` lines (`module -> -` leaves a module unused).
        #[arg(long)]
        map: Option<PathBuf>,
        /// The safetensors file to write (unetc's naming and layouts).
        #[arg(short, long)]
        output: PathBuf,
        /// Replace the output file (and a proposed map) if it exists.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum WeightsFrom {
    /// A PyTorch state_dict saved with safetensors.torch.save_file.
    Pytorch,
}

/// `unetc train`'s options.
#[derive(clap::Args)]
struct TrainArgs {
    /// The spec file (.unet for the DSL, .yaml/.yml for YAML).
    pub spec: PathBuf,
    /// Initial weights (safetensors); without it the spec's initializers draw them (--seed).
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// A folder of images and masks paired by file name (images/ and masks/, or image/ and
    /// label/, ...): PNG or TIFF, masks as class indices or 0/255.
    #[arg(long, conflicts_with_all = ["inputs", "targets"], required_unless_present = "inputs")]
    pub data: Option<PathBuf>,
    /// Training inputs: NHWC float32 .npy.
    #[arg(long, requires = "targets")]
    pub inputs: Option<PathBuf>,
    /// Training targets: like the output (NHWC), or NHW class indices for the sparse loss.
    #[arg(long, requires = "inputs")]
    pub targets: Option<PathBuf>,
    /// A validation folder (as --data); Dice, IoU and the loss are reported each epoch.
    #[arg(long, conflicts_with = "val_split")]
    pub val: Option<PathBuf>,
    /// Hold out this fraction of the training samples for validation (seeded).
    #[arg(long)]
    pub val_split: Option<f64>,
    /// Augmentations for folder data: any of flip,rot90,shift,scale,intensity,elastic, or
    /// all / none [default: all for --data, none for arrays].
    #[arg(long, conflicts_with = "no_augment")]
    pub augment: Option<String>,
    /// `constant`, `step` (x --lr-gamma every --lr-step-epochs) or `cosine` (to --lr-min).
    #[arg(long, default_value = "constant")]
    pub lr_schedule: String,
    /// Epochs between steps of the `step` schedule.
    #[arg(long, default_value_t = 10)]
    pub lr_step_epochs: u64,
    /// Factor of the `step` schedule.
    #[arg(long, default_value_t = 0.1)]
    pub lr_gamma: f64,
    /// Final learning rate of the `cosine` schedule.
    #[arg(long, default_value_t = 0.0)]
    pub lr_min: f64,
    /// The validation figure for --patience and --save-best: val_loss or val_dice.
    #[arg(long, default_value = "val_loss")]
    pub monitor: String,
    /// Stop after this many epochs without improvement of --monitor.
    #[arg(long)]
    pub patience: Option<u64>,
    /// Write a checkpoint (weights, optimizer state, progress) here after every epoch.
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Continue from a checkpoint written by --checkpoint (same spec and optimizer).
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Write the weights of the best epoch (by --monitor) here.
    #[arg(long)]
    pub save_best: Option<PathBuf>,
    /// adam, adamw, sgd or rmsprop, with Keras's defaults [default: adam].
    #[arg(long)]
    pub optimizer: Option<String>,
    /// Keras's `learning_rate` [default: 0.001; sgd 0.01].
    #[arg(long)]
    pub learning_rate: Option<f64>,
    /// Adam/AdamW `beta_1` [default: 0.9].
    #[arg(long = "beta-1")]
    pub beta_1: Option<f64>,
    /// Adam/AdamW `beta_2` [default: 0.999].
    #[arg(long = "beta-2")]
    pub beta_2: Option<f64>,
    /// Adam/AdamW/RMSprop `epsilon` [default: 1e-7].
    #[arg(long)]
    pub epsilon: Option<f64>,
    /// SGD/RMSprop `momentum` [default: 0].
    #[arg(long)]
    pub momentum: Option<f64>,
    /// SGD with Nesterov momentum.
    #[arg(long)]
    pub nesterov: bool,
    /// RMSprop `rho` [default: 0.9].
    #[arg(long)]
    pub rho: Option<f64>,
    /// Decoupled weight decay (AdamW's default 0.004; none for the others unless given).
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// categorical_crossentropy, sparse_categorical_crossentropy, binary_crossentropy, mse,
    /// dice, bce_dice or focal [default: binary_crossentropy for a one-channel output,
    /// categorical_crossentropy otherwise].
    #[arg(long)]
    pub loss: Option<String>,
    /// The model's output is logits (Keras's `from_logits=True`).
    #[arg(long)]
    pub from_logits: bool,
    /// Samples per step [default: 32].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub batch_size: Option<u32>,
    /// Train this many steps (batches).
    #[arg(long, conflicts_with = "epochs")]
    pub steps: Option<u64>,
    /// Train this many passes over the data [default: 1].
    #[arg(long)]
    pub epochs: Option<u64>,
    /// Keep the samples in order (Keras's `shuffle=False`).
    #[arg(long)]
    pub no_shuffle: bool,
    /// No augmentation (the same as --augment none).
    #[arg(long)]
    pub no_augment: bool,
    /// Seed of the initial weights, the shuffling and dropout.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Where to write the final weights (safetensors).
    #[arg(short = 'o', long)]
    pub output: PathBuf,
    /// Write the log: JSON {"steps": [{"step": 1, "epoch": 1, "loss": ...}], "epochs": [...]},
    /// or one CSV row per epoch if the name ends in .csv.
    #[arg(long)]
    pub log: Option<PathBuf>,
    /// Replace existing output files.
    #[arg(long)]
    pub force: bool,
    /// Where the steps run: cpu, or cuda (the GPU: f32 with f32 master weights; verified on
    /// an emulated GPU only; the kinds it trains: README "Training").
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

#[derive(Clone, Copy, ValueEnum)]
enum Style {
    Legacy,
    TfKeras,
}

/// How images larger than the memory allows are tiled (`run` and `tiles`).
#[derive(clap::Args, Clone)]
struct TileArgs {
    /// Input tile size HxW (height first, as --input-shape), DxHxW for a volume model (depth
    /// first), or N for every side; each side a size the net accepts (`unetc sizes`), clipped to
    /// the (padded) image. Default: from --memory.
    #[arg(long, value_name = "HxW|DxHxW|N")]
    tile: Option<String>,
    /// Memory budget for activations + weights, e.g. 4GiB, 512MiB [default: half of the
    /// available memory (MemAvailable), or 90% of the GPU's free memory with --device cuda].
    #[arg(long, value_name = "SIZE")]
    memory: Option<String>,
    /// Same-padding nets: `exact` tiles reproduce the whole-image result (halo ≥ the reach of
    /// an output pixel); `blend` averages overlapping tiles (approximate, fewer tiles).
    /// Valid-padding nets always use the exact overlap-tile.
    #[arg(long, value_enum, default_value_t = TileModeArg::Exact)]
    tile_mode: TileModeArg,
    /// Blend mode: the fraction of a tile shared with its neighbour, in [0, 1) [default: 0.25].
    #[arg(long, value_name = "F")]
    overlap: Option<f64>,
    /// Blend mode: `gaussian` weights tile centres most (σ = tile/8), `constant` averages.
    #[arg(long, value_enum)]
    blend: Option<BlendArg>,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum TileModeArg {
    Exact,
    Blend,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum BlendArg {
    Gaussian,
    Constant,
}

impl TileArgs {
    /// The request, with `budget` when --memory is not given; errors are usage errors' text.
    fn request(
        &self,
        default_budget: impl FnOnce() -> u64,
    ) -> Result<unetc::report::sizes::TileRequest, String> {
        use unetc::report::sizes::{TileMode, TileRequest};
        let budget = match &self.memory {
            Some(m) => unetc::text::parse_bytes(m)
                .ok_or_else(|| format!("--memory {m}: expected a size like 4GiB or 512MiB"))?,
            None => default_budget(),
        };
        let mut req = TileRequest::new(budget);
        if let Some(t) = &self.tile {
            match parse_tile(t)?[..] {
                [n] => (req.tile, req.tile_3d) = (Some((n, n)), Some([n, n, n])),
                [h, w] => req.tile = Some((h, w)),
                [d, h, w] => req.tile_3d = Some([d, h, w]),
                _ => return Err(format!("--tile {t}: expected HxW, DxHxW or N")),
            }
        }
        req.mode = match self.tile_mode {
            TileModeArg::Exact => TileMode::Exact,
            TileModeArg::Blend => TileMode::Blend,
        };
        if req.mode == TileMode::Exact && (self.overlap.is_some() || self.blend.is_some()) {
            return Err(
                "--overlap and --blend shape blended tiles; exact tiles overlap by their halo: \
                 add --tile-mode blend, or drop them"
                    .into(),
            );
        }
        if let Some(o) = self.overlap {
            if !(0.0..1.0).contains(&o) {
                return Err(format!(
                    "--overlap {o}: give a fraction of the tile in [0, 1), e.g. 0.25"
                ));
            }
            req.overlap = o;
        }
        if let Some(b) = self.blend {
            req.weights = match b {
                BlendArg::Gaussian => unetc::exec::tiling::BlendWeights::Gaussian,
                BlendArg::Constant => unetc::exec::tiling::BlendWeights::Constant,
            };
        }
        Ok(req)
    }
}

/// `--tile HxW` (images), `--tile DxHxW` (volumes) or `--tile N`: the sides, in array order.
fn parse_tile(t: &str) -> Result<Vec<usize>, String> {
    let dims: Vec<Option<usize>> = t.split(['x', 'X']).map(|d| d.trim().parse().ok()).collect();
    let ok = |n: &Option<usize>| n.is_some_and(|n| (1..=1 << 20).contains(&n));
    if (1..=3).contains(&dims.len()) && dims.iter().all(ok) {
        return Ok(dims.into_iter().flatten().collect());
    }
    Err(format!(
        "--tile {t}: expected HxW (height first), DxHxW for a volume (depth first) or N, sides \
         in 1..=1048576, e.g. 1024x2048, 32x96x96 or 1024"
    ))
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum Format {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum DiagramFormat {
    Svg,
    Dot,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum ExportFormat {
    Keras,
    Onnx,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum SpecFormat {
    Yaml,
    Dsl,
}

impl SpecFormat {
    fn name(self) -> &'static str {
        match self {
            SpecFormat::Yaml => "yaml",
            SpecFormat::Dsl => "dsl",
        }
    }

    fn extension(self) -> &'static str {
        match self {
            SpecFormat::Yaml => ".yaml or .yml",
            SpecFormat::Dsl => ".unet",
        }
    }
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
            if (1..=4).contains(&d.len())
                && d.iter()
                    .all(|&v| (1..=unetc::ir::value::MAX_DIM).contains(&v)) =>
        {
            Ok(ShapeArg(d))
        }
        _ => Err(format!(
            "expected HxWxC (or DxHxWxC) with sizes in 1..={}, e.g. 572x572x1",
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
                ExitCode::from(EXIT_USAGE)
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
            specs,
            stdin_format,
            style,
            format,
            input_shape,
            line_length,
            after,
            timings,
        } => check_all(
            &specs,
            &CheckArgs {
                stdin_format,
                style,
                format,
                input_shape: input_shape.map(|s| s.0),
                line_length: line_length.map(usize::from),
                after,
                timings,
                color,
            },
        ),
        Command::Run {
            spec,
            weights,
            input,
            output,
            class,
            threshold,
            labels,
            alpha,
            batch,
            device,
            force,
            skip_existing,
            verbose,
            precision,
            tiling,
            num_parts,
            part_id,
            output_layer,
        } => {
            let device = match unetc::runner::Device::parse(&device) {
                Ok(d) => d,
                Err(e) => return run_error(e),
            };
            let precision = match precision.parse() {
                Ok(p) => p,
                Err(e) => {
                    return run_error(unetc::runner::RunError::Usage(format!("--precision: {e}")))
                }
            };
            let opts = unetc::runner::RunOptions {
                device,
                weights,
                input,
                output,
                class,
                threshold,
                labels,
                batch: batch as usize,
                force,
                skip_existing,
                alpha: match alpha {
                    AlphaArg::Keep => unetc::runner::AlphaMode::Keep,
                    AlphaArg::Drop => unetc::runner::AlphaMode::Drop,
                },
                precision,
                tiling: None,
                num_parts: num_parts as usize,
                part_id: part_id as usize,
                output_layer,
            };
            let request = tiling.request(|| unetc::runner::default_memory_budget(device));
            let opts = match request {
                Ok(r) => unetc::runner::RunOptions {
                    tiling: Some(r),
                    ..opts
                },
                Err(e) => return run_error(unetc::runner::RunError::Usage(e)),
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
            precision,
            no_cuda_graph,
        } => {
            let device = match unetc::runner::Device::parse(&device) {
                Ok(d) => d,
                Err(e) => return run_error(e),
            };
            let precision = match precision.parse() {
                Ok(p) => p,
                Err(e) => {
                    return run_error(unetc::runner::RunError::Usage(format!("--precision: {e}")))
                }
            };
            match unetc::runner::bench(
                &spec,
                &unetc::runner::BenchOptions {
                    device,
                    weights,
                    batch: batch as usize,
                    warmup: warmup as usize,
                    iterations: iterations as usize,
                    precision,
                    cuda_graph: !no_cuda_graph,
                },
            ) {
                Ok(r) if format == Format::Json => {
                    say!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
                    ExitCode::SUCCESS
                }
                Ok(r) => {
                    say!(
                        "{}  {}  batch {}  {} {} ({} threads): {:.2} ms/batch (min {:.2}, max {:.2})  {:.2} img/s  {:.1} GFLOP/s  arena {}  {}",
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
                        unetc::text::bytes(r.planned_arena_bytes),
                        match r.peak_device_memory_bytes {
                            Some(d) => format!(
                                "peak device memory {} (driver: {} in use){}",
                                unetc::text::bytes(d),
                                r.measured_device_memory_bytes.map_or("?".into(), unetc::text::bytes),
                                if r.cuda_graph { "  CUDA graph" } else { "" }
                            ),
                            None => format!(
                                "peak RSS {}",
                                r.peak_rss_bytes.map_or("unknown".into(), unetc::text::bytes)
                            ),
                        },
                    );
                    if let (Some(e2e), Some(kernels), Some(load)) =
                        (r.end_to_end_median_ms, &r.kernels, r.kernel_load_ms)
                    {
                        say!(
                            "  network only (input on the device): {:.3} ms/batch; with the upload from pinned memory: {e2e:.3} ms/batch; kernels: {kernels}, ready in {load:.0} ms",
                            r.median_ms
                        );
                    }
                    for note in &r.notes {
                        eprintln!("note: {note}");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => run_error(e),
            }
        }
        Command::Sizes {
            spec,
            near,
            max,
            format,
        } => sizes(&spec, near, max as usize, format),
        Command::Tiles {
            spec,
            image,
            tiling,
            max,
            format,
        } => tiles(&spec, &image, &tiling, max as usize, format),
        Command::Convert {
            spec,
            to,
            output,
            force,
        } => convert(&spec, to, output.as_deref(), force),
        Command::Fmt { spec, write, check } => fmt(&spec, write, check),
        Command::Export {
            spec,
            to: ExportFormat::Keras,
            output,
            force,
            weights,
            random_weights,
            seed: _,
        } => {
            if weights.is_some() || random_weights {
                eprintln!("error: `--to keras` writes code without weights; use tools/keras_to_safetensors.py the other way round");
                return ExitCode::from(EXIT_USAGE);
            }
            export_keras(&spec, output.as_deref(), force)
        }
        Command::Export {
            spec,
            to: ExportFormat::Onnx,
            output,
            force,
            weights,
            random_weights,
            seed,
        } => {
            use unetc::interop::onnx::{write_onnx, OnnxWeights};
            // clap already refuses --weights together with --random-weights.
            let weights = match (&weights, random_weights) {
                (Some(path), _) => OnnxWeights::File(path),
                (None, true) => OnnxWeights::Random {
                    seed: seed.unwrap_or(0),
                },
                (None, false) => {
                    eprintln!("error: `--to onnx` needs the model's weights: pass `--weights w.safetensors` (or `--random-weights [--seed N]` for an untrained model)");
                    return ExitCode::from(EXIT_USAGE);
                }
            };
            let Some(out) = output else {
                eprintln!("error: `--to onnx` writes a binary file; give `-o model.onnx`");
                return ExitCode::from(EXIT_USAGE);
            };
            match write_onnx(&spec, weights, &out, force) {
                Ok(s) => {
                    eprintln!(
                        "wrote {} ({} nodes, {} initializers, {} bytes{})",
                        out.display(),
                        s.nodes,
                        s.initializers,
                        s.bytes,
                        match s.random_seed {
                            Some(seed) => format!(", random weights, seed {seed}"),
                            None => String::new(),
                        }
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => run_error(e),
            }
        }
        Command::Import {
            json,
            weights_out,
            map_out,
            to,
            output,
            force,
        } => import_model(
            &json,
            weights_out.as_deref(),
            map_out.as_deref(),
            to,
            output.as_deref(),
            force,
        ),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "unetc", &mut script);
            emit_stdout(&String::from_utf8_lossy(&script))
        }
        Command::Diagram {
            spec,
            format,
            output,
            force,
        } => diagram(&spec, format, output.as_deref(), force),
        Command::Plan {
            spec,
            precision,
            format,
            train: true,
            batch_size,
            optimizer,
        } => plan_train(&spec, &precision, format, batch_size, optimizer),
        Command::Plan {
            spec,
            precision,
            format,
            train: false,
            ..
        } => plan(&spec, &precision, format),
        Command::Train(args) => match train(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => run_error(e),
        },
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
        Command::ConvertWeights {
            spec,
            weights,
            from,
            map,
            output,
            force,
        } => convert_weights(&spec, &weights, from, map.as_deref(), &output, force),
    }
}

fn convert_weights(
    spec: &std::path::Path,
    weights: &std::path::Path,
    from: WeightsFrom,
    map: Option<&std::path::Path>,
    output: &std::path::Path,
    force: bool,
) -> ExitCode {
    let c = match unetc::runner::compile_checked(spec, None) {
        Ok(c) => c,
        Err(e) => return run_error(e),
    };
    if output.exists() && !force {
        eprintln!(
            "error: `{}` exists; use --force to replace it",
            output.display()
        );
        return ExitCode::from(EXIT_USAGE);
    }
    let bytes = match unetc::io::read_weights_file(weights) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let map_text = match map.map(unetc::interop::pytorch::read_map_file).transpose() {
        Ok(t) => t,
        Err(e) => {
            eprintln!(
                "error: cannot read the map `{}`: {e}",
                map.map_or(String::new(), |m| m.display().to_string())
            );
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let result = match from {
        WeightsFrom::Pytorch => {
            unetc::interop::pytorch::convert_state_dict(&c, &bytes, map_text.as_deref())
        }
    };
    match result {
        Ok(conv) => {
            if let Err(e) = unetc::io::save_weights(output, &conv.weights, force) {
                eprintln!("error: {e}");
                return ExitCode::from(EXIT_USAGE);
            }
            let ignored = if conv.ignored.is_empty() {
                String::new()
            } else {
                format!(", {} left unused by the map", conv.ignored.len())
            };
            eprintln!(
                "wrote {} tensors to {} ({} modules bound {}{ignored})",
                conv.weights.len(),
                output.display(),
                conv.modules - conv.ignored.len(),
                conv.binding.describe()
            );
            if conv.order_only > 0 {
                eprintln!(
                    "note: {} of the layers have shapes other modules have too, so only the module order placed them; if the model's modules are not declared in the order they run, pass a map (--map)",
                    conv.order_only
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}: {e}", weights.display());
            if let Some(p) = e.proposal {
                let path = output.with_extension("proposed.map");
                match unetc::io::write_atomic(&path, force, |w| w.write_all(p.as_bytes())) {
                    Ok(()) => eprintln!(
                        "wrote a proposed map to `{}`: check the lines marked `?` and pass it with --map",
                        path.display()
                    ),
                    Err(e) => eprintln!("(the proposed map was not written: {e})"),
                }
            }
            ExitCode::from(EXIT_USAGE)
        }
    }
}

fn train(r: TrainArgs) -> Result<(), unetc::runner::RunError> {
    use unetc::runner::RunError;
    use unetc::train::{fit, loss::Loss, optimizer::Optimizer, TrainConfig};
    // Refuse to overwrite before any work is done.
    for path in std::iter::once(&r.output).chain(&r.log) {
        if !r.force && path.exists() {
            return Err(RunError::Usage(format!(
                "`{}` exists; use --force to replace it",
                path.display()
            )));
        }
    }
    unetc::train::keep_freed_memory();
    let device = unetc::runner::Device::parse(&r.device)?.resolve()?;
    let c = unetc::runner::compile_checked(&r.spec, None)?;
    // The spec's train(...) settings, each overridden by its command-line flag.
    let spec = unetc::train::spec_settings(&c)
        .map_err(|diags| RunError::Spec(unetc::diag::render_plain(&c.sources, &diags)))?;
    let args = unetc::train::optimizer::OptimizerArgs {
        beta_1: r.beta_1.or(spec.beta_1),
        beta_2: r.beta_2.or(spec.beta_2),
        epsilon: r.epsilon.or(spec.epsilon),
        momentum: r.momentum.or(spec.momentum),
        nesterov: r.nesterov || spec.nesterov == Some(true),
        rho: r.rho.or(spec.rho),
        weight_decay: r.weight_decay.or(spec.weight_decay),
    };
    let loss_name = r.loss.clone().or(spec.loss);
    let loss = match loss_name.as_deref() {
        Some(name) => Some(Loss::parse(name).ok_or_else(|| {
            RunError::Usage(format!(
                "unknown loss `{name}`: use one of {}",
                Loss::NAMES.join(", ")
            ))
        })?),
        None => None,
    };
    let optimizer_name = r
        .optimizer
        .clone()
        .or(spec.optimizer)
        .unwrap_or_else(|| "adam".into());
    let (optimizer, weight_decay) =
        Optimizer::new(&optimizer_name, &args).map_err(RunError::Usage)?;
    // Keras's defaults: SGD 0.01, the others 0.001.
    let learning_rate = r
        .learning_rate
        .or(spec.learning_rate)
        .unwrap_or(match optimizer {
            Optimizer::Sgd { .. } => 0.01,
            Optimizer::Adam { .. } | Optimizer::AdamW { .. } | Optimizer::RmsProp { .. } => 0.001,
        });
    if !(learning_rate > 0.0 && learning_rate.is_finite()) {
        return Err(RunError::Usage(
            "--learning-rate must be a positive number".into(),
        ));
    }
    let from_logits = r.from_logits || spec.from_logits == Some(true);
    let batch_size = r
        .batch_size
        .map(u64::from)
        .or(spec.batch_size)
        .unwrap_or(32) as usize;
    let epochs = r.epochs.or(spec.epochs);
    // Without --loss: Keras's usual pairing for the output's channels.
    let loss = loss.unwrap_or_else(|| {
        let channels = c
            .graph
            .outputs
            .first()
            .and_then(|o| c.info.layers[o.index()].shape.as_ref())
            .and_then(|s| s.last().copied());
        if channels == Some(1) {
            Loss::BinaryCrossentropy
        } else {
            Loss::CategoricalCrossentropy
        }
    });
    let initial = match &r.weights {
        Some(p) => unetc::io::load_weights(p, &unetc::runner::expected_weights(&c))
            .map_err(RunError::Io)?,
        None => unetc::runner::init_weights(&c, r.seed)?,
    };
    let config = TrainConfig {
        optimizer,
        learning_rate: learning_rate as f32,
        weight_decay,
        loss,
        from_logits,
        seed: r.seed,
    };
    let source = match (r.data, r.inputs, r.targets) {
        (Some(dir), _, _) => fit::Source::Folder(dir),
        (None, Some(inputs), Some(targets)) => fit::Source::Arrays { inputs, targets },
        (None, _, _) => {
            return Err(RunError::Usage(
                "give --data DIR, or --inputs and --targets".into(),
            ))
        }
    };
    let validation = match (r.val, r.val_split) {
        (Some(dir), _) => fit::Validation::Folder(dir),
        (None, Some(f)) => fit::Validation::Split(f),
        (None, None) => fit::Validation::None,
    };
    let folder = matches!(source, fit::Source::Folder(_));
    let augment_list = if r.no_augment {
        Some("none")
    } else {
        r.augment.as_deref()
    };
    let augment = match augment_list {
        Some(list) => unetc::train::augment::Augment::parse(list).map_err(RunError::Usage)?,
        None if folder => unetc::train::augment::Augment::standard(),
        None => unetc::train::augment::Augment::none(),
    };
    if !folder && !augment.is_none() {
        return Err(RunError::Usage(
            "--augment applies to image folders (--data); arrays are used as they are".into(),
        ));
    }
    let schedule = match r.lr_schedule.as_str() {
        "constant" => fit::Schedule::Constant,
        "step" if r.lr_step_epochs > 0 && r.lr_gamma > 0.0 => fit::Schedule::Step {
            every: r.lr_step_epochs,
            gamma: r.lr_gamma as f32,
        },
        "step" => {
            return Err(RunError::Usage(
                "--lr-step-epochs and --lr-gamma must be positive".into(),
            ))
        }
        "cosine" if r.lr_min >= 0.0 && r.lr_min <= learning_rate => fit::Schedule::Cosine {
            min: r.lr_min as f32,
        },
        "cosine" => {
            return Err(RunError::Usage(
                "--lr-min must be between 0 and the learning rate".into(),
            ))
        }
        other => {
            return Err(RunError::Usage(format!(
                "unknown --lr-schedule `{other}`: use constant, step or cosine"
            )))
        }
    };
    let monitor = match r.monitor.as_str() {
        "val_loss" => fit::Monitor::ValLoss,
        "val_dice" => fit::Monitor::ValDice,
        other => {
            return Err(RunError::Usage(format!(
                "unknown --monitor `{other}`: use val_loss or val_dice"
            )))
        }
    };
    let has_validation = !matches!(validation, fit::Validation::None);
    if !has_validation && (r.patience.is_some() || r.save_best.is_some()) {
        return Err(RunError::Usage(
            "--patience and --save-best watch a validation figure: give --val or --val-split"
                .into(),
        ));
    }
    let opts = fit::FitOptions {
        source,
        validation,
        batch_size,
        length: match (r.steps, epochs) {
            (Some(s), _) => fit::Length::Steps(s),
            (None, e) => fit::Length::Epochs(e.unwrap_or(1)),
        },
        shuffle: !r.no_shuffle,
        augment,
        schedule,
        monitor,
        patience: r.patience,
        checkpoint: r.checkpoint,
        resume: r.resume,
        best: r.save_best,
        force: r.force,
        device,
    };
    let bar = indicatif::ProgressBar::new(0);
    let terminal = std::io::stderr().is_terminal();
    if !terminal {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:30} {pos}/{len} steps {msg} [{elapsed} < {eta}]",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let result = fit::fit(&c, &initial, config, &opts, &mut |event| match event {
        fit::Event::Step { log, total } => {
            bar.set_length(total);
            bar.set_position(log.step);
            bar.set_message(format!("epoch {} loss {:.6}", log.epoch, log.loss));
        }
        fit::Event::Epoch(e) => {
            let mut line = format!(
                "epoch {}: loss {:.6} lr {:.3e}",
                e.epoch, e.loss, e.learning_rate
            );
            if let Some(v) = &e.val {
                let per_class = |xs: &[f64]| {
                    xs.iter()
                        .map(|d| format!("{d:.4}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                };
                line += &format!(
                    "; val_loss {:.6} val_dice {:.4} [{}] val_iou {:.4} [{}]",
                    v.loss,
                    v.mean_dice(),
                    per_class(&v.dice),
                    v.mean_iou(),
                    per_class(&v.iou)
                );
            }
            bar.suspend(|| eprintln!("{line}"));
        }
        fit::Event::Stopped { epoch, best } => bar.suspend(|| {
            eprintln!("early stopping after epoch {epoch}: no improvement of the best {best:.6}")
        }),
    })?;
    bar.finish_and_clear();
    fit::write_results(&result, &r.output, r.log.as_deref(), r.force)?;
    if let Some(last) = result.steps.last() {
        eprintln!(
            "trained {} step(s), {} epoch(s); last loss {:.6}; wrote {} tensors to {}",
            last.step,
            last.epoch,
            last.loss,
            result.weights.len(),
            r.output.display()
        );
    }
    Ok(())
}

/// `run --alpha`: what to do with an image's alpha channel.
#[derive(Clone, Copy, ValueEnum)]
enum AlphaArg {
    Keep,
    Drop,
}

fn run(spec: &std::path::Path, opts: &unetc::runner::RunOptions, verbose: bool) -> ExitCode {
    use unetc::runner::RunEvent;
    // On a terminal: a bar over the files of a directory run (images/s, ETA) and one over the
    // current input's tiles. Otherwise one line per file of a directory run.
    let terminal = std::io::stderr().is_terminal();
    let bars = indicatif::MultiProgress::new();
    if !terminal {
        bars.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let style = |template: &str| {
        indicatif::ProgressStyle::with_template(template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
    };
    let mut files: Option<indicatif::ProgressBar> = None;
    let mut tiles: Option<indicatif::ProgressBar> = None;
    let started = Instant::now();
    // Ctrl-C removes the temporary file of an output being written, then exits 130.
    unetc::io::atomic::remove_on_interrupt();
    let result = unetc::runner::run(spec, opts, &mut |event| match event {
        RunEvent::Progress { input, done, total } => {
            if total > 1 {
                let bar = files.get_or_insert_with(|| {
                    let bar = bars.add(indicatif::ProgressBar::new(total as u64));
                    bar.set_style(style(
                        "{bar:30} {pos}/{len} files, {per_sec} [{elapsed} < {eta}] {msg}",
                    ));
                    bar
                });
                bar.set_position(done as u64);
                bar.set_message(input.display().to_string());
                if !terminal {
                    let secs = started.elapsed().as_secs_f64();
                    eprintln!(
                        "[{done}/{total}] {} ({:.2} images/s)",
                        input.display(),
                        done as f64 / secs.max(1e-9)
                    );
                }
            }
        }
        RunEvent::Tiles { done, total } => {
            if total > 1 {
                let bar = tiles.get_or_insert_with(|| {
                    let bar = bars.add(indicatif::ProgressBar::new(total as u64));
                    bar.set_style(style("{bar:30} {pos}/{len} tiles [{elapsed} < {eta}]"));
                    bar
                });
                // A new input starts its tiles from the beginning.
                if bar.length() != Some(total as u64) || done < bar.position() as usize {
                    bar.reset();
                    bar.set_length(total as u64);
                }
                bar.set_position(done as u64);
            }
        }
        // Said at once, above the bar, so that a long run shows its failures as they happen.
        RunEvent::Failed { error } => bars.suspend(|| eprintln!("error: {error}")),
        RunEvent::Note { text } => bars.suspend(|| eprintln!("note: {text}")),
        RunEvent::Skipped { input, output } => {
            if verbose {
                bars.suspend(|| {
                    eprintln!(
                        "{}: skipped, `{}` exists (--skip-existing)",
                        input.display(),
                        output.display()
                    )
                });
            }
        }
    });
    for bar in tiles.iter().chain(files.iter()) {
        bar.finish_and_clear();
    }
    match result {
        Ok(report) => {
            if report.files == 0 {
                eprintln!(
                    "no inputs in this part (--part-id {} of --num-parts {}): nothing to do",
                    opts.part_id, opts.num_parts
                );
            }
            if report.skipped > 0 {
                eprintln!(
                    "{} of {} input(s) skipped: their output exists (--skip-existing); {} \
                     written",
                    report.skipped, report.files, report.written
                );
            }
            if verbose {
                eprintln!(
                    "{} file(s) on {}, {} forward pass(es), planned activation arena {}",
                    report.files,
                    report.device,
                    report.forward_passes,
                    unetc::text::bytes(report.arena_bytes)
                );
                if let Some(d) = report.device_bytes {
                    eprintln!(
                        "peak device memory {} (activation arena + weights)",
                        unetc::text::bytes(d)
                    );
                }
                for note in &report.notes {
                    eprintln!("{note}");
                }
                if let Some(peak) = unetc::runner::peak_rss() {
                    eprintln!("peak RSS {peak} bytes (VmHWM)");
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => run_error(e),
    }
}

/// Spec errors exit with 1, everything else (files, usage, failed inputs) with 2.
fn run_error(e: unetc::runner::RunError) -> ExitCode {
    match e {
        unetc::runner::RunError::Spec(diags) => {
            eprint!("{diags}");
            ExitCode::from(EXIT_SPEC_ERRORS)
        }
        e => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// Exit code: the spec has errors (diagnostics on stderr); also `fmt --check` on an unformatted spec.
const EXIT_SPEC_ERRORS: u8 = 1;
/// Exit code: a bad option, an unreadable or invalid input file, an output that cannot be written.
const EXIT_USAGE: u8 = 2;
/// Exit code: a valid request that has no answer (no tile fits the budget, a model that cannot be
/// tiled or planned).
const EXIT_NO_ANSWER: u8 = 3;

/// The options of `unetc check` that apply to every spec it checks.
struct CheckArgs {
    stdin_format: SpecFormat,
    style: Style,
    format: Format,
    input_shape: Option<Vec<i64>>,
    line_length: Option<usize>,
    after: Vec<PathBuf>,
    timings: bool,
    color: bool,
}

/// The spec argument that means standard input.
fn is_stdin(spec: &std::path::Path) -> bool {
    spec.as_os_str() == "-"
}

/// What one spec's check gave: its exit code and, with `--format json`, its object.
struct Checked {
    code: u8,
    json: Option<serde_json::Value>,
}

/// `unetc check SPEC...`: each spec checked on its own (after the `--after` specs), summaries
/// headed by the file name when there are several; the exit code is the worst of them.
fn check_all(specs: &[PathBuf], args: &CheckArgs) -> ExitCode {
    if specs.iter().filter(|s| is_stdin(s)).count() > 1 {
        eprintln!("error: `-` (standard input) can be given once");
        return ExitCode::from(EXIT_USAGE);
    }
    // The --after specs are built once; each spec then starts from a copy of their session, so
    // `check A B` says what `check A; check B` would.
    let mut session = Session::new();
    for earlier in &args.after {
        match compile_file(earlier, &Options::default(), &mut session) {
            Ok(c) if !c.has_errors() => {}
            Ok(c) => {
                print_diags(&c, args.color);
                return ExitCode::from(EXIT_SPEC_ERRORS);
            }
            Err(e) => {
                eprintln!("error: cannot read `{}`: {e}", earlier.display());
                return ExitCode::from(EXIT_USAGE);
            }
        }
    }
    let several = specs.len() > 1;
    let mut worst = 0;
    let mut objects = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        if several && args.format == Format::Text {
            let gap = if i > 0 { "\n" } else { "" };
            say!("{gap}==> {} <==", spec_name(spec).display());
        }
        let checked = check_one(spec, &mut session.clone(), args);
        worst = worst.max(checked.code);
        if let Some(mut object) = checked.json {
            if several {
                // Objects in an array say which file they describe.
                if let serde_json::Value::Object(map) = &mut object {
                    map.insert("file".into(), spec_name(spec).display().to_string().into());
                }
            }
            objects.push(object);
        }
    }
    if args.format == Format::Json {
        let value = if several {
            serde_json::Value::Array(objects)
        } else {
            objects.pop().unwrap_or_default()
        };
        let mut text = serde_json::to_string_pretty(&value).unwrap_or_default();
        text.push('\n');
        if emit_stdout(&text) != ExitCode::SUCCESS {
            return ExitCode::from(EXIT_USAGE);
        }
    }
    ExitCode::from(worst)
}

/// The name diagnostics and headings give a spec (`<stdin>` for `-`).
fn spec_name(spec: &std::path::Path) -> &std::path::Path {
    if is_stdin(spec) {
        std::path::Path::new("<stdin>")
    } else {
        spec
    }
}

/// Standard input as spec text, refused past the size of a spec file or when it is not UTF-8.
fn read_stdin_spec() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::io::stdin()
        .lock()
        .take(unetc::MAX_SPEC_BYTES + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > unetc::MAX_SPEC_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("more than the {} bytes unetc reads", unetc::MAX_SPEC_BYTES),
        ));
    }
    String::from_utf8(bytes).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the spec is not UTF-8 text",
        )
    })
}

/// Checks one spec in `session`. Text goes out at once; JSON is returned to [`check_all`].
fn check_one(spec: &std::path::Path, session: &mut Session, args: &CheckArgs) -> Checked {
    let failed_to_read = |e: std::io::Error| {
        let what = if is_stdin(spec) {
            "standard input".to_string()
        } else {
            format!("`{}`", spec.display())
        };
        eprintln!("error: cannot read {what}: {e}");
        Checked {
            code: EXIT_USAGE,
            json: (args.format == Format::Json).then(|| {
                serde_json::json!({
                    "schema": report::json::SCHEMA_VERSION,
                    "error": format!("cannot read {what}: {e}"),
                })
            }),
        }
    };
    let options = Options {
        input_shape: args.input_shape.clone(),
        output_layer: None,
    };
    let start = Instant::now();
    let compiled = if is_stdin(spec) {
        let text = match read_stdin_spec() {
            Ok(t) => t,
            Err(e) => return failed_to_read(e),
        };
        let format = match args.stdin_format {
            SpecFormat::Dsl => unetc::front::Format::Dsl,
            SpecFormat::Yaml => unetc::front::Format::Yaml,
        };
        unetc::compile_source_as(spec_name(spec), format, text, &options, session)
    } else {
        match compile_file(spec, &options, session) {
            Ok(c) => c,
            Err(e) => return failed_to_read(e),
        }
    };
    let compiled_at = start.elapsed();
    let failed = compiled.has_errors();
    let code = if failed { EXIT_SPEC_ERRORS } else { 0 };
    if args.format == Format::Json {
        let json = report::json::check_json(&compiled);
        report_timings(args.timings, compiled_at, start.elapsed());
        return Checked {
            code,
            json: Some(json),
        };
    }
    let style = match args.style {
        Style::Legacy => SummaryStyle::Legacy,
        Style::TfKeras => SummaryStyle::TfKeras,
    };
    let out = report::check_text(&compiled, style, args.line_length);
    let reported_at = start.elapsed();
    print_diags(&compiled, args.color);
    if is_stdin(spec) {
        // The size hint probes the spec's file, which standard input does not have; a syntax
        // error may only mean YAML read as the DSL.
        let syntax_error = compiled.diags.iter().any(|d| d.code == "E-syntax");
        if syntax_error && args.stdin_format == SpecFormat::Dsl {
            eprintln!(
                "note: standard input is read as the DSL; for YAML give `--stdin-format yaml`"
            );
        }
    } else {
        size_hint(spec, &compiled);
    }
    let mut stdout = std::io::stdout().lock();
    if stdout
        .write_all(out.as_bytes())
        .and_then(|_| stdout.flush())
        .is_err()
    {
        return Checked {
            code: EXIT_USAGE,
            json: None,
        };
    }
    report_timings(args.timings, compiled_at, reported_at);
    Checked { code, json: None }
}

fn report_timings(timings: bool, compiled_at: Duration, reported_at: Duration) {
    if timings {
        eprintln!(
            "timings: parse+expand+infer {:.3} ms, report {:.3} ms, total {:.3} ms",
            compiled_at.as_secs_f64() * 1e3,
            (reported_at - compiled_at).as_secs_f64() * 1e3,
            reported_at.as_secs_f64() * 1e3
        );
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

/// A spec's text, compiled at its own input shape, and that shape; or the exit code after the
/// error was printed.
fn read_spec(spec: &std::path::Path) -> Result<(String, unetc::Compiled, [usize; 3]), ExitCode> {
    match unetc::report::sizes::read_sizes_spec(spec) {
        Ok(s) => {
            if let Some(note) = s.note {
                eprintln!("note: {note}");
            }
            Ok((s.text, s.compiled, s.base))
        }
        Err(e) => Err(sizes_spec_error(e)),
    }
}

fn sizes(spec: &std::path::Path, near: Option<usize>, max: usize, format: Format) -> ExitCode {
    match read_volume(spec) {
        Ok(Some(v)) if format == Format::Json => {
            return emit_json(&report::json::volume_sizes_json(
                spec, &v.text, v.base, max, near,
            ))
        }
        Ok(Some(v)) => {
            return emit_stdout(&unetc::report::volume::volume_sizes_text(
                spec, &v.text, v.base, max, near,
            ))
        }
        Ok(None) => {}
        Err(code) => return code,
    }
    let (text, compiled, base) = match read_spec(spec) {
        Ok(v) => v,
        Err(code) => return code,
    };
    match format {
        Format::Text => emit_stdout(&unetc::report::sizes::sizes_text(
            spec, &text, base, max, near,
        )),
        Format::Json => emit_json(&report::json::sizes_json(
            spec, &text, &compiled, base, max, near,
        )),
    }
}

fn tiles(
    spec: &std::path::Path,
    image: &str,
    tiling: &TileArgs,
    max: usize,
    format: Format,
) -> ExitCode {
    match read_volume(spec) {
        Ok(Some(v)) => return volume_tiles(spec, &v, image, tiling, max, format),
        Ok(None) => {}
        Err(code) => return code,
    }
    let labelled = match labelled_sizes(image, &["H", "W"]) {
        Some(Ok(hw)) => Some(hw),
        Some(Err(e)) => {
            eprintln!("error: --image {image}: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
        None => None,
    };
    let dims: Vec<usize> = match labelled {
        // Array order (H, W) to the WxH order below.
        Some(hw) => vec![hw[1], hw[0]],
        None => image
            .split(['x', 'X'])
            .filter_map(|d| d.trim().parse().ok())
            .collect(),
    };
    let (Some(&w), Some(&h), 2) = (dims.first(), dims.get(1), dims.len()) else {
        eprintln!("error: --image {image}: expected WxH, e.g. 2048x1536");
        return ExitCode::from(EXIT_USAGE);
    };
    if w == 0 || h == 0 || w > 1 << 20 || h > 1 << 20 {
        eprintln!("error: --image {image}: sizes must be in 1..=1048576");
        return ExitCode::from(EXIT_USAGE);
    }
    let req = match tiles_request(tiling, max) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let budget = req.budget;
    let (text, _, base) = match read_spec(spec) {
        Ok(v) => v,
        Err(code) => return code,
    };
    match unetc::report::sizes::plan_image(spec, &text, base, (h, w), &req) {
        Ok(p) if format == Format::Json => {
            emit_json(&report::json::tiles_json(spec, (h, w), budget, &p))
        }
        Ok(p) => {
            say!(
                "image {w}x{h}, memory budget {}{}",
                unetc::text::bytes(budget),
                if tiling.memory.is_none() {
                    " (half of the available memory; --memory to change)"
                } else {
                    ""
                }
            );
            if p.padded != p.image {
                say!(
                    "mirror-padded to {}x{} (W x H){}",
                    p.padded.1,
                    p.padded.0,
                    if p.tile_out == p.tile_in {
                        ", a size the net accepts"
                    } else {
                        ": the margin around it, and the last tiles' outputs"
                    }
                );
            }
            say!(
                "tile: {}x{} in -> {}x{} out (halo {} pixels each side; receptive field {})",
                p.tile_in.1,
                p.tile_in.0,
                p.tile_out.1,
                p.tile_out.0,
                p.halo,
                p.receptive_field
            );
            say!("mode: {}", p.mode_text());
            say!(
                "overlap between neighbouring input tiles: {} pixels",
                p.overlap()
            );
            let (rows, cols) = p.tiles();
            say!("tiles: {} x {} = {}", cols, rows, rows * cols);
            say!(
                "memory per tile (batch 1, f32): activation arena {} + weights {} = {}",
                unetc::text::bytes(p.arena_bytes),
                unetc::text::bytes(p.weight_bytes),
                unetc::text::bytes(p.arena_bytes.saturating_add(p.weight_bytes))
            );
            ExitCode::SUCCESS
        }
        // Every way it fails (no tile fits, an output that is not an image, a net that cannot be
        // tiled exactly) is an answer of "none".
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_NO_ANSWER)
        }
    }
}

/// `tiles`'s request: the options, the CPU's default budget, tiles up to `max`; or the exit code
/// after the usage error was printed.
fn tiles_request(
    tiling: &TileArgs,
    max: usize,
) -> Result<unetc::report::sizes::TileRequest, ExitCode> {
    let mut req = tiling
        .request(|| unetc::runner::default_memory_budget(unetc::runner::Device::Cpu))
        .map_err(|e| {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_USAGE)
        })?;
    req.max_side = max;
    Ok(req)
}

/// Prints why a spec has no `sizes`/`tiles` answer; the exit code.
fn sizes_spec_error(e: unetc::report::sizes::SizesSpecError) -> ExitCode {
    use unetc::report::sizes::SizesSpecError;
    match e {
        SizesSpecError::Read(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_USAGE)
        }
        SizesSpecError::Spec(d) => {
            eprint!("{d}");
            ExitCode::from(EXIT_SPEC_ERRORS)
        }
        SizesSpecError::NoAnswer(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_NO_ANSWER)
        }
    }
}

/// The spec when its model takes volumes (after printing its note), `None` for other models, or
/// the exit code after the error was printed.
fn read_volume(
    spec: &std::path::Path,
) -> Result<Option<unetc::report::volume::VolumeSpec>, ExitCode> {
    match unetc::report::volume::read_volume_spec(spec) {
        Ok(Some(v)) => {
            if let Some(note) = &v.note {
                eprintln!("note: {note}");
            }
            Ok(Some(v))
        }
        Ok(None) => Ok(None),
        Err(e) => Err(sizes_spec_error(e)),
    }
}

/// A labelled `--image` (`H=1536,W=2048`, `D=160,H=192,W=160`; any order, any case): the sizes
/// in the order of `axes` (array order). `None` when `text` is not labelled (`WxH`, `DxHxW`).
fn labelled_sizes(text: &str, axes: &[&str]) -> Option<Result<Vec<usize>, String>> {
    if !text.contains('=') {
        return None;
    }
    let want = axes.join(",");
    let mut sizes: Vec<Option<usize>> = vec![None; axes.len()];
    for part in text.split(',') {
        let Some((axis, n)) = part.split_once('=') else {
            return Some(Err(format!(
                "`{part}` is not AXIS=SIZE; give {want} sizes, e.g. {}",
                axes.iter()
                    .map(|a| format!("{a}=64"))
                    .collect::<Vec<_>>()
                    .join(",")
            )));
        };
        let axis = axis.trim();
        let Some(i) = axes.iter().position(|a| a.eq_ignore_ascii_case(axis)) else {
            return Some(Err(format!(
                "axis `{axis}`: this model's sizes are {want} (an image's are H,W; a volume's \
                 D,H,W)"
            )));
        };
        let Ok(n) = n.trim().parse::<usize>() else {
            return Some(Err(format!("{axis}={n}: not a whole number")));
        };
        if sizes[i].replace(n).is_some() {
            return Some(Err(format!("axis {} given twice", axes[i])));
        }
    }
    let missing: Vec<&str> = axes
        .iter()
        .zip(&sizes)
        .filter(|(_, n)| n.is_none())
        .map(|(a, _)| *a)
        .collect();
    if !missing.is_empty() {
        return Some(Err(format!(
            "no size for {}; give {want}",
            missing.join(", ")
        )));
    }
    Some(Ok(sizes.into_iter().flatten().collect()))
}

/// `unetc tiles` for a volume model: `--image DxHxW`.
fn volume_tiles(
    spec: &std::path::Path,
    v: &unetc::report::volume::VolumeSpec,
    image: &str,
    tiling: &TileArgs,
    max: usize,
    format: Format,
) -> ExitCode {
    use unetc::report::volume::dhw;
    let dims: Vec<Option<usize>> = match labelled_sizes(image, &["D", "H", "W"]) {
        Some(Ok(dhw)) => dhw.into_iter().map(Some).collect(),
        Some(Err(e)) => {
            eprintln!("error: --image {image}: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
        None => image
            .split(['x', 'X'])
            .map(|d| d.trim().parse().ok())
            .collect(),
    };
    let volume = match dims[..] {
        [Some(d), Some(h), Some(w)] if [d, h, w].iter().all(|n| (1..=1 << 20).contains(n)) => {
            [d, h, w]
        }
        _ => {
            eprintln!(
                "error: --image {image}: this is a volume model (input {} x {} channels, D x H x \
                 W); expected DxHxW (depth first), sizes in 1..=1048576, e.g. 160x192x160",
                dhw([v.base[0], v.base[1], v.base[2]]),
                v.base[3]
            );
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let req = match tiles_request(tiling, max) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let budget = req.budget;
    match unetc::report::volume::plan_volume(spec, &v.text, v.base, volume, &req) {
        Ok(p) if format == Format::Json => {
            emit_json(&report::json::volume_tiles_json(spec, volume, budget, &p))
        }
        Ok(p) => {
            say!(
                "volume {} (D x H x W), memory budget {}{}",
                dhw(volume),
                unetc::text::bytes(budget),
                if tiling.memory.is_none() {
                    " (half of the available memory; --memory to change)"
                } else {
                    ""
                }
            );
            if p.padded != p.volume {
                say!(
                    "mirror-padded to {} (D x H x W){}",
                    dhw(p.padded),
                    if p.tile_out == p.tile_in {
                        ", a size the net accepts"
                    } else {
                        ": the margin around it, and the last tiles' outputs"
                    }
                );
            }
            say!(
                "tile: {} in -> {} out (D x H x W; halo {} voxels each side; receptive field {})",
                dhw(p.tile_in),
                dhw(p.tile_out),
                dhw(p.halo),
                dhw(p.receptive_field)
            );
            say!("mode: {}", p.mode_text());
            say!(
                "overlap between neighbouring input tiles: {} voxels (D x H x W)",
                dhw(p.overlap())
            );
            let t = p.tiles();
            say!("tiles: {} = {}", dhw(t), t[0] * t[1] * t[2]);
            say!(
                "memory per tile (batch 1, f32): activation arena {} + weights {} = {}",
                unetc::text::bytes(p.arena_bytes),
                unetc::text::bytes(p.weight_bytes),
                unetc::text::bytes(p.arena_bytes.saturating_add(p.weight_bytes))
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_NO_ANSWER)
        }
    }
}

/// After a size problem, the input sizes near the spec's that do work.
fn size_hint(spec: &std::path::Path, c: &unetc::Compiled) {
    let size_problem = c.diags.iter().any(|d| {
        matches!(
            d.code,
            "E-concat-shape" | "E-size" | "E-crop" | "E-reshape" | "W-pool-floor"
        )
    });
    let Some(base) = c
        .graph
        .inputs
        .first()
        .and_then(|&i| match c.graph.node(i).op {
            unetc::ir::Op::Input(ref op) if op.shape.len() == 3 => Some([
                op.shape[0] as usize,
                op.shape[1] as usize,
                op.shape[2] as usize,
            ]),
            _ => None,
        })
    else {
        return;
    };
    if !size_problem {
        return;
    }
    let Ok(text) = std::fs::read_to_string(spec) else {
        return;
    };
    let limit = (base[0].max(base[1]) * 2).clamp(64, 2048);
    let mut parts = Vec::new();
    for axis in if base[0] == base[1] {
        vec![0]
    } else {
        vec![0, 1]
    } {
        let (below, above) = unetc::report::sizes::nearest_to_base(spec, &text, base, axis, limit);
        let show = |p: Option<unetc::report::sizes::SizePair>| {
            p.map(|p| match p.output {
                Some(o) => format!("{} (output {o})", p.input),
                None => p.input.to_string(),
            })
        };
        let found: Vec<String> = [show(below), show(above)].into_iter().flatten().collect();
        if !found.is_empty() {
            let what = if base[0] == base[1] {
                "input sizes"
            } else if axis == 0 {
                "heights"
            } else {
                "widths"
            };
            parts.push(format!(
                "{what} that work near {}: {}",
                base[axis],
                found.join(" and ")
            ));
        }
    }
    if !parts.is_empty() {
        eprintln!(
            "help: {}; `unetc sizes {}` lists them all",
            parts.join("; "),
            spec.display()
        );
    }
}

/// Parses a spec file for printing; diagnostics on failure.
fn parse_for_print(spec: &std::path::Path) -> Result<(String, unetc::ast::Spec), ExitCode> {
    let text = match std::fs::read_to_string(spec) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: cannot read `{}`: {e}", spec.display());
            return Err(ExitCode::from(EXIT_USAGE));
        }
    };
    let mut sources = unetc::diag::SourceMap::new();
    let file = sources.add(spec, text.clone());
    match unetc::front::parse(unetc::front::Format::of_path(spec), file, &text) {
        Ok(parsed) => Ok((text, parsed)),
        Err(diags) => {
            eprint!("{}", render_plain(&sources, &diags));
            Err(ExitCode::from(EXIT_SPEC_ERRORS))
        }
    }
}

fn write_text(path: &std::path::Path, text: &str, force: bool) -> ExitCode {
    match unetc::io::write_atomic(path, force, |w| w.write_all(text.as_bytes())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

fn convert(
    spec: &std::path::Path,
    to: SpecFormat,
    output: Option<&std::path::Path>,
    force: bool,
) -> ExitCode {
    if let Err(e) = spec_output_format(Some(to), output) {
        eprintln!("error: {e}");
        return ExitCode::from(EXIT_USAGE);
    }
    let (text, parsed) = match parse_for_print(spec) {
        Ok(v) => v,
        Err(code) => return code,
    };
    let printed = match to {
        SpecFormat::Dsl => unetc::emit::dsl::print(&parsed, &text),
        SpecFormat::Yaml => unetc::emit::yaml::print(&parsed, &text),
    };
    match output {
        Some(path) => write_text(path, &printed, force),
        None => emit_stdout(&printed),
    }
}

fn fmt(spec: &std::path::Path, write: bool, check: bool) -> ExitCode {
    if unetc::front::Format::of_path(spec) != unetc::front::Format::Dsl {
        eprintln!(
            "error: `unetc fmt` formats DSL specs (.unet); for YAML use `unetc convert --to yaml`"
        );
        return ExitCode::from(EXIT_USAGE);
    }
    let (text, parsed) = match parse_for_print(spec) {
        Ok(v) => v,
        Err(code) => return code,
    };
    let printed = unetc::emit::dsl::print(&parsed, &text);
    if check {
        if printed != text {
            eprintln!(
                "{} is not formatted; run `unetc fmt --write {}`",
                spec.display(),
                spec.display()
            );
            return ExitCode::from(EXIT_SPEC_ERRORS);
        }
        return ExitCode::SUCCESS;
    }
    if write {
        return if printed == text {
            ExitCode::SUCCESS
        } else {
            write_text(spec, &printed, true)
        };
    }
    emit_stdout(&printed)
}

fn export_keras(spec: &std::path::Path, output: Option<&std::path::Path>, force: bool) -> ExitCode {
    let c = match compile_checked(spec) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let beyond = unetc::interop::keras::keras_cannot_express(&c.graph);
    if !beyond.is_empty() {
        eprintln!(
            "error: tf.keras cannot express these layers, so no Keras code is written:\n  {}",
            beyond.join("\n  ")
        );
        return ExitCode::from(EXIT_USAGE);
    }
    let code = unetc::interop::keras::export_python(&c.graph, &c.info);
    match output {
        Some(path) => write_text(path, &code, force),
        None => emit_stdout(&code),
    }
}

/// The form of a spec to write: `--to` if given, else the output file's extension, else (standard
/// output) the DSL. An output file must be named .unet or .yaml/.yml, as the form written, so
/// that `unetc check` reads it back in that form.
fn spec_output_format(
    to: Option<SpecFormat>,
    output: Option<&std::path::Path>,
) -> Result<SpecFormat, String> {
    let Some(path) = output else {
        return Ok(to.unwrap_or(SpecFormat::Dsl));
    };
    let by_extension = match path.extension().and_then(|e| e.to_str()) {
        Some("unet") => SpecFormat::Dsl,
        Some("yaml" | "yml") => SpecFormat::Yaml,
        _ => {
            return Err(format!(
                "`{}`: a spec file is named .unet (the DSL) or .yaml/.yml (YAML)",
                path.display()
            ))
        }
    };
    match to {
        Some(to) if to != by_extension => Err(format!(
            "`--to {}` but `{}` is named as a {} file; name it {}",
            to.name(),
            path.display(),
            by_extension.name(),
            to.extension()
        )),
        Some(_) | None => Ok(by_extension),
    }
}

fn import_model(
    json: &std::path::Path,
    weights_out: Option<&std::path::Path>,
    map_out: Option<&std::path::Path>,
    to: Option<SpecFormat>,
    output: Option<&std::path::Path>,
    force: bool,
) -> ExitCode {
    let form = match spec_output_format(to, output) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let bytes = match std::fs::read(json) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: cannot read `{}`: {e}", json.display());
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let is_onnx = json
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("onnx"));
    let mut keras_layers = None;
    let (dsl, weights, map) = if is_onnx {
        let Some(weights_out) = weights_out else {
            eprintln!("error: importing ONNX needs --weights-out FILE.safetensors for the model's weights");
            return ExitCode::from(EXIT_USAGE);
        };
        match unetc::interop::onnx_import::import_onnx(&bytes) {
            Ok(m) => {
                let map = map_out.map(|p| (p, m.torch_map_text()));
                (m.spec, Some((weights_out, m.weights)), map)
            }
            Err(e) => {
                eprintln!("error: {}: {e}", json.display());
                return ExitCode::from(EXIT_USAGE);
            }
        }
    } else {
        if weights_out.is_some() {
            eprintln!("error: --weights-out is for ONNX models (`.onnx`); a Keras JSON file holds no weights");
            return ExitCode::from(EXIT_USAGE);
        }
        let text = match String::from_utf8(bytes) {
            Ok(t) => t,
            Err(_) => {
                eprintln!(
                    "error: {}: not UTF-8 text (an ONNX model must be named `.onnx`)",
                    json.display()
                );
                return ExitCode::from(EXIT_USAGE);
            }
        };
        // A file that is not a Keras model unetc can import is an invalid input file.
        keras_layers = Some(unetc::interop::verify::keras_layers(&text));
        match unetc::interop::keras::import_json(&text) {
            Ok(dsl) => (dsl, None, None),
            Err(e) => {
                eprintln!("error: {}: {e}", json.display());
                return ExitCode::from(EXIT_USAGE);
            }
        }
    };
    // The spec is compiled again (in the form written) before anything is written.
    let spec = match unetc::interop::verify::checked_spec(
        &dsl,
        form == SpecFormat::Yaml,
        keras_layers.as_deref(),
        weights.as_ref().map(|(_, w)| w),
    ) {
        Ok(spec) => spec,
        Err(e) => {
            eprintln!("error: {}: {e}", json.display());
            return ExitCode::from(EXIT_USAGE);
        }
    };
    // Nothing is written unless both files can be: refuse existing outputs first.
    if let (Some((w, _)), false) = (&weights, force) {
        let existing = [Some(*w), output, map.as_ref().map(|m| m.0)]
            .into_iter()
            .flatten()
            .find(|p| p.exists());
        if let Some(which) = existing {
            eprintln!(
                "error: `{}` exists; use --force to replace it",
                which.display()
            );
            return ExitCode::from(EXIT_USAGE);
        }
    }
    if let Some((path, w)) = &weights {
        if let Err(e) = unetc::io::save_weights(path, w, force) {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    }
    if let Some((path, text)) = &map {
        if write_text(path, text, force) != ExitCode::SUCCESS {
            return ExitCode::from(EXIT_USAGE);
        }
    }
    match output {
        Some(path) => write_text(path, &spec, force),
        None => emit_stdout(&spec),
    }
}

/// Pretty JSON and a newline on standard output.
fn emit_json(value: &serde_json::Value) -> ExitCode {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    emit_stdout(&text)
}

/// Writes to standard output; a closed pipe (`| head`) ends quietly instead of panicking.
fn emit_stdout(text: &str) -> ExitCode {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: cannot write to standard output: {e}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// A spec compiled without errors, or the exit code after its diagnostics were printed.
fn compile_checked(spec: &std::path::Path) -> Result<unetc::Compiled, ExitCode> {
    unetc::runner::compile_checked(spec, None).map_err(run_error)
}

fn plan(spec: &std::path::Path, precision: &str, format: Format) -> ExitCode {
    let precision: unetc::exec::Precision = match precision.parse() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: --precision: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let c = match compile_checked(spec) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let Some(p) = unetc::exec::plan::plan(&c.graph, &c.info) else {
        eprintln!("error: no plan for `{}`", spec.display());
        return ExitCode::from(EXIT_NO_ANSWER);
    };
    let element_bytes = if precision == unetc::exec::Precision::Bf16 {
        2
    } else {
        4
    };
    match format {
        Format::Text => emit_stdout(&unetc::report::plan::plan_text(&c, &p, element_bytes)),
        Format::Json => emit_json(&report::json::plan_json(
            spec,
            &c,
            &unetc::report::plan::plan_report(&c, &p, element_bytes),
        )),
    }
}

/// `unetc plan --train`: the memory of a training step (the trainer frees by the same plan).
fn plan_train(
    spec: &std::path::Path,
    precision: &str,
    format: Format,
    batch_size: Option<u32>,
    optimizer: Option<String>,
) -> ExitCode {
    if precision != "f32" {
        eprintln!("error: --precision: training runs in f32 only");
        return ExitCode::from(EXIT_USAGE);
    }
    let c = match compile_checked(spec) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let settings = match unetc::train::spec_settings(&c) {
        Ok(s) => s,
        Err(diags) => {
            eprint!("{}", unetc::diag::render_plain(&c.sources, &diags));
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let args = unetc::train::optimizer::OptimizerArgs {
        beta_1: settings.beta_1,
        beta_2: settings.beta_2,
        epsilon: settings.epsilon,
        momentum: settings.momentum,
        nesterov: settings.nesterov == Some(true),
        rho: settings.rho,
        weight_decay: settings.weight_decay,
    };
    let name = optimizer
        .or(settings.optimizer)
        .unwrap_or_else(|| "adam".into());
    let slots = match unetc::train::optimizer::Optimizer::new(&name, &args) {
        Ok((o, _)) => o.slots(),
        Err(e) => {
            eprintln!("error: --optimizer: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let batch = batch_size
        .map(u64::from)
        .or(settings.batch_size)
        .unwrap_or(32) as usize;
    let p = match unetc::train::memory::MemoryPlan::new(&c, batch, slots) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match format {
        Format::Text => emit_stdout(&unetc::report::plan::train_text(&p, &name)),
        Format::Json => emit_json(&report::json::train_plan_json(spec, &c, &p)),
    }
}

fn diagram(
    spec: &std::path::Path,
    format: DiagramFormat,
    output: Option<&std::path::Path>,
    force: bool,
) -> ExitCode {
    let c = match compile_checked(spec) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let text = match format {
        DiagramFormat::Svg => unetc::report::diagram::svg(&c),
        DiagramFormat::Dot => unetc::report::diagram::dot(&c),
    };
    match output {
        Some(path) => write_text(path, &text, force),
        None => emit_stdout(&text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every argument of every subcommand says what it is for in `unetc <cmd> --help`.
    #[test]
    fn every_argument_has_help() {
        fn walk(
            cmd: &clap::Command,
            path: &str,
            seen: &mut Vec<String>,
            missing: &mut Vec<String>,
        ) {
            for arg in cmd.get_arguments() {
                let at = format!("{path}: {}", arg.get_id());
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(at.clone());
                }
                seen.push(at);
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), seen, missing);
            }
        }
        Cli::command().debug_assert();
        // Building adds `--help`, `--version` and the `help` subcommand, as the binary has them.
        let mut cmd = Cli::command();
        cmd.build();
        let (mut seen, mut missing) = (Vec::new(), Vec::new());
        walk(&cmd, "unetc", &mut seen, &mut missing);
        for expected in [
            "unetc export: force",
            "unetc sizes: spec",
            "unetc check: help",
        ] {
            assert!(
                seen.iter().any(|s| s == expected),
                "the walk missed `{expected}`"
            );
        }
        assert!(
            missing.is_empty(),
            "arguments without help:\n{}",
            missing.join("\n")
        );
    }
}
