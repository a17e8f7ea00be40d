//! The bench's error: its own failures, each a variant that tests match on, and the
//! errors of the crates below it (a driver's, strata-image's, the registry's) kept as
//! those crates returned them. The bench's functions return it ([`Result`]). Whether
//! one is an input (exit 2) or a measurement (exit 3) is decided where it is returned,
//! as `BenchError::Inputs` or `BenchError::Unmeasured` (docs/ci.md).

use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;

use strata_image::registry;
use strata_run::container::RunError;
use strata_run::replay::ReplayError;
use strata_run::trace::TraceError;

pub type Result<T, E = Failure> = std::result::Result<T, E>;

/// Why a step of the bench failed: its own failures, or a lower crate's error as that
/// crate returned it.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// A driver's error: a layer operation, or an io error at a path.
    #[error(transparent)]
    Layer(driver_core::Error),
    /// strata-image's: an image that cannot be read, unpacked or written.
    #[error(transparent)]
    Image(#[from] strata_image::Error),
    /// A pull of `--image docker://REF`.
    #[error(transparent)]
    Registry(registry::Error),
    /// `--from`/`--baseline`: a file that does not parse as a run of this schema.
    /// `schema` is the one this strata reads.
    #[error("{}: not a strata bench run of schema {schema} (see docs/json.md): {source}", path.display())]
    NotARun { path: PathBuf, schema: u32, source: serde_json::Error },
    /// ... a run of another schema than the one this strata reads.
    #[error("{}: schema {found} (this strata reads {reads}; re-run the bench)", path.display())]
    OtherSchema { path: PathBuf, found: u32, reads: u32 },
    /// A baseline that cannot be compared with this run.
    #[error("baseline {} {why}", path.display())]
    Incomparable { path: PathBuf, why: Incomparable },
    /// `--from a --from b`: runs of different workloads side by side.
    #[error(
        "{}: another workload than {} ({}); hosts compare only on the same workload: run the bench with the same \
         options on each",
        path.display(), first.display(), differences.join("; ")
    )]
    OtherWorkload { path: PathBuf, first: PathBuf, differences: Vec<String> },
    /// This run has no result to hold against a baseline.
    #[error("this run measured nothing to compare with the baseline")]
    NothingToCompare,
    /// Targets that ran in the baseline did not run now: the gate's summary, then which.
    #[error("{summary}: {}", lost.join("; "))]
    Lost { summary: String, lost: Vec<String> },
    /// Every target failed or was not run.
    #[error("no target ran ({skipped} not run, {failed} failed); see the lines above")]
    NoTargetRan { skipped: usize, failed: usize },
    /// Not root: the scratch filesystems are loop mounts.
    #[error("strata bench makes loop-mounted scratch filesystems and needs root")]
    NeedsRoot,
    /// The scratch dir is on tmpfs: the bench would time RAM.
    #[error(
        "scratch dir {} is on tmpfs: the bench would measure RAM, not a disk; set TMPDIR (or STRATA_SCRATCH_DIR) \
         to a directory on a disk",
        dir.display()
    )]
    ScratchOnTmpfs { dir: PathBuf },
    /// The scratch dir has too little free space for the plan.
    #[error(
        "scratch dir {} ({fs}) has {} free; the bench needs about {} (set TMPDIR or STRATA_SCRATCH_DIR to a bigger \
         disk, or use --containers/--quick)",
        dir.display(), crate::output::size(*free as f64), crate::output::size(*needed as f64)
    )]
    ScratchTooSmall { dir: PathBuf, fs: String, free: u64, needed: u64 },
    /// A scratch filesystem of `fs` could not be made (mkfs, loop device, mount).
    #[error("scratch {fs}: {source}")]
    Scratch { fs: &'static str, source: io::Error },
    /// A step of a measurement (a reference, a copy-up, a blob copy, the signal
    /// handler) failed: what it was, and its io error with its errno.
    #[error("{what}: {source}")]
    Step { what: String, source: io::Error },
    /// A tool the bench runs (a peer, `cp -a`, the floor's decompressor or tar) could
    /// not be started or waited for.
    #[error("{what}: {source}")]
    Tool { what: String, source: io::Error },
    /// ... it ran and failed: its exit status, and what it said on stderr (if kept).
    #[error("{what} failed ({status}){}", if said.is_empty() { String::new() } else { format!(": {said}") })]
    ToolFailed { what: String, status: ExitStatus, said: String },
    /// The private containerd did not answer on its socket in time.
    #[error("containerd did not answer on its socket within {secs} s")]
    NoAnswer { secs: u64 },
    /// The bench's own OCI layout is not what it wrote: which document lacks what.
    #[error("{}: {what}", path.display())]
    Layout { path: PathBuf, what: &'static str },
    /// ... a document of it does not parse.
    #[error("{}: {source}", path.display())]
    Json { path: PathBuf, source: serde_json::Error },
    /// The image unpacked to no layer: there is nothing to make containers of.
    #[error("the image has no layers")]
    NoLayers,
    /// `--run CMD` could not be run in its container.
    #[error("--run {cmd:?} in container {container}: {source}")]
    Run { cmd: String, container: String, source: RunError },
    /// ... it ran and exited non-zero.
    #[error("--run {cmd:?} in container {container} exited with status {status}")]
    RunExited { cmd: String, container: String, status: i32 },
    /// ... the trace it recorded does not read back.
    #[error("the trace of --run {cmd:?}: {source}")]
    RecordedTrace { cmd: String, source: TraceError },
    /// A workload's trace failed in replay (its errno kept).
    #[error("workload {workload} in container {container}: {source}")]
    Replay { workload: String, container: String, source: ReplayError },
    /// A peer tool this bench does not know (a row `peers::compare` did not make).
    #[error("unknown tool {0}")]
    UnknownTool(String),
}

/// Why a baseline cannot be compared with this run (printed after "baseline FILE").
#[derive(Debug, thiserror::Error)]
pub enum Incomparable {
    #[error("holds no results to compare with")]
    NoResults,
    /// Host as `hostname machine with N cpus`, then and now.
    #[error("is from another host ({then}; this is {now}): figures from two hosts are not a regression check")]
    OtherHost { then: String, now: String },
    /// The workloads, then and now, as the run's `workload` reads.
    #[error("ran another workload ({then}; this run: {now})")]
    OtherWorkload { then: String, now: String },
    #[error("was recorded before the bench kept exact figures and references (docs/ci.md): record a new baseline")]
    NoExactFigures,
}

impl Failure {
    /// A step's io error, kept (see [`Failure::Step`]).
    pub fn step(what: impl Into<String>) -> impl Fn(io::Error) -> Failure {
        let what = what.into();
        move |source| Failure::Step { what: what.clone(), source }
    }

    /// A tool that could not start or be waited for (see [`Failure::Tool`]).
    pub fn tool(what: impl Into<String>) -> impl Fn(io::Error) -> Failure {
        let what = what.into();
        move |source| Failure::Tool { what: what.clone(), source }
    }

    /// The OS error under this one (ENOSPC, EACCES, ...), if any.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Failure::Layer(e) => e.raw_os_error(),
            Failure::Image(e) => e.raw_os_error(),
            Failure::Registry(e) => e.raw_os_error(),
            own => driver_core::error::os_error_under(own),
        }
    }
}

