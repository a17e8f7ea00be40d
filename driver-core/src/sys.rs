//! Thin wrappers over the syscalls the tar engine and the diff use, so that the logic
//! above them reads as what it does. Everything here works relative to a directory
//! file descriptor: paths are resolved inside a layer root by the kernel
//! (`openat2` with `RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS`), never by string checks.
//!
//! nix 0.29 has no xattr API, so the four xattr calls go through libc here, in one place.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstatat, FileStat, Mode, SFlag};
use nix::sys::time::TimeSpec;
use nix::unistd::UnlinkatFlags;

pub fn errno(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// How paths inside a layer root are resolved: the root acts as `/`, `..` cannot climb
/// out of it, and no symbolic link is followed anywhere on the way (a layer tar may not
/// write through a link, whoever made the link). `ELOOP` means a link was in the way.
pub fn confined() -> ResolveFlag {
    ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS
}

/// `O_NOATIME` where this process may use it (the file's owner, or CAP_FOWNER): reading
/// a layer to diff it must not change it, and an atime update rewrites the inode
/// (on a snapshot, every read file would then look changed since it was taken).
fn noatime(flags: OFlag) -> OFlag {
    flags | OFlag::O_NOATIME
}

/// Retries an open without O_NOATIME when the kernel refuses it (EPERM: not ours).
fn with_noatime<T>(flags: OFlag, open: impl Fn(OFlag) -> nix::Result<T>) -> nix::Result<T> {
    match open(noatime(flags)) {
        Err(Errno::EPERM) => open(flags),
        other => other,
    }
}

/// Opens `rel` (relative to `root`; empty means `root` itself) with the confined
/// resolution and `flags` (`O_CLOEXEC | O_NOFOLLOW` are added).
pub fn open_in(root: BorrowedFd<'_>, rel: &Path, flags: OFlag) -> io::Result<OwnedFd> {
    let rel: &Path = if rel.as_os_str().is_empty() { Path::new(".") } else { rel };
    let how = OpenHow::new().flags(flags | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW).resolve(confined());
    let fd = openat2(root.as_raw_fd(), rel, how).map_err(errno)?;
    // SAFETY: openat2 returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens the directory `rel` inside `root`, confined.
pub fn open_dir_in(root: BorrowedFd<'_>, rel: &Path) -> io::Result<OwnedFd> {
    open_in(root, rel, OFlag::O_DIRECTORY | OFlag::O_RDONLY)
}

/// Opens a directory by absolute path (the layer root itself).
pub fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    let fd = nix::fcntl::open(path, OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(errno)?;
    // SAFETY: open returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens a directory by absolute path of any length: the longest head that fits in
/// PATH_MAX is opened as `open(2)` would, the rest inside it, confined, in pieces that
/// fit (a layer's directories can lie deeper than one path can name).
pub fn open_dir_long(path: &Path) -> io::Result<OwnedFd> {
    let max = libc::PATH_MAX as usize - 1;
    if path.as_os_str().len() <= max {
        return open_dir(path);
    }
    let mut fd: Option<OwnedFd> = None;
    let mut piece = PathBuf::new();
    let open = |fd: &Option<OwnedFd>, piece: &Path| match fd {
        None => open_dir(piece),
        Some(d) => open_dir_in(d.as_fd(), piece),
    };
    for c in path.components() {
        if piece.as_os_str().len() + 1 + c.as_os_str().len() > max {
            fd = Some(open(&fd, &piece)?);
            piece = PathBuf::new();
        }
        piece.push(c);
    }
    open(&fd, &piece)
}

/// Opens `name` in `dir` without following a final symlink.
pub fn open_at(dir: BorrowedFd<'_>, name: &OsStr, flags: OFlag, mode: u32) -> io::Result<OwnedFd> {
    let flags = flags | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW;
    let open = |f| nix::fcntl::openat(Some(dir.as_raw_fd()), name, f, Mode::from_bits_truncate(mode));
    // O_NOATIME is for reading what exists; a file being created is ours anyway.
    let fd = if flags.contains(OFlag::O_CREAT) { open(flags) } else { with_noatime(flags, open) }.map_err(errno)?;
    // SAFETY: openat returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `lstat` of `name` in `dir`; `Ok(None)` when it does not exist.
pub fn lstat_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Option<FileStat>> {
    match fstatat(Some(dir.as_raw_fd()), name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(errno(e)),
    }
}

pub fn fstat(fd: BorrowedFd<'_>) -> io::Result<FileStat> {
    nix::sys::stat::fstat(fd.as_raw_fd()).map_err(errno)
}

pub fn is_dir(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
}

pub fn file_type(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT
}

/// Removes `name` from `dir` whatever it is; a directory goes with everything in it.
/// Never follows a symlink: a link is removed, not what it points to.
pub fn remove_all_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    match nix::unistd::unlinkat(Some(dir.as_raw_fd()), name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) => return Ok(()),
        Err(Errno::ENOENT) => return Ok(()),
        Err(Errno::EISDIR) => {}
        Err(e) => return Err(errno(e)),
    }
    let sub = open_at(dir, name, OFlag::O_DIRECTORY | OFlag::O_RDONLY, 0)?;
    clear_dir(sub.as_fd_borrowed())?;
    drop(sub);
    match nix::unistd::unlinkat(Some(dir.as_raw_fd()), name, UnlinkatFlags::RemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(errno(e)),
    }
}

/// Removes everything inside the directory `dir`.
pub fn clear_dir(dir: BorrowedFd<'_>) -> io::Result<()> {
    for name in read_dir_names(dir)? {
        remove_all_at(dir, &name)?;
    }
    Ok(())
}

/// The names in a directory (without `.` and `..`), unsorted.
pub fn read_dir_names(dir: BorrowedFd<'_>) -> io::Result<Vec<std::ffi::OsString>> {
    // Dir::openat on "." gives an independent descriptor and position.
    let mut d = with_noatime(OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC, |f| {
        nix::dir::Dir::openat(Some(dir.as_raw_fd()), ".", f, Mode::empty())
    })
    .map_err(errno)?;
    let mut names = Vec::new();
    for entry in d.iter() {
        let entry = entry.map_err(errno)?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(OsStr::from_bytes(name).to_os_string());
        }
    }
    Ok(names)
}

/// Helper so an `OwnedFd` can be passed where a `BorrowedFd` is wanted.
pub trait AsFdBorrowed {
    fn as_fd_borrowed(&self) -> BorrowedFd<'_>;
}

impl AsFdBorrowed for OwnedFd {
    fn as_fd_borrowed(&self) -> BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(self)
    }
}

