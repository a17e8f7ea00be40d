//! `strata bench --peers`: the same image unpacked by strata and by the tools users run
//! today, each on its own fresh scratch filesystem of the same size, in the same run.
//!
//! - **strata**: `strata image unpack ARCHIVE` (this very binary) with the driver;
//! - **containerd**: a private daemon (`containerd --config`, its root on the scratch
//!   filesystem) and `ctr image import` with the matching snapshotter (overlay →
//!   overlayfs, vfs → native, btrfs → btrfs); import copies the blobs into its content
//!   store and unpacks them, one layer after the other in containerd 1.6;
//! - **podman**: `podman load` with the matching storage driver and its own root;
//! - **the floor**: every layer decompressed and extracted at once, each into its own
//!   directory, with the fastest gzip decompressor on the system piped into `tar -x`:
//!   `igzip` (ISA-L, Debian's `isal`), else `unpigz`, else `gzip` (`zstd -dc` for zstd
//!   layers). strata's unpack is reported as a ratio of it.
//!
//! Every time is wall clock from the command's start to a syncfs of the scratch
//! filesystem after it, so what a tool leaves in the page cache is paid for; the
//! archive itself is in the page cache for all of them. Disk use is the statfs delta.

use std::fs::{self, File};
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::ValueEnum;

use crate::failure::{Failure, Result};
use crate::model::{DiskUse, Dist, PeerResult};
use driver_core::Error;
use oci_spec::image::{ImageIndex, ImageManifest};
use strata_image::image::blob_path;
use strata_scratch::{FsKind, ScratchFs};

/// A tool the bench unpacks the same image with, beside strata (`bench --peers`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Peer {
    Containerd,
    Podman,
}

impl Peer {
    pub fn name(self) -> &'static str {
        match self {
            Peer::Containerd => "containerd",
            Peer::Podman => "podman",
        }
    }
}

fn used(path: &Path) -> DiskUse {
    DiskUse::of(path)
}

/// The image as the peers take it: an oci-archive, and its layer blobs on disk.
pub struct PeerImage {
    pub archive: PathBuf,
    pub layers: Vec<PathBuf>,
}

