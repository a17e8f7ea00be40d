//! Running a script's ops in a mounted view with ordinary syscalls.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::Op;

fn cpath(p: &Path) -> std::ffi::CString {
    std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).expect("no NUL")
}

/// Runs one op in the view `v` with ordinary syscalls.
pub fn run_op(v: &Path, op: &Op) -> io::Result<()> {
    use nix::sys::stat::{utimensat, UtimensatFlags};
    use nix::sys::time::TimeSpec;
    let at = |p: &PathBuf| v.join(p);
    match op {
        Op::Write { path, off, data } => fs::OpenOptions::new().write(true).open(at(path))?.write_all_at(data, *off)?,
        Op::Append { path, data } => fs::OpenOptions::new().append(true).open(at(path))?.write_all(data)?,
        Op::Mmap { path, off, data } => crate::conformance::mmap_write(&at(path), *off, data)?,
        Op::Truncate { path, len } => fs::OpenOptions::new().write(true).open(at(path))?.set_len(*len)?,
        Op::PunchHole { path, off, len } => {
            let f = fs::OpenOptions::new().write(true).open(at(path))?;
            nix::fcntl::fallocate(
                f.as_fd().as_raw_fd(),
                nix::fcntl::FallocateFlags::FALLOC_FL_PUNCH_HOLE | nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE,
                *off as i64,
                *len as i64,
            )
            .map_err(driver_core::sys::errno)?;
        }
        Op::Chmod { path, mode } => fs::set_permissions(at(path), fs::Permissions::from_mode(*mode))?,
        Op::Chown { path, uid, gid } => std::os::unix::fs::lchown(at(path), Some(*uid), Some(*gid))?,
        Op::Utime { path, secs, nsecs } => {
            let t = TimeSpec::new(*secs, *nsecs);
            utimensat(None, &at(path), &t, &t, UtimensatFlags::NoFollowSymlink).map_err(driver_core::sys::errno)?
        }
        Op::SetXattr { path, name, value } => {
            driver_core::sys::set_xattr(driver_core::sys::XattrTarget::NoFollow(&cpath(&at(path))), name, value)?
        }
        Op::RemoveXattr { path, name } => {
            driver_core::sys::remove_xattr(driver_core::sys::XattrTarget::NoFollow(&cpath(&at(path))), name)?
        }
        Op::Rename { from, to } => match fs::rename(at(from), at(to)) {
            Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
                // overlayfs without redirect_dir: a directory from the image cannot be
                // renamed; mv copies it (keeping metadata and links) and deletes it.
                copy_tree(&at(from), &at(to), &mut BTreeMap::new())?;
                fs::remove_dir_all(at(from))?
            }
            r => r?,
        },
        Op::Exchange { a, b } => {
            nix::fcntl::renameat2(None, &at(a), None, &at(b), nix::fcntl::RenameFlags::RENAME_EXCHANGE)
                .map_err(driver_core::sys::errno)?
        }
        Op::Link { from, to } => fs::hard_link(at(from), at(to))?,
        Op::Unlink { path } => fs::remove_file(at(path))?,
        Op::RemoveTree { path } => fs::remove_dir_all(at(path))?,
        Op::Mkdir { path, mode } => {
            fs::create_dir(at(path))?;
            fs::set_permissions(at(path), fs::Permissions::from_mode(*mode))?
        }
        Op::Create { path, data, mode } => {
            let mut f = fs::OpenOptions::new().write(true).create(true).truncate(true).mode(*mode).open(at(path))?;
            f.write_all(data)?
        }
        Op::Symlink { path, target } => std::os::unix::fs::symlink(target, at(path))?,
        Op::Mkfifo { path } => nix::unistd::mkfifo(&at(path), nix::sys::stat::Mode::from_bits_truncate(0o644))
            .map_err(driver_core::sys::errno)?,
        Op::Subvolume { path } => {
            if driver_core::sys::fs_type(v)? == "btrfs" {
                let out = std::process::Command::new("btrfs").args(["subvolume", "create"]).arg(at(path)).output()?;
                if !out.status.success() {
                    return Err(io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_string()));
                }
            } else {
                fs::create_dir(at(path))?
            }
            // A subvolume root does not take a setgid parent's group and bit as mkdir
            // does: the plain directory is given what btrfs gives its root.
            std::os::unix::fs::lchown(at(path), Some(0), Some(0))?;
            fs::set_permissions(at(path), fs::Permissions::from_mode(0o755))?
        }
    }
    Ok(())
}

/// Copies a tree keeping type, content, owner, mode, xattrs, times and the links
/// between its own files.
fn copy_tree(from: &Path, to: &Path, links: &mut BTreeMap<(u64, u64), PathBuf>) -> io::Result<()> {
    use nix::sys::stat::{utimensat, UtimensatFlags};
    let md = fs::symlink_metadata(from)?;
    let ft = md.file_type();
    if !ft.is_dir() && md.nlink() > 1 {
        if let Some(first) = links.get(&(md.dev(), md.ino())) {
            return fs::hard_link(first, to);
        }
        links.insert((md.dev(), md.ino()), to.to_path_buf());
    }
    if ft.is_dir() {
        fs::create_dir(to)?;
        for e in fs::read_dir(from)? {
            let e = e?;
            copy_tree(&e.path(), &to.join(e.file_name()), links)?;
        }
    } else if ft.is_file() {
        fs::copy(from, to)?;
    } else if ft.is_symlink() {
        std::os::unix::fs::symlink(fs::read_link(from)?, to)?;
    } else {
        nix::unistd::mkfifo(to, nix::sys::stat::Mode::from_bits_truncate(0o644)).map_err(driver_core::sys::errno)?;
    }
    std::os::unix::fs::lchown(to, Some(md.uid()), Some(md.gid()))?;
    if !ft.is_symlink() {
        fs::set_permissions(to, fs::Permissions::from_mode(md.mode() & 0o7777))?;
    }
    let (cf, ct) = (cpath(from), cpath(to));
    for (n, val) in driver_core::sys::read_xattrs(driver_core::sys::XattrTarget::NoFollow(&cf))? {
        driver_core::sys::set_xattr(driver_core::sys::XattrTarget::NoFollow(&ct), &n, &val)?;
    }
    let t = nix::sys::time::TimeSpec::new(md.mtime(), md.mtime_nsec());
    utimensat(None, to, &t, &t, UtimensatFlags::NoFollowSymlink).map_err(driver_core::sys::errno)
}
