//! Containers and layers: `container ls`, `container rm`, `layer ls`, `image ls`.
//! (`image prune` is strata_image::prune.)

use std::collections::BTreeMap;

use driver_core::{Cause, Driver, Error as LayerError, LayerInfo};
use serde::Serialize;
use strata_image::images::{ImageRecord, ImageStore};

use crate::error::Error;
use crate::{outln, output};

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
    let records = images.list_readable()?;
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
    let info = container_layer(driver, name)?;
    if !info.writable {
        return Err(LayerError::layer(
            name,
            Cause::Refused("is not a container (a committed layer); `image rm` or `layer rm` removes layers".into()),
        )
        .into());
    }
    Ok(driver.remove(name)?)
}

/// The layer of container `name`: one that does not exist is no such container (exit
/// 4), in a container command's words.
pub fn container_layer(driver: &dyn Driver, name: &str) -> Result<LayerInfo, Error> {
    match driver.get(name) {
        Err(e) if matches!(e.cause, Cause::NotFound) => Err(Error::NoSuchContainer(name.to_string())),
        got => Ok(got?),
    }
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
    let users = used_by(&layers, &images.list_readable()?);
    let none = Vec::new();
    if json {
        let arr: Vec<serde_json::Value> = layers
            .iter()
            .map(|l| {
                serde_json::json!({"id": l.id, "parent": l.parent, "size": l.size, "mounted": l.mounts > 0,
                    "writable": l.writable, "diff_id": l.diff_id, "used_by": users.get(&l.id).unwrap_or(&none)})
            })
            .collect();
        output::json(&arr)?;
        return Ok(());
    }
    let w = if no_trunc { layers.iter().map(|l| l.id.len()).max().unwrap_or(2).max(19) } else { 19 };
    outln!("{:<w$}  {:<w$}  {:>10}  {:<7}  USED BY", "ID", "PARENT", "SIZE", "MOUNTED")?;
    for l in &layers {
        let mounted = if l.mounts > 0 { format!("yes ({})", l.mounts) } else { "no".into() };
        let used = users.get(&l.id).map(|u| u.join(", ")).unwrap_or_else(|| "-".into());
        outln!(
            "{:<w$}  {:<w$}  {:>10}  {mounted:<7}  {used}",
            output::id(&l.id, no_trunc),
            l.parent.as_deref().map_or("-", |p| output::id(p, no_trunc)),
            output::bytes(l.size),
        )?;
    }
    Ok(())
}

/// `image ls`.
pub fn list_images(driver: &dyn Driver, images: &ImageStore, json: bool, no_trunc: bool) -> Result<(), Error> {
    let list = images.list_readable()?;
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
        output::json(&arr)?;
        return Ok(());
    }
    let w = list.iter().map(|r| r.name.len()).max().unwrap_or(4).clamp(4, 60);
    outln!("{:<w$}  {:>6}  {:>10}  {:<19}  CONTAINERS", "NAME", "LAYERS", "SIZE", "TOP")?;
    for r in &list {
        let c = containers_of(r);
        outln!(
            "{:<w$}  {:>6}  {:>10}  {:<19}  {}",
            r.name,
            r.layers.len(),
            output::bytes(size_of(r)),
            r.top().map_or("-", |t| output::id(t, no_trunc)),
            if c.is_empty() { "-".to_string() } else { c.join(", ") }
        )?;
    }
    Ok(())
}
