//! A real image built from Debian packages, applied layer by layer with `strata layer
//! apply` on each driver, must give the same tree as `umoci unpack` of the image:
//! type, mode, owner, size, content, link target, xattrs, hardlinks and file mtimes.

use std::fs;
use std::path::Path;

use driver_core::tree::{CompareOptions, Tree};
use strata_tests::{debian_fixture, privileged, Strata};

fn compare(s: &Strata, fixture: &Path) {
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
    let got = Tree::capture(Path::new(&view)).unwrap();
    let want = Tree::capture(&fixture.join("bundle/rootfs")).unwrap();
    assert!(want.entries.len() > 3000, "the reference has {} entries", want.entries.len());
    // umoci sets directory mtimes as the tar has them, as strata does, so they are
    // compared too; only the root's metadata (umoci's bundle directory) is not.
    let d = got.differences(&want, &CompareOptions::default());
    assert!(d.is_empty(), "{} differs from umoci unpack:\n{}", s.driver, d.join("\n"));
    assert!(!want.entries.contains_key(Path::new("usr/share/doc")), "layer 3 deletes /usr/share/doc");
    s.ok(&["layer", "unmount", "l2"]);
    for id in ["l2", "l1", "l0"] {
        s.ok(&["layer", "rm", id]);
    }
    assert!(driver_core::conformance::mounts_under(&s.root).is_empty(), "nothing stays mounted");
}

#[test]
fn vfs_matches_umoci_unpack() {
    if !privileged("the umoci comparison") {
        return;
    }
    compare(&Strata::new("vfs"), &debian_fixture());
}

#[test]
fn overlay_matches_umoci_unpack() {
    if !privileged("the umoci comparison") {
        return;
    }
    compare(&Strata::new("overlay"), &debian_fixture());
}
