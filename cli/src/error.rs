//! Why a `strata` command failed: one variant per crate below it, each kept as that
//! crate returned it (youki's `error.rs` composing its modules' errors), and the exit
//! code of each ([`Error::exit_code`], the table in docs/cli.md). The bench keeps its
//! own codes (docs/ci.md); a Ctrl-C that rolled back is 130 (decided in `main`), a
//! closed stdout 141; `container run` exits as its command did.

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
/// The reader of stdout went away (EPIPE: `strata image ls | head -1`), as a shell
/// reports a command killed by SIGPIPE (128 + 13); no error line is printed.
pub const CLOSED_STDOUT: u8 = 141;

/// A failed `strata` command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A layer operation of a driver, or the store's own records.
    #[error(transparent)]
    Layer(driver_core::Error),
    /// strata-image's: no such image, an image that is not what it says, its io errors.
    #[error(transparent)]
    Image(strata_image::Error),
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
    /// Writing the command's output (a listing, a tar) to stdout failed: a full disk
    /// (`> /dev/full`), a reader that went away (EPIPE).
    #[error("writing to stdout: {0}")]
    Stdout(#[source] std::io::Error),
    /// `container rm|commit|run` of a name no container has.
    #[error("container {0}: no such container")]
    NoSuchContainer(String),
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

impl From<driver_core::Error> for Error {
    fn from(e: driver_core::Error) -> Error {
        Error::Layer(e)
    }
}

/// An image error that is a driver's (a layer operation under `check`, `df`, `prune`,
/// an unpack) is that, as the registry's below.
impl From<strata_image::Error> for Error {
    fn from(e: strata_image::Error) -> Error {
        match e {
            strata_image::Error::Layer(e) => Error::from(e),
            e => Error::Image(e),
        }
    }
}

/// A registry error that is the store's or the image crate's is that.
impl From<registry::Error> for Error {
    fn from(e: registry::Error) -> Error {
        match e {
            registry::Error::Store(e) => Error::from(e),
            registry::Error::Image(e) => Error::from(e),
            e => Error::Registry(e),
        }
    }
}

impl Error {
    /// The exit code for this failure (docs/cli.md; the bench's, docs/ci.md).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Bench(b) => b.exit_code(),
            _ if self.is_closed_stdout() => CLOSED_STDOUT,
            _ if self.raw_os_error() == Some(libc::ENOSPC) => NO_SPACE,
            Error::Layer(e) => layer_code(e),
            Error::Image(e) => image_code(e),
            Error::Usage(_) => USAGE,
            Error::NoSuchContainer(_) => NOT_FOUND,
            // The registry has no such tag, digest or repository (as a local layout
            // without the tag).
            Error::Registry(registry::Error::Status(s)) if s.manifest_not_found() => NOT_FOUND,
            // A registry that refused or broke off, a command that could not start, a
            // replay or a check that failed: none has a code of its own.
            Error::Registry(_) | Error::Run { .. } | Error::Trace { .. } | Error::Replay { .. } => FAILED,
            Error::Unhealthy { .. } | Error::Stdout(_) => FAILED,
        }
    }

    /// Whether stdout's reader went away: exit 141, and nothing to say.
    pub fn is_closed_stdout(&self) -> bool {
        matches!(self, Error::Stdout(e) if e.raw_os_error() == Some(libc::EPIPE))
    }

    /// The OS error under this one (ENOSPC, EACCES, ...), if any.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Layer(e) => e.raw_os_error(),
            Error::Image(e) => e.raw_os_error(),
            Error::Registry(e) => e.raw_os_error(),
            Error::Bench(e) => e.raw_os_error(),
            Error::Replay { source, .. } => source.cause.raw_os_error(),
            Error::Run { source, .. } => source.raw_os_error(),
            Error::Stdout(e) => e.raw_os_error(),
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
        | NotRegular { .. }
        | MissingMember { .. }
        | WrongTransport { .. }
        | SeveralImages { .. }
        | LayerCount { .. }
        | NotALayer { .. } => INVALID_IMAGE,
        Unpacking { .. } | InUse { .. } | KeptChanging { .. } | CommitRaced { .. } => BUSY,
        Layer(e) => layer_code(e),
        // A damaged store record is the store's failure, not the image's (docs/cli.md).
        NoContent { .. } | Record { .. } | Io { .. } | Read { .. } | Context { .. } => FAILED,
        WastesTooMuch { .. } | BelowMinEfficiency { .. } => FAILED,
    }
}

