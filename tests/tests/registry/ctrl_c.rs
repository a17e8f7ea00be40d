//! Ctrl-C during a pull.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use strata_tests::registry::{Reply, Server, TestImage};
use strata_tests::{signal_at, Strata};

use crate::run::{pull, store_state};
use crate::REPO;

/// Ctrl-C at moments spread over a pull (download, and each layer of the unpack) of an image into a store
/// that holds another: the pull either completes, or fails with one `error:` line
/// saying it was interrupted and leaves the store (layers, images, blob cache) as it
/// was — no layer that no image references, no staging folder.
pub(crate) fn ctrl_c_of_a_pull(driver: &str, base: &Path) {
    let held = TestImage::generate(24, 2);
    let held_registry = Server::start(Arc::new(move |r| held.answer(REPO, r)));
    // Three layers that take a while to apply, so that signals land in each.
    let size = strata_cli::workload::WorkloadSize { base_dirs: 40, base_files: 800, app_files: 1500 };
    let img = TestImage::generate_sized(25, 3, size);
    let registry = Server::start(Arc::new(move |r| {
        // Slow enough answers that the download takes a while too.
        Reply { delay: Some(Duration::from_millis(100)), ..img.answer(REPO, r) }
    }));
    let reference = format!("127.0.0.1:{}/{REPO}:v1", registry.port);
    let prepare = |name: &str| {
        let s = Strata::at(&base.join(name), driver);
        let run = pull(&s, &format!("127.0.0.1:{}/{REPO}:v1", held_registry.port), &[]);
        assert!(run.ok, "{driver}: {}", run.stderr);
        s
    };
    let clean = prepare("clean");
    let run = pull(&clean, &reference, &[]);
    assert!(run.ok, "{driver}: the uninterrupted pull: {}", run.stderr);
    // When to interrupt: after the first stderr line holding the marker ("" is the
    // start), plus a delay. "downloaded" starts the unpack; "layer N/" ends layer N.
    let moments: [(&str, u64); 6] =
        [("", 50), ("", 250), ("downloaded", 0), ("downloaded", 100), ("downloaded", 300), ("layer 1/", 0)];
    let mut interrupted = 0;
    for (k, (marker, delay)) in moments.into_iter().enumerate() {
        let s = prepare(&format!("k{k}"));
        let before = store_state(&s);
        let what = format!("{driver}: SIGINT {delay} ms after {marker:?}");
        let run = signal_at(
            s.command(&["image", "pull", "--insecure", &reference]),
            marker,
            Duration::from_millis(delay),
            Signal::SIGINT,
        );
        let (status, stderr) = (run.status, run.stderr.as_str());
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error: ")).collect();
        let phase = if stderr.contains("downloaded ") { "unpack" } else { "download" };
        eprintln!("{what}: {} during the {phase}", if status.success() { "completed" } else { "interrupted" });
        if status.success() {
            assert!(errors.is_empty(), "{what}: {stderr}");
            continue; // it finished before the signal
        }
        interrupted += 1;
        if run.before_main() {
            assert_eq!(store_state(&s), before, "{what}: the store changed");
            continue;
        }
        run.assert_interrupted(&what);
        assert_eq!(store_state(&s), before, "{what}: the store changed");
    }
    // The first three moments are always before the end (the download alone takes
    // several 100 ms answers, and an unpack more than nothing).
    assert!(interrupted >= 3, "{driver}: only {interrupted} of {} pulls were interrupted", moments.len());
}
