//! NIfTI-1 volumes in and out (issue 14 part 2). Fixtures and their expected arrays are written
//! by nibabel (tests/nifti/generate.py): nibabel's scaled data in unetc's (D, H, W, C) order. The
//! output's header and data are read back by nibabel (pip install nibabel; .ci/run installs it).

mod common;

use common::*;
use std::process::Command;
use unetc::io::nifti::read_nifti;
use unetc::io::npy::read_npy;

use common::{fresh_temp_dir as temp_dir, path_str as s, unetc_cli as unetc};

const SAME: &str = "tests/fixtures/volume_same.unet";

#[test]
fn reads_what_nibabel_writes() {
    for (file, channels) in [
        ("u8.nii", 1),
        ("i16_2ch.nii.gz", 2),
        ("i32.nii", 1),
        ("f32.nii.gz", 1),
        ("f64_be.nii", 1),
    ] {
        let (got, _) = read_nifti(&root().join("tests/nifti").join(file)).unwrap();
        let stem = file.split('.').next().unwrap();
        let want = read_npy(&root().join(format!("tests/nifti/{stem}.expected.npy"))).unwrap();
        // nibabel's (i, j, k) = (11, 10, 9) is unetc's (D, H, W) = (9, 10, 11).
        assert_eq!(got.shape, vec![1, 9, 10, 11, channels], "{file}");
        assert_eq!(&got.shape[1..], &want.shape[..], "{file}");
        let err = got
            .data
            .iter()
            .zip(&want.data)
            .map(|(a, b)| (a - b).abs() / b.abs().max(1.0))
            .fold(0.0f32, f32::max);
        assert!(err <= 1e-6, "{file}: relative error {err}");
    }
}

