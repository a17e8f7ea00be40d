//! The conformance suite: one set of behaviours that every driver must show, run
//! unchanged by each driver crate's tests (as containerd's `snapshots/testsuite` and
//! moby's `graphtest` are). A behaviour this suite does not pin is not yet a behaviour.
//!
//! A driver's test file hands its factory to [`conformance_tests!`](crate::conformance_tests),
//! which makes one `#[test]` per case, so a case runs alone by name:
//!
//! ```ignore
//! strata_testkit::conformance_tests!("vfs", Backing::TempDir, |root| Ok(Box::new(VfsDriver::new(root)?)));
//! // cargo test -p driver-vfs --test conformance whiteouts
//! ```
//!
//! Each case gets a fresh driver folder under one base folder that the whole test
//! binary shares (a loop-mounted filesystem is made once); whatever a case left mounted
//! under its folder is unmounted when it ends, also when it panics, and the shared
//! filesystem goes when the binary exits.
//!
//! To add a case: write `pub fn my_case(ctx: &Ctx)` in one of the case modules
//! (`conformance/*.rs`) and add its name to the list in
//! [`conformance_tests!`](crate::conformance_tests); every driver runs it.

use std::collections::BTreeSet;
use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use driver_core::driver::{Change, Driver};
use driver_core::error::Result;
use driver_core::ReservedXattrs;
use strata_archive::diff::{naive_diff, write_tar};
pub use strata_archive::tarbuild::{EntryMeta, TarBuilder};
use strata_scratch::{FsKind, ScratchFs};

mod exact;
pub use exact::*;
mod layers;
pub use layers::*;
mod scripted;
pub use scripted::*;
mod user_changes;
pub use user_changes::*;
pub mod prop;

/// Makes a driver whose folder is the given (empty) directory.
pub type Factory = fn(&Path) -> Result<Box<dyn Driver>>;

/// What a case gets: its driver and a scratch folder beside the driver's.
pub struct Ctx {
    pub driver: Box<dyn Driver>,
    pub root: PathBuf,
    /// A folder outside the driver's root, for hostile tars to aim at.
    pub outside: PathBuf,
}

/// Makes one `#[test]` per conformance case for a driver:
/// `conformance_tests!("name", Backing::..., factory)`, where the factory is a
/// non-capturing closure `|root: &Path| -> Result<Box<dyn Driver>>`. Cases skip (with a
/// printed reason) without root, unless `STRATA_REQUIRE_PRIVILEGED=1`.
#[macro_export]
macro_rules! conformance_tests {
    ($driver:literal, $backing:expr, $factory:expr) => {
        $crate::conformance_tests!(@cases ($driver, $backing, $factory)
            apply_and_read_back
            whiteouts_hide_lower_entries
            opaque_directories_hide_lower_content
            whiteout_keeps_what_the_same_tar_made
            file_and_directory_replace_each_other
            directory_deleted_then_recreated_in_a_later_layer
            special_files_and_metadata
            sparse_files_keep_their_holes
            directory_mtimes_are_the_tars
            remove_refuses_while_mounted_or_parent
            mounts_are_shared_and_counted
            diff_of_scripted_changes
            diff_of_applied_layer_replays
            bad_input_leaves_nothing
            hostile_tars_stay_inside
            writes_through_lower_symlinks_are_refused
            zero_zero_char_device_is_refused
            usage_and_status
            recreated_directory_hides_all_lower_descendants
            whiteout_names_are_refused
            overlay_reserved_things_are_refused
            hardlink_split_and_join_are_carried
            whiteout_deeper_than_path_max_applies
            write_to_lower_hardlink
            every_top_level_name_replaced
            hardlink_partner_becomes_a_directory
            uncommitted_inode_changes_are_in_the_diff
            renamed_directory_carries_all_its_children
            forty_long_hardlink_names_are_all_carried
            changes_beyond_path_max_round_trip
            layer_with_path_beyond_path_max_is_removed
            metadata_changes_of_big_lower_files
            renamed_lower_tree_with_nested_directories
            rename_of_a_renamed_directory
            parent_renamed_after_its_child_was
            new_directory_at_a_renamed_directorys_old_name
            file_moved_out_of_a_renamed_directory
            hardlinked_lower_file_chmodded
            lower_directory_moved_into_a_renamed_directory
        );
    };
    (@cases ($driver:literal, $backing:expr, $factory:expr) $($case:ident)*) => {
        $(
            #[test]
            fn $case() {
                $crate::conformance::run_case($driver, $backing, $factory, stringify!($case), $crate::conformance::$case);
            }
        )*
    };
}

