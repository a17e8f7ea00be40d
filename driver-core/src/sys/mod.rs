//! Thin wrappers over the syscalls the tar engine, the diff and the drivers use, so that
//! the logic above them reads as what it does, one small module a concern:
//!
//! - [`resolve`]: opens confined to a layer root (`openat2` with `RESOLVE_IN_ROOT |
//!   RESOLVE_NO_SYMLINKS`, never string checks), relative to a directory descriptor;
//! - [`tree`]: listing and removing whole directories through a descriptor;
//! - [`xattr`]: extended attributes (through libc: nix 0.29 has no xattr API);
//! - [`metadata`]: owner, mode, xattrs and times of a node, in the order that keeps each;
//! - [`sync`]: `syncfs` and which writes it made durable;
//! - [`mount`]: a read-only bind, the one unmount, the mount table;
//! - [`space`]: blocks and shared extents a tree or a file holds.
//!
//! Everything is re-exported here, so callers name `sys::open_in`, `sys::unmount`, ….

use std::io;
use std::path::Path;

use nix::errno::Errno;

pub mod metadata;
pub mod mount;
pub mod resolve;
pub mod space;
pub mod sync;
pub mod tree;
pub mod xattr;

pub use metadata::{set_metadata, umask, Creator, Made, Node, NodeMeta};
pub use mount::{bind_readonly, fs_type, is_mount_point, mount_points, mounts, mounts_under, unmount, MountEntry};
pub use resolve::{
    confined, file_type, fstat, is_dir, lstat_at, open_at, open_dir, open_dir_in, open_dir_long, open_in, proc_path,
    AsFdBorrowed,
};
pub use space::{disk_usage, extent_bytes, ExtentBytes};
pub use sync::{synced_since, syncfs, write_mark};
pub use tree::{clear_dir, read_dir_names, remove_all_at};
pub use xattr::{get_xattr, list_xattrs, read_xattrs, remove_xattr, set_xattr, set_xattrs, XattrTarget};

/// A nix errno as the `io::Error` it is (the errno kept, not a string).
pub fn errno(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// Whether process `pid` still exists (a record or a scratch it owns is still in use).
/// A reused pid keeps a leftover a little longer; it never makes one look abandoned.
pub fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}
