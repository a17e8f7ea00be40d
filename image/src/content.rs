//! The content of stored images: layer blobs, configs and manifests, by digest.
//!
//! ```text
//! <driver dir>/content/blobs/sha256/<hex>   one file per blob, named by its sha256
//! <driver dir>/content/ingest/<pid>-<n>      a blob being written (renamed when whole)
//! ```
//!
//! The layout of `blobs/` is an OCI image layout's, so the store is also a
//! [`BlobSource`]. A blob is written to `ingest/`, hashed as it is written, synced and
//! renamed to its digest: a reader never sees a half-written blob under a digest, and a
//! killed writer leaves only an ingest file (removed by the next writer that finds its
//! process gone). Reads are verified against the digest ([`ContentStore::read_blob`]).
//! An unpack writes its blobs unsynced ([`Settle::Later`]) and settles
//! them all at once before its record names them ([`ContentStore::settle`]: one
//! `syncfs`, or none when the layers' sync came after them, the renames, one fsync of
//! `blobs/sha256`), not two fsyncs per blob.
//!
//! An [`crate::images::ImageRecord`] names its manifest here (`manifest`); the manifest
//! names the config and layer blobs. The image store writes records and removes blobs
//! under the driver's store lock, so a blob is removed only when no record names it
//! (see [`crate::images::ImageStore::remove`]). Images recorded by older versions have no
//! manifest: their content was not kept, and commands that need it say so
//! ([`ContentStore::load`]).

mod locations;
mod stored;
mod writer;

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::source::{BlobSource, LayoutDir};
use crate::verify::VerifyingReader;
use driver_core::digest::Hashing;
use driver_core::sys;
use driver_core::writeback::Flusher;

pub use crate::media::{oci_layer_type, OCI_CONFIG, OCI_LAYER_GZIP, OCI_LAYER_TAR, OCI_LAYER_ZSTD, OCI_MANIFEST};
pub use stored::StoredImage;
pub(crate) use stored::{descriptor, document_bytes, manifest_bytes};
use writer::Unsettled;
pub use writer::{BlobWriter, Keeping, Settle};

/// The blobs of every stored image of one driver.
#[derive(Clone)]
pub struct ContentStore {
    dir: PathBuf,
    /// Blobs written but not yet synced and renamed to their digest, shared by clones.
    unsettled: Arc<Unsettled>,
    /// How blobs are synced (`--sync`): under `file` each as it is written, under
    /// `none` never.
    pub durability: driver_core::Durability,
}

/// The sha256 digest of `data`, as `sha256:<hex>`.
pub use driver_core::digest::sha256 as digest_of;

impl ContentStore {
    pub fn open(driver_dir: &Path) -> Result<ContentStore> {
        let dir = driver_dir.join("content");
        for sub in ["blobs/sha256", "ingest"] {
            fs::create_dir_all(dir.join(sub)).at_path(dir.join(sub))?;
        }
        Ok(ContentStore { dir, unsettled: Arc::default(), durability: driver_core::Durability::Chain })
    }

    /// Makes the blobs written unsettled ([`Settle::Later`]) whole blobs
    /// of the store that survive a power cut: one `syncfs` of the store's filesystem
    /// (none when one began after the last of them was written: an unpack's layers were
    /// synced after it kept their blobs, its config and manifest), then each renamed to
    /// its digest, then one fsync of `blobs/sha256`. Call it before a record names them.
    pub fn settle(&self) -> Result<()> {
        let blobs = self.unsettled.take();
        if blobs.is_empty() {
            return Ok(());
        }
        let settled = (|| -> Result<()> {
            let ingest = self.dir.join("ingest");
            let last_written = blobs.iter().map(|b| b.written).max().unwrap_or_default();
            if !sys::synced_since(&ingest, last_written) {
                self.durability.sync_fs(&ingest).at_path(&ingest)?;
            }
            for blob in &blobs {
                let to = self.path(&blob.digest)?;
                fs::rename(&blob.tmp, &to).at_path(&to)?;
            }
            let dir = self.dir.join("blobs/sha256");
            self.durability.sync_record_dir(&dir).at_path(&dir)
        })();
        if settled.is_err() {
            for blob in &blobs {
                let _ = fs::remove_file(&blob.tmp);
            }
        }
        settled
    }

