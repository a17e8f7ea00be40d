//! `strata`: container-image storage drivers side by side.
//!
//! `strata [--root DIR] [--driver overlay|vfs|btrfs|auto] <command>`; see
//! `strata --help` and the README. Every failure prints one `error: ...` line on
//! stderr and exits non-zero, leaving the store as it was.
//!
//! The command line is read in three steps, as ripgrep reads its own: clap's raw
//! arguments ([`args`]), resolved into a typed [`plan`] before anything is opened, then
//! one function per mode ([`commands`]) that prints through [`output`].

mod args;
mod bench;
mod commands;
mod commit;
mod error;
mod explain;
mod failure;
mod fleet;
mod gate;
mod lifecycle;
mod meter;
mod model;
mod openmetrics;
mod output;
mod page;
mod peers;
mod plan;
mod probe;
mod progress;
mod report;
mod runcmd;
mod syncmodes;
mod verdict;
mod workloads;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

use crate::args::Cli;
use crate::error::Error;
use crate::plan::{Mode, Plan};

/// 0 error, 1 info, 2 debug: set once from the command line.
static LEVEL: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(1);

fn level() -> u8 {
    LEVEL.load(std::sync::atomic::Ordering::Relaxed)
}

/// A note or progress line on stderr, unless --quiet or --log-level error.
#[macro_export]
macro_rules! info {
    ($($t:tt)*) => { if $crate::level() >= 1 { eprintln!($($t)*) } };
}

/// What happens underneath, with --debug.
#[macro_export]
macro_rules! debug {
    ($($t:tt)*) => { if $crate::level() >= 2 { eprintln!("debug: {}", format!($($t)*)) } };
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // The bench's usage errors exit 2, as clap's own do, before anything runs.
    let plan = match plan::resolve(cli, &matches) {
        Ok(plan) => plan,
        Err(usage) => return failed(&Error::Usage(usage)),
    };
    LEVEL.store(plan.level, std::sync::atomic::Ordering::Relaxed);
    if plan.stops_at_interrupt() {
        // Ctrl-C stops a pull or an unpack where it can undo what it made (as early as
        // can be).
        driver_core::interrupt::install();
    }
    quiet_when_stdout_closes();
    let outcome = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(plan))) {
        Ok(outcome) => outcome,
        // As a shell reports a command ended by SIGPIPE (128 + 13); the unwind has already
        // released what the command held (mounts, staging, the store lock).
        Err(payload) if is_closed_stdout(payload.as_ref()) => return ExitCode::from(error::CLOSED_STDOUT),
        Err(payload) => std::panic::resume_unwind(payload),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => failed(&e),
    }
}

/// The one `error: ...` line on stderr, and the exit code, of a command that failed.
fn failed(e: &Error) -> ExitCode {
    // `strata image ls | head -1`: the reader has what it wanted; nothing to say.
    if e.is_closed_stdout() {
        return ExitCode::from(error::CLOSED_STDOUT);
    }
    eprintln!("error: {}", printable(&e.to_string()));
    // As a shell reports a command stopped by Ctrl-C, after it rolled back.
    if driver_core::interrupt::requested() {
        return ExitCode::from(130);
    }
    // By what failed (docs/cli.md); the bench's own (docs/ci.md).
    ExitCode::from(e.exit_code())
}

/// `strata image ls | head -1`: the reader goes away, and Rust, which ignores SIGPIPE,
/// returns EPIPE from the write. The commands print through [`output`], which makes it
/// the command's error (`Error::Stdout`, exit 141 without a line); what still prints
/// with `println!` (the bench's tables) panics on it. That panic is a way out too (it
/// unwinds through the guards that unmount and discard staging, where a default SIGPIPE
/// would kill the process with mounts held), but its message and backtrace are noise:
/// the hook says nothing for it and `main` exits as a pipe-killed command would.
fn quiet_when_stdout_closes() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !is_closed_stdout(info.payload()) {
            report(info)
        }
    }));
}

/// Whether a panic is std's "failed printing to stdout" for a closed pipe (EPIPE).
fn is_closed_stdout(payload: &(dyn std::any::Any + Send)) -> bool {
    let msg = match (payload.downcast_ref::<String>(), payload.downcast_ref::<&str>()) {
        (Some(s), _) => s.as_str(),
        (None, Some(s)) => s,
        (None, None) => return false,
    };
    let epipe = std::io::Error::from_raw_os_error(libc::EPIPE).to_string();
    msg.starts_with("failed printing to stdout") && msg.ends_with(&epipe)
}

/// The error line with control characters escaped: a message can quote bytes from a
/// hostile file or server (a name, a registry's answer), and those must not reach the
/// terminal as escape sequences or break the one-line contract.
fn printable(msg: &str) -> String {
    msg.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}

/// Runs the plan's mode.
fn run(plan: Plan) -> Result<(), Error> {
    let Plan { root, driver, durability, mode, .. } = plan;
    match mode {
        Mode::Layer(cmd) => commands::layer(driver, &root, cmd),
        Mode::Pull(p) => commands::pull(driver, &root, durability, p),
        Mode::Image(cmd) => commands::image(driver, &root, durability, cmd),
        Mode::Container(cmd) => commands::container(driver, &root, durability, cmd),
        Mode::Probe { format } => commands::probe(&root, format),
        Mode::Bench(args) => commands::bench(&args),
        Mode::Df { format } => commands::df(driver, &root, format),
        Mode::Check { repair, format } => commands::check(driver, &root, repair, format),
    }
}
