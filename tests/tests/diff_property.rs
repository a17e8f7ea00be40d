//! The diff property test (part of the conformance suite, across drivers): random
//! change scripts over random bases (strata_testkit::conformance::prop), run through the
//! mounted view of a container on vfs, overlay on ext4, overlay on xfs and btrfs; then
//! `unmount` and `diff` at once, no sync; each driver's diff applied on the same parent
//! on every driver must give that driver's recorded view (type, content, mode, owner,
//! size, xattrs, link target, hardlink groups, mtimes), the views must agree, and the
//! diffs of all drivers must hold the same entries. A script that makes something no
//! layer can carry must get the same refusal on every driver.
//!
//! Seeds 0..STRATA_DIFF_SCRIPTS (default 200, as in CI) from STRATA_DIFF_SEED (default 0):
//! `STRATA_DIFF_SCRIPTS=5000 cargo test --release -p strata-tests --test diff_property`.
//! STRATA_DIFF_DRIVERS=vfs,overlay-ext4,... runs a subset.

use std::time::Instant;

use driver_btrfs::BtrfsDriver;
use driver_core::error::Cause;
use driver_core::Driver;
use driver_overlay::OverlayDriver;
use driver_vfs::VfsDriver;
use strata_scratch::{privileged, FsKind, ScratchFs};
use strata_testkit::conformance::prop::{describe, generate, run_op, Script};
use strata_testkit::conformance::tar_listing;
use strata_testkit::tree::{CompareOptions, Tree};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

