//! A container layer's disk use, kept for `strata df` between two of its views.
//!
//! A container's layer changes only through its view, so a count of its own tree made
//! while no view is taken holds until the next one. `df` keeps it in
//! `meta/<id>.usage`, beside the layer's metadata, stamped with what must still be true
//! for it to be read again: the layer's view count ([`super::VIEWS_KEY`], moved by every
//! mount), its creation time (an ID made again after a removal) and the boot it was
//! counted in (`/proc/sys/kernel/random/boot_id`).
//!
//! It is a cache, written without any sync (no fsync of the file or of `meta/`): a
//! synced write per container was most of a `df` after mounts. A power cut may leave
//! the file as it was, as written, empty, torn, or gone, and the container's own writes
//! up to the cut as unsynced as they were when it was counted. None of that is read:
//! a power cut means another boot, whose ID the stamp does not hold, and a file that
//! does not parse is no count. Either way `df` walks the tree again and keeps the new
//! count. The layer's metadata itself is never written here, so the cache cannot damage
//! the record that says the container exists.

use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use super::{views, LayerMeta, Store};
use crate::driver::Usage;
use crate::durability::Durability;
use crate::error::{Error, Result};

/// The suffix of a kept count's file in `meta/`.
pub(super) const SUFFIX: &str = ".usage";

/// `meta/<id>.usage` as written.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Kept {
    bytes: u64,
    inodes: u64,
    /// The layer's [`super::VIEWS_KEY`] count when the walk began.
    views: u64,
    /// The layer's `created` then.
    created: u64,
    /// The boot the count was made in.
    boot: String,
}

/// This boot's ID; `None` where it cannot be read (then nothing is kept or read).
fn boot_id() -> Option<&'static str> {
    static BOOT: OnceLock<Option<String>> = OnceLock::new();
    BOOT.get_or_init(|| {
        let id = fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
        Some(id.trim().to_string()).filter(|s| !s.is_empty())
    })
    .as_deref()
}

impl Store {
    /// Where container layer `id`'s kept disk use is ([`Store::keep_usage`]).
    pub fn usage_path(&self, id: &str) -> PathBuf {
        self.dir.join("meta").join(format!("{id}{SUFFIX}"))
    }

    /// Keeps `usage`, counted from container layer `seen.id`'s own tree, for the next
    /// `strata df` (without a sync: see the module's doc). Kept only when the layer is
    /// as `seen` was before the count began: unmounted then and now, and no view taken
    /// since. Returns whether it was kept.
    pub fn keep_usage(&self, seen: &LayerMeta, usage: Usage) -> Result<bool> {
        let Some(boot) = boot_id() else { return Ok(false) };
        if !seen.writable || seen.mounts > 0 {
            return Ok(false);
        }
        // Under the lock, so that a removal (which deletes the file under it) does not
        // come between the check and the write.
        let _lock = self.lock()?;
        let m = self.get(&seen.id)?;
        if !m.writable || m.mounts > 0 || views(&m) != views(seen) || m.created != seen.created {
            return Ok(false);
        }
        let kept = Kept {
            bytes: usage.bytes,
            inodes: usage.inodes,
            views: views(seen),
            created: seen.created,
            boot: boot.to_string(),
        };
        let path = self.usage_path(&seen.id);
        crate::json::write_atomic_as(&path, Durability::None, |f| f.write_all(&crate::json::to_bytes(&kept)?))
            .map_err(|e| Error::at(&seen.id, &path, e))?;
        Ok(true)
    }

