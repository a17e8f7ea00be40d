//! A layer's content record: what its own tree held when it was committed, so that
//! `strata check` can tell, file by file, what changed since.
//!
//! The record is a manifest, not a single digest: a Merkle root (composefs's form)
//! proves that *something* differs, a manifest names the file and how ("file
//! /usr/bin/python3.11: 0 bytes, recorded 6836224"). One entry per node of the layer's
//! own tree, sorted by path: what [`crate::driver::LayerDir`] shows, as the driver
//! stores it (overlay: the upper directory, whiteouts as 0/0 character devices and
//! opaque directories as xattrs; vfs and btrfs: the whole tree).
//!
//! Content digests cost no second read: the tar engine hashes each file's content as it
//! writes it ([`crate::lifecycle::Applied::content`]). A file the tar did not write (a
//! full-tree driver's copy of its parent) takes its digest from the parent's record;
//! only what neither names is read (a layer `create`d empty, none in practice).
//! Recording walks the tree with `lstat` and `llistxattr` only.
//!
//! On disk: `meta/<id>.files`, JSON ([`Record`]), written in staging and renamed in with
//! the layer's `meta/<id>.json` (see [`crate::store`]). Container layers (writable)
//! have none: their content is the container's to change.

use std::collections::{BTreeMap, HashMap};
use std::ffi::CString;
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::driver::Usage;
use crate::sys::{self, XattrTarget};

/// The record's format version.
pub const VERSION: u32 = 1;

/// Content digests the tar engine computed, by path relative to the layer root.
pub type Written = HashMap<Vec<u8>, [u8; 32]>;

/// A layer's content record.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub version: u32,
    /// Disk use of the tree when recorded (blocks × 512, inodes; a hardlinked inode
    /// once), as `sys::disk_usage` counts it.
    pub usage: Usage,
    pub entries: Vec<Entry>,
}

/// One node of the tree.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Relative to the layer root, `/`-separated, `""` the root; bytes that are not
    /// UTF-8, and `%`, are written `%XX`.
    pub path: String,
    pub kind: Kind,
    /// Permission bits with setuid, setgid, sticky.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Regular files: bytes.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub size: u64,
    /// Modification time, nanoseconds since the epoch (not compared for directories:
    /// see docs/check.md).
    pub mtime: i64,
    /// Symlinks: the target, encoded as `path` is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Devices: the device number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rdev: Option<u64>,
    /// Xattrs, name → hex of the value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub xattrs: BTreeMap<String, String>,
    /// Regular files: hex sha256 of the content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    #[default]
    File,
    Dir,
    Symlink,
    Char,
    Block,
    Fifo,
    Socket,
}

impl Kind {
    fn of(ft: fs::FileType) -> Kind {
        if ft.is_dir() {
            Kind::Dir
        } else if ft.is_symlink() {
            Kind::Symlink
        } else if ft.is_char_device() {
            Kind::Char
        } else if ft.is_block_device() {
            Kind::Block
        } else if ft.is_fifo() {
            Kind::Fifo
        } else if ft.is_socket() {
            Kind::Socket
        } else {
            Kind::File
        }
    }

    fn word(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Dir => "directory",
            Kind::Symlink => "symlink",
            Kind::Char => "character device",
            Kind::Block => "block device",
            Kind::Fifo => "fifo",
            Kind::Socket => "socket",
        }
    }
}

/// A path's bytes as the record writes them (UTF-8 kept, other bytes and `%` as `%XX`).
pub fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    let mut rest = bytes;
    while !rest.is_empty() {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                push_escaped(&mut out, s);
                break;
            }
            Err(e) => {
                let (good, bad) = rest.split_at(e.valid_up_to());
                push_escaped(&mut out, std::str::from_utf8(good).unwrap_or_default());
                let n = e.error_len().unwrap_or(bad.len());
                for b in &bad[..n] {
                    out.push_str(&format!("%{b:02X}"));
                }
                rest = &bad[n..];
            }
        }
    }
    out
}

fn push_escaped(out: &mut String, s: &str) {
    for c in s.chars() {
        if c == '%' {
            out.push_str("%25");
        } else {
            out.push(c);
        }
    }
}

/// A node found by the walk, before its content digest is known.
struct Found {
    entry: Entry,
    abs: PathBuf,
    rel: Vec<u8>,
    inode: Option<(u64, u64)>,
}

