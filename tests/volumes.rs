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

/// One 3x3x3 convolution: cheap enough for a volume larger than the budget in a debug build.
const ONE3: &str = r#"model "one3" {
  input 16x16x16x1
  conv3d(1, 3, padding: same, activation: sigmoid)
}
"#;

/// A test volume's value at (z, y, x): smooth plus a little detail, in [0, 1], exactly
/// representable in f32.
fn pattern3(z: usize, y: usize, x: usize) -> f32 {
    let v = 0.5
        + 0.3 * ((y as f64) * 0.07 + (z as f64) * 0.11).sin() * ((x as f64) * 0.05).cos()
        + 0.15 * (((z * 5 + y * 7 + x * 3) % 11) as f64 / 11.0);
    v as f32
}

/// Runs unetc with `args` and `--verbose` on one thread: exit code, stderr and its peak
/// resident set in KiB as it reports it (VmHWM of its own address space). One thread, because
/// the executor's per-task scratch (up to 1 MiB of im2col columns per task, 4 tasks per
/// thread, on each thread's own malloc arena) grows with the core count, not with the volume.
fn run_measured(args: &[String]) -> (i32, String, u64) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_unetc"))
        .args(args)
        .arg("--verbose")
        .env("RAYON_NUM_THREADS", "1")
        .current_dir(root())
        .output()
        .expect("unetc runs");
    let code = out.status.code().unwrap_or(-1);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let peak = err
        .lines()
        .find_map(|l| l.strip_prefix("peak RSS "))
        .and_then(|l| l.strip_suffix(" bytes (VmHWM)"))
        .and_then(|b| b.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no peak RSS in:\n{err}"));
    (code, err, peak / 1024)
}

