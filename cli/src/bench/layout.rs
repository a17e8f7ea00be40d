//! The bench's image: the layer blobs of the embedded default workload or of a real
//! image, written as files, and the OCI layout with the copy-up layer on top.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use driver_core::Error;
use strata_archive::tarbuild::{EntryMeta, TarBuilder};
use strata_cli::workload::{generate, gzip, Rng, WorkloadSize};
use strata_image::image::{open_source, write_layout, BlobSource};
use strata_image::registry::{AuthOptions, Limits};

use super::args::BenchArgs;
use crate::failure::{Failure, Result};
use crate::model::{size_name, STORM_APPENDS};

/// What the copy-up layer holds: the first-write files' sizes (ascending), the size of
/// the file chmod and chown change, and the files of the directory that is renamed.
pub(super) struct CopyupShape {
    pub(super) sizes: Vec<u64>,
    pub(super) big_file_bytes: u64,
    pub(super) rename_files: usize,
}

/// The copy-up layer: files of each size, a tree to rename, one to delete, and many
/// small files for the write storm. `chmod-target` and `chown-target` are two more
/// names of the largest file (a hardlink in the tar, so the image does not carry
/// another gigabyte): overlay, with `index` off as strata mounts it, copies each name
/// up on its own, while vfs and btrfs change the one inode in place.
fn copyup_layer(quick: bool) -> (Vec<u8>, CopyupShape) {
    let mut rng = Rng::new(99);
    let sizes: Vec<u64> =
        if quick { vec![4 << 10, 1 << 20, 16 << 20] } else { vec![4 << 10, 1 << 20, 64 << 20, 512 << 20] };
    let mut t = TarBuilder::new();
    t.dir("bench");
    for size in &sizes {
        t.file(&write_target(*size), &rng.content(*size as usize));
    }
    let big_file_bytes = *sizes.last().expect("sizes");
    for name in ["chmod-target", "chown-target"] {
        t.hardlink(&format!("bench/{name}"), &write_target(big_file_bytes));
    }
    let rename_files = if quick { 500 } else { 10_000 };
    for (tree, files) in [("rename-me", rename_files), ("delete-me", 200)] {
        t.dir(&format!("bench/{tree}"));
        for i in 0..files {
            t.file(&format!("bench/{tree}/f{i}"), &rng.content(2048));
        }
    }
    t.dir("bench/storm");
    for i in 0..STORM_APPENDS {
        t.file_with(&format!("bench/storm/s{i}"), &rng.content(1024), EntryMeta::default());
    }
    (t.build(), CopyupShape { sizes, big_file_bytes, rename_files })
}

/// The lower file of `bytes` that a first write appends to, in the image: `bench/file-4KiB`.
pub(super) fn write_target(bytes: u64) -> String {
    format!("bench/file-{}", size_name(bytes))
}

/// The layer blobs (compressed as they come) of the embedded default workload, as
/// files in `dir`.
pub(super) fn default_blobs(quick: bool, dir: &Path) -> Result<Vec<PathBuf>> {
    let size = if quick { WorkloadSize::small() } else { WorkloadSize::default_image() };
    generate(1, size).iter().enumerate().map(|(i, l)| blob_file(dir, &format!("layer-{i}"), &gzip(&l.tar))).collect()
}

fn blob_file(dir: &Path, name: &str, data: &[u8]) -> Result<PathBuf> {
    let path = dir.join(name);
    fs::write(&path, data).map_err(|e| Error::new(e).with_path(&path))?;
    Ok(path)
}

/// The layer blobs of a real image, read from any source `image unpack` takes (a
/// docker://REF is pulled, every blob, into a folder that goes afterwards), streamed
/// into files in `dir`: an image of gigabytes is never held in memory. They are
/// verified when each tool unpacks them.
pub(super) fn image_blobs(spec: &str, args: &BenchArgs, dir: &Path) -> Result<Vec<PathBuf>> {
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
                .map_err(Failure::step(format!("{spec}: layer blob {}", l.locator)))?;
            Ok(path)
        })
        .collect()
}

/// Writes the bench's image as an OCI layout tagged `default`: the image's layers plus
/// the copy-up layer on top. Returns what the copy-up layer holds.
pub(super) fn bench_layout(dir: &Path, blobs: &[PathBuf], quick: bool) -> Result<CopyupShape> {
    let (copyup, shape) = copyup_layer(quick);
    let mut all = blobs.to_vec();
    let parent = dir.parent().unwrap_or(dir);
    all.push(blob_file(parent, "copyup-layer", &gzip(&copyup))?);
    drop(copyup);
    write_layout(dir, "default", &all)?;
    Ok(shape)
}

/// The size of the blob files together.
pub(super) fn blob_bytes(blobs: &[PathBuf]) -> u64 {
    blobs.iter().map(|b| fs::metadata(b).map_or(0, |m| m.len())).sum()
}
