//! `strata bench`: the drivers side by side on the same work, each on its own fresh
//! loop-mounted filesystem of the same size (so disk figures are exact statfs deltas
//! and no driver gets a better disk). Phases, per driver and backing filesystem:
//!
//! 1. **pull replay** — unpack the image from its compressed layers (per layer, total,
//!    MB/s of uncompressed data, CPU time), synced; timed again on fresh driver roots
//!    at the end (7 in all), so the unpack has a spread too, each beside the igzip|tar
//!    floor as its reference for the regression gate (meter.rs, gate.rs);
//! 2. **container create** × N;
//! 3. **copy-up** — in each container, the first 1-byte append to lower files of
//!    4 KiB, 1 MiB, 64 MiB and 512 MiB (and the disk each added); a chmod and a chown
//!    of a 512 MiB lower file; a rename of a lower directory of 10,000 files (as `mv`
//!    does it: rename, or copy and delete on EXDEV); deleting a lower tree; a storm of
//!    appends to small lower files. Timed from the application's side (open + write +
//!    close, no fsync), one sample per container; overlay's metacopy, redirect_dir and
//!    index are recorded as the containers were mounted;
//! 4. **disk use** after unpack, after each container, after the writes;
//! 5. **diff** of each container after the writes: time and size.
//!
//! The run is one typed [`Run`](crate::model::Run); the verdict (crate::verdict) and
//! the report (crate::report) read it, and `--from` reads it back.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bench_harness::workload::{generate, gzip, Rng, WorkloadSize};
use driver_core::{Driver, Error, LayerDir, LayerDirKind};
use strata_archive::tarbuild::{EntryMeta, TarBuilder};
use strata_image::image::{open_source, write_layout, BlobSource};
use strata_image::images::{unpack, ImageStore};
use strata_image::registry::{AuthOptions, Limits};
use strata_scratch::{FsKind, ScratchFs};

use crate::args::{BenchDriver, Filesystem, Peer};
use crate::meter::{self, Meter};
use crate::model::{
    err, secs, size, DiskUse, Dist, Host, LayerTime, PeerResult, Run, Skipped, TargetResult, Workload, DEFAULT_IMAGE,
    SCHEMA,
};
use crate::peers::PeerImage;
use crate::verdict::Profile;
use nix::sys::resource::UsageWho::{RUSAGE_CHILDREN, RUSAGE_SELF};

/// `strata bench`'s options (flattened into the CLI's `bench` subcommand).
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Drivers to compare.
    #[arg(long, value_delimiter = ',', default_value = "overlay,vfs,btrfs", value_parser = crate::args::bench_driver)]
    pub drivers: Vec<BenchDriver>,
    /// Backing filesystems for overlay and vfs (btrfs always runs on btrfs).
    #[arg(long, value_delimiter = ',', default_value = "ext4,xfs", value_parser = crate::args::filesystem)]
    pub fs: Vec<Filesystem>,
    /// A real image instead of the embedded default workload, in any form `image
    /// unpack` reads, docker://REF too (repeatable; each is benched in turn).
    #[arg(long = "image", value_name = "IMAGE")]
    pub images: Vec<String>,
    /// For --image docker://REF: plain http, for a local registry.
    #[arg(long)]
    pub insecure: bool,
    /// For --image docker://REF: USER:PASS, or USER to be asked for the password.
    #[arg(long, value_name = "USER[:PASS]")]
    pub creds: Option<String>,
    /// For --image docker://REF: an auth.json as `skopeo login` writes it (default:
    /// $REGISTRY_AUTH_FILE, else $XDG_RUNTIME_DIR/containers/auth.json).
    #[arg(long, value_name = "FILE")]
    pub authfile: Option<PathBuf>,
    /// Containers per driver.
    #[arg(long, default_value_t = 5)]
    pub containers: usize,
    /// Write the results (versioned schema) here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Compare with an earlier --json run of this host: exit 1 naming each regression
    /// (timings as ratios to their in-run reference, exact figures exactly; docs/ci.md).
    /// Repeatable: the baselines' samples are pooled.
    #[arg(long)]
    pub baseline: Vec<PathBuf>,
    /// How much worse (in percent) a timing's ratio must be, its whole interval, to regress.
    #[arg(long, default_value_t = crate::gate::THRESHOLD_PCT)]
    pub max_regress: f64,
    /// How far (in percent) an exact figure may move and still count as the same.
    #[arg(long, default_value_t = crate::gate::TOLERANCE_PCT)]
    pub exact_tolerance: f64,
    /// With --baseline: write the comparison as Markdown here (a CI job's summary page).
    #[arg(long, value_name = "FILE")]
    pub summary_md: Option<PathBuf>,
    /// With --baseline: write a JUnit XML file here, one test case per figure.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// A small workload (a smaller image, 16 MiB largest file), for tests.
    #[arg(long)]
    pub quick: bool,
    /// How the phases' unpacks are synced (none, chain, file; see docs/durability.md).
    /// Each mode's unpack is also timed on its own, whatever this says.
    #[arg(long, value_enum, default_value_t = driver_core::Durability::Chain)]
    pub sync: driver_core::Durability,
    /// Also unpack the same image with these tools (containerd, podman), beside
    /// strata and the floor (the fastest gzip decompressor piped into `tar -x`).
    #[arg(long, value_delimiter = ',', value_parser = crate::args::peer)]
    pub peers: Vec<Peer>,
    /// Write a self-contained HTML report with charts here.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Write the figures here for Prometheus (OpenMetrics text, also valid Prometheus
    /// 0.0.4 text), e.g. as FILE.prom in node-exporter's textfile collector directory.
    #[arg(long, value_name = "FILE")]
    pub openmetrics: Option<PathBuf>,
    /// Do not measure: re-read an earlier --json run (to render its report or
    /// compare it with a baseline). Given several times, compares the hosts of those
    /// runs side by side (same workload required).
    #[arg(long, value_name = "FILE.json")]
    pub from: Vec<PathBuf>,
    /// The workload the verdict is for: ci-runner, dense-host, build-host, big-files
    /// or a FILE.toml (repeatable; default: all four). The verdict is for the
    /// filesystem --root is on.
    #[arg(long = "profile", value_name = "PROFILE", value_delimiter = ',')]
    pub profile_names: Vec<String>,
    /// The profiles, loaded by [`BenchArgs::check_usage`].
    #[arg(skip)]
    pub profiles: Vec<Profile>,
    /// `--root`: the disk the verdict is for (its filesystem decides what is available).
    #[arg(skip)]
    pub root: PathBuf,
    #[command(flatten)]
    pub workloads: crate::workloads::WorkloadArgs,
}

