//! overlayfs's whiteout format, written by the tar engine's apply and read back by its
//! diff walk (one object for both, so the two cannot disagree).
//!
//! * A whiteout is a character device with device number 0/0 in the upper directory.
//! * An opaque directory carries the xattr `<prefix>opaque` = `y`, where the prefix is
//!   `trusted.overlay.` (the default; needs CAP_SYS_ADMIN) or `user.overlay.` (a mount
//!   with `userxattr`, as rootless users make).
//! * Every other `<prefix>*` xattr on an upper (origin, impure, redirect, metacopy, ...)
//!   is overlayfs's own bookkeeping, not content. `<prefix>overlay.*` is different: it
//!   is a user's own `<prefix>*` xattr that overlayfs stored escaped (Linux 6.7+), so it
//!   is content, and it is shown under the name the user gave it.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use nix::sys::stat::{FileStat, Mode, SFlag};

use driver_core::sys::{self, XattrTarget};
use strata_archive::WhiteoutFormat;

/// overlayfs's whiteouts: 0/0 character devices and the opaque xattr.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OverlayWhiteouts {
    /// `trusted.overlay.` or `user.overlay.`.
    pub xattr_prefix: &'static str,
}

impl OverlayWhiteouts {
    fn opaque_xattr(&self) -> String {
        format!("{}opaque", self.xattr_prefix)
    }
}

/// Whether `st` is an overlayfs whiteout (a 0/0 character device).
pub fn is_whiteout(st: &FileStat) -> bool {
    sys::file_type(st) == SFlag::S_IFCHR && st.st_rdev == 0
}

impl WhiteoutFormat for OverlayWhiteouts {
    fn name(&self) -> &'static str {
        "overlay"
    }

    fn records(&self) -> bool {
        true
    }

    fn write_whiteout(&self, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
        nix::sys::stat::mknodat(
            Some(dir.as_raw_fd()),
            name,
            SFlag::S_IFCHR,
            Mode::empty(),
            nix::sys::stat::makedev(0, 0),
        )
        .map_err(sys::errno)
    }

    fn write_opaque(&self, dir: BorrowedFd<'_>) -> io::Result<()> {
        sys::set_xattr(XattrTarget::Fd(dir.as_raw_fd()), &self.opaque_xattr(), b"y")
    }

    fn is_whiteout(&self, st: &FileStat) -> bool {
        is_whiteout(st)
    }

    fn is_opaque(&self, dir: BorrowedFd<'_>) -> io::Result<bool> {
        Ok(sys::get_xattr(XattrTarget::Fd(dir.as_raw_fd()), &self.opaque_xattr())?.is_some_and(|v| v == b"y"))
    }

    fn is_own_xattr(&self, name: &str) -> bool {
        name.strip_prefix(self.xattr_prefix).is_some_and(|rest| !rest.starts_with("overlay."))
    }

    fn user_xattr_name(&self, name: &str) -> String {
        match name.strip_prefix(self.xattr_prefix).and_then(|rest| rest.strip_prefix("overlay.")) {
            Some(rest) => format!("{}{rest}", self.xattr_prefix),
            None => name.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::{TRUSTED_PREFIX as TRUSTED, USER_PREFIX as USER};

    #[test]
    fn own_xattrs_and_escaped_user_names() {
        let f = OverlayWhiteouts { xattr_prefix: TRUSTED };
        assert!(f.is_own_xattr("trusted.overlay.opaque"));
        assert!(f.is_own_xattr("trusted.overlay.origin"));
        assert!(!f.is_own_xattr("trusted.overlay.overlay.mine"), "an escaped user xattr is content");
        assert!(!f.is_own_xattr("user.overlay.opaque"), "the other prefix is not this mount's");
        assert!(!f.is_own_xattr("security.capability"));
        assert_eq!(f.user_xattr_name("trusted.overlay.overlay.mine"), "trusted.overlay.mine");
        assert_eq!(f.user_xattr_name("user.x"), "user.x");
        let u = OverlayWhiteouts { xattr_prefix: USER };
        assert!(u.is_own_xattr("user.overlay.opaque") && !u.is_own_xattr("trusted.overlay.opaque"));
    }
}
