//! `strata check [--repair]`: proves a driver's store intact, or names what is not, and
//! heals what the store keeps enough to heal. See docs/check.md.
//!
//! What is checked, each problem one [`Problem`] naming its subject:
//! * every layer's metadata (`meta/<id>.json`: parses, its parent is listed, its
//!   content is there);
//! * every read-only layer's content against its content record
//!   ([`driver_core::record`]), through the driver's own tree of that layer alone;
//!   container layers for their structure only (their content is theirs to change);
//! * every image record (parses; its layers are listed and are the chain its kept
//!   config's diff_ids make, each layer with that diff_id over that parent);
//! * every kept blob against its digest, and the blobs each image names being there;
//! * what dead processes left: staging entries (found before the store is opened, whose
//!   recovery discards them) and pending unpacks.
//!
//! `--repair` ([`repair`]): a damaged image layer (content, content record or metadata)
//! is applied again from its kept blob into fresh staging and swapped in; a lost image
//! record is rebuilt from the layer chain and the kept manifest and config; a blob that
//! does not match its digest, and a layer nothing can make again (with the layers over
//! it and the images that list it), are removed, saying what was lost and how to get it
//! back. A container's layer is never removed, nor anything it is over.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::content::ContentStore;
use crate::error::{Error, IoContext, Result};
use crate::image::chain_ids;
use crate::images::{ImageRecord, ImageStore};
use crate::media::REF_NAME;
use driver_core::driver::Driver;
use driver_core::error::{Cause, Error as LayerError};
use driver_core::store::{LayerMeta, Store};

/// What a problem is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A layer's content differs from its content record (subject: the layer ID).
    Layer,
    /// A layer's metadata (`meta/<id>.json`) is empty, unreadable or inconsistent.
    LayerRecord,
    /// A read-only layer's content record (`meta/<id>.files`) is missing or unreadable.
    ContentRecord,
    /// An image record (subject: the image name, or its record file when the name is lost).
    Image,
    /// A kept blob (subject: its digest).
    Blob,
    /// A staging entry a dead process left (subject: its path).
    Staging,
    /// An unpack a dead process left (subject: its pending record).
    Pending,
}

/// One problem: its kind, what it is about, and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    pub kind: Kind,
    pub subject: String,
    pub what: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            Kind::Layer => "layer",
            Kind::LayerRecord => "layer record",
            Kind::ContentRecord => "content record",
            Kind::Image => "image",
            Kind::Blob => "blob",
            Kind::Staging => "staging",
            Kind::Pending => "pending",
        };
        write!(f, "{kind} {}: {}", self.subject, self.what)
    }
}

/// What `--repair` did about a subject.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repair {
    pub kind: Kind,
    pub subject: String,
    /// What was done ("re-applied from blob sha256:…", "removed: …; pull it again").
    pub action: String,
}

/// What a check found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Layers, images and blobs looked at.
    pub layers: usize,
    pub images: usize,
    pub blobs: usize,
    pub problems: Vec<Problem>,
}

impl Report {
    pub fn healthy(&self) -> bool {
        self.problems.is_empty()
    }

    fn push(&mut self, kind: Kind, subject: impl Into<String>, what: impl Into<String>) {
        self.problems.push(Problem { kind, subject: subject.into(), what: what.into() });
    }
}

/// The most lines one layer's content differences take; the rest are counted.
const MAX_LINES_PER_LAYER: usize = 50;

/// Staging entries dead processes left in the driver folder `driver_dir`: read before
/// the driver is opened, since opening it discards them.
pub fn leftovers(driver_dir: &Path) -> Vec<Problem> {
    Store::leftovers(driver_dir)
        .into_iter()
        .map(|p| Problem {
            kind: Kind::Staging,
            subject: p.display().to_string(),
            what: "left by a process that died mid-change (discarded when the store is opened)".into(),
        })
        .collect()
}

fn store_of(driver: &dyn Driver) -> Result<&Store> {
    let why = || format!("the {} driver keeps no layer store to check", driver.name());
    driver.layer_store().ok_or_else(|| LayerError::new(Cause::Unsupported(why())).into())
}

/// Checks the whole store of `driver` (see the module doc). Leftover staging is
/// [`leftovers`]'s, before the driver is opened.
pub fn check(driver: &dyn Driver, images: &ImageStore) -> Result<Report> {
    let store = store_of(driver)?;
    let mut report = Report::default();
    let layers = check_layers(driver, store, &mut report)?;
    check_images(images, &layers, &mut report)?;
    check_blobs(&images.content, &mut report)?;
    check_pending(images, &mut report)?;
    Ok(report)
}

