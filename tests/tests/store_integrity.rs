//! The store never loses or lends what it holds, on every driver: a layer is reused
//! for an image only if it was made from that image's content, committed layers are
//! read-only, a layer an image uses cannot be removed, a failed unpack leaves the image
//! it would replace, and image names are names.

use std::fs;
use std::path::Path;

use serde_json::Value;
use strata_testkit::hostile_images::{digest, docker_archive, small_tar, Layout};
use strata_tests::{on_every_driver, Strata};

on_every_driver!(
    docker_archive_diff_ids_cannot_name_a_container_layer,
    a_planted_layer_with_a_chain_id_is_not_reused,
    committed_layers_are_read_only,
    layer_rm_refuses_a_layer_an_image_uses,
    a_failed_unpack_keeps_the_image_it_would_replace,
    image_names_follow_the_reference_grammar,
);

fn gz(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// A two-layer layout tagged `tag`, its layers named after `seed`.
fn layout(dir: &Path, tag: &str, seed: &str) -> Layout {
    Layout::new(dir, tag, &[gz(&small_tar(&format!("{seed}-base"))), gz(&small_tar(&format!("{seed}-app")))])
}

fn ids(s: &Strata) -> Vec<String> {
    let v: Value = serde_json::from_str(&s.ok(&["layer", "ls", "--json"])).unwrap();
    v.as_array().unwrap().iter().map(|l| l["id"].as_str().unwrap().to_string()).collect()
}

fn images(s: &Strata) -> Vec<(String, String)> {
    let v: Value = serde_json::from_str(&s.ok(&["image", "ls", "--json"])).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|i| (i["name"].as_str().unwrap().to_string(), i["top"].as_str().unwrap_or("").to_string()))
        .collect()
}

/// A docker-archive whose config says its one diff_id is `c-victim`: the chain ID of
/// its base is then the name of a container's layer. It must be refused as an OCI
/// image with such a diff_id is, and the container's layer must stay whatever follows.
fn docker_archive_diff_ids_cannot_name_a_container_layer(s: &Strata) {
    let work = tempfile::tempdir().unwrap();
    let good = layout(&work.path().join("good"), "v1", "g");
    s.ok(&["image", "unpack", good.dir.to_str().unwrap(), "--name", "good"]);
    s.ok(&["container", "create", "c-victim", "--image", "good"]);
    let before = s.state();
    let evil = work.path().join("evil.tar");
    docker_archive(&evil, &["strata/evil:1"], &[small_tar("evil")], Some(vec!["c-victim".into()]));
    // Not a digest (Error::InvalidDigest): exit 5; the line names the diff_id it refused.
    let e = s.fails_with(5, &["image", "unpack", evil.to_str().unwrap()]);
    assert!(e.contains("diff_id") && e.contains("c-victim"), "{}: {e}", s.driver);
    assert_eq!(s.state(), before, "{}: the refusal changed the store", s.driver);
    // Not found (docs/cli.md).
    s.fails_with(4, &["image", "rm", "strata/evil:1"]);
    assert!(ids(s).contains(&"c-victim".to_string()), "{}: the container's layer is gone", s.driver);
}

