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
//! To add a case: write `pub fn my_case(ctx: &Ctx)` below and add its name to the list
//! in [`conformance_tests!`](crate::conformance_tests); every driver runs it.

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use crate::tree::{CompareOptions, Tree};
use driver_core::driver::{Change, ChangeKind, Driver};
use driver_core::error::{Cause, Result};
use driver_core::ReservedXattrs;
use strata_archive::diff::{naive_diff, write_tar};
pub use strata_archive::tarbuild::{EntryMeta, TarBuilder};
use strata_scratch::{FsKind, ScratchFs};

mod exact;
pub use exact::*;
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

// ---------------------------------------------------------------------------------
// The cases.

pub fn apply_and_read_back(ctx: &Ctx) {
    let size = apply(ctx, "base", None, &base_tar()).unwrap();
    assert_eq!(size, 7 + 8 + 20 + 3, "applied size is the content bytes");
    let child = TarBuilder::new().dir("etc").file("etc/hostname", b"child\n").file("etc/new", b"new").build();
    must_apply(ctx, "child", Some("base"), &child);
    let info = ctx.driver.get("child").unwrap();
    assert_eq!(info.parent.as_deref(), Some("base"));
    assert!(info.diff_id.as_deref().unwrap().starts_with("sha256:"));
    assert_eq!(info.diff_id.as_deref().unwrap(), driver_core::digest::sha256(&child));
    with_view(ctx, "child", |v| {
        assert_eq!(read(&v.join("etc/hostname")), b"child\n");
        assert_eq!(read(&v.join("etc/new")), b"new");
        assert_eq!(read(&v.join("usr/bin/tool")), b"#!/bin/sh\necho tool\n");
        assert_eq!(fs::read_link(v.join("bin")).unwrap(), Path::new("usr/bin"));
        assert_eq!(fs::metadata(v.join("etc/shadow")).unwrap().mode() & 0o7777, 0o640);
    });
    with_view(ctx, "base", |v| assert_eq!(read(&v.join("etc/hostname")), b"strata\n"));
    assert_eq!(ids(ctx), vec!["base", "child"]);
    assert!(matches!(apply(ctx, "child", Some("base"), &child).unwrap_err().cause, Cause::Exists));
    assert!(matches!(apply(ctx, "x", Some("nope"), &child).unwrap_err().cause, Cause::ParentNotFound(_)));
    assert_no_leftovers(ctx);
}

pub fn whiteouts_hide_lower_entries(ctx: &Ctx) {
    must_apply(ctx, "base", None, &base_tar());
    must_apply(
        ctx,
        "top",
        Some("base"),
        &TarBuilder::new().whiteout("a/x").whiteout("b").whiteout("nothing-here").build(),
    );
    with_view(ctx, "top", |v| {
        assert_eq!(names(&v.join("a")), set(&["y"]));
        assert!(!v.join("b").exists());
        assert!(!v.join("nothing-here").exists());
    });
    with_view(ctx, "base", |v| assert!(v.join("b/z").exists(), "a whiteout must not touch the parent layer"));
}

pub fn opaque_directories_hide_lower_content(ctx: &Ctx) {
    must_apply(ctx, "base", None, &base_tar());
    // The marker before and after the directory's new entries.
    must_apply(ctx, "before", Some("base"), &TarBuilder::new().dir("a").opaque("a").file("a/new", b"n").build());
    must_apply(ctx, "after", Some("base"), &TarBuilder::new().dir("a").file("a/new", b"n").opaque("a").build());
    // No directory entry at all: the marker alone makes the directory opaque.
    must_apply(ctx, "bare", Some("base"), &TarBuilder::new().opaque("b").build());
    for id in ["before", "after"] {
        with_view(ctx, id, |v| assert_eq!(names(&v.join("a")), set(&["new"]), "layer {id}"));
    }
    with_view(ctx, "bare", |v| {
        assert!(v.join("b").is_dir());
        assert_eq!(names(&v.join("b")), set(&[]));
        assert_eq!(names(&v.join("a")), set(&["x", "y"]));
    });
}

