//! One error type for every driver. Each error carries the layer it concerns, the path
//! inside that layer (when there is one) and the cause, so that the `strata` binary can
//! print a single line such as
//! `error: layer base: usr/bin/x: hardlink target etc/passwd is not in this layer`.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// What went wrong, without the layer and path context.
#[derive(Debug, thiserror::Error)]
pub enum Cause {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("no such layer")]
    NotFound,
    #[error("layer already exists")]
    Exists,
    #[error("parent layer {0} does not exist")]
    ParentNotFound(String),
    #[error("layer is mounted ({0} users); unmount it first")]
    Mounted(u32),
    #[error("layer is not mounted")]
    NotMounted,
    #[error("layer has child layers ({0}); remove them first")]
    HasChildren(String),
    #[error("layer is used by {0}; remove that first")]
    InUse(String),
    #[error("layer is read-only (committed); only a writable layer can change")]
    ReadOnly,
    #[error("invalid layer id {0:?}: use 1-128 characters of [A-Za-z0-9_.:-], starting with a letter or digit")]
    InvalidId(String),
    #[error("invalid layer tar: {0}")]
    BadTar(String),
    #[error("refused: {0}")]
    Refused(String),
    #[error("not supported here: {0}")]
    Unsupported(String),
    #[error("metadata store is corrupt: {0}")]
    Corrupt(String),
    /// An applied layer tar is not the one its image names.
    #[error("the uncompressed layer (diff_id) has digest {got}, not {want} (tampered or corrupt)")]
    DiffIdMismatch { got: String, want: String },
    /// A layer's content is about to be replaced while a view over it (of the named
    /// layer) reads it.
    #[error("layer {0} over it is mounted; unmount it first")]
    MountedAbove(String),
    /// A container layer (writable) has no content record to make or check.
    #[error("a container layer has no content record")]
    NoContentRecord,
    /// A tar's hardlink could not be made to its target (the errno kept).
    #[error("cannot link to {}: {source}", target.display())]
    Link { target: PathBuf, source: io::Error },
    /// A whiteout format could not mark a directory opaque (the errno kept).
    #[error("cannot mark the directory opaque ({format}): {source}")]
    Opaque { format: &'static str, source: io::Error },
    /// SIGINT or SIGTERM asked the command to stop ([`crate::interrupt`]); what it made
    /// was undone.
    #[error("interrupted (SIGINT or SIGTERM)")]
    Interrupted,
    /// A mount the driver needs failed: `what` says which (the io error alone would
    /// read as if a file were missing or denied).
    #[error("{what}: {source}")]
    Mount { what: &'static str, source: io::Error },
    /// A failure no variant above describes. Kept for the rare rest (callers outside
    /// the drivers); each use says why it has no variant of its own.
    #[error("{0}")]
    Other(String),
}

/// An io error with what was being done in front of it (`mount overlay on /x`, `cannot
/// set xattr user.a`, a path): printed as `io::Error::new(kind, format!("{what}: {e}"))`
/// was, but the io error is kept, so [`os_error`] still finds its errno.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct IoContext {
    pub what: String,
    pub source: io::Error,
}

/// `e` with `what` in front, as an io error of the same kind (see [`IoContext`]).
pub fn io_context(what: impl Into<String>, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), IoContext { what: what.into(), source: e })
}

/// The errno of `e`, or of an io error it carries ([`io_context`], a typed error of a
/// crate above whose source is one).
pub fn os_error(e: &io::Error) -> Option<i32> {
    e.raw_os_error().or_else(|| e.get_ref().and_then(|inner| os_error_under(inner)))
}

/// The errno of the first io error or layer error on `e`'s chain of sources: the one
/// walk every crate's `raw_os_error` goes through, so an errno under added words
/// ([`io_context`]) or under another crate's error is found the same way everywhere.
pub fn os_error_under(e: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut next = Some(e);
    while let Some(cur) = next {
        if let Some(io) = cur.downcast_ref::<io::Error>() {
            return os_error(io);
        }
        if let Some(layer) = cur.downcast_ref::<Error>() {
            return layer.raw_os_error();
        }
        next = cur.source();
    }
    None
}

