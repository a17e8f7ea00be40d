//! A resolved image, its layers bottom to top, and their chain IDs (`ChainID(L0) =
//! DiffID(L0)`, `ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln))`), so two images
//! on one base share its layers.

use driver_core::digest::sha256;

/// One layer of an image, as the manifest and config describe it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerBlob {
    /// Where the blob is found in its source (a digest, or a path in a docker-archive).
    pub locator: String,
    /// `sha256:…` of the blob, when the source names one (docker-archive layers
    /// stored by path have none: their diff_id is their digest).
    pub digest: Option<String>,
    pub media_type: String,
    pub size: Option<u64>,
    pub diff_id: String,
}

/// A resolved image: its layers bottom to top and their chain IDs.
#[derive(Clone, Debug)]
pub struct Image {
    pub name: String,
    pub config_digest: String,
    /// Where the config is found in its source (its digest, or a docker-archive path).
    pub config_locator: String,
    /// The manifest as the source holds it (none in a docker-archive).
    pub manifest: Option<Vec<u8>>,
    pub layers: Vec<LayerBlob>,
    pub chain_ids: Vec<String>,
}

/// Chain IDs of a list of diff_ids.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let id = match out.last() {
            None => d.clone(),
            Some(prev) => sha256(format!("{prev} {d}").as_bytes()),
        };
        out.push(id);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn chain_ids_follow_the_spec() {
        let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let ids = chain_ids(&[d('a'), d('b')]);
        assert_eq!(ids[0], d('a'));
        let want = format!("sha256:{}", hex::encode(Sha256::digest(format!("{} {}", d('a'), d('b')).as_bytes())));
        assert_eq!(ids[1], want);
    }
}
