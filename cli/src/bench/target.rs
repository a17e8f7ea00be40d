//! One target: every phase for one driver on a fresh scratch filesystem of one kind.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use driver_core::{Driver, Error, LayerDir, LayerDirKind};
use nix::sys::resource::UsageWho::{RUSAGE_CHILDREN, RUSAGE_SELF};
use strata_image::image::open_source;
use strata_image::images::{unpack, ImageStore};
use strata_scratch::{FsKind, ScratchFs};

use super::layout::{write_target, CopyupShape};
use crate::failure::{Failure, Result};
use crate::meter::{self, CountingSink, Meter};
use crate::model::{
    CopyupOp, DiskPhase, DiskUse, Dist, DriverKind, LayerTime, TargetResult, CREATE_LIKE, STORM_APPENDS,
};

/// What a bench of one image needs: the layout with the copy-up layer, what it holds.
pub(super) struct Plan {
    pub(super) layout: PathBuf,
    /// The layout's layer blobs, for the floor that stands beside each unpack.
    pub(super) floor_layers: Vec<PathBuf>,
    pub(super) shape: CopyupShape,
    pub(super) fs_size: u64,
    pub(super) unpack_runs: usize,
    /// `--replay` and `--run`, with the image's label and its config's `Env`.
    pub(super) workloads: Vec<crate::workloads::Spec>,
    pub(super) image: String,
    pub(super) env: Vec<String>,
    pub(super) sync: driver_core::Durability,
    /// Rounds of the per-`--sync`-mode unpacks (one with --quick: the tests' runs).
    pub(super) sync_rounds: usize,
    /// Container creates timed (and removed) before the containers, each beside the
    /// create-shaped reference, for a driver whose create is a few small files (not vfs).
    pub(super) extra_creates: usize,
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

fn time<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed().as_secs_f64())
}

fn append_one_byte(path: &Path) -> std::io::Result<()> {
    let mut f = fs::OpenOptions::new().append(true).open(path)?;
    f.write_all(b"x")
}

/// One of the copy-up operations other than the first writes, in the container's
/// `bench` directory; a rename says how it moved.
fn metadata_op(op: CopyupOp, b: &Path) -> std::io::Result<Option<&'static str>> {
    match op {
        CopyupOp::ChmodBigFile => fs::set_permissions(b.join("chmod-target"), fs::Permissions::from_mode(0o600))?,
        CopyupOp::ChownBigFile => std::os::unix::fs::chown(b.join("chown-target"), Some(1), Some(1))?,
        CopyupOp::RenameDir => return move_dir(&b.join("rename-me"), &b.join("renamed")).map(Some),
        CopyupOp::DeleteTree => fs::remove_dir_all(b.join("delete-me"))?,
        CopyupOp::Storm => (0..STORM_APPENDS).try_for_each(|j| append_one_byte(&b.join(format!("storm/s{j}"))))?,
        CopyupOp::Write { .. } => unreachable!("first writes are timed with the disk they add"),
    }
    Ok(None)
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
fn cp_a(from: &Path, to: &Path) -> Result<()> {
    let out = std::process::Command::new("cp")
        .arg("-a")
        .arg("--")
        .arg(from)
        .arg(to)
        .output()
        .map_err(Failure::tool("cp -a (the reference for container create)"))?;
    if !out.status.success() {
        let what = format!("cp -a {} {}", from.display(), to.display());
        let said = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(Failure::ToolFailed { what, status: out.status, said });
    }
    Ok(driver_core::sys::syncfs(to).map_err(|e| Error::new(e).with_path(to))?)
}

fn open_driver(which: DriverKind, root: &Path) -> Result<Box<dyn Driver>> {
    Ok(strata_cli::drivers::open(which.name(), root)?)
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
) -> Result<(String, f64, Vec<LayerTime>)> {
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
    let top = top?.ok_or(Failure::NoLayers)?;
    Ok((top, secs, layers.into_inner().expect("layers")))
}

/// `n` container creates over `top`, each timed beside the create-shaped reference (which goes
/// first every other time, as the floor does beside the unpacks) and removed outside
/// the timing, after one untimed create: the first create of a run is the slow one
/// (3.3 ms against 1.9 ms after, over the recorded runs), its directories still cold.
/// The containers' own creates follow and are samples too.
fn extra_creates(
    driver: &dyn Driver,
    top: &str,
    scratch: &Path,
    n: usize,
    create: &mut Vec<f64>,
    refs: &mut BTreeMap<String, Vec<f64>>,
    cpu: &mut BTreeMap<String, Vec<f64>>,
) -> Result<()> {
    for i in 0..=n {
        let id = format!("gate-create-{i}");
        let before = if i % 2 == 1 { Some(meter::create_like(scratch, "create")?) } else { None };
        let (res, s, c) = meter::timed(RUSAGE_SELF, || driver.create(&id, Some(top), true));
        res?;
        let after = match before {
            Some(r) => r,
            None => meter::create_like(scratch, "create")?,
        };
        driver.remove(&id)?;
        nix::unistd::sync();
        if i > 0 {
            create.push(s);
            cpu.entry("create".into()).or_default().push(c);
            refs.entry(CREATE_LIKE.into()).or_default().push(after.0);
            cpu.entry(format!("{CREATE_LIKE} reference")).or_default().push(after.1);
        }
    }
    Ok(())
}

