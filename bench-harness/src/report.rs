//! `strata bench --report FILE.html`: one self-contained page (inline SVG, no script, no
//! external resource) with the recommendation first, the figures it rests on, and
//! three charts drawn with plotters: copy-up latency against file size, disk use
//! against the number of containers, and when each layer of the unpack was ready.

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::bench::{mb, ms, parse_size, TargetResult, DEFAULT_IMAGE};
use crate::peers::PeerResult;

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

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A size for small and large alike: `812 B`, `10.0 kB`, `332.5 MB`.
fn size(b: u64) -> String {
    match b {
        0..1_000 => format!("{b} B"),
        1_000..1_000_000 => format!("{:.1} kB", b as f64 / 1e3),
        _ => mb(b),
    }
}

fn label(r: &TargetResult) -> String {
    format!("{}/{}", r.driver, r.fs)
}

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

/// One line per series: (name, points). Empty series are left out; no series → None.
type Series = Vec<(String, Vec<(f64, f64)>)>;

/// What the x coordinate of a chart is.
#[derive(Clone, Copy, PartialEq)]
enum XAxis {
    /// log2 of a size in bytes: a tick at each power of two, labelled in KiB/MiB/GiB (only at the
    /// measured sizes when those are all powers of two).
    Log2Bytes,
    /// A count (containers, layers): ticks at whole numbers only.
    Count,
}

const CHART_SIZE: (u32, u32) = (1000, 440);
/// plotters writes an SVG font-size of the requested size / 1.24: these come out at about 13-19 px.
const FONT: &str = "sans-serif";

fn line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &Series,
    x_axis: XAxis,
    log_y: bool,
) -> Option<String> {
    let series: Vec<_> = series.iter().filter(|(_, p)| !p.is_empty()).collect();
    if series.is_empty() {
        return None;
    }
    let all: Vec<(f64, f64)> = series.iter().flat_map(|(_, p)| p.iter().copied()).collect();
    let (xmin, xmax) = all.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (ymin, ymax) = all.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    // Whole-number ticks: as many labels as whole numbers in range (plotters then steps by 1),
    // at most 24 (it then steps by 2, 5, 10 ...); half a step of room at either end.
    let (first, last) = (xmin.floor(), xmax.ceil());
    let x_ticks = ((last - first) as usize + 1).min(24);
    let pad = if x_axis == XAxis::Log2Bytes { 0.5 } else { 0.25 };
    let (x0, x1) = (first.min(xmin) - pad, last.max(xmax) + pad);
    let (y0, y1) = if log_y {
        let lo = ymin.max(1e-6) / 2.0;
        (lo, (ymax * 2.0).max(lo * 10.0))
    } else {
        (0.0, (ymax * 1.08).max(1e-9))
    };
    let measured: Vec<f64> = all.iter().map(|p| p.0).collect();
    let only_measured = x_axis == XAxis::Log2Bytes && measured.iter().all(|x| x.fract() == 0.0);
    let x_format = move |x: &f64| -> String {
        if (x - x.round()).abs() > 1e-9 || (only_measured && !measured.contains(&x.round())) {
            return String::new();
        }
        match x_axis {
            XAxis::Log2Bytes => bytes_label(2f64.powf(x.round())),
            XAxis::Count => number_label(x.round()),
        }
    };
    let longest = series.iter().map(|(n, _)| n.chars().count()).max().unwrap_or(0) as u32;
    let legend_width = (60 + 9 * longest).min(CHART_SIZE.0 / 3);

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, CHART_SIZE).into_drawing_area();
        root.fill(&WHITE).ok()?;
        let (plot, legend) = root.split_horizontally(CHART_SIZE.0 - legend_width);
        let mut builder = ChartBuilder::on(&plot);
        builder.caption(title, (FONT, 24)).margin(12).x_label_area_size(56).y_label_area_size(80);
        // plotters types the axes by their coordinate kind, so each kind is spelled out.
        macro_rules! draw {
            ($chart:expr) => {{
                let mut chart = $chart;
                chart
                    .configure_mesh()
                    .x_desc(x_label)
                    .y_desc(y_label)
                    .x_labels(x_ticks)
                    .x_max_light_lines(1)
                    .y_max_light_lines(if log_y { 9 } else { 1 })
                    .bold_line_style(RGBColor(215, 215, 215))
                    .light_line_style(RGBColor(240, 240, 240))
                    .x_label_formatter(&x_format)
                    .y_label_formatter(&|y| number_label(*y))
                    .label_style((FONT, 16))
                    .axis_desc_style((FONT, 17))
                    .draw()
                    .ok()?;
                for (i, (_, points)) in series.iter().enumerate() {
                    let color = PALETTE[i % PALETTE.len()];
                    chart.draw_series(LineSeries::new(points.iter().copied(), color.stroke_width(2))).ok()?;
                    chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled()))).ok()?;
                }
            }};
        }
        if log_y {
            draw!(builder.build_cartesian_2d(x0..x1, (y0..y1).log_scale()).ok()?);
        } else {
            draw!(builder.build_cartesian_2d(x0..x1, y0..y1).ok()?);
        }
        // The legend sits beside the plot, where it cannot hide a line.
        let text = TextStyle::from((FONT, 17).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
        for (i, (name, _)) in series.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            let y = 60 + 28 * i as i32;
            legend.draw(&PathElement::new(vec![(6, y), (36, y)], color.stroke_width(3))).ok()?;
            legend.draw(&Circle::new((21, y), 4, color.filled())).ok()?;
            legend.draw(&Text::new(name.as_str(), (44, y), text.clone())).ok()?;
        }
        root.present().ok()?;
    }
    Some(svg)
}

