//! What more than one btrfs test binary needs.

use std::fs;
use std::path::{Path, PathBuf};

use driver_btrfs::is_subvolume;

/// Every subvolume below `root` (not `root` itself), found by walking its directories.
pub fn subvolumes_under(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                if is_subvolume(&e.path()) {
                    out.push(e.path());
                }
                stack.push(e.path());
            }
        }
    }
    out
}
