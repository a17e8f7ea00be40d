//! Power cuts at any point of a store's life, on every driver and under every `--sync`
//! mode (strata_testkit::powercut: the scratch filesystem's disk logged through FUSE,
//! the disk a power loss leaves rebuilt from the log at each cut point).
//!
//! One scenario per driver and mode, recorded once: unpack a generated image, pull
//! another from a local docker-registry, create a container and write three files in
//! it (each fsynced), commit it as an image, diff it, remove the pulled image, prune.
//! Each cut point (spread over the steps, half of them next to a flush) gets the disk
//! mounted (journal recovery), the store opened, `strata check` and `check --repair`
//! run when the binary has them, and is verified:
//!
//! * every image listed is complete and intact: each of its layers' views equals the
//!   reference (a fresh unpack of the same image on the same driver and filesystem;
//!   for the committed image, its view right after the commit);
//! * under `chain` and `file`, every image whose command exited 0 before the cut (and
//!   that no `image rm` began to remove) is listed;
//! * nothing half-made is visible: every listed layer is a layer some command made,
//!   whole, and the only writable layer is the container;
//! * the container, once created, is listed and holds every write fsynced before the cut.
//!
//! Under `chain` and `file` a failure of any of these is a violation and fails the
//! test; under `none` they are the losses the harness must find (some, or it sees
//! nothing), and `check` must report every one it can see (an image or layer listed
//! but damaged, a record that does not read). Under every mode, after `check --repair`
//! nothing damaged is listed and `check` finds no problem left: the repair healed each
//! layer from its kept blob or removed what nothing could make again.
//!
//! Cut points: STRATA_POWERCUT_CUTS per driver (default 104: 39 under chain, 39 under
//! file, 26 under none), seeds fixed (STRATA_POWERCUT_SEED changes them).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use strata_scratch::FsKind;
use strata_testkit::powercut::{Cut, RecordedDisk, Recording};
use strata_testkit::tree::{CompareOptions, Tree};
use strata_tests::registry::DockerRegistry;
use strata_tests::Strata;

/// The scenario's steps, in order; each is marked `begin:<i>` and `end:<i>` in the log.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Step {
    Unpack,
    Pull,
    Create,
    Write(usize),
    Commit,
    Diff,
    RmPulled,
    Prune,
}

const STEPS: [Step; 10] = [
    Step::Unpack,
    Step::Pull,
    Step::Create,
    Step::Write(0),
    Step::Write(1),
    Step::Write(2),
    Step::Commit,
    Step::Diff,
    Step::RmPulled,
    Step::Prune,
];

fn step_index(step: Step) -> usize {
    STEPS.iter().position(|s| *s == step).expect("a step of the scenario")
}

const UNPACKED: &str = "unpacked";
const COMMITTED: &str = "committed";
const CONTAINER: &str = "c1";

fn written(k: usize) -> (String, Vec<u8>) {
    (format!("pc/w{k}"), format!("write {k} of the container, synced\n").repeat(100 * (k + 1)).into_bytes())
}

/// What the scenario needs from outside the disk: the images and the registry.
struct World {
    layout: tempfile::TempDir,
    // Kept running while the world lives.
    _registry: DockerRegistry,
    pulled: String,
}

fn world() -> World {
    use strata_cli::workload::{generate, gzip, WorkloadSize};
    let layout = tempfile::tempdir().expect("tempdir");
    let size = WorkloadSize { base_dirs: 8, base_files: 60, app_files: 40 };
    let blobs = |seed| generate(seed, size).into_iter().map(|l| gzip(&l.tar)).collect::<Vec<_>>();
    strata_image::image::write_layout(&layout.path().join("a"), "v1", &blobs(31)).expect("layout a");
    strata_image::image::write_layout(&layout.path().join("b"), "v1", &blobs(32)).expect("layout b");
    let registry = DockerRegistry::start(&[]);
    registry.skopeo_push(&format!("oci:{}:v1", layout.path().join("b").display()), "pc/b:v1", None);
    let pulled = format!("127.0.0.1:{}/pc/b:v1", registry.port);
    World { layout, _registry: registry, pulled }
}

fn unpack_args(w: &World) -> Vec<String> {
    vec!["image".into(), "unpack".into(), format!("{}:v1", w.layout.path().join("a").display())]
}

