//! Ctrl-C as a request, not a kill: long commands (`image pull`, `image unpack`) call
//! [`install`] once; SIGINT or SIGTERM then only sets a flag, which the work polls
//! ([`check`], or a [`Checked`] reader around a stream), so a command stops at a point
//! where it can undo what it made and leave the store as it was. A second signal while
//! the first is being handled exits at once (status 130), as shells expect; what that
//! leaves behind is cleaned like after a SIGKILL. Work that cannot poll (a bench
//! measuring) runs a cleanup on a thread instead ([`on_request`]). One mechanism for
//! every command, on signal-hook. (The flag is process-wide, so it is tested through
//! the binary: tests/tests/registry/ctrl_c.rs interrupts a pull, tests/tests/crash.rs an
//! unpack, tests/tests/bench.rs a bench.)

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once, OnceLock};

use signal_hook::consts::{SIGINT, SIGTERM};

use crate::error::{Cause, Error, Result};

fn flag() -> &'static Arc<AtomicBool> {
    static REQUESTED: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    REQUESTED.get_or_init(|| Arc::new(AtomicBool::new(false)))
}

/// Routes SIGINT and SIGTERM to the flag (idempotent). signal-hook's handlers restart
/// the system calls under way (SA_RESTART); the flag is seen at the next [`check`]. A
/// signal that finds the flag already set exits at once with status 130.
pub fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for sig in [SIGINT, SIGTERM] {
            // Order matters: the exit is armed first, so the first signal only sets
            // the flag and a second one finds it set.
            signal_hook::flag::register_conditional_shutdown(sig, 130, Arc::clone(flag()))
                .and_then(|_| signal_hook::flag::register(sig, Arc::clone(flag())))
                .expect("registering a handler for SIGINT/SIGTERM cannot fail");
        }
    });
}

/// [`install`], and runs `f` with the signal's number on a thread of its own when the
/// first SIGINT or SIGTERM arrives: for work that does not poll the flag (a bench
/// measuring), whose `f` releases what it holds and exits.
pub fn on_request(f: impl FnOnce(i32) + Send + 'static) -> io::Result<()> {
    install();
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            f(sig);
        }
    });
    Ok(())
}

/// Whether SIGINT or SIGTERM arrived since [`install`].
pub fn requested() -> bool {
    flag().load(Ordering::SeqCst)
}

/// The error an interrupted command returns.
pub fn error() -> Error {
    Error::new(Cause::Interrupted)
}

/// `Err` ([`Cause::Interrupted`]) once an interrupt was requested.
pub fn check() -> Result<()> {
    if requested() {
        Err(error())
    } else {
        Ok(())
    }
}

/// A reader that fails once an interrupt is requested, so whatever consumes the
/// stream (a layer being applied, a blob being hashed) stops and is not committed.
pub struct Checked<R>(pub R);

impl<R: Read> Read for Checked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if requested() {
            return Err(io::Error::other("interrupted (SIGINT or SIGTERM)"));
        }
        self.0.read(buf)
    }
}