/// Walks `root` (lstat and xattrs only), sorted by path, with the disk use.
fn walk(root: &Path) -> io::Result<(Vec<Found>, Usage)> {
    let mut out = Vec::new();
    let mut usage = Usage::default();
    let mut seen = std::collections::HashSet::new();
    let mut stack: Vec<(PathBuf, Vec<u8>)> = vec![(root.to_path_buf(), Vec::new())];
    while let Some((abs, rel)) = stack.pop() {
        let md = fs::symlink_metadata(&abs)?;
        let kind = Kind::of(md.file_type());
        let shared = md.nlink() > 1 && kind != Kind::Dir;
        if !shared || seen.insert((md.dev(), md.ino())) {
            usage.bytes += md.blocks() * 512;
            usage.inodes += 1;
        }
        let cpath = CString::new(abs.as_os_str().as_bytes()).map_err(io::Error::other)?;
        let mut xattrs = BTreeMap::new();
        for (name, value) in sys::read_xattrs(XattrTarget::NoFollow(&cpath))? {
            xattrs.insert(name, hex::encode(value));
        }
        let target = match kind {
            Kind::Symlink => Some(encode(fs::read_link(&abs)?.as_os_str().as_bytes())),
            _ => None,
        };
        let entry = Entry {
            path: encode(&rel),
            kind,
            mode: md.mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
            size: if kind == Kind::File { md.size() } else { 0 },
            mtime: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
            target,
            rdev: matches!(kind, Kind::Char | Kind::Block).then(|| md.rdev()),
            xattrs,
            sha256: None,
        };
        if kind == Kind::Dir {
            for e in fs::read_dir(&abs)? {
                let e = e?;
                let name = e.file_name();
                let mut r = rel.clone();
                if !r.is_empty() {
                    r.push(b'/');
                }
                r.extend_from_slice(name.as_bytes());
                stack.push((e.path(), r));
            }
        }
        let inode = shared.then(|| (md.dev(), md.ino()));
        out.push(Found { entry, abs, rel, inode });
    }
    out.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok((out, usage))
}

/// sha256 of a file's content, read.
fn hash_file(path: &Path) -> io::Result<String> {
    let mut f = fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => h.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(hex::encode(h.finalize()))
}

/// Records the tree at `root`. Content digests come from `written` (what the tar engine
/// wrote), then from another name of the same inode, then from `parent`'s record for
/// the same path and size (a full-tree driver's inherited files); the rest are read.
pub fn make(root: &Path, written: &Written, parent: Option<&Record>) -> io::Result<Record> {
    let (mut found, usage) = walk(root)?;
    let mut by_inode: HashMap<(u64, u64), String> = HashMap::new();
    for f in &found {
        if let (Some(ino), Some(h)) = (f.inode, written.get(&f.rel)) {
            by_inode.insert(ino, hex::encode(h));
        }
    }
    let inherited: HashMap<&str, &Entry> = parent
        .map(|p| p.entries.iter().filter(|e| e.kind == Kind::File).map(|e| (e.path.as_str(), e)).collect())
        .unwrap_or_default();
    let unknown: Vec<usize> = found
        .iter_mut()
        .enumerate()
        .filter(|(_, f)| f.entry.kind == Kind::File)
        .filter_map(|(i, f)| {
            let h = written
                .get(&f.rel)
                .map(hex::encode)
                .or_else(|| f.inode.and_then(|ino| by_inode.get(&ino).cloned()))
                .or_else(|| {
                    inherited
                        .get(f.entry.path.as_str())
                        .filter(|e| e.size == f.entry.size)
                        .and_then(|e| e.sha256.clone())
                });
            f.entry.sha256 = h;
            f.entry.sha256.is_none().then_some(i)
        })
        .collect();
    let hashed: Vec<(usize, io::Result<String>)> =
        unknown.into_par_iter().map(|i| (i, hash_file(&found[i].abs))).collect();
    for (i, h) in hashed {
        found[i].entry.sha256 = Some(h?);
    }
    Ok(Record { version: VERSION, usage, entries: found.into_iter().map(|f| f.entry).collect() })
}

/// What differs between a tree and its record, one line per path, sorted by path.
pub fn verify(root: &Path, record: &Record) -> io::Result<Vec<String>> {
    let (found, _) = walk(root)?;
    let hashes: Vec<Option<io::Result<String>>> =
        found.par_iter().map(|f| (f.entry.kind == Kind::File).then(|| hash_file(&f.abs))).collect();
    let mut now: BTreeMap<&str, Entry> = BTreeMap::new();
    for (f, h) in found.iter().zip(hashes) {
        let mut e = f.entry.clone();
        e.sha256 = match h {
            Some(Ok(h)) => Some(h),
            Some(Err(err)) => {
                return Err(io::Error::new(err.kind(), format!("{}: {err}", f.abs.display())));
            }
            None => None,
        };
        now.insert(f.entry.path.as_str(), e);
    }
    let mut problems = Vec::new();
    let shown = |p: &str| format!("/{p}");
    for want in &record.entries {
        let Some(got) = now.remove(want.path.as_str()) else {
            problems.push(format!("{} {}: missing", want.kind.word(), shown(&want.path)));
            continue;
        };
        if let Some(d) = differs(want, &got) {
            problems.push(format!("{} {}: {d}", want.kind.word(), shown(&want.path)));
        }
    }
    for (path, got) in now {
        problems.push(format!("{} {}: not in the record (added since)", got.kind.word(), shown(path)));
    }
    Ok(problems)
}

