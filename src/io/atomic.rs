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
    // Said plainly here: otherwise the OS error would be about the temporary file.
    if !dir.is_dir() {
        let problem = if dir.exists() {
            format!(
                "cannot write: `{}` is not a directory; give a path inside a directory",
                dir.display()
            )
        } else {
            format!(
                "cannot write: the directory `{}` does not exist; create it first (mkdir -p) or \
                 write somewhere else",
                dir.display()
            )
        };
        return Err(IoError::invalid(path, problem));
    }
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
    let temp = builder.tempfile_in(dir).map_err(|e| {
        IoError::os(
            path,
            "cannot create a temporary file beside it",
            without_temp_path(e),
        )
    })?;

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
            without_temp_path(e.error),
        )),
    }
}

/// The OS error without what `tempfile` appends to it (` at path "<temporary file>"`, a name the
/// user never chose and that no longer exists): the message names the real target instead.
fn without_temp_path(e: std::io::Error) -> std::io::Error {
    if e.get_ref().is_none() {
        return e;
    }
    let text = e.to_string();
    match text.split_once(" at path ") {
        Some((os_message, _)) => std::io::Error::new(e.kind(), os_message.to_string()),
        None => e,
    }
}
