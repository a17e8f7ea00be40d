//! Where the kernel takes `metacopy=on` with `redirect_dir=on` (forced here; the
//! default where the lower paths fit, see tests/tests/metacopy_default.rs), a
//! container's chmod of a big lower file copies up its metadata only and a lower
//! directory renames in place (no EXDEV); with redirect_dir alone the rename is in
//! place and the file copied whole; with both off the rename is EXDEV. Each layer records
//! how its view was mounted, and its diff is the naive walk's. (The conformance suite,
//! run by overlay with each, checks the diffs of many more changes.)

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use driver_core::driver::{ChangeKind, Driver};
use driver_core::sys::{self, XattrTarget};
use driver_overlay::features::{probe, CopyUp};
use driver_overlay::{open_copying_up, OverlayDriver};
use strata_archive::diff::{naive_diff, write_tar};
use strata_archive::tarbuild::TarBuilder;
use strata_testkit::conformance::UnmountUnder;

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    sys::get_xattr(XattrTarget::NoFollow(&c), name).unwrap()
}

/// The copy_up record in the layer's metadata file.
fn recorded(root: &Path, id: &str) -> String {
    let meta: serde_json::Value =
        serde_json::from_slice(&fs::read(root.join("meta").join(format!("{id}.json"))).unwrap()).unwrap();
    let find =
        |v: &serde_json::Value| v.get("copy_up").or_else(|| v.get("extra").and_then(|e| e.get("copy_up"))).cloned();
    find(&meta).and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
}

/// The base: a 32 MiB file and a directory of 1,000 files.
fn base() -> Vec<u8> {
    let mut t = TarBuilder::new();
    t.dir("big").file("big/blob", &vec![7u8; 32 << 20]).dir("tree");
    for i in 0..1000 {
        t.file(&format!("tree/f{i}"), b"f");
    }
    t.build()
}

/// chmod of big/blob and rename of tree in container ctr; returns the rename's result
/// (Err = the errno) and the driver.
fn run(root: &Path, copy_up: CopyUp) -> (Result<(), i32>, OverlayDriver) {
    let d = open_copying_up(root, copy_up).unwrap();
    d.apply_diff("base", None, &mut &base()[..]).unwrap();
    d.create("ctr", Some("base"), true).unwrap();
    let v = d.mount("ctr").unwrap();
    fs::set_permissions(v.join("big/blob"), fs::Permissions::from_mode(0o600)).unwrap();
    let renamed = fs::rename(v.join("tree"), v.join("moved")).map_err(|e| e.raw_os_error().unwrap_or(0));
    (renamed, d)
}

/// The driver's diff of `id` (over `parent`) is the naive walk's over both views.
fn assert_diff_is_naive(d: &OverlayDriver, id: &str, parent: &str) {
    let mut tar = Vec::new();
    d.diff(id, &mut tar).unwrap();
    let (v, b) = (d.mount(id).unwrap(), d.mount(parent).unwrap());
    let naive = naive_diff(id, &v, Some(&b), d.reserved()).unwrap();
    let mut want = Vec::new();
    write_tar(id, naive.entries, &naive.reserved, &mut want).unwrap();
    d.unmount(parent).unwrap();
    d.unmount(id).unwrap();
    assert!(tar == want, "the diff of {id} is not the naive walk's");
}

