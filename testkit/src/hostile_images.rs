//! A corpus of hostile and tricky *images* (OCI layouts and archives), beside the
//! hostile layer tars of [`crate::hostile`]. The end-to-end tests unpack each on every
//! driver and check: the outcome is the expected one (and the same on every driver),
//! nothing outside the store changed, the store is exactly as before after a refusal,
//! memory and time stayed bounded.
//!
//! Lessons behind them: blob paths built from unchecked digests (CVE-2021-41190-style
//! ambiguity, containerd's `..` digest checks), FIFOs and devices planted as blobs,
//! JSON bombs (size, depth, width), descriptors that lie about size or media type,
//! archives whose members are links, and names that are not names.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use strata_archive::tarbuild::TarBuilder;
use strata_image::image::{write_layout, REF_NAME};

/// What `image unpack` must do with a hostile image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Refuse it with one `error:` line and this exit code (docs/cli.md: [`INVALID`]
    /// for an image that is not what it says, [`USAGE`] for a name that is not a
    /// reference), the store unchanged.
    Refused(i32),
    /// Unpack it.
    Unpacked,
    /// Either, but the same on every driver.
    Either,
}

pub struct HostileImage {
    pub name: &'static str,
    /// The `image unpack` source argument.
    pub src: String,
    /// Extra arguments (`--name …`).
    pub args: Vec<String>,
    pub expect: Expect,
    /// A piece the error must contain, when refused.
    pub error_has: &'static str,
}

pub use driver_core::digest::sha256 as digest;

/// `strata`'s exit code for an image that is not what it says (docs/cli.md).
pub const INVALID: i32 = 5;
/// ... for what was typed that is not valid: a name that is not a reference.
pub const USAGE: i32 = 2;

/// An image layout being bent out of shape.
pub struct Layout {
    pub dir: PathBuf,
}

impl Layout {
    /// A layout of `layers` small generated layers (gzip), tagged `tag`.
    pub fn new(dir: &Path, tag: &str, layers: &[Vec<u8>]) -> Layout {
        write_layout(dir, tag, layers).expect("write layout");
        Layout { dir: dir.to_path_buf() }
    }

    pub fn blob(&self, d: &str) -> PathBuf {
        self.dir.join("blobs/sha256").join(d.trim_start_matches("sha256:"))
    }

    pub fn put(&self, data: &[u8]) -> String {
        let d = digest(data);
        fs::write(self.blob(&d), data).expect("write blob");
        d
    }

    fn read(&self, p: &Path) -> Value {
        serde_json::from_slice(&fs::read(p).expect("read json")).expect("parse json")
    }

    pub fn index(&self) -> Value {
        self.read(&self.dir.join("index.json"))
    }

    pub fn set_index(&self, index: &Value) {
        fs::write(self.dir.join("index.json"), serde_json::to_vec(index).expect("json")).expect("write index");
    }

    pub fn manifest_digest(&self) -> String {
        self.index()["manifests"][0]["digest"].as_str().expect("digest").to_string()
    }

    pub fn manifest(&self) -> Value {
        self.read(&self.blob(&self.manifest_digest()))
    }

    /// Points the index at a new manifest blob of these bytes.
    pub fn set_manifest_bytes(&self, m: &[u8]) {
        let d = self.put(m);
        let mut index = self.index();
        index["manifests"][0]["digest"] = d.into();
        index["manifests"][0]["size"] = m.len().into();
        self.set_index(&index);
    }

    pub fn rewrite_manifest(&self, f: impl FnOnce(&mut Value)) {
        let mut m = self.manifest();
        f(&mut m);
        self.set_manifest_bytes(&serde_json::to_vec(&m).expect("json"));
    }

    pub fn config(&self) -> Value {
        self.read(&self.blob(self.manifest()["config"]["digest"].as_str().expect("config digest")))
    }

    pub fn set_config_bytes(&self, cfg: &[u8]) {
        let d = self.put(cfg);
        self.rewrite_manifest(|m| {
            m["config"]["digest"] = d.into();
            m["config"]["size"] = cfg.len().into();
        });
    }

