//! `.npy` arrays (NumPy format versions 1, 2 and 3), parsed by hand so that every declared size is
//! bounded before anything is allocated.
//!
//! Read: little-endian `<f4`, `<f8` (converted to f32) and `|u1` (raw values 0..=255 as f32; the
//! caller decides the scaling), C order only. A 3-D array is HWC and gets a batch of 1; a 4-D
//! array is NHWC; other ranks are returned as they are. An array holding NaN or infinite values is
//! an error naming the first one's index and the count.
//!
//! Write: `<f4`, C order, format version 1.0 (2.0 if the header needs it), atomically.

use super::atomic::write_atomic;
use super::{IoError, NonFinite, MAX_DATA_BYTES, MAX_ELEMENTS};
use crate::exec::Tensor;
use std::fs::File;
use std::io::Read;
use std::path::Path;

const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// The longest header accepted. NumPy itself refuses headers over 10,000 bytes by default.
const MAX_HEADER_LEN: usize = 1 << 20;

/// The element types read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dtype {
    F4,
    F8,
    U1,
    /// Integer class indices (sparse training targets).
    I4,
    I8,
}

impl Dtype {
    fn size(self) -> usize {
        match self {
            Dtype::F4 => 4,
            Dtype::F8 => 8,
            Dtype::U1 => 1,
            Dtype::I4 => 4,
            Dtype::I8 => 8,
        }
    }
}

/// What the header declares.
#[derive(Debug)]
struct Header {
    dtype: Dtype,
    shape: Vec<usize>,
}

/// Reads a `.npy` file (see the module documentation for what is accepted).
pub fn read_npy(path: &Path) -> Result<Tensor, IoError> {
    let t = read_npy_as_stored(path)?;
    // An HWC array is one image.
    let shape = if t.shape.len() == 3 {
        let mut s = Vec::with_capacity(4);
        s.push(1);
        s.extend_from_slice(&t.shape);
        s
    } else {
        t.shape
    };
    Ok(Tensor {
        shape,
        data: t.data,
    })
}

/// A `.npy` array with the shape it was saved with (f32, f64 or u8).
pub fn read_npy_as_stored(path: &Path) -> Result<Tensor, IoError> {
    read_npy_raw(path, false)
}

/// Training targets: as [`read_npy_as_stored`], and also int32/int64 class indices (exact in
/// f32 below 2^24; the caller checks them against the classes).
pub fn read_npy_targets(path: &Path) -> Result<Tensor, IoError> {
    read_npy_raw(path, true)
}

/// Opens a `.npy` file and reads its preamble and header: the file positioned at the data, the
/// header, the data's offset, and the file's length (regular files only).
fn open_header(path: &Path) -> Result<(File, Header, u64, Option<u64>), IoError> {
    let mut file = File::open(path).map_err(|e| IoError::os(path, "cannot open", e))?;
    let meta = file
        .metadata()
        .map_err(|e| IoError::os(path, "cannot read", e))?;
    if meta.is_dir() {
        return Err(IoError::invalid(path, "is a directory, not a .npy file"));
    }
    // Regular files have a length to check declared sizes against; other files (pipes) do not,
    // and are read up to the declared size only.
    let file_len = meta.is_file().then_some(meta.len());

    // Magic, version and header length.
    let mut pre = [0u8; 8];
    read_exact_or(&mut file, &mut pre, path, "is too short to be a .npy file")?;
    if &pre[..6] != MAGIC {
        return Err(IoError::invalid(
            path,
            "is not a .npy file (it does not start with \\x93NUMPY); save arrays with numpy.save",
        ));
    }
    let (major, minor) = (pre[6], pre[7]);
    let (header_len, prefix_len) = match major {
        1 => {
            let mut b = [0u8; 2];
            read_exact_or(&mut file, &mut b, path, "ends inside its .npy header")?;
            (usize::from(u16::from_le_bytes(b)), 10usize)
        }
        2 | 3 => {
            let mut b = [0u8; 4];
            read_exact_or(&mut file, &mut b, path, "ends inside its .npy header")?;
            (u32::from_le_bytes(b) as usize, 12usize)
        }
        _ => {
            return Err(IoError::invalid(
                path,
                format!(
                    ".npy format version {major}.{minor} is not supported (1.0, 2.0 and 3.0 are)"
                ),
            ))
        }
    };
    if header_len > MAX_HEADER_LEN {
        return Err(IoError::invalid(
            path,
            format!("declares a .npy header of {header_len} bytes (the limit is {MAX_HEADER_LEN})"),
        ));
    }
    if let Some(len) = file_len {
        if (prefix_len + header_len) as u64 > len {
            return Err(IoError::invalid(
                path,
                format!(
                    "is truncated: it declares a {header_len}-byte header but has only {} bytes \
                     after the preamble",
                    len.saturating_sub(prefix_len as u64)
                ),
            ));
        }
    }
    let mut header = vec![0u8; header_len];
    read_exact_or(&mut file, &mut header, path, "ends inside its .npy header")?;
    let text = match major {
        3 => String::from_utf8(header).ok(),
        // Versions 1 and 2 are latin-1; a valid header is ASCII.
        _ => header
            .is_ascii()
            .then(|| String::from_utf8(header).ok())
            .flatten(),
    }
    .ok_or_else(|| IoError::invalid(path, "the .npy header is not text"))?;
    let header = parse_header(&text).map_err(|p| IoError::invalid(path, p))?;
    Ok((file, header, (prefix_len + header_len) as u64, file_len))
}