pub fn whiteout_keeps_what_the_same_tar_made(ctx: &Ctx) {
    must_apply(ctx, "base", None, &base_tar());
    let t = TarBuilder::new()
        .file("a/x", b"mine")
        .whiteout("a/x")
        .whiteout("b")
        .dir("b")
        .file("b/n", b"n")
        .file("etc/keep", b"k")
        .whiteout("etc")
        .build();
    must_apply(ctx, "top", Some("base"), &t);
    with_view(ctx, "top", |v| {
        assert_eq!(read(&v.join("a/x")), b"mine");
        assert_eq!(names(&v.join("b")), set(&["n"]), "b was whited out, then made again by the same tar");
        assert_eq!(names(&v.join("etc")), set(&["keep"]), "etc: only what this tar put there");
    });
}

pub fn file_and_directory_replace_each_other(ctx: &Ctx) {
    must_apply(ctx, "base", None, &base_tar());
    // a (directory) becomes a file, etc/hostname (file) a directory.
    let t = TarBuilder::new().file("a", b"now a file").dir("etc/hostname").file("etc/hostname/inner", b"i").build();
    must_apply(ctx, "l2", Some("base"), &t);
    // And back: a directory again, which must not show the old a/x and a/y.
    must_apply(ctx, "l3", Some("l2"), &TarBuilder::new().dir("a").file("a/fresh", b"f").build());
    // Within one tar: a later entry for the same path replaces the earlier one.
    let same = TarBuilder::new().dir("q").file("q/x", b"x").file("q", b"file wins").file("r", b"r").dir("r").build();
    must_apply(ctx, "l4", Some("base"), &same);
    with_view(ctx, "l2", |v| {
        assert_eq!(read(&v.join("a")), b"now a file");
        assert_eq!(names(&v.join("etc/hostname")), set(&["inner"]));
    });
    with_view(ctx, "l3", |v| assert_eq!(names(&v.join("a")), set(&["fresh"])));
    with_view(ctx, "l4", |v| {
        assert_eq!(read(&v.join("q")), b"file wins");
        assert!(v.join("r").is_dir());
        assert_eq!(names(&v.join("r")), set(&[]));
    });
}

pub fn directory_deleted_then_recreated_in_a_later_layer(ctx: &Ctx) {
    // BuildKit #2614: L1 has d/a, L2 deletes d, L3 makes d again with d/x.
    must_apply(
        ctx,
        "l1",
        None,
        &TarBuilder::new().dir("d").file("d/a", b"a").dir("d/sub").file("d/sub/s", b"s").build(),
    );
    must_apply(ctx, "l2", Some("l1"), &TarBuilder::new().whiteout("d").build());
    must_apply(ctx, "l3", Some("l2"), &TarBuilder::new().dir("d").file("d/x", b"x").dir("d/sub").build());
    with_view(ctx, "l3", |v| {
        assert_eq!(names(&v.join("d")), set(&["sub", "x"]));
        assert_eq!(names(&v.join("d/sub")), set(&[]));
    });
    // Same with a file in between (BuildKit #2710).
    must_apply(ctx, "m2", Some("l1"), &TarBuilder::new().file("d", b"file").build());
    must_apply(ctx, "m3", Some("m2"), &TarBuilder::new().dir("d").build());
    with_view(ctx, "m3", |v| assert_eq!(names(&v.join("d")), set(&[])));
}

