//! The hostile-registry corpus: `image pull` against a registry the test controls
//! (tests/src/registry.rs, on 127.0.0.1), on every driver. Each case says what strata
//! must do — succeed, or refuse with one clear `error:` line — and every run is checked
//! for bounded memory (peak RSS of the `strata` process, from wait4) and bounded time;
//! after a refusal the store (layers, images, blob cache) is exactly as before, nothing
//! beside the store changed, and no request left `/v2/<repository>/`.
//!
//! Which refusal it is is checked once, in this process, on the typed error of the
//! registry client (`strata_image::registry::Error`); a few cases also check the words
//! of the printed line, end to end.
//!
//! The watchdog limits are set short through the environment
//! (`STRATA_PULL_LOW_SPEED_TIME` and friends), so stalls are found in seconds.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use strata_image::registry::{self as client, Error, InvalidReference, Limits, Status};
use strata_tests::registry::{sha256, Reply, Request, Server, TestImage};
use strata_tests::{signal_at, Strata};

const REPO: &str = "strata/img";
const TOKEN: &str = "good-token";
/// The bound the issue sets for any pull, whatever the registry sends.
const MAX_RSS_KIB: i64 = 512 << 10;
/// No case may take longer (the slowest are the stall cases, ~3-5 s); a pull still
/// running then is killed and the case fails.
const MAX_TIME: Duration = Duration::from_secs(30);

/// The two servers of a case: `port` is the registry, `other` is another host (a
/// CDN a blob redirects to, or the token service).
struct Env {
    img: TestImage,
    port: u16,
    other: u16,
}

type H = Arc<dyn Fn(&Env, &Request) -> Reply + Send + Sync>;
/// A check on the requests the registry and the other host saw.
type Check = fn(&Env, &[Request], &[Request]);

fn h(f: impl Fn(&Env, &Request) -> Reply + Send + Sync + 'static) -> H {
    Arc::new(f)
}

#[derive(Clone, Copy)]
enum Expect {
    Succeeds,
    /// Refused by the registry client with an error this accepts (and by `strata
    /// image pull` with one error line).
    Refused(fn(&Error) -> bool),
    /// Downloaded, then refused by the unpack, with an error line holding one of
    /// these (lowercase).
    UnpackRefused(&'static [&'static str]),
}

impl Expect {
    fn succeeds(&self) -> bool {
        matches!(self, Expect::Succeeds)
    }
}

struct Case {
    name: &'static str,
    expect: Expect,
    /// Words one of which the printed error line holds (lowercase), end to end.
    says: &'static [&'static str],
    /// The registry's answers.
    main: H,
    /// The other host's answers (default: the image's blobs, and tokens on `/token`).
    other: Option<H>,
    /// The served image from the generated one (default: as is).
    image: Option<fn(&TestImage) -> TestImage>,
    reference: Option<fn(&Env) -> String>,
    args: &'static [&'static str],
    /// More checks on the requests the registry and the other host saw.
    check: Option<Check>,
}

impl Case {
    fn new(name: &'static str, expect: Expect, main: H) -> Case {
        Case { name, expect, says: &[], main, other: None, image: None, reference: None, args: &[], check: None }
    }
}

fn serve(env: &Env, r: &Request) -> Reply {
    env.img.answer(REPO, r)
}

fn path(r: &Request) -> &str {
    r.path.split('?').next().unwrap_or("")
}

fn is_manifest(r: &Request) -> bool {
    path(r).starts_with(&format!("/v2/{REPO}/manifests/"))
}

fn is_config(env: &Env, r: &Request) -> bool {
    path(r) == format!("/v2/{REPO}/blobs/{}", env.img.config_digest)
}

fn is_layer(env: &Env, r: &Request) -> bool {
    env.img.layer_digests.iter().any(|d| path(r) == format!("/v2/{REPO}/blobs/{d}"))
}

