//! The scripted change set (a fixed series of changes made through a container's
//! view, with the changes and tar entries its diff must give), the helpers the
//! change-making cases share, and the cases that diff it.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{base_tar, diff_same_as_naive, must_apply, with_view, Ctx, EntryMeta, TarBuilder};
use crate::tree::{CompareOptions, Tree};
use driver_core::driver::{Change, ChangeKind, Driver};

/// The image the scripted changes run over.
pub fn scripted_base_tar() -> Vec<u8> {
    TarBuilder::new()
        .dir("bin")
        .file_with("bin/tool", b"#!/bin/sh\n", EntryMeta::mode(0o755))
        .dir("etc")
        .file("etc/appended", b"hello")
        .file("etc/truncated", b"some data")
        .file("etc/owned", b"owned")
        .file("etc/deleted", b"deleted")
        .file("etc/linked", b"linked")
        .file("etc/tagged", b"tagged")
        .file("etc/x", b"x")
        .dir("lib")
        .dir("opt")
        .dir("opt/tree")
        .dir("opt/tree/a")
        .file("opt/tree/a/b", b"b")
        .file("opt/tree/c", b"c")
        .file("opt/keep", b"keep")
        .dir("var")
        .dir("var/cache")
        .file("var/cache/x", b"x")
        .dir("srv")
        .dir("srv/old")
        .file_with("srv/old/f", b"f", EntryMeta::mode(0o600))
        .dir("srv/old/sub")
        .file("srv/old/sub/g", b"g")
        .build()
}

/// Moves a directory as `mv` does: rename, or (across layers on overlayfs without
/// redirect_dir, where rename gives EXDEV) copy keeping metadata, then delete.
pub(super) fn move_tree(from: &Path, to: &Path) {
    match fs::rename(from, to) {
        Ok(()) => return,
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {}
        Err(e) => panic!("rename {}: {e}", from.display()),
    }
    fn copy(from: &Path, to: &Path) {
        let md = fs::symlink_metadata(from).unwrap();
        if md.is_dir() {
            fs::create_dir(to).unwrap();
            for e in fs::read_dir(from).unwrap() {
                let e = e.unwrap();
                copy(&e.path(), &to.join(e.file_name()));
            }
        } else {
            fs::copy(from, to).unwrap();
        }
        std::os::unix::fs::lchown(to, Some(md.uid()), Some(md.gid())).unwrap();
        fs::set_permissions(to, fs::Permissions::from_mode(md.mode() & 0o7777)).unwrap();
        set_mtime(to, md.mtime(), md.mtime_nsec());
    }
    copy(from, to);
    fs::remove_dir_all(from).unwrap();
}

/// Sets the atime and mtime of `path` (not following a symlink); panics on failure.
pub fn set_mtime(path: &Path, secs: i64, nsecs: i64) {
    let t = nix::sys::time::TimeSpec::new(secs, nsecs);
    nix::sys::stat::utimensat(None, path, &t, &t, nix::sys::stat::UtimensatFlags::NoFollowSymlink).unwrap();
}

