//! The btrfs ioctls the driver uses, declared with nix's macros (layouts from
//! linux/btrfs.h), each behind a small safe function.

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;

const MAGIC: u8 = 0x94;
/// The inode number of every subvolume's root directory.
pub const SUBVOL_ROOT_INO: u64 = 256;
const SUBVOL_RDONLY: u64 = 1 << 1;
const PATH_NAME_MAX: usize = 4087;
const SUBVOL_NAME_MAX: usize = 4039;

#[repr(C)]
pub struct VolArgs {
    fd: i64,
    name: [u8; PATH_NAME_MAX + 1],
}

#[repr(C)]
pub struct VolArgsV2 {
    fd: i64,
    transid: u64,
    flags: u64,
    unused: [u64; 4],
    name: [u8; SUBVOL_NAME_MAX + 1],
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct SearchKey {
    tree_id: u64,
    min_objectid: u64,
    max_objectid: u64,
    min_offset: u64,
    max_offset: u64,
    min_transid: u64,
    max_transid: u64,
    min_type: u32,
    max_type: u32,
    nr_items: u32,
    unused: u32,
    unused1: u64,
    unused2: u64,
    unused3: u64,
    unused4: u64,
}

/// Bytes of items one search returns: more than a leaf holds (64 KiB at most), so any
/// single item fits (BTRFS_IOC_TREE_SEARCH's 4 KiB buffer cannot hold a full
/// INODE_REF item of a file with many names).
const SEARCH_BUF: usize = 128 << 10;

/// `btrfs_ioctl_search_args_v2`: the key, the buffer's size, then the buffer.
#[repr(C)]
pub struct SearchArgsV2 {
    key: SearchKey,
    buf_size: u64,
    buf: [u8; SEARCH_BUF],
}

#[repr(C)]
pub struct Timespec {
    sec: u64,
    nsec: u32,
}

#[repr(C)]
pub struct SubvolInfo {
    pub treeid: u64,
    name: [u8; 256],
    pub parent_id: u64,
    pub dirid: u64,
    pub generation: u64,
    pub flags: u64,
    uuid: [u8; 16],
    parent_uuid: [u8; 16],
    received_uuid: [u8; 16],
    pub ctransid: u64,
    pub otransid: u64,
    stransid: u64,
    rtransid: u64,
    ctime: Timespec,
    otime: Timespec,
    stime: Timespec,
    rtime: Timespec,
    reserved: [u64; 8],
}

nix::ioctl_write_ptr!(subvol_create, MAGIC, 14, VolArgs);
nix::ioctl_write_ptr!(snap_destroy, MAGIC, 15, VolArgs);
// The v2 argument ends in a flexible array: the ioctl number encodes only the header
// (key + buf_size = 112 bytes).
nix::ioctl_readwrite_bad!(
    tree_search_v2,
    nix::request_code_readwrite!(MAGIC, 17, std::mem::size_of::<SearchKey>() + 8),
    SearchArgsV2
);
nix::ioctl_write_ptr!(snap_create_v2, MAGIC, 23, VolArgsV2);
nix::ioctl_read!(subvol_getflags, MAGIC, 25, u64);
nix::ioctl_write_ptr!(subvol_setflags, MAGIC, 26, u64);
nix::ioctl_read!(get_subvol_info, MAGIC, 60, SubvolInfo);

/// The ioctl's name in front of its errno, which stays readable (`raw_os_error` through
/// [`driver_core::error::os_error`]).
fn os(e: nix::Error, what: &str) -> io::Error {
    driver_core::error::io_context(what, io::Error::from(e))
}

fn fill_name(dst: &mut [u8], name: &OsStr) -> io::Result<()> {
    let b = name.as_bytes();
    if b.len() >= dst.len() || b.contains(&b'/') {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("bad subvolume name {name:?}")));
    }
    dst[..b.len()].copy_from_slice(b);
    Ok(())
}

