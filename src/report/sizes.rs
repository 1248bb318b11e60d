//! Which input sizes a spec accepts, and what output size each gives; the overlap-tile plan for
//! an image. Answers come from the spec alone: each candidate size is checked by running the
//! layers' shape rules at that size ([`Prober`]: microseconds each), and the accepted sizes are then
//! summarised in closed form (`in ≡ r mod p, in ≥ n0`, `out = a·in + b`), verified on every
//! candidate of the searched range.

use crate::exec::tiling::{blend_spans, exact_spans, overlap_spans, BlendWeights, Span};
use crate::exec::WeightHome;
use crate::expand::Session;
use crate::{compile_source, Compiled, Options};
use std::path::Path;

/// One accepted size along an axis and the output size it gives (if the output is an image).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizePair {
    pub input: usize,
    pub output: Option<usize>,
}

/// The sizes an axis accepts in `1..=max`.
#[derive(Debug, Clone, PartialEq)]
pub struct AxisSizes {
    pub axis: &'static str,
    pub accepted: Vec<SizePair>,
    pub max: usize,
    /// The other axis was held at this size, not the spec's, because no size along this axis
    /// works with the spec's (a 390x389 input: 389 is not a valid width).
    pub other_axis_held_at: Option<usize>,
}

/// `in ≡ residue (mod period), in ≥ min` and `out = scale · in + offset`, when they hold exactly.
#[derive(Debug, Clone, PartialEq)]
pub struct ClosedForm {
    pub min: usize,
    pub period: usize,
    pub residue: usize,
    /// `(scale, offset)` with `out = scale * in + offset`; `None` if not linear or not an image.
    pub output: Option<(f64, f64)>,
}

/// Compiles `text` (the spec at `path`) at an input shape, with `output_layer` its only
/// output if given (`run --output-layer`); `None` if it has errors.
pub(crate) fn compile_at(
    path: &Path,
    text: &str,
    shape: &[usize],
    output_layer: Option<&str>,
) -> Option<Compiled> {
    let options = Options {
        input_shape: Some(shape.iter().map(|&d| d as i64).collect()),
        output_layer: output_layer.map(str::to_string),
    };
    let c = compile_source(path, text.to_string(), &options, &mut Session::new());
    (!c.has_errors()).then_some(c)
}

/// Accepted means: no errors, and no pooling that drops rows or columns (`W-pool-floor`), since
/// then the up path cannot come back to the skip's size exactly.
pub(crate) fn accepted(c: &Compiled) -> bool {
    !c.diags.iter().any(|d| d.code == "W-pool-floor")
}

/// The output's shape when it is an image (a volume) as the input is: the same rank.
fn output_dims(c: &Compiled, rank: usize) -> Option<Vec<usize>> {
    let out = *c.graph.outputs.first()?;
    let s = c.info.layers[out.index()].shape.as_ref()?;
    (s.len() == rank).then(|| s.iter().map(|&d| d as usize).collect())
}

/// Answers "is this input size accepted, and what output does it give?" for one spec, many
/// times. When the expansion did not look at shapes, the layer graph is the same at every size,
/// so it is built once and only the layers' shape rules run per size (microseconds). The `unet`
/// template's `crop: auto` computes crops from shapes: then the spec is compiled anew per size.
pub struct Prober<'a> {
    path: &'a Path,
    text: &'a str,
    fixed: Option<FixedGraph>,
}

/// A layer graph that does not depend on the input size.
struct FixedGraph {
    graph: crate::ir::Graph,
    /// Topological order of every layer; `None` when the graph has errors at any size.
    order: Option<Vec<crate::ir::NodeId>>,
}

impl<'a> Prober<'a> {
    pub fn new(path: &'a Path, text: &'a str) -> Prober<'a> {
        let mut sources = crate::diag::SourceMap::new();
        let file = sources.add(path, text.to_string());
        let fixed = match crate::front::parse(crate::front::Format::of_path(path), file, text) {
            // Syntax errors: every size fails, and compiling says so just as well.
            Err(_) => None,
            Ok(spec) => {
                let x = crate::expand::expand(&spec, &mut sources, &mut Session::new());
                let clean = !x.diags.iter().any(|d| d.is_error())
                    && !x.broken.iter().any(|&b| b)
                    && !x.graph.inputs.is_empty();
                (!x.shape_dependent).then(|| FixedGraph {
                    order: clean.then(|| x.graph.topological_order().ok()).flatten(),
                    graph: x.graph,
                })
            }
        };
        Prober { path, text, fixed }
    }

    /// A prober that compiles the spec anew for every size (what [`Prober::new`] falls back to
    /// for shape-dependent expansions; tests compare the two).
    pub fn compiling(path: &'a Path, text: &'a str) -> Prober<'a> {
        Prober {
            path,
            text,
            fixed: None,
        }
    }

    /// `Some(output shape, if the output is an image)` when `shape` is accepted; `shape` is
    /// `[H, W, C]` for an image model, `[D, H, W, C]` for a volume model.
    pub fn probe(&mut self, shape: &[usize]) -> Option<Option<Vec<usize>>> {
        let Some(fixed) = &mut self.fixed else {
            let c = compile_at(self.path, self.text, shape, None)?;
            return accepted(&c).then(|| output_dims(&c, shape.len()));
        };
        let order = fixed.order.as_ref()?;
        let g = &mut fixed.graph;
        let first_input = *g.inputs.first()?;
        if let crate::ir::Op::Input(input) = &mut g.nodes[first_input.index()].op {
            input.shape = shape.iter().map(|&d| d as i64).collect();
        }
        // What `infer` judges an error or a `W-pool-floor`, without building diagnostics.
        let mut shapes: Vec<Option<crate::ir::Shape>> = vec![None; g.nodes.len()];
        for &id in order {
            let node = g.node(id);
            let inputs: Vec<crate::ir::Shape> = node
                .inputs
                .iter()
                .map(|&i| shapes[i.index()].clone())
                .collect::<Option<_>>()?;
            if node
                .op
                .warnings(&inputs)
                .iter()
                .any(|w| w.code == "W-pool-floor")
            {
                return None;
            }
            let shape = node.op.infer(&inputs).ok()?;
            if shape.iter().any(|&d| d <= 0 || d > crate::infer::MAX_SIZE) {
                return None;
            }
            shapes[id.index()] = Some(shape);
        }
        let out = shapes[g.outputs.first()?.index()].as_ref()?;
        Some((out.len() == shape.len()).then(|| out.iter().map(|&d| d as usize).collect()))
    }

    /// Probes input size `n` along `axis` (0 = height, 1 = width); a square input stays square,
    /// otherwise the other axis keeps the spec's size.
    pub fn probe_size(&mut self, base: [usize; 3], axis: usize, n: usize) -> Option<SizePair> {
        let mut shape = base;
        shape[axis] = n;
        if base[0] == base[1] {
            shape[1 - axis] = n;
        }
        let output = self.probe(&shape)?;
        Some(SizePair {
            input: n,
            output: output.map(|d| d[axis]),
        })
    }
}

