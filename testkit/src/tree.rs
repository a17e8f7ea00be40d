//! Capture a directory tree (type, mode, owner, size, content digest, link target,
//! device numbers, xattrs, hardlink structure, mtime) and compare two captures. The
//! conformance suite and the end-to-end tests use it to prove two trees are equal.

use std::collections::{BTreeMap, HashMap};
use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use driver_core::sys::{self, XattrTarget};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    File { size: u64, sha256: String },
    Dir,
    Symlink { target: PathBuf },
    CharDev { major: u32, minor: u32 },
    BlockDev { major: u32, minor: u32 },
    Fifo,
    Socket,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub kind: Kind,
    /// Permission bits with setuid/setgid/sticky.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: (i64, u32),
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// The smallest path sharing this inode, for non-directories with several names.
    pub hardlink_group: Option<PathBuf>,
    /// Allocated bytes (st_blocks * 512).
    pub blocks: u64,
}

#[derive(Clone, Debug, Default)]
pub struct Tree {
    /// Path relative to the root (`""` is the root itself).
    pub entries: BTreeMap<PathBuf, Node>,
}

#[derive(Clone, Debug)]
pub struct CompareOptions {
    pub file_mtime: bool,
    pub dir_mtime: bool,
    pub root_metadata: bool,
    pub ignore_xattr_prefixes: Vec<String>,
    pub ignore_paths: Vec<PathBuf>,
}

impl Default for CompareOptions {
    fn default() -> Self {
        CompareOptions {
            file_mtime: true,
            dir_mtime: true,
            root_metadata: false,
            ignore_xattr_prefixes: vec!["trusted.overlay.".into(), "user.overlay.".into()],
            ignore_paths: Vec::new(),
        }
    }
}

fn digest_file(path: &Path) -> io::Result<String> {
    let mut h = driver_core::digest::Hashing::new(io::sink());
    io::copy(&mut fs::File::open(path)?, &mut h)?;
    Ok(h.digest().trim_start_matches("sha256:").to_string())
}

impl Tree {
    /// Captures the tree at `root` without following symlinks.
    pub fn capture(root: &Path) -> io::Result<Tree> {
        let mut entries = BTreeMap::new();
        let mut inodes: HashMap<(u64, u64), Vec<PathBuf>> = HashMap::new();
        let mut stack = vec![PathBuf::new()];
        while let Some(rel) = stack.pop() {
            let path = root.join(&rel);
            let md = fs::symlink_metadata(&path)?;
            let ft = md.file_type();
            let kind = if ft.is_dir() {
                for e in fs::read_dir(&path)? {
                    stack.push(rel.join(e?.file_name()));
                }
                Kind::Dir
            } else if ft.is_file() {
                Kind::File { size: md.len(), sha256: digest_file(&path)? }
            } else if ft.is_symlink() {
                Kind::Symlink { target: fs::read_link(&path)? }
            } else if ft.is_char_device() {
                Kind::CharDev {
                    major: nix::sys::stat::major(md.rdev()) as u32,
                    minor: nix::sys::stat::minor(md.rdev()) as u32,
                }
            } else if ft.is_block_device() {
                Kind::BlockDev {
                    major: nix::sys::stat::major(md.rdev()) as u32,
                    minor: nix::sys::stat::minor(md.rdev()) as u32,
                }
            } else if ft.is_fifo() {
                Kind::Fifo
            } else {
                Kind::Socket
            };
            if !ft.is_dir() && md.nlink() > 1 {
                inodes.entry((md.dev(), md.ino())).or_default().push(rel.clone());
            }
            let c =
                CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
            let xattrs = sys::read_xattrs(XattrTarget::NoFollow(&c))?.into_iter().collect();
            entries.insert(
                rel,
                Node {
                    kind,
                    mode: md.mode() & 0o7777,
                    uid: md.uid(),
                    gid: md.gid(),
                    mtime: (md.mtime(), md.mtime_nsec() as u32),
                    xattrs,
                    hardlink_group: None,
                    blocks: md.blocks() * 512,
                },
            );
        }
        for paths in inodes.into_values() {
            if paths.len() > 1 {
                let first = paths.iter().min().cloned();
                for p in paths {
                    if let Some(n) = entries.get_mut(&p) {
                        n.hardlink_group = first.clone();
                    }
                }
            }
        }
        Ok(Tree { entries })
    }

