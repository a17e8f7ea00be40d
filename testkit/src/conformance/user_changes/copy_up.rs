//! Cases for copy-up and directory renames, the changes overlayfs's `metacopy` and
//! `redirect_dir` make cheap (and the layer directory no longer says plainly what
//! changed): metadata-only changes of big lower files, then writes into them; renames
//! of lower trees, of renamed directories, of a renamed directory's parent; names
//! reused or moved out after a rename; a hardlinked lower file chmodded. Made the way
//! users make them (`mv` falls back to copying where the driver gives EXDEV), diffed at
//! once with no sync, each diff compared with the naive walk of the mounted views
//! byte for byte and replayed on the parent.

use std::fs;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::Path;

use super::super::{mmap_write, move_tree, set_mtime, Ctx, TarBuilder};
use super::{assert_changes_include, assert_replays, diff_at_once};
use driver_core::driver::ChangeKind;

/// Content of a "big" lower file: larger than any inline or single-extent case, with
/// a pattern that differs per file and per block, so a diff reading the wrong file's
/// data shows.
fn big(seed: u8) -> Vec<u8> {
    (0..(3 << 20) + 123).map(|i: usize| (i / 4096) as u8 ^ (i as u8).wrapping_mul(31) ^ seed).collect()
}

/// A lower tree at `dir`: `files` files at its top, and nested directories two deep
/// with a few files each.
fn tree(t: &mut TarBuilder, dir: &str, files: usize) {
    t.dir(dir);
    for i in 0..files {
        t.file(&format!("{dir}/f{i:04}"), format!("{dir} file {i}").as_bytes());
    }
    for a in 0..3 {
        t.dir(&format!("{dir}/n{a}"));
        for b in 0..2 {
            let sub = format!("{dir}/n{a}/m{b}");
            t.dir(&sub);
            t.file(&format!("{sub}/leaf"), format!("{sub} leaf").as_bytes());
        }
        t.file(&format!("{dir}/n{a}/mid"), b"mid");
    }
}

