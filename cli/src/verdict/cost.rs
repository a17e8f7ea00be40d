//! A target's expected cost under a profile: each operation's count a day times what
//! one costs (its median and interval), and the bytes it holds.

use std::collections::BTreeMap;

use super::profile::Profile;
use crate::model::{CopyupOp, Cost, DiskPhase, Dist, FileSize, TargetResult, STORM_APPENDS};

/// One line of a target's daily cost: an operation, how often, and what one costs.
pub(super) struct Part {
    pub(super) what: String,
    pub(super) count: f64,
    pub(super) each: Cost,
}

impl Part {
    pub(super) fn total(&self) -> Cost {
        Cost { p50: self.each.p50 * self.count, lo: self.each.lo * self.count, hi: self.each.hi * self.count }
    }
}

/// Whether two costs overlap within the noise of this run.
pub(super) fn overlaps(a: &Cost, b: &Cost) -> bool {
    a.lo <= b.hi && b.lo <= a.hi
}

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

fn write_points(r: &TargetResult, of: &BTreeMap<CopyupOp, Dist>) -> Vec<(u64, Cost)> {
    r.write_sizes().into_iter().filter_map(|bytes| Some((bytes, cost(of.get(&CopyupOp::Write { bytes })?)))).collect()
}

pub(super) fn parts(r: &TargetResult, p: &Profile) -> Vec<Part> {
    let op = |k: CopyupOp| r.copyup.get(&k).map(cost).unwrap_or_default();
    let d = &p.per_day;
    let mut v = vec![
        Part { what: "unpack of the image".into(), count: d.image_pulls, each: cost(&r.unpack) },
        Part { what: "container create".into(), count: d.container_creates, each: cost(&r.create) },
        Part { what: "chmod of a big lower file".into(), count: d.chmods, each: op(CopyupOp::ChmodBigFile) },
        Part { what: "rename of a lower directory".into(), count: d.renames, each: op(CopyupOp::RenameDir) },
        Part { what: "delete of a lower tree".into(), count: d.tree_deletes, each: op(CopyupOp::DeleteTree) },
        Part { what: "diff of a container".into(), count: d.diffs, each: cost(&r.diff) },
    ];
    let mut points = write_points(r, &r.copyup);
    // The storm's appends are first writes to 1 KiB lower files.
    if let Some(storm) = r.copyup.get(&CopyupOp::Storm) {
        let (c, n) = (cost(storm), STORM_APPENDS as f64);
        points.push((1 << 10, Cost { p50: c.p50 / n, lo: c.lo / n, hi: c.hi / n }));
        points.sort_by_key(|p| p.0);
    }
    // A size past the largest measured one (a --quick run stops at 16 MiB) is a
    // line drawn on, and the verdict says so rather than pass it off as measured.
    let largest = points.last().map(|p| p.0);
    for (size, n) in &d.first_writes {
        let what = match largest {
            Some(max) if size.0 > max => {
                format!("first write to a {size} lower file (extrapolated from {})", FileSize(max))
            }
            _ => format!("first write to a {size} lower file"),
        };
        v.push(Part { what, count: *n, each: at_size(&points, size.0) });
    }
    for (what, count, each) in crate::workloads::parts(r, &p.workloads) {
        v.push(Part { what, count, each });
    }
    v.retain(|p| p.count > 0.0);
    v
}

pub(super) fn total(parts: &[Part]) -> Cost {
    parts.iter().map(Part::total).fold(Cost::default(), |a, b| Cost {
        p50: a.p50 + b.p50,
        lo: a.lo + b.lo,
        hi: a.hi + b.hi,
    })
}

/// Bytes held: the kept images, and the live containers with their first writes.
pub(super) fn disk(r: &TargetResult, p: &Profile) -> f64 {
    let points = write_points(r, &r.copyup_disk);
    let writes: f64 = p.held.first_writes_per_container.iter().map(|(size, n)| n * at_size(&points, size.0).p50).sum();
    p.held.images * r.disk_bytes(DiskPhase::Unpack) as f64 + p.held.containers * (r.per_container_disk().p50 + writes)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