/// The bearer-token flow: without the token, a 401 naming the token service on the
/// other host.
fn with_auth(env: &Env, r: &Request, inner: impl Fn(&Env, &Request) -> Reply) -> Reply {
    if r.authorization.as_deref() == Some(&format!("Bearer {TOKEN}")) {
        return inner(env, r);
    }
    let challenge =
        format!(r#"Bearer realm="http://127.0.0.1:{}/token",service="test",scope="repository:{REPO}:pull""#, env.other);
    Reply::new(401, r#"{"errors":[{"code":"UNAUTHORIZED"}]}"#).header("WWW-Authenticate", &challenge)
}

fn token_reply(token: &str) -> Reply {
    Reply::new(200, serde_json::json!({ "token": token }).to_string()).header("Content-Type", "application/json")
}

fn default_other(env: &Env, r: &Request) -> Reply {
    if path(r) == "/token" {
        return token_reply(TOKEN);
    }
    serve(env, r)
}

/// A manifest whose layer `i` has `digest` (the other fields stay).
fn layer_digest(img: &TestImage, digest: &str) -> TestImage {
    let mut m = img.manifest_json();
    m["layers"][0]["digest"] = digest.into();
    img.with_manifest(&m)
}

/// A tag that resolves to an index whose one entry (for this host) has `digest`.
fn index_to(env: &Env, digest: &str) -> Reply {
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest,
            "size": env.img.manifest.len(),
            "platform": {"os": "linux", "architecture": strata_image::image::host_arch()}
        }]
    });
    Reply::new(200, index.to_string()).header("Content-Type", "application/vnd.oci.image.index.v1+json")
}

/// A self-consistent image whose config names a wrong diff_id for its top layer: the
/// download is fine, the unpack fails after the first layer is in.
fn lying_diff_id(img: &TestImage) -> TestImage {
    let mut img = img.clone();
    let mut cfg: serde_json::Value = serde_json::from_slice(&img.blobs[&img.config_digest]).unwrap();
    let n = cfg["rootfs"]["diff_ids"].as_array().unwrap().len();
    cfg["rootfs"]["diff_ids"][n - 1] = sha256(b"not this layer").into();
    let bytes = serde_json::to_vec(&cfg).unwrap();
    img.config_digest = sha256(&bytes);
    let mut m = img.manifest_json();
    m["config"]["digest"] = img.config_digest.clone().into();
    m["config"]["size"] = bytes.len().into();
    img.blobs.insert(img.config_digest.clone(), bytes);
    img.with_manifest(&m)
}

fn no_token_left_home(_: &Env, main: &[Request], other: &[Request]) {
    assert!(main.iter().any(|r| r.authorization.is_some()), "the registry was asked with its token");
    for r in other {
        assert!(r.authorization.is_none(), "a token went to another host/port: {r:?}");
    }
}

fn blobs_from_the_other_port_without_token(e: &Env, main: &[Request], other: &[Request]) {
    no_token_left_home(e, main, other);
    assert!(other.iter().any(|r| r.path.contains("/blobs/")), "the blobs came from the other port: {other:?}");
}

fn nothing_requested(_: &Env, main: &[Request], other: &[Request]) {
    assert!(main.is_empty() && other.is_empty(), "an invalid reference reached the registry: {main:?} {other:?}");
}

/// A redirect to somewhere a pull must not go (not http(s), no host, no URL).
fn redirect_refused(e: &Error) -> bool {
    matches!(e, Error::Scheme { .. } | Error::NoHost { .. } | Error::BadLocation { .. } | Error::PlainHttp { .. })
}

fn stalled(e: &Error) -> bool {
    matches!(e, Error::Stalled { .. })
}

/// A stall, or every try cut by the read timeout or a reset.
fn stalled_or_gave_up(e: &Error) -> bool {
    matches!(e, Error::Stalled { .. } | Error::GaveUp { .. })
}

fn too_large(e: &Error) -> bool {
    matches!(e, Error::TooLarge { .. })
}

fn media_type(e: &Error) -> bool {
    matches!(e, Error::Protocol { why, .. } if why.contains("media type"))
}

/// Content under `what` (`blob `, `manifest `) whose digest is another.
fn not_its_digest(e: &Error, what: &str) -> bool {
    matches!(e, Error::DigestMismatch { what: w, want, got } if w.starts_with(what) && want != got)
}

/// A manifest or index naming a digest outside the grammar: refused when the
/// document is read (oci-spec's digest type), or by strata's own check.
fn bad_document(e: &Error) -> bool {
    matches!(e, Error::Json { source, .. } if source.to_string().to_lowercase().contains("digest") || source.to_string().contains("encoded"))
        || matches!(e, Error::Digest { .. })
}

