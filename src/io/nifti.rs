//! NIfTI-1 volumes (`.nii`, `.nii.gz`), single-file form (magic `n+1`), read and written with a
//! hand-written 348-byte header (flate2 for gzip).
//!
//! Axis order: NIfTI stores voxel (i, j, k, t) at `i + nx·(j + ny·(k + nz·t))` (x fastest).
//! unetc's arrays are (D, H, W, C) row-major, so D = k (dim[3]), H = j (dim[2]), W = i (dim[1]),
//! C = t (dim[4]; or dim[5] with dim[4] = 1, the vector form): `array[d, h, w, c]` is voxel
//! `(i = w, j = h, k = d)` of channel `c`. In nibabel terms,
//! `np.transpose(img.get_fdata(), (2, 1, 0, 3))` is unetc's array.
//!
//! Every header field is checked before it is used: sizes, dimensions, datatype, vox_offset and
//! the scaling; the data's size is checked against the file (or the gzip stream) before any
//! buffer is sized by it.

use super::IoError;
use crate::exec::Tensor;
use std::io::Read;
use std::path::Path;

/// Bytes in a NIfTI-1 header.
const HEADER: usize = 348;
/// Where a single-file NIfTI-1's data may start at the earliest (header + 4 extension bytes).
const MIN_OFFSET: usize = 352;
/// The most voxels × channels unetc reads from one file (16 Gi values).
const MAX_VALUES: u64 = 1 << 34;

/// The numeric fields of the header as (offset, bytes per element, elements): what a byte
/// order conversion swaps. Everything else is bytes (text, magic).
const NUMERIC: [(usize, usize, usize); 14] = [
    (0, 4, 1),    // sizeof_hdr
    (32, 4, 1),   // extents
    (36, 2, 1),   // session_error
    (40, 2, 8),   // dim
    (56, 4, 3),   // intent_p1..3
    (68, 2, 4),   // intent_code, datatype, bitpix, slice_start
    (76, 4, 8),   // pixdim
    (108, 4, 3),  // vox_offset, scl_slope, scl_inter
    (120, 2, 1),  // slice_end
    (124, 4, 4),  // cal_max, cal_min, slice_duration, toffset
    (140, 4, 2),  // glmax, glmin
    (252, 2, 2),  // qform_code, sform_code
    (256, 4, 6),  // quatern_b..d, qoffset_x..z
    (280, 4, 12), // srow_x, srow_y, srow_z
];

/// A NIfTI-1 header, little-endian whatever the file's byte order was.
#[derive(Debug, Clone, PartialEq)]
pub struct NiftiHeader {
    bytes: [u8; HEADER],
}

/// The stored element types unetc reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataType {
    U8,
    I8,
    I16,
    U16,
    I32,
    F32,
    F64,
}

impl DataType {
    fn of_code(code: i16) -> Option<DataType> {
        Some(match code {
            2 => DataType::U8,
            256 => DataType::I8,
            4 => DataType::I16,
            512 => DataType::U16,
            8 => DataType::I32,
            16 => DataType::F32,
            64 => DataType::F64,
            _ => return None,
        })
    }

    fn bytes(self) -> usize {
        match self {
            DataType::U8 | DataType::I8 => 1,
            DataType::I16 | DataType::U16 => 2,
            DataType::I32 | DataType::F32 => 4,
            DataType::F64 => 8,
        }
    }

    /// Element `b` (its bytes, little-endian) as f64.
    fn value(self, b: &[u8]) -> f64 {
        match self {
            DataType::U8 => f64::from(b[0]),
            DataType::I8 => f64::from(b[0] as i8),
            DataType::I16 => f64::from(i16::from_le_bytes([b[0], b[1]])),
            DataType::U16 => f64::from(u16::from_le_bytes([b[0], b[1]])),
            DataType::I32 => f64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            DataType::F32 => f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            DataType::F64 => f64::from_le_bytes(b[..8].try_into().unwrap_or([0; 8])),
        }
    }
}

