//! `image save`: a committed image, saved in each format, loads in podman (its own
//! storage under a temporary --root) and in containerd (a private daemon on a temporary
//! socket and root), and the tree each shows equals the tree strata's container of the
//! image sees; `umoci unpack` of the saved layout is the reference for the OCI layout.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use strata_testkit::tree::{CompareOptions, Tree};
use strata_tests::changes::{base_layout, change};
use strata_tests::{installed, privileged, Strata};

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn opts() -> CompareOptions {
    // Tar carries whole seconds; the loaders' own mtimes of directories they make differ.
    CompareOptions { file_mtime: false, dir_mtime: false, ..Default::default() }
}

fn same(want: &Tree, root: &Path, who: &str) {
    let got = Tree::capture(root).unwrap();
    let d = want.differences(&got, &opts());
    assert!(d.is_empty(), "{who}'s tree differs from strata's view:\n{}", d.join("\n"));
}

/// podman with its own storage (vfs) under a temporary root; unmounts on drop.
struct Podman {
    root: tempfile::TempDir,
    run: tempfile::TempDir,
}

impl Podman {
    fn new() -> Podman {
        Podman { root: tempfile::tempdir().unwrap(), run: tempfile::tempdir().unwrap() }
    }
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("podman");
        c.arg("--root").arg(self.root.path()).arg("--runroot").arg(self.run.path());
        c.args(["--storage-driver", "vfs"]).args(args);
        c
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.cmd(&["image", "unmount", "-a"]).output();
    }
}

/// A private containerd; its mounts released and the daemon stopped on drop.
struct Containerd {
    child: Child,
    dir: tempfile::TempDir,
    mounts: Vec<PathBuf>,
}

