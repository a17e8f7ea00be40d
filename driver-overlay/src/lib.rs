//! The `overlay` driver: layers as overlayfs layers.
//!
//! ```text
//! <dir>/layers/<id>/diff     what this layer changed (a whiteout is a 0/0 char device,
//!                            an opaque directory carries trusted.overlay.opaque=y)
//! <dir>/layers/<id>/work     overlayfs's work directory (writable layers)
//! <dir>/layers/<id>/merged   where the layer's view is mounted
//! <dir>/l/<link>             short symlink to a layer's diff (classic mounts only)
//! <dir>/empty                an empty lower, for views with no other lower
//! <dir>/tmp/                 private read-only mounts of a parent's view (diff, apply)
//! ```
//!
//! * **apply** extracts straight into the layer's own `diff` (never a copy of the
//!   parent), so the layers of an image are independent and are extracted in parallel,
//!   then committed in order. Directories the tar did not describe take their
//!   metadata from the lower layers at commit.
//! * **mount** stacks the diffs: lowers (own diff first for a committed layer's
//!   read-only view), plus upper and work for a writable one. See [`mount`] for how
//!   hundreds of layers fit.
//! * **diff** walks only the layer's own `diff`, looking at the parent's view (a
//!   private read-only mount) only where something changed: its cost follows the
//!   number of changes, not the image's size.
//! * Mounts are made with `index=off` and `redirect_dir=on` where the kernel has it
//!   (probed once and recorded, [`features`]): a lower directory renames in place
//!   instead of EXDEV (which makes `mv` copy the tree). A container's view adds
//!   `metacopy=on` where the kernel takes the pair and every layer below it recorded
//!   (at apply) a longest path that fits the overlay module's `redirect_max` with its
//!   leading '/' ([`features::metacopy_fits`] says why that suffices): a chmod of a
//!   lower file then copies up its metadata only, and no `ln` of a lower file can
//!   meet EXDEV. The upper directory then no longer says what changed (a renamed
//!   directory is a redirect xattr, a chmod'd file an empty metacopy stub), and moby
//!   falls back to its naive diff for exactly that reason; here the diff of such a
//!   layer reads the entries from the layer's view where the upper says something
//!   changed ([`copyup`]). `STRATA_OVERLAY_COPY_UP=full|redirect_dir|metacopy` forces a
//!   way (full: both `off`, and the diff walks the upper alone). Each writable layer
//!   records in its metadata (`copy_up`, and `copy_up_why` when it is less than
//!   metacopy by default) which way its view was mounted, and its diff follows that
//!   record.

pub mod copyup;
pub mod features;
mod lower;
pub mod mount;
pub mod whiteout;

use std::fs;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use driver_core::driver::Change;
use driver_core::error::{Cause, Error, Result};
use driver_core::lifecycle::{Applied, LayerDiff, LayerFs, LayerInput, Layered, Making};
use driver_core::store::{discard_tree, LayerMeta, Staging, Store};
use driver_core::sys::{self, XattrTarget};
use driver_core::syscall::{Real, Syscalls};
use driver_core::{ReservedXattrs, Usage};
use sha2::Digest;
use strata_archive::apply::{apply_layer, ApplyOptions};
use strata_archive::diff::{walk_diff, write_tar, LayerKind, NaiveDiff};

use crate::features::{CopyUp, Features};
use crate::lower::{Found, LowerDirs};
use crate::mount::OverlayMount;
use crate::whiteout::{is_whiteout, OverlayWhiteouts};

/// The overlay driver.
pub type OverlayDriver = Layered<Overlay>;

/// The xattr namespace overlayfs keeps its bookkeeping in here ([`Features::xattr_prefix`]:
/// `trusted.`; rootless `userxattr` mounts would use `user.`).
const XATTR_PREFIX: &str = features::TRUSTED_PREFIX;

/// The overlay driver over `root` whose writable views copy up as `copy_up`
/// (whatever STRATA_OVERLAY_COPY_UP says); refused where the kernel lacks it.
pub fn open_copying_up(root: &Path, copy_up: CopyUp) -> Result<OverlayDriver> {
    let asked = match copy_up {
        CopyUp::Full => "full",
        CopyUp::Redirect => "redirect_dir",
        CopyUp::Metacopy => "metacopy",
    };
    let fs = Overlay::open_dir(root, Some(asked))?;
    let probed = fs.probed()?;
    if probed.copy_up != copy_up {
        return Err(Error::new(Cause::Unsupported(format!(
            "overlay cannot copy up as {}: {}",
            copy_up.name(),
            probed.copy_up_why.clone().unwrap_or_default()
        ))));
    }
    Ok(Layered::from_parts(fs.store.clone(), fs))
}

/// What overlay does its own way: upper directories, whiteouts recorded, stacked mounts.
pub struct Overlay {
    store: Arc<Store>,
    dir: PathBuf,
    /// What the kernel offers and how views copy up: from the folder's record, else
    /// probed at the first mount (an `image unpack` mounts nothing, and so pays for no
    /// probe: [`Overlay::probed`]).
    probed: std::sync::OnceLock<Probed>,
    /// The copy-up asked for (STRATA_OVERLAY_COPY_UP, or [`open_copying_up`]'s).
    asked: Option<String>,
    /// Where mounts, whiteout devices and opaque xattrs are made ([`Real`] but in unit
    /// tests).
    sys: Arc<dyn Syscalls>,
}