    pub fn rewrite_config(&self, f: impl FnOnce(&mut Value)) {
        let mut c = self.config();
        f(&mut c);
        self.set_config_bytes(&serde_json::to_vec(&c).expect("json"));
    }

    pub fn layer_digest(&self, i: usize) -> String {
        self.manifest()["layers"][i]["digest"].as_str().expect("layer digest").to_string()
    }

    /// Replaces layer `i` by `blob` (its digest and size right), with `diff_id`.
    pub fn replace_layer(&self, i: usize, blob: &[u8], diff_id: &str, media_type: &str) {
        let d = self.put(blob);
        self.rewrite_config(|c| c["rootfs"]["diff_ids"][i] = diff_id.into());
        self.rewrite_manifest(|m| {
            m["layers"][i]["digest"] = d.into();
            m["layers"][i]["size"] = blob.len().into();
            m["layers"][i]["mediaType"] = media_type.into();
        });
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

/// A small layer tar with a file named after `tag`.
pub fn small_tar(tag: &str) -> Vec<u8> {
    TarBuilder::new().dir("etc").file(&format!("etc/{tag}"), tag.as_bytes()).build()
}

/// Packs a directory into an (uncompressed) tar, for oci-archives.
fn tar_of_dir(dir: &Path, out: &Path) {
    let mut b = tar::Builder::new(fs::File::create(out).expect("create archive"));
    b.follow_symlinks(false);
    b.append_dir_all(".", dir).expect("pack layout");
    b.finish().expect("finish archive");
}

/// A docker-archive of one image: `manifest.json`, its config, layer tars by path.
pub fn docker_archive(out: &Path, repo_tags: &[&str], layers: &[Vec<u8>], diff_ids: Option<Vec<String>>) {
    let diff_ids = diff_ids.unwrap_or_else(|| layers.iter().map(|l| digest(l)).collect());
    let config = serde_json::to_vec(&json!({
        "architecture": strata_image::image::host_arch(), "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .expect("json");
    let cfg_name = format!("{}.json", digest(&config).trim_start_matches("sha256:"));
    let layer_names: Vec<String> = (0..layers.len()).map(|i| format!("l{i}/layer.tar")).collect();
    let manifest =
        serde_json::to_vec(&json!([{"Config": cfg_name, "RepoTags": repo_tags, "Layers": layer_names}])).expect("json");
    let mut t = TarBuilder::new();
    t.file("manifest.json", &manifest).file(&cfg_name, &config);
    for (name, data) in layer_names.iter().zip(layers) {
        t.file(name, data);
    }
    fs::write(out, t.build()).expect("write docker-archive");
}

/// Wraps the layout's image in `levels` nested indexes.
fn nest(l: &Layout, levels: usize) {
    let mut index = l.index();
    for _ in 0..levels {
        let nested = serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [index["manifests"][0].clone()],
        }))
        .expect("json");
        let nd = l.put(&nested);
        index["manifests"][0] = json!({
            "mediaType": "application/vnd.oci.image.index.v1+json", "digest": nd, "size": nested.len(),
            "annotations": {REF_NAME: "v1"},
        });
    }
    l.set_index(&index);
}

fn mkfifo(p: &Path) {
    let _ = fs::remove_file(p);
    nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o644)).expect("mkfifo");
}

/// `/dev/zero`'s device numbers (char 1:5), planted as a file of the layout.
fn mknod_zero(p: &Path) {
    use nix::sys::stat::{makedev, mknod, Mode, SFlag};
    let _ = fs::remove_file(p);
    mknod(p, SFlag::S_IFCHR, Mode::from_bits_truncate(0o644), makedev(1, 5)).expect("mknod");
}

