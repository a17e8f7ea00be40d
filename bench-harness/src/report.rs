//! `strata bench --report FILE.html`: one self-contained page (inline SVG, no script, no
//! external resource) with the recommendation first, the figures it rests on, and
//! three charts drawn with plotters: copy-up latency against file size, disk use
//! against the number of containers, and when each layer of the unpack was ready.

use plotters::prelude::*;

use crate::bench::{parse_size, TargetResult, DEFAULT_IMAGE};
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

fn ms(s: f64) -> String {
    if s >= 1.0 {
        format!("{s:.2} s")
    } else {
        format!("{:.2} ms", s * 1000.0)
    }
}

fn mb(b: u64) -> String {
    format!("{:.1} MB", b as f64 / 1e6)
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

fn line_chart(title: &str, x_label: &str, y_label: &str, series: &Series, log_x: bool, log_y: bool) -> Option<String> {
    let series: Vec<_> = series.iter().filter(|(_, p)| !p.is_empty()).collect();
    if series.is_empty() {
        return None;
    }
    let all: Vec<(f64, f64)> = series.iter().flat_map(|(_, p)| p.iter().copied()).collect();
    let (mut x0, mut x1) = all.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (mut y0, mut y1) = all.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    if log_x {
        x0 = (x0 / 2.0).max(1e-9);
        x1 *= 2.0;
    } else {
        x1 = x1.max(x0 + 1.0);
    }
    if log_y {
        y0 = (y0 / 2.0).max(1e-6);
        y1 = (y1 * 2.0).max(y0 * 10.0);
    } else {
        y0 = 0.0;
        y1 = (y1 * 1.1).max(1e-9);
    }
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (760, 420)).into_drawing_area();
        root.fill(&WHITE).ok()?;
        let mut builder = ChartBuilder::on(&root);
        builder.caption(title, ("sans-serif", 20)).margin(12).x_label_area_size(45).y_label_area_size(70);
        // plotters types the axes by their coordinate kind, so each combination is spelled out.
        macro_rules! draw {
            ($chart:expr) => {{
                let mut chart = $chart;
                chart
                    .configure_mesh()
                    .x_desc(x_label)
                    .y_desc(y_label)
                    .x_label_formatter(&|x| if log_x { bytes_label(*x) } else { number_label(*x) })
                    .y_label_formatter(&|y| number_label(*y))
                    .label_style(("sans-serif", 13))
                    .axis_desc_style(("sans-serif", 14))
                    .draw()
                    .ok()?;
                for (i, (name, points)) in series.iter().enumerate() {
                    let color = PALETTE[i % PALETTE.len()];
                    chart
                        .draw_series(LineSeries::new(points.iter().copied(), color.stroke_width(2)))
                        .ok()?
                        .label(name.as_str())
                        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
                    chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled()))).ok()?;
                }
                chart
                    .configure_series_labels()
                    .background_style(WHITE.mix(0.85))
                    .border_style(BLACK)
                    .label_font(("sans-serif", 13))
                    .position(SeriesLabelPosition::UpperLeft)
                    .draw()
                    .ok()?;
            }};
        }
        match (log_x, log_y) {
            (true, true) => draw!(builder.build_cartesian_2d((x0..x1).log_scale(), (y0..y1).log_scale()).ok()?),
            (true, false) => draw!(builder.build_cartesian_2d((x0..x1).log_scale(), y0..y1).ok()?),
            (false, true) => draw!(builder.build_cartesian_2d(x0..x1, (y0..y1).log_scale()).ok()?),
            (false, false) => draw!(builder.build_cartesian_2d(x0..x1, y0..y1).ok()?),
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
                .filter_map(|(k, d)| Some((parse_size(k.strip_prefix("write ")?)? as f64, d.median * 1000.0)))
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            (label(r), points)
        })
        .collect();
    let wide = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|p| p.1))
        .fold((f64::MAX, 0.0f64), |(a, b), y| (a.min(y.max(1e-6)), b.max(y)));
    let log_y = wide.1 / wide.0 > 50.0;
    line_chart(
        "First write to a lower file (median)",
        "lower file size (bytes, log scale)",
        if log_y { "latency (ms, log scale)" } else { "latency (ms)" },
        &series,
        true,
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
    line_chart("Disk use as containers are created", "containers", "disk used (MB)", &series, false, false)
}

/// When each layer of the unpack was ready (seconds from the start), by layer.
fn unpack_chart(results: &[&TargetResult]) -> Option<String> {
    let series: Series = results
        .iter()
        .map(|r| {
            let points = r.unpack_layers.iter().enumerate().map(|(i, l)| ((i + 1) as f64, l.1)).collect();
            (label(r), points)
        })
        .collect();
    line_chart("Unpack: when each layer was ready", "layer (bottom = 1)", "seconds from start", &series, false, false)
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
td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}\
.rec{background:#eef6ee;border-left:4px solid #2c2;padding:.5em 1em}.chart{margin:1em 0}\
.host{color:#555}";

/// The page for a bench report (the JSON `strata bench --json` writes).
pub fn html(report: &serde_json::Value) -> String {
    let results: Vec<TargetResult> = serde_json::from_value(report["results"].clone()).unwrap_or_default();
    let peers: Vec<PeerResult> = serde_json::from_value(report["peers"].clone()).unwrap_or_default();
    let host = &report["host"];
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "?".into(),
        other => other.to_string(),
    };
    let mut h = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>strata bench</title><style>{STYLE}</style>\
         </head><body>\n<h1>strata bench</h1>\n<p class=\"host\">kernel {}, {} cpus, strata {}; {} containers per \
         driver; copy-up timed as {}</p>\n",
        escape(&text(&host["kernel"])),
        escape(&text(&host["cpus"])),
        escape(&text(&host["strata"])),
        escape(&text(&report["workload"]["containers"])),
        escape(&text(&report["workload"]["copyup_timing"])),
    );
    h += "<div class=\"rec\"><h2>Recommendation for this host</h2><ul>\n";
    for line in report["recommendation"].as_array().into_iter().flatten() {
        h += &format!("<li>{}</li>\n", escape(line.as_str().unwrap_or_default()));
    }
    h += "</ul></div>\n";
    let mut images: Vec<&str> = results.iter().map(|r| r.image.as_str()).collect();
    images.dedup();
    for image in images {
        let mine: Vec<&TargetResult> = results.iter().filter(|r| r.image == image).collect();
        let ok: Vec<&TargetResult> = mine.iter().copied().filter(|r| r.error.is_none()).collect();
        h += &format!("<h2>Image: {}</h2>\n", escape(if image.is_empty() { DEFAULT_IMAGE } else { image }));
        h += &summary_table(&mine);
        for chart in [copyup_chart(&ok), disk_chart(&ok), unpack_chart(&ok)].into_iter().flatten() {
            h += &format!("<div class=\"chart\">{chart}</div>\n");
        }
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
            "host": {"kernel": "6.1.0", "cpus": 2, "strata": "0.1.0"},
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
    }

    #[test]
    fn a_report_with_no_results_still_renders() {
        let page = html(&json!({"schema": 1, "host": {}, "workload": {}, "results": [], "recommendation": []}));
        assert!(page.starts_with("<!DOCTYPE html>") && page.ends_with("</body></html>\n"));
        assert_eq!(page.matches("<svg").count(), 0);
    }
}