/// A layer's view, captured (mounted and released through strata).
fn capture(s: &Strata, id: &str) -> Result<Tree, String> {
    let o = s.run(&["layer", "mount", id]);
    if !o.status.success() {
        return Err(format!("layer mount {id}: {}", String::from_utf8_lossy(&o.stderr).trim()));
    }
    let path = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let tree = Tree::capture(Path::new(&path)).map_err(|e| format!("reading the view of {id}: {e}"));
    let _ = s.run(&["layer", "unmount", id]);
    tree
}

fn json(s: &Strata, args: &[&str]) -> Result<Vec<serde_json::Value>, String> {
    let o = s.run(args);
    if !o.status.success() {
        return Err(format!("{}: {}", args.join(" "), String::from_utf8_lossy(&o.stderr).trim()));
    }
    serde_json::from_slice::<Vec<serde_json::Value>>(&o.stdout).map_err(|e| format!("{}: {e}", args.join(" ")))
}

/// Every committed layer's view in a store, by ID.
fn layer_views(s: &Strata) -> BTreeMap<String, Tree> {
    let layers = json(s, &["layer", "ls", "--json"]).expect("layer ls");
    layers
        .iter()
        .filter(|l| l["writable"] != true)
        .map(|l| {
            let id = l["id"].as_str().expect("id").to_string();
            let t = capture(s, &id).expect("reference view");
            (id, t)
        })
        .collect()
}

/// Runs the scenario on the recorded disk; returns the views each layer must have
/// (from a reference unpack, and the committed image's right after its commit).
fn record(driver: &str, kind: FsKind, mode: &str, w: &World) -> (Recording, BTreeMap<String, Tree>, Duration) {
    let started = Instant::now();
    // Under `none` the journal commits every second: records reach the disk while the
    // data the kernel has not written back yet does not (what a host that lost power
    // some seconds after an unpack has).
    let disk = RecordedDisk::new(kind, 160 << 20, "commit=1").expect("the recorded disk");
    let s = Strata::at(&disk.path().join("strata"), driver);
    let sync = ["--sync", mode];
    let mut refs = BTreeMap::new();
    for (i, step) in STEPS.iter().enumerate() {
        disk.mark(format!("begin:{i}"));
        match step {
            Step::Unpack => {
                let mut args = unpack_args(w);
                args.extend(["--name".into(), UNPACKED.into()]);
                args.extend(sync.iter().map(|a| a.to_string()));
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                s.ok(&args);
            }
            Step::Pull => {
                s.ok(&["image", "pull", "--insecure", &w.pulled, sync[0], sync[1]]);
            }
            Step::Create => {
                s.ok(&["container", "create", CONTAINER, "--image", UNPACKED]);
            }
            Step::Write(k) => {
                let view = s.ok(&["layer", "mount", CONTAINER]).trim().to_string();
                let (path, data) = written(*k);
                let path = Path::new(&view).join(path);
                std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir in the container");
                let mut f = std::fs::File::create(&path).expect("create in the container");
                std::io::Write::write_all(&mut f, &data).expect("write in the container");
                f.sync_all().expect("fsync in the container");
                std::fs::File::open(path.parent().expect("parent")).and_then(|d| d.sync_all()).expect("fsync dir");
                disk.mark(format!("end:{i}"));
                s.ok(&["layer", "unmount", CONTAINER]);
                continue;
            }
            Step::Commit => {
                s.ok(&["container", "commit", CONTAINER, "--image", COMMITTED, sync[0], sync[1]]);
            }
            Step::Diff => {
                s.ok(&["layer", "diff", CONTAINER, "-o", &disk.path().join("c1.tar").to_string_lossy()]);
            }
            Step::RmPulled => {
                s.ok(&["image", "rm", &w.pulled]);
            }
            Step::Prune => {
                s.ok(&["image", "prune"]);
            }
        }
        disk.mark(format!("end:{i}"));
        eprintln!("{driver} --sync {mode}: {step:?} done at {:.1}s", started.elapsed().as_secs_f64());
        if *step == Step::Commit {
            // The committed image's own view, as the commit left it.
            let images = json(&s, &["image", "ls", "--json"]).expect("image ls");
            let top = images.iter().find(|i| i["name"] == COMMITTED).and_then(|i| i["top"].as_str()).expect("top");
            refs.insert(top.to_string(), capture(&s, top).expect("the committed view"));
        }
        if mode == "none" && matches!(step, Step::Unpack | Step::Pull | Step::Commit) {
            std::thread::sleep(Duration::from_millis(1300));
        }
    }
    drop(s);
    let rec = disk.finish().expect("the recording");
    // The reference: the same images unpacked and pulled on a fresh filesystem.
    let scratch = strata_scratch::ScratchFs::new(kind, 160 << 20).expect("reference scratch");
    let r = Strata::at(&scratch.path().join("strata"), driver);
    let args = unpack_args(w);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    r.ok(&args);
    r.ok(&["image", "pull", "--insecure", &w.pulled]);
    refs.extend(layer_views(&r));
    (rec, refs, started.elapsed())
}