fn cases() -> Vec<Case> {
    use Expect::*;
    let slow = Duration::from_millis(400);
    let mut v = vec![
        Case::new("a well-behaved registry", Succeeds, h(serve)),
        Case {
            check: Some(no_token_left_home),
            ..Case::new("token auth with the realm on another host", Succeeds, h(|e, r| with_auth(e, r, serve)))
        },
        Case {
            check: Some(blobs_from_the_other_port_without_token),
            ..Case::new(
                "a blob redirected to another port gets no token",
                Succeeds,
                h(|e, r| {
                    with_auth(e, r, |e, r| {
                        if is_layer(e, r) {
                            Reply::redirect(&format!("http://127.0.0.1:{}{}", e.other, r.path))
                        } else {
                            serve(e, r)
                        }
                    })
                }),
            )
        },
        Case::new(
            "5xx twice, then the answer",
            Succeeds,
            h(|e, r| if is_manifest(r) && r.nth < 2 { Reply::new(503, "busy") } else { serve(e, r) }),
        ),
        Case::new(
            "a connection reset once",
            Succeeds,
            h(|e, r| if is_layer(e, r) && r.nth == 0 { Reply::reset() } else { serve(e, r) }),
        ),
        Case::new(
            "a relative redirect within the registry",
            Succeeds,
            h(|e, r| {
                if is_layer(e, r) && !r.path.contains("moved=1") {
                    Reply::redirect(&format!("{}?moved=1", path(r)))
                } else {
                    serve(e, r)
                }
            }),
        ),
    ];
    for (name, location) in [
        ("a blob redirected to file://", "file:///etc/passwd"),
        ("a blob redirected to data:", "data:,hello"),
        ("a blob redirected to unix:", "unix:/run/docker.sock"),
        ("a blob redirected to ftp://", "ftp://127.0.0.1/x"),
        ("a blob redirected to a host-less http URL", "http://"),
        ("a blob redirected to http://:80/", "http://:80/x"),
        ("a blob redirected to a broken IPv6 host", "http://[::1/x"),
    ] {
        v.push(Case {
            says: &["redirect"],
            ..Case::new(
                name,
                Refused(redirect_refused),
                h(move |e, r| if is_layer(e, r) { Reply::redirect(location) } else { serve(e, r) }),
            )
        });
    }
    v.extend([
        Case::new(
            "a manifest redirected to itself forever",
            Refused(|e| matches!(e, Error::TooManyRedirects { .. })),
            h(|e, r| if is_manifest(r) { Reply::redirect(&r.path) } else { serve(e, r) }),
        ),
        Case {
            says: &["stalled"],
            ..Case::new(
                "a layer body of 1 byte per 400 ms",
                Refused(stalled),
                h(move |e, r| {
                    let mut a = serve(e, r);
                    if is_layer(e, r) {
                        a.trickle = Some(slow);
                    }
                    a
                }),
            )
        },
        Case::new(
            "a manifest body of 1 byte per 400 ms",
            Refused(stalled),
            h(move |e, r| {
                let mut a = serve(e, r);
                if is_manifest(r) {
                    a.trickle = Some(slow);
                }
                a
            }),
        ),
        Case::new(
            "manifest headers of 1 byte per 400 ms",
            Refused(stalled),
            h(move |e, r| {
                let mut a = serve(e, r);
                if is_manifest(r) {
                    a.trickle_head = Some(slow);
                }
                a
            }),
        ),
        Case::new(
            "a layer body that never comes",
            Refused(stalled_or_gave_up),
            h(|e, r| {
                let mut a = serve(e, r);
                if is_layer(e, r) {
                    a.stall = Some(Duration::from_secs(60));
                }
                a
            }),
        ),
        Case {
            args: &["--timeout", "3", "--low-speed-limit", "10"],
            says: &["total deadline"],
            ..Case::new(
                "fast enough, but past the total deadline",
                Refused(|e| matches!(e, Error::Deadline { .. })),
                h(|e, r| {
                    let mut a = serve(e, r);
                    if is_layer(e, r) {
                        a.trickle = Some(Duration::from_millis(20));
                    }
                    a
                }),
            )
        },
        Case::new(
            "a layer blob that is not its digest",
            Refused(|e| not_its_digest(e, "blob ")),
            h(|e, r| {
                let mut a = serve(e, r);
                if is_layer(e, r) {
                    let n = a.body.len() / 2;
                    a.body[n] ^= 0xff;
                }
                a
            }),
        ),
        Case::new(
            "a config that is not its digest",
            Refused(|e| not_its_digest(e, "blob ")),
            h(|e, r| {
                let mut a = serve(e, r);
                if is_config(e, r) {
                    a.body[0] ^= 0x20;
                }
                a
            }),
        ),
        Case {
            reference: Some(|e| format!("127.0.0.1:{}/{REPO}@{}", e.port, e.img.manifest_digest())),
            ..Case::new(
                "a manifest pulled by digest that is not that digest",
                Refused(|e| not_its_digest(e, "manifest ")),
                h(|e, r| {
                    let mut a = serve(e, r);
                    if is_manifest(r) {
                        a.body.push(b'\n');
                    }
                    a
                }),
            )
        },
        Case::new(
            "a wrong Docker-Content-Digest",
            Refused(|e| matches!(e, Error::ClaimedDigest { claimed, got, .. } if claimed != got)),
            h(|e, r| {
                let mut a = serve(e, r);
                if is_manifest(r) {
                    a.headers.retain(|(k, _)| k != "Docker-Content-Digest");
                    a = a.header("Docker-Content-Digest", &sha256(b"another manifest"));
                }
                a
            }),
        ),
        Case::new(
            "a Docker-Content-Digest with a traversal",
            Refused(|e| matches!(e, Error::Digest { context, .. } if context.contains("Docker-Content-Digest"))),
            h(|e, r| {
                let mut a = serve(e, r);
                if is_manifest(r) {
                    a.headers.retain(|(k, _)| k != "Docker-Content-Digest");
                    a = a.header("Docker-Content-Digest", "sha256:../../../../etc/passwd");
                }
                a
            }),
        ),
        Case::new(
            "a layer cut short of its Content-Length",
            Refused(|e| matches!(e, Error::GaveUp { .. } | Error::Stalled { .. } | Error::Truncated { .. })),
            h(|e, r| {
                let mut a = serve(e, r);
                if is_layer(e, r) {
                    a.content_length = Some(a.body.len() as u64 + 1000);
                }
                a
            }),
        ),
        Case::new(
            "a Content-Length shorter than the layer",
            Refused(|e| matches!(e, Error::Truncated { want, got, .. } if got < want)),
            h(|e, r| {
                let mut a = serve(e, r);
                if is_layer(e, r) {
                    a.content_length = Some(a.body.len() as u64 - 100);
                }
                a
            }),
        ),
        Case::new(
            "a manifest claiming 50 MB",
            Refused(too_large),
            h(|e, r| {
                let mut a = serve(e, r);
                if is_manifest(r) {
                    a.content_length = Some(50 << 20);
                }
                a
            }),
        ),
        Case {
            image: Some(|img| {
                let mut m = img.manifest_json();
                m["annotations"] = serde_json::json!({ "pad": "x".repeat(50 << 20) });
                img.with_manifest(&m)
            }),
            ..Case::new(
                "a 50 MB manifest, no Content-Length",
                Refused(too_large),
                h(|e, r| {
                    let mut a = serve(e, r);
                    a.no_length = true;
                    a
                }),
            )
        },
        Case::new(
            "a manifest nested 100,000 deep",
            Refused(|e| matches!(e, Error::Json { .. })),
            h(|e, r| {
                if is_manifest(r) {
                    let body = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
                    Reply::new(200, body).header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
                } else {
                    serve(e, r)
                }
            }),
        ),
        Case::new(
            "a manifest served as an index",
            Refused(media_type),
            h(|e, r| {
                let mut a = serve(e, r);
                if is_manifest(r) {
                    a.headers.retain(|(k, _)| k != "Content-Type");
                    a = a.header("Content-Type", "application/vnd.oci.image.index.v1+json");
                }
                a
            }),
        ),
        Case::new(
            "a docker schema 1 manifest",
            Refused(media_type),
            h(|e, r| {
                let mut a = serve(e, r);
                if is_manifest(r) {
                    a.headers.retain(|(k, _)| k != "Content-Type");
                    a = a.header("Content-Type", "application/vnd.docker.distribution.manifest.v1+prettyjws");
                }
                a
            }),
        ),
        Case {
            image: Some(|img| {
                let mut m = img.manifest_json();
                m["config"]["size"] = (1u64 << 40).into();
                img.with_manifest(&m)
            }),
            ..Case::new("a config descriptor of 1 TiB", Refused(too_large), h(serve))
        },
        Case {
            image: Some(|img| layer_digest(img, "sha256:../../../../../../etc/passwd")),
            ..Case::new("a layer digest with a traversal", Refused(bad_document), h(serve))
        },
        Case {
            image: Some(|img| {
                let mut m = img.manifest_json();
                m["config"]["digest"] = format!("sha256:{}/../../../../x", "a".repeat(64)).into();
                img.with_manifest(&m)
            }),
            ..Case::new("a config digest with a traversal", Refused(bad_document), h(serve))
        },
        Case {
            image: Some(|img| layer_digest(img, &img.layer_digests[0].to_uppercase().replace("SHA256", "sha256"))),
            ..Case::new("an uppercase layer digest", Refused(bad_document), h(serve))
        },
        Case::new(
            "an index entry with a traversal digest",
            Refused(bad_document),
            h(|e, r| {
                if path(r).ends_with("/manifests/v1") {
                    index_to(e, "sha256:../../../../../token")
                } else {
                    serve(e, r)
                }
            }),
        ),
        Case::new(
            "an index entry with a %2e%2e digest",
            Refused(bad_document),
            h(|e, r| {
                if path(r).ends_with("/manifests/v1") {
                    index_to(e, "sha256:%2e%2e/%2e%2e/%2e%2e/token")
                } else {
                    serve(e, r)
                }
            }),
        ),
        Case {
            other: Some(h(|_, _| token_reply("abc\r\nX-Injected: 1"))),
            ..Case::new(
                "a token with a header injection",
                Refused(|e| matches!(e, Error::Token { .. })),
                h(|e, r| with_auth(e, r, serve)),
            )
        },
        Case {
            other: Some(h(|_, _| Reply { no_length: true, ..token_reply(&"t".repeat(10 << 20)) })),
            ..Case::new(
                "a 10 MB token",
                Refused(|e| matches!(e, Error::TooLarge { what, .. } if what.starts_with("token answer"))),
                h(|e, r| with_auth(e, r, serve)),
            )
        },
        Case::new(
            "a realm at file://",
            Refused(|e| matches!(e, Error::Scheme { what, .. } if what.starts_with("auth realm"))),
            h(|_, _| {
                Reply::new(401, "").header("WWW-Authenticate", r#"Bearer realm="file:///etc/passwd",service="x""#)
            }),
        ),
        Case::new(
            "a token that is never accepted",
            Refused(|e| matches!(e, Error::NeedsCredentials { .. } | Error::Stalled { .. })),
            h(|e, r| with_auth(e, &Request { authorization: None, ..r.clone() }, serve)),
        ),
        Case::new(
            "a 404 with a 50 MB body",
            Refused(|e| matches!(e, Error::Status(Status { status: 404, .. }))),
            h(|e, r| {
                if is_manifest(r) {
                    Reply { no_length: true, ..Reply::new(404, vec![b'x'; 50 << 20]) }
                } else {
                    serve(e, r)
                }
            }),
        ),
        Case {
            says: &["404: not here error: forged"],
            ..Case::new(
                "an error body that forges a second error line",
                Refused(|e| matches!(e, Error::Status(Status { status: 404, code: None, .. }))),
                h(|e, r| if is_manifest(r) { Reply::new(404, "not here\nerror: forged\n") } else { serve(e, r) }),
            )
        },
        Case::new(
            "every connection reset",
            Refused(stalled_or_gave_up),
            h(|e, r| if is_layer(e, r) { Reply::reset() } else { serve(e, r) }),
        ),
        Case::new(
            "always 500",
            Refused(|e| matches!(e, Error::GaveUp { status: Some(500), .. } | Error::Stalled { .. })),
            h(|_, _| Reply::new(500, "down")),
        ),
        Case {
            image: Some(lying_diff_id),
            ..Case::new("a config whose last diff_id lies (fails in the unpack)", UnpackRefused(&["diff_id"]), h(serve))
        },
    ]);
    for (name, reference) in [
        ("a reference with ..", (|e: &Env| format!("127.0.0.1:{}/{REPO}/../../x:v1", e.port)) as fn(&Env) -> String),
        ("a reference with %2e%2e", |e| format!("127.0.0.1:{}/%2e%2e/%2e%2e/x", e.port)),
        ("a reference digest with ..", |e| format!("127.0.0.1:{}/{REPO}@sha256:../../../token", e.port)),
        ("a reference with an empty component", |e| format!("127.0.0.1:{}/strata//img", e.port)),
        ("a tag with a slash-free traversal", |e| format!("127.0.0.1:{}/{REPO}:..", e.port)),
    ] {
        v.push(Case {
            reference: Some(reference),
            check: Some(nothing_requested),
            says: &["invalid image reference"],
            ..Case::new(name, Refused(|e| matches!(e, Error::Reference(InvalidReference::Grammar { .. }))), h(serve))
        });
    }
    v
}

/// A `strata` run with its peak RSS and wall time.
struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
    rss_kib: i64,
    took: Duration,
}

