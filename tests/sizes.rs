//! `unetc sizes` and `unetc tiles` from the spec alone. The expected rules by hand, for the
//! original U-Net: two valid 3x3 convs lose 4 pixels per level and each pool halves, so with
//! a1 = (n − 4)/2, a2 = (a1 − 4)/2, a3 = (a2 − 4)/2, a4 = (a3 − 4)/2 every a_i − 4 must be even:
//! n ≡ 12 (mod 16). The bottleneck is b = a4 − 4 = (n − 60)/16 − 4; each up level doubles and
//! loses 4, so out = 16·b − 60 = n − 184 (572 → 388, as in the truth table), and out ≥ 1 needs
//! b ≥ 4: n ≥ 188. A same-padding depth-4 U-Net needs n ≡ 0 (mod 16) and gives out = n.

mod common;

use common::*;
use unetc::report::sizes::{closed_form, nearest, plan_tiles, probe_axis, ClosedForm};

fn form(spec: &str, max: usize) -> ClosedForm {
    let path = root().join(spec);
    let text = std::fs::read_to_string(&path).unwrap();
    let c = compile(std::path::Path::new(spec));
    let base = unetc::report::sizes::spec_input(&c).unwrap();
    closed_form(&probe_axis(&path, &text, base, 0, max)).expect("a closed form")
}

#[test]
fn original_unet_sizes_in_closed_form() {
    let f = form("specs/original.unet", 700);
    assert_eq!((f.residue, f.period, f.min), (12, 16, 188));
    assert_eq!(f.output, Some((1.0, -184.0)));
    // 572 -> 388 is the paper's tile; 380 -> 196 too.
    let path = root().join("specs/original.unet");
    let text = std::fs::read_to_string(&path).unwrap();
    let sizes = probe_axis(&path, &text, [572, 572, 1], 0, 700);
    let (below, above) = nearest(&sizes, 570);
    assert_eq!(below.map(|p| (p.input, p.output)), Some((556, Some(372))));
    assert_eq!(above.map(|p| (p.input, p.output)), Some((572, Some(388))));
}

#[test]
fn same_padding_unet_needs_a_multiple_of_16() {
    let f = form("specs/bn_same.unet", 300);
    assert_eq!((f.residue, f.period, f.min), (0, 16, 16));
    assert_eq!(f.output, Some((1.0, 0.0)));
    // The template with valid convs and auto crops accepts the same sizes as the hand-written one.
    let t = form("specs/template_original.yaml", 700);
    assert_eq!((t.residue, t.period, t.min), (12, 16, 188));
}

#[test]
fn tiles_fit_the_memory_budget() {
    let path = root().join("specs/original.unet");
    let text = std::fs::read_to_string(&path).unwrap();
    let plan = plan_tiles(&path, &text, [572, 572, 1], (1000, 1000), 1 << 30).unwrap();
    // A valid tile (≡ 12 mod 16), its output 184 smaller, and memory within 1 GiB.
    let (tile_in, tile_out) = (plan.tile_in.0, plan.tile_out.0);
    assert_eq!(plan.tile_in.0, plan.tile_in.1);
    assert_eq!(tile_in % 16, 12);
    assert_eq!(tile_out + 184, tile_in);
    assert_eq!(plan.halo, 92);
    assert!(plan.arena_bytes + plan.weight_bytes <= 1 << 30);
    // 1000 + 184 = 1184 ≡ 0 mod 16: padded to 1196, the next accepted size; tiles step by the
    // output rounded down to 16, the last ending at 1196.
    assert_eq!(plan.padded, (1196, 1196));
    let step = tile_out / 16 * 16;
    let rows = (1196 - tile_in).div_ceil(step) + 1;
    assert_eq!(plan.tiles(), (rows, rows));
    assert!(plan.receptive_field > 2 * plan.halo);
}

/// No tile is larger than the image needs: a 600x400 image (W x H) gets one tile whose output
/// just covers it, for a valid net (400 + 184 = 584 → 588, 600 + 184 = 784 → 796, the next
/// sizes ≡ 12 mod 16) and for a same-padding one (400 → 400, 600 → 608, multiples of 16).
#[test]
fn a_small_image_gets_no_tile_larger_than_it_needs() {
    for (spec, base, want) in [
        ("specs/original.unet", [572, 572, 1], (588, 796)),
        ("specs/bn_same.yaml", [512, 512, 3], (400, 608)),
    ] {
        let path = root().join(spec);
        let text = std::fs::read_to_string(&path).unwrap();
        let plan = plan_tiles(&path, &text, base, (400, 600), 8 << 30).unwrap();
        assert_eq!(plan.tile_in, want, "{spec}");
        assert_eq!(plan.tiles(), (1, 1), "{spec}");
    }
}

