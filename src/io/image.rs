//! PNG and TIFF images in, 8-bit gray PNG masks out.
//!
//! Read: 8- and 16-bit gray, gray+alpha, RGB and RGBA (PNG palettes become RGB, or RGBA when
//! they have transparency; low bit depths are expanded by the decoder). The result is
//! `[1, H, W, C]` with every channel the file stores, alpha included (C = 1 gray, 2 gray+alpha,
//! 3 RGB, 4 RGBA), scaled to [0, 1]: 8-bit samples / 255, 16-bit samples / 65535. Nothing is
//! converted or dropped here; [`ChannelLayout`] tells the caller what the channels are. The format
//! is taken from the file's content, not its name. Images of more than [`MAX_PIXELS`] pixels are
//! refused from their header, before anything is decoded. Sizes in messages are written
//! `WxH (W x H)`, width first, as `unetc tiles --image` takes them.

use super::atomic::write_atomic;
use super::{IoError, MAX_PIXELS};
use crate::exec::Tensor;
use image::{ColorType, ImageDecoder, ImageError, ImageFormat, ImageReader, Limits};
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

/// What an image's channels are, in file order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelLayout {
    Gray,
    GrayAlpha,
    Rgb,
    Rgba,
    /// Channels of a microscope image (an OME-TIFF's or ImageJ's channels stored as pages):
    /// none of them alpha.
    Multichannel(usize),
}

impl ChannelLayout {
    pub fn channels(self) -> usize {
        match self {
            ChannelLayout::Gray => 1,
            ChannelLayout::GrayAlpha => 2,
            ChannelLayout::Rgb => 3,
            ChannelLayout::Rgba => 4,
            ChannelLayout::Multichannel(n) => n,
        }
    }

    /// Whether the last channel is alpha.
    pub fn has_alpha(self) -> bool {
        match self {
            ChannelLayout::GrayAlpha | ChannelLayout::Rgba => true,
            ChannelLayout::Gray | ChannelLayout::Rgb | ChannelLayout::Multichannel(_) => false,
        }
    }

    /// The layout once the alpha channel is removed.
    pub fn without_alpha(self) -> ChannelLayout {
        match self {
            ChannelLayout::Gray | ChannelLayout::GrayAlpha => ChannelLayout::Gray,
            ChannelLayout::Rgb | ChannelLayout::Rgba => ChannelLayout::Rgb,
            ChannelLayout::Multichannel(n) => ChannelLayout::Multichannel(n),
        }
    }

    /// "a gray", "a gray+alpha", "an RGB", "an RGBA": for "is {} image".
    pub fn with_article(self) -> &'static str {
        match self {
            ChannelLayout::Gray => "a gray",
            ChannelLayout::GrayAlpha => "a gray+alpha",
            ChannelLayout::Rgb => "an RGB",
            ChannelLayout::Rgba => "an RGBA",
            ChannelLayout::Multichannel(_) => "a multichannel",
        }
    }

    /// "gray", "gray+alpha", "RGB", "RGBA".
    pub fn name(self) -> &'static str {
        match self {
            ChannelLayout::Gray => "gray",
            ChannelLayout::GrayAlpha => "gray+alpha",
            ChannelLayout::Rgb => "RGB",
            ChannelLayout::Rgba => "RGBA",
            ChannelLayout::Multichannel(_) => "multichannel",
        }
    }
}

/// Reads a PNG or TIFF image as a `[1, H, W, C]` tensor with every stored channel (alpha
/// included), values in [0, 1].
pub fn read_image(path: &Path) -> Result<Tensor, IoError> {
    read_image_with_layout(path).map(|(t, _)| t)
}

/// [`read_image`], also saying what the channels are.
pub fn read_image_with_layout(path: &Path) -> Result<(Tensor, ChannelLayout), IoError> {
    let decoded = decode(path)?;
    let data: Vec<f32> = match decoded.stored {
        Stored::Integers {
            samples,
            full_scale,
        } => samples.iter().map(|&v| f32::from(v) / full_scale).collect(),
        Stored::Floats(values) => values,
    };
    Ok((
        Tensor {
            shape: vec![1, decoded.h, decoded.w, decoded.layout.channels()],
            data,
        },
        decoded.layout,
    ))
}

/// A segmentation mask as stored: one integer per pixel (8- or 16-bit gray, or RGB whose three
/// channels are equal), `(h, w, values)`. Masks are class indices or 0/255; the caller decides.
pub fn read_mask(path: &Path) -> Result<(usize, usize, Vec<u16>), IoError> {
    let d = decode(path)?;
    let c = d.layout.channels();
    let samples =
        match d.stored {
            Stored::Integers { samples, .. } => samples,
            Stored::Floats(_) => return Err(IoError::invalid(
                path,
                "stores floating-point samples; a mask is one gray channel of class indices (or \
                 0/255): save it as 8- or 16-bit gray",
            )),
        };
    match d.layout {
        ChannelLayout::Gray => Ok((d.h, d.w, samples)),
        ChannelLayout::Rgb if samples.chunks(3).all(|p| p[0] == p[1] && p[1] == p[2]) => {
            Ok((d.h, d.w, samples.iter().step_by(3).copied().collect()))
        }
        other => Err(IoError::invalid(
            path,
            format!(
                "is a {} image with {c} channel(s); a mask is one gray channel of class indices \
                 (or 0/255): save it as 8- or 16-bit gray",
                other.name()
            ),
        )),
    }
}

/// An image's samples as stored.
struct Decoded {
    h: usize,
    w: usize,
    layout: ChannelLayout,
    stored: Stored,
}

