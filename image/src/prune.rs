//! `image prune`: the layers and blobs nothing uses, found and removed.
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

use driver_core::{Cause, Driver, LayerInfo};
use nix::fcntl::{Flock, FlockArg};
use serde::Serialize;

use crate::error::{Error, IoContext, Result};
use crate::images::{ImageRecord, ImageStore};
use crate::media::MAX_MANIFEST;

/// A lock on the pull cache `<root>/blobs`: shared while a pull may read or add blobs,
/// exclusive while a prune removes them.
pub struct CacheLock(#[allow(dead_code)] Flock<File>);

impl CacheLock {
    fn take(cache: &Path, arg: FlockArg) -> Result<CacheLock, Error> {
        fs::create_dir_all(cache).at_path(cache)?;
        let p = cache.join(".lock");
        let f = OpenOptions::new().create(true).truncate(false).write(true).open(&p).at_path(&p)?;
        Flock::lock(f, arg).map(CacheLock).map_err(|(_, e)| Error::io(&p, e.into()))
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

/// The digests a cached manifest (`config`, `layers`) or index (`manifests`) names.
/// Read leniently, not as oci-spec's documents: what decides which blobs a prune
/// removes keeps a blob that names an image's config even when it is not a whole OCI
/// document, rather than remove it on a parse error.
#[derive(serde::Deserialize)]
struct Names {
    config: Option<Named>,
    #[serde(default)]
    layers: Vec<Named>,
    #[serde(default)]
    manifests: Vec<Named>,
}

#[derive(serde::Deserialize)]
struct Named {
    digest: Option<String>,
}

/// The cached blobs an image reaches: a cached manifest whose config is an image's
/// config, that config, and the manifest's layers; an index reaching such a manifest.
fn used_blobs(cache: &Path, blobs: &BTreeMap<String, u64>, records: &[ImageRecord]) -> BTreeSet<String> {
    let configs: BTreeSet<&str> = records.iter().map(|r| r.config_digest.as_str()).collect();
    let read = |d: &str| -> Option<Names> {
        let p = cache.join("blobs/sha256").join(d.trim_start_matches("sha256:"));
        // Manifests and indexes are small; a big blob is a layer.
        if fs::metadata(&p).ok()?.len() > MAX_MANIFEST {
            return None;
        }
        serde_json::from_slice(&fs::read(p).ok()?).ok()
    };
    let mut used = BTreeSet::new();
    let mut manifests = BTreeSet::new();
    for d in blobs.keys() {
        let Some(m) = read(d) else { continue };
        let Some(config) = m.config.and_then(|c| c.digest) else { continue };
        if configs.contains(config.as_str()) {
            used.insert(d.clone());
            used.insert(config);
            manifests.insert(d.clone());
            used.extend(m.layers.into_iter().filter_map(|l| l.digest));
        }
    }
    for d in blobs.keys() {
        let Some(i) = read(d) else { continue };
        if i.manifests.into_iter().filter_map(|m| m.digest).any(|m| manifests.contains(&m)) {
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
            Err(e) => return Err(e.into()),
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
                fs::remove_file(&p).at_path(&p)?;
            }
            pruned.blobs.push((d, size));
        }
    }
    Ok(pruned)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::io::{Read, Write};
    use std::path::PathBuf;
    use std::sync::Mutex;

    use driver_core::driver::{ChainProgress, LayerTar};
    use driver_core::{Change, Status, Usage};

    use super::*;
    use crate::content::Settle;

    fn layer(id: &str, parent: Option<&str>, writable: bool, mounts: u32) -> LayerInfo {
        LayerInfo {
            id: id.into(),
            parent: parent.map(String::from),
            writable,
            diff_id: None,
            size: 0,
            mounts,
            created: 0,
        }
    }

    fn record(name: &str, layers: &[&str], config: &str) -> ImageRecord {
        ImageRecord {
            name: name.into(),
            layers: layers.iter().map(|l| l.to_string()).collect(),
            config_digest: config.into(),
            manifest: None,
            complete: true,
            pid: 0,
            removing: false,
        }
    }

    /// A fixed-seed generator (xorshift): the same forests on every run.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    /// What is garbage by definition: not reachable, going down through parents, from a
    /// layer a record lists, a container or a mounted layer (a fixpoint, no shortcuts).
    fn garbage_by_definition(layers: &[LayerInfo], records: &[ImageRecord]) -> BTreeSet<String> {
        let mut used: BTreeSet<String> = records.iter().flat_map(|r| r.layers.iter().cloned()).collect();
        used.extend(layers.iter().filter(|l| l.writable || l.mounts > 0).map(|l| l.id.clone()));
        loop {
            let parents: Vec<String> = layers
                .iter()
                .filter(|l| used.contains(&l.id))
                .filter_map(|l| l.parent.clone())
                .filter(|p| !used.contains(p))
                .collect();
            if parents.is_empty() {
                break;
            }
            used.extend(parents);
        }
        layers.iter().map(|l| l.id.clone()).filter(|id| !used.contains(id)).collect()
    }

    #[test]
    fn garbage_is_what_nothing_reaches_and_children_go_first() {
        let mut rng = Rng(0x5eed_1234_abcd_0001);
        for case in 0..300 {
            let n = 1 + rng.below(30) as usize;
            let mut layers = Vec::new();
            for i in 0..n {
                let parent = if i == 0 || rng.below(4) == 0 { None } else { Some(format!("l{}", rng.below(i as u64))) };
                let writable = rng.below(6) == 0;
                let mounts = if rng.below(8) == 0 { 1 } else { 0 };
                layers.push(layer(&format!("l{i}"), parent.as_deref(), writable, mounts));
            }
            // Records list a layer and (usually, not always) the chain below it.
            let mut records = Vec::new();
            for r in 0..rng.below(4) {
                let mut chain = vec![format!("l{}", rng.below(n as u64))];
                if rng.below(3) != 0 {
                    let by_id: BTreeMap<&str, &LayerInfo> = layers.iter().map(|l| (l.id.as_str(), l)).collect();
                    while let Some(p) = by_id[chain.last().unwrap().as_str()].parent.clone() {
                        chain.push(p);
                    }
                }
                chain.reverse();
                let refs: Vec<&str> = chain.iter().map(String::as_str).collect();
                records.push(record(&format!("img{r}"), &refs, "sha256:c"));
            }
            let got = garbage_layers(&layers, &records);
            let want = garbage_by_definition(&layers, &records);
            assert_eq!(got.iter().cloned().collect::<BTreeSet<_>>(), want, "case {case}: {layers:?} {records:?}");
            assert_eq!(got.len(), want.len(), "case {case}: a layer listed twice: {got:?}");
            // No layer comes after its parent.
            let at: BTreeMap<&str, usize> = got.iter().enumerate().map(|(i, id)| (id.as_str(), i)).collect();
            for l in &layers {
                if let (Some(&i), Some(&j)) = (at.get(l.id.as_str()), l.parent.as_deref().and_then(|p| at.get(p))) {
                    assert!(i < j, "case {case}: {} goes after its parent: {got:?}", l.id);
                }
            }
        }
    }

    fn hex(data: &[u8]) -> String {
        use sha2::{Digest, Sha256};
        hex::encode(Sha256::digest(data))
    }

    /// Writes `data` into the pull cache as a blob; returns its digest.
    fn cache_blob(cache: &Path, data: &[u8]) -> String {
        let dir = cache.join("blobs/sha256");
        fs::create_dir_all(&dir).unwrap();
        let h = hex(data);
        fs::write(dir.join(&h), data).unwrap();
        format!("sha256:{h}")
    }

    #[test]
    fn the_cache_keeps_what_an_image_reaches_and_nothing_else() {
        let root = tempfile::tempdir().unwrap();
        let cache = root.path().join("blobs");
        let config = cache_blob(&cache, b"{\"config\":\"ours\"}");
        let layer_a = cache_blob(&cache, b"layer a");
        let layer_b = cache_blob(&cache, b"layer b");
        let manifest = cache_blob(
            &cache,
            serde_json::json!({"config": {"digest": config}, "layers": [{"digest": layer_a}]}).to_string().as_bytes(),
        );
        let index = cache_blob(&cache, serde_json::json!({"manifests": [{"digest": manifest}]}).to_string().as_bytes());
        let other_config = cache_blob(&cache, b"{\"config\":\"gone\"}");
        let other_manifest = cache_blob(
            &cache,
            serde_json::json!({"config": {"digest": other_config}, "layers": [{"digest": layer_b}]})
                .to_string()
                .as_bytes(),
        );
        // Names that are not blobs are not listed (so never removed).
        fs::write(cache.join("blobs/sha256/notes.txt"), b"x").unwrap();
        fs::write(cache.join("blobs/sha256").join("ab".repeat(31)), b"short name").unwrap();

        let blobs = cached_blobs(&cache);
        let all: BTreeSet<&String> =
            [&config, &layer_a, &layer_b, &manifest, &index, &other_config, &other_manifest].into_iter().collect();
        assert_eq!(blobs.keys().collect::<BTreeSet<_>>(), all);
        assert_eq!(blobs[&layer_a], 7);

        let used = used_blobs(&cache, &blobs, &[record("img", &["l0"], &config)]);
        let want: BTreeSet<String> = [&config, &layer_a, &manifest, &index].into_iter().cloned().collect();
        assert_eq!(used, want);
        assert!(used_blobs(&cache, &blobs, &[]).is_empty());
    }

    /// A driver that keeps its layers in memory and refuses removals as a real one does:
    /// while mounted, while a child sits on it, and for the layers in `busy` (taken into
    /// use by another process since the prune listed them); the removal of a layer in
    /// `full` fails with ENOSPC (a store record rewritten on a full disk).
    #[derive(Default)]
    struct Memory {
        layers: Mutex<BTreeMap<String, LayerInfo>>,
        busy: BTreeSet<String>,
        full: BTreeSet<String>,
    }

    use driver_core::Error as LayerError;

    fn unsupported<T>() -> driver_core::Result<T> {
        Err(LayerError::new(Cause::Unsupported("not in this test".into())))
    }

    impl Driver for Memory {
        fn name(&self) -> &'static str {
            "memory"
        }
        fn create(&self, _: &str, _: Option<&str>, _: bool) -> driver_core::Result<()> {
            unsupported()
        }
        fn apply_diff(&self, _: &str, _: Option<&str>, _: &mut dyn Read) -> driver_core::Result<u64> {
            unsupported()
        }
        fn apply_chain(&self, _: Vec<LayerTar>, _: ChainProgress<'_>) -> driver_core::Result<Vec<u64>> {
            unsupported()
        }
        fn mount(&self, _: &str) -> driver_core::Result<PathBuf> {
            unsupported()
        }
        fn unmount(&self, _: &str) -> driver_core::Result<()> {
            unsupported()
        }
        fn diff(&self, _: &str, _: &mut dyn Write) -> driver_core::Result<u64> {
            unsupported()
        }
        fn changes(&self, _: &str) -> driver_core::Result<Vec<Change>> {
            unsupported()
        }
        fn status(&self) -> driver_core::Result<Status> {
            unsupported()
        }
        fn remove(&self, id: &str) -> driver_core::Result<()> {
            let mut layers = self.layers.lock().unwrap();
            let l = layers.get(id).ok_or_else(|| LayerError::layer(id, Cause::NotFound))?;
            if l.mounts > 0 {
                return Err(LayerError::layer(id, Cause::Mounted(l.mounts)));
            }
            if let Some(c) = layers.values().find(|c| c.parent.as_deref() == Some(id)) {
                return Err(LayerError::layer(id, Cause::HasChildren(c.id.clone())));
            }
            if self.busy.contains(id) {
                return Err(LayerError::layer(id, Cause::InUse("an unpack".into())));
            }
            if self.full.contains(id) {
                return Err(LayerError::layer(id, Cause::Io(std::io::Error::from_raw_os_error(libc::ENOSPC))));
            }
            layers.remove(id);
            Ok(())
        }
        fn usage(&self, id: &str) -> driver_core::Result<Usage> {
            Ok(Usage { bytes: 100 * id.len() as u64, inodes: 1 })
        }
        fn get(&self, id: &str) -> driver_core::Result<LayerInfo> {
            self.layers.lock().unwrap().get(id).cloned().ok_or_else(|| LayerError::layer(id, Cause::NotFound))
        }
        fn list(&self) -> driver_core::Result<Vec<LayerInfo>> {
            Ok(self.layers.lock().unwrap().values().cloned().collect())
        }
    }

    fn ids(v: &[(String, u64)]) -> Vec<&str> {
        v.iter().map(|(id, _)| id.as_str()).collect()
    }

    #[test]
    fn prune_removes_garbage_children_first_and_keeps_what_is_in_use() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("memory");
        let images = ImageStore::open(&dir).unwrap();
        images.put(&record("base", &["b0", "b1"], "sha256:c")).unwrap();
        let driver = Memory {
            layers: Mutex::new(
                [
                    layer("b0", None, false, 0),
                    layer("b1", Some("b0"), false, 0),
                    layer("ctr", Some("b1"), true, 0),
                    // Left by `image rm`: a chain nothing lists.
                    layer("g0", None, false, 0),
                    layer("g1", Some("g0"), false, 0),
                    layer("g2", Some("g1"), false, 0),
                    // Mounted by hand: kept with its parent.
                    layer("m0", None, false, 0),
                    layer("m1", Some("m0"), false, 1),
                    // Garbage when listed, taken into use before its removal.
                    layer("raced", None, false, 0),
                ]
                .into_iter()
                .map(|l| (l.id.clone(), l))
                .collect(),
            ),
            busy: ["raced".to_string()].into(),
            ..Default::default()
        };
        // A pull cache beside the driver's folder, with one blob nothing reaches.
        let stray = cache_blob(&root.path().join("blobs"), b"a stray blob");
        // A content-store blob no record names, written before the prune began.
        let unnamed = images.content.put_bytes(b"unnamed", Settle::Now).unwrap();
        let (_, _, written) = images.content.stored().unwrap().into_iter().find(|(d, _, _)| *d == unnamed).unwrap();
        for _ in 0..200 {
            if images.content.clock().unwrap() > written {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }

        let dry = prune(&driver, &images, &dir, true).unwrap();
        let at = |id: &str| ids(&dry.layers).iter().position(|l| *l == id);
        assert!(at("g2") < at("g1") && at("g1") < at("g0"), "children first: {:?}", ids(&dry.layers));
        let dry_set: BTreeSet<&str> = ids(&dry.layers).into_iter().collect();
        assert_eq!(dry_set, ["g0", "g1", "g2", "raced"].into());
        assert_eq!(driver.list().unwrap().len(), 9, "a dry run removes nothing");
        assert!(root.path().join("blobs/blobs/sha256").join(stray.trim_start_matches("sha256:")).exists());

        let p = prune(&driver, &images, &dir, false).unwrap();
        assert_eq!(p.layers.iter().find(|(id, _)| id == "g2").map(|(_, s)| *s), Some(200));
        let removed: BTreeSet<&str> = ids(&p.layers).into_iter().collect();
        assert_eq!(removed, ["g0", "g1", "g2"].into());
        assert_eq!(p.skipped.len(), 1, "{:?}", p.skipped);
        assert!(p.skipped[0].starts_with("layer raced: "), "{:?}", p.skipped);
        let left: Vec<String> = driver.list().unwrap().into_iter().map(|l| l.id).collect();
        assert_eq!(left, ["b0", "b1", "ctr", "m0", "m1", "raced"]);
        let blobs: BTreeSet<&str> = ids(&p.blobs).into_iter().collect();
        assert_eq!(blobs, [stray.as_str(), unnamed.as_str()].into());
        assert!(!root.path().join("blobs/blobs/sha256").join(stray.trim_start_matches("sha256:")).exists());
        assert!(images.content.stored().unwrap().iter().all(|(d, _, _)| *d != unnamed));

        // Nothing is left to prune.
        let again = prune(&driver, &images, &dir, false).unwrap();
        assert!(again.layers.is_empty() && again.blobs.is_empty(), "{:?} {:?}", again.layers, again.blobs);
    }

    fn memory(layers: &[LayerInfo]) -> Memory {
        Memory { layers: Mutex::new(layers.iter().map(|l| (l.id.clone(), l.clone())).collect()), ..Default::default() }
    }

    /// An image record torn by a power cut stops a prune (it may list any layer) with
    /// the store's own error naming the record and the field; nothing is removed.
    #[test]
    fn a_torn_image_record_stops_a_prune_naming_it() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("memory");
        let images = ImageStore::open(&dir).unwrap();
        let torn = images.dir().join("0123.json");
        fs::write(&torn, br#"{"name": "a", "layers": ["g0"], "complete": "yes"}"#).unwrap();
        let driver = memory(&[layer("g0", None, false, 0)]);
        match prune(&driver, &images, &dir, false) {
            Err(Error::Record { file, field, .. }) => assert_eq!((file, field.as_str()), (torn, "complete")),
            Err(e) => panic!("{e:?}"),
            Ok(p) => panic!("pruned {:?}", p.layers),
        }
        assert_eq!(driver.list().unwrap().len(), 1);
    }

    /// A full disk while a layer is removed stops the prune as the driver's error, with
    /// its errno (the `strata` binary's exit 7).
    #[test]
    fn a_full_disk_during_a_prune_keeps_its_errno() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("memory");
        let images = ImageStore::open(&dir).unwrap();
        let driver = Memory { full: ["g0".to_string()].into(), ..memory(&[layer("g0", None, false, 0)]) };
        let e = prune(&driver, &images, &dir, false).err().expect("the removal failed");
        assert!(matches!(&e, Error::Layer(l) if l.layer.as_deref() == Some("g0")), "{e:?}");
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
    }

    /// The pull cache's lock that cannot be taken is an io error at its path, errno kept
    /// (here ENOTDIR: the cache's place is a file).
    #[test]
    fn a_cache_lock_that_cannot_be_taken_names_its_path() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("blobs");
        fs::write(&file, b"not a directory").unwrap();
        let cache = file.join("cache");
        match CacheLock::shared(&cache) {
            Err(e @ Error::Io { .. }) => {
                assert_eq!(e.raw_os_error(), Some(libc::ENOTDIR));
                assert!(matches!(e, Error::Io { ref path, .. } if *path == cache), "{e:?}");
            }
            Err(e) => panic!("{e:?}"),
            Ok(_) => panic!("locked a cache under a file"),
        }
    }
}
