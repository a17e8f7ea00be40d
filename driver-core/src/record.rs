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
//! Where the apply made the whole tree, it describes each node as it makes it
//! ([`Tree`], [`crate::lifecycle::Applied::tree`]) and nothing is walked. Elsewhere
//! [`make`] walks the tree with `lstat` and `llistxattr`, and content digests still cost
//! no second read: the tar engine hashes each file's content as it writes it
//! ([`crate::lifecycle::Applied::content`]); a file the tar did not write (a full-tree
//! driver's copy of its parent) takes its digest from the parent's record; only what
//! neither names is read (a layer `create`d empty, none in practice).
//!
//! On disk: `meta/<id>.files`, JSON ([`Record`]), written in staging and renamed in with
//! the layer's `meta/<id>.json` (see [`crate::store`]). Container layers (writable)
//! have none: their content is the container's to change.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{CString, OsStr};
use std::fs;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::fcntl::{readlinkat, AtFlags, OFlag};
use nix::sys::stat::{fstatat, FileStat};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::sys::{self, XattrTarget};

/// What one layer alone holds on disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub bytes: u64,
    pub inodes: u64,
}

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

/// A node found by the walk.
struct Found {
    entry: Entry,
    rel: Vec<u8>,
}

/// Walks `root` by descriptor (a layer may hold paths longer than PATH_MAX), sorted by
/// path, with the disk use. A regular file's content is hashed when `hash(path, size)`
/// says so (the files of one directory in parallel).
fn walk(root: &Path, hash: &(dyn Fn(&str, u64) -> bool + Sync)) -> io::Result<(Vec<Found>, Usage)> {
    let fd = sys::open_dir(root)?;
    let st = sys::fstat(fd.as_fd())?;
    let mut out = Vec::new();
    let mut usage = Usage { bytes: st.st_blocks as u64 * 512, inodes: 1 };
    // The root's xattrs through its descriptor (a path through /proc would name the
    // magic link itself, which `l*xattr` does not follow).
    let entry = node(&st, XattrTarget::Fd(fd.as_raw_fd()), Vec::new(), None)?;
    out.push(Found { entry, rel: Vec::new() });
    let mut seen = std::collections::HashSet::new();
    walk_dir(fd.as_fd(), &[], hash, &mut out, &mut usage, &mut seen)?;
    out.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok((out, usage))
}

/// `/proc/self/fd/<dir>/<name>`: a short path to a node whatever its depth, for the
/// calls that take only a path (`llistxattr`, `lgetxattr`; the final name not followed).
fn fd_path(dir: BorrowedFd<'_>, name: &OsStr) -> CString {
    let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    p.extend_from_slice(name.as_bytes());
    CString::new(p).unwrap_or_default()
}

fn node(st: &FileStat, xattrs_of: XattrTarget<'_>, rel: Vec<u8>, target: Option<String>) -> io::Result<Entry> {
    Ok(entry(st, &rel, sys::read_xattrs(xattrs_of)?, target))
}

/// The entry of a node at `rel` from its stat, xattrs and (symlinks) encoded target; no digest.
fn entry(st: &FileStat, rel: &[u8], read: Vec<(String, Vec<u8>)>, target: Option<String>) -> Entry {
    let kind = kind_of(st.st_mode);
    let mut xattrs = BTreeMap::new();
    for (name, value) in read {
        xattrs.insert(name, hex::encode(value));
    }
    Entry {
        path: encode(rel),
        kind,
        mode: st.st_mode & 0o7777,
        uid: st.st_uid,
        gid: st.st_gid,
        size: if kind == Kind::File { st.st_size as u64 } else { 0 },
        mtime: st.st_mtime * 1_000_000_000 + st.st_mtime_nsec,
        target,
        rdev: matches!(kind, Kind::Char | Kind::Block).then_some(st.st_rdev),
        xattrs,
        sha256: None,
    }
}

fn kind_of(mode: u32) -> Kind {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => Kind::Dir,
        libc::S_IFLNK => Kind::Symlink,
        libc::S_IFCHR => Kind::Char,
        libc::S_IFBLK => Kind::Block,
        libc::S_IFIFO => Kind::Fifo,
        libc::S_IFSOCK => Kind::Socket,
        _ => Kind::File,
    }
}