impl BenchArgs {
    /// Checks the options before anything runs and loads the profiles; the message is
    /// a usage error (exit 2).
    pub fn check_usage(&mut self, driver_given: bool) -> Result<(), String> {
        self.profiles = check_usage(
            &self.drivers,
            &self.fs,
            self.containers,
            &self.profile_names,
            driver_given,
            self.from.is_empty(),
        )?;
        self.workloads.check()?;
        if self.baseline.is_empty() && (self.summary_md.is_some() || self.junit.is_some()) {
            return Err("--summary-md and --junit report a comparison: give --baseline FILE".into());
        }
        if self.from.len() > 1 {
            if !self.baseline.is_empty() {
                return Err("--baseline compares one run with earlier runs of its host; with several --from files \
                            give one --from"
                    .into());
            }
            if self.json.is_some() {
                return Err("--json writes one run; several --from files are compared, not merged".into());
            }
        }
        Ok(())
    }
}

fn check_usage(
    drivers: &[BenchDriver],
    fs: &[Filesystem],
    containers: usize,
    profiles: &[String],
    driver_given: bool,
    measuring: bool,
) -> Result<Vec<Profile>, String> {
    if driver_given {
        return Err("bench ignores --driver: it compares drivers; choose them with --drivers overlay,vfs,btrfs".into());
    }
    if measuring && drivers.is_empty() {
        return Err("--drivers names no driver".into());
    }
    if measuring && drivers.iter().any(|d| *d != BenchDriver::Btrfs) && fs.is_empty() {
        return Err("--fs names no filesystem for overlay and vfs".into());
    }
    if containers == 0 {
        return Err("--containers 0: the bench needs at least one container (two or more for a spread)".into());
    }
    if profiles.is_empty() {
        return Ok(Profile::shipped());
    }
    profiles.iter().map(|p| Profile::load(p)).collect()
}

fn used(path: &Path) -> DiskUse {
    DiskUse::of(path)
}

fn cpu_seconds() -> f64 {
    let u = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF);
    u.map(|u| {
        let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
        t(u.user_time()) + t(u.system_time())
    })
    .unwrap_or(0.0)
}

/// What the copy-up layer holds: the first-write files' (name, size), the size of the
/// file chmod and chown change, and the files of the directory that is renamed.
struct CopyupShape {
    sizes: Vec<(String, u64)>,
    big_file_bytes: u64,
    rename_files: usize,
}

/// The copy-up layer: files of each size, a tree to rename, one to delete, and many
/// small files for the write storm. `chmod-target` and `chown-target` are two more
/// names of the largest file (a hardlink in the tar, so the image does not carry
/// another gigabyte): overlay, with `index` off as strata mounts it, copies each name
/// up on its own, while vfs and btrfs change the one inode in place.
fn copyup_layer(quick: bool) -> (Vec<u8>, CopyupShape) {
    let mut rng = Rng::new(99);
    let sizes: Vec<(String, u64)> = if quick {
        vec![("4KiB".into(), 4 << 10), ("1MiB".into(), 1 << 20), ("16MiB".into(), 16 << 20)]
    } else {
        vec![
            ("4KiB".into(), 4 << 10),
            ("1MiB".into(), 1 << 20),
            ("64MiB".into(), 64 << 20),
            ("512MiB".into(), 512 << 20),
        ]
    };
    let mut t = TarBuilder::new();
    t.dir("bench");
    for (name, size) in &sizes {
        t.file(&format!("bench/file-{name}"), &rng.content(*size as usize));
    }
    let (largest, big_file_bytes) = sizes.last().cloned().expect("sizes");
    for name in ["chmod-target", "chown-target"] {
        t.hardlink(&format!("bench/{name}"), &format!("bench/file-{largest}"));
    }
    let rename_files = if quick { 500 } else { 10_000 };
    for (tree, files) in [("rename-me", rename_files), ("delete-me", 200)] {
        t.dir(&format!("bench/{tree}"));
        for i in 0..files {
            t.file(&format!("bench/{tree}/f{i}"), &rng.content(2048));
        }
    }
    t.dir("bench/storm");
    for i in 0..500 {
        t.file_with(&format!("bench/storm/s{i}"), &rng.content(1024), EntryMeta::default());
    }
    (t.build(), CopyupShape { sizes, big_file_bytes, rename_files })
}

/// The layer blobs (compressed as they come) of the embedded default workload, as
/// files in `dir`.
fn default_blobs(quick: bool, dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let size = if quick { WorkloadSize::small() } else { WorkloadSize::default_image() };
    generate(1, size).iter().enumerate().map(|(i, l)| blob_file(dir, &format!("layer-{i}"), &gzip(&l.tar))).collect()
}

fn blob_file(dir: &Path, name: &str, data: &[u8]) -> Result<PathBuf, Error> {
    let path = dir.join(name);
    fs::write(&path, data).map_err(|e| Error::new(e).with_path(&path))?;
    Ok(path)
}

/// The layer blobs of a real image, read from any source `image unpack` takes (a
/// docker://REF is pulled, every blob, into a folder that goes afterwards), streamed
/// into files in `dir`: an image of gigabytes is never held in memory. They are
/// verified when each tool unpacks them.
fn image_blobs(spec: &str, args: &BenchArgs, dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let pulled;
    let cache = strata_scratch::work_dir("strata-bench-pull-").map_err(Error::new)?;
    let (source, image): (Box<dyn BlobSource>, _) = if spec.starts_with("docker://") {
        let auth = AuthOptions { creds: args.creds.clone(), authfile: args.authfile.clone() };
        let limits = Limits {
            timeout: Duration::from_secs(3600),
            low_speed_limit: 1024,
            low_speed_time: Duration::from_secs(30),
        };
        pulled = strata_image::registry::pull_all(spec, args.insecure, &auth, limits, cache.path())?;
        (Box::new(pulled.source.clone()), pulled.image.clone())
    } else {
        open_source(spec, None)?
    };
    image
        .layers
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let path = dir.join(format!("layer-{i}"));
            fs::File::create(&path)
                .and_then(|mut out| std::io::copy(&mut source.open(&l.locator)?, &mut out))
                .map_err(|e| err(format!("{spec}: layer blob {}: {e}", l.locator)))?;
            Ok(path)
        })
        .collect()
}

