//! Every error a user can reach through `strata layer` prints one `error:` line naming
//! what failed, exits non-zero, and leaves the store as it was.

use std::process::Command;

use strata_archive::tarbuild::TarBuilder;
use strata_tests::{privileged, strata_bin, Strata};

fn check_each_error(driver: &str) {
    let s = Strata::new(driver);
    let work = tempfile::tempdir().unwrap();
    let good = work.path().join("good.tar");
    std::fs::write(&good, TarBuilder::new().dir("etc").file("etc/a", b"a").build()).unwrap();
    s.ok(&["layer", "apply", "base", good.to_str().unwrap()]);
    s.ok(&["layer", "create", "ctr", "--parent", "base"]);
    let before = s.state();
    let bad = work.path().join("bad.tar");
    let full = TarBuilder::new().file("big", &vec![7u8; 50_000]).build();
    std::fs::write(&bad, &full[..full.len() / 2]).unwrap();
    let hostile = work.path().join("hostile.tar");
    std::fs::write(&hostile, TarBuilder::new().raw_file(b"../../escape", b"x", Default::default()).build()).unwrap();
    let g = good.to_str().unwrap();
    // The line, and the exit code of docs/cli.md: 1 failed, 2 usage, 4 not found,
    // 5 invalid input, 6 busy.
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (vec!["layer", "apply", "x", "--parent", "missing", g], 4, "parent layer missing does not exist"),
        (vec!["layer", "apply", "base", g], 1, "layer base: layer already exists"),
        (
            vec!["layer", "apply", "x", bad.to_str().unwrap()],
            5,
            "layer x: big: invalid layer tar: the stream ends early (truncated)",
        ),
        (vec!["layer", "apply", "x", hostile.to_str().unwrap()], 1, "'..'"),
        (vec!["layer", "apply", "x", "/no/such/file.tar"], 1, "/no/such/file.tar"),
        (vec!["layer", "apply", "bad/id", g], 2, "invalid layer id"),
        (vec!["layer", "mount", "nope"], 4, "layer nope: no such layer"),
        (vec!["layer", "unmount", "ctr"], 1, "layer ctr: layer is not mounted"),
        (vec!["layer", "diff", "nope", "-o", "/dev/null"], 4, "layer nope: no such layer"),
        (vec!["layer", "rm", "nope"], 4, "layer nope: no such layer"),
        (vec!["layer", "rm", "base"], 6, "layer base: layer has child layers (ctr)"),
        (vec!["layer", "create", "c2", "--parent", "nope"], 4, "parent layer nope does not exist"),
        // Refused before anything is opened: usage errors (cli/src/error.rs's Usage).
        (vec!["layer", "which", "ctr", "../x"], 2, "path \"../x\": give it from the root, without .."),
        (vec!["layer", "explain", "ctr", "/"], 2, "path \"/\": give a path below /"),
        (vec!["container", "run", "ctr", "--user", "x", "--", "true"], 2, "--user x: UID[:GID] must be numbers"),
        // A container command names a container, in its words.
        (vec!["container", "rm", "nope"], 4, "container nope: no such container"),
        (vec!["container", "run", "nope", "--", "true"], 4, "container nope: no such container"),
    ];
    for (args, code, want) in cases {
        let e = s.fails_with(code, &args);
        assert!(e.contains(want), "{driver} {args:?}: {e:?} should say {want:?}");
        assert_eq!(s.state(), before, "{driver} {args:?} changed the store");
    }
    // No permission: another user against root's store.
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(strata_bin())
        .arg("--root")
        .arg(&s.root)
        .args(["--driver", driver, "layer", "apply", "x", g])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // EACCES/EPERM have no code of their own: 1 (docs/cli.md).
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("Permission denied") || errors[0].contains("Operation not permitted"), "{stderr}");
    assert_eq!(s.state(), before, "a refused user changed the store");
    s.ok(&["layer", "rm", "ctr"]);
    s.ok(&["layer", "rm", "base"]);
}

#[test]
fn every_reachable_error_is_one_clear_line_and_changes_nothing() {
    if !privileged("the CLI error tests") {
        return;
    }
    for driver in ["vfs", "overlay"] {
        check_each_error(driver);
    }
}

