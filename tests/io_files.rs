//! The file I/O layer: .npy, PNG/TIFF, safetensors weights, atomic writes, initializers.
//! Every reader gets real bytes, written by hand where the format is simple, and damaged ones.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use unetc::exec::Tensor;
use unetc::io::weights::compute_fans;
use unetc::io::{
    init_tensor, load_weights, read_image, read_image_with_layout, read_npy, save_weights,
    seeded_rng, write_atomic, write_mask_png, write_npy, ChannelLayout, Expected, IoError,
    NonFinite, NonFiniteKind, WeightProblem, Weights, MAX_PIXELS,
};

/// Records the largest single allocation of the test process, so the tests can show that a
/// file declaring a huge size is refused without allocating for it.
struct Counting;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// No test here allocates anything near this; a reader that trusted a declared size would.
const HUGE: usize = 256 << 20;

fn assert_no_huge_allocation() {
    let largest = LARGEST.load(Ordering::Relaxed);
    assert!(
        largest < HUGE,
        "something allocated {largest} bytes at once"
    );
}

fn dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
}

/// Builds a .npy file by the format's specification: magic, version 1.0, little-endian u16
/// header length, the dict padded with spaces and a newline so the data starts at a multiple of 64.
fn npy_bytes(dict: &str, data: &[u8]) -> Vec<u8> {
    let mut header = dict.as_bytes().to_vec();
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(b' ');
    }
    header.push(b'\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(data);
    out
}

fn message(e: &IoError) -> String {
    e.to_string()
}

// ---------------------------------------------------------------------------------------------
// .npy

#[test]
fn npy_round_trip() {
    let d = dir();
    let path = d.path().join("x.npy");
    let t = Tensor {
        shape: vec![2, 3, 2, 1],
        data: vec![
            0.0,
            -1.5,
            2.25,
            1e-7,
            3.4e38,
            -0.0,
            7.0,
            8.5,
            f32::MIN_POSITIVE,
            100.0,
            -42.0,
            0.125,
        ],
    };
    write_npy(&path, &t, false).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    // Header as NumPy writes it: version 1.0, data aligned to 64.
    assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
    let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    assert_eq!((10 + hlen) % 64, 0);
    let header = std::str::from_utf8(&bytes[10..10 + hlen]).unwrap();
    assert_eq!(
        header.trim_end(),
        "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, 2, 1), }"
    );
    assert_eq!(bytes.len(), 10 + hlen + 12 * 4);
    assert_eq!(
        &bytes[10 + hlen + 4..10 + hlen + 8],
        &(-1.5f32).to_le_bytes()
    );
    let back = read_npy(&path).unwrap();
    assert_eq!(back, t);

    // Rank 1 and rank 0 keep their shapes; a 1-tuple is written `(n,)`.
    let v = Tensor {
        shape: vec![3],
        data: vec![1.0, 2.0, 3.0],
    };
    let p1 = d.path().join("v.npy");
    write_npy(&p1, &v, false).unwrap();
    let bytes = std::fs::read(&p1).unwrap();
    assert!(std::str::from_utf8(&bytes[10..74])
        .unwrap()
        .contains("'shape': (3,)"));
    assert_eq!(read_npy(&p1).unwrap(), v);
    let s = Tensor {
        shape: vec![],
        data: vec![5.5],
    };
    let p0 = d.path().join("s.npy");
    write_npy(&p0, &s, false).unwrap();
    assert_eq!(read_npy(&p0).unwrap(), s);
}

#[test]
fn npy_hand_made_f8_hwc_gets_a_batch() {
    let d = dir();
    let path = d.path().join("a.npy");
    // float64, shape (2, 2, 1): values 0.5, -2, 3.75, 1e10.
    let values = [0.5f64, -2.0, 3.75, 1e10];
    let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    write(
        &path,
        &npy_bytes(
            "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 2, 1), }",
            &data,
        ),
    );
    let t = read_npy(&path).unwrap();
    assert_eq!(t.shape, vec![1, 2, 2, 1]);
    assert_eq!(t.data, vec![0.5, -2.0, 3.75, 1e10]);
}

#[test]
fn npy_hand_made_u8_and_f4_nhwc() {
    let d = dir();
    let path = d.path().join("u.npy");
    // uint8, keys in another order, double quotes: raw values, not scaled.
    write(
        &path,
        &npy_bytes(
            "{\"shape\": (1, 1, 2, 3), \"fortran_order\": False, \"descr\": \"|u1\"}",
            &[0, 1, 127, 128, 254, 255],
        ),
    );
    let t = read_npy(&path).unwrap();
    assert_eq!(t.shape, vec![1, 1, 2, 3]);
    assert_eq!(t.data, vec![0.0, 1.0, 127.0, 128.0, 254.0, 255.0]);

    // float32 4-D stays as it is.
    let path = d.path().join("f.npy");
    let data: Vec<u8> = [1.0f32, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    write(
        &path,
        &npy_bytes(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 1, 1, 1), }",
            &data,
        ),
    );
    let t = read_npy(&path).unwrap();
    assert_eq!(t.shape, vec![2, 1, 1, 1]);
    assert_eq!(t.data, vec![1.0, 2.0]);

    // Version 2.0 header (u32 length).
    let path = d.path().join("v2.npy");
    let dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }";
    let mut header = dict.as_bytes().to_vec();
    while (12 + header.len() + 1) % 64 != 0 {
        header.push(b' ');
    }
    header.push(b'\n');
    let mut bytes = b"\x93NUMPY\x02\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&header);
    bytes.extend_from_slice(&data);
    write(&path, &bytes);
    assert_eq!(read_npy(&path).unwrap().data, vec![1.0, 2.0]);
}

