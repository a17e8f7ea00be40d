//! The tar engine's diff side: the shared writer of OCI layer tars, and the naive diff
//! (compare a layer's tree with its parent's) that vfs uses and that the other drivers'
//! native diffs are checked against.
//!
//! # One canonical change set
//! Every driver must give the same tar for the same changes, so the choices that OCI
//! leaves open are fixed here:
//! * entries are sorted by path, component by component, so a directory precedes
//!   what is in it; metadata comes from the layer, content too (or, for a
//!   metadata-only copy, from the lower file that holds the data: [`DiffEntry::Node`]);
//! * a changed inode with several names is written once, the other names as hardlinks
//!   to it, and all its names in the layer are written when any is (or applying the
//!   tar would split the link);
//! * deletions inside a directory that exists in both layer and parent are written as
//!   one `.wh.NAME` per deleted name, except when *none* of the parent's names is left
//!   in it: then the directory was replaced, and one `.wh..wh..opq` marker says so
//!   ([`deletions`] is that rule; a driver's native diff calls it too);
//! * a deleted tree is one whiteout, at its top;
//! * times keep nanoseconds (in a PAX `mtime` record when not whole seconds), xattrs go
//!   in `SCHILY.xattr.*` records, never those in a namespace a driver reserves
//!   (`driver_core::reserved`): a changed node carrying one is refused, and the
//!   whiteout format's own bookkeeping is left out.
//!
//! The naive diff compares owner, mode, size, mtime, xattrs, link target and device
//! numbers; when a file's size and mtime are equal but both mtimes are whole seconds
//! (as after a tar extraction) they cannot tell a rewrite in the same second, so the
//! content is compared, as containerd does.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::fcntl::OFlag;
use nix::sys::stat::{FileStat, SFlag};

use crate::reading::read_full;
use crate::whiteout::{WhiteoutFormat, OPAQUE_MARKER, WHITEOUT_PREFIX};
use driver_core::driver::{Change, ChangeKind};
use driver_core::error::{Cause, Context, Error, Result};
use driver_core::sys::{self, XattrTarget};
use driver_core::ReservedXattrs;

/// One entry of a layer diff.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiffEntry {
    /// A file, directory, link or device at `path` (relative). Metadata is read from
    /// `source`; a regular file's content from `data` when set (a metadata-only copy-up,
    /// whose data stays in a lower layer's file).
    Node { path: PathBuf, source: PathBuf, data: Option<PathBuf> },
    /// `path` (relative) was deleted.
    Whiteout { path: PathBuf },
    /// Everything the parent held in directory `dir` (relative) is hidden.
    Opaque { dir: PathBuf },
}

impl DiffEntry {
    /// The name the entry has in the tar.
    pub fn tar_path(&self) -> PathBuf {
        match self {
            DiffEntry::Node { path, .. } => path.clone(),
            DiffEntry::Whiteout { path } => {
                let name = path.file_name().unwrap_or_default();
                let mut wh = OsString::from(WHITEOUT_PREFIX);
                wh.push(name);
                path.parent().unwrap_or(Path::new("")).join(wh)
            }
            DiffEntry::Opaque { dir } => dir.join(OPAQUE_MARKER),
        }
    }
}

/// The deletions inside a directory `dir` present in both layer and parent, by the
/// canonical rule: one whiteout per parent name gone from the layer, or one opaque
/// marker when the parent had names and none of them is left. Never at the layer root:
/// the kernel's union mount ignores an opaque marker on a layer's root directory
/// (Linux 6.18: the deleted names came back), so the root gets one whiteout per name.
pub fn deletions(dir: &Path, parent_names: &BTreeSet<OsString>, layer_names: &BTreeSet<OsString>) -> Vec<DiffEntry> {
    let root = dir.as_os_str().is_empty();
    if !root && !parent_names.is_empty() && parent_names.iter().all(|n| !layer_names.contains(n)) {
        return vec![DiffEntry::Opaque { dir: dir.to_path_buf() }];
    }
    parent_names
        .iter()
        .filter(|n| !layer_names.contains(*n))
        .map(|n| DiffEntry::Whiteout { path: dir.join(n) })
        .collect()
}

/// Counts bytes written through it.
struct Counting<'a> {
    inner: &'a mut dyn Write,
    bytes: u64,
}

impl Write for Counting<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Reads the xattrs of `path` (not following a final symlink), without those in the
/// `reserved` namespaces.
pub fn xattrs_of(path: &Path, reserved: &ReservedXattrs) -> io::Result<Vec<(String, Vec<u8>)>> {
    let c =
        std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    xattrs_at(&c, reserved)
}

