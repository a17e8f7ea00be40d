//! Opening a driver by name, and `auto`'s choice.

use std::path::Path;

use driver_core::{Cause, Driver, Error};

/// Opens driver `name` in its own subfolder of `root`.
pub fn open(name: &str, root: &Path) -> Result<Box<dyn Driver>, Error> {
    match name {
        "vfs" => Ok(Box::new(driver_vfs::VfsDriver::new(&root.join("vfs"))?)),
        "overlay" => Ok(Box::new(driver_overlay::OverlayDriver::new(&root.join("overlay"))?)),
        "btrfs" => Ok(Box::new(driver_btrfs::BtrfsDriver::new(&root.join("btrfs"))?)),
        "auto" => {
            let (chosen, why) = choose(root);
            // Say which and why when the choice is first made (its folder is new).
            if !root.join(chosen).exists() {
                eprintln!("strata: --driver auto chose {chosen}: {why}");
            }
            open(chosen, root)
        }
        other => Err(Error::new(Cause::Unsupported(format!("driver {other:?} (choose overlay, vfs, btrfs or auto)")))),
    }
}

/// Opens a driver and returns its folder too (image records live there).
pub fn open_with_dir(name: &str, root: &Path) -> Result<(Box<dyn Driver>, std::path::PathBuf), Error> {
    let driver = open(name, root)?;
    let dir = root.join(driver.name());
    Ok((driver, dir))
}

/// `auto`: overlay when it works here, else btrfs when the root is on btrfs, else vfs.
pub fn choose(root: &Path) -> (&'static str, String) {
    let _ = std::fs::create_dir_all(root);
    let f = driver_overlay::features::probe(root);
    let fs = driver_core::sys::fs_type(root).unwrap_or_else(|_| "unknown".into());
    if f.mounts && f.d_type {
        return ("overlay", format!("overlayfs mounts on this {fs} filesystem, which has d_type"));
    }
    let why_not = f.error.clone().unwrap_or_else(|| format!("{fs} has no d_type"));
    if fs == "btrfs" {
        return ("btrfs", format!("overlay cannot run here ({why_not}) and the root is on btrfs"));
    }
    ("vfs", format!("overlay cannot run here ({why_not}) and the root is not on btrfs"))
}