/// The accepted sizes along `axis` nearest to the spec's own, searching outwards from it within
/// `1..=max`: the largest at or below it and the smallest above it.
pub fn nearest_to_base(
    path: &Path,
    text: &str,
    base: [usize; 3],
    axis: usize,
    max: usize,
) -> (Option<SizePair>, Option<SizePair>) {
    let mut prober = Prober::new(path, text);
    let n = base[axis];
    let search = |prober: &mut Prober, base: [usize; 3]| {
        let below = (1..=n.min(max))
            .rev()
            .find_map(|k| prober.probe_size(base, axis, k));
        let above = (n + 1..=max).find_map(|k| prober.probe_size(base, axis, k));
        (below, above)
    };
    match search(&mut prober, base) {
        (None, None) => match square_anchor(&mut prober, base, 1 - axis, max) {
            Some(anchor) => {
                let mut held = base;
                held[1 - axis] = anchor;
                search(&mut prober, held)
            }
            None => (None, None),
        },
        found => found,
    }
}

/// The model's input shape as the spec writes it.
pub fn spec_input(c: &Compiled) -> Option<[usize; 3]> {
    let input = *c.graph.inputs.first()?;
    match c.info.layers[input.index()].shape.as_deref()? {
        &[h, w, ch] => Some([h as usize, w as usize, ch as usize]),
        _ => None,
    }
}

/// Probes one axis (0 = height, 1 = width) over `1..=max`; a square input is varied as a square.
pub fn probe_axis(path: &Path, text: &str, base: [usize; 3], axis: usize, max: usize) -> AxisSizes {
    let mut prober = Prober::new(path, text);
    let scan = |prober: &mut Prober, base: [usize; 3]| -> Vec<SizePair> {
        (1..=max)
            .filter_map(|n| prober.probe_size(base, axis, n))
            .collect()
    };
    let mut accepted_sizes = scan(&mut prober, base);
    let mut other_axis_held_at = None;
    if accepted_sizes.is_empty() {
        if let Some(anchor) = square_anchor(&mut prober, base, 1 - axis, max) {
            let mut held = base;
            held[1 - axis] = anchor;
            accepted_sizes = scan(&mut prober, held);
            other_axis_held_at = Some(anchor);
        }
    }
    AxisSizes {
        axis: if axis == 0 { "height" } else { "width" },
        accepted: accepted_sizes,
        max,
        other_axis_held_at,
    }
}

/// For a non-square spec whose `axis` size works with no size of the other axis: the accepted
/// square size nearest to the spec's `axis` size, to hold that axis at instead (the rules of
/// convolutions and poolings are the same along each axis, so it is a valid size there).
fn square_anchor(prober: &mut Prober, base: [usize; 3], axis: usize, max: usize) -> Option<usize> {
    if base[0] == base[1] {
        return None;
    }
    let n = base[axis];
    let square = |prober: &mut Prober, k: usize| prober.probe(&[k, k, base[2]]).map(|_| k);
    (0..max).find_map(|d| {
        let below = n.checked_sub(d).filter(|&k| k >= 1);
        let above = (d > 0 && n + d <= max).then_some(n + d);
        below
            .and_then(|k| square(prober, k))
            .or_else(|| above.and_then(|k| square(prober, k)))
    })
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The closed form of an axis's accepted sizes, if one describes them exactly on `1..=max`.
pub fn closed_form(sizes: &AxisSizes) -> Option<ClosedForm> {
    let first = sizes.accepted.first()?;
    let period = sizes
        .accepted
        .windows(2)
        .fold(0, |g, w| gcd(g, w[1].input - w[0].input))
        .max(1);
    let expected = (first.input..=sizes.max).step_by(period).count();
    if sizes.accepted.len() != expected {
        // Not one arithmetic progression up to the end of the range.
        return None;
    }
    let output = match (sizes.accepted.first(), sizes.accepted.last()) {
        (Some(a), Some(b)) if a.input != b.input => match (a.output, b.output) {
            (Some(oa), Some(ob)) => {
                let scale = (ob as f64 - oa as f64) / (b.input as f64 - a.input as f64);
                let offset = oa as f64 - scale * a.input as f64;
                sizes
                    .accepted
                    .iter()
                    .all(|p| {
                        p.output.is_some_and(|o| {
                            (scale * p.input as f64 + offset - o as f64).abs() < 1e-9
                        })
                    })
                    .then_some((scale, offset))
            }
            _ => None,
        },
        (Some(a), _) => a.output.map(|o| (0.0, o as f64)),
        _ => None,
    };
    Some(ClosedForm {
        min: first.input,
        period,
        residue: first.input % period,
        output,
    })
}

/// The accepted sizes nearest to `n`: the largest below or at it and the smallest above it.
pub fn nearest(sizes: &AxisSizes, n: usize) -> (Option<SizePair>, Option<SizePair>) {
    let below = sizes.accepted.iter().rev().find(|p| p.input <= n).copied();
    let above = sizes.accepted.iter().find(|p| p.input > n).copied();
    (below, above)
}

pub(crate) fn linear_text(scale: f64, offset: f64) -> String {
    let s = if scale == 1.0 {
        "in".to_string()
    } else {
        format!("{scale} × in")
    };
    match offset {
        0.0 => s,
        o if o < 0.0 => format!("{s} − {}", -o),
        o => format!("{s} + {o}"),
    }
}

/// The text of `unetc sizes`.
pub fn sizes_text(
    path: &Path,
    text: &str,
    base: [usize; 3],
    max: usize,
    near: Option<usize>,
) -> String {
    let mut out = String::new();
    let axes: Vec<usize> = if base[0] == base[1] {
        vec![0]
    } else {
        vec![0, 1]
    };
    for axis in axes {
        let sizes = probe_axis(path, text, base, axis, max);
        let label = if base[0] == base[1] {
            "height and width (each)"
        } else {
            sizes.axis
        };
        match sizes.other_axis_held_at {
            Some(held) => out.push_str(&format!(
                "{label}, sizes 1..={max} (the {} held at {held}: no size works with the spec's {}):\n",
                if axis == 0 { "width" } else { "height" },
                base[1 - axis]
            )),
            None => out.push_str(&format!("{label}, sizes 1..={max}:\n")),
        }
        axis_text(&mut out, &sizes, near);
    }
    if let Some(c) = compile_at(path, text, &base, None) {
        let crops: Vec<String> = c
            .info
            .keras_order
            .iter()
            .filter_map(|&id| match &c.graph.node(id).op {
                crate::ir::Op::Cropping2D(op) => {
                    let [t, b, l, r] = op.cropping;
                    Some(if t == b && l == r && t == l {
                        t.to_string()
                    } else {
                        format!("(({t}, {b}), ({l}, {r}))")
                    })
                }
                _ => None,
            })
            .collect();
        if !crops.is_empty() {
            out.push_str(&format!("skip crops: {}\n", crops.join("/")));
        }
    }
    out
}

/// One axis's lines of `unetc sizes`: the rule, the output, the smallest and nearest sizes.
pub(crate) fn axis_text(out: &mut String, sizes: &AxisSizes, near: Option<usize>) {
    if sizes.accepted.is_empty() {
        out.push_str("  no size in this range works\n");
        return;
    }
    match closed_form(sizes) {
        Some(cf) => {
            let rule = if cf.period == 1 {
                format!("in ≥ {}", cf.min)
            } else {
                format!("in ≡ {} mod {}, in ≥ {}", cf.residue, cf.period, cf.min)
            };
            out.push_str(&format!("  valid: {rule}\n"));
            if let Some((scale, offset)) = cf.output {
                out.push_str(&format!("  output: out = {}\n", linear_text(scale, offset)));
            }
        }
        None => {
            let list: Vec<String> = sizes
                .accepted
                .iter()
                .take(24)
                .map(|p| p.input.to_string())
                .collect();
            out.push_str(&format!(
                "  valid: {}{}\n",
                list.join(", "),
                if sizes.accepted.len() > 24 {
                    ", ..."
                } else {
                    ""
                }
            ));
        }
    }
    let examples: Vec<String> = sizes
        .accepted
        .iter()
        .take(6)
        .map(|p| match p.output {
            Some(o) => format!("{} → {}", p.input, o),
            None => p.input.to_string(),
        })
        .collect();
    out.push_str(&format!("  smallest: {}\n", examples.join(", ")));
    if let Some(n) = near {
        let (below, above) = nearest(sizes, n);
        let show = |p: Option<SizePair>| match p {
            Some(SizePair {
                input,
                output: Some(o),
            }) => format!("{input} (output {o})"),
            Some(SizePair {
                input,
                output: None,
            }) => input.to_string(),
            None => "none".into(),
        };
        out.push_str(&format!(
            "  nearest to {n}: {} and {}\n",
            show(below),
            show(above)
        ));
    }
}

/// A layer that makes an output pixel depend on the whole input along an axis, so that tiles
/// cannot reproduce the whole-image result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NonLocal {
    /// The layer's name in the spec.
    pub layer: String,
    /// Its Keras class.
    pub class: &'static str,
    /// Why: "makes each output pixel depend on the whole image", ...
    pub why: &'static str,
}