fn xattrs_at(path: &std::ffi::CStr, reserved: &ReservedXattrs) -> io::Result<Vec<(String, Vec<u8>)>> {
    let mut all = sys::read_xattrs(XattrTarget::NoFollow(path))?;
    all.retain(|(n, _)| !reserved.contains(n));
    Ok(all)
}

/// The directory an entry's source is in, opened by descriptor (its path may be longer
/// than PATH_MAX); entries come sorted, so most share the last one's.
#[derive(Default)]
struct SourceDir {
    open: Option<(PathBuf, OwnedFd)>,
}

impl SourceDir {
    fn of<'a>(&mut self, source: &'a Path) -> io::Result<(BorrowedFd<'_>, &'a OsStr)> {
        let (dir, name) = (source.parent().unwrap_or(Path::new("/")), source.file_name().unwrap_or_default());
        if self.open.as_ref().is_none_or(|(p, _)| p != dir) {
            self.open = Some((dir.to_path_buf(), sys::open_dir_long(dir)?));
        }
        Ok((self.open.as_ref().expect("just opened").1.as_fd(), name))
    }
}

/// Writes `entries` as an uncompressed OCI layer tar (sorted, hardlinks kept), without
/// the xattrs in the `reserved` namespaces (the walk refused every other use of them,
/// so what is left is a whiteout format's bookkeeping); returns the bytes written.
/// `layer` names the layer in errors.
pub fn write_tar(
    layer: &str,
    mut entries: Vec<DiffEntry>,
    reserved: &ReservedXattrs,
    out: &mut dyn Write,
) -> Result<u64> {
    entries.sort_by_key(|e| e.tar_path());
    entries.dedup_by_key(|e| e.tar_path());
    let mut counting = Counting { inner: out, bytes: 0 };
    {
        let mut builder = tar::Builder::new(&mut counting);
        let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
        let (mut dirs, mut data_dirs) = (SourceDir::default(), SourceDir::default());
        for entry in &entries {
            let tar_path = entry.tar_path();
            write_entry(&mut builder, entry, &tar_path, reserved, &mut links, &mut dirs, &mut data_dirs)
                .map_err(|e| e.in_layer(layer).with_path(&tar_path))?;
        }
        builder.finish().map_err(|e| Error::layer(layer, e))?;
    }
    counting.flush().map_err(|e| Error::layer(layer, e))?;
    Ok(counting.bytes)
}

