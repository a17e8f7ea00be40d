//! Reading OCI images: an image layout directory (`DIR` or `DIR:TAG`), an oci-archive
//! (the same layout in a tar) or a docker-archive (`docker save`: `manifest.json`),
//! resolved to an [`Image`]: its index, manifest and config read (each checked against
//! its digest, size and depth) and its layers listed with their diff_ids.

use std::io::Read;
use std::path::{Path, PathBuf};

use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};

use crate::chain::{chain_ids, Image, LayerBlob};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::media::{DOCKER_LAYER, DOCKER_MANIFEST_LIST, MAX_CONFIG, MAX_JSON_DEPTH, MAX_MANIFEST, OCI_INDEX, REF_NAME};
use crate::platform::{pick_platform, Platform};
use crate::source::{check_stored_size, BlobSource, LayoutDir, TarArchive};
use crate::verify::VerifyingReader;

/// Refuses a JSON document nesting arrays and objects more than [`MAX_JSON_DEPTH`]
/// levels deep. A scan of the brackets outside strings, not a parse: a parse into a
/// `Value` would take several times the document's size in memory to find out.
fn check_depth(what: &str, json: &[u8]) -> Result<()> {
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
                    return Err(Error::TooDeep { what: what.to_string(), max: MAX_JSON_DEPTH });
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Reads a whole small blob (index, manifest, config) of at most `max` bytes,
/// checking its digest.
fn read_small(source: &dyn BlobSource, digest: &str, size: Option<u64>, max: u64) -> Result<Vec<u8>> {
    if let Some(size) = size.filter(|s| *s > max) {
        return Err(Error::TooLarge { what: format!("{digest} (a manifest or config)"), size, max });
    }
    let what = format!("blob {digest}");
    check_stored_size(source, digest, size).map_err(|e| e.context(&what))?;
    let blob = source.open(digest).map_err(|e| Error::read(&what, e))?;
    let mut r = VerifyingReader::new(blob.take(max + 1), digest, size, what.clone());
    let mut out = Vec::new();
    r.read_to_end(&mut out).map_err(|e| Error::read(&what, e))?;
    Ok(out)
}

/// The platform an image's config names, checked against an explicit `--platform`
/// (a single-platform image has no index to pick from).
fn check_config_platform(source: &dyn BlobSource, image: &Image, want: &Platform) -> Result<()> {
    // By its locator: a docker-archive keeps it under a path, not a digest.
    let blob = source.open(&image.config_locator).map_err(|e| Error::read("config", e))?;
    let what = format!("config {}", image.config_digest);
    let mut cfg = Vec::new();
    VerifyingReader::new(blob.take(MAX_CONFIG + 1), &image.config_digest, None, what.clone())
        .read_to_end(&mut cfg)
        .map_err(|e| Error::read(&what, e))?;
    let config: ImageConfiguration = Error::parse_json(&what, &cfg)?;
    let have = Platform::of_config(&config);
    if want.accepts(&have) {
        return Ok(());
    }
    Err(Error::PlatformMismatch { want: want.to_string(), have: have.to_string() })
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
    media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST
}

/// Opens an image source as `image unpack` takes it: `DIR`, `DIR:TAG`, or an archive.
pub fn open_source(spec: &str, platform: Option<&str>) -> Result<(Box<dyn BlobSource>, Image)> {
    if spec.starts_with("docker://") {
        return Err(Error::NotAnImage(
            "a registry image: `strata image pull` and `strata image unpack` take docker://REF",
        )
        .in_image(spec));
    }
    let want = platform.map(Platform::parse).transpose()?;
    let opened = (|| {
        let (source, image, kind) = open_path(spec, want.as_ref())?;
        let (_, transport) = split_transport(spec);
        if let Some(named) = transport.filter(|t| *t != kind) {
            let is = match kind {
                "oci" => "an OCI image layout (oci:)",
                "oci-archive" => "an oci-archive (oci-archive:)",
                _ => "a docker-archive (docker-archive:)",
            };
            return Err(Error::WrongTransport { is, named });
        }
        if let Some(want) = &want {
            check_config_platform(source.as_ref(), &image, want)?;
        }
        Ok((source, image))
    })();
    opened.map_err(|e| e.in_image(spec))
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
            None => return Err(Error::NoSuchSource),
        }
    };
    let host = Platform::host();
    let want = want.unwrap_or(&host);
    if path.is_dir() {
        if !path.join("oci-layout").exists() {
            return Err(Error::NotAnImage("a directory without an oci-layout file is not an OCI image layout"));
        }
        let source = LayoutDir { dir: path.clone() };
        let file = source.open_file(Path::new("index.json")).map_err(|e| Error::read("index.json", e))?;
        let mut index = Vec::new();
        file.take(MAX_MANIFEST + 1).read_to_end(&mut index).map_err(|e| Error::read("index.json", e))?;
        if index.len() as u64 > MAX_MANIFEST {
            let size = index.len() as u64;
            return Err(Error::TooLarge { what: "index.json".into(), size, max: MAX_MANIFEST });
        }
        let image = resolve_oci(&source, full, &index, tag.as_deref(), want)?;
        return Ok((Box::new(source), image, "oci"));
    }
    let archive = TarArchive::index(&path)?;
    if archive.members.contains_key("index.json") {
        let index = archive.read_small_member("index.json", MAX_MANIFEST).map_err(|e| Error::read("index.json", e))?;
        let image = resolve_oci(&archive, full, &index, tag.as_deref(), want)?;
        return Ok((Box::new(archive), image, "oci-archive"));
    }
    if archive.members.contains_key("manifest.json") {
        let image = resolve_docker(&archive, tag.as_deref())?;
        return Ok((Box::new(archive), image, "docker-archive"));
    }
    Err(Error::NotAnImage("neither an OCI image layout (index.json) nor a docker-archive (manifest.json)"))
}

