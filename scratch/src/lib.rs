//! Loop-mounted scratch filesystems, for tests and the bench harness: each driver gets
//! a fresh filesystem of the same size (ext4, xfs with reflink, or btrfs), so disk use
//! is measured exactly and no driver gets a better disk than another.
//!
//! `mkfs.*` runs as a command (test and bench support, not driver code); the loop
//! device is set up through the loop ioctls and the mount through `mount(2)`. Drop
//! unmounts, detaches and deletes, also when a test panics.
//!
//! Every scratch directory carries an owner file (pid and process start time) and is
//! listed while it lives, so that a signal handler can remove everything this process
//! made ([`release_all`]) and a later process can find and remove what a killed one left
//! behind ([`remove_stale`]).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use nix::mount::{mount, umount2, MntFlags, MsFlags};

// linux/loop.h. These ioctls predate the direction-encoded numbers ("bad" in nix).
const LO_NAME_SIZE: usize = 64;
const LO_KEY_SIZE: usize = 32;
const LO_FLAGS_AUTOCLEAR: u32 = 4;

#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; LO_KEY_SIZE],
    lo_init: [u64; 2],
}

#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

nix::ioctl_none_bad!(loop_ctl_get_free, 0x4C82);
nix::ioctl_write_ptr_bad!(loop_configure, 0x4C0A, LoopConfig);
nix::ioctl_none_bad!(loop_clr_fd, 0x4C01);

/// The filesystem to make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsKind {
    Ext4,
    /// xfs with `reflink=1` (and `ftype=1`, which overlayfs needs).
    Xfs,
    Btrfs,
}

impl FsKind {
    pub fn name(self) -> &'static str {
        match self {
            FsKind::Ext4 => "ext4",
            FsKind::Xfs => "xfs",
            FsKind::Btrfs => "btrfs",
        }
    }
    fn mkfs(self, image: &Path) -> Command {
        let mut c = match self {
            FsKind::Ext4 => {
                let mut c = Command::new("mkfs.ext4");
                c.args(["-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0"]);
                c
            }
            FsKind::Xfs => {
                let mut c = Command::new("mkfs.xfs");
                c.args(["-q", "-f", "-m", "reflink=1", "-n", "ftype=1"]);
                c
            }
            FsKind::Btrfs => {
                let mut c = Command::new("mkfs.btrfs");
                c.args(["-q", "-f"]);
                c
            }
        };
        c.arg(image);
        c
    }
}

/// A mounted scratch filesystem on a loop device.
pub struct ScratchFs {
    kind: FsKind,
    dir: Option<tempfile::TempDir>,
    mountpoint: PathBuf,
    device: PathBuf,
    loop_file: Option<File>,
    mounted: bool,
}

/// An io or system-call error with what was being done in front, its errno kept (a
/// full disk under the loop file is still ENOSPC to the bench's exit code).
fn err(what: impl std::fmt::Display, e: impl Into<io::Error>) -> io::Error {
    driver_core::error::io_context(what.to_string(), e.into())
}

/// A tool that ran and failed (`mkfs.xfs`), in its own words.
fn tool_failed(what: impl std::fmt::Display, said: &str) -> io::Error {
    io::Error::other(format!("{what}: {said}"))
}

/// Attaches `image` to a free loop device; returns the device path and an open handle.
fn attach(image: &Path) -> io::Result<(PathBuf, File)> {
    let backing = OpenOptions::new().read(true).write(true).open(image)?;
    let control =
        OpenOptions::new().read(true).write(true).open("/dev/loop-control").map_err(|e| err("/dev/loop-control", e))?;
    for _ in 0..20 {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number.
        let n = unsafe { loop_ctl_get_free(control.as_raw_fd()) }.map_err(|e| err("LOOP_CTL_GET_FREE", e))?;
        let device = PathBuf::from(format!("/dev/loop{n}"));
        let dev = OpenOptions::new().read(true).write(true).open(&device).map_err(|e| err(device.display(), e))?;
        let mut cfg: LoopConfig = unsafe { std::mem::zeroed() };
        cfg.fd = backing.as_raw_fd() as u32;
        // Detach by itself when the last user (our handle, the mount) goes away.
        cfg.info.lo_flags = LO_FLAGS_AUTOCLEAR;
        // SAFETY: cfg is a valid, initialised loop_config.
        match unsafe { loop_configure(dev.as_raw_fd(), &cfg) } {
            Ok(_) => return Ok((device, dev)),
            // Another process took this device between GET_FREE and CONFIGURE.
            Err(nix::errno::Errno::EBUSY) => continue,
            Err(e) => return Err(err(format!("LOOP_CONFIGURE {}", device.display()), e)),
        }
    }
    Err(io::Error::other("no free loop device after 20 tries"))
}