fn write_entry<W: Write>(
    builder: &mut tar::Builder<W>,
    entry: &DiffEntry,
    tar_path: &Path,
    reserved: &ReservedXattrs,
    links: &mut HashMap<(u64, u64), PathBuf>,
    dirs: &mut SourceDir,
    data_dirs: &mut SourceDir,
) -> Result<()> {
    let (source, data) = match entry {
        DiffEntry::Whiteout { .. } | DiffEntry::Opaque { .. } => {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(0);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            builder.append_data(&mut h, tar_path, io::empty())?;
            return Ok(());
        }
        DiffEntry::Node { source, data, .. } => (source, data),
    };
    // Everything is read relative to the source's directory: a path beyond PATH_MAX
    // cannot be opened, stat-ed or read as a whole.
    let (dir, name) = dirs.of(source).at_path(source)?;
    let md = sys::lstat_at(dir, name)
        .at_path(source)?
        .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))
        .at_path(source)?;
    let kind = sys::file_type(&md);
    let mut h = tar::Header::new_gnu();
    h.set_mode(md.st_mode & 0o7777);
    h.set_uid(md.st_uid.into());
    h.set_gid(md.st_gid.into());
    h.set_mtime(md.st_mtime.max(0) as u64);
    h.set_size(0);
    let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
    if md.st_mtime_nsec != 0 || md.st_mtime < 0 {
        let t = md.st_mtime as i128 * 1_000_000_000 + md.st_mtime_nsec as i128;
        let (s, ns) = (t.div_euclid(1_000_000_000), t.rem_euclid(1_000_000_000));
        pax.push(("mtime".into(), format!("{s}.{ns:09}").into_bytes()));
    }
    for (name, value) in xattrs_at(&sys::proc_path(dir, name), reserved).at_path(source)? {
        pax.push((format!("SCHILY.xattr.{name}"), value));
    }
    let write_pax = |builder: &mut tar::Builder<W>| -> io::Result<()> {
        if !pax.is_empty() {
            builder.append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))?;
        }
        Ok(())
    };
    if kind != SFlag::S_IFDIR && md.st_nlink > 1 {
        if let Some(first) = links.get(&(md.st_dev, md.st_ino)) {
            h.set_entry_type(tar::EntryType::Link);
            builder.append_link(&mut h, tar_path, first)?;
            return Ok(());
        }
        links.insert((md.st_dev, md.st_ino), tar_path.to_path_buf());
    }
    match kind {
        SFlag::S_IFDIR => {
            h.set_entry_type(tar::EntryType::Directory);
            write_pax(builder)?;
            builder.append_data(&mut h, tar_path, io::empty())?;
        }
        SFlag::S_IFREG => {
            h.set_entry_type(tar::EntryType::Regular);
            let file = match data {
                // A metadata-only copy-up: the data is in a lower layer's file.
                Some(from) => {
                    let (d, n) = data_dirs.of(from).at_path(from)?;
                    sys::open_at(d, n, OFlag::O_RDONLY, 0).at_path(from)?
                }
                None => sys::open_at(dir, name, OFlag::O_RDONLY, 0).at_path(source)?,
            };
            let file = File::from(file);
            let size = file.metadata().at_path(data.as_deref().unwrap_or(source))?.len();
            h.set_size(size);
            write_pax(builder)?;
            // A file that changes size while the tar is written would corrupt the stream.
            builder.append_data(&mut h, tar_path, ExactReader { inner: file.take(size), left: size })?;
        }
        SFlag::S_IFLNK => {
            h.set_entry_type(tar::EntryType::Symlink);
            let target = nix::fcntl::readlinkat(Some(dir.as_raw_fd()), name).map_err(sys::errno).at_path(source)?;
            write_pax(builder)?;
            builder.append_link(&mut h, tar_path, target)?;
        }
        SFlag::S_IFCHR | SFlag::S_IFBLK | SFlag::S_IFIFO => {
            h.set_entry_type(match kind {
                SFlag::S_IFCHR => tar::EntryType::Char,
                SFlag::S_IFBLK => tar::EntryType::Block,
                _ => tar::EntryType::Fifo,
            });
            if kind != SFlag::S_IFIFO {
                h.set_device_major(nix::sys::stat::major(md.st_rdev) as u32)?;
                h.set_device_minor(nix::sys::stat::minor(md.st_rdev) as u32)?;
            }
            write_pax(builder)?;
            builder.append_data(&mut h, tar_path, io::empty())?;
        }
        // Sockets cannot be carried in a tar; like Go's archive/tar, leave them out.
        _ => {}
    }
    Ok(())
}

/// Fails instead of writing a short entry if the file shrank meanwhile.
struct ExactReader<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && self.left > 0 && !buf.is_empty() {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file shrank while being written to the tar"));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// The entries and changes of a layer against its parent.
#[derive(Debug, Default)]
pub struct NaiveDiff {
    pub entries: Vec<DiffEntry>,
    pub changes: Vec<Change>,
    /// The namespaces the walk refused, left out of the tar.
    pub reserved: ReservedXattrs,
}

impl driver_core::lifecycle::LayerDiff for NaiveDiff {
    fn changes(self: Box<Self>) -> Vec<Change> {
        self.changes
    }
    fn write_tar(self: Box<Self>, layer: &str, out: &mut dyn Write) -> Result<u64> {
        write_tar(layer, self.entries, &self.reserved, out)
    }
}

/// What the layer directory given to [`walk_diff`] holds.
#[derive(Clone, Debug)]
pub enum LayerKind {
    /// The whole view (copied layers, snapshots, mounted views): the naive diff.
    Full,
    /// Only what the layer changed, with whiteouts and opaque directories recorded in
    /// the given format (see [`crate::whiteout`]). Only this directory is walked, so the
    /// cost follows the number of changes, not the image's size.
    Upper(Arc<dyn WhiteoutFormat>),
    /// The whole view, but only what `visit` names can have changed: what a driver
    /// that knows where its changes are (an upper directory, a filesystem's change
    /// record) says. The walk visits those.
    /// `all_links`: `visit.paths` holds every name, in layer and parent, of each file
    /// with several names that it holds one name of, so the parent need not be
    /// searched for the others (which costs a walk of the whole parent).
    Filtered { visit: Visit, all_links: bool },
}

/// What a filtered walk ([`LayerKind::Filtered`]) visits: `paths` can have changed
/// (each is there with its ancestors), the directories in `dirs` can have lost names.
#[derive(Clone, Debug, Default)]
pub struct Visit {
    pub paths: BTreeSet<PathBuf>,
    pub dirs: BTreeSet<PathBuf>,
}

impl Visit {
    /// The root, its listing compared.
    pub fn root() -> Visit {
        Visit { paths: BTreeSet::from([PathBuf::new()]), dirs: BTreeSet::from([PathBuf::new()]) }
    }

