//! The content record the tar engine makes as it applies (`ApplyReport::tree`) against
//! the record a walk of the applied tree makes (`driver_core::record::make`, the
//! reference), on generated layers from fixed seeds: files overwritten within one tar,
//! a file replaced by a directory and back, hardlinks (also over a name the tar wrote
//! before), whiteouts and opaque directories (deleted in place, and recorded as a
//! union mount's upper records them), xattrs, sparse files, devices and long paths.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;
use std::sync::Arc;

use driver_core::record::{self, Record};
use driver_core::sys::{self, XattrTarget};
use nix::sys::stat::{FileStat, Mode, SFlag};
use strata_archive::apply::{apply_layer, ApplyOptions};
use strata_archive::tarbuild::{EntryMeta, TarBuilder};
use strata_archive::{DeleteInPlace, WhiteoutFormat};

/// Whiteouts recorded as overlayfs records them (0/0 character devices), opaque
/// directories as an xattr of a namespace of the test's own.
#[derive(Debug)]
struct Recorded;

const OPAQUE: &str = "user.strata-test.opaque";

impl WhiteoutFormat for Recorded {
    fn name(&self) -> &'static str {
        "test-recorded"
    }
    fn records(&self) -> bool {
        true
    }
    fn write_whiteout(&self, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
        nix::sys::stat::mknodat(Some(dir.as_raw_fd()), name, SFlag::S_IFCHR, Mode::empty(), 0).map_err(io::Error::from)
    }
    fn write_opaque(&self, dir: BorrowedFd<'_>) -> io::Result<()> {
        sys::set_xattr(XattrTarget::Fd(dir.as_raw_fd()), OPAQUE, b"y")
    }
    fn is_whiteout(&self, st: &FileStat) -> bool {
        sys::file_type(st) == SFlag::S_IFCHR && st.st_rdev == 0
    }
    fn is_opaque(&self, dir: BorrowedFd<'_>) -> io::Result<bool> {
        Ok(sys::get_xattr(XattrTarget::Fd(dir.as_raw_fd()), OPAQUE)?.is_some())
    }
    fn is_own_xattr(&self, name: &str) -> bool {
        name.starts_with("user.strata-test.")
    }
}