fn cstr(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// The path `/proc/self/fd/<dir>/<name>`: reaches `name` through an open directory
/// descriptor, for the few calls (xattrs on symlinks and devices) that have no `*at` form.
pub fn proc_path(dir: BorrowedFd<'_>, name: &OsStr) -> CString {
    let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    p.extend_from_slice(name.as_bytes());
    CString::new(p).expect("path has no NUL")
}

/// Where an xattr call acts: an open file, or a path that is not followed at the end.
#[derive(Clone, Copy)]
pub enum XattrTarget<'a> {
    Fd(RawFd),
    NoFollow(&'a CStr),
}

pub fn set_xattr(target: XattrTarget<'_>, name: &str, value: &[u8]) -> io::Result<()> {
    let name = cstr(OsStr::new(name))?;
    // SAFETY: valid C strings and a valid buffer for the duration of the call.
    let rc = unsafe {
        match target {
            XattrTarget::Fd(fd) => libc::fsetxattr(fd, name.as_ptr(), value.as_ptr().cast(), value.len(), 0),
            XattrTarget::NoFollow(p) => {
                libc::lsetxattr(p.as_ptr(), name.as_ptr(), value.as_ptr().cast(), value.len(), 0)
            }
        }
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub fn remove_xattr(target: XattrTarget<'_>, name: &str) -> io::Result<()> {
    let name = cstr(OsStr::new(name))?;
    // SAFETY: valid C strings.
    let rc = unsafe {
        match target {
            XattrTarget::Fd(fd) => libc::fremovexattr(fd, name.as_ptr()),
            XattrTarget::NoFollow(p) => libc::lremovexattr(p.as_ptr(), name.as_ptr()),
        }
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The value of one xattr; `Ok(None)` when it is not set (or xattrs are unsupported).
pub fn get_xattr(target: XattrTarget<'_>, name: &str) -> io::Result<Option<Vec<u8>>> {
    let name = cstr(OsStr::new(name))?;
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: buf is valid for buf.len() bytes.
        let rc = unsafe {
            match target {
                XattrTarget::Fd(fd) => libc::fgetxattr(fd, name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()),
                XattrTarget::NoFollow(p) => {
                    libc::lgetxattr(p.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
                }
            }
        };
        if rc >= 0 {
            buf.truncate(rc as usize);
            return Ok(Some(buf));
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ENODATA) | Some(libc::ENOTSUP) => return Ok(None),
            Some(libc::ERANGE) if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
            _ => return Err(err),
        }
    }
}

/// The names of all xattrs, sorted.
pub fn list_xattrs(target: XattrTarget<'_>) -> io::Result<Vec<String>> {
    let mut buf = vec![0u8; 1024];
    loop {
        // SAFETY: buf is valid for buf.len() bytes.
        let rc = unsafe {
            match target {
                XattrTarget::Fd(fd) => libc::flistxattr(fd, buf.as_mut_ptr().cast(), buf.len()),
                XattrTarget::NoFollow(p) => libc::llistxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()),
            }
        };
        if rc >= 0 {
            buf.truncate(rc as usize);
            break;
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ENOTSUP) => return Ok(Vec::new()),
            Some(libc::ERANGE) if buf.len() < 1 << 22 => buf.resize(buf.len() * 4, 0),
            _ => return Err(err),
        }
    }
    let mut names: Vec<String> =
        buf.split(|&b| b == 0).filter(|n| !n.is_empty()).map(|n| String::from_utf8_lossy(n).into_owned()).collect();
    names.sort();
    Ok(names)
}

/// All xattrs of a target as (name, value), sorted by name.
pub fn read_xattrs(target: XattrTarget<'_>) -> io::Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    for name in list_xattrs(target)? {
        if let Some(v) = get_xattr(target, &name)? {
            out.push((name, v));
        }
    }
    Ok(out)
}

/// Sets each of `xattrs`; an error names the xattr.
pub fn set_xattrs(target: XattrTarget<'_>, xattrs: &[(String, Vec<u8>)]) -> io::Result<()> {
    for (name, value) in xattrs {
        set_xattr(target, name, value)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot set xattr {name}: {e}")))?;
    }
    Ok(())
}

/// What a node carries besides its data: owner, mode (permission bits with
/// setuid/setgid/sticky), xattrs and times. A layer's tar entry and a copied inode both
/// come down to this, and [`set_metadata`] writes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeMeta {
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    pub xattrs: Vec<(String, Vec<u8>)>,
    pub atime: TimeSpec,
    pub mtime: TimeSpec,
}

