//! `image pull`: manifest (through indexes to this host's platform), config, then the
//! layer blobs no local layer holds, a few at a time, under the watchdog.

use std::fs;
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::digest::Digest;
use crate::image::{image_from_manifest, Platform};
use crate::reference::Reference;
use driver_core::Driver;
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use serde::de::IgnoredAny;

use super::auth::{AuthOptions, Credential};
use super::bounds::{Limits, DOCKER_LIST, DOCKER_MANIFEST, MAX_CONFIG, MAX_INDEX_DEPTH, OCI_INDEX, OCI_MANIFEST};
use super::client::{digest_of, Client};
use super::error::{one_line, Error};
use super::progress::{guarded, Progress, Watchdog};
use super::staging::{remove_stale_staging, PullSource, Pulled};

/// What a manifest body says it is, before it is read as one.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Declared {
    media_type: Option<String>,
    manifests: Option<IgnoredAny>,
    layers: Option<IgnoredAny>,
}

/// Reads `body` as JSON of type `T`; the error names `what`.
fn json<'a, T: serde::Deserialize<'a>>(body: &'a [u8], what: &str) -> Result<T, Error> {
    serde_json::from_slice(body).map_err(|source| Error::Json { what: what.to_string(), source })
}

/// What a manifest body is: the header's media type and the body's own must agree.
fn kind_of(header: &str, body: &Declared, what: &str) -> Result<&'static str, Error> {
    let header = header.split(';').next().unwrap_or("").trim();
    let known = |t: &str| [OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST].into_iter().find(|k| *k == t);
    let own = body.media_type.as_deref();
    let generic = header.is_empty() || header == "application/json" || header == "application/octet-stream";
    let t = match (known(header), own) {
        (Some(h), Some(o)) if h != o => {
            return Err(Error::protocol(
                what,
                format!("the registry says media type {h}, the manifest says {}", one_line(o, 100)),
            ))
        }
        (Some(h), _) => h,
        (None, Some(o)) if generic => {
            known(o).ok_or_else(|| Error::protocol(what, format!("unsupported media type {:?}", one_line(o, 100))))?
        }
        (None, None) if generic && body.manifests.is_some() => OCI_INDEX,
        (None, None) if generic && body.layers.is_some() => OCI_MANIFEST,
        _ => {
            return Err(Error::protocol(
                what,
                format!(
                    "unsupported media type {:?} (docker schema 1 and others are not pulled)",
                    one_line(header, 100)
                ),
            ))
        }
    };
    Ok(t)
}

/// The entry of `index` for `want`: the first whose platform `want` accepts, or that
/// names none (its config decides). When there is none, the platforms present.
fn select<'a>(index: &'a ImageIndex, want: &Platform) -> Result<&'a Descriptor, Vec<String>> {
    let platform = |d: &Descriptor| d.platform().as_ref().map(Platform::from);
    let entries = index.manifests();
    entries
        .iter()
        .find(|d| platform(d).is_none_or(|p| want.accepts(&p)))
        .ok_or_else(|| entries.iter().filter_map(platform).map(|p| p.to_string()).collect())
}

/// Pulls `reference` into a staging folder under `cache`: manifest, config and every
/// layer blob that `driver` lacks. Unpack from [`Pulled::source`], then [`Pulled::keep`].
pub fn pull(
    reference: &str,
    insecure: bool,
    auth: &AuthOptions,
    limits: Limits,
    cache: &Path,
    driver: &dyn Driver,
) -> Result<Pulled, Error> {
    pull_missing(reference, insecure, auth, limits, cache, &|chain_id| driver.get(chain_id).is_ok())
}

/// Pulls `reference` with every layer blob, whatever a driver holds: for `strata bench
/// --image docker://REF`, which unpacks the blobs itself on each driver in turn.
pub fn pull_all(
    reference: &str,
    insecure: bool,
    auth: &AuthOptions,
    limits: Limits,
    cache: &Path,
) -> Result<Pulled, Error> {
    pull_missing(reference, insecure, auth, limits, cache, &|_| false)
}

/// [`pull`], downloading the blobs of the layers whose chain ID `present` says no.
fn pull_missing(
    reference: &str,
    insecure: bool,
    auth: &AuthOptions,
    limits: Limits,
    cache: &Path,
    present: &dyn Fn(&str) -> bool,
) -> Result<Pulled, Error> {
    let r = Reference::parse_docker(reference)?;
    fs::create_dir_all(cache).map_err(Error::file(cache))?;
    remove_stale_staging(cache);
    let credential = auth.credential_for(r.registry())?;
    let staging = cache.join(format!(".pull-{}", std::process::id()));
    let mut result = download(&r, reference, insecure, credential, limits, cache, &staging, present);
    if result.is_err() && driver_core::interrupt::requested() {
        // Whichever thread saw it first, say why the pull stopped.
        result = Err(Error::Interrupted);
    }
    if result.is_err() {
        // Also when a stopped download thread still holds the source: its late
        // writes then fail, as the folder is gone.
        let _ = fs::remove_dir_all(&staging);
    }
    result
}

