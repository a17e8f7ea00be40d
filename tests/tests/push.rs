//! `image push` to Debian's docker-registry on 127.0.0.1 behind htpasswd (Basic) auth:
//! a committed image and an unpacked one go up (monolithic and chunked uploads), come
//! back through `skopeo copy` and `strata image pull` with the same trees; a second
//! push sends no blob again; a push to another repository of the registry mounts the
//! blobs instead of uploading them (the registry's access log says which requests it
//! answered).

use std::path::Path;
use std::process::Command;

use strata_testkit::tree::{CompareOptions, Tree};
use strata_tests::changes::{base_layout, change};
use strata_tests::registry::DockerRegistry;
use strata_tests::{privileged, Mounted, Strata};

const CREDS: &str = "alice:s3cret";

fn tree_of(s: &Strata, layer: &str) -> Tree {
    let m = Mounted::new(s, layer);
    Tree::capture(&m.path).unwrap()
}

/// Tar carries whole seconds: the container's view has nanoseconds.
fn opts() -> CompareOptions {
    CompareOptions { file_mtime: false, dir_mtime: false, ..Default::default() }
}

fn assert_same(got: &Tree, want: &Tree, what: &str) {
    let d = got.differences(want, &opts());
    assert!(d.is_empty(), "{what}:\n{}", d.join("\n"));
}

fn push(s: &Strata, name: &str, reference: &str, extra: &[&str]) -> (String, String) {
    let mut args = vec!["image", "push", "--insecure", "--creds", CREDS];
    args.extend_from_slice(extra);
    args.extend([name, reference]);
    let o = s.run(&args);
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "push {name} {reference}: {stderr}");
    (String::from_utf8(o.stdout).unwrap().trim().to_string(), stderr)
}