/// The kernel's overlay features here, and the copy-up chosen from them.
struct Probed {
    features: Features,
    /// How writable views copy up (and so which options every view is mounted with).
    copy_up: CopyUp,
    /// Why it is less than asked for, when it is.
    copy_up_why: Option<String>,
    /// Nothing was asked and the kernel has metacopy: a container's view takes it where
    /// its lowers' paths fit ([`features::metacopy_fits`]), else `copy_up`.
    metacopy_where_paths_fit: bool,
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

/// A short, stable link name for a layer (10 characters of base32 of its ID's digest).
fn short_link(id: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let d = sha2::Sha256::digest(id.as_bytes());
    let mut bits: u64 = u64::from_be_bytes(d[..8].try_into().expect("8 bytes"));
    (0..10)
        .map(|_| {
            let c = ALPHABET[(bits & 31) as usize] as char;
            bits >>= 5;
            c
        })
        .collect()
}

/// A private read-only mount of a layer's view, released on drop.
struct TempView {
    path: PathBuf,
    sys: Arc<dyn Syscalls>,
}

impl Drop for TempView {
    fn drop(&mut self) {
        let _ = self.sys.unmount(&self.path);
        let _ = fs::remove_dir(&self.path);
    }
}

impl Overlay {
    /// Opens (creating) the driver folder `root`; refuses where overlay cannot work.
    /// The kernel's features come from the folder's record; without one (a new
    /// folder, another kernel) they are probed at the first mount, and here only what
    /// needs no mount is checked: the filesystem reports d_type, and overlay is a
    /// filesystem this kernel has. Where it has not registered it (the module not
    /// loaded yet: a probe's mount loads it) or the user is not root (overlay would
    /// answer EPERM), the probe runs here, so that the command fails up front.
    fn open_dir(root: &Path, asked: Option<&str>) -> Result<Overlay> {
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
    fn with(
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

    fn new(root: &Path, asked: Option<&str>, sys: Arc<dyn Syscalls>) -> Result<Overlay> {
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
    fn probed(&self) -> Result<&Probed> {
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
        for mut meta in self.store.list()? {
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

    fn diff_dir(&self, id: &str) -> PathBuf {
        self.store.layer_dir(id).join("diff")
    }
    fn merged(&self, id: &str) -> PathBuf {
        self.store.layer_dir(id).join("merged")
    }
    /// How this driver's layers store whiteouts, for apply and diff alike.
    fn whiteouts(&self) -> Arc<OverlayWhiteouts> {
        Arc::new(OverlayWhiteouts { xattr_prefix: XATTR_PREFIX, sys: self.sys.clone() })
    }

    /// The records of `id` and of the layers below it, top first, each read once.
    fn chain(&self, id: &str) -> Result<Vec<LayerMeta>> {
        let mut out = vec![self.store.get(id)?];
        while let Some(p) = out.last().and_then(|m| m.parent.clone()) {
            out.push(self.store.get(&p).map_err(|e| e.in_layer(id))?);
        }
        Ok(out)
    }

    /// How the views over `chain` copy up: the driver's own way (for a `writable` view
    /// by default metacopy where the lowers' paths fit, [`features::metacopy_fits`],
    /// with the reason when they do not), or more where a layer of the chain recorded
    /// more. An upper that holds redirects or metacopy stubs needs them followed for
    /// good, whatever STRATA_OVERLAY_COPY_UP says today: with metacopy=off overlayfs
    /// answers EPERM to a stub ("refusing to follow metacopy origin"), and with
    /// redirect_dir off a renamed directory shows only its upper part.
    fn copy_up_for(&self, chain: &[LayerMeta], writable: bool) -> Result<(CopyUp, Option<String>)> {
        let probed = self.probed()?;
        let mut way = probed.copy_up;
        let mut why = None;
        if writable && probed.metacopy_where_paths_fit {
            let lowers: Vec<(&str, Option<u64>)> = chain[1..]
                .iter()
                .map(|m| (m.id.as_str(), m.extra.get(LONGEST_PATH).and_then(|v| v.as_u64())))
                .collect();
            match features::metacopy_fits(&lowers, features::redirect_max()) {
                Ok(()) => way = CopyUp::Metacopy,
                Err(e) => why = Some(e),
            }
        }
        for meta in chain {
            if let Some(recorded) = meta.extra.get(COPY_UP).and_then(|v| v.as_str()).and_then(CopyUp::named) {
                way = way.max(recorded);
            }
        }
        let (f, top) = (&probed.features, &chain[0].id);
        if (way == CopyUp::Metacopy && !f.metacopy_pair) || (way >= CopyUp::Redirect && !f.redirect_dir) {
            let why = format!("its chain was written with overlayfs {}, which this kernel refuses", way.name());
            return Err(Error::layer(top, Cause::Other(why)));
        }
        Ok((way, why.filter(|_| way < CopyUp::Metacopy)))
    }

    fn options(&self, copy_up: CopyUp) -> Result<Vec<(String, String)>> {
        let f = &self.probed()?.features;
        let mut o = Vec::new();
        // Every view, read-only ones too: a container's upper holding redirects and
        // metacopy stubs can be a lower (a layer made over a container), and overlayfs
        // refuses to follow a metacopy stub with metacopy=off.
        let (redirect, metacopy) = match copy_up {
            CopyUp::Full => ("off", "off"),
            CopyUp::Redirect => ("on", "off"),
            CopyUp::Metacopy => ("on", "on"),
        };
        if f.index {
            o.push(("index".into(), "off".into()));
        }
        if f.redirect_dir {
            o.push(("redirect_dir".into(), redirect.into()));
        }
        if f.metacopy {
            o.push(("metacopy".into(), metacopy.into()));
        }
        Ok(o)
    }

    /// The overlay for `chain` (top first), copying up `copy_up`: read-only over all of
    /// it, or writable with the first as upper.
    fn overlay_for(&self, chain: &[LayerMeta], writable: bool, copy_up: CopyUp) -> Result<OverlayMount> {
        let (upper, lowers) = if writable { (Some(&chain[0].id), &chain[1..]) } else { (None, chain) };
        let mut lowers: Vec<PathBuf> = lowers.iter().map(|l| self.diff_dir(&l.id)).collect();
        // overlayfs wants two lowers for a lower-only mount and one lower under an
        // upper; an empty directory stands in.
        let min = if writable { 1 } else { 2 };
        while lowers.len() < min {
            lowers.push(self.dir.join("empty"));
        }
        Ok(OverlayMount {
            lowers,
            upper: upper.map(|u| (self.diff_dir(u), self.store.layer_dir(u).join("work"))),
            options: self.options(copy_up)?,
            readonly: !writable,
        })
    }

    /// Mounts `m` at `target`: `lowerdir+` where the kernel has it, else classic mount
    /// data with the short links, from the driver's folder.
    fn mount_at(&self, chain: &[LayerMeta], m: &OverlayMount, target: &Path) -> std::io::Result<()> {
        if self.probed().map_err(std::io::Error::other)?.features.lowerdir_plus {
            return self.sys.mount(&m.fsconfig_spec(), target);
        }
        let mut rel = m.clone();
        for (i, l) in rel.lowers.iter_mut().enumerate() {
            if let Some(layer) = chain.get(i + usize::from(m.upper.is_some())) {
                self.ensure_link(&layer.id)?;
                *l = PathBuf::from("l").join(short_link(&layer.id));
            } else {
                *l = PathBuf::from("empty");
            }
        }
        if let Some((u, w)) = &mut rel.upper {
            *u = u.strip_prefix(&self.dir).map(Path::to_path_buf).unwrap_or(u.clone());
            *w = w.strip_prefix(&self.dir).map(Path::to_path_buf).unwrap_or(w.clone());
        }
        self.sys.mount(&rel.classic_spec(Some(&self.dir))?, target)
    }

    fn ensure_link(&self, id: &str) -> std::io::Result<()> {
        let link = self.dir.join("l").join(short_link(id));
        if fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new("../layers").join(id).join("diff"), &link)?;
        }
        Ok(())
    }

    /// A private read-only view of layer `id` (and below), for lookups.
    fn temp_view(&self, id: &str) -> Result<TempView> {
        let chain = self.chain(id)?;
        let path = tempfile::Builder::new()
            // view-<pid>-: recover() leaves the views of live processes alone.
            .prefix(&format!("view-{}-", std::process::id()))
            .tempdir_in(self.dir.join("tmp"))
            .map_err(|e| Error::at(id, self.dir.join("tmp"), e))?
            .keep();
        let view = TempView { path, sys: self.sys.clone() };
        let m = self.overlay_for(&chain, false, self.copy_up_for(&chain, false)?.0)?;
        self.mount_at(&chain, &m, &view.path).map_err(|e| Error::at(id, &view.path, e))?;
        Ok(view)
    }

    fn stage(&self, staging: &Staging, writable: bool) -> Result<()> {
        let id = &staging.id;
        let diff = staging.path.join("diff");
        fs::create_dir_all(&diff).map_err(|e| Error::at(id, &diff, e))?;
        fs::set_permissions(&diff, fs::Permissions::from_mode(0o755)).map_err(|e| Error::at(id, &diff, e))?;
        if writable {
            fs::create_dir(staging.path.join("work")).map_err(|e| Error::at(id, &staging.path, e))?;
        }
        fs::create_dir(staging.path.join("merged")).map_err(|e| Error::at(id, &staging.path, e))?;
        Ok(())
    }

    /// Gives the directories the tar did not describe the metadata they have in the
    /// lower layers (the root always: every layer's diff root shows through as the
    /// view's root), refuses a path that is a non-directory below, and drops implicit
    /// directories that hold only whiteouts of things no lower layer has. Everything
    /// goes by descriptor from the two roots: the absolute path of a legal entry can be
    /// longer than PATH_MAX (ENAMETOOLONG by path).
    fn fix_implicit_dirs(&self, staging: &Staging, implicit_dirs: &[PathBuf]) -> Result<()> {
        let id = &staging.id;
        let diff = staging.path.join("diff");
        let diff_fd = sys::open_dir(&diff).map_err(|e| Error::at(id, &diff, e))?;
        let root_implicit = implicit_dirs.iter().any(|p| p.as_os_str().is_empty());
        if let (Some(parent), true) = (&staging.parent, root_implicit) {
            let from = sys::open_dir(&self.diff_dir(parent)).map_err(|e| Error::at(id, "", e))?;
            copy_dir_meta(from.as_fd(), diff_fd.as_fd()).map_err(|e| Error::at(id, "", e))?;
        }
        let others: Vec<&PathBuf> = implicit_dirs.iter().filter(|p| !p.as_os_str().is_empty()).collect();
        if others.is_empty() {
            return Ok(());
        }
        let lowers = match &staging.parent {
            Some(p) => Some(self.lowers_of(p)?),
            None => None,
        };
        // Deepest first, so that a parent emptied of whiteout-only children goes too.
        let mut others = others;
        others.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for rel in others {
            let upper = sys::open_dir_in(diff_fd.as_fd(), rel).map_err(|e| Error::at(id, rel, e))?;
            let found = match &lowers {
                Some(l) => l.lookup(rel).map_err(|e| Error::at(id, rel, e))?,
                None => Found::Missing,
            };
            match found {
                Found::Dir(from) => copy_dir_meta(from.as_fd(), upper.as_fd()).map_err(|e| Error::at(id, rel, e))?,
                Found::NotDir { at, symlink } => return Err(not_a_dir(id, &at, symlink)),
                Found::Missing => {
                    if only_whiteouts(upper.as_fd()).map_err(|e| Error::at(id, rel, e))? {
                        drop(upper);
                        let parent = rel.parent().unwrap_or(Path::new(""));
                        let pfd = sys::open_dir_in(diff_fd.as_fd(), parent).map_err(|e| Error::at(id, rel, e))?;
                        sys::remove_all_at(pfd.as_fd(), rel.file_name().unwrap_or_default())
                            .map_err(|e| Error::at(id, rel, e))?;
                    }
                }
            }
        }
        Ok(())
    }

    /// What implicit directories are looked up in: the diff directories of `parent`'s
    /// chain, read as overlayfs reads them, where no layer of it holds redirects or
    /// metacopy stubs (a layer made from a tar never does: their xattrs are refused);
    /// else a private view of the chain, mounted, so that overlayfs follows them.
    fn lowers_of(&self, parent: &str) -> Result<Lowers> {
        let chain = self.chain(parent)?;
        let follows = |m: &LayerMeta| {
            m.extra.get(COPY_UP).and_then(|v| v.as_str()).and_then(CopyUp::named).is_some_and(|c| c > CopyUp::Full)
        };
        if chain.iter().any(follows) {
            let view = self.temp_view(parent)?;
            let fd = sys::open_dir(&view.path).map_err(|e| Error::at(parent, &view.path, e))?;
            return Ok(Lowers::View(view, fd));
        }
        let roots = chain
            .iter()
            .map(|m| {
                let diff = self.diff_dir(&m.id);
                sys::open_dir(&diff).map_err(|e| Error::at(&m.id, &diff, e))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Lowers::Dirs(LowerDirs { roots, whiteouts: self.whiteouts() }))
    }

    /// The layer's diff, and the parent's view it was taken against: kept mounted
    /// until the tar is written, since an entry can be read from it (a name of a split
    /// hardlink that the layer did not touch).
    fn walk(&self, meta: &LayerMeta, reserved: &ReservedXattrs) -> Result<ViewDiff<'_>> {
        let view = match &meta.parent {
            Some(p) => Some(self.temp_view(p)?),
            None => None,
        };
        let kind = LayerKind::Upper(self.whiteouts());
        let diff =
            walk_diff(&meta.id, &self.diff_dir(&meta.id), view.as_ref().map(|v| v.path.as_path()), &kind, reserved)?;
        Ok(ViewDiff { diff, _view: view, _own: None })
    }

    /// The diff of a layer whose view was mounted with metacopy and redirect_dir: the
    /// upper says where, the layer's own view what (see [`copyup`]).
    fn walk_view(&self, meta: &LayerMeta, reserved: &ReservedXattrs) -> Result<ViewDiff<'_>> {
        let id = meta.id.clone();
        let mut path = PathBuf::new();
        self.store.acquire_mount(&id, |m, first| {
            path = LayerFs::mount(self, m, first)?;
            Ok(())
        })?;
        let own = HeldView { fs: self, id: id.clone(), path };
        let parent = match &meta.parent {
            Some(p) => Some(self.temp_view(p)?),
            None => None,
        };
        let upper = self.diff_dir(&id);
        let visit = copyup::touched(&upper, &own.path, XATTR_PREFIX).map_err(|e| Error::at(&id, &upper, e))?;
        let kind = LayerKind::Filtered { visit, all_links: false };
        let diff = walk_diff(&id, &own.path, parent.as_ref().map(|v| v.path.as_path()), &kind, reserved)?;
        Ok(ViewDiff { diff, _view: parent, _own: Some(own) })
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

/// A layer's diff with the views it was taken against (kept until the tar is written).
struct ViewDiff<'a> {
    diff: NaiveDiff,
    _view: Option<TempView>,
    _own: Option<HeldView<'a>>,
}

/// The metadata key recording how a writable layer's view copies up
/// ([`CopyUp::name`]), and its value when the upper holds neither redirects nor
/// metacopy stubs.
const COPY_UP: &str = "copy_up";
const FULL: &str = "full";
/// Why a container's view copies up less than metacopy by default, when it does.
const COPY_UP_WHY: &str = "copy_up_why";
/// The metadata key recording the bytes of the longest path an applied layer holds
/// (what [`features::metacopy_fits`] decides from).
const LONGEST_PATH: &str = "longest_path";

/// A layer's own view, mounted and counted as [`Driver::mount`](driver_core::Driver::mount)
/// mounts it (the same overlay, so the same inode numbers as the view users and the
/// naive walk see), released on drop.
struct HeldView<'a> {
    fs: &'a Overlay,
    id: String,
    path: PathBuf,
}

impl Drop for HeldView<'_> {
    fn drop(&mut self) {
        let _ = self.fs.store.release_mount(&self.id, || LayerFs::unmount(self.fs, &self.id));
    }
}

impl LayerDiff for ViewDiff<'_> {
    fn changes(self: Box<Self>) -> Vec<Change> {
        self.diff.changes
    }
    fn write_tar(self: Box<Self>, layer: &str, out: &mut dyn Write) -> Result<u64> {
        write_tar(layer, self.diff.entries, &self.diff.reserved, out)
    }
}

/// Where an applied layer's implicit directories are looked up (see
/// [`Overlay::lowers_of`]).
enum Lowers {
    Dirs(LowerDirs),
    /// A mounted view of the chain, and its root.
    View(TempView, OwnedFd),
}

impl Lowers {
    fn lookup(&self, rel: &Path) -> std::io::Result<Found> {
        let (_, view) = match self {
            Lowers::Dirs(dirs) => return dirs.lookup(rel),
            Lowers::View(v, fd) => (v, fd.as_fd()),
        };
        let at = match sys::open_in(view, rel, nix::fcntl::OFlag::O_PATH) {
            Ok(fd) if sys::is_dir(&sys::fstat(fd.as_fd())?) => return Ok(Found::Dir(sys::open_dir_in(view, rel)?)),
            Ok(_) => rel,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(Found::Missing),
            // A symlink (or a file) on the way: found below by its type.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENOTDIR)) => rel,
            Err(e) => return Err(e),
        };
        // The first component that is not a directory, and whether it is a link.
        let mut prefix = PathBuf::new();
        for c in at.iter() {
            prefix.push(c);
            match sys::open_in(view, &prefix, nix::fcntl::OFlag::O_PATH).and_then(|fd| sys::fstat(fd.as_fd())) {
                Ok(st) if sys::is_dir(&st) => continue,
                Ok(st) => {
                    return Ok(Found::NotDir {
                        at: prefix,
                        symlink: sys::file_type(&st) == nix::sys::stat::SFlag::S_IFLNK,
                    })
                }
                Err(_) => break,
            }
        }
        Ok(Found::NotDir { at: prefix, symlink: false })
    }
}

/// The error for an implicit directory whose lower `at` (a prefix of it) is not a
/// directory.
fn not_a_dir(id: &str, at: &Path, symlink: bool) -> Error {
    if symlink {
        let why = "the path goes through a symbolic link; a layer may not write through a link";
        return Error::at(id, at, Cause::Refused(why.into()));
    }
    Error::at(id, at, Cause::BadTar("a parent of the entry is not a directory".into()))
}

/// Copies owner, mode, xattrs (not overlay's own) and times of directory `from` to `to`.
fn copy_dir_meta(from: BorrowedFd<'_>, to: BorrowedFd<'_>) -> std::io::Result<()> {
    let mut xattrs = sys::read_xattrs(XattrTarget::Fd(from.as_raw_fd()))?;
    let own = crate::whiteout::reserved_xattrs();
    xattrs.retain(|(name, _)| !own.contains(name));
    let meta = sys::NodeMeta::from_stat(&sys::fstat(from)?, xattrs);
    sys::set_metadata(sys::Node::Open(to), &meta, sys::Made::default())
}

/// Whether a directory holds nothing but whiteout devices (and such directories).
fn only_whiteouts(dir: BorrowedFd<'_>) -> std::io::Result<bool> {
    for name in sys::read_dir_names(dir)? {
        let Some(st) = sys::lstat_at(dir, &name)? else { continue };
        if sys::is_dir(&st) {
            let sub = sys::open_at(dir, &name, nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_RDONLY, 0)?;
            if !only_whiteouts(sub.as_fd())? {
                return Ok(false);
            }
        } else if !is_whiteout(&st) {
            return Ok(false);
        }
    }
    Ok(true)
}

impl LayerFs for Overlay {
    fn reserved_xattrs(&self) -> ReservedXattrs {
        crate::whiteout::reserved_xattrs()
    }

