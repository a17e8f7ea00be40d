//! Writing blobs: into `ingest/`, hashed as they are written, and named by their digest
//! when whole (at once, or settled with others by [`ContentStore::settle`]).

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

use crate::error::{Error, IoContext, Result};
use driver_core::digest::Hashing;
use driver_core::sys;
use driver_core::writeback::Flusher;

use super::ContentStore;
use crate::verify::{check_not_over, check_whole};

/// Whole blobs still in `ingest/`, waiting for [`ContentStore::settle`]; those never
/// settled go with the last clone of the store.
#[derive(Default)]
pub(super) struct Unsettled(std::sync::Mutex<Vec<UnsettledBlob>>);

/// A whole blob in `ingest/`, not yet synced and renamed to its digest.
pub(super) struct UnsettledBlob {
    pub(super) tmp: PathBuf,
    pub(super) digest: String,
    pub(super) size: u64,
    /// Taken once it was written: a `syncfs` begun after it covers it ([`sys::synced_since`]).
    pub(super) written: u64,
}

impl Unsettled {
    pub(super) fn take(&self) -> Vec<UnsettledBlob> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub(super) fn push(&self, blob: UnsettledBlob) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(blob);
    }

    /// The temp file and size of blob `digest`, if it is unsettled here.
    pub(super) fn find(&self, digest: &str) -> Option<(PathBuf, u64)> {
        let blobs = self.0.lock().unwrap_or_else(|e| e.into_inner());
        blobs.iter().find(|b| b.digest == digest).map(|b| (b.tmp.clone(), b.size))
    }
}

impl Drop for Unsettled {
    fn drop(&mut self) {
        for blob in self.take() {
            let _ = fs::remove_file(blob.tmp);
        }
    }
}

/// A blob being written: hashed as it goes, named by its digest when finished.
pub struct BlobWriter {
    pub(super) file: Option<Hashing<io::BufWriter<File>>>,
    pub(super) tmp: PathBuf,
    pub(super) store: ContentStore,
    /// Starts the disk on the blob as it is written (see [`driver_core::writeback`]).
    pub(super) flusher: Option<Arc<Flusher>>,
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.as_mut().expect("an unfinished blob").write(buf)?;
        if let Some(f) = &self.flusher {
            f.wrote(n as u64);
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().expect("an unfinished blob").flush()
    }
}

/// When a finished blob becomes a blob of the store, under its digest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settle {
    /// At once: the blob synced, renamed to its digest, and `blobs/sha256` synced.
    Now,
    /// With the next [`ContentStore::settle`], which settles all such blobs at once (an
    /// unpack's): until then it stays unsynced in `ingest/`, and goes if never settled.
    Later,
}

impl BlobWriter {
    /// Ends the blob, settled `settle`; returns its digest and size.
    pub fn finish(mut self, settle: Settle) -> Result<(String, u64)> {
        let (file, digest, size) = self.file.take().expect("an unfinished blob").finish();
        let tmp = &self.tmp;
        let ended = (|| -> Result<()> {
            let file = file.into_inner().map_err(|e| Error::io(tmp, e.into_error()))?;
            let mode = self.store.durability;
            if settle == Settle::Later {
                mode.sync_written(&file).at_path(tmp)?;
                let blob = UnsettledBlob { tmp: tmp.clone(), digest: digest.clone(), size, written: sys::write_mark() };
                self.store.unsettled.push(blob);
                return Ok(());
            }
            mode.sync_record(&file).at_path(tmp)?;
            let to = self.store.path(&digest)?;
            fs::rename(tmp, &to).at_path(&to)?;
            match to.parent() {
                Some(dir) => mode.sync_record_dir(dir).at_path(dir),
                None => Ok(()),
            }
        })();
        if ended.is_err() {
            let _ = fs::remove_file(tmp);
        }
        ended.map(|()| (digest, size))
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// A blob read for an unpack and written to the store as it is read, so that it is
/// read and hashed once (the writer's hash is the check). When it ends, its size and
/// digest are checked against its descriptor: only a blob that is what its descriptor
/// says is kept, and the read fails otherwise.
pub struct Keeping<R> {
    pub(super) inner: R,
    pub(super) writer: Option<BlobWriter>,
    pub(super) expected: String,
    pub(super) size: Option<u64>,
    pub(super) what: String,
    /// The error the end of the stream gave, given again on every later read.
    pub(super) failed: Option<Failed>,
}

/// What a [`Keeping`] failed with, to give again: its errno when it has one (found
/// under the typed error that names the ingest file, whose own `raw_os_error` is
/// `None`) with that file named again, else its kind and words (an `io::Error` is not
/// `Clone`).
pub(super) struct Failed {
    kind: io::ErrorKind,
    errno: Option<i32>,
    path: Option<PathBuf>,
    said: String,
}

impl Failed {
    fn of(e: &io::Error) -> Failed {
        let typed = e.get_ref().and_then(|inner| inner.downcast_ref::<Error>());
        let path = typed.and_then(|t| match t.root() {
            Error::Io { path, .. } => Some(path.clone()),
            _ => None,
        });
        Failed { kind: e.kind(), errno: driver_core::error::os_error(e), path, said: e.to_string() }
    }

    fn again(&self) -> io::Error {
        match (self.errno, &self.path) {
            (Some(errno), Some(path)) => Error::io(path, io::Error::from_raw_os_error(errno)).into_io(),
            (Some(errno), None) => io::Error::from_raw_os_error(errno),
            (None, _) => io::Error::new(self.kind, self.said.clone()),
        }
    }
}

impl<R: Read> Read for Keeping<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(failed) = &self.failed {
            return Err(failed.again());
        }
        let n = self.inner.read(buf)?;
        if let Err(e) = self.keep(&buf[..n], n == 0 && !buf.is_empty()) {
            // The partial blob goes with its writer.
            self.writer = None;
            self.failed = Some(Failed::of(&e));
            return Err(e);
        }
        Ok(n)
    }
}

impl<R> Keeping<R> {
    fn keep(&mut self, data: &[u8], end: bool) -> io::Result<()> {
        let Some(w) = self.writer.as_mut() else { return Ok(()) };
        // Named, so that a full disk says where it was writing.
        w.write_all(data).map_err(|e| Error::io(&w.tmp, e).into_io())?;
        let hashed = w.file.as_ref().expect("an unfinished blob");
        check_not_over(&self.what, hashed.byte_count(), self.size)?;
        if end {
            check_whole(&self.what, hashed.byte_count(), self.size, &hashed.digest(), &self.expected)?;
            let w = self.writer.take().expect("a writer");
            w.finish(Settle::Later).map_err(Error::into_io)?;
        }
        Ok(())
    }
}