impl NiftiHeader {
    fn i16_at(&self, at: usize) -> i16 {
        i16::from_le_bytes([self.bytes[at], self.bytes[at + 1]])
    }

    fn f32_at(&self, at: usize) -> f32 {
        f32::from_le_bytes([
            self.bytes[at],
            self.bytes[at + 1],
            self.bytes[at + 2],
            self.bytes[at + 3],
        ])
    }

    fn set_i16(&mut self, at: usize, v: i16) {
        self.bytes[at..at + 2].copy_from_slice(&v.to_le_bytes());
    }

    fn set_f32(&mut self, at: usize, v: f32) {
        self.bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }

    /// `dim[i]`, i in 0..8.
    fn dim(&self, i: usize) -> i16 {
        self.i16_at(40 + 2 * i)
    }

    /// The affine's codes: (qform_code, sform_code).
    pub fn xform_codes(&self) -> (i16, i16) {
        (self.i16_at(252), self.i16_at(254))
    }

    /// The sform rows (srow_x, srow_y, srow_z).
    pub fn srow(&self) -> [[f32; 4]; 3] {
        std::array::from_fn(|r| std::array::from_fn(|c| self.f32_at(280 + 16 * r + 4 * c)))
    }

    /// Voxel spacing along i, j, k (pixdim[1..=3]).
    pub fn spacing(&self) -> [f32; 3] {
        [self.f32_at(80), self.f32_at(84), self.f32_at(88)]
    }

    /// A header for a volume that has none (an `.npy` input): unit spacing, no affine codes.
    pub fn blank() -> NiftiHeader {
        let mut h = NiftiHeader { bytes: [0; HEADER] };
        h.bytes[0..4].copy_from_slice(&(HEADER as i32).to_le_bytes());
        for i in 0..8 {
            h.set_f32(76 + 4 * i, 1.0);
        }
        h
    }

    /// Parses and checks a header, and whether the file is big-endian; `path` names the file
    /// in errors.
    fn parse(raw: &[u8; HEADER], path: &Path) -> Result<(NiftiHeader, bool), IoError> {
        let bad = |problem: String| IoError::Invalid {
            path: path.to_path_buf(),
            problem,
        };
        let mut bytes = *raw;
        let le = i32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]);
        let be = i32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]);
        let big_endian = le != HEADER as i32;
        if big_endian {
            if be != HEADER as i32 {
                return Err(bad(format!(
                    "not a NIfTI-1 file: its header size field is {le}, not 348 (a NIfTI-2 file \
                     has 540: convert it to NIfTI-1, e.g. with nibabel)"
                )));
            }
            for (at, size, count) in NUMERIC {
                for e in 0..count {
                    bytes[at + e * size..at + (e + 1) * size].reverse();
                }
            }
        }
        match &raw[344..348] {
            b"n+1\0" => {}
            b"ni1\0" => {
                return Err(bad(
                    "a two-file NIfTI (.hdr + .img): unetc reads single-file .nii/.nii.gz; save \
                     it as one .nii (e.g. nibabel.save(img, 'x.nii'))"
                        .into(),
                ))
            }
            m => {
                return Err(bad(format!(
                    "not a NIfTI-1 file: magic {:?}, expected \"n+1\"",
                    String::from_utf8_lossy(m)
                )))
            }
        }
        Ok((NiftiHeader { bytes }, big_endian))
    }

    /// (D, H, W, C) from dim: 3-D, 4-D (channels = dim[4]) or 5-D with dim[4] = 1.
    fn shape(&self, path: &Path) -> Result<[usize; 4], IoError> {
        let bad = |problem: String| IoError::Invalid {
            path: path.to_path_buf(),
            problem,
        };
        let n = self.dim(0);
        let dims: Vec<i16> = (1..=7).map(|i| self.dim(i)).collect();
        if !(3..=5).contains(&n) {
            return Err(bad(format!(
                "dim[0] = {n}: unetc reads 3-D volumes, or 4-D with channels in the 4th dimension"
            )));
        }
        let used = &dims[..n as usize];
        if let Some(d) = used.iter().find(|&&d| d < 1) {
            return Err(bad(format!(
                "dimension size {d} in dim {:?}: every size must be at least 1",
                used
            )));
        }
        let channels = match n {
            3 => 1,
            4 => dims[3],
            _ if dims[3] == 1 => dims[4],
            _ => {
                return Err(bad(format!(
                    "dim {used:?}: a 5-D NIfTI is read as channels in dim[5] only with dim[4] = 1"
                )))
            }
        };
        Ok([
            dims[2] as usize,
            dims[1] as usize,
            dims[0] as usize,
            channels as usize,
        ])
    }
}

