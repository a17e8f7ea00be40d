//! `strata bench` and `strata probe` end to end: every phase for every driver in the
//! JSON with its raw samples, an HTML report that renders with its charts in headless
//! Chromium, regressions against a baseline, the peers beside strata (and a plain word
//! when one is missing), and probe's verdicts on ext4, on btrfs and without root.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::{Command, Output};

use driver_core::scratch::{FsKind, ScratchFs};
use serde_json::Value;
use strata_tests::{installed, privileged, strata_bin};

fn strata(args: &[&str]) -> Output {
    Command::new(strata_bin()).args(args).output().expect("run strata")
}

fn ok(args: &[&str]) -> String {
    let o = strata(args);
    assert!(o.status.success(), "strata {args:?} failed:\n{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&fs::read(p).unwrap()).unwrap()
}

/// The fraction of pixels that are not (nearly) white, and the number of distinct colours.
fn ink(png_path: &Path) -> (f64, usize) {
    let decoder = png::Decoder::new(fs::File::open(png_path).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    let pixels: Vec<&[u8]> = buf[..info.buffer_size()].chunks(channels).collect();
    let inked = pixels.iter().filter(|p| p[..3].iter().any(|&c| c < 230)).count();
    let colours: std::collections::BTreeSet<[u8; 3]> = pixels.iter().map(|p| [p[0], p[1], p[2]]).collect();
    (inked as f64 / pixels.len() as f64, colours.len())
}

#[test]
fn quick_bench_has_every_phase_renders_its_report_and_catches_regressions() {
    if !privileged("the bench test") || !installed(&["chromium"], "the report's rendering test") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (json, html) = (dir.path().join("run.json"), dir.path().join("report.html"));
    let out = ok(&[
        "bench",
        "--quick",
        "--containers",
        "2",
        "--fs",
        "ext4",
        "--json",
        json.to_str().unwrap(),
        "--report",
        html.to_str().unwrap(),
    ]);
    for name in ["driver/fs", "overlay/ext4", "vfs/ext4", "btrfs/btrfs", "recommended here:"] {
        assert!(out.contains(name), "the table lacks {name}:\n{out}");
    }

    let report = read_json(&json);
    assert_eq!(report["schema"], 1);
    assert!(!report["host"]["kernel"].as_str().unwrap().is_empty());
    let results = report["results"].as_array().unwrap();
    let names: Vec<String> = results.iter().map(|r| format!("{}/{}", r["driver"], r["fs"]).replace('"', "")).collect();
    assert_eq!(names, ["overlay/ext4", "vfs/ext4", "btrfs/btrfs"]);
    for r in results {
        let name = format!("{}/{}", r["driver"], r["fs"]);
        assert!(r["error"].is_null(), "{name}: {}", r["error"]);
        let layers = r["unpack_layers"].as_array().unwrap();
        assert_eq!(layers.len(), 4, "{name}: three workload layers and the copy-up layer");
        assert!(layers.iter().all(|l| l[1].as_f64().unwrap() > 0.0 && l[2].as_u64().unwrap() > 0), "{name}");
        assert!(r["unpack_seconds"].as_f64().unwrap() > 0.0 && r["unpack_cpu_seconds"].as_f64().unwrap() > 0.0);
        assert_eq!(r["create"]["samples"].as_array().unwrap().len(), 2, "{name}: one sample per container");
        let copyup = r["copyup"].as_object().unwrap();
        for op in [
            "write 4KiB",
            "write 1MiB",
            "write 16MiB",
            "chmod big file",
            "rename dir",
            "delete tree",
            "storm: 500 small appends",
        ] {
            let samples = copyup[op]["samples"].as_array().unwrap_or_else(|| panic!("{name}: no {op}"));
            assert_eq!(samples.len(), 2, "{name} {op}");
            assert!(samples.iter().all(|s| s.as_f64().unwrap() > 0.0), "{name} {op}");
        }
        for phase in ["after_unpack", "after_containers", "after_writes"] {
            assert!(r["disk"][phase]["bytes"].as_u64().unwrap() > 0, "{name} disk {phase}");
            assert!(r["disk"][phase]["inodes"].as_u64().unwrap() > 0, "{name} inodes {phase}");
        }
        let by_count: Vec<u64> =
            r["disk_by_containers"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
        assert_eq!(by_count.len(), 3, "{name}: disk with 0, 1 and 2 containers");
        assert!(r["diff_seconds"].as_f64().unwrap() > 0.0 && r["diff_bytes"].as_u64().unwrap() > 1 << 20, "{name}");
    }
    // vfs copies the image for every container; overlay and btrfs share it.
    let growth = |i: usize| {
        let v = results[i]["disk_by_containers"].as_array().unwrap();
        v[2].as_u64().unwrap() as f64 - v[0].as_u64().unwrap() as f64
    };
    // overlay stores each layer's own content once: about the image's size.
    let image = results[0]["disk"]["after_unpack"]["bytes"].as_u64().unwrap() as f64;
    assert!(growth(1) > image, "vfs: two containers cost at least one image more ({} vs {image})", growth(1));
    assert!(growth(0) < image / 4.0, "overlay: containers share the image ({})", growth(0));
    assert!(growth(2) < image / 4.0, "btrfs: containers share the image ({})", growth(2));

    // The same run as its own baseline: nothing regressed.
    let o = strata(&["bench", "--from", json.to_str().unwrap(), "--baseline", json.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no figure regressed"));
    // A baseline where one figure was twice as good: that figure, and only it, is named.
    let mut doctored = report.clone();
    let unpack = doctored["results"][0]["unpack_seconds"].as_f64().unwrap();
    doctored["results"][0]["unpack_seconds"] = (unpack / 2.0).into();
    let doctored_path = dir.path().join("doctored.json");
    fs::write(&doctored_path, serde_json::to_vec(&doctored).unwrap()).unwrap();
    let o = strata(&["bench", "--from", json.to_str().unwrap(), "--baseline", doctored_path.to_str().unwrap()]);
    assert!(!o.status.success(), "a 2x regression must fail the run");
    let stderr = String::from_utf8_lossy(&o.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains("1 figure(s) regressed") && errors[0].contains("overlay/ext4 unpack seconds"),
        "{stderr}"
    );

    // The report renders in headless Chromium, with its charts.
    let page = fs::read_to_string(&html).unwrap();
    assert_eq!(page.matches("<svg").count(), 3, "copy-up, disk and unpack charts");
    let png_path = dir.path().join("report.png");
    let st = Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1200,2400"])
        .arg(format!("--screenshot={}", png_path.display()))
        .arg(format!("file://{}", html.display()))
        .output()
        .expect("chromium (Debian package chromium) runs");
    assert!(png_path.exists(), "no screenshot: {}", String::from_utf8_lossy(&st.stderr));
    let (inked, colours) = ink(&png_path);
    assert!(inked > 0.03, "the page is nearly blank ({:.1}% inked)", inked * 100.0);
    assert!(colours > 20, "the charts' coloured series are missing ({colours} colours)");
}

/// A PATH where everything of /usr/bin and /usr/sbin is, except containerd and ctr.
fn path_without_containerd(dir: &Path) -> String {
    for from in ["/usr/bin", "/usr/sbin"] {
        for e in fs::read_dir(from).unwrap().flatten() {
            let name = e.file_name();
            let n = name.to_string_lossy();
            if n.starts_with("containerd") || n == "ctr" || dir.join(&name).exists() {
                continue;
            }
            symlink(e.path(), dir.join(&name)).unwrap();
        }
    }
    dir.display().to_string()
}

#[test]
fn peers_stand_beside_strata_or_are_named_missing() {
    if !privileged("the peers test") || !installed(&["containerd", "ctr", "podman", "unpigz"], "the peers test") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("peers.json");
    let args = [
        "bench",
        "--quick",
        "--drivers",
        "overlay",
        "--fs",
        "ext4",
        "--containers",
        "1",
        "--peers",
        "containerd,podman",
        "--json",
        json.to_str().unwrap(),
    ];
    let out = ok(&args);
    assert!(out.contains("containerd (overlayfs)") && out.contains("podman (overlay)"), "{out}");
    let peers = read_json(&json)["peers"].as_array().unwrap().clone();
    let tools: Vec<&str> = peers.iter().map(|p| p["tool"].as_str().unwrap()).collect();
    assert_eq!(tools, ["strata", "floor", "containerd", "podman"]);
    for p in &peers {
        assert!(p["error"].is_null(), "{}: {}", p["tool"], p["error"]);
        assert!(p["unpack"]["median"].as_f64().unwrap() > 0.0, "{}", p["tool"]);
        assert!(p["disk_bytes"].as_u64().unwrap() > 1 << 20, "{} stored the image", p["tool"]);
    }

    // Without containerd on PATH: it is named missing, podman still runs.
    let bin = dir.path().join("bin");
    fs::create_dir(&bin).unwrap();
    let path = path_without_containerd(&bin);
    let o = Command::new(strata_bin()).args(args).env("PATH", path).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("peer containerd will not run: containerd is not installed"), "{stderr}");
    assert!(stdout.contains("not run: containerd is not installed (Debian: apt-get install containerd)"), "{stdout}");
    let peers = read_json(&json)["peers"].as_array().unwrap().clone();
    assert!(peers.iter().any(|p| p["tool"] == "podman" && p["error"].is_null()), "podman ran: {peers:?}");
}

fn verdict<'a>(probe: &'a Value, driver: &str) -> &'a Value {
    probe["drivers"].as_array().unwrap().iter().find(|d| d["driver"] == driver).unwrap()
}

#[test]
fn probe_says_which_drivers_run_here_and_why_not() {
    if !privileged("the probe test") {
        return;
    }
    let ext4 = ScratchFs::new(FsKind::Ext4, 256 << 20).unwrap();
    let p: Value = serde_json::from_str(&ok(&["--root", ext4.path().to_str().unwrap(), "probe", "--json"])).unwrap();
    assert!(!p["kernel"].as_str().unwrap().is_empty());
    assert_eq!(p["root_fs"], "ext4");
    assert_eq!(p["d_type"], true);
    assert_eq!(p["reflink"], false, "ext4 has no reflink");
    assert_eq!(p["overlay"]["mounts"], true);
    assert_eq!(verdict(&p, "overlay")["can_run"], true);
    assert_eq!(verdict(&p, "btrfs")["can_run"], false);
    assert!(verdict(&p, "btrfs")["fix"].as_str().unwrap().contains("mkfs.btrfs"), "{p}");
    assert_eq!(verdict(&p, "vfs")["can_run"], true);

    let btrfs = ScratchFs::new(FsKind::Btrfs, 256 << 20).unwrap();
    let p: Value = serde_json::from_str(&ok(&["--root", btrfs.path().to_str().unwrap(), "probe", "--json"])).unwrap();
    assert_eq!(p["root_fs"], "btrfs");
    assert_eq!(p["reflink"], true, "btrfs shares extents");
    assert_eq!(verdict(&p, "btrfs")["can_run"], true);

    // Not root: overlay cannot mount, and probe says what to do.
    let tmp = tempfile::tempdir().unwrap();
    fs::set_permissions(tmp.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let o = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(strata_bin())
        .arg("--root")
        .arg(tmp.path())
        .args(["probe", "--json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let p: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(p["running_as_root"], false);
    let overlay = verdict(&p, "overlay");
    assert_eq!(overlay["can_run"], false, "{p}");
    assert!(overlay["fix"].as_str().unwrap().contains("run as root"), "{p}");
    // The plain-text form says the same, one line per driver.
    let text = ok(&["--root", ext4.path().to_str().unwrap(), "probe"]);
    assert!(text.lines().any(|l| l.starts_with("overlay  can run")), "{text}");
    assert!(text.lines().any(|l| l.starts_with("btrfs    cannot run") && l.contains("to fix:")), "{text}");
}
