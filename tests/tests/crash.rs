//! Crash safety, on every driver: `image unpack`, `layer apply`, `layer rm` and `image
//! rm` killed with SIGKILL (an unpack also with SIGINT and SIGTERM) at moments spread
//! over their run leave a consistent store. After the next `strata` command (which
//! recovers, with no manual step): every listed layer is complete and equal to the same
//! layer from an uninterrupted run, no layer is left that no image uses, nothing
//! half-made is listed or left in staging, nothing is mounted, and re-running the
//! killed command completes.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;
use strata_cli::workload::{generate, gzip, WorkloadSize};
use strata_scratch::{FsKind, ScratchFs};
use strata_testkit::conformance::mounts_under;
use strata_testkit::tree::{CompareOptions, Tree};
use strata_tests::{privileged, signal_at, Strata};

/// Kill moments per killed command kind.
const UNPACK_KILLS: usize = 10;
const OTHER_KILLS: usize = 5;

fn image_layout(dir: &Path) -> PathBuf {
    let size = WorkloadSize { base_dirs: 40, base_files: 500, app_files: 300 };
    let blobs: Vec<Vec<u8>> = generate(11, size).iter().map(|l| gzip(&l.tar)).collect();
    strata_image::image::write_layout(dir, "img", &blobs).unwrap();
    dir.to_path_buf()
}

fn listed(s: &Strata) -> Vec<String> {
    let v: Value = serde_json::from_str(&s.ok(&["layer", "ls", "--json"])).unwrap();
    v.as_array().unwrap().iter().map(|l| l["id"].as_str().unwrap().to_string()).collect()
}

fn images(s: &Strata) -> Vec<Value> {
    let v: Value = serde_json::from_str(&s.ok(&["image", "ls", "--json"])).unwrap();
    v.as_array().unwrap().clone()
}

fn capture(s: &Strata, id: &str) -> Tree {
    let view = s.ok(&["layer", "mount", id]).trim().to_string();
    let t = Tree::capture(Path::new(&view)).unwrap();
    s.ok(&["layer", "unmount", id]);
    t
}

/// Runs `args` and kills it with SIGKILL after `after` (if it is still running).
fn kill_after(s: &Strata, args: &[&str], after: Duration) {
    signal_after(s, args, after, Signal::SIGKILL);
}

/// Runs `args` and sends it `signal` after `after` (Ctrl-C is SIGINT; a service
/// manager stops with SIGTERM): none of them may leave what SIGKILL may not.
fn signal_after(s: &Strata, args: &[&str], after: Duration, signal: Signal) {
    signal_at(s.command(args), "", after, signal);
}

/// Every layer the store lists is one an image (or an image being removed) names, or a
/// container: a killed unpack leaves nothing stranded once the next command has run.
fn assert_all_referenced(s: &Strata, what: &str) {
    let layers = listed(s); // the next command: it finishes what the killed one left
    let dir = s.root.join(&s.driver).join("images");
    let mut named = std::collections::HashSet::new();
    for e in fs::read_dir(&dir).unwrap().flatten() {
        let p = e.path();
        let hidden = e.file_name().to_string_lossy().starts_with('.');
        if !hidden && p.extension().is_some_and(|x| x == "json") {
            let rec: Value = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
            for l in rec["layers"].as_array().unwrap() {
                named.insert(l.as_str().unwrap().to_string());
            }
        }
    }
    let stranded: Vec<&String> = layers.iter().filter(|l| !named.contains(*l)).collect();
    assert!(stranded.is_empty(), "{what}: layers no image uses are left: {stranded:?}");
}

fn timed(s: &Strata, args: &[&str]) -> Duration {
    let start = Instant::now();
    s.ok(args);
    start.elapsed()
}

/// What the next command must find: only complete, correct layers; no staging
/// leftovers; nothing mounted; every listed image whole.
fn assert_consistent(s: &Strata, reference: &BTreeMap<String, Tree>, what: &str) {
    let layers = listed(s); // the next command: it recovers
    for id in &layers {
        let want = reference.get(id).unwrap_or_else(|| panic!("{what}: {id} is listed but was never made"));
        let d = capture(s, id).differences(want, &CompareOptions::default());
        assert!(d.is_empty(), "{what}: layer {id} differs from the uninterrupted run:\n{}", d.join("\n"));
    }
    for image in images(s) {
        let top = image["top"].as_str().unwrap_or_default();
        assert!(layers.iter().any(|l| l == top), "{what}: image {image} is listed without its top layer");
    }
    let staging = s.root.join(&s.driver).join("staging");
    let left: Vec<_> = fs::read_dir(&staging).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "{what}: staging still holds {left:?}");
    assert!(mounts_under(&s.root).is_empty(), "{what}: left mounted: {:?}", mounts_under(&s.root));
}