pub fn special_files_and_metadata(ctx: &Ctx) {
    let caps = vec![1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]; // cap_net_bind_service, v2
    let t = TarBuilder::new()
        .dir("d")
        .file_with("d/suid", b"s", EntryMeta::mode(0o4755))
        .dir_with("d/sticky", EntryMeta::mode(0o1777))
        .file_with("d/sgid", b"g", EntryMeta::mode(0o2755))
        .file_with("d/bigids", b"u", EntryMeta { uid: 70000, gid: 4_000_000_000, ..Default::default() })
        .file_with(
            "d/xattrs",
            b"x",
            EntryMeta {
                xattrs: vec![("user.strata".into(), b"yes".to_vec()), ("security.capability".into(), caps.clone())],
                ..Default::default()
            },
        )
        .file("d/target", b"linked")
        .hardlink("d/hard", "d/target")
        .symlink("d/sym", "../d/target")
        .device("d/null", tar::EntryType::Char, 1, 3, EntryMeta::mode(0o666))
        .device("d/loop", tar::EntryType::Block, 7, 200, EntryMeta::mode(0o660))
        .device("d/fifo", tar::EntryType::Fifo, 0, 0, EntryMeta::mode(0o600))
        .file(&format!("d/{}", "n".repeat(200)), b"long name")
        .build();
    must_apply(ctx, "l", None, &t);
    with_view(ctx, "l", |v| {
        let md = |p: &str| fs::symlink_metadata(v.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
        assert_eq!(md("d/suid").mode() & 0o7777, 0o4755);
        assert_eq!(md("d/sgid").mode() & 0o7777, 0o2755);
        assert_eq!(md("d/sticky").mode() & 0o7777, 0o1777);
        assert_eq!((md("d/bigids").uid(), md("d/bigids").gid()), (70000, 4_000_000_000));
        let x = strata_archive::diff::xattrs_of(&v.join("d/xattrs"), &ReservedXattrs::none()).unwrap();
        assert!(x.contains(&("user.strata".to_string(), b"yes".to_vec())), "{x:?}");
        assert!(x.iter().any(|(n, val)| n == "security.capability" && *val == caps), "{x:?}");
        assert_eq!(md("d/hard").ino(), md("d/target").ino());
        assert_eq!(md("d/hard").nlink(), 2);
        assert_eq!(fs::read_link(v.join("d/sym")).unwrap(), Path::new("../d/target"));
        use std::os::unix::fs::FileTypeExt;
        assert!(md("d/null").file_type().is_char_device());
        assert_eq!(md("d/null").rdev(), nix::sys::stat::makedev(1, 3));
        assert!(md("d/loop").file_type().is_block_device());
        assert_eq!(md("d/loop").rdev(), nix::sys::stat::makedev(7, 200));
        assert!(md("d/fifo").file_type().is_fifo());
        assert_eq!(read(&v.join(format!("d/{}", "n".repeat(200)))), b"long name");
    });
}

pub fn sparse_files_keep_their_holes(ctx: &Ctx) {
    let size = 256 << 20;
    let mut head = b"head".to_vec();
    head.resize(4096, b'.');
    // GNU sparse maps end with an empty chunk at the real size when the file ends in a hole.
    let t = TarBuilder::new().sparse("sparse", size, &[(0, &head), (128 << 20, &[7u8; 8192]), (size, &[])]).build();
    must_apply(ctx, "l", None, &t);
    with_view(ctx, "l", |v| {
        let md = fs::metadata(v.join("sparse")).unwrap();
        assert_eq!(md.len(), size);
        assert!(md.blocks() * 512 < 4 << 20, "a 256 MiB sparse file took {} bytes on disk", md.blocks() * 512);
        let mut f = fs::File::open(v.join("sparse")).unwrap();
        let mut head = [0u8; 4];
        f.read_exact(&mut head).unwrap();
        assert_eq!(&head, b"head");
        use std::os::unix::fs::FileExt;
        let mut mid = [0u8; 4];
        f.read_exact_at(&mut mid, 128 << 20).unwrap();
        assert_eq!(mid, [7; 4]);
        f.read_exact_at(&mut mid, 64 << 20).unwrap();
        assert_eq!(mid, [0; 4]);
    });
}

pub fn directory_mtimes_are_the_tars(ctx: &Ctx) {
    let t = TarBuilder::new()
        .dir_with("d", EntryMeta { mode: 0o755, mtime: 1_000_000_000, ..Default::default() })
        .dir_with("locked", EntryMeta { mode: 0o000, mtime: 1_100_000_000, ..Default::default() })
        .file("locked/child", b"c")
        .file_with("d/f", b"f", EntryMeta { mtime: 1_200_000_000, ..Default::default() })
        .build();
    must_apply(ctx, "l", None, &t);
    // A whiteout in a lower directory the tar does not describe leaves its times alone.
    must_apply(ctx, "l2", Some("l"), &TarBuilder::new().whiteout("d/f").build());
    for id in ["l", "l2"] {
        with_view(ctx, id, |v| {
            let d = fs::symlink_metadata(v.join("d")).unwrap();
            assert_eq!((d.mtime(), d.mtime_nsec()), (1_000_000_000, 0), "layer {id}: d");
            let l = fs::symlink_metadata(v.join("locked")).unwrap();
            assert_eq!(l.mode() & 0o7777, 0);
            assert_eq!(l.mtime(), 1_100_000_000);
            assert!(v.join("locked/child").exists());
        });
    }
    with_view(ctx, "l", |v| assert_eq!(fs::symlink_metadata(v.join("d/f")).unwrap().mtime(), 1_200_000_000));
}

pub fn remove_refuses_while_mounted_or_parent(ctx: &Ctx) {
    must_apply(ctx, "base", None, &base_tar());
    ctx.driver.create("ctr", Some("base"), true).unwrap();
    assert!(matches!(ctx.driver.remove("base").unwrap_err().cause, Cause::HasChildren(_)));
    ctx.driver.mount("ctr").unwrap();
    assert!(matches!(ctx.driver.remove("ctr").unwrap_err().cause, Cause::Mounted(1)));
    ctx.driver.unmount("ctr").unwrap();
    assert!(matches!(ctx.driver.unmount("ctr").unwrap_err().cause, Cause::NotMounted));
    ctx.driver.remove("ctr").unwrap();
    ctx.driver.remove("base").unwrap();
    assert!(ctx.driver.get("base").unwrap_err().is_not_found());
    assert!(ctx.driver.remove("base").unwrap_err().is_not_found());
    assert!(ctx.driver.mount("base").unwrap_err().is_not_found());
    assert!(ids(ctx).is_empty());
    assert_no_leftovers(ctx);
}

pub fn mounts_are_shared_and_counted(ctx: &Ctx) {
    must_apply(ctx, "base", None, &base_tar());
    ctx.driver.create("ctr", Some("base"), true).unwrap();
    let p1 = ctx.driver.mount("ctr").unwrap();
    let p2 = ctx.driver.mount("ctr").unwrap();
    assert_eq!(p1, p2, "two users share one mount");
    assert_eq!(ctx.driver.get("ctr").unwrap().mounts, 2);
    let before = mounts_under(&ctx.root).len();
    fs::write(p1.join("written"), b"w").unwrap();
    ctx.driver.unmount("ctr").unwrap();
    assert_eq!(read(&p2.join("written")), b"w", "the second user still sees the mount");
    assert_eq!(mounts_under(&ctx.root).len(), before);
    ctx.driver.unmount("ctr").unwrap();
    assert_eq!(ctx.driver.get("ctr").unwrap().mounts, 0);
    assert!(mounts_under(&ctx.root).len() < before || before == 0, "the last unmount releases the mount");
    // Written data survives unmount and remount.
    with_view(ctx, "ctr", |v| assert_eq!(read(&v.join("written")), b"w"));
}

/// The image the scripted changes run over.
pub fn scripted_base_tar() -> Vec<u8> {
    TarBuilder::new()
        .dir("bin")
        .file_with("bin/tool", b"#!/bin/sh\n", EntryMeta::mode(0o755))
        .dir("etc")
        .file("etc/appended", b"hello")
        .file("etc/truncated", b"some data")
        .file("etc/owned", b"owned")
        .file("etc/deleted", b"deleted")
        .file("etc/linked", b"linked")
        .file("etc/tagged", b"tagged")
        .file("etc/x", b"x")
        .dir("lib")
        .dir("opt")
        .dir("opt/tree")
        .dir("opt/tree/a")
        .file("opt/tree/a/b", b"b")
        .file("opt/tree/c", b"c")
        .file("opt/keep", b"keep")
        .dir("var")
        .dir("var/cache")
        .file("var/cache/x", b"x")
        .dir("srv")
        .dir("srv/old")
        .file_with("srv/old/f", b"f", EntryMeta::mode(0o600))
        .dir("srv/old/sub")
        .file("srv/old/sub/g", b"g")
        .build()
}

/// Moves a directory as `mv` does: rename, or (across layers on overlayfs without
/// redirect_dir, where rename gives EXDEV) copy keeping metadata, then delete.
fn move_tree(from: &Path, to: &Path) {
    match fs::rename(from, to) {
        Ok(()) => return,
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {}
        Err(e) => panic!("rename {}: {e}", from.display()),
    }
    fn copy(from: &Path, to: &Path) {
        let md = fs::symlink_metadata(from).unwrap();
        if md.is_dir() {
            fs::create_dir(to).unwrap();
            for e in fs::read_dir(from).unwrap() {
                let e = e.unwrap();
                copy(&e.path(), &to.join(e.file_name()));
            }
        } else {
            fs::copy(from, to).unwrap();
        }
        std::os::unix::fs::lchown(to, Some(md.uid()), Some(md.gid())).unwrap();
        fs::set_permissions(to, fs::Permissions::from_mode(md.mode() & 0o7777)).unwrap();
        set_mtime(to, md.mtime(), md.mtime_nsec());
    }
    copy(from, to);
    fs::remove_dir_all(from).unwrap();
}

/// Sets the atime and mtime of `path` (not following a symlink); panics on failure.
pub fn set_mtime(path: &Path, secs: i64, nsecs: i64) {
    let t = nix::sys::time::TimeSpec::new(secs, nsecs);
    nix::sys::stat::utimensat(None, path, &t, &t, nix::sys::stat::UtimensatFlags::NoFollowSymlink).unwrap();
}

/// Writes `data` at `off` through a shared mapping of the file, as a program that mmaps
/// its data file does (no msync: the kernel writes the pages back when it likes). The
/// range must lie inside the file (a store past its end is SIGBUS).
pub fn mmap_write(path: &Path, off: u64, data: &[u8]) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let f = fs::OpenOptions::new().read(true).write(true).open(path)?;
    let end = off + data.len() as u64;
    if data.is_empty() || end > f.metadata()?.len() {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "mmap write outside the file"));
    }
    let start = off / 4096 * 4096;
    let len = (end - start) as usize;
    // SAFETY: a fresh shared mapping of pages inside the open file's size (checked
    // above), written inside its length and unmapped before returning.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            start as libc::off_t,
        );
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        std::ptr::copy_nonoverlapping(data.as_ptr(), (p as *mut u8).add((off - start) as usize), data.len());
        if libc::munmap(p, len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// `n` small files in directory `dir`: enough items that the image's tree has more than
/// one btree leaf, as real images do.
pub fn padding(t: &mut TarBuilder, dir: &str, n: usize) {
    t.dir(dir);
    for i in 0..n {
        t.file(&format!("{dir}/{i}"), b"padding");
    }
}

/// Opens the directory `rel` under `root` one component at a time (it may be longer
/// than PATH_MAX once joined to `root`).
pub fn open_deep(root: &Path, rel: &Path) -> std::os::fd::OwnedFd {
    use std::os::fd::AsFd;
    let mut fd = driver_core::sys::open_dir(root).unwrap();
    for c in rel.components() {
        fd = driver_core::sys::open_at(fd.as_fd(), c.as_os_str(), nix::fcntl::OFlag::O_DIRECTORY, 0)
            .unwrap_or_else(|e| panic!("open {c:?}: {e}"));
    }
    fd
}

/// The scripted set of changes in a container's view. Every time it leaves is pinned,
/// so two drivers given the same script hold identical trees.
pub fn scripted_changes(v: &Path) {
    use std::os::unix::fs::OpenOptionsExt;
    fs::write(v.join("new.txt"), b"new file").unwrap();
    fs::OpenOptions::new().append(true).open(v.join("etc/appended")).unwrap().write_all(b", world").unwrap();
    fs::OpenOptions::new().write(true).open(v.join("etc/truncated")).unwrap().set_len(0).unwrap();
    fs::set_permissions(v.join("bin/tool"), fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::lchown(v.join("etc/owned"), Some(1000), Some(1000)).unwrap();
    fs::remove_file(v.join("etc/deleted")).unwrap();
    fs::remove_dir_all(v.join("opt/tree")).unwrap();
    fs::remove_dir_all(v.join("var/cache")).unwrap();
    fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o644)
        .open(v.join("var/cache"))
        .unwrap()
        .write_all(b"now a file")
        .unwrap();
    move_tree(&v.join("srv/old"), &v.join("srv/new"));
    fs::hard_link(v.join("etc/linked"), v.join("etc/hard")).unwrap();
    std::os::unix::fs::symlink("../etc/x", v.join("lib/newlink")).unwrap();
    let c = std::ffi::CString::new(v.join("etc/tagged").into_os_string().into_encoded_bytes()).unwrap();
    driver_core::sys::set_xattr(driver_core::sys::XattrTarget::NoFollow(&c), "user.strata", b"tagged").unwrap();
    // Pin times: files first, then the directories that changed.
    for (i, p) in [
        "new.txt",
        "etc/appended",
        "etc/truncated",
        "var/cache",
        "etc/linked",
        "etc/tagged",
        "bin/tool",
        "etc/owned",
        "lib/newlink",
    ]
    .iter()
    .enumerate()
    {
        set_mtime(&v.join(p), 1_700_000_000 + i as i64, 123_456_789);
    }
    for (i, p) in ["etc", "opt", "var", "srv", "lib", "srv/new", "srv/new/sub", ""].iter().enumerate() {
        set_mtime(&v.join(p), 1_700_000_100 + i as i64, 987_654_321);
    }
}

fn change(path: &str, kind: ChangeKind) -> Change {
    Change { path: PathBuf::from(path), kind }
}

/// What `changes` must report for [`scripted_changes`].
pub fn scripted_expected_changes() -> Vec<Change> {
    use ChangeKind::*;
    let mut v = vec![
        change("new.txt", Added),
        change("etc/appended", Modified),
        change("etc/truncated", Modified),
        change("bin/tool", Modified),
        change("etc/owned", Modified),
        change("etc/deleted", Deleted),
        change("opt/tree", Deleted),
        change("var/cache", Modified),
        change("srv/old", Deleted),
        change("srv/new", Added),
        change("srv/new/f", Added),
        change("srv/new/sub", Added),
        change("srv/new/sub/g", Added),
        change("etc/hard", Added),
        change("etc/linked", Modified),
        change("lib/newlink", Added),
        change("etc/tagged", Modified),
        change("etc", Modified),
        change("opt", Modified),
        change("var", Modified),
        change("srv", Modified),
        change("lib", Modified),
    ];
    v.sort();
    v
}

/// The tar entries (name, type) a diff of [`scripted_changes`] must hold, in order.
pub fn scripted_expected_entries() -> Vec<(String, char)> {
    let mut v: Vec<(String, char)> = [
        ("bin/tool", '0'),
        ("etc", '5'),
        ("etc/.wh.deleted", '0'),
        ("etc/appended", '0'),
        ("etc/hard", '0'),
        ("etc/linked", '1'),
        ("etc/owned", '0'),
        ("etc/tagged", '0'),
        ("etc/truncated", '0'),
        ("lib", '5'),
        ("lib/newlink", '2'),
        ("new.txt", '0'),
        ("opt", '5'),
        ("opt/.wh.tree", '0'),
        ("srv", '5'),
        // srv keeps none of its old names (old moved to new): the canonical rule
        // says so with one opaque marker rather than a whiteout per name.
        ("srv/.wh..wh..opq", '0'),
        ("srv/new", '5'),
        ("srv/new/f", '0'),
        ("srv/new/sub", '5'),
        ("srv/new/sub/g", '0'),
        ("var", '5'),
        ("var/cache", '0'),
    ]
    .iter()
    .map(|(p, t)| (p.to_string(), *t))
    .collect();
    v.sort_by(|a, b| Path::new(&a.0).cmp(Path::new(&b.0)));
    v
}

/// (name, type flag) of every entry of a tar, in order.
pub fn tar_listing(tar: &[u8]) -> Vec<(String, char)> {
    let mut a = tar::Archive::new(tar);
    a.entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let name = String::from_utf8_lossy(&e.path_bytes()).trim_end_matches('/').to_string();
            (name, e.header().entry_type().as_byte() as char)
        })
        .collect()
}

