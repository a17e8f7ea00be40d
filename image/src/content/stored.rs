//! A stored image's manifest and config, and copying an image's blobs into the store.

use std::fs::File;
use std::io::{self, Read};

use serde_json::Value;

use crate::error::{Error, Result};

use super::{ContentStore, Settle};
use crate::chain::Image;
use crate::media::{
    oci_layer_type, MAX_CONFIG, MAX_MANIFEST, OCI_CONFIG, OCI_LAYER_GZIP, OCI_LAYER_ZSTD, OCI_MANIFEST,
};
use crate::source::BlobSource;

/// A stored image's manifest and config, read and verified.
#[derive(Clone, Debug)]
pub struct StoredImage {
    pub manifest_digest: String,
    pub manifest: Value,
    pub config_digest: String,
    pub config: Value,
}

impl StoredImage {
    /// The layer descriptors (`mediaType`, `digest`, `size`), bottom to top.
    pub fn layers(&self) -> Vec<Value> {
        self.manifest["layers"].as_array().cloned().unwrap_or_default()
    }

    /// The config's `rootfs.diff_ids`, bottom to top.
    pub fn diff_ids(&self) -> Vec<String> {
        self.config["rootfs"]["diff_ids"]
            .as_array()
            .map(|a| a.iter().filter_map(|d| d.as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    }

    /// Every blob the image consists of: its manifest, config and layers.
    pub fn blobs(&self) -> Vec<String> {
        let mut out = vec![self.manifest_digest.clone(), self.config_digest.clone()];
        out.extend(self.layers().iter().filter_map(|l| l["digest"].as_str().map(str::to_string)));
        out
    }
}

impl ContentStore {
    /// The manifest and config of image `name` whose manifest is `manifest` (`None`
    /// for an image an older strata stored).
    pub fn load(&self, name: &str, manifest: Option<&str>) -> Result<StoredImage> {
        let Some(manifest_digest) = manifest else { return Err(Error::NoContent { name: name.to_string() }) };
        let loaded = (|| {
            let bytes = self.read_small(manifest_digest, MAX_MANIFEST)?;
            let manifest: Value = Error::parse_json(format!("manifest {manifest_digest}"), &bytes)?;
            let config_digest = manifest["config"]["digest"].as_str().unwrap_or_default().to_string();
            let bytes = self.read_small(&config_digest, MAX_CONFIG)?;
            let config: Value = Error::parse_json(format!("config {config_digest}"), &bytes)?;
            Ok(StoredImage { manifest_digest: manifest_digest.to_string(), manifest, config_digest, config })
        })();
        loaded.map_err(|e: Error| e.in_image(name))
    }

    /// Whether every blob of the image whose manifest is `manifest` is here (checked
    /// under the store lock before a record naming it is written).
    pub fn complete(&self, name: &str, manifest: &str) -> bool {
        self.load(name, Some(manifest)).is_ok_and(|img| img.blobs().iter().all(|b| self.has(b)))
    }

    /// Keeps the config of `image`, and its manifest when the source has one,
    /// unsettled, as [`ContentStore::import`] would: an unpack does it before applying
    /// the layers, so that their sync covers these blobs too and
    /// [`ContentStore::settle`] has nothing left to sync.
    pub fn import_config(&self, source: &dyn BlobSource, image: &Image) -> Result<()> {
        self.copy_in(source, image, &image.config_locator, Some(&image.config_digest), None)?;
        if let Some(manifest) = &image.manifest {
            self.put_bytes(manifest, Settle::Later)?;
        }
        Ok(())
    }

    /// Copies blob `locator` of `image` from `source` unsettled, verified against
    /// `digest` and `size` when given, unless it is kept already; its digest and size.
    fn copy_in(
        &self,
        source: &dyn BlobSource,
        image: &Image,
        locator: &str,
        digest: Option<&str>,
        size: Option<u64>,
    ) -> Result<(String, u64)> {
        let what = format!("image {}: keeping {locator}", image.name);
        if let Some((d, len)) = digest.and_then(|d| Some((d, self.kept_size(d)?))) {
            return Ok((d.to_string(), len));
        }
        let blob = source.open(locator).map_err(|e| Error::read(&what, e))?;
        match digest {
            // Hashed once, as it is written.
            Some(d) => {
                let mut kept = self.keeping(blob, d, size, format!("blob {d}"))?;
                io::copy(&mut kept, &mut io::sink()).map_err(|e| Error::read(&what, e))?;
                Ok((d.to_string(), self.kept_size(d).unwrap_or_default()))
            }
            None => self.put_stream(&mut { blob }, None).map_err(|e| e.context(&what)),
        }
    }

    /// Copies the blobs of `image` from `source` into the store, verified, and returns
    /// the digest of its manifest: the source's own manifest when it has one (a layout,
    /// an oci-archive, a registry), else (a docker-archive) one written for it. The
    /// blobs it writes are unsettled: [`ContentStore::settle`] them before a record
    /// names them.
    pub fn import(&self, source: &dyn BlobSource, image: &Image) -> Result<String> {
        let copy =
            |locator: &str, digest: Option<&str>, size: Option<u64>| self.copy_in(source, image, locator, digest, size);
        let (config_digest, config_size) = copy(&image.config_locator, Some(&image.config_digest), None)?;
        let mut layers = Vec::new();
        for l in &image.layers {
            let (digest, size) = copy(&l.locator, l.digest.as_deref(), l.size)?;
            layers.push((digest, size, l.media_type.clone()));
        }
        if let Some(manifest) = &image.manifest {
            return self.put_bytes(manifest, Settle::Later);
        }
        let mut descriptors = Vec::new();
        for (digest, size, media_type) in layers {
            let mut head = [0u8; 4];
            let n = self.read_head(&digest, &mut head);
            let media = match strata_archive::compress::Compression::detect(&head[..n]) {
                strata_archive::compress::Compression::Gzip => OCI_LAYER_GZIP,
                strata_archive::compress::Compression::Zstd => OCI_LAYER_ZSTD,
                strata_archive::compress::Compression::None => oci_layer_type(&media_type),
            };
            descriptors.push(serde_json::json!({"mediaType": media, "digest": digest, "size": size}));
        }
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config_size},
            "layers": descriptors,
        });
        self.put_bytes(&serde_json::to_vec(&manifest).expect("json"), Settle::Later)
    }

    /// The first bytes of a blob kept or unsettled (to tell its compression).
    fn read_head(&self, digest: &str, head: &mut [u8]) -> usize {
        let path = match self.unsettled.find(digest).map(|(tmp, _)| tmp) {
            Some(p) => p,
            None => match self.path(digest) {
                Ok(p) => p,
                Err(_) => return 0,
            },
        };
        File::open(path).and_then(|mut f| f.read(head)).unwrap_or(0)
    }
}
