//! Real images built from Debian packages and npm (tests/fixtures/debian-image.sh) must
//! give, on every driver, the same tree as `umoci unpack` of the image: type, mode,
//! owner, size, content, link target, xattrs, hardlinks and file mtimes. Two paths in:
//! the layers one by one with `strata layer apply`, and the whole image with `strata
//! image unpack` → `container create` → `layer mount` of the container.

use std::fs;
use std::path::Path;

use strata_scratch::{FsKind, ScratchFs};
use strata_testkit::tree::{CompareOptions, Tree};
use strata_tests::{debian_fixture, privileged, Strata};

/// The fixture's images: the tag and the least number of entries its tree must have.
const IMAGES: [(&str, usize); 3] = [("base", 3000), ("debian", 3000), ("node", 6000)];

fn assert_same_as_umoci(s: &Strata, view: &str, reference: &Path, what: &str, min_entries: usize) {
    let got = Tree::capture(Path::new(view)).unwrap();
    let want = Tree::capture(reference).unwrap();
    assert!(want.entries.len() > min_entries, "{what}: the reference has only {} entries", want.entries.len());
    // umoci sets directory mtimes as the tar has them, as strata does, so they are
    // compared too; only the root's metadata (umoci's bundle directory) is not.
    let d = got.differences(&want, &CompareOptions::default());
    assert!(d.is_empty(), "{what} on {} differs from umoci unpack:\n{}", s.driver, d.join("\n"));
}

fn layers_one_by_one(s: &Strata, fixture: &Path) {
    let layers: Vec<String> =
        fs::read_to_string(fixture.join("layers.txt")).unwrap().lines().map(str::to_string).collect();
    assert_eq!(layers.len(), 3);
    let mut parent: Option<String> = None;
    for (i, blob) in layers.iter().enumerate() {
        let id = format!("l{i}");
        let path = fixture.join(blob);
        let mut args = vec!["layer", "apply", &id];
        if let Some(p) = &parent {
            args.extend(["--parent", p.as_str()]);
        }
        args.push(path.to_str().unwrap());
        let size: u64 = s.ok(&args).trim().parse().expect("apply prints the bytes applied");
        assert!(size > 0 || i == 2, "layer {i} applied {size} bytes");
        parent = Some(id);
    }
    let view = s.ok(&["layer", "mount", "l2"]).trim().to_string();
    let reference = fixture.join("ref/debian/rootfs");
    assert_same_as_umoci(s, &view, &reference, "layers applied one by one", 3000);
    assert!(!reference.join("usr/share/doc").exists(), "the last layer deletes /usr/share/doc");
    assert!(reference.join("usr/bin/python3").exists(), "the second layer installs python3");
    s.ok(&["layer", "unmount", "l2"]);
    for id in ["l2", "l1", "l0"] {
        s.ok(&["layer", "rm", id]);
    }
}

fn images_through_containers(s: &Strata, fixture: &Path) {
    let layout = fixture.join("layout");
    for (tag, min_entries) in IMAGES {
        s.ok(&["image", "unpack", &format!("{}:{tag}", layout.display())]);
        let container = format!("c-{tag}");
        s.ok(&["container", "create", &container, "--image", tag]);
        let view = s.ok(&["layer", "mount", &container]).trim().to_string();
        let what = format!("image {tag} through container {container}");
        assert_same_as_umoci(s, &view, &fixture.join("ref").join(tag).join("rootfs"), &what, min_entries);
        s.ok(&["layer", "unmount", &container]);
    }
    // debian and node stand on base's layer: it is stored once.
    let layers: serde_json::Value = serde_json::from_str(&s.ok(&["layer", "ls", "--json"])).unwrap();
    let stored = layers.as_array().unwrap().len();
    assert_eq!(stored, 1 + 2 + 1 + 3, "base shared by three images, plus three containers: {layers}");
    for (tag, _) in IMAGES {
        s.ok(&["layer", "rm", &format!("c-{tag}")]);
        s.ok(&["image", "rm", tag]);
    }
    let left: serde_json::Value = serde_json::from_str(&s.ok(&["layer", "ls", "--json"])).unwrap();
    assert_eq!(left.as_array().unwrap().len(), 0, "removing the images took every layer: {left}");
}

fn compare(s: &Strata) {
    let fixture = debian_fixture();
    layers_one_by_one(s, &fixture);
    images_through_containers(s, &fixture);
    assert!(strata_testkit::conformance::mounts_under(&s.root).is_empty(), "nothing stays mounted");
}

#[test]
fn vfs_matches_umoci_unpack() {
    if !privileged("the umoci comparison") {
        return;
    }
    compare(&Strata::new("vfs"));
}

#[test]
fn overlay_matches_umoci_unpack() {
    if !privileged("the umoci comparison") {
        return;
    }
    compare(&Strata::new("overlay"));
}

#[test]
fn btrfs_matches_umoci_unpack() {
    if !privileged("the umoci comparison") {
        return;
    }
    let scratch = ScratchFs::new(FsKind::Btrfs, 4 << 30).unwrap();
    compare(&Strata::at(&scratch.path().join("strata"), "btrfs"));
}