impl std::fmt::Display for NonLocal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "layer `{}` ({}) {}, so tiles cannot reproduce the whole-image result",
            self.layer, self.class, self.why
        )
    }
}

/// How far the inputs of one output pixel reach along an axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reach {
    /// The receptive field: input pixels one output pixel depends on (the widest over many
    /// output positions, since pooling grids make it depend on the position).
    pub field: usize,
    /// The most input pixels it reaches on one side of the output pixel's own position: a tile
    /// whose kept centre is this far from its cut edges gives exactly the whole-image values.
    pub radius: usize,
}

/// Receptive field along the height (see [`reach`]); the whole input for a net with a layer
/// that depends on all of it.
pub fn receptive_field(c: &Compiled) -> usize {
    match reach(c, 0) {
        Ok(r) => r.field,
        Err(_) => height_of(c, c.graph.inputs.first().copied()),
    }
}

fn height_of(c: &Compiled, id: Option<crate::ir::NodeId>) -> usize {
    id.and_then(|id| c.info.layers[id.index()].shape.as_ref())
        .and_then(|s| s.first())
        .map_or(1, |&d| d.max(1) as usize)
}

/// Why up-sampling with aligned corners is not tiled: its sampling depends on the whole size.
const ALIGNED_CORNERS: &str =
    "samples with aligned corners, whose scale (n-1)/(N-1) depends on the whole size";
const RESIZES_BY_RATIO: &str =
    "resizes to a fixed size, by a ratio that the whole image's size sets (a tile's differs)";

