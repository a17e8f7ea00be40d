//! For unit tests of what reads a driver's layer store (`check`, `df`): a driver with a
//! real, empty store and no layer operations.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use driver_core::driver::{ChainProgress, Change, Driver, LayerInfo, LayerTar, Status, Usage};
use driver_core::store::Store;
use driver_core::{Cause, Error, Result};

use crate::images::ImageStore;

pub(crate) struct StoreOnly(Store);

/// A temporary driver folder with an empty layer store, its images, and the path of an
/// image record holding `json` (torn, as a power cut under `--sync none` leaves one).
pub(crate) fn with_record(json: &[u8]) -> (tempfile::TempDir, StoreOnly, ImageStore, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let driver = StoreOnly::open(dir.path());
    let images = ImageStore::open(dir.path()).unwrap();
    let record = images.dir().join("0123.json");
    std::fs::write(&record, json).unwrap();
    (dir, driver, images, record)
}

impl StoreOnly {
    /// The store in driver folder `dir` (as `ImageStore::open(dir)` keeps its images).
    pub(crate) fn open(dir: &Path) -> StoreOnly {
        StoreOnly(Store::open(dir, Arc::new(|p: &Path| std::fs::remove_dir_all(p))).unwrap())
    }
}

fn unsupported<T>() -> Result<T> {
    Err(Error::new(Cause::Unsupported("not in this test".into())))
}

impl Driver for StoreOnly {
    fn name(&self) -> &'static str {
        "store-only"
    }
    fn create(&self, _: &str, _: Option<&str>, _: bool) -> Result<()> {
        unsupported()
    }
    fn apply_diff(&self, _: &str, _: Option<&str>, _: &mut dyn Read) -> Result<u64> {
        unsupported()
    }
    fn apply_chain(&self, _: Vec<LayerTar>, _: ChainProgress<'_>) -> Result<Vec<u64>> {
        unsupported()
    }
    fn mount(&self, _: &str) -> Result<PathBuf> {
        unsupported()
    }
    fn unmount(&self, _: &str) -> Result<()> {
        unsupported()
    }
    fn diff(&self, _: &str, _: &mut dyn Write) -> Result<u64> {
        unsupported()
    }
    fn changes(&self, _: &str) -> Result<Vec<Change>> {
        unsupported()
    }
    fn remove(&self, _: &str) -> Result<()> {
        unsupported()
    }
    fn usage(&self, _: &str) -> Result<Usage> {
        unsupported()
    }
    fn layer_store(&self) -> Option<&Store> {
        Some(&self.0)
    }
    fn status(&self) -> Result<Status> {
        unsupported()
    }
    fn get(&self, id: &str) -> Result<LayerInfo> {
        Err(Error::layer(id, Cause::NotFound))
    }
    fn list(&self) -> Result<Vec<LayerInfo>> {
        Ok(Vec::new())
    }
}
