//! Containers and space: `container ls`, `container rm`, `image prune`.
//!
//! What is *in use* and never removed: every layer an image record lists, every layer
//! a live unpack's pending record lists, every container (a writable layer) and the
//! layers below it, every mounted layer; every blob of the pull cache an image's
//! manifest reaches, and every blob a pull under way may reuse; every blob of the
//! content store (`<driver dir>/content/blobs`) an image record names, and every one
//! written since the prune began (an unpack or commit writes blobs before its record).
//! Everything else is garbage: layers left by `image rm` of an image whose layers a
//! container kept, layers applied by hand that nothing sits on, blobs of removed images,
//! blobs an unpack or commit killed before its record was written left behind.
//!
//! Races: layers go through [`Driver::remove`], which refuses (under the store lock) a
//! layer that a record or a live unpack lists, that has a child or is mounted — so a
//! prune racing an unpack skips what the unpack is about to use, and the unpack
//! re-applies what the prune removed just before it began. Pulls hold a shared lock on
//! the cache ([`CacheLock`]) from their start until their blobs are kept; a prune
//! removes blobs under the exclusive lock. The content store is swept under the
//! driver's store lock, which image records are written under.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};

use driver_core::{Cause, Driver, Error, LayerInfo};
use nix::fcntl::{Flock, FlockArg};
use serde::Serialize;
use strata_image::images::{ImageRecord, ImageStore};

use crate::output;

