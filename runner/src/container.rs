//! `strata container run`: a command in a container's view.
//!
//! strata forks a child that unshares a mount and a network namespace, makes every
//! mount private (nothing it does propagates back to the host), mounts a fresh /proc and
//! a minimal /dev (a tmpfs holding null, zero, full, random, urandom and tty bound from
//! the host's, a new devpts instance, a tmpfs /dev/shm) inside the view, brings up
//! loopback, and makes the view its root with `pivot_root`. It then runs the command as
//! root (or `--user`) with the image's environment, or, when recording, forks it under
//! the ptrace recorder ([`crate::record`]). Every mount but the view lives in the
//! child's namespace and goes with it; the caller unmounts the view.
//!
//! Not a security boundary: no user namespace, cgroups, seccomp policy or capability
//! dropping. It is a way to make real filesystem work in a view, not a runtime.
//!
//! SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to strata by another process (`kill`) are
//! passed to the command (a terminal's Ctrl-C reaches both already), and strata waits
//! for it to end, so its caller can unmount: strata then exits with the command's status.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{ForkResult, Gid, Pid, Uid};

use crate::trace::Header;

/// What to run, where, and how.
pub struct RunSpec {
    /// The container's view, mounted (a host path).
    pub view: PathBuf,
    pub command: Vec<String>,
    /// The image config's `Env` (`KEY=VALUE`); PATH gets a default when it has none.
    pub env: Vec<String>,
    /// The image config's `WorkingDir`.
    pub workdir: Option<String>,
    /// `--user UID[:GID]` (GID defaults to UID).
    pub user: Option<(u32, u32)>,
    /// `--record`: where the trace goes, and its header.
    pub record: Option<(File, Header)>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A step refused for a reason that is no system call's (no command, a NUL byte
    /// in an argument, a child that reported words only).
    #[error("container run: {0}")]
    Setup(String),
    /// A system call of a setup step failed, in strata or in the forked child (whose
    /// errno comes back over a pipe): what was being done, and the errno.
    #[error("container run: {what}: {errno}")]
    Sys {
        what: String,
        #[source]
        errno: Errno,
    },
    /// An io error of strata's own side that carries no errno, kept as it is.
    #[error("container run: {what}: {source}")]
    Io { what: String, source: io::Error },
}

impl RunError {
    /// The errno under this error (ENOSPC, EPERM, ...), if any.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            RunError::Sys { errno, .. } => Some(*errno as i32),
            RunError::Io { source, .. } => driver_core::error::os_error(source),
            RunError::Setup(_) => None,
        }
    }

    /// `e`, which failed while doing `what`, its errno kept.
    fn io(what: impl Into<String>, e: io::Error) -> RunError {
        match e.raw_os_error() {
            Some(n) => RunError::Sys { what: what.into(), errno: Errno::from_raw(n) },
            None => RunError::Io { what: what.into(), source: e },
        }
    }

    /// The errno of `e`, which failed while doing `what`.
    fn sys(what: impl Into<String>) -> impl FnOnce(Errno) -> RunError {
        move |errno| RunError::Sys { what: what.into(), errno }
    }

    /// This error with `prefix` in front of what was being done.
    fn under(self, prefix: &str) -> RunError {
        match self {
            RunError::Sys { what, errno } => RunError::Sys { what: format!("{prefix}: {what}"), errno },
            RunError::Io { what, source } => RunError::Io { what: format!("{prefix}: {what}"), source },
            RunError::Setup(words) => RunError::Setup(format!("{prefix}: {words}")),
        }
    }

    /// How the child sends this error to the parent: the errno (0: none) and the
    /// words' length as 4 bytes each, then the words. An io error without errno can
    /// only go as words.
    fn to_wire(&self) -> Vec<u8> {
        let (errno, words) = match self {
            RunError::Sys { what, errno } => (*errno as i32, what.clone()),
            RunError::Io { what, source } => (0, format!("{what}: {source}")),
            RunError::Setup(words) => (0, words.clone()),
        };
        let mut out = errno.to_le_bytes().to_vec();
        out.extend_from_slice(&(words.len() as u32).to_le_bytes());
        out.extend_from_slice(words.as_bytes());
        out
    }

    /// The first error [`RunError::to_wire`] sent (the recorder's child reports before
    /// the recorder, which then reports the child's end: the first is the cause);
    /// `None` for an empty pipe (the command ran).
    fn from_wire(data: &[u8]) -> Option<RunError> {
        if data.is_empty() {
            return None;
        }
        let word = |at: usize| data.get(at..at + 4).map(|b| <[u8; 4]>::try_from(b).expect("4 bytes"));
        let (Some(errno), Some(len)) = (word(0), word(4)) else {
            return Some(RunError::Setup(format!("the child's report is cut short ({} bytes)", data.len())));
        };
        let words = &data[8..];
        let words = String::from_utf8_lossy(&words[..words.len().min(u32::from_le_bytes(len) as usize)]).into_owned();
        Some(match i32::from_le_bytes(errno) {
            0 => RunError::Setup(words),
            n => RunError::Sys { what: words, errno: Errno::from_raw(n) },
        })
    }
}

