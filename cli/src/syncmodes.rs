//! The price of durability: the bench's unpack timed under each `--sync` mode (none,
//! chain, file: see `driver_core::durability`), side by side on the same scratch
//! filesystem, the modes taken in turn within each round so that a busy host slows
//! them alike. Two figures per mode: the command until it returns (what a user waits
//! for), and until its data is on disk too (a `syncfs` after it: under `none` the
//! kernel still has that work to do, and it is not free).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use driver_core::{Driver, Durability, Error};
use strata_image::image::open_source;
use strata_image::images::{unpack, ImageStore};

use crate::failure::Result;
use crate::model::{Dist, TargetResult};

/// Seconds per `--sync` mode name.
pub type ByMode = BTreeMap<String, Dist>;

/// Unpacks the bench image `rounds` times per mode into fresh driver roots under
/// `scratch` (each removed after it was timed) and returns, per mode name, the
/// seconds until the unpack returned and until its data was on disk.
pub fn unpack_by_mode(
    driver_name: &str,
    scratch: &Path,
    layout: &Path,
    rounds: usize,
    progress: &dyn Fn(&str),
) -> Result<(ByMode, ByMode)> {
    let mut returned: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut on_disk: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for round in 0..rounds.max(1) {
        for mode in Durability::ALL {
            progress(&format!("unpack --sync {mode} {}/{}", round + 1, rounds.max(1)));
            let root = scratch.join(format!("strata-sync-{mode}-{round}"));
            // What earlier work left dirty is not this unpack's cost.
            driver_core::sys::syncfs(scratch).map_err(|e| Error::new(e).with_path(scratch))?;
            let driver = strata_cli::drivers::open(driver_name, &root)?;
            driver.set_durability(mode);
            let images = ImageStore::open(&root.join(driver.name()))?.with_durability(mode);
            let (source, img) = open_source(&format!("{}:default", layout.display()), None)?;
            let start = Instant::now();
            unpack(driver.as_ref(), &images, source.as_ref(), &img, "bench", &|_| {})?;
            returned.entry(mode.name().into()).or_default().push(start.elapsed().as_secs_f64());
            driver_core::sys::syncfs(scratch).map_err(|e| Error::new(e).with_path(scratch))?;
            on_disk.entry(mode.name().into()).or_default().push(start.elapsed().as_secs_f64());
            remove(driver.as_ref(), &images, &root)?;
        }
    }
    let dist = |m: BTreeMap<String, Vec<f64>>| m.into_iter().map(|(k, v)| (k, Dist::of(v))).collect();
    Ok((dist(returned), dist(on_disk)))
}

/// Removes the image and the driver root, so that the next mode gets the same free disk.
fn remove(driver: &dyn Driver, images: &ImageStore, root: &Path) -> Result<()> {
    images.remove(driver, "bench")?;
    std::fs::remove_dir_all(root).map_err(|e| Error::new(e).with_path(root))?;
    Ok(())
}

/// One line per target: each mode's median unpack time and its ratio to `none`'s.
pub fn print(results: &[&TargetResult]) {
    for r in results.iter().filter(|r| r.ok() && !r.unpack_by_sync.is_empty()) {
        let none = r.unpack_by_sync.get("none").map(|d| d.p50).unwrap_or(f64::NAN);
        let figures: Vec<String> = Durability::ALL
            .iter()
            .filter_map(|m| {
                let d = r.unpack_by_sync.get(m.name())?;
                let disk = r.unpack_by_sync_on_disk.get(m.name()).map(|d| d.p50).unwrap_or(f64::NAN);
                Some(format!("{m} {:.2}s ({:.2}x; on disk {:.2}s)", d.p50, d.p50 / none, disk))
            })
            .collect();
        println!("{}: unpack by --sync (median, x none's): {}", r.label(), figures.join(", "));
    }
}
