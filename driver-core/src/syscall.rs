//! The syscalls whose use is a decision worth testing (making a whiteout node, marking
//! a directory with an xattr, mounting a view with its options), behind a small trait
//! with a recording double (as youki's `Syscall` trait): a unit test runs the code that
//! decides with [`Recording`] and checks which calls it made, without root or a
//! filesystem that takes them, while production and the privileged tests use [`Real`].
//!
//! The new mount API (`fsopen`/`fsconfig`/`fsmount`/`move_mount`, Linux 5.2+) has no
//! wrapper in nix 0.29, so [`Real`] makes those four syscalls with `libc::syscall`.

use std::ffi::{CString, OsStr, OsString};
use std::fmt::Debug;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::sys::stat::{Mode, SFlag};

use crate::sys::{self, XattrTarget};

/// The calls a driver's decisions go through.
pub trait Syscalls: Debug + Send + Sync {
    /// `mknodat(dir, name, kind | perm, dev)`.
    fn mknod_at(&self, dir: BorrowedFd<'_>, name: &OsStr, kind: SFlag, perm: Mode, dev: libc::dev_t) -> io::Result<()>;

    /// Sets xattr `name` on the open directory or file `fd`.
    fn set_xattr_fd(&self, fd: BorrowedFd<'_>, name: &str, value: &[u8]) -> io::Result<()>;

    /// Mounts a filesystem as `spec` says at `target`.
    fn mount(&self, spec: &MountSpec, target: &Path) -> io::Result<()>;

    /// Unmounts `target`: not mounted is no error, and a busy mount is detached lazily
    /// rather than left behind.
    fn unmount(&self, target: &Path) -> io::Result<()>;
}

/// How a filesystem is mounted: its type, its options in order, and through which API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountSpec {
    /// The filesystem type, also the source name.
    pub fstype: String,
    /// `key=value` options in the order they are given; an empty value is a flag. The
    /// order can matter (each `lowerdir+` stacks one more lower).
    pub options: Vec<(String, String)>,
    pub readonly: bool,
    pub api: MountApi,
}

/// The mount API a [`MountSpec`] goes through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MountApi {
    /// `fsopen`, one `fsconfig` per option, `fsmount`, `move_mount`: no limit on the
    /// options' total length.
    Fsconfig,
    /// `mount(2)` with the options joined as one page of data. Relative paths in them
    /// resolve from `cwd`, when given: the working directory is shared by every thread,
    /// so the mount is then made in a forked child that changes directory and exits.
    Classic { cwd: Option<PathBuf> },
}

impl MountSpec {
    /// The options as `mount(2)` data: `k=v,flag,...`.
    pub fn data(&self) -> String {
        let parts: Vec<String> =
            self.options.iter().map(|(k, v)| if v.is_empty() { k.clone() } else { format!("{k}={v}") }).collect();
        parts.join(",")
    }
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

    fn mount(&self, spec: &MountSpec, target: &Path) -> io::Result<()> {
        match &spec.api {
            MountApi::Fsconfig => mount_fsconfig(spec, target),
            MountApi::Classic { cwd } => mount_classic(spec, cwd.as_deref(), target),
        }
    }

    fn unmount(&self, target: &Path) -> io::Result<()> {
        sys::unmount(target)
    }
}

fn cstr(p: &OsStr) -> io::Result<CString> {
    CString::new(p.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn check(rc: libc::c_long, what: &str) -> io::Result<libc::c_long> {
    if rc < 0 {
        let e = io::Error::last_os_error();
        return Err(crate::error::io_context(what, e));
    }
    Ok(rc)
}

const FSCONFIG_SET_FLAG: libc::c_uint = 0;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const MOUNT_ATTR_RDONLY: libc::c_uint = 1;

fn fsconfig(fd: RawFd, cmd: libc::c_uint, key: Option<&str>, value: Option<&OsStr>) -> io::Result<()> {
    let key = key.map(|k| CString::new(k).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))).transpose()?;
    let value = value.map(cstr).transpose()?;
    // SAFETY: valid fd and NUL-terminated strings (or null) for the call's duration.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fd,
            cmd,
            key.as_ref().map_or(std::ptr::null(), |k| k.as_ptr()),
            value.as_ref().map_or(std::ptr::null(), |v| v.as_ptr()),
            0,
        )
    };
    let what = format!(
        "fsconfig {}={}",
        key.as_ref().map(|k| k.to_string_lossy()).unwrap_or_default(),
        value.as_ref().map(|v| v.to_string_lossy()).unwrap_or_default()
    );
    check(rc, &what).map(|_| ())
}

