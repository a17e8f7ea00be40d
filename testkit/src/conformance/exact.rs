//! Cases for diffs that must be exact: each one a change made through a container's
//! mounted view with ordinary syscalls, `diff` right after the unmount (no sync), and
//! the diff applied on the same parent must give the container's view back, or the
//! diff must be refused with one clear error, the same on every driver.

use std::ffi::OsStr;
use std::fs;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::{must_apply, names, read, set, set_mtime, with_view, Ctx, EntryMeta, TarBuilder};
use crate::tree::{CompareOptions, Tree};
use driver_core::error::{Cause, Error};
use driver_core::sys;

/// Applies `base` as layer `base` (once), runs `script` in a new container `id` over it,
/// unmounts and diffs at once. Returns the diff (or its error) and the view.
pub fn diff_of(ctx: &Ctx, base: &[u8], id: &str, script: impl FnOnce(&Path)) -> (Result<Vec<u8>, Error>, Tree) {
    if ctx.driver.get("base").is_err() {
        must_apply(ctx, "base", None, base);
    }
    ctx.driver.create(id, Some("base"), true).unwrap();
    let view = ctx.driver.mount(id).unwrap();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| script(&view)));
    ctx.driver.unmount(id).unwrap();
    r.unwrap_or_else(|p| std::panic::resume_unwind(p));
    // The view is read after the diff: reading it first would update atimes, and on
    // btrfs the inode updates then get committed, hiding a diff that misses them.
    let mut tar = Vec::new();
    let diff = ctx.driver.diff(id, &mut tar).map(|_| tar);
    (diff, with_view(ctx, id, |v| Tree::capture(v).unwrap()))
}

/// The diff applied on `base` as layer `<id>-replay` gives exactly `tree`.
pub fn assert_replays(ctx: &Ctx, id: &str, tar: &[u8], tree: &Tree) {
    let replay = format!("{id}-replay");
    must_apply(ctx, &replay, Some("base"), tar);
    let got = with_view(ctx, &replay, |v| Tree::capture(v).unwrap());
    let d = got.differences(tree, &CompareOptions::default());
    assert!(d.is_empty(), "{id}: the applied diff differs from the container's view:\n{}", d.join("\n"));
}

/// The diff must fail, refused, naming the layer, `path` and `what`.
fn assert_refused(r: Result<Vec<u8>, Error>, id: &str, path: &str, what: &str) {
    let e = r.err().unwrap_or_else(|| panic!("{id}: the diff of {path} must be refused"));
    assert!(matches!(e.cause, Cause::Refused(_)), "{id}: {e}");
    let msg = e.to_string();
    assert!(!msg.contains('\n'), "one line: {msg}");
    assert_eq!((e.layer.as_deref(), e.path.as_deref()), (Some(id), Some(Path::new(path))), "{id}: {msg}");
    // Cause::Refused carries its reason as words: no variant to match for what was refused.
    assert!(msg.contains(what), "{id}: the error says what {path} is: {msg}");
}

fn deep_base() -> Vec<u8> {
    TarBuilder::new()
        .dir("a")
        .file("a/x", b"x")
        .dir("a/b")
        .file("a/b/g", b"g")
        .dir("a/b/c")
        .file("a/b/c/file", b"file")
        .dir("d")
        .dir("d/sub")
        .file("d/sub/z", b"z")
        .dir("e")
        .file("e/keep", b"k")
        .build()
}

/// `rm -r a; mkdir -p a/b/c`: nothing of the old tree may come back below the new one
/// (on overlay only the top directory is opaque; its descendants have no lower either).
pub fn recreated_directory_hides_all_lower_descendants(ctx: &Ctx) {
    let (tar, tree) = diff_of(ctx, &deep_base(), "ctr", |v| {
        fs::remove_dir_all(v.join("a")).unwrap();
        fs::create_dir_all(v.join("a/b/c")).unwrap();
        fs::remove_dir_all(v.join("d")).unwrap();
        fs::create_dir_all(v.join("d/sub")).unwrap();
        fs::write(v.join("d/sub/new"), b"n").unwrap();
    });
    let tar = tar.unwrap();
    assert_replays(ctx, "ctr", &tar, &tree);
    with_view(ctx, "ctr-replay", |v| {
        assert_eq!(names(&v.join("a/b")), set(&["c"]));
        assert_eq!(names(&v.join("a/b/c")), set(&[]));
        assert_eq!(names(&v.join("d/sub")), set(&["new"]));
        assert_eq!(read(&v.join("e/keep")), b"k");
    });
}

