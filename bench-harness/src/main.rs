//! `strata`: container-image storage drivers side by side.
//!
//! `strata [--root DIR] [--driver overlay|vfs|btrfs|auto] <command>`; see
//! `strata --help` and the README. Every failure prints one `error: ...` line on
//! stderr and exits non-zero, leaving the store as it was.

mod bench;
mod commit;
mod exit;
mod explain;
mod fleet;
mod gate;
mod lifecycle;
mod meter;
mod model;
mod openmetrics;
mod output;
mod peers;
mod probe;
mod progress;
mod report;
mod runcmd;
mod syncmodes;
mod verdict;
mod workloads;

use std::fs::File;
use std::io::{self, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use bench_harness::drivers;
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use driver_core::{Driver, Durability, Error};
use strata_image::check;
use strata_image::commit::LayerCompression;
use strata_image::images::ImageStore;
use strata_image::registry;
use strata_image::save::SaveFormat;

use crate::output::bytes as human_bytes;

#[derive(Parser)]
#[command(name = "strata", version, about = "Container-image storage drivers (overlay, vfs, btrfs), side by side")]
struct Cli {
    /// Where the drivers keep their data; each driver uses its own subfolder.
    #[arg(long, global = true, default_value = "/var/lib/strata")]
    root: PathBuf,
    /// Which driver: overlay, vfs, btrfs, or auto (overlay, else btrfs on btrfs, else vfs).
    #[arg(long, global = true, value_enum, default_value_t = DriverArg::Auto)]
    driver: DriverArg,
    /// No progress or notes on stderr: only results (stdout) and errors.
    #[arg(short, long, global = true)]
    quiet: bool,
    /// How much to say on stderr: error, info (progress and notes), debug (also what
    /// happens underneath: the driver's folder, leftovers collected, layers reused).
    #[arg(long, global = true, value_enum, default_value_t = LogLevel::Info)]
    log_level: LogLevel,
    /// Same as --log-level debug.
    #[arg(long, global = true)]
    debug: bool,
    #[command(subcommand)]
    command: Command,
}

/// `--driver`, as the drivers are registered by name (`drivers::open`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum DriverArg {
    Overlay,
    Vfs,
    Btrfs,
    Auto,
}

impl DriverArg {
    fn name(self) -> &'static str {
        match self {
            DriverArg::Overlay => "overlay",
            DriverArg::Vfs => "vfs",
            DriverArg::Btrfs => "btrfs",
            DriverArg::Auto => "auto",
        }
    }
}

/// `--log-level`, in increasing detail (its index is the [`LEVEL`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum LogLevel {
    Error,
    Info,
    Debug,
}

/// `image save --format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum SaveFormatArg {
    Oci,
    OciArchive,
    DockerArchive,
}

impl From<SaveFormatArg> for SaveFormat {
    fn from(f: SaveFormatArg) -> SaveFormat {
        match f {
            SaveFormatArg::Oci => SaveFormat::Oci,
            SaveFormatArg::OciArchive => SaveFormat::OciArchive,
            SaveFormatArg::DockerArchive => SaveFormat::DockerArchive,
        }
    }
}

/// `container commit --compression`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum CompressionArg {
    Gzip,
    Zstd,
}

impl From<CompressionArg> for LayerCompression {
    fn from(c: CompressionArg) -> LayerCompression {
        match c {
            CompressionArg::Gzip => LayerCompression::Gzip,
            CompressionArg::Zstd => LayerCompression::Zstd,
        }
    }
}

/// 0 error, 1 info, 2 debug: set once from the command line.
static LEVEL: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(1);

fn level() -> u8 {
    LEVEL.load(std::sync::atomic::Ordering::Relaxed)
}

/// A note or progress line on stderr, unless --quiet or --log-level error.
macro_rules! info {
    ($($t:tt)*) => { if level() >= 1 { eprintln!($($t)*) } };
}

/// What happens underneath, with --debug.
macro_rules! debug {
    ($($t:tt)*) => { if level() >= 2 { eprintln!("debug: {}", format!($($t)*)) } };
}

