//! The typed model of one bench run: what `strata bench` measures, what `--json` writes
//! and `--from` reads back, and what the verdict, the regression check and the report
//! read. Nothing else in the bench parses JSON. The schema is documented in
//! docs/json.md; `SCHEMA` changes whenever a field changes meaning.

mod keys;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use driver_core::Error;
use serde::{Deserialize, Deserializer, Serialize};

use crate::failure::{Failure, Result};

pub use keys::{size_name, CopyupOp, DiskPhase, DriverKind, FileSize, CREATE_LIKE, STORM_APPENDS};

pub const SCHEMA: u32 = 3;

/// The image label of the embedded default workload.
pub const DEFAULT_IMAGE: &str = "embedded default";

/// One run: where it ran, what it ran, what it measured, and what it concluded.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Run {
    pub schema: u32,
    pub host: Host,
    pub workload: Workload,
    /// Every target that was tried, in order; a failed one carries `error`.
    pub results: Vec<TargetResult>,
    /// Targets not tried because something they need is missing here.
    pub skipped: Vec<Skipped>,
    pub peers: Vec<PeerResult>,
    /// The verdict per image and workload profile (recomputed when a run is re-read).
    pub verdicts: Vec<Verdict>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Host {
    pub hostname: String,
    pub kernel: String,
    pub machine: String,
    pub cpus: usize,
    /// strata's version.
    pub strata: String,
    /// When the run started, seconds since the epoch.
    pub time: i64,
    /// `--root`: the disk the verdict is for.
    pub root: PathBuf,
    /// The filesystem `--root` (its nearest existing ancestor) is on.
    pub root_fs: String,
    /// Where the scratch filesystems' image files lived, and on what filesystem.
    pub scratch_dir: PathBuf,
    pub scratch_fs: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    pub images: Vec<String>,
    pub containers: usize,
    /// Unpacks timed per target (each on a fresh driver root).
    pub unpack_runs: usize,
    pub quick: bool,
    pub copyup_timing: String,
    /// Bytes of the lower file chmod and chown change (the largest first-write size).
    #[serde(default)]
    pub big_file_bytes: u64,
    /// Files in the lower directory that is renamed.
    #[serde(default)]
    pub rename_files: usize,
    /// The workloads of `--replay` and `--run`, by name (see [`WorkloadResult`]).
    #[serde(default)]
    pub workloads: Vec<String>,
}

/// A distribution of samples with its median and an interval for the median.
///
/// `[lo, hi]` is the distribution-free confidence interval of the median from order
/// statistics: the narrowest pair `x(k), x(n+1-k)` that still covers the median with
/// probability `confidence` ≥ 90%, or `[min, max]` (and its lower confidence) when there
/// are too few samples for 90%. No tail quantile is claimed from a handful of samples.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dist {
    pub samples: Vec<f64>,
    pub p50: f64,
    pub lo: f64,
    pub hi: f64,
    pub confidence: f64,
}

/// P(X < k) for X ~ Binomial(n, 1/2).
fn binomial_below(n: usize, k: usize) -> f64 {
    let mut c = 1.0f64;
    let mut sum = 0.0;
    for i in 0..k {
        if i > 0 {
            c = c * (n + 1 - i) as f64 / i as f64;
        }
        sum += c;
    }
    sum / 2f64.powi(n as i32)
}

impl Dist {
    pub fn of(samples: Vec<f64>) -> Dist {
        let mut s = samples.clone();
        s.sort_by(f64::total_cmp);
        let n = s.len();
        if n == 0 {
            return Dist { samples, ..Default::default() };
        }
        let p50 = if n % 2 == 1 { s[n / 2] } else { (s[n / 2 - 1] + s[n / 2]) / 2.0 };
        // Widest k (narrowest interval) whose coverage is still at least 90%.
        let mut k = 1;
        while k < n / 2 && 1.0 - 2.0 * binomial_below(n, k + 1) >= 0.9 {
            k += 1;
        }
        let confidence = 1.0 - 2.0 * binomial_below(n, k);
        Dist { samples, p50, lo: s[k - 1], hi: s[n - k], confidence }
    }

    pub fn n(&self) -> usize {
        self.samples.len()
    }

