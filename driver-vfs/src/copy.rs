//! A full-fidelity copy of a layer tree: what `vfs` pays for every layer.
//!
//! Data is cloned with `FICLONE` where the filesystem shares extents (btrfs, xfs with
//! reflink), else copied with `copy_file_range` one data segment at a time
//! (`SEEK_DATA`/`SEEK_HOLE`), so a sparse file stays sparse. Hardlinks stay links,
//! and owners, modes (setuid included), xattrs (`security.capability` after the chown
//! that would clear it), devices, fifos, symlinks and times are kept; a directory's
//! times are set after its children are written.
//!
//! Without reflinks the copy is the whole cost of a vfs layer, so it runs in parallel:
//! one walker makes directories, symlinks, devices and hardlinked files (so that a
//! file's next name can point at it at once) in order, and hands the other files of a
//! directory to a pool in batches, by name; the pool creates them, copies their data in
//! the kernel (`copy_file_range`) and sets their metadata. Creating a file (an inode
//! and a directory entry) cost the walker more than all else it does, and made it the
//! slowest thread of the copy. Only making a node changes a directory's times, so a
//! directory's metadata is set by whoever finishes its last part, the walker or the
//! pool ([`Dir`]). (moby considered a parallel copy for its vfs driver and never
//! merged one.)
//!
//! Against `cp -a` and a syncfs of the same tree on ext4 (issue 17 asks for 1.5x), both
//! write the same bytes, and the disk's part is as large as the CPU's: so the pool
//! counts what it copies on the filesystem's [`Flusher`], which syncs it every 32 MiB,
//! and the disk writes while the pool copies instead of all of it at the layer commit's
//! syncfs.
//! A file costs as few syscalls as `cp -a`'s (created with its mode, no chown or chmod
//! that changes nothing, no hole search in a file without holes), and a batch of files
//! costs one hand-over (a futex wake) instead of one per file.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Mutex};

use driver_core::sys::{self, Made, Node, NodeMeta, XattrTarget};
use driver_core::writeback::Flusher;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};

// FICLONE = _IOW(0x94, 9, int): make the destination share the source's extents.
nix::ioctl_write_int!(ficlone, 0x94, 9);

/// Whether files in `dir` can share extents (FICLONE works between two of them).
pub fn reflink_works(dir: &Path) -> bool {
    let Ok(tmp) = tempfile::Builder::new().prefix(".reflink-probe-").tempdir_in(dir) else {
        return false;
    };
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let Ok(()) = std::fs::write(&a, [0u8; 4096]) else {
        return false;
    };
    let (Ok(src), Ok(dst)) = (std::fs::File::open(&a), std::fs::File::create(&b)) else {
        return false;
    };
    // SAFETY: FICLONE takes the source descriptor as its integer argument.
    unsafe { ficlone(dst.as_raw_fd(), src.as_raw_fd() as _) }.is_ok()
}

/// Copies trees; remembers whether reflinks work so it stops trying when they do not.
pub struct Copier {
    reflink: AtomicBool,
}

impl Default for Copier {
    fn default() -> Self {
        Copier { reflink: AtomicBool::new(true) }
    }
}

impl Copier {
    /// Whether the last copies could share extents.
    pub fn reflinks(&self) -> bool {
        self.reflink.load(Ordering::Relaxed)
    }

    /// Copies the directory tree `src` to `dst` (which must not exist).
    pub fn copy_tree(&self, src: &Path, dst: &Path) -> io::Result<()> {
        self.copy_tree_with(src, dst, true)
    }