#[derive(Subcommand)]
enum Command {
    /// Make, mount, diff and remove single layers.
    #[command(subcommand)]
    Layer(LayerCmd),
    /// Unpack, list and remove images.
    #[command(subcommand)]
    Image(ImageCmd),
    /// Make container layers over images.
    #[command(subcommand)]
    Container(ContainerCmd),
    /// What this host offers the drivers (kernel, filesystem, overlay and btrfs
    /// features) and which drivers can run here, or why not.
    Probe {
        #[arg(long)]
        json: bool,
    },
    /// Run the drivers side by side on the same work and recommend one for this host.
    Bench(Box<bench::BenchArgs>),
    /// Disk used per image and per container (total, shared with another image or
    /// container, unique to it; bytes and inodes) and the store's total, from counts
    /// kept when each layer was committed.
    Df {
        /// The versioned schema of docs/json.md.
        #[arg(long)]
        json: bool,
    },
    /// Verify the whole store: every layer against the content record made when it was
    /// committed, every layer and image record, every kept blob, leftovers of killed
    /// processes. One line per problem; exit 0 only when there is none (docs/check.md).
    Check {
        /// Heal what the store keeps enough to heal (layers applied again from their
        /// blobs, image records rebuilt), remove what cannot be trusted, and check again.
        #[arg(long)]
        repair: bool,
        /// The versioned schema of docs/json.md.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ImageCmd {
    /// Unpack an OCI image layout (DIR or DIR:TAG), an oci-archive or a docker-archive
    /// (skopeo's spellings too: oci:DIR[:TAG], oci-archive:FILE, docker-archive:FILE;
    /// docker://REF pulls); prints the top layer's ID.
    Unpack {
        src: String,
        /// Name to record the image under (default: its tag in the source).
        #[arg(long)]
        name: Option<String>,
        /// Platform to pick from a multi-platform image, OS/ARCH[/VARIANT] (default:
        /// this host's); an error when the image has none such.
        #[arg(long)]
        platform: Option<String>,
        /// For docker://REF: plain http, for a local registry.
        #[arg(long)]
        insecure: bool,
        #[command(flatten)]
        auth: AuthArgs,
        /// What is synced before the command exits 0, and so survives a power cut:
        /// none, chain (one syncfs per chain of layers, then the records) or file (each
        /// file and directory fsynced as written). See docs/durability.md.
        #[arg(long, value_enum, default_value_t = Durability::Chain)]
        sync: Durability,
    },
    /// Pull an image from a registry (OCI distribution protocol) and unpack it.
    ///
    /// The download fails when it stalls (less than --low-speed-limit bytes/s over
    /// --low-speed-time seconds) or runs past --timeout; a failed or interrupted pull
    /// (Ctrl-C) leaves the store as it was.
    Pull {
        reference: String,
        /// Plain http, for a local registry.
        #[arg(long)]
        insecure: bool,
        /// What is synced before the command exits 0, and so survives a power cut:
        /// none, chain (one syncfs per chain of layers, then the records) or file (each
        /// file and directory fsynced as written). See docs/durability.md.
        #[arg(long, value_enum, default_value_t = Durability::Chain)]
        sync: Durability,

        #[command(flatten)]
        auth: AuthArgs,
        /// Seconds the whole download (manifests, config, layers) may take.
        #[arg(long, env = "STRATA_PULL_TIMEOUT", default_value_t = 3600, value_name = "SECS")]
        timeout: u64,
        /// Bytes per second below which, averaged over --low-speed-time, the pull fails.
        #[arg(long, env = "STRATA_PULL_LOW_SPEED_LIMIT", default_value_t = 1024, value_name = "BYTES")]
        low_speed_limit: u64,
        /// Seconds over which the speed is averaged; also the longest a single read may block.
        #[arg(long, env = "STRATA_PULL_LOW_SPEED_TIME", default_value_t = 30, value_name = "SECS",
              value_parser = clap::value_parser!(u64).range(1..))]
        low_speed_time: u64,
    },
    /// Push a stored image to a registry (OCI distribution protocol): the blobs the
    /// repository lacks (mounted from another repository of the registry when one is
    /// known to hold them), then the manifest. Prints the manifest's digest.
    Push {
        name: String,
        /// Where to: HOST[:PORT]/REPOSITORY[:TAG].
        reference: String,
        /// Plain http, for a local registry.
        #[arg(long)]
        insecure: bool,
        #[command(flatten)]
        auth: AuthArgs,
        /// Blobs larger than this are sent in PATCHes of this many bytes; smaller ones
        /// in one PUT.
        #[arg(long, default_value_t = 64 << 20, value_name = "BYTES",
              value_parser = clap::value_parser!(u64).range(1..))]
        chunk_size: u64,
        /// Seconds one request may take.
        #[arg(long, default_value_t = 3600, value_name = "SECS")]
        timeout: u64,
    },
    /// List images: size (file content of its layers), top layer, containers on it.
    Ls {
        /// The versioned schema of docs/json.md.
        #[arg(long)]
        json: bool,
        /// Full layer IDs.
        #[arg(long)]
        no_trunc: bool,
    },
    /// Remove an image and the layers no other image or container uses.
    Rm { name: String },
    /// Remove the layers and cached blobs nothing uses (no image, no container, no
    /// unpack or pull under way); prints what went, with sizes.
    Prune {
        /// Only list what would go.
        #[arg(long)]
        dry_run: bool,
    },
    /// Write a stored image as an OCI layout (DIR), an oci-archive or a docker-archive.
    Save {
        name: String,
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
        /// oci, oci-archive or docker-archive (default: oci for an existing directory,
        /// else oci-archive).
        #[arg(long, value_enum)]
        format: Option<SaveFormatArg>,
    },
    /// The layers of an image, top first: sizes, files added/changed/deleted, what
    /// made each, and the bytes each hides from the layers below.
    History {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// An image's manifest and config; with --efficiency, its wasted space (bytes
    /// shipped in a layer but overwritten or deleted above), as dive reports it.
    Inspect {
        name: String,
        #[arg(long)]
        efficiency: bool,
        #[arg(long)]
        json: bool,
        /// Fail (exit non-zero) when more bytes than this are wasted.
        #[arg(long, requires = "efficiency")]
        max_wasted_bytes: Option<u64>,
        /// Fail (exit non-zero) when the efficiency (0 to 1) is below this.
        #[arg(long, requires = "efficiency")]
        min_efficiency: Option<f64>,
    },
}

