//! Reading OCI images: an image layout directory (`DIR` or `DIR:TAG`), an oci-archive
//! (the same layout in a tar) or a docker-archive (`docker save`: `manifest.json`),
//! resolved to an [`Image`]: its index, manifest and config read (each checked against
//! its digest, size and depth) and its layers listed with their diff_ids.

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};

use driver_core::error::{Cause, Error, Result};

use crate::chain::{chain_ids, Image, LayerBlob};
use crate::media::{MAX_CONFIG, MAX_JSON_DEPTH, MAX_MANIFEST, REF_NAME};
use crate::platform::{pick_platform, Platform};
use crate::source::{blob_path, check_stored_size, BlobSource, LayoutDir, TarArchive};
use crate::verify::VerifyingReader;

/// Refuses a JSON document nesting arrays and objects more than [`MAX_JSON_DEPTH`]
/// levels deep. A scan of the brackets outside strings, not a parse: a parse into a
/// `Value` would take several times the document's size in memory to find out.
fn check_depth(src: &str, what: &str, json: &[u8]) -> Result<()> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in json {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_JSON_DEPTH {
                    return Err(bad(
                        src,
                        format!("{what}: JSON nested more than {MAX_JSON_DEPTH} levels deep (real ones nest 5)"),
                    ));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

fn bad(src: &str, msg: impl Into<String>) -> Error {
    Error::new(Cause::Other(format!("image {src}: {}", msg.into())))
}

/// Reads a whole small blob (index, manifest, config) of at most `max` bytes,
/// checking its digest.
fn read_small(source: &dyn BlobSource, src: &str, digest: &str, size: Option<u64>, max: u64) -> Result<Vec<u8>> {
    if size.is_some_and(|s| s > max) {
        return Err(bad(
            src,
            format!("{digest} claims {} bytes, more than the {max} a manifest or config may have", size.unwrap_or(0)),
        ));
    }
    check_stored_size(source, digest, size).map_err(|e| bad(src, format!("blob {digest}: {e}")))?;
    let blob = source.open(digest).map_err(|e| bad(src, format!("blob {digest}: {e}")))?;
    let mut r = VerifyingReader::new(blob.take(max + 1), digest, size, format!("blob {digest}"));
    let mut out = Vec::new();
    r.read_to_end(&mut out).map_err(|e| bad(src, e.to_string()))?;
    Ok(out)
}

/// The platform an image's config names, checked against an explicit `--platform`
/// (a single-platform image has no index to pick from).
fn check_config_platform(source: &dyn BlobSource, src: &str, image: &Image, want: &Platform) -> Result<()> {
    // By its locator: a docker-archive keeps it under a path, not a digest.
    let blob = source.open(&image.config_locator).map_err(|e| bad(src, format!("config: {e}")))?;
    let what = format!("config {}", image.config_digest);
    let mut cfg = Vec::new();
    VerifyingReader::new(blob.take(MAX_CONFIG + 1), &image.config_digest, None, what)
        .read_to_end(&mut cfg)
        .map_err(|e| bad(src, e.to_string()))?;
    let json: serde_json::Value =
        serde_json::from_slice(&cfg).map_err(|e| bad(src, format!("config {}: {e}", image.config_digest)))?;
    match Platform::from_json(&json) {
        Some(p) if !want.accepts(&p) => {
            Err(bad(src, format!("--platform {want} matches nothing: the image is for {p} only")))
        }
        _ => Ok(()),
    }
}

/// skopeo's and podman's transport prefixes that name a local image (`oci:`,
/// `oci-archive:`, `docker-archive:`), split off; a path that exists is taken as it is.
fn split_transport(spec: &str) -> (&str, Option<&'static str>) {
    if Path::new(spec).exists() {
        return (spec, None);
    }
    for t in ["oci", "oci-archive", "docker-archive"] {
        if let Some(rest) = spec.strip_prefix(t).and_then(|r| r.strip_prefix(':')) {
            return (rest, Some(t));
        }
    }
    (spec, None)
}

fn is_index(media_type: &str) -> bool {
    media_type == "application/vnd.oci.image.index.v1+json"
        || media_type == "application/vnd.docker.distribution.manifest.list.v2+json"
}

/// Opens an image source as `image unpack` takes it: `DIR`, `DIR:TAG`, or an archive.
pub fn open_source(spec: &str, platform: Option<&str>) -> Result<(Box<dyn BlobSource>, Image)> {
    if spec.starts_with("docker://") {
        return Err(bad(spec, "a registry image: `strata image pull` and `strata image unpack` take docker://REF"));
    }
    let want = platform.map(Platform::parse).transpose()?;
    let (source, image, kind) = open_path(spec, want.as_ref())?;
    let (_, transport) = split_transport(spec);
    if let Some(t) = transport.filter(|t| *t != kind) {
        let what = match kind {
            "oci" => "an OCI image layout (oci:)",
            "oci-archive" => "an oci-archive (oci-archive:)",
            _ => "a docker-archive (docker-archive:)",
        };
        return Err(bad(spec, format!("it is {what}, not what {t}: names")));
    }
    if let Some(want) = &want {
        check_config_platform(source.as_ref(), spec, &image, want)?;
    }
    Ok((source, image))
}

/// The image at a path (a layout directory or an archive, after an optional
/// transport prefix), and which of `oci`, `oci-archive`, `docker-archive` it is.
fn open_path(full: &str, want: Option<&Platform>) -> Result<(Box<dyn BlobSource>, Image, &'static str)> {
    let spec = split_transport(full).0;
    let (path, tag) = if Path::new(spec).exists() {
        (PathBuf::from(spec), None)
    } else {
        // A tag may hold a colon itself (`DIR:app:v1`, as `image save` tags a layout):
        // the path is the longest prefix before a colon that exists.
        let split = spec.match_indices(':').rev().map(|(i, _)| (&spec[..i], &spec[i + 1..]));
        match split.into_iter().find(|(p, _)| Path::new(p).exists()) {
            Some((p, t)) => (PathBuf::from(p), Some(t.to_string())),
            None => return Err(bad(full, "no such file or directory")),
        }
    };
    let host = Platform::host();
    let want = want.unwrap_or(&host);
    if path.is_dir() {
        if !path.join("oci-layout").exists() {
            return Err(bad(full, "a directory without an oci-layout file is not an OCI image layout"));
        }
        let source = LayoutDir { dir: path.clone() };
        let index = source
            .open_file(Path::new("index.json"))
            .and_then(|f| {
                let mut out = Vec::new();
                f.take(MAX_MANIFEST + 1).read_to_end(&mut out)?;
                if out.len() as u64 > MAX_MANIFEST {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("more than the {MAX_MANIFEST} bytes an index may have"),
                    ));
                }
                Ok(out)
            })
            .map_err(|e| bad(full, format!("index.json: {e}")))?;
        let image = resolve_oci(&source, full, &index, tag.as_deref(), want)?;
        return Ok((Box::new(source), image, "oci"));
    }
    let archive = TarArchive::index(&path).map_err(|e| bad(full, format!("not a readable tar archive: {e}")))?;
    if archive.members.contains_key("index.json") {
        let index = archive.read_small_member("index.json", MAX_MANIFEST).map_err(|e| bad(full, e.to_string()))?;
        let image = resolve_oci(&archive, full, &index, tag.as_deref(), want)?;
        return Ok((Box::new(archive), image, "oci-archive"));
    }
    if archive.members.contains_key("manifest.json") {
        let image = resolve_docker(&archive, full, tag.as_deref())?;
        return Ok((Box::new(archive), image, "docker-archive"));
    }
    Err(bad(full, "neither an OCI image layout (index.json) nor a docker-archive (manifest.json)"))
}

