//! Whole directories through a descriptor: listing names, removing a tree, never
//! following a symbolic link.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use nix::unistd::UnlinkatFlags;

use super::errno;
use super::resolve::{open_at, with_noatime, AsFdBorrowed};

/// Removes `name` from `dir` whatever it is; a directory goes with everything in it.
/// Never follows a symlink: a link is removed, not what it points to.
pub fn remove_all_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    match nix::unistd::unlinkat(Some(dir.as_raw_fd()), name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) => return Ok(()),
        Err(Errno::ENOENT) => return Ok(()),
        Err(Errno::EISDIR) => {}
        Err(e) => return Err(errno(e)),
    }
    let sub = open_at(dir, name, OFlag::O_DIRECTORY | OFlag::O_RDONLY, 0)?;
    clear_dir(sub.as_fd_borrowed())?;
    drop(sub);
    match nix::unistd::unlinkat(Some(dir.as_raw_fd()), name, UnlinkatFlags::RemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(errno(e)),
    }
}

/// Removes everything inside the directory `dir`.
pub fn clear_dir(dir: BorrowedFd<'_>) -> io::Result<()> {
    for name in read_dir_names(dir)? {
        remove_all_at(dir, &name)?;
    }
    Ok(())
}

/// The names in a directory (without `.` and `..`), unsorted.
pub fn read_dir_names(dir: BorrowedFd<'_>) -> io::Result<Vec<std::ffi::OsString>> {
    // Dir::openat on "." gives an independent descriptor and position.
    let mut d = with_noatime(OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC, |f| {
        nix::dir::Dir::openat(Some(dir.as_raw_fd()), ".", f, Mode::empty())
    })
    .map_err(errno)?;
    let mut names = Vec::new();
    for entry in d.iter() {
        let entry = entry.map_err(errno)?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(OsStr::from_bytes(name).to_os_string());
        }
    }
    Ok(names)
}