enum Stored {
    /// Integer samples and the value of full intensity (255 or 65535).
    Integers { samples: Vec<u16>, full_scale: f32 },
    /// Float samples (TIFFs of 32-bit floats), as stored.
    Floats(Vec<f32>),
}

fn decode(path: &Path) -> Result<Decoded, IoError> {
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
        Some(ImageFormat::Png) => decode_whole(path, reader),
        // Channel pages: the image crate would read the first page alone.
        Some(ImageFormat::Tiff) if super::stream::channel_pages(path)? => decode_tiff_chunks(path),
        // A TIFF layout the image crate does not read (channels in planes, float samples):
        // read it a chunk at a time instead; the image crate's error stands if that fails too.
        Some(ImageFormat::Tiff) => {
            decode_whole(path, reader).or_else(|error| decode_tiff_chunks(path).map_err(|_| error))
        }
        Some(other) => Err(IoError::invalid(
            path,
            format!(
                "is a {} image; unetc reads PNG and TIFF images (and .npy arrays): convert it",
                other.to_mime_type()
            ),
        )),
        None => Err(IoError::invalid(
            path,
            "is not a PNG or TIFF image (its first bytes are neither); unetc reads PNG, TIFF \
             and .npy",
        )),
    }
}

/// A TIFF read through the streaming reader ([`TiffSource`]), whole: channels stored as
/// pages (OME-TIFF, ImageJ) or as planes, float samples.
fn decode_tiff_chunks(path: &Path) -> Result<Decoded, IoError> {
    use super::stream::{RegionSource, TiffSource};
    // Chunks of at most the largest image's 16 bytes a pixel (RGBA f32); each is decoded once.
    let cap = usize::try_from(MAX_PIXELS * 16).unwrap_or(usize::MAX);
    let mut source = TiffSource::open(path, cap)?;
    let [_, h, w, c] = source.shape();
    within_pixel_limit(path, w as u64, h as u64)?;
    let mut values = vec![0.0f32; h * w * c];
    source.read_region(0, 0..h, 0..w, &mut values)?;
    let stored = match source.full_scale() {
        // The reader divided by the full scale; the product rounds back to the stored integer.
        Some(full_scale) => Stored::Integers {
            samples: values
                .iter()
                .map(|&v| (v * full_scale).round() as u16)
                .collect(),
            full_scale,
        },
        None => Stored::Floats(values),
    };
    Ok(Decoded {
        h,
        w,
        layout: source.layout(),
        stored,
    })
}

/// Refuses an image of more than [`MAX_PIXELS`] pixels, before anything is decoded.
fn within_pixel_limit(path: &Path, w: u64, h: u64) -> Result<(), IoError> {
    let pixels = w * h;
    if pixels > MAX_PIXELS {
        return Err(IoError::invalid(
            path,
            format!(
                "is {w}x{h} (W x H) = {pixels} pixels, more than the limit of {MAX_PIXELS}; split \
                 it into tiles"
            ),
        ));
    }
    Ok(())
}

/// A PNG or TIFF decoded by the image crate (`reader`: its format guessed from the content).
fn decode_whole(path: &Path, reader: ImageReader<BufReader<File>>) -> Result<Decoded, IoError> {
    let mut reader = reader;
    let mut limits = Limits::default();
    // The largest image allowed, as 16-bit RGBA, plus room for the decoder's own buffers.
    limits.max_alloc = Some(MAX_PIXELS * 8 + (64 << 20));
    reader.limits(limits);
    let decoder = reader.into_decoder().map_err(|e| decode_error(path, e))?;

    let (w, h) = decoder.dimensions();
    within_pixel_limit(path, u64::from(w), u64::from(h))?;
    let pixels = u64::from(w) * u64::from(h);
    if pixels == 0 {
        return Err(IoError::invalid(
            path,
            format!("is empty: {w}x{h} (W x H) pixels"),
        ));
    }
    let color = decoder.color_type();
    // (channels, bytes per sample)
    let (layout, sample) = match color {
        ColorType::L8 => (ChannelLayout::Gray, 1),
        ColorType::La8 => (ChannelLayout::GrayAlpha, 1),
        ColorType::Rgb8 => (ChannelLayout::Rgb, 1),
        ColorType::Rgba8 => (ChannelLayout::Rgba, 1),
        ColorType::L16 => (ChannelLayout::Gray, 2),
        ColorType::La16 => (ChannelLayout::GrayAlpha, 2),
        ColorType::Rgb16 => (ChannelLayout::Rgb, 2),
        ColorType::Rgba16 => (ChannelLayout::Rgba, 2),
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
    let channels = layout.channels();
    let pixels = pixels as usize; // <= 2^28
    let total = pixels * channels * sample;
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

    let samples: Vec<u16> = if sample == 1 {
        bytes.iter().map(|&v| u16::from(v)).collect()
    } else {
        // The decoder gives 16-bit samples in native byte order.
        bytes
            .chunks_exact(2)
            .map(|b| u16::from_ne_bytes([b[0], b[1]]))
            .collect()
    };
    Ok(Decoded {
        h: h as usize,
        w: w as usize,
        layout,
        stored: Stored::Integers {
            samples,
            full_scale: if sample == 1 { 255.0 } else { 65535.0 },
        },
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
            format!("cannot write a {w}x{h} (W x H) PNG: PNG dimensions must fit in 32 bits"),
        ));
    };
    if h == 0 || w == 0 {
        return Err(IoError::invalid(
            path,
            format!("cannot write a {w}x{h} (W x H) PNG: it would be empty"),
        ));
    }
    if h.checked_mul(w) != Some(values.len()) {
        return Err(IoError::invalid(
            path,
            format!(
                "cannot write a {w}x{h} (W x H) mask from {} values (internal error)",
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
