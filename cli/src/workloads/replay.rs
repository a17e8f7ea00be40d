//! The workloads in each target's containers: a `--run` command recorded, then every
//! trace replayed per container, with what each operation class and copy-up cost.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::Instant;

use driver_core::{Driver, Error};
use strata_run::trace::Trace;

use super::{Source, Spec};
use crate::failure::{Failure, Result};
use crate::model::{ClassFigures, CopyupFigures, DiskUse, Dist, WorkloadResult};

/// The `Env` of the image config of `spec` (any source `image unpack` reads; none for a
/// registry, which would be pulled a second time): what `--run` gives the command, as
/// `container run` does.
pub fn image_env(spec: &str) -> Vec<String> {
    if spec.starts_with("docker://") {
        return Vec::new();
    }
    let read = || -> Option<Vec<String>> {
        let (source, image) = strata_image::image::open_source(spec, None).ok()?;
        let config: oci_spec::image::ImageConfiguration =
            serde_json::from_reader(source.open(&image.config_locator).ok()?).ok()?;
        config.config().as_ref()?.env().clone()
    };
    read().unwrap_or_default()
}

/// Bytes of disk the filesystem at `path` holds beyond `base`, after a sync.
fn grown(path: &Path, base: &DiskUse) -> u64 {
    nix::unistd::sync();
    DiskUse::of(path).bytes.saturating_sub(base.bytes)
}

/// The size bucket a copied-up node falls in: its upper bound.
pub fn bucket(bytes: u64) -> &'static str {
    const BOUNDS: [(u64, &str); 5] =
        [(4 << 10, "4KiB"), (64 << 10, "64KiB"), (1 << 20, "1MiB"), (16 << 20, "16MiB"), (256 << 20, "256MiB")];
    BOUNDS.iter().find(|(b, _)| bytes <= *b).map(|(_, n)| *n).unwrap_or("more")
}

/// Where the bench's containers for workloads live, and how they are run.
pub struct Target<'a> {
    pub driver: &'a dyn Driver,
    /// The image's top layer: the containers' parent.
    pub top: &'a str,
    /// The image's label (the trace header's `image` of a `--run`).
    pub image: &'a str,
    /// The scratch filesystem's mount point and its use before the bench (disk deltas).
    pub fs: &'a Path,
    pub base: &'a DiskUse,
    /// The image config's `Env` for `--run`.
    pub env: &'a [String],
    pub containers: usize,
}

/// Every workload on one target; a workload that fails carries its error and the
/// others still run.
pub fn measure(t: &Target, specs: &[Spec], progress: &dyn Fn(&str)) -> Vec<WorkloadResult> {
    specs
        .iter()
        .enumerate()
        .map(|(k, spec)| {
            progress(&format!("workload {}", spec.name));
            let mut w = WorkloadResult { name: spec.name.clone(), source: spec.describe(), ..Default::default() };
            if let Err(e) = measure_one(t, k, spec, &mut w) {
                w.error = Some(e.to_string());
            }
            w
        })
        .collect()
}

/// Runs `cmd` for real in a new container `wr<k>`, recorded: the trace and the seconds.
fn record(t: &Target, k: usize, cmd: &str) -> Result<(Trace, f64)> {
    let id = format!("wr{k}");
    t.driver.create(&id, Some(t.top), true)?;
    let view = t.driver.mount(&id)?;
    let dir = tempfile::tempdir().map_err(Failure::step(format!("a temp dir for the trace of {cmd:?}")))?;
    let path = dir.path().join("run.trace");
    let file = fs::File::create(&path).map_err(|e| Error::new(e).with_path(&path))?;
    let command = vec!["/bin/sh".to_string(), "-c".to_string(), cmd.to_string()];
    let header = strata_run::trace::Header {
        strata_trace: strata_run::trace::VERSION,
        image: Some(t.image.to_string()),
        layer: Some(t.top.to_string()),
        command: command.clone(),
        data: false,
    };
    let spec = strata_run::container::RunSpec {
        view: view.clone(),
        command,
        env: t.env.to_vec(),
        workdir: None,
        user: None,
        record: Some((file, header)),
    };
    let start = Instant::now();
    let status = strata_run::container::run(spec);
    let seconds = start.elapsed().as_secs_f64();
    let unmounted = t.driver.unmount(&id);
    let status = status.map_err(|source| Failure::Run { cmd: cmd.into(), container: id.clone(), source })?;
    unmounted?;
    if status != 0 {
        return Err(Failure::RunExited { cmd: cmd.into(), container: id, status });
    }
    let trace = Trace::read(&path).map_err(|source| Failure::RecordedTrace { cmd: cmd.into(), source })?;
    t.driver.remove(&id)?;
    Ok((trace, seconds))
}

/// A copy-up bucket: (operation class, node kind, size bucket).
type Bucket = (String, String, String);