/// A `<f4` C-order array in a regular file, checked against the file's length: its shape as
/// stored and where its data starts, for a memory map. `None` for
/// other dtypes (read those with [`read_npy`]). No element limit applies: nothing is allocated
/// for the data, and every index into it is checked against the length found here.
pub fn f32_layout(path: &Path) -> Result<Option<(Vec<usize>, u64)>, IoError> {
    let (_, Header { dtype, shape }, offset, file_len) = open_header(path)?;
    let Some(file_len) = file_len else {
        return Ok(None);
    };
    if dtype != Dtype::F4 {
        return Ok(None);
    }
    let data_len = shape
        .iter()
        .try_fold(4u64, |a, &d| a.checked_mul(d as u64))
        .ok_or_else(|| {
            IoError::invalid(
                path,
                format!("declares shape {shape:?}, too large to exist"),
            )
        })?;
    let have = file_len - offset;
    if have != data_len {
        return Err(IoError::invalid(
            path,
            format!(
                "shape {shape:?} needs {data_len} bytes of data but the file has {have}{}",
                if have < data_len {
                    " (it is truncated)"
                } else {
                    "; a .npy file holds one array (is it several arrays appended, or a damaged \
                     file?)"
                }
            ),
        ));
    }
    Ok(Some((shape, offset)))
}

fn read_npy_raw(path: &Path, class_indices: bool) -> Result<Tensor, IoError> {
    let (mut file, Header { dtype, shape }, offset, file_len) = open_header(path)?;
    if matches!(dtype, Dtype::I4 | Dtype::I8) && !class_indices {
        return Err(IoError::invalid(
            path,
            format!(
                "has dtype '{}'; unetc reads float32 ('<f4'), float64 ('<f8') and uint8 ('|u1') \
                 inputs (integer arrays only as training class indices): save \
                 a.astype('float32') instead",
                if dtype == Dtype::I4 { "<i4" } else { "<i8" }
            ),
        ));
    }

    // Bound the data before allocating.
    let count = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|&c| c <= MAX_ELEMENTS)
        .ok_or_else(|| {
            IoError::invalid(
                path,
                format!(
                    "declares shape {shape:?}, more than the {MAX_ELEMENTS} elements unetc reads \
                     from one array; split it into smaller arrays"
                ),
            )
        })?;
    let data_len = count * dtype.size(); // <= 2^30 * 8: no overflow on 64-bit.
    if data_len as u64 > MAX_DATA_BYTES {
        return Err(IoError::invalid(
            path,
            format!(
                "declares {data_len} bytes of data, more than the limit of {MAX_DATA_BYTES}; split \
                 it into smaller arrays"
            ),
        ));
    }
    if let Some(len) = file_len {
        let have = len - offset;
        if have < data_len as u64 {
            return Err(IoError::invalid(
                path,
                format!(
                    "is truncated: shape {shape:?} needs {data_len} bytes of data but the file \
                     has {have}"
                ),
            ));
        }
        if have > data_len as u64 {
            return Err(IoError::invalid(
                path,
                format!(
                    "has {} bytes after the data of shape {shape:?}; a .npy file holds one array \
                     (is it several arrays appended, or a damaged file?)",
                    have - data_len as u64
                ),
            ));
        }
    }
    let mut bytes = Vec::with_capacity(if file_len.is_some() { data_len } else { 0 });
    (&mut file)
        .take(data_len as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| IoError::os(path, "cannot read", e))?;
    if bytes.len() < data_len {
        return Err(IoError::invalid(
            path,
            format!(
                "is truncated: shape {shape:?} needs {data_len} bytes of data but the file has {}",
                bytes.len()
            ),
        ));
    }
    if bytes.len() > data_len {
        return Err(IoError::invalid(
            path,
            format!("has bytes after the data of shape {shape:?}; a .npy file holds one array"),
        ));
    }

    let data: Vec<f32> = match dtype {
        Dtype::F4 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F8 => bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect(),
        Dtype::U1 => bytes.iter().map(|&b| f32::from(b)).collect(),
        // Class indices: exact in f32 below 2^24; larger ones are refused where they are used.
        Dtype::I4 => bytes
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32)
            .collect(),
        Dtype::I8 => bytes
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect(),
    };
    // NaN or infinity in an input spreads through every convolution it reaches and still
    // yields a plausible-looking mask: refuse the file, saying where the first one is.
    if let Some(found) = NonFinite::find(&data) {
        let overflow = if dtype == Dtype::F8 && found.first_kind != super::NonFiniteKind::NaN {
            " (as f32: <f8 values beyond ±3.4e38 become infinite)"
        } else {
            ""
        };
        return Err(IoError::invalid(
            path,
            format!(
                "{}{overflow}; unetc refuses such inputs because the output would be meaningless: \
                 replace them (e.g. numpy.nan_to_num) or fix what wrote the file",
                found.describe(&shape)
            ),
        ));
    }
    Ok(Tensor { shape, data })
}