impl From<driver_core::Error> for Failure {
    fn from(e: driver_core::Error) -> Failure {
        Failure::Layer(e)
    }
}

/// A registry error that is the store's or the image crate's is that.
impl From<registry::Error> for Failure {
    fn from(e: registry::Error) -> Failure {
        match e {
            registry::Error::Store(e) => Failure::from(e),
            registry::Error::Image(e) => Failure::Image(e),
            e => Failure::Registry(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A step's failure prints as itself and keeps its io error's errno; a driver's
    /// error keeps its cause.
    #[test]
    fn a_failure_keeps_its_errno_and_lower_errors_their_type() {
        use driver_core::Cause;
        let e = Failure::step("copy-up in c0")(io::Error::from_raw_os_error(libc::ENOSPC));
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
        assert!(e.to_string().starts_with("copy-up in c0: No space left on device"), "{e}");
        assert!(matches!(&e, Failure::Step { what, .. } if what == "copy-up in c0"));
        let e = Failure::NoTargetRan { skipped: 1, failed: 2 };
        assert_eq!(e.to_string(), "no target ran (1 not run, 2 failed); see the lines above");
        let e = Failure::from(driver_core::Error::layer("l", Cause::Mounted(2)));
        assert!(matches!(&e, Failure::Layer(l) if matches!(l.cause, Cause::Mounted(2))), "{e:?}");
        let full = Failure::from(driver_core::Error::layer("l", io::Error::from_raw_os_error(libc::ENOSPC)));
        assert_eq!(full.raw_os_error(), Some(libc::ENOSPC));
    }

    /// A tool that said nothing on stderr is named with its status alone.
    #[test]
    fn a_silent_tool_is_named_with_its_status() {
        use std::os::unix::process::ExitStatusExt;
        let f = Failure::ToolFailed {
            what: "floor: tar".into(),
            status: ExitStatus::from_raw(2 << 8),
            said: String::new(),
        };
        assert_eq!(f.to_string(), "floor: tar failed (exit status: 2)");
    }
}
