//! `strata image push`: the OCI distribution push protocol.
//!
//! Every blob of the image (layers, then config), one after another:
//! 1. `HEAD /v2/<repo>/blobs/<digest>`: 200, the registry has it, nothing is sent;
//! 2. else, when a repository of the same registry is known to hold it (strata pushed
//!    it there or pulled it from there: [`ContentStore::locations`]), a cross-repository
//!    mount, `POST /v2/<repo>/blobs/uploads/?mount=<digest>&from=<other>`: 201 means
//!    mounted; 202 is a registry declining, and the upload session it opened is used;
//! 3. else an upload: `POST /v2/<repo>/blobs/uploads/` opens a session (202 and a
//!    `Location`), then either one `PUT <location>?digest=<digest>` with the whole blob
//!    (monolithic), or `PATCH`es of [`PushOptions::chunk_size`] bytes with their
//!    `Content-Range` (each answer gives the next `Location`) and a closing, empty `PUT`.
//!
//! The manifest goes last, as the bytes the content store keeps (so its digest is the
//! one strata has, which the registry's `Docker-Content-Digest` must confirm), once
//! every blob it names is in the repository.
//!
//! Auth is pull's (`--creds`, auth files, helpers); a token is asked for `pull,push`. A
//! `Location` is checked as a redirect is (http(s), a host, no downgrade), and the
//! `Authorization` header goes only to the registry's own scheme, host and port: an
//! upload location on another host gets the blob, never a credential, and a blob's
//! `HEAD` redirected to another host (an object store) is followed without one.
//!
//! [`ContentStore::locations`]: crate::content::ContentStore::locations

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::time::Duration;

use url::Url;

use crate::images::ImageStore;
use crate::reference::{is_path_component, Reference};

use super::auth::AuthOptions;
use super::bounds::{Limits, MAX_ERROR_BODY, MAX_MANIFEST, MAX_REDIRECTS, OCI_MANIFEST, TRIES};
use super::client::Client;
use super::error::{one_line, transport_failure, Error, Failure, Status};
use super::redirect::{check_target, origin};

/// How `image push` talks to the registry.
#[derive(Clone, Debug)]
pub struct PushOptions {
    /// Plain http (a local registry).
    pub insecure: bool,
    /// Blobs larger than this go in `PATCH`es of this size; smaller ones in one `PUT`.
    pub chunk_size: u64,
    /// The longest one request may take.
    pub timeout: Duration,
}

/// What happened to one blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlobPush {
    /// The repository had it.
    Exists,
    /// Mounted from this repository of the same registry.
    Mounted(String),
    /// Sent, in this many requests (1: monolithic).
    Uploaded { bytes: u64, requests: usize },
}

/// What [`push`] did.
#[derive(Debug)]
pub struct Pushed {
    /// The manifest's digest, as the registry confirmed it.
    pub digest: String,
    /// Each blob of the image (layers, then config) and what was done with it.
    pub blobs: Vec<(String, u64, BlobPush)>,
}