/// Where a test binary's cases put their driver folders.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backing {
    /// A temporary directory on the system temp dir's filesystem.
    TempDir,
    /// A fresh loop-mounted filesystem of this kind and size, shared by the binary.
    Scratch(FsKind, u64),
}

/// What the shared base folder lives on (a temp dir or a scratch filesystem), kept
/// until the process exits and then dropped, which removes it.
static SHARED: Mutex<Option<Box<dyn Send>>> = Mutex::new(None);
static BASE: OnceLock<PathBuf> = OnceLock::new();

extern "C" fn release_shared() {
    // Runs at exit(3), which the test harness reaches also when tests failed: the
    // scratch filesystem is unmounted and its loop device detached.
    if let Ok(mut held) = SHARED.lock() {
        drop(held.take());
    }
}

/// The folder the whole test binary shares (made on first use, released at exit),
/// or `None` when the tests are skipped for want of root.
pub fn shared_base(backing: Backing) -> Option<&'static Path> {
    if !strata_scratch::privileged("the conformance suite (mounts, devices, owners)") {
        return None;
    }
    Some(BASE.get_or_init(|| {
        let (held, path): (Box<dyn Send>, PathBuf) = match backing {
            Backing::TempDir => {
                let d = tempfile::Builder::new().prefix("strata-suite-").tempdir().expect("a temp dir");
                let p = d.path().to_path_buf();
                (Box::new(d), p)
            }
            Backing::Scratch(kind, size) => {
                let s = ScratchFs::new(kind, size)
                    .unwrap_or_else(|e| panic!("a loop-mounted {} for the suite: {e}", kind.name()));
                let p = s.path().to_path_buf();
                (Box::new(s), p)
            }
        };
        *SHARED.lock().unwrap() = Some(held);
        // SAFETY: registers a plain extern "C" function with no arguments.
        unsafe { libc::atexit(release_shared) };
        path
    }))
}

/// Cases that get a scratch filesystem of their own when the binary's is shared: on
/// btrfs any fsync of a directory that lost a name (which other cases do all along)
/// commits the transaction, writing out the changes this case must find before they
/// are committed, and a diff that missed them would pass.
const ON_A_FILESYSTEM_OF_ITS_OWN: &[&str] = &["uncommitted_inode_changes_are_in_the_diff"];

/// Runs one case in a fresh driver folder under the binary's shared base; unmounts what
/// it left mounted and then panics with its failure, naming the driver and the case.
pub fn run_case(driver_name: &str, backing: Backing, factory: Factory, name: &str, case: fn(&Ctx)) {
    let Some(shared) = shared_base(backing) else { return };
    let own = match backing {
        Backing::Scratch(kind, size) if ON_A_FILESYSTEM_OF_ITS_OWN.contains(&name) => Some(
            ScratchFs::new(kind, size).unwrap_or_else(|e| panic!("a loop-mounted {} for {name}: {e}", kind.name())),
        ),
        _ => None,
    };
    let base = own.as_ref().map_or(shared, |s| s.path());
    let dir = base.join(name);
    let root = dir.join("driver");
    let outside = dir.join("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("secret"), b"secret").unwrap();
    let result = catch_unwind(AssertUnwindSafe(|| {
        let driver = factory(&root).unwrap_or_else(|e| panic!("cannot make the driver: {e}"));
        let ctx = Ctx { driver, root: root.clone(), outside: outside.clone() };
        case(&ctx);
        // Nothing a hostile tar did may have reached outside the root.
        assert_eq!(fs::read(outside.join("secret")).unwrap(), b"secret", "outside/secret was changed");
        let names: Vec<_> = fs::read_dir(&outside).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("secret")], "something was written outside the root");
    }));
    unmount_all_under(&dir);
    if let Err(e) = result {
        eprintln!("conformance {driver_name}: {name} failed");
        std::panic::resume_unwind(e);
    }
    // A passed case's folder goes now, so a long binary does not fill the disk.
    let _ = fs::remove_dir_all(&dir);
}

