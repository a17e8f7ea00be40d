//! Simulated power cuts at the block layer: a scratch filesystem whose disk is a file
//! served through a small FUSE filesystem ([`RecordedDisk`]) that logs every write and
//! every flush the loop device sends, and, from that log, the disk a power loss at
//! any point would have left ([`Recording::replay`]): every write up to the last
//! completed flush, plus a seeded random subset of the writes after it, each torn at
//! 4 KiB. The method of LazyFS and CrashMonkey, one layer lower, because this kernel
//! has no device-mapper (dm-log-writes, dm-flakey), nbd or ublk, but has FUSE and loop
//! devices.
//!
//! ```text
//!   mkfs on disk.img ─► copy: base.img ─► FUSE serves disk.img as <served>/disk
//!   ─► loop device on <served>/disk ─► mount ─► the test's commands, with marks
//!   ─► log: Write / Zero / Flush / Mark, in the order the loop device sent them
//!   cut point k: base + writes before the last Flush before k + subset of the rest
//!   ─► loop device on that image ─► mount (journal recovery) ─► the test checks it
//! ```
//!
//! Why the log sees the flushes: the loop driver (drivers/block/loop.c, `lo_req_flush`)
//! turns a REQ_OP_FLUSH into `vfs_fsync` of its backing file, which FUSE sends as
//! FUSE_FSYNC; the loop queue announces a volatile write cache without FUA, so the
//! block layer turns a REQ_FUA write (a journal commit block) into the write and a
//! flush after it. Checked on 6.18 (`a_synced_write_is_followed_by_a_flush` below: a
//! file written and fsynced on the mounted ext4 shows its data, then a flush, in the
//! log); without that a power cut would look like it loses fsynced data.
//!
//! The FUSE filesystem answers writes write-through (no writeback cache is asked for),
//! one request at a time (one session thread), so the log's order is the order in
//! which the loop device's requests completed: a flush covers every write logged
//! before it.
//!
//! Mounting FUSE as root takes /dev/fuse and the `fuse` module only: `fuser` mounts
//! through mount(2) itself, and needs `fusermount3` (Debian's `fuse3`) only for a
//! user that may not mount.

use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, INodeNo, LockOwner, OpenFlags, ReplyAttr, ReplyData, ReplyEmpty,
    ReplyEntry, ReplyWrite, Request, WriteFlags,
};
use strata_scratch::{FsKind, ScratchFs};

/// The granularity a write tears at: a sector of a 4Kn disk.
pub const SECTOR: u64 = 4096;

/// One thing the loop device (or the test) did, in order.
#[derive(Clone, Debug)]
pub enum Event {
    /// Bytes written at `off`.
    Write { off: u64, data: Arc<[u8]> },
    /// A range zeroed or discarded (fallocate: punch hole, zero range).
    Zero { off: u64, len: u64 },
    /// A completed flush: every event before it is on the disk.
    Flush,
    /// A mark the test set (a command began or ended).
    Mark(String),
}

type Log = Arc<Mutex<Vec<Event>>>;

const DISK_INO: INodeNo = INodeNo(2);
const DISK_NAME: &str = "disk";

/// The FUSE filesystem: one file, `disk`, backed by an image file; every write,
/// zeroing and fsync logged.
struct LoggingDisk {
    backing: File,
    size: u64,
    log: Log,
}

impl LoggingDisk {
    fn attr(&self, ino: INodeNo) -> Option<FileAttr> {
        let (kind, perm, size, nlink) = match ino {
            INodeNo::ROOT => (FileType::Directory, 0o755, 0, 2),
            DISK_INO => (FileType::RegularFile, 0o600, self.size, 1),
            _ => return None,
        };
        let t = SystemTime::UNIX_EPOCH;
        Some(FileAttr {
            ino,
            size,
            blocks: size.div_ceil(512),
            atime: t,
            mtime: t,
            ctime: t,
            crtime: t,
            kind,
            perm,
            nlink,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: SECTOR as u32,
            flags: 0,
        })
    }

    fn push(&self, e: Event) {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).push(e);
    }
}

const TTL: Duration = Duration::from_secs(3600);

