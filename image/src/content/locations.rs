//! Where a push may mount a blob from: the repositories of each registry known to hold it.

use crate::error::Result;

use super::ContentStore;

/// `<content>/locations.json`: registry → blob digest → repositories holding it.
const LOCATIONS: &str = "locations.json";
type Locations = std::collections::BTreeMap<String, std::collections::BTreeMap<String, Vec<String>>>;

impl ContentStore {
    /// Drops `gone` (blobs no longer kept) from the locations noted for pushes.
    pub fn forget_locations(&self, gone: &std::collections::BTreeSet<String>) -> Result<()> {
        let p = self.dir.join(LOCATIONS);
        let Some(mut known) = driver_core::json::read_json::<Locations>(&p).ok().flatten() else { return Ok(()) };
        let before: usize = known.values().map(|r| r.len()).sum();
        for reg in known.values_mut() {
            reg.retain(|d, _| !gone.contains(d));
        }
        known.retain(|_, r| !r.is_empty());
        if known.values().map(|r| r.len()).sum::<usize>() == before {
            return Ok(());
        }
        Ok(driver_core::json::write_json(&p, &known)?)
    }

    /// Repositories of `registry` known to hold blob `digest` (pushed there, or pulled
    /// from there): where a push may mount it from instead of uploading it.
    pub fn locations(&self, registry: &str, digest: &str) -> Vec<String> {
        let known: Locations =
            driver_core::json::read_json(&self.dir.join(LOCATIONS)).ok().flatten().unwrap_or_default();
        known.get(registry).and_then(|r| r.get(digest)).cloned().unwrap_or_default()
    }

    /// Notes that `registry`/`repository` holds `digests`. A hint only (a blob may have
    /// gone from there since; a mount that fails falls back to an upload), so two
    /// writers racing may lose a note, never a blob.
    pub fn note_locations(&self, registry: &str, repository: &str, digests: &[String]) -> Result<()> {
        let p = self.dir.join(LOCATIONS);
        let mut known: Locations = driver_core::json::read_json(&p).ok().flatten().unwrap_or_default();
        let reg = known.entry(registry.to_string()).or_default();
        for d in digests {
            let repos = reg.entry(d.clone()).or_default();
            if !repos.iter().any(|r| r == repository) {
                // The latest first; a few are enough to find one that still holds it.
                repos.insert(0, repository.to_string());
                repos.truncate(4);
            }
        }
        Ok(driver_core::json::write_json(&p, &known)?)
    }
}
