//! `layer which` and `layer explain` on every driver, for the four cases a lesson shows:
//! a file from the base layer, a copied-up file, a whited-out file and an opaque
//! directory (made by an image layer and by a user's `rm -rf` + `mkdir` in a container).
//! Each driver stores the same deletion its own way: overlay as a 0/0 character device
//! or an opaque directory in the layer's `diff/`, vfs as a file missing from a full
//! copy, btrfs as a file missing from a snapshot that shares the rest of its extents.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use serde_json::Value;
use strata_archive::tarbuild::TarBuilder;
use strata_testkit::hostile_images::Layout;
use strata_tests::changes::gz;
use strata_tests::{on_every_driver, Strata};

on_every_driver!(
    which_and_explain_show_how_each_driver_stores_a_change,
    which_follows_symlinked_directories_as_the_container_does
);

fn bytes(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed)).collect()
}

fn json(s: &Strata, args: &[&str]) -> Value {
    let args: Vec<&str> = args.iter().copied().chain(["--json"]).collect();
    serde_json::from_str(&s.ok(&args)).unwrap()
}

/// The entry of the layer at `i` (top first) in `which --json`.
fn holds(w: &Value, i: usize) -> (&str, Option<&str>, Option<&str>) {
    let l = &w["layers"][i];
    (l["holds"].as_str().unwrap(), l["how"].as_str(), l["at"].as_str())
}