impl Filesystem for LoggingDisk {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match (parent, name.to_str()) {
            (INodeNo::ROOT, Some(DISK_NAME)) => {
                reply.entry(&TTL, &self.attr(DISK_INO).expect("disk"), fuser::Generation(0))
            }
            _ => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr(ino) {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let len = (size as u64).min(self.size.saturating_sub(offset)) as usize;
        let mut buf = vec![0u8; len];
        match self.backing.read_exact_at(&mut buf, offset) {
            Ok(()) => reply.data(&buf),
            Err(_) => reply.error(Errno::EIO),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        if offset + data.len() as u64 > self.size {
            return reply.error(Errno::ENOSPC);
        }
        match self.backing.write_all_at(data, offset) {
            Ok(()) => {
                self.push(Event::Write { off: offset, data: data.into() });
                reply.written(data.len() as u32)
            }
            Err(_) => reply.error(Errno::EIO),
        }
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        reply.ok()
    }

    /// The loop device's flush (`vfs_fsync` of its backing file).
    fn fsync(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        self.push(Event::Flush);
        reply.ok()
    }

    /// The loop device's discard and write-zeroes (punch hole, zero range): the range
    /// reads as zeros after.
    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        if mode & (libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_ZERO_RANGE) == 0 {
            return reply.ok(); // an allocation: the image is sparse, nothing to do
        }
        let len = length.min(self.size.saturating_sub(offset));
        match zero(&self.backing, offset, len) {
            Ok(()) => {
                self.push(Event::Zero { off: offset, len });
                reply.ok()
            }
            Err(_) => reply.error(Errno::EIO),
        }
    }
}

/// Zeros `len` bytes at `off` (a hole punched: reads as zeros).
fn zero(f: &File, off: u64, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    // SAFETY: fallocate on an open descriptor with plain integer arguments.
    if unsafe { libc::fallocate(f.as_raw_fd(), mode, off as i64, len as i64) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Copies `src` to `dst` data segment by data segment (`SEEK_DATA`/`SEEK_HOLE`), so a
/// mostly empty disk image costs what it holds, not its size.
pub fn sparse_copy(src: &Path, dst: &Path) -> io::Result<()> {
    use nix::unistd::{lseek, Whence};
    use std::os::fd::AsRawFd;
    let from = File::open(src)?;
    let to = OpenOptions::new().write(true).create(true).truncate(true).open(dst)?;
    let len = from.metadata()?.len();
    to.set_len(len)?;
    let fd = from.as_raw_fd();
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0i64;
    while (pos as u64) < len {
        let start = match lseek(fd, pos, Whence::SeekData) {
            Ok(s) => s,
            Err(nix::errno::Errno::ENXIO) => break,
            Err(e) => return Err(e.into()),
        };
        let end = lseek(fd, start, Whence::SeekHole)?;
        let mut at = start as u64;
        while at < end as u64 {
            let n = ((end as u64 - at) as usize).min(buf.len());
            from.read_exact_at(&mut buf[..n], at)?;
            to.write_all_at(&buf[..n], at)?;
            at += n as u64;
        }
        pos = end;
    }
    Ok(())
}

/// A mounted scratch filesystem whose disk's every write and flush is logged.
pub struct RecordedDisk {
    kind: FsKind,
    /// The filesystem on the loop device over the FUSE file: dropped first.
    fs: Option<ScratchFs>,
    session: Option<fuser::BackgroundSession>,
    log: Log,
    /// Taken by [`RecordedDisk::finish`] (the recording keeps it).
    work: Option<strata_scratch::WorkDir>,
}

impl RecordedDisk {
    /// A fresh filesystem of `kind` and `size` bytes, mounted with the mount data
    /// `options`; logging starts after mkfs.
    pub fn new(kind: FsKind, size: u64, options: &str) -> io::Result<RecordedDisk> {
        // Each cut point copies and mounts a disk image: in memory when there is a
        // tmpfs, not through the page cache of a busy disk.
        let shm = Path::new("/dev/shm");
        let work = if shm.is_dir() {
            strata_scratch::work_dir_in(shm, "strata-powercut-")?
        } else {
            strata_scratch::work_dir("strata-powercut-")?
        };
        let disk = work.path().join("disk.img");
        ScratchFs::make_image(kind, &disk, size)?;
        sparse_copy(&disk, &work.path().join("base.img"))?;
        let served = work.path().join("served");
        std::fs::create_dir(&served)?;
        let log: Log = Arc::default();
        let backing = OpenOptions::new().read(true).write(true).open(&disk)?;
        let fs = LoggingDisk { backing, size, log: log.clone() };
        let mut cfg = fuser::Config::default();
        cfg.mount_options = vec![fuser::MountOption::FSName("strata-powercut".into())];
        let session = fuser::spawn_mount(fs, &served, &cfg)
            .map_err(|e| io::Error::other(format!("FUSE mount on {} (is /dev/fuse there?): {e}", served.display())))?;
        let mut me = RecordedDisk { kind, fs: None, session: Some(session), log, work: Some(work) };
        me.fs = Some(ScratchFs::mount_image(kind, &served.join(DISK_NAME), options)?);
        Ok(me)
    }

    /// Where the filesystem is mounted.
    pub fn path(&self) -> &Path {
        self.fs.as_ref().expect("mounted").path()
    }

    /// Sets a mark in the log (after whatever the disk was sent so far).
    pub fn mark(&self, what: impl Into<String>) {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).push(Event::Mark(what.into()));
    }

    /// Events logged so far.
    pub fn events(&self) -> usize {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Unmounts (the unmount's own writes are logged too) and returns the log.
    pub fn finish(mut self) -> io::Result<Recording> {
        self.stop();
        let events = std::mem::take(&mut *self.log.lock().unwrap_or_else(|e| e.into_inner()));
        let work = self.work.take().expect("not finished yet");
        let base = work.path().join("base.img");
        Ok(Recording { kind: self.kind, base, events, work })
    }

    fn stop(&mut self) {
        drop(self.fs.take());
        // The loop device lets go of the FUSE file a moment after it is detached (its
        // autoclear runs as its last user closes it): until then the FUSE unmount is
        // EBUSY. Unmounted here, with retries, so that the session thread ends.
        let mut clean = false;
        if let Some(w) = &self.work {
            let served = w.path().join("served");
            for i in 0..=100 {
                if !driver_core::sys::is_mount_point(&served) {
                    break;
                }
                let flags = if i == 100 { nix::mount::MntFlags::MNT_DETACH } else { nix::mount::MntFlags::empty() };
                match nix::mount::umount2(&served, flags) {
                    Ok(()) => clean = i < 100,
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
        if let Some(s) = self.session.take() {
            // Unmounted: the session's thread ends (its reads see the connection gone).
            // Else dropping the session unmounts it.
            if clean {
                if let Err(e) = s.join() {
                    eprintln!("powercut: the FUSE session: {e}");
                }
            }
        }
    }
}

impl Drop for RecordedDisk {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A recorded log and the disk it started from.
pub struct Recording {
    kind: FsKind,
    base: PathBuf,
    pub events: Vec<Event>,
    work: strata_scratch::WorkDir,
}

/// What one cut point kept.
#[derive(Clone, Debug)]
pub struct Cut {
    /// Events before this index happened; none after.
    pub at: usize,
    /// Events before this index (the last flush before `at`, +1) are all on the disk.
    pub durable: usize,
    /// 4 KiB sectors of the writes after the flush that reached the disk, and that did not.
    pub kept: usize,
    pub lost: usize,
    /// The marks before `at`, in order.
    pub marks: Vec<String>,
}

impl Recording {
    pub fn flushes(&self) -> usize {
        self.events.iter().filter(|e| matches!(e, Event::Flush)).count()
    }

    /// Bytes written in the log.
    pub fn bytes_written(&self) -> u64 {
        self.events.iter().map(|e| if let Event::Write { data, .. } = e { data.len() as u64 } else { 0 }).sum()
    }

    /// The index of mark `what` in the log.
    pub fn mark_index(&self, what: &str) -> Option<usize> {
        self.events.iter().position(|e| matches!(e, Event::Mark(m) if m == what))
    }

    /// `n` cut points in `from..to` (event indices), seeded: half anywhere, half just
    /// before or after a flush (where a sync's promise begins), all distinct.
    pub fn cut_points(&self, from: usize, to: usize, n: usize, rng: &mut fastrand::Rng) -> Vec<usize> {
        let to = to.min(self.events.len() + 1);
        if from >= to {
            return Vec::new();
        }
        let flushes: Vec<usize> =
            (from..to.min(self.events.len())).filter(|&i| matches!(self.events[i], Event::Flush)).collect();
        let mut out = std::collections::BTreeSet::new();
        let mut tries = 0;
        while out.len() < n.min(to - from) && tries < 100 * n {
            tries += 1;
            let at = if tries % 2 == 0 && !flushes.is_empty() {
                // Just after the flush (its promise holds), or just before it (not yet).
                flushes[rng.usize(..flushes.len())] + rng.usize(0..=1)
            } else {
                rng.usize(from..to)
            };
            out.insert(at.clamp(from, to - 1));
        }
        out.into_iter().collect()
    }

    /// Builds, for each cut point (in any order), the disk a power loss there would
    /// have left, mounts it with `options` (journal recovery included) and hands it to
    /// `check`. The sectors kept after the last flush are drawn from `seed` and the
    /// cut point. One image is advanced from flush to flush, so each cut point costs a
    /// copy of what the disk holds, not a replay of the whole log.
    pub fn replay(
        &self,
        cuts: &[usize],
        seed: u64,
        options: &str,
        mut check: impl FnMut(&Cut, &Path),
    ) -> io::Result<()> {
        let mut cuts = cuts.to_vec();
        cuts.sort_unstable();
        cuts.dedup();
        let durable_path = self.work.path().join("durable.img");
        let crash_path = self.work.path().join("crash.img");
        sparse_copy(&self.base, &durable_path)?;
        let durable = OpenOptions::new().read(true).write(true).open(&durable_path)?;
        let mut applied = 0;
        for at in cuts {
            let at = at.min(self.events.len());
            let upto = self.events[..at].iter().rposition(|e| matches!(e, Event::Flush)).map_or(0, |i| i + 1);
            for e in &self.events[applied.min(upto)..upto] {
                apply(&durable, e, &mut |_| true)?;
            }
            applied = applied.max(upto);
            durable.sync_data()?;
            sparse_copy(&durable_path, &crash_path)?;
            let crash = OpenOptions::new().read(true).write(true).open(&crash_path)?;
            let mut rng = fastrand::Rng::with_seed(seed ^ (at as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let (mut kept, mut lost) = (0, 0);
            for e in &self.events[upto..at] {
                apply(&crash, e, &mut |_| {
                    let keep = rng.bool();
                    if keep {
                        kept += 1
                    } else {
                        lost += 1
                    }
                    keep
                })?;
            }
            drop(crash);
            let marks = self.events[..at]
                .iter()
                .filter_map(|e| if let Event::Mark(m) = e { Some(m.clone()) } else { None })
                .collect();
            let cut = Cut { at, durable: upto, kept, lost, marks };
            let mounted = ScratchFs::mount_image(self.kind, &crash_path, options)
                .map_err(|e| io::Error::other(format!("cut point {at}: the disk does not mount: {e}")))?;
            check(&cut, mounted.path());
            drop(mounted);
        }
        let _ = std::fs::remove_file(&crash_path);
        Ok(())
    }
}

/// Applies one event to an image, sector by sector, each sector only if `keep` says so.
fn apply(image: &File, e: &Event, keep: &mut dyn FnMut(u64) -> bool) -> io::Result<()> {
    match e {
        Event::Write { off, data } => {
            let end = off + data.len() as u64;
            let mut at = *off;
            while at < end {
                let next = ((at / SECTOR + 1) * SECTOR).min(end);
                if keep(at) {
                    image.write_all_at(&data[(at - off) as usize..(next - off) as usize], at)?;
                }
                at = next;
            }
        }
        Event::Zero { off, len } => {
            let end = off + len;
            let mut at = *off;
            while at < end {
                let next = ((at / SECTOR + 1) * SECTOR).min(end);
                if keep(at) {
                    image.write_all_at(&vec![0u8; (next - at) as usize], at)?;
                }
                at = next;
            }
        }
        Event::Flush | Event::Mark(_) => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What this module's model rests on: on this kernel the loop device passes a
    /// flush to its backing file (FUSE_FSYNC), after the writes it covers.
    #[test]
    fn a_synced_write_is_followed_by_a_flush() {
        if !strata_scratch::privileged("the power-cut disk (FUSE, loop devices, mount)") {
            return;
        }
        let disk = RecordedDisk::new(FsKind::Ext4, 64 << 20, "").unwrap();
        let data = vec![0x5au8; 3 * SECTOR as usize];
        let before = disk.events();
        let mut f = File::create(disk.path().join("f")).unwrap();
        io::Write::write_all(&mut f, &data).unwrap();
        f.sync_all().unwrap();
        disk.mark("synced");
        let rec = disk.finish().unwrap();
        let synced = rec.mark_index("synced").unwrap();
        let ev = &rec.events[before..synced];
        let wrote =
            ev.iter().position(|e| matches!(e, Event::Write { data: d, .. } if d.windows(8).any(|w| w == [0x5a; 8])));
        let wrote = wrote.expect("the file's data was written to the disk before fsync returned");
        assert!(ev[wrote..].iter().any(|e| matches!(e, Event::Flush)), "a flush after the data: {} events", ev.len());
        // A cut right after the fsync keeps the file; one before anything was written
        // has no file at all.
        let mut seen = Vec::new();
        rec.replay(&[before, synced], 7, "", |cut, root| {
            seen.push((cut.at, std::fs::read(root.join("f")).ok()));
        })
        .unwrap();
        assert_eq!(seen, vec![(before, None), (synced, Some(data))]);
    }
}