/// Every layer's metadata, parsed where it parses (`None`: it does not).
type Layers = BTreeMap<String, Option<LayerMeta>>;

fn check_layers(driver: &dyn Driver, store: &Store, report: &mut Report) -> Result<Layers> {
    let raw = store.list_raw()?;
    let layers: Layers = raw.iter().map(|(id, m)| (id.clone(), m.as_ref().ok().cloned())).collect();
    report.layers = raw.len();
    for (id, meta) in &raw {
        let meta = match meta {
            Ok(m) => m,
            Err(e) => {
                let path = store.record_file(id);
                let what = match fs::metadata(&path) {
                    Ok(md) if md.len() == 0 => "record empty".to_string(),
                    _ => format!("record unreadable: {}", e.cause),
                };
                report.push(Kind::LayerRecord, id, what);
                // Its content can still be checked when a content record says what it is.
                if let Ok(Some(rec)) = store.content_record(id) {
                    verify_content(driver, id, &rec, report)?;
                }
                continue;
            }
        };
        if let Some(p) = &meta.parent {
            if !layers.contains_key(p) {
                report.push(Kind::LayerRecord, id, format!("its parent {p} is not in the store"));
            }
        }
        let Some(tree) = driver.own_tree(id) else { continue };
        if !tree.is_dir() {
            report.push(Kind::Layer, id, format!("its content ({}) is missing", tree.display()));
            continue;
        }
        if meta.writable {
            // A container's content is its own: structure only.
            continue;
        }
        match store.content_record(id) {
            Ok(Some(rec)) => verify_content(driver, id, &rec, report)?,
            Ok(None) => report.push(Kind::ContentRecord, id, "missing"),
            Err(_) => {
                let empty = fs::metadata(store.files_path(id)).is_ok_and(|m| m.len() == 0);
                report.push(Kind::ContentRecord, id, if empty { "record empty" } else { "record unreadable" });
            }
        }
    }
    Ok(layers)
}

fn verify_content(driver: &dyn Driver, id: &str, rec: &driver_core::record::Record, report: &mut Report) -> Result<()> {
    let Some(tree) = driver.own_tree(id) else { return Ok(()) };
    let lines = driver_core::record::verify(&tree, rec).map_err(|e| LayerError::at(id, &tree, e))?;
    let more = lines.len().saturating_sub(MAX_LINES_PER_LAYER);
    for line in lines.into_iter().take(MAX_LINES_PER_LAYER) {
        report.push(Kind::Layer, id, line);
    }
    if more > 0 {
        report.push(Kind::Layer, id, format!("and {more} more differences"));
    }
    Ok(())
}

