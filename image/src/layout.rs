//! Writing an OCI image layout of given layer blobs (test images, the generated
//! workload handed to containerd and podman).

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use driver_core::digest::{sha256, Hashing};

use oci_spec::image::{
    Arch, ConfigBuilder, Descriptor, History, HistoryBuilder, ImageConfigurationBuilder, ImageIndex, ImageIndexBuilder,
    Os, RootFsBuilder,
};

use crate::content::{descriptor, document_bytes, manifest_bytes};
use crate::digest::Digest;
use crate::media::{OCI_CONFIG, OCI_LAYER_GZIP, OCI_LAYER_TAR, OCI_LAYER_ZSTD, OCI_MANIFEST, REF_NAME};
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
            strata_archive::compress::Compression::Gzip => OCI_LAYER_GZIP,
            strata_archive::compress::Compression::Zstd => OCI_LAYER_ZSTD,
            strata_archive::compress::Compression::None => OCI_LAYER_TAR,
        };
        layers.push(descriptor(media, &Digest::parse(&digest)?, size));
    }
    let history: Vec<History> = diff_ids
        .iter()
        .map(|_| HistoryBuilder::default().created_by("strata").build().expect("no required field"))
        .collect();
    let config = ImageConfigurationBuilder::default()
        .architecture(Arch::from(host_arch()))
        .os(Os::Linux)
        .config(ConfigBuilder::default().cmd(vec!["/bin/sh".to_string()]).build().expect("no required field"))
        .rootfs(RootFsBuilder::default().typ("layers").diff_ids(diff_ids).build().expect("both fields set"))
        .history(history)
        .build()
        .expect("every required field is set");
    let config = document_bytes(&config);
    let config = descriptor(OCI_CONFIG, &Digest::parse(&put(&config)?)?, config.len() as u64);
    let manifest = manifest_bytes(config, layers);
    let mdigest = put(&manifest)?;
    let index_path = dir.join("index.json");
    let mut index: ImageIndex = match std::fs::read(&index_path) {
        Ok(data) => Error::parse_json(index_path.display().to_string(), &data)?,
        Err(_) => ImageIndexBuilder::default()
            .schema_version(2u32)
            .manifests(Vec::new())
            .build()
            .expect("every required field is set"),
    };
    let mut entry = descriptor(OCI_MANIFEST, &Digest::parse(&mdigest)?, manifest.len() as u64);
    entry.set_annotations(Some([(REF_NAME.to_string(), tag.to_string())].into()));
    let mut manifests: Vec<Descriptor> = index
        .manifests()
        .iter()
        .filter(|m| m.annotations().as_ref().and_then(|a| a.get(REF_NAME)).is_none_or(|t| t != tag))
        .cloned()
        .collect();
    manifests.push(entry);
    index.set_manifests(manifests);
    std::fs::write(&index_path, document_bytes(&index)).map_err(io_err)?;
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

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    /// The documents come out as strata has always written them (so the generated
    /// workload's digests stay put), and writing a tag again replaces its entry in
    /// `index.json` while the other tags stay.
    #[test]
    fn a_layout_is_written_as_before_and_a_tag_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let mut tar = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(5);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, "hello", &b"hello"[..]).unwrap();
        let blobs = vec![tar.into_inner().unwrap()];
        super::write_layout(dir.path(), "one", &blobs).unwrap();
        super::write_layout(dir.path(), "two", &blobs).unwrap();
        super::write_layout(dir.path(), "one", &blobs).unwrap();
        let read = |rel: &str| std::fs::read(dir.path().join(rel)).unwrap();
        let index: Value = serde_json::from_slice(&read("index.json")).unwrap();
        let tags: Vec<&str> = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["annotations"][super::REF_NAME].as_str().unwrap())
            .collect();
        assert_eq!(tags, ["two", "one"]);
        let mdigest = index["manifests"][1]["digest"].as_str().unwrap();
        let manifest_bytes = read(&format!("blobs/sha256/{}", &mdigest[7..]));
        let manifest: Value = serde_json::from_slice(&manifest_bytes).unwrap();
        let config_bytes = read(&format!("blobs/sha256/{}", &manifest["config"]["digest"].as_str().unwrap()[7..]));
        let diff_id = driver_core::digest::sha256(&blobs[0]);
        let want_config = json!({
            "architecture": super::host_arch(), "os": "linux",
            "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created_by": "strata"}],
        });
        assert_eq!(config_bytes, serde_json::to_vec(&want_config).unwrap());
        let want_manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": driver_core::digest::sha256(&config_bytes), "size": config_bytes.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": diff_id, "size": blobs[0].len()}],
        });
        assert_eq!(manifest_bytes, serde_json::to_vec(&want_manifest).unwrap());
    }
}
