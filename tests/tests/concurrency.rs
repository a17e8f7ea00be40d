//! Several `strata` processes on one root at once, on every driver: unpacks of images
//! sharing a base, mounts and unmounts of the same layer, a removal racing mounts,
//! read-only commands (and other writers) during an unpack that is still running, and
//! `image rm` and the cleanup of a killed unpack racing unpacks that need its layers.
//! The store is never corrupted, no layer is applied twice, and a long unpack blocks no
//! one: the store lock is held for metadata changes only (driver-core/src/store.rs).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use strata_cli::workload::{generate, gzip, WorkloadSize};
use strata_scratch::{FsKind, ScratchFs};
use strata_testkit::conformance::mounts_under;
use strata_testkit::tree::{CompareOptions, Kind, Tree};
use strata_tests::{privileged, Strata};

fn layout(dir: &Path, layers: usize) -> PathBuf {
    let blobs: Vec<Vec<u8>> =
        generate(21, WorkloadSize::small()).into_iter().take(layers).map(|l| gzip(&l.tar)).collect();
    strata_image::image::write_layout(dir, "img", &blobs).unwrap();
    dir.to_path_buf()
}

fn layers(s: &Strata) -> Vec<Value> {
    serde_json::from_str::<Value>(&s.ok(&["layer", "ls", "--json"])).unwrap().as_array().unwrap().clone()
}

fn tree_of(s: &Strata, id: &str) -> Tree {
    let view = s.ok(&["layer", "mount", id]).trim().to_string();
    let t = Tree::capture(Path::new(&view)).unwrap();
    s.ok(&["layer", "unmount", id]);
    t
}