#[test]
fn npy_nan_or_inf_is_an_error_with_index_and_count() {
    let d = dir();
    // f4: NaN at [0, 1, 0], +inf at [1, 1, 0] (HWC 2x2x1, read as NHWC).
    let data: Vec<u8> = [1.0f32, f32::NAN, 3.0, f32::INFINITY]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let p = d.path().join("nan.npy");
    write(
        &p,
        &npy_bytes(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2, 1), }",
            &data,
        ),
    );
    assert_eq!(
        message(&read_npy(&p).unwrap_err()),
        format!(
            "{}: 2 of 4 values are NaN or infinite (the first, at index [0, 1, 0] of shape \
             [2, 2, 1], is NaN); unetc refuses such inputs because the output would be \
             meaningless: replace them (e.g. numpy.nan_to_num) or fix what wrote the file",
            p.display()
        )
    );
    // f8 beyond the f32 range becomes infinite: said so.
    let data: Vec<u8> = [1.0f64, -1e300]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let q = d.path().join("big.npy");
    write(
        &q,
        &npy_bytes(
            "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }",
            &data,
        ),
    );
    let m = message(&read_npy(&q).unwrap_err());
    assert!(
        m.contains("1 of 2 values is NaN or infinite")
            && m.contains("index [1]")
            && m.contains("is -inf")
            && m.contains("<f8 values beyond"),
        "{m}"
    );
    assert_eq!(
        NonFinite::find(&[0.0, f32::NEG_INFINITY, f32::NAN]),
        Some(NonFinite {
            first: 1,
            first_kind: NonFiniteKind::MinusInfinity,
            count: 2
        })
    );
    assert_eq!(NonFinite::find(&[0.0, f32::MAX, f32::MIN_POSITIVE]), None);
}

#[test]
fn npy_damaged_files_are_errors() {
    let d = dir();
    let good_dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2, 1), }";
    let data: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();

    // Truncated data.
    let p = d.path().join("trunc.npy");
    let full = npy_bytes(good_dict, &data);
    write(&p, &full[..full.len() - 3]);
    let e = message(&read_npy(&p).unwrap_err());
    assert!(e.contains("trunc.npy") && e.contains("truncated"), "{e}");
    assert!(e.contains("needs 16 bytes") && e.contains("has 13"), "{e}");

    // Truncated inside the header.
    write(&p, &full[..40]);
    let e = message(&read_npy(&p).unwrap_err());
    assert!(e.contains("truncated") || e.contains("ends inside"), "{e}");

    // Empty file.
    write(&p, b"");
    let e = message(&read_npy(&p).unwrap_err());
    assert!(e.contains("too short"), "{e}");

    // Bad magic.
    let p = d.path().join("magic.npy");
    let mut bad = full.clone();
    bad[1] = b'X';
    write(&p, &bad);
    let e = message(&read_npy(&p).unwrap_err());
    assert!(
        e.contains("magic.npy") && e.contains("not a .npy file"),
        "{e}"
    );

    // Trailing bytes.
    let p = d.path().join("trail.npy");
    let mut long = full.clone();
    long.extend_from_slice(&[0; 4]);
    write(&p, &long);
    let e = message(&read_npy(&p).unwrap_err());
    assert!(e.contains("4 bytes after the data"), "{e}");

    // Fortran order.
    let p = d.path().join("fortran.npy");
    write(
        &p,
        &npy_bytes(
            "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2, 1), }",
            &data,
        ),
    );
    let e = message(&read_npy(&p).unwrap_err());
    assert!(e.contains("Fortran order") && e.contains("C order"), "{e}");

    // Unsupported dtype, big-endian, malformed header.
    let p = d.path().join("i8.npy");
    write(
        &p,
        &npy_bytes(
            "{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }",
            &[0; 16],
        ),
    );
    let e = message(&read_npy(&p).unwrap_err());
    assert!(
        e.contains("'<i8'") && e.contains("astype('float32')"),
        "{e}"
    );
    write(
        &p,
        &npy_bytes(
            "{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }",
            &[0; 8],
        ),
    );
    let e = message(&read_npy(&p).unwrap_err());
    assert!(e.contains("big-endian"), "{e}");
    write(&p, &npy_bytes("{'descr': '<f4', 'shape': (2,), }", &[0; 8]));
    let e = message(&read_npy(&p).unwrap_err());
    assert!(
        e.contains("malformed") && e.contains("fortran_order"),
        "{e}"
    );
    write(
        &p,
        &npy_bytes(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2, x), }",
            &[0; 8],
        ),
    );
    let e = message(&read_npy(&p).unwrap_err());
    assert!(e.contains("malformed") && e.contains("'shape'"), "{e}");

    // A header length beyond the file.
    let p = d.path().join("hlen.npy");
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&60000u16.to_le_bytes());
    bytes.extend_from_slice(b"{'descr': '<f4'");
    write(&p, &bytes);
    let e = message(&read_npy(&p).unwrap_err());
    assert!(
        e.contains("truncated") && e.contains("60000-byte header"),
        "{e}"
    );
    // A version-2 header length of 4 GiB.
    let mut bytes = b"\x93NUMPY\x02\x00".to_vec();
    bytes.extend_from_slice(&u32::MAX.to_le_bytes());
    write(&p, &bytes);
    let e = message(&read_npy(&p).unwrap_err());
    assert!(e.contains("4294967295 bytes"), "{e}");
    assert_no_huge_allocation();
}

