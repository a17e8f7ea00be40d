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
//!   compared with the parent. The naive diff stays as the reference.
//! * `usage` counts a layer's exclusive data: file extents that FIEMAP does not report
//!   as shared (with the parent or anyone). A snapshot that changed nothing holds
//!   almost nothing. Tree blocks (metadata) are not attributed per layer; the bench's
//!   statfs figures include them.
//!
//! All through ioctls ([`ioctl`]); nothing here runs the `btrfs` command.

pub mod ioctl;

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use driver_core::apply::{apply_layer, ApplyOptions, WhiteoutMode};
use driver_core::diff::{naive_diff, walk_diff, write_tar, LayerKind, NaiveDiff};
use driver_core::error::{Cause, Error, Result};
use driver_core::store::{LayerMeta, Staging, Store};
use driver_core::sys;
use driver_core::{Change, Driver, LayerInfo, Status, Usage};

pub struct BtrfsDriver {
    store: Store,
    dir: PathBuf,
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
    if fs::symlink_metadata(path).is_err() {
        return Ok(());
    }
    if !is_subvolume(path) {
        // A plain directory (a staging dir never made into a subvolume) may still hold
        // subvolumes.
        for e in fs::read_dir(path)? {
            let p = e?.path();
            if is_subvolume(&p) {
                destroy_tree(&p)?;
            }
        }
        return match fs::remove_dir_all(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other,
        };
    }
    let fd = open_dir(path)?;
    // A read-only subvolume cannot lose the entries of nested ones.
    if ioctl::is_readonly(fd.as_fd())? {
        ioctl::set_readonly(fd.as_fd(), false)?;
    }
    for nested in nested_subvolumes(path)? {
        destroy_tree(&nested)?;
    }
    drop(fd);
    let parent = open_dir(path.parent().unwrap_or(Path::new("/")))?;
    ioctl::destroy_subvolume(parent.as_fd(), path.file_name().unwrap_or_default())
}

/// Subvolumes directly or deeply inside `root` (not crossing into them), by walking
/// for subvolume roots: a container may have made them anywhere.
fn nested_subvolumes(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    let dev = fs::symlink_metadata(root)?.dev();
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d)? {
            let e = e?;
            if !e.file_type()?.is_dir() {
                continue;
            }
            let p = e.path();
            let md = fs::symlink_metadata(&p)?;
            if md.ino() == ioctl::SUBVOL_ROOT_INO && md.dev() != dev {
                out.push(p);
            } else {
                stack.push(p);
            }
        }
    }
    Ok(out)
}