/// A pull that hangs fails the case (it is killed at MAX_TIME), rather than the whole
/// run. The peak RSS is strata's own (see strata_tests::run_measured).
fn run_measured(cmd: Command) -> Run {
    let m = strata_tests::run_measured(cmd, MAX_TIME);
    Run {
        ok: m.code == Some(0),
        stdout: m.stdout,
        stderr: m.stderr,
        rss_kib: (m.peak_rss >> 10) as i64,
        took: m.elapsed,
    }
}

/// Every file under `dir` with its size and content hash (for the blob cache and what
/// lies beside the store).
fn files(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
            if p.is_dir() && !p.is_symlink() {
                out.insert(rel + "/", String::new());
                stack.push(p);
            } else {
                out.insert(rel, std::fs::read(&p).map(|d| sha256(&d)).unwrap_or_default());
            }
        }
    }
    out
}

/// The store as a user sees it, and its blob cache.
fn store_state(s: &Strata) -> (String, String, BTreeMap<String, String>) {
    let (layers, images) = s.state();
    (layers, images, files(&s.root.join("blobs")))
}

fn pull(s: &Strata, reference: &str, args: &[&str]) -> Run {
    let mut cmd = s.command(&["image", "pull", "--insecure", reference]);
    cmd.args(args)
        .env("STRATA_PULL_LOW_SPEED_LIMIT", "1024")
        .env("STRATA_PULL_LOW_SPEED_TIME", "3")
        .env("STRATA_PULL_TIMEOUT", "60");
    run_measured(cmd)
}