    /// `p` and its ancestors.
    pub fn path(&mut self, p: &Path) {
        let mut a = p;
        if !self.paths.insert(a.to_path_buf()) {
            return;
        }
        while let Some(up) = a.parent() {
            if !self.paths.insert(up.to_path_buf()) {
                break;
            }
            a = up;
        }
    }

    /// Every name below the directory `dir` (at `rel`), the directories' listings
    /// compared too: a tree all of whose paths changed (renamed, say).
    pub fn tree(&mut self, dir: BorrowedFd<'_>, rel: &Path) -> io::Result<()> {
        walk_tree(dir, rel, &mut |child, st| {
            self.paths.insert(child.to_path_buf());
            if sys::is_dir(st) {
                self.dirs.insert(child.to_path_buf());
            }
            Ok(())
        })
    }
}

/// Calls `each` with every node below the directory `dir` (at `rel`) and its lstat,
/// a directory before what it holds.
pub fn walk_tree(
    dir: BorrowedFd<'_>,
    rel: &Path,
    each: &mut dyn FnMut(&Path, &FileStat) -> io::Result<()>,
) -> io::Result<()> {
    for name in sys::read_dir_names(dir)? {
        let child = rel.join(&name);
        let Some(st) = sys::lstat_at(dir, &name)? else { continue };
        each(&child, &st)?;
        if sys::is_dir(&st) {
            let sub = sys::open_at(dir, &name, OFlag::O_DIRECTORY | OFlag::O_RDONLY, 0)?;
            walk_tree(sub.as_fd(), &child, each)?;
        }
    }
    Ok(())
}

/// The naive diff: walks `layer` and `parent` (None = empty) side by side.
pub fn naive_diff(layer_id: &str, layer: &Path, parent: Option<&Path>, reserved: &ReservedXattrs) -> Result<NaiveDiff> {
    walk_diff(layer_id, layer, parent, &LayerKind::Full, reserved)
}

/// Finds the entries and changes of `layer` against the full view `parent`; with
/// [`LayerKind::Upper`], `layer` is the layer's own directory and the parent
/// is only looked at where the layer changed something. A changed node with an xattr
/// in a `reserved` namespace (not the whiteout format's own) is refused.
pub fn walk_diff(
    layer_id: &str,
    layer: &Path,
    parent: Option<&Path>,
    kind: &LayerKind,
    reserved: &ReservedXattrs,
) -> Result<NaiveDiff> {
    let mut walk = Walk {
        layer_root: layer.to_path_buf(),
        parent_root: parent.map(Path::to_path_buf),
        out: NaiveDiff { reserved: reserved.clone(), ..NaiveDiff::default() },
        inodes: BTreeMap::new(),
        kind: kind.clone(),
        linked: Vec::new(),
    };
    let lfd = sys::open_dir(layer).map_err(|e| Error::at(layer_id, layer, e))?;
    let pfd = match parent {
        Some(p) => Some(sys::open_dir(p).map_err(|e| Error::at(layer_id, p, e))?),
        None => None,
    };
    walk.dir(Path::new(""), lfd.as_fd(), pfd.as_ref().map(|f| f.as_fd()), false).map_err(|e| e.in_layer(layer_id))?;
    walk.link_groups(lfd.as_fd(), pfd.as_ref().map(|f| f.as_fd())).map_err(|e| e.in_layer(layer_id))?;
    walk.add_hardlink_siblings().map_err(|e| e.in_layer(layer_id))?;
    let mut out = walk.out;
    out.changes.sort();
    Ok(out)
}

struct Walk {
    layer_root: PathBuf,
    parent_root: Option<PathBuf>,
    out: NaiveDiff,
    /// (dev, ino) → (paths, emitted?) for non-directories with several names.
    inodes: BTreeMap<(u64, u64), (Vec<PathBuf>, bool)>,
    kind: LayerKind,
    /// Non-directories in both layer and parent where either side has several names.
    linked: Vec<Linked>,
}

/// Which inode a name has in the layer's view: one of the layer's own, or (on an
/// layer that holds only its changes, for a name it did not touch) the parent's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Ident {
    Layer(u64, u64),
    Parent(u64, u64),
}

/// A name present in both trees, with its inode on each side.
#[derive(Clone, Debug)]
struct Linked {
    path: PathBuf,
    layer: Ident,
    layer_nlink: u64,
    parent: (u64, u64),
    parent_nlink: u64,
}

/// Whether an xattr is the whiteout format's own bookkeeping on an upper, not content.
fn is_internal_xattr(kind: &LayerKind, name: &str) -> bool {
    match kind {
        LayerKind::Upper(format) => format.is_own_xattr(name),
        _ => false,
    }
}

