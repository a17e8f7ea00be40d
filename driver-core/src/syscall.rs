//! The syscalls whose use is a decision worth testing (making a whiteout node, marking
//! a directory with an xattr), behind a small trait with a recording double (as youki's
//! `Syscall` trait): a unit test runs the code that decides with [`Recording`] and
//! checks which calls it made, without root or a filesystem that takes them, while
//! production and the privileged tests use [`Real`].

use std::ffi::{OsStr, OsString};
use std::fmt::Debug;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::PathBuf;
use std::sync::Mutex;

use nix::sys::stat::{Mode, SFlag};

use crate::sys::{self, XattrTarget};

/// The calls a driver's decisions go through.
pub trait Syscalls: Debug + Send + Sync {
    /// `mknodat(dir, name, kind | perm, dev)`.
    fn mknod_at(&self, dir: BorrowedFd<'_>, name: &OsStr, kind: SFlag, perm: Mode, dev: libc::dev_t) -> io::Result<()>;

    /// Sets xattr `name` on the open directory or file `fd`.
    fn set_xattr_fd(&self, fd: BorrowedFd<'_>, name: &str, value: &[u8]) -> io::Result<()>;
}

/// The kernel.
#[derive(Clone, Copy, Debug, Default)]
pub struct Real;

impl Syscalls for Real {
    fn mknod_at(&self, dir: BorrowedFd<'_>, name: &OsStr, kind: SFlag, perm: Mode, dev: libc::dev_t) -> io::Result<()> {
        nix::sys::stat::mknodat(Some(dir.as_raw_fd()), name, kind, perm, dev).map_err(sys::errno)
    }

    fn set_xattr_fd(&self, fd: BorrowedFd<'_>, name: &str, value: &[u8]) -> io::Result<()> {
        sys::set_xattr(XattrTarget::Fd(fd.as_raw_fd()), name, value)
    }
}

/// One call a [`Recording`] saw. Directories are given by the path their descriptor
/// had.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    Mknod { dir: PathBuf, name: OsString, kind: SFlag, perm: u32, dev: libc::dev_t },
    SetXattr { path: PathBuf, name: String, value: Vec<u8> },
}

/// The double: records every call. A node it is asked to make becomes an empty regular
/// file of mode 0 (so that code looking afterwards finds something there, as it would),
/// and an xattr is only recorded.
#[derive(Debug, Default)]
pub struct Recording {
    calls: Mutex<Vec<Call>>,
}

impl Recording {
    /// The calls so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn record(&self, call: Call) {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).push(call);
    }
}

/// The path a descriptor refers to (for recorded calls).
fn fd_path(fd: BorrowedFd<'_>) -> PathBuf {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap_or_default()
}

impl Syscalls for Recording {
    fn mknod_at(&self, dir: BorrowedFd<'_>, name: &OsStr, kind: SFlag, perm: Mode, dev: libc::dev_t) -> io::Result<()> {
        self.record(Call::Mknod { dir: fd_path(dir), name: name.to_owned(), kind, perm: perm.bits(), dev });
        let placeholder = sys::open_at(
            dir,
            name,
            nix::fcntl::OFlag::O_CREAT | nix::fcntl::OFlag::O_EXCL | nix::fcntl::OFlag::O_WRONLY,
            0,
        )?;
        drop(placeholder);
        Ok(())
    }

    fn set_xattr_fd(&self, fd: BorrowedFd<'_>, name: &str, value: &[u8]) -> io::Result<()> {
        self.record(Call::SetXattr { path: fd_path(fd), name: name.to_string(), value: value.to_vec() });
        Ok(())
    }
}
