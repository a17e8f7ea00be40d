//! Where the bench runs: which targets can run here, the host's facts, the scratch
//! directory's checks, and the cleanup on a signal.

use std::path::Path;

use strata_scratch::FsKind;

use crate::failure::{Failure, Result};
use crate::model::{DriverKind, Host};

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
}

/// Why a target cannot be tried here, and the fix, before trying it.
pub(super) fn cannot_run(driver: DriverKind, kind: FsKind) -> Option<(String, String)> {
    let (mkfs, package) = match kind {
        FsKind::Ext4 => ("mkfs.ext4", "e2fsprogs"),
        FsKind::Xfs => ("mkfs.xfs", "xfsprogs"),
        FsKind::Btrfs => ("mkfs.btrfs", "btrfs-progs"),
    };
    if !on_path(mkfs) {
        return Some((
            format!("{mkfs} is not installed, so no {} scratch filesystem can be made for {driver}", kind.name()),
            format!("apt-get install {package}"),
        ));
    }
    None
}

fn hostname() -> String {
    nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default()
}

/// The filesystem of `path`'s nearest existing ancestor.
fn fs_of(path: &Path) -> String {
    let mut p = path.to_path_buf();
    while !p.exists() {
        if !p.pop() {
            break;
        }
    }
    strata_scratch::fs_type(&p).unwrap_or_else(|_| "unknown".into())
}

pub(super) fn host(root: &Path) -> Host {
    let uname = nix::sys::utsname::uname().ok();
    let scratch_dir = strata_scratch::scratch_parent();
    Host {
        hostname: hostname(),
        kernel: uname.as_ref().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default(),
        machine: uname.as_ref().map(|u| u.machine().to_string_lossy().into_owned()).unwrap_or_default(),
        cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        strata: env!("CARGO_PKG_VERSION").into(),
        time: driver_core::store::now_secs() as i64,
        root: root.to_path_buf(),
        root_fs: fs_of(root),
        scratch_fs: fs_of(&scratch_dir),
        scratch_dir,
    }
}

/// Before a bench: scratch left by a killed bench is removed; a tmpfs scratch dir (the
/// bench would measure RAM) and too little free space are refused.
pub(super) fn check_scratch(needed: u64) -> Result<()> {
    for line in strata_scratch::remove_stale() {
        eprintln!("strata bench: {line}");
    }
    let dir = strata_scratch::scratch_parent();
    let fs = fs_of(&dir);
    if fs == "tmpfs" {
        return Err(Failure::ScratchOnTmpfs { dir });
    }
    let free = nix::sys::statvfs::statvfs(&dir).map(|s| s.blocks_available() * s.fragment_size()).unwrap_or(0);
    if free < needed {
        return Err(Failure::ScratchTooSmall { dir, fs, free, needed });
    }
    Ok(())
}

/// On SIGINT or SIGTERM: unmount and remove every scratch filesystem, mount, loop
/// device and directory this bench made, then exit as the signal would (128 + signo).
pub(super) fn release_on_signal() -> std::io::Result<()> {
    driver_core::interrupt::on_request(|sig| {
        eprintln!("strata bench: interrupted (signal {sig}); removing its scratch filesystems");
        let n = strata_scratch::release_all();
        eprintln!("strata bench: removed {n} scratch dir(s) with their mounts and loop devices");
        std::process::exit(128 + sig);
    })
}