fn mount_fsconfig(spec: &MountSpec, target: &Path) -> io::Result<()> {
    let name = cstr(OsStr::new(&spec.fstype))?;
    // SAFETY: a NUL-terminated name; FSOPEN_CLOEXEC.
    let fd = check(
        unsafe { libc::syscall(libc::SYS_fsopen, name.as_ptr(), libc::FSOPEN_CLOEXEC) },
        &format!("fsopen {}", spec.fstype),
    )?;
    // SAFETY: fsopen returned a new descriptor.
    let fs = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    let raw = fs.as_raw_fd();
    for (k, v) in &spec.options {
        if v.is_empty() {
            fsconfig(raw, FSCONFIG_SET_FLAG, Some(k), None)?;
        } else {
            fsconfig(raw, FSCONFIG_SET_STRING, Some(k), Some(OsStr::new(v)))?;
        }
    }
    fsconfig(raw, FSCONFIG_CMD_CREATE, None, None)?;
    let attrs = if spec.readonly { MOUNT_ATTR_RDONLY } else { 0 };
    // SAFETY: a configured fs context; FSMOUNT_CLOEXEC.
    let mfd = check(unsafe { libc::syscall(libc::SYS_fsmount, raw, libc::FSMOUNT_CLOEXEC, attrs) }, "fsmount")?;
    // SAFETY: fsmount returned a new descriptor.
    let mnt = unsafe { OwnedFd::from_raw_fd(mfd as RawFd) };
    let empty = CString::new("").expect("empty");
    let t = cstr(target.as_os_str())?;
    // SAFETY: a detached mount fd, an empty path with F_EMPTY_PATH, a valid target.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mnt.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    check(rc, &format!("move_mount to {}", target.display())).map(|_| ())
}

fn mount_classic(spec: &MountSpec, cwd: Option<&Path>, target: &Path) -> io::Result<()> {
    use nix::mount::MsFlags;
    let flags = if spec.readonly { MsFlags::MS_RDONLY } else { MsFlags::empty() };
    let fail = |e: io::Error| crate::error::io_context(format!("mount {} on {}", spec.fstype, target.display()), e);
    let Some(cwd) = cwd else {
        return nix::mount::mount(
            Some(spec.fstype.as_str()),
            target,
            Some(spec.fstype.as_str()),
            flags,
            Some(spec.data().as_str()),
        )
        .map_err(|e| fail(e.into()));
    };
    let cwd_c = cstr(cwd.as_os_str())?;
    let target_c = cstr(target.as_os_str())?;
    let data_c = CString::new(spec.data()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let fstype = cstr(OsStr::new(&spec.fstype))?;
    // SAFETY: the child makes only async-signal-safe syscalls on strings prepared
    // before the fork, then _exits.
    match unsafe { nix::unistd::fork() }.map_err(sys::errno)? {
        nix::unistd::ForkResult::Child => unsafe {
            if libc::chdir(cwd_c.as_ptr()) != 0 {
                libc::_exit(*libc::__errno_location());
            }
            let rc =
                libc::mount(fstype.as_ptr(), target_c.as_ptr(), fstype.as_ptr(), flags.bits(), data_c.as_ptr().cast());
            libc::_exit(if rc == 0 { 0 } else { *libc::__errno_location() });
        },
        nix::unistd::ForkResult::Parent { child } => match nix::sys::wait::waitpid(child, None) {
            Ok(nix::sys::wait::WaitStatus::Exited(_, 0)) => Ok(()),
            Ok(nix::sys::wait::WaitStatus::Exited(_, code)) => Err(fail(io::Error::from_raw_os_error(code))),
            other => Err(io::Error::other(format!("mount helper ended oddly: {other:?}"))),
        },
    }
}

/// One call a [`Recording`] saw. Directories are given by the path their descriptor
/// had.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    Mknod { dir: PathBuf, name: OsString, kind: SFlag, perm: u32, dev: libc::dev_t },
    SetXattr { path: PathBuf, name: String, value: Vec<u8> },
    Mount { spec: MountSpec, target: PathBuf },
    Unmount { target: PathBuf },
}

/// The double: records every call. A node it is asked to make becomes an empty regular
/// file of mode 0 (so that code looking afterwards finds something there, as it would);
/// an xattr, a mount and an unmount are only recorded.
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

    fn mount(&self, spec: &MountSpec, target: &Path) -> io::Result<()> {
        self.record(Call::Mount { spec: spec.clone(), target: target.to_path_buf() });
        Ok(())
    }

    fn unmount(&self, target: &Path) -> io::Result<()> {
        self.record(Call::Unmount { target: target.to_path_buf() });
        Ok(())
    }
}
