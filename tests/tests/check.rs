//! `strata check` finds every kind of damage on every driver, each planted here as a
//! power cut or a failing disk leaves it, and `check --repair` heals what the store
//! keeps enough to heal: the image's view comes back equal to what it was when
//! unpacked (a reference capture of the same unpack), and a container over the image
//! keeps its writes.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use strata_archive::tarbuild::TarBuilder;
use strata_testkit::hostile_images::Layout;
use strata_testkit::tree::{CompareOptions, Tree};
use strata_tests::changes::gz;
use strata_tests::{on_every_driver_in, seeded_bytes as bytes, Mounted, Strata};

on_every_driver_in!(
    a_zero_byte_file,
    a_flipped_byte,
    a_missing_file,
    an_empty_layer_record,
    an_empty_image_record,
    a_truncated_blob,
    a_leftover_staging_directory,
    a_zero_byte_layer_record_nothing_makes_again,
    a_half_made_layer_whose_blob_is_lost,
    a_dead_unpack_with_a_zero_byte_layer_record,
    a_healthy_store_passes,
    the_debian_image_damaged_and_repaired,
);

/// A three-layer image: a base with a tool, config and links; an application layer
/// that replaces a file and deletes one (a whiteout); a small top.
fn image(dir: &Path) -> Layout {
    let base = TarBuilder::new()
        .dir("bin")
        .file("bin/tool", &bytes(1, 300_000))
        .file("bin/small", b"#!/bin/sh\necho hi\n")
        .symlink("bin/link", "tool")
        .dir("etc")
        .file("etc/conf", &bytes(2, 5000))
        .file("etc/gone", b"deleted above")
        .build();
    let app = TarBuilder::new()
        .dir("app")
        .file("app/main", &bytes(3, 120_000))
        .file("etc/conf", &bytes(4, 6000))
        .whiteout("etc/gone")
        .build();
    let top = TarBuilder::new().dir("app").file("app/version", b"1.0\n").build();
    Layout::new(dir, "v1", &[gz(&base), gz(&app), gz(&top)])
}

/// A store with the image unpacked as `img` and a container `c` over it that wrote a
/// file; the image's view as unpacked (the reference) and the layer IDs, bottom first.
struct Setup {
    s: Strata,
    _work: tempfile::TempDir,
    layout: Layout,
    reference: Tree,
    layers: Vec<String>,
}

fn setup(driver: &str, base: &Path) -> Setup {
    let s = Strata::at(&base.join("strata"), driver);
    let work = tempfile::tempdir().unwrap();
    let layout = image(&work.path().join("img"));
    let src = layout.dir.to_str().unwrap().to_string();
    s.ok(&["image", "unpack", &src, "--name", "img"]);
    let layers: Vec<String> = {
        let v: Value = serde_json::from_str(&s.ok(&["image", "history", "img", "--json"])).unwrap();
        let mut ids: Vec<String> =
            v.as_array().unwrap().iter().map(|l| l["chain_id"].as_str().unwrap().to_string()).collect();
        // History lists the top first.
        ids.reverse();
        ids
    };
    assert_eq!(layers.len(), 3, "{driver}: {layers:?}");
    let reference = view(&s, &layers[2]);
    s.ok(&["container", "create", "c", "--image", "img"]);
    {
        let m = Mounted::new(&s, "c");
        fs::write(m.path.join("app/written-by-c"), b"the container's own").unwrap();
        fs::write(m.path.join("etc/conf"), b"changed by c").unwrap();
    }
    Setup { s, _work: work, layout, reference, layers }
}

/// The tree of layer `id`'s view.
fn view(s: &Strata, id: &str) -> Tree {
    let m = Mounted::new(s, id);
    Tree::capture(&m.path).unwrap()
}

fn opts() -> CompareOptions {
    CompareOptions { file_mtime: true, ..Default::default() }
}

/// The driver's folder.
fn dir(s: &Strata) -> PathBuf {
    s.root.join(&s.driver)
}

/// Layer `id`'s own tree on disk, as the driver keeps it.
fn own_tree(s: &Strata, id: &str) -> PathBuf {
    let d = dir(s).join("layers").join(id);
    if s.driver == "overlay" {
        d.join("diff")
    } else {
        d
    }
}

/// Lets the test change a committed layer as a failing disk would: btrfs layers are
/// read-only subvolumes (the test's own tool turns that off and on again).
struct Writable<'a>(&'a Strata, PathBuf);

