//! `strata bench`'s options and their checks, before anything runs.

use std::path::PathBuf;

use strata_scratch::FsKind;

use clap::ValueEnum;

use crate::model::DriverKind;
use crate::peers::Peer;
use crate::verdict::{Profile, ProfileError};
use crate::workloads::WorkloadsError;

/// A driver the bench compares (`bench --drivers`): a real one, never `auto`; the
/// bench's results name it by the same type.
pub use crate::model::DriverKind as BenchDriver;

/// A backing filesystem for overlay and vfs in the bench (`bench --fs`); btrfs always
/// runs on btrfs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Filesystem {
    Ext4,
    Xfs,
}

impl Filesystem {
    pub fn kind(self) -> FsKind {
        match self {
            Filesystem::Ext4 => FsKind::Ext4,
            Filesystem::Xfs => FsKind::Xfs,
        }
    }
}

/// The spellings of a value enum, for an error message: `a, b, c`.
fn spellings<T: ValueEnum>() -> String {
    let names: Vec<String> =
        T::value_variants().iter().filter_map(|v| v.to_possible_value()).map(|v| v.get_name().to_string()).collect();
    names.join(", ")
}

/// `bench --drivers`' parser: the bench's own message for an unknown driver.
pub fn bench_driver(s: &str) -> Result<BenchDriver, String> {
    BenchDriver::from_str(s, false)
        .map_err(|_| format!("unknown driver {s:?}: the drivers are {}", spellings::<BenchDriver>()))
}

/// `bench --fs`' parser.
pub fn filesystem(s: &str) -> Result<Filesystem, String> {
    Filesystem::from_str(s, false).map_err(|_| {
        format!(
            "unknown filesystem {s:?}: overlay and vfs run on {} (btrfs always on btrfs)",
            spellings::<Filesystem>()
        )
    })
}

/// `bench --peers`' parser.
pub fn peer(s: &str) -> Result<Peer, String> {
    Peer::from_str(s, false).map_err(|_| format!("unknown peer {s:?}: the peers are {}", spellings::<Peer>()))
}

/// `strata bench`'s options (flattened into the CLI's `bench` subcommand).
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Drivers to compare.
    #[arg(long, value_delimiter = ',', default_value = "overlay,vfs,btrfs", value_parser = bench_driver)]
    pub drivers: Vec<BenchDriver>,
    /// Backing filesystems for overlay and vfs (btrfs always runs on btrfs).
    #[arg(long, value_delimiter = ',', default_value = "ext4,xfs", value_parser = filesystem)]
    pub fs: Vec<Filesystem>,
    /// A real image instead of the embedded default workload, in any form `image
    /// unpack` reads, docker://REF too (repeatable; each is benched in turn).
    #[arg(long = "image", value_name = "IMAGE")]
    pub images: Vec<String>,
    /// For --image docker://REF: plain http, for a local registry.
    #[arg(long)]
    pub insecure: bool,
    /// For --image docker://REF: USER:PASS, or USER to be asked for the password.
    #[arg(long, value_name = "USER[:PASS]")]
    pub creds: Option<String>,
    /// For --image docker://REF: an auth.json as `skopeo login` writes it (default:
    /// $REGISTRY_AUTH_FILE, else $XDG_RUNTIME_DIR/containers/auth.json).
    #[arg(long, value_name = "FILE")]
    pub authfile: Option<PathBuf>,
    /// Containers per driver.
    #[arg(long, default_value_t = 5)]
    pub containers: usize,
    /// Write the results (versioned schema) here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Compare with an earlier --json run of this host: exit 1 naming each regression
    /// (timings as ratios to their in-run reference, exact figures exactly; docs/ci.md).
    /// Repeatable: the baselines' samples are pooled.
    #[arg(long)]
    pub baseline: Vec<PathBuf>,
    /// How much worse (in percent) a timing's ratio must be, its whole interval, to regress.
    #[arg(long, default_value_t = crate::gate::THRESHOLD_PCT)]
    pub max_regress: f64,
    /// How far (in percent) an exact figure may move and still count as the same.
    #[arg(long, default_value_t = crate::gate::TOLERANCE_PCT)]
    pub exact_tolerance: f64,
    /// With --baseline: write the comparison as Markdown here (a CI job's summary page).
    #[arg(long, value_name = "FILE")]
    pub summary_md: Option<PathBuf>,
    /// With --baseline: write a JUnit XML file here, one test case per figure.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// A small workload (a smaller image, 16 MiB largest file), for tests.
    #[arg(long)]
    pub quick: bool,
    /// How the phases' unpacks are synced (none, chain, file; see docs/durability.md).
    /// Each mode's unpack is also timed on its own, whatever this says.
    #[arg(long, value_enum, default_value_t = driver_core::Durability::Chain)]
    pub sync: driver_core::Durability,
    /// Also unpack the same image with these tools (containerd, podman), beside
    /// strata and the floor (the fastest gzip decompressor piped into `tar -x`).
    #[arg(long, value_delimiter = ',', value_parser = peer)]
    pub peers: Vec<Peer>,
    /// Write a self-contained HTML report with charts here.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Write the figures here for Prometheus (OpenMetrics text, also valid Prometheus
    /// 0.0.4 text), e.g. as FILE.prom in node-exporter's textfile collector directory.
    #[arg(long, value_name = "FILE")]
    pub openmetrics: Option<PathBuf>,
    /// Do not measure: re-read an earlier --json run (to render its report or
    /// compare it with a baseline). Given several times, compares the hosts of those
    /// runs side by side (same workload required).
    #[arg(long, value_name = "FILE.json")]
    pub from: Vec<PathBuf>,
    /// The workload the verdict is for: ci-runner, dense-host, build-host, big-files
    /// or a FILE.toml (repeatable; default: all four). The verdict is for the
    /// filesystem --root is on.
    #[arg(long = "profile", value_name = "PROFILE", value_delimiter = ',')]
    pub profile_names: Vec<String>,
    /// The profiles, loaded by [`BenchArgs::check_usage`].
    #[arg(skip)]
    pub profiles: Vec<Profile>,
    /// `--root`: the disk the verdict is for (its filesystem decides what is available).
    #[arg(skip)]
    pub root: PathBuf,
    /// The (driver, filesystem) pairs `--drivers` and `--fs` name, made by
    /// [`BenchArgs::check_usage`]: btrfs on btrfs, the others on each of `--fs`.
    #[arg(skip)]
    pub targets: Vec<Target>,
    #[command(flatten)]
    pub workloads: crate::workloads::WorkloadArgs,
}