/// What a checked header says about the data: where it starts, how it is stored, its scaling.
struct Layout {
    header: NiftiHeader,
    big_endian: bool,
    /// (D, H, W, C).
    shape: [usize; 4],
    dtype: DataType,
    offset: u64,
    data_bytes: u64,
    slope: f64,
    inter: f64,
}

impl Layout {
    /// Checks `raw` (the first 348 bytes of `path`): every field the data depends on.
    fn of(raw: &[u8; HEADER], path: &Path) -> Result<Layout, IoError> {
        let bad = |problem: String| IoError::Invalid {
            path: path.to_path_buf(),
            problem,
        };
        let (header, big_endian) = NiftiHeader::parse(raw, path)?;
        let [d, h, w, c] = header.shape(path)?;
        let code = header.i16_at(70);
        let dtype = DataType::of_code(code).ok_or_else(|| {
            bad(format!(
                "datatype {code}: unetc reads uint8 (2), int8 (256), int16 (4), uint16 (512), \
                 int32 (8), float32 (16) and float64 (64)"
            ))
        })?;
        let bitpix = header.i16_at(72);
        if bitpix as usize != 8 * dtype.bytes() {
            return Err(bad(format!(
                "bitpix {bitpix} does not match datatype {code} ({} bits)",
                8 * dtype.bytes()
            )));
        }
        let offset = header.f32_at(108);
        if !offset.is_finite() || offset < MIN_OFFSET as f32 || offset.fract() != 0.0 {
            return Err(bad(format!(
                "vox_offset {offset}: a single-file NIfTI's data starts at a whole byte ≥ 352"
            )));
        }
        let offset = offset as u64;
        let values = [d, h, w, c]
            .iter()
            .try_fold(1u64, |p, &x| p.checked_mul(x as u64))
            .filter(|&v| v <= MAX_VALUES)
            .ok_or_else(|| {
                bad(format!(
                    "{d}x{h}x{w} voxels x {c} channel(s) is more than unetc reads from one file \
                     ({MAX_VALUES} values)"
                ))
            })?;
        let (slope, inter) = (header.f32_at(112), header.f32_at(116));
        // NIfTI: a slope of 0 (or not a number) means the values are stored unscaled.
        let (slope, inter) = if slope == 0.0 || !slope.is_finite() {
            (1.0, 0.0)
        } else if !inter.is_finite() {
            return Err(bad(format!("scl_inter {inter} is not a finite number")));
        } else {
            (f64::from(slope), f64::from(inter))
        };
        Ok(Layout {
            header,
            big_endian,
            shape: [d, h, w, c],
            dtype,
            offset,
            data_bytes: values * dtype.bytes() as u64,
            slope,
            inter,
        })
    }

    /// The error for a file of `file_len` bytes that ends before the data does.
    fn check_length(&self, file_len: u64, path: &Path) -> Result<(), IoError> {
        let end = self.offset.saturating_add(self.data_bytes);
        if file_len >= end {
            return Ok(());
        }
        let [d, h, w, c] = self.shape;
        Err(IoError::Invalid {
            path: path.to_path_buf(),
            problem: format!(
                "the file has {file_len} bytes, but its header says the data ends at byte {end} \
                 (vox_offset {} + {d}x{h}x{w}x{c} values of {} bytes): it is truncated",
                self.offset,
                self.dtype.bytes()
            ),
        })
    }

