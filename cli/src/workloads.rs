//! Real workloads in the bench: `--replay TRACE` (a trace `strata container run
//! --record` wrote) and `--run 'CMD'` (a command run for real, recorded, then replayed),
//! measured in every target's containers beside the bench's own phases.
//!
//! Per target and workload: a `--run` command first runs in a container of its own
//! (`/bin/sh -c CMD`, recorded; its wall time is kept), then the trace is replayed
//! (`strata_run::replay`) in as many fresh containers as the bench makes (`--containers`):
//! the replay's wall time, what each operation class and each first change to a node the
//! image held (a copy-up on overlay) cost, the disk the container layer added, and the
//! diff of the container afterwards. Profiles weigh workloads by runs a day
//! (`[[workloads]] trace = "pip-install.trace"  per_day = 200`), and the verdict counts
//! them with the rest.
//!
//! Imports: `model` only (and `strata_run`); `bench`, `verdict` and `report` call in.
//! [`replay`] measures them, [`show`] shows them (beside the report's pieces).

pub mod replay;
pub mod show;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use strata_run::trace::{Trace, TraceError};

use crate::model::{secs, Cost, Dist, TargetResult};

/// `strata bench`'s workload options (flattened into the bench's options).
#[derive(clap::Args, Debug, Default)]
pub struct WorkloadArgs {
    /// Replay this trace (written by `strata container run --record`) in every target's
    /// containers, timed (repeatable; named after the file's stem). The bench's image
    /// (--image) should be the one the trace was recorded on.
    #[arg(long = "replay", value_name = "TRACE")]
    pub replay: Vec<PathBuf>,
    /// Run CMD (with /bin/sh -c) for real in a container on every target, recorded,
    /// then replay its trace in every container, timed (repeatable).
    #[arg(long = "run", value_name = "CMD")]
    pub run: Vec<String>,
    /// Names the --run commands, in order (default: run-1, run-2, …).
    #[arg(long = "label", value_name = "NAME")]
    pub label: Vec<String>,
    /// The workloads, made by [`WorkloadArgs::check`].
    #[arg(skip)]
    pub specs: Vec<Spec>,
}

/// One workload to measure.
#[derive(Clone, Debug)]
pub struct Spec {
    pub name: String,
    pub source: Source,
}

#[derive(Clone, Debug)]
pub enum Source {
    /// A recorded trace, read when the options are checked.
    Trace(PathBuf, Box<Trace>),
    /// A command for `/bin/sh -c`.
    Run(String),
}

impl Spec {
    fn describe(&self) -> String {
        match &self.source {
            Source::Trace(p, _) => format!("trace {}", p.display()),
            Source::Run(cmd) => format!("run {cmd}"),
        }
    }
}

/// `--replay`, `--run` and `--label` that cannot be used (a usage error: exit 2).
#[derive(Debug, thiserror::Error)]
pub enum WorkloadsError {
    /// Options that do not fit together: the sentence says what to type instead
    /// (nothing failed under it, so there is no source to keep).
    #[error("{0}")]
    Refused(String),
    /// `--replay FILE`: a trace that cannot be read (its line, or its errno, kept).
    #[error("--replay {}: {source}", path.display())]
    Trace { path: PathBuf, source: TraceError },
}

impl From<String> for WorkloadsError {
    fn from(sentence: String) -> Self {
        WorkloadsError::Refused(sentence)
    }
}

impl From<&str> for WorkloadsError {
    fn from(sentence: &str) -> Self {
        WorkloadsError::Refused(sentence.into())
    }
}

impl WorkloadArgs {
    /// Reads the traces and names the workloads; the message is a usage error.
    pub fn check(&mut self) -> Result<(), WorkloadsError> {
        if self.label.len() > self.run.len() {
            return Err(format!(
                "--label names the --run commands, in order: {} label(s) for {} command(s)",
                self.label.len(),
                self.run.len()
            )
            .into());
        }
        let mut specs = Vec::new();
        for path in &self.replay {
            let trace = Trace::read(path).map_err(|source| WorkloadsError::Trace { path: path.clone(), source })?;
            let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            let name = name.strip_suffix(".trace").map(str::to_string).unwrap_or(name);
            specs.push(Spec { name, source: Source::Trace(path.clone(), Box::new(trace)) });
        }
        for (i, cmd) in self.run.iter().enumerate() {
            if cmd.trim().is_empty() {
                return Err("--run '': no command".into());
            }
            let name = self.label.get(i).cloned().unwrap_or_else(|| format!("run-{}", i + 1));
            specs.push(Spec { name, source: Source::Run(cmd.clone()) });
        }
        for (i, s) in specs.iter().enumerate() {
            if specs[..i].iter().any(|o| o.name == s.name) {
                return Err(format!("two workloads are named {:?}: name them apart with --label", s.name).into());
            }
        }
        self.specs = specs;
        Ok(())
    }
}

/// A profile's weight on a workload: `[[workloads]] trace = "pip-install.trace"
/// per_day = 200` (the workload is the trace's stem, or a --label).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Weight {
    pub trace: String,
    pub per_day: f64,
}

impl Weight {
    /// The workload's name: the trace's file stem (`pip-install.trace` → `pip-install`).
    pub fn name(&self) -> String {
        let stem = Path::new(&self.trace).file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        stem.strip_suffix(".trace").or_else(|| stem.strip_suffix(".jsonl")).unwrap_or(&stem).to_string()
    }
}

fn cost(d: &Dist) -> Cost {
    Cost { p50: d.p50, lo: d.lo, hi: d.hi }
}