/// A driver on a scratch filesystem of one kind.
pub type Target = (DriverKind, FsKind);

/// Which (driver, filesystem) pairs run: btrfs on btrfs, the others on each of `fs`.
fn targets(drivers: &[DriverKind], fs: &[FsKind]) -> Vec<Target> {
    let mut out = Vec::new();
    for &d in drivers {
        if d == DriverKind::Btrfs {
            out.push((d, FsKind::Btrfs));
            continue;
        }
        out.extend(fs.iter().map(|&f| (d, f)));
    }
    out
}

/// Bench options refused before anything runs (a usage error: exit 2).
#[derive(Debug, thiserror::Error)]
pub enum OptionsError {
    /// An option, or two together, that the bench refuses: the sentence says what to
    /// type instead (nothing failed under it, so there is no source to keep).
    #[error("{0}")]
    Refused(String),
    /// `--replay`, `--run`, `--label`.
    #[error(transparent)]
    Workloads(#[from] WorkloadsError),
    /// `--profile`.
    #[error(transparent)]
    Profile(#[from] ProfileError),
}

impl From<&str> for OptionsError {
    fn from(sentence: &str) -> Self {
        OptionsError::Refused(sentence.into())
    }
}

impl BenchArgs {
    /// Checks the options before anything runs and loads the profiles; the message is
    /// a usage error (exit 2).
    pub fn check_usage(&mut self, driver_given: bool) -> Result<(), OptionsError> {
        (self.profiles, self.targets) = check_usage(
            &self.drivers,
            &self.fs,
            self.containers,
            &self.profile_names,
            driver_given,
            self.from.is_empty(),
        )?;
        self.workloads.check()?;
        if self.baseline.is_empty() && (self.summary_md.is_some() || self.junit.is_some()) {
            return Err("--summary-md and --junit report a comparison: give --baseline FILE".into());
        }
        if self.from.len() > 1 {
            if !self.baseline.is_empty() {
                return Err("--baseline compares one run with earlier runs of its host; with several --from files \
                            give one --from"
                    .into());
            }
            if self.json.is_some() {
                return Err("--json writes one run; several --from files are compared, not merged".into());
            }
        }
        Ok(())
    }
}

fn check_usage(
    drivers: &[BenchDriver],
    fs: &[Filesystem],
    containers: usize,
    profiles: &[String],
    driver_given: bool,
    measuring: bool,
) -> Result<(Vec<Profile>, Vec<Target>), OptionsError> {
    if driver_given {
        return Err("bench ignores --driver: it compares drivers; choose them with --drivers overlay,vfs,btrfs".into());
    }
    let drivers = drivers.to_vec();
    let fs: Vec<FsKind> = fs.iter().map(|f| f.kind()).collect();
    if measuring && drivers.is_empty() {
        return Err("--drivers names no driver".into());
    }
    if measuring && drivers.iter().any(|d| *d != DriverKind::Btrfs) && fs.is_empty() {
        return Err("--fs names no filesystem for overlay and vfs".into());
    }
    if containers == 0 {
        return Err("--containers 0: the bench needs at least one container (two or more for a spread)".into());
    }
    let profiles = if profiles.is_empty() {
        Profile::shipped()
    } else {
        profiles.iter().map(|p| Profile::load(p)).collect::<Result<_, _>>()?
    };
    Ok((profiles, targets(&drivers, &fs)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-written names and parsers agree with what clap accepts, so an argument
    /// means what its spelling says everywhere it is printed.
    #[test]
    fn value_enums_spell_what_they_mean() {
        let name = |v: clap::builder::PossibleValue| v.get_name().to_string();
        for d in BenchDriver::value_variants() {
            assert_eq!(name(d.to_possible_value().unwrap()), d.name());
            assert_eq!(bench_driver(d.name()), Ok(*d));
        }
        for p in Peer::value_variants() {
            assert_eq!(name(p.to_possible_value().unwrap()), p.name());
            assert_eq!(peer(p.name()), Ok(*p));
        }
        for f in Filesystem::value_variants() {
            assert_eq!(name(f.to_possible_value().unwrap()), f.kind().name());
            assert_eq!(filesystem(f.kind().name()), Ok(*f));
        }
        assert_eq!(bench_driver("auto"), Err("unknown driver \"auto\": the drivers are overlay, vfs, btrfs".into()));
        assert!(filesystem("btrfs").unwrap_err().contains("run on ext4, xfs"));
        assert!(peer("docker").unwrap_err().starts_with("unknown peer \"docker\""));
    }
}
