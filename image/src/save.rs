//! `image save`: a stored image written as an OCI image layout, an oci-archive (the
//! layout in a tar) or a docker-archive (`docker save`'s `manifest.json` format), from
//! the blobs of the content store ([`crate::content`]), each verified as it is copied.
//!
//! The manifest is written as stored when it is an OCI one; a Docker schema 2 manifest
//! (a pull from Docker Hub) is rewritten with the OCI media types of the same blobs, as
//! `skopeo copy --format oci` does. A docker-archive holds each layer uncompressed, as
//! `<diff_id hex>/layer.tar`, which every loader (docker, podman, containerd) reads.
//! Every output is written beside its path and renamed into place when whole (a
//! layout directory's `index.json` last), so a failed save leaves nothing half-made.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::content::StoredImage;
use crate::images::ImageStore;
use crate::media::{oci_layer_type, MAX_CONFIG, MAX_MANIFEST, OCI_CONFIG, OCI_MANIFEST, REF_NAME};
use driver_core::error::{Cause, Context, Error, Result};

/// The output formats of `image save`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaveFormat {
    Oci,
    OciArchive,
    DockerArchive,
}

impl SaveFormat {
    /// As `--format` spells it.
    pub fn name(self) -> &'static str {
        match self {
            SaveFormat::Oci => "oci",
            SaveFormat::OciArchive => "oci-archive",
            SaveFormat::DockerArchive => "docker-archive",
        }
    }

    pub fn parse(s: &str) -> Result<SaveFormat> {
        match s {
            "oci" => Ok(SaveFormat::Oci),
            "oci-archive" => Ok(SaveFormat::OciArchive),
            "docker-archive" => Ok(SaveFormat::DockerArchive),
            other => Err(Error::new(Cause::Other(format!(
                "unknown format {other:?}: use oci, oci-archive or docker-archive"
            )))),
        }
    }
}

impl std::fmt::Display for SaveFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One file of the output: where it goes and what it holds.
enum Member {
    Bytes(Vec<u8>),
    /// A blob of the content store, verified as it is copied.
    Blob {
        digest: String,
        size: u64,
    },
    /// A layer blob, decompressed, checked against its diff_id.
    Uncompressed {
        digest: String,
        size: u64,
        diff_id: String,
    },
}

/// `name` with a tag (`app` → `app:latest`), as loaders expect `RepoTags`.
fn tagged(name: &str) -> String {
    let last = name.rsplit('/').next().unwrap_or(name);
    if last.contains(':') || name.contains('@') {
        name.to_string()
    } else {
        format!("{name}:latest")
    }
}

/// The manifest to write for `img`: as stored when it is OCI, else with OCI media types.
fn oci_manifest(img: &StoredImage, bytes: Vec<u8>) -> Vec<u8> {
    if img.manifest["mediaType"] == OCI_MANIFEST {
        return bytes;
    }
    let mut m = img.manifest.clone();
    m["mediaType"] = json!(OCI_MANIFEST);
    m["config"]["mediaType"] = json!(OCI_CONFIG);
    if let Some(layers) = m["layers"].as_array_mut() {
        for l in layers {
            let t = oci_layer_type(l["mediaType"].as_str().unwrap_or_default()).to_string();
            l["mediaType"] = json!(t);
        }
    }
    serde_json::to_vec(&m).expect("json")
}

fn hex_of(digest: &str) -> &str {
    digest.trim_start_matches("sha256:")
}

