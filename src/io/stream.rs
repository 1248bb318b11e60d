//! Streamed images: read a region at a time, write pixels as tiles finish, so an image larger
//! than memory never has to be held whole.
//!
//! A volume `(N, D, H, W, C)` is the same to them: a stack of `N·D` planes of `H x W` pixels
//! (`[N·D, H, W, C]`, the same bytes in C order), so one source and sink serve both ranks.
//!
//! Sources ([`RegionSource`]):
//! - [`NpySource`]: a `<f4` NHWC/HWC (or NDHWC/DHWC volume) `.npy` array through a read-only
//!   memory map;
//! - [`super::nifti::NiftiSource`]: a NIfTI-1 volume through a memory map;
//! - [`TiffSource`]: a TIFF or BigTIFF (strips or tiles; channels interleaved, in planes
//!   (planar configuration 2), or as pages where OME-XML or ImageJ's description says they are
//!   channels; 8/16-bit unsigned or 32-bit float samples, gray, gray+alpha, RGB or RGBA, any
//!   compression the `tiff` crate decodes), decoded one chunk at a time by the `tiff` crate, a
//!   few chunks cached;
//! - [`TensorSource`]: a tensor already in memory.
//!
//! [`TensorSink`] collects an output in memory.
//!
//! Sinks ([`RegionSink`]), both temporary files beside the target, created at their final size
//! (disk space reserved first), renamed into place by [`RegionSink::finish`]:
//! - [`NpySink`]: a `<f4` `.npy` written through a memory map;
//! - [`super::nifti::NiftiSink`]: a float32 NIfTI-1 through a memory map;
//! - [`TiffSink`]: an uncompressed tiled float32 BigTIFF, written by hand with positional writes
//!   (the `tiff` crate 0.10 writes strips only, not tiles).
//!
//! Pages of a mapping are handed back to the kernel after each batch of tiles
//! ([`RegionSource::release`], [`RegionSink::release`]), so the resident set stays bounded by
//! the tiles, not the file.

use super::atomic::{begin, commit};
use super::{ChannelLayout, IoError};
use crate::exec::Tensor;
use std::fs::File;
use std::io::BufReader;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// The most pixels (width × height) of a streamed image: 2^36 (e.g. 262,144 x 262,144).
pub const MAX_STREAM_PIXELS: u64 = 1 << 36;

/// Where an image's pixels come from, a rectangle at a time.
pub trait RegionSource {
    /// `[n, h, w, c]`.
    fn shape(&self) -> [usize; 4];
    /// Rows `rows` and columns `cols` of image `image` into `out` (`[rows, cols, c]`, f32).
    fn read_region(
        &mut self,
        image: usize,
        rows: Range<usize>,
        cols: Range<usize>,
        out: &mut [f32],
    ) -> Result<(), IoError>;
    /// Lets go of memory held for regions read so far (mapped pages, cached chunks).
    fn release(&mut self) {}
}

/// Where an output's pixels go, a run of pixels at a time.
pub trait RegionSink {
    /// Writes `values` (`len / k` pixels of `k` channels) at row `y`, columns from `x`, of
    /// image `image`.
    fn write_run(
        &mut self,
        image: usize,
        y: usize,
        x: usize,
        values: &[f32],
    ) -> Result<(), IoError>;
    /// Lets go of memory held for pixels written so far (their pages stay in the file).
    fn release(&mut self) {}
    /// Flushes, syncs and renames the finished file into place.
    fn finish(self: Box<Self>) -> Result<(), IoError>;
}

/// The pixel count of `[n, h, w, c]` as f32 bytes, checked.
fn f32_bytes(shape: [usize; 4]) -> Option<u64> {
    shape.iter().try_fold(4u64, |a, &d| a.checked_mul(d as u64))
}

pub(super) fn check_region(
    path: &Path,
    shape: [usize; 4],
    image: usize,
    rows: &Range<usize>,
    cols: &Range<usize>,
    out: &[f32],
) -> Result<(), IoError> {
    let [n, h, w, c] = shape;
    let ok = image < n
        && rows.start <= rows.end
        && rows.end <= h
        && cols.start <= cols.end
        && cols.end <= w
        && out.len() == rows.len() * cols.len() * c;
    if ok {
        Ok(())
    } else {
        Err(IoError::invalid(
            path,
            format!(
                "internal error: region {rows:?} x {cols:?} of image {image} does not fit shape \
                 {shape:?} or a buffer of {} values",
                out.len()
            ),
        ))
    }
}

/// The error for a NaN or infinite input value at index `at` (axes named by `axes`).
fn non_finite(path: &Path, v: f32, at: &[usize], axes: &str) -> IoError {
    IoError::invalid(
        path,
        format!(
            "holds {} at index {at:?} ({axes}); unetc refuses such inputs because the output \
             would be meaningless: replace them (e.g. numpy.nan_to_num) or fix what wrote the file",
            if v.is_nan() {
                "NaN"
            } else {
                "an infinite value"
            }
        ),
    )
}

/// A `<f4` `.npy` array read through a memory map.
pub struct NpySource {
    path: PathBuf,
    map: memmap2::Mmap,
    offset: usize,
    /// `[n, h, w, c]`; for a volume `[n·d, h, w, c]`.
    shape: [usize; 4],
    /// A volume's depth `d`.
    depth: Option<usize>,
    /// Byte range of the map read since the last release.
    touched: Option<(usize, usize)>,
}

impl NpySource {
    /// Maps `path` when it is a regular-file `<f4` array of rank 3 (HWC) or 4 (NHWC); `None`
    /// for anything else (read in memory instead).
    pub fn open(path: &Path) -> Result<Option<NpySource>, IoError> {
        Self::open_as(path, false)
    }

    /// Maps `path` when it is a regular-file `<f4` volume array of rank 4 (DHWC) or 5 (NDHWC);
    /// `None` for anything else. Its [`RegionSource::shape`] is `[n·d, h, w, c]`; the
    /// `(n, d, h, w, c)` shape is [`NpySource::volume_shape`].
    pub fn open_volume(path: &Path) -> Result<Option<NpySource>, IoError> {
        Self::open_as(path, true)
    }

    /// `(n, d, h, w, c)` of a volume opened by [`NpySource::open_volume`].
    pub fn volume_shape(&self) -> Option<[usize; 5]> {
        let [nd, h, w, c] = self.shape;
        self.depth.filter(|&d| d > 0).map(|d| [nd / d, d, h, w, c])
    }

    /// The shape messages name: `[n, h, w, c]`, or a volume's `[n, d, h, w, c]`.
    fn described_shape(&self) -> Vec<usize> {
        match self.volume_shape() {
            Some(v) => v.to_vec(),
            None => self.shape.to_vec(),
        }
    }

