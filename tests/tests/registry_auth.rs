//! Registries that want credentials: `image pull` and `image push` with htpasswd
//! (Basic) credentials from `--creds`, the containers auth file (as `skopeo login`
//! writes it) and Docker's config.json (plain `auths` and a `docker-credential-*`
//! helper), against Debian's docker-registry on 127.0.0.1; test registries whose token
//! service, blob reads and upload sessions are on another port, which must never see a
//! credential or a token (pull and push), and which decline cross-repository mounts.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

use strata_tests::registry::{sha256, DockerRegistry, Reply, Request, Server, TestImage};
use strata_tests::{privileged, strata_bin, Strata};

const USER: &str = "alice";
/// With a ':' inside: only the first one separates user from password.
const PASSWORD: &str = "s3cret:pw";
/// `--creds`: USER:PASSWORD (checked in `fixed_credentials_agree`).
const CREDS: &str = "alice:s3cret:pw";

#[test]
fn fixed_credentials_agree() {
    assert_eq!(CREDS, format!("{USER}:{PASSWORD}"));
}

/// Where credentials may come from, as each test sets it: nothing of the user's own.
#[derive(Default)]
struct Env {
    home: Option<PathBuf>,
    xdg_runtime_dir: Option<PathBuf>,
    registry_auth_file: Option<PathBuf>,
    path_prepend: Option<PathBuf>,
}

fn pull(s: &Strata, env: &Env, reference: &str, args: &[&str]) -> Output {
    let mut all = vec!["image", "pull", "--insecure"];
    all.extend_from_slice(args);
    all.push(reference);
    run_with(s, env, &all)
}

/// `image push --insecure [args] NAME REF`.
fn push(s: &Strata, env: &Env, name: &str, reference: &str, args: &[&str]) -> Output {
    let mut all = vec!["image", "push", "--insecure"];
    all.extend_from_slice(args);
    all.extend([name, reference]);
    run_with(s, env, &all)
}

/// strata with `args`, credentials only from where `env` says.
fn run_with(s: &Strata, env: &Env, args: &[&str]) -> Output {
    let empty = tempfile::tempdir().unwrap();
    let mut c = Command::new(strata_bin());
    c.arg("--root").arg(&s.root).arg("--driver").arg(&s.driver);
    c.args(args);
    c.env_remove("REGISTRY_AUTH_FILE").env_remove("DOCKER_CONFIG").env_remove("XDG_RUNTIME_DIR");
    c.env("HOME", env.home.as_deref().unwrap_or(empty.path()));
    // Never none: without it the host's /run/containers/UID/auth.json would be read.
    c.env("XDG_RUNTIME_DIR", env.xdg_runtime_dir.as_deref().unwrap_or(empty.path()));
    if let Some(f) = &env.registry_auth_file {
        c.env("REGISTRY_AUTH_FILE", f);
    }
    if let Some(d) = &env.path_prepend {
        c.env("PATH", format!("{}:{}", d.display(), std::env::var("PATH").unwrap_or_default()));
    }
    c.stdin(std::process::Stdio::null()).output().expect("run strata")
}

fn one_error(o: &Output) -> String {
    assert!(!o.status.success(), "the pull should have failed");
    assert_eq!(o.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "one error line expected: {stderr}");
    errors[0].to_string()
}