/// A request body, made again for each try.
type Body<'a> = &'a dyn Fn() -> Result<(Box<dyn Read + Send + 'a>, u64), Error>;

impl Client {
    /// One request of a push. A 401 from the registry is answered (once) and the
    /// request made again; 5xx, 429 and broken connections are tried again when
    /// `retry` (not for a `PATCH` or `PUT` inside an upload session, whose state a
    /// half-done request may have moved). Any other status is returned to the caller.
    fn call(
        &self,
        method: &str,
        url: &Url,
        headers: &[(&str, &str)],
        body: Option<Body>,
        retry: bool,
    ) -> Result<(u16, ureq::Response), Error> {
        let shown = format!("{method} {}", one_line(url.as_str(), 200));
        let mut answered = false;
        let (mut last, mut last_status) = (String::new(), None);
        let mut attempt = 0;
        let (mut url, mut redirects) = (url.clone(), 0);
        let url = &mut url;
        while attempt < TRIES {
            let mut req = self.agent.request_url(method, url);
            for (k, v) in headers {
                req = req.set(k, v);
            }
            let authorization = self.authorization.lock().expect("authorization lock").clone();
            if let Some(a) = authorization.filter(|_| origin(url) == origin(&self.base)) {
                req = req.set("Authorization", &a);
            }
            let answer = match body {
                Some(make) => {
                    let (reader, len) = make()?;
                    req.set("Content-Length", &len.to_string()).send(reader)
                }
                None => req.call(),
            };
            match answer {
                // A registry whose blobs live in an object store redirects a blob's
                // HEAD there (distribution with `redirect` storage): followed as a
                // pull follows one, the Authorization staying with the registry.
                Ok(resp) if (300..400).contains(&resp.status()) && matches!(method, "HEAD" | "GET") => {
                    let location = resp.header("location").unwrap_or_default().to_string();
                    let next = url.join(&location).map_err(|source| Error::BadLocation {
                        what: shown.clone(),
                        header: "redirect to",
                        location: one_line(&location, 200),
                        source,
                    })?;
                    check_target(&next, self.insecure, &format!("{shown}: redirect"))?;
                    redirects += 1;
                    if redirects > MAX_REDIRECTS {
                        return Err(Error::TooManyRedirects { what: shown, max: MAX_REDIRECTS });
                    }
                    *url = next;
                    continue;
                }
                Ok(resp) => return Ok((resp.status(), resp)),
                Err(ureq::Error::Status(401, resp)) if origin(url) == origin(&self.base) => {
                    if answered {
                        return Err(self.refused());
                    }
                    self.authenticate(resp.header("www-authenticate").unwrap_or(""))?;
                    answered = true;
                    continue;
                }
                Err(ureq::Error::Status(code, resp)) if retry && (code == 429 || code >= 500) => {
                    last = format!("{shown}: {code} {}", one_line(resp.status_text(), 100));
                    last_status = Some(code);
                }
                Err(ureq::Error::Status(code, resp)) => return Ok((code, resp)),
                Err(ureq::Error::Transport(t)) => match transport_failure(url, &t) {
                    Failure::Transient(status, m) if retry => (last, last_status) = (m, status),
                    Failure::Transient(_, m) => return Err(Error::Transport { what: shown, detail: m }),
                    Failure::Fatal(e) => return Err(e),
                    Failure::Status(status, _) => return Err(Error::UnexpectedStatus { what: shown, status }),
                    Failure::Unauthorized(_) => return Err(self.refused()),
                },
            }
            attempt += 1;
            if attempt < TRIES {
                std::thread::sleep(Duration::from_millis(300 << attempt));
            }
        }
        Err(Error::GaveUp { tries: TRIES, status: last_status, last, cause: None })
    }

    /// The error of an answer's status, from the registry's answer.
    fn failed(&self, what: &str, code: u16, resp: ureq::Response) -> Error {
        let body = self.read_bounded(resp, MAX_ERROR_BODY, "error answer").unwrap_or_default();
        Status::new(code, &body, what.to_string(), true).into()
    }

    fn api(&self, path: &str) -> Result<Url, Error> {
        self.base
            .join(&format!("v2/{}/{path}", self.repository))
            .map_err(|source| Error::Url { what: self.base.to_string(), source })
    }

    /// The upload location a 202 names, checked as a redirect target is.
    fn location(&self, from: &Url, resp: &ureq::Response, what: &str) -> Result<Url, Error> {
        let loc = resp.header("location").ok_or_else(|| Error::protocol(what, "the registry gave no Location"))?;
        let url = from.join(loc).map_err(|source| Error::BadLocation {
            what: what.to_string(),
            header: "Location",
            location: one_line(loc, 200),
            source,
        })?;
        check_target(&url, self.insecure, &format!("{what}: upload")).map(|_| url)
    }

    /// Whether the repository holds blob `digest`.
    fn has_blob(&self, digest: &str) -> Result<bool, Error> {
        let url = self.api(&format!("blobs/{digest}"))?;
        match self.call("HEAD", &url, &[], None, true)? {
            (200, _) => Ok(true),
            (404, _) => Ok(false),
            (code, resp) => Err(self.failed(&format!("blob {digest}: {}", self.shown_repository()), code, resp)),
        }
    }

    /// Opens an upload session: with `mount_from`, asks for a cross-repository mount
    /// first. `Ok(None)`: mounted.
    fn open_upload(&self, digest: &str, mount_from: Option<&str>) -> Result<Option<Url>, Error> {
        let mut url = self.api("blobs/uploads/")?;
        if let Some(from) = mount_from {
            url.query_pairs_mut().append_pair("mount", digest).append_pair("from", from);
        }
        let what = format!("blob {digest}: {}", self.shown_repository());
        match self.call("POST", &url, &[], Some(&|| Ok((Box::new(std::io::empty()), 0))), true)? {
            (201, _) if mount_from.is_some() => Ok(None),
            (202, resp) => self.location(&url, &resp, &what).map(Some),
            (code, resp) => Err(self.failed(&what, code, resp)),
        }
    }

    /// Sends blob `digest` (`size` bytes at `path`) into the session at `session`;
    /// returns the number of requests it took.
    fn upload(
        &self,
        session: Url,
        path: &std::path::Path,
        digest: &str,
        size: u64,
        chunk: u64,
    ) -> Result<usize, Error> {
        let what = format!("blob {digest}: {}", self.shown_repository());
        let part = |offset: u64, len: u64| -> Result<(Box<dyn Read + Send>, u64), Error> {
            let mut f = File::open(path).map_err(Error::file(path))?;
            f.seek(SeekFrom::Start(offset)).map_err(Error::file(path))?;
            Ok((Box::new(f.take(len)), len))
        };
        let octets = [("Content-Type", "application/octet-stream")];
        let with_digest = |u: &Url| {
            let mut u = u.clone();
            u.query_pairs_mut().append_pair("digest", digest);
            u
        };
        if size <= chunk {
            let url = with_digest(&session);
            return match self.call("PUT", &url, &octets, Some(&|| part(0, size)), false)? {
                (201, _) => Ok(1),
                (code, resp) => Err(self.failed(&what, code, resp)),
            };
        }
        let (mut session, mut offset, mut requests) = (session, 0u64, 0);
        while offset < size {
            let len = chunk.min(size - offset);
            let range = format!("{}-{}", offset, offset + len - 1);
            let headers = [octets[0], ("Content-Range", range.as_str())];
            match self.call("PATCH", &session, &headers, Some(&|| part(offset, len)), false)? {
                (202, resp) => session = self.location(&session, &resp, &what)?,
                (code, resp) => return Err(self.failed(&what, code, resp)),
            }
            offset += len;
            requests += 1;
        }
        let url = with_digest(&session);
        match self.call("PUT", &url, &[], Some(&|| Ok((Box::new(std::io::empty()), 0))), false)? {
            (201, _) => Ok(requests + 1),
            (code, resp) => Err(self.failed(&what, code, resp)),
        }
    }
}

/// Pushes the stored image `name` to `reference` (a tag, or the manifest's own
/// digest). `report` is told what happened to each blob as it happens.
pub fn push(
    images: &ImageStore,
    name: &str,
    reference: &str,
    auth: &AuthOptions,
    opts: &PushOptions,
    report: &dyn Fn(&str, u64, &BlobPush),
) -> Result<Pushed, Error> {
    let r = Reference::parse_docker(reference)?;
    let rec = images.get(name)?;
    let img = images.content.load(&rec.name, rec.manifest.as_deref())?;
    if r.by_digest() && r.reference() != img.manifest_digest {
        return Err(Error::PushDigest {
            name: name.into(),
            reference: reference.into(),
            manifest: img.manifest_digest.clone(),
        });
    }
    let limits = Limits { timeout: opts.timeout, low_speed_limit: 0, low_speed_time: opts.timeout };
    let mut client = Client::new(&r, opts.insecure, auth.credential_for(r.registry())?, &limits, Default::default())?;
    client.actions = "pull,push";

    // Where a blob may be mounted from: repositories of this registry that hold it,
    // the one the image was pulled from among them.
    let sources_of = |digest: &str| -> Vec<String> {
        let mut from = images.content.locations(r.registry(), digest);
        if let Ok(own) = rec.name.parse::<Reference>() {
            if own.registry() == r.registry() && !from.iter().any(|f| f == own.repository()) {
                from.push(own.repository().to_string());
            }
        }
        from.retain(|f| f != r.repository() && f.split('/').all(is_path_component));
        from
    };

    let mut blobs: Vec<(String, u64)> = Vec::new();
    for l in img.layers() {
        let d = l.digest().to_string();
        if !blobs.iter().any(|(b, _)| *b == d) {
            blobs.push((d, l.size()));
        }
    }
    let config_size = img.manifest.config().size();
    blobs.push((img.config_digest.clone(), config_size));

    let mut done = Vec::new();
    for (digest, _) in &blobs {
        crate::digest::Digest::parse(digest).map_err(|e| Error::digest("", e))?;
        let path = images.content.path(digest)?;
        // The size on disk: what is sent (the store verified the blob when it kept it).
        let size = std::fs::metadata(&path).map_err(Error::file(&path))?.len();
        let outcome = if client.has_blob(digest)? {
            BlobPush::Exists
        } else {
            // One mount is asked for, from the repository that last held the blob:
            // a registry that declines answers 202 with an upload session.
            let mut session = None;
            let mut mounted = None;
            if let Some(from) = sources_of(digest).into_iter().next() {
                match client.open_upload(digest, Some(&from))? {
                    None => mounted = Some(from),
                    // Declined (the blob is gone there, or mounts are off): upload into
                    // the session it opened.
                    Some(s) => session = Some(s),
                }
            }
            match mounted {
                Some(from) => BlobPush::Mounted(from),
                None => {
                    let session = match session {
                        Some(s) => s,
                        None => client
                            .open_upload(digest, None)?
                            .ok_or_else(|| Error::Internal(": a mount that was not asked for".into()))?,
                    };
                    let requests = client.upload(session, &path, digest, size, opts.chunk_size.max(1))?;
                    BlobPush::Uploaded { bytes: size, requests }
                }
            }
        };
        report(digest, size, &outcome);
        done.push((digest.clone(), size, outcome));
    }

    // The manifest, last.
    let manifest = images.content.read_small(&img.manifest_digest, MAX_MANIFEST)?;
    let media = img.manifest.media_type().as_ref().map_or(OCI_MANIFEST.to_string(), |m| m.to_string());
    let url = client.api(&format!("manifests/{}", r.reference()))?;
    let what = format!("manifest {}", r.name());
    let (code, resp) = client.call(
        "PUT",
        &url,
        &[("Content-Type", media.as_str())],
        Some(&|| Ok((Box::new(&manifest[..]), manifest.len() as u64))),
        true,
    )?;
    if code != 201 {
        return Err(client.failed(&what, code, resp));
    }
    if let Some(said) = resp.header("docker-content-digest").map(str::trim) {
        if said != img.manifest_digest {
            return Err(Error::Recorded { what, said: one_line(said, 100), want: img.manifest_digest.clone() });
        }
    }
    let all: Vec<String> = done.iter().map(|(d, _, _)| d.clone()).collect();
    // A hint for later pushes' mounts; the push itself is done.
    let _ = images.content.note_locations(r.registry(), r.repository(), &all);
    Ok(Pushed { digest: img.manifest_digest.clone(), blobs: done })
}