    fn open_as(path: &Path, volume: bool) -> Result<Option<NpySource>, IoError> {
        let Some((dims, offset)) = super::npy::f32_layout(path)? else {
            return Ok(None);
        };
        let (shape, depth) = match (volume, &dims[..]) {
            (false, &[h, w, c]) => ([1, h, w, c], None),
            (false, &[n, h, w, c]) => ([n, h, w, c], None),
            (true, &[d, h, w, c]) => ([d, h, w, c], Some(d)),
            // `n·d` cannot overflow: the byte length n·d·h·w·c·4 was checked.
            (true, &[n, d, h, w, c]) => ([n * d, h, w, c], Some(d)),
            _ => return Ok(None),
        };
        let file = File::open(path).map_err(|e| IoError::os(path, "cannot open", e))?;
        // SAFETY: the map is read only. If another process truncates the file while it is
        // mapped, reading past the new end raises SIGBUS (a crash, not a wrong result); unetc
        // never writes its inputs.
        let map =
            unsafe { memmap2::Mmap::map(&file) }.map_err(|e| IoError::os(path, "cannot map", e))?;
        let offset = usize::try_from(offset).unwrap_or(usize::MAX);
        // `f32_layout` checked offset + data == file length; the map has that length.
        if Some(map.len() as u64) != f32_bytes(shape).and_then(|b| b.checked_add(offset as u64)) {
            return Err(IoError::invalid(path, "changed while it was being opened"));
        }
        let mut source = NpySource {
            path: path.to_path_buf(),
            map,
            offset,
            shape,
            depth,
            touched: None,
        };
        source.refuse_non_finite()?;
        Ok(Some(source))
    }
}

impl NpySource {
    /// Scans the whole array once, a block at a time (each block's pages let go after it), so
    /// that NaN or infinite values are refused before any work, with their count and the first
    /// one's index, as the in-memory reader does.
    fn refuse_non_finite(&mut self) -> Result<(), IoError> {
        const BLOCK: usize = 4 << 20;
        let data = &self.map[self.offset..];
        let mut found: Option<super::NonFinite> = None;
        for (b, block) in data.chunks(BLOCK).enumerate() {
            for (j, v) in block.chunks_exact(4).enumerate() {
                let v = f32::from_le_bytes([v[0], v[1], v[2], v[3]]);
                if v.is_finite() {
                    continue;
                }
                match &mut found {
                    Some(f) => f.count += 1,
                    None => {
                        found = Some(super::NonFinite {
                            first: b * BLOCK / 4 + j,
                            first_kind: if v.is_nan() {
                                super::NonFiniteKind::NaN
                            } else if v > 0.0 {
                                super::NonFiniteKind::PlusInfinity
                            } else {
                                super::NonFiniteKind::MinusInfinity
                            },
                            count: 1,
                        })
                    }
                }
            }
            // SAFETY: as in `release`: a read-only shared file mapping.
            let _ = unsafe {
                self.map.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    self.offset + b * BLOCK,
                    block.len(),
                )
            };
        }
        match found {
            None => Ok(()),
            Some(f) => Err(IoError::invalid(
                &self.path,
                format!(
                    "{}; unetc refuses such inputs because the output would be meaningless: \
                     replace them (e.g. numpy.nan_to_num) or fix what wrote the file",
                    f.describe(&self.described_shape())
                ),
            )),
        }
    }
}

impl RegionSource for NpySource {
    fn shape(&self) -> [usize; 4] {
        self.shape
    }

    fn read_region(
        &mut self,
        image: usize,
        rows: Range<usize>,
        cols: Range<usize>,
        out: &mut [f32],
    ) -> Result<(), IoError> {
        check_region(&self.path, self.shape, image, &rows, &cols, out)?;
        let [_, h, w, c] = self.shape;
        let run = cols.len() * c;
        for (r, y) in rows.clone().enumerate() {
            // In bounds: the map holds n*h*w*c f32 after `offset` (checked at open).
            let start = self.offset + (((image * h + y) * w + cols.start) * c) * 4;
            let bytes = &self.map[start..start + run * 4];
            let dst = &mut out[r * run..(r + 1) * run];
            for (j, (d, b)) in dst.iter_mut().zip(bytes.chunks_exact(4)).enumerate() {
                let v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                if !v.is_finite() {
                    let (x, ch) = (cols.start + j / c, j % c);
                    return Err(match self.depth {
                        Some(d) => non_finite(
                            &self.path,
                            v,
                            &[image / d, image % d, y, x, ch],
                            "N, D, H, W, C",
                        ),
                        None => non_finite(&self.path, v, &[image, y, x, ch], "N, H, W, C"),
                    });
                }
                *d = v;
            }
            let (lo, hi) = self.touched.unwrap_or((start, start));
            self.touched = Some((lo.min(start), hi.max(start + run * 4)));
        }
        Ok(())
    }

    fn release(&mut self) {
        if let Some((lo, hi)) = self.touched.take() {
            drop_read_pages(&self.map, lo, hi);
        }
    }
}

/// How far around a read fault the kernel may map pages of a file mapping that are already
/// cached: Linux's fault-around (64 KiB by default) and, for large page-cache folios, the whole
/// folio (up to a 2 MiB huge page); both aligned in the file, which the maps start at.
const MAPPED_AROUND: usize = 2 << 20;

/// The [`MAPPED_AROUND`]-aligned window holding `lo..hi`, within a map of `len` bytes.
pub(super) fn mapped_around(lo: usize, hi: usize, len: usize) -> (usize, usize) {
    let lo = lo / MAPPED_AROUND * MAPPED_AROUND;
    let hi = hi
        .div_ceil(MAPPED_AROUND)
        .saturating_mul(MAPPED_AROUND)
        .min(len);
    (lo, hi)
}

/// Hands back the pages of `map` read in `lo..hi`, and those a read fault there may have mapped
/// around them (the [`MAPPED_AROUND`]-aligned window holding them), so that they do not pile up.
pub(super) fn drop_read_pages(map: &memmap2::Mmap, lo: usize, hi: usize) {
    let (lo, hi) = mapped_around(lo, hi, map.len());
    if lo < hi {
        // SAFETY: a read-only shared file mapping: dropped pages are read again from the file
        // on the next access, with the same contents.
        let _ =
            unsafe { map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, lo, hi - lo) };
    }
}

/// The `[planes, h, w, c]` view of a tensor: `[n, h, w, c]` images or `[d, h, w, c]` one volume
/// as they are, `[n, d, h, w, c]` volumes as `[n·d, h, w, c]`; empty for other ranks.
fn planes_of(shape: &[usize]) -> [usize; 4] {
    match shape[..] {
        [n, h, w, c] => [n, h, w, c],
        [n, d, h, w, c] => [n * d, h, w, c],
        _ => [0, 0, 0, 0],
    }
}

/// A tensor already in memory: images `[n, h, w, c]`, volumes `[n, d, h, w, c]` as planes.
pub struct TensorSource<'a> {
    pub tensor: &'a Tensor,
}

impl RegionSource for TensorSource<'_> {
    fn shape(&self) -> [usize; 4] {
        planes_of(&self.tensor.shape)
    }

    fn read_region(
        &mut self,
        image: usize,
        rows: Range<usize>,
        cols: Range<usize>,
        out: &mut [f32],
    ) -> Result<(), IoError> {
        let shape = self.shape();
        check_region(Path::new("<input>"), shape, image, &rows, &cols, out)?;
        let [_, h, w, c] = shape;
        let run = cols.len() * c;
        for (r, y) in rows.enumerate() {
            let start = ((image * h + y) * w + cols.start) * c;
            out[r * run..(r + 1) * run].copy_from_slice(&self.tensor.data[start..start + run]);
        }
        Ok(())
    }
}

/// An output collected in memory (float32): `[n, h, w, k]` images or `[n, d, h, w, k]` volumes
/// as planes.
pub struct TensorSink<'a> {
    pub tensor: &'a mut Tensor,
}

