//! The recorder: a ptrace tracer of the command and every process it starts.
//!
//! ptrace sees every system call, whatever the binary (static ones too, where an
//! `LD_PRELOAD` shim sees nothing). The tracer runs inside the container (after
//! pivot_root), so `/proc/PID/fd/N`, `/proc/PID/cwd` and paths the command passes read
//! exactly as the command sees them. A seccomp filter installed in the command before it
//! execs (inherited by everything it starts) stops only the calls that may change the
//! filesystem (SECCOMP_RET_TRACE, PTRACE_O_TRACESECCOMP); the tracer steps each to its
//! exit (PTRACE_SYSCALL), so reads, stats and the rest run at full speed. Only at the
//! exit of a call that succeeded (its return
//! value not negative) does the tracer read its arguments, resolve its paths (the
//! directory through `/proc/PID/cwd` or the dirfd's link, symlinks resolved as the
//! kernel did) and write a [`Record`]. What it cannot see is listed in docs/trace.md
//! (io_uring, writes through mappings the command makes writable later with mprotect,
//! files written while unlinked).
//!
//! Writes through shared writable mappings are recorded when the mapping ends
//! (munmap, mremap, exec, exit) or is synced (msync): the whole mapped range that
//! lies inside the file then, as a write, since page dirtiness is not visible to a
//! tracer.
//!
//! x86_64 only: syscall numbers and registers are the architecture's.

mod syscalls;

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use base64::Engine;
use nix::sys::ptrace;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::trace::{write_line, Header, Op, Record};

/// The most bytes of a write that are compressed to estimate its compressibility.
const SAMPLE: usize = 64 << 10;

/// Traces `child` (stopped by its own SIGSTOP after PTRACE_TRACEME, before its exec)
/// and all its descendants to the end, writing `header` and then one record per
/// operation to `out`. The command's exit status (128 + signal when a signal killed
/// it). When the command ends, processes it left running are killed (there is no pid
/// namespace to end them).
pub fn trace(child: Pid, out: File, header: Header) -> io::Result<i32> {
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (child, out, header);
        return Err(io::Error::other("recording is implemented for x86_64 only"));
    }
    #[cfg(target_arch = "x86_64")]
    {
        let mut r = Recorder::new(out, header)?;
        r.run(child)
    }
}

/// What the seccomp filter sends to the tracer: every call [`Recorder`] records, and
/// the mapping calls; besides these, open and openat only with a flag that may write,
/// mmap only shared and writable (tested on their arguments in `install_filter`). Every other call runs without stopping: a command pays for the calls
/// recorded, not for its reads and stats.
#[cfg(target_arch = "x86_64")]
const TRACED: &[i64] = &[
    libc::SYS_creat,
    libc::SYS_openat2,
    libc::SYS_write,
    libc::SYS_writev,
    libc::SYS_pwrite64,
    libc::SYS_pwritev,
    libc::SYS_pwritev2,
    libc::SYS_copy_file_range,
    libc::SYS_splice,
    libc::SYS_sendfile,
    libc::SYS_truncate,
    libc::SYS_ftruncate,
    libc::SYS_fallocate,
    libc::SYS_mkdir,
    libc::SYS_mkdirat,
    libc::SYS_rmdir,
    libc::SYS_unlink,
    libc::SYS_unlinkat,
    libc::SYS_rename,
    libc::SYS_renameat,
    libc::SYS_renameat2,
    libc::SYS_link,
    libc::SYS_linkat,
    libc::SYS_symlink,
    libc::SYS_symlinkat,
    libc::SYS_mknod,
    libc::SYS_mknodat,
    libc::SYS_bind,
    libc::SYS_chmod,
    libc::SYS_fchmod,
    libc::SYS_fchmodat,
    452, // fchmodat2
    libc::SYS_chown,
    libc::SYS_lchown,
    libc::SYS_fchown,
    libc::SYS_fchownat,
    libc::SYS_utime,
    libc::SYS_utimes,
    libc::SYS_futimesat,
    libc::SYS_utimensat,
    libc::SYS_setxattr,
    libc::SYS_lsetxattr,
    libc::SYS_fsetxattr,
    libc::SYS_removexattr,
    libc::SYS_lremovexattr,
    libc::SYS_fremovexattr,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_sync_file_range,
    libc::SYS_syncfs,
    libc::SYS_sync,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_msync,
];

