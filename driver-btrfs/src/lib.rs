//! The `btrfs` driver: every layer is a btrfs subvolume, and a layer over a parent is a
//! snapshot of it, so layers share data at the extent level: a container is a
//! snapshot, and its first write to a big file copies blocks, not the file.
//!
//! * The driver folder is itself a subvolume (made when the folder is first created):
//!   host snapshot tools such as snapper then do not capture every layer, which filled
//!   disks for moby users (moby#27653, #29601).
//! * A committed layer is a read-only subvolume; its children are writable snapshots.
//! * `remove` deletes subvolumes a container made inside its layer first, deepest
//!   first, so none leaks (moby#33226, #17839); a test removes every layer and checks
//!   that no subvolume of the driver remains.
//! * `diff` follows the changes: btrfs stamps every tree block with the transaction
//!   that wrote it, so the inodes changed since the snapshot are found by a tree
//!   search from the snapshot's creation transaction (as `btrfs subvolume find-new`
//!   does), and only those paths, and the directories whose entries changed, are
//!   compared with the parent. Dirty data is written back and the transaction
//!   committed first (`syncfs`: recent inode changes are not in the trees before); a directory that moved is compared
//!   whole (its children's items did not change, their paths did), and so are
//!   subvolumes made inside the layer (their own trees). Paths are built from the
//!   inodes' names one directory at a time, without a length limit. The naive diff
//!   stays as the reference.
//! * `usage` counts a layer's exclusive data: file extents that FIEMAP does not report
//!   as shared (with the parent or anyone). A snapshot that changed nothing holds
//!   almost nothing. Tree blocks (metadata) are not attributed per layer; the bench's
//!   statfs figures include them.
//!
//! All through ioctls ([`ioctl`]); nothing here runs the `btrfs` command.

pub mod ioctl;

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::fcntl::OFlag;
use nix::unistd::UnlinkatFlags;

use driver_core::error::{Cause, Error, Result};
use driver_core::lifecycle::{Applied, LayerDiff, LayerFs, LayerInput, Layered, Making};
use driver_core::store::{LayerMeta, Staging, Store};
use driver_core::sys;
use driver_core::{ReservedXattrs, Usage};
use strata_archive::apply::apply_in_place;
use strata_archive::diff::{naive_diff, walk_diff, walk_tree, LayerKind, NaiveDiff, Visit};

/// The btrfs driver.
pub type BtrfsDriver = Layered<Btrfs>;

/// What btrfs does its own way: subvolumes, snapshots, and its record of changes.
pub struct Btrfs {
    store: Arc<Store>,
}

fn io_at(id: &str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let (id, path) = (id.to_string(), path.to_path_buf());
    move |e| Error::at(&id, &path, e)
}

/// Opens a directory for the ioctls.
fn open_dir(path: &Path) -> std::io::Result<std::os::fd::OwnedFd> {
    sys::open_dir(path)
}

/// Whether `path` is the root of a subvolume.
pub fn is_subvolume(path: &Path) -> bool {
    fs::symlink_metadata(path).map(|m| m.is_dir() && m.ino() == ioctl::SUBVOL_ROOT_INO).unwrap_or(false)
}

/// Deletes the subvolume (or plain tree) at `path`, with every subvolume inside it.
pub fn destroy_tree(path: &Path) -> std::io::Result<()> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    };
    let dir = match open_dir(parent) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        other => other?,
    };
    destroy_at(dir.as_fd(), name)
}

