//! `strata bench --report FILE.html`: one self-contained page (inline SVG, no script, no
//! external resource) read from the typed run: the host, the verdict per workload
//! profile with its reasons, the targets that did not run and why, every figure with
//! what it measures, its unit, its sample count and its spread, and why the drivers
//! differ on it; and charts drawn as small multiples (one panel per target, shared
//! axes, whiskers for the interval) so that no line hides another.

use plotters::prelude::*;

use crate::model::{
    secs, size, size_name, CopyupOp, Dist, PeerResult, Run, TargetResult, Verdict, Workload, STORM_APPENDS,
};
use crate::page::{cell, chart_or_note, escape, utc, Unit, STYLE};

const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// An axis tick in bytes: `4 KiB`, `64 MiB`.
fn bytes_label(b: f64) -> String {
    let units = [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (unit, size) in units {
        if b >= size as f64 {
            return number_label(b / size as f64) + " " + unit;
        }
    }
    number_label(b) + " B"
}

/// A tick without needless digits: `0.01`, `2.5`, `1000`.
fn number_label(v: f64) -> String {
    let s = if v.abs() >= 10.0 { format!("{v:.0}") } else { format!("{v:.3}") };
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// What the x coordinate of a chart is.
#[derive(Clone, Copy, PartialEq)]
enum XAxis {
    /// log2 of a size in bytes, labelled in KiB/MiB/GiB at the measured sizes.
    Log2Bytes,
    /// A count (containers, layers): ticks at whole numbers only.
    Count,
}

/// A point with its interval: (x, p50, lo, hi).
type Point = (f64, f64, f64, f64);
/// One panel per target: (name, points).
type Panels = Vec<(String, Vec<Point>)>;

const PANEL: (u32, u32) = (330, 250);
const FONT: &str = "sans-serif";

/// Small multiples: one panel per target on shared axes, each a line through the
/// medians with a whisker from lo to hi at every point.
fn small_multiples(
    title: &str,
    x_label: &str,
    y_label: &str,
    panels: &Panels,
    x_axis: XAxis,
    log_y: bool,
) -> Option<String> {
    let panels: Vec<_> = panels.iter().filter(|(_, p)| !p.is_empty()).collect();
    if panels.is_empty() {
        return None;
    }
    let all: Vec<Point> = panels.iter().flat_map(|(_, p)| p.iter().copied()).collect();
    let (xmin, xmax) = all.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let floor = 1e-6;
    let (ymin, ymax) = all.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.2.max(floor)), b.max(p.3)));
    let pad = if x_axis == XAxis::Log2Bytes { 0.7 } else { 0.3 };
    let (x0, x1) = (xmin.floor() - pad, xmax.ceil() + pad);
    let (y0, y1) = if log_y { (ymin / 2.0, (ymax * 2.0).max(ymin * 10.0)) } else { (0.0, (ymax * 1.1).max(1e-9)) };
    let measured: Vec<f64> = all.iter().map(|p| p.0).collect();
    let x_format = move |x: &f64| -> String {
        if (x - x.round()).abs() > 1e-9 || (x_axis == XAxis::Log2Bytes && !measured.contains(&x.round())) {
            return String::new();
        }
        match x_axis {
            XAxis::Log2Bytes => bytes_label(2f64.powf(x.round())),
            XAxis::Count => number_label(x.round()),
        }
    };
    let cols = panels.len().min(3);
    let rows = panels.len().div_ceil(cols);
    let size = (PANEL.0 * cols as u32, PANEL.1 * rows as u32 + 40);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).ok()?;
        let root = root.titled(title, (FONT, 22)).ok()?;
        let areas = root.split_evenly((rows, cols));
        for (i, ((name, points), area)) in panels.iter().zip(areas.iter()).enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            let mut builder = ChartBuilder::on(area);
            builder.caption(name.as_str(), (FONT, 17)).margin(8).x_label_area_size(38).y_label_area_size(58);
            macro_rules! draw {
                ($chart:expr, $lo:expr) => {{
                    let mut chart = $chart;
                    chart
                        .configure_mesh()
                        .x_desc(x_label)
                        .y_desc(y_label)
                        .x_labels(((x1 - x0) as usize + 2).min(40))
                        .y_labels(5)
                        .x_max_light_lines(1)
                        .y_max_light_lines(1)
                        .bold_line_style(RGBColor(220, 220, 220))
                        .light_line_style(RGBColor(242, 242, 242))
                        .x_label_formatter(&x_format)
                        .y_label_formatter(&|y| number_label(*y))
                        .label_style((FONT, 12))
                        .axis_desc_style((FONT, 13))
                        .draw()
                        .ok()?;
                    chart
                        .draw_series(LineSeries::new(points.iter().map(|p| (p.0, p.1.max($lo))), color.stroke_width(2)))
                        .ok()?;
                    for p in points.iter() {
                        let (lo, hi) = (p.2.max($lo), p.3.max($lo));
                        let w = 0.12;
                        for seg in [
                            vec![(p.0, lo), (p.0, hi)],
                            vec![(p.0 - w, lo), (p.0 + w, lo)],
                            vec![(p.0 - w, hi), (p.0 + w, hi)],
                        ] {
                            chart.draw_series(std::iter::once(PathElement::new(seg, color.stroke_width(2)))).ok()?;
                        }
                        chart.draw_series(std::iter::once(Circle::new((p.0, p.1.max($lo)), 4, color.filled()))).ok()?;
                    }
                }};
            }
            if log_y {
                draw!(builder.build_cartesian_2d(x0..x1, (y0..y1).log_scale()).ok()?, y0);
            } else {
                draw!(builder.build_cartesian_2d(x0..x1, y0..y1).ok()?, 0.0);
            }
        }
        root.present().ok()?;
    }
    Some(svg)
}