/// An error that names the layer, the path and the cause.
#[derive(Debug)]
pub struct Error {
    pub layer: Option<String>,
    pub path: Option<PathBuf>,
    pub cause: Cause,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    #[allow(clippy::new_ret_no_self)]
    pub fn new(cause: impl Into<Cause>) -> Self {
        Error { layer: None, path: None, cause: cause.into() }
    }
    pub fn layer(layer: &str, cause: impl Into<Cause>) -> Self {
        Error { layer: Some(layer.to_string()), path: None, cause: cause.into() }
    }
    pub fn at(layer: &str, path: impl AsRef<Path>, cause: impl Into<Cause>) -> Self {
        Error { layer: Some(layer.to_string()), path: Some(path.as_ref().to_path_buf()), cause: cause.into() }
    }
    /// Fills in the layer if the error does not name one yet.
    pub fn in_layer(mut self, layer: &str) -> Self {
        if self.layer.is_none() {
            self.layer = Some(layer.to_string());
        }
        self
    }
    /// Fills in the path if the error does not name one yet.
    pub fn with_path(mut self, path: impl AsRef<Path>) -> Self {
        if self.path.is_none() {
            self.path = Some(path.as_ref().to_path_buf());
        }
        self
    }
    /// The raw OS error, if the cause is one (ENOSPC, EACCES, ...).
    pub fn raw_os_error(&self) -> Option<i32> {
        match &self.cause {
            Cause::Io(e)
            | Cause::Link { source: e, .. }
            | Cause::Opaque { source: e, .. }
            | Cause::Mount { source: e, .. } => os_error(e),
            _ => None,
        }
    }
    pub fn is_not_found(&self) -> bool {
        matches!(self.cause, Cause::NotFound)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(layer) = &self.layer {
            write!(f, "layer {layer}: ")?;
        }
        if let Some(path) = &self.path {
            let shown = path.to_string_lossy();
            if shown.is_empty() {
                write!(f, "/: ")?;
            } else {
                write!(f, "{shown}: ")?;
            }
        }
        match &self.cause {
            // ENOSPC is the error users most need to recognise at a glance.
            Cause::Io(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                write!(f, "no space left on device")
            }
            cause => write!(f, "{cause}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.cause {
            Cause::Io(e) | Cause::Mount { source: e, .. } => Some(e),
            _ => None,
        }
    }
}

impl From<Cause> for Error {
    fn from(cause: Cause) -> Self {
        Error::new(cause)
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::new(Cause::Io(e))
    }
}

impl From<nix::Error> for Cause {
    fn from(e: nix::Error) -> Self {
        Cause::Io(io::Error::from_raw_os_error(e as i32))
    }
}

impl From<nix::Error> for Error {
    fn from(e: nix::Error) -> Self {
        Error::new(Cause::from(e))
    }
}

/// Adds a path (and optionally a layer) to io/nix results.
pub trait Context<T> {
    fn at_path(self, path: impl AsRef<Path>) -> Result<T>;
    fn in_layer(self, layer: &str) -> Result<T>;
}

impl<T, E: Into<Error>> Context<T> for std::result::Result<T, E> {
    fn at_path(self, path: impl AsRef<Path>) -> Result<T> {
        self.map_err(|e| e.into().with_path(path))
    }
    fn in_layer(self, layer: &str) -> Result<T> {
        self.map_err(|e| e.into().in_layer(layer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A failed mount keeps its io error: the errno is still there to match, and the
    /// line says which mount.
    #[test]
    fn a_mount_failure_keeps_its_errno() {
        let source = io::Error::from_raw_os_error(libc::EPERM);
        let e =
            Error::at("base", "mnt/base", Cause::Mount { what: "read-only bind mount of the committed layer", source });
        assert_eq!(e.raw_os_error(), Some(libc::EPERM));
        assert!(std::error::Error::source(&e).is_some());
        let line = e.to_string();
        assert!(line.starts_with("layer base: mnt/base: read-only bind mount of the committed layer: "), "{line}");
    }

    /// Words put in front of an io error keep its errno (`io::Error::new(kind,
    /// format!(..))` lost it: a full disk during a mount or an xattr was not ENOSPC).
    #[test]
    fn an_io_error_with_context_keeps_its_errno() {
        let e = io_context("cannot set xattr user.a", io::Error::from_raw_os_error(libc::ENOSPC));
        assert_eq!((e.kind(), os_error(&e)), (io::ErrorKind::StorageFull, Some(libc::ENOSPC)));
        let old = io::Error::from_raw_os_error(libc::ENOSPC);
        assert_eq!(e.to_string(), format!("cannot set xattr user.a: {old}"));
        let twice = io_context("/a", e);
        assert_eq!(Error::at("l", "a", twice).raw_os_error(), Some(libc::ENOSPC));
        assert_eq!(os_error(&io::Error::other("words")), None);
    }

    #[test]
    fn an_interrupt_is_its_own_cause() {
        let e = crate::interrupt::error();
        assert!(matches!(e.cause, Cause::Interrupted));
        assert_eq!(e.to_string(), "interrupted (SIGINT or SIGTERM)");
    }
}