/// How `got` differs from `want` (same path), in words; the most telling difference.
fn differs(want: &Entry, got: &Entry) -> Option<String> {
    if want.kind != got.kind {
        return Some(format!("is a {}, recorded a {}", got.kind.word(), want.kind.word()));
    }
    if want.size != got.size {
        return Some(format!("{} bytes, recorded {}", got.size, want.size));
    }
    if want.sha256 != got.sha256 {
        return Some("content differs from the record (same size: a byte differs)".into());
    }
    if want.target != got.target {
        return Some(format!(
            "points to {}, recorded {}",
            got.target.as_deref().unwrap_or(""),
            want.target.as_deref().unwrap_or("")
        ));
    }
    if want.mode != got.mode {
        return Some(format!("mode {:04o}, recorded {:04o}", got.mode, want.mode));
    }
    if (want.uid, want.gid) != (got.uid, got.gid) {
        return Some(format!("owner {}:{}, recorded {}:{}", got.uid, got.gid, want.uid, want.gid));
    }
    if want.rdev != got.rdev {
        return Some(format!("device {:?}, recorded {:?}", got.rdev, want.rdev));
    }
    if want.xattrs != got.xattrs {
        let names = |m: &BTreeMap<String, String>| m.keys().cloned().collect::<Vec<_>>().join(",");
        return Some(format!("xattrs [{}] differ from the record [{}]", names(&got.xattrs), names(&want.xattrs)));
    }
    // A directory's mtime moves with its entries (a view's lookups may even set it on
    // some filesystems), and its entries are compared one by one already.
    if want.kind != Kind::Dir && want.mtime != got.mtime {
        return Some(format!("modified at {} ns, recorded {} ns", got.mtime, want.mtime));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tree(dir: &Path) {
        fs::create_dir_all(dir.join("a/b")).unwrap();
        fs::write(dir.join("a/f"), b"hello").unwrap();
        fs::write(dir.join("a/b/g"), vec![7u8; 10000]).unwrap();
        fs::hard_link(dir.join("a/f"), dir.join("h")).unwrap();
        symlink("a/f", dir.join("l")).unwrap();
    }

    #[test]
    fn a_recorded_tree_verifies_and_each_change_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        tree(tmp.path());
        let mut written = Written::new();
        written.insert(b"a/f".to_vec(), Sha256::digest(b"hello").into());
        let rec = make(tmp.path(), &written, None).unwrap();
        assert_eq!(rec.entries.len(), 7);
        assert_eq!(rec.entries[0].path, "");
        let h = rec.entries.iter().find(|e| e.path == "h").unwrap();
        assert_eq!(h.sha256.as_deref(), Some(hex::encode(Sha256::digest(b"hello")).as_str()));
        assert_eq!(verify(tmp.path(), &rec).unwrap(), Vec::<String>::new());

        fs::write(tmp.path().join("a/b/g"), b"").unwrap();
        fs::remove_file(tmp.path().join("l")).unwrap();
        fs::write(tmp.path().join("new"), b"x").unwrap();
        let got = verify(tmp.path(), &rec).unwrap();
        assert!(got[0].starts_with("file /a/b/g: 0 bytes, recorded 10000"), "{got:?}");
        assert_eq!(got[1], "symlink /l: missing");
        assert_eq!(got[2], "file /new: not in the record (added since)");
    }

    #[test]
    fn inherited_digests_come_from_the_parent_record() {
        let tmp = tempfile::tempdir().unwrap();
        tree(tmp.path());
        let full = make(tmp.path(), &Written::new(), None).unwrap();
        // A wrong digest in the parent's record is taken as it is: the file is not read.
        let mut parent = full.clone();
        parent.entries.iter_mut().find(|e| e.path == "a/b/g").unwrap().sha256 = Some("00".into());
        let child = make(tmp.path(), &Written::new(), Some(&parent)).unwrap();
        assert_eq!(child.entries.iter().find(|e| e.path == "a/b/g").unwrap().sha256.as_deref(), Some("00"));
        assert_eq!(verify(tmp.path(), &child).unwrap().len(), 1);
    }

    #[test]
    fn non_utf8_names_are_escaped() {
        assert_eq!(encode(b"a%b\xffc"), "a%25b%FFc");
    }
}
