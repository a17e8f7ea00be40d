//! The verdict: which target to use on this host for a workload, from absolute costs.
//!
//! A [`Profile`] says how often each measured operation happens in a day and what stays
//! on disk. Each target's per-operation figures (their medians and intervals) become
//! an expected cost in seconds a day, with an interval, and bytes held. Hard
//! constraints come first: a target that did not run, that needs a filesystem `--root`
//! is not on, or that holds more than the disk budget is out. The cheapest remaining
//! target is the pick; when its interval overlaps the runner-up's, the verdict is a tie
//! and says so. The figures that decided it are named in plain words.
//! (The regression check of a run against a baseline is the gate's, gate.rs.)

mod cost;
mod profile;

pub use profile::{Profile, ProfileError};

use crate::model::{
    per_day, secs, size, size_name, CopyupOp, Cost, DriverKind, Run, TargetCost, TargetResult, Verdict,
};
use cost::{disk, overlaps, parts, total, Part};

fn count(n: f64) -> String {
    if n >= 1000.0 && n % 1000.0 == 0.0 {
        format!("{},000", n as u64 / 1000)
    } else {
        format!("{n}")
    }
}

/// Whether overlay's first write to the largest file was a clone (xfs reflink): it added
/// far less disk than the file's size.
fn clones(r: &TargetResult) -> Option<String> {
    let bytes = r.write_sizes().pop()?;
    let k = CopyupOp::Write { bytes };
    let added = r.copyup_disk.get(&k)?.p50;
    (r.driver == DriverKind::Overlay && added < bytes as f64 / 16.0).then(|| {
        format!(
            "overlay's copy-up on {} is a reflink clone: the first write to a {} lower file took {} and added {} of disk",
            r.fs,
            size_name(bytes),
            secs(r.copyup[&k].p50),
            size(added)
        )
    })
}

/// The largest lower file a first write went to, by its name (`512MiB`), and the
/// median seconds of that write.
fn largest_write(r: &TargetResult) -> (String, f64) {
    let secs = r.largest_write().and_then(|k| r.copyup.get(&k)).map(|d| d.p50).unwrap_or(0.0);
    (r.write_sizes().pop().map(size_name).unwrap_or_default(), secs)
}