impl NodeMeta {
    /// Owner, mode and times from a stat, with the given xattrs.
    pub fn from_stat(st: &FileStat, xattrs: Vec<(String, Vec<u8>)>) -> NodeMeta {
        NodeMeta {
            uid: st.st_uid,
            gid: st.st_gid,
            mode: st.st_mode & 0o7777,
            xattrs,
            atime: TimeSpec::new(st.st_atime, st.st_atime_nsec),
            mtime: TimeSpec::new(st.st_mtime, st.st_mtime_nsec),
        }
    }
}

/// The node whose metadata is set: an open file or directory, or `name` in `dir`
/// (symlinks and devices, which cannot be opened to write their metadata).
#[derive(Clone, Copy)]
pub enum Node<'a> {
    Open(BorrowedFd<'a>),
    /// `symlink`: the node is a symbolic link, whose mode Linux cannot change.
    Named {
        dir: BorrowedFd<'a>,
        name: &'a OsStr,
        symlink: bool,
    },
}

/// What a node already has from the way it was made, where known: the owner a new node
/// gets (its creator's) and the mode it was created with (after the umask).
/// [`set_metadata`] does not set those again (`cp -a` skips them too; on a root-owned
/// image that is two syscalls of the seven a small copied file costs).
/// `Made::default()`: nothing known, everything is set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Made {
    pub owner: Option<(u32, u32)>,
    pub mode: Option<u32>,
}

