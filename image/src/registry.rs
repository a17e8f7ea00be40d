//! `strata image pull`: the OCI distribution protocol, enough of it to pull, written
//! for a registry that may be hostile.
//!
//! Manifest (or index / manifest list, resolved to this host's platform), config,
//! then the layer blobs that no local layer already holds, a few at a time, each
//! checked against its digest as it streams. Auth follows the registry's 401: a
//! `Bearer` challenge names a token service, whose token is sent on the retry (asked
//! with the user's credentials when the service is on the registry's own origin); a
//! `Basic` challenge gets the credentials themselves. Credentials come from `--creds`
//! or the files skopeo, podman and docker keep ([`auth`]). `--insecure` talks plain
//! http (a local registry).
//! Docker Hub short names resolve as docker does: `debian:12` is
//! `docker.io/library/debian:12`.
//!
//! What a registry can say is bounded before it is used:
//! - references follow the distribution reference grammar and digests are
//!   `sha256:` + 64 lowercase hex, checked before any URL is built, so no `..` or `%2e`
//!   reaches a request path;
//! - redirects are followed here, not in the HTTP client: only to http(s) URLs with a
//!   host (never https → http unless `--insecure`), at most [`MAX_REDIRECTS`], and
//!   credentials and tokens go only to the registry's own scheme, host and port (a
//!   token service or blob store elsewhere gets none);
//! - manifests are at most 4 MiB (containerd's bound), token answers 1 MiB, error
//!   bodies 64 KiB; a `Docker-Content-Digest` header must match the manifest;
//! - the download runs under a watchdog: it fails when fewer than `low_speed_limit`
//!   bytes/s arrive over `low_speed_time` (as curl's `--speed-limit`/`--speed-time`),
//!   or when it takes longer than `timeout` in all;
//! - a panic in a download thread is one error, not a crash.
//!
//! Blobs are downloaded into a staging folder of this pull (`<cache>/.pull-<pid>/`)
//! and move into the blob cache only once the image is unpacked and recorded, so a
//! pull that fails, times out or is interrupted leaves the cache as it was; the
//! staging folder of a pull that was killed is removed by the next pull.

use std::collections::{HashMap, VecDeque};
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use crate::image::{blob_path, image_from_manifest, pick_platform, BlobSource, Image, Platform, VerifyingReader};
use driver_core::{interrupt, Cause, Driver, Error};
use sha2::{Digest, Sha256, Sha512};
use url::Url;

mod auth;
mod push;
pub use auth::{AuthOptions, Credential};
pub use push::{push, BlobPush, PushOptions, Pushed};

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// containerd refuses manifests over 4 MiB too; real ones are a few KiB.
pub const MAX_MANIFEST: u64 = 4 << 20;
/// The bound `image unpack` puts on configs.
const MAX_CONFIG: u64 = 64 << 20;
/// Token answers are JSON with a JWT of a few KiB.
const MAX_TOKEN_ANSWER: u64 = 1 << 20;
/// Of an error answer only the start is worth showing.
const MAX_ERROR_BODY: u64 = 64 << 10;
/// As docker and curl's default.
pub const MAX_REDIRECTS: usize = 10;
/// Tries per request on 5xx, 429 and broken connections.
const TRIES: u32 = 4;
/// Nested indexes followed at most (an index pointing at an index...).
const MAX_INDEX_DEPTH: usize = 4;

/// How long a pull may take, and how slow it may get. `image pull` takes them from
/// flags or environment variables (see `strata image pull --help`).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// The whole download (manifests, config, layers), not the unpack after it.
    pub timeout: Duration,
    /// Bytes per second, averaged over `low_speed_time`, below which a pull fails.
    pub low_speed_limit: u64,
    pub low_speed_time: Duration,
}

/// A parsed image reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// Host (and port) to talk to.
    pub registry: String,
    pub repository: String,
    /// A tag or a digest (validated).
    pub reference: String,
}