    fn name(&self) -> &'static str {
        "overlay"
    }

    fn open(root: &Path) -> Result<(Arc<Store>, Overlay)> {
        // STRATA_OVERLAY_COPY_UP=full|redirect_dir|metacopy, see [`CopyUp`].
        let asked = std::env::var("STRATA_OVERLAY_COPY_UP").ok();
        let fs = Overlay::open_dir(root, asked.as_deref())?;
        Ok((fs.store.clone(), fs))
    }

    /// An empty `diff` (an upper of its own, never a copy of the parent), `merged`, and
    /// `work` for a writable layer. A created layer's root takes the parent's metadata
    /// (an applied one's is fixed after the apply, see [`Overlay::fix_implicit_dirs`]).
    fn make(&self, staging: &Staging, why: Making) -> Result<()> {
        let writable = matches!(why, Making::Create { writable: true });
        self.stage(staging, writable)?;
        if let (Making::Create { .. }, Some(p)) = (why, &staging.parent) {
            let id = &staging.id;
            let from = sys::open_dir(&self.diff_dir(p)).map_err(|e| Error::at(id, "", e))?;
            let to = sys::open_dir(&staging.path.join("diff")).map_err(|e| Error::at(id, "", e))?;
            copy_dir_meta(from.as_fd(), to.as_fd()).map_err(|e| Error::at(id, "", e))?;
        }
        Ok(())
    }