/// Files people hand over as layers by mistake, made by the real tools (Python's zipfile,
/// lzma and bz2 write the same formats as zip, xz and bzip2): each is refused with one
/// line that says what the file looks like and which formats strata reads, with no
/// binary bytes in it, and the store is unchanged.
#[test]
fn files_that_are_not_layers_say_what_they_look_like() {
    if !privileged("the CLI error tests") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let tar = work.path().join("layer.tar");
    std::fs::write(&tar, TarBuilder::new().dir("etc").file("etc/a", b"a").build()).unwrap();
    let script = r#"
import bz2, lzma, os, sys, zipfile
d, tar = sys.argv[1], sys.argv[2]
data = open(tar, "rb").read()
with zipfile.ZipFile(os.path.join(d, "layer.zip"), "w", zipfile.ZIP_DEFLATED) as z:
    z.writestr("layer.tar", data)
open(os.path.join(d, "layer.tar.xz"), "wb").write(lzma.compress(data))
open(os.path.join(d, "layer.tar.bz2"), "wb").write(bz2.compress(data))
open(os.path.join(d, "empty.tar"), "wb").close()
open(os.path.join(d, "noise.bin"), "wb").write(bytes([0x1b, 0x5b, 0x32, 0x4a, 0x07, 0x0d]) + os.urandom(8000))
"#;
    let made = Command::new("python3").args(["-c", script]).arg(work.path()).arg(&tar).status().unwrap();
    assert!(made.success(), "python3 could not write the test files");
    let cases = [
        ("layer.zip", "it looks like a zip archive"),
        ("layer.tar.xz", "it looks like an xz stream"),
        ("layer.tar.bz2", "it looks like a bzip2 stream"),
        ("empty.tar", "empty file (0 bytes)"),
        ("noise.bin", "it starts with bytes 1b 5b 32 4a 07 0d"),
    ];
    for driver in ["vfs", "overlay"] {
        let s = Strata::new(driver);
        s.ok(&["layer", "apply", "base", tar.to_str().unwrap()]);
        let before = s.state();
        for (file, want) in cases {
            let path = work.path().join(file);
            // Not a layer: exit 5 (Cause::BadTar); the line itself is what this test is about.
            let e = s.fails_with(5, &["layer", "apply", "x", "--parent", "base", path.to_str().unwrap()]);
            assert!(e.contains(want), "{driver} {file}: {e:?} should say {want:?}");
            assert!(e.contains("strata reads layers as tar, tar+gzip or tar+zstd"), "{driver} {file}: {e}");
            assert!(e.starts_with("error: layer x: "), "{driver} {file}: {e}");
            assert!(!e.chars().any(|c| c.is_control()), "{driver} {file}: control characters in {e:?}");
            assert_eq!(s.state(), before, "{driver} {file} changed the store");
        }
    }
}