/// Runs the script in a fresh container over the scripted base; returns the diff tar
/// and the container's tree. Leaves layers `base` and `ctr`.
pub fn scripted_diff(driver: &dyn Driver) -> (Vec<u8>, Tree) {
    driver.apply_diff("base", None, &mut &scripted_base_tar()[..]).unwrap();
    driver.create("ctr", Some("base"), true).unwrap();
    let view = driver.mount("ctr").unwrap();
    scripted_changes(&view);
    let tree = Tree::capture(&view).unwrap();
    driver.unmount("ctr").unwrap();
    let mut tar = Vec::new();
    let n = driver.diff("ctr", &mut tar).unwrap();
    assert_eq!(n as usize, tar.len(), "diff returns the bytes it wrote");
    (tar, tree)
}

pub fn diff_of_scripted_changes(ctx: &Ctx) {
    let (tar, tree) = scripted_diff(ctx.driver.as_ref());
    let (got, same) = diff_same_as_naive(ctx, "ctr", "base");
    assert!(same == tar, "the diff asked again differs in bytes");
    assert_eq!(got, scripted_expected_changes(), "changes()");
    assert_eq!(tar_listing(&tar), scripted_expected_entries(), "diff tar entries");
    // The diff applied on the same parent gives the same tree.
    must_apply(ctx, "replay", Some("base"), &tar);
    let replay = with_view(ctx, "replay", |v| Tree::capture(v).unwrap());
    let diffs = replay.differences(&tree, &CompareOptions::default());
    assert!(diffs.is_empty(), "replayed diff differs from the container:\n{}", diffs.join("\n"));
    // And the replayed layer's own diff is the same tar.
    let mut again = Vec::new();
    ctx.driver.diff("replay", &mut again).unwrap();
    assert_eq!(tar_listing(&again), tar_listing(&tar));
}

