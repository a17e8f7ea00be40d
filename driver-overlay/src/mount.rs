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
//! The calls themselves go through [`Syscalls`] (which options a view is mounted with
//! is then checked without root, with the recording double); the functions here are
//! [`Real`] shorthands for probing and tests.

use std::io;
use std::path::{Path, PathBuf};

use driver_core::syscall::{MountApi, MountSpec, Real, Syscalls};

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

impl OverlayMount {
    /// For the new mount API: one `lowerdir+` per layer (top first), then upper and
    /// work, then the extra options.
    pub fn fsconfig_spec(&self) -> MountSpec {
        let mut options: Vec<(String, String)> =
            self.lowers.iter().map(|l| ("lowerdir+".to_string(), l.to_string_lossy().into_owned())).collect();
        options.extend(self.upper_and_options());
        MountSpec { fstype: "overlay".into(), options, readonly: self.readonly, api: MountApi::Fsconfig }
    }

    /// For `mount(2)`: `lowerdir=a:b:...` (top first), upper and work, the extra
    /// options; relative paths resolve from `cwd` when given. Refused when the data is
    /// over the page `mount(2)` takes.
    pub fn classic_spec(&self, cwd: Option<&Path>) -> io::Result<MountSpec> {
        let spec = MountSpec {
            fstype: "overlay".into(),
            options: self.classic_options(),
            readonly: self.readonly,
            api: MountApi::Classic { cwd: cwd.map(Path::to_path_buf) },
        };
        let len = spec.data().len();
        if len > page_limit() {
            return Err(io::Error::other(format!(
                "the mount data for {} layers is {len} bytes, over the {}-byte page mount(2) accepts",
                self.lowers.len(),
                page_limit()
            )));
        }
        Ok(spec)
    }

    fn classic_options(&self) -> Vec<(String, String)> {
        let lowers: Vec<String> = self.lowers.iter().map(|l| l.to_string_lossy().into_owned()).collect();
        let mut options = vec![("lowerdir".to_string(), lowers.join(":"))];
        options.extend(self.upper_and_options());
        options
    }

    fn upper_and_options(&self) -> Vec<(String, String)> {
        let mut o = Vec::new();
        if let Some((u, w)) = &self.upper {
            o.push(("upperdir".to_string(), u.to_string_lossy().into_owned()));
            o.push(("workdir".to_string(), w.to_string_lossy().into_owned()));
        }
        o.extend(self.options.iter().cloned());
        o
    }
}

/// Mounts with the new mount API, one `lowerdir+` per layer.
pub fn mount_fsconfig(m: &OverlayMount, target: &Path) -> io::Result<()> {
    Real.mount(&m.fsconfig_spec(), target)
}

/// The classic mount data for `m`, with paths as given (relative ones resolve from
/// the directory the mount is made from).
pub fn mount_data(m: &OverlayMount) -> String {
    let options = m.classic_options();
    MountSpec { fstype: "overlay".into(), options, readonly: m.readonly, api: MountApi::Classic { cwd: None } }.data()
}

/// The most mount data `mount(2)` takes: one page, less the terminating NUL.
pub fn page_limit() -> usize {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    (if page > 0 { page as usize } else { 4096 }) - 1
}

/// Mounts with classic `mount(2)` data whose paths are relative to `cwd` (from a
/// forked child, see [`MountApi::Classic`]; moby re-execs itself for the same reason).
pub fn mount_classic_from(cwd: &Path, m: &OverlayMount, target: &Path) -> io::Result<()> {
    Real.mount(&m.classic_spec(Some(cwd))?, target)
}

/// Mounts with classic `mount(2)` and absolute paths (for probing).
pub fn mount_classic(m: &OverlayMount, target: &Path) -> io::Result<()> {
    Real.mount(&m.classic_spec(None)?, target)
}

/// Unmounts `target`; a busy mount is detached lazily rather than left behind.
pub fn unmount(target: &Path) -> io::Result<()> {
    Real.unmount(target)
}
