//! `strata bench`: the drivers side by side on the same work, each on its own fresh
//! loop-mounted filesystem of the same size (so disk figures are exact statfs deltas
//! and no driver gets a better disk). Phases, per driver and backing filesystem:
//!
//! 1. **pull replay** — unpack the image from its compressed layers (per layer, total,
//!    MB/s of uncompressed data, CPU time), synced;
//! 2. **container create** × N;
//! 3. **copy-up** — in each container, the first 1-byte append to lower files of
//!    4 KiB, 1 MiB, 64 MiB and 512 MiB; a chmod of a 64 MiB lower file; a rename of a
//!    lower directory (as `mv` does it: rename, or copy and delete on EXDEV); deleting
//!    a lower tree; a storm of appends to small lower files. Timed from the
//!    application's side (open + write + close, no fsync), as distributions over the
//!    N containers;
//! 4. **disk use** after unpack, after N containers, after the writes;
//! 5. **diff** of one container after the writes: time and size.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use driver_core::image::{open_source, write_layout};
use driver_core::images::{unpack, ImageStore};
use driver_core::scratch::{FsKind, ScratchFs};
use driver_core::tarbuild::{EntryMeta, TarBuilder};
use driver_core::workload::{generate, gzip, Rng, WorkloadSize};
use driver_core::{Cause, Driver, Error};

use crate::peers::{PeerImage, PeerResult};
use serde::{Deserialize, Serialize};
use serde_json::json;

pub const SCHEMA: u32 = 1;

/// The image label of the embedded default workload.
pub const DEFAULT_IMAGE: &str = "embedded default";

#[derive(Clone, Debug)]
pub struct BenchArgs {
    pub drivers: Vec<String>,
    pub fs: Vec<String>,
    pub images: Vec<String>,
    pub containers: usize,
    pub json: Option<PathBuf>,
    pub baseline: Option<PathBuf>,
    pub max_regress: f64,
    pub quick: bool,
    pub peers: Vec<String>,
    pub report: Option<PathBuf>,
    /// Re-read an earlier --json run instead of measuring.
    pub from: Option<PathBuf>,
}

/// A distribution of samples, in seconds.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Dist {
    pub samples: Vec<f64>,
    pub median: f64,
    pub p99: f64,
}

impl Dist {
    pub(crate) fn of(mut samples: Vec<f64>) -> Dist {
        let mut sorted = samples.clone();
        sorted.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
        let pick = |q: f64| {
            if sorted.is_empty() {
                0.0
            } else {
                sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
            }
        };
        let (median, p99) = (pick(0.5), pick(0.99));
        samples.shrink_to_fit();
        Dist { samples, median, p99 }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct DiskUse {
    pub bytes: u64,
    pub inodes: u64,
}

/// Everything measured for one driver on one filesystem.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TargetResult {
    /// Which image: `embedded default` or the SRC given to --image.
    #[serde(default)]
    pub image: String,
    pub driver: String,
    pub fs: String,
    pub features: Vec<(String, String)>,
    pub unpack_layers: Vec<(String, f64, u64)>,
    pub unpack_seconds: f64,
    pub unpack_mb_per_s: f64,
    pub unpack_cpu_seconds: f64,
    pub create: Dist,
    pub copyup: BTreeMap<String, Dist>,
    pub disk: BTreeMap<String, DiskUse>,
    /// Disk use (bytes over the empty filesystem) after the image is unpacked and after
    /// each container is created: entry i is with i containers.
    #[serde(default)]
    pub disk_by_containers: Vec<u64>,
    pub diff_seconds: f64,
    pub diff_bytes: u64,
    pub error: Option<String>,
}

pub(crate) fn err(msg: impl Into<String>) -> Error {
    Error::new(Cause::Other(msg.into()))
}

pub(crate) fn used(path: &Path) -> DiskUse {
    match nix::sys::statvfs::statvfs(path) {
        // btrfs allocates inodes on demand and reports no inode totals: count them.
        Ok(s) if s.files() == 0 => DiskUse {
            bytes: (s.blocks() - s.blocks_free()) * s.fragment_size(),
            inodes: driver_core::sys::disk_usage(path).map(|u| u.inodes).unwrap_or(0),
        },
        Ok(s) => {
            DiskUse { bytes: (s.blocks() - s.blocks_free()) * s.fragment_size(), inodes: s.files() - s.files_free() }
        }
        Err(_) => DiskUse::default(),
    }
}

fn cpu_seconds() -> f64 {
    let u = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF);
    u.map(|u| {
        let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
        t(u.user_time()) + t(u.system_time())
    })
    .unwrap_or(0.0)
}

