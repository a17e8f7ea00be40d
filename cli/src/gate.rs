//! The regression gate: `strata bench --baseline FILE` judges one run against earlier
//! runs of the same host and workload, figure by figure (docs/ci.md).
//!
//! - **Exact figures** (`TargetResult::counts`: bytes the scratch device wrote and read,
//!   flushes, syscalls, fsync and syncfs calls, bytes and inodes held, the diff's size)
//!   are compared as numbers: beyond a stated tolerance any change is a regression (up)
//!   or an improvement (down), named with both numbers.
//! - **Timings** are judged as ratios to the reference measured beside each sample in
//!   the same run (`TargetResult::reference`), so that a host busier in one run than in
//!   the other slows both and the ratio stays. From the stored samples only: a saved or
//!   doctored run is judged exactly as a fresh one. The change of a figure is the ratio
//!   of the medians of its paired ratios (each sample over the reference measured beside
//!   it), now over then, with a percentile bootstrap interval (fixed seed per figure,
//!   `RESAMPLES` resamples, both sides' ratios resampled); each end of the
//!   interval is a one-sided bound at `FALSE_ALARM / m` for `m` gated timings
//!   (Bonferroni), so an unchanged run fails with at most `FALSE_ALARM` when the
//!   reference cancels the host's drift. A timing regresses when its whole interval lies above
//!   `1 + threshold` (`--max-regress`), improves when it lies below `1 / (1 + threshold)`.
//!   The unpack's and create's CPU seconds (`TargetResult::cpu`) are judged the same way:
//!   a loaded host stretches wall time far more than CPU time.
//!
//! Exit codes ([`BenchError::exit_code`]): 0 nothing regressed, 1 a regression, 2 usage
//! or inputs (a baseline of another host or workload, or unreadable), 3 could not measure.

mod compare;
mod error;
mod output;

use std::path::PathBuf;

use compare::compare;
pub use compare::{Options, THRESHOLD_PCT, TOLERANCE_PCT};
pub use error::BenchError;
use output::{failed_outputs, junit, markdown, write};

use crate::failure::Failure;
use crate::model::Run;