/// Directory names: 0-2 components from a small set, so that entries meet (the same
/// path twice, a whiteout of something made before). Now and then long ones
/// (components of 200 bytes, up to about 1,000 bytes in all).
fn dirs(rng: &mut fastrand::Rng, at_least: usize) -> Vec<String> {
    let long = rng.u8(..) < 8;
    (0..rng.usize(at_least..=at_least.max(2)))
        .map(|_| {
            let c = ["a", "b", "c"][rng.usize(..3)];
            if long {
                c.repeat(200)
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// A path for a directory entry (or an opaque marker).
fn dir_path(rng: &mut fastrand::Rng) -> String {
    dirs(rng, 1).join("/")
}

/// A path for a file, link or device: its name mostly a leaf name, sometimes a
/// directory's (a directory replaced by a file, and back).
fn leaf_path(rng: &mut fastrand::Rng) -> String {
    let mut p = dirs(rng, 0);
    p.push(if rng.u8(..) < 6 { ["a", "b", "c"][rng.usize(..3)] } else { ["e", "f", "g", "h"][rng.usize(..4)] }.into());
    p.join("/")
}

fn meta(rng: &mut fastrand::Rng, dir: bool, xattrs: bool) -> EntryMeta {
    let mut m = EntryMeta {
        mode: if dir {
            [0o755, 0o700, 0o1777, 0o2755][rng.usize(..4)]
        } else {
            [0o644, 0o600, 0o4755, 0o755][rng.usize(..4)]
        },
        uid: rng.u64(0..3) * 1000,
        gid: rng.u64(0..3),
        mtime: 1_600_000_000 + rng.u64(0..1_000_000),
        xattrs: Vec::new(),
    };
    if xattrs && rng.u8(..) < 64 {
        m.xattrs.push((format!("user.k{}", rng.u8(0..3)), vec![rng.u8(..); rng.usize(1..40)]));
    }
    m
}

/// One generated layer tar of up to 40 entries.
fn layer(rng: &mut fastrand::Rng) -> Vec<u8> {
    let mut t = TarBuilder::new();
    let mut files: Vec<String> = Vec::new();
    for _ in 0..rng.usize(1..40) {
        let p = leaf_path(rng);
        match rng.u8(0..12) {
            0..=3 => {
                let data: Vec<u8> = (0..rng.usize(0..20_000)).map(|_| rng.u8(..)).collect();
                t.file_with(&p, &data, meta(rng, false, true));
                files.push(p);
            }
            4 | 5 => {
                t.dir_with(&dir_path(rng), meta(rng, true, true));
            }
            6 => {
                t.symlink(&p, &leaf_path(rng));
            }
            7 if !files.is_empty() => {
                let target = files[rng.usize(..files.len())].clone();
                t.hardlink(&p, &target);
            }
            8 => {
                t.whiteout(&if rng.bool() { p } else { dir_path(rng) });
            }
            9 => {
                t.opaque(&dir_path(rng));
            }
            10 => {
                let size = rng.u64(1..(4 << 20));
                let at = rng.u64(0..size);
                t.sparse(
                    &p,
                    size,
                    &[(at.min(size - 1), &[7u8; 100][..1.max((size - at).min(100) as usize)]), (size, &[])],
                );
                files.push(p);
            }
            _ => {
                let kind = [tar::EntryType::Fifo, tar::EntryType::Char, tar::EntryType::Block][rng.usize(..3)];
                t.device(&p, kind, 1, rng.u32(3..9), meta(rng, false, false));
            }
        }
    }
    t.build()
}

fn walked(root: &Path, written: &record::Written) -> Record {
    record::make(root, written, None).unwrap()
}

#[test]
fn the_record_made_while_applying_equals_the_walk_of_the_tree() {
    let (mut compared, mut refused, mut refreshed) = (0, 0, 0);
    for seed in 0..300u64 {
        let mut rng = fastrand::Rng::with_seed(seed);
        let tar = layer(&mut rng);
        let recorded = seed % 2 == 1;
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let format: Arc<dyn WhiteoutFormat> = if recorded { Arc::new(Recorded) } else { Arc::new(DeleteInPlace) };
        let opts = ApplyOptions::new(format!("seed{seed}")).uncompressed(true).with_whiteouts(format);
        let report = match apply_layer(&root, &tar[..], &opts) {
            Ok(r) => r,
            // A generated tar may be refused (a hardlink to a name replaced by a
            // directory, a path through a symlink it made): nothing to compare.
            Err(_) => {
                refused += 1;
                continue;
            }
        };
        let mut tree = report.tree.clone().unwrap_or_else(|| panic!("seed {seed}: no tree from an empty root"));
        let made = tree.record();
        let want = walked(&root, &report.content);
        assert_eq!(made.entries, want.entries, "seed {seed} ({})", if recorded { "recorded" } else { "in place" });
        assert_eq!(made.usage, want.usage, "seed {seed}: disk use");
        assert_eq!(record::verify(&root, &made).unwrap(), Vec::<String>::new(), "seed {seed}");
        compared += 1;

        // What a union-mount driver does to implicit directories after the apply (their
        // lower metadata, or removed when they hide nothing), read again.
        let implicit: Vec<&Path> = report.implicit_dirs.iter().map(|p| p.as_path()).collect();
        if implicit.is_empty() {
            continue;
        }
        for (i, rel) in implicit.iter().enumerate() {
            let dir = root.join(rel);
            if i % 3 == 2 && !rel.as_os_str().is_empty() {
                let _ = std::fs::remove_dir_all(&dir);
            } else if dir.is_dir() {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711)).unwrap();
            }
        }
        tree.refresh(&root, &implicit).unwrap();
        let want = walked(&root, &report.content);
        assert_eq!(tree.record(), want, "seed {seed}: after the implicit directories changed");
        refreshed += 1;
    }
    eprintln!("{compared} layers compared ({refreshed} also after changes), {refused} refused");
    // The generator must mostly make layers that apply, or the test compares little.
    assert!(compared >= 200, "compared {compared}, refused {refused}");
    assert!(refreshed >= 50, "refreshed {refreshed}");
}

#[test]
fn a_root_that_holds_a_tree_already_gets_no_tree() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("old"), b"x").unwrap();
    let tar = TarBuilder::new().file("f", b"y").build();
    let report = apply_layer(tmp.path(), &tar[..], &ApplyOptions::new("l").uncompressed(true)).unwrap();
    assert!(report.tree.is_none());
}

#[test]
fn a_hardlink_over_a_written_name_takes_the_targets_digest() {
    let tmp = tempfile::tempdir().unwrap();
    let tar = TarBuilder::new().file("a", b"first").file("b", b"second").hardlink("a", "b").build();
    let report = apply_layer(tmp.path(), &tar[..], &ApplyOptions::new("l").uncompressed(true)).unwrap();
    let want = walked(tmp.path(), &report.content);
    assert_eq!(record::verify(tmp.path(), &want).unwrap(), Vec::<String>::new());
    assert_eq!(report.tree.unwrap().record(), want);
}
