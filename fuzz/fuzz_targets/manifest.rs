//! Manifest and config parsing on arbitrary input. The input is split at its first 0xff
//! byte into a manifest and a config blob; the config is served for any digest. Then,
//! when the manifest parses as JSON, it is pointed at the config's real digest and size
//! and parsed again, so fuzzed configs reach the config parser too. Errors are fine;
//! panics, hangs and huge allocations are not.
#![no_main]

use std::io::{self, Read};

use strata_image::image::{image_from_manifest, BlobSource};
use libfuzzer_sys::fuzz_target;
use sha2::Digest;

struct OneBlob(Vec<u8>);

impl BlobSource for OneBlob {
    fn open(&self, _locator: &str) -> io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(io::Cursor::new(self.0.clone())))
    }
}

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|&b| b == 0xff).unwrap_or(data.len());
    let (manifest, config) = (&data[..split], data.get(split + 1..).unwrap_or_default());
    let source = OneBlob(config.to_vec());
    let _ = image_from_manifest(&source, "fuzz", "fuzz".into(), manifest);
    if let Ok(mut m) = serde_json::from_slice::<serde_json::Value>(manifest) {
        if m.is_object() {
            let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(config)));
            m["config"] = serde_json::json!({
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": digest,
                "size": config.len(),
            });
            let _ = image_from_manifest(&source, "fuzz", "fuzz".into(), &serde_json::to_vec(&m).unwrap());
        }
    }
});
