//! btrfs runs the shared conformance suite unchanged (one test per case; its diff cases
//! check that the diff that follows btrfs's change tracking is the naive walk's), plus
//! what is btrfs's own: the folder check, no leaked subvolumes, an unchanged snapshot's
//! usage. One loop-mounted btrfs serves the whole binary (loop devices are few; a case
//! that needs its own gets one); it is released at exit, also when a check fails.

mod common;

use common::subvolumes_under;
use driver_btrfs::{is_subvolume, BtrfsDriver};
use driver_core::Driver;
use strata_scratch::FsKind;
use strata_testkit::conformance::{self, Backing};

const BACKING: Backing = Backing::Scratch(FsKind::Btrfs, 2 << 30);

strata_testkit::conformance_tests!("btrfs", BACKING, |root| Ok(Box::new(
    BtrfsDriver::new(root)?.reserving(&strata_testkit::hostile::reserved_xattrs())
)));

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

    // A snapshot that changed nothing holds (almost) nothing of its own.
    let root = base.join("usage/btrfs");
    let d = BtrfsDriver::new(&root).unwrap();
    conformance::scripted_diff(&d);
    d.create("idle", Some("base"), true).unwrap();
    let u = d.usage("idle").unwrap();
    assert!(u.bytes < 64 << 10, "an unchanged snapshot holds {} bytes", u.bytes);
    assert!(d.usage("base").unwrap().bytes > 0);
}
