//! The btrfs diff that follows generations, attacked the way users change files:
//! through the view with ordinary syscalls, and diffed right after, with no sync in
//! between. Each case checks that it gives exactly the naive walk's changes and tar,
//! and, where paths fit in PATH_MAX, that the diff applied on the parent gives back the
//! view. The binary shares one loop-mounted btrfs, released at exit even when a test
//! fails; each test has its own driver folder on it.

use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};

mod common;

use common::subvolumes_under;
use driver_btrfs::{ioctl, BtrfsDriver};
use driver_core::{Change, ChangeKind, Driver};
use strata_archive::diff::write_tar;
use strata_archive::tarbuild::TarBuilder;
use strata_scratch::FsKind;
use strata_testkit::conformance::{
    self, assert_changes_include, assert_replays_on, open_deep, padding, set_mtime, tar_listing, Backing,
};
use strata_testkit::tree::Tree;

/// A driver in its own folder `name` on the binary's one loop-mounted btrfs.
struct Fixture {
    d: BtrfsDriver,
    root: PathBuf,
}

const BACKING: Backing = Backing::Scratch(FsKind::Btrfs, 2 << 30);

fn fixture(name: &str) -> Option<Fixture> {
    let base = conformance::shared_base(BACKING)?;
    let root = base.join(name).join("btrfs");
    let d = BtrfsDriver::new(&root).unwrap();
    Some(Fixture { d, root })
}

fn apply(d: &BtrfsDriver, id: &str, parent: Option<&str>, tar: &[u8]) {
    d.apply_diff(id, parent, &mut &tar[..]).unwrap_or_else(|e| panic!("apply {id}: {e}"));
}

/// The layer's diff by following generations must be the naive walk's, change for
/// change and byte for byte; returns the tar.
fn assert_same_as_naive(d: &BtrfsDriver, id: &str) -> Vec<u8> {
    let follow = d.follow(id, d.reserved()).unwrap();
    let naive = d.naive(id, d.reserved()).unwrap();
    assert_eq!(follow.changes, naive.changes, "changes: following generations vs the naive walk");
    let (mut a, mut b) = (Vec::new(), Vec::new());
    write_tar(id, follow.entries, &follow.reserved, &mut a).unwrap();
    write_tar(id, naive.entries, &naive.reserved, &mut b).unwrap();
    assert_eq!(tar_listing(&a), tar_listing(&b));
    assert!(a == b, "the two tars differ in bytes");
    let mut public = Vec::new();
    d.diff(id, &mut public).unwrap();
    assert!(public == a, "diff() is the tar of following generations");
    a
}

/// Diffs the mounted container `ctr` (changes, and the tar, which must be the naive
/// walk's), then captures its view and unmounts it, and diffs it again: the same tar.
/// The view is read after the diff: reading hundreds of files updates their atimes, and
/// that many delayed inode items are written to the tree in the background, rewriting
/// the leaves they share with the inodes a bug would miss.
fn diff_then_unmount(d: &BtrfsDriver, view: &Path) -> (Vec<Change>, Vec<u8>, Tree) {
    let changes = d.changes("ctr").unwrap();
    let tar = assert_same_as_naive(d, "ctr");
    let tree = Tree::capture(view).unwrap();
    d.unmount("ctr").unwrap();
    assert!(assert_same_as_naive(d, "ctr") == tar, "the diff right after unmount is the same");
    (changes, tar, tree)
}

