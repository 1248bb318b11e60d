//! PNG and TIFF images in, 8-bit gray PNG masks out.
//!
//! Read: 8- and 16-bit gray, gray+alpha, RGB and RGBA (PNG palettes and low bit depths are
//! expanded by the decoder). The result is `[1, H, W, C]` with C = 1 for gray and 3 for colour
//! (alpha is dropped), scaled to [0, 1]: 8-bit samples / 255, 16-bit samples / 65535. The format is
//! taken from the file's content, not its name. Images of more than [`MAX_PIXELS`] pixels are
//! refused from their header, before anything is decoded.

use super::atomic::write_atomic;
use super::{IoError, MAX_PIXELS};
use crate::exec::Tensor;
use image::{ColorType, ImageDecoder, ImageError, ImageFormat, ImageReader, Limits};
use std::path::Path;

/// Reads a PNG or TIFF image as a `[1, H, W, C]` tensor (C = 1 or 3) with values in [0, 1].
pub fn read_image(path: &Path) -> Result<Tensor, IoError> {
    if path.is_dir() {
        return Err(IoError::invalid(path, "is a directory, not an image"));
    }
    let mut reader = ImageReader::open(path).map_err(|e| IoError::os(path, "cannot open", e))?;
    // The content decides, not the name.
    reader.clear_format();
    let reader = reader
        .with_guessed_format()
        .map_err(|e| IoError::os(path, "cannot read", e))?;
    match reader.format() {
        Some(ImageFormat::Png | ImageFormat::Tiff) => {}
        Some(other) => {
            return Err(IoError::invalid(
                path,
                format!(
                    "is a {} image; unetc reads PNG and TIFF images (and .npy arrays): convert it",
                    other.to_mime_type()
                ),
            ))
        }
        None => {
            return Err(IoError::invalid(
                path,
                "is not a PNG or TIFF image (its first bytes are neither); unetc reads PNG, TIFF \
                 and .npy",
            ))
        }
    }
    let mut reader = reader;
    let mut limits = Limits::default();
    // The largest image allowed, as 16-bit RGBA, plus room for the decoder's own buffers.
    limits.max_alloc = Some(MAX_PIXELS * 8 + (64 << 20));
    reader.limits(limits);
    let decoder = reader.into_decoder().map_err(|e| decode_error(path, e))?;

    let (w, h) = decoder.dimensions();
    let pixels = u64::from(w) * u64::from(h);
    if pixels > MAX_PIXELS {
        return Err(IoError::invalid(
            path,
            format!(
                "is {w}×{h} = {pixels} pixels, more than the limit of {MAX_PIXELS}; split it into \
                 tiles"
            ),
        ));
    }
    if pixels == 0 {
        return Err(IoError::invalid(path, format!("is empty ({w}×{h} pixels)")));
    }
    let color = decoder.color_type();
    // (channels stored, channels kept, bytes per sample)
    let (stored, kept, sample) = match color {
        ColorType::L8 => (1, 1, 1),
        ColorType::La8 => (2, 1, 1),
        ColorType::Rgb8 => (3, 3, 1),
        ColorType::Rgba8 => (4, 3, 1),
        ColorType::L16 => (1, 1, 2),
        ColorType::La16 => (2, 1, 2),
        ColorType::Rgb16 => (3, 3, 2),
        ColorType::Rgba16 => (4, 3, 2),
        other => {
            return Err(IoError::invalid(
                path,
                format!(
                    "has pixels of type {other:?}; unetc reads 8- and 16-bit gray, gray+alpha, \
                     RGB and RGBA images: save floating-point data as .npy instead"
                ),
            ))
        }
    };
    let pixels = pixels as usize; // <= 2^28
    let total = pixels * stored * sample;
    if decoder.total_bytes() != total as u64 {
        return Err(IoError::invalid(
            path,
            "the decoder's buffer size does not match the image's dimensions",
        ));
    }
    let mut bytes = vec![0u8; total];
    decoder
        .read_image(&mut bytes)
        .map_err(|e| decode_error(path, e))?;

    let mut data = Vec::with_capacity(pixels * kept);
    if sample == 1 {
        for px in bytes.chunks_exact(stored) {
            data.extend(px[..kept].iter().map(|&v| f32::from(v) / 255.0));
        }
    } else {
        // The decoder gives 16-bit samples in native byte order.
        for px in bytes.chunks_exact(stored * 2) {
            data.extend(
                px[..kept * 2]
                    .chunks_exact(2)
                    .map(|b| f32::from(u16::from_ne_bytes([b[0], b[1]])) / 65535.0),
            );
        }
    }
    Ok(Tensor {
        shape: vec![1, h as usize, w as usize, kept],
        data,
    })
}

/// Writes an 8-bit gray PNG of `h` rows and `w` columns (`values` row by row), atomically; an
/// existing file is replaced only with `force`.
pub fn write_mask_png(
    path: &Path,
    h: usize,
    w: usize,
    values: &[u8],
    force: bool,
) -> Result<(), IoError> {
    let (Ok(h32), Ok(w32)) = (u32::try_from(h), u32::try_from(w)) else {
        return Err(IoError::invalid(
            path,
            format!("cannot write a {h}×{w} PNG: PNG dimensions must fit in 32 bits"),
        ));
    };
    if h == 0 || w == 0 {
        return Err(IoError::invalid(
            path,
            format!("cannot write a {h}×{w} PNG: it would be empty"),
        ));
    }
    if h.checked_mul(w) != Some(values.len()) {
        return Err(IoError::invalid(
            path,
            format!(
                "cannot write a {h}×{w} mask from {} values (internal error)",
                values.len()
            ),
        ));
    }
    write_atomic(path, force, |out| {
        use image::ImageEncoder;
        image::codecs::png::PngEncoder::new(out)
            .write_image(values, w32, h32, image::ExtendedColorType::L8)
            .map_err(|e| match e {
                ImageError::IoError(e) => e,
                other => std::io::Error::other(other),
            })
    })
}

fn decode_error(path: &Path, e: ImageError) -> IoError {
    match e {
        ImageError::IoError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            IoError::invalid(path, "is truncated: the image data ends early")
        }
        ImageError::IoError(e) => IoError::os(path, "cannot read", e),
        ImageError::Limits(l) => IoError::invalid(
            path,
            format!("is too large to decode within unetc's limits ({l}); split it into tiles"),
        ),
        ImageError::Unsupported(u) => IoError::invalid(
            path,
            format!("uses an image feature unetc cannot read ({u}); save it as 8- or 16-bit PNG"),
        ),
        other => IoError::invalid(
            path,
            format!("is not a valid image ({other}); is the file damaged or truncated?"),
        ),
    }
}