/// The name a user gave an xattr that the upper's filesystem stored escaped.
fn user_xattr_name(kind: &LayerKind, name: &str) -> String {
    match kind {
        LayerKind::Upper(format) => format.user_xattr_name(name),
        _ => name.to_string(),
    }
}

fn refused(msg: impl Into<String>) -> Error {
    Error::new(Cause::Refused(msg.into()))
}

/// Whether `st` is a 0/0 character device: what the kernel's union mount reads as a
/// whiteout, so no layer may carry one as a file.
fn is_null_device(st: &nix::sys::stat::FileStat) -> bool {
    sys::file_type(st) == nix::sys::stat::SFlag::S_IFCHR && st.st_rdev == 0
}

fn stat_at(dir: BorrowedFd<'_>, name: &OsStr) -> Result<nix::sys::stat::FileStat> {
    sys::lstat_at(dir, name)?.ok_or_else(|| Error::new(io::Error::from_raw_os_error(libc::ENOENT)))
}

impl Walk {
    fn node(&mut self, rel: &Path, kind: ChangeKind) -> Result<()> {
        let source = self.layer_root.join(rel);
        self.node_from(rel, source, kind)
    }

    fn node_from(&mut self, rel: &Path, source: PathBuf, kind: ChangeKind) -> Result<()> {
        if rel.file_name().is_some_and(|n| n.as_bytes().starts_with(WHITEOUT_PREFIX.as_bytes())) {
            return Err(refused(
                "the name begins with .wh., which an OCI layer reads as a whiteout (applied, it would delete \
                 data); rename it",
            )
            .with_path(rel));
        }
        self.out.entries.push(DiffEntry::Node { path: rel.to_path_buf(), source, data: None });
        self.out.changes.push(Change { path: rel.to_path_buf(), kind });
        Ok(())
    }

    /// Refuses what a layer tar cannot carry: an xattr in a namespace a driver reserves
    /// (apply refuses them; that driver would read them as its own) and a 0/0 character
    /// device (the union mount's whiteout; where whiteouts are recorded so, those are
    /// deletions, not entries).
    fn check_carriable(&self, dir: BorrowedFd<'_>, name: &OsStr, st: &nix::sys::stat::FileStat) -> Result<()> {
        if is_null_device(st) {
            return Err(refused(
                "a 0/0 character device is a union-mount whiteout, which an OCI layer cannot carry as a file",
            ));
        }
        for x in sys::list_xattrs(XattrTarget::NoFollow(&sys::proc_path(dir, name)))? {
            if let Some(ns) = self.out.reserved.matching(&x).filter(|_| !is_internal_xattr(&self.kind, &x)) {
                return Err(refused(format!(
                    "the xattr {} is in {ns}*, a storage driver's reserved namespace, which an OCI layer cannot carry",
                    user_xattr_name(&self.kind, &x)
                )));
            }
        }
        Ok(())
    }

    fn note_inode(&mut self, rel: &Path, st: &nix::sys::stat::FileStat, emitted: bool) {
        if st.st_nlink > 1 && !sys::is_dir(st) {
            let e = self.inodes.entry((st.st_dev, st.st_ino)).or_default();
            e.0.push(rel.to_path_buf());
            e.1 |= emitted;
        }
    }

    fn emitted(&self) -> BTreeSet<PathBuf> {
        self.out
            .entries
            .iter()
            .filter_map(|e| match e {
                DiffEntry::Node { path, .. } => Some(path.clone()),
                _ => None,
            })
            .collect()
    }

