//! The `vfs` driver: every layer is a full directory tree of its own.
//!
//! Making a layer copies its parent ([`copy::Copier`]: reflinks where the filesystem
//! shares extents, else a copy that keeps holes), then the tar engine applies the
//! layer with whiteouts as deletions. Nothing is mounted: the "mount" of a layer is its
//! directory, reference counted like the other drivers' mounts. The diff is the naive
//! diff. It works on any filesystem, needs no kernel feature, and pays for that in
//! time and disk for every layer and every container.
//!
//! The lifecycle (staging, commit, mount counting, removal, listing) is
//! [`driver_core::lifecycle::Layered`]'s; this crate is the [`LayerFs`] hooks.

pub mod copy;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use driver_core::error::{Cause, Error, Result};
use driver_core::lifecycle::{Applied, LayerDiff, LayerFs, LayerInput, Layered, Making};
use driver_core::store::{discard_tree, LayerMeta, Staging, Store};
use driver_core::sys;
use driver_core::{Durability, ReservedXattrs, Usage};
use strata_archive::apply::apply_in_place;
use strata_archive::diff::naive_diff;

/// The vfs driver.
pub type VfsDriver = Layered<Vfs>;

/// What vfs does its own way: copies, and read-only bind mounts of committed layers.
pub struct Vfs {
    store: Arc<Store>,
    copier: copy::Copier,
}

impl Vfs {
    /// Where a committed layer's read-only view is mounted.
    fn view(&self, id: &str) -> PathBuf {
        self.store.dir().join("mnt").join(id)
    }
}

impl LayerFs for Vfs {
    fn name(&self) -> &'static str {
        "vfs"
    }

    fn open(root: &Path) -> Result<(Arc<Store>, Vfs)> {
        fs::create_dir_all(root).map_err(|e| Error::new(e).with_path(root))?;
        let store = Arc::new(Store::open(root, Arc::new(discard_tree))?);
        Ok((store.clone(), Vfs { store, copier: copy::Copier::default() }))
    }

    /// A copy of the parent, or an empty directory.
    fn make(&self, staging: &Staging, _why: Making) -> Result<()> {
        let id = &staging.id;
        match &staging.parent {
            Some(p) => self
                .copier
                .copy_tree_with(&self.store.layer_dir(p), &staging.path, staging.durability == Durability::Chain)
                .map_err(|e| Error::at(id, &staging.path, e))?,
            None => {
                fs::create_dir(&staging.path).map_err(|e| Error::at(id, &staging.path, e))?;
                use std::os::unix::fs::PermissionsExt;
                fs::set_permissions(&staging.path, fs::Permissions::from_mode(0o755))
                    .map_err(|e| Error::at(id, &staging.path, e))?;
            }
        }
        Ok(())
    }

    fn apply(&self, input: LayerInput<'_>) -> Result<Applied> {
        apply_in_place(input)
    }

    /// A container's view is its own directory. A committed layer's is a read-only
    /// bind mount of it (`<dir>/mnt/<id>`): handing out the directory itself would let
    /// any write change a verified image layer for good, where overlay and btrfs
    /// answer EROFS.
    fn mount(&self, m: &mut LayerMeta, _first: bool) -> Result<PathBuf> {
        let id = &m.id;
        if m.writable {
            return Ok(self.store.layer_dir(id));
        }
        let target = self.view(id);
        // A count left by a process killed mid-mount is no proof of a mount, and a
        // mount left by one killed before counting is reused, not stacked.
        if !sys::is_mount_point(&target) {
            fs::create_dir_all(&target).map_err(|e| Error::at(id, &target, e))?;
            sys::bind_readonly(&self.store.layer_dir(id), &target).map_err(|source| {
                Error::at(id, &target, Cause::Mount { what: "read-only bind mount of the committed layer", source })
            })?;
        }
        Ok(target)
    }

    fn unmount(&self, id: &str) -> Result<()> {
        let target = self.view(id);
        if target.exists() {
            sys::unmount(&target).map_err(|e| Error::at(id, &target, e))?;
            let _ = fs::remove_dir(&target);
        }
        Ok(())
    }

    fn diff(&self, meta: &LayerMeta, reserved: &ReservedXattrs) -> Result<Box<dyn LayerDiff + '_>> {
        let parent = meta.parent.as_deref().map(|p| self.store.layer_dir(p));
        Ok(Box::new(naive_diff(&meta.id, &self.store.layer_dir(&meta.id), parent.as_deref(), reserved)?))
    }

    /// A view left mounted by a process killed before it counted the mount.
    fn after_remove(&self, id: &str) {
        let target = self.view(id);
        if target.exists() {
            let _ = sys::unmount(&target);
            let _ = fs::remove_dir(&target);
        }
    }

    fn usage(&self, meta: &LayerMeta) -> Result<Usage> {
        let dir = self.store.layer_dir(&meta.id);
        sys::disk_usage(&dir).map_err(|e| Error::at(&meta.id, &dir, e))
    }

    fn layer_dir(&self, id: &str) -> Result<driver_core::LayerDir> {
        self.store.get(id)?;
        Ok(driver_core::LayerDir { path: self.store.layer_dir(id), kind: driver_core::LayerDirKind::FullCopy })
    }

    fn features(&self) -> Vec<(String, String)> {
        vec![("reflink".into(), self.copier.reflinks().to_string())]
    }
}
