//! Owner, mode, xattrs and times of a node, set in the one order that keeps each
//! (see [`set_metadata`]), and what a newly made node has already.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use nix::sys::stat::{FileStat, Mode};
use nix::sys::time::TimeSpec;

use super::errno;
use super::resolve::{fstat, proc_path};
use super::xattr::{get_xattr, set_xattrs, XattrTarget};

/// What a node carries besides its data: owner, mode (permission bits with
/// setuid/setgid/sticky), xattrs and times. A layer's tar entry and a copied inode both
/// come down to this, and [`set_metadata`] writes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeMeta {
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    pub xattrs: Vec<(String, Vec<u8>)>,
    pub atime: TimeSpec,
    pub mtime: TimeSpec,
}

impl NodeMeta {
    /// Owner, mode and times from a stat, with the given xattrs.
    pub fn from_stat(st: &FileStat, xattrs: Vec<(String, Vec<u8>)>) -> NodeMeta {
        NodeMeta {
            uid: st.st_uid,
            gid: st.st_gid,
            mode: st.st_mode & 0o7777,
            xattrs,
            atime: TimeSpec::new(st.st_atime, st.st_atime_nsec),
            mtime: TimeSpec::new(st.st_mtime, st.st_mtime_nsec),
        }
    }
}

/// The node whose metadata is set: an open file or directory, or `name` in `dir`
/// (symlinks and devices, which cannot be opened to write their metadata).
#[derive(Clone, Copy)]
pub enum Node<'a> {
    Open(BorrowedFd<'a>),
    /// `symlink`: the node is a symbolic link, whose mode Linux cannot change.
    Named {
        dir: BorrowedFd<'a>,
        name: &'a OsStr,
        symlink: bool,
    },
}

/// What a node already has from the way it was made, where known: the owner a new node
/// gets (its creator's) and the mode it was created with (after the umask).
/// [`set_metadata`] does not set those again (`cp -a` skips them too; on a root-owned
/// image that is two syscalls of the seven a small copied file costs).
/// `Made::default()`: nothing known, everything is set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Made {
    pub owner: Option<(u32, u32)>,
    pub mode: Option<u32>,
}

/// Who makes nodes in a directory, and so what a node made there has before any
/// chown or chmod ([`Creator::made`]).
#[derive(Clone, Copy, Debug)]
pub struct Creator {
    owner: Option<(u32, u32)>,
    umask: Option<u32>,
}

impl Creator {
    /// This process making nodes in `dir`. A new node's owner is the process's, and its
    /// group too unless `dir`'s group differs (a setgid directory or a `grpid` mount
    /// give the directory's: known only when the two are the same); its mode is the
    /// one asked for less the umask, unless `dir` has a default ACL, which replaces
    /// the umask (unknown then).
    pub fn in_dir(dir: BorrowedFd<'_>) -> io::Result<Creator> {
        let st = fstat(dir)?;
        let (uid, gid) = (nix::unistd::geteuid().as_raw(), nix::unistd::getegid().as_raw());
        let owner = (st.st_gid == gid).then_some((uid, gid));
        let acl = get_xattr(XattrTarget::Fd(dir.as_raw_fd()), "system.posix_acl_default")?.is_some();
        Ok(Creator { owner, umask: umask().filter(|_| !acl) })
    }

    /// What a node made with permission bits `mode` has: see [`Made`].
    pub fn made(&self, mode: u32) -> Made {
        Made { owner: self.owner, mode: self.umask.map(|u| mode & 0o777 & !u) }
    }
}

/// The process's umask, read once from /proc/self/status (`umask(2)` cannot read it
/// without changing it); `None` when unknown.
pub fn umask() -> Option<u32> {
    static UMASK: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    *UMASK.get_or_init(|| {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let v = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
        u32::from_str_radix(v.trim(), 8).ok()
    })
}

/// Sets owner, mode, xattrs and times of `node`, in that order, because each step can
/// undo an earlier one: chown clears the setuid/setgid bits (so mode comes after it) and
/// `security.capability` (so xattrs come after both), and every change moves ctime and
/// writing an xattr may touch the node (so times come last). What `made` says the node
/// has already is not set again.
pub fn set_metadata(node: Node<'_>, meta: &NodeMeta, made: Made) -> io::Result<()> {
    use nix::fcntl::AtFlags;
    use nix::sys::stat::{fchmod, fchmodat, futimens, utimensat, FchmodatFlags, UtimensatFlags};
    let (uid, gid) = (Some(meta.uid.into()), Some(meta.gid.into()));
    let mode = Mode::from_bits_truncate(meta.mode);
    let chown = made.owner != Some((meta.uid, meta.gid));
    // setuid, setgid and sticky are always set: a chown would have cleared them.
    let chmod = made.mode != Some(meta.mode) || meta.mode & 0o7000 != 0;
    match node {
        Node::Open(fd) => {
            let fd = fd.as_raw_fd();
            if chown {
                nix::unistd::fchown(fd, uid, gid).map_err(errno)?;
            }
            if chmod {
                fchmod(fd, mode).map_err(errno)?;
            }
            set_xattrs(XattrTarget::Fd(fd), &meta.xattrs)?;
            futimens(fd, &meta.atime, &meta.mtime).map_err(errno)
        }
        Node::Named { dir, name, symlink } => {
            let d = Some(dir.as_raw_fd());
            if chown {
                nix::unistd::fchownat(d, name, uid, gid, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(errno)?;
            }
            if !symlink && chmod {
                // Callers name a node they just made (mknodat) in a directory only they
                // write, so the name cannot have become a link in between.
                fchmodat(d, name, mode, FchmodatFlags::FollowSymlink).map_err(errno)?;
            }
            if !meta.xattrs.is_empty() {
                set_xattrs(XattrTarget::NoFollow(&proc_path(dir, name)), &meta.xattrs)?;
            }
            utimensat(d, name, &meta.atime, &meta.mtime, UtimensatFlags::NoFollowSymlink).map_err(errno)
        }
    }
}
