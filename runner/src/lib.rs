//! strata-run: a command run in a container's view, what it did to the filesystem
//! recorded, and that record replayed on any driver's view.
//!
//! - [`container`]: `strata container run`: a private mount and network namespace
//!   whose root is the view (pivot_root), a fresh /proc and a minimal /dev, the
//!   image's environment. Not a security boundary: no cgroups, seccomp policy or
//!   capability dropping; it is a way to make real filesystem work, not a runtime.
//! - [`record`]: the recorder, a ptrace tracer of the command and all its children
//!   (static binaries too), writing a [`trace::Trace`] as the calls succeed.
//! - [`trace`]: the trace format (docs/trace.md): versioned JSON Lines.
//! - [`replay`]: performs a trace in a view, as fast as it goes, and says what each
//!   class of operations and each copy-up cost.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let trace = strata_run::trace::Trace::read(std::path::Path::new("pip.trace"))?;
//! let stats = strata_run::replay::replay(std::path::Path::new("/mnt/view"), &trace)?;
//! println!("{} ops in {:?}, {} copy-ups", stats.ops, stats.elapsed(), stats.copy_ups.len());
//! # Ok(()) }
//! ```

pub mod container;
pub mod record;
pub mod replay;
pub mod trace;
