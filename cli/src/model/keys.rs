//! The typed names in a run: the copy-up operations, the disk phases and the drivers.
//! Each is written in the JSON as it always was (docs/json.md), and read back from
//! those words once, when a run is loaded: nothing else in the bench parses them.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How many small lower files the storm appends to, one byte each.
pub const STORM_APPENDS: usize = 500;

/// The key of the create-shaped reference (meter::create_like) in `results[].reference`
/// and, with ` reference`, in `results[].cpu`: a new key, so that a baseline whose
/// creates stood beside the write+fsync loop (key `create`) is not compared with it.
pub const CREATE_LIKE: &str = "create-like";

/// One copy-up operation the bench times in each container.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum CopyupOp {
    /// `write 4KiB`: the first 1-byte append to a lower file of `bytes`.
    Write { bytes: u64 },
    /// `chmod big file`: chmod of the largest lower file.
    ChmodBigFile,
    /// `chown big file`: chown of another name of that file.
    ChownBigFile,
    /// `rename dir`: rename of a lower directory, as `mv` does it.
    RenameDir,
    /// `delete tree`: deleting a lower tree.
    DeleteTree,
    /// `storm: 500 small appends`: [`STORM_APPENDS`] appends to small lower files.
    Storm,
}

impl CopyupOp {
    /// The operations other than the first writes, in the order they run.
    pub const METADATA: [CopyupOp; 5] =
        [CopyupOp::ChmodBigFile, CopyupOp::ChownBigFile, CopyupOp::RenameDir, CopyupOp::DeleteTree, CopyupOp::Storm];

    /// The lower file's size, for a first write.
    pub fn write_bytes(self) -> Option<u64> {
        match self {
            CopyupOp::Write { bytes } => Some(bytes),
            _ => None,
        }
    }
}

impl fmt::Display for CopyupOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CopyupOp::Write { bytes } => write!(f, "write {}", size_name(*bytes)),
            CopyupOp::ChmodBigFile => f.write_str("chmod big file"),
            CopyupOp::ChownBigFile => f.write_str("chown big file"),
            CopyupOp::RenameDir => f.write_str("rename dir"),
            CopyupOp::DeleteTree => f.write_str("delete tree"),
            CopyupOp::Storm => write!(f, "storm: {STORM_APPENDS} small appends"),
        }
    }
}

impl From<CopyupOp> for String {
    fn from(op: CopyupOp) -> String {
        op.to_string()
    }
}

impl TryFrom<String> for CopyupOp {
    type Error = String;

    fn try_from(s: String) -> Result<CopyupOp, String> {
        if let Some(size) = s.strip_prefix("write ") {
            return parse_size(size)
                .map(|bytes| CopyupOp::Write { bytes })
                .ok_or_else(|| format!("copy-up operation {s:?}: the size is not like 4KiB, 64MiB or 1GiB"));
        }
        CopyupOp::METADATA
            .into_iter()
            .find(|op| op.to_string() == s)
            .ok_or_else(|| format!("unknown copy-up operation {s:?}"))
    }
}

/// The phase after which the disk use over the empty filesystem is read: `after_unpack`,
/// `after_containers`, `after_writes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum DiskPhase {
    /// The first unpack of the image.
    #[serde(rename = "after_unpack")]
    Unpack,
    /// Every container's create.
    #[serde(rename = "after_containers")]
    Containers,
    /// The copy-up operations in every container.
    #[serde(rename = "after_writes")]
    Writes,
}

impl DiskPhase {
    pub fn name(self) -> &'static str {
        match self {
            DiskPhase::Unpack => "after_unpack",
            DiskPhase::Containers => "after_containers",
            DiskPhase::Writes => "after_writes",
        }
    }
}

/// A strata driver, as the bench names its targets.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum DriverKind {
    #[default]
    Overlay,
    Vfs,
    Btrfs,
}

impl DriverKind {
    pub fn name(self) -> &'static str {
        match self {
            DriverKind::Overlay => "overlay",
            DriverKind::Vfs => "vfs",
            DriverKind::Btrfs => "btrfs",
        }
    }
}

impl fmt::Display for DriverKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A file size as profiles name it (`4KiB`, `64MiB`, `1GiB`), read once into bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct FileSize(pub u64);

impl fmt::Display for FileSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&size_name(self.0))
    }
}

impl From<FileSize> for String {
    fn from(s: FileSize) -> String {
        s.to_string()
    }
}

impl TryFrom<String> for FileSize {
    type Error = String;

    fn try_from(s: String) -> Result<FileSize, String> {
        parse_size(&s).map(FileSize).ok_or_else(|| format!("file size {s:?} is not like 4KiB, 64MiB or 1GiB"))
    }
}

/// `4KiB`, `16MiB`, `1GiB` → bytes.
fn parse_size(s: &str) -> Option<u64> {
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(split);
    let scale = match unit {
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return None,
    };
    Some(n.parse::<u64>().ok()? * scale)
}

/// Bytes as the bench names a file size: `4KiB`, `16MiB`, `1GiB` (the largest unit it
/// is a whole number of; bytes as `100B`).
pub fn size_name(bytes: u64) -> String {
    for (unit, scale) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if bytes >= scale && bytes.is_multiple_of(scale) {
            return format!("{}{unit}", bytes / scale);
        }
    }
    format!("{bytes}B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_copyup_operation_reads_back_as_itself_under_its_old_name() {
        let mut rng = strata_cli::workload::Rng::new(7);
        let mut ops: Vec<CopyupOp> = CopyupOp::METADATA.to_vec();
        for _ in 0..200 {
            let unit = [1u64 << 10, 1 << 20, 1 << 30][rng.below(3) as usize];
            ops.push(CopyupOp::Write { bytes: (1 + rng.below(4096)) * unit });
        }
        for op in ops {
            let json = serde_json::to_string(&op).unwrap();
            assert_eq!(serde_json::from_str::<CopyupOp>(&json).unwrap(), op, "{json}");
        }
        let names = ["write 4KiB", "write 512MiB", "chmod big file", "chown big file", "rename dir", "delete tree"];
        for name in names.into_iter().chain(["storm: 500 small appends"]) {
            let op = CopyupOp::try_from(name.to_string()).unwrap();
            assert_eq!(op.to_string(), name);
        }
        assert_eq!(CopyupOp::try_from("write 512MiB".to_string()), Ok(CopyupOp::Write { bytes: 512 << 20 }));
        assert!(CopyupOp::try_from("write lots".to_string()).unwrap_err().contains("not like 4KiB"));
        assert!(CopyupOp::try_from("chmod small file".to_string()).unwrap_err().contains("unknown copy-up"));
    }

    #[test]
    fn disk_phases_and_drivers_keep_their_names() {
        for p in [DiskPhase::Unpack, DiskPhase::Containers, DiskPhase::Writes] {
            assert_eq!(serde_json::to_string(&p).unwrap(), format!("\"{}\"", p.name()));
        }
        use clap::ValueEnum;
        for &d in DriverKind::value_variants() {
            assert_eq!(serde_json::to_string(&d).unwrap(), format!("\"{d}\""));
            assert_eq!(DriverKind::from_str(d.name(), false), Ok(d));
        }
        assert!(DriverKind::from_str("zfs", false).is_err());
        assert_eq!(size_name(512 << 20), "512MiB");
        assert_eq!(parse_size("512MiB"), Some(512 << 20));
        assert_eq!(size_name(1536), "1536B");
    }
}
