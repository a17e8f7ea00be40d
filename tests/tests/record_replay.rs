//! `container run`, `--record` and `container replay`, end to end on the Debian fixture
//! image: a command run and recorded in one container, its trace replayed in a second
//! container over the same image, must leave the same structure (paths, types, modes,
//! owners, sizes, link targets, hardlink groups, xattrs) and the same `layer changes`;
//! for generated workloads (tests/fixtures/fs_workload.py, fixed seeds) over every
//! operation class, for a static binary (busybox-static), and with `--record-data` the
//! same content too. Every operation class is recorded and matters (a trace without
//! it replays to something else). `container run` exits with the command's status and
//! leaves nothing mounted, whether the command exits, fails, is killed, or strata is
//! interrupted.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use strata_run::trace::{Op, Trace, CLASSES};
use strata_tests::{debian_fixture, Mounted, Strata};

const WORKLOAD: &str = include_str!("../fixtures/fs_workload.py");

/// A store holding the fixture's `debian` image (it has python3).
fn with_debian(driver: &str, base: &Path) -> Strata {
    let s = Strata::at(&base.join("strata"), driver);
    let src = format!("{}:debian", debian_fixture().join("layout").display());
    s.ok(&["image", "unpack", &src, "--name", "debian"]);
    s
}

/// The container's view as a map path → one line of what replay must reproduce: type,
/// size, mode, owner, link target, device, hardlink group, xattrs (and the content's
/// digest of the files `content` names); not mtimes (replay's clock is its own). Walked here rather
/// than with strata_testkit's Tree, which reads every file of the image.
fn structure(s: &Strata, name: &str, content: &dyn Fn(&Path) -> bool) -> BTreeMap<PathBuf, String> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    let view = Mounted::new(s, name);
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<(u64, u64), Vec<PathBuf>> = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let path = view.path.join(&rel);
        let md = std::fs::symlink_metadata(&path).unwrap();
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            for e in std::fs::read_dir(&path).unwrap() {
                stack.push(rel.join(e.unwrap().file_name()));
            }
            "dir".to_string()
        } else if ft.is_symlink() {
            format!("symlink {:?}", std::fs::read_link(&path).unwrap())
        } else if ft.is_file() && content(&rel) {
            let digest = driver_core::digest::sha256(&std::fs::read(&path).unwrap());
            format!("file {} {digest}", md.len())
        } else if ft.is_file() {
            format!("file {}", md.len())
        } else {
            format!("node {:o} rdev {}", md.mode() & 0o170000, md.rdev())
        };
        if !ft.is_dir() && md.nlink() > 1 {
            inodes.entry((md.dev(), md.ino())).or_default().push(rel.clone());
        }
        let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
        let xattrs: Vec<String> = driver_core::sys::read_xattrs(driver_core::sys::XattrTarget::NoFollow(&c))
            .unwrap()
            .into_iter()
            .filter(|(k, _)| !k.starts_with("trusted.overlay.") && !k.starts_with("user.overlay."))
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect();
        out.insert(rel, format!("{kind} {:o} {}:{} xattrs={xattrs:?}", md.mode() & 0o7777, md.uid(), md.gid()));
    }
    // Hardlink groups by their smallest name, among the names the view holds.
    for names in inodes.into_values().filter(|n| n.len() > 1) {
        let first = names.iter().min().unwrap().clone();
        for n in names {
            out.get_mut(&n).unwrap().push_str(&format!(" linked-with={}", first.display()));
        }
    }
    out
}

fn changes(s: &Strata, name: &str) -> String {
    s.ok(&["layer", "changes", name])
}

/// `a` and `b` hold the same structure and list the same changes.
fn assert_same(s: &Strata, a: &str, b: &str, content: &dyn Fn(&Path) -> bool, what: &str) {
    let (ta, tb) = (structure(s, a, content), structure(s, b, content));
    let diffs: Vec<String> = ta
        .iter()
        .filter(|(p, l)| tb.get(*p) != Some(l))
        .map(|(p, l)| format!("{}: {l} vs {:?}", p.display(), tb.get(p)))
        .chain(tb.keys().filter(|p| !ta.contains_key(*p)).map(|p| format!("{}: only after the replay", p.display())))
        .take(20)
        .collect();
    assert!(diffs.is_empty(), "{what}: the replay left another structure:\n{}", diffs.join("\n"));
    assert_eq!(changes(s, a), changes(s, b), "{what}: layer changes differ");
}

/// Runs `cmd` in container `name`, recorded to `trace`; it must succeed.
fn record(s: &Strata, name: &str, trace: &Path, extra: &[&str], cmd: &[&str]) {
    let mut args = vec!["container", "run", name, "--record", trace.to_str().unwrap()];
    args.extend_from_slice(extra);
    args.push("--");
    args.extend_from_slice(cmd);
    let out = s.run(&args);
    assert!(out.status.success(), "{cmd:?} failed ({:?}): {}", out.status, String::from_utf8_lossy(&out.stderr));
}

