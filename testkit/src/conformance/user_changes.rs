//! Cases found by attacking the btrfs diff, run on every driver: changes made the way
//! users and kernels make them (in-place and mmap writes, renames of big trees, many
//! long hardlink names, paths beyond PATH_MAX), diffed at once with no sync, while
//! the view is still in use and right after unmount. The view is read only after the
//! diff: reading hundreds of files updates their atimes, and on btrfs that rewrites
//! the tree leaves a missed change shares with them, which would hide the miss.
//!
//! Each diff is also compared with the naive walk over the mounted views of the layer
//! and its parent (moby's `NaiveDiffDriver`): a driver's own diff (overlay's upper
//! directory, btrfs's generations) must list the same changes and write the same tar,
//! byte for byte.

use std::ffi::{CString, OsStr};
use std::fs;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::Path;

use nix::fcntl::OFlag;

use super::{
    diff_same_as_naive, mmap_write, move_tree, must_apply, open_deep, padding, set_mtime, tar_listing, with_view, Ctx,
    TarBuilder,
};
use crate::tree::{CompareOptions, Tree};
use driver_core::driver::{Change, ChangeKind, Driver};
use driver_core::sys;

mod copy_up;
pub use copy_up::*;

/// Runs `script` in container `ctr` over `base`; diffs while the view is in use, then
/// reads the view, unmounts and diffs again (the same tar); each diff is the naive
/// walk's. Returns the changes, the tar and the view.
fn diff_at_once(ctx: &Ctx, base: &[u8], script: impl FnOnce(&Path)) -> (Vec<Change>, Vec<u8>, Tree) {
    must_apply(ctx, "base", None, base);
    ctx.driver.create("ctr", Some("base"), true).unwrap();
    let v = ctx.driver.mount("ctr").unwrap();
    script(&v);
    let (changes, tar) = diff_same_as_naive(ctx, "ctr", "base");
    let tree = Tree::capture(&v).unwrap();
    ctx.driver.unmount("ctr").unwrap();
    let (_, again) = diff_same_as_naive(ctx, "ctr", "base");
    assert_eq!(tar_listing(&again), tar_listing(&tar), "the diff right after unmount");
    assert!(again == tar, "the diff right after unmount differs in bytes");
    (changes, tar, tree)
}

/// The diff applied on `base` gives `view`.
fn assert_replays(ctx: &Ctx, tar: &[u8], view: &Tree) {
    assert_replays_on(&*ctx.driver, "base", tar, view);
}

/// The diff `tar` applied on `parent` (as layer `replay`, removed again) gives `view`.
pub fn assert_replays_on(driver: &dyn Driver, parent: &str, tar: &[u8], view: &Tree) {
    driver.apply_diff("replay", Some(parent), &mut &tar[..]).unwrap_or_else(|e| panic!("apply replay: {e}"));
    let v = driver.mount("replay").unwrap_or_else(|e| panic!("mount replay: {e}"));
    let got = Tree::capture(&v);
    driver.unmount("replay").unwrap_or_else(|e| panic!("unmount replay: {e}"));
    let d = got.unwrap().differences(view, &CompareOptions::default());
    assert!(d.is_empty(), "the applied diff differs from the container's view:\n{}", d.join("\n"));
    driver.remove("replay").unwrap_or_else(|e| panic!("remove replay: {e}"));
}

/// Every `expected` (path, kind) is among `changes`.
pub fn assert_changes_include(changes: &[Change], expected: &[(&str, ChangeKind)]) {
    let lost: Vec<String> = expected
        .iter()
        .filter(|(p, k)| !changes.iter().any(|c| c.path == Path::new(p) && c.kind == *k))
        .map(|(p, k)| format!("{p} {k:?}"))
        .collect();
    let listed = if changes.len() <= 100 { format!("{changes:?}") } else { format!("{} changes", changes.len()) };
    assert!(lost.is_empty(), "the diff lost {lost:?}; it listed {listed}");
}