/// Writes `t` as a `<f4` C-order `.npy` file, atomically; an existing file is replaced only with
/// `force`.
pub fn write_npy(path: &Path, t: &Tensor, force: bool) -> Result<(), IoError> {
    let count = t.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    if count != Some(t.data.len()) {
        return Err(IoError::invalid(
            path,
            format!(
                "cannot write a tensor of shape {:?} with {} values (internal error)",
                t.shape,
                t.data.len()
            ),
        ));
    }
    let header = header_bytes(&t.shape);
    write_atomic(path, force, |out| {
        out.write_all(&header)?;
        let mut buf = Vec::with_capacity(64 * 1024);
        for chunk in t.data.chunks(16 * 1024) {
            buf.clear();
            for v in chunk {
                buf.extend_from_slice(&v.to_le_bytes());
            }
            out.write_all(&buf)?;
        }
        Ok(())
    })
}

/// Preamble and header of a `<f4` C-order array, padded so the data starts at a multiple of 64.
pub(crate) fn header_bytes(shape: &[usize]) -> Vec<u8> {
    header_bytes_of("<f4", shape)
}

/// The same for any dtype `descr` (`<f4`, `|u1`).
pub(crate) fn header_bytes_of(descr: &str, shape: &[usize]) -> Vec<u8> {
    let dims = match shape {
        [d] => format!("({d},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {dims}, }}");
    // Version 1.0 holds a header of up to 65535 bytes; longer ones need 2.0.
    let v1 = (10 + dict.len() + 1).next_multiple_of(64) - 10 <= usize::from(u16::MAX);
    let prefix = if v1 { 10 } else { 12 };
    let total = (prefix + dict.len() + 1).next_multiple_of(64);
    let header_len = total - prefix;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(MAGIC);
    if v1 {
        out.extend_from_slice(&[1, 0]);
        out.extend_from_slice(&(header_len as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&[2, 0]);
        out.extend_from_slice(&(header_len as u32).to_le_bytes());
    }
    out.extend_from_slice(dict.as_bytes());
    out.resize(total - 1, b' ');
    out.push(b'\n');
    out
}

fn read_exact_or(file: &mut File, buf: &mut [u8], path: &Path, short: &str) -> Result<(), IoError> {
    file.read_exact(buf).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            IoError::invalid(path, short)
        } else {
            IoError::os(path, "cannot read", e)
        }
    })
}