    /// Every difference between `self` and `other`, one line each; empty when equal.
    pub fn differences(&self, other: &Tree, opts: &CompareOptions) -> Vec<String> {
        let mut out = Vec::new();
        let ignored = |p: &Path| opts.ignore_paths.iter().any(|i| p.starts_with(i));
        let xattrs = |n: &Node| -> BTreeMap<String, Vec<u8>> {
            n.xattrs
                .iter()
                .filter(|(k, _)| !opts.ignore_xattr_prefixes.iter().any(|p| k.starts_with(p.as_str())))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        for (path, a) in &self.entries {
            if ignored(path) {
                continue;
            }
            let shown = if path.as_os_str().is_empty() { "/".to_string() } else { path.display().to_string() };
            let Some(b) = other.entries.get(path) else {
                out.push(format!("{shown}: only in the first tree"));
                continue;
            };
            if a.kind != b.kind {
                out.push(format!("{shown}: {:?} vs {:?}", a.kind, b.kind));
                continue;
            }
            let is_root = path.as_os_str().is_empty();
            if is_root && !opts.root_metadata {
                continue;
            }
            if a.mode != b.mode {
                out.push(format!("{shown}: mode {:o} vs {:o}", a.mode, b.mode));
            }
            if (a.uid, a.gid) != (b.uid, b.gid) {
                out.push(format!("{shown}: owner {}:{} vs {}:{}", a.uid, a.gid, b.uid, b.gid));
            }
            let is_dir = a.kind == Kind::Dir;
            let check_mtime =
                if is_dir { opts.dir_mtime } else { opts.file_mtime && !matches!(a.kind, Kind::Symlink { .. }) };
            if check_mtime && a.mtime != b.mtime {
                out.push(format!("{shown}: mtime {}.{:09} vs {}.{:09}", a.mtime.0, a.mtime.1, b.mtime.0, b.mtime.1));
            }
            let (xa, xb) = (xattrs(a), xattrs(b));
            if xa != xb {
                out.push(format!(
                    "{shown}: xattrs {:?} vs {:?}",
                    xa.keys().collect::<Vec<_>>(),
                    xb.keys().collect::<Vec<_>>()
                ));
            }
            if a.hardlink_group != b.hardlink_group {
                out.push(format!("{shown}: hardlinked with {:?} vs {:?}", a.hardlink_group, b.hardlink_group));
            }
        }
        for path in other.entries.keys() {
            if !ignored(path) && !self.entries.contains_key(path) {
                out.push(format!("{}: only in the second tree", path.display()));
            }
        }
        if out.len() > 50 {
            let more = out.len() - 50;
            out.truncate(50);
            out.push(format!("... and {more} more"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_each_kind_of_difference() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        for d in [a.path(), b.path()] {
            fs::write(d.join("f"), b"same").unwrap();
            fs::write(d.join("g"), b"g").unwrap();
            std::os::unix::fs::symlink("f", d.join("l")).unwrap();
        }
        let opts = CompareOptions::default();
        let cap = |p: &Path| Tree::capture(p).unwrap();
        // Same content, but mtimes differ: compare without them first.
        let no_mtime = CompareOptions { file_mtime: false, dir_mtime: false, ..opts.clone() };
        assert!(cap(a.path()).differences(&cap(b.path()), &no_mtime).is_empty());
        fs::write(b.path().join("f"), b"diff").unwrap();
        assert!(!cap(a.path()).differences(&cap(b.path()), &no_mtime).is_empty());
        fs::write(b.path().join("f"), b"same").unwrap();
        fs::remove_file(b.path().join("g")).unwrap();
        fs::hard_link(b.path().join("f"), b.path().join("g")).unwrap();
        let d = cap(a.path()).differences(&cap(b.path()), &no_mtime);
        assert!(d.iter().any(|l| l.contains("hardlinked")), "{d:?}");
        fs::remove_file(b.path().join("l")).unwrap();
        std::os::unix::fs::symlink("g", b.path().join("l")).unwrap();
        assert!(cap(a.path()).differences(&cap(b.path()), &no_mtime).iter().any(|l| l.starts_with("l:")));
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(a.path().join("f"), fs::Permissions::from_mode(0o600)).unwrap();
        assert!(cap(a.path()).differences(&cap(b.path()), &no_mtime).iter().any(|l| l.contains("mode")));
    }
}