    /// Link structure is content: a hardlinked pair split by deleting one name and
    /// making it again (same content, same mtime), or two files joined by a link, is a
    /// change even when every name's own metadata is equal. A parent inode whose
    /// surviving names no longer share one inode, and a layer inode whose names were
    /// different inodes in the parent, have all those names written. On an upper
    /// ([`LayerKind::Upper`]) or a filtered walk the parent's other names of an inode are found by one
    /// walk of the parent, made only when a visited name's parent inode has several.
    fn link_groups(&mut self, lfd: BorrowedFd<'_>, pfd: Option<BorrowedFd<'_>>) -> Result<()> {
        let mut by_parent: BTreeMap<(u64, u64), BTreeMap<PathBuf, Ident>> = BTreeMap::new();
        for l in self.linked.iter().filter(|l| l.parent_nlink > 1) {
            by_parent.entry(l.parent).or_default().insert(l.path.clone(), l.layer);
        }
        let names_known = matches!(self.kind, LayerKind::Full | LayerKind::Filtered { all_links: true, .. });
        if let (Some(pfd), false) = (pfd, names_known || by_parent.is_empty()) {
            let want: BTreeSet<(u64, u64)> = by_parent.keys().copied().collect();
            let mut found = BTreeMap::new();
            scan_inodes(pfd, Path::new(""), &want, &mut found)?;
            for (key, paths) in found {
                for p in paths {
                    if by_parent.get(&key).is_some_and(|m| m.contains_key(&p)) {
                        continue;
                    }
                    if let Some(ident) = self.unvisited_ident(lfd, &p, key)? {
                        by_parent.entry(key).or_default().insert(p, ident);
                    }
                }
            }
        }
        let mut split: Vec<(PathBuf, Ident)> = Vec::new();
        for names in by_parent.values() {
            let first = names.values().next().copied();
            if names.values().any(|i| Some(*i) != first) {
                split.extend(names.iter().map(|(p, i)| (p.clone(), *i)));
            }
        }
        let mut by_layer: BTreeMap<Ident, BTreeSet<(u64, u64)>> = BTreeMap::new();
        for l in self.linked.iter().filter(|l| l.layer_nlink > 1) {
            by_layer.entry(l.layer).or_default().insert(l.parent);
        }
        for l in &self.linked {
            if by_layer.get(&l.layer).is_some_and(|ps| ps.len() > 1) {
                split.push((l.path.clone(), l.layer));
            }
        }
        let emitted = self.emitted();
        let mut done = BTreeSet::new();
        for (path, ident) in split {
            if emitted.contains(&path) || !done.insert(path.clone()) {
                continue;
            }
            match (ident, &self.parent_root) {
                // A name the upper layer did not touch shows the parent's inode.
                (Ident::Parent(..), Some(parent)) => {
                    let source = parent.join(&path);
                    self.node_from(&path, source, ChangeKind::Modified)?
                }
                _ => self.node(&path, ChangeKind::Modified)?,
            }
        }
        Ok(())
    }

    /// The inode that a parent name not visited by the walk has in the layer's view, or
    /// None if the layer deleted it or made it a directory: a directory is no name of a
    /// file's inode (the walk leaves directories out of link groups too), and it is in
    /// the diff anyway, as a type change.
    fn unvisited_ident(&self, lfd: BorrowedFd<'_>, rel: &Path, parent: (u64, u64)) -> Result<Option<Ident>> {
        let (dir, name) = (rel.parent().unwrap_or(Path::new("")), rel.file_name().unwrap_or_default());
        match &self.kind {
            LayerKind::Upper(format) => {
                let mut cur = sys::open_dir_in(lfd, Path::new("")).at_path(rel)?;
                let comps: Vec<&OsStr> = rel.iter().collect();
                for (i, c) in comps.iter().enumerate() {
                    if format.is_opaque(cur.as_fd()).at_path(rel)? {
                        return Ok(None);
                    }
                    match sys::lstat_at(cur.as_fd(), c).at_path(rel)? {
                        None => return Ok(Some(Ident::Parent(parent.0, parent.1))),
                        Some(st) if format.is_whiteout(&st) => return Ok(None),
                        Some(st) if sys::is_dir(&st) && i + 1 < comps.len() => {
                            cur = sys::open_at(cur.as_fd(), c, OFlag::O_DIRECTORY | OFlag::O_RDONLY, 0).at_path(rel)?;
                        }
                        // A file over a lower directory hides what was below it.
                        Some(_) if i + 1 < comps.len() => return Ok(None),
                        Some(st) if sys::is_dir(&st) => return Ok(None),
                        Some(st) => return Ok(Some(Ident::Layer(st.st_dev, st.st_ino))),
                    }
                }
                Ok(None)
            }
            _ => {
                let d = match sys::open_dir_in(lfd, dir) {
                    Ok(d) => d,
                    Err(_) => return Ok(None),
                };
                Ok(sys::lstat_at(d.as_fd(), name)
                    .at_path(rel)?
                    .filter(|st| !sys::is_dir(st))
                    .map(|st| Ident::Layer(st.st_dev, st.st_ino)))
            }
        }
    }

    /// Every name of an inode that is written goes in the tar, or the link would split.
    fn add_hardlink_siblings(&mut self) -> Result<()> {
        let emitted = self.emitted();
        let extra: Vec<PathBuf> = self
            .inodes
            .values()
            .filter(|(paths, any)| *any && paths.len() > 1)
            .flat_map(|(paths, _)| paths.iter().filter(|p| !emitted.contains(*p)).cloned())
            .collect();
        for p in extra {
            self.node(&p, ChangeKind::Modified)?;
        }
        Ok(())
    }