fn resolve_oci(source: &dyn BlobSource, src: &str, index: &[u8], tag: Option<&str>, want: &Platform) -> Result<Image> {
    let index: ImageIndex = Error::parse_json("index.json", index)?;
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
        [] => {
            let tag = tag.unwrap_or("").to_string();
            return Err(Error::NoSuchTag { what: "manifest", tag, file: "index.json" });
        }
        many => {
            let tags: Vec<String> =
                many.iter().filter_map(|d| d.annotations().as_ref().and_then(|a| a.get(REF_NAME)).cloned()).collect();
            return Err(Error::SeveralImages { count: many.len(), pick: format!("{src}:TAG"), tags });
        }
    };
    let name = desc
        .annotations()
        .as_ref()
        .and_then(|a| a.get(REF_NAME).cloned())
        .or_else(|| tag.map(str::to_string))
        .unwrap_or_else(|| "latest".into());
    let mut digest = Digest::try_from(desc.digest())?;
    let mut media_type = desc.media_type().to_string();
    let mut size = Some(desc.size());
    // Nested indexes and manifest lists: pick this host's platform.
    for _ in 0..8 {
        if !is_index(&media_type) {
            break;
        }
        let data = read_small(source, &digest, size, MAX_MANIFEST)?;
        let nested: ImageIndex = Error::parse_json(format!("index {digest}"), &data)?;
        let platforms: Vec<Option<Platform>> =
            nested.manifests().iter().map(|d| d.platform().as_ref().map(Platform::from)).collect();
        let i = pick_platform(&platforms, want).map_err(|e| e.context(format!("index {digest}")))?;
        let pick = &nested.manifests()[i];
        digest = Digest::try_from(pick.digest())?;
        media_type = pick.media_type().to_string();
        size = Some(pick.size());
    }
    let data = read_small(source, &digest, size, MAX_MANIFEST)?;
    manifest_to_image(source, name, &data)
}

/// An OCI or Docker schema 2 manifest (the same shape) to an [`Image`]; errors say
/// they concern image `src`.
pub fn image_from_manifest(source: &dyn BlobSource, src: &str, name: String, manifest: &[u8]) -> Result<Image> {
    manifest_to_image(source, name, manifest).map_err(|e| e.in_image(src))
}

