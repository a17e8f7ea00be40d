//! strata-image's errors: one enum, a variant per kind of failure, so that callers
//! (the `strata` binary's exit codes, tests) match on what went wrong rather than on
//! its text. Context (which image source, which layer, which save) is a wrapper
//! ([`Error::Context`]) around the typed cause, as ripgrep's `WithPath`; [`Error::root`]
//! finds the cause under it.
//!
//! An `io::Error` is kept as it is, with its errno ([`Error::Io`], [`Error::Read`]): a
//! full disk reads "No space left on device" whatever the step. A [`Read`] that fails
//! because of what it checks (a digest, a size) returns an `io::Error` that carries this
//! crate's [`Error`]; [`Error::read`] takes it back out, typed.
//!
//! [`Read`]: std::io::Read

use std::io;
use std::path::{Path, PathBuf};

use crate::digest::{Digest, DigestError};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No stored image has this name.
    #[error("image {name}: no such image")]
    NotFound { name: String },
    /// `image rm` of it has begun: it is no longer listed.
    #[error("image {name}: no such image (being removed)")]
    Removing { name: String },
    /// A record an older strata left while it unpacked the image.
    #[error("image {name}: still being unpacked (by process {pid})")]
    Unpacking { name: String, pid: u32 },
    /// A container is made over the image.
    #[error("image {name} is used by container(s) {}; remove them first", containers.join(", "))]
    InUse { name: String, containers: Vec<String> },
    /// Other processes kept removing or making the image's layers.
    #[error("image {name}: its layers kept changing under other processes; gave up after {rounds} rounds")]
    KeptChanging { name: String, rounds: usize },
    /// A commit's layers or blobs changed under another process.
    #[error("image {name}: its layers or blobs changed under another process during the commit; commit again")]
    CommitRaced { name: String },
    /// The image was stored by a strata that kept only its layers.
    #[error(
        "image {name} was stored by an older strata, which kept only its layers, not its blobs, \
         config and manifest; unpack or pull it again to keep them"
    )]
    NoContent { name: String },

    /// A name that is not an image reference.
    #[error("image name {name:?}: invalid reference format ({reason}); use e.g. `repo/app:tag` (lowercase)")]
    InvalidReference { name: String, reason: String },
    #[error(transparent)]
    InvalidDigest(#[from] DigestError),
    #[error("--platform {0:?}: expected OS/ARCH[/VARIANT], as linux/amd64 or linux/arm/v7")]
    InvalidPlatform(String),
    #[error("unknown format {0:?}: use oci, oci-archive or docker-archive")]
    InvalidFormat(String),

    /// A stream whose sha256 is not its descriptor's.
    #[error("{what} has digest {got}, not {want} (tampered or corrupt)")]
    DigestMismatch { what: String, got: Digest, want: Digest },
    /// A stream that ended before (or after) its descriptor's size.
    #[error("{what} has {got} bytes, not the {want} its descriptor says (truncated?)")]
    SizeMismatch { what: String, got: u64, want: u64 },
    /// A stream longer than its descriptor's size, refused as soon as it is.
    #[error("{what} has more than the {size} bytes its descriptor says")]
    LongerThanSaid { what: String, size: u64 },
    /// A blob whose stored size (a file's, an archive member's) is not its descriptor's.
    #[error("the blob has {stored} bytes, not the {want} its descriptor says")]
    StoredSize { stored: u64, want: u64 },
    /// A document over its limit ([`crate::media`]).
    #[error("{what} has {size} bytes, more than the {max} allowed")]
    TooLarge { what: String, size: u64, max: u64 },
    #[error("{what}: JSON nested more than {max} levels deep (real ones nest 5)")]
    TooDeep { what: String, max: usize },
    /// A document that does not parse: the file, the field (`rootfs.diff_ids[0]`; `.`
    /// for the document itself) and serde's words with line and column.
    #[error("{file}: {field}: {source}")]
    Parse { file: String, field: String, source: serde_json::Error },
    /// A record of the store's own (`images/<hash>.json`) that does not parse: damaged
    /// (a power cut under `--sync none` leaves one empty), not an image that is not what
    /// it says. Listings go around it ([`crate::images::ImageStore::list_readable`]);
    /// what must read every record to be safe (`image rm`, `image prune`: removing
    /// layers or blobs another image may use) stops here; `check` names it and
    /// `check --repair` rebuilds it.
    #[error(
        "image record {}: {}; it may list layers and blobs in use, so nothing is removed: \
         run `strata check --repair` (it rebuilds the record or removes the image)",
        file.display(),
        record_damage(field, source)
    )]
    Record { file: PathBuf, field: String, source: serde_json::Error },

    /// A file of an image layout that is not a regular file: a symlink (which could
    /// lead anywhere), a FIFO, a device or a directory (none has a digest to check, and
    /// some never end). `is` says what it is.
    #[error("{name} is {is}; a layout holds regular files")]
    NotRegular { name: String, is: String },
    /// A blob or member the image's index or manifest names that the layout or archive
    /// (`of`) does not hold as a regular file (missing, or a symlink or hardlink in its
    /// place in an archive).
    #[error("{name:?} is not in the {of}")]
    MissingMember { name: String, of: &'static str },
    /// An image source that is neither a layout nor an archive strata reads.
    #[error("{0}")]
    NotAnImage(&'static str),
    /// A file that is not a tar archive strata can read, so neither an oci-archive nor
    /// a docker-archive. `why` is strata's own words (what its first bytes look like, which
    /// check failed), never the file's bytes: a user who hands over `/etc/passwd` must not
    /// see it printed back.
    #[error("not an OCI layout, oci-archive or docker-archive ({why})")]
    NotAnArchive { why: String },
    #[error("no such file or directory")]
    NoSuchSource,
    /// A source named with a transport (`oci-archive:`) that is something else.
    #[error("it is {is}, not what {named}: names")]
    WrongTransport { is: &'static str, named: &'static str },
    #[error("no {what} tagged {tag:?} in {file}")]
    NoSuchTag { what: &'static str, tag: String, file: &'static str },
    #[error("it holds {count} images; pick one with {pick} (tags: {})", tags.join(", "))]
    SeveralImages { count: usize, pick: String, tags: Vec<String> },
    #[error("no manifest for {want}; the image is for {}", present.join(", "))]
    NoPlatform { want: String, present: Vec<String> },
    #[error("--platform {want} matches nothing: the image is for {have} only")]
    PlatformMismatch { want: String, have: String },
    #[error("{manifest} lists {layers} layers but the config {diff_ids} diff_ids")]
    LayerCount { manifest: &'static str, layers: usize, diff_ids: usize },
    #[error("layer {digest} has media type {media_type}, which is not a layer")]
    NotALayer { digest: String, media_type: String },

    /// A file or directory of strata's own (a store, an output), its errno kept.
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    /// Reading something that is not a path of ours (a blob of a source, an archive
    /// member, a layer's stream), its errno kept.
    #[error("{what}: {source}")]
    Read { what: String, source: io::Error },
    /// A layer operation of the driver, or the store's own records.
    #[error(transparent)]
    Layer(#[from] driver_core::Error),
    /// What was being done (`image SRC`, `layer 2 (blob …)`, `saving image A to B`)
    /// around the cause.
    #[error("{what}: {source}")]
    Context { what: String, source: Box<Error> },

    /// `image inspect --efficiency --max-wasted-bytes`: the image wastes more (dive's CI
    /// rule, [`crate::inspect::Efficiency::check`]).
    #[error("image {name} wastes {wasted} bytes, more than --max-wasted-bytes {max}")]
    WastesTooMuch { name: String, wasted: u64, max: u64 },
    /// `image inspect --efficiency --min-efficiency`: the image is less efficient.
    #[error("image {name} has efficiency {efficiency:.4}, below --min-efficiency {min}")]
    BelowMinEfficiency { name: String, efficiency: f64, min: f64 },
}

impl Error {
    /// An io error at `path`, or the typed error it carries (see the module docs).
    pub fn io(path: impl AsRef<Path>, e: io::Error) -> Error {
        match Error::carried(e) {
            Ok(typed) => typed,
            Err(e) => Error::Io { path: path.as_ref().to_path_buf(), source: e },
        }
    }

    /// An io error reading `what`, or the typed error it carries.
    pub fn read(what: impl Into<String>, e: io::Error) -> Error {
        match Error::carried(e) {
            Ok(typed) => typed,
            Err(e) => Error::Read { what: what.into(), source: e },
        }
    }

    /// This error, said to happen while doing `what`.
    pub fn context(self, what: impl Into<String>) -> Error {
        Error::Context { what: what.into(), source: Box::new(self) }
    }

    /// This error, said to concern image source (or stored image) `src`.
    pub fn in_image(self, src: &str) -> Error {
        self.context(format!("image {src}"))
    }

    /// The cause under any [`Error::Context`].
    pub fn root(&self) -> &Error {
        match self {
            Error::Context { source, .. } => source.root(),
            e => e,
        }
    }

    /// An io::Error that carries this error, for a [`Read`](std::io::Read) to return.
    pub fn into_io(self) -> io::Error {
        let kind = match self.root() {
            Error::Io { source, .. } | Error::Read { source, .. } => source.kind(),
            _ => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, self)
    }

    /// The raw OS error under this one (ENOSPC, EACCES, ...), if any.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self.root() {
            Error::Io { source, .. } | Error::Read { source, .. } => driver_core::error::os_error(source),
            Error::Layer(e) => e.raw_os_error(),
            _ => None,
        }
    }

    /// The typed error an io::Error carries, or the io::Error back.
    fn carried(e: io::Error) -> std::result::Result<Error, io::Error> {
        if !e.get_ref().is_some_and(|inner| inner.is::<Error>()) {
            return Err(e);
        }
        let inner = e.into_inner().expect("checked above");
        Ok(*inner.downcast::<Error>().expect("checked above"))
    }

    /// A JSON document `file` that does not parse into `T`, naming the field.
    pub fn parse_json<T: serde::de::DeserializeOwned>(file: impl Into<String>, json: &[u8]) -> Result<T> {
        deserialize(json).map_err(|(field, source)| Error::Parse { file: file.into(), field, source })
    }

    /// An image record at `file` that does not parse into `T`, naming the field.
    pub fn parse_record<T: serde::de::DeserializeOwned>(file: &Path, json: &[u8]) -> Result<T> {
        deserialize(json).map_err(|(field, source)| Error::Record { file: file.to_path_buf(), field, source })
    }
}

/// What is wrong with a record that does not parse: `record empty` (what a power cut
/// leaves, in `strata check`'s words), else the field and serde's cause.
fn record_damage(field: &str, source: &serde_json::Error) -> String {
    if source.is_eof() && source.line() == 1 && source.column() == 0 {
        "record empty".to_string()
    } else {
        format!("{field}: {source}")
    }
}

/// `json` as a `T`, or the field (`rootfs.diff_ids[0]`; `.` for the document itself)
/// where it does not parse and serde's error.
fn deserialize<T: serde::de::DeserializeOwned>(json: &[u8]) -> std::result::Result<T, (String, serde_json::Error)> {
    let de = &mut serde_json::Deserializer::from_slice(json);
    serde_path_to_error::deserialize(de).map_err(|e| (e.path().to_string(), e.into_inner()))
}

/// Names the path of an io error, keeping the error (`.at_path(p)?`).
pub trait IoContext<T> {
    fn at_path(self, path: impl AsRef<Path>) -> Result<T>;
}

impl<T> IoContext<T> for std::result::Result<T, io::Error> {
    fn at_path(self, path: impl AsRef<Path>) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An errno under added words (driver-core's io_context) is found through an image
    /// error too, the same walk as a layer error's: ENOSPC stays exit 7.
    #[test]
    fn an_errno_under_added_words_is_found() {
        let enospc = || driver_core::error::io_context("set xattr", io::Error::from_raw_os_error(libc::ENOSPC));
        let io = Error::Io { path: "x".into(), source: enospc() };
        assert_eq!(io.raw_os_error(), Some(libc::ENOSPC));
        let read = Error::Read { what: "blob".into(), source: enospc() };
        assert_eq!(read.raw_os_error(), Some(libc::ENOSPC));
    }
}
