//! Opening a driver by name, and `auto`'s choice.

use std::path::Path;

use driver_core::{Cause, Driver, Error, ReservedXattrs};

/// The drivers strata has, by name.
const DRIVERS: [&str; 3] = ["overlay", "vfs", "btrfs"];

/// The file in a root that names the driver the root was made with. Docker and podman
/// keep the driver a root was made with; without this, `auto` decided again on every
/// command, so a store made as non-root (auto chose vfs) was invisible to root on the
/// same `--root` (auto chose overlay).
const RECORD: &str = "driver";

/// Opens driver `name` in its own subfolder of `root`. The first command on a root
/// records the driver it used; later `auto` uses that one, and an explicit driver that
/// differs from it is an error naming both.
pub fn open(name: &str, root: &Path) -> Result<Box<dyn Driver>, Error> {
    if name != "auto" && !DRIVERS.contains(&name) {
        return Err(Error::new(Cause::Unsupported(format!("driver {name:?} (choose overlay, vfs, btrfs or auto)"))));
    }
    let chosen = match (recorded(root)?, name) {
        (Some(held), "auto") => held,
        (Some(held), asked) if held != asked => {
            let why = format!(
                "{} holds {} {held} store; --driver {asked} cannot use it (use --driver {held} or auto, or another --root)",
                root.display(),
                article(&held)
            );
            return Err(Error::new(Cause::Refused(why)));
        }
        (Some(held), _) => held,
        (None, "auto") => {
            let (chosen, why) = choose(root);
            eprintln!("strata: --driver auto chose {chosen}: {why}");
            record(root, chosen)?
        }
        (None, asked) => record(root, asked)?,
    };
    open_named(&chosen, root)
}

/// `an overlay`, `a vfs`, `a btrfs`: the article for a driver's name.
fn article(driver: &str) -> &'static str {
    if driver.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

/// The folder driver `name` (or, for `auto`, the driver `root` was made with) keeps
/// its store in, found without opening it (`strata check` looks at what a killed
/// process left there before the open discards it). `None` when `auto` has no record.
pub fn dir_of(name: &str, root: &Path) -> Option<std::path::PathBuf> {
    match name {
        "auto" => recorded(root).ok().flatten().map(|held| root.join(held)),
        n if DRIVERS.contains(&n) => Some(root.join(n)),
        _ => None,
    }
}

/// The xattr namespaces some driver of the set keeps its bookkeeping in (overlayfs's;
/// vfs and btrfs keep none): every driver refuses them, so that a layer one driver
/// takes or makes, every other takes too (see `driver_core::reserved`).
pub fn reserved_xattrs() -> ReservedXattrs {
    driver_overlay::whiteout::reserved_xattrs()
}

fn open_named(name: &str, root: &Path) -> Result<Box<dyn Driver>, Error> {
    let set = reserved_xattrs();
    match name {
        "vfs" => Ok(Box::new(driver_vfs::VfsDriver::new(&root.join("vfs"))?.reserving(&set))),
        "overlay" => Ok(Box::new(driver_overlay::OverlayDriver::new(&root.join("overlay"))?.reserving(&set))),
        "btrfs" => Ok(Box::new(driver_btrfs::BtrfsDriver::new(&root.join("btrfs"))?.reserving(&set))),
        other => Err(Error::new(Cause::Corrupt(format!("{}: unknown driver {other:?}", root.join(RECORD).display())))),
    }
}

/// The driver `root` holds: its record, or for a root made before records were kept,
/// its one driver folder (none for a root with several: the command's driver is then
/// recorded, see [`open`]).
fn recorded(root: &Path) -> Result<Option<String>, Error> {
    let path = root.join(RECORD);
    match std::fs::read_to_string(&path) {
        Ok(s) => {
            let name = s.trim();
            if !DRIVERS.contains(&name) {
                return Err(Error::new(Cause::Corrupt(format!("{}: unknown driver {name:?}", path.display()))));
            }
            Ok(Some(name.to_string()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let present: Vec<&str> = DRIVERS.iter().copied().filter(|d| root.join(d).is_dir()).collect();
            match present.as_slice() {
                [only] => Ok(Some(record(root, only)?)),
                _ => Ok(None),
            }
        }
        Err(e) => Err(Error::new(e).with_path(&path)),
    }
}

/// Records `name` as the root's driver unless another process recorded one first (the
/// record is published with link(2), which never replaces); returns the recorded one.
fn record(root: &Path, name: &str) -> Result<String, Error> {
    let io_err = |e: std::io::Error| Error::new(e).with_path(root);
    std::fs::create_dir_all(root).map_err(io_err)?;
    let tmp = tempfile::NamedTempFile::new_in(root).map_err(io_err)?;
    std::fs::write(tmp.path(), format!("{name}\n")).map_err(io_err)?;
    tmp.as_file().sync_all().map_err(io_err)?;
    match std::fs::hard_link(tmp.path(), root.join(RECORD)) {
        Ok(()) => {
            std::fs::File::open(root).and_then(|d| d.sync_all()).map_err(io_err)?;
            Ok(name.to_string())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            recorded(root)?.ok_or_else(|| Error::new(Cause::Corrupt(format!("{}: empty", root.join(RECORD).display()))))
        }
        Err(e) => Err(io_err(e)),
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
    // Where overlay ran before, its record answers without mounting.
    let overlay_dir = root.join("overlay");
    let f = if overlay_dir.is_dir() {
        driver_overlay::features::probe_recorded(&overlay_dir)
    } else {
        driver_overlay::features::probe(root)
    };
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
