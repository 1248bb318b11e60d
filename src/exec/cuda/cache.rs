//! The on-disk cache of compiled kernels: one file per (source, options, architecture), with a
//! header that carries the key and a checksum, so a corrupt or foreign entry is rebuilt, not used.

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

pub fn key(source: &str, options: &[&str], arch: &str) -> String {
    let mut material = format!("{arch}\n");
    for o in options {
        material.push_str(o);
        material.push('\n');
    }
    material.push_str(source);
    format!("{arch}-{:016x}", fnv64(material.as_bytes()))
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

fn header(key: &str, body: &str) -> String {
    format!(
        "// unetc-ptx {key} {:016x} {}\n",
        fnv64(body.as_bytes()),
        body.len()
    )
}

/// The cached PTX for `key`, if present and intact.
pub fn load(key: &str) -> Option<String> {
    let path = dir()?.join(format!("{key}.ptx"));
    let text = std::fs::read_to_string(path).ok()?;
    let (first, body) = text.split_once('\n')?;
    (format!("{first}\n") == header(key, body)).then(|| body.to_string())
}

/// Stores PTX for `key`; failures only cost a recompile next time.
pub fn store(key: &str, ptx: &str) {
    let Some(dir) = dir() else { return };
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    let tmp = dir.join(format!("{key}.ptx.{}.tmp", std::process::id()));
    let content = format!("{}{ptx}", header(key, ptx));
    if std::fs::write(&tmp, content).is_ok() {
        let _ = std::fs::rename(&tmp, dir.join(format!("{key}.ptx")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corrupt_entries_are_not_used() {
        let dir = std::env::temp_dir().join(format!("unetc-cache-test-{}", std::process::id()));
        std::env::set_var("UNETC_CACHE_DIR", &dir);
        let k = key("src", &["-O3"], "compute_90");
        store(&k, ".version 9.0\n.target sm_90\n");
        assert_eq!(load(&k).as_deref(), Some(".version 9.0\n.target sm_90\n"));
        // Flip one byte of the body: the checksum no longer matches.
        let path = dir.join(format!("{k}.ptx"));
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 2;
        bytes[last] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        assert_eq!(load(&k), None);
        assert_ne!(
            key("src", &["-O3"], "compute_90"),
            key("src", &["-O3"], "compute_80")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
