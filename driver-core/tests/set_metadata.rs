//! `sys::set_metadata` leaves every node with exactly the owner, mode, xattrs and times
//! it was given, for each kind of node and each way of reaching it. The order matters
//! and is what this pins: chown clears setuid/setgid and `security.capability`, and
//! every change moves the times, so a wrong order loses one of them.

use std::ffi::OsStr;
use std::os::fd::AsFd;

use driver_core::sys::{self, Node, NodeMeta, XattrTarget};
use nix::sys::stat::{Mode, SFlag};
use nix::sys::time::TimeSpec;

/// A file capability (VFS_CAP_REVISION_2, effective, CAP_NET_BIND_SERVICE permitted):
/// the kernel drops it on chown, as `ping` packaged with caps would show.
const CAP: [u8; 20] = [1, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

#[derive(Clone, Copy, Debug)]
enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    CharDev,
}

/// A small fixed-seed generator (xorshift), so every run checks the same cases.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn set_metadata_keeps_owner_mode_xattrs_and_times() {
    if !strata_scratch::privileged("set_metadata (chown to other owners, security.capability)") {
        return;
    }
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let dir = sys::open_dir(tmp.path()).unwrap();
    let mut rng = Rng(0x05ee_d0f5_747a);
    let kinds = [Kind::File, Kind::Dir, Kind::Symlink, Kind::Fifo, Kind::CharDev];
    for i in 0..60 {
        let kind = kinds[i % kinds.len()];
        let name = format!("n{i}");
        let name = OsStr::new(&name);
        let r = rng.next();
        // Setuid and setgid (and sticky) in most cases: the bits chown clears.
        let mode = ((r & 0o7777) as u32) | if r.is_multiple_of(4) { 0 } else { 0o6000 };
        let mut xattrs = vec![("trusted.strata-test".to_string(), format!("value {r:x}").into_bytes())];
        if matches!(kind, Kind::File) {
            xattrs.push(("security.capability".to_string(), CAP.to_vec()));
        }
        xattrs.sort();
        // Every third node keeps its creator's (root's) owner.
        let owner = |n: u64| if r.is_multiple_of(3) { 0 } else { 1000 + n as u32 % 60000 };
        let meta = NodeMeta {
            uid: owner(r >> 20),
            gid: owner(r >> 40),
            mode,
            xattrs,
            atime: TimeSpec::new(1_000_000_000 + (r >> 8) as i64 % 1_000_000, (r >> 3) as i64 % 1_000_000_000),
            mtime: TimeSpec::new(1_500_000_000 + (r >> 16) as i64 % 1_000_000, (r >> 5) as i64 % 1_000_000_000),
        };
        let d = Some(std::os::fd::AsRawFd::as_raw_fd(&dir));
        match kind {
            Kind::File | Kind::Dir => {
                let fd = if matches!(kind, Kind::File) {
                    sys::open_at(dir.as_fd(), name, nix::fcntl::OFlag::O_CREAT | nix::fcntl::OFlag::O_WRONLY, 0o600)
                } else {
                    nix::sys::stat::mkdirat(d, name, Mode::from_bits_truncate(0o700)).unwrap();
                    sys::open_at(dir.as_fd(), name, nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_RDONLY, 0)
                }
                .unwrap();
                // Half the files say how they were made, as the vfs copy does: what
                // they have already is skipped, and the result must be the same.
                let made = if i % 2 == 0 && matches!(kind, Kind::File) {
                    let st = sys::fstat(fd.as_fd()).unwrap();
                    sys::Made { owner: Some((st.st_uid, st.st_gid)), mode: Some(st.st_mode & 0o7777) }
                } else {
                    sys::Made::default()
                };
                sys::set_metadata(Node::Open(fd.as_fd()), &meta, made).unwrap();
            }
            Kind::Symlink | Kind::Fifo | Kind::CharDev => {
                match kind {
                    Kind::Symlink => nix::unistd::symlinkat("somewhere", d, name).unwrap(),
                    Kind::Fifo => {
                        nix::sys::stat::mknodat(d, name, SFlag::S_IFIFO, Mode::from_bits_truncate(0o600), 0).unwrap()
                    }
                    _ => nix::sys::stat::mknodat(
                        d,
                        name,
                        SFlag::S_IFCHR,
                        Mode::from_bits_truncate(0o600),
                        nix::sys::stat::makedev(1, 3),
                    )
                    .unwrap(),
                }
                let symlink = matches!(kind, Kind::Symlink);
                sys::set_metadata(Node::Named { dir: dir.as_fd(), name, symlink }, &meta, sys::Made::default())
                    .unwrap();
            }
        }
        let st = sys::lstat_at(dir.as_fd(), name).unwrap().unwrap();
        let got_xattrs = sys::read_xattrs(XattrTarget::NoFollow(&sys::proc_path(dir.as_fd(), name))).unwrap();
        let mut want = meta.clone();
        if matches!(kind, Kind::Symlink) {
            want.mode = 0o777; // Linux has no mode for a symlink.
        }
        assert_eq!(NodeMeta::from_stat(&st, got_xattrs), want, "case {i}: {kind:?}");
    }
}

