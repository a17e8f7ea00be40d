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

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::image::{
    blob_path, check_not_over, check_whole, BlobSource, Image, LayoutDir, VerifyingReader, MAX_CONFIG, MAX_MANIFEST,
};
use driver_core::digest::Hashing;
use driver_core::error::{Cause, Context, Error, Result};
use driver_core::sys;
use driver_core::writeback::Flusher;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

/// `<content>/locations.json`: registry → blob digest → repositories holding it.
const LOCATIONS: &str = "locations.json";
type Locations = std::collections::BTreeMap<String, std::collections::BTreeMap<String, Vec<String>>>;

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

/// Whole blobs still in `ingest/`, waiting for [`ContentStore::settle`]; those never
/// settled go with the last clone of the store.
#[derive(Default)]
struct Unsettled(std::sync::Mutex<Vec<UnsettledBlob>>);

/// A whole blob in `ingest/`, not yet synced and renamed to its digest.
struct UnsettledBlob {
    tmp: PathBuf,
    digest: String,
    size: u64,
    /// Taken once it was written: a `syncfs` begun after it covers it ([`sys::synced_since`]).
    written: u64,
}

impl Unsettled {
    fn take(&self) -> Vec<UnsettledBlob> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn push(&self, blob: UnsettledBlob) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(blob);
    }

    /// The temp file and size of blob `digest`, if it is unsettled here.
    fn find(&self, digest: &str) -> Option<(PathBuf, u64)> {
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

/// A stored image's manifest and config, read and verified.
#[derive(Clone, Debug)]
pub struct StoredImage {
    pub manifest_digest: String,
    pub manifest: Value,
    pub config_digest: String,
    pub config: Value,
}

impl StoredImage {
    /// The layer descriptors (`mediaType`, `digest`, `size`), bottom to top.
    pub fn layers(&self) -> Vec<Value> {
        self.manifest["layers"].as_array().cloned().unwrap_or_default()
    }

    /// The config's `rootfs.diff_ids`, bottom to top.
    pub fn diff_ids(&self) -> Vec<String> {
        self.config["rootfs"]["diff_ids"]
            .as_array()
            .map(|a| a.iter().filter_map(|d| d.as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    }

    /// Every blob the image consists of: its manifest, config and layers.
    pub fn blobs(&self) -> Vec<String> {
        let mut out = vec![self.manifest_digest.clone(), self.config_digest.clone()];
        out.extend(self.layers().iter().filter_map(|l| l["digest"].as_str().map(str::to_string)));
        out
    }
}

/// The sha256 digest of `data`, as `sha256:<hex>`.
pub use driver_core::digest::sha256 as digest_of;

/// The OCI media type of a layer given by any of the names registries and archives use.
pub fn oci_layer_type(media_type: &str) -> &str {
    match media_type {
        "application/vnd.docker.image.rootfs.diff.tar.gzip" => OCI_LAYER_GZIP,
        "application/vnd.docker.image.rootfs.diff.tar" | "application/x-tar" => OCI_LAYER_TAR,
        other => other,
    }
}

/// A blob being written: hashed as it goes, named by its digest when finished.
pub struct BlobWriter {
    file: Option<Hashing<io::BufWriter<File>>>,
    tmp: PathBuf,
    store: ContentStore,
    /// Starts the disk on the blob as it is written (see [`driver_core::writeback`]).
    flusher: Option<Arc<Flusher>>,
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
            let file = file.into_inner().map_err(|e| Error::new(e.into_error()).with_path(tmp))?;
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
    inner: R,
    writer: Option<BlobWriter>,
    expected: String,
    size: Option<u64>,
    what: String,
    /// The error the end of the stream gave, given again on every later read.
    failed: Option<(io::ErrorKind, String)>,
}

impl<R: Read> Read for Keeping<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some((kind, msg)) = &self.failed {
            return Err(io::Error::new(*kind, msg.clone()));
        }
        let n = self.inner.read(buf)?;
        if let Err(e) = self.keep(&buf[..n], n == 0 && !buf.is_empty()) {
            // The partial blob goes with its writer.
            self.writer = None;
            self.failed = Some((e.kind(), e.to_string()));
            return Err(e);
        }
        Ok(n)
    }
}

impl<R> Keeping<R> {
    fn keep(&mut self, data: &[u8], end: bool) -> io::Result<()> {
        let Some(w) = self.writer.as_mut() else { return Ok(()) };
        w.write_all(data)?;
        let hashed = w.file.as_ref().expect("an unfinished blob");
        check_not_over(&self.what, hashed.byte_count(), self.size)?;
        if end {
            check_whole(&self.what, hashed.byte_count(), self.size, &hashed.digest(), &self.expected)?;
            let w = self.writer.take().expect("a writer");
            w.finish(Settle::Later).map_err(|e| io::Error::other(e.to_string()))?;
        }
        Ok(())
    }
}

fn missing_content(name: &str) -> Error {
    Error::new(Cause::Other(format!(
        "image {name} was stored by an older strata, which kept only its layers, not its blobs, \
         config and manifest; unpack or pull it again to keep them"
    )))
}

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
        Ok(self.dir.join(blob_path(digest).map_err(|e| Error::new(Cause::Other(e.to_string())))?))
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
                return Err(Error::new(Cause::Other(format!("blob {want} read as {digest} (changed while copied?)"))));
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
        self.read_blob(digest, None)?
            .take(max + 1)
            .read_to_end(&mut out)
            .map_err(|e| Error::new(Cause::Other(e.to_string())).with_path(self.path(digest).unwrap_or_default()))?;
        if out.len() as u64 > max {
            return Err(Error::new(Cause::Other(format!("stored blob {digest} has more than {max} bytes"))));
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
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(Error::new(e).with_path(&p)),
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
            if name.len() != 64 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
                continue;
            }
            let Ok(m) = e.metadata() else { continue };
            let changed = SystemTime::UNIX_EPOCH + Duration::new(m.ctime().max(0) as u64, m.ctime_nsec() as u32);
            let written = m.modified().unwrap_or(SystemTime::UNIX_EPOCH).max(changed);
            out.push((format!("sha256:{name}"), m.len(), written));
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

    /// Drops `gone` (blobs no longer kept) from the locations noted for pushes.
    pub fn forget_locations(&self, gone: &std::collections::BTreeSet<String>) -> Result<()> {
        let p = self.dir.join(LOCATIONS);
        let Some(mut known) = driver_core::json::read_json::<Locations>(&p).ok().flatten() else { return Ok(()) };
        let before: usize = known.values().map(|r| r.len()).sum();
        for reg in known.values_mut() {
            reg.retain(|d, _| !gone.contains(d));
        }
        known.retain(|_, r| !r.is_empty());
        if known.values().map(|r| r.len()).sum::<usize>() == before {
            return Ok(());
        }
        driver_core::json::write_json(&p, &known)
    }

    /// Repositories of `registry` known to hold blob `digest` (pushed there, or pulled
    /// from there): where a push may mount it from instead of uploading it.
    pub fn locations(&self, registry: &str, digest: &str) -> Vec<String> {
        let known: Locations =
            driver_core::json::read_json(&self.dir.join(LOCATIONS)).ok().flatten().unwrap_or_default();
        known.get(registry).and_then(|r| r.get(digest)).cloned().unwrap_or_default()
    }

    /// Notes that `registry`/`repository` holds `digests`. A hint only (a blob may have
    /// gone from there since; a mount that fails falls back to an upload), so two
    /// writers racing may lose a note, never a blob.
    pub fn note_locations(&self, registry: &str, repository: &str, digests: &[String]) -> Result<()> {
        let p = self.dir.join(LOCATIONS);
        let mut known: Locations = driver_core::json::read_json(&p).ok().flatten().unwrap_or_default();
        let reg = known.entry(registry.to_string()).or_default();
        for d in digests {
            let repos = reg.entry(d.clone()).or_default();
            if !repos.iter().any(|r| r == repository) {
                // The latest first; a few are enough to find one that still holds it.
                repos.insert(0, repository.to_string());
                repos.truncate(4);
            }
        }
        driver_core::json::write_json(&p, &known)
    }

    /// The manifest and config of image `name` whose manifest is `manifest` (`None`
    /// for an image an older strata stored).
    pub fn load(&self, name: &str, manifest: Option<&str>) -> Result<StoredImage> {
        let Some(manifest_digest) = manifest else { return Err(missing_content(name)) };
        let in_image = |e: Error| Error::new(Cause::Other(format!("image {name}: {e}")));
        let bytes = self.read_small(manifest_digest, MAX_MANIFEST).map_err(in_image)?;
        let manifest: Value = serde_json::from_slice(&bytes)
            .map_err(|e| in_image(Error::new(Cause::Corrupt(format!("manifest {manifest_digest}: {e}")))))?;
        let config_digest = manifest["config"]["digest"].as_str().unwrap_or_default().to_string();
        let bytes = self.read_small(&config_digest, MAX_CONFIG).map_err(in_image)?;
        let config: Value = serde_json::from_slice(&bytes)
            .map_err(|e| in_image(Error::new(Cause::Corrupt(format!("config {config_digest}: {e}")))))?;
        Ok(StoredImage { manifest_digest: manifest_digest.to_string(), manifest, config_digest, config })
    }

    /// Whether every blob of the image whose manifest is `manifest` is here (checked
    /// under the store lock before a record naming it is written).
    pub fn complete(&self, name: &str, manifest: &str) -> bool {
        self.load(name, Some(manifest)).is_ok_and(|img| img.blobs().iter().all(|b| self.has(b)))
    }

    /// Keeps the config of `image`, and its manifest when the source has one,
    /// unsettled, as [`ContentStore::import`] would: an unpack does it before applying
    /// the layers, so that their sync covers these blobs too and
    /// [`ContentStore::settle`] has nothing left to sync.
    pub fn import_config(&self, source: &dyn BlobSource, image: &Image) -> Result<()> {
        self.copy_in(source, image, &image.config_locator, Some(&image.config_digest), None)?;
        if let Some(manifest) = &image.manifest {
            self.put_bytes(manifest, Settle::Later)?;
        }
        Ok(())
    }

    /// Copies blob `locator` of `image` from `source` unsettled, verified against
    /// `digest` and `size` when given, unless it is kept already; its digest and size.
    fn copy_in(
        &self,
        source: &dyn BlobSource,
        image: &Image,
        locator: &str,
        digest: Option<&str>,
        size: Option<u64>,
    ) -> Result<(String, u64)> {
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            Error::new(Cause::Other(format!("image {}: keeping {what}: {e}", image.name)))
        };
        if let Some((d, len)) = digest.and_then(|d| Some((d, self.kept_size(d)?))) {
            return Ok((d.to_string(), len));
        }
        let blob = source.open(locator).map_err(|e| fail(locator, &e))?;
        match digest {
            // Hashed once, as it is written.
            Some(d) => {
                let mut kept = self.keeping(blob, d, size, format!("blob {d}"))?;
                io::copy(&mut kept, &mut io::sink()).map_err(|e| fail(locator, &e))?;
                Ok((d.to_string(), self.kept_size(d).unwrap_or_default()))
            }
            None => self.put_stream(&mut { blob }, None).map_err(|e| fail(locator, &e)),
        }
    }

    /// Copies the blobs of `image` from `source` into the store, verified, and returns
    /// the digest of its manifest: the source's own manifest when it has one (a layout,
    /// an oci-archive, a registry), else (a docker-archive) one written for it. The
    /// blobs it writes are unsettled: [`ContentStore::settle`] them before a record
    /// names them.
    pub fn import(&self, source: &dyn BlobSource, image: &Image) -> Result<String> {
        let copy =
            |locator: &str, digest: Option<&str>, size: Option<u64>| self.copy_in(source, image, locator, digest, size);
        let (config_digest, config_size) = copy(&image.config_locator, Some(&image.config_digest), None)?;
        let mut layers = Vec::new();
        for l in &image.layers {
            let (digest, size) = copy(&l.locator, l.digest.as_deref(), l.size)?;
            layers.push((digest, size, l.media_type.clone()));
        }
        if let Some(manifest) = &image.manifest {
            return self.put_bytes(manifest, Settle::Later);
        }
        let mut descriptors = Vec::new();
        for (digest, size, media_type) in layers {
            let mut head = [0u8; 4];
            let n = self.read_head(&digest, &mut head);
            let media = match strata_archive::compress::Compression::detect(&head[..n]) {
                strata_archive::compress::Compression::Gzip => OCI_LAYER_GZIP,
                strata_archive::compress::Compression::Zstd => OCI_LAYER_ZSTD,
                strata_archive::compress::Compression::None => oci_layer_type(&media_type),
            };
            descriptors.push(serde_json::json!({"mediaType": media, "digest": digest, "size": size}));
        }
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config_size},
            "layers": descriptors,
        });
        self.put_bytes(&serde_json::to_vec(&manifest).expect("json"), Settle::Later)
    }

    /// The first bytes of a blob kept or unsettled (to tell its compression).
    fn read_head(&self, digest: &str, head: &mut [u8]) -> usize {
        let path = match self.unsettled.find(digest).map(|(tmp, _)| tmp) {
            Some(p) => p,
            None => match self.path(digest) {
                Ok(p) => p,
                Err(_) => return 0,
            },
        };
        File::open(path).and_then(|mut f| f.read(head)).unwrap_or(0)
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
        for (what, bytes, want) in [
            ("tampered", &tampered[..], "tampered or corrupt"),
            ("truncated", &data[..1000], "truncated?"),
            ("longer", &long[..], "more than the"),
        ] {
            let mut r = store.keeping(bytes, &good, n, "blob x".into()).unwrap();
            let e = read_all(&mut r).expect_err(what).to_string();
            assert!(e.contains("blob x") && e.contains(want), "{what}: {e}");
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