/// Who makes nodes in a directory, and so what a node made there has before any
/// chown or chmod ([`Creator::made`]).
#[derive(Clone, Copy, Debug)]
pub struct Creator {
    owner: Option<(u32, u32)>,
    umask: Option<u32>,
}

impl Creator {
    /// This process making nodes in `dir`. A new node's owner is the process's, and its
    /// group too unless `dir`'s group differs (a setgid directory or a `grpid` mount
    /// give the directory's: known only when the two are the same); its mode is the
    /// one asked for less the umask, unless `dir` has a default ACL, which replaces
    /// the umask (unknown then).
    pub fn in_dir(dir: BorrowedFd<'_>) -> io::Result<Creator> {
        let st = fstat(dir)?;
        let (uid, gid) = (nix::unistd::geteuid().as_raw(), nix::unistd::getegid().as_raw());
        let owner = (st.st_gid == gid).then_some((uid, gid));
        let acl = get_xattr(XattrTarget::Fd(dir.as_raw_fd()), "system.posix_acl_default")?.is_some();
        Ok(Creator { owner, umask: umask().filter(|_| !acl) })
    }

    /// What a node made with permission bits `mode` has: see [`Made`].
    pub fn made(&self, mode: u32) -> Made {
        Made { owner: self.owner, mode: self.umask.map(|u| mode & 0o777 & !u) }
    }
}

/// The process's umask, read once from /proc/self/status (`umask(2)` cannot read it
/// without changing it); `None` when unknown.
pub fn umask() -> Option<u32> {
    static UMASK: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    *UMASK.get_or_init(|| {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let v = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
        u32::from_str_radix(v.trim(), 8).ok()
    })
}

