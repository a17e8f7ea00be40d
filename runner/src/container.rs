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
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};

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
    #[error("container run: {0}")]
    Setup(String),
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
pub(crate) fn forward_signals() -> Result<(), RunError> {
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
        .map_err(|e| RunError::Setup(format!("handling signal {sig}: {e}")))?;
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
    let (err_r, err_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| RunError::Setup(format!("pipe: {e}")))?;
    forward_signals()?;
    // SAFETY: the child only makes syscalls and small allocations before it execs or
    // becomes the tracer; glibc's fork keeps malloc usable in the child.
    match unsafe { nix::unistd::fork() }.map_err(|e| RunError::Setup(format!("fork: {e}")))? {
        ForkResult::Child => {
            drop(err_r);
            let code = match child(spec, &err_w) {
                Ok(code) => code,
                Err(msg) => {
                    let _ = File::from(err_w).write_all(msg.as_bytes());
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
                    Err(e) => return Err(RunError::Setup(format!("waiting for the command: {e}"))),
                }
            };
            FORWARD_TO.store(0, Ordering::SeqCst);
            let mut msg = String::new();
            let _ = File::from(err_r).read_to_string(&mut msg);
            if !msg.is_empty() {
                return Err(RunError::Setup(msg));
            }
            Ok(status)
        }
    }
}

/// The child: namespaces, mounts, root, then the command (or the recorder).
fn child(spec: RunSpec, err_w: &OwnedFd) -> Result<i32, String> {
    // The handlers inherited from strata hold signals as pending here (this process's
    // copy of FORWARD_TO is 0) until the command is known; exec resets them. The child
    // dies with strata (its namespace and mounts with it).
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(|e| format!("prctl: {e}"))?;
    enter(&spec.view).map_err(|e| format!("{}: {e}", spec.view.display()))?;
    let workdir = spec.workdir.as_deref().filter(|w| !w.is_empty()).unwrap_or("/");
    if nix::unistd::chdir(workdir).is_err() {
        eprintln!("warning: working directory {workdir} is not in the container; running in /");
        nix::unistd::chdir("/").map_err(|e| format!("chdir /: {e}"))?;
    }
    set_env(&spec.env, spec.user.is_some());
    let argv: Vec<CString> = spec
        .command
        .iter()
        .map(|a| CString::new(a.as_bytes()).map_err(|_| format!("argument {a:?} holds a NUL byte")))
        .collect::<Result<_, _>>()?;
    match spec.record {
        None => {
            become_user(spec.user)?;
            let pending = PENDING.load(Ordering::SeqCst);
            if pending != 0 {
                return Ok(128 + pending);
            }
            let e = nix::unistd::execvp(&argv[0], &argv).unwrap_err();
            Err(format!("{}: {e} (PATH={})", spec.command[0], std::env::var("PATH").unwrap_or_default()))
        }
        Some((out, header)) => {
            // SAFETY: as above; the grandchild execs at once.
            match unsafe { nix::unistd::fork() }.map_err(|e| format!("fork: {e}"))? {
                ForkResult::Child => {
                    let res = (|| -> Result<(), String> {
                        nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(|e| format!("prctl: {e}"))?;
                        become_user(spec.user)?;
                        nix::sys::ptrace::traceme().map_err(|e| format!("ptrace: {e}"))?;
                        nix::sys::signal::raise(Signal::SIGSTOP).map_err(|e| format!("raise: {e}"))?;
                        let e = nix::unistd::execvp(&argv[0], &argv).unwrap_err();
                        Err(format!("{}: {e} (PATH={})", spec.command[0], std::env::var("PATH").unwrap_or_default()))
                    })();
                    if let Err(msg) = res {
                        let _ = nix::unistd::write(err_w, msg.as_bytes());
                    }
                    unsafe { libc::_exit(125) }
                }
                ForkResult::Parent { child } => {
                    forward_to(child);
                    crate::record::trace(child, out, header).map_err(|e| format!("recording: {e}"))
                }
            }
        }
    }
}