/// The two servers of a case, answering, and the reference to pull.
struct Serving {
    registry: Server,
    other_host: Server,
    env: Arc<OnceLock<Env>>,
    reference: String,
}

impl Serving {
    fn start(case: &Case, base: &TestImage) -> Serving {
        let img = match case.image {
            Some(f) => f(base),
            None => base.clone(),
        };
        let env: Arc<OnceLock<Env>> = Arc::new(OnceLock::new());
        let (e1, main) = (env.clone(), case.main.clone());
        let registry = Server::start(Arc::new(move |r| main(e1.get().expect("env"), r)));
        let (e2, other) = (env.clone(), case.other.clone().unwrap_or_else(|| h(default_other)));
        let other_host = Server::start(Arc::new(move |r| other(e2.get().expect("env"), r)));
        let _ = env.set(Env { img, port: registry.port, other: other_host.port });
        let e = env.get().unwrap();
        let reference = match case.reference {
            Some(f) => f(e),
            None => format!("127.0.0.1:{}/{REPO}:v1", e.port),
        };
        Serving { registry, other_host, env, reference }
    }

    fn env(&self) -> &Env {
        self.env.get().unwrap()
    }

    /// No request left `/v2/<repository>/` or held a traversal; then the case's own
    /// checks on what the servers saw.
    fn check_requests(&self, case: &Case, what: &str) {
        let (main_seen, other_seen) = (self.registry.requests(), self.other_host.requests());
        for r in &main_seen {
            assert!(
                r.path == "/v2/" || r.path.starts_with(&format!("/v2/{REPO}/")),
                "{what}: a request outside /v2/{REPO}/: {}",
                r.path
            );
            assert!(!r.path.contains("..") && !r.path.to_lowercase().contains("%2e"), "{what}: {}", r.path);
        }
        if let Some(check) = case.check {
            check(self.env(), &main_seen, &other_seen);
        }
    }
}