/// Sets owner, mode, xattrs and times of `node`, in that order, because each step can
/// undo an earlier one: chown clears the setuid/setgid bits (so mode comes after it) and
/// `security.capability` (so xattrs come after both), and every change moves ctime and
/// writing an xattr may touch the node (so times come last). What `made` says the node
/// has already is not set again.
pub fn set_metadata(node: Node<'_>, meta: &NodeMeta, made: Made) -> io::Result<()> {
    use nix::fcntl::AtFlags;
    use nix::sys::stat::{fchmod, fchmodat, futimens, utimensat, FchmodatFlags, UtimensatFlags};
    let (uid, gid) = (Some(meta.uid.into()), Some(meta.gid.into()));
    let mode = Mode::from_bits_truncate(meta.mode);
    let chown = made.owner != Some((meta.uid, meta.gid));
    // setuid, setgid and sticky are always set: a chown would have cleared them.
    let chmod = made.mode != Some(meta.mode) || meta.mode & 0o7000 != 0;
    match node {
        Node::Open(fd) => {
            let fd = fd.as_raw_fd();
            if chown {
                nix::unistd::fchown(fd, uid, gid).map_err(errno)?;
            }
            if chmod {
                fchmod(fd, mode).map_err(errno)?;
            }
            set_xattrs(XattrTarget::Fd(fd), &meta.xattrs)?;
            futimens(fd, &meta.atime, &meta.mtime).map_err(errno)
        }
        Node::Named { dir, name, symlink } => {
            let d = Some(dir.as_raw_fd());
            if chown {
                nix::unistd::fchownat(d, name, uid, gid, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(errno)?;
            }
            if !symlink && chmod {
                // Callers name a node they just made (mknodat) in a directory only they
                // write, so the name cannot have become a link in between.
                fchmodat(d, name, mode, FchmodatFlags::FollowSymlink).map_err(errno)?;
            }
            if !meta.xattrs.is_empty() {
                set_xattrs(XattrTarget::NoFollow(&proc_path(dir, name)), &meta.xattrs)?;
            }
            utimensat(d, name, &meta.atime, &meta.mtime, UtimensatFlags::NoFollowSymlink).map_err(errno)
        }
    }
}

/// How many `fsync(2)` and `syncfs(2)` calls this process has made through [`fsync`],
/// [`syncfs`] and [`syncfs_fd`]: the bench records them per phase as exact figures
/// (docs/ci.md), which a timing on a shared machine is not.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncCalls {
    pub fsync: u64,
    pub syncfs: u64,
}

static FSYNCS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static SYNCFSES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The sync calls made so far (see [`SyncCalls`]).
pub fn sync_calls() -> SyncCalls {
    use std::sync::atomic::Ordering::Relaxed;
    SyncCalls { fsync: FSYNCS.load(Relaxed), syncfs: SYNCFSES.load(Relaxed) }
}

/// `fsync(2)` of an open file or directory, counted in [`sync_calls`].
pub fn fsync(f: &std::fs::File) -> io::Result<()> {
    FSYNCS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    f.sync_all()
}

/// `syncfs(2)` of the filesystem holding `fd`, counted in [`sync_calls`], not remembered
/// for [`synced_since`]. (The background flusher of `writeback` calls syncfs on its own:
/// how many of its wake-ups land while one runs depends on timing, so it is not counted.)
pub fn syncfs_fd(fd: BorrowedFd<'_>) -> io::Result<()> {
    SYNCFSES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    nix::unistd::syncfs(fd.as_raw_fd()).map_err(errno)
}

/// A point in this process's order of writes: take it once a file's data has been
/// written (its last `write` returned); [`synced_since`] then says whether a later
/// [`syncfs`] made that data durable.
pub fn write_mark() -> u64 {
    SYNC_ORDER.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
}

static SYNC_ORDER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Per filesystem (device), the latest mark at which one of this process's `syncfs`
/// began (and then succeeded): every write finished before that is on disk.
static SYNCED: std::sync::Mutex<Vec<(u64, u64)>> = std::sync::Mutex::new(Vec::new());

/// `syncfs(2)` of the filesystem holding `dir`, remembered so that a second sync of
/// the same writes can be skipped ([`synced_since`]): an unpack syncs its layers, and
/// the blobs it kept, written before, need no sync of their own.
pub fn syncfs(dir: &Path) -> io::Result<()> {
    let fd = open_dir(dir)?;
    let dev = fstat(fd.as_fd())?.st_dev;
    let began = write_mark();
    syncfs_fd(fd.as_fd())?;
    let mut synced = SYNCED.lock().unwrap_or_else(|e| e.into_inner());
    match synced.iter_mut().find(|(d, _)| *d == dev) {
        Some((_, at)) => *at = (*at).max(began),
        None => synced.push((dev, began)),
    }
    Ok(())
}

/// Whether a [`syncfs`] of the filesystem holding `dir` began after `mark` (and
/// succeeded), so that whatever was written there before `mark` is on disk.
pub fn synced_since(dir: &Path, mark: u64) -> bool {
    let Ok(st) = nix::sys::stat::stat(dir) else { return false };
    SYNCED.lock().unwrap_or_else(|e| e.into_inner()).iter().any(|(d, at)| *d == st.st_dev && *at > mark)
}

