//! The on-disk cache of compiled kernels: one file per (source, options, target, NVRTC version),
//! with a header line that carries the key and a checksum, so a corrupt, foreign or stale entry is
//! rebuilt, not used. Bodies are PTX text or a cubin (ELF), stored as bytes.

use std::path::PathBuf;

/// FNV-1a 64: a stable hash for cache keys and checksums (not a security boundary).
fn fnv64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The key of one compile: `target` is `compute_XY` (PTX) or `sm_XY` (cubin); `nvrtc` is the
/// library's version, since a newer NVRTC may write PTX that an older driver rejects.
pub fn key(source: &str, options: &[&str], target: &str, nvrtc: (i32, i32)) -> String {
    let mut material = format!("{target}\nnvrtc {}.{}\n", nvrtc.0, nvrtc.1);
    for o in options {
        material.push_str(o);
        material.push('\n');
    }
    material.push_str(source);
    format!(
        "{target}-nvrtc{}.{}-{:016x}",
        nvrtc.0,
        nvrtc.1,
        fnv64(material.as_bytes())
    )
}

/// `$UNETC_CACHE_DIR`, else `$XDG_CACHE_HOME/unetc`, else `~/.cache/unetc`.
fn dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("UNETC_CACHE_DIR") {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(d).join("unetc"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("unetc"))
}

fn header(key: &str, body: &[u8]) -> String {
    format!(
        "// unetc-kernels {key} {:016x} {}\n",
        fnv64(body),
        body.len()
    )
}

/// The cached body for `key` (`ext`: `ptx` or `cubin`), if present and intact.
pub fn load(key: &str, ext: &str) -> Option<Vec<u8>> {
    let path = dir()?.join(format!("{key}.{ext}"));
    let bytes = std::fs::read(path).ok()?;
    let split = bytes.iter().position(|&b| b == b'\n')? + 1;
    let (first, body) = bytes.split_at(split);
    (first == header(key, body).as_bytes()).then(|| body.to_vec())
}

/// Stores a body for `key`; failures only cost a recompile next time. Written to a temporary
/// file and renamed, so a concurrent reader sees the old entry or the whole new one.
pub fn store(key: &str, ext: &str, body: &[u8]) {
    let Some(dir) = dir() else { return };
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    let tmp = dir.join(format!("{key}.{ext}.{}.tmp", std::process::id()));
    let mut content = header(key, body).into_bytes();
    content.extend_from_slice(body);
    if std::fs::write(&tmp, content).is_ok() {
        let _ = std::fs::rename(&tmp, dir.join(format!("{key}.{ext}")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corrupt_entries_are_not_used() {
        let dir = std::env::temp_dir().join(format!("unetc-cache-test-{}", std::process::id()));
        std::env::set_var("UNETC_CACHE_DIR", &dir);
        let k = key("src", &["-O3"], "compute_90", (13, 0));
        store(&k, "ptx", b".version 9.0\n.target sm_90\n");
        assert_eq!(
            load(&k, "ptx").as_deref(),
            Some(&b".version 9.0\n.target sm_90\n"[..])
        );
        // A binary body (a cubin starts with the ELF magic and holds NULs and newlines).
        let cubin = b"\x7fELF\x02\x01\x01\0\n\0\xff";
        store(&k, "cubin", cubin);
        assert_eq!(load(&k, "cubin").as_deref(), Some(&cubin[..]));
        // Flip one byte of the body: the checksum no longer matches.
        let path = dir.join(format!("{k}.ptx"));
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 2;
        bytes[last] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        assert_eq!(load(&k, "ptx"), None);
        // Target and NVRTC version are part of the key.
        assert_ne!(k, key("src", &["-O3"], "compute_80", (13, 0)));
        assert_ne!(k, key("src", &["-O3"], "compute_90", (13, 1)));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