    /// [`Copier::copy_tree`], with the early writeback of what it copies on or off
    /// (off under `--sync none`, which syncs nothing, and `--sync file`, which fsyncs
    /// each file after).
    pub fn copy_tree_with(&self, src: &Path, dst: &Path, early_writeback: bool) -> io::Result<()> {
        let sfd = Arc::new(sys::open_dir(src)?);
        let st = sys::fstat(sfd.as_fd())?;
        nix::unistd::mkdir(dst, Mode::from_bits_truncate(0o700)).map_err(sys::errno)?;
        let dfd = Arc::new(sys::open_dir(dst)?);
        // Without reflinks a copy waits on the disk as much as on the CPU, so it runs a
        // few more threads than cores.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = if self.reflinks() { cores } else { (cores * 2).max(4) }.min(MAX_THREADS);
        // A batch holds no open file, only its two directories (shared), so the queue
        // costs no descriptors: one queued file per thread holding two made a pull of 300
        // layers under `ulimit -n 64` fail at layer 230 (test pull_resources).
        let (tx, rx) = sync_channel::<Batch>(threads);
        let rx = Mutex::new(rx);
        // Writes the data copied so far back while the pool copies more: the commit's
        // syncfs then finds little left.
        let flusher = if early_writeback { Some(Flusher::of(dst)?) } else { None };
        let failed = Failed::default();
        let creator = sys::Creator::in_dir(dfd.as_fd())?;
        let walked = std::thread::scope(|scope| {
            for _ in 0..threads {
                let pool = Pool { creator: &creator, flusher: flusher.as_deref() };
                let (rx, failed) = (&rx, &failed);
                scope.spawn(move || loop {
                    let Ok(batch) = rx.lock().unwrap_or_else(|e| e.into_inner()).recv() else { break };
                    for job in &batch.files {
                        if failed.is_set() {
                            break; // drain what is queued
                        }
                        if let Err(e) = self.copy_file(&batch, job, &pool) {
                            failed.set(e);
                        }
                    }
                    if !failed.is_set() {
                        if let Err(e) = batch.dir.release() {
                            failed.set(e);
                        }
                    }
                });
            }
            let walk = Walk { files: tx, failed: &failed };
            let root = Arc::new(Dir { src: sfd.clone(), dst: dfd.clone(), st: None, pending: AtomicUsize::new(1) });
            self.copy_dir(&root, &mut HashMap::new(), &walk)
            // The walk (and its sender) ends here; the pool drains the queue and stops.
        });
        if let Some(e) = failed.error.into_inner().unwrap_or_else(|e| e.into_inner()) {
            return Err(e);
        }
        walked?;
        finish_meta(dfd.as_fd(), &st, sfd.as_fd())?;
        Ok(())
    }

    /// A regular file's data, then its owner, mode, xattrs and times, leaving what it
    /// was created with ([`sys::Creator::made`]).
    fn copy_file(&self, batch: &Batch, job: &FileJob, pool: &Pool<'_>) -> io::Result<()> {
        let st = &job.st;
        let src = File::from(sys::open_at(batch.dir.src.as_fd(), &job.name, OFlag::O_RDONLY, 0)?);
        let dst = File::from(match job.create {
            // Made here, not by the walker: creating a node is most of what a small file
            // costs (ext4 allocates its inode and adds the name to the directory), and the
            // pool does it in parallel where the walker would do it alone.
            Some(mode) => {
                sys::open_at(batch.dir.dst.as_fd(), &job.name, OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL, mode)?
            }
            None => sys::open_at(batch.dir.dst.as_fd(), &job.name, OFlag::O_WRONLY, 0)?,
        });
        self.copy_data(&src, &dst, st, pool)?;
        let xattrs = sys::read_xattrs(XattrTarget::Fd(src.as_raw_fd()))?;
        let meta = NodeMeta::from_stat(st, xattrs);
        sys::set_metadata(Node::Open(dst.as_fd()), &meta, pool.creator.made(creation_mode(st.st_mode)))
    }

