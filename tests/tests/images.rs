//! Images end to end through the `strata` binary: verification of every blob and
//! diff_id, the three source formats, layer sharing and removal, and a real pull
//! from Debian's docker-registry on 127.0.0.1.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use strata_cli::workload::{generate, gzip, WorkloadSize};
use strata_tests::registry::DockerRegistry;
use strata_tests::{privileged, Strata};

/// An image layout of generated layers (gzip), tagged `tag`; returns the layout dir.
fn make_layout(dir: &Path, tag: &str, seed: u64, layers: usize) -> PathBuf {
    let blobs: Vec<Vec<u8>> =
        generate(seed, WorkloadSize::small()).into_iter().take(layers).map(|l| gzip(&l.tar)).collect();
    strata_image::image::write_layout(dir, tag, &blobs).unwrap();
    dir.to_path_buf()
}

use driver_core::digest::sha256 as digest;

fn blob(layout: &Path, d: &str) -> PathBuf {
    layout.join("blobs/sha256").join(d.trim_start_matches("sha256:"))
}

fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(p).unwrap()).unwrap()
}

/// The manifest of the only image in a layout.
fn manifest(layout: &Path) -> serde_json::Value {
    let index = read_json(&layout.join("index.json"));
    read_json(&blob(layout, index["manifests"][0]["digest"].as_str().unwrap()))
}

/// Rewrites the config of the only image in a layout (and the manifest and index
/// that point at it), so the result is self-consistent but says what `f` made it say.
fn rewrite_config(layout: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let index_path = layout.join("index.json");
    let mut index = read_json(&index_path);
    let mut m = manifest(layout);
    let mut cfg = read_json(&blob(layout, m["config"]["digest"].as_str().unwrap()));
    f(&mut cfg);
    let cfg = serde_json::to_vec(&cfg).unwrap();
    fs::write(blob(layout, &digest(&cfg)), &cfg).unwrap();
    m["config"]["digest"] = digest(&cfg).into();
    m["config"]["size"] = cfg.len().into();
    let m = serde_json::to_vec(&m).unwrap();
    fs::write(blob(layout, &digest(&m)), &m).unwrap();
    index["manifests"][0]["digest"] = digest(&m).into();
    index["manifests"][0]["size"] = m.len().into();
    fs::write(index_path, serde_json::to_vec(&index).unwrap()).unwrap();
}

/// Rewrites the manifest of the only image in a layout (and the index entry for it).
fn rewrite_manifest(layout: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let index_path = layout.join("index.json");
    let mut index = read_json(&index_path);
    let mut m = manifest(layout);
    f(&mut m);
    let m = serde_json::to_vec(&m).unwrap();
    fs::write(blob(layout, &digest(&m)), &m).unwrap();
    index["manifests"][0]["digest"] = digest(&m).into();
    index["manifests"][0]["size"] = m.len().into();
    fs::write(index_path, serde_json::to_vec(&index).unwrap()).unwrap();
}

/// Replaces layer `i`'s blob with `data` under its own (correct) digest, so only what
/// is inside the blob is wrong.
fn replace_layer_blob(layout: &Path, i: usize, data: &[u8], media_type: &str) {
    fs::write(blob(layout, &digest(data)), data).unwrap();
    rewrite_manifest(layout, |m| {
        m["layers"][i]["digest"] = digest(data).into();
        m["layers"][i]["size"] = data.len().into();
        m["layers"][i]["mediaType"] = media_type.into();
    });
}

fn copy_dir(from: &Path, to: &Path) {
    let st = Command::new("cp").arg("-a").arg(from).arg(to).status().unwrap();
    assert!(st.success());
}

