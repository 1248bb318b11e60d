//! `sizes` and `tiles` for volume models (input `(D, H, W, C)`). Each of the three axes is
//! probed and summarised as an image axis is ([`super::sizes`]), and a volume is covered by tiles
//! built axis by axis with the same span rules as images ([`crate::exec::tiling`]): the U-Net
//! paper's overlap-tile for valid-padding nets, exact tiles (halo ≥ reach, starts on the stride
//! grid) for same-padding nets. Axis order is always depth, height, width (the array's order).

use super::sizes::{
    accepted, arena_of, axis_text, closed_form, compile_at, down_to_accepted, is_accepted,
    linear_text, reach, rule_text, up_to_accepted, AxisSizes, ClosedForm, NonLocal, Prober,
    SizePair, SizesSpecError, Stitch, TileMode, TileRequest,
};
use crate::exec::tiling::{exact_spans, overlap_spans, Span};
use crate::Compiled;
use std::path::Path;

/// The names of a volume's axes, in array order.
pub const AXES: [&str; 3] = ["depth", "height", "width"];

/// `D x H x W` as text, e.g. `40x64x64`.
pub fn dhw(v: [usize; 3]) -> String {
    format!("{}x{}x{}", v[0], v[1], v[2])
}

/// A volume spec read for `sizes`/`tiles`: its text, its input `[D, H, W, C]`, and a note when
/// it does not work at its own size.
pub struct VolumeSpec {
    pub text: String,
    pub base: [usize; 4],
    pub note: Option<String>,
}

/// Reads `spec` and returns it when its model takes volumes, `None` when it takes something else.
pub fn read_volume_spec(spec: &Path) -> Result<Option<VolumeSpec>, SizesSpecError> {
    let (text, c, note) = super::sizes::read_spec_text(spec)?;
    let base = c
        .graph
        .inputs
        .first()
        .and_then(|&i| c.info.layers[i.index()].shape.as_deref())
        .and_then(|s| match *s {
            [d, h, w, ch] => Some([d as usize, h as usize, w as usize, ch as usize]),
            _ => None,
        });
    Ok(base.map(|base| VolumeSpec { text, base, note }))
}

/// The sizes `axis` (0 = depth, 1 = height, 2 = width) accepts in `1..=max`, the other two axes
/// held at the spec's sizes; when none works so, a cube spec is varied as a cube instead
/// (`other_axis_held_at` is then `Some(0)`).
pub fn probe_volume_axis(
    path: &Path,
    text: &str,
    base: [usize; 4],
    axis: usize,
    max: usize,
) -> AxisSizes {
    let mut prober = Prober::new(path, text);
    let mut scan = |cube: bool| -> Vec<SizePair> {
        (1..=max)
            .filter_map(|n| {
                let mut shape = base;
                if cube {
                    shape[..3].fill(n);
                } else {
                    shape[axis] = n;
                }
                let out = prober.probe(&shape)?;
                Some(SizePair {
                    input: n,
                    output: out.map(|d| d[axis]),
                })
            })
            .collect()
    };
    let mut found = scan(false);
    let mut held = None;
    if found.is_empty() && base[0] == base[1] && base[1] == base[2] {
        found = scan(true);
        held = Some(0);
    }
    AxisSizes {
        axis: AXES[axis],
        accepted: found,
        max,
        other_axis_held_at: held,
    }
}

/// The text of `unetc sizes` for a volume model: each axis, the other two at the spec's sizes.
pub fn volume_sizes_text(
    path: &Path,
    text: &str,
    base: [usize; 4],
    max: usize,
    near: Option<usize>,
) -> String {
    let mut out = format!(
        "volume model, input {}x{} (D x H x W x C); each axis with the other two at the spec's \
         sizes\n",
        dhw([base[0], base[1], base[2]]),
        base[3]
    );
    for (axis, name) in AXES.iter().enumerate() {
        let sizes = probe_volume_axis(path, text, base, axis, max);
        let how = match sizes.other_axis_held_at {
            Some(_) => " (varied as a cube: no size works with the spec's other sizes)",
            None => "",
        };
        out.push_str(&format!("{name}, sizes 1..={max}{how}:\n"));
        axis_text(&mut out, &sizes, near);
    }
    out
}