/// The PATH a container gets when its image names none (Docker's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Parses `--user UID[:GID]`.
pub fn parse_user(s: &str) -> Result<(u32, u32), String> {
    let num = |p: &str| p.parse::<u32>().map_err(|_| format!("--user {s}: UID[:GID] must be numbers"));
    match s.split_once(':') {
        Some((u, g)) => Ok((num(u)?, num(g)?)),
        None => num(s).map(|u| (u, u)),
    }
}

/// The pid signals are passed to (0: none yet), and a signal that came before it was
/// known.
static FORWARD_TO: AtomicI32 = AtomicI32::new(0);
static PENDING: AtomicI32 = AtomicI32::new(0);

/// Passes SIGINT, SIGTERM, SIGHUP and SIGQUIT that another process sent (not a
/// terminal's, which reaches the command's process group itself) to `FORWARD_TO`.
/// Idempotent: a bench that runs many containers registers the handlers once.
pub(crate) fn forward_signals() -> Result<(), RunError> {
    static DONE: std::sync::OnceLock<Result<(), (libc::c_int, Errno)>> = std::sync::OnceLock::new();
    DONE.get_or_init(register_forwarding)
        .map_err(|(sig, errno)| RunError::Sys { what: format!("handling signal {sig}"), errno })
}

fn register_forwarding() -> Result<(), (libc::c_int, Errno)> {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
        // SAFETY: the action only reads atomics and calls kill(2), both async-signal-safe.
        unsafe {
            signal_hook_registry::register_sigaction(sig, move |info: &libc::siginfo_t| {
                // si_code > 0: sent by the kernel (a terminal's Ctrl-C), which the
                // command's process group received too.
                if info.si_code > 0 {
                    return;
                }
                match FORWARD_TO.load(Ordering::SeqCst) {
                    0 => PENDING.store(sig, Ordering::SeqCst),
                    pid => {
                        libc::kill(pid, sig);
                    }
                }
            })
        }
        // It fails only in sigaction(2), with its errno (the signals here are not the
        // ones it refuses without a call).
        .map_err(|e| (sig, Errno::from_raw(e.raw_os_error().unwrap_or(libc::EINVAL))))?;
    }
    Ok(())
}

/// Sets the pid that signals go to, and passes one that came before.
pub(crate) fn forward_to(pid: Pid) {
    FORWARD_TO.store(pid.as_raw(), Ordering::SeqCst);
    let pending = PENDING.swap(0, Ordering::SeqCst);
    if pending != 0 {
        let _ = nix::sys::signal::kill(pid, Signal::try_from(pending).ok());
    }
}

