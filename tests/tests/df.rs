//! `strata df` is exact on every driver: its figures equal a brute-force count made
//! here, independently, by walking every layer's own tree and working out from the
//! listings which images and containers use each layer.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;
use strata_archive::tarbuild::TarBuilder;
use strata_image::df::{Counts, Df, Usor};
use strata_testkit::hostile_images::Layout;
use strata_tests::changes::gz;
use strata_tests::{on_every_driver_in, seeded_bytes as bytes, Mounted, Strata};

on_every_driver_in!(df_equals_a_brute_force_count);

/// A layer of `files` files of generated sizes under `dir`, with a hardlink.
fn layer(seed: u64, dir: &str, files: usize) -> Vec<u8> {
    let mut b = TarBuilder::new();
    b.dir(dir);
    for i in 0..files {
        let size = ((seed as usize * 7919 + i * 104_729) % 50_000) + i;
        b.file(&format!("{dir}/f{i}"), &bytes(seed * 1000 + i as u64, size));
    }
    b.hardlink(&format!("{dir}/link"), &format!("{dir}/f0"));
    b.build()
}

fn own_tree(s: &Strata, id: &str) -> PathBuf {
    let d = s.root.join(&s.driver).join("layers").join(id);
    if s.driver == "overlay" {
        d.join("diff")
    } else {
        d
    }
}

fn chain_of(s: &Strata, image: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(&s.ok(&["image", "history", image, "--json"])).unwrap();
    v.as_array().unwrap().iter().map(|l| l["chain_id"].as_str().unwrap().to_string()).collect()
}

fn df_equals_a_brute_force_count(driver: &str, base: &Path) {
    let s = Strata::at(&base.join("strata"), driver);
    let work = tempfile::tempdir().unwrap();
    // Three images: two share a base (same layer, same chain ID), one stands alone.
    let shared_base = gz(&layer(1, "base", 30));
    let images = [
        ("one", vec![shared_base.clone(), gz(&layer(2, "app1", 20))]),
        ("two", vec![shared_base, gz(&layer(3, "app2", 10)), gz(&layer(4, "app2b", 5))]),
        ("three", vec![gz(&layer(5, "solo", 40))]),
    ];
    for (name, layers) in &images {
        let l = Layout::new(&work.path().join(name), "v1", layers);
        s.ok(&["image", "unpack", l.dir.to_str().unwrap(), "--name", name]);
    }
    // Two containers over "one" with writes of their own, one over "three".
    for (c, img) in [("c1", "one"), ("c2", "one"), ("c3", "three")] {
        s.ok(&["container", "create", c, "--image", img]);
        let m = Mounted::new(&s, c);
        fs::write(m.path.join(format!("written-{c}")), bytes(c.len() as u64 * 31, 70_000)).unwrap();
        // A file in a lower directory too (copied up where the driver copies up); the
        // image "three" has no such directory.
        let _ = fs::write(m.path.join("base/new"), b"x");
    }
    let got = exact(&s, &images);
    // "two" shares its base with "one" and has layers of its own (no container over it);
    // each container's own writes are its alone.
    let two = got.images.iter().find(|u| u.name == "two").unwrap();
    assert!(two.shared.bytes > 0 && two.shared.bytes < two.total.bytes, "{driver}: {two:?}");
    assert!(got.containers.iter().all(|c| c.unique.bytes >= 70_000), "{driver}: {:?}", got.containers);
    // Asked again, df reads the containers' counts it kept: still exact.
    assert_eq!(exact(&s, &images), got, "{driver}: a second df, nothing changed");
    let usage_file = |c: &str| s.root.join(driver).join("meta").join(format!("{c}.usage"));
    let kept_file = |c: &str| -> Option<Value> { serde_json::from_slice(&fs::read(usage_file(c)).ok()?).ok() };
    let kept = |c: &str| kept_file(c).map(|k| k["bytes"].as_u64().unwrap());
    assert!(kept("c1").is_some() && kept("c2").is_some(), "{driver}: df keeps the containers' counts");
    // df reads the kept count: one planted with its stamp intact is what it reports.
    let c1 = |d: &Df| d.containers.iter().find(|c| c.name == "c1").unwrap().clone();
    let mut planted = kept_file("c1").unwrap();
    planted["bytes"] = (kept("c1").unwrap() + 4096).into();
    fs::write(usage_file("c1"), serde_json::to_vec(&planted).unwrap()).unwrap();
    let read: Df = serde_json::from_str(&s.ok(&["df", "--json"])).unwrap();
    assert_eq!(c1(&read).unique.bytes, c1(&got).unique.bytes + 4096, "{driver}: df read the planted count");
    // What a power cut can leave of the unsynced count (empty, torn, another boot's):
    // none is read; df walks the tree again, is exact, and keeps a good count.
    let whole = serde_json::to_vec(&kept_file("c3").unwrap()).unwrap();
    let mut another_boot = planted.clone();
    another_boot["boot"] = "0000-another-boot".into();
    for (what, content) in [
        ("empty", Vec::new()),
        ("torn", whole[..whole.len() / 2].to_vec()),
        ("another boot's", serde_json::to_vec(&another_boot).unwrap()),
    ] {
        fs::write(usage_file("c1"), &content).unwrap();
        fs::write(usage_file("c3"), &content).unwrap();
        assert_eq!(exact(&s, &images), got, "{driver}: a count left {what}");
        assert_eq!(kept("c1"), Some(c1(&got).unique.bytes), "{driver}: {what}: c1 counted again");
    }
    // A container written again (a file grown, one removed): the mount moves its view
    // count, so the count kept before is not read, and the next df counts it anew.
    let before_mount = kept_file("c2").unwrap();
    {
        let m = Mounted::new(&s, "c2");
        fs::write(m.path.join("written-c2"), bytes(77, 300_000)).unwrap();
        let _ = fs::remove_file(m.path.join("base/new"));
        fs::create_dir_all(m.path.join("more/deeper")).unwrap();
        fs::write(m.path.join("more/deeper/f"), bytes(78, 5000)).unwrap();
    }
    assert_eq!(kept_file("c2"), Some(before_mount), "{driver}: the stale count is still there, unread");
    let after = exact(&s, &images);
    let c2 = |d: &Df| d.containers.iter().find(|c| c.name == "c2").unwrap().unique;
    assert!(c2(&after).bytes > c2(&got).bytes + 200_000, "{driver}: {:?} then {:?}", c2(&got), c2(&after));
}