/// How a volume is covered: tiles along each axis (depth, height, width) and what each needs.
#[derive(Debug, Clone, PartialEq)]
pub struct VolumePlan {
    /// `Whole`, `OverlapTile` or `Exact` (volumes are not blended).
    pub stitch: Stitch,
    pub volume: [usize; 3],
    /// The mirror-padded volume the tiles are cut from.
    pub padded: [usize; 3],
    /// Mirror padding in front of the volume, per axis.
    pub pad_before: [usize; 3],
    pub tile_in: [usize; 3],
    pub tile_out: [usize; 3],
    /// Context each tile has around the outputs it keeps, per side, per axis.
    pub halo: [usize; 3],
    /// How far an output voxel's inputs reach on one side, per axis (when bounded).
    pub reach: Option<[usize; 3]>,
    pub receptive_field: [usize; 3],
    /// Tile starts are multiples of this, per axis (the net's total stride).
    pub align: [usize; 3],
    /// The tiles along depth, height and width.
    pub spans: [Vec<Span>; 3],
    /// Activation arena for one tile, f32.
    pub arena_bytes: u64,
    pub weight_bytes: u64,
}

impl VolumePlan {
    /// Tiles along each axis.
    pub fn tiles(&self) -> [usize; 3] {
        [
            self.spans[0].len(),
            self.spans[1].len(),
            self.spans[2].len(),
        ]
    }

    /// Voxels shared by neighbouring input tiles along each axis (0 with one tile).
    pub fn overlap(&self) -> [usize; 3] {
        std::array::from_fn(|a| {
            self.spans[a]
                .windows(2)
                .map(|w| (w[0].start + self.tile_in[a]).saturating_sub(w[1].start))
                .min()
                .unwrap_or(0)
        })
    }

    /// The mode in words, with its error bound.
    pub fn mode_text(&self) -> String {
        let per_axis = |v: [usize; 3]| dhw(v);
        match self.stitch {
            Stitch::Whole => "whole volume, one pass: nothing stitched (error 0)".into(),
            Stitch::OverlapTile => format!(
                "overlap-tile (valid padding): margin {} (D x H x W) each side, tile starts on \
                 the {} grid: equal to one run on the padded volume (error 0 up to float \
                 rounding)",
                per_axis(self.halo),
                per_axis(self.align)
            ),
            Stitch::Exact | Stitch::Blend(_) => format!(
                "exact: halo {} ≥ reach {} (D x H x W) of an output voxel, tile starts on the {} \
                 grid, border tiles at the padded volume's edges: equal to the whole-volume \
                 result (error 0 up to float rounding)",
                per_axis(self.halo),
                per_axis(self.reach.unwrap_or([0; 3])),
                per_axis(self.align)
            ),
        }
    }
}

/// The closed forms of the three axes, and whether the net keeps the size (`Ok(None)`, same
/// padding) or loses a margin per side on each axis (`Ok(Some(margins))`, valid padding).
fn forms(
    path: &Path,
    text: &str,
    base: [usize; 4],
) -> Result<([ClosedForm; 3], Option<[usize; 3]>), String> {
    let forms = per_axis(|axis| {
        // A range a few times the spec's size shows the rule (each probe of a spec whose
        // expansion reads shapes is a compile).
        let max = (4 * base[axis]).clamp(64, 512);
        let sizes = probe_volume_axis(path, text, base, axis, max);
        closed_form(&sizes).ok_or_else(|| {
            format!(
                "the accepted {} sizes follow no simple rule up to {max} (see `unetc sizes`), so \
                 unetc cannot tile this net",
                AXES[axis]
            )
        })
    })?;
    let mut margins = [0usize; 3];
    let mut same = [false; 3];
    for (axis, cf) in forms.iter().enumerate() {
        match cf.output {
            Some((scale, offset)) if scale == 1.0 && offset == 0.0 => same[axis] = true,
            Some((scale, offset))
                if scale == 1.0 && offset < 0.0 && (-offset) as usize % 2 == 0 =>
            {
                margins[axis] = (-offset) as usize / 2
            }
            Some((scale, offset)) => {
                return Err(format!(
                    "the model's output {} is {} for input size in: tiles need out = in (same \
                     padding) or out = in − 2·margin (valid padding)",
                    AXES[axis],
                    linear_text(scale, offset)
                ))
            }
            None => return Err("the model's output is not a volume; it cannot be tiled".into()),
        }
    }
    match same {
        [true, true, true] => Ok((forms, None)),
        [false, false, false] => Ok((forms, Some(margins))),
        _ => Err(
            "the net keeps some axes' sizes and shrinks others: unetc tiles nets that are same- \
             or valid-padded along every axis"
                .into(),
        ),
    }
}

