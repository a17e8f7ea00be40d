//! `peak-rss OUT PROGRAM [ARGS...]`: runs PROGRAM with this process's stdio, writes
//! its peak resident set in bytes (`ru_maxrss` of `wait4`) to OUT, and exits as it
//! did. [`strata_tests::run_measured`] runs commands through it because `ru_maxrss`
//! counts the high-water mark of the process that forked (a vfork child shares its
//! parent's memory until exec): from a test holding hundreds of MiB that is the
//! test's peak, from this small process it is a few MiB at most.

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::Command;

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let [out, program, rest @ ..] = args.as_slice() else {
        eprintln!("usage: peak-rss OUT PROGRAM [ARGS...]");
        std::process::exit(2);
    };
    let mut cmd = Command::new(program);
    cmd.args(rest);
    // SAFETY: prctl is async-signal-safe. When the measuring test kills this process
    // at its deadline, the program goes too.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("peak-rss: {}: {e}", program.to_string_lossy());
            std::process::exit(127);
        }
    };
    let (mut status, pid) = (0, child.id() as libc::pid_t);
    // SAFETY: rusage is plain data that wait4 fills in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: our only child, reaped here (Child::wait would drop the rusage).
    while unsafe { libc::wait4(pid, &mut status, 0, &mut usage) } != pid {
        assert_eq!(std::io::Error::last_os_error().raw_os_error(), Some(libc::EINTR), "wait4");
    }
    std::fs::write(out, (usage.ru_maxrss as u64 * 1024).to_string()).expect("write the peak RSS");
    let status = std::process::ExitStatus::from_raw(status);
    if let Some(sig) = status.signal() {
        // Die of the same signal, so the caller sees what the program saw.
        // SAFETY: resetting a signal to its default and raising it are plain syscalls.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            libc::raise(sig);
        }
    }
    std::process::exit(status.code().unwrap_or(1));
}
