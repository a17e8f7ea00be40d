//! What overlay keeps in a layer's record: the driver's part (`extra`) of
//! [`LayerMeta`], typed. The fields are serde-named as the keys the records have
//! always had, so a record written before this type existed still loads (a test
//! below loads one), and the keys other parts of the store keep in `extra` (the
//! lifecycle's usage) are left as they are.

use driver_core::error::{Cause, Error, Result};
use driver_core::store::LayerMeta;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::features::CopyUp;

/// Overlay's facts about one layer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlayRecord {
    /// The layer's short link under `l/` (classic mounts name lowers by it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// The bytes of the longest path an applied layer holds (what
    /// [`features::metacopy_fits`](crate::features::metacopy_fits) decides from); none
    /// for a created layer, whose content is unknown until its view is written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub longest_path: Option<u64>,
    /// How a writable layer's view copied up (by [`CopyUp::name`]). Once a view was
    /// mounted with redirects or metacopy its upper may hold them for good, so this
    /// never goes back, and the layer's diff follows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy_up: Option<CopyUp>,
    /// Why a container's view copies up less than metacopy by default, when it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy_up_why: Option<String>,
    /// The options the view was last mounted with (without the directories).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_options: Option<String>,
    /// How the view was last mounted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_api: Option<MountApi>,
}

/// How a view was mounted: one lower at a time, or classic mount data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountApi {
    /// `fsconfig(FSCONFIG_SET_STRING, "lowerdir+", ...)` (Linux 6.8 and later).
    #[serde(rename = "lowerdir+")]
    LowerdirPlus,
    /// `mount(2)` with the short links, from the driver's folder.
    #[serde(rename = "mount(2)")]
    Classic,
}

impl MountApi {
    /// The name recorded and shown in the driver's features.
    pub fn name(self) -> &'static str {
        match self {
            MountApi::LowerdirPlus => "lowerdir+",
            MountApi::Classic => "mount(2)",
        }
    }
}

/// The keys of `extra` that are overlay's (the fields of [`OverlayRecord`]).
const KEYS: [&str; 6] = ["link", "longest_path", "copy_up", "copy_up_why", "mount_options", "mount_api"];

impl OverlayRecord {
    /// Overlay's part of `meta`; a value of the wrong type is a corrupt record.
    pub fn of(meta: &LayerMeta) -> Result<OverlayRecord> {
        Self::from_extra(&meta.extra).map_err(|e| Error::layer(&meta.id, e))
    }