/// The copy-up layer: files of each size, a tree to rename, one to delete, and many
/// small files for the write storm.
fn copyup_layer(quick: bool) -> (Vec<u8>, Vec<(String, u64)>) {
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
    let chmod_size = if quick { 4 << 20 } else { 64 << 20 };
    t.file("bench/chmod-target", &rng.content(chmod_size));
    for tree in ["rename-me", "delete-me"] {
        t.dir(&format!("bench/{tree}"));
        for i in 0..200 {
            t.file(&format!("bench/{tree}/f{i}"), &rng.content(2048));
        }
    }
    t.dir("bench/storm");
    for i in 0..500 {
        t.file_with(&format!("bench/storm/s{i}"), &rng.content(1024), EntryMeta::default());
    }
    (t.build(), sizes)
}

/// The layer blobs (compressed as they come) of the embedded default workload.
fn default_blobs(quick: bool) -> Vec<Vec<u8>> {
    let size = if quick { WorkloadSize::small() } else { WorkloadSize::default_image() };
    generate(1, size).iter().map(|l| gzip(&l.tar)).collect()
}

/// The layer blobs of a real image, read from any source `image unpack` takes. They
/// are verified when each tool unpacks them.
fn image_blobs(spec: &str) -> Result<Vec<Vec<u8>>, Error> {
    let (source, image) = open_source(spec, None)?;
    image
        .layers
        .iter()
        .map(|l| {
            let mut data = Vec::new();
            source
                .open(&l.locator)
                .and_then(|mut r| r.read_to_end(&mut data))
                .map_err(|e| err(format!("{spec}: layer blob {}: {e}", l.locator)))?;
            Ok(data)
        })
        .collect()
}

/// Writes the bench's image as an OCI layout tagged `default`: the image's layers plus
/// the copy-up layer on top. Returns the copy-up file sizes.
fn bench_layout(dir: &Path, blobs: &[Vec<u8>], quick: bool) -> Result<Vec<(String, u64)>, Error> {
    let (copyup, sizes) = copyup_layer(quick);
    let mut all = blobs.to_vec();
    all.push(gzip(&copyup));
    write_layout(dir, "default", &all)?;
    Ok(sizes)
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
/// (overlayfs without redirect_dir does for a lower directory).
fn move_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    match fs::rename(from, to) {
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            fs::create_dir(to)?;
            for e in fs::read_dir(from)? {
                let e = e?;
                fs::copy(e.path(), to.join(e.file_name()))?;
            }
            fs::remove_dir_all(from)
        }
        other => other,
    }
}

fn open_driver(name: &str, root: &Path) -> Result<Box<dyn Driver>, Error> {
    crate::drivers::open(name, root)
}