/// Runs the command; its exit status (128 + signal when a signal ended it).
pub fn run(spec: RunSpec) -> Result<i32, RunError> {
    if spec.command.is_empty() {
        return Err(RunError::Setup("no command given (strata container run NAME -- CMD ...)".into()));
    }
    // Errors of the child, before the command runs, come back through this pipe (closed
    // on exec, so an empty pipe means the command ran).
    let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(RunError::sys("pipe"))?;
    forward_signals()?;
    // SAFETY: the child only makes syscalls and small allocations before it execs or
    // becomes the tracer; glibc's fork keeps malloc usable in the child.
    match unsafe { nix::unistd::fork() }.map_err(RunError::sys("fork"))? {
        ForkResult::Child => {
            drop(err_r);
            let code = match child(spec, &err_w) {
                Ok(code) => code,
                Err(e) => {
                    report(&err_w, &e);
                    125
                }
            };
            // Not `exit`: the parent's buffers and atexit handlers are not ours to run.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(err_w);
            forward_to(child);
            let status = loop {
                match waitpid(child, None) {
                    Ok(WaitStatus::Exited(_, code)) => break code,
                    Ok(WaitStatus::Signaled(_, sig, _)) => break 128 + sig as i32,
                    Ok(_) => continue,
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => return Err(RunError::Sys { what: "waiting for the command".into(), errno: e }),
                }
            };
            FORWARD_TO.store(0, Ordering::SeqCst);
            let mut report = Vec::new();
            File::from(err_r).read_to_end(&mut report).map_err(|e| RunError::io("reading the child's report", e))?;
            match RunError::from_wire(&report) {
                Some(e) => Err(e),
                None => Ok(status),
            }
        }
    }
}

/// Sends `e` to the parent over the error pipe (see [`RunError::to_wire`]).
fn report(err_w: &OwnedFd, e: &RunError) {
    let _ = nix::unistd::write(err_w, &e.to_wire());
}

/// The command could not be executed: which, and the PATH it was looked up in.
fn exec_failed(command: &str, errno: Errno) -> RunError {
    RunError::Sys { what: format!("{command} (PATH={})", std::env::var("PATH").unwrap_or_default()), errno }
}

/// The child: namespaces, mounts, root, then the command (or the recorder).
fn child(spec: RunSpec, err_w: &OwnedFd) -> Result<i32, RunError> {
    // The handlers inherited from strata hold signals as pending here (this process's
    // copy of FORWARD_TO is 0) until the command is known; exec resets them. The child
    // dies with strata (its namespace and mounts with it).
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(RunError::sys("prctl"))?;
    enter(&spec.view).map_err(|e| e.under(&spec.view.display().to_string()))?;
    let workdir = spec.workdir.as_deref().filter(|w| !w.is_empty()).unwrap_or("/");
    if nix::unistd::chdir(workdir).is_err() {
        eprintln!("warning: working directory {workdir} is not in the container; running in /");
        nix::unistd::chdir("/").map_err(RunError::sys("chdir /"))?;
    }
    set_env(&spec.env, spec.user.is_some());
    let argv: Vec<CString> = spec
        .command
        .iter()
        .map(|a| CString::new(a.as_bytes()).map_err(|_| RunError::Setup(format!("argument {a:?} holds a NUL byte"))))
        .collect::<Result<_, _>>()?;
    match spec.record {
        None => {
            become_user(spec.user)?;
            let pending = PENDING.load(Ordering::SeqCst);
            if pending != 0 {
                return Ok(128 + pending);
            }
            let e = nix::unistd::execvp(&argv[0], &argv).unwrap_err();
            Err(exec_failed(&spec.command[0], e))
        }
        Some((out, header)) => {
            // SAFETY: as above; the grandchild execs at once.
            match unsafe { nix::unistd::fork() }.map_err(RunError::sys("fork"))? {
                ForkResult::Child => {
                    let res = (|| -> Result<(), RunError> {
                        nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(RunError::sys("prctl"))?;
                        // While root (CAP_SYS_ADMIN allows it without no_new_privs).
                        crate::record::install_filter().map_err(|e| RunError::io("seccomp filter", e))?;
                        become_user(spec.user)?;
                        nix::sys::ptrace::traceme().map_err(RunError::sys("ptrace"))?;
                        nix::sys::signal::raise(Signal::SIGSTOP).map_err(RunError::sys("raise"))?;
                        let e = nix::unistd::execvp(&argv[0], &argv).unwrap_err();
                        Err(exec_failed(&spec.command[0], e))
                    })();
                    if let Err(e) = res {
                        report(err_w, &e);
                    }
                    unsafe { libc::_exit(125) }
                }
                ForkResult::Parent { child } => {
                    forward_to(child);
                    crate::record::trace(child, out, header).map_err(|e| RunError::io("recording", e))
                }
            }
        }
    }
}