    /// Removes the blobs written unsettled and not settled yet (an unpack that failed).
    pub fn discard_unsettled(&self) {
        for blob in self.unsettled.take() {
            let _ = fs::remove_file(blob.tmp);
        }
    }

    /// Whether blob `digest` is kept or written here unsettled (by this process, to be
    /// settled); its size if so.
    pub fn kept_size(&self, digest: &str) -> Option<u64> {
        match self.path(digest).ok().and_then(|p| fs::metadata(p).ok()).filter(|m| m.is_file()) {
            Some(m) => Some(m.len()),
            None => self.unsettled.find(digest).map(|(_, size)| size),
        }
    }

    /// Where blob `digest` is kept (whether or not it is there).
    pub fn path(&self, digest: &str) -> Result<PathBuf> {
        Ok(self.dir.join(Digest::parse(digest)?.blob_path()))
    }

    pub fn has(&self, digest: &str) -> bool {
        self.path(digest).is_ok_and(|p| p.is_file())
    }

    /// Starts writing a blob.
    pub fn writer(&self) -> Result<BlobWriter> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        self.sweep_ingest();
        let tmp = self.dir.join(format!("ingest/{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)));
        let file = File::create(&tmp).at_path(&tmp)?;
        Ok(BlobWriter {
            file: Some(Hashing::new(io::BufWriter::with_capacity(1 << 20, file))),
            // A head start for `chain`'s syncfs only.
            flusher: Flusher::of(&self.dir).ok().filter(|_| self.durability == driver_core::Durability::Chain),
            tmp,
            store: self.clone(),
        })
    }

    /// `blob` as it is read, written to the store and kept when it is whole and has
    /// the digest `expected` (and `size`); see [`Keeping`].
    pub fn keeping<R: Read>(&self, blob: R, expected: &str, size: Option<u64>, what: String) -> Result<Keeping<R>> {
        Ok(Keeping {
            inner: blob,
            writer: Some(self.writer()?),
            expected: expected.to_string(),
            size,
            what,
            failed: None,
        })
    }

    /// Removes ingest files whose writer's process is gone.
    pub fn sweep_ingest(&self) {
        let Ok(entries) = fs::read_dir(self.dir.join("ingest")) else { return };
        for e in entries.flatten() {
            let name = e.file_name();
            let pid = name.to_str().and_then(|n| n.split('-').next()).and_then(|p| p.parse().ok());
            if pid.is_none_or(|p| !driver_core::sys::pid_alive(p)) {
                let _ = fs::remove_file(e.path());
            }
        }
    }

    /// Stores `data`, settled `settle`; returns its digest.
    pub fn put_bytes(&self, data: &[u8], settle: Settle) -> Result<String> {
        let digest = digest_of(data);
        let kept = match settle {
            Settle::Now => self.has(&digest),
            Settle::Later => self.kept_size(&digest).is_some(),
        };
        if !kept {
            let mut w = self.writer()?;
            w.write_all(data).at_path(&w.tmp)?;
            w.finish(settle)?;
        }
        Ok(digest)
    }

    /// Stores a stream; when `expected` is given, the stream must hash to it. Returns
    /// the digest and size.
    pub fn put_stream(&self, r: &mut dyn Read, expected: Option<&str>) -> Result<(String, u64)> {
        let mut w = self.writer()?;
        io::copy(r, &mut w).at_path(&w.tmp)?;
        let (digest, size) = w.finish(Settle::Now)?;
        if let Some(want) = expected {
            if digest != want {
                let _ = fs::remove_file(self.path(&digest)?);
                let (got, want) = (Digest::parse(&digest)?, Digest::parse(want)?);
                return Err(Error::DigestMismatch { what: format!("blob {want} as copied"), got, want });
            }
        }
        Ok((digest, size))
    }

    /// Opens blob `digest`, verified against its digest (and `size`) as it is read.
    pub fn read_blob(&self, digest: &str, size: Option<u64>) -> Result<Box<dyn Read + Send>> {
        let p = self.path(digest)?;
        let f = File::open(&p).at_path(&p)?;
        Ok(Box::new(VerifyingReader::new(io::BufReader::new(f), digest, size, format!("stored blob {digest}"))))
    }

    /// Reads a small blob (a manifest or config), verified.
    pub fn read_small(&self, digest: &str, max: u64) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let p = self.path(digest)?;
        self.read_blob(digest, None)?.take(max + 1).read_to_end(&mut out).at_path(&p)?;
        if out.len() as u64 > max {
            let size = fs::metadata(&p).map_or(out.len() as u64, |m| m.len());
            return Err(Error::TooLarge { what: format!("stored blob {digest}"), size, max });
        }
        Ok(out)
    }