fn bad_images_fail_clearly_and_leave_the_store_as_it_was(s: &Strata) {
    let work = tempfile::tempdir().unwrap();
    let good = make_layout(&work.path().join("good"), "v1", 1, 2);
    // The base layer is in the store already (from a one-layer image of it), so a
    // failing second layer must leave exactly that behind.
    let base = make_layout(&work.path().join("base"), "base", 1, 1);
    s.ok(&["image", "unpack", base.to_str().unwrap()]);
    let before = s.state();
    let driver = &s.driver;
    // Each failure's exit code (docs/cli.md) says its kind; the line is what this test is
    // about ("fail clearly"): it must name the blob and say what is wrong with it.
    let bad = |name: &str, codes: &[i32], make: &dyn Fn(&Path)| -> String {
        let dir = work.path().join(name);
        copy_dir(&good, &dir);
        make(&dir);
        let e = s.fails_with_any(codes, &["image", "unpack", dir.to_str().unwrap()]);
        assert_eq!(s.state(), before, "{driver}: {name} left the store changed ({e})");
        e
    };

    let layer2 = manifest(&good)["layers"][1]["digest"].as_str().unwrap().to_string();
    let plain2 = {
        let mut out = Vec::new();
        std::io::Read::read_to_end(
            &mut flate2::read::GzDecoder::new(&fs::read(blob(&good, &layer2)).unwrap()[..]),
            &mut out,
        )
        .unwrap();
        out
    };

    let e = bad("tampered", &[5], &|d| {
        let p = blob(d, &layer2);
        let mut data = fs::read(&p).unwrap();
        let mid = data.len() / 2;
        data[mid] ^= 0x55;
        fs::write(&p, &data).unwrap();
    });
    assert!(e.contains(&layer2) && e.contains("tampered or corrupt"), "{driver}: {e}");

    let e = bad("truncated", &[5], &|d| {
        let p = blob(d, &layer2);
        let data = fs::read(&p).unwrap();
        fs::write(&p, &data[..data.len() / 3]).unwrap();
    });
    assert!(e.contains("layer 2") && (e.contains("truncated") || e.contains("ends early")), "{driver}: {e}");

    // Exit 1, not 5: the diff_id check fails in the driver (Cause::DiffIdMismatch), which
    // cli/src/error.rs maps to 1, as it does a missing config blob (an io error).
    let e = bad("wrong-diff-id", &[5], &|d| {
        rewrite_config(d, |c| c["rootfs"]["diff_ids"][1] = format!("sha256:{}", "0".repeat(64)).into())
    });
    assert!(e.contains("diff_id") && e.contains(&format!("not sha256:{}", "0".repeat(64))), "{driver}: {e}");

    let e = bad("missing-layer-blob", &[5], &|d| fs::remove_file(blob(d, &layer2)).unwrap());
    assert!(e.contains(&layer2), "{driver}: {e}");

    // A blob the manifest names that the layout lacks, config or layer: 5 alike.
    let config = manifest(&good)["config"]["digest"].as_str().unwrap().to_string();
    let e = bad("missing-config-blob", &[5], &|d| fs::remove_file(blob(d, &config)).unwrap());
    assert!(e.contains(&config) && e.contains("is not in the layout"), "{driver}: {e}");

    // A gzip stream whose blob digest is right but whose deflate data is corrupt.
    let e = bad("corrupt-gzip", &[5], &|d| {
        let mut gz = gzip(&plain2);
        let n = gz.len();
        for b in &mut gz[n / 3..n / 3 + 64] {
            *b = !*b;
        }
        replace_layer_blob(d, 1, &gz, "application/vnd.oci.image.layer.v1.tar+gzip");
    });
    assert!(e.contains("layer sha256:") && e.contains("corrupt gzip stream"), "{driver}: {e}");

    // The same for zstd.
    let e = bad("corrupt-zstd", &[5], &|d| {
        let mut z = zstd::encode_all(&plain2[..], 3).unwrap();
        let n = z.len();
        for b in &mut z[n / 2..n / 2 + 64] {
            *b = !*b;
        }
        replace_layer_blob(d, 1, &z, "application/vnd.oci.image.layer.v1.tar+zstd");
    });
    // (zstd frames carry no checksum by default: the diff_id check is what catches it,
    // or the decoder; either way the image is not what it says, exit 5)
    assert!(e.contains("layer sha256:") && (e.contains("zstd") || e.contains("(diff_id)")), "{driver}: {e}");

    // Absurd sizes: a manifest claiming an exabyte-sized layer, and one claiming fewer
    // bytes than the blob has. Neither is believed.
    let e =
        bad("absurd-manifest-size", &[5], &|d| rewrite_manifest(d, |m| m["layers"][1]["size"] = (1u64 << 60).into()));
    assert!(e.contains(&layer2) && e.contains("its descriptor says"), "{driver}: {e}");
    let e = bad("short-manifest-size", &[5], &|d| rewrite_manifest(d, |m| m["layers"][1]["size"] = 100.into()));
    assert!(e.contains(&layer2) && e.contains("its descriptor says"), "{driver}: {e}");

    // And the good one unpacks, reusing the base.
    let o = s.run(&["image", "unpack", good.to_str().unwrap()]);
    assert!(o.status.success(), "{driver}: {}", String::from_utf8_lossy(&o.stderr));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("layer 1/2") && stderr.contains("already exists"), "{driver}: {stderr}");
}

