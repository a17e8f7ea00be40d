//! What a re-run of the documented examples found, end to end through the `strata`
//! binary, where the exit code and the printed line are the point:
//! - a file that is not an image (`/etc/passwd`, noise, a hostile archive) is refused
//!   with one line, exit 5, that names the path and never prints the file's bytes;
//! - one empty image record (a power cut under `--sync none`) hides nothing else: the
//!   listings list around it, and the commands that remove what other images may use
//!   refuse with one line naming the record and `strata check --repair`, exit 1 (a
//!   damaged store, docs/cli.md), changing nothing.

use std::fs;
use std::path::Path;

use serde_json::Value;
use strata_archive::tarbuild::TarBuilder;
use strata_testkit::hostile_images::Layout;
use strata_tests::changes::gz;
use strata_tests::{seeded_bytes, Strata};

fn no_control_characters(e: &str, what: &str) {
    assert!(!e.chars().any(|c| c.is_control()), "{what}: control characters in {e:?}");
}

/// A tar of `members`, each a regular file named by raw bytes.
fn tar(members: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut b = TarBuilder::new();
    for (name, data) in members {
        b.raw_file(name, data, Default::default());
    }
    b.build()
}

#[test]
fn files_that_are_not_images_exit_5_in_one_line_without_their_bytes() {
    let s = Strata::new("vfs");
    let work = tempfile::tempdir().unwrap();
    let put = |name: &str, bytes: &[u8]| {
        let p = work.path().join(name);
        fs::write(&p, bytes).unwrap();
        p.to_str().unwrap().to_string()
    };
    // The case from the field: the old code exited 1 with the tar reader's words,
    // which quoted the file (`numeric field was not a number: login\nsy ... root:x:0:0:`).
    let passwd = fs::read("/etc/passwd").unwrap();
    let e = s.fails_with(5, &["image", "unpack", "/etc/passwd"]);
    assert_eq!(
        e,
        "error: image /etc/passwd: not an OCI layout, oci-archive or docker-archive (no tar header: checksum mismatch)"
    );
    let first_line = String::from_utf8_lossy(&passwd).lines().next().unwrap().to_string();
    assert!(!e.contains(&first_line[..first_line.len().min(8)]), "{e}");

    // Escapes and bells, a gzipped archive, a torn tar: one line each, exit 5, the path
    // named, no control character.
    let mut noise = b"\x1b[2J\x1b]0;owned\x07\r".to_vec();
    noise.extend(seeded_bytes(7, 5000));
    let good = tar(&[(b"oci-layout", b"{}"), (b"index.json", b"{}")]);
    let mut torn = good.clone();
    // The second member's header, its name first, overwritten.
    let second = torn.windows(10).position(|w| w == b"index.json").unwrap();
    torn[second..second + 9].copy_from_slice(b"\x1b[31mred\x07");
    let cases = [
        (put("noise.bin", &noise), "no tar header: checksum mismatch"),
        (put("image.tar.gz", &gz(&good)), "it looks like a gzip stream"),
        (put("torn.tar", &torn), "a tar header after its first 1 member(s) does not parse"),
        (put("empty.tar", b""), "an empty file (0 bytes)"),
    ];
    for (path, want) in &cases {
        let e = s.fails_with(5, &["image", "unpack", path]);
        assert!(e.starts_with(&format!("error: image {path}: not an OCI layout")), "{e}");
        assert!(e.contains(want), "{path}: {e:?} should say {want:?}");
        no_control_characters(&e, path);
        let e = s.fails_with(5, &["image", "unpack", &format!("oci-archive:{path}")]);
        assert!(e.contains(want), "oci-archive:{path}: {e}");
    }

    // Archives whose own names hold escapes: refused (the bytes escaped, never raw).
    let hostile_name = b"\x1b[2Jindex\x07.json";
    let no_index = put("no-index.tar", &tar(&[(hostile_name, b"{}")]));
    let e = s.fails_with(5, &["image", "unpack", &no_index]);
    assert!(e.contains("neither an OCI image layout"), "{e}");
    no_control_characters(&e, "a member named with escapes");
    let manifest = br#"[{"Config":"\u001b[2Jcfg\u0007.json","RepoTags":["a:b"],"Layers":[]}]"#;
    let docker = put("docker.tar", &tar(&[(b"manifest.json", manifest)]));
    let e = s.fails(&["image", "unpack", &docker]);
    assert!(e.contains("is not in the archive"), "{e}");
    no_control_characters(&e, "a docker-archive config named with escapes");
    assert_eq!(s.ok(&["image", "ls", "--json"]).trim(), "[]");
}

