//! The HTTP client of one registry: requests with redirects followed by hand, retries,
//! the auth handshake, bounded manifests and verified blobs.

use std::fs;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::digest::Digest;
use crate::reference::{is_tag, Reference};
pub(super) use driver_core::digest::sha256 as digest_of;
use sha2::{Digest as _, Sha256, Sha512};
use url::Url;

use super::auth::{basic, parse_challenge, Credential};
use super::bounds::{Limits, ACCEPT, MAX_ERROR_BODY, MAX_MANIFEST, MAX_REDIRECTS, MAX_TOKEN_ANSWER, TRIES};
use super::error::{one_line, transport_failure, Error, Failure, Status};
use super::progress::{Counted, Progress};
use super::redirect::{check_target, origin};
use super::staging::PullSource;

/// Whether `data` has digest `d` (a validated sha256 or sha512 digest).
/// A token server's answer (the distribution spec's token authentication): `token`, or
/// OAuth2's `access_token`; the rest (`expires_in`, `issued_at`) is not used.
#[derive(serde::Deserialize)]
struct TokenAnswer {
    token: Option<String>,
    access_token: Option<String>,
}

fn digest_matches(data: &[u8], d: &str) -> bool {
    match d.split_once(':') {
        Some(("sha256", hex)) => hex::encode(Sha256::digest(data)) == hex,
        Some(("sha512", hex)) => hex::encode(Sha512::digest(data)) == hex,
        _ => false,
    }
}

pub(super) struct Client {
    pub(super) agent: ureq::Agent,
    pub(super) base: Url,
    pub(super) insecure: bool,
    pub(super) repository: String,
    /// What is presented to the registry: `--creds` or a credential from the files.
    pub(super) credential: Option<Credential>,
    /// The `Authorization` header the registry accepted (or last asked for).
    pub(super) authorization: Mutex<Option<String>>,
    pub(super) progress: Arc<Progress>,
    /// What a token is asked for when the challenge names no scope: `pull`, or
    /// `pull,push` for a push.
    pub(super) actions: &'static str,
}

impl Client {
    pub(super) fn new(
        r: &Reference,
        insecure: bool,
        credential: Option<Credential>,
        limits: &Limits,
        progress: Arc<Progress>,
    ) -> Result<Client, Error> {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(limits.low_speed_time.min(Duration::from_secs(15)))
            // No read may block longer than the watchdog's window (it cannot interrupt
            // a blocked read; this ends it).
            .timeout_read(limits.low_speed_time)
            .timeout(limits.timeout)
            // Redirects are followed in `send`, where their targets are checked: ureq 2
            // panics on a `Location: file:///…` (a URL without a host).
            .redirects(0)
            .build();
        let scheme = if insecure { "http" } else { "https" };
        let base = Url::parse(&format!("{scheme}://{}/", r.registry()))
            .map_err(|source| Error::Url { what: format!("registry {}", r.registry()), source })?;
        Ok(Client {
            agent,
            base,
            insecure,
            repository: r.repository().to_string(),
            credential,
            authorization: Mutex::new(None),
            progress,
            actions: "pull",
        })
    }

    pub(super) fn counted<'a>(&self, resp: ureq::Response) -> Counted<Box<dyn Read + Send + Sync + 'a>> {
        Counted { inner: resp.into_reader(), progress: self.progress.clone() }
    }

    /// Reads a whole body of at most `limit` bytes.
    pub(super) fn read_bounded(&self, resp: ureq::Response, limit: u64, what: &str) -> Result<Vec<u8>, Error> {
        let too_big = || Error::TooLarge { what: what.to_string(), limit };
        if resp.header("content-length").and_then(|l| l.trim().parse::<u64>().ok()).is_some_and(|l| l > limit) {
            return Err(too_big());
        }
        let mut body = Vec::new();
        self.counted(resp)
            .take(limit + 1)
            .read_to_end(&mut body)
            .map_err(|source| Error::Read { what: what.to_string(), source })?;
        if body.len() as u64 > limit {
            return Err(too_big());
        }
        Ok(body)
    }