impl<'a> Writable<'a> {
    fn new(s: &'a Strata, id: &str) -> Writable<'a> {
        let p = own_tree(s, id);
        if s.driver == "btrfs" {
            let st = Command::new("btrfs").args(["property", "set", "-ts"]).arg(&p).args(["ro", "false"]).status();
            assert!(st.unwrap().success(), "btrfs property set ro false");
        }
        Writable(s, p)
    }
}

impl Drop for Writable<'_> {
    fn drop(&mut self) {
        if self.0.driver == "btrfs" {
            let _ = Command::new("btrfs").args(["property", "set", "-ts"]).arg(&self.1).args(["ro", "true"]).status();
        }
    }
}

/// `check` (must fail) and its problem lines.
fn problems(s: &Strata) -> Vec<String> {
    let o = s.run(&["check"]);
    assert_eq!(o.status.code(), Some(1), "{}: check should fail: {}", s.driver, String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap().lines().map(str::to_string).collect()
}

/// `check --repair` must succeed; then `check` passes, the image's view equals the
/// reference and the container still has its writes.
fn repaired(t: &Setup) -> String {
    let out = t.s.ok(&["check", "--repair"]);
    t.s.ok(&["check"]);
    let got = view(&t.s, &t.layers[2]);
    let diffs = t.reference.differences(&got, &opts());
    assert!(diffs.is_empty(), "{}: the repaired view differs: {diffs:?}", t.s.driver);
    container_kept(t);
    out
}

fn container_kept(t: &Setup) {
    let m = Mounted::new(&t.s, "c");
    assert_eq!(fs::read(m.path.join("app/written-by-c")).unwrap(), b"the container's own", "{}", t.s.driver);
    assert_eq!(fs::read(m.path.join("etc/conf")).unwrap(), b"changed by c", "{}", t.s.driver);
    assert_eq!(fs::read(m.path.join("bin/tool")).unwrap(), bytes(1, 300_000), "{}", t.s.driver);
}

fn a_healthy_store_passes(driver: &str, base: &Path) {
    let t = setup(driver, base);
    let out = t.s.ok(&["check"]);
    assert!(out.is_empty(), "{driver}: {out}");
    let v: Value = serde_json::from_str(&t.s.ok(&["check", "--json"])).unwrap();
    assert_eq!(v["healthy"], true);
    assert_eq!(v["checked"]["layers"], 4, "{driver}: three image layers and the container's");
    assert_eq!(v["checked"]["images"], 1);
}

fn a_zero_byte_file(driver: &str, base: &Path) {
    let t = setup(driver, base);
    {
        let w = Writable::new(&t.s, &t.layers[0]);
        OpenOptions::new().write(true).open(w.1.join("bin/tool")).unwrap().set_len(0).unwrap();
    }
    let p = problems(&t.s);
    let want = format!("layer {}: file /bin/tool: 0 bytes, recorded 300000", t.layers[0]);
    assert!(p.contains(&want), "{driver}: {p:?}");
    let v: Value = serde_json::from_slice(&t.s.run(&["check", "--json"]).stdout).unwrap();
    let first = &v["problems"][0];
    assert_eq!((first["kind"].as_str(), first["subject"].as_str()), (Some("layer"), Some(t.layers[0].as_str())));
    let out = repaired(&t);
    assert!(out.contains("applied again from blob"), "{driver}: {out}");
}

fn a_flipped_byte(driver: &str, base: &Path) {
    let t = setup(driver, base);
    {
        let w = Writable::new(&t.s, &t.layers[1]);
        let path = w.1.join("app/main");
        let mtime = fs::metadata(&path).unwrap().modified().unwrap();
        let f = OpenOptions::new().write(true).read(true).open(&path).unwrap();
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, 70_000).unwrap();
        f.write_all_at(&[b[0] ^ 0x01], 70_000).unwrap();
        // In place, same size and the same mtime: only the content tells.
        f.set_modified(mtime).unwrap();
    }
    let p = problems(&t.s);
    let want =
        format!("layer {}: file /app/main: content differs from the record (same size: a byte differs)", t.layers[1]);
    assert_eq!(p, vec![want], "{driver}");
    repaired(&t);
}

fn a_missing_file(driver: &str, base: &Path) {
    let t = setup(driver, base);
    {
        let w = Writable::new(&t.s, &t.layers[0]);
        fs::remove_file(w.1.join("etc/conf")).unwrap();
    }
    let p = problems(&t.s);
    assert!(p.contains(&format!("layer {}: file /etc/conf: missing", t.layers[0])), "{driver}: {p:?}");
    repaired(&t);
}

fn an_empty_layer_record(driver: &str, base: &Path) {
    let t = setup(driver, base);
    let meta = dir(&t.s).join("meta").join(format!("{}.json", t.layers[1]));
    fs::write(&meta, b"").unwrap();
    let p = problems(&t.s);
    assert!(p.contains(&format!("layer record {}: record empty", t.layers[1])), "{driver}: {p:?}");
    repaired(&t);
}