fn resolve_oci(source: &dyn BlobSource, src: &str, index: &[u8], tag: Option<&str>, want: &Platform) -> Result<Image> {
    let index = ImageIndex::from_reader(index).map_err(|e| bad(src, format!("index.json: {e}")))?;
    let candidates: Vec<_> = index
        .manifests()
        .iter()
        .filter(|d| match tag {
            None => true,
            Some(t) => d.annotations().as_ref().and_then(|a| a.get(REF_NAME)).is_some_and(|n| n == t),
        })
        .collect();
    let desc = match candidates.as_slice() {
        [one] => *one,
        [] => return Err(bad(src, format!("no manifest tagged {:?} in index.json", tag.unwrap_or("")))),
        many => {
            let tags: Vec<String> =
                many.iter().filter_map(|d| d.annotations().as_ref().and_then(|a| a.get(REF_NAME)).cloned()).collect();
            return Err(bad(
                src,
                format!("it holds {} images; pick one with {src}:TAG (tags: {})", many.len(), tags.join(", ")),
            ));
        }
    };
    let name = desc
        .annotations()
        .as_ref()
        .and_then(|a| a.get(REF_NAME).cloned())
        .or_else(|| tag.map(str::to_string))
        .unwrap_or_else(|| "latest".into());
    let mut digest = desc.digest().to_string();
    let mut media_type = desc.media_type().to_string();
    let mut size = Some(desc.size());
    // Nested indexes and manifest lists: pick this host's platform.
    for _ in 0..8 {
        if !is_index(&media_type) {
            break;
        }
        let data = read_small(source, src, &digest, size, MAX_MANIFEST)?;
        let nested = ImageIndex::from_reader(&data[..]).map_err(|e| bad(src, format!("{digest}: {e}")))?;
        let platforms: Vec<Option<Platform>> = nested
            .manifests()
            .iter()
            .map(|d| {
                d.platform().as_ref().map(|p| Platform {
                    os: p.os().to_string(),
                    architecture: p.architecture().to_string(),
                    variant: p.variant().clone(),
                })
            })
            .collect();
        let i = pick_platform(&platforms, want).map_err(|e| bad(src, format!("{e} (index {digest})")))?;
        let pick = &nested.manifests()[i];
        digest = pick.digest().to_string();
        media_type = pick.media_type().to_string();
        size = Some(pick.size());
    }
    let data = read_small(source, src, &digest, size, MAX_MANIFEST)?;
    image_from_manifest(source, src, name, &data)
}

