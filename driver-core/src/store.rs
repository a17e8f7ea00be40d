//! The layer metadata store every driver shares.
//!
//! ```text
//! <driver dir>/lock              flock: held (briefly) for every change to the metadata
//! <driver dir>/meta/<id>.json    one file per listed layer; a layer exists iff this does
//! <driver dir>/meta/<id>.files   its content record (crate::record), read-only layers only
//! <driver dir>/layers/<id>/      the layer's content, laid out by the driver
//! <driver dir>/staging/<n>/      work in progress (an apply, a removal)
//! <driver dir>/staging/<n>.lock  flock held by the process doing that work
//! <driver dir>/staging/<n>.meta  the record of a staged layer, before it is listed
//! <driver dir>/staging/<n>.files its content record, renamed in before the .meta
//! ```
//!
//! # Atomicity
//! A layer is made in `staging/`, without the store lock, so a long apply blocks no
//! one. Its record is written beside it (`staging/<n>.meta`, [`Store::prepare`]). Then
//! the filesystem is synced once (`syncfs`, [`Store::sync`]): content and record are on
//! disk. Listing ([`Store::list_prepared`], under the lock) renames the content into
//! `layers/<id>` and only then the record to `meta/<id>.json`; [`Store::seal`] fsyncs
//! those two directories, after which the layer survives a power cut. A chain of layers
//! is synced once and sealed once; [`Store::commit`] does all four for one layer.
//!
//! Under `--sync none` ([`Durability`], kept by the store: [`Store::set_durability`])
//! nothing is synced; under `--sync file` the sync is one `fsync(2)` per file and
//! directory as they are written, and the record's own, instead of the `syncfs`.
//!
//! A crash before the seal may keep any subset of those renames, and recovery makes
//! every subset whole: content without a record is discarded, a record without content
//! is dropped, and so is a record whose parent is not listed (its parent's renames were
//! lost), so a listed layer always has its whole content and its whole chain. Removal
//! unlists first (deletes the meta file) and deletes the content after.
//!
//! # Recovery
//! [`Store::open`] (every command's start) takes the lock and discards what dead
//! processes left: staging entries (and the records beside them) whose `.lock` no one
//! holds, content in `layers/` without a meta file, meta files whose content or parent
//! is gone, and temp files.
//!
//! # Locking
//! One exclusive `flock` per driver folder, held only for metadata transactions
//! (check-and-commit, remove, mount count changes), never during extraction, so
//! readers and other writers wait milliseconds, not for a whole unpack. Two processes
//! applying the same ID both stage; the first commits and the second finds the layer
//! present and drops its work ([`Cause::Exists`]), so a layer is never applied twice.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::driver::LayerInfo;
use crate::durability::Durability;
use crate::error::{Cause, Context, Error, Result};

/// Everything the store records about a layer: what the [`Driver`](crate::Driver)
/// tells of it ([`LayerInfo`], whose fields it reads as its own) and the driver's own
/// facts. On disk one flat JSON object, as before the two were one type.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LayerMeta {
    #[serde(flatten)]
    pub layer: LayerInfo,
    /// Driver-specific facts (a short link name, the mount options used, ...).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl LayerMeta {
    /// The record of `layer`, with no driver facts yet.
    pub fn of(layer: LayerInfo) -> LayerMeta {
        LayerMeta { layer, extra: serde_json::Map::new() }
    }

    pub fn info(&self) -> LayerInfo {
        self.layer.clone()
    }
}

impl std::ops::Deref for LayerMeta {
    type Target = LayerInfo;
    fn deref(&self) -> &LayerInfo {
        &self.layer
    }
}

impl std::ops::DerefMut for LayerMeta {
    fn deref_mut(&mut self) -> &mut LayerInfo {
        &mut self.layer
    }
}

/// How a driver throws away a directory it made (a layer that is a subvolume needs an
/// ioctl; plain trees are removed).
pub type Discard = Arc<dyn Fn(&Path) -> io::Result<()> + Send + Sync>;

/// Discards a plain directory tree.
pub fn discard_tree(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// The metadata store of one driver folder.
pub struct Store {
    dir: PathBuf,
    discard: Discard,
    /// The `--sync` mode ([`Durability`]) of the work done through this store.
    durability: AtomicU8,
}

/// The exclusive store lock; released on drop.
pub struct StoreLock {
    _lock: Flock<File>,
}

/// Work in progress on one layer, in `staging/`. Discarded on drop unless committed.
pub struct Staging {
    /// Where the driver makes the layer's content. Does not exist yet.
    pub path: PathBuf,
    pub id: String,
    pub parent: Option<String>,
    /// How the content made here is synced (the store's mode when the work began).
    pub durability: Durability,
    lock_path: PathBuf,
    _lock: Option<Flock<File>>,
    discard: Discard,
    done: bool,
}

impl std::fmt::Debug for Staging {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Staging").field("id", &self.id).field("path", &self.path).finish()
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.done {
            let _ = (self.discard)(&self.path);
        }
        let _ = fs::remove_file(self.record_path());
        let _ = fs::remove_file(self.files_path());
        let _ = fs::remove_file(&self.lock_path);
    }
}