// 3. Subvolumes made inside a container, and snapshots made into it mid-write.
#[test]
fn nested_subvolumes_are_in_the_diff() {
    let Some(f) = fixture("nested") else { return };
    let d = &f.d;
    let mut t = TarBuilder::new();
    t.dir("opt").dir("srv").dir("busy").file("busy/0", b"0").file("srv/keep", b"keep");
    for i in 0..50 {
        t.file(&format!("srv/f{i}"), b"lower");
    }
    apply(d, "base", None, &t.build());
    d.create("ctr", Some("base"), true).unwrap();
    let v = d.mount("ctr").unwrap();
    // Snapshots made while another thread writes into the container.
    let writer = {
        let v = v.clone();
        std::thread::spawn(move || {
            for i in 0..400 {
                fs::write(v.join(format!("busy/{}", i % 40)), format!("write {i}")).unwrap();
                fs::OpenOptions::new().append(true).open(v.join("srv/keep")).unwrap().write_all(b"+").unwrap();
            }
        })
    };
    let base_view = d.mount("base").unwrap();
    let root = ioctl_dir(&v);
    ioctl::snapshot(ioctl_dir(&v).as_fd(), ioctl_dir(&v.join("srv")).as_fd(), OsStr::new("self-snap"), false).unwrap();
    ioctl::snapshot(ioctl_dir(&base_view).as_fd(), root.as_fd(), OsStr::new("image-snap"), false).unwrap();
    writer.join().unwrap();
    d.unmount("base").unwrap();
    // Each subvolume made after the snapshot that would hold it: a snapshot of a subvolume that holds another
    // shows an empty placeholder directory there, whose mtime is the moment the kernel
    // made its in-memory inode (Linux 6.18: it changes from one read to the next).
    let opt = ioctl_dir(&v.join("opt"));
    ioctl::create_subvolume(opt.as_fd(), OsStr::new("sub")).unwrap();
    fs::write(v.join("opt/sub/data"), b"in a subvolume").unwrap();
    fs::create_dir(v.join("opt/sub/dir")).unwrap();
    fs::write(v.join("opt/sub/dir/more"), b"more").unwrap();
    ioctl::create_subvolume(ioctl_dir(&v.join("opt/sub/dir")).as_fd(), OsStr::new("inner")).unwrap();
    fs::write(v.join("opt/sub/dir/inner/deepest"), b"deepest").unwrap();
    fs::write(v.join("image-snap/srv/f3"), b"changed in the snapshot").unwrap();
    let (changes, tar, view) = diff_then_unmount(d, &v);
    assert_changes_include(
        &changes,
        &[
            ("opt/sub", ChangeKind::Added),
            ("opt/sub/data", ChangeKind::Added),
            ("opt/sub/dir/more", ChangeKind::Added),
            ("opt/sub/dir/inner/deepest", ChangeKind::Added),
            ("image-snap/srv/f3", ChangeKind::Added),
            ("image-snap/srv/f49", ChangeKind::Added),
            ("srv/self-snap/srv/f49", ChangeKind::Added),
        ],
    );
    assert_replays_on(d, "base", &tar, &view);
    // Removing the container removes the subvolumes made in it.
    d.remove("ctr").unwrap();
    d.remove("base").unwrap();
    let left = subvolumes_under(&f.root);
    assert!(left.is_empty(), "subvolumes left: {left:?}");
}

fn ioctl_dir(path: &Path) -> OwnedFd {
    driver_core::sys::open_dir(path).unwrap()
}

/// A directory name of `len` bytes.
fn long_name(tag: char, len: usize) -> String {
    tag.to_string().repeat(len)
}