/// A file the user names `.wh.foo` or `.wh..wh..opq` cannot be carried: applied, it
/// would delete `foo` or the whole directory. The diff is refused, naming the path.
pub fn whiteout_names_are_refused(ctx: &Ctx) {
    for (id, name) in [("plain", ".wh.x"), ("opq", ".wh..wh..opq"), ("dir", ".wh.dir")] {
        let (r, _) = diff_of(ctx, &deep_base(), id, |v| {
            if name == ".wh.dir" {
                fs::create_dir(v.join("e").join(name)).unwrap();
            } else {
                fs::write(v.join("a").join(name), b"mine").unwrap();
            }
        });
        let path = if name == ".wh.dir" { "e/.wh.dir".to_string() } else { format!("a/{name}") };
        assert_refused(r, id, &path, "whiteout");
    }
}

/// The overlayfs xattr namespaces (`trusted.overlay.*`, `user.overlay.*`) cannot go in
/// a layer (apply refuses them, overlay would read them as its own), and a 0/0
/// character device is a whiteout to overlayfs: a container that makes one gets a
/// refused diff on every driver (overlayfs itself refuses the mknod with EPERM).
pub fn overlay_reserved_things_are_refused(ctx: &Ctx) {
    for (id, name) in [("user", "user.overlay.mine"), ("trusted", "trusted.overlay.mine")] {
        let (r, _) = diff_of(ctx, &deep_base(), id, |v| {
            let c = std::ffi::CString::new(v.join("a/x").into_os_string().into_encoded_bytes()).unwrap();
            sys::set_xattr(sys::XattrTarget::NoFollow(&c), name, b"v").unwrap();
        });
        assert_refused(r, id, "a/x", name);
    }
    let mut made = true;
    let (r, _) = diff_of(ctx, &deep_base(), "dev", |v| {
        match nix::sys::stat::mknod(
            &v.join("a/dev"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
            0,
        ) {
            Ok(()) => {}
            // Linux 6.x overlayfs: mknod of a 0/0 character device gives EPERM.
            Err(nix::errno::Errno::EPERM) => made = false,
            Err(e) => panic!("mknod: {e}"),
        }
    });
    if made {
        assert_refused(r, "dev", "a/dev", "0/0 character device");
    } else {
        assert_eq!(ctx.driver.name(), "overlay", "only overlayfs refuses the mknod");
        r.unwrap();
    }
}

/// A hardlinked pair split by deleting one name and making it again with the same
/// content and mtime, and two files joined by a link, are changes: the applied diff
/// must have the container's link structure.
pub fn hardlink_split_and_join_are_carried(ctx: &Ctx) {
    let meta = EntryMeta { mtime: 1_600_000_000, ..Default::default() };
    let base = TarBuilder::new()
        .dir("h")
        .file_with("h/x", b"same", meta.clone())
        .hardlink("h/y", "h/x")
        .file_with("h/p", b"same", meta.clone())
        .file_with("h/q", b"same", meta)
        .build();
    let (tar, tree) = diff_of(ctx, &base, "ctr", |v| {
        let h = v.join("h");
        let t = fs::symlink_metadata(h.join("x")).unwrap();
        fs::remove_file(h.join("y")).unwrap();
        fs::write(h.join("y"), b"same").unwrap();
        set_mtime(&h.join("y"), t.mtime(), t.mtime_nsec());
        fs::remove_file(h.join("q")).unwrap();
        fs::hard_link(h.join("p"), h.join("q")).unwrap();
        set_mtime(&h, t.mtime(), t.mtime_nsec());
    });
    let tar = tar.unwrap();
    assert_replays(ctx, "ctr", &tar, &tree);
    with_view(ctx, "ctr-replay", |v| {
        let ino = |n: &str| fs::symlink_metadata(v.join("h").join(n)).unwrap().ino();
        assert_ne!(ino("x"), ino("y"), "x and y were split");
        assert_eq!(ino("p"), ino("q"), "p and q were joined");
    });
}

/// A legal tar whose whiteout sits in a directory whose absolute path is longer than
/// PATH_MAX applies on every driver (the engine walks by descriptor, never by path).
pub fn whiteout_deeper_than_path_max_applies(ctx: &Ctx) {
    let comp = "d".repeat(200);
    let deep: Vec<String> = (1..=20).map(|i| vec![comp.as_str(); i].join("/")).collect();
    let mut b = TarBuilder::new();
    for d in &deep {
        b.dir(d);
    }
    let last = deep.last().unwrap();
    b.file(&format!("{last}/f"), b"f").file(&format!("{last}/g"), b"g");
    must_apply(ctx, "base", None, &b.build());
    must_apply(ctx, "top", Some("base"), &TarBuilder::new().whiteout(&format!("{last}/f")).build());
    with_view(ctx, "top", |v| {
        let root = sys::open_dir(v).unwrap();
        let dir = sys::open_dir_in(root.as_fd(), Path::new(last)).unwrap();
        let mut got = sys::read_dir_names(dir.as_fd()).unwrap();
        got.sort();
        assert_eq!(got, vec![OsStr::from_bytes(b"g").to_os_string()]);
    });
}

/// What a write to one name of a lower hardlinked pair does, pinned per driver:
/// overlayfs mounted with `index=off` copies the written name up alone, so the pair
/// splits (the other name keeps the old content); vfs and btrfs keep the pair. Either
/// way the diff carries exactly what the view shows.
pub fn write_to_lower_hardlink(ctx: &Ctx) {
    let base = TarBuilder::new().dir("h").file("h/x", b"old").hardlink("h/y", "h/x").build();
    let (tar, tree) = diff_of(ctx, &base, "ctr", |v| {
        use std::io::Write;
        fs::OpenOptions::new().write(true).open(v.join("h/x")).unwrap().write_all(b"new").unwrap();
    });
    let kept = ctx.driver.name() != "overlay";
    with_view(ctx, "ctr", |v| {
        assert_eq!(read(&v.join("h/x")), b"new");
        let y = read(&v.join("h/y"));
        assert_eq!(y, if kept { b"new" } else { b"old" }, "{}: y", ctx.driver.name());
    });
    assert_replays(ctx, "ctr", &tar.unwrap(), &tree);
}

/// A container that removes or moves every name the image has at the top: the diff
/// must hide them all on every driver (overlayfs ignores an opaque marker on a layer's
/// root, so the root's deletions are whiteouts).
pub fn every_top_level_name_replaced(ctx: &Ctx) {
    let (tar, tree) = diff_of(ctx, &deep_base(), "ctr", |v| {
        fs::rename(v.join("a"), v.join("moved")).or_else(|_| fs::create_dir(v.join("moved"))).unwrap();
        fs::remove_dir_all(v.join("a")).ok();
        fs::remove_dir_all(v.join("d")).unwrap();
        fs::remove_dir_all(v.join("e")).unwrap();
        fs::write(v.join("new"), b"n").unwrap();
    });
    assert_replays(ctx, "ctr", &tar.unwrap(), &tree);
    with_view(ctx, "ctr-replay", |v| assert_eq!(names(v), set(&["moved", "new"])));
}

/// One name of a hardlinked pair replaced by a directory while the other name is
/// opened for writing and left unchanged (overlayfs copies it up): the diff holds the
/// new directory and nothing else, the same entries on every driver (property test,
/// seed 2638: overlay also wrote the unchanged name, taking the directory for a
/// second inode of the pair).
pub fn hardlink_partner_becomes_a_directory(ctx: &Ctx) {
    let meta = EntryMeta { mtime: 1_600_000_000, ..Default::default() };
    let base =
        TarBuilder::new().dir("h").dir("h/sub").file_with("h/sub/x", b"same", meta).hardlink("h/y", "h/sub/x").build();
    let (tar, tree) = diff_of(ctx, &base, "ctr", |v| {
        fs::remove_file(v.join("h/y")).unwrap();
        fs::create_dir(v.join("h/y")).unwrap();
        // An append of nothing: the file is opened for writing, its content and times
        // stay.
        use std::io::Write;
        fs::OpenOptions::new().append(true).open(v.join("h/sub/x")).unwrap().write_all(b"").unwrap();
    });
    let tar = tar.unwrap();
    let got: Vec<(String, char)> = super::tar_listing(&tar);
    let want: Vec<(String, char)> = [("h", '5'), ("h/y", '5')].iter().map(|(p, t)| (p.to_string(), *t)).collect();
    assert_eq!(got, want, "diff tar entries");
    assert_replays(ctx, "ctr", &tar, &tree);
}
