//! `image history` and `image inspect --efficiency`: what each layer of a stored image
//! adds, changes, deletes and hides, read from its layer tars in the content store.
//!
//! The layers are replayed bottom to top over a map of the merged view (path → kind and
//! size). A layer's whiteouts and opaque markers apply to the layers below it first
//! (they never hide the layer's own entries, whatever their order in the tar), then its
//! entries are laid over. A regular file's bytes are *hidden* by the layer that
//! overwrites or deletes it: they are still shipped in the lower layer's blob but no
//! container sees them. dive calls the sum of those bytes the image's wasted space; the
//! efficiency is the share of all file bytes shipped that a container sees.

use std::collections::{BTreeMap, HashMap};

use oci_spec::image::History;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::images::ImageStore;

/// One row of `image history`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LayerHistory {
    pub chain_id: String,
    pub digest: String,
    /// Bytes of the layer's blob as stored (compressed).
    pub compressed: u64,
    /// Bytes of file content the layer's tar carries.
    pub unpacked: u64,
    pub added: u64,
    pub changed: u64,
    pub deleted: u64,
    /// Bytes of lower layers' files this layer overwrites or deletes.
    pub hidden: u64,
    pub created_by: String,
    pub comment: String,
}

/// `image inspect --efficiency`.
#[derive(Clone, Debug, Serialize)]
pub struct Efficiency {
    /// Every file byte of every layer.
    pub total_bytes: u64,
    /// Bytes of files overwritten or deleted by a higher layer.
    pub wasted_bytes: u64,
    /// The share of all file bytes that a container sees (1 when nothing is wasted).
    pub efficiency: f64,
    /// Paths by wasted bytes, largest first (at most ten).
    pub top_wasted: Vec<WastedPath>,
}