fn concurrency(driver: &str, base: &Path) {
    let work = tempfile::tempdir().unwrap();
    let three = layout(&work.path().join("three"), 3);
    let two = layout(&work.path().join("two"), 2);

    // The reference: one process, one image after the other.
    let clean = Strata::at(&base.join("clean"), driver);
    let top3 = clean.ok(&["image", "unpack", three.to_str().unwrap(), "--name", "three"]).trim().to_string();
    let top2 = clean.ok(&["image", "unpack", two.to_str().unwrap(), "--name", "two"]).trim().to_string();
    let (want3, want2) = (tree_of(&clean, &top3), tree_of(&clean, &top2));

    // Six unpacks at once, of two images sharing their first two layers.
    let s = Strata::at(&base.join("shared"), driver);
    let children: Vec<_> = (0..6)
        .map(|i| {
            let (src, name) = if i % 2 == 0 { (&three, format!("three-{i}")) } else { (&two, format!("two-{i}")) };
            s.command(&["image", "unpack", src.to_str().unwrap(), "--name", &name])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{driver}: a concurrent unpack failed: {}", String::from_utf8_lossy(&o.stderr));
    }
    let listed = layers(&s);
    let mut ids: Vec<&str> = listed.iter().map(|l| l["id"].as_str().unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "{driver}: each shared layer is stored once: {listed:?}");
    for (top, want) in [(&top3, &want3), (&top2, &want2)] {
        let d = tree_of(&s, top).differences(want, &CompareOptions::default());
        assert!(d.is_empty(), "{driver}: {top} differs after concurrent unpacks:\n{}", d.join("\n"));
    }
    let images: Value = serde_json::from_str(&s.ok(&["image", "ls", "--json"])).unwrap();
    assert_eq!(images.as_array().unwrap().len(), 6, "{driver}: six images recorded");

    // Four processes mounting, reading and unmounting the same layer, over and over:
    // a mount stays while any of them holds it.
    // A regular file both images have (from their shared base layer).
    let probe = want2
        .entries
        .iter()
        .find(|(p, n)| matches!(n.kind, Kind::File { .. }) && want3.entries.get(*p) == Some(n))
        .map(|(p, _)| p.clone())
        .unwrap();
    let script = format!(
        "for i in $(seq 15); do v=$({bin} --root {root} --driver {driver} layer mount {top3}) || exit 1; \
         cat \"$v/{probe}\" >/dev/null || exit 2; \
         {bin} --root {root} --driver {driver} layer unmount {top3} || exit 3; done",
        bin = strata_tests::strata_bin().display(),
        root = s.root.display(),
        probe = probe.display(),
    );
    let loops: Vec<_> =
        (0..4).map(|_| std::process::Command::new("sh").args(["-c", &script]).spawn().unwrap()).collect();
    for mut l in loops {
        assert!(l.wait().unwrap().success(), "{driver}: a mount/read/unmount loop failed");
    }
    assert!(mounts_under(&s.root).is_empty(), "{driver}: the last unmount released the mount");
    assert!(layers(&s).iter().all(|l| l["mounted"] == false), "{driver}: mount counts back to zero");

    // A removal racing a mount loop: either the removal is refused (mounted) or it
    // wins and the later mounts find no layer; never a mount of a removed layer.
    s.ok(&["container", "create", "c", "--image", "three-0"]);
    let racer_script = format!(
        "for i in $(seq 20); do {bin} --root {root} --driver {driver} layer mount c >/dev/null 2>&1 && \
         {bin} --root {root} --driver {driver} layer unmount c; done; true",
        bin = strata_tests::strata_bin().display(),
        root = s.root.display(),
    );
    let mut racer = std::process::Command::new("sh").args(["-c", &racer_script]).spawn().unwrap();
    let mut removed = false;
    for _ in 0..200 {
        let o = s.run(&["layer", "rm", "c"]);
        if o.status.success() {
            removed = true;
            break;
        }
        let e = String::from_utf8_lossy(&o.stderr);
        // Busy: exit 6; 6 also means children or a container, so the line says which.
        assert_eq!(o.status.code(), Some(6), "{driver}: rm failed for another reason than a mount: {e}");
        assert!(e.contains("mounted"), "{driver}: rm failed for another reason than a mount: {e}");
        std::thread::sleep(Duration::from_millis(5));
    }
    racer.wait().unwrap();
    assert!(mounts_under(&s.root).is_empty(), "{driver}: nothing mounted after the race");
    let still = layers(&s).iter().any(|l| l["id"] == "c");
    assert_eq!(still, !removed, "{driver}: the container is listed iff its removal never won");
    if !removed {
        s.ok(&["layer", "rm", "c"]);
    }

    // An apply that is still reading its tar (from a pipe we hold open) blocks no one:
    // listing, mounting, another apply and a removal all complete meanwhile.
    let tar = generate(22, WorkloadSize::small()).remove(0).tar;
    let mut slow = s
        .command(&["layer", "apply", "slow", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = slow.stdin.take().unwrap();
    stdin.write_all(&tar[..tar.len() / 2]).unwrap();
    stdin.flush().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    s.ok(&["layer", "ls"]);
    s.ok(&["image", "ls"]);
    let v = s.ok(&["layer", "mount", &top2]);
    assert!(Path::new(v.trim()).join(&probe).exists(), "{driver}: the mounted view reads");
    s.ok(&["layer", "unmount", &top2]);
    let other = generate(23, WorkloadSize::small()).remove(0).tar;
    let other_path = work.path().join("other.tar");
    std::fs::write(&other_path, other).unwrap();
    s.ok(&["layer", "apply", "other", other_path.to_str().unwrap()]);
    s.ok(&["layer", "rm", "other"]);
    assert!(slow.try_wait().unwrap().is_none(), "{driver}: the slow apply is still reading its tar");
    assert!(!layers(&s).iter().any(|l| l["id"] == "slow"), "{driver}: a half-applied layer is not listed");
    stdin.write_all(&tar[tar.len() / 2..]).unwrap();
    drop(stdin);
    let o = slow.wait_with_output().unwrap();
    assert!(o.status.success(), "{driver}: {}", String::from_utf8_lossy(&o.stderr));
    assert!(layers(&s).iter().any(|l| l["id"] == "slow"), "{driver}: the slow apply committed");

    removal_and_cleanup_race_unpacks(driver, base);
}

/// The chain IDs an image record of `s` lists, by image name.
fn recorded(s: &Strata) -> Vec<(String, Vec<String>)> {
    let v: Value = serde_json::from_str(&s.ok(&["image", "ls", "--json"])).unwrap();
    let names: Vec<String> = v.as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap().to_string()).collect();
    let dir = s.root.join(&s.driver).join("images");
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        let hidden = e.file_name().to_string_lossy().starts_with('.');
        if !hidden && e.path().extension().is_some_and(|x| x == "json") {
            let rec: Value = serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap();
            let name = rec["name"].as_str().unwrap().to_string();
            if names.contains(&name) {
                let layers = rec["layers"].as_array().unwrap().iter().map(|l| l.as_str().unwrap().to_string());
                out.push((name, layers.collect()));
            }
        }
    }
    out.sort();
    out
}

/// Every image listed has all its layers, and every layer is some image's.
fn assert_images_whole(s: &Strata, what: &str) {
    let ids: Vec<String> = layers(s).iter().map(|l| l["id"].as_str().unwrap().to_string()).collect();
    let recs = recorded(s);
    for (name, chain) in &recs {
        for l in chain {
            assert!(ids.contains(l), "{what}: image {name} lost its layer {l}");
        }
    }
    for id in &ids {
        assert!(recs.iter().any(|(_, c)| c.contains(id)), "{what}: layer {id} is no image's");
    }
}

/// `image rm` of an image racing the unpack of another that shares its base, and the
/// cleanup of a killed unpack (which every command runs) racing a new unpack of the same
/// image: the unpack never ends with an image missing a layer, the removal never takes
/// a layer the other image uses, and nothing is left that no image uses.
fn removal_and_cleanup_race_unpacks(driver: &str, base: &Path) {
    let work = tempfile::tempdir().unwrap();
    let three = layout(&work.path().join("three"), 3);
    let two = layout(&work.path().join("two"), 2);
    let clean = Strata::at(&base.join("clean-race"), driver);
    let start = std::time::Instant::now();
    let top3 = clean.ok(&["image", "unpack", three.to_str().unwrap(), "--name", "three"]).trim().to_string();
    let unpack_time = start.elapsed();
    let want3 = tree_of(&clean, &top3);

    let s = Strata::at(&base.join("race"), driver);
    let spawn_unpack = || {
        s.command(&["image", "unpack", three.to_str().unwrap(), "--name", "three"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // The unpack succeeded, its image is whole and right, and goes with all its layers.
    let finish = |unpack: std::process::Child, what: &str| {
        let o = unpack.wait_with_output().unwrap();
        assert!(o.status.success(), "{what}: {}", String::from_utf8_lossy(&o.stderr));
        assert_images_whole(&s, what);
        let d = tree_of(&s, &top3).differences(&want3, &CompareOptions::default());
        assert!(d.is_empty(), "{what}: {}", d.join("\n"));
        s.ok(&["image", "rm", "three"]);
        assert!(layers(&s).is_empty(), "{what}: {:?}", layers(&s));
    };
    for round in 0..6u32 {
        let what = format!("{driver}: image rm racing an unpack, round {round}");
        s.ok(&["image", "unpack", two.to_str().unwrap(), "--name", "two"]);
        let unpack = spawn_unpack();
        std::thread::sleep(unpack_time.mul_f64(round as f64 / 6.0));
        let rm = s.run(&["image", "rm", "two"]);
        assert!(rm.status.success(), "{what}: {}", String::from_utf8_lossy(&rm.stderr));
        finish(unpack, &what);
    }
    for round in 0..4u32 {
        let what = format!("{driver}: a killed unpack's cleanup racing a new one, round {round}");
        let mut killed = spawn_unpack();
        std::thread::sleep(unpack_time.mul_f64((round as f64 + 0.5) / 4.0));
        let _ = killed.kill();
        killed.wait().unwrap();
        // The new unpack and three other commands, each of which cleans up, at once.
        let unpack = spawn_unpack();
        let others: Vec<_> = (0..3)
            .map(|i| {
                let args: &[&str] = if i == 1 { &["image", "ls"] } else { &["layer", "ls"] };
                s.command(args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap()
            })
            .collect();
        for o in others {
            let o = o.wait_with_output().unwrap();
            assert!(o.status.success(), "{what}: {}", String::from_utf8_lossy(&o.stderr));
        }
        finish(unpack, &what);
    }
}

#[test]
fn vfs_under_concurrency() {
    if !privileged("the concurrency tests") {
        return;
    }
    let scratch = ScratchFs::new(FsKind::Ext4, 2 << 30).unwrap();
    concurrency("vfs", scratch.path());
}

#[test]
fn overlay_under_concurrency() {
    if !privileged("the concurrency tests") {
        return;
    }
    let scratch = ScratchFs::new(FsKind::Ext4, 2 << 30).unwrap();
    concurrency("overlay", scratch.path());
}

#[test]
fn btrfs_under_concurrency() {
    if !privileged("the concurrency tests") {
        return;
    }
    let scratch = ScratchFs::new(FsKind::Btrfs, 2 << 30).unwrap();
    concurrency("btrfs", scratch.path());
}
