//! Workload profiles: how often each measured operation happens in a day and what
//! stays on disk (the shipped ones in cli/profiles/, or a FILE.toml).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::model::FileSize;

/// A workload: how often each measured operation happens in a day, and what is held.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub name: String,
    pub about: String,
    pub per_day: PerDay,
    pub held: Held,
    /// Recorded workloads and how often each runs (`[[workloads]]`).
    #[serde(default)]
    pub workloads: Vec<crate::workloads::Weight>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PerDay {
    pub image_pulls: f64,
    pub container_creates: f64,
    /// First writes to files the image holds (a copy-up on overlay), by file size
    /// (`1KiB`, `4KiB`, `1MiB`, `64MiB`, `512MiB`, …); 1KiB is measured by the storm
    /// of small appends, the others one by one.
    pub first_writes: BTreeMap<FileSize, f64>,
    pub chmods: f64,
    pub renames: f64,
    pub tree_deletes: f64,
    /// Diffs of a container (a commit or an image build step).
    pub diffs: f64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Held {
    /// Images kept on disk.
    pub images: f64,
    /// Containers alive at once.
    pub containers: f64,
    /// First writes each live container holds, by file size.
    pub first_writes_per_container: BTreeMap<FileSize, f64>,
    pub disk_budget_gb: f64,
}

const SHIPPED: [(&str, &str); 4] = [
    ("ci-runner", include_str!("../../profiles/ci-runner.toml")),
    ("dense-host", include_str!("../../profiles/dense-host.toml")),
    ("build-host", include_str!("../../profiles/build-host.toml")),
    ("big-files", include_str!("../../profiles/big-files.toml")),
];

impl Profile {
    fn parse(text: &str, origin: &str) -> Result<Profile, ProfileError> {
        toml::from_str(text).map_err(|source| ProfileError::Parse { origin: origin.into(), source })
    }

    /// The shipped profiles, in order.
    pub fn shipped() -> Vec<Profile> {
        SHIPPED.iter().map(|(n, t)| Profile::parse(t, n).expect("shipped profiles parse")).collect()
    }

    /// A shipped profile by name, or a TOML file (see cli/profiles/).
    pub fn load(spec: &str) -> Result<Profile, ProfileError> {
        if let Some((n, t)) = SHIPPED.iter().find(|(n, _)| *n == spec) {
            return Profile::parse(t, n);
        }
        if spec.ends_with(".toml") || Path::new(spec).exists() {
            let text =
                std::fs::read_to_string(spec).map_err(|source| ProfileError::Read { spec: spec.into(), source })?;
            return Profile::parse(&text, spec);
        }
        Err(ProfileError::Unknown { spec: spec.into(), shipped: SHIPPED.iter().map(|(n, _)| *n).collect() })
    }
}

/// A `--profile` that cannot be used (a usage error: exit 2).
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The TOML does not parse, or has a field no profile has (toml's message names it).
    #[error("profile {origin}: {}", source.message())]
    Parse { origin: String, source: toml::de::Error },
    /// The file cannot be read (its errno kept).
    #[error("profile {spec}: {source}")]
    Read { spec: String, source: std::io::Error },
    /// Neither a shipped profile's name nor a file.
    #[error("unknown profile {spec:?}: the shipped ones are {}, or give a FILE.toml", shipped.join(", "))]
    Unknown { spec: String, shipped: Vec<&'static str> },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_load_by_name_or_file_and_refuse_typos() {
        assert_eq!(Profile::shipped().len(), 4);
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("mine.toml");
        std::fs::write(
            &f,
            "name = \"mine\"\nabout = \"x\"\n[per_day]\ncontainer_creates = 5\n[held]\ncontainers = 1\n",
        )
        .unwrap();
        assert_eq!(Profile::load(f.to_str().unwrap()).unwrap().per_day.container_creates, 5.0);
        std::fs::write(&f, "name = \"mine\"\nabout = \"x\"\n[per_day]\ncontainer_create = 5\n[held]\n").unwrap();
        let e = Profile::load(f.to_str().unwrap()).unwrap_err();
        assert!(
            matches!(&e, ProfileError::Parse { source, .. } if source.message().contains("container_create")),
            "{e}"
        );
        let e = Profile::load("nope").unwrap_err();
        assert!(
            matches!(&e, ProfileError::Unknown { shipped, .. } if shipped == &["ci-runner", "dense-host", "build-host", "big-files"]),
            "{e}"
        );
        // A file that cannot be read keeps its errno (a directory named like a profile).
        let d = dir.path().join("dir.toml");
        std::fs::create_dir(&d).unwrap();
        let e = Profile::load(d.to_str().unwrap()).unwrap_err();
        assert!(matches!(&e, ProfileError::Read { source, .. } if source.raw_os_error() == Some(libc::EISDIR)), "{e}");
        // First-write sizes are read into bytes as the profile loads; a size not in KiB,
        // MiB or GiB is refused there, named.
        std::fs::write(&f, "name = \"mine\"\nabout = \"x\"\n[per_day.first_writes]\n\"4KB\" = 5\n[held]\n").unwrap();
        let e = Profile::load(f.to_str().unwrap()).unwrap_err();
        assert!(
            matches!(&e, ProfileError::Parse { source, .. } if source.message().contains("\"4KB\" is not like 4KiB")),
            "{e}"
        );
        let big = Profile::load("big-files").unwrap();
        assert!(big.per_day.first_writes.contains_key(&FileSize(512 << 20)), "{:?}", big.per_day.first_writes);
    }
}
