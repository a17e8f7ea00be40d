//! What the bench records beside its timings for the regression gate (docs/ci.md):
//!
//! - **exact figures**, per phase: bytes the scratch filesystem's own loop device read
//!   and wrote and the flushes it received (`/sys/block/loopN/stat`, read after a
//!   `sync` so that the phase's writeback falls in the phase), read- and write-class
//!   syscalls of this process (`syscr`, `syscw` of `/proc/self/io`, all threads), the
//!   fsync and syncfs calls strata made (`driver_core::sys::sync_calls`), and the bytes
//!   and inodes the filesystem holds (statfs);
//! - **references**, timed in the same run and interleaved with the figure they stand
//!   beside: the igzip|tar floor for an unpack, a write+fsync loop for the small-file
//!   work (create, copy-up, diff); vfs's create keeps its `cp -a`.
//!
//! A phase's counts are deltas between two [`Snap`]s; the bench's own `sync` calls
//! between them are not counted (they are `sync(2)`, not strata's fsync or syncfs).

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use driver_core::Error;

use crate::failure::{Failure, Result};
use crate::model::DiskUse;

/// The counters at one moment.
#[derive(Clone, Copy, Debug, Default)]
pub struct Snap {
    dev_read_bytes: i64,
    dev_write_bytes: i64,
    dev_flushes: i64,
    syscalls_read: i64,
    syscalls_write: i64,
    fsync: i64,
    syncfs: i64,
    held_bytes: i64,
    held_inodes: i64,
}

impl Snap {
    /// The counters as (name, value) pairs, in the order docs/ci.md lists them.
    fn pairs(&self) -> [(&'static str, i64); 9] {
        [
            ("dev_read_bytes", self.dev_read_bytes),
            ("dev_write_bytes", self.dev_write_bytes),
            ("dev_flushes", self.dev_flushes),
            ("syscalls_read", self.syscalls_read),
            ("syscalls_write", self.syscalls_write),
            ("fsync", self.fsync),
            ("syncfs", self.syncfs),
            ("held_bytes", self.held_bytes),
            ("held_inodes", self.held_inodes),
        ]
    }
}

/// Reads the counters of one scratch filesystem.
pub struct Meter {
    /// `/sys/block/loopN/stat` of the scratch filesystem's loop device.
    stat: PathBuf,
    /// The scratch filesystem's mount point.
    fs: PathBuf,
}

/// `/sys/block/NAME/stat` fields (Documentation/block/stat.rst): sectors of 512 bytes
/// read (3rd) and written (7th), flush requests completed (16th, Linux 5.5+).
fn dev_stat(path: &Path) -> (i64, i64, i64) {
    let text = fs::read_to_string(path).unwrap_or_default();
    let f: Vec<i64> = text.split_whitespace().filter_map(|v| v.parse().ok()).collect();
    let at = |i: usize| f.get(i).copied().unwrap_or(0);
    (at(2) * 512, at(6) * 512, at(15))
}

/// `syscr` and `syscw` of `/proc/self/io`: read- and write-class syscalls of every
/// thread of this process, the ones gone included.
fn proc_io() -> (i64, i64) {
    let text = fs::read_to_string("/proc/self/io").unwrap_or_default();
    let field = |name: &str| text.lines().find_map(|l| l.strip_prefix(name)?.trim().parse::<i64>().ok()).unwrap_or(0);
    (field("syscr:"), field("syscw:"))
}

impl Meter {
    pub fn new(device: &Path, fs: &Path) -> Meter {
        let name = device.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        Meter { stat: PathBuf::from(format!("/sys/block/{name}/stat")), fs: fs.to_path_buf() }
    }