fn point(x: f64, d: &Dist, scale: f64) -> Point {
    (x, d.p50 * scale, d.lo * scale, d.hi * scale)
}

/// Copy-up: first-write latency (ms) against the lower file's size, one panel per
/// named target (a host's name prefixes it when hosts are compared).
pub(crate) fn copyup_chart(results: &[(String, &TargetResult)]) -> Option<String> {
    let panels: Panels = results
        .iter()
        .map(|(name, r)| {
            let points = r
                .write_sizes()
                .into_iter()
                .filter_map(|bytes| {
                    Some(point((bytes as f64).log2(), r.copyup.get(&CopyupOp::Write { bytes })?, 1000.0))
                })
                .collect();
            (name.clone(), points)
        })
        .collect();
    small_multiples(
        "First write to a lower file: median and interval, by file size",
        "size of the lower file",
        "ms (log scale)",
        &panels,
        XAxis::Log2Bytes,
        true,
    )
}

/// Disk use (MB over the empty filesystem) against the number of containers.
fn disk_chart(results: &[&TargetResult]) -> Option<String> {
    let panels: Panels = results
        .iter()
        .map(|r| {
            let points = r
                .disk_by_containers
                .iter()
                .enumerate()
                .map(|(n, &b)| (n as f64, b as f64 / 1e6, b as f64 / 1e6, b as f64 / 1e6))
                .collect();
            (r.label(), points)
        })
        .collect();
    small_multiples(
        "Disk use as containers are created (one statfs reading each, synced)",
        "containers",
        "MB (log scale)",
        &panels,
        XAxis::Count,
        true,
    )
}

/// When each layer of the first unpack was ready (time from the start), by layer.
fn unpack_chart(results: &[&TargetResult]) -> Option<String> {
    let panels: Panels = results
        .iter()
        .map(|r| {
            let points = r
                .unpack_layers
                .iter()
                .enumerate()
                .map(|(i, l)| ((i + 1) as f64, l.done_at, l.done_at, l.done_at))
                .collect();
            (r.label(), points)
        })
        .collect();
    small_multiples(
        "Unpack: when each layer was ready (first unpack)",
        "layer (1 = bottom)",
        "s from start",
        &panels,
        XAxis::Count,
        false,
    )
}