/// Writes the bench's image as an OCI layout tagged `default`: the image's layers plus
/// the copy-up layer on top. Returns what the copy-up layer holds.
fn bench_layout(dir: &Path, blobs: &[PathBuf], quick: bool) -> Result<CopyupShape, Error> {
    let (copyup, shape) = copyup_layer(quick);
    let mut all = blobs.to_vec();
    let parent = dir.parent().unwrap_or(dir);
    all.push(blob_file(parent, "copyup-layer", &gzip(&copyup))?);
    drop(copyup);
    write_layout(dir, "default", &all)?;
    Ok(shape)
}

fn time<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed().as_secs_f64())
}

fn append_one_byte(path: &Path) -> std::io::Result<()> {
    let mut f = fs::OpenOptions::new().append(true).open(path)?;
    f.write_all(b"x")
}

/// `mv` of a directory: rename, or copy then delete when the kernel says EXDEV
/// (overlayfs without redirect_dir does for a lower directory). Returns how it moved.
fn move_dir(from: &Path, to: &Path) -> std::io::Result<&'static str> {
    match fs::rename(from, to) {
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            fs::create_dir(to)?;
            for e in fs::read_dir(from)? {
                let e = e?;
                fs::copy(e.path(), to.join(e.file_name()))?;
            }
            fs::remove_dir_all(from)?;
            Ok("copy after EXDEV")
        }
        other => other.map(|()| "rename"),
    }
}

/// overlay's `metacopy`, `redirect_dir` and `index` as the overlay at `view` has them.
/// The kernel lists an option in mountinfo only when it differs from the module's
/// default (fs/overlayfs/params.c `ovl_show_options`, Linux 6.5+; super.c before), so an
/// absent one is read from /sys/module/overlay/parameters.
fn overlay_mounted(view: &Path) -> Vec<(String, String)> {
    // mountinfo escapes a space, tab, newline and backslash in a path as octal.
    let escaped: String = view
        .to_string_lossy()
        .chars()
        .map(|c| match c {
            ' ' | '\t' | '\n' | '\\' => format!("\\{:03o}", c as u32),
            c => c.to_string(),
        })
        .collect();
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let Some(line) = info.lines().find(|l| l.split(' ').nth(4) == Some(escaped.as_str())) else {
        return Vec::new();
    };
    let options: Vec<&str> = line.rsplit(' ').next().unwrap_or_default().split(',').collect();
    let param = |name: &str| {
        fs::read_to_string(format!("/sys/module/overlay/parameters/{name}")).map(|v| v.trim() == "Y").unwrap_or(false)
    };
    ["metacopy", "redirect_dir", "index"]
        .into_iter()
        .map(|name| {
            let given = options.iter().find_map(|o| o.strip_prefix(name)?.strip_prefix('='));
            let value = match given {
                Some(v) => v.to_string(),
                // Without redirect_dir=on the default still follows redirects a lower
                // holds, unless redirect_always_follow is off.
                None if name == "redirect_dir" && !param(name) => {
                    if param("redirect_always_follow") { "follow" } else { "nofollow" }.to_string()
                }
                None => if param(name) { "on" } else { "off" }.to_string(),
            };
            (name.to_string(), value)
        })
        .collect()
}

