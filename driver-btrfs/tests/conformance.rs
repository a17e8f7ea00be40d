//! btrfs runs the shared conformance suite unchanged (one test per case), plus what is
//! btrfs's own: the folder check, no leaked subvolumes, and the diff that follows
//! btrfs's change tracking giving exactly the naive diff's tar. One loop-mounted btrfs
//! serves the whole binary (loop devices are few); it is released at exit, also when a
//! check fails.

mod common;

use common::subvolumes_under;
use driver_btrfs::{is_subvolume, BtrfsDriver};
use driver_core::Driver;
use strata_archive::diff::write_tar;
use strata_scratch::FsKind;
use strata_testkit::conformance::{self, Backing};

const BACKING: Backing = Backing::Scratch(FsKind::Btrfs, 2 << 30);

strata_testkit::conformance_tests!("btrfs", BACKING, |root| Ok(Box::new(BtrfsDriver::new(root)?)));

#[test]
fn btrfs_driver() {
    let Some(base) = conformance::shared_base(BACKING) else { return };

    // Not on btrfs: a clear refusal naming what it found.
    let elsewhere = tempfile::tempdir().unwrap();
    let e = BtrfsDriver::new(&elsewhere.path().join("btrfs")).err().expect("refused off btrfs");
    assert!(e.to_string().contains("needs its folder on btrfs") && e.to_string().contains("ext4"), "{e}");

    // The folder is a subvolume; removing every layer leaves no subvolume behind,
    // not even one a container made inside its layer.
    let root = base.join("leaks/btrfs");
    let d = BtrfsDriver::new(&root).unwrap();
    assert!(is_subvolume(&root), "the driver folder is a subvolume");
    d.apply_diff("base", None, &mut &conformance::scripted_base_tar()[..]).unwrap();
    d.create("ctr", Some("base"), true).unwrap();
    let view = d.mount("ctr").unwrap();
    let status = std::process::Command::new("btrfs")
        .args(["subvolume", "create"])
        .arg(view.join("opt/nested"))
        .output()
        .unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    d.unmount("ctr").unwrap();
    assert_eq!(subvolumes_under(&root).len(), 3, "base, ctr and the nested one");
    d.remove("ctr").unwrap();
    d.remove("base").unwrap();
    let left = subvolumes_under(&root);
    assert!(left.is_empty(), "subvolumes left: {left:?}");

    // The diff that follows the changes gives exactly the naive diff's tar.
    let root = base.join("diffs/btrfs");
    let d = BtrfsDriver::new(&root).unwrap();
    let (tar, _) = conformance::scripted_diff(&d);
    let mut naive = Vec::new();
    write_tar("ctr", d.naive("ctr").unwrap().entries, &mut naive).unwrap();
    assert_eq!(conformance::tar_listing(&tar), conformance::tar_listing(&naive));
    assert!(tar == naive, "the two diffs differ in bytes");
    assert_eq!(d.changes("ctr").unwrap(), d.naive("ctr").unwrap().changes);
    // A snapshot that changed nothing holds (almost) nothing of its own.
    d.create("idle", Some("base"), true).unwrap();
    let u = d.usage("idle").unwrap();
    assert!(u.bytes < 64 << 10, "an unchanged snapshot holds {} bytes", u.bytes);
    assert!(d.usage("base").unwrap().bytes > 0);
}