/// The figures, each with what it measures, its unit and why the drivers differ.
pub(crate) struct FigureDoc {
    pub(crate) name: String,
    /// The copy-up operation it is the time (or the disk) of.
    op: Option<CopyupOp>,
    what: String,
    why: &'static str,
    pub(crate) unit: Unit,
}

/// Reads a figure's distribution from a target, when the target has it.
pub(crate) type Getter = fn(&TargetResult, &FigureDoc) -> Option<Dist>;

pub(crate) fn figure_docs(r: &TargetResult, w: &Workload) -> Vec<(FigureDoc, Getter)> {
    let mut v: Vec<(FigureDoc, Getter)> = vec![
        (
            FigureDoc {
                op: None,
                name: "unpack".into(),
                what: "wall time to unpack the whole image from its compressed layers, synced to disk".into(),
                why: "all drivers decompress the same tars; vfs first copies each layer's parent, btrfs snapshots it, overlay stacks directories",
                unit: Unit::Seconds,
            },
            |r, _| Some(r.unpack.clone()),
        ),
        (
            FigureDoc {
                op: None,
                name: "container create".into(),
                what: "making one writable container layer over the image".into(),
                why: "overlay makes an empty directory; btrfs snapshots a subvolume (constant time); vfs copies the whole image (a reflink copy on xfs, a full copy on ext4)",
                unit: Unit::Seconds,
            },
            |r, _| Some(r.create.clone()),
        ),
        (
            FigureDoc {
                op: None,
                name: "create: cp -a".into(),
                what: "for reference beside a full-copy create (vfs): cp -a of the image's tree on the same filesystem, then a syncfs".into(),
                why: "the same copy with a stock tool: GNU cp copies one file after another (reflinks where the filesystem has them); vfs copies file data on a pool of threads while one walker makes the directories",
                unit: Unit::Seconds,
            },
            |r, _| r.create_cp_a.clone(),
        ),
        (
            FigureDoc {
                op: None,
                name: "disk per container".into(),
                what: "disk each container create added (statfs delta, synced)".into(),
                why: "vfs holds a copy of the image per container (shared extents on xfs); overlay an empty directory; btrfs a snapshot's metadata",
                unit: Unit::Bytes,
            },
            |r, _| Some(r.per_container_disk()),
        ),
    ];
    for bytes in r.write_sizes() {
        let op = CopyupOp::Write { bytes };
        v.push((
            FigureDoc {
                name: op.to_string(),
                op: Some(op),
                what: format!("first 1-byte append to a {} lower file in a container (open + write + close)", size_name(bytes)),
                why: "overlay copies the whole file up on its first write (a full copy on ext4, a reflink clone on xfs); btrfs copies only the block written; vfs already holds its own copy",
                unit: Unit::Seconds,
            },
            |r, doc| r.copyup.get(&doc.op?).cloned(),
        ));
        v.push((
            FigureDoc {
                name: format!("{op}: disk"),
                op: Some(op),
                what: format!("disk the first write to a {} lower file added", size_name(bytes)),
                why: "overlay on ext4 stores a whole new copy of the file; a reflink clone (xfs) or btrfs's block copy adds about a block; vfs nothing",
                unit: Unit::Bytes,
            },
            |r, doc| r.copyup_disk.get(&doc.op?).cloned(),
        ));
    }
    let big = size(w.big_file_bytes as f64);
    let ops: [(CopyupOp, String, &'static str); 5] = [
        (CopyupOp::ChmodBigFile, format!("chmod of a lower file of {big}"), "overlay copies the file up unless metacopy is on (then only its metadata); btrfs and vfs change the inode in place"),
        (CopyupOp::ChownBigFile, format!("chown of another name of that lower file of {big}"), "as chmod: overlay copies the data up unless metacopy is on"),
        (CopyupOp::RenameDir, format!("rename of a lower directory of {} files, as mv does it", w.rename_files), "overlay without redirect_dir answers EXDEV and mv copies the tree; with redirect_dir it records a redirect; btrfs and vfs rename in place"),
        (CopyupOp::DeleteTree, "deleting a lower tree of 200 files".into(), "overlay writes whiteouts (and copies up the parent directory); btrfs and vfs unlink in their own tree"),
        (CopyupOp::Storm, format!("{STORM_APPENDS} appends to small lower files"), "each is a small copy-up on overlay, a block copy on btrfs, a plain write on vfs"),
    ];
    for (op, what, why) in ops {
        if r.copyup.contains_key(&op) {
            let doc = FigureDoc { name: op.to_string(), op: Some(op), what, why, unit: Unit::Seconds };
            v.push((doc, |r, doc| r.copyup.get(&doc.op?).cloned()));
        }
    }
    v.push((
        FigureDoc {
            name: "diff".into(),
            op: None,
            what: "the OCI layer tar of a container after its writes".into(),
            why: "overlay reads only its upper directory and btrfs follows generations, so both cost what changed; vfs compares the whole tree with its parent",
            unit: Unit::Seconds,
        },
        |r, _| Some(r.diff.clone()),
    ));
    v
}

/// Every figure: a row each, with what it measures, its unit, N, and per target the
/// median and its interval; then why the drivers differ.
fn figures_table(ok: &[&TargetResult], w: &Workload) -> String {
    let Some(first) = ok.first() else { return String::new() };
    let mut h =
        String::from("<table class=\"fig\"><tr><th>figure</th><th>what it measures</th><th>unit</th><th>N</th>");
    for r in ok {
        h += &format!("<th>{}</th>", escape(&r.label()));
    }
    h += "<th>why the drivers differ</th></tr>\n";
    for (doc, get) in figure_docs(first, w) {
        let unit = match doc.unit {
            Unit::Seconds => "seconds",
            Unit::Bytes => "bytes",
        };
        let n = ok.iter().find_map(|r| get(r, &doc)).map(|d| d.n()).unwrap_or(0);
        h += &format!(
            "<tr><td>{}</td><td class=\"l\">{}</td><td>{unit}</td><td>{n}</td>",
            escape(&doc.name),
            escape(&doc.what)
        );
        for r in ok {
            h += &format!("<td>{}</td>", get(r, &doc).map(|d| cell(&d, doc.unit)).unwrap_or_default());
        }
        h += &format!("<td class=\"l why\">{}</td></tr>\n", escape(doc.why));
    }
    h + "</table>\n"
}

fn verdict_block(v: &Verdict) -> String {
    let mut h = format!(
        "<div class=\"verdict{}\"><h3>{} <span class=\"about\">— {}</span></h3><p><b>{}</b></p>",
        if v.tie { " tie" } else { "" },
        escape(&v.profile),
        escape(&v.about),
        escape(&v.summary)
    );
    if !v.reasons.is_empty() {
        h += "<p>What decided it:</p><ul>";
        for r in &v.reasons {
            h += &format!("<li>{}</li>", escape(r));
        }
        h += "</ul>";
    }
    for n in &v.notes {
        h += &format!("<p class=\"note\">{}</p>", escape(n));
    }
    h +=
        "<table><tr><th>target</th><th>work a day (median)</th><th>interval</th><th>disk held</th><th>status</th></tr>";
    for c in &v.costs {
        let ran = c.seconds_per_day.hi > 0.0;
        h += &format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"l\">{}</td></tr>",
            escape(&c.target),
            if ran { crate::model::per_day(c.seconds_per_day.p50) } else { "-".into() },
            if ran {
                format!(
                    "{}–{}",
                    crate::model::per_day(c.seconds_per_day.lo),
                    crate::model::per_day(c.seconds_per_day.hi)
                )
            } else {
                "-".into()
            },
            if ran { size(c.disk_bytes) } else { "-".into() },
            escape(c.out.as_deref().unwrap_or(if Some(&c.target) == v.pick.as_ref() {
                "the pick"
            } else {
                "candidate"
            }))
        );
    }
    h + "</table></div>\n"
}

