//! The bench's terminal output: the table per image, the metadata operations, the
//! peers, the verdicts and the targets that did not run.

use crate::model::{secs, size, size_name, CopyupOp, Dist, PeerResult, Run, TargetResult, Workload};

/// `p50 [lo–hi]` of a distribution of seconds.
fn spread(d: &Dist) -> String {
    if d.n() < 2 {
        return secs(d.p50);
    }
    format!("{} [{}–{}]", secs(d.p50), secs(d.lo), secs(d.hi))
}

pub(super) fn print_table(run: &Run) {
    for image in run.images() {
        let results: Vec<&TargetResult> = run.results.iter().filter(|r| r.image == image).collect();
        let big = results.iter().find(|r| r.ok()).and_then(|r| r.largest_write());
        let big_name = big.and_then(CopyupOp::write_bytes).map(size_name).unwrap_or_default();
        println!("\nimage: {image}   (median [interval of the median]; samples per figure below)");
        println!(
            "{:<13} {:>26} {:>26} {:>26} {:>10} {:>26}",
            "driver/fs",
            "unpack",
            "create",
            format!("first write {big_name}"),
            "disk/ctr",
            "diff"
        );
        for r in &results {
            if let Some(e) = &r.error {
                println!("{:<13} could not run: {e}", r.label());
                continue;
            }
            println!(
                "{:<13} {:>26} {:>26} {:>26} {:>10} {:>26}",
                r.label(),
                spread(&r.unpack),
                spread(&r.create),
                big.and_then(|b| r.copyup.get(&b)).map(spread).unwrap_or_default(),
                size(r.per_container_disk().p50),
                spread(&r.diff)
            );
        }
        if let Some(r) = results.iter().find(|r| r.ok()) {
            println!(
                "samples: unpack {}, create {}, first writes {}, diff {} (intervals cover the median with {:.0}% \
                 confidence at {} samples)",
                r.unpack.n(),
                r.create.n(),
                big.and_then(|b| r.copyup.get(&b)).map(Dist::n).unwrap_or(0),
                r.diff.n(),
                r.create.confidence * 100.0,
                r.create.n()
            );
        }
        print_metadata_ops(&run.workload, &results);
        crate::workloads::show::print(&results);
        crate::syncmodes::print(&results);
        for r in results.iter().filter(|r| r.ok()) {
            let Some(cp_a) = &r.create_cp_a else { continue };
            println!(
                "{}: container create {} beside cp -a of the same tree {} (synced): {:.2}x cp -a's time",
                r.label(),
                spread(&r.create),
                spread(cp_a),
                r.create.p50 / cp_a.p50
            );
        }
    }
}

/// The copy-up of metadata: chmod and chown of the big lower file, rename of the lower
/// directory, with overlay's features as mounted (they decide whether these copy data).
fn print_metadata_ops(w: &Workload, results: &[&TargetResult]) {
    let op = |r: &TargetResult, k: CopyupOp| r.copyup.get(&k).map(spread).unwrap_or_else(|| "-".into());
    for r in results.iter().filter(|r| r.ok()) {
        let big = r.write_sizes().pop().map(size_name).unwrap_or_default();
        let mounted: Vec<String> = r.mounted.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mounted = if mounted.is_empty() { String::new() } else { format!(" [{}]", mounted.join(", ")) };
        // Without metacopy, what the driver does by default and when (overlay takes it
        // only over layers whose paths fit the module's redirect_max).
        let metacopy_off = r.mounted.iter().any(|(k, v)| k == "metacopy" && v == "off");
        let policy = match r.features.iter().find(|(k, _)| k == "copy_up") {
            Some((_, how)) if metacopy_off => format!("; copy-up: {how}"),
            _ => String::new(),
        };
        println!(
            "{}{mounted}: chmod {big} {}, chown {big} {}, rename of a {}-file dir {} ({}){policy}",
            r.label(),
            op(r, CopyupOp::ChmodBigFile),
            op(r, CopyupOp::ChownBigFile),
            w.rename_files,
            op(r, CopyupOp::RenameDir),
            r.rename_by
        );
    }
}

pub(super) fn print_verdicts(run: &Run) {
    let images = run.images();
    for v in &run.verdicts {
        let tag = if images.len() > 1 { format!("[{}] ", v.image) } else { String::new() };
        println!("\n{tag}verdict {}", v.summary);
        for r in &v.reasons {
            println!("  - {r}");
        }
        for n in &v.notes {
            println!("  note: {n}");
        }
    }
}

/// One line per target that could not run, with its fix.
pub(super) fn print_missing(run: &Run) {
    for s in &run.skipped {
        println!("not run: {}/{}: {}; to fix: {}", s.driver, s.fs, s.why, s.fix);
    }
    for r in run.results.iter().filter(|r| !r.ok()) {
        println!("not run: {}: {}", r.label(), r.error.as_deref().unwrap_or_default());
    }
}

/// The peers table: each tool's unpack beside strata's, as a ratio to strata's.
pub(super) fn print_peers(peers: &[PeerResult]) {
    if peers.is_empty() {
        return;
    }
    println!("\nunpack of the image alone (median of {} run(s); end to end from the oci-archive, synced)", {
        peers.iter().map(|p| p.unpack.samples.len()).max().unwrap_or(0)
    });
    println!("{:<28} {:<12} {:>10} {:>10} {:>14}", "tool (storage)", "beside", "unpack", "disk", "vs strata");
    for p in peers {
        let name = format!("{} ({})", p.tool, p.driver);
        let beside = format!("{}/{}", p.strata_driver, p.fs);
        if let Some(e) = &p.error {
            println!("{name:<28} {beside:<12} not run: {e}");
            continue;
        }
        let strata = peers
            .iter()
            .find(|s| s.tool == "strata" && s.image == p.image && s.strata_driver == p.strata_driver && s.fs == p.fs)
            .map(|s| s.unpack.p50)
            .unwrap_or(0.0);
        let ratio = if strata > 0.0 { format!("{:.2}x", p.unpack.p50 / strata) } else { "-".into() };
        println!("{name:<28} {beside:<12} {:>10} {:>10} {:>14}", secs(p.unpack.p50), size(p.disk_bytes as f64), ratio);
    }
    // The target is strata at or under 0.85x the floor (design §8).
    for s in peers.iter().filter(|s| s.tool == "strata" && s.error.is_none()) {
        let floor = peers.iter().find(|f| {
            f.tool == "floor"
                && f.image == s.image
                && f.strata_driver == s.strata_driver
                && f.fs == s.fs
                && f.error.is_none()
        });
        if let Some(f) = floor.filter(|f| f.unpack.p50 > 0.0) {
            println!("strata ({}) on {}: {:.2}x the floor ({})", s.driver, s.fs, s.unpack.p50 / f.unpack.p50, f.driver);
        }
    }
}
