//! Opening a driver by name, and `auto`'s choice.

use std::path::Path;

use driver_core::{Cause, Driver, Error};

/// Opens driver `name` in its own subfolder of `root`.
pub fn open(name: &str, root: &Path) -> Result<Box<dyn Driver>, Error> {
    match name {
        "vfs" => Ok(Box::new(driver_vfs::VfsDriver::new(&root.join("vfs"))?)),
        "auto" => {
            let (chosen, why) = choose(root);
            eprintln!("strata: --driver auto chose {chosen}: {why}");
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
pub fn choose(_root: &Path) -> (&'static str, String) {
    ("vfs", "overlay and btrfs drivers are not available in this build".into())
}
