//! Streamed `run`: float32 `.npy` through a memory map and TIFF/BigTIFF a chunk at a time in,
//! `.npy` (memory-mapped) and tiled float32 BigTIFF out, tile by tile. Outputs equal the
//! whole-image in-memory run, refusals are clear and leave nothing behind, peak memory does not
//! grow with the image, and Ctrl-C leaves no file.
//!
//! TIFF inputs are written by the `tiff` crate's encoder or by tifffile
//! (tests/fixtures/stream/generate.py); TIFF outputs are read back by the `tiff` crate's decoder,
//! not by unetc. The whole-image references are `<f8` arrays, which `run` reads in memory.

mod common;

use common::root;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use unetc::io::npy::read_npy;

fn unetc(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_unetc"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("unetc runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("unetc-stream-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Same padding, one pooling level, a skip connection: reach 4 (two 3x3 convs at full
/// resolution, one at half), two softmax channels.
const TINY: &str = r#"model "tiny" {
  input 32x32x1
  defaults conv2d(kernel_size: 3, padding: same)
  skip = conv2d(4, activation: relu)
  max_pooling2d(2)
  conv2d(8, activation: relu)
  up = up_sampling2d(2)
  [up, skip] -> concatenate()
  conv2d(4, activation: relu)
  conv2d(2, 1, activation: softmax)
}
"#;

/// One 3x3 convolution: cheap enough for a 4096x4096 image in a debug build.
const ONE: &str = r#"model "one" {
  input 32x32x1
  conv2d(1, 3, padding: same, activation: sigmoid)
}
"#;

const ONE_RGB: &str = r#"model "one_rgb" {
  input 32x32x3
  conv2d(2, 3, padding: same, activation: sigmoid)
}
"#;

/// `unetc run SPEC --weights W --input IN --output OUT EXTRA...`.
fn run_model(
    spec: &Path,
    weights: &Path,
    input: &Path,
    output: &Path,
    extra: &[&str],
) -> (i32, String, String) {
    let mut args = vec![
        "run",
        s(spec),
        "--weights",
        s(weights),
        "--input",
        s(input),
        "--output",
        s(output),
    ];
    args.extend_from_slice(extra);
    unetc(&args)
}

/// Writes a spec and seeded weights for it; returns (spec, weights).
fn model(dir: &Path, name: &str, text: &str) -> (PathBuf, PathBuf) {
    let spec = dir.join(format!("{name}.unet"));
    std::fs::write(&spec, text).unwrap();
    let weights = dir.join(format!("{name}.safetensors"));
    let (code, _, err) = unetc(&["init-weights", s(&spec), "-o", s(&weights)]);
    assert_eq!(code, 0, "{err}");
    (spec, weights)
}

/// A `.npy` of `shape` and dtype `descr` (`<f4` or `<f8`), written by hand from `values`.
fn write_npy(path: &Path, descr: &str, shape: &[usize], values: impl Iterator<Item = f64>) {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let dict = format!(
        "{{'descr': '{descr}', 'fortran_order': False, 'shape': ({},), }}",
        dims.join(", ")
    );
    let total = (10 + dict.len() + 1).next_multiple_of(64);
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    out.write_all(b"\x93NUMPY\x01\x00").unwrap();
    out.write_all(&((total - 10) as u16).to_le_bytes()).unwrap();
    out.write_all(dict.as_bytes()).unwrap();
    out.write_all(&vec![b' '; total - 11 - dict.len()]).unwrap();
    out.write_all(b"\n").unwrap();
    for v in values {
        match descr {
            "<f4" => out.write_all(&(v as f32).to_le_bytes()).unwrap(),
            _ => out.write_all(&v.to_le_bytes()).unwrap(),
        }
    }
}

/// A test image's value at (y, x): smooth plus a little high-frequency detail, in [0, 1],
/// exactly representable in f32.
fn pattern(y: usize, x: usize) -> f64 {
    let v = 0.5
        + 0.3 * ((y as f64) * 0.07).sin() * ((x as f64) * 0.05).cos()
        + 0.15 * (((y * 7 + x * 3) % 11) as f64 / 11.0);
    v as f32 as f64
}

