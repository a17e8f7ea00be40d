//! The watchdog of a pull: bytes counted as they arrive, limits enforced from outside
//! the download threads, and a panic in one of them turned into one error.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use driver_core::interrupt;

use super::bounds::Limits;
use super::error::{one_line, Error};

/// Bytes received by every download of one pull, and the flag that stops them.
#[derive(Default)]
pub(super) struct Progress {
    pub(super) bytes: AtomicU64,
    pub(super) cancelled: AtomicBool,
}

/// Counts what a body delivers, and stops it once the pull is cancelled (watchdog,
/// Ctrl-C) so that abandoned download threads do not go on.
pub(super) struct Counted<R> {
    pub(super) inner: R,
    pub(super) progress: Arc<Progress>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if interrupt::requested() {
            return Err(io::Error::other(Error::Interrupted));
        }
        if self.progress.cancelled.load(Ordering::SeqCst) {
            return Err(io::Error::other(Error::Stopped));
        }
        let n = self.inner.read(buf)?;
        self.progress.bytes.fetch_add(n as u64, Ordering::SeqCst);
        Ok(n)
    }
}

/// Enforces [`Limits`] from outside the threads that download.
pub(super) struct Watchdog {
    start: Instant,
    limits: Limits,
    progress: Arc<Progress>,
    /// (time, bytes so far), one sample per tick, as long as `low_speed_time`.
    samples: Mutex<VecDeque<(Instant, u64)>>,
}

impl Watchdog {
    pub(super) fn new(limits: Limits, progress: Arc<Progress>) -> Watchdog {
        Watchdog { start: Instant::now(), limits, progress, samples: Mutex::new(VecDeque::new()) }
    }

    fn tick(&self) -> Duration {
        (self.limits.low_speed_time / 8).clamp(Duration::from_millis(50), Duration::from_secs(1))
    }

    fn check(&self, reference: &str) -> Result<(), Error> {
        let now = Instant::now();
        if now - self.start > self.limits.timeout {
            return Err(Error::Deadline { reference: reference.into(), timeout: self.limits.timeout });
        }
        let bytes = self.progress.bytes.load(Ordering::SeqCst);
        let mut samples = self.samples.lock().expect("samples lock");
        samples.push_back((now, bytes));
        while samples.len() > 1 && now - samples[1].0 >= self.limits.low_speed_time {
            samples.pop_front();
        }
        let (then, before) = samples[0];
        let window = now - then;
        if window >= self.limits.low_speed_time {
            let got = bytes - before;
            if (got as f64) < self.limits.low_speed_limit as f64 * window.as_secs_f64() {
                return Err(Error::Stalled {
                    reference: reference.into(),
                    got,
                    window,
                    limit: self.limits.low_speed_limit,
                });
            }
        }
        Ok(())
    }

    /// Runs `f` in its own thread and waits for it, failing when the limits are
    /// exceeded or an interrupt is requested; the thread is then told to stop, and is
    /// left behind (it holds nothing that outlives the staging folder).
    pub(super) fn run<T: Send + 'static>(
        &self,
        reference: &str,
        f: impl FnOnce() -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("strata-pull".into())
            .spawn(move || {
                let _ = tx.send(guarded(f));
            })
            .map_err(|source| Error::Read { what: "starting a download thread".into(), source })?;
        loop {
            match rx.recv_timeout(self.tick()) {
                Ok(r) => return r,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let stop = if interrupt::requested() { Err(Error::Interrupted) } else { self.check(reference) };
                    if let Err(e) = stop {
                        self.progress.cancelled.store(true, Ordering::SeqCst);
                        return Err(e);
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(Error::Internal(": a download thread vanished".into()))
                }
            }
        }
    }
}

thread_local! {
    /// Where the last panic of this thread happened, for its error line.
    static PANIC_AT: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f`, turning a panic into an error: a bug (or a crate's) in a download thread
/// must end the pull with one `error:` line, not abort the process. The panic hook
/// stays quiet for these threads and notes where it happened.
pub(super) fn guarded<T>(f: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().name().is_some_and(|n| n.starts_with("strata-pull")) {
                let at = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
                PANIC_AT.with(|p| *p.borrow_mut() = Some(at));
            } else {
                previous(info);
            }
        }));
    });
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            let at = PANIC_AT.with(|p| p.borrow_mut().take()).unwrap_or_default();
            Err(Error::Internal(format!(" in a download thread (please report): {} at {at}", one_line(&msg, 300))))
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_in_a_download_thread_is_one_error() {
        let e = std::thread::Builder::new()
            .name("strata-pull-test".into())
            .spawn(|| guarded::<()>(|| panic!("boom")))
            .unwrap()
            .join()
            .expect("the panic did not escape the thread")
            .unwrap_err();
        assert!(matches!(e, Error::Internal(_)), "{e:?}");
        let e = e.to_string();
        assert!(e.contains("internal error in a download thread") && e.contains("boom"), "{e}");
        assert!(e.contains("progress.rs:"), "the error says where: {e}");
    }
}