fn measure_one(t: &Target, k: usize, spec: &Spec, w: &mut WorkloadResult) -> Result<()> {
    let recorded;
    let trace: &Trace = match &spec.source {
        Source::Trace(_, trace) => trace,
        Source::Run(cmd) => {
            let (trace, seconds) = record(t, k, cmd)?;
            w.run_seconds = Some(seconds);
            recorded = trace;
            &recorded
        }
    };
    w.ops = trace.records.len() as u64;
    let (mut wall, mut layer, mut diffs) = (Vec::new(), Vec::new(), Vec::new());
    let mut classes: BTreeMap<String, (u64, u64, u64, Vec<f64>)> = BTreeMap::new();
    let mut copyups: BTreeMap<Bucket, (u64, u64, Vec<f64>)> = BTreeMap::new();
    for i in 0..t.containers {
        let id = format!("w{k}-{i}");
        t.driver.create(&id, Some(t.top), true)?;
        let before = grown(t.fs, t.base);
        let view = t.driver.mount(&id)?;
        let stats = strata_run::replay::replay(&view, trace);
        t.driver.unmount(&id)?;
        let stats =
            stats.map_err(|source| Failure::Replay { workload: spec.name.clone(), container: id.clone(), source })?;
        layer.push(grown(t.fs, t.base).saturating_sub(before) as f64);
        wall.push(stats.nanos as f64 / 1e9);
        for (class, c) in &stats.classes {
            let e = classes.entry(class.to_string()).or_default();
            (e.0, e.1, e.2) = (c.count, c.bytes, c.syscalls);
            e.3.push(c.nanos as f64 / 1e9);
        }
        // Every bucket gets a sample in every container (0 when none fell in it here).
        let mut mine: BTreeMap<Bucket, (u64, u64, f64)> = BTreeMap::new();
        for c in &stats.copy_ups {
            let e = mine.entry((c.class.to_string(), c.kind.to_string(), bucket(c.size).to_string())).or_default();
            e.0 += 1;
            e.1 += c.size;
            e.2 += c.nanos as f64 / 1e9;
        }
        for (key, (n, b, s)) in mine {
            let e = copyups.entry(key).or_default();
            (e.0, e.1) = (n, b);
            e.2.resize(i, 0.0);
            e.2.push(s);
        }
        let mut sink = crate::meter::CountingSink(0);
        let start = Instant::now();
        t.driver.diff(&id, &mut sink)?;
        diffs.push(start.elapsed().as_secs_f64());
        w.diff_bytes = sink.0;
        t.driver.remove(&id)?;
    }
    w.wall = Dist::of(wall);
    w.layer_bytes = Dist::of(layer);
    w.diff = Dist::of(diffs);
    w.classes = classes
        .into_iter()
        .map(|(k, (count, bytes, syscalls, s))| (k, ClassFigures { count, bytes, syscalls, seconds: Dist::of(s) }))
        .collect();
    w.copyups = copyups
        .into_iter()
        .map(|((class, kind, size_up_to), (nodes, bytes, mut s))| {
            s.resize(t.containers, 0.0);
            CopyupFigures { class, kind, size_up_to, nodes, bytes, seconds: Dist::of(s) }
        })
        .collect();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--run` gets the image config's `Env`, read through oci-spec's config type.
    #[test]
    fn the_image_env_is_the_configs() {
        let dir = tempfile::tempdir().unwrap();
        let layout = dir.path();
        std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
        let put = |data: &[u8]| {
            let d = driver_core::digest::sha256(data);
            std::fs::write(layout.join("blobs/sha256").join(&d[7..]), data).unwrap();
            (d, data.len())
        };
        let config = br#"{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/usr/bin:/bin","LANG=C.UTF-8"]},"rootfs":{"type":"layers","diff_ids":[]}}"#;
        let (cd, cn) = put(config);
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cd}","size":{cn}}},"layers":[]}}"#
        );
        let (md, mn) = put(manifest.as_bytes());
        let index = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{md}","size":{mn},"annotations":{{"org.opencontainers.image.ref.name":"v1"}}}}]}}"#
        );
        std::fs::write(layout.join("index.json"), index).unwrap();
        std::fs::write(layout.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        let spec = format!("{}:v1", layout.display());
        assert_eq!(image_env(&spec), ["PATH=/usr/bin:/bin", "LANG=C.UTF-8"]);
        assert!(image_env("docker://127.0.0.1:1/x:y").is_empty(), "a registry's is not pulled twice");
    }

    #[test]
    fn sizes_fall_in_their_buckets() {
        assert_eq!(bucket(0), "4KiB");
        assert_eq!(bucket(4096), "4KiB");
        assert_eq!(bucket(4097), "64KiB");
        assert_eq!(bucket(1 << 20), "1MiB");
        assert_eq!(bucket(1 << 30), "more");
    }
}
