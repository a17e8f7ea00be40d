//! The command line resolved into what runs (ripgrep's high-level arguments): the
//! level of detail on stderr, the root and driver, what is synced, the output format,
//! and the bench's options checked, before anything is opened. A usage error found
//! here exits 2, as clap's own do.

use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::ArgMatches;
use driver_core::Durability;
use strata_image::registry;

use crate::args::{AuthArgs, Cli, Command, ContainerCmd, DriverArg, ImageCmd, LayerCmd};
use crate::bench::BenchArgs;
use crate::error::Usage;

/// What a command is to do, resolved.
pub struct Plan {
    /// How much to say on stderr: 0 errors only, 1 progress and notes, 2 also debug.
    pub level: u8,
    /// `--root`.
    pub root: PathBuf,
    /// `--driver`.
    pub driver: DriverArg,
    /// What is synced before the command exits 0: its `--sync`, else chain.
    pub durability: Durability,
    pub mode: Mode,
}

/// Text for people, or the versioned JSON of docs/json.md.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

impl Format {
    fn json(json: bool) -> Format {
        if json {
            Format::Json
        } else {
            Format::Text
        }
    }
}

/// One mode of the command; `main` runs each with its own function.
pub enum Mode {
    Layer(LayerCmd),
    /// `image pull REF`, and `image unpack docker://REF`.
    Pull(Pull),
    Image(ImageCmd),
    Container(ContainerCmd),
    Probe {
        format: Format,
    },
    /// The bench's options, checked (and its profiles and workloads loaded).
    Bench(Box<BenchArgs>),
    Df {
        format: Format,
    },
    Check {
        repair: bool,
        format: Format,
    },
}

/// A download from a registry, then its unpack.
pub struct Pull {
    pub reference: String,
    pub insecure: bool,
    pub auth: AuthArgs,
    pub limits: registry::Limits,
}

impl Plan {
    /// Whether Ctrl-C is to stop the command where it can undo what it made (a pull or
    /// an unpack), rather than kill it.
    pub fn stops_at_interrupt(&self) -> bool {
        matches!(self.mode, Mode::Pull(_) | Mode::Image(ImageCmd::Unpack { .. }))
    }
}

/// Resolves the parsed command line; `Err` is a usage error.
pub fn resolve(cli: Cli, matches: &ArgMatches) -> Result<Plan, Usage> {
    let level = if cli.debug {
        2
    } else if cli.quiet {
        0
    } else {
        cli.log_level as u8
    };
    let durability = match &cli.command {
        Command::Image(ImageCmd::Pull { sync, .. } | ImageCmd::Unpack { sync, .. }) => *sync,
        Command::Container(ContainerCmd::Commit { sync, .. }) => *sync,
        _ => Durability::Chain,
    };
    let mode = match cli.command {
        Command::Layer(cmd) => Mode::Layer(cmd),
        Command::Image(ImageCmd::Pull {
            reference, insecure, auth, timeout, low_speed_limit, low_speed_time, ..
        }) => {
            let limits = registry::Limits {
                timeout: std::time::Duration::from_secs(timeout),
                low_speed_limit,
                low_speed_time: std::time::Duration::from_secs(low_speed_time),
            };
            Mode::Pull(Pull { reference, insecure, auth, limits })
        }
        // With --name or --platform it stays an unpack, which refuses them.
        Command::Image(ImageCmd::Unpack { src, name: None, platform: None, insecure, auth, .. })
            if src.starts_with("docker://") =>
        {
            // `image pull`'s defaults.
            let limits = registry::Limits {
                timeout: std::time::Duration::from_secs(3600),
                low_speed_limit: 1024,
                low_speed_time: std::time::Duration::from_secs(30),
            };
            Mode::Pull(Pull { reference: src, insecure, auth, limits })
        }
        Command::Image(cmd) => Mode::Image(cmd),
        Command::Container(cmd) => Mode::Container(cmd),
        Command::Probe { json } => Mode::Probe { format: Format::json(json) },
        Command::Bench(mut args) => {
            let driver_given = matches.value_source("driver") == Some(ValueSource::CommandLine);
            args.check_usage(driver_given).map_err(Usage::Options)?;
            args.root = cli.root.clone();
            Mode::Bench(args)
        }
        Command::Df { json } => Mode::Df { format: Format::json(json) },
        Command::Check { repair, json } => Mode::Check { repair, format: Format::json(json) },
    };
    Ok(Plan { level, root: cli.root, driver: cli.driver, durability, mode })
}