impl RegionSink for TensorSink<'_> {
    fn write_run(
        &mut self,
        image: usize,
        y: usize,
        x: usize,
        values: &[f32],
    ) -> Result<(), IoError> {
        let shape = planes_of(&self.tensor.shape);
        check_run(Path::new("<output>"), shape, image, y, x, values)?;
        let [_, h, w, k] = shape;
        let start = ((image * h + y) * w + x) * k;
        self.tensor.data[start..start + values.len()].copy_from_slice(values);
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<(), IoError> {
        Ok(())
    }
}

/// How a TIFF stores one sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sample {
    U8,
    U16,
    F32,
}

/// A TIFF or BigTIFF read one chunk (strip or tile) at a time.
pub struct TiffSource {
    path: PathBuf,
    decoder: tiff::decoder::Decoder<BufReader<File>>,
    h: usize,
    w: usize,
    /// Channels stored, and channels given (one less when alpha is dropped).
    stored: usize,
    given: usize,
    layout: ChannelLayout,
    sample: Sample,
    bands: Bands,
    /// The page the decoder is at (for channels stored as pages).
    page: usize,
    /// Chunk size (a strip is the image's width wide), chunks per row of chunks, and chunks of
    /// one band (all the channels when interleaved, one channel otherwise).
    chunk: (usize, usize),
    across: usize,
    chunks: usize,
    /// Decoded chunks as f32 (key `band * chunks + k`), oldest first, at most `cache_cap`
    /// bytes.
    cache: std::collections::VecDeque<(usize, Vec<f32>)>,
    cache_bytes: usize,
    cache_cap: usize,
}

/// The full-size pages of a TIFF (pages of reduced resolution, NewSubfileType bit 0, and pages
/// of other sizes, such as a pyramid's levels, a thumbnail or a slide's label, are not), and
/// what its description says they are.
struct FullPages {
    /// Indices of the full-size pages, the first page's included.
    pages: Vec<usize>,
    /// The first page's width and height.
    size: (u32, u32),
    /// The number of channels stored as pages, where OME-XML or ImageJ's description says the
    /// full-size pages are exactly the channels of one image.
    channels: Option<usize>,
    /// What the description says the pages are otherwise (for the refusal).
    declared: Option<String>,
}

/// Walks a TIFF's pages (at most 10,000); `None` for a file the tiff crate cannot walk (left to
/// the reader, which says why).
fn full_pages(path: &Path) -> Option<FullPages> {
    use tiff::decoder::Decoder;
    use tiff::tags::Tag;
    let file = File::open(path).ok()?;
    let mut decoder = Decoder::new(BufReader::new(file)).ok()?;
    let size = decoder.dimensions().ok()?;
    let description = decoder.get_tag_ascii_string(Tag::ImageDescription).ok();
    let mut pages = vec![0];
    let mut index = 0usize;
    while decoder.more_images() && index < 10_000 {
        index += 1;
        if decoder.next_image().is_err() {
            continue;
        }
        let reduced = decoder
            .find_tag_unsigned::<u32>(Tag::NewSubfileType)
            .ok()
            .flatten()
            .is_some_and(|t| t & 1 == 1);
        if !reduced && decoder.dimensions().ok() == Some(size) {
            pages.push(index);
        }
    }
    let (channels, declared) = match description.as_deref().map(page_axes) {
        Some(Some(axes)) if axes.channels == pages.len() && axes.planes == 1 => {
            (Some(axes.channels), None)
        }
        Some(Some(axes)) => (
            None,
            Some(format!(
                "its {} says {} channel(s) x {} z/time plane(s)",
                axes.source, axes.channels, axes.planes
            )),
        ),
        Some(None) | None => (None, None),
    };
    Some(FullPages {
        pages,
        size,
        channels,
        declared,
    })
}

/// What a TIFF's description says its pages are: OME-XML's first `Pixels` (`SizeC`, and
/// `SizeZ` x `SizeT` planes, one `Image` only, one sample per channel) or ImageJ's
/// `channels=`/`slices=`/`frames=`.
struct PageAxes {
    source: &'static str,
    channels: usize,
    planes: usize,
}

fn page_axes(description: &str) -> Option<PageAxes> {
    let number = |v: Option<&str>| -> Option<usize> { v?.trim().parse().ok() };
    if description.contains("<OME") {
        if description.matches("<Image ").count() != 1 {
            return None;
        }
        let pixels = &description[description.find("<Pixels ")?..];
        let pixels = &pixels[..pixels.find('>')?];
        let size = |name: &str| number(xml_attribute(pixels, name)).filter(|&n| n >= 1);
        let per_channel = description
            .match_indices("<Channel ")
            .filter_map(|(at, _)| {
                let tag = &description[at..];
                number(xml_attribute(&tag[..tag.find('>')?], "SamplesPerPixel"))
            })
            .all(|n| n == 1);
        if !per_channel {
            return None;
        }
        return Some(PageAxes {
            source: "OME-XML",
            channels: size("SizeC")?,
            planes: size("SizeZ")?.checked_mul(size("SizeT")?)?,
        });
    }
    if description.starts_with("ImageJ=") {
        let value = |key: &str| {
            description.lines().find_map(|line| {
                let (k, v) = line.split_once('=')?;
                (k.trim() == key).then_some(v)
            })
        };
        let or_one = |key: &str| match value(key) {
            Some(v) => number(Some(v)),
            None => Some(1),
        };
        return Some(PageAxes {
            source: "ImageJ description",
            channels: or_one("channels")?,
            planes: or_one("slices")?.checked_mul(or_one("frames")?)?,
        });
    }
    None
}

/// The value of `name="..."` (or `'...'`) in an XML tag's text.
fn xml_attribute<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let mut rest = tag;
    loop {
        let at = rest.find(name)?;
        let before = rest[..at].chars().next_back();
        let after = rest[at + name.len()..].trim_start();
        rest = &rest[at + name.len()..];
        if !before.is_some_and(char::is_whitespace) {
            continue;
        }
        let Some(value) = after.strip_prefix('=') else {
            continue;
        };
        let value = value.trim_start();
        let quote = value.chars().next()?;
        if quote != '"' && quote != '\'' {
            return None;
        }
        let value = &value[1..];
        return value.find(quote).map(|end| &value[..end]);
    }
}

/// Whether a TIFF stores its channels as pages, as OME-XML or ImageJ's description says
/// (then only [`TiffSource`] reads it whole); an error for a TIFF whose further full-size pages
/// are anything else (a z-stack, a time series), which a reader of one page would read as its
/// first page alone.
pub fn channel_pages(path: &Path) -> Result<bool, IoError> {
    match full_pages(path) {
        Some(found) if found.pages.len() > 1 => match found.channels {
            Some(_) => Ok(true),
            None => Err(page_stack_error(path, &found)),
        },
        Some(_) | None => Ok(false),
    }
}

fn page_stack_error(path: &Path, found: &FullPages) -> IoError {
    let (w, h) = found.size;
    let full = found.pages.len();
    let why = match &found.declared {
        Some(declared) => format!(
            "has {full} full-size pages of {w}x{h} (W x H), and {declared}; unetc reads one \
             image per TIFF, and pages as channels only where they are all the channels of one \
             image: save each image as a TIFF of its own, or as a .npy (N, H, W, C)"
        ),
        None => format!(
            "has {full} full-size pages of {w}x{h} (W x H): a z-stack, a time series or \
             channels stored as pages; unetc reads one image per TIFF and would take the first \
             page alone. Channels as pages are read where the file says so (OME-TIFF's SizeC, \
             ImageJ's channels=); otherwise save each page as a TIFF of its own, or the stack as \
             a .npy (N, H, W, C)"
        ),
    };
    IoError::invalid(path, why)
}