fn walk_dir(
    dir: BorrowedFd<'_>,
    rel: &[u8],
    hash: &(dyn Fn(&str, u64) -> bool + Sync),
    out: &mut Vec<Found>,
    usage: &mut Usage,
    seen: &mut std::collections::HashSet<(u64, u64)>,
) -> io::Result<()> {
    let at = |name: &OsStr, e: io::Error| {
        let mut r = rel.to_vec();
        r.push(b'/');
        r.extend_from_slice(name.as_bytes());
        crate::error::io_context(format!("/{}", encode(&r)), e)
    };
    let mut to_hash = Vec::new();
    let mut subdirs = Vec::new();
    for name in sys::read_dir_names(dir)? {
        let st = fstatat(Some(dir.as_raw_fd()), name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(|e| at(&name, e.into()))?;
        let kind = kind_of(st.st_mode);
        let shared = st.st_nlink > 1 && kind != Kind::Dir;
        if !shared || seen.insert((st.st_dev, st.st_ino)) {
            usage.bytes += st.st_blocks as u64 * 512;
            usage.inodes += 1;
        }
        let mut r = rel.to_vec();
        if !r.is_empty() {
            r.push(b'/');
        }
        r.extend_from_slice(name.as_bytes());
        let target = match kind {
            Kind::Symlink => Some(encode(
                readlinkat(Some(dir.as_raw_fd()), name.as_os_str()).map_err(|e| at(&name, e.into()))?.as_bytes(),
            )),
            _ => None,
        };
        let path = fd_path(dir, &name);
        let entry = node(&st, XattrTarget::NoFollow(&path), r.clone(), target).map_err(|e| at(&name, e))?;
        if kind == Kind::File && hash(&entry.path, entry.size) {
            to_hash.push((out.len(), name.clone()));
        }
        if kind == Kind::Dir {
            subdirs.push((name.clone(), r.clone()));
        }
        out.push(Found { entry, rel: r });
    }
    let hashed: Vec<(usize, io::Result<String>)> = to_hash
        .into_par_iter()
        .map(|(i, name)| {
            let h = sys::open_at(dir, &name, OFlag::O_RDONLY, 0).and_then(|fd| hash_file(fs::File::from(fd)));
            (i, h.map_err(|e| at(&name, e)))
        })
        .collect();
    for (i, h) in hashed {
        out[i].entry.sha256 = Some(h?);
    }
    for (name, r) in subdirs {
        let fd = sys::open_at(dir, &name, OFlag::O_DIRECTORY | OFlag::O_RDONLY, 0).map_err(|e| at(&name, e))?;
        walk_dir(fd.as_fd(), &r, hash, out, usage, seen)?;
    }
    Ok(())
}

/// sha256 of a file's content, read.
fn hash_file(mut f: fs::File) -> io::Result<String> {
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
    let inherited: HashMap<&str, &Entry> = parent
        .map(|p| p.entries.iter().filter(|e| e.kind == Kind::File).map(|e| (e.path.as_str(), e)).collect())
        .unwrap_or_default();
    let known_by_path: HashMap<String, String> = written.iter().map(|(p, h)| (encode(p), hex::encode(h))).collect();
    let inherit = |path: &str, size: u64| inherited.get(path).filter(|e| e.size == size).and_then(|e| e.sha256.clone());
    // Read only what neither the apply nor the parent's record names (another name of
    // an inode the apply wrote is read too: rare, hardlinks made by the tar).
    let (mut found, usage) =
        walk(root, &|path, size| !known_by_path.contains_key(path) && inherit(path, size).is_none())?;
    for f in found.iter_mut().filter(|f| f.entry.kind == Kind::File && f.entry.sha256.is_none()) {
        f.entry.sha256 = known_by_path.get(&f.entry.path).cloned().or_else(|| inherit(&f.entry.path, f.entry.size));
    }
    Ok(Record { version: VERSION, usage, entries: found.into_iter().map(|f| f.entry).collect() })
}

/// A node as the one who made it saw it: its entry, and what the tree's disk use counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub entry: Entry,
    /// `st_blocks` × 512.
    pub bytes: u64,
    /// The inode of a non-directory: a node of several names counts once.
    pub inode: Option<(u64, u64)>,
}

impl Node {
    /// The node at `rel` from its stat, its xattrs, its link target (symlinks) and its
    /// content digest (regular files), as the walk would find it.
    pub fn of(
        st: &FileStat,
        rel: &[u8],
        xattrs: Vec<(String, Vec<u8>)>,
        target: Option<&[u8]>,
        sha256: Option<&[u8; 32]>,
    ) -> Node {
        let mut entry = entry(st, rel, xattrs, target.map(encode));
        if entry.kind == Kind::File {
            entry.sha256 = sha256.map(hex::encode);
        }
        let inode = (entry.kind != Kind::Dir).then_some((st.st_dev, st.st_ino));
        Node { entry, bytes: st.st_blocks as u64 * 512, inode }
    }

    /// The same inode under another name (a hardlink).
    pub fn named(&self, rel: &[u8]) -> Node {
        Node { entry: Entry { path: encode(rel), ..self.entry.clone() }, ..self.clone() }
    }
}

