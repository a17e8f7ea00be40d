//! `strata bench --from a.json --from b.json ...`: bench runs of several hosts side by
//! side. Each host is named by its recorded facts (its hostname, and what tells two
//! runs of one hostname apart); the runs must be of the same workload, or their figures
//! would not compare. The terminal gets a table per image (figure × target, a column
//! per host, each host's median over the first host's) and each host's verdict per
//! profile; `--report` gets the same as a page ([`html`], drawn with the single-run
//! report's pieces: this module uses `report`, never the other way round).

use std::path::{Path, PathBuf};

use crate::failure::{Failure, Result};
use crate::model::{Dist, Run, TargetResult, Workload};
use crate::page::{cell, chart_or_note, escape, utc, Unit, STYLE};
use crate::report::{copyup_chart, figure_docs, missing};
use crate::verdict::Profile;

/// One host's run, as read from its file.
pub struct FleetHost {
    /// How the comparison names it (see [`names`]).
    pub name: String,
    pub path: PathBuf,
    pub run: Run,
}

/// The runs compared, in the order given.
pub struct Fleet {
    pub hosts: Vec<FleetHost>,
}

/// How two workloads differ, in words; empty when they are the same.
fn workload_differences(a: &Workload, b: &Workload) -> Vec<String> {
    let mut d = Vec::new();
    let mut differ = |what: &str, x: String, y: String| {
        if x != y {
            d.push(format!("{what} {x} vs {y}"));
        }
    };
    differ("images", format!("{:?}", a.images), format!("{:?}", b.images));
    differ("containers", a.containers.to_string(), b.containers.to_string());
    differ("unpacks per target", a.unpack_runs.to_string(), b.unpack_runs.to_string());
    differ("--quick", a.quick.to_string(), b.quick.to_string());
    differ("copy-up timing", format!("{:?}", a.copyup_timing), format!("{:?}", b.copyup_timing));
    d
}

/// Names for the hosts: the hostname, and when two runs share one, what else tells
/// them apart (the filesystem `--root` was on, then when it ran, then its place).
pub fn names(runs: &[&Run]) -> Vec<String> {
    type Name = fn(usize, &Run) -> String;
    let levels: [Name; 4] = [
        |_, r| r.host.hostname.clone(),
        |_, r| format!("{} (root on {})", r.host.hostname, r.host.root_fs),
        |_, r| format!("{} (root on {}, {})", r.host.hostname, r.host.root_fs, utc(r.host.time)),
        |i, r| format!("{} #{}", r.host.hostname, i + 1),
    ];
    let mut out: Vec<String> = runs.iter().enumerate().map(|(i, r)| levels[0](i, r)).collect();
    for level in &levels[1..] {
        let dup = |out: &[String], i: usize| out.iter().filter(|n| **n == out[i]).count() > 1;
        let clashing: Vec<usize> = (0..out.len()).filter(|&i| dup(&out, i)).collect();
        if clashing.is_empty() {
            break;
        }
        for i in clashing {
            out[i] = level(i, runs[i]);
        }
    }
    out
}

impl Fleet {
    /// Reads the runs, recomputes each one's verdicts, and checks they are of one workload.
    pub fn load(paths: &[PathBuf], profiles: &[Profile]) -> Result<Fleet> {
        let mut runs = Vec::new();
        for p in paths {
            let mut run = Run::load(p)?;
            run.verdicts = crate::verdict::verdicts(&run, profiles);
            runs.push(run);
        }
        for (p, r) in paths.iter().zip(&runs).skip(1) {
            let d = workload_differences(&runs[0].workload, &r.workload);
            if !d.is_empty() {
                return Err(Failure::OtherWorkload { path: p.clone(), first: paths[0].clone(), differences: d });
            }
        }
        let names = names(&runs.iter().collect::<Vec<_>>());
        let hosts = names
            .into_iter()
            .zip(paths.iter().zip(runs))
            .map(|(name, (path, run))| FleetHost { name, path: path.clone(), run })
            .collect();
        Ok(Fleet { hosts })
    }

    pub fn workload(&self) -> &Workload {
        &self.hosts[0].run.workload
    }

