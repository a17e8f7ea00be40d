//! Real workloads in the bench: `--replay TRACE` (a trace `strata container run
//! --record` wrote) and `--run 'CMD'` (a command run for real, recorded, then replayed),
//! measured in every target's containers beside the bench's own phases.
//!
//! Per target and workload: a `--run` command first runs in a container of its own
//! (`/bin/sh -c CMD`, recorded; its wall time is kept), then the trace is replayed
//! (`strata_run::replay`) in as many fresh containers as the bench makes (`--containers`):
//! the replay's wall time, what each operation class and each first change to a node the
//! image held (a copy-up on overlay) cost, the disk the container layer added, and the
//! diff of the container afterwards. Profiles weigh workloads by runs a day
//! (`[[workloads]] trace = "pip-install.trace"  per_day = 200`), and the verdict counts
//! them with the rest.
//!
//! Imports: `model` only (and `strata_run`); `bench`, `verdict` and `report` call in.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use driver_core::{Driver, Error};
use plotters::prelude::*;
use serde::{Deserialize, Serialize};
use strata_run::trace::Trace;

use crate::model::{err, secs, size, ClassFigures, CopyupFigures, Cost, DiskUse, Dist, TargetResult, WorkloadResult};

/// `strata bench`'s workload options (flattened into [`crate::bench::BenchArgs`]).
#[derive(clap::Args, Debug, Default)]
pub struct WorkloadArgs {
    /// Replay this trace (written by `strata container run --record`) in every target's
    /// containers, timed (repeatable; named after the file's stem). The bench's image
    /// (--image) should be the one the trace was recorded on.
    #[arg(long = "replay", value_name = "TRACE")]
    pub replay: Vec<PathBuf>,
    /// Run CMD (with /bin/sh -c) for real in a container on every target, recorded,
    /// then replay its trace in every container, timed (repeatable).
    #[arg(long = "run", value_name = "CMD")]
    pub run: Vec<String>,
    /// Names the --run commands, in order (default: run-1, run-2, …).
    #[arg(long = "label", value_name = "NAME")]
    pub label: Vec<String>,
    /// The workloads, made by [`WorkloadArgs::check`].
    #[arg(skip)]
    pub specs: Vec<Spec>,
}

/// One workload to measure.
#[derive(Clone, Debug)]
pub struct Spec {
    pub name: String,
    pub source: Source,
}

#[derive(Clone, Debug)]
pub enum Source {
    /// A recorded trace, read when the options are checked.
    Trace(PathBuf, Box<Trace>),
    /// A command for `/bin/sh -c`.
    Run(String),
}

impl Spec {
    fn describe(&self) -> String {
        match &self.source {
            Source::Trace(p, _) => format!("trace {}", p.display()),
            Source::Run(cmd) => format!("run {cmd}"),
        }
    }
}

impl WorkloadArgs {
    /// Reads the traces and names the workloads; the message is a usage error.
    pub fn check(&mut self) -> Result<(), String> {
        if self.label.len() > self.run.len() {
            return Err(format!(
                "--label names the --run commands, in order: {} label(s) for {} command(s)",
                self.label.len(),
                self.run.len()
            ));
        }
        let mut specs = Vec::new();
        for path in &self.replay {
            let trace = Trace::read(path).map_err(|e| format!("--replay {}: {e}", path.display()))?;
            let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            let name = name.strip_suffix(".trace").map(str::to_string).unwrap_or(name);
            specs.push(Spec { name, source: Source::Trace(path.clone(), Box::new(trace)) });
        }
        for (i, cmd) in self.run.iter().enumerate() {
            if cmd.trim().is_empty() {
                return Err("--run '': no command".into());
            }
            let name = self.label.get(i).cloned().unwrap_or_else(|| format!("run-{}", i + 1));
            specs.push(Spec { name, source: Source::Run(cmd.clone()) });
        }
        for (i, s) in specs.iter().enumerate() {
            if specs[..i].iter().any(|o| o.name == s.name) {
                return Err(format!("two workloads are named {:?}: name them apart with --label", s.name));
            }
        }
        self.specs = specs;
        Ok(())
    }
}