impl BtrfsDriver {
    /// Opens (creating, as a subvolume) the driver folder `root`, which must be on btrfs.
    pub fn new(root: &Path) -> Result<BtrfsDriver> {
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
        let store = Store::open(root, Arc::new(destroy_tree))?;
        let driver = BtrfsDriver { store, dir: root.to_path_buf() };
        // A process killed between a commit and making the layer read-only left it
        // writable: finish the job.
        for meta in driver.store.list()? {
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
    pub fn naive(&self, id: &str) -> Result<NaiveDiff> {
        let meta = self.store.get(id)?;
        let parent = meta.parent.as_deref().map(|p| self.layer(p));
        naive_diff(id, &self.layer(id), parent.as_deref())
    }

    /// The diff from btrfs's own record of what changed since the snapshot.
    pub fn follow(&self, id: &str) -> Result<NaiveDiff> {
        let meta = self.store.get(id)?;
        let Some(parent) = meta.parent.as_deref() else {
            return naive_diff(id, &self.layer(id), None);
        };
        let layer = self.layer(id);
        let fd = open_dir(&layer).map_err(io_at(id, &layer))?;
        let info = ioctl::subvolume_info(fd.as_fd()).map_err(io_at(id, &layer))?;
        let inodes = ioctl::changed_inodes(fd.as_fd(), info.otransid).map_err(io_at(id, &layer))?;
        let mut paths = BTreeSet::new();
        let mut dirs = BTreeSet::new();
        // The root directory's items are keyed 256, which the search skips; its
        // entries are always compared (one listing).
        dirs.insert(PathBuf::new());
        for ino in inodes {
            for p in ioctl::inode_paths(fd.as_fd(), ino).map_err(io_at(id, &layer))? {
                if fs::symlink_metadata(layer.join(&p)).map(|m| m.is_dir()).unwrap_or(false) {
                    dirs.insert(p.clone());
                }
                let mut a = p.as_path();
                paths.insert(a.to_path_buf());
                while let Some(up) = a.parent() {
                    if !paths.insert(up.to_path_buf()) {
                        break;
                    }
                    a = up;
                }
            }
        }
        walk_diff(id, &layer, Some(&self.layer(parent)), &LayerKind::Filtered { paths, dirs })
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
    #[repr(C)]
    struct Fiemap {
        start: u64,
        length: u64,
        flags: u32,
        mapped: u32,
        count: u32,
        reserved: u32,
        extents: [[u64; 7]; 64],
    }
    // FS_IOC_FIEMAP = _IOWR('f', 11, struct fiemap) with the 32-byte header.
    nix::ioctl_readwrite_bad!(fiemap, nix::request_code_readwrite!(b'f', 11, 32), Fiemap);
    const SHARED: u32 = 0x2000;
    const LAST: u32 = 0x1;
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
        let f = fs::File::open(&p)?;
        let mut start = 0u64;
        loop {
            // SAFETY: Fiemap is plain data; zero is a valid value.
            let mut m: Box<Fiemap> = Box::new(unsafe { std::mem::zeroed() });
            m.start = start;
            m.length = u64::MAX;
            m.count = 64;
            // SAFETY: a valid fd and a buffer for 64 extents.
            unsafe { fiemap(std::os::fd::AsRawFd::as_raw_fd(&f), &mut *m) }.map_err(std::io::Error::from)?;
            if m.mapped == 0 {
                break;
            }
            let mut last = false;
            for e in &m.extents[..m.mapped as usize] {
                // fiemap_extent: logical, physical, length, reserved[2], flags:u32 + reserved[3]:u32
                let (logical, length, flags) = (e[0], e[2], (e[5] & 0xffff_ffff) as u32);
                if flags & SHARED == 0 {
                    total += length;
                }
                start = logical + length;
                last |= flags & LAST != 0;
            }
            if last {
                break;
            }
        }
    }
    Ok(total)
}

impl Driver for BtrfsDriver {
    fn name(&self) -> &'static str {
        "btrfs"
    }

    fn create(&self, id: &str, parent: Option<&str>, writable: bool) -> Result<()> {
        let staging = self.store.begin(id, parent)?;
        self.stage(&staging)?;
        self.store.commit(staging, LayerMeta { writable, ..Default::default() })?;
        if !writable {
            self.seal(id)?;
        }
        Ok(())
    }

    fn apply_diff(&self, id: &str, parent: Option<&str>, tar: &mut dyn Read) -> Result<u64> {
        let staging = self.store.begin(id, parent)?;
        self.stage(&staging)?;
        let opts = ApplyOptions { layer: id.to_string(), whiteouts: WhiteoutMode::Delete };
        let report = apply_layer(&staging.path, tar, &opts)?;
        self.store
            .commit(staging, LayerMeta { diff_id: Some(report.diff_id), size: report.size, ..Default::default() })?;
        self.seal(id)?;
        Ok(report.size)
    }

    fn mount(&self, id: &str) -> Result<PathBuf> {
        // A subvolume is its own view: nothing to mount, only users to count.
        self.store.acquire_mount(id, |_, _| Ok(()))?;
        Ok(self.layer(id))
    }

    fn unmount(&self, id: &str) -> Result<()> {
        self.store.release_mount(id, || Ok(()))
    }

    fn diff(&self, id: &str, out: &mut dyn Write) -> Result<u64> {
        write_tar(id, self.follow(id)?.entries, out)
    }

    fn changes(&self, id: &str) -> Result<Vec<Change>> {
        Ok(self.follow(id)?.changes)
    }

    fn remove(&self, id: &str) -> Result<()> {
        // The store moves the layer aside before deleting it, and btrfs will not move
        // a read-only subvolume: make it writable once the removal is allowed (a
        // failure after this is sealed again at the next start).
        self.store
            .remove(id, |_| {
                let path = self.layer(id);
                let fd = open_dir(&path).map_err(io_at(id, &path))?;
                ioctl::set_readonly(fd.as_fd(), false).map_err(io_at(id, &path))
            })
            .map(|_| ())
    }

    fn usage(&self, id: &str) -> Result<Usage> {
        self.store.get(id)?;
        let layer = self.layer(id);
        let bytes = exclusive_bytes(&layer).map_err(io_at(id, &layer))?;
        let changed = self.changes(id)?.len() as u64;
        Ok(Usage { bytes, inodes: changed })
    }

    fn status(&self) -> Result<Status> {
        Ok(Status {
            driver: "btrfs".into(),
            backing_fs: sys::fs_type(&self.dir).unwrap_or_else(|_| "unknown".into()),
            features: vec![("snapshots".into(), "true".into()), ("diff".into(), "tree search by generation".into())],
            layers: self.store.list()?.len(),
        })
    }

    fn get(&self, id: &str) -> Result<LayerInfo> {
        Ok(self.store.get(id)?.info())
    }

    fn list(&self) -> Result<Vec<LayerInfo>> {
        Ok(self.store.list()?.iter().map(LayerMeta::info).collect())
    }
}