/// Makes an empty subvolume `name` in directory `parent`.
pub fn create_subvolume(parent: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    // SAFETY: VolArgs is plain data; zero is a valid value.
    let mut args: VolArgs = unsafe { std::mem::zeroed() };
    fill_name(&mut args.name, name)?;
    // SAFETY: a valid directory fd and an initialised argument.
    unsafe { subvol_create(parent.as_raw_fd(), &args) }.map_err(|e| os(e, "BTRFS_IOC_SUBVOL_CREATE"))?;
    Ok(())
}

/// Snapshots the subvolume `source` as `name` in directory `dest`.
pub fn snapshot(source: BorrowedFd<'_>, dest: BorrowedFd<'_>, name: &OsStr, readonly: bool) -> io::Result<()> {
    // SAFETY: VolArgsV2 is plain data; zero is a valid value.
    let mut args: VolArgsV2 = unsafe { std::mem::zeroed() };
    args.fd = source.as_raw_fd() as i64;
    args.flags = if readonly { SUBVOL_RDONLY } else { 0 };
    fill_name(&mut args.name, name)?;
    // SAFETY: valid fds and an initialised argument.
    unsafe { snap_create_v2(dest.as_raw_fd(), &args) }.map_err(|e| os(e, "BTRFS_IOC_SNAP_CREATE_V2"))?;
    Ok(())
}

/// Deletes the (empty of nested subvolumes) subvolume `name` in directory `parent`.
pub fn destroy_subvolume(parent: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    // SAFETY: VolArgs is plain data; zero is a valid value.
    let mut args: VolArgs = unsafe { std::mem::zeroed() };
    fill_name(&mut args.name, name)?;
    // SAFETY: a valid directory fd and an initialised argument.
    unsafe { snap_destroy(parent.as_raw_fd(), &args) }.map_err(|e| os(e, "BTRFS_IOC_SNAP_DESTROY"))?;
    Ok(())
}

pub fn is_readonly(subvol: BorrowedFd<'_>) -> io::Result<bool> {
    let mut flags = 0u64;
    // SAFETY: a valid fd and a u64 to write to.
    unsafe { subvol_getflags(subvol.as_raw_fd(), &mut flags) }.map_err(|e| os(e, "BTRFS_IOC_SUBVOL_GETFLAGS"))?;
    Ok(flags & SUBVOL_RDONLY != 0)
}

pub fn set_readonly(subvol: BorrowedFd<'_>, readonly: bool) -> io::Result<()> {
    let mut flags = 0u64;
    // SAFETY: as above.
    unsafe { subvol_getflags(subvol.as_raw_fd(), &mut flags) }.map_err(|e| os(e, "BTRFS_IOC_SUBVOL_GETFLAGS"))?;
    flags = if readonly { flags | SUBVOL_RDONLY } else { flags & !SUBVOL_RDONLY };
    // SAFETY: a valid fd and an initialised u64.
    unsafe { subvol_setflags(subvol.as_raw_fd(), &flags) }.map_err(|e| os(e, "BTRFS_IOC_SUBVOL_SETFLAGS"))?;
    Ok(())
}

/// Facts about the subvolume `fd` is in.
pub fn subvolume_info(fd: BorrowedFd<'_>) -> io::Result<SubvolInfo> {
    // SAFETY: SubvolInfo is plain data; zero is a valid value.
    let mut info: SubvolInfo = unsafe { std::mem::zeroed() };
    // SAFETY: a valid fd and a buffer of the right size.
    unsafe { get_subvol_info(fd.as_raw_fd(), &mut info) }.map_err(|e| os(e, "BTRFS_IOC_GET_SUBVOL_INFO"))?;
    Ok(info)
}

/// One item a tree search returned: its key and data.
pub struct Item<'a> {
    pub objectid: u64,
    pub kind: u32,
    pub offset: u64,
    pub data: &'a [u8],
}

/// Which items a search returns: keys from `min` to `max` (objectid, type, offset),
/// in tree `tree` (0: the subvolume of the fd), in blocks written at or after
/// transaction `min_transid`.
#[derive(Clone, Copy)]
pub struct Range {
    pub tree: u64,
    pub min: (u64, u32, u64),
    pub max: (u64, u32, u64),
    pub min_transid: u64,
}

