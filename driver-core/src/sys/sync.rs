//! `syncfs(2)`, and which writes a sync has made durable, so that a second sync of
//! the same writes can be skipped.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::Path;

use super::errno;
use super::resolve::{fstat, open_dir};

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
