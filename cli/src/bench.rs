//! `strata bench`: the drivers side by side on the same work, each on its own fresh
//! loop-mounted filesystem of the same size (so disk figures are exact statfs deltas
//! and no driver gets a better disk). Phases, per driver and backing filesystem:
//!
//! 1. **pull replay** — unpack the image from its compressed layers (per layer, total,
//!    MB/s of uncompressed data, CPU time), synced; timed again on fresh driver roots
//!    at the end (7 in all), so the unpack has a spread too, each beside the igzip|tar
//!    floor as its reference for the regression gate (meter.rs, gate.rs);
//! 2. **container create** × N;
//! 3. **copy-up** — in each container, the first 1-byte append to lower files of
//!    4 KiB, 1 MiB, 64 MiB and 512 MiB (and the disk each added); a chmod and a chown
//!    of a 512 MiB lower file; a rename of a lower directory of 10,000 files (as `mv`
//!    does it: rename, or copy and delete on EXDEV); deleting a lower tree; a storm of
//!    appends to small lower files. Timed from the application's side (open + write +
//!    close, no fsync), one sample per container; overlay's metacopy, redirect_dir and
//!    index are recorded as the containers were mounted;
//! 4. **disk use** after unpack, after each container, after the writes;
//! 5. **diff** of each container after the writes: time and size.
//!
//! The run is one typed [`Run`](crate::model::Run); the verdict (crate::verdict) and
//! the report (crate::report) read it, and `--from` reads it back.

mod args;
mod host;
mod layout;
mod target;
mod terminal;

use std::path::{Path, PathBuf};
use std::time::Instant;

use driver_core::Error;
use strata_image::image::write_layout;

pub use args::{BenchArgs, OptionsError};
use host::{cannot_run, check_scratch, host, release_on_signal};
use layout::{bench_layout, blob_bytes, default_blobs, image_blobs};
use target::{run_target, Plan};
use terminal::{print_missing, print_peers, print_table, print_verdicts};

use crate::failure::{Failure, Result};
use crate::gate::BenchError;
use crate::model::{Run, Skipped, TargetResult, Workload, DEFAULT_IMAGE, SCHEMA};
use crate::peers::PeerImage;

/// Runs every target on one image; adds peers when asked.
fn bench_image(args: &BenchArgs, label: &str, blobs: &[PathBuf], work: &Path, run: &mut Run) -> Result<()> {
    let layout = work.join("bench-image");
    let shape = bench_layout(&layout, blobs, args.quick)?;
    run.workload.big_file_bytes = shape.big_file_bytes;
    run.workload.rename_files = shape.rename_files;
    let floor_layers = blobs.iter().cloned().chain([work.join("copyup-layer")]).collect();
    let plan = Plan {
        layout,
        floor_layers,
        shape,
        fs_size: fs_size(args, blobs),
        unpack_runs: run.workload.unpack_runs,
        workloads: args.workloads.specs.clone(),
        image: label.to_string(),
        env: if args.images.is_empty() { Vec::new() } else { crate::workloads::replay::image_env(label) },
        sync: args.sync,
        // Three rounds of each mode at most beside the gate's unpacks (one with --quick).
        sync_rounds: if args.quick { 1 } else { run.workload.unpack_runs.min(3) },
        // Creates timed beside the write+fsync loop besides the containers' own, for the
        // gate: a create takes 2 ms, so 5 samples cannot show 20% (docs/ci.md).
        extra_creates: if args.quick { 4 } else { 40 },
    };
    let all = &args.targets;
    for (i, (d, kind)) in all.iter().enumerate() {
        let tag = format!("[{label}] [{}/{}] {d} on {}", i + 1, all.len(), kind.name());
        if let Some((why, fix)) = cannot_run(*d, *kind) {
            eprintln!("{tag}: not run: {why}; to fix: {fix}");
            let s = Skipped { driver: *d, fs: kind.name().into(), why, fix };
            if !run.skipped.contains(&s) {
                run.skipped.push(s);
            }
            continue;
        }
        eprintln!("{tag}: starting");
        let started = Instant::now();
        let progress = |phase: &str| eprintln!("{tag}: {phase} ({:.0} s)", started.elapsed().as_secs_f64());
        let mut r = run_target(*d, *kind, &plan, args.containers, &progress).unwrap_or_else(|e| {
            eprintln!("{tag}: could not run: {e}");
            TargetResult { driver: *d, fs: kind.name().into(), error: Some(e.to_string()), ..Default::default() }
        });
        r.image = label.to_string();
        run.results.push(r);
    }
    if args.peers.is_empty() {
        return Ok(());
    }
    // The peers unpack the image itself, without the copy-up layer.
    let peer_layout = work.join("peer-image");
    write_layout(&peer_layout, "bench", blobs)?;
    let image = PeerImage::from_layout(&peer_layout, &work.join("peer-image.tar"))?;
    let runs = if args.quick { 1 } else { 3 };
    for (d, kind) in all {
        if cannot_run(*d, *kind).is_some() {
            continue;
        }
        let tag = format!("[{label}] peers beside {d} on {}", kind.name());
        let progress = |what: &str| eprintln!("{tag}: {what}");
        for mut p in crate::peers::compare(&args.peers, d.name(), *kind, &image, runs, &progress) {
            p.image = label.to_string();
            run.peers.push(p);
        }
    }
    Ok(())
}