    fn from_extra(extra: &Map<String, Value>) -> Result<OverlayRecord, Cause> {
        let ours: Map<String, Value> =
            extra.iter().filter(|(k, _)| KEYS.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect();
        serde_json::from_value(Value::Object(ours))
            .map_err(|e| Cause::Corrupt(format!("the overlay driver's part of the layer's record: {e}")))
    }

    /// Writes these facts into `extra`: the fields that are set replace what was
    /// there, those that are not are removed; other keys stay.
    pub fn write_into(&self, extra: &mut Map<String, Value>) {
        for k in KEYS {
            extra.remove(k);
        }
        if let Ok(Value::Object(ours)) = serde_json::to_value(self) {
            extra.extend(ours);
        }
    }

    /// These facts as a fresh `extra` map.
    pub fn to_extra(&self) -> Map<String, Value> {
        let mut extra = Map::new();
        self.write_into(&mut extra);
        extra
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records as the driver wrote them before the record had a type (printed on that
    /// code by running `mount_options`'s scenario: base, mid over it, a writable ctr
    /// mounted and unmounted, mid mounted): they load, and written back they give the
    /// same `extra`, key for key (the lifecycle's `usage` left as it was).
    #[test]
    fn records_written_before_the_type_load() {
        let base = r#"{
          "id": "base", "parent": null, "writable": false,
          "diff_id": "sha256:65670c26c580a24a505702bea4eef6db181bb9c09430f8a2730cd689675e8bbb",
          "size": 1, "mounts": 0, "created": 1796639956,
          "extra": {"link": "3FUI5X4CCT", "longest_path": 5, "usage": {"bytes": 12288, "inodes": 3}}
        }"#;
        let mid = r#"{
          "id": "mid", "parent": "base", "writable": false,
          "diff_id": "sha256:64bfa84770bd7f895c413fc624e09695c35d586d240e43bb156393eab55268f4",
          "size": 1, "mounts": 1, "created": 1796639957,
          "extra": {
            "link": "DGVY37APWA", "longest_path": 9, "mount_api": "lowerdir+",
            "mount_options": "index=off,redirect_dir=on,metacopy=off",
            "usage": {"bytes": 20480, "inodes": 6}
          }
        }"#;
        let ctr = r#"{
          "id": "ctr", "parent": "mid", "writable": true, "diff_id": null, "size": 0, "mounts": 0,
          "created": 1796639957,
          "extra": {
            "copy_up": "redirect_dir", "link": "HOHYUZWLKX", "mount_api": "lowerdir+",
            "mount_options": "upperdir=/tmp/.tmp0vul8z/layers/ctr/diff,workdir=/tmp/.tmp0vul8z/layers/ctr/work,index=off,redirect_dir=on,metacopy=off"
          }
        }"#;
        let full = r#"{
          "id": "ctr", "parent": "mid", "writable": true, "diff_id": null, "size": 0, "mounts": 0,
          "created": 1796639957,
          "extra": {
            "copy_up": "full", "link": "HOHYUZWLKX", "mount_api": "mount(2)",
            "mount_options": "upperdir=/tmp/.tmpOQVOUz/layers/ctr/diff,workdir=/tmp/.tmpOQVOUz/layers/ctr/work,index=off,redirect_dir=off,metacopy=off"
          }
        }"#;
        let link = |l: &str| Some(l.to_string());
        let ctr_options = "upperdir=/tmp/.tmp0vul8z/layers/ctr/diff,workdir=/tmp/.tmp0vul8z/layers/ctr/work,\
                           index=off,redirect_dir=on,metacopy=off";
        let full_options = "upperdir=/tmp/.tmpOQVOUz/layers/ctr/diff,workdir=/tmp/.tmpOQVOUz/layers/ctr/work,\
                            index=off,redirect_dir=off,metacopy=off";
        for (json, want) in [
            (base, OverlayRecord { link: link("3FUI5X4CCT"), longest_path: Some(5), ..Default::default() }),
            (
                mid,
                OverlayRecord {
                    link: link("DGVY37APWA"),
                    longest_path: Some(9),
                    mount_api: Some(MountApi::LowerdirPlus),
                    mount_options: Some("index=off,redirect_dir=on,metacopy=off".into()),
                    ..Default::default()
                },
            ),
            (
                ctr,
                OverlayRecord {
                    link: link("HOHYUZWLKX"),
                    copy_up: Some(CopyUp::Redirect),
                    mount_api: Some(MountApi::LowerdirPlus),
                    mount_options: Some(ctr_options.into()),
                    ..Default::default()
                },
            ),
            (
                full,
                OverlayRecord {
                    link: link("HOHYUZWLKX"),
                    copy_up: Some(CopyUp::Full),
                    mount_api: Some(MountApi::Classic),
                    mount_options: Some(full_options.into()),
                    ..Default::default()
                },
            ),
        ] {
            let meta: LayerMeta = serde_json::from_str(json).unwrap();
            let got = OverlayRecord::of(&meta).unwrap();
            assert_eq!(got, want, "{}", meta.id);
            let mut again = meta.extra.clone();
            got.write_into(&mut again);
            assert_eq!(again, meta.extra, "{}", meta.id);
        }
    }

    /// Every field is one of [`KEYS`], by the name it is written under; other keys of
    /// `extra` stay when the record is written.
    #[test]
    fn keys_are_the_fields_and_others_stay() {
        let full = OverlayRecord {
            link: Some("L".into()),
            longest_path: Some(1),
            copy_up: Some(CopyUp::Metacopy),
            copy_up_why: Some("w".into()),
            mount_options: Some("o".into()),
            mount_api: Some(MountApi::Classic),
        };
        let extra = full.to_extra();
        let mut names: Vec<&str> = extra.keys().map(String::as_str).collect();
        names.sort();
        let mut keys = KEYS.to_vec();
        keys.sort();
        assert_eq!(names, keys);
        for way in [CopyUp::Full, CopyUp::Redirect, CopyUp::Metacopy] {
            let r = OverlayRecord { copy_up: Some(way), ..Default::default() };
            assert_eq!(r.to_extra()["copy_up"], way.name(), "the name recorded is the one shown");
        }
        for api in [MountApi::LowerdirPlus, MountApi::Classic] {
            let r = OverlayRecord { mount_api: Some(api), ..Default::default() };
            assert_eq!(r.to_extra()["mount_api"], api.name());
        }
        let mut with_usage = extra.clone();
        with_usage.insert("usage".into(), serde_json::json!({"bytes": 1, "inodes": 1}));
        OverlayRecord::default().write_into(&mut with_usage);
        assert_eq!(with_usage.keys().collect::<Vec<_>>(), ["usage"]);
    }

    #[test]
    fn a_value_of_the_wrong_kind_is_a_corrupt_record() {
        for bad in [r#"{"copy_up":"sideways"}"#, r#"{"longest_path":"long"}"#] {
            let extra: Map<String, Value> = serde_json::from_str(bad).unwrap();
            let e = OverlayRecord::from_extra(&extra).unwrap_err();
            assert!(matches!(e, Cause::Corrupt(_)), "{bad}: {e}");
        }
    }
}
