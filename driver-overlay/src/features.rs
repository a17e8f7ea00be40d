//! What the kernel's overlayfs offers here, found by trying small mounts in the driver's
//! folder (Documentation/filesystems/overlayfs.rst lists the options; which ones a kernel
//! accepts is only known by trying). The probe takes 8 mounts (about 0.3 s, paid by
//! every command), so the driver keeps its answer in its folder (`overlay-features.json`,
//! [`probe_recorded`]) with what it depends on: the kernel release, the overlay
//! module's parameters and the folder's filesystem. Any of those different, and the
//! kernel is probed again before anything is mounted.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use crate::mount::{mount_classic, mount_fsconfig, unmount, OverlayMount};

/// The xattr namespaces overlayfs uses: `trusted.` (needs CAP_SYS_ADMIN) or, with the
/// `userxattr` option for rootless mounts, `user.`. Kept in one place so rootless
/// support can switch it.
pub const TRUSTED_PREFIX: &str = "trusted.overlay.";
pub const USER_PREFIX: &str = "user.overlay.";

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Features {
    /// An overlay mounts at all.
    pub mounts: bool,
    /// The backing filesystem reports file types in readdir (xfs with ftype=0 does
    /// not, and overlayfs misbehaves on it: moby refuses such a filesystem too).
    pub d_type: bool,
    /// `lowerdir+` through the new mount API (Linux 6.8+): no page limit on layers.
    pub lowerdir_plus: bool,
    pub metacopy: bool,
    pub redirect_dir: bool,
    pub index: bool,
    pub volatile: bool,
    pub userxattr: bool,
    /// `metacopy=on` and `redirect_dir=on` mount together (Linux 4.19+; metacopy needs
    /// redirects: a metacopy file's data is found by following its redirect).
    pub metacopy_pair: bool,
    /// Why the kernel refused that pair, when it did (one line).
    pub metacopy_pair_error: Option<String>,
    /// Why overlay does not mount, when it does not.
    pub error: Option<String>,
}

impl Features {
    pub fn xattr_prefix(&self) -> &'static str {
        TRUSTED_PREFIX
    }

    /// As `name=value` pairs for `Status.features` and `strata probe`.
    pub fn pairs(&self) -> Vec<(String, String)> {
        let b = |v: bool| v.to_string();
        vec![
            ("d_type".into(), b(self.d_type)),
            ("lowerdir+".into(), b(self.lowerdir_plus)),
            ("metacopy".into(), b(self.metacopy)),
            ("redirect_dir".into(), b(self.redirect_dir)),
            ("index".into(), b(self.index)),
            ("volatile".into(), b(self.volatile)),
            ("userxattr".into(), b(self.userxattr)),
        ]
    }
}

/// How a container's writable view copies up what it changes of the layers below,
/// ordered by what a mount must follow (each way's upper needs at least its options).
/// Serialized by [`CopyUp::name`] (in layer records, see [`crate::record`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum CopyUp {
    /// `redirect_dir=off`, `metacopy=off`: a changed lower file is copied whole, and
    /// renaming a lower directory answers EXDEV (`mv` then copies the tree). The upper
    /// directory alone says what changed.
    #[serde(rename = "full")]
    Full,
    /// `redirect_dir=on`: a lower directory renames in place, leaving a redirect xattr
    /// (and a whiteout at its old name); files are still copied whole. An absolute
    /// redirect longer than the overlay module's `redirect_max` (256 bytes by default)
    /// is refused with EXDEV, and `mv` copies as before.
    #[serde(rename = "redirect_dir")]
    Redirect,
    /// `metacopy=on` as well: chmod, chown, utime and xattr changes of a lower file copy
    /// its metadata only (an empty stub whose data stays below). overlayfs then needs
    /// an absolute redirect on the stub for link(2) and for RENAME_EXCHANGE of a lower
    /// file, and answers EXDEV when the path is over `redirect_max`, where neither call
    /// has a fallback (Linux 6.1 and 6.18, fs/overlayfs/dir.c `ovl_set_link_redirect`;
    /// found by the diff property test on ext4: `ln` of a lower file 3 KiB deep
    /// failed). So it is the default only where no such path can be too long, see
    /// [`metacopy_fits`].
    #[serde(rename = "metacopy+redirect_dir")]
    Metacopy,
}