/// A 192x256x256 float32 volume (48 MiB in, 48 MiB out) with a 2 MiB budget, read and written
/// tile by tile: the peak RSS stays within a bound computed from the tile plan, below the
/// volume's size, and sampled output voxels (at tile seams too) equal the convolution computed
/// here from the weights.
#[test]
#[cfg(target_os = "linux")]
fn streamed_volume_memory_is_bounded_by_the_tile_plan() {
    let dir = temp_dir("rss");
    // 96 MiB of files: removed however the test ends.
    struct Remove(PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Remove(dir.clone());
    let spec = dir.join("one3.unet");
    std::fs::write(&spec, ONE3).unwrap();
    let weights = init_weights(s(&spec), &dir);
    let (d, h, w) = (192, 256, 256);
    let volume = |dims: [usize; 3]| {
        let [d, h, w] = dims;
        let data: Vec<f32> = (0..d * h * w)
            .map(|i| pattern3(i / (h * w), i / w % h, i % w))
            .collect();
        Tensor::from_vec(&[1, d, h, w, 1], data).unwrap()
    };
    let big = dir.join("big.npy");
    write_npy(&big, &volume([d, h, w]), false).unwrap();
    let small = dir.join("small.npy");
    write_npy(&small, &volume([16, 16, 16]), false).unwrap();
    let args = |input: &Path, output: &Path| {
        vec![
            "run".to_string(),
            s(&spec).to_string(),
            "--weights".into(),
            s(&weights).to_string(),
            "--input".into(),
            s(input).to_string(),
            "-o".into(),
            s(output).to_string(),
            "--device".into(),
            "cpu".into(),
            "--memory".into(),
            "2MiB".into(),
            "--tile".into(),
            "48".into(),
        ]
    };
    // The process alone: the same command on a 16³ volume.
    let small_out = dir.join("small_out.npy");
    let a = args(&small, &small_out);
    let (code, err, baseline) = run_measured(&a);
    assert_eq!(code, 0, "{err}");
    let out = dir.join("big_out.npy");
    let a = args(&big, &out);
    let (code, err, peak) = run_measured(&a);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("memory-mapped"), "{err}");
    // 48³ tiles (halo 1: 46 kept per axis): 5 x 6 x 6.
    assert!(
        err.contains("covered by 5x6x6 tiles of 48x48x48 per volume"),
        "{err}"
    );
    let (t, kib) = (48u64, 1024u64);
    let tile_buffer = t * t * t * 4 / kib;
    // Bound: the process alone + the arena (the 2 MiB budget) + the convolution's scratch on
    // one thread (4 tasks of at most 1 MiB) + 9 tile buffers (as for images:
    // two batches of input tiles and two of outputs in the pipeline, the rectangle being read,
    // 4 more the reader's and writer's malloc arenas may keep) + the mapped input of one
    // plane's rectangle (48 rows of 1 KiB, + the 2 MiB-aligned window around them the kernel
    // may map: fault-around, or a whole large page-cache folio) + the
    // output pages one tile writes (48 planes x 48 rows of 1 KiB, + 2 pages per plane) + 8 MiB
    // for the allocator's other slack.
    let row = w as u64 * 4 / kib;
    let bound = baseline
        + 2 * kib
        + 4 * kib
        + 9 * tile_buffer
        + (t * row + 4 * kib)
        + t * (t * row + 8)
        + 8 * kib;
    let size = (d * h * w * 4) as u64 / kib;
    eprintln!(
        "peak RSS {peak} KiB (baseline {baseline} KiB, bound {bound} KiB, volume {size} KiB in \
         and out)"
    );
    assert!(peak <= bound, "peak RSS {peak} KiB > bound {bound} KiB");
    assert!(
        bound < size,
        "the bound {bound} KiB is not below the volume's {size} KiB"
    );

    // Sampled outputs against sigmoid(b + Σ k[dz][dy][dx] · x[z+dz−1][y+dy−1][x+dx−1]), zero
    // padding, with the kernel and bias read from the weights file by the safetensors crate.
    let bytes = std::fs::read(&weights).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let floats = |name: &str| -> Vec<f64> {
        let view = st
            .tensors()
            .into_iter()
            .find(|(n, _)| n.ends_with(name))
            .unwrap_or_else(|| panic!("no {name}"))
            .1;
        view.data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64)
            .collect()
    };
    let (kernel, bias) = (floats("/kernel"), floats("/bias"));
    assert_eq!((kernel.len(), bias.len()), (27, 1));
    let got = read_npy(&out).unwrap();
    assert_eq!(got.shape, vec![1, d, h, w, 1]);
    let at = |z: isize, y: isize, x: isize| {
        if z < 0 || y < 0 || x < 0 || z >= d as isize || y >= h as isize || x >= w as isize {
            0.0
        } else {
            pattern3(z as usize, y as usize, x as usize) as f64
        }
    };
    // Each tile keeps 46 voxels per axis: seams at multiples of 46, and the borders.
    let seams = |len: usize| -> Vec<usize> {
        (0..len)
            .step_by(46)
            .flat_map(|s| [s.saturating_sub(1), s, s + 1])
            .chain([len - 1])
            .filter(|&v| v < len)
            .collect()
    };
    let mut worst = 0.0f64;
    for &z in &seams(d) {
        for &y in &seams(h) {
            for &x in &seams(w) {
                let mut v = bias[0];
                for dz in 0..3 {
                    for dy in 0..3 {
                        for dx in 0..3 {
                            v += kernel[(dz * 3 + dy) * 3 + dx]
                                * at(
                                    z as isize + dz as isize - 1,
                                    y as isize + dy as isize - 1,
                                    x as isize + dx as isize - 1,
                                );
                        }
                    }
                }
                let want = 1.0 / (1.0 + (-v).exp());
                worst = worst.max((got.data[(z * h + y) * w + x] as f64 - want).abs());
            }
        }
    }
    assert!(
        worst < 1e-6,
        "sampled outputs differ from the hand convolution by {worst}"
    );
}