/// Plans how to cover a volume of `volume` (depth, height, width): the whole padded volume in
/// one pass when it fits the budget and no tile is asked for, else exact tiles (same padding)
/// or the overlap-tile (valid padding), each axis on the net's stride grid.
pub fn plan_volume(
    path: &Path,
    text: &str,
    base: [usize; 4],
    volume: [usize; 3],
    req: &TileRequest,
) -> Result<VolumePlan, String> {
    if req.mode == TileMode::Blend {
        return Err(
            "--tile-mode blend is for images; volumes are tiled exactly (the default \
             --tile-mode exact gives the whole-volume result)"
                .into(),
        );
    }
    if req.tile.is_some() && req.tile_3d.is_none() {
        return Err(
            "--tile HxW is for images; give a volume's tile as DxHxW (depth first) or N".into(),
        );
    }
    let (forms, margins) = forms(path, text, base)?;
    match margins {
        None => plan_same(path, text, base, volume, req, &forms),
        Some(m) => plan_valid(path, text, base, volume, req, &forms, m),
    }
}

/// `f` for each axis, the first error ending it.
fn per_axis<T>(mut f: impl FnMut(usize) -> Result<T, String>) -> Result<[T; 3], String> {
    Ok([f(0)?, f(1)?, f(2)?])
}

fn compile_tile(
    path: &Path,
    text: &str,
    t: [usize; 3],
    c: usize,
    req: &TileRequest,
) -> Result<Compiled, String> {
    compile_at(
        path,
        text,
        &[t[0], t[1], t[2], c],
        req.output_layer.as_deref(),
    )
    .filter(accepted)
    .ok_or_else(|| format!("the net does not compile at {} (D x H x W)", dhw(t)))
}

/// `--tile` checked against each axis's accepted sizes, each side clipped to `limit`.
fn asked_tile(
    forms: &[ClosedForm; 3],
    t: [usize; 3],
    limit: [usize; 3],
) -> Result<[usize; 3], String> {
    let mut out = [0; 3];
    for a in 0..3 {
        out[a] = if t[a] >= limit[a] {
            limit[a]
        } else if is_accepted(&forms[a], t[a]) {
            t[a]
        } else {
            let below = down_to_accepted(&forms[a], t[a]);
            return Err(format!(
                "--tile: this net takes {} tile sides with {}; {} is not one (nearest: {}{})",
                AXES[a],
                rule_text(&forms[a]),
                t[a],
                below.map_or(String::new(), |b| format!("{b} and ")),
                up_to_accepted(&forms[a], t[a] + 1)
            ));
        };
    }
    Ok(out)
}

/// The largest tile within the budget, each side accepted, at least `smallest` and at most
/// `limit`: an estimate from `probe`'s arena per voxel, then shrunk (the longest side first,
/// one stride at a time) until the compiled tile fits.
#[allow(clippy::too_many_arguments)]
fn largest_fitting(
    path: &Path,
    text: &str,
    channels: usize,
    forms: &[ClosedForm; 3],
    limit: [usize; 3],
    probe: &Compiled,
    req: &TileRequest,
    smallest: [usize; 3],
) -> Result<([usize; 3], Compiled, u64), String> {
    let limit: [usize; 3] = std::array::from_fn(|a| limit[a].min(req.max_side));
    let smallest: [usize; 3] = std::array::from_fn(|a| smallest[a].min(limit[a]));
    let weights = req.weights_on.resident_bytes(probe);
    let voxels_of = |v: [usize; 3]| v.iter().map(|&d| d.max(1) as f64).product::<f64>();
    let probe_shape = super::sizes::input_dims(probe);
    let per_voxel = arena_of(probe, req.batch).unwrap_or(u64::MAX) as f64
        / voxels_of([probe_shape[0], probe_shape[1], probe_shape[2]]);
    let too_small = || {
        format!(
            "the memory budget {} is too small for this net: its smallest usable tile, {} (D x \
             H x W), needs about {} of activations (batch {}) + {} of weights; give more \
             --memory{}",
            crate::text::bytes(req.budget),
            dhw(smallest),
            crate::text::bytes((per_voxel * voxels_of(smallest)) as u64),
            req.batch,
            crate::text::bytes(weights),
            if req.batch > 1 {
                " or a smaller --batch"
            } else {
                ""
            }
        )
    };
    // Voxels the budget allows, spread evenly over the axes not clipped to the volume.
    let mut left = req.budget.saturating_sub(weights) as f64 / per_voxel.max(1e-9);
    let mut t = [0usize; 3];
    let mut free: Vec<usize> = vec![0, 1, 2];
    while !free.is_empty() {
        let side = left.powf(1.0 / free.len() as f64).min(1e7);
        let clipped: Vec<usize> = free
            .iter()
            .copied()
            .filter(|&a| limit[a] as f64 <= side)
            .collect();
        if clipped.is_empty() {
            for &a in &free {
                t[a] = down_to_accepted(&forms[a], (side as usize).min(limit[a]))
                    .ok_or_else(too_small)?;
            }
            break;
        }
        for a in clipped {
            t[a] = limit[a];
            left /= limit[a].max(1) as f64;
            free.retain(|&f| f != a);
        }
    }
    loop {
        if (0..3).any(|a| t[a] < smallest[a].min(limit[a])) {
            return Err(too_small());
        }
        let c = compile_tile(path, text, t, channels, req)?;
        let arena = arena_of(&c, req.batch).unwrap_or(u64::MAX);
        if arena.saturating_add(weights) <= req.budget {
            return Ok((t, c, arena));
        }
        // Shrink the longest side by one step.
        let a = (0..3).max_by_key(|&a| (t[a], 2 - a)).unwrap_or(0);
        t[a] = t[a]
            .checked_sub(1)
            .and_then(|m| down_to_accepted(&forms[a], m))
            .ok_or_else(too_small)?;
    }
}