#[allow(clippy::too_many_arguments)]
fn download(
    r: &Reference,
    reference: &str,
    insecure: bool,
    credential: Option<Credential>,
    limits: Limits,
    cache: &Path,
    staging: &Path,
    present: &dyn Fn(&str) -> bool,
) -> Result<Pulled, Error> {
    let progress = Arc::new(Progress::default());
    let client = Arc::new(Client::new(r, insecure, credential, &limits, progress.clone())?);
    let dog = Watchdog::new(limits, progress);
    let blobs_dir = staging.join("blobs/sha256");
    fs::create_dir_all(&blobs_dir).map_err(Error::file(&blobs_dir))?;
    let source = Arc::new(PullSource { staging: staging.to_path_buf(), cache: cache.to_path_buf() });

    // Manifest (through indexes) and config.
    let (c, src, rr, shown) = (client.clone(), source.clone(), r.clone(), reference.to_string());
    let image = dog.run(reference, move || {
        let host = Platform::host();
        let (mut body, mut media) = c.manifest(rr.reference())?;
        let mut what = format!("manifest {}", rr.reference());
        for depth in 0.. {
            let kind = kind_of(&media, &json(&body, &what)?, &what)?;
            if kind == OCI_MANIFEST || kind == DOCKER_MANIFEST {
                break;
            }
            if depth == MAX_INDEX_DEPTH {
                return Err(Error::protocol(what, format!("indexes nested more than {MAX_INDEX_DEPTH} deep")));
            }
            let index: ImageIndex = json(&body, &what)?;
            let pick = select(&index, &host).map_err(|present| Error::NoPlatform {
                reference: shown.clone(),
                want: host.to_string(),
                present,
            })?;
            let digest = pick.digest().to_string();
            Digest::parse(&digest).map_err(|e| Error::digest(format!("{what}: index entry: "), e))?;
            (body, media) = c.manifest(&digest)?;
            what = format!("manifest {digest}");
            if pick.size() != body.len() as u64 {
                return Err(Error::Truncated { what, want: pick.size(), got: body.len() as u64 });
            }
        }
        // Keep the manifest with the blobs, so the image reads like a layout.
        let mpath =
            src.staging.join(Digest::parse(&digest_of(&body)).expect("a sha256 we computed is a digest").blob_path());
        fs::write(&mpath, &body).map_err(Error::file(&mpath))?;
        let manifest: ImageManifest = json(&body, &what)?;
        let cfg = manifest.config().digest().to_string();
        Digest::parse(&cfg).map_err(|e| Error::digest(format!("{what}: config: "), e))?;
        let cfg_size = manifest.config().size();
        if cfg_size > MAX_CONFIG {
            return Err(Error::TooLarge {
                what: format!("{what}: config {cfg} of {cfg_size} bytes"),
                limit: MAX_CONFIG,
            });
        }
        for l in manifest.layers() {
            Digest::parse(l.digest().as_ref()).map_err(|e| Error::digest(format!("{what}: layer: "), e))?;
        }
        c.fetch_blob(&src, &cfg, Some(cfg_size))?;
        // Resolve without the layers first (image_from_manifest reads only the config).
        Ok(image_from_manifest(src.as_ref(), &shown, rr.name(), &body)?)
    })?;

    // The layers no local layer holds, each blob once, a few at a time as docker
    // and containerd do.
    let mut missing: Vec<(String, Option<u64>)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, l) in image.layers.iter().enumerate() {
        if !present(&image.chain_ids[i]) {
            let d = l.digest.clone().ok_or_else(|| Error::protocol(format!("layer {}", i + 1), "no digest"))?;
            if seen.insert(d.clone()) {
                missing.push((d, l.size));
            }
        }
    }
    let downloaded = (missing.len(), missing.iter().filter_map(|(_, size)| *size).sum());
    let (c, src) = (client.clone(), source.clone());
    dog.run(reference, move || {
        let next = Mutex::new(missing.into_iter());
        let failure: Mutex<Option<Error>> = Mutex::new(None);
        std::thread::scope(|s| {
            for n in 0..3 {
                let work = || loop {
                    let Some((digest, size)) = next.lock().expect("lock").next() else { break };
                    if failure.lock().expect("lock").is_some() {
                        break;
                    }
                    if let Err(e) = guarded(|| c.fetch_blob(&src, &digest, size)) {
                        failure.lock().expect("lock").get_or_insert(e);
                        break;
                    }
                };
                std::thread::Builder::new()
                    .name(format!("strata-pull-{n}"))
                    .spawn_scoped(s, work)
                    .expect("spawn a download thread");
            }
        });
        match failure.into_inner().expect("lock") {
            Some(e) => Err(e),
            None => Ok(()),
        }
    })?;
    let name = image.name.clone();
    // Only this thread holds the source now that both phases are done (a phase that
    // failed returned above, and its thread's clone goes when it ends).
    let source = Arc::try_unwrap(source).map_err(|_| Error::Internal(": a download thread still runs".into()))?;
    Ok(Pulled { image, name, source, downloaded })
}