impl ScratchFs {
    /// Makes a `size_bytes` filesystem of `kind` in a sparse image file and mounts it.
    pub fn new(kind: FsKind, size_bytes: u64) -> io::Result<ScratchFs> {
        let dir = owned_dir("strata-scratch-")?;
        let image = dir.path().join("fs.img");
        File::create(&image)?.set_len(size_bytes)?;
        let out = kind.mkfs(&image).output().map_err(|e| err(format!("mkfs.{} (is it installed?)", kind.name()), e))?;
        if !out.status.success() {
            return Err(tool_failed(format!("mkfs.{}", kind.name()), String::from_utf8_lossy(&out.stderr).trim()));
        }
        let mountpoint = dir.path().join("mnt");
        fs::create_dir(&mountpoint)?;
        let (device, loop_file) = attach(&image)?;
        let mut s = ScratchFs { kind, dir: Some(dir), mountpoint, device, loop_file: Some(loop_file), mounted: false };
        mount(Some(&s.device), &s.mountpoint, Some(kind.name()), MsFlags::empty(), None::<&str>).map_err(|e| {
            err(format!("mount {} on {} ({})", s.device.display(), s.mountpoint.display(), kind.name()), e)
        })?;
        s.mounted = true;
        Ok(s)
    }

    /// Mounts the filesystem of `kind` already in `image` (made by another
    /// [`ScratchFs`] or by hand; a file served through FUSE too) on a loop device, with
    /// the mount data `options` (`commit=1`, say). Drop unmounts and detaches; the image
    /// stays.
    pub fn mount_image(kind: FsKind, image: &Path, options: &str) -> io::Result<ScratchFs> {
        let dir = owned_dir("strata-mount-")?;
        let mountpoint = dir.path().join("mnt");
        fs::create_dir(&mountpoint)?;
        let (device, loop_file) = attach(image)?;
        let mut s = ScratchFs { kind, dir: Some(dir), mountpoint, device, loop_file: Some(loop_file), mounted: false };
        let data = Some(options).filter(|o| !o.is_empty());
        mount(Some(&s.device), &s.mountpoint, Some(kind.name()), MsFlags::empty(), data).map_err(|e| {
            err(format!("mount {} on {} ({} {options})", s.device.display(), s.mountpoint.display(), kind.name()), e)
        })?;
        s.mounted = true;
        Ok(s)
    }

