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
//!   of the median ratios, now over then, with a percentile bootstrap interval (fixed
//!   seed per figure, `RESAMPLES` resamples, both sides resampled); each end of the
//!   interval is a one-sided bound at `FALSE_ALARM / m` for `m` gated timings
//!   (Bonferroni), so an unchanged run fails with at most `FALSE_ALARM` when the
//!   reference cancels the host's drift. A timing regresses when its whole interval lies above
//!   `1 + threshold` (`--max-regress`), improves when it lies below `1 / (1 + threshold)`.
//!   The unpack's and create's CPU seconds (`TargetResult::cpu`) are judged the same way:
//!   a loaded host stretches wall time far more than CPU time.
//!
//! Exit codes (`exit_code`): 0 nothing regressed, 1 a regression, 2 usage or inputs
//! (a baseline of another host or workload, or unreadable), 3 could not measure.

mod compare;
mod output;

use std::path::PathBuf;

use driver_core::Error;

use compare::compare;
pub use compare::{exit_code, fail, Options, INPUTS, REGRESSED, THRESHOLD_PCT, TOLERANCE_PCT, UNMEASURED};
use output::{failed_outputs, junit, markdown, write};

use crate::model::{err, Run};

/// `--baseline`: loads the baselines, compares, prints every figure, writes the
/// Markdown and JUnit files, and fails (exit 1) on a regression.
pub fn run(current: &Run, baseline_paths: &[PathBuf], opts: &Options) -> Result<(), Error> {
    let loaded: Result<Vec<(Run, PathBuf)>, Error> =
        baseline_paths.iter().map(|b| Ok((Run::load(b).map_err(|e| fail(INPUTS, e))?, b.clone()))).collect();
    let compared = loaded.and_then(|b| compare(current, &b, opts));
    let c = match compared {
        Ok(c) => c,
        Err(e) => {
            let code = exit_code();
            failed_outputs(opts, code, &e.to_string())?;
            return Err(fail(code, e));
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
        return Err(fail(UNMEASURED, err(format!("{}: {}", c.summary(), c.lost.join("; ")))));
    }
    if !regressed.is_empty() {
        let lines: Vec<String> = regressed.iter().map(|f| f.line()).collect();
        return Err(fail(REGRESSED, err(format!("{} figure(s) regressed: {}", regressed.len(), lines.join("; ")))));
    }
    eprintln!("strata bench: {}", c.summary());
    Ok(())
}
