//! The comparison: each figure of a run against the same figure of its baselines,
//! timings as ratios to their references with a bootstrap interval, exact figures
//! within their allowance (see the gate's module doc).

use std::path::PathBuf;

use super::error::BenchError;
use crate::failure::{Failure, Incomparable, Result};
use crate::model::{CopyupOp, Dist, Run, TargetResult, DEFAULT_IMAGE};

/// The share of unchanged runs the timing test may fail (when the references cancel the
/// host's drift): 5%, shared among the run's gated timings.
pub const FALSE_ALARM: f64 = 0.05;
/// Bootstrap resamples per timing figure.
const RESAMPLES: usize = 20_000;
/// Timings whose baseline median is below this are reported, not gated: below 5 ms a
/// busy 2-core host's scheduling alone moves them (delete tree 1.4 ms vs 4.1 ms in two
/// back-to-back runs), and no reference shares that noise.
const MIN_SECONDS: f64 = 5e-3;
/// ... unless both sides hold at least this many samples, each beside its reference:
/// container create (40 extra creates a run beside the containers' 5, bench/target.rs
/// `extra_creates`); 5 samples of 2 ms moved 16-22% between identical runs, 45 beside a
/// create-shaped reference far less (docs/ci.md, "Sensitivity, measured").
const MANY: usize = 20;

/// The defaults of `--max-regress` and `--exact-tolerance`.
pub const THRESHOLD_PCT: f64 = 5.0;
pub const TOLERANCE_PCT: f64 = 1.0;

/// How far an exact figure may move from `base` and still be the same, by counter:
/// `tolerance` (a fraction) of it, and for the device's counters more, measured over
/// back-to-back identical runs on this machine; `None` when it is reported, not gated:
/// - `dev_read_bytes`: what the scratch device reads depends on what the page cache
///   still holds (0 or 60 MB for the same diff), so on the host's memory pressure;
/// - `dev_flushes`: strata's background flusher (driver-core `writeback`) syncs every
///   so many bytes written, and how many of its wake-ups land while a sync runs depends
///   on timing (94 or 109 flushes for the same unpack);
/// - `dev_write_bytes`: ext4 commits its journal every 5 s as well as at each sync, and
///   the flusher's syncs come when they come, so a phase's metadata is logged in more or
///   fewer transactions: over four identical runs, 0.95% apart for the unpack (14 MB of
///   1.5 GB), 1.04% over the storm of 2,500 appends, 82 kB over five creates, 352 kB
///   over five diffs. Allowed: 1.5 times `tolerance`, and 1 MiB.
fn allowance(counter: &str, base: f64, tolerance: f64) -> Option<f64> {
    let relative = tolerance * base.abs();
    match counter.rsplit('.').next().unwrap_or_default() {
        "dev_read_bytes" | "dev_flushes" => None,
        "dev_write_bytes" => Some(1.5 * relative + 1024.0 * 1024.0),
        _ => Some(relative),
    }
}

/// What the gate is asked to do.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// How much worse (percent) a timing's ratio must be, its whole interval, to regress.
    pub threshold_pct: f64,
    /// How far (percent) an exact figure may move and still be the same: allocator and
    /// journal slack.
    pub tolerance_pct: f64,
    pub summary_md: Option<PathBuf>,
    pub junit: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Regressed,
    Improved,
    Same,
    /// Reported, not gated (why: in [`Figure::note`]).
    NotGated,
}

impl Status {
    pub(super) fn word(self) -> &'static str {
        match self {
            Status::Regressed => "REGRESSED",
            Status::Improved => "improved",
            Status::Same => "same",
            Status::NotGated => "not gated",
        }
    }
}

/// One figure of one target, then and now.
#[derive(Clone, Debug)]
pub struct Figure {
    /// `overlay/ext4` (with the image first when it is not the embedded default).
    pub target: String,
    /// `unpack ÷ floor` for a timing, `unpack.dev_write_bytes` for an exact figure.
    pub name: String,
    pub exact: bool,
    /// The baseline's median ratio, or its value (the largest, with several baselines).
    pub was: f64,
    pub now: f64,
    /// now ÷ was, and its interval (the change itself for an exact figure).
    pub change: f64,
    pub lo: f64,
    pub hi: f64,
    pub status: Status,
    pub note: String,
}