fn layer_code(e: &driver_core::Error) -> u8 {
    match &e.cause {
        Cause::InvalidId(_) => USAGE,
        Cause::NotFound | Cause::ParentNotFound(_) => NOT_FOUND,
        // A layer tar that is not one, or not the one its image names.
        Cause::BadTar(_) | Cause::DiffIdMismatch { .. } => INVALID_IMAGE,
        Cause::Mounted(_) | Cause::HasChildren(_) | Cause::InUse(_) => BUSY,
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

    /// An image error is itself, with its code; one that is a driver's is the driver's.
    #[test]
    fn image_errors_exit_by_variant() {
        let through = Error::from;
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

    /// What `check`, `df` and `prune` return is the image crate's error: a driver's
    /// error inside it is the driver's (its code, its errno), and a torn image record is
    /// the store's failure (1), not an image that is not what it says (5).
    #[test]
    fn the_store_commands_image_errors_exit_by_variant() {
        let e = Error::from(ImageError::Layer(driver_core::Error::layer("l", Cause::Mounted(1))));
        assert!(matches!(e, Error::Layer(ref l) if matches!(l.cause, Cause::Mounted(1))), "{e:?}");
        assert_eq!(e.exit_code(), BUSY);
        let full = Error::from(ImageError::Layer(driver_core::Error::layer("l", Cause::Io(enospc()))));
        assert_eq!((full.exit_code(), full.raw_os_error()), (NO_SPACE, Some(libc::ENOSPC)));
        let torn = serde_json::from_slice::<u8>(b"").unwrap_err();
        let e = Error::from(ImageError::Record { file: "/s/images/a.json".into(), field: ".".into(), source: torn });
        assert!(matches!(e, Error::Image(ImageError::Record { .. })), "{e:?}");
        assert_eq!(e.exit_code(), FAILED);
    }

    #[test]
    fn layer_errors_exit_by_cause() {
        let code = |cause: Cause| Error::from(driver_core::Error::layer("l", cause)).exit_code();
        assert_eq!(code(Cause::NotFound), NOT_FOUND);
        assert_eq!(code(Cause::ParentNotFound("p".into())), NOT_FOUND);
        assert_eq!(code(Cause::InvalidId("a/b".into())), USAGE);
        assert_eq!(code(Cause::BadTar("short".into())), INVALID_IMAGE);
        // The layer is not the one the image names: the image is not what it says.
        assert_eq!(code(Cause::DiffIdMismatch { got: "sha256:1".into(), want: "sha256:2".into() }), INVALID_IMAGE);
        assert_eq!(code(Cause::HasChildren("c".into())), BUSY);
        assert_eq!(code(Cause::Io(enospc())), NO_SPACE);
        assert_eq!(code(Cause::Exists), FAILED);
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
        let e = Error::from(r);
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

    /// A container's setup that fails with ENOSPC (mounting its /proc, binding /dev) is
    /// a full disk like any other step's: exit 7, errno kept through strata-run's error.
    #[test]
    fn a_full_disk_while_setting_up_a_container_is_exit_7() {
        let source = RunError::Sys { what: "binding /dev/null".into(), errno: nix::errno::Errno::ENOSPC };
        let e = Error::Run { container: "c".into(), source };
        assert_eq!((e.raw_os_error(), e.exit_code()), (Some(libc::ENOSPC), NO_SPACE));
    }

    /// A write to stdout that failed: a full disk is 7 as anywhere, a reader that went
    /// away 141 with nothing to say; a missing container is not found, in its words.
    #[test]
    fn stdout_failures_and_missing_containers() {
        let full = Error::Stdout(enospc());
        assert_eq!((full.exit_code(), full.is_closed_stdout()), (NO_SPACE, false));
        assert_eq!(full.to_string(), "writing to stdout: No space left on device (os error 28)");
        let closed = Error::Stdout(std::io::Error::from_raw_os_error(libc::EPIPE));
        assert_eq!((closed.exit_code(), closed.is_closed_stdout()), (CLOSED_STDOUT, true));
        let other = Error::Stdout(std::io::Error::from_raw_os_error(libc::EIO));
        assert_eq!((other.exit_code(), other.is_closed_stdout()), (FAILED, false));
        // An EPIPE that is not stdout's (a registry's socket) is no closed stdout.
        let r = Error::from(registry::Error::Read {
            what: "blob".into(),
            source: std::io::Error::from_raw_os_error(libc::EPIPE),
        });
        assert_eq!((r.exit_code(), r.is_closed_stdout()), (FAILED, false));
        let e = Error::NoSuchContainer("c".into());
        assert_eq!((e.exit_code(), e.to_string().as_str()), (NOT_FOUND, "container c: no such container"));
    }

    #[test]
    fn the_bench_keeps_its_own_codes() {
        use crate::failure::Failure;
        assert_eq!(Error::from(BenchError::Regressed(vec!["x".into()])).exit_code(), 1);
        let inputs = BenchError::Inputs(driver_core::Error::layer("l", Cause::NotFound).into());
        assert_eq!(Error::from(inputs).exit_code(), 2);
        // Its own codes, even for a full disk; the errno is kept under them.
        let full = Failure::step("copy-up in c0")(enospc());
        let e = Error::from(BenchError::Unmeasured(full));
        assert_eq!((e.exit_code(), e.raw_os_error()), (3, Some(libc::ENOSPC)));
        assert!(matches!(&e, Error::Bench(BenchError::Unmeasured(Failure::Step { .. }))), "{e:?}");
        assert!(e.to_string().starts_with("copy-up in c0: No space left on device"), "{e}");
    }

    /// A driver's error inside the bench stays the driver's, with its cause and errno,
    /// under the bench's variant (not carried as a string or a box to downcast).
    #[test]
    fn a_drivers_error_in_the_bench_keeps_its_cause() {
        use crate::failure::Failure;
        let e = Error::from(BenchError::from(driver_core::Error::layer("l", Cause::Mounted(1))));
        assert!(
            matches!(&e, Error::Bench(BenchError::Unmeasured(Failure::Layer(l))) if matches!(l.cause, Cause::Mounted(1))),
            "{e:?}"
        );
        assert_eq!(e.exit_code(), 3);
        let full = Error::from(BenchError::from(driver_core::Error::layer("l", enospc())));
        assert_eq!((full.exit_code(), full.raw_os_error()), (3, Some(libc::ENOSPC)));
    }
}
