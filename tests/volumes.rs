//! Volumes (issue 14 part 2, issue 12 part 3): `sizes` and `tiles` for 3-D nets, and `run`
//! tiling a volume larger than one tile exactly (same padding: halo ≥ reach; valid padding: the
//! overlap-tile), with the expected sizes derived by hand below.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use unetc::exec::Tensor;
use unetc::io::npy::{read_npy, write_npy};
use unetc::report::sizes::{Stitch, TileRequest};
use unetc::report::volume::plan_volume;

/// One level, same padding (tests/fixtures/volume_same.unet). Along each axis, an output voxel
/// p reads the 1x1x1 head, then conv3d(4) ±1 → [p−1, p+1] of the concatenation; its skip half
/// reads the first conv ±1 → [p−2, p+2]; its up half: the k2 s2 transposed conv maps q to
/// ⌊q/2⌋ → [⌊(p−1)/2⌋, ⌊(p+1)/2⌋], conv3d(8) ±1, the 2x2x2 pool 2j..2j+1, the first conv ±1:
/// [2⌊(p−1)/2⌋ − 5, 2⌊(p+1)/2⌋ + 4]. For p even that is [p − 5, p + 4], for p odd
/// [p − 4, p + 5]: reach 5, receptive field 10. One pool: sizes ≡ 0 mod 2, ≥ 2, out = in; the
/// halo is 5 rounded up to the 2-voxel grid: 6.
const SAME: &str = "tests/fixtures/volume_same.unet";
/// Valid padding, depth 2 (tests/golden/unet3d_valid.unet): two valid 3x3x3 convs lose 4 per
/// level and each pool halves, a1 = (n − 4)/2, a2 = (a1 − 4)/2 (both even: n ≡ 0 mod 4), the
/// bottleneck b = a2 − 4, and up: out = 2(2b − 4) − 4 = 4b − 12 = n − 40, so out ≥ 1 needs
/// n ≥ 44 (44 → 4): margin 20 per side, stride 4.
const VALID: &str = "tests/golden/unet3d_valid.unet";

use common::{fresh_temp_dir as temp_dir, path_str as s, unetc_cli as unetc};

fn init_weights(spec: &str, dir: &Path) -> PathBuf {
    let stem = Path::new(spec).file_stem().unwrap().to_str().unwrap();
    let weights = dir.join(format!("{stem}.safetensors"));
    let (code, _, stderr) = unetc(&["init-weights", spec, "-o", s(&weights), "--seed", "5"]);
    assert_eq!(code, 0, "{stderr}");
    weights
}

/// A random `shape` array in [0, 1) written to `path`.
fn random_array(path: &Path, shape: &[usize], seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(6364136223846793005);
    let data: Vec<f32> = (0..shape.iter().product())
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 40) as f32 / (1u64 << 24) as f32
        })
        .collect();
    write_npy(path, &Tensor::from_vec(shape, data.clone()).unwrap(), false).unwrap();
    data
}

fn run(spec: &str, weights: &Path, input: &Path, output: &Path, extra: &[&str]) -> String {
    let mut args = vec![
        "run",
        spec,
        "--weights",
        s(weights),
        "--input",
        s(input),
        "-o",
        s(output),
        "--device",
        "cpu",
        "--verbose",
    ];
    args.extend_from_slice(extra);
    let (code, _, stderr) = unetc(&args);
    assert_eq!(code, 0, "{extra:?}: {stderr}");
    stderr
}

