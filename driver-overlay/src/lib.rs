//! The `overlay` driver: layers as overlayfs layers.
//!
//! ```text
//! <dir>/layers/<id>/diff     what this layer changed (a whiteout is a 0/0 char device,
//!                            an opaque directory carries trusted.overlay.opaque=y)
//! <dir>/layers/<id>/work     overlayfs's work directory (writable layers)
//! <dir>/layers/<id>/merged   where the layer's view is mounted
//! <dir>/l/<link>             short symlink to a layer's diff (classic mounts only)
//! <dir>/empty                an empty lower, for views with no other lower
//! <dir>/tmp/                 private read-only mounts of a parent's view (diff, apply)
//! ```
//!
//! * **apply** extracts straight into the layer's own `diff` (never a copy of the
//!   parent), so the layers of an image are independent and are extracted in parallel,
//!   then committed in order. Directories the tar did not describe take their
//!   metadata from the lower layers at commit.
//! * **mount** stacks the diffs: lowers (own diff first for a committed layer's
//!   read-only view), plus upper and work for a writable one. See [`mount`] for how
//!   hundreds of layers fit.
//! * **diff** walks only the layer's own `diff`, looking at the parent's view (a
//!   private read-only mount) only where something changed: its cost follows the
//!   number of changes, not the image's size.
//! * Mounts are made with `index=off` and `redirect_dir=on` where the kernel has it
//!   (probed once and recorded, [`features`]): a lower directory renames in place
//!   instead of EXDEV (which makes `mv` copy the tree). A container's view adds
//!   `metacopy=on` where the kernel takes the pair and every layer below it recorded
//!   (at apply) a longest path that fits the overlay module's `redirect_max` with its
//!   leading '/' ([`features::metacopy_fits`] says why that suffices): a chmod of a
//!   lower file then copies up its metadata only, and no `ln` of a lower file can
//!   meet EXDEV. The upper directory then no longer says what changed (a renamed
//!   directory is a redirect xattr, a chmod'd file an empty metacopy stub), and moby
//!   falls back to its naive diff for exactly that reason; here the diff of such a
//!   layer reads the entries from the layer's view where the upper says something
//!   changed ([`copyup`]). `STRATA_OVERLAY_COPY_UP=full|redirect_dir|metacopy` forces a
//!   way (full: both `off`, and the diff walks the upper alone). Each writable layer
//!   records in its metadata (`copy_up`, and `copy_up_why` when it is less than
//!   metacopy by default) which way its view was mounted, and its diff follows that
//!   record.

pub mod copyup;
mod diffs;
pub mod features;
mod implicit;
mod lower;
pub mod mount;
mod open;
mod options;
pub mod record;
pub mod whiteout;

pub use open::copy_up_line;

use std::fs;
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use driver_core::error::{Cause, Error, Result};
use driver_core::lifecycle::{Applied, LayerDiff, LayerFs, LayerInput, Layered, Making};
use driver_core::store::{LayerMeta, Staging, Store};
use driver_core::sys;
use driver_core::syscall::Syscalls;
use driver_core::{ReservedXattrs, Usage};
use strata_archive::apply::{apply_layer, ApplyOptions};

use crate::features::CopyUp;
use crate::implicit::copy_dir_meta;
use crate::open::Probed;
use crate::options::short_link;
use crate::record::{MountApi, OverlayRecord};
use crate::whiteout::OverlayWhiteouts;

/// The overlay driver.
pub type OverlayDriver = Layered<Overlay>;

/// The xattr namespace overlayfs keeps its bookkeeping in here ([`features::Features::xattr_prefix`]:
/// `trusted.`; rootless `userxattr` mounts would use `user.`).
const XATTR_PREFIX: &str = features::TRUSTED_PREFIX;

/// The overlay driver over `root` whose writable views copy up as `copy_up`
/// (whatever STRATA_OVERLAY_COPY_UP says); refused where the kernel lacks it.
pub fn open_copying_up(root: &Path, copy_up: CopyUp) -> Result<OverlayDriver> {
    let asked = match copy_up {
        CopyUp::Full => "full",
        CopyUp::Redirect => "redirect_dir",
        CopyUp::Metacopy => "metacopy",
    };
    let fs = Overlay::open_dir(root, Some(asked))?;
    let probed = fs.probed()?;
    if probed.copy_up != copy_up {
        return Err(Error::new(Cause::Unsupported(format!(
            "overlay cannot copy up as {}: {}",
            copy_up.name(),
            probed.copy_up_why.clone().unwrap_or_default()
        ))));
    }
    Ok(Layered::from_parts(fs.store.clone(), fs))
}

