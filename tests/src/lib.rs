//! Shared helpers for the end-to-end tests of the `strata` binary.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;

pub mod changes;
pub mod junit;
pub mod registry;

pub use strata_scratch::privileged;

/// The `strata` binary of the same build profile as the running test, built on first
/// use: the binary lives in another package, so `cargo test --workspace` on a fresh
/// clone would otherwise run these tests before anything built it. `cargo build` is
/// cheap when the binary is up to date, and it also rebuilds a stale one.
///
/// The build must resolve the features `cargo test --workspace` resolved, or cargo
/// compiles serde, flate2 and everything above them a second time (minutes in a fresh
/// target directory): so it selects the whole workspace (which turns on
/// strata-archive's default), and the dependencies' features that only dev-dependencies
/// turned on (serde's alloc, flate2's defaults, either's std) are turned on in
/// Cargo.toml for every build.
pub fn strata_bin() -> PathBuf {
    // STRATA_BIN runs the tests against another build (the code before a fix, to see
    // its regression test fail there).
    if let Some(bin) = std::env::var_os("STRATA_BIN") {
        return PathBuf::from(bin);
    }
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            // target/<profile>/deps/<test>-<hash> → target/<profile>/strata. Under
            // `cargo test --workspace` the binary is built already, with these features
            // (cli/tests/binary.rs needs it), so this build compiles nothing.
            let exe = std::env::current_exe().expect("current_exe");
            let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>");
            let target_dir = profile_dir.parent().expect("target dir");
            let profile = profile_dir.file_name().and_then(|n| n.to_str()).expect("profile name");
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
            let mut build = Command::new(cargo);
            // What cargo sets for a running test, not for the build that made it: ring's
            // build script reruns when CARGO_PKG_* or OUT_DIR change, and with it ring,
            // rustls, strata-image and the binary were compiled again here.
            const PER_TEST: [&str; 6] = [
                "OUT_DIR",
                "CARGO_MANIFEST_DIR",
                "CARGO_MANIFEST_PATH",
                "CARGO_CRATE_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
            ];
            for (var, _) in std::env::vars_os() {
                let v = var.to_string_lossy();
                if v.starts_with("CARGO_PKG_") || v.starts_with("CARGO_BIN_EXE_") || PER_TEST.contains(&v.as_ref()) {
                    build.env_remove(&var);
                }
            }
            build.args(["build", "--quiet", "--workspace", "--bin", "strata"]);
            build.arg("--manifest-path").arg(&manifest).arg("--target-dir").arg(target_dir);
            build.args(["--profile", if profile == "debug" { "dev" } else { profile }]);
            let status = build.status().expect("run cargo build for the strata binary");
            assert!(status.success(), "building the strata binary ({profile}) failed");
            let bin = profile_dir.join("strata");
            assert!(bin.exists(), "{} is missing after cargo build", bin.display());
            bin
        })
        .clone()
}

/// `strata --root ROOT --driver DRIVER ...` with its own temporary root.
pub struct Strata {
    pub root: PathBuf,
    pub driver: String,
    _tmp: Option<tempfile::TempDir>,
}

impl Strata {
    pub fn new(driver: &str) -> Strata {
        let tmp = tempfile::tempdir().expect("tempdir");
        Strata { root: tmp.path().to_path_buf(), driver: driver.to_string(), _tmp: Some(tmp) }
    }

    /// A strata on a given root (a scratch filesystem, say).
    pub fn at(root: &Path, driver: &str) -> Strata {
        Strata { root: root.to_path_buf(), driver: driver.to_string(), _tmp: None }
    }