/// The type of the filesystem under `path`, as the kernel names it: the type of the
/// mount that holds it (the last-mounted of the longest mount point above it, from
/// mountinfo). No table of `statfs` magic numbers to keep up: every filesystem the
/// kernel mounts has its name, `fuse.sshfs` and the like included.
pub fn fs_type(path: &Path) -> io::Result<String> {
    let path = std::fs::canonicalize(path)?;
    mounts()
        .into_iter()
        .filter(|m| path.starts_with(&m.point))
        // max_by_key keeps the last of equals: the mount on top.
        .max_by_key(|m| m.point.components().count())
        .map(|m| m.fs_type)
        .ok_or_else(|| io::Error::other(format!("no mount holds {} in /proc/self/mountinfo", path.display())))
}

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

/// Bind-mounts `src` on `target` read-only: a bind mount takes the source's flags, so
/// read-only needs a second call (`MS_REMOUNT | MS_BIND | MS_RDONLY`), as `mount
/// --bind -o ro` does (util-linux; the kernel ignores MS_RDONLY on the first call).
pub fn bind_readonly(src: &Path, target: &Path) -> io::Result<()> {
    use nix::mount::{mount, umount2, MntFlags, MsFlags};
    let none: Option<&str> = None;
    mount(Some(src), target, none, MsFlags::MS_BIND, none).map_err(errno)?;
    let ro = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY;
    if let Err(e) = mount(none, target, none, ro, none) {
        let _ = umount2(target, MntFlags::MNT_DETACH);
        return Err(errno(e));
    }
    Ok(())
}

/// Unmounts `target`; not being mounted is fine, busy detaches lazily.
pub fn unmount(target: &Path) -> io::Result<()> {
    use nix::mount::{umount2, MntFlags};
    match umount2(target, MntFlags::empty()) {
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => Ok(()),
        Err(Errno::EBUSY) => umount2(target, MntFlags::MNT_DETACH).map_err(errno),
        Err(e) => Err(errno(e)),
    }
}

/// One line of `/proc/self/mountinfo`: where, and what filesystem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    /// The mount point (field 5).
    pub point: PathBuf,
    /// The filesystem type (the first field after the ` - ` separator).
    pub fs_type: String,
}

/// This process's mounts, in mount order.
pub fn mounts() -> Vec<MountEntry> {
    mounts_in(&std::fs::read("/proc/self/mountinfo").unwrap_or_default())
}

/// The mount points of this process (field 5 of `/proc/self/mountinfo`), in mount order.
pub fn mount_points() -> Vec<PathBuf> {
    mounts().into_iter().map(|m| m.point).collect()
}

/// The mounts in a mountinfo text. The kernel writes a space, tab, newline or
/// backslash in a path as an octal escape (`\040`, `\011`, `\012`, `\134`; fs/proc_namespace.c
/// `mangle`), so a line always has its fields apart by single spaces; a variable number
/// of optional fields ends with a lone `-`, then comes the type.
fn mounts_in(info: &[u8]) -> Vec<MountEntry> {
    info.split(|&b| b == b'\n')
        .filter_map(|line| {
            let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
            let point = fields.get(4)?;
            let sep = fields.iter().skip(6).position(|f| *f == b"-")? + 6;
            let fs_type = String::from_utf8_lossy(&unescape(fields.get(sep + 1)?)).into_owned();
            Some(MountEntry { point: PathBuf::from(OsStr::from_bytes(&unescape(point))), fs_type })
        })
        .collect()
}

