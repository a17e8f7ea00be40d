//! The gate's comparison judged on recorded runs (tests/fixtures/bench/gate-*.json).

use super::*;
use std::collections::BTreeMap;

/// Four back-to-back `strata bench --drivers overlay --fs ext4` runs (the full
/// workload) recorded on the project's 2-core machine while other builds ran.
const RECORDED: [&str; 4] = [
    include_str!("../../../../tests/fixtures/bench/gate-1.json"),
    include_str!("../../../../tests/fixtures/bench/gate-2.json"),
    include_str!("../../../../tests/fixtures/bench/gate-3.json"),
    include_str!("../../../../tests/fixtures/bench/gate-4.json"),
];

/// Four more, with the gate's 45 creates beside the create-shaped reference, recorded
/// the same way (load 7-11: three other sessions building and testing).
const WITH_CREATES: [&str; 4] = [
    include_str!("../../../../tests/fixtures/bench/gate-5.json"),
    include_str!("../../../../tests/fixtures/bench/gate-6.json"),
    include_str!("../../../../tests/fixtures/bench/gate-7.json"),
    include_str!("../../../../tests/fixtures/bench/gate-8.json"),
];

/// Four more of the same build, recorded one after the other on a quiet host (load
/// 1.8-3.5, the bench's own threads included; nothing else running).
const QUIET: [&str; 4] = [
    include_str!("../../../../tests/fixtures/bench/gate-9.json"),
    include_str!("../../../../tests/fixtures/bench/gate-10.json"),
    include_str!("../../../../tests/fixtures/bench/gate-11.json"),
    include_str!("../../../../tests/fixtures/bench/gate-12.json"),
];

fn recorded() -> Vec<Run> {
    RECORDED.iter().map(|t| serde_json::from_str(t).expect("a recorded run parses")).collect()
}

fn judge(now: &Run, base: &Run) -> Comparison {
    let opts = Options { threshold_pct: THRESHOLD_PCT, tolerance_pct: TOLERANCE_PCT, ..Default::default() };
    compare(now, &[(base.clone(), PathBuf::from("base.json"))], &opts).expect("comparable")
}

/// The 12 ordered pairs (baseline, now) of four runs.
fn pairs() -> Vec<(usize, usize)> {
    (0..4).flat_map(|a| (0..4).filter(move |b| *b != a).map(move |b| (a, b))).collect()
}

/// `run` with every sample of overlay's unpack and create (not their references)
/// multiplied by `f`: the wall seconds, and with `cpu` their CPU seconds too (what a
/// slowdown of strata's own work does; a host that gives it less CPU stretches the
/// wall time alone).
fn slowed(run: &Run, f: f64, cpu: bool) -> Run {
    let mut run = run.clone();
    for r in run.results.iter_mut().filter(|r| r.driver == crate::model::DriverKind::Overlay) {
        r.unpack = r.unpack.scaled(f);
        r.create = r.create.scaled(f);
        if cpu {
            for k in ["unpack", "create"] {
                if let Some(d) = r.cpu.get_mut(k) {
                    *d = d.scaled(f);
                }
            }
        }
    }
    run
}

fn flagged(c: &Comparison, names: &[&str]) -> bool {
    c.regressed().iter().any(|f| names.iter().any(|n| f.name.starts_with(n)))
}

/// The sensitivity harness (its figures are in docs/ci.md): identical runs compared
/// pairwise for false alarms, then slowdowns injected into the stored samples: how
/// many of the 12 comparisons flag unpack or create, by (CPU samples slowed too,
/// percent).
fn sensitivity(runs: &[Run], set: &str) -> BTreeMap<(bool, u32), usize> {
    let mut false_alarms = Vec::new();
    for (a, b) in pairs() {
        let c = judge(&runs[b], &runs[a]);
        assert!(c.figures.iter().any(|f| !f.exact && f.status != Status::NotGated), "timings gated: {c:#?}");
        false_alarms.extend(c.regressed().iter().map(|f| format!("run {} vs {}: {}", b + 1, a + 1, f.line())));
    }
    eprintln!("{set}: false alarms over 12 identical comparisons: {}", false_alarms.len());
    assert!(false_alarms.is_empty(), "{set}: {false_alarms:#?}");
    let mut caught = BTreeMap::new();
    for cpu in [false, true] {
        for f in [1.1, 1.2, 1.5] {
            let mut n = 0;
            for (a, b) in pairs() {
                let c = judge(&slowed(&runs[b], f, cpu), &runs[a]);
                n += usize::from(flagged(&c, &["unpack", "create"]));
                // Only what was slowed is named.
                assert!(
                    c.regressed().iter().all(|g| g.name.starts_with("unpack") || g.name.starts_with("create")),
                    "{:?}",
                    c.regressed()
                );
            }
            eprintln!(
                "{set}: slowdown of {:.0}% ({}): unpack or create flagged in {n} of 12 comparisons",
                (f - 1.0) * 100.0,
                if cpu { "wall and CPU samples" } else { "wall samples only" }
            );
            caught.insert((cpu, (f * 100.0).round() as u32), n);
        }
    }
    caught
}

