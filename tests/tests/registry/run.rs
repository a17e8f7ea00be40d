//! Running a case of the corpus: `strata image pull` against its servers, measured,
//! and the store and what lies beside it compared before and after.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use strata_image::registry::Limits;
use strata_tests::registry::{sha256, Server, TestImage};
use strata_tests::Strata;

use crate::corpus::{default_other, h, Case, Env, Expect};
use crate::{MAX_RSS_KIB, MAX_TIME, REPO};

/// A `strata` run with its peak RSS and wall time.
pub(crate) struct Run {
    pub(crate) ok: bool,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
    pub(crate) rss_kib: i64,
    pub(crate) took: Duration,
}

/// A pull that hangs fails the case (it is killed at MAX_TIME), rather than the whole
/// run. The peak RSS is strata's own (see strata_tests::run_measured).
pub(crate) fn run_measured(cmd: Command) -> Run {
    let m = strata_tests::run_measured(cmd, MAX_TIME);
    Run {
        ok: m.code == Some(0),
        stdout: m.stdout,
        stderr: m.stderr,
        rss_kib: (m.peak_rss >> 10) as i64,
        took: m.elapsed,
    }
}

/// Every file under `dir` with its size and content hash (for the blob cache and what
/// lies beside the store).
pub(crate) fn files(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
            if p.is_dir() && !p.is_symlink() {
                out.insert(rel + "/", String::new());
                stack.push(p);
            } else {
                out.insert(rel, std::fs::read(&p).map(|d| sha256(&d)).unwrap_or_default());
            }
        }
    }
    out
}

/// The store as a user sees it, and its blob cache.
pub(crate) fn store_state(s: &Strata) -> (String, String, BTreeMap<String, String>) {
    let (layers, images) = s.state();
    (layers, images, files(&s.root.join("blobs")))
}

pub(crate) fn pull(s: &Strata, reference: &str, args: &[&str]) -> Run {
    let mut cmd = s.command(&["image", "pull", "--insecure", reference]);
    cmd.args(args)
        .env("STRATA_PULL_LOW_SPEED_LIMIT", "1024")
        .env("STRATA_PULL_LOW_SPEED_TIME", "3")
        .env("STRATA_PULL_TIMEOUT", "60");
    run_measured(cmd)
}

/// The two servers of a case, answering, and the reference to pull.
pub(crate) struct Serving {
    pub(crate) registry: Server,
    pub(crate) other_host: Server,
    pub(crate) env: Arc<OnceLock<Env>>,
    pub(crate) reference: String,
}

impl Serving {
    pub(crate) fn start(case: &Case, base: &TestImage) -> Serving {
        let img = match case.image {
            Some(f) => f(base),
            None => base.clone(),
        };
        let env: Arc<OnceLock<Env>> = Arc::new(OnceLock::new());
        let (e1, main) = (env.clone(), case.main.clone());
        let registry = Server::start(Arc::new(move |r| main(e1.get().expect("env"), r)));
        let (e2, other) = (env.clone(), case.other.clone().unwrap_or_else(|| h(default_other)));
        let other_host = Server::start(Arc::new(move |r| other(e2.get().expect("env"), r)));
        let _ = env.set(Env { img, port: registry.port, other: other_host.port });
        let e = env.get().unwrap();
        let reference = match case.reference {
            Some(f) => f(e),
            None => format!("127.0.0.1:{}/{REPO}:v1", e.port),
        };
        Serving { registry, other_host, env, reference }
    }

    pub(crate) fn env(&self) -> &Env {
        self.env.get().unwrap()
    }

    /// No request left `/v2/<repository>/` or held a traversal; then the case's own
    /// checks on what the servers saw.
    pub(crate) fn check_requests(&self, case: &Case, what: &str) {
        let (main_seen, other_seen) = (self.registry.requests(), self.other_host.requests());
        for r in &main_seen {
            assert!(
                r.path == "/v2/" || r.path.starts_with(&format!("/v2/{REPO}/")),
                "{what}: a request outside /v2/{REPO}/: {}",
                r.path
            );
            assert!(!r.path.contains("..") && !r.path.to_lowercase().contains("%2e"), "{what}: {}", r.path);
        }
        if let Some(check) = case.check {
            check(self.env(), &main_seen, &other_seen);
        }
    }
}

/// The limits `pull` (below) sets through the environment, with a case's flags.
pub(crate) fn limits(args: &[&str]) -> Limits {
    let flag = |name: &str, default: u64| {
        args.iter().position(|a| *a == name).map_or(default, |i| args[i + 1].parse().expect("a number"))
    };
    Limits {
        timeout: Duration::from_secs(flag("--timeout", 60)),
        low_speed_limit: flag("--low-speed-limit", 1024),
        low_speed_time: Duration::from_secs(flag("--low-speed-time", 3)),
    }
}

pub(crate) fn run_case(case: &Case, s: &Strata, base: &TestImage, outside: &Path, driver: &str) {
    let serving = Serving::start(case, base);
    let (env, reference) = (serving.env(), serving.reference.clone());

    let what = format!("{driver}: {}", case.name);
    let before = store_state(s);
    let outside_before = files(outside);
    let run = pull(s, &reference, case.args);
    let errors: Vec<&str> = run.stderr.lines().filter(|l| l.starts_with("error: ")).collect();
    assert!(run.rss_kib < MAX_RSS_KIB, "{what}: peak RSS {} MiB", run.rss_kib >> 10);
    assert!(run.took < MAX_TIME, "{what}: took {:?}", run.took);
    assert!(!run.stderr.contains("panicked"), "{what}: a panic: {}", run.stderr);
    match case.expect {
        Expect::Succeeds => {
            assert!(run.ok, "{what}: should succeed: {}", run.stderr);
            assert!(errors.is_empty(), "{what}: {}", run.stderr);
            let top = run.stdout.trim();
            assert!(top.starts_with("sha256:"), "{what}: prints the top layer: {}", run.stdout);
            let images = s.ok(&["image", "ls", "--json"]);
            assert!(images.contains(&reference) && images.contains(top), "{what}: recorded: {images}");
            let cached = files(&s.root.join("blobs"));
            for d in env.img.layer_digests.iter().chain([&env.img.config_digest]) {
                let rel = format!("blobs/sha256/{}", d.trim_start_matches("sha256:"));
                assert!(cached.contains_key(&rel), "{what}: {d} is in the blob cache after the pull");
            }
            assert!(!cached.keys().any(|k| k.starts_with(".pull-")), "{what}: staging left: {cached:?}");
        }
        Expect::Refused(_) | Expect::UnpackRefused(_) => {
            assert!(!run.ok, "{what}: should be refused, but the pull succeeded");
            assert_eq!(errors.len(), 1, "{what}: one error line expected: {}", run.stderr);
            let line = errors[0].to_lowercase();
            let words = match case.expect {
                Expect::UnpackRefused(words) => words,
                _ => case.says,
            };
            assert!(
                words.is_empty() || words.iter().any(|w| line.contains(w)),
                "{what}: the error should say one of {words:?}: {line}"
            );
            assert!(line.len() < 1200, "{what}: the error line is {} bytes", line.len());
            assert_eq!(store_state(s), before, "{what}: the store changed after a refusal");
        }
    }
    assert_eq!(files(outside), outside_before, "{what}: something beside the store changed");
    serving.check_requests(case, &what);
}