/// Credentials for a registry (default: the containers auth file, then Docker's
/// config.json, with its credential helpers).
#[derive(clap::Args)]
struct AuthArgs {
    /// USER:PASS, or USER to be asked for the password.
    #[arg(long, value_name = "USER[:PASS]")]
    creds: Option<String>,
    /// An auth.json as `skopeo login` and `podman login` write it
    /// (default: $REGISTRY_AUTH_FILE, else $XDG_RUNTIME_DIR/containers/auth.json).
    #[arg(long, value_name = "FILE")]
    authfile: Option<PathBuf>,
}

impl AuthArgs {
    fn options(self) -> registry::AuthOptions {
        registry::AuthOptions { creds: self.creds, authfile: self.authfile }
    }
}

#[derive(Subcommand)]
enum ContainerCmd {
    /// Make the writable layer NAME over IMAGE's top layer.
    Create {
        name: String,
        #[arg(long)]
        image: String,
    },
    /// List containers (writable layers), with the image each was made on.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Remove a container (refused while mounted).
    Rm { name: String },
    /// Make the container's changes a new image layer, recorded as image --image.
    Commit {
        name: String,
        /// Name of the new image.
        #[arg(long)]
        image: String,
        /// A comment for the new layer's history entry.
        #[arg(long)]
        message: Option<String>,
        /// How the new layer's blob is compressed: gzip or zstd.
        #[arg(long, value_enum, default_value_t = CompressionArg::Gzip)]
        compression: CompressionArg,
        /// What is synced before the command exits 0, and so survives a power cut:
        /// none, chain (one syncfs per chain of layers, then the records) or file (each
        /// file and directory fsynced as written). See docs/durability.md.
        #[arg(long, value_enum, default_value_t = Durability::Chain)]
        sync: Durability,
    },
    /// Run CMD in the container's view: its own mount and network namespaces (loopback
    /// only), the view as /, a fresh /proc and a minimal /dev, the image's Env and
    /// WorkingDir, as root unless --user. Exits with CMD's status (128+signal when a
    /// signal ended it) and leaves nothing mounted.
    ///
    /// NOT a security boundary: no user namespace, cgroups, seccomp policy or capability
    /// dropping. It makes real filesystem work in a container, it is not a runtime.
    Run {
        name: String,
        /// Record every filesystem change CMD and its children make (ptrace) to TRACE
        /// (docs/trace.md).
        #[arg(long, value_name = "TRACE")]
        record: Option<PathBuf>,
        /// Keep the bytes written in the trace (default: sizes, offsets and how well
        /// the bytes compress).
        #[arg(long, requires = "record")]
        record_data: bool,
        /// Run as UID[:GID] (GID defaults to UID), no supplementary groups.
        #[arg(long, value_name = "UID[:GID]")]
        user: Option<String>,
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// Perform a recorded trace's operations in the container's view, in order, as fast
    /// as they go; prints what each class of operations and the copy-ups cost.
    Replay {
        name: String,
        trace: PathBuf,
        /// The figures as JSON (strata_run::replay::ReplayStats).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum LayerCmd {
    /// Make an empty writable layer (a container layer) over PARENT.
    Create {
        id: String,
        #[arg(long)]
        parent: Option<String>,
    },
    /// Apply an OCI layer tar (plain, gzip or zstd; `-` for stdin); prints the bytes applied.
    Apply {
        id: String,
        #[arg(long)]
        parent: Option<String>,
        file: String,
    },
    /// Mount the merged view of a layer; prints its path.
    Mount { id: String },
    /// Release one user of a layer's mount.
    Unmount { id: String },
    /// Write the uncompressed OCI layer tar of a layer against its parent.
    Diff {
        id: String,
        #[arg(short = 'o', long = "output")]
        output: Option<PathBuf>,
    },
    /// List what changed in a layer against its parent.
    Changes { id: String },
    /// Remove a layer (refused while mounted or while it has children).
    Rm { id: String },
    /// Which layer provides PATH in ID's view (for a container: whether it was copied
    /// up), and which layers below hold older versions or a deletion of it.
    Which {
        id: String,
        path: String,
        /// The versioned schema of docs/json.md.
        #[arg(long)]
        json: bool,
    },
    /// What the driver physically stored for PATH in layer ID: the node on disk (a
    /// whiteout, an opaque directory, a copy, or nothing), its type and size.
    Explain {
        id: String,
        path: String,
        /// The versioned schema of docs/json.md.
        #[arg(long)]
        json: bool,
    },
    /// List layers, with the images and containers that use each.
    Ls {
        /// The versioned schema of docs/json.md.
        #[arg(long)]
        json: bool,
        /// Full layer IDs.
        #[arg(long)]
        no_trunc: bool,
    },
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let lvl = if cli.debug {
        2
    } else if cli.quiet {
        0
    } else {
        cli.log_level as u8
    };
    LEVEL.store(lvl, std::sync::atomic::Ordering::Relaxed);
    // The bench's usage errors exit 2, as clap's own do, before anything runs.
    if let Command::Bench(args) = &mut cli.command {
        let driver_given = matches.value_source("driver") == Some(ValueSource::CommandLine);
        if let Err(msg) = args.check_usage(driver_given) {
            eprintln!("error: {msg}");
            return ExitCode::from(2);
        }
    }
    if matches!(cli.command, Command::Image(ImageCmd::Pull { .. } | ImageCmd::Unpack { .. })) {
        // Ctrl-C stops a pull or an unpack where it can undo what it made (as early as
        // can be).
        driver_core::interrupt::install();
    }
    quiet_when_stdout_closes();
    let bench = matches!(cli.command, Command::Bench(_));
    let outcome = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(cli))) {
        Ok(outcome) => outcome,
        // As a shell reports a command ended by SIGPIPE (128 + 13); the unwind has already
        // released what the command held (mounts, staging, the store lock).
        Err(payload) if is_closed_stdout(payload.as_ref()) => return ExitCode::from(141),
        Err(payload) => std::panic::resume_unwind(payload),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", printable(&e.to_string()));
            // As a shell reports a command stopped by Ctrl-C, after it rolled back.
            if driver_core::interrupt::requested() {
                ExitCode::from(130)
            } else if bench {
                // 1 regression, 2 usage or inputs, 3 could not measure (docs/ci.md).
                ExitCode::from(gate::exit_code())
            } else {
                // By what failed (docs/cli.md).
                ExitCode::from(exit::code(&e))
            }
        }
    }
}