/// The verdict for one image's results under one profile, for a host whose `--root` is on `root_fs`.
pub fn decide(run: &Run, image: &str, p: &Profile) -> Verdict {
    let root_fs = run.host.root_fs.as_str();
    let results: Vec<&TargetResult> = run.results.iter().filter(|r| r.image == image).collect();
    let budget = p.held.disk_budget_gb * 1e9;
    let mut costs = Vec::new();
    let mut scored: Vec<(&TargetResult, Vec<Part>, Cost, f64)> = Vec::new();
    for r in &results {
        let mut c = TargetCost { target: r.label(), ..Default::default() };
        if let Some(e) = &r.error {
            c.out = Some(format!("did not run here: {e}"));
            costs.push(c);
            continue;
        }
        let ps = parts(r, p);
        c.seconds_per_day = total(&ps);
        c.disk_bytes = disk(r, p);
        if r.fs != root_fs {
            c.out = Some(format!(
                "needs a disk formatted as {} (--root {} is on {root_fs})",
                r.fs,
                run.host.root.display()
            ));
        } else if budget > 0.0 && c.disk_bytes > budget {
            c.out = Some(format!("needs {} of disk, over the {} budget", size(c.disk_bytes), size(budget)));
        }
        scored.push((r, ps, c.seconds_per_day, c.disk_bytes));
        costs.push(c);
    }
    for s in run.skipped.iter() {
        costs.push(TargetCost {
            target: format!("{}/{}", s.driver, s.fs),
            out: Some(format!("not run: {} ({})", s.why, s.fix)),
            ..Default::default()
        });
    }
    let is_out = |label: &str| costs.iter().any(|c| c.target == label && c.out.is_some());
    let mut candidates: Vec<&(&TargetResult, Vec<Part>, Cost, f64)> =
        scored.iter().filter(|(r, ..)| !is_out(&r.label())).collect();
    candidates.sort_by(|a, b| a.2.p50.total_cmp(&b.2.p50));
    let mut v = Verdict {
        image: image.to_string(),
        profile: p.name.clone(),
        about: p.about.clone(),
        costs: costs.clone(),
        ..Default::default()
    };
    // Two targets whose intervals overlap are a tie; the one with less disk goes first,
    // and with disk equal too (within a fifth), the one Docker and podman prefer.
    let mut tie = false;
    if candidates.len() >= 2 && overlaps(&candidates[0].2, &candidates[1].2) {
        tie = true;
        let rank = |d: DriverKind| match d {
            DriverKind::Overlay => 0,
            DriverKind::Btrfs => 1,
            DriverKind::Vfs => 2,
        };
        let (a, b) = (candidates[0], candidates[1]);
        let swap = if (a.3 - b.3).abs() > 0.2 * a.3.max(b.3) { b.3 < a.3 } else { rank(b.0.driver) < rank(a.0.driver) };
        if swap {
            candidates.swap(0, 1);
        }
    }
    let Some(pick) = candidates.first() else {
        v.summary = format!("{}: no target can be the pick here", p.name);
        let why: Vec<String> =
            costs.iter().filter_map(|c| Some(format!("{}: {}", c.target, c.out.as_ref()?))).collect();
        v.reasons = why;
        v.notes = other_disks(&scored, None, root_fs, p);
        return v;
    };
    let label = pick.0.label();
    v.pick = Some(label.clone());
    v.tie = tie;
    match candidates.get(1) {
        Some(second) => {
            v.runner_up = Some(second.0.label());
            v.margin_seconds = second.2.p50 - pick.2.p50;
            v.summary = if tie {
                format!(
                    "{}: a tie between {label} ({} a day, interval {}–{}) and {} ({}, {}–{}): they overlap within \
                     the noise; {label} goes first for {}",
                    p.name,
                    per_day(pick.2.p50),
                    per_day(pick.2.lo),
                    per_day(pick.2.hi),
                    second.0.label(),
                    per_day(second.2.p50),
                    per_day(second.2.lo),
                    per_day(second.2.hi),
                    if (pick.3 - second.3).abs() > 0.2 * pick.3.max(second.3) {
                        format!("its smaller disk use ({} vs {})", size(pick.3), size(second.3))
                    } else {
                        "being what Docker and podman prefer".into()
                    }
                )
            } else {
                format!(
                    "{}: {label} — {} of work a day (interval {}–{}) against {} for the runner-up {}, {} a day less",
                    p.name,
                    per_day(pick.2.p50),
                    per_day(pick.2.lo),
                    per_day(pick.2.hi),
                    per_day(second.2.p50),
                    second.0.label(),
                    per_day(v.margin_seconds)
                )
            };
            v.reasons = deciding(pick, second);
            if tie && second.2.p50 < pick.2.p50 {
                v.notes.push(format!(
                    "{}'s median cost is the lower one ({} a day against {}): that leans against Docker's and \
                     podman's guidance, but only within the noise of this run; a quieter host or more containers \
                     (--containers) would settle it.",
                    second.0.label(),
                    per_day(second.2.p50),
                    per_day(pick.2.p50)
                ));
            }
        }
        None => {
            v.summary = format!(
                "{}: {label} — the only target that can be the pick here ({} of work a day)",
                p.name,
                per_day(pick.2.p50)
            );
            v.reasons = costs
                .iter()
                .filter(|c| c.target.ends_with(&format!("/{root_fs}")))
                .filter_map(|c| Some(format!("{} is out: {}", c.target, c.out.as_ref()?)))
                .collect();
            let mut ps: Vec<&Part> = pick.1.iter().collect();
            ps.sort_by(|a, b| b.total().p50.total_cmp(&a.total().p50));
            v.reasons.extend(
                ps.iter()
                    .take(3)
                    .map(|x| {
                        format!(
                            "{}: {} each, {} a day: {} a day",
                            x.what,
                            secs(x.each.p50),
                            count(x.count),
                            per_day(x.total().p50)
                        )
                    })
                    .collect::<Vec<_>>(),
            );
        }
    }
    if let Some(c) = clones(pick.0) {
        v.notes.push(c);
    }
    v.notes.extend(guidance(pick.0, &scored, &costs, root_fs));
    v.notes.extend(other_disks(&scored, Some(pick), root_fs, p));
    v.reasons.extend(crate::workloads::verdict_lines(&p.name, &results, &p.workloads));
    v
}