impl Figure {
    pub fn id(&self) -> String {
        format!("{} {}", self.target, self.name)
    }

    pub(super) fn numbers(&self) -> (String, String) {
        if self.exact {
            (format!("{}", self.was as i64), format!("{}", self.now as i64))
        } else {
            (format!("{:.3}", self.was), format!("{:.3}", self.now))
        }
    }

    pub(super) fn change_text(&self) -> String {
        if !self.change.is_finite() {
            return "new".into();
        }
        let pct = |x: f64| format!("{:+.1}%", (x - 1.0) * 100.0);
        if self.exact {
            pct(self.change)
        } else {
            format!("{} [{} to {}]", pct(self.change), pct(self.lo), pct(self.hi))
        }
    }

    /// One line: the figure, both numbers, the change with its interval, the result.
    pub fn line(&self) -> String {
        let (was, now) = self.numbers();
        let note = if self.note.is_empty() { String::new() } else { format!(" ({})", self.note) };
        format!("{}: {was} -> {now}, {}: {}{note}", self.id(), self.change_text(), self.status.word())
    }
}

/// A run judged against its baselines.
#[derive(Clone, Debug, Default)]
pub struct Comparison {
    pub figures: Vec<Figure>,
    /// Targets that ran in a baseline and did not run now, with why.
    pub lost: Vec<String>,
    /// The confidence of each timing's interval.
    pub confidence: f64,
    pub threshold_pct: f64,
    pub tolerance_pct: f64,
    pub baselines: Vec<String>,
}

impl Comparison {
    pub fn regressed(&self) -> Vec<&Figure> {
        self.figures.iter().filter(|f| f.status == Status::Regressed).collect()
    }

    fn count(&self, s: Status) -> usize {
        self.figures.iter().filter(|f| f.status == s).count()
    }

    /// The one-line outcome.
    pub fn summary(&self) -> String {
        format!(
            "{} regressed, {} improved, {} the same, {} not gated{} against {}",
            self.count(Status::Regressed),
            self.count(Status::Improved),
            self.count(Status::Same),
            self.count(Status::NotGated),
            if self.lost.is_empty() { String::new() } else { format!(", {} target(s) did not run", self.lost.len()) },
            self.baselines.join(", ")
        )
    }
}

fn target_name(r: &TargetResult) -> String {
    match r.image.as_str() {
        "" | DEFAULT_IMAGE => r.label(),
        image => format!("{image} {}", r.label()),
    }
}

/// Why a timing is reported and not gated: its reference does not do its kind of work,
/// so a host busy in another way moves one and not the other.
const UNLIKE: &str = "its reference does not share its bottleneck";

/// Why the unpack's and create's wall ratios are reported and not gated: the host's
/// load moves them, not only the figure's. strata's unpack runs on several threads and
/// the floor is a two-process pipeline, so other jobs take more wall time from the one
/// than the other; a create waits on the disk's flushes less than its reference. Over
/// four identical runs whose host's load went from 11 to 5 the unpack's median went
/// 2.11, 1.88, 1.82, then 1.28, and the last failed against each of the others (+42% to
/// +65%, the interval's lower end above +5%); the create's went 1.12, 0.95, 0.93, 1.22
/// (+32%, lower end +5.3%, against the third). Their CPU ratios, gated, moved 1.49 to
/// 1.57 and 1.68 to 1.81.
const LOAD: &str = "the host's load moves wall time more than its reference's; its CPU ratio is gated";