    /// Stored element `b` (in the file's byte order) scaled, or why it cannot be a float32
    /// input; `element` is its index in NIfTI order (for the message).
    fn value(&self, b: &[u8], element: usize, path: &Path) -> Result<f32, IoError> {
        let mut le = [0u8; 8];
        let size = self.dtype.bytes();
        le[..size].copy_from_slice(&b[..size]);
        if self.big_endian {
            le[..size].reverse();
        }
        let v = self.dtype.value(&le) * self.slope + self.inter;
        if v.is_finite() && v.abs() <= f64::from(f32::MAX) {
            return Ok(v as f32);
        }
        let [d, h, w, _] = self.shape;
        let spatial = d * h * w;
        let (ch, voxel) = (element / spatial, element % spatial);
        let (k, j, i) = (voxel / (h * w), voxel / w % h, voxel % w);
        Err(IoError::Invalid {
            path: path.to_path_buf(),
            problem: format!(
                "voxel (i {i}, j {j}, k {k}) of channel {ch} is {v}: unetc runs finite float32 \
                 values only"
            ),
        })
    }
}

/// Reads a `.nii` or `.nii.gz` volume as a `[1, D, H, W, C]` float32 tensor (scl_slope and
/// scl_inter applied), with its header for writing the output.
pub fn read_nifti(path: &Path) -> Result<(Tensor, NiftiHeader), IoError> {
    let os = |what: &'static str| {
        let path = path.to_path_buf();
        move |source| IoError::Os { path, what, source }
    };
    let bad = |problem: String| IoError::Invalid {
        path: path.to_path_buf(),
        problem,
    };
    let file = std::fs::File::open(path).map_err(os("cannot read"))?;
    let file_len = file.metadata().map_err(os("cannot read"))?.len();
    let gz = is_gz(path);
    let mut reader: Box<dyn Read> = if gz {
        Box::new(flate2::read::GzDecoder::new(std::io::BufReader::new(file)))
    } else {
        Box::new(std::io::BufReader::new(file))
    };
    let mut raw = [0u8; HEADER];
    reader.read_exact(&mut raw).map_err(|e| {
        bad(format!(
            "cannot read the 348-byte NIfTI header{}: {e}",
            if gz { " from the gzip stream" } else { "" }
        ))
    })?;
    let layout = Layout::of(&raw, path)?;
    if !gz {
        layout.check_length(file_len, path)?;
    }
    let (offset, data_bytes) = (layout.offset, layout.data_bytes);
    // Skip the extensions, then read the data: a gzip stream that ends early is an error after
    // reading at most the header's size.
    std::io::copy(
        &mut reader.by_ref().take(offset - HEADER as u64),
        &mut std::io::sink(),
    )
    .map_err(|e| bad(format!("cannot read up to vox_offset {offset}: {e}")))?;
    let mut data = Vec::new();
    reader
        .take(data_bytes)
        .read_to_end(&mut data)
        .map_err(|e| bad(format!("cannot read the voxel data: {e}")))?;
    if (data.len() as u64) < data_bytes {
        return Err(bad(format!(
            "the voxel data ends after {} of {data_bytes} bytes: the file is truncated",
            data.len()
        )));
    }
    // NIfTI order (channel slowest, then k, j, i) to (D, H, W, C).
    let [d, h, w, c] = layout.shape;
    let spatial = d * h * w;
    let mut out = vec![0f32; spatial * c];
    for (n, chunk) in data.chunks_exact(layout.dtype.bytes()).enumerate() {
        let (ch, voxel) = (n / spatial, n % spatial);
        out[voxel * c + ch] = layout.value(chunk, n, path)?;
    }
    let tensor = Tensor::from_vec(&[1, d, h, w, c], out)
        .ok_or_else(|| bad("voxel count mismatch".into()))?;
    Ok((tensor, layout.header))
}