#[test]
fn npy_huge_declared_shape_is_refused_without_allocating() {
    let d = dir();
    let p = d.path().join("huge.npy");
    // 10^18 elements declared, 16 bytes present.
    write(
        &p,
        &npy_bytes(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000, 1000000000), }",
            &[0; 16],
        ),
    );
    let e = message(&read_npy(&p).unwrap_err());
    assert!(e.contains("huge.npy") && e.contains("more than the"), "{e}");
    // Under the element limit but far beyond the file: 2^28 f4 = 1 GiB declared.
    write(
        &p,
        &npy_bytes(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (16384, 16384), }",
            &[0; 16],
        ),
    );
    let e = message(&read_npy(&p).unwrap_err());
    assert!(
        e.contains("truncated") && e.contains("1073741824 bytes"),
        "{e}"
    );
    // A product that overflows u64, and a dimension wider than u64.
    write(
        &p,
        &npy_bytes(
            "{'descr': '<f8', 'fortran_order': False, 'shape': (4294967296, 4294967296, 4294967296), }",
            &[0; 16],
        ),
    );
    assert!(message(&read_npy(&p).unwrap_err()).contains("more than the"));
    write(
        &p,
        &npy_bytes(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999999,), }",
            &[0; 16],
        ),
    );
    assert!(message(&read_npy(&p).unwrap_err()).contains("more than the"));
    assert_no_huge_allocation();
}

#[test]
fn npy_missing_file_names_it() {
    let e = read_npy(Path::new("/nonexistent/dir/x.npy")).unwrap_err();
    let m = message(&e);
    assert!(m.starts_with("/nonexistent/dir/x.npy: cannot open"), "{m}");
    assert_eq!(e.path(), Some(Path::new("/nonexistent/dir/x.npy")));
}

// ---------------------------------------------------------------------------------------------
// Images

#[test]
fn png_mask_round_trip() {
    let d = dir();
    let p = d.path().join("mask.png");
    let (h, w) = (3, 5);
    let values: Vec<u8> = (0..15).map(|i| (i * 17) as u8).collect();
    write_mask_png(&p, h, w, &values, false).unwrap();
    let bytes = std::fs::read(&p).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    let t = read_image(&p).unwrap();
    assert_eq!(t.shape, vec![1, 3, 5, 1]);
    let expect: Vec<f32> = values.iter().map(|&v| v as f32 / 255.0).collect();
    assert_eq!(t.data, expect);
    assert_eq!(t.data[14], 238.0 / 255.0);

    // Wrong value count, empty mask: errors, nothing written.
    let q = d.path().join("bad.png");
    assert!(write_mask_png(&q, 2, 2, &[1, 2, 3], false).is_err());
    assert!(write_mask_png(&q, 0, 2, &[], false).is_err());
    assert!(!q.exists());
}

#[test]
fn png_truncated_or_garbage_is_an_error() {
    let d = dir();
    let p = d.path().join("mask.png");
    let values: Vec<u8> = (0..64 * 64).map(|i| (i % 251) as u8).collect();
    write_mask_png(&p, 64, 64, &values, false).unwrap();
    let bytes = std::fs::read(&p).unwrap();
    let t = d.path().join("trunc.png");
    for cut in [bytes.len() / 2, 40, 12] {
        write(&t, &bytes[..cut]);
        let e = message(&read_image(&t).unwrap_err());
        assert!(e.starts_with(&format!("{}: ", t.display())), "{e}");
    }
    let g = d.path().join("garbage.png");
    write(&g, b"this is not an image at all");
    let e = message(&read_image(&g).unwrap_err());
    assert!(e.contains("is not a PNG or TIFF image"), "{e}");
    // A GIF is recognised and refused by name.
    write(&g, b"GIF89a\x01\x00\x01\x00\x00\x00\x00;");
    let e = message(&read_image(&g).unwrap_err());
    assert!(e.contains("image/gif") && e.contains("PNG and TIFF"), "{e}");
}