#[test]
fn sizes_of_volume_nets_per_axis() {
    let (code, out, stderr) = unetc(&["sizes", SAME, "--max", "40"]);
    assert_eq!(code, 0, "{stderr}");
    for axis in ["depth", "height", "width"] {
        assert!(out.contains(&format!("{axis}, sizes 1..=40:")), "{out}");
    }
    assert_eq!(
        out.matches("valid: in ≡ 0 mod 2, in ≥ 2").count(),
        3,
        "{out}"
    );
    assert_eq!(out.matches("output: out = in\n").count(), 3, "{out}");
    let (code, out, stderr) = unetc(&["sizes", VALID, "--max", "60"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        out.matches("valid: in ≡ 0 mod 4, in ≥ 44").count(),
        3,
        "{out}"
    );
    assert_eq!(out.matches("output: out = in − 40").count(), 3, "{out}");
}

#[test]
fn tile_plans_for_volumes_by_hand() {
    let text = std::fs::read_to_string(root().join(SAME)).unwrap();
    let mut req = TileRequest::new(1 << 30);
    req.tile_3d = Some([16, 16, 16]);
    // 17x22x25 (D x H x W) pads to the even sizes 18x22x26 (0 before: (18 − 17) / 2 = 0).
    // Tiles of 16 keep a centre 16 − 2·6 = 4 wide: starts step by 4, the last at n − 16.
    let p = plan_volume(Path::new(SAME), &text, [16, 16, 16, 1], [17, 22, 25], &req).unwrap();
    assert_eq!(p.stitch, Stitch::Exact);
    assert_eq!(p.padded, [18, 22, 26]);
    assert_eq!(p.pad_before, [0, 0, 0]);
    assert_eq!(p.halo, [6, 6, 6]);
    assert_eq!(p.reach, Some([5, 5, 5]));
    assert_eq!(p.receptive_field, [10, 10, 10]);
    let starts = |a: usize| p.spans[a].iter().map(|s| s.start).collect::<Vec<_>>();
    assert_eq!(starts(0), vec![0, 2]);
    assert_eq!(starts(1), vec![0, 4, 6]);
    assert_eq!(starts(2), vec![0, 4, 8, 10]);
    assert_eq!(p.tiles(), [2, 3, 4]);
    // Without --tile and within the budget: one pass over the padded volume.
    let whole = plan_volume(
        Path::new(SAME),
        &text,
        [16, 16, 16, 1],
        [17, 22, 25],
        &TileRequest::new(1 << 30),
    )
    .unwrap();
    assert_eq!((whole.stitch, whole.tiles()), (Stitch::Whole, [1, 1, 1]));

    // Valid: 8x8x8 + 2·20 = 48 (≡ 0 mod 4) per axis; the spec's 44 tile gives 4 outputs, so
    // starts step by 4: 0, and the last at 48 − 44 = 4.
    let text = std::fs::read_to_string(root().join(VALID)).unwrap();
    let mut req = TileRequest::new(1 << 30);
    req.spec_tile_first = true;
    let p = plan_volume(Path::new(VALID), &text, [44, 44, 44, 1], [8, 8, 8], &req).unwrap();
    assert_eq!(p.stitch, Stitch::OverlapTile);
    assert_eq!(
        (p.padded, p.tile_in, p.tile_out),
        ([48; 3], [44; 3], [4; 3])
    );
    assert_eq!((p.halo, p.tiles()), ([20; 3], [2, 2, 2]));

    // `tiles` prints the same plan.
    let (code, out, stderr) = unetc(&[
        "tiles", SAME, "--image", "17x22x25", "--tile", "16", "--memory", "1GiB",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(out.contains("tiles: 2x3x4 = 24"), "{out}");
    assert!(out.contains("halo 6x6x6 ≥ reach 5x5x5"), "{out}");
    // And as JSON.
    let (code, out, stderr) = unetc(&[
        "tiles", SAME, "--image", "17x22x25", "--tile", "16", "--memory", "1GiB", "--format",
        "json",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["mode"], "exact");
    assert_eq!(j["padded"]["width"], 26);
    assert_eq!(j["halo"]["depth"], 6);
    assert_eq!(j["reach"]["height"], 5);
    assert_eq!(j["tiles"]["total"], 24);
}

/// Tiled == whole within 1e-6 on volumes larger than one tile, for a same-padding net (asked
/// tiles, and tiles chosen by a small --memory) and a valid one (the spec's 44³ tiles vs one
/// 48³ tile). The expected values are unetc's own one-pass run (tests/golden checks the 3-D
/// kinds against tf.keras); what this checks is that tiling changes nothing.
#[test]
fn tiled_volumes_equal_the_whole_volume() {
    let dir = temp_dir("tiled");
    let weights = init_weights(SAME, &dir);
    let x = dir.join("x.npy");
    random_array(&x, &[2, 17, 22, 25, 1], 3);
    let whole = dir.join("whole.npy");
    let stderr = run(SAME, &weights, &x, &whole, &[]);
    assert!(stderr.contains("whole volume, one pass"), "{stderr}");
    let whole = read_npy(&whole).unwrap();
    assert_eq!(whole.shape, vec![2, 17, 22, 25, 2]);
    // 400 KiB holds an 18³ tile's arena (364.5 KiB) + weights, not the whole volume's.
    for (i, extra) in [
        &["--tile", "16", "--batch", "3"][..],
        &["--tile", "18x14x16"],
        &["--memory", "400KiB"],
    ]
    .iter()
    .enumerate()
    {
        let out = dir.join(format!("t{i}.npy"));
        let stderr = run(SAME, &weights, &x, &out, extra);
        assert!(stderr.contains("exact: halo 6x6x6"), "{extra:?}: {stderr}");
        let err = max_abs_diff(&read_npy(&out).unwrap().data, &whole.data);
        assert!(err <= 1e-6, "{extra:?}: tiled differs from whole by {err}");
    }

    let weights = init_weights(VALID, &dir);
    let x = dir.join("xv.npy");
    random_array(&x, &[1, 8, 8, 8, 1], 4);
    let tiled = dir.join("vt.npy");
    let stderr = run(VALID, &weights, &x, &tiled, &[]);
    assert!(
        stderr.contains("covered by 2x2x2 tiles of 44x44x44"),
        "{stderr}"
    );
    let one = dir.join("v1.npy");
    let stderr = run(VALID, &weights, &x, &one, &["--tile", "48"]);
    assert!(
        stderr.contains("covered by 1x1x1 tiles of 48x48x48"),
        "{stderr}"
    );
    let (tiled, one) = (read_npy(&tiled).unwrap(), read_npy(&one).unwrap());
    assert_eq!(tiled.shape, vec![1, 8, 8, 8, 2]);
    let err = max_abs_diff(&tiled.data, &one.data);
    assert!(err <= 1e-6, "valid tiles differ from one tile by {err}");
}

/// tests/fixtures/volume_trilinear.unet: SAME with trilinear up-sampling for the transposed
/// conv. Along each axis an output voxel p reads [p − 1, p + 1] of the concatenation; the skip
/// half [p − 2, p + 2]. Up-sampled voxel q reads the pooled voxels around (q + 0.5)/2 − 0.5 =
/// (2q − 1)/4, floor and ceiling: q in [p − 1, p + 1] reads [⌊(2p − 3)/4⌋, ⌈(2p + 1)/4⌉]; then
/// conv3d(8) ±1, the pool 2j..2j+1 and the first conv ±1: [2⌊(2p − 3)/4⌋ − 3,
/// 2⌈(2p + 1)/4⌉ + 4]. For p = 4k, 4k+1, 4k+2, 4k+3 that is [p − 5, p + 6], [p − 6, p + 5],
/// [p − 5, p + 6], [p − 6, p + 5]: reach 6 (nearest repetition would reach 5), receptive field
/// 12, halo 6 (already on the 2-voxel grid). Tiles of it equal the whole volume.
#[test]
fn trilinear_reach_by_hand_and_tiles_equal_the_whole_volume() {
    const TRILINEAR: &str = "tests/fixtures/volume_trilinear.unet";
    let text = std::fs::read_to_string(root().join(TRILINEAR)).unwrap();
    let mut req = TileRequest::new(1 << 30);
    req.tile_3d = Some([16, 16, 16]);
    let p = plan_volume(
        Path::new(TRILINEAR),
        &text,
        [16, 16, 16, 1],
        [17, 22, 25],
        &req,
    )
    .unwrap();
    assert_eq!(p.stitch, Stitch::Exact);
    assert_eq!(p.reach, Some([6, 6, 6]));
    assert_eq!(p.receptive_field, [12, 12, 12]);
    assert_eq!(p.halo, [6, 6, 6]);

    let dir = temp_dir("trilinear");
    let weights = init_weights(TRILINEAR, &dir);
    let x = dir.join("x.npy");
    random_array(&x, &[1, 17, 22, 25, 1], 8);
    let whole = dir.join("whole.npy");
    let stderr = run(TRILINEAR, &weights, &x, &whole, &[]);
    assert!(stderr.contains("whole volume, one pass"), "{stderr}");
    let whole = read_npy(&whole).unwrap();
    for (i, extra) in [&["--tile", "16"][..], &["--tile", "18x14x16"]]
        .iter()
        .enumerate()
    {
        let out = dir.join(format!("t{i}.npy"));
        let stderr = run(TRILINEAR, &weights, &x, &out, extra);
        assert!(stderr.contains("exact: halo 6x6x6"), "{extra:?}: {stderr}");
        let err = max_abs_diff(&read_npy(&out).unwrap().data, &whole.data);
        assert!(err <= 1e-6, "{extra:?}: tiled differs from whole by {err}");
    }
}

/// Trilinear up-sampling with aligned corners scales by (n − 1)/(N − 1) of the whole volume, and
/// reflect / replicate padding mirrors the volume's edges: tiles cannot reproduce either, so
/// exact tiling is refused by the layer's name.
#[test]
fn aligned_corners_and_edge_padding_are_not_tiled_exactly() {
    let dir = temp_dir("not-tiled");
    for (body, want) in [
        (
            "conv3d(2, 3, padding: same) -> max_pooling3d(2) -> up_sampling3d(2, interpolation: trilinear, align_corners: true, name: \"up\") -> conv3d(1, 1)",
            "layer `up` (UpSampling3D) samples with aligned corners",
        ),
        (
            "zero_padding3d(1, mode: replicate, name: \"pad\") -> conv3d(2, 3)",
            "layer `pad` (ZeroPadding3D) mirrors or repeats the volume's edge voxels",
        ),
        (
            "zero_padding3d(((1, 1), (0, 2), (1, 1)), mode: reflect, name: \"pad\") -> conv3d(2, 3)",
            "layer `pad` (ZeroPadding3D) mirrors or repeats the volume's edge voxels",
        ),
    ] {
        let spec = dir.join("v.unet");
        std::fs::write(&spec, format!("model {{\n  input 8x8x8x1\n  {body}\n}}\n")).unwrap();
        let (code, stdout, stderr) =
            unetc(&["tiles", s(&spec), "--image", "40x40x40", "--tile", "16"]);
        assert_eq!(code, 3, "{body}: {stdout}");
        assert!(stderr.contains(want), "{body}: {stderr}");
    }
    // A valid-padding net too (its overlap tiles would each mirror their own edges): one tile
    // over the volume mirror-padded by the margin 1, 42³, or nothing.
    let spec = dir.join("valid.unet");
    let body = "zero_padding3d(1, mode: replicate, name: \"pad\") -> conv3d(2, 3) -> conv3d(2, 3)";
    std::fs::write(&spec, format!("model {{\n  input 8x8x8x1\n  {body}\n}}\n")).unwrap();
    let (code, stdout, stderr) = unetc(&["tiles", s(&spec), "--image", "40x40x40"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("42x42x42"), "{stdout}");
    let (code, stdout, stderr) = unetc(&["tiles", s(&spec), "--image", "40x40x40", "--tile", "16"]);
    assert_eq!(code, 3, "{stdout}");
    assert!(
        stderr.contains("layer `pad` (ZeroPadding3D) mirrors or repeats")
            && stderr.contains("42x42x42 (D x H x W), runs as one tile"),
        "{stderr}"
    );
}

/// The check above can fail: two halves of the volume run separately (no halo) differ from the
/// whole near the cut.
#[test]
fn volume_halves_without_a_halo_differ() {
    let dir = temp_dir("halves");
    let weights = init_weights(SAME, &dir);
    let (d, h, w) = (16, 16, 24);
    let x = dir.join("x.npy");
    let data = random_array(&x, &[1, d, h, w, 1], 5);
    let whole = dir.join("whole.npy");
    run(SAME, &weights, &x, &whole, &[]);
    let whole = read_npy(&whole).unwrap();
    let mut stitched = vec![0.0f32; whole.data.len()];
    for half in 0..2 {
        let part: Vec<f32> = (0..d * h)
            .flat_map(|row| &data[row * w + half * w / 2..row * w + (half + 1) * w / 2])
            .copied()
            .collect();
        let xp = dir.join(format!("x{half}.npy"));
        write_npy(
            &xp,
            &Tensor::from_vec(&[1, d, h, w / 2, 1], part).unwrap(),
            false,
        )
        .unwrap();
        let yp = dir.join(format!("y{half}.npy"));
        run(SAME, &weights, &xp, &yp, &[]);
        let y = read_npy(&yp).unwrap();
        for row in 0..d * h {
            let src = &y.data[row * (w / 2) * 2..(row + 1) * (w / 2) * 2];
            let dst = (row * w + half * w / 2) * 2;
            stitched[dst..dst + w].copy_from_slice(src);
        }
    }
    let err = max_abs_diff(&stitched, &whole.data);
    assert!(err > 1e-3, "halves without a halo differ by only {err}");
}

#[test]
fn volume_tiling_refusals_are_clear() {
    let dir = temp_dir("refuse");
    let weights = init_weights(SAME, &dir);
    let x = dir.join("x.npy");
    random_array(&x, &[1, 17, 22, 25, 1], 6);
    let y = dir.join("y.npy");
    for (extra, want) in [
        // Exact tiles need more than 2 x halo 6: at least 14.
        (&["--tile", "8"][..], "use a tile of at least 14"),
        (&["--tile", "15"], "15 is not one (nearest: 14 and 16)"),
        (&["--tile", "16x16"], "this model takes volumes: give DxHxW"),
        (&["--tile-mode", "blend"], "volumes are tiled exactly"),
    ] {
        let mut args = vec![
            "run",
            SAME,
            "--weights",
            s(&weights),
            "--input",
            s(&x),
            "-o",
            s(&y),
        ];
        args.extend_from_slice(extra);
        let (code, _, stderr) = unetc(&args);
        assert_eq!(code, 2, "{extra:?}: {stderr}");
        assert!(stderr.contains(want), "{extra:?}: {stderr}");
        assert!(!y.exists());
    }
    // At the model's own size too, a 2-D tile is refused rather than ignored.
    let own = dir.join("own.npy");
    random_array(&own, &[1, 16, 16, 16, 1], 7);
    let (code, _, stderr) = unetc(&[
        "run",
        SAME,
        "--weights",
        s(&weights),
        "--input",
        s(&own),
        "-o",
        s(&y),
        "--tile",
        "8x8",
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("an image's tile"), "{stderr}");
    assert!(!y.exists());
    let (code, _, stderr) = unetc(&["tiles", SAME, "--image", "17x22"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("expected DxHxW"), "{stderr}");
    let (code, _, stderr) = unetc(&[
        "tiles",
        "tests/golden/bn_same_small.unet",
        "--image",
        "64x64",
        "--tile",
        "32x32x32",
    ]);
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("is a volume's tile"), "{stderr}");
}

/// The README's volume `tiles` example is what `tiles` prints.
#[test]
fn readme_volume_tiles_example_is_what_tiles_prints() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let cmd = "$ unetc tiles specs/library/unet3d.unet --image 155x240x240 --memory 4GiB\n";
    let at = readme
        .find(cmd)
        .expect("README shows the volume tiles example")
        + cmd.len();
    let shown = &readme[at..at + readme[at..].find("```").unwrap()];
    let (code, out, stderr) = unetc(&[
        "tiles",
        "specs/library/unet3d.unet",
        "--image",
        "155x240x240",
        "--memory",
        "4GiB",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(shown, out);
}
