//! The commands that teach how images are made and stored: `container commit`,
//! `image save`, `image history`, `image inspect`.

use std::path::Path;

use driver_core::Driver;
use strata_image::commit::{CommitOptions, LayerCompression};
use strata_image::images::ImageStore;
use strata_image::save::SaveFormat;
use strata_image::Error as ImageError;

use crate::error::Error;
use crate::{outln, output};

pub fn commit(
    driver: &dyn Driver,
    images: &ImageStore,
    container: &str,
    image: &str,
    message: Option<String>,
    compression: LayerCompression,
) -> Result<(), Error> {
    let c = strata_image::commit::commit(driver, images, container, image, &CommitOptions { message, compression })?;
    eprintln!(
        "committed {container} (over image {}) as image {image}: layer {} ({} tar, {} blob), manifest {}",
        c.base,
        output::short_id(&c.chain_id),
        output::bytes(c.tar_size),
        output::bytes(c.blob_size),
        c.manifest_digest
    );
    outln!("{}", c.chain_id)?;
    Ok(())
}

/// Saves image `name` to `out` as `format`; without one, an existing directory gets an
/// OCI layout and anything else an oci-archive.
pub fn save(images: &ImageStore, name: &str, out: &Path, format: Option<SaveFormat>) -> Result<(), Error> {
    let format = match format {
        Some(f) => f,
        None if out.is_dir() => SaveFormat::Oci,
        None => SaveFormat::OciArchive,
    };
    strata_image::save::save(images, name, out, format)?;
    eprintln!("saved image {name} to {} ({format})", out.display());
    Ok(())
}

pub fn history(images: &ImageStore, name: &str, json: bool) -> Result<(), Error> {
    let mut rows = strata_image::inspect::history(images, name)?;
    rows.reverse();
    if json {
        output::json(&rows)?;
        return Ok(());
    }
    outln!(
        "{:<19} {:>10} {:>10} {:>6} {:>7} {:>7} {:>10}  CREATED BY / COMMENT",
        "LAYER",
        "COMPRESSED",
        "UNPACKED",
        "ADDED",
        "CHANGED",
        "DELETED",
        "HIDES"
    )?;
    for r in rows {
        let made = match (r.created_by.as_str(), r.comment.as_str()) {
            (by, "") => by.to_string(),
            ("", c) => c.to_string(),
            (by, c) => format!("{by} / {c}"),
        };
        outln!(
            "{:<19} {:>10} {:>10} {:>6} {:>7} {:>7} {:>10}  {made}",
            output::short_id(&r.chain_id),
            output::bytes(r.compressed),
            output::bytes(r.unpacked),
            r.added,
            r.changed,
            r.deleted,
            output::bytes(r.hidden)
        )?;
    }
    Ok(())
}

pub fn inspect(
    images: &ImageStore,
    name: &str,
    efficiency: bool,
    json: bool,
    max_wasted: Option<u64>,
    min_efficiency: Option<f64>,
) -> Result<(), Error> {
    if !efficiency {
        let rec = images.get(name)?;
        let img = images.content.load(name, rec.manifest.as_deref())?;
        // The documents as kept, every field shown (oci-spec's types drop those they do
        // not know).
        let document = |what: String, bytes: &[u8]| ImageError::parse_json::<serde_json::Value>(what, bytes);
        let out = serde_json::json!({
            "name": name, "layers": rec.layers, "manifest_digest": img.manifest_digest,
            "manifest": document(format!("manifest {}", img.manifest_digest), &img.manifest_bytes)?,
            "config_digest": img.config_digest,
            "config": document(format!("config {}", img.config_digest), &img.config_bytes)?,
        });
        output::json(&out)?;
        return Ok(());
    }
    let e = strata_image::inspect::efficiency(images, name)?;
    if json {
        output::json(&e)?;
    } else {
        outln!("efficiency: {:.4}", e.efficiency)?;
        outln!(
            "wasted: {} ({} bytes) of {} in all layers",
            output::bytes(e.wasted_bytes),
            e.wasted_bytes,
            output::bytes(e.total_bytes)
        )?;
        if !e.top_wasted.is_empty() {
            outln!("{:>6} {:>12}  PATH", "COUNT", "WASTED")?;
            for w in &e.top_wasted {
                outln!("{:>6} {:>12}  {}", w.count, output::bytes(w.bytes), w.path)?;
            }
        }
    }
    // As dive's CI mode: a failed rule is the command's failure.
    Ok(e.check(name, max_wasted, min_efficiency)?)
}
