//! The layer lifecycle, run once for every driver.
//!
//! [`Layered`] is the [`Driver`]: it owns staging, apply, commit, mount counting,
//! removal, get/list, diff/changes and status, through the shared [`Store`]. A driver
//! supplies only what its filesystem makes different, as a [`LayerFs`]:
//!
//! * how a layer's directory is made from its parent ([`LayerFs::make`]: a copy, a
//!   snapshot, an empty upper);
//! * how a tar is applied there ([`LayerFs::apply`]: the tar engine with the driver's
//!   whiteout format, plus any fix-up of its own);
//! * how a view is mounted and released ([`LayerFs::mount`], [`LayerFs::unmount`]);
//! * where its changes come from ([`LayerFs::diff`]: the naive walk, an upper
//!   directory, the filesystem's own record);
//! * whether its layers are independent of their parent's tree
//!   ([`LayerFs::independent`]), so that a chain is extracted in parallel.
//!
//! (moby's `NaiveDiffDriver` wraps a minimal `ProtoDriver` the same way.)
//!
//! ```text
//!   create / apply_diff:  Store::begin ─► make ─► [apply ─► before_commit] ─► Store::commit ─► committed
//!   apply_chain (independent layers): all staged and applied at once ─► Store::prepare each
//!                         ─► one Store::sync ─► per layer: before_commit ─► Store::list_prepared
//!                         ─► committed ─► one Store::seal
//!   mount / unmount:      Store::acquire_mount(mount)   Store::release_mount(unmount)
//!   diff / changes:       diff(meta) ─► LayerDiff::write_tar / LayerDiff::changes
//!   remove:               Store::remove(before_remove) ─► after_remove
//! ```

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;

use crate::driver::{ChainProgress, Change, Driver, LayerDir, LayerInfo, LayerTar, Status, Usage};
use crate::durability::Durability;
use crate::error::{Cause, Error, Result};
use crate::reserved::ReservedXattrs;
use crate::store::{note_usage, LayerMeta, Staging, Store};
pub use crate::store::{noted_usage, USAGE_KEY};

/// What applying a layer tar gave.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Bytes of file content applied.
    pub size: u64,
    /// `sha256:` digest of the uncompressed tar.
    pub diff_id: String,
    /// Directories the tar did not describe but that had to be made (parents of its
    /// entries), relative to the layer root; `""` is the root when the tar did not
    /// describe it. For [`LayerFs::before_commit`].
    pub implicit_dirs: Vec<PathBuf>,
    /// Bytes of the longest path the layer holds (relative to its root), for
    /// [`LayerFs::extra`] (overlay decides from it where metacopy is safe).
    pub longest_path: usize,
    /// sha256 of each regular file the tar wrote, by path relative to the layer root,
    /// for the layer's content record ([`crate::record`]).
    pub content: crate::record::Written,
    /// The layer's own tree as the apply made it, when it made all of it: its content
    /// record, made without a walk ([`crate::record::Tree`]).
    pub tree: Option<crate::record::Tree>,
}

/// A layer's changes against its parent, found and ready to be listed or written.
pub trait LayerDiff {
    /// The changes, sorted by path.
    fn changes(self: Box<Self>) -> Vec<Change>;
    /// Writes the uncompressed OCI layer tar; returns its size. `layer` names errors.
    fn write_tar(self: Box<Self>, layer: &str, out: &mut dyn Write) -> Result<u64>;
}

/// A layer tar as the lifecycle hands it to [`LayerFs::apply`].
pub struct LayerInput<'a> {
    /// The layer being made; its directory is `staging.path`.
    pub staging: &'a Staging,
    /// The layer tar: plain, gzip or zstd.
    pub tar: &'a mut dyn Read,
    /// The caller knows the tar is plain (it was decompressed where the blob was read).
    pub uncompressed: bool,
    /// The xattr namespaces the layer may not set.
    pub reserved: &'a ReservedXattrs,
}

/// Why a layer directory is being made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Making {
    /// [`Driver::create`]: an empty layer over the parent.
    Create { writable: bool },
    /// [`Driver::apply_diff`]: a layer a tar is applied to next.
    Apply,
}

/// What a driver's filesystem makes different; everything else is [`Layered`]'s.
pub trait LayerFs: Send + Sync + Sized {
    /// The driver's short name.
    fn name(&self) -> &'static str;

