//! `strata image pull`: the OCI distribution protocol, enough of it to pull.
//!
//! Manifest (or index / manifest list, resolved to this host's platform), config,
//! then the layer blobs that no local layer already holds, a few at a time, each
//! checked against its digest as it streams into the blob cache
//! (`<root>/blobs/sha256/`). Auth is the bearer-token flow every hosted registry uses:
//! a 401 names a token service in `WWW-Authenticate`, whose token is sent on the
//! retry. `--insecure` talks plain http (a local registry). Docker Hub short names
//! resolve as docker does: `debian:12` is `docker.io/library/debian:12`.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use driver_core::image::{image_from_manifest, Image, LayoutDir, VerifyingReader};
use driver_core::{Cause, Driver, Error};
use sha2::{Digest, Sha256};

const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// A parsed image reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// Host (and port) to talk to.
    pub registry: String,
    pub repository: String,
    /// A tag or a `sha256:` digest.
    pub reference: String,
}

impl Reference {
    pub fn parse(s: &str) -> Result<Reference, Error> {
        let bad = || Error::new(Cause::Other(format!("invalid image reference {s:?}")));
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (r, Some(d.to_string())),
            None => (s, None),
        };
        let (first, remainder) = match rest.split_once('/') {
            Some((f, r)) if f.contains('.') || f.contains(':') || f == "localhost" => (Some(f), r),
            _ => (None, rest),
        };
        // A tag is after the last ':' that follows the last '/'.
        let (repo, tag) = match remainder.rsplit_once(':') {
            Some((r, t)) if !t.contains('/') => (r, t.to_string()),
            _ => (remainder, "latest".to_string()),
        };
        if repo.is_empty() || repo.chars().any(|c| c.is_ascii_uppercase() || c.is_whitespace()) {
            return Err(bad());
        }
        let (registry, repository) = match first {
            Some(host) if host != "docker.io" && host != "index.docker.io" => (host.to_string(), repo.to_string()),
            _ => {
                let repo = if repo.contains('/') { repo.to_string() } else { format!("library/{repo}") };
                ("registry-1.docker.io".to_string(), repo)
            }
        };
        Ok(Reference { registry, repository, reference: digest.unwrap_or(tag) })
    }

    /// The name an image pulled by this reference is recorded under.
    pub fn name(&self) -> String {
        let host = if self.registry == "registry-1.docker.io" { "docker.io" } else { &self.registry };
        let sep = if self.reference.starts_with("sha256:") { '@' } else { ':' };
        format!("{host}/{}{sep}{}", self.repository, self.reference)
    }
}

pub struct Client {
    agent: ureq::Agent,
    base: String,
    repository: String,
    token: Mutex<Option<String>>,
}

fn err(msg: impl Into<String>) -> Error {
    Error::new(Cause::Other(msg.into()))
}

/// Parses `Bearer realm="…",service="…",scope="…"`.
fn parse_challenge(h: &str) -> Option<HashMap<String, String>> {
    let rest = h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer "))?;
    let mut out = HashMap::new();
    let mut s = rest;
    while !s.is_empty() {
        let (k, v) = s.split_once('=')?;
        let v = v.trim_start();
        let (val, next) = if let Some(q) = v.strip_prefix('"') {
            let end = q.find('"')?;
            (&q[..end], q[end + 1..].trim_start_matches(',').trim_start())
        } else {
            match v.split_once(',') {
                Some((a, b)) => (a, b.trim_start()),
                None => (v, ""),
            }
        };
        out.insert(k.trim().to_ascii_lowercase(), val.to_string());
        s = next;
    }
    Some(out)
}