/// `[a-z0-9]+` joined by `.`, `_`, `__` or runs of `-`: one path component of a
/// repository name in the distribution reference grammar.
fn is_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: &u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(&b[0]) || !alnum(&b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(&b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(&b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

/// `host[:port]`: domain components (alphanumerics and inner `-`) joined by `.`, an
/// IPv4 address, or `[IPv6]`; an optional numeric port.
fn is_domain(d: &str) -> bool {
    let (host, port) = if let Some(rest) = d.strip_prefix('[') {
        match rest.split_once(']') {
            Some((v6, tail)) => {
                if v6.parse::<std::net::Ipv6Addr>().is_err() {
                    return false;
                }
                match tail {
                    "" => return true,
                    t => (None, t.strip_prefix(':')),
                }
            }
            None => return false,
        }
    } else {
        match d.rsplit_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(d), None),
        }
    };
    if let Some(p) = port {
        if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    let Some(host) = host else { return port.is_some() };
    !host.is_empty()
        && host.split('.').all(|c| {
            let b = c.as_bytes();
            !b.is_empty()
                && b.iter().all(|x| x.is_ascii_alphanumeric() || *x == b'-')
                && b[0] != b'-'
                && b[b.len() - 1] != b'-'
        })
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn is_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter().all(|x| x.is_ascii_alphanumeric() || matches!(x, b'_' | b'.' | b'-'))
}

/// A digest as strata accepts it anywhere near a URL or a path: `sha256:` and 64
/// lowercase hex digits, or `sha512:` and 128. Anything else (`..`, `/`, `%2e`,
/// uppercase, other algorithms) is refused here, before it is used.
pub fn validate_digest(d: &str) -> Result<(), Error> {
    let ok = match d.split_once(':') {
        Some(("sha256", hex)) => hex.len() == 64,
        Some(("sha512", hex)) => hex.len() == 128,
        _ => false,
    } && d
        .split_once(':')
        .is_some_and(|(_, h)| h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    if ok {
        Ok(())
    } else {
        Err(err(format!("invalid digest {:?}: expected sha256: and 64 lowercase hex digits", one_line(d, 100))))
    }
}

/// Whether `data` has digest `d` (a validated sha256 or sha512 digest).
fn digest_matches(data: &[u8], d: &str) -> bool {
    match d.split_once(':') {
        Some(("sha256", hex)) => hex::encode(Sha256::digest(data)) == hex,
        Some(("sha512", hex)) => hex::encode(Sha512::digest(data)) == hex,
        _ => false,
    }
}

impl Reference {
    /// Parses `[domain/]path[:tag][@digest]` as the distribution reference grammar
    /// (docker's "invalid reference format") does.
    pub fn parse(s: &str) -> Result<Reference, Error> {
        // skopeo's and podman's spelling of a registry image.
        let s = s.strip_prefix("docker://").unwrap_or(s);
        // `user:pw@host/repo`, as a URL would carry them: refused, and the secret is
        // not echoed.
        if let Some((userinfo, rest)) = s.split_once('@') {
            if rest.contains('/') && !userinfo.contains('/') {
                let user = userinfo.split(':').next().unwrap_or_default();
                return Err(err(format!(
                    "invalid image reference \"{}:…@{}\": credentials do not go in a reference; \
                     use --creds {}[:PASS] (or --authfile) with the reference {}",
                    one_line(user, 100),
                    one_line(rest, 300),
                    one_line(user, 100),
                    one_line(rest, 300)
                )));
            }
        }
        let bad = |why: &str| err(format!("invalid image reference {:?}: {why}", one_line(s, 300)));
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => {
                validate_digest(d).map_err(|_| bad("the digest must be sha256: and 64 lowercase hex digits"))?;
                (r, Some(d.to_string()))
            }
            None => (s, None),
        };
        let (first, remainder) = match rest.split_once('/') {
            Some((f, r)) if f.contains('.') || f.contains(':') || f == "localhost" || f.starts_with('[') => {
                (Some(f), r)
            }
            _ => (None, rest),
        };
        // A tag is after the last ':' that follows the last '/'.
        let (repo, tag) = match remainder.rsplit_once(':') {
            Some((r, t)) if !t.contains('/') => {
                if !is_tag(t) {
                    return Err(bad("a tag is 1-128 of [A-Za-z0-9_.-], not starting with '.' or '-'"));
                }
                (r, t.to_string())
            }
            _ => (remainder, "latest".to_string()),
        };
        if let Some(host) = first {
            if !is_domain(host) {
                return Err(bad("the registry must be a host name or address, with an optional port"));
            }
        }
        if repo.is_empty() || !repo.split('/').all(is_path_component) {
            return Err(bad("a repository is lowercase letters and digits, separated by '.', '_', '__', '-' or '/' \
                 (no '..', '%', empty or uppercase parts)"));
        }
        let (registry, repository) = match first {
            Some(host) if host != "docker.io" && host != "index.docker.io" => (host.to_string(), repo.to_string()),
            _ => {
                let repo = if repo.contains('/') { repo.to_string() } else { format!("library/{repo}") };
                ("registry-1.docker.io".to_string(), repo)
            }
        };
        if registry.len() + 1 + repository.len() > 255 {
            return Err(bad("the name is longer than 255 characters"));
        }
        Ok(Reference { registry, repository, reference: digest.unwrap_or(tag) })
    }

    fn by_digest(&self) -> bool {
        self.reference.contains(':')
    }

    /// The name an image pulled by this reference is recorded under.
    pub fn name(&self) -> String {
        let host = if self.registry == "registry-1.docker.io" { "docker.io" } else { &self.registry };
        let sep = if self.by_digest() { '@' } else { ':' };
        format!("{host}/{}{sep}{}", self.repository, self.reference)
    }
}

fn err(msg: impl Into<String>) -> Error {
    Error::new(Cause::Other(msg.into()))
}

/// What a server says, fit for one error line: control characters (newlines that
/// would forge a second `error:` line, escapes) become spaces, and it is cut at `max`.
fn one_line(s: &str, max: usize) -> String {
    let mut out: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).take(max).collect();
    if s.chars().count() > max {
        out.push('…');
    }
    out
}

/// Parses `Bearer realm="…",service="…",scope="…"` or `Basic realm="…"` into the
/// scheme (lowercase) and its parameters.
fn parse_challenge(h: &str) -> Option<(String, HashMap<String, String>)> {
    let (scheme, rest) = h.trim().split_once(' ').unwrap_or((h.trim(), ""));
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "bearer" && scheme != "basic" {
        return None;
    }
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
    Some((scheme, out))
}

/// Bytes received by every download of one pull, and the flag that stops them.
#[derive(Default)]
struct Progress {
    bytes: AtomicU64,
    cancelled: AtomicBool,
}

/// Counts what a body delivers, and stops it once the pull is cancelled (watchdog,
/// Ctrl-C) so that abandoned download threads do not go on.
struct Counted<R> {
    inner: R,
    progress: Arc<Progress>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        interrupt::check().map_err(|e| io::Error::other(e.to_string()))?;
        if self.progress.cancelled.load(Ordering::SeqCst) {
            return Err(io::Error::other("the pull was stopped"));
        }
        let n = self.inner.read(buf)?;
        self.progress.bytes.fetch_add(n as u64, Ordering::SeqCst);
        Ok(n)
    }
}