/// Namespaces, mounts and pivot_root: the calling process ends with the view as `/`.
fn enter(view: &Path) -> Result<(), RunError> {
    let m = RunError::sys;
    nix::sched::unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWNET).map_err(m("unshare"))?;
    // Nothing mounted from here on is seen by (or propagates to) the host.
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)
        .map_err(m("making mounts private"))?;
    // pivot_root needs the new root to be a mount point (a vfs view is a directory).
    mount(Some(view), view, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
        .map_err(m("binding the view"))?;
    let proc = view.join("proc");
    if proc.is_dir() {
        mount(
            Some("proc"),
            &proc,
            Some("proc"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None::<&str>,
        )
        .map_err(m("mounting /proc"))?;
    } else {
        eprintln!("warning: the image has no /proc directory; the command runs without /proc");
    }
    let dev = view.join("dev");
    if dev.is_dir() {
        make_dev(&dev)?;
    } else {
        eprintln!("warning: the image has no /dev directory; the command runs without /dev");
    }
    loopback_up().map_err(|e| RunError::io("bringing up lo", e))?;
    nix::unistd::chdir(view).map_err(m("chdir to the view"))?;
    // pivot_root(".", "."): the old root ends stacked under the new one, and is then
    // detached (no directory in the view is needed for it).
    nix::unistd::pivot_root(".", ".").map_err(m("pivot_root"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(m("detaching the old root"))?;
    nix::unistd::chdir("/").map_err(m("chdir /"))?;
    Ok(())
}

/// A minimal /dev on a tmpfs of its own (nothing is created in the view).
fn make_dev(dev: &Path) -> Result<(), RunError> {
    let m = RunError::sys;
    let nodev = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC;
    mount(Some("tmpfs"), dev, Some("tmpfs"), MsFlags::MS_NOSUID, Some("mode=755,size=64k"))
        .map_err(m("mounting /dev"))?;
    for name in ["null", "zero", "full", "random", "urandom", "tty"] {
        let target = dev.join(name);
        File::create(&target).map_err(|e| RunError::io(format!("/dev/{name}"), e))?;
        let host = Path::new("/dev").join(name);
        mount(Some(&host), &target, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .map_err(RunError::sys(format!("binding /dev/{name}")))?;
    }
    let mkdir = |p: &Path| std::fs::create_dir(p).map_err(|e| RunError::io(p.display().to_string(), e));
    mkdir(&dev.join("pts"))?;
    mount(Some("devpts"), &dev.join("pts"), Some("devpts"), nodev, Some("newinstance,ptmxmode=0666,mode=0620"))
        .map_err(m("mounting /dev/pts"))?;
    mkdir(&dev.join("shm"))?;
    mount(Some("shm"), &dev.join("shm"), Some("tmpfs"), nodev | MsFlags::MS_NODEV, Some("mode=1777"))
        .map_err(m("mounting /dev/shm"))?;
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        std::os::unix::fs::symlink(target, dev.join(link)).map_err(|e| RunError::io(format!("/dev/{link}"), e))?;
    }
    Ok(())
}

/// `ip link set lo up` in the new network namespace (SIOCSIFFLAGS; nix has no wrapper).
fn loopback_up() -> std::io::Result<()> {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
    let sock =
        socket(AddressFamily::Inet, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None).map_err(io::Error::from)?;
    // SAFETY: ifreq is plain data; the ioctls read and write only it.
    unsafe {
        let mut req: libc::ifreq = std::mem::zeroed();
        for (d, s) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *d = *s as libc::c_char;
        }
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The image's environment replaces strata's (PATH and HOME get defaults).
fn set_env(env: &[String], as_user: bool) {
    let keys: Vec<std::ffi::OsString> = std::env::vars_os().map(|(k, _)| k).collect();
    for k in keys {
        std::env::remove_var(k);
    }
    for kv in env {
        if let Some((k, v)) = kv.split_once('=') {
            if !k.is_empty() {
                std::env::set_var(k, v);
            }
        }
    }
    if std::env::var_os("PATH").is_none() {
        std::env::set_var("PATH", DEFAULT_PATH);
    }
    if std::env::var_os("HOME").is_none() {
        std::env::set_var("HOME", if as_user { "/" } else { "/root" });
    }
}

fn become_user(user: Option<(u32, u32)>) -> Result<(), RunError> {
    if let Some((uid, gid)) = user {
        nix::unistd::setgroups(&[]).map_err(RunError::sys("setgroups"))?;
        nix::unistd::setgid(Gid::from_raw(gid)).map_err(RunError::sys(format!("setgid {gid}")))?;
        nix::unistd::setuid(Uid::from_raw(uid)).map_err(RunError::sys(format!("setuid {uid}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(view: PathBuf, command: &str) -> RunSpec {
        RunSpec { view, command: vec![command.into()], env: Vec::new(), workdir: None, user: None, record: None }
    }

    /// Namespaces and mounts need root; without it the first step is refused (EPERM),
    /// which is then the errno to find.
    fn root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    /// A step of the child that fails comes back over the pipe as its errno, not words.
    #[test]
    fn a_setup_step_that_fails_keeps_its_errno() {
        let dir = tempfile::tempdir().unwrap();
        let view = dir.path().join("missing");
        let e = run(spec(view.clone(), "true")).unwrap_err();
        let (errno, step) = if root() { (Errno::ENOENT, "binding the view") } else { (Errno::EPERM, "unshare") };
        assert!(
            matches!(&e, RunError::Sys { what, errno: got } if *got == errno
                && *what == format!("{}: {step}", view.display())),
            "{e:?}"
        );
        assert_eq!(e.raw_os_error(), Some(errno as i32));
        assert!(std::error::Error::source(&e).is_some(), "the errno is the source");
    }

    /// A command that cannot be executed in the view is named, with its errno.
    #[test]
    fn a_command_that_cannot_run_keeps_its_errno() {
        if !root() {
            eprintln!("skipped: entering a view needs root");
            assert!(std::env::var_os("STRATA_REQUIRE_PRIVILEGED").is_none(), "STRATA_REQUIRE_PRIVILEGED is set");
            return;
        }
        let view = tempfile::tempdir().unwrap();
        let e = run(spec(view.path().to_path_buf(), "/no/such/command")).unwrap_err();
        assert!(
            matches!(&e, RunError::Sys { what, errno: Errno::ENOENT } if what.starts_with("/no/such/command (PATH=")),
            "{e:?}"
        );
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
    }

    /// What the child sends is what the parent rebuilds; of two reports (the traced
    /// command's, then the recorder's), the first is the cause.
    #[test]
    fn the_childs_report_keeps_the_errno_and_the_first_report_wins() {
        for (errno, what) in [(Errno::ENOSPC, "mounting /dev"), (Errno::EPERM, ""), (Errno::EIO, "é ü: ∅")] {
            let sent = RunError::Sys { what: what.into(), errno };
            let mut wire = sent.to_wire();
            wire.extend(RunError::Setup("recording: the command did not start".into()).to_wire());
            let got = RunError::from_wire(&wire).unwrap();
            assert!(matches!(&got, RunError::Sys { what: w, errno: e } if *e == errno && w == what), "{got:?}");
        }
        let got = RunError::from_wire(&RunError::Setup("argument \"a\\0\" holds a NUL byte".into()).to_wire());
        assert!(matches!(&got, Some(RunError::Setup(w)) if w == "argument \"a\\0\" holds a NUL byte"), "{got:?}");
        assert!(RunError::from_wire(&[]).is_none(), "an empty pipe: the command ran");
        assert!(matches!(RunError::from_wire(&[1, 0]), Some(RunError::Setup(_))));
    }
}
