//! Opening a driver folder: the kernel's features read from the folder's record or
//! probed (at the first mount), and mounts put in line with the records after a crash
//! or a reboot ([`Overlay::recover`]).

use std::fs;
use std::path::Path;
use std::sync::Arc;

use driver_core::error::{Cause, Error, Result};
use driver_core::store::{discard_tree, Store};
use driver_core::sys;
use driver_core::syscall::{Real, Syscalls};

use crate::features::{self, CopyUp, Features};
use crate::Overlay;

/// The kernel's overlay features here, and the copy-up chosen from them.
pub(crate) struct Probed {
    pub(crate) features: Features,
    /// How writable views copy up (and so which options every view is mounted with).
    pub(crate) copy_up: CopyUp,
    /// Why it is less than asked for, when it is.
    pub(crate) copy_up_why: Option<String>,
    /// Nothing was asked and the kernel has metacopy: a container's view takes it where
    /// its lowers' paths fit ([`features::metacopy_fits`]), else `copy_up`.
    pub(crate) metacopy_where_paths_fit: bool,
}

impl Probed {
    /// `features` where overlay can work (it mounts, the filesystem has d_type), with
    /// the copy-up `asked` for chosen.
    fn of(root: &Path, mut features: Features, asked: Option<&str>) -> Result<Probed> {
        // STRATA_OVERLAY_MOUNT_API=classic forces mount(2) with short links, to test
        // (and measure) the path older kernels take.
        if std::env::var("STRATA_OVERLAY_MOUNT_API").as_deref() == Ok("classic") {
            features.lowerdir_plus = false;
        }
        if !features.mounts {
            return Err(Error::new(Cause::Unsupported(format!(
                "overlayfs does not mount in {}: {}",
                root.display(),
                features.error.clone().unwrap_or_default()
            ))));
        }
        if !features.d_type {
            return Err(no_d_type(root));
        }
        let (copy_up, copy_up_why) = CopyUp::choose(&features, asked);
        let metacopy_where_paths_fit = CopyUp::metacopy_where_paths_fit(&features, asked);
        Ok(Probed { features, copy_up, copy_up_why, metacopy_where_paths_fit })
    }
}

fn no_d_type(root: &Path) -> Error {
    let fs = sys::fs_type(root).unwrap_or_default();
    Error::new(Cause::Unsupported(format!(
        "the {fs} filesystem under {} does not report file types (d_type); overlayfs needs them \
         (xfs must be made with ftype=1)",
        root.display()
    )))
}

impl Overlay {
    /// Opens (creating) the driver folder `root`; refuses where overlay cannot work.
    /// The kernel's features come from the folder's record; without one (a new
    /// folder, another kernel) they are probed at the first mount, and here only what
    /// needs no mount is checked: the filesystem reports d_type, and overlay is a
    /// filesystem this kernel has. Where it has not registered it (the module not
    /// loaded yet: a probe's mount loads it) or the user is not root (overlay would
    /// answer EPERM), the probe runs here, so that the command fails up front.
    pub(crate) fn open_dir(root: &Path, asked: Option<&str>) -> Result<Overlay> {
        fs::create_dir_all(root).map_err(|e| Error::new(e).with_path(root))?;
        let probed = match features::recorded_probe(root) {
            Some(f) => Some(Probed::of(root, f, asked)?),
            None if !nix::unistd::geteuid().is_root() || !features::overlay_registered() => {
                Some(Probed::of(root, features::probe_recorded(root), asked)?)
            }
            None if !features::has_d_type(root) => return Err(no_d_type(root)),
            None => None,
        };
        let fs = Overlay::new(root, asked, Arc::new(Real))?;
        if let Some(p) = probed {
            let _ = fs.probed.set(p);
        }
        fs.recover()?;
        Ok(fs)
    }