/// The `Env` of the image config of `spec` (any source `image unpack` reads; none for a
/// registry, which would be pulled a second time): what `--run` gives the command, as
/// `container run` does.
pub fn image_env(spec: &str) -> Vec<String> {
    if spec.starts_with("docker://") {
        return Vec::new();
    }
    let read = || -> Option<Vec<String>> {
        let (source, image) = strata_image::image::open_source(spec, None).ok()?;
        let config: serde_json::Value = serde_json::from_reader(source.open(&image.config_locator).ok()?).ok()?;
        let env = config.get("config")?.get("Env")?.as_array()?;
        Some(env.iter().filter_map(|e| e.as_str().map(str::to_string)).collect())
    };
    read().unwrap_or_default()
}

/// Bytes of disk the filesystem at `path` holds beyond `base`, after a sync.
fn grown(path: &Path, base: &DiskUse) -> u64 {
    nix::unistd::sync();
    DiskUse::of(path).bytes.saturating_sub(base.bytes)
}

/// The size bucket a copied-up node falls in: its upper bound.
pub fn bucket(bytes: u64) -> &'static str {
    const BOUNDS: [(u64, &str); 5] =
        [(4 << 10, "4KiB"), (64 << 10, "64KiB"), (1 << 20, "1MiB"), (16 << 20, "16MiB"), (256 << 20, "256MiB")];
    BOUNDS.iter().find(|(b, _)| bytes <= *b).map(|(_, n)| *n).unwrap_or("more")
}

/// Where the bench's containers for workloads live, and how they are run.
pub struct Target<'a> {
    pub driver: &'a dyn Driver,
    /// The image's top layer: the containers' parent.
    pub top: &'a str,
    /// The image's label (the trace header's `image` of a `--run`).
    pub image: &'a str,
    /// The scratch filesystem's mount point and its use before the bench (disk deltas).
    pub fs: &'a Path,
    pub base: &'a DiskUse,
    /// The image config's `Env` for `--run`.
    pub env: &'a [String],
    pub containers: usize,
}

/// Every workload on one target; a workload that fails carries its error and the
/// others still run.
pub fn measure(t: &Target, specs: &[Spec], progress: &dyn Fn(&str)) -> Vec<WorkloadResult> {
    specs
        .iter()
        .enumerate()
        .map(|(k, spec)| {
            progress(&format!("workload {}", spec.name));
            let mut w = WorkloadResult { name: spec.name.clone(), source: spec.describe(), ..Default::default() };
            if let Err(e) = measure_one(t, k, spec, &mut w) {
                w.error = Some(e.to_string());
            }
            w
        })
        .collect()
}

/// Runs `cmd` for real in a new container `wr<k>`, recorded: the trace and the seconds.
fn record(t: &Target, k: usize, cmd: &str) -> Result<(Trace, f64), Error> {
    let id = format!("wr{k}");
    t.driver.create(&id, Some(t.top), true)?;
    let view = t.driver.mount(&id)?;
    let dir = tempfile::tempdir().map_err(|e| err(format!("a temp dir for the trace of {cmd:?}: {e}")))?;
    let path = dir.path().join("run.trace");
    let file = fs::File::create(&path).map_err(|e| Error::new(e).with_path(&path))?;
    let command = vec!["/bin/sh".to_string(), "-c".to_string(), cmd.to_string()];
    let header = strata_run::trace::Header {
        strata_trace: strata_run::trace::VERSION,
        image: Some(t.image.to_string()),
        layer: Some(t.top.to_string()),
        command: command.clone(),
        data: false,
    };
    let spec = strata_run::container::RunSpec {
        view: view.clone(),
        command,
        env: t.env.to_vec(),
        workdir: None,
        user: None,
        record: Some((file, header)),
    };
    let start = Instant::now();
    let status = strata_run::container::run(spec);
    let seconds = start.elapsed().as_secs_f64();
    let unmounted = t.driver.unmount(&id);
    let status = status.map_err(|e| err(format!("--run {cmd:?} in container {id}: {e}")))?;
    unmounted?;
    if status != 0 {
        return Err(err(format!("--run {cmd:?} in container {id} exited with status {status}")));
    }
    let trace = Trace::read(&path).map_err(|e| err(format!("the trace of --run {cmd:?}: {e}")))?;
    t.driver.remove(&id)?;
    Ok((trace, seconds))
}