impl CopyUp {
    /// The name recorded in layer metadata and shown by `strata probe`.
    pub fn name(self) -> &'static str {
        match self {
            CopyUp::Full => "full",
            CopyUp::Redirect => "redirect_dir",
            CopyUp::Metacopy => "metacopy+redirect_dir",
        }
    }

    /// Whether, with nothing `asked`, a container's view takes metacopy where its
    /// lower layers' paths fit ([`metacopy_fits`]): where the kernel has the pair.
    pub fn metacopy_where_paths_fit(f: &Features, asked: Option<&str>) -> bool {
        asked.is_none() && f.metacopy_pair
    }

    /// The way chosen for `f`: `asked` (`full`, `redirect_dir` or `metacopy`, from
    /// STRATA_OVERLAY_COPY_UP) where the kernel has it, else redirect_dir where it has
    /// that, else full; with the one-line reason when it is less than asked. (With
    /// nothing asked, redirect_dir is the way for chains [`metacopy_fits`] refuses.)
    pub fn choose(f: &Features, asked: Option<&str>) -> (CopyUp, Option<String>) {
        let best_default = if f.redirect_dir { CopyUp::Redirect } else { CopyUp::Full };
        match asked {
            Some("full") => (CopyUp::Full, None),
            Some("metacopy") if f.metacopy_pair => (CopyUp::Metacopy, None),
            Some("metacopy") => (best_default, f.metacopy_pair_error.clone()),
            Some("redirect_dir") | None if f.redirect_dir => (CopyUp::Redirect, None),
            Some("redirect_dir") | None => {
                (CopyUp::Full, Some("the kernel refused redirect_dir=on: lower directories rename by copy".into()))
            }
            Some(other) => (best_default, Some(format!("unknown STRATA_OVERLAY_COPY_UP={other}"))),
        }
    }
}

/// The overlay module's `redirect_max` now: the longest redirect overlayfs writes (256
/// bytes by default; a module parameter, host-wide, changeable at any time through
/// /sys, so read at each mount). `None` where it cannot be read.
pub fn redirect_max() -> Option<u64> {
    std::fs::read_to_string("/sys/module/overlay/parameters/redirect_max").ok()?.trim().parse().ok()
}