/// Streamed volume runs (a `<f4` .npy memory-mapped, a .nii mapped, a .nii.gz decompressed to a
/// temporary file; outputs written tile by tile) equal the whole-volume run held in memory (a
/// `<f8` .npy is read whole and runs in one pass) within 1e-6, with many tiles of a small
/// budget; NIfTI outputs keep the input's affine.
#[test]
fn streamed_volumes_equal_the_whole_volume_run() {
    use unetc::io::nifti::{read_nifti, write_nifti, NiftiHeader};
    let dir = temp_dir("streamed");
    let weights = init_weights(SAME, &dir);
    let shape = [1, 20, 30, 34, 1];
    let x = dir.join("x.npy");
    let data = random_array(&x, &shape, 9);
    let x64 = dir.join("x64.npy");
    let as_f64: Vec<f64> = data.iter().map(|&v| v as f64).collect();
    {
        // A `<f8` copy, written by hand (unetc writes float32 only).
        use std::io::Write;
        let dict = "{'descr': '<f8', 'fortran_order': False, 'shape': (1, 20, 30, 34, 1), }";
        let total = (10 + dict.len() + 1).next_multiple_of(64);
        let mut f = std::io::BufWriter::new(std::fs::File::create(&x64).unwrap());
        f.write_all(b"\x93NUMPY\x01\x00").unwrap();
        f.write_all(&((total - 10) as u16).to_le_bytes()).unwrap();
        f.write_all(dict.as_bytes()).unwrap();
        f.write_all(&vec![b' '; total - 11 - dict.len()]).unwrap();
        f.write_all(b"\n").unwrap();
        for v in as_f64 {
            f.write_all(&v.to_le_bytes()).unwrap();
        }
    }
    let whole = dir.join("whole.npy");
    let stderr = run(SAME, &weights, &x64, &whole, &[]);
    assert!(stderr.contains("whole volume, one pass"), "{stderr}");
    assert!(!stderr.contains("memory-mapped"), "{stderr}");
    let whole = read_npy(&whole).unwrap();
    assert_eq!(whole.shape, vec![1, 20, 30, 34, 2]);

    // NIfTI inputs with an affine (unetc's writer; its reader is checked against nibabel's
    // files in tests/nifti.rs).
    let tensor = Tensor::from_vec(&shape, data.clone()).unwrap();
    let (_, like) = read_nifti(&root().join("tests/nifti/f32.nii.gz")).unwrap();
    assert_ne!(like.xform_codes(), (0, 0));
    for name in ["x.nii", "x.nii.gz"] {
        write_nifti(&dir.join(name), &tensor, &like, false).unwrap();
    }
    assert_ne!(like, NiftiHeader::blank());
    for (input, output) in [
        ("x.npy", "y.npy"),
        ("x.nii", "y.nii"),
        ("x.nii.gz", "y.nii.gz"),
        ("x.nii", "y2.npy"),
    ] {
        let out = dir.join(output);
        let stderr = run(
            SAME,
            &weights,
            &dir.join(input),
            &out,
            &["--memory", "400KiB"],
        );
        assert!(stderr.contains("memory-mapped"), "{input}: {stderr}");
        assert!(stderr.contains("exact: halo 6x6x6"), "{input}: {stderr}");
        let got = if output.ends_with(".npy") {
            read_npy(&out).unwrap()
        } else {
            let (got, header) = read_nifti(&out).unwrap();
            assert_eq!(header.srow(), like.srow(), "{output}");
            assert_eq!(header.xform_codes(), like.xform_codes(), "{output}");
            got
        };
        assert_eq!(got.shape, whole.shape, "{input} -> {output}");
        let err = max_abs_diff(&got.data, &whole.data);
        assert!(
            err <= 1e-6,
            "{input} -> {output}: differs from whole by {err}"
        );
    }
    // Two volumes cannot go into one NIfTI: refused before any work, nothing left behind.
    let two = dir.join("two.npy");
    random_array(&two, &[2, 20, 30, 34, 1], 10);
    let y = dir.join("two.nii");
    let (code, _, stderr) = unetc(&[
        "run",
        SAME,
        "--weights",
        s(&weights),
        "--input",
        s(&two),
        "-o",
        s(&y),
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("2 volumes cannot go into one NIfTI"),
        "{stderr}"
    );
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.') || n.starts_with("two.nii"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// A directory of volumes: `.nii`/`.nii.gz` files run like images, their outputs named as the
/// inputs (NIfTI, the affine kept), a `.npy` volume written as `.npy`; a damaged file is named
/// and the rest still run; each output equals the same file's single run. An image model
/// refuses the NIfTI files by name and still runs its images.
#[test]
fn directory_runs_take_nifti_volumes() {
    use unetc::io::nifti::{read_nifti, write_nifti};
    let dir = temp_dir("dir");
    let weights = init_weights(SAME, &dir);
    let inputs = dir.join("in");
    std::fs::create_dir_all(&inputs).unwrap();
    let (_, like) = read_nifti(&root().join("tests/nifti/f32.nii.gz")).unwrap();
    let a = random_array(&dir.join("a.npy"), &[1, 12, 14, 16, 1], 11);
    let a = Tensor::from_vec(&[1, 12, 14, 16, 1], a).unwrap();
    write_nifti(&inputs.join("a.nii"), &a, &like, false).unwrap();
    write_nifti(&inputs.join("b.nii.gz"), &a, &like, false).unwrap();
    random_array(&inputs.join("c.npy"), &[1, 12, 14, 16, 1], 12);
    std::fs::write(inputs.join("bad.nii"), b"not a nifti file").unwrap();
    let out = dir.join("out");
    let (code, _, stderr) = unetc(&[
        "run",
        SAME,
        "--weights",
        s(&weights),
        "--input",
        s(&inputs),
        "-o",
        s(&out),
        "--device",
        "cpu",
    ]);
    // README: a failed input gives exit code 2, the others are written.
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("bad.nii"), "{stderr}");
    assert!(stderr.contains("1 of 4 inputs failed"), "{stderr}");
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["a.nii", "b.nii.gz", "c.npy"]);
    // Each equals its single run (a .npy output of the same input).
    let single = |input: &Path, name: &str| {
        let y = dir.join(name);
        run(SAME, &weights, input, &y, &[]);
        read_npy(&y).unwrap()
    };
    for name in ["a.nii", "b.nii.gz"] {
        let (got, header) = read_nifti(&out.join(name)).unwrap();
        assert_eq!(header.srow(), like.srow(), "{name}");
        assert_eq!(header.xform_codes(), like.xform_codes(), "{name}");
        let want = single(&inputs.join(name), &format!("{name}.single.npy"));
        assert_eq!(got.shape, want.shape, "{name}");
        assert_eq!(max_abs_diff(&got.data, &want.data), 0.0, "{name}");
    }
    let got = read_npy(&out.join("c.npy")).unwrap();
    let want = single(&inputs.join("c.npy"), "c.single.npy");
    assert_eq!(max_abs_diff(&got.data, &want.data), 0.0);

    // An image model: the NIfTI files are refused by name, its image still runs.
    let image_net = "tests/golden/bn_same_small.unet";
    let w2 = init_weights(image_net, &dir);
    let mixed = dir.join("mixed");
    std::fs::create_dir_all(&mixed).unwrap();
    std::fs::copy(inputs.join("a.nii"), mixed.join("a.nii")).unwrap();
    // Its input is 32x32x3 (the spec's first line says so).
    random_array(&mixed.join("i.npy"), &[32, 32, 3], 13);
    let out2 = dir.join("out2.npy");
    let (code, _, stderr) = unetc(&[
        "run",
        image_net,
        "--weights",
        s(&w2),
        "--input",
        s(&mixed),
        "-o",
        s(&out2),
        "--device",
        "cpu",
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("a.nii") && stderr.contains("this model takes images"),
        "{stderr}"
    );
    assert!(out2.join("i.npy").exists(), "{stderr}");
    assert!(!out2.join("a.nii").exists());
}

/// `tiles --image` also takes labelled sizes, in any order, the same form for images and
/// volumes: the plan equals the one for the unlabelled order (W x H, D x H x W); a missing,
/// repeated or foreign axis is an error naming it.
#[test]
fn tiles_image_takes_labelled_sizes() {
    let json = |spec: &str, image: &str| {
        let (code, out, stderr) = unetc(&[
            "tiles", spec, "--image", image, "--memory", "2GiB", "--format", "json",
        ]);
        assert_eq!(code, 0, "{image}: {stderr}");
        serde_json::from_str::<serde_json::Value>(&out).unwrap()
    };
    let image = "specs/original.unet";
    let plain = json(image, "2048x1536");
    assert_eq!(plain["image"]["height"], 1536);
    for labelled in ["H=1536,W=2048", "w=2048,h=1536"] {
        assert_eq!(json(image, labelled), plain, "{labelled}");
    }
    let plain = json(SAME, "17x22x25");
    assert_eq!(plain["volume"]["depth"], 17);
    for labelled in ["D=17,H=22,W=25", "W=25,d=17,H=22"] {
        assert_eq!(json(SAME, labelled), plain, "{labelled}");
    }
    for (spec, arg, want) in [
        (SAME, "H=22,W=25", "no size for D"),
        (image, "D=3,H=22,W=25", "axis `D`"),
        (image, "H=2,H=3,W=4", "axis H given twice"),
        (image, "H=2,W=x", "W=x: not a whole number"),
    ] {
        let (code, _, stderr) = unetc(&["tiles", spec, "--image", arg]);
        assert_eq!(code, 2, "{arg}: {stderr}");
        assert!(stderr.contains(want), "{arg}: {stderr}");
    }
}
