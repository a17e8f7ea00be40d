//! Work in progress in `staging/`: a layer made there, its records written beside it,
//! synced, listed and sealed (see the atomicity notes in [`crate::store`]).

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use nix::fcntl::{Flock, FlockArg};

use super::{now_secs, validate_id, Discard, LayerMeta, Store, StoreLock};
use crate::durability::Durability;
use crate::error::{Cause, Context, Error, Result};

/// Work in progress on one layer, in `staging/`. Discarded on drop unless committed.
pub struct Staging {
    /// Where the driver makes the layer's content. Does not exist yet.
    pub path: PathBuf,
    pub id: String,
    pub parent: Option<String>,
    /// How the content made here is synced (the store's mode when the work began).
    pub durability: Durability,
    pub(super) lock_path: PathBuf,
    _lock: Option<Flock<File>>,
    discard: Discard,
    pub(super) done: bool,
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
    pub(super) fn record_path(&self) -> PathBuf {
        self.lock_path.with_extension("meta")
    }

    /// `staging/<n>.files`: the layer's content record, written by [`Store::prepare_files`].
    pub(super) fn files_path(&self) -> PathBuf {
        self.lock_path.with_extension("files")
    }
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn unique_name(prefix: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{prefix}{}-{}-{nanos}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

impl Store {
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

    /// Staging entries whose owner is alive, with the parent each records.
    pub(super) fn live_staging(&self) -> Result<Vec<(PathBuf, Option<String>)>> {
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
    pub(super) fn staging_entry(
        &self,
        prefix: &str,
        id: &str,
        parent: Option<&str>,
        _lock: &StoreLock,
    ) -> Result<Staging> {
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
}