/// A NIfTI-1 volume read a region at a time through a read-only memory map, as planes
/// `[D, H, W, C]` (plane = k): a `.nii` maps the file itself; a `.nii.gz` is first decompressed
/// into an anonymous temporary file (in `TMPDIR`; as large as the voxel data, removed when
/// closed), which is then mapped, so neither needs the volume in memory.
pub struct NiftiSource {
    path: std::path::PathBuf,
    layout: Layout,
    map: memmap2::Mmap,
    /// Where the voxel data starts in the map.
    start: usize,
    /// Per channel, the byte range of the map read since the last release.
    touched: Vec<Option<(usize, usize)>>,
}

impl NiftiSource {
    pub fn open(path: &Path) -> Result<NiftiSource, IoError> {
        let os = |what: &'static str| {
            let path = path.to_path_buf();
            move |source| IoError::Os { path, what, source }
        };
        let bad = |problem: String| IoError::Invalid {
            path: path.to_path_buf(),
            problem,
        };
        let mut file = std::fs::File::open(path).map_err(os("cannot read"))?;
        let file_len = file.metadata().map_err(os("cannot read"))?.len();
        let mut raw = [0u8; HEADER];
        let (layout, mapped, start) = if is_gz(path) {
            let mut reader = flate2::read::GzDecoder::new(std::io::BufReader::new(file));
            reader.read_exact(&mut raw).map_err(|e| {
                bad(format!(
                    "cannot read the 348-byte NIfTI header from the gzip stream: {e}"
                ))
            })?;
            let layout = Layout::of(&raw, path)?;
            let offset = layout.offset;
            std::io::copy(
                &mut reader.by_ref().take(offset - HEADER as u64),
                &mut std::io::sink(),
            )
            .map_err(|e| bad(format!("cannot read up to vox_offset {offset}: {e}")))?;
            // A small .nii.gz may declare a huge volume (a gzip bomb): refuse what the
            // temporary directory cannot hold before writing any of it.
            let temp_dir = std::env::temp_dir();
            if let Some(free) = super::free_space(&temp_dir) {
                if layout.data_bytes > free {
                    return Err(bad(format!(
                        "its voxel data ({}) is decompressed into a temporary file, and {} has \
                         only {} free; set TMPDIR to a directory with more space, or give the \
                         volume uncompressed (.nii)",
                        crate::text::bytes(layout.data_bytes),
                        temp_dir.display(),
                        crate::text::bytes(free)
                    )));
                }
            }
            let mut temp = tempfile::tempfile().map_err(os(
                "cannot create a temporary file (in TMPDIR) to decompress into",
            ))?;
            let copied = std::io::copy(&mut reader.take(layout.data_bytes), &mut temp)
                .map_err(|e| bad(format!("cannot read the voxel data: {e}")))?;
            if copied < layout.data_bytes {
                return Err(bad(format!(
                    "the voxel data ends after {copied} of {} bytes: the file is truncated",
                    layout.data_bytes
                )));
            }
            (layout, temp, 0)
        } else {
            file.read_exact(&mut raw)
                .map_err(|e| bad(format!("cannot read the 348-byte NIfTI header: {e}")))?;
            let layout = Layout::of(&raw, path)?;
            layout.check_length(file_len, path)?;
            let start = layout.offset;
            (layout, file, start)
        };
        // SAFETY: a read-only map. The temporary file is ours alone (anonymous); for a `.nii`,
        // another process truncating it while mapped would raise SIGBUS (a crash, not a wrong
        // result); unetc never writes its inputs.
        let map = unsafe { memmap2::Mmap::map(&mapped) }.map_err(os("cannot map"))?;
        let start = usize::try_from(start).unwrap_or(usize::MAX);
        let end = u64::try_from(start)
            .ok()
            .and_then(|s| s.checked_add(layout.data_bytes));
        if end.is_none_or(|e| e > map.len() as u64) {
            return Err(bad("changed while it was being opened".into()));
        }
        let channels = layout.shape[3];
        let mut source = NiftiSource {
            path: path.to_path_buf(),
            layout,
            map,
            start,
            touched: vec![None; channels],
        };
        source.refuse_non_finite()?;
        Ok(source)
    }

    /// `(D, H, W, C)`.
    pub fn volume_shape(&self) -> [usize; 4] {
        self.layout.shape
    }

    /// The header, for an output that keeps the affine.
    pub fn header(&self) -> &NiftiHeader {
        &self.layout.header
    }

    /// Checks every value once, a block at a time (each block's pages let go after it), so a
    /// value that is not a finite float32 is refused before any work, as [`read_nifti`] does.
    fn refuse_non_finite(&mut self) -> Result<(), IoError> {
        let size = self.layout.dtype.bytes();
        let block = (4usize << 20) / size * size;
        let end = self.start + self.layout.data_bytes as usize;
        let data = &self.map[self.start..end];
        for (b, chunk) in data.chunks(block).enumerate() {
            for (j, e) in chunk.chunks_exact(size).enumerate() {
                self.layout.value(e, b * block / size + j, &self.path)?;
            }
            // SAFETY: a read-only file mapping: dropped pages are read again from the file.
            let _ = unsafe {
                self.map.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    self.start + b * block,
                    chunk.len(),
                )
            };
        }
        Ok(())
    }
}