impl Containerd {
    fn start() -> Containerd {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n).display().to_string();
        let config = dir.path().join("config.toml");
        fs::write(
            &config,
            format!(
                "version = 2\nroot = {:?}\nstate = {:?}\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = {:?}\n[ttrpc]\n  address = {:?}\n",
                p("root"),
                p("state"),
                p("c.sock"),
                p("c.sock.ttrpc")
            ),
        )
        .unwrap();
        let log = fs::File::create(dir.path().join("log")).unwrap();
        let child = Command::new("containerd").arg("--config").arg(&config).stdout(Stdio::null()).stderr(log).spawn();
        let mut d = Containerd { child: child.expect("start containerd"), dir, mounts: Vec::new() };
        // Generous: the machine may be very busy; no assertion on how long it took.
        let deadline = Instant::now() + Duration::from_secs(300);
        while !d.ctr(&["version"]).output().is_ok_and(|o| o.status.success()) {
            if let Ok(Some(status)) = d.child.try_wait() {
                panic!(
                    "containerd exited at start ({status}): {}",
                    fs::read_to_string(d.dir.path().join("log")).unwrap()
                );
            }
            assert!(Instant::now() < deadline, "containerd did not answer on its socket");
            std::thread::sleep(Duration::from_millis(200));
        }
        d
    }
    fn ctr(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ctr");
        c.arg("-a").arg(self.dir.path().join("c.sock")).args(["-n", "strata-test"]).args(args);
        c
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        for m in &self.mounts {
            let _ = self.ctr(&["images", "unmount", "--rm"]).arg(m).output();
            let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
        }
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline && !matches!(self.child.try_wait(), Ok(Some(_))) {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        for m in strata_testkit::conformance::mounts_under(self.dir.path()) {
            let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// Commits the scripted changes over the base image; returns strata's view of a
/// container of the committed image.
fn committed(s: &Strata, tmp: &Path) -> Tree {
    let layout = base_layout(&tmp.join("layout"));
    s.ok(&["image", "unpack", &format!("{}:base", layout.dir.display()), "--name", "base"]);
    s.ok(&["container", "create", "c1", "--image", "base"]);
    let path = PathBuf::from(s.ok(&["layer", "mount", "c1"]).trim());
    change(&path);
    s.ok(&["container", "commit", "c1", "--image", "app:v1", "--message", "for save"]);
    s.ok(&["layer", "unmount", "c1"]);
    s.ok(&["container", "create", "c2", "--image", "app:v1"]);
    let path = PathBuf::from(s.ok(&["layer", "mount", "c2"]).trim());
    let tree = Tree::capture(&path).unwrap();
    s.ok(&["layer", "unmount", "c2"]);
    tree
}

#[test]
fn saved_images_load_in_podman_and_containerd() {
    if !privileged("image save into podman and containerd")
        || !installed(&["podman", "containerd", "ctr", "umoci"], "image save into podman and containerd")
    {
        return;
    }
    let s = Strata::new("overlay");
    let tmp = tempfile::tempdir().unwrap();
    let want = committed(&s, tmp.path());
    let out = |n: &str| tmp.path().join(n).display().to_string();
    s.ok(&["image", "save", "app:v1", "-o", &out("app.oci.tar")]);
    s.ok(&["image", "save", "app:v1", "-o", &out("app.docker.tar"), "--format", "docker-archive"]);
    s.ok(&["image", "save", "app:v1", "-o", &out("layout"), "--format", "oci"]);

    // The layout (added beside the base image it was unpacked from), by umoci.
    let bundle = tmp.path().join("bundle");
    run(Command::new("umoci").args(["unpack", "--image", &format!("{}:app:v1", out("layout"))]).arg(&bundle));
    same(&want, &bundle.join("rootfs"), "umoci unpack of the saved layout");
    // And strata reads it back as it reads any layout.
    s.ok(&["image", "unpack", &format!("{}:app:v1", out("layout")), "--name", "again"]);

    for archive in ["app.oci.tar", "app.docker.tar"] {
        let podman = Podman::new();
        run(&mut podman.cmd(&["load", "-q", "-i", &out(archive)]));
        let path = run(&mut podman.cmd(&["image", "mount", "localhost/app:v1"]));
        same(&want, Path::new(path.trim()), &format!("podman load of {archive}"));
    }

    let mut containerd = Containerd::start();
    for (archive, name) in [("app.oci.tar", "app:v1"), ("app.docker.tar", "docker.io/library/app:v1")] {
        run(&mut containerd.ctr(&["images", "import", "--snapshotter", "native", &out(archive)]));
        let mnt = tmp.path().join(format!("mnt-{archive}"));
        fs::create_dir(&mnt).unwrap();
        containerd.mounts.push(mnt.clone());
        run(containerd.ctr(&["images", "mount", "--snapshotter", "native", name]).arg(&mnt));
        same(&want, &mnt, &format!("ctr images import of {archive}"));
    }
}

#[test]
fn images_stored_before_content_was_kept_say_so() {
    if !privileged("image save of an old record") {
        return;
    }
    let s = Strata::new("vfs");
    let tmp = tempfile::tempdir().unwrap();
    let layout = base_layout(&tmp.path().join("layout"));
    s.ok(&["image", "unpack", &format!("{}:base", layout.dir.display()), "--name", "base"]);
    // A record as strata wrote it before it kept content: no `manifest`.
    let dir = s.root.join("vfs/images");
    for e in fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "json") {
            let mut v: serde_json::Value = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
            assert!(v.as_object_mut().unwrap().remove("manifest").is_some(), "{v}");
            fs::write(&p, serde_json::to_vec(&v).unwrap()).unwrap();
        }
    }
    // The image's blobs are gone (Error::NoContent): exit 1, and the line says what to do.
    let e = s.fails_with(1, &["image", "save", "base", "-o", &tmp.path().join("x.tar").display().to_string()]);
    assert!(e.contains("unpack or pull it again"), "{e}");
    assert!(!tmp.path().join("x.tar").exists());
    s.ok(&["container", "create", "c", "--image", "base"]);
    let e = s.fails_with(1, &["container", "commit", "c", "--image", "new"]);
    assert!(e.contains("unpack or pull it again"), "{e}");
    // Unpacking it again keeps its content.
    s.ok(&["image", "unpack", &format!("{}:base", layout.dir.display()), "--name", "base"]);
    s.ok(&["image", "save", "base", "-o", &tmp.path().join("x.tar").display().to_string()]);
}

/// `image save` ends by naming the format as the user spells it (`--format
/// oci-archive`), not as a Rust enum (it printed `(OciArchive)`), also when the format
/// was the default.
#[test]
fn save_names_the_format_as_the_user_spells_it() {
    if !privileged("image save's closing line") {
        return;
    }
    let s = Strata::new("vfs");
    let tmp = tempfile::tempdir().unwrap();
    let layout = base_layout(&tmp.path().join("layout"));
    s.ok(&["image", "unpack", &format!("{}:base", layout.dir.display()), "--name", "base"]);
    for (format, out) in
        [(None, "default.tar"), (Some("oci-archive"), "a.tar"), (Some("docker-archive"), "d.tar"), (Some("oci"), "dir")]
    {
        let out = tmp.path().join(out).display().to_string();
        let mut args = vec!["image", "save", "base", "-o", &out];
        args.extend(format.iter().flat_map(|f| ["--format", f]));
        let o = s.run(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{args:?}: {err}");
        let last = err.lines().last().unwrap_or("");
        let want = format!("({})", format.unwrap_or("oci-archive"));
        assert!(last.starts_with("saved image base to ") && last.ends_with(&want), "{args:?}: {last}");
    }
}
