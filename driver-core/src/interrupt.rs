//! Ctrl-C as a request, not a kill: long commands (`image pull`, `image unpack`) call
//! [`install`] once; SIGINT or SIGTERM then only sets a flag, which the work polls
//! ([`check`], or a [`Checked`] reader around a stream), so a command stops at a point
//! where it can undo what it made and leave the store as it was. A second signal while
//! the first is being handled exits at once (status 130), as shells expect; what that
//! leaves behind is cleaned like after a SIGKILL. (The flag is process-wide, so it is
//! tested through the binary: tests/tests/registry.rs interrupts a pull.)

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Cause, Error, Result};

static REQUESTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    // Only async-signal-safe work here: an atomic swap, and _exit on the second signal.
    if REQUESTED.swap(true, Ordering::SeqCst) {
        unsafe { libc::_exit(130) };
    }
}

/// Routes SIGINT and SIGTERM to the flag. SA_RESTART keeps the system calls that are
/// under way going; the flag is seen at the next [`check`].
pub fn install() {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let action = SigAction::new(SigHandler::Handler(on_signal), SaFlags::SA_RESTART, SigSet::empty());
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // Safety: the handler only touches an atomic and calls _exit.
        unsafe { sigaction(sig, &action) }.expect("sigaction with a valid signal cannot fail");
    }
}

/// Whether SIGINT or SIGTERM arrived since [`install`].
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// The error an interrupted command returns.
pub fn error() -> Error {
    Error::new(Cause::Other("interrupted (SIGINT or SIGTERM)".into()))
}

/// `Err` once an interrupt was requested.
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
