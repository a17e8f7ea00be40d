//! The end of an apply: directories get their mode and times, and are synced under
//! `--sync file`.

use std::collections::{BTreeSet, HashSet};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::sys::stat::Mode;

use driver_core::error::{Error, Result};
use driver_core::sys;
use driver_core::Durability;

use super::applier::Applier;
use super::names::{show, split};

impl Applier<'_> {
    pub(super) fn finish(&mut self) -> Result<()> {
        // A directory made implicitly and described by a later entry is not implicit.
        let described = &self.described;
        self.report.implicit_dirs.retain(|p| !described.contains(p.as_os_str().as_bytes()));
        if !self.described.contains(&Vec::new()) {
            self.report.implicit_dirs.insert(0, PathBuf::new());
        }
        let layer = self.opts.layer.clone();
        // Deepest first, though utimensat on a child leaves its parent's times alone.
        let dir_meta = std::mem::take(&mut self.dir_meta);
        let mut gone = HashSet::new();
        for (path, meta) in dir_meta.iter().rev() {
            let fd = match sys::open_dir_in(self.root(), &show(path)) {
                Ok(fd) => fd,
                // Replaced by a later entry (so no longer an implicit directory either).
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR) | Some(libc::ELOOP)) => {
                    gone.insert(path.as_slice());
                    continue;
                }
                Err(e) => return Err(Error::at(&layer, show(path), e)),
            };
            nix::sys::stat::fchmod(fd.as_raw_fd(), Mode::from_bits_truncate(meta.mode))
                .map_err(|e| Error::at(&layer, show(path), e))?;
            nix::sys::stat::futimens(fd.as_raw_fd(), &meta.atime, &meta.mtime)
                .map_err(|e| Error::at(&layer, show(path), e))?;
            self.record_dir(path, fd.as_fd()).map_err(|e| e.in_layer(&layer).with_path(show(path)))?;
        }
        self.report.implicit_dirs.retain(|p| !gone.contains(p.as_os_str().as_bytes()));
        self.dir_meta = dir_meta;
        for (path, (atime, mtime)) in &self.touched {
            if self.dir_meta.contains_key(path) {
                continue;
            }
            if let Ok(fd) = sys::open_dir_in(self.root(), &show(path)) {
                nix::sys::stat::futimens(fd.as_raw_fd(), atime, mtime).map_err(|e| Error::at(&layer, show(path), e))?;
            }
        }
        if !self.dir_meta.contains_key(&Vec::new()) && self.report.tree.is_some() {
            let fd = sys::open_dir_in(self.root(), Path::new(""))?;
            self.record_dir(&[], fd.as_fd()).map_err(|e| e.in_layer(&layer))?;
        }
        if self.opts.durability == Durability::File {
            self.sync_dirs()?;
        }
        Ok(())
    }

    /// Under `--sync file`: fsyncs every directory whose entries or metadata this apply
    /// changed (made, given metadata, or holding a node it made or removed), deepest
    /// first; each file was synced as it was closed.
    fn sync_dirs(&self) -> Result<()> {
        let mut dirs: BTreeSet<&[u8]> = self.dir_meta.keys().map(Vec::as_slice).collect();
        dirs.extend(self.touched.keys().map(Vec::as_slice));
        dirs.extend(self.extracted.iter().map(|p| split(p).0));
        dirs.insert(&[][..]);
        for path in dirs.iter().rev() {
            let fd = match sys::open_dir_in(self.root(), &show(path)) {
                Ok(fd) => fd,
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR) | Some(libc::ELOOP)) => {
                    continue
                }
                Err(e) => return Err(Error::at(&self.opts.layer, show(path), e)),
            };
            // Through sys::fsync, so that the bench counts these like the files' own.
            sys::fsync(&std::fs::File::from(fd)).map_err(|e| Error::at(&self.opts.layer, show(path), e))?;
        }
        Ok(())
    }
}
