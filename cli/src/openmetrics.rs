//! `strata bench --openmetrics FILE`: a run's figures as text for Prometheus, to drop
//! where node-exporter's textfile collector reads (`--collector.textfile.directory`,
//! files named `*.prom`).
//!
//! The file is the OpenMetrics 1.0 text format and, at the same time, valid Prometheus
//! text format 0.0.4, which is what the textfile collector actually parses: it holds
//! gauges only (no `_total`/`_created` counters, no `info` or `stateset` types, which
//! 0.0.4 does not know), no timestamps (the collector refuses files that carry them, and
//! the two formats disagree on their unit), and the two OpenMetrics-only lines (`# UNIT`
//! and the final `# EOF`) are comments to a 0.0.4 parser. Names end in their base unit
//! (`_seconds`, `_bytes`), as both formats' conventions (and `promtool check metrics`)
//! ask. Every sample carries `host` (the recorded hostname), so files of many hosts
//! can also be concatenated into one scrape without clashing.
//!
//! A figure with a spread is three samples told apart by `stat`: `median`, and `lo`/`hi`,
//! the interval of the median (see [`Dist`]) — not quantiles of the samples, so the
//! label is not `quantile`.

use std::fmt::Write as _;

use crate::model::{Dist, Run};

/// One metric family: its samples, each a label set and a value.
struct Family {
    name: &'static str,
    unit: Option<&'static str>,
    help: &'static str,
    samples: Vec<(Vec<(&'static str, String)>, f64)>,
}

impl Family {
    fn new(name: &'static str, unit: Option<&'static str>, help: &'static str) -> Family {
        if let Some(u) = unit {
            debug_assert!(name.ends_with(&format!("_{u}")), "OpenMetrics: {name} must end in its unit {u}");
        }
        Family { name, unit, help, samples: Vec::new() }
    }

    fn add(&mut self, labels: Vec<(&'static str, String)>, value: f64) {
        self.samples.push((labels, value));
    }

    /// A distribution as its median and the two ends of the median's interval.
    fn add_dist(&mut self, labels: Vec<(&'static str, String)>, d: &Dist) {
        if d.n() == 0 {
            return;
        }
        for (stat, v) in [("median", d.p50), ("lo", d.lo), ("hi", d.hi)] {
            let mut l = labels.clone();
            l.push(("stat", stat.into()));
            self.add(l, v);
        }
    }

    fn render(&self, out: &mut String) {
        if self.samples.is_empty() {
            return;
        }
        let _ = writeln!(out, "# HELP {} {}", self.name, escape_help(self.help));
        let _ = writeln!(out, "# TYPE {} gauge", self.name);
        if let Some(u) = self.unit {
            let _ = writeln!(out, "# UNIT {} {u}", self.name);
        }
        for (labels, v) in &self.samples {
            let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape_value(v))).collect();
            let _ = writeln!(out, "{}{{{}}} {}", self.name, labels.join(","), number(*v));
        }
    }
}

/// HELP text: backslash and newline escaped (both formats).
fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A label value: backslash, double quote and newline escaped (both formats).
fn escape_value(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// A sample value both formats parse: Rust prints `inf`, which neither does.
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

/// The text of one or more runs (several `--from` files give one file for all hosts).
pub fn text(runs: &[&Run]) -> String {
    let mut info = Family::new(
        "strata_bench_host_info",
        None,
        "The host a strata bench ran on (value 1); its facts are the labels.",
    );
    let mut time = Family::new(
        "strata_bench_run_timestamp_seconds",
        Some("seconds"),
        "When the bench run started, seconds since the epoch (alert when it grows old).",
    );
    let mut up = Family::new(
        "strata_bench_target_up",
        None,
        "1 when the driver ran on the filesystem, 0 when it failed or could not be tried here.",
    );
    let mut phase = Family::new(
        "strata_bench_phase_seconds",
        Some("seconds"),
        "Wall time of one bench phase (unpack of the image, container create, diff, first writes and other \
         operations in a container): the median and the interval of the median (stat).",
    );
    let mut samples =
        Family::new("strata_bench_phase_samples", None, "How many samples a phase's median and interval come from.");
    let mut cpu = Family::new(
        "strata_bench_unpack_cpu_seconds",
        Some("seconds"),
        "CPU time (user and system) of the first unpack of the image.",
    );
    let mut tar = Family::new(
        "strata_bench_tar_bytes",
        Some("bytes"),
        "Bytes of uncompressed tar: what one unpack applied (phase unpack), what one container's diff wrote \
         (phase diff).",
    );
    let mut disk = Family::new(
        "strata_bench_disk_bytes",
        Some("bytes"),
        "Disk the driver used over the empty filesystem (statfs, synced) after each phase: after_unpack, \
         after_containers, after_writes.",
    );
    let mut inodes = Family::new(
        "strata_bench_disk_inodes",
        None,
        "Inodes the driver used over the empty filesystem after each phase.",
    );
    let mut container_disk = Family::new(
        "strata_bench_container_disk_bytes",
        Some("bytes"),
        "Disk one container create added (statfs delta, synced): median and interval.",
    );
    let mut write_disk = Family::new(
        "strata_bench_first_write_disk_bytes",
        Some("bytes"),
        "Disk the first 1-byte write to a lower file added (a whole copy-up on overlay over ext4, about a block \
         on btrfs): median and interval.",
    );
    let mut mounted = Family::new(
        "strata_bench_mount_option",
        None,
        "1 for each overlay option (metacopy, redirect_dir, index) with the value the containers' overlays were \
         mounted with: they decide whether chmod, chown and rename of lower files copy data.",
    );
    let mut peer = Family::new(
        "strata_bench_peer_unpack_seconds",
        Some("seconds"),
        "Unpack of the image alone, end to end from an oci-archive and synced, by another tool (containerd, \
         podman), the floor (igzip|tar, else unpigz|tar or gzip|tar), or strata itself beside them.",
    );
    let mut pick = Family::new(
        "strata_bench_verdict_pick",
        None,
        "1 for the driver/filesystem the verdict picks for a workload profile, 0 for the other candidates.",
    );
    let mut work = Family::new(
        "strata_bench_verdict_work_seconds",
        Some("seconds"),
        "Seconds of storage work a day a target would cost under a workload profile: median and interval.",
    );

    for run in runs {
        let h = &run.host;
        let host = || ("host", h.hostname.clone());
        info.add(
            vec![
                host(),
                ("kernel", h.kernel.clone()),
                ("machine", h.machine.clone()),
                ("cpus", h.cpus.to_string()),
                ("strata", h.strata.clone()),
                ("root_fs", h.root_fs.clone()),
                ("scratch_fs", h.scratch_fs.clone()),
                ("containers", run.workload.containers.to_string()),
                ("quick", run.workload.quick.to_string()),
            ],
            1.0,
        );
        time.add(vec![host()], h.time as f64);
        for s in &run.skipped {
            for image in &run.workload.images {
                up.add(
                    vec![host(), ("image", image.clone()), ("driver", s.driver.to_string()), ("fs", s.fs.clone())],
                    0.0,
                );
            }
        }
        for r in &run.results {
            let base =
                || vec![host(), ("image", r.image.clone()), ("driver", r.driver.to_string()), ("fs", r.fs.clone())];
            up.add(base(), if r.ok() { 1.0 } else { 0.0 });
            if !r.ok() {
                continue;
            }
            let with = |k: &'static str, v: &str| {
                let mut l = base();
                l.push((k, v.to_string()));
                l
            };
            let mut figures: Vec<(String, &Dist)> =
                vec![("unpack".into(), &r.unpack), ("create".into(), &r.create), ("diff".into(), &r.diff)];
            figures.extend(r.create_cp_a.iter().map(|d| ("create: cp -a".to_string(), d)));
            figures.extend(r.copyup.iter().map(|(k, d)| (k.to_string(), d)));
            // A figure measured without samples is left out.
            for (name, d) in figures.into_iter().filter(|(_, d)| d.n() > 0) {
                phase.add_dist(with("phase", &name), d);
                samples.add(with("phase", &name), d.n() as f64);
            }
            cpu.add(base(), r.unpack_cpu_seconds);
            tar.add(with("phase", "unpack"), r.unpack_bytes as f64);
            tar.add(with("phase", "diff"), r.diff_bytes as f64);
            for (phase, d) in &r.disk {
                disk.add(with("phase", phase.name()), d.bytes as f64);
                inodes.add(with("phase", phase.name()), d.inodes as f64);
            }
            container_disk.add_dist(base(), &r.per_container_disk());
            for (op, d) in &r.copyup_disk {
                write_disk.add_dist(with("phase", &op.to_string()), d);
            }
            for (option, value) in &r.mounted {
                let mut l = with("option", option);
                l.push(("value", value.clone()));
                mounted.add(l, 1.0);
            }
        }
        for p in run.peers.iter().filter(|p| p.error.is_none()) {
            let labels = vec![
                host(),
                ("image", p.image.clone()),
                ("tool", p.tool.clone()),
                ("storage", p.driver.clone()),
                ("driver", p.strata_driver.clone()),
                ("fs", p.fs.clone()),
            ];
            peer.add_dist(labels, &p.unpack);
        }
        for v in &run.verdicts {
            for c in &v.costs {
                let labels = || {
                    vec![
                        host(),
                        ("image", v.image.clone()),
                        ("profile", v.profile.clone()),
                        ("target", c.target.clone()),
                    ]
                };
                pick.add(labels(), if v.pick.as_ref() == Some(&c.target) { 1.0 } else { 0.0 });
                if c.seconds_per_day.hi > 0.0 {
                    let cost = &c.seconds_per_day;
                    for (stat, x) in [("median", cost.p50), ("lo", cost.lo), ("hi", cost.hi)] {
                        let mut l = labels();
                        l.push(("stat", stat.into()));
                        work.add(l, x);
                    }
                }
            }
        }
    }
    let mut out = String::new();
    for f in
        [info, time, up, phase, samples, cpu, tar, disk, inodes, container_disk, write_disk, mounted, peer, pick, work]
    {
        f.render(&mut out);
    }
    out + "# EOF\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_values_are_escaped_for_both_formats() {
        assert_eq!(escape_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(escape_help("x\\y\nz"), "x\\\\y\\nz");
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(f64::NEG_INFINITY), "-Inf");
        assert_eq!(number(f64::NAN), "NaN");
        // No exponent a parser could trip on, whatever the magnitude.
        assert_eq!(number(1.5e-5), "0.000015");
    }

    #[test]
    fn a_recorded_run_gives_one_family_block_each_and_ends_in_eof() {
        let mut run: Run = serde_json::from_str(include_str!("../../tests/fixtures/bench/run-full.json")).unwrap();
        run.verdicts = crate::verdict::verdicts(&run, &crate::verdict::Profile::shipped());
        let t = text(&[&run]);
        assert!(t.ends_with("\n# EOF\n"), "{t}");
        // Families are not interleaved: each TYPE line once, before all of its samples.
        let types: Vec<&str> = t.lines().filter_map(|l| l.strip_prefix("# TYPE ")).collect();
        let mut seen = std::collections::BTreeSet::new();
        let mut current = "";
        for l in t.lines().filter(|l| !l.starts_with('#')) {
            let name = &l[..l.find('{').unwrap()];
            if name != current {
                assert!(seen.insert(name), "{name} interleaved");
                current = name;
            }
        }
        assert_eq!(seen.len(), types.len());
        assert!(t.contains("strata_bench_phase_seconds{host=\""), "{t}");
        assert!(t.contains(",phase=\"write 512MiB\",stat=\"median\"} "), "{t}");
    }
}