/// Every image record file: its path and what it parsed to.
fn image_records(images: &ImageStore) -> Result<Vec<(PathBuf, std::result::Result<ImageRecord, String>)>> {
    let dir = images.dir();
    let mut out = Vec::new();
    for e in fs::read_dir(dir).at_path(dir)? {
        let p = e.at_path(dir)?.path();
        let hidden = p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'));
        if hidden || !p.is_file() || p.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let parsed = match fs::read(&p) {
            Ok(d) if d.is_empty() => Err("record empty".to_string()),
            // The line made from the typed error: the field and the cause (the path is the subject).
            Ok(d) => Error::parse_record::<ImageRecord>(&p, &d).map_err(|e| match e {
                Error::Record { field, source, .. } => format!("record unreadable: {field}: {source}"),
                e => format!("record unreadable: {e}"),
            }),
            Err(e) => Err(format!("record unreadable: {e}")),
        };
        out.push((p, parsed));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// The image records that read, complete and not being removed (a record that does not
/// read stops [`ImageStore::list`]).
fn readable_records(images: &ImageStore) -> Result<Vec<ImageRecord>> {
    Ok(image_records(images)?.into_iter().filter_map(|(_, r)| r.ok()).filter(|r| r.complete && !r.removing).collect())
}

fn check_images(images: &ImageStore, layers: &Layers, report: &mut Report) -> Result<()> {
    let records = image_records(images)?;
    report.images = records.len();
    for (path, rec) in records {
        let rec = match rec {
            Ok(r) => r,
            Err(what) => {
                report.push(Kind::Image, path.display().to_string(), what);
                continue;
            }
        };
        if !rec.complete || rec.removing {
            continue; // an unpack or a removal under way, or the pending check's
        }
        let name = rec.name.clone();
        for (i, id) in rec.layers.iter().enumerate() {
            if !layers.contains_key(id) {
                report.push(
                    Kind::Image,
                    &name,
                    format!("its layer {id} ({} of {}) is not in the store", i + 1, rec.layers.len()),
                );
            }
        }
        let Some(manifest) = rec.manifest.as_deref() else { continue };
        let stored = match images.content.load(&name, Some(manifest)) {
            Ok(s) => s,
            Err(e) => {
                report.push(Kind::Image, &name, format!("its manifest or config cannot be read: {e}"));
                continue;
            }
        };
        for b in stored.blobs() {
            if !images.content.has(&b) {
                report.push(
                    Kind::Blob,
                    &b,
                    format!("missing (image {name} names it; unpack or pull {name} again to keep it)"),
                );
            }
        }
        let diff_ids = stored.diff_ids();
        let chain = chain_ids(diff_ids);
        if chain != rec.layers {
            report.push(Kind::Image, &name, "its layers are not the chain of its config's diff_ids");
            continue;
        }
        for (i, id) in chain.iter().enumerate() {
            let Some(Some(meta)) = layers.get(id) else { continue };
            let parent = i.checked_sub(1).map(|p| chain[p].as_str());
            if meta.diff_id.as_deref() != Some(diff_ids[i].as_str()) || meta.parent.as_deref() != parent {
                report.push(
                    Kind::Image,
                    &name,
                    format!(
                        "its layer {id} was not made from its layer {} over {}",
                        i + 1,
                        parent.unwrap_or("nothing")
                    ),
                );
            }
        }
    }
    Ok(())
}

fn check_blobs(content: &ContentStore, report: &mut Report) -> Result<()> {
    let stored = content.stored()?;
    report.blobs = stored.len();
    for (digest, size, _) in stored {
        let mut r = content.read_blob(&digest, None)?;
        let mut buf = vec![0u8; 1 << 20];
        let failed = loop {
            match r.read(&mut buf) {
                Ok(0) => break None,
                Ok(_) => {}
                Err(e) => break Some(e),
            }
        };
        if failed.is_some() {
            report.push(
                Kind::Blob,
                &digest,
                format!("its {size} bytes do not have this digest (truncated or corrupt)"),
            );
        }
    }
    Ok(())
}

fn check_pending(images: &ImageStore, report: &mut Report) -> Result<()> {
    for p in images.dead_pending()? {
        report.push(
            Kind::Pending,
            p.display().to_string(),
            "an unpack a dead process left; its layers go at the next command",
        );
    }
    Ok(())
}

/// What `--repair` did: one [`Repair`] per subject it acted on.
///
/// The order matters: blobs first (a layer is applied again only from a blob known
/// good), then image records (the store reads every one before it removes a layer), then
/// dead unpacks, then layers (bottom first: a layer is applied again over its parent),
/// then the images that what was lost leaves incomplete.
pub fn repair(driver: &dyn Driver, images: &ImageStore, found: &Report) -> Result<Vec<Repair>> {
    let store = store_of(driver)?;
    let mut done = Vec::new();
    let mut note = |kind: Kind, subject: &str, action: String| {
        done.push(Repair { kind, subject: subject.to_string(), action });
    };
    for p in found.problems.iter().filter(|p| p.kind == Kind::Staging) {
        if !Path::new(&p.subject).exists() {
            note(Kind::Staging, &p.subject, "discarded".into());
        }
    }
    let bad_blobs: BTreeSet<&str> = found
        .problems
        .iter()
        .filter(|p| p.kind == Kind::Blob && !p.what.starts_with("missing"))
        .map(|p| p.subject.as_str())
        .collect();
    for b in &bad_blobs {
        images.content.remove(b)?;
        let users: Vec<String> = readable_records(images)?
            .into_iter()
            .filter(|r| {
                r.manifest.as_deref().is_some_and(|m| {
                    images.content.load(&r.name, Some(m)).is_ok_and(|s| s.blobs().iter().any(|x| x == b)) || m == *b
                })
            })
            .map(|r| r.name)
            .collect();
        let how = if users.is_empty() {
            "nothing names it".to_string()
        } else {
            format!("image {} named it: unpack or pull it again to keep it", users.join(", "))
        };
        note(Kind::Blob, b, format!("removed (it did not match its digest); {how}"));
    }
    // Image records that cannot be read: rebuilt from a kept manifest whose chain is here.
    let broken: Vec<&Problem> =
        found.problems.iter().filter(|p| p.kind == Kind::Image && Path::new(&p.subject).is_absolute()).collect();
    if !broken.is_empty() {
        for (subject, action) in rebuild_image_records(driver, images, &broken)? {
            note(Kind::Image, &subject, action);
        }
    }
    if found.problems.iter().any(|p| p.kind == Kind::Pending) {
        match images.collect(driver) {
            Ok(removed) => note(
                Kind::Pending,
                "pending unpacks",
                format!("finished: removed {} layer(s) they had made", removed.len()),
            ),
            Err(e) => note(Kind::Pending, "pending unpacks", format!("not finished: {e}")),
        }
    }
    // Layers: every read-only layer with a problem of its own is made again from its
    // blob; what cannot be is lost, with what it was part of.
    let damaged: BTreeSet<String> = found
        .problems
        .iter()
        .filter(|p| matches!(p.kind, Kind::Layer | Kind::LayerRecord | Kind::ContentRecord))
        .map(|p| p.subject.clone())
        .collect();
    let records = readable_records(images)?;
    let mut lost = Vec::new();
    for id in bottom_first(store, &records, damaged) {
        if store.list_raw()?.iter().all(|(l, _)| *l != id) {
            continue; // gone with a dead unpack
        }
        match repair_layer(driver, store, images, &records, &id)? {
            Fixed::Done(action) => note(Kind::Layer, &id, action),
            Fixed::Lost(why) => lost.push((id, why)),
        }
    }
    for (kind, subject, action) in remove_lost(driver, store, images, &lost)? {
        note(kind, &subject, action);
    }
    // Images that what was removed (a layer, a blob of the manifest or config) left
    // incomplete: removed, saying how to get them back.
    for (name, action) in remove_incomplete_images(driver, store, images)? {
        note(Kind::Image, &name, action);
    }
    Ok(done)
}

/// What [`repair_layer`] did with a layer.
enum Fixed {
    /// Healed, or left as it is on purpose: what was done.
    Done(String),
    /// Nothing here can make it again: why.
    Lost(String),
}

/// `ids` ordered so that a layer comes after its parent: by their depth in the chain of
/// their record, or where it does not read, in the image that lists them.
fn bottom_first(store: &Store, records: &[ImageRecord], ids: BTreeSet<String>) -> Vec<String> {
    let metas: BTreeMap<String, LayerMeta> =
        store.list_raw().unwrap_or_default().into_iter().filter_map(|(id, m)| m.ok().map(|m| (id, m))).collect();
    let depth = |id: &str| -> usize {
        if let Some(i) = records.iter().find_map(|r| r.layers.iter().position(|l| l == id)) {
            return i;
        }
        let (mut n, mut cur) = (0, metas.get(id).and_then(|m| m.parent.as_deref()));
        while let Some(p) = cur {
            n += 1;
            if n > metas.len() {
                break; // a loop in corrupt records
            }
            cur = metas.get(p).and_then(|m| m.parent.as_deref());
        }
        n
    };
    let mut v: Vec<(usize, String)> = ids.into_iter().map(|id| (depth(&id), id)).collect();
    v.sort();
    v.into_iter().map(|(_, id)| id).collect()
}

/// Makes layer `id` whole again from its kept blob, or says why nothing here can.
fn repair_layer(
    driver: &dyn Driver,
    store: &Store,
    images: &ImageStore,
    records: &[ImageRecord],
    id: &str,
) -> Result<Fixed> {
    let meta = store.get(id).ok();
    if meta.as_ref().is_some_and(|m| m.writable) {
        return Ok(Fixed::Done("a container's layer: left as it is (its writes are the container's)".into()));
    }
    let has_files = store.files_path(id).exists();
    if meta.is_none() && !has_files {
        // Only read-only layers have a content record: without one, this may be a
        // container's layer, whose writes are never removed.
        return Ok(Fixed::Done(
            "its record does not read and it has no content record (it may be a container's layer): kept as it is; \
             `layer rm` removes it"
                .into(),
        ));
    }
    // An image that lists it, with its layer blob kept.
    let mut failed = None;
    for rec in records {
        let Some(i) = rec.layers.iter().position(|l| l == id) else { continue };
        let Some(manifest) = rec.manifest.as_deref() else { continue };
        let Ok(stored) = images.content.load(&rec.name, Some(manifest)) else { continue };
        let layers = stored.layers();
        let Some(layer) = layers.get(i) else { continue };
        let digest = layer.digest().as_ref();
        if !images.content.has(digest) {
            continue;
        }
        let diff_ids = stored.diff_ids();
        let parent = i.checked_sub(1).map(|p| rec.layers[p].as_str());
        let mut blob = images.content.read_blob(digest, Some(layer.size()))?;
        match driver.reapply(id, parent, &mut blob, diff_ids.get(i).map(String::as_str)) {
            Ok(_) => {
                return Ok(Fixed::Done(format!("applied again from blob {digest} (image {}) and swapped in", rec.name)))
            }
            Err(e) => failed = Some(format!("applying blob {digest} again failed: {e}")),
        }
    }
    if let Some(why) = failed {
        return Ok(Fixed::Lost(why));
    }
    if meta.is_some() && !has_files && driver.own_tree(id).is_some_and(|t| t.is_dir()) {
        // A layer from before content records: all there is to go by is the layer itself.
        driver.rerecord(id)?;
        return Ok(Fixed::Done(
            "no blob to make it again: its content record was made anew from the layer as it is now".into(),
        ));
    }
    let users: Vec<&str> =
        records.iter().filter(|r| r.layers.iter().any(|l| l == id)).map(|r| r.name.as_str()).collect();
    Ok(Fixed::Lost(if users.is_empty() {
        "no image lists it and no blob makes it again".into()
    } else {
        format!("image {} lost the blob it was made from", users.join(", "))
    }))
}

/// Removes the layers nothing can make again, with the read-only layers over them and
/// the images that list any of them; a container's layer, and so what it is over, is
/// never removed. Returns what was done, per layer or image.
fn remove_lost(
    driver: &dyn Driver,
    store: &Store,
    images: &ImageStore,
    lost: &[(String, String)],
) -> Result<Vec<(Kind, String, String)>> {
    let mut out = Vec::new();
    if lost.is_empty() {
        return Ok(out);
    }
    let metas: Vec<LayerMeta> = store.list()?;
    // Each lost layer with every layer over it, found by following parents up; kept
    // whole when a container is among them.
    let mut doomed: BTreeSet<String> = BTreeSet::new();
    for (id, why) in lost {
        let mut over: BTreeSet<String> = [id.clone()].into();
        loop {
            let more: Vec<String> = metas
                .iter()
                .filter(|m| !over.contains(&m.id) && m.parent.as_ref().is_some_and(|p| over.contains(p)))
                .map(|m| m.id.clone())
                .collect();
            if more.is_empty() {
                break;
            }
            over.extend(more);
        }
        let containers: Vec<&str> =
            metas.iter().filter(|m| m.writable && over.contains(&m.id)).map(|m| m.id.as_str()).collect();
        if containers.is_empty() {
            doomed.extend(over);
        } else {
            out.push((
                Kind::Layer,
                id.clone(),
                format!(
                    "{why}; kept, damaged: container {} is over it (its writes are its own; remove it, then run \
                     `check --repair` again)",
                    containers.join(", ")
                ),
            ));
        }
    }
    for rec in readable_records(images)? {
        let Some(gone) = rec.layers.iter().find(|l| doomed.contains(*l)) else { continue };
        let action = match images.remove(driver, &rec.name) {
            Ok(_) => format!("removed: its layer {gone} was lost; unpack or pull {} again", rec.name),
            Err(e) => format!("its layer {gone} was lost, and the image could not be removed: {e}"),
        };
        out.push((Kind::Image, rec.name.clone(), action));
    }
    // Top first: a layer goes after those over it.
    let order = bottom_first(store, &[], doomed.clone());
    let why_of = |id: &str| lost.iter().find(|(l, _)| l == id).map(|(_, w)| w.clone());
    for id in order.iter().rev() {
        if store.list_raw()?.iter().all(|(l, _)| l != id) {
            if let Some(why) = why_of(id) {
                out.push((Kind::Layer, id.clone(), format!("{why}: removed with its image")));
            }
            continue;
        }
        let why = why_of(id).unwrap_or_else(|| "a layer under it was lost".into());
        let mut removed = driver.remove(id);
        let mut released = String::new();
        if let Err(LayerError { cause: Cause::Mounted(n), .. }) = &removed {
            // A count of views a power cut (or a killed process) left in the record: a
            // lost read-only layer goes all the same, its views with it (the driver
            // unmounts what is still mounted as it removes it).
            released = format!(" (its record still counted {n} view(s): released)");
            store.update(id, |m| {
                m.mounts = 0;
                Ok(())
            })?;
            removed = driver.remove(id);
        }
        let action = match removed {
            Ok(()) => format!("{why}: removed{released} (unpack or pull its image again, or `layer apply` it again)"),
            Err(e) => format!("{why}: cannot be removed: {e}"),
        };
        out.push((Kind::Layer, id.clone(), action));
    }
    Ok(out)
}

/// Removes the complete image records that are no longer whole (a layer gone, the
/// manifest or config unreadable, the chain wrong): what the removals of a repair
/// leave. An image with a container over it is kept (its removal is refused).
fn remove_incomplete_images(driver: &dyn Driver, store: &Store, images: &ImageStore) -> Result<Vec<(String, String)>> {
    let layers: Layers = store.list_raw()?.into_iter().map(|(id, m)| (id, m.ok())).collect();
    let mut found = Report::default();
    check_images(images, &layers, &mut found)?;
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for p in found.problems.iter().filter(|p| p.kind == Kind::Image && !Path::new(&p.subject).is_absolute()) {
        if !seen.insert(p.subject.clone()) {
            continue;
        }
        let action = match images.remove(driver, &p.subject) {
            Ok(_) => format!("removed: {}; unpack or pull {} again", p.what, p.subject),
            Err(e) => format!("{}, and it could not be removed: {e}", p.what),
        };
        out.push((p.subject.clone(), action));
    }
    Ok(out)
}

/// Rebuilds image records that cannot be read: each kept manifest that no readable
/// record names and whose layer chain is all here becomes a record again, under the
/// name the broken record file was for when a name in the manifest matches it, else
/// under a name made from its digest.
fn rebuild_image_records(
    driver: &dyn Driver,
    images: &ImageStore,
    broken: &[&Problem],
) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let named: BTreeSet<String> = readable_records(images)?.into_iter().filter_map(|r| r.manifest).collect();
    let mut files: Vec<PathBuf> = broken.iter().map(|p| PathBuf::from(&p.subject)).collect();
    for (digest, size, _) in images.content.stored()? {
        if named.contains(&digest) || size > 4 << 20 {
            continue;
        }
        // Only a blob that reads as a manifest, with its config, loads.
        let Ok(stored) = images.content.load("(recovered)", Some(&digest)) else { continue };
        let chain = chain_ids(stored.diff_ids());
        if chain.is_empty() || !chain.iter().all(|id| driver.get(id).is_ok()) {
            continue;
        }
        let candidates: Vec<String> =
            stored.manifest.annotations().as_ref().and_then(|a| a.get(REF_NAME)).cloned().into_iter().collect();
        let matched = files.iter().position(|f| {
            candidates.iter().any(|c| f.file_name().is_some_and(|n| n == crate::images::record_file_name(c).as_str()))
        });
        let (name, from) = match matched {
            Some(i) => {
                let f = files.remove(i);
                let n = candidates
                    .into_iter()
                    .find(|c| f.file_name().is_some_and(|n| n == crate::images::record_file_name(c).as_str()))
                    .unwrap_or_default();
                (n, Some(f))
            }
            None => (format!("recovered-{}", &digest.trim_start_matches("sha256:")[..12]), files.pop()),
        };
        let rec = ImageRecord {
            name: name.clone(),
            layers: chain,
            config_digest: stored.config_digest.clone(),
            manifest: Some(digest.clone()),
            complete: true,
            pid: 0,
            removing: false,
        };
        images.put(&rec)?;
        let subject = from.as_ref().map(|f| f.display().to_string()).unwrap_or_else(|| name.clone());
        if let Some(f) = &from {
            if f.file_name().is_some_and(|n| n != crate::images::record_file_name(&name).as_str()) {
                let _ = fs::remove_file(f);
            }
        }
        out.push((subject, format!("rebuilt from the layer chain and kept manifest {digest} as image {name}")));
    }
    for f in files {
        let _ = fs::remove_file(&f);
        out.push((
            f.display().to_string(),
            "removed: no kept manifest matches a layer chain here (the image is lost: unpack or pull it again)".into(),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