/// Where a TIFF keeps its channels.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Bands {
    /// Interleaved in each chunk (planar configuration 1).
    Interleaved,
    /// Each channel in its own plane of the page (planar configuration 2): chunk
    /// `channel * chunks + k` is the channel's chunk `k`.
    Planes,
    /// Each channel a page of its own (indices of the pages, in channel order).
    Pages(Vec<usize>),
}

/// How one TIFF page stores its pixels: what [`TiffSource`] needs to read its chunks.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PageFormat {
    layout: ChannelLayout,
    sample: Sample,
    /// Planar configuration 2: each channel in planes of its own.
    planar: bool,
    /// Chunk size (a strip is the image's width wide), chunks per row of chunks, and chunks
    /// per channel plane (all of them when interleaved).
    chunk: (usize, usize),
    across: usize,
    chunks: usize,
}

impl PageFormat {
    /// The decoder's current page, of `w x h` pixels: refused unless a layout this reader
    /// handles.
    fn read(
        decoder: &mut tiff::decoder::Decoder<BufReader<File>>,
        path: &Path,
        (w, h): (usize, usize),
    ) -> Result<PageFormat, IoError> {
        use tiff::decoder::ChunkType;
        use tiff::tags::Tag;
        use tiff::ColorType;
        let bad = |e: tiff::TiffError| {
            IoError::invalid(path, format!("is not a TIFF unetc can read: {e}"))
        };
        let color = decoder.colortype().map_err(bad)?;
        let (layout, bits) = match color {
            ColorType::Gray(b) => (ChannelLayout::Gray, b),
            ColorType::GrayA(b) => (ChannelLayout::GrayAlpha, b),
            ColorType::RGB(b) => (ChannelLayout::Rgb, b),
            ColorType::RGBA(b) => (ChannelLayout::Rgba, b),
            // `ColorType` is non-exhaustive: palette, CMYK, YCbCr, multiband and later kinds.
            other => {
                return Err(IoError::invalid(
                    path,
                    format!(
                        "stores pixels as {other:?}; unetc streams gray, gray+alpha, RGB and RGBA \
                         TIFFs: convert it"
                    ),
                ))
            }
        };
        let format = decoder
            .find_tag_unsigned_vec::<u16>(Tag::SampleFormat)
            .map_err(bad)?
            .and_then(|v| v.first().copied())
            .unwrap_or(1);
        let sample = match (bits, format) {
            (8, 1) => Sample::U8,
            (16, 1) => Sample::U16,
            (32, 3) => Sample::F32,
            _ => {
                let kind = match format {
                    1 => "unsigned integer",
                    2 => "signed integer",
                    3 => "floating-point",
                    _ => "unknown-format",
                };
                return Err(IoError::invalid(
                    path,
                    format!(
                        "has {bits}-bit {kind} samples; unetc streams 8- and 16-bit unsigned and \
                         32-bit float TIFFs: convert it"
                    ),
                ));
            }
        };
        let photometric = decoder
            .find_tag_unsigned::<u16>(Tag::PhotometricInterpretation)
            .map_err(bad)?;
        if photometric == Some(0) {
            return Err(IoError::invalid(
                path,
                "stores gray as min-is-white (0 = white); unetc does not invert images silently: \
                 save it min-is-black",
            ));
        }
        let planar = decoder
            .find_tag_unsigned::<u16>(Tag::PlanarConfiguration)
            .map_err(bad)?
            == Some(2)
            && layout.channels() > 1;
        let (cw, ch) = decoder.chunk_dimensions();
        let (cw, ch) = (cw as usize, ch as usize);
        let (across, count) = match decoder.get_chunk_type() {
            ChunkType::Strip => (1, decoder.strip_count().map_err(bad)? as usize),
            ChunkType::Tile => (
                w.div_ceil(cw.max(1)),
                decoder.tile_count().map_err(bad)? as usize,
            ),
        };
        let down = h.div_ceil(ch.max(1));
        let planes = if planar { layout.channels() } else { 1 };
        let chunks = across.saturating_mul(down);
        if cw == 0 || ch == 0 || count != chunks.saturating_mul(planes) {
            return Err(IoError::invalid(
                path,
                format!(
                    "declares chunks of {cw}x{ch} (W x H) but {count} of them for an image of \
                     {w}x{h}{}; the file is damaged",
                    if planar {
                        format!(" in {planes} planes")
                    } else {
                        String::new()
                    }
                ),
            ));
        }
        Ok(PageFormat {
            layout,
            sample,
            planar,
            chunk: (cw, ch),
            across,
            chunks,
        })
    }
}

impl TiffSource {
    /// Opens a TIFF for streaming: its first image (or its channel pages), checked to be a
    /// layout this reader handles and no chunk of which decodes to more than `cache_cap` bytes
    /// of f32. The error says why not otherwise.
    pub fn open(path: &Path, cache_cap: usize) -> Result<TiffSource, IoError> {
        use tiff::decoder::Decoder;
        let file = File::open(path).map_err(|e| IoError::os(path, "cannot open", e))?;
        let bad = |e: tiff::TiffError| {
            IoError::invalid(path, format!("is not a TIFF unetc can read: {e}"))
        };
        let mut decoder = Decoder::new(BufReader::new(file)).map_err(bad)?;
        let channel_pages = match full_pages(path) {
            Some(found) if found.pages.len() > 1 => match found.channels {
                Some(_) => Some(found.pages),
                None => return Err(page_stack_error(path, &found)),
            },
            Some(_) | None => None,
        };
        let (w, h) = decoder.dimensions().map_err(bad)?;
        let (w, h) = (w as usize, h as usize);
        let pixels = w as u64 * h as u64;
        if pixels == 0 || pixels > MAX_STREAM_PIXELS {
            return Err(IoError::invalid(
                path,
                format!(
                    "is {w}x{h} (W x H) = {pixels} pixels; unetc streams images of 1 to \
                     {MAX_STREAM_PIXELS} pixels"
                ),
            ));
        }
        let first = PageFormat::read(&mut decoder, path, (w, h))?;
        let (layout, bands) = match channel_pages {
            None if first.planar => (first.layout, Bands::Planes),
            None => (first.layout, Bands::Interleaved),
            Some(pages) => {
                // Every channel page one gray channel, stored as the first page is.
                for (channel, &page) in pages.iter().enumerate() {
                    decoder.seek_to_image(page).map_err(bad)?;
                    let format = PageFormat::read(&mut decoder, path, (w, h))?;
                    if format.layout != ChannelLayout::Gray || format != first {
                        return Err(IoError::invalid(
                            path,
                            format!(
                                "stores its channels as pages, but page {page} (channel \
                                 {channel}) is {} {:?} in chunks of {}x{}, not one gray channel \
                                 stored as page 0 is; save it as an interleaved TIFF or a .npy",
                                format.layout.with_article(),
                                format.sample,
                                format.chunk.0,
                                format.chunk.1
                            ),
                        ));
                    }
                }
                (
                    ChannelLayout::Multichannel(pages.len()),
                    Bands::Pages(pages),
                )
            }
        };
        let stored = layout.channels();
        let per_chunk = match bands {
            Bands::Interleaved => stored,
            Bands::Planes | Bands::Pages(_) => 1,
        };
        let (cw, ch) = first.chunk;
        let chunk_bytes = (cw as u64) * (ch as u64) * per_chunk as u64 * 4;
        if chunk_bytes > cache_cap as u64 {
            return Err(IoError::invalid(
                path,
                format!(
                    "stores its pixels in chunks of {cw}x{ch} (W x H), {} each as f32, more than \
                     the {} set aside for reading it; save it as a tiled TIFF (e.g. tiles of \
                     256x256: `tiffcp -t -w 256 -l 256`, or tifffile's tile=(256, 256)) or with \
                     fewer rows per strip",
                    crate::text::bytes(chunk_bytes),
                    crate::text::bytes(cache_cap as u64)
                ),
            ));
        }
        let page = match &bands {
            Bands::Pages(pages) => pages.last().copied().unwrap_or(0),
            Bands::Interleaved | Bands::Planes => 0,
        };
        Ok(TiffSource {
            path: path.to_path_buf(),
            decoder,
            h,
            w,
            stored,
            given: stored,
            layout,
            sample: first.sample,
            bands,
            page,
            chunk: (cw, ch),
            across: first.across,
            chunks: first.chunks,
            cache: Default::default(),
            cache_bytes: 0,
            cache_cap,
        })
    }

