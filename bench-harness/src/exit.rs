//! The exit code of a command that failed, by what failed (the table is in docs/cli.md).
//! The bench keeps its own (docs/ci.md); a Ctrl-C that rolled back is 130, a closed
//! stdout 141; `container run` exits as its command did.

use driver_core::error::{Cause, Error};
use strata_image::Error as ImageError;

/// Any other failure: a layer operation, the disk, the store's records, `check`.
pub const FAILED: u8 = 1;
/// What the user typed is not valid: an image name, a platform, a format, a layer ID
/// (clap's own usage errors exit 2 too).
pub const USAGE: u8 = 2;
/// What was named does not exist: an image, a layer, an image source, a tag in it.
pub const NOT_FOUND: u8 = 4;
/// The image is not what it says: a digest that is invalid or does not match, a size
/// that does not match, a document that does not parse or is over a limit, something
/// that is not an image, a layer tar that is not one.
pub const INVALID_IMAGE: u8 = 5;
/// In use or changing: a container over the image, an unpack under way, layers that
/// other processes kept changing, a mounted layer or one with children.
pub const BUSY: u8 = 6;
/// The disk is full (ENOSPC), whatever the step.
pub const NO_SPACE: u8 = 7;

/// The exit code for `e`.
pub fn code(e: &Error) -> u8 {
    match ImageError::carried_by(e) {
        Some(image) => image_code(image),
        None => layer_code(e),
    }
}

fn image_code(e: &ImageError) -> u8 {
    use ImageError::*;
    if e.raw_os_error() == Some(libc::ENOSPC) {
        return NO_SPACE;
    }
    match e.root() {
        // A name is what the user gives (--name), or can give in place of the image's.
        InvalidReference { .. } | InvalidPlatform(_) | InvalidFormat(_) => USAGE,
        NotFound { .. } | Removing { .. } | NoSuchSource | NoSuchTag { .. } | NoPlatform { .. } => NOT_FOUND,
        PlatformMismatch { .. } => NOT_FOUND,
        // Digests come from the image's documents.
        InvalidDigest(_)
        | DigestMismatch { .. }
        | SizeMismatch { .. }
        | LongerThanSaid { .. }
        | StoredSize { .. }
        | TooLarge { .. }
        | TooDeep { .. }
        | Parse { .. }
        | NotAnImage(_)
        | WrongTransport { .. }
        | SeveralImages { .. }
        | LayerCount { .. }
        | NotALayer { .. } => INVALID_IMAGE,
        Unpacking { .. } | InUse { .. } | KeptChanging { .. } | CommitRaced { .. } => BUSY,
        Layer(e) => layer_code(e),
        NoContent { .. } | Io { .. } | Read { .. } | Context { .. } => FAILED,
        WastesTooMuch { .. } | BelowMinEfficiency { .. } => FAILED,
    }
}

fn layer_code(e: &Error) -> u8 {
    if e.raw_os_error() == Some(libc::ENOSPC) {
        return NO_SPACE;
    }
    match &e.cause {
        Cause::InvalidId(_) => USAGE,
        Cause::NotFound | Cause::ParentNotFound(_) => NOT_FOUND,
        Cause::BadTar(_) => INVALID_IMAGE,
        Cause::Mounted(_) | Cause::HasChildren(_) | Cause::InUse(_) => BUSY,
        _ => FAILED,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each kind of failure gets its code through the drivers' error type, as `main`
    /// sees it (an image error carried inside, see `strata_image::error`).
    #[test]
    fn image_errors_keep_their_code_through_the_drivers_error() {
        let carried = |e: ImageError| code(&Error::from(e));
        assert_eq!(carried(ImageError::NotFound { name: "a".into() }), NOT_FOUND);
        assert_eq!(carried(ImageError::NotFound { name: "a".into() }.in_image("a")), NOT_FOUND);
        let reference = ImageError::InvalidReference { name: "A".into(), reason: "uppercase".into() };
        assert_eq!(carried(reference), USAGE);
        assert_eq!(carried(ImageError::InUse { name: "a".into(), containers: vec!["c".into()] }), BUSY);
        assert_eq!(carried(ImageError::NotAnImage("neither")), INVALID_IMAGE);
        let full = std::io::Error::from_raw_os_error(libc::ENOSPC);
        let e = Error::from(ImageError::io("/x", full).context("saving image a to /x"));
        assert_eq!(code(&e), NO_SPACE);
        assert!(e.to_string().contains("No space left on device"), "{e}");
        assert_eq!(code(&Error::layer("l", Cause::NotFound)), NOT_FOUND);
        assert_eq!(code(&Error::new(Cause::Other("x".into()))), FAILED);
        assert_eq!(code(&Error::from(ImageError::Layer(Error::layer("l", Cause::Mounted(1))))), BUSY);
    }
}