/// Runs every phase for one driver on a fresh filesystem of `kind`.
fn run_target(
    driver_name: &str,
    kind: FsKind,
    image: &Path,
    sizes: &[(String, u64)],
    containers: usize,
    progress: &dyn Fn(&str),
) -> Result<TargetResult, Error> {
    let fs_size = 12u64 << 30;
    let scratch = ScratchFs::new(kind, fs_size).map_err(|e| err(format!("scratch {}: {e}", kind.name())))?;
    let root = scratch.path().join("strata");
    let driver = open_driver(driver_name, &root)?;
    let mut r = TargetResult { driver: driver_name.into(), fs: kind.name().into(), ..Default::default() };
    r.features = driver.status()?.features;
    let base = used(scratch.path());

    progress("pull replay");
    let (source, img) = open_source(&format!("{}:default", image.display()), None)?;
    let images = ImageStore::open(&root.join(driver.name()))?;
    let layers = std::sync::Mutex::new(Vec::new());
    let cpu0 = cpu_seconds();
    let (top, secs) = time(|| {
        unpack(driver.as_ref(), &images, source.as_ref(), &img, "bench", &|ev| {
            layers.lock().expect("layers").push((
                ev.chain_id.clone(),
                ev.elapsed.as_secs_f64(),
                ev.applied.unwrap_or(0),
            ))
        })
    });
    let top = top?.ok_or_else(|| err("the image has no layers"))?;
    r.unpack_seconds = secs;
    r.unpack_cpu_seconds = cpu_seconds() - cpu0;
    r.unpack_layers = layers.into_inner().expect("layers");
    let tar_bytes: u64 = r.unpack_layers.iter().map(|l| l.2).sum();
    r.unpack_mb_per_s = tar_bytes as f64 / 1e6 / secs.max(1e-9);
    let d = used(scratch.path());
    r.disk.insert("after_unpack".into(), DiskUse { bytes: d.bytes - base.bytes, inodes: d.inodes - base.inodes });

    progress("container create");
    let mut create = Vec::new();
    nix::unistd::sync();
    r.disk_by_containers.push(used(scratch.path()).bytes - base.bytes);
    for i in 0..containers {
        let (res, s) = time(|| driver.create(&format!("c{i}"), Some(&top), true));
        res?;
        create.push(s);
        nix::unistd::sync();
        r.disk_by_containers.push(used(scratch.path()).bytes - base.bytes);
    }
    r.create = Dist::of(create);
    nix::unistd::sync();
    let d = used(scratch.path());
    r.disk.insert("after_containers".into(), DiskUse { bytes: d.bytes - base.bytes, inodes: d.inodes - base.inodes });

    progress("copy-up");
    let mut samples: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut add = |k: &str, s: f64| samples.entry(k.to_string()).or_default().push(s);
    for i in 0..containers {
        let v = driver.mount(&format!("c{i}"))?;
        let b = v.join("bench");
        let io = |e: std::io::Error| err(format!("copy-up in c{i}: {e}"));
        for (name, _) in sizes {
            let (res, s) = time(|| append_one_byte(&b.join(format!("file-{name}"))));
            res.map_err(io)?;
            add(&format!("write {name}"), s);
        }
        let (res, s) = time(|| fs::set_permissions(b.join("chmod-target"), fs::Permissions::from_mode(0o600)));
        res.map_err(io)?;
        add("chmod big file", s);
        let (res, s) = time(|| move_dir(&b.join("rename-me"), &b.join("renamed")));
        res.map_err(io)?;
        add("rename dir", s);
        let (res, s) = time(|| fs::remove_dir_all(b.join("delete-me")));
        res.map_err(io)?;
        add("delete tree", s);
        let (res, s) = time(|| (0..500).try_for_each(|j| append_one_byte(&b.join(format!("storm/s{j}")))));
        res.map_err(io)?;
        add("storm: 500 small appends", s);
        driver.unmount(&format!("c{i}"))?;
    }
    r.copyup = samples.into_iter().map(|(k, v)| (k, Dist::of(v))).collect();
    nix::unistd::sync();
    let d = used(scratch.path());
    r.disk.insert("after_writes".into(), DiskUse { bytes: d.bytes - base.bytes, inodes: d.inodes - base.inodes });

    progress("diff");
    let mut sink = CountingSink(0);
    let (res, s) = time(|| driver.diff("c0", &mut sink));
    res?;
    r.diff_seconds = s;
    r.diff_bytes = sink.0;
    drop(driver);
    drop(scratch);
    Ok(r)
}

struct CountingSink(u64);

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
        if d == "btrfs" {
            out.push((d.clone(), FsKind::Btrfs));
            continue;
        }
        for f in &args.fs {
            match f.as_str() {
                "ext4" => out.push((d.clone(), FsKind::Ext4)),
                "xfs" => out.push((d.clone(), FsKind::Xfs)),
                _ => {}
            }
        }
    }
    out
}

fn host() -> serde_json::Value {
    let uname = nix::sys::utsname::uname().ok();
    json!({
        "kernel": uname.as_ref().map(|u| u.release().to_string_lossy().into_owned()),
        "machine": uname.as_ref().map(|u| u.machine().to_string_lossy().into_owned()),
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "strata": env!("CARGO_PKG_VERSION"),
        "time": driver_core::store::now_secs(),
    })
}

pub(crate) fn ms(s: f64) -> String {
    if s >= 1.0 {
        format!("{s:.2} s")
    } else {
        format!("{:.1} ms", s * 1000.0)
    }
}