    /// One request (a GET, or a POST of `form`), following redirects to checked
    /// targets. `authorization` goes only to the registry's own origin, never to
    /// another host or port a redirect or a token realm names. `registry`: the URL is
    /// the registry's API, whose 401 is a challenge to answer.
    pub(super) fn send(
        &self,
        url: Url,
        accept: Option<&str>,
        authorization: Option<&str>,
        form: Option<&[(&str, &str)]>,
        registry: bool,
    ) -> Result<ureq::Response, Failure> {
        let mut url = url;
        for _ in 0..=MAX_REDIRECTS {
            let mut req = self.agent.request_url(if form.is_some() { "POST" } else { "GET" }, &url);
            if let Some(a) = accept {
                req = req.set("Accept", a);
            }
            if let Some(a) = authorization.filter(|_| origin(&url) == origin(&self.base)) {
                req = req.set("Authorization", a);
            }
            let shown = one_line(url.as_str(), 200);
            let answer = match form {
                Some(f) => req.send_form(f),
                None => req.call(),
            };
            match answer {
                Ok(resp) if (300..400).contains(&resp.status()) => {
                    let location = resp.header("location").unwrap_or_default().to_string();
                    let next = url.join(&location).map_err(|source| {
                        Failure::Fatal(Error::BadLocation {
                            what: shown.clone(),
                            header: "redirect to",
                            location: one_line(&location, 200),
                            source,
                        })
                    })?;
                    check_target(&next, self.insecure, &format!("{shown}: redirect")).map_err(Failure::Fatal)?;
                    url = next;
                }
                Ok(resp) if resp.status() < 300 => return Ok(resp),
                Ok(resp) => return Err(Failure::Fatal(Error::UnexpectedStatus { what: shown, status: resp.status() })),
                Err(ureq::Error::Status(401, resp)) if registry && origin(&url) == origin(&self.base) => {
                    return Err(Failure::Unauthorized(resp.header("www-authenticate").unwrap_or("").to_string()));
                }
                Err(ureq::Error::Status(code, resp)) if code == 429 || code >= 500 => {
                    let text = format!("{shown}: {code} {}", one_line(resp.status_text(), 100));
                    return Err(Failure::Transient(Some(code), text));
                }
                Err(ureq::Error::Status(code, resp)) => {
                    let body = self.read_bounded(resp, MAX_ERROR_BODY, "error answer").unwrap_or_default();
                    return Err(Failure::Status(code, body));
                }
                Err(ureq::Error::Transport(t)) => return Err(transport_failure(&url, &t)),
            }
        }
        Err(Failure::Fatal(Error::TooManyRedirects { what: one_line(url.as_str(), 200), max: MAX_REDIRECTS }))
    }

    /// GET `/v2/<repository>/<kind>/<what>` with auth and retries on transient
    /// failures. `what` is a validated tag or digest: nothing else reaches the path.
    pub(super) fn get(&self, kind: &str, what: &str, accept: Option<&str>) -> Result<ureq::Response, Error> {
        debug_assert!(is_tag(what) || Digest::parse(what).is_ok());
        let url = self
            .base
            .join(&format!("v2/{}/{kind}/{what}", self.repository))
            .map_err(|source| Error::Url { what: self.base.to_string(), source })?;
        let (mut last, mut last_status) = (String::new(), None);
        let mut answered = false;
        for attempt in 0..TRIES {
            if attempt > 0 && !answered {
                std::thread::sleep(Duration::from_millis(300 << attempt));
            }
            if self.progress.cancelled.load(Ordering::SeqCst) {
                return Err(Error::Stopped);
            }
            let authorization = self.authorization.lock().expect("authorization lock").clone();
            match self.send(url.clone(), accept, authorization.as_deref(), None, true) {
                Ok(resp) => return Ok(resp),
                Err(Failure::Unauthorized(challenge)) => {
                    if answered {
                        // What was just obtained is refused: more tries will not help.
                        return Err(self.refused());
                    }
                    self.authenticate(&challenge)?;
                    answered = true;
                    (last, last_status) = (format!("{url}: 401 Unauthorized"), Some(401));
                }
                Err(Failure::Transient(status, msg)) => (last, last_status) = (msg, status),
                // As skopeo says it: `manifest unknown: host/repo:tag`.
                Err(Failure::Status(code, body)) => {
                    let sep = if what.contains(':') { '@' } else { ':' };
                    let subject = format!("{}{sep}{what}", self.shown_repository());
                    let status = Status { manifest: kind == "manifests", ..Status::new(code, &body, subject, false) };
                    return Err(status.into());
                }
                Err(Failure::Fatal(e)) => return Err(e),
            }
        }
        Err(Error::GaveUp { tries: TRIES, status: last_status, last, cause: None })
    }

