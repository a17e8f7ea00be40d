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

use oci_spec::image::{Descriptor, History, HistoryBuilder, MediaType, RootFs};
use serde::{Deserialize, Serialize};

use crate::chain::{chain_ids, Image, LayerBlob};
use crate::content::{descriptor, document_bytes, manifest_bytes, Settle};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::images::{present_prefix, remove_unused, ImageRecord, ImageStore};
use crate::media::{oci_layer_type, OCI_CONFIG, OCI_LAYER_GZIP, OCI_LAYER_ZSTD};
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
    let over: Vec<ImageRecord> =
        images.list_readable()?.into_iter().filter(|r| r.top() == Some(parent.as_str())).collect();
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

/// An image config as a commit rewrites it: the fields it sets, typed, and every other
/// field as the base image's config has it. oci-spec's `ImageConfiguration` would drop
/// what it does not know (Docker's `container_config`, `docker_version`, a `Healthcheck`
/// in `config`), and a committed image must run as its base did.
#[derive(Deserialize, Serialize)]
struct CommittedConfig {
    rootfs: RootFs,
    created: Option<String>,
    /// Kept entry by entry as written (only appended to).
    history: Option<Vec<serde_json::Value>>,
    #[serde(flatten)]
    rest: serde_json::Map<String, serde_json::Value>,
}

/// The bytes of the config `base` (kept as `base_digest`) with `diff_ids`, created `now`,
/// and `entry` added to its history.
fn committed_config(
    base_digest: &str,
    base: &[u8],
    diff_ids: &[String],
    now: String,
    entry: History,
) -> Result<Vec<u8>> {
    let mut config: CommittedConfig = Error::parse_json(format!("config {base_digest}"), base)?;
    config.rootfs = RootFs::default();
    config.rootfs.set_diff_ids(diff_ids.to_vec());
    config.created = Some(now);
    let entry = serde_json::to_value(entry).expect("a history entry is strings");
    config.history.get_or_insert_with(Vec::new).push(entry);
    Ok(document_bytes(&config))
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
    let now = rfc3339(driver_core::store::now_secs());
    let mut diff_ids = base.diff_ids().to_vec();
    diff_ids.push(diff_id.clone());
    let mut entry =
        HistoryBuilder::default().created(now.clone()).created_by(format!("strata container commit {container}"));
    if let Some(m) = &opts.message {
        entry = entry.comment(m.clone());
    }
    let entry = entry.build().expect("a history entry has no required field");
    let config_bytes = committed_config(&base.config_digest, &base.config_bytes, &diff_ids, now, entry)?;
    let config_digest = content.put_bytes(&config_bytes, Settle::Now)?;
    let media = match opts.compression {
        LayerCompression::Gzip => OCI_LAYER_GZIP,
        LayerCompression::Zstd => OCI_LAYER_ZSTD,
    };
    let mut layers: Vec<Descriptor> = base
        .layers()
        .iter()
        .map(|l| {
            let mut l = l.clone();
            let oci = MediaType::from(oci_layer_type(l.media_type().as_ref()));
            l.set_media_type(oci);
            l
        })
        .collect();
    layers.push(descriptor(media, &Digest::parse(&blob_digest)?, blob_size));
    let config = descriptor(OCI_CONFIG, &Digest::parse(&config_digest)?, config_bytes.len() as u64);
    let manifest_bytes = manifest_bytes(config, layers.clone());
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
                locator: l.digest().to_string(),
                digest: Some(l.digest().to_string()),
                media_type: l.media_type().to_string(),
                size: Some(l.size()),
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
    use oci_spec::image::HistoryBuilder;
    use serde_json::{json, Value};

    fn entry() -> oci_spec::image::History {
        HistoryBuilder::default().created("now").created_by("strata container commit c1").build().unwrap()
    }

    /// A base config with fields oci-spec's types do not know (Docker's, and one in a
    /// history entry): the committed config keeps every one, sets rootfs, created and
    /// the new history entry, and is written with its keys sorted, byte for byte what a
    /// rewrite of the whole document as a JSON value gives.
    #[test]
    fn a_committed_config_keeps_the_fields_oci_spec_does_not_know() {
        let base = json!({
            "architecture": "amd64", "os": "linux", "created": "then",
            "config": {"Env": ["A=1"], "Healthcheck": {"Test": ["CMD", "true"]}, "Shell": ["/bin/bash", "-c"]},
            "container_config": {"Cmd": ["/bin/sh", "-c", "#(nop) CMD"]}, "docker_version": "24.0.5",
            "rootfs": {"type": "layers", "diff_ids": ["sha256:a"]},
            "history": [{"created_by": "base", "x-unknown": 1}],
        });
        let diff_ids = ["sha256:a".to_string(), "sha256:b".to_string()];
        let bytes = serde_json::to_vec(&base).unwrap();
        let got = super::committed_config("sha256:c", &bytes, &diff_ids, "now".into(), entry()).unwrap();
        let mut want = base.clone();
        want["rootfs"]["diff_ids"] = json!(diff_ids);
        want["created"] = json!("now");
        want["history"]
            .as_array_mut()
            .unwrap()
            .push(json!({"created": "now", "created_by": "strata container commit c1"}));
        assert_eq!(String::from_utf8(got).unwrap(), serde_json::to_string(&want).unwrap());
        // A base without a history gets one.
        let mut bare = base.clone();
        bare.as_object_mut().unwrap().remove("history");
        let got =
            super::committed_config("sha256:c", &serde_json::to_vec(&bare).unwrap(), &diff_ids, "now".into(), entry());
        let got: Value = serde_json::from_slice(&got.unwrap()).unwrap();
        assert_eq!(got["history"], json!([{"created": "now", "created_by": "strata container commit c1"}]));
    }

    /// A base config that does not parse: the error names the config, the field and
    /// the line.
    #[test]
    fn a_base_config_that_does_not_parse_is_named_with_its_field() {
        let bad = b"{\n \"rootfs\": {\"type\": \"layers\", \"diff_ids\": [7]}}";
        let e = super::committed_config("sha256:c", bad, &[], "now".into(), entry()).unwrap_err();
        match &e {
            crate::Error::Parse { file, field, source } => {
                assert_eq!((file.as_str(), field.as_str(), source.line()), ("config sha256:c", "rootfs.diff_ids[0]", 2))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rfc3339_of_known_times() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(super::rfc3339(1_790_000_000), "2026-09-21T14:13:20Z");
    }
}
