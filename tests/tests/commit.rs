//! `container commit` on every driver: a scripted set of changes made through the
//! container's mounted view with ordinary syscalls (writes in place, appends, deletes,
//! renames, hardlinks, a directory replaced by a file) becomes an image whose
//! containers see exactly the committed container's tree; its layers are the base
//! image's plus one; committing twice gives two images.

use std::fs;

use serde_json::Value;
use strata_testkit::tree::{CompareOptions, Tree};
use strata_tests::changes::{base_layout, change};
use strata_tests::{on_every_driver, Mounted, Strata};

on_every_driver!(commit_gives_an_image_with_the_containers_tree, committing_twice_gives_two_images);

/// Tar carries whole seconds: compare everything but mtimes, which the
/// container's view has to the nanosecond.
fn opts() -> CompareOptions {
    CompareOptions { file_mtime: false, dir_mtime: false, ..Default::default() }
}

fn image_layers(s: &Strata, name: &str) -> (usize, String) {
    let v: Value = serde_json::from_str(&s.ok(&["image", "ls", "--json"])).unwrap();
    let img =
        v.as_array().unwrap().iter().find(|i| i["name"] == name).unwrap_or_else(|| panic!("no image {name}: {v}"));
    (img["layers"].as_u64().unwrap() as usize, img["top"].as_str().unwrap().to_string())
}

fn commit_gives_an_image_with_the_containers_tree(s: &Strata) {
    let tmp = tempfile::tempdir().unwrap();
    let layout = base_layout(&tmp.path().join("layout"));
    s.ok(&["image", "unpack", &format!("{}:base", layout.dir.display()), "--name", "base"]);
    let (_, base_top) = image_layers(s, "base");
    s.ok(&["container", "create", "c1", "--image", "base"]);
    let view = {
        let m = Mounted::new(s, "c1");
        change(&m.path);
        // Committed while mounted, as `docker commit` of a running container.
        let top = s.ok(&["container", "commit", "c1", "--image", "app:v1", "--message", "scripted changes"]);
        assert!(top.trim().starts_with("sha256:"), "{top}");
        Tree::capture(&m.path).unwrap()
    };
    let (n, top) = image_layers(s, "app:v1");
    assert_eq!(n, 3, "the base's two layers and one more");
    let layers: Value = serde_json::from_str(&s.ok(&["layer", "ls", "--json"])).unwrap();
    let new = layers.as_array().unwrap().iter().find(|l| l["id"] == top.as_str()).expect("the committed layer");
    assert_eq!(new["parent"], base_top.as_str(), "its layers are the base's, shared");

    s.ok(&["container", "create", "c2", "--image", "app:v1"]);
    let m = Mounted::new(s, "c2");
    let got = Tree::capture(&m.path).unwrap();
    let d = view.differences(&got, &opts());
    assert!(d.is_empty(), "c2 (from the committed image) differs from c1's view:\n{}", d.join("\n"));
    // The container is still a container on its own layer.
    assert!(s.ok(&["layer", "changes", "c1"]).contains("/srv/renamed"));
}

fn committing_twice_gives_two_images(s: &Strata) {
    let tmp = tempfile::tempdir().unwrap();
    let layout = base_layout(&tmp.path().join("layout"));
    s.ok(&["image", "unpack", &format!("{}:base", layout.dir.display()), "--name", "base"]);
    s.ok(&["container", "create", "c1", "--image", "base"]);
    let m = Mounted::new(s, "c1");
    fs::write(m.path.join("first"), b"1").unwrap();
    let top1 = s.ok(&["container", "commit", "c1", "--image", "one"]);
    fs::write(m.path.join("second"), b"2").unwrap();
    let top2 = s.ok(&["container", "commit", "c1", "--image", "two", "--compression", "zstd"]);
    drop(m);
    assert_ne!(top1, top2);
    assert_eq!(image_layers(s, "one"), (3, top1.trim().to_string()));
    assert_eq!(image_layers(s, "two"), (3, top2.trim().to_string()));
    for (img, want) in [("one", vec!["first"]), ("two", vec!["first", "second"])] {
        let c = format!("from-{img}");
        s.ok(&["container", "create", &c, "--image", img]);
        let m = Mounted::new(s, &c);
        for f in ["first", "second"] {
            assert_eq!(m.path.join(f).exists(), want.contains(&f), "{f} in a container of {img}");
        }
    }
    // A commit of an image of an image: three layers below, one more on top.
    s.ok(&["container", "create", "c3", "--image", "two"]);
    let m = Mounted::new(s, "c3");
    fs::remove_file(m.path.join("first")).unwrap();
    s.ok(&["container", "commit", "c3", "--image", "three"]);
    drop(m);
    assert_eq!(image_layers(s, "three").0, 4);
    // Removing an image keeps what the others use.
    s.ok(&["layer", "rm", "from-one"]);
    s.ok(&["image", "rm", "one"]);
    s.ok(&["container", "create", "c4", "--image", "three"]);
    let m = Mounted::new(s, "c4");
    assert!(m.path.join("second").exists() && !m.path.join("first").exists());
}
