//! The `strata` binary as cargo builds it for this package's tests.
//!
//! Being an integration test of the package that holds the binary, this file also makes
//! `cargo test --workspace` build `target/<profile>/strata` with the test build's
//! features, so the end-to-end tests' `strata_bin()` (tests/src/lib.rs), whose
//! `cargo build --workspace --bin strata` runs from inside a test, finds it built and
//! compiles nothing (on a fresh clone it used to compile the binary there).

use std::process::Command;

/// An unknown command is a usage error (exit 2, clap's usage), not a failed command
/// (exit 1 with one `error:` line), and changes nothing: it never opens a store.
#[test]
fn an_unknown_command_is_a_usage_error() {
    let root = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_strata"))
        .arg("--root")
        .arg(root.path())
        .arg("no-such-command")
        .output()
        .expect("run strata");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("unrecognized subcommand 'no-such-command'") && stderr.contains("Usage:"), "{stderr}");
    assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0, "nothing made under --root");
}