    fn apply(&self, input: LayerInput<'_>) -> Result<Applied> {
        let opts = ApplyOptions::of(&input).with_whiteouts(self.whiteouts());
        Ok(apply_layer(&input.staging.path.join("diff"), input.tar, &opts)?.into())
    }

    /// Directories the tar did not describe take their metadata from the lower layers
    /// (committed by now), see [`Overlay::fix_implicit_dirs`].
    fn before_commit(&self, staging: &Staging, applied: &Applied) -> Result<()> {
        self.fix_implicit_dirs(staging, &applied.implicit_dirs)?;
        // Under `--sync file` what the fix-up changed is synced here (no syncfs comes):
        // each directory it gave metadata, or the parent of one it removed.
        let diff = staging.path.join("diff");
        for rel in &applied.implicit_dirs {
            let dir = diff.join(rel);
            let dir = if dir.exists() { dir } else { dir.parent().unwrap_or(&diff).to_path_buf() };
            staging.durability.sync_written_dir(&dir).map_err(|e| Error::at(&staging.id, rel, e))?;
        }
        Ok(())
    }

    /// A layer's own tree is its upper directory; `work/` and `merged/` are the mount's.
    fn own_tree(&self, dir: &Path) -> PathBuf {
        dir.join("diff")
    }

    /// The layers of an image are independent directories here: extract them all at
    /// once (one per core), then commit them bottom to top.
    fn independent(&self) -> bool {
        true
    }

