//! `container commit`: a container's changes become a new image layer, as `docker
//! commit` does.
//!
//! 1. The container's diff, as its driver finds it (overlay and btrfs natively, in
//!    O(changes)), is compressed into a blob of the content store; its uncompressed
//!    digest is the new layer's diff_id, hashed in the same pass.
//! 2. The new image's config is the base image's with the diff_id appended to
//!    `rootfs.diff_ids`, a history entry (created_by, comment) and a new `created`;
//!    its manifest lists the base's layer blobs and the new one.
//! 3. The committed layer is applied from that blob over the container's parent, under
//!    its chain ID, so the new image's layers are the base's, shared, plus one. The
//!    container stays as it is, on its own layer.
//! 4. The record is written as an unpack writes it (a pending record protects the
//!    layers until then, see [`crate::images`]).

use serde_json::{json, Value};

use crate::chain::{chain_ids, Image, LayerBlob};
use crate::content::Settle;
use crate::error::{Error, Result};
use crate::images::{present_prefix, remove_unused, ImageRecord, ImageStore};
use crate::media::{oci_layer_type, OCI_CONFIG, OCI_LAYER_GZIP, OCI_LAYER_ZSTD, OCI_MANIFEST};
use crate::names::validate_name;
use driver_core::digest::Hashing;
use driver_core::driver::Driver;
use driver_core::error::{Cause, Error as LayerError};

/// How the new layer's blob is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerCompression {
    Gzip,
    Zstd,
}

pub struct CommitOptions {
    pub message: Option<String>,
    pub compression: LayerCompression,
}

/// What a commit made.
#[derive(Clone, Debug)]
pub struct Committed {
    /// The image the container was made from.
    pub base: String,
    /// The new top layer's chain ID.
    pub chain_id: String,
    pub diff_id: String,
    pub blob_digest: String,
    pub blob_size: u64,
    /// Bytes of the uncompressed layer tar.
    pub tar_size: u64,
    pub manifest_digest: String,
}

/// The image a container layer was made over: the stored image whose top layer is the
/// container's parent (the first by name when several share it).
pub fn base_image(driver: &dyn Driver, images: &ImageStore, container: &str) -> Result<(ImageRecord, String)> {
    let info = driver.get(container)?;
    if !info.writable {
        return Err(LayerError::layer(
            container,
            Cause::Refused("is a committed layer, not a container; commit takes a container".into()),
        )
        .into());
    }
    let parent = info.parent.ok_or_else(|| {
        LayerError::layer(
            container,
            Cause::Refused("is over no image (it has no parent layer); nothing to commit onto".into()),
        )
    })?;
    let over: Vec<ImageRecord> = images.list()?.into_iter().filter(|r| r.top() == Some(parent.as_str())).collect();
    match over.iter().find(|r| r.manifest.is_some()).or(over.first()) {
        Some(r) => Ok((r.clone(), parent)),
        None => Err(LayerError::layer(
            container,
            Cause::Refused(format!("its parent layer {parent} is the top of no stored image; commit needs one")),
        )
        .into()),
    }
}

/// RFC 3339 (UTC) of a Unix time, as image configs write `created`.
pub fn rfc3339(secs: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs)).to_string()
}