/// How far one output pixel's inputs reach along `axis` (0 = height, 1 = width; for a volume
/// 0 = depth), computed exactly by mapping output intervals back through every layer at the
/// compiled size (windows, strides, pooling grids, up-sampling, crops and paddings), over 256
/// neighbouring output positions in the middle of the output (every phase of a total stride up
/// to 256). Errors name the first layer
/// (from the output back) whose outputs depend on the whole input along the axis.
pub fn reach(c: &Compiled, axis: usize) -> Result<Reach, NonLocal> {
    use crate::ir::ops::{
        Interpolation, LambdaBody, PadMode, TfCompute, TfPadMode, VolumeInterpolation,
        WindowGeometry,
    };
    use crate::ir::Op;
    let Some(&out) = c.graph.outputs.first() else {
        return Ok(Reach {
            field: 1,
            radius: 0,
        });
    };
    let size = |id: crate::ir::NodeId| {
        c.info.layers[id.index()]
            .shape
            .as_ref()
            .and_then(|s| s.get(axis).or(s.first()))
            .map_or(1, |&d| d.max(1))
    };
    let rank = |id: crate::ir::NodeId| c.info.layers[id.index()].shape.as_ref().map(Vec::len);
    let out_n = size(out);
    let (mut field, mut radius) = (1usize, 0usize);
    for p in (out_n / 2..out_n).take(256) {
        // Needed positions of each tensor: [lo, hi] (not clipped to the tensor), or None.
        let mut need: Vec<Option<(i64, i64)>> = vec![None; c.graph.nodes.len()];
        need[out.index()] = Some((p, p));
        for &id in c.info.schedule.iter().rev() {
            let Some((a, b)) = need[id.index()] else {
                continue;
            };
            let node = c.graph.node(id);
            let non_local = || NonLocal {
                layer: node.name.clone(),
                class: node.op.class_name(),
                why: "makes each output pixel depend on the whole image",
            };
            for &input in &node.inputs {
                let n = size(input);
                let out = size(id) as usize;
                // Positions `[a, b]` of a sliding window's output read input positions from
                // the first window's start to the last one's end.
                let windows = |g: WindowGeometry| {
                    let (s, pad) = (g.stride as i64, g.pad_before as i64);
                    (a * s - pad, b * s + g.span() as i64 - 1 - pad)
                };
                let transposed = |kernel: usize, stride: usize, crop_before: usize| {
                    let (k, s, y0) = (kernel as i64, stride as i64, crop_before as i64);
                    (
                        (a + y0 - (k - 1)).div_euclid(s)
                            + i64::from((a + y0 - (k - 1)).rem_euclid(s) != 0),
                        (b + y0).div_euclid(s),
                    )
                };
                // Linear up-sampling by `s` with half-pixel centres: output `o` reads the input
                // positions around (o + 0.5) / s - 0.5 = (2o + 1 - s) / 2s, its floor for `a`
                // and its ceiling for `b` (⌈p / q⌉ = ⌊(p + q - 1) / q⌋).
                let linear = |s: i64| {
                    let s = s.max(1);
                    (
                        (2 * a + 1 - s).div_euclid(2 * s),
                        (2 * b + s).div_euclid(2 * s),
                    )
                };
                // Aligned corners scale by (n - 1) / (N - 1), which a tile's size changes.
                let aligned = || NonLocal {
                    why: ALIGNED_CORNERS,
                    ..non_local()
                };
                let nu = n as usize;
                let (lo, hi) = match &node.op {
                    Op::Conv2D(op) => windows(op.args.geometry(axis, nu, out)),
                    Op::MaxPooling2D(op) => windows(op.geometry(axis, nu, out)),
                    Op::AveragePooling2D(op) => windows(op.geometry(axis, nu, out)),
                    Op::DepthwiseConv2D(op) => windows(op.depthwise.geometry(axis, nu, out)),
                    // The pointwise stage reads one pixel: the depthwise window is the layer's.
                    Op::SeparableConv2D(op) => windows(op.depthwise.geometry(axis, nu, out)),
                    Op::Conv2DTranspose(op) => {
                        let g = op.geometry(axis, nu, out);
                        transposed(g.kernel, g.stride, g.crop_before)
                    }
                    // To a fixed size: the scale follows the whole input's size.
                    Op::Resizing(_) => {
                        return Err(NonLocal {
                            why: RESIZES_BY_RATIO,
                            ..non_local()
                        })
                    }
                    Op::UpSampling2D(op) => match (op.interpolation, op.align_corners) {
                        (Interpolation::Nearest, _) => {
                            let s = op.size[axis.min(1)].max(1);
                            (a.div_euclid(s), b.div_euclid(s))
                        }
                        (Interpolation::Bilinear, false) => linear(op.size[axis.min(1)]),
                        (Interpolation::Bilinear, true) => return Err(aligned()),
                    },
                    Op::Cropping2D(op) => (a + op.cropping[2 * axis.min(1)], b + op.cropping[2 * axis.min(1)]),
                    Op::ZeroPadding2D(op) if op.mode != PadMode::Zeros => {
                        return Err(NonLocal {
                            why: "mirrors or repeats the image's edge pixels, which a tile's edges are not",
                            ..non_local()
                        })
                    }
                    Op::ZeroPadding2D(op) => (a - op.padding[2 * axis.min(1)], b - op.padding[2 * axis.min(1)]),
                    // The 3-D kinds along their axis `axis` (depth, height, width).
                    Op::Conv3D(op) => windows(op.geometry(axis, nu, out)),
                    Op::MaxPooling3D(op) => windows(op.geometry(axis, nu, out)),
                    Op::AveragePooling3D(op) => windows(op.geometry(axis, nu, out)),
                    Op::Conv3DTranspose(op) => {
                        let g = op.geometry(axis, nu, out);
                        transposed(g.kernel, g.stride, g.crop_before)
                    }
                    Op::UpSampling3D(op) => match (op.interpolation, op.align_corners) {
                        (VolumeInterpolation::Nearest, _) => {
                            let s = op.size[axis.min(2)].max(1);
                            (a.div_euclid(s), b.div_euclid(s))
                        }
                        (VolumeInterpolation::Trilinear, false) => linear(op.size[axis.min(2)]),
                        (VolumeInterpolation::Trilinear, true) => return Err(aligned()),
                    },
                    Op::Cropping3D(op) => (a + op.cropping[2 * axis.min(2)], b + op.cropping[2 * axis.min(2)]),
                    Op::ZeroPadding3D(op) if op.mode != PadMode::Zeros => {
                        return Err(NonLocal {
                            why: "mirrors or repeats the volume's edge voxels, which a tile's edges are not",
                            ..non_local()
                        })
                    }
                    Op::ZeroPadding3D(op) => (a - op.padding[2 * axis.min(2)], b - op.padding[2 * axis.min(2)]),
                    // Every output value depends on the whole input.
                    Op::Flatten(_)
                    | Op::Reshape(_)
                    | Op::Permute(_)
                    // Tokens of patches, attending to each other (position embeddings differ
                    // per patch index).
                    | Op::PatchExtract(_)
                    | Op::PatchEmbedding(_)
                    | Op::SwinTransformerBlock(_)
                    | Op::PatchMerging(_)
                    | Op::PatchExpanding(_)
                    | Op::MultiHeadAttention(_)
                    | Op::GlobalAveragePooling2D(_)
                    | Op::GlobalMaxPooling2D(_)
                    | Op::GlobalAveragePooling3D(_)
                    // Statistics over the whole height and width.
                    | Op::GroupNormalization(_) => return Err(non_local()),
                    // Per pixel on an image (Keras applies it to the last axis); after a
                    // Flatten it is the whole input, which the Flatten said already.
                    Op::Dense(_) => (a, b),
                    Op::LayerNormalization(op)
                        if op.positive_axes(3).iter().any(|&x| x == 1 || x == 2) =>
                    {
                        return Err(non_local())
                    }
                    // Per pixel otherwise.
                    Op::LayerNormalization(_) => (a, b),
                    // A softmax across rows or columns mixes the whole image.
                    Op::Softmax(op) if matches!(op.axis, 1 | 2 | -3 | -2) => {
                        return Err(non_local())
                    }
                    Op::Softmax(_) => (a, b),
                    // Merges broadcast an input of size 1 over every position (TensorFlow's
                    // functions too; their one-input ones are per pixel anyway).
                    // TensorFlow functions: a reshape mixes positions as Reshape does (so does a
                    // subscript that adds or drops axes: positions change axis); a resize reads
                    // as the UpSampling2D it equals; the others as the merges below.
                    Op::TFOpLambda(op) => match op.computes() {
                        // A reduction over height and width is a global pooling.
                        TfCompute::Reshape | TfCompute::ReduceImage(_) => {
                            return Err(non_local())
                        }
                        TfCompute::Slice if rank(id) != rank(input) => return Err(non_local()),
                        // tf.pad: the ZeroPadding2D it equals.
                        TfCompute::Pad if op.pad_mode != TfPadMode::Constant => {
                            return Err(NonLocal {
                                why: "mirrors the image's edge pixels, which a tile's edges are not",
                                ..non_local()
                            })
                        }
                        TfCompute::Pad => {
                            let pad = op.as_padding().padding[2 * axis.min(1)];
                            (a - pad, b - pad)
                        }
                        // A crop of the height or width shifts positions by its start.
                        TfCompute::Slice => {
                            let item: Vec<usize> = c.info.layers[input.index()]
                                .shape
                                .iter()
                                .flatten()
                                .map(|&d| d.max(0) as usize)
                                .collect();
                            let [rows, cols, _] = op.slice_window(&item);
                            let read = if axis == 0 { rows } else { cols };
                            if read.step != 1 {
                                return Err(NonLocal {
                                    layer: node.name.clone(),
                                    class: node.op.class_name(),
                                    why: "reads every k-th row or column, or reverses them",
                                });
                            }
                            let start = read.start as i64;
                            (a + start, b + start)
                        }
                        TfCompute::Resize(_) if (out as i64) % size(input).max(1) != 0 => {
                            return Err(NonLocal {
                                why: RESIZES_BY_RATIO,
                                ..non_local()
                            })
                        }
                        TfCompute::Resize(method) => {
                            let (i, o) = (size(input).max(1), (out as i64).max(1));
                            let s = (o / i).max(1);
                            match method {
                                Interpolation::Nearest => (a.div_euclid(s), b.div_euclid(s)),
                                Interpolation::Bilinear => linear(s),
                            }
                        }
                        // A constant that differs by position (a position embedding): a
                        // tile would need the constant's values at its own place.
                        TfCompute::TensorMerge(_)
                            if op.operand.as_ref().is_some_and(|t| {
                                let item = t.item_shape(rank(input).unwrap_or(0));
                                item[..item.len().saturating_sub(1)].iter().any(|&d| d != 1)
                            }) =>
                        {
                            return Err(NonLocal {
                                layer: node.name.clone(),
                                class: node.op.class_name(),
                                why: "adds a constant whose values differ by position",
                            })
                        }
                        TfCompute::Merge(_)
                        | TfCompute::TensorMerge(_)
                        | TfCompute::Concat(_)
                        | TfCompute::Activation(_)
                        | TfCompute::Scalar(_)
                        | TfCompute::ReduceChannels(_) => {
                            if n == 1 {
                                (0, 0)
                            } else {
                                (a, b)
                            }
                        }
                    },
                    // Lambdas: a channel slice or repetition and arithmetic are per pixel;
                    // expand_dims reshapes a pooled vector; a resize to a fixed size
                    // depends on the whole input's size.
                    Op::Lambda(op) => match &op.body {
                        LambdaBody::SliceTensor { .. }
                        | LambdaBody::RepeatElements { .. }
                        | LambdaBody::Arithmetic(_)
                        | LambdaBody::ScaledAdd { .. } => (a, b),
                        LambdaBody::ExpandDims { .. } | LambdaBody::Resize { .. } => {
                            return Err(non_local())
                        }
                    },
                    Op::Multiply(_)
                    | Op::Subtract(_)
                    | Op::CustomScaleLayer(_)
                    | Op::Average(_)
                    | Op::Maximum(_)
                    | Op::Minimum(_) => {
                        if n == 1 {
                            (0, 0)
                        } else {
                            (a, b)
                        }
                    }
                    // Position for position: per-pixel layers and merges (which take the same
                    // positions of every input).
                    Op::Input(_)
                    | Op::Concatenate(_)
                    | Op::Add(_)
                    | Op::BatchNormalization(_)
                    | Op::Activation(_)
                    | Op::ReLU(_)
                    | Op::LeakyReLU(_)
                    | Op::ELU(_)
                    | Op::Rescaling(_)
                    | Op::GELU(_)
                    | Op::Snake(_)
                    | Op::Normalization(_)
                    | Op::PReLU(_)
                    | Op::Dropout(_)
                    | Op::SpatialDropout2D(_)
                    | Op::GaussianNoise(_)
                    | Op::GaussianDropout(_)
                    | Op::FixedDropout(_) => (a, b),
                };
                if lo > hi {
                    continue;
                }
                need[input.index()] = Some(match need[input.index()] {
                    Some((x, y)) => (x.min(lo), y.max(hi)),
                    None => (lo, hi),
                });
            }
        }
        if let Some((lo, hi)) = c.graph.inputs.first().and_then(|i| need[i.index()]) {
            field = field.max((hi - lo + 1) as usize);
            radius = radius.max((p - lo).max(hi - p).max(0) as usize);
        }
    }
    Ok(Reach { field, radius })
}