/// `layer create sha256:<chain id of the base>` and a file planted in it, or `layer
/// apply` of other content under that ID: an unpack of the image must not take either
/// for its base (the container would see the planted file).
fn a_planted_layer_with_a_chain_id_is_not_reused(s: &Strata) {
    let work = tempfile::tempdir().unwrap();
    let img = layout(&work.path().join("img"), "v1", "p");
    let base_id = img.config()["rootfs"]["diff_ids"][0].as_str().unwrap().to_string();
    let src = img.dir.to_str().unwrap().to_string();

    // A writable layer under the chain ID, with a planted file.
    s.ok(&["layer", "create", &base_id]);
    let view = s.ok(&["layer", "mount", &base_id]).trim().to_string();
    fs::write(Path::new(&view).join("planted"), b"gotcha").unwrap();
    s.ok(&["layer", "unmount", &base_id]);
    let before = s.state();
    // Cause::Refused: exit 1; the line names the layer and why it is not reused.
    let e = s.fails_with(1, &["image", "unpack", &src]);
    assert!(e.contains(&base_id) && e.contains("not made from layer 1"), "{}: {e}", s.driver);
    assert_eq!(s.state(), before, "{}: the refusal changed the store", s.driver);
    s.ok(&["layer", "rm", &base_id]);

    // A committed layer under the chain ID, made of other content.
    let other = work.path().join("other.tar");
    fs::write(&other, small_tar("other")).unwrap();
    s.ok(&["layer", "apply", &base_id, other.to_str().unwrap()]);
    let before = s.state();
    // Cause::Refused: exit 1; the line names the layer and why it is not reused.
    let e = s.fails_with(1, &["image", "unpack", &src]);
    assert!(e.contains(&base_id) && e.contains("not made from layer 1"), "{}: {e}", s.driver);
    assert_eq!(s.state(), before, "{}: the refusal changed the store", s.driver);
    s.ok(&["layer", "rm", &base_id]);

    // The same content applied by hand under that ID is the image's base: reused.
    let base_tar = work.path().join("base.tar");
    fs::write(&base_tar, small_tar("p-base")).unwrap();
    assert_eq!(digest(&small_tar("p-base")), base_id);
    s.ok(&["layer", "apply", &base_id, base_tar.to_str().unwrap()]);
    let o = s.run(&["image", "unpack", &src]);
    assert!(o.status.success(), "{}: {}", s.driver, String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("already exists"), "{}", s.driver);
    s.ok(&["container", "create", "c", "--image", "v1"]);
    let view = s.ok(&["layer", "mount", "c"]).trim().to_string();
    assert!(!Path::new(&view).join("planted").exists(), "{}: the container sees a planted file", s.driver);
    assert!(Path::new(&view).join("etc/p-app").exists(), "{}", s.driver);
    s.ok(&["layer", "unmount", "c"]);
}

/// A write into the view of a committed (image) layer fails on every driver, and the
/// layer's diff stays what its tar made it; a container's view stays writable.
fn committed_layers_are_read_only(s: &Strata) {
    let work = tempfile::tempdir().unwrap();
    let img = layout(&work.path().join("img"), "v1", "r");
    let top = s.ok(&["image", "unpack", img.dir.to_str().unwrap()]).trim().to_string();
    let diff_before = s.run(&["layer", "diff", &top]).stdout;
    let view = s.ok(&["layer", "mount", &top]).trim().to_string();
    let e = fs::write(Path::new(&view).join("etc/r-app"), b"changed").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{}: overwrite: {e}", s.driver);
    let e = fs::write(Path::new(&view).join("new"), b"x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{}: create: {e}", s.driver);
    assert_eq!(fs::read(Path::new(&view).join("etc/r-app")).unwrap(), b"r-app", "{}", s.driver);
    s.ok(&["layer", "unmount", &top]);
    assert_eq!(s.run(&["layer", "diff", &top]).stdout, diff_before, "{}: the image layer changed", s.driver);
    // Mounted twice, unmounted twice: the view goes with the last user.
    let v1 = s.ok(&["layer", "mount", &top]);
    let v2 = s.ok(&["layer", "mount", &top]);
    assert_eq!(v1, v2);
    s.ok(&["layer", "unmount", &top]);
    assert!(Path::new(v1.trim()).join("etc/r-app").exists(), "{}: the view went with a user left", s.driver);
    s.ok(&["layer", "unmount", &top]);
    s.ok(&["container", "create", "c", "--image", "v1"]);
    let view = s.ok(&["layer", "mount", "c"]).trim().to_string();
    fs::write(Path::new(&view).join("etc/r-app"), b"changed").unwrap();
    s.ok(&["layer", "unmount", "c"]);
    assert!(strata_testkit::conformance::mounts_under(&s.root).is_empty(), "{}: left mounted", s.driver);
}

