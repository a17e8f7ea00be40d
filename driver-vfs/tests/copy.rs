//! The parallel tree copy (`driver_vfs::copy::Copier`) against a generated tree: many
//! more files than the pool queues, hardlinks across directories (their first name met
//! before and after the others; one inode with a name in every directory), sparse
//! files, xattrs on files, directories and symlinks, setuid, modes the umask would
//! change, owners differing in group only, fifos, read-only directories, a path near
//! PATH_MAX, files copied in several pieces, and set times. The copy must equal
//! the source for `strata_testkit::tree` (type, mode, owner, size, content, link target,
//! xattrs, hardlink groups, mtimes), and a sparse file must stay sparse.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use driver_core::sys::{self, XattrTarget};
use driver_vfs::copy::Copier;
use strata_testkit::tree::{CompareOptions, Tree};

/// xorshift32 with a fixed seed: the same tree every run.
struct Rng(u32);

impl Rng {
    fn next(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 17;
        self.0 ^= self.0 << 5;
        self.0
    }
}

fn set_times(p: &Path, secs: i64) {
    let t = nix::sys::time::TimeSpec::new(secs, 123_456_789);
    nix::sys::stat::utimensat(None, p, &t, &t, nix::sys::stat::UtimensatFlags::NoFollowSymlink).unwrap();
}

fn xattr(p: &Path, name: &str, value: &[u8]) {
    let p = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    sys::set_xattr(XattrTarget::NoFollow(&p), name, value).unwrap();
}

/// Writes the tree; returns the path of its sparse file.
fn generate(root: &Path, seed: u32) -> std::path::PathBuf {
    let mut rng = Rng(seed);
    let dirs: Vec<_> = (0..40).map(|d| root.join(format!("d{d:02}"))).collect();
    for d in &dirs {
        fs::create_dir(d).unwrap();
        fs::create_dir(d.join("sub")).unwrap();
    }
    for i in 0..1500 {
        let d = &dirs[rng.next() as usize % dirs.len()];
        let p = if i % 4 == 0 { d.join("sub").join(format!("f{i}")) } else { d.join(format!("f{i}")) };
        let len = match rng.next() % 10 {
            0 => 0,
            1 => 200_000 + rng.next() as usize % 300_000,
            _ => rng.next() as usize % 5000,
        };
        let data: Vec<u8> = (0..len).map(|j| (j as u32 ^ i) as u8).collect();
        fs::write(&p, data).unwrap();
        match i % 7 {
            0 => xattr(&p, "user.strata.test", format!("v{i}").as_bytes()),
            1 => fs::set_permissions(&p, fs::Permissions::from_mode(0o4755)).unwrap(),
            2 => nix::unistd::chown(&p, Some(1000.into()), Some(1001.into())).unwrap(),
            // Modes the umask would change at creation, and an owner differing in group only.
            3 => fs::set_permissions(&p, fs::Permissions::from_mode(0o777)).unwrap(),
            4 => fs::set_permissions(&p, fs::Permissions::from_mode(0o000)).unwrap(),
            5 => nix::unistd::chown(&p, None, Some(1001.into())).unwrap(),
            _ => {}
        }
        if i % 50 == 0 {
            // Hardlinks in other directories, sorted before and after the first name.
            for (k, name) in ["a-link", "z-link"].iter().enumerate() {
                let other = &dirs[(rng.next() as usize + k) % dirs.len()];
                fs::hard_link(&p, other.join(format!("{name}{i}"))).unwrap();
            }
        }
        if i % 97 == 0 {
            let l = d.join(format!("s{i}"));
            std::os::unix::fs::symlink(format!("f{i}"), &l).unwrap();
            xattr(&l, "trusted.strata", b"on a symlink");
            set_times(&l, 1_000_000 + i as i64);
        }
        set_times(&p, 1_500_000_000 + i as i64);
    }
    // One inode with many names, in every directory.
    let many = dirs[2].join("many");
    fs::write(&many, b"one inode").unwrap();
    for (k, d) in dirs.iter().enumerate() {
        fs::hard_link(&many, d.join("sub").join(format!("many-{k}"))).unwrap();
    }
    // A path near PATH_MAX: 17 directories of 200-byte names under the root.
    let mut deep = dirs[3].clone();
    for k in 0..17 {
        deep.push(format!("{k:02}{}", "d".repeat(198)));
        fs::create_dir(&deep).unwrap();
    }
    fs::write(deep.join("deepest"), b"far down").unwrap();
    let sparse = dirs[0].join("sparse");
    let f = fs::File::create(&sparse).unwrap();
    f.set_len(64 << 20).unwrap();
    std::os::unix::fs::FileExt::write_at(&f, b"middle", 32 << 20).unwrap();
    std::os::unix::fs::FileExt::write_at(&f, b"end", (64 << 20) - 3).unwrap();
    drop(f);
    // Bigger than a copy piece (8 MiB), so copied in several: one dense, one sparse
    // with a 12 MiB data segment; no two pieces hold the same bytes.
    let piece = |j: usize| (j as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3];
    fs::write(dirs[4].join("big"), (0..(20 << 20) + 5).map(piece).collect::<Vec<u8>>()).unwrap();
    let f = fs::File::create(dirs[5].join("big-sparse")).unwrap();
    f.set_len(40 << 20).unwrap();
    let segment: Vec<u8> = (0..12 << 20).map(|j| piece(j + 7)).collect();
    std::os::unix::fs::FileExt::write_at(&f, &segment, 16 << 20).unwrap();
    drop(f);
    nix::unistd::mkfifo(&dirs[1].join("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o640)).unwrap();
    for (k, d) in dirs.iter().enumerate() {
        xattr(d, "user.strata.dir", format!("{k}").as_bytes());
        set_times(&d.join("sub"), 1_400_000_000 + k as i64);
        set_times(d, 1_300_000_000 + k as i64);
        if k % 5 == 0 {
            fs::set_permissions(d, fs::Permissions::from_mode(0o555)).unwrap();
        }
    }
    sparse
}

#[test]
fn a_parallel_copy_equals_its_source() {
    if !strata_scratch::privileged("the parallel copy test (owners, trusted.* xattrs)") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    let sparse = generate(&src, 0x5eed_c0de);
    let copier = Copier::default();
    for round in 0..2 {
        let dst = tmp.path().join(format!("dst{round}"));
        copier.copy_tree(&src, &dst).unwrap();
        let (a, b) = (Tree::capture(&src).unwrap(), Tree::capture(&dst).unwrap());
        let diff = a.differences(&b, &CompareOptions::default());
        assert!(diff.is_empty(), "round {round}: {} differences, first: {:?}", diff.len(), &diff[..diff.len().min(10)]);
        assert_eq!(a.entries.len(), b.entries.len());
        let copied = dst.join(sparse.strip_prefix(&src).unwrap());
        let (s, d) = (fs::metadata(&sparse).unwrap(), fs::metadata(&copied).unwrap());
        assert_eq!(d.len(), 64 << 20);
        assert!(d.blocks() <= s.blocks() + 64, "sparse file filled: {} blocks, source {}", d.blocks(), s.blocks());
    }
}
