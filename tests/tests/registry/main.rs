//! The hostile-registry corpus: `image pull` against a registry the test controls
//! (tests/src/registry.rs, on 127.0.0.1), on every driver. Each case says what strata
//! must do — succeed, or refuse with one clear `error:` line — and every run is checked
//! for bounded memory (peak RSS of the `strata` process, from wait4) and bounded time;
//! after a refusal the store (layers, images, blob cache) is exactly as before, nothing
//! beside the store changed, and no request left `/v2/<repository>/`.
//!
//! Which refusal it is is checked once, in this process, on the typed error of the
//! registry client (`strata_image::registry::Error`); a few cases also check the words
//! of the printed line, end to end.
//!
//! The watchdog limits are set short through the environment
//! (`STRATA_PULL_LOW_SPEED_TIME` and friends), so stalls are found in seconds.
//!
//! The corpus is in corpus.rs, running one case in run.rs, the Ctrl-C test in
//! ctrl_c.rs; the tests themselves are here.

mod corpus;
mod ctrl_c;
mod run;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use strata_image::registry as client;
use strata_tests::registry::{Server, TestImage};
use strata_tests::Strata;

use corpus::{cases, Expect};
use ctrl_c::ctrl_c_of_a_pull;
use run::{files, limits, pull, run_case, Serving};

const REPO: &str = "strata/img";
const TOKEN: &str = "good-token";
/// The bound the issue sets for any pull, whatever the registry sends.
const MAX_RSS_KIB: i64 = 512 << 10;
/// No case may take longer (the slowest are the stall cases, ~3-5 s); a pull still
/// running then is killed and the case fails.
const MAX_TIME: Duration = Duration::from_secs(30);

/// Each refusal of the corpus, by the registry client in this process: the typed
/// error is the one the case names, and the blob cache holds nothing afterwards (no
/// staging folder, no blob). Needs no driver, so it runs unprivileged.
#[test]
fn hostile_registries_are_refused_with_typed_errors() {
    let image = TestImage::generate(21, 2);
    let only = std::env::var("STRATA_CORPUS_CASE").unwrap_or_default();
    let mut failed = Vec::new();
    for case in cases().iter().filter(|c| c.name.contains(&only)) {
        let Expect::Refused(accepts) = case.expect else { continue };
        let start = Instant::now();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let serving = Serving::start(case, &image);
            let cache = tempfile::tempdir().unwrap();
            let auth = client::AuthOptions::default();
            let got = client::pull_all(&serving.reference, true, &auth, limits(case.args), cache.path());
            match got {
                Ok(_) => panic!("{}: pulled", case.name),
                Err(e) => assert!(accepts(&e), "{}: not the error expected: {e:?} ({e})", case.name),
            }
            assert!(files(cache.path()).is_empty(), "{}: left in the cache: {:?}", case.name, files(cache.path()));
            serving.check_requests(case, case.name);
        }));
        eprintln!(
            "{}: {} in {:.1}s",
            case.name,
            if r.is_ok() { "ok" } else { "FAILED" },
            start.elapsed().as_secs_f64()
        );
        if r.is_err() {
            failed.push(case.name);
        }
    }
    assert!(failed.is_empty(), "{} case(s) failed: {failed:?}", failed.len());
}

/// Runs the corpus on `driver` with its stores under `base`: the refusals on one store
/// that already holds an image (which they must leave as it is), the successes each
/// on a fresh store.
fn hostile_registries(driver: &str, base: &Path) {
    let image = TestImage::generate(21, 2);
    let outside = base.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("canary"), b"beside the store").unwrap();

    // The store the refusals run on already holds another image, pulled.
    let s = Strata::at(&base.join("store"), driver);
    let held = TestImage::generate(22, 2);
    let held_registry = Server::start(Arc::new(move |r| held.answer(REPO, r)));
    let run = pull(&s, &format!("127.0.0.1:{}/{REPO}:v1", held_registry.port), &[]);
    assert!(run.ok, "{driver}: the first pull: {}", run.stderr);

    // Every case runs, and the failures are listed together at the end.
    let mut failed = Vec::new();
    // STRATA_CORPUS_CASE=WORDS runs only the cases whose name holds WORDS.
    let only = std::env::var("STRATA_CORPUS_CASE").unwrap_or_default();
    for (i, case) in cases().iter().enumerate().filter(|(_, c)| c.name.contains(&only)) {
        let start = Instant::now();
        let fresh;
        let store = if case.expect.succeeds() {
            fresh = Strata::at(&base.join(format!("fresh{i}")), driver);
            &fresh
        } else {
            &s
        };
        let r =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_case(case, store, &image, &outside, driver)));
        let verdict = if r.is_ok() { "ok" } else { "FAILED" };
        eprintln!("{driver}: {}: {verdict} in {:.1}s", case.name, start.elapsed().as_secs_f64());
        if r.is_err() {
            failed.push(case.name);
        }
    }
    assert!(failed.is_empty(), "{driver}: {} case(s) failed: {failed:?}", failed.len());
}

strata_tests::on_every_driver_in!(hostile_registries);

#[test]
fn pull_help_documents_the_deadlines() {
    let o = Command::new(strata_tests::strata_bin()).args(["image", "pull", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&o.stdout);
    for w in
        ["--timeout", "--low-speed-limit", "--low-speed-time", "STRATA_PULL_TIMEOUT", "STRATA_PULL_LOW_SPEED_LIMIT"]
    {
        assert!(help.contains(w), "`image pull --help` names {w}: {help}");
    }
}

strata_tests::on_every_driver_in!(ctrl_c_of_a_pull);
