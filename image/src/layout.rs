//! Writing an OCI image layout of given layer blobs (test images, the generated
//! workload handed to containerd and podman).

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use driver_core::digest::{sha256, Hashing};

use crate::media::REF_NAME;
use crate::platform::host_arch;
use crate::source::blob_path;

/// Writes an OCI image layout holding one image of the given layer blobs (each plain,
/// gzip or zstd; the media type follows the magic bytes), tagged `tag`. Used to make
/// test images and to hand the generated workload to containerd and podman.
pub fn write_layout<B: LayoutBlob>(dir: &Path, tag: &str, layer_blobs: &[B]) -> Result<()> {
    use std::io::Write as _;
    let io_err = |e: io::Error| Error::io(dir, e);
    std::fs::create_dir_all(dir.join("blobs/sha256")).map_err(io_err)?;
    let put = |data: &[u8]| -> Result<String> {
        let digest = sha256(data);
        let path = dir.join(blob_path(&digest).map_err(io_err)?);
        if !path.exists() {
            std::fs::File::create(&path).and_then(|mut f| f.write_all(data)).map_err(io_err)?;
        }
        Ok(digest)
    };
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for blob in layer_blobs {
        // Streamed in, then read back for the diff_id: a layer is never whole in memory.
        let incoming = tempfile::NamedTempFile::new_in(dir.join("blobs/sha256")).map_err(io_err)?;
        let mut kept = Hashing::new(incoming);
        let size = blob.reader().and_then(|mut r| io::copy(&mut r, &mut kept)).map_err(io_err)?;
        let (incoming, digest, _) = kept.finish();
        let path = dir.join(blob_path(&digest).map_err(io_err)?);
        incoming.persist(&path).map_err(|e| io_err(e.error))?;
        let blob_file = io::BufReader::new(File::open(&path).map_err(io_err)?);
        let (kind, mut plain) = strata_archive::compress::decompress(blob_file).map_err(io_err)?;
        let mut h = Hashing::new(io::sink());
        io::copy(&mut plain, &mut h).map_err(io_err)?;
        diff_ids.push(h.digest());
        let media = match kind {
            strata_archive::compress::Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            strata_archive::compress::Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
            strata_archive::compress::Compression::None => "application/vnd.oci.image.layer.v1.tar",
        };
        layers.push(serde_json::json!({"mediaType": media, "digest": digest, "size": size}));
    }
    let config = serde_json::json!({
        "architecture": host_arch(), "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": diff_ids.iter().map(|_| serde_json::json!({"created_by": "strata"})).collect::<Vec<_>>(),
    });
    let config = serde_json::to_vec(&config).expect("json");
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": put(&config)?, "size": config.len()},
        "layers": layers,
    }))
    .expect("json");
    let mdigest = put(&manifest)?;
    let index_path = dir.join("index.json");
    let mut index: serde_json::Value = match std::fs::read(&index_path) {
        Ok(data) => Error::parse_json(index_path.display().to_string(), &data)?,
        Err(_) => serde_json::json!({"schemaVersion": 2, "manifests": []}),
    };
    let manifests = index["manifests"].as_array_mut().expect("manifests array");
    manifests.retain(|m| m["annotations"][REF_NAME] != tag);
    manifests.push(serde_json::json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": mdigest, "size": manifest.len(),
        "annotations": {REF_NAME: tag},
    }));
    std::fs::write(&index_path, serde_json::to_vec(&index).expect("json")).map_err(io_err)?;
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).map_err(io_err)?;
    Ok(())
}

/// A layer blob [`write_layout`] reads: bytes in memory (generated layers), or a file
/// on disk (a real image's layer, which the bench streams rather than holds).
pub trait LayoutBlob {
    fn reader(&self) -> io::Result<Box<dyn Read + '_>>;
}

impl LayoutBlob for Vec<u8> {
    fn reader(&self) -> io::Result<Box<dyn Read + '_>> {
        Ok(Box::new(&self[..]))
    }
}

impl LayoutBlob for PathBuf {
    fn reader(&self) -> io::Result<Box<dyn Read + '_>> {
        Ok(Box::new(io::BufReader::new(File::open(self)?)))
    }
}
