//! Generated change scripts (fixed seeds) against the btrfs diff that follows
//! generations: each script changes a container over a many-leaf image through its
//! view with ordinary syscalls (writes in place, appends, mmap, truncate, chmod, chown,
//! utime, renames of files and directories incl. over existing names and swaps,
//! deletes of trees, hardlinks added and split, symlinks, fifos, xattrs, nested
//! subvolumes), and the diff, taken at once while the view is in use and again after
//! unmount, must be the naive walk's, change for change and byte for byte.
//! `STRATA_BTRFS_SEEDS=N` runs seeds up to N instead of 60 (`STRATA_BTRFS_FIRST`:
//! from which).

use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use driver_btrfs::{ioctl, BtrfsDriver};
use driver_core::Driver;
use strata_archive::diff::write_tar;
use strata_archive::tarbuild::{EntryMeta, TarBuilder};
use strata_scratch::FsKind;
use strata_testkit::conformance::{self, Backing};

fn base() -> Vec<u8> {
    let mut t = TarBuilder::new();
    for d in 0..12 {
        t.dir(&format!("d{d}"));
        t.dir(&format!("d{d}/s"));
        for i in 0..120 {
            let name = if i % 3 == 0 { format!("d{d}/s/f{i}") } else { format!("d{d}/f{i}") };
            let body = if i % 7 == 0 { vec![b'x'; 5000] } else { format!("file {d}/{i}").into_bytes() };
            t.file_with(&name, &body, EntryMeta { mtime: 1_600_000_000 + i, ..Default::default() });
        }
        t.hardlink(&format!("d{d}/link"), &format!("d{d}/f1"));
        t.symlink(&format!("d{d}/sym"), "f2");
    }
    t.build()
}