    /// The images, then per image the targets any host ran, in first-seen order.
    pub fn images(&self) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        for h in &self.hosts {
            for i in h.run.images() {
                if !v.contains(&i) {
                    v.push(i);
                }
            }
        }
        v
    }

    pub fn targets(&self, image: &str) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        for h in &self.hosts {
            for r in h.run.results.iter().filter(|r| r.image == image && r.ok()) {
                if !v.contains(&r.label()) {
                    v.push(r.label());
                }
            }
        }
        v
    }

    /// Each host's result for a target, when it ran there.
    pub fn results<'a>(&'a self, image: &str, target: &str) -> Vec<Option<&'a TargetResult>> {
        self.hosts
            .iter()
            .map(|h| h.run.results.iter().find(|r| r.image == image && r.label() == target && r.ok()))
            .collect()
    }

    /// One row per figure and target.
    pub fn rows(&self, image: &str) -> Vec<Row> {
        let mut rows = Vec::new();
        for target in self.targets(image) {
            let results = self.results(image, &target);
            let Some(first) = results.iter().flatten().next() else { continue };
            for (doc, get) in figure_docs(first, self.workload()) {
                let per_host: Vec<Option<Dist>> = results.iter().map(|r| r.and_then(|r| get(r, &doc))).collect();
                // A figure this target has on no host (cp -a beside overlay's create) is no row.
                if per_host.iter().all(Option::is_none) {
                    continue;
                }
                rows.push((doc.name.clone(), target.clone(), doc.unit, per_host));
            }
        }
        rows
    }
}

/// One figure of one target on every host: (figure, target, unit, per host its
/// distribution when it ran there).
pub type Row = (String, String, Unit, Vec<Option<Dist>>);

/// A host's facts in one line.
pub fn facts(run: &Run, path: &Path) -> String {
    let h = &run.host;
    format!(
        "kernel {} on {}, {} cpus, strata {}, --root on {}, scratch on {}, run {} ({})",
        h.kernel,
        h.machine,
        h.cpus,
        h.strata,
        h.root_fs,
        h.scratch_fs,
        utc(h.time),
        path.display()
    )
}

/// `1.23x`, or `-` when either side is missing or zero.
pub fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if a > 0.0 => format!("{:.2}x", b / a),
        _ => "-".into(),
    }
}

pub fn value(v: f64, unit: Unit) -> String {
    match unit {
        Unit::Seconds => crate::model::secs(v),
        Unit::Bytes => crate::model::size(v),
    }
}

/// The comparison in the terminal.
pub fn print(fleet: &Fleet) {
    let w = fleet.workload();
    println!(
        "{} hosts, one workload: {}; {} containers per target, {} unpacks per target{}",
        fleet.hosts.len(),
        w.images.join(", "),
        w.containers,
        w.unpack_runs,
        if w.quick { ", quick" } else { "" }
    );
    let width = fleet.hosts.iter().map(|h| h.name.chars().count()).max().unwrap_or(0);
    for h in &fleet.hosts {
        println!("  {:<width$}  {}", h.name, facts(&h.run, &h.path));
    }
    let first = &fleet.hosts[0].name;
    let col = width.max(12);
    for image in fleet.images() {
        println!("\nimage: {image}   (medians; each ratio is that host's median over {first}'s)");
        let mut head = format!("{:<26} {:<13}", "figure", "target");
        for h in &fleet.hosts {
            head += &format!(" {:>col$}", h.name);
        }
        for h in &fleet.hosts[1..] {
            head += &format!(" {:>col$}", format!("{}/{}", h.name, first));
        }
        println!("{}", head.trim_end());
        for (figure, target, unit, per_host) in fleet.rows(&image) {
            let medians: Vec<Option<f64>> = per_host.iter().map(|d| d.as_ref().map(|d| d.p50)).collect();
            let mut line = format!("{figure:<26} {target:<13}");
            for m in &medians {
                line += &format!(" {:>col$}", m.map(|v| value(v, unit)).unwrap_or_else(|| "not run".into()));
            }
            for m in &medians[1..] {
                line += &format!(" {:>col$}", ratio(medians[0], *m));
            }
            println!("{line}");
        }
    }
    println!("\nverdict per workload profile, host by host:");
    let images = fleet.images();
    for v in &fleet.hosts[0].run.verdicts {
        let tag = if images.len() > 1 { format!("[{}] ", v.image) } else { String::new() };
        println!("  {tag}{}:", v.profile);
        for h in &fleet.hosts {
            let mine = h.run.verdicts.iter().find(|m| m.profile == v.profile && m.image == v.image);
            println!("    {:<width$}  {}", h.name, mine.map(|m| m.summary.as_str()).unwrap_or("no verdict"));
        }
    }
    for h in &fleet.hosts {
        for s in &h.run.skipped {
            println!("not run on {}: {}/{}: {}; to fix: {}", h.name, s.driver, s.fs, s.why, s.fix);
        }
        for r in h.run.results.iter().filter(|r| !r.ok()) {
            println!("not run on {}: {}: {}", h.name, r.label(), r.error.as_deref().unwrap_or_default());
        }
    }
}