/// `strata image ls | head -1`: the reader goes away, and Rust, which ignores SIGPIPE,
/// makes `println!` panic on EPIPE. That panic is the way out (it unwinds through the
/// guards that unmount and discard staging, where a default SIGPIPE would kill the process
/// with mounts held), but its message and backtrace are noise: the hook says nothing for
/// it and `main` exits as a pipe-killed command would.
fn quiet_when_stdout_closes() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !is_closed_stdout(info.payload()) {
            report(info)
        }
    }));
}

/// Whether a panic is std's "failed printing to stdout" for a closed pipe (EPIPE).
fn is_closed_stdout(payload: &(dyn std::any::Any + Send)) -> bool {
    let msg = match (payload.downcast_ref::<String>(), payload.downcast_ref::<&str>()) {
        (Some(s), _) => s.as_str(),
        (None, Some(s)) => s,
        (None, None) => return false,
    };
    let epipe = std::io::Error::from_raw_os_error(libc::EPIPE).to_string();
    msg.starts_with("failed printing to stdout") && msg.ends_with(&epipe)
}

/// The error line with control characters escaped: a message can quote bytes from a
/// hostile file or server (a name, a registry's answer), and those must not reach the
/// terminal as escape sequences or break the one-line contract.
fn printable(msg: &str) -> String {
    msg.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}