pub use driver_core::sys::mounts_under;

fn unmount_all_under(dir: &Path) {
    for m in mounts_under(dir) {
        let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Unmounts whatever is left mounted under its folder when dropped: a failed check
/// leaves views mounted.
pub struct UnmountUnder(pub std::path::PathBuf);

impl Drop for UnmountUnder {
    fn drop(&mut self) {
        unmount_all_under(&self.0);
    }
}

// ---------------------------------------------------------------------------------
// Helpers for the cases.

fn apply(ctx: &Ctx, id: &str, parent: Option<&str>, tar: &[u8]) -> Result<u64> {
    ctx.driver.apply_diff(id, parent, &mut &tar[..])
}

fn must_apply(ctx: &Ctx, id: &str, parent: Option<&str>, tar: &[u8]) {
    apply(ctx, id, parent, tar).unwrap_or_else(|e| panic!("apply {id}: {e}"));
}

/// Mounts `id`, runs `f` on the view, unmounts.
fn with_view<T>(ctx: &Ctx, id: &str, f: impl FnOnce(&Path) -> T) -> T {
    let path = ctx.driver.mount(id).unwrap_or_else(|e| panic!("mount {id}: {e}"));
    let out = catch_unwind(AssertUnwindSafe(|| f(&path)));
    ctx.driver.unmount(id).unwrap_or_else(|e| panic!("unmount {id}: {e}"));
    match out {
        Ok(v) => v,
        Err(p) => std::panic::resume_unwind(p),
    }
}

/// The driver's changes and diff tar of layer `id`, checked against the naive walk over
/// the mounted views of `id` and its parent `parent` (moby's `NaiveDiffDriver`): the
/// same changes, the same tar bytes. Returns them.
///
/// The driver's diff is taken first: the walk reads every file, and the atimes that
/// updates could write out a change the driver's own diff would otherwise miss.
fn diff_same_as_naive(ctx: &Ctx, id: &str, parent: &str) -> (Vec<Change>, Vec<u8>) {
    let changes = ctx.driver.changes(id).unwrap_or_else(|e| panic!("changes: {e}"));
    let mut tar = Vec::new();
    ctx.driver.diff(id, &mut tar).unwrap_or_else(|e| panic!("diff: {e}"));
    let naive = with_view(ctx, id, |v| {
        with_view(ctx, parent, |b| {
            let naive =
                naive_diff(id, v, Some(b), &ReservedXattrs::none()).unwrap_or_else(|e| panic!("the naive walk: {e}"));
            let mut tar = Vec::new();
            write_tar(id, naive.entries, &naive.reserved, &mut tar)
                .unwrap_or_else(|e| panic!("the naive walk's tar: {e}"));
            (naive.changes, tar)
        })
    });
    assert_eq!(changes, naive.0, "changes(): the driver's vs the naive walk's");
    assert_eq!(tar_listing(&tar), tar_listing(&naive.1), "diff(): the driver's entries vs the naive walk's");
    assert!(tar == naive.1, "diff(): the driver's tar and the naive walk's differ in bytes");
    (changes, tar)
}

fn names(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn read(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn ids(ctx: &Ctx) -> Vec<String> {
    ctx.driver.list().unwrap().into_iter().map(|l| l.id).collect()
}

/// Staging must be empty once a call returns (nothing half-made left behind).
fn assert_no_leftovers(ctx: &Ctx) {
    let staging = ctx.root.join("staging");
    if staging.exists() {
        let left: Vec<_> = fs::read_dir(&staging).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(left.is_empty(), "staging not empty: {left:?}");
    }
}

fn base_tar() -> Vec<u8> {
    TarBuilder::new()
        .dir("etc")
        .file("etc/hostname", b"strata\n")
        .file_with("etc/shadow", b"root:*:\n", EntryMeta::mode(0o640))
        .dir("usr")
        .dir("usr/bin")
        .file_with("usr/bin/tool", b"#!/bin/sh\necho tool\n", EntryMeta::mode(0o755))
        .symlink("bin", "usr/bin")
        .dir("a")
        .file("a/x", b"x")
        .file("a/y", b"y")
        .dir("b")
        .file("b/z", b"z")
        .build()
}