/// Installs the seccomp filter of [`TRACED`] in the calling process (the command,
/// before it execs; it is inherited by all it starts). SECCOMP_RET_TRACE stops the
/// call for the tracer (PTRACE_O_TRACESECCOMP), which then steps to its exit.
#[cfg(target_arch = "x86_64")]
pub(crate) fn install_filter() -> io::Result<()> {
    const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
    let ins = |code: u32, k: u32, jt: u8, jf: u8| libc::sock_filter { code: code as u16, jt, jf, k };
    let ld = |off: u32| ins(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, off, 0, 0);
    let jeq = |k: u32, jt: u8, jf: u8| ins(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, k, jt, jf);
    let jset = |k: u32, jt: u8, jf: u8| ins(libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K, k, jt, jf);
    let ret = |k: u32| ins(libc::BPF_RET | libc::BPF_K, k, 0, 0);
    let (allow, trace) = (libc::SECCOMP_RET_ALLOW, libc::SECCOMP_RET_TRACE);
    // struct seccomp_data { int nr; u32 arch; u64 ip; u64 args[6]; }: the low half
    // of args[i] (little endian) is at 16 + 8i.
    let arg = |i: u32| 16 + 8 * i;
    let mut prog = vec![ld(4), jeq(AUDIT_ARCH_X86_64, 1, 0), ret(allow), ld(0)];
    for nr in TRACED {
        prog.extend([jeq(*nr as u32, 0, 1), ret(trace)]);
    }
    let writes = (libc::O_WRONLY | libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC) as u32;
    for (nr, flags_arg) in [(libc::SYS_open, 1), (libc::SYS_openat, 2)] {
        prog.extend([jeq(nr as u32, 0, 4), ld(arg(flags_arg)), jset(writes, 0, 1), ret(trace), ret(allow)]);
    }
    // mmap(addr, len, prot, flags, fd, off): MAP_SHARED (bit 0, in MAP_SHARED_VALIDATE
    // too) and PROT_WRITE.
    prog.extend([
        jeq(libc::SYS_mmap as u32, 0, 6),
        ld(arg(3)),
        jset(libc::MAP_SHARED as u32, 0, 3),
        ld(arg(2)),
        jset(libc::PROT_WRITE as u32, 0, 1),
        ret(trace),
        ret(allow),
    ]);
    prog.push(ret(allow));
    let fprog = libc::sock_fprog { len: prog.len() as u16, filter: prog.as_mut_ptr() };
    // SAFETY: fprog points at `prog`, alive for the call; nix has no seccomp wrapper.
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER as libc::c_ulong,
            &fprog as *const _ as libc::c_ulong,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(not(target_arch = "x86_64"))]
pub(crate) fn install_filter() -> io::Result<()> {
    Err(io::Error::other("recording is implemented for x86_64 only"))
}

struct Proc {
    tgid: i32,
    mem: Option<File>,
    /// Stepped from a seccomp stop to the call's exit: resumed with PTRACE_SYSCALL
    /// until that exit is seen (a signal may stop it in between).
    in_call: bool,
}

/// A shared writable mapping of a file.
struct Map {
    start: u64,
    len: u64,
    path: String,
    offset: u64,
}

struct Recorder {
    out: BufWriter<File>,
    data: bool,
    start: Instant,
    procs: HashMap<i32, Proc>,
    maps: HashMap<i32, Vec<Map>>,
}

/// The container path of an absolute path, as a trace names it; `None` for the root
/// itself and for the pseudo filesystems (/proc, /dev, /sys), which are not the view's.
fn rel(abs: &Path) -> Option<String> {
    let s = abs.to_str()?.trim_start_matches('/');
    let top = s.split('/').next().unwrap_or("");
    if s.is_empty() || matches!(top, "proc" | "dev" | "sys") || s.ends_with(" (deleted)") {
        return None;
    }
    Some(s.to_string())
}

/// Lexical clean-up of `.` and `..` and repeated slashes, for a parent directory that
/// is then canonicalized anyway.
fn join_clean(base: &Path, p: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in base.join(p).components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    out
}

fn names(bits: u64, table: &[(u64, &str)]) -> Vec<String> {
    table.iter().filter(|(b, _)| bits & b != 0).map(|(_, n)| n.to_string()).collect()
}

