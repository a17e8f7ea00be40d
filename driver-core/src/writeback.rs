//! Early writeback: the disk writes a layer's data while the rest is still being
//! unpacked, so the `syncfs` that makes the layer durable finds little left to write.
//!
//! Without it the kernel holds an unpack's data in the page cache (up to
//! `vm.dirty_background_ratio`, gigabytes on a large host) and the commit's `syncfs`
//! writes all of it at the end, with the CPUs idle: on the python3 image about a third
//! of the whole unpack. Here whatever writes into a filesystem counts its bytes on that
//! filesystem's [`Flusher`], and each [`FLUSH_BYTES`] wakes the flusher's thread, which
//! runs `syncfs` in the background (a head start only: the commit's own `syncfs` is what
//! makes the data durable, and reports what fails). One `syncfs` writes every dirty file
//! of the filesystem in one pass; a `sync_file_range` per file sends thousands of small
//! requests for a tree of small files, and was slower (helper vfs's measure, issue 17).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;

/// Bytes written between two wake-ups of the flusher (helper vfs found 8 to 128 MiB made
/// no difference to a copy; 32 MiB keeps a layer's last unsynced part small).
pub const FLUSH_BYTES: u64 = 32 << 20;

/// The background flusher of one filesystem, shared by everything that writes there
/// in this process (every layer of a chain, the blobs kept as they are read); its
/// thread ends when the last user drops it.
pub struct Flusher {
    written: AtomicU64,
    wake: Mutex<Option<SyncSender<()>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// The flushers alive, by device.
static FLUSHERS: Mutex<Vec<(u64, Weak<Flusher>)>> = Mutex::new(Vec::new());

impl Flusher {
    /// The flusher of the filesystem holding directory `dir`, started if none runs.
    pub fn of(dir: &Path) -> io::Result<Arc<Flusher>> {
        let fd = crate::sys::open_dir(dir)?;
        let dev = nix::sys::stat::fstat(fd.as_raw_fd()).map_err(crate::sys::errno)?.st_dev;
        let mut all = FLUSHERS.lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|(_, f)| f.strong_count() > 0);
        if let Some(f) = all.iter().find(|(d, _)| *d == dev).and_then(|(_, f)| f.upgrade()) {
            return Ok(f);
        }
        let f = Arc::new(Flusher::start(fd)?);
        all.push((dev, Arc::downgrade(&f)));
        Ok(f)
    }

    fn start(fd: OwnedFd) -> io::Result<Flusher> {
        // One wake-up waiting at most: bytes counted while a syncfs runs are caught by
        // the next one.
        let (wake, woken) = sync_channel::<()>(1);
        let thread = std::thread::Builder::new().name("strata-flusher".into()).spawn(move || {
            while woken.recv().is_ok() {
                let _ = nix::unistd::syncfs(fd.as_raw_fd());
            }
        })?;
        Ok(Flusher { written: AtomicU64::new(0), wake: Mutex::new(Some(wake)), thread: Mutex::new(Some(thread)) })
    }

    /// Counts `n` bytes written to this filesystem; each [`FLUSH_BYTES`] wakes the flusher.
    pub fn wrote(&self, n: u64) {
        let before = self.written.fetch_add(n, Ordering::Relaxed);
        if (before + n) / FLUSH_BYTES > before / FLUSH_BYTES {
            if let Some(wake) = self.wake.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
                // Already woken: the syncfs to come catches these bytes too.
                let _ = wake.try_send(());
            }
        }
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        // The thread ends at the channel's end (after the syncfs under way, if any).
        drop(self.wake.get_mut().unwrap_or_else(|e| e.into_inner()).take());
        if let Some(t) = self.thread.get_mut().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_flusher_per_filesystem_while_used() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir_in(a.path()).unwrap();
        let fa = Flusher::of(a.path()).unwrap();
        let fb = Flusher::of(b.path()).unwrap();
        assert!(Arc::ptr_eq(&fa, &fb), "two directories of one filesystem share its flusher");
        fa.wrote(FLUSH_BYTES * 3);
        drop((fa, fb));
        // The last user gone, its thread has ended and a new one starts.
        let fc = Flusher::of(a.path()).unwrap();
        fc.wrote(1);
    }
}
