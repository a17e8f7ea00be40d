//! Why a `strata` command failed: one variant per crate below it, each kept as that
//! crate returned it (youki's `error.rs` composing its modules' errors), and the exit
//! code of each ([`Error::exit_code`], the table in docs/cli.md). The bench keeps its
//! own codes (docs/ci.md); a Ctrl-C that rolled back is 130, a closed stdout 141 (both
//! decided in `main`); `container run` exits as its command did.

use std::path::PathBuf;

use driver_core::error::Cause;
use strata_image::registry;
use strata_run::container::RunError;
use strata_run::replay::ReplayError;
use strata_run::trace::TraceError;

use crate::bench::OptionsError;
use crate::gate::BenchError;

/// Any other failure: a layer operation, the disk, the store's records, `check`, a
/// registry that refused.
pub const FAILED: u8 = 1;
/// What the user typed is not valid: an image name, a platform, a format, a layer ID, a
/// path (clap's own usage errors exit 2 too).
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

/// A failed `strata` command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A layer operation of a driver, or the store's own records.
    #[error(transparent)]
    Layer(driver_core::Error),
    /// strata-image's: no such image, an image that is not what it says, its io errors.
    #[error(transparent)]
    Image(#[from] strata_image::Error),
    /// A pull or push.
    #[error(transparent)]
    Registry(registry::Error),
    /// `strata bench`, with its own exit codes.
    #[error(transparent)]
    Bench(#[from] BenchError),
    /// What was typed cannot be used.
    #[error(transparent)]
    Usage(#[from] Usage),
    /// `container run` could not start the command.
    #[error("layer {container}: {source}")]
    Run { container: String, source: RunError },
    /// `container replay`: a trace file that cannot be read.
    #[error("{}: {source}", path.display())]
    Trace { path: PathBuf, source: TraceError },
    /// `container replay`: an operation of the trace failed (its errno kept).
    #[error("layer {container}: {source}")]
    Replay { container: String, source: ReplayError },
    /// `check` found problems (and `--repair`, if given, left some).
    #[error(
        "the {driver} store has {problems} problem(s){}",
        if *repaired { " that repair could not heal" } else { " (strata check --repair heals what it can)" }
    )]
    Unhealthy { driver: String, problems: usize, repaired: bool },
}

/// What the user typed that the command refuses before it does anything.
#[derive(Debug, thiserror::Error)]
pub enum Usage {
    /// An option check that runs before anything is opened (the bench's).
    #[error(transparent)]
    Options(OptionsError),
    /// `image unpack docker://REF --name/--platform`.
    #[error(
        "{src}: --name and --platform are for local images; a registry image is recorded under its reference, \
         for this host's platform"
    )]
    RegistryUnpack { src: String },
    /// `layer diff ID` with stdout a terminal.
    #[error("refusing to write a tar to a terminal; use -o FILE or redirect stdout")]
    TarToTerminal,
    /// `layer which|explain`: a path that climbs with `..`.
    #[error("path {0:?}: give it from the root, without ..")]
    PathWithParent(String),
    /// ... one that is not below `/` (empty, or `/` itself).
    #[error("path {0:?}: give a path below /")]
    PathNotBelowRoot(String),
    /// ... one whose symbolic links lead back to the root.
    #[error("path {0}: it names the root")]
    PathIsRoot(String),
    /// `container run --user` that is not UID[:GID] (strata-run's words).
    #[error("layer {container}: {reason}")]
    User { container: String, reason: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A driver's error, or the image crate's or the registry's carried through one (by a
/// function that returns the drivers' error: `check`, `df`, `prune`, the commands
/// below), taken back out as itself.
impl From<driver_core::Error> for Error {
    fn from(e: driver_core::Error) -> Error {
        let e = match e.carried::<strata_image::Error>() {
            Ok(image) => return Error::Image(image),
            Err(e) => e,
        };
        match e.carried::<registry::Error>() {
            Ok(r) => Error::from(r),
            Err(e) => Error::Layer(e),
        }
    }
}

/// A registry error that is the store's or the image crate's is that.
impl From<registry::Error> for Error {
    fn from(e: registry::Error) -> Error {
        match e {
            registry::Error::Store(e) => Error::from(e),
            registry::Error::Image(e) => Error::Image(e),
            e => Error::Registry(e),
        }
    }
}

impl Error {
    /// The exit code for this failure (docs/cli.md; the bench's, docs/ci.md).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Bench(b) => b.exit_code(),
            _ if self.raw_os_error() == Some(libc::ENOSPC) => NO_SPACE,
            Error::Layer(e) => layer_code(e),
            Error::Image(e) => image_code(e),
            Error::Usage(_) => USAGE,
            // A registry that refused or broke off, a command that could not start, a
            // replay or a check that failed: none has a code of its own.
            Error::Registry(_) | Error::Run { .. } | Error::Trace { .. } | Error::Replay { .. } => FAILED,
            Error::Unhealthy { .. } => FAILED,
        }
    }

    /// The OS error under this one (ENOSPC, EACCES, ...), if any.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Layer(e) => e.raw_os_error(),
            Error::Image(e) => e.raw_os_error(),
            Error::Registry(e) => e.raw_os_error(),
            Error::Replay { source, .. } => source.cause.raw_os_error(),
            Error::Trace { source: TraceError::Io(e) | TraceError::Open { source: e, .. }, .. } => {
                driver_core::error::os_error(e)
            }
            _ => None,
        }
    }
}

