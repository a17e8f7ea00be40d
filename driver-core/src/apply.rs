//! The tar engine's apply side: extract an OCI layer tar into a layer root, confined.
//! (Implementation in progress.)

use std::path::PathBuf;

/// How a driver stores an OCI whiteout (`.wh.NAME`, `.wh..wh..opq`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhiteoutMode {
    /// The lower data lives in the same tree (vfs, btrfs): delete it.
    Delete,
    /// overlayfs: a whiteout is a 0/0 character device; an opaque directory carries
    /// `<prefix>opaque=y`, where the prefix is `trusted.overlay.` or `user.overlay.`.
    OverlayDevice { xattr_prefix: &'static str },
}

/// What the engine needs to know besides the tar and the root.
#[derive(Clone, Debug)]
pub struct ApplyOptions {
    /// Layer ID, for error messages.
    pub layer: String,
    pub whiteouts: WhiteoutMode,
}

/// What an apply did.
#[derive(Clone, Debug, Default)]
pub struct ApplyReport {
    /// Bytes of regular-file content written (what `layer apply` prints).
    pub size: u64,
    /// Uncompressed bytes of the tar stream.
    pub tar_bytes: u64,
    /// `sha256:<hex>` of the uncompressed tar stream: the layer's diff_id.
    pub diff_id: String,
    /// Number of tar entries processed.
    pub entries: u64,
    /// Directories the tar did not describe but the engine had to create (parents of
    /// entries), relative to the root; `""` is the root itself when the tar did not
    /// describe it. A driver whose layer directory does not hold the lower layers
    /// (overlay) copies their metadata from the lower layers at commit time.
    pub implicit_dirs: Vec<PathBuf>,
}
