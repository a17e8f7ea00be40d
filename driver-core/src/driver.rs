//! The contract every storage driver fulfils.
//!
//! # Lifecycle
//!
//! A driver manages *layers* named by string IDs (for images, chain IDs such as
//! `sha256:…`). Each layer has at most one parent and is one of:
//!
//! * **committed** — made by [`Driver::apply_diff`] (an OCI layer tar applied on top of
//!   the parent) or by [`Driver::create`] with `writable = false`. Its content never
//!   changes again.
//! * **writable** — a container layer, made by [`Driver::create`] with `writable = true`.
//!   Writes go through its mounted view.
//!
//! ```text
//!   apply_diff(base, None, tar) ──► apply_diff(app, Some(base), tar) ──► create(ctr, Some(app), writable)
//!                                                                          │
//!                          mount(ctr) ─► write files ─► diff(ctr) / changes(ctr) ─► unmount(ctr)
//!                                                                          │
//!                                                      remove(ctr) ─► remove(app) ─► remove(base)
//! ```
//!
//! * [`Driver::mount`] returns the merged view of the layer and everything below it.
//!   Mounts are reference counted *across processes*: two users share one mount and
//!   only the last [`Driver::unmount`] releases it.
//! * [`Driver::remove`] refuses while the layer is mounted or has a child.
//! * Every call that makes a layer is atomic: if it fails, or the process is killed,
//!   no layer of that ID is listed afterwards, and the next start removes any
//!   half-made work (see [`crate::store`]).
//!
//! The lifecycle is run once, for every driver, by [`crate::lifecycle::Layered`]
//! (staging, apply, commit, mount counting, removal, listing, diff); the tar engine and
//! the metadata store are shared too. A driver differs only where its filesystem does,
//! as a [`crate::lifecycle::LayerFs`]: how a layer's directory is made, how a whiteout
//! is stored, how a mount is made, where a diff comes from.

use std::io::{Read, Write};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::Result;
// Defined beside what makes them (the metadata store lists layers; a content record
// counts a layer's disk use), named here with the contract.
pub use crate::record::Usage;
pub use crate::store::LayerInfo;

/// How a path differs between a layer and its parent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

/// One entry of [`Driver::changes`]. A deleted tree is reported once, at its top.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Change {
    /// Path relative to the layer root, without a leading `/`.
    pub path: PathBuf,
    pub kind: ChangeKind,
}

/// What a driver runs on and with.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub driver: String,
    /// Filesystem type under the driver's folder, as the kernel names it (`ext4`, `xfs`,
    /// `tmpfs`, …).
    pub backing_fs: String,
    /// Features in use, as `name=value` pairs (for example `reflink=true`, `metacopy=on`).
    pub features: Vec<(String, String)>,
    pub layers: usize,
}

/// How a layer's own directory on disk stores its files, for `strata layer which` and
/// `strata layer explain` (what a student sees with `ls -l` in the driver's folder).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerDir {
    /// The layer's own directory: an upper directory of changes, a full copy or a
    /// snapshot, as the driver keeps it.
    pub path: PathBuf,
    pub kind: LayerDirKind,
}

/// What [`LayerDir::path`] holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LayerDirKind {
    /// Only what the layer changed: a deletion is a 0/0 character device, a directory
    /// that hides everything below carries `<xattr_prefix>opaque=y` (a union mount's upper).
    Changes { xattr_prefix: String },
    /// A full copy of the tree: a deleted file is simply absent (vfs).
    FullCopy,
    /// A full tree made as a snapshot of the parent, sharing its unchanged extents;
    /// a deleted file is absent (a copy-on-write filesystem's subvolume).
    Snapshot,
}

/// One layer of a chain given to [`Driver::apply_chain`].
pub struct LayerTar {
    pub id: String,
    pub parent: Option<String>,
    /// The layer tar (plain, gzip or zstd, unless `uncompressed`).
    pub tar: Box<dyn Read + Send + 'static>,
    /// The tar is known to be uncompressed (the caller decompressed the blob where it
    /// read it), so the apply does not look for gzip or zstd again.
    pub uncompressed: bool,
    /// The digest the uncompressed tar must have (an image's diff_id). The apply
    /// hashes the stream anyway; a layer whose digest differs is not committed.
    pub diff_id: Option<String>,
}