    /// The command line `strata --root ROOT --driver DRIVER ARGS`, to spawn.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(strata_bin());
        c.arg("--root").arg(&self.root).arg("--driver").arg(&self.driver).args(args);
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run strata")
    }

    /// Runs a command that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(o.status.success(), "strata {args:?} failed: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).expect("utf-8 stdout")
    }

    /// Runs a command that must fail as a command that ran and failed (exit 1, or 4 to
    /// 7 by what failed: docs/cli.md) with exactly one `error:` line; returns the line.
    /// clap's usage errors exit 2, a rolled-back Ctrl-C 130: tests of those, and of a
    /// given code, check the code themselves ([`Strata::fails_with`]).
    pub fn fails(&self, args: &[&str]) -> String {
        let o = self.run(args);
        let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
        let code = o.status.code();
        assert!(
            matches!(code, Some(1 | 4..=7)),
            "strata {args:?} should have failed (exit 1, 4-7), not {code:?}: {stderr}"
        );
        one_error_line(&stderr)
    }

    /// Runs a command that must fail with exit code `code` (docs/cli.md) and exactly one
    /// `error:` line; returns the line.
    pub fn fails_with(&self, code: i32, args: &[&str]) -> String {
        let o = self.run(args);
        let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(o.status.code(), Some(code), "strata {args:?} should have failed with exit code {code}: {stderr}");
        one_error_line(&stderr)
    }

    /// Runs a command that must fail with one of `codes` (where which step catches a
    /// fault decides the kind) and exactly one `error:` line; returns the line.
    pub fn fails_with_any(&self, codes: &[i32], args: &[&str]) -> String {
        let o = self.run(args);
        let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
        let code = o.status.code();
        assert!(
            code.is_some_and(|c| codes.contains(&c)),
            "strata {args:?} should have failed with exit code {codes:?}, not {code:?}: {stderr}"
        );
        one_error_line(&stderr)
    }

    /// What the store lists: layers and images (JSON), to check nothing changed.
    pub fn state(&self) -> (String, String) {
        (self.ok(&["layer", "ls", "--json"]), self.ok(&["image", "ls", "--json"]))
    }
}

impl Drop for Strata {
    fn drop(&mut self) {
        // Whatever a failed test left mounted under this root goes.
        for m in strata_testkit::conformance::mounts_under(&self.root) {
            let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// Builds (or finds in the cache) the Debian image of tests/fixtures/debian-image.sh.
pub fn debian_fixture() -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/debian-image.sh");
    let out = Command::new("bash").arg(&script).output().expect("run debian-image.sh");
    assert!(out.status.success(), "debian-image.sh failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let dir = String::from_utf8(out.stdout).expect("utf-8").lines().last().expect("output dir").to_string();
    PathBuf::from(dir)
}

/// Whether every one of `programs` is installed; when one is not, the test skips with
/// the reason — except under STRATA_REQUIRE_PRIVILEGED=1 (CI), where it fails.
pub fn installed(programs: &[&str], reason: &str) -> bool {
    let missing: Vec<&str> =
        programs.iter().copied().filter(|p| Command::new(p).arg("--version").output().is_err()).collect();
    let missing = (!missing.is_empty()).then(|| format!("{} installed", missing.join(", ")));
    strata_scratch::require(reason, missing.as_deref())
}

/// The `peak-rss` helper of this crate, built beside the test binaries (cargo builds a
/// package's binaries before its integration tests).
fn peak_rss_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test>-<hash> → target/<profile>/peak-rss
    let bin = exe.parent().and_then(Path::parent).expect("target/<profile>").join("peak-rss");
    assert!(bin.exists(), "{} is missing: build the strata-tests package", bin.display());
    bin
}

/// What [`run_measured`] saw of one run.
#[derive(Debug)]
pub struct Measured {
    /// Exit code, or `None` when killed by a signal (the deadline, say).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// The program's own peak resident set (bytes), from `wait4`'s rusage in a small
    /// parent (see src/bin/peak-rss.rs); 0 when it was killed at the deadline.
    pub peak_rss: u64,
    pub elapsed: std::time::Duration,
    pub timed_out: bool,
}

/// Runs `cmd` to its end or its deadline (then SIGKILL), and measures its peak memory
/// as the kernel accounts it (`ru_maxrss` of `wait4`), not as the program reports.
/// The measure is taken by a small parent, `peak-rss`, that runs the program: a
/// process forked from this test would inherit the test's own high-water mark.
pub fn run_measured(cmd: Command, deadline: std::time::Duration) -> Measured {
    use std::io::Read;
    let start = std::time::Instant::now();
    let out_file = tempfile::NamedTempFile::new().expect("temp file for the peak RSS");
    let mut measured = Command::new(peak_rss_bin());
    measured.arg(out_file.path()).arg(cmd.get_program()).args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => measured.env(k, v),
            None => measured.env_remove(k),
        };
    }
    if let Some(d) = cmd.get_current_dir() {
        measured.current_dir(d);
    }
    let mut child =
        measured.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn peak-rss");
    let pipe = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = r.read_to_end(&mut s);
            String::from_utf8_lossy(&s).into_owned()
        })
    };
    let out = pipe(Box::new(child.stdout.take().expect("stdout")));
    let err = pipe(Box::new(child.stderr.take().expect("stderr")));
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for peak-rss") {
            break status;
        }
        if !timed_out && start.elapsed() > deadline {
            timed_out = true;
            let _ = child.kill(); // and the program with it (PR_SET_PDEATHSIG)
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    let elapsed = start.elapsed();
    let code = status.code();
    Measured {
        code,
        stdout: out.join().expect("stdout"),
        stderr: err.join().expect("stderr"),
        peak_rss: std::fs::read_to_string(out_file.path()).ok().and_then(|s| s.parse().ok()).unwrap_or(0),
        elapsed,
        timed_out,
    }
}