/// The scratch filesystem's size: 12 GiB, or more when the image and its containers
/// (vfs copies the image for each) could need more.
fn fs_size(args: &BenchArgs, blobs: &[PathBuf]) -> u64 {
    (12u64 << 30).max(need(args, blobs))
}

/// About the most one target writes: the image (about three times its compressed
/// size, uncompressed) and the copy-up layer per layer and per container, as vfs on
/// ext4 stores it, plus overlay/ext4's three full copies of the largest file per
/// container (its first write, chmod and chown).
fn need(args: &BenchArgs, blobs: &[PathBuf]) -> u64 {
    let image: u64 = blob_bytes(blobs) * 3;
    let (copyup, largest): (u64, u64) = if args.quick { (48 << 20, 16 << 20) } else { (620 << 20, 512 << 20) };
    let containers = args.containers as u64;
    (image + copyup) * (containers + blobs.len() as u64 + 2) + containers * 3 * largest
}

pub fn run(args: &BenchArgs) -> Result<(), BenchError> {
    if args.from.len() > 1 {
        return compare_hosts(args);
    }
    let mut run = match args.from.first() {
        Some(path) => Run::load(path).map_err(BenchError::Inputs)?,
        None => measure(args)?,
    };
    run.verdicts = crate::verdict::verdicts(&run, &args.profiles);
    print_table(&run);
    print_peers(&run.peers);
    print_verdicts(&run);
    if !run.skipped.is_empty() || run.results.iter().any(|r| !r.ok()) {
        println!();
        print_missing(&run);
    }
    if let Some(path) = &args.json {
        write_output(path, &serde_json::to_vec_pretty(&run).expect("json"))?;
        eprintln!("strata bench: wrote {}", path.display());
    }
    if let Some(path) = &args.report {
        write_output(path, crate::report::html(&run).as_bytes())?;
        eprintln!("strata bench: wrote {}", path.display());
    }
    if let Some(path) = &args.openmetrics {
        write_openmetrics(path, &[&run])?;
    }
    if !args.baseline.is_empty() {
        let opts = crate::gate::Options {
            threshold_pct: args.max_regress,
            tolerance_pct: args.exact_tolerance,
            summary_md: args.summary_md.clone(),
            junit: args.junit.clone(),
        };
        crate::gate::run(&run, &args.baseline, &opts)?;
    }
    if !run.results.iter().any(TargetResult::ok) {
        let (skipped, failed) = (run.skipped.len(), run.results.len());
        return Err(BenchError::Unmeasured(Failure::NoTargetRan { skipped, failed }));
    }
    Ok(())
}

