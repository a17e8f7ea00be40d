//! The drivers agree: the same scripted changes give identical merged views and
//! byte-identical diff tars on vfs, overlay and btrfs; and every hostile tar a driver
//! accepts gives the same merged view on all of them.

use std::path::Path;

use driver_btrfs::BtrfsDriver;
use driver_core::Driver;
use driver_overlay::OverlayDriver;
use driver_vfs::VfsDriver;
use strata_scratch::{privileged, FsKind, ScratchFs};
use strata_testkit::conformance::{scripted_diff, tar_listing};
use strata_testkit::hostile::{corpus, Expect};
use strata_testkit::tree::{CompareOptions, Tree};

/// The drivers as the `strata` binary opens them: each refusing the xattr namespaces
/// any driver of the set reserves.
fn drivers(ext4: &Path, btrfs: &Path) -> Vec<Box<dyn Driver>> {
    let set = strata_cli::drivers::reserved_xattrs();
    vec![
        Box::new(VfsDriver::new(&ext4.join("vfs")).unwrap().reserving(&set)),
        Box::new(OverlayDriver::new(&ext4.join("overlay")).unwrap().reserving(&set)),
        Box::new(BtrfsDriver::new(&btrfs.join("btrfs")).unwrap().reserving(&set)),
    ]
}

/// The namespaces the hostile corpus (and every driver crate's conformance run) expects
/// refused are the driver set's: a driver that reserves a new namespace is added to both.
#[test]
fn the_corpus_reserves_what_the_driver_set_reserves() {
    assert_eq!(strata_cli::drivers::reserved_xattrs(), strata_testkit::hostile::reserved_xattrs());
    let tmp = tempfile::tempdir().unwrap();
    let vfs = VfsDriver::new(&tmp.path().join("vfs")).unwrap();
    assert!(!vfs.reserved().contains("trusted.overlay.opaque"), "vfs alone reserves nothing");
    let vfs = vfs.reserving(&strata_cli::drivers::reserved_xattrs());
    assert!(vfs.reserved().contains("trusted.overlay.opaque") && vfs.reserved().contains("user.overlay.x"));
}

#[test]
fn drivers_agree() {
    if !privileged("the cross-driver tests") {
        return;
    }
    let ext4 = tempfile::tempdir().unwrap();
    let btrfs = ScratchFs::new(FsKind::Btrfs, 1 << 30).unwrap();

    // Scripted changes: same view, same tar, byte for byte.
    let results: Vec<(String, Vec<u8>, Tree)> = drivers(&ext4.path().join("a"), &btrfs.path().join("a"))
        .iter()
        .map(|d| {
            let (tar, tree) = scripted_diff(d.as_ref());
            (d.name().to_string(), tar, tree)
        })
        .collect();
    let (first, first_tar, first_tree) = &results[0];
    for (name, tar, tree) in &results[1..] {
        let d = tree.differences(first_tree, &CompareOptions::default());
        assert!(d.is_empty(), "{name} and {first} views differ:\n{}", d.join("\n"));
        assert_eq!(tar_listing(tar), tar_listing(first_tar), "{name} vs {first}");
        assert!(tar == first_tar, "{name} and {first} diff tars differ in bytes");
    }

    // Hostile tars: accepted ones give one view everywhere.
    let outside = ext4.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret"), b"secret").unwrap();
    let ds = drivers(&ext4.path().join("b"), &btrfs.path().join("b"));
    let base = strata_archive::tarbuild::TarBuilder::new()
        .dir("etc")
        .file("etc/hostname", b"h")
        .dir("a")
        .file("a/x", b"x")
        .build();
    for d in &ds {
        d.apply_diff("base", None, &mut &base[..]).unwrap();
    }
    for case in corpus(&outside) {
        let id = format!("h-{}", case.name);
        let mut views = Vec::new();
        for d in &ds {
            let r = d.apply_diff(&id, Some("base"), &mut &case.tar[..]);
            assert_eq!(r.is_ok(), case.expect == Expect::Applied, "{} on {}: {r:?}", case.name, d.name());
            if r.is_ok() {
                let v = d.mount(&id).unwrap();
                // A 10 GiB sparse file is compared by size and holes, not hashed.
                let tree = if case.name == "sparse-10-gib" { None } else { Some(Tree::capture(&v).unwrap()) };
                d.unmount(&id).unwrap();
                views.push((d.name(), tree));
            }
        }
        if let Some((first, Some(t0))) = views.first() {
            for (name, t) in &views[1..] {
                let d = t.as_ref().unwrap().differences(t0, &CompareOptions::default());
                assert!(d.is_empty(), "{}: {name} and {first} disagree:\n{}", case.name, d.join("\n"));
            }
        }
        assert_eq!(std::fs::read(outside.join("secret")).unwrap(), b"secret");
    }
}