/// The limits `pull` (below) sets through the environment, with a case's flags.
fn limits(args: &[&str]) -> Limits {
    let flag = |name: &str, default: u64| {
        args.iter().position(|a| *a == name).map_or(default, |i| args[i + 1].parse().expect("a number"))
    };
    Limits {
        timeout: Duration::from_secs(flag("--timeout", 60)),
        low_speed_limit: flag("--low-speed-limit", 1024),
        low_speed_time: Duration::from_secs(flag("--low-speed-time", 3)),
    }
}

fn run_case(case: &Case, s: &Strata, base: &TestImage, outside: &Path, driver: &str) {
    let serving = Serving::start(case, base);
    let (env, reference) = (serving.env(), serving.reference.clone());

    let what = format!("{driver}: {}", case.name);
    let before = store_state(s);
    let outside_before = files(outside);
    let run = pull(s, &reference, case.args);
    let errors: Vec<&str> = run.stderr.lines().filter(|l| l.starts_with("error: ")).collect();
    assert!(run.rss_kib < MAX_RSS_KIB, "{what}: peak RSS {} MiB", run.rss_kib >> 10);
    assert!(run.took < MAX_TIME, "{what}: took {:?}", run.took);
    assert!(!run.stderr.contains("panicked"), "{what}: a panic: {}", run.stderr);
    match case.expect {
        Expect::Succeeds => {
            assert!(run.ok, "{what}: should succeed: {}", run.stderr);
            assert!(errors.is_empty(), "{what}: {}", run.stderr);
            let top = run.stdout.trim();
            assert!(top.starts_with("sha256:"), "{what}: prints the top layer: {}", run.stdout);
            let images = s.ok(&["image", "ls", "--json"]);
            assert!(images.contains(&reference) && images.contains(top), "{what}: recorded: {images}");
            let cached = files(&s.root.join("blobs"));
            for d in env.img.layer_digests.iter().chain([&env.img.config_digest]) {
                let rel = format!("blobs/sha256/{}", d.trim_start_matches("sha256:"));
                assert!(cached.contains_key(&rel), "{what}: {d} is in the blob cache after the pull");
            }
            assert!(!cached.keys().any(|k| k.starts_with(".pull-")), "{what}: staging left: {cached:?}");
        }
        Expect::Refused(_) | Expect::UnpackRefused(_) => {
            assert!(!run.ok, "{what}: should be refused, but the pull succeeded");
            assert_eq!(errors.len(), 1, "{what}: one error line expected: {}", run.stderr);
            let line = errors[0].to_lowercase();
            let words = match case.expect {
                Expect::UnpackRefused(words) => words,
                _ => case.says,
            };
            assert!(
                words.is_empty() || words.iter().any(|w| line.contains(w)),
                "{what}: the error should say one of {words:?}: {line}"
            );
            assert!(line.len() < 1200, "{what}: the error line is {} bytes", line.len());
            assert_eq!(store_state(s), before, "{what}: the store changed after a refusal");
        }
    }
    assert_eq!(files(outside), outside_before, "{what}: something beside the store changed");
    serving.check_requests(case, &what);
}