fn manifest_to_image(source: &dyn BlobSource, name: String, manifest: &[u8]) -> Result<Image> {
    let manifest_bytes = manifest.to_vec();
    check_depth("manifest", manifest)?;
    let manifest: ImageManifest = Error::parse_json("manifest", manifest)?;
    let cfg_digest = Digest::try_from(manifest.config().digest())?;
    let cfg = read_small(source, &cfg_digest, Some(manifest.config().size()), MAX_CONFIG)?;
    let what = format!("config {cfg_digest}");
    check_depth(&what, &cfg)?;
    let config: ImageConfiguration = Error::parse_json(&what, &cfg)?;
    let diff_ids = config.rootfs().diff_ids().clone();
    if diff_ids.len() != manifest.layers().len() {
        return Err(Error::LayerCount {
            manifest: "the manifest",
            layers: manifest.layers().len(),
            diff_ids: diff_ids.len(),
        });
    }
    let mut layers = Vec::new();
    for (d, diff_id) in manifest.layers().iter().zip(&diff_ids) {
        let media_type = d.media_type().to_string();
        if !is_layer_type(&media_type) {
            return Err(Error::NotALayer { digest: d.digest().to_string(), media_type });
        }
        let digest = Digest::try_from(d.digest())?;
        Digest::parse(diff_id)?;
        layers.push(LayerBlob {
            locator: digest.to_string(),
            digest: Some(digest.into()),
            media_type,
            size: Some(d.size()),
            diff_id: diff_id.clone(),
        });
    }
    Ok(Image {
        name,
        config_locator: cfg_digest.to_string(),
        config_digest: cfg_digest.into(),
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

fn resolve_docker(archive: &TarArchive, tag: Option<&str>) -> Result<Image> {
    let data = archive.read_small_member("manifest.json", MAX_MANIFEST).map_err(|e| Error::read("manifest.json", e))?;
    let entries: Vec<DockerManifestEntry> = Error::parse_json("manifest.json", &data)?;
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
        [] => {
            let tag = tag.unwrap_or("").to_string();
            return Err(Error::NoSuchTag { what: "image", tag, file: "manifest.json" });
        }
        many => {
            let tags = many.iter().flat_map(|e| tags(e)).collect();
            return Err(Error::SeveralImages { count: many.len(), pick: "ARCHIVE:TAG".into(), tags });
        }
    };
    // `docker save` names the config after its digest, as `<hex>.json` or
    // `blobs/sha256/<hex>`; check it against that name.
    let hex = entry.config.trim_end_matches(".json").rsplit('/').next().unwrap_or("").to_string();
    let cfg_digest = format!("sha256:{hex}");
    let what = format!("config {}", entry.config);
    let mut cfg = Vec::new();
    let reader = archive.read_member(&entry.config).map_err(|e| Error::read(&what, e))?;
    VerifyingReader::new(reader.take(MAX_CONFIG + 1), &cfg_digest, None, what.clone())
        .read_to_end(&mut cfg)
        .map_err(|e| Error::read(&what, e))?;
    if cfg.len() as u64 > MAX_CONFIG {
        return Err(Error::TooLarge { what, size: cfg.len() as u64, max: MAX_CONFIG });
    }
    check_depth(&format!("config {cfg_digest}"), &cfg)?;
    let config: ImageConfiguration = Error::parse_json(&what, &cfg)?;
    let diff_ids = config.rootfs().diff_ids().clone();
    if diff_ids.len() != entry.layers.len() {
        return Err(Error::LayerCount {
            manifest: "manifest.json",
            layers: entry.layers.len(),
            diff_ids: diff_ids.len(),
        });
    }
    // As for an OCI image: a diff_id is a digest, so a chain ID is one too and can
    // never name a user's layer (such as a container's `c-victim`).
    for diff_id in &diff_ids {
        Digest::parse(diff_id).map_err(|e| Error::from(e).context("config diff_id"))?;
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
                media_type: DOCKER_LAYER.into(),
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
    /// The depth check agrees with a parse into `serde_json::Value` (what `container
    /// commit` and `image inspect` do with a kept config) on every document it accepts, and counts no bracket inside a string,
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
            let checked = super::check_depth("config", doc.as_bytes());
            assert_eq!(checked.is_ok(), depth <= super::MAX_JSON_DEPTH, "depth {depth}: {doc}");
            match checked {
                Ok(()) => {
                    serde_json::from_str::<serde_json::Value>(&doc).unwrap_or_else(|e| panic!("depth {depth}: {e}"));
                }
                Err(e) => assert!(matches!(&e, super::Error::TooDeep { what, max: 64 } if what == "config"), "{e}"),
            }
        }
    }
}