/// The two or three operations whose cost differs most between the pick and the runner-up.
fn deciding(
    pick: &(&TargetResult, Vec<Part>, Cost, f64),
    second: &(&TargetResult, Vec<Part>, Cost, f64),
) -> Vec<String> {
    let mut diffs: Vec<(f64, String)> = Vec::new();
    for a in &pick.1 {
        let Some(b) = second.1.iter().find(|b| b.what == a.what) else { continue };
        let d = b.total().p50 - a.total().p50;
        diffs.push((
            d,
            format!(
                "{}: {} on {} against {} on {}, {} a day: {} a day {}",
                a.what,
                secs(a.each.p50),
                pick.0.label(),
                secs(b.each.p50),
                second.0.label(),
                count(a.count),
                per_day(d.abs()),
                if d >= 0.0 { "saved" } else { "lost" }
            ),
        ));
    }
    diffs.sort_by(|a, b| b.0.abs().total_cmp(&a.0.abs()));
    let biggest = diffs.first().map(|d| d.0.abs()).unwrap_or(0.0);
    let mut out: Vec<String> = diffs.into_iter().take(3).filter(|d| d.0.abs() >= biggest / 20.0).map(|d| d.1).collect();
    if (pick.3 - second.3).abs() > 0.2 * pick.3.max(second.3) {
        out.push(format!(
            "disk held: {} on {} against {} on {}",
            size(pick.3),
            pick.0.label(),
            size(second.3),
            second.0.label()
        ));
    }
    out
}

/// Where the pick goes against what Docker and podman document (overlay preferred, vfs
/// for testing only), say so and why.
fn guidance(
    pick: &TargetResult,
    scored: &[(&TargetResult, Vec<Part>, Cost, f64)],
    costs: &[TargetCost],
    root_fs: &str,
) -> Vec<String> {
    let overlay_here = scored.iter().find(|(r, ..)| r.driver == DriverKind::Overlay && r.fs == root_fs);
    let out_reason = |label: &str| costs.iter().find(|c| c.target == label).and_then(|c| c.out.clone());
    let mut notes = Vec::new();
    if pick.driver == DriverKind::Vfs {
        let per = pick.per_container_disk().p50;
        match overlay_here {
            Some((o, ..)) if out_reason(&o.label()).is_none() => notes.push(format!(
                "This contradicts Docker's and podman's guidance (overlay where it runs; vfs is meant for testing), \
                 and the figures say why: vfs pays once, a full copy at create ({} and {} per container), and never \
                 copies up, while overlay on {} copies a whole file up on its first write ({} for the {} file); this \
                 profile writes to files of the image more than it creates containers.",
                secs(pick.create.p50),
                size(per),
                o.fs,
                secs(largest_write(o).1),
                largest_write(o).0
            )),
            _ => notes.push(format!(
                "vfs is meant for testing (as Docker and podman document): it has no copy-on-write, so every \
                 container is a full copy of its image ({} and {} to create here). It is the pick only because \
                 nothing better runs here: {}.",
                size(per),
                secs(pick.create.p50),
                match overlay_here {
                    Some((o, ..)) => out_reason(&o.label()).unwrap_or_default(),
                    None => costs
                        .iter()
                        .find(|c| c.target.starts_with("overlay/"))
                        .and_then(|c| c.out.clone())
                        .unwrap_or_else(|| "overlay was not benched".into()),
                }
            )),
        }
    } else if pick.driver == DriverKind::Btrfs {
        if let Some((o, ..)) = overlay_here.filter(|(o, ..)| out_reason(&o.label()).is_none()) {
            notes.push(format!(
                "Docker and podman prefer overlay where it runs; here btrfs costs less for this profile \
                 (first write to the {} file: {} on btrfs, {} on overlay/{}).",
                largest_write(o).0,
                secs(largest_write(pick).1),
                secs(largest_write(o).1),
                o.fs
            ));
        }
    }
    notes
}