    /// Makes a `size_bytes` filesystem of `kind` in the file `image` (sparse), not mounted.
    pub fn make_image(kind: FsKind, image: &Path, size_bytes: u64) -> io::Result<()> {
        File::create(image)?.set_len(size_bytes)?;
        let out = kind.mkfs(image).output().map_err(|e| err(format!("mkfs.{} (is it installed?)", kind.name()), e))?;
        if !out.status.success() {
            return Err(tool_failed(format!("mkfs.{}", kind.name()), String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.mountpoint
    }
    pub fn device(&self) -> &Path {
        &self.device
    }
    pub fn kind(&self) -> FsKind {
        self.kind
    }
}

/// Where scratch images go: the project's scratch dir if set, else the system temp dir.
pub fn scratch_parent() -> PathBuf {
    std::env::var_os("STRATA_SCRATCH_DIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir)
}

const OWNER: &str = ".strata-owner";

/// The scratch directories this process made and has not removed yet.
static LIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
/// Set by [`release_all`]: no new scratch after it.
static STOPPING: AtomicBool = AtomicBool::new(false);

/// The start time of process `pid` in clock ticks since boot (field 22 of its stat),
/// so that a reused pid does not pass for the owner.
fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    stat.rsplit_once(')')?.1.split_whitespace().nth(19)?.parse().ok()
}

/// Whether the process named in an owner file still runs. Without a start time to
/// compare (unreadable /proc), a live pid counts as the owner: better to leave a dead
/// process's scratch than to unmount a live one's.
fn owner_alive(owner: &str) -> bool {
    let mut it = owner.split_whitespace();
    match (it.next().and_then(|p| p.parse::<u32>().ok()), it.next().and_then(|t| t.parse::<u64>().ok())) {
        (Some(pid), Some(t)) if t != 0 => start_time(pid) == Some(t),
        (Some(pid), _) => Path::new(&format!("/proc/{pid}")).exists(),
        _ => false,
    }
}

/// A directory in [`scratch_parent`] with this process's owner file, listed until dropped.
fn owned_dir(prefix: &str) -> io::Result<tempfile::TempDir> {
    owned_dir_in(&scratch_parent(), prefix)
}

fn owned_dir_in(parent: &Path, prefix: &str) -> io::Result<tempfile::TempDir> {
    let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    if STOPPING.load(Ordering::SeqCst) {
        return Err(io::Error::new(io::ErrorKind::Interrupted, "interrupted: no new scratch"));
    }
    let dir = tempfile::Builder::new().prefix(prefix).tempdir_in(parent)?;
    let me = std::process::id();
    fs::write(dir.path().join(OWNER), format!("{me} {}\n", start_time(me).unwrap_or(0)))?;
    live.push(dir.path().to_path_buf());
    Ok(dir)
}

fn forget(dir: &Path) {
    LIVE.lock().unwrap_or_else(|e| e.into_inner()).retain(|d| d != dir);
}

/// A scratch work directory (no filesystem of its own), removed on drop, by
/// [`release_all`], or by a later [`remove_stale`] when this process is killed.
pub struct WorkDir(Option<tempfile::TempDir>);

impl WorkDir {
    pub fn path(&self) -> &Path {
        self.0.as_ref().expect("live").path()
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Some(d) = self.0.take() {
            forget(d.path());
            let _ = d.close();
        }
    }
}

pub fn work_dir(prefix: &str) -> io::Result<WorkDir> {
    owned_dir(prefix).map(|d| WorkDir(Some(d)))
}

/// A [`work_dir`] in `parent` (a tmpfs, for files that are written over and over).
pub fn work_dir_in(parent: &Path, prefix: &str) -> io::Result<WorkDir> {
    owned_dir_in(parent, prefix).map(|d| WorkDir(Some(d)))
}

/// Loop devices whose backing file lies under `dir`.
pub fn loops_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir("/sys/block") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let backing = fs::read_to_string(e.path().join("loop/backing_file")).ok()?;
            let backing = backing.trim_end().trim_end_matches(" (deleted)");
            Path::new(backing).starts_with(dir).then(|| PathBuf::from(format!("/dev/{name}")))
        })
        .collect()
}

/// Unmounts everything under `dir` (deepest first, lazily: a process still inside must
/// not keep it), detaches the loop devices backed by files in it, and deletes it.
/// Returns (mounts, loop devices) released.
fn clean(dir: &Path) -> (usize, usize) {
    let mounts = driver_core::sys::mounts_under(dir);
    for m in &mounts {
        let _ = umount2(m, MntFlags::MNT_DETACH);
    }
    let loops = loops_under(dir);
    for dev in &loops {
        if let Ok(f) = OpenOptions::new().read(true).open(dev) {
            // SAFETY: LOOP_CLR_FD takes no argument.
            let _ = unsafe { loop_clr_fd(f.as_raw_fd()) };
        }
    }
    let _ = fs::remove_dir_all(dir);
    (mounts.len(), loops.len())
}

/// Removes every scratch filesystem, mount, loop device and directory this process
/// made, and refuses new ones: for a SIGINT/SIGTERM handler, before it exits. Returns
/// how many directories it removed.
pub fn release_all() -> usize {
    let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    STOPPING.store(true, Ordering::SeqCst);
    let n = live.len();
    for dir in live.drain(..) {
        clean(&dir);
    }
    n
}

/// Finds scratch that a killed process left in [`scratch_parent`] (its owner is gone)
/// and removes it: mounts, loop devices, files. Returns one line per directory removed.
pub fn remove_stale() -> Vec<String> {
    let parent = scratch_parent();
    let Ok(entries) = fs::read_dir(&parent) else { return Vec::new() };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("strata-") {
            continue;
        }
        // No owner file: not ours to judge (or still being made).
        let Ok(owner) = fs::read_to_string(e.path().join(OWNER)) else { continue };
        if owner_alive(&owner) {
            continue;
        }
        let (mounts, loops) = clean(&e.path());
        out.push(format!(
            "removed scratch left by a killed process (pid {}): {} ({mounts} mount(s), {loops} loop device(s))",
            owner.split_whitespace().next().unwrap_or("?"),
            e.path().display()
        ));
    }
    out
}

