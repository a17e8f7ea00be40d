//! How much of a store's work survives a power cut, and what it costs: the `--sync`
//! mode of unpack, pull, commit and the bench, handed down as data (the store keeps
//! it, [`crate::store::Store::durability`]; the tar engine reads it from the staging
//! entry it writes into), never a global.
//!
//! | mode    | what is synced | the promise once the command exits 0 |
//! |---------|----------------|--------------------------------------|
//! | `none`  | nothing: the kernel writes back when it likes (containerd's and podman's default) | none: after a power cut an image may be gone, or listed with files that lost their data (0 bytes); `strata check` finds those |
//! | `chain` | one `syncfs` per chain of layers before their records, then the record directories (the default) | the image is intact after a power cut |
//! | `file`  | every file and directory the command writes, by `fsync(2)` as it is written, then the records; no `syncfs` | the same as `chain`, and the filesystem's other writers are not flushed with it |
//!
//! A power cut *during* a command may leave any subset of its work under every mode;
//! the store's recovery then lists only layers and images that are whole (see
//! [`crate::store`]).

use std::fs::File;
use std::io;
use std::path::Path;

/// The `--sync` mode. See the module documentation for each one's promise.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// No syncs at all.
    None,
    /// One `syncfs` per chain of layers, before their records are written.
    #[default]
    Chain,
    /// `fsync(2)` of each file and directory as it is written.
    File,
}

impl Durability {
    pub const ALL: [Durability; 3] = [Durability::None, Durability::Chain, Durability::File];

    pub fn name(self) -> &'static str {
        match self {
            Durability::None => "none",
            Durability::Chain => "chain",
            Durability::File => "file",
        }
    }

    /// As a byte, for a store that keeps it in an atomic.
    pub(crate) fn to_u8(self) -> u8 {
        self as u8
    }

    pub(crate) fn from_u8(v: u8) -> Durability {
        match v {
            0 => Durability::None,
            2 => Durability::File,
            _ => Durability::Chain,
        }
    }

    /// The sync of a whole chain's content before its records: `syncfs` under `chain`
    /// only (under `file` every file was synced as written).
    pub fn sync_fs(self, dir: &Path) -> io::Result<()> {
        match self {
            Durability::Chain => crate::sys::syncfs(dir),
            Durability::None | Durability::File => Ok(()),
        }
    }

    /// A file's data, as it is written: under `file` only.
    pub fn sync_written(self, file: &File) -> io::Result<()> {
        match self {
            Durability::File => file.sync_all(),
            Durability::None | Durability::Chain => Ok(()),
        }
    }

    /// A directory the command changed, as it is written: under `file` only.
    pub fn sync_written_dir(self, dir: &Path) -> io::Result<()> {
        match self {
            Durability::File => File::open(dir)?.sync_all(),
            Durability::None | Durability::Chain => Ok(()),
        }
    }

    /// A record (or a directory of records) that says the work is done: under `chain`
    /// and `file`; under `none` nothing is synced.
    pub fn sync_record(self, file: &File) -> io::Result<()> {
        match self {
            Durability::None => Ok(()),
            Durability::Chain | Durability::File => file.sync_all(),
        }
    }

    /// [`Durability::sync_record`] of a directory.
    pub fn sync_record_dir(self, dir: &Path) -> io::Result<()> {
        match self {
            Durability::None => Ok(()),
            Durability::Chain | Durability::File => File::open(dir)?.sync_all(),
        }
    }
}

impl std::fmt::Display for Durability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// `fsync(2)` of every regular file and directory under `root` (symlinks, devices and
/// fifos live in their directory's entries and inodes, which the directory's fsync
/// covers on ext4, xfs and btrfs), files in parallel, each directory after its
/// entries: what `--sync file` does to a tree a driver made without the tar engine
/// (vfs's copy of the parent layer, a new container layer's directories).
pub fn sync_tree(root: &Path) -> io::Result<()> {
    use rayon::prelude::*;
    let mut files = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    let mut i = 0;
    while i < dirs.len() {
        for entry in std::fs::read_dir(&dirs[i])? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                dirs.push(entry.path());
            } else if kind.is_file() {
                files.push(entry.path());
            }
        }
        i += 1;
    }
    files.par_iter().try_for_each(|f| File::open(f)?.sync_all())?;
    // Deepest first: a directory's fsync after those of the directories in it.
    dirs.iter().rev().try_for_each(|d| File::open(d)?.sync_all())
}