/// A lock on the pull cache `<root>/blobs`: shared while a pull may read or add blobs,
/// exclusive while a prune removes them.
pub struct CacheLock(#[allow(dead_code)] Flock<File>);

impl CacheLock {
    fn take(cache: &Path, arg: FlockArg) -> Result<CacheLock, Error> {
        fs::create_dir_all(cache).map_err(|e| Error::new(e).with_path(cache))?;
        let p = cache.join(".lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(|e| Error::new(e).with_path(&p))?;
        Flock::lock(f, arg).map(CacheLock).map_err(|(_, e)| Error::from(e).with_path(&p))
    }

    /// Held by a pull from its start until its blobs are in the cache (or gone).
    pub fn shared(cache: &Path) -> Result<CacheLock, Error> {
        Self::take(cache, FlockArg::LockShared)
    }

    fn exclusive(cache: &Path) -> Result<CacheLock, Error> {
        Self::take(cache, FlockArg::LockExclusive)
    }
}

/// The pull cache of a root.
pub fn cache_dir(driver_dir: &Path) -> PathBuf {
    driver_dir.parent().unwrap_or(driver_dir).join("blobs")
}

/// A container: a writable layer, with the image it was made on (if one's top is its
/// parent).
#[derive(Serialize)]
pub struct Container {
    pub name: String,
    /// The layer it sits on.
    pub parent: Option<String>,
    /// The images whose top layer is its parent (none for a container over a bare layer).
    pub images: Vec<String>,
    pub mounted: bool,
    /// Bytes its own layer holds on disk (what it wrote).
    pub size: u64,
    pub created: u64,
}

pub fn containers(driver: &dyn Driver, images: &ImageStore) -> Result<Vec<Container>, Error> {
    let records = images.list()?;
    let mut out = Vec::new();
    for l in driver.list()?.into_iter().filter(|l| l.writable) {
        let on: Vec<String> = records
            .iter()
            .filter(|r| l.parent.is_some() && r.top() == l.parent.as_deref())
            .map(|r| r.name.clone())
            .collect();
        let size = driver.usage(&l.id).map(|u| u.bytes).unwrap_or(0);
        out.push(Container {
            name: l.id,
            parent: l.parent,
            images: on,
            mounted: l.mounts > 0,
            size,
            created: l.created,
        });
    }
    Ok(out)
}

/// Removes container `name` (a writable layer): refused for an image's layer, while
/// mounted, or while another layer sits on it.
pub fn remove_container(driver: &dyn Driver, name: &str) -> Result<(), Error> {
    let info = driver.get(name)?;
    if !info.writable {
        return Err(Error::layer(
            name,
            Cause::Refused("is not a container (a committed layer); `image rm` or `layer rm` removes layers".into()),
        ));
    }
    driver.remove(name)
}

/// What a prune removes (or, with `--dry-run`, would remove).
#[derive(Default, Serialize)]
pub struct Pruned {
    /// Layers, children before parents, with the bytes each holds on disk.
    pub layers: Vec<(String, u64)>,
    /// Blobs of the pull cache, with their sizes.
    pub blobs: Vec<(String, u64)>,
    /// Garbage found in use by the time it was to go (a race), left in place.
    pub skipped: Vec<String>,
}

/// Layers nothing uses: committed, listed by no image record, under no container,
/// not mounted, and whose children are all garbage too.
fn garbage_layers(layers: &[LayerInfo], records: &[ImageRecord]) -> Vec<String> {
    let by_id: BTreeMap<&str, &LayerInfo> = layers.iter().map(|l| (l.id.as_str(), l)).collect();
    let mut used: BTreeSet<&str> = records.iter().flat_map(|r| r.layers.iter().map(String::as_str)).collect();
    // A container or a mounted layer keeps itself and everything below it.
    for l in layers.iter().filter(|l| l.writable || l.mounts > 0) {
        let mut cur = Some(l.id.as_str());
        while let Some(id) = cur {
            if !used.insert(id) && id != l.id {
                break;
            }
            cur = by_id.get(id).and_then(|x| x.parent.as_deref());
        }
    }
    // An image's layers keep their parents (a record lists the whole chain; this is
    // for records that do not).
    let listed: Vec<&str> = used.iter().copied().collect();
    for id in listed {
        let mut cur = by_id.get(id).and_then(|x| x.parent.as_deref());
        while let Some(p) = cur {
            if !used.insert(p) {
                break;
            }
            cur = by_id.get(p).and_then(|x| x.parent.as_deref());
        }
    }
    // Children before parents: deepest first.
    let depth = |id: &str| {
        let mut d = 0;
        let mut cur = by_id.get(id).and_then(|x| x.parent.as_deref());
        while let Some(p) = cur {
            d += 1;
            cur = by_id.get(p).and_then(|x| x.parent.as_deref());
        }
        d
    };
    let mut out: Vec<&str> = layers.iter().map(|l| l.id.as_str()).filter(|id| !used.contains(id)).collect();
    out.sort_by_key(|id| std::cmp::Reverse(depth(id)));
    out.into_iter().map(String::from).collect()
}

/// Every image record under a root (all driver folders: the pull cache is shared).
fn records_under(root: &Path) -> Result<Vec<ImageRecord>, Error> {
    let mut out = Vec::new();
    for d in ["overlay", "vfs", "btrfs"] {
        let dir = root.join(d);
        if dir.join("images").is_dir() {
            out.extend(ImageStore::open(&dir)?.list()?);
        }
    }
    Ok(out)
}

/// The cache's blobs (digest → size).
fn cached_blobs(cache: &Path) -> BTreeMap<String, u64> {
    let dir = cache.join("blobs/sha256");
    let mut out = BTreeMap::new();
    for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
            let size = e.metadata().map(|m| m.len()).unwrap_or(0);
            out.insert(format!("sha256:{name}"), size);
        }
    }
    out
}

