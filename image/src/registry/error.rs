//! What goes wrong talking to a registry, typed: the HTTP status and the registry's own
//! error code, io errors with their errno, digests got and wanted. Each prints as one
//! line naming what was asked for; text a server sent is cut short and kept on that
//! line ([`one_line`]).

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use url::Url;

pub(crate) use crate::reference::one_line;
use crate::reference::{InvalidDigest, InvalidReference};

/// A failed pull or push.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A reference outside the grammar: nothing was asked of any registry.
    #[error(transparent)]
    Reference(#[from] InvalidReference),
    /// A digest the registry sent (in a manifest, an index, a header) outside what
    /// strata accepts; `context` says where (`manifest v1: layer: `).
    #[error("{context}{source}")]
    Digest { context: String, source: InvalidDigest },
    /// The registry answered with an error status.
    #[error(transparent)]
    Status(#[from] Status),
    /// Content that is not what its digest says.
    #[error("{what} has digest {got}, not {want} (tampered or corrupt)")]
    DigestMismatch { what: String, want: String, got: String },
    /// A manifest whose `Docker-Content-Digest` header names another digest.
    #[error("{what}: the registry says its digest is {claimed} (Docker-Content-Digest), but it is {got}")]
    ClaimedDigest { what: String, claimed: String, got: String },
    /// More bytes than the descriptor says (found as soon as they come).
    #[error("{what} has more than the {want} bytes its descriptor says")]
    TooLong { what: String, want: u64 },
    /// Fewer bytes than the descriptor says.
    #[error("{what} has {got} bytes, not the {want} its descriptor says (truncated?)")]
    Truncated { what: String, want: u64, got: u64 },
    /// An answer over its bound (manifests 4 MiB, tokens 1 MiB, configs 16 MiB).
    #[error("{what} is larger than {} KiB; refused", .limit >> 10)]
    TooLarge { what: String, limit: u64 },
    /// 401 to the credentials strata presented.
    #[error("401 Unauthorized: the credentials for {host} were refused")]
    CredentialsRefused { host: String },
    /// 401, and strata has no credentials for this registry.
    #[error("401 Unauthorized: {host} needs credentials (--creds USER:PASS, --authfile, or `skopeo login`)")]
    NeedsCredentials { host: String },
    /// A `Basic` challenge, and the credential is an identity token.
    #[error("the registry asks for a password (Basic auth), the credential is an identity token")]
    NeedsPassword,
    /// A challenge strata cannot answer (another scheme, no realm).
    #[error("{0}")]
    Challenge(String),
    /// The token service's answer could not be used.
    #[error("token from {realm}: {why}")]
    Token { realm: String, why: String },
    /// The token service could not be asked (refused, unreachable, redirected away).
    #[error("token from {realm}: {source}")]
    TokenRequest { realm: String, source: Box<Error> },
    #[error("{host}: the host name does not resolve ({detail})")]
    Unresolvable { host: String, detail: String },
    #[error("{host}: connection refused (is a registry listening there?)")]
    ConnectionRefused { host: String },
    /// An https request answered in plain http.
    #[error("{host}: the server gave an HTTP response to an HTTPS client; for a plain-http registry use --insecure")]
    NotHttps { host: String },
    /// 5xx, 429 or a broken connection on every try; `status` is the last try's, if
    /// it got one, and `cause` the io error that cut its body, if one did.
    #[error("giving up after {tries} tries: {last}")]
    GaveUp {
        tries: u32,
        status: Option<u16>,
        last: String,
        #[source]
        cause: Option<io::Error>,
    },
    /// A broken connection in a request that is not tried again (inside an upload).
    #[error("{what}: {detail}")]
    Transport { what: String, detail: String },
    /// A redirect, token realm or upload location to plain http without `--insecure`.
    #[error("{what} to plain-http {url} refused (use --insecure for an http registry)")]
    PlainHttp { what: String, url: String },
    /// ... to a scheme that is not http(s).
    #[error("{what} to {url} refused: scheme {scheme:?} is not http or https")]
    Scheme { what: String, url: String, scheme: String },
    /// ... to a URL without a host.
    #[error("{what} to {url} refused: it names no host")]
    NoHost { what: String, url: String },
    /// A URL that cannot be made (a registry's, a realm's).
    #[error("{what}: {source}")]
    Url { what: String, source: url::ParseError },
    /// A `Location` that is no URL.
    #[error("{what}: bad {header} {location:?}: {source}")]
    BadLocation { what: String, header: &'static str, location: String, source: url::ParseError },
    #[error("{what}: more than {max} redirects")]
    TooManyRedirects { what: String, max: usize },
    /// A status the protocol does not have there (a 1xx, a 2xx where a redirect was due).
    #[error("{what}: unexpected status {status}")]
    UnexpectedStatus { what: String, status: u16 },
    /// Slower than `--low-speed-limit` over `--low-speed-time`.
    #[error(
        "pull {reference}: stalled: {got} bytes in the last {:.0}s, below the low-speed limit of {limit} bytes/s \
         (--low-speed-limit, --low-speed-time)",
        .window.as_secs_f64()
    )]
    Stalled { reference: String, got: u64, window: Duration, limit: u64 },
    /// Past `--timeout`.
    #[error("pull {reference}: not done after {}s, the total deadline (--timeout, STRATA_PULL_TIMEOUT)", .timeout.as_secs())]
    Deadline { reference: String, timeout: Duration },
    /// SIGINT or SIGTERM.
    #[error("interrupted (SIGINT or SIGTERM)")]
    Interrupted,
    /// The pull was stopped (by the watchdog or an interrupt) while this ran.
    #[error("the pull was stopped")]
    Stopped,
    /// An index with no manifest for this platform.
    #[error("{reference}: no manifest for {want}; the image is for {}", .present.join(", "))]
    NoPlatform { reference: String, want: String, present: Vec<String> },
    /// A manifest, index or token answer that is not the JSON it should be.
    #[error("{what}: {source}")]
    Json { what: String, source: serde_json::Error },
    /// A manifest or index that breaks the protocol (media types, structure, JSON).
    #[error("{what}: {why}")]
    Protocol { what: String, why: String },
    /// A file of the pull's staging folder, the blob cache or the store, by path.
    #[error("{}: {}", .path.display(), io_text(.source))]
    File { path: PathBuf, source: io::Error },
    /// Reading an answer (or the password from the terminal).
    #[error("{what}: {}", io_text(.source))]
    Read { what: String, source: io::Error },
    /// `--creds` with no user.
    #[error("--creds: the user name is empty (--creds USER[:PASS])")]
    EmptyUser,
    /// An auth file or credential helper that does not answer.
    #[error("{}: credentials for {registry}: {detail}", .path.display())]
    CredentialFile { path: PathBuf, registry: String, detail: String },
    /// A push by digest to another digest than the image's.
    #[error("push {name} to {reference}: the image's manifest is {manifest}; push by tag, or by that digest")]
    PushDigest { name: String, reference: String, manifest: String },
    /// A pushed manifest the registry recorded under another digest.
    #[error("{what}: the registry recorded it as {said}, not {want}")]
    Recorded { what: String, said: String, want: String },
    /// What the image store or the layer contract says (no such image, a layer that
    /// fails to unpack), as it says it.
    #[error(transparent)]
    Store(#[from] driver_core::Error),
    /// A bug (a panic in a download thread, a thread that vanished).
    #[error("internal error{0}")]
    Internal(String),
    /// What the image crate says (no such image, a document that does not parse), as
    /// it says it.
    #[error(transparent)]
    Image(crate::Error),
}

impl Error {
    pub(crate) fn digest(context: impl Into<String>, source: InvalidDigest) -> Error {
        Error::Digest { context: context.into(), source }
    }

    pub(crate) fn protocol(what: impl Into<String>, why: impl Into<String>) -> Error {
        Error::Protocol { what: what.into(), why: why.into() }
    }

    pub(crate) fn file(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Error {
        let path = path.into();
        move |source| Error::File { path, source }
    }

    /// The OS error behind it (ENOSPC, EACCES, ...), if it is one.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::File { source, .. } | Error::Read { source, .. } => driver_core::error::os_error(source),
            Error::GaveUp { cause: Some(source), .. } => driver_core::error::os_error(source),
            Error::Store(e) => e.raw_os_error(),
            Error::Image(e) => e.raw_os_error(),
            _ => None,
        }
    }
}

