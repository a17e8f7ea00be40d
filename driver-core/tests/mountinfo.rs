//! Mount points whose paths the kernel escapes in mountinfo (space, tab, newline,
//! backslash) are found by `sys::is_mount_point` and `sys::mounts_under`.

use std::path::{Path, PathBuf};

use driver_core::sys;

/// Unmounts on drop, also when an assertion fails.
struct Mounted(PathBuf);
impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = sys::unmount(&self.0);
    }
}

#[test]
fn escaped_mount_points_are_found() {
    if !strata_scratch::privileged("mountinfo test (mounts a tmpfs)") {
        return;
    }
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut guards = Vec::new();
    let mut want = Vec::new();
    for name in ["plain", "a space", "a\ttab", "a\nnewline", "back\\slash", "\\040 literal"] {
        let dir = tmp.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        assert!(!sys::is_mount_point(&dir), "{name:?} before mounting");
        nix::mount::mount(Some("tmpfs"), &dir, Some("tmpfs"), nix::mount::MsFlags::empty(), Some("size=1m")).unwrap();
        guards.push(Mounted(dir.clone()));
        assert!(sys::is_mount_point(&dir), "{name:?} is mounted");
        want.push(dir);
    }
    let mut got = sys::mounts_under(tmp.path());
    got.sort();
    want.sort();
    assert_eq!(got, want);
    drop(guards);
    assert_eq!(sys::mounts_under(tmp.path()), Vec::<PathBuf>::new());
    assert!(!sys::is_mount_point(&tmp.path().join(Path::new("a space"))));
}

/// The one unmount (`sys::unmount`, also behind `Syscalls::unmount`): a mount goes, and
/// a path that is not mounted (EINVAL) or no longer exists (ENOENT) is already as
/// asked. The syscall layer's own copy failed on ENOENT and turned errors into strings.
#[test]
fn one_unmount_for_mounted_unmounted_and_missing_paths() {
    if !strata_scratch::privileged("unmount test (mounts a tmpfs)") {
        return;
    }
    use driver_core::syscall::{Real, Syscalls};
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let dir = tmp.path().join("m");
    std::fs::create_dir(&dir).unwrap();
    for how in ["sys", "syscalls"] {
        let unmount = |p: &Path| if how == "sys" { sys::unmount(p) } else { Real.unmount(p) };
        nix::mount::mount(Some("tmpfs"), &dir, Some("tmpfs"), nix::mount::MsFlags::empty(), Some("size=1m")).unwrap();
        let _guard = Mounted(dir.clone());
        unmount(&dir).unwrap();
        assert!(!sys::is_mount_point(&dir), "{how}: unmounted");
        unmount(&dir).unwrap_or_else(|e| panic!("{how}: not mounted is fine: {e}"));
        unmount(&tmp.path().join("missing")).unwrap_or_else(|e| panic!("{how}: a missing path is fine: {e}"));
    }
}