/// Parses the header dictionary, e.g. `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }`.
fn parse_header(text: &str) -> Result<Header, String> {
    let mut p = Parser {
        s: text.as_bytes(),
        i: 0,
    };
    let bad = |what: &str| format!("the .npy header is malformed ({what}): {}", text.trim_end());
    p.ws();
    if !p.eat(b'{') {
        return Err(bad("it does not start with '{'"));
    }
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    loop {
        p.ws();
        if p.eat(b'}') {
            break;
        }
        let key = p.string().ok_or_else(|| bad("expected a quoted key"))?;
        p.ws();
        if !p.eat(b':') {
            return Err(bad("expected ':' after a key"));
        }
        p.ws();
        match key.as_str() {
            "descr" => {
                descr = Some(p.string().ok_or_else(|| bad("'descr' is not a string"))?);
            }
            "fortran_order" => {
                fortran = Some(
                    p.boolean()
                        .ok_or_else(|| bad("'fortran_order' is not True or False"))?,
                );
            }
            "shape" => {
                shape = Some(
                    p.tuple()
                        .ok_or_else(|| bad("'shape' is not a tuple of integers"))?,
                );
            }
            other => return Err(bad(&format!("unknown key '{other}'"))),
        }
        p.ws();
        if p.eat(b',') {
            continue;
        }
        p.ws();
        if p.eat(b'}') {
            break;
        }
        return Err(bad("expected ',' or '}'"));
    }
    p.ws();
    if p.i != p.s.len() {
        return Err(bad("text after the dictionary"));
    }
    let descr = descr.ok_or_else(|| bad("no 'descr'"))?;
    let fortran = fortran.ok_or_else(|| bad("no 'fortran_order'"))?;
    let shape = shape.ok_or_else(|| bad("no 'shape'"))?;
    if fortran {
        return Err(
            "is stored in Fortran order (fortran_order: True); unetc reads C order only: save \
             numpy.ascontiguousarray(a) instead"
                .to_string(),
        );
    }
    let dtype = match descr.as_str() {
        "<f4" => Dtype::F4,
        "<f8" => Dtype::F8,
        "|u1" | "<u1" | ">u1" | "=u1" | "u1" => Dtype::U1,
        "<i4" => Dtype::I4,
        "<i8" => Dtype::I8,
        ">f4" | ">f8" => {
            return Err(format!(
                "has big-endian data ('{descr}'); unetc reads little-endian: save \
                 a.astype('<f4') instead"
            ))
        }
        other => {
            return Err(format!(
                "has dtype '{other}'; unetc reads float32 ('<f4'), float64 ('<f8'), uint8 \
                 ('|u1') and, for class indices, int32 ('<i4') and int64 ('<i8'): save \
                 a.astype('float32') instead"
            ))
        }
    };
    Ok(Header { dtype, shape })
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn eat_word(&mut self, w: &str) -> bool {
        if self.s[self.i..].starts_with(w.as_bytes()) {
            self.i += w.len();
            true
        } else {
            false
        }
    }

    /// A Python string literal in single or double quotes, without escapes.
    fn string(&mut self) -> Option<String> {
        let q = self.peek().filter(|&c| c == b'\'' || c == b'"')?;
        self.i += 1;
        let start = self.i;
        while let Some(c) = self.peek() {
            if c == q {
                let s = std::str::from_utf8(&self.s[start..self.i])
                    .ok()?
                    .to_string();
                self.i += 1;
                return Some(s);
            }
            if c == b'\\' {
                return None;
            }
            self.i += 1;
        }
        None
    }

    fn boolean(&mut self) -> Option<bool> {
        if self.eat_word("True") {
            Some(true)
        } else if self.eat_word("False") {
            Some(false)
        } else {
            None
        }
    }

    /// `()`, `(3,)`, `(2, 3)`, `(2, 3,)`; a dimension that does not fit usize is refused.
    fn tuple(&mut self) -> Option<Vec<usize>> {
        if !self.eat(b'(') {
            return None;
        }
        let mut dims = Vec::new();
        loop {
            self.ws();
            if self.eat(b')') {
                // `(3)` is not a tuple in Python, but only `(3,)` has one element and a comma.
                return Some(dims);
            }
            let start = self.i;
            // A dimension too large for usize saturates: the caller refuses the shape as too large.
            let mut d = 0usize;
            while let Some(c @ b'0'..=b'9') = self.peek() {
                d = d.saturating_mul(10).saturating_add(usize::from(c - b'0'));
                self.i += 1;
            }
            if start == self.i {
                return None;
            }
            // NumPy writes Python ints; old files may have a trailing 'L'.
            self.eat(b'L');
            dims.push(d);
            if dims.len() > 32 {
                return None;
            }
            self.ws();
            if self.eat(b',') {
                continue;
            }
            self.ws();
            if self.eat(b')') {
                return Some(dims);
            }
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout() {
        let h = header_bytes(&[1, 2, 3]);
        assert_eq!(h.len() % 64, 0);
        assert_eq!(&h[..8], b"\x93NUMPY\x01\x00");
        let text = std::str::from_utf8(&h[10..]).unwrap();
        assert!(text.starts_with("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2, 3), }"));
        assert!(text.ends_with('\n'));
        let h = parse_header(text).unwrap();
        assert_eq!(h.shape, vec![1, 2, 3]);
        assert_eq!(h.dtype, Dtype::F4);
        assert_eq!(
            parse_header("{'descr':'<f8','fortran_order':False,'shape':(5,)}")
                .unwrap()
                .shape,
            vec![5]
        );
        assert_eq!(
            parse_header("{\"shape\": (), \"fortran_order\": False, \"descr\": \"|u1\"}")
                .unwrap()
                .shape,
            Vec::<usize>::new()
        );
        let huge =
            "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999, 1), }";
        assert_eq!(parse_header(huge).unwrap().shape, vec![usize::MAX, 1]);
    }
}