/// An io error as driver-core prints one: ENOSPC as the words users look for.
fn io_text(e: &io::Error) -> String {
    if e.raw_os_error() == Some(libc::ENOSPC) {
        "no space left on device".into()
    } else {
        e.to_string()
    }
}

/// An error status from the registry: the status, the registry's error code (from the
/// distribution spec's `{"errors": [{"code": ...}]}` body) and what it says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub status: u16,
    /// The first error's `code`, as the registry sent it (`MANIFEST_UNKNOWN`,
    /// `NAME_UNKNOWN`, `DENIED`, ...).
    pub code: Option<String>,
    /// The errors' `message`s (else their codes in words), else the start of the
    /// body, else the status: one line.
    pub message: String,
    /// What was asked: `host/repo:tag`, or `blob sha256:…: host/repo`.
    pub subject: String,
    /// `subject: message` (a push) rather than `message: subject` (a pull, as skopeo
    /// says it: `manifest unknown: host/repo:tag`).
    pub(crate) subject_first: bool,
    /// The answer to a request for a manifest (by tag or digest), not a blob's, a
    /// token's or an upload's.
    pub manifest: bool,
}

impl Status {
    /// From an error answer's status and body.
    pub(crate) fn new(status: u16, body: &[u8], subject: String, subject_first: bool) -> Status {
        let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
        let errors: Vec<serde_json::Value> =
            json.as_ref().and_then(|j| j["errors"].as_array()).cloned().unwrap_or_default();
        let code = errors.iter().find_map(|e| e["code"].as_str()).map(|c| one_line(c, 100));
        let from_json: Vec<String> = errors
            .iter()
            .filter_map(|e| {
                e["message"]
                    .as_str()
                    .filter(|m| !m.trim().is_empty())
                    .map(str::to_string)
                    .or_else(|| e["code"].as_str().map(|c| c.to_ascii_lowercase().replace('_', " ")))
            })
            .collect();
        let text = if from_json.is_empty() {
            let body = String::from_utf8_lossy(body);
            match body.trim() {
                "" => format!("{status}"),
                t => format!("{status}: {t}"),
            }
        } else {
            from_json.join("; ")
        };
        Status { status, code, message: one_line(&text, 300), subject, subject_first, manifest: false }
    }

