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
    let temp = begin(path, force)?;
    {
        let mut out = BufWriter::with_capacity(1 << 20, temp.as_file());
        write(&mut out).map_err(|e| IoError::os(path, "cannot write", e))?;
        out.flush()
            .map_err(|e| IoError::os(path, "cannot write", e))?;
    }
    commit(temp, path, force)
}

/// The temporary file for `path`, beside it (hidden: `.<name>.XXXXXX.tmp`); checks first that
/// `path` may be written (not a directory, in a directory that exists, absent unless `force`).
/// Until [`commit`] the file is removed when dropped, and on Ctrl-C (see [`remove_on_interrupt`]).
pub fn begin(path: &Path, force: bool) -> Result<tempfile::NamedTempFile, IoError> {
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
    pending().insert(temp.path().to_path_buf());
    Ok(temp)
}

/// Syncs the finished temporary file and renames it to `path` (over an existing file only with
/// `force`). On failure the temporary file is removed.
pub fn commit(temp: tempfile::NamedTempFile, path: &Path, force: bool) -> Result<(), IoError> {
    let temp_path = temp.path().to_path_buf();
    let result = commit_inner(temp, path, force);
    pending().remove(&temp_path);
    result
}

fn commit_inner(temp: tempfile::NamedTempFile, path: &Path, force: bool) -> Result<(), IoError> {
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

/// Temporary files not yet committed (a dropped one is removed by `tempfile`; the entry left
/// here then names nothing, which [`remove_pending`] tolerates).
fn pending() -> std::sync::MutexGuard<'static, std::collections::BTreeSet<std::path::PathBuf>> {
    static PENDING: std::sync::Mutex<std::collections::BTreeSet<std::path::PathBuf>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    PENDING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Removes every temporary file not yet committed; for an interrupt handler, just before exit.
pub fn remove_pending() {
    for path in std::mem::take(&mut *pending()) {
        let _ = std::fs::remove_file(path);
    }
}

/// Installs a Ctrl-C (SIGINT/SIGTERM) handler that removes uncommitted temporary files and exits
/// with status 130, so an interrupted run leaves neither a partial output nor its temporary file.
pub fn remove_on_interrupt() {
    // A second installation (tests, library use) fails; the first handler stays and suffices.
    let _ = ctrlc::set_handler(|| {
        remove_pending();
        std::process::exit(130);
    });
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