/// Copy-up: median first-write latency (ms) against the lower file's size (bytes).
fn copyup_chart(results: &[&TargetResult]) -> Option<String> {
    let series: Series = results
        .iter()
        .map(|r| {
            let mut points: Vec<(f64, f64)> = r
                .copyup
                .iter()
                .filter_map(|(k, d)| {
                    let size = parse_size(k.strip_prefix("write ")?)?;
                    (size > 0).then(|| ((size as f64).log2(), d.median * 1000.0))
                })
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            (label(r), points)
        })
        .collect();
    let (lo, hi) = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|p| p.1))
        .fold((f64::MAX, 0.0f64), |(a, b), y| (a.min(y.max(1e-6)), b.max(y)));
    let log_y = hi / lo > 50.0;
    line_chart(
        "First write to a lower file (median)",
        "size of the lower file (log scale)",
        if log_y { "latency (ms, log scale)" } else { "latency (ms)" },
        &series,
        XAxis::Log2Bytes,
        log_y,
    )
}

/// Disk use (MB over the empty filesystem) against the number of containers.
fn disk_chart(results: &[&TargetResult]) -> Option<String> {
    let series: Series = results
        .iter()
        .map(|r| {
            let points = r.disk_by_containers.iter().enumerate().map(|(n, &b)| (n as f64, b as f64 / 1e6)).collect();
            (label(r), points)
        })
        .collect();
    line_chart("Disk use as containers are created", "containers", "disk used (MB)", &series, XAxis::Count, false)
}

/// When each layer of the unpack was ready (time from the start), by layer.
fn unpack_chart(results: &[&TargetResult]) -> Option<String> {
    let slowest = results.iter().flat_map(|r| r.unpack_layers.iter().map(|l| l.1)).fold(0.0f64, f64::max);
    let (scale, unit) = if slowest < 2.0 { (1000.0, "ms") } else { (1.0, "s") };
    let series: Series = results
        .iter()
        .map(|r| {
            let points = r.unpack_layers.iter().enumerate().map(|(i, l)| ((i + 1) as f64, l.1 * scale)).collect();
            (label(r), points)
        })
        .collect();
    line_chart(
        "Unpack: when each layer was ready",
        "layer (1 = bottom)",
        &format!("time from start ({unit})"),
        &series,
        XAxis::Count,
        false,
    )
}

/// What each container added, under the disk chart: lines that start at the same image size overlap there.
fn per_container(results: &[&TargetResult]) -> String {
    let added: Vec<String> = results
        .iter()
        .filter(|r| r.disk_by_containers.len() > 1)
        .map(|r| {
            let d = &r.disk_by_containers;
            let each = d[d.len() - 1].saturating_sub(d[0]) / (d.len() as u64 - 1);
            format!("{} {}", escape(&label(r)), size(each))
        })
        .collect();
    if added.is_empty() {
        return String::new();
    }
    format!("<p class=\"note\">Added per container, on average: {}.</p>\n", added.join(", "))
}