fn generated_workloads_replay_to_the_same_structure(driver: &str, base: &Path) {
    let s = with_debian(driver, base);
    s.ok(&["container", "create", "ran", "--image", "debian"]);
    s.ok(&["container", "create", "replayed", "--image", "debian"]);
    let traces = tempfile::tempdir().unwrap();
    // Each seed's workload runs on what the ones before left (in both containers).
    for seed in [11, 12, 13] {
        let trace = traces.path().join(format!("{seed}.trace"));
        record(&s, "ran", &trace, &[], &["python3", "-c", WORKLOAD, &seed.to_string(), "60"]);
        let t = Trace::read(&trace).unwrap();
        assert_eq!(t.header.image.as_deref(), Some("debian"));
        assert!(t.records.len() > 50, "seed {seed}: only {} records", t.records.len());
        s.ok(&["container", "replay", "replayed", trace.to_str().unwrap()]);
        assert_same(&s, "ran", "replayed", &|_| false, &format!("seed {seed}"));
    }
    // With the bytes kept, the content is the same too (in fresh containers: the
    // files the seeds above wrote hold synthetic bytes in "replayed"). Only the files
    // the run touched are read.
    s.ok(&["container", "create", "ran-data", "--image", "debian"]);
    s.ok(&["container", "create", "replayed-data", "--image", "debian"]);
    let trace = traces.path().join("data.trace");
    record(&s, "ran-data", &trace, &["--record-data"], &["python3", "-c", WORKLOAD, "14", "50"]);
    s.ok(&["container", "replay", "replayed-data", trace.to_str().unwrap()]);
    let t = Trace::read(&trace).unwrap();
    assert!(t.header.data && t.records.iter().any(|r| matches!(&r.op, Op::Write { data: Some(_), .. })));
    let named: BTreeSet<PathBuf> = t.records.iter().flat_map(|r| r.op.paths()).map(PathBuf::from).collect();
    let touched = |p: &Path| p.starts_with("work14") || named.contains(p);
    assert_same(&s, "ran-data", "replayed-data", &touched, "seed 14 with --record-data");

    // A static binary: no dynamic loader, so only a tracer of system calls sees it.
    let busybox = Path::new("/bin/busybox");
    if !strata_scratch::require("a static binary to record", (!busybox.exists()).then_some("busybox-static")) {
        return;
    }
    for name in ["ran", "replayed"] {
        let view = Mounted::new(&s, name);
        std::fs::copy(busybox, view.path.join("busybox")).unwrap();
    }
    let script = "/busybox mkdir -p /bbw/d && /busybox sh -c 'echo static > /bbw/d/f' && /busybox mv /bbw/d /bbw/e && \
                  /busybox ln /bbw/e/f /bbw/h && /busybox ln -s e/f /bbw/s && /busybox chmod 600 /bbw/h && \
                  /busybox chown 12:34 /bbw/s -h && /busybox touch /etc/debian_version && /busybox rm -f /etc/os-release && \
                  /busybox mkfifo /bbw/p && /busybox dd if=/dev/zero of=/bbw/z bs=1k count=3 seek=100 2>/dev/null && /busybox sync";
    let trace = traces.path().join("busybox.trace");
    record(&s, "ran", &trace, &[], &["/busybox", "sh", "-c", script]);
    let t = Trace::read(&trace).unwrap();
    let made: Vec<String> = t.records.iter().flat_map(|r| r.op.paths().into_iter().map(str::to_string)).collect();
    for p in ["bbw/d", "bbw/e", "bbw/h", "bbw/s", "etc/debian_version", "bbw/z"] {
        assert!(made.iter().any(|m| m == p), "the static busybox's {p} is not in the trace:\n{made:?}");
    }
    s.ok(&["container", "replay", "replayed", trace.to_str().unwrap()]);
    assert_same(&s, "ran", "replayed", &|_| false, "static busybox");
}

/// One operation of every class, each with an effect on the structure or on `layer
/// changes` of its own (the syncs are counted instead: they change nothing visible).
const EVERY_CLASS: &str = r#"
import os, ctypes
libc = ctypes.CDLL(None, use_errno=True)
libc.sync_file_range.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint]
os.mkdir("/x")
os.close(os.open("/etc/debian_version", os.O_WRONLY))
os.close(os.open("/x/empty", os.O_WRONLY | os.O_CREAT, 0o644))
with open("/x/written", "wb") as f:
    f.write(b"w" * 5000)
    os.fsync(f.fileno())
    os.fdatasync(f.fileno())
    libc.sync_file_range(f.fileno(), 0, 0, 7)