/// Deletes `name` in directory `dir`, whatever it is. Everything goes by file
/// descriptor, one directory at a time, so no path length limit applies (a layer
/// holding a 4,000-byte path could not be removed by path, and its leftover made every
/// later command fail). A subvolume is deleted whole (`BTRFS_IOC_SNAP_DESTROY`), after
/// the subvolumes inside it, which it refuses to take along; those are found in the
/// root tree (ROOT_REF items), not by walking the tree.
fn destroy_at(dir: BorrowedFd<'_>, name: &OsStr) -> std::io::Result<()> {
    let Some(st) = sys::lstat_at(dir, name)? else { return Ok(()) };
    if !sys::is_dir(&st) {
        return match nix::unistd::unlinkat(Some(dir.as_raw_fd()), name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(nix::errno::Errno::ENOENT) => Ok(()),
            Err(e) => Err(sys::errno(e)),
        };
    }
    let fd = sys::open_at(dir, name, OFlag::O_DIRECTORY | OFlag::O_RDONLY, 0)?;
    if st.st_ino != ioctl::SUBVOL_ROOT_INO {
        // A plain directory (a staging dir never made into a subvolume) may still hold
        // subvolumes.
        for n in sys::read_dir_names(fd.as_fd())? {
            destroy_at(fd.as_fd(), &n)?;
        }
        drop(fd);
        return match nix::unistd::unlinkat(Some(dir.as_raw_fd()), name, UnlinkatFlags::RemoveDir) {
            Ok(()) | Err(nix::errno::Errno::ENOENT) => Ok(()),
            Err(e) => Err(sys::errno(e)),
        };
    }
    // A read-only subvolume cannot lose the entries of nested ones.
    if ioctl::is_readonly(fd.as_fd())? {
        ioctl::set_readonly(fd.as_fd(), false)?;
    }
    let tree = ioctl::subvolume_info(fd.as_fd())?.treeid;
    let mut names = DirPaths::new(fd.as_fd(), 0);
    for child in ioctl::child_subvolumes(fd.as_fd(), tree)? {
        let Some(at) = names.dir(child.dir)? else { continue };
        let holder = open_rel(fd.as_fd(), &at)?;
        destroy_at(holder.as_fd(), &child.name)?;
    }
    drop(fd);
    ioctl::destroy_subvolume(dir, name)
}

/// Opens the directory `rel` below `root` one component at a time, following no
/// symlink: `rel` may be longer than PATH_MAX.
fn open_rel(root: BorrowedFd<'_>, rel: &Path) -> std::io::Result<OwnedFd> {
    let mut fd = sys::open_at(root, OsStr::new("."), OFlag::O_DIRECTORY | OFlag::O_RDONLY, 0)?;
    for c in rel.components() {
        fd = sys::open_at(fd.as_fd(), c.as_os_str(), OFlag::O_DIRECTORY | OFlag::O_RDONLY, 0)?;
    }
    Ok(fd)
}

/// The paths (relative to the subvolume root) of directories of one subvolume, built
/// from each directory's one name and parent (its INODE_REF item) and remembered, so
/// a path costs one lookup per directory not seen before, and has no length limit.
struct DirPaths<'a> {
    fd: BorrowedFd<'a>,
    tree: u64,
    known: HashMap<u64, Option<PathBuf>>,
}

impl<'a> DirPaths<'a> {
    fn new(fd: BorrowedFd<'a>, tree: u64) -> Self {
        DirPaths { fd, tree, known: HashMap::new() }
    }

    /// The path of directory inode `ino`; `None` when it is not linked (deleted).
    fn dir(&mut self, ino: u64) -> std::io::Result<Option<PathBuf>> {
        let mut chain: Vec<(u64, OsString)> = Vec::new();
        let mut cur = ino;
        let mut path = loop {
            if cur == ioctl::SUBVOL_ROOT_INO {
                break Some(PathBuf::new());
            }
            if let Some(known) = self.known.get(&cur) {
                break known.clone();
            }
            match ioctl::inode(self.fd, self.tree, cur)? {
                Some(inode) if inode.is_dir() && !inode.names.is_empty() => {
                    let (parent, name) = inode.names.into_iter().next().expect("one name");
                    chain.push((cur, name));
                    if chain.len() > 1 << 20 {
                        return Err(std::io::Error::other(format!("directory {ino}: a loop in its parents")));
                    }
                    cur = parent;
                }
                _ => break None,
            }
        };
        for (dir, name) in chain.into_iter().rev() {
            path = path.map(|p| p.join(name));
            self.known.insert(dir, path.clone());
        }
        Ok(path)
    }
}

/// Every name of inode `ino` of the tree `names` resolves in (link structure is
/// content: when one name of an inode is compared, all are).
fn names_of(visit: &mut Visit, names: &mut DirPaths<'_>, ino: u64) -> std::io::Result<()> {
    if let Some(inode) = ioctl::inode(names.fd, names.tree, ino)? {
        for (dir, name) in &inode.names {
            if let Some(at) = names.dir(*dir)? {
                visit.path(&at.join(name));
            }
        }
    }
    Ok(())
}

/// Everything below `rel` in the layer (and the listings of its directories), and
/// every other name of the linked files in it, in the layer and in the parent: for
/// a tree whose items the search does not return although its paths changed.
fn subtree(visit: &mut Visit, layer: &mut Side<'_>, parent: &mut Side<'_>, rel: &Path) -> std::io::Result<()> {
    visit.path(rel);
    visit.dirs.insert(rel.to_path_buf());
    side_tree(visit, layer, rel, true)?;
    side_tree(visit, parent, rel, false)
}