/// Runs every phase for one driver on a fresh filesystem of `kind`.
pub(super) fn run_target(
    which: DriverKind,
    kind: FsKind,
    plan: &Plan,
    containers: usize,
    progress: &dyn Fn(&str),
) -> Result<TargetResult> {
    let scratch = ScratchFs::new(kind, plan.fs_size).map_err(|source| Failure::Scratch { fs: kind.name(), source })?;
    let root = scratch.path().join("strata");
    let driver = open_driver(which, &root)?;
    let mut r = TargetResult { driver: which, fs: kind.name().into(), ..Default::default() };
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
    r.disk.insert(DiskPhase::Unpack, grown(scratch.path(), &base));
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
    if reference.is_none() {
        extra_creates(driver.as_ref(), &top, scratch.path(), plan.extra_creates, &mut create, &mut refs, &mut cpu)?;
    }
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
            beside(&mut refs, &mut cpu, CREATE_LIKE, meter::create_like(scratch.path(), "create")?);
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
    r.create_cp_a = (!cp.is_empty()).then(|| Dist::of(cp));
    r.disk.insert(DiskPhase::Containers, grown(scratch.path(), &base));

    progress("copy-up");
    let mut samples: BTreeMap<CopyupOp, Vec<f64>> = BTreeMap::new();
    let mut disk_samples: BTreeMap<CopyupOp, Vec<f64>> = BTreeMap::new();
    for i in 0..containers {
        refs.entry("copyup".into()).or_default().push(meter::fsync_loop(scratch.path(), "copyup")?.0);
        let v = driver.mount(&format!("c{i}"))?;
        if i == 0 && which == DriverKind::Overlay {
            r.mounted = overlay_mounted(&v);
        }
        let b = v.join("bench");
        let io = Failure::step(format!("copy-up in c{i}"));
        let mut add = |k: CopyupOp, s: f64| samples.entry(k).or_default().push(s);
        for &bytes in &plan.shape.sizes {
            // The disk each first write adds: a statfs delta around it, synced both sides.
            let op = CopyupOp::Write { bytes };
            let c0 = meter.snap();
            let before = grown(scratch.path(), &base);
            let (res, s) = time(|| append_one_byte(&v.join(write_target(bytes))));
            res.map_err(&io)?;
            add(op, s);
            let after = grown(scratch.path(), &base);
            meter::add(&mut r.counts, &format!("copyup.{op}"), &c0, &meter.snap());
            disk_samples.entry(op).or_default().push(after.bytes as f64 - before.bytes as f64);
        }
        for op in CopyupOp::METADATA {
            let c0 = meter.snap();
            let (res, s) = time(|| metadata_op(op, &b));
            if let Some(how) = res.map_err(&io)? {
                r.rename_by = how.to_string();
            }
            add(op, s);
            meter::add(&mut r.counts, &format!("copyup.{op}"), &c0, &meter.snap());
        }
        driver.unmount(&format!("c{i}"))?;
    }
    r.copyup = samples.into_iter().map(|(k, v)| (k, Dist::of(v))).collect();
    r.copyup_disk = disk_samples.into_iter().map(|(k, v)| (k, Dist::of(v))).collect();
    r.disk.insert(DiskPhase::Writes, grown(scratch.path(), &base));

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
        let t = crate::workloads::replay::Target {
            driver: driver.as_ref(),
            top: &top,
            image: &plan.image,
            fs: scratch.path(),
            base: &base,
            env: &plan.env,
            containers,
        };
        r.workloads = crate::workloads::replay::measure(&t, &plan.workloads, progress);
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
        let d = open_driver(which, &again)?;
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
        crate::syncmodes::unpack_by_mode(which.name(), scratch.path(), &plan.layout, plan.sync_rounds, progress)?;
    r.reference = refs.into_iter().map(|(k, v)| (k, Dist::of(v))).collect();
    r.cpu = cpu.into_iter().map(|(k, v)| (k, Dist::of(v))).collect();
    drop(driver);
    drop(scratch);
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `cp -a` refusing is named with its status and what it said.
    #[test]
    fn a_failed_cp_is_named_with_what_cp_said() {
        let dir = tempfile::tempdir().unwrap();
        let e = cp_a(&dir.path().join("none"), &dir.path().join("to")).unwrap_err();
        assert!(
            matches!(&e, Failure::ToolFailed { what, status, said }
                if what.starts_with("cp -a ") && !status.success() && said.contains("No such file")),
            "{e:?}"
        );
    }
}