/// A copy-up bucket: (operation class, node kind, size bucket).
type Bucket = (String, String, String);

fn measure_one(t: &Target, k: usize, spec: &Spec, w: &mut WorkloadResult) -> Result<(), Error> {
    let recorded;
    let trace: &Trace = match &spec.source {
        Source::Trace(_, trace) => trace,
        Source::Run(cmd) => {
            let (trace, seconds) = record(t, k, cmd)?;
            w.run_seconds = Some(seconds);
            recorded = trace;
            &recorded
        }
    };
    w.ops = trace.records.len() as u64;
    let (mut wall, mut layer, mut diffs) = (Vec::new(), Vec::new(), Vec::new());
    let mut classes: BTreeMap<String, (u64, u64, u64, Vec<f64>)> = BTreeMap::new();
    let mut copyups: BTreeMap<Bucket, (u64, u64, Vec<f64>)> = BTreeMap::new();
    for i in 0..t.containers {
        let id = format!("w{k}-{i}");
        t.driver.create(&id, Some(t.top), true)?;
        let before = grown(t.fs, t.base);
        let view = t.driver.mount(&id)?;
        let stats = strata_run::replay::replay(&view, trace);
        t.driver.unmount(&id)?;
        let stats = stats.map_err(|e| err(format!("workload {} in container {id}: {e}", spec.name)))?;
        layer.push(grown(t.fs, t.base).saturating_sub(before) as f64);
        wall.push(stats.nanos as f64 / 1e9);
        for (class, c) in &stats.classes {
            let e = classes.entry(class.to_string()).or_default();
            (e.0, e.1, e.2) = (c.count, c.bytes, c.syscalls);
            e.3.push(c.nanos as f64 / 1e9);
        }
        // Every bucket gets a sample in every container (0 when none fell in it here).
        let mut mine: BTreeMap<Bucket, (u64, u64, f64)> = BTreeMap::new();
        for c in &stats.copy_ups {
            let e = mine.entry((c.class.to_string(), c.kind.to_string(), bucket(c.size).to_string())).or_default();
            e.0 += 1;
            e.1 += c.size;
            e.2 += c.nanos as f64 / 1e9;
        }
        for (key, (n, b, s)) in mine {
            let e = copyups.entry(key).or_default();
            (e.0, e.1) = (n, b);
            e.2.resize(i, 0.0);
            e.2.push(s);
        }
        let mut sink = crate::bench::CountingSink(0);
        let start = Instant::now();
        t.driver.diff(&id, &mut sink)?;
        diffs.push(start.elapsed().as_secs_f64());
        w.diff_bytes = sink.0;
        t.driver.remove(&id)?;
    }
    w.wall = Dist::of(wall);
    w.layer_bytes = Dist::of(layer);
    w.diff = Dist::of(diffs);
    w.classes = classes
        .into_iter()
        .map(|(k, (count, bytes, syscalls, s))| (k, ClassFigures { count, bytes, syscalls, seconds: Dist::of(s) }))
        .collect();
    w.copyups = copyups
        .into_iter()
        .map(|((class, kind, size_up_to), (nodes, bytes, mut s))| {
            s.resize(t.containers, 0.0);
            CopyupFigures { class, kind, size_up_to, nodes, bytes, seconds: Dist::of(s) }
        })
        .collect();
    Ok(())
}

/// `p50 [lo–hi]` of a distribution of seconds.
fn spread(d: &Dist) -> String {
    if d.n() < 2 {
        return secs(d.p50);
    }
    format!("{} [{}–{}]", secs(d.p50), secs(d.lo), secs(d.hi))
}

/// The sentence a workload's figures come to on one target.
pub fn sentence(r: &TargetResult, w: &WorkloadResult) -> String {
    if let Some(e) = &w.error {
        return format!("{} on {}: could not run: {e}", w.name, r.label());
    }
    let (files, bytes) = w.copied_files();
    let first = if r.driver == "overlay" { "copied up" } else { "changed for the first time" };
    let copied = if files == 0 {
        "it changed no file of the image".to_string()
    } else {
        format!("it {first} {files} file(s) of the image, {}, in {}", size(bytes as f64), secs(w.copyup_seconds().p50))
    };
    format!(
        "{} on {}: {} a replay of {} operations; {copied}; the container layer added {} on disk; its diff took {} ({})",
        w.name,
        r.label(),
        spread(&w.wall),
        w.ops,
        size(w.layer_bytes.p50),
        secs(w.diff.p50),
        size(w.diff_bytes as f64)
    )
}

