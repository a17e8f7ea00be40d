//! Reading OCI images: an image layout directory (`DIR` or `DIR:TAG`), an oci-archive
//! (the same layout in a tar) or a docker-archive (`docker save`: `manifest.json`).
//!
//! Every blob is checked against its digest as it streams, and every layer's
//! uncompressed stream against the config's `rootfs.diff_ids`; a mismatch fails the
//! read at its end, so the layer being applied is never committed. Layers are named by
//! chain ID (`ChainID(L0) = DiffID(L0)`, `ChainID(Ln) = sha256(ChainID(Ln-1) + " " +
//! DiffID(Ln))`), so two images on one base share its layers.
//!
//! The work is split by job; this module gathers their public items under the path
//! callers have always used (`strata_image::image::…`).

pub use crate::chain::{chain_ids, Image, LayerBlob};
pub use crate::layout::{write_layout, LayoutBlob};
pub use crate::media::{MAX_ARCHIVE_MEMBERS, MAX_CONFIG, MAX_JSON_DEPTH, MAX_MANIFEST, REF_NAME};
pub use crate::names::validate_name;
pub use crate::platform::{host_arch, pick_platform, Platform};
pub use crate::resolve::{image_from_manifest, open_source};
pub use crate::source::{blob_path, BlobSource, CheckedSource, LayoutDir};
pub use crate::stream::{open_layer, open_layer_lazily};
pub use crate::verify::VerifyingReader;
