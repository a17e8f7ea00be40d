//! Replaying a trace in a view: the recorded operations, in order, as fast as they go.
//!
//! Every path is resolved inside the view with `openat2(RESOLVE_IN_ROOT |
//! RESOLVE_NO_SYMLINKS)` (a recorded path never crosses a symlink, see
//! [`crate::trace::Op`]), so a trace cannot write outside the view whatever it says.
//! Where the trace holds no bytes, writes carry synthetic bytes that compress as the
//! recorded ones did. Nodes made are given the recorded mode and owner (replay does not
//! depend on its own umask or user).
//!
//! The first change to a node the view already held before the replay (on overlay,
//! the copy-up) is timed apart as a [`CopyUp`], with the node's size: that is where
//! drivers differ most.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine;
use driver_core::sys;
use nix::fcntl::{AtFlags, FallocateFlags, OFlag, RenameFlags};
use nix::sys::stat::{FchmodatFlags, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, UnlinkatFlags};
use serde::Serialize;

use crate::trace::{NodeKind, Op, Trace};

/// One replayed operation failed.
#[derive(Debug, thiserror::Error)]
#[error("replay of trace line {line} ({op} {path}): {cause}")]
pub struct ReplayError {
    /// The line in the trace file (the header is line 1).
    pub line: usize,
    pub op: &'static str,
    pub path: String,
    pub cause: io::Error,
}

/// What one class of operations cost.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ClassStats {
    pub count: u64,
    /// Bytes written (writes) or allocated (fallocate).
    pub bytes: u64,
    /// System calls made to replay them (opens and closes included).
    pub syscalls: u64,
    pub nanos: u64,
}

/// The first change to a node the view held before the replay.
#[derive(Clone, Debug, Serialize)]
pub struct CopyUp {
    /// The class of the operation that made it ([`Op::class`]).
    pub class: &'static str,
    pub path: String,
    /// "file", "dir", "symlink" or "other".
    pub kind: &'static str,
    /// The node's size before the change.
    pub size: u64,
    pub nanos: u64,
}

/// What a replay did and what it cost.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ReplayStats {
    /// Per operation class ([`crate::trace::CLASSES`]).
    pub classes: BTreeMap<&'static str, ClassStats>,
    /// Operations that were the first change to a node from below, in trace order.
    pub copy_ups: Vec<CopyUp>,
    pub ops: u64,
    pub bytes: u64,
    pub syscalls: u64,
    /// Wall time of the whole replay.
    pub nanos: u64,
}

impl ReplayStats {
    pub fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.nanos)
    }

    /// Time spent in copy-ups, in total.
    pub fn copy_up_nanos(&self) -> u64 {
        self.copy_ups.iter().map(|c| c.nanos).sum()
    }
}

/// Replays `trace` in the view mounted at `view_root`.
pub fn replay(view_root: &Path, trace: &Trace) -> Result<ReplayStats, ReplayError> {
    let root =
        sys::open_dir(view_root).map_err(|cause| ReplayError { line: 0, op: "open", path: String::new(), cause })?;
    let mut r = Replayer { root, fds: HashMap::new(), fresh: HashSet::new(), synth: Synth::default(), syscalls: 0 };
    let mut stats = ReplayStats::default();
    let start = Instant::now();
    for (i, rec) in trace.records.iter().enumerate() {
        let op = &rec.op;
        let fail = |cause: io::Error| ReplayError { line: i + 2, op: op.class(), path: op.paths().join(" -> "), cause };
        // A first change to a node from below: found before the clock starts.
        let first = r.first_touch(op).map_err(fail)?;
        r.syscalls = 0;
        let t0 = Instant::now();
        let bytes = r.apply(op).map_err(fail)?;
        let nanos = t0.elapsed().as_nanos() as u64;
        r.after(op);
        let c = stats.classes.entry(op.class()).or_default();
        c.count += 1;
        c.bytes += bytes;
        c.syscalls += r.syscalls;
        c.nanos += nanos;
        stats.ops += 1;
        stats.bytes += bytes;
        stats.syscalls += r.syscalls;
        if let Some((path, kind, size)) = first {
            stats.copy_ups.push(CopyUp { class: op.class(), path, kind, size, nanos });
        }
    }
    // The descriptors still open are closed inside the measure, as the run closed them.
    r.syscalls = r.fds.len() as u64;
    r.fds.clear();
    stats.syscalls += r.syscalls;
    stats.nanos = start.elapsed().as_nanos() as u64;
    Ok(stats)
}