/// An OCI or Docker schema 2 manifest (the same shape) to an [`Image`].
pub fn image_from_manifest(source: &dyn BlobSource, src: &str, name: String, manifest: &[u8]) -> Result<Image> {
    let manifest_bytes = manifest.to_vec();
    check_depth(src, "manifest", manifest)?;
    let manifest = ImageManifest::from_reader(manifest).map_err(|e| bad(src, format!("manifest: {e}")))?;
    let cfg_digest = manifest.config().digest().to_string();
    let cfg = read_small(source, src, &cfg_digest, Some(manifest.config().size()), MAX_CONFIG)?;
    check_depth(src, &format!("config {cfg_digest}"), &cfg)?;
    let config =
        ImageConfiguration::from_reader(&cfg[..]).map_err(|e| bad(src, format!("config {cfg_digest}: {e}")))?;
    let diff_ids = config.rootfs().diff_ids().clone();
    if diff_ids.len() != manifest.layers().len() {
        return Err(bad(
            src,
            format!("the manifest lists {} layers but the config {} diff_ids", manifest.layers().len(), diff_ids.len()),
        ));
    }
    let mut layers = Vec::new();
    for (d, diff_id) in manifest.layers().iter().zip(&diff_ids) {
        let media_type = d.media_type().to_string();
        if !is_layer_type(&media_type) {
            return Err(bad(src, format!("layer {} has media type {media_type}, which is not a layer", d.digest())));
        }
        blob_path(diff_id).map_err(|e| bad(src, e.to_string()))?;
        layers.push(LayerBlob {
            locator: d.digest().to_string(),
            digest: Some(d.digest().to_string()),
            media_type,
            size: Some(d.size()),
            diff_id: diff_id.clone(),
        });
    }
    Ok(Image {
        name,
        config_locator: cfg_digest.clone(),
        config_digest: cfg_digest,
        manifest: Some(manifest_bytes),
        chain_ids: chain_ids(&diff_ids),
        layers,
    })
}

