//! overlay copies up metadata only by default where that is safe (issue 17 item 5): a
//! container's view mounts with `metacopy=on` when every layer below it holds no path
//! longer than the overlay module's `redirect_max` with its leading '/', so that the
//! absolute redirects overlayfs writes for `ln` and RENAME_EXCHANGE of a lower file
//! always fit (driver_overlay::features::metacopy_fits says why); over a chain with a
//! longer path it mounts with redirect_dir alone. Either way every change below
//! succeeds (coreutils chmod, chown, ln, mv, touch; RENAME_EXCHANGE; an mmap write),
//! lower paths of redirect_max-1 and redirect_max bytes with their '/' included
//! (generated, fixed seed), and the container's diff is byte for byte vfs's for the
//! same changes. Forced metacopy over the long path is what the default avoids: its
//! `ln` answers EXDEV.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use driver_core::Driver;
use driver_overlay::features::{probe, redirect_max, CopyUp};
use driver_overlay::{open_copying_up, OverlayDriver};
use driver_vfs::VfsDriver;
use strata_scratch::{privileged, require};
use strata_testkit::conformance::{mmap_write, tar_listing, TarBuilder, UnmountUnder};

const BIG: usize = 32 << 20;

/// A relative path of exactly `len` bytes starting with `top/`, its components of
/// generated lengths (letters and digits).
fn path_of(rng: &mut fastrand::Rng, top: &str, len: usize) -> String {
    let mut p = top.to_string();
    while p.len() < len {
        let left = len - p.len() - 1;
        let n = if left <= 200 { left } else { rng.usize(1..=100) };
        p.push('/');
        p.extend((0..n).map(|_| rng.alphanumeric().to_ascii_lowercase()));
    }
    assert_eq!(p.len(), len);
    p
}

/// The layers: `base` (a big file, a tree of 100 files, one at the limit inside it, and
/// when `too_long` a file whose path with its '/' is redirect_max + 1 bytes) and `mid`
/// (files at the limit in two directories). Returns the tars and the paths at the
/// limit, with their lengths: [lim0 max-2, lim0 max-1, lim1 max-1, lim1 max-2, tree
/// max-1].
fn layers(max: usize, too_long: bool) -> (Vec<u8>, Vec<u8>, Vec<String>, Option<String>) {
    let mut rng = fastrand::Rng::with_seed(17);
    let mut base = TarBuilder::new();
    base.dir("big").file("big/blob", &vec![7u8; BIG]).dir("sub").dir("tree");
    for i in 0..100 {
        base.file(&format!("tree/f{i}"), b"f");
    }
    // Lengths without the '/': max-2 and max-1 fit; max does not.
    let in_tree = path_of(&mut rng, "tree", max - 1);
    base.file(&in_tree, b"in the tree");
    let long = too_long.then(|| path_of(&mut rng, "long", max));
    if let Some(l) = &long {
        base.file(l, b"one byte over");
    }
    let mut mid = TarBuilder::new();
    let mut at_limit = Vec::new();
    for (top, lens) in [("lim0", [max - 2, max - 1]), ("lim1", [max - 1, max - 2])] {
        for len in lens {
            let p = path_of(&mut rng, top, len);
            mid.file(&p, format!("{len} bytes").as_bytes());
            at_limit.push(p);
        }
    }
    at_limit.push(in_tree);
    (base.build(), mid.build(), at_limit, long)
}

