//! One function per mode of the command (ripgrep's `main.rs`): each opens what it
//! needs from the resolved [`Plan`](crate::plan::Plan), does the work through the
//! crates below, and prints through [`crate::output`].

use std::fs::File;
use std::io::{self, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use driver_core::{Driver, Durability};
use strata_cli::drivers;
use strata_image::check;
use strata_image::images::ImageStore;
use strata_image::registry;
use strata_image::save::SaveFormat;

use crate::args::{ContainerCmd, DriverArg, ImageCmd, LayerCmd};
use crate::error::{Error, Usage};
use crate::output::bytes as human_bytes;
use crate::plan::{Format, Pull};
use crate::{bench, commit, explain, lifecycle, output, probe, progress, runcmd};
use crate::{debug, info, level, outln};

/// The driver `--driver` names (or `auto` picks) under `--root`, and its folder.
fn open(driver: DriverArg, root: &Path) -> Result<(Box<dyn Driver>, PathBuf), Error> {
    Ok(drivers::open_with_dir(driver.name(), root)?)
}

/// The driver's image records, after finishing what a killed unpack left (see
/// ImageStore::collect).
fn open_images(driver: &dyn Driver, dir: &Path, mode: Durability) -> Result<ImageStore, Error> {
    debug!("driver {} in {}", driver.name(), dir.display());
    let images = ImageStore::open(dir)?.with_durability(mode);
    let collected = images.collect(driver)?;
    debug!("removed {} layer(s) left by killed unpacks: {:?}", collected.len(), collected);
    Ok(images)
}

/// `strata layer ...`.
pub fn layer(driver: DriverArg, root: &Path, cmd: LayerCmd) -> Result<(), Error> {
    let (driver, dir) = open(driver, root)?;
    let images = open_images(driver.as_ref(), &dir, Durability::Chain)?;
    layer_cmd(driver.as_ref(), &images, cmd)
}

/// `strata image pull REF` and `strata image unpack docker://REF`.
pub fn pull(driver: DriverArg, root: &Path, mode: Durability, p: Pull) -> Result<(), Error> {
    let (driver, dir) = open(driver, root)?;
    driver.set_durability(mode);
    let images = open_images(driver.as_ref(), &dir, mode)?;
    pull_and_unpack(driver.as_ref(), &dir, &images, p)
}

/// `strata image ...`, but pull.
pub fn image(driver: DriverArg, root: &Path, mode: Durability, cmd: ImageCmd) -> Result<(), Error> {
    let (driver, dir) = open(driver, root)?;
    driver.set_durability(mode);
    let images = open_images(driver.as_ref(), &dir, mode)?;
    image_cmd(driver.as_ref(), &dir, &images, cmd)
}

/// `strata container ...`.
pub fn container(driver: DriverArg, root: &Path, mode: Durability, cmd: ContainerCmd) -> Result<(), Error> {
    let (driver, dir) = open(driver, root)?;
    driver.set_durability(mode);
    let images = ImageStore::open(&dir)?.with_durability(mode);
    images.collect(driver.as_ref())?;
    container_cmd(driver.as_ref(), &images, cmd)
}

/// `strata probe`.
pub fn probe(root: &Path, format: Format) -> Result<(), Error> {
    let p = probe::probe(root);
    match format {
        Format::Json => output::json(&p)?,
        Format::Text => probe::print(&p)?,
    }
    Ok(())
}

/// `strata bench`, its options checked.
pub fn bench(args: &bench::BenchArgs) -> Result<(), Error> {
    Ok(bench::run(args)?)
}

/// `strata df`.
pub fn df(driver: DriverArg, root: &Path, format: Format) -> Result<(), Error> {
    let (driver, dir) = open(driver, root)?;
    let images = ImageStore::open(&dir)?;
    let d = strata_image::df::df(driver.as_ref(), &images)?;
    if format == Format::Json {
        let mut v = serde_json::to_value(&d).expect("json");
        v["version"] = 1.into();
        output::json(&v)?;
        return Ok(());
    }
    outln!(
        "{:<10} {:<32} {:>6} {:>10} {:>10} {:>10} {:>9} {:>9} {:>9}",
        "TYPE",
        "NAME",
        "LAYERS",
        "TOTAL",
        "SHARED",
        "UNIQUE",
        "INODES",
        "SHARED",
        "UNIQUE"
    )?;
    let rows = d.images.iter().map(|u| ("image", u)).chain(d.containers.iter().map(|u| ("container", u)));
    for (kind, u) in rows {
        outln!(
            "{kind:<10} {:<32} {:>6} {:>10} {:>10} {:>10} {:>9} {:>9} {:>9}",
            u.name,
            u.layers,
            human_bytes(u.total.bytes),
            human_bytes(u.shared.bytes),
            human_bytes(u.unique.bytes),
            u.total.inodes,
            u.shared.inodes,
            u.unique.inodes
        )?;
    }
    outln!(
        "store: layers {} ({} inodes), blobs {} ({}), total {}",
        human_bytes(d.layers.bytes),
        d.layers.inodes,
        human_bytes(d.blobs.bytes),
        d.blobs.inodes,
        human_bytes(d.total.bytes)
    )?;
    Ok(())
}

/// `strata check [--repair]`.
pub fn check(driver: DriverArg, root: &Path, repair: bool, format: Format) -> Result<(), Error> {
    // What killed processes left in staging, seen before the open discards it.
    let left = drivers::dir_of(driver.name(), root).map(|d| check::leftovers(&d)).unwrap_or_default();
    let (driver, dir) = open(driver, root)?;
    let images = ImageStore::open(&dir)?;
    let mut found = check::check(driver.as_ref(), &images)?;
    found.problems.splice(0..0, left);
    let (repairs, after) = if repair {
        let done = check::repair(driver.as_ref(), &images, &found)?;
        (done, Some(check::check(driver.as_ref(), &images)?))
    } else {
        (Vec::new(), None)
    };
    let healthy = after.as_ref().unwrap_or(&found).healthy();
    if format == Format::Json {
        let out = serde_json::json!({
            "version": 1,
            "driver": driver.name(),
            "healthy": healthy,
            "checked": {"layers": found.layers, "images": found.images, "blobs": found.blobs},
            "problems": found.problems,
            "repairs": repairs,
            "remaining": after.as_ref().map(|a| &a.problems),
        });
        output::json(&out)?;
    } else {
        for p in &found.problems {
            outln!("{p}")?;
        }
        for r in &repairs {
            outln!("repaired {}: {}", r.subject, r.action)?;
        }
        if let Some(a) = &after {
            for p in &a.problems {
                outln!("still: {p}")?;
            }
        }
    }
    info!(
        "checked {} layers, {} images, {} blobs: {} problem(s){}",
        found.layers,
        found.images,
        found.blobs,
        found.problems.len(),
        after.as_ref().map(|a| format!(", {} left after repair", a.problems.len())).unwrap_or_default()
    );
    if healthy {
        Ok(())
    } else {
        let problems = after.as_ref().unwrap_or(&found).problems.len();
        Err(Error::Unhealthy { driver: driver.name().to_string(), problems, repaired: repair })
    }
}

fn container_cmd(driver: &dyn Driver, images: &ImageStore, cmd: ContainerCmd) -> Result<(), Error> {
    match cmd {
        ContainerCmd::Create { name, image } => {
            let rec = images.get(&image)?;
            driver.create(&name, rec.top(), true)?;
            outln!("{name}")?;
        }
        ContainerCmd::Ls { json } => {
            let list = lifecycle::containers(driver, images)?;
            if json {
                output::json(&list)?;
            } else {
                outln!("{:<24} {:<24} {:>10} MOUNTED", "NAME", "IMAGE", "SIZE")?;
                for c in list {
                    let image = if c.images.is_empty() {
                        c.parent.as_deref().map(|p| format!("(layer {})", output::short_id(p))).unwrap_or("-".into())
                    } else {
                        c.images.join(",")
                    };
                    let mounted = if c.mounted { "yes" } else { "no" };
                    outln!("{:<24} {:<24} {:>10} {mounted}", c.name, image, human_bytes(c.size))?;
                }
            }
        }
        ContainerCmd::Rm { name } => {
            lifecycle::remove_container(driver, &name)?;
            info!("removed container {name}");
        }
        ContainerCmd::Commit { name, image, message, compression, .. } => {
            commit::commit(driver, images, &name, &image, message, compression.into())?
        }
        ContainerCmd::Run { name, record, record_data, user, command } => {
            let code = runcmd::run_container(driver, images, &name, record.as_deref(), record_data, user, command)?;
            // The command's status is strata's; the view is unmounted already.
            std::process::exit(code);
        }
        ContainerCmd::Replay { name, trace, json } => runcmd::replay_container(driver, &name, &trace, json)?,
    }
    Ok(())
}

fn image_cmd(driver: &dyn Driver, dir: &Path, images: &ImageStore, cmd: ImageCmd) -> Result<(), Error> {
    match cmd {
        // The plan made these a pull (crate::plan), but with --name or --platform.
        ImageCmd::Pull { .. } => unreachable!("an image pull is Mode::Pull"),
        ImageCmd::Unpack { src, .. } if src.starts_with("docker://") => Err(Usage::RegistryUnpack { src }.into()),
        ImageCmd::Unpack { src, name, platform, .. } => {
            // A bad --name is refused before the source is read.
            if let Some(n) = &name {
                strata_image::image::validate_name(n)?;
            }
            let (source, img) = strata_image::image::open_source(&src, platform.as_deref())?;
            let name = name.unwrap_or_else(|| img.name.clone());
            // Every stream stops at Ctrl-C; the failed unpack then removes what it made.
            let source = strata_image::image::CheckedSource(source);
            unpack_and_report(driver, images, &source, &img, &name).map_err(|e| {
                if driver_core::interrupt::requested() {
                    driver_core::interrupt::error().into()
                } else {
                    e
                }
            })
        }
        ImageCmd::Push { name, reference, insecure, auth, chunk_size, timeout } => {
            let opts = registry::PushOptions { insecure, chunk_size, timeout: std::time::Duration::from_secs(timeout) };
            let report = |digest: &str, size: u64, what: &registry::BlobPush| {
                let short = output::short_id(digest);
                match what {
                    registry::BlobPush::Exists => info!("blob {short}: already there"),
                    registry::BlobPush::Mounted(from) => info!("blob {short}: mounted from {from}"),
                    registry::BlobPush::Uploaded { requests, .. } => {
                        info!("blob {short}: uploaded {} in {requests} request(s)", human_bytes(size))
                    }
                }
            };
            let pushed = registry::push(images, &name, &reference, &auth.options(), &opts, &report)?;
            outln!("{}", pushed.digest)?;
            Ok(())
        }
        ImageCmd::Ls { json, no_trunc } => Ok(lifecycle::list_images(driver, images, json, no_trunc)?),
        ImageCmd::Rm { name } => {
            let removed = images.remove(driver, &name)?;
            info!("removed image {name} and {} layer(s) no one else uses", removed.len());
            Ok(())
        }
        ImageCmd::Prune { dry_run } => {
            let p = strata_image::prune::prune(driver, images, dir, dry_run)?;
            let verb = if dry_run { "would remove" } else { "removed" };
            for (id, size) in &p.layers {
                outln!("{verb} layer {id} ({})", human_bytes(*size))?;
            }
            for (d, size) in &p.blobs {
                outln!("{verb} blob {d} ({})", human_bytes(*size))?;
            }
            for s in &p.skipped {
                info!("kept (in use meanwhile): {s}");
            }
            let total: u64 = p.layers.iter().chain(&p.blobs).map(|(_, s)| s).sum();
            info!("{verb} {} layer(s) and {} blob(s), {}", p.layers.len(), p.blobs.len(), human_bytes(total));
            Ok(())
        }
        ImageCmd::Save { name, output, format } => {
            Ok(commit::save(images, &name, &output, format.map(SaveFormat::from))?)
        }
        ImageCmd::History { name, json } => Ok(commit::history(images, &name, json)?),
        ImageCmd::Inspect { name, efficiency, json, max_wasted_bytes, min_efficiency } => {
            Ok(commit::inspect(images, &name, efficiency, json, max_wasted_bytes, min_efficiency)?)
        }
    }
}

/// `image pull REF` (and `image unpack docker://REF`): download, unpack, keep the blobs.
fn pull_and_unpack(driver: &dyn Driver, dir: &Path, images: &ImageStore, p: Pull) -> Result<(), Error> {
    let Pull { reference, insecure, auth, limits } = p;
    let reference = reference.as_str();
    let cache = strata_image::prune::cache_dir(dir);
    // Until its blobs are kept, no prune removes one it reuses from the cache.
    let _cache_lock = strata_image::prune::CacheLock::shared(&cache)?;
    let start = std::time::Instant::now();
    let pulled = registry::pull(reference, insecure, &auth.options(), limits, &cache, driver)?;
    let (blobs, bytes) = pulled.downloaded;
    info!("downloaded {blobs} layer blob(s), {} in {:.2}s", human_bytes(bytes), start.elapsed().as_secs_f64());
    // A failed or interrupted unpack removes the layers it made.
    if let Err(e) = unpack_and_report(driver, images, &pulled.source, &pulled.image, &pulled.name) {
        return Err(if driver_core::interrupt::requested() { driver_core::interrupt::error().into() } else { e });
    }
    // Where its blobs are, for a later push's cross-repository mounts (a hint).
    if let (Ok(r), Ok(rec)) = (registry::Reference::parse_docker(reference), images.get(&pulled.name)) {
        if let Ok(img) = images.content.load(&rec.name, rec.manifest.as_deref()) {
            let _ = images.content.note_locations(r.registry(), r.repository(), &img.blobs()[1..]);
        }
    }
    Ok(pulled.keep()?)
}

fn unpack_and_report(
    driver: &dyn Driver,
    images: &ImageStore,
    source: &dyn strata_image::image::BlobSource,
    img: &strata_image::image::Image,
    name: &str,
) -> Result<(), Error> {
    let line = |ev: &strata_image::images::LayerEvent| {
        let short = output::short_id(&ev.chain_id);
        match ev.applied {
            Some(n) => format!(
                "layer {}/{} {short}: applied {} (done at {:.2}s)",
                ev.index + 1,
                ev.count,
                human_bytes(n),
                ev.elapsed.as_secs_f64()
            ),
            None => format!("layer {}/{} {short}: already exists", ev.index + 1, ev.count),
        }
    };
    let top = if io::stdout().is_terminal() && level() >= 1 {
        // A bar per layer, moved by the bytes read from its blob.
        let bars = indicatif::MultiProgress::new();
        let style = indicatif::ProgressStyle::with_template("{msg:40} [{bar:30}] {bytes:>10}/{total_bytes:<10}")
            .expect("template")
            .progress_chars("=> ");
        let progress = progress::ProgressSource::new(source, img, &bars, style);
        strata_image::images::unpack(driver, images, &progress, img, name, &|ev| progress.finish(ev.index, line(ev)))?
    } else {
        strata_image::images::unpack(driver, images, source, img, name, &|ev| info!("{}", line(ev)))?
    };
    outln!("{}", top.unwrap_or_default())?;
    Ok(())
}

fn layer_cmd(driver: &dyn Driver, images: &ImageStore, cmd: LayerCmd) -> Result<(), Error> {
    match cmd {
        LayerCmd::Create { id, parent } => Ok(driver.create(&id, parent.as_deref(), true)?),
        LayerCmd::Apply { id, parent, file } => {
            let size = if file == "-" {
                driver.apply_diff(&id, parent.as_deref(), &mut io::stdin().lock())?
            } else {
                let mut f = File::open(&file).map_err(|e| driver_core::Error::new(e).with_path(&file).in_layer(&id))?;
                driver.apply_diff(&id, parent.as_deref(), &mut f as &mut dyn Read)?
            };
            outln!("{size}")?;
            Ok(())
        }
        LayerCmd::Mount { id } => {
            outln!("{}", driver.mount(&id)?.display())?;
            Ok(())
        }
        LayerCmd::Unmount { id } => Ok(driver.unmount(&id)?),
        LayerCmd::Diff { id, output } => match output {
            Some(path) => Ok(driver_core::json::write_atomic_with(&path, |out| driver.diff(&id, out).map(|_| ()))?),
            None => {
                let stdout = io::stdout();
                if stdout.is_terminal() {
                    return Err(Usage::TarToTerminal.into());
                }
                let mut lock = io::BufWriter::with_capacity(1 << 20, output::Watched::new(stdout.lock()));
                let written = driver
                    .diff(&id, &mut lock)
                    .map(|_| ())
                    .and_then(|()| lock.flush().map_err(driver_core::Error::new));
                match written {
                    // The reader went away (`| head -c 100`): exit 141, nothing to say.
                    Err(_) if lock.get_ref().closed() => Err(Error::Stdout(io::Error::from_raw_os_error(libc::EPIPE))),
                    written => Ok(written?),
                }
            }
        },
        LayerCmd::Changes { id } => {
            for c in driver.changes(&id)? {
                let k = match c.kind {
                    driver_core::ChangeKind::Added => 'A',
                    driver_core::ChangeKind::Modified => 'C',
                    driver_core::ChangeKind::Deleted => 'D',
                };
                outln!("{k} /{}", c.path.display())?;
            }
            Ok(())
        }
        LayerCmd::Rm { id } => Ok(driver.remove(&id)?),
        LayerCmd::Which { id, path, json } => {
            let w = explain::which(driver, &id, &path)?;
            if json {
                output::json(&w)?;
            } else {
                explain::print_which(&w)?;
            }
            Ok(())
        }
        LayerCmd::Explain { id, path, json } => {
            let e = explain::explain(driver, &id, &path)?;
            if json {
                output::json(&e)?;
            } else {
                explain::print_explain(&e)?;
            }
            Ok(())
        }
        LayerCmd::Ls { json, no_trunc } => Ok(lifecycle::list_layers(driver, images, json, no_trunc)?),
    }
}