pub(crate) fn mb(b: u64) -> String {
    format!("{:.0} MB", b as f64 / 1e6)
}

/// `4KiB`, `16MiB`, `1GiB` → bytes.
pub(crate) fn parse_size(s: &str) -> Option<u64> {
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(split);
    let scale = match unit {
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return None,
    };
    Some(n.parse::<u64>().ok()? * scale)
}

/// The copy-up key of the largest file written (`write 512MiB`).
pub(crate) fn largest_write(r: &TargetResult) -> String {
    r.copyup
        .keys()
        .filter_map(|k| Some((k, parse_size(k.strip_prefix("write ")?)?)))
        .max_by_key(|(_, bytes)| *bytes)
        .map(|(k, _)| k.clone())
        .unwrap_or_default()
}

/// The recommendation for this host, citing the figures it rests on.
fn recommend(results: &[TargetResult]) -> Vec<String> {
    let ok: Vec<&TargetResult> = results.iter().filter(|r| r.error.is_none()).collect();
    let mut out = Vec::new();
    if ok.is_empty() {
        return vec!["no driver ran here; see the errors above".into()];
    }
    let label = |r: &TargetResult| format!("{} on {}", r.driver, r.fs);
    let best = |f: &dyn Fn(&TargetResult) -> f64| {
        ok.iter().min_by(|a, b| f(a).partial_cmp(&f(b)).expect("no NaN")).copied().expect("non-empty")
    };
    let big = largest_write(ok[0]);
    let unpack = best(&|r| r.unpack_seconds);
    let create = best(&|r| r.create.median);
    let copy = best(&|r| r.copyup.get(&big).map(|d| d.median).unwrap_or(f64::MAX));
    let disk = best(&|r| r.disk.get("after_containers").map(|d| d.bytes as f64).unwrap_or(f64::MAX));
    out.push(format!("fastest unpack: {} ({})", label(unpack), ms(unpack.unpack_seconds)));
    out.push(format!("fastest container create: {} (median {})", label(create), ms(create.create.median)));
    out.push(format!(
        "cheapest first write to the {} lower file: {} (median {})",
        big.trim_start_matches("write "),
        label(copy),
        ms(copy.copyup.get(&big).map(|d| d.median).unwrap_or(0.0))
    ));
    out.push(format!(
        "least disk for the image and its containers: {} ({})",
        label(disk),
        mb(disk.disk.get("after_containers").map(|d| d.bytes).unwrap_or(0))
    ));
    // Score: geometric mean of each figure relative to the best, lower is better.
    let score = |r: &TargetResult| {
        let rel = |v: f64, b: f64| (v.max(1e-6) / b.max(1e-6)).ln();
        let c = |r: &TargetResult| r.copyup.get(&big).map(|d| d.median).unwrap_or(f64::MAX);
        let dk = |r: &TargetResult| r.disk.get("after_containers").map(|d| d.bytes as f64).unwrap_or(f64::MAX);
        (rel(r.unpack_seconds, unpack.unpack_seconds)
            + rel(r.create.median, create.create.median)
            + rel(c(r), c(copy))
            + rel(dk(r), dk(disk))
            + rel(r.diff_seconds, best(&|r| r.diff_seconds).diff_seconds))
            / 5.0
    };
    let pick = ok.iter().min_by(|a, b| score(a).partial_cmp(&score(b)).expect("no NaN")).expect("non-empty");
    out.push(format!(
        "recommended here: {} — the best balance of the five figures above and the diff time \
         (it is within {:.1}x of the best on each, on average)",
        label(pick),
        score(pick).exp()
    ));
    out
}

fn print_table(all: &[TargetResult]) {
    let mut images: Vec<&str> = all.iter().map(|r| r.image.as_str()).collect();
    images.dedup();
    for image in images {
        let results: Vec<&TargetResult> = all.iter().filter(|r| r.image == image).collect();
        print_image_table(image, &results);
    }
}