#[test]
fn bad_images_on_vfs() {
    if privileged("image verification tests") {
        bad_images_fail_clearly_and_leave_the_store_as_it_was(&Strata::new("vfs"));
    }
}

#[test]
fn bad_images_on_overlay() {
    if privileged("image verification tests") {
        bad_images_fail_clearly_and_leave_the_store_as_it_was(&Strata::new("overlay"));
    }
}

#[test]
fn bad_images_on_btrfs() {
    if privileged("image verification tests") {
        let scratch = strata_scratch::ScratchFs::new(strata_scratch::FsKind::Btrfs, 1 << 30).unwrap();
        bad_images_fail_clearly_and_leave_the_store_as_it_was(&Strata::at(&scratch.path().join("strata"), "btrfs"));
    }
}

#[test]
fn the_three_source_formats_give_the_same_layers() {
    if !privileged("image format tests") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let layout = make_layout(&work.path().join("layout"), "v1", 2, 3);
    let oci_archive = work.path().join("oci.tar");
    assert!(Command::new("tar")
        .arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(&oci_archive)
        .arg(".")
        .status()
        .unwrap()
        .success());
    let docker_archive = work.path().join("docker.tar");
    let st = Command::new("skopeo")
        .args(["copy", "--quiet", &format!("oci:{}:v1", layout.display())])
        .arg(format!("docker-archive:{}:strata/test:v1", docker_archive.display()))
        .status()
        .unwrap();
    assert!(st.success(), "skopeo copy to docker-archive");
    let mut tops = Vec::new();
    for src in
        [format!("{}:v1", layout.display()), oci_archive.display().to_string(), docker_archive.display().to_string()]
    {
        let s = Strata::new("vfs");
        let top = s.ok(&["image", "unpack", &src]).trim().to_string();
        assert!(top.starts_with("sha256:"), "{top}");
        let layers: serde_json::Value = serde_json::from_str(&s.ok(&["layer", "ls", "--json"])).unwrap();
        assert_eq!(layers.as_array().unwrap().len(), 3, "{src}");
        tops.push(top);
    }
    assert!(tops.windows(2).all(|w| w[0] == w[1]), "chain IDs differ across formats: {tops:?}");
}