/// The first command on a root records its driver; later `auto` uses that driver, and
/// an explicit `--driver` that differs is refused naming both. The case from the field:
/// a store made by a user who cannot mount overlay (auto chose vfs) stays visible to
/// root on the same `--root`, where auto alone would choose overlay.
#[test]
fn a_root_keeps_the_driver_it_was_made_with() {
    if !privileged("the driver-record tests") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("store");
    std::fs::create_dir(&root).unwrap();
    for p in [work.path(), &root] {
        std::os::unix::fs::chown(p, Some(65534), Some(65534)).unwrap();
    }
    let strata = |as_nobody: bool, args: &[&str]| {
        let mut c = if as_nobody {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups"]).arg(strata_bin());
            c
        } else {
            Command::new(strata_bin())
        };
        c.arg("--root").arg(&root).args(args).output().unwrap()
    };
    // (A user without CAP_CHOWN cannot apply root-owned tars; an empty layer will do.)
    let made = strata(true, &["--driver", "auto", "layer", "create", "base"]);
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    assert!(
        String::from_utf8_lossy(&made.stderr).contains("--driver auto chose vfs"),
        "a user without mounts gets vfs"
    );
    assert_eq!(std::fs::read_to_string(root.join("driver")).unwrap(), "vfs\n");

    // root, auto: the same store, and no new choice is announced.
    let listed = strata(false, &["--driver", "auto", "layer", "ls", "--json"]);
    assert!(listed.status.success(), "{}", String::from_utf8_lossy(&listed.stderr));
    assert!(String::from_utf8_lossy(&listed.stdout).contains("\"base\""), "root's auto must see the vfs store");
    assert!(!String::from_utf8_lossy(&listed.stderr).contains("chose"), "no second choice");
    assert!(!root.join("overlay").exists(), "auto must not start an overlay store beside it");

    // An explicit driver that differs: one error line naming both, nothing made.
    let refused = strata(false, &["--driver", "overlay", "layer", "ls"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    // Cause::Refused: exit 1; the line (naming both drivers) is what is tested.
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("holds a vfs store") && errors[0].contains("--driver overlay"), "{stderr}");
    assert!(!root.join("overlay").exists(), "a refused driver must not make its folder");
    // ... with the article its name takes.
    std::fs::write(root.join("driver"), "overlay\n").unwrap();
    let refused = strata(false, &["--driver", "vfs", "layer", "ls"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains(" holds an overlay store; --driver vfs cannot use it"), "{stderr}");
    std::fs::write(root.join("driver"), "vfs\n").unwrap();
    // The named driver that matches works.
    assert!(strata(false, &["--driver", "vfs", "layer", "ls"]).status.success());

    // A root made before records were kept (one driver folder, no record) is adopted.
    std::fs::remove_file(root.join("driver")).unwrap();
    let adopted = strata(false, &["--driver", "auto", "layer", "ls", "--json"]);
    assert!(String::from_utf8_lossy(&adopted.stdout).contains("\"base\""));
    assert_eq!(std::fs::read_to_string(root.join("driver")).unwrap(), "vfs\n");
}

/// `strata image ls | head -0`: a reader that goes away ends a listing quietly, with the
/// exit status a shell gives a pipe-killed command, and changes nothing.
#[test]
fn a_closed_stdout_ends_a_listing_quietly() {
    let s = Strata::new("vfs");
    let work = tempfile::tempdir().unwrap();
    let tar = work.path().join("l.tar");
    std::fs::write(&tar, TarBuilder::new().file("a", b"a").build()).unwrap();
    for id in ["one", "two", "three"] {
        s.ok(&["layer", "apply", id, tar.to_str().unwrap()]);
    }
    let before = s.state();
    for args in [&["layer", "ls"][..], &["layer", "ls", "--json"], &["image", "ls"], &["container", "ls"]] {
        let (read, write) = nix::unistd::pipe().unwrap();
        drop(read);
        let out = s.command(args).stdout(std::process::Stdio::from(write)).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(141), "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?} said something on a closed pipe: {stderr}");
        assert_eq!(s.state(), before, "{args:?} changed the store");
    }
}

/// The errors of `strata image`, end to end: each is one line that names the image and
/// says what is wrong, and exits with the code of its kind (docs/cli.md), the store
/// unchanged.
#[test]
fn image_errors_say_what_failed_and_exit_by_kind() {
    if !privileged("the CLI error tests") {
        return;
    }
    let s = Strata::new("vfs");
    let work = tempfile::tempdir().unwrap();
    let layout = one_layer_layout(work.path());
    let not_layout = work.path().join("plain");
    std::fs::create_dir(&not_layout).unwrap();
    let src = layout.to_str().unwrap();
    let tagged = format!("{src}:nope");
    let missing = work.path().join("missing");
    let out = work.path().join("out");
    let before = s.state();
    let cases: Vec<(Vec<&str>, i32, String)> = vec![
        (vec!["image", "rm", "nope"], 4, "image nope: no such image".into()),
        (vec!["image", "unpack", missing.to_str().unwrap()], 4, "no such file or directory".into()),
        (vec!["image", "unpack", &tagged], 4, format!("image {tagged}: no manifest tagged \"nope\" in index.json")),
        (vec!["image", "unpack", src, "--name", "UPPER"], 2, "image name \"UPPER\": invalid reference format".into()),
        (vec!["image", "unpack", src, "--platform", "a/b/c/d"], 2, "--platform \"a/b/c/d\": expected OS/ARCH".into()),
        (vec!["image", "unpack", not_layout.to_str().unwrap()], 5, "without an oci-layout file".into()),
        (
            vec!["image", "unpack", "docker://a/b:1", "--name", "c"],
            2,
            "--name and --platform are for local images".into(),
        ),
        // Through a command that still returns the drivers' error: the image's error and code.
        (vec!["image", "save", "nope", "-o", out.to_str().unwrap()], 4, "no such image".into()),
    ];
    for (args, code, want) in cases {
        let e = s.fails_with(code, &args);
        assert!(e.contains(&want), "{args:?}: {e:?} should say {want:?}");
        assert_eq!(s.state(), before, "{args:?} changed the store");
    }
    // A config that does not parse names the file, the field and the line and column.
    let index = read_json(&layout.join("index.json"));
    let manifest_digest = index["manifests"][0]["digest"].as_str().unwrap();
    let manifest = read_json(&blob(&layout, manifest_digest));
    let mut config = read_json(&blob(&layout, manifest["config"]["digest"].as_str().unwrap()));
    config["rootfs"]["diff_ids"][0] = 1.into();
    rewrite_image(&layout, &config);
    let e = s.fails_with(5, &["image", "unpack", src]);
    assert!(e.contains("rootfs.diff_ids[0]") && e.contains("line 1 column"), "{e}");
    assert!(!e.contains("serde failed"), "{e}");
    assert_eq!(s.state(), before);
    // A layer that is not the one the config names (its diff_id): the image is not what
    // it says (5).
    config["rootfs"]["diff_ids"][0] = format!("sha256:{}", "0".repeat(64)).into();
    rewrite_image(&layout, &config);
    let e = s.fails_with(5, &["image", "unpack", src]);
    assert!(e.contains("(tampered or corrupt)"), "{e}");
    assert_eq!(s.state(), before);
}

/// `strata ... > /dev/full`: every command that prints fails with one error line that
/// says the disk is full, exit 7 (docs/cli.md), not a panic, and changes nothing.
#[test]
fn a_full_stdout_is_exit_7_for_every_listing() {
    if !privileged("the CLI error tests") {
        return;
    }
    let s = Strata::new("vfs");
    let work = tempfile::tempdir().unwrap();
    let layout = one_layer_layout(work.path());
    s.ok(&["image", "unpack", layout.to_str().unwrap(), "--name", "img"]);
    s.ok(&["container", "create", "c1", "--image", "img"]);
    let top = s.ok(&["image", "ls", "--json"]);
    let top: serde_json::Value = serde_json::from_str(&top).unwrap();
    let top = top[0]["top"].as_str().unwrap().to_string();
    let before = s.state();
    let listings: [&[&str]; 13] = [
        &["layer", "ls"],
        &["layer", "ls", "--json"],
        &["image", "ls"],
        &["image", "ls", "--json"],
        &["container", "ls"],
        &["container", "ls", "--json"],
        &["df"],
        &["df", "--json"],
        &["probe"],
        &["probe", "--json"],
        &["image", "history", "img"],
        &["layer", "changes", &top],
        &["layer", "diff", &top],
    ];
    for args in listings {
        let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
        let out = s.command(args).stdout(full).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(7), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error: ")).collect();
        assert_eq!(errors.len(), 1, "{args:?}: {stderr}");
        // (driver-core says it in lower case.)
        assert!(errors[0].to_lowercase().contains("no space left on device"), "{args:?}: {stderr}");
        assert_eq!(s.state(), before, "{args:?} changed the store");
    }
}

/// `strata layer diff L | head -c 100`: the reader goes away in the middle of the tar;
/// the command ends as a pipe-killed one (141), saying nothing, the store unchanged.
#[test]
fn a_reader_that_leaves_a_diff_early_ends_it_quietly() {
    use std::io::Read;
    let s = Strata::new("vfs");
    let work = tempfile::tempdir().unwrap();
    let tar = work.path().join("big.tar");
    // More than the pipe and the command's 1 MiB buffer hold: the command is still
    // writing when the reader leaves.
    std::fs::write(&tar, TarBuilder::new().file("big", &strata_tests::seeded_bytes(7, 4 << 20)).build()).unwrap();
    s.ok(&["layer", "apply", "l", tar.to_str().unwrap()]);
    let before = s.state();
    let mut child = s
        .command(&["layer", "diff", "l"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut head = [0u8; 100];
    child.stdout.take().unwrap().read_exact(&mut head).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "{stderr}");
    assert!(stderr.is_empty(), "said something on a closed pipe: {stderr}");
    assert_eq!(s.state(), before);
}

/// An OCI layout `DIR/img` of one small layer, tagged v1.
fn one_layer_layout(dir: &std::path::Path) -> std::path::PathBuf {
    let layout = dir.join("img");
    let tar = TarBuilder::new().dir("etc").file("etc/a", b"a").build();
    strata_image::image::write_layout(&layout, "v1", &[tar]).unwrap();
    layout
}

fn read_json(p: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn blob(layout: &std::path::Path, digest: &str) -> std::path::PathBuf {
    layout.join("blobs/sha256").join(digest.trim_start_matches("sha256:"))
}

/// Writes `config` as the layout's config, and the manifest and index that name it.
fn rewrite_image(layout: &std::path::Path, config: &serde_json::Value) {
    let sha = |b: &[u8]| driver_core::digest::sha256(b);
    let config = serde_json::to_vec(config).unwrap();
    std::fs::write(blob(layout, &sha(&config)), &config).unwrap();
    let mut index = read_json(&layout.join("index.json"));
    let old_manifest = index["manifests"][0]["digest"].as_str().unwrap().to_string();
    let mut manifest = read_json(&blob(layout, &old_manifest));
    manifest["config"]["digest"] = sha(&config).into();
    manifest["config"]["size"] = config.len().into();
    let manifest = serde_json::to_vec(&manifest).unwrap();
    std::fs::write(blob(layout, &sha(&manifest)), &manifest).unwrap();
    index["manifests"][0]["digest"] = sha(&manifest).into();
    index["manifests"][0]["size"] = manifest.len().into();
    std::fs::write(layout.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}