pub(crate) fn missing(run: &Run) -> String {
    let failed: Vec<&TargetResult> = run.results.iter().filter(|r| !r.ok()).collect();
    if run.skipped.is_empty() && failed.is_empty() {
        return String::new();
    }
    let mut h = String::from("<h2>Targets not run</h2><table><tr><th>target</th><th>why</th><th>to fix</th></tr>\n");
    for s in &run.skipped {
        h += &format!(
            "<tr><td>{}/{}</td><td class=\"l\">{}</td><td class=\"l\"><code>{}</code></td></tr>\n",
            escape(s.driver.name()),
            escape(&s.fs),
            escape(&s.why),
            escape(&s.fix)
        );
    }
    for r in failed {
        h += &format!(
            "<tr><td>{}</td><td class=\"l\">could not run: {}</td><td></td></tr>\n",
            escape(&r.label()),
            escape(r.error.as_deref().unwrap_or_default())
        );
    }
    h + "</table>\n"
}

fn peers_table(peers: &[&PeerResult]) -> String {
    if peers.is_empty() {
        return String::new();
    }
    let mut h = String::from(
        "<h3>Unpack beside containerd and podman</h3>\n<p>The image alone, end to end from an oci-archive to \
         layers on disk, synced; each tool on its own fresh filesystem. The floor is every layer decompressed and \
         extracted at once by the fastest gzip decompressor here (<code>igzip</code>, else <code>unpigz</code>) piped into \
         <code>tar -x</code>.</p>\n<table><tr><th>tool (storage)</th>\
         <th>beside</th><th>unpack (median)</th><th>runs</th><th>disk</th><th>vs strata</th></tr>\n",
    );
    for p in peers {
        let name = format!("{} ({})", p.tool, p.driver);
        let beside = format!("{}/{}", p.strata_driver, p.fs);
        if let Some(e) = &p.error {
            h += &format!(
                "<tr><td>{}</td><td>{}</td><td colspan=\"4\">not run: {}</td></tr>\n",
                escape(&name),
                escape(&beside),
                escape(e)
            );
            continue;
        }
        let strata = peers
            .iter()
            .find(|s| s.tool == "strata" && s.strata_driver == p.strata_driver && s.fs == p.fs && s.error.is_none())
            .map(|s| s.unpack.p50);
        let ratio = strata.filter(|s| *s > 0.0).map(|s| format!("{:.2}x", p.unpack.p50 / s)).unwrap_or_default();
        h += &format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            escape(&name),
            escape(&beside),
            secs(p.unpack.p50),
            p.unpack.samples.len(),
            size(p.disk_bytes as f64),
            ratio
        );
    }
    h + "</table>\n"
}