    /// The same distribution with every sample multiplied by `f` (tests doctor runs with it).
    #[cfg(test)]
    pub fn scaled(&self, f: f64) -> Dist {
        Dist::of(self.samples.iter().map(|s| s * f).collect())
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskUse {
    pub bytes: u64,
    pub inodes: u64,
}

impl DiskUse {
    /// What the filesystem at `path` holds now (statvfs).
    pub fn of(path: &Path) -> DiskUse {
        match nix::sys::statvfs::statvfs(path) {
            // btrfs allocates inodes on demand and reports no inode totals: count them.
            Ok(s) if s.files() == 0 => DiskUse {
                bytes: (s.blocks() - s.blocks_free()) * s.fragment_size(),
                inodes: driver_core::sys::disk_usage(path).map(|u| u.inodes).unwrap_or(0),
            },
            Ok(s) => DiskUse {
                bytes: (s.blocks() - s.blocks_free()) * s.fragment_size(),
                inodes: s.files() - s.files_free(),
            },
            Err(_) => DiskUse::default(),
        }
    }
}

/// How long one layer of the first unpack took to be ready.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerTime {
    pub chain_id: String,
    /// Seconds from the unpack's start until this layer was committed.
    pub done_at: f64,
    /// Bytes of uncompressed tar applied.
    pub bytes: u64,
}

/// Everything measured for one driver on one filesystem.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetResult {
    /// Which image: `embedded default` or the SRC given to --image.
    pub image: String,
    pub driver: DriverKind,
    pub fs: String,
    pub features: Vec<(String, String)>,
    /// Per layer, for the first unpack.
    pub unpack_layers: Vec<LayerTime>,
    /// Seconds per whole-image unpack (synced), one sample per unpack run.
    pub unpack: Dist,
    /// Bytes of uncompressed tar one unpack applies.
    pub unpack_bytes: u64,
    /// Seconds per unpack under each `--sync` mode (`none`, `chain`, `file`), until the
    /// unpack returned, and until its data was on disk (a syncfs after it).
    #[serde(default)]
    pub unpack_by_sync: BTreeMap<String, Dist>,
    #[serde(default)]
    pub unpack_by_sync_on_disk: BTreeMap<String, Dist>,
    pub unpack_cpu_seconds: f64,
    /// Seconds per container create: for a driver whose create is a few small files, the
    /// extra creates made for the gate (bench/target.rs `extra_creates`), then one per
    /// container.
    pub create: Dist,
    /// Seconds per `cp -a` of the image's top layer tree plus a syncfs, as many as
    /// containers, on the same filesystem: the reference for a driver whose layers are
    /// full copies (vfs); absent for the others (older runs held an empty Dist there).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "measured")]
    pub create_cp_a: Option<Dist>,
    /// Seconds per operation (`write 4KiB` … `write 512MiB`, `chmod big file`, `chown
    /// big file`, `rename dir`, `delete tree`, `storm: 500 small appends`), one sample
    /// per container.
    pub copyup: BTreeMap<CopyupOp, Dist>,
    /// overlay: `metacopy`, `redirect_dir` and `index` as the containers' overlays were
    /// mounted (their mount options, else the overlay module's defaults); empty for the
    /// other drivers. What `features` lists is what the kernel offers, not what is on.
    #[serde(default)]
    pub mounted: Vec<(String, String)>,
    /// How the lower directory was renamed: `rename` (in place, or a redirect) or `copy
    /// after EXDEV` (overlay without redirect_dir refuses, and the bench copies the tree
    /// and deletes the original, as `mv` does).
    #[serde(default)]
    pub rename_by: String,
    /// Bytes of disk each first write added (the `write SIZE` operations), per container.
    pub copyup_disk: BTreeMap<CopyupOp, Dist>,
    /// Disk use over the empty filesystem: `after_unpack`, `after_containers`, `after_writes`.
    pub disk: BTreeMap<DiskPhase, DiskUse>,
    /// Disk use (bytes over the empty filesystem) with 0, 1, … N containers.
    pub disk_by_containers: Vec<u64>,
    /// Seconds per diff of a container after its writes, one sample per container.
    pub diff: Dist,
    pub diff_bytes: u64,
    /// `--replay` and `--run`: each workload's figures on this target.
    #[serde(default)]
    pub workloads: Vec<WorkloadResult>,
    /// Exact figures, `phase.counter` → count (bytes the scratch device wrote and read,
    /// its flushes, read/write syscalls, fsync and syncfs calls, bytes and inodes held,
    /// per copy-up operation too): what the regression gate compares exactly (docs/ci.md).
    /// Empty in runs made before they were recorded.
    #[serde(default)]
    pub counts: BTreeMap<String, i64>,
    /// The reference measured in this run, interleaved with a timed figure (one sample
    /// beside each of its samples): `unpack` → the igzip|tar floor, `create` → `cp -a`
    /// (full-copy drivers) or the write+fsync loop, `copyup` and `diff` → the
    /// write+fsync loop. The gate judges `figure ÷ reference` (docs/ci.md).
    #[serde(default)]
    pub reference: BTreeMap<String, Dist>,
    /// CPU seconds (user + system) per sample of `unpack` and `create` and of their
    /// references (`unpack reference`, `create reference`: the floor's and `cp -a`'s
    /// processes, the write+fsync loop): what a loaded host changes far less than the
    /// wall time, judged the same way by the gate.
    #[serde(default)]
    pub cpu: BTreeMap<String, Dist>,
    pub error: Option<String>,
}