/// Enforces [`Limits`] from outside the threads that download.
struct Watchdog {
    start: Instant,
    limits: Limits,
    progress: Arc<Progress>,
    /// (time, bytes so far), one sample per tick, as long as `low_speed_time`.
    samples: Mutex<VecDeque<(Instant, u64)>>,
}

impl Watchdog {
    fn new(limits: Limits, progress: Arc<Progress>) -> Watchdog {
        Watchdog { start: Instant::now(), limits, progress, samples: Mutex::new(VecDeque::new()) }
    }

    fn tick(&self) -> Duration {
        (self.limits.low_speed_time / 8).clamp(Duration::from_millis(50), Duration::from_secs(1))
    }

    fn check(&self, reference: &str) -> Result<(), Error> {
        let now = Instant::now();
        if now - self.start > self.limits.timeout {
            return Err(err(format!(
                "pull {reference}: not done after {}s, the total deadline (--timeout, STRATA_PULL_TIMEOUT)",
                self.limits.timeout.as_secs()
            )));
        }
        let bytes = self.progress.bytes.load(Ordering::SeqCst);
        let mut samples = self.samples.lock().expect("samples lock");
        samples.push_back((now, bytes));
        while samples.len() > 1 && now - samples[1].0 >= self.limits.low_speed_time {
            samples.pop_front();
        }
        let (then, before) = samples[0];
        let window = now - then;
        if window >= self.limits.low_speed_time {
            let got = bytes - before;
            if (got as f64) < self.limits.low_speed_limit as f64 * window.as_secs_f64() {
                return Err(err(format!(
                    "pull {reference}: stalled: {got} bytes in the last {:.0}s, below the low-speed limit of {} bytes/s \
                     (--low-speed-limit, --low-speed-time)",
                    window.as_secs_f64(),
                    self.limits.low_speed_limit
                )));
            }
        }
        Ok(())
    }

    /// Runs `f` in its own thread and waits for it, failing when the limits are
    /// exceeded or an interrupt is requested; the thread is then told to stop, and is
    /// left behind (it holds nothing that outlives the staging folder).
    fn run<T: Send + 'static>(
        &self,
        reference: &str,
        f: impl FnOnce() -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("strata-pull".into())
            .spawn(move || {
                let _ = tx.send(guarded(f));
            })
            .map_err(Error::new)?;
        loop {
            match rx.recv_timeout(self.tick()) {
                Ok(r) => return r,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Err(e) = interrupt::check().and_then(|_| self.check(reference)) {
                        self.progress.cancelled.store(true, Ordering::SeqCst);
                        return Err(e);
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(err("internal error: a download thread vanished"))
                }
            }
        }
    }
}

