//! Atomic file writes: a temporary file in the target's directory, renamed over the target only
//! once everything is written and flushed. A failed or interrupted write leaves no partial file
//! (the temporary file is removed when dropped) and an existing target untouched.

use super::IoError;
use std::io::{BufWriter, Write};
use std::path::Path;

/// Writes `path` through `write`, atomically. With `force` false an existing `path` is an error
/// ("exists; use --force") and is left as it was, even if it appears while `write` runs.
pub fn write_atomic(
    path: &Path,
    force: bool,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<(), IoError> {
    if path.is_dir() {
        return Err(IoError::invalid(
            path,
            "is a directory; give the path of a file to write",
        ));
    }
    if !force && path.symlink_metadata().is_ok() {
        return Err(IoError::Exists {
            path: path.to_path_buf(),
        });
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| IoError::invalid(path, "is not a file name"))?;
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(file_name);
    prefix.push(".");

    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
    // tempfile creates files 0600; ask for 0666 so the umask decides, as for any new file.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    let temp = builder
        .tempfile_in(dir)
        .map_err(|e| IoError::os(path, "cannot create a temporary file beside it", e))?;

    {
        let mut out = BufWriter::with_capacity(1 << 20, temp.as_file());
        write(&mut out).map_err(|e| IoError::os(path, "cannot write", e))?;
        out.flush()
            .map_err(|e| IoError::os(path, "cannot write", e))?;
    }
    temp.as_file()
        .sync_all()
        .map_err(|e| IoError::os(path, "cannot write", e))?;

    let persisted = if force {
        temp.persist(path)
    } else {
        temp.persist_noclobber(path)
    };
    match persisted {
        Ok(_) => Ok(()),
        Err(e) if !force && e.error.kind() == std::io::ErrorKind::AlreadyExists => {
            Err(IoError::Exists {
                path: path.to_path_buf(),
            })
        }
        // Dropping `e.file` removes the temporary file.
        Err(e) => Err(IoError::os(
            path,
            "cannot rename the finished file into place",
            e.error,
        )),
    }
}