/// The layers' sizes under the unpack chart, so a steep step can be read against its layer.
fn layer_sizes(results: &[&TargetResult]) -> String {
    let Some(r) = results.iter().find(|r| !r.unpack_layers.is_empty()) else { return String::new() };
    let sizes: Vec<String> =
        r.unpack_layers.iter().enumerate().map(|(i, l)| format!("{}: {}", i + 1, size(l.2))).collect();
    format!("<p class=\"note\">Bytes applied per layer ({}): {}.</p>\n", escape(&label(r)), sizes.join(", "))
}

fn summary_table(results: &[&TargetResult]) -> String {
    let big = results.iter().find(|r| r.error.is_none()).map(|r| crate::bench::largest_write(r)).unwrap_or_default();
    let mut h = format!(
        "<table><tr><th>driver/fs</th><th>unpack</th><th>MB/s</th><th>create p50</th><th>create p99</th>\
         <th>{} p50</th><th>disk with containers</th><th>disk after writes</th><th>diff</th><th>diff size</th></tr>\n",
        escape(big.trim_start_matches("write "))
    );
    for r in results {
        if let Some(e) = &r.error {
            h += &format!(
                "<tr><td>{}</td><td colspan=\"9\">could not run: {}</td></tr>\n",
                escape(&label(r)),
                escape(e)
            );
            continue;
        }
        let disk = |k: &str| r.disk.get(k).map(|d| mb(d.bytes)).unwrap_or_default();
        h += &format!(
            "<tr><td>{}</td><td>{}</td><td>{:.1}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td></tr>\n",
            escape(&label(r)),
            ms(r.unpack_seconds),
            r.unpack_mb_per_s,
            ms(r.create.median),
            ms(r.create.p99),
            r.copyup.get(&big).map(|d| ms(d.median)).unwrap_or_default(),
            disk("after_containers"),
            disk("after_writes"),
            ms(r.diff_seconds),
            mb(r.diff_bytes)
        );
    }
    h + "</table>\n"
}

fn copyup_table(results: &[&TargetResult]) -> String {
    let ok: Vec<&&TargetResult> = results.iter().filter(|r| r.error.is_none()).collect();
    let Some(first) = ok.first() else { return String::new() };
    let mut h = String::from("<table><tr><th>operation (median / p99)</th>");
    for r in &ok {
        h += &format!("<th>{}</th>", escape(&label(r)));
    }
    h += "</tr>\n";
    for op in first.copyup.keys() {
        h += &format!("<tr><td>{}</td>", escape(op));
        for r in &ok {
            h += &r.copyup.get(op).map(|d| format!("<td>{} / {}</td>", ms(d.median), ms(d.p99))).unwrap_or_default();
        }
        h += "</tr>\n";
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
         extracted at once with <code>unpigz | tar -x</code>.</p>\n<table><tr><th>tool (storage)</th>\
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
            .map(|s| s.unpack.median);
        let ratio = strata.filter(|s| *s > 0.0).map(|s| format!("{:.2}x", p.unpack.median / s)).unwrap_or_default();
        h += &format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            escape(&name),
            escape(&beside),
            ms(p.unpack.median),
            p.unpack.samples.len(),
            mb(p.disk_bytes),
            ratio
        );
    }
    h + "</table>\n"
}

const STYLE: &str = "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}\
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}\
td:first-child,th:first-child,td[colspan]{text-align:left}th{background:#f3f3f3}\
.rec{background:#eef6ee;border-left:4px solid #2c2;padding:.5em 1em}.chart{margin:1em 0}\
.host{color:#555}.note{color:#555;font-size:90%}";

/// `YYYY-MM-DD HH:MM UTC` for seconds since the epoch (the proleptic Gregorian calendar).
fn utc(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02} UTC", rem / 3600, rem % 3600 / 60)
}

/// A chart, or a line saying why it is missing.
fn chart_or_note(chart: Option<String>, missing: &str) -> String {
    match chart {
        Some(svg) => format!("<div class=\"chart\">{svg}</div>\n"),
        None => format!("<p class=\"note\">{missing}</p>\n"),
    }
}