fn run(cli: Cli) -> Result<(), Error> {
    match cli.command {
        Command::Layer(cmd) => {
            let (driver, dir) = drivers::open_with_dir(cli.driver.name(), &cli.root)?;
            // Finish what a killed unpack left (see ImageStore::collect).
            debug!("driver {} in {}", driver.name(), dir.display());
            let images = ImageStore::open(&dir)?;
            let collected = images.collect(driver.as_ref())?;
            debug!("removed {} layer(s) left by killed unpacks: {:?}", collected.len(), collected);
            layer(driver.as_ref(), &images, cmd)
        }
        Command::Image(cmd) => {
            let (driver, dir) = drivers::open_with_dir(cli.driver.name(), &cli.root)?;
            let mode = match &cmd {
                ImageCmd::Pull { sync, .. } | ImageCmd::Unpack { sync, .. } => *sync,
                _ => Durability::Chain,
            };
            driver.set_durability(mode);
            image(driver.as_ref(), &dir, mode, cmd)
        }
        Command::Probe { json } => {
            let p = probe::probe(&cli.root);
            if json {
                println!("{}", serde_json::to_string_pretty(&p).expect("json"));
            } else {
                probe::print(&p);
            }
            Ok(())
        }
        Command::Bench(mut args) => {
            args.root = cli.root;
            bench::run(&args)
        }
        Command::Df { json } => {
            let (driver, dir) = drivers::open_with_dir(cli.driver.name(), &cli.root)?;
            let images = ImageStore::open(&dir)?;
            let d = strata_image::df::df(driver.as_ref(), &images)?;
            if json {
                let mut v = serde_json::to_value(&d).expect("json");
                v["version"] = 1.into();
                println!("{}", serde_json::to_string_pretty(&v).expect("json"));
            } else {
                println!(
                    "{:<10} {:<32} {:>6} {:>10} {:>10} {:>10} {:>9} {:>9} {:>9}",
                    "TYPE", "NAME", "LAYERS", "TOTAL", "SHARED", "UNIQUE", "INODES", "SHARED", "UNIQUE"
                );
                let rows = d.images.iter().map(|u| ("image", u)).chain(d.containers.iter().map(|u| ("container", u)));
                for (kind, u) in rows {
                    println!(
                        "{kind:<10} {:<32} {:>6} {:>10} {:>10} {:>10} {:>9} {:>9} {:>9}",
                        u.name,
                        u.layers,
                        human_bytes(u.total.bytes),
                        human_bytes(u.shared.bytes),
                        human_bytes(u.unique.bytes),
                        u.total.inodes,
                        u.shared.inodes,
                        u.unique.inodes
                    );
                }
                println!(
                    "store: layers {} ({} inodes), blobs {} ({}), total {}",
                    human_bytes(d.layers.bytes),
                    d.layers.inodes,
                    human_bytes(d.blobs.bytes),
                    d.blobs.inodes,
                    human_bytes(d.total.bytes)
                );
            }
            Ok(())
        }
        Command::Check { repair, json } => {
            // What killed processes left in staging, seen before the open discards it.
            let left = drivers::dir_of(cli.driver.name(), &cli.root).map(|d| check::leftovers(&d)).unwrap_or_default();
            let (driver, dir) = drivers::open_with_dir(cli.driver.name(), &cli.root)?;
            let images = ImageStore::open(&dir)?;
            let mut found = check::check(driver.as_ref(), &images)?;
            found.problems.splice(0..0, left);
            let (repairs, after) = if repair {
                let done = check::repair(driver.as_ref(), &images, &found)?;
                (done, Some(check::check(driver.as_ref(), &images)?))
            } else {
                (Vec::new(), None)
            };
            let healthy = after.as_ref().unwrap_or(&found).healthy();
            if json {
                let out = serde_json::json!({
                    "version": 1,
                    "driver": driver.name(),
                    "healthy": healthy,
                    "checked": {"layers": found.layers, "images": found.images, "blobs": found.blobs},
                    "problems": found.problems,
                    "repairs": repairs,
                    "remaining": after.as_ref().map(|a| &a.problems),
                });
                println!("{}", serde_json::to_string_pretty(&out).expect("json"));
            } else {
                for p in &found.problems {
                    println!("{p}");
                }
                for r in &repairs {
                    println!("repaired {}: {}", r.subject, r.action);
                }
                if let Some(a) = &after {
                    for p in &a.problems {
                        println!("still: {p}");
                    }
                }
            }
            info!(
                "checked {} layers, {} images, {} blobs: {} problem(s){}",
                found.layers,
                found.images,
                found.blobs,
                found.problems.len(),
                after.as_ref().map(|a| format!(", {} left after repair", a.problems.len())).unwrap_or_default()
            );
            if healthy {
                Ok(())
            } else {
                let n = after.as_ref().unwrap_or(&found).problems.len();
                Err(Error::new(driver_core::Cause::Other(format!(
                    "the {} store has {n} problem(s){}",
                    driver.name(),
                    if repair { " that repair could not heal" } else { " (strata check --repair heals what it can)" }
                ))))
            }
        }
        Command::Container(cmd) => {
            let (driver, dir) = drivers::open_with_dir(cli.driver.name(), &cli.root)?;
            let mode = match &cmd {
                ContainerCmd::Commit { sync, .. } => *sync,
                _ => Durability::Chain,
            };
            driver.set_durability(mode);
            let images = ImageStore::open(&dir)?.with_durability(mode);
            images.collect(driver.as_ref())?;
            container(driver.as_ref(), &images, cmd)
        }
    }
}