/// A layout of two layers whose content depends on `seed`.
fn layout(dir: &Path, seed: u64) -> Layout {
    let base = TarBuilder::new().dir("etc").file("etc/conf", &seeded_bytes(seed, 3000)).build();
    let top = TarBuilder::new().dir("app").file("app/main", &seeded_bytes(seed + 1, 7000)).build();
    Layout::new(dir, "v1", &[gz(&base), gz(&top)])
}

#[test]
fn an_empty_image_record_hides_nothing_and_removals_refuse_naming_it() {
    let s = Strata::new("vfs");
    let work = tempfile::tempdir().unwrap();
    let (a, b) = (layout(&work.path().join("a"), 1), layout(&work.path().join("b"), 10));
    s.ok(&["image", "unpack", a.dir.to_str().unwrap(), "--name", "a"]);
    s.ok(&["image", "unpack", b.dir.to_str().unwrap(), "--name", "b"]);
    s.ok(&["container", "create", "ca", "--image", "a"]);
    let images = s.root.join("vfs/images");
    let rec_of = |name: &str| -> std::path::PathBuf {
        let found = fs::read_dir(&images).unwrap().map(|e| e.unwrap().path()).find(|p| {
            fs::read(p).ok().and_then(|d| serde_json::from_slice::<Value>(&d).ok()).is_some_and(|v| v["name"] == name)
        });
        found.unwrap_or_else(|| panic!("no record of {name}"))
    };
    let (rec_b, rec_a) = (rec_of("b"), rec_of("a"));
    let a_layers: Vec<String> = serde_json::from_slice::<Value>(&fs::read(&rec_a).unwrap()).unwrap()["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect();
    // What a power cut under --sync none leaves of b's record.
    fs::write(&rec_b, b"").unwrap();

    // The listings list around it (the old code failed each, exit 1: `metadata store is
    // corrupt: ….json: EOF while parsing a value at line 1 column 0`).
    let layers: Value = serde_json::from_str(&s.ok(&["layer", "ls", "--json"])).unwrap();
    for id in &a_layers {
        let l = layers.as_array().unwrap().iter().find(|l| l["id"] == id.as_str()).expect("a's layer listed");
        assert!(l["used_by"].as_array().unwrap().iter().any(|u| u == "image a"), "{l}");
    }
    let containers: Value = serde_json::from_str(&s.ok(&["container", "ls", "--json"])).unwrap();
    assert_eq!(containers[0]["name"], "ca", "{containers}");
    assert_eq!(containers[0]["images"], serde_json::json!(["a"]), "{containers}");
    let df: Value = serde_json::from_str(&s.ok(&["df", "--json"])).unwrap();
    assert!(df.to_string().contains("\"a\""), "df lists image a: {df}");
    let listed: Value = serde_json::from_str(&s.ok(&["image", "ls", "--json"])).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");

    // Removals that must read every record refuse, naming it, and change nothing.
    let before = s.state();
    let blobs = || fs::read_dir(s.root.join("vfs/content/blobs/sha256")).unwrap().count();
    let kept = blobs();
    let args: [&[&str]; 4] =
        [&["image", "rm", "a"], &["image", "prune"], &["image", "rm", "b"], &["container", "rm", "ca"]];
    for args in args {
        let e = s.fails_with(1, args);
        let want = format!("image record {}", rec_b.display());
        assert!(e.contains(&want), "{args:?}: {e:?} should say {want:?}");
        assert!(e.contains("run `strata check --repair`"), "{args:?}: {e}");
        assert_eq!(s.state(), before, "{args:?} changed the store");
        assert_eq!(blobs(), kept, "{args:?} removed blobs");
    }
    let e = s.fails_with(1, &["image", "rm", "a"]);
    assert!(e.contains(&format!("image record {}: record empty; ", rec_b.display())), "{e}");
    // Repaired, the removal works.
    s.ok(&["check", "--repair"]);
    s.ok(&["container", "rm", "ca"]);
    s.ok(&["image", "rm", "a"]);
    let listed: Value = serde_json::from_str(&s.ok(&["image", "ls", "--json"])).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "b came back, a went: {listed}");
}
