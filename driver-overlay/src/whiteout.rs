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
use std::sync::Arc;

use nix::sys::stat::{FileStat, Mode, SFlag};

use driver_core::sys::{self, XattrTarget};
use driver_core::syscall::{Real, Syscalls};
use driver_core::ReservedXattrs;
use strata_archive::WhiteoutFormat;

use crate::features::{TRUSTED_PREFIX, USER_PREFIX};

/// overlayfs's whiteouts: 0/0 character devices and the opaque xattr.
#[derive(Clone, Debug)]
pub struct OverlayWhiteouts {
    /// `trusted.overlay.` or `user.overlay.`.
    pub xattr_prefix: &'static str,
    /// Where the device and the xattr are made ([`Real`] but in unit tests).
    pub sys: Arc<dyn Syscalls>,
}

impl OverlayWhiteouts {
    /// The format with the xattr prefix `trusted.overlay.` or `user.overlay.`.
    pub fn new(xattr_prefix: &'static str) -> Self {
        OverlayWhiteouts { xattr_prefix, sys: Arc::new(Real) }
    }

    fn opaque_xattr(&self) -> String {
        format!("{}opaque", self.xattr_prefix)
    }
}

/// The xattr namespaces overlayfs reads as its own, under either prefix: no layer may
/// carry them, on overlay or on any other driver (see `driver_core::reserved`), or a
/// layer taken on vfs would turn into whiteouts, redirects or metacopy stubs here.
pub fn reserved_xattrs() -> ReservedXattrs {
    ReservedXattrs::new([TRUSTED_PREFIX, USER_PREFIX])
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
        self.sys.mknod_at(dir, name, SFlag::S_IFCHR, Mode::empty(), nix::sys::stat::makedev(0, 0))
    }

    fn write_opaque(&self, dir: BorrowedFd<'_>) -> io::Result<()> {
        self.sys.set_xattr_fd(dir, &self.opaque_xattr(), b"y")
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
        let f = OverlayWhiteouts::new(TRUSTED);
        assert!(f.is_own_xattr("trusted.overlay.opaque"));
        assert!(f.is_own_xattr("trusted.overlay.origin"));
        assert!(!f.is_own_xattr("trusted.overlay.overlay.mine"), "an escaped user xattr is content");
        assert!(!f.is_own_xattr("user.overlay.opaque"), "the other prefix is not this mount's");
        assert!(!f.is_own_xattr("security.capability"));
        assert_eq!(f.user_xattr_name("trusted.overlay.overlay.mine"), "trusted.overlay.mine");
        assert_eq!(f.user_xattr_name("user.x"), "user.x");
        let u = OverlayWhiteouts::new(USER);
        assert!(u.is_own_xattr("user.overlay.opaque") && !u.is_own_xattr("trusted.overlay.opaque"));
    }
}

#[cfg(test)]
mod decisions {
    //! The apply engine's whiteout and confinement decisions on overlay, checked through
    //! the recording double: no device is made, no trusted xattr set, so neither
    //! CAP_MKNOD nor a filesystem with trusted xattrs is needed.
    use std::path::{Path, PathBuf};
    use std::sync::Arc;

    use driver_core::error::Cause;
    use driver_core::syscall::{Call, Recording};
    use nix::sys::stat::SFlag;
    use strata_archive::apply::{apply_layer, ApplyOptions};
    use strata_archive::tarbuild::TarBuilder;

    use super::*;
    use crate::features::{TRUSTED_PREFIX, USER_PREFIX};

    fn apply(prefix: &'static str, tar: &[u8]) -> (tempfile::TempDir, strata_archive::ApplyReport, Vec<Call>) {
        let tmp = tempfile::tempdir().unwrap();
        let rec = Arc::new(Recording::default());
        let format = OverlayWhiteouts { xattr_prefix: prefix, sys: rec.clone() };
        let opts = ApplyOptions::new("t").with_whiteouts(Arc::new(format));
        let report = apply_layer(tmp.path(), tar, &opts).unwrap();
        (tmp, report, rec.calls())
    }

    fn opaque(root: &Path, dir: &str, prefix: &str) -> Call {
        let path = if dir.is_empty() { root.to_path_buf() } else { root.join(dir) };
        Call::SetXattr { path, name: format!("{prefix}opaque"), value: b"y".to_vec() }
    }

    fn whiteout(root: &Path, dir: &str, name: &str) -> Call {
        let dir: PathBuf = if dir.is_empty() { root.to_path_buf() } else { root.join(dir) };
        Call::Mknod { dir, name: name.into(), kind: SFlag::S_IFCHR, perm: 0, dev: 0 }
    }

    #[test]
    fn whiteouts_become_devices_and_opaque_xattrs_only_where_the_lower_is_hidden() {
        let tar = TarBuilder::new()
            .dir("a")
            .file("a/mine", b"made by this tar")
            // Hides a lower name: a 0/0 device.
            .whiteout("gone")
            .whiteout("a/lower-only")
            // Names this tar made itself: nothing to hide below a file; a directory of
            // its own becomes opaque instead (only the lower content goes).
            .whiteout("a/mine")
            .dir("d")
            .whiteout("d")
            // An opaque marker in a directory the tar never described.
            .opaque("b")
            // A directory over a file this tar made: opaque, or the lower one would
            // show through it (moby/buildkit#2614).
            .file("c", b"x")
            .dir("c")
            .build();
        for prefix in [TRUSTED_PREFIX, USER_PREFIX] {
            let (tmp, report, calls) = apply(prefix, &tar);
            let root = tmp.path().canonicalize().unwrap();
            let want = vec![
                whiteout(&root, "", "gone"),
                whiteout(&root, "a", "lower-only"),
                opaque(&root, "d", prefix),
                opaque(&root, "b", prefix),
                opaque(&root, "c", prefix),
            ];
            assert_eq!(calls, want, "with {prefix}");
            assert!(tmp.path().join("a/mine").is_file(), "the tar's own file stays");
            assert!(report.implicit_dirs.contains(&PathBuf::from("b")));
        }
    }

    #[test]
    fn a_whiteout_through_a_link_is_refused_before_any_node_is_made() {
        for (what, tar) in [
            ("a symlink", TarBuilder::new().symlink("l", "/etc").whiteout("l/passwd").build()),
            ("a file", TarBuilder::new().file("f", b"x").whiteout("f/x").build()),
            ("a symlink", TarBuilder::new().symlink("l", "/etc").opaque("l").build()),
        ] {
            let tmp = tempfile::tempdir().unwrap();
            let rec = Arc::new(Recording::default());
            let format = OverlayWhiteouts { xattr_prefix: TRUSTED_PREFIX, sys: rec.clone() };
            let opts = ApplyOptions::new("t").with_whiteouts(Arc::new(format));
            let err = apply_layer(tmp.path(), &tar[..], &opts).expect_err(what);
            assert!(rec.calls().is_empty(), "no call through {what}: {:?}", rec.calls());
            // A link on the way is refused (Cause::Refused, whose reason is words: there is
            // no variant of its own); a file on the way makes the tar invalid.
            let link = what == "a symlink";
            match &err.cause {
                Cause::Refused(why) if link => assert!(why.contains("symbolic link"), "{what}: {err}"),
                Cause::BadTar(_) if !link => {}
                _ => panic!("{what}: {err}"),
            }
        }
    }
}
