//! Image sources in every spelling skopeo and podman users write: a plain path,
//! `DIR:TAG`, `oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]`, `docker-archive:FILE[:REF]`,
//! and `docker://REF` for `image pull` and `image unpack`; all give the same image. A
//! transport that does not fit the file, and a `--platform` the image does not have,
//! are one clear line each.

use std::process::Command;

use strata_tests::registry::DockerRegistry;
use strata_tests::{privileged, Strata};

fn skopeo_copy(from: &str, to: &str) {
    let o = Command::new("skopeo").args(["copy", "--quiet", from, to]).output().unwrap();
    assert!(o.status.success(), "skopeo copy {from} {to}: {}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn every_transport_spelling_gives_the_same_image() {
    if !privileged("transport tests") || !strata_tests::installed(&["skopeo", "docker-registry"], "transport tests") {
        return;
    }
    use strata_cli::workload::{generate, gzip, WorkloadSize};
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("img");
    let blobs: Vec<Vec<u8>> = generate(41, WorkloadSize::small()).into_iter().take(2).map(|l| gzip(&l.tar)).collect();
    strata_image::image::write_layout(&dir, "v1", &blobs).unwrap();
    let d = dir.display();
    let oci_tar = work.path().join("img.oci.tar");
    let docker_tar = work.path().join("img.docker.tar");
    skopeo_copy(&format!("oci:{d}:v1"), &format!("oci-archive:{}:v1", oci_tar.display()));
    skopeo_copy(&format!("oci:{d}:v1"), &format!("docker-archive:{}:strata/img:v1", docker_tar.display()));
    let (o, k) = (oci_tar.display(), docker_tar.display());

    let want = Strata::new("vfs").ok(&["image", "unpack", &format!("{d}:v1")]).trim().to_string();
    for spelling in [
        format!("{d}"),
        format!("oci:{d}"),
        format!("oci:{d}:v1"),
        format!("{o}"),
        format!("oci-archive:{o}"),
        format!("oci-archive:{o}:v1"),
        format!("{k}"),
        format!("docker-archive:{k}"),
        format!("docker-archive:{k}:strata/img:v1"),
    ] {
        let s = Strata::new("vfs");
        assert_eq!(s.ok(&["image", "unpack", &spelling]).trim(), want, "{spelling}");
    }

    // docker://REF, pulled by `image pull` and by `image unpack`.
    let reg = DockerRegistry::start(&[]);
    reg.skopeo_push(&format!("oci:{d}:v1"), "strata/img:v1", None);
    let reference = format!("docker://127.0.0.1:{}/strata/img:v1", reg.port);
    for cmd in ["pull", "unpack"] {
        let s = Strata::new("vfs");
        assert_eq!(s.ok(&["image", cmd, "--insecure", &reference]).trim(), want, "image {cmd} {reference}");
        let ls = s.ok(&["image", "ls"]);
        assert!(ls.contains(&format!("127.0.0.1:{}/strata/img:v1", reg.port)), "image {cmd}: {ls}");
    }

    // A transport that is not what the path holds.
    let s = Strata::new("vfs");
    // The wrong transport: exit 5 (Error::WrongTransport); the line says what the path is.
    let e = s.fails_with(5, &["image", "unpack", &format!("oci-archive:{d}")]);
    assert!(e.contains("it is an OCI image layout (oci:), not what oci-archive: names"), "{e}");
    let e = s.fails_with(5, &["image", "unpack", &format!("docker-archive:{o}")]);
    assert!(e.contains("it is an oci-archive (oci-archive:), not what docker-archive: names"), "{e}");
    let e = s.fails_with(5, &["image", "unpack", &format!("oci:{k}")]);
    assert!(e.contains("it is a docker-archive (docker-archive:)"), "{e}");

    // --platform: the image's own is taken, another is an error naming what there is.
    let host = strata_image::image::host_arch();
    let other = if host == "arm64" { "amd64" } else { "arm64" };
    for spelling in [format!("{d}:v1"), format!("oci-archive:{o}"), format!("docker-archive:{k}")] {
        // No such platform: exit 4; the line names what the image is for.
        let e = s.fails_with(4, &["image", "unpack", "--platform", &format!("linux/{other}"), &spelling]);
        assert!(
            e.contains(&format!("--platform linux/{other} matches nothing: the image is for linux/{host} only")),
            "{spelling}: {e}"
        );
        assert_eq!(s.ok(&["image", "unpack", "--platform", &format!("linux/{host}"), &spelling]).trim(), want);
    }
    // A --platform that is not one is a usage error (exit 2, docs/cli.md).
    assert!(s.fails_with(2, &["image", "unpack", "--platform", "linux//x", &format!("{d}:v1")]).contains("OS/ARCH"));
}

/// A multi-platform index: the entry for the asked platform is taken; one that is not
/// there names those that are.
#[test]
fn platform_is_picked_from_an_index_or_named_as_missing() {
    if !privileged("transport tests") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("img");
    let blob = strata_tests::changes::gz(&strata_archive::tarbuild::TarBuilder::new().file("a", b"a").build());
    strata_image::image::write_layout(&dir, "v1", &[blob]).unwrap();
    // The one manifest, listed in a nested index twice: as linux/s390x (its config
    // says otherwise; the index is what picks) and as this host's.
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let m = index["manifests"][0].clone();
    let host = strata_image::image::host_arch();
    let entry = |arch: &str| {
        serde_json::json!({"mediaType": m["mediaType"], "digest": m["digest"], "size": m["size"],
            "platform": {"os": "linux", "architecture": arch}})
    };
    let nested = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [entry("s390x"), entry(host)]});
    let bytes = serde_json::to_vec(&nested).unwrap();
    let digest = strata_tests::registry::sha256(&bytes);
    std::fs::write(dir.join("blobs/sha256").join(digest.trim_start_matches("sha256:")), &bytes).unwrap();
    let top = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.index.v1+json", "digest": digest, "size": bytes.len(),
        "annotations": {"org.opencontainers.image.ref.name": "v1"}}]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();

    let s = Strata::new("vfs");
    let src = format!("{}:v1", dir.display());
    s.ok(&["image", "unpack", &src, "--name", "native"]);
    let e = s.fails_with(4, &["image", "unpack", "--platform", "linux/riscv64", &src]);
    assert!(e.contains(&format!("no manifest for linux/riscv64; the image is for linux/s390x, linux/{host}")), "{e}");
}