fn top(o: &Output) -> String {
    assert!(o.status.success(), "pull failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn layout(dir: &Path) -> PathBuf {
    use strata_cli::workload::{generate, gzip, WorkloadSize};
    let blobs: Vec<Vec<u8>> = generate(21, WorkloadSize::small()).into_iter().take(2).map(|l| gzip(&l.tar)).collect();
    strata_image::image::write_layout(dir, "v1", &blobs).unwrap();
    dir.to_path_buf()
}

/// Debian's docker-registry behind htpasswd (USER, PASSWORD), holding the generated
/// two-layer image (also an OCI layout in `img`) at `<repo>:v1`.
struct Private {
    work: tempfile::TempDir,
    img: PathBuf,
    reg: DockerRegistry,
    /// `127.0.0.1:PORT/<repo>:v1`
    reference: String,
}

/// The registry for test `what`; `None` (the test skips) where it cannot run.
fn private_registry(what: &str, repo: &str) -> Option<Private> {
    if !privileged(what) || !strata_tests::installed(&["htpasswd", "docker-registry", "skopeo"], what) {
        return None;
    }
    let work = tempfile::tempdir().unwrap();
    let img = layout(&work.path().join("img"));
    let reg = DockerRegistry::start(&[(USER, PASSWORD)]);
    reg.skopeo_push(&format!("oci:{}:v1", img.display()), &format!("{repo}:v1"), Some(CREDS));
    let reference = format!("127.0.0.1:{}/{repo}:v1", reg.port);
    Some(Private { work, img, reg, reference })
}

#[test]
fn pull_with_htpasswd_credentials_from_each_source() {
    let Some(Private { work, img, reg, reference }) = private_registry("registry credential tests", "strata/private")
    else {
        return;
    };
    let host = format!("127.0.0.1:{}", reg.port);

    let local = Strata::new("vfs");
    let want_top = local.ok(&["image", "unpack", &format!("{}:v1", img.display())]).trim().to_string();
    let want = strata_testkit::tree::Tree::capture(Path::new(local.ok(&["layer", "mount", &want_top]).trim())).unwrap();

    // Without credentials, and with wrong ones: one clear line, nothing stored.
    let s = Strata::new("vfs");
    let before = s.state();
    let e = one_error(&pull(&s, &Env::default(), &reference, &[]));
    assert!(e.contains("401 Unauthorized") && e.contains(&format!("{host} needs credentials")), "{e}");
    let e = one_error(&pull(&s, &Env::default(), &reference, &["--creds", &format!("{USER}:wrong")]));
    assert!(e.contains(&format!("the credentials for {host} were refused")), "{e}");
    assert_eq!(s.state(), before, "a refused pull stores nothing");
    // The same two refusals as the registry client returns them.
    {
        use strata_image::registry::{pull_all, AuthOptions, Error, Limits};
        let cache = tempfile::tempdir().unwrap();
        let authfile = work.path().join("no-credentials.json");
        std::fs::write(&authfile, r#"{"auths":{}}"#).unwrap();
        let limits = Limits {
            timeout: std::time::Duration::from_secs(60),
            low_speed_limit: 1024,
            low_speed_time: std::time::Duration::from_secs(10),
        };
        let refused = |creds: Option<&str>| {
            let auth = AuthOptions { creds: creds.map(str::to_string), authfile: Some(authfile.clone()) };
            pull_all(&reference, true, &auth, limits, cache.path()).err().expect("refused")
        };
        assert!(matches!(refused(None), Error::NeedsCredentials { host: h } if h == host));
        let wrong = format!("{USER}:wrong");
        assert!(matches!(refused(Some(&wrong)), Error::CredentialsRefused { host: h } if h == host));
    }

    // Each source of credentials below serves a push too: the pulled image goes up to a
    // repository of its own, which then pulls back (with --creds) to the same layers;
    // without credentials the push is refused in one line.
    let pushed = |s: &Strata, env: &Env, args: &[&str], repo: &str| {
        let to = format!("{host}/pushed/{repo}:v1");
        let o = push(s, env, &reference, &to, args);
        assert!(o.status.success(), "push via {repo}: {}", String::from_utf8_lossy(&o.stderr));
        let back = Strata::new("vfs");
        assert_eq!(top(&pull(&back, &Env::default(), &to, &["--creds", CREDS])), want_top, "{repo}");
        let e = one_error(&push(s, &Env::default(), &reference, &format!("{host}/pushed/anonymous:v1"), &[]));
        assert!(e.contains(&format!("{host} needs credentials")), "{e}");
    };

    // --creds: the tree is the one the layout unpacks to.
    let s = Strata::new("vfs");
    let got = top(&pull(&s, &Env::default(), &reference, &["--creds", CREDS]));
    pushed(&s, &Env::default(), &["--creds", CREDS], "creds");
    assert_eq!(got, want_top);
    let tree = strata_testkit::tree::Tree::capture(Path::new(s.ok(&["layer", "mount", &got]).trim())).unwrap();
    let d = tree.differences(&want, &strata_testkit::tree::CompareOptions::default());
    assert!(d.is_empty(), "{}", d.join("\n"));

    // The auth file `skopeo login` writes, through --authfile, REGISTRY_AUTH_FILE and
    // ${XDG_RUNTIME_DIR}/containers/auth.json.
    let authfile = work.path().join("auth.json");
    let o = Command::new("skopeo")
        .args(["login", "--tls-verify=false", "--authfile"])
        .arg(&authfile)
        .args(["-u", USER, "-p", PASSWORD, &host])
        .output()
        .unwrap();
    assert!(o.status.success(), "skopeo login: {}", String::from_utf8_lossy(&o.stderr));
    let s = Strata::new("vfs");
    let args = ["--authfile", authfile.to_str().unwrap()];
    assert_eq!(top(&pull(&s, &Env::default(), &reference, &args)), want_top);
    pushed(&s, &Env::default(), &args, "authfile");
    let s = Strata::new("vfs");
    let env = Env { registry_auth_file: Some(authfile.clone()), ..Env::default() };
    assert_eq!(top(&pull(&s, &env, &reference, &[])), want_top);
    pushed(&s, &env, &[], "registry-auth-file");
    let xdg = work.path().join("xdg");
    fs::create_dir_all(xdg.join("containers")).unwrap();
    fs::copy(&authfile, xdg.join("containers/auth.json")).unwrap();
    let s = Strata::new("vfs");
    let env = Env { xdg_runtime_dir: Some(xdg), ..Env::default() };
    assert_eq!(top(&pull(&s, &env, &reference, &[])), want_top);
    pushed(&s, &env, &[], "xdg");
    // --creds wins over a file.
    let s = Strata::new("vfs");
    let env = Env { registry_auth_file: Some(authfile.clone()), ..Env::default() };
    let e = one_error(&pull(&s, &env, &reference, &["--creds", &format!("{USER}:wrong")]));
    assert!(e.contains("were refused"), "{e}");

    // Docker's ~/.docker/config.json: plain `auths`.
    let home = work.path().join("home");
    fs::create_dir_all(home.join(".docker")).unwrap();
    let config = serde_json::json!({"auths": {&host: {"auth": b64(CREDS)}}});
    fs::write(home.join(".docker/config.json"), config.to_string()).unwrap();
    let s = Strata::new("vfs");
    let env = Env { home: Some(home.clone()), ..Env::default() };
    assert_eq!(top(&pull(&s, &env, &reference, &[])), want_top);
    pushed(&s, &env, &[], "config-json");

    // A credential helper named in config.json, found on PATH; it is asked for this
    // registry (docker's protocol: the server on stdin, JSON on stdout).
    let bin = work.path().join("bin");
    fs::create_dir_all(&bin).unwrap();
    let asked = work.path().join("asked");
    let helper = bin.join("docker-credential-strata-test");
    fs::write(
        &helper,
        format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 1\ncat > {}\nprintf '{{\"ServerURL\":\"%s\",\"Username\":\"{USER}\",\"Secret\":\"{PASSWORD}\"}}' \"$(cat {})\"\n",
            asked.display(),
            asked.display()
        ),
    )
    .unwrap();
    Command::new("chmod").arg("+x").arg(&helper).status().unwrap();
    let home = work.path().join("home2");
    fs::create_dir_all(home.join(".docker")).unwrap();
    let config = serde_json::json!({"credHelpers": {&host: "strata-test"}});
    fs::write(home.join(".docker/config.json"), config.to_string()).unwrap();
    let s = Strata::new("vfs");
    let env = Env { home: Some(home), path_prepend: Some(bin), ..Env::default() };
    assert_eq!(top(&pull(&s, &env, &reference, &[])), want_top);
    assert_eq!(fs::read_to_string(&asked).unwrap().trim(), host, "the helper was asked for this registry");
    fs::remove_file(&asked).unwrap();
    pushed(&s, &env, &[], "helper");
    assert_eq!(fs::read_to_string(&asked).unwrap().trim(), host, "the helper was asked for the push");
}

const REPO: &str = "strata/img";
const TOKEN: &str = "token-for-alice";

/// How the test registry wants to be talked to.
#[derive(Clone, Copy, Debug)]
enum Scheme {
    /// Basic auth on every request.
    Basic,
    /// Bearer tokens from `/token` on the registry's own origin, given for Basic
    /// credentials.
    TokenHere,
    /// Bearer tokens from `/token` on the other port (anonymous: it gets no credential).
    TokenElsewhere,
}

/// A pull where the blobs redirect to another port, which records what it is sent.
fn pull_with(scheme: Scheme) {
    let img = Arc::new(TestImage::generate(31, 2));
    let other_img = img.clone();
    let other = Server::start(Arc::new(move |r: &Request| {
        if r.path.starts_with("/token") {
            return Reply::new(200, serde_json::json!({ "token": TOKEN }).to_string());
        }
        other_img.answer(REPO, r)
    }));
    let other_port = other.port;
    let basic = format!("Basic {}", b64(CREDS));
    // The token realm "here" is the registry itself: its port is known once it runs.
    let main_port = Arc::new(AtomicU16::new(0));
    let main = {
        let (img, basic, main_port) = (img.clone(), basic.clone(), main_port.clone());
        Server::start(Arc::new(move |r: &Request| {
            let auth = r.authorization.as_deref();
            let challenge = |realm_port: u16| {
                format!(
                    r#"Bearer realm="http://127.0.0.1:{realm_port}/token",service="test",scope="repository:{REPO}:pull""#
                )
            };
            let ok = match scheme {
                Scheme::Basic => auth == Some(&basic),
                Scheme::TokenHere | Scheme::TokenElsewhere => auth == Some(&format!("Bearer {TOKEN}")),
            };
            if r.path.starts_with("/token") {
                return if auth == Some(&basic) {
                    Reply::new(200, serde_json::json!({ "token": TOKEN }).to_string())
                } else {
                    Reply::new(401, "{}").header("WWW-Authenticate", r#"Basic realm="token""#)
                };
            }
            if !ok {
                let c = match scheme {
                    Scheme::Basic => r#"Basic realm="test""#.to_string(),
                    Scheme::TokenHere => challenge(main_port.load(Ordering::SeqCst)),
                    Scheme::TokenElsewhere => challenge(other_port),
                };
                return Reply::new(401, r#"{"errors":[{"code":"UNAUTHORIZED"}]}"#).header("WWW-Authenticate", &c);
            }
            if r.path.contains("/blobs/") {
                return Reply::redirect(&format!("http://127.0.0.1:{other_port}{}", r.path));
            }
            img.answer(REPO, r)
        }))
    };
    main_port.store(main.port, Ordering::SeqCst);
    let s = Strata::new("vfs");
    let reference = format!("127.0.0.1:{}/{REPO}:v1", main.port);
    let o = pull(&s, &Env::default(), &reference, &["--creds", CREDS]);
    assert!(o.status.success(), "{scheme:?}: {}", String::from_utf8_lossy(&o.stderr));
    let (main_seen, other_seen) = (main.requests(), other.requests());
    assert!(other_seen.iter().any(|r| r.path.contains("/blobs/")), "{scheme:?}: the blobs came from the other port");
    for r in &other_seen {
        assert!(r.authorization.is_none(), "{scheme:?}: a credential or token went to another port: {r:?}");
    }
    match scheme {
        Scheme::Basic => assert!(main_seen.iter().any(|r| r.authorization.as_deref() == Some(&basic))),
        Scheme::TokenHere => {
            let asked: Vec<_> = main_seen.iter().filter(|r| r.path.starts_with("/token")).collect();
            assert!(asked.iter().any(|r| r.authorization.as_deref() == Some(&basic)), "{scheme:?}: {main_seen:?}");
        }
        Scheme::TokenElsewhere => {
            assert!(other_seen.iter().any(|r| r.path.starts_with("/token")), "the token came from the other port");
        }
    }
}

#[test]
fn credentials_never_reach_another_host() {
    if !privileged("registry credential tests") {
        return;
    }
    for scheme in [Scheme::Basic, Scheme::TokenHere, Scheme::TokenElsewhere] {
        pull_with(scheme);
    }
}

/// What the push test registry holds: blobs by digest, which repositories hold each,
/// upload sessions, manifests.
#[derive(Default)]
struct Held {
    blobs: HashMap<String, Vec<u8>>,
    repos: HashMap<String, BTreeSet<String>>,
    uploads: HashMap<String, (String, Vec<u8>)>,
    manifests: HashMap<(String, String), Vec<u8>>,
    sessions: usize,
}

/// `/v2/<repo>/<rest>` → (repo, rest), where rest starts with `blobs/` or `manifests/`.
fn split_repo(path: &str) -> Option<(String, String)> {
    let p = path.strip_prefix("/v2/")?;
    let at = p.find("/blobs/").or_else(|| p.find("/manifests/"))?;
    Some((p[..at].to_string(), p[at + 1..].to_string()))
}

/// The storage host: blob reads and upload sessions, on a port of its own, with no
/// auth at all (as an object store behind pre-signed URLs); it records what it is sent.
fn storage(held: Arc<Mutex<Held>>) -> Server {
    Server::start(Arc::new(move |r: &Request| {
        let (path, query) = r.path.split_once('?').unwrap_or((&r.path, ""));
        let mut h = held.lock().unwrap();
        if let Some(rest) = path.strip_prefix("/blob/") {
            let (repo, digest) = rest.rsplit_once('/').unwrap();
            return match h.repos.get(repo).filter(|d| d.contains(digest)).and_then(|_| h.blobs.get(digest)) {
                Some(b) => Reply::new(200, if r.method == "HEAD" { Vec::new() } else { b.clone() })
                    .header("Content-Type", "application/octet-stream"),
                None => Reply::new(404, ""),
            };
        }
        let Some(id) = path.strip_prefix("/upload/") else { return Reply::new(404, "") };
        let Some((repo, data)) = h.uploads.get_mut(id) else { return Reply::new(404, "no such session") };
        data.extend_from_slice(&r.body);
        let repo = repo.clone();
        match r.method.as_str() {
            "PATCH" => Reply::new(202, "").header("Location", &format!("/upload/{id}")),
            "PUT" => {
                let want = query.split('&').find_map(|kv| kv.strip_prefix("digest=")).unwrap_or("").replace("%3A", ":");
                let (_, data) = h.uploads.remove(id).unwrap();
                if sha256(&data) != want {
                    return Reply::new(400, r#"{"errors":[{"code":"DIGEST_INVALID"}]}"#);
                }
                h.blobs.insert(want.clone(), data);
                h.repos.entry(repo).or_default().insert(want);
                Reply::new(201, "")
            }
            _ => Reply::new(405, ""),
        }
    }))
}

/// A registry that wants `scheme`'s auth, redirects every blob read (`HEAD`, `GET`) to
/// the storage host on `store_port`, and opens every upload session there; it declines
/// every cross-repository mount (202 and a session) when `decline_mounts`, else mounts
/// what the source repository holds.
fn push_registry(scheme: Scheme, held: Arc<Mutex<Held>>, store_port: u16, decline_mounts: bool) -> Server {
    let basic = format!("Basic {}", b64(CREDS));
    let own_port = Arc::new(AtomicU16::new(0));
    let port = own_port.clone();
    let server = Server::start(Arc::new(move |r: &Request| {
        let auth = r.authorization.as_deref();
        if r.path.starts_with("/token") {
            return if auth == Some(&basic) {
                Reply::new(200, serde_json::json!({ "token": TOKEN }).to_string())
            } else {
                Reply::new(401, "{}").header("WWW-Authenticate", r#"Basic realm="token""#)
            };
        }
        let ok = match scheme {
            Scheme::Basic => auth == Some(&basic),
            _ => auth == Some(&format!("Bearer {TOKEN}")),
        };
        if !ok {
            let c = match scheme {
                Scheme::Basic => r#"Basic realm="test""#.to_string(),
                _ => format!(r#"Bearer realm="http://127.0.0.1:{}/token",service="test""#, port.load(Ordering::SeqCst)),
            };
            return Reply::new(401, r#"{"errors":[{"code":"UNAUTHORIZED"}]}"#).header("WWW-Authenticate", &c);
        }
        let (path, query) = r.path.split_once('?').unwrap_or((&r.path, ""));
        if path == "/v2/" {
            return Reply::new(200, "{}");
        }
        let Some((repo, rest)) = split_repo(path) else { return Reply::new(404, "") };
        let mut h = held.lock().unwrap();
        if let Some(digest) = rest.strip_prefix("blobs/").filter(|d| d.starts_with("sha256:")) {
            return Reply::new(307, "")
                .header("Location", &format!("http://127.0.0.1:{store_port}/blob/{repo}/{digest}"));
        }
        if rest == "blobs/uploads/" && r.method == "POST" {
            let param = |k: &str| {
                query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
                    .map(|v| v.replace("%3A", ":").replace("%2F", "/"))
            };
            if let (Some(digest), Some(from)) = (param("mount"), param("from")) {
                let there = h.repos.get(&from).is_some_and(|d| d.contains(&digest));
                if there && !decline_mounts {
                    h.repos.entry(repo).or_default().insert(digest);
                    return Reply::new(201, "");
                }
            }
            h.sessions += 1;
            let id = format!("u{}", h.sessions);
            h.uploads.insert(id.clone(), (repo, Vec::new()));
            return Reply::new(202, "").header("Location", &format!("http://127.0.0.1:{store_port}/upload/{id}"));
        }
        if let Some(tag) = rest.strip_prefix("manifests/") {
            if r.method == "PUT" {
                let m: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
                let mut named = vec![m["config"]["digest"].as_str().unwrap().to_string()];
                named.extend(m["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_string()));
                let has = h.repos.get(&repo).cloned().unwrap_or_default();
                if let Some(missing) = named.iter().find(|d| !has.contains(*d)) {
                    return Reply::new(
                        400,
                        format!(r#"{{"errors":[{{"code":"MANIFEST_BLOB_UNKNOWN","message":"{missing}"}}]}}"#),
                    );
                }
                let digest = sha256(&r.body);
                h.manifests.insert((repo.clone(), tag.to_string()), r.body.clone());
                h.manifests.insert((repo, digest.clone()), r.body.clone());
                return Reply::new(201, "").header("Docker-Content-Digest", &digest);
            }
            return match h.manifests.get(&(repo, tag.to_string())) {
                Some(m) => {
                    let v: serde_json::Value = serde_json::from_slice(m).unwrap();
                    Reply::new(200, m.clone())
                        .header("Content-Type", v["mediaType"].as_str().unwrap())
                        .header("Docker-Content-Digest", &sha256(m))
                }
                None => Reply::new(404, r#"{"errors":[{"code":"MANIFEST_UNKNOWN"}]}"#),
            };
        }
        Reply::new(404, "")
    }));
    own_port.store(server.port, Ordering::SeqCst);
    server
}

/// A push whose blob reads and uploads go to another port: that port sees every blob
/// and no credential or token; the registry declines every cross-repository mount
/// (202), so each blob goes up through the session the decline opened; the image pulls
/// back (blobs again from the other port) to the same layers.
fn push_with(scheme: Scheme) {
    let work = tempfile::tempdir().unwrap();
    let img = layout(&work.path().join("img"));
    let held = Arc::new(Mutex::new(Held::default()));
    let store = storage(held.clone());
    let reg = push_registry(scheme, held.clone(), store.port, true);
    let host = format!("127.0.0.1:{}", reg.port);
    let s = Strata::new("vfs");
    // Named after a repository of this registry: a push elsewhere there asks to mount
    // each blob from it first.
    let src = format!("{host}/strata/src:v1");
    let want_top = s.ok(&["image", "unpack", &format!("{}:v1", img.display()), "--name", &src]).trim().to_string();
    let o = push(&s, &Env::default(), &src, &format!("{host}/strata/dst:v1"), &["--creds", CREDS]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{scheme:?}: {stderr}");
    let blobs = 3; // two layers and the config
    let (main_seen, store_seen) = (reg.requests(), store.requests());
    let declined = main_seen.iter().filter(|r| r.method == "POST" && r.path.contains("mount=")).count();
    assert_eq!(declined, blobs, "{scheme:?}: a mount asked for each blob: {main_seen:?}");
    assert_eq!(stderr.matches("uploaded").count(), blobs, "{scheme:?}: each declined mount became an upload: {stderr}");
    assert!(!stderr.contains("mounted from"), "{stderr}");
    let puts = store_seen.iter().filter(|r| r.method == "PUT" && r.path.starts_with("/upload/")).count();
    assert_eq!(puts, blobs, "{scheme:?}: {store_seen:?}");
    for r in &store_seen {
        assert!(
            r.authorization.is_none(),
            "{scheme:?}: a credential or token went to another port: {} {}",
            r.method,
            r.path
        );
    }
    assert!(main_seen.iter().any(|r| r.authorization.is_some()), "{scheme:?}: the registry itself got the credential");

    // Pushed again: every blob's HEAD is redirected to the storage host, which has it.
    let before = store.requests().len();
    let o = push(&s, &Env::default(), &src, &format!("{host}/strata/dst:v1"), &["--creds", CREDS]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{scheme:?}: {stderr}");
    assert_eq!(stderr.matches("already there").count(), blobs, "{scheme:?}: {stderr}");
    let heads: Vec<Request> = store.requests().into_iter().skip(before).collect();
    assert_eq!(heads.iter().filter(|r| r.method == "HEAD").count(), blobs, "{heads:?}");
    assert!(heads.iter().all(|r| r.authorization.is_none()), "{scheme:?}: {heads:?}");

    // What went up is the image: pulled back by a fresh store, the same layers.
    let back = Strata::new("vfs");
    let got = top(&pull(&back, &Env::default(), &format!("{host}/strata/dst:v1"), &["--creds", CREDS]));
    assert_eq!(got, want_top, "{scheme:?}");
    assert!(store.requests().iter().all(|r| r.authorization.is_none()), "{scheme:?}");
}

#[test]
fn push_credentials_never_reach_another_host_and_a_declined_mount_uploads() {
    if !privileged("registry credential tests") {
        return;
    }
    for scheme in [Scheme::Basic, Scheme::TokenHere] {
        push_with(scheme);
    }
}

/// `strata bench --image docker://REF` pulls the image with the same flags as `image
/// pull` (here --insecure and --creds, from Debian's docker-registry behind htpasswd)
/// and benches it: its two layers and the copy-up layer, unpacked on the driver; without
/// credentials it stops at once with one line.
#[test]
fn bench_takes_an_image_from_a_registry_with_credentials() {
    // `_reg` keeps the registry running (a field left to `..` would stop it here).
    let Some(Private { work, reference, reg: _reg, .. }) = private_registry("bench --image docker://", "strata/bench")
    else {
        return;
    };
    let reference = format!("docker://{reference}");
    let bench = |extra: &[&str]| -> Output {
        let mut c = Command::new(strata_bin());
        c.arg("--root").arg(work.path().join("root"));
        c.args(["bench", "--quick", "--drivers", "vfs", "--fs", "ext4", "--containers", "1", "--insecure"]);
        c.args(["--image", &reference]).args(extra);
        c.env_remove("REGISTRY_AUTH_FILE").env("XDG_RUNTIME_DIR", work.path()).env("HOME", work.path());
        c.stdin(std::process::Stdio::null()).output().unwrap()
    };
    // An image the bench cannot pull is an input error: exit 2 (docs/ci.md).
    let o = bench(&[]);
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "one error line expected: {stderr}");
    assert!(errors[0].contains("needs credentials"), "{}", errors[0]);

    let json = work.path().join("run.json");
    let o = bench(&["--creds", CREDS, "--json", json.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let run: serde_json::Value = serde_json::from_slice(&fs::read(&json).unwrap()).unwrap();
    assert_eq!(run["workload"]["images"], serde_json::json!([reference]));
    let results = run["results"].as_array().unwrap();
    assert_eq!(results.len(), 1, "{results:?}");
    assert!(results[0]["error"].is_null(), "{}", results[0]["error"]);
    let layers = results[0]["unpack_layers"].as_array().unwrap();
    assert_eq!(layers.len(), 3, "the image's two layers and the copy-up layer: {layers:?}");
    assert!(layers.iter().all(|l| l["bytes"].as_u64().unwrap() > 0));
}
