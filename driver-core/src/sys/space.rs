//! Disk space a tree or a file holds: allocated blocks, and data extents shared with
//! other files or snapshots.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;

use super::errno;

/// Bytes (allocated blocks) and inodes held by the tree at `root`; a file with several
/// names counts once. Extents shared with other trees (reflinks) count in full.
pub fn disk_usage(root: &Path) -> io::Result<crate::driver::Usage> {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    let mut usage = crate::driver::Usage::default();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let md = std::fs::symlink_metadata(&p)?;
        if md.nlink() > 1 && !md.is_dir() && !seen.insert((md.dev(), md.ino())) {
            continue;
        }
        usage.bytes += md.blocks() * 512;
        usage.inodes += 1;
        if md.is_dir() {
            for e in std::fs::read_dir(&p)? {
                stack.push(e?.path());
            }
        }
    }
    Ok(usage)
}

/// Bytes of a file's data extents: all of them, and those the filesystem marks shared
/// with another file or snapshot (`FIEMAP_EXTENT_SHARED`, set by copy-on-write
/// filesystems for snapshots and reflinks; never by ext4 or tmpfs, where `shared` is 0).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExtentBytes {
    pub total: u64,
    pub shared: u64,
}

/// The [`ExtentBytes`] of the open regular file `fd`, from the `FS_IOC_FIEMAP` ioctl.
pub fn extent_bytes(fd: BorrowedFd<'_>) -> io::Result<ExtentBytes> {
    #[repr(C)]
    struct Fiemap {
        start: u64,
        length: u64,
        flags: u32,
        mapped: u32,
        count: u32,
        reserved: u32,
        extents: [[u64; 7]; 64],
    }
    // FS_IOC_FIEMAP = _IOWR('f', 11, struct fiemap) with the 32-byte header.
    nix::ioctl_readwrite_bad!(fiemap, nix::request_code_readwrite!(b'f', 11, 32), Fiemap);
    const SHARED: u32 = 0x2000;
    const LAST: u32 = 0x1;
    let mut out = ExtentBytes::default();
    let mut start = 0u64;
    loop {
        // SAFETY: Fiemap is plain data; zero is a valid value.
        let mut m: Box<Fiemap> = Box::new(unsafe { std::mem::zeroed() });
        m.start = start;
        m.length = u64::MAX;
        m.count = 64;
        // SAFETY: a valid fd and a buffer for 64 extents.
        unsafe { fiemap(fd.as_raw_fd(), &mut *m) }.map_err(errno)?;
        if m.mapped == 0 {
            return Ok(out);
        }
        let mut last = false;
        for e in &m.extents[..m.mapped as usize] {
            // fiemap_extent: logical, physical, length, reserved[2], flags:u32 + reserved[3]:u32
            let (logical, length, flags) = (e[0], e[2], (e[5] & 0xffff_ffff) as u32);
            out.total += length;
            if flags & SHARED != 0 {
                out.shared += length;
            }
            start = logical + length;
            last |= flags & LAST != 0;
        }
        if last {
            return Ok(out);
        }
    }
}