/// `run` on a NIfTI volume writes NIfTI: nibabel reads back the input's affine (sform and
/// qform), spacing, 2 channels in dim[4], and the same values as the .npy output of the same run.
#[test]
fn run_writes_nifti_with_the_inputs_affine() {
    let dir = temp_dir("run");
    let weights = dir.join("w.safetensors");
    let (code, _, stderr) = unetc(&["init-weights", SAME, "-o", s(&weights), "--seed", "2"]);
    assert_eq!(code, 0, "{stderr}");
    let input = root().join("tests/nifti/f32.nii.gz");
    let outputs = [dir.join("y.nii.gz"), dir.join("y.nii"), dir.join("y.npy")];
    for out in &outputs {
        let (code, _, stderr) = unetc(&[
            "run",
            SAME,
            "--weights",
            s(&weights),
            "--input",
            s(&input),
            "-o",
            s(out),
            "--tile",
            "16",
            "--verbose",
        ]);
        assert_eq!(code, 0, "{stderr}");
        assert!(stderr.contains("NIfTI volume 9x10x11"), "{stderr}");
    }
    let check = format!(
        r#"
import nibabel as nib, numpy as np
src = nib.load({input:?})
want = np.load({npy:?})[0]
for path in ({gz:?}, {nii:?}):
    out = nib.load(path)
    assert out.shape == (11, 10, 9, 2), out.shape
    assert np.allclose(out.affine, src.affine, atol=1e-6), (out.affine, src.affine)
    assert np.allclose(out.header.get_sform(), src.header.get_sform(), atol=1e-6)
    assert np.allclose(out.header.get_qform(), src.header.get_qform(), atol=1e-6)
    assert out.header["sform_code"] == 2 and out.header["qform_code"] == 1
    assert np.allclose(out.header.get_zooms()[:3], src.header.get_zooms()[:3])
    got = np.transpose(np.asarray(out.dataobj, dtype=np.float32), (2, 1, 0, 3))
    assert got.shape == want.shape, (got.shape, want.shape)
    err = float(np.abs(got - want).max())
    assert err == 0.0, err
print("ok")
"#,
        input = s(&input),
        npy = s(&outputs[2]),
        gz = s(&outputs[0]),
        nii = s(&outputs[1]),
    );
    let out = Command::new("python3")
        .args(["-c", &check])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("ok"),
        "nibabel check failed (pip install nibabel):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Headers are untrusted: each broken field is an error naming it, nothing is allocated from a
/// size the file does not hold, and `run` leaves no output.
#[test]
fn broken_headers_are_clear_errors() {
    let dir = temp_dir("broken");
    let good = std::fs::read(root().join("tests/nifti/u8.nii")).unwrap();
    let set_i16 =
        |b: &mut Vec<u8>, at: usize, v: i16| b[at..at + 2].copy_from_slice(&v.to_le_bytes());
    let set_f32 =
        |b: &mut Vec<u8>, at: usize, v: f32| b[at..at + 4].copy_from_slice(&v.to_le_bytes());
    type Edit = Box<dyn Fn(&mut Vec<u8>)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "short",
            Box::new(|b: &mut Vec<u8>| b.truncate(100)),
            "348-byte NIfTI header",
        ),
        (
            "sizeof",
            Box::new(|b: &mut Vec<u8>| b[0] = 0),
            "not a NIfTI-1 file",
        ),
        (
            "magic",
            Box::new(|b: &mut Vec<u8>| b[344..348].copy_from_slice(b"ni1\0")),
            "two-file NIfTI",
        ),
        (
            "rank",
            Box::new(move |b: &mut Vec<u8>| set_i16(b, 40, 9)),
            "dim[0] = 9",
        ),
        (
            "negative",
            Box::new(move |b: &mut Vec<u8>| set_i16(b, 44, -3)),
            "dimension size -3",
        ),
        // 32767³ voxels: more than unetc reads from one file.
        (
            "huge",
            Box::new(move |b: &mut Vec<u8>| {
                for i in 1..=3 {
                    set_i16(b, 40 + 2 * i, 32767);
                }
            }),
            "more than unetc reads",
        ),
        // 2000³ voxels: refused against the file's length before any buffer is made.
        (
            "large",
            Box::new(move |b: &mut Vec<u8>| {
                for i in 1..=3 {
                    set_i16(b, 40 + 2 * i, 2000);
                }
            }),
            "it is truncated",
        ),
        (
            "datatype",
            Box::new(move |b: &mut Vec<u8>| set_i16(b, 70, 128)),
            "datatype 128",
        ),
        (
            "bitpix",
            Box::new(move |b: &mut Vec<u8>| set_i16(b, 72, 16)),
            "bitpix 16",
        ),
        (
            "offset",
            Box::new(move |b: &mut Vec<u8>| set_f32(b, 108, 10.0)),
            "vox_offset 10",
        ),
        (
            "offset-nan",
            Box::new(move |b: &mut Vec<u8>| set_f32(b, 108, f32::NAN)),
            "vox_offset NaN",
        ),
        (
            "inter",
            Box::new(move |b: &mut Vec<u8>| set_f32(b, 116, f32::INFINITY)),
            "scl_inter inf",
        ),
        (
            "data",
            Box::new(|b: &mut Vec<u8>| b.truncate(b.len() - 5)),
            "it is truncated",
        ),
    ];
    for (name, edit, want) in cases {
        let mut bytes = good.clone();
        edit(&mut bytes);
        let path = dir.join(format!("{name}.nii"));
        std::fs::write(&path, &bytes).unwrap();
        let err = read_nifti(&path).unwrap_err().to_string();
        assert!(err.contains(want), "{name}: {err}");
    }
    // A gzip stream that ends inside the data.
    let gz = std::fs::read(root().join("tests/nifti/f32.nii.gz")).unwrap();
    let path = dir.join("cut.nii.gz");
    std::fs::write(&path, &gz[..gz.len() / 2]).unwrap();
    let err = read_nifti(&path).unwrap_err().to_string();
    assert!(err.contains("voxel data"), "{err}");
    // Through `run`: exit 2, the file and the field named, no output; an image model refuses
    // a NIfTI input by name.
    let weights = dir.join("w.safetensors");
    let (code, _, stderr) = unetc(&["init-weights", SAME, "-o", s(&weights), "--seed", "2"]);
    assert_eq!(code, 0, "{stderr}");
    let out = dir.join("y.nii");
    let (code, _, stderr) = unetc(&[
        "run",
        SAME,
        "--weights",
        s(&weights),
        "--input",
        s(&dir.join("rank.nii")),
        "-o",
        s(&out),
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("rank.nii") && stderr.contains("dim[0] = 9"),
        "{stderr}"
    );
    assert!(!out.exists());
    let image_net = "tests/golden/bn_same_small.unet";
    let w2 = dir.join("w2.safetensors");
    let (code, _, stderr) = unetc(&["init-weights", image_net, "-o", s(&w2), "--seed", "2"]);
    assert_eq!(code, 0, "{stderr}");
    let (code, _, stderr) = unetc(&[
        "run",
        image_net,
        "--weights",
        s(&w2),
        "--input",
        "tests/nifti/f32.nii.gz",
        "-o",
        s(&dir.join("y.npy")),
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("this model takes images"), "{stderr}");
}

/// Mutated headers and cut files never panic: every one reads or is refused with an error.
#[test]
fn mutated_files_never_panic() {
    let dir = temp_dir("mutate");
    let good = std::fs::read(root().join("tests/nifti/i32.nii")).unwrap();
    let mut state = 0x9e3779b97f4a7c15u64;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as usize
    };
    let path = dir.join("m.nii");
    let (mut read, mut refused) = (0, 0);
    for _ in 0..1500 {
        let mut bytes = good.clone();
        for _ in 0..1 + next() % 4 {
            // Mostly the header, sometimes anywhere.
            let at = if next() % 4 == 0 {
                next() % bytes.len()
            } else {
                next() % 352
            };
            bytes[at] = next() as u8;
        }
        if next() % 8 == 0 {
            bytes.truncate(next() % bytes.len());
        }
        std::fs::write(&path, &bytes).unwrap();
        match read_nifti(&path) {
            Ok(_) => read += 1,
            Err(_) => refused += 1,
        }
    }
    assert!(read > 0 && refused > 0, "read {read}, refused {refused}");
}

