//! The gate's outputs for a CI job: the Markdown summary and the JUnit XML, also when
//! the gate could not compare.

use std::fmt::Write as _;
use std::path::Path;

use driver_core::Error;
use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};

use super::compare::{Comparison, Options, Status, FALSE_ALARM};
use super::error::BenchError;
use crate::failure::Result;

/// The Markdown summary for a CI job's page.
pub fn markdown(c: &Comparison) -> String {
    let mut s = String::new();
    let regressed = c.regressed().len();
    let _ = writeln!(
        s,
        "## strata bench: {}\n",
        if regressed + c.lost.len() == 0 { "no regression" } else { "REGRESSION" }
    );
    let _ = writeln!(s, "{}.\n", c.summary());
    let _ = writeln!(
        s,
        "Timings are ratios to a reference measured beside them in the same run; a timing regresses when its \
         whole {:.2}% bootstrap interval lies more than {}% above the baseline (at most {:.0}% of unchanged runs \
         fail). Exact figures may move {}% before they count. See docs/ci.md.\n",
        c.confidence * 100.0,
        c.threshold_pct,
        FALSE_ALARM * 100.0,
        c.tolerance_pct
    );
    for l in &c.lost {
        let _ = writeln!(s, "- **did not run:** {}", md_escape(l));
    }
    if !c.lost.is_empty() {
        s.push('\n');
    }
    let _ = writeln!(s, "| result | figure | baseline | now | change [interval] | note |");
    let _ = writeln!(s, "|---|---|---:|---:|---|---|");
    let order = [Status::Regressed, Status::Improved, Status::Same, Status::NotGated];
    for st in order {
        for f in c.figures.iter().filter(|f| f.status == st) {
            let (was, now) = f.numbers();
            let word = if st == Status::Regressed { format!("**{}**", st.word()) } else { st.word().to_string() };
            let _ = writeln!(
                s,
                "| {word} | {} | {was} | {now} | {} | {} |",
                md_escape(&f.id()),
                f.change_text(),
                md_escape(&f.note)
            );
        }
    }
    s
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|")
}

/// The JUnit XML: one test case per figure (failure: regressed; skipped: not gated), its
/// numbers in the case's system-out, so a CI dashboard keeps each figure's history.
pub fn junit(c: &Comparison) -> String {
    let mut report = Report::new("strata bench");
    let mut suite = TestSuite::new("strata bench gate");
    for f in &c.figures {
        let status = match f.status {
            Status::Regressed => {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                s.set_message(f.line()).set_type("regression");
                s
            }
            Status::NotGated => {
                let mut s = TestCaseStatus::skipped();
                s.set_message(f.note.clone());
                s
            }
            Status::Improved | Status::Same => TestCaseStatus::success(),
        };
        let mut case = TestCase::new(f.name.clone(), status);
        case.set_classname(f.target.clone());
        case.set_system_out(f.line());
        suite.add_test_case(case);
    }
    for l in &c.lost {
        let mut s = TestCaseStatus::non_success(NonSuccessKind::Error);
        s.set_message(l.clone()).set_type("did not run");
        let mut case = TestCase::new("ran", s);
        case.set_classname(l.split(' ').next().unwrap_or_default().to_string());
        suite.add_test_case(case);
    }
    report.add_test_suite(suite);
    report.to_string().unwrap_or_default()
}

/// A gate that could not compare: the Markdown and JUnit say why, as one error.
pub(super) fn failed_outputs(opts: &Options, failure: &BenchError) -> Result<()> {
    let code = failure.exit_code();
    let msg = failure.to_string();
    let word = if matches!(failure, BenchError::Inputs(_)) { "could not compare" } else { "could not measure" };
    if let Some(p) = &opts.summary_md {
        write(p, &format!("## strata bench: {word} (exit {code})\n\n{}\n", md_escape(&msg)))?;
    }
    if let Some(p) = &opts.junit {
        let mut report = Report::new("strata bench");
        let mut suite = TestSuite::new("strata bench gate");
        let mut s = TestCaseStatus::non_success(NonSuccessKind::Error);
        s.set_message(msg).set_type(word);
        suite.add_test_case(TestCase::new("gate", s));
        report.add_test_suite(suite);
        write(p, &report.to_string().unwrap_or_default())?;
    }
    Ok(())
}

pub(super) fn write(path: &Path, text: &str) -> Result<()> {
    driver_core::json::write_atomic_with(path, |w| {
        w.write_all(text.as_bytes()).map_err(|e| Error::new(e).with_path(path))
    })?;
    eprintln!("strata bench: wrote {}", path.display());
    Ok(())
}