/// `--from a.json --from b.json ...`: the hosts side by side, in the terminal and in
/// `--report`; `--openmetrics` writes every host's figures into one file.
fn compare_hosts(args: &BenchArgs) -> Result<(), BenchError> {
    let fleet = crate::fleet::Fleet::load(&args.from, &args.profiles).map_err(BenchError::Inputs)?;
    crate::fleet::print(&fleet);
    if let Some(path) = &args.report {
        write_output(path, crate::fleet::html(&fleet).as_bytes())?;
        eprintln!("strata bench: wrote {}", path.display());
    }
    if let Some(path) = &args.openmetrics {
        write_openmetrics(path, &fleet.hosts.iter().map(|h| &h.run).collect::<Vec<_>>())?;
    }
    Ok(())
}

/// Writes the OpenMetrics text through a temp file renamed over `path`: node-exporter's
/// textfile collector may read the file at any moment and must never see half of it
/// (the temp name does not end in `.prom`, so the collector skips it).
/// Writes one of the bench's outputs whole or not at all: a bench killed while writing
/// its `--json` must not leave half a baseline for the next run to compare against.
fn write_output(path: &Path, data: &[u8]) -> Result<()> {
    Ok(driver_core::json::write_atomic_with(path, |w| w.write_all(data).map_err(|e| Error::new(e).with_path(path)))?)
}

fn write_openmetrics(path: &Path, runs: &[&Run]) -> Result<()> {
    write_output(path, crate::openmetrics::text(runs).as_bytes())?;
    eprintln!("strata bench: wrote {}", path.display());
    Ok(())
}

/// Runs the bench: every image on every target, then the peers.
fn measure(args: &BenchArgs) -> Result<Run, BenchError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(BenchError::Unmeasured(Failure::NeedsRoot));
    }
    release_on_signal().map_err(Failure::step("installing the SIGINT/SIGTERM handler"))?;
    for &p in &args.peers {
        if let Some(why) = crate::peers::unavailable(p) {
            eprintln!("strata bench: peer {} will not run: {why}", p.name());
        }
    }
    let images: Vec<String> =
        if args.images.is_empty() { vec![DEFAULT_IMAGE.to_string()] } else { args.images.clone() };
    let mut run = Run {
        schema: SCHEMA,
        host: host(&args.root),
        workload: Workload {
            images: images.clone(),
            containers: args.containers,
            // Seven in full: the gate judges each unpack beside its floor (docs/ci.md).
            unpack_runs: if args.quick { 2 } else { 7 },
            quick: args.quick,
            copyup_timing: "open + 1-byte append + close, no fsync".into(),
            big_file_bytes: 0,
            rename_files: 0,
            workloads: args.workloads.specs.iter().map(|s| s.name.clone()).collect(),
        },
        ..Default::default()
    };
    for label in &images {
        let work = strata_scratch::work_dir("strata-bench-").map_err(Error::new)?;
        let blobs = if args.images.is_empty() {
            eprintln!("strata bench: generating the embedded default workload...");
            default_blobs(args.quick, work.path())?
        } else {
            eprintln!("strata bench: reading {label}...");
            // An --image that cannot be read or pulled (missing, refused, no credentials)
            // is an input of the run, like a bad baseline: exit 2, not "could not measure".
            image_blobs(label, args, work.path()).map_err(BenchError::Inputs)?
        };
        let layout_bytes: u64 = blob_bytes(&blobs) * 2;
        check_scratch(need(args, &blobs).min(fs_size(args, &blobs)) + layout_bytes)?;
        eprintln!(
            "strata bench: scratch in {} ({}); verdict for --root {} ({})",
            run.host.scratch_dir.display(),
            run.host.scratch_fs,
            run.host.root.display(),
            run.host.root_fs
        );
        bench_image(args, label, &blobs, work.path(), &mut run)?;
    }
    Ok(run)
}