fn an_empty_image_record(driver: &str, base: &Path) {
    let t = setup(driver, base);
    let images = dir(&t.s).join("images");
    let rec = fs::read_dir(&images)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "json"))
        .unwrap();
    fs::write(&rec, b"").unwrap();
    let p = problems(&t.s);
    assert_eq!(p, vec![format!("image {}: record empty", rec.display())], "{driver}");
    // Until the repair, the damaged record is left out of the listing, not the cause of
    // its failure (as after a power cut under --sync none).
    let before: Value = serde_json::from_str(&t.s.ok(&["image", "ls", "--json"])).unwrap();
    assert_eq!(before.as_array().map(|a| a.len()), Some(0), "{driver}: {before}");
    let out = t.s.ok(&["check", "--repair"]);
    assert!(out.contains("rebuilt from the layer chain"), "{driver}: {out}");
    t.s.ok(&["check"]);
    // The image is listed again, with its layers; its name was in the lost record only.
    let v: Value = serde_json::from_str(&t.s.ok(&["image", "ls", "--json"])).unwrap();
    let listed = v.as_array().unwrap();
    assert_eq!(listed.len(), 1, "{driver}: {v}");
    assert_eq!(listed[0]["top"].as_str(), Some(t.layers[2].as_str()), "{driver}");
    let got = view(&t.s, &t.layers[2]);
    assert!(t.reference.differences(&got, &opts()).is_empty(), "{driver}");
    container_kept(&t);
}