/// The verdict's lines for a target: (what, runs a day, cost of one run) per weighed
/// workload measured here.
pub fn parts(r: &TargetResult, weights: &[Weight]) -> Vec<(String, f64, Cost)> {
    weights
        .iter()
        .filter_map(|wt| {
            let w = r.workloads.iter().find(|w| w.name == wt.name() && w.ok())?;
            Some((format!("a run of {}", w.name), wt.per_day, cost(&w.wall)))
        })
        .collect()
}

/// What the verdict says of the weighed workloads: each one's cost a day per target, or
/// that the run did not measure it.
pub fn verdict_lines(profile: &str, results: &[&TargetResult], weights: &[Weight]) -> Vec<String> {
    let mut out = Vec::new();
    for wt in weights {
        let name = wt.name();
        let each: Vec<String> = results
            .iter()
            .filter_map(|r| {
                let w = r.workloads.iter().find(|w| w.name == name && w.ok())?;
                Some(format!(
                    "{} costs {} a day ({} a run)",
                    r.label(),
                    crate::model::per_day(w.wall.p50 * wt.per_day),
                    secs(w.wall.p50)
                ))
            })
            .collect();
        if each.is_empty() {
            out.push(format!(
                "for {profile}, {} runs a day of {name}: not measured in this run (give --replay {})",
                wt.per_day, wt.trace
            ));
        } else {
            out.push(format!("for {profile}, {} runs a day of {name}: {}", wt.per_day, each.join("; ")));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CopyupFigures, DriverKind, WorkloadResult};

    pub(super) fn result(driver: DriverKind, wall: &[f64]) -> TargetResult {
        let w = WorkloadResult {
            name: "pip-install".into(),
            source: "trace pip-install.trace".into(),
            wall: Dist::of(wall.to_vec()),
            ops: 10,
            copyups: vec![CopyupFigures {
                class: "write".into(),
                kind: "file".into(),
                size_up_to: "1MiB".into(),
                nodes: 3,
                bytes: 41_000_000,
                seconds: Dist::of(vec![0.1, 0.2]),
            }],
            layer_bytes: Dist::of(vec![45e6, 46e6]),
            ..Default::default()
        };
        TargetResult { driver, fs: "ext4".into(), workloads: vec![w], ..Default::default() }
    }

    #[test]
    fn workloads_are_named_after_the_trace_or_the_label_and_bad_options_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let trace = dir.path().join("pip-install.trace");
        std::fs::write(&trace, "{\"strata_trace\":1,\"command\":[\"pip\"]}\n").unwrap();
        let mut a = WorkloadArgs {
            replay: vec![trace.clone()],
            run: vec!["true".into(), "make".into()],
            label: vec!["noop".into()],
            ..Default::default()
        };
        a.check().unwrap();
        let names: Vec<&str> = a.specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["pip-install", "noop", "run-2"]);
        let mut two_labels =
            WorkloadArgs { run: vec!["true".into()], label: vec!["a".into(), "b".into()], ..Default::default() };
        // Options that do not fit: Refused, whose sentence is all there is to tell them apart.
        let e = two_labels.check().unwrap_err();
        assert!(matches!(&e, WorkloadsError::Refused(s) if s.contains("2 label(s) for 1 command(s)")), "{e}");
        let mut same = WorkloadArgs {
            replay: vec![trace.clone()],
            run: vec!["true".into()],
            label: vec!["pip-install".into()],
            ..Default::default()
        };
        let e = same.check().unwrap_err();
        assert!(
            matches!(&e, WorkloadsError::Refused(s) if s.contains("two workloads are named \"pip-install\"")),
            "{e}"
        );
        // A trace that cannot be opened keeps its errno; one that does not parse, its line.
        let mut missing = WorkloadArgs { replay: vec![dir.path().join("nope.trace")], ..Default::default() };
        let e = missing.check().unwrap_err();
        assert!(
            matches!(&e, WorkloadsError::Trace { source: TraceError::Open { source, .. }, .. }
                if source.raw_os_error() == Some(libc::ENOENT)),
            "{e}"
        );
        assert!(e.to_string().starts_with("--replay "), "{e}");
        std::fs::write(&trace, "not a trace\n").unwrap();
        let mut bad = WorkloadArgs { replay: vec![trace], ..Default::default() };
        let e = bad.check().unwrap_err();
        assert!(matches!(&e, WorkloadsError::Trace { source: TraceError::Line { line: 1, .. }, .. }), "{e}");
    }

    #[test]
    fn a_weighed_workload_is_a_cost_a_day_and_the_verdict_names_it() {
        let weights = vec![Weight { trace: "traces/pip-install.trace".into(), per_day: 200.0 }];
        assert_eq!(weights[0].name(), "pip-install");
        let (o, v) = (result(DriverKind::Overlay, &[1.0, 2.0, 3.0]), result(DriverKind::Vfs, &[4.0, 5.0, 6.0]));
        let p = parts(&o, &weights);
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].1, p[0].2.p50), (200.0, 2.0));
        let lines = verdict_lines("app-mix", &[&o, &v], &weights);
        assert_eq!(lines.len(), 1);
        assert!(
            lines[0].starts_with(
                "for app-mix, 200 runs a day of pip-install: overlay/ext4 costs 7 min a day (2.00 s a run)"
            ),
            "{}",
            lines[0]
        );
        assert!(lines[0].contains("vfs/ext4 costs 17 min a day"), "{}", lines[0]);
        let missing = verdict_lines("app-mix", &[&o], &[Weight { trace: "db.trace".into(), per_day: 5.0 }]);
        assert!(missing[0].contains("not measured in this run"), "{}", missing[0]);
    }
}