fn run(cmd: &str, args: &[&str], view: &Path) {
    let out = Command::new(cmd).args(args).current_dir(view).output().unwrap();
    assert!(out.status.success(), "{cmd} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn parent(p: &str) -> &str {
    p.rsplit_once('/').map_or(".", |(d, _)| d)
}

/// The user's changes in the view `v`, as relative paths from it.
fn change(v: &Path, at_limit: &[String], long: Option<&str>) {
    let mut dirs: Vec<String> = vec![".".into(), "big".into(), "sub".into()];
    run("chmod", &["600", "big/blob"], v);
    run("chown", &["1000:1000", "big/blob"], v);
    for (i, p) in at_limit.iter().map(String::as_str).chain(long).enumerate() {
        run("chmod", &["640", p], v);
        run("ln", &[p, &format!("{}/h{i}", parent(p))], v);
        dirs.push(parent(p).to_string());
    }
    // RENAME_EXCHANGE of two lower files in different directories (no tool does it
    // for a user before coreutils 9.5's `mv --exchange`).
    let (a, b) = (&at_limit[1], &at_limit[3]);
    nix::fcntl::renameat2(None, &v.join(a), None, &v.join(b), nix::fcntl::RenameFlags::RENAME_EXCHANGE)
        .unwrap_or_else(|e| panic!("RENAME_EXCHANGE {a} {b}: {e}"));
    if let Some(l) = long {
        nix::fcntl::renameat2(None, &v.join(l), None, &v.join(b), nix::fcntl::RenameFlags::RENAME_EXCHANGE)
            .unwrap_or_else(|e| panic!("RENAME_EXCHANGE {l} {b}: {e}"));
    }
    // A lower file moved to another directory.
    run("mv", &[&at_limit[0], "sub/"], v);
    // A lower directory renamed (in place, with redirect_dir) into another one, then a
    // file inside it linked, exchanged and written through a mapping.
    run("mv", &["tree", "sub/moved"], v);
    let inside = at_limit[4].replacen("tree", "sub/moved", 1);
    run("ln", &[&inside, "sub/moved/linked"], v);
    nix::fcntl::renameat2(None, &v.join(&inside), None, &v.join(b), nix::fcntl::RenameFlags::RENAME_EXCHANGE)
        .unwrap_or_else(|e| panic!("RENAME_EXCHANGE {inside} {b}: {e}"));
    mmap_write(&v.join(&inside), 2, b"MAPPED").unwrap();
    run("chmod", &["600", "sub/moved/f7"], v);
    dirs.extend(["sub/moved".to_string(), parent(&inside).to_string(), parent(b).to_string(), inside.clone()]);
    // The directories' times are the clock's: set them alike on both drivers.
    for d in dirs {
        let d = if d.starts_with("tree") { d.replacen("tree", "sub/moved", 1) } else { d };
        run("touch", &["-h", "-d", "@1700000000", &d], v);
    }
}

/// Applies the layers, makes container ctr and changes it; returns the diff.
fn diff_after_changes(d: &dyn Driver, base: &[u8], mid: &[u8], at_limit: &[String], long: Option<&str>) -> Vec<u8> {
    d.apply_diff("base", None, &mut &base[..]).unwrap();
    d.apply_diff("mid", Some("base"), &mut &mid[..]).unwrap();
    d.create("ctr", Some("mid"), true).unwrap();
    let v = d.mount("ctr").unwrap();
    change(&v, at_limit, long);
    d.unmount("ctr").unwrap();
    let mut tar = Vec::new();
    d.diff("ctr", &mut tar).unwrap();
    tar
}

fn extra(d: &OverlayDriver, id: &str, key: &str) -> Option<String> {
    d.store().get(id).unwrap().extra.get(key).map(|v| v.as_str().map_or(v.to_string(), String::from))
}

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    driver_core::sys::get_xattr(driver_core::sys::XattrTarget::NoFollow(&c), name).unwrap()
}