impl super::stream::RegionSource for NiftiSource {
    fn shape(&self) -> [usize; 4] {
        self.layout.shape
    }

    fn read_region(
        &mut self,
        plane: usize,
        rows: std::ops::Range<usize>,
        cols: std::ops::Range<usize>,
        out: &mut [f32],
    ) -> Result<(), IoError> {
        let [d, h, w, c] = self.layout.shape;
        super::stream::check_region(&self.path, [d, h, w, c], plane, &rows, &cols, out)?;
        let size = self.layout.dtype.bytes();
        let width = cols.len();
        for ch in 0..c {
            for (r, y) in rows.clone().enumerate() {
                // NIfTI order: i fastest, then j, k, channel; in bounds (checked at open).
                let element = ((ch * d + plane) * h + y) * w + cols.start;
                let at = self.start + element * size;
                let bytes = &self.map[at..at + width * size];
                for (j, e) in bytes.chunks_exact(size).enumerate() {
                    out[(r * width + j) * c + ch] =
                        self.layout.value(e, element + j, &self.path)?;
                }
                let (lo, hi) = self.touched[ch].unwrap_or((at, at));
                self.touched[ch] = Some((lo.min(at), hi.max(at + width * size)));
            }
        }
        Ok(())
    }

    fn release(&mut self) {
        for (lo, hi) in self.touched.iter_mut().filter_map(Option::take) {
            super::stream::drop_read_pages(&self.map, lo, hi);
        }
    }
}

/// Whether `path` names a gzip-compressed NIfTI (`.nii.gz`).
pub fn is_gz(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.to_ascii_lowercase().ends_with(".nii.gz"))
}

/// Whether `path` names a NIfTI file (`.nii` or `.nii.gz`).
pub fn is_nifti(path: &Path) -> bool {
    is_gz(path)
        || path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("nii"))
}