/// How tiles are put together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stitch {
    /// The (padded) image in one pass: nothing to stitch.
    Whole,
    /// Valid padding: the U-Net paper's overlap-tile, exact.
    OverlapTile,
    /// Same padding: each tile keeps its outputs at least the halo from a cut edge, exact.
    Exact,
    /// Same padding: overlapping tiles averaged with weights, approximate.
    Blend(BlendWeights),
}

/// `--tile-mode`: what tiles of a same-padding net must give.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TileMode {
    /// The whole-image result (halo ≥ the reach of every output pixel).
    #[default]
    Exact,
    /// Overlapping tiles averaged: fewer, larger steps, not the whole-image result.
    Blend,
}

/// What the user asked of the tiles.
#[derive(Debug, Clone)]
pub struct TileRequest {
    /// `--tile`: the input tile as (height, width), for images.
    pub tile: Option<(usize, usize)>,
    /// `--tile`: the input tile as `[depth, height, width]`, for volumes.
    pub tile_3d: Option<[usize; 3]>,
    /// Bytes for the activation arena of a batch plus the weights as `weights_on` holds them.
    pub budget: u64,
    pub weights_on: WeightHome,
    pub batch: usize,
    pub mode: TileMode,
    /// Blend mode: the fraction of a tile shared with its neighbour, in `[0, 1)`.
    pub overlap: f64,
    pub weights: BlendWeights,
    /// A valid-padding net runs at the spec's own tile when that fits (what `run` does), not
    /// at the largest that fits (what `tiles` proposes).
    pub spec_tile_first: bool,
    /// The largest tile side to choose from the budget (`tiles --max`).
    pub max_side: usize,
    /// The layer whose output is tiled (`run --output-layer`); `None`: the model's output.
    pub output_layer: Option<String>,
}

impl TileRequest {
    pub fn new(budget: u64) -> TileRequest {
        TileRequest {
            tile: None,
            tile_3d: None,
            budget,
            weights_on: WeightHome::Cpu,
            batch: 1,
            mode: TileMode::Exact,
            overlap: 0.25,
            weights: BlendWeights::Gaussian,
            spec_tile_first: false,
            max_side: usize::MAX,
            output_layer: None,
        }
    }
}

/// How an image is covered: where the tiles are, what each needs, and how exact it is.
#[derive(Debug, Clone, PartialEq)]
pub struct TilePlan {
    pub stitch: Stitch,
    /// The image (height, width).
    pub image: (usize, usize),
    /// The mirror-padded image the tiles are cut from (height, width).
    pub padded: (usize, usize),
    /// Mirror padding in front of the image (rows, columns).
    pub pad_before: (usize, usize),
    /// Input and output tile (height, width).
    pub tile_in: (usize, usize),
    pub tile_out: (usize, usize),
    /// Context each tile has around the outputs it keeps, per side.
    pub halo: usize,
    /// How far an output pixel's inputs reach on one side (same padding), when bounded.
    pub reach: Option<usize>,
    /// The layer that makes every output depend on the whole image, if any.
    pub non_local: Option<NonLocal>,
    pub receptive_field: usize,
    /// Tile starts are multiples of this (the sizes' period: the net's total stride).
    pub align: usize,
    pub rows: Vec<Span>,
    pub cols: Vec<Span>,
    /// Activation arena for one tile, f32.
    pub arena_bytes: u64,
    pub weight_bytes: u64,
}

impl TilePlan {
    /// Tiles down and across.
    pub fn tiles(&self) -> (usize, usize) {
        (self.rows.len(), self.cols.len())
    }

    /// Pixels shared by neighbouring input tiles: the least along either axis (the last tile,
    /// ending at the image's edge, may share more with its neighbour).
    pub fn overlap(&self) -> usize {
        let along = |spans: &[Span], len: usize| {
            spans
                .windows(2)
                .map(|w| (w[0].start + len).saturating_sub(w[1].start))
                .min()
        };
        match (
            along(&self.rows, self.tile_in.0),
            along(&self.cols, self.tile_in.1),
        ) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => 0,
        }
    }

    /// The mode in words, with its error bound.
    pub fn mode_text(&self) -> String {
        match self.stitch {
            Stitch::Whole => "whole image, one pass: nothing stitched (error 0)".into(),
            Stitch::OverlapTile => format!(
                "overlap-tile (valid padding): margin {} each side, tile starts on the \
                 {}-pixel grid: equal to one run on the padded image (error 0 up to float \
                 rounding)",
                self.halo, self.align
            ),
            Stitch::Exact => format!(
                "exact: halo {} ≥ reach {} of an output pixel, tile starts on the {}-pixel grid, \
                 border tiles at the padded image's edges: equal to the whole-image result \
                 (error 0 up to float rounding)",
                self.halo,
                self.reach.unwrap_or(0),
                self.align
            ),
            Stitch::Blend(w) => {
                let why = match (&self.non_local, self.reach) {
                    (Some(n), _) => {
                        return format!(
                            "blend ({} weights, overlap {} pixels): approximate, not bounded: \
                             {n}; only the whole image in one pass (more --memory) gives its \
                             result",
                            w.name(),
                            self.overlap()
                        )
                    }
                    (None, Some(r)) => format!(
                        "outputs within {r} pixels of a cut edge see zero padding instead of \
                         the image"
                    ),
                    (None, None) => "tile edges see zero padding".into(),
                };
                format!(
                    "blend ({} weights, overlap {} pixels): approximate, not bounded: {why}; \
                     --tile-mode exact gives the whole-image result",
                    w.name(),
                    self.overlap()
                )
            }
        }
    }
}

