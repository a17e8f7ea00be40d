//! Making and removing overlay mounts.
//!
//! # Why two ways
//! The classic `mount(2)` takes all options in one page of data (4096 bytes on x86-64).
//! With absolute lower paths (`/var/lib/strata/overlay/layers/sha256:<64 hex>/diff`,
//! about 110 bytes each) that is ~35 layers. moby's overlay2 therefore keeps short
//! symlinks under `l/` and mounts with paths relative to its root (`l/ABCDEFGHIJ:…`,
//! 13 bytes a layer, ~300 layers) from a re-executed child that chdir'd there, and
//! still caps images at 128 layers. Since Linux 6.8 the new mount API takes each
//! lower separately (`fsconfig(fd, FSCONFIG_SET_STRING, "lowerdir+", path)`), so no
//! page limit applies at all; only overlayfs's own stack limit (500 layers,
//! `OVL_MAX_STACK`) remains. strata uses `lowerdir+` where the kernel has it and the
//! short links otherwise.
//!
//! Measured on this machine (Linux 6.18, 4 KiB pages) by the test `stack_limit`:
//! `lowerdir+` mounts 500 lowers (overlayfs's own limit); classic mount data with
//! 10-character links stops at 314 layers (the page is full).
//!
//! nix 0.29 has no wrapper for the new mount API, so its four syscalls are made with
//! `libc::syscall` in this one module.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// How to mount one overlay.
#[derive(Clone, Debug, Default)]
pub struct OverlayMount {
    /// Lower directories, top first.
    pub lowers: Vec<PathBuf>,
    /// Upper and work directories, for a writable mount.
    pub upper: Option<(PathBuf, PathBuf)>,
    /// Extra `key=value` options (index=off, ...).
    pub options: Vec<(String, String)>,
    pub readonly: bool,
}

fn cstr(p: &OsStr) -> io::Result<CString> {
    CString::new(p.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn check(rc: libc::c_long, what: &str) -> io::Result<libc::c_long> {
    if rc < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
    }
    Ok(rc)
}

const FSCONFIG_SET_FLAG: libc::c_uint = 0;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const MOUNT_ATTR_RDONLY: libc::c_uint = 1;

fn fsconfig(fd: RawFd, cmd: libc::c_uint, key: Option<&str>, value: Option<&OsStr>) -> io::Result<()> {
    let key = key.map(|k| CString::new(k).expect("key"));
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

/// Mounts with the new mount API, one `lowerdir+` per layer.
pub fn mount_fsconfig(m: &OverlayMount, target: &Path) -> io::Result<()> {
    let name = CString::new("overlay").expect("name");
    // SAFETY: a NUL-terminated name; FSOPEN_CLOEXEC.
    let fd = check(unsafe { libc::syscall(libc::SYS_fsopen, name.as_ptr(), libc::FSOPEN_CLOEXEC) }, "fsopen overlay")?;
    // SAFETY: fsopen returned a new descriptor.
    let fs = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    let raw = std::os::fd::AsRawFd::as_raw_fd(&fs);
    for l in &m.lowers {
        fsconfig(raw, FSCONFIG_SET_STRING, Some("lowerdir+"), Some(l.as_os_str()))?;
    }
    if let Some((upper, work)) = &m.upper {
        fsconfig(raw, FSCONFIG_SET_STRING, Some("upperdir"), Some(upper.as_os_str()))?;
        fsconfig(raw, FSCONFIG_SET_STRING, Some("workdir"), Some(work.as_os_str()))?;
    }
    for (k, v) in &m.options {
        if v.is_empty() {
            fsconfig(raw, FSCONFIG_SET_FLAG, Some(k), None)?;
        } else {
            fsconfig(raw, FSCONFIG_SET_STRING, Some(k), Some(OsStr::new(v)))?;
        }
    }
    fsconfig(raw, FSCONFIG_CMD_CREATE, None, None)?;
    let attrs = if m.readonly { MOUNT_ATTR_RDONLY } else { 0 };
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
            std::os::fd::AsRawFd::as_raw_fd(&mnt),
            empty.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    check(rc, &format!("move_mount to {}", target.display())).map(|_| ())
}

/// The classic mount data for `m`, with paths as given (relative ones resolve from
/// the directory the mount is made from).
pub fn mount_data(m: &OverlayMount) -> String {
    let lowers: Vec<String> = m.lowers.iter().map(|l| l.to_string_lossy().into_owned()).collect();
    let mut data = format!("lowerdir={}", lowers.join(":"));
    if let Some((u, w)) = &m.upper {
        data.push_str(&format!(",upperdir={},workdir={}", u.display(), w.display()));
    }
    for (k, v) in &m.options {
        if v.is_empty() {
            data.push_str(&format!(",{k}"));
        } else {
            data.push_str(&format!(",{k}={v}"));
        }
    }
    data
}

/// The most mount data `mount(2)` takes: one page, less the terminating NUL.
pub fn page_limit() -> usize {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    (if page > 0 { page as usize } else { 4096 }) - 1
}

/// Mounts with classic `mount(2)` data whose paths are relative to `cwd`. The kernel
/// resolves them from the calling process's working directory, which is shared by
/// every thread, so the mount is made in a forked child that changes directory and
/// exits (moby re-execs itself for the same reason).
pub fn mount_classic_from(cwd: &Path, m: &OverlayMount, target: &Path) -> io::Result<()> {
    let data = mount_data(m);
    if data.len() > page_limit() {
        return Err(io::Error::other(format!(
            "the mount data for {} layers is {} bytes, over the {}-byte page mount(2) accepts",
            m.lowers.len(),
            data.len(),
            page_limit()
        )));
    }
    let flags = if m.readonly { MsFlags::MS_RDONLY } else { MsFlags::empty() };
    let cwd_c = cstr(cwd.as_os_str())?;
    let target_c = cstr(target.as_os_str())?;
    let data_c = CString::new(data).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let fstype = CString::new("overlay").expect("fstype");
    // SAFETY: the child makes only async-signal-safe syscalls on strings prepared
    // before the fork, then _exits.
    match unsafe { nix::unistd::fork() }.map_err(|e| io::Error::from_raw_os_error(e as i32))? {
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
            Ok(nix::sys::wait::WaitStatus::Exited(_, code)) => {
                let e = io::Error::from_raw_os_error(code);
                Err(io::Error::new(e.kind(), format!("mount overlay on {}: {e}", target.display())))
            }
            other => Err(io::Error::other(format!("mount helper ended oddly: {other:?}"))),
        },
    }
}

/// Mounts with classic `mount(2)` and absolute paths (for probing).
pub fn mount_classic(m: &OverlayMount, target: &Path) -> io::Result<()> {
    let flags = if m.readonly { MsFlags::MS_RDONLY } else { MsFlags::empty() };
    mount(Some("overlay"), target, Some("overlay"), flags, Some(mount_data(m).as_str()))
        .map_err(|e| io::Error::new(io::Error::from(e).kind(), format!("mount overlay on {}: {e}", target.display())))
}

/// Unmounts `target`; a busy mount is detached lazily rather than left behind.
pub fn unmount(target: &Path) -> io::Result<()> {
    match umount2(target, MntFlags::empty()) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EINVAL) => Ok(()), // not mounted
        Err(nix::errno::Errno::EBUSY) => umount2(target, MntFlags::MNT_DETACH)
            .map_err(|e| io::Error::other(format!("unmount {}: {e}", target.display()))),
        Err(e) => Err(io::Error::other(format!("unmount {}: {e}", target.display()))),
    }
}