/// The cached blobs an image reaches: a cached manifest whose config is an image's
/// config, that config, and the manifest's layers; an index reaching such a manifest.
fn used_blobs(cache: &Path, blobs: &BTreeMap<String, u64>, records: &[ImageRecord]) -> BTreeSet<String> {
    let configs: BTreeSet<&str> = records.iter().map(|r| r.config_digest.as_str()).collect();
    let read = |d: &str| -> Option<serde_json::Value> {
        let p = cache.join("blobs/sha256").join(d.trim_start_matches("sha256:"));
        // Manifests and indexes are small; a big blob is a layer.
        if fs::metadata(&p).ok()?.len() > 4 << 20 {
            return None;
        }
        serde_json::from_slice(&fs::read(p).ok()?).ok()
    };
    let digest = |v: &serde_json::Value| v.get("digest").and_then(|d| d.as_str()).map(String::from);
    let mut used = BTreeSet::new();
    let mut manifests = BTreeSet::new();
    for d in blobs.keys() {
        let Some(m) = read(d) else { continue };
        let Some(config) = m.get("config").and_then(digest) else { continue };
        if configs.contains(config.as_str()) {
            used.insert(d.clone());
            used.insert(config);
            manifests.insert(d.clone());
            for l in m.get("layers").and_then(|l| l.as_array()).into_iter().flatten() {
                used.extend(digest(l));
            }
        }
    }
    for d in blobs.keys() {
        let Some(i) = read(d) else { continue };
        let entries = i.get("manifests").and_then(|m| m.as_array());
        if entries.into_iter().flatten().filter_map(digest).any(|m| manifests.contains(&m)) {
            used.insert(d.clone());
        }
    }
    used
}

/// Sweeps the content store (`<driver dir>/content/blobs`): removes the blobs no image
/// record names. Under the store lock, which records are written under (a writer
/// checks its blobs are all there under it, and copies again what went), so no record
/// naming a blob appears while the sweep decides. A blob stamped since the prune began
/// is in use all the same: an unpack or commit racing the prune writes its blobs
/// before its record.
fn prune_content(images: &ImageStore, dry_run: bool, pruned: &mut Pruned) -> Result<(), Error> {
    let began = images.content.clock()?;
    let _lock = images.lock()?;
    let named = images.named_blobs()?;
    let mut gone = BTreeSet::new();
    for (digest, size, written) in images.content.stored()? {
        if named.contains(&digest) || written >= began {
            continue;
        }
        gone.insert(digest.clone());
        pruned.blobs.push((digest, size));
    }
    if !dry_run {
        images.content.remove_all(&gone)?;
        // Half-written blobs of writers that died.
        images.content.sweep_ingest();
    }
    Ok(())
}

/// `image prune`: removes (or lists, when `dry_run`) the layers and cached blobs
/// nothing uses.
pub fn prune(driver: &dyn Driver, images: &ImageStore, driver_dir: &Path, dry_run: bool) -> Result<Pruned, Error> {
    let mut pruned = Pruned::default();
    let layers = driver.list()?;
    for id in garbage_layers(&layers, &images.list()?) {
        let size = driver.usage(&id).map(|u| u.bytes).unwrap_or(0);
        if dry_run {
            pruned.layers.push((id, size));
            continue;
        }
        match driver.remove(&id) {
            Ok(()) => pruned.layers.push((id, size)),
            Err(e) if e.is_not_found() => {}
            // Taken into use since it was listed (an unpack began to reuse it, a
            // container or a layer was made on it, it was mounted): it stays.
            Err(e) if matches!(e.cause, Cause::InUse(_) | Cause::HasChildren(_) | Cause::Mounted(_)) => {
                pruned.skipped.push(format!("layer {id}: {e}"));
            }
            Err(e) => return Err(e),
        }
    }
    prune_content(images, dry_run, &mut pruned)?;
    let cache = cache_dir(driver_dir);
    if cache.is_dir() {
        // No pull is under way while this is held (each holds the shared lock).
        let _lock = CacheLock::exclusive(&cache)?;
        let root = driver_dir.parent().unwrap_or(driver_dir);
        let blobs = cached_blobs(&cache);
        let used = used_blobs(&cache, &blobs, &records_under(root)?);
        for (d, size) in blobs {
            if used.contains(&d) {
                continue;
            }
            if !dry_run {
                let p = cache.join("blobs/sha256").join(d.trim_start_matches("sha256:"));
                fs::remove_file(&p).map_err(|e| Error::new(e).with_path(&p))?;
            }
            pruned.blobs.push((d, size));
        }
    }
    Ok(pruned)
}