/// chmod, chown, utime of big lower files (a metadata-only copy-up), and in others a
/// metadata change followed by a write in place or through mmap (the data copy-up of
/// a metacopy file): each file's data in the diff is its own.
pub fn metadata_changes_of_big_lower_files(ctx: &Ctx) {
    let names = ["chmod", "chown", "touch", "chmod-write", "chown-mmap", "touch-append"];
    let mut t = TarBuilder::new();
    t.dir("big");
    for (i, n) in names.iter().enumerate() {
        t.file(&format!("big/{n}"), &big(i as u8));
    }
    t.file("big/untouched", &big(99));
    let (changes, tar, view) = diff_at_once(ctx, &t.build(), |v| {
        let p = |n: &str| v.join("big").join(n);
        fs::set_permissions(p("chmod"), fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::lchown(p("chown"), Some(1000), Some(1001)).unwrap();
        set_mtime(&p("touch"), 1_700_000_000, 123);
        fs::set_permissions(p("chmod-write"), fs::Permissions::from_mode(0o640)).unwrap();
        fs::OpenOptions::new().write(true).open(p("chmod-write")).unwrap().write_all_at(b"WRITTEN", 1 << 20).unwrap();
        std::os::unix::fs::lchown(p("chown-mmap"), Some(7), Some(7)).unwrap();
        mmap_write(&p("chown-mmap"), 5000, b"MAPPED").unwrap();
        set_mtime(&p("touch-append"), 1_600_000_000, 0);
        use std::io::Write;
        fs::OpenOptions::new().append(true).open(p("touch-append")).unwrap().write_all(b"tail").unwrap();
    });
    let expected: Vec<String> = names.iter().map(|n| format!("big/{n}")).collect();
    let expected: Vec<(&str, ChangeKind)> = expected.iter().map(|p| (p.as_str(), ChangeKind::Modified)).collect();
    assert_changes_include(&changes, &expected);
    assert!(!changes.iter().any(|c| c.path == Path::new("big/untouched")), "an untouched file is no change");
    assert_replays(ctx, &tar, &view);
}

/// A lower directory of 400 files and nested directories renamed: the old name is
/// deleted, the new one and everything below it added.
pub fn renamed_lower_tree_with_nested_directories(ctx: &Ctx) {
    let mut t = TarBuilder::new();
    tree(&mut t, "src", 400);
    t.dir("keep").file("keep/k", b"k");
    let (changes, tar, view) = diff_at_once(ctx, &t.build(), |v| move_tree(&v.join("src"), &v.join("dst")));
    let added = changes.iter().filter(|c| c.path.starts_with("dst") && c.kind == ChangeKind::Added).count();
    assert_eq!(added, 1 + 400 + 3 * (1 + 2 * 2 + 1), "dst and everything below it are added: {changes:?}");
    assert_changes_include(&changes, &[("src", ChangeKind::Deleted)]);
    assert_replays(ctx, &tar, &view);
}

/// a → b → c, and a file changed inside between the renames.
pub fn rename_of_a_renamed_directory(ctx: &Ctx) {
    let mut t = TarBuilder::new();
    tree(&mut t, "a", 20);
    let (changes, tar, view) = diff_at_once(ctx, &t.build(), |v| {
        move_tree(&v.join("a"), &v.join("b"));
        fs::write(v.join("b/f0003"), b"changed in b").unwrap();
        move_tree(&v.join("b"), &v.join("c"));
    });
    assert_changes_include(
        &changes,
        &[
            ("a", ChangeKind::Deleted),
            ("c", ChangeKind::Added),
            ("c/f0003", ChangeKind::Added),
            ("c/n2/m1/leaf", ChangeKind::Added),
        ],
    );
    assert!(!changes.iter().any(|c| c.path.starts_with("b")), "b was only passed through: {changes:?}");
    assert_replays(ctx, &tar, &view);
}

/// p/child renamed to p/kid, then p renamed to q (a redirect inside a redirected
/// directory), then q/kid's nested directory renamed within it.
pub fn parent_renamed_after_its_child_was(ctx: &Ctx) {
    let mut t = TarBuilder::new();
    t.dir("p").file("p/top", b"top");
    tree(&mut t, "p/child", 10);
    let (changes, tar, view) = diff_at_once(ctx, &t.build(), |v| {
        move_tree(&v.join("p/child"), &v.join("p/kid"));
        move_tree(&v.join("p"), &v.join("q"));
        move_tree(&v.join("q/kid/n1"), &v.join("q/kid/n9"));
    });
    assert_changes_include(
        &changes,
        &[
            ("p", ChangeKind::Deleted),
            ("q/top", ChangeKind::Added),
            ("q/kid/f0009", ChangeKind::Added),
            ("q/kid/n9/m0/leaf", ChangeKind::Added),
            ("q/kid/n0/mid", ChangeKind::Added),
        ],
    );
    assert!(!changes.iter().any(|c| c.path.starts_with("q/kid/n1")), "{changes:?}");
    assert_replays(ctx, &tar, &view);
}

/// a renamed to b, then a made again holding a new file and a directory moved back
/// from b: the new a has nothing of the old one's.
pub fn new_directory_at_a_renamed_directorys_old_name(ctx: &Ctx) {
    let mut t = TarBuilder::new();
    tree(&mut t, "a", 15);
    let (changes, tar, view) = diff_at_once(ctx, &t.build(), |v| {
        move_tree(&v.join("a"), &v.join("b"));
        fs::create_dir(v.join("a")).unwrap();
        fs::write(v.join("a/fresh"), b"fresh").unwrap();
        move_tree(&v.join("b/n0"), &v.join("a/n0"));
    });
    assert_changes_include(
        &changes,
        &[("a/fresh", ChangeKind::Added), ("b/f0000", ChangeKind::Added), ("a/f0000", ChangeKind::Deleted)],
    );
    assert_replays(ctx, &tar, &view);
}

/// a renamed to b, then a file and a directory moved out of b to the root, and one
/// of b's files deleted.
pub fn file_moved_out_of_a_renamed_directory(ctx: &Ctx) {
    let mut t = TarBuilder::new();
    tree(&mut t, "a", 12);
    let (changes, tar, view) = diff_at_once(ctx, &t.build(), |v| {
        move_tree(&v.join("a"), &v.join("b"));
        fs::rename(v.join("b/f0005"), v.join("out")).unwrap();
        move_tree(&v.join("b/n2"), &v.join("n2"));
        fs::remove_file(v.join("b/f0006")).unwrap();
    });
    assert_changes_include(&changes, &[("out", ChangeKind::Added), ("n2/m1/leaf", ChangeKind::Added)]);
    for gone in ["b/f0005", "b/f0006", "b/n2"] {
        assert!(!changes.iter().any(|c| c.path == Path::new(gone)), "{gone} is not in the view: {changes:?}");
    }
    assert_replays(ctx, &tar, &view);
}

/// A lower file with three names chmodded through one (overlayfs copies up that name
/// alone: the link splits in the view), another group's file written through one name.
pub fn hardlinked_lower_file_chmodded(ctx: &Ctx) {
    let mut t = TarBuilder::new();
    t.dir("l").file("l/a", &big(1)).hardlink("l/b", "l/a").dir("m").hardlink("m/c", "l/a");
    t.file("l/w", b"written").hardlink("m/w2", "l/w");
    let (changes, tar, view) = diff_at_once(ctx, &t.build(), |v| {
        fs::set_permissions(v.join("l/b"), fs::Permissions::from_mode(0o600)).unwrap();
        fs::OpenOptions::new().write(true).open(v.join("m/w2")).unwrap().write_all_at(b"W", 0).unwrap();
    });
    assert_changes_include(&changes, &[("l/b", ChangeKind::Modified), ("m/w2", ChangeKind::Modified)]);
    let mode = view.entries.get(Path::new("l/b")).map(|e| e.mode & 0o7777);
    assert_eq!(mode, Some(0o600), "the chmodded name");
    assert_replays(ctx, &tar, &view);
}

/// d1 renamed to d2, then a lower directory x (and a lower file) moved into d2, and
/// d2 renamed again to d3.
pub fn lower_directory_moved_into_a_renamed_directory(ctx: &Ctx) {
    let mut t = TarBuilder::new();
    tree(&mut t, "d1", 8);
    tree(&mut t, "x", 8);
    t.file("loose", b"loose");
    let (changes, tar, view) = diff_at_once(ctx, &t.build(), |v| {
        move_tree(&v.join("d1"), &v.join("d2"));
        move_tree(&v.join("x"), &v.join("d2/x"));
        fs::rename(v.join("loose"), v.join("d2/loose")).unwrap();
        move_tree(&v.join("d2"), &v.join("d3"));
    });
    assert_changes_include(
        &changes,
        &[
            ("d1", ChangeKind::Deleted),
            ("x", ChangeKind::Deleted),
            ("loose", ChangeKind::Deleted),
            ("d3/x/n1/m1/leaf", ChangeKind::Added),
            ("d3/loose", ChangeKind::Added),
            ("d3/f0007", ChangeKind::Added),
        ],
    );
    assert_replays(ctx, &tar, &view);
}
