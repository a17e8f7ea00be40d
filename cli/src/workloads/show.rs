//! The workloads' figures shown: a sentence per target, the terminal table, and the
//! report's section with its chart.

use plotters::prelude::*;

use crate::model::{secs, size, Dist, DriverKind, TargetResult, WorkloadResult};

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
    let first = if r.driver == DriverKind::Overlay { "copied up" } else { "changed for the first time" };
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
            ("replay (s)", Box::new(|w| crate::page::cell(&w.wall, crate::page::Unit::Seconds))),
            ("real run, recorded (s)", Box::new(|w| w.run_seconds.map(secs).unwrap_or_else(|| "-".into()))),
            ("copy-ups (s)", Box::new(|w| crate::page::cell(&w.copyup_seconds(), crate::page::Unit::Seconds))),
            (
                "files copied up",
                Box::new(|w| {
                    let (n, b) = w.copied_files();
                    format!("{n} ({})", size(b as f64))
                }),
            ),
            ("layer disk (bytes)", Box::new(|w| crate::page::cell(&w.layer_bytes, crate::page::Unit::Bytes))),
            ("diff (s)", Box::new(|w| crate::page::cell(&w.diff, crate::page::Unit::Seconds))),
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
                        .map(|c| crate::page::cell(&c.seconds, crate::page::Unit::Seconds))
                        .unwrap_or_default()
                );
            }
            h += "</tr>\n";
        }
        h += "</table>\n";
        h += &crate::page::chart_or_note(chart(name, &rows), "No workload figures to chart.");
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workloads::tests::result;

    #[test]
    fn the_sentence_says_what_was_copied_up() {
        let o = result(DriverKind::Overlay, &[1.0, 2.0]);
        let s = sentence(&o, &o.workloads[0]);
        assert!(s.contains("copied up 3 file(s) of the image, 39.1 MiB"), "{s}");
        assert_eq!(o.workloads[0].copyup_seconds().p50, 0.15000000000000002);
        let page = html(&[&o]);
        assert!(page.contains("Workload: pip-install") && page.contains("<svg"), "{page}");
    }
}
