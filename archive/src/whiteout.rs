//! How a layer directory stores OCI whiteouts: one two-way format, written by
//! [`crate::apply`] and read back by [`crate::diff`].
//!
//! An OCI layer tar deletes with `.wh.NAME` (hide NAME of the lower layers) and
//! `.wh..wh..opq` (hide all lower content of a directory). A driver stores those in one
//! of two ways:
//!
//! * **in place** ([`DeleteInPlace`], the default): the layer's directory holds the
//!   lower layers' files too (a copy, a snapshot), so a whiteout deletes them and
//!   nothing is recorded; the diff compares whole trees.
//! * **recorded**: the layer's directory holds only what the layer changed, and a
//!   whiteout or an opaque directory is stored as a marker the driver's filesystem
//!   understands. The driver that needs such a format defines it beside itself and
//!   hands it to both [`crate::apply::ApplyOptions`] and [`crate::diff::LayerKind::Upper`],
//!   so the way a marker is written and the way it is recognised cannot drift apart.

use std::ffi::OsStr;
use std::fmt::Debug;
use std::io;
use std::os::fd::BorrowedFd;
use std::sync::Arc;

use nix::sys::stat::FileStat;

/// How an OCI layer tar spells a whiteout: `.wh.NAME` hides NAME of the lower layers.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// How an OCI layer tar spells an opaque directory: this entry in it hides all lower
/// content of the directory.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// A way of storing whiteouts and opaque directories in a layer directory.
pub trait WhiteoutFormat: Debug + Send + Sync {
    /// A short name for messages (`delete-in-place`, ...).
    fn name(&self) -> &'static str;

    /// `false` when the layer directory holds the lower layers' files too, so that a
    /// whiteout deletes in place and nothing is recorded. The other methods are then
    /// never called by the engine.
    fn records(&self) -> bool;

    /// Apply side: records that `name` in directory `dir` hides the lower entry of that
    /// name. Called only when `name` does not exist in `dir`.
    fn write_whiteout(&self, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()>;

    /// Apply side: records that directory `dir` hides all lower content.
    fn write_opaque(&self, dir: BorrowedFd<'_>) -> io::Result<()>;

    /// Diff side: whether the node `st` is a recorded whiteout, not content.
    fn is_whiteout(&self, st: &FileStat) -> bool;

    /// Diff side: whether directory `dir` is recorded opaque.
    fn is_opaque(&self, dir: BorrowedFd<'_>) -> io::Result<bool>;

    /// Whether an xattr is the format's own bookkeeping on a layer directory, not
    /// content: apply keeps it when a tar entry redescribes the directory, and the diff
    /// neither compares nor writes it.
    fn is_own_xattr(&self, name: &str) -> bool;

    /// The name a user gave an xattr that the filesystem stored escaped (for messages).
    fn user_xattr_name(&self, name: &str) -> String {
        name.to_string()
    }
}

/// Whiteouts delete the lower data in place: the layer directory holds it (vfs copies,
/// snapshots). Nothing is ever recorded.
#[derive(Clone, Copy, Debug, Default)]
pub struct DeleteInPlace;

impl WhiteoutFormat for DeleteInPlace {
    fn name(&self) -> &'static str {
        "delete-in-place"
    }
    fn records(&self) -> bool {
        false
    }
    fn write_whiteout(&self, _dir: BorrowedFd<'_>, _name: &OsStr) -> io::Result<()> {
        Err(io::Error::other("delete-in-place records no whiteout"))
    }
    fn write_opaque(&self, _dir: BorrowedFd<'_>) -> io::Result<()> {
        Err(io::Error::other("delete-in-place records no opaque directory"))
    }
    fn is_whiteout(&self, _st: &FileStat) -> bool {
        false
    }
    fn is_opaque(&self, _dir: BorrowedFd<'_>) -> io::Result<bool> {
        Ok(false)
    }
    fn is_own_xattr(&self, _name: &str) -> bool {
        false
    }
}

/// The default format, shared.
pub fn delete_in_place() -> Arc<dyn WhiteoutFormat> {
    Arc::new(DeleteInPlace)
}
