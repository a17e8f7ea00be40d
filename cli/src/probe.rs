//! `strata probe`: what this host offers the drivers, and for each driver whether it can
//! run here — or why not and what to do about it. Every fact is found by trying (a
//! mount, an ioctl, a readdir), not by reading version numbers.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::outln;

#[derive(Debug, Serialize)]
pub struct Probe {
    pub kernel: String,
    pub root: PathBuf,
    /// The filesystem the root is on (of its nearest existing ancestor).
    pub root_fs: String,
    pub d_type: bool,
    pub reflink: bool,
    pub running_as_root: bool,
    pub overlay: OverlayFacts,
    pub btrfs: BtrfsFacts,
    pub loop_devices: bool,
    pub drivers: Vec<DriverVerdict>,
}

#[derive(Debug, Serialize)]
pub struct OverlayFacts {
    pub mounts: bool,
    pub metacopy: bool,
    pub redirect_dir: bool,
    pub index: bool,
    pub volatile: bool,
    pub userxattr: bool,
    pub lowerdir_plus: bool,
    /// How containers copy up here (STRATA_OVERLAY_COPY_UP included), in one line.
    pub copy_up: String,
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct BtrfsFacts {
    /// The kernel knows btrfs (listed in /proc/filesystems, or a module to load).
    pub kernel: bool,
    /// mkfs.btrfs is installed (to make a btrfs filesystem on a disk or loop device).
    pub mkfs: bool,
    /// The root itself is on btrfs.
    pub root_on_btrfs: bool,
}

#[derive(Debug, Serialize)]
pub struct DriverVerdict {
    pub driver: String,
    pub can_run: bool,
    /// Why it can, or why not.
    pub why: String,
    /// What to do to make it run here (`null` in JSON when it runs).
    pub fix: Option<String>,
}

/// The nearest existing ancestor of `path` (the root may not exist yet).
fn existing(path: &Path) -> PathBuf {
    let mut p = path.to_path_buf();
    while !p.exists() {
        match p.parent() {
            Some(parent) => p = parent.to_path_buf(),
            None => return PathBuf::from("/"),
        }
    }
    p
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
}

fn btrfs_in_kernel(release: &str) -> bool {
    let listed = std::fs::read_to_string("/proc/filesystems").map(|s| s.contains("\tbtrfs")).unwrap_or(false);
    let module = ["kernel/fs/btrfs/btrfs.ko", "kernel/fs/btrfs/btrfs.ko.xz", "kernel/fs/btrfs/btrfs.ko.zst"]
        .iter()
        .any(|m| Path::new("/lib/modules").join(release).join(m).exists());
    listed || module
}

pub fn probe(root: &Path) -> Probe {
    let release = nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default();
    let at = existing(root);
    let root_fs = driver_core::sys::fs_type(&at).unwrap_or_else(|_| "unknown".into());
    let running_as_root = nix::unistd::geteuid().is_root();
    let f = driver_overlay::features::probe(&at);
    let overlay = OverlayFacts {
        mounts: f.mounts,
        metacopy: f.metacopy,
        redirect_dir: f.redirect_dir,
        index: f.index,
        volatile: f.volatile,
        userxattr: f.userxattr,
        lowerdir_plus: f.lowerdir_plus,
        copy_up: driver_overlay::copy_up_line(&f, std::env::var("STRATA_OVERLAY_COPY_UP").ok().as_deref()),
        error: f.error.clone(),
    };
    let btrfs = BtrfsFacts {
        kernel: btrfs_in_kernel(&release),
        mkfs: on_path("mkfs.btrfs"),
        root_on_btrfs: root_fs == "btrfs",
    };
    let loop_devices = Path::new("/dev/loop-control").exists();
    let reflink = driver_vfs::copy::reflink_works(&at);

    let mut drivers = Vec::new();
    drivers.push(if f.mounts && f.d_type {
        DriverVerdict {
            driver: "overlay".into(),
            can_run: true,
            why: format!("overlayfs mounts on this {root_fs} filesystem, which has d_type"),
            fix: None,
        }
    } else if !f.d_type && f.error.is_none() {
        DriverVerdict {
            driver: "overlay".into(),
            can_run: false,
            why: format!("the {root_fs} filesystem under {} has no d_type (xfs made with ftype=0?)", at.display()),
            fix: Some("put --root on a filesystem with d_type: ext4, or xfs made with `mkfs.xfs -n ftype=1`".into()),
        }
    } else {
        let why = f.error.clone().unwrap_or_else(|| "overlayfs does not mount here".into());
        let fix = if running_as_root {
            "load the overlay module (`modprobe overlay`), or use vfs".to_string()
        } else {
            "run as root (overlay mounts need CAP_SYS_ADMIN), or use vfs".to_string()
        };
        DriverVerdict { driver: "overlay".into(), can_run: false, why, fix: Some(fix) }
    });
    drivers.push(if btrfs.root_on_btrfs && running_as_root {
        DriverVerdict {
            driver: "btrfs".into(),
            can_run: true,
            why: "the root is on btrfs: layers are subvolumes and snapshots".into(),
            fix: None,
        }
    } else if btrfs.root_on_btrfs {
        DriverVerdict {
            driver: "btrfs".into(),
            can_run: false,
            why: "making and deleting subvolumes needs root".into(),
            fix: Some("run as root".into()),
        }
    } else {
        let fix = match (btrfs.kernel, btrfs.mkfs) {
            (true, true) => format!(
                "make a btrfs filesystem (`mkfs.btrfs` on a disk or a loop device), mount it and point --root there; \
                 `strata bench` does this on a loop device for you{}",
                if loop_devices { "" } else { " (it needs /dev/loop-control)" }
            ),
            (true, false) => "install btrfs-progs (Debian: apt-get install btrfs-progs), then make and mount a \
                              btrfs filesystem for --root"
                .into(),
            (false, _) => "this kernel has no btrfs: use overlay or vfs".into(),
        };
        DriverVerdict {
            driver: "btrfs".into(),
            can_run: false,
            why: format!("the root is on {root_fs}, not btrfs"),
            fix: Some(fix),
        }
    });
    drivers.push(DriverVerdict {
        driver: "vfs".into(),
        can_run: true,
        why: if reflink {
            format!("vfs runs on any filesystem; this {root_fs} shares extents (reflink), so its copies are cheap")
        } else {
            format!("vfs runs on any filesystem; this {root_fs} has no reflink, so every layer is a full copy")
        },
        fix: None,
    });
    Probe {
        kernel: release,
        root: root.to_path_buf(),
        root_fs,
        d_type: f.d_type,
        reflink,
        running_as_root,
        overlay,
        btrfs,
        loop_devices,
        drivers,
    }
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

pub fn print(p: &Probe) -> Result<(), crate::error::Error> {
    outln!("kernel           {}", p.kernel)?;
    outln!("root             {} ({})", p.root.display(), p.root_fs)?;
    outln!("  d_type         {}", yes(p.d_type))?;
    outln!("  reflink        {}", yes(p.reflink))?;
    outln!("running as root  {}", yes(p.running_as_root))?;
    let o = &p.overlay;
    if o.mounts {
        outln!(
            "overlay          mounts; metacopy {}, redirect_dir {}, index {}, volatile {}, userxattr {}, lowerdir+ {}",
            yes(o.metacopy),
            yes(o.redirect_dir),
            yes(o.index),
            yes(o.volatile),
            yes(o.userxattr),
            yes(o.lowerdir_plus)
        )?;
        outln!("  copy-up        {}", o.copy_up)?;
    } else {
        outln!("overlay          does not mount: {}", o.error.as_deref().unwrap_or("unknown reason"))?;
    }
    outln!(
        "btrfs            kernel {}, mkfs.btrfs {}, root on btrfs {}",
        yes(p.btrfs.kernel),
        yes(p.btrfs.mkfs),
        yes(p.btrfs.root_on_btrfs)
    )?;
    outln!("loop devices     {}", yes(p.loop_devices))?;
    outln!()?;
    for d in &p.drivers {
        if d.can_run {
            outln!("{:<8} can run: {}", d.driver, d.why)?;
        } else {
            outln!("{:<8} cannot run: {}; to fix: {}", d.driver, d.why, d.fix.as_deref().unwrap_or("-"))?;
        }
    }
    Ok(())
}
