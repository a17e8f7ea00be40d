//! Fleets: `strata bench --openmetrics` of a real (small) bench checked by Prometheus'
//! own parsers, and `strata bench --from a.json --from b.json` comparing hosts side by
//! side in the terminal and in an HTML page rendered by headless Chromium.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use strata_tests::{installed, privileged};

use strata_tests::{strata_plain as strata, strata_plain_ok as ok};

/// A small real bench (vfs on ext4, two containers): its JSON, and its OpenMetrics file
/// when asked.
fn small_bench(dir: &Path, name: &str, root: &Path, openmetrics: bool) -> Value {
    let json = dir.join(format!("{name}.json"));
    let prom = dir.join(format!("{name}.prom"));
    let mut args = vec!["--root", root.to_str().unwrap(), "bench", "--quick", "--drivers", "vfs", "--fs", "ext4"];
    args.extend(["--containers", "2", "--json", json.to_str().unwrap()]);
    if openmetrics {
        args.extend(["--openmetrics", prom.to_str().unwrap()]);
    }
    ok(&args);
    serde_json::from_slice(&fs::read(&json).unwrap()).unwrap()
}

/// Runs `program args` with `input` on stdin.
fn piped(program: &str, args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// `a` and `b` are the same figure: serde_json's default float parsing may be off by an ulp.
fn same(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * a.abs().max(b.abs())
}

/// The value of the one sample whose line starts with `prefix` (name and labels).
fn sample(text: &str, prefix: &str) -> f64 {
    let found: Vec<&str> = text.lines().filter(|l| l.starts_with(prefix)).collect();
    assert_eq!(found.len(), 1, "one sample {prefix}: {text}");
    found[0].rsplit(' ').next().unwrap().parse().unwrap()
}

#[test]
fn openmetrics_of_a_real_bench_pass_promtool_as_prometheus_text_and_as_openmetrics() {
    if !privileged("the OpenMetrics test") || !installed(&["promtool"], "the OpenMetrics test") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let run = small_bench(dir.path(), "run", dir.path(), true);
    let text = fs::read_to_string(dir.path().join("run.prom")).unwrap();

    // The Prometheus text format 0.0.4 (what node-exporter's textfile collector parses),
    // with promtool's lint: HELP on every metric, base units, no counter without _total.
    let o = piped("promtool", &["check", "metrics"], text.as_bytes());
    let said = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success() && said.trim().is_empty(), "promtool check metrics: {said}\n{text}");

    // OpenMetrics 1.0, through Prometheus' strict OpenMetrics parser (# EOF required, UNIT
    // a suffix of the name, no interleaved families). Its only entry point in promtool is
    // the backfill, which wants a timestamp on every sample; the file has none (the
    // textfile collector refuses them), so they are added here and nothing else.
    let stamped: String = text
        .lines()
        .map(|l| if l.starts_with('#') { format!("{l}\n") } else { format!("{l} {}\n", run["host"]["time"]) })
        .collect();
    let om = dir.path().join("stamped.om");
    fs::write(&om, stamped).unwrap();
    let blocks = dir.path().join("blocks");
    let o = Command::new("promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&om)
        .arg(&blocks)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "the OpenMetrics parser refused the file: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );

    // The figures are the run's, labelled by host, driver, filesystem and phase.
    assert!(text.ends_with("\n# EOF\n"));
    let r = &run["results"][0];
    let host = run["host"]["hostname"].as_str().unwrap();
    let labels = format!("host=\"{host}\",image=\"embedded default\",driver=\"vfs\",fs=\"ext4\"");
    assert_eq!(sample(&text, &format!("strata_bench_target_up{{{labels}}}")), 1.0);
    for (phase, key) in [("unpack", "unpack"), ("create", "create"), ("diff", "diff")] {
        for (stat, field) in [("median", "p50"), ("lo", "lo"), ("hi", "hi")] {
            let got =
                sample(&text, &format!("strata_bench_phase_seconds{{{labels},phase=\"{phase}\",stat=\"{stat}\"}}"));
            assert!(same(got, r[key][field].as_f64().unwrap()), "{phase} {stat}: {got} vs {}", r[key][field]);
        }
        let n = sample(&text, &format!("strata_bench_phase_samples{{{labels},phase=\"{phase}\"}}"));
        assert_eq!(n as usize, r[key]["samples"].as_array().unwrap().len(), "{phase} samples");
    }
    let got = sample(&text, &format!("strata_bench_phase_seconds{{{labels},phase=\"write 16MiB\",stat=\"median\"}}"));
    assert!(same(got, r["copyup"]["write 16MiB"]["p50"].as_f64().unwrap()), "{got} vs {}", r["copyup"]["write 16MiB"]);
    let got = sample(&text, &format!("strata_bench_disk_bytes{{{labels},phase=\"after_writes\"}}"));
    assert_eq!(got as u64, r["disk"]["after_writes"]["bytes"].as_u64().unwrap());
    assert_eq!(
        sample(&text, &format!("strata_bench_run_timestamp_seconds{{host=\"{host}\"}}")) as i64,
        run["host"]["time"].as_i64().unwrap()
    );
    // Every profile's verdict picks the one target that ran.
    let picks = text.lines().filter(|l| l.starts_with("strata_bench_verdict_pick{") && l.ends_with(" 1")).count();
    assert_eq!(picks, run["verdicts"].as_array().unwrap().len(), "{text}");
    // The textfile collector reads FILE.prom whenever it likes: no temp file is left beside it.
    let left: Vec<_> = fs::read_dir(dir.path()).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(left.iter().all(|n| !n.to_string_lossy().contains("tmp")), "{left:?}");
}

#[test]
fn two_hosts_compare_side_by_side_in_the_terminal_and_in_chromium() {
    if !privileged("the fleet comparison test") || !installed(&["chromium"], "the fleet comparison test") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Two real runs; the second host's --root on tmpfs, the first's on the temp dir's disk.
    let shm = tempfile::tempdir_in("/dev/shm").unwrap();
    let a = small_bench(dir.path(), "a", dir.path(), false);
    let mut b = small_bench(dir.path(), "b", shm.path(), false);
    let (pa, pb) = (dir.path().join("a.json"), dir.path().join("b.json"));
    let (pa, pb) = (pa.to_str().unwrap(), pb.to_str().unwrap());
    let host_a = a["host"]["hostname"].as_str().unwrap().to_string();

    // Same hostname: the names tell the runs apart by their recorded facts.
    let out = ok(&["bench", "--from", pa, "--from", pb]);
    let hosts: Vec<&str> = out.lines().skip(1).take(2).collect();
    assert!(hosts.iter().all(|l| l.trim_start().starts_with(&host_a)), "{out}");
    let name = |l: &str| l.trim_start().split("  ").next().unwrap().to_string();
    assert_ne!(name(hosts[0]), name(hosts[1]), "two names: {out}");

    // Another host: named by its hostname, its figures beside the first's.
    b["host"]["hostname"] = "node-b".into();
    let pb2 = dir.path().join("node-b.json");
    fs::write(&pb2, serde_json::to_vec(&b).unwrap()).unwrap();
    let html = dir.path().join("fleet.html");
    let out = ok(&["bench", "--from", pa, "--from", pb2.to_str().unwrap(), "--report", html.to_str().unwrap()]);
    assert!(out.starts_with("2 hosts, one workload: embedded default"), "{out}");
    let head = out.lines().find(|l| l.starts_with("figure")).expect("a figures table");
    assert!(head.contains(&host_a) && head.contains("node-b") && head.contains(&format!("node-b/{host_a}")), "{out}");
    let unpack = out.lines().find(|l| l.starts_with("unpack ")).expect("an unpack row");
    assert_eq!(unpack.split_whitespace().filter(|w| w.ends_with('x')).count(), 1, "a ratio: {unpack}");
    assert!(!unpack.contains("not run"), "{unpack}");
    assert_eq!(out.lines().filter(|l| l.starts_with("    node-b ")).count(), 4, "node-b's verdict per profile: {out}");

    // The page, rendered: both hosts head the tables, and the chart has a panel per host.
    let o = Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--dump-dom"])
        .arg(format!("file://{}", html.display()))
        .output()
        .expect("chromium (Debian package chromium) runs");
    let dom = String::from_utf8_lossy(&o.stdout);
    assert!(dom.contains("2 hosts side by side"), "chromium rendered nothing: {}", String::from_utf8_lossy(&o.stderr));
    for name in [host_a.as_str(), "node-b"] {
        let heads = dom.matches(&format!("<th class=\"hostname\">{name}</th>")).count();
        assert_eq!(heads, 3, "{name} heads the hosts, verdicts and figures tables");
        assert!(dom.contains(&format!("{name} · vfs/ext4")), "{name}'s chart panel");
    }
    assert!(dom.contains(&format!("node-b / {host_a}")), "the ratio column");
    assert!(dom.contains("tmpfs"), "node-b's --root on tmpfs is in its facts");
    let png = dir.path().join("fleet.png");
    Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1200,3000"])
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", html.display()))
        .output()
        .unwrap();
    let decoder = png::Decoder::new(fs::File::open(&png).expect("a screenshot"));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let pixels: Vec<&[u8]> = buf[..info.buffer_size()].chunks(info.color_type.samples()).collect();
    let inked = pixels.iter().filter(|p| p[..3].iter().any(|&c| c < 230)).count() as f64 / pixels.len() as f64;
    assert!(inked > 0.03, "the page is nearly blank ({:.1}% inked)", inked * 100.0);

    // Another workload is refused, naming what differs; --json with several --from is a usage error.
    let mut other = b.clone();
    other["workload"]["containers"] = 3.into();
    let po = dir.path().join("other.json");
    fs::write(&po, serde_json::to_vec(&other).unwrap()).unwrap();
    let o = strata(&["bench", "--from", pa, "--from", po.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "inputs (docs/ci.md's exit codes): {stderr}");
    assert!(stderr.contains("another workload than") && stderr.contains("containers 2 vs 3"), "{stderr}");
    let o = strata(&["bench", "--from", pa, "--from", pb, "--json", dir.path().join("x.json").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
}
