//! Media types and size limits of OCI documents, in one place: every reader of a
//! manifest, index or config bounds it here before parsing.

/// The annotation that tags a manifest in an image layout's index.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// The most an index (`index.json`, a nested index), a manifest or a docker-archive's
/// `manifest.json` may hold. containerd refuses manifests over 4 MiB; real ones are a
/// few KiB. Parsed JSON takes several times its size in memory (a map of a million
/// tiny annotations is ~10x), so this is also what keeps an unpack's memory bounded.
pub const MAX_MANIFEST: u64 = 4 << 20;

/// The most an image config may hold. Long histories make configs the biggest JSON,
/// yet real ones are a few KiB to a few hundred; the store reads a kept config back
/// whole, and parsed JSON takes several times its size in memory. 16 MiB, not the
/// registry client's 64: a pulled config between the two was kept but could not be read
/// back by `image save`, `commit`, `inspect` or `check`, so one limit must hold on every
/// path, and the smaller one bounds memory.
pub const MAX_CONFIG: u64 = 16 << 20;

/// The deepest a manifest or config may nest arrays and objects; real ones nest 4 or 5
/// levels. The typed parsers (oci-spec over serde_json) skip an unknown key's value
/// without counting its levels, but `container commit` and `image inspect` read a kept
/// config whole, unknown keys and all, which serde_json stops at 128 levels: checked
/// here, such an image is refused before anything is written, not kept and then
/// unreadable.
pub const MAX_JSON_DEPTH: usize = 64;

/// The most members an archive may have: each costs an entry in the index of members.
pub const MAX_ARCHIVE_MEMBERS: usize = 1_000_000;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

/// The OCI media type of a layer given by any of the names registries and archives use.
pub fn oci_layer_type(media_type: &str) -> &str {
    match media_type {
        "application/vnd.docker.image.rootfs.diff.tar.gzip" => OCI_LAYER_GZIP,
        "application/vnd.docker.image.rootfs.diff.tar" | "application/x-tar" => OCI_LAYER_TAR,
        other => other,
    }
}

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// What a docker-archive's layers are (`docker save` names no media type).
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
