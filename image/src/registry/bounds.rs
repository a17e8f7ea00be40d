//! What a registry may send, bounded: media types strata pulls, size limits, tries,
//! and the time [`Limits`] of a pull.

use std::time::Duration;

// The media types and document bounds are the image crate's (crate::media), one for
// every path: a config the registry client let in must read back in `save` and `check`.
pub use crate::media::MAX_MANIFEST;
pub(super) use crate::media::{
    DOCKER_MANIFEST, DOCKER_MANIFEST_LIST as DOCKER_LIST, MAX_CONFIG, OCI_INDEX, OCI_MANIFEST,
};
pub(super) const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// Token answers are JSON with a JWT of a few KiB.
pub(super) const MAX_TOKEN_ANSWER: u64 = 1 << 20;
/// Of an error answer only the start is worth showing.
pub(super) const MAX_ERROR_BODY: u64 = 64 << 10;
/// As docker and curl's default.
pub const MAX_REDIRECTS: usize = 10;
/// Tries per request on 5xx, 429 and broken connections.
pub(super) const TRIES: u32 = 4;
/// Nested indexes followed at most (an index pointing at an index...).
pub(super) const MAX_INDEX_DEPTH: usize = 4;

/// How long a pull may take, and how slow it may get. `image pull` takes them from
/// flags or environment variables (see `strata image pull --help`).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// The whole download (manifests, config, layers), not the unpack after it.
    pub timeout: Duration,
    /// Bytes per second, averaged over `low_speed_time`, below which a pull fails.
    pub low_speed_limit: u64,
    pub low_speed_time: Duration,
}