#[test]
fn identical_runs_never_fail_and_a_20_percent_slowdown_of_unpack_or_create_is_caught() {
    let caught = sensitivity(&recorded(), "gate-1..4");
    // A slowdown of strata's own work is caught by the CPU ratios; the wall ratios of
    // a host as loaded as the recording's (load 13-18 on 2 cores) spread too far to
    // see it (docs/ci.md, "Sensitivity, measured").
    assert!(caught[&(true, 120)] >= 11, "{caught:?}");
    assert_eq!(caught[&(true, 150)], 12, "{caught:?}");
}

/// With 45 creates a run, create is gated, and its CPU ratio, which a loaded host
/// moves least, catches a 20% slowdown of strata's own work that the unpack's alone
/// does not always show.
#[test]
fn runs_with_the_gates_creates_catch_a_20_percent_slowdown_through_create() {
    let runs: Vec<Run> = WITH_CREATES.iter().map(|t| serde_json::from_str(t).expect("parses")).collect();
    for r in &runs {
        assert_eq!((r.results[0].create.n(), r.results[0].reference[crate::model::CREATE_LIKE].n()), (45, 45));
    }
    let caught = sensitivity(&runs, "gate-5..8");
    assert!(caught[&(true, 120)] >= 11, "{caught:?}");
    assert_eq!(caught[&(true, 150)], 12, "{caught:?}");
    // Create alone catches it too, in every comparison.
    for (a, b) in pairs() {
        let c = judge(&slowed(&runs[b], 1.2, true), &runs[a]);
        let line = c.figures.iter().find(|f| f.name.starts_with("create CPU")).map(Figure::line);
        assert!(flagged(&c, &["create CPU"]), "run {} vs {}: {line:?}", b + 1, a + 1);
    }
}

/// The acceptance on a quiet host, where strata's unpack CPU spreads most
/// (docs/ci.md): 0 false alarms, and a 20% slowdown of the unpack's and the create's
/// wall and CPU samples caught in at least 11 of 12 comparisons (11 when recorded).
#[test]
fn on_a_quiet_host_a_20_percent_slowdown_is_caught_in_11_of_12() {
    let runs: Vec<Run> = QUIET.iter().map(|t| serde_json::from_str(t).expect("parses")).collect();
    let caught = sensitivity(&runs, "gate-9..12");
    assert!(caught[&(true, 120)] >= 11, "{caught:?}");
    assert_eq!(caught[&(true, 150)], 12, "{caught:?}");
}

/// Every gated exact figure 3% off the baseline's (where 3% is more than its
/// allowance) is named, with both numbers, in every comparison: up a regression, down
/// an improvement; and 0.5% of an exact count is not.
#[test]
fn a_3_percent_change_of_an_exact_figure_is_flagged_in_every_comparison() {
    let runs = recorded();
    let mut checked = 0;
    for (a, b) in pairs() {
        let base = &runs[a].results[0].counts;
        let moved: Vec<(String, i64)> = base
            .iter()
            .filter(|(k, v)| {
                **v * 3 / 100 != 0 && allowance(k, **v as f64, 0.01).is_some_and(|a| (**v as f64).abs() * 0.029 > a)
            })
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        assert!(moved.len() > 20, "{moved:?}");
        for (sign, want) in [(1, Status::Regressed), (-1, Status::Improved)] {
            let mut now = runs[b].clone();
            for (k, v) in &moved {
                now.results[0].counts.insert(k.clone(), v + sign * (v * 3 / 100));
            }
            let c = judge(&now, &runs[a]);
            for (k, _) in &moved {
                let f = c.figures.iter().find(|f| f.exact && &f.name == k).unwrap();
                assert_eq!(f.status, want, "run {} vs {}: {}", b + 1, a + 1, f.line());
                assert!(f.line().contains(&format!("{} -> {}", f.was as i64, f.now as i64)), "{}", f.line());
                checked += 1;
            }
        }
    }
    eprintln!("{checked} exact figures moved by 3%: all flagged");
    // Exact figures with no slack: 0.5% is within the stated 1% tolerance.
    let mut now = runs[1].clone();
    let v = now.results[0].counts["diff.tar_bytes"];
    now.results[0].counts.insert("diff.tar_bytes".into(), v + v / 200);
    let c = judge(&now, &runs[0]);
    let f = c.figures.iter().find(|f| f.name == "diff.tar_bytes").unwrap();
    assert_eq!(f.status, Status::Same, "{}", f.line());
}

#[test]
fn a_saved_run_is_judged_exactly_as_the_same_run_read_back() {
    let runs = recorded();
    let slow = slowed(&runs[1], 1.2, true);
    let again: Run = serde_json::from_str(&serde_json::to_string(&slow).unwrap()).unwrap();
    let (x, y) = (judge(&slow, &runs[0]), judge(&again, &runs[0]));
    let lines = |c: &Comparison| c.figures.iter().map(Figure::line).collect::<Vec<_>>();
    assert_eq!(lines(&x), lines(&y));
    // Each timing's interval holds its change, and more baseline runs narrow nothing
    // that is not in them: the pooled interval is computed from all their samples.
    for f in x.figures.iter().filter(|f| !f.exact && f.status != Status::NotGated) {
        assert!(f.lo <= f.change && f.change <= f.hi, "{}", f.line());
    }
    let both = compare(
        &runs[3],
        &[(runs[0].clone(), PathBuf::from("a")), (runs[1].clone(), PathBuf::from("b"))],
        &Options { threshold_pct: THRESHOLD_PCT, tolerance_pct: TOLERANCE_PCT, ..Default::default() },
    )
    .unwrap();
    assert!(both.regressed().is_empty(), "{:?}", both.regressed());
}

