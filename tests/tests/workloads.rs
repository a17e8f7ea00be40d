//! Real workloads (issue 25): the jobs of tests/fixtures/workloads.sh run in a container
//! with `strata container run --record`, replayed with `strata container replay` into a
//! second container over the same image, on every driver: same structure, same `layer
//! changes`. And `strata bench --replay TRACE --run 'CMD'` end to end: the workloads
//! named in the output, the JSON and the report, whose picture shows their figures, and
//! a profile that weighs a workload gets a verdict that speaks of it.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use strata_scratch::{FsKind, ScratchFs};
use strata_testkit::tree::{Kind, Tree};
use strata_tests::{debian_fixture, ink, installed, privileged, strata_plain_ok, Mounted, Strata};

/// Builds (or finds in the cache) the image of tests/fixtures/workloads.sh: (its
/// layout, the workloads as (name, command)).
fn workloads_fixture() -> (PathBuf, Vec<(String, Vec<String>)>) {
    debian_fixture();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/workloads.sh");
    let out = Command::new("bash").arg(&script).output().expect("run workloads.sh");
    assert!(out.status.success(), "workloads.sh failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let dir = PathBuf::from(String::from_utf8(out.stdout).unwrap().lines().last().expect("output dir"));
    let list = fs::read_to_string(dir.join("workloads.txt")).unwrap();
    let workloads = list
        .lines()
        .map(|l| {
            let mut words = l.split_whitespace().map(str::to_string);
            (words.next().unwrap(), words.collect())
        })
        .collect();
    (dir.join("layout"), workloads)
}

/// What a replay must reproduce of a tree: path, type, mode, owner, size, link target,
/// hardlink group, xattrs (content is synthetic where the trace holds no data, and
/// times are the replay's own).
fn structure(root: &Path) -> BTreeMap<PathBuf, String> {
    let tree = Tree::capture(root).unwrap_or_else(|e| panic!("capture {}: {e}", root.display()));
    tree.entries
        .into_iter()
        .map(|(p, n)| {
            let kind = match &n.kind {
                Kind::File { size, .. } => format!("file {size}"),
                Kind::Dir => "dir".into(),
                other => format!("{other:?}"),
            };
            let xattrs: Vec<&String> = n
                .xattrs
                .keys()
                .filter(|k| !k.starts_with("trusted.overlay.") && !k.starts_with("user.overlay."))
                .collect();
            (p, format!("{kind} {:o} {}:{} {:?} {xattrs:?}", n.mode, n.uid, n.gid, n.hardlink_group))
        })
        .collect()
}

/// Every shipped workload on one driver: run and record it in one container, replay the
/// trace in a second over the same image; both views and both change lists must agree.
fn shipped_workloads_replay_alike(driver: &str) {
    if !privileged(&format!("the real workloads on {driver}")) {
        return;
    }
    let (layout, workloads) = workloads_fixture();
    assert_eq!(workloads.len(), 6, "{workloads:?}");
    // btrfs on its own scratch filesystem; overlay and vfs in a temp dir on this disk.
    let scratch = (driver == "btrfs").then(|| ScratchFs::new(FsKind::Btrfs, 4 << 30).expect("btrfs scratch"));
    let s = match &scratch {
        Some(fs) => Strata::at(&fs.path().join("strata"), driver),
        None => Strata::new(driver),
    };
    let traces = tempfile::tempdir().unwrap();
    s.ok(&["image", "unpack", &format!("{}:workloads", layout.display()), "--name", "wl"]);
    for (name, command) in &workloads {
        let (ran, replayed) = (format!("{name}-run"), format!("{name}-replay"));
        s.ok(&["container", "create", &ran, "--image", "wl"]);
        s.ok(&["container", "create", &replayed, "--image", "wl"]);
        let trace = traces.path().join(format!("{name}.trace"));
        let mut args = vec!["container", "run", &ran, "--record", trace.to_str().unwrap(), "--"];
        args.extend(command.iter().map(String::as_str));
        let o = s.run(&args);
        assert!(o.status.success(), "{driver}: {name}: {command:?} failed: {}", String::from_utf8_lossy(&o.stderr));
        let ops = fs::read_to_string(&trace).unwrap().lines().count() - 1;
        assert!(ops > 10, "{driver}: {name}: only {ops} operations recorded");
        s.ok(&["container", "replay", &replayed, trace.to_str().unwrap()]);
        let changes_ran = s.ok(&["layer", "changes", &ran]);
        let changes_replayed = s.ok(&["layer", "changes", &replayed]);
        assert!(!changes_ran.trim().is_empty(), "{driver}: {name}: the run changed nothing");
        assert_eq!(changes_ran, changes_replayed, "{driver}: {name}: layer changes differ");
        let (a, b) = (Mounted::new(&s, &ran), Mounted::new(&s, &replayed));
        let (sa, sb) = (structure(&a.path), structure(&b.path));
        let differ: Vec<String> = sa
            .iter()
            .filter(|(p, v)| sb.get(*p) != Some(v))
            .map(|(p, v)| format!("{}: run {v}, replay {:?}", p.display(), sb.get(p)))
            .chain(sb.keys().filter(|p| !sa.contains_key(*p)).map(|p| format!("{}: only in the replay", p.display())))
            .take(10)
            .collect();
        assert!(differ.is_empty(), "{driver}: {name}: the views differ:\n{}", differ.join("\n"));
        drop((a, b));
        s.ok(&["container", "rm", &ran]);
        s.ok(&["container", "rm", &replayed]);
        eprintln!("{driver}: {name}: {ops} operations, {} changes, replayed alike", changes_ran.lines().count());
    }
}

#[test]
fn shipped_workloads_recorded_and_replayed_alike_on_overlay() {
    shipped_workloads_replay_alike("overlay");
}

#[test]
fn shipped_workloads_recorded_and_replayed_alike_on_vfs() {
    shipped_workloads_replay_alike("vfs");
}

#[test]
fn shipped_workloads_recorded_and_replayed_alike_on_btrfs() {
    shipped_workloads_replay_alike("btrfs");
}

/// Renders `html` in headless Chromium; the screenshot's (inked fraction, colours).
fn screenshot(html: &Path, png: &Path) -> (f64, usize) {
    let st = Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1200,1400"])
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", html.display()))
        .output()
        .expect("chromium (Debian package chromium) runs");
    assert!(png.exists(), "no screenshot: {}", String::from_utf8_lossy(&st.stderr));
    ink(png)
}

#[test]
fn bench_replay_and_run_name_their_workloads_in_output_json_and_report() {
    if !privileged("the workload bench test") || !installed(&["chromium"], "the workload report's rendering") {
        return;
    }
    let fixture = debian_fixture();
    let image = format!("{}:debian", fixture.join("layout").display());
    let dir = tempfile::tempdir().unwrap();
    // A trace of real work on the image: a lower file appended to (a copy-up on overlay),
    // a new tree written and synced, a file renamed.
    let s = Strata::new("overlay");
    s.ok(&["image", "unpack", &image, "--name", "debian"]);
    s.ok(&["container", "create", "rec", "--image", "debian"]);
    let trace = dir.path().join("app-write.trace");
    let script = "import os\nopen('/etc/debian_version','a').write('x\\n')\nos.makedirs('/srv/app')\n\
                  for i in range(50):\n    f=open('/srv/app/f%d'%i,'w'); f.write('y'*4096*i); f.flush(); os.fsync(f.fileno()); f.close()\n\
                  os.rename('/srv/app/f1','/srv/app/one')\n";
    s.ok(&["container", "run", "rec", "--record", trace.to_str().unwrap(), "--", "python3", "-c", script]);
    drop(s);

    let profile = dir.path().join("app-mix.toml");
    fs::write(
        &profile,
        "name = \"app-mix\"\nabout = \"a service that writes its data all day\"\n[per_day]\ncontainer_creates = 20\n\
         [held]\nimages = 2\ncontainers = 5\n[[workloads]]\ntrace = \"app-write.trace\"\nper_day = 200\n",
    )
    .unwrap();
    let (json, html) = (dir.path().join("run.json"), dir.path().join("report.html"));
    let out = strata_plain_ok(&[
        "bench",
        "--quick",
        "--containers",
        "2",
        "--drivers",
        "overlay,vfs",
        "--fs",
        "ext4",
        "--image",
        &image,
        "--replay",
        trace.to_str().unwrap(),
        "--run",
        "python3 -m compileall -q -f /usr/lib/python3.11/json",
        "--label",
        "compile-json",
        "--profile",
        profile.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
        "--report",
        html.to_str().unwrap(),
    ]);
    for name in ["workload app-write (trace ", "workload compile-json (run python3 -m compileall"] {
        assert!(out.contains(name), "the output lacks {name:?}:\n{out}");
    }
    assert!(
        out.contains("app-write on overlay/ext4: ") && out.contains("it copied up 1 file(s) of the image"),
        "{out}"
    );
    assert!(out.contains("for app-mix, 200 runs a day of app-write: overlay/ext4 costs "), "{out}");

    let run: Value = serde_json::from_slice(&fs::read(&json).unwrap()).unwrap();
    assert_eq!(run["workload"]["workloads"], serde_json::json!(["app-write", "compile-json"]));
    let results = run["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    for r in results {
        let target = format!("{}/{}", r["driver"].as_str().unwrap(), r["fs"].as_str().unwrap());
        let w = r["workloads"].as_array().unwrap();
        let names: Vec<&str> = w.iter().map(|w| w["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["app-write", "compile-json"], "{target}");
        for w in w {
            let name = w["name"].as_str().unwrap();
            assert!(w["error"].is_null(), "{target} {name}: {}", w["error"]);
            assert_eq!(w["wall"]["samples"].as_array().unwrap().len(), 2, "{target} {name}: a replay per container");
            assert!(w["wall"]["p50"].as_f64().unwrap() > 0.0, "{target} {name}");
            assert!(w["ops"].as_u64().unwrap() > 10, "{target} {name}");
            assert!(w["diff_bytes"].as_u64().unwrap() > 0, "{target} {name}");
            let syscalls: u64 =
                w["classes"].as_object().unwrap().values().map(|c| c["syscalls"].as_u64().unwrap()).sum();
            assert!(syscalls > 0, "{target} {name}");
            assert_eq!(w["run_seconds"].is_null(), name == "app-write", "{target} {name}: only --run runs for real");
        }
        // The append to /etc/debian_version is the one file of the image changed; on
        // overlay it was copied up, and its layer holds the new files.
        let app = &w[0];
        let copied: Vec<&Value> = app["copyups"].as_array().unwrap().iter().filter(|c| c["kind"] == "file").collect();
        assert_eq!(copied.len(), 1, "{target}: {copied:?}");
        assert_eq!(copied[0]["nodes"], 1, "{target}");
        assert!(app["classes"]["fsync"]["count"].as_u64().unwrap() >= 50, "{target}: {}", app["classes"]);
        if r["driver"] == "overlay" {
            assert!(app["layer_bytes"]["p50"].as_f64().unwrap() > 4096.0 * 1000.0, "{target}: {}", app["layer_bytes"]);
        }
    }
    let verdict = run["verdicts"].as_array().unwrap().iter().find(|v| v["profile"] == "app-mix").expect("app-mix");
    let reasons: Vec<&str> = verdict["reasons"].as_array().unwrap().iter().map(|r| r.as_str().unwrap()).collect();
    assert!(reasons.iter().any(|r| r.contains("200 runs a day of app-write")), "{reasons:?}");

    let page = fs::read_to_string(&html).unwrap();
    for text in ["Workload: app-write", "Workload: compile-json", "files copied up", "syscalls replayed"] {
        assert!(page.contains(text), "the report lacks {text:?}");
    }
    assert_eq!(page.matches("<svg").count(), 3 + 2, "the bench's three charts and one per workload");
    // The workloads' part of the page alone, rendered: their charts must be drawn.
    let start = page.find("<h3>Workloads</h3>").expect("the workloads section");
    let end = page[start..].find("<h2>").map(|e| start + e).unwrap_or(page.len());
    let part = dir.path().join("workloads.html");
    fs::write(&part, format!("<!DOCTYPE html><html><body>{}</body></html>", &page[start..end])).unwrap();
    let (inked, colours) = screenshot(&part, &dir.path().join("workloads.png"));
    assert!(inked > 0.03, "the workloads' part is nearly blank ({:.1}% inked)", inked * 100.0);
    assert!(colours > 8, "the workloads' charts' coloured bars are missing ({colours} colours)");
}
