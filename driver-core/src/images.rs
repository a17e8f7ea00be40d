//! Images known to one driver, and unpacking an image into its layers.
//!
//! An image record (`<driver dir>/images/<name>.json`) lists the chain IDs of its
//! layers. It is written *before* the layers are applied (marked incomplete, with the
//! writer's pid), so that an `image rm` running at the same time sees those layers as
//! in use; it is marked complete when the last layer is in. A record left incomplete by
//! a process that died is dropped at the next start.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::driver::{Driver, LayerTar};
use crate::error::{Cause, Context, Error, Result};
use crate::image::{open_layer, BlobSource, Image};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    pub name: String,
    /// Chain IDs bottom to top; the last is the image's top layer.
    pub layers: Vec<String>,
    pub config_digest: String,
    pub complete: bool,
    /// The pid of the process unpacking it, while incomplete.
    #[serde(default)]
    pub pid: u32,
    /// `image rm` has begun: the image is no longer listed, and its layers are being
    /// removed. A removal killed half-way is finished by the next `image rm`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub removing: bool,
}

impl ImageRecord {
    pub fn top(&self) -> Option<&str> {
        self.layers.last().map(String::as_str)
    }
}

pub struct ImageStore {
    dir: PathBuf,
}

/// Image names hold `/` and `:`; keep them readable but flat as file names.
fn file_name(name: &str) -> String {
    let mut s = String::new();
    for c in name.chars() {
        match c {
            '/' => s.push_str("%2F"),
            '%' => s.push_str("%25"),
            c => s.push(c),
        }
    }
    format!("{s}.json")
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

impl ImageStore {
    /// Opens the image records of a driver folder and drops those whose writer died.
    pub fn open(driver_dir: &Path) -> Result<ImageStore> {
        let dir = driver_dir.join("images");
        fs::create_dir_all(&dir).at_path(&dir)?;
        let store = ImageStore { dir };
        for rec in store.all()? {
            if !rec.complete && !pid_alive(rec.pid) {
                let _ = fs::remove_file(store.dir.join(file_name(&rec.name)));
            }
        }
        Ok(store)
    }

    fn all(&self) -> Result<Vec<ImageRecord>> {
        let mut out = Vec::new();
        for e in fs::read_dir(&self.dir).at_path(&self.dir)? {
            let p = e.at_path(&self.dir)?.path();
            // Skip another writer's temp file (`.tmp-…`), which may be half-written.
            let hidden = p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'));
            if !hidden && p.extension().is_some_and(|x| x == "json") {
                if let Ok(data) = fs::read(&p) {
                    let rec: ImageRecord = serde_json::from_slice(&data)
                        .map_err(|e| Error::new(Cause::Corrupt(format!("{}: {e}", p.display()))))?;
                    out.push(rec);
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Complete images, and incomplete ones whose writer is alive (their layers are in use).
    pub fn list(&self) -> Result<Vec<ImageRecord>> {
        Ok(self.all()?.into_iter().filter(|r| !r.removing && (r.complete || pid_alive(r.pid))).collect())
    }

    /// A complete image that is not being removed.
    pub fn get(&self, name: &str) -> Result<ImageRecord> {
        let rec = self.get_any(name)?;
        if rec.removing {
            return Err(Error::new(Cause::Other(format!("image {name}: no such image (being removed)"))));
        }
        Ok(rec)
    }

    fn get_any(&self, name: &str) -> Result<ImageRecord> {
        let p = self.dir.join(file_name(name));
        let data = fs::read(&p).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Error::new(Cause::Other(format!("image {name}: no such image"))),
            _ => Error::new(e).with_path(&p),
        })?;
        let rec: ImageRecord =
            serde_json::from_slice(&data).map_err(|e| Error::new(Cause::Corrupt(e.to_string())).with_path(&p))?;
        if !rec.complete {
            return Err(Error::new(Cause::Other(format!("image {name}: still being unpacked"))));
        }
        Ok(rec)
    }

    pub fn put(&self, rec: &ImageRecord) -> Result<()> {
        let p = self.dir.join(file_name(&rec.name));
        let tmp = self.dir.join(format!(".tmp-{}-{}", std::process::id(), file_name(&rec.name)));
        let write = || -> io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&serde_json::to_vec_pretty(rec).map_err(io::Error::other)?)?;
            f.sync_all()?;
            fs::rename(&tmp, &p)?;
            fs::File::open(&self.dir)?.sync_all()
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            Error::new(e).with_path(&p)
        })
    }

    fn delete(&self, name: &str) -> Result<()> {
        let p = self.dir.join(file_name(name));
        fs::remove_file(&p).at_path(&p)
    }

    /// Removes image `name` and every layer of it that no other image and no
    /// container uses. Returns the layers removed.
    pub fn remove(&self, driver: &dyn Driver, name: &str) -> Result<Vec<String>> {
        let mut rec = self.get_any(name)?;
        // A container on the image keeps it (as docker refuses with "image is being
        // used"): removing only the record would strand its layers.
        if let Some(top) = rec.top() {
            let users: Vec<String> = driver
                .list()?
                .into_iter()
                .filter(|l| l.writable && l.parent.as_deref() == Some(top))
                .map(|l| l.id)
                .collect();
            let shared = self.list()?.iter().any(|r| r.name != rec.name && r.top() == Some(top));
            if !users.is_empty() && !shared {
                return Err(Error::new(Cause::Other(format!(
                    "image {name} is used by container(s) {}; remove them first",
                    users.join(", ")
                ))));
            }
        }
        // Mark first, delete the record last: a removal killed in between is found
        // and finished by the next `image rm`, so no layer is stranded.
        if !rec.removing {
            rec.removing = true;
            self.put(&rec)?;
        }
        let in_use: std::collections::HashSet<String> =
            self.list()?.into_iter().flat_map(|r| r.layers.into_iter()).collect();
        let mut removed = Vec::new();
        for id in rec.layers.iter().rev() {
            if in_use.contains(id) {
                break;
            }
            match driver.remove(id) {
                Ok(()) => removed.push(id.clone()),
                // A container (or another layer) stands on it: it and all below stay.
                Err(e) if matches!(e.cause, Cause::HasChildren(_) | Cause::Mounted(_)) => break,
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        self.delete(name)?;
        Ok(removed)
    }
}

/// When a layer fails, a tampered blob is the likeliest cause and the clearest thing to
/// say, but a decompressor may stop on a bad checksum before the blob's digest is
/// checked at its end. So re-read the failed layer's blob and report a digest mismatch
/// if there is one.
fn root_cause(driver: &dyn Driver, source: &dyn BlobSource, image: &Image, e: Error) -> Error {
    let Some(i) = image.chain_ids.iter().position(|id| driver.get(id).is_err()) else { return e };
    let layer = &image.layers[i];
    let Some(digest) = &layer.digest else { return e };
    let Ok(blob) = source.open(&layer.locator) else { return e };
    let mut r = crate::image::VerifyingReader::new(blob, digest, layer.size, format!("blob {digest}"));
    match std::io::copy(&mut r, &mut std::io::sink()) {
        Err(v) => Error::layer(&image.chain_ids[i], Cause::Other(format!("layer {} of the image: {v}", i + 1))),
        Ok(_) => e,
    }
}

/// What happened to one layer during an unpack.
#[derive(Clone, Debug)]
pub struct LayerEvent {
    pub index: usize,
    pub count: usize,
    pub chain_id: String,
    /// `None` when the layer was already there.
    pub applied: Option<u64>,
    pub elapsed: Duration,
}

/// Unpacks `image` into `driver`, layer by layer, reusing layers already present.
/// Records the image under `name` in `images`. Returns the top layer's ID.
pub fn unpack(
    driver: &dyn Driver,
    images: &ImageStore,
    source: &dyn BlobSource,
    image: &Image,
    name: &str,
    on_layer: &(dyn Fn(&LayerEvent) + Sync),
) -> Result<Option<String>> {
    let mut rec = ImageRecord {
        name: name.to_string(),
        layers: image.chain_ids.clone(),
        config_digest: image.config_digest.clone(),
        complete: false,
        pid: std::process::id(),
        removing: false,
    };
    images.put(&rec)?;
    let result = (|| -> Result<()> {
        let count = image.chain_ids.len();
        let start = Instant::now();
        // Layers reported so far (applied here, or found present).
        let reported = AtomicUsize::new(0);
        loop {
            // A chain ID names a layer and everything below it, so the layers present
            // are a prefix of the chain and the missing ones the rest.
            let present = image.chain_ids.iter().take_while(|id| driver.get(id).is_ok()).count();
            for (i, chain_id) in image.chain_ids.iter().enumerate().take(present).skip(reported.load(Ordering::SeqCst))
            {
                on_layer(&LayerEvent {
                    index: i,
                    count,
                    chain_id: chain_id.clone(),
                    applied: None,
                    elapsed: Duration::ZERO,
                });
            }
            reported.fetch_max(present, Ordering::SeqCst);
            if present == count {
                return Ok(());
            }
            let mut chain = Vec::new();
            for i in present..count {
                chain.push(LayerTar {
                    id: image.chain_ids[i].clone(),
                    parent: i.checked_sub(1).map(|p| image.chain_ids[p].clone()),
                    tar: open_layer(source, image, i)?,
                });
            }
            let done = |i: usize, n: u64| {
                let index = present + i;
                reported.fetch_max(index + 1, Ordering::SeqCst);
                on_layer(&LayerEvent {
                    index,
                    count,
                    chain_id: image.chain_ids[index].clone(),
                    applied: Some(n),
                    elapsed: start.elapsed(),
                });
            };
            match driver.apply_chain(chain, &done) {
                Ok(_) => return Ok(()),
                // Another process committed one of these layers first (it exists now,
                // so each round gets further): go on from what is there.
                Err(e) if matches!(e.cause, Cause::Exists) => continue,
                Err(e) => return Err(root_cause(driver, source, image, e)),
            }
        }
    })();
    match result {
        Ok(()) => {
            rec.complete = true;
            rec.pid = 0;
            images.put(&rec)?;
            Ok(image.chain_ids.last().cloned())
        }
        Err(e) => {
            let _ = images.delete(name);
            Err(e)
        }
    }
}