impl Staging {
    /// `staging/<n>.meta`: the layer's record, written by [`Store::prepare`].
    fn record_path(&self) -> PathBuf {
        self.lock_path.with_extension("meta")
    }

    /// `staging/<n>.files`: the layer's content record, written by [`Store::prepare_files`].
    fn files_path(&self) -> PathBuf {
        self.lock_path.with_extension("files")
    }
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn unique_name(prefix: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{prefix}{}-{}-{nanos}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Layer IDs become file names: keep them to a safe alphabet.
pub fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id.as_bytes()[0].is_ascii_alphanumeric()
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::new(Cause::InvalidId(id.to_string())))
    }
}

impl Store {
    /// Opens (creating if needed) the store in `dir` and recovers from any process
    /// that died mid-change.
    pub fn open(dir: &Path, discard: Discard) -> Result<Store> {
        for sub in ["meta", "layers", "staging"] {
            fs::create_dir_all(dir.join(sub)).at_path(dir.join(sub))?;
        }
        let store = Store { dir: dir.to_path_buf(), discard, durability: AtomicU8::new(Durability::Chain.to_u8()) };
        let lock = store.lock()?;
        store.recover(&lock)?;
        Ok(store)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// How the work done through this store from now on is synced (`--sync`).
    pub fn set_durability(&self, mode: Durability) {
        self.durability.store(mode.to_u8(), Ordering::Relaxed);
    }

    pub fn durability(&self) -> Durability {
        Durability::from_u8(self.durability.load(Ordering::Relaxed))
    }

    pub fn discarder(&self) -> Discard {
        self.discard.clone()
    }

    /// Takes the exclusive store lock (blocking).
    pub fn lock(&self) -> Result<StoreLock> {
        let path = self.dir.join("lock");
        let file = OpenOptions::new().create(true).truncate(false).write(true).open(&path).at_path(&path)?;
        let lock = Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| Error::from(e).with_path(&path))?;
        Ok(StoreLock { _lock: lock })
    }

    fn meta_path(&self, id: &str) -> PathBuf {
        self.dir.join("meta").join(format!("{id}.json"))
    }

    /// Where layer `id`'s content record ([`crate::record`]) is kept.
    pub fn files_path(&self, id: &str) -> PathBuf {
        self.dir.join("meta").join(format!("{id}.files"))
    }

    /// Where layer `id`'s metadata is kept (`strata check` reads it raw).
    pub fn record_file(&self, id: &str) -> PathBuf {
        self.meta_path(id)
    }

    /// Layer `id`'s content record: `None` when it has none; a record that does not
    /// parse (empty, torn) is [`Cause::Corrupt`].
    pub fn content_record(&self, id: &str) -> Result<Option<crate::record::Record>> {
        let path = self.files_path(id);
        match fs::read(&path) {
            Ok(d) => serde_json::from_slice(&d)
                .map(Some)
                .map_err(|e| Error::at(id, &path, Cause::Corrupt(format!("content record: {e}")))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::at(id, &path, e)),
        }
    }

    /// Writes the content record of staged layer `staging.id` beside its staging entry
    /// (synced with the content by [`Store::sync`], listed with it).
    pub fn prepare_files(&self, staging: &Staging, record: &crate::record::Record) -> Result<()> {
        let path = staging.files_path();
        let data = serde_json::to_vec(record).map_err(|e| Error::at(&staging.id, &path, io::Error::other(e)))?;
        let mut f = File::create(&path).map_err(|e| Error::at(&staging.id, &path, e))?;
        f.write_all(&data).map_err(|e| Error::at(&staging.id, &path, e))?;
        // Under `--sync file` synced by itself (no syncfs follows); its name is synced
        // with the staging folder's in [`Store::prepare`].
        staging.durability.sync_written(&f).map_err(|e| Error::at(&staging.id, &path, e))
    }

    /// Where a committed layer's content lives.
    pub fn layer_dir(&self, id: &str) -> PathBuf {
        self.dir.join("layers").join(id)
    }

    pub fn exists(&self, id: &str) -> bool {
        self.meta_path(id).exists()
    }