/// One test per driver for each named function `fn(&Strata)`: vfs and overlay on a fresh
/// store in the test's temp dir, btrfs on its own loop-mounted btrfs. Each skips with a
/// printed reason without privileges (and fails instead under STRATA_REQUIRE_PRIVILEGED=1).
#[macro_export]
macro_rules! on_every_driver {
    ($($name:ident),* $(,)?) => {$(
        $crate::per_driver!($name, |driver: &str, base: &::std::path::Path| {
            super::$name(&$crate::Strata::at(&base.join("strata"), driver))
        });
    )*};
}

/// A layer mounted with `strata layer mount` for the life of the guard (unmounted on drop,
/// also when a test fails).
pub struct Mounted<'a> {
    s: &'a Strata,
    id: String,
    pub path: PathBuf,
}

impl<'a> Mounted<'a> {
    pub fn new(s: &'a Strata, id: &str) -> Mounted<'a> {
        let path = PathBuf::from(s.ok(&["layer", "mount", id]).trim());
        Mounted { s, id: id.to_string(), path }
    }
}

impl Drop for Mounted<'_> {
    fn drop(&mut self) {
        let _ = self.s.run(&["layer", "unmount", &self.id]);
    }
}

/// `strata ARGS` without a root of its own (bench, probe: they make their own).
pub fn strata_plain(args: &[&str]) -> std::process::Output {
    Command::new(strata_bin()).args(args).output().expect("run strata")
}