/// Calls `each` on every item in `range`, in key order (`BTRFS_IOC_TREE_SEARCH_V2`).
pub fn search(fd: BorrowedFd<'_>, range: Range, mut each: impl FnMut(&Item<'_>)) -> io::Result<()> {
    // SAFETY: SearchArgsV2 is plain data; zero is a valid value.
    let mut args: Box<SearchArgsV2> = unsafe { Box::new_zeroed().assume_init() };
    let mut from = range.min;
    loop {
        args.key = SearchKey {
            tree_id: range.tree,
            min_objectid: from.0,
            max_objectid: range.max.0,
            min_type: from.1,
            max_type: range.max.1,
            min_offset: from.2,
            max_offset: range.max.2,
            min_transid: range.min_transid,
            max_transid: u64::MAX,
            nr_items: u32::MAX,
            ..Default::default()
        };
        args.buf_size = SEARCH_BUF as u64;
        // SAFETY: a valid fd and an initialised search argument whose buffer holds
        // `buf_size` bytes.
        unsafe { tree_search_v2(fd.as_raw_fd(), &mut *args) }.map_err(|e| os(e, "BTRFS_IOC_TREE_SEARCH_V2"))?;
        let n = args.key.nr_items;
        if n == 0 {
            return Ok(());
        }
        let mut pos = 0usize;
        let mut last = from;
        for _ in 0..n {
            let h = &args.buf[pos..pos + 32];
            let rd64 = |o: usize| u64::from_le_bytes(h[o..o + 8].try_into().expect("8 bytes"));
            let rd32 = |o: usize| u32::from_le_bytes(h[o..o + 4].try_into().expect("4 bytes"));
            let len = rd32(28) as usize;
            let item =
                Item { objectid: rd64(8), kind: rd32(24), offset: rd64(16), data: &args.buf[pos + 32..pos + 32 + len] };
            each(&item);
            last = (item.objectid, item.kind, item.offset);
            pos += 32 + len;
        }
        // Go on after the last key returned.
        from = match last.2.checked_add(1) {
            Some(o) => (last.0, last.1, o),
            None => match last.1.checked_add(1).filter(|&t| t <= 255) {
                Some(t) => (last.0, t, 0),
                None => match last.0.checked_add(1) {
                    Some(obj) => (obj, 0, 0),
                    None => return Ok(()),
                },
            },
        };
        if from > range.max {
            return Ok(());
        }
    }
}

const INODE_ITEM: u32 = 1;
const INODE_REF: u32 = 12;
const INODE_EXTREF: u32 = 13;
const XATTR_ITEM: u32 = 24;
const DIR_ITEM: u32 = 84;
const DIR_INDEX: u32 = 96;
const EXTENT_DATA: u32 = 108;
const ROOT_REF: u32 = 156;
const ROOT_TREE: u64 = 1;

/// Inode numbers with items in tree blocks written at or after transaction
/// `min_transid`, in the subvolume `fd` is in — what `btrfs subvolume find-new` asks.
/// Write back and commit first (`syncfs`), or recent changes are missed.
///
/// A snapshot shares its parent's tree blocks; the first change to anything in a
/// block copies it with the current transaction's generation. So searching with
/// `min_transid` = the snapshot's creation transaction visits only the blocks the
/// layer changed (the search skips whole subtrees older than that), and returns every
/// inode in them: all that changed, plus neighbours that share a block with a change,
/// which the diff then compares and drops. Deleted inodes leave no items; their
/// directories' items changed, so the diff finds the deletion by listing those.
pub fn changed_inodes(fd: BorrowedFd<'_>, min_transid: u64) -> io::Result<BTreeSet<u64>> {
    let mut out = BTreeSet::new();
    let range = Range { tree: 0, min: (SUBVOL_ROOT_INO, 0, 0), max: (u64::MAX, u32::MAX, u64::MAX), min_transid };
    search(fd, range, |item| {
        // Inode, ref, xattr, dir and extent items are keyed by the inode number.
        let inode_keyed = matches!(
            item.kind,
            INODE_ITEM | INODE_REF | INODE_EXTREF | XATTR_ITEM | DIR_ITEM | DIR_INDEX | EXTENT_DATA
        );
        if item.objectid > SUBVOL_ROOT_INO && inode_keyed {
            out.insert(item.objectid);
        }
    })?;
    Ok(out)
}

