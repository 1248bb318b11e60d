//! Reading and writing arrays, images and weights. Every file is untrusted input.
//!
//! - [`npy`]: `.npy` arrays in (`<f4`, `<f8`, `|u1`) and out (`<f4`).
//! - [`image`]: PNG/TIFF images in (8/16-bit gray or colour, scaled to [0, 1]), PNG masks out.
//! - [`weights`]: safetensors weights in unetc's `<layer>/<variable>` naming, Keras layouts, and the
//!   Keras initializers.
//! - [`stream`]: images larger than memory, a region at a time: float32 `.npy` memory-mapped and
//!   TIFF/BigTIFF a chunk at a time in, `.npy` (mapped) and tiled float32 BigTIFF out.
//! - [`atomic`]: every writer goes through [`atomic::begin`] and [`atomic::commit`] (or
//!   [`atomic::write_atomic`]): a temporary file beside the target, renamed over it, so no
//!   partial file is ever left (on Ctrl-C too, with [`atomic::remove_on_interrupt`]).
//!
//! Every declared size (array shapes, image dimensions, tensor shapes) is checked against the
//! file's real length and against the limits below before anything is allocated for it. Errors
//! name the file, say what is wrong and, where there is one, what to do.

pub mod atomic;
pub mod image;
pub mod nifti;
pub mod npy;
pub mod stream;
pub mod weights;

pub use crate::exec::tensor::{NonFinite, NonFiniteKind};
pub use atomic::write_atomic;
pub use image::{read_image, read_image_with_layout, read_mask, write_mask_png, ChannelLayout};
pub use npy::{read_npy, read_npy_as_stored, read_npy_targets, write_npy};
pub use weights::{
    init_tensor, load_weights, read_weights_file, save_weights, seeded_rng, Expected, Weights,
};

use std::fmt;
use std::path::{Path, PathBuf};

/// The most elements one array, image or tensor may have: 2^30, i.e. 4 GiB as f32.
pub const MAX_ELEMENTS: usize = 1 << 30;

/// The most bytes of data one input file may declare: 4 GiB.
pub const MAX_DATA_BYTES: u64 = 4 << 30;

/// The most pixels (width × height) of an input image: 2^28.
pub const MAX_PIXELS: u64 = 1 << 28;

/// An error reading or writing one file. Its `Display` names the file, says what is wrong and,
/// where there is something to do, what.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// The operating system refused: not found, no permission, disk full, ...
    #[error("{}: {what}: {source}", path.display())]
    Os {
        path: PathBuf,
        /// What was being done: "cannot read", "cannot write", ...
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The file's content is not what it must be.
    #[error("{}: {problem}", path.display())]
    Invalid { path: PathBuf, problem: String },
    /// The output exists and `force` was not given.
    #[error("{}: exists; use --force to replace it", path.display())]
    Exists { path: PathBuf },
    /// The weights do not fit the model: every problem, one per line.
    #[error("{}", weights_message(path, problems))]
    Weights {
        path: PathBuf,
        problems: Vec<WeightProblem>,
    },
    /// An initializer name or argument that unetc does not know (no file involved).
    #[error("initializer \"{name}\": {problem}")]
    Initializer { name: String, problem: String },
}

impl IoError {
    /// The file the error is about (none for [`IoError::Initializer`]).
    pub fn path(&self) -> Option<&Path> {
        match self {
            IoError::Os { path, .. }
            | IoError::Invalid { path, .. }
            | IoError::Exists { path }
            | IoError::Weights { path, .. } => Some(path),
            IoError::Initializer { .. } => None,
        }
    }

    pub(crate) fn os(path: &Path, what: &'static str, source: std::io::Error) -> IoError {
        IoError::Os {
            path: path.to_path_buf(),
            what,
            source,
        }
    }

    pub(crate) fn invalid(path: &Path, problem: impl Into<String>) -> IoError {
        IoError::Invalid {
            path: path.to_path_buf(),
            problem: problem.into(),
        }
    }
}

/// One way a weights file does not fit the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WeightProblem {
    /// The model needs the tensor; the file lacks it.
    Missing { name: String, shape: Vec<usize> },
    /// The file has a tensor the model has no weight for.
    Unexpected { name: String, shape: Vec<usize> },
    /// The tensor's shape is not the model's.
    Shape {
        name: String,
        found: Vec<usize>,
        expected: Vec<usize>,
    },
    /// The tensor is not stored as F32.
    Dtype { name: String, found: String },
    /// The tensor holds NaN or infinite values.
    NonFinite {
        name: String,
        shape: Vec<usize>,
        found: NonFinite,
    },
}

impl WeightProblem {
    /// The tensor the problem is about.
    pub fn name(&self) -> &str {
        match self {
            WeightProblem::Missing { name, .. }
            | WeightProblem::Unexpected { name, .. }
            | WeightProblem::Shape { name, .. }
            | WeightProblem::Dtype { name, .. }
            | WeightProblem::NonFinite { name, .. } => name,
        }
    }
}

impl fmt::Display for WeightProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WeightProblem::Missing { name, shape } => write!(
                f,
                "tensor \"{name}\" is missing; the model needs it with shape {shape:?}"
            ),
            WeightProblem::Unexpected { name, shape } => write!(
                f,
                "tensor \"{name}\" (shape {shape:?}) is not a weight of this model"
            ),
            WeightProblem::Shape {
                name,
                found,
                expected,
            } => write!(
                f,
                "tensor \"{name}\" has shape {found:?} but the model needs {expected:?}"
            ),
            WeightProblem::Dtype { name, found } => write!(
                f,
                "tensor \"{name}\" has dtype {found} but unetc reads F32; convert it to float32"
            ),
            WeightProblem::NonFinite { name, shape, found } => write!(
                f,
                "tensor \"{name}\": {}; the weights are damaged or come from a training run \
                 that diverged: export them again from a checkpoint whose values are all finite",
                found.describe(shape)
            ),
        }
    }
}

fn weights_message(path: &Path, problems: &[WeightProblem]) -> String {
    let file = path.display();
    let mut out = String::new();
    if problems.len() > 1 {
        out.push_str(&format!(
            "{file}: {} problems with the weights:\n",
            problems.len()
        ));
    }
    for (i, p) in problems.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!("{file}: {p}"));
    }
    out.push_str(
        "\nhelp: the weights must have the names (`<layer>/<variable>`), shapes (Keras layouts) and \
         dtype the model needs; `unetc check --format json` lists them, and `unetc init-weights` \
         writes a file that fits",
    );
    out
}

/// Bytes free for an unprivileged user on the file system holding `dir`, where the system
/// says (Unix); `None` elsewhere or when it cannot tell.
pub fn free_space(dir: &Path) -> Option<u64> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let c_path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
        let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
        // SAFETY: `c_path` is a NUL-terminated path and `stat` a buffer of the right type;
        // statvfs fills it only when it returns 0.
        let stat = unsafe {
            if libc::statvfs(c_path.as_ptr(), stat.as_mut_ptr()) != 0 {
                return None;
            }
            stat.assume_init()
        };
        Some((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        None
    }
}