impl PeerImage {
    /// Makes the oci-archive of `layout` (written by `write_layout`, so every blob is
    /// under `blobs/sha256/`), and finds its layer blobs through its manifest.
    pub fn from_layout(layout: &Path, archive: &Path) -> Result<PeerImage> {
        let io = |e: std::io::Error| Error::new(e).with_path(archive);
        let mut b = tar::Builder::new(File::create(archive).map_err(io)?);
        b.follow_symlinks(false);
        b.append_dir_all(".", layout).map_err(io)?;
        b.into_inner().map_err(io)?;
        let index_path = layout.join("index.json");
        let index: ImageIndex = read_json(&index_path)?;
        let manifest_digest = index
            .manifests()
            .first()
            .ok_or(Failure::Layout { path: index_path, what: "an index without a manifest" })?
            .digest()
            .to_string();
        let manifest_path = layout.join(blob_path(&manifest_digest).map_err(io)?);
        let manifest: ImageManifest = read_json(&manifest_path)?;
        let layers = manifest
            .layers()
            .iter()
            .map(|l| Ok(layout.join(blob_path(l.digest().as_ref()).map_err(io)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(PeerImage { archive: archive.to_path_buf(), layers })
    }
}

/// An OCI document, typed (oci-spec).
fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let data = fs::read(path).map_err(|e| Error::new(e).with_path(path))?;
    serde_json::from_slice(&data).map_err(|source| Failure::Json { path: path.to_path_buf(), source })
}

/// The peer's storage matching a strata driver: (containerd snapshotter, podman driver).
fn matching(driver: &str) -> (&'static str, &'static str) {
    match driver {
        "overlay" => ("overlayfs", "overlay"),
        "btrfs" => ("btrfs", "btrfs"),
        _ => ("native", "vfs"),
    }
}

fn installed(program: &str) -> bool {
    Command::new(program).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

/// Says plainly why a peer cannot run here, or None when it can.
pub fn unavailable(peer: Peer) -> Option<String> {
    match peer {
        Peer::Containerd if !(installed("containerd") && installed("ctr")) => {
            Some("containerd is not installed (Debian: apt-get install containerd)".into())
        }
        Peer::Podman if !installed("podman") => Some("podman is not installed (Debian: apt-get install podman)".into()),
        Peer::Containerd | Peer::Podman => None,
    }
}

fn run_checked(cmd: &mut Command, what: &str) -> Result<()> {
    let out = cmd.stdin(Stdio::null()).output().map_err(Failure::tool(what))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        // podman tries each archive format in turn and says why each failed: keep all.
        let said: Vec<&str> = stderr.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        let mut said = said.join(" | ");
        if said.len() > 600 {
            said = format!("...{}", &said[said.len() - 600..]);
        }
        return Err(Failure::ToolFailed { what: what.into(), status: out.status, said });
    }
    Ok(())
}

/// A private containerd daemon; stopped (and waited for) on drop.
struct Containerd {
    child: Child,
    socket: PathBuf,
    _state: tempfile::TempDir,
}

impl Containerd {
    fn start(root: &Path) -> Result<Containerd> {
        let state = tempfile::Builder::new().prefix("strata-containerd-").tempdir().map_err(Error::new)?;
        let socket = state.path().join("containerd.sock");
        let config = state.path().join("config.toml");
        // Only what import needs: no CRI plugin, sockets in the private state dir.
        fs::write(
            &config,
            format!(
                "version = 2\nroot = {:?}\nstate = {:?}\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = {:?}\n[ttrpc]\n  address = {:?}\n",
                root.display().to_string(),
                state.path().join("state").display().to_string(),
                socket.display().to_string(),
                state.path().join("containerd.sock.ttrpc").display().to_string(),
            ),
        )
        .map_err(|e| Error::new(e).with_path(&config))?;
        let log = File::create(state.path().join("containerd.log")).map_err(Error::new)?;
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(Failure::tool("starting containerd"))?;
        let mut d = Containerd { child, socket, _state: state };
        const ANSWER_WITHIN: u64 = 20;
        let deadline = Instant::now() + Duration::from_secs(ANSWER_WITHIN);
        loop {
            let ok = Command::new("ctr")
                .arg("-a")
                .arg(&d.socket)
                .arg("version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                return Ok(d);
            }
            if let Ok(Some(status)) = d.child.try_wait() {
                return Err(Failure::ToolFailed { what: "containerd (at start)".into(), status, said: String::new() });
            }
            if Instant::now() > deadline {
                return Err(Failure::NoAnswer { secs: ANSWER_WITHIN });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The gzip decompressors the floor may use, fastest first (measured on this kind of
/// machine on the python3 image's layers: igzip 0.50 s, unpigz 1.28 s, gzip 1.83 s).
const GUNZIPS: [&str; 3] = ["igzip", "unpigz", "gzip"];

/// The fastest gzip decompressor on PATH (`gzip` when none is found: it is named in the
/// error then).
pub fn floor_gunzip() -> &'static str {
    let path = std::env::var_os("PATH").unwrap_or_default();
    GUNZIPS.into_iter().find(|tool| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file())).unwrap_or("gzip")
}

/// Decompresses and extracts every layer at once, each into its own directory.
pub fn floor(layers: &[PathBuf], into: &Path) -> Result<()> {
    let gunzip = floor_gunzip();
    let mut running = Vec::new();
    for (i, blob) in layers.iter().enumerate() {
        let dir = into.join(format!("layer{i}"));
        fs::create_dir_all(&dir).map_err(|e| Error::new(e).with_path(&dir))?;
        let mut magic = [0u8; 4];
        File::open(blob).and_then(|mut f| f.read_exact(&mut magic)).map_err(|e| Error::new(e).with_path(blob))?;
        let mut decompress = Command::new(match magic {
            [0x1f, 0x8b, ..] => gunzip,
            [0x28, 0xb5, 0x2f, 0xfd] => "zstd",
            _ => "cat",
        });
        if decompress.get_program() != "cat" {
            decompress.args(["-d", "-c"]);
        }
        let mut source = decompress
            .arg(blob)
            .stdout(Stdio::piped())
            .spawn()
            .map_err(Failure::tool(format!("floor: {}", decompress.get_program().to_string_lossy())))?;
        let stdout = source.stdout.take().expect("piped");
        let sink = Command::new("tar")
            .args(["--numeric-owner", "--xattrs", "--xattrs-include=*", "-x", "-f", "-", "-C"])
            .arg(&dir)
            .stdin(stdout)
            .spawn()
            .map_err(Failure::tool("floor: tar"))?;
        running.push((decompress.get_program().to_string_lossy().into_owned(), source, sink));
    }
    for (decompressor, mut source, mut sink) in running {
        let what = format!("floor: {decompressor}");
        let a = source.wait().map_err(Failure::tool(&what))?;
        let b = sink.wait().map_err(Failure::tool("floor: tar"))?;
        // A decompressor that failed on its own explains tar's failure (a short stream);
        // one killed by SIGPIPE was cut off by a tar that failed first.
        let cut_off = a.signal() == Some(libc::SIGPIPE);
        let failed = match (a.success(), b.success()) {
            (false, _) if !cut_off || b.success() => Some((what, a)),
            (_, false) => Some(("floor: tar".to_string(), b)),
            _ => None,
        };
        if let Some((what, status)) = failed {
            return Err(Failure::ToolFailed { what, status, said: String::new() });
        }
    }
    Ok(())
}

/// One unpack by `tool` on a fresh filesystem of `kind`: (seconds, disk bytes).
fn once(tool: &str, strata_driver: &str, kind: FsKind, image: &PeerImage) -> Result<(f64, u64)> {
    let scratch = ScratchFs::new(kind, 12 << 30).map_err(|source| Failure::Scratch { fs: kind.name(), source })?;
    let base = used(scratch.path());
    let root = scratch.path().join(tool);
    fs::create_dir_all(&root).map_err(|e| Error::new(e).with_path(&root))?;
    let (snapshotter, podman_driver) = matching(strata_driver);
    let daemon = if tool == "containerd" { Some(Containerd::start(&root)?) } else { None };
    let runroot = tempfile::Builder::new().prefix("strata-podman-run-").tempdir().map_err(Error::new)?;
    let start = Instant::now();
    match tool {
        "strata" => run_checked(
            Command::new(std::env::current_exe().map_err(Error::new)?)
                .arg("--root")
                .arg(&root)
                .args(["--driver", strata_driver, "image", "unpack", "--name", "bench"])
                .arg(&image.archive),
            "strata image unpack",
        )?,
        "containerd" => run_checked(
            Command::new("ctr")
                .arg("-a")
                .arg(&daemon.as_ref().expect("started").socket)
                .args(["-n", "strata", "image", "import", "--snapshotter", snapshotter])
                .arg(&image.archive),
            "ctr image import",
        )?,
        "podman" => run_checked(
            Command::new("podman")
                .arg("--root")
                .arg(&root)
                .arg("--runroot")
                .arg(runroot.path())
                .args(["--storage-driver", podman_driver, "load", "-q", "-i"])
                .arg(&image.archive),
            "podman load",
        )?,
        "floor" => floor(&image.layers, &root)?,
        other => return Err(Failure::UnknownTool(other.into())),
    }
    driver_core::sys::syncfs(scratch.path()).map_err(|e| Error::new(e).with_path(scratch.path()))?;
    let secs = start.elapsed().as_secs_f64();
    drop(daemon);
    let bytes = used(scratch.path()).bytes.saturating_sub(base.bytes);
    Ok((secs, bytes))
}

/// Runs strata (`driver` on `kind`), the floor and each peer, `runs` times each, in
/// rounds (each tool once per round, in turn), so that every tool meets the same load
/// on a shared host; in blocks (three of strata, then three of the floor) the ratio of
/// one run of the bench to the next swung from 0.84x to 1.43x the floor.
pub fn compare(
    peers: &[Peer],
    driver: &str,
    kind: FsKind,
    image: &PeerImage,
    runs: usize,
    progress: &dyn Fn(&str),
) -> Vec<PeerResult> {
    let (snapshotter, podman_driver) = matching(driver);
    // (tool, its storage, the peer it is)
    let mut rows: Vec<(&str, String, Option<Peer>)> =
        vec![("strata", driver.to_string(), None), ("floor", format!("{}|tar", floor_gunzip()), None)];
    for &p in peers {
        let storage = match p {
            Peer::Containerd => snapshotter,
            Peer::Podman => podman_driver,
        };
        rows.push((p.name(), storage.to_string(), Some(p)));
    }
    let mut out: Vec<(PeerResult, Vec<f64>)> = rows
        .into_iter()
        .map(|(tool, storage, peer)| {
            let mut r = PeerResult {
                tool: tool.to_string(),
                driver: storage,
                fs: kind.name().to_string(),
                strata_driver: driver.to_string(),
                ..Default::default()
            };
            if let Some(why) = peer.and_then(unavailable) {
                progress(&format!("{tool}: not run: {why}"));
                r.error = Some(why);
            }
            (r, Vec::new())
        })
        .collect();
    for i in 0..runs {
        for (r, samples) in out.iter_mut().filter(|(r, _)| r.error.is_none()) {
            progress(&format!("{} ({}) unpack {}/{runs}", r.tool, r.driver, i + 1));
            match once(&r.tool, driver, kind, image) {
                Ok((secs, bytes)) => {
                    samples.push(secs);
                    r.disk_bytes = bytes;
                }
                Err(e) => r.error = Some(e.to_string()),
            }
        }
    }
    out.into_iter()
        .map(|(mut r, samples)| {
            r.unpack = Dist::of(samples);
            r
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tool that cannot start keeps its io error; one that fails keeps its exit status
    /// and what it said.
    #[test]
    fn a_tool_that_fails_is_named_with_its_status_and_stderr() {
        let e = run_checked(&mut Command::new("/nonexistent/strata-tool"), "strata-tool").unwrap_err();
        assert!(
            matches!(&e, Failure::Tool { what, source } if what == "strata-tool"
                && source.raw_os_error() == Some(libc::ENOENT)),
            "{e:?}"
        );
        let e = run_checked(Command::new("sh").args(["-c", "echo one >&2; echo >&2; echo two >&2; exit 3"]), "sh")
            .unwrap_err();
        assert!(
            matches!(&e, Failure::ToolFailed { status, said, .. }
                if status.code() == Some(3) && said == "one | two"),
            "{e:?}"
        );
        assert_eq!(e.to_string(), "sh failed (exit status: 3): one | two");
    }

    /// The floor's tar refusing a layer that is not a tar is the floor's failure, named.
    #[test]
    fn the_floor_names_the_step_that_failed() {
        let dir = tempfile::tempdir().unwrap();
        let blob = dir.path().join("blob");
        fs::write(&blob, vec![b'x'; 4096]).unwrap();
        let e = floor(&[blob], &dir.path().join("out")).unwrap_err();
        assert!(
            matches!(&e, Failure::ToolFailed { what, status, .. } if what == "floor: tar"
                && !status.success()),
            "{e:?}"
        );
    }

    /// A layout whose documents do not parse, or lack what the peers need, is named.
    #[test]
    fn a_layout_without_its_documents_is_refused_by_file() {
        let dir = tempfile::tempdir().unwrap();
        let layout = dir.path().join("layout");
        fs::create_dir(&layout).unwrap();
        let archive = dir.path().join("image.tar");
        fs::write(layout.join("index.json"), "{\"manifests\": [").unwrap();
        let e = PeerImage::from_layout(&layout, &archive).err().expect("a broken index");
        assert!(
            matches!(&e, Failure::Json { path, source } if path.ends_with("index.json") && source.is_eof()),
            "{e:?}"
        );
        fs::write(layout.join("index.json"), "{\"schemaVersion\": 2, \"manifests\": []}").unwrap();
        let e = PeerImage::from_layout(&layout, &archive).err().expect("an index without manifests");
        assert!(matches!(&e, Failure::Layout { path, .. } if path.ends_with("index.json")), "{e:?}");
    }

    /// The documents are read as what they are (oci-spec): a manifest whose layer has
    /// no digest is refused by its file, where it became an empty blob name.
    #[test]
    fn the_layers_are_found_through_the_typed_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let layout = dir.path().join("layout");
        let blobs = layout.join("blobs/sha256");
        fs::create_dir_all(&blobs).unwrap();
        let archive = dir.path().join("image.tar");
        let (m, c, l) = ("a".repeat(64), "b".repeat(64), "c".repeat(64));
        let index = format!(
            r#"{{"schemaVersion": 2, "manifests": [{{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": "sha256:{m}", "size": 1}}]}}"#
        );
        fs::write(layout.join("index.json"), index).unwrap();
        let manifest = |layer: &str| {
            format!(
                r#"{{"schemaVersion": 2, "config": {{"mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": "sha256:{c}", "size": 1}}, "layers": [{{"mediaType":
                    "application/vnd.oci.image.layer.v1.tar+gzip", {layer} "size": 1}}]}}"#
            )
        };
        fs::write(blobs.join(&m), manifest(&format!(r#""digest": "sha256:{l}","#))).unwrap();
        let image = PeerImage::from_layout(&layout, &archive).unwrap();
        assert_eq!(image.layers, [blobs.join(&l)]);
        fs::write(blobs.join(&m), manifest("")).unwrap();
        let e = PeerImage::from_layout(&layout, &archive).err().expect("a layer without a digest");
        assert!(matches!(&e, Failure::Json { path, .. } if *path == blobs.join(&m)), "{e:?}");
    }
}