/// The terminal lines for the workloads of one image's results.
pub fn print(results: &[&TargetResult]) {
    let names: Vec<&String> = {
        let mut v: Vec<&String> = Vec::new();
        for w in results.iter().flat_map(|r| &r.workloads) {
            if !v.contains(&&w.name) {
                v.push(&w.name);
            }
        }
        v
    };
    for name in names {
        let rows: Vec<(&TargetResult, &WorkloadResult)> =
            results.iter().filter_map(|r| Some((*r, r.workloads.iter().find(|w| &w.name == name)?))).collect();
        let Some((_, w0)) = rows.first() else { continue };
        println!("\nworkload {name} ({}, {} operations; median [interval] over the containers)", w0.source, w0.ops);
        println!(
            "{:<13} {:>26} {:>10} {:>12} {:>16} {:>10} {:>22} {:>9}",
            "driver/fs", "replay", "real run", "copy-ups", "files copied", "layer", "diff", "syscalls"
        );
        for (r, w) in &rows {
            if let Some(e) = &w.error {
                println!("{:<13} could not run: {e}", r.label());
                continue;
            }
            let (files, bytes) = w.copied_files();
            println!(
                "{:<13} {:>26} {:>10} {:>12} {:>16} {:>10} {:>22} {:>9}",
                r.label(),
                spread(&w.wall),
                w.run_seconds.map(secs).unwrap_or_else(|| "-".into()),
                secs(w.copyup_seconds().p50),
                format!("{files}, {}", size(bytes as f64)),
                size(w.layer_bytes.p50),
                format!("{} ({})", secs(w.diff.p50), size(w.diff_bytes as f64)),
                w.syscalls()
            );
        }
        for (r, w) in &rows {
            println!("  {}", sentence(r, w));
        }
    }
}

/// A profile's weight on a workload: `[[workloads]] trace = "pip-install.trace"
/// per_day = 200` (the workload is the trace's stem, or a --label).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Weight {
    pub trace: String,
    pub per_day: f64,
}

impl Weight {
    /// The workload's name: the trace's file stem (`pip-install.trace` → `pip-install`).
    pub fn name(&self) -> String {
        let stem = Path::new(&self.trace).file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        stem.strip_suffix(".trace").or_else(|| stem.strip_suffix(".jsonl")).unwrap_or(&stem).to_string()
    }
}

fn cost(d: &Dist) -> Cost {
    Cost { p50: d.p50, lo: d.lo, hi: d.hi }
}

/// The verdict's lines for a target: (what, runs a day, cost of one run) per weighed
/// workload measured here.
pub fn parts(r: &TargetResult, weights: &[Weight]) -> Vec<(String, f64, Cost)> {
    weights
        .iter()
        .filter_map(|wt| {
            let w = r.workloads.iter().find(|w| w.name == wt.name() && w.ok())?;
            Some((format!("a run of {}", w.name), wt.per_day, cost(&w.wall)))
        })
        .collect()
}

/// What the verdict says of the weighed workloads: each one's cost a day per target, or
/// that the run did not measure it.
pub fn verdict_lines(profile: &str, results: &[&TargetResult], weights: &[Weight]) -> Vec<String> {
    let mut out = Vec::new();
    for wt in weights {
        let name = wt.name();
        let each: Vec<String> = results
            .iter()
            .filter_map(|r| {
                let w = r.workloads.iter().find(|w| w.name == name && w.ok())?;
                Some(format!(
                    "{} costs {} a day ({} a run)",
                    r.label(),
                    crate::model::per_day(w.wall.p50 * wt.per_day),
                    secs(w.wall.p50)
                ))
            })
            .collect();
        if each.is_empty() {
            out.push(format!(
                "for {profile}, {} runs a day of {name}: not measured in this run (give --replay {})",
                wt.per_day, wt.trace
            ));
        } else {
            out.push(format!("for {profile}, {} runs a day of {name}: {}", wt.per_day, each.join("; ")));
        }
    }
    out
}