pub fn diff_of_applied_layer_replays(ctx: &Ctx) {
    must_apply(ctx, "base", None, &base_tar());
    let top = TarBuilder::new()
        .dir("a")
        .opaque("a")
        .file("a/only", b"o")
        .whiteout("b")
        .file_with(
            "etc/new",
            b"n",
            EntryMeta { mode: 0o600, uid: 5, gid: 6, mtime: 1_650_000_000, ..Default::default() },
        )
        .build();
    must_apply(ctx, "top", Some("base"), &top);
    let mut tar = Vec::new();
    ctx.driver.diff("top", &mut tar).unwrap();
    must_apply(ctx, "again", Some("base"), &tar);
    let (a, b) =
        (with_view(ctx, "top", |v| Tree::capture(v).unwrap()), with_view(ctx, "again", |v| Tree::capture(v).unwrap()));
    let d = a.differences(&b, &CompareOptions::default());
    assert!(d.is_empty(), "{}", d.join("\n"));
    // A layer over nothing diffs to all of its content.
    let mut full = Vec::new();
    ctx.driver.diff("base", &mut full).unwrap();
    let names: Vec<String> = tar_listing(&full).into_iter().map(|(n, _)| n).collect();
    assert!(names.contains(&"usr/bin/tool".to_string()) && names.contains(&"bin".to_string()), "{names:?}");
}