    fn extra(&self, id: &str, applied: Option<&Applied>) -> serde_json::Map<String, serde_json::Value> {
        let mut extra = serde_json::Map::new();
        extra.insert("link".into(), short_link(id).into());
        if let Some(a) = applied {
            extra.insert(LONGEST_PATH.into(), a.longest_path.into());
        }
        extra
    }

    fn committed(&self, meta: &LayerMeta) -> Result<()> {
        let _ = self.ensure_link(&meta.id);
        Ok(())
    }

    fn mount(&self, m: &mut LayerMeta, first: bool) -> Result<PathBuf> {
        let id = m.id.clone();
        let target = self.merged(&id);
        // A count left by a process killed mid-mount is no proof of a mount.
        if first || !sys::is_mount_point(&target) {
            let chain = self.chain(&id)?;
            let (copy_up, why) = self.copy_up_for(&chain, m.writable)?;
            let om = self.overlay_for(&chain, m.writable, copy_up)?;
            self.mount_at(&chain, &om, &target).map_err(|e| Error::at(&id, &target, e))?;
            m.extra.insert(
                "mount_options".into(),
                mount::mount_data(&om).split(',').skip(1).collect::<Vec<_>>().join(",").into(),
            );
            m.extra.insert(
                "mount_api".into(),
                if self.probed()?.features.lowerdir_plus { "lowerdir+" } else { "mount(2)" }.into(),
            );
            // Once a writable view was mounted with redirects (or metacopy) its upper
            // may hold them for good: the record never goes back (copy_up_for mounts
            // it with at least what it recorded).
            if m.writable {
                m.extra.insert(COPY_UP.into(), copy_up.name().into());
                match why {
                    Some(why) => m.extra.insert(COPY_UP_WHY.into(), why.into()),
                    None => m.extra.remove(COPY_UP_WHY),
                };
            }
        }
        Ok(target)
    }