#[test]
fn metacopy_by_default_where_every_lower_path_fits_redirect_max() {
    if !privileged("overlay metacopy by default (mounts, trusted xattrs)") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let _guard = UnmountUnder(tmp.path().to_path_buf());
    let f = probe(tmp.path());
    let missing = (!f.metacopy_pair).then_some("a kernel that mounts overlay with metacopy=on and redirect_dir=on");
    if !require("overlay metacopy by default", missing) {
        return;
    }
    let max = redirect_max().expect("the overlay module's redirect_max") as usize;

    for too_long in [false, true] {
        let (base, mid, at_limit, long) = layers(max, too_long);
        let root = tmp.path().join(format!("too_long-{too_long}"));
        let vfs = VfsDriver::new(&root.join("vfs")).unwrap();
        let want = diff_after_changes(&vfs, &base, &mid, &at_limit, long.as_deref());
        let d = OverlayDriver::new(&root.join("overlay")).unwrap();
        let got = diff_after_changes(&d, &base, &mid, &at_limit, long.as_deref());

        assert_eq!(extra(&d, "base", "longest_path"), Some((if too_long { max } else { max - 1 }).to_string()));
        assert_eq!(extra(&d, "mid", "longest_path"), Some((max - 1).to_string()));
        let upper = root.join("overlay/layers/ctr/diff");
        let blob = fs::symlink_metadata(upper.join("big/blob")).unwrap();
        if too_long {
            assert_eq!(extra(&d, "ctr", "copy_up").as_deref(), Some("redirect_dir"));
            let why = extra(&d, "ctr", "copy_up_why").unwrap_or_default();
            assert!(why.contains("layer base") && why.contains(&format!("{max} bytes")), "{why}");
            assert!(xattr(&upper.join("big/blob"), "trusted.overlay.metacopy").is_none());
            assert_eq!(blob.len(), BIG as u64, "copied whole");
        } else {
            assert_eq!(extra(&d, "ctr", "copy_up").as_deref(), Some("metacopy+redirect_dir"));
            assert_eq!(extra(&d, "ctr", "copy_up_why"), None);
            assert!(xattr(&upper.join("big/blob"), "trusted.overlay.metacopy").is_some(), "a metacopy stub");
            // ext4 may give the xattrs a block of their own: 8 sectors, not the 65,536 of the data.
            assert!(blob.blocks() <= 8, "no data was copied up: {} sectors", blob.blocks());
            // The linked file at the limit carries the absolute redirect of its lower
            // path: redirect_max bytes with its '/', what overlayfs still takes.
            let linked = upper.join(&at_limit[2]);
            let redirect = xattr(&linked, "trusted.overlay.redirect").expect("a redirect for the link");
            assert_eq!(redirect, format!("/{}", at_limit[2]).into_bytes());
            assert_eq!(redirect.len(), max);
            // The file linked inside the moved directory (then exchanged to lim1's
            // name): overlayfs took the directory's own redirect for its part of the
            // path, so the file's is its lower path too, not its path in the view.
            let from_tree = xattr(&upper.join(&at_limit[3]), "trusted.overlay.redirect").expect("a redirect");
            assert_eq!(from_tree, format!("/{}", at_limit[4]).into_bytes());
        }
        assert_eq!(tar_listing(&got), tar_listing(&want), "too_long={too_long}: overlay's diff vs vfs's");
        assert!(got == want, "too_long={too_long}: overlay's and vfs's diff tars differ in bytes");
    }

    // What the default avoids: forced metacopy over the path one byte too long, `ln`
    // answers EXDEV (no tool falls back).
    let (base, mid, _, long) = layers(max, true);
    let d = open_copying_up(&tmp.path().join("forced"), CopyUp::Metacopy).unwrap();
    d.apply_diff("base", None, &mut &base[..]).unwrap();
    d.apply_diff("mid", Some("base"), &mut &mid[..]).unwrap();
    d.create("ctr", Some("mid"), true).unwrap();
    let v = d.mount("ctr").unwrap();
    let long = long.unwrap();
    let linked = fs::hard_link(v.join(&long), v.join("h"));
    assert_eq!(
        linked.map_err(|e| e.raw_os_error()),
        Err(Some(libc::EXDEV)),
        "ln of a path of {} bytes",
        long.len() + 1
    );
    d.unmount("ctr").unwrap();
}