/// What an inode is and where it is named.
#[derive(Debug, Default)]
pub struct Inode {
    /// `st_mode`.
    pub mode: u32,
    /// Every (directory inode, name) that links to it.
    pub names: Vec<(u64, OsString)>,
}

impl Inode {
    pub fn is_dir(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFDIR
    }
}

fn le64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

fn le16(b: &[u8], at: usize) -> Option<usize> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?) as usize)
}

/// The inode `ino` of the subvolume `fd` is in (`tree` 0), or of subvolume `tree`,
/// with all its names, read from its INODE_ITEM, INODE_REF and INODE_EXTREF items
/// (layouts from linux/btrfs_tree.h). `None` when it does not exist (deleted).
///
/// `BTRFS_IOC_INO_PATHS` would give whole paths, but at most 4 KiB of them in all (40
/// names of 134 bytes came back as 28) and none longer than its buffer: the driver
/// builds paths itself from these names, one directory at a time.
pub fn inode(fd: BorrowedFd<'_>, tree: u64, ino: u64) -> io::Result<Option<Inode>> {
    let mut found = false;
    let mut out = Inode::default();
    let range = Range { tree, min: (ino, INODE_ITEM, 0), max: (ino, INODE_EXTREF, u64::MAX), min_transid: 0 };
    let mut bad = false;
    search(fd, range, |item| {
        let d = item.data;
        match item.kind {
            INODE_ITEM => {
                // btrfs_inode_item: 5 u64, nlink, uid, gid, then mode (u32) at 52.
                found = true;
                out.mode = d.get(52..56).map(|m| u32::from_le_bytes(m.try_into().expect("4 bytes"))).unwrap_or(0);
            }
            INODE_REF => {
                // The key's offset is the directory; entries: index u64, name_len u16, name.
                let mut at = 0;
                while at < d.len() {
                    let Some(len) = le16(d, at + 8) else {
                        bad = true;
                        break;
                    };
                    let Some(name) = d.get(at + 10..at + 10 + len) else {
                        bad = true;
                        break;
                    };
                    out.names.push((item.offset, OsStr::from_bytes(name).to_os_string()));
                    at += 10 + len;
                }
            }
            INODE_EXTREF => {
                // Entries: parent u64, index u64, name_len u16, name.
                let mut at = 0;
                while at < d.len() {
                    let (Some(parent), Some(len)) = (le64(d, at), le16(d, at + 16)) else {
                        bad = true;
                        break;
                    };
                    let Some(name) = d.get(at + 18..at + 18 + len) else {
                        bad = true;
                        break;
                    };
                    out.names.push((parent, OsStr::from_bytes(name).to_os_string()));
                    at += 18 + len;
                }
            }
            _ => {}
        }
    })?;
    if bad {
        return Err(io::Error::other(format!("inode {ino}: a malformed name item")));
    }
    Ok(found.then_some(out))
}

/// A subvolume whose root is named inside another.
#[derive(Debug)]
pub struct ChildSubvolume {
    pub id: u64,
    /// The directory (inode number in the containing subvolume) that holds its root.
    pub dir: u64,
    pub name: OsString,
}

/// The subvolumes directly inside subvolume `tree`, from the root tree's ROOT_REF
/// items (key: containing tree, ROOT_REF, child tree; data: btrfs_root_ref, the name).
pub fn child_subvolumes(fd: BorrowedFd<'_>, tree: u64) -> io::Result<Vec<ChildSubvolume>> {
    let mut out = Vec::new();
    let range = Range { tree: ROOT_TREE, min: (tree, ROOT_REF, 0), max: (tree, ROOT_REF, u64::MAX), min_transid: 0 };
    search(fd, range, |item| {
        // btrfs_root_ref: dirid u64, sequence u64, name_len u16, then the name.
        let d = item.data;
        if let (Some(dir), Some(len)) = (le64(d, 0), le16(d, 16)) {
            if let Some(name) = d.get(18..18 + len) {
                out.push(ChildSubvolume { id: item.offset, dir, name: OsStr::from_bytes(name).to_os_string() });
            }
        }
    })?;
    Ok(out)
}
