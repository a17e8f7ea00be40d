//! The native diff of a layer whose writable view was mounted with `metacopy=on` and
//! `redirect_dir=on`.
//!
//! With those options the upper directory no longer holds what changed, only where:
//! a chmod'd lower file is an empty stub carrying `trusted.overlay.metacopy` (its data
//! stays in the lower that its `origin`/`redirect` xattr names), and a renamed lower
//! directory is an upper directory carrying `trusted.overlay.redirect` (absolute, or
//! relative to its parent) whose content is merged from the lower it points to, with a
//! whiteout left at the old name. Documentation/filesystems/overlayfs.rst ("Metadata
//! only copy up", "Redirect dir"). moby, containerd and containers/storage therefore
//! fall back to the naive diff of the whole view whenever either is on.
//!
//! Here the upper is still walked, but only to learn *which* paths can differ: every
//! name in it (stubs, whiteouts, copied-up directories) and, for a redirected
//! directory, everything below it in the layer's view (a rename moves a whole tree:
//! all of it is new at its new path). Which names a directory lost is read in every
//! upper directory. The entries themselves (metadata, data, link targets) are then
//! read from the layer's mounted view by the shared filtered walk, so the kernel
//! resolves metacopy data and nested redirects, and the diff is the naive walk's
//! over the same views. The cost follows the changes plus the size of the renamed
//! trees, which the diff has to carry anyway.
//!
//! Hardlinks: a changed name whose inode has several names in the view needs all of
//! them (or the applied tar would split the link), and the upper does not say where
//! the others are; the view is then searched once for them.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use driver_core::sys::{self, XattrTarget};
use nix::fcntl::OFlag;
use strata_archive::diff::{walk_tree, Visit};

use crate::whiteout::is_whiteout;

/// Whether the upper directory entry `name` in `dir` carries a redirect.
fn redirected(dir: BorrowedFd<'_>, name: &OsStr, xattr_prefix: &str) -> std::io::Result<bool> {
    let p = sys::proc_path(dir, name);
    Ok(sys::get_xattr(XattrTarget::NoFollow(&p), &format!("{xattr_prefix}redirect"))?.is_some())
}

/// The paths a layer's upper `upper` (with the layer's mounted view `view`) can have
/// changed, see the module documentation.
pub fn touched(upper: &Path, view: &Path, xattr_prefix: &str) -> std::io::Result<Visit> {
    let mut t = Visit::root();
    let ufd = sys::open_dir(upper)?;
    let vfd = sys::open_dir(view)?;
    upper_dir(&mut t, ufd.as_fd(), vfd.as_fd(), Path::new(""), xattr_prefix)?;
    links(&mut t, vfd.as_fd())?;
    Ok(t)
}

fn upper_dir(
    t: &mut Visit,
    dir: BorrowedFd<'_>,
    view: BorrowedFd<'_>,
    rel: &Path,
    prefix: &str,
) -> std::io::Result<()> {
    for name in sys::read_dir_names(dir)? {
        let child = rel.join(&name);
        let Some(st) = sys::lstat_at(dir, &name)? else { continue };
        t.path(&child);
        if !sys::is_dir(&st) || is_whiteout(&st) {
            continue;
        }
        t.dirs.insert(child.clone());
        if redirected(dir, &name, prefix)? {
            // The whole tree shows at its new path: every name below it in the view.
            let sub = sys::open_dir_in(view, &child)?;
            t.tree(sub.as_fd(), &child)?;
        } else {
            let sub = sys::open_at(dir, &name, OFlag::O_DIRECTORY | OFlag::O_RDONLY, 0)?;
            upper_dir(t, sub.as_fd(), view, &child, prefix)?;
        }
    }
    Ok(())
}

/// Adds every name in the view of the inodes that touched non-directories with
/// several names have there (one walk of the view, only when there are any).
fn links(t: &mut Visit, view: BorrowedFd<'_>) -> std::io::Result<()> {
    let mut want = BTreeSet::new();
    for p in &t.paths {
        let (Some(dir), Some(name)) = (p.parent(), p.file_name()) else { continue };
        let Ok(d) = sys::open_dir_in(view, dir) else { continue };
        if let Some(st) = sys::lstat_at(d.as_fd(), name)? {
            if !sys::is_dir(&st) && st.st_nlink > 1 {
                want.insert((st.st_dev, st.st_ino));
            }
        }
    }
    if want.is_empty() {
        return Ok(());
    }
    let mut found = Vec::new();
    walk_tree(view, Path::new(""), &mut |child, st| {
        if !sys::is_dir(st) && st.st_nlink > 1 && want.contains(&(st.st_dev, st.st_ino)) {
            found.push(child.to_path_buf());
        }
        Ok(())
    })?;
    for p in found {
        t.path(&p);
    }
    Ok(())
}