fn container(driver: &dyn Driver, images: &ImageStore, cmd: ContainerCmd) -> Result<(), Error> {
    match cmd {
        ContainerCmd::Create { name, image } => {
            let rec = images.get(&image)?;
            driver.create(&name, rec.top(), true)?;
            println!("{name}");
        }
        ContainerCmd::Ls { json } => {
            let list = lifecycle::containers(driver, images)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list).expect("json"));
            } else {
                println!("{:<24} {:<24} {:>10} MOUNTED", "NAME", "IMAGE", "SIZE");
                for c in list {
                    let image = if c.images.is_empty() {
                        c.parent.as_deref().map(|p| format!("(layer {})", output::short_id(p))).unwrap_or("-".into())
                    } else {
                        c.images.join(",")
                    };
                    let mounted = if c.mounted { "yes" } else { "no" };
                    println!("{:<24} {:<24} {:>10} {mounted}", c.name, image, human_bytes(c.size));
                }
            }
        }
        ContainerCmd::Rm { name } => {
            lifecycle::remove_container(driver, &name)?;
            info!("removed container {name}");
        }
        ContainerCmd::Commit { name, image, message, compression, .. } => {
            commit::commit(driver, images, &name, &image, message, compression.into())?
        }
        ContainerCmd::Run { name, record, record_data, user, command } => {
            let code = runcmd::run_container(driver, images, &name, record.as_deref(), record_data, user, command)?;
            // The command's status is strata's; the view is unmounted already.
            std::process::exit(code);
        }
        ContainerCmd::Replay { name, trace, json } => runcmd::replay_container(driver, &name, &trace, json)?,
    }
    Ok(())
}