/// The header of a float32 output of `(D, H, W, K)` voxels with `like`'s affine (qform,
/// sform), spacing and units; 4-D with K in dim[4] when K > 1.
fn output_header(
    path: &Path,
    [d, h, w, k]: [usize; 4],
    like: &NiftiHeader,
) -> Result<NiftiHeader, IoError> {
    if [d, h, w, k].contains(&0) {
        return Err(IoError::Invalid {
            path: path.to_path_buf(),
            problem: format!("an output of {d}x{h}x{w}x{k} voxels x channels is empty"),
        });
    }
    let too_big = [d, h, w, k].iter().any(|&x| x > i16::MAX as usize);
    if too_big {
        return Err(IoError::Invalid {
            path: path.to_path_buf(),
            problem: format!(
                "{d}x{h}x{w}x{k}: NIfTI-1 sizes are at most 32767 per dimension; write a .npy"
            ),
        });
    }
    let mut hdr = like.clone();
    let dims: [i16; 8] = if k > 1 {
        [4, w as i16, h as i16, d as i16, k as i16, 1, 1, 1]
    } else {
        [3, w as i16, h as i16, d as i16, 1, 1, 1, 1]
    };
    for (i, v) in dims.iter().enumerate() {
        hdr.set_i16(40 + 2 * i, *v);
    }
    hdr.set_i16(68, 0); // intent_code: none
    hdr.set_i16(70, 16); // float32
    hdr.set_i16(72, 32);
    hdr.set_f32(92, 1.0); // pixdim[4]: one channel apart
    hdr.set_f32(108, MIN_OFFSET as f32);
    hdr.set_f32(112, 1.0);
    hdr.set_f32(116, 0.0);
    hdr.set_f32(124, 0.0); // cal_max, cal_min
    hdr.set_f32(128, 0.0);
    hdr.bytes[148..228].fill(0);
    hdr.bytes[148..148 + 5].copy_from_slice(b"unetc");
    hdr.bytes[344..348].copy_from_slice(b"n+1\0");
    Ok(hdr)
}

/// A float32 NIfTI-1 output of one `(D, H, W, K)` volume written a run of voxels at a time
/// through a memory map, as planes `[D, H, W, K]`. A `.nii` is a temporary file beside the
/// target, created at its final size and renamed into place by `finish`; a `.nii.gz` is first
/// written uncompressed into an anonymous temporary file (in `TMPDIR`) and compressed into its
/// own temporary file beside the target by `finish`, a block at a time.
pub struct NiftiSink {
    path: std::path::PathBuf,
    force: bool,
    /// The output's temporary file beside it.
    temp: tempfile::NamedTempFile,
    map: memmap2::MmapMut,
    shape: [usize; 4],
    /// Per channel, the byte range of the map written since the last release.
    touched: Vec<Option<(usize, usize)>>,
    gz: bool,
}

impl NiftiSink {
    pub fn create(
        path: &Path,
        shape: [usize; 4],
        like: &NiftiHeader,
        force: bool,
    ) -> Result<NiftiSink, IoError> {
        let header = output_header(path, shape, like)?;
        let os = |what: &'static str| {
            let path = path.to_path_buf();
            move |source| IoError::Os { path, what, source }
        };
        let total = shape
            .iter()
            .try_fold(4u64, |a, &x| a.checked_mul(x as u64))
            .and_then(|b| b.checked_add(MIN_OFFSET as u64))
            .filter(|&t| usize::try_from(t).is_ok())
            .ok_or_else(|| IoError::Invalid {
                path: path.to_path_buf(),
                problem: format!("an output of {shape:?} voxels x channels is too large"),
            })?;
        let temp = super::atomic::begin(path, force)?;
        let gz = is_gz(path);
        let raw = if gz {
            tempfile::tempfile().map_err(os(
                "cannot create a temporary file (in TMPDIR) to write the uncompressed data into",
            ))?
        } else {
            temp.as_file().try_clone().map_err(os("cannot write"))?
        };
        super::stream::reserve(&raw, total, path)?;
        // SAFETY: both files are ours alone (an exclusively created hidden name, or an anonymous
        // file) with their disk space reserved; nothing else maps or truncates them.
        let mut map = unsafe { memmap2::MmapMut::map_mut(&raw) }.map_err(os("cannot map"))?;
        if map.len() as u64 != total {
            return Err(IoError::invalid(path, "internal error: map size"));
        }
        map[..HEADER].copy_from_slice(&header.bytes);
        map[HEADER..MIN_OFFSET].fill(0); // no extensions
        Ok(NiftiSink {
            path: path.to_path_buf(),
            force,
            temp,
            map,
            shape,
            touched: vec![None; shape[3]],
            gz,
        })
    }
}