#[test]
fn images_share_layers_and_rm_keeps_what_others_use() {
    if !privileged("image sharing tests") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let one = make_layout(&work.path().join("one"), "one", 3, 1);
    let two = make_layout(&work.path().join("two"), "two", 3, 2);
    let s = Strata::new("vfs");
    s.ok(&["image", "unpack", one.to_str().unwrap()]);
    let o = s.run(&["image", "unpack", two.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("already exists"));
    let count = |s: &Strata| {
        serde_json::from_str::<serde_json::Value>(&s.ok(&["layer", "ls", "--json"])).unwrap().as_array().unwrap().len()
    };
    assert_eq!(count(&s), 2, "the base layer is shared");
    s.ok(&["container", "create", "c1", "--image", "one"]);
    s.ok(&["image", "rm", "two"]);
    assert_eq!(count(&s), 2, "two's own layer is gone; the base and the container stay");
    // Busy (exit 6, docs/cli.md), and the line says who uses it.
    let e = s.fails_with(6, &["image", "rm", "one"]);
    assert!(e.contains("used by container(s) c1"), "{e}");
    assert_eq!(count(&s), 2, "nothing removed while the container stands on it");
    s.ok(&["layer", "rm", "c1"]);
    s.ok(&["image", "rm", "one"]);
    assert_eq!(count(&s), 0, "the last image took its layers with it");
    s.fails_with(4, &["image", "rm", "one"]);
}

#[test]
fn pull_from_a_local_registry() {
    if !privileged("registry pull tests") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let app = make_layout(&work.path().join("app"), "v1", 4, 3);
    let base = make_layout(&work.path().join("base"), "v1", 4, 2);
    let reg = DockerRegistry::start(&[]);
    reg.skopeo_push(&format!("oci:{}:v1", app.display()), "strata/app:v1", None);
    reg.skopeo_push(&format!("oci:{}:v1", base.display()), "strata/base:v1", None);

    // What a pull must give: the same tree as unpacking the layout directly.
    let local = Strata::new("vfs");
    let want_top = local.ok(&["image", "unpack", &format!("{}:v1", app.display())]).trim().to_string();
    let want = strata_testkit::tree::Tree::capture(Path::new(local.ok(&["layer", "mount", &want_top]).trim())).unwrap();

    let s = Strata::new("vfs");
    let o = s.run(&["image", "pull", "--insecure", &format!("127.0.0.1:{}/strata/base:v1", reg.port)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = s.run(&["image", "pull", "--insecure", &format!("127.0.0.1:{}/strata/app:v1", reg.port)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("layer 1/3") && stderr.matches("already exists").count() == 2,
        "the shared base is reused: {stderr}"
    );
    let top = String::from_utf8(o.stdout).unwrap().trim().to_string();
    assert_eq!(top, want_top, "the same chain ID as the local unpack");
    let images = s.ok(&["image", "ls"]);
    assert!(images.contains(&format!("127.0.0.1:{}/strata/app:v1", reg.port)), "{images}");
    let got = strata_testkit::tree::Tree::capture(Path::new(s.ok(&["layer", "mount", &top]).trim())).unwrap();
    let d = got.differences(&want, &strata_testkit::tree::CompareOptions::default());
    assert!(d.is_empty(), "{}", d.join("\n"));
    // A reference that is not there is one clear error.
    // A registry that refused: exit 1 (docs/cli.md); the line itself is tested here.
    // A tag the registry does not have is not found (4), as a tag a layout does not hold.
    let e = s.fails_with(4, &["image", "pull", "--insecure", &format!("127.0.0.1:{}/strata/nope:v1", reg.port)]);
    let want = format!(": 127.0.0.1:{}/strata/nope:v1", reg.port);
    assert!(e.contains("unknown") && e.ends_with(&want) && !e.contains('{'), "the error JSON as one line: {e}");
}

/// Whether some occurrence of `start` is followed by `then` on the same line.
fn line_has(text: &str, start: &str, then: &str) -> bool {
    text.match_indices(start).any(|(i, _)| text[i..].lines().next().unwrap_or("").contains(then))
}

/// On a terminal, unpack draws a bar per layer that ends with the layer's line; when
/// stdout is not a terminal, it prints plain lines and no escape sequences.
#[test]
fn unpack_shows_progress_bars_only_on_a_terminal() {
    if !privileged("the progress test") || !strata_tests::installed(&["script"], "the progress test") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let layout = make_layout(&work.path().join("img"), "img", 5, 3);
    let s = Strata::new("vfs");
    let cmd = format!(
        "{} --root {} --driver vfs image unpack {}",
        strata_tests::strata_bin().display(),
        s.root.display(),
        layout.display()
    );
    // `script` gives the command a pseudo-terminal and copies what it drew to stdout.
    let o = Command::new("script").args(["-qec", &cmd, "/dev/null"]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let drawn = String::from_utf8_lossy(&o.stdout);
    assert!(drawn.contains("\x1b["), "the bars are redrawn in place: {drawn:?}");
    assert!(drawn.contains("] ") && drawn.contains(" KiB/"), "a bar with bytes read of the blob's size: {drawn:?}");
    for i in 1..=3 {
        let line = line_has(&drawn, &format!("layer {i}/3 sha256:"), ": applied ");
        assert!(line, "layer {i}'s bar ends with its line: {drawn:?}");
    }

    let s = Strata::new("vfs");
    let o = s.run(&["image", "unpack", layout.to_str().unwrap()]);
    let plain = String::from_utf8_lossy(&o.stderr);
    assert!(!plain.contains('\x1b'), "no escape sequences off a terminal: {plain:?}");
    assert_eq!(plain.lines().filter(|l| l.starts_with("layer ") && l.contains("applied")).count(), 3, "{plain}");
}