impl Efficiency {
    /// dive's CI rules: image `name` may waste at most `max_wasted` bytes and must be at
    /// least `min_efficiency` efficient (each when given).
    pub fn check(&self, name: &str, max_wasted: Option<u64>, min_efficiency: Option<f64>) -> Result<()> {
        if let Some(max) = max_wasted.filter(|m| self.wasted_bytes > *m) {
            return Err(Error::WastesTooMuch { name: name.to_string(), wasted: self.wasted_bytes, max });
        }
        if let Some(min) = min_efficiency.filter(|m| self.efficiency < *m) {
            return Err(Error::BelowMinEfficiency { name: name.to_string(), efficiency: self.efficiency, min });
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct WastedPath {
    pub path: String,
    pub bytes: u64,
    /// How many versions of it were hidden.
    pub count: u64,
}

#[derive(Clone, Copy)]
struct Entry {
    dir: bool,
    size: u64,
}

/// Whiteout and opaque markers of the OCI layer format.
const WH: &str = ".wh.";
const OPQ: &str = ".wh..wh..opq";

fn normal(path: &str) -> String {
    path.trim_start_matches("./").trim_start_matches('/').trim_end_matches('/').to_string()
}

/// Removes `path` and everything under it from `view`; returns what went.
fn remove_tree(view: &mut BTreeMap<String, Entry>, path: &str, children_only: bool) -> Vec<(String, Entry)> {
    let prefix = if path.is_empty() { String::new() } else { format!("{path}/") };
    let mut gone: Vec<String> =
        view.range(prefix.clone()..).take_while(|(k, _)| k.starts_with(&prefix)).map(|(k, _)| k.clone()).collect();
    if !children_only && view.contains_key(path) {
        gone.push(path.to_string());
    }
    gone.into_iter().filter_map(|k| view.remove(&k).map(|e| (k, e))).collect()
}

/// Replays the layers of image `name`; returns a row per layer, bottom to top, and
/// the bytes hidden per path.
/// Bytes and versions hidden, by path.
type Wasted = HashMap<String, (u64, u64)>;

fn replay(images: &ImageStore, name: &str) -> Result<(Vec<LayerHistory>, Wasted)> {
    let rec = images.get(name)?;
    let img = images.content.load(name, rec.manifest.as_deref())?;
    // History entries that made a layer, in order (empty_layer ones made none).
    let history: Vec<&History> = img
        .config
        .history()
        .as_deref()
        .unwrap_or_default()
        .iter()
        .filter(|e| !e.empty_layer().unwrap_or(false))
        .collect();
    let mut view: BTreeMap<String, Entry> = BTreeMap::new();
    let mut wasted = Wasted::new();
    let mut rows = Vec::new();
    for (i, layer) in img.layers().iter().enumerate() {
        let digest = layer.digest().to_string();
        let size = layer.size();
        let mut row = LayerHistory {
            chain_id: rec.layers.get(i).cloned().unwrap_or_default(),
            digest: digest.clone(),
            compressed: size,
            created_by: history.get(i).and_then(|h| h.created_by().clone()).unwrap_or_default(),
            comment: history.get(i).and_then(|h| h.comment().clone()).unwrap_or_default(),
            ..Default::default()
        };
        let what = format!("image {name}: layer {} ({digest})", i + 1);
        let fail = |e: std::io::Error| Error::read(&what, e);
        let (_, plain) =
            strata_archive::compress::decompress(images.content.read_blob(&digest, Some(size))?).map_err(fail)?;
        let mut tar = tar::Archive::new(plain);
        let mut deletions = Vec::new();
        let mut entries = Vec::new();
        for e in tar.entries().map_err(fail)? {
            let mut e = e.map_err(fail)?;
            let path = normal(&String::from_utf8_lossy(&e.path_bytes()));
            let (dir, base) = match path.rsplit_once('/') {
                Some((d, b)) => (d.to_string(), b.to_string()),
                None => (String::new(), path.clone()),
            };
            if base == OPQ {
                deletions.push((dir, true));
            } else if let Some(victim) = base.strip_prefix(WH) {
                deletions.push((if dir.is_empty() { victim.to_string() } else { format!("{dir}/{victim}") }, false));
            } else {
                let kind = e.header().entry_type();
                let size = if kind.is_file() { e.size() } else { 0 };
                row.unpacked += size;
                entries.push((path, Entry { dir: kind.is_dir(), size }));
            }
            // Drain the data so that the blob's digest and diff_id are checked at its end.
            std::io::copy(&mut e, &mut std::io::sink()).map_err(fail)?;
        }
        let mut hide = |row: &mut LayerHistory, path: &str, e: Entry| {
            if !e.dir {
                row.hidden += e.size;
                let w = wasted.entry(path.to_string()).or_default();
                w.0 += e.size;
                w.1 += 1;
            }
        };
        for (path, children_only) in deletions {
            for (p, e) in remove_tree(&mut view, &path, children_only) {
                row.deleted += 1;
                hide(&mut row, &p, e);
            }
        }
        for (path, e) in entries {
            match view.get(&path).copied() {
                Some(old) if old.dir && e.dir => {}
                Some(old) => {
                    row.changed += 1;
                    if old.dir {
                        // A directory replaced by a file hides all below it.
                        for (p, sub) in remove_tree(&mut view, &path, true) {
                            hide(&mut row, &p, sub);
                        }
                    }
                    hide(&mut row, &path, old);
                }
                None => row.added += 1,
            }
            view.insert(path, e);
        }
        rows.push(row);
    }
    Ok((rows, wasted))
}

/// The rows of `image history`, bottom to top.
pub fn history(images: &ImageStore, name: &str) -> Result<Vec<LayerHistory>> {
    Ok(replay(images, name)?.0)
}

/// The wasted space of image `name`.
pub fn efficiency(images: &ImageStore, name: &str) -> Result<Efficiency> {
    let (rows, wasted) = replay(images, name)?;
    let total_bytes: u64 = rows.iter().map(|r| r.unpacked).sum();
    let wasted_bytes: u64 = rows.iter().map(|r| r.hidden).sum();
    let mut top: Vec<WastedPath> = wasted
        .into_iter()
        .map(|(path, (bytes, count))| WastedPath { path: format!("/{path}"), bytes, count })
        .collect();
    top.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.path.cmp(&b.path)));
    top.truncate(10);
    let efficiency = if total_bytes == 0 { 1.0 } else { (total_bytes - wasted_bytes) as f64 / total_bytes as f64 };
    Ok(Efficiency { total_bytes, wasted_bytes, efficiency, top_wasted: top })
}

#[cfg(test)]
mod tests {
    use super::{Efficiency, Error};

    /// Generated figures (fixed seed): a rule fails exactly when its limit is passed,
    /// the wasted bytes first, with the variant that names the figure and the limit.
    #[test]
    fn the_ci_rules_fail_exactly_past_their_limits() {
        let mut x: u64 = 0xeff1_c1e0_c0de;
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let (total, wasted) = (1 + x % 1000, (x >> 10) % 1000);
            let wasted = wasted.min(total);
            let efficiency = (total - wasted) as f64 / total as f64;
            let e = Efficiency { total_bytes: total, wasted_bytes: wasted, efficiency, top_wasted: Vec::new() };
            let max = ((x >> 20) & 1 == 0).then_some((x >> 24) % 1000);
            let min = ((x >> 21) & 1 == 0).then_some(((x >> 34) % 1000) as f64 / 1000.0);
            match e.check("img", max, min) {
                Ok(()) => assert!(max.is_none_or(|m| wasted <= m) && min.is_none_or(|m| efficiency >= m)),
                Err(Error::WastesTooMuch { name, wasted: w, max: m }) => {
                    assert_eq!((name.as_str(), w, Some(m)), ("img", wasted, max));
                    assert!(w > m);
                }
                Err(Error::BelowMinEfficiency { efficiency: got, min: m, .. }) => {
                    assert!(max.is_none_or(|mx| wasted <= mx), "the wasted rule is checked first");
                    assert_eq!((got, Some(m)), (efficiency, min));
                    assert!(got < m);
                }
                Err(other) => panic!("{other}"),
            }
        }
    }
}