struct Replayer {
    root: OwnedFd,
    /// Files kept open for writing, by path (closed when a rename or an unlink may
    /// have moved what the path names).
    fds: HashMap<String, File>,
    /// Paths that name nodes the replay made or changed already (no copy-up left).
    fresh: HashSet<String>,
    synth: Synth,
    syscalls: u64,
}

fn split(path: &str) -> (&Path, &OsStr) {
    match path.rsplit_once('/') {
        Some((dir, name)) => (Path::new(dir), OsStr::new(name)),
        None => (Path::new(""), OsStr::new(path)),
    }
}

fn err(e: nix::Error) -> io::Error {
    sys::errno(e)
}

fn kind_of(st: &nix::sys::stat::FileStat) -> &'static str {
    match SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT {
        SFlag::S_IFREG => "file",
        SFlag::S_IFDIR => "dir",
        SFlag::S_IFLNK => "symlink",
        _ => "other",
    }
}

impl Replayer {
    /// The directory holding `path`'s last component, confined to the view.
    fn parent<'p>(&mut self, path: &'p str) -> io::Result<(OwnedFd, &'p OsStr)> {
        let (dir, name) = split(path);
        self.syscalls += 1;
        Ok((sys::open_in(self.root.as_fd(), dir, OFlag::O_PATH | OFlag::O_DIRECTORY)?, name))
    }

    fn lstat(&self, path: &str) -> io::Result<Option<nix::sys::stat::FileStat>> {
        let (dir, name) = split(path);
        match sys::open_in(self.root.as_fd(), dir, OFlag::O_PATH | OFlag::O_DIRECTORY) {
            Ok(d) => sys::lstat_at(d.as_fd(), name),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// An open descriptor for writing to `path` (kept for the next writes).
    fn writable(&mut self, path: &str) -> io::Result<&File> {
        if !self.fds.contains_key(path) {
            self.syscalls += 1;
            let fd = sys::open_in(self.root.as_fd(), Path::new(path), OFlag::O_WRONLY)?;
            self.fds.insert(path.to_string(), File::from(fd));
        }
        Ok(&self.fds[path])
    }

    /// Whether `op` is the first change to a node the view held before: its path,
    /// type and size.
    fn first_touch(&self, op: &Op) -> io::Result<Option<(String, &'static str, u64)>> {
        let path = match op {
            Op::Open { path, .. }
            | Op::Write { path, .. }
            | Op::Truncate { path, .. }
            | Op::Fallocate { path, .. }
            | Op::Chmod { path, .. }
            | Op::Chown { path, .. }
            | Op::Utimes { path, .. }
            | Op::Setxattr { path, .. }
            | Op::Removexattr { path, .. } => path,
            Op::Link { from, .. } | Op::Rename { from, .. } => from,
            _ => return Ok(None),
        };
        if self.fresh.contains(path) {
            return Ok(None);
        }
        Ok(self.lstat(path)?.map(|st| (path.clone(), kind_of(&st), st.st_size as u64)))
    }

    /// Keeps `fresh` in step with the names `op` made, moved or removed.
    fn after(&mut self, op: &Op) {
        match op {
            Op::Rename { from, to, flags } => {
                let moved = |p: &str, a: &str, b: &str| -> Option<String> {
                    if p == a {
                        Some(b.to_string())
                    } else {
                        p.strip_prefix(a).filter(|rest| rest.starts_with('/')).map(|rest| format!("{b}{rest}"))
                    }
                };
                let exchange = flags.iter().any(|f| f == "exchange");
                let old: Vec<String> = self.fresh.drain().collect();
                for p in old {
                    let np = match moved(&p, from, to) {
                        Some(n) => n,
                        None if exchange => moved(&p, to, from).unwrap_or(p),
                        // What the rename replaced is gone.
                        None if moved(&p, to, to).is_some() => continue,
                        None => p,
                    };
                    self.fresh.insert(np);
                }
                self.fresh.insert(to.clone());
                if exchange {
                    self.fresh.insert(from.clone());
                }
            }
            Op::Unlink { path } | Op::Rmdir { path } => {
                self.fresh.remove(path);
            }
            Op::Link { from, to } => {
                self.fresh.insert(from.clone());
                self.fresh.insert(to.clone());
            }
            Op::Sync => {}
            other => {
                if let Some(p) = other.paths().first() {
                    self.fresh.insert(p.to_string());
                }
            }
        }
    }

    /// Gives a node made by the replay the recorded mode and owner, when the kernel
    /// (umask, setgid directory, replay's own user) made it otherwise.
    fn settle(&mut self, dir: BorrowedFd<'_>, name: &OsStr, mode: u32, uid: u32, gid: u32) -> io::Result<()> {
        self.syscalls += 1;
        let Some(st) = sys::lstat_at(dir, name)? else { return Err(io::Error::from_raw_os_error(libc::ENOENT)) };
        if (st.st_uid, st.st_gid) != (uid, gid) {
            self.syscalls += 1;
            nix::unistd::fchownat(
                Some(dir.as_raw_fd()),
                name,
                Some(Uid::from_raw(uid)),
                Some(Gid::from_raw(gid)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(err)?;
        }
        let is_link = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK;
        // After the chown, which clears set-id bits.
        if !is_link && (st.st_mode & 0o7777 != mode || (st.st_uid, st.st_gid) != (uid, gid) && mode & 0o6000 != 0) {
            self.syscalls += 1;
            nix::sys::stat::fchmodat(
                Some(dir.as_raw_fd()),
                name,
                Mode::from_bits_truncate(mode),
                FchmodatFlags::FollowSymlink,
            )
            .map_err(err)?;
        }
        Ok(())
    }

    /// Performs one operation; the bytes it wrote or allocated.
    fn apply(&mut self, op: &Op) -> io::Result<u64> {
        match op {
            Op::Open { path, flags, mode, uid, gid } => {
                let has = |f: &str| flags.iter().any(|x| x == f);
                let mut of = if has("rdwr") {
                    OFlag::O_RDWR
                } else if has("wronly") {
                    OFlag::O_WRONLY
                } else {
                    OFlag::O_RDONLY
                };
                for (name, f) in [("creat", OFlag::O_CREAT), ("trunc", OFlag::O_TRUNC)] {
                    if has(name) {
                        of |= f;
                    }
                }
                self.fds.remove(path);
                let (dir, name) = self.parent(path)?;
                self.syscalls += 2;
                let fd = sys::open_at(dir.as_fd(), name, of, mode.0)?;
                drop(fd);
                if has("creat") {
                    self.settle(dir.as_fd(), name, mode.0, *uid, *gid)?;
                }
                Ok(0)
            }
            Op::Write { path, offset, len, z, data, .. } => {
                let bytes = match data {
                    Some(b64) => Some(
                        base64::engine::general_purpose::STANDARD
                            .decode(b64)
                            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("data: {e}")))?,
                    ),
                    None => None,
                };
                let ratio = z.unwrap_or(1.0);
                let buf_len = bytes.as_ref().map(|b| b.len() as u64).unwrap_or(*len);
                let mut done = 0u64;
                while done < buf_len {
                    let n = (buf_len - done).min(1 << 20) as usize;
                    let chunk: &[u8] = match &bytes {
                        Some(b) => &b[done as usize..done as usize + n],
                        None => &self.synth.bytes(ratio)[..n],
                    };
                    let chunk = chunk.to_vec();
                    let f = self.writable(path)?;
                    f.write_all_at(&chunk, offset + done)?;
                    self.syscalls += 1;
                    done += n as u64;
                }
                Ok(buf_len)
            }
            Op::Truncate { path, len } => {
                let f = self.writable(path)?;
                f.set_len(*len)?;
                self.syscalls += 1;
                Ok(0)
            }
            Op::Fallocate { path, mode, offset, len } => {
                let mut flags = FallocateFlags::empty();
                for m in mode {
                    flags |= match m.as_str() {
                        "keep_size" => FallocateFlags::FALLOC_FL_KEEP_SIZE,
                        "punch_hole" => FallocateFlags::FALLOC_FL_PUNCH_HOLE,
                        "zero_range" => FallocateFlags::FALLOC_FL_ZERO_RANGE,
                        "collapse_range" => FallocateFlags::FALLOC_FL_COLLAPSE_RANGE,
                        "insert_range" => FallocateFlags::FALLOC_FL_INSERT_RANGE,
                        "unshare_range" => FallocateFlags::FALLOC_FL_UNSHARE_RANGE,
                        _ => return Err(io::Error::new(io::ErrorKind::InvalidData, format!("fallocate mode {m}"))),
                    };
                }
                let f = self.writable(path)?;
                nix::fcntl::fallocate(f.as_raw_fd(), flags, *offset as i64, *len as i64).map_err(err)?;
                self.syscalls += 1;
                Ok(if flags.contains(FallocateFlags::FALLOC_FL_PUNCH_HOLE) { 0 } else { *len })
            }
            Op::Mkdir { path, mode, uid, gid } => {
                let (dir, name) = self.parent(path)?;
                self.syscalls += 1;
                nix::sys::stat::mkdirat(Some(dir.as_raw_fd()), name, Mode::from_bits_truncate(mode.0)).map_err(err)?;
                self.settle(dir.as_fd(), name, mode.0, *uid, *gid)?;
                Ok(0)
            }
            Op::Rmdir { path } | Op::Unlink { path } => {
                self.fds.remove(path);
                let how =
                    if matches!(op, Op::Rmdir { .. }) { UnlinkatFlags::RemoveDir } else { UnlinkatFlags::NoRemoveDir };
                let (dir, name) = self.parent(path)?;
                self.syscalls += 1;
                nix::unistd::unlinkat(Some(dir.as_raw_fd()), name, how).map_err(err)?;
                Ok(0)
            }
            Op::Rename { from, to, flags } => {
                // What the names meant has moved: no kept descriptor may be used by name.
                self.syscalls += self.fds.len() as u64;
                self.fds.clear();
                let mut rf = RenameFlags::empty();
                for f in flags {
                    rf |= match f.as_str() {
                        "noreplace" => RenameFlags::RENAME_NOREPLACE,
                        "exchange" => RenameFlags::RENAME_EXCHANGE,
                        "whiteout" => RenameFlags::RENAME_WHITEOUT,
                        _ => return Err(io::Error::new(io::ErrorKind::InvalidData, format!("rename flag {f}"))),
                    };
                }
                let (a, an) = self.parent(from)?;
                let (b, bn) = self.parent(to)?;
                self.syscalls += 1;
                nix::fcntl::renameat2(Some(a.as_raw_fd()), an, Some(b.as_raw_fd()), bn, rf).map_err(err)?;
                Ok(0)
            }
            Op::Link { from, to } => {
                let (a, an) = self.parent(from)?;
                let (b, bn) = self.parent(to)?;
                self.syscalls += 1;
                nix::unistd::linkat(Some(a.as_raw_fd()), an, Some(b.as_raw_fd()), bn, AtFlags::empty()).map_err(err)?;
                Ok(0)
            }
            Op::Symlink { target, path, uid, gid } => {
                let (dir, name) = self.parent(path)?;
                self.syscalls += 1;
                nix::unistd::symlinkat(target.as_str(), Some(dir.as_raw_fd()), name).map_err(err)?;
                self.settle(dir.as_fd(), name, 0o777, *uid, *gid)?;
                Ok(0)
            }
            Op::Mknod { path, kind, mode, rdev, uid, gid } => {
                let k = match kind {
                    NodeKind::File => SFlag::S_IFREG,
                    NodeKind::Fifo => SFlag::S_IFIFO,
                    NodeKind::Char => SFlag::S_IFCHR,
                    NodeKind::Block => SFlag::S_IFBLK,
                    NodeKind::Socket => SFlag::S_IFSOCK,
                };
                let (dir, name) = self.parent(path)?;
                self.syscalls += 1;
                nix::sys::stat::mknodat(Some(dir.as_raw_fd()), name, k, Mode::from_bits_truncate(mode.0), *rdev)
                    .map_err(err)?;
                self.settle(dir.as_fd(), name, mode.0, *uid, *gid)?;
                Ok(0)
            }
            Op::Chmod { path, mode } => {
                let (dir, name) = self.parent(path)?;
                self.syscalls += 1;
                nix::sys::stat::fchmodat(
                    Some(dir.as_raw_fd()),
                    name,
                    Mode::from_bits_truncate(mode.0),
                    FchmodatFlags::FollowSymlink,
                )
                .map_err(err)?;
                Ok(0)
            }
            Op::Chown { path, uid, gid } => {
                let (dir, name) = self.parent(path)?;
                self.syscalls += 1;
                nix::unistd::fchownat(
                    Some(dir.as_raw_fd()),
                    name,
                    Some(Uid::from_raw(*uid)),
                    Some(Gid::from_raw(*gid)),
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .map_err(err)?;
                Ok(0)
            }
            Op::Utimes { path, atime, mtime } => {
                let (dir, name) = self.parent(path)?;
                self.syscalls += 1;
                nix::sys::stat::utimensat(
                    Some(dir.as_raw_fd()),
                    name,
                    &TimeSpec::new(atime[0], atime[1]),
                    &TimeSpec::new(mtime[0], mtime[1]),
                    UtimensatFlags::NoFollowSymlink,
                )
                .map_err(err)?;
                Ok(0)
            }
            Op::Setxattr { path, name: xname, value } => {
                let value = base64::engine::general_purpose::STANDARD
                    .decode(value)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("xattr value: {e}")))?;
                let (dir, name) = self.parent(path)?;
                self.syscalls += 1;
                sys::set_xattr(sys::XattrTarget::NoFollow(&sys::proc_path(dir.as_fd(), name)), xname, &value)?;
                Ok(0)
            }
            Op::Removexattr { path, name: xname } => {
                let (dir, name) = self.parent(path)?;
                self.syscalls += 1;
                sys::remove_xattr(sys::XattrTarget::NoFollow(&sys::proc_path(dir.as_fd(), name)), xname)?;
                Ok(0)
            }
            Op::Fsync { path, data_only } => {
                let f = match self.fds.get(path) {
                    Some(f) => f.try_clone()?,
                    None => {
                        self.syscalls += 2;
                        File::from(sys::open_in(self.root.as_fd(), Path::new(path), OFlag::O_RDONLY)?)
                    }
                };
                self.syscalls += 1;
                if *data_only {
                    f.sync_data()?
                } else {
                    f.sync_all()?
                }
                Ok(0)
            }
            Op::SyncFileRange { path, offset, len } => {
                let f = self.writable(path)?;
                // SAFETY: a plain syscall on a descriptor we own; nix has no wrapper.
                let rc = unsafe {
                    libc::sync_file_range(
                        f.as_raw_fd(),
                        *offset as i64,
                        *len as i64,
                        libc::SYNC_FILE_RANGE_WAIT_BEFORE
                            | libc::SYNC_FILE_RANGE_WRITE
                            | libc::SYNC_FILE_RANGE_WAIT_AFTER,
                    )
                };
                if rc < 0 {
                    return Err(io::Error::last_os_error());
                }
                self.syscalls += 1;
                Ok(0)
            }
            Op::Sync => {
                self.syscalls += 1;
                nix::unistd::syncfs(self.root.as_raw_fd()).map_err(err)?;
                Ok(0)
            }
        }
    }
}