#[cfg(target_arch = "x86_64")]
/// The traced command ended (or stopped oddly) before its first stop: how, as waitpid
/// said it (its own report, with the errno, went to `container run` first).
#[derive(Debug, thiserror::Error)]
#[error("the command did not start: {0:?}")]
pub struct NotStarted(pub WaitStatus);

impl Recorder {
    fn new(out: File, header: Header) -> io::Result<Recorder> {
        let mut out = BufWriter::with_capacity(1 << 16, out);
        write_line(&mut out, &header)?;
        Ok(Recorder { out, data: header.data, start: Instant::now(), procs: HashMap::new(), maps: HashMap::new() })
    }

    fn run(&mut self, child: Pid) -> io::Result<i32> {
        // The child stops itself before exec.
        match waitpid(child, Some(WaitPidFlag::__WALL)).map_err(driver_core::sys::errno)? {
            WaitStatus::Stopped(_, _) => {}
            other => return Err(io::Error::other(NotStarted(other))),
        }
        ptrace::setoptions(
            child,
            ptrace::Options::PTRACE_O_TRACESYSGOOD
                | ptrace::Options::PTRACE_O_TRACEFORK
                | ptrace::Options::PTRACE_O_TRACEVFORK
                | ptrace::Options::PTRACE_O_TRACECLONE
                | ptrace::Options::PTRACE_O_TRACEEXEC
                | ptrace::Options::PTRACE_O_TRACESECCOMP
                | ptrace::Options::PTRACE_O_EXITKILL,
        )
        .map_err(driver_core::sys::errno)?;
        self.procs.insert(child.as_raw(), Proc { tgid: child.as_raw(), mem: None, in_call: false });
        self.start = Instant::now();
        ptrace::cont(child, None).map_err(driver_core::sys::errno)?;
        let mut status = None;
        loop {
            let ws = match waitpid(None, Some(WaitPidFlag::__WALL)) {
                Ok(ws) => ws,
                Err(nix::errno::Errno::ECHILD) => break,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(driver_core::sys::errno(e)),
            };
            match ws {
                WaitStatus::Exited(pid, code) => {
                    self.gone(pid);
                    if pid == child {
                        status = Some(code);
                        self.kill_rest();
                    }
                }
                WaitStatus::Signaled(pid, sig, _) => {
                    self.gone(pid);
                    if pid == child {
                        status = Some(128 + sig as i32);
                        self.kill_rest();
                    }
                }
                WaitStatus::PtraceSyscall(pid) => {
                    self.known(pid);
                    // A failed record is lost, not fatal: the command goes on.
                    if let Err(e) = self.syscall_stop(pid) {
                        if e.raw_os_error() != Some(libc::ESRCH) {
                            eprintln!("warning: recording pid {pid}: {e}");
                        }
                    }
                    self.resume(pid, None);
                }
                WaitStatus::PtraceEvent(pid, _, ev) => {
                    self.known(pid);
                    if ev == ptrace::Event::PTRACE_EVENT_SECCOMP as i32 {
                        // The entry of a call the filter picked: on to its exit.
                        self.procs.get_mut(&pid.as_raw()).expect("known").in_call = true;
                        let _ = ptrace::syscall(pid, None);
                        continue;
                    }
                    if ev == ptrace::Event::PTRACE_EVENT_EXEC as i32 {
                        // The old address space is gone: its mappings end here, and
                        // the memory file must be opened anew.
                        let tgid = self.procs[&pid.as_raw()].tgid;
                        self.flush_maps(tgid, None);
                        // The thread that execs takes the group leader's pid.
                        if let Some(p) = self.procs.get_mut(&pid.as_raw()) {
                            p.mem = None;
                            p.tgid = pid.as_raw();
                        }
                    }
                    self.resume(pid, None);
                }
                WaitStatus::Stopped(pid, sig) => {
                    let new = !self.procs.contains_key(&pid.as_raw());
                    self.known(pid);
                    // A new process's first stop is the tracer's, not a signal to pass.
                    let inject = if new && sig == Signal::SIGSTOP { None } else { Some(sig) };
                    self.resume(pid, inject);
                }
                _ => {}
            }
        }
        self.out.flush()?;
        Ok(status.unwrap_or(125))
    }