/// [`strata_plain`] that must succeed; its standard output.
pub fn strata_plain_ok(args: &[&str]) -> String {
    let o = strata_plain(args);
    assert!(o.status.success(), "strata {args:?} failed:\n{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

/// One test per driver for each named function `fn(driver: &str, base: &Path)`, which
/// makes its stores under `base`: a temp dir for vfs and overlay, a loop-mounted btrfs
/// of its own for btrfs. Each skips with a printed reason without privileges (and fails
/// instead under STRATA_REQUIRE_PRIVILEGED=1).
#[macro_export]
macro_rules! on_every_driver_in {
    ($($name:ident),* $(,)?) => {$(
        $crate::per_driver!($name, super::$name);
    )*};
}

/// The one body of [`on_every_driver!`] and [`on_every_driver_in!`]: a module `$name`
/// with a test per driver that calls `$run(driver, base)`, `base` a temp dir (vfs,
/// overlay) or a loop-mounted btrfs of its own (btrfs), each skipping with a printed
/// reason without privileges.
#[doc(hidden)]
#[macro_export]
macro_rules! per_driver {
    ($name:ident, $run:expr) => {
        mod $name {
            #[test]
            fn vfs() {
                if $crate::privileged(stringify!($name)) {
                    let tmp = ::tempfile::tempdir().unwrap();
                    ($run)("vfs", tmp.path());
                }
            }
            #[test]
            fn overlay() {
                if $crate::privileged(stringify!($name)) {
                    let tmp = ::tempfile::tempdir().unwrap();
                    ($run)("overlay", tmp.path());
                }
            }
            #[test]
            fn btrfs() {
                if $crate::privileged(stringify!($name)) {
                    let scratch = ::strata_scratch::ScratchFs::new(::strata_scratch::FsKind::Btrfs, 1 << 30).unwrap();
                    ($run)("btrfs", scratch.path());
                }
            }
        }
    };
}

/// A spawned command, killed and reaped on drop (a failed assertion must not leave it
/// running).
pub struct Running(Option<Child>);

impl Running {
    /// Spawns `cmd` with stdout discarded and stderr piped.
    pub fn spawn(mut cmd: Command) -> Running {
        Running(Some(cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn strata")))
    }

    /// Waits for it to end; its status and stderr.
    pub fn wait(mut self) -> Output {
        self.0.take().expect("running").wait_with_output().expect("wait for strata")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// How a command that was sent a signal ended.
pub struct Signalled {
    pub status: ExitStatus,
    pub stderr: String,
}

/// Spawns `cmd`, waits for the first line of its stderr that holds `marker` (`""`: no
/// wait), then `delay`, sends it `signal`, and collects its stderr and status. Its
/// stderr is read all along, so a chatty command never blocks on a full pipe. The
/// command may have finished before the signal.
pub fn signal_at(cmd: Command, marker: &str, delay: Duration, signal: Signal) -> Signalled {
    let mut running = Running::spawn(cmd);
    let child = running.0.as_mut().expect("running");
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let mut lines = BufReader::new(child.stderr.take().expect("piped stderr"));
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        let mut line = String::new();
        while lines.read_line(&mut line).unwrap_or(0) > 0 {
            let _ = tx.send(line.clone());
            all.push_str(&std::mem::take(&mut line));
        }
        all
    });
    if !marker.is_empty() {
        // Ends also when the command ends without saying it (the sender goes).
        while let Ok(line) = rx.recv() {
            if line.contains(marker) {
                break;
            }
        }
    }
    std::thread::sleep(delay);
    // Our child, not yet reaped, so the pid is still its.
    let _ = nix::sys::signal::kill(pid, signal);
    let stderr = reader.join().expect("the stderr reader");
    let status = running.0.take().expect("running").wait().expect("wait for strata");
    Signalled { status, stderr }
}

impl Signalled {
    /// Killed by SIGINT with nothing said: the signal came in the first milliseconds,
    /// before main() routed it, so nothing can have been made.
    pub fn before_main(&self) -> bool {
        std::os::unix::process::ExitStatusExt::signal(&self.status) == Some(libc::SIGINT) && self.stderr.is_empty()
    }

    /// The `error: ` lines of its stderr.
    pub fn errors(&self) -> Vec<&str> {
        self.stderr.lines().filter(|l| l.starts_with("error: ")).collect()
    }

    /// Stopped as an interrupted command must: exit 130 (docs/cli.md), after one error line.
    pub fn assert_interrupted(&self, what: &str) {
        assert_eq!(self.status.code(), Some(130), "{what}: exit status ({:?}); stderr: {}", self.status, self.stderr);
        let errors = self.errors();
        assert_eq!(errors.len(), 1, "{what}: one error line expected (status {:?}): {}", self.status, self.stderr);
    }
}

/// `n` bytes from seed `seed` (xorshift): content big enough to span several blocks, the
/// same on every run.
pub fn seeded_bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The fraction of pixels that are not (nearly) white, and the number of distinct colours.
pub fn ink(png_path: &Path) -> (f64, usize) {
    let decoder = png::Decoder::new(std::fs::File::open(png_path).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    let pixels: Vec<&[u8]> = buf[..info.buffer_size()].chunks(channels).collect();
    let inked = pixels.iter().filter(|p| p[..3].iter().any(|&c| c < 230)).count();
    let colours: std::collections::BTreeSet<[u8; 3]> = pixels.iter().map(|p| [p[0], p[1], p[2]]).collect();
    (inked as f64 / pixels.len() as f64, colours.len())
}

/// The one `error:` line of a failed command's stderr.
fn one_error_line(stderr: &str) -> String {
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "one error line expected, got: {stderr}");
    errors[0].to_string()
}