    fn copy_dir(
        &self,
        dir: &Arc<Dir>,
        links: &mut HashMap<(u64, u64), (Arc<OwnedFd>, OsString)>,
        walk: &Walk<'_>,
    ) -> io::Result<()> {
        let (src, dst) = (&dir.src, &dir.dst);
        let mut names = sys::read_dir_names(src.as_fd())?;
        names.sort();
        let mut batch = Batch::new(dir);
        for name in names {
            if walk.failed.is_set() {
                return Ok(()); // the pool's error is the one reported
            }
            let st = match sys::lstat_at(src.as_fd(), &name)? {
                Some(st) => st,
                None => continue,
            };
            let kind = sys::file_type(&st);
            let linked = kind != SFlag::S_IFDIR && st.st_nlink > 1;
            if linked {
                if let Some((ldir, lname)) = links.get(&(st.st_dev, st.st_ino)) {
                    nix::unistd::linkat(
                        Some(ldir.as_raw_fd()),
                        lname.as_os_str(),
                        Some(dst.as_raw_fd()),
                        name.as_os_str(),
                        AtFlags::empty(),
                    )
                    .map_err(sys::errno)?;
                    continue;
                }
                links.insert((st.st_dev, st.st_ino), (dst.clone(), name.clone()));
            }
            match kind {
                SFlag::S_IFDIR => {
                    // The files met so far go to the pool before the walk goes down.
                    if !walk.send(&mut batch) {
                        return Ok(());
                    }
                    nix::sys::stat::mkdirat(Some(dst.as_raw_fd()), name.as_os_str(), Mode::from_bits_truncate(0o700))
                        .map_err(sys::errno)?;
                    let s = Arc::new(sys::open_at(src.as_fd(), &name, OFlag::O_DIRECTORY | OFlag::O_RDONLY, 0)?);
                    let d = Arc::new(sys::open_at(dst.as_fd(), &name, OFlag::O_DIRECTORY | OFlag::O_RDONLY, 0)?);
                    let sub = Arc::new(Dir { src: s, dst: d, st: Some(st), pending: AtomicUsize::new(1) });
                    self.copy_dir(&sub, links, walk)?;
                    // Its metadata once the pool has made its files too.
                    sub.release()?;
                }
                SFlag::S_IFREG => {
                    // With its final permission bits, so most files need no chmod.
                    let mode = creation_mode(st.st_mode);
                    let create = if linked {
                        // Made here, so that the next name of the inode can point at it
                        // at once.
                        nix::sys::stat::mknodat(
                            Some(dst.as_raw_fd()),
                            name.as_os_str(),
                            SFlag::S_IFREG,
                            Mode::from_bits_truncate(mode),
                            0,
                        )
                        .map_err(sys::errno)?;
                        None
                    } else {
                        Some(mode)
                    };
                    batch.bytes += st.st_size as u64;
                    batch.files.push(FileJob { name, st, create });
                    if (batch.files.len() >= BATCH_FILES || batch.bytes >= BATCH_BYTES) && !walk.send(&mut batch) {
                        return Ok(());
                    }
                }
                SFlag::S_IFLNK => {
                    let target = nix::fcntl::readlinkat(Some(src.as_raw_fd()), name.as_os_str()).map_err(sys::errno)?;
                    nix::unistd::symlinkat(target.as_os_str(), Some(dst.as_raw_fd()), name.as_os_str())
                        .map_err(sys::errno)?;
                    finish_node(src.as_fd(), dst.as_fd(), &name, &st, true)?;
                }
                SFlag::S_IFCHR | SFlag::S_IFBLK | SFlag::S_IFIFO | SFlag::S_IFSOCK => {
                    nix::sys::stat::mknodat(
                        Some(dst.as_raw_fd()),
                        name.as_os_str(),
                        kind,
                        Mode::from_bits_truncate(0o600),
                        st.st_rdev,
                    )
                    .map_err(sys::errno)?;
                    finish_node(src.as_fd(), dst.as_fd(), &name, &st, false)?;
                }
                _ => {}
            }
        }
        walk.send(&mut batch);
        Ok(())
    }

    /// Copies a file's data (cloned where it can be).
    fn copy_data(&self, src: &File, dst: &File, st: &FileStat, pool: &Pool<'_>) -> io::Result<()> {
        let size = st.st_size as u64;
        if size == 0 {
            return Ok(());
        }
        if self.reflink.load(Ordering::Relaxed) {
            // SAFETY: FICLONE takes the source descriptor as its argument.
            match unsafe { ficlone(dst.as_raw_fd(), src.as_raw_fd() as u64) } {
                Ok(_) => return Ok(()),
                Err(
                    nix::errno::Errno::EOPNOTSUPP
                    | nix::errno::Errno::EXDEV
                    | nix::errno::Errno::EINVAL
                    | nix::errno::Errno::ENOTTY,
                ) => {
                    self.reflink.store(false, Ordering::Relaxed);
                }
                Err(e) => return Err(sys::errno(e)),
            }
        }
        let end = size as i64;
        // A file with as many blocks as bytes has no hole to look for (most files): one
        // copy, without the two lseeks and the ftruncate a sparse one takes.
        if st.st_blocks * 512 >= st.st_size {
            let copied = copy_range(src, dst, 0, end, pool)?;
            if copied < end {
                dst.set_len(size)?; // the file shrank meanwhile: keep the size seen
            }
            return Ok(());
        }
        // Copy data segments only, so holes stay holes.
        let mut off = 0i64;
        while off < end {
            let data = match nix::unistd::lseek(src.as_raw_fd(), off, nix::unistd::Whence::SeekData) {
                Ok(d) => d,
                Err(nix::errno::Errno::ENXIO) => break, // only a hole remains
                Err(e) => return Err(sys::errno(e)),
            };
            let hole = nix::unistd::lseek(src.as_raw_fd(), data, nix::unistd::Whence::SeekHole).map_err(sys::errno)?;
            copy_range(src, dst, data, hole, pool)?;
            off = hole;
        }
        dst.set_len(size)
    }
}

/// Copies bytes `from..to` of `src` to the same offsets of `dst` in the kernel; returns
/// where the copy stopped (before `to` only when the source ended first). A big file
/// goes in pieces, each counted for the flusher as it is copied, so its writeback
/// starts during its copy, not after it.
fn copy_range(src: &File, dst: &File, from: i64, to: i64, pool: &Pool<'_>) -> io::Result<i64> {
    let mut pos = from;
    while pos < to {
        let (mut in_off, mut out_off) = (pos, pos);
        let want = ((to - pos) as usize).min(COPY_PIECE);
        let n = nix::fcntl::copy_file_range(src.as_fd(), Some(&mut in_off), dst.as_fd(), Some(&mut out_off), want)
            .map_err(sys::errno)?;
        if n == 0 {
            break;
        }
        if let Some(f) = pool.flusher {
            f.wrote(n as u64);
        }
        pos += n as i64;
    }
    Ok(pos)
}