/// What another filesystem would change: for each filesystem --root is not on, its
/// cheapest target and what it would cost.
fn other_disks(
    scored: &[(&TargetResult, Vec<Part>, Cost, f64)],
    pick: Option<&&(&TargetResult, Vec<Part>, Cost, f64)>,
    root_fs: &str,
    p: &Profile,
) -> Vec<String> {
    let mut fss: Vec<&str> = scored.iter().map(|(r, ..)| r.fs.as_str()).filter(|f| *f != root_fs).collect();
    fss.dedup();
    let budget = p.held.disk_budget_gb * 1e9;
    let mut notes = Vec::new();
    for fs in fss {
        let Some(best) = scored
            .iter()
            .filter(|(r, _, _, d)| r.fs == fs && (budget <= 0.0 || *d <= budget))
            .min_by(|a, b| a.2.p50.total_cmp(&b.2.p50))
        else {
            continue;
        };
        let compare = match pick {
            Some(pk) if overlaps(&best.2, &pk.2) => format!("the same within the noise as {} here", per_day(pk.2.p50)),
            Some(pk) if best.2.p50 < pk.2.p50 => format!("less than {} here", per_day(pk.2.p50)),
            Some(pk) => format!("more than {} here", per_day(pk.2.p50)),
            None => String::new(),
        };
        let clone = clones(best.0).map(|c| format!("; {c}")).unwrap_or_default();
        notes.push(format!(
            "On a disk formatted as {fs}, {} would cost {} a day, {compare}{clone}.",
            best.0.label(),
            per_day(best.2.p50)
        ));
    }
    notes
}