    /// `host[:port]` of the registry, as the user wrote it.
    pub(super) fn host(&self) -> String {
        let host = self.base.host_str().unwrap_or_default();
        match self.base.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        }
    }

    /// `host[:port]/repository`.
    pub(super) fn shown_repository(&self) -> String {
        format!("{}/{}", self.host(), self.repository)
    }

    /// The error for a registry that refuses what strata presented (or nothing).
    pub(super) fn refused(&self) -> Error {
        let host = self.host();
        match &self.credential {
            Some(_) => Error::CredentialsRefused { host },
            None => Error::NeedsCredentials { host },
        }
    }

    /// Answers a 401's challenge: `Basic` with the credentials, `Bearer` with a token
    /// from its realm (asked with the credentials only if the realm is on the
    /// registry's own origin).
    pub(super) fn authenticate(&self, challenge: &str) -> Result<(), Error> {
        let (scheme, p) = parse_challenge(challenge)
            .ok_or_else(|| Error::Challenge(format!("unsupported auth challenge {:?}", one_line(challenge, 200))))?;
        if scheme == "basic" {
            let header = match &self.credential {
                Some(Credential::Password { user, password }) => basic(user, password),
                Some(Credential::IdentityToken(_)) => return Err(Error::NeedsPassword),
                None => return Err(self.refused()),
            };
            *self.authorization.lock().expect("authorization lock") = Some(header);
            return Ok(());
        }
        let realm = p.get("realm").ok_or_else(|| Error::Challenge("auth challenge without a realm".into()))?;
        let mut url = Url::parse(realm)
            .map_err(|source| Error::Url { what: format!("auth realm {:?}", one_line(realm, 200)), source })?;
        check_target(&url, self.insecure, "auth realm: token request")?;
        let scope =
            p.get("scope").cloned().unwrap_or_else(|| format!("repository:{}:{}", self.repository, self.actions));
        let shown = one_line(realm, 200);
        let answer = match &self.credential {
            // The OAuth2 refresh-token grant docker uses for identity tokens.
            Some(Credential::IdentityToken(t)) if origin(&url) == origin(&self.base) => {
                let service = p.get("service").map(String::as_str).unwrap_or_default();
                let form = [
                    ("grant_type", "refresh_token"),
                    ("refresh_token", t.as_str()),
                    ("service", service),
                    ("scope", scope.as_str()),
                    ("client_id", "strata"),
                ];
                self.send(url, None, None, Some(&form), false)
            }
            credential => {
                {
                    let mut q = url.query_pairs_mut();
                    if let Some(s) = p.get("service") {
                        q.append_pair("service", s);
                    }
                    q.append_pair("scope", &scope);
                }
                let basic = match credential {
                    Some(Credential::Password { user, password }) => Some(basic(user, password)),
                    _ => None,
                };
                // `send` drops the credentials if the realm is elsewhere.
                self.send(url, None, basic.as_deref(), None, false)
            }
        };
        let token_error = |why: String| Error::Token { realm: shown.clone(), why };
        let resp = match answer {
            Ok(r) => r,
            Err(Failure::Fatal(e)) => return Err(Error::TokenRequest { realm: shown.clone(), source: Box::new(e) }),
            Err(Failure::Status(code, body)) => {
                return Err(Status::new(code, &body, format!("token from {shown}"), true).into())
            }
            Err(Failure::Transient(_, m) | Failure::Unauthorized(m)) => return Err(token_error(m)),
        };
        let text = self.read_bounded(resp, MAX_TOKEN_ANSWER, &format!("token answer from {shown}"))?;
        let body: TokenAnswer = serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(&text))
            .map_err(|e| token_error(format!("{}: {}", e.path(), e.inner())))?;
        let token = body.token.or(body.access_token).ok_or_else(|| token_error("no token in the answer".into()))?;
        // It goes into a header: visible ASCII only, or it could smuggle headers in.
        if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(token_error("not a valid bearer token (empty or not printable ASCII)".into()));
        }
        *self.authorization.lock().expect("authorization lock") = Some(format!("Bearer {token}"));
        Ok(())
    }

    /// A manifest or index by tag or digest, at most [`MAX_MANIFEST`], checked against
    /// the digest it was asked by, or else against `Docker-Content-Digest` when the
    /// registry sends one. Returns the body and the media type the header gives.
    pub(super) fn manifest(&self, reference: &str) -> Result<(Vec<u8>, String), Error> {
        let resp = self.get("manifests", reference, Some(ACCEPT))?;
        let media = resp.content_type().to_string();
        let claimed = resp.header("docker-content-digest").map(str::to_string);
        let body = self.read_bounded(resp, MAX_MANIFEST, &format!("manifest {reference}"))?;
        if reference.contains(':') && !digest_matches(&body, reference) {
            return Err(Error::DigestMismatch {
                what: format!("manifest {reference}"),
                want: reference.to_string(),
                got: digest_like(&body, reference),
            });
        }
        if let Some(claimed) = claimed {
            let claimed = claimed.trim();
            Digest::parse(claimed)
                .map_err(|e| Error::digest(format!("manifest {reference}: Docker-Content-Digest: "), e))?;
            if !digest_matches(&body, claimed) {
                return Err(Error::ClaimedDigest {
                    what: format!("manifest {reference}"),
                    claimed: claimed.to_string(),
                    got: digest_like(&body, claimed),
                });
            }
        }
        Ok((body, media))
    }

    /// Downloads blob `digest` into `staging`, verified, unless it is in the cache
    /// already. A broken connection is retried; a wrong digest or size is not, nor a
    /// file that cannot be written.
    pub(super) fn fetch_blob(&self, blobs: &PullSource, digest: &str, size: Option<u64>) -> Result<(), Error> {
        let parsed = Digest::parse(digest).map_err(|e| Error::digest("", e))?;
        if !digest.starts_with("sha256:") {
            return Err(Error::protocol(format!("blob {digest}"), "only sha256 blobs are supported"));
        }
        let rel = parsed.blob_path();
        if blobs.cache.join(&rel).exists() || blobs.staging.join(&rel).exists() {
            return Ok(());
        }
        let dest = blobs.staging.join(&rel);
        let tmp = dest.with_extension(format!("part-{:?}", std::thread::current().id()).replace(['(', ')'], ""));
        let (mut last, mut cause) = (String::new(), None);
        for attempt in 0..TRIES {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(300 << attempt));
            }
            let resp = self.get("blobs", digest, None)?;
            match self.download(resp, &tmp, digest, size) {
                Ok(()) => return fs::rename(&tmp, &dest).map_err(Error::file(&dest)),
                Err(e) => {
                    let _ = fs::remove_file(&tmp);
                    let e = match e {
                        // A wrong digest or size is final, and so is a full disk.
                        Attempt::Final(e) => return Err(e),
                        Attempt::Cut(e) => e,
                    };
                    if self.progress.cancelled.load(Ordering::SeqCst) {
                        return Err(Error::Read { what: format!("blob {digest}"), source: e });
                    }
                    // A broken or cut connection is tried again.
                    last = format!("blob {digest}: {}", one_line(&e.to_string(), 400));
                    cause = Some(e);
                }
            }
        }
        Err(Error::GaveUp { tries: TRIES, status: None, last, cause })
    }

    /// One try at blob `digest`: the body into `tmp`, hashed and counted as it comes
    /// (more than `size` bytes is refused at once), then checked.
    fn download(&self, resp: ureq::Response, tmp: &Path, digest: &str, size: Option<u64>) -> Result<(), Attempt> {
        let what = || format!("blob {digest}");
        let mut body = self.counted(resp);
        // No create_dir_all: once the staging folder is gone, a late thread fails here.
        let mut f = fs::File::create(tmp).map_err(|e| Attempt::Final(Error::file(tmp)(e)))?;
        let (mut hash, mut got) = (Sha256::new(), 0u64);
        let mut buf = vec![0u8; 256 << 10];
        loop {
            let n = match body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Attempt::Cut(e)),
            };
            got += n as u64;
            if let Some(want) = size.filter(|want| got > *want) {
                return Err(Attempt::Final(Error::TooLong { what: what(), want }));
            }
            hash.update(&buf[..n]);
            f.write_all(&buf[..n]).map_err(|e| Attempt::Final(Error::file(tmp)(e)))?;
        }
        f.flush().map_err(|e| Attempt::Final(Error::file(tmp)(e)))?;
        if let Some(want) = size.filter(|want| got != *want) {
            return Err(Attempt::Final(Error::Truncated { what: what(), want, got }));
        }
        let computed = format!("sha256:{}", hex::encode(hash.finalize()));
        if computed != digest {
            return Err(Attempt::Final(Error::DigestMismatch { what: what(), want: digest.into(), got: computed }));
        }
        Ok(())
    }
}

/// How one try at a blob failed.
enum Attempt {
    /// The connection broke or was cut: worth another try.
    Cut(io::Error),
    Final(Error),
}

/// The digest of `data` in the algorithm of `like` (sha512 or else sha256).
fn digest_like(data: &[u8], like: &str) -> String {
    if like.starts_with("sha512:") {
        format!("sha512:{}", hex::encode(Sha512::digest(data)))
    } else {
        digest_of(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_match_their_content() {
        let data = b"manifest";
        assert!(digest_matches(data, &digest_of(data)));
        assert!(digest_matches(data, &format!("sha512:{}", hex::encode(Sha512::digest(data)))));
        assert!(!digest_matches(b"other", &digest_of(data)));
    }
}