fn side_tree(visit: &mut Visit, side: &mut Side<'_>, rel: &Path, listed: bool) -> std::io::Result<()> {
    match open_rel(side.names.fd, rel) {
        Ok(fd) => below(visit, side, fd.as_fd(), rel, listed),
        // Not a directory there (any more): the path alone is compared.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Walks `dir` (at `rel`) on one side: `listed`, its paths are compared; either
/// way, the names of its linked files are.
fn below(visit: &mut Visit, side: &mut Side<'_>, dir: BorrowedFd<'_>, rel: &Path, listed: bool) -> std::io::Result<()> {
    walk_tree(dir, rel, &mut |child, st| {
        if listed {
            visit.paths.insert(child.to_path_buf());
            if sys::is_dir(st) {
                visit.dirs.insert(child.to_path_buf());
            }
        }
        // Inside a nested subvolume (another st_dev) every name is in the walk.
        if !sys::is_dir(st) && st.st_nlink > 1 && st.st_dev == side.dev {
            names_of(visit, &mut side.names, st.st_ino)?;
        }
        Ok(())
    })
}

/// One tree of a diff (the layer or its parent): its device number and its paths.
struct Side<'a> {
    dev: u64,
    names: DirPaths<'a>,
}

impl Btrfs {
    /// Opens (creating, as a subvolume) the driver folder `root`, which must be on btrfs.
    fn open_dir(root: &Path) -> Result<Btrfs> {
        if !root.exists() {
            let parent = root.parent().unwrap_or(Path::new("/"));
            fs::create_dir_all(parent).map_err(|e| Error::new(e).with_path(parent))?;
            check_btrfs(parent)?;
            let pfd = open_dir(parent).map_err(|e| Error::new(e).with_path(parent))?;
            // Another process may make it at the same moment: that is as good.
            match ioctl::create_subvolume(pfd.as_fd(), root.file_name().unwrap_or_default()) {
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                r => r.map_err(|e| Error::new(e).with_path(root))?,
            }
        }
        check_btrfs(root)?;
        let store = Arc::new(Store::open(root, Arc::new(destroy_tree))?);
        let driver = Btrfs { store };
        // A process killed between a commit and making the layer read-only left it
        // writable: finish the job.
        // A record that does not read is `strata check`'s to name, not a reason to
        // refuse opening the store (check could not run).
        // Under the store lock: a removal makes its layer writable (before_remove) and
        // then moves it aside, both under the lock; a seal between the two made the move
        // fail with EROFS (concurrency removal_and_cleanup_race_unpacks on btrfs, a
        // killed unpack's cleanup racing `layer ls`, Linux 6.18), and a layer removed
        // after the listing failed the seal with ENOENT.
        let _lock = driver.store.lock()?;
        for (_, meta) in driver.store.list_raw()? {
            let Ok(meta) = meta else { continue };
            if !meta.writable {
                driver.seal(&meta.id)?;
            }
        }
        Ok(driver)
    }

    /// Makes a committed layer read-only.
    fn seal(&self, id: &str) -> Result<()> {
        let path = self.layer(id);
        let fd = open_dir(&path).map_err(io_at(id, &path))?;
        if !ioctl::is_readonly(fd.as_fd()).map_err(io_at(id, &path))? {
            ioctl::set_readonly(fd.as_fd(), true).map_err(io_at(id, &path))?;
        }
        Ok(())
    }

    fn layer(&self, id: &str) -> PathBuf {
        self.store.layer_dir(id)
    }

    /// The staged subvolume: a writable snapshot of the parent, or a new subvolume.
    /// It becomes read-only only after the commit has renamed it into `layers/`:
    /// btrfs refuses to move a read-only subvolume (its `..` would change).
    fn stage(&self, staging: &Staging) -> Result<()> {
        let id = &staging.id;
        let dest = staging.path.parent().expect("staging dir");
        let dfd = open_dir(dest).map_err(io_at(id, dest))?;
        let name = staging.path.file_name().expect("name");
        match &staging.parent {
            Some(p) => {
                let src = open_dir(&self.layer(p)).map_err(io_at(id, &self.layer(p)))?;
                ioctl::snapshot(src.as_fd(), dfd.as_fd(), name, false).map_err(io_at(id, &staging.path))?;
            }
            None => {
                ioctl::create_subvolume(dfd.as_fd(), name).map_err(io_at(id, &staging.path))?;
                use std::os::unix::fs::PermissionsExt;
                fs::set_permissions(&staging.path, fs::Permissions::from_mode(0o755))
                    .map_err(io_at(id, &staging.path))?;
            }
        }
        Ok(())
    }

    /// The naive diff, walking both trees whole: the reference the follow-the-changes
    /// diff is checked against.
    pub fn naive(&self, id: &str, reserved: &ReservedXattrs) -> Result<NaiveDiff> {
        let meta = self.store.get(id)?;
        let parent = meta.parent.as_deref().map(|p| self.layer(p));
        naive_diff(id, &self.layer(id), parent.as_deref(), reserved)
    }

    /// The diff from btrfs's own record of what changed since the snapshot.
    pub fn follow(&self, id: &str, reserved: &ReservedXattrs) -> Result<NaiveDiff> {
        self.follow_meta(&self.store.get(id)?, reserved)
    }

    fn follow_meta(&self, meta: &LayerMeta, reserved: &ReservedXattrs) -> Result<NaiveDiff> {
        let id = meta.id.as_str();
        let Some(parent) = meta.parent.as_deref() else {
            return naive_diff(id, &self.layer(id), None, reserved);
        };
        let layer = self.layer(id);
        let parent_dir = self.layer(parent);
        let visit = self.changed(&layer, &parent_dir, self.store.get(parent)?.writable).map_err(io_at(id, &layer))?;
        let Some(visit) = visit else {
            return naive_diff(id, &layer, Some(&parent_dir), reserved);
        };
        // Every name of a linked file the walk compares is in `visit.paths`, on both sides.
        walk_diff(id, &layer, Some(&parent_dir), &LayerKind::Filtered { visit, all_links: true }, reserved)
    }

    /// What can differ between a layer and the parent it is a snapshot of; `None` when
    /// the parent itself changed after the snapshot (a container used as a parent), so
    /// that only the naive walk can tell.
    fn changed(&self, layer: &Path, parent: &Path, parent_writable: bool) -> std::io::Result<Option<Visit>> {
        let fd = open_dir(layer)?;
        let pfd = open_dir(parent)?;
        // What the view shows must be in the trees before they are searched. On Linux
        // 6.18 a buffered write (in place or appending) sets the mtime in memory only
        // (btrfs_write_check) and the inode item is updated when the written range is
        // written back; chmod, chown, utime and mmap writes wait as delayed inode items
        // for the transaction commit (30 s by default). Until then the search by
        // generation does not see them and the diff silently lacked them. `syncfs`
        // writes back dirty data, waits for it, and commits (BTRFS_IOC_START_SYNC and
        // WAIT_SYNC only commit, which missed in-place writes).
        driver_core::sys::syncfs_fd(fd.as_fd())?;
        let info = ioctl::subvolume_info(fd.as_fd())?;
        if parent_writable && !ioctl::changed_inodes(pfd.as_fd(), info.otransid + 1)?.is_empty() {
            return Ok(None);
        }
        // The root directory's items are keyed 256, which the search skips; its
        // entries are always compared (one listing).
        let mut visit = Visit::root();
        let side =
            |fd| -> std::io::Result<Side<'_>> { Ok(Side { dev: sys::fstat(fd)?.st_dev, names: DirPaths::new(fd, 0) }) };
        let (mut here, mut there) = (side(fd.as_fd())?, side(pfd.as_fd())?);
        // Trees whose paths changed although their items did not.
        let mut subtrees: Vec<PathBuf> = Vec::new();
        for ino in ioctl::changed_inodes(fd.as_fd(), info.otransid)? {
            let Some(inode) = ioctl::inode(fd.as_fd(), 0, ino)? else { continue };
            let before = ioctl::inode(pfd.as_fd(), 0, ino)?;
            // A directory not where the parent had it (renamed, moved, new): its
            // children keep their inode numbers and items, so the search does not
            // return them, yet each of their paths changed.
            let moved = inode.is_dir() && before.as_ref().is_none_or(|p| !p.is_dir() || p.names != inode.names);
            for (dir, name) in &inode.names {
                let Some(at) = here.names.dir(*dir)? else { continue };
                let path = at.join(name);
                if moved {
                    subtrees.push(path);
                } else {
                    if inode.is_dir() {
                        visit.dirs.insert(path.clone());
                    }
                    visit.path(&path);
                }
            }
            // The parent's other names of a linked file (a split pair) are compared too.
            if before.is_some_and(|p| !p.is_dir() && p.names.len() > 1) {
                names_of(&mut visit, &mut there.names, ino)?;
            }
        }
        // Subvolumes made inside the layer (and snapshots made into it) have their own
        // trees, which the search of the layer's does not see: all of their content is
        // compared. So is whatever the layer holds where the parent has a subvolume (a
        // snapshot shows an empty directory there).
        for child in ioctl::child_subvolumes(fd.as_fd(), info.treeid)? {
            if let Some(at) = here.names.dir(child.dir)? {
                subtrees.push(at.join(&child.name));
            }
        }
        let ptree = ioctl::subvolume_info(pfd.as_fd())?.treeid;
        for child in ioctl::child_subvolumes(pfd.as_fd(), ptree)? {
            if let Some(at) = there.names.dir(child.dir)? {
                subtrees.push(at.join(&child.name));
            }
        }
        for p in subtrees {
            subtree(&mut visit, &mut here, &mut there, &p)?;
        }
        Ok(Some(visit))
    }
}

fn check_btrfs(path: &Path) -> Result<()> {
    let fs_type = sys::fs_type(path).map_err(|e| Error::new(e).with_path(path))?;
    if fs_type != "btrfs" {
        return Err(Error::new(Cause::Unsupported(format!(
            "the btrfs driver needs its folder on btrfs, and {} is on {fs_type}",
            path.display()
        ))));
    }
    Ok(())
}

/// Bytes of data extents of the files under `root` that no one else shares.
fn exclusive_bytes(root: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let md = fs::symlink_metadata(&p)?;
        if md.is_dir() {
            for e in fs::read_dir(&p)? {
                stack.push(e?.path());
            }
            continue;
        }
        if !md.is_file() || md.len() == 0 {
            continue;
        }
        let e = sys::extent_bytes(fs::File::open(&p)?.as_fd())?;
        total += e.total - e.shared;
    }
    Ok(total)
}

