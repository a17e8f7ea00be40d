//! The layer's content record, made as the nodes are (see `driver_core::record`): each
//! node is described from the descriptor it was made through, so the record needs no
//! walk of the tree afterwards. Kept only when the apply saw the whole tree (the root
//! was empty before it: overlay's upper, a first layer); a tree holding a parent's
//! copy is walked instead.

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use driver_core::error::Result;
use driver_core::record::Node;
use driver_core::sys::{self, XattrTarget};

use super::applier::Applier;

impl Applier<'_> {
    /// A regular file made at `path`, written, with its metadata set.
    pub(super) fn record_file(&mut self, path: &[u8], file: &File, digest: &[u8; 32]) -> Result<()> {
        let Some(tree) = &mut self.report.tree else { return Ok(()) };
        let st = sys::fstat(file.as_fd())?;
        let xattrs = sys::read_xattrs(XattrTarget::Fd(file.as_raw_fd()))?;
        tree.made(path, Node::of(&st, path, xattrs, None, Some(digest)));
        Ok(())
    }

    /// A node that cannot be opened (a symlink, a device, a whiteout) made as `name` in
    /// `dir` at `path`; `target` is a symlink's.
    pub(super) fn record_named(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        path: &[u8],
        target: Option<&[u8]>,
    ) -> Result<()> {
        if self.report.tree.is_none() {
            return Ok(());
        }
        let node = match sys::lstat_at(dir, name)? {
            Some(st) => {
                let xattrs = sys::read_xattrs(XattrTarget::NoFollow(&sys::proc_path(dir, name)))?;
                Some(Node::of(&st, path, xattrs, target, None))
            }
            None => None,
        };
        match (node, &mut self.report.tree) {
            (Some(node), Some(tree)) => tree.made(path, node),
            // Gone as soon as made: leave the record to the walk.
            _ => self.report.tree = None,
        }
        Ok(())
    }

    /// A hardlink made at `path` to the node at `target`: the same node, by another name.
    pub(super) fn record_link(&mut self, path: &[u8], target: &[u8]) {
        // The name holds the target's content now, whatever file the tar wrote there
        // before (the walk takes the digests by path).
        match self.report.content.get(target).copied() {
            Some(digest) => self.report.content.insert(path.to_vec(), digest),
            None => self.report.content.remove(path),
        };
        let Some(tree) = &mut self.report.tree else { return };
        match tree.get(target).map(|n| n.named(path)) {
            Some(node) => tree.made(path, node),
            // Not a node this apply described: leave the record to the walk.
            None => self.report.tree = None,
        }
    }

    /// The node at `path`, and all below it, removed.
    pub(super) fn record_gone(&mut self, path: &[u8]) {
        if let Some(tree) = &mut self.report.tree {
            tree.remove(path);
        }
    }

    /// Directory `path`, open as `dir`, once it has its final metadata.
    pub(super) fn record_dir(&mut self, path: &[u8], dir: BorrowedFd<'_>) -> Result<()> {
        let Some(tree) = &mut self.report.tree else { return Ok(()) };
        let st = sys::fstat(dir)?;
        let xattrs = sys::read_xattrs(XattrTarget::Fd(dir.as_raw_fd()))?;
        tree.set(path, Node::of(&st, path, xattrs, None, None));
        Ok(())
    }
}