/// Each refusal of the corpus, by the registry client in this process: the typed
/// error is the one the case names, and the blob cache holds nothing afterwards (no
/// staging folder, no blob). Needs no driver, so it runs unprivileged.
#[test]
fn hostile_registries_are_refused_with_typed_errors() {
    let image = TestImage::generate(21, 2);
    let only = std::env::var("STRATA_CORPUS_CASE").unwrap_or_default();
    let mut failed = Vec::new();
    for case in cases().iter().filter(|c| c.name.contains(&only)) {
        let Expect::Refused(accepts) = case.expect else { continue };
        let start = Instant::now();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let serving = Serving::start(case, &image);
            let cache = tempfile::tempdir().unwrap();
            let auth = client::AuthOptions::default();
            let got = client::pull_all(&serving.reference, true, &auth, limits(case.args), cache.path());
            match got {
                Ok(_) => panic!("{}: pulled", case.name),
                Err(e) => assert!(accepts(&e), "{}: not the error expected: {e:?} ({e})", case.name),
            }
            assert!(files(cache.path()).is_empty(), "{}: left in the cache: {:?}", case.name, files(cache.path()));
            serving.check_requests(case, case.name);
        }));
        eprintln!(
            "{}: {} in {:.1}s",
            case.name,
            if r.is_ok() { "ok" } else { "FAILED" },
            start.elapsed().as_secs_f64()
        );
        if r.is_err() {
            failed.push(case.name);
        }
    }
    assert!(failed.is_empty(), "{} case(s) failed: {failed:?}", failed.len());
}

/// Runs the corpus on `driver` with its stores under `base`: the refusals on one store
/// that already holds an image (which they must leave as it is), the successes each
/// on a fresh store.
fn hostile_registries(driver: &str, base: &Path) {
    let image = TestImage::generate(21, 2);
    let outside = base.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("canary"), b"beside the store").unwrap();

    // The store the refusals run on already holds another image, pulled.
    let s = Strata::at(&base.join("store"), driver);
    let held = TestImage::generate(22, 2);
    let held_registry = Server::start(Arc::new(move |r| held.answer(REPO, r)));
    let run = pull(&s, &format!("127.0.0.1:{}/{REPO}:v1", held_registry.port), &[]);
    assert!(run.ok, "{driver}: the first pull: {}", run.stderr);

    // Every case runs, and the failures are listed together at the end.
    let mut failed = Vec::new();
    // STRATA_CORPUS_CASE=WORDS runs only the cases whose name holds WORDS.
    let only = std::env::var("STRATA_CORPUS_CASE").unwrap_or_default();
    for (i, case) in cases().iter().enumerate().filter(|(_, c)| c.name.contains(&only)) {
        let start = Instant::now();
        let fresh;
        let store = if case.expect.succeeds() {
            fresh = Strata::at(&base.join(format!("fresh{i}")), driver);
            &fresh
        } else {
            &s
        };
        let r =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_case(case, store, &image, &outside, driver)));
        let verdict = if r.is_ok() { "ok" } else { "FAILED" };
        eprintln!("{driver}: {}: {verdict} in {:.1}s", case.name, start.elapsed().as_secs_f64());
        if r.is_err() {
            failed.push(case.name);
        }
    }
    assert!(failed.is_empty(), "{driver}: {} case(s) failed: {failed:?}", failed.len());
}