/// The page for several hosts' runs of one workload (`--from a.json --from b.json`):
/// the hosts' facts, each host's verdict per profile, every figure side by side with
/// each host's median over the first host's, and the first-write chart per host.
pub fn html(fleet: &Fleet) -> String {
    let w = fleet.workload();
    let n = fleet.hosts.len();
    let first = &fleet.hosts[0].name;
    let mut h = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>strata bench: {n} hosts</title>\
         <style>{STYLE}</style></head><body>\n<h1>strata bench: {n} hosts side by side</h1>\n<p class=\"host\">\
         One workload: {}; {} containers per target; {} unpack(s) per target; copy-up timed as {}{}. Each figure \
         is a host's median with the interval that covers it; the last columns are each host's median over {}'s.\
         </p>\n",
        escape(&w.images.join(", ")),
        w.containers,
        w.unpack_runs,
        escape(&w.copyup_timing),
        if w.quick { " (quick mode: smaller files, fewer samples)" } else { "" },
        escape(first),
    );
    let header = |first_col: &str| {
        let mut t = format!("<tr><th>{first_col}</th>");
        for host in &fleet.hosts {
            t += &format!("<th class=\"hostname\">{}</th>", escape(&host.name));
        }
        t
    };
    h += "<h2>Hosts</h2>\n<table>";
    h += &header("");
    h += "</tr>\n";
    type Fact = fn(&FleetHost) -> String;
    let facts: [(&str, Fact); 9] = [
        ("hostname", |f| f.run.host.hostname.clone()),
        ("kernel", |f| f.run.host.kernel.clone()),
        ("machine", |f| f.run.host.machine.clone()),
        ("cpus", |f| f.run.host.cpus.to_string()),
        ("strata", |f| f.run.host.strata.clone()),
        ("--root on", |f| format!("{} ({})", f.run.host.root_fs, f.run.host.root.display())),
        ("scratch on", |f| format!("{} ({})", f.run.host.scratch_fs, f.run.host.scratch_dir.display())),
        ("run", |f| utc(f.run.host.time)),
        ("file", |f| f.path.display().to_string()),
    ];
    for (name, get) in facts {
        h += &format!("<tr><td>{name}</td>");
        for host in &fleet.hosts {
            h += &format!("<td>{}</td>", escape(&get(host)));
        }
        h += "</tr>\n";
    }
    h += "</table>\n<h2>Verdict per workload, host by host</h2>\n<table>";
    h += &header("profile");
    h += "</tr>\n";
    let images = fleet.images();
    for v in &fleet.hosts[0].run.verdicts {
        let tag = if images.len() > 1 { format!(" [{}]", v.image) } else { String::new() };
        h += &format!("<tr><td>{}{}</td>", escape(&v.profile), escape(&tag));
        for host in &fleet.hosts {
            let mine = host.run.verdicts.iter().find(|m| m.profile == v.profile && m.image == v.image);
            h += &match mine {
                Some(m) => format!(
                    "<td class=\"l\"><b>{}</b>{}<br><span class=\"why\">{}</span></td>",
                    escape(m.pick.as_deref().unwrap_or("none")),
                    if m.tie { " (a tie)" } else { "" },
                    escape(&m.summary)
                ),
                None => "<td>no verdict</td>".into(),
            };
        }
        h += "</tr>\n";
    }
    h += "</table>\n";
    for image in &images {
        h += &format!(
            "<h2>Image: {}</h2>\n<table class=\"fig\"><tr><th>figure</th><th>target</th><th>unit</th>",
            escape(image)
        );
        for host in &fleet.hosts {
            h += &format!("<th class=\"hostname\">{}</th>", escape(&host.name));
        }
        for host in &fleet.hosts[1..] {
            h += &format!("<th>{} / {}</th>", escape(&host.name), escape(first));
        }
        h += "</tr>\n";
        for (figure, target, unit, per_host) in fleet.rows(image) {
            let unit_name = match unit {
                Unit::Seconds => "seconds",
                Unit::Bytes => "bytes",
            };
            h += &format!("<tr><td>{}</td><td>{}</td><td>{unit_name}</td>", escape(&figure), escape(&target));
            for d in &per_host {
                h += &format!("<td>{}</td>", d.as_ref().map(|d| cell(d, unit)).unwrap_or_else(|| "not run".into()));
            }
            let medians: Vec<Option<f64>> = per_host.iter().map(|d| d.as_ref().map(|d| d.p50)).collect();
            for m in &medians[1..] {
                h += &format!("<td>{}</td>", ratio(medians[0], *m));
            }
            h += "</tr>\n";
        }
        h += "</table>\n";
        let panels: Vec<(String, &TargetResult)> = fleet
            .hosts
            .iter()
            .flat_map(|host| {
                host.run
                    .results
                    .iter()
                    .filter(|r| &r.image == image && r.ok())
                    .map(|r| (format!("{} · {}", host.name, r.label()), r))
            })
            .collect();
        h += &chart_or_note(copyup_chart(&panels), "No first-write figures to chart.");
        for host in &fleet.hosts {
            let mine: Vec<&TargetResult> = host.run.results.iter().filter(|r| &r.image == image).collect();
            if host.run.skipped.is_empty() && mine.iter().all(|r| r.ok()) {
                continue;
            }
            h += &format!("<p class=\"note\">On {}:</p>", escape(&host.name));
            h += &missing(&host.run);
        }
    }
    h + "</body></html>\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(hostname: &str, root_fs: &str, time: i64) -> Run {
        let mut r = Run::default();
        r.host.hostname = hostname.into();
        r.host.root_fs = root_fs.into();
        r.host.time = time;
        r
    }

    #[test]
    fn hosts_are_named_by_hostname_and_then_by_what_tells_them_apart() {
        let (a, b) = (run("node-a", "ext4", 0), run("node-b", "ext4", 0));
        assert_eq!(names(&[&a, &b]), ["node-a", "node-b"]);
        let (a2, b2) = (run("node-a", "xfs", 0), run("node-a", "xfs", 60));
        assert_eq!(
            names(&[&a, &a2, &b, &b2]),
            [
                "node-a (root on ext4)",
                "node-a (root on xfs, 1970-01-01 00:00 UTC)",
                "node-b",
                "node-a (root on xfs, 1970-01-01 00:01 UTC)"
            ]
        );
        assert_eq!(names(&[&a, &a]), ["node-a #1", "node-a #2"]);
    }

    #[test]
    fn workloads_differ_in_named_ways() {
        let a = Workload { containers: 2, quick: true, ..Default::default() };
        let b = Workload { containers: 3, quick: true, ..Default::default() };
        assert_eq!(workload_differences(&a, &a), Vec::<String>::new());
        assert_eq!(workload_differences(&a, &b), ["containers 2 vs 3"]);
    }

    /// Runs of two workloads are refused, naming both files and how they differ.
    #[test]
    fn runs_of_other_workloads_are_refused_by_variant() {
        let dir = tempfile::tempdir().unwrap();
        let text = include_str!("../../tests/fixtures/bench/gate-1.json");
        let mut other: Run = serde_json::from_str(text).unwrap();
        other.workload.containers += 1;
        let (a, b) = (dir.path().join("a.json"), dir.path().join("b.json"));
        std::fs::write(&a, text).unwrap();
        std::fs::write(&b, serde_json::to_string(&other).unwrap()).unwrap();
        let e = Fleet::load(&[a.clone(), b.clone()], &[]).err().expect("two workloads");
        assert!(
            matches!(&e, Failure::OtherWorkload { path, first, differences }
                if path == &b && first == &a && differences.len() == 1 && differences[0].starts_with("containers ")),
            "{e:?}"
        );
    }
}