#[test]
fn a_gzip_bomb_is_refused_before_it_is_decompressed() {
    // A few hundred bytes of .nii.gz declaring 2048 x 2048 x 4096 float64 voxels (2^34 values,
    // the most unetc reads from one file: 128 GiB), decompressed into TMPDIR by a streamed run.
    use std::io::Write;
    let dir = temp_dir("bomb");
    let mut raw = std::fs::read(root().join("tests/nifti/u8.nii")).unwrap();
    let set_i16 =
        |b: &mut Vec<u8>, at: usize, v: i16| b[at..at + 2].copy_from_slice(&v.to_le_bytes());
    set_i16(&mut raw, 40, 3);
    for (i, d) in [2048i16, 2048, 4096].into_iter().enumerate() {
        set_i16(&mut raw, 42 + 2 * i, d);
    }
    set_i16(&mut raw, 70, 64); // float64
    set_i16(&mut raw, 72, 64);
    let bomb = dir.join("bomb.nii.gz");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&raw).unwrap();
    gz.write_all(&vec![0u8; 1 << 20]).unwrap();
    std::fs::write(&bomb, gz.finish().unwrap()).unwrap();
    let weights = dir.join("w.safetensors");
    let (code, _, stderr) = unetc(&["init-weights", SAME, "-o", s(&weights), "--seed", "2"]);
    assert_eq!(code, 0, "{stderr}");
    let out = dir.join("y.nii.gz");
    let (code, _, stderr) = unetc(&[
        "run",
        SAME,
        "--weights",
        s(&weights),
        "--input",
        s(&bomb),
        "-o",
        s(&out),
        "--tile",
        "16",
    ]);
    assert_ne!(code, 0);
    assert!(!out.exists());
    let declared = 8u64 << 34;
    let free = unetc::io::free_space(&std::env::temp_dir());
    if free.is_some_and(|f| f < declared) {
        // Refused before one byte is decompressed.
        assert!(stderr.contains("free; set TMPDIR"), "{stderr}");
    } else {
        // A disk with 128 GiB free takes the 1 MiB that is there, then finds it short.
        assert!(stderr.contains("truncated"), "{stderr}");
    }
}