    /// The registry has no such manifest: the tag or digest (`MANIFEST_UNKNOWN`), the
    /// repository (`NAME_UNKNOWN`), or a 404 without either code. A missing blob is
    /// not this (the image the registry has is broken).
    pub fn manifest_not_found(&self) -> bool {
        self.manifest
            && (self.status == 404 || matches!(self.code.as_deref(), Some("MANIFEST_UNKNOWN" | "NAME_UNKNOWN")))
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.subject_first {
            write!(f, "{}: {}", self.subject, self.message)
        } else {
            write!(f, "{}: {}", self.message, self.subject)
        }
    }
}

impl std::error::Error for Status {}

/// Why one request did not give an answer.
pub(super) enum Failure {
    /// 401 from the registry, with its challenge.
    Unauthorized(String),
    /// Worth another try: 5xx, 429, a broken connection (the status, if any, and
    /// the line that says it).
    Transient(Option<u16>, String),
    /// Any other 4xx: the status and the error body (at most `MAX_ERROR_BODY`).
    Status(u16, Vec<u8>),
    Fatal(Error),
}

/// The error for a request that got no answer: a name that does not resolve or a
/// port nobody listens on is said plainly (and not tried again); an https request
/// answered in plain http says so and what to do.
pub(super) fn transport_failure(url: &Url, t: &ureq::Transport) -> Failure {
    let host = match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        _ => String::new(),
    };
    let detail = t.message().map(|m| one_line(m, 200));
    let source = std::error::Error::source(t).map(|e| one_line(&e.to_string(), 200));
    let all = format!("{} {}", detail.as_deref().unwrap_or(""), source.as_deref().unwrap_or(""));
    match t.kind() {
        ureq::ErrorKind::Dns => Failure::Fatal(Error::Unresolvable {
            host,
            detail: source.or(detail).unwrap_or_else(|| "DNS lookup failed".into()),
        }),
        _ if all.contains("InvalidContentType") || all.contains("corrupt message") => {
            Failure::Fatal(Error::NotHttps { host })
        }
        ureq::ErrorKind::ConnectionFailed if all.contains("refused") => {
            Failure::Fatal(Error::ConnectionRefused { host })
        }
        _ => Failure::Transient(None, format!("{host}: {}", one_line(&t.to_string(), 400))),
    }
}