/// Most bytes one `copy_file_range` copies.
const COPY_PIECE: usize = 8 << 20;

/// Most files, and most bytes, in one batch for the pool: handing each file over on
/// its own cost a context switch per file (8,800 futex calls for the python3 image).
const BATCH_FILES: usize = 32;
const BATCH_BYTES: u64 = 4 << 20;

/// Most threads a copy uses (with reflinks or on a small disk, more do not help).
const MAX_THREADS: usize = 8;

/// A regular file for the pool to create (with the permission bits given) and fill,
/// or to fill only when the walker created it (a hardlinked one).
struct FileJob {
    name: OsString,
    st: FileStat,
    create: Option<u32>,
}

/// A directory being copied: its metadata is set once the walker has made its
/// subdirectories, links and special files and the pool has made its files, since only
/// making a node changes a directory's times.
struct Dir {
    src: Arc<OwnedFd>,
    dst: Arc<OwnedFd>,
    /// `None` for the copy's root, which `copy_tree` finishes.
    st: Option<FileStat>,
    /// The walker (until it is done with the directory) and the batches not yet copied.
    pending: AtomicUsize,
}

impl Dir {
    /// One of the pending parts is done; the last sets the directory's metadata.
    fn release(&self) -> io::Result<()> {
        match &self.st {
            Some(st) if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 => {
                finish_meta(self.dst.as_fd(), st, self.src.as_fd())
            }
            _ => Ok(()),
        }
    }
}

/// Files of one directory, by name in it.
struct Batch {
    dir: Arc<Dir>,
    files: Vec<FileJob>,
    bytes: u64,
}

impl Batch {
    fn new(dir: &Arc<Dir>) -> Batch {
        Batch { dir: dir.clone(), files: Vec::new(), bytes: 0 }
    }
}

/// What the walker hands work to, and how it learns that the pool failed.
struct Walk<'a> {
    files: SyncSender<Batch>,
    failed: &'a Failed,
}

impl Walk<'_> {
    /// Hands the batch's files (if any) to the pool and leaves it empty; false when the
    /// pool stopped on an error (reported by `copy_tree`).
    fn send(&self, batch: &mut Batch) -> bool {
        if batch.files.is_empty() {
            return true;
        }
        let full = Batch::new(&batch.dir);
        batch.dir.pending.fetch_add(1, Ordering::AcqRel);
        self.files.send(std::mem::replace(batch, full)).is_ok()
    }
}

/// What a pool thread shares with the others.
struct Pool<'a> {
    creator: &'a sys::Creator,
    /// The copy's filesystem's: what the pool copies is counted on it.
    flusher: Option<&'a Flusher>,
}

/// The pool's first error; the flag is read for every node without taking the lock.
#[derive(Default)]
struct Failed {
    flag: AtomicBool,
    error: Mutex<Option<io::Error>>,
}

impl Failed {
    fn is_set(&self) -> bool {
        self.flag.load(Ordering::Relaxed)
    }

    fn set(&self, e: io::Error) {
        self.error.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(e);
        self.flag.store(true, Ordering::Relaxed);
    }
}

/// The permission bits a file of mode `mode` is created with: its own, but
/// owner-writable when not root, as a pool thread may open it for writing after the
/// walker made it (a hardlinked file).
fn creation_mode(mode: u32) -> u32 {
    let mode = mode & 0o777;
    if nix::unistd::geteuid().is_root() {
        mode
    } else {
        mode | 0o600
    }
}

/// Owner, mode, xattrs, times of an open file or directory, from its source.
fn finish_meta(dst: BorrowedFd<'_>, st: &FileStat, src: BorrowedFd<'_>) -> io::Result<()> {
    let xattrs = sys::read_xattrs(XattrTarget::Fd(src.as_raw_fd()))?;
    sys::set_metadata(Node::Open(dst), &NodeMeta::from_stat(st, xattrs), Made::default())
}

/// The same for a symlink or device, reached by name in its directory.
fn finish_node(src: BorrowedFd<'_>, dst: BorrowedFd<'_>, name: &OsStr, st: &FileStat, symlink: bool) -> io::Result<()> {
    let xattrs = sys::read_xattrs(XattrTarget::NoFollow(&sys::proc_path(src, name)))?;
    sys::set_metadata(Node::Named { dir: dst, name, symlink }, &NodeMeta::from_stat(st, xattrs), Made::default())
}