impl Drop for ScratchFs {
    fn drop(&mut self) {
        if self.mounted {
            // Anything still mounted inside (a driver's overlay mounts) goes first.
            for m in driver_core::sys::mounts_under(&self.mountpoint) {
                if m != self.mountpoint {
                    let _ = umount2(&m, MntFlags::MNT_DETACH);
                }
            }
            let mut done = false;
            for _ in 0..10 {
                if umount2(&self.mountpoint, MntFlags::empty()).is_ok() {
                    done = true;
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            if !done {
                let _ = umount2(&self.mountpoint, MntFlags::MNT_DETACH);
            }
        }
        if let Some(f) = self.loop_file.take() {
            // SAFETY: LOOP_CLR_FD takes no argument.
            let _ = unsafe { loop_clr_fd(f.as_raw_fd()) };
        }
        if let Some(d) = self.dir.take() {
            forget(d.path());
            let _ = d.close();
        }
    }
}

/// Whether a test that needs root (mounts, devices, loop devices) can run; see
/// [`require`].
pub fn privileged(reason: &str) -> bool {
    require(reason, (!nix::unistd::geteuid().is_root()).then_some("root"))
}

/// Whether the test `reason` can run on this host: `missing` names what it needs and
/// the host lacks (root, a tool, a kernel feature). Then it is skipped with a printed
/// reason, unless `STRATA_REQUIRE_PRIVILEGED=1` (as CI sets), where a skip would hide a
/// missing capability: then it fails.
pub fn require(reason: &str, missing: Option<&str>) -> bool {
    let Some(missing) = missing else { return true };
    if std::env::var("STRATA_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
        panic!("{reason} needs {missing}, and STRATA_REQUIRE_PRIVILEGED=1 forbids skipping it");
    }
    eprintln!("skipped: {reason}: needs {missing}");
    false
}

/// The filesystem type under `path`.
pub fn fs_type(path: &Path) -> io::Result<String> {
    driver_core::sys::fs_type(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A loop, mount or mkfs step's error keeps its errno under the words that say
    /// which step (it was a string: ENOSPC under the loop file read as exit 1, not 7).
    #[test]
    fn a_steps_error_keeps_its_errno() {
        let e = err("mount /dev/loop9 on /x (ext4)", nix::errno::Errno::ENOSPC);
        assert_eq!(driver_core::error::os_error(&e), Some(nix::libc::ENOSPC));
        assert_eq!(e.to_string(), "mount /dev/loop9 on /x (ext4): No space left on device (os error 28)");
        let e = err("/dev/loop-control", io::Error::from_raw_os_error(nix::libc::EACCES));
        assert_eq!(driver_core::error::os_error(&e), Some(nix::libc::EACCES));
    }

    fn attached(device: &Path) -> bool {
        let name = device.file_name().unwrap().to_string_lossy().into_owned();
        fs::read_to_string(format!("/sys/block/{name}/loop/backing_file")).is_ok()
    }

    #[test]
    fn each_kind_mounts_and_is_released() {
        if !privileged("scratch filesystem tests") {
            return;
        }
        for kind in [FsKind::Ext4, FsKind::Xfs, FsKind::Btrfs] {
            let s = ScratchFs::new(kind, 320 << 20).unwrap();
            fs::write(s.path().join("f"), b"x").unwrap();
            assert_eq!(fs_type(s.path()).unwrap(), kind.name());
            let (dev, mnt) = (s.device().to_path_buf(), s.path().to_path_buf());
            assert!(attached(&dev));
            drop(s);
            assert!(driver_core::sys::mounts_under(&mnt).is_empty(), "{kind:?} still mounted");
            assert!(!attached(&dev), "{} still attached", dev.display());
        }
    }

    #[test]
    fn an_owner_is_alive_only_while_its_process_runs() {
        let me = std::process::id();
        assert!(owner_alive(&format!("{me} {}", start_time(me).unwrap())));
        assert!(!owner_alive(&format!("{me} {}", start_time(me).unwrap() + 1)), "a reused pid is not the owner");
        assert!(owner_alive(&format!("{me} 0")), "no start time: the live pid counts");
        assert!(!owner_alive(&format!("{} 5", u32::MAX - 1)));
        assert!(!owner_alive("garbage"));
    }

    #[test]
    fn a_panic_still_releases_it() {
        if !privileged("scratch filesystem tests") {
            return;
        }
        let mut seen = None;
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let s = ScratchFs::new(FsKind::Ext4, 64 << 20).unwrap();
            seen = Some((s.device().to_path_buf(), s.path().to_path_buf()));
            panic!("test failure");
        }));
        assert!(r.is_err());
        let (dev, mnt) = seen.unwrap();
        assert!(driver_core::sys::mounts_under(&mnt).is_empty());
        assert!(!attached(&dev));
    }
}