/// The page for a bench run.
pub fn html(run: &Run) -> String {
    let host = &run.host;
    let w = &run.workload;
    let mut h = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>strata bench</title><style>{STYLE}</style>\
         </head><body>\n<h1>strata bench</h1>\n<p class=\"host\">Host {}: kernel {} on {}, {} cpus, strata {}, run {}.<br>\
         Verdict for <code>--root {}</code>, on <b>{}</b>. Scratch filesystems (loop images) lived in <code>{}</code>, on {}.<br>\
         {} containers per target; {} unpack(s) per target; copy-up timed as {}{}. Each figure is a median with \
         the interval that covers the median (order statistics); N is its sample count.</p>\n",
        escape(&host.hostname),
        escape(&host.kernel),
        escape(&host.machine),
        host.cpus,
        escape(&host.strata),
        utc(host.time),
        escape(&host.root.display().to_string()),
        escape(&host.root_fs),
        escape(&host.scratch_dir.display().to_string()),
        escape(&host.scratch_fs),
        w.containers,
        w.unpack_runs,
        escape(&w.copyup_timing),
        if w.quick { " (quick mode: smaller files, fewer samples)" } else { "" },
    );
    let images = run.images();
    h += "<h2>Verdict per workload</h2>\n";
    if run.verdicts.is_empty() {
        h += "<p class=\"note\">No verdict: no target ran.</p>\n";
    }
    for v in &run.verdicts {
        if images.len() > 1 {
            h += &format!("<p class=\"note\">Image: {}</p>", escape(&v.image));
        }
        h += &verdict_block(v);
    }
    h += &missing(run);
    for image in &images {
        let mine: Vec<&TargetResult> = run.results.iter().filter(|r| &r.image == image).collect();
        let ok: Vec<&TargetResult> = mine.iter().copied().filter(|r| r.ok()).collect();
        h += &format!("<h2>Image: {}</h2>\n", escape(image));
        let features: Vec<String> = ok
            .iter()
            .map(|r| {
                let on: Vec<String> = r
                    .features
                    .iter()
                    .filter(|(_, v)| v != "false")
                    .map(|(k, v)| if v == "true" { k.clone() } else { format!("{k}={v}") })
                    .collect();
                format!("{}: {}", escape(&r.label()), escape(&on.join(", ")))
            })
            .collect();
        if !features.is_empty() {
            h += &format!(
                "<p class=\"note\">Features found (what the kernel and filesystem offer): {}.</p>\n",
                features.join("; ")
            );
        }
        // What the kernel offers is not what the containers were mounted with.
        let mounted: Vec<String> = ok
            .iter()
            .filter(|r| !r.mounted.is_empty() || !r.rename_by.is_empty())
            .map(|r| {
                let opts: Vec<String> = r.mounted.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let how = if r.rename_by.is_empty() { String::new() } else { format!(" (rename: {})", r.rename_by) };
                format!("{}: {}{how}", escape(&r.label()), escape(&opts.join(", ")))
            })
            .collect();
        if !mounted.is_empty() {
            h += &format!("<p class=\"note\">Containers mounted with: {}.</p>\n", mounted.join("; "));
        }
        h += &figures_table(&ok, &run.workload);
        h += &crate::workloads::show::html(&ok);
        let named: Vec<(String, &TargetResult)> = ok.iter().map(|r| (r.label(), *r)).collect();
        h += &chart_or_note(copyup_chart(&named), "No first-write figures to chart.");
        h += &chart_or_note(disk_chart(&ok), "No disk-use-per-container figures to chart.");
        h += &chart_or_note(unpack_chart(&ok), "No per-layer unpack figures to chart.");
        let mine_peers: Vec<&PeerResult> = run.peers.iter().filter(|p| &p.image == image).collect();
        h += &peers_table(&mine_peers);
    }
    h + "</body></html>\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_measured_size_is_labelled_and_every_point_has_whiskers() {
        let mut run: Run = serde_json::from_str(include_str!("../../tests/fixtures/bench/run-full.json")).unwrap();
        run.verdicts = crate::verdict::verdicts(&run, &crate::verdict::Profile::shipped());
        let page = html(&run);
        for tick in ["4 KiB", "1 MiB", "64 MiB", "512 MiB"] {
            // Five panels, each labelling the size under its tick.
            assert_eq!(page.matches(&format!(">\n{tick}\n<")).count(), 5, "{tick}");
        }
        // Copy-up: 5 targets × 4 sizes × (bar + 2 caps); disk: 5 × 6 counts × 3; unpack: 5 × 4 layers × 3.
        assert!(page.matches("<polyline").count() >= 3 * (20 + 30 + 20), "{}", page.matches("<polyline").count());
        assert!(page.contains("needs a disk formatted as xfs"));
        assert!(page.contains("[") && page.contains("class=\"iv\""), "intervals in the figures table");
    }

    #[test]
    fn a_run_with_no_results_still_renders() {
        let page = html(&Run::default());
        assert!(page.starts_with("<!DOCTYPE html>") && page.ends_with("</body></html>\n"));
        assert_eq!(page.matches("<svg").count(), 0);
        assert!(page.contains("No verdict: no target ran."));
    }
}