/// Namespaces, mounts and pivot_root: the calling process ends with the view as `/`.
fn enter(view: &Path) -> Result<(), String> {
    let m = |what: &str, e: nix::Error| format!("{what}: {e}");
    nix::sched::unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWNET).map_err(|e| m("unshare", e))?;
    // Nothing mounted from here on is seen by (or propagates to) the host.
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)
        .map_err(|e| m("making mounts private", e))?;
    // pivot_root needs the new root to be a mount point (a vfs view is a directory).
    mount(Some(view), view, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
        .map_err(|e| m("binding the view", e))?;
    let proc = view.join("proc");
    if proc.is_dir() {
        mount(
            Some("proc"),
            &proc,
            Some("proc"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None::<&str>,
        )
        .map_err(|e| m("mounting /proc", e))?;
    } else {
        eprintln!("warning: the image has no /proc directory; the command runs without /proc");
    }
    let dev = view.join("dev");
    if dev.is_dir() {
        make_dev(&dev)?;
    } else {
        eprintln!("warning: the image has no /dev directory; the command runs without /dev");
    }
    loopback_up().map_err(|e| format!("bringing up lo: {e}"))?;
    nix::unistd::chdir(view).map_err(|e| m("chdir to the view", e))?;
    // pivot_root(".", "."): the old root ends stacked under the new one, and is then
    // detached (no directory in the view is needed for it).
    nix::unistd::pivot_root(".", ".").map_err(|e| m("pivot_root", e))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| m("detaching the old root", e))?;
    nix::unistd::chdir("/").map_err(|e| m("chdir /", e))?;
    Ok(())
}

/// A minimal /dev on a tmpfs of its own (nothing is created in the view).
fn make_dev(dev: &Path) -> Result<(), String> {
    let m = |what: String, e: nix::Error| format!("{what}: {e}");
    let nodev = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC;
    mount(Some("tmpfs"), dev, Some("tmpfs"), MsFlags::MS_NOSUID, Some("mode=755,size=64k"))
        .map_err(|e| m("mounting /dev".into(), e))?;
    for name in ["null", "zero", "full", "random", "urandom", "tty"] {
        let target = dev.join(name);
        File::create(&target).map_err(|e| format!("/dev/{name}: {e}"))?;
        let host = Path::new("/dev").join(name);
        mount(Some(&host), &target, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .map_err(|e| m(format!("binding /dev/{name}"), e))?;
    }
    let mkdir = |p: &Path| std::fs::create_dir(p).map_err(|e| format!("{}: {e}", p.display()));
    mkdir(&dev.join("pts"))?;
    mount(Some("devpts"), &dev.join("pts"), Some("devpts"), nodev, Some("newinstance,ptmxmode=0666,mode=0620"))
        .map_err(|e| m("mounting /dev/pts".into(), e))?;
    mkdir(&dev.join("shm"))?;
    mount(Some("shm"), &dev.join("shm"), Some("tmpfs"), nodev | MsFlags::MS_NODEV, Some("mode=1777"))
        .map_err(|e| m("mounting /dev/shm".into(), e))?;
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        std::os::unix::fs::symlink(target, dev.join(link)).map_err(|e| format!("/dev/{link}: {e}"))?;
    }
    Ok(())
}

/// `ip link set lo up` in the new network namespace (SIOCSIFFLAGS; nix has no wrapper).
fn loopback_up() -> std::io::Result<()> {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
    let sock = socket(AddressFamily::Inet, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None)
        .map_err(|e| std::io::Error::from_raw_os_error(e as i32))?;
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

fn become_user(user: Option<(u32, u32)>) -> Result<(), String> {
    if let Some((uid, gid)) = user {
        nix::unistd::setgroups(&[]).map_err(|e| format!("setgroups: {e}"))?;
        nix::unistd::setgid(Gid::from_raw(gid)).map_err(|e| format!("setgid {gid}: {e}"))?;
        nix::unistd::setuid(Uid::from_raw(uid)).map_err(|e| format!("setuid {uid}: {e}"))?;
    }
    Ok(())
}