impl Client {
    pub fn new(r: &Reference, insecure: bool) -> Client {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(15))
            .timeout_read(Duration::from_secs(60))
            .redirects(5)
            .build();
        let scheme = if insecure { "http" } else { "https" };
        Client {
            agent,
            base: format!("{scheme}://{}", r.registry),
            repository: r.repository.clone(),
            token: Mutex::new(None),
        }
    }

    /// GET with auth and retries on transient failures.
    fn get(&self, path: &str, accept: Option<&str>) -> Result<ureq::Response, Error> {
        let url = format!("{}/v2/{}/{path}", self.base, self.repository);
        let mut last = String::new();
        for attempt in 0..4 {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(300 << attempt));
            }
            let mut req = self.agent.get(&url);
            if let Some(a) = accept {
                req = req.set("Accept", a);
            }
            if let Some(t) = self.token.lock().expect("token lock").clone() {
                req = req.set("Authorization", &format!("Bearer {t}"));
            }
            match req.call() {
                Ok(resp) => return Ok(resp),
                Err(ureq::Error::Status(401, resp)) => {
                    let challenge = resp.header("www-authenticate").unwrap_or("").to_string();
                    self.authenticate(&challenge)?;
                    last = format!("{url}: 401 Unauthorized");
                }
                Err(ureq::Error::Status(code, resp)) if code == 429 || code >= 500 => {
                    last = format!("{url}: {code} {}", resp.status_text());
                }
                Err(ureq::Error::Status(code, resp)) => {
                    let body = resp.into_string().unwrap_or_default();
                    return Err(err(format!("{url}: {code}: {}", body.trim())));
                }
                Err(ureq::Error::Transport(t)) => last = format!("{url}: {t}"),
            }
        }
        Err(err(format!("giving up after 4 tries: {last}")))
    }

    fn authenticate(&self, challenge: &str) -> Result<(), Error> {
        let p = parse_challenge(challenge).ok_or_else(|| err(format!("unsupported auth challenge {challenge:?}")))?;
        let realm = p.get("realm").ok_or_else(|| err("auth challenge without a realm"))?;
        let mut req = self.agent.get(realm);
        if let Some(s) = p.get("service") {
            req = req.query("service", s);
        }
        let scope = p.get("scope").cloned().unwrap_or_else(|| format!("repository:{}:pull", self.repository));
        req = req.query("scope", &scope);
        let text = req
            .call()
            .map_err(|e| err(format!("token from {realm}: {e}")))?
            .into_string()
            .map_err(|e| err(format!("token from {realm}: {e}")))?;
        let body: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| err(format!("token from {realm}: {e}")))?;
        let token = body
            .get("token")
            .or_else(|| body.get("access_token"))
            .and_then(|t| t.as_str())
            .ok_or_else(|| err(format!("token from {realm}: no token in the answer")))?;
        *self.token.lock().expect("token lock") = Some(token.to_string());
        Ok(())
    }

    fn read_small(&self, path: &str, accept: Option<&str>) -> Result<(Vec<u8>, String), Error> {
        let resp = self.get(path, accept)?;
        let media = resp.content_type().to_string();
        let mut body = Vec::new();
        resp.into_reader().take(16 << 20).read_to_end(&mut body).map_err(|e| err(format!("{path}: {e}")))?;
        Ok((body, media))
    }

    /// Downloads blob `digest` into the cache, verified; no-op when already there.
    fn fetch_blob(&self, cache: &Path, digest: &str, size: Option<u64>) -> Result<(), Error> {
        let dest = cache.join(driver_core::image::blob_path(digest).map_err(|e| err(e.to_string()))?);
        if dest.exists() {
            return Ok(());
        }
        fs::create_dir_all(dest.parent().expect("parent")).map_err(Error::new)?;
        let tmp = dest.with_extension(format!("part-{}", std::process::id()));
        let result = (|| {
            let resp = self.get(&format!("blobs/{digest}"), None)?;
            let mut r = VerifyingReader::new(resp.into_reader(), digest, size, format!("blob {digest}"));
            let mut f = fs::File::create(&tmp).map_err(|e| Error::new(e).with_path(&tmp))?;
            io::copy(&mut r, &mut f).map_err(|e| err(format!("{e}")))?;
            f.flush().map_err(Error::new)?;
            fs::rename(&tmp, &dest).map_err(|e| Error::new(e).with_path(&dest))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }
}

fn digest_of(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Pulls `reference` into the blob cache; returns the cache as a blob source and the
/// image, with every layer that `driver` lacks downloaded.
pub fn pull(
    reference: &str,
    insecure: bool,
    cache: &Path,
    driver: &dyn Driver,
) -> Result<(LayoutDir, Image, String), Error> {
    let r = Reference::parse(reference)?;
    let client = Client::new(&r, insecure);
    let arch = driver_core::image::host_arch();
    let (mut body, mut media) = client.read_small(&format!("manifests/{}", r.reference), Some(ACCEPT))?;
    if r.reference.starts_with("sha256:") && digest_of(&body) != r.reference {
        return Err(err(format!("manifest {} does not match its digest", r.reference)));
    }
    if media.contains("index") || media.contains("manifest.list") {
        let index: serde_json::Value = serde_json::from_slice(&body).map_err(|e| err(format!("index: {e}")))?;
        let pick = index["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["platform"]["os"] == "linux" && m["platform"]["architecture"] == arch)
            .ok_or_else(|| err(format!("{reference}: no manifest for linux/{arch}")))?;
        let digest = pick["digest"].as_str().unwrap_or_default().to_string();
        (body, media) = client.read_small(&format!("manifests/{digest}"), Some(ACCEPT))?;
        if digest_of(&body) != digest {
            return Err(err(format!("manifest {digest} does not match its digest")));
        }
    }
    let _ = media;
    // Keep the manifest and config in the cache, so the image reads like a layout.
    let manifest: serde_json::Value = serde_json::from_slice(&body).map_err(|e| err(format!("manifest: {e}")))?;
    let mdigest = digest_of(&body);
    let mpath = cache.join(driver_core::image::blob_path(&mdigest).map_err(|e| err(e.to_string()))?);
    fs::create_dir_all(mpath.parent().expect("parent")).map_err(Error::new)?;
    fs::write(&mpath, &body).map_err(|e| Error::new(e).with_path(&mpath))?;
    let cfg = manifest["config"]["digest"].as_str().ok_or_else(|| err("manifest without a config"))?;
    client.fetch_blob(cache, cfg, manifest["config"]["size"].as_u64())?;
    let source = LayoutDir { dir: cache.to_path_buf() };
    // Resolve without the layers first (image_from_manifest reads only the config).
    let image = image_from_manifest(&source, reference, r.name(), &body)?;
    let missing: Vec<usize> = (0..image.layers.len()).filter(|&i| driver.get(&image.chain_ids[i]).is_err()).collect();
    // A few blobs at once, as docker and containerd do.
    let next = Mutex::new(missing.into_iter());
    let failure: Mutex<Option<Error>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| loop {
                let Some(i) = next.lock().expect("lock").next() else { break };
                let l = &image.layers[i];
                let digest = l.digest.clone().unwrap_or_default();
                if let Err(e) = client.fetch_blob(cache, &digest, l.size) {
                    failure.lock().expect("lock").get_or_insert(e);
                    break;
                }
            });
        }
    });
    if let Some(e) = failure.into_inner().expect("lock") {
        return Err(e);
    }
    let name = image.name.clone();
    Ok((source, image, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_short_names_resolve_as_docker_does() {
        let r = Reference::parse("debian:12").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.reference.as_str()),
            ("registry-1.docker.io", "library/debian", "12")
        );
        assert_eq!(r.name(), "docker.io/library/debian:12");
        let r = Reference::parse("user/app").unwrap();
        assert_eq!((r.repository.as_str(), r.reference.as_str()), ("user/app", "latest"));
        let r = Reference::parse("127.0.0.1:5000/team/app:v1").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.reference.as_str()),
            ("127.0.0.1:5000", "team/app", "v1")
        );
        let r = Reference::parse("localhost/app@sha256:abc").unwrap();
        assert_eq!((r.registry.as_str(), r.reference.as_str()), ("localhost", "sha256:abc"));
        assert!(Reference::parse("Upper/Case").is_err());
    }

    #[test]
    fn parses_bearer_challenges() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull""#,
        )
        .unwrap();
        assert_eq!(c["realm"], "https://auth.example/token");
        assert_eq!(c["service"], "registry.example");
        assert_eq!(c["scope"], "repository:a/b:pull");
        assert!(parse_challenge("Basic realm=x").is_none());
    }
}