/// Same-padding nets get a halo: the reach of an output pixel, from the layers. By hand for
/// tests/golden/bn_same_small.unet (3x3 same convs, 2x2 pools, 2x2 stride-2 transposed convs):
/// a 3x3 conv at a level of stride s reaches s more pixels each side; two per block, levels
/// 1, 2, 4 down, 8 at the bottom, 4, 2, 1 up: 2·(1+2+4+8+4+2+1) = 44; each 2x2 pool at stride
/// s can need s more on one side (1 + 2 + 4 = 7): 51, rounded up to the grid of 8: 56.
#[test]
fn same_padding_halo_is_the_reach_rounded_to_the_stride() {
    use unetc::report::sizes::{plan_image, Stitch, TileRequest};
    let path = root().join("tests/golden/bn_same_small.unet");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut req = TileRequest::new(1 << 30);
    req.tile = Some((160, 160));
    let plan = plan_image(&path, &text, [32, 32, 3], (250, 230), &req).unwrap();
    assert_eq!(plan.stitch, Stitch::Exact);
    assert_eq!((plan.reach, plan.halo, plan.align), (Some(51), 56, 8));
    assert_eq!(plan.padded, (256, 232));
    assert!(plan.overlap() >= 2 * plan.halo);
}

/// A net that takes one size (TransUNet: its position embeddings count the bottleneck's
/// pixels) is not tiled, and the refusal says why and what to do.
#[test]
fn a_net_of_one_input_size_is_not_tiled() {
    use unetc::report::sizes::{plan_image, TileRequest};
    let path = root().join("specs/library/transunet.unet");
    let text = std::fs::read_to_string(&path).unwrap();
    let err = plan_image(
        &path,
        &text,
        [128, 128, 3],
        (512, 512),
        &TileRequest::new(1 << 30),
    )
    .unwrap_err();
    assert!(
        err.starts_with("the net takes one input height only, 128 (at width 128;"),
        "{err}"
    );
    assert!(err.contains("resize the image to 128x128"), "{err}");
    // Swin-UNET cuts 4x4 patches into a fixed 32x32 grid: 128 to 131 rows all give it.
    let path = root().join("specs/library/swin_unet.unet");
    let text = std::fs::read_to_string(&path).unwrap();
    let err = plan_image(
        &path,
        &text,
        [128, 128, 3],
        (300, 300),
        &TileRequest::new(1 << 30),
    )
    .unwrap_err();
    assert!(
        err.starts_with("the net takes input heights 128 to 131 only (at width 128), all giving the same output"),
        "{err}"
    );
    assert!(err.contains("resize the image to 128x128"), "{err}");
}

/// The fast probe (shape rules over the graph expanded once) agrees with compiling the spec
/// anew at each size, for every spec, square and not, small and around the seed sizes.
#[test]
fn the_graph_probe_agrees_with_compiling_at_each_size() {
    use unetc::report::sizes::Prober;
    for rel in spec_files() {
        let path = root().join(&rel);
        let text = std::fs::read_to_string(&path).unwrap();
        let mut fast = Prober::new(&path, &text);
        let mut slow = Prober::compiling(&path, &text);
        let channels = unetc::report::sizes::spec_input(&compile(&rel)).map_or(1, |b| b[2]);
        let sizes = (1..=40).chain(184..=196).chain(252..=258).chain(568..=576);
        for n in sizes {
            for shape in [[n, n, channels], [n, n + 3, channels]] {
                assert_eq!(
                    fast.probe(&shape),
                    slow.probe(&shape),
                    "{} at {shape:?}",
                    rel.display()
                );
            }
        }
    }
}

/// Issue 11: the sizes `check` suggests after a size problem are found outwards from the spec's
/// own; a non-square input whose width is invalid too still gets heights and widths that work.
#[test]
fn nearest_sizes_for_a_spec_that_fits_no_size() {
    let path = root().join("specs/original.unet");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("572x572x1", "390x389x1");
    let pair = |p: Option<unetc::report::sizes::SizePair>| p.map(|p| (p.input, p.output));
    for (axis, n) in [(0, 390), (1, 389)] {
        let mut base = [390, 389, 1];
        base[axis] = n;
        let (below, above) = unetc::report::sizes::nearest_to_base(&path, &text, base, axis, 780);
        // n ≡ 12 (mod 16): 380 and 396, outputs n − 184 (see the top of this file).
        assert_eq!(pair(below), Some((380, Some(196))), "axis {axis}");
        assert_eq!(pair(above), Some((396, Some(212))), "axis {axis}");
    }
    let sizes = probe_axis(&path, &text, [390, 389, 1], 0, 700);
    // The width is held at the valid size nearest to 389: 396 (7 away; 380 is 9 away).
    assert_eq!(sizes.other_axis_held_at, Some(396));
    let f = closed_form(&sizes).expect("a closed form");
    assert_eq!((f.residue, f.period, f.min), (12, 16, 188));
}
