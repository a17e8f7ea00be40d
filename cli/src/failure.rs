//! The bench's own failures, each a variant that tests match on; carried through the
//! drivers' error (which the bench's functions return) and printed as themselves. Whether
//! one is an input (exit 2) or a measurement (exit 3) is decided where it is returned,
//! as `BenchError::Inputs` or `BenchError::Unmeasured` (docs/ci.md).

use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;

use driver_core::{Cause, Error};
use strata_run::container::RunError;
use strata_run::replay::ReplayError;
use strata_run::trace::TraceError;

/// The bench's own failures (not a driver's, the image crate's or a trace's, which keep
/// their types).
#[derive(Debug, thiserror::Error)]
pub enum Failure {
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
    /// The failure `e` carries, if it carries one.
    #[cfg(test)]
    pub fn of(e: &Error) -> Option<&Failure> {
        match &e.cause {
            Cause::Carried(c) => c.downcast_ref(),
            _ => None,
        }
    }

    /// A step's io error, kept (see [`Failure::Step`]).
    pub fn step(what: impl Into<String>) -> impl Fn(io::Error) -> Error {
        let what = what.into();
        move |source| Failure::Step { what: what.clone(), source }.into()
    }

    /// A tool that could not start or be waited for (see [`Failure::Tool`]).
    pub fn tool(what: impl Into<String>) -> impl Fn(io::Error) -> Error {
        let what = what.into();
        move |source| Failure::Tool { what: what.clone(), source }.into()
    }
}

/// Carried through the drivers' error, which the bench's functions return, printed as
/// itself and taken back out by [`Failure::of`].
impl From<Failure> for Error {
    fn from(f: Failure) -> Error {
        Error::new(Cause::Carried(Box::new(f)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Carried through the drivers' error, a failure prints as itself, keeps its io
    /// error's errno and comes back out typed.
    #[test]
    fn a_failure_is_carried_whole() {
        let e = Failure::step("copy-up in c0")(io::Error::from_raw_os_error(libc::ENOSPC));
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
        assert!(e.to_string().starts_with("copy-up in c0: No space left on device"), "{e}");
        assert!(matches!(Failure::of(&e), Some(Failure::Step { what, .. }) if what == "copy-up in c0"));
        let e = Error::from(Failure::NoTargetRan { skipped: 1, failed: 2 });
        assert_eq!(e.to_string(), "no target ran (1 not run, 2 failed); see the lines above");
        assert!(Failure::of(&Error::new(Cause::NotFound)).is_none());
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