fn crash_safety(driver: &str, base: &Path) {
    let work = tempfile::tempdir().unwrap();
    let layout = image_layout(&work.path().join("img"));
    let src = layout.to_str().unwrap();

    // The uninterrupted run: every layer's tree, and how long each command takes.
    let clean = Strata::at(&base.join("reference"), driver);
    let unpack_time = timed(&clean, &["image", "unpack", src]);
    let mut reference = BTreeMap::new();
    for id in listed(&clean) {
        let tree = capture(&clean, &id);
        reference.insert(id, tree);
    }
    assert_eq!(reference.len(), 3);
    let big = generate(12, WorkloadSize { base_dirs: 30, base_files: 400, app_files: 1 }).remove(0).tar;
    let big_path = work.path().join("big.tar");
    fs::write(&big_path, &big).unwrap();
    let apply = ["layer", "apply", "extra", big_path.to_str().unwrap()];
    let apply_time = timed(&clean, &apply);
    reference.insert("extra".into(), capture(&clean, "extra"));
    let rm_time = timed(&clean, &["layer", "rm", "extra"]);
    let image_rm_time = timed(&clean, &["image", "rm", "img"]);

    for k in 0..UNPACK_KILLS {
        let s = Strata::at(&base.join(format!("unpack{k}")), driver);
        let at = unpack_time.mul_f64((k as f64 + 0.5) / UNPACK_KILLS as f64);
        let (signal, name) =
            [(Signal::SIGKILL, "SIGKILL"), (Signal::SIGINT, "SIGINT"), (Signal::SIGTERM, "SIGTERM")][k % 3];
        signal_after(&s, &["image", "unpack", src], at, signal);
        let what = format!("{driver}: unpack sent {name} at {at:?} of {unpack_time:?}");
        assert_all_referenced(&s, &what);
        assert_consistent(&s, &reference, &what);
        s.ok(&["image", "unpack", src]);
        assert_eq!(listed(&s).len(), 3, "{what}: the re-run completes");
        assert_consistent(&s, &reference, &format!("{what}, re-run"));

        // image rm killed, on the same store, a few times over.
        if k < OTHER_KILLS {
            let at = image_rm_time.mul_f64((k as f64 + 0.5) / OTHER_KILLS as f64);
            kill_after(&s, &["image", "rm", "img"], at);
            let what = format!("{driver}: image rm killed at {at:?} of {image_rm_time:?}");
            assert_consistent(&s, &reference, &what);
            let o = s.run(&["image", "rm", "img"]);
            let stderr = String::from_utf8_lossy(&o.stderr);
            // Done, or not found (exit 4): the killed run had removed it.
            assert!(matches!(o.status.code(), Some(0 | 4)), "{what}: re-run: {stderr}");
            assert!(listed(&s).is_empty(), "{what}: the image's layers are gone after the re-run");
        } else {
            s.ok(&["image", "rm", "img"]);
        }
        fs::remove_dir_all(&s.root).unwrap_or_else(|e| panic!("{}: {e}", s.root.display()));
    }

    for k in 0..OTHER_KILLS {
        let s = Strata::at(&base.join(format!("apply{k}")), driver);
        let at = apply_time.mul_f64((k as f64 + 0.5) / OTHER_KILLS as f64);
        kill_after(&s, &apply, at);
        let what = format!("{driver}: layer apply killed at {at:?} of {apply_time:?}");
        assert_consistent(&s, &reference, &what);
        let o = s.run(&apply);
        let stderr = String::from_utf8_lossy(&o.stderr);
        // Cause::Exists has no exit code of its own (1): the line says which failure.
        assert!(
            o.status.success() || (o.status.code() == Some(1) && stderr.contains("already exists")),
            "{what}: re-run: {stderr}"
        );
        assert_eq!(listed(&s), ["extra"], "{what}");
        assert_consistent(&s, &reference, &format!("{what}, re-run"));

        let at = rm_time.mul_f64((k as f64 + 0.5) / OTHER_KILLS as f64);
        kill_after(&s, &["layer", "rm", "extra"], at);
        let what = format!("{driver}: layer rm killed at {at:?} of {rm_time:?}");
        assert_consistent(&s, &reference, &what);
        let o = s.run(&["layer", "rm", "extra"]);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(matches!(o.status.code(), Some(0 | 4)), "{what}: re-run: {stderr}");
        assert!(listed(&s).is_empty(), "{what}");
        let layers_dir = s.root.join(driver).join("layers");
        let left: Vec<_> =
            fs::read_dir(&layers_dir).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
        assert!(left.is_empty(), "{what}: content left behind: {left:?}");
        fs::remove_dir_all(&s.root).unwrap();
    }
}

