//! The verdict: which target to use on this host for a workload, from absolute costs.
//!
//! A [`Profile`] says how often each measured operation happens in a day and what stays
//! on disk. Each target's per-operation figures (their medians and intervals) become
//! an expected cost in seconds a day, with an interval, and bytes held. Hard
//! constraints come first: a target that did not run, that needs a filesystem `--root`
//! is not on, or that holds more than the disk budget is out. The cheapest remaining
//! target is the pick; when its interval overlaps the runner-up's, the verdict is a tie
//! and says so. The figures that decided it are named in plain words.
//!
//! Also here: the regression check of one run against a baseline, by intervals.

use std::collections::BTreeMap;
use std::path::Path;

use driver_core::Error;
use serde::{Deserialize, Serialize};

use crate::model::{err, per_day, secs, size, Cost, Dist, Run, TargetCost, TargetResult, Verdict};

/// A workload: how often each measured operation happens in a day, and what is held.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub name: String,
    pub about: String,
    pub per_day: PerDay,
    pub held: Held,
    /// Recorded workloads and how often each runs (`[[workloads]]`).
    #[serde(default)]
    pub workloads: Vec<crate::workloads::Weight>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PerDay {
    pub image_pulls: f64,
    pub container_creates: f64,
    /// First writes to files the image holds (a copy-up on overlay), by file size
    /// (`1KiB`, `4KiB`, `1MiB`, `64MiB`, `512MiB`, …); 1KiB is measured by the storm
    /// of small appends, the others one by one.
    pub first_writes: BTreeMap<String, f64>,
    pub chmods: f64,
    pub renames: f64,
    pub tree_deletes: f64,
    /// Diffs of a container (a commit or an image build step).
    pub diffs: f64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Held {
    /// Images kept on disk.
    pub images: f64,
    /// Containers alive at once.
    pub containers: f64,
    /// First writes each live container holds, by file size.
    pub first_writes_per_container: BTreeMap<String, f64>,
    pub disk_budget_gb: f64,
}

const SHIPPED: [(&str, &str); 4] = [
    ("ci-runner", include_str!("../profiles/ci-runner.toml")),
    ("dense-host", include_str!("../profiles/dense-host.toml")),
    ("build-host", include_str!("../profiles/build-host.toml")),
    ("big-files", include_str!("../profiles/big-files.toml")),
];

impl Profile {
    fn parse(text: &str, origin: &str) -> Result<Profile, String> {
        let p: Profile = toml::from_str(text).map_err(|e| format!("profile {origin}: {}", e.message()))?;
        for size in p.per_day.first_writes.keys().chain(p.held.first_writes_per_container.keys()) {
            if crate::model::parse_size(size).is_none() {
                return Err(format!("profile {origin}: first write size {size:?} is not like 4KiB, 64MiB or 1GiB"));
            }
        }
        Ok(p)
    }

    /// The shipped profiles, in order.
    pub fn shipped() -> Vec<Profile> {
        SHIPPED.iter().map(|(n, t)| Profile::parse(t, n).expect("shipped profiles parse")).collect()
    }

    /// A shipped profile by name, or a TOML file (see bench-harness/profiles/).
    pub fn load(spec: &str) -> Result<Profile, String> {
        if let Some((n, t)) = SHIPPED.iter().find(|(n, _)| *n == spec) {
            return Profile::parse(t, n);
        }
        if spec.ends_with(".toml") || Path::new(spec).exists() {
            let text = std::fs::read_to_string(spec).map_err(|e| format!("profile {spec}: {e}"))?;
            return Profile::parse(&text, spec);
        }
        let names: Vec<&str> = SHIPPED.iter().map(|(n, _)| *n).collect();
        Err(format!("unknown profile {spec:?}: the shipped ones are {}, or give a FILE.toml", names.join(", ")))
    }
}

/// One line of a target's daily cost: an operation, how often, and what one costs.
struct Part {
    what: String,
    count: f64,
    each: Cost,
}

impl Part {
    fn total(&self) -> Cost {
        Cost { p50: self.each.p50 * self.count, lo: self.each.lo * self.count, hi: self.each.hi * self.count }
    }
}

/// How far whole runs drift apart, beyond the intervals of their medians: the interval
/// only covers the noise within one run, and back to back on one shared host the medians
/// of a figure move further (in tests/fixtures/bench, up to about 1.25x beyond the
/// intervals). A regression must clear this too.
const RUN_TO_RUN: f64 = 1.25;

/// Whether two costs overlap within the noise of this run.
fn overlaps(a: &Cost, b: &Cost) -> bool {
    a.lo <= b.hi && b.lo <= a.hi
}

const STORM: &str = "storm: 500 small appends";

fn cost(d: &Dist) -> Cost {
    Cost { p50: d.p50, lo: d.lo, hi: d.hi }
}

/// A figure at `bytes` from figures measured at other sizes: linear in the size between
/// two measured sizes, the smallest's below them, and beyond the largest along the last
/// segment (never falling): overlay on ext4 copies the whole file, so its cost is linear.
fn at_size(points: &[(u64, Cost)], bytes: u64) -> Cost {
    let x = bytes as f64;
    let Some(first) = points.first() else { return Cost::default() };
    if points.len() == 1 || x <= first.0 as f64 {
        return first.1;
    }
    let i = points.windows(2).position(|w| x <= w[1].0 as f64).unwrap_or(points.len() - 2);
    let ((x0, a), (x1, b)) = ((points[i].0 as f64, points[i].1), (points[i + 1].0 as f64, points[i + 1].1));
    let t = (x - x0) / (x1 - x0);
    let f = |a: f64, b: f64| (a + (b - a) * t).max(if t > 1.0 { b } else { 0.0 }).max(0.0);
    let (p50, lo, hi) = (f(a.p50, b.p50), f(a.lo, b.lo), f(a.hi, b.hi));
    Cost { p50, lo: lo.min(p50), hi: hi.max(p50) }
}

fn write_points(r: &TargetResult, of: &BTreeMap<String, Dist>) -> Vec<(u64, Cost)> {
    r.write_sizes().into_iter().filter_map(|(k, b)| Some((b, cost(of.get(&k)?)))).collect()
}

fn parts(r: &TargetResult, p: &Profile) -> Vec<Part> {
    let op = |k: &str| r.copyup.get(k).map(cost).unwrap_or_default();
    let d = &p.per_day;
    let mut v = vec![
        Part { what: "unpack of the image".into(), count: d.image_pulls, each: cost(&r.unpack) },
        Part { what: "container create".into(), count: d.container_creates, each: cost(&r.create) },
        Part { what: "chmod of a big lower file".into(), count: d.chmods, each: op("chmod big file") },
        Part { what: "rename of a lower directory".into(), count: d.renames, each: op("rename dir") },
        Part { what: "delete of a lower tree".into(), count: d.tree_deletes, each: op("delete tree") },
        Part { what: "diff of a container".into(), count: d.diffs, each: cost(&r.diff) },
    ];
    let mut points = write_points(r, &r.copyup);
    // The storm's appends are first writes to 1 KiB lower files.
    if let Some(storm) = r.copyup.get(STORM) {
        let c = cost(storm);
        points.push((1 << 10, Cost { p50: c.p50 / 500.0, lo: c.lo / 500.0, hi: c.hi / 500.0 }));
        points.sort_by_key(|p| p.0);
    }
    for (s, n) in &d.first_writes {
        let bytes = crate::model::parse_size(s).unwrap_or(0);
        v.push(Part { what: format!("first write to a {s} lower file"), count: *n, each: at_size(&points, bytes) });
    }
    for (what, count, each) in crate::workloads::parts(r, &p.workloads) {
        v.push(Part { what, count, each });
    }
    v.retain(|p| p.count > 0.0);
    v
}

fn total(parts: &[Part]) -> Cost {
    parts.iter().map(Part::total).fold(Cost::default(), |a, b| Cost {
        p50: a.p50 + b.p50,
        lo: a.lo + b.lo,
        hi: a.hi + b.hi,
    })
}

/// Bytes held: the kept images, and the live containers with their first writes.
fn disk(r: &TargetResult, p: &Profile) -> f64 {
    let points = write_points(r, &r.copyup_disk);
    let writes: f64 = p
        .held
        .first_writes_per_container
        .iter()
        .map(|(s, n)| n * at_size(&points, crate::model::parse_size(s).unwrap_or(0)).p50)
        .sum();
    p.held.images * r.disk_bytes("after_unpack") as f64 + p.held.containers * (r.per_container_disk().p50 + writes)
}

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
    let (k, bytes) = r.write_sizes().pop()?;
    let added = r.copyup_disk.get(&k)?.p50;
    (r.driver == "overlay" && added < bytes as f64 / 16.0).then(|| {
        format!(
            "overlay's copy-up on {} is a reflink clone: the first write to a {} lower file took {} and added {} of disk",
            r.fs,
            k.trim_start_matches("write "),
            secs(r.copyup[&k].p50),
            size(added)
        )
    })
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
        let rank = |d: &str| ["overlay", "btrfs", "vfs"].iter().position(|x| *x == d).unwrap_or(9);
        let (a, b) = (candidates[0], candidates[1]);
        let swap =
            if (a.3 - b.3).abs() > 0.2 * a.3.max(b.3) { b.3 < a.3 } else { rank(&b.0.driver) < rank(&a.0.driver) };
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
    let overlay_here = scored.iter().find(|(r, ..)| r.driver == "overlay" && r.fs == root_fs);
    let out_reason = |label: &str| costs.iter().find(|c| c.target == label).and_then(|c| c.out.clone());
    let mut notes = Vec::new();
    if pick.driver == "vfs" {
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
                secs(o.copyup.get(&o.largest_write()).map(|d| d.p50).unwrap_or(0.0)),
                o.largest_write().trim_start_matches("write ")
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
    } else if pick.driver == "btrfs" {
        if let Some((o, ..)) = overlay_here.filter(|(o, ..)| out_reason(&o.label()).is_none()) {
            notes.push(format!(
                "Docker and podman prefer overlay where it runs; here btrfs costs less for this profile \
                 (first write to the {} file: {} on btrfs, {} on overlay/{}).",
                o.largest_write().trim_start_matches("write "),
                secs(pick.copyup.get(&pick.largest_write()).map(|d| d.p50).unwrap_or(0.0)),
                secs(o.copyup.get(&o.largest_write()).map(|d| d.p50).unwrap_or(0.0)),
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

/// The figures a baseline comparison checks, by name, each with the smallest change
/// that is more than noise in its unit; all "lower is better".
fn figures(r: &TargetResult) -> Vec<(String, Dist, f64)> {
    let p = match r.image.as_str() {
        "" | crate::model::DEFAULT_IMAGE => r.label(),
        image => format!("{image} {}", r.label()),
    };
    // Below 5 ms, a busy 2-core host's scheduling alone moves a figure (measured: delete
    // tree 1.4 ms vs 4.1 ms in back-to-back runs); below 1 MB, journal and allocation.
    const SECOND: f64 = 5e-3;
    const BYTE: f64 = 1e6;
    let mut v = vec![
        (format!("{p} unpack seconds"), r.unpack.clone(), SECOND),
        (format!("{p} create seconds"), r.create.clone(), SECOND),
        (format!("{p} diff seconds"), r.diff.clone(), SECOND),
        (format!("{p} disk per container bytes"), r.per_container_disk(), BYTE),
    ];
    for (k, d) in &r.copyup {
        v.push((format!("{p} {k} seconds"), d.clone(), SECOND));
    }
    for (k, d) in &r.copyup_disk {
        v.push((format!("{p} {k} disk bytes"), d.clone(), BYTE));
    }
    for (k, d) in &r.disk {
        v.push((format!("{p} disk {k} bytes"), Dist::one(d.bytes as f64), BYTE));
    }
    v
}

/// Names every figure of `current` whose interval lies above the baselines' by more
/// than `pct`% beyond the drift between whole runs (`RUN_TO_RUN`), and by more than the
/// unit's noise floor. With several baseline runs
/// (on a shared host, where whole runs drift), a figure's baseline interval spans all of
/// theirs. Refuses a baseline from another host or workload, or one without results.
pub fn regressions(current: &Run, baselines: &[(Run, std::path::PathBuf)], pct: f64) -> Result<Vec<String>, Error> {
    if !current.results.iter().any(TargetResult::ok) {
        return Err(err("this run measured nothing to compare with the baseline"));
    }
    let mut base: BTreeMap<String, Dist> = BTreeMap::new();
    for (baseline, path) in baselines {
        let b = path.display();
        if !baseline.results.iter().any(TargetResult::ok) {
            return Err(err(format!("baseline {b} holds no results to compare with")));
        }
        let (h0, h1) = (&baseline.host, &current.host);
        if (h0.hostname.as_str(), h0.machine.as_str(), h0.cpus) != (h1.hostname.as_str(), h1.machine.as_str(), h1.cpus)
        {
            return Err(err(format!(
                "baseline {b} is from another host ({} {} with {} cpus; this is {} {} with {} cpus): figures from \
                 two hosts are not a regression check",
                h0.hostname, h0.machine, h0.cpus, h1.hostname, h1.machine, h1.cpus
            )));
        }
        if baseline.workload != current.workload {
            return Err(err(format!(
                "baseline {b} ran another workload ({:?}; this run: {:?})",
                baseline.workload, current.workload
            )));
        }
        for (name, d, _) in baseline.results.iter().filter(|r| r.ok()).flat_map(figures) {
            let e = base.entry(name).or_insert_with(|| d.clone());
            e.lo = e.lo.min(d.lo);
            e.hi = e.hi.max(d.hi);
        }
    }
    let mut out = Vec::new();
    for r in &current.results {
        if let Some(e) = &r.error {
            if baselines
                .iter()
                .any(|(b, _)| b.results.iter().any(|o| o.ok() && o.image == r.image && o.label() == r.label()))
            {
                out.push(format!("{} ran in the baseline and did not run now: {e}", r.label()));
            }
            continue;
        }
        for (name, now, floor) in figures(r) {
            let Some(was) = base.get(&name) else { continue };
            if now.n() == 0 || was.n() == 0 {
                continue;
            }
            // Beyond the baseline's interval, the drift between whole runs, and the threshold.
            if now.lo > was.hi * RUN_TO_RUN * (1.0 + pct / 100.0) && now.lo - was.hi > floor {
                out.push(format!(
                    "{name}: {:.4} [{:.4}–{:.4}] vs {:.4} [{:.4}–{:.4}] in the baseline (even the best case is {:.0}% worse)",
                    now.p50,
                    now.lo,
                    now.hi,
                    was.p50,
                    was.lo,
                    was.hi,
                    (now.lo / was.hi.max(1e-12) - 1.0) * 100.0
                ));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Skipped, SCHEMA};
    use bench_harness::workload::Rng;

    /// A full default run recorded on the project's 2-core test machine (all five targets).
    const RECORDED: &str = include_str!("../../tests/fixtures/bench/run-full.json");
    /// Three back-to-back `--quick --containers 3` runs recorded on the same machine.
    const QUICK: [&str; 3] = [
        include_str!("../../tests/fixtures/bench/run-quick-1.json"),
        include_str!("../../tests/fixtures/bench/run-quick-2.json"),
        include_str!("../../tests/fixtures/bench/run-quick-3.json"),
    ];

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
        for r in cheap.results.iter_mut().filter(|r| r.driver == "btrfs") {
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
        run.results.retain(|r| r.label() == "vfs/ext4" || r.driver == "overlay" && r.fs == "ext4");
        let overlay = run.results.iter_mut().find(|r| r.driver == "overlay").unwrap();
        overlay.error = Some("overlayfs does not mount here: EPERM".into());
        run.skipped.push(Skipped {
            driver: "vfs".into(),
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
        twin.driver = "btrfs".into();
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

    #[test]
    fn profiles_load_by_name_or_file_and_refuse_typos() {
        assert_eq!(Profile::shipped().len(), 4);
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("mine.toml");
        std::fs::write(
            &f,
            "name = \"mine\"\nabout = \"x\"\n[per_day]\ncontainer_creates = 5\n[held]\ncontainers = 1\n",
        )
        .unwrap();
        assert_eq!(Profile::load(f.to_str().unwrap()).unwrap().per_day.container_creates, 5.0);
        std::fs::write(&f, "name = \"mine\"\nabout = \"x\"\n[per_day]\ncontainer_create = 5\n[held]\n").unwrap();
        assert!(Profile::load(f.to_str().unwrap()).unwrap_err().contains("container_create"));
        assert!(Profile::load("nope").unwrap_err().contains("ci-runner, dense-host, build-host, big-files"));
    }

    #[test]
    fn interpolation_between_sizes_is_linear_and_never_falls_beyond_the_largest() {
        let c = |v: f64| Cost { p50: v, lo: v, hi: v };
        let pts = [(1 << 10, c(1.0)), (1 << 20, c(2.0)), (16 << 20, c(32.0))];
        assert_eq!(at_size(&pts, 512).p50, 1.0);
        assert_eq!(at_size(&pts, 1 << 20).p50, 2.0);
        assert!((at_size(&pts, 8 << 20).p50 - 16.0).abs() < 0.2);
        assert!((at_size(&pts, 32 << 20).p50 - 64.0).abs() < 1.0, "{}", at_size(&pts, 32 << 20).p50);
        let flat = [(1 << 10, c(5.0)), (1 << 20, c(1.0))];
        assert_eq!(at_size(&flat, 1 << 30).p50, 1.0, "no negative extrapolation");
    }

    fn quick(i: usize) -> Run {
        serde_json::from_str(QUICK[i]).unwrap()
    }

    #[test]
    fn three_recorded_identical_runs_have_no_regression_and_a_doctored_slowdown_is_caught() {
        let b = |r: Run| vec![(r, std::path::PathBuf::from("base.json"))];
        for i in 0..3 {
            for j in 0..3 {
                let r = regressions(&quick(i), &b(quick(j)), 25.0).unwrap();
                assert!(r.is_empty(), "run {i} against run {j}: {r:?}");
            }
        }
        // Twice as slow: every sample of one figure doubled. 2x is seen where the figure's
        // own spread leaves room: 2 lo > hi × 1.25 (drift) × 1.25 (threshold).
        let mut slow = quick(0);
        let target = slow.results.iter_mut().find(|r| r.label() == "overlay/ext4").unwrap();
        assert!(target.unpack.hi / target.unpack.lo < 1.28, "the recording's spread is narrow enough to see 2x");
        target.unpack = target.unpack.scaled(2.0);
        for j in 0..3 {
            let r = regressions(&slow, &b(quick(j)), 25.0).unwrap();
            assert_eq!(r.len(), 1, "{r:?}");
            assert!(r[0].starts_with("overlay/ext4 unpack seconds"), "{r:?}");
        }
        // With all three recorded runs as the baseline, too.
        let all: Vec<(Run, std::path::PathBuf)> = (0..3).map(|j| (quick(j), std::path::PathBuf::from("b"))).collect();
        assert_eq!(regressions(&slow, &all, 25.0).unwrap().len(), 1);
        assert!(regressions(&quick(0), &all, 25.0).unwrap().is_empty());
    }

    #[test]
    fn baselines_from_elsewhere_or_without_results_are_refused() {
        let b = |r: Run| vec![(r, std::path::PathBuf::from("base.json"))];
        let mut other = quick(1);
        other.host.hostname = "elsewhere".into();
        assert!(regressions(&quick(0), &b(other.clone()), 25.0).unwrap_err().to_string().contains("another host"));
        let mut other = quick(1);
        other.workload.containers += 1;
        assert!(regressions(&quick(0), &b(other.clone()), 25.0).unwrap_err().to_string().contains("another workload"));
        let mut empty = quick(1);
        empty.results.iter_mut().for_each(|r| r.error = Some("failed".into()));
        assert!(regressions(&quick(0), &b(empty.clone()), 25.0).unwrap_err().to_string().contains("no results"));
        assert!(regressions(&empty, &b(quick(0)), 25.0).unwrap_err().to_string().contains("measured nothing"));
        // A target that ran in the baseline and failed now is named, not a percentage.
        let mut failed = quick(0);
        failed.results[0].error = Some("mkfs failed".into());
        let r = regressions(&failed, &b(quick(1)), 25.0).unwrap();
        assert_eq!(r.len(), 1, "{r:?}");
        assert!(r[0].contains("ran in the baseline and did not run now: mkfs failed"));
    }
}
