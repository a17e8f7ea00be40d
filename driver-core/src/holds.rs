//! Who holds a layer besides its children: the image records a driver's store keeps.
//!
//! ```text
//! <driver dir>/images/<sha256 of name>.json   one record per complete image
//! <driver dir>/images/pending/<pid>-<n>.json  an unpack under way: the layers it will
//!                                             use; flock held by the unpacking process
//! ```
//!
//! `strata-image` (`images.rs`) writes these records; the store reads here only what
//! it needs to refuse removing a layer that an image or an unpack under way lists,
//! under its lock ([`crate::store::Store::remove`]).

use std::fs::{self, File};
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};
use serde::de::IgnoredAny;
use serde::Deserialize;

use crate::error::{Cause, Context, Error, Result};
use crate::json::read_json;

/// The fields of an image record the store reads.
#[derive(Deserialize)]
struct ImageHold {
    name: String,
    layers: Vec<String>,
    complete: bool,
    #[serde(default)]
    pid: u32,
    #[serde(default)]
    removing: bool,
    #[allow(dead_code)]
    config_digest: IgnoredAny,
}

/// The fields of a pending (unpack under way) record the store reads.
#[derive(Deserialize)]
struct PendingHold {
    name: String,
    layers: Vec<String>,
    #[serde(default)]
    failed: bool,
    #[allow(dead_code)]
    preexisting: IgnoredAny,
}

/// Whether some process holds the lock on `path` (a pending record's owner is alive).
pub fn locked_by_someone(path: &Path) -> bool {
    match File::open(path) {
        Ok(f) => Flock::lock(f, FlockArg::LockSharedNonblock).is_err(),
        Err(_) => false,
    }
}

/// The images (and unpacks under way) that use layer `id`, as the store sees them in
/// `driver_dir`. Called by the store under its lock before it removes a layer.
pub fn users_of(driver_dir: &Path, id: &str) -> Result<Vec<String>> {
    let dir = driver_dir.join("images");
    let mut users = Vec::new();
    let Ok(entries) = fs::read_dir(&dir) else { return Ok(users) };
    for e in entries {
        let p = e.at_path(&dir)?.path();
        let hidden = p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'));
        if hidden || p.extension().is_none_or(|x| x != "json") {
            continue;
        }
        // A record that does not read (a power cut under --sync none leaves one empty)
        // may list this layer: the removal is refused, saying which record and what heals it.
        let rec = read_json::<ImageHold>(&p).map_err(|e| match e.cause {
            Cause::Corrupt(why) => Error::new(Cause::Corrupt(format!(
                "image record {why}; it may list this layer, so it is not removed: run `strata check --repair`"
            ))),
            _ => e,
        })?;
        if let Some(rec) = rec {
            let live = !rec.removing && (rec.complete || crate::sys::pid_alive(rec.pid));
            if live && rec.layers.iter().any(|l| l == id) {
                users.push(format!("image {}", rec.name));
            }
        }
    }
    let pending = dir.join("pending");
    if let Ok(entries) = fs::read_dir(&pending) {
        for e in entries {
            let p = e.at_path(&pending)?.path();
            if p.extension().is_none_or(|x| x != "json") {
                continue;
            }
            if let Ok(Some(rec)) = read_json::<PendingHold>(&p) {
                if !rec.failed && rec.layers.iter().any(|l| l == id) && locked_by_someone(&p) {
                    users.push(format!("image {} (being unpacked)", rec.name));
                }
            }
        }
    }
    Ok(users)
}