    /// Removes blobs nothing names (the caller holds the store lock) and forgets where a
    /// push could have mounted them from.
    pub fn remove_all(&self, gone: &std::collections::BTreeSet<String>) -> Result<()> {
        for d in gone {
            self.remove(d)?;
        }
        if !gone.is_empty() {
            self.forget_locations(gone)?;
        }
        Ok(())
    }

    /// Removes a blob (the caller holds the store lock and knows nothing names it).
    pub fn remove(&self, digest: &str) -> Result<()> {
        let p = self.path(digest)?;
        match fs::remove_file(&p) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(Error::io(&p, e)),
            _ => Ok(()),
        }
    }

    /// Every blob kept: its digest, size, and when it was last written or renamed
    /// into place (the later of mtime and ctime, as the filesystem's clock has it).
    pub fn stored(&self) -> Result<Vec<(String, u64, SystemTime)>> {
        let dir = self.dir.join("blobs/sha256");
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).at_path(&dir)? {
            let e = e.at_path(&dir)?;
            let name = e.file_name().to_string_lossy().into_owned();
            let Ok(digest) = Digest::parse(&format!("sha256:{name}")) else { continue };
            let Ok(m) = e.metadata() else { continue };
            let changed = SystemTime::UNIX_EPOCH + Duration::new(m.ctime().max(0) as u64, m.ctime_nsec() as u32);
            let written = m.modified().unwrap_or(SystemTime::UNIX_EPOCH).max(changed);
            out.push((digest.into(), m.len(), written));
        }
        out.sort();
        Ok(out)
    }

    /// The time now by the clock the store's filesystem stamps files with (a file made
    /// and read back): the kernel stamps with a coarse clock that may lag the system
    /// time by a tick, so a blob written after this call is never stamped earlier.
    pub fn clock(&self) -> Result<SystemTime> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let p =
            self.dir.join(format!("ingest/{}-clock-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)));
        let f = File::create(&p).at_path(&p)?;
        let t = f.metadata().and_then(|m| m.modified()).at_path(&p);
        let _ = fs::remove_file(&p);
        t
    }
}

impl BlobSource for ContentStore {
    fn open(&self, locator: &str) -> io::Result<Box<dyn Read + Send>> {
        LayoutDir { dir: self.dir.clone() }.open(locator)
    }

    fn stored_size(&self, locator: &str) -> io::Result<Option<u64>> {
        LayoutDir { dir: self.dir.clone() }.stored_size(locator)
    }

