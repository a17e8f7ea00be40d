//! The corpus: each hostile registry a case, with what strata must do about it.

use std::sync::Arc;
use std::time::Duration;

use strata_image::registry::{Error, InvalidReference, Status};
use strata_tests::registry::{sha256, Reply, Request, TestImage};

use crate::{REPO, TOKEN};

/// The two servers of a case: `port` is the registry, `other` is another host (a
/// CDN a blob redirects to, or the token service).
pub(crate) struct Env {
    pub(crate) img: TestImage,
    pub(crate) port: u16,
    pub(crate) other: u16,
}

pub(crate) type H = Arc<dyn Fn(&Env, &Request) -> Reply + Send + Sync>;
/// A check on the requests the registry and the other host saw.
pub(crate) type Check = fn(&Env, &[Request], &[Request]);

pub(crate) fn h(f: impl Fn(&Env, &Request) -> Reply + Send + Sync + 'static) -> H {
    Arc::new(f)
}

#[derive(Clone, Copy)]
pub(crate) enum Expect {
    Succeeds,
    /// Refused by the registry client with an error this accepts (and by `strata
    /// image pull` with one error line).
    Refused(fn(&Error) -> bool),
    /// Downloaded, then refused by the unpack, with an error line holding one of
    /// these (lowercase).
    UnpackRefused(&'static [&'static str]),
}

impl Expect {
    pub(crate) fn succeeds(&self) -> bool {
        matches!(self, Expect::Succeeds)
    }
}

pub(crate) struct Case {
    pub(crate) name: &'static str,
    pub(crate) expect: Expect,
    /// Words one of which the printed error line holds (lowercase), end to end.
    pub(crate) says: &'static [&'static str],
    /// The registry's answers.
    pub(crate) main: H,
    /// The other host's answers (default: the image's blobs, and tokens on `/token`).
    pub(crate) other: Option<H>,
    /// The served image from the generated one (default: as is).
    pub(crate) image: Option<fn(&TestImage) -> TestImage>,
    pub(crate) reference: Option<fn(&Env) -> String>,
    pub(crate) args: &'static [&'static str],
    /// More checks on the requests the registry and the other host saw.
    pub(crate) check: Option<Check>,
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

pub(crate) fn default_other(env: &Env, r: &Request) -> Reply {
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

pub(crate) fn cases() -> Vec<Case> {
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