    /// Lets `pid` run on: to the exit of the call it is in when a seccomp stop sent it
    /// there (and that exit was not seen yet), else to the next stop the filter or an
    /// event makes.
    fn resume(&mut self, pid: Pid, sig: Option<Signal>) {
        if self.procs.get(&pid.as_raw()).is_some_and(|p| p.in_call) {
            let _ = ptrace::syscall(pid, sig);
        } else {
            let _ = ptrace::cont(pid, sig);
        }
    }

    fn known(&mut self, pid: Pid) {
        self.procs.entry(pid.as_raw()).or_insert_with(|| {
            let tgid = std::fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Tgid:").and_then(|v| v.trim().parse().ok())))
                .unwrap_or(pid.as_raw());
            Proc { tgid, mem: None, in_call: false }
        });
    }

    fn gone(&mut self, pid: Pid) {
        if let Some(p) = self.procs.remove(&pid.as_raw()) {
            if p.tgid == pid.as_raw() {
                self.flush_maps(p.tgid, None);
            }
        }
        let _ = self.out.flush();
    }

    /// The command ended: what it left running goes too.
    fn kill_rest(&mut self) {
        for pid in self.procs.keys() {
            let _ = nix::sys::signal::kill(Pid::from_raw(*pid), Signal::SIGKILL);
        }
    }

    fn emit(&mut self, pid: Pid, op: Op) -> io::Result<()> {
        let t = self.start.elapsed().as_micros() as u64;
        write_line(&mut self.out, &Record { t, pid: pid.as_raw() as u32, op })
    }

    /// Reads tracee memory (through /proc/PID/mem, kept open per process).
    fn read_mem(&mut self, pid: Pid, addr: u64, buf: &mut [u8]) -> io::Result<usize> {
        let p = self.procs.get_mut(&pid.as_raw()).ok_or_else(|| io::Error::from_raw_os_error(libc::ESRCH))?;
        if p.mem.is_none() {
            p.mem = Some(File::open(format!("/proc/{pid}/mem"))?);
        }
        p.mem.as_ref().expect("opened").read_at(buf, addr)
    }