fn image_code(e: &strata_image::Error) -> u8 {
    use strata_image::Error::*;
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
        | NotAnArchive { .. }
        | WrongTransport { .. }
        | SeveralImages { .. }
        | LayerCount { .. }
        | NotALayer { .. } => INVALID_IMAGE,
        Unpacking { .. } | InUse { .. } | KeptChanging { .. } | CommitRaced { .. } => BUSY,
        Layer(e) => layer_code(e),
        // A damaged store is a failure (docs/cli.md), whichever record it is.
        NoContent { .. } | DamagedRecord { .. } | Io { .. } | Read { .. } | Context { .. } => FAILED,
        WastesTooMuch { .. } | BelowMinEfficiency { .. } => FAILED,
    }
}

fn layer_code(e: &driver_core::Error) -> u8 {
    match &e.cause {
        Cause::InvalidId(_) => USAGE,
        Cause::NotFound | Cause::ParentNotFound(_) => NOT_FOUND,
        Cause::BadTar(_) => INVALID_IMAGE,
        Cause::Mounted(_) | Cause::HasChildren(_) | Cause::InUse(_) => BUSY,
        // An image error under a driver's, under the image crate's (a prune inside).
        Cause::Carried(c) => match c.downcast_ref::<strata_image::Error>() {
            Some(image) => image_code(image),
            None => FAILED,
        },
        _ => FAILED,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_image::Error as ImageError;

    fn enospc() -> std::io::Error {
        std::io::Error::from_raw_os_error(libc::ENOSPC)
    }

    /// An image error that went through a function returning the drivers' error (`check`,
    /// `prune`, the commands in commit.rs) comes back out as itself, with its code.
    #[test]
    fn image_errors_come_back_typed_through_the_drivers_error() {
        let through = |e: ImageError| Error::from(driver_core::Error::from(e));
        assert!(matches!(
            through(ImageError::NotFound { name: "a".into() }),
            Error::Image(ImageError::NotFound { .. })
        ));
        assert_eq!(through(ImageError::NotFound { name: "a".into() }.in_image("a")).exit_code(), NOT_FOUND);
        let reference = ImageError::InvalidReference { name: "A".into(), reason: "uppercase".into() };
        assert_eq!(through(reference).exit_code(), USAGE);
        assert_eq!(through(ImageError::InUse { name: "a".into(), containers: vec!["c".into()] }).exit_code(), BUSY);
        assert_eq!(through(ImageError::NotAnImage("neither")).exit_code(), INVALID_IMAGE);
        let full = through(ImageError::io("/x", enospc()).context("saving image a to /x"));
        assert_eq!((full.exit_code(), full.raw_os_error()), (NO_SPACE, Some(libc::ENOSPC)));
        assert!(full.to_string().contains("No space left on device"), "{full}");
        // A driver's error under the image crate's keeps the driver's code.
        let layer = ImageError::Layer(driver_core::Error::layer("l", Cause::Mounted(1)));
        assert!(matches!(through(layer), Error::Layer(ref e) if matches!(e.cause, Cause::Mounted(1))));
    }

    #[test]
    fn layer_errors_exit_by_cause() {
        let code = |cause: Cause| Error::from(driver_core::Error::layer("l", cause)).exit_code();
        assert_eq!(code(Cause::NotFound), NOT_FOUND);
        assert_eq!(code(Cause::ParentNotFound("p".into())), NOT_FOUND);
        assert_eq!(code(Cause::InvalidId("a/b".into())), USAGE);
        assert_eq!(code(Cause::BadTar("short".into())), INVALID_IMAGE);
        assert_eq!(code(Cause::HasChildren("c".into())), BUSY);
        assert_eq!(code(Cause::Io(enospc())), NO_SPACE);
        assert_eq!(code(Cause::Exists), FAILED);
        // An image error inside a driver's inside the image crate's (a prune in an rm).
        let inner = driver_core::Error::from(ImageError::Unpacking { name: "a".into(), pid: 1 });
        assert_eq!(Error::Image(ImageError::Layer(inner)).exit_code(), BUSY);
    }

    /// A pull's error that is the image crate's or the store's is that, not the
    /// registry's; the registry's own exit 1 (tests/tests/registry_errors.rs), 7 for a
    /// full disk.
    #[test]
    fn registry_errors_are_sorted_by_whose_they_are() {
        let r = registry::Error::from(ImageError::NotFound { name: "a".into() });
        let e = Error::from(r);
        assert!(matches!(e, Error::Image(ImageError::NotFound { .. })), "{e:?}");
        assert_eq!(e.exit_code(), NOT_FOUND);
        let r = registry::Error::from(ImageError::Layer(driver_core::Error::layer("l", Cause::NotFound)));
        assert!(matches!(Error::from(r), Error::Layer(ref e) if e.is_not_found()));
        let r = registry::Error::ConnectionRefused { host: "h".into() };
        let e = Error::from(driver_core::Error::from(r));
        assert!(matches!(e, Error::Registry(registry::Error::ConnectionRefused { .. })), "{e:?}");
        assert_eq!(e.exit_code(), FAILED);
        let full = Error::from(registry::Error::File { path: "/s/blobs".into(), source: enospc() });
        assert_eq!(full.exit_code(), NO_SPACE);
    }

    #[test]
    fn usage_errors_exit_2_and_say_what_to_type() {
        let e = Error::from(Usage::PathWithParent("../x".into()));
        assert_eq!(
            (e.exit_code(), e.to_string().as_str()),
            (USAGE, "path \"../x\": give it from the root, without ..")
        );
        let e = Error::from(Usage::RegistryUnpack { src: "docker://a/b".into() });
        assert_eq!(e.exit_code(), USAGE);
        assert!(e.to_string().starts_with("docker://a/b: --name and --platform are for local images"), "{e}");
        let reason = strata_run::container::parse_user("x").unwrap_err();
        let e = Error::from(Usage::User { container: "c".into(), reason });
        assert_eq!((e.exit_code(), e.to_string().as_str()), (USAGE, "layer c: --user x: UID[:GID] must be numbers"));
    }

    #[test]
    fn run_replay_and_check_failures() {
        let replay = |cause| Error::Replay {
            container: "c".into(),
            source: ReplayError { line: 3, op: "write", path: "a".into(), cause },
        };
        assert_eq!(replay(enospc()).exit_code(), NO_SPACE);
        let denied = replay(std::io::Error::from_raw_os_error(libc::EACCES));
        assert_eq!((denied.exit_code(), denied.raw_os_error()), (FAILED, Some(libc::EACCES)));
        assert!(denied.to_string().starts_with("layer c: replay of trace line 3 (write a): "), "{denied}");
        let e = Error::Run { container: "c".into(), source: RunError::Setup("no command given".into()) };
        assert_eq!((e.exit_code(), e.to_string().as_str()), (FAILED, "layer c: container run: no command given"));
        let e = Error::Unhealthy { driver: "vfs".into(), problems: 2, repaired: false };
        assert_eq!(e.exit_code(), FAILED);
        assert_eq!(e.to_string(), "the vfs store has 2 problem(s) (strata check --repair heals what it can)");
    }

    #[test]
    fn the_bench_keeps_its_own_codes() {
        assert_eq!(Error::from(BenchError::Regressed(vec!["x".into()])).exit_code(), 1);
        let inputs = BenchError::Inputs(driver_core::Error::layer("l", Cause::NotFound));
        assert_eq!(Error::from(inputs).exit_code(), 2);
        // Its own codes, even for a full disk.
        assert_eq!(Error::from(BenchError::Unmeasured(driver_core::Error::new(enospc()))).exit_code(), 3);
    }
}
