//! Entry names: normalised to a path inside the layer, split and joined.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use driver_core::error::Cause;

/// Longest path the engine accepts (PATH_MAX less the terminating NUL).
pub(super) const MAX_PATH: usize = 4095;
pub(super) const MAX_NAME: usize = 255;

/// A normalised path inside the layer: components joined by `/`, `""` for the root.
pub(super) type RelPath = Vec<u8>;

pub(super) fn show(p: &[u8]) -> PathBuf {
    PathBuf::from(OsStr::from_bytes(p))
}

/// Normalises an entry name: drops a leading `/`, `.` and empty components; refuses
/// `..`, names over 255 bytes and paths over 4095 bytes.
pub(super) fn normalize(raw: &[u8]) -> std::result::Result<RelPath, Cause> {
    let mut out: RelPath = Vec::with_capacity(raw.len());
    for comp in raw.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => continue,
            b".." => {
                return Err(Cause::Refused(
                    "the name has a '..' component: an entry may not climb out of its directory".into(),
                ))
            }
            c if c.len() > MAX_NAME => {
                return Err(Cause::BadTar(format!(
                    "a name component is {} bytes long (the limit is {MAX_NAME})",
                    c.len()
                )))
            }
            c => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(c);
            }
        }
    }
    if out.len() > MAX_PATH {
        return Err(Cause::BadTar(format!("the path is {} bytes long (the limit is {MAX_PATH})", out.len())));
    }
    Ok(out)
}

pub(super) fn split(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&[], path),
    }
}

pub(super) fn join(parent: &[u8], name: &[u8]) -> RelPath {
    let mut p = Vec::with_capacity(parent.len() + name.len() + 1);
    p.extend_from_slice(parent);
    if !parent.is_empty() {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_names() {
        assert_eq!(normalize(b"/a//b/./c/").unwrap(), b"a/b/c".to_vec());
        assert_eq!(normalize(b"./").unwrap(), b"".to_vec());
        assert!(normalize(b"a/../../etc").is_err());
        assert!(normalize(&[b'x'; 256]).is_err());
    }
}