    fn shared(&self) -> Option<Arc<dyn BlobSource>> {
        Some(Arc::new(self.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(r: &mut dyn Read) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        r.read_to_end(&mut out).map(|_| out)
    }

    #[test]
    fn a_blob_read_for_an_unpack_is_kept_only_when_it_is_what_its_descriptor_says() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ContentStore::open(tmp.path()).unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let good = driver_core::digest::sha256(&data);
        let n = Some(data.len() as u64);

        // Tampered, truncated, longer than said: the read fails and nothing is kept.
        let mut tampered = data.clone();
        tampered[1000] ^= 1;
        let mut long = data.clone();
        long.push(0);
        let tampered_as = driver_core::digest::sha256(&tampered);
        type Check = fn(&Error, &str) -> bool;
        let cases: [(&str, &[u8], Check); 3] = [
            (
                "tampered",
                &tampered[..],
                |e, d| matches!(e, Error::DigestMismatch { what, got, want } if what == "blob x" && *got == *d && *want != *d),
            ),
            (
                "truncated",
                &data[..1000],
                |e, _| matches!(e, Error::SizeMismatch { what, got: 1000, want: 300_000 } if what == "blob x"),
            ),
            (
                "longer",
                &long[..],
                |e, _| matches!(e, Error::LongerThanSaid { what, size: 300_000 } if what == "blob x"),
            ),
        ];
        for (what, bytes, check) in cases {
            let mut r = store.keeping(bytes, &good, n, "blob x".into()).unwrap();
            let e = Error::read("reading", read_all(&mut r).expect_err(what));
            assert!(check(&e, &tampered_as), "{what}: {e:?}");
            assert!(r.read(&mut [0u8; 8]).is_err(), "{what}: the failure is given again");
            assert!(!store.has(&good), "{what}: kept");
            assert_eq!(fs::read_dir(tmp.path().join("content/ingest")).unwrap().count(), 0, "{what}: ingest left");
        }

        // Whole and right: passed through unchanged, and kept under its digest once
        // settled (until then it is in ingest/, known to this store only).
        let mut r = store.keeping(&data[..], &good, n, "blob x".into()).unwrap();
        assert_eq!(read_all(&mut r).unwrap(), data);
        assert!(!store.has(&good), "named before it is synced");
        assert_eq!(store.clone().kept_size(&good), n);
        store.settle().unwrap();
        assert!(store.has(&good));
        assert_eq!(fs::read_dir(tmp.path().join("content/ingest")).unwrap().count(), 0);
        assert_eq!(read_all(&mut store.read_blob(&good, n).unwrap()).unwrap(), data);
    }

    /// A full disk under the blob being kept (its writer on /dev/full) comes out of the
    /// stream's read as the disk's error: ENOSPC found under it, its kind StorageFull (not
    /// InvalidData, which the tar engine would take for a bad tar) and the ingest file
    /// named; and so again on a later read (the old code gave the words back without
    /// the errno: `raw_os_error` None, exit 1 instead of 7).
    #[test]
    fn a_full_disk_while_keeping_is_the_disks_error_on_every_read() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ContentStore::open(tmp.path()).unwrap();
        let full = fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
        let tmp_file = tmp.path().join("content/ingest/1-full");
        let writer = BlobWriter {
            file: Some(Hashing::new(io::BufWriter::with_capacity(1 << 16, full))),
            tmp: tmp_file.clone(),
            store: store.clone(),
            flusher: None,
        };
        let data = vec![7u8; 1 << 20];
        let mut r = Keeping {
            inner: &data[..],
            writer: Some(writer),
            expected: digest_of(&data),
            size: None,
            what: "blob x".into(),
            failed: None,
        };
        let first = read_all(&mut r).expect_err("the disk is full");
        let again = r.read(&mut [0u8; 8]).expect_err("given again");
        for (which, e) in [("first", first), ("again", again)] {
            assert_eq!(driver_core::error::os_error(&e), Some(libc::ENOSPC), "{which}: {e}");
            assert_eq!(e.kind(), io::ErrorKind::StorageFull, "{which}: {e}");
            assert!(e.to_string().contains(&tmp_file.display().to_string()), "{which}: {e}");
            let typed = Error::read("layer", e);
            assert!(matches!(&typed, Error::Io { path, .. } if *path == tmp_file), "{which}: {typed:?}");
            assert_eq!(typed.raw_os_error(), Some(libc::ENOSPC), "{which}");
        }
    }

    #[test]
    fn unsettled_blobs_go_when_discarded_or_with_the_last_clone_of_the_store() {
        let tmp = tempfile::tempdir().unwrap();
        let ingest = tmp.path().join("content/ingest");
        let count = || fs::read_dir(&ingest).unwrap().count();
        let store = ContentStore::open(tmp.path()).unwrap();
        for data in [&b"one"[..], b"two"] {
            let mut w = store.writer().unwrap();
            w.write_all(data).unwrap();
            w.finish(Settle::Later).unwrap();
        }
        assert_eq!(count(), 2);
        store.discard_unsettled();
        assert_eq!(count(), 0);
        let clone = store.clone();
        let mut w = clone.writer().unwrap();
        w.write_all(b"three").unwrap();
        let (d, _) = w.finish(Settle::Later).unwrap();
        drop(store);
        assert_eq!((count(), clone.kept_size(&d)), (1, Some(5)), "a clone still holds it");
        drop(clone);
        assert_eq!(count(), 0);
        assert!(!ContentStore::open(tmp.path()).unwrap().has(&d));
    }
}
