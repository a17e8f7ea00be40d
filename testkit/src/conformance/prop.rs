//! The property test's generator: random bases and random change scripts, made the
//! way users and programs change files (writes in place, appends, mmap, truncate and
//! punch hole, chmod/chown/utime, xattrs, renames over names and swaps, hardlinks added,
//! removed, split and joined, trees deleted and made again, symlinks retargeted, type
//! changes, fifos, odd names, paths near PATH_MAX). A script is plain data, generated
//! against a model of the view, so the same script runs on every driver.
//!
//! What the generator leaves out, and why:
//! * changes that copy up one name of a hardlinked pair from the image (a write,
//!   chmod, rename or new link to it while another name is still there): overlayfs
//!   with `index=off` splits the pair there, vfs and btrfs keep it (pinned by the
//!   `write_to_lower_hardlink` case, not a diff bug);
//! * a same-size rewrite that restores the exact sub-second mtime (missed by design,
//!   see the README);
//! * renames of image directories that would cut a hardlink group in two (overlay
//!   gives EXDEV for them and the script copies, as `mv` does).

mod generator;
mod run;

pub use generator::generate;
pub use run::run_op;

use std::path::{Path, PathBuf};

/// One change, by relative path.
#[derive(Clone, Debug)]
pub enum Op {
    Write {
        path: PathBuf,
        off: u64,
        data: Vec<u8>,
    },
    Append {
        path: PathBuf,
        data: Vec<u8>,
    },
    Mmap {
        path: PathBuf,
        off: u64,
        data: Vec<u8>,
    },
    Truncate {
        path: PathBuf,
        len: u64,
    },
    PunchHole {
        path: PathBuf,
        off: u64,
        len: u64,
    },
    Chmod {
        path: PathBuf,
        mode: u32,
    },
    Chown {
        path: PathBuf,
        uid: u32,
        gid: u32,
    },
    Utime {
        path: PathBuf,
        secs: i64,
        nsecs: i64,
    },
    SetXattr {
        path: PathBuf,
        name: String,
        value: Vec<u8>,
    },
    RemoveXattr {
        path: PathBuf,
        name: String,
    },
    Rename {
        from: PathBuf,
        to: PathBuf,
    },
    Exchange {
        a: PathBuf,
        b: PathBuf,
    },
    Link {
        from: PathBuf,
        to: PathBuf,
    },
    Unlink {
        path: PathBuf,
    },
    RemoveTree {
        path: PathBuf,
    },
    Mkdir {
        path: PathBuf,
        mode: u32,
    },
    Create {
        path: PathBuf,
        data: Vec<u8>,
        mode: u32,
    },
    Symlink {
        path: PathBuf,
        target: String,
    },
    Mkfifo {
        path: PathBuf,
    },
    /// A nested btrfs subvolume where the view is on btrfs (`btrfs subvolume create`),
    /// a plain directory elsewhere: the views are the same.
    Subvolume {
        path: PathBuf,
    },
}

/// A generated case: the base layer, the script, and the path whose entry the diff must
/// refuse (a `.wh.` name or an overlay xattr), if the script makes one.
#[derive(Clone, Debug)]
pub struct Script {
    pub seed: u64,
    pub base: Vec<u8>,
    pub ops: Vec<Op>,
    pub refused: Option<PathBuf>,
}

/// A path with long components shortened (`p×200`), for messages.
pub fn short(p: &Path) -> String {
    let parts: Vec<String> = p
        .iter()
        .map(|c| {
            let c = c.to_string_lossy();
            match c.chars().next() {
                Some(first) if c.len() > 40 && c.chars().all(|x| x == first) => format!("{first}×{}", c.len()),
                _ => format!("{c:?}").trim_matches('"').to_string(),
            }
        })
        .collect();
    parts.join("/")
}

/// One line for an op, data by length.
pub fn describe(op: &Op) -> String {
    let d = describe_long(op);
    if d.len() < 300 {
        return d;
    }
    // Deep paths: the same line with long components shortened.
    match op {
        Op::Rename { from, to } => format!("Rename {} -> {}", short(from), short(to)),
        Op::Exchange { a, b } => format!("Exchange {} <-> {}", short(a), short(b)),
        Op::Link { from, to } => format!("Link {} -> {}", short(from), short(to)),
        _ => {
            let path = match op {
                Op::Write { path, .. }
                | Op::Append { path, .. }
                | Op::Mmap { path, .. }
                | Op::Truncate { path, .. }
                | Op::PunchHole { path, .. }
                | Op::Chmod { path, .. }
                | Op::Chown { path, .. }
                | Op::Utime { path, .. }
                | Op::SetXattr { path, .. }
                | Op::RemoveXattr { path, .. }
                | Op::Unlink { path }
                | Op::RemoveTree { path }
                | Op::Mkdir { path, .. }
                | Op::Create { path, .. }
                | Op::Symlink { path, .. }
                | Op::Mkfifo { path }
                | Op::Subvolume { path } => path,
                Op::Rename { .. } | Op::Exchange { .. } | Op::Link { .. } => unreachable!(),
            };
            format!("{} (path {})", d.split(['{', '"']).next().unwrap_or_default().trim(), short(path))
        }
    }
}

fn describe_long(op: &Op) -> String {
    match op {
        Op::Write { path, off, data } => format!("write {path:?} at {off}: {} bytes", data.len()),
        Op::Append { path, data } => format!("append {path:?}: {} bytes", data.len()),
        Op::Mmap { path, off, data } => format!("mmap-write {path:?} at {off}: {} bytes", data.len()),
        Op::Create { path, data, mode } => format!("create {path:?} mode {mode:o}: {} bytes", data.len()),
        Op::SetXattr { path, name, value } => format!("setxattr {path:?} {name}: {} bytes", value.len()),
        other => format!("{other:?}"),
    }
}