/// What overlay does its own way: upper directories, whiteouts recorded, stacked mounts.
pub struct Overlay {
    store: Arc<Store>,
    dir: PathBuf,
    /// What the kernel offers and how views copy up: from the folder's record, else
    /// probed at the first mount (an `image unpack` mounts nothing, and so pays for no
    /// probe: [`Overlay::probed`]).
    probed: std::sync::OnceLock<Probed>,
    /// The copy-up asked for (STRATA_OVERLAY_COPY_UP, or [`open_copying_up`]'s).
    asked: Option<String>,
    /// Where mounts, whiteout devices and opaque xattrs are made
    /// ([`Real`](driver_core::syscall::Real) but in unit tests).
    sys: Arc<dyn Syscalls>,
}

impl Overlay {
    fn diff_dir(&self, id: &str) -> PathBuf {
        self.store.layer_dir(id).join("diff")
    }
    fn merged(&self, id: &str) -> PathBuf {
        self.store.layer_dir(id).join("merged")
    }
    /// How this driver's layers store whiteouts, for apply and diff alike.
    fn whiteouts(&self) -> Arc<OverlayWhiteouts> {
        Arc::new(OverlayWhiteouts { xattr_prefix: XATTR_PREFIX, sys: self.sys.clone() })
    }

    /// The records of `id` and of the layers below it, top first, each read once.
    fn chain(&self, id: &str) -> Result<Vec<LayerMeta>> {
        let mut out = vec![self.store.get(id)?];
        while let Some(p) = out.last().and_then(|m| m.parent.clone()) {
            out.push(self.store.get(&p).map_err(|e| e.in_layer(id))?);
        }
        Ok(out)
    }

    fn stage(&self, staging: &Staging, writable: bool) -> Result<()> {
        let id = &staging.id;
        let diff = staging.path.join("diff");
        fs::create_dir_all(&diff).map_err(|e| Error::at(id, &diff, e))?;
        fs::set_permissions(&diff, fs::Permissions::from_mode(0o755)).map_err(|e| Error::at(id, &diff, e))?;
        if writable {
            fs::create_dir(staging.path.join("work")).map_err(|e| Error::at(id, &staging.path, e))?;
        }
        fs::create_dir(staging.path.join("merged")).map_err(|e| Error::at(id, &staging.path, e))?;
        Ok(())
    }
}

impl LayerFs for Overlay {
    fn reserved_xattrs(&self) -> ReservedXattrs {
        crate::whiteout::reserved_xattrs()
    }