fn print_image_table(image: &str, results: &[&TargetResult]) {
    let big = results.iter().find(|r| r.error.is_none()).map(|r| largest_write(r)).unwrap_or_default();
    println!("\nimage: {}", if image.is_empty() { DEFAULT_IMAGE } else { image });
    println!(
        "{:<16} {:>10} {:>9} {:>12} {:>14} {:>12} {:>12} {:>10}",
        "driver/fs",
        "unpack",
        "MB/s",
        "create p50",
        format!("{} p50", big.trim_start_matches("write ")),
        "disk+ctrs",
        "disk+writes",
        "diff"
    );
    for r in results {
        let name = format!("{}/{}", r.driver, r.fs);
        if let Some(e) = &r.error {
            println!("{name:<16} could not run: {e}");
            continue;
        }
        println!(
            "{:<16} {:>10} {:>9.1} {:>12} {:>14} {:>12} {:>12} {:>10}",
            name,
            ms(r.unpack_seconds),
            r.unpack_mb_per_s,
            ms(r.create.median),
            ms(r.copyup.get(&big).map(|d| d.median).unwrap_or(0.0)),
            mb(r.disk.get("after_containers").map(|d| d.bytes).unwrap_or(0)),
            mb(r.disk.get("after_writes").map(|d| d.bytes).unwrap_or(0)),
            ms(r.diff_seconds)
        );
    }
}

/// The figures a baseline comparison checks, by name; all "lower is better".
fn figures(r: &TargetResult) -> Vec<(String, f64)> {
    let p = match r.image.as_str() {
        "" | DEFAULT_IMAGE => format!("{}/{}", r.driver, r.fs),
        image => format!("{image} {}/{}", r.driver, r.fs),
    };
    let mut v = vec![
        (format!("{p} unpack seconds"), r.unpack_seconds),
        (format!("{p} create median"), r.create.median),
        (format!("{p} diff seconds"), r.diff_seconds),
    ];
    for (k, d) in &r.copyup {
        v.push((format!("{p} {k} median"), d.median));
    }
    for (k, d) in &r.disk {
        v.push((format!("{p} disk {k} bytes"), d.bytes as f64));
    }
    v
}

/// Names every figure of `current` that is worse than `baseline`'s by more than `pct`%.
pub fn regressions(current: &serde_json::Value, baseline: &serde_json::Value, pct: f64) -> Vec<String> {
    let parse = |v: &serde_json::Value| -> Vec<TargetResult> {
        serde_json::from_value(v["results"].clone()).unwrap_or_default()
    };
    let base: BTreeMap<String, f64> = parse(baseline).iter().flat_map(figures).collect();
    let mut out = Vec::new();
    for (name, now) in parse(current).iter().flat_map(figures) {
        if let Some(&was) = base.get(&name) {
            // Tiny absolute figures (sub-millisecond latencies) are below the noise floor.
            let floor = if name.contains("bytes") { 1e6 } else { 0.002 };
            if now > was * (1.0 + pct / 100.0) && now - was > floor {
                out.push(format!(
                    "{name}: {now:.4} vs {was:.4} in the baseline (+{:.0}%)",
                    (now / was.max(1e-12) - 1.0) * 100.0
                ));
            }
        }
    }
    out
}

/// Runs every target on one image; adds peers when asked.
fn bench_image(
    args: &BenchArgs,
    label: &str,
    blobs: &[Vec<u8>],
    work: &Path,
    results: &mut Vec<TargetResult>,
    peers: &mut Vec<PeerResult>,
) -> Result<(), Error> {
    let layout = work.join("bench-image");
    let sizes = bench_layout(&layout, blobs, args.quick)?;
    let all = targets(args);
    for (i, (d, kind)) in all.iter().enumerate() {
        let tag = format!("[{label}] [{}/{}] {d} on {}", i + 1, all.len(), kind.name());
        eprintln!("{tag}: starting");
        let started = Instant::now();
        let progress = |phase: &str| eprintln!("{tag}: {phase} ({:.0} s)", started.elapsed().as_secs_f64());
        let mut r = run_target(d, *kind, &layout, &sizes, args.containers, &progress).unwrap_or_else(|e| {
            eprintln!("{tag}: could not run: {e}");
            TargetResult { driver: d.clone(), fs: kind.name().into(), error: Some(e.to_string()), ..Default::default() }
        });
        r.image = label.to_string();
        results.push(r);
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
        let tag = format!("[{label}] peers beside {d} on {}", kind.name());
        let progress = |what: &str| eprintln!("{tag}: {what}");
        for mut p in crate::peers::compare(&args.peers, d, *kind, &image, runs, &progress) {
            p.image = label.to_string();
            peers.push(p);
        }
    }
    Ok(())
}

