//! The command line as clap reads it (ripgrep's low-level arguments): the subcommands,
//! their flags and the value enums, with no meaning attached yet; [`crate::plan`]
//! resolves them into what runs.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use driver_core::Durability;
use strata_image::commit::LayerCompression;
use strata_image::registry;
use strata_image::save::SaveFormat;

#[derive(Parser)]
#[command(name = "strata", version, about = "Container-image storage drivers (overlay, vfs, btrfs), side by side")]
pub struct Cli {
    /// Where the driver keeps its data (in a subfolder named after it). A root keeps the
    /// driver it was first used with: `auto` uses that one, another --driver is refused.
    #[arg(long, global = true, default_value = "/var/lib/strata")]
    pub root: PathBuf,
    /// Which driver: overlay, vfs, btrfs, or auto (overlay, else btrfs on btrfs, else vfs).
    #[arg(long, global = true, value_enum, default_value_t = DriverArg::Auto)]
    pub driver: DriverArg,
    /// No progress or notes on stderr: only results (stdout) and errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// How much to say on stderr: error, info (progress and notes), debug (also what
    /// happens underneath: the driver's folder, leftovers collected, layers reused).
    #[arg(long, global = true, value_enum, default_value_t = LogLevel::Info)]
    pub log_level: LogLevel,
    /// Same as --log-level debug.
    #[arg(long, global = true)]
    pub debug: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// `--driver`, as the drivers are registered by name (`drivers::open`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DriverArg {
    Overlay,
    Vfs,
    Btrfs,
    Auto,
}

impl DriverArg {
    pub fn name(self) -> &'static str {
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
pub enum LogLevel {
    Error,
    Info,
    Debug,
}

/// `image save --format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SaveFormatArg {
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
pub enum CompressionArg {
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

#[derive(Subcommand)]
pub enum Command {
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
    Bench(Box<crate::bench::BenchArgs>),
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
pub enum ImageCmd {
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
pub struct AuthArgs {
    /// USER:PASS, or USER to be asked for the password.
    #[arg(long, value_name = "USER[:PASS]")]
    pub creds: Option<String>,
    /// An auth.json as `skopeo login` and `podman login` write it
    /// (default: $REGISTRY_AUTH_FILE, else $XDG_RUNTIME_DIR/containers/auth.json).
    #[arg(long, value_name = "FILE")]
    pub authfile: Option<PathBuf>,
}

impl AuthArgs {
    pub fn options(self) -> registry::AuthOptions {
        registry::AuthOptions { creds: self.creds, authfile: self.authfile }
    }
}

#[derive(Subcommand)]
pub enum ContainerCmd {
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
pub enum LayerCmd {
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