/// `cp -a FROM TO` (GNU cp: reflinks where the filesystem has them, as vfs does), then a
/// syncfs, as a layer commit syncs: the reference for a full-copy container create.
fn cp_a(from: &Path, to: &Path) -> Result<(), Error> {
    let out = std::process::Command::new("cp")
        .arg("-a")
        .arg("--")
        .arg(from)
        .arg(to)
        .output()
        .map_err(|e| err(format!("cp -a (the reference for container create): {e}")))?;
    if !out.status.success() {
        return Err(err(format!(
            "cp -a {} {}: {}",
            from.display(),
            to.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    driver_core::sys::syncfs(to).map_err(|e| Error::new(e).with_path(to))
}

fn open_driver(name: &str, root: &Path) -> Result<Box<dyn Driver>, Error> {
    bench_harness::drivers::open(name, root)
}

/// Bytes of disk the filesystem holds beyond `base`, after a sync (so btrfs has
/// committed its transaction and statfs counts the blocks).
fn grown(path: &Path, base: &DiskUse) -> DiskUse {
    nix::unistd::sync();
    let d = used(path);
    DiskUse { bytes: d.bytes.saturating_sub(base.bytes), inodes: d.inodes.saturating_sub(base.inodes) }
}

/// Unpacks the bench image into a fresh driver root under `root`: (seconds, per-layer times).
fn unpack_once(
    driver: &dyn Driver,
    root: &Path,
    image: &Path,
    sync: driver_core::Durability,
) -> Result<(String, f64, Vec<LayerTime>), Error> {
    let (source, img) = open_source(&format!("{}:default", image.display()), None)?;
    driver.set_durability(sync);
    let images = ImageStore::open(&root.join(driver.name()))?.with_durability(sync);
    let layers = std::sync::Mutex::new(Vec::new());
    let (top, secs) = time(|| {
        unpack(driver, &images, source.as_ref(), &img, "bench", &|ev| {
            layers.lock().expect("layers").push(LayerTime {
                chain_id: ev.chain_id.clone(),
                done_at: ev.elapsed.as_secs_f64(),
                bytes: ev.applied.unwrap_or(0),
            })
        })
    });
    let top = top?.ok_or_else(|| err("the image has no layers"))?;
    Ok((top, secs, layers.into_inner().expect("layers")))
}

/// Runs every phase for one driver on a fresh filesystem of `kind`.
fn run_target(
    driver_name: &str,
    kind: FsKind,
    plan: &Plan,
    containers: usize,
    progress: &dyn Fn(&str),
) -> Result<TargetResult, Error> {
    let scratch = ScratchFs::new(kind, plan.fs_size).map_err(|e| err(format!("scratch {}: {e}", kind.name())))?;
    let root = scratch.path().join("strata");
    let driver = open_driver(driver_name, &root)?;
    let mut r = TargetResult { driver: driver_name.into(), fs: kind.name().into(), ..Default::default() };
    r.features = driver.status()?.features;
    let base = used(scratch.path());
    // Exact figures beside the timings, and the references interleaved with them (meter.rs).
    let meter = Meter::new(scratch.device(), scratch.path());
    let mut refs: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut cpu: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let beside = |refs: &mut BTreeMap<String, Vec<f64>>, cpu: &mut BTreeMap<String, Vec<f64>>, k: &str, (s, c)| {
        refs.entry(k.to_string()).or_default().push(s);
        cpu.entry(format!("{k} reference")).or_default().push(c);
    };

    progress("pull replay");
    let cpu0 = cpu_seconds();
    let c0 = meter.snap();
    let (top, first, layers) = unpack_once(driver.as_ref(), &root, &plan.layout, plan.sync)?;
    r.unpack_cpu_seconds = cpu_seconds() - cpu0;
    cpu.entry("unpack".into()).or_default().push(r.unpack_cpu_seconds);
    meter::add(&mut r.counts, "unpack", &c0, &meter.snap());
    r.unpack_bytes = layers.iter().map(|l| l.bytes).sum();
    r.unpack_layers = layers;
    r.disk.insert("after_unpack".into(), grown(scratch.path(), &base));
    beside(&mut refs, &mut cpu, "unpack", meter::floor(&plan.floor_layers, scratch.path(), "0")?);

    // A driver whose layer is a full copy of its tree (vfs) stands beside `cp -a` of the
    // same tree, as many times, on the same filesystem (issue 17: at least 1.5x faster).
    // Each create and its `cp -a` run one after the other, so a change in the host's
    // load between them falls on both: run as two blocks, three creates then three
    // copies, the ratio on a host where other work came and went moved between 0.50x
    // and 0.95x from run to run.
    let reference = match driver.layer_dir(&top) {
        Ok(LayerDir { path, kind: LayerDirKind::FullCopy }) => Some(path),
        _ => None,
    };
    progress(if reference.is_some() { "container create, each beside cp -a of the image" } else { "container create" });
    let (mut create, mut cp) = (Vec::new(), Vec::new());
    r.disk_by_containers.push(grown(scratch.path(), &base).bytes);
    for i in 0..containers {
        let c0 = meter.snap();
        let (res, s, c) = meter::timed(RUSAGE_SELF, || driver.create(&format!("c{i}"), Some(&top), true));
        res?;
        create.push(s);
        cpu.entry("create".into()).or_default().push(c);
        r.disk_by_containers.push(grown(scratch.path(), &base).bytes);
        meter::add(&mut r.counts, "create", &c0, &meter.snap());
        if reference.is_none() {
            beside(&mut refs, &mut cpu, "create", meter::fsync_loop(scratch.path(), "create")?);
        }
        if let Some(path) = &reference {
            let to = scratch.path().join(format!("cp-a-{i}"));
            let (res, s, c) = meter::timed(RUSAGE_CHILDREN, || cp_a(path, &to));
            res?;
            cp.push(s);
            cpu.entry("create reference".into()).or_default().push(c);
            fs::remove_dir_all(&to).map_err(|e| Error::new(e).with_path(&to))?;
            // Synced outside the timing, as after each create: else the next create's
            // or copy's syncfs also writes this removal.
            nix::unistd::sync();
        }
    }
    r.create = Dist::of(create);
    if !cp.is_empty() {
        refs.insert("create".into(), cp.clone());
    }
    r.create_cp_a = Dist::of(cp);
    r.disk.insert("after_containers".into(), grown(scratch.path(), &base));

    progress("copy-up");
    let mut samples: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut disk_samples: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for i in 0..containers {
        refs.entry("copyup".into()).or_default().push(meter::fsync_loop(scratch.path(), "copyup")?.0);
        let v = driver.mount(&format!("c{i}"))?;
        if i == 0 && driver_name == "overlay" {
            r.mounted = overlay_mounted(&v);
        }
        let b = v.join("bench");
        let io = |e: std::io::Error| err(format!("copy-up in c{i}: {e}"));
        let mut add = |k: &str, s: f64| samples.entry(k.to_string()).or_default().push(s);
        for (name, _) in &plan.shape.sizes {
            // The disk each first write adds: a statfs delta around it, synced both sides.
            let c0 = meter.snap();
            let before = grown(scratch.path(), &base);
            let (res, s) = time(|| append_one_byte(&b.join(format!("file-{name}"))));
            res.map_err(io)?;
            add(&format!("write {name}"), s);
            let after = grown(scratch.path(), &base);
            meter::add(&mut r.counts, &format!("copyup.write {name}"), &c0, &meter.snap());
            disk_samples.entry(format!("write {name}")).or_default().push(after.bytes as f64 - before.bytes as f64);
        }
        let c0 = meter.snap();
        let (res, s) = time(|| fs::set_permissions(b.join("chmod-target"), fs::Permissions::from_mode(0o600)));
        res.map_err(io)?;
        add("chmod big file", s);
        meter::add(&mut r.counts, "copyup.chmod big file", &c0, &meter.snap());
        let c0 = meter.snap();
        let (res, s) = time(|| std::os::unix::fs::chown(b.join("chown-target"), Some(1), Some(1)));
        res.map_err(io)?;
        add("chown big file", s);
        meter::add(&mut r.counts, "copyup.chown big file", &c0, &meter.snap());
        let c0 = meter.snap();
        let (res, s) = time(|| move_dir(&b.join("rename-me"), &b.join("renamed")));
        r.rename_by = res.map_err(io)?.to_string();
        add("rename dir", s);
        meter::add(&mut r.counts, "copyup.rename dir", &c0, &meter.snap());
        let c0 = meter.snap();
        let (res, s) = time(|| fs::remove_dir_all(b.join("delete-me")));
        res.map_err(io)?;
        add("delete tree", s);
        meter::add(&mut r.counts, "copyup.delete tree", &c0, &meter.snap());
        let c0 = meter.snap();
        let (res, s) = time(|| (0..500).try_for_each(|j| append_one_byte(&b.join(format!("storm/s{j}")))));
        res.map_err(io)?;
        add("storm: 500 small appends", s);
        meter::add(&mut r.counts, "copyup.storm: 500 small appends", &c0, &meter.snap());
        driver.unmount(&format!("c{i}"))?;
    }
    r.copyup = samples.into_iter().map(|(k, v)| (k, Dist::of(v))).collect();
    r.copyup_disk = disk_samples.into_iter().map(|(k, v)| (k, Dist::of(v))).collect();
    r.disk.insert("after_writes".into(), grown(scratch.path(), &base));

    progress("diff");
    let mut diffs = Vec::new();
    for i in 0..containers {
        refs.entry("diff".into()).or_default().push(meter::fsync_loop(scratch.path(), "diff")?.0);
        let mut sink = CountingSink(0);
        let c0 = meter.snap();
        let (res, s) = time(|| driver.diff(&format!("c{i}"), &mut sink));
        res?;
        meter::add(&mut r.counts, "diff", &c0, &meter.snap());
        *r.counts.entry("diff.tar_bytes".into()).or_default() += sink.0 as i64;
        diffs.push(s);
        r.diff_bytes = sink.0;
    }
    r.diff = Dist::of(diffs);
    if !plan.workloads.is_empty() {
        let t = crate::workloads::Target {
            driver: driver.as_ref(),
            top: &top,
            image: &plan.image,
            fs: scratch.path(),
            base: &base,
            env: &plan.env,
            containers,
        };
        r.workloads = crate::workloads::measure(&t, &plan.workloads, progress);
    }

    // More unpacks for a spread, each into a fresh driver root on the same filesystem,
    // after the disk figures were taken.
    let mut unpacks = vec![first];
    for i in 1..plan.unpack_runs {
        progress(&format!("pull replay {}/{}", i + 1, plan.unpack_runs));
        let again = scratch.path().join(format!("strata-{i}"));
        // Each unpack beside a floor, which goes first every other time: a load that rises
        // or falls through a pair then falls on both alike over the run.
        let floor = || meter::floor(&plan.floor_layers, scratch.path(), &i.to_string());
        let before = if i % 2 == 1 { Some(floor()?) } else { None };
        let d = open_driver(driver_name, &again)?;
        let (res, _, c) = meter::timed(RUSAGE_SELF, || unpack_once(d.as_ref(), &again, &plan.layout, plan.sync));
        unpacks.push(res?.1);
        cpu.entry("unpack".into()).or_default().push(c);
        let after = match before {
            Some(f) => f,
            None => floor()?,
        };
        beside(&mut refs, &mut cpu, "unpack", after);
        // Gone before the next, so every unpack after the first meets the same filesystem
        // (and vfs's full copies do not fill it): through the driver, as btrfs's layers
        // are read-only subvolumes.
        ImageStore::open(&again.join(d.name()))?.remove(d.as_ref(), "bench")?;
        drop(d);
        fs::remove_dir_all(&again).map_err(|e| Error::new(e).with_path(&again))?;
        nix::unistd::sync();
    }
    r.unpack = Dist::of(unpacks);
    (r.unpack_by_sync, r.unpack_by_sync_on_disk) =
        crate::syncmodes::unpack_by_mode(driver_name, scratch.path(), &plan.layout, plan.sync_rounds, progress)?;
    r.reference = refs.into_iter().map(|(k, v)| (k, Dist::of(v))).collect();
    r.cpu = cpu.into_iter().map(|(k, v)| (k, Dist::of(v))).collect();
    drop(driver);
    drop(scratch);
    Ok(r)
}

/// Counts the bytes written to it (a diff's size without keeping the diff).
pub(crate) struct CountingSink(pub(crate) u64);

impl Write for CountingSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Which (driver, filesystem) pairs run: btrfs on btrfs, the others on each of `fs`.
fn targets(args: &BenchArgs) -> Vec<(String, FsKind)> {
    let mut out = Vec::new();
    for d in &args.drivers {
        if *d == BenchDriver::Btrfs {
            out.push((d.name().to_string(), FsKind::Btrfs));
            continue;
        }
        for f in &args.fs {
            out.push((d.name().to_string(), f.kind()));
        }
    }
    out
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
}

/// Why a target cannot be tried here, and the fix, before trying it.
fn cannot_run(driver: &str, kind: FsKind) -> Option<(String, String)> {
    let (mkfs, package) = match kind {
        FsKind::Ext4 => ("mkfs.ext4", "e2fsprogs"),
        FsKind::Xfs => ("mkfs.xfs", "xfsprogs"),
        FsKind::Btrfs => ("mkfs.btrfs", "btrfs-progs"),
    };
    if !on_path(mkfs) {
        return Some((
            format!("{mkfs} is not installed, so no {} scratch filesystem can be made for {driver}", kind.name()),
            format!("apt-get install {package}"),
        ));
    }
    None
}

fn hostname() -> String {
    nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default()
}

/// The filesystem of `path`'s nearest existing ancestor.
fn fs_of(path: &Path) -> String {
    let mut p = path.to_path_buf();
    while !p.exists() {
        if !p.pop() {
            break;
        }
    }
    strata_scratch::fs_type(&p).unwrap_or_else(|_| "unknown".into())
}

fn host(root: &Path) -> Host {
    let uname = nix::sys::utsname::uname().ok();
    let scratch_dir = strata_scratch::scratch_parent();
    Host {
        hostname: hostname(),
        kernel: uname.as_ref().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default(),
        machine: uname.as_ref().map(|u| u.machine().to_string_lossy().into_owned()).unwrap_or_default(),
        cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        strata: env!("CARGO_PKG_VERSION").into(),
        time: driver_core::store::now_secs() as i64,
        root: root.to_path_buf(),
        root_fs: fs_of(root),
        scratch_fs: fs_of(&scratch_dir),
        scratch_dir,
    }
}

/// `p50 [lo–hi]` of a distribution of seconds.
fn spread(d: &Dist) -> String {
    if d.n() < 2 {
        return secs(d.p50);
    }
    format!("{} [{}–{}]", secs(d.p50), secs(d.lo), secs(d.hi))
}

fn print_table(run: &Run) {
    for image in run.images() {
        let results: Vec<&TargetResult> = run.results.iter().filter(|r| r.image == image).collect();
        let big = results.iter().find(|r| r.ok()).map(|r| r.largest_write()).unwrap_or_default();
        println!("\nimage: {image}   (median [interval of the median]; samples per figure below)");
        println!(
            "{:<13} {:>26} {:>26} {:>26} {:>10} {:>26}",
            "driver/fs",
            "unpack",
            "create",
            format!("first write {}", big.trim_start_matches("write ")),
            "disk/ctr",
            "diff"
        );
        for r in &results {
            if let Some(e) = &r.error {
                println!("{:<13} could not run: {e}", r.label());
                continue;
            }
            println!(
                "{:<13} {:>26} {:>26} {:>26} {:>10} {:>26}",
                r.label(),
                spread(&r.unpack),
                spread(&r.create),
                r.copyup.get(&big).map(spread).unwrap_or_default(),
                size(r.per_container_disk().p50),
                spread(&r.diff)
            );
        }
        if let Some(r) = results.iter().find(|r| r.ok()) {
            println!(
                "samples: unpack {}, create {}, first writes {}, diff {} (intervals cover the median with {:.0}% \
                 confidence at {} samples)",
                r.unpack.n(),
                r.create.n(),
                r.copyup.get(&big).map(Dist::n).unwrap_or(0),
                r.diff.n(),
                r.create.confidence * 100.0,
                r.create.n()
            );
        }
        print_metadata_ops(&run.workload, &results);
        crate::workloads::print(&results);
        crate::syncmodes::print(&results);
        for r in results.iter().filter(|r| r.ok() && r.create_cp_a.n() > 0) {
            println!(
                "{}: container create {} beside cp -a of the same tree {} (synced): {:.2}x cp -a's time",
                r.label(),
                spread(&r.create),
                spread(&r.create_cp_a),
                r.create.p50 / r.create_cp_a.p50
            );
        }
    }
}

/// The copy-up of metadata: chmod and chown of the big lower file, rename of the lower
/// directory, with overlay's features as mounted (they decide whether these copy data).
fn print_metadata_ops(w: &Workload, results: &[&TargetResult]) {
    let op = |r: &TargetResult, k: &str| r.copyup.get(k).map(spread).unwrap_or_else(|| "-".into());
    for r in results.iter().filter(|r| r.ok()) {
        let largest = r.largest_write();
        let big = largest.trim_start_matches("write ");
        let mounted: Vec<String> = r.mounted.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mounted = if mounted.is_empty() { String::new() } else { format!(" [{}]", mounted.join(", ")) };
        // Without metacopy, what the driver does by default and when (overlay takes it
        // only over layers whose paths fit the module's redirect_max).
        let metacopy_off = r.mounted.iter().any(|(k, v)| k == "metacopy" && v == "off");
        let policy = match r.features.iter().find(|(k, _)| k == "copy_up") {
            Some((_, how)) if metacopy_off => format!("; copy-up: {how}"),
            _ => String::new(),
        };
        println!(
            "{}{mounted}: chmod {big} {}, chown {big} {}, rename of a {}-file dir {} ({}){policy}",
            r.label(),
            op(r, "chmod big file"),
            op(r, "chown big file"),
            w.rename_files,
            op(r, "rename dir"),
            r.rename_by
        );
    }
}

fn print_verdicts(run: &Run) {
    let images = run.images();
    for v in &run.verdicts {
        let tag = if images.len() > 1 { format!("[{}] ", v.image) } else { String::new() };
        println!("\n{tag}verdict {}", v.summary);
        for r in &v.reasons {
            println!("  - {r}");
        }
        for n in &v.notes {
            println!("  note: {n}");
        }
    }
}

/// One line per target that could not run, with its fix.
fn print_missing(run: &Run) {
    for s in &run.skipped {
        println!("not run: {}/{}: {}; to fix: {}", s.driver, s.fs, s.why, s.fix);
    }
    for r in run.results.iter().filter(|r| !r.ok()) {
        println!("not run: {}: {}", r.label(), r.error.as_deref().unwrap_or_default());
    }
}

/// What a bench of one image needs: the layout with the copy-up layer, what it holds.
struct Plan {
    layout: PathBuf,
    /// The layout's layer blobs, for the floor that stands beside each unpack.
    floor_layers: Vec<PathBuf>,
    shape: CopyupShape,
    fs_size: u64,
    unpack_runs: usize,
    /// `--replay` and `--run`, with the image's label and its config's `Env`.
    workloads: Vec<crate::workloads::Spec>,
    image: String,
    env: Vec<String>,
    sync: driver_core::Durability,
    /// Rounds of the per-`--sync`-mode unpacks (one with --quick: the tests' runs).
    sync_rounds: usize,
}

/// Runs every target on one image; adds peers when asked.
fn bench_image(args: &BenchArgs, label: &str, blobs: &[PathBuf], work: &Path, run: &mut Run) -> Result<(), Error> {
    let layout = work.join("bench-image");
    let shape = bench_layout(&layout, blobs, args.quick)?;
    run.workload.big_file_bytes = shape.big_file_bytes;
    run.workload.rename_files = shape.rename_files;
    let floor_layers = blobs.iter().cloned().chain([work.join("copyup-layer")]).collect();
    let plan = Plan {
        layout,
        floor_layers,
        shape,
        fs_size: fs_size(args, blobs),
        unpack_runs: run.workload.unpack_runs,
        workloads: args.workloads.specs.clone(),
        image: label.to_string(),
        env: if args.images.is_empty() { Vec::new() } else { crate::workloads::image_env(label) },
        sync: args.sync,
        // Three rounds of each mode at most beside the gate's unpacks (one with --quick).
        sync_rounds: if args.quick { 1 } else { run.workload.unpack_runs.min(3) },
    };
    let all = targets(args);
    for (i, (d, kind)) in all.iter().enumerate() {
        let tag = format!("[{label}] [{}/{}] {d} on {}", i + 1, all.len(), kind.name());
        if let Some((why, fix)) = cannot_run(d, *kind) {
            eprintln!("{tag}: not run: {why}; to fix: {fix}");
            let s = Skipped { driver: d.clone(), fs: kind.name().into(), why, fix };
            if !run.skipped.contains(&s) {
                run.skipped.push(s);
            }
            continue;
        }
        eprintln!("{tag}: starting");
        let started = Instant::now();
        let progress = |phase: &str| eprintln!("{tag}: {phase} ({:.0} s)", started.elapsed().as_secs_f64());
        let mut r = run_target(d, *kind, &plan, args.containers, &progress).unwrap_or_else(|e| {
            eprintln!("{tag}: could not run: {e}");
            TargetResult { driver: d.clone(), fs: kind.name().into(), error: Some(e.to_string()), ..Default::default() }
        });
        r.image = label.to_string();
        run.results.push(r);
    }
    if args.peers.is_empty() {
        return Ok(());
    }
    // The peers unpack the image itself, without the copy-up layer.
    let peer_layout = work.join("peer-image");
    write_layout(&peer_layout, "bench", blobs)?;
    let image = PeerImage::from_layout(&peer_layout, &work.join("peer-image.tar"))?;
    let runs = if args.quick { 1 } else { 3 };
    for (d, kind) in &all {
        if cannot_run(d, *kind).is_some() {
            continue;
        }
        let tag = format!("[{label}] peers beside {d} on {}", kind.name());
        let progress = |what: &str| eprintln!("{tag}: {what}");
        for mut p in crate::peers::compare(&args.peers, d, *kind, &image, runs, &progress) {
            p.image = label.to_string();
            run.peers.push(p);
        }
    }
    Ok(())
}

/// The scratch filesystem's size: 12 GiB, or more when the image and its containers
/// (vfs copies the image for each) could need more.
fn fs_size(args: &BenchArgs, blobs: &[PathBuf]) -> u64 {
    (12u64 << 30).max(need(args, blobs))
}

/// About the most one target writes: the image (about three times its compressed
/// size, uncompressed) and the copy-up layer per layer and per container, as vfs on
/// ext4 stores it, plus overlay/ext4's three full copies of the largest file per
/// container (its first write, chmod and chown).
fn need(args: &BenchArgs, blobs: &[PathBuf]) -> u64 {
    let image: u64 = blob_bytes(blobs) * 3;
    let (copyup, largest): (u64, u64) = if args.quick { (48 << 20, 16 << 20) } else { (620 << 20, 512 << 20) };
    let containers = args.containers as u64;
    (image + copyup) * (containers + blobs.len() as u64 + 2) + containers * 3 * largest
}

/// The size of the blob files together.
fn blob_bytes(blobs: &[PathBuf]) -> u64 {
    blobs.iter().map(|b| fs::metadata(b).map_or(0, |m| m.len())).sum()
}

pub fn run(args: &BenchArgs) -> Result<(), Error> {
    if args.from.len() > 1 {
        return compare_hosts(args);
    }
    let mut run = match args.from.first() {
        Some(path) => Run::load(path).map_err(|e| crate::gate::fail(crate::gate::INPUTS, e))?,
        None => measure(args)?,
    };
    run.verdicts = crate::verdict::verdicts(&run, &args.profiles);
    print_table(&run);
    print_peers(&run.peers);
    print_verdicts(&run);
    if !run.skipped.is_empty() || run.results.iter().any(|r| !r.ok()) {
        println!();
        print_missing(&run);
    }
    if let Some(path) = &args.json {
        write_output(path, &serde_json::to_vec_pretty(&run).expect("json"))?;
        eprintln!("strata bench: wrote {}", path.display());
    }
    if let Some(path) = &args.report {
        write_output(path, crate::report::html(&run).as_bytes())?;
        eprintln!("strata bench: wrote {}", path.display());
    }
    if let Some(path) = &args.openmetrics {
        write_openmetrics(path, &[&run])?;
    }
    if !args.baseline.is_empty() {
        let opts = crate::gate::Options {
            threshold_pct: args.max_regress,
            tolerance_pct: args.exact_tolerance,
            summary_md: args.summary_md.clone(),
            junit: args.junit.clone(),
        };
        crate::gate::run(&run, &args.baseline, &opts)?;
    }
    if !run.results.iter().any(TargetResult::ok) {
        return Err(err(format!(
            "no target ran ({} not run, {} failed); see the lines above",
            run.skipped.len(),
            run.results.len()
        )));
    }
    Ok(())
}

/// `--from a.json --from b.json ...`: the hosts side by side, in the terminal and in
/// `--report`; `--openmetrics` writes every host's figures into one file.
fn compare_hosts(args: &BenchArgs) -> Result<(), Error> {
    let fleet =
        crate::fleet::Fleet::load(&args.from, &args.profiles).map_err(|e| crate::gate::fail(crate::gate::INPUTS, e))?;
    crate::fleet::print(&fleet);
    if let Some(path) = &args.report {
        write_output(path, crate::fleet::html(&fleet).as_bytes())?;
        eprintln!("strata bench: wrote {}", path.display());
    }
    if let Some(path) = &args.openmetrics {
        write_openmetrics(path, &fleet.hosts.iter().map(|h| &h.run).collect::<Vec<_>>())?;
    }
    Ok(())
}

/// Writes the OpenMetrics text through a temp file renamed over `path`: node-exporter's
/// textfile collector may read the file at any moment and must never see half of it
/// (the temp name does not end in `.prom`, so the collector skips it).
/// Writes one of the bench's outputs whole or not at all: a bench killed while writing
/// its `--json` must not leave half a baseline for the next run to compare against.
fn write_output(path: &Path, data: &[u8]) -> Result<(), Error> {
    driver_core::json::write_atomic_with(path, |w| w.write_all(data).map_err(|e| Error::new(e).with_path(path)))
}

fn write_openmetrics(path: &Path, runs: &[&Run]) -> Result<(), Error> {
    write_output(path, crate::openmetrics::text(runs).as_bytes())?;
    eprintln!("strata bench: wrote {}", path.display());
    Ok(())
}

/// Before a bench: scratch left by a killed bench is removed; a tmpfs scratch dir (the
/// bench would measure RAM) and too little free space are refused.
fn check_scratch(needed: u64) -> Result<(), Error> {
    for line in strata_scratch::remove_stale() {
        eprintln!("strata bench: {line}");
    }
    let dir = strata_scratch::scratch_parent();
    let fs = fs_of(&dir);
    if fs == "tmpfs" {
        return Err(err(format!(
            "scratch dir {} is on tmpfs: the bench would measure RAM, not a disk; set TMPDIR (or \
             STRATA_SCRATCH_DIR) to a directory on a disk",
            dir.display()
        )));
    }
    let free = nix::sys::statvfs::statvfs(&dir).map(|s| s.blocks_available() * s.fragment_size()).unwrap_or(0);
    if free < needed {
        return Err(err(format!(
            "scratch dir {} ({fs}) has {} free; the bench needs about {} (set TMPDIR or STRATA_SCRATCH_DIR to a \
             bigger disk, or use --containers/--quick)",
            dir.display(),
            size(free as f64),
            size(needed as f64)
        )));
    }
    Ok(())
}

/// On SIGINT or SIGTERM: unmount and remove every scratch filesystem, mount, loop
/// device and directory this bench made, then exit as the signal would (128 + signo).
fn release_on_signal() -> std::io::Result<()> {
    driver_core::interrupt::on_request(|sig| {
        eprintln!("strata bench: interrupted (signal {sig}); removing its scratch filesystems");
        let n = strata_scratch::release_all();
        eprintln!("strata bench: removed {n} scratch dir(s) with their mounts and loop devices");
        std::process::exit(128 + sig);
    })
}

/// Runs the bench: every image on every target, then the peers.
fn measure(args: &BenchArgs) -> Result<Run, Error> {
    if !nix::unistd::geteuid().is_root() {
        return Err(err("strata bench makes loop-mounted scratch filesystems and needs root"));
    }
    release_on_signal().map_err(|e| err(format!("installing the SIGINT/SIGTERM handler: {e}")))?;
    for p in &args.peers {
        if let Some(why) = crate::peers::unavailable(*p) {
            eprintln!("strata bench: peer {} will not run: {why}", p.name());
        }
    }
    let images: Vec<String> =
        if args.images.is_empty() { vec![DEFAULT_IMAGE.to_string()] } else { args.images.clone() };
    let mut run = Run {
        schema: SCHEMA,
        host: host(&args.root),
        workload: Workload {
            images: images.clone(),
            containers: args.containers,
            // Seven in full: the gate judges each unpack beside its floor (docs/ci.md).
            unpack_runs: if args.quick { 2 } else { 7 },
            quick: args.quick,
            copyup_timing: "open + 1-byte append + close, no fsync".into(),
            big_file_bytes: 0,
            rename_files: 0,
            workloads: args.workloads.specs.iter().map(|s| s.name.clone()).collect(),
        },
        ..Default::default()
    };
    for label in &images {
        let work = strata_scratch::work_dir("strata-bench-").map_err(Error::new)?;
        let blobs = if args.images.is_empty() {
            eprintln!("strata bench: generating the embedded default workload...");
            default_blobs(args.quick, work.path())?
        } else {
            eprintln!("strata bench: reading {label}...");
            // An --image that cannot be read or pulled (missing, refused, no credentials)
            // is an input of the run, like a bad baseline: exit 2, not "could not measure".
            image_blobs(label, args, work.path()).map_err(|e| crate::gate::fail(crate::gate::INPUTS, e))?
        };
        let layout_bytes: u64 = blob_bytes(&blobs) * 2;
        check_scratch(need(args, &blobs).min(fs_size(args, &blobs)) + layout_bytes)?;
        eprintln!(
            "strata bench: scratch in {} ({}); verdict for --root {} ({})",
            run.host.scratch_dir.display(),
            run.host.scratch_fs,
            run.host.root.display(),
            run.host.root_fs
        );
        bench_image(args, label, &blobs, work.path(), &mut run)?;
    }
    Ok(run)
}

/// The peers table: each tool's unpack beside strata's, as a ratio to strata's.
fn print_peers(peers: &[PeerResult]) {
    if peers.is_empty() {
        return;
    }
    println!("\nunpack of the image alone (median of {} run(s); end to end from the oci-archive, synced)", {
        peers.iter().map(|p| p.unpack.samples.len()).max().unwrap_or(0)
    });
    println!("{:<28} {:<12} {:>10} {:>10} {:>14}", "tool (storage)", "beside", "unpack", "disk", "vs strata");
    for p in peers {
        let name = format!("{} ({})", p.tool, p.driver);
        let beside = format!("{}/{}", p.strata_driver, p.fs);
        if let Some(e) = &p.error {
            println!("{name:<28} {beside:<12} not run: {e}");
            continue;
        }
        let strata = peers
            .iter()
            .find(|s| s.tool == "strata" && s.image == p.image && s.strata_driver == p.strata_driver && s.fs == p.fs)
            .map(|s| s.unpack.p50)
            .unwrap_or(0.0);
        let ratio = if strata > 0.0 { format!("{:.2}x", p.unpack.p50 / strata) } else { "-".into() };
        println!("{name:<28} {beside:<12} {:>10} {:>10} {:>14}", secs(p.unpack.p50), size(p.disk_bytes as f64), ratio);
    }
    // The target is strata at or under 0.85x the floor (design §8).
    for s in peers.iter().filter(|s| s.tool == "strata" && s.error.is_none()) {
        let floor = peers.iter().find(|f| {
            f.tool == "floor"
                && f.image == s.image
                && f.strata_driver == s.strata_driver
                && f.fs == s.fs
                && f.error.is_none()
        });
        if let Some(f) = floor.filter(|f| f.unpack.p50 > 0.0) {
            println!("strata ({}) on {}: {:.2}x the floor ({})", s.driver, s.fs, s.unpack.p50 / f.unpack.p50, f.driver);
        }
    }
}