/// Writes `data` at `off` through a shared mapping of the file, as a program that mmaps
/// its data file does (no msync: the kernel writes the pages back when it likes). The
/// range must lie inside the file (a store past its end is SIGBUS).
pub fn mmap_write(path: &Path, off: u64, data: &[u8]) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let f = fs::OpenOptions::new().read(true).write(true).open(path)?;
    let end = off + data.len() as u64;
    if data.is_empty() || end > f.metadata()?.len() {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "mmap write outside the file"));
    }
    let start = off / 4096 * 4096;
    let len = (end - start) as usize;
    // SAFETY: a fresh shared mapping of pages inside the open file's size (checked
    // above), written inside its length and unmapped before returning.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            start as libc::off_t,
        );
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        std::ptr::copy_nonoverlapping(data.as_ptr(), (p as *mut u8).add((off - start) as usize), data.len());
        if libc::munmap(p, len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// `n` small files in directory `dir`: enough items that the image's tree has more than
/// one btree leaf, as real images do.
pub fn padding(t: &mut TarBuilder, dir: &str, n: usize) {
    t.dir(dir);
    for i in 0..n {
        t.file(&format!("{dir}/{i}"), b"padding");
    }
}

/// Opens the directory `rel` under `root` one component at a time (it may be longer
/// than PATH_MAX once joined to `root`).
pub fn open_deep(root: &Path, rel: &Path) -> std::os::fd::OwnedFd {
    use std::os::fd::AsFd;
    let mut fd = driver_core::sys::open_dir(root).unwrap();
    for c in rel.components() {
        fd = driver_core::sys::open_at(fd.as_fd(), c.as_os_str(), nix::fcntl::OFlag::O_DIRECTORY, 0)
            .unwrap_or_else(|e| panic!("open {c:?}: {e}"));
    }
    fd
}

/// The scripted set of changes in a container's view. Every time it leaves is pinned,
/// so two drivers given the same script hold identical trees.
pub fn scripted_changes(v: &Path) {
    use std::os::unix::fs::OpenOptionsExt;
    fs::write(v.join("new.txt"), b"new file").unwrap();
    fs::OpenOptions::new().append(true).open(v.join("etc/appended")).unwrap().write_all(b", world").unwrap();
    fs::OpenOptions::new().write(true).open(v.join("etc/truncated")).unwrap().set_len(0).unwrap();
    fs::set_permissions(v.join("bin/tool"), fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::lchown(v.join("etc/owned"), Some(1000), Some(1000)).unwrap();
    fs::remove_file(v.join("etc/deleted")).unwrap();
    fs::remove_dir_all(v.join("opt/tree")).unwrap();
    fs::remove_dir_all(v.join("var/cache")).unwrap();
    fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o644)
        .open(v.join("var/cache"))
        .unwrap()
        .write_all(b"now a file")
        .unwrap();
    move_tree(&v.join("srv/old"), &v.join("srv/new"));
    fs::hard_link(v.join("etc/linked"), v.join("etc/hard")).unwrap();
    std::os::unix::fs::symlink("../etc/x", v.join("lib/newlink")).unwrap();
    let c = std::ffi::CString::new(v.join("etc/tagged").into_os_string().into_encoded_bytes()).unwrap();
    driver_core::sys::set_xattr(driver_core::sys::XattrTarget::NoFollow(&c), "user.strata", b"tagged").unwrap();
    // Pin times: files first, then the directories that changed.
    for (i, p) in [
        "new.txt",
        "etc/appended",
        "etc/truncated",
        "var/cache",
        "etc/linked",
        "etc/tagged",
        "bin/tool",
        "etc/owned",
        "lib/newlink",
    ]
    .iter()
    .enumerate()
    {
        set_mtime(&v.join(p), 1_700_000_000 + i as i64, 123_456_789);
    }
    for (i, p) in ["etc", "opt", "var", "srv", "lib", "srv/new", "srv/new/sub", ""].iter().enumerate() {
        set_mtime(&v.join(p), 1_700_000_100 + i as i64, 987_654_321);
    }
}

fn change(path: &str, kind: ChangeKind) -> Change {
    Change { path: PathBuf::from(path), kind }
}

/// What `changes` must report for [`scripted_changes`].
pub fn scripted_expected_changes() -> Vec<Change> {
    use ChangeKind::*;
    let mut v = vec![
        change("new.txt", Added),
        change("etc/appended", Modified),
        change("etc/truncated", Modified),
        change("bin/tool", Modified),
        change("etc/owned", Modified),
        change("etc/deleted", Deleted),
        change("opt/tree", Deleted),
        change("var/cache", Modified),
        change("srv/old", Deleted),
        change("srv/new", Added),
        change("srv/new/f", Added),
        change("srv/new/sub", Added),
        change("srv/new/sub/g", Added),
        change("etc/hard", Added),
        change("etc/linked", Modified),
        change("lib/newlink", Added),
        change("etc/tagged", Modified),
        change("etc", Modified),
        change("opt", Modified),
        change("var", Modified),
        change("srv", Modified),
        change("lib", Modified),
    ];
    v.sort();
    v
}

/// The tar entries (name, type) a diff of [`scripted_changes`] must hold, in order.
pub fn scripted_expected_entries() -> Vec<(String, char)> {
    let mut v: Vec<(String, char)> = [
        ("bin/tool", '0'),
        ("etc", '5'),
        ("etc/.wh.deleted", '0'),
        ("etc/appended", '0'),
        ("etc/hard", '0'),
        ("etc/linked", '1'),
        ("etc/owned", '0'),
        ("etc/tagged", '0'),
        ("etc/truncated", '0'),
        ("lib", '5'),
        ("lib/newlink", '2'),
        ("new.txt", '0'),
        ("opt", '5'),
        ("opt/.wh.tree", '0'),
        ("srv", '5'),
        // srv keeps none of its old names (old moved to new): the canonical rule
        // says so with one opaque marker rather than a whiteout per name.
        ("srv/.wh..wh..opq", '0'),
        ("srv/new", '5'),
        ("srv/new/f", '0'),
        ("srv/new/sub", '5'),
        ("srv/new/sub/g", '0'),
        ("var", '5'),
        ("var/cache", '0'),
    ]
    .iter()
    .map(|(p, t)| (p.to_string(), *t))
    .collect();
    v.sort_by(|a, b| Path::new(&a.0).cmp(Path::new(&b.0)));
    v
}

/// (name, type flag) of every entry of a tar, in order.
pub fn tar_listing(tar: &[u8]) -> Vec<(String, char)> {
    let mut a = tar::Archive::new(tar);
    a.entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let name = String::from_utf8_lossy(&e.path_bytes()).trim_end_matches('/').to_string();
            (name, e.header().entry_type().as_byte() as char)
        })
        .collect()
}