    fn read_cstr(&mut self, pid: Pid, addr: u64) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut at = addr;
        loop {
            // Up to the page's end, so a read never crosses into an unmapped page.
            let room = 4096 - (at % 4096) as usize;
            let mut buf = vec![0u8; room];
            let n = self.read_mem(pid, at, &mut buf)?;
            if n == 0 {
                return Err(io::Error::from_raw_os_error(libc::EFAULT));
            }
            if let Some(z) = buf[..n].iter().position(|b| *b == 0) {
                out.extend_from_slice(&buf[..z]);
                return Ok(out);
            }
            out.extend_from_slice(&buf[..n]);
            at += n as u64;
            if out.len() > libc::PATH_MAX as usize * 4 {
                return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
            }
        }
    }

    fn read_path(&mut self, pid: Pid, addr: u64) -> io::Result<PathBuf> {
        use std::os::unix::ffi::OsStringExt;
        Ok(PathBuf::from(std::ffi::OsString::from_vec(self.read_cstr(pid, addr)?)))
    }

    /// The file an open descriptor names, as the container sees it.
    fn fd_path(&self, pid: Pid, fd: u64) -> Option<PathBuf> {
        let link = std::fs::read_link(format!("/proc/{pid}/fd/{}", fd as i32)).ok()?;
        link.is_absolute().then_some(link)
    }

    /// The directory a `*at` call's relative path starts from.
    fn dir_of(&self, pid: Pid, dirfd: u64) -> Option<PathBuf> {
        if dirfd as i32 == libc::AT_FDCWD {
            std::fs::read_link(format!("/proc/{pid}/cwd")).ok()
        } else {
            self.fd_path(pid, dirfd)
        }
    }

    /// The node a path names, without following a final symlink: the parent resolved
    /// (it exists after the call), the last component kept.
    fn nofollow(&mut self, pid: Pid, dirfd: u64, addr: u64) -> Option<PathBuf> {
        let p = self.read_path(pid, addr).ok()?;
        let full =
            if p.is_absolute() { join_clean(Path::new("/"), &p) } else { join_clean(&self.dir_of(pid, dirfd)?, &p) };
        let name = full.file_name()?.to_owned();
        let parent = std::fs::canonicalize(full.parent()?).ok()?;
        Some(parent.join(name))
    }

    /// The node a path names, following a final symlink as the call did.
    fn follow(&mut self, pid: Pid, dirfd: u64, addr: u64) -> Option<PathBuf> {
        let p = self.read_path(pid, addr).ok()?;
        let full = if p.is_absolute() { p } else { self.dir_of(pid, dirfd)?.join(p) };
        std::fs::canonicalize(full).ok()
    }

    /// The offset a write through `fd` started at: its position now, less what it wrote.
    fn pos_before(&self, pid: Pid, fd: u64, written: u64) -> Option<u64> {
        let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", fd as i32)).ok()?;
        let pos: u64 = info.lines().find_map(|l| l.strip_prefix("pos:").and_then(|v| v.trim().parse().ok()))?;
        pos.checked_sub(written)
    }

    /// Whether descriptor `fd` was opened with O_APPEND.
    fn appends(&self, pid: Pid, fd: u64) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", fd as i32))
            .ok()
            .and_then(|info| {
                info.lines().find_map(|l| l.strip_prefix("flags:").and_then(|v| u64::from_str_radix(v.trim(), 8).ok()))
            })
            .is_some_and(|flags| flags & libc::O_APPEND as u64 != 0)
    }

    /// A write record for `len` bytes at `offset` of the file `path` (read back from
    /// the file for their compressibility, or kept with --record-data).
    fn write_op(&self, path: String, offset: u64, len: u64, via: Option<&str>) -> Op {
        let want = if self.data { len as usize } else { (len as usize).min(SAMPLE) };
        let mut buf = vec![0u8; want];
        let got = File::open(Path::new("/").join(&path))
            .and_then(|f| {
                let mut n = 0;
                while n < buf.len() {
                    match f.read_at(&mut buf[n..], offset + n as u64)? {
                        0 => break,
                        k => n += k,
                    }
                }
                Ok(n)
            })
            .unwrap_or(0);
        buf.truncate(got);
        let (z, data) = if self.data && got as u64 == len {
            (None, Some(base64::engine::general_purpose::STANDARD.encode(&buf)))
        } else if buf.is_empty() {
            (None, None)
        } else {
            let c = zstd::bulk::compress(&buf, 1).map(|c| c.len()).unwrap_or(buf.len());
            (Some(((c as f32 / buf.len() as f32) * 1000.0).round() / 1000.0), None)
        };
        Op::Write { path, offset, len, z, data, via: via.map(str::to_string) }
    }

    /// Records the writes through `tgid`'s shared mappings that overlap
    /// `[start, start+len)` (all of them for `None`), and forgets those mappings unless
    /// `keep` (msync).
    fn flush_maps(&mut self, tgid: i32, range: Option<(u64, u64, bool)>) {
        let Some(maps) = self.maps.remove(&tgid) else { return };
        let mut kept = Vec::new();
        let mut ops = Vec::new();
        for m in maps {
            let (lo, hi, keep) = match range {
                None => (m.start, m.start + m.len, false),
                Some((s, l, keep)) => (s.max(m.start), (s + l).min(m.start + m.len), keep),
            };
            if lo >= hi {
                kept.push(m);
                continue;
            }
            let size = std::fs::metadata(Path::new("/").join(&m.path)).map(|md| md.len()).unwrap_or(0);
            let off = m.offset + (lo - m.start);
            let end = (m.offset + (hi - m.start)).min(size);
            if end > off {
                ops.push(self.write_op(m.path.clone(), off, end - off, Some("mmap")));
            }
            if keep {
                kept.push(m);
            } else {
                // What is left of the mapping on either side of the range.
                if lo > m.start {
                    kept.push(Map { start: m.start, len: lo - m.start, path: m.path.clone(), offset: m.offset });
                }
                if hi < m.start + m.len {
                    kept.push(Map {
                        start: hi,
                        len: m.start + m.len - hi,
                        path: m.path.clone(),
                        offset: m.offset + (hi - m.start),
                    });
                }
            }
        }
        if !kept.is_empty() {
            self.maps.insert(tgid, kept);
        }
        for op in ops {
            let _ = self.emit(Pid::from_raw(tgid), op);
        }
    }

    fn owner_mode(path: &Path) -> Option<(u32, u32, u32, std::fs::Metadata)> {
        let md = std::fs::symlink_metadata(path).ok()?;
        Some((md.mode() & 0o7777, md.uid(), md.gid(), md))
    }
}