/// In-place writes, appends, mmap writes, truncate-extend, chmod, chown, setuid and
/// utime of a file and a directory, diffed at once: on btrfs these live as delayed
/// inode items and delalloc until the transaction commits (30 s), invisible to a
/// search of its trees.
pub fn uncommitted_inode_changes_are_in_the_diff(ctx: &Ctx) {
    let names = ["write", "append", "mmap", "extend", "chmod", "chown", "setuid", "utime"];
    let mut t = TarBuilder::new();
    padding(&mut t, "pad0", 300);
    t.dir("etc").dir("d").dir("d/sub").file("d/sub/keep", b"k");
    // Larger than an inline extent (2 KiB): a write to inline data edits the leaf at once.
    // Each in a leaf of its own (300 files between them): a change btrfs wrote to the
    // tree must not expose a neighbour it has not.
    for n in names {
        t.file(&format!("etc/{n}"), &[b'.'; 8192]);
        padding(&mut t, &format!("pad-{n}"), 300);
    }
    padding(&mut t, "pad1", 300);
    let (changes, tar, view) = diff_at_once(ctx, &t.build(), |v| {
        let e = v.join("etc");
        let rw = |n: &str| fs::OpenOptions::new().read(true).write(true).open(e.join(n)).unwrap();
        rw("write").write_all_at(b"XY", 3).unwrap();
        fs::OpenOptions::new().append(true).open(e.join("append")).unwrap().write_all(b", more").unwrap();
        mmap_write(&e.join("mmap"), 5, b"MM").unwrap();
        rw("extend").set_len(1 << 20).unwrap();
        fs::set_permissions(e.join("chmod"), fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::lchown(e.join("chown"), Some(1000), Some(1000)).unwrap();
        fs::set_permissions(e.join("setuid"), fs::Permissions::from_mode(0o4755)).unwrap();
        set_mtime(&e.join("utime"), 1_650_000_000, 5);
        set_mtime(&v.join("d/sub"), 1_650_000_001, 7);
    });
    let expected: Vec<String> = names.iter().map(|n| format!("etc/{n}")).chain(["d/sub".to_string()]).collect();
    let expected: Vec<(&str, ChangeKind)> = expected.iter().map(|p| (p.as_str(), ChangeKind::Modified)).collect();
    assert_changes_include(&changes, &expected);
    assert_replays(ctx, &tar, &view);
}

/// A renamed 310-entry directory, a swap of two directories, a move up to the root and
/// a rename over an empty directory: every child is in the diff at its new path.
pub fn renamed_directory_carries_all_its_children(ctx: &Ctx) {
    let mut t = TarBuilder::new();
    t.dir("big").dir("big/sub");
    for i in 0..300 {
        t.file(&format!("big/f{i:03}"), format!("file {i}").as_bytes());
    }
    for i in 0..9 {
        t.file(&format!("big/sub/g{i}"), b"g");
    }
    t.dir("a").file("a/only-in-a", b"a").dir("b").file("b/only-in-b", b"b");
    t.dir("deep").dir("deep/x").dir("deep/x/y").file("deep/x/y/z", b"z");
    t.dir("c").file("c/f", b"c").dir("empty");
    let (changes, tar, view) = diff_at_once(ctx, &t.build(), |v| {
        // As `mv` does: over an empty directory too, also where the driver makes it
        // copy (overlayfs without redirect_dir gives EXDEV for a lower directory).
        let mv = |a: &str, b: &str| {
            if fs::read_dir(v.join(b)).is_ok_and(|mut d| d.next().is_none()) {
                fs::remove_dir(v.join(b)).unwrap();
            }
            move_tree(&v.join(a), &v.join(b));
        };
        mv("big", "moved");
        mv("a", "tmp");
        mv("b", "a");
        mv("tmp", "b");
        mv("deep/x", "x");
        mv("c", "empty");
    });
    let added = changes.iter().filter(|c| c.path.starts_with("moved") && c.kind == ChangeKind::Added).count();
    assert_eq!(added, 1 + 300 + 1 + 9, "the renamed directory and everything in it are added");
    assert_changes_include(
        &changes,
        &[
            ("a/only-in-b", ChangeKind::Added),
            ("b/only-in-a", ChangeKind::Added),
            ("x/y/z", ChangeKind::Added),
            ("empty/f", ChangeKind::Added),
            ("big", ChangeKind::Deleted),
        ],
    );
    assert_replays(ctx, &tar, &view);
}

/// A file with 40 names of 134 bytes (more than 4 KiB of names, all btrfs's
/// INO_PATHS returns) changed, and 40 such new names of another: every name is in the
/// diff, or applying it would split the link.
pub fn forty_long_hardlink_names_are_all_carried(ctx: &Ctx) {
    let long = |tag: &str, i: usize| format!("links/{}{i:03}", tag.repeat(125));
    let mut t = TarBuilder::new();
    t.dir("links").file(&long("n", 0), b"shared").file("links/other", b"other");
    for i in 1..40 {
        t.hardlink(&long("n", i), &long("n", 0));
    }
    assert_eq!(long("n", 0).len(), 134);
    let (changes, tar, view) = diff_at_once(ctx, &t.build(), |v| {
        fs::set_permissions(v.join(long("n", 7)), fs::Permissions::from_mode(0o600)).unwrap();
        for i in 0..40 {
            fs::hard_link(v.join("links/other"), v.join(long("m", i))).unwrap();
        }
    });
    for tag in ["nnn", "mmm"] {
        let n = changes.iter().filter(|c| c.path.to_string_lossy().starts_with(&format!("links/{tag}"))).count();
        assert_eq!(n, 40, "every name starting {tag} is in the diff");
    }
    assert_replays(ctx, &tar, &view);
}

/// 16 directories of `len` bytes, joined.
fn deep_dir(len: usize) -> (Vec<String>, String) {
    let comps: Vec<String> = (0..16).map(|i| ((b'a' + i as u8) as char).to_string().repeat(len)).collect();
    let dir = comps.join("/");
    (comps, dir)
}

/// Changes deep below directories whose paths are PATH_MAX long: a file whose path is
/// 4,080 bytes written in place and one of 4,086 bytes made (both beyond PATH_MAX once
/// under the layer's folder), and a deletion in a directory whose absolute path exceeds
/// PATH_MAX. All are listed, the diff carries them (the tar writer reads every file from
/// its directory's descriptor), and applied on the parent it gives the view's files.
/// (A layer tar's paths stop at 4,095 bytes: apply refuses longer ones.)
pub fn changes_beyond_path_max_round_trip(ctx: &Ctx) {
    let (comps, dir) = deep_dir(250);
    let (changed, made) = ("f".repeat(64), "n".repeat(70));
    let (file, new) = (format!("{dir}/{changed}"), format!("{dir}/{made}"));
    assert_eq!((file.len(), new.len()), (4080, 4086));
    let beyond = format!("{dir}/{}", "z".repeat(70));
    let mut t = TarBuilder::new();
    for i in 1..=comps.len() {
        t.dir(&comps[..i].join("/"));
    }
    t.file(&file, b"deep").dir(&beyond).file(&format!("{beyond}/gone"), b"gone");
    t.file(&format!("{beyond}/kept"), b"kept");
    must_apply(ctx, "base", None, &t.build());
    ctx.driver.create("ctr", Some("base"), true).unwrap();
    let v = ctx.driver.mount("ctr").unwrap();
    assert!(v.as_os_str().len() + beyond.len() > libc::PATH_MAX as usize, "the directory is beyond PATH_MAX");
    let d = open_deep(&v, Path::new(&dir));
    let open = |name: &str, flags| fs::File::from(sys::open_at(d.as_fd(), OsStr::new(name), flags, 0o644).unwrap());
    open(&changed, OFlag::O_WRONLY).write_all_at(b"DE", 0).unwrap();
    open(&made, OFlag::O_WRONLY | OFlag::O_CREAT).write_all(b"made").unwrap();
    let b = open_deep(&v, Path::new(&beyond));
    let gone = CString::new("gone").unwrap();
    // SAFETY: a valid directory fd and a C string.
    assert_eq!(unsafe { libc::unlinkat(b.as_raw_fd(), gone.as_ptr(), 0) }, 0, "unlink");
    drop((d, b));
    ctx.driver.unmount("ctr").unwrap();
    let (changes, tar) = diff_same_as_naive(ctx, "ctr", "base");
    let gone_path = format!("{beyond}/gone");
    assert_changes_include(
        &changes,
        &[(&file, ChangeKind::Modified), (&new, ChangeKind::Added), (&gone_path, ChangeKind::Deleted)],
    );
    let names: Vec<String> = tar_listing(&tar).into_iter().map(|(n, _)| n).collect();
    for want in [&file, &new, &format!("{beyond}/.wh.gone")] {
        assert!(names.contains(want), "the diff holds ...{}: {names:?}", &want[want.len() - 20..]);
    }
    must_apply(ctx, "replay", Some("base"), &tar);
    let got = with_view(ctx, "replay", |r| {
        let read = |rel: &str, name: &str| {
            let d = open_deep(r, Path::new(rel));
            let f = sys::open_at(d.as_fd(), OsStr::new(name), OFlag::O_RDONLY, 0).ok()?;
            Some(std::io::read_to_string(fs::File::from(f)).unwrap())
        };
        (read(&dir, &changed), read(&dir, &made), read(&beyond, "gone"), read(&beyond, "kept"))
    });
    let want = (Some("DEep".to_string()), Some("made".to_string()), None, Some("kept".to_string()));
    assert_eq!(got, want, "the applied diff gives the view's files");
}

/// A layer holding a path beyond PATH_MAX (once under the driver's folder) is removed,
/// and nothing it leaves stops later commands.
pub fn layer_with_path_beyond_path_max_is_removed(ctx: &Ctx) {
    let (comps, dir) = deep_dir(252);
    let mut t = TarBuilder::new();
    for i in 1..=comps.len() {
        t.dir(&comps[..i].join("/"));
    }
    t.file(&format!("{dir}/file"), b"deep");
    must_apply(ctx, "deep", None, &t.build());
    ctx.driver.create("ctr", Some("deep"), true).unwrap();
    let v = ctx.driver.mount("ctr").unwrap();
    let d = open_deep(&v, Path::new(&dir));
    let f = sys::open_at(
        d.as_fd(),
        std::ffi::OsStr::from_bytes(b"made-in-ctr"),
        nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_CREAT,
        0o644,
    );
    drop(f.unwrap());
    drop(d);
    ctx.driver.unmount("ctr").unwrap();
    ctx.driver.remove("ctr").unwrap_or_else(|e| panic!("remove ctr: {e}"));
    ctx.driver.remove("deep").unwrap_or_else(|e| panic!("remove deep: {e}"));
    assert!(ctx.driver.list().unwrap().is_empty());
    let staging = ctx.root.join("staging");
    let left: Vec<_> = fs::read_dir(&staging).map(|d| d.map(|e| e.unwrap().file_name()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "staging left: {left:?}");
    // The layer can be made again and removed again.
    must_apply(ctx, "deep", None, &t.build());
    ctx.driver.remove("deep").unwrap();
}