/// Synthetic bytes of a given compressibility: in every 256-byte block, a share of
/// pseudo-random bytes and zeros for the rest, so zstd keeps about that share.
#[derive(Default)]
struct Synth {
    buffers: HashMap<u32, Vec<u8>>,
}

impl Synth {
    const BUCKETS: f32 = 32.0;

    fn bytes(&mut self, ratio: f32) -> &[u8] {
        let bucket = (ratio.clamp(0.0, 1.0) * Self::BUCKETS).round() as u32;
        self.buffers.entry(bucket).or_insert_with(|| {
            let mut rng = fastrand::Rng::with_seed(u64::from(bucket) + 1);
            let random = (256.0 * bucket as f32 / Self::BUCKETS).round() as usize;
            let mut v = vec![0u8; 1 << 20];
            for block in v.chunks_mut(256) {
                let n = random.min(block.len());
                rng.fill(&mut block[..n]);
            }
            v
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_bytes_compress_as_asked() {
        let mut s = Synth::default();
        for want in [0.0f32, 0.25, 0.5, 0.9, 1.0] {
            let buf = s.bytes(want).to_vec();
            let got = zstd::bulk::compress(&buf, 1).unwrap().len() as f32 / buf.len() as f32;
            assert!((got - want).abs() < 0.08, "asked {want}, zstd kept {got}");
        }
    }
}
