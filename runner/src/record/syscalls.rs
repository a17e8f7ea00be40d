//! What each traced system call did, read at its exit: its arguments and paths
//! resolved as the kernel did, turned into the trace's [`Op`]s.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use nix::sys::ptrace;
use nix::unistd::Pid;

use super::{join_clean, names, rel, Map, Recorder};
use crate::trace::{Mode, NodeKind, Op};
use driver_core::sys::errno;

#[cfg(target_arch = "x86_64")]
impl Recorder {
    pub(super) fn syscall_stop(&mut self, pid: Pid) -> io::Result<()> {
        // The exit of the call a seccomp stop stepped to.
        if let Some(p) = self.procs.get_mut(&pid.as_raw()) {
            p.in_call = false;
        }
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