/// A burst of load that slows one sample and the reference beside it alike leaves
/// the figure where it was: each sample is judged against its own reference.
#[test]
fn a_sample_and_its_reference_slowed_together_do_not_move_the_paired_figure() {
    let mut rng = strata_cli::workload::Rng::new(7);
    let reference: Vec<f64> = (0..15).map(|_| 2.0 + rng.below(100) as f64 / 500.0).collect();
    let samples: Vec<f64> = reference.iter().map(|r| r * (1.2 + rng.below(100) as f64 / 500.0)).collect();
    let was = Side { samples: samples.clone(), reference: reference.clone() };
    let mut now = was.clone();
    for i in [1, 4, 6, 9, 11, 13, 14] {
        now.samples[i] *= 3.0;
        now.reference[i] *= 3.0;
    }
    assert!((now.ratio() / was.ratio() - 1.0).abs() < 1e-9, "{} {}", now.ratio(), was.ratio());
    let (lo, hi) = interval(&was, &now, "burst", 0.98);
    assert!(lo < 1.0 && hi > 1.0 && lo > 1.0 / 1.1 && hi < 1.1, "{lo} {hi}");
    // The ratio of the medians, judged before, moves: the two medians are now of
    // different samples.
    let rom = |s: &Side| median(&mut s.samples.clone()) / median(&mut s.reference.clone());
    assert!((rom(&now) / rom(&was) - 1.0).abs() > 0.01, "{} {}", rom(&now), rom(&was));
}

/// A timing under 5 ms is judged once both sides hold 20 samples or more beside their
/// references (container create: 45 a run), and not with the containers' 5.
#[test]
fn create_under_5_ms_is_gated_with_many_samples_only() {
    let runs = recorded();
    let with = |run: &Run, n: usize, f: f64| {
        let mut run = run.clone();
        let r = &mut run.results[0];
        let mut rng = strata_cli::workload::Rng::new(n as u64);
        let reference: Vec<f64> = (0..n).map(|_| 4e-3 + rng.below(1000) as f64 * 2e-6).collect();
        let samples: Vec<f64> = reference.iter().map(|x| f * (x / 2.0 + rng.below(1000) as f64 * 4e-7)).collect();
        r.create = Dist::of(samples.clone());
        r.reference.insert("create".into(), Dist::of(reference.clone()));
        r.cpu.insert("create".into(), Dist::of(samples.iter().map(|s| s / 4.0).collect()));
        r.cpu.insert("create reference".into(), Dist::of(reference.iter().map(|s| s / 4.0).collect()));
        run
    };
    let status = |c: &Comparison, name: &str| c.figures.iter().find(|f| f.name.starts_with(name)).unwrap().status;
    let few = judge(&with(&runs[1], 5, 1.0), &with(&runs[0], 5, 1.0));
    assert_eq!(status(&few, "create ÷"), Status::NotGated);
    assert_eq!(status(&few, "create CPU ÷"), Status::NotGated);
    let many = judge(&with(&runs[1], 45, 1.0), &with(&runs[0], 45, 1.0));
    assert_eq!(status(&many, "create CPU ÷"), Status::Same);
    let slow = judge(&with(&runs[1], 45, 1.2), &with(&runs[0], 45, 1.0));
    assert_eq!(status(&slow, "create CPU ÷"), Status::Regressed, "{:?}", slow.regressed());
    // The wall ratio has its interval, and is reported only: the host's load moves it.
    let wall = slow.figures.iter().find(|f| f.name.starts_with("create ÷")).unwrap();
    assert!(wall.status == Status::NotGated && wall.note == LOAD && wall.lo > 1.05, "{}", wall.line());
}

#[test]
fn the_bootstrap_interval_covers_the_change_and_is_fixed_by_the_figure_name() {
    let reference = vec![2.0, 2.1, 1.9, 2.0, 2.05];
    let was = Side { samples: vec![1.0, 1.1, 0.9, 1.05, 0.95], reference: reference.clone() };
    let now = Side { samples: was.samples.iter().map(|x| x * 1.5).collect(), reference };
    let (lo, hi) = interval(&was, &now, "x", 0.99);
    assert!(lo > 1.2 && hi < 1.9 && lo <= 1.5 && 1.5 <= hi, "{lo} {hi}");
    assert_eq!(interval(&was, &now, "x", 0.99), (lo, hi), "a fixed seed: the same interval every time");
    let (lo, hi) = interval(&was, &was, "y", 0.99);
    assert!(lo < 1.0 && hi > 1.0, "{lo} {hi}");
}
