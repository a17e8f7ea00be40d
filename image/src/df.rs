//! `strata df`: the disk each image and each container uses, shared and unique, and
//! the store's total. See docs/check.md ("strata df") for what is counted.
//!
//! A layer's bytes and inodes are those of its own tree as `du` counts them (blocks ×
//! 512, one inode per node, a hardlinked inode once), read from counts kept beside it,
//! so `df` reads small records and walks no tree it has counted before:
//! * a read-only layer's count is made when it is committed, with its content record,
//!   and kept in its metadata ([`driver_core::lifecycle::noted_usage`]);
//! * a container's layer changes, but only through its view: its count is made by the
//!   first `df` after its view was released and kept, unsynced, in a file of its own
//!   ([`driver_core::store::Store::keep_usage`]) that is read only while no view was
//!   taken since, in the same boot. A container whose view is taken now is walked at
//!   each call. The containers to walk are walked in parallel.
//!
//! A layer's *users* are the images that list it and the containers whose chain holds
//! it; an image's or container's layer is *shared* when it has more than one user, else
//! *unique* to it.

use std::collections::BTreeMap;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::images::ImageStore;
use driver_core::driver::{Driver, Usage};
use driver_core::error::{Cause, Error as LayerError};
use driver_core::lifecycle::noted_usage;
use driver_core::store::{LayerMeta, Store};

/// Bytes and inodes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub bytes: u64,
    pub inodes: u64,
}

impl Counts {
    fn add(&mut self, u: Usage) {
        self.bytes += u.bytes;
        self.inodes += u.inodes;
    }
}

/// One image or container.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usor {
    pub name: String,
    /// Layers it uses (a container: its own and its image's).
    pub layers: usize,
    pub total: Counts,
    /// Of `total`, what layers with another user hold.
    pub shared: Counts,
    /// Of `total`, what only it uses.
    pub unique: Counts,
}

/// The whole answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Df {
    pub images: Vec<Usor>,
    pub containers: Vec<Usor>,
    /// Every layer once (used or not).
    pub layers: Counts,
    /// Bytes of the blobs the content store keeps (and their count as inodes).
    pub blobs: Counts,
    /// `layers` + `blobs`.
    pub total: Counts,
}

/// A layer's bytes and inodes as kept ([`noted_usage`] for a read-only layer,
/// [`Store::kept_usage`] for a container's), if they are.
fn kept(store: &Store, meta: &LayerMeta) -> Option<Usage> {
    if meta.writable {
        store.kept_usage(meta)
    } else {
        noted_usage(meta)
    }
}

/// A layer's bytes and inodes from a walk of its own tree; for a container not mounted,
/// the count is kept for the next call.
fn walk(driver: &dyn Driver, store: &Store, meta: &LayerMeta) -> driver_core::Result<Usage> {
    let tree = driver.own_tree(&meta.id).ok_or_else(|| LayerError::layer(&meta.id, Cause::NotFound))?;
    let u = driver_core::sys::disk_usage(&tree).map_err(|e| LayerError::at(&meta.id, &tree, e))?;
    if meta.writable {
        // A cache: a store `df` may not write to (another user's, read-only) is still
        // counted, by the walk.
        let _ = store.keep_usage(meta, u);
    }
    Ok(u)
}

/// Counts the store of `driver`.
pub fn df(driver: &dyn Driver, images: &ImageStore) -> Result<Df> {
    let store = driver.layer_store().ok_or_else(|| {
        LayerError::new(Cause::Unsupported(format!("the {} driver keeps no layer store", driver.name())))
    })?;
    let metas: BTreeMap<String, LayerMeta> =
        store.list_raw()?.into_iter().filter_map(|(id, m)| m.ok().map(|m| (id, m))).collect();
    let mut usage: BTreeMap<&str, Usage> = BTreeMap::new();
    let mut to_walk = Vec::new();
    for (id, m) in &metas {
        match kept(store, m) {
            Some(u) => drop(usage.insert(id.as_str(), u)),
            None => to_walk.push((id.as_str(), m)),
        }
    }
    // Each walk is a tree of its own (on vfs a container's is a whole copy of its image).
    let walked: Vec<(&str, driver_core::Result<Usage>)> =
        to_walk.into_par_iter().map(|(id, m)| (id, walk(driver, store, m))).collect();
    for (id, u) in walked {
        usage.insert(id, u?);
    }
    let mut out = Df::default();
    for u in usage.values() {
        out.layers.add(*u);
    }
    // Who uses what: each image its record's layers, each container its chain.
    let mut users: Vec<(String, bool, Vec<&str>)> = Vec::new();
    for rec in images.list_readable()? {
        let layers: Vec<&str> =
            rec.layers.iter().filter_map(|l| metas.get_key_value(l.as_str()).map(|(k, _)| k.as_str())).collect();
        users.push((rec.name.clone(), false, layers));
    }
    for (id, m) in metas.iter().filter(|(_, m)| m.writable) {
        let mut chain = vec![id.as_str()];
        let mut cur = m.parent.as_deref();
        while let Some(p) = cur {
            let Some((k, pm)) = metas.get_key_value(p) else { break };
            if chain.len() > metas.len() {
                break; // a loop in corrupt records
            }
            chain.push(k.as_str());
            cur = pm.parent.as_deref();
        }
        users.push((id.clone(), true, chain));
    }
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, _, layers) in &users {
        let mut seen: Vec<&str> = layers.clone();
        seen.sort_unstable();
        seen.dedup();
        for l in seen {
            *count.entry(l).or_default() += 1;
        }
    }
    for (name, container, layers) in &users {
        let mut u = Usor { name: name.clone(), layers: layers.len(), ..Default::default() };
        let mut seen: Vec<&str> = layers.clone();
        seen.sort_unstable();
        seen.dedup();
        for l in seen {
            let lu = usage[l];
            u.total.add(lu);
            if count[l] > 1 {
                u.shared.add(lu);
            } else {
                u.unique.add(lu);
            }
        }
        if *container {
            out.containers.push(u);
        } else {
            out.images.push(u);
        }
    }
    for (_, size, _) in images.content.stored()? {
        out.blobs.bytes += size;
        out.blobs.inodes += 1;
    }
    out.total = Counts { bytes: out.layers.bytes + out.blobs.bytes, inodes: out.layers.inodes + out.blobs.inodes };
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::testdriver::with_record;

    /// An image record torn by a power cut (`--sync none`) hides nothing else: `df`
    /// lists around it (its layers count as no image's until `check --repair`), and the
    /// record is one the store's own strict read names with its field.
    #[test]
    fn a_torn_image_record_is_listed_around_and_named_with_its_field() {
        let (_dir, driver, images, torn) = with_record(br#"{"name": "a", "layers": 5}"#);
        assert_eq!(df(&driver, &images).unwrap(), Df::default());
        match images.list() {
            Err(Error::Record { file, field, .. }) => assert_eq!((&file, field.as_str()), (&torn, "layers")),
            other => panic!("{other:?}"),
        }
        std::fs::remove_file(&torn).unwrap();
        assert_eq!(df(&driver, &images).unwrap(), Df::default());
    }
}