fn which_and_explain_show_how_each_driver_stores_a_change(s: &Strata) {
    let tmp = tempfile::tempdir().unwrap();
    // l1: the base; l2 replaces /over, deletes /wo and makes /opq opaque.
    let l1 = TarBuilder::new()
        .file("base", &bytes(3000, 1))
        .file("up", &bytes(256 * 1024, 2))
        .file("over", &bytes(10, 3))
        .file("wo", &bytes(10, 4))
        .file("gone", &bytes(10, 5))
        .dir("opq")
        .file("opq/x", &bytes(10, 6))
        .dir("d")
        .file("d/f", &bytes(10, 7))
        .build();
    let l2 =
        TarBuilder::new().file("over", &bytes(20, 8)).whiteout("wo").opaque("opq").file("opq/y", &bytes(5, 9)).build();
    let layout = Layout::new(&tmp.path().join("layout"), "t", &[gz(&l1), gz(&l2)]);
    let top = s.ok(&["image", "unpack", &format!("{}:t", layout.dir.display()), "--name", "t"]).trim().to_string();
    s.ok(&["container", "create", "c", "--image", "t"]);
    let mnt = s.ok(&["layer", "mount", "c"]).trim().to_string();
    assert!(!mnt.is_empty());
    let view = Path::new(&mnt);
    // As a user does: append to a lower file, delete one, replace a directory.
    let mut f = fs::OpenOptions::new().append(true).open(view.join("up")).unwrap();
    std::io::Write::write_all(&mut f, b"!").unwrap();
    drop(f);
    fs::remove_file(view.join("gone")).unwrap();
    fs::remove_dir_all(view.join("d")).unwrap();
    fs::create_dir(view.join("d")).unwrap();
    s.ok(&["layer", "unmount", "c"]);
    let overlay = s.driver == "overlay";

    // A file from the base: shown by the bottom layer, untouched above.
    let w = json(s, &["layer", "which", "c", "/base"]);
    assert_eq!(w["version"], 1);
    assert_eq!(w["present"], true);
    let ids: Vec<&str> = w["layers"].as_array().unwrap().iter().map(|l| l["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 3, "{w}");
    assert_eq!((ids[0], ids[1]), ("c", top.as_str()));
    assert_eq!(w["provided_by"], ids[2]);
    assert_eq!(w["copied_up"], Value::Null);
    assert_eq!(holds(&w, 0).0, "nothing");
    assert_eq!(holds(&w, 1).0, "nothing");
    assert_eq!(holds(&w, 2).0, "version");
    assert_eq!(w["layers"][2]["shown"], true);

    // A file an image layer replaced: the older version stays listed below.
    let w = json(s, &["layer", "which", "c", "over"]);
    assert_eq!(w["provided_by"], top);
    assert_eq!((holds(&w, 1).0, holds(&w, 2).0), ("version", "version"));
    assert_eq!((w["layers"][1]["shown"].as_bool(), w["layers"][2]["shown"].as_bool()), (Some(true), Some(false)));

    // A copied-up file: the container's layer shows it, a lower one has it too.
    let w = json(s, &["layer", "which", "c", "/up"]);
    assert_eq!(w["provided_by"], "c");
    assert_eq!(w["copied_up"], true);
    assert_eq!(w["copy"], if overlay { Value::from("data and metadata") } else { Value::Null });
    assert_eq!(holds(&w, 0).0, "version");
    assert_eq!(w["layers"][0]["type"], "file");
    assert_eq!(holds(&w, 2).0, "version");
    let e = json(s, &["layer", "explain", "c", "/up"]);
    assert_eq!(e["stored"], "file");
    let disk = e["disk_path"].as_str().unwrap();
    let md = fs::symlink_metadata(disk).unwrap();
    assert_eq!(md.len(), 256 * 1024 + 1, "the container's own copy, with the append");
    assert_eq!(e["bytes"].as_u64(), Some(md.blocks() * 512));
    assert_eq!(e["parent_has"], true);
    if s.driver == "btrfs" {
        // The snapshot shares the unchanged extent with the image and owns the new one.
        let (shared, own) = (e["shared_bytes"].as_u64().unwrap(), e["exclusive_bytes"].as_u64().unwrap());
        assert!(shared >= 256 * 1024 - 4096 && own > 0, "{e}");
        let b = json(s, &["layer", "explain", "c", "/base"]);
        assert_eq!((b["stored"].as_str(), b["exclusive_bytes"].as_u64()), (Some("file"), Some(0)), "{b}");
    } else {
        assert_eq!(e["shared_bytes"], Value::Null);
    }

    // A file deleted in the container, and one deleted by an image layer.
    for (layer, path, i) in [("c", "/gone", 0), (top.as_str(), "/wo", 1)] {
        let w = json(s, &["layer", "which", "c", path]);
        assert_eq!(w["present"], false, "{w}");
        assert_eq!(w["provided_by"], Value::Null);
        let how = if overlay { "whiteout" } else { "absent" };
        assert_eq!(holds(&w, i), ("deletion", Some(how), Some(path)), "{w}");
        assert_eq!(w["layers"][i]["shown"], true);
        assert_eq!(holds(&w, 2).0, "version", "the older version below");
        let e = json(s, &["layer", "explain", layer, path]);
        assert_eq!(e["parent_has"], true);
        if overlay {
            assert_eq!(e["layer_kind"], "changes");
            assert_eq!(e["stored"], "whiteout");
            let md = fs::symlink_metadata(e["disk_path"].as_str().unwrap()).unwrap();
            assert!(md.file_type().is_char_device() && md.rdev() == 0, "a 0/0 character device");
        } else {
            assert_eq!(e["layer_kind"], if s.driver == "vfs" { "full-copy" } else { "snapshot" });
            assert_eq!(e["stored"], "absent");
            assert_eq!(e["disk_path"], Value::Null);
            assert!(!Path::new(e["layer_dir"].as_str().unwrap()).join(&path[1..]).exists());
        }
    }

    // Opaque directories: /opq by an image layer, /d by rm -rf + mkdir in the container.
    for (layer, dir, child, i) in [(top.as_str(), "/opq", "/opq/x", 1), ("c", "/d", "/d/f", 0)] {
        let w = json(s, &["layer", "which", "c", child]);
        assert_eq!(w["present"], false, "{w}");
        let want = if overlay {
            ("deletion", Some("opaque-dir"), Some(dir))
        } else {
            ("deletion", Some("absent"), Some(child))
        };
        assert_eq!(holds(&w, i), want, "{w}");
        assert_eq!(holds(&w, 2).0, "version");
        let w = json(s, &["layer", "which", "c", dir]);
        assert_eq!(w["present"], true);
        if overlay {
            // The opaque directory is the layer's own; on vfs and btrfs only its
            // content changed, and the directory may still count as the lower one's.
            assert_eq!(w["layers"][i]["type"], "dir");
            assert_eq!(w["layers"][i]["shown"], true);
            assert_eq!(w["layers"][i]["how"], "opaque");
        }
        let e = json(s, &["layer", "explain", layer, dir]);
        assert_eq!(e["stored"], if overlay { "opaque-dir" } else { "dir" }, "{e}");
        let e = json(s, &["layer", "explain", layer, child]);
        assert_eq!(e["stored"], if overlay { "opaque-dir" } else { "absent" }, "{e}");
    }
    // /opq/y, new in the opaque directory, comes from l2.
    assert_eq!(json(s, &["layer", "which", "c", "/opq/y"])["provided_by"], top);

    if overlay {
        // /up was appended to, so its data was copied up (metacopy or not): simulate what
        // overlayfs leaves after a chmod with metacopy: the upper file carries the
        // metacopy xattr and its data stays below.
        let e = json(s, &["layer", "explain", "c", "/up"]);
        let disk = std::ffi::CString::new(e["disk_path"].as_str().unwrap()).unwrap();
        driver_core::sys::set_xattr(driver_core::sys::XattrTarget::NoFollow(&disk), "trusted.overlay.metacopy", b"")
            .unwrap();
        assert_eq!(json(s, &["layer", "which", "c", "/up"])["copy"], "metadata only");
    }

    // Human output names the layer and how; errors name the path.
    let out = s.ok(&["layer", "which", "c", "/up"]);
    assert!(out.contains("from the container layer c"), "{out}");
    let err = s.fails_with(2, &["layer", "which", "c", "../x"]);
    assert!(err.contains("../x"), "{err}");
}

/// Debian bookworm's merged /usr: `/bin` is a symbolic link to `usr/bin`, so `layer
/// which c1 /bin/sh` refused ("/bin is a symbolic link … ask for the path it points
/// to"). A directory link on the way is followed as the container's view resolves it,
/// confined to its root (`..` and absolute targets stay inside), and the answer says
/// which path was looked up; the last name of the path is not followed.
fn which_follows_symlinked_directories_as_the_container_does(s: &Strata) {
    let tmp = tempfile::tempdir().unwrap();
    let l1 = TarBuilder::new()
        .dir("usr")
        .dir("usr/bin")
        .file("usr/bin/dash", &bytes(100, 1))
        .symlink("usr/bin/sh", "dash")
        .dir("usr/lib")
        .file("usr/lib/libc.so", &bytes(100, 2))
        .symlink("bin", "usr/bin")
        .symlink("lib", "/usr/lib")
        .dir("etc")
        .symlink("etc/up", "../..")
        .symlink("etc/escape", "../../../../../../usr")
        .symlink("loop1", "loop2")
        .symlink("loop2", "loop1")
        .build();
    let l2 = TarBuilder::new().dir("usr").dir("usr/bin").file("usr/bin/tool", &bytes(50, 3)).build();
    let layout = Layout::new(&tmp.path().join("layout"), "t", &[gz(&l1), gz(&l2)]);
    let top = s.ok(&["image", "unpack", &format!("{}:t", layout.dir.display()), "--name", "t"]).trim().to_string();
    s.ok(&["container", "create", "c1", "--image", "t"]);
    {
        let view = strata_tests::Mounted::new(s, "c1");
        // Written through the link, as a user in the container does.
        fs::write(view.path.join("bin/new"), b"new").unwrap();
    }
    let base = json(s, &["layer", "which", "c1", "/usr/bin/dash"])["provided_by"].as_str().unwrap().to_string();
    assert_ne!(base, top);

    // The question of the report: /bin/sh, through /bin -> usr/bin.
    let w = json(s, &["layer", "which", "c1", "/bin/sh"]);
    assert_eq!(w["path"], "/bin/sh", "{w}");
    assert_eq!(w["looked_up"], "/usr/bin/sh", "{w}");
    assert_eq!(w["present"], true, "{w}");
    assert_eq!(w["provided_by"], base.as_str(), "{w}");
    assert_eq!(w["layers"][2]["type"], "symlink", "the last name is not followed: {w}");
    let out = s.ok(&["layer", "which", "c1", "/bin/sh"]);
    assert!(out.contains("/usr/bin/sh") && out.contains("/bin -> usr/bin"), "{out}");

    for (path, looked_up, provided_by) in [
        ("/bin/tool", "/usr/bin/tool", top.as_str()),
        ("/bin/new", "/usr/bin/new", "c1"),
        ("/lib/libc.so", "/usr/lib/libc.so", base.as_str()),
        // `..` out of the root stays at the root, as in the container.
        ("/etc/up/bin/dash", "/usr/bin/dash", base.as_str()),
        ("/etc/escape/bin/dash", "/usr/bin/dash", base.as_str()),
        // A link as the last name is the answer itself.
        ("/bin", "/bin", base.as_str()),
    ] {
        let w = json(s, &["layer", "which", "c1", path]);
        assert_eq!((w["looked_up"].as_str(), w["provided_by"].as_str()), (Some(looked_up), Some(provided_by)), "{w}");
    }
    assert_eq!(json(s, &["layer", "which", "c1", "/bin/absent"])["present"], false);
    let e = json(s, &["layer", "explain", "c1", "/bin/new"]);
    assert_eq!((e["looked_up"].as_str(), e["stored"].as_str()), (Some("/usr/bin/new"), Some("file")), "{e}");
    // A symlink loop (ELOOP): exit 1; the line names the path.
    let err = s.fails_with(1, &["layer", "which", "c1", "/loop1/x"]);
    assert!(err.contains("/loop1") && err.contains("symbolic links"), "{err}");
}
