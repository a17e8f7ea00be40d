//! `container run` and `container replay`: the store's side (which view, which image,
//! mount and unmount); the work itself is strata-run's.

use std::path::Path;

use driver_core::{Cause, Driver};
use strata_image::images::ImageStore;
use strata_run::trace::{Header, Trace, VERSION};

use crate::error::{Error, Usage};
use crate::outln;
use crate::output::{self, bytes as human_bytes};

/// What a container runs with, from the image it was made on.
#[derive(Default)]
struct ImageOf {
    /// The image's name (the first image whose top layer is the container's parent).
    image: Option<String>,
    /// The container's parent layer.
    layer: Option<String>,
    env: Vec<String>,
    workdir: Option<String>,
}

/// The image container `name` was made on, and that image's `Env` and `WorkingDir`.
fn image_of(driver: &dyn Driver, images: &ImageStore, name: &str) -> Result<ImageOf, Error> {
    let info = crate::lifecycle::container_layer(driver, name)?;
    if !info.writable {
        let refused = Cause::Refused("is not a container (a committed layer)".into());
        return Err(driver_core::Error::layer(name, refused).into());
    }
    let Some(parent) = info.parent.clone() else { return Ok(ImageOf::default()) };
    let rec = images.list_readable()?.into_iter().find(|r| r.top() == Some(parent.as_str()));
    let Some(rec) = rec else { return Ok(ImageOf { layer: Some(parent), ..Default::default() }) };
    let config = images.content.load(&rec.name, rec.manifest.as_deref()).ok().and_then(|i| i.config.config().clone());
    let env = config.as_ref().and_then(|c| c.env().clone()).unwrap_or_default();
    let workdir = config.as_ref().and_then(|c| c.working_dir().clone());
    Ok(ImageOf { image: Some(rec.name), layer: Some(parent), env, workdir })
}

/// Unmounts on drop, so an error or a panic leaves the view as it found it.
struct View<'a> {
    driver: &'a dyn Driver,
    name: &'a str,
}

impl Drop for View<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.driver.unmount(self.name) {
            eprintln!("error: unmounting container {}: {e}", self.name);
        }
    }
}

pub fn run_container(
    driver: &dyn Driver,
    images: &ImageStore,
    name: &str,
    record: Option<&Path>,
    record_data: bool,
    user: Option<String>,
    command: Vec<String>,
) -> Result<i32, Error> {
    let user = user
        .map(|u| strata_run::container::parse_user(&u))
        .transpose()
        .map_err(|reason| Usage::User { container: name.to_string(), reason })?;
    let ImageOf { image, layer, env, workdir } = image_of(driver, images, name)?;
    let record = match record {
        Some(p) => {
            let f = std::fs::File::create(p).map_err(|e| driver_core::Error::new(e).with_path(p))?;
            let header = Header { strata_trace: VERSION, image, layer, command: command.clone(), data: record_data };
            Some((f, header))
        }
        None => None,
    };
    let view = driver.mount(name)?;
    let _mounted = View { driver, name };
    let spec = strata_run::container::RunSpec { view, command, env, workdir, user, record };
    strata_run::container::run(spec).map_err(|source| Error::Run { container: name.to_string(), source })
}

pub fn replay_container(driver: &dyn Driver, name: &str, trace: &Path, json: bool) -> Result<(), Error> {
    let t = Trace::read(trace).map_err(|source| Error::Trace { path: trace.to_path_buf(), source })?;
    // Replayed on another image, the trace's paths may not be there: said, not refused
    // (a trace is also a workload to try elsewhere).
    let parent = driver.get(name)?.parent;
    if let (Some(recorded), Some(here)) = (&t.header.layer, &parent) {
        if recorded != here {
            eprintln!(
                "warning: {} was recorded on layer {recorded}{}; container {name} is on {here}",
                trace.display(),
                t.header.image.as_deref().map(|i| format!(" (image {i})")).unwrap_or_default()
            );
        }
    }
    // Ctrl-C stops the replay between two operations; the view is then unmounted.
    driver_core::interrupt::install();
    let view = driver.mount(name)?;
    let _mounted = View { driver, name };
    let stats = strata_run::replay::replay(&view, &t)
        .map_err(|source| Error::Replay { container: name.to_string(), source })?;
    if json {
        output::json(&stats)?;
        return Ok(());
    }
    outln!("{:<16} {:>8} {:>10} {:>9} {:>10}", "OPERATION", "COUNT", "BYTES", "SYSCALLS", "TIME")?;
    for (class, c) in &stats.classes {
        outln!(
            "{class:<16} {:>8} {:>10} {:>9} {:>8.2}ms",
            c.count,
            human_bytes(c.bytes),
            c.syscalls,
            c.nanos as f64 / 1e6
        )?;
    }
    let up_bytes: u64 = stats.copy_ups.iter().map(|c| c.size).sum();
    outln!(
        "replayed {} operations ({} written, {} syscalls) in {:.2}ms; first changes to nodes from the image \
         (copy-ups on overlay): {}, {} of them, {:.2}ms",
        stats.ops,
        human_bytes(stats.bytes),
        stats.syscalls,
        stats.nanos as f64 / 1e6,
        stats.copy_ups.len(),
        human_bytes(up_bytes),
        stats.copy_up_nanos() as f64 / 1e6
    )?;
    Ok(())
}