/// A layer's own tree as its maker knew it, node by node, by path relative to its root:
/// the content record made without a walk (the tar engine fills it in as it makes each
/// node, from the descriptors it holds). [`make`] walks to the same record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tree {
    nodes: BTreeMap<Vec<u8>, Node>,
}

impl Tree {
    /// A node made at `rel`: whatever was there before, and below it, is gone.
    pub fn made(&mut self, rel: &[u8], node: Node) {
        self.remove(rel);
        self.nodes.insert(rel.to_vec(), node);
    }

    /// The node at `rel` now looks like `node` (a directory's entries stay).
    pub fn set(&mut self, rel: &[u8], node: Node) {
        self.nodes.insert(rel.to_vec(), node);
    }

    /// The node at `rel`, if the tree has it.
    pub fn get(&self, rel: &[u8]) -> Option<&Node> {
        self.nodes.get(rel)
    }

    /// The node at `rel` and everything below it are gone.
    pub fn remove(&mut self, rel: &[u8]) {
        if rel.is_empty() {
            self.nodes.clear();
            return;
        }
        self.nodes.remove(rel);
        // Below `rel/`: the keys from `rel/` up to `rel0` ('0' follows '/').
        let (mut lo, mut hi) = (rel.to_vec(), rel.to_vec());
        lo.push(b'/');
        hi.push(b'0');
        let below: Vec<Vec<u8>> = self.nodes.range(lo..hi).map(|(k, _)| k.clone()).collect();
        for k in below {
            self.nodes.remove(&k);
        }
    }

    /// Reads again, from the tree at `root`, the directories at `paths` and their
    /// parents (something changed them after they were made: overlay gives implicit
    /// directories their lower metadata, or removes them); one that is gone leaves the
    /// tree with everything below it.
    pub fn refresh(&mut self, root: &Path, paths: &[&Path]) -> io::Result<()> {
        let fd = sys::open_dir(root)?;
        let mut again: Vec<Vec<u8>> = Vec::new();
        for p in paths {
            let rel = p.as_os_str().as_bytes().to_vec();
            if let Some(i) = rel.iter().rposition(|&b| b == b'/') {
                again.push(rel[..i].to_vec());
            } else if !rel.is_empty() {
                again.push(Vec::new());
            }
            again.push(rel);
        }
        again.sort();
        again.dedup();
        for rel in again {
            let opened = if rel.is_empty() {
                sys::open_dir(root)
            } else {
                sys::open_dir_in(fd.as_fd(), Path::new(OsStr::from_bytes(&rel)))
            };
            match opened {
                Ok(dir) => {
                    let st = sys::fstat(dir.as_fd())?;
                    let xattrs = sys::read_xattrs(XattrTarget::Fd(dir.as_raw_fd()))?;
                    self.set(&rel, Node::of(&st, &rel, xattrs, None, None));
                }
                // No directory there: gone (with what was below it), unless a later entry
                // made a non-directory of the path, whose node stands.
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR) | Some(libc::ELOOP)) => {
                    let (parent, name) = match rel.iter().rposition(|&b| b == b'/') {
                        Some(i) => (&rel[..i], &rel[i + 1..]),
                        None => (&[][..], &rel[..]),
                    };
                    let there = match sys::open_dir_in(fd.as_fd(), Path::new(OsStr::from_bytes(parent))) {
                        Ok(p) => sys::lstat_at(p.as_fd(), OsStr::from_bytes(name))?.is_some(),
                        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => false,
                        Err(e) => return Err(e),
                    };
                    if !there {
                        self.remove(&rel);
                    }
                }
                Err(e) => return Err(crate::error::io_context(format!("/{}", encode(&rel)), e)),
            }
        }
        Ok(())
    }

    /// The content record: the entries sorted by path, the disk use of the nodes.
    pub fn record(&self) -> Record {
        let mut usage = Usage::default();
        let mut seen = std::collections::HashSet::new();
        for node in self.nodes.values() {
            if node.inode.is_none_or(|i| seen.insert(i)) {
                usage.bytes += node.bytes;
                usage.inodes += 1;
            }
        }
        Record { version: VERSION, usage, entries: self.nodes.values().map(|n| n.entry.clone()).collect() }
    }
}

/// What differs between a tree and its record, one line per path, sorted by path.
pub fn verify(root: &Path, record: &Record) -> io::Result<Vec<String>> {
    let (found, _) = walk(root, &|_, _| true)?;
    let mut now: BTreeMap<&str, &Entry> = found.iter().map(|f| (f.entry.path.as_str(), &f.entry)).collect();
    let mut problems = Vec::new();
    let shown = |p: &str| format!("/{p}");
    for want in &record.entries {
        let Some(got) = now.remove(want.path.as_str()) else {
            problems.push(format!("{} {}: missing", want.kind.word(), shown(&want.path)));
            continue;
        };
        if let Some(d) = differs(want, got) {
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