    /// What the stored channels are.
    pub fn layout(&self) -> ChannelLayout {
        self.layout
    }

    /// The full intensity of integer samples (255, 65535), which [`RegionSource::read_region`]
    /// divides by; `None` for float samples (given as stored).
    pub fn full_scale(&self) -> Option<f32> {
        match self.sample {
            Sample::U8 => Some(255.0),
            Sample::U16 => Some(65535.0),
            Sample::F32 => None,
        }
    }

    /// Gives every channel but the last (alpha).
    pub fn drop_alpha(&mut self) {
        self.given = self.stored.saturating_sub(1).max(1);
    }

    /// Chunk `index` of channel band `band` (0 when interleaved) decoded to f32 (scaled to
    /// [0, 1] for integer samples): its place in the cache.
    fn chunk(&mut self, band: usize, index: usize) -> Result<usize, IoError> {
        let key = band * self.chunks + index;
        if let Some(at) = self.cache.iter().position(|(i, _)| *i == key) {
            return Ok(at);
        }
        let bad = |e: tiff::TiffError| {
            IoError::invalid(&self.path, format!("cannot decode chunk {index}: {e}"))
        };
        let bands = match &self.bands {
            Bands::Interleaved => 1,
            Bands::Planes => self.stored,
            Bands::Pages(pages) => pages.len(),
        };
        if index >= self.chunks || band >= bands {
            return Err(IoError::invalid(
                &self.path,
                format!(
                    "internal error: chunk {index} of {} in band {band} of {bands}",
                    self.chunks
                ),
            ));
        }
        let stored_index = match &self.bands {
            Bands::Interleaved => index,
            Bands::Planes => key,
            Bands::Pages(pages) => {
                if self.page != pages[band] {
                    self.decoder.seek_to_image(pages[band]).map_err(bad)?;
                    self.page = pages[band];
                }
                index
            }
        };
        use tiff::decoder::DecodingResult;
        let data: Vec<f32> = match self.decoder.read_chunk(stored_index as u32).map_err(bad)? {
            DecodingResult::U8(v) if self.sample == Sample::U8 => {
                v.iter().map(|&b| f32::from(b) / 255.0).collect()
            }
            DecodingResult::U16(v) if self.sample == Sample::U16 => {
                v.iter().map(|&b| f32::from(b) / 65535.0).collect()
            }
            DecodingResult::F32(v) if self.sample == Sample::F32 => v,
            other => {
                return Err(IoError::invalid(
                    &self.path,
                    format!(
                        "chunk {index} decodes to {} samples, not the {:?} its tags declare; the \
                         file is damaged",
                        decoded_kind(&other),
                        self.sample
                    ),
                ))
            }
        };
        let bytes = data.len() * 4;
        while self.cache_bytes + bytes > self.cache_cap {
            match self.cache.pop_front() {
                Some((_, old)) => self.cache_bytes -= old.len() * 4,
                None => break,
            }
        }
        self.cache_bytes += bytes;
        self.cache.push_back((key, data));
        Ok(self.cache.len() - 1)
    }
}

fn decoded_kind(d: &tiff::decoder::DecodingResult) -> &'static str {
    use tiff::decoder::DecodingResult as D;
    match d {
        D::U8(_) => "u8",
        D::U16(_) => "u16",
        D::U32(_) => "u32",
        D::U64(_) => "u64",
        D::F16(_) => "f16",
        D::F32(_) => "f32",
        D::F64(_) => "f64",
        D::I8(_) => "i8",
        D::I16(_) => "i16",
        D::I32(_) => "i32",
        D::I64(_) => "i64",
    }
}

impl RegionSource for TiffSource {
    fn shape(&self) -> [usize; 4] {
        [1, self.h, self.w, self.given]
    }