    fn unmount(&self, id: &str) -> Result<()> {
        let target = self.merged(id);
        self.sys.unmount(&target).map_err(|e| Error::at(id, &target, e))
    }

    fn diff(&self, meta: &LayerMeta, reserved: &ReservedXattrs) -> Result<Box<dyn LayerDiff + '_>> {
        if meta.extra.get(COPY_UP).and_then(|v| v.as_str()).is_some_and(|c| c != FULL) {
            return Ok(Box::new(self.walk_view(meta, reserved)?));
        }
        Ok(Box::new(self.walk(meta, reserved)?))
    }

    fn after_remove(&self, id: &str) {
        let _ = fs::remove_file(self.dir.join("l").join(short_link(id)));
    }

    fn usage(&self, meta: &LayerMeta) -> Result<Usage> {
        let d = self.diff_dir(&meta.id);
        sys::disk_usage(&d).map_err(|e| Error::at(&meta.id, &d, e))
    }

    fn layer_dir(&self, id: &str) -> Result<driver_core::LayerDir> {
        self.store.get(id)?;
        let kind = driver_core::LayerDirKind::Changes { xattr_prefix: XATTR_PREFIX.to_string() };
        Ok(driver_core::LayerDir { path: self.diff_dir(id), kind })
    }

    fn features(&self) -> Vec<(String, String)> {
        let p = match self.probed() {
            Ok(p) => p,
            Err(e) => return vec![("error".into(), e.to_string())],
        };
        let mut features = p.features.pairs();
        features.push(("copy_up".into(), copy_up_line(&p.features, self.asked.as_deref())));
        features.push(("mount_api".into(), if p.features.lowerdir_plus { "lowerdir+" } else { "mount(2)" }.into()));
        features
    }
}

#[cfg(test)]
mod mount_options {
    //! Which options overlay mounts its views with, decided from the probed features,
    //! checked through the recording double: nothing is mounted, so neither root nor
    //! overlayfs is needed. (The privileged tests mount for real.)
    use driver_core::driver::Driver;
    use driver_core::syscall::{Call, MountApi, MountSpec, Recording};
    use strata_archive::tarbuild::TarBuilder;

    use super::*;

    /// Features as a probe would find them: every option known or none.
    fn features(lowerdir_plus: bool, known: bool) -> Features {
        Features {
            mounts: true,
            d_type: true,
            lowerdir_plus,
            metacopy: known,
            redirect_dir: known,
            index: known,
            volatile: known,
            userxattr: known,
            metacopy_pair: known,
            metacopy_pair_error: None,
            error: None,
        }
    }