/// `layer rm` of any layer of an image is refused (as for a layer with children), so
/// the image keeps its layers and a container can still be made on it.
fn layer_rm_refuses_a_layer_an_image_uses(s: &Strata) {
    let work = tempfile::tempdir().unwrap();
    let img = layout(&work.path().join("img"), "v1", "u");
    let top = s.ok(&["image", "unpack", img.dir.to_str().unwrap()]).trim().to_string();
    let before = s.state();
    // Busy: exit 6; the line names the layer and the image on it.
    let e = s.fails_with(6, &["layer", "rm", &top]);
    assert!(e.contains(&top) && e.contains("used by image v1"), "{}: {e}", s.driver);
    assert_eq!(s.state(), before, "{}: the refusal changed the store", s.driver);
    s.ok(&["container", "create", "c", "--image", "v1"]);
    s.ok(&["layer", "rm", "c"]);
    s.ok(&["image", "rm", "v1"]);
    assert!(ids(s).is_empty(), "{}: image rm takes its layers", s.driver);
}

/// `image unpack BROKEN --name base` fails and `base` (the image pulled before) stays,
/// with its layers; the layers the failed unpack made go.
fn a_failed_unpack_keeps_the_image_it_would_replace(s: &Strata) {
    let work = tempfile::tempdir().unwrap();
    let good = layout(&work.path().join("good"), "v1", "k");
    s.ok(&["image", "unpack", good.dir.to_str().unwrap(), "--name", "base"]);
    let before = s.state();
    // Another image whose second layer's blob is corrupt: its first layer is applied,
    // then the second fails.
    let broken = layout(&work.path().join("broken"), "v1", "b");
    let p = broken.blob(&broken.layer_digest(1));
    let mut data = fs::read(&p).unwrap();
    let n = data.len();
    data[n / 2] ^= 0xff;
    fs::write(&p, &data).unwrap();
    s.fails_with(5, &["image", "unpack", broken.dir.to_str().unwrap(), "--name", "base"]);
    assert_eq!(s.state(), before, "{}: the failed unpack changed the store", s.driver);
    assert_eq!(images(s).len(), 1, "{}", s.driver);
    // A good new image under the same name replaces it, and the old image's layers
    // that nothing uses go with the old record.
    let newer = layout(&work.path().join("newer"), "v1", "n");
    let top = s.ok(&["image", "unpack", newer.dir.to_str().unwrap(), "--name", "base"]).trim().to_string();
    assert_eq!(images(s), vec![("base".to_string(), top)], "{}", s.driver);
    assert_eq!(ids(s).len(), 2, "{}: the replaced image's layers are gone: {:?}", s.driver, ids(s));
}

/// Names that are not references are refused (docker: "invalid reference format"),
/// from --name, the ref.name annotation or RepoTags; good ones are listed as given.
fn image_names_follow_the_reference_grammar(s: &Strata) {
    let work = tempfile::tempdir().unwrap();
    let img = layout(&work.path().join("img"), "v1", "n");
    let src = img.dir.to_str().unwrap().to_string();
    let before = s.state();
    let long = "a".repeat(300);
    for bad in ["", ".", "..", ".hidden", "../x", "a/../../b", "a//b", "repo/UPPER", "a b", "x:", long.as_str()] {
        // A usage error (exit 2, docs/cli.md): the name given is not a reference.
        s.fails_with(2, &["image", "unpack", &src, "--name", bad]);
        assert_eq!(s.state(), before, "{}: {bad:?} changed the store", s.driver);
    }
    let mut index = img.index();
    index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] = "../../x".into();
    img.set_index(&index);
    let e = s.fails_with(2, &["image", "unpack", &src]);
    assert!(e.contains("invalid reference format"), "{}: {e}", s.driver);
    let evil = work.path().join("evil.tar");
    docker_archive(&evil, &["../evil:1"], &[small_tar("e")], None);
    s.fails_with(2, &["image", "unpack", evil.to_str().unwrap()]);
    assert_eq!(s.state(), before, "{}", s.driver);
    let by_digest = format!("app@sha256:{}", "a".repeat(64));
    let good = ["repo/app:v1", "127.0.0.1:5000/team/app:1.0", "app", by_digest.as_str()];
    for name in &good {
        s.ok(&["image", "unpack", &src, "--name", name]);
    }
    let listed: Vec<String> = images(s).into_iter().map(|(n, _)| n).collect();
    let mut want: Vec<String> = good.iter().map(|n| n.to_string()).collect();
    want.sort();
    assert_eq!(listed, want, "{}", s.driver);
    for name in &good {
        s.ok(&["image", "rm", name]);
    }
    assert!(ids(s).is_empty(), "{}", s.driver);
}