/// Every verdict of a run: per image, per profile.
pub fn verdicts(run: &Run, profiles: &[Profile]) -> Vec<Verdict> {
    let mut out = Vec::new();
    for image in run.images() {
        for p in profiles {
            out.push(decide(run, &image, p));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Dist;
    use crate::model::{Skipped, SCHEMA};
    use std::collections::BTreeMap;
    use strata_cli::workload::Rng;

    /// A full default run recorded on the project's 2-core test machine (all five targets).
    const RECORDED: &str = include_str!("../../tests/fixtures/bench/run-full.json");

    fn recorded() -> Run {
        let run: Run = serde_json::from_str(RECORDED).expect("the recorded run parses");
        assert_eq!(run.schema, SCHEMA);
        assert_eq!(run.results.iter().filter(|r| r.ok()).count(), 5, "all five targets ran in the recording");
        run
    }

    fn on(mut run: Run, root_fs: &str) -> Run {
        run.host.root_fs = root_fs.into();
        run
    }

    fn picks(run: &Run) -> BTreeMap<String, Option<String>> {
        verdicts(run, &Profile::shipped()).into_iter().map(|v| (v.profile, v.pick)).collect()
    }

    fn verdict(run: &Run, profile: &str) -> Verdict {
        decide(run, crate::model::DEFAULT_IMAGE, &Profile::load(profile).unwrap())
    }

    fn normal(rng: &mut Rng) -> f64 {
        // Box–Muller from two uniforms in (0, 1].
        let u = |rng: &mut Rng| (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 + 1e-12;
        let (a, b) = (u(rng), u(rng));
        (-2.0 * a.ln()).sqrt() * (std::f64::consts::TAU * b).cos()
    }

    /// A copy of the run with every timing sample off by a log-normal factor (σ = 0.3,
    /// about what other builds on a shared 2-core machine do to it) and every disk
    /// reading by ±2%.
    fn perturbed(run: &Run, rng: &mut Rng) -> Run {
        let mut run = run.clone();
        let mut jitter = |d: &mut Dist, sigma: f64| {
            *d = Dist::of(d.samples.iter().map(|s| s * (sigma * normal(rng)).exp()).collect());
        };
        for r in &mut run.results {
            jitter(&mut r.unpack, 0.3);
            jitter(&mut r.create, 0.3);
            jitter(&mut r.diff, 0.3);
            r.copyup.values_mut().for_each(|d| jitter(d, 0.3));
            r.copyup_disk.values_mut().for_each(|d| jitter(d, 0.02));
        }
        // statfs deltas are exact to a block or so; what varies is what each step wrote
        // (journal, allocation): each container's share off by about 2%.
        for r in &mut run.results {
            let mut total = *r.disk_by_containers.first().unwrap_or(&0) as f64;
            let steps: Vec<f64> = r.disk_by_containers.windows(2).map(|w| w[1] as f64 - w[0] as f64).collect();
            for (i, step) in steps.iter().enumerate() {
                total += step * (0.02 * normal(rng)).exp();
                r.disk_by_containers[i + 1] = total as u64;
            }
        }
        run
    }

    /// A run that measured first writes only up to some size (--quick stops at 16 MiB;
    /// here the recording's writes over 1 MiB are dropped): a profile's 512 MiB write is
    /// then a line drawn on, and its part says so; measured, it does not.
    #[test]
    fn a_first_write_past_the_largest_measured_size_is_called_extrapolated() {
        let full = on(recorded(), "ext4");
        let mut quick = full.clone();
        for r in &mut quick.results {
            r.copyup.retain(|op, _| op.write_bytes().is_none_or(|b| b <= 1 << 20));
        }
        let big_files = Profile::load("big-files").unwrap();
        let said = |run: &Run| {
            let r = run.results.iter().find(|r| r.ok()).expect("a target ran");
            cost::parts(r, &big_files).into_iter().map(|p| p.what).collect::<Vec<_>>().join("\n")
        };
        let (full, quick) = (said(&full), said(&quick));
        assert!(quick.contains("first write to a 512MiB lower file (extrapolated from 1MiB)"), "{quick}");
        assert!(full.contains("first write to a 512MiB lower file") && !full.contains("extrapolated"), "{full}");
    }

    #[test]
    fn the_pick_survives_noise_on_every_root_filesystem() {
        let mut rng = Rng::new(13);
        for fs in ["ext4", "xfs", "btrfs"] {
            let run = on(recorded(), fs);
            let want = picks(&run);
            for i in 0..200 {
                let copy = perturbed(&run, &mut rng);
                let got = picks(&copy);
                assert_eq!(got, want, "noisy copy {i} of the recorded run on {fs} changed the pick");
            }
        }
    }

    #[test]
    fn ext4_root_where_overlay_runs_gets_overlay_for_containers_and_hears_about_other_disks() {
        let run = on(recorded(), "ext4");
        for p in ["ci-runner", "dense-host", "build-host"] {
            let v = verdict(&run, p);
            assert_eq!(v.pick.as_deref(), Some("overlay/ext4"), "{p}: {v:#?}");
            assert!(!v.reasons.is_empty() && v.reasons.len() <= 4, "{p}: {:?}", v.reasons);
            for fs in ["xfs", "btrfs"] {
                assert!(
                    v.notes.iter().any(|n| n.starts_with(&format!("On a disk formatted as {fs}, "))),
                    "{p}: {:?}",
                    v.notes
                );
                let c = v.costs.iter().find(|c| c.target.ends_with(&format!("/{fs}"))).unwrap();
                assert!(c.out.as_deref().unwrap().starts_with(&format!("needs a disk formatted as {fs}")), "{c:?}");
            }
        }
        // vfs holds a full copy of the image per container: over dense-host's budget.
        let dense = verdict(&run, "dense-host");
        let vfs = dense.costs.iter().find(|c| c.target == "vfs/ext4").unwrap();
        assert!(vfs.out.as_deref().unwrap().contains("over the"), "{vfs:?}");
        // No shipped profile but big-files may pick vfs here.
        for v in verdicts(&run, &Profile::shipped()) {
            if v.profile != "big-files" {
                assert_ne!(v.pick.as_deref(), Some("vfs/ext4"), "{v:#?}");
            }
        }
    }

    #[test]
    fn xfs_root_gets_overlay_on_xfs_and_says_copy_up_is_a_reflink_clone() {
        let run = on(recorded(), "xfs");
        for p in ["ci-runner", "dense-host"] {
            let v = verdict(&run, p);
            assert_eq!(v.pick.as_deref(), Some("overlay/xfs"), "{p}: {v:#?}");
            assert!(
                v.notes.iter().any(|n| n.contains("overlay's copy-up on xfs is a reflink clone")),
                "{p}: {:?}",
                v.notes
            );
        }
    }

    #[test]
    fn btrfs_root_puts_btrfs_on_equal_terms() {
        let run = on(recorded(), "btrfs");
        for v in verdicts(&run, &Profile::shipped()) {
            assert_eq!(v.pick.as_deref(), Some("btrfs/btrfs"), "{v:#?}");
            for c in v.costs.iter().filter(|c| c.target != "btrfs/btrfs") {
                assert!(c.out.as_deref().unwrap().starts_with("needs a disk formatted as"), "{c:?}");
            }
        }
        // Equal terms: on an ext4 root, btrfs is never silently recommended, even where
        // its figures are the best; the verdict says what a btrfs disk would change.
        let mut cheap = on(recorded(), "ext4");
        for r in cheap.results.iter_mut().filter(|r| r.driver == DriverKind::Btrfs) {
            r.unpack = r.unpack.scaled(0.01);
            r.create = r.create.scaled(0.01);
            r.diff = r.diff.scaled(0.01);
            r.copyup.values_mut().for_each(|d| *d = d.scaled(0.01));
        }
        for v in verdicts(&cheap, &Profile::shipped()) {
            assert_ne!(v.pick.as_deref(), Some("btrfs/btrfs"));
            assert!(
                v.notes.iter().any(|n| n.starts_with("On a disk formatted as btrfs, btrfs/btrfs would cost")
                    && n.contains("less than")),
                "{:?}",
                v.notes
            );
        }
    }

    #[test]
    fn vfs_alone_is_said_to_be_meant_for_testing() {
        let mut run = on(recorded(), "ext4");
        run.results.retain(|r| r.label() == "vfs/ext4" || r.driver == DriverKind::Overlay && r.fs == "ext4");
        let overlay = run.results.iter_mut().find(|r| r.driver == DriverKind::Overlay).unwrap();
        overlay.error = Some("overlayfs does not mount here: EPERM".into());
        run.skipped.push(Skipped {
            driver: DriverKind::Vfs,
            fs: "xfs".into(),
            why: "mkfs.xfs is not installed".into(),
            fix: "apt-get install xfsprogs".into(),
        });
        let v = verdict(&run, "ci-runner");
        assert_eq!(v.pick.as_deref(), Some("vfs/ext4"), "{v:#?}");
        let note = v.notes.iter().find(|n| n.contains("meant for testing")).expect("the testing note");
        assert!(note.contains("full copy") && note.contains("overlayfs does not mount"), "{note}");
        let skipped = v.costs.iter().find(|c| c.target == "vfs/xfs").unwrap();
        assert!(skipped.out.as_deref().unwrap().contains("apt-get install xfsprogs"));
    }

    #[test]
    fn overlapping_costs_are_a_tie_and_the_verdict_says_so() {
        // Two copies of one target under two names: they cannot be told apart.
        let mut run = on(recorded(), "ext4");
        run.results.retain(|r| r.label() == "overlay/ext4");
        let mut twin = run.results[0].clone();
        twin.driver = DriverKind::Btrfs;
        twin.fs = "ext4".into();
        run.results.push(twin);
        let v = verdict(&run, "ci-runner");
        assert!(v.tie, "{v:#?}");
        assert!(v.summary.contains("a tie between") && v.summary.contains("overlap within the noise"), "{}", v.summary);
        assert_eq!(v.pick.as_deref(), Some("overlay/ext4"), "equal disk too: the documented preference");
    }

    #[test]
    fn a_budget_too_small_for_all_leaves_no_pick_and_says_why() {
        let run = on(recorded(), "ext4");
        let mut p = Profile::load("dense-host").unwrap();
        p.held.disk_budget_gb = 0.001;
        let v = decide(&run, crate::model::DEFAULT_IMAGE, &p);
        assert_eq!(v.pick, None);
        assert!(v.reasons.iter().all(|r| r.contains("over the") || r.contains("needs a disk")), "{:?}", v.reasons);
    }
}