    /// Walks directory `rel`. `hidden`: an ancestor hides the parent's content (an
    /// upper's opaque directory hides everything below it, not just its own names: a
    /// directory made inside it has no lower either).
    fn dir(&mut self, rel: &Path, lfd: BorrowedFd<'_>, pfd: Option<BorrowedFd<'_>>, hidden: bool) -> Result<()> {
        let mut layer_names: BTreeSet<OsString> = sys::read_dir_names(lfd).at_path(rel)?.into_iter().collect();
        let parent_names = || -> Result<BTreeSet<OsString>> {
            match pfd {
                Some(p) => Ok(sys::read_dir_names(p).at_path(rel)?.into_iter().collect()),
                None => Ok(BTreeSet::new()),
            }
        };
        // Which names the layer's view of this directory holds, and which were in the
        // parent's: every name on a full tree; on an upper, only where the
        // layer deleted something (whiteouts, an opaque directory) is the parent read.
        let mut hides_lower = false;
        let (view_names, parent_list) = match &self.kind {
            LayerKind::Full => {
                let p = parent_names()?;
                (Some(layer_names.clone()), p)
            }
            LayerKind::Filtered { visit, .. } => {
                let lists =
                    if visit.dirs.contains(rel) { Some((Some(layer_names.clone()), parent_names()?)) } else { None };
                layer_names.retain(|n| visit.paths.contains(&rel.join(n)));
                lists.unwrap_or((None, BTreeSet::new()))
            }
            LayerKind::Upper(format) => {
                let mut whiteouts = BTreeSet::new();
                for n in &layer_names {
                    if sys::lstat_at(lfd, n).at_path(rel.join(n))?.is_some_and(|st| format.is_whiteout(&st)) {
                        whiteouts.insert(n.clone());
                    }
                }
                layer_names.retain(|n| !whiteouts.contains(n));
                let opaque = hidden || format.is_opaque(lfd).at_path(rel)?;
                hides_lower = opaque;
                if pfd.is_some() && (opaque || !whiteouts.is_empty()) {
                    let p = parent_names()?;
                    let view: BTreeSet<OsString> = if opaque {
                        layer_names.clone()
                    } else {
                        p.iter().filter(|n| !whiteouts.contains(*n)).chain(layer_names.iter()).cloned().collect()
                    };
                    (Some(view), p)
                } else {
                    (None, BTreeSet::new())
                }
            }
        };
        if let (Some(view), Some(_)) = (&view_names, pfd) {
            for d in deletions(rel, &parent_list, view) {
                match &d {
                    DiffEntry::Whiteout { path } => {
                        self.out.changes.push(Change { path: path.clone(), kind: ChangeKind::Deleted })
                    }
                    DiffEntry::Opaque { dir } => {
                        for n in &parent_list {
                            self.out.changes.push(Change { path: dir.join(n), kind: ChangeKind::Deleted });
                        }
                    }
                    DiffEntry::Node { .. } => {}
                }
                self.out.entries.push(d);
            }
        }
        for name in &layer_names {
            let child = rel.join(name);
            let lst = stat_at(lfd, name).at_path(&child)?;
            let pst = match pfd {
                Some(p) => sys::lstat_at(p, name).at_path(&child)?,
                None => None,
            };
            let ldir = sys::is_dir(&lst);
            let changed = match &pst {
                None => Some(ChangeKind::Added),
                Some(pst) => {
                    let p = pfd.expect("parent present");
                    if self.differs(lfd, p, name, &lst, pst).at_path(&child)? {
                        Some(ChangeKind::Modified)
                    } else {
                        None
                    }
                }
            };
            if let Some(kind) = changed {
                self.check_carriable(lfd, name, &lst).map_err(|e| e.with_path(&child))?;
                self.node(&child, kind)?;
            }
            self.note_inode(&child, &lst, changed.is_some());
            if let Some(pst) = &pst {
                if !ldir && !sys::is_dir(pst) && (lst.st_nlink > 1 || pst.st_nlink > 1) {
                    self.linked.push(Linked {
                        path: child.clone(),
                        layer: Ident::Layer(lst.st_dev, lst.st_ino),
                        layer_nlink: lst.st_nlink,
                        parent: (pst.st_dev, pst.st_ino),
                        parent_nlink: pst.st_nlink,
                    });
                }
            }
            if ldir {
                let sub = sys::open_at(lfd, name, OFlag::O_DIRECTORY | OFlag::O_RDONLY, 0).at_path(&child)?;
                let psub: Option<OwnedFd> = match (&pst, pfd) {
                    (Some(pst), Some(p)) if sys::is_dir(pst) => {
                        Some(sys::open_at(p, name, OFlag::O_DIRECTORY | OFlag::O_RDONLY, 0).at_path(&child)?)
                    }
                    _ => None,
                };
                self.dir(&child, sub.as_fd(), psub.as_ref().map(|f| f.as_fd()), hides_lower)?;
            }
        }
        Ok(())
    }