    /// base (a file), mid over it (a whiteout of base's file, and directories the tar
    /// does not describe), a writable ctr over mid; ctr and mid mounted and ctr
    /// unmounted. Returns the calls made.
    fn run(root: &Path, f: Features, copy_up: CopyUp) -> Vec<Call> {
        let rec = Arc::new(Recording::default());
        let fs = Overlay::with(root, f, (copy_up, None), rec.clone()).unwrap();
        let driver = Layered::from_parts(fs.store.clone(), fs);
        let base = TarBuilder::new().dir("etc").file("etc/a", b"a").build();
        driver.apply_diff("base", None, &mut &base[..]).unwrap();
        let mid = TarBuilder::new().dir("etc").whiteout("etc/a").file("usr/lib/x", b"x").build();
        driver.apply_diff("mid", Some("base"), &mut &mid[..]).unwrap();
        driver.create("ctr", Some("mid"), true).unwrap();
        assert_eq!(driver.mount("ctr").unwrap(), root.join("layers/ctr/merged"));
        driver.unmount("ctr").unwrap();
        driver.mount("mid").unwrap();
        rec.calls()
    }

    fn mounts(calls: &[Call]) -> Vec<(MountSpec, PathBuf)> {
        calls
            .iter()
            .filter_map(|c| match c {
                Call::Mount { spec, target } => Some((spec.clone(), target.clone())),
                _ => None,
            })
            .collect()
    }