strata_tests::on_every_driver_in!(hostile_registries);

#[test]
fn pull_help_documents_the_deadlines() {
    let o = Command::new(strata_tests::strata_bin()).args(["image", "pull", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&o.stdout);
    for w in
        ["--timeout", "--low-speed-limit", "--low-speed-time", "STRATA_PULL_TIMEOUT", "STRATA_PULL_LOW_SPEED_LIMIT"]
    {
        assert!(help.contains(w), "`image pull --help` names {w}: {help}");
    }
}

/// Ctrl-C at moments spread over a pull (download, and each layer of the unpack) of an image into a store
/// that holds another: the pull either completes, or fails with one `error:` line
/// saying it was interrupted and leaves the store (layers, images, blob cache) as it
/// was — no layer that no image references, no staging folder.
fn ctrl_c_of_a_pull(driver: &str, base: &Path) {
    let held = TestImage::generate(24, 2);
    let held_registry = Server::start(Arc::new(move |r| held.answer(REPO, r)));
    // Three layers that take a while to apply, so that signals land in each.
    let size = bench_harness::workload::WorkloadSize { base_dirs: 40, base_files: 800, app_files: 1500 };
    let img = TestImage::generate_sized(25, 3, size);
    let registry = Server::start(Arc::new(move |r| {
        // Slow enough answers that the download takes a while too.
        Reply { delay: Some(Duration::from_millis(100)), ..img.answer(REPO, r) }
    }));
    let reference = format!("127.0.0.1:{}/{REPO}:v1", registry.port);
    let prepare = |name: &str| {
        let s = Strata::at(&base.join(name), driver);
        let run = pull(&s, &format!("127.0.0.1:{}/{REPO}:v1", held_registry.port), &[]);
        assert!(run.ok, "{driver}: {}", run.stderr);
        s
    };
    let clean = prepare("clean");
    let run = pull(&clean, &reference, &[]);
    assert!(run.ok, "{driver}: the uninterrupted pull: {}", run.stderr);
    // When to interrupt: after the first stderr line holding the marker ("" is the
    // start), plus a delay. "downloaded" starts the unpack; "layer N/" ends layer N.
    let moments: [(&str, u64); 6] =
        [("", 50), ("", 250), ("downloaded", 0), ("downloaded", 100), ("downloaded", 300), ("layer 1/", 0)];
    let mut interrupted = 0;
    for (k, (marker, delay)) in moments.into_iter().enumerate() {
        let s = prepare(&format!("k{k}"));
        let before = store_state(&s);
        let what = format!("{driver}: SIGINT {delay} ms after {marker:?}");
        let run = signal_at(
            s.command(&["image", "pull", "--insecure", &reference]),
            marker,
            Duration::from_millis(delay),
            Signal::SIGINT,
        );
        let (status, stderr) = (run.status, run.stderr.as_str());
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error: ")).collect();
        let phase = if stderr.contains("downloaded ") { "unpack" } else { "download" };
        eprintln!("{what}: {} during the {phase}", if status.success() { "completed" } else { "interrupted" });
        if status.success() {
            assert!(errors.is_empty(), "{what}: {stderr}");
            continue; // it finished before the signal
        }
        interrupted += 1;
        if run.before_main() {
            assert_eq!(store_state(&s), before, "{what}: the store changed");
            continue;
        }
        run.assert_interrupted(&what);
        assert_eq!(store_state(&s), before, "{what}: the store changed");
    }
    // The first three moments are always before the end (the download alone takes
    // several 100 ms answers, and an unpack more than nothing).
    assert!(interrupted >= 3, "{driver}: only {interrupted} of {} pulls were interrupted", moments.len());
}

strata_tests::on_every_driver_in!(ctrl_c_of_a_pull);