impl TargetResult {
    pub fn label(&self) -> String {
        format!("{}/{}", self.driver, self.fs)
    }

    pub fn ok(&self) -> bool {
        self.error.is_none()
    }

    /// What each container added to the disk, one sample per container.
    pub fn per_container_disk(&self) -> Dist {
        Dist::of(self.disk_by_containers.windows(2).map(|w| w[1] as f64 - w[0] as f64).collect())
    }

    /// The measured first-write sizes in bytes, ascending (the map's order: the writes
    /// first, by size).
    pub fn write_sizes(&self) -> Vec<u64> {
        self.copyup.keys().filter_map(|k| k.write_bytes()).collect()
    }

    /// The first write to the largest file (`write 512MiB`), when any was measured.
    pub fn largest_write(&self) -> Option<CopyupOp> {
        self.write_sizes().pop().map(|bytes| CopyupOp::Write { bytes })
    }

    pub fn disk_bytes(&self, phase: DiskPhase) -> u64 {
        self.disk.get(&phase).map(|d| d.bytes).unwrap_or(0)
    }
}

/// A target that was not tried, and what would make it run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Skipped {
    pub driver: DriverKind,
    pub fs: String,
    pub why: String,
    pub fix: String,
}

/// One tool's unpack of the image on one filesystem (`--peers`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerResult {
    pub image: String,
    /// `strata`, `containerd`, `podman` or `floor`.
    pub tool: String,
    /// The tool's own name for its storage: driver, snapshotter, or for the floor its
    /// pipe (`igzip|tar`, `unpigz|tar` or `gzip|tar`).
    pub driver: String,
    pub fs: String,
    /// The strata driver this row stands beside.
    pub strata_driver: String,
    pub unpack: Dist,
    pub disk_bytes: u64,
    pub error: Option<String>,
}

/// A cost per day with the interval that the figures' intervals give it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cost {
    pub p50: f64,
    pub lo: f64,
    pub hi: f64,
}

/// One target's expected cost under a profile, or why it is out.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetCost {
    pub target: String,
    /// Seconds of work a day.
    pub seconds_per_day: Cost,
    /// Bytes held: the kept images and the live containers with their writes.
    pub disk_bytes: f64,
    /// Why it cannot be the pick here (does not run, needs another disk, over budget).
    pub out: Option<String>,
}

/// The verdict for one image under one workload profile.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Verdict {
    pub image: String,
    pub profile: String,
    pub about: String,
    pub pick: Option<String>,
    pub runner_up: Option<String>,
    /// The pick and the runner-up overlap within the noise.
    pub tie: bool,
    /// The runner-up's cost over the pick's, seconds a day (p50).
    pub margin_seconds: f64,
    pub costs: Vec<TargetCost>,
    /// The sentence an operator acts on.
    pub summary: String,
    /// The two or three figures that decided it, in plain words.
    pub reasons: Vec<String>,
    /// What else an operator should know: other disks, documented guidance, testing-only.
    pub notes: Vec<String>,
}

/// A figure that may not apply: absent, or as older runs wrote it, a Dist without samples.
fn measured<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Dist>, D::Error> {
    Ok(Option::<Dist>::deserialize(d)?.filter(|d| d.n() > 0))
}

impl Run {
    pub fn load(path: &Path) -> Result<Run> {
        let data = std::fs::read(path).map_err(|e| Error::new(e).with_path(path))?;
        let run: Run = serde_json::from_slice(&data).map_err(|source| Failure::NotARun {
            path: path.to_path_buf(),
            schema: SCHEMA,
            source,
        })?;
        if run.schema != SCHEMA {
            return Err(Failure::OtherSchema { path: path.to_path_buf(), found: run.schema, reads: SCHEMA });
        }
        Ok(run)
    }

    pub fn images(&self) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        for r in &self.results {
            if !v.contains(&r.image) {
                v.push(r.image.clone());
            }
        }
        v
    }
}