pub(crate) fn arena_of(c: &Compiled, batch: usize) -> Option<u64> {
    crate::exec::plan::plan(&c.graph, &c.info).map(|p| p.arena_bytes(batch.max(1)))
}

/// Sizes `≡ residue (mod period), ≥ min`: the smallest at or above `n` and the largest at or
/// below it.
pub(crate) fn up_to_accepted(cf: &ClosedForm, n: usize) -> usize {
    if n <= cf.min {
        return cf.min;
    }
    let p = cf.period.max(1);
    n + (cf.residue % p + p - n % p) % p
}

pub(crate) fn down_to_accepted(cf: &ClosedForm, n: usize) -> Option<usize> {
    if n < cf.min {
        return None;
    }
    let p = cf.period.max(1);
    Some(n - (n % p + p - cf.residue % p) % p)
}

pub(crate) fn is_accepted(cf: &ClosedForm, n: usize) -> bool {
    n >= cf.min && n % cf.period.max(1) == cf.residue % cf.period.max(1)
}

/// The text of the sizes a closed form accepts.
pub(crate) fn rule_text(cf: &ClosedForm) -> String {
    if cf.period == 1 {
        format!("in ≥ {}", cf.min)
    } else {
        format!("in ≡ {} mod {}, in ≥ {}", cf.residue, cf.period, cf.min)
    }
}

/// Plans how to cover an image of `image` (height, width): the whole padded image in one pass
/// when it fits the budget and no tile is asked for, else tiles (overlap-tile for valid nets,
/// exact or blended for same-padding nets).
pub fn plan_image(
    path: &Path,
    text: &str,
    base: [usize; 3],
    image: (usize, usize),
    req: &TileRequest,
) -> Result<TilePlan, String> {
    if let (None, Some(t)) = (req.tile, req.tile_3d) {
        return Err(format!(
            "--tile {}x{}x{} is a volume's tile (DxHxW); give an image's tile as HxW or N",
            t[0], t[1], t[2]
        ));
    }
    let limit = 1024.max(base[0]);
    let sizes = probe_axis(path, text, base, 0, limit);
    if let [only] = sizes.accepted[..] {
        return Err(format!(
            "the net takes one input height only, {0} (at width {1}; a layer fixes it, such as \
             a transformer's position embeddings over the bottleneck's pixels), so unetc cannot \
             tile it: resize the image to {0}x{1}, or change the net",
            only.input, base[1]
        ));
    }
    // A few sizes that all give one output (patches cut from the first rows of a larger image
    // into a fixed grid: Swin-UNET's 4x4 patches of 128 to 131 rows).
    if let (Some(first), Some(last)) = (sizes.accepted.first(), sizes.accepted.last()) {
        let one_output = sizes.accepted.iter().all(|s| s.output == first.output);
        if one_output && last.input < limit {
            return Err(format!(
                "the net takes input heights {} to {} only (at width {}), all giving the same \
                 output (a layer fixes the grid, such as a transformer's patch grid or position \
                 embeddings), so unetc cannot tile it: resize the image to {}x{}, or change the \
                 net",
                first.input, last.input, base[1], first.input, base[1]
            ));
        }
    }
    let Some(cf) = closed_form(&sizes) else {
        return Err(
            "the accepted input sizes follow no simple rule up to 1024 (see `unetc sizes`), so \
             unetc cannot tile this net"
                .into(),
        );
    };
    match cf.output {
        Some((scale, offset)) if scale == 1.0 && offset == 0.0 => {
            plan_same(path, text, base, image, req, &cf)
        }
        Some((scale, offset)) if scale == 1.0 && offset < 0.0 && (-offset) as usize % 2 == 0 => {
            plan_valid(path, text, base, image, req, &cf, (-offset) as usize / 2)
        }
        Some((scale, offset)) => Err(format!(
            "the model's output size is {} for input size in: tiles need out = in (same \
             padding) or out = in − 2·margin (valid padding)",
            linear_text(scale, offset)
        )),
        None => Err("the model's output is not an image; it cannot be tiled".into()),
    }
}

/// The largest tile (height, width) from the budget, each side at most `limit` and accepted,
/// using an arena-per-pixel estimate from `probe` and then checking it by compiling.
#[allow(clippy::too_many_arguments)]
fn largest_fitting(
    path: &Path,
    text: &str,
    channels: usize,
    cf: &ClosedForm,
    limit: (usize, usize),
    probe: &Compiled,
    req: &TileRequest,
    smallest: usize,
) -> Result<((usize, usize), Compiled, u64), String> {
    let limit = (limit.0.min(req.max_side), limit.1.min(req.max_side));
    let shape = probe_shape(probe);
    let weights = req.weights_on.resident_bytes(probe);
    let per_pixel = arena_of(probe, req.batch).unwrap_or(u64::MAX) as f64
        / (shape.0.max(1) * shape.1.max(1)) as f64;
    let room = req.budget.saturating_sub(weights) as f64;
    let too_small = || {
        format!(
            "the memory budget {} is too small for this net: its smallest usable tile, {}x{} \
             (W x H), needs about {} of activations (batch {}) + {} of weights; give more \
             --memory{}",
            crate::text::bytes(req.budget),
            smallest,
            smallest,
            crate::text::bytes((per_pixel * (smallest * smallest) as f64) as u64),
            req.batch,
            crate::text::bytes(weights),
            if req.batch > 1 {
                " or a smaller --batch"
            } else {
                ""
            }
        )
    };
    let pixels = room / per_pixel.max(1e-9);
    let side = pixels.sqrt().min(1e7) as usize;
    let fit = |n: usize, limit: usize| down_to_accepted(cf, n.min(limit)).map(|t| t.min(limit));
    let mut th = fit(side, limit.0).ok_or_else(too_small)?;
    let mut tw = fit(side, limit.1).ok_or_else(too_small)?;
    // A side clipped to the image leaves room for the other.
    if th == limit.0 && tw < limit.1 {
        tw = fit((pixels / th as f64).min(1e7) as usize, limit.1).unwrap_or(tw);
    } else if tw == limit.1 && th < limit.0 {
        th = fit((pixels / tw as f64).min(1e7) as usize, limit.0).unwrap_or(th);
    }
    loop {
        if th < smallest.min(limit.0) || tw < smallest.min(limit.1) {
            return Err(too_small());
        }
        let c = compile_at(path, text, &[th, tw, channels], req.output_layer.as_deref())
            .ok_or_else(|| format!("the net does not compile at {tw}x{th} (W x H)"))?;
        let arena = arena_of(&c, req.batch).unwrap_or(u64::MAX);
        if arena.saturating_add(weights) <= req.budget {
            return Ok(((th, tw), c, arena));
        }
        // Shrink the longer side by one step.
        let shrink = |n: usize| n.checked_sub(1).and_then(|m| down_to_accepted(cf, m));
        let next = if th >= tw {
            shrink(th).map(|t| (t, tw))
        } else {
            shrink(tw).map(|t| (th, t))
        };
        (th, tw) = next.ok_or_else(too_small)?;
    }
}

