//! Whiteouts and opaque directories: what hides the lower layers' content.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use nix::fcntl::OFlag;
use nix::sys::time::TimeSpec;

use driver_core::error::{Cause, Error, Result};
use driver_core::sys;

use super::applier::Applier;
use super::names::{join, show};

impl Applier<'_> {
    pub(super) fn set_opaque(&self, fd: BorrowedFd<'_>) -> Result<()> {
        let format = &self.opts.whiteouts;
        if format.records() {
            format.write_opaque(fd).map_err(|e| Error::new(Cause::Opaque { format: format.name(), source: e }))?;
        }
        Ok(())
    }

    /// `.wh.NAME` in `parent`: hide NAME of the lower layers.
    pub(super) fn whiteout(&mut self, parent: &[u8], name: &[u8], mtime: TimeSpec) -> Result<()> {
        let target = join(parent, name);
        if self.extracted.contains(&target) || self.ancestors.contains(&target) {
            // This tar made the path (or things inside it): only what lies below it in
            // the lower layers is hidden, which for a directory means it is opaque.
            if let Ok(fd) = sys::open_dir_in(self.root(), &show(&target)) {
                return self.make_opaque(&target, fd);
            }
            return Ok(());
        }
        let name = OsStr::from_bytes(name);
        if self.opts.whiteouts.records() {
            let pfd = self.dir(parent, mtime)?;
            if sys::lstat_at(pfd.as_fd(), name)?.is_none() {
                self.touch(parent, pfd.as_fd())?;
                self.opts.whiteouts.write_whiteout(pfd.as_fd(), name)?;
                self.record_named(pfd.as_fd(), name, &target, None)?;
            }
            return Ok(());
        }
        let pfd = match sys::open_dir_in(self.root(), &show(parent)) {
            Ok(fd) => fd,
            // Nothing below to hide.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
            // Through a link, or under a file: refused, as where whiteouts are recorded.
            Err(e) => return Err(self.resolve_error(parent, e)),
        };
        if sys::lstat_at(pfd.as_fd(), name)?.is_some() {
            self.touch(parent, pfd.as_fd())?;
            sys::remove_all_at(pfd.as_fd(), name)?;
            self.record_gone(&target);
        }
        Ok(())
    }

    /// `.wh..wh..opq` in `dir`: hide all lower content of `dir`.
    pub(super) fn opaque(&mut self, dir: &[u8], mtime: TimeSpec) -> Result<()> {
        let fd = self.dir(dir, mtime)?;
        self.make_opaque(dir, fd)
    }

    fn make_opaque(&mut self, dir: &[u8], fd: OwnedFd) -> Result<()> {
        if self.opts.whiteouts.records() {
            self.set_opaque(fd.as_fd())
        } else {
            self.prune(dir, fd)
        }
    }

    /// Deletes everything under `dir` that this tar did not make.
    fn prune(&mut self, dir: &[u8], fd: OwnedFd) -> Result<()> {
        let mut names = sys::read_dir_names(fd.as_fd())?;
        names.sort();
        for name in names {
            let child = join(dir, name.as_bytes());
            if self.extracted.contains(&child) || self.ancestors.contains(&child) {
                if let Ok(sub) = sys::open_at(fd.as_fd(), &name, OFlag::O_DIRECTORY | OFlag::O_RDONLY, 0) {
                    self.prune(&child, sub)?;
                }
            } else {
                self.touch(dir, fd.as_fd())?;
                sys::remove_all_at(fd.as_fd(), &name)?;
                self.record_gone(&child);
            }
        }
        Ok(())
    }
}
