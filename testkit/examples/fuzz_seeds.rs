//! Writes seed inputs for the fuzz targets (fuzz/): every tar of the hostile corpus,
//! aimed at the tar_apply target's fixed `outside` directory, and a few manifests.
//! `cargo run -p driver-core --example fuzz_seeds -- fuzz/corpus`

use std::fs;
use std::path::{Path, PathBuf};

fn main() {
    let out = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "fuzz/corpus".into()));
    let tars = out.join("tar_apply");
    fs::create_dir_all(&tars).unwrap();
    for h in strata_testkit::hostile::corpus(Path::new("/tmp/strata-fuzz-base/outside")) {
        fs::write(tars.join(h.name), &h.tar).unwrap();
    }
    let manifests = out.join("manifest");
    fs::create_dir_all(&manifests).unwrap();
    let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945"]}}"#;
    let manifest = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945","size":2},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945","size":10}]}"#;
    let mut seed = manifest.to_vec();
    seed.push(0xff);
    seed.extend_from_slice(config);
    fs::write(manifests.join("oci"), seed).unwrap();
    println!("seeds written under {}", out.display());
}