#[test]
fn images_color_and_16_bit_are_scaled() {
    use image::{ImageBuffer, Luma, LumaA, Rgb, Rgba};
    let d = dir();

    // RGBA 8-bit: alpha kept as the fourth channel (the runner decides what to do with it).
    let p = d.path().join("rgba.png");
    let img =
        ImageBuffer::<Rgba<u8>, _>::from_raw(2, 1, vec![255, 0, 51, 7, 0, 102, 255, 200]).unwrap();
    img.save(&p).unwrap();
    let (t, layout) = read_image_with_layout(&p).unwrap();
    assert_eq!(layout, ChannelLayout::Rgba);
    assert_eq!(t.shape, vec![1, 1, 2, 4]);
    assert_eq!(
        t.data,
        vec![1.0, 0.0, 0.2, 7.0 / 255.0, 0.0, 0.4, 1.0, 200.0 / 255.0]
    );

    // RGB 16-bit.
    let p = d.path().join("rgb16.png");
    let img = ImageBuffer::<Rgb<u16>, _>::from_raw(1, 1, vec![65535u16, 0, 13107]).unwrap();
    img.save(&p).unwrap();
    let t = read_image(&p).unwrap();
    assert_eq!(t.shape, vec![1, 1, 1, 3]);
    assert_eq!(t.data, vec![1.0, 0.0, 0.2]);

    // Gray+alpha 8-bit: two channels.
    let p = d.path().join("la.png");
    let img = ImageBuffer::<LumaA<u8>, _>::from_raw(1, 2, vec![51, 255, 255, 0]).unwrap();
    img.save(&p).unwrap();
    let (t, layout) = read_image_with_layout(&p).unwrap();
    assert_eq!(layout, ChannelLayout::GrayAlpha);
    assert_eq!(t.shape, vec![1, 2, 1, 2]);
    assert_eq!(t.data, vec![0.2, 1.0, 1.0, 0.0]);

    // TIFF, 16-bit gray and 8-bit RGB.
    let p = d.path().join("g16.tif");
    let img = ImageBuffer::<Luma<u16>, _>::from_raw(3, 1, vec![0u16, 32768, 65535]).unwrap();
    img.save(&p).unwrap();
    let t = read_image(&p).unwrap();
    assert_eq!(t.shape, vec![1, 1, 3, 1]);
    assert_eq!(t.data, vec![0.0, 32768.0 / 65535.0, 1.0]);
    let p = d.path().join("rgb.tiff");
    let img = ImageBuffer::<Rgb<u8>, _>::from_raw(1, 1, vec![0, 128, 255]).unwrap();
    img.save(&p).unwrap();
    let t = read_image(&p).unwrap();
    assert_eq!(t.data, vec![0.0, 128.0 / 255.0, 1.0]);

    // A truncated TIFF.
    let bytes = std::fs::read(d.path().join("g16.tif")).unwrap();
    let q = d.path().join("trunc.tif");
    write(&q, &bytes[..bytes.len() / 2]);
    assert!(read_image(&q).is_err());
}

#[test]
fn image_over_the_pixel_limit_is_refused_from_its_header() {
    // A PNG whose header declares 100000 × 100000 pixels (10^10 > 2^28), with a valid CRC,
    // followed by nothing. The reader must refuse it without allocating for the pixels.
    fn chunk(kind: &[u8], data: &[u8]) -> Vec<u8> {
        let mut out = (data.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        let mut crc_input = kind.to_vec();
        crc_input.extend_from_slice(data);
        out.extend_from_slice(&crc32(&crc_input).to_be_bytes());
        out
    }
    fn crc32(bytes: &[u8]) -> u32 {
        let mut c = 0xFFFF_FFFFu32;
        for &b in bytes {
            c ^= b as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
        }
        !c
    }
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]); // 8-bit gray
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(chunk(b"IHDR", &ihdr));
    // The start of a zlib stream: a decoder that trusted the header would allocate 10 GB here.
    png.extend(chunk(b"IDAT", &[0x78, 0x9c, 0x63, 0x00, 0x00]));
    png.extend(chunk(b"IEND", &[]));
    let d = dir();
    let p = d.path().join("big.png");
    write(&p, &png);
    let e = message(&read_image(&p).unwrap_err());
    assert_eq!(
        e,
        format!(
            "{}: is 100000x100000 (W x H) = 10000000000 pixels, more than the limit of \
             {MAX_PIXELS}; split it into tiles",
            p.display()
        )
    );
    assert_no_huge_allocation();
}

// ---------------------------------------------------------------------------------------------
// Weights

fn sample_weights() -> (Weights, Vec<Expected>) {
    let mut w = Weights::new();
    let kernel = Tensor {
        shape: vec![3, 3, 1, 2],
        data: (0..18).map(|i| i as f32 * 0.25 - 2.0).collect(),
    };
    let bias = Tensor {
        shape: vec![2],
        data: vec![0.5, -0.5],
    };
    let gamma = Tensor {
        shape: vec![2],
        data: vec![1.0, 1.5],
    };
    w.insert("conv2d/kernel".into(), kernel);
    w.insert("conv2d/bias".into(), bias);
    w.insert("batch_normalization/gamma".into(), gamma);
    let expected = w
        .iter()
        .map(|(n, t)| Expected {
            name: n.to_string(),
            shape: t.shape.clone(),
        })
        .collect();
    (w, expected)
}

#[test]
fn safetensors_round_trip_is_exact_and_deterministic() {
    let d = dir();
    let (w, expected) = sample_weights();
    let p = d.path().join("w.safetensors");
    save_weights(&p, &w, false).unwrap();
    let back = load_weights(&p, &expected).unwrap();
    assert_eq!(back, w);
    assert_eq!(
        back.names().collect::<Vec<_>>(),
        vec!["batch_normalization/gamma", "conv2d/bias", "conv2d/kernel"]
    );
    assert_eq!(back.get("conv2d/kernel").unwrap().data[17], 2.25);
    // Same weights, same bytes.
    let q = d.path().join("w2.safetensors");
    save_weights(&q, &w, false).unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), std::fs::read(&q).unwrap());
    // Readable by the safetensors crate as F32 with Keras names.
    let bytes = std::fs::read(&p).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let k = st.tensor("conv2d/kernel").unwrap();
    assert_eq!(k.dtype(), safetensors::Dtype::F32);
    assert_eq!(k.shape(), &[3, 3, 1, 2]);
    assert_eq!(&k.data()[..4], &(-2.0f32).to_le_bytes());
}