pub fn run(args: &BenchArgs) -> Result<(), Error> {
    let report = match &args.from {
        Some(path) => {
            let data = fs::read(path).map_err(|e| Error::new(e).with_path(path))?;
            serde_json::from_slice(&data).map_err(|e| err(format!("{}: {e}", path.display())))?
        }
        None => measure(args)?,
    };
    let results: Vec<TargetResult> = serde_json::from_value(report["results"].clone())
        .map_err(|e| err(format!("the report's results do not parse: {e}")))?;
    let peers: Vec<PeerResult> = serde_json::from_value(report["peers"].clone()).unwrap_or_default();
    print_table(&results);
    print_peers(&peers);
    println!();
    for line in report["recommendation"].as_array().into_iter().flatten() {
        println!("{}", line.as_str().unwrap_or_default());
    }
    if let Some(path) = &args.json {
        fs::write(path, serde_json::to_vec_pretty(&report).expect("json"))
            .map_err(|e| Error::new(e).with_path(path))?;
        eprintln!("strata bench: wrote {}", path.display());
    }
    if let Some(path) = &args.report {
        fs::write(path, crate::report::html(&report)).map_err(|e| Error::new(e).with_path(path))?;
        eprintln!("strata bench: wrote {}", path.display());
    }
    if let Some(base) = &args.baseline {
        let data = fs::read(base).map_err(|e| Error::new(e).with_path(base))?;
        let baseline: serde_json::Value =
            serde_json::from_slice(&data).map_err(|e| err(format!("baseline {}: {e}", base.display())))?;
        let regressed = regressions(&report, &baseline, args.max_regress);
        if !regressed.is_empty() {
            return Err(err(format!(
                "{} figure(s) regressed past {}%: {}",
                regressed.len(),
                args.max_regress,
                regressed.join("; ")
            )));
        }
        eprintln!("strata bench: no figure regressed past {}% against {}", args.max_regress, base.display());
    }
    Ok(())
}

/// Runs the bench: every image on every target, then the peers.
fn measure(args: &BenchArgs) -> Result<serde_json::Value, Error> {
    if !nix::unistd::geteuid().is_root() {
        return Err(err("strata bench makes loop-mounted scratch filesystems and needs root"));
    }
    for p in &args.peers {
        if let Some(why) = crate::peers::unavailable(p) {
            eprintln!("strata bench: peer {p} will not run: {why}");
        }
    }
    let mut results = Vec::new();
    let mut peers = Vec::new();
    let images: Vec<String> =
        if args.images.is_empty() { vec![DEFAULT_IMAGE.to_string()] } else { args.images.clone() };
    for label in &images {
        let work = tempfile::Builder::new().prefix("strata-bench-").tempdir().map_err(Error::new)?;
        let blobs = if args.images.is_empty() {
            eprintln!("strata bench: generating the embedded default workload...");
            default_blobs(args.quick)
        } else {
            eprintln!("strata bench: reading {label}...");
            image_blobs(label)?
        };
        bench_image(args, label, &blobs, work.path(), &mut results, &mut peers)?;
    }
    let mut rec = Vec::new();
    for label in &images {
        let mine: Vec<TargetResult> = results.iter().filter(|r| &r.image == label).cloned().collect();
        for line in recommend(&mine) {
            rec.push(if images.len() > 1 { format!("[{label}] {line}") } else { line });
        }
    }
    Ok(json!({
        "schema": SCHEMA,
        "host": host(),
        "workload": {"images": images,
                     "containers": args.containers, "quick": args.quick,
                     "copyup_timing": "open + 1-byte append + close, no fsync"},
        "results": results,
        "peers": peers,
        "recommendation": rec,
    }))
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
            .map(|s| s.unpack.median)
            .unwrap_or(0.0);
        let ratio = if strata > 0.0 { format!("{:.2}x", p.unpack.median / strata) } else { "-".into() };
        println!("{name:<28} {beside:<12} {:>10} {:>10} {:>14}", ms(p.unpack.median), mb(p.disk_bytes), ratio);
    }
}