// 5. Removing a layer that holds a path near PATH_MAX.
#[test]
fn layers_with_deep_paths_are_removed() {
    let Some(f) = fixture("rm-deep") else { return };
    let root = f.root.clone();
    let d = &f.d;
    // A 4,047-byte directory: beyond PATH_MAX once under the driver's folder.
    let comps: Vec<String> = (0..16).map(|i| long_name((b'a' + i as u8) as char, 252)).collect();
    let dir = comps.join("/");
    let mut t = TarBuilder::new();
    for i in 1..=comps.len() {
        t.dir(&comps[..i].join("/"));
    }
    t.file(&format!("{dir}/file"), b"deep");
    apply(d, "deep", None, &t.build());
    d.create("ctr", Some("deep"), true).unwrap();
    let v = d.mount("ctr").unwrap();
    // A subvolume at the bottom, beyond PATH_MAX.
    ioctl::create_subvolume(open_deep(&v, Path::new(&dir)).as_fd(), OsStr::new("nested")).unwrap();
    d.unmount("ctr").unwrap();
    d.remove("ctr").unwrap_or_else(|e| panic!("remove ctr: {e}"));
    d.remove("deep").unwrap_or_else(|e| panic!("remove deep: {e}"));
    assert!(d.list().unwrap().is_empty());
    let again = BtrfsDriver::new(&root).unwrap_or_else(|e| panic!("the store opens after the removals: {e}"));
    assert!(again.list().unwrap().is_empty());
    let staging: Vec<_> = fs::read_dir(root.join("staging")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(staging.is_empty(), "staging left: {staging:?}");
    assert!(subvolumes_under(&root).is_empty());
}

#[test]
fn a_renamed_tree_changed_in_place() {
    // A renamed directory whose children then change in place: both the rename and
    // the uncommitted writes must show.
    let Some(f) = fixture("renamed-changed") else { return };
    let d = &f.d;
    let mut t = TarBuilder::new();
    t.dir("src").dir("src/lib");
    for i in 0..40 {
        t.file(&format!("src/lib/m{i}"), b"module");
    }
    apply(d, "base", None, &t.build());
    d.create("ctr", Some("base"), true).unwrap();
    let v = d.mount("ctr").unwrap();
    fs::rename(v.join("src"), v.join("dst")).unwrap();
    fs::OpenOptions::new().write(true).open(v.join("dst/lib/m3")).unwrap().write_all_at(b"M", 0).unwrap();
    fs::set_permissions(v.join("dst/lib/m4"), fs::Permissions::from_mode(0o700)).unwrap();
    let (changes, tar, view) = diff_then_unmount(d, &v);
    assert!(changes.iter().any(|c| c.path == Path::new("dst/lib/m4")));
    assert_replays_on(d, "base", &tar, &view);
}

// 6. Link structure around moved directories: a name outside a moved tree that shares
// an inode with a file inside it, and a swap that moves one name of a linked pair.
#[test]
fn links_into_moved_directories_are_kept() {
    let Some(f) = fixture("moved-links") else { return };
    let d = &f.d;
    let mut t = TarBuilder::new();
    // Padding between a renamed directory's own items and its files' (inode numbers
    // follow the tar's order), so the search returns only the directory.
    t.dir("tree").dir("tree/sub");
    padding(&mut t, "tree/pad", 300);
    t.file("tree/sub/f", b"linked from outside").hardlink("outside", "tree/sub/f");
    padding(&mut t, "pad1", 300);
    t.dir("a").dir("b");
    padding(&mut t, "pad", 300);
    t.file("a/same", b"a's").hardlink("elsewhere", "a/same").file("b/same", b"b's");
    padding(&mut t, "pad2", 300);
    // Split by re-creating one name with the same content and mtime, and joined.
    t.file("pair1", b"pair").hardlink("pair2", "pair1").file("x", b"twin").file("y", b"twin");
    apply(d, "base", None, &t.build());
    d.create("ctr", Some("base"), true).unwrap();
    let v = d.mount("ctr").unwrap();
    fs::rename(v.join("tree"), v.join("moved")).unwrap();
    fs::rename(v.join("a"), v.join("tmp")).unwrap();
    fs::rename(v.join("b"), v.join("a")).unwrap();
    fs::rename(v.join("tmp"), v.join("b")).unwrap();
    fs::remove_file(v.join("pair2")).unwrap();
    fs::write(v.join("pair2"), b"pair").unwrap();
    set_mtime(&v.join("pair2"), 1_600_000_000, 0);
    fs::remove_file(v.join("y")).unwrap();
    fs::hard_link(v.join("x"), v.join("y")).unwrap();
    let (changes, tar, view) = diff_then_unmount(d, &v);
    assert_changes_include(
        &changes,
        &[
            ("outside", ChangeKind::Modified),
            ("elsewhere", ChangeKind::Modified),
            ("pair1", ChangeKind::Modified),
            ("pair2", ChangeKind::Modified),
            ("y", ChangeKind::Modified),
        ],
    );
    assert_replays_on(d, "base", &tar, &view);
}

// A container used as a parent and changed after its child was made: the child's
// tree says nothing of that, so the whole parent is compared.
#[test]
fn a_parent_changed_after_the_snapshot() {
    let Some(f) = fixture("changed-parent") else { return };
    let d = &f.d;
    let mut t = TarBuilder::new();
    padding(&mut t, "pad", 300);
    t.file("kept", b"k").file("gone", b"g").file("chmod", b"c");
    padding(&mut t, "pad2", 300);
    apply(d, "base", None, &t.build());
    d.create("outer", Some("base"), true).unwrap();
    d.create("ctr", Some("outer"), true).unwrap();
    let v = d.mount("outer").unwrap();
    fs::remove_file(v.join("gone")).unwrap();
    fs::write(v.join("new"), b"n").unwrap();
    fs::set_permissions(v.join("chmod"), fs::Permissions::from_mode(0o600)).unwrap();
    d.unmount("outer").unwrap();
    let changes = d.changes("ctr").unwrap();
    assert_changes_include(&changes, &[("gone", ChangeKind::Added), ("new", ChangeKind::Deleted)]);
    assert_same_as_naive(d, "ctr");
}
