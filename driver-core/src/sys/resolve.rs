//! Paths inside a layer root, resolved by the kernel (`openat2` with
//! `RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS`), never by string checks; opens relative to a
//! directory descriptor, and the stat helpers that go with them.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstatat, FileStat, Mode, SFlag};

use super::errno;

/// How paths inside a layer root are resolved: the root acts as `/`, `..` cannot climb
/// out of it, and no symbolic link is followed anywhere on the way (a layer tar may not
/// write through a link, whoever made the link). `ELOOP` means a link was in the way.
pub fn confined() -> ResolveFlag {
    ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS
}

/// `O_NOATIME` where this process may use it (the file's owner, or CAP_FOWNER): reading
/// a layer to diff it must not change it, and an atime update rewrites the inode
/// (on a snapshot, every read file would then look changed since it was taken).
fn noatime(flags: OFlag) -> OFlag {
    flags | OFlag::O_NOATIME
}

/// Retries an open without O_NOATIME when the kernel refuses it (EPERM: not ours).
pub(super) fn with_noatime<T>(flags: OFlag, open: impl Fn(OFlag) -> nix::Result<T>) -> nix::Result<T> {
    match open(noatime(flags)) {
        Err(Errno::EPERM) => open(flags),
        other => other,
    }
}

/// Opens `rel` (relative to `root`; empty means `root` itself) with the confined
/// resolution and `flags` (`O_CLOEXEC | O_NOFOLLOW` are added).
pub fn open_in(root: BorrowedFd<'_>, rel: &Path, flags: OFlag) -> io::Result<OwnedFd> {
    let rel: &Path = if rel.as_os_str().is_empty() { Path::new(".") } else { rel };
    let how = OpenHow::new().flags(flags | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW).resolve(confined());
    let fd = openat2(root.as_raw_fd(), rel, how).map_err(errno)?;
    // SAFETY: openat2 returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens the directory `rel` inside `root`, confined.
pub fn open_dir_in(root: BorrowedFd<'_>, rel: &Path) -> io::Result<OwnedFd> {
    open_in(root, rel, OFlag::O_DIRECTORY | OFlag::O_RDONLY)
}

/// Opens a directory by absolute path (the layer root itself).
pub fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    let fd = nix::fcntl::open(path, OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(errno)?;
    // SAFETY: open returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens a directory by absolute path of any length: the longest head that fits in
/// PATH_MAX is opened as `open(2)` would, the rest inside it, confined, in pieces that
/// fit (a layer's directories can lie deeper than one path can name).
pub fn open_dir_long(path: &Path) -> io::Result<OwnedFd> {
    let max = libc::PATH_MAX as usize - 1;
    if path.as_os_str().len() <= max {
        return open_dir(path);
    }
    let mut fd: Option<OwnedFd> = None;
    let mut piece = PathBuf::new();
    let open = |fd: &Option<OwnedFd>, piece: &Path| match fd {
        None => open_dir(piece),
        Some(d) => open_dir_in(d.as_fd(), piece),
    };
    for c in path.components() {
        if piece.as_os_str().len() + 1 + c.as_os_str().len() > max {
            fd = Some(open(&fd, &piece)?);
            piece = PathBuf::new();
        }
        piece.push(c);
    }
    open(&fd, &piece)
}

/// Opens `name` in `dir` without following a final symlink.
pub fn open_at(dir: BorrowedFd<'_>, name: &OsStr, flags: OFlag, mode: u32) -> io::Result<OwnedFd> {
    let flags = flags | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW;
    let open = |f| nix::fcntl::openat(Some(dir.as_raw_fd()), name, f, Mode::from_bits_truncate(mode));
    // O_NOATIME is for reading what exists; a file being created is ours anyway.
    let fd = if flags.contains(OFlag::O_CREAT) { open(flags) } else { with_noatime(flags, open) }.map_err(errno)?;
    // SAFETY: openat returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `lstat` of `name` in `dir`; `Ok(None)` when it does not exist.
pub fn lstat_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Option<FileStat>> {
    match fstatat(Some(dir.as_raw_fd()), name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(errno(e)),
    }
}

pub fn fstat(fd: BorrowedFd<'_>) -> io::Result<FileStat> {
    nix::sys::stat::fstat(fd.as_raw_fd()).map_err(errno)
}

pub fn is_dir(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
}

pub fn file_type(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT
}

/// Helper so an `OwnedFd` can be passed where a `BorrowedFd` is wanted.
pub trait AsFdBorrowed {
    fn as_fd_borrowed(&self) -> BorrowedFd<'_>;
}

impl AsFdBorrowed for OwnedFd {
    fn as_fd_borrowed(&self) -> BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(self)
    }
}

/// The path `/proc/self/fd/<dir>/<name>`: reaches `name` through an open directory
/// descriptor, for the few calls (xattrs on symlinks and devices) that have no `*at` form.
pub fn proc_path(dir: BorrowedFd<'_>, name: &OsStr) -> CString {
    let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    p.extend_from_slice(name.as_bytes());
    CString::new(p).expect("path has no NUL")
}