/// What one cut point showed.
#[derive(Default, Debug)]
struct Seen {
    /// What is wrong: a violation under chain and file, a loss under none.
    problems: Vec<String>,
    /// Of those, what is visible in the store (listed but damaged, unreadable): what
    /// `check` must report.
    visible: Vec<String>,
    /// `strata check` before the repair: (exit code, output), when the binary has it.
    check: Option<(i32, String)>,
    /// What was still wrong after `check --repair`.
    after_repair: Vec<String>,
}

fn verify(s: &Strata, cut: &Cut, mode: &str, w: &World, refs: &BTreeMap<String, Tree>) -> (Vec<String>, Vec<String>) {
    let done = |step| cut.marks.contains(&format!("end:{}", step_index(step)));
    let begun = |step| cut.marks.contains(&format!("begin:{}", step_index(step)));
    let (mut problems, mut visible) = (Vec::new(), Vec::new());
    let opts = CompareOptions::default();
    let images = match json(s, &["image", "ls", "--json"]) {
        Ok(i) => i,
        Err(e) => {
            problems.push(format!("the store does not list its images: {e}"));
            visible.push(e);
            return (problems, visible);
        }
    };
    let listed: BTreeMap<String, String> = images
        .iter()
        .map(|i| (i["name"].as_str().unwrap_or("").to_string(), i["top"].as_str().unwrap_or("").to_string()))
        .collect();
    let mut allowed = BTreeSet::new();
    let mut required = BTreeSet::new();
    for (step, name) in [(Step::Unpack, UNPACKED), (Step::Pull, w.pulled.as_str()), (Step::Commit, COMMITTED)] {
        if begun(step) {
            allowed.insert(name.to_string());
        }
        let removed = step == Step::Pull && begun(Step::RmPulled);
        if done(step) && !removed {
            required.insert(name.to_string());
        }
    }
    for name in &required {
        if !listed.contains_key(name) {
            problems.push(format!("image {name}: its command exited 0 under --sync {mode}, and it is gone"));
        }
    }
    let mut compared = BTreeSet::new();
    for (name, top) in &listed {
        // `check --repair` names an image whose record it rebuilt `recovered-…`.
        if !allowed.contains(name) && !name.starts_with("recovered-") {
            problems.push(format!("image {name} is listed, and no command made it"));
            visible.push(name.clone());
            continue;
        }
        let diff = match (refs.get(top), capture(s, top)) {
            (Some(want), Ok(got)) => want.differences(&got, &opts),
            (None, _) => vec![format!("its top layer {top} is not one a command made")],
            (_, Err(e)) => vec![e],
        };
        compared.insert(top.clone());
        if !diff.is_empty() {
            let first: Vec<&String> = diff.iter().take(3).collect();
            problems.push(format!("image {name} is listed but not intact ({} differences): {first:?}", diff.len()));
            visible.push(name.clone());
        }
    }
    let layers = match json(s, &["layer", "ls", "--json"]) {
        Ok(l) => l,
        Err(e) => {
            problems.push(format!("the store does not list its layers: {e}"));
            visible.push(e);
            return (problems, visible);
        }
    };
    let mut container = false;
    for l in &layers {
        let id = l["id"].as_str().unwrap_or("").to_string();
        if l["writable"] == true {
            if id == CONTAINER {
                container = true;
            } else {
                problems.push(format!("writable layer {id} is listed, and no command made it"));
                visible.push(id);
            }
            continue;
        }
        if compared.contains(&id) {
            continue;
        }
        let diff = match (refs.get(&id), capture(s, &id)) {
            (Some(want), Ok(got)) => want.differences(&got, &opts),
            (None, _) => vec!["no command made a layer of this ID whole".into()],
            (_, Err(e)) => vec![e],
        };
        if !diff.is_empty() {
            let first: Vec<&String> = diff.iter().take(3).collect();
            problems.push(format!("layer {id} is listed but half-made ({} differences): {first:?}", diff.len()));
            visible.push(id);
        }
    }
    if done(Step::Create) && !container {
        problems.push(format!("container {CONTAINER}: created before the cut, and it is gone"));
    }
    if container {
        let view = s.run(&["layer", "mount", CONTAINER]);
        let path = String::from_utf8_lossy(&view.stdout).trim().to_string();
        for k in 0..3 {
            if !done(Step::Write(k)) {
                continue;
            }
            let (file, data) = written(k);
            match std::fs::read(Path::new(&path).join(&file)) {
                Ok(got) if got == data => {}
                Ok(got) => {
                    problems.push(format!(
                        "container {CONTAINER}: {file} has {} bytes, synced {}",
                        got.len(),
                        data.len()
                    ));
                    visible.push(format!("{CONTAINER}:{file}"));
                }
                Err(e) => problems.push(format!("container {CONTAINER}: {file}, synced before the cut: {e}")),
            }
        }
        let _ = s.run(&["layer", "unmount", CONTAINER]);
    }
    (problems, visible)
}