/// What goes into the output for image `name`, by path inside it.
fn members(images: &ImageStore, name: &str, format: SaveFormat) -> Result<Vec<(String, Member)>> {
    let rec = images.get(name)?;
    let img = images.content.load(name, rec.manifest.as_deref())?;
    let layers = img.layers();
    let size_of = |l: &Value| l["size"].as_u64().unwrap_or_default();
    let digest_of = |l: &Value| l["digest"].as_str().unwrap_or_default().to_string();
    let mut out = Vec::new();
    match format {
        SaveFormat::Oci | SaveFormat::OciArchive => {
            out.push(("oci-layout".to_string(), Member::Bytes(br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec())));
            let config_size = images.content.read_small(&img.config_digest, MAX_CONFIG)?.len() as u64;
            out.push((
                format!("blobs/sha256/{}", hex_of(&img.config_digest)),
                Member::Blob { digest: img.config_digest.clone(), size: config_size },
            ));
            for l in &layers {
                let d = digest_of(l);
                out.push((format!("blobs/sha256/{}", hex_of(&d)), Member::Blob { digest: d, size: size_of(l) }));
            }
            let stored = images.content.read_small(&img.manifest_digest, MAX_MANIFEST)?;
            let manifest = oci_manifest(&img, stored);
            let mdigest = crate::content::digest_of(&manifest);
            let tag = tagged(name);
            let index = json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "manifests": [{
                    "mediaType": OCI_MANIFEST, "digest": mdigest, "size": manifest.len(),
                    "annotations": {
                        // containerd names the image by this one; podman and skopeo by the ref.name.
                        "io.containerd.image.name": tag,
                        REF_NAME: tag,
                    },
                }],
            });
            out.push((format!("blobs/sha256/{}", hex_of(&mdigest)), Member::Bytes(manifest)));
            out.push(("index.json".to_string(), Member::Bytes(serde_json::to_vec(&index).expect("json"))));
        }
        SaveFormat::DockerArchive => {
            let diff_ids = img.diff_ids();
            let config_name = format!("{}.json", hex_of(&img.config_digest));
            let config = images.content.read_small(&img.config_digest, MAX_CONFIG)?;
            out.push((config_name.clone(), Member::Bytes(config)));
            let mut paths = Vec::new();
            for (l, diff_id) in layers.iter().zip(&diff_ids) {
                let path = format!("{}/layer.tar", hex_of(diff_id));
                paths.push(path.clone());
                out.push((
                    path,
                    Member::Uncompressed { digest: digest_of(l), size: size_of(l), diff_id: diff_id.clone() },
                ));
            }
            let manifest = json!([{"Config": config_name, "RepoTags": [tagged(name)], "Layers": paths}]);
            out.push(("manifest.json".to_string(), Member::Bytes(serde_json::to_vec(&manifest).expect("json"))));
        }
    }
    Ok(out)
}

/// The bytes of `m`, as a verified stream, and their length when known up front.
fn open<'a>(images: &'a ImageStore, m: &'a Member) -> Result<(Box<dyn Read + Send + 'a>, Option<u64>)> {
    Ok(match m {
        Member::Bytes(b) => (Box::new(&b[..]), Some(b.len() as u64)),
        Member::Blob { digest, size } => (images.content.read_blob(digest, Some(*size))?, Some(*size)),
        Member::Uncompressed { digest, size, diff_id } => {
            let blob = images.content.read_blob(digest, Some(*size))?;
            let (_, plain) =
                strata_archive::compress::decompress(blob).map_err(|e| Error::new(Cause::Other(e.to_string())))?;
            let check = crate::verify::VerifyingReader::new(plain, diff_id, None, format!("layer {diff_id}"));
            (Box::new(check), None)
        }
    })
}

/// A temp path beside `path`, removed on drop unless kept.
struct Temp(Option<PathBuf>);

impl Temp {
    fn beside(path: &Path) -> Temp {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("out");
        Temp(Some(path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))))
    }
    fn path(&self) -> &Path {
        self.0.as_deref().expect("a temp path")
    }
    fn keep_as(mut self, path: &Path) -> Result<()> {
        let tmp = self.0.take().expect("a temp path");
        fs::rename(&tmp, path).at_path(path)
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            let _ = fs::remove_file(p).or_else(|_| fs::remove_dir_all(p));
        }
    }
}

/// Writes image `name` to `out` in `format`.
pub fn save(images: &ImageStore, name: &str, out: &Path, format: SaveFormat) -> Result<()> {
    let members = members(images, name, format)?;
    let fail = |e: Error| Error::new(Cause::Other(format!("saving image {name} to {}: {e}", out.display())));
    match format {
        SaveFormat::Oci => write_layout(images, &members, out).map_err(fail),
        SaveFormat::OciArchive | SaveFormat::DockerArchive => {
            let tmp = Temp::beside(out);
            write_tar(images, &members, tmp.path()).map_err(fail)?;
            tmp.keep_as(out)
        }
    }
}

