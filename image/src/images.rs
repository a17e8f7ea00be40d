//! Images known to one driver, and unpacking an image into its layers.
//!
//! ```text
//! <driver dir>/images/<sha256 of name>.json   one record per complete image
//! <driver dir>/images/pending/<pid>-<n>.json  an unpack under way: the layers it will
//!                                             use; flock held by the unpacking process
//! ```
//!
//! # Who may remove a layer
//! A layer that a record or a live pending unpack lists is *in use*: the store refuses
//! to remove it ([`driver_core::holds::users_of`], checked by [`driver_core::store::Store::remove`] under the
//! store lock), whoever asks (`layer rm`, `image rm` of another image, a cleanup).
//!
//! # An unpack
//! 1. A pending record lists the image's layers (and how many were there before), so
//!    that nothing removes them while they are applied.
//! 2. Layers found present are reused only if they were made from this image's layer:
//!    committed, same diff_id, same parent ([`reusable`]). Otherwise the unpack refuses.
//! 3. The missing layers are applied, each stream opened only when its turn comes.
//! 4. Under the store lock, every layer is checked present again and the record is
//!    written (replacing an older image of the same name only now), then the pending
//!    record goes. The older image's layers that nothing uses any more are removed.
//!
//! A failed unpack removes the layers it made that nothing else uses and leaves any
//! older image of that name as it was. A killed one leaves its pending record with no
//! lock held: the next command ([`ImageStore::collect`]) removes what it made.
//!
//! Record file names are digests of the image name, so no name (`..`, `.hidden`,
//! `a/../b`) can reach or collide with the store's own files; names are checked against
//! the reference grammar ([`crate::names::validate_name`]) as well.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::chain::Image;
use crate::content::ContentStore;
use crate::error::{Error, IoContext, Result};
use crate::source::BlobSource;
use driver_core::driver::Driver;
use driver_core::error::Cause;
use driver_core::holds::locked_by_someone;
use driver_core::json::{read_json, to_bytes, write_atomic_as, write_json_as};
use driver_core::Durability;

mod unpack;
pub use unpack::{unpack, LayerEvent};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    pub name: String,
    /// Chain IDs bottom to top; the last is the image's top layer.
    pub layers: Vec<String>,
    pub config_digest: String,
    /// The digest of the image's manifest in the content store ([`crate::content`]);
    /// `None` for images stored before strata kept their content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<String>,
    /// Always true for records written now (an unpack under way has a pending record
    /// instead); kept so that records of older versions still read.
    pub complete: bool,
    #[serde(default)]
    pub pid: u32,
    /// `image rm` has begun: the image is no longer listed, and its layers are being
    /// removed. A removal killed half-way is finished by the next `image rm`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub removing: bool,
}

impl ImageRecord {
    pub fn top(&self) -> Option<&str> {
        self.layers.last().map(String::as_str)
    }
}

/// An unpack under way (or one whose process died: its lock is free).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct PendingRecord {
    name: String,
    layers: Vec<String>,
    /// How many of `layers` (from the bottom) were present before the unpack began:
    /// a cleanup never removes those.
    preexisting: usize,
    /// The unpack failed and is removing what it made: its layers are not in use.
    #[serde(default)]
    failed: bool,
}

pub struct ImageStore {
    dir: PathBuf,
    lock_path: PathBuf,
    pub content: ContentStore,
    /// How records (and, through the content store, blobs) are synced (`--sync`).
    durability: Durability,
}

/// The file a record of image `name` is kept in: a digest, so that the name never
/// becomes a path.
pub(crate) fn record_file_name(name: &str) -> String {
    file_name(name)
}

fn file_name(name: &str) -> String {
    format!("{}.json", driver_core::digest::sha256(name.as_bytes()).trim_start_matches("sha256:"))
}

/// The file name older versions used (`/` → `%2F`), still read so their images stay.
fn legacy_file_name(name: &str) -> String {
    format!("{}.json", name.replace('%', "%25").replace('/', "%2F"))
}

/// The image record at `p`, `None` when there is none; one that does not parse (torn
/// by a power cut under `--sync none`) is [`Error::Record`], naming the field.
fn read_record(p: &Path) -> Result<Option<ImageRecord>> {
    match fs::read(p) {
        Ok(data) => Error::parse_record(p, &data).map(Some),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(p, e)),
    }
}