/// One workload (`--replay TRACE` or `--run 'CMD'`) on one target: its trace replayed
/// in each of the target's containers (a `--run` command is first run for real, with
/// `--record`, in a container of its own on the target).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadResult {
    /// The trace file's stem, or `--label`.
    pub name: String,
    /// `trace FILE` or `run CMD`.
    pub source: String,
    /// Seconds per replay of the whole trace, one sample per container.
    pub wall: Dist,
    /// `--run`: seconds of the real command on this target, recorded (ptrace on).
    pub run_seconds: Option<f64>,
    /// Operations in the trace.
    pub ops: u64,
    /// Per operation class (`open`, `write`, `rename`, … as docs/trace.md names them):
    /// how many, the bytes they wrote, the system calls their replay made, and the
    /// seconds they took, per container.
    pub classes: BTreeMap<String, ClassFigures>,
    /// First changes to nodes the image held (overlay copies these up), grouped by
    /// operation class, node kind and size: `write file ≤1MiB`.
    pub copyups: Vec<CopyupFigures>,
    /// Bytes the container layer added on disk (statfs delta, synced), per container.
    pub layer_bytes: Dist,
    /// Seconds per diff of a container after the workload, one sample per container.
    pub diff: Dist,
    pub diff_bytes: u64,
    pub error: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassFigures {
    pub count: u64,
    pub bytes: u64,
    pub syscalls: u64,
    pub seconds: Dist,
}

/// Copy-ups of one operation class, node kind and size bucket.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopyupFigures {
    pub class: String,
    /// `file`, `dir`, `symlink` or `other`.
    pub kind: String,
    /// The bucket's upper bound (`4KiB`, `64KiB`, `1MiB`, `16MiB`, `256MiB`), or `more`.
    pub size_up_to: String,
    /// Nodes in the bucket, and their size together before the change.
    pub nodes: u64,
    pub bytes: u64,
    /// Seconds the bucket's operations took together, one sample per container.
    pub seconds: Dist,
}

impl WorkloadResult {
    pub fn ok(&self) -> bool {
        self.error.is_none()
    }

    /// Seconds all copy-ups took, one sample per container.
    pub fn copyup_seconds(&self) -> Dist {
        let n = self.copyups.iter().map(|c| c.seconds.n()).max().unwrap_or(0);
        Dist::of((0..n).map(|i| self.copyups.iter().filter_map(|c| c.seconds.samples.get(i)).sum()).collect())
    }

    /// Files copied up and their bytes (directories and links left out).
    pub fn copied_files(&self) -> (u64, u64) {
        self.copyups.iter().filter(|c| c.kind == "file").fold((0, 0), |(n, b), c| (n + c.nodes, b + c.bytes))
    }

    /// System calls the replay made, all classes together.
    pub fn syscalls(&self) -> u64 {
        self.classes.values().map(|c| c.syscalls).sum()
    }
}

/// `1.23 s`, `45.6 ms`, `12 µs`.
pub fn secs(s: f64) -> String {
    let a = s.abs();
    if a >= 100.0 {
        format!("{s:.0} s")
    } else if a >= 1.0 {
        format!("{s:.2} s")
    } else if a >= 1e-3 {
        format!("{:.1} ms", s * 1e3)
    } else {
        format!("{:.0} µs", s * 1e6)
    }
}

/// A time a day, in the unit that reads best: `42 s`, `12 min`, `3.1 h`.
pub fn per_day(s: f64) -> String {
    if s >= 7200.0 {
        format!("{:.1} h", s / 3600.0)
    } else if s >= 120.0 {
        format!("{:.0} min", s / 60.0)
    } else {
        secs(s)
    }
}