/// The corpus, built under `work`. `outside` is a directory beside the store holding
/// `secret`, which no case may change. Building needs root (FIFOs, device nodes).
pub fn corpus(work: &Path, outside: &Path) -> Vec<HostileImage> {
    use Expect::*;
    let base = small_tar("base");
    let app = small_tar("app");
    let blobs = vec![gzip(&base), gzip(&app)];
    let mut out = Vec::new();
    let mut case = |name: &'static str, expect: Expect, error_has: &'static str, make: &dyn Fn(&Path) -> String| {
        let dir = work.join(name);
        let src = make(&dir);
        out.push(HostileImage { name, src, args: Vec::new(), expect, error_has });
    };
    let layout = |dir: &Path| Layout::new(dir, "v1", &blobs);
    let dirsrc = |l: &Layout| l.dir.display().to_string();
    let secret = outside.join("secret");

    case("control", Unpacked, "", &|d| dirsrc(&layout(d)));

    // Digests that are paths.
    for (name, bad) in [
        ("manifest-digest-traversal", "sha256:../../../../etc/passwd"),
        ("manifest-digest-encoded-traversal", "sha256:%2e%2e%2f%2e%2e%2fetc%2fpasswd"),
        ("manifest-digest-absolute", "sha256:/etc/passwd"),
        ("manifest-digest-uppercase", "sha256:ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789"),
        ("manifest-digest-other-algorithm", "sha512:00"),
    ] {
        case(name, Refused(INVALID), "digest", &|d| {
            let l = layout(d);
            let mut index = l.index();
            index["manifests"][0]["digest"] = bad.into();
            l.set_index(&index);
            dirsrc(&l)
        });
    }
    case("layer-digest-traversal", Refused(INVALID), "digest", &|d| {
        let l = layout(d);
        l.rewrite_manifest(|m| m["layers"][1]["digest"] = "sha256:../../../../../etc/shadow".into());
        dirsrc(&l)
    });
    case("diff-id-not-a-digest", Refused(INVALID), "digest", &|d| {
        let l = layout(d);
        l.rewrite_config(|c| c["rootfs"]["diff_ids"][0] = "c-victim".into());
        dirsrc(&l)
    });

    // Blob files that are not regular files of the layout.
    case("manifest-blob-symlink-outside", Refused(INVALID), "symlink", &|d| {
        let l = layout(d);
        let m = fs::read(l.blob(&l.manifest_digest())).expect("manifest");
        // The right content, but outside the layout, reached through a link.
        let planted = secret.with_file_name("manifest-copy");
        fs::write(&planted, &m).expect("write");
        let p = l.blob(&l.manifest_digest());
        fs::remove_file(&p).expect("rm");
        std::os::unix::fs::symlink(&planted, &p).expect("symlink");
        dirsrc(&l)
    });
    case("blobs-dir-symlink", Refused(INVALID), "symlink", &|d| {
        let l = layout(d);
        let real = d.with_file_name(format!("{}-real-blobs", d.file_name().unwrap().to_string_lossy()));
        fs::rename(d.join("blobs"), &real).expect("move blobs");
        std::os::unix::fs::symlink(&real, d.join("blobs")).expect("symlink");
        dirsrc(&l)
    });
    case("index-json-symlink-dev-zero", Refused(INVALID), "index.json", &|d| {
        let l = layout(d);
        fs::remove_file(d.join("index.json")).expect("rm");
        std::os::unix::fs::symlink("/dev/zero", d.join("index.json")).expect("symlink");
        dirsrc(&l)
    });
    case("index-json-char-device-zero", Refused(INVALID), "not a regular file", &|d| {
        let l = layout(d);
        mknod_zero(&d.join("index.json"));
        dirsrc(&l)
    });
    case("index-json-fifo", Refused(INVALID), "not a regular file", &|d| {
        let l = layout(d);
        mkfifo(&d.join("index.json"));
        dirsrc(&l)
    });
    case("manifest-blob-fifo", Refused(INVALID), "not a regular file", &|d| {
        let l = layout(d);
        mkfifo(&l.blob(&l.manifest_digest()));
        dirsrc(&l)
    });
    case("config-blob-fifo", Refused(INVALID), "not a regular file", &|d| {
        let l = layout(d);
        mkfifo(&l.blob(l.manifest()["config"]["digest"].as_str().unwrap()));
        dirsrc(&l)
    });
    case("layer-blob-fifo", Refused(INVALID), "not a regular file", &|d| {
        let l = layout(d);
        mkfifo(&l.blob(&l.layer_digest(1)));
        dirsrc(&l)
    });
    case("layer-blob-dev-zero-1tib", Refused(INVALID), "", &|d| {
        let l = layout(d);
        let p = l.blob(&l.layer_digest(1));
        mknod_zero(&p);
        l.rewrite_manifest(|m| m["layers"][1]["size"] = (1u64 << 40).into());
        dirsrc(&l)
    });
    case("layer-blob-directory", Refused(INVALID), "not a regular file", &|d| {
        let l = layout(d);
        let p = l.blob(&l.layer_digest(1));
        fs::remove_file(&p).expect("rm");
        fs::create_dir(&p).expect("mkdir");
        dirsrc(&l)
    });

    // Sizes that lie.
    case("layer-size-says-1tib", Refused(INVALID), "descriptor says", &|d| {
        let l = layout(d);
        l.rewrite_manifest(|m| m["layers"][1]["size"] = (1u64 << 40).into());
        dirsrc(&l)
    });
    case("layer-size-says-less", Refused(INVALID), "descriptor says", &|d| {
        let l = layout(d);
        l.rewrite_manifest(|m| m["layers"][1]["size"] = 10.into());
        dirsrc(&l)
    });
    case("manifest-size-lies", Refused(INVALID), "", &|d| {
        let l = layout(d);
        let mut index = l.index();
        index["manifests"][0]["size"] = 7.into();
        l.set_index(&index);
        dirsrc(&l)
    });

    // JSON bombs.
    case("index-json-200mb", Refused(INVALID), "index.json", &|d| {
        let l = layout(d);
        // Valid JSON up to a point, then 200 MB (sparse) of NULs: only the cap stops it.
        let f = fs::File::create(d.join("index.json")).expect("create");
        (&f).write_all(br#"{"schemaVersion":2,"manifests":[],"annotations":{"x":""#).expect("write");
        f.set_len(200 << 20).expect("set_len");
        dirsrc(&l)
    });
    case("index-json-deeply-nested", Refused(INVALID), "index.json", &|d| {
        let l = layout(d);
        let mut s = String::from(r#"{"schemaVersion":2,"manifests":[],"annotations":{"x":"#);
        s.push_str(&"[".repeat(100_000));
        fs::write(d.join("index.json"), s).expect("write");
        dirsrc(&l)
    });
    case("index-json-wide-annotations", Either, "", &|d| {
        // Just under the cap: a million tiny annotations, parsed into a map.
        let l = layout(d);
        let mut index = l.index();
        let mut annotations = serde_json::Map::new();
        let mut i = 0u64;
        let mut size = 0usize;
        while size < (4 << 20) - 64 * 1024 {
            let k = format!("{i:x}");
            size += k.len() + 6;
            annotations.insert(k, "".into());
            i += 1;
        }
        index["annotations"] = Value::Object(annotations);
        l.set_index(&index);
        dirsrc(&l)
    });
    case("index-json-64mib-of-annotations", Refused(INVALID), "index.json", &|d| {
        // Nine million tiny annotations: parsed, a map of them takes gigabytes.
        let l = layout(d);
        let mut s = String::from(r#"{"schemaVersion":2,"manifests":["#);
        s.push_str(&l.index()["manifests"][0].to_string());
        s.push_str(r#"],"annotations":{"#);
        let mut i = 0u64;
        while s.len() < 64 << 20 {
            s.push_str(&format!("\"{i:x}\":\"\","));
            i += 1;
        }
        s.push_str(r#""end":""}}"#);
        fs::write(d.join("index.json"), s).expect("write");
        dirsrc(&l)
    });
    case("manifest-5mib", Refused(INVALID), "", &|d| {
        let l = layout(d);
        l.rewrite_manifest(|m| m["annotations"] = json!({"pad": "x".repeat(5 << 20)}));
        dirsrc(&l)
    });
    case("config-20mib", Refused(INVALID), "", &|d| {
        let l = layout(d);
        l.rewrite_config(|c| c["config"]["Labels"] = json!({"pad": "x".repeat(20 << 20)}));
        dirsrc(&l)
    });
    case("nested-index-chain", Refused(INVALID), "", &|d| {
        // An index pointing at an index … more levels than anyone nests (a cycle
        // cannot be written with digests; a long chain is what is left of one).
        let l = layout(d);
        nest(&l, 12);
        dirsrc(&l)
    });
    case("nested-index-two-levels", Unpacked, "", &|d| {
        let l = layout(d);
        nest(&l, 1);
        dirsrc(&l)
    });

    // Media types that lie.
    case("layer-says-gzip-is-zstd", Either, "", &|d| {
        let l = layout(d);
        l.rewrite_manifest(|m| m["layers"][1]["mediaType"] = "application/vnd.oci.image.layer.v1.tar+zstd".into());
        dirsrc(&l)
    });
    case("layer-says-it-is-a-config", Refused(INVALID), "not a layer", &|d| {
        let l = layout(d);
        l.rewrite_manifest(|m| m["layers"][1]["mediaType"] = "application/vnd.oci.image.config.v1+json".into());
        dirsrc(&l)
    });
    case("manifest-says-it-is-an-index", Refused(INVALID), "", &|d| {
        let l = layout(d);
        let mut index = l.index();
        index["manifests"][0]["mediaType"] = "application/vnd.oci.image.index.v1+json".into();
        l.set_index(&index);
        dirsrc(&l)
    });

    // Compression edge cases.
    case("gzip-multi-member", Unpacked, "", &|d| {
        let l = layout(d);
        let mut blob = gzip(&app[..512]);
        blob.extend(gzip(&app[512..]));
        l.replace_layer(1, &blob, &digest(&app), "application/vnd.oci.image.layer.v1.tar+gzip");
        dirsrc(&l)
    });
    case("gzip-trailing-garbage", Refused(INVALID), "", &|d| {
        let l = layout(d);
        let mut blob = gzip(&app);
        blob.extend(b"trailing garbage after the gzip stream".repeat(4));
        l.replace_layer(1, &blob, &digest(&app), "application/vnd.oci.image.layer.v1.tar+gzip");
        dirsrc(&l)
    });
    case("gzip-bomb-diff-id-wrong", Refused(INVALID), "diff_id", &|d| {
        // 256 MiB of zeros in ~256 KiB: inflated and hashed as it streams, never held.
        let l = layout(d);
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..256 {
            e.write_all(&zeros).expect("gzip");
        }
        let blob = e.finish().expect("gzip");
        l.replace_layer(1, &blob, &digest(b"not it"), "application/vnd.oci.image.layer.v1.tar+gzip");
        dirsrc(&l)
    });

    // Archives.
    case("oci-archive-control", Unpacked, "", &|d| {
        let l = layout(d);
        let out = d.with_extension("tar");
        tar_of_dir(&l.dir, &out);
        out.display().to_string()
    });
    case("oci-archive-manifest-member-is-symlink", Refused(INVALID), "not in the archive", &|d| {
        let l = layout(d);
        let p = l.blob(&l.manifest_digest());
        fs::remove_file(&p).expect("rm");
        std::os::unix::fs::symlink(&secret, &p).expect("symlink");
        let out = d.with_extension("tar");
        tar_of_dir(&l.dir, &out);
        out.display().to_string()
    });
    case("oci-archive-member-is-hardlink", Refused(INVALID), "not in the archive", &|d| {
        let l = layout(d);
        let m = l.manifest_digest();
        let out = d.with_extension("tar");
        tar_of_dir(&l.dir, &out);
        // Rebuild: the manifest member becomes a hardlink to outside/secret.
        let mut t = TarBuilder::new();
        let mut a = tar::Archive::new(fs::File::open(&out).expect("open"));
        let rel = format!("blobs/sha256/{}", m.trim_start_matches("sha256:"));
        for e in a.entries().expect("entries") {
            let mut e = e.expect("entry");
            let name = e.path().expect("path").to_string_lossy().trim_start_matches("./").to_string();
            if name == rel {
                t.hardlink(&name, &secret.display().to_string());
            } else if e.header().entry_type().is_file() {
                let mut data = Vec::new();
                std::io::Read::read_to_end(&mut e, &mut data).expect("read");
                t.file(&name, &data);
            }
        }
        fs::write(&out, t.build()).expect("write");
        out.display().to_string()
    });
    case("oci-archive-index-claims-past-end", Refused(INVALID), "", &|d| {
        let l = layout(d);
        let out = d.with_extension("tar");
        tar_of_dir(&l.dir, &out);
        // Cut the archive in the middle of its last member.
        let data = fs::read(&out).expect("read");
        let cut = data.len() - 2048 - 700;
        fs::write(&out, &data[..cut]).expect("write");
        out.display().to_string()
    });
    case("docker-archive-control", Unpacked, "", &|d| {
        let out = d.with_extension("tar");
        docker_archive(&out, &["strata/ok:v1"], &[base.clone(), app.clone()], None);
        out.display().to_string()
    });
    case("docker-archive-diff-id-is-a-layer-name", Refused(INVALID), "digest", &|d| {
        let out = d.with_extension("tar");
        docker_archive(&out, &["strata/evil:v1"], std::slice::from_ref(&base), Some(vec!["c-victim".into()]));
        out.display().to_string()
    });
    case("docker-archive-manifest-json-5mib", Refused(INVALID), "manifest.json", &|d| {
        let out = d.with_extension("tar");
        let pad = format!(r#"[{{"Config":"x.json","Layers":[],"Pad":"{}"}}]"#, "x".repeat(5 << 20));
        fs::write(&out, TarBuilder::new().file("manifest.json", pad.as_bytes()).build()).expect("write");
        out.display().to_string()
    });

    // Names that are not names.
    for (name, tag) in [
        ("ref-name-dotdot", ".."),
        ("ref-name-dot-hidden", ".hidden"),
        ("ref-name-traversal", "../../x"),
        ("ref-name-empty", ""),
        ("ref-name-slash-dotdot", "a/../../b"),
    ] {
        case(name, Refused(USAGE), "invalid reference format", &|d| {
            let l = layout(d);
            let mut index = l.index();
            index["manifests"][0]["annotations"][REF_NAME] = tag.into();
            l.set_index(&index);
            dirsrc(&l)
        });
    }
    case("docker-repo-tag-traversal", Refused(USAGE), "invalid reference format", &|d| {
        let out = d.with_extension("tar");
        docker_archive(&out, &["../../evil:1"], std::slice::from_ref(&base), None);
        out.display().to_string()
    });
    for (name, n) in [
        ("flag-name-dotdot", ".."),
        ("flag-name-dot", "."),
        ("flag-name-empty", ""),
        ("flag-name-hidden", ".hidden"),
        ("flag-name-traversal", "../x"),
        ("flag-name-space", "a b"),
    ] {
        let dir = work.join(name);
        let src = dirsrc(&layout(&dir));
        out.push(HostileImage {
            name,
            src,
            args: vec!["--name".into(), n.into()],
            expect: Refused(USAGE),
            error_has: "invalid reference format",
        });
    }
    out
}

/// An image of `n` empty layers (each a tar of one empty directory, distinct), for the
/// memory bound: streams and decoders must open one at a time.
pub fn many_layers(dir: &Path, n: usize) -> String {
    let blobs: Vec<Vec<u8>> = (0..n).map(|i| gzip(&TarBuilder::new().dir(&format!("d{i}")).build())).collect();
    write_layout(dir, "many", &blobs).expect("layout");
    dir.display().to_string()
}