fn a_truncated_blob(driver: &str, base: &Path) {
    let t = setup(driver, base);
    let digest = t.layout.layer_digest(1);
    let blob = dir(&t.s).join("content/blobs/sha256").join(digest.trim_start_matches("sha256:"));
    let len = fs::metadata(&blob).unwrap().len();
    OpenOptions::new().write(true).open(&blob).unwrap().set_len(len / 2).unwrap();
    let p = problems(&t.s);
    assert_eq!(
        p,
        vec![format!("blob {digest}: its {} bytes do not have this digest (truncated or corrupt)", len / 2)],
        "{driver}"
    );
    // The blob cannot be made again here: repair removes it and says how to get it back.
    let o = t.s.run(&["check", "--repair"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{driver}: {out}");
    assert!(out.contains(&format!("repaired {digest}: removed")) && out.contains("unpack or pull"), "{driver}: {out}");
    // The layers are intact: the views are as they were.
    assert!(t.reference.differences(&view(&t.s, &t.layers[2]), &opts()).is_empty(), "{driver}");
    container_kept(&t);
    // Unpacking the image again keeps the blob again: the store is whole.
    t.s.ok(&["image", "unpack", t.layout.dir.to_str().unwrap(), "--name", "img"]);
    t.s.ok(&["check"]);
}

fn a_leftover_staging_directory(driver: &str, base: &Path) {
    let t = setup(driver, base);
    // What a process killed mid-apply leaves: a staging directory and a lock no one holds.
    let staging = dir(&t.s).join("staging");
    let left = staging.join("4000000-0-0");
    fs::create_dir_all(left.join("usr/bin")).unwrap();
    fs::write(left.join("usr/bin/half"), b"half written").unwrap();
    fs::write(staging.join("4000000-0-0.lock"), b"").unwrap();
    let p = problems(&t.s);
    assert_eq!(p.len(), 1, "{driver}: {p:?}");
    assert!(p[0].starts_with(&format!("staging {}: left by a process", left.display())), "{driver}: {p:?}");
    assert!(!left.exists(), "{driver}: opening the store discards it");
    t.s.ok(&["check"]);
    container_kept(&t);
}

/// The real python3 image of the Debian fixture: a flipped byte in the python binary
/// and a 0-byte bash, each in another layer; check names both, repair restores every
/// layer's view as unpacked, and a container over the image keeps its write.
fn the_debian_image_damaged_and_repaired(driver: &str, base: &Path) {
    let fixture = strata_tests::debian_fixture();
    let s = Strata::at(&base.join("strata"), driver);
    let src = format!("{}:debian", fixture.join("layout").display());
    s.ok(&["image", "unpack", &src, "--name", "py"]);
    let v: Value = serde_json::from_str(&s.ok(&["image", "history", "py", "--json"])).unwrap();
    let mut layers: Vec<String> =
        v.as_array().unwrap().iter().map(|l| l["chain_id"].as_str().unwrap().to_string()).collect();
    layers.reverse();
    let before: Vec<Tree> = layers.iter().map(|l| view(&s, l)).collect();
    s.ok(&["container", "create", "c", "--image", "py"]);
    {
        let m = Mounted::new(&s, "c");
        fs::write(m.path.join("root/notes"), b"kept").unwrap();
    }
    s.ok(&["check"]);
    let python = "usr/bin/python3.11";
    let owner = layers.iter().position(|l| own_tree(&s, l).join(python).exists()).expect("a layer holds python");
    {
        let w = Writable::new(&s, &layers[owner]);
        let path = w.1.join(python);
        let mtime = fs::metadata(&path).unwrap().modified().unwrap();
        let f = OpenOptions::new().write(true).read(true).open(&path).unwrap();
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, 4096).unwrap();
        f.write_all_at(&[!b[0]], 4096).unwrap();
        f.set_modified(mtime).unwrap();
    }
    let bash_size = {
        let w = Writable::new(&s, &layers[0]);
        let path = w.1.join("usr/bin/bash");
        let size = fs::metadata(&path).unwrap().len();
        OpenOptions::new().write(true).open(&path).unwrap().set_len(0).unwrap();
        size
    };
    let o = s.run(&["check"]);
    assert_eq!(o.status.code(), Some(1), "{driver}");
    let out = String::from_utf8(o.stdout).unwrap();
    let flipped =
        format!("layer {}: file /{python}: content differs from the record (same size: a byte differs)", layers[owner]);
    let zeroed = format!("layer {}: file /usr/bin/bash: 0 bytes, recorded {bash_size}", layers[0]);
    assert!(out.lines().any(|l| l == flipped) && out.lines().any(|l| l == zeroed), "{driver}: {out}");
    s.ok(&["check", "--repair"]);
    s.ok(&["check"]);
    for (l, want) in layers.iter().zip(&before) {
        let diffs = want.differences(&view(&s, l), &opts());
        assert!(diffs.is_empty(), "{driver}: layer {l} after repair: {diffs:?}");
    }
    let m = Mounted::new(&s, "c");
    assert_eq!(fs::read(m.path.join("root/notes")).unwrap(), b"kept", "{driver}");
}

/// A second image, sharing no layer with [`image`]'s, with no container over it.
fn other_image(dir: &Path) -> Layout {
    let base = TarBuilder::new().dir("opt").file("opt/data", &bytes(11, 200_000)).file("opt/small", b"s\n").build();
    let top = TarBuilder::new().dir("srv").file("srv/index", &bytes(12, 40_000)).build();
    Layout::new(dir, "v1", &[gz(&base), gz(&top)])
}

/// Unpacks [`other_image`] as `other`; its layer IDs, bottom first.
fn unpack_other(t: &Setup) -> (Layout, Vec<String>) {
    let layout = other_image(&t._work.path().join("other"));
    t.s.ok(&["image", "unpack", layout.dir.to_str().unwrap(), "--name", "other"]);
    let v: Value = serde_json::from_str(&t.s.ok(&["image", "history", "other", "--json"])).unwrap();
    let mut ids: Vec<String> =
        v.as_array().unwrap().iter().map(|l| l["chain_id"].as_str().unwrap().to_string()).collect();
    ids.reverse();
    (layout, ids)
}

/// The IDs `layer ls` lists (it must succeed).
fn listed_layers(s: &Strata) -> Vec<String> {
    let v: Value = serde_json::from_str(&s.ok(&["layer", "ls", "--json"])).unwrap();
    v.as_array().unwrap().iter().map(|l| l["id"].as_str().unwrap().to_string()).collect()
}

/// The names `image ls` lists (it must succeed).
fn listed_images(s: &Strata) -> Vec<String> {
    let v: Value = serde_json::from_str(&s.ok(&["image", "ls", "--json"])).unwrap();
    v.as_array().unwrap().iter().map(|l| l["name"].as_str().unwrap().to_string()).collect()
}

/// What a power cut under `--sync none` leaves of a layer applied by `layer apply` (no
/// image, no blob): its metadata 0 bytes. The store still lists everything else; check
/// names it; repair, with nothing to make it again, removes it and says so.
fn a_zero_byte_layer_record_nothing_makes_again(driver: &str, base: &Path) {
    let t = setup(driver, base);
    let tar = t._work.path().join("loose.tar");
    fs::write(&tar, TarBuilder::new().dir("loose").file("loose/f", &bytes(21, 9000)).build()).unwrap();
    t.s.ok(&["layer", "apply", "loose", "--parent", &t.layers[2], tar.to_str().unwrap()]);
    fs::write(dir(&t.s).join("meta/loose.json"), b"").unwrap();
    // One damaged record hides no other layer and no image.
    let layers = listed_layers(&t.s);
    assert!(!layers.contains(&"loose".to_string()) && layers.contains(&t.layers[2]), "{driver}: {layers:?}");
    assert_eq!(listed_images(&t.s), vec!["img".to_string()], "{driver}");
    let p = problems(&t.s);
    assert_eq!(p, vec!["layer record loose: record empty".to_string()], "{driver}");
    let out = repaired(&t);
    assert!(out.contains("repaired loose: no image lists it and no blob makes it again: removed"), "{driver}: {out}");
    assert!(!dir(&t.s).join("layers/loose").exists(), "{driver}: its content goes with it");
    assert!(!dir(&t.s).join("meta/loose.files").exists(), "{driver}: and its content record");
}

/// What a power cut under `--sync none` leaves of an unpack: a layer listed with a file
/// that lost its data, and the blob it was made from truncated. Nothing can make the
/// layer again: repair removes it and the image that lists it, saying how to get it
/// back, and leaves the other image and the container over it as they were.
fn a_half_made_layer_whose_blob_is_lost(driver: &str, base: &Path) {
    let t = setup(driver, base);
    let (layout, other) = unpack_other(&t);
    {
        let w = Writable::new(&t.s, &other[1]);
        OpenOptions::new().write(true).open(w.1.join("srv/index")).unwrap().set_len(0).unwrap();
    }
    let digest = layout.layer_digest(1);
    let blob = dir(&t.s).join("content/blobs/sha256").join(digest.trim_start_matches("sha256:"));
    let len = fs::metadata(&blob).unwrap().len();
    OpenOptions::new().write(true).open(&blob).unwrap().set_len(len / 3).unwrap();
    let p = problems(&t.s);
    assert!(p.contains(&format!("layer {}: file /srv/index: 0 bytes, recorded 40000", other[1])), "{driver}: {p:?}");
    assert!(p.iter().any(|l| l.starts_with(&format!("blob {digest}: "))), "{driver}: {p:?}");
    let out = repaired(&t);
    assert!(
        out.contains("repaired other: removed: its layer") && out.contains("unpack or pull other again"),
        "{driver}: {out}"
    );
    // Nothing half-made is listed: the image and its damaged layer are gone.
    assert_eq!(listed_images(&t.s), vec!["img".to_string()], "{driver}");
    assert!(!listed_layers(&t.s).contains(&other[1]), "{driver}");
    // Unpacking it again brings it back whole.
    t.s.ok(&["image", "unpack", layout.dir.to_str().unwrap(), "--name", "other"]);
    t.s.ok(&["check"]);
}

/// What a power cut under `--sync none` during an unpack leaves: its pending record,
/// whose process is gone, naming layers it made, one with a 0-byte metadata record,
/// and a second pending record that is itself 0 bytes. Repair finishes both: the
/// dead unpack's layers go, and so do the records.
fn a_dead_unpack_with_a_zero_byte_layer_record(driver: &str, base: &Path) {
    let t = setup(driver, base);
    let (_, other) = unpack_other(&t);
    // The unpack died before its image record was written.
    let images = dir(&t.s).join("images");
    let rec = images.join(format!("{}.json", driver_core::digest::sha256(b"other").trim_start_matches("sha256:")));
    assert!(rec.exists(), "{driver}: the image record of `other` is {}", rec.display());
    fs::remove_file(&rec).unwrap();
    let pending = images.join("pending");
    let names = serde_json::json!({"name": "other", "layers": other, "preexisting": 0, "failed": false});
    fs::write(pending.join("4000000-0.json"), serde_json::to_vec(&names).unwrap()).unwrap();
    fs::write(pending.join("4000000-1.json"), b"").unwrap();
    fs::write(dir(&t.s).join("meta").join(format!("{}.json", other[1])), b"").unwrap();
    // (`check` finishes no unpack; every other command does as it starts.)
    let p = problems(&t.s);
    assert!(p.contains(&format!("layer record {}: record empty", other[1])), "{driver}: {p:?}");
    assert_eq!(p.iter().filter(|l| l.starts_with("pending ")).count(), 2, "{driver}: {p:?}");
    repaired(&t);
    assert_eq!(fs::read_dir(&pending).unwrap().count(), 0, "{driver}: no pending record is left");
    let layers = listed_layers(&t.s);
    assert!(other.iter().all(|l| !layers.contains(l)), "{driver}: the dead unpack's layers are gone: {layers:?}");
    assert!(!dir(&t.s).join("layers").join(&other[1]).exists(), "{driver}");
}
