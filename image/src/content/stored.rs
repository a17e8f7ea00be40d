//! A stored image's manifest and config, and copying an image's blobs into the store.

use std::fs::File;
use std::io::{self, Read};

use oci_spec::image::{Descriptor, ImageConfiguration, ImageManifest, ImageManifestBuilder, MediaType};

use crate::digest::Digest;
use crate::error::{Error, Result};

use super::{ContentStore, Settle};
use crate::chain::Image;
use crate::media::{
    oci_layer_type, MAX_CONFIG, MAX_MANIFEST, OCI_CONFIG, OCI_LAYER_GZIP, OCI_LAYER_ZSTD, OCI_MANIFEST,
};
use crate::source::BlobSource;

/// A stored image's manifest and config, read and verified.
///
/// oci-spec's types drop the fields they do not know (Docker's `container_config` and
/// `docker_version`, a config's `Healthcheck`, any newer field), so the documents are
/// kept as bytes too: what must carry every field on (`container commit`'s new config,
/// `image inspect`'s output) starts from the bytes, not from the types.
#[derive(Clone, Debug)]
pub struct StoredImage {
    pub manifest_digest: String,
    pub manifest: ImageManifest,
    /// The manifest as kept, byte for byte.
    pub manifest_bytes: Vec<u8>,
    pub config_digest: String,
    pub config: ImageConfiguration,
    /// The config as kept, byte for byte.
    pub config_bytes: Vec<u8>,
}

impl StoredImage {
    /// The layer descriptors, bottom to top.
    pub fn layers(&self) -> &[Descriptor] {
        self.manifest.layers()
    }

    /// The config's `rootfs.diff_ids`, bottom to top.
    pub fn diff_ids(&self) -> &[String] {
        self.config.rootfs().diff_ids()
    }

    /// Every blob the image consists of: its manifest, config and layers.
    pub fn blobs(&self) -> Vec<String> {
        let mut out = vec![self.manifest_digest.clone(), self.config_digest.clone()];
        out.extend(self.layers().iter().map(|l| l.digest().to_string()));
        out
    }
}

/// A document strata writes (a manifest, a config, an index), as bytes: its keys sorted
/// (through a `Value`, whose map is ordered), as strata has always written them, so that
/// the same image keeps the same digests from one version of strata to the next.
pub(crate) fn document_bytes<T: serde::Serialize>(doc: &T) -> Vec<u8> {
    let sorted = serde_json::to_value(doc).expect("a document of strings and numbers");
    serde_json::to_vec(&sorted).expect("json")
}

/// The descriptor of a blob strata keeps.
pub(crate) fn descriptor(media_type: &str, digest: &Digest, size: u64) -> Descriptor {
    Descriptor::new(MediaType::from(media_type), size, digest)
}

/// An OCI manifest of `config` and `layers`, as bytes ([`document_bytes`]).
pub(crate) fn manifest_bytes(config: Descriptor, layers: Vec<Descriptor>) -> Vec<u8> {
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::from(OCI_MANIFEST))
        .config(config)
        .layers(layers)
        .build()
        .expect("every required field is set");
    document_bytes(&manifest)
}

impl ContentStore {
    /// The manifest and config of image `name` whose manifest is `manifest` (`None`
    /// for an image an older strata stored).
    pub fn load(&self, name: &str, manifest: Option<&str>) -> Result<StoredImage> {
        let Some(manifest_digest) = manifest else { return Err(Error::NoContent { name: name.to_string() }) };
        let loaded = (|| {
            let bytes = self.read_small(manifest_digest, MAX_MANIFEST)?;
            let manifest: ImageManifest = Error::parse_json(format!("manifest {manifest_digest}"), &bytes)?;
            let config_digest = Digest::try_from(manifest.config().digest())?.to_string();
            let config_bytes = self.read_small(&config_digest, MAX_CONFIG)?;
            let config = Error::parse_json(format!("config {config_digest}"), &config_bytes)?;
            Ok(StoredImage {
                manifest_digest: manifest_digest.to_string(),
                manifest,
                manifest_bytes: bytes,
                config_digest,
                config,
                config_bytes,
            })
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
            descriptors.push(descriptor(media, &Digest::parse(&digest)?, size));
        }
        let config = descriptor(OCI_CONFIG, &Digest::parse(&config_digest)?, config_size);
        self.put_bytes(&manifest_bytes(config, descriptors), Settle::Later)
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

#[cfg(test)]
mod tests {
    use super::super::{ContentStore, Settle};
    use crate::error::Error;

    /// A kept manifest and config read back typed: the layers, diff_ids and blobs they
    /// name; and a config that does not parse is named with its field and line, under
    /// the image.
    #[test]
    fn a_stored_image_reads_back_typed_and_a_bad_field_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let store = ContentStore::open(tmp.path()).unwrap();
        let layer = store.put_bytes(b"layer", Settle::Now).unwrap();
        let diff_id = format!("sha256:{}", "d".repeat(64));
        let config = |diff_ids: &str| {
            format!("{{\"architecture\": \"amd64\", \"os\": \"linux\",\n\"rootfs\": {{\"type\": \"layers\", \"diff_ids\": {diff_ids}}}}}")
        };
        let manifest = |config: &str, size: usize| {
            let c = super::descriptor(crate::media::OCI_CONFIG, &config.parse().unwrap(), size as u64);
            let l = super::descriptor(crate::media::OCI_LAYER_TAR, &layer.parse().unwrap(), 5);
            super::manifest_bytes(c, vec![l])
        };
        let good = config(&format!("[\"{diff_id}\"]"));
        let good_digest = store.put_bytes(good.as_bytes(), Settle::Now).unwrap();
        let m = store.put_bytes(&manifest(&good_digest, good.len()), Settle::Now).unwrap();
        let img = store.load("app", Some(&m)).unwrap();
        assert_eq!(img.diff_ids(), [diff_id]);
        assert_eq!(img.blobs(), [m.clone(), good_digest.clone(), layer.clone()]);
        assert_eq!(img.config_bytes, good.as_bytes());

        let bad = config("[\"x\", 7]");
        let bad_digest = store.put_bytes(bad.as_bytes(), Settle::Now).unwrap();
        let m = store.put_bytes(&manifest(&bad_digest, bad.len()), Settle::Now).unwrap();
        let e = store.load("app", Some(&m)).unwrap_err();
        assert!(e.to_string().starts_with("image app: "), "{e}");
        match e.root() {
            Error::Parse { file, field, source } => {
                assert_eq!(file, &format!("config {bad_digest}"));
                assert_eq!((field.as_str(), source.line()), ("rootfs.diff_ids[1]", 2));
            }
            other => panic!("{other:?}"),
        }
    }
}