impl super::stream::RegionSink for NiftiSink {
    fn write_run(
        &mut self,
        plane: usize,
        y: usize,
        x: usize,
        values: &[f32],
    ) -> Result<(), IoError> {
        super::stream::check_run(&self.path, self.shape, plane, y, x, values)?;
        let [d, h, w, k] = self.shape;
        let len = values.len() / k;
        for ch in 0..k {
            let at = MIN_OFFSET + (((ch * d + plane) * h + y) * w + x) * 4;
            let run = &mut self.map[at..at + len * 4];
            for (dst, v) in run
                .chunks_exact_mut(4)
                .zip(values.iter().skip(ch).step_by(k))
            {
                dst.copy_from_slice(&v.to_le_bytes());
            }
            let (lo, hi) = self.touched[ch].unwrap_or((at, at));
            self.touched[ch] = Some((lo.min(at), hi.max(at + len * 4)));
        }
        Ok(())
    }

    fn release(&mut self) {
        for (lo, hi) in self.touched.iter_mut().filter_map(Option::take) {
            // Written pages go to the file first; then they leave the resident set.
            if self.map.flush_async_range(lo, hi - lo).is_ok() {
                // With the pages a fault may have mapped around them.
                let (lo, hi) = super::stream::mapped_around(lo, hi, self.map.len());
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
        let NiftiSink {
            path,
            force,
            mut temp,
            map,
            gz,
            ..
        } = *self;
        let os = |source| IoError::Os {
            path: path.clone(),
            what: "cannot write",
            source,
        };
        map.flush().map_err(os)?;
        if gz {
            let mut enc = flate2::write::GzEncoder::new(
                std::io::BufWriter::new(&mut temp),
                flate2::Compression::default(),
            );
            const BLOCK: usize = 4 << 20;
            for (b, block) in map.chunks(BLOCK).enumerate() {
                std::io::Write::write_all(&mut enc, block).map_err(os)?;
                // SAFETY: as in `release`: the pages' contents stay in the (anonymous) file.
                let _ = unsafe {
                    map.unchecked_advise_range(
                        memmap2::UncheckedAdvice::DontNeed,
                        b * BLOCK,
                        block.len(),
                    )
                };
            }
            let mut buffered = enc.finish().map_err(os)?;
            std::io::Write::flush(&mut buffered).map_err(os)?;
        }
        drop(map);
        super::atomic::commit(temp, &path, force)
    }
}

/// Writes one `(D, H, W, K)` volume (`[1, D, H, W, K]` or `[D, H, W, K]`) as float32 NIfTI-1,
/// with `like`'s affine (qform, sform), spacing and units; 4-D with K in dim[4] when K > 1.
/// Atomic as every output: a temporary file renamed into place.
pub fn write_nifti(
    path: &Path,
    t: &Tensor,
    like: &NiftiHeader,
    force: bool,
) -> Result<(), IoError> {
    let [d, h, w, k] = match t.shape[..] {
        [1, d, h, w, k] | [d, h, w, k] => [d, h, w, k],
        _ => {
            return Err(IoError::Invalid {
                path: path.to_path_buf(),
                problem: format!(
                    "an output of shape {:?} is not one (D, H, W, C) volume: write a .npy",
                    t.shape
                ),
            })
        }
    };
    let mut sink = Box::new(NiftiSink::create(path, [d, h, w, k], like, force)?);
    for (row, values) in t.data.chunks(w * k).enumerate() {
        super::stream::RegionSink::write_run(sink.as_mut(), row / h, row % h, 0, values)?;
    }
    super::stream::RegionSink::finish(sink)
}
