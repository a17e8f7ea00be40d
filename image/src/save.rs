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

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MediaType};

use crate::error::{Error, IoContext, Result};
use crate::images::ImageStore;
use crate::media::{oci_layer_type, MAX_CONFIG, MAX_MANIFEST, OCI_CONFIG, OCI_INDEX, OCI_MANIFEST, REF_NAME};

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
            other => Err(Error::InvalidFormat(other.to_string())),
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

/// The manifest to write: as stored when it is OCI, else with OCI media types.
fn oci_manifest(mut m: ImageManifest, stored: Vec<u8>) -> Vec<u8> {
    if m.media_type().as_ref().is_some_and(|t| t.to_string() == OCI_MANIFEST) {
        return stored;
    }
    m.set_media_type(Some(MediaType::from(OCI_MANIFEST)));
    let mut config = m.config().clone();
    config.set_media_type(MediaType::from(OCI_CONFIG));
    m.set_config(config);
    for l in m.layers_mut() {
        let t = oci_layer_type(l.media_type().as_ref()).to_string();
        l.set_media_type(MediaType::from(t.as_str()));
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
    let stored = images.content.read_small(&img.manifest_digest, MAX_MANIFEST)?;
    let manifest: ImageManifest = Error::parse_json(format!("manifest {}", img.manifest_digest), &stored)?;
    let layers: Vec<(String, u64)> = manifest.layers().iter().map(|l| (l.digest().to_string(), l.size())).collect();
    let config_bytes = images.content.read_small(&img.config_digest, MAX_CONFIG)?;
    let mut out = Vec::new();
    match format {
        SaveFormat::Oci | SaveFormat::OciArchive => {
            out.push(("oci-layout".to_string(), Member::Bytes(br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec())));
            out.push((
                format!("blobs/sha256/{}", hex_of(&img.config_digest)),
                Member::Blob { digest: img.config_digest.clone(), size: config_bytes.len() as u64 },
            ));
            for (d, size) in layers {
                out.push((format!("blobs/sha256/{}", hex_of(&d)), Member::Blob { digest: d, size }));
            }
            let manifest = oci_manifest(manifest, stored);
            let mdigest = crate::content::digest_of(&manifest);
            let tag = tagged(name);
            let index = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": [{
                    "mediaType": OCI_MANIFEST, "digest": mdigest, "size": manifest.len(),
                    "annotations": {
                        // containerd names the image by this one; podman and skopeo by the ref.name.
                        "io.containerd.image.name": tag,
                        REF_NAME: tag,
                    },
                }],
            });
            let index = serde_json::to_vec(&index).expect("json");
            out.push((format!("blobs/sha256/{}", hex_of(&mdigest)), Member::Bytes(manifest)));
            out.push(("index.json".to_string(), Member::Bytes(index)));
        }
        SaveFormat::DockerArchive => {
            let config: ImageConfiguration = Error::parse_json(format!("config {}", img.config_digest), &config_bytes)?;
            let diff_ids = config.rootfs().diff_ids();
            let config_name = format!("{}.json", hex_of(&img.config_digest));
            out.push((config_name.clone(), Member::Bytes(config_bytes)));
            let mut paths = Vec::new();
            for ((digest, size), diff_id) in layers.into_iter().zip(diff_ids) {
                let path = format!("{}/layer.tar", hex_of(diff_id));
                paths.push(path.clone());
                out.push((path, Member::Uncompressed { digest, size, diff_id: diff_id.clone() }));
            }
            let manifest = serde_json::json!([{"Config": config_name, "RepoTags": [tagged(name)], "Layers": paths}]);
            out.push(("manifest.json".to_string(), Member::Bytes(serde_json::to_vec(&manifest).expect("json"))));
        }
    }
    Ok(out)
}

/// The bytes of `m`, as a verified stream, and their length when known up front.
fn open<'a>(images: &'a ImageStore, m: &'a Member) -> Result<(Box<dyn Read + Send + 'a>, Option<u64>)> {
    Ok(match m {
        Member::Bytes(b) => (Box::new(&b[..]), Some(b.len() as u64)),
        Member::Blob { digest, size } => {
            let blob = images.content.read_blob(digest, Some(*size))?;
            (Box::new(Named { inner: blob, what: format!("stored blob {digest}") }), Some(*size))
        }
        Member::Uncompressed { digest, size, diff_id } => {
            let what = format!("stored blob {digest}");
            let blob = images.content.read_blob(digest, Some(*size))?;
            let (_, plain) = strata_archive::compress::decompress(blob).map_err(|e| Error::read(&what, e))?;
            let check = crate::verify::VerifyingReader::new(plain, diff_id, None, format!("layer {diff_id}"));
            (Box::new(Named { inner: check, what }), None)
        }
    })
}

/// A member's stream whose read errors say it was the reading that failed (and of
/// what), so that a copy's error tells them from the output's write errors (a full
/// disk).
struct Named<R> {
    inner: R,
    what: String,
}

impl<R: Read> Read for Named<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).map_err(|e| Error::read(&self.what, e).into_io())
    }
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
    let fail = |e: Error| e.context(format!("saving image {name} to {}", out.display()));
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
                // A read error is the layer's (typed when it is a check that failed), a
                // write error the spool's: a full disk says so.
                let n = io::copy(&mut r, &mut spool).at_path(path)?;
                io::Seek::rewind(&mut spool).at_path(path)?;
                h.set_size(n);
                tar.append_data(&mut h, name, spool).at_path(path)?;
            }
        }
    }
    let mut w = tar.into_inner().at_path(path)?;
    w.flush().at_path(path)?;
    w.into_inner().map_err(|e| Error::io(path, e.into_error()))?.sync_all().at_path(path)
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
                io::copy(&mut r, &mut f).at_path(&to)?;
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
    let mut new: ImageIndex = serde_json::from_slice(new).expect("our own index");
    let Ok(old) = fs::read(path) else { return Ok(new_bytes(&new)) };
    let old: ImageIndex = Error::parse_json(path.display().to_string(), &old)?;
    let tag_of = |d: &Descriptor| d.annotations().as_ref().and_then(|a| a.get(REF_NAME).cloned());
    let added = new.manifests()[0].clone();
    let mut manifests: Vec<Descriptor> =
        old.manifests().iter().filter(|m| tag_of(m) != tag_of(&added)).cloned().collect();
    manifests.push(added);
    new.set_manifests(manifests);
    Ok(new_bytes(&new))
}

fn new_bytes(index: &ImageIndex) -> Vec<u8> {
    serde_json::to_vec(index).expect("json")
}