/// `--baseline`: loads the baselines, compares, prints every figure, writes the
/// Markdown and JUnit files, and fails (exit 1) on a regression.
pub fn run(current: &Run, baseline_paths: &[PathBuf], opts: &Options) -> Result<(), BenchError> {
    let loaded: Result<Vec<(Run, PathBuf)>, BenchError> =
        baseline_paths.iter().map(|b| Ok((Run::load(b).map_err(BenchError::Inputs)?, b.clone()))).collect();
    let c = match loaded.and_then(|b| compare(current, &b, opts)) {
        Ok(c) => c,
        Err(e) => {
            failed_outputs(opts, &e)?;
            return Err(e);
        }
    };
    println!(
        "\ngate against {} (timings ÷ their reference; change [interval at {:.2}%])",
        c.baselines.join(", "),
        c.confidence * 100.0
    );
    for f in &c.figures {
        println!("  {}", f.line());
    }
    if let Some(p) = &opts.summary_md {
        write(p, &markdown(&c))?;
    }
    if let Some(p) = &opts.junit {
        write(p, &junit(&c))?;
    }
    let regressed = c.regressed();
    if !c.lost.is_empty() {
        return Err(BenchError::Unmeasured(Failure::Lost { summary: c.summary(), lost: c.lost.clone() }));
    }
    if !regressed.is_empty() {
        return Err(BenchError::Regressed(regressed.iter().map(|f| f.line()).collect()));
    }
    eprintln!("strata bench: {}", c.summary());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failure::Incomparable;
    use crate::model::TargetResult;

    /// Each way the gate fails is its own variant, with the exit code docs/ci.md gives it.
    #[test]
    fn each_failure_of_the_gate_is_its_variant_with_its_exit_code() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.json");
        std::fs::write(&base, include_str!("../../tests/fixtures/bench/gate-1.json")).unwrap();
        let now: Run = serde_json::from_str(include_str!("../../tests/fixtures/bench/gate-2.json")).unwrap();
        let opts = Options { threshold_pct: THRESHOLD_PCT, tolerance_pct: TOLERANCE_PCT, ..Default::default() };
        run(&now, std::slice::from_ref(&base), &opts).expect("two recorded runs of one build: no regression");

        let mut slow = now.clone();
        for r in &mut slow.results {
            r.unpack = r.unpack.scaled(1.5);
            r.cpu.get_mut("unpack").map(|d| *d = d.scaled(1.5)).expect("the unpack's CPU seconds");
        }
        let e = run(&slow, std::slice::from_ref(&base), &opts).unwrap_err();
        assert!(
            matches!(&e, BenchError::Regressed(lines) if lines.iter().any(|l| l.contains("unpack CPU ÷ floor CPU"))),
            "{e}"
        );
        assert_eq!(e.exit_code(), 1);

        let mut other = now.clone();
        other.host.hostname = "elsewhere".into();
        let e = run(&other, std::slice::from_ref(&base), &opts).unwrap_err();
        let host = |e: &BenchError| match e.failure() {
            Some(Failure::Incomparable { why: Incomparable::OtherHost { then, now }, .. }) => {
                Some((then.clone(), now.clone()))
            }
            _ => None,
        };
        let (then, this) = host(&e).unwrap_or_else(|| panic!("another host: {e:?}"));
        assert!(this.starts_with("elsewhere ") && !then.starts_with("elsewhere "), "{then} / {this}");
        assert!(matches!(&e, BenchError::Inputs(_)));
        assert_eq!(e.exit_code(), 2);
        // The printed line names the file and both hosts.
        assert!(e.to_string().starts_with(&format!("baseline {} is from another host (", base.display())), "{e}");

        let mut workload = now.clone();
        workload.workload.containers += 1;
        let e = run(&workload, std::slice::from_ref(&base), &opts).unwrap_err();
        assert!(
            matches!(e.failure(), Some(Failure::Incomparable { why: Incomparable::OtherWorkload { .. }, .. })),
            "{e:?}"
        );
        assert_eq!(e.exit_code(), 2);

        // A baseline that holds no successful result, and one from before exact figures.
        let doctored = |name: &str, doctor: fn(&mut TargetResult)| {
            let mut b: Run = serde_json::from_str(include_str!("../../tests/fixtures/bench/gate-1.json")).unwrap();
            b.results.iter_mut().for_each(doctor);
            let path = dir.path().join(name);
            std::fs::write(&path, serde_json::to_string(&b).unwrap()).unwrap();
            run(&now, &[path], &opts).unwrap_err()
        };
        let e = doctored("failed.json", |r| r.error = Some("mkfs failed".into()));
        assert!(matches!(e.failure(), Some(Failure::Incomparable { why: Incomparable::NoResults, .. })), "{e:?}");
        assert_eq!(e.exit_code(), 2);
        let e = doctored("old.json", |r| {
            r.counts.clear();
            r.reference.clear();
        });
        assert!(matches!(e.failure(), Some(Failure::Incomparable { why: Incomparable::NoExactFigures, .. })), "{e:?}");
        assert_eq!(e.exit_code(), 2);

        // A baseline that is not there: the io error itself, its errno kept.
        let e = run(&now, &[dir.path().join("missing.json")], &opts).unwrap_err();
        assert!(matches!(&e, BenchError::Inputs(inner) if inner.raw_os_error() == Some(libc::ENOENT)), "{e:?}");

        // A target that ran in the baseline and failed now is lost: could not measure.
        let mut lost = now.clone();
        let mut failed = lost.results[0].clone();
        failed.error = Some("mkfs failed".into());
        lost.results.push(failed);
        let e = run(&lost, std::slice::from_ref(&base), &opts).unwrap_err();
        assert!(
            matches!(e.failure(), Some(Failure::Lost { lost, .. }) if lost.len() == 1 && lost[0].ends_with("mkfs failed")),
            "{e:?}"
        );
        assert_eq!(e.exit_code(), 3);

        let mut none = now.clone();
        none.results.iter_mut().for_each(|r| r.error = Some("mkfs failed".into()));
        let e = run(&none, std::slice::from_ref(&base), &opts).unwrap_err();
        assert!(matches!(e.failure(), Some(Failure::NothingToCompare)), "{e:?}");
        assert!(matches!(&e, BenchError::Unmeasured(_)));
        assert_eq!(e.exit_code(), 3);
    }
}
