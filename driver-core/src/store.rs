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
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::durability::Durability;
use crate::error::{Cause, Context, Error, Result};
use crate::record::Usage;

/// What a layer is, as listed by the metadata store.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerInfo {
    pub id: String,
    pub parent: Option<String>,
    /// `true` for a container layer that can still change.
    pub writable: bool,
    /// `sha256:` digest of the uncompressed tar that made the layer, when it was applied.
    pub diff_id: Option<String>,
    /// Bytes of file content the layer's tar carried (0 for a created layer).
    pub size: u64,
    /// Number of current users of the layer's mount.
    pub mounts: u32,
    /// Unix time (seconds) the layer was committed.
    pub created: u64,
}

/// The key of a layer's metadata under which its disk use, counted when its content
/// was recorded, is kept (`strata df` reads it; a container's changes, so it has none).
pub const USAGE_KEY: &str = "usage";

/// Notes `usage` in layer metadata `meta` (under [`USAGE_KEY`]).
pub(crate) fn note_usage(meta: &mut LayerMeta, usage: Usage) {
    meta.extra.insert(USAGE_KEY.into(), serde_json::json!({"bytes": usage.bytes, "inodes": usage.inodes}));
}

/// The disk use noted in a layer's metadata when it was committed, if any.
pub fn noted_usage(meta: &LayerMeta) -> Option<Usage> {
    serde_json::from_value(meta.extra.get(USAGE_KEY)?.clone()).ok()
}

mod staging;
mod usage;
pub use staging::Staging;

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

/// The key of a container layer's metadata counting the views taken of it (each
/// [`Store::acquire_mount`]): a disk use counted between two views is kept only if no
/// view was taken meanwhile ([`Store::keep_usage`]).
pub const VIEWS_KEY: &str = "views";

fn views(m: &LayerMeta) -> u64 {
    m.extra.get(VIEWS_KEY).and_then(|v| v.as_u64()).unwrap_or(0)
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

/// Parses a layer record. The driver's facts are `#[serde(flatten)]`ed beside the
/// layer's, which hides the field from the path serde reports (`.`); the layer's part
/// alone, parsed again, names it.
fn parse_meta(data: &[u8]) -> std::result::Result<LayerMeta, crate::json::ParseError> {
    crate::json::parse(data).map_err(|e| match crate::json::parse::<LayerInfo>(data) {
        Err(inner) if e.field == "." && inner.field != "." => inner,
        _ => e,
    })
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
            Ok(d) => crate::json::parse(&d)
                .map(Some)
                .map_err(|e| Error::at(id, &path, Cause::Corrupt(format!("content record: {e}")))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::at(id, &path, e)),
        }
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
        parse_meta(&data).map_err(|e| Error::at(id, &path, Cause::Corrupt(e.to_string())))
    }

    /// Every layer whose metadata reads. A record that does not (empty or torn by a
    /// power cut under `--sync none`, unreadable) is skipped, not an error: one damaged
    /// record must not hide every other layer (`layer ls`, `image ls`, an unpack's
    /// reuse check). `strata check` reports it ([`Store::list_raw`]), `--repair` heals
    /// or removes it, and [`Store::remove`] removes it.
    pub fn list(&self) -> Result<Vec<LayerMeta>> {
        Ok(self.list_raw()?.into_iter().filter_map(|(_, m)| m.ok()).collect())
    }

    /// Every layer's metadata file, by ID, parsed or not (`strata check`): a record that
    /// does not parse is the error, which [`Store::list`] skips.
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
    ///
    /// A container's layer can change while its view is taken: its view count
    /// ([`VIEWS_KEY`]) moves on, so the disk use `strata df` counted and kept for it
    /// ([`Store::keep_usage`]) before this mount is no longer read. (A count kept in
    /// the record itself, as a store made before `meta/<id>.usage` has, is dropped.)
    pub fn acquire_mount(&self, id: &str, make_view: impl FnOnce(&mut LayerMeta, bool) -> Result<()>) -> Result<()> {
        self.update(id, |m| {
            make_view(m, m.mounts == 0)?;
            m.mounts += 1;
            if m.writable {
                m.extra.remove(USAGE_KEY);
                m.extra.insert(VIEWS_KEY.into(), (views(m) + 1).into());
            }
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

    /// Unlists layer `id` and discards its content. `check` runs under the lock
    /// before anything changes (the driver refuses there, e.g. while mounted).
    ///
    /// A layer whose own metadata does not read is removed too (`check --repair` removes
    /// what it cannot make again; `layer rm` of it works), as a read-only layer no one
    /// has mounted: its record said nothing more. A layer whose record does not read is
    /// not counted as a child of any (its parent is unknown): it cannot be made again
    /// over a parent that an image no longer lists either, and a container's record is
    /// synced whenever it is written, so a power cut does not leave one unreadable.
    pub fn remove(&self, id: &str, check: impl FnOnce(&LayerMeta) -> Result<()>) -> Result<LayerMeta> {
        let lock = self.lock()?;
        let meta = match self.get(id) {
            Ok(m) => m,
            Err(e) if matches!(e.cause, Cause::Corrupt(_)) => {
                LayerMeta::of(LayerInfo { id: id.to_string(), ..Default::default() })
            }
            Err(e) => return Err(e),
        };
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
        let _ = fs::remove_file(self.usage_path(id));
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
            } else if let Some(id) = name.strip_suffix(".files").or_else(|| name.strip_suffix(usage::SUFFIX)) {
                if !self.meta_path(id).exists() {
                    // A content record whose layer never got listed (killed between the
                    // two renames) or was unlisted; a kept disk use of a removed layer.
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
mod tests;