/// A size, in the binary units every strata command prints (crate::output).
pub use crate::output::size;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_interval_is_from_order_statistics_and_says_its_confidence() {
        let d = Dist::of(vec![5.0, 1.0, 3.0, 2.0, 4.0]);
        assert_eq!((d.p50, d.lo, d.hi), (3.0, 1.0, 5.0));
        assert!((d.confidence - 0.9375).abs() < 1e-9, "{}", d.confidence);
        // Ten samples: x(2)..x(9) covers the median with 97.9%; x(3)..x(8) only 89%.
        let d = Dist::of((1..=10).map(f64::from).collect());
        assert_eq!((d.p50, d.lo, d.hi), (5.5, 2.0, 9.0));
        assert!(d.confidence > 0.97 && d.confidence < 0.98);
        // Two samples: the range, honestly at 50%.
        let d = Dist::of(vec![2.0, 1.0]);
        assert_eq!((d.p50, d.lo, d.hi, d.confidence), (1.5, 1.0, 2.0, 0.5));
        assert_eq!(Dist::of(vec![]).n(), 0);
    }

    /// gate-1.json was recorded when a figure that does not apply was written as zeros
    /// (overlay's `create_cp_a`: an empty Dist); a run written now leaves it out. Both
    /// load, to the same run, with the copy-up operations and disk phases typed.
    #[test]
    fn an_old_run_with_zeros_and_a_new_one_with_absent_figures_both_load() {
        let old_text = include_str!("../../tests/fixtures/bench/gate-1.json");
        let old_json: serde_json::Value = serde_json::from_str(old_text).unwrap();
        let zeros = &old_json["results"][0]["create_cp_a"];
        assert_eq!((zeros["samples"].as_array().map(Vec::len), zeros["p50"].as_f64()), (Some(0), Some(0.0)));
        let old: Run = serde_json::from_str(old_text).expect("the old run loads");
        let r = &old.results[0];
        assert_eq!((r.driver, r.create_cp_a.as_ref()), (DriverKind::Overlay, None));

        let new_text = serde_json::to_string(&old).unwrap();
        let new_json: serde_json::Value = serde_json::from_str(&new_text).unwrap();
        assert!(new_json["results"][0].get("create_cp_a").is_none(), "absent, not zeros");
        let new: Run = serde_json::from_str(&new_text).expect("the new run loads");
        assert_eq!(serde_json::to_value(&new).unwrap(), serde_json::to_value(&old).unwrap());

        // The names in the file, read once into types, and written back as they were.
        let r = &new.results[0];
        assert_eq!(r.write_sizes(), [4 << 10, 1 << 20, 64 << 20, 512 << 20]);
        assert_eq!(r.largest_write(), Some(CopyupOp::Write { bytes: 512 << 20 }));
        assert_eq!(r.copyup.len(), 4 + CopyupOp::METADATA.len());
        for op in r.copyup.keys() {
            assert!(old_json["results"][0]["copyup"].get(op.to_string()).is_some(), "{op}");
        }
        let phase = old_json["results"][0]["disk"]["after_unpack"]["bytes"].as_u64();
        assert_eq!(Some(r.disk_bytes(DiskPhase::Unpack)), phase);

        // A measured cp -a (vfs's) is kept, and its samples are what was written.
        let mut vfs = r.clone();
        vfs.driver = DriverKind::Vfs;
        vfs.create_cp_a = Some(Dist::of(vec![0.5, 0.7]));
        let back: TargetResult = serde_json::from_str(&serde_json::to_string(&vfs).unwrap()).unwrap();
        assert_eq!(back.create_cp_a, vfs.create_cp_a);
    }

    #[test]
    fn a_run_with_an_unknown_copy_up_operation_or_driver_is_refused_with_its_name() {
        let text = include_str!("../../tests/fixtures/bench/gate-1.json");
        let dir = tempfile::tempdir().unwrap();
        for (from, to, says) in [
            ("\"chmod big file\"", "\"chmod small file\"", "unknown copy-up operation \"chmod small file\""),
            ("\"write 4KiB\"", "\"write 4KB\"", "\"write 4KB\": the size is not like 4KiB"),
            ("\"driver\": \"overlay\"", "\"driver\": \"zfs\"", "unknown variant `zfs`"),
        ] {
            assert!(text.contains(from), "{from}");
            let path = dir.path().join("run.json");
            std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
            let e = Run::load(&path).unwrap_err();
            assert!(
                matches!(&e, Failure::NotARun { source, schema: SCHEMA, .. }
                    if source.to_string().contains(says)),
                "{e:?}"
            );
            // The printed line names the file and says what it is not.
            assert!(e.to_string().starts_with(&format!("{}: not a strata bench run", path.display())), "{e}");
        }
    }

    #[test]
    fn a_run_of_another_schema_is_refused_with_both_schemas() {
        let text = include_str!("../../tests/fixtures/bench/gate-1.json");
        let from = format!("\"schema\": {SCHEMA}");
        assert!(text.contains(&from), "{from}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.json");
        std::fs::write(&path, text.replacen(&from, "\"schema\": 2", 1)).unwrap();
        let e = Run::load(&path).unwrap_err();
        assert!(matches!(&e, Failure::OtherSchema { found: 2, reads: SCHEMA, path: p } if p == &path), "{e:?}");
        // Not there at all: the io error, with its errno.
        let e = Run::load(&dir.path().join("none.json")).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{e:?}");
    }

    #[test]
    fn sizes_and_times_read_well() {
        assert_eq!(secs(0.0000123), "12 µs");
        assert_eq!(secs(0.0456), "45.6 ms");
        assert_eq!(per_day(3000.0), "50 min");
        assert_eq!(size(980e6), "934.6 MiB");
    }
}
