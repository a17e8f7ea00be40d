//! The diff walk: a layer's tree and its parent's side by side (the whole view, an
//! upper directory with its whiteouts, or only the paths a driver says changed),
//! giving the entries and changes of [`crate::diff::NaiveDiff`].

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;

use super::{deletions, DiffEntry, LayerKind, NaiveDiff};
use crate::reading::read_full;
use crate::whiteout::WHITEOUT_PREFIX;
use driver_core::driver::{Change, ChangeKind};
use driver_core::error::{Cause, Context, Error, Result};
use driver_core::sys::{self, XattrTarget};

pub(super) struct Walk {
    pub(super) layer_root: PathBuf,
    pub(super) parent_root: Option<PathBuf>,
    pub(super) out: NaiveDiff,
    /// (dev, ino) → (paths, emitted?) for non-directories with several names.
    pub(super) inodes: BTreeMap<(u64, u64), (Vec<PathBuf>, bool)>,
    pub(super) kind: LayerKind,
    /// Non-directories in both layer and parent where either side has several names.
    pub(super) linked: Vec<Linked>,
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
pub(super) struct Linked {
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
    pub(super) fn link_groups(&mut self, lfd: BorrowedFd<'_>, pfd: Option<BorrowedFd<'_>>) -> Result<()> {
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
    pub(super) fn add_hardlink_siblings(&mut self) -> Result<()> {
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
    pub(super) fn dir(
        &mut self,
        rel: &Path,
        lfd: BorrowedFd<'_>,
        pfd: Option<BorrowedFd<'_>>,
        hidden: bool,
    ) -> Result<()> {
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
