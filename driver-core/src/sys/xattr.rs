//! Extended attributes. nix 0.29 has no xattr API, so the calls go through libc here,
//! in one place: on an open file, or on a path not followed at its end (symlinks and
//! devices, which cannot be opened to write their xattrs).

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;

/// Where an xattr call acts: an open file, or a path that is not followed at the end.
#[derive(Clone, Copy)]
pub enum XattrTarget<'a> {
    Fd(RawFd),
    NoFollow(&'a CStr),
}

pub fn set_xattr(target: XattrTarget<'_>, name: &str, value: &[u8]) -> io::Result<()> {
    let name = cstr(OsStr::new(name))?;
    // SAFETY: valid C strings and a valid buffer for the duration of the call.
    let rc = unsafe {
        match target {
            XattrTarget::Fd(fd) => libc::fsetxattr(fd, name.as_ptr(), value.as_ptr().cast(), value.len(), 0),
            XattrTarget::NoFollow(p) => {
                libc::lsetxattr(p.as_ptr(), name.as_ptr(), value.as_ptr().cast(), value.len(), 0)
            }
        }
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub fn remove_xattr(target: XattrTarget<'_>, name: &str) -> io::Result<()> {
    let name = cstr(OsStr::new(name))?;
    // SAFETY: valid C strings.
    let rc = unsafe {
        match target {
            XattrTarget::Fd(fd) => libc::fremovexattr(fd, name.as_ptr()),
            XattrTarget::NoFollow(p) => libc::lremovexattr(p.as_ptr(), name.as_ptr()),
        }
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The value of one xattr; `Ok(None)` when it is not set (or xattrs are unsupported).
pub fn get_xattr(target: XattrTarget<'_>, name: &str) -> io::Result<Option<Vec<u8>>> {
    let name = cstr(OsStr::new(name))?;
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: buf is valid for buf.len() bytes.
        let rc = unsafe {
            match target {
                XattrTarget::Fd(fd) => libc::fgetxattr(fd, name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()),
                XattrTarget::NoFollow(p) => {
                    libc::lgetxattr(p.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
                }
            }
        };
        if rc >= 0 {
            buf.truncate(rc as usize);
            return Ok(Some(buf));
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ENODATA) | Some(libc::ENOTSUP) => return Ok(None),
            Some(libc::ERANGE) if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
            _ => return Err(err),
        }
    }
}

/// The names of all xattrs, sorted.
pub fn list_xattrs(target: XattrTarget<'_>) -> io::Result<Vec<String>> {
    let mut buf = vec![0u8; 1024];
    loop {
        // SAFETY: buf is valid for buf.len() bytes.
        let rc = unsafe {
            match target {
                XattrTarget::Fd(fd) => libc::flistxattr(fd, buf.as_mut_ptr().cast(), buf.len()),
                XattrTarget::NoFollow(p) => libc::llistxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()),
            }
        };
        if rc >= 0 {
            buf.truncate(rc as usize);
            break;
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ENOTSUP) => return Ok(Vec::new()),
            Some(libc::ERANGE) if buf.len() < 1 << 22 => buf.resize(buf.len() * 4, 0),
            _ => return Err(err),
        }
    }
    let mut names: Vec<String> =
        buf.split(|&b| b == 0).filter(|n| !n.is_empty()).map(|n| String::from_utf8_lossy(n).into_owned()).collect();
    names.sort();
    Ok(names)
}

/// All xattrs of a target as (name, value), sorted by name.
pub fn read_xattrs(target: XattrTarget<'_>) -> io::Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    for name in list_xattrs(target)? {
        if let Some(v) = get_xattr(target, &name)? {
            out.push((name, v));
        }
    }
    Ok(out)
}

/// Sets each of `xattrs`; an error names the xattr.
pub fn set_xattrs(target: XattrTarget<'_>, xattrs: &[(String, Vec<u8>)]) -> io::Result<()> {
    for (name, value) in xattrs {
        set_xattr(target, name, value).map_err(|e| crate::error::io_context(format!("cannot set xattr {name}"), e))?;
    }
    Ok(())
}

fn cstr(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}