#[test]
fn vfs_survives_sigkill() {
    if !privileged("the crash tests") {
        return;
    }
    // Its own filesystem, so the commits' syncfs waits for this test's writes only.
    let scratch = ScratchFs::new(FsKind::Ext4, 2 << 30).unwrap();
    crash_safety("vfs", scratch.path());
}

#[test]
fn overlay_survives_sigkill() {
    if !privileged("the crash tests") {
        return;
    }
    let scratch = ScratchFs::new(FsKind::Ext4, 2 << 30).unwrap();
    crash_safety("overlay", scratch.path());
}

#[test]
fn btrfs_survives_sigkill() {
    if !privileged("the crash tests") {
        return;
    }
    let scratch = ScratchFs::new(FsKind::Btrfs, 2 << 30).unwrap();
    crash_safety("btrfs", scratch.path());
}

/// Every file under `dir` (path, kind and size), read straight from disk: what a
/// command left, before any other command could collect it.
fn on_disk(dir: &Path) -> BTreeMap<String, (bool, u64)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            let Ok(md) = fs::symlink_metadata(&p) else { continue };
            let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
            if md.is_dir() {
                stack.push(p);
            }
            // A directory's size is its entries' blocks: it may stay grown after a removal.
            out.insert(rel, (md.is_dir(), if md.is_dir() { 0 } else { md.len() }));
        }
    }
    out.remove("lock");
    out
}

/// The first 20 paths that differ between two [`on_disk`] listings.
fn changes(before: &BTreeMap<String, (bool, u64)>, after: &BTreeMap<String, (bool, u64)>) -> Vec<String> {
    let gone = before.iter().filter(|(p, v)| after.get(*p) != Some(v)).map(|(p, _)| format!("- {p}"));
    let new = after.iter().filter(|(p, _)| !before.contains_key(*p)).map(|(p, _)| format!("+ {p}"));
    gone.chain(new).take(20).collect()
}

/// Ctrl-C of `image unpack` into a store that holds another image, at moments spread
/// over the unpack: the unpack either completes, or stops by itself with one `error:`
/// line saying it was interrupted and exit status 130, having rolled back — the store
/// on disk is as before (checked before any other command could collect leftovers) and
/// nothing is mounted.
fn ctrl_c_of_an_unpack(driver: &str, base: &Path) {
    let work = tempfile::tempdir().unwrap();
    let small = generate(14, WorkloadSize { base_dirs: 4, base_files: 20, app_files: 20 });
    let held = work.path().join("held");
    strata_image::image::write_layout(&held, "held", &small.iter().map(|l| gzip(&l.tar)).collect::<Vec<_>>()).unwrap();
    let size = WorkloadSize { base_dirs: 40, base_files: 800, app_files: 1500 };
    let blobs: Vec<Vec<u8>> = generate(13, size).iter().map(|l| gzip(&l.tar)).collect();
    let big = work.path().join("big");
    strata_image::image::write_layout(&big, "big", &blobs).unwrap();
    // When: a while after the start (before or during layer 1), and at once after the
    // line that ends layer 1 (layer 2 takes a while to apply).
    let moments: [(&str, u64); 2] = [("", 300), ("layer 1/", 0)];
    let mut interrupted = 0;
    for (k, (marker, delay)) in moments.into_iter().enumerate() {
        let s = Strata::at(&base.join(format!("k{k}")), driver);
        s.ok(&["image", "unpack", held.to_str().unwrap(), "--name", "held"]);
        let store = s.root.join(driver);
        let before = on_disk(&store);
        let what = format!("{driver}: SIGINT {delay} ms after {marker:?}");
        let run = signal_at(
            s.command(&["image", "unpack", big.to_str().unwrap()]),
            marker,
            Duration::from_millis(delay),
            Signal::SIGINT,
        );
        let mounted = mounts_under(&s.root);
        assert!(mounted.is_empty(), "{what}: left mounted: {mounted:?}");
        eprintln!("{what}: {:?}", run.status);
        if run.status.success() {
            continue;
        }
        interrupted += 1;
        let changed = changes(&before, &on_disk(&store));
        if run.before_main() {
            assert!(changed.is_empty(), "{what}: killed, and the store on disk changed:\n{}", changed.join("\n"));
            continue;
        }
        run.assert_interrupted(&what);
        assert!(changed.is_empty(), "{what}: the store on disk changed:\n{}", changed.join("\n"));
        assert_eq!(images(&s).len(), 1, "{what}");
    }
    assert!(interrupted >= 1, "{driver}: no unpack was interrupted");
}

strata_tests::on_every_driver_in!(ctrl_c_of_an_unpack);
