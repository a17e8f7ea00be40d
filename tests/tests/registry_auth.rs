//! Registries that want credentials: `image pull` with htpasswd (Basic) credentials
//! from `--creds`, the containers auth file (as `skopeo login` writes it) and
//! Docker's config.json (plain `auths` and a `docker-credential-*` helper), against
//! Debian's docker-registry on 127.0.0.1; and a test registry whose token service and
//! blob store are on another port, which must never see a credential or a token.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;

use strata_tests::registry::{DockerRegistry, Reply, Request, Server, TestImage};
use strata_tests::{privileged, strata_bin, Strata};

const USER: &str = "alice";
/// With a ':' inside: only the first one separates user from password.
const PASSWORD: &str = "s3cret:pw";

/// Where credentials may come from, as each test sets it: nothing of the user's own.
#[derive(Default)]
struct Env {
    home: Option<PathBuf>,
    xdg_runtime_dir: Option<PathBuf>,
    registry_auth_file: Option<PathBuf>,
    path_prepend: Option<PathBuf>,
}

fn pull(s: &Strata, env: &Env, reference: &str, args: &[&str]) -> Output {
    let empty = tempfile::tempdir().unwrap();
    let mut c = Command::new(strata_bin());
    c.arg("--root").arg(&s.root).arg("--driver").arg(&s.driver);
    c.args(["image", "pull", "--insecure"]).args(args).arg(reference);
    c.env_remove("REGISTRY_AUTH_FILE").env_remove("DOCKER_CONFIG").env_remove("XDG_RUNTIME_DIR");
    c.env("HOME", env.home.as_deref().unwrap_or(empty.path()));
    if let Some(d) = &env.xdg_runtime_dir {
        c.env("XDG_RUNTIME_DIR", d);
    }
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
    use bench_harness::workload::{generate, gzip, WorkloadSize};
    let blobs: Vec<Vec<u8>> = generate(21, WorkloadSize::small()).into_iter().take(2).map(|l| gzip(&l.tar)).collect();
    strata_image::image::write_layout(dir, "v1", &blobs).unwrap();
    dir.to_path_buf()
}

#[test]
fn pull_with_htpasswd_credentials_from_each_source() {
    if !privileged("registry credential tests")
        || !strata_tests::installed(&["htpasswd", "docker-registry", "skopeo"], "registry credential tests")
    {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let img = layout(&work.path().join("img"));
    let reg = DockerRegistry::start(&[(USER, PASSWORD)]);
    let host = format!("127.0.0.1:{}", reg.port);
    reg.skopeo_push(&format!("oci:{}:v1", img.display()), "strata/private:v1", Some(&format!("{USER}:{PASSWORD}")));
    let reference = format!("{host}/strata/private:v1");

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

    // --creds: the tree is the one the layout unpacks to.
    let s = Strata::new("vfs");
    let got = top(&pull(&s, &Env::default(), &reference, &["--creds", &format!("{USER}:{PASSWORD}")]));
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
    assert_eq!(top(&pull(&s, &Env::default(), &reference, &["--authfile", authfile.to_str().unwrap()])), want_top);
    let s = Strata::new("vfs");
    let env = Env { registry_auth_file: Some(authfile.clone()), ..Env::default() };
    assert_eq!(top(&pull(&s, &env, &reference, &[])), want_top);
    let xdg = work.path().join("xdg");
    fs::create_dir_all(xdg.join("containers")).unwrap();
    fs::copy(&authfile, xdg.join("containers/auth.json")).unwrap();
    let s = Strata::new("vfs");
    let env = Env { xdg_runtime_dir: Some(xdg), ..Env::default() };
    assert_eq!(top(&pull(&s, &env, &reference, &[])), want_top);
    // --creds wins over a file.
    let s = Strata::new("vfs");
    let env = Env { registry_auth_file: Some(authfile.clone()), ..Env::default() };
    let e = one_error(&pull(&s, &env, &reference, &["--creds", &format!("{USER}:wrong")]));
    assert!(e.contains("were refused"), "{e}");

    // Docker's ~/.docker/config.json: plain `auths`.
    let home = work.path().join("home");
    fs::create_dir_all(home.join(".docker")).unwrap();
    let config = serde_json::json!({"auths": {&host: {"auth": b64(&format!("{USER}:{PASSWORD}"))}}});
    fs::write(home.join(".docker/config.json"), config.to_string()).unwrap();
    let s = Strata::new("vfs");
    let env = Env { home: Some(home.clone()), ..Env::default() };
    assert_eq!(top(&pull(&s, &env, &reference, &[])), want_top);

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
    let basic = format!("Basic {}", b64(&format!("{USER}:{PASSWORD}")));
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
    let o = pull(&s, &Env::default(), &reference, &["--creds", &format!("{USER}:{PASSWORD}")]);
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