const COLORS: [RGBColor; 4] =
    [RGBColor(31, 119, 180), RGBColor(255, 127, 14), RGBColor(44, 160, 44), RGBColor(148, 103, 189)];

/// One bar per target (median, whisker over the interval), and inside it, when given, a
/// narrower bar for a part of it (the copy-ups within a replay).
fn bars<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    caption: &str,
    unit: &str,
    labels: &[String],
    values: &[Dist],
    part: Option<&[Dist]>,
    color: RGBColor,
) -> Option<()> {
    let n = values.len();
    let ymax = values.iter().map(|d| d.hi.max(d.p50)).fold(0.0, f64::max) * 1.15;
    let x_format = |x: &f64| -> String {
        let i = (x - 0.5).round();
        if (x - 0.5 - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < labels.len() {
            labels[i as usize].clone()
        } else {
            String::new()
        }
    };
    let mut c = ChartBuilder::on(area)
        .margin(10)
        .caption(caption, ("sans-serif", 15))
        .x_label_area_size(30)
        .y_label_area_size(55)
        .build_cartesian_2d(0f64..n as f64, 0f64..ymax.max(1e-6))
        .ok()?;
    c.configure_mesh()
        .x_labels(2 * n + 1)
        .x_label_formatter(&x_format)
        .y_desc(unit)
        .disable_x_mesh()
        .label_style(("sans-serif", 12))
        .draw()
        .ok()?;
    c.draw_series(
        values
            .iter()
            .enumerate()
            .map(|(i, d)| Rectangle::new([(i as f64 + 0.2, 0.0), (i as f64 + 0.8, d.p50)], color.filled())),
    )
    .ok()?;
    if let Some(part) = part {
        let orange = COLORS[1];
        c.draw_series(
            part.iter()
                .enumerate()
                .map(|(i, d)| Rectangle::new([(i as f64 + 0.35, 0.0), (i as f64 + 0.65, d.p50)], orange.filled())),
        )
        .ok()?
        .label("of which copy-ups")
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], orange.filled()));
        c.configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 12))
            .draw()
            .ok()?;
    }
    for (i, d) in values.iter().enumerate().filter(|(_, d)| d.n() > 1) {
        let x = i as f64 + 0.5;
        for seg in [
            vec![(x, d.lo), (x, d.hi)],
            vec![(x - 0.08, d.lo), (x + 0.08, d.lo)],
            vec![(x - 0.08, d.hi), (x + 0.08, d.hi)],
        ] {
            c.draw_series(std::iter::once(PathElement::new(seg, BLACK.stroke_width(2)))).ok()?;
        }
    }
    Some(())
}

/// One workload's chart, three panels with their own scales: per target, the replay
/// (its copy-ups inside), the diff after it, and the disk the layer added.
fn chart(name: &str, rows: &[(&TargetResult, &WorkloadResult)]) -> Option<String> {
    let rows: Vec<_> = rows.iter().filter(|(_, w)| w.ok()).collect();
    if rows.is_empty() {
        return None;
    }
    let labels: Vec<String> = rows.iter().map(|(r, _)| r.label()).collect();
    let wall: Vec<Dist> = rows.iter().map(|(_, w)| w.wall.clone()).collect();
    let copyups: Vec<Dist> = rows.iter().map(|(_, w)| w.copyup_seconds()).collect();
    let diff: Vec<Dist> = rows.iter().map(|(_, w)| w.diff.clone()).collect();
    let disk: Vec<Dist> =
        rows.iter().map(|(_, w)| Dist::of(w.layer_bytes.samples.iter().map(|b| b / 1e6).collect())).collect();
    let width = (120 * rows.len() as u32).max(330) * 3;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, 320)).into_drawing_area();
        root.fill(&WHITE).ok()?;
        let root = root
            .titled(&format!("Workload {name}: median and interval over the containers"), ("sans-serif", 19))
            .ok()?;
        let areas = root.split_evenly((1, 3));
        bars(&areas[0], "replay of the trace", "seconds", &labels, &wall, Some(&copyups), COLORS[0])?;
        bars(&areas[1], "diff of the container after it", "seconds", &labels, &diff, None, COLORS[2])?;
        bars(&areas[2], "disk the container layer added", "MB", &labels, &disk, None, COLORS[3])?;
        root.present().ok()?;
    }
    Some(svg)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The report's section for one image's workloads: per workload, its sentence per