pub fn bad_input_leaves_nothing(ctx: &Ctx) {
    must_apply(ctx, "base", None, &base_tar());
    let good = TarBuilder::new().file("big", &vec![1u8; 100_000]).file("after", b"a").build();
    let truncated = &good[..good.len() / 2];
    let e = apply(ctx, "t", Some("base"), truncated).unwrap_err();
    assert!(matches!(e.cause, Cause::BadTar(_)), "{e}");
    assert!(e.to_string().contains("layer t"), "the error names the layer: {e}");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&good).unwrap();
    let mut gz = gz.finish().unwrap();
    let n = gz.len();
    gz[n - 6] ^= 0xff; // break the CRC
    assert!(apply(ctx, "g", Some("base"), &gz).is_err(), "a corrupt gzip trailer is an error");
    let mut zst = zstd::encode_all(&good[..], 3).unwrap();
    zst.truncate(zst.len() - 10);
    assert!(apply(ctx, "z", Some("base"), &zst).is_err(), "a truncated zstd stream is an error");
    assert!(apply(ctx, "j", None, b"this is not a tar archive at all, just text that goes on for a while......................................................................................................................................................................................................................................................................................................................................................................................................................................................................").is_err());
    assert!(matches!(apply(ctx, "bad id", None, &good).unwrap_err().cause, Cause::InvalidId(_)));
    assert_eq!(ids(ctx), vec!["base"]);
    assert_no_leftovers(ctx);
    // The good stream still applies, compressed too.
    let gz_ok = {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&good).unwrap();
        e.finish().unwrap()
    };
    must_apply(ctx, "g", Some("base"), &gz_ok);
    must_apply(ctx, "z", Some("base"), &zstd::encode_all(&good[..], 3).unwrap());
    assert_eq!(
        ctx.driver.get("g").unwrap().diff_id,
        ctx.driver.get("z").unwrap().diff_id,
        "the diff_id is the digest of the uncompressed tar"
    );
}