/// Called as each layer of a chain is committed: its index and the bytes applied.
pub type ChainProgress<'a> = &'a (dyn Fn(usize, u64) + Sync);

/// A storage driver. See the module documentation for the lifecycle.
pub trait Driver: Send + Sync {
    /// The driver's short name (`vfs`, say).
    fn name(&self) -> &'static str;

    /// How the work done through this driver from now on is synced (`--sync`, see
    /// [`crate::durability`]); `chain` until set.
    fn set_durability(&self, _mode: crate::Durability) {}

    /// Makes an empty layer `id` over `parent`: a container layer when `writable`.
    fn create(&self, id: &str, parent: Option<&str>, writable: bool) -> Result<()>;

    /// Makes the committed layer `id` over `parent` holding the changes in an OCI layer
    /// tar (plain, gzip or zstd). Returns the bytes of file content applied. Atomic.
    fn apply_diff(&self, id: &str, parent: Option<&str>, tar: &mut dyn Read) -> Result<u64>;

    /// Applies a chain of layers, each over the one before (the first over its own
    /// `parent`), committing them bottom to top; stops at the first error, leaving the
    /// layers below it committed. A driver whose layers do not start from their
    /// parent's tree extracts them in parallel; the default applies them one
    /// after the other, reading the next layer's stream ahead on another thread.
    fn apply_chain(&self, layers: Vec<LayerTar>, progress: ChainProgress<'_>) -> Result<Vec<u64>>;

    /// Mounts (or shares the existing mount of) the merged view of `id`; returns its path.
    fn mount(&self, id: &str) -> Result<PathBuf>;

    /// Drops one user of the mount of `id`; the last user's call releases it.
    fn unmount(&self, id: &str) -> Result<()>;

    /// Writes the uncompressed OCI layer tar of `id` against its parent; returns its size.
    fn diff(&self, id: &str, out: &mut dyn Write) -> Result<u64>;

    /// Lists what changed in `id` against its parent, sorted by path.
    fn changes(&self, id: &str) -> Result<Vec<Change>>;

    /// Removes `id`; refuses while it is mounted or has a child.
    fn remove(&self, id: &str) -> Result<()>;

    /// Bytes and inodes that `id` alone holds on disk.
    fn usage(&self, id: &str) -> Result<Usage>;

    /// The shared layer metadata store (`strata check`, `strata df` read it directly,
    /// records that do not parse included). `None` for a driver without one.
    fn layer_store(&self) -> Option<&crate::store::Store> {
        None
    }

    /// Where layer `id`'s own tree (what its content record describes, see
    /// [`crate::record`]) is, found by name: its metadata may be unreadable.
    fn own_tree(&self, id: &str) -> Option<PathBuf> {
        let _ = id;
        None
    }

    /// `strata check --repair`: makes the read-only layer `id` over `parent` again from
    /// `tar` in fresh staging and swaps it in for what is there (content, metadata and
    /// content record, whatever state they are in). Refused while `id` or a layer over
    /// it is mounted. Returns the bytes applied.
    fn reapply(&self, id: &str, parent: Option<&str>, tar: &mut dyn Read, diff_id: Option<&str>) -> Result<u64> {
        let _ = (id, parent, tar, diff_id);
        Err(crate::Error::new(crate::Cause::Unsupported(format!("the {} driver cannot repair layers", self.name()))))
    }

    /// `strata check --repair`: records layer `id`'s content anew, as it is now (a
    /// layer whose record was lost and that nothing can make again).
    fn rerecord(&self, id: &str) -> Result<()> {
        let _ = id;
        Err(crate::Error::new(crate::Cause::Unsupported(format!("the {} driver keeps no records", self.name()))))
    }

    /// Where `id`'s own files are on disk and how they are stored there (read-only use:
    /// inspection, teaching). A driver that cannot show it says so.
    fn layer_dir(&self, id: &str) -> Result<LayerDir> {
        let _ = id;
        Err(crate::Error::new(crate::Cause::Unsupported(format!(
            "the {} driver does not show its layer folders",
            self.name()
        ))))
    }

    /// Backing filesystem, features in use, layer count.
    fn status(&self) -> Result<Status>;

    /// The metadata of one layer.
    fn get(&self, id: &str) -> Result<LayerInfo>;

    /// Every layer, sorted by ID.
    fn list(&self) -> Result<Vec<LayerInfo>>;
}