fn probe_shape(c: &Compiled) -> (usize, usize) {
    spec_input(c).map_or((1, 1), |s| (s[0], s[1]))
}

/// `--tile` checked against the accepted sizes; each side clipped to `limit`.
fn asked_tile(
    cf: &ClosedForm,
    (th, tw): (usize, usize),
    limit: (usize, usize),
) -> Result<(usize, usize), String> {
    let side = |n: usize, limit: usize| -> Result<usize, String> {
        if n >= limit {
            return Ok(limit);
        }
        if is_accepted(cf, n) {
            return Ok(n);
        }
        let below = down_to_accepted(cf, n);
        Err(format!(
            "--tile: this net takes tile sides with {}; {n} is not one (nearest: {}{})",
            rule_text(cf),
            below.map_or(String::new(), |b| format!("{b} and ")),
            up_to_accepted(cf, n + 1)
        ))
    };
    Ok((side(th, limit.0)?, side(tw, limit.1)?))
}

fn plan_same(
    path: &Path,
    text: &str,
    base: [usize; 3],
    (h, w): (usize, usize),
    req: &TileRequest,
    cf: &ClosedForm,
) -> Result<TilePlan, String> {
    let padded = (up_to_accepted(cf, h), up_to_accepted(cf, w));
    let pad_before = ((padded.0 - h) / 2, (padded.1 - w) / 2);
    let whole = compile_at(
        path,
        text,
        &[padded.0, padded.1, base[2]],
        req.output_layer.as_deref(),
    )
    .ok_or_else(|| {
        format!(
            "the net does not compile at the padded size {}x{} (W x H)",
            padded.1, padded.0
        )
    })?;
    let weight_bytes = req.weights_on.resident_bytes(&whole);
    let whole_arena = arena_of(&whole, req.batch).unwrap_or(u64::MAX);
    let (reach_px, non_local) = match (reach(&whole, 0), reach(&whole, 1)) {
        (Ok(a), Ok(b)) => (Some(a.radius.max(b.radius)), None),
        (Err(e), _) | (_, Err(e)) => (None, Some(e)),
    };
    let field = match (reach(&whole, 0), reach(&whole, 1)) {
        (Ok(a), Ok(b)) => a.field.max(b.field),
        _ => padded.0.max(padded.1),
    };
    let align = cf.period.max(1);
    let halo = reach_px.map_or(0, |r| r.div_ceil(align) * align);
    let one = |n: usize, before: usize| {
        vec![Span {
            start: 0,
            offset: -(before as isize),
            keep: (0, n),
        }]
    };
    let mut plan = TilePlan {
        stitch: Stitch::Whole,
        image: (h, w),
        padded,
        pad_before,
        tile_in: padded,
        tile_out: padded,
        halo: 0,
        reach: reach_px,
        non_local: non_local.clone(),
        receptive_field: field,
        align,
        rows: one(padded.0, pad_before.0),
        cols: one(padded.1, pad_before.1),
        arena_bytes: arena_of(&whole, 1).unwrap_or(u64::MAX),
        weight_bytes,
    };
    let fits_whole = whole_arena.saturating_add(weight_bytes) <= req.budget;
    if req.tile.is_none() && fits_whole {
        return Ok(plan);
    }
    if let (Some(n), TileMode::Exact) = (&non_local, req.mode) {
        return Err(format!(
            "tiling is not exact for this net: {n}. The padded image {}x{} (W x H) needs {} of \
             activations (batch {}) + {} of weights{}; give --memory more to run it whole, or \
             --tile-mode blend for an approximate result",
            padded.1,
            padded.0,
            crate::text::bytes(whole_arena),
            req.batch,
            crate::text::bytes(weight_bytes),
            if fits_whole {
                String::new()
            } else {
                format!(", more than the budget {}", crate::text::bytes(req.budget))
            }
        ));
    }
    // Exact tiles need a kept centre: more than twice the halo.
    let smallest = match req.mode {
        TileMode::Exact => up_to_accepted(cf, 2 * halo + 1),
        TileMode::Blend => cf.min,
    };
    let (tile, compiled, arena) = match req.tile {
        Some(t) => {
            let (th, tw) = asked_tile(cf, t, padded)?;
            let c = compile_at(path, text, &[th, tw, base[2]], req.output_layer.as_deref())
                .ok_or_else(|| format!("the net does not compile at {tw}x{th} (W x H)"))?;
            let arena = arena_of(&c, req.batch).unwrap_or(u64::MAX);
            ((th, tw), c, arena)
        }
        None => largest_fitting(path, text, base[2], cf, padded, &whole, req, smallest)?,
    };
    if arena.saturating_add(weight_bytes) > req.budget {
        return Err(format!(
            "a {}x{} (W x H) tile needs {} of activations (batch {}) + {} of weights, more than              the memory budget {}; give a smaller --tile or more --memory",
            tile.1,
            tile.0,
            crate::text::bytes(arena),
            req.batch,
            crate::text::bytes(weight_bytes),
            crate::text::bytes(req.budget)
        ));
    }
    plan.tile_in = tile;
    plan.tile_out = tile;
    plan.arena_bytes = arena_of(&compiled, 1).unwrap_or(u64::MAX);
    match req.mode {
        TileMode::Exact => {
            let spans = |n: usize, t: usize, before: usize| {
                exact_spans(n, t, halo, align, before).ok_or_else(|| {
                    format!(
                        "a {t}-pixel tile is too small for exact tiling: each tile needs a \
                         halo of {halo} pixels on both sides (the reach of an output pixel, {}, \
                         rounded up to the {align}-pixel grid); use a tile of at least {} or \
                         --tile-mode blend",
                        reach_px.unwrap_or(0),
                        up_to_accepted(cf, 2 * halo + 1)
                    )
                })
            };
            plan.rows = spans(padded.0, tile.0, pad_before.0)?;
            plan.cols = spans(padded.1, tile.1, pad_before.1)?;
            plan.halo = halo;
            plan.stitch = if plan.tiles() == (1, 1) {
                Stitch::Whole
            } else {
                Stitch::Exact
            };
        }
        TileMode::Blend => {
            if !(0.0..1.0).contains(&req.overlap) {
                return Err(format!(
                    "--overlap {}: give a fraction of the tile in [0, 1), e.g. 0.25",
                    req.overlap
                ));
            }
            let step = |t: usize| {
                let s = (t as f64 * (1.0 - req.overlap)).floor() as usize;
                (s / align * align).max(align)
            };
            plan.rows = blend_spans(padded.0, tile.0, step(tile.0), pad_before.0);
            plan.cols = blend_spans(padded.1, tile.1, step(tile.1), pad_before.1);
            plan.stitch = if plan.tiles() == (1, 1) {
                Stitch::Whole
            } else {
                Stitch::Blend(req.weights)
            };
        }
    }
    Ok(plan)
}