/// Whether a container's view over `lowers` (each layer's ID and the bytes of the
/// longest path it holds, `None` where its metadata has no record: a layer made before
/// strata recorded it, or not made from a tar) can mount with `metacopy=on`, so that
/// no link(2) or RENAME_EXCHANGE of a lower file answers EXDEV; else why not, in one
/// line.
///
/// Why the longest paths of the lowers decide it: the redirect overlayfs writes for
/// them is built by `ovl_get_redirect` (fs/overlayfs/dir.c, the same in Linux 6.1 and
/// 6.18), which walks up from the file's dentry taking, at each level, the dentry's
/// own redirect where it has one (a renamed lower directory's names where it came
/// from) or else its name, until an absolute redirect or the root, and answers EXDEV
/// once the result (with its leading '/') would be over `redirect_max`. So it builds
/// the path the file has in the lower layers, also for a file inside a renamed or
/// moved directory, and a directory moved across directories gets the same. A layer
/// made from a tar holds no redirect of its own (`trusted.overlay.*` is refused), so
/// that path is one some lower layer holds: it fits when every lower's longest path
/// plus the '/' does.
pub fn metacopy_fits(lowers: &[(&str, Option<u64>)], redirect_max: Option<u64>) -> Result<(), String> {
    let Some(max) = redirect_max else {
        return Err("the overlay module's redirect_max cannot be read".into());
    };
    for (id, longest) in lowers {
        match longest {
            None => return Err(format!("layer {id} has no record of its longest path")),
            Some(n) if n + 1 > max => {
                return Err(format!(
                    "layer {id} holds a path of {n} bytes, over the overlay module's redirect_max ({max}) with its \
                     leading '/': metacopy would make ln of it fail with EXDEV"
                ))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// The features of overlay in `dir`, probed once per directory per process (a probe
/// leaves nothing behind: `strata probe` runs it in any folder).
pub fn probe(dir: &Path) -> Features {
    cached(dir, probe_now)
}

/// [`probe`] for the driver's own folder: read from the folder's record while the
/// kernel, the module's parameters and the filesystem are the ones it was probed on,
/// else probed and recorded.
pub fn probe_recorded(dir: &Path) -> Features {
    cached(dir, |dir| {
        recorded(dir).unwrap_or_else(|| {
            let f = probe_now(dir);
            record(dir, &f);
            f
        })
    })
}

/// What this process found of `dir` already, or the folder's record if it was made
/// where `dir` stands now; `None` when only a probe (mounts) can tell.
pub fn recorded_probe(dir: &Path) -> Option<Features> {
    if let Some(f) = cache().lock().expect("probe cache").get(dir) {
        return Some(f.clone());
    }
    let f = recorded(dir)?;
    cache().lock().expect("probe cache").insert(dir.to_path_buf(), f.clone());
    Some(f)
}

/// Whether this kernel has overlay registered as a filesystem (`/proc/filesystems`):
/// when it has not, its module is not loaded yet (the first overlay mount loads it),
/// or there is none.
pub fn overlay_registered() -> bool {
    std::fs::read_to_string("/proc/filesystems")
        .is_ok_and(|t| t.lines().any(|l| l.split_whitespace().last() == Some("overlay")))
}

fn cache() -> &'static Mutex<HashMap<PathBuf, Features>> {
    static CACHE: OnceLock<Mutex<HashMap<PathBuf, Features>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

fn cached(dir: &Path, find: impl FnOnce(&Path) -> Features) -> Features {
    if let Some(f) = cache().lock().expect("probe cache").get(dir) {
        return f.clone();
    }
    let f = find(dir);
    cache().lock().expect("probe cache").insert(dir.to_path_buf(), f.clone());
    f
}

/// Where a folder's probe is recorded.
pub const RECORD: &str = "overlay-features.json";

/// What a probe's answer depends on, besides the kernel's code: its release, the
/// overlay module's parameters (`redirect_max`, `metacopy`, ... change what mounts do
/// and are set at load time or through /sys), and the filesystem the probe mounted on
/// (its type and device: d_type and xattr support are the filesystem's).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProbedOn {
    pub kernel: String,
    pub module_params: Vec<(String, String)>,
    pub fs_type: String,
    pub dev: u64,
}

impl ProbedOn {
    /// Where `dir` stands now; `None` when that cannot be read (then nothing is trusted).
    pub fn now(dir: &Path) -> Option<ProbedOn> {
        use std::os::unix::fs::MetadataExt;
        let kernel = nix::sys::utsname::uname().ok()?.release().to_str()?.to_string();
        let mut module_params = Vec::new();
        // A kernel with overlay built in and no parameters, or not loaded yet, has none.
        if let Ok(rd) = std::fs::read_dir("/sys/module/overlay/parameters") {
            for e in rd.flatten() {
                let v = std::fs::read_to_string(e.path()).unwrap_or_default();
                module_params.push((e.file_name().to_string_lossy().into_owned(), v.trim().to_string()));
            }
        }
        module_params.sort();
        let dev = std::fs::metadata(dir).ok()?.dev();
        let fs_type = driver_core::sys::fs_type(dir).ok()?;
        Some(ProbedOn { kernel, module_params, fs_type, dev })
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Recorded {
    probed_on: ProbedOn,
    features: Features,
}

/// The recorded probe of `dir`, if it was made where `dir` stands now.
fn recorded(dir: &Path) -> Option<Features> {
    let r: Recorded = serde_json::from_slice(&std::fs::read(dir.join(RECORD)).ok()?).ok()?;
    (Some(&r.probed_on) == ProbedOn::now(dir).as_ref()).then_some(r.features)
}

/// Records a probe that found overlay mounting (a failure is probed again next time:
/// the module may be loaded by then). Written whole or not at all; a failure to
/// write only means probing again.
fn record(dir: &Path, f: &Features) {
    // After the probe: its first mount may have loaded the module, and with it the
    // parameters.
    let Some(probed_on) = ProbedOn::now(dir) else { return };
    if !f.mounts {
        return;
    }
    let _ = driver_core::json::write_json(&dir.join(RECORD), &Recorded { probed_on, features: f.clone() });
}

/// Whether readdir in `dir` reports file types (a file of its own is made and
/// removed to see: processes opening the driver at once check side by side).
pub fn has_d_type(dir: &Path) -> bool {
    let prefix = format!("{D_TYPE_CHECK}{}-", std::process::id());
    let Ok(f) = tempfile::Builder::new().prefix(&prefix).tempfile_in(dir) else { return false };
    let Some(name) = f.path().file_name().map(|n| n.as_encoded_bytes().to_vec()) else { return false };
    // Through readdir itself: std falls back to lstat when d_type is DT_UNKNOWN.
    let Ok(mut d) = nix::dir::Dir::open(dir, nix::fcntl::OFlag::O_RDONLY, nix::sys::stat::Mode::empty()) else {
        return false;
    };
    let found = d.iter().flatten().any(|e| e.file_name().to_bytes() == name.as_slice() && e.file_type().is_some());
    found
}

/// The name [`has_d_type`]'s file starts with, followed by its process's ID.
const D_TYPE_CHECK: &str = ".d_type-check-";

/// Removes what a process killed while probing left in the driver folder `dir`, each
/// named after its process ID: a probe directory `probe-<pid>-…` (its overlay maybe
/// still mounted: unmounted first), a d_type check file `.d_type-check-<pid>-…`, and
/// a half-written probe record `.tmp-<pid>-…` ([`driver_core::json::write_atomic`]).
/// What a live process is using stays.
pub fn clear_stale(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let (rest, probe) = match [("probe-", true), (D_TYPE_CHECK, false), (".tmp-", false)]
            .into_iter()
            .find_map(|(prefix, probe)| Some((name.strip_prefix(prefix)?, probe)))
        {
            Some(found) => found,
            None => continue,
        };
        let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        if pid.is_none_or(driver_core::sys::pid_alive) {
            continue;
        }
        if probe {
            let merged = e.path().join("merged");
            let _ = nix::mount::umount2(&merged, nix::mount::MntFlags::MNT_DETACH);
            let _ = std::fs::remove_dir_all(e.path());
        } else {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

fn probe_now(dir: &Path) -> Features {
    let mut f = Features::default();
    clear_stale(dir);
    let prefix = format!("probe-{}-", std::process::id());
    let tmp = match tempfile::Builder::new().prefix(&prefix).tempdir_in(dir) {
        Ok(t) => t,
        Err(e) => {
            f.error = Some(format!("cannot make a probe directory in {}: {e}", dir.display()));
            return f;
        }
    };
    let t = tmp.path();
    f.d_type = has_d_type(t);
    for d in ["lower1", "lower2", "upper", "work", "merged"] {
        let _ = std::fs::create_dir(t.join(d));
    }
    let base = OverlayMount {
        lowers: vec![t.join("lower1"), t.join("lower2")],
        upper: Some((t.join("upper"), t.join("work"))),
        options: Vec::new(),
        readonly: false,
    };
    let merged = t.join("merged");
    let attempt = |m: &OverlayMount, new_api: bool| -> Result<(), String> {
        let r = if new_api { mount_fsconfig(m, &merged) } else { mount_classic(m, &merged) };
        match r {
            Ok(()) => {
                let _ = unmount(&merged);
                // Each mount leaves the work dir with its own `work/` inside; a
                // fresh one keeps the next attempt independent.
                let _ = std::fs::remove_dir_all(t.join("work"));
                let _ = std::fs::create_dir(t.join("work"));
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        }
    };
    match attempt(&base, false) {
        Ok(()) => f.mounts = true,
        Err(e) => {
            f.error = Some(e);
            return f;
        }
    }
    f.lowerdir_plus = attempt(&base, true).is_ok();
    let with = |k: &str, v: &str| {
        let mut m = base.clone();
        m.options.push((k.to_string(), v.to_string()));
        m
    };
    f.metacopy = attempt(&with("metacopy", "on"), false).is_ok();
    f.redirect_dir = attempt(&with("redirect_dir", "on"), false).is_ok();
    f.index = attempt(&with("index", "on"), false).is_ok();
    f.volatile = attempt(&with("volatile", ""), false).is_ok();
    f.userxattr = attempt(&with("userxattr", ""), false).is_ok();
    let mut both = with("redirect_dir", "on");
    both.options.push(("metacopy".into(), "on".into()));
    both.options.push(("index".into(), "off".into()));
    match attempt(&both, false) {
        Ok(()) => f.metacopy_pair = true,
        Err(e) => f.metacopy_pair_error = Some(format!("the kernel refused metacopy=on,redirect_dir=on: {e}")),
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metacopy_fits_when_every_lower_path_and_its_slash_fit_redirect_max() {
        assert_eq!(metacopy_fits(&[], Some(256)), Ok(()));
        assert_eq!(metacopy_fits(&[("a", Some(255)), ("b", Some(3))], Some(256)), Ok(()));
        let over = metacopy_fits(&[("a", Some(10)), ("b", Some(256))], Some(256)).unwrap_err();
        assert!(over.contains("layer b") && over.contains("256 bytes") && over.contains("(256)"), "{over}");
        let unknown = metacopy_fits(&[("a", Some(10)), ("old", None)], Some(256)).unwrap_err();
        assert!(unknown.contains("layer old"), "{unknown}");
        assert!(metacopy_fits(&[("a", Some(1))], None).is_err());
        assert_eq!(metacopy_fits(&[("a", Some(4095))], Some(4096)), Ok(()));
    }
}