    /// Opens (creating) the driver folder `root`: the store, and the filesystem part,
    /// after any recovery of its own.
    fn open(root: &Path) -> Result<(Arc<Store>, Self)>;

    /// Makes the layer's directory at `staging.path` (which does not exist yet) from
    /// its parent `staging.parent`, which is committed, unless [`LayerFs::independent`]
    /// and a chain is applied (then it may still be being made).
    fn make(&self, staging: &Staging, why: Making) -> Result<()>;

    /// Under `--sync file` ([`Durability::File`]), right after [`LayerFs::make`]: makes
    /// what it wrote durable by `fsync(2)`, as the tar engine does with what it writes.
    /// By default every file and directory of the layer's directory (a copy of the
    /// parent is a whole tree written anew).
    fn sync_made(&self, staging: &Staging) -> Result<()> {
        crate::durability::sync_tree(&staging.path).map_err(|e| Error::at(&staging.id, &staging.path, e))
    }

    /// Applies the layer tar to the directory [`LayerFs::make`] made (see
    /// [`LayerInput`]). A driver whose layer directory holds its parent's content calls
    /// the tar engine with whiteouts deleted in place (`strata_archive::apply::apply_in_place`).
    fn apply(&self, input: LayerInput<'_>) -> Result<Applied>;

    /// The xattr namespaces this driver's filesystem keeps its own bookkeeping in: no
    /// layer may carry them, on this driver or any other of the set (see
    /// [`crate::reserved`]).
    fn reserved_xattrs(&self) -> ReservedXattrs {
        ReservedXattrs::none()
    }

    /// Runs before an applied layer is committed, once its parent is: a layer applied
    /// without its parent's content fixes up here what needs the parent. In a chain
    /// this runs after the chain's content was synced; the lifecycle syncs again only
    /// when `applied.implicit_dirs` is not empty, so change nothing otherwise. Under
    /// `--sync file` (`staging.durability`) fsync what you change.
    fn before_commit(&self, _staging: &Staging, _applied: &Applied) -> Result<()> {
        Ok(())
    }

    /// Whether a layer's directory is made without its parent's content, so that the
    /// layers of a chain can be staged and applied in parallel, then committed in order.
    fn independent(&self) -> bool {
        false
    }

    /// Driver-specific facts recorded in a new layer's metadata; `applied` is what its
    /// tar's apply found, when it was applied.
    fn extra(&self, _id: &str, _applied: Option<&Applied>) -> serde_json::Map<String, serde_json::Value> {
        serde_json::Map::new()
    }

    /// The layer's own tree inside its directory `dir` (a staging path or a committed
    /// layer's): what its content record ([`crate::record`]) describes and `check`
    /// compares. The directory itself unless the driver keeps more there (overlay: its
    /// `diff/` upper beside `work/` and `merged/`).
    fn own_tree(&self, dir: &Path) -> PathBuf {
        dir.to_path_buf()
    }

    /// After a layer is committed and listed (sealing it read-only, say).
    fn committed(&self, _meta: &LayerMeta) -> Result<()> {
        Ok(())
    }

    /// Makes (or checks) the view of layer `meta.id` and returns its path. Runs under
    /// the store lock for every user; `first` when there was no user before.
    fn mount(&self, meta: &mut LayerMeta, first: bool) -> Result<PathBuf>;

    /// Releases the view of `id`: its last user has gone. Runs under the store lock.
    fn unmount(&self, id: &str) -> Result<()>;

    /// The changes of a layer against its parent; a change that sets an xattr in a
    /// `reserved` namespace is refused.
    fn diff(&self, meta: &LayerMeta, reserved: &ReservedXattrs) -> Result<Box<dyn LayerDiff + '_>>;

    /// Runs under the store lock once removal is allowed, before anything changes.
    fn before_remove(&self, _meta: &LayerMeta) -> Result<()> {
        Ok(())
    }

    /// After a layer is removed (what the driver keeps beside the store).
    fn after_remove(&self, _id: &str) {}

    /// Bytes and inodes the layer alone holds on disk.
    fn usage(&self, meta: &LayerMeta) -> Result<Usage>;

    /// Features in use, for [`Status`].
    fn features(&self) -> Vec<(String, String)>;

    /// The layer's own directory and what it holds (see [`Driver::layer_dir`]).
    fn layer_dir(&self, id: &str) -> Result<LayerDir>;
}

/// A [`Driver`] made of the shared lifecycle and a driver's [`LayerFs`].
pub struct Layered<F> {
    store: Arc<Store>,
    fs: F,
    /// The driver's own reserved xattr namespaces and those of the set it runs in.
    reserved: ReservedXattrs,
}

impl<F: LayerFs> Layered<F> {
    /// Opens (creating) the driver folder `root`.
    pub fn new(root: &Path) -> Result<Self> {
        let (store, fs) = F::open(root)?;
        Ok(Self::from_parts(store, fs))
    }