/// Every path in the view (relative), directories included, without the root.
fn all_paths(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let Ok(rd) = fs::read_dir(root.join(&rel)) else { continue };
        for e in rd.flatten() {
            let p = rel.join(e.file_name());
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out.sort();
    out
}

/// One random change; failures (a rename into itself, a name that is gone) are part
/// of what users meet and are ignored.
fn change(rng: &mut fastrand::Rng, v: &Path, n: usize) {
    let paths = all_paths(v);
    if paths.is_empty() {
        return;
    }
    let pick = |rng: &mut fastrand::Rng| v.join(&paths[rng.usize(..paths.len())]);
    let dirs: Vec<&PathBuf> = paths.iter().filter(|p| v.join(p).is_dir()).collect();
    let pick_dir = |rng: &mut fastrand::Rng| {
        if dirs.is_empty() || rng.u8(..4) == 0 {
            v.to_path_buf()
        } else {
            v.join(dirs[rng.usize(..dirs.len())])
        }
    };
    let p = pick(rng);
    let is_file = fs::symlink_metadata(&p).is_ok_and(|m| m.is_file());
    let rw = || fs::OpenOptions::new().read(true).write(true).open(&p);
    let _ = match rng.u8(..20) {
        0 if is_file => rw().and_then(|f| f.write_all_at(b"IN-PLACE", rng.u64(..64))),
        1 if is_file => fs::OpenOptions::new().append(true).open(&p).and_then(|mut f| f.write_all(b"+appended")),
        2 if is_file && fs::metadata(&p).is_ok_and(|m| m.len() > 4) => {
            let len = fs::metadata(&p).unwrap().len();
            conformance::mmap_write(&p, rng.usize(..len as usize) as u64, b"M")
        }
        3 if is_file => rw().and_then(|f| f.set_len(rng.u64(..20_000))),
        4 => fs::set_permissions(&p, fs::Permissions::from_mode([0o600, 0o755, 0o4755, 0o640][rng.usize(..4)])),
        5 => std::os::unix::fs::lchown(&p, Some(rng.u32(..3) * 1000), Some(rng.u32(..3) * 1000)),
        6 => {
            let t = nix::sys::time::TimeSpec::new(1_650_000_000 + rng.i64(..1000), rng.i64(..1_000_000_000));
            nix::sys::stat::utimensat(None, &p, &t, &t, nix::sys::stat::UtimensatFlags::NoFollowSymlink)
                .map_err(std::io::Error::from)
        }
        // Renames: to a new name, over an existing one, and swaps of two directories.
        7 | 8 => fs::rename(&p, pick_dir(rng).join(format!("r{n}"))),
        9 => fs::rename(&p, pick(rng)),
        10 => {
            let (a, b) = (pick_dir(rng), pick_dir(rng));
            let tmp = v.join(format!("swap{n}"));
            fs::rename(&a, &tmp).and_then(|_| fs::rename(&b, &a)).and_then(|_| fs::rename(&tmp, &b))
        }
        11 if is_file => fs::remove_file(&p),
        12 if !is_file => fs::remove_dir_all(&p),
        13 => {
            let d = pick_dir(rng).join(format!("new{n}"));
            fs::create_dir(&d)
                .and_then(|_| (0..rng.usize(1..30)).try_for_each(|i| fs::write(d.join(i.to_string()), b"n")))
        }
        14 if is_file => fs::hard_link(&p, pick_dir(rng).join(format!("h{n}"))),
        // A split: one name of a file deleted and made again, same content and mtime.
        15 if is_file => {
            let md = fs::metadata(&p).unwrap();
            let body = fs::read(&p).unwrap();
            fs::remove_file(&p).and_then(|_| fs::write(&p, body)).map(|_| {
                let t = nix::sys::time::TimeSpec::new(md.mtime(), md.mtime_nsec());
                let _ = nix::sys::stat::utimensat(None, &p, &t, &t, nix::sys::stat::UtimensatFlags::NoFollowSymlink);
            })
        }
        16 => {
            let l = pick_dir(rng).join(format!("sym{n}"));
            std::os::unix::fs::symlink(format!("target{}", rng.u8(..9)), l)
        }
        17 => nix::unistd::mkfifo(
            &pick_dir(rng).join(format!("fifo{n}")),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .map_err(std::io::Error::from),
        18 => {
            let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
            let target = driver_core::sys::XattrTarget::NoFollow(&c);
            if rng.bool() {
                driver_core::sys::set_xattr(target, "user.gen", format!("v{n}").as_bytes())
            } else {
                driver_core::sys::remove_xattr(target, "user.gen")
            }
        }
        19 if rng.u8(..3) == 0 => {
            let d = pick_dir(rng);
            let name = format!("subvol{n}");
            let fd = driver_core::sys::open_dir(&d).unwrap();
            ioctl::create_subvolume(fd.as_fd(), OsStr::new(&name))
                .and_then(|_| fs::write(d.join(&name).join("inside"), b"in a subvolume"))
        }
        _ => Ok(()),
    };
}

fn tar_of(id: &str, e: strata_archive::diff::NaiveDiff) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    write_tar(id, e.entries, &e.reserved, &mut out).map(|_| out).map_err(|e| e.to_string())
}

fn assert_same(d: &BtrfsDriver, id: &str, seed: u64, when: &str) {
    let (follow, naive) = (d.follow(id, d.reserved()), d.naive(id, d.reserved()));
    match (follow, naive) {
        (Ok(f), Ok(n)) => {
            assert_eq!(f.changes, n.changes, "seed {seed}, {when}: changes differ from the naive walk");
            let (a, b) = (tar_of(id, f), tar_of(id, n));
            assert!(a == b, "seed {seed}, {when}: the tars differ");
        }
        (Err(f), Err(n)) => assert_eq!(f.to_string(), n.to_string(), "seed {seed}, {when}"),
        (f, n) => panic!("seed {seed}, {when}: follow {:?} vs naive {:?}", f.map(|_| ()), n.map(|_| ())),
    }
}

#[test]
fn generated_scripts_equal_the_naive_walk() {
    let Some(base_dir) = conformance::shared_base(Backing::Scratch(FsKind::Btrfs, 2 << 30)) else { return };
    let d = BtrfsDriver::new(&base_dir.join("generated")).unwrap();
    d.apply_diff("base", None, &mut &base()[..]).unwrap();
    let first: u64 = std::env::var("STRATA_BTRFS_FIRST").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
    let seeds: u64 = std::env::var("STRATA_BTRFS_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    for seed in first..seeds {
        let mut rng = fastrand::Rng::with_seed(seed);
        let id = format!("c{seed}");
        d.create(&id, Some("base"), true).unwrap();
        let v = d.mount(&id).unwrap();
        for n in 0..rng.usize(1..25) {
            change(&mut rng, &v, n);
        }
        assert_same(&d, &id, seed, "while mounted");
        d.unmount(&id).unwrap();
        assert_same(&d, &id, seed, "after unmount");
        d.remove(&id).unwrap_or_else(|e| panic!("seed {seed}: remove: {e}"));
    }
}