with open("/x/cut", "wb") as f:
    f.write(b"c" * 10)
os.truncate("/x/cut", 9000)
fd = os.open("/x/alloc", os.O_RDWR | os.O_CREAT, 0o644)
os.posix_fallocate(fd, 0, 12345)
os.fsync(fd)
os.close(fd)
os.mkdir("/x/gone")
os.rmdir("/x/gone")
os.unlink("/etc/issue")
os.rename("/etc/host.conf", "/x/host.conf")
os.link("/x/written", "/x/hard")
os.symlink("written", "/x/soft")
os.mkfifo("/x/fifo", 0o600)
os.chmod("/x/empty", 0o751)
os.chown("/x/written", 1234, 5678)
os.utime("/etc/hostname", (100, 200))
os.setxattr("/x/empty", "user.kept", b"1")
os.setxattr("/x/empty", "user.removed", b"2")
os.removexattr("/x/empty", "user.removed")
os.sync()
fd = os.open("/x", os.O_RDONLY | os.O_DIRECTORY)
libc.syncfs(fd)
os.close(fd)
"#;

/// The syncs the script above makes: not visible in the view, so counted.
const SYNCS: [(&str, usize); 3] = [("fsync", 3), ("sync_file_range", 1), ("sync", 2)];

fn every_operation_class_is_recorded_and_matters(driver: &str, base: &Path) {
    let s = with_debian(driver, base);
    s.ok(&["container", "create", "ran", "--image", "debian"]);
    let dir = tempfile::tempdir().unwrap();
    let trace_path = dir.path().join("all.trace");
    record(&s, "ran", &trace_path, &[], &["python3", "-c", EVERY_CLASS]);
    let trace = Trace::read(&trace_path).unwrap();
    let counts: BTreeMap<&str, usize> = trace.counts().into_iter().collect();
    for class in CLASSES {
        assert!(counts.contains_key(class), "no {class} in the trace: {counts:?}");
    }
    for (class, n) in SYNCS {
        assert_eq!(counts[class], n, "{class}s recorded");
    }
    s.ok(&["container", "create", "whole", "--image", "debian"]);
    let stats: serde_json::Value =
        serde_json::from_str(&s.ok(&["container", "replay", "whole", trace_path.to_str().unwrap(), "--json"])).unwrap();
    assert_same(&s, "ran", "whole", &|_| false, "the whole trace");
    // The first changes to the image's files are timed apart, with their sizes (what
    // the bench reports as copy-ups); a file the run made is not one.
    let ups: BTreeMap<&str, (&str, u64)> = stats["copy_ups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["path"].as_str().unwrap(), (c["class"].as_str().unwrap(), c["size"].as_u64().unwrap())))
        .collect();
    let size = |p: &str| std::fs::metadata(debian_fixture().join("ref/debian/rootfs").join(p)).unwrap().len();
    assert_eq!(ups.get("etc/debian_version"), Some(&("open", size("etc/debian_version"))), "{ups:?}");
    assert_eq!(ups.get("etc/hostname"), Some(&("utimes", size("etc/hostname"))), "{ups:?}");
    assert!(!ups.contains_key("x/written"), "{ups:?}");
    assert_eq!(stats["classes"]["write"]["bytes"].as_u64(), Some(5010), "{stats}");
    let (want_tree, want_changes) = (structure(&s, "ran", &|_| false), changes(&s, "ran"));
    for class in CLASSES.iter().filter(|c| !SYNCS.iter().any(|(s, _)| s == *c)) {
        let mut t = trace.clone();
        t.records.retain(|r| r.op.class() != *class);
        let p = dir.path().join(format!("without-{class}.trace"));
        t.write(std::fs::File::create(&p).unwrap()).unwrap();
        let name = format!("without-{class}");
        s.ok(&["container", "create", &name, "--image", "debian"]);
        // A replay that fails (a write to a file no open made) differs too.
        let replayed = s.run(&["container", "replay", &name, p.to_str().unwrap()]).status.success();
        let same = replayed && structure(&s, &name, &|_| false) == want_tree && changes(&s, &name) == want_changes;
        assert!(!same, "dropping every {class} from the trace changed nothing: the test would not see it go");
    }
}

/// No mount of this store is left, in the host's namespace.
fn assert_nothing_mounted(s: &Strata, what: &str) {
    let left = strata_testkit::conformance::mounts_under(&s.root);
    assert!(left.is_empty(), "{what}: left mounted: {left:?}");
    let ls = s.ok(&["container", "ls", "--json"]);
    assert!(!ls.contains("\"mounted\": true"), "{what}: a container is still counted mounted: {ls}");
}

/// Starts `container run c [--record T] -- sh -c 'echo $$; exec sleep 600'` and waits
/// for the command to say its pid; strata's process and the command's pid.
fn started(s: &Strata, recorded: Option<&Path>) -> (std::process::Child, Pid) {
    let mut args = vec!["container", "run", "c"];
    if let Some(t) = recorded {
        args.extend(["--record", t.to_str().unwrap()]);
    }
    args.extend(["--", "sh", "-c", "echo $$; exec sleep 600"]);
    let mut child = s.command(&args).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let pid: i32 = line.trim().parse().unwrap_or_else(|_| panic!("the command's pid, got {line:?}"));
    // `exec sleep`: the pid is sleep's once its name says so.
    for _ in 0..500 {
        if std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sleep") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    (child, Pid::from_raw(pid))
}

fn container_run_exits_as_the_command_and_leaves_nothing_mounted(driver: &str, base: &Path) {
    let s = with_debian(driver, base);
    s.ok(&["container", "create", "c", "--image", "debian"]);
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("t.trace");
    for rec in [None, Some(t.as_path())] {
        let how = if rec.is_some() { "recorded" } else { "plain" };
        let run = |cmd: &str| {
            let mut args = vec!["container", "run", "c"];
            if let Some(t) = rec {
                args.extend(["--record", t.to_str().unwrap()]);
            }
            args.extend(["--", "sh", "-c", cmd]);
            s.run(&args)
        };
        let o = run("echo out; echo err >&2; exit 7");
        assert_eq!(o.status.code(), Some(7), "{how}: {}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(String::from_utf8_lossy(&o.stdout), "out\n", "{how}: stdout passed through");
        assert!(String::from_utf8_lossy(&o.stderr).contains("err"), "{how}: stderr passed through");
        assert_nothing_mounted(&s, &format!("{how}: exit 7"));
        let o = run("kill -TERM $$");
        assert_eq!(o.status.code(), Some(128 + libc::SIGTERM), "{how}: a command ended by SIGTERM");
        assert_nothing_mounted(&s, &format!("{how}: command killed by SIGTERM"));
        // Its environment: the image's PATH, root, in / unless the image says otherwise.
        let o = run("test \"$(id -u)\" = 0 && test -e /proc/self/fd && test -c /dev/null && echo ok");
        assert_eq!(String::from_utf8_lossy(&o.stdout), "ok\n", "{how}: {}", String::from_utf8_lossy(&o.stderr));
        // A command that is not there: strata's error, nothing left.
        let mut args = vec!["container", "run", "c"];
        if let Some(t) = rec {
            args.extend(["--record", t.to_str().unwrap()]);
        }
        args.extend(["--", "/no/such/command"]);
        // A command that could not start: exit 1; the line names it.
        let err = s.fails_with(1, &args);
        assert!(err.contains("/no/such/command"), "{how}: {err}");
        assert_nothing_mounted(&s, &format!("{how}: missing command"));

        // The command killed from outside.
        let (mut child, pid) = started(&s, rec);
        kill(pid, Signal::SIGKILL).unwrap();
        let st = child.wait().unwrap();
        assert_eq!(st.code(), Some(128 + libc::SIGKILL), "{how}: command killed");
        assert_nothing_mounted(&s, &format!("{how}: command killed"));
        // strata interrupted (SIGINT, SIGTERM): the command gets the signal, strata
        // waits for it, unmounts and exits as it did.
        for sig in [Signal::SIGINT, Signal::SIGTERM] {
            let (mut child, pid) = started(&s, rec);
            kill(Pid::from_raw(child.id() as i32), sig).unwrap();
            let st = child.wait().unwrap();
            assert_eq!(st.code(), Some(128 + sig as i32), "{how}: strata sent {sig}");
            assert!(!Path::new(&format!("/proc/{pid}")).exists(), "{how}: the command outlived strata's {sig}");
            assert_nothing_mounted(&s, &format!("{how}: strata sent {sig}"));
        }
    }
    // --user: files made belong to that user.
    let o = s.run(&["container", "run", "c", "--user", "1234:99", "--", "sh", "-c", "id -u; id -g"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "1234\n99\n");
}

strata_tests::on_every_driver_in!(
    generated_workloads_replay_to_the_same_structure,
    container_run_exits_as_the_command_and_leaves_nothing_mounted
);

/// Overlay only: its `layer changes` sees an open for writing and a utime of an image
/// file (a copy-up), which every class's check needs, and its containers are made in
/// constant time (a replay per class).
#[test]
fn every_operation_class_is_recorded_and_matters_on_overlay() {
    if strata_tests::privileged("every_operation_class_is_recorded_and_matters") {
        let tmp = tempfile::tempdir().unwrap();
        every_operation_class_is_recorded_and_matters("overlay", tmp.path());
    }
}