#[test]
fn safetensors_every_mismatch_is_reported_at_once() {
    use safetensors::tensor::TensorView;
    use safetensors::Dtype;
    let d = dir();
    let p = d.path().join("weights.safetensors");
    let f32s = |n: usize| -> Vec<u8> { (0..n).flat_map(|i| (i as f32).to_le_bytes()).collect() };
    let kernel_bad = f32s(3 * 3 * 64 * 64);
    let extra = f32s(4);
    let bias_f64: Vec<u8> = (0..64).flat_map(|i| (i as f64).to_le_bytes()).collect();
    let gamma = f32s(64);
    let views = vec![
        (
            "conv2d_3/kernel",
            TensorView::new(Dtype::F32, vec![3, 3, 64, 64], &kernel_bad).unwrap(),
        ),
        (
            "stray/kernel",
            TensorView::new(Dtype::F32, vec![2, 2], &extra).unwrap(),
        ),
        (
            "conv2d_3/bias",
            TensorView::new(Dtype::F64, vec![64], &bias_f64).unwrap(),
        ),
        (
            "batch_normalization/gamma",
            TensorView::new(Dtype::F32, vec![64], &gamma).unwrap(),
        ),
    ];
    std::fs::write(&p, safetensors::serialize(views, None).unwrap()).unwrap();
    let expected = vec![
        Expected {
            name: "conv2d_3/kernel".into(),
            shape: vec![3, 3, 128, 64],
        },
        Expected {
            name: "conv2d_3/bias".into(),
            shape: vec![64],
        },
        Expected {
            name: "batch_normalization/gamma".into(),
            shape: vec![64],
        },
        Expected {
            name: "batch_normalization/beta".into(),
            shape: vec![64],
        },
    ];
    let e = load_weights(&p, &expected).unwrap_err();
    let IoError::Weights { problems, .. } = &e else {
        panic!("not a weights error: {e}");
    };
    assert_eq!(
        problems,
        &vec![
            WeightProblem::Shape {
                name: "conv2d_3/kernel".into(),
                found: vec![3, 3, 64, 64],
                expected: vec![3, 3, 128, 64],
            },
            WeightProblem::Dtype {
                name: "conv2d_3/bias".into(),
                found: "F64".into(),
            },
            WeightProblem::Missing {
                name: "batch_normalization/beta".into(),
                shape: vec![64],
            },
            WeightProblem::Unexpected {
                name: "stray/kernel".into(),
                shape: vec![2, 2],
            },
        ]
    );
    let m = message(&e);
    let file = p.display().to_string();
    assert!(
        m.starts_with(&format!("{file}: 4 problems with the weights:\n")),
        "{m}"
    );
    for line in [
        format!("{file}: tensor \"conv2d_3/kernel\" has shape [3, 3, 64, 64] but the model needs [3, 3, 128, 64]"),
        format!("{file}: tensor \"conv2d_3/bias\" has dtype F64 but unetc reads F32; convert it to float32"),
        format!("{file}: tensor \"batch_normalization/beta\" is missing; the model needs it with shape [64]"),
        format!("{file}: tensor \"stray/kernel\" (shape [2, 2]) is not a weight of this model"),
    ] {
        assert!(m.lines().any(|l| l == line), "no line {line:?} in:\n{m}");
    }
    assert!(m.lines().last().unwrap().starts_with("help: "), "{m}");

    // One problem: one line plus help, in the brief's form.
    let q = d.path().join("one.safetensors");
    let views = vec![(
        "conv2d_3/kernel",
        TensorView::new(Dtype::F32, vec![3, 3, 64, 64], &kernel_bad).unwrap(),
    )];
    std::fs::write(&q, safetensors::serialize(views, None).unwrap()).unwrap();
    let m = message(&load_weights(&q, &expected[..1]).unwrap_err());
    let file = q.display().to_string();
    assert!(
        m.starts_with(&format!(
            "{file}: tensor \"conv2d_3/kernel\" has shape [3, 3, 64, 64] but the model needs \
             [3, 3, 128, 64]\nhelp: "
        )),
        "{m}"
    );
}

#[test]
fn safetensors_nan_or_inf_tensors_are_each_named() {
    let d = dir();
    let (mut w, expected) = sample_weights();
    let mut kernel = w.get("conv2d/kernel").unwrap().clone();
    kernel.data[5] = f32::NAN; // [0, 2, 0, 1] in [3, 3, 1, 2]
    kernel.data[17] = f32::INFINITY;
    w.insert("conv2d/kernel".into(), kernel);
    let mut gamma = w.get("batch_normalization/gamma").unwrap().clone();
    gamma.data[1] = f32::INFINITY;
    w.insert("batch_normalization/gamma".into(), gamma);
    let p = d.path().join("nan.safetensors");
    save_weights(&p, &w, false).unwrap();
    let e = load_weights(&p, &expected).unwrap_err();
    let IoError::Weights { problems, .. } = &e else {
        panic!("not a weights error: {e}");
    };
    assert_eq!(
        problems,
        &vec![
            WeightProblem::NonFinite {
                name: "batch_normalization/gamma".into(),
                shape: vec![2],
                found: NonFinite {
                    first: 1,
                    first_kind: NonFiniteKind::PlusInfinity,
                    count: 1
                },
            },
            WeightProblem::NonFinite {
                name: "conv2d/kernel".into(),
                shape: vec![3, 3, 1, 2],
                found: NonFinite {
                    first: 5,
                    first_kind: NonFiniteKind::NaN,
                    count: 2
                },
            },
        ]
    );
    let m = message(&e);
    let line = format!(
        "{}: tensor \"conv2d/kernel\": 2 of 18 values are NaN or infinite (the first, at index \
         [0, 2, 0, 1] of shape [3, 3, 1, 2], is NaN); the weights are damaged or come from a \
         training run that diverged: export them again from a checkpoint whose values are all \
         finite",
        p.display()
    );
    assert!(m.lines().any(|l| l == line), "no line {line:?} in:\n{m}");
}