    /// The counters now, after a `sync` (so what was written so far has reached the device).
    pub fn snap(&self) -> Snap {
        nix::unistd::sync();
        let (dev_read_bytes, dev_write_bytes, dev_flushes) = dev_stat(&self.stat);
        let (syscalls_read, syscalls_write) = proc_io();
        let calls = driver_core::sys::sync_calls();
        let held = DiskUse::of(&self.fs);
        Snap {
            dev_read_bytes,
            dev_write_bytes,
            dev_flushes,
            syscalls_read,
            syscalls_write,
            fsync: calls.fsync as i64,
            syncfs: calls.syncfs as i64,
            held_bytes: held.bytes as i64,
            held_inodes: held.inodes as i64,
        }
    }
}

/// Adds what changed from `a` to `b` to `counts` under `prefix.` (summing over the
/// repeats of a phase, e.g. one create per container).
pub fn add(counts: &mut BTreeMap<String, i64>, prefix: &str, a: &Snap, b: &Snap) {
    for ((name, x), (_, y)) in a.pairs().iter().zip(b.pairs().iter()) {
        *counts.entry(format!("{prefix}.{name}")).or_default() += y - x;
    }
}

/// CPU seconds (user and system) used so far by `who`: this process (every thread,
/// the ones gone included) or its waited-for children.
pub fn cpu(who: nix::sys::resource::UsageWho) -> f64 {
    let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
    nix::sys::resource::getrusage(who).map(|u| t(u.user_time()) + t(u.system_time())).unwrap_or(0.0)
}

/// Runs `f`; returns what it gave, its wall seconds and the CPU seconds `who` used meanwhile.
pub fn timed<T>(who: nix::sys::resource::UsageWho, f: impl FnOnce() -> T) -> (T, f64, f64) {
    let c0 = cpu(who);
    let start = Instant::now();
    let out = f();
    (out, start.elapsed().as_secs_f64(), cpu(who) - c0)
}

/// Files the write+fsync reference writes.
const LOOP_FILES: usize = 8;

/// The small-file reference: `LOOP_FILES` files of 4 KiB written and fsynced one by
/// one in a fresh directory on the scratch filesystem, then the directory fsynced: the
/// wall and CPU seconds it took. Removed (and synced) outside the timing.
pub fn fsync_loop(scratch: &Path, tag: &str) -> Result<(f64, f64)> {
    let dir = scratch.join(format!("ref-fsync-{tag}"));
    let io = Failure::step(format!("the write+fsync reference in {}", dir.display()));
    let block = [0x5au8; 4096];
    let (res, secs, cpu) = timed(nix::sys::resource::UsageWho::RUSAGE_SELF, || -> std::io::Result<()> {
        fs::create_dir(&dir)?;
        for i in 0..LOOP_FILES {
            let mut f =
                fs::OpenOptions::new().write(true).create_new(true).mode(0o644).open(dir.join(format!("f{i}")))?;
            f.write_all(&block)?;
            f.sync_all()?;
        }
        fs::File::open(&dir)?.sync_all()
    });
    res.map_err(&io)?;
    fs::remove_dir_all(&dir).map_err(&io)?;
    nix::unistd::sync();
    Ok((secs, cpu))
}

/// The container-create reference, the same syscalls as an overlay or btrfs create
/// (their counts: 2 fsyncs, 1 syncfs, 6 inodes, 20 KiB a create): a directory with three
/// subdirectories and two files of 512 bytes, each file fsynced, then a syncfs of the
/// filesystem. The write+fsync loop (9 fsyncs) was the reference before: beside it the
/// create's ratio moved by 30% between two runs on a host whose disk other jobs used
/// (the loop 24 then 33 ms, the creates 10.4 then 9.7 ms): its nine flushes wait on the
/// device three times as often as a create's.
pub fn create_like(scratch: &Path, tag: &str) -> Result<(f64, f64)> {
    let dir = scratch.join(format!("ref-create-{tag}"));
    let io = Failure::step(format!("the create reference in {}", dir.display()));
    let block = [0x5au8; 512];
    let (res, secs, cpu) = timed(nix::sys::resource::UsageWho::RUSAGE_SELF, || -> std::io::Result<()> {
        fs::create_dir(&dir)?;
        for sub in ["a", "b", "c"] {
            fs::create_dir(dir.join(sub))?;
        }
        for name in ["f0", "f1"] {
            let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(0o644).open(dir.join(name))?;
            f.write_all(&block)?;
            f.sync_all()?;
        }
        let d = fs::File::open(&dir)?;
        nix::unistd::syncfs(std::os::fd::AsRawFd::as_raw_fd(&d)).map_err(std::io::Error::from)
    });
    res.map_err(&io)?;
    fs::remove_dir_all(&dir).map_err(&io)?;
    nix::unistd::sync();
    Ok((secs, cpu))
}

/// The unpack reference: the floor (every layer blob decompressed by the fastest gzip
/// decompressor and extracted by `tar -x` at once, as `bench --peers` runs it) into a
/// fresh directory on the scratch filesystem, then a syncfs: the wall seconds it took
/// and the CPU seconds of its processes. Removed (and synced) outside the timing.
pub fn floor(layers: &[PathBuf], scratch: &Path, tag: &str) -> Result<(f64, f64)> {
    let dir = scratch.join(format!("ref-floor-{tag}"));
    fs::create_dir(&dir).map_err(|e| Error::new(e).with_path(&dir))?;
    let (res, secs, cpu) = timed(nix::sys::resource::UsageWho::RUSAGE_CHILDREN, || -> Result<()> {
        crate::peers::floor(layers, &dir)?;
        let d = fs::File::open(&dir).map_err(|e| Error::new(e).with_path(&dir))?;
        nix::unistd::syncfs(std::os::fd::AsRawFd::as_raw_fd(&d))
            .map_err(|e| Error::new(std::io::Error::from(e)).with_path(&dir))?;
        Ok(())
    });
    res?;
    fs::remove_dir_all(&dir).map_err(|e| Error::new(e).with_path(&dir))?;
    nix::unistd::sync();
    Ok((secs, cpu))
}

/// Counts the bytes written to it (a diff's size without keeping the diff).
pub(crate) struct CountingSink(pub(crate) u64);

impl Write for CountingSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reference that cannot run on its scratch dir says which and keeps the errno.
    #[test]
    fn a_reference_that_fails_keeps_its_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("gone");
        for e in [fsync_loop(&gone, "t").unwrap_err(), create_like(&gone, "t").unwrap_err()] {
            assert!(
                matches!(&e, Failure::Step { what, source } if what.contains(&gone.display().to_string())
                    && source.raw_os_error() == Some(libc::ENOENT)),
                "{e:?}"
            );
            assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        }
    }
}
