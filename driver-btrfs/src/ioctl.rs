//! The btrfs ioctls the driver uses, declared with nix's macros (layouts from
//! linux/btrfs.h), each behind a small safe function.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

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

const SEARCH_BUF: usize = 4096 - std::mem::size_of::<SearchKey>();

#[repr(C)]
pub struct SearchArgs {
    key: SearchKey,
    buf: [u8; SEARCH_BUF],
}

#[repr(C)]
pub struct InoPathArgs {
    inum: u64,
    size: u64,
    reserved: [u64; 4],
    fspath: u64,
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
nix::ioctl_readwrite!(tree_search, MAGIC, 17, SearchArgs);
nix::ioctl_write_ptr!(snap_create_v2, MAGIC, 23, VolArgsV2);
nix::ioctl_read!(subvol_getflags, MAGIC, 25, u64);
nix::ioctl_write_ptr!(subvol_setflags, MAGIC, 26, u64);
nix::ioctl_readwrite!(ino_paths, MAGIC, 35, InoPathArgs);
nix::ioctl_read!(get_subvol_info, MAGIC, 60, SubvolInfo);

fn os(e: nix::Error, what: &str) -> io::Error {
    let e = io::Error::from(e);
    io::Error::new(e.kind(), format!("{what}: {e}"))
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

/// Inode numbers with items in tree blocks written at or after transaction
/// `min_transid`, in the subvolume `fd` is in — what `btrfs subvolume find-new` asks.
///
/// A snapshot shares its parent's tree blocks; the first change to anything in a
/// block copies it with the current transaction's generation. So searching with
/// `min_transid` = the snapshot's creation transaction visits only the blocks the
/// layer changed (the search skips whole subtrees older than that), and returns every
/// inode in them: all that changed, plus neighbours that share a block with a change,
/// which the diff then compares and drops. Deleted inodes leave no items; their
/// directories' items changed, so the diff finds the deletion by listing those.
pub fn changed_inodes(fd: BorrowedFd<'_>, min_transid: u64) -> io::Result<BTreeSet<u64>> {
    // SAFETY: SearchArgs is plain data; zero is a valid value.
    let mut args: Box<SearchArgs> = Box::new(unsafe { std::mem::zeroed() });
    let mut out = BTreeSet::new();
    let (mut objectid, mut typ, mut offset) = (SUBVOL_ROOT_INO, 0u32, 0u64);
    loop {
        args.key = SearchKey {
            tree_id: 0, // the subvolume of fd
            min_objectid: objectid,
            max_objectid: u64::MAX,
            min_type: typ,
            max_type: u32::MAX,
            min_offset: offset,
            max_offset: u64::MAX,
            min_transid,
            max_transid: u64::MAX,
            nr_items: 4096,
            ..Default::default()
        };
        // SAFETY: a valid fd and an initialised search buffer.
        unsafe { tree_search(fd.as_raw_fd(), &mut *args) }.map_err(|e| os(e, "BTRFS_IOC_TREE_SEARCH"))?;
        let n = args.key.nr_items;
        if n == 0 {
            break;
        }
        let mut pos = 0usize;
        let (mut last_obj, mut last_type, mut last_off) = (0u64, 0u32, 0u64);
        for _ in 0..n {
            let h = &args.buf[pos..pos + 32];
            let rd64 = |o: usize| u64::from_le_bytes(h[o..o + 8].try_into().expect("8 bytes"));
            let rd32 = |o: usize| u32::from_le_bytes(h[o..o + 4].try_into().expect("4 bytes"));
            let (obj, off, t, len) = (rd64(8), rd64(16), rd32(24), rd32(28) as usize);
            // Inode, ref, xattr, dir and extent items are keyed by the inode number.
            if obj > SUBVOL_ROOT_INO && matches!(t, 1 | 12 | 13 | 24 | 84 | 96 | 108) {
                out.insert(obj);
            }
            (last_obj, last_type, last_off) = (obj, t, off);
            pos += 32 + len;
        }
        // Continue after the last key returned.
        (objectid, typ, offset) = match last_off.checked_add(1) {
            Some(o) => (last_obj, last_type, o),
            None => match last_type.checked_add(1) {
                Some(t) => (last_obj, t, 0),
                None => match last_obj.checked_add(1) {
                    Some(obj) => (obj, 0, 0),
                    None => break,
                },
            },
        };
    }
    Ok(out)
}

/// Every path (relative to the subvolume root) of inode `ino` in the subvolume `fd` is in.
pub fn inode_paths(fd: BorrowedFd<'_>, ino: u64) -> io::Result<Vec<PathBuf>> {
    let mut buf = vec![0u64; 8192];
    let size = (buf.len() * 8) as u64;
    let mut args = InoPathArgs { inum: ino, size, reserved: [0; 4], fspath: buf.as_mut_ptr() as u64 };
    // SAFETY: fspath points at `size` writable bytes for the call's duration.
    match unsafe { ino_paths(fd.as_raw_fd(), &mut args) } {
        Ok(_) => {}
        // Gone: deleted, or a name only a later transaction will show.
        Err(nix::errno::Errno::ENOENT) => return Ok(Vec::new()),
        Err(e) => return Err(os(e, "BTRFS_IOC_INO_PATHS")),
    }
    // btrfs_data_container: u32 bytes_left, bytes_missing, elem_cnt, elem_missed; u64 val[]
    let head = buf[1];
    let elem_cnt = (head & 0xffff_ffff) as usize;
    let bytes: &[u8] = unsafe { std::slice::from_raw_parts(buf.as_ptr() as *const u8, buf.len() * 8) };
    let vals = &bytes[16..];
    let mut out = Vec::new();
    for i in 0..elem_cnt {
        let off = u64::from_le_bytes(vals[i * 8..i * 8 + 8].try_into().expect("8 bytes")) as usize;
        let s = &vals[off..];
        let end = s.iter().position(|&b| b == 0).unwrap_or(s.len());
        out.push(PathBuf::from(OsStr::from_bytes(&s[..end])));
    }
    Ok(out)
}