/// The timings of a target with their references: (name, samples, reference samples,
/// why it is not gated). Judged with an interval are those whose reference does the
/// same kind of work (of them, the unpack's and create's wall ratios are reported only,
/// [`LOAD`]): the unpack beside the floor (decompress and extract the same layers, synced),
/// container create beside `cp -a` (a full copy) or the write+fsync loop (a few small
/// files made durable), and the storm of appends (each a copy-up of a small file,
/// which overlayfs fsyncs) beside the write+fsync loop. The big copy-ups (data copies),
/// metadata changes and the diff (a read and a walk) are reported with their intervals.
fn timings(r: &TargetResult) -> Vec<(String, &Dist, Option<&Dist>, Option<&'static str>)> {
    // The create's reference: `cp -a` for a full copy, else the create-shaped syscalls
    // (runs before them: the write+fsync loop, under the key `create`).
    let like = crate::model::CREATE_LIKE;
    let (copy, key) = match (&r.create_cp_a, r.reference.contains_key(like)) {
        (Some(_), _) => ("cp -a", "create"),
        (None, true) => ("mkdir+2 fsync+syncfs", like),
        (None, false) => ("write+fsync", "create"),
    };
    let cpu = |k: &str| r.cpu.get(k);
    let mut v = vec![
        ("unpack ÷ floor".to_string(), &r.unpack, r.reference.get("unpack"), Some(LOAD)),
        (format!("create ÷ {copy}"), &r.create, r.reference.get(key), Some(LOAD)),
    ];
    if let (Some(u), Some(c)) = (cpu("unpack"), cpu("create")) {
        v.push(("unpack CPU ÷ floor CPU".to_string(), u, cpu("unpack reference"), None));
        v.push((format!("create CPU ÷ {copy} CPU"), c, cpu(&format!("{key} reference")), None));
    }
    for (k, d) in &r.copyup {
        let why = if *k == CopyupOp::Storm { None } else { Some(UNLIKE) };
        v.push((format!("{k} ÷ write+fsync"), d, r.reference.get("copyup"), why));
    }
    v.push(("diff ÷ write+fsync".to_string(), &r.diff, r.reference.get("diff"), Some(UNLIKE)));
    v
}

/// A timing's samples and its reference's, of one side (pooled over the baselines).
#[derive(Clone, Debug, Default)]
struct Side {
    samples: Vec<f64>,
    reference: Vec<f64>,
}

impl Side {
    /// Adds a run's samples when its reference was measured beside each of them.
    fn add(&mut self, d: &Dist, reference: Option<&Dist>) {
        let Some(reference) = reference else { return };
        if d.n() > 0 && d.n() == reference.n() && reference.samples.iter().all(|s| *s > 0.0) {
            self.samples.extend(&d.samples);
            self.reference.extend(&reference.samples);
        }
    }

    /// Each sample over the reference measured beside it.
    fn ratios(&self) -> Vec<f64> {
        self.samples.iter().zip(&self.reference).map(|(s, r)| s / r).collect()
    }