struct Rig {
    drivers: Vec<(&'static str, Box<dyn Driver>)>,
    _fs: Vec<ScratchFs>,
    _tmp: tempfile::TempDir,
}

fn rig() -> Rig {
    let tmp = tempfile::tempdir().unwrap();
    let want = std::env::var("STRATA_DIFF_DRIVERS").unwrap_or_default();
    let on = |n: &str| want.is_empty() || want.split(',').any(|w| w == n);
    let mut drivers: Vec<(&'static str, Box<dyn Driver>)> = Vec::new();
    let mut fss = Vec::new();
    // As the `strata` binary opens them: refusing every driver's reserved xattrs.
    let set = strata_cli::drivers::reserved_xattrs();
    if on("vfs") {
        drivers.push(("vfs", Box::new(VfsDriver::new(&tmp.path().join("vfs")).unwrap().reserving(&set))));
    }
    if on("overlay-ext4") {
        drivers
            .push(("overlay-ext4", Box::new(OverlayDriver::new(&tmp.path().join("overlay")).unwrap().reserving(&set))));
    }
    if on("overlay-xfs") {
        let xfs = ScratchFs::new(FsKind::Xfs, 1 << 30).expect("a loop-mounted xfs");
        drivers
            .push(("overlay-xfs", Box::new(OverlayDriver::new(&xfs.path().join("overlay")).unwrap().reserving(&set))));
        fss.push(xfs);
    }
    if on("btrfs") {
        let btrfs = ScratchFs::new(FsKind::Btrfs, 1 << 30).expect("a loop-mounted btrfs");
        drivers.push(("btrfs", Box::new(BtrfsDriver::new(&btrfs.path().join("btrfs")).unwrap().reserving(&set))));
        fss.push(btrfs);
    }
    Rig { drivers, _fs: fss, _tmp: tmp }
}

struct Run {
    name: &'static str,
    view: Tree,
    diff: driver_core::Result<Vec<u8>>,
}

fn script_text(s: &Script) -> String {
    let ops: Vec<String> = s.ops.iter().enumerate().map(|(i, o)| format!("  {i}: {}", describe(o))).collect();
    format!("seed {} ({} ops):\n{}", s.seed, s.ops.len(), ops.join("\n"))
}

/// Runs one script everywhere; returns what went wrong, if anything.
fn check(rig: &Rig, s: &Script) -> Result<(), String> {
    let (base, ctr) = (format!("b{}", s.seed), format!("c{}", s.seed));
    let mut runs = Vec::new();
    for (name, d) in &rig.drivers {
        d.apply_diff(&base, None, &mut &s.base[..]).map_err(|e| format!("{name}: base: {e}"))?;
        d.create(&ctr, Some(&base), true).map_err(|e| format!("{name}: create: {e}"))?;
        let v = d.mount(&ctr).map_err(|e| format!("{name}: mount: {e}"))?;
        let mut failed = None;
        for (i, op) in s.ops.iter().enumerate() {
            if let Err(e) = run_op(&v, op) {
                failed = Some(format!("{name}: op {i} ({}) failed: {e}", describe(op)));
                break;
            }
        }
        d.unmount(&ctr).map_err(|e| format!("{name}: unmount: {e}"))?;
        if let Some(f) = failed {
            return Err(f);
        }
        // Right after the unmount: no sync, and nothing read before (reading the view
        // first updates atimes, and on btrfs the inode updates that follow get
        // committed in the background, which would hide a diff that misses them).
        let mut tar = Vec::new();
        let diff = d.diff(&ctr, &mut tar).map(|_| tar);
        let v = d.mount(&ctr).map_err(|e| format!("{name}: mount: {e}"))?;
        let view = Tree::capture(&v).map_err(|e| format!("{name}: capture: {e}"));
        d.unmount(&ctr).map_err(|e| format!("{name}: unmount: {e}"))?;
        runs.push(Run { name, view: view?, diff });
    }
    if let Some(bad) = &s.refused {
        for r in &runs {
            match &r.diff {
                Err(e) if matches!(e.cause, Cause::Refused(_)) && e.to_string().contains(&*bad.to_string_lossy()) => {}
                Err(e) => return Err(format!("{}: the refusal does not name {bad:?}: {e}", r.name)),
                Ok(_) => return Err(format!("{}: the diff of {bad:?} was not refused", r.name)),
            }
        }
        return Ok(());
    }
    let first = &runs[0];
    let first_tar = first.diff.as_ref().map_err(|e| format!("{}: diff: {e}", first.name))?;
    let no_times = CompareOptions { file_mtime: false, dir_mtime: false, ..Default::default() };
    for r in &runs[1..] {
        let tar = r.diff.as_ref().map_err(|e| format!("{}: diff: {e}", r.name))?;
        let d = r.view.differences(&first.view, &no_times);
        if !d.is_empty() {
            return Err(format!("the views of {} and {} differ:\n{}", r.name, first.name, d.join("\n")));
        }
        let (a, b) = (tar_listing(tar), tar_listing(first_tar));
        if a != b {
            let only_a: Vec<_> = a.iter().filter(|e| !b.contains(e)).collect();
            let only_b: Vec<_> = b.iter().filter(|e| !a.contains(e)).collect();
            return Err(format!(
                "the diffs of {} and {} hold different entries: only in {}: {only_a:?}; only in {}: {only_b:?}",
                r.name, first.name, r.name, first.name
            ));
        }
    }
    for (i, r) in runs.iter().enumerate() {
        let tar = r.diff.as_ref().expect("checked");
        for (name, d) in &rig.drivers {
            let id = format!("r{}-{i}", s.seed);
            d.apply_diff(&id, Some(&base), &mut &tar[..])
                .map_err(|e| format!("the diff of {} applied on {name}: {e}", r.name))?;
            let v = d.mount(&id).map_err(|e| format!("{name}: mount: {e}"))?;
            let got = Tree::capture(&v);
            d.unmount(&id).map_err(|e| format!("{name}: unmount: {e}"))?;
            let diffs = got.map_err(|e| format!("{name}: capture: {e}"))?.differences(&r.view, &Default::default());
            if !diffs.is_empty() {
                return Err(format!(
                    "the diff of {} applied on {name} differs from the view of {}:\n{}",
                    r.name,
                    r.name,
                    diffs.join("\n")
                ));
            }
            d.remove(&id).map_err(|e| format!("{name}: remove: {e}"))?;
        }
    }
    Ok(())
}

/// Removes the seed's layers (also what a failed check left mounted), children first.
fn clean(rig: &Rig, seed: u64) {
    let mut ids: Vec<String> = (0..rig.drivers.len()).map(|i| format!("r{seed}-{i}")).collect();
    ids.extend([format!("c{seed}"), format!("b{seed}")]);
    for (_, d) in &rig.drivers {
        for id in &ids {
            while d.get(id).is_ok_and(|l| l.mounts > 0) && d.unmount(id).is_ok() {}
            let _ = d.remove(id);
        }
    }
}

#[test]
fn diffs_of_generated_scripts_replay_on_every_driver() {
    if !privileged("the diff property test") {
        return;
    }
    let (from, count) = (env_u64("STRATA_DIFF_SEED", 0), env_u64("STRATA_DIFF_SCRIPTS", 200));
    let rig = rig();
    let started = Instant::now();
    let mut failures = Vec::new();
    let (mut refused, mut ops) = (0, 0);
    for seed in from..from + count {
        let s = generate(seed);
        ops += s.ops.len();
        refused += usize::from(s.refused.is_some());
        if let Err(e) = check(&rig, &s) {
            eprintln!("FAILED {e}\n{}", script_text(&s));
            failures.push(format!("seed {seed}: {}", e.lines().next().unwrap_or_default()));
        }
        clean(&rig, seed);
    }
    let names: Vec<&str> = rig.drivers.iter().map(|(n, _)| *n).collect();
    eprintln!(
        "{count} scripts ({ops} ops, {refused} to be refused) on {} in {:.1}s",
        names.join(", "),
        started.elapsed().as_secs_f64()
    );
    assert!(failures.is_empty(), "{} of {count} scripts failed:\n{}", failures.len(), failures.join("\n"));
}
