//! The recorder: a ptrace tracer of the command and every process it starts.
//!
//! ptrace sees every system call, whatever the binary (static ones too, where an
//! `LD_PRELOAD` shim sees nothing). The tracer runs inside the container (after
//! pivot_root), so `/proc/PID/fd/N`, `/proc/PID/cwd` and paths the command passes read
//! exactly as the command sees them. Each call stops the tracee twice (entry and exit);
//! only at the exit of a call that changes the filesystem and succeeded (its return
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

use crate::trace::{write_line, Header, Mode, NodeKind, Op, Record};

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

struct Proc {
    tgid: i32,
    mem: Option<File>,
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

fn errno(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
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
impl Recorder {
    fn new(out: File, header: Header) -> io::Result<Recorder> {
        let mut out = BufWriter::with_capacity(1 << 16, out);
        write_line(&mut out, &header)?;
        Ok(Recorder { out, data: header.data, start: Instant::now(), procs: HashMap::new(), maps: HashMap::new() })
    }

    fn run(&mut self, child: Pid) -> io::Result<i32> {
        // The child stops itself before exec.
        match waitpid(child, Some(WaitPidFlag::__WALL)).map_err(errno)? {
            WaitStatus::Stopped(_, _) => {}
            other => return Err(io::Error::other(format!("the command did not start: {other:?}"))),
        }
        ptrace::setoptions(
            child,
            ptrace::Options::PTRACE_O_TRACESYSGOOD
                | ptrace::Options::PTRACE_O_TRACEFORK
                | ptrace::Options::PTRACE_O_TRACEVFORK
                | ptrace::Options::PTRACE_O_TRACECLONE
                | ptrace::Options::PTRACE_O_TRACEEXEC
                | ptrace::Options::PTRACE_O_EXITKILL,
        )
        .map_err(errno)?;
        self.procs.insert(child.as_raw(), Proc { tgid: child.as_raw(), mem: None });
        self.start = Instant::now();
        ptrace::syscall(child, None).map_err(errno)?;
        let mut status = None;
        loop {
            let ws = match waitpid(None, Some(WaitPidFlag::__WALL)) {
                Ok(ws) => ws,
                Err(nix::errno::Errno::ECHILD) => break,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(errno(e)),
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
                    let _ = ptrace::syscall(pid, None);
                }
                WaitStatus::PtraceEvent(pid, _, ev) => {
                    self.known(pid);
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
                    let _ = ptrace::syscall(pid, None);
                }
                WaitStatus::Stopped(pid, sig) => {
                    let new = !self.procs.contains_key(&pid.as_raw());
                    self.known(pid);
                    // A new process's first stop is the tracer's, not a signal to pass.
                    let inject = if new && sig == Signal::SIGSTOP { None } else { Some(sig) };
                    let _ = ptrace::syscall(pid, inject);
                }
                _ => {}
            }
        }
        self.out.flush()?;
        Ok(status.unwrap_or(125))
    }

    fn known(&mut self, pid: Pid) {
        self.procs.entry(pid.as_raw()).or_insert_with(|| {
            let tgid = std::fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Tgid:").and_then(|v| v.trim().parse().ok())))
                .unwrap_or(pid.as_raw());
            Proc { tgid, mem: None }
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

    fn syscall_stop(&mut self, pid: Pid) -> io::Result<()> {
        let regs = ptrace::getregs(pid).map_err(errno)?;
        // At the entry of a call the kernel has put -ENOSYS in rax: nothing to do yet.
        if regs.rax as i64 == -(libc::ENOSYS as i64) {
            return Ok(());
        }
        let ret = regs.rax as i64;
        if ret < 0 {
            return Ok(());
        }
        let nr = regs.orig_rax as i64;
        let a = [regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9];
        let at = libc::AT_FDCWD as u64;
        let op = match nr {
            libc::SYS_open | libc::SYS_openat | libc::SYS_creat | libc::SYS_openat2 => {
                let flags = match nr {
                    libc::SYS_open => a[1],
                    libc::SYS_openat => a[2],
                    libc::SYS_creat => (libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC) as u64,
                    _ => {
                        // struct open_how { u64 flags; u64 mode; u64 resolve; }
                        let mut b = [0u8; 8];
                        self.read_mem(pid, a[2], &mut b)?;
                        u64::from_ne_bytes(b)
                    }
                };
                let wants = (libc::O_WRONLY | libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC) as u64;
                if flags & wants == 0 {
                    return Ok(());
                }
                let Some(abs) = self.fd_path(pid, ret as u64) else { return Ok(()) };
                let Some(path) = rel(&abs) else { return Ok(()) };
                let Some((mode, uid, gid, md)) = Self::owner_mode(&abs) else { return Ok(()) };
                // Only files: opening a fifo or a device for writing changes nothing.
                if !md.file_type().is_file() {
                    return Ok(());
                }
                let mut f = names(
                    flags,
                    &[
                        (libc::O_WRONLY as u64, "wronly"),
                        (libc::O_RDWR as u64, "rdwr"),
                        (libc::O_CREAT as u64, "creat"),
                        (libc::O_EXCL as u64, "excl"),
                        (libc::O_TRUNC as u64, "trunc"),
                        (libc::O_APPEND as u64, "append"),
                    ],
                );
                if flags & libc::O_TMPFILE as u64 == libc::O_TMPFILE as u64 {
                    f.push("tmpfile".into());
                }
                Op::Open { path, flags: f, mode: Mode(mode), uid, gid }
            }
            libc::SYS_write | libc::SYS_writev | libc::SYS_pwrite64 | libc::SYS_pwritev | libc::SYS_pwritev2 => {
                if ret == 0 {
                    return Ok(());
                }
                let Some(path) = self.fd_path(pid, a[0]).and_then(|p| rel(&p)) else { return Ok(()) };
                // On an O_APPEND descriptor (or with RWF_APPEND) Linux appends whatever
                // offset pwrite names (pwrite(2), BUGS): the bytes end at the file's end.
                let rwf_append = nr == libc::SYS_pwritev2 && a[5] & libc::RWF_APPEND as u64 != 0;
                let offset = match nr {
                    libc::SYS_pwrite64 | libc::SYS_pwritev | libc::SYS_pwritev2
                        if rwf_append || self.appends(pid, a[0]) =>
                    {
                        std::fs::metadata(Path::new("/").join(&path)).ok().and_then(|m| m.len().checked_sub(ret as u64))
                    }
                    libc::SYS_pwrite64 | libc::SYS_pwritev => Some(a[3]),
                    libc::SYS_pwritev2 if a[3] as i64 != -1 => Some(a[3]),
                    _ => self.pos_before(pid, a[0], ret as u64),
                };
                let Some(offset) = offset else { return Ok(()) };
                if !Path::new("/").join(&path).is_file() {
                    return Ok(());
                }
                self.write_op(path, offset, ret as u64, None)
            }
            libc::SYS_copy_file_range | libc::SYS_splice | libc::SYS_sendfile => {
                if ret == 0 {
                    return Ok(());
                }
                let (fd, off_ptr, via) = match nr {
                    libc::SYS_copy_file_range => (a[2], a[3], "copy_file_range"),
                    libc::SYS_splice => (a[2], a[3], "splice"),
                    _ => (a[0], 0, "sendfile"),
                };
                let Some(path) = self.fd_path(pid, fd).and_then(|p| rel(&p)) else { return Ok(()) };
                if !Path::new("/").join(&path).is_file() {
                    return Ok(());
                }
                let offset = if off_ptr != 0 {
                    // The kernel has moved the caller's offset past what it wrote.
                    let mut b = [0u8; 8];
                    self.read_mem(pid, off_ptr, &mut b)?;
                    u64::from_ne_bytes(b).checked_sub(ret as u64)
                } else {
                    self.pos_before(pid, fd, ret as u64)
                };
                let Some(offset) = offset else { return Ok(()) };
                self.write_op(path, offset, ret as u64, Some(via))
            }
            libc::SYS_truncate | libc::SYS_ftruncate => {
                let abs = if nr == libc::SYS_truncate { self.follow(pid, at, a[0]) } else { self.fd_path(pid, a[0]) };
                let Some(path) = abs.and_then(|p| rel(&p)) else { return Ok(()) };
                Op::Truncate { path, len: a[1] }
            }
            libc::SYS_fallocate => {
                let Some(path) = self.fd_path(pid, a[0]).and_then(|p| rel(&p)) else { return Ok(()) };
                let mode = names(
                    a[1],
                    &[
                        (libc::FALLOC_FL_KEEP_SIZE as u64, "keep_size"),
                        (libc::FALLOC_FL_PUNCH_HOLE as u64, "punch_hole"),
                        (libc::FALLOC_FL_COLLAPSE_RANGE as u64, "collapse_range"),
                        (libc::FALLOC_FL_ZERO_RANGE as u64, "zero_range"),
                        (libc::FALLOC_FL_INSERT_RANGE as u64, "insert_range"),
                        (libc::FALLOC_FL_UNSHARE_RANGE as u64, "unshare_range"),
                    ],
                );
                Op::Fallocate { path, mode, offset: a[2], len: a[3] }
            }
            libc::SYS_mkdir | libc::SYS_mkdirat => {
                let abs =
                    if nr == libc::SYS_mkdir { self.nofollow(pid, at, a[0]) } else { self.nofollow(pid, a[0], a[1]) };
                let Some(abs) = abs else { return Ok(()) };
                let Some(path) = rel(&abs) else { return Ok(()) };
                let Some((mode, uid, gid, _)) = Self::owner_mode(&abs) else { return Ok(()) };
                Op::Mkdir { path, mode: Mode(mode), uid, gid }
            }
            libc::SYS_rmdir | libc::SYS_unlink | libc::SYS_unlinkat => {
                let (abs, dir) = match nr {
                    libc::SYS_rmdir => (self.nofollow(pid, at, a[0]), true),
                    libc::SYS_unlink => (self.nofollow(pid, at, a[0]), false),
                    _ => (self.nofollow(pid, a[0], a[1]), a[2] & libc::AT_REMOVEDIR as u64 != 0),
                };
                let Some(path) = abs.and_then(|p| rel(&p)) else { return Ok(()) };
                if dir {
                    Op::Rmdir { path }
                } else {
                    Op::Unlink { path }
                }
            }
            libc::SYS_rename | libc::SYS_renameat | libc::SYS_renameat2 => {
                let (from, to, flags) = match nr {
                    libc::SYS_rename => (self.nofollow(pid, at, a[0]), self.nofollow(pid, at, a[1]), 0),
                    libc::SYS_renameat => (self.nofollow(pid, a[0], a[1]), self.nofollow(pid, a[2], a[3]), 0),
                    _ => (self.nofollow(pid, a[0], a[1]), self.nofollow(pid, a[2], a[3]), a[4]),
                };
                let (Some(from), Some(to)) = (from.and_then(|p| rel(&p)), to.and_then(|p| rel(&p))) else {
                    return Ok(());
                };
                let flags = names(
                    flags,
                    &[
                        (libc::RENAME_NOREPLACE as u64, "noreplace"),
                        (libc::RENAME_EXCHANGE as u64, "exchange"),
                        (libc::RENAME_WHITEOUT as u64, "whiteout"),
                    ],
                );
                Op::Rename { from, to, flags }
            }
            libc::SYS_link | libc::SYS_linkat => {
                let (from, to) = if nr == libc::SYS_link {
                    (self.nofollow(pid, at, a[0]), self.nofollow(pid, at, a[1]))
                } else if a[4] & libc::AT_EMPTY_PATH as u64 != 0 {
                    (self.fd_path(pid, a[0]), self.nofollow(pid, a[2], a[3]))
                } else if a[4] & libc::AT_SYMLINK_FOLLOW as u64 != 0 {
                    (self.follow(pid, a[0], a[1]), self.nofollow(pid, a[2], a[3]))
                } else {
                    (self.nofollow(pid, a[0], a[1]), self.nofollow(pid, a[2], a[3]))
                };
                let Some(to_abs) = to else { return Ok(()) };
                let Some(to) = rel(&to_abs) else { return Ok(()) };
                match from.and_then(|p| rel(&p)) {
                    Some(from) => Op::Link { from, to },
                    // An O_TMPFILE file (or one unlinked meanwhile) given a name: it
                    // appears with its content, as a file made and written.
                    None => return self.materialize(pid, &to_abs, to),
                }
            }
            libc::SYS_symlink | libc::SYS_symlinkat => {
                let (target, abs) = if nr == libc::SYS_symlink {
                    (a[0], self.nofollow(pid, at, a[1]))
                } else {
                    (a[0], self.nofollow(pid, a[1], a[2]))
                };
                let Some(abs) = abs else { return Ok(()) };
                let Some(path) = rel(&abs) else { return Ok(()) };
                let target = String::from_utf8_lossy(&self.read_cstr(pid, target)?).into_owned();
                let Some((_, uid, gid, _)) = Self::owner_mode(&abs) else { return Ok(()) };
                Op::Symlink { target, path, uid, gid }
            }
            libc::SYS_mknod | libc::SYS_mknodat => {
                let abs =
                    if nr == libc::SYS_mknod { self.nofollow(pid, at, a[0]) } else { self.nofollow(pid, a[0], a[1]) };
                let Some(abs) = abs else { return Ok(()) };
                let Some(path) = rel(&abs) else { return Ok(()) };
                let Some((mode, uid, gid, md)) = Self::owner_mode(&abs) else { return Ok(()) };
                use std::os::unix::fs::FileTypeExt;
                let ft = md.file_type();
                let kind = if ft.is_fifo() {
                    NodeKind::Fifo
                } else if ft.is_char_device() {
                    NodeKind::Char
                } else if ft.is_block_device() {
                    NodeKind::Block
                } else if ft.is_socket() {
                    NodeKind::Socket
                } else {
                    NodeKind::File
                };
                Op::Mknod { path, kind, mode: Mode(mode), rdev: md.rdev(), uid, gid }
            }
            libc::SYS_bind => {
                // A unix socket bound to a path makes a socket node.
                let mut sa = vec![0u8; a[2].min(110) as usize];
                let n = self.read_mem(pid, a[1], &mut sa)?;
                if n < 3 || u16::from_ne_bytes([sa[0], sa[1]]) != libc::AF_UNIX as u16 || sa[2] == 0 {
                    return Ok(());
                }
                let name: Vec<u8> = sa[2..n].iter().copied().take_while(|b| *b != 0).collect();
                let p = PathBuf::from(std::ffi::OsString::from(String::from_utf8_lossy(&name).into_owned()));
                let full = if p.is_absolute() {
                    join_clean(Path::new("/"), &p)
                } else {
                    let Some(cwd) = self.dir_of(pid, at) else { return Ok(()) };
                    join_clean(&cwd, &p)
                };
                let Some(parent) = full.parent().and_then(|d| std::fs::canonicalize(d).ok()) else { return Ok(()) };
                let Some(file) = full.file_name() else { return Ok(()) };
                let abs = parent.join(file);
                let Some(path) = rel(&abs) else { return Ok(()) };
                let Some((mode, uid, gid, md)) = Self::owner_mode(&abs) else { return Ok(()) };
                Op::Mknod { path, kind: NodeKind::Socket, mode: Mode(mode), rdev: md.rdev(), uid, gid }
            }
            libc::SYS_chmod | libc::SYS_fchmod | libc::SYS_fchmodat | 452 => {
                let abs = match nr {
                    libc::SYS_chmod => self.follow(pid, at, a[0]),
                    libc::SYS_fchmod => self.fd_path(pid, a[0]),
                    // fchmodat2 (452, Linux 6.6) takes AT_SYMLINK_NOFOLLOW.
                    452 if a[3] & libc::AT_SYMLINK_NOFOLLOW as u64 != 0 => self.nofollow(pid, a[0], a[1]),
                    _ => self.follow(pid, a[0], a[1]),
                };
                let Some(abs) = abs else { return Ok(()) };
                let Some(path) = rel(&abs) else { return Ok(()) };
                let Some((mode, ..)) = Self::owner_mode(&abs) else { return Ok(()) };
                Op::Chmod { path, mode: Mode(mode) }
            }
            libc::SYS_chown | libc::SYS_lchown | libc::SYS_fchown | libc::SYS_fchownat => {
                let abs = match nr {
                    libc::SYS_chown => self.follow(pid, at, a[0]),
                    libc::SYS_lchown => self.nofollow(pid, at, a[0]),
                    libc::SYS_fchown => self.fd_path(pid, a[0]),
                    _ => self.at_target(pid, a[0], a[1], a[4]),
                };
                let Some(abs) = abs else { return Ok(()) };
                let Some(path) = rel(&abs) else { return Ok(()) };
                let Some((_, uid, gid, _)) = Self::owner_mode(&abs) else { return Ok(()) };
                Op::Chown { path, uid, gid }
            }
            libc::SYS_utime | libc::SYS_utimes | libc::SYS_futimesat | libc::SYS_utimensat => {
                let abs = match nr {
                    libc::SYS_utime | libc::SYS_utimes => self.follow(pid, at, a[0]),
                    libc::SYS_futimesat => self.follow(pid, a[0], a[1]),
                    // utimensat(fd, NULL, ...) acts on fd itself.
                    _ if a[1] == 0 => self.fd_path(pid, a[0]),
                    _ => self.at_target(pid, a[0], a[1], a[3]),
                };
                let Some(abs) = abs else { return Ok(()) };
                let Some(path) = rel(&abs) else { return Ok(()) };
                let Ok(md) = std::fs::symlink_metadata(&abs) else { return Ok(()) };
                Op::Utimes { path, atime: [md.atime(), md.atime_nsec()], mtime: [md.mtime(), md.mtime_nsec()] }
            }
            libc::SYS_setxattr | libc::SYS_lsetxattr | libc::SYS_fsetxattr => {
                let abs = match nr {
                    libc::SYS_setxattr => self.follow(pid, at, a[0]),
                    libc::SYS_lsetxattr => self.nofollow(pid, at, a[0]),
                    _ => self.fd_path(pid, a[0]),
                };
                let Some(path) = abs.and_then(|p| rel(&p)) else { return Ok(()) };
                let name = String::from_utf8_lossy(&self.read_cstr(pid, a[1])?).into_owned();
                let mut value = vec![0u8; a[3].min(1 << 16) as usize];
                let n = if value.is_empty() { 0 } else { self.read_mem(pid, a[2], &mut value)? };
                value.truncate(n);
                Op::Setxattr { path, name, value: base64::engine::general_purpose::STANDARD.encode(&value) }
            }
            libc::SYS_removexattr | libc::SYS_lremovexattr | libc::SYS_fremovexattr => {
                let abs = match nr {
                    libc::SYS_removexattr => self.follow(pid, at, a[0]),
                    libc::SYS_lremovexattr => self.nofollow(pid, at, a[0]),
                    _ => self.fd_path(pid, a[0]),
                };
                let Some(path) = abs.and_then(|p| rel(&p)) else { return Ok(()) };
                let name = String::from_utf8_lossy(&self.read_cstr(pid, a[1])?).into_owned();
                Op::Removexattr { path, name }
            }
            libc::SYS_fsync | libc::SYS_fdatasync => {
                let Some(path) = self.fd_path(pid, a[0]).and_then(|p| rel(&p)) else { return Ok(()) };
                Op::Fsync { path, data_only: nr == libc::SYS_fdatasync }
            }
            libc::SYS_sync_file_range => {
                let Some(path) = self.fd_path(pid, a[0]).and_then(|p| rel(&p)) else { return Ok(()) };
                Op::SyncFileRange { path, offset: a[1], len: a[2] }
            }
            libc::SYS_syncfs => {
                if self.fd_path(pid, a[0]).and_then(|p| rel(&p)).is_none() {
                    return Ok(());
                }
                Op::Sync
            }
            libc::SYS_sync => Op::Sync,
            libc::SYS_mmap => {
                let (prot, flags, fd) = (a[2] as i32, a[3] as i32, a[4] as i32);
                let shared = flags & libc::MAP_TYPE == libc::MAP_SHARED || flags & libc::MAP_TYPE == 0x03;
                if !shared || prot & libc::PROT_WRITE == 0 || fd < 0 {
                    return Ok(());
                }
                let Some(path) = self.fd_path(pid, fd as u64).and_then(|p| rel(&p)) else { return Ok(()) };
                let tgid = self.procs[&pid.as_raw()].tgid;
                self.maps.entry(tgid).or_default().push(Map { start: ret as u64, len: a[1], path, offset: a[5] });
                return Ok(());
            }
            libc::SYS_munmap => {
                let tgid = self.procs[&pid.as_raw()].tgid;
                self.flush_maps(tgid, Some((a[0], a[1], false)));
                return Ok(());
            }
            libc::SYS_mremap => {
                // The old range ends (recorded as written); a moved or grown shared
                // mapping of a file is not followed further (docs/trace.md).
                let tgid = self.procs[&pid.as_raw()].tgid;
                self.flush_maps(tgid, Some((a[0], a[1], false)));
                return Ok(());
            }
            libc::SYS_msync => {
                let tgid = self.procs[&pid.as_raw()].tgid;
                let paths: Vec<String> = self
                    .maps
                    .get(&tgid)
                    .map(|ms| {
                        ms.iter()
                            .filter(|m| m.start < a[0] + a[1] && a[0] < m.start + m.len)
                            .map(|m| m.path.clone())
                            .collect()
                    })
                    .unwrap_or_default();
                self.flush_maps(tgid, Some((a[0], a[1], true)));
                if a[2] & libc::MS_SYNC as u64 != 0 {
                    for path in paths {
                        self.emit(pid, Op::Fsync { path, data_only: true })?;
                    }
                }
                return Ok(());
            }
            _ => return Ok(()),
        };
        self.emit(pid, op)
    }

    /// The node of a `*at` call that takes AT_SYMLINK_NOFOLLOW and AT_EMPTY_PATH.
    fn at_target(&mut self, pid: Pid, dirfd: u64, addr: u64, flags: u64) -> Option<PathBuf> {
        if flags & libc::AT_EMPTY_PATH as u64 != 0 && self.read_cstr(pid, addr).ok()?.is_empty() {
            return self.fd_path(pid, dirfd);
        }
        if flags & libc::AT_SYMLINK_NOFOLLOW as u64 != 0 {
            self.nofollow(pid, dirfd, addr)
        } else {
            self.follow(pid, dirfd, addr)
        }
    }

    /// A file that appeared by linking an anonymous one: made, written, given its mode.
    fn materialize(&mut self, pid: Pid, abs: &Path, path: String) -> io::Result<()> {
        let Some((mode, uid, gid, md)) = Self::owner_mode(abs) else { return Ok(()) };
        let flags = vec!["wronly".to_string(), "creat".to_string()];
        self.emit(pid, Op::Open { path: path.clone(), flags, mode: Mode(mode), uid, gid })?;
        if md.len() > 0 {
            let w = self.write_op(path, 0, md.len(), Some("tmpfile"));
            self.emit(pid, w)?;
        }
        Ok(())
    }
}