    fn name(&self) -> &'static str {
        "overlay"
    }

    fn open(root: &Path) -> Result<(Arc<Store>, Overlay)> {
        // STRATA_OVERLAY_COPY_UP=full|redirect_dir|metacopy, see [`CopyUp`].
        let asked = std::env::var("STRATA_OVERLAY_COPY_UP").ok();
        let fs = Overlay::open_dir(root, asked.as_deref())?;
        Ok((fs.store.clone(), fs))
    }

    /// An empty `diff` (an upper of its own, never a copy of the parent), `merged`, and
    /// `work` for a writable layer. A created layer's root takes the parent's metadata
    /// (an applied one's is fixed after the apply, see [`Overlay::fix_implicit_dirs`]).
    fn make(&self, staging: &Staging, why: Making) -> Result<()> {
        let writable = matches!(why, Making::Create { writable: true });
        self.stage(staging, writable)?;
        if let (Making::Create { .. }, Some(p)) = (why, &staging.parent) {
            let id = &staging.id;
            let from = sys::open_dir(&self.diff_dir(p)).map_err(|e| Error::at(id, "", e))?;
            let to = sys::open_dir(&staging.path.join("diff")).map_err(|e| Error::at(id, "", e))?;
            copy_dir_meta(from.as_fd(), to.as_fd()).map_err(|e| Error::at(id, "", e))?;
        }
        Ok(())
    }

    fn apply(&self, input: LayerInput<'_>) -> Result<Applied> {
        let opts = ApplyOptions::of(&input).with_whiteouts(self.whiteouts());
        Ok(apply_layer(&input.staging.path.join("diff"), input.tar, &opts)?.into())
    }

    /// Directories the tar did not describe take their metadata from the lower layers
    /// (committed by now), see [`Overlay::fix_implicit_dirs`].
    fn before_commit(&self, staging: &Staging, applied: &Applied) -> Result<()> {
        self.fix_implicit_dirs(staging, &applied.implicit_dirs)?;
        // Under `--sync file` what the fix-up changed is synced here (no syncfs comes):
        // each directory it gave metadata, or the parent of one it removed.
        let diff = staging.path.join("diff");
        for rel in &applied.implicit_dirs {
            let dir = diff.join(rel);
            let dir = if dir.exists() { dir } else { dir.parent().unwrap_or(&diff).to_path_buf() };
            staging.durability.sync_written_dir(&dir).map_err(|e| Error::at(&staging.id, rel, e))?;
        }
        Ok(())
    }

    /// A layer's own tree is its upper directory; `work/` and `merged/` are the mount's.
    fn own_tree(&self, dir: &Path) -> PathBuf {
        dir.join("diff")
    }

    /// The layers of an image are independent directories here: extract them all at
    /// once (one per core), then commit them bottom to top.
    fn independent(&self) -> bool {
        true
    }

    fn extra(&self, id: &str, applied: Option<&Applied>) -> serde_json::Map<String, serde_json::Value> {
        let record = OverlayRecord {
            link: Some(short_link(id)),
            longest_path: applied.map(|a| a.longest_path as u64),
            ..OverlayRecord::default()
        };
        record.to_extra()
    }

    fn committed(&self, meta: &LayerMeta) -> Result<()> {
        let _ = self.ensure_link(&meta.id);
        Ok(())
    }

    fn mount(&self, m: &mut LayerMeta, first: bool) -> Result<PathBuf> {
        let id = m.id.clone();
        let target = self.merged(&id);
        // A count left by a process killed mid-mount is no proof of a mount.
        if first || !sys::is_mount_point(&target) {
            // Read before mounting: a record that does not read fails with nothing mounted.
            let mut record = OverlayRecord::of(m)?;
            let chain = self.chain(&id)?;
            let (copy_up, why) = self.copy_up_for(&chain, m.writable)?;
            let om = self.overlay_for(&chain, m.writable, copy_up)?;
            let api = if self.probed()?.features.lowerdir_plus { MountApi::LowerdirPlus } else { MountApi::Classic };
            self.mount_at(&chain, &om, &target).map_err(|e| Error::at(&id, &target, e))?;
            record.mount_options = Some(mount::mount_data(&om).split(',').skip(1).collect::<Vec<_>>().join(","));
            record.mount_api = Some(api);
            // Once a writable view was mounted with redirects (or metacopy) its upper
            // may hold them for good: the record never goes back (copy_up_for mounts
            // it with at least what it recorded).
            if m.writable {
                record.copy_up = Some(copy_up);
                record.copy_up_why = why;
            }
            record.write_into(&mut m.extra);
        }
        Ok(target)
    }

    fn unmount(&self, id: &str) -> Result<()> {
        let target = self.merged(id);
        self.sys.unmount(&target).map_err(|e| Error::at(id, &target, e))
    }

    fn diff(&self, meta: &LayerMeta, reserved: &ReservedXattrs) -> Result<Box<dyn LayerDiff + '_>> {
        if OverlayRecord::of(meta)?.copy_up.is_some_and(|c| c != CopyUp::Full) {
            return Ok(Box::new(self.walk_view(meta, reserved)?));
        }
        Ok(Box::new(self.walk(meta, reserved)?))
    }

    fn after_remove(&self, id: &str) {
        let _ = fs::remove_file(self.dir.join("l").join(short_link(id)));
    }

    fn usage(&self, meta: &LayerMeta) -> Result<Usage> {
        let d = self.diff_dir(&meta.id);
        sys::disk_usage(&d).map_err(|e| Error::at(&meta.id, &d, e))
    }

    fn layer_dir(&self, id: &str) -> Result<driver_core::LayerDir> {
        self.store.get(id)?;
        let kind = driver_core::LayerDirKind::Changes { xattr_prefix: XATTR_PREFIX.to_string() };
        Ok(driver_core::LayerDir { path: self.diff_dir(id), kind })
    }

    fn features(&self) -> Vec<(String, String)> {
        let p = match self.probed() {
            Ok(p) => p,
            Err(e) => return vec![("error".into(), e.to_string())],
        };
        let mut features = p.features.pairs();
        features.push(("copy_up".into(), copy_up_line(&p.features, self.asked.as_deref())));
        let api = if p.features.lowerdir_plus { MountApi::LowerdirPlus } else { MountApi::Classic };
        features.push(("mount_api".into(), api.name().into()));
        features
    }
}

#[cfg(test)]
mod mount_options;
