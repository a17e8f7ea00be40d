//! Diff views: a layer's diff walked from its upper directory, or, where its view
//! copied up with redirects or metacopy, from its own mounted view ([`crate::copyup`]).

use std::io::Write;
use std::path::PathBuf;

use driver_core::driver::Change;
use driver_core::error::{Error, Result};
use driver_core::lifecycle::{LayerDiff, LayerFs};
use driver_core::store::LayerMeta;
use driver_core::ReservedXattrs;
use strata_archive::diff::{walk_diff, write_tar, LayerKind, NaiveDiff};

use crate::copyup;
use crate::options::TempView;
use crate::{Overlay, XATTR_PREFIX};

impl Overlay {
    /// The layer's diff, and the parent's view it was taken against: kept mounted
    /// until the tar is written, since an entry can be read from it (a name of a split
    /// hardlink that the layer did not touch).
    pub(crate) fn walk(&self, meta: &LayerMeta, reserved: &ReservedXattrs) -> Result<ViewDiff<'_>> {
        let view = match &meta.parent {
            Some(p) => Some(self.temp_view(p)?),
            None => None,
        };
        let kind = LayerKind::Upper(self.whiteouts());
        let diff =
            walk_diff(&meta.id, &self.diff_dir(&meta.id), view.as_ref().map(|v| v.path.as_path()), &kind, reserved)?;
        Ok(ViewDiff { diff, _view: view, _own: None })
    }

    /// The diff of a layer whose view was mounted with metacopy and redirect_dir: the
    /// upper says where, the layer's own view what (see [`copyup`]).
    pub(crate) fn walk_view(&self, meta: &LayerMeta, reserved: &ReservedXattrs) -> Result<ViewDiff<'_>> {
        let id = meta.id.clone();
        let mut path = PathBuf::new();
        self.store.acquire_mount(&id, |m, first| {
            path = LayerFs::mount(self, m, first)?;
            Ok(())
        })?;
        let own = HeldView { fs: self, id: id.clone(), path };
        let parent = match &meta.parent {
            Some(p) => Some(self.temp_view(p)?),
            None => None,
        };
        let upper = self.diff_dir(&id);
        let visit = copyup::touched(&upper, &own.path, XATTR_PREFIX).map_err(|e| Error::at(&id, &upper, e))?;
        let kind = LayerKind::Filtered { visit, all_links: false };
        let diff = walk_diff(&id, &own.path, parent.as_ref().map(|v| v.path.as_path()), &kind, reserved)?;
        Ok(ViewDiff { diff, _view: parent, _own: Some(own) })
    }
}

/// A layer's diff with the views it was taken against (kept until the tar is written).
pub(crate) struct ViewDiff<'a> {
    diff: NaiveDiff,
    _view: Option<TempView>,
    _own: Option<HeldView<'a>>,
}

/// A layer's own view, mounted and counted as [`Driver::mount`](driver_core::Driver::mount)
/// mounts it (the same overlay, so the same inode numbers as the view users and the
/// naive walk see), released on drop.
struct HeldView<'a> {
    fs: &'a Overlay,
    id: String,
    path: PathBuf,
}

impl Drop for HeldView<'_> {
    fn drop(&mut self) {
        let _ = self.fs.store.release_mount(&self.id, || LayerFs::unmount(self.fs, &self.id));
    }
}

impl LayerDiff for ViewDiff<'_> {
    fn changes(self: Box<Self>) -> Vec<Change> {
        self.diff.changes
    }
    fn write_tar(self: Box<Self>, layer: &str, out: &mut dyn Write) -> Result<u64> {
        write_tar(layer, self.diff.entries, &self.diff.reserved, out)
    }
}