/// target, a table of its figures and its chart.
pub fn html(results: &[&TargetResult]) -> String {
    let mut names: Vec<&String> = Vec::new();
    for w in results.iter().flat_map(|r| &r.workloads) {
        if !names.contains(&&w.name) {
            names.push(&w.name);
        }
    }
    if names.is_empty() {
        return String::new();
    }
    let mut h = String::from(
        "<h3>Workloads</h3>\n<p>Each workload's trace replayed in every container of every target (think time \
         dropped), with what its operations cost. A first change to a node the image held is a copy-up on overlay \
         (the whole file, unless metacopy copies only metadata); btrfs copies the blocks written; vfs already holds \
         its own copy.</p>\n",
    );
    for name in names {
        let rows: Vec<(&TargetResult, &WorkloadResult)> =
            results.iter().filter_map(|r| Some((*r, r.workloads.iter().find(|w| &w.name == name)?))).collect();
        let Some((_, w0)) = rows.first() else { continue };
        h += &format!(
            "<h4>Workload: {}</h4>\n<p class=\"note\">{}, {} operations.</p>\n<ul>",
            escape(name),
            escape(&w0.source),
            w0.ops
        );
        for (r, w) in &rows {
            h += &format!("<li>{}</li>", escape(&sentence(r, w)));
        }
        h += "</ul>\n<table><tr><th>figure</th>";
        for (r, _) in &rows {
            h += &format!("<th>{}</th>", escape(&r.label()));
        }
        h += "</tr>\n";
        let ok = |w: &WorkloadResult, f: &dyn Fn(&WorkloadResult) -> String| if w.ok() { f(w) } else { "-".into() };
        type Row<'a> = (&'a str, Box<dyn Fn(&WorkloadResult) -> String>);
        let figures: Vec<Row> = vec![
            ("replay (s)", Box::new(|w| crate::report::cell(&w.wall, crate::report::Unit::Seconds))),
            ("real run, recorded (s)", Box::new(|w| w.run_seconds.map(secs).unwrap_or_else(|| "-".into()))),
            ("copy-ups (s)", Box::new(|w| crate::report::cell(&w.copyup_seconds(), crate::report::Unit::Seconds))),
            (
                "files copied up",
                Box::new(|w| {
                    let (n, b) = w.copied_files();
                    format!("{n} ({})", size(b as f64))
                }),
            ),
            ("layer disk (bytes)", Box::new(|w| crate::report::cell(&w.layer_bytes, crate::report::Unit::Bytes))),
            ("diff (s)", Box::new(|w| crate::report::cell(&w.diff, crate::report::Unit::Seconds))),
            ("diff size", Box::new(|w| size(w.diff_bytes as f64))),
            ("syscalls replayed", Box::new(|w| w.syscalls().to_string())),
        ];
        for (label, f) in &figures {
            h += &format!("<tr><td>{label}</td>");
            for (_, w) in &rows {
                h += &format!("<td>{}</td>", ok(w, f.as_ref()));
            }
            h += "</tr>\n";
        }
        // Per operation class: count, and the seconds on each target.
        let mut classes: Vec<&String> = Vec::new();
        for (_, w) in &rows {
            for k in w.classes.keys() {
                if !classes.contains(&k) {
                    classes.push(k);
                }
            }
        }
        for k in classes {
            h += &format!(
                "<tr><td>{} ×{}</td>",
                escape(k),
                rows.iter().find_map(|(_, w)| w.classes.get(k)).map(|c| c.count).unwrap_or(0)
            );
            for (_, w) in &rows {
                h += &format!(
                    "<td>{}</td>",
                    w.classes
                        .get(k)
                        .map(|c| crate::report::cell(&c.seconds, crate::report::Unit::Seconds))
                        .unwrap_or_default()
                );
            }
            h += "</tr>\n";
        }
        h += "</table>\n";
        h += &crate::report::chart_or_note(chart(name, &rows), "No workload figures to chart.");
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(driver: &str, wall: &[f64]) -> TargetResult {
        let w = WorkloadResult {
            name: "pip-install".into(),
            source: "trace pip-install.trace".into(),
            wall: Dist::of(wall.to_vec()),
            ops: 10,
            copyups: vec![CopyupFigures {
                class: "write".into(),
                kind: "file".into(),
                size_up_to: "1MiB".into(),
                nodes: 3,
                bytes: 41_000_000,
                seconds: Dist::of(vec![0.1, 0.2]),
            }],
            layer_bytes: Dist::of(vec![45e6, 46e6]),
            ..Default::default()
        };
        TargetResult { driver: driver.into(), fs: "ext4".into(), workloads: vec![w], ..Default::default() }
    }

    #[test]
    fn workloads_are_named_after_the_trace_or_the_label_and_bad_options_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let trace = dir.path().join("pip-install.trace");
        std::fs::write(&trace, "{\"strata_trace\":1,\"command\":[\"pip\"]}\n").unwrap();
        let mut a = WorkloadArgs {
            replay: vec![trace.clone()],
            run: vec!["true".into(), "make".into()],
            label: vec!["noop".into()],
            ..Default::default()
        };
        a.check().unwrap();
        let names: Vec<&str> = a.specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["pip-install", "noop", "run-2"]);
        let mut two_labels =
            WorkloadArgs { run: vec!["true".into()], label: vec!["a".into(), "b".into()], ..Default::default() };
        assert!(two_labels.check().unwrap_err().contains("2 label(s) for 1 command(s)"));
        let mut same = WorkloadArgs {
            replay: vec![trace.clone()],
            run: vec!["true".into()],
            label: vec!["pip-install".into()],
            ..Default::default()
        };
        assert!(same.check().unwrap_err().contains("two workloads are named \"pip-install\""));
        let mut missing = WorkloadArgs { replay: vec![dir.path().join("nope.trace")], ..Default::default() };
        assert!(missing.check().unwrap_err().starts_with("--replay "));
        std::fs::write(&trace, "not a trace\n").unwrap();
        let mut bad = WorkloadArgs { replay: vec![trace], ..Default::default() };
        assert!(bad.check().unwrap_err().contains("trace line 1"));
    }

    #[test]
    fn sizes_fall_in_their_buckets() {
        assert_eq!(bucket(0), "4KiB");
        assert_eq!(bucket(4096), "4KiB");
        assert_eq!(bucket(4097), "64KiB");
        assert_eq!(bucket(1 << 20), "1MiB");
        assert_eq!(bucket(1 << 30), "more");
    }

    #[test]
    fn a_weighed_workload_is_a_cost_a_day_and_the_verdict_names_it() {
        let weights = vec![Weight { trace: "traces/pip-install.trace".into(), per_day: 200.0 }];
        assert_eq!(weights[0].name(), "pip-install");
        let (o, v) = (result("overlay", &[1.0, 2.0, 3.0]), result("vfs", &[4.0, 5.0, 6.0]));
        let p = parts(&o, &weights);
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].1, p[0].2.p50), (200.0, 2.0));
        let lines = verdict_lines("app-mix", &[&o, &v], &weights);
        assert_eq!(lines.len(), 1);
        assert!(
            lines[0].starts_with(
                "for app-mix, 200 runs a day of pip-install: overlay/ext4 costs 7 min a day (2.00 s a run)"
            ),
            "{}",
            lines[0]
        );
        assert!(lines[0].contains("vfs/ext4 costs 17 min a day"), "{}", lines[0]);
        let missing = verdict_lines("app-mix", &[&o], &[Weight { trace: "db.trace".into(), per_day: 5.0 }]);
        assert!(missing[0].contains("not measured in this run"), "{}", missing[0]);
    }

    #[test]
    fn the_sentence_says_what_was_copied_up() {
        let o = result("overlay", &[1.0, 2.0]);
        let s = sentence(&o, &o.workloads[0]);
        assert!(s.contains("copied up 3 file(s) of the image, 39.1 MiB"), "{s}");
        assert_eq!(o.workloads[0].copyup_seconds().p50, 0.15000000000000002);
        let page = html(&[&o]);
        assert!(page.contains("Workload: pip-install") && page.contains("<svg"), "{page}");
    }
}