/// `skopeo copy` from the registry into an OCI layout, unpacked by a fresh strata:
/// the top layer's tree.
fn skopeo_back(reg: &DockerRegistry, repo: &str, work: &Path) -> Tree {
    let dir = work.join(format!("skopeo-{}", repo.replace(['/', ':'], "-")));
    let o = Command::new("skopeo")
        .args(["copy", "--quiet", "--src-tls-verify=false", "--src-creds", CREDS])
        .arg(format!("docker://127.0.0.1:{}/{repo}", reg.port))
        .arg(format!("oci:{}:back", dir.display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "skopeo copy {repo}: {}", String::from_utf8_lossy(&o.stderr));
    let s = Strata::new("vfs");
    let top = s.ok(&["image", "unpack", &format!("{}:back", dir.display())]).trim().to_string();
    tree_of(&s, &top)
}

fn strata_back(reg: &DockerRegistry, repo: &str) -> Tree {
    let s = Strata::new("vfs");
    let top = s
        .ok(&["image", "pull", "--insecure", "--creds", CREDS, &format!("127.0.0.1:{}/{repo}", reg.port)])
        .trim()
        .to_string();
    tree_of(&s, &top)
}

/// The requests the registry answered since `from`, as (method, path without query).
fn since(reg: &DockerRegistry, from: usize) -> Vec<(String, String, u16)> {
    reg.requests().into_iter().skip(from).collect()
}

fn count(reqs: &[(String, String, u16)], method: &str, path_has: &str) -> usize {
    reqs.iter().filter(|(m, u, _)| m == method && u.contains(path_has)).count()
}

#[test]
fn push_then_pull_back_with_skopeo_and_strata() {
    if !privileged("push tests") || !strata_tests::installed(&["htpasswd", "docker-registry", "skopeo"], "push tests") {
        return;
    }
    let (user, password) = CREDS.split_once(':').unwrap();
    let reg = DockerRegistry::start(&[(user, password)]);
    let host = format!("127.0.0.1:{}", reg.port);
    let work = tempfile::tempdir().unwrap();
    let layout = base_layout(&work.path().join("layout"));

    // An unpacked image and a committed one.
    let s = Strata::new("vfs");
    let base_top = s.ok(&["image", "unpack", &format!("{}:base", layout.dir.display()), "--name", "base"]);
    let base_tree = tree_of(&s, base_top.trim());
    s.ok(&["container", "create", "c1", "--image", "base"]);
    let committed = {
        let m = Mounted::new(&s, "c1");
        change(&m.path);
        drop(m);
        let m = Mounted::new(&s, "c1");
        Tree::capture(&m.path).unwrap()
    };
    s.ok(&["container", "commit", "c1", "--image", "app:v1"]);
    let manifest_of = |name: &str| -> String {
        let v: serde_json::Value = serde_json::from_str(&s.ok(&["image", "inspect", name, "--json"])).unwrap();
        v["manifest_digest"].as_str().expect("manifest_digest").to_string()
    };

    // Without credentials, or wrong ones: one clear line.
    // A registry that refused: exit 1 (docs/cli.md); the line says which refusal.
    let e = s.fails_with(1, &["image", "push", "--insecure", "base", &format!("{host}/strata/base:v1")]);
    assert!(e.contains(&format!("{host} needs credentials")), "{e}");
    let e = s.fails_with(
        1,
        &["image", "push", "--insecure", "--creds", "alice:wrong", "base", &format!("{host}/strata/base:v1")],
    );
    assert!(e.contains("were refused"), "{e}");

    // The unpacked image, monolithic uploads: one POST and one PUT per blob.
    let before = reg.requests().len();
    let (digest, stderr) = push(&s, "base", &format!("{host}/strata/base:v1"), &[]);
    assert!(digest.starts_with("sha256:") && digest.len() == 71, "prints the manifest digest: {digest}");
    assert_eq!(digest, manifest_of("base"), "the stored manifest went up as it is");
    let r = since(&reg, before);
    let blobs = 3; // two layers and the config
    assert_eq!(count(&r, "POST", "/v2/strata/base/blobs/uploads/"), blobs, "{r:?}\n{stderr}");
    assert_eq!(count(&r, "PUT", "/v2/strata/base/blobs/uploads/"), blobs, "{r:?}");
    assert_eq!(count(&r, "PATCH", "/blobs/uploads/"), 0, "{r:?}");
    assert_eq!(count(&r, "PUT", "/v2/strata/base/manifests/v1"), 1, "{r:?}");
    assert_same(&skopeo_back(&reg, "strata/base:v1", work.path()), &base_tree, "base through skopeo");
    assert_same(&strata_back(&reg, "strata/base:v1"), &base_tree, "base through strata pull");

    // Again: every blob is found by HEAD, none is sent.
    let before = reg.requests().len();
    let (again, stderr) = push(&s, "base", &format!("{host}/strata/base:v1"), &[]);
    assert_eq!(again, digest);
    let r = since(&reg, before);
    assert_eq!(count(&r, "HEAD", "/v2/strata/base/blobs/sha256:"), blobs, "{r:?}");
    assert_eq!(count(&r, "POST", "/blobs/uploads/"), 0, "a second push uploads nothing: {r:?}");
    assert_eq!(count(&r, "PATCH", "/blobs/uploads/") + count(&r, "PUT", "/blobs/uploads/"), 0, "{r:?}");
    assert_eq!(stderr.matches("already there").count(), blobs, "{stderr}");

    // The committed image (whose two bottom layers are base's) to another repository,
    // in chunks of 512 bytes: base's blobs are mounted, the new layer and config uploaded
    // in PATCHes.
    let before = reg.requests().len();
    let (app_digest, stderr) = push(&s, "app:v1", &format!("{host}/team/app:v1"), &["--chunk-size", "512"]);
    let r = since(&reg, before);
    let mounts: Vec<_> = r
        .iter()
        .filter(|(m, u, st)| m == "POST" && u.contains("mount=") && u.contains("from=strata%2Fbase") && *st == 201)
        .collect();
    assert_eq!(mounts.len(), 2, "base's two layers are mounted from strata/base: {r:?}\n{stderr}");
    assert_eq!(stderr.matches("mounted from strata/base").count(), 2, "{stderr}");
    assert!(count(&r, "PATCH", "/v2/team/app/blobs/uploads/") >= 2, "the new layer went in chunks: {r:?}");
    assert_eq!(app_digest, manifest_of("app:v1"));
    assert_same(&skopeo_back(&reg, "team/app:v1", work.path()), &committed, "app through skopeo");
    assert_same(&strata_back(&reg, "team/app:v1"), &committed, "app through strata pull");

    // A pulled image pushed to a third repository: everything is mounted from where it
    // was pulled.
    let p = Strata::new("vfs");
    p.ok(&["image", "pull", "--insecure", "--creds", CREDS, &format!("{host}/team/app:v1")]);
    let before = reg.requests().len();
    let (third, stderr) = push(&p, &format!("{host}/team/app:v1"), &format!("{host}/mirror/app:v2"), &[]);
    assert_eq!(third, app_digest, "the same manifest, byte for byte");
    let r = since(&reg, before);
    assert_eq!(count(&r, "PATCH", "/blobs/uploads/") + count(&r, "PUT", "/blobs/uploads/"), 0, "{r:?}\n{stderr}");
    assert_eq!(stderr.matches("mounted from team/app").count(), 4, "{stderr}");
    assert_same(&strata_back(&reg, "mirror/app:v2"), &committed, "the mirror through strata pull");
}