fn plan_same(
    path: &Path,
    text: &str,
    base: [usize; 4],
    volume: [usize; 3],
    req: &TileRequest,
    forms: &[ClosedForm; 3],
) -> Result<VolumePlan, String> {
    let padded: [usize; 3] = std::array::from_fn(|a| up_to_accepted(&forms[a], volume[a]));
    let pad_before: [usize; 3] = std::array::from_fn(|a| (padded[a] - volume[a]) / 2);
    let whole = compile_tile(path, text, padded, base[3], req)?;
    let weight_bytes = req.weights_on.resident_bytes(&whole);
    let whole_arena = arena_of(&whole, req.batch).unwrap_or(u64::MAX);
    let reaches: Result<Vec<_>, NonLocal> = (0..3).map(|a| reach(&whole, a)).collect();
    let (reach_vox, field, non_local) = match reaches {
        Ok(r) => (
            Some([r[0].radius, r[1].radius, r[2].radius]),
            [r[0].field, r[1].field, r[2].field],
            None,
        ),
        Err(e) => (None, padded, Some(e)),
    };
    let align: [usize; 3] = std::array::from_fn(|a| forms[a].period.max(1));
    let halo: [usize; 3] =
        std::array::from_fn(|a| reach_vox.map_or(0, |r| r[a].div_ceil(align[a]) * align[a]));
    let one = |a: usize| {
        vec![Span {
            start: 0,
            offset: -(pad_before[a] as isize),
            keep: (0, padded[a]),
        }]
    };
    let mut plan = VolumePlan {
        stitch: Stitch::Whole,
        volume,
        padded,
        pad_before,
        tile_in: padded,
        tile_out: padded,
        halo: [0; 3],
        reach: reach_vox,
        receptive_field: field,
        align,
        spans: [one(0), one(1), one(2)],
        arena_bytes: arena_of(&whole, 1).unwrap_or(u64::MAX),
        weight_bytes,
    };
    let fits_whole = whole_arena.saturating_add(weight_bytes) <= req.budget;
    if req.tile_3d.is_none() && fits_whole {
        return Ok(plan);
    }
    if let Some(n) = non_local {
        return Err(format!(
            "tiling is not exact for this net: {n}. The padded volume {} (D x H x W) needs {} of \
             activations (batch {}) + {} of weights{}; give --memory more to run it whole",
            dhw(padded),
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
    let smallest: [usize; 3] = std::array::from_fn(|a| up_to_accepted(&forms[a], 2 * halo[a] + 1));
    let (tile, compiled, arena) = match req.tile_3d {
        Some(t) => {
            let t = asked_tile(forms, t, padded)?;
            let c = compile_tile(path, text, t, base[3], req)?;
            let arena = arena_of(&c, req.batch).unwrap_or(u64::MAX);
            (t, c, arena)
        }
        None => largest_fitting(path, text, base[3], forms, padded, &whole, req, smallest)?,
    };
    if arena.saturating_add(weight_bytes) > req.budget {
        return Err(format!(
            "a {} (D x H x W) tile needs {} of activations (batch {}) + {} of weights, more than \
             the memory budget {}; give a smaller --tile or more --memory",
            dhw(tile),
            crate::text::bytes(arena),
            req.batch,
            crate::text::bytes(weight_bytes),
            crate::text::bytes(req.budget)
        ));
    }
    plan.spans = per_axis(|a| {
        exact_spans(padded[a], tile[a], halo[a], align[a], pad_before[a]).ok_or_else(|| {
            format!(
                "a {} {}-voxel tile is too small for exact tiling: each tile needs a halo of {} \
                 voxels on both sides (the reach of an output voxel, {}, rounded up to the \
                 {}-voxel grid); use a tile of at least {}",
                AXES[a],
                tile[a],
                halo[a],
                reach_vox.map_or(0, |r| r[a]),
                align[a],
                smallest[a]
            )
        })
    })?;
    plan.tile_in = tile;
    plan.tile_out = tile;
    plan.halo = halo;
    plan.arena_bytes = arena_of(&compiled, 1).unwrap_or(u64::MAX);
    plan.stitch = if plan.tiles() == [1, 1, 1] {
        Stitch::Whole
    } else {
        Stitch::Exact
    };
    Ok(plan)
}

fn plan_valid(
    path: &Path,
    text: &str,
    base: [usize; 4],
    volume: [usize; 3],
    req: &TileRequest,
    forms: &[ClosedForm; 3],
    margin: [usize; 3],
) -> Result<VolumePlan, String> {
    // The volume mirror-padded by the margin, and after it up to an accepted size.
    let needed: [usize; 3] =
        std::array::from_fn(|a| up_to_accepted(&forms[a], volume[a] + 2 * margin[a]));
    let fits = |c: &Compiled| {
        arena_of(c, req.batch)
            .unwrap_or(u64::MAX)
            .saturating_add(req.weights_on.resident_bytes(c))
            <= req.budget
    };
    let whole = compile_tile(path, text, needed, base[3], req)?;
    // A layer that sees the whole volume (aligned corners, edge padding) gives each overlap tile
    // a result of its own: only one tile over the whole mirror-padded volume is exact.
    let non_local = (0..3).find_map(|a| reach(&whole, a).err());
    let tile = match (req.tile_3d, &non_local) {
        (Some(t), _) => asked_tile(forms, t, needed)?,
        (None, Some(_)) => needed,
        (None, None) => {
            let spec_tile: [usize; 3] = std::array::from_fn(|a| base[a].min(needed[a]));
            let spec_fits =
                compile_tile(path, text, spec_tile, base[3], req).is_ok_and(|c| fits(&c));
            if req.spec_tile_first && spec_fits {
                spec_tile
            } else {
                let smallest: [usize; 3] = std::array::from_fn(|a| {
                    up_to_accepted(&forms[a], 2 * margin[a] + forms[a].period)
                });
                largest_fitting(path, text, base[3], forms, needed, &whole, req, smallest)?.0
            }
        }
    };
    if let Some(n) = &non_local {
        if tile != needed || !fits(&whole) {
            return Err(format!(
                "tiling is not exact for this net: {n}. The volume mirror-padded by the margin, \
                 {} (D x H x W), runs as one tile: it needs {} of activations (batch {}) + {} of \
                 weights (budget {}); drop --tile, or give --memory more",
                dhw(needed),
                crate::text::bytes(arena_of(&whole, req.batch).unwrap_or(u64::MAX)),
                req.batch,
                crate::text::bytes(req.weights_on.resident_bytes(&whole)),
                crate::text::bytes(req.budget)
            ));
        }
    }
    let c = compile_tile(path, text, tile, base[3], req)?;
    let out: [usize; 3] = std::array::from_fn(|a| tile[a] - 2 * margin[a]);
    let spans = per_axis(|a| {
        overlap_spans(needed[a], tile[a], out[a], forms[a].period).ok_or_else(|| {
            format!(
                "a {} {}-voxel tile gives {} output voxels, fewer than the net's stride {}: its \
                 tiles cannot step on the pooling grid; use a tile of at least {}",
                AXES[a],
                tile[a],
                out[a],
                forms[a].period,
                up_to_accepted(&forms[a], 2 * margin[a] + forms[a].period)
            )
        })
    })?;
    let field: [usize; 3] = std::array::from_fn(|a| reach(&c, a).map_or(tile[a], |r| r.field));
    Ok(VolumePlan {
        stitch: Stitch::OverlapTile,
        volume,
        padded: needed,
        pad_before: margin,
        tile_in: tile,
        tile_out: out,
        halo: margin,
        reach: None,
        receptive_field: field,
        align: std::array::from_fn(|a| forms[a].period.max(1)),
        spans,
        arena_bytes: arena_of(&c, 1).unwrap_or(u64::MAX),
        weight_bytes: req.weights_on.resident_bytes(&c),
    })
}