    /// The driver from a store and a filesystem part already opened over it (a test's,
    /// say, whose calls go to a recording double).
    pub fn from_parts(store: Arc<Store>, fs: F) -> Self {
        let reserved = fs.reserved_xattrs();
        Layered { store, fs, reserved }
    }

    /// The same driver, refusing also the xattr namespaces `set` reserves (the union
    /// of every driver's, so that a layer one driver takes every other takes too).
    pub fn reserving(mut self, set: &ReservedXattrs) -> Self {
        self.reserved = self.reserved.union(set);
        self
    }

    /// The xattr namespaces this driver refuses.
    pub fn reserved(&self) -> &ReservedXattrs {
        &self.reserved
    }

    /// The filesystem part, for what only this driver offers.
    pub fn fs(&self) -> &F {
        &self.fs
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// [`LayerFs::make`], then, under `--sync file`, [`LayerFs::sync_made`].
    fn make(&self, staging: &Staging, why: Making) -> Result<()> {
        self.fs.make(staging, why)?;
        if staging.durability == Durability::File {
            self.fs.sync_made(staging)?;
        }
        Ok(())
    }

    /// The content record of staged layer `staging` (see [`crate::record`]): its own
    /// tree, with the digests the apply computed and, where the layer holds its parent's
    /// tree, those of the parent's record.
    fn record(&self, staging: &Staging, applied: Option<&Applied>) -> Result<crate::record::Record> {
        // The apply described every node as it made it: no walk.
        if let Some(tree) = applied.and_then(|a| a.tree.as_ref()) {
            return Ok(tree.record());
        }
        let parent = match (&staging.parent, self.fs.independent()) {
            (Some(p), false) => self.store.content_record(p).ok().flatten(),
            _ => None,
        };
        let none = crate::record::Written::new();
        let written = applied.map(|a| &a.content).unwrap_or(&none);
        let root = self.fs.own_tree(&staging.path);
        crate::record::make(&root, written, parent.as_ref())
            .map_err(|e| Error::at(&staging.id, &root, e).in_layer(&staging.id))
    }

    /// [`LayerFs::before_commit`], then what it may have changed (the implicit
    /// directories, and their parents) read again into the tree the apply described.
    fn before_commit(&self, staging: &Staging, applied: &mut Applied) -> Result<()> {
        self.fs.before_commit(staging, applied)?;
        if let (Some(tree), false) = (applied.tree.as_mut(), applied.implicit_dirs.is_empty()) {
            let root = self.fs.own_tree(&staging.path);
            let dirs: Vec<&Path> = applied.implicit_dirs.iter().map(PathBuf::as_path).collect();
            tree.refresh(&root, &dirs).map_err(|e| Error::at(&staging.id, &root, e))?;
        }
        Ok(())
    }

    /// Makes and stages the content record of `staging`, and notes its disk use in
    /// `meta` (what `strata df` adds up: counted here, once, not at every call).
    fn prepare_record(&self, staging: &Staging, applied: Option<&Applied>, meta: &mut LayerMeta) -> Result<()> {
        let record = self.record(staging, applied)?;
        note_usage(meta, record.usage);
        self.store.prepare_files(staging, &record)
    }

    fn commit(&self, staging: Staging, mut meta: LayerMeta, applied: Option<&Applied>) -> Result<()> {
        meta.extra = self.fs.extra(&staging.id, applied);
        if !meta.writable {
            self.prepare_record(&staging, applied, &mut meta)?;
        }
        let id = staging.id.clone();
        self.store.commit(staging, meta)?;
        self.fs.committed(&self.store.get(&id)?)
    }

    /// Commits an applied layer: refused (and its staging discarded) when the tar was
    /// not the `expected` one.
    fn commit_applied(&self, staging: Staging, mut applied: Applied, expected: Option<&str>) -> Result<u64> {
        check_diff_id(&staging, &applied, expected)?;
        self.before_commit(&staging, &mut applied)?;
        let (size, diff_id) = (applied.size, Some(applied.diff_id.clone()));
        self.commit(staging, LayerMeta::of(LayerInfo { diff_id, size, ..Default::default() }), Some(&applied))?;
        Ok(size)
    }

    /// Commits a chain of applied layers bottom to top with one sync for all of them
    /// (see [`crate::store`]): records prepared, one `syncfs`, then each layer's
    /// `before_commit` (which needs its parent listed; what it changed is synced again,
    /// which happens only when the tar left implicit directories) and listing, and one
    /// seal at the end. On the first error the layers below it stay committed and the
    /// rest are dropped (which discards their staging).
    fn commit_chain(&self, staged: Vec<Result<Staged>>, progress: ChainProgress<'_>) -> Result<Vec<u64>> {
        let mut ready = Vec::new();
        let mut failed = None;
        for s in staged {
            let prepared = s.and_then(|(mut staging, applied, expected, usage)| {
                check_diff_id(&staging, &applied, expected.as_deref())?;
                let mut meta = LayerMeta {
                    layer: LayerInfo {
                        diff_id: Some(applied.diff_id.clone()),
                        size: applied.size,
                        ..Default::default()
                    },
                    extra: self.fs.extra(&staging.id, Some(&applied)),
                };
                note_usage(&mut meta, usage);
                self.store.prepare(&mut staging, meta.clone())?;
                Ok((staging, applied, meta))
            });
            match prepared {
                Ok(p) => ready.push(p),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        let mut sizes = Vec::new();
        let listed = (|| -> Result<()> {
            if let Some((first, _, _)) = ready.first() {
                self.store.sync(&first.id)?;
            }
            for (i, (mut staging, mut applied, mut meta)) in ready.into_iter().enumerate() {
                self.before_commit(&staging, &mut applied)?;
                if !applied.implicit_dirs.is_empty() {
                    // before_commit gave directories metadata (or dropped some): recorded
                    // again (those directories read again, or a walk of names where the
                    // apply did not describe the tree; the digests are the apply's).
                    self.prepare_record(&staging, Some(&applied), &mut meta)?;
                    self.store.prepare(&mut staging, meta)?;
                    self.store.sync(&staging.id)?;
                }
                let id = staging.id.clone();
                self.store.list_prepared(staging)?;
                self.fs.committed(&self.store.get(&id)?)?;
                progress(i, applied.size);
                sizes.push(applied.size);
            }
            Ok(())
        })();
        if !sizes.is_empty() {
            self.store.seal()?;
        }
        match (listed, failed) {
            (Err(e), _) | (Ok(()), Some(e)) => Err(e),
            (Ok(()), None) => Ok(sizes),
        }
    }
}

/// A layer of a chain staged and applied in parallel: its staging, what the apply
/// gave, the diff_id it must have, the disk use its content record counted.
type Staged = (Staging, Applied, Option<String>, Usage);

/// Refuses a layer whose tar was not the `expected` one (its staging is discarded).
fn check_diff_id(staging: &Staging, applied: &Applied, expected: Option<&str>) -> Result<()> {
    match expected.filter(|w| *w != applied.diff_id) {
        Some(want) => Err(Error::layer(
            &staging.id,
            Cause::DiffIdMismatch { got: applied.diff_id.clone(), want: want.to_string() },
        )),
        None => Ok(()),
    }
}

/// Calls the driver-specific methods (`naive`, `follow`, ...) on the filesystem part.
impl<F> std::ops::Deref for Layered<F> {
    type Target = F;
    fn deref(&self) -> &F {
        &self.fs
    }
}

impl<F: LayerFs> Driver for Layered<F> {
    fn name(&self) -> &'static str {
        self.fs.name()
    }

    fn set_durability(&self, mode: Durability) {
        self.store.set_durability(mode);
    }

    fn create(&self, id: &str, parent: Option<&str>, writable: bool) -> Result<()> {
        let staging = self.store.begin(id, parent)?;
        self.make(&staging, Making::Create { writable })?;
        self.commit(staging, LayerMeta::of(LayerInfo { writable, ..Default::default() }), None)
    }

    fn apply_diff(&self, id: &str, parent: Option<&str>, tar: &mut dyn Read) -> Result<u64> {
        self.apply_one(id, parent, tar, false, None)
    }

    /// Independent layers are extracted all at once (one per core), then committed
    /// bottom to top; the others one after the other, reading the next layer's stream
    /// ahead on another thread.
    fn apply_chain(&self, layers: Vec<LayerTar>, progress: ChainProgress<'_>) -> Result<Vec<u64>> {
        if !self.fs.independent() {
            return self.sequential_chain(layers, progress);
        }
        let staged: Vec<Result<Staged>> = layers
            .into_par_iter()
            .map(|mut l| {
                let staging = self.store.begin_before_parent(&l.id, l.parent.as_deref())?;
                self.make(&staging, Making::Apply).map_err(|e| e.in_layer(&l.id))?;
                let applied = self
                    .fs
                    .apply(LayerInput {
                        staging: &staging,
                        tar: &mut l.tar,
                        uncompressed: l.uncompressed,
                        reserved: &self.reserved,
                    })
                    // What failed the stream (its blob kept as it is read, say, on a full
                    // disk) is this layer's error too.
                    .map_err(|e| e.in_layer(&l.id))?;
                // Recorded here, in parallel; what before_commit changes is read again there.
                let record = self.record(&staging, Some(&applied))?;
                self.store.prepare_files(&staging, &record)?;
                Ok((staging, applied, l.diff_id, record.usage))
            })
            .collect();
        self.commit_chain(staged, progress)
    }

    fn mount(&self, id: &str) -> Result<PathBuf> {
        let mut path = PathBuf::new();
        self.store.acquire_mount(id, |m, first| {
            path = self.fs.mount(m, first)?;
            Ok(())
        })?;
        Ok(path)
    }

    fn unmount(&self, id: &str) -> Result<()> {
        self.store.release_mount(id, || self.fs.unmount(id))
    }

    fn diff(&self, id: &str, out: &mut dyn Write) -> Result<u64> {
        self.fs.diff(&self.store.get(id)?, &self.reserved)?.write_tar(id, out)
    }

    fn changes(&self, id: &str) -> Result<Vec<Change>> {
        Ok(self.fs.diff(&self.store.get(id)?, &self.reserved)?.changes())
    }

    fn remove(&self, id: &str) -> Result<()> {
        self.store.remove(id, |m| self.fs.before_remove(m))?;
        self.fs.after_remove(id);
        Ok(())
    }

    fn usage(&self, id: &str) -> Result<Usage> {
        self.fs.usage(&self.store.get(id)?)
    }

    fn status(&self) -> Result<Status> {
        Ok(Status {
            driver: self.fs.name().into(),
            backing_fs: crate::sys::fs_type(self.store.dir()).unwrap_or_else(|_| "unknown".into()),
            features: self.fs.features(),
            layers: self.store.list()?.len(),
        })
    }

    fn layer_dir(&self, id: &str) -> Result<LayerDir> {
        self.fs.layer_dir(id)
    }

    fn layer_store(&self) -> Option<&Store> {
        Some(&self.store)
    }

    fn own_tree(&self, id: &str) -> Option<PathBuf> {
        crate::store::validate_id(id).ok()?;
        Some(self.fs.own_tree(&self.store.layer_dir(id)))
    }

    fn reapply(&self, id: &str, parent: Option<&str>, tar: &mut dyn Read, diff_id: Option<&str>) -> Result<u64> {
        let staging = self.store.begin_replace(id, parent)?;
        self.fs.make(&staging, Making::Apply).map_err(|e| e.in_layer(id))?;
        let mut applied = self
            .fs
            .apply(LayerInput { staging: &staging, tar, uncompressed: false, reserved: &self.reserved })
            .map_err(|e| e.in_layer(id))?;
        check_diff_id(&staging, &applied, diff_id)?;
        self.before_commit(&staging, &mut applied)?;
        let mut meta = LayerMeta {
            layer: LayerInfo { diff_id: Some(applied.diff_id.clone()), size: applied.size, ..Default::default() },
            extra: self.fs.extra(id, Some(&applied)),
        };
        self.prepare_record(&staging, Some(&applied), &mut meta)?;
        self.store.swap(staging, meta, || {
            self.refuse_if_viewed(id)?;
            // What the driver does before a layer goes (btrfs: the read-only subvolume
            // made writable, so that it can be moved and deleted).
            let old =
                self.store.get(id).unwrap_or_else(|_| LayerMeta::of(LayerInfo { id: id.into(), ..Default::default() }));
            self.fs.before_remove(&old)
        })?;
        self.fs.committed(&self.store.get(id)?)?;
        Ok(applied.size)
    }

    fn rerecord(&self, id: &str) -> Result<()> {
        let meta = self.store.get(id)?;
        if meta.writable {
            return Err(Error::layer(id, Cause::NoContentRecord));
        }
        let parent = match (&meta.parent, self.fs.independent()) {
            (Some(p), false) => self.store.content_record(p).ok().flatten(),
            _ => None,
        };
        let root = self.fs.own_tree(&self.store.layer_dir(id));
        let record = crate::record::make(&root, &crate::record::Written::new(), parent.as_ref())
            .map_err(|e| Error::at(id, &root, e))?;
        self.store.put_files(id, &record)?;
        self.store.update(id, |m| {
            note_usage(m, record.usage);
            Ok(())
        })
    }

    fn get(&self, id: &str) -> Result<LayerInfo> {
        Ok(self.store.get(id)?.info())
    }

    fn list(&self) -> Result<Vec<LayerInfo>> {
        Ok(self.store.list()?.iter().map(LayerMeta::info).collect())
    }
}

impl<F: LayerFs> Layered<F> {
    /// Refuses (under the store lock) while a layer over `id` is mounted: its view reads
    /// `id`'s tree, which a repair is about to replace.
    fn refuse_if_viewed(&self, id: &str) -> Result<()> {
        let metas: Vec<LayerMeta> = self.store.list_raw()?.into_iter().filter_map(|(_, m)| m.ok()).collect();
        let by_id: std::collections::HashMap<&str, &LayerMeta> = metas.iter().map(|m| (m.id.as_str(), m)).collect();
        for m in metas.iter().filter(|m| m.mounts > 0) {
            let mut cur = Some(m);
            while let Some(c) = cur {
                if c.id == id {
                    return Err(Error::layer(id, Cause::MountedAbove(m.id.clone())));
                }
                cur = c.parent.as_deref().and_then(|p| by_id.get(p).copied());
            }
        }
        Ok(())
    }

    /// Stages, applies and commits one layer; see [`Layered::commit_applied`].
    fn apply_one(
        &self,
        id: &str,
        parent: Option<&str>,
        tar: &mut dyn Read,
        uncompressed: bool,
        expected: Option<&str>,
    ) -> Result<u64> {
        let staging = self.store.begin(id, parent)?;
        self.make(&staging, Making::Apply).map_err(|e| e.in_layer(id))?;
        let applied = self
            .fs
            .apply(LayerInput { staging: &staging, tar, uncompressed, reserved: &self.reserved })
            .map_err(|e| e.in_layer(id))?;
        self.commit_applied(staging, applied, expected).map_err(|e| e.in_layer(id))
    }

    /// Applies a chain one layer after the other (each starts from its parent's tree),
    /// reading the next layer's stream ahead on another thread meanwhile (there it is
    /// also decompressed, when the stream decompresses as it is read).
    fn sequential_chain(&self, layers: Vec<LayerTar>, progress: ChainProgress<'_>) -> Result<Vec<u64>> {
        use crate::readahead::ReadAhead;
        let mut sizes = Vec::with_capacity(layers.len());
        let mut layers = layers.into_iter();
        let start = |l: LayerTar| {
            let stream = ReadAhead::spawn(l.tar, 64);
            (LayerTar { tar: Box::new(std::io::empty()), ..l }, stream)
        };
        let mut next = layers.next().map(start);
        while let Some((l, mut stream)) = next.take() {
            // Start on the next layer while this one is applied.
            next = layers.next().map(start);
            let n = self.apply_one(&l.id, l.parent.as_deref(), &mut stream, l.uncompressed, l.diff_id.as_deref())?;
            progress(sizes.len(), n);
            sizes.push(n);
        }
        Ok(sizes)
    }
}