#[test]
fn metacopy_and_redirects_where_the_kernel_has_them() {
    if !strata_scratch::privileged("overlay copy-up (mounts, trusted xattrs)") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let _guard = UnmountUnder(tmp.path().to_path_buf());
    let features = probe(tmp.path());
    let missing = (!features.metacopy_pair).then(|| {
        let why = features.metacopy_pair_error.as_deref().unwrap_or("refused");
        format!("a kernel that mounts overlay with metacopy=on and redirect_dir=on ({why})")
    });
    if !strata_scratch::require("overlay copy-up with metacopy and redirect_dir", missing.as_deref()) {
        return;
    }

    let root = tmp.path().join("metacopy");
    let (renamed, d) = run(&root, CopyUp::Metacopy);
    assert_eq!(renamed, Ok(()), "a lower directory renames in place");
    let upper = root.join("layers/ctr/diff");
    let stub = upper.join("big/blob");
    assert!(xattr(&stub, "trusted.overlay.metacopy").is_some(), "the chmod'd file is a metacopy stub");
    // ext4 may give the xattrs a block of their own: 8 sectors, not the 65,536 of the data.
    let blocks = fs::symlink_metadata(&stub).unwrap().blocks();
    assert!(blocks <= 8, "no data was copied up: {blocks} sectors");
    assert!(xattr(&upper.join("moved"), "trusted.overlay.redirect").is_some(), "the renamed directory redirects");
    assert_eq!(fs::read_dir(upper.join("moved")).unwrap().count(), 0, "no file of the tree was copied");
    assert_eq!(recorded(&root, "ctr"), "metacopy+redirect_dir");
    let changes = d.changes("ctr").unwrap();
    assert!(changes.iter().any(|c| c.path == Path::new("big/blob") && c.kind == ChangeKind::Modified));
    assert!(changes.iter().any(|c| c.path == Path::new("tree") && c.kind == ChangeKind::Deleted));
    let moved = changes.iter().filter(|c| c.path.starts_with("moved") && c.kind == ChangeKind::Added).count();
    assert_eq!(moved, 1001, "the renamed directory and its 1,000 files");
    assert_diff_is_naive(&d, "ctr", "base");
    d.unmount("ctr").unwrap();
    assert_diff_is_naive(&d, "ctr", "base");

    // A commit diffs the container into a tar (no redirect or stub leaves it), but a
    // layer made over the container has its upper as a lower: the kernel follows the
    // redirect and the stub's data there, since every view is mounted with both.
    d.create("over", Some("ctr"), true).unwrap();
    let v = d.mount("over").unwrap();
    assert_eq!(fs::read_dir(v.join("moved")).unwrap().count(), 1000, "the renamed tree, through a lower redirect");
    assert!(!v.join("tree").exists());
    let blob = fs::read(v.join("big/blob")).unwrap();
    assert!(blob.len() == 32 << 20 && blob.iter().all(|&b| b == 7), "the stub's data, from below it");
    assert_eq!(fs::metadata(v.join("big/blob")).unwrap().mode() & 0o777, 0o600);
    fs::rename(v.join("moved"), v.join("again")).unwrap();
    d.unmount("over").unwrap();
    assert_diff_is_naive(&d, "over", "ctr");

    // The same store opened by a driver asked for full copy-up (STRATA_OVERLAY_COPY_UP
    // changed between two runs): the container's view still follows its stub and its
    // redirect, as recorded, instead of EPERM on the stub and an empty renamed tree.
    drop(d);
    let d = open_copying_up(&root, CopyUp::Full).unwrap();
    let v = d.mount("ctr").unwrap();
    let blob = fs::read(v.join("big/blob")).unwrap();
    assert!(blob.len() == 32 << 20 && blob.iter().all(|&b| b == 7), "the stub's data, read by a full driver");
    assert_eq!(fs::read_dir(v.join("moved")).unwrap().count(), 1000, "the renamed tree, read by a full driver");
    d.unmount("ctr").unwrap();
    assert_eq!(recorded(&root, "ctr"), "metacopy+redirect_dir", "the record stays");

    // The default: redirects only (the file is copied whole), or both off.
    for (copy_up, rename) in [(CopyUp::Redirect, Ok(())), (CopyUp::Full, Err(libc::EXDEV))] {
        let root = tmp.path().join(copy_up.name());
        let (renamed, d) = run(&root, copy_up);
        assert_eq!(renamed, rename, "{copy_up:?}: a lower directory renames in place only with redirect_dir");
        let stub = root.join("layers/ctr/diff/big/blob");
        assert!(xattr(&stub, "trusted.overlay.metacopy").is_none());
        assert_eq!(fs::metadata(&stub).unwrap().len(), 32 << 20);
        assert_eq!(recorded(&root, "ctr"), copy_up.name());
        d.unmount("ctr").unwrap();
        assert_diff_is_naive(&d, "ctr", "base");
    }
}
