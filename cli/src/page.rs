//! The pieces every bench page shares (the single-run report, the hosts compared, the
//! workloads' section): escaping, a figure's cell with its interval, the style, dates.

use crate::model::{secs, size, Dist};

pub(crate) fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[derive(Clone, Copy)]
pub(crate) enum Unit {
    Seconds,
    Bytes,
}

pub(crate) fn cell(d: &Dist, unit: Unit) -> String {
    let f = |v: f64| match unit {
        Unit::Seconds => secs(v),
        Unit::Bytes => size(v),
    };
    if d.n() < 2 {
        return f(d.p50);
    }
    format!("{} <span class=\"iv\">[{}–{}]</span>", f(d.p50), f(d.lo), f(d.hi))
}

pub(crate) const STYLE: &str = "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}\
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}\
td:first-child,th:first-child,td[colspan],td.l{text-align:left}th{background:#f3f3f3}\
.verdict{background:#f6f8fb;border-left:4px solid #36c;padding:.3em 1em;margin:1em 0}.verdict.tie{border-color:#c90}\
.about{font-weight:normal;color:#555;font-size:80%}.chart{margin:1em 0}.iv{color:#777;font-size:85%}\
.why{font-size:85%;color:#444;max-width:22em}.host{color:#555}.note{color:#444;font-size:92%}";

/// `YYYY-MM-DD HH:MM UTC` for seconds since the epoch (a clock before 1970 reads as 1970).
pub(crate) fn utc(secs: i64) -> String {
    let t = strata_image::commit::rfc3339(u64::try_from(secs).unwrap_or(0)); // 2026-11-23T02:12:32Z
    format!("{} {} UTC", &t[..10], &t[11..16])
}

/// A chart, or a line saying why it is missing.
pub(crate) fn chart_or_note(chart: Option<String>, missing: &str) -> String {
    match chart {
        Some(svg) => format!("<div class=\"chart\">{svg}</div>\n"),
        None => format!("<p class=\"note\">{missing}</p>\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc_on_the_gregorian_calendar() {
        assert_eq!(utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(utc(1_795_399_952), "2026-11-23 02:12 UTC");
        assert_eq!(utc(-1), "1970-01-01 00:00 UTC");
    }
}
