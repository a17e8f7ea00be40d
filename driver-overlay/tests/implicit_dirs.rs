//! The directories a layer's tar leaves out (implicit directories) take the metadata
//! overlayfs shows for them in the parent's view, which the driver works out from the
//! lower diff directories without mounting one (whiteouts, opaque directories, a
//! directory over a file, a link or a file on the way). Generated chains (fixed seed),
//! each implicit directory compared with the kernel's own view of the parent.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use driver_core::driver::Driver;
use driver_core::sys::{self, XattrTarget};
use driver_overlay::OverlayDriver;
use strata_archive::tarbuild::{EntryMeta, TarBuilder};
use strata_testkit::conformance::UnmountUnder;

const PATHS: [&str; 9] = ["a", "a/b", "a/b/c", "a/b/c/d", "a/e", "f", "f/g", "f/g/h", "a/e/i"];

fn user_xattr(path: &Path) -> Option<Vec<u8>> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    sys::get_xattr(XattrTarget::NoFollow(&c), "user.k").unwrap()
}

/// A random layer: entries at random paths (parents left out, so that many are
/// implicit); the directories it describes and every path it names.
fn layer(rng: &mut fastrand::Rng) -> (Vec<u8>, BTreeSet<String>, BTreeSet<String>) {
    let mut t = TarBuilder::new();
    let (mut described, mut entries, mut nondirs) =
        (BTreeSet::new(), BTreeSet::<String>::new(), BTreeSet::<String>::new());
    let mut opaques = BTreeSet::new();
    for _ in 0..rng.usize(1..6) {
        let path = PATHS[rng.usize(..PATHS.len())];
        let kind = rng.u8(..6);
        // No entry under a file, link or whiteout of the same layer (the tar engine
        // refuses that whatever is below, tested elsewhere).
        let under = |a: &str, b: &str| a.starts_with(&format!("{b}/"));
        let blocked =
            nondirs.iter().any(|n| under(path, n)) || (matches!(kind, 2..=4) && entries.iter().any(|e| under(e, path)));
        if blocked || !entries.insert(path.to_string()) {
            continue;
        }
        match kind {
            0 | 1 => {
                let mut meta = EntryMeta::mode(0o700 | rng.u32(..0o100));
                meta.uid = rng.u64(..3);
                meta.gid = rng.u64(..3);
                meta.mtime = 1_600_000_000 + rng.u64(..1000);
                if rng.bool() {
                    meta.xattrs.push(("user.k".into(), vec![rng.u8(..)]));
                }
                t.dir_with(path, meta);
                described.insert(path.to_string());
            }
            2 => {
                t.file(path, b"x");
                nondirs.insert(path.to_string());
            }
            3 => {
                t.symlink(path, "..");
                nondirs.insert(path.to_string());
            }
            4 => {
                t.whiteout(path);
                nondirs.insert(path.to_string());
            }
            _ => {
                t.opaque(path);
                opaques.insert(path.to_string());
            }
        }
    }
    // The names in the tar: an opaque directory's marker is an entry inside it.
    let named =
        entries.into_iter().map(|e| if opaques.contains(&e) { format!("{e}/.wh..wh..opq") } else { e }).collect();
    (t.build(), described, named)
}

/// Every proper parent of an entry that the tar did not describe (the root aside).
fn implicit(described: &BTreeSet<String>, entries: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for e in entries {
        let mut p = Path::new(e.as_str());
        while let Some(parent) = p.parent().filter(|p| !p.as_os_str().is_empty()) {
            let s = parent.to_string_lossy().into_owned();
            if !described.contains(&s) {
                out.insert(s);
            }
            p = parent;
        }
    }
    out
}

/// Whether `dir` holds anything but whiteout devices (in its subdirectories too).
fn holds_content(dir: &Path) -> bool {
    fs::read_dir(dir).unwrap().any(|e| {
        let e = e.unwrap();
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            holds_content(&e.path())
        } else {
            !(ft.is_char_device() && e.metadata().unwrap().rdev() == 0)
        }
    })
}

#[test]
fn implicit_directories_take_what_the_parents_view_shows() {
    if !strata_scratch::privileged("overlay implicit directories (mounts)") {
        return;
    }
    let mut rng = fastrand::Rng::with_seed(17);
    let (mut checked, mut refused) = (0, 0);
    for case in 0..60 {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("overlay");
        let _unmount = UnmountUnder(tmp.path().to_path_buf());
        let d = OverlayDriver::new(&root).unwrap();
        let mut parent: Option<String> = None;
        for n in 0..4 {
            let id = format!("l{n}");
            let (tar, described, entries) = layer(&mut rng);
            // The parent's view, as the kernel shows it, before the apply.
            let view = parent.as_deref().map(|p| d.mount(p).unwrap());
            let applied = d.apply_diff(&id, parent.as_deref(), &mut &tar[..]);
            let dirs = implicit(&described, &entries);
            let below = |rel: &str| view.as_ref().map(|v| fs::symlink_metadata(v.join(rel)));
            match applied {
                Err(e) => {
                    // Refused only where the view has a non-directory on the way.
                    let through = dirs.iter().any(|rel| {
                        Path::new(rel)
                            .ancestors()
                            .filter(|a| !a.as_os_str().is_empty())
                            .any(|a| matches!(below(a.to_str().unwrap()), Some(Ok(m)) if !m.is_dir()))
                    });
                    assert!(through, "case {case} layer {id}: refused without a non-directory below: {e}");
                    refused += 1;
                    if let Some(p) = &parent {
                        d.unmount(p).unwrap();
                    }
                    break;
                }
                Ok(_) => {
                    let diff = root.join("layers").join(&id).join("diff");
                    for rel in &dirs {
                        let here = diff.join(rel);
                        match below(rel) {
                            Some(Ok(m)) if m.is_dir() => {
                                let h = fs::symlink_metadata(&here).unwrap();
                                let (v, at) = (view.as_ref().unwrap().join(rel), format!("case {case} {id} {rel}"));
                                assert_eq!(h.mode(), m.mode(), "{at}: mode");
                                assert_eq!((h.uid(), h.gid()), (m.uid(), m.gid()), "{at}: owner");
                                assert_eq!((h.mtime(), h.mtime_nsec()), (m.mtime(), m.mtime_nsec()), "{at}: mtime");
                                assert_eq!(user_xattr(&here), user_xattr(&v), "{at}: xattr");
                                checked += 1;
                            }
                            Some(Ok(m)) => panic!("case {case} {id} {rel}: applied over a {:?}", m.file_type()),
                            // Nothing below: kept only for what it holds.
                            _ => {
                                if let Ok(h) = fs::symlink_metadata(&here) {
                                    assert!(h.is_dir() && holds_content(&here), "case {case} {id} {rel}: kept empty");
                                }
                            }
                        }
                    }
                    if let Some(p) = &parent {
                        d.unmount(p).unwrap();
                    }
                    parent = Some(id);
                }
            }
        }
    }
    // The generator must reach both outcomes for the check to mean anything.
    assert!(checked > 50 && refused > 3, "checked {checked} directories, {refused} refusals");
}