#[test]
fn safetensors_corrupt_files_are_errors() {
    let d = dir();
    let (w, expected) = sample_weights();
    let p = d.path().join("w.safetensors");
    save_weights(&p, &w, false).unwrap();
    let bytes = std::fs::read(&p).unwrap();
    let q = d.path().join("bad.safetensors");

    // Truncated data.
    write(&q, &bytes[..bytes.len() - 5]);
    let e = message(&load_weights(&q, &expected).unwrap_err());
    assert!(
        e.contains("bad.safetensors") && e.contains("truncated"),
        "{e}"
    );
    // Truncated inside the header.
    write(&q, &bytes[..20]);
    let e = message(&load_weights(&q, &expected).unwrap_err());
    assert!(e.contains("header"), "{e}");
    // Shorter than the length field.
    write(&q, &bytes[..5]);
    let e = message(&load_weights(&q, &expected).unwrap_err());
    assert!(e.contains("too short"), "{e}");
    // Garbage header lengths: 2^64-1 and 50 MB in a small file.
    let mut g = bytes.clone();
    g[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    write(&q, &g);
    let e = message(&load_weights(&q, &expected).unwrap_err());
    assert!(e.contains("not a safetensors file"), "{e}");
    g[..8].copy_from_slice(&50_000_000u64.to_le_bytes());
    write(&q, &g);
    let e = message(&load_weights(&q, &expected).unwrap_err());
    assert!(e.contains("not a safetensors file"), "{e}");
    // A header that is not JSON.
    let mut g = 16u64.to_le_bytes().to_vec();
    g.extend_from_slice(b"not json at all!");
    write(&q, &g);
    let e = message(&load_weights(&q, &expected).unwrap_err());
    assert!(e.contains("not valid JSON"), "{e}");
    // A header declaring a tensor of 10^18 elements.
    let header =
        br#"{"a/kernel":{"dtype":"F32","shape":[1000000000,1000000000],"data_offsets":[0,16]}}"#;
    let mut g = (header.len() as u64).to_le_bytes().to_vec();
    g.extend_from_slice(header);
    g.extend_from_slice(&[0; 16]);
    write(&q, &g);
    assert!(load_weights(&q, &expected).is_err());
    assert_no_huge_allocation();
}

// ---------------------------------------------------------------------------------------------
// Atomic writes

#[test]
fn existing_output_without_force_is_an_error_and_unchanged() {
    let d = dir();
    let t = Tensor {
        shape: vec![1],
        data: vec![1.0],
    };
    let (w, _) = sample_weights();
    type Writer = Box<dyn Fn(bool) -> Result<(), IoError>>;
    let cases: Vec<(PathBuf, Writer)> = vec![
        (d.path().join("a.npy"), {
            let p = d.path().join("a.npy");
            let t = t.clone();
            Box::new(move |f| write_npy(&p, &t, f))
        }),
        (d.path().join("m.png"), {
            let p = d.path().join("m.png");
            Box::new(move |f| write_mask_png(&p, 1, 1, &[9], f))
        }),
        (d.path().join("w.safetensors"), {
            let p = d.path().join("w.safetensors");
            let w = w.clone();
            Box::new(move |f| save_weights(&p, &w, f))
        }),
    ];
    for (path, writer) in cases {
        write(&path, b"precious");
        let e = writer(false).unwrap_err();
        assert!(matches!(e, IoError::Exists { .. }));
        assert_eq!(
            message(&e),
            format!("{}: exists; use --force to replace it", path.display())
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"precious");
        writer(true).unwrap();
        assert_ne!(std::fs::read(&path).unwrap(), b"precious");
    }
    assert_eq!(read_npy(&d.path().join("a.npy")).unwrap(), t);
    // Only the three outputs are in the directory: no temporary files left.
    assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 3);
}

#[test]
fn failed_write_leaves_no_file() {
    let d = dir();
    let p = d.path().join("out.bin");
    let e = write_atomic(&p, false, |out| {
        out.write_all(b"half")?;
        Err(std::io::Error::other("disk on fire"))
    })
    .unwrap_err();
    let m = message(&e);
    assert!(m.contains("out.bin") && m.contains("disk on fire"), "{m}");
    assert!(!p.exists());
    assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);

    // Over an existing file with force: the old content stays.
    write(&p, b"old");
    assert!(write_atomic(&p, true, |_| Err(std::io::Error::other("no"))).is_err());
    assert_eq!(std::fs::read(&p).unwrap(), b"old");
    assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);

    // A missing directory names the file and the directory, not the temporary file.
    let q = d.path().join("no/such/dir/x.npy");
    let m = message(
        &write_npy(
            &q,
            &Tensor {
                shape: vec![0],
                data: vec![],
            },
            false,
        )
        .unwrap_err(),
    );
    assert_eq!(
        m,
        format!(
            "{}: cannot write: the directory `{}` does not exist; create it first (mkdir -p) or \
             write somewhere else",
            q.display(),
            d.path().join("no/such/dir").display()
        )
    );
    // A parent that is a file.
    let r = p.join("x.npy");
    let m = message(&write_atomic(&r, false, |_| Ok(())).unwrap_err());
    assert!(
        m.contains("is not a directory") && !m.contains(".x.npy"),
        "{m}"
    );
}

