//! Implicit directories: those an applied tar did not describe take, at commit, the
//! metadata they have in the lower layers, looked up as overlayfs would.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use driver_core::error::{Cause, Error, Result};
use driver_core::store::Staging;
use driver_core::sys::{self, XattrTarget};

use crate::features::CopyUp;
use crate::lower::{Found, LowerDirs};
use crate::options::TempView;
use crate::record::OverlayRecord;
use crate::whiteout::is_whiteout;
use crate::Overlay;

impl Overlay {
    /// Gives the directories the tar did not describe the metadata they have in the
    /// lower layers (the root always: every layer's diff root shows through as the
    /// view's root), refuses a path that is a non-directory below, and drops implicit
    /// directories that hold only whiteouts of things no lower layer has. Everything
    /// goes by descriptor from the two roots: the absolute path of a legal entry can be
    /// longer than PATH_MAX (ENAMETOOLONG by path).
    pub(crate) fn fix_implicit_dirs(&self, staging: &Staging, implicit_dirs: &[PathBuf]) -> Result<()> {
        let id = &staging.id;
        let diff = staging.path.join("diff");
        let diff_fd = sys::open_dir(&diff).map_err(|e| Error::at(id, &diff, e))?;
        let root_implicit = implicit_dirs.iter().any(|p| p.as_os_str().is_empty());
        if let (Some(parent), true) = (&staging.parent, root_implicit) {
            let from = sys::open_dir(&self.diff_dir(parent)).map_err(|e| Error::at(id, "", e))?;
            copy_dir_meta(from.as_fd(), diff_fd.as_fd()).map_err(|e| Error::at(id, "", e))?;
        }
        let others: Vec<&PathBuf> = implicit_dirs.iter().filter(|p| !p.as_os_str().is_empty()).collect();
        if others.is_empty() {
            return Ok(());
        }
        let lowers = match &staging.parent {
            Some(p) => Some(self.lowers_of(p)?),
            None => None,
        };
        // Deepest first, so that a parent emptied of whiteout-only children goes too.
        let mut others = others;
        others.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for rel in others {
            let upper = sys::open_dir_in(diff_fd.as_fd(), rel).map_err(|e| Error::at(id, rel, e))?;
            let found = match &lowers {
                Some(l) => l.lookup(rel).map_err(|e| Error::at(id, rel, e))?,
                None => Found::Missing,
            };
            match found {
                Found::Dir(from) => copy_dir_meta(from.as_fd(), upper.as_fd()).map_err(|e| Error::at(id, rel, e))?,
                Found::NotDir { at, symlink } => return Err(not_a_dir(id, &at, symlink)),
                Found::Missing => {
                    if only_whiteouts(upper.as_fd()).map_err(|e| Error::at(id, rel, e))? {
                        drop(upper);
                        let parent = rel.parent().unwrap_or(Path::new(""));
                        let pfd = sys::open_dir_in(diff_fd.as_fd(), parent).map_err(|e| Error::at(id, rel, e))?;
                        sys::remove_all_at(pfd.as_fd(), rel.file_name().unwrap_or_default())
                            .map_err(|e| Error::at(id, rel, e))?;
                    }
                }
            }
        }
        Ok(())
    }

    /// What implicit directories are looked up in: the diff directories of `parent`'s
    /// chain, read as overlayfs reads them, where no layer of it holds redirects or
    /// metacopy stubs (a layer made from a tar never does: their xattrs are refused);
    /// else a private view of the chain, mounted, so that overlayfs follows them.
    fn lowers_of(&self, parent: &str) -> Result<Lowers> {
        let chain = self.chain(parent)?;
        let mut follows = false;
        for m in &chain {
            follows |= OverlayRecord::of(m)?.copy_up.is_some_and(|c| c > CopyUp::Full);
        }
        if follows {
            let view = self.temp_view(parent)?;
            let fd = sys::open_dir(&view.path).map_err(|e| Error::at(parent, &view.path, e))?;
            return Ok(Lowers::View(view, fd));
        }
        let roots = chain
            .iter()
            .map(|m| {
                let diff = self.diff_dir(&m.id);
                sys::open_dir(&diff).map_err(|e| Error::at(&m.id, &diff, e))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Lowers::Dirs(LowerDirs { roots, whiteouts: self.whiteouts() }))
    }
}

/// Where an applied layer's implicit directories are looked up (see
/// [`Overlay::lowers_of`]).
enum Lowers {
    Dirs(LowerDirs),
    /// A mounted view of the chain, and its root.
    View(TempView, OwnedFd),
}

impl Lowers {
    fn lookup(&self, rel: &Path) -> std::io::Result<Found> {
        let (_, view) = match self {
            Lowers::Dirs(dirs) => return dirs.lookup(rel),
            Lowers::View(v, fd) => (v, fd.as_fd()),
        };
        let at = match sys::open_in(view, rel, nix::fcntl::OFlag::O_PATH) {
            Ok(fd) if sys::is_dir(&sys::fstat(fd.as_fd())?) => return Ok(Found::Dir(sys::open_dir_in(view, rel)?)),
            Ok(_) => rel,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(Found::Missing),
            // A symlink (or a file) on the way: found below by its type.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENOTDIR)) => rel,
            Err(e) => return Err(e),
        };
        // The first component that is not a directory, and whether it is a link.
        let mut prefix = PathBuf::new();
        for c in at.iter() {
            prefix.push(c);
            match sys::open_in(view, &prefix, nix::fcntl::OFlag::O_PATH).and_then(|fd| sys::fstat(fd.as_fd())) {
                Ok(st) if sys::is_dir(&st) => continue,
                Ok(st) => {
                    return Ok(Found::NotDir {
                        at: prefix,
                        symlink: sys::file_type(&st) == nix::sys::stat::SFlag::S_IFLNK,
                    })
                }
                Err(_) => break,
            }
        }
        Ok(Found::NotDir { at: prefix, symlink: false })
    }
}

/// The error for an implicit directory whose lower `at` (a prefix of it) is not a
/// directory.
fn not_a_dir(id: &str, at: &Path, symlink: bool) -> Error {
    if symlink {
        let why = "the path goes through a symbolic link; a layer may not write through a link";
        return Error::at(id, at, Cause::Refused(why.into()));
    }
    Error::at(id, at, Cause::BadTar("a parent of the entry is not a directory".into()))
}

/// Copies owner, mode, xattrs (not overlay's own) and times of directory `from` to `to`.
pub(crate) fn copy_dir_meta(from: BorrowedFd<'_>, to: BorrowedFd<'_>) -> std::io::Result<()> {
    let mut xattrs = sys::read_xattrs(XattrTarget::Fd(from.as_raw_fd()))?;
    let own = crate::whiteout::reserved_xattrs();
    xattrs.retain(|(name, _)| !own.contains(name));
    let meta = sys::NodeMeta::from_stat(&sys::fstat(from)?, xattrs);
    sys::set_metadata(sys::Node::Open(to), &meta, sys::Made::default())
}

/// Whether a directory holds nothing but whiteout devices (and such directories).
fn only_whiteouts(dir: BorrowedFd<'_>) -> std::io::Result<bool> {
    for name in sys::read_dir_names(dir)? {
        let Some(st) = sys::lstat_at(dir, &name)? else { continue };
        if sys::is_dir(&st) {
            let sub = sys::open_at(dir, &name, nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_RDONLY, 0)?;
            if !only_whiteouts(sub.as_fd())? {
                return Ok(false);
            }
        } else if !is_whiteout(&st) {
            return Ok(false);
        }
    }
    Ok(true)
}