/// Rewrites a pending record in place (not by rename: its lock is on this inode). A
/// torn write reads as corrupt, which a collector treats as a record to drop.
fn overwrite(p: &Path, rec: &PendingRecord) -> Result<()> {
    let mut f = OpenOptions::new().write(true).truncate(true).open(p).at_path(p)?;
    f.write_all(&to_bytes(rec).at_path(p)?).at_path(p)?;
    driver_core::sys::fsync(&f).at_path(p)
}

/// Whether layer `info` can stand as layer `i` of `image`: a committed layer made from
/// that layer's tar (its diff_id) over the same parent. A layer of the same ID made any
/// other way (`layer create sha256:…`, `layer apply` of other content) is not.
fn reusable(info: &driver_core::driver::LayerInfo, image: &Image, i: usize) -> bool {
    let parent = i.checked_sub(1).map(|p| image.chain_ids[p].as_str());
    !info.writable
        && info.diff_id.as_deref() == Some(image.layers[i].diff_id.as_str())
        && info.parent.as_deref() == parent
}

/// How many layers of `image`, from the bottom, are present; refuses a present layer
/// that was not made from the image's content.
pub(crate) fn present_prefix(driver: &dyn Driver, image: &Image) -> Result<usize> {
    let mut n = 0;
    for (i, id) in image.chain_ids.iter().enumerate() {
        match driver.get(id) {
            Ok(info) if reusable(&info, image, i) => n += 1,
            Ok(info) => {
                let what = if info.writable {
                    "a writable layer".to_string()
                } else {
                    format!(
                        "diff_id {}, parent {}",
                        info.diff_id.as_deref().unwrap_or("none"),
                        info.parent.as_deref().unwrap_or("none")
                    )
                };
                return Err(driver_core::Error::layer(
                    id,
                    Cause::Refused(format!(
                        "exists but was not made from layer {} of this image ({what}, not diff_id {}); \
                         it will not be reused: remove it first",
                        i + 1,
                        image.layers[i].diff_id
                    )),
                )
                .into());
            }
            Err(e) if e.is_not_found() => break,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(n)
}

/// Removes, top down, those of `layers` (a chain, bottom to top) that nothing uses;
/// stops at the first one in use, with a child, or mounted. Returns the layers removed.
pub(crate) fn remove_unused(driver: &dyn Driver, layers: &[String]) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for id in layers.iter().rev() {
        match driver.remove(id) {
            Ok(()) => removed.push(id.clone()),
            Err(e) if matches!(e.cause, Cause::HasChildren(_) | Cause::Mounted(_) | Cause::InUse(_)) => break,
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(removed)
}

/// A pending record this process holds.
pub(crate) struct Pending {
    path: PathBuf,
    rec: PendingRecord,
    _lock: Flock<File>,
}

impl ImageStore {
    /// Opens the image records of a driver folder.
    pub fn open(driver_dir: &Path) -> Result<ImageStore> {
        let dir = driver_dir.join("images");
        fs::create_dir_all(dir.join("pending")).at_path(&dir)?;
        Ok(ImageStore {
            dir,
            lock_path: driver_dir.join("lock"),
            content: ContentStore::open(driver_dir)?,
            durability: Durability::Chain,
        })
    }

    /// The same store, its records and blobs synced as `mode` says (`--sync`; the
    /// driver's layers follow [`Driver::set_durability`]).
    pub fn with_durability(mut self, mode: Durability) -> ImageStore {
        self.durability = mode;
        self.content.durability = mode;
        self
    }

    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// The folder of the image records.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Pending records whose unpack died (no one holds their lock), for `strata check`.
    pub fn dead_pending(&self) -> Result<Vec<PathBuf>> {
        let pending = self.dir.join("pending");
        let mut out = Vec::new();
        for e in fs::read_dir(&pending).at_path(&pending)? {
            let p = e.at_path(&pending)?.path();
            if p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(".tmp-")) {
                continue;
            }
            if !locked_by_someone(&p) {
                out.push(p);
            }
        }
        out.sort();
        Ok(out)
    }

    /// The driver's store lock (the same file [`driver_core::store::Store`] locks): record
    /// changes that must not interleave with a layer's removal take it, and so does a
    /// prune of the content store (a record names its blobs only once written).
    pub fn lock(&self) -> Result<Flock<File>> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock_path)
            .at_path(&self.lock_path)?;
        Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| Error::io(&self.lock_path, e.into()))
    }

    /// Finishes what dead unpacks left: removes the layers each made that nothing uses,
    /// then its pending record (and drops records of older versions left incomplete).
    /// Every command that opens a driver calls it. Returns the layers removed.
    pub fn collect(&self, driver: &dyn Driver) -> Result<Vec<String>> {
        let mut removed = Vec::new();
        let pending = self.dir.join("pending");
        for e in fs::read_dir(&pending).at_path(&pending)? {
            let p = e.at_path(&pending)?.path();
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.starts_with(".tmp-") {
                if !locked_by_someone(&p)
                    && name
                        .split('-')
                        .nth(1)
                        .and_then(|n| n.parse().ok())
                        .is_none_or(|pid| !driver_core::sys::pid_alive(pid))
                {
                    let _ = fs::remove_file(&p);
                }
                continue;
            }
            // Take its lock: if we get it, its owner is dead (or done and gone).
            let Ok(file) = File::open(&p) else { continue };
            let Ok(lock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) else { continue };
            if let Ok(Some(mut rec)) = read_json::<PendingRecord>(&p) {
                // Mark it failed first: its layers are then free to go, including from
                // the store's point of view.
                if !rec.failed {
                    rec.failed = true;
                    overwrite(&p, &rec)?;
                }
                removed.extend(remove_unused(driver, &rec.layers[rec.preexisting.min(rec.layers.len())..])?);
            }
            match fs::remove_file(&p) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(Error::io(&p, e)),
                _ => {}
            }
            drop(lock);
        }
        // Only records that parse can be known dead: a damaged one is check's.
        for rec in self.records(true)? {
            if !rec.complete && !driver_core::sys::pid_alive(rec.pid) {
                let _ = fs::remove_file(self.record_path(&rec.name));
            }
        }
        Ok(removed)
    }

    fn record_path(&self, name: &str) -> PathBuf {
        let p = self.dir.join(file_name(name));
        if !p.exists() {
            let legacy = self.dir.join(legacy_file_name(name));
            if !name.is_empty() && !name.starts_with('.') && legacy.exists() {
                return legacy;
            }
        }
        p
    }

    /// Every image record; one that does not parse fails the whole call with
    /// [`Error::Record`] (a removal must not miss an image that may list its layer).
    fn all(&self) -> Result<Vec<ImageRecord>> {
        self.records(false)
    }

    /// The image records, those that do not parse skipped (`skip_damaged`) or failing.
    fn records(&self, skip_damaged: bool) -> Result<Vec<ImageRecord>> {
        let mut out = Vec::new();
        for e in fs::read_dir(&self.dir).at_path(&self.dir)? {
            let p = e.at_path(&self.dir)?.path();
            // Skip another writer's temp file (`.tmp-…`), which may be half-written.
            let hidden = p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'));
            if !hidden && p.extension().is_some_and(|x| x == "json") {
                match read_record(&p) {
                    Ok(Some(rec)) => out.push(rec),
                    Ok(None) => {}
                    // A record a power cut left empty or torn: `check` names it and
                    // `check --repair` rebuilds it; until then the others still list.
                    Err(Error::Record { .. }) if skip_damaged => {}
                    Err(e) => return Err(e),
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Complete images that are not being removed. A record that does not parse fails
    /// the call ([`Error::Record`]): prune and removals read this, and must not
    /// take an image for gone. Listings use [`ImageStore::list_readable`].
    pub fn list(&self) -> Result<Vec<ImageRecord>> {
        Ok(Self::listed(self.all()?))
    }

    /// As [`ImageStore::list`], with a record that does not parse left out (`strata
    /// check` names it, `check --repair` rebuilds it): for showing the images, as
    /// `image ls` does after a power cut under `--sync none`.
    pub fn list_readable(&self) -> Result<Vec<ImageRecord>> {
        Ok(Self::listed(self.records(true)?))
    }

    fn listed(all: Vec<ImageRecord>) -> Vec<ImageRecord> {
        all.into_iter().filter(|r| !r.removing && (r.complete || driver_core::sys::pid_alive(r.pid))).collect()
    }

    /// A complete image that is not being removed.
    pub fn get(&self, name: &str) -> Result<ImageRecord> {
        let rec = self.get_any(name)?;
        if rec.removing {
            return Err(Error::Removing { name: name.to_string() });
        }
        Ok(rec)
    }

    fn get_any(&self, name: &str) -> Result<ImageRecord> {
        let p = self.record_path(name);
        let not_found = || Error::NotFound { name: name.to_string() };
        let rec: ImageRecord = read_record(&p)?.ok_or_else(not_found)?;
        if rec.name != name {
            return Err(not_found());
        }
        if !rec.complete {
            return Err(Error::Unpacking { name: name.to_string(), pid: rec.pid });
        }
        Ok(rec)
    }

    /// Writes a record (under the store lock).
    pub fn put(&self, rec: &ImageRecord) -> Result<()> {
        let _lock = self.lock()?;
        Ok(write_json_as(&self.dir.join(file_name(&rec.name)), rec, self.durability)?)
    }

    /// Removes image `name` and every layer of it that no other image and no
    /// container uses. Returns the layers removed.
    pub fn remove(&self, driver: &dyn Driver, name: &str) -> Result<Vec<String>> {
        let mut rec = self.get_any(name)?;
        // Every record read before anything changes: one that does not read may list
        // this image's layers or blobs, so the removal is refused, the store untouched
        // (the driver would refuse the first layer, after the mark below).
        let others = self.list()?;
        // A container on the image keeps it (as docker refuses with "image is being
        // used"): removing only the record would strand its layers.
        if let Some(top) = rec.top() {
            let users: Vec<String> = driver
                .list()?
                .into_iter()
                .filter(|l| l.writable && l.parent.as_deref() == Some(top))
                .map(|l| l.id)
                .collect();
            let shared = others.iter().any(|r| r.name != rec.name && r.top() == Some(top));
            if !users.is_empty() && !shared {
                return Err(Error::InUse { name: name.to_string(), containers: users });
            }
        }
        // Mark first, delete the record last: a removal killed in between is found
        // and finished by the next `image rm`, so no layer is stranded.
        if !rec.removing {
            rec.removing = true;
            self.put(&rec)?;
        }
        // The store refuses to remove what another image uses.
        let removed = remove_unused(driver, &rec.layers)?;
        let _lock = self.lock()?;
        // Only the record this removal marked: an unpack of the same name may have
        // written a new one meanwhile.
        let p = self.record_path(name);
        if read_record(&p)?.is_some_and(|r| r.removing) {
            fs::remove_file(&p).at_path(&p)?;
            self.remove_content(&rec)?;
        }
        Ok(removed)
    }

    /// Removes the blobs of `gone` (a record just removed or replaced) that no record
    /// names. Called under the store lock, so no record naming them is written meanwhile
    /// (a writer checks its blobs under the lock, see [`ImageStore::finish`]).
    fn remove_content(&self, gone: &ImageRecord) -> Result<()> {
        let Ok(img) = self.content.load(&gone.name, gone.manifest.as_deref()) else { return Ok(()) };
        let mut kept = std::collections::HashSet::new();
        for r in self.all()? {
            if let Ok(other) = self.content.load(&r.name, r.manifest.as_deref()) {
                kept.extend(other.blobs());
            }
        }
        for b in img.blobs() {
            if !kept.contains(&b) {
                self.content.remove(&b)?;
            }
        }
        Ok(())
    }

    /// The blobs of the content store that stored images name: each record's manifest and
    /// what it names. A manifest that no longer reads as a whole image (a blob of it lost)
    /// still keeps every digest it names; one that does not read at all is an error, so
    /// nothing is swept on a guess.
    pub fn named_blobs(&self) -> Result<BTreeSet<String>> {
        let mut named = BTreeSet::new();
        for r in self.list()? {
            let Some(m) = r.manifest.as_deref() else { continue };
            if let Ok(img) = self.content.load(&r.name, Some(m)) {
                named.extend(img.blobs());
                continue;
            }
            let p = self.content.path(m)?;
            let manifest: oci_spec::image::ImageManifest = fs::read(&p)
                .at_path(&p)
                .and_then(|b| Error::parse_json(format!("manifest {m}"), &b))
                .map_err(|e| e.in_image(&r.name))?;
            named.insert(m.to_string());
            named.insert(manifest.config().digest().to_string());
            named.extend(manifest.layers().iter().map(|l| l.digest().to_string()));
        }
        Ok(named)
    }

    /// A failed unpack keeps no blob: of `kept` (the layer blobs the content store
    /// lacked when the unpack began, which it wrote there as it read them), those no
    /// record names go, under the store lock as in a prune. Another unpack that counted
    /// on one of them copies it again when it writes its record (it checks its blobs
    /// under that lock).
    fn drop_kept(&self, kept: &[String]) -> Result<()> {
        let _lock = self.lock()?;
        let named = self.named_blobs()?;
        let gone: BTreeSet<String> =
            kept.iter().filter(|d| !named.contains(*d) && self.content.has(d)).cloned().collect();
        self.content.remove_all(&gone)
    }

    /// Starts an unpack: a pending record, locked by this process, naming the layers.
    pub(crate) fn begin(&self, name: &str, layers: &[String], preexisting: usize) -> Result<Pending> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let dir = self.dir.join("pending");
        let path = dir.join(format!("{}-{}.json", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)));
        let rec = PendingRecord { name: name.to_string(), layers: layers.to_vec(), preexisting, failed: false };
        // Lock the file before its content is visible under its name, so a collector
        // never takes a live unpack for a dead one (the lock is on the open file, which
        // keeps it through the rename).
        let mut lock = None;
        write_atomic_as(&path, self.durability, |f| {
            let l =
                Flock::lock(f.try_clone()?, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| io::Error::from(e))?;
            lock = Some(l);
            f.write_all(&to_bytes(&rec)?)
        })
        .at_path(&path)?;
        let lock = lock.expect("locked while written");
        Ok(Pending { path, rec, _lock: lock })
    }

    /// An unpack failed: removes the layers it made that nothing else uses, then its
    /// pending record. Any older image of that name is untouched.
    pub(crate) fn abandon(&self, driver: &dyn Driver, mut p: Pending) -> Result<()> {
        p.rec.failed = true;
        let made = &p.rec.layers[p.rec.preexisting..];
        if overwrite(&p.path, &p.rec).is_err() {
            // A full disk can refuse even this rewrite: on btrfs the failed layer's
            // staging subvolume gives its space back only when btrfs's cleaner has run,
            // so after an ENOSPC in a layer the disk stays full (seen on 6.x kernels;
            // the record stayed behind). Unmarked, the record keeps its own layers in
            // use, so it goes first (an unlink, which btrfs lets use its reserve on a
            // full disk), then the layers: a crash between the two leaves them listed
            // nowhere, for `image prune`.
            fs::remove_file(&p.path).at_path(&p.path)?;
            return remove_unused(driver, made).map(drop);
        }
        remove_unused(driver, made)?;
        fs::remove_file(&p.path).at_path(&p.path)
    }

    /// Ends an unpack: under the store lock, checks every layer is (still) there and
    /// made from this image, writes the record and drops the pending one. `Ok(None)`
    /// when a layer went missing meanwhile (the caller applies it again); otherwise the
    /// record it replaced, if any.
    pub(crate) fn finish(
        &self,
        driver: &dyn Driver,
        p: &Pending,
        image: &Image,
        manifest: &str,
    ) -> Result<Option<Option<ImageRecord>>> {
        let _lock = self.lock()?;
        // An `image rm` of another image may have removed a blob this one shares
        // since it was copied: copy it again (as for a layer).
        if present_prefix(driver, image)? < image.chain_ids.len() || !self.content.complete(&p.rec.name, manifest) {
            return Ok(None);
        }
        let path = self.dir.join(file_name(&p.rec.name));
        let old = read_record(&path)?.filter(|r| r.complete && !r.removing);
        let rec = ImageRecord {
            name: p.rec.name.clone(),
            layers: image.chain_ids.clone(),
            config_digest: image.config_digest.clone(),
            manifest: Some(manifest.to_string()),
            complete: true,
            pid: 0,
            removing: false,
        };
        write_json_as(&path, &rec, self.durability)?;
        if let Some(old) = &old {
            // Its blobs that nothing names now go (its layers go after the lock).
            let _ = self.remove_content(old);
        }
        let legacy = self.dir.join(legacy_file_name(&rec.name));
        if legacy != path && legacy.exists() {
            let _ = fs::remove_file(legacy);
        }
        fs::remove_file(&p.path).at_path(&p.path)?;
        Ok(Some(old))
    }
}
