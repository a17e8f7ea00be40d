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
        let meta = NodeMeta {
            uid: 1000 + (r >> 20) as u32 % 60000,
            gid: 1000 + (r >> 40) as u32 % 60000,
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
                sys::set_metadata(Node::Open(fd.as_fd()), &meta).unwrap();
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
                sys::set_metadata(Node::Named { dir: dir.as_fd(), name, symlink }, &meta).unwrap();
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