fn image(driver: &dyn Driver, dir: &Path, mode: Durability, cmd: ImageCmd) -> Result<(), Error> {
    debug!("driver {} in {}", driver.name(), dir.display());
    let images = ImageStore::open(dir)?.with_durability(mode);
    let collected = images.collect(driver)?;
    debug!("removed {} layer(s) left by killed unpacks: {:?}", collected.len(), collected);
    match cmd {
        ImageCmd::Pull { reference, insecure, auth, timeout, low_speed_limit, low_speed_time, .. } => {
            let limits = registry::Limits {
                timeout: std::time::Duration::from_secs(timeout),
                low_speed_limit,
                low_speed_time: std::time::Duration::from_secs(low_speed_time),
            };
            pull(driver, dir, &images, &reference, insecure, auth, limits)
        }
        ImageCmd::Unpack { src, name, platform, insecure, auth, .. } if src.starts_with("docker://") => {
            if name.is_some() || platform.is_some() {
                return Err(Error::new(driver_core::Cause::Other(format!(
                    "{src}: --name and --platform are for local images; a registry image is recorded under its \
                     reference, for this host's platform"
                ))));
            }
            let limits = registry::Limits {
                timeout: std::time::Duration::from_secs(3600),
                low_speed_limit: 1024,
                low_speed_time: std::time::Duration::from_secs(30),
            };
            pull(driver, dir, &images, &src, insecure, auth, limits)
        }
        ImageCmd::Unpack { src, name, platform, .. } => {
            // A bad --name is refused before the source is read.
            if let Some(n) = &name {
                strata_image::image::validate_name(n)?;
            }
            let (source, img) = strata_image::image::open_source(&src, platform.as_deref())?;
            let name = name.unwrap_or_else(|| img.name.clone());
            // Every stream stops at Ctrl-C; the failed unpack then removes what it made.
            let source = strata_image::image::CheckedSource(source);
            unpack_and_report(driver, &images, &source, &img, &name).map_err(|e| {
                if driver_core::interrupt::requested() {
                    driver_core::interrupt::error()
                } else {
                    e
                }
            })
        }
        ImageCmd::Push { name, reference, insecure, auth, chunk_size, timeout } => {
            let opts = registry::PushOptions { insecure, chunk_size, timeout: std::time::Duration::from_secs(timeout) };
            let report = |digest: &str, size: u64, what: &registry::BlobPush| {
                let short = output::short_id(digest);
                match what {
                    registry::BlobPush::Exists => info!("blob {short}: already there"),
                    registry::BlobPush::Mounted(from) => info!("blob {short}: mounted from {from}"),
                    registry::BlobPush::Uploaded { requests, .. } => {
                        info!("blob {short}: uploaded {} in {requests} request(s)", human_bytes(size))
                    }
                }
            };
            let pushed = registry::push(&images, &name, &reference, &auth.options(), &opts, &report)?;
            println!("{}", pushed.digest);
            Ok(())
        }
        ImageCmd::Ls { json, no_trunc } => lifecycle::list_images(driver, &images, json, no_trunc),
        ImageCmd::Rm { name } => {
            let removed = images.remove(driver, &name)?;
            info!("removed image {name} and {} layer(s) no one else uses", removed.len());
            Ok(())
        }
        ImageCmd::Prune { dry_run } => {
            let p = lifecycle::prune(driver, &images, dir, dry_run)?;
            let verb = if dry_run { "would remove" } else { "removed" };
            for (id, size) in &p.layers {
                println!("{verb} layer {id} ({})", human_bytes(*size));
            }
            for (d, size) in &p.blobs {
                println!("{verb} blob {d} ({})", human_bytes(*size));
            }
            for s in &p.skipped {
                info!("kept (in use meanwhile): {s}");
            }
            let total: u64 = p.layers.iter().chain(&p.blobs).map(|(_, s)| s).sum();
            info!("{verb} {} layer(s) and {} blob(s), {}", p.layers.len(), p.blobs.len(), human_bytes(total));
            Ok(())
        }
        ImageCmd::Save { name, output, format } => commit::save(&images, &name, &output, format.map(SaveFormat::from)),
        ImageCmd::History { name, json } => commit::history(&images, &name, json),
        ImageCmd::Inspect { name, efficiency, json, max_wasted_bytes, min_efficiency } => {
            commit::inspect(&images, &name, efficiency, json, max_wasted_bytes, min_efficiency)
        }
    }
}

/// `image pull REF` (and `image unpack docker://REF`): download, unpack, keep the blobs.
fn pull(
    driver: &dyn Driver,
    dir: &Path,
    images: &ImageStore,
    reference: &str,
    insecure: bool,
    auth: AuthArgs,
    limits: registry::Limits,
) -> Result<(), Error> {
    let cache = lifecycle::cache_dir(dir);
    // Until its blobs are kept, no prune removes one it reuses from the cache.
    let _cache_lock = lifecycle::CacheLock::shared(&cache)?;
    let start = std::time::Instant::now();
    let pulled = registry::pull(reference, insecure, &auth.options(), limits, &cache, driver)?;
    let (blobs, bytes) = pulled.downloaded;
    info!("downloaded {blobs} layer blob(s), {} in {:.2}s", human_bytes(bytes), start.elapsed().as_secs_f64());
    // A failed or interrupted unpack removes the layers it made.
    if let Err(e) = unpack_and_report(driver, images, &pulled.source, &pulled.image, &pulled.name) {
        return Err(if driver_core::interrupt::requested() { driver_core::interrupt::error() } else { e });
    }
    // Where its blobs are, for a later push's cross-repository mounts (a hint).
    if let (Ok(r), Ok(rec)) = (registry::Reference::parse(reference), images.get(&pulled.name)) {
        if let Ok(img) = images.content.load(&rec.name, rec.manifest.as_deref()) {
            let _ = images.content.note_locations(&r.registry, &r.repository, &img.blobs()[1..]);
        }
    }
    pulled.keep()
}