    fn opts(pairs: &[(&str, &Path)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string_lossy().into_owned())).collect()
    }

    fn off(known: bool) -> Vec<(String, String)> {
        let names = if known { &["index", "redirect_dir", "metacopy"][..] } else { &[][..] };
        names.iter().map(|k| (k.to_string(), "off".to_string())).collect()
    }

    #[test]
    fn lowerdir_plus_stacks_each_lower_top_first_with_the_probed_options_off() {
        for known in [true, false] {
            let tmp = tempfile::tempdir().unwrap();
            let root = tmp.path();
            let diff = |id: &str| root.join("layers").join(id).join("diff");
            let calls = run(root, features(true, known), CopyUp::Full);
            let m = mounts(&calls);
            // mid's implicit usr and usr/lib take their metadata from base's diff
            // directory, looked up as overlayfs would: no view mounted for them.
            assert_eq!(m.len(), 2, "ctr, mid: {m:#?}");
            assert!(m.iter().all(|(_, at)| !at.starts_with(root.join("tmp"))), "{m:#?}");

            // The container: its lowers top first, its own diff as upper.
            let (ctr, ctr_at) = &m[0];
            assert_eq!(ctr_at, &root.join("layers/ctr/merged"));
            let mut want = opts(&[
                ("lowerdir+", &diff("mid")),
                ("lowerdir+", &diff("base")),
                ("upperdir", &diff("ctr")),
                ("workdir", &root.join("layers/ctr/work")),
            ]);
            want.extend(off(known));
            assert_eq!(ctr.options, want, "known={known}");
            assert!(!ctr.readonly);
            // Root mounts keep overlay's xattrs in trusted.*; volatile would lose the
            // upper on a crash: neither is asked for although the kernel has them.
            assert!(ctr.options.iter().all(|(k, _)| k != "userxattr" && k != "volatile"));
            assert!(calls.contains(&Call::Unmount { target: ctr_at.clone() }));

            // A committed layer's view: its own diff on top, read-only.
            let (mid, mid_at) = &m[1];
            assert_eq!(mid_at, &root.join("layers/mid/merged"));
            let mut want = opts(&[("lowerdir+", &diff("mid")), ("lowerdir+", &diff("base"))]);
            want.extend(off(known));
            assert_eq!(mid.options, want);
            assert!(mid.readonly);

            // The whiteout of base's file became a 0/0 device, through the double too.
            assert!(calls.iter().any(|c| matches!(c, Call::Mknod { name, dev: 0, .. } if name == "a")));
        }
    }

    /// With redirects (and metacopy) on, every view, read-only ones too (they may have
    /// a container's upper as a lower), is mounted with them and index off; the
    /// writable layer records how it copies up, and a later mount by a driver asked for
    /// less neither erases that record nor mounts with less.
    #[test]
    fn redirect_and_metacopy_views_and_their_record() {
        for (copy_up, redirect, metacopy) in [(CopyUp::Redirect, "on", "off"), (CopyUp::Metacopy, "on", "on")] {
            let tmp = tempfile::tempdir().unwrap();
            let root = tmp.path();
            let m = mounts(&run(root, features(true, true), copy_up));
            assert_eq!(m.len(), 2);
            let want: Vec<(String, String)> = [("index", "off"), ("redirect_dir", redirect), ("metacopy", metacopy)]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            for (spec, at) in &m {
                assert!(spec.options.ends_with(&want), "{at:?}: {:?}", spec.options);
            }
            let rec = Arc::new(Recording::default());
            let fs = Overlay::with(root, features(true, true), (CopyUp::Full, None), rec.clone()).unwrap();
            let driver = Layered::from_parts(fs.store.clone(), fs);
            driver.mount("ctr").unwrap();
            // Asked for full copy-up now, the container's view still follows what its
            // upper may hold.
            let again = mounts(&rec.calls());
            assert_eq!(again.len(), 1);
            assert!(again[0].0.options.ends_with(&want), "{:?}", again[0].0.options);
            let store = driver.store();
            let extra = store.get("ctr").unwrap().extra;
            assert_eq!(extra.get(COPY_UP).and_then(|v| v.as_str()), Some(copy_up.name()), "{extra:?}");
            assert_eq!(store.get("mid").unwrap().extra.get(COPY_UP), None, "a read-only view copies nothing up");
        }
    }

    /// Applying layers (all an `image unpack` does here) mounts nothing, so it probes
    /// nothing: the kernel's features are probed at the first mount (issue 17: every
    /// command paid about 0.3 s of probe mounts), and nothing is recorded meanwhile.
    #[test]
    fn applying_layers_probes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let rec = Arc::new(Recording::default());
        let fs = Overlay::new(root, None, rec.clone()).unwrap();
        let driver = Layered::from_parts(fs.store.clone(), fs);
        let base = TarBuilder::new().dir("etc").file("etc/a", b"a").build();
        driver.apply_diff("base", None, &mut &base[..]).unwrap();
        // etc, usr and usr/lib are implicit: looked up in base's diff, not in a view.
        let mid = TarBuilder::new().whiteout("etc/a").file("usr/lib/x", b"x").build();
        driver.apply_diff("mid", Some("base"), &mut &mid[..]).unwrap();
        assert!(driver.fs().probed.get().is_none(), "the features were probed");
        assert!(!root.join(features::RECORD).exists());
        assert_eq!(mounts(&rec.calls()), vec![]);
    }

    /// A layer applied over a container that copied up with redirects (or metacopy)
    /// looks its implicit directories up in a mounted view, where overlayfs follows
    /// them: the diff directories alone would miss a renamed directory's lower part.
    #[test]
    fn implicit_dirs_over_a_redirecting_container_are_looked_up_in_a_view() {
        for copy_up in [CopyUp::Redirect, CopyUp::Metacopy] {
            let tmp = tempfile::tempdir().unwrap();
            let root = tmp.path();
            run(root, features(true, true), copy_up);
            let rec = Arc::new(Recording::default());
            let fs = Overlay::with(root, features(true, true), (CopyUp::Full, None), rec.clone()).unwrap();
            let driver = Layered::from_parts(fs.store.clone(), fs);
            let over = TarBuilder::new().file("usr/lib/y", b"y").build();
            driver.apply_diff("over", Some("ctr"), &mut &over[..]).unwrap();
            let m = mounts(&rec.calls());
            assert_eq!(m.len(), 1, "{copy_up:?}: {m:#?}");
            assert!(m[0].1.starts_with(root.join("tmp")), "{m:#?}");
            let metacopy = if copy_up == CopyUp::Metacopy { "on" } else { "off" };
            assert!(m[0].0.options.contains(&("metacopy".into(), metacopy.into())), "{:?}", m[0].0.options);
        }
    }

    /// Every applied layer records the bytes of the longest path it holds (a
    /// whiteout's is its directory's: it holds nothing at its own name); a created
    /// one records none (its content is unknown until its view is written).
    #[test]
    fn applied_layers_record_their_longest_path() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let fs = Overlay::new(root, None, Arc::new(Recording::default())).unwrap();
        let driver = Layered::from_parts(fs.store.clone(), fs);
        let longest = |id: &str| driver.store().get(id).unwrap().extra.get(LONGEST_PATH).and_then(|v| v.as_u64());
        let base = TarBuilder::new().dir("etc").file("etc/a", b"a").build();
        driver.apply_diff("base", None, &mut &base[..]).unwrap();
        assert_eq!(longest("base"), Some(5));
        let deep = format!("{}/{}", "d".repeat(200), "n".repeat(100));
        let mid = TarBuilder::new().whiteout(&format!("{deep}/{}", "w".repeat(250))).file("usr/lib/x", b"x").build();
        driver.apply_diff("mid", Some("base"), &mut &mid[..]).unwrap();
        assert_eq!(longest("mid"), Some(301), "the whiteout's directory");
        let chain = TarBuilder::new().dir("etc").file(&format!("etc/{}", "f".repeat(255)), b"f").build();
        driver
            .apply_chain(
                vec![driver_core::driver::LayerTar {
                    id: "top".into(),
                    parent: Some("mid".into()),
                    tar: Box::new(std::io::Cursor::new(chain)),
                    uncompressed: false,
                    diff_id: None,
                }],
                &|_, _| {},
            )
            .unwrap();
        assert_eq!(longest("top"), Some(259), "through apply_chain");
        driver.create("ctr", Some("top"), true).unwrap();
        assert_eq!(longest("ctr"), None);
    }

    #[test]
    fn classic_mounts_name_lowers_by_short_links_from_the_driver_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let calls = run(root, features(false, true), CopyUp::Full);
        let m = mounts(&calls);
        let (ctr, _) = &m[0];
        assert_eq!(ctr.api, MountApi::Classic { cwd: Some(root.to_path_buf()) });
        let link = |id: &str| format!("l/{}", short_link(id));
        let mut want = vec![
            ("lowerdir".to_string(), format!("{}:{}", link("mid"), link("base"))),
            ("upperdir".to_string(), "layers/ctr/diff".to_string()),
            ("workdir".to_string(), "layers/ctr/work".to_string()),
        ];
        want.extend(off(true));
        assert_eq!(ctr.options, want);
        for id in ["mid", "base"] {
            let target = fs::read_link(root.join(link(id))).unwrap();
            assert_eq!(target, Path::new("../layers").join(id).join("diff"), "{id}'s link");
        }
    }
}