    /// The driver over `root` with the `features` given (chosen by a test) and its
    /// calls made through `sys`.
    #[cfg(test)]
    pub(crate) fn with(
        root: &Path,
        features: Features,
        copy_up: (CopyUp, Option<String>),
        sys: Arc<dyn Syscalls>,
    ) -> Result<Overlay> {
        let fs = Overlay::new(root, None, sys)?;
        let _ = fs.probed.set(Probed {
            features,
            copy_up: copy_up.0,
            copy_up_why: copy_up.1,
            metacopy_where_paths_fit: false,
        });
        fs.recover()?;
        Ok(fs)
    }

    pub(crate) fn new(root: &Path, asked: Option<&str>, sys: Arc<dyn Syscalls>) -> Result<Overlay> {
        for sub in ["l", "empty", "tmp"] {
            fs::create_dir_all(root.join(sub)).map_err(|e| Error::new(e).with_path(root.join(sub)))?;
        }
        let store = Arc::new(Store::open(root, Arc::new(discard_tree))?);
        Ok(Overlay {
            store,
            dir: root.to_path_buf(),
            probed: Default::default(),
            asked: asked.map(str::to_string),
            sys,
        })
    }

    /// The kernel's features and the copy-up chosen, probed (and recorded) the first
    /// time they are needed.
    pub(crate) fn probed(&self) -> Result<&Probed> {
        if let Some(p) = self.probed.get() {
            return Ok(p);
        }
        let p = Probed::of(&self.dir, features::probe_recorded(&self.dir), self.asked.as_deref())?;
        Ok(self.probed.get_or_init(|| p))
    }

    /// Puts mounts in line with the metadata after a crash or a reboot. Every command
    /// opens the driver, so this runs beside live processes: it holds the store lock,
    /// under which [`Store::acquire_mount`] mounts and counts as one step, so a mount
    /// being made is never taken for a stale one; and it drops only the temporary views
    /// of processes that are gone.
    fn recover(&self) -> Result<()> {
        let lock = self.store.lock()?;
        features::clear_stale(&self.dir);
        let tmp = self.dir.join("tmp");
        if let Ok(rd) = fs::read_dir(&tmp) {
            for e in rd.flatten() {
                let owner = e.file_name().to_str().and_then(|n| n.split('-').nth(1)).and_then(|p| p.parse().ok());
                if owner.is_some_and(sys::pid_alive) {
                    continue;
                }
                for m in sys::mounts_under(&e.path()) {
                    let _ = self.sys.unmount(&m);
                }
                let _ = fs::remove_dir(e.path());
            }
        }
        // A record that does not read is `strata check`'s to name, not a reason to
        // refuse opening the store (check could not run).
        for (_, meta) in self.store.list_raw()? {
            let Ok(mut meta) = meta else { continue };
            let merged = self.merged(&meta.id);
            let mounted = sys::is_mount_point(&merged);
            if meta.mounts > 0 && !mounted {
                meta.mounts = 0;
                self.store.put(&lock, &meta)?;
            } else if meta.mounts == 0 && mounted {
                self.sys.unmount(&merged).map_err(|e| Error::at(&meta.id, &merged, e))?;
            }
        }
        Ok(())
    }
}

/// How containers' views copy up on a kernel with `f`, `asked` (STRATA_OVERLAY_COPY_UP)
/// or not, in one line for `strata probe` and the status: by default metacopy over
/// layers whose paths fit `redirect_max` where the kernel has it.
pub fn copy_up_line(f: &Features, asked: Option<&str>) -> String {
    let (way, why) = CopyUp::choose(f, asked);
    if let Some(why) = why {
        return format!("{} ({why})", way.name());
    }
    if !CopyUp::metacopy_where_paths_fit(f, asked) {
        return way.name().to_string();
    }
    let max = features::redirect_max().map_or("unreadable".to_string(), |m| m.to_string());
    format!(
        "{} where every lower layer's longest path fits redirect_max ({max}), else {}",
        CopyUp::Metacopy.name(),
        way.name()
    )
}