/// Runs the script in a fresh container over the scripted base; returns the diff tar
/// and the container's tree. Leaves layers `base` and `ctr`.
pub fn scripted_diff(driver: &dyn Driver) -> (Vec<u8>, Tree) {
    driver.apply_diff("base", None, &mut &scripted_base_tar()[..]).unwrap();
    driver.create("ctr", Some("base"), true).unwrap();
    let view = driver.mount("ctr").unwrap();
    scripted_changes(&view);
    let tree = Tree::capture(&view).unwrap();
    driver.unmount("ctr").unwrap();
    let mut tar = Vec::new();
    let n = driver.diff("ctr", &mut tar).unwrap();
    assert_eq!(n as usize, tar.len(), "diff returns the bytes it wrote");
    (tar, tree)
}

pub fn diff_of_scripted_changes(ctx: &Ctx) {
    let (tar, tree) = scripted_diff(ctx.driver.as_ref());
    let (got, same) = diff_same_as_naive(ctx, "ctr", "base");
    assert!(same == tar, "the diff asked again differs in bytes");
    assert_eq!(got, scripted_expected_changes(), "changes()");
    assert_eq!(tar_listing(&tar), scripted_expected_entries(), "diff tar entries");
    // The diff applied on the same parent gives the same tree.
    must_apply(ctx, "replay", Some("base"), &tar);
    let replay = with_view(ctx, "replay", |v| Tree::capture(v).unwrap());
    let diffs = replay.differences(&tree, &CompareOptions::default());
    assert!(diffs.is_empty(), "replayed diff differs from the container:\n{}", diffs.join("\n"));
    // And the replayed layer's own diff is the same tar.
    let mut again = Vec::new();
    ctx.driver.diff("replay", &mut again).unwrap();
    assert_eq!(tar_listing(&again), tar_listing(&tar));
}

pub fn diff_of_applied_layer_replays(ctx: &Ctx) {
    must_apply(ctx, "base", None, &base_tar());
    let top = TarBuilder::new()
        .dir("a")
        .opaque("a")
        .file("a/only", b"o")
        .whiteout("b")
        .file_with(
            "etc/new",
            b"n",
            EntryMeta { mode: 0o600, uid: 5, gid: 6, mtime: 1_650_000_000, ..Default::default() },
        )
        .build();
    must_apply(ctx, "top", Some("base"), &top);
    let mut tar = Vec::new();
    ctx.driver.diff("top", &mut tar).unwrap();
    must_apply(ctx, "again", Some("base"), &tar);
    let (a, b) =
        (with_view(ctx, "top", |v| Tree::capture(v).unwrap()), with_view(ctx, "again", |v| Tree::capture(v).unwrap()));
    let d = a.differences(&b, &CompareOptions::default());
    assert!(d.is_empty(), "{}", d.join("\n"));
    // A layer over nothing diffs to all of its content.
    let mut full = Vec::new();
    ctx.driver.diff("base", &mut full).unwrap();
    let names: Vec<String> = tar_listing(&full).into_iter().map(|(n, _)| n).collect();
    assert!(names.contains(&"usr/bin/tool".to_string()) && names.contains(&"bin".to_string()), "{names:?}");
}
