//! The peak-memory measure the hostile-image and hostile-registry tests bound: it is
//! the measured program's own, whatever the test process holds.

use std::process::Command;
use std::time::Duration;

use strata_tests::run_measured;

const MIB: u64 = 1 << 20;

#[test]
fn peak_rss_is_the_programs_own_not_the_tests() {
    // The test holds 384 MiB, touched (a hostile registry's answers, say).
    let held = vec![1u8; 384 << 20];
    std::hint::black_box(&held);
    // A program that needs next to nothing: a few MiB, not the test's 384.
    let m = run_measured(Command::new("true"), Duration::from_secs(120));
    assert_eq!(m.code, Some(0), "{m:?}");
    assert!(m.peak_rss > 0 && m.peak_rss < 64 * MIB, "true peaked at {} MiB", m.peak_rss / MIB);
    // A program that touches a 160 MiB buffer: measured as such.
    let mut dd = Command::new("dd");
    dd.args(["if=/dev/zero", "of=/dev/null", "bs=160M", "count=1"]);
    let m = run_measured(dd, Duration::from_secs(120));
    assert_eq!(m.code, Some(0), "{m:?}");
    assert!((150 * MIB..300 * MIB).contains(&m.peak_rss), "dd bs=160M peaked at {} MiB", m.peak_rss / MIB);
    drop(held);
}

#[test]
fn exit_status_output_and_the_deadline_pass_through() {
    let mut sh = Command::new("sh");
    sh.args(["-c", "echo out; echo err >&2; exit 3"]);
    let m = run_measured(sh, Duration::from_secs(120));
    assert_eq!((m.code, m.stdout.as_str(), m.stderr.as_str(), m.timed_out), (Some(3), "out\n", "err\n", false));
    let mut sleep = Command::new("sleep");
    sleep.arg("600");
    let m = run_measured(sleep, Duration::from_millis(200));
    assert!(m.timed_out && m.code.is_none(), "{m:?}");
}
