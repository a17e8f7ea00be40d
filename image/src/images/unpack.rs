//! Unpacking an image into its layers (the steps in [`super`]'s doc): the pending
//! record, the layers applied or reused, the record written under the store lock.

use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use super::*;
use crate::names::validate_name;
use crate::stream::open_layer_lazily;
use driver_core::driver::LayerTar;

/// When a layer fails, a tampered blob is the likeliest cause and the clearest thing to
/// say, but a decompressor may stop on a bad checksum before the blob's digest is
/// checked at its end. So re-read the failed layer's blob and report a digest mismatch
/// if there is one.
fn root_cause(driver: &dyn Driver, source: &dyn BlobSource, image: &Image, e: driver_core::Error) -> Error {
    let Some(i) = image.chain_ids.iter().position(|id| driver.get(id).is_err()) else { return e.into() };
    let layer = &image.layers[i];
    let Some(digest) = &layer.digest else { return e.into() };
    let Ok(blob) = source.open(&layer.locator) else { return e.into() };
    let mut r = crate::verify::VerifyingReader::new(blob, digest, layer.size, format!("blob {digest}"));
    match std::io::copy(&mut r, &mut std::io::sink()) {
        // The check that failed, typed, under which layer it was.
        Err(v) => Error::read("reading", v)
            .context(format!("layer {} of the image", i + 1))
            .context(format!("layer {}", image.chain_ids[i])),
        Ok(_) => e.into(),
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

/// Rounds an unpack may take when other processes keep changing the layers it needs.
const MAX_ROUNDS: usize = 16;

/// Unpacks `image` into `driver`, layer by layer, reusing layers already present (when
/// they were made from this image's content). Records the image under `name` in
/// `images` once it is complete. Returns the top layer's ID.
pub fn unpack(
    driver: &dyn Driver,
    images: &ImageStore,
    source: &dyn BlobSource,
    image: &Image,
    name: &str,
    on_layer: &(dyn Fn(&LayerEvent) + Sync),
) -> Result<Option<String>> {
    validate_name(name)?;
    let preexisting = present_prefix(driver, image)?;
    // The layer blobs this unpack will write to the content store as it reads them
    // (what a failed unpack must not leave there).
    let kept: Vec<String> =
        image.layers.iter().filter_map(|l| l.digest.clone()).filter(|d| !images.content.has(d)).collect();
    let pending = images.begin(name, &image.chain_ids, preexisting)?;
    let count = image.chain_ids.len();
    let start = Instant::now();
    // Layers reported so far (applied here, or found present).
    let reported = AtomicUsize::new(0);
    let round = || -> Result<Option<Option<ImageRecord>>> {
        // A chain ID names a layer and everything below it, so the layers present
        // are a prefix of the chain and the missing ones the rest.
        let present = present_prefix(driver, image)?;
        for (i, chain_id) in image.chain_ids.iter().enumerate().take(present).skip(reported.load(Ordering::SeqCst)) {
            on_layer(&LayerEvent {
                index: i,
                count,
                chain_id: chain_id.clone(),
                applied: None,
                elapsed: Duration::ZERO,
            });
        }
        reported.fetch_max(present, Ordering::SeqCst);
        // The blobs written as the layers were read, and those import writes, are
        // settled at once (one sync) before the record names them.
        let finish = || {
            let manifest = images.content.import(source, image)?;
            images.content.settle()?;
            images.finish(driver, &pending, image, &manifest)
        };
        if present == count {
            return finish();
        }
        // The config and manifest are kept first, so that the layers' sync (after their
        // blobs are kept, as they are read) covers every blob and settling syncs nothing.
        images.content.import_config(source, image)?;
        let mut chain = Vec::new();
        for i in present..count {
            chain.push(LayerTar {
                id: image.chain_ids[i].clone(),
                parent: i.checked_sub(1).map(|p| image.chain_ids[p].clone()),
                tar: open_layer_lazily(source, image, i, Some(&images.content))?,
                uncompressed: true,
                diff_id: Some(image.layers[i].diff_id.clone()),
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
            Ok(_) => finish(),
            // Another process committed one of these layers first (it exists now, so
            // each round gets further), or removed a parent this one counted on
            // (nothing uses it, so it may): go on from what is there.
            Err(e) if matches!(e.cause, Cause::Exists | Cause::ParentNotFound(_)) => Ok(None),
            Err(e) => Err(root_cause(driver, source, image, e)),
        }
    };
    let mut result = Err(Error::KeptChanging { name: name.to_string(), rounds: MAX_ROUNDS });
    for _ in 0..MAX_ROUNDS {
        match round() {
            Ok(None) => continue,
            Ok(Some(old)) => {
                result = Ok(old);
                break;
            }
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    match result {
        Ok(old) => {
            // The image this one replaced: its layers that nothing uses now go, as
            // with `image rm` (a failure here leaves them, and the new image, as is).
            if let Some(old) = old {
                let _ = remove_unused(driver, &old.layers);
            }
            Ok(image.chain_ids.last().cloned())
        }
        Err(e) => {
            images.content.discard_unsettled();
            let _ = images.abandon(driver, pending);
            let _ = images.drop_kept(&kept);
            Err(e)
        }
    }
}
