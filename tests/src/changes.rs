//! A base image and a scripted set of changes, shared by the commit, save and
//! inspection tests.

use std::fs::{self, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use strata_archive::tarbuild::TarBuilder;
use strata_testkit::hostile_images::Layout;

pub fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// A two-layer base image: files, a hardlink pair, a symlink, nested directories, and
/// a second layer that changes and deletes some of them.
pub fn base_layout(dir: &Path) -> Layout {
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let l1 = TarBuilder::new()
        .dir("etc")
        .file("etc/config", b"one=1\ntwo=2\n")
        .file("etc/hosts", b"127.0.0.1 localhost\n")
        .dir("usr")
        .dir("usr/lib")
        .file("usr/lib/big.bin", &big)
        .file("usr/lib/libx.so", b"lib x")
        .hardlink("usr/lib/libx.so.1", "usr/lib/libx.so")
        .symlink("usr/lib/current", "libx.so")
        .dir("var")
        .dir("var/cache")
        .file("var/cache/a", b"cache a")
        .file("var/cache/b", b"cache b")
        .dir("opt")
        .dir("opt/tree")
        .file("opt/tree/leaf", b"leaf")
        .build();
    let l2 = TarBuilder::new().dir("etc").file("etc/config", b"one=1\ntwo=22\n").whiteout("var/cache/b").build();
    Layout::new(dir, "base", &[gz(&l1), gz(&l2)])
}

/// The changes a user makes in a container, through its view.
pub fn change(root: &Path) {
    // Write in place (no truncate) and append: a copy-up on overlay.
    let mut f = OpenOptions::new().write(true).open(root.join("usr/lib/big.bin")).unwrap();
    f.seek(SeekFrom::Start(150_000)).unwrap();
    f.write_all(b"PATCHED").unwrap();
    drop(f);
    OpenOptions::new().append(true).open(root.join("etc/hosts")).unwrap().write_all(b"10.0.0.1 db\n").unwrap();
    // Deletes: a file of the lower layer, a whole tree.
    fs::remove_file(root.join("var/cache/a")).unwrap();
    fs::remove_dir_all(root.join("opt/tree")).unwrap();
    // Renames: a base file, and a new directory with content.
    fs::rename(root.join("etc/config"), root.join("etc/config.old")).unwrap();
    fs::create_dir_all(root.join("srv/new/deep")).unwrap();
    fs::write(root.join("srv/new/deep/file"), b"new file").unwrap();
    fs::rename(root.join("srv/new"), root.join("srv/renamed")).unwrap();
    // Hardlinks: to a base file (overlay copies it up first) and among new files.
    fs::hard_link(root.join("usr/lib/libx.so"), root.join("usr/lib/libx.so.2")).unwrap();
    fs::write(root.join("srv/data"), b"data").unwrap();
    fs::hard_link(root.join("srv/data"), root.join("srv/data.link")).unwrap();
    // A directory replaced by a file, a new symlink, a mode change.
    fs::remove_dir_all(root.join("var/cache")).unwrap();
    fs::write(root.join("var/cache"), b"now a file").unwrap();
    symlink("../etc/hosts", root.join("srv/hosts")).unwrap();
    fs::set_permissions(root.join("etc/hosts"), fs::Permissions::from_mode(0o600)).unwrap();
}