    fn differs(
        &self,
        lfd: BorrowedFd<'_>,
        pfd: BorrowedFd<'_>,
        name: &OsStr,
        l: &nix::sys::stat::FileStat,
        p: &nix::sys::stat::FileStat,
    ) -> io::Result<bool> {
        if sys::file_type(l) != sys::file_type(p)
            || l.st_mode != p.st_mode
            || l.st_uid != p.st_uid
            || l.st_gid != p.st_gid
            || l.st_mtime != p.st_mtime
            || l.st_mtime_nsec != p.st_mtime_nsec
        {
            return Ok(true);
        }
        let kind = sys::file_type(l);
        if kind != nix::sys::stat::SFlag::S_IFDIR && l.st_size != p.st_size {
            return Ok(true);
        }
        if matches!(kind, nix::sys::stat::SFlag::S_IFCHR | nix::sys::stat::SFlag::S_IFBLK) && l.st_rdev != p.st_rdev {
            return Ok(true);
        }
        let lx = sys::read_xattrs(XattrTarget::NoFollow(&sys::proc_path(lfd, name)))?;
        let px = sys::read_xattrs(XattrTarget::NoFollow(&sys::proc_path(pfd, name)))?;
        // Only the whiteout format's own bookkeeping is left out: a reserved xattr a
        // user set is a change (which the diff then refuses).
        let strip = |v: Vec<(String, Vec<u8>)>| {
            v.into_iter().filter(|(n, _)| !is_internal_xattr(&self.kind, n)).collect::<Vec<_>>()
        };
        if strip(lx) != strip(px) {
            return Ok(true);
        }
        // Same inode (a snapshot's files share them, a hardlinked copy's too): unchanged.
        if l.st_dev == p.st_dev && l.st_ino == p.st_ino {
            return Ok(false);
        }
        match kind {
            nix::sys::stat::SFlag::S_IFLNK => {
                let lt = nix::fcntl::readlinkat(Some(lfd.as_raw_fd()), name).map_err(sys::errno)?;
                let pt = nix::fcntl::readlinkat(Some(pfd.as_raw_fd()), name).map_err(sys::errno)?;
                Ok(lt != pt)
            }
            nix::sys::stat::SFlag::S_IFREG if l.st_mtime_nsec == 0 && p.st_mtime_nsec == 0 => {
                contents_differ(lfd, pfd, name)
            }
            _ => Ok(false),
        }
    }
}

/// Paths (relative to `dir`, which is `rel`) of the non-directories whose inode is in
/// `want`, by inode.
fn scan_inodes(
    dir: BorrowedFd<'_>,
    rel: &Path,
    want: &BTreeSet<(u64, u64)>,
    out: &mut BTreeMap<(u64, u64), Vec<PathBuf>>,
) -> Result<()> {
    for name in sys::read_dir_names(dir).at_path(rel)? {
        let child = rel.join(&name);
        let Some(st) = sys::lstat_at(dir, &name).at_path(&child)? else { continue };
        if sys::is_dir(&st) {
            let sub = sys::open_at(dir, &name, OFlag::O_DIRECTORY | OFlag::O_RDONLY, 0).at_path(&child)?;
            scan_inodes(sub.as_fd(), &child, want, out)?;
        } else if st.st_nlink > 1 && want.contains(&(st.st_dev, st.st_ino)) {
            out.entry((st.st_dev, st.st_ino)).or_default().push(child);
        }
    }
    Ok(())
}

fn contents_differ(lfd: BorrowedFd<'_>, pfd: BorrowedFd<'_>, name: &OsStr) -> io::Result<bool> {
    let mut a = File::from(sys::open_at(lfd, name, OFlag::O_RDONLY, 0)?);
    let mut b = File::from(sys::open_at(pfd, name, OFlag::O_RDONLY, 0)?);
    let mut ba = vec![0u8; 256 * 1024];
    let mut bb = vec![0u8; 256 * 1024];
    loop {
        let n = read_full(&mut a, &mut ba)?;
        let m = read_full(&mut b, &mut bb)?;
        if n != m || ba[..n] != bb[..m] {
            return Ok(true);
        }
        if n == 0 {
            return Ok(false);
        }
    }
}

/// For errors that have no better cause.
pub fn other(msg: impl Into<String>) -> Error {
    Error::new(Cause::Other(msg.into()))
}
