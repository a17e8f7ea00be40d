//! The staging folder of a pull (`<cache>/.pull-<pid>/`): blobs wait there until the
//! image is recorded, then move into the cache; a killed pull's folder goes next time.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::image::{blob_path, BlobSource, Image};
use driver_core::interrupt;

use super::error::Error;

/// Blobs of one pull: its own staging folder first, then the cache.
#[derive(Clone)]
pub struct PullSource {
    pub(super) staging: PathBuf,
    pub(super) cache: PathBuf,
}

impl BlobSource for PullSource {
    fn open(&self, locator: &str) -> io::Result<Box<dyn Read + Send>> {
        let rel = blob_path(locator)?;
        let f = match fs::File::open(self.staging.join(&rel)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => fs::File::open(self.cache.join(&rel))?,
            r => r?,
        };
        // Ctrl-C during the unpack stops the layer being applied.
        Ok(Box::new(interrupt::Checked(f)))
    }

    fn shared(&self) -> Option<Arc<dyn BlobSource>> {
        // Each layer's blob is then opened when it is applied, not all up front.
        Some(Arc::new(self.clone()))
    }
}

/// What [`pull`] gives: the image and where its blobs are. Its staging folder is
/// removed when it is dropped; [`Pulled::keep`] first moves the blobs into the cache.
pub struct Pulled {
    pub image: Image,
    pub name: String,
    pub source: PullSource,
    /// Blobs downloaded, and their bytes.
    pub downloaded: (usize, u64),
}

impl Pulled {
    /// Moves the pull's blobs into the cache (after the image is recorded).
    pub fn keep(self) -> Result<(), Error> {
        let from = self.source.staging.join("blobs/sha256");
        let to = self.source.cache.join("blobs/sha256");
        fs::create_dir_all(&to).map_err(Error::file(&to))?;
        for e in fs::read_dir(&from).map_err(Error::file(&from))? {
            let e = e.map_err(Error::file(&from))?;
            let name = e.file_name();
            if name.to_string_lossy().contains('.') {
                continue; // a `.part-…` left by a stopped thread
            }
            fs::rename(e.path(), to.join(&name)).map_err(Error::file(to.join(&name)))?;
        }
        Ok(())
    }
}

// The staging folder goes with the pull's result, not with a handle on its blobs
// (the unpack holds clones of the source while it opens layers one by one).
impl Drop for Pulled {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.source.staging);
    }
}

/// Removes the staging folders of pulls whose process is gone (killed).
pub(super) fn remove_stale_staging(cache: &Path) {
    let Ok(entries) = fs::read_dir(cache) else { return };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(".pull-")) else { continue };
        if !Path::new("/proc").join(pid).exists() {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}
