//! A whiteout format of the test's own, through the public apply and diff: a driver's
//! format goes through the format object alone (overlay's is the real one).

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use driver_core::sys;
use driver_core::ChangeKind;
use nix::sys::stat::FileStat;

use strata_archive::apply::{apply_layer, ApplyOptions};
use strata_archive::diff::{walk_diff, LayerKind};
use strata_archive::tarbuild::TarBuilder;
use strata_archive::whiteout::WhiteoutFormat;

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
    let deleted: Vec<_> = d.changes.iter().filter(|c| c.kind == ChangeKind::Deleted).map(|c| c.path.clone()).collect();
    assert_eq!(deleted, [PathBuf::from("a/x"), PathBuf::from("b/z"), PathBuf::from("c")]);

    // The same tar deleted in place leaves no record and no hidden name.
    let copy = tmp.path().join("copy");
    std::fs::create_dir_all(&copy).unwrap();
    apply_layer(&copy, &parent[..], &ApplyOptions::new("copy")).unwrap();
    apply_layer(&copy, &layer[..], &ApplyOptions::new("copy")).unwrap();
    assert!(!copy.join("c").exists() && !copy.join("a/x").exists() && !copy.join("b/z").exists());
    assert!(copy.join("a/y").exists() && copy.join("b/new").exists());
}