/// The page for a bench report (the JSON `strata bench --json` writes).
pub fn html(report: &serde_json::Value) -> String {
    let results: Vec<TargetResult> = serde_json::from_value(report["results"].clone()).unwrap_or_default();
    // One peer row that does not parse costs that row, not the table.
    let peers: Vec<PeerResult> = report["peers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| serde_json::from_value(p.clone()).ok())
        .collect();
    let host = &report["host"];
    let workload = &report["workload"];
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "?".into(),
        other => other.to_string(),
    };
    let when = host["time"].as_i64().map(|t| format!(", run {}", utc(t))).unwrap_or_default();
    let quick =
        if workload["quick"].as_bool() == Some(true) { " (quick mode: smaller files, fewer samples)" } else { "" };
    let mut h = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>strata bench</title><style>{STYLE}</style>\
         </head><body>\n<h1>strata bench</h1>\n<p class=\"host\">kernel {} on {}, {} cpus, strata {}{}.<br>\
         {} containers per driver{}; copy-up timed as {}.</p>\n",
        escape(&text(&host["kernel"])),
        escape(&text(&host["machine"])),
        escape(&text(&host["cpus"])),
        escape(&text(&host["strata"])),
        escape(&when),
        escape(&text(&workload["containers"])),
        quick,
        escape(&text(&workload["copyup_timing"])),
    );
    h += "<div class=\"rec\"><h2>Recommendation for this host</h2><ul>\n";
    for line in report["recommendation"].as_array().into_iter().flatten() {
        h += &format!("<li>{}</li>\n", escape(line.as_str().unwrap_or_default()));
    }
    h += "</ul></div>\n";
    let mut images: Vec<&str> = Vec::new();
    for r in &results {
        if !images.contains(&r.image.as_str()) {
            images.push(&r.image);
        }
    }
    // Reports from before --image name no image on their results.
    let default_image = workload["image"].as_str().unwrap_or(DEFAULT_IMAGE);
    for image in images {
        let mine: Vec<&TargetResult> = results.iter().filter(|r| r.image == image).collect();
        let ok: Vec<&TargetResult> = mine.iter().copied().filter(|r| r.error.is_none()).collect();
        h += &format!("<h2>Image: {}</h2>\n", escape(if image.is_empty() { default_image } else { image }));
        h += &summary_table(&mine);
        h += &chart_or_note(copyup_chart(&ok), "No first-write figures to chart.");
        h += &chart_or_note(
            disk_chart(&ok),
            "No disk-use-per-container figures in this report (runs before they were recorded lack them).",
        );
        h += &per_container(&ok);
        h += &chart_or_note(unpack_chart(&ok), "No per-layer unpack figures to chart.");
        h += &layer_sizes(&ok);
        h += "<h3>Copy-up and other first writes to lower files</h3>\n";
        h += &copyup_table(&mine);
        let mine_peers: Vec<&PeerResult> = peers.iter().filter(|p| p.image == image).collect();
        h += &peers_table(&mine_peers);
    }
    h + "</body></html>\n"
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn target(driver: &str, slow: f64, error: Option<&str>) -> serde_json::Value {
        let dist = |m: f64| json!({"samples": [m, m * 1.1], "median": m, "p99": m * 1.1});
        json!({
            "image": "embedded default", "driver": driver, "fs": "ext4", "features": [],
            "unpack_layers": [["sha256:a", 0.5 * slow, 1000], ["sha256:b", 0.9 * slow, 2000]],
            "unpack_seconds": slow, "unpack_mb_per_s": 10.0, "unpack_cpu_seconds": 1.0,
            "create": dist(0.01 * slow),
            "copyup": {"write 4KiB": dist(0.0001), "write 1MiB": dist(0.002 * slow), "write 16MiB": dist(0.03 * slow),
                       "rename dir": dist(0.01)},
            "disk": {"after_unpack": {"bytes": 1_000_000, "inodes": 10}},
            "disk_by_containers": [1_000_000, 1_100_000 * slow as u64, 1_300_000 * slow as u64],
            "diff_seconds": 0.1, "diff_bytes": 4096, "error": error,
        })
    }

    #[test]
    fn the_page_has_the_charts_the_figures_and_escapes_what_it_quotes() {
        let report = json!({
            "schema": 1,
            "host": {"kernel": "6.1.0", "machine": "x86_64", "cpus": 2, "strata": "0.1.0", "time": 1_795_399_952},
            "workload": {"containers": 2, "copyup_timing": "open + append + close"},
            "results": [target("overlay", 1.0, None), target("vfs", 3.0, None),
                        target("btrfs", 1.0, Some("no <script>alert(1)</script> here"))],
            "peers": [{"image": "embedded default", "tool": "strata", "driver": "overlay", "fs": "ext4",
                       "strata_driver": "overlay", "unpack": {"samples": [1.0], "median": 1.0, "p99": 1.0},
                       "disk_bytes": 5, "error": null},
                      {"image": "embedded default", "tool": "containerd", "driver": "overlayfs", "fs": "ext4",
                       "strata_driver": "overlay", "unpack": {"samples": [2.5], "median": 2.5, "p99": 2.5},
                       "disk_bytes": 9, "error": null}],
            "recommendation": ["recommended here: overlay on ext4 & friends"],
        });
        let page = html(&report);
        assert_eq!(page.matches("<svg").count(), 3, "three charts");
        assert!(page.matches("<text").count() > 20, "the charts carry axis labels and legends");
        for name in ["overlay/ext4", "vfs/ext4", "btrfs/ext4"] {
            assert!(page.contains(name), "{name} is on the page");
        }
        assert!(page.contains("recommended here: overlay on ext4 &amp; friends"));
        assert!(!page.contains("<script>"), "quoted text is escaped");
        assert!(page.contains("&lt;script&gt;"));
        assert!(page.contains("2.50x"), "containerd's unpack is shown against strata's");
        assert!(page.contains("could not run"));
        // The copy-up chart's x axis names the measured sizes; the layer chart counts whole layers.
        for tick in [">\n4 KiB\n<", ">\n1 MiB\n<", ">\n16 MiB\n<", "layer (1 = bottom)", "time from start (s)"] {
            assert!(page.contains(tick), "{tick:?} is on a chart");
        }
        // x tick labels are centred under their tick (y labels are right-aligned): none is fractional.
        let x_ticks: Vec<&str> = page
            .split("<text ")
            .filter(|t| t.contains("text-anchor=\"middle\"") && !t.contains("rotate"))
            .filter_map(|t| t.split_once(">\n")?.1.split_once('\n').map(|(text, _)| text))
            .collect();
        assert!(["0", "1", "2"].iter().all(|t| x_ticks.contains(t)), "{x_ticks:?}");
        assert!(x_ticks.iter().all(|t| t.parse::<f64>().map_or(true, |v| v.fract() == 0.0)), "{x_ticks:?}");
        assert!(page.contains("Added per container, on average: overlay/ext4 150.0 kB, vfs/ext4 "));
        assert!(page.contains("run 2026-11-23 02:12 UTC"));
    }

    #[test]
    fn an_older_report_without_disk_by_containers_says_so_and_names_in_charts_are_escaped() {
        let mut odd = target("a<b>&c", 1.0, None);
        odd.as_object_mut().unwrap().remove("disk_by_containers");
        odd.as_object_mut().unwrap().remove("image");
        let report = json!({"schema": 1, "host": {}, "workload": {"image": "embedded default"}, "results": [odd],
                            "recommendation": []});
        let page = html(&report);
        assert_eq!(page.matches("<svg").count(), 2, "copy-up and unpack only");
        assert!(page.contains("No disk-use-per-container figures"));
        assert!(page.contains("Image: embedded default"));
        assert!(!page.contains("a<b>"), "the legend inside the SVG is escaped too");
        assert!(page.matches("a&lt;b&gt;&amp;c/ext4").count() >= 3, "table and both chart legends");
    }

    #[test]
    fn dates_are_utc_on_the_gregorian_calendar() {
        assert_eq!(utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(utc(1_795_399_952), "2026-11-23 02:12 UTC");
        assert_eq!(utc(-1), "1969-12-31 23:59 UTC");
    }

    #[test]
    fn a_report_with_no_results_still_renders() {
        let page = html(&json!({"schema": 1, "host": {}, "workload": {}, "results": [], "recommendation": []}));
        assert!(page.starts_with("<!DOCTYPE html>") && page.ends_with("</body></html>\n"));
        assert_eq!(page.matches("<svg").count(), 0);
    }
}
