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

mod walk;
mod writer;

pub use writer::{write_tar, xattrs_of};

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::fcntl::OFlag;
use nix::sys::stat::FileStat;

use crate::whiteout::{WhiteoutFormat, OPAQUE_MARKER, WHITEOUT_PREFIX};
use driver_core::driver::Change;
use driver_core::error::{Error, Result};
use driver_core::sys;
use driver_core::ReservedXattrs;
use walk::Walk;

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