/// Who uses each layer: `image NAME` for every image listing it, `container NAME` for
/// every container over it.
pub fn used_by(layers: &[LayerInfo], records: &[ImageRecord]) -> BTreeMap<String, Vec<String>> {
    let by_id: BTreeMap<&str, &LayerInfo> = layers.iter().map(|l| (l.id.as_str(), l)).collect();
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in records {
        for l in &r.layers {
            out.entry(l.clone()).or_default().push(format!("image {}", r.name));
        }
    }
    for c in layers.iter().filter(|l| l.writable) {
        let mut cur = c.parent.as_deref();
        while let Some(p) = cur {
            out.entry(p.to_string()).or_default().push(format!("container {}", c.id));
            cur = by_id.get(p).and_then(|x| x.parent.as_deref());
        }
    }
    out
}

/// `layer ls`.
pub fn list_layers(driver: &dyn Driver, images: &ImageStore, json: bool, no_trunc: bool) -> Result<(), Error> {
    let mut layers = driver.list()?;
    // A container layer's recorded size is its creation's (0): what it holds is its
    // writes, as `container ls` counts them.
    for l in layers.iter_mut().filter(|l| l.writable) {
        l.size = driver.usage(&l.id)?.bytes;
    }
    let users = used_by(&layers, &images.list()?);
    let none = Vec::new();
    if json {
        let arr: Vec<serde_json::Value> = layers
            .iter()
            .map(|l| {
                serde_json::json!({"id": l.id, "parent": l.parent, "size": l.size, "mounted": l.mounts > 0,
                    "writable": l.writable, "diff_id": l.diff_id, "used_by": users.get(&l.id).unwrap_or(&none)})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&arr).expect("json"));
        return Ok(());
    }
    let w = if no_trunc { layers.iter().map(|l| l.id.len()).max().unwrap_or(2).max(19) } else { 19 };
    println!("{:<w$}  {:<w$}  {:>10}  {:<7}  USED BY", "ID", "PARENT", "SIZE", "MOUNTED");
    for l in &layers {
        let mounted = if l.mounts > 0 { format!("yes ({})", l.mounts) } else { "no".into() };
        let used = users.get(&l.id).map(|u| u.join(", ")).unwrap_or_else(|| "-".into());
        println!(
            "{:<w$}  {:<w$}  {:>10}  {mounted:<7}  {used}",
            output::id(&l.id, no_trunc),
            l.parent.as_deref().map_or("-", |p| output::id(p, no_trunc)),
            output::bytes(l.size),
        );
    }
    Ok(())
}

/// `image ls`.
pub fn list_images(driver: &dyn Driver, images: &ImageStore, json: bool, no_trunc: bool) -> Result<(), Error> {
    let list = images.list()?;
    let layers = driver.list()?;
    let size_of = |r: &ImageRecord| -> u64 {
        r.layers.iter().filter_map(|id| layers.iter().find(|l| &l.id == id)).map(|l| l.size).sum()
    };
    let containers_of = |r: &ImageRecord| -> Vec<String> {
        layers
            .iter()
            .filter(|l| l.writable && l.parent.is_some() && l.parent.as_deref() == r.top())
            .map(|l| l.id.clone())
            .collect()
    };
    if json {
        let arr: Vec<serde_json::Value> = list
            .iter()
            .map(|r| {
                serde_json::json!({"name": r.name, "top": r.top(), "layers": r.layers.len(), "config": r.config_digest,
                    "size": size_of(r), "containers": containers_of(r)})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&arr).expect("json"));
        return Ok(());
    }
    let w = list.iter().map(|r| r.name.len()).max().unwrap_or(4).clamp(4, 60);
    println!("{:<w$}  {:>6}  {:>10}  {:<19}  CONTAINERS", "NAME", "LAYERS", "SIZE", "TOP");
    for r in &list {
        let c = containers_of(r);
        println!(
            "{:<w$}  {:>6}  {:>10}  {:<19}  {}",
            r.name,
            r.layers.len(),
            output::bytes(size_of(r)),
            r.top().map_or("-", |t| output::id(t, no_trunc)),
            if c.is_empty() { "-".to_string() } else { c.join(", ") }
        );
    }
    Ok(())
}