fn unpack_and_report(
    driver: &dyn Driver,
    images: &ImageStore,
    source: &dyn strata_image::image::BlobSource,
    img: &strata_image::image::Image,
    name: &str,
) -> Result<(), Error> {
    let line = |ev: &strata_image::images::LayerEvent| {
        let short = output::short_id(&ev.chain_id);
        match ev.applied {
            Some(n) => format!(
                "layer {}/{} {short}: applied {} (done at {:.2}s)",
                ev.index + 1,
                ev.count,
                human_bytes(n),
                ev.elapsed.as_secs_f64()
            ),
            None => format!("layer {}/{} {short}: already exists", ev.index + 1, ev.count),
        }
    };
    let top = if io::stdout().is_terminal() && level() >= 1 {
        // A bar per layer, moved by the bytes read from its blob.
        let bars = indicatif::MultiProgress::new();
        let style = indicatif::ProgressStyle::with_template("{msg:40} [{bar:30}] {bytes:>10}/{total_bytes:<10}")
            .expect("template")
            .progress_chars("=> ");
        let progress = progress::ProgressSource::new(source, img, &bars, style);
        strata_image::images::unpack(driver, images, &progress, img, name, &|ev| progress.finish(ev.index, line(ev)))?
    } else {
        strata_image::images::unpack(driver, images, source, img, name, &|ev| info!("{}", line(ev)))?
    };
    println!("{}", top.unwrap_or_default());
    Ok(())
}

fn layer(driver: &dyn Driver, images: &ImageStore, cmd: LayerCmd) -> Result<(), Error> {
    match cmd {
        LayerCmd::Create { id, parent } => driver.create(&id, parent.as_deref(), true),
        LayerCmd::Apply { id, parent, file } => {
            let size = if file == "-" {
                driver.apply_diff(&id, parent.as_deref(), &mut io::stdin().lock())?
            } else {
                let mut f = File::open(&file).map_err(|e| Error::new(e).with_path(&file).in_layer(&id))?;
                driver.apply_diff(&id, parent.as_deref(), &mut f as &mut dyn Read)?
            };
            println!("{size}");
            Ok(())
        }
        LayerCmd::Mount { id } => {
            println!("{}", driver.mount(&id)?.display());
            Ok(())
        }
        LayerCmd::Unmount { id } => driver.unmount(&id),
        LayerCmd::Diff { id, output } => match output {
            Some(path) => driver_core::json::write_atomic_with(&path, |out| driver.diff(&id, out).map(|_| ())),
            None => {
                let stdout = io::stdout();
                if stdout.is_terminal() {
                    return Err(Error::new(driver_core::Cause::Other(
                        "refusing to write a tar to a terminal; use -o FILE or redirect stdout".into(),
                    )));
                }
                let mut lock = io::BufWriter::with_capacity(1 << 20, stdout.lock());
                driver.diff(&id, &mut lock)?;
                lock.flush().map_err(Error::new)?;
                Ok(())
            }
        },
        LayerCmd::Changes { id } => {
            for c in driver.changes(&id)? {
                let k = match c.kind {
                    driver_core::ChangeKind::Added => 'A',
                    driver_core::ChangeKind::Modified => 'C',
                    driver_core::ChangeKind::Deleted => 'D',
                };
                println!("{k} /{}", c.path.display());
            }
            Ok(())
        }
        LayerCmd::Rm { id } => driver.remove(&id),
        LayerCmd::Which { id, path, json } => {
            let w = explain::which(driver, &id, &path)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&w).expect("json"));
            } else {
                explain::print_which(&w);
            }
            Ok(())
        }
        LayerCmd::Explain { id, path, json } => {
            let e = explain::explain(driver, &id, &path)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&e).expect("json"));
            } else {
                explain::print_explain(&e);
            }
            Ok(())
        }
        LayerCmd::Ls { json, no_trunc } => lifecycle::list_layers(driver, images, json, no_trunc),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-written names and conversions agree with what clap accepts, so an
    /// argument means what its spelling says everywhere it is printed.
    #[test]
    fn value_enums_spell_what_they_mean() {
        let name = |v: clap::builder::PossibleValue| v.get_name().to_string();
        for d in DriverArg::value_variants() {
            assert_eq!(name(d.to_possible_value().unwrap()), d.name());
        }
        for f in SaveFormatArg::value_variants() {
            assert_eq!(name(f.to_possible_value().unwrap()), SaveFormat::from(*f).name());
        }
        let levels: Vec<(String, u8)> =
            LogLevel::value_variants().iter().map(|l| (name(l.to_possible_value().unwrap()), *l as u8)).collect();
        assert_eq!(levels, [("error".to_string(), 0), ("info".to_string(), 1), ("debug".to_string(), 2)]);
    }
}
