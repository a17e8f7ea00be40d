//! A path looked up through a chain's diff directories the way overlayfs looks it up
//! in a view of them, without mounting one: top layer first, a whiteout hides what is
//! below it, an opaque directory hides the same directory below, a non-directory
//! below a directory is hidden by it. An applied layer's implicit directories take
//! their metadata from what this finds (issue 14: a temporary view mounted per applied
//! layer cost two mounts and, on a fresh store, the kernel probe; issue 17).
//!
//! Only for chains whose diffs hold neither redirects nor metacopy stubs (layers made
//! from tars, containers that copied up in full): those two need overlayfs itself.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use nix::fcntl::OFlag;
use nix::sys::stat::SFlag;

use driver_core::sys;
use strata_archive::WhiteoutFormat;

use crate::whiteout::{is_whiteout, OverlayWhiteouts};

/// What a lookup found in the merged lowers.
#[derive(Debug)]
pub(crate) enum Found {
    /// Nothing there (or hidden by a whiteout).
    Missing,
    /// A directory: the topmost one, whose metadata the view shows.
    Dir(OwnedFd),
    /// `at`, a prefix of the path, is not a directory (`symlink`: it is a link).
    NotDir { at: PathBuf, symlink: bool },
}

/// The diff directories of a chain, top first.
pub(crate) struct LowerDirs {
    pub roots: Vec<OwnedFd>,
    pub whiteouts: Arc<OverlayWhiteouts>,
}

impl LowerDirs {
    pub fn lookup(&self, rel: &Path) -> io::Result<Found> {
        // The root: every layer down to the first whose root is opaque.
        let mut layers = Vec::new();
        for root in &self.roots {
            layers.push(root.try_clone()?);
            if self.whiteouts.is_opaque(root.as_fd())? {
                break;
            }
        }
        let mut at = PathBuf::new();
        for c in rel.components() {
            let Component::Normal(name) = c else {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("not a plain relative path: {rel:?}")));
            };
            at.push(name);
            let mut below = Vec::new();
            for dir in &layers {
                let Some(st) = sys::lstat_at(dir.as_fd(), name)? else { continue };
                if is_whiteout(&st) {
                    break;
                }
                if !sys::is_dir(&st) {
                    if below.is_empty() {
                        return Ok(Found::NotDir { at, symlink: sys::file_type(&st) == SFlag::S_IFLNK });
                    }
                    break; // hidden by the directory above it
                }
                let sub = sys::open_at(dir.as_fd(), name, OFlag::O_DIRECTORY | OFlag::O_RDONLY, 0)?;
                let opaque = self.whiteouts.is_opaque(sub.as_fd())?;
                below.push(sub);
                if opaque {
                    break;
                }
            }
            if below.is_empty() {
                return Ok(Found::Missing);
            }
            layers = below;
        }
        Ok(Found::Dir(layers.swap_remove(0)))
    }
}