/// An OS error about the temporary file names the target, never the temporary file: here the
/// target's name is legal (250 bytes) but the temporary name built from it is too long.
#[test]
fn os_errors_name_the_target_not_the_temporary_file() {
    let d = dir();
    let target = d.path().join(format!("{}.npy", "n".repeat(246)));
    let m = message(&write_atomic(&target, false, |_| Ok(())).unwrap_err());
    assert!(
        m.starts_with(&format!(
            "{}: cannot create a temporary file beside it: ",
            target.display()
        )) && !m.contains(".tmp\"")
            && !m.contains("at path"),
        "{m}"
    );
    assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
}

// ---------------------------------------------------------------------------------------------
// Initializers

fn mean_std(v: &[f32]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

#[test]
fn he_normal_statistics() {
    let mut rng = seeded_rng(7);
    let t = init_tensor("he_normal", &[3, 3, 64, 64], &mut rng).unwrap();
    assert_eq!(t.shape, vec![3, 3, 64, 64]);
    assert_eq!(t.data.len(), 36864);
    let target = (2.0f64 / 576.0).sqrt(); // fan_in = 3*3*64
    let (mean, std) = mean_std(&t.data);
    assert!(mean.abs() < 0.01 * target.max(0.01), "mean {mean}");
    assert!((std / target - 1.0).abs() < 0.03, "std {std} vs {target}");
    // Truncated at two standard deviations of the untruncated normal.
    let bound = 2.0 * target / 0.879_625_661_034_239_8;
    let max = t.data.iter().map(|x| x.abs() as f64).fold(0.0, f64::max);
    assert!(max <= bound * (1.0 + 1e-6), "max {max} > {bound}");
    assert!(max > 0.95 * bound, "max {max} never near {bound}");
    // HeNormal is the same initializer.
    let again = init_tensor("HeNormal", &[3, 3, 64, 64], &mut seeded_rng(7)).unwrap();
    assert_eq!(again, t);
}

#[test]
fn uniform_initializers_statistics() {
    // glorot_uniform of a Conv2D kernel [3, 3, 64, 128]: limit sqrt(6 / (576 + 1152)).
    let t = init_tensor("glorot_uniform", &[3, 3, 64, 128], &mut seeded_rng(1)).unwrap();
    let limit = (6.0f64 / (576.0 + 1152.0)).sqrt();
    let (mean, std) = mean_std(&t.data);
    assert!(mean.abs() < 0.01 * limit, "mean {mean}");
    assert!(
        (std / (limit / 3f64.sqrt()) - 1.0).abs() < 0.03,
        "std {std}"
    );
    let max = t.data.iter().map(|x| x.abs() as f64).fold(0.0, f64::max);
    assert!(max <= limit && max > 0.999 * limit, "max {max} vs {limit}");

    // he_uniform of a Dense kernel [256, 10]: limit sqrt(6 / 256).
    let t = init_tensor("he_uniform", &[256, 10], &mut seeded_rng(2)).unwrap();
    let limit = (6.0f64 / 256.0).sqrt();
    let max = t.data.iter().map(|x| x.abs() as f64).fold(0.0, f64::max);
    assert!(max <= limit && max > 0.99 * limit, "max {max} vs {limit}");

    // random_uniform: ±0.05; lecun_uniform: sqrt(3 / fan_in).
    let t = init_tensor("random_uniform", &[10000], &mut seeded_rng(3)).unwrap();
    assert!(t.data.iter().all(|x| (-0.05..0.05).contains(x)));
    let t = init_tensor("lecun_uniform", &[3, 3, 16, 8], &mut seeded_rng(3)).unwrap();
    let limit = (3.0f64 / 144.0).sqrt();
    let max = t.data.iter().map(|x| x.abs() as f64).fold(0.0, f64::max);
    assert!(max <= limit && max > 0.99 * limit, "max {max} vs {limit}");
}

#[test]
fn normal_initializers_statistics() {
    // glorot_normal of a Conv2DTranspose kernel stored [2, 2, 64, 128] (out, in): Keras computes
    // fans on the stored shape, fan_in = 4*64, fan_out = 4*128.
    assert_eq!(compute_fans(&[2, 2, 64, 128]), (256.0, 512.0));
    assert_eq!(compute_fans(&[256, 10]), (256.0, 10.0));
    assert_eq!(compute_fans(&[7]), (7.0, 7.0));
    assert_eq!(compute_fans(&[]), (1.0, 1.0));
    let t = init_tensor("glorot_normal", &[2, 2, 64, 128], &mut seeded_rng(4)).unwrap();
    let target = (2.0f64 / (256.0 + 512.0)).sqrt();
    let (mean, std) = mean_std(&t.data);
    assert!(mean.abs() < 0.01 * target.max(0.01), "mean {mean}");
    assert!((std / target - 1.0).abs() < 0.03, "std {std} vs {target}");
    let bound = 2.0 * target / 0.879_625_661_034_239_8;
    assert!(t
        .data
        .iter()
        .all(|x| (x.abs() as f64) <= bound * (1.0 + 1e-6)));

    // lecun_normal: sqrt(1 / fan_in).
    let t = init_tensor("lecun_normal", &[3, 3, 32, 32], &mut seeded_rng(5)).unwrap();
    let (_, std) = mean_std(&t.data);
    assert!(
        (std / (1.0f64 / 288.0).sqrt() - 1.0).abs() < 0.03,
        "std {std}"
    );

    // random_normal: stddev 0.05, not truncated; truncated_normal: cut at 0.1, std 0.05*0.8796.
    let t = init_tensor("random_normal", &[100000], &mut seeded_rng(6)).unwrap();
    let (mean, std) = mean_std(&t.data);
    assert!(
        mean.abs() < 0.001 && (std / 0.05 - 1.0).abs() < 0.02,
        "{mean} {std}"
    );
    assert!(t.data.iter().any(|x| x.abs() > 0.1));
    let t = init_tensor("truncated_normal", &[100000], &mut seeded_rng(6)).unwrap();
    let (_, std) = mean_std(&t.data);
    assert!(
        (std / (0.05 * 0.879_625_661_034_239_8) - 1.0).abs() < 0.02,
        "{std}"
    );
    assert!(t.data.iter().all(|x| x.abs() <= 0.1));
}

#[test]
fn constant_initializers_seeds_and_unknown_names() {
    let z = init_tensor("zeros", &[2, 3], &mut seeded_rng(0)).unwrap();
    assert_eq!(z.data, vec![0.0; 6]);
    let o = init_tensor("Ones", &[4], &mut seeded_rng(0)).unwrap();
    assert_eq!(o.data, vec![1.0; 4]);

    let a = init_tensor("he_normal", &[3, 3, 4, 8], &mut seeded_rng(42)).unwrap();
    let b = init_tensor("he_normal", &[3, 3, 4, 8], &mut seeded_rng(42)).unwrap();
    let c = init_tensor("he_normal", &[3, 3, 4, 8], &mut seeded_rng(43)).unwrap();
    assert_eq!(a, b);
    assert_ne!(a, c);
    // One generator drawn twice gives different tensors.
    let mut rng = seeded_rng(42);
    let first = init_tensor("glorot_uniform", &[16], &mut rng).unwrap();
    let second = init_tensor("glorot_uniform", &[16], &mut rng).unwrap();
    assert_ne!(first, second);

    let e = init_tensor("he_wobbly", &[3], &mut seeded_rng(0)).unwrap_err();
    let m = message(&e);
    assert!(
        m.starts_with("initializer \"he_wobbly\": is not an initializer"),
        "{m}"
    );
    assert!(m.contains("he_normal"), "{m}");
    let e = init_tensor("zeros", &[1 << 20, 1 << 20], &mut seeded_rng(0)).unwrap_err();
    assert!(message(&e).contains("more than the"));
    assert_no_huge_allocation();
}

#[test]
fn tiff_stacks_of_full_size_pages_are_refused_pyramids_are_not() {
    // A TIFF of several full-size pages (a z-stack, a time series, channels as pages) would be
    // read as its first page alone: refused, by both readers (the image reader and the
    // streaming one). Reduced-resolution pages (NewSubfileType 1) and pages of other sizes (a
    // pyramid's levels, a slide's label) are not. Files from the `tiff` crate's encoder.
    use tiff::encoder::{colortype::Gray8, TiffEncoder};
    use tiff::tags::Tag;
    use unetc::io::stream::TiffSource;
    let d = dir();
    let page = vec![7u8; 12 * 10];
    let small = vec![9u8; 6 * 5];
    let write = |name: &str, pages: &[(u32, u32, &[u8], u32)]| {
        let path = d.path().join(name);
        let mut tiff = TiffEncoder::new(std::fs::File::create(&path).unwrap()).unwrap();
        for &(w, h, data, subfile) in pages {
            let mut image = tiff.new_image::<Gray8>(w, h).unwrap();
            if subfile != 0 {
                image
                    .encoder()
                    .write_tag(Tag::NewSubfileType, subfile)
                    .unwrap();
            }
            image.write_data(data).unwrap();
        }
        path
    };
    let stack = write(
        "stack.tif",
        &[(10, 12, &page, 0), (10, 12, &page, 0), (10, 12, &page, 0)],
    );
    let e = message(&read_image(&stack).unwrap_err());
    assert!(e.contains("has 3 full-size pages of 10x12"), "{e}");
    let e = message(&TiffSource::open(&stack, 1 << 26).err().expect("refused"));
    assert!(e.contains("has 3 full-size pages"), "{e}");
    // Channel pages said so by OME-XML are the image's channels, for both readers (their
    // values: tests/streaming.rs).
    let ome = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/stream/ome_channels_u16.ome.tif");
    let t = read_image(&ome).unwrap_or_else(|e| panic!("{}", message(&e)));
    assert_eq!(t.shape, vec![1, 100, 90, 2]);
    for ok in [
        write("one.tif", &[(10, 12, &page, 0)]),
        write("pyramid.tif", &[(10, 12, &page, 0), (5, 6, &small, 1)]),
        write("label.tif", &[(10, 12, &page, 0), (5, 6, &small, 0)]),
        write("thumbnail.tif", &[(10, 12, &page, 0), (10, 12, &page, 1)]),
    ] {
        let t = read_image(&ok).unwrap_or_else(|e| panic!("{}: {}", ok.display(), message(&e)));
        assert_eq!(t.shape, vec![1, 12, 10, 1]);
        assert!(t.data.iter().all(|&v| v == 7.0 / 255.0));
        if let Err(e) = TiffSource::open(&ok, 1 << 26) {
            panic!("{}: {}", ok.display(), message(&e));
        }
    }
}