    /// The figure: the median of the paired ratios (see [`interval`]).
    fn ratio(&self) -> f64 {
        median(&mut self.ratios())
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// FNV-1a of a figure's name: its bootstrap's seed, so every reading of the same two
/// runs gives the same interval.
fn seed(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

/// The percentile bootstrap interval at `confidence` of the change of the median paired
/// ratio (each sample over the reference measured beside it), now over then; the ratios
/// of each side are resampled on their own. Paired, a change of the host's speed that
/// lasts a sample and its reference falls out of that sample's ratio; over the recorded
/// runs (docs/ci.md) the median paired ratio moved less from run to run than the ratio of
/// the medians.
fn interval(was: &Side, now: &Side, name: &str, confidence: f64) -> (f64, f64) {
    let mut rng = strata_cli::workload::Rng::new(seed(name));
    let mut buf = Vec::new();
    let mut draw = |from: &[f64]| {
        buf.clear();
        buf.extend((0..from.len()).map(|_| from[rng.below(from.len() as u64) as usize]));
        median(&mut buf)
    };
    let (then, now) = (was.ratios(), now.ratios());
    let mut changes: Vec<f64> = (0..RESAMPLES).map(|_| draw(&now) / draw(&then)).collect();
    changes.sort_by(f64::total_cmp);
    let tail = (1.0 - confidence) / 2.0;
    let at = |q: f64| changes[((q * RESAMPLES as f64) as usize).min(RESAMPLES - 1)];
    (at(tail), at(1.0 - tail))
}

/// Refuses baselines that cannot be compared with `current` (exit 2).
fn check_inputs(current: &Run, baselines: &[(Run, PathBuf)]) -> Result<()> {
    for (baseline, path) in baselines {
        let incomparable = |why| Failure::Incomparable { path: path.clone(), why };
        if !baseline.results.iter().any(TargetResult::ok) {
            return Err(incomparable(Incomparable::NoResults));
        }
        let (h0, h1) = (&baseline.host, &current.host);
        if (h0.hostname.as_str(), h0.machine.as_str(), h0.cpus) != (h1.hostname.as_str(), h1.machine.as_str(), h1.cpus)
        {
            let host = |h: &crate::model::Host| format!("{} {} with {} cpus", h.hostname, h.machine, h.cpus);
            return Err(incomparable(Incomparable::OtherHost { then: host(h0), now: host(h1) }));
        }
        if baseline.workload != current.workload {
            let (then, now) = (format!("{:?}", baseline.workload), format!("{:?}", current.workload));
            return Err(incomparable(Incomparable::OtherWorkload { then, now }));
        }
        if baseline.results.iter().filter(|r| r.ok()).all(|r| r.counts.is_empty() && r.reference.is_empty()) {
            return Err(incomparable(Incomparable::NoExactFigures));
        }
    }
    Ok(())
}

/// Judges `current` against `baselines` (see the module's doc). An error is about the
/// inputs (exit 2), or a run that measured nothing (exit 3).
pub fn compare(current: &Run, baselines: &[(Run, PathBuf)], opts: &Options) -> Result<Comparison, BenchError> {
    if !current.results.iter().any(TargetResult::ok) {
        return Err(BenchError::Unmeasured(Failure::NothingToCompare));
    }
    check_inputs(current, baselines).map_err(BenchError::Inputs)?;
    let mut out = Comparison {
        threshold_pct: opts.threshold_pct,
        tolerance_pct: opts.tolerance_pct,
        baselines: baselines.iter().map(|(_, p)| p.display().to_string()).collect(),
        ..Default::default()
    };
    let threshold = 1.0 + opts.threshold_pct / 100.0;
    let tolerance = opts.tolerance_pct / 100.0;
    // The timings with samples on both sides: (target, name, baseline, now, gated).
    let mut timed: Vec<(String, String, Side, Side, bool)> = Vec::new();
    for r in &current.results {
        let then: Vec<&TargetResult> = baselines
            .iter()
            .flat_map(|(b, _)| b.results.iter())
            .filter(|o| o.ok() && o.image == r.image && o.label() == r.label())
            .collect();
        if then.is_empty() {
            continue;
        }
        let target = target_name(r);
        if let Some(e) = &r.error {
            out.lost.push(format!("{target} ran in the baseline and did not run now: {e}"));
            continue;
        }
        for (name, d, reference, unlike) in timings(r) {
            let mut was = Side::default();
            let mut seconds = Vec::new();
            for o in &then {
                if let Some((_, od, oref, _)) = timings(o).into_iter().find(|(n, ..)| *n == name) {
                    was.add(od, oref);
                    seconds.extend(&od.samples);
                }
            }
            let mut now = Side::default();
            now.add(d, reference);
            let mut fig = Figure {
                target: target.clone(),
                name: name.clone(),
                exact: false,
                was: if was.samples.is_empty() { 0.0 } else { was.ratio() },
                now: if now.samples.is_empty() { 0.0 } else { now.ratio() },
                change: f64::NAN,
                lo: f64::NAN,
                hi: f64::NAN,
                status: Status::NotGated,
                note: String::new(),
            };
            fig.change = fig.now / fig.was;
            let base_seconds = if seconds.is_empty() { 0.0 } else { median(&mut seconds) };
            if was.samples.len() < 2 || now.samples.len() < 2 {
                fig.note = "fewer than 2 samples with a reference on a side".into();
            } else if base_seconds < MIN_SECONDS && was.samples.len().min(now.samples.len()) < MANY {
                fig.note = format!("{} in the baseline, under the 5 ms noise floor", crate::model::secs(base_seconds));
            } else {
                fig.note = unlike.unwrap_or_default().to_string();
                timed.push((target.clone(), name.clone(), was, now, unlike.is_none()));
            }
            out.figures.push(fig);
        }
        // Exact figures: what every baseline recorded, against what this run did.
        let mut keys: Vec<&String> = r.counts.keys().collect();
        for o in &then {
            keys.extend(o.counts.keys());
        }
        keys.sort();
        keys.dedup();
        for key in keys {
            let olds: Vec<i64> = then.iter().filter_map(|o| o.counts.get(key).copied()).collect();
            let (lo, hi) = match (olds.iter().min(), olds.iter().max()) {
                (Some(lo), Some(hi)) => (*lo as f64, *hi as f64),
                _ => (f64::NAN, f64::NAN),
            };
            let now = r.counts.get(key).map(|v| *v as f64).unwrap_or(f64::NAN);
            let mut fig = Figure {
                target: target.clone(),
                name: key.clone(),
                exact: true,
                was: hi,
                now,
                change: f64::NAN,
                lo: f64::NAN,
                hi: f64::NAN,
                status: Status::Same,
                note: String::new(),
            };
            if olds.len() > 1 && lo != hi {
                fig.note = format!("the baselines range {} to {}", lo as i64, hi as i64);
            }
            let up = allowance(key, hi, tolerance);
            let down = allowance(key, lo, tolerance);
            match (up, down) {
                _ if now.is_nan() || lo.is_nan() => {
                    fig.status = Status::NotGated;
                    fig.note = if now.is_nan() { "not recorded now" } else { "not recorded in the baseline" }.into();
                }
                (Some(up), _) if now > hi + up => fig.status = Status::Regressed,
                (_, Some(down)) if now < lo - down => {
                    fig.status = Status::Improved;
                    fig.was = lo;
                }
                (Some(_), _) => {}
                (None, _) => {
                    fig.status = Status::NotGated;
                    fig.note = "varies with the page cache and the flusher's timing".into();
                }
            }
            fig.change = if fig.was == 0.0 && fig.now == 0.0 { 1.0 } else { fig.now / fig.was };
            fig.lo = fig.change;
            fig.hi = fig.change;
            out.figures.push(fig);
        }
    }
    // Every timing's interval at the gated ones' share of the false-alarm rate.
    // The wall ratios the host's load moves count too, as they did when they were gated:
    // leaving them out would narrow the others' intervals (a storm of 5 samples then
    // failed one of 12 identical comparisons).
    let load = |t: &(String, String, Side, Side, bool)| {
        out.figures.iter().any(|f| !f.exact && f.target == t.0 && f.name == t.1 && f.note == LOAD)
    };
    let m = timed.iter().filter(|t| t.4 || load(t)).count().max(1) as f64;
    // A regression is one-sided: each end of the interval is a one-sided bound at
    // FALSE_ALARM / m, so the interval's two-sided confidence is 1 - 2 FALSE_ALARM / m.
    out.confidence = 1.0 - 2.0 * FALSE_ALARM / m;
    for (target, name, was, now, gated) in timed {
        let fig = out.figures.iter_mut().find(|f| !f.exact && f.target == target && f.name == name).expect("listed");
        let (lo, hi) = interval(&was, &now, &fig.id(), out.confidence);
        fig.lo = lo;
        fig.hi = hi;
        fig.status = if !gated {
            Status::NotGated
        } else if lo > threshold {
            Status::Regressed
        } else if hi < 1.0 / threshold {
            Status::Improved
        } else {
            Status::Same
        };
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
