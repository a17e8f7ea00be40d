//! The `vfs` driver: every layer is a full directory tree of its own.
//!
//! Making a layer copies its parent ([`copy::Copier`]: reflinks where the filesystem
//! shares extents, else a copy that keeps holes), then the tar engine applies the
//! layer with whiteouts as deletions. Nothing is mounted: the "mount" of a layer is its
//! directory, reference counted like the other drivers' mounts. The diff is the naive
//! diff. It works on any filesystem, needs no kernel feature, and pays for that in
//! time and disk for every layer and every container.

pub mod copy;

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use driver_core::error::{Cause, Error, Result};
use driver_core::store::{discard_tree, LayerMeta, Store};
use driver_core::sys;
use driver_core::{Change, Driver, LayerInfo, Status, Usage};
use strata_archive::apply::{apply_layer, ApplyOptions};
use strata_archive::diff::{naive_diff, write_tar};

pub struct VfsDriver {
    store: Store,
    copier: copy::Copier,
}

impl VfsDriver {
    /// Opens (creating) the driver folder `root`.
    pub fn new(root: &Path) -> Result<VfsDriver> {
        fs::create_dir_all(root).map_err(|e| Error::new(e).with_path(root))?;
        Ok(VfsDriver { store: Store::open(root, Arc::new(discard_tree))?, copier: copy::Copier::default() })
    }

    /// Makes the staged tree for `id`: a copy of the parent, or an empty directory.
    fn stage(&self, id: &str, parent: Option<&str>) -> Result<driver_core::store::Staging> {
        let staging = self.store.begin(id, parent)?;
        match parent {
            Some(p) => self
                .copier
                .copy_tree(&self.store.layer_dir(p), &staging.path)
                .map_err(|e| Error::at(id, &staging.path, e))?,
            None => {
                fs::create_dir(&staging.path).map_err(|e| Error::at(id, &staging.path, e))?;
                use std::os::unix::fs::PermissionsExt;
                fs::set_permissions(&staging.path, fs::Permissions::from_mode(0o755))
                    .map_err(|e| Error::at(id, &staging.path, e))?;
            }
        }
        Ok(staging)
    }
}

impl Driver for VfsDriver {
    fn name(&self) -> &'static str {
        "vfs"
    }

    fn create(&self, id: &str, parent: Option<&str>, writable: bool) -> Result<()> {
        let staging = self.stage(id, parent)?;
        self.store.commit(staging, LayerMeta { writable, ..Default::default() })
    }

    fn apply_diff(&self, id: &str, parent: Option<&str>, tar: &mut dyn Read) -> Result<u64> {
        let staging = self.stage(id, parent)?;
        let opts = ApplyOptions::new(id);
        let report = apply_layer(&staging.path, tar, &opts)?;
        self.store
            .commit(staging, LayerMeta { diff_id: Some(report.diff_id), size: report.size, ..Default::default() })?;
        Ok(report.size)
    }

    /// A container's view is its own directory. A committed layer's is a read-only
    /// bind mount of it (`<dir>/mnt/<id>`): handing out the directory itself would let
    /// any write change a verified image layer for good, where overlay and btrfs
    /// answer EROFS.
    fn mount(&self, id: &str) -> Result<PathBuf> {
        let target = self.view(id);
        let mut writable = true;
        self.store.acquire_mount(id, |m, _| {
            writable = m.writable;
            // A count left by a process killed mid-mount is no proof of a mount, and a
            // mount left by one killed before counting is reused, not stacked.
            if !m.writable && !sys::is_mount_point(&target) {
                fs::create_dir_all(&target).map_err(|e| Error::at(id, &target, e))?;
                sys::bind_readonly(&self.store.layer_dir(id), &target).map_err(|e| {
                    Error::at(id, &target, Cause::Other(format!("read-only bind mount of the committed layer: {e}")))
                })?;
            }
            Ok(())
        })?;
        Ok(if writable { self.store.layer_dir(id) } else { target })
    }

    fn unmount(&self, id: &str) -> Result<()> {
        let target = self.view(id);
        self.store.release_mount(id, || {
            if target.exists() {
                sys::unmount(&target).map_err(|e| Error::at(id, &target, e))?;
                let _ = fs::remove_dir(&target);
            }
            Ok(())
        })
    }

    fn diff(&self, id: &str, out: &mut dyn Write) -> Result<u64> {
        let d = self.naive(id)?;
        write_tar(id, d.entries, out)
    }

    fn changes(&self, id: &str) -> Result<Vec<Change>> {
        Ok(self.naive(id)?.changes)
    }

    fn remove(&self, id: &str) -> Result<()> {
        self.store.remove(id, |_| Ok(()))?;
        // A view left mounted by a process killed before it counted the mount.
        let target = self.view(id);
        if target.exists() {
            let _ = sys::unmount(&target);
            let _ = fs::remove_dir(&target);
        }
        Ok(())
    }

    fn usage(&self, id: &str) -> Result<Usage> {
        self.store.get(id)?;
        let dir = self.store.layer_dir(id);
        driver_core::sys::disk_usage(&dir).map_err(|e| Error::at(id, &dir, e))
    }

    fn layer_dir(&self, id: &str) -> Result<driver_core::LayerDir> {
        self.store.get(id)?;
        Ok(driver_core::LayerDir { path: self.store.layer_dir(id), kind: driver_core::LayerDirKind::FullCopy })
    }

    fn status(&self) -> Result<Status> {
        Ok(Status {
            driver: "vfs".into(),
            backing_fs: driver_core::sys::fs_type(self.store.dir()).unwrap_or_else(|_| "unknown".into()),
            features: vec![("reflink".into(), self.copier.reflinks().to_string())],
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

impl VfsDriver {
    /// Where a committed layer's read-only view is mounted.
    fn view(&self, id: &str) -> PathBuf {
        self.store.dir().join("mnt").join(id)
    }

    fn naive(&self, id: &str) -> Result<strata_archive::diff::NaiveDiff> {
        let meta = self.store.get(id)?;
        let parent = meta.parent.as_deref().map(|p| self.store.layer_dir(p));
        naive_diff(id, &self.store.layer_dir(id), parent.as_deref())
    }
}