/// What `Made` says a node has is not set again (the syscalls a copy saves), except
/// setuid, setgid and sticky, which a chown would have cleared.
#[test]
fn what_a_node_was_made_with_is_not_set_again() {
    if !strata_scratch::privileged("set_metadata (chown)") {
        return;
    }
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let dir = sys::open_dir(tmp.path()).unwrap();
    let t = TimeSpec::new(1_600_000_000, 0);
    let mode_after = |name: &str, mode: u32| {
        let fd =
            sys::open_at(dir.as_fd(), OsStr::new(name), nix::fcntl::OFlag::O_CREAT | nix::fcntl::OFlag::O_WRONLY, 0)
                .unwrap();
        nix::sys::stat::fchmod(std::os::fd::AsRawFd::as_raw_fd(&fd), Mode::from_bits_truncate(0o644)).unwrap();
        let meta = NodeMeta { uid: 0, gid: 0, mode, xattrs: Vec::new(), atime: t, mtime: t };
        // Told (wrongly, to see it) that the file was made with `mode` by root.
        let made = sys::Made { owner: Some((0, 0)), mode: Some(mode) };
        sys::set_metadata(Node::Open(fd.as_fd()), &meta, made).unwrap();
        sys::fstat(fd.as_fd()).unwrap().st_mode & 0o7777
    };
    assert_eq!(mode_after("plain", 0o600), 0o644, "the mode it was made with is not set again");
    assert_eq!(mode_after("setuid", 0o4600), 0o4600, "setuid is always set");
}

/// `Creator::made` says only what a new node really has: checked on files made (as the
/// tar engine makes them, with their own permission bits) in a plain directory, a
/// setgid directory of another group (new files take its group) and a directory with
/// a default ACL (which replaces the umask), for generated modes (fixed seed).
#[test]
fn a_creator_claims_only_what_a_new_node_has() {
    if !strata_scratch::privileged("Creator (chown of a setgid directory)") {
        return;
    }
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let make_dir = |name: &str| {
        let p = tmp.path().join(name);
        std::fs::create_dir(&p).unwrap();
        sys::open_dir(&p).unwrap()
    };
    let plain = make_dir("plain");
    let setgid = make_dir("setgid");
    nix::unistd::fchown(std::os::fd::AsRawFd::as_raw_fd(&setgid), None, Some(1234.into())).unwrap();
    nix::sys::stat::fchmod(std::os::fd::AsRawFd::as_raw_fd(&setgid), Mode::from_bits_truncate(0o2755)).unwrap();
    let acl = make_dir("acl");
    // posix_acl_xattr: version 2, then (tag, perm, id): user::rw-, group::---, other::---.
    let mut entries = 2u32.to_le_bytes().to_vec();
    for (tag, perm) in [(0x01u16, 6u16), (0x04, 0), (0x20, 0)] {
        entries.extend(tag.to_le_bytes());
        entries.extend(perm.to_le_bytes());
        entries.extend(u32::MAX.to_le_bytes());
    }
    let has_acl =
        sys::set_xattr(XattrTarget::Fd(std::os::fd::AsRawFd::as_raw_fd(&acl)), "system.posix_acl_default", &entries)
            .is_ok();
    let creator = |d: &std::os::fd::OwnedFd| sys::Creator::in_dir(d.as_fd()).unwrap();
    // Where nothing stands in the way, the owner and (with the umask known) mode are known.
    let made = creator(&plain).made(0o644);
    assert_eq!(made.owner, Some((nix::unistd::geteuid().as_raw(), nix::unistd::getegid().as_raw())));
    assert!(made.mode.is_some(), "the umask is read from /proc/self/status");
    assert_eq!(creator(&setgid).made(0o644).owner, None, "a setgid directory's group is not the creator's");
    if has_acl {
        assert_eq!(creator(&acl).made(0o644).mode, None, "a default ACL replaces the umask");
    }
    let mut rng = Rng(0x0c4e_a702);
    for (d, dir) in [("plain", &plain), ("setgid", &setgid), ("acl", &acl)] {
        let c = creator(dir);
        for i in 0..40 {
            let mode = (rng.next() & 0o777) as u32;
            let name = format!("f{i}");
            let flags = nix::fcntl::OFlag::O_CREAT | nix::fcntl::OFlag::O_EXCL | nix::fcntl::OFlag::O_WRONLY;
            let fd = sys::open_at(dir.as_fd(), OsStr::new(&name), flags, mode).unwrap();
            let st = sys::fstat(fd.as_fd()).unwrap();
            let made = c.made(mode);
            if let Some(owner) = made.owner {
                assert_eq!(owner, (st.st_uid, st.st_gid), "{d}/{name}: the owner claimed");
            }
            if let Some(m) = made.mode {
                assert_eq!(m, st.st_mode & 0o7777, "{d}/{name} made with {mode:o}: the mode claimed");
            }
        }
    }
}