fn write_tar(images: &ImageStore, members: &[(String, Member)], path: &Path) -> Result<()> {
    let file = File::create(path).at_path(path)?;
    let mut tar = tar::Builder::new(io::BufWriter::with_capacity(1 << 20, file));
    let mut dirs = std::collections::BTreeSet::new();
    for (name, m) in members {
        // Parent directories first, as `docker save` writes them.
        let mut parents: Vec<&str> = Vec::new();
        let mut p = Path::new(name).parent();
        while let Some(d) = p.filter(|d| !d.as_os_str().is_empty()) {
            parents.push(d.to_str().expect("utf-8"));
            p = d.parent();
        }
        for d in parents.into_iter().rev() {
            if dirs.insert(d.to_string()) {
                let mut h = tar::Header::new_ustar();
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                tar.append_data(&mut h, format!("{d}/"), io::empty()).at_path(path)?;
            }
        }
        let (mut r, size) = open(images, m)?;
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        match size {
            Some(n) => {
                h.set_size(n);
                tar.append_data(&mut h, name, r).at_path(path)?;
            }
            None => {
                // An uncompressed layer's size is known once it is read: spool it.
                let mut spool = tempfile::tempfile_in(path.parent().unwrap_or(Path::new("."))).at_path(path)?;
                let n = io::copy(&mut r, &mut spool).map_err(|e| Error::new(Cause::Other(e.to_string())))?;
                io::Seek::rewind(&mut spool).at_path(path)?;
                h.set_size(n);
                tar.append_data(&mut h, name, spool).at_path(path)?;
            }
        }
    }
    let mut w = tar.into_inner().at_path(path)?;
    w.flush().at_path(path)?;
    w.into_inner().map_err(|e| Error::new(e.into_error()).with_path(path))?.sync_all().at_path(path)
}

/// An image layout directory: blobs first, `index.json` last (adding this image to a
/// layout that holds others, replacing one of the same tag).
fn write_layout(images: &ImageStore, members: &[(String, Member)], dir: &Path) -> Result<()> {
    fs::create_dir_all(dir.join("blobs/sha256")).at_path(dir)?;
    for (name, m) in members {
        let to = dir.join(name);
        let bytes = match (name.as_str(), m) {
            ("index.json", Member::Bytes(b)) => merged_index(&dir.join("index.json"), b)?,
            _ => {
                if name.starts_with("blobs/") && to.exists() {
                    continue;
                }
                let tmp = Temp::beside(&to);
                let (mut r, _) = open(images, m)?;
                let mut f = File::create(tmp.path()).at_path(tmp.path())?;
                io::copy(&mut r, &mut f).map_err(|e| Error::new(Cause::Other(e.to_string())).with_path(&to))?;
                f.sync_all().at_path(&to)?;
                tmp.keep_as(&to)?;
                continue;
            }
        };
        let tmp = Temp::beside(&to);
        fs::write(tmp.path(), bytes).at_path(&to)?;
        tmp.keep_as(&to)?;
    }
    Ok(())
}

fn merged_index(path: &Path, new: &[u8]) -> Result<Vec<u8>> {
    let mut new: Value = serde_json::from_slice(new).expect("our own json");
    let Ok(old) = fs::read(path) else { return Ok(serde_json::to_vec(&new).expect("json")) };
    let old: Value = serde_json::from_slice(&old)
        .map_err(|e| Error::new(Cause::Corrupt(format!("index.json: {e}"))).with_path(path))?;
    let tag = new["manifests"][0]["annotations"][REF_NAME].clone();
    let mut manifests: Vec<Value> = old["manifests"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|m| m["annotations"][REF_NAME] != tag)
        .collect();
    manifests.push(new["manifests"][0].clone());
    new["manifests"] = json!(manifests);
    Ok(serde_json::to_vec(&new).expect("json"))
}