pub fn hostile_tars_stay_inside(ctx: &Ctx) {
    must_apply(ctx, "base", None, &base_tar());
    let corpus = crate::hostile::corpus(&ctx.outside);
    assert!(corpus.len() >= 30, "the corpus has {} tars", corpus.len());
    for case in corpus {
        let name = case.name;
        let id = format!("h-{name}");
        let r = apply(ctx, &id, Some("base"), &case.tar);
        match case.expect {
            crate::hostile::Expect::Refused => {
                let e = r.expect_err(name);
                assert!(e.to_string().contains(&id), "{name}: the error names the layer: {e}");
                assert!(ctx.driver.get(&id).unwrap_err().is_not_found(), "{name}: a refused layer is not listed");
            }
            crate::hostile::Expect::Applied => {
                r.unwrap_or_else(|e| panic!("{name}: {e}"));
            }
        }
        assert_eq!(fs::read(ctx.outside.join("secret")).unwrap(), b"secret", "{name}");
        assert!(!ctx.outside.join("pwned").exists(), "{name} wrote outside the root");
        assert_no_leftovers(ctx);
    }
    let out = ctx.outside.to_string_lossy().into_owned();
    with_view(ctx, "h-absolute-name", |v| {
        assert_eq!(read(&v.join(out.trim_start_matches('/')).join("pwned")), b"x");
    });
    with_view(ctx, "h-sparse-10-gib", |v| {
        let md = fs::metadata(v.join("var/log/lastlog")).unwrap();
        assert_eq!(md.len(), crate::hostile::SPARSE_SIZE);
        assert!(md.blocks() * 512 < 64 << 20, "a 10 GiB sparse file took {} bytes", md.blocks() * 512);
    });
    with_view(ctx, "h-write-over-hardlink", |v| {
        assert_eq!(read(&v.join("f")), b"original");
        assert_eq!(read(&v.join("h")), b"replaced");
    });
    with_view(ctx, "h-hardlink-to-symlink", |v| {
        assert_eq!(fs::read_link(v.join("h")).unwrap(), ctx.outside.join("secret"));
    });
    with_view(ctx, "h-whiteout-then-recreate", |v| assert_eq!(names(&v.join("a")), set(&["new"])));
}