    fn read_region(
        &mut self,
        image: usize,
        rows: Range<usize>,
        cols: Range<usize>,
        out: &mut [f32],
    ) -> Result<(), IoError> {
        check_region(&self.path, self.shape(), image, &rows, &cols, out)?;
        if rows.is_empty() || cols.is_empty() {
            return Ok(());
        }
        let (cw, ch) = self.chunk;
        let (stored, given) = (self.stored, self.given);
        let region_w = cols.len();
        // Each band holds `per_chunk` channels from channel `band * per_chunk` on; a dropped
        // alpha channel's band is not read.
        let (bands, per_chunk) = match &self.bands {
            Bands::Interleaved => (1, stored),
            Bands::Planes => (given, 1),
            Bands::Pages(pages) => (pages.len().min(given), 1),
        };
        for band in 0..bands {
            let channels = (band * per_chunk)..(band * per_chunk + per_chunk).min(given);
            for cy in rows.start / ch..=(rows.end - 1) / ch {
                let (cx0, cx1) = if self.across == 1 {
                    (0, 0)
                } else {
                    (cols.start / cw, (cols.end - 1) / cw)
                };
                for cx in cx0..=cx1 {
                    let index = cy * self.across + cx;
                    // The chunk's own extent in the image (edge chunks hold only the image's
                    // part; a tile of a later plane may come with its padding rows).
                    let (x0, y0) = (cx * cw, cy * ch);
                    let data_w = if self.across == 1 {
                        self.w
                    } else {
                        cw.min(self.w - x0)
                    };
                    let data_h = ch.min(self.h - y0);
                    let at = self.chunk(band, index)?;
                    let data = &self.cache[at].1;
                    let row = data_w * per_chunk;
                    if data.len() % row != 0 || data.len() / row < data_h {
                        return Err(IoError::invalid(
                            &self.path,
                            format!(
                                "chunk {index} holds {} samples, not {data_w}x{data_h}x{per_chunk}; \
                                 the file is damaged",
                                data.len()
                            ),
                        ));
                    }
                    let ys = rows.start.max(y0)..rows.end.min(y0 + data_h);
                    let xs = cols.start.max(x0)..cols.end.min(x0 + data_w);
                    for y in ys {
                        for x in xs.clone() {
                            let src = ((y - y0) * data_w + (x - x0)) * per_chunk;
                            let dst = ((y - rows.start) * region_w + (x - cols.start)) * given;
                            for (k, channel) in channels.clone().enumerate() {
                                let v = data[src + k];
                                if !v.is_finite() {
                                    return Err(non_finite(
                                        &self.path,
                                        v,
                                        &[0, y, x, channel],
                                        "N, H, W, C",
                                    ));
                                }
                                out[dst + channel] = v;
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn release(&mut self) {}
}

/// Reserves `len` bytes of disk for `file`, so that writing through a map never meets a full
/// disk (which would be SIGBUS, not an error).
pub(super) fn reserve(file: &File, len: u64, path: &Path) -> Result<(), IoError> {
    file.set_len(len)
        .map_err(|e| IoError::os(path, "cannot write", e))?;
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::io::AsRawFd;
        let len = libc::off_t::try_from(len).unwrap_or(libc::off_t::MAX);
        // SAFETY: a plain system call on an open file descriptor.
        let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
        // EINVAL/EOPNOTSUPP: the file system cannot reserve; the write checks then.
        if rc != 0 && rc != libc::EINVAL && rc != libc::EOPNOTSUPP {
            return Err(IoError::os(
                path,
                "cannot reserve disk space for the output",
                std::io::Error::from_raw_os_error(rc),
            ));
        }
    }
    Ok(())
}

/// What an output stores for each pixel of the model's `k` output channels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Samples {
    /// The `k` channels as float32 (probabilities).
    Float32,
    /// One uint8 label: the most likely channel's index (the first of equals), or for one
    /// channel 1 where it exceeds `threshold`, else 0.
    Label { threshold: f32 },
}

impl Samples {
    /// Samples per pixel for a model output of `k` channels.
    pub fn per_pixel(self, k: usize) -> usize {
        match self {
            Samples::Float32 => k,
            Samples::Label { .. } => 1,
        }
    }

    fn bytes(self) -> usize {
        match self {
            Samples::Float32 => 4,
            Samples::Label { .. } => 1,
        }
    }

    /// Appends the stored bytes of `values` (whole pixels of `k` channels) to `out`.
    fn encode(self, values: &[f32], k: usize, out: &mut Vec<u8>) {
        match self {
            Samples::Float32 => {
                for v in values {
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
            Samples::Label { threshold } => {
                out.extend(values.chunks_exact(k).map(|p| label(p, threshold)));
            }
        }
    }
}

/// A pixel's label (see [`Samples::Label`]); the model has at most 256 channels here.
pub fn label(p: &[f32], threshold: f32) -> u8 {
    if let [v] = p {
        return u8::from(*v > threshold);
    }
    argmax(p).min(255) as u8
}

/// The index of a pixel's largest channel value, the first of equal ones.
pub fn argmax(p: &[f32]) -> usize {
    p.iter()
        .enumerate()
        .fold(0, |best, (i, &v)| if v > p[best] { i } else { best })
}

/// The shape a sink stores for a model output of `shape` (`[n, h, w, k]`).
fn stored(shape: [usize; 4], samples: Samples) -> [usize; 4] {
    let [n, h, w, k] = shape;
    [n, h, w, samples.per_pixel(k)]
}

/// `[planes, h, w, k]` of an output of `dims` (`[n, h, w, k]` or `[n, d, h, w, k]`), checked.
fn planes_checked(path: &Path, dims: &[usize]) -> Result<[usize; 4], IoError> {
    let too_large = || IoError::invalid(path, format!("an output of shape {dims:?} is too large"));
    match dims[..] {
        [n, h, w, k] => Ok([n, h, w, k]),
        [n, d, h, w, k] => Ok([n.checked_mul(d).ok_or_else(too_large)?, h, w, k]),
        _ => Err(IoError::invalid(
            path,
            format!("internal error: an output of shape {dims:?} is not (N, H, W, C) or (N, D, H, W, C)"),
        )),
    }
}

/// A `.npy` output (`<f4`, or `|u1` for labels) written through a memory map.
pub struct NpySink {
    path: PathBuf,
    force: bool,
    temp: tempfile::NamedTempFile,
    map: memmap2::MmapMut,
    offset: usize,
    shape: [usize; 4],
    samples: Samples,
    scratch: Vec<u8>,
    touched: Option<(usize, usize)>,
}

impl NpySink {
    /// A temporary file beside `path`, created at the final size of the array stored for a
    /// model output of `dims` (`[n, h, w, k]` NHWC or `[n, d, h, w, k]` NDHWC, as the in-memory
    /// writer writes them).
    pub fn create(
        path: &Path,
        dims: &[usize],
        samples: Samples,
        force: bool,
    ) -> Result<NpySink, IoError> {
        let shape = planes_checked(path, dims)?;
        let descr = match samples {
            Samples::Float32 => "<f4",
            Samples::Label { .. } => "|u1",
        };
        let mut header_dims = dims.to_vec();
        if let Some(k) = header_dims.last_mut() {
            *k = samples.per_pixel(*k);
        }
        let header = super::npy::header_bytes_of(descr, &header_dims);
        let total = stored(shape, samples)
            .iter()
            .try_fold(samples.bytes() as u64, |a, &d| a.checked_mul(d as u64))
            .and_then(|b| b.checked_add(header.len() as u64))
            .filter(|&t| usize::try_from(t).is_ok())
            .ok_or_else(|| {
                IoError::invalid(path, format!("an output of shape {dims:?} is too large"))
            })?;
        let temp = begin(path, force)?;
        reserve(temp.as_file(), total, path)?;
        // SAFETY: the temporary file is ours alone (created exclusively, hidden name) and has
        // its disk space reserved; nothing else maps or truncates it.
        let mut map = unsafe { memmap2::MmapMut::map_mut(temp.as_file()) }
            .map_err(|e| IoError::os(path, "cannot map", e))?;
        if map.len() as u64 != total {
            return Err(IoError::invalid(path, "internal error: map size"));
        }
        map[..header.len()].copy_from_slice(&header);
        Ok(NpySink {
            path: path.to_path_buf(),
            force,
            temp,
            map,
            offset: header.len(),
            shape,
            samples,
            scratch: Vec::new(),
            touched: None,
        })
    }
}

pub(super) fn check_run(
    path: &Path,
    shape: [usize; 4],
    image: usize,
    y: usize,
    x: usize,
    values: &[f32],
) -> Result<(), IoError> {
    let [n, h, w, k] = shape;
    if image < n && y < h && k > 0 && values.len() % k == 0 && x + values.len() / k <= w {
        Ok(())
    } else {
        Err(IoError::invalid(
            path,
            format!(
                "internal error: {} values at image {image}, row {y}, column {x} do not fit \
                 shape {shape:?}",
                values.len()
            ),
        ))
    }
}

impl RegionSink for NpySink {
    fn write_run(
        &mut self,
        image: usize,
        y: usize,
        x: usize,
        values: &[f32],
    ) -> Result<(), IoError> {
        check_run(&self.path, self.shape, image, y, x, values)?;
        let [_, h, w, k] = self.shape;
        let per_pixel = self.samples.per_pixel(k) * self.samples.bytes();
        self.scratch.clear();
        self.samples.encode(values, k, &mut self.scratch);
        let start = self.offset + ((image * h + y) * w + x) * per_pixel;
        let end = start + self.scratch.len();
        self.map[start..end].copy_from_slice(&self.scratch);
        let (lo, hi) = self.touched.unwrap_or((start, end));
        self.touched = Some((lo.min(start), hi.max(end)));
        Ok(())
    }

    fn release(&mut self) {
        if let Some((lo, hi)) = self.touched.take() {
            // Written pages go to the file first; then they leave the resident set.
            if self.map.flush_async_range(lo, hi - lo).is_ok() {
                // With the pages a fault may have mapped around them.
                let (lo, hi) = mapped_around(lo, hi, self.map.len());
                // SAFETY: a shared file mapping: dropping its pages keeps their contents in the
                // file (dirty pages are written back), and later reads see them.
                let _ = unsafe {
                    self.map
                        .unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, lo, hi - lo)
                };
            }
        }
    }

    fn finish(self: Box<Self>) -> Result<(), IoError> {
        let NpySink {
            path,
            force,
            temp,
            map,
            ..
        } = *self;
        map.flush()
            .map_err(|e| IoError::os(&path, "cannot write", e))?;
        drop(map);
        commit(temp, &path, force)
    }
}

/// The side of a tile in a written TIFF.
pub const TIFF_TILE: usize = 256;

/// An uncompressed tiled BigTIFF (one image: `k` float32 channels, min-is-black with `k - 1`
/// unspecified extra samples; or one uint8 label per pixel), written with positional writes
/// into a file created at its final size: any pixel can be written in any order.
pub struct TiffSink {
    path: PathBuf,
    force: bool,
    temp: tempfile::NamedTempFile,
    h: usize,
    w: usize,
    /// The model's channels per pixel (what `write_run` takes).
    k: usize,
    samples: Samples,
    data_start: u64,
    scratch: Vec<u8>,
    /// The OME-XML ImageDescription of an `.ome.tif` output (NUL-terminated).
    ome: Option<Vec<u8>>,
}

/// Whether `path` names an OME-TIFF (`.ome.tif`, `.ome.tiff`).
fn is_ome_tiff(path: &Path) -> bool {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    name.ends_with(".ome.tif") || name.ends_with(".ome.tiff")
}

/// OME-XML (schema 2016-06) for one image of `h` x `w` pixels of `stored` interleaved samples:
/// one plane, one channel of `stored` samples (Bio-Formats's reading of chunky samples), in the
/// file's first IFD.
fn ome_xml(name: &str, h: usize, w: usize, stored: usize, samples: Samples) -> String {
    let escaped: String = name
        .chars()
        .map(|c| match c {
            '&' => "&amp;".to_string(),
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '"' => "&quot;".to_string(),
            '\'' => "&apos;".to_string(),
            c if c.is_control() => "_".to_string(),
            c => c.to_string(),
        })
        .collect();
    let kind = match samples {
        Samples::Float32 => "float",
        Samples::Label { .. } => "uint8",
    };
    let schema = "http://www.openmicroscopy.org/Schemas/OME/2016-06";
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
         <OME xmlns=\"{schema}\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" \
         xsi:schemaLocation=\"{schema} {schema}/ome.xsd\" Creator=\"unetc {}\">\
         <Image ID=\"Image:0\" Name=\"{escaped}\">\
         <Pixels ID=\"Pixels:0\" DimensionOrder=\"XYCZT\" Type=\"{kind}\" SizeX=\"{w}\" \
         SizeY=\"{h}\" SizeC=\"{stored}\" SizeZ=\"1\" SizeT=\"1\" Interleaved=\"true\" \
         BigEndian=\"false\">\
         <Channel ID=\"Channel:0:0\" SamplesPerPixel=\"{stored}\"/>\
         <TiffData IFD=\"0\" PlaneCount=\"1\"/>\
         </Pixels></Image></OME>",
        env!("CARGO_PKG_VERSION")
    )
}

/// BigTIFF field types.
const SHORT: u16 = 3;
const LONG: u16 = 4;
const LONG8: u16 = 16;

impl TiffSink {
    pub fn create(
        path: &Path,
        shape: [usize; 4],
        samples: Samples,
        force: bool,
    ) -> Result<TiffSink, IoError> {
        let [n, h, w, k] = shape;
        let stored = samples.per_pixel(k);
        if n != 1 {
            return Err(IoError::invalid(
                path,
                format!("{n} images cannot go into one TIFF; write .npy, or give one image"),
            ));
        }
        let too_large = || {
            IoError::invalid(
                path,
                format!("an output of {w}x{h} (W x H) x {k} is too large for a TIFF"),
            )
        };
        if h == 0
            || w == 0
            || k == 0
            || k > u16::MAX as usize
            || w > u32::MAX as usize
            || h > u32::MAX as usize
        {
            return Err(too_large());
        }
        let t = TIFF_TILE as u64;
        let tiles = (w as u64).div_ceil(t) * (h as u64).div_ceil(t);
        let tile_bytes = t * t * (stored * samples.bytes()) as u64;
        let ome = is_ome_tiff(path).then(|| {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("image");
            let mut xml = ome_xml(name, h, w, stored, samples).into_bytes();
            xml.push(0);
            xml
        });
        // Header 16, IFD: count 8 + 20 per entry + next 8; arrays after it (the OME-XML last).
        let entries: u64 = 12 + u64::from(stored > 1) + u64::from(ome.is_some());
        let shorts = |count: u64| if count * 2 > 8 { count * 2 } else { 0 };
        let longs8 = |count: u64| if count * 8 > 8 { count * 8 } else { 0 };
        let arrays = 2 * shorts(stored as u64)
            + shorts(stored as u64 - 1)
            + 2 * longs8(tiles)
            + ome.as_ref().map_or(0, |x| x.len() as u64);
        let data_start = (16 + 8 + 20 * entries + 8 + arrays).next_multiple_of(4096);
        let total = tiles
            .checked_mul(tile_bytes)
            .and_then(|d| d.checked_add(data_start))
            .ok_or_else(too_large)?;
        let temp = begin(path, force)?;
        reserve(temp.as_file(), total, path)?;
        let mut sink = TiffSink {
            path: path.to_path_buf(),
            force,
            temp,
            h,
            w,
            k,
            samples,
            data_start,
            scratch: Vec::new(),
            ome,
        };
        sink.write_header(entries, tiles, tile_bytes)?;
        Ok(sink)
    }

    fn write_at(&self, bytes: &[u8], offset: u64) -> Result<(), IoError> {
        use std::os::unix::fs::FileExt;
        self.temp
            .as_file()
            .write_all_at(bytes, offset)
            .map_err(|e| IoError::os(&self.path, "cannot write", e))
    }

    fn write_header(&mut self, entries: u64, tiles: u64, tile_bytes: u64) -> Result<(), IoError> {
        let k = self.samples.per_pixel(self.k) as u64;
        // Bits and SampleFormat (1: unsigned integer, 3: IEEE float) of each sample.
        let (bits, format) = match self.samples {
            Samples::Float32 => (32, 3),
            Samples::Label { .. } => (8, 1),
        };
        let mut head: Vec<u8> = Vec::new();
        head.extend_from_slice(b"II");
        head.extend_from_slice(&43u16.to_le_bytes());
        head.extend_from_slice(&8u16.to_le_bytes());
        head.extend_from_slice(&0u16.to_le_bytes());
        head.extend_from_slice(&16u64.to_le_bytes());
        head.extend_from_slice(&entries.to_le_bytes());
        // Out-of-line arrays start after the IFD.
        let mut next_array = 16 + 8 + 20 * entries + 8;
        let mut arrays: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut entry = |head: &mut Vec<u8>, tag: u16, kind: u16, values: &[u64]| {
            let size = match kind {
                SHORT => 2,
                LONG => 4,
                _ => 8,
            };
            let mut bytes = Vec::with_capacity(values.len() * size);
            for &v in values {
                bytes.extend_from_slice(&v.to_le_bytes()[..size]);
            }
            head.extend_from_slice(&tag.to_le_bytes());
            head.extend_from_slice(&kind.to_le_bytes());
            head.extend_from_slice(&(values.len() as u64).to_le_bytes());
            if bytes.len() <= 8 {
                bytes.resize(8, 0);
                head.extend_from_slice(&bytes);
            } else {
                head.extend_from_slice(&next_array.to_le_bytes());
                let len = bytes.len() as u64;
                arrays.push((next_array, bytes));
                next_array += len;
            }
        };
        let t = TIFF_TILE as u64;
        let per = |v: u64| vec![v; k as usize];
        entry(&mut head, 256, LONG, &[self.w as u64]);
        entry(&mut head, 257, LONG, &[self.h as u64]);
        entry(&mut head, 258, SHORT, &per(bits));
        entry(&mut head, 259, SHORT, &[1]); // no compression
        entry(&mut head, 262, SHORT, &[1]); // min-is-black
                                            // ImageDescription (ASCII, 2): after every other array.
        let shorts = |count: u64| if count * 2 > 8 { count * 2 } else { 0 };
        let after_shorts = 16 + 8 + 20 * entries + 8 + 2 * shorts(k) + shorts(k - 1);
        let description_at = after_shorts + if tiles > 1 { 16 * tiles } else { 0 };
        if let Some(xml) = &self.ome {
            head.extend_from_slice(&270u16.to_le_bytes());
            head.extend_from_slice(&2u16.to_le_bytes());
            head.extend_from_slice(&(xml.len() as u64).to_le_bytes());
            head.extend_from_slice(&description_at.to_le_bytes());
        }
        entry(&mut head, 277, SHORT, &[k]);
        entry(&mut head, 284, SHORT, &[1]); // chunky
        entry(&mut head, 322, LONG, &[t]);
        entry(&mut head, 323, LONG, &[t]);
        // Tile offsets and byte counts are written below, a block at a time.
        // After the IFD and the three SHORT arrays (bits, extra samples, sample format).
        let offsets_at = after_shorts;
        let (offsets_at, counts_at) = if tiles > 1 {
            (offsets_at, offsets_at + tiles * 8)
        } else {
            (0, 0)
        };
        let tile_entry = |head: &mut Vec<u8>, tag: u16, at: u64, single: u64| {
            head.extend_from_slice(&tag.to_le_bytes());
            head.extend_from_slice(&LONG8.to_le_bytes());
            head.extend_from_slice(&tiles.to_le_bytes());
            head.extend_from_slice(&(if tiles > 1 { at } else { single }).to_le_bytes());
        };
        tile_entry(&mut head, 324, offsets_at, self.data_start);
        tile_entry(&mut head, 325, counts_at, tile_bytes);
        if k > 1 {
            entry(&mut head, 338, SHORT, &vec![0; k as usize - 1]); // unspecified extra samples
        }
        entry(&mut head, 339, SHORT, &per(format));
        head.extend_from_slice(&0u64.to_le_bytes()); // no next IFD
        self.write_at(&head, 0)?;
        for (at, bytes) in &arrays {
            self.write_at(bytes, *at)?;
        }
        if let Some(xml) = &self.ome {
            self.write_at(xml, description_at)?;
        }
        if tiles > 1 {
            let mut block = Vec::with_capacity(8 << 13);
            for (at, value) in [(offsets_at, None), (counts_at, Some(tile_bytes))] {
                let mut i = 0u64;
                while i < tiles {
                    block.clear();
                    let end = (i + (1 << 13)).min(tiles);
                    for j in i..end {
                        let v = value.unwrap_or(self.data_start + j * tile_bytes);
                        block.extend_from_slice(&v.to_le_bytes());
                    }
                    self.write_at(&block, at + i * 8)?;
                    i = end;
                }
            }
        }
        Ok(())
    }
}

impl RegionSink for TiffSink {
    fn write_run(
        &mut self,
        image: usize,
        y: usize,
        x: usize,
        values: &[f32],
    ) -> Result<(), IoError> {
        check_run(&self.path, [1, self.h, self.w, self.k], image, y, x, values)?;
        let (t, k) = (TIFF_TILE, self.k);
        let pixel_bytes = self.samples.per_pixel(k) * self.samples.bytes();
        let across = self.w.div_ceil(t);
        let tile_bytes = (t * t * pixel_bytes) as u64;
        let mut done = 0;
        let pixels = values.len() / k;
        while done < pixels {
            let xx = x + done;
            let n = (t - xx % t).min(pixels - done);
            let tile = (y / t * across + xx / t) as u64;
            let at =
                self.data_start + tile * tile_bytes + (((y % t) * t + xx % t) * pixel_bytes) as u64;
            let mut scratch = std::mem::take(&mut self.scratch);
            scratch.clear();
            self.samples
                .encode(&values[done * k..(done + n) * k], k, &mut scratch);
            let written = self.write_at(&scratch, at);
            self.scratch = scratch;
            written?;
            done += n;
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<(), IoError> {
        let TiffSink {
            path, force, temp, ..
        } = *self;
        commit(temp, &path, force)
    }
}

#[cfg(test)]
mod tests {
    use super::{page_axes, xml_attribute};

    #[test]
    fn xml_attributes_are_found_by_their_whole_name() {
        let tag = r#"<Pixels ID="Pixels:0" PhysicalSizeX="0.5" SizeX = '90' SizeC="2""#;
        assert_eq!(xml_attribute(tag, "SizeX"), Some("90"));
        assert_eq!(xml_attribute(tag, "SizeC"), Some("2"));
        assert_eq!(xml_attribute(tag, "Size"), None);
        assert_eq!(xml_attribute(r#"<Pixels SizeC=2"#, "SizeC"), None);
    }

    #[test]
    fn descriptions_say_which_pages_are_channels() {
        let ome = |image: &str, channel: &str| {
            format!(
                r#"<?xml version="1.0"?><OME>{image}<Pixels ID="Pixels:0" SizeC="3" SizeZ="1" SizeT="2" SizeX="9" SizeY="8">{channel}</Pixels></Image></OME>"#
            )
        };
        let one = r#"<Image ID="Image:0">"#;
        let axes = page_axes(&ome(
            one,
            r#"<Channel ID="Channel:0:0" SamplesPerPixel="1"/>"#,
        ));
        let axes = axes.expect("read");
        assert_eq!((axes.channels, axes.planes), (3, 2));
        // Two images (series), or RGB channels: not read as channel pages.
        let two = format!("{one}</Image>{one}");
        assert!(page_axes(&ome(&two, "")).is_none());
        assert!(page_axes(&ome(one, r#"<Channel SamplesPerPixel="3"/>"#)).is_none());
        let imagej = page_axes("ImageJ=1.11a\nimages=4\nchannels=2\nslices=2\n").expect("read");
        assert_eq!((imagej.channels, imagej.planes), (2, 2));
        let plain = page_axes("ImageJ=1.11a\nimages=3\n").expect("read");
        assert_eq!((plain.channels, plain.planes), (1, 1));
        assert!(page_axes("ImageJ=1.11a\nchannels=x\n").is_none());
        assert!(page_axes(r#"{"shape": [3, 40, 48]}"#).is_none());
    }
}