/// The image crate's own errors (no such image, a document that does not parse) reach a
/// pull or push as themselves; a driver's error under one is the store's.
impl From<crate::Error> for Error {
    fn from(e: crate::Error) -> Self {
        match e {
            crate::Error::Layer(e) => Error::Store(e),
            e => Error::Image(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_text_in_errors_stays_on_one_line() {
        assert_eq!(one_line("a\nerror: forged\r\x1b[2J", 100), "a error: forged  [2J");
        assert_eq!(one_line(&"x".repeat(10), 4), "xxxx…");
    }

    #[test]
    fn the_registry_error_body_gives_the_code_and_one_line() {
        let body = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"2"}}]}"#;
        let s = Status::new(404, body, "host/repo:2".into(), false);
        assert_eq!(
            (s.status, s.code.as_deref(), s.message.as_str()),
            (404, Some("MANIFEST_UNKNOWN"), "manifest unknown")
        );
        assert_eq!(s.to_string(), "manifest unknown: host/repo:2");
        let s = Status::new(404, br#"{"errors":[{"code":"NAME_UNKNOWN"}]}"#, "x".into(), true);
        assert_eq!((s.code.as_deref(), s.to_string().as_str()), (Some("NAME_UNKNOWN"), "x: name unknown"));
        let s = Status::new(403, b"no\nerror: forged", "x".into(), false);
        assert_eq!((s.code, s.message.as_str()), (None, "403: no error: forged"));
        assert_eq!(Status::new(500, b"", "x".into(), false).message, "500");
    }

    /// The answers that mean "no such tag, digest or repository" for a manifest; a
    /// blob's 404 or a denial is not one.
    #[test]
    fn a_manifest_the_registry_does_not_have_is_not_found() {
        let manifest =
            |status, body: &[u8]| Status { manifest: true, ..Status::new(status, body, "h/r:9".into(), false) };
        assert!(manifest(404, br#"{"errors":[{"code":"MANIFEST_UNKNOWN"}]}"#).manifest_not_found());
        assert!(manifest(404, br#"{"errors":[{"code":"NAME_UNKNOWN"}]}"#).manifest_not_found());
        assert!(manifest(404, b"").manifest_not_found());
        // Some registries answer a missing tag with 400 or 403 and the code.
        assert!(manifest(400, br#"{"errors":[{"code":"MANIFEST_UNKNOWN"}]}"#).manifest_not_found());
        assert!(!manifest(403, br#"{"errors":[{"code":"DENIED"}]}"#).manifest_not_found());
        assert!(!manifest(400, b"bad").manifest_not_found());
        assert!(!Status::new(404, br#"{"errors":[{"code":"BLOB_UNKNOWN"}]}"#, "b".into(), false).manifest_not_found());
    }

    #[test]
    fn io_errors_keep_their_errno() {
        let e = Error::File { path: "/store/blobs".into(), source: io::Error::from_raw_os_error(libc::ENOSPC) };
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
        assert_eq!(e.to_string(), "/store/blobs: no space left on device");
    }
}