    pub fn get(&self, id: &str) -> Result<LayerMeta> {
        validate_id(id).map_err(|e| e.in_layer(id))?;
        let path = self.meta_path(id);
        let data = match fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Error::layer(id, Cause::NotFound)),
            Err(e) => return Err(Error::at(id, &path, e)),
        };
        serde_json::from_slice(&data).map_err(|e| Error::at(id, &path, Cause::Corrupt(e.to_string())))
    }

    pub fn list(&self) -> Result<Vec<LayerMeta>> {
        let dir = self.dir.join("meta");
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).at_path(&dir)? {
            let name = entry.at_path(&dir)?.file_name();
            let name = name.to_string_lossy();
            if let Some(id) = name.strip_suffix(".json") {
                if !name.starts_with('.') {
                    match self.get(id) {
                        Ok(m) => out.push(m),
                        // Removed by another process since the listing.
                        Err(e) if e.is_not_found() => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Every layer's metadata file, by ID, parsed or not (`strata check`): a record that
    /// does not parse is the error, which [`Store::list`] would stop at.
    pub fn list_raw(&self) -> Result<Vec<(String, Result<LayerMeta>)>> {
        let dir = self.dir.join("meta");
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).at_path(&dir)? {
            let name = entry.at_path(&dir)?.file_name().to_string_lossy().into_owned();
            if let Some(id) = name.strip_suffix(".json").filter(|_| !name.starts_with('.')) {
                match self.get(id) {
                    Err(e) if e.is_not_found() => {}
                    got => out.push((id.to_string(), got)),
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Writes a layer's metadata atomically. Needs the lock.
    pub fn put(&self, _lock: &StoreLock, meta: &LayerMeta) -> Result<()> {
        let path = self.meta_path(&meta.id);
        crate::json::write_atomic(&path, |f| f.write_all(&crate::json::to_bytes(meta)?))
            .map(drop)
            .map_err(|e| Error::at(&meta.id, &path, e))
    }

    /// Changes a listed layer's metadata under the lock.
    pub fn update<T>(&self, id: &str, f: impl FnOnce(&mut LayerMeta) -> Result<T>) -> Result<T> {
        let lock = self.lock()?;
        let mut meta = self.get(id)?;
        let out = f(&mut meta)?;
        self.put(&lock, &meta)?;
        Ok(out)
    }

    /// Counts one more user of layer `id`'s view. `make_view` runs under the lock with
    /// `first` set when there was no user yet, so a driver makes the view only then.
    pub fn acquire_mount(&self, id: &str, make_view: impl FnOnce(&mut LayerMeta, bool) -> Result<()>) -> Result<()> {
        self.update(id, |m| {
            make_view(m, m.mounts == 0)?;
            m.mounts += 1;
            Ok(())
        })
    }

    /// Releases one user of layer `id`'s view; `drop_view` runs (under the lock) when it
    /// was the last one. A layer with no user is [`Cause::NotMounted`].
    pub fn release_mount(&self, id: &str, drop_view: impl FnOnce() -> Result<()>) -> Result<()> {
        self.update(id, |m| {
            if m.mounts == 0 {
                return Err(Error::layer(id, Cause::NotMounted));
            }
            if m.mounts == 1 {
                drop_view()?;
            }
            m.mounts -= 1;
            Ok(())
        })
    }

    /// IDs of the layers whose parent is `id`, listed or being made.
    pub fn children(&self, id: &str) -> Result<Vec<String>> {
        let mut out: Vec<String> =
            self.list()?.into_iter().filter(|m| m.parent.as_deref() == Some(id)).map(|m| m.layer.id).collect();
        for (_, parent) in self.live_staging()? {
            if parent.as_deref() == Some(id) {
                out.push("(a layer being applied)".into());
            }
        }
        Ok(out)
    }

    /// Staging entries whose owner is alive, with the parent each records.
    fn live_staging(&self) -> Result<Vec<(PathBuf, Option<String>)>> {
        let dir = self.dir.join("staging");
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).at_path(&dir)? {
            let path = entry.at_path(&dir)?.path();
            if path.extension().is_some_and(|e| e == "lock") {
                let file = match File::open(&path) {
                    Ok(f) => f,
                    Err(_) => continue,
                };
                if let Err((file, _)) = Flock::lock(file, FlockArg::LockSharedNonblock) {
                    let parent = fs::read_to_string(&path).ok().filter(|s| !s.is_empty());
                    drop(file);
                    out.push((path.with_extension(""), parent));
                }
            }
        }
        Ok(out)
    }

    /// Starts making layer `id` over `parent`: checks both, reserves a staging path.
    pub fn begin(&self, id: &str, parent: Option<&str>) -> Result<Staging> {
        self.begin_with(id, parent, true)
    }

    /// [`Store::begin`] for a layer whose parent may still be being made (a chain
    /// staged in parallel); the parent is checked at commit.
    pub fn begin_before_parent(&self, id: &str, parent: Option<&str>) -> Result<Staging> {
        self.begin_with(id, parent, false)
    }

    fn begin_with(&self, id: &str, parent: Option<&str>, check_parent: bool) -> Result<Staging> {
        validate_id(id).map_err(|e| e.in_layer(id))?;
        if let Some(p) = parent {
            validate_id(p).map_err(|e| e.in_layer(id))?;
        }
        let _lock = self.lock()?;
        if self.exists(id) {
            return Err(Error::layer(id, Cause::Exists));
        }
        if let Some(p) = parent.filter(|_| check_parent) {
            if !self.exists(p) {
                return Err(Error::layer(id, Cause::ParentNotFound(p.to_string())));
            }
        }
        self.staging_entry("", id, parent, &_lock)
    }

    /// A new staging entry, its `.lock` held by this process (so no other process's
    /// recovery discards it). Made under the store lock, for the same reason.
    fn staging_entry(&self, prefix: &str, id: &str, parent: Option<&str>, _lock: &StoreLock) -> Result<Staging> {
        let name = unique_name(prefix);
        let staging = self.dir.join("staging");
        let lock_path = staging.join(format!("{name}.lock"));
        let mut file = File::create(&lock_path).at_path(&lock_path)?;
        file.write_all(parent.unwrap_or("").as_bytes()).at_path(&lock_path)?;
        let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| Error::at(id, &lock_path, e))?;
        Ok(Staging {
            path: staging.join(name),
            id: id.to_string(),
            parent: parent.map(str::to_string),
            durability: self.durability(),
            lock_path,
            _lock: Some(lock),
            discard: self.discard.clone(),
            done: false,
        })
    }

    /// Commits staged content as layer `meta.id`: [`Store::prepare`], [`Store::sync`],
    /// [`Store::list_prepared`] and [`Store::seal`] for one layer. If another process
    /// committed the same ID meanwhile, the staged work is dropped and [`Cause::Exists`]
    /// returned.
    pub fn commit(&self, mut staging: Staging, meta: LayerMeta) -> Result<()> {
        self.prepare(&mut staging, meta)?;
        self.sync(&staging.id)?;
        self.list_prepared(staging)?;
        self.seal()
    }

    /// Writes the record of staged layer `staging.id` beside its staging entry, not
    /// synced yet: [`Store::sync`] does, with the content.
    pub fn prepare(&self, staging: &mut Staging, mut meta: LayerMeta) -> Result<()> {
        meta.id = staging.id.clone();
        meta.parent = staging.parent.clone();
        if meta.created == 0 {
            meta.created = now_secs();
        }
        let path = staging.record_path();
        let mut f = File::create(&path).map_err(|e| Error::at(&meta.id, &path, e))?;
        f.write_all(&crate::json::to_bytes(&meta).map_err(|e| Error::at(&meta.id, &path, e))?)
            .map_err(|e| Error::at(&meta.id, &path, e))?;
        // Under `file` the record is synced by itself, and so are the layer's top
        // directory (the driver made it) and the staging folder naming both: no syncfs
        // follows.
        let mode = staging.durability;
        mode.sync_written(&f).map_err(|e| Error::at(&meta.id, &path, e))?;
        for dir in [staging.path.as_path(), &self.dir.join("staging")] {
            if dir.exists() {
                mode.sync_written_dir(dir).map_err(|e| Error::at(&meta.id, dir, e))?;
            }
        }
        Ok(())
    }

    /// Syncs the store's filesystem (`syncfs`): everything staged and prepared so far
    /// is on disk. `id` names errors.
    /// Under `--sync none` and `--sync file` it syncs nothing (see [`Durability`]).
    pub fn sync(&self, id: &str) -> Result<()> {
        let dir = self.dir.join("staging");
        self.durability().sync_fs(&dir).map_err(|e| Error::at(id, &dir, e))
    }

    /// Lists a prepared (and synced) layer: under the lock, renames its content into
    /// `layers/<id>`, then its record into `meta/<id>.json`. Durable once
    /// [`Store::seal`] returns. [`Cause::Exists`] when another process listed the ID
    /// first (the staged work is dropped).
    pub fn list_prepared(&self, mut staging: Staging) -> Result<()> {
        let id = staging.id.clone();
        let _lock = self.lock()?;
        if self.exists(&id) {
            return Err(Error::layer(&id, Cause::Exists));
        }
        if let Some(p) = &staging.parent {
            if !self.exists(p) {
                return Err(Error::layer(&id, Cause::ParentNotFound(p.clone())));
            }
        }
        let dest = self.layer_dir(&id);
        if dest.exists() {
            // Left by a process killed during a removal.
            (self.discard)(&dest).map_err(|e| Error::at(&id, &dest, e))?;
        }
        fs::rename(&staging.path, &dest).map_err(|e| Error::at(&id, &dest, e))?;
        staging.done = true;
        // The content record before the metadata: a listed layer has its record (a
        // record without metadata is discarded at the next start).
        let files = staging.files_path();
        if files.exists() {
            if let Err(e) = fs::rename(&files, self.files_path(&id)) {
                let _ = (self.discard)(&dest);
                return Err(Error::at(&id, &files, e));
            }
        }
        let record = staging.record_path();
        let meta = self.meta_path(&id);
        if let Err(e) = fs::rename(&record, &meta) {
            let _ = (self.discard)(&dest);
            return Err(Error::at(&id, &record, e));
        }
        Ok(())
    }

    /// Starts making layer `id` over `parent` again, to replace what is there (`strata
    /// check --repair`): as [`Store::begin`], but the layer may exist (its metadata
    /// may even be unreadable). [`Store::swap`] puts the new one in place.
    pub fn begin_replace(&self, id: &str, parent: Option<&str>) -> Result<Staging> {
        validate_id(id).map_err(|e| e.in_layer(id))?;
        let lock = self.lock()?;
        if let Some(p) = parent {
            if !self.exists(p) {
                return Err(Error::layer(id, Cause::ParentNotFound(p.to_string())));
            }
        }
        self.staging_entry("", id, parent, &lock)
    }

    /// Swaps staged layer `staging.id` in for the content, metadata and content record
    /// there now, which are discarded; refused while the old layer is mounted (`busy`
    /// runs under the lock and refuses for views over it). The new layer is synced
    /// before the swap and sealed after it, so a crash leaves the old layer or the new.
    pub fn swap(&self, mut staging: Staging, meta: LayerMeta, busy: impl FnOnce() -> Result<()>) -> Result<()> {
        let id = staging.id.clone();
        self.prepare(&mut staging, meta)?;
        self.sync(&id)?;
        let lock = self.lock()?;
        if let Ok(old) = self.get(&id) {
            if old.mounts > 0 {
                return Err(Error::layer(&id, Cause::Mounted(old.mounts)));
            }
        }
        busy()?;
        let content = self.layer_dir(&id);
        let mut trash = self.staging_entry("rm-", &id, None, &lock)?;
        match fs::rename(&content, &trash.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::at(&id, &content, e)),
        }
        // From here the old content is out of the way and the metadata still names the
        // layer: a crash leaves a record without content, which the next start unlists.
        fs::rename(&staging.path, &content).map_err(|e| Error::at(&id, &content, e))?;
        staging.done = true;
        let files = staging.files_path();
        if files.exists() {
            fs::rename(&files, self.files_path(&id)).map_err(|e| Error::at(&id, &files, e))?;
        } else {
            let _ = fs::remove_file(self.files_path(&id));
        }
        let record = staging.record_path();
        fs::rename(&record, self.meta_path(&id)).map_err(|e| Error::at(&id, &record, e))?;
        self.seal()?;
        drop(lock);
        if trash.path.exists() {
            (self.discard)(&trash.path).map_err(|e| Error::at(&id, &trash.path, e))?;
        }
        trash.done = true;
        Ok(())
    }

    /// Writes layer `id`'s content record in place, atomically (`check --repair`).
    pub fn put_files(&self, id: &str, record: &crate::record::Record) -> Result<()> {
        let path = self.files_path(id);
        crate::json::write_atomic(&path, |f| f.write_all(&serde_json::to_vec(record).map_err(io::Error::other)?))
            .map(drop)
            .map_err(|e| Error::at(id, &path, e))
    }

    /// Staging entries no live process holds: what a killed process left (the next
    /// [`Store::open`] discards them), read without the lock and without opening the
    /// store, for `strata check`.
    pub fn leftovers(dir: &Path) -> Vec<PathBuf> {
        let staging = dir.join("staging");
        let Ok(entries) = fs::read_dir(&staging) else { return Vec::new() };
        let mut out: Vec<PathBuf> = Vec::new();
        for e in entries.flatten() {
            let path = e.path();
            if path.extension().is_some_and(|x| x == "lock" || x == "meta" || x == "files") {
                continue;
            }
            let lock = path.with_extension("lock");
            let live = File::open(&lock).is_ok_and(|f| Flock::lock(f, FlockArg::LockSharedNonblock).is_err());
            if !live {
                out.push(path);
            }
        }
        out.sort();
        out
    }

    /// Makes the layers listed so far survive a power cut: fsyncs `layers/`, then `meta/`.
    pub fn seal(&self) -> Result<()> {
        for sub in ["layers", "meta"] {
            let dir = self.dir.join(sub);
            self.durability().sync_record_dir(&dir).map_err(|e| Error::new(e).with_path(&dir))?;
        }
        Ok(())
    }

    /// Unlists layer `id` and discards its content. `check` runs under the lock
    /// before anything changes (the driver refuses there, e.g. while mounted).
    pub fn remove(&self, id: &str, check: impl FnOnce(&LayerMeta) -> Result<()>) -> Result<LayerMeta> {
        let lock = self.lock()?;
        let meta = self.get(id)?;
        if meta.mounts > 0 {
            return Err(Error::layer(id, Cause::Mounted(meta.mounts)));
        }
        let children = self.children(id)?;
        if !children.is_empty() {
            return Err(Error::layer(id, Cause::HasChildren(children.join(", "))));
        }
        // An image (or an unpack under way) that lists the layer keeps it, as a child
        // does: removing it would leave the image without its layers.
        let users = crate::holds::users_of(&self.dir, id)?;
        if !users.is_empty() {
            return Err(Error::layer(id, Cause::InUse(users.join(", "))));
        }
        check(&meta)?;
        // Unlist first: a kill after this leaves only unlisted content, which the next
        // start discards.
        let meta_path = self.meta_path(id);
        fs::remove_file(&meta_path).map_err(|e| Error::at(id, &meta_path, e))?;
        let _ = fs::remove_file(self.files_path(id));
        self.durability().sync_record_dir(&self.dir.join("meta")).map_err(|e| Error::at(id, &meta_path, e))?;
        // The content moves, still under the lock, into a staging entry this process
        // holds: another process's recovery neither races the move nor discards it.
        let content = self.layer_dir(id);
        let mut trash = self.staging_entry("rm-", id, None, &lock)?;
        match fs::rename(&content, &trash.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::at(id, &content, e)),
        }
        drop(lock);
        if trash.path.exists() {
            (self.discard)(&trash.path).map_err(|e| Error::at(id, &trash.path, e))?;
        }
        trash.done = true;
        Ok(meta)
    }

    /// Unlists layers whose parent is not listed: a crash before [`Store::seal`] can
    /// keep a layer's record and lose its parent's (the renames of a chain reach the
    /// disk in any order). Records that do not parse are left as they are. Needs the lock.
    fn drop_orphans(&self) -> Result<()> {
        let metas: Vec<LayerMeta> = {
            let dir = self.dir.join("meta");
            let mut v = Vec::new();
            for entry in fs::read_dir(&dir).at_path(&dir)? {
                let name = entry.at_path(&dir)?.file_name().to_string_lossy().into_owned();
                if let Some(id) = name.strip_suffix(".json").filter(|_| !name.starts_with('.')) {
                    v.extend(self.get(id).ok());
                }
            }
            v
        };
        let mut listed: std::collections::HashSet<&str> = metas.iter().map(|m| m.id.as_str()).collect();
        loop {
            let orphans: Vec<&LayerMeta> = metas
                .iter()
                .filter(|m| listed.contains(m.id.as_str()))
                .filter(|m| m.parent.as_deref().is_some_and(|p| !listed.contains(p) && !self.exists(p)))
                .collect();
            if orphans.is_empty() {
                return Ok(());
            }
            for m in orphans {
                let _ = fs::remove_file(self.meta_path(&m.id));
                listed.remove(m.id.as_str());
            }
        }
    }

    /// Discards what dead processes left behind. Needs the lock.
    fn recover(&self, _lock: &StoreLock) -> Result<()> {
        let staging = self.dir.join("staging");
        let live: Vec<PathBuf> = self.live_staging()?.into_iter().map(|(p, _)| p).collect();
        for entry in fs::read_dir(&staging).at_path(&staging)? {
            let path = entry.at_path(&staging)?.path();
            let beside = path.extension().is_some_and(|e| e == "lock" || e == "meta" || e == "files");
            let base = if beside { path.with_extension("") } else { path.clone() };
            if live.contains(&base) {
                continue;
            }
            if beside {
                let _ = fs::remove_file(&path);
            } else {
                // Leftovers that cannot be discarded now stay for the next start: one
                // (a subvolume layer with a path beyond PATH_MAX did) must not make every
                // command on the store fail, `layer ls` included.
                let _ = (self.discard)(&path);
            }
        }
        let meta_dir = self.dir.join("meta");
        for entry in fs::read_dir(&meta_dir).at_path(&meta_dir)? {
            let entry = entry.at_path(&meta_dir)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(".tmp-") {
                let _ = fs::remove_file(entry.path());
            } else if let Some(id) = name.strip_suffix(".json") {
                if !self.layer_dir(id).exists() {
                    // Content gone (removed by hand, or never there): unlist.
                    let _ = fs::remove_file(entry.path());
                    let _ = fs::remove_file(self.files_path(id));
                }
            } else if let Some(id) = name.strip_suffix(".files") {
                if !self.meta_path(id).exists() {
                    // A content record whose layer never got listed (killed between the
                    // two renames) or was unlisted.
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        self.drop_orphans()?;
        let layers = self.dir.join("layers");
        for entry in fs::read_dir(&layers).at_path(&layers)? {
            let entry = entry.at_path(&layers)?;
            let id = entry.file_name().to_string_lossy().into_owned();
            if !self.meta_path(&id).exists() {
                let _ = (self.discard)(&entry.path());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &Path) -> Store {
        Store::open(dir, Arc::new(discard_tree)).unwrap()
    }

    #[test]
    fn commit_lists_and_remove_unlists() {
        let tmp = tempfile::tempdir().unwrap();
        let s = store(tmp.path());
        let st = s.begin("a", None).unwrap();
        fs::create_dir(&st.path).unwrap();
        fs::write(st.path.join("f"), b"x").unwrap();
        s.commit(st, LayerMeta::of(LayerInfo { size: 1, ..Default::default() })).unwrap();
        assert_eq!(s.list().unwrap().len(), 1);
        assert!(s.layer_dir("a").join("f").exists());
        assert!(matches!(s.begin("a", None).unwrap_err().cause, Cause::Exists));
        assert!(matches!(s.begin("b", Some("zz")).unwrap_err().cause, Cause::ParentNotFound(_)));
        let st = s.begin("b", Some("a")).unwrap();
        fs::create_dir(&st.path).unwrap();
        s.commit(st, LayerMeta::default()).unwrap();
        assert!(matches!(s.remove("a", |_| Ok(())).unwrap_err().cause, Cause::HasChildren(_)));
        s.remove("b", |_| Ok(())).unwrap();
        s.remove("a", |_| Ok(())).unwrap();
        assert!(s.list().unwrap().is_empty());
        assert_eq!(fs::read_dir(tmp.path().join("staging")).unwrap().count(), 0);
    }

    #[test]
    fn dropped_staging_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let s = store(tmp.path());
        let st = s.begin("a", None).unwrap();
        fs::create_dir(&st.path).unwrap();
        drop(st);
        assert_eq!(fs::read_dir(tmp.path().join("staging")).unwrap().count(), 0);
        assert!(s.list().unwrap().is_empty());
    }

    #[test]
    fn recovery_discards_dead_work_and_orphans() {
        let tmp = tempfile::tempdir().unwrap();
        let s = store(tmp.path());
        // What a killed process leaves: a staging dir and lock nobody holds, content
        // without metadata, metadata without content, a temp file.
        fs::create_dir_all(tmp.path().join("staging/123-0-0/x")).unwrap();
        fs::write(tmp.path().join("staging/123-0-0.lock"), b"").unwrap();
        fs::create_dir_all(tmp.path().join("layers/orphan/x")).unwrap();
        fs::write(
            tmp.path().join("meta/ghost.json"),
            br#"{"id":"ghost","parent":null,"writable":false,"diff_id":null,"size":0,"mounts":0,"created":0}"#,
        )
        .unwrap();
        fs::write(tmp.path().join("meta/.tmp-1"), b"{").unwrap();
        // A live staging entry (its lock held) must survive.
        let live = s.begin("live", None).unwrap();
        fs::create_dir(&live.path).unwrap();
        let s2 = store(tmp.path());
        assert!(s2.list().unwrap().is_empty());
        assert!(!tmp.path().join("layers/orphan").exists());
        assert!(!tmp.path().join("staging/123-0-0").exists());
        assert!(!tmp.path().join("meta/.tmp-1").exists());
        assert!(live.path.exists());
        drop(live);
    }

    #[test]
    fn leftovers_that_cannot_be_discarded_do_not_stop_the_store() {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir_all(tmp.path().join("staging/rm-1-0-0/x")).unwrap();
        fs::create_dir_all(tmp.path().join("layers/orphan/x")).unwrap();
        let failing: Discard = Arc::new(|_| Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG)));
        let s = Store::open(tmp.path(), failing.clone()).expect("the store opens");
        assert!(s.list().unwrap().is_empty());
        let st = s.begin("a", None).unwrap();
        fs::create_dir(&st.path).unwrap();
        s.commit(st, LayerMeta::default()).unwrap();
        assert_eq!(Store::open(tmp.path(), failing).unwrap().list().unwrap().len(), 1);
        // Once it can be discarded, the next start does.
        store(tmp.path());
        assert!(!tmp.path().join("staging/rm-1-0-0").exists() && !tmp.path().join("layers/orphan").exists());
    }

    /// Every state a crash can leave of a chain of three layers listed with one sync and
    /// one seal (the renames of content and records reached the disk in any subset):
    /// recovery lists a prefix of the chain, each layer with its content, and nothing else.
    #[test]
    fn recovery_after_a_crash_mid_chain_lists_a_whole_prefix() {
        let ids = ["a", "b", "c"];
        // 6 renames: content then record, per layer; each kept or lost.
        for kept in 0u32..64 {
            let tmp = tempfile::tempdir().unwrap();
            let s = store(tmp.path());
            let mut staged = Vec::new();
            for (i, id) in ids.iter().enumerate() {
                let parent = i.checked_sub(1).map(|p| ids[p]);
                let mut st = s.begin_before_parent(id, parent).unwrap();
                fs::create_dir(&st.path).unwrap();
                fs::write(st.path.join("f"), id).unwrap();
                s.prepare(&mut st, LayerMeta::default()).unwrap();
                staged.push(st);
            }
            s.sync("a").unwrap();
            // What reached the disk: the renames `kept` names, done by hand.
            for (i, st) in staged.iter_mut().enumerate() {
                if kept & (1 << (2 * i)) != 0 {
                    fs::rename(&st.path, s.layer_dir(&st.id)).unwrap();
                }
                if kept & (1 << (2 * i + 1)) != 0 {
                    fs::rename(st.record_path(), s.meta_path(&st.id)).unwrap();
                }
                // The process died: nothing of its own is cleaned up.
                st.done = true;
                st.lock_path = PathBuf::new();
            }
            drop(staged);
            let s = store(tmp.path());
            let listed: Vec<String> = s.list().unwrap().into_iter().map(|m| m.layer.id).collect();
            let prefix = ids.iter().take_while(|id| {
                let i = ids.iter().position(|x| x == *id).unwrap();
                kept & (3 << (2 * i)) == 3 << (2 * i)
            });
            assert_eq!(listed, prefix.map(|s| s.to_string()).collect::<Vec<_>>(), "renames kept {kept:06b}");
            for id in &listed {
                assert_eq!(fs::read_to_string(s.layer_dir(id).join("f")).unwrap(), *id, "{kept:06b}");
            }
            let mut left: Vec<String> = fs::read_dir(tmp.path().join("layers"))
                .unwrap()
                .chain(fs::read_dir(tmp.path().join("staging")).unwrap())
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            left.sort();
            assert_eq!(left, listed, "only listed layers left ({kept:06b})");
        }
    }

    #[test]
    fn a_chain_listed_with_one_sync_and_one_seal() {
        let tmp = tempfile::tempdir().unwrap();
        let s = store(tmp.path());
        let mut a = s.begin("a", None).unwrap();
        let mut b = s.begin_before_parent("b", Some("a")).unwrap();
        for st in [&a, &b] {
            fs::create_dir(&st.path).unwrap();
        }
        s.prepare(&mut a, LayerMeta::of(LayerInfo { size: 7, ..Default::default() })).unwrap();
        s.prepare(&mut b, LayerMeta::default()).unwrap();
        s.sync("a").unwrap();
        // Listed bottom to top: a child before its parent is refused.
        let b_path = b.path.clone();
        assert!(matches!(s.list_prepared(b).unwrap_err().cause, Cause::ParentNotFound(_)));
        assert!(!b_path.exists(), "the refused layer's staging is dropped");
        s.list_prepared(a).unwrap();
        s.seal().unwrap();
        let got = s.get("a").unwrap();
        assert_eq!((got.size, got.parent.clone(), got.created > 0), (7, None, true));
        assert_eq!(fs::read_dir(tmp.path().join("staging")).unwrap().count(), 0);
    }

    /// A record is one flat JSON object, as the store wrote it when LayerMeta had its
    /// own copy of LayerInfo's fields: records of older stores read back whole.
    #[test]
    fn a_record_is_one_flat_object() {
        let flat = r#"{"id":"a","parent":"p","writable":true,"diff_id":"sha256:00","size":3,"mounts":1,"created":9,"extra":{"link":"L"}}"#;
        let m: LayerMeta = serde_json::from_str(flat).unwrap();
        assert_eq!((m.id.as_str(), m.parent.as_deref(), m.writable, m.size, m.mounts), ("a", Some("p"), true, 3, 1));
        assert_eq!((m.diff_id.as_deref(), m.created, m.extra["link"].as_str()), (Some("sha256:00"), 9, Some("L")));
        assert_eq!(serde_json::to_string(&m).unwrap(), flat);
        let bare: LayerMeta = serde_json::from_str(
            r#"{"id":"b","parent":null,"writable":false,"diff_id":null,"size":0,"mounts":0,"created":1}"#,
        )
        .unwrap();
        assert!(bare.extra.is_empty() && bare.parent.is_none() && bare.diff_id.is_none());
    }

    #[test]
    fn rejects_unsafe_ids() {
        for bad in ["", "../x", "a/b", ".hidden", "a b", &"x".repeat(129)] {
            assert!(validate_id(bad).is_err(), "{bad:?}");
        }
        validate_id("sha256:0123abc").unwrap();
    }
}