/// A TIFF's first image decoded whole by the `tiff` crate: (width, height, samples as f32).
fn read_tiff_f32(path: &Path) -> (u32, u32, Vec<f32>) {
    let mut d = tiff::decoder::Decoder::new(std::fs::File::open(path).unwrap()).unwrap();
    let (w, h) = d.dimensions().unwrap();
    match d.read_image().unwrap() {
        tiff::decoder::DecodingResult::F32(v) => (w, h, v),
        _ => panic!("{} is not float32", path.display()),
    }
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// No file but `keep` in `dir`: no output, no temporary file.
fn only(dir: &Path, keep: &[&Path]) {
    let mut left: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !keep.contains(&p.as_path()))
        .collect();
    left.sort();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn streamed_npy_and_tiff_equal_the_whole_image_run() {
    let dir = temp_dir("equal");
    let (spec, weights) = model(&dir, "tiny", TINY);
    let (h, w) = (300, 517);
    let values = || (0..h * w).map(|i| pattern(i / w, i % w));
    let f4 = dir.join("a.npy");
    write_npy(&f4, "<f4", &[h, w, 1], values());
    // The reference: the same values as <f8, read in memory and run as one image.
    let f8 = dir.join("a_f8.npy");
    write_npy(&f8, "<f8", &[h, w, 1], values());
    let reference = dir.join("ref.npy");
    let (code, _, err) = unetc(&[
        "run",
        s(&spec),
        "--weights",
        s(&weights),
        "--input",
        s(&f8),
        "--output",
        s(&reference),
        "--verbose",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        !err.contains("memory-mapped") && err.contains("1 forward pass"),
        "{err}"
    );
    let reference = read_npy(&reference).unwrap();
    assert_eq!(reference.shape, vec![1, h, w, 2]);

    // Memory-mapped in, tiles of a 1 MiB budget, .npy and .tif out.
    for out in ["s.npy", "s.tif"] {
        let out = dir.join(out);
        let (code, _, err) = unetc(&[
            "run",
            s(&spec),
            "--weights",
            s(&weights),
            "--input",
            s(&f4),
            "--output",
            s(&out),
            "--memory",
            "1MiB",
            "--verbose",
        ]);
        assert_eq!(code, 0, "{err}");
        assert!(err.contains("memory-mapped"), "{err}");
        assert!(err.contains("covered by 5 x 3 tiles"), "{err}");
        let got = if out.extension().unwrap() == "npy" {
            let t = read_npy(&out).unwrap();
            assert_eq!(t.shape, vec![1, h, w, 2]);
            t.data
        } else {
            let (tw, th, v) = read_tiff_f32(&out);
            assert_eq!((tw as usize, th as usize), (w, h));
            v
        };
        let d = max_diff(&got, &reference.data);
        assert!(
            d <= 1e-6,
            "{}: differs from the whole run by {d}",
            out.display()
        );
    }

    // TIFF inputs from the `tiff` crate's encoder: 8-bit strips, 16-bit deflate BigTIFF,
    // float32 LZW. References: the decoded values (x / 255, x / 65535, x) as <f8.
    use tiff::encoder::{colortype, compression::DeflateLevel, Compression, TiffEncoder};
    let u8s: Vec<u8> = values().map(|v| (v * 255.0).round() as u8).collect();
    let u16s: Vec<u16> = values().map(|v| (v * 65535.0).round() as u16).collect();
    let f32s: Vec<f32> = values().map(|v| v as f32).collect();
    let cases: Vec<(&str, Vec<f64>)> = vec![
        (
            "u8.tif",
            u8s.iter().map(|&v| (f32::from(v) / 255.0) as f64).collect(),
        ),
        (
            "u16.tif",
            u16s.iter()
                .map(|&v| (f32::from(v) / 65535.0) as f64)
                .collect(),
        ),
        ("f32.tif", f32s.iter().map(|&v| v as f64).collect()),
    ];
    {
        let f = std::fs::File::create(dir.join("u8.tif")).unwrap();
        TiffEncoder::new(f)
            .unwrap()
            .write_image::<colortype::Gray8>(w as u32, h as u32, &u8s)
            .unwrap();
        let f = std::fs::File::create(dir.join("u16.tif")).unwrap();
        TiffEncoder::new_big(f)
            .unwrap()
            .with_compression(Compression::Deflate(DeflateLevel::Fast))
            .write_image::<colortype::Gray16>(w as u32, h as u32, &u16s)
            .unwrap();
        let f = std::fs::File::create(dir.join("f32.tif")).unwrap();
        TiffEncoder::new(f)
            .unwrap()
            .with_compression(Compression::Lzw)
            .write_image::<colortype::Gray32Float>(w as u32, h as u32, &f32s)
            .unwrap();
    }
    for (name, decoded) in cases {
        let input = dir.join(name);
        let r8 = dir.join(format!("{name}.f8.npy"));
        write_npy(&r8, "<f8", &[h, w, 1], decoded.into_iter());
        let (rout, sout) = (
            dir.join(format!("{name}.ref.npy")),
            dir.join(format!("{name}.npy")),
        );
        let (code, _, err) = unetc(&[
            "run",
            s(&spec),
            "--weights",
            s(&weights),
            "--input",
            s(&r8),
            "--output",
            s(&rout),
        ]);
        assert_eq!(code, 0, "{err}");
        let (code, _, err) = unetc(&[
            "run",
            s(&spec),
            "--weights",
            s(&weights),
            "--input",
            s(&input),
            "--output",
            s(&sout),
            "--memory",
            "1MiB",
            "--verbose",
        ]);
        assert_eq!(code, 0, "{name}: {err}");
        assert!(
            err.contains("read from the TIFF a chunk at a time"),
            "{err}"
        );
        let d = max_diff(
            &read_npy(&sout).unwrap().data,
            &read_npy(&rout).unwrap().data,
        );
        assert!(d <= 1e-6, "{name}: differs from the whole run by {d}");
    }
}

#[test]
fn tiled_tiff_fixtures_from_tifffile() {
    let dir = temp_dir("tifffile");
    let fixtures = root().join("tests/fixtures/stream");
    let (h, w) = (100, 90);
    // Gray uint16, tiles 48x32 (W x H), zlib, BigTIFF: (y * 251 + x * 13) % 65536.
    let (spec, weights) = model(&dir, "tiny", TINY);
    let r8 = dir.join("gray.f8.npy");
    let gray = (0..h * w).map(|i| {
        let (y, x) = (i / w, i % w);
        (f32::from(((y * 251 + x * 13) % 65536) as u16) / 65535.0) as f64
    });
    write_npy(&r8, "<f8", &[h, w, 1], gray);
    let (rout, sout) = (dir.join("gray.ref.npy"), dir.join("gray.tif"));
    let (code, _, err) = unetc(&[
        "run",
        s(&spec),
        "--weights",
        s(&weights),
        "--input",
        s(&r8),
        "--output",
        s(&rout),
    ]);
    assert_eq!(code, 0, "{err}");
    let input = fixtures.join("tiled_u16_zlib.tif");
    let (code, _, err) = unetc(&[
        "run",
        s(&spec),
        "--weights",
        s(&weights),
        "--input",
        s(&input),
        "--output",
        s(&sout),
        "--tile",
        "40",
        "--verbose",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("read from the TIFF a chunk at a time"),
        "{err}"
    );
    assert!(err.contains("tiles of 40x40"), "{err}");
    let (_, _, got) = read_tiff_f32(&sout);
    let d = max_diff(&got, &read_npy(&rout).unwrap().data);
    assert!(
        d <= 1e-6,
        "tiled uint16 TIFF: differs from the whole run by {d}"
    );

    // RGBA uint8 tiles 16x16 on an RGB model: refused unless --alpha drop, then equal to the
    // RGB values ((y*3 + x) % 256, x*7 % 256, y*5 % 256) / 255 run whole.
    let (spec, weights) = model(&dir, "rgb", ONE_RGB);
    let input = fixtures.join("tiled_rgba_u8.tif");
    let out = dir.join("rgba.npy");
    let args = [
        "run",
        s(&spec),
        "--weights",
        s(&weights),
        "--input",
        s(&input),
        "--output",
        s(&out),
        "--tile",
        "48",
    ];
    let (code, _, err) = unetc(&args);
    assert_eq!(code, 2);
    assert!(err.contains("--alpha drop"), "{err}");
    assert!(!out.exists());
    let mut with_drop = args.to_vec();
    with_drop.extend(["--alpha", "drop"]);
    let (code, _, err) = unetc(&with_drop);
    assert_eq!(code, 0, "{err}");
    let r8 = dir.join("rgb.f8.npy");
    let rgb = (0..h * w).flat_map(|i| {
        let (y, x) = (i / w, i % w);
        [(y * 3 + x) % 256, (x * 7) % 256, (y * 5) % 256]
            .map(|v| (f32::from(v as u8) / 255.0) as f64)
    });
    write_npy(&r8, "<f8", &[h, w, 3], rgb);
    let rout = dir.join("rgb.ref.npy");
    let (code, _, err) = unetc(&[
        "run",
        s(&spec),
        "--weights",
        s(&weights),
        "--input",
        s(&r8),
        "--output",
        s(&rout),
    ]);
    assert_eq!(code, 0, "{err}");
    let d = max_diff(
        &read_npy(&out).unwrap().data,
        &read_npy(&rout).unwrap().data,
    );
    assert!(d <= 1e-6, "RGBA TIFF with alpha dropped: differs by {d}");
}

#[test]
fn channels_in_planes_or_pages_read_as_interleaved_ones() {
    // tifffile's planar RGB (strips; tiles crossing the edges, zlib), an OME-TIFF with two
    // uint16 channels as pages and an ImageJ hyperstack of three channel pages
    // (tests/fixtures/stream/generate.py): each runs as its interleaved values from a .npy do.
    let dir = temp_dir("bands");
    let fixtures = root().join("tests/fixtures/stream");
    let (h, w) = (100, 90);
    let rgb = |y: usize, x: usize| [(y * 3 + x) % 256, (x * 7) % 256, (y * 5) % 256];
    let fluo = |y: usize, x: usize| [(y * 251 + x * 13) % 65536, (x * 509 + y * 7) % 65536];
    let (rgb_spec, rgb_weights) = model(&dir, "rgb", ONE_RGB);
    let two = ONE_RGB.replace("32x32x3", "32x32x2");
    let (two_spec, two_weights) = model(&dir, "two", &two);
    let reference = |name: &str, spec: &Path, weights: &Path, values: Vec<f64>, c: usize| {
        let input = dir.join(format!("{name}.f8.npy"));
        write_npy(&input, "<f8", &[h, w, c], values.into_iter());
        let out = dir.join(format!("{name}.ref.npy"));
        let (code, _, err) = run_model(spec, weights, &input, &out, &[]);
        assert_eq!(code, 0, "{err}");
        read_npy(&out).unwrap().data
    };
    let rgb_values = (0..h * w)
        .flat_map(|i| rgb(i / w, i % w).map(|v| (f32::from(v as u8) / 255.0) as f64))
        .collect();
    let fluo_values = (0..h * w)
        .flat_map(|i| fluo(i / w, i % w).map(|v| (f32::from(v as u16) / 65535.0) as f64))
        .collect();
    let rgb_ref = reference("rgb", &rgb_spec, &rgb_weights, rgb_values, 3);
    let fluo_ref = reference("fluo", &two_spec, &two_weights, fluo_values, 2);
    for (file, spec, weights, want, layout) in [
        (
            "planar_rgb_u8.tif",
            &rgb_spec,
            &rgb_weights,
            &rgb_ref,
            "3 channel(s)",
        ),
        (
            "planar_tiled_rgb_u8.tif",
            &rgb_spec,
            &rgb_weights,
            &rgb_ref,
            "3 channel(s)",
        ),
        (
            "ome_channels_u16.ome.tif",
            &two_spec,
            &two_weights,
            &fluo_ref,
            "2 channel(s)",
        ),
        (
            "imagej_channels_u8.tif",
            &rgb_spec,
            &rgb_weights,
            &rgb_ref,
            "3 channel(s)",
        ),
    ] {
        let out = dir.join(format!("{file}.npy"));
        let (code, _, err) = run_model(
            spec,
            weights,
            &fixtures.join(file),
            &out,
            &["--tile", "40", "--verbose"],
        );
        assert_eq!(code, 0, "{file}: {err}");
        assert!(
            err.contains(&format!("{layout}, read from the TIFF a chunk at a time")),
            "{file}: {err}"
        );
        let d = max_diff(&read_npy(&out).unwrap().data, want);
        assert!(d <= 1e-6, "{file}: differs from the interleaved run by {d}");
    }
    // The OME-TIFF's two channels on the RGB model: named for what they are.
    let (code, _, err) = run_model(
        &rgb_spec,
        &rgb_weights,
        &fixtures.join("ome_channels_u16.ome.tif"),
        &dir.join("wrong.npy"),
        &[],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("is a multichannel image: 2 channel(s) but the model takes 3"),
        "{err}"
    );
    assert!(
        err.contains("3 channels (an OME-TIFF of 3 channel pages, or a .npy)"),
        "{err}"
    );
}

#[test]
fn the_whole_image_reader_takes_them_too() {
    // `run` on a directory and `train` on folders read each image whole
    // (io::read_image_with_layout), where the image crate reads neither channels in planes or
    // pages nor float samples: those TIFFs come through the streaming reader, with the values
    // the chunked run reads (the stored integers / full scale; floats as stored).
    let fixtures = root().join("tests/fixtures/stream");
    let (h, w) = (100, 90);
    let rgb = |y: usize, x: usize| [(y * 3 + x) % 256, (x * 7) % 256, (y * 5) % 256];
    let fluo = |y: usize, x: usize| [(y * 251 + x * 13) % 65536, (x * 509 + y * 7) % 65536];
    for (file, c, full) in [
        ("planar_rgb_u8.tif", 3, 255.0f32),
        ("planar_tiled_rgb_u8.tif", 3, 255.0),
        ("ome_channels_u16.ome.tif", 2, 65535.0),
        ("imagej_channels_u8.tif", 3, 255.0),
    ] {
        let (t, layout) = unetc::io::read_image_with_layout(&fixtures.join(file))
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(t.shape, vec![1, h, w, c], "{file}");
        assert_eq!(layout.channels(), c, "{file}");
        for (i, pixel) in t.data.chunks(c).enumerate() {
            let (y, x) = (i / w, i % w);
            let stored: Vec<usize> = if c == 2 {
                fluo(y, x).to_vec()
            } else {
                rgb(y, x).to_vec()
            };
            for (k, (&got, &v)) in pixel.iter().zip(&stored).enumerate() {
                assert_eq!(got, v as f32 / full, "{file}: ({y}, {x}) channel {k}");
            }
        }
    }
    // A float32 TIFF: values as stored; as a mask it is refused.
    let dir = temp_dir("whole_reader");
    let float_tif = dir.join("f32.tif");
    let values: Vec<f32> = (0..6 * 5).map(|i| i as f32 * 0.25 - 3.0).collect();
    {
        use tiff::encoder::{colortype, TiffEncoder};
        let f = std::fs::File::create(&float_tif).unwrap();
        TiffEncoder::new(f)
            .unwrap()
            .write_image::<colortype::Gray32Float>(5, 6, &values)
            .unwrap();
    }
    let (t, _) = unetc::io::read_image_with_layout(&float_tif).unwrap();
    assert_eq!((t.shape, t.data), (vec![1, 6, 5, 1], values));
    let err = unetc::io::read_mask(&float_tif).unwrap_err().to_string();
    assert!(
        err.contains("stores floating-point samples; a mask is one gray channel"),
        "{err}"
    );
    // The OME z-stack stays refused (one page would be read alone).
    let err = unetc::io::read_image(&fixtures.join("ome_zstack_u8.ome.tif"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("1 channel(s) x 3 z/time plane(s)"), "{err}");
    // A directory of them runs, each file as the single-file run computes it.
    let inputs = dir.join("in");
    std::fs::create_dir_all(&inputs).unwrap();
    for file in ["planar_rgb_u8.tif", "imagej_channels_u8.tif"] {
        std::fs::copy(fixtures.join(file), inputs.join(file)).unwrap();
    }
    let (spec, weights) = model(&dir, "rgb", ONE_RGB);
    // A directory whose name ends in .npy gets one .npy per input.
    let outs = dir.join("out.npy");
    let (code, _, err) = run_model(&spec, &weights, &inputs, &outs, &[]);
    assert_eq!(code, 0, "{err}");
    let single = dir.join("single.npy");
    let (code, _, err) = run_model(
        &spec,
        &weights,
        &fixtures.join("planar_rgb_u8.tif"),
        &single,
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let from_dir = read_npy(&outs.join("planar_rgb_u8.npy")).unwrap().data;
    let d = max_diff(&from_dir, &read_npy(&single).unwrap().data);
    assert!(
        d <= 1e-6,
        "directory run differs from the single-file run by {d}"
    );
}

#[test]
fn refusals_are_clear_and_leave_no_file() {
    let dir = temp_dir("refuse");
    let (spec, weights) = model(&dir, "tiny", TINY);
    let (h, w) = (64, 80);
    let good = dir.join("good.npy");
    write_npy(
        &good,
        "<f4",
        &[h, w, 1],
        (0..h * w).map(|i| pattern(i / w, i % w)),
    );
    let out = dir.join("out.tif");
    let run = |input: &Path, extra: &[&str]| {
        let mut args = vec![
            "run",
            s(&spec),
            "--weights",
            s(&weights),
            "--input",
            s(input),
            "--output",
            s(&out),
        ];
        args.extend_from_slice(extra);
        unetc(&args)
    };
    // NaN in a .npy: counted before any work, as the in-memory reader does.
    let nan = dir.join("nan.npy");
    write_npy(
        &nan,
        "<f4",
        &[h, w, 1],
        (0..h * w).map(|i| {
            if i == 50 * w + 70 || i == 60 * w {
                f64::NAN
            } else {
                0.5
            }
        }),
    );
    let (code, _, err) = run(&nan, &["--tile", "40"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("2 of 5120 values are NaN or infinite (the first, at index [0, 50, 70, 0]"),
        "{err}"
    );
    // NaN deep inside a float TIFF: found when its tile is read, after earlier tiles were
    // written; the partial output is removed.
    let nan_tif = dir.join("nan.tif");
    {
        use tiff::encoder::{colortype, TiffEncoder};
        let mut px = vec![0.5f32; h * w];
        px[50 * w + 70] = f32::NAN;
        let f = std::fs::File::create(&nan_tif).unwrap();
        TiffEncoder::new(f)
            .unwrap()
            .write_image::<colortype::Gray32Float>(w as u32, h as u32, &px)
            .unwrap();
    }
    let (code, _, err) = run(&nan_tif, &["--tile", "40", "--verbose"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("holds NaN at index [0, 50, 70, 0]"), "{err}");
    // A truncated array: refused from its header before anything is mapped.
    let bytes = std::fs::read(&good).unwrap();
    let short = dir.join("short.npy");
    std::fs::write(&short, &bytes[..bytes.len() - 4]).unwrap();
    let (code, _, err) = run(&short, &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("truncated"), "{err}");
    // An RGB TIFF on a one-channel model, and a z-stack said so by OME-XML: the reader says
    // why; 64-bit float TIFF: also refused.
    let planar = root().join("tests/fixtures/stream/planar_rgb_u8.tif");
    let (code, _, err) = run(&planar, &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("is an RGB image: 3 channel(s) but the model takes 1"),
        "{err}"
    );
    let zstack = root().join("tests/fixtures/stream/ome_zstack_u8.ome.tif");
    let (code, _, err) = run(&zstack, &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("has 3 full-size pages of 90x100 (W x H), and its OME-XML says 1 channel(s) x 3 z/time plane(s)"),
        "{err}"
    );
    assert!(!out.exists());
    let f64_tif = dir.join("f64.tif");
    {
        use tiff::encoder::{colortype, TiffEncoder};
        let f = std::fs::File::create(&f64_tif).unwrap();
        TiffEncoder::new(f)
            .unwrap()
            .write_image::<colortype::Gray64Float>(8, 8, &[0.5; 64])
            .unwrap();
    }
    let (code, _, err) = run(&f64_tif, &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("64-bit floating-point samples"), "{err}");
    only(
        &dir,
        &[&spec, &weights, &good, &nan, &nan_tif, &short, &f64_tif],
    );
    // An existing output is kept without --force.
    std::fs::write(&out, b"keep").unwrap();
    let (code, _, err) = run(&good, &[]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(std::fs::read(&out).unwrap(), b"keep");
}

/// Runs unetc with `args` and `--verbose`, returning its exit code and peak resident set in
/// KiB as it reports it (VmHWM of its own address space: wait4's ru_maxrss would also count the
/// test process's memory, which a spawned child inherits until exec).
fn run_measured(args: &[&str]) -> (i32, u64) {
    let mut args = args.to_vec();
    args.push("--verbose");
    let (code, _, err) = unetc(&args);
    let peak = err
        .lines()
        .find_map(|l| l.strip_prefix("peak RSS "))
        .and_then(|l| l.strip_suffix(" bytes (VmHWM)"))
        .and_then(|b| b.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no peak RSS in:\n{err}"));
    (code, peak / 1024)
}

/// A 4096x4096 float32 image (64 MiB in, 64 MiB out) with a 2 MiB budget: the peak RSS stays
/// within a bound computed from the tile plan, far below the image, and sampled output pixels
/// (at tile seams too) equal the convolution computed here from the weights.
#[test]
#[cfg(target_os = "linux")]
fn peak_memory_is_bounded_by_the_tile_plan() {
    let dir = temp_dir("rss");
    // 128 MiB of files: removed however the test ends.
    struct Remove(PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Remove(dir.clone());
    let (spec, weights) = model(&dir, "one", ONE);
    let n = 4096;
    let big = dir.join("big.npy");
    write_npy(
        &big,
        "<f4",
        &[n, n, 1],
        (0..n * n).map(|i| pattern(i / n, i % n)),
    );
    let small = dir.join("small.npy");
    write_npy(
        &small,
        "<f4",
        &[64, 64, 1],
        (0..64 * 64).map(|i| pattern(i / 64, i % 64)),
    );
    let out = dir.join("big_out.npy");
    let small_out = dir.join("small_out.npy");
    // The process alone: the same command on an image of 64x64.
    let (code, baseline) = run_measured(&[
        "run",
        s(&spec),
        "--weights",
        s(&weights),
        "--input",
        s(&small),
        "--output",
        s(&small_out),
        "--memory",
        "2MiB",
    ]);
    assert_eq!(code, 0);
    let (code, peak) = run_measured(&[
        "run",
        s(&spec),
        "--weights",
        s(&weights),
        "--input",
        s(&big),
        "--output",
        s(&out),
        "--memory",
        "2MiB",
    ]);
    assert_eq!(code, 0);
    // The plan: tiles of T x T (`tiles` says), arena within the 2 MiB budget.
    let (code, text, err) = unetc(&[
        "tiles",
        s(&spec),
        "--image",
        "4096x4096",
        "--memory",
        "2MiB",
    ]);
    assert_eq!(code, 0, "{err}");
    let tile: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("tile: "))
        .and_then(|l| l.split('x').next())
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or_else(|| panic!("no tile size in:\n{text}"));
    let kib = 1024u64;
    // One f32 channel.
    let tile_buffer = tile * tile * 4 / kib;
    // Bound: the process alone + the arena (budget) + 5 tile buffers (the pipeline holds at
    // most two batches of input tiles and two of outputs, plus the rectangle being read) + 4
    // more that the reader and writer threads' malloc arenas may keep after freeing them + the
    // mapped input rows of one tile (the kernel maps up to 64 KiB around each read fault; a row
    // here is 16 KiB, so whole rows) + the output pages written by one tile (its rows, 2 pages
    // each at most) + 8 MiB for the allocator's other slack (measured: 42 MiB peak here).
    let row = (n as u64 * 4).min(64 * kib + 4 * kib) / kib;
    let bound = baseline + 2 * kib + 9 * tile_buffer + tile * row + tile * 8 + 8 * kib;
    let image = (n * n * 4) as u64 / kib;
    eprintln!(
        "peak RSS {peak} KiB (baseline {baseline} KiB, tile {tile}, bound {bound} KiB, image \
         {image} KiB in and out)"
    );
    assert!(peak <= bound, "peak RSS {peak} KiB > bound {bound} KiB");
    assert!(
        bound < image,
        "the bound {bound} KiB is not below the image's {image} KiB"
    );

    // Sampled outputs against sigmoid(b + sum k[dy][dx] * x[y+dy-1][x+dx-1]), zero padding,
    // with the kernel and bias read from the weights file by the safetensors crate.
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
    assert_eq!((kernel.len(), bias.len()), (9, 1));
    let got = read_npy(&out).unwrap();
    assert_eq!(got.shape, vec![1, n, n, 1]);
    let at = |y: isize, x: isize| {
        if y < 0 || x < 0 || y >= n as isize || x >= n as isize {
            0.0
        } else {
            pattern(y as usize, x as usize)
        }
    };
    let seams: Vec<usize> = (0..n)
        .step_by(tile as usize - 2)
        .flat_map(|s| [s, s + 1])
        .collect();
    let mut worst = 0.0f64;
    for &y in seams.iter().chain([n - 1, n / 2].iter()) {
        for &x in seams.iter().chain([0, n - 1].iter()) {
            let (y, x) = (y.min(n - 1), x.min(n - 1));
            let mut z = bias[0];
            for dy in 0..3 {
                for dx in 0..3 {
                    z += kernel[dy * 3 + dx]
                        * at(y as isize + dy as isize - 1, x as isize + dx as isize - 1);
                }
            }
            let want = 1.0 / (1.0 + (-z).exp());
            worst = worst.max((got.data[y * n + x] as f64 - want).abs());
        }
    }
    assert!(
        worst < 1e-6,
        "sampled outputs differ from the hand convolution by {worst}"
    );
}

/// Ctrl-C during a streamed run: exit 130, no output, no temporary file.
#[test]
#[cfg(target_os = "linux")]
fn ctrl_c_leaves_no_file() {
    let dir = temp_dir("sigint");
    let (spec, weights) = model(&dir, "tiny", TINY);
    let n = 1024;
    let input = dir.join("in.npy");
    write_npy(
        &input,
        "<f4",
        &[n, n, 1],
        (0..n * n).map(|i| pattern(i / n, i % n)),
    );
    let out = dir.join("out.npy");
    let mut child = Command::new(env!("CARGO_BIN_EXE_unetc"))
        .args([
            "run",
            s(&spec),
            "--weights",
            s(&weights),
            "--input",
            s(&input),
            "--output",
            s(&out),
            "--memory",
            "1MiB",
        ])
        .current_dir(root())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the temporary output exists, then interrupt.
    let started = std::time::Instant::now();
    let temp_exists = || {
        std::fs::read_dir(&dir).unwrap().any(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(".out.npy")
        })
    };
    while !temp_exists() {
        assert!(
            started.elapsed().as_secs() < 120,
            "no temporary output appeared"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "unetc ended before it was interrupted"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{status:?}");
    only(&dir, &[&spec, &weights, &input]);
}

/// Damaged TIFFs (seeded byte mutations of the fixtures and of a strip TIFF) and `.npy` files
/// end in an error or a decoded region, never a panic.
#[test]
fn damaged_files_never_panic() {
    use unetc::io::stream::{NpySource, RegionSource, TiffSource};
    let dir = temp_dir("damaged");
    let mut originals: Vec<Vec<u8>> = [
        "tiled_u16_zlib.tif",
        "tiled_rgba_u8.tif",
        "planar_rgb_u8.tif",
    ]
    .iter()
    .map(|f| std::fs::read(root().join("tests/fixtures/stream").join(f)).unwrap())
    .collect();
    let strips = dir.join("strips.tif");
    {
        use tiff::encoder::{colortype, TiffEncoder};
        let f = std::fs::File::create(&strips).unwrap();
        TiffEncoder::new(f)
            .unwrap()
            .write_image::<colortype::RGB8>(20, 30, &[7; 20 * 30 * 3])
            .unwrap();
    }
    originals.push(std::fs::read(&strips).unwrap());
    let npy = dir.join("a.npy");
    write_npy(&npy, "<f4", &[6, 5, 2], (0..60).map(|i| i as f64));
    let npy_bytes = std::fs::read(&npy).unwrap();
    // xorshift: reproducible without a crate.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let path = dir.join("damaged.tif");
    let mut decoded = 0;
    for round in 0..1200 {
        let mut bytes = originals[round % originals.len()].clone();
        // Headers and directories are where sizes live: mutate there most.
        for _ in 0..1 + next() % 4 {
            let span = if next() % 4 == 0 {
                bytes.len()
            } else {
                bytes.len().min(400)
            };
            let at = (next() as usize) % span;
            bytes[at] = next() as u8;
        }
        if next() % 8 == 0 {
            bytes.truncate((next() as usize) % bytes.len());
        }
        std::fs::write(&path, &bytes).unwrap();
        if let Ok(mut source) = TiffSource::open(&path, 1 << 20) {
            let [_, h, w, c] = source.shape();
            let mut out = vec![0.0; h * w * c];
            if h * w <= 1 << 16 && source.read_region(0, 0..h, 0..w, &mut out).is_ok() {
                decoded += 1;
            }
        }
    }
    // Some mutations only touch pixel data, which still decodes.
    assert!(decoded > 0);
    let path = dir.join("damaged.npy");
    for _ in 0..300 {
        let mut bytes = npy_bytes.clone();
        let at = (next() as usize) % bytes.len().min(128);
        bytes[at] = next() as u8;
        if next() % 4 == 0 {
            bytes.truncate((next() as usize) % bytes.len());
        }
        std::fs::write(&path, &bytes).unwrap();
        if let Ok(Some(mut source)) = NpySource::open(&path) {
            let [n, h, w, c] = source.shape();
            let mut out = vec![0.0; h * w * c];
            if n > 0 && h * w * c <= 1 << 16 {
                let _ = source.read_region(0, 0..h, 0..w, &mut out);
            }
        }
    }
}

/// A `|u1` `.npy` read by hand: (header text, values).
fn read_npy_u8(path: &Path) -> (String, Vec<u8>) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
    let len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = String::from_utf8(bytes[10..10 + len].to_vec()).unwrap();
    (header, bytes[10 + len..].to_vec())
}

/// `--labels`: a .tif or .npy output holds one uint8 per pixel, the argmax of the
/// probabilities (the first of equals) or, for one channel, 1 above --threshold. Checked against
/// the probability outputs of the same runs, streamed and whole; and the refusals.
#[test]
fn labels_are_the_argmax_or_threshold_of_the_probabilities() {
    let dir = temp_dir("labels");
    let (h, w) = (300, 517);
    let values = || (0..h * w).map(|i| pattern(i / w, i % w));
    let f4 = dir.join("a.npy");
    write_npy(&f4, "<f4", &[h, w, 1], values());
    let f8 = dir.join("a_f8.npy");
    write_npy(&f8, "<f8", &[h, w, 1], values());
    let run = |spec: &Path, weights: &Path, input: &Path, out: &Path, extra: &[&str]| {
        let mut args = vec!["--memory", "1MiB", "--verbose"];
        args.extend(extra);
        let (code, _, err) = run_model(spec, weights, input, out, &args);
        assert_eq!(code, 0, "{err}");
        err
    };
    let read_labels = |out: &Path| -> Vec<u8> {
        if out.extension().unwrap() == "npy" {
            let (header, v) = read_npy_u8(out);
            assert!(
                header.contains("'descr': '|u1'")
                    && header.contains(&format!("'shape': (1, {h}, {w}, 1)")),
                "{header}"
            );
            v
        } else {
            let mut d = tiff::decoder::Decoder::new(std::fs::File::open(out).unwrap()).unwrap();
            assert_eq!(d.dimensions().unwrap(), (w as u32, h as u32));
            match d.read_image().unwrap() {
                tiff::decoder::DecodingResult::U8(v) => v,
                _ => panic!("{} is not uint8", out.display()),
            }
        }
    };

    // Two softmax channels: argmax.
    let (spec, weights) = model(&dir, "tiny", TINY);
    let probs = dir.join("p.npy");
    run(&spec, &weights, &f4, &probs, &[]);
    let probs = read_npy(&probs).unwrap().data;
    let want: Vec<u8> = probs
        .chunks(2)
        .map(|p| if p[1] > p[0] { 1 } else { 0 })
        .collect();
    assert!(want.contains(&0) && want.contains(&1));
    for (input, out) in [(&f4, "l.tif"), (&f4, "l.npy"), (&f8, "whole.tif")] {
        let out = dir.join(out);
        let err = run(&spec, &weights, input, &out, &["--labels"]);
        assert_eq!(err.contains("memory-mapped"), input == &f4, "{err}");
        assert_eq!(read_labels(&out), want, "{}", out.display());
    }

    // One sigmoid channel: 1 above the threshold.
    let (spec, weights) = model(&dir, "one", ONE);
    let probs = dir.join("p1.npy");
    run(&spec, &weights, &f4, &probs, &[]);
    let probs = read_npy(&probs).unwrap().data;
    let median = {
        let mut v = probs.clone();
        v.sort_by(f32::total_cmp);
        v[v.len() / 2]
    };
    let out = dir.join("t.tif");
    let t = median.to_string();
    run(&spec, &weights, &f4, &out, &["--labels", "--threshold", &t]);
    let want: Vec<u8> = probs.iter().map(|&p| u8::from(p > median)).collect();
    assert_eq!(read_labels(&out), want);

    // Refusals: nothing written.
    let (spec, weights) = model(&dir, "tiny2", TINY);
    for (out, extra, says) in [
        (
            "r.png",
            &["--labels"][..],
            "a .png output is a mask already",
        ),
        (
            "r.tif",
            &["--labels", "--class", "1"][..],
            "give one of them",
        ),
        (
            "r.tif",
            &["--labels", "--threshold", "0.3"][..],
            "drop --threshold",
        ),
    ] {
        let out = dir.join(out);
        let mut args = vec![
            "run",
            s(&spec),
            "--weights",
            s(&weights),
            "--input",
            s(&f4),
            "--output",
            s(&out),
        ];
        args.extend(extra);
        let (code, _, err) = unetc(&args);
        assert_eq!(code, 2, "{extra:?}: {err}");
        assert!(err.contains(says), "{extra:?}: {err}");
        assert!(!out.exists());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_ome_tiff_output_carries_its_ome_xml() {
    // `-o x.ome.tif` writes the same tiled BigTIFF as `.tif`, with an OME-XML ImageDescription
    // (schema 2016-06) that names the size, the sample type and the channels; read back by the
    // `tiff` crate, the pixels equal the `.npy` output. A plain `.tif` has no description.
    let dir = temp_dir("ome_tiff");
    let (spec, weights) = model(&dir, "one_rgb", ONE_RGB);
    let (h, w) = (300usize, 270usize);
    let input = dir.join("in.npy");
    write_npy(
        &input,
        "<f4",
        &[1, h, w, 3],
        (0..h * w * 3).map(|i| pattern(i / (w * 3), (i / 3) % w + i % 3)),
    );
    let run = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "run",
            s(&spec),
            "--weights",
            s(&weights),
            "--input",
            s(&input),
            "-o",
            s(out),
        ];
        args.extend_from_slice(extra);
        let (code, _, err) = unetc(&args);
        assert_eq!(code, 0, "{err}");
    };
    let (npy, ome, plain, labels) = (
        dir.join("out.npy"),
        dir.join("out.ome.tif"),
        dir.join("out.tif"),
        dir.join("labels.OME.TIFF"),
    );
    run(&npy, &[]);
    run(&ome, &[]);
    run(&plain, &[]);
    run(&labels, &["--labels"]);
    let description = |path: &Path| {
        let mut d = tiff::decoder::Decoder::new(std::fs::File::open(path).unwrap()).unwrap();
        d.get_tag_ascii_string(tiff::tags::Tag::ImageDescription)
            .ok()
    };
    let xml = description(&ome).expect("an ImageDescription");
    for part in [
        "<OME xmlns=\"http://www.openmicroscopy.org/Schemas/OME/2016-06\"",
        "Name=\"out.ome.tif\"",
        "DimensionOrder=\"XYCZT\" Type=\"float\" SizeX=\"270\" SizeY=\"300\" SizeC=\"2\"",
        "<Channel ID=\"Channel:0:0\" SamplesPerPixel=\"2\"/>",
        "<TiffData IFD=\"0\" PlaneCount=\"1\"/>",
    ] {
        assert!(xml.contains(part), "{part} not in {xml}");
    }
    let xml = description(&labels).expect("an ImageDescription");
    assert!(
        xml.contains("Type=\"uint8\" SizeX=\"270\" SizeY=\"300\" SizeC=\"1\""),
        "{xml}"
    );
    assert_eq!(description(&plain), None);
    let want = read_npy(&npy).unwrap();
    for tif in [&ome, &plain] {
        let (tw, th, got) = read_tiff_f32(tif);
        assert_eq!((tw as usize, th as usize), (w, h));
        assert_eq!(max_diff(&got, &want.data), 0.0, "{}", tif.display());
    }
}