/// `strata df`, asserted equal to the brute-force count; returns it.
fn exact(s: &Strata, images: &[(&str, Vec<Vec<u8>>)]) -> Df {
    let driver = s.driver.as_str();
    let got: Df = serde_json::from_str(&s.ok(&["df", "--json"])).unwrap();

    // The brute force: every layer's own tree walked now; users from the listings.
    let layers: Value = serde_json::from_str(&s.ok(&["layer", "ls", "--json"])).unwrap();
    let mut usage: BTreeMap<String, Counts> = BTreeMap::new();
    let mut parent: BTreeMap<String, Option<String>> = BTreeMap::new();
    let mut containers = Vec::new();
    for l in layers.as_array().unwrap() {
        let id = l["id"].as_str().unwrap().to_string();
        let u = driver_core::sys::disk_usage(&own_tree(s, &id)).unwrap();
        usage.insert(id.clone(), Counts { bytes: u.bytes, inodes: u.inodes });
        parent.insert(id.clone(), l["parent"].as_str().map(str::to_string));
        if l["writable"].as_bool().unwrap() {
            containers.push(id);
        }
    }
    let mut users: Vec<(String, bool, BTreeSet<String>)> = Vec::new();
    for (name, _) in images {
        users.push((name.to_string(), false, chain_of(s, name).into_iter().collect()));
    }
    for c in &containers {
        let mut chain = BTreeSet::new();
        let mut cur = Some(c.clone());
        while let Some(id) = cur {
            cur = parent[&id].clone();
            chain.insert(id);
        }
        users.push((c.clone(), true, chain));
    }
    let count = |l: &str| users.iter().filter(|(_, _, ls)| ls.contains(l)).count();
    let mut want = Df::default();
    for (name, container, ls) in &users {
        let mut u = Usor { name: name.clone(), layers: ls.len(), ..Default::default() };
        for l in ls {
            let lu = usage[l];
            let part = if count(l) > 1 { &mut u.shared } else { &mut u.unique };
            for c in [&mut u.total, part] {
                c.bytes += lu.bytes;
                c.inodes += lu.inodes;
            }
        }
        if *container {
            want.containers.push(u);
        } else {
            want.images.push(u);
        }
    }
    want.images.sort_by(|a, b| a.name.cmp(&b.name));
    let mut got_images = got.images.clone();
    got_images.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(got_images, want.images, "{driver}: images");
    assert_eq!(got.containers, want.containers, "{driver}: containers");
    let all =
        usage.values().fold(Counts::default(), |a, u| Counts { bytes: a.bytes + u.bytes, inodes: a.inodes + u.inodes });
    assert_eq!(got.layers, all, "{driver}: every layer once");
    got
}