    /// The disk use kept for container layer `meta` ([`Store::keep_usage`]) if it still
    /// holds: the layer is not mounted, and the file reads with the layer's view count
    /// and creation time and this boot's ID. Anything else (no file, an empty or torn
    /// one, another boot's) is `None`: count the tree.
    pub fn kept_usage(&self, meta: &LayerMeta) -> Option<Usage> {
        if !meta.writable || meta.mounts > 0 {
            return None;
        }
        let kept: Kept = serde_json::from_slice(&fs::read(self.usage_path(&meta.id)).ok()?).ok()?;
        let holds = kept.views == views(meta) && kept.created == meta.created && Some(kept.boot.as_str()) == boot_id();
        holds.then_some(Usage { bytes: kept.bytes, inodes: kept.inodes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::LayerInfo;

    fn store(dir: &std::path::Path) -> Store {
        Store::open(dir, std::sync::Arc::new(super::super::discard_tree)).unwrap()
    }

    fn container(s: &Store, id: &str) {
        let st = s.begin(id, None).unwrap();
        fs::create_dir(&st.path).unwrap();
        s.commit(st, LayerMeta::of(LayerInfo { writable: true, created: 1000, ..Default::default() })).unwrap();
    }

    fn usage(bytes: u64) -> Usage {
        Usage { bytes, inodes: 1 }
    }

    /// A container's kept disk use is not read once a view was taken, and a count begun
    /// before a view was taken is not kept, even when the view was released again since.
    #[test]
    fn a_containers_usage_is_kept_only_while_no_view_was_taken() {
        let tmp = tempfile::tempdir().unwrap();
        let s = store(tmp.path());
        container(&s, "c");
        let kept = |s: &Store| s.kept_usage(&s.get("c").unwrap()).map(|u| u.bytes);
        assert_eq!(kept(&s), None, "nothing kept yet");
        let seen = s.get("c").unwrap();
        assert!(s.keep_usage(&seen, usage(7)).unwrap());
        assert_eq!(kept(&s), Some(7));
        s.acquire_mount("c", |_, _| Ok(())).unwrap();
        assert_eq!(kept(&s), None, "not read while mounted");
        let mounted = s.get("c").unwrap();
        assert!(!s.keep_usage(&mounted, usage(8)).unwrap(), "not kept while mounted");
        s.release_mount("c", || Ok(())).unwrap();
        assert_eq!(kept(&s), None, "a view was taken since it was counted");
        assert!(!s.keep_usage(&seen, usage(9)).unwrap(), "counted before the view was taken");
        assert_eq!(kept(&s), None);
        let now = s.get("c").unwrap();
        assert!(s.keep_usage(&now, usage(10)).unwrap());
        assert_eq!(kept(&s), Some(10));
    }

    /// What a power cut can leave of the unsynced file: each is detected and read as no
    /// count (so `df` walks the tree again), and the next count is kept over it.
    #[test]
    fn a_count_a_power_cut_left_is_not_read() {
        let tmp = tempfile::tempdir().unwrap();
        let s = store(tmp.path());
        container(&s, "c");
        let seen = s.get("c").unwrap();
        assert!(s.keep_usage(&seen, usage(7)).unwrap());
        let path = s.usage_path("c");
        let whole = fs::read(&path).unwrap();
        let written: Kept = serde_json::from_slice(&whole).unwrap();
        assert_eq!(written.boot, boot_id().unwrap());
        let another_boot = crate::json::to_bytes(&Kept { boot: "another-boot".into(), ..written }).unwrap();
        let other_creation =
            crate::json::to_bytes(&Kept { created: 999, boot: boot_id().unwrap().into(), ..written }).unwrap();
        let cases: [(&str, &[u8]); 5] = [
            ("empty", b""),
            ("torn", &whole[..whole.len() / 2]),
            ("not json", b"\0\0\0\0"),
            ("another boot's", &another_boot),
            ("another layer's of the same ID", &other_creation),
        ];
        for (what, content) in cases {
            fs::write(&path, content).unwrap();
            assert_eq!(s.kept_usage(&s.get("c").unwrap()), None, "{what} count read");
            assert!(s.keep_usage(&s.get("c").unwrap(), usage(11)).unwrap(), "{what}: kept again");
            assert_eq!(s.kept_usage(&s.get("c").unwrap()).map(|u| u.bytes), Some(11), "{what}");
        }
        fs::remove_file(&path).unwrap();
        assert_eq!(s.kept_usage(&s.get("c").unwrap()), None, "gone");
        // The file is a cache: nothing of it reaches the layer's record.
        assert_eq!(s.get("c").unwrap(), seen);
    }

    /// Removing the layer removes its count; a count whose layer is gone is discarded
    /// at the next open.
    #[test]
    fn a_count_goes_with_its_layer() {
        let tmp = tempfile::tempdir().unwrap();
        let s = store(tmp.path());
        container(&s, "c");
        assert!(s.keep_usage(&s.get("c").unwrap(), usage(7)).unwrap());
        s.remove("c", |_| Ok(())).unwrap();
        assert!(!s.usage_path("c").exists(), "removed with the layer");
        fs::write(s.usage_path("gone"), b"{}").unwrap();
        let s = store(tmp.path());
        assert!(!s.usage_path("gone").exists(), "an orphan count is discarded");
    }
}