fn plan_valid(
    path: &Path,
    text: &str,
    base: [usize; 3],
    (h, w): (usize, usize),
    req: &TileRequest,
    cf: &ClosedForm,
    margin: usize,
) -> Result<TilePlan, String> {
    if req.mode == TileMode::Blend {
        return Err(
            "--tile-mode blend is for same-padding nets; this valid-padding net's overlap-tile is \
             exact already: drop --tile-mode blend"
                .into(),
        );
    }
    // The image mirror-padded by the margin, and after it up to an accepted size: the smallest
    // tile whose output covers the image, and the size a whole run would take.
    let needed = (
        up_to_accepted(cf, h + 2 * margin),
        up_to_accepted(cf, w + 2 * margin),
    );
    let spec_tile = (base[0], base[1]);
    let fits = |c: &Compiled| {
        arena_of(c, req.batch)
            .unwrap_or(u64::MAX)
            .saturating_add(req.weights_on.resident_bytes(c))
            <= req.budget
    };
    let whole = compile_at(
        path,
        text,
        &[needed.0, needed.1, base[2]],
        req.output_layer.as_deref(),
    )
    .ok_or_else(|| "the net does not compile at the image's size".to_string())?;
    // A layer that sees the whole image (aligned corners, edge padding) gives each overlap tile
    // a result of its own: only one tile over the whole mirror-padded image is exact.
    let non_local = reach(&whole, 0).and(reach(&whole, 1)).err();
    let tile = match (req.tile, &non_local) {
        (Some(t), _) => asked_tile(cf, t, needed)?,
        (None, Some(_)) => needed,
        (None, None) => {
            let spec_tile = (spec_tile.0.min(needed.0), spec_tile.1.min(needed.1));
            let spec_fits = compile_at(
                path,
                text,
                &[spec_tile.0, spec_tile.1, base[2]],
                req.output_layer.as_deref(),
            )
            .is_some_and(|c| fits(&c));
            if req.spec_tile_first && spec_fits {
                spec_tile
            } else {
                let smallest = up_to_accepted(cf, 2 * margin + cf.period);
                largest_fitting(path, text, base[2], cf, needed, &whole, req, smallest)?.0
            }
        }
    };
    if let Some(n) = &non_local {
        if tile != needed || !fits(&whole) {
            return Err(format!(
                "tiling is not exact for this net: {n}. The image mirror-padded by the margin, \
                 {}x{} (W x H), runs as one tile: it needs {} of activations (batch {}) + {} of \
                 weights (budget {}); drop --tile, or give --memory more",
                needed.1,
                needed.0,
                crate::text::bytes(arena_of(&whole, req.batch).unwrap_or(u64::MAX)),
                req.batch,
                crate::text::bytes(req.weights_on.resident_bytes(&whole)),
                crate::text::bytes(req.budget)
            ));
        }
    }
    let c = compile_at(
        path,
        text,
        &[tile.0, tile.1, base[2]],
        req.output_layer.as_deref(),
    )
    .ok_or_else(|| format!("the net does not compile at {}x{} (W x H)", tile.1, tile.0))?;
    let out = (tile.0 - 2 * margin, tile.1 - 2 * margin);
    let spans = |n: usize, t: usize, o: usize| {
        overlap_spans(n, t, o, cf.period).ok_or_else(|| {
            format!(
                "a {t}-pixel tile gives {o} output pixels, fewer than the net's stride {}: its \
                 tiles cannot step on the pooling grid; use a tile of at least {}",
                cf.period,
                up_to_accepted(cf, 2 * margin + cf.period)
            )
        })
    };
    let rows = spans(needed.0, tile.0, out.0)?;
    let cols = spans(needed.1, tile.1, out.1)?;
    Ok(TilePlan {
        stitch: Stitch::OverlapTile,
        image: (h, w),
        padded: needed,
        pad_before: (margin, margin),
        tile_in: tile,
        tile_out: out,
        halo: margin,
        reach: reach(&c, 0).ok().map(|r| r.radius),
        non_local: None,
        receptive_field: receptive_field(&c),
        align: cf.period,
        rows,
        cols,
        arena_bytes: arena_of(&c, 1).unwrap_or(u64::MAX),
        weight_bytes: req.weights_on.resident_bytes(&c),
    })
}

/// A spec read for `sizes` and `tiles`: its text, compiled at its own input shape, and that shape.
pub struct SizesSpec {
    pub text: String,
    pub compiled: Compiled,
    pub base: [usize; 3],
    /// Said before the answer: the spec does not work at its own input size.
    pub note: Option<String>,
}

/// Why a spec has no `sizes`/`tiles` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SizesSpecError {
    /// The file cannot be read.
    Read(String),
    /// The spec has errors other than size errors (rendered diagnostics).
    Spec(String),
    /// The model's input is not an image.
    NoAnswer(String),
}

/// Reads and compiles `spec` for `sizes`/`tiles`: its text, the compiled spec, and a note when
/// only errors that the spec's own input size causes were found (those are what `sizes` is for).
pub(crate) fn read_spec_text(
    spec: &Path,
) -> Result<(String, Compiled, Option<String>), SizesSpecError> {
    let text = std::fs::read_to_string(spec)
        .map_err(|e| SizesSpecError::Read(format!("cannot read `{}`: {e}", spec.display())))?;
    let c = compile_source(spec, text.clone(), &Options::default(), &mut Session::new());
    let size_error = |d: &crate::diag::Diagnostic| {
        matches!(
            d.code,
            "E-concat-shape" | "E-add-shape" | "E-size" | "E-crop" | "E-reshape"
        )
    };
    if c.diags.iter().any(|d| d.is_error() && !size_error(d)) {
        return Err(SizesSpecError::Spec(crate::diag::render_plain(
            &c.sources, &c.diags,
        )));
    }
    let note = c.has_errors().then(|| {
        format!(
            "`{}` does not work at its own input size (`unetc check` says why); the answer \
             below uses sizes that do",
            spec.display()
        )
    });
    Ok((text, c, note))
}

/// The compiled input's sizes (`[H, W, C]` or `[D, H, W, C]`), 1 where unknown.
pub(crate) fn input_dims(c: &Compiled) -> Vec<usize> {
    c.graph
        .inputs
        .first()
        .and_then(|&i| c.info.layers[i.index()].shape.as_ref())
        .map_or(vec![1; 4], |s| {
            s.iter().map(|&d| d.max(1) as usize).collect()
        })
}

/// Reads and compiles `spec` for `sizes`/`tiles` of an image model. Errors that only the spec's
/// own input size causes are what `sizes` is for, so they only add a note.
pub fn read_sizes_spec(spec: &Path) -> Result<SizesSpec, SizesSpecError> {
    let (text, c, note) = read_spec_text(spec)?;
    match spec_input(&c) {
        Some(base) => Ok(SizesSpec {
            text,
            compiled: c,
            base,
            note,
        }),
        None => {
            let input = c
                .graph
                .inputs
                .first()
                .and_then(|&i| c.info.layers[i.index()].shape.as_ref());
            Err(SizesSpecError::NoAnswer(
                if input.is_some_and(|s| s.len() == 4) {
                    format!(
                        "the model's input is a volume (D x H x W x C); this answers for images \
                     only\n  = help: `unetc sizes {0}` and `unetc tiles {0} --image DxHxW` answer \
                     for volumes",
                        spec.display()
                    )
                } else {
                    "the model's input is not an image (H, W, C), so it has no input sizes to vary"
                        .to_string()
                },
            ))
        }
    }
}

/// [`plan_image`] for `unetc tiles`'s defaults: exact, batch 1, the largest tile in `budget`.
pub fn plan_tiles(
    path: &Path,
    text: &str,
    base: [usize; 3],
    image: (usize, usize),
    budget: u64,
) -> Result<TilePlan, String> {
    plan_image(path, text, base, image, &TileRequest::new(budget))
}