/// Whether the binary has `strata check` (issue 27 item 1, another branch).
fn has_check() -> bool {
    std::process::Command::new(strata_tests::strata_bin())
        .args(["check", "--help"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn at_cut(root: &Path, driver: &str, cut: &Cut, mode: &str, w: &World, refs: &BTreeMap<String, Tree>) -> Seen {
    let s = Strata::at(&root.join("strata"), driver);
    let mut seen = Seen::default();
    if !root.join("strata").exists() {
        // Cut before the store's first record reached the disk: nothing to open.
        let (problems, _) = verify_empty(cut, mode);
        seen.problems = problems;
        return seen;
    }
    (seen.problems, seen.visible) = verify(&s, cut, mode, w, refs);
    if has_check() {
        let o = s.run(&["check"]);
        let out = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        let code = o.status.code().unwrap_or(-1);
        seen.check = Some((code, out));
        if code == 0 && seen.problems.is_empty() {
            // Whole, and check agrees: nothing for the repair to do.
            return seen;
        }
        let o = s.run(&["check", "--repair"]);
        let repair_said = String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| l.starts_with("repaired") || l.starts_with("still"))
            .map(|l| l.chars().take(400).collect::<String>())
            .collect::<Vec<_>>()
            .join(" | ");
        let (after, visible_after) = verify(&s, cut, mode, w, refs);
        // After the repair nothing damaged may be listed, under any mode.
        seen.after_repair = after
            .into_iter()
            .filter(|p| visible_after.iter().any(|v| p.contains(v.as_str())))
            .map(|p| format!("{p} (check --repair said: {repair_said})"))
            .collect();
        let o = s.run(&["check"]);
        if !o.status.success() {
            seen.after_repair.push(format!(
                "check after check --repair still fails: {} (check --repair said: {repair_said})",
                String::from_utf8_lossy(&o.stdout).lines().take(3).collect::<Vec<_>>().join(" | ")
            ));
        }
    }
    seen
}

/// A cut before the store existed on disk: only commands that exited 0 matter.
fn verify_empty(cut: &Cut, mode: &str) -> (Vec<String>, Vec<String>) {
    let done: Vec<&String> = cut.marks.iter().filter(|m| m.starts_with("end:")).collect();
    if done.is_empty() {
        (Vec::new(), Vec::new())
    } else {
        (vec![format!("the whole store is gone after {} steps exited 0 under --sync {mode}", done.len())], Vec::new())
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Cut points spread over the scenario's steps (from each step's begin mark to the
/// next one's), `n` in all.
fn spread(rec: &Recording, n: usize, rng: &mut fastrand::Rng) -> Vec<usize> {
    let starts: Vec<usize> =
        (0..STEPS.len()).map(|i| rec.mark_index(&format!("begin:{i}")).expect("begin mark")).collect();
    let mut cuts = Vec::new();
    for (i, from) in starts.iter().enumerate() {
        let to = starts.get(i + 1).copied().unwrap_or(rec.events.len() + 1);
        let share = n / STEPS.len() + usize::from(i < n % STEPS.len());
        cuts.extend(rec.cut_points(*from, to, share, rng));
    }
    cuts
}

fn powercut(driver: &str, kind: FsKind) {
    if !strata_scratch::privileged("power-cut harness (FUSE, loop devices, mounts)")
        || !strata_tests::installed(&["docker-registry", "skopeo"], "power-cut harness (pull)")
    {
        return;
    }
    let total = env_usize("STRATA_POWERCUT_CUTS", 104);
    let seed = env_usize("STRATA_POWERCUT_SEED", 27) as u64;
    let t = Instant::now();
    let w = world();
    eprintln!("{driver}: images and registry ready in {:.1}s", t.elapsed().as_secs_f64());
    let check = has_check();
    let mut report = Vec::new();
    let mut failures = Vec::new();
    for (mode, share) in [("chain", 3), ("file", 3), ("none", 2)] {
        let n = total * share / 8;
        let (rec, refs, recorded) = record(driver, kind, mode, &w);
        let mut rng = fastrand::Rng::with_seed(seed ^ mode.len() as u64);
        let cuts = spread(&rec, n, &mut rng);
        let started = Instant::now();
        let mut seen_all = Vec::new();
        let mut checking = Duration::ZERO;
        rec.replay(&cuts, seed, "", |cut, root| {
            let t = Instant::now();
            seen_all.push((cut.clone(), at_cut(root, driver, cut, mode, &w, &refs)));
            checking += t.elapsed();
        })
        .unwrap_or_else(|e| panic!("{driver} --sync {mode}: {e}"));
        let losses = seen_all.iter().filter(|(_, s)| !s.problems.is_empty()).count();
        let visible = seen_all.iter().filter(|(_, s)| !s.visible.is_empty()).count();
        report.push(format!(
            "{driver}/{} --sync {mode}: {} cut points over {} events ({} flushes, {} MiB written) in {:.1}s \
             ({:.1}s of it verifying; recording {:.1}s); {losses} with a loss, {visible} with damage in sight",
            kind.name(),
            seen_all.len(),
            rec.events.len(),
            rec.flushes(),
            rec.bytes_written() >> 20,
            started.elapsed().as_secs_f64(),
            checking.as_secs_f64(),
            recorded.as_secs_f64(),
        ));
        let mut unhealed = 0;
        for (cut, seen) in &seen_all {
            let at = format!("{driver} --sync {mode} cut {} (after {:?})", cut.at, cut.marks.last());
            if mode != "none" {
                for p in &seen.problems {
                    failures.push(format!("{at}: {p}"));
                }
            }
            if let Some((code, out)) = &seen.check {
                // Every loss in sight is reported, under every mode.
                if !seen.visible.is_empty() && *code == 0 {
                    failures.push(format!("{at}: check exits 0, while the harness sees {:?}", seen.visible));
                }
                // Under none, check may see more than the harness looks at (a blob).
                if mode != "none" && seen.problems.is_empty() && *code != 0 {
                    failures.push(format!("{at}: check fails on a store the harness finds whole: {out}"));
                }
            }
            // What `check --repair` left damaged (or `check` still failing after it): a
            // failure under every mode. Under none the repair has only what reached the
            // disk to work from: it heals a layer from its kept blob, or removes what
            // nothing can make again, so that no image listed is damaged.
            for p in &seen.after_repair {
                failures.push(format!("{at}: after check --repair: {p}"));
            }
            if !seen.after_repair.is_empty() {
                unhealed += 1;
            }
        }
        if mode == "none" {
            let repaired = seen_all.iter().filter(|(_, s)| s.check.as_ref().is_some_and(|(c, _)| *c != 0)).count();
            report.push(format!(
                "  {driver} --sync none: check found damage at {repaired} cut point(s); check --repair left {unhealed} unhealed"
            ));
        }
        if mode == "none" {
            // A sample of what a power cut does to a store that syncs nothing.
            for (cut, seen) in seen_all.iter().filter(|(_, s)| !s.problems.is_empty()).take(3) {
                report.push(format!(
                    "  e.g. cut {} (after {:?}): {}",
                    cut.at,
                    cut.marks.last(),
                    seen.problems.join("; ")
                ));
            }
            assert!(
                losses > 0,
                "{driver}: no loss found under --sync none in {} cut points: the harness sees nothing",
                seen_all.len()
            );
        }
        assert!(seen_all.len() >= n * 9 / 10, "{driver} --sync {mode}: only {} cut points of {n}", seen_all.len());
    }
    for line in &report {
        eprintln!("{line}");
    }
    if !check {
        eprintln!("{driver}: this strata has no `check` command: the harness verified the store directly");
    }
    assert!(failures.is_empty(), "{} violations:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn powercut_vfs() {
    powercut("vfs", FsKind::Ext4);
}

#[test]
fn powercut_overlay() {
    powercut("overlay", FsKind::Ext4);
}

#[test]
fn powercut_btrfs() {
    powercut("btrfs", FsKind::Btrfs);
}
