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

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::os::fd::AsFd;
    use std::path::PathBuf;
    use std::sync::Mutex;

    use driver_core::sys;
    use driver_core::ChangeKind;

    use super::*;
    use crate::apply::{apply_layer, ApplyOptions};
    use crate::diff::{walk_diff, LayerKind};
    use crate::tarbuild::TarBuilder;

    /// A format of the test's own, which no filesystem knows: a whiteout is an empty
    /// file and an opaque directory a remembered inode, both noted in memory. Apply and
    /// diff must go through the format object alone for it to round-trip.
    #[derive(Debug, Default)]
    struct Remembered {
        whiteouts: Mutex<HashSet<(u64, u64)>>,
        opaque: Mutex<HashSet<(u64, u64)>>,
    }

    fn key(fd: BorrowedFd<'_>) -> io::Result<(u64, u64)> {
        let st = sys::fstat(fd)?;
        Ok((st.st_dev, st.st_ino))
    }

    impl WhiteoutFormat for Remembered {
        fn name(&self) -> &'static str {
            "remembered"
        }
        fn records(&self) -> bool {
            true
        }
        fn write_whiteout(&self, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
            let fd = sys::open_at(dir, name, nix::fcntl::OFlag::O_CREAT | nix::fcntl::OFlag::O_WRONLY, 0o600)?;
            self.whiteouts.lock().unwrap().insert(key(fd.as_fd())?);
            Ok(())
        }
        fn write_opaque(&self, dir: BorrowedFd<'_>) -> io::Result<()> {
            self.opaque.lock().unwrap().insert(key(dir)?);
            Ok(())
        }
        fn is_whiteout(&self, st: &FileStat) -> bool {
            self.whiteouts.lock().unwrap().contains(&(st.st_dev, st.st_ino))
        }
        fn is_opaque(&self, dir: BorrowedFd<'_>) -> io::Result<bool> {
            Ok(self.opaque.lock().unwrap().contains(&key(dir)?))
        }
        fn is_own_xattr(&self, _name: &str) -> bool {
            false
        }
    }

    #[test]
    fn a_recorded_format_round_trips_through_apply_and_diff() {
        let tmp = tempfile::tempdir().unwrap();
        let (lower, upper) = (tmp.path().join("lower"), tmp.path().join("upper"));
        std::fs::create_dir_all(&upper).unwrap();
        std::fs::create_dir_all(&lower).unwrap();
        let parent = TarBuilder::new()
            .dir("a")
            .file("a/x", b"x")
            .file("a/y", b"y")
            .dir("b")
            .file("b/z", b"z")
            .file("c", b"c")
            .build();
        apply_layer(&lower, &parent[..], &ApplyOptions::new("lower")).unwrap();
        let layer = TarBuilder::new().whiteout("c").whiteout("a/x").opaque("b").file("b/new", b"n").build();
        let format = Arc::new(Remembered::default());
        let opts = ApplyOptions::new("upper").with_whiteouts(format.clone());
        apply_layer(&upper, &layer[..], &opts).unwrap();
        assert_eq!(format.whiteouts.lock().unwrap().len(), 2, "one record per whiteout (c, a/x)");
        assert_eq!(format.opaque.lock().unwrap().len(), 1, "b is recorded opaque");
        assert!(upper.join("c").exists() && !upper.join("b/z").exists(), "recorded, not deleted in place");

        let d = walk_diff("upper", &upper, Some(&lower), &LayerKind::Upper(format), &Default::default()).unwrap();
        let mut tar_paths: Vec<PathBuf> = d.entries.iter().map(|e| e.tar_path()).collect();
        tar_paths.sort();
        for want in [".wh.c", "a/.wh.x", "b/.wh..wh..opq", "b/new"] {
            assert!(tar_paths.contains(&PathBuf::from(want)), "{want} missing from {tar_paths:?}");
        }
        let deleted: Vec<_> =
            d.changes.iter().filter(|c| c.kind == ChangeKind::Deleted).map(|c| c.path.clone()).collect();
        assert_eq!(deleted, [PathBuf::from("a/x"), PathBuf::from("b/z"), PathBuf::from("c")]);

        // The same tar deleted in place leaves no record and no hidden name.
        let copy = tmp.path().join("copy");
        std::fs::create_dir_all(&copy).unwrap();
        apply_layer(&copy, &parent[..], &ApplyOptions::new("copy")).unwrap();
        apply_layer(&copy, &layer[..], &ApplyOptions::new("copy")).unwrap();
        assert!(!copy.join("c").exists() && !copy.join("a/x").exists() && !copy.join("b/z").exists());
        assert!(copy.join("a/y").exists() && copy.join("b/new").exists());
    }
}