thread_local! {
    /// Where the last panic of this thread happened, for its error line.
    static PANIC_AT: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f`, turning a panic into an error: a bug (or a crate's) in a download thread
/// must end the pull with one `error:` line, not abort the process. The panic hook
/// stays quiet for these threads and notes where it happened.
fn guarded<T>(f: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().name().is_some_and(|n| n.starts_with("strata-pull")) {
                let at = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
                PANIC_AT.with(|p| *p.borrow_mut() = Some(at));
            } else {
                previous(info);
            }
        }));
    });
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            let at = PANIC_AT.with(|p| p.borrow_mut().take()).unwrap_or_default();
            Err(err(format!("internal error in a download thread (please report): {} at {at}", one_line(&msg, 300))))
        }
    }
}

/// Scheme, host and port: where a token may be sent.
fn origin(u: &Url) -> (String, Option<String>, Option<u16>) {
    (u.scheme().to_string(), u.host_str().map(str::to_string), u.port_or_known_default())
}

/// An http(s) URL with a host, and not a downgrade to http unless `insecure`.
fn check_target(u: &Url, insecure: bool, what: &str) -> Result<(), Error> {
    let shown = one_line(u.as_str(), 200);
    match u.scheme() {
        "https" => {}
        "http" if insecure => {}
        "http" => {
            return Err(err(format!("{what} to plain-http {shown} refused (use --insecure for an http registry)")))
        }
        other => return Err(err(format!("{what} to {shown} refused: scheme {other:?} is not http or https"))),
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(err(format!("{what} to {shown} refused: it names no host")));
    }
    Ok(())
}

/// The `Authorization` value of Basic auth.
fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

/// Why one request did not give an answer.
enum Failure {
    /// 401 from the registry, with its challenge.
    Unauthorized(String),
    /// Worth another try: 5xx, 429, a broken connection.
    Transient(String),
    /// Any other 4xx: the status and what the registry says about it, in one line.
    Status(String),
    Fatal(Error),
}

/// The registry's error answer in one line: the `message`s (else the `code`s) of a
/// distribution-spec `{"errors": [...]}` body, else the start of the body, else the
/// status code.
fn error_text(code: u16, body: &[u8]) -> String {
    let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let from_json: Vec<String> = json
        .as_ref()
        .and_then(|j| j["errors"].as_array())
        .into_iter()
        .flatten()
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
            "" => format!("{code}"),
            t => format!("{code}: {t}"),
        }
    } else {
        from_json.join("; ")
    };
    one_line(&text, 300)
}

/// The one line for a request that got no answer: a name that does not resolve or a
/// port nobody listens on is said plainly (and not tried again); an https request
/// answered in plain http says so and what to do.
fn transport_failure(url: &Url, t: &ureq::Transport) -> Failure {
    let host = match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        _ => String::new(),
    };
    let detail = t.message().map(|m| one_line(m, 200));
    let source = std::error::Error::source(t).map(|e| one_line(&e.to_string(), 200));
    let all = format!("{} {}", detail.as_deref().unwrap_or(""), source.as_deref().unwrap_or(""));
    match t.kind() {
        ureq::ErrorKind::Dns => Failure::Fatal(err(format!(
            "{host}: the host name does not resolve ({})",
            source.or(detail).unwrap_or_else(|| "DNS lookup failed".into())
        ))),
        _ if all.contains("InvalidContentType") || all.contains("corrupt message") => Failure::Fatal(err(format!(
            "{host}: the server gave an HTTP response to an HTTPS client; for a plain-http registry use --insecure"
        ))),
        ureq::ErrorKind::ConnectionFailed if all.contains("refused") => {
            Failure::Fatal(err(format!("{host}: connection refused (is a registry listening there?)")))
        }
        _ => Failure::Transient(format!("{host}: {}", one_line(&t.to_string(), 400))),
    }
}

struct Client {
    agent: ureq::Agent,
    base: Url,
    insecure: bool,
    repository: String,
    /// What is presented to the registry: `--creds` or a credential from the files.
    credential: Option<Credential>,
    /// The `Authorization` header the registry accepted (or last asked for).
    authorization: Mutex<Option<String>>,
    progress: Arc<Progress>,
    /// What a token is asked for when the challenge names no scope: `pull`, or
    /// `pull,push` for a push.
    actions: &'static str,
}

impl Client {
    fn new(
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
        let base = Url::parse(&format!("{scheme}://{}/", r.registry))
            .map_err(|e| err(format!("registry {}: {e}", r.registry)))?;
        Ok(Client {
            agent,
            base,
            insecure,
            repository: r.repository.clone(),
            credential,
            authorization: Mutex::new(None),
            progress,
            actions: "pull",
        })
    }

    fn counted<'a>(&self, resp: ureq::Response) -> Counted<Box<dyn Read + Send + Sync + 'a>> {
        Counted { inner: resp.into_reader(), progress: self.progress.clone() }
    }

    /// Reads a whole body of at most `limit` bytes.
    fn read_bounded(&self, resp: ureq::Response, limit: u64, what: &str) -> Result<Vec<u8>, Error> {
        let too_big = || err(format!("{what} is larger than {} KiB; refused", limit >> 10));
        if resp.header("content-length").and_then(|l| l.trim().parse::<u64>().ok()).is_some_and(|l| l > limit) {
            return Err(too_big());
        }
        let mut body = Vec::new();
        self.counted(resp).take(limit + 1).read_to_end(&mut body).map_err(|e| err(format!("{what}: {e}")))?;
        if body.len() as u64 > limit {
            return Err(too_big());
        }
        Ok(body)
    }

    /// One request (a GET, or a POST of `form`), following redirects to checked
    /// targets. `authorization` goes only to the registry's own origin, never to
    /// another host or port a redirect or a token realm names. `registry`: the URL is
    /// the registry's API, whose 401 is a challenge to answer.
    fn send(
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
                    let next = url.join(&location).map_err(|e| {
                        Failure::Fatal(err(format!("{shown}: bad redirect to {:?}: {e}", one_line(&location, 200))))
                    })?;
                    check_target(&next, self.insecure, &format!("{shown}: redirect")).map_err(Failure::Fatal)?;
                    url = next;
                }
                Ok(resp) if resp.status() < 300 => return Ok(resp),
                Ok(resp) => return Err(Failure::Fatal(err(format!("{shown}: unexpected status {}", resp.status())))),
                Err(ureq::Error::Status(401, resp)) if registry && origin(&url) == origin(&self.base) => {
                    return Err(Failure::Unauthorized(resp.header("www-authenticate").unwrap_or("").to_string()));
                }
                Err(ureq::Error::Status(code, resp)) if code == 429 || code >= 500 => {
                    return Err(Failure::Transient(format!("{shown}: {code} {}", one_line(resp.status_text(), 100))));
                }
                Err(ureq::Error::Status(code, resp)) => {
                    let body = self.read_bounded(resp, MAX_ERROR_BODY, "error answer").unwrap_or_default();
                    let mut text = error_text(code, &body);
                    if code == 400 && text.contains("HTTP request to an HTTPS server") {
                        text = format!("{text} (the registry speaks https: drop --insecure)");
                    }
                    return Err(Failure::Status(text));
                }
                Err(ureq::Error::Transport(t)) => return Err(transport_failure(&url, &t)),
            }
        }
        Err(Failure::Fatal(err(format!("{}: more than {MAX_REDIRECTS} redirects", one_line(url.as_str(), 200)))))
    }

    /// GET `/v2/<repository>/<kind>/<what>` with auth and retries on transient
    /// failures. `what` is a validated tag or digest: nothing else reaches the path.
    fn get(&self, kind: &str, what: &str, accept: Option<&str>) -> Result<ureq::Response, Error> {
        debug_assert!(is_tag(what) || validate_digest(what).is_ok());
        let url = self
            .base
            .join(&format!("v2/{}/{kind}/{what}", self.repository))
            .map_err(|e| err(format!("{}: {e}", self.base)))?;
        let mut last = String::new();
        let mut answered = false;
        for attempt in 0..TRIES {
            if attempt > 0 && !answered {
                std::thread::sleep(Duration::from_millis(300 << attempt));
            }
            if self.progress.cancelled.load(Ordering::SeqCst) {
                return Err(err("the pull was stopped"));
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
                    last = format!("{url}: 401 Unauthorized");
                }
                Err(Failure::Transient(msg)) => last = msg,
                // As skopeo says it: `manifest unknown: host/repo:tag`.
                Err(Failure::Status(text)) => {
                    let sep = if what.contains(':') { '@' } else { ':' };
                    return Err(err(format!("{text}: {}{sep}{what}", self.shown_repository())));
                }
                Err(Failure::Fatal(e)) => return Err(e),
            }
        }
        Err(err(format!("giving up after {TRIES} tries: {last}")))
    }

    /// `host[:port]` of the registry, as the user wrote it.
    fn host(&self) -> String {
        let host = self.base.host_str().unwrap_or_default();
        match self.base.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        }
    }

    /// `host[:port]/repository`.
    fn shown_repository(&self) -> String {
        format!("{}/{}", self.host(), self.repository)
    }

    /// The error for a registry that refuses what strata presented (or nothing).
    fn refused(&self) -> Error {
        let host = self.host();
        match &self.credential {
            Some(_) => err(format!("401 Unauthorized: the credentials for {host} were refused")),
            None => err(format!(
                "401 Unauthorized: {host} needs credentials (--creds USER:PASS, --authfile, or `skopeo login`)"
            )),
        }
    }

    /// Answers a 401's challenge: `Basic` with the credentials, `Bearer` with a token
    /// from its realm (asked with the credentials only if the realm is on the
    /// registry's own origin).
    fn authenticate(&self, challenge: &str) -> Result<(), Error> {
        let (scheme, p) = parse_challenge(challenge)
            .ok_or_else(|| err(format!("unsupported auth challenge {:?}", one_line(challenge, 200))))?;
        if scheme == "basic" {
            let header = match &self.credential {
                Some(Credential::Password { user, password }) => basic(user, password),
                Some(Credential::IdentityToken(_)) => {
                    return Err(err(
                        "the registry asks for a password (Basic auth), the credential is an identity token",
                    ))
                }
                None => return Err(self.refused()),
            };
            *self.authorization.lock().expect("authorization lock") = Some(header);
            return Ok(());
        }
        let realm = p.get("realm").ok_or_else(|| err("auth challenge without a realm"))?;
        let mut url = Url::parse(realm).map_err(|e| err(format!("auth realm {:?}: {e}", one_line(realm, 200))))?;
        check_target(&url, self.insecure, "token request").map_err(|e| err(format!("auth realm: {e}")))?;
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
        let resp = match answer {
            Ok(r) => r,
            Err(Failure::Fatal(e)) => return Err(err(format!("token from {shown}: {e}"))),
            Err(Failure::Status(text)) => return Err(err(format!("token from {shown}: {text}"))),
            Err(Failure::Transient(m) | Failure::Unauthorized(m)) => {
                return Err(err(format!("token from {shown}: {m}")))
            }
        };
        let text = self.read_bounded(resp, MAX_TOKEN_ANSWER, &format!("token answer from {shown}"))?;
        let body: serde_json::Value =
            serde_json::from_slice(&text).map_err(|e| err(format!("token from {shown}: {e}")))?;
        let token = body
            .get("token")
            .or_else(|| body.get("access_token"))
            .and_then(|t| t.as_str())
            .ok_or_else(|| err(format!("token from {shown}: no token in the answer")))?;
        // It goes into a header: visible ASCII only, or it could smuggle headers in.
        if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(err(format!("token from {shown}: not a valid bearer token (empty or not printable ASCII)")));
        }
        *self.authorization.lock().expect("authorization lock") = Some(format!("Bearer {token}"));
        Ok(())
    }

    /// A manifest or index by tag or digest, at most [`MAX_MANIFEST`], checked against
    /// the digest it was asked by, or else against `Docker-Content-Digest` when the
    /// registry sends one. Returns the body and the media type the header gives.
    fn manifest(&self, reference: &str) -> Result<(Vec<u8>, String), Error> {
        let resp = self.get("manifests", reference, Some(ACCEPT))?;
        let media = resp.content_type().to_string();
        let claimed = resp.header("docker-content-digest").map(str::to_string);
        let body = self.read_bounded(resp, MAX_MANIFEST, &format!("manifest {reference}"))?;
        if reference.contains(':') && !digest_matches(&body, reference) {
            return Err(err(format!("manifest {reference} does not match its digest (tampered or corrupt)")));
        }
        if let Some(claimed) = claimed {
            let claimed = claimed.trim();
            validate_digest(claimed).map_err(|e| err(format!("manifest {reference}: Docker-Content-Digest: {e}")))?;
            if !digest_matches(&body, claimed) {
                return Err(err(format!(
                    "manifest {reference}: the registry says its digest is {claimed} (Docker-Content-Digest), but it \
                     is {}",
                    digest_of(&body)
                )));
            }
        }
        Ok((body, media))
    }

    /// Downloads blob `digest` into `staging`, verified, unless it is in the cache
    /// already. A broken connection is retried; a wrong digest or size is not.
    fn fetch_blob(&self, blobs: &PullSource, digest: &str, size: Option<u64>) -> Result<(), Error> {
        validate_digest(digest)?;
        if !digest.starts_with("sha256:") {
            return Err(err(format!("blob {digest}: only sha256 blobs are supported")));
        }
        let rel = blob_path(digest).map_err(|e| err(e.to_string()))?;
        if blobs.cache.join(&rel).exists() || blobs.staging.join(&rel).exists() {
            return Ok(());
        }
        let dest = blobs.staging.join(&rel);
        let tmp = dest.with_extension(format!("part-{:?}", std::thread::current().id()).replace(['(', ')'], ""));
        let mut last = String::new();
        for attempt in 0..TRIES {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(300 << attempt));
            }
            let resp = self.get("blobs", digest, None)?;
            let mut r = VerifyingReader::new(self.counted(resp), digest, size, format!("blob {digest}"));
            // No create_dir_all: once the staging folder is gone, a late thread fails here.
            let mut f = fs::File::create(&tmp).map_err(|e| Error::new(e).with_path(&tmp))?;
            match io::copy(&mut r, &mut f).and_then(|_| f.flush()) {
                Ok(()) => return fs::rename(&tmp, &dest).map_err(|e| Error::new(e).with_path(&dest)),
                Err(e) => {
                    let _ = fs::remove_file(&tmp);
                    // A wrong digest or size is final (and its message names the
                    // blob); a broken or cut connection is tried again.
                    if e.kind() == io::ErrorKind::InvalidData {
                        return Err(err(one_line(&e.to_string(), 400)));
                    }
                    let msg = format!("blob {digest}: {}", one_line(&e.to_string(), 400));
                    if self.progress.cancelled.load(Ordering::SeqCst) {
                        return Err(err(msg));
                    }
                    last = msg;
                }
            }
        }
        Err(err(format!("giving up after {TRIES} tries: {last}")))
    }
}

use driver_core::digest::sha256 as digest_of;

/// Blobs of one pull: its own staging folder first, then the cache.
#[derive(Clone)]
pub struct PullSource {
    staging: PathBuf,
    cache: PathBuf,
}

impl BlobSource for PullSource {
    fn open(&self, locator: &str) -> io::Result<Box<dyn Read + Send>> {
        let rel = blob_path(locator)?;
        let f = match fs::File::open(self.staging.join(&rel)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => fs::File::open(self.cache.join(&rel))?,
            r => r?,
        };
        // Ctrl-C during the unpack stops the layer being applied.
        Ok(Box::new(interrupt::Checked(f)))
    }

    fn shared(&self) -> Option<Arc<dyn BlobSource>> {
        // Each layer's blob is then opened when it is applied, not all up front.
        Some(Arc::new(self.clone()))
    }
}

/// What [`pull`] gives: the image and where its blobs are. Its staging folder is
/// removed when it is dropped; [`Pulled::keep`] first moves the blobs into the cache.
pub struct Pulled {
    pub image: Image,
    pub name: String,
    pub source: PullSource,
    /// Blobs downloaded, and their bytes.
    pub downloaded: (usize, u64),
}

impl Pulled {
    /// Moves the pull's blobs into the cache (after the image is recorded).
    pub fn keep(self) -> Result<(), Error> {
        let from = self.source.staging.join("blobs/sha256");
        let to = self.source.cache.join("blobs/sha256");
        fs::create_dir_all(&to).map_err(|e| Error::new(e).with_path(&to))?;
        for e in fs::read_dir(&from).map_err(|e| Error::new(e).with_path(&from))? {
            let e = e.map_err(Error::new)?;
            let name = e.file_name();
            if name.to_string_lossy().contains('.') {
                continue; // a `.part-…` left by a stopped thread
            }
            fs::rename(e.path(), to.join(&name)).map_err(|err| Error::new(err).with_path(to.join(&name)))?;
        }
        Ok(())
    }
}

// The staging folder goes with the pull's result, not with a handle on its blobs
// (the unpack holds clones of the source while it opens layers one by one).
impl Drop for Pulled {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.source.staging);
    }
}

/// Removes the staging folders of pulls whose process is gone (killed).
fn remove_stale_staging(cache: &Path) {
    let Ok(entries) = fs::read_dir(cache) else { return };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(".pull-")) else { continue };
        if !Path::new("/proc").join(pid).exists() {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

/// What a manifest body is: the header's media type and the body's own must agree.
fn kind_of(header: &str, body: &serde_json::Value, what: &str) -> Result<&'static str, Error> {
    let header = header.split(';').next().unwrap_or("").trim();
    let known = |t: &str| [OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST].into_iter().find(|k| *k == t);
    let own = body.get("mediaType").and_then(|m| m.as_str());
    let generic = header.is_empty() || header == "application/json" || header == "application/octet-stream";
    let t = match (known(header), own) {
        (Some(h), Some(o)) if h != o => {
            return Err(err(format!(
                "{what}: the registry says media type {h}, the manifest says {}",
                one_line(o, 100)
            )))
        }
        (Some(h), _) => h,
        (None, Some(o)) if generic => {
            known(o).ok_or_else(|| err(format!("{what}: unsupported media type {:?}", one_line(o, 100))))?
        }
        (None, None) if generic && body.get("manifests").is_some() => OCI_INDEX,
        (None, None) if generic && body.get("layers").is_some() => OCI_MANIFEST,
        _ => {
            return Err(err(format!(
                "{what}: unsupported media type {:?} (docker schema 1 and others are not pulled)",
                one_line(header, 100)
            )))
        }
    };
    Ok(t)
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
    let r = Reference::parse(reference)?;
    fs::create_dir_all(cache).map_err(|e| Error::new(e).with_path(cache))?;
    remove_stale_staging(cache);
    let credential = auth.credential_for(&r.registry)?;
    let staging = cache.join(format!(".pull-{}", std::process::id()));
    let mut result = download(&r, reference, insecure, credential, limits, cache, &staging, present);
    if result.is_err() && interrupt::requested() {
        // Whichever thread saw it first, say why the pull stopped.
        result = Err(interrupt::error());
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
    fs::create_dir_all(&blobs_dir).map_err(|e| Error::new(e).with_path(&blobs_dir))?;
    let source = Arc::new(PullSource { staging: staging.to_path_buf(), cache: cache.to_path_buf() });

    // Manifest (through indexes) and config.
    let (c, src, rr, shown) = (client.clone(), source.clone(), r.clone(), reference.to_string());
    let image = dog.run(reference, move || {
        let host = Platform::host();
        let (mut body, mut media) = c.manifest(&rr.reference)?;
        let mut what = format!("manifest {}", rr.reference);
        for depth in 0.. {
            let json: serde_json::Value =
                serde_json::from_slice(&body).map_err(|e| err(format!("{what}: not valid JSON: {e}")))?;
            let kind = kind_of(&media, &json, &what)?;
            if kind == OCI_MANIFEST || kind == DOCKER_MANIFEST {
                break;
            }
            if depth == MAX_INDEX_DEPTH {
                return Err(err(format!("{what}: indexes nested more than {MAX_INDEX_DEPTH} deep")));
            }
            let entries: Vec<serde_json::Value> = json["manifests"].as_array().cloned().unwrap_or_default();
            let platforms: Vec<Option<Platform>> =
                entries.iter().map(|m| Platform::from_json(&m["platform"])).collect();
            let i = pick_platform(&platforms, &host).map_err(|e| err(format!("{shown}: {e}")))?;
            let pick = &entries[i];
            let digest = pick["digest"].as_str().unwrap_or_default();
            validate_digest(digest).map_err(|e| err(format!("{what}: index entry: {e}")))?;
            (body, media) = c.manifest(digest)?;
            if pick["size"].as_u64().is_some_and(|s| s != body.len() as u64) {
                return Err(err(format!("manifest {digest} is not the size its index entry says")));
            }
            what = format!("manifest {digest}");
        }
        // Keep the manifest with the blobs, so the image reads like a layout.
        let mpath = src.staging.join(blob_path(&digest_of(&body)).map_err(|e| err(e.to_string()))?);
        fs::write(&mpath, &body).map_err(|e| Error::new(e).with_path(&mpath))?;
        let manifest: serde_json::Value = serde_json::from_slice(&body).map_err(|e| err(format!("{what}: {e}")))?;
        let cfg = manifest["config"]["digest"].as_str().ok_or_else(|| err(format!("{what}: no config")))?;
        validate_digest(cfg).map_err(|e| err(format!("{what}: config: {e}")))?;
        let cfg_size = manifest["config"]["size"].as_u64();
        if cfg_size.is_some_and(|s| s > MAX_CONFIG) {
            return Err(err(format!("{what}: config {cfg} claims {} bytes; configs are small", cfg_size.unwrap_or(0))));
        }
        for l in manifest["layers"].as_array().into_iter().flatten() {
            let d = l["digest"].as_str().unwrap_or_default();
            validate_digest(d).map_err(|e| err(format!("{what}: layer: {e}")))?;
        }
        c.fetch_blob(&src, cfg, cfg_size)?;
        // Resolve without the layers first (image_from_manifest reads only the config).
        Ok(image_from_manifest(src.as_ref(), &shown, rr.name(), &body)?)
    })?;

    // The layers no local layer holds, each blob once, a few at a time as docker
    // and containerd do.
    let mut missing: Vec<(String, Option<u64>)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, l) in image.layers.iter().enumerate() {
        if !present(&image.chain_ids[i]) {
            let d = l.digest.clone().ok_or_else(|| err(format!("layer {} has no digest", i + 1)))?;
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
    let source = Arc::try_unwrap(source).map_err(|_| err("internal error: a download thread still runs"))?;
    Ok(Pulled { image, name, source, downloaded })
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
        let d = format!("sha256:{}", "ab".repeat(32));
        let r = Reference::parse(&format!("localhost/app@{d}")).unwrap();
        assert_eq!((r.registry.as_str(), r.reference.as_str()), ("localhost", d.as_str()));
        assert_eq!(r.name(), format!("localhost/app@{d}"));
        assert!(Reference::parse("Upper/Case").is_err());
        let r = Reference::parse("docker://127.0.0.1:5000/team/app:v1").unwrap();
        assert_eq!((r.registry.as_str(), r.repository.as_str()), ("127.0.0.1:5000", "team/app"));
    }

    #[test]
    fn credentials_in_a_reference_are_refused_without_echoing_them() {
        let e = Reference::parse("alice:s3cret@127.0.0.1:5000/team/app:v1").unwrap_err().to_string();
        assert!(e.contains("--creds alice[:PASS]") && e.contains("127.0.0.1:5000/team/app:v1"), "{e}");
        assert!(!e.contains("s3cret"), "the password is not echoed: {e}");
        let e = Reference::parse("127.0.0.1:5000/Team/App:v1").unwrap_err().to_string();
        assert!(e.contains("uppercase"), "{e}");
    }

    /// The distribution reference grammar, and what used to reach URLs (`..`, `%2e`,
    /// empty components, short or uppercase digests).
    #[test]
    fn references_outside_the_grammar_are_refused() {
        let hex = "0123456789abcdef".repeat(4);
        for good in [
            "a",
            "a/b/c",
            "a__b/c-d/e.f",
            "a---b",
            "registry.example:5000/x/y:v1.2-rc_3",
            "[::1]:5000/x",
            "localhost:5000/x",
            &format!("x/y@sha256:{hex}"),
            &format!("x/y:tag@sha256:{hex}"),
        ] {
            assert!(Reference::parse(good).is_ok(), "{good} is a valid reference");
        }
        for bad in [
            "",
            "127.0.0.1:5000/repo/../../x",
            "127.0.0.1:5000/repo/../x:v1",
            "127.0.0.1:5000/%2e%2e/x",
            "127.0.0.1:5000/repo/%2e%2e/x",
            "127.0.0.1:5000/.hidden",
            "127.0.0.1:5000/a//b",
            "127.0.0.1:5000/a/",
            "127.0.0.1:5000/a_-b",
            "127.0.0.1:5000/a?x=1",
            "127.0.0.1:5000/a#b",
            "127.0.0.1:5000/a b",
            "127.0.0.1:5000/x:..",
            "127.0.0.1:5000/x:.tag",
            &format!("127.0.0.1:5000/x:{}", "t".repeat(129)),
            "127.0.0.1:5000/x@sha256:../../etc/passwd",
            &format!("127.0.0.1:5000/x@sha256:{}", hex.to_uppercase()),
            &format!("127.0.0.1:5000/x@sha256:{hex}/../../y"),
            "127.0.0.1:5000/x@md5:d41d8cd98f00b204e9800998ecf8427e",
            "host_name.example/x",
            "-host.example/x",
            "host.example:port/x",
            &format!("{}/x", "a.".repeat(130)),
        ] {
            let e = Reference::parse(bad).expect_err(bad).to_string();
            assert!(e.starts_with("invalid image reference"), "{bad}: {e}");
        }
    }

    #[test]
    fn digests_are_sha256_or_sha512_in_lowercase_hex() {
        assert!(validate_digest(&format!("sha256:{}", "a".repeat(64))).is_ok());
        assert!(validate_digest(&format!("sha512:{}", "0".repeat(128))).is_ok());
        for bad in [
            "sha256:",
            "sha256:../../../../etc/passwd",
            &format!("sha256:{}", "A".repeat(64)),
            &format!("sha256:{}", "a".repeat(63)),
            &format!("sha256:{}/..", "a".repeat(64)),
            &format!("sha512:{}", "a".repeat(64)),
            &format!("SHA256:{}", "a".repeat(64)),
            &format!("sha256:{}%2e", "a".repeat(62)),
        ] {
            assert!(validate_digest(bad).is_err(), "{bad}");
        }
        let data = b"manifest";
        assert!(digest_matches(data, &digest_of(data)));
        assert!(digest_matches(data, &format!("sha512:{}", hex::encode(Sha512::digest(data)))));
        assert!(!digest_matches(b"other", &digest_of(data)));
    }

    #[test]
    fn server_text_in_errors_stays_on_one_line() {
        assert_eq!(one_line("a\nerror: forged\r\x1b[2J", 100), "a error: forged  [2J");
        assert_eq!(one_line(&"x".repeat(10), 4), "xxxx…");
    }

    #[test]
    fn a_panic_in_a_download_thread_is_one_error() {
        let e = std::thread::Builder::new()
            .name("strata-pull-test".into())
            .spawn(|| guarded::<()>(|| panic!("boom")))
            .unwrap()
            .join()
            .expect("the panic did not escape the thread")
            .unwrap_err()
            .to_string();
        assert!(e.contains("internal error in a download thread") && e.contains("boom"), "{e}");
        assert!(e.contains("registry.rs:"), "the error says where: {e}");
    }

    #[test]
    fn redirect_targets_need_http_and_a_host() {
        for (target, insecure, ok) in [
            ("https://cdn.example/blob", false, true),
            ("http://127.0.0.1:5001/blob", true, true),
            ("http://cdn.example/blob", false, false),
            ("file:///etc/passwd", true, false),
            ("data:,hello", true, false),
            ("unix:/run/docker.sock", true, false),
            ("ftp://example/x", true, false),
        ] {
            let u = Url::parse(target).unwrap();
            assert_eq!(check_target(&u, insecure, "redirect").is_ok(), ok, "{target}");
        }
        let a = Url::parse("http://127.0.0.1:5000/v2/").unwrap();
        assert_ne!(origin(&a), origin(&Url::parse("http://127.0.0.1:5001/v2/").unwrap()), "another port");
        assert_ne!(origin(&a), origin(&Url::parse("https://127.0.0.1:5000/v2/").unwrap()), "another scheme");
        assert_eq!(origin(&a), origin(&Url::parse("http://127.0.0.1:5000/other").unwrap()));
    }

    #[test]
    fn parses_bearer_challenges() {
        let (scheme, c) = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull""#,
        )
        .unwrap();
        assert_eq!(scheme, "bearer");
        assert_eq!(c["realm"], "https://auth.example/token");
        assert_eq!(c["service"], "registry.example");
        assert_eq!(c["scope"], "repository:a/b:pull");
        let (scheme, c) = parse_challenge(r#"Basic realm="Registry Realm""#).unwrap();
        assert_eq!((scheme.as_str(), c["realm"].as_str()), ("basic", "Registry Realm"));
        assert!(parse_challenge("Negotiate abc").is_none());
    }
}