/// Commits container `container` as image `name`. See the module documentation.
pub fn commit(
    driver: &dyn Driver,
    images: &ImageStore,
    container: &str,
    name: &str,
    opts: &CommitOptions,
) -> Result<Committed> {
    validate_name(name)?;
    let (base_rec, parent) = base_image(driver, images, container)?;
    let base = images.content.load(&base_rec.name, base_rec.manifest.as_deref())?;
    let content = &images.content;

    // 1. The diff, compressed into a blob, its diff_id hashed on the way.
    let blob = content.writer()?;
    let (blob, diff_id, tar_size) = match opts.compression {
        LayerCompression::Gzip => {
            let mut w = Hashing::new(flate2::write::GzEncoder::new(blob, flate2::Compression::default()));
            driver.diff(container, &mut w)?;
            let (enc, diff_id, size) = w.finish();
            (enc.finish().map_err(|e| Error::from(LayerError::layer(container, e)))?, diff_id, size)
        }
        LayerCompression::Zstd => {
            let enc =
                zstd::stream::write::Encoder::new(blob, 3).map_err(|e| Error::from(LayerError::layer(container, e)))?;
            let mut w = Hashing::new(enc);
            driver.diff(container, &mut w)?;
            let (enc, diff_id, size) = w.finish();
            (enc.finish().map_err(|e| Error::from(LayerError::layer(container, e)))?, diff_id, size)
        }
    };
    let (blob_digest, blob_size) = blob.finish(Settle::Now)?;

    // 2. Config and manifest.
    let now = driver_core::store::now_secs();
    let mut config = base.config.clone();
    let mut diff_ids = base.diff_ids();
    diff_ids.push(diff_id.clone());
    config["rootfs"] = json!({"type": "layers", "diff_ids": diff_ids});
    config["created"] = json!(rfc3339(now));
    let mut entry = json!({"created": rfc3339(now), "created_by": format!("strata container commit {container}")});
    if let Some(m) = &opts.message {
        entry["comment"] = json!(m);
    }
    match config["history"].as_array_mut() {
        Some(h) => h.push(entry),
        None => config["history"] = json!([entry]),
    }
    let config_bytes = serde_json::to_vec(&config).expect("json");
    let config_digest = content.put_bytes(&config_bytes, Settle::Now)?;
    let media = match opts.compression {
        LayerCompression::Gzip => OCI_LAYER_GZIP,
        LayerCompression::Zstd => OCI_LAYER_ZSTD,
    };
    let mut layers: Vec<Value> = base
        .layers()
        .into_iter()
        .map(|mut l| {
            let t = oci_layer_type(l["mediaType"].as_str().unwrap_or_default()).to_string();
            l["mediaType"] = json!(t);
            l
        })
        .collect();
    layers.push(json!({"mediaType": media, "digest": blob_digest, "size": blob_size}));
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config_bytes.len()},
        "layers": layers,
    });
    let manifest_bytes = serde_json::to_vec(&manifest).expect("json");
    let manifest_digest = content.put_bytes(&manifest_bytes, Settle::Now)?;

    // 3. The committed layer, under its chain ID, over the container's parent.
    let ids = chain_ids(&diff_ids);
    let image = Image {
        name: name.to_string(),
        config_digest: config_digest.clone(),
        config_locator: config_digest,
        manifest: Some(manifest_bytes),
        layers: layers
            .iter()
            .zip(&diff_ids)
            .map(|(l, d)| LayerBlob {
                locator: l["digest"].as_str().unwrap_or_default().to_string(),
                digest: l["digest"].as_str().map(str::to_string),
                media_type: l["mediaType"].as_str().unwrap_or_default().to_string(),
                size: l["size"].as_u64(),
                diff_id: d.clone(),
            })
            .collect(),
        chain_ids: ids.clone(),
    };
    let chain_id = ids.last().expect("a layer").clone();
    if ids.get(ids.len() - 2) != Some(&parent) {
        return Err(LayerError::layer(
            container,
            Cause::Corrupt(format!("image {}'s config does not lead to its top layer {parent}", base_rec.name)),
        )
        .into());
    }
    let preexisting = present_prefix(driver, &image)?;
    let pending = images.begin(name, &ids, preexisting)?;
    let made = (|| {
        if preexisting < ids.len() {
            let mut blob = content.read_blob(&blob_digest, Some(blob_size))?;
            match driver.apply_diff(&chain_id, Some(&parent), &mut blob) {
                Err(e) if matches!(e.cause, Cause::Exists) => {}
                other => {
                    other?;
                }
            }
        }
        images.finish(driver, &pending, &image, &manifest_digest)
    })();
    let old = match made {
        Ok(Some(old)) => old,
        Ok(None) => {
            let _ = images.abandon(driver, pending);
            return Err(Error::CommitRaced { name: name.to_string() });
        }
        Err(e) => {
            let _ = images.abandon(driver, pending);
            return Err(e);
        }
    };
    if let Some(old) = old {
        let _ = remove_unused(driver, &old.layers);
    }
    Ok(Committed { base: base_rec.name, chain_id, diff_id, blob_digest, blob_size, tar_size, manifest_digest })
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_of_known_times() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(super::rfc3339(1_790_000_000), "2026-09-21T14:13:20Z");
    }
}