fn is_layer_type(t: &str) -> bool {
    t.starts_with("application/vnd.oci.image.layer.")
        || t.starts_with("application/vnd.docker.image.rootfs.")
        || t == "application/x-tar"
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

fn resolve_docker(archive: &TarArchive, src: &str, tag: Option<&str>) -> Result<Image> {
    let data = archive.read_small_member("manifest.json", MAX_MANIFEST).map_err(|e| bad(src, e.to_string()))?;
    let entries: Vec<DockerManifestEntry> =
        serde_json::from_slice(&data).map_err(|e| bad(src, format!("manifest.json: {e}")))?;
    let tags = |e: &DockerManifestEntry| e.repo_tags.clone().unwrap_or_default();
    let picked: Vec<&DockerManifestEntry> = entries
        .iter()
        .filter(|e| match tag {
            None => true,
            // `docker save` and skopeo qualify names (`docker.io/strata/img:v1` for
            // `strata/img:v1`).
            Some(t) => tags(e).iter().any(|rt| {
                rt == t || rt.ends_with(&format!("/{t}")) || rt.rsplit_once(':').is_some_and(|(_, x)| x == t)
            }),
        })
        .collect();
    let entry = match picked.as_slice() {
        [one] => *one,
        [] => return Err(bad(src, format!("no image tagged {:?} in manifest.json", tag.unwrap_or("")))),
        _ => return Err(bad(src, "it holds several images; pick one with ARCHIVE:TAG")),
    };
    // `docker save` names the config after its digest, as `<hex>.json` or
    // `blobs/sha256/<hex>`; check it against that name.
    let hex = entry.config.trim_end_matches(".json").rsplit('/').next().unwrap_or("").to_string();
    let cfg_digest = format!("sha256:{hex}");
    let mut cfg = Vec::new();
    let reader = archive.read_member(&entry.config).map_err(|e| bad(src, e.to_string()))?;
    VerifyingReader::new(reader.take(MAX_CONFIG + 1), &cfg_digest, None, format!("config {}", entry.config))
        .read_to_end(&mut cfg)
        .map_err(|e| bad(src, e.to_string()))?;
    if cfg.len() as u64 > MAX_CONFIG {
        return Err(bad(src, format!("config {} has more than {MAX_CONFIG} bytes", entry.config)));
    }
    check_depth(src, &format!("config {cfg_digest}"), &cfg)?;
    let config = ImageConfiguration::from_reader(&cfg[..]).map_err(|e| bad(src, format!("config: {e}")))?;
    let diff_ids = config.rootfs().diff_ids().clone();
    if diff_ids.len() != entry.layers.len() {
        return Err(bad(
            src,
            format!("manifest.json lists {} layers but the config {} diff_ids", entry.layers.len(), diff_ids.len()),
        ));
    }
    // As for an OCI image: a diff_id is a digest, so a chain ID is one too and can
    // never name a user's layer (such as a container's `c-victim`).
    for diff_id in &diff_ids {
        blob_path(diff_id).map_err(|e| bad(src, format!("config diff_id: {e}")))?;
    }
    let layers = entry
        .layers
        .iter()
        .zip(&diff_ids)
        .map(|(path, diff_id)| {
            let digest = path.strip_prefix("blobs/sha256/").map(|h| format!("sha256:{h}"));
            LayerBlob {
                locator: path.clone(),
                digest,
                media_type: "application/vnd.docker.image.rootfs.diff.tar".into(),
                size: archive.members.get(path).map(|m| m.1),
                diff_id: diff_id.clone(),
            }
        })
        .collect();
    let name = tags(entry).first().cloned().unwrap_or_else(|| hex[..12.min(hex.len())].to_string());
    Ok(Image {
        name,
        config_digest: cfg_digest,
        config_locator: entry.config.clone(),
        manifest: None,
        chain_ids: chain_ids(&diff_ids),
        layers,
    })
}

#[cfg(test)]
mod tests {
    /// The depth check agrees with a parse into `serde_json::Value` (what the content
    /// store does) on every document it accepts, and counts no bracket inside a string,
    /// on generated documents (fixed seed) of every depth around the limit.
    #[test]
    fn the_depth_check_accepts_only_what_the_store_can_read_back() {
        let mut x: u64 = 0x0dd_5eed;
        for depth in 1..=200usize {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Arrays and objects mixed, with strings full of brackets and escapes.
            let mut doc = String::new();
            let mut closers = Vec::new();
            for level in 0..depth {
                if (x >> (level % 64)) & 1 == 0 {
                    doc.push_str(r#"{"k\"[{": "]]}\\", "v": "#);
                    closers.push('}');
                } else {
                    doc.push_str(r#"["[[[\"{{", "#);
                    closers.push(']');
                }
            }
            doc.push_str("null");
            doc.extend(closers.iter().rev());
            let checked = super::check_depth("src", "config", doc.as_bytes());
            assert_eq!(checked.is_ok(), depth <= super::MAX_JSON_DEPTH, "depth {depth}: {doc}");
            match checked {
                Ok(()) => {
                    serde_json::from_str::<serde_json::Value>(&doc).unwrap_or_else(|e| panic!("depth {depth}: {e}"));
                }
                Err(e) => assert!(e.to_string().contains("config: JSON nested more than 64 levels"), "{e}"),
            }
        }
    }
}