pub fn writes_through_lower_symlinks_are_refused(ctx: &Ctx) {
    let out = ctx.outside.to_string_lossy().into_owned();
    must_apply(
        ctx,
        "l1",
        None,
        &TarBuilder::new().symlink("esc", &out).symlink("lib", "usr/lib").dir("usr").dir("usr/lib").build(),
    );
    for (name, tar) in [
        ("file", TarBuilder::new().file("esc/pwned", b"x").build()),
        ("whiteout", TarBuilder::new().whiteout("esc/secret").build()),
        ("inside-link", TarBuilder::new().file("lib/x", b"x").build()),
    ] {
        let e = apply(ctx, name, Some("l1"), &tar).expect_err(name);
        assert!(matches!(e.cause, Cause::Refused(_)), "{name}: {e}");
        assert!(ctx.driver.get(name).unwrap_err().is_not_found());
    }
    assert_no_leftovers(ctx);
}

pub fn zero_zero_char_device_is_refused(ctx: &Ctx) {
    must_apply(ctx, "base", None, &base_tar());
    let t = TarBuilder::new().device("a/x", tar::EntryType::Char, 0, 0, EntryMeta::default()).build();
    let e = apply(ctx, "dev", Some("base"), &t).unwrap_err();
    assert!(matches!(e.cause, Cause::Refused(_)), "{e}");
    assert!(e.to_string().contains("a/x"), "the error names the path: {e}");
    with_view(ctx, "base", |v| assert!(v.join("a/x").is_file()));
}

pub fn usage_and_status(ctx: &Ctx) {
    must_apply(ctx, "base", None, &TarBuilder::new().file("big", &vec![3u8; 1 << 20]).file("small", b"s").build());
    let u = ctx.driver.usage("base").unwrap();
    assert!(u.bytes >= 1 << 20, "usage {u:?} must count the 1 MiB file");
    assert!(u.inodes >= 2, "usage {u:?}");
    let s = ctx.driver.status().unwrap();
    assert_eq!(s.driver, ctx.driver.name());
    assert_eq!(s.layers, 1);
    assert!(!s.backing_fs.is_empty());
    assert!(ctx.driver.usage("nope").unwrap_err().is_not_found());
}