impl LayerFs for Btrfs {
    fn name(&self) -> &'static str {
        "btrfs"
    }

    fn open(root: &Path) -> Result<(Arc<Store>, Btrfs)> {
        let fs = Btrfs::open_dir(root)?;
        Ok((fs.store.clone(), fs))
    }

    fn make(&self, staging: &Staging, _why: Making) -> Result<()> {
        self.stage(staging)
    }

    /// Under `--sync file`: a snapshot is durable once made (the snapshot ioctl commits
    /// a transaction: fs/btrfs/ioctl.c create_snapshot), so only a new empty subvolume's
    /// root is synced, not the whole tree again.
    fn sync_made(&self, staging: &Staging) -> Result<()> {
        if staging.parent.is_none() {
            staging.durability.sync_written_dir(&staging.path).map_err(|e| Error::at(&staging.id, &staging.path, e))?;
        }
        Ok(())
    }

    fn apply(&self, input: LayerInput<'_>) -> Result<Applied> {
        apply_in_place(input)
    }

    fn committed(&self, meta: &LayerMeta) -> Result<()> {
        if !meta.writable {
            self.seal(&meta.id)?;
        }
        Ok(())
    }

    /// A subvolume is its own view: nothing to mount, only users to count.
    fn mount(&self, meta: &mut LayerMeta, _first: bool) -> Result<PathBuf> {
        Ok(self.layer(&meta.id))
    }

    fn unmount(&self, _id: &str) -> Result<()> {
        Ok(())
    }

    fn diff(&self, meta: &LayerMeta, reserved: &ReservedXattrs) -> Result<Box<dyn LayerDiff + '_>> {
        Ok(Box::new(self.follow_meta(meta, reserved)?))
    }

    /// The store moves the layer aside before deleting it, and btrfs will not move a
    /// read-only subvolume: make it writable once the removal is allowed (a failure
    /// after this is sealed again at the next start).
    fn before_remove(&self, meta: &LayerMeta) -> Result<()> {
        let path = self.layer(&meta.id);
        let fd = open_dir(&path).map_err(io_at(&meta.id, &path))?;
        ioctl::set_readonly(fd.as_fd(), false).map_err(io_at(&meta.id, &path))
    }

    fn usage(&self, meta: &LayerMeta) -> Result<Usage> {
        let layer = self.layer(&meta.id);
        let bytes = exclusive_bytes(&layer).map_err(io_at(&meta.id, &layer))?;
        // Counting changes refuses none: a layer whose diff would be refused still has a size.
        let changed = self.follow_meta(meta, &ReservedXattrs::none())?.changes.len() as u64;
        Ok(Usage { bytes, inodes: changed })
    }

    fn layer_dir(&self, id: &str) -> Result<driver_core::LayerDir> {
        self.store.get(id)?;
        Ok(driver_core::LayerDir { path: self.layer(id), kind: driver_core::LayerDirKind::Snapshot })
    }

    fn features(&self) -> Vec<(String, String)> {
        vec![("snapshots".into(), "true".into()), ("diff".into(), "tree search by generation".into())]
    }
}