/// Undoes mountinfo's octal escapes.
fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let octal = field.get(i + 1..i + 4).filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (field[i], octal) {
            (b'\\', Some(d)) => {
                out.push(d.iter().fold(0u8, |n, c| n.wrapping_mul(8).wrapping_add(c - b'0')));
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// Whether `path` is a mount point (listed in this process's mountinfo).
pub fn is_mount_point(path: &Path) -> bool {
    mount_points().iter().any(|m| m == path)
}

/// Mount points at or below `dir`, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = mount_points().into_iter().filter(|p| p.starts_with(dir)).collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out
}

/// Whether process `pid` still exists (a record or a scratch it owns is still in use).
/// A reused pid keeps a leftover a little longer; it never makes one look abandoned.
pub fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_paths_are_unescaped() {
        let info = concat!(
            "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda rw\n",
            "97 22 0:52 / /tmp/a\\040b rw shared:40 - tmpfs tmpfs rw\n",
            "98 22 0:53 / /tmp/tab\\011nl\\012bs\\134end rw shared:41 - tmpfs tmpfs rw\n",
            "99 22 0:54 / /tmp/not\\8octal rw shared:42 - tmpfs tmpfs rw\n",
        );
        let got: Vec<PathBuf> = mounts_in(info.as_bytes()).into_iter().map(|m| m.point).collect();
        let want = ["/", "/tmp/a b", "/tmp/tab\tnl\nbs\\end", "/tmp/not\\8octal"];
        assert_eq!(got, want.iter().map(PathBuf::from).collect::<Vec<_>>());
    }

    #[test]
    fn mountinfo_types_follow_the_optional_fields() {
        let info = concat!(
            "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda rw\n",
            "97 22 0:52 / /mnt rw shared:40 master:3 - fuse.sshfs host:/ rw\n",
            "98 22 0:53 / /none rw - xfs /dev/loop0 rw\n",
        );
        let got: Vec<(String, String)> =
            mounts_in(info.as_bytes()).into_iter().map(|m| (m.point.display().to_string(), m.fs_type)).collect();
        let want = [("/", "ext4"), ("/mnt", "fuse.sshfs"), ("/none", "xfs")];
        assert_eq!(got, want.iter().map(|(p, t)| (p.to_string(), t.to_string())).collect::<Vec<_>>());
    }

    #[test]
    fn fsync_and_syncfs_calls_are_counted() {
        // Not on /dev/shm: the test below needs it unsynced by others.
        let dir = tempfile::tempdir().unwrap();
        let before = sync_calls();
        let f = std::fs::File::create(dir.path().join("f")).unwrap();
        fsync(&f).unwrap();
        fsync(&f).unwrap();
        syncfs(dir.path()).unwrap();
        let after = sync_calls();
        // Other tests of this binary sync too, meanwhile: at least ours are counted.
        assert!(after.fsync >= before.fsync + 2 && after.syncfs > before.syncfs, "{before:?} -> {after:?}");
    }

    /// What [`syncfs`] covers: writes marked before it began; a write marked after it
    /// waits for the next. (On /dev/shm, a tmpfs no other test syncs: another thread's
    /// sync there would make a later mark look covered.)
    #[test]
    fn a_sync_covers_the_writes_marked_before_it() {
        let shm = tempfile::tempdir_in("/dev/shm").unwrap();
        let before = write_mark();
        assert!(!synced_since(shm.path(), before), "nothing synced yet");
        syncfs(shm.path()).unwrap();
        assert!(synced_since(shm.path(), before));
        let after = write_mark();
        assert!(!synced_since(shm.path(), after), "a write after the sync is not covered");
        syncfs(shm.path()).unwrap();
        assert!(synced_since(shm.path(), after));
    }

    #[test]
    fn fs_type_names_the_mount_that_holds_a_path() {
        // /proc is procfs wherever this runs; a path inside it takes its type, not /'s.
        assert_eq!(fs_type(Path::new("/proc/self")).unwrap(), "proc");
        assert_eq!(fs_type(Path::new("/proc")).unwrap(), "proc");
    }
}
