//! Which input sizes a spec accepts, and what output size each gives; the overlap-tile plan for
//! an image. Answers come from the spec alone: each candidate size is checked by running the
//! layers' shape rules at that size ([`Prober`]: microseconds each), and the accepted sizes are then
//! summarised in closed form (`in ≡ r mod p, in ≥ n0`, `out = a·in + b`), verified on every
//! candidate of the searched range.

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

/// Compiles `text` (the spec at `path`) at an input shape; `None` if it has errors.
fn compile_at(path: &Path, text: &str, shape: [usize; 3]) -> Option<Compiled> {
    let options = Options {
        input_shape: Some(shape.iter().map(|&d| d as i64).collect()),
    };
    let c = compile_source(path, text.to_string(), &options, &mut Session::new());
    (!c.has_errors()).then_some(c)
}

/// Accepted means: no errors, and no pooling that drops rows or columns (`W-pool-floor`), since
/// then the up path cannot come back to the skip's size exactly.
fn accepted(c: &Compiled) -> bool {
    !c.diags.iter().any(|d| d.code == "W-pool-floor")
}

fn output_dims(c: &Compiled) -> Option<Vec<usize>> {
    let out = *c.graph.outputs.first()?;
    let s = c.info.layers[out.index()].shape.as_ref()?;
    (s.len() == 3).then(|| s.iter().map(|&d| d as usize).collect())
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

    /// `Some(output shape, if the output is an image)` when `shape` is accepted.
    pub fn probe(&mut self, shape: [usize; 3]) -> Option<Option<Vec<usize>>> {
        let Some(fixed) = &mut self.fixed else {
            let c = compile_at(self.path, self.text, shape)?;
            return accepted(&c).then(|| output_dims(&c));
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
        Some((out.len() == 3).then(|| out.iter().map(|&d| d as usize).collect()))
    }

    /// Probes input size `n` along `axis` (0 = height, 1 = width); a square input stays square,
    /// otherwise the other axis keeps the spec's size.
    pub fn probe_size(&mut self, base: [usize; 3], axis: usize, n: usize) -> Option<SizePair> {
        let mut shape = base;
        shape[axis] = n;
        if base[0] == base[1] {
            shape[1 - axis] = n;
        }
        let output = self.probe(shape)?;
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
    let square = |prober: &mut Prober, k: usize| prober.probe([k, k, base[2]]).map(|_| k);
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

fn linear_text(scale: f64, offset: f64) -> String {
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
        if sizes.accepted.is_empty() {
            out.push_str("  no size in this range works\n");
            continue;
        }
        match closed_form(&sizes) {
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
            let (below, above) = nearest(&sizes, n);
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
    if let Some(c) = compile_at(path, text, base) {
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

/// The overlap-tile plan for an image (valid-padding nets) or the padded size (same-padding).
#[derive(Debug, Clone, PartialEq)]
pub struct TilePlan {
    pub tile_in: usize,
    pub tile_out: usize,
    /// Context each tile needs around its output: `(tile_in - tile_out) / 2`.
    pub halo: usize,
    pub receptive_field: usize,
    pub tiles: (usize, usize),
    pub arena_bytes: u64,
    pub weight_bytes: u64,
}

/// Receptive field along the height: how many input rows one output pixel depends on (the
/// widest over a few output positions, since pooling grids make it depend on the position).
/// Computed exactly by mapping an output interval back through every layer.
pub fn receptive_field(c: &Compiled) -> usize {
    use crate::ir::ops::WindowGeometry;
    use crate::ir::Op;
    let Some(&out) = c.graph.outputs.first() else {
        return 1;
    };
    let height = |id: crate::ir::NodeId| {
        c.info.layers[id.index()]
            .shape
            .as_ref()
            .and_then(|s| s.first())
            .copied()
            .unwrap_or(1)
    };
    let out_h = height(out);
    let mut widest = 1;
    for p in (out_h / 2..out_h).take(16) {
        // Needed rows of each tensor: [lo, hi], or None.
        let mut need: Vec<Option<(i64, i64)>> = vec![None; c.graph.nodes.len()];
        need[out.index()] = Some((p, p));
        for &id in c.info.schedule.iter().rev() {
            let Some((a, b)) = need[id.index()] else {
                continue;
            };
            let node = c.graph.node(id);
            for &input in &node.inputs {
                let n = height(input);
                let out = height(id) as usize;
                // Rows `[a, b]` of a sliding window's output read input rows from the first
                // window's start to the last one's end.
                let windows = |g: WindowGeometry| {
                    let (s, pad) = (g.stride as i64, g.pad_before as i64);
                    (a * s - pad, b * s + g.span() as i64 - 1 - pad)
                };
                let (lo, hi) = match &node.op {
                    Op::Conv2D(op) => windows(op.args.geometry(0, n as usize, out)),
                    Op::MaxPooling2D(op) => windows(op.geometry(0, n as usize, out)),
                    Op::AveragePooling2D(op) => windows(op.geometry(0, n as usize, out)),
                    Op::DepthwiseConv2D(op) => windows(op.depthwise.geometry(0, n as usize, out)),
                    // The pointwise stage reads one pixel: the depthwise window is the layer's.
                    Op::SeparableConv2D(op) => windows(op.depthwise.geometry(0, n as usize, out)),
                    Op::Conv2DTranspose(op) => {
                        let g = op.geometry(0, n as usize, out);
                        let (k, s, y0) = (g.kernel as i64, g.stride as i64, g.crop_before as i64);
                        (
                            (a + y0 - (k - 1)).div_euclid(s)
                                + i64::from((a + y0 - (k - 1)).rem_euclid(s) != 0),
                            (b + y0).div_euclid(s),
                        )
                    }
                    Op::UpSampling2D(op) => (a.div_euclid(op.size[0]), b.div_euclid(op.size[0])),
                    // The 3-D kinds along their first axis (the depth), which is the axis this
                    // walks for a volume.
                    Op::Conv3D(op) => windows(op.geometry(0, n as usize, out)),
                    Op::MaxPooling3D(op) => windows(op.geometry(0, n as usize, out)),
                    Op::AveragePooling3D(op) => windows(op.geometry(0, n as usize, out)),
                    Op::Conv3DTranspose(op) => {
                        let g = op.geometry(0, n as usize, out);
                        let (k, s, y0) = (g.kernel as i64, g.stride as i64, g.crop_before as i64);
                        (
                            (a + y0 - (k - 1)).div_euclid(s)
                                + i64::from((a + y0 - (k - 1)).rem_euclid(s) != 0),
                            (b + y0).div_euclid(s),
                        )
                    }
                    Op::UpSampling3D(op) => (a.div_euclid(op.size[0]), b.div_euclid(op.size[0])),
                    Op::Cropping3D(op) => (a + op.cropping[0], b + op.cropping[0]),
                    Op::ZeroPadding3D(op) => (a - op.padding[0], b - op.padding[0]),
                    Op::GlobalAveragePooling3D(_) => (0, n - 1),
                    Op::Cropping2D(op) => (a + op.cropping[0], b + op.cropping[0]),
                    Op::ZeroPadding2D(op) => (a - op.padding[0], b - op.padding[0]),
                    // Every output value depends on the whole input.
                    Op::Flatten(_)
                    | Op::Reshape(_)
                    | Op::Permute(_)
                    | Op::Dense(_)
                    | Op::GlobalAveragePooling2D(_)
                    | Op::GlobalMaxPooling2D(_) => (0, n - 1),
                    // Statistics over the height: every row of the output depends on every
                    // row of the input.
                    Op::GroupNormalization(_) => (0, n - 1),
                    Op::LayerNormalization(op) if op.positive_axes(3).contains(&1) => (0, n - 1),
                    // Per row or per pixel otherwise.
                    Op::LayerNormalization(_) => (a, b),
                    // Merges broadcast an input of height 1 over every row (TensorFlow's
                    // functions too; their one-input ones are per pixel anyway).
                    Op::Multiply(_)
                    | Op::Subtract(_)
                    | Op::Average(_)
                    | Op::Maximum(_)
                    | Op::Minimum(_)
                    | Op::TFOpLambda(_) => {
                        if n == 1 {
                            (0, 0)
                        } else {
                            (a, b)
                        }
                    }
                    // Row for row: per-pixel layers and merges (which take the same rows of
                    // every input). A Softmax over the height axis is counted so too.
                    Op::Input(_)
                    | Op::Concatenate(_)
                    | Op::Add(_)
                    | Op::BatchNormalization(_)
                    | Op::Activation(_)
                    | Op::ReLU(_)
                    | Op::LeakyReLU(_)
                    | Op::ELU(_)
                    | Op::Rescaling(_)
                    | Op::PReLU(_)
                    | Op::Softmax(_)
                    | Op::Dropout(_)
                    | Op::SpatialDropout2D(_)
                    | Op::GaussianNoise(_)
                    | Op::GaussianDropout(_)
                    | Op::FixedDropout(_) => (a, b),
                };
                let (lo, hi) = (lo.max(0), hi.min(n - 1));
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
            widest = widest.max((hi - lo + 1) as usize);
        }
    }
    widest
}

/// Plans tiles for an image of `image` (height, width) within `budget` bytes (arena + weights).
pub fn plan_tiles(
    path: &Path,
    text: &str,
    base: [usize; 3],
    image: (usize, usize),
    budget: u64,
    max: usize,
) -> Result<TilePlan, String> {
    let sizes = probe_axis(path, text, base, 0, max);
    let mut best: Option<TilePlan> = None;
    for p in sizes.accepted.iter().rev() {
        let Some(out) = p.output else {
            return Err("the model's output is not an image; it cannot be tiled".into());
        };
        let Some(c) = compile_at(path, text, [p.input, p.input, base[2]]) else {
            continue;
        };
        let Some(plan) = crate::exec::plan::plan(&c.graph, &c.info) else {
            continue;
        };
        let arena = plan.arena_bytes(1);
        // From the tile's own compile: the spec may not compile at its own size.
        let weight_bytes = c.info.totals(&c.graph).params.saturating_mul(4);
        if arena.saturating_add(weight_bytes) > budget {
            continue;
        }
        let halo = (p.input.saturating_sub(out)) / 2;
        best = Some(TilePlan {
            tile_in: p.input,
            tile_out: out,
            halo,
            receptive_field: receptive_field(&c),
            tiles: (image.0.div_ceil(out.max(1)), image.1.div_ceil(out.max(1))),
            arena_bytes: arena,
            weight_bytes,
        });
        break;
    }
    best.ok_or_else(|| {
        format!(
            "no square tile up to {max} fits in {}",
            crate::text::bytes(budget)
        )
    })
}
