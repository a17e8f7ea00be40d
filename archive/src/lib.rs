//! The tar engine of strata: applying an OCI layer tar to a directory confined to it
//! ([`apply`], with the whiteout format a driver plugs in: [`whiteout`]), the naive diff walk and the
//! tar writer ([`diff`]), gzip/zstd detection ([`compress`]) and a builder of layer tars
//! ([`tarbuild`], which the bench's workload generator and the tests use).
//!
//! Depends on the contract (`driver-core`) only; every driver depends on this crate.

pub mod apply;
pub mod compress;
pub mod diff;
#[cfg(feature = "isal")]
mod igzip;
mod reading;
pub mod tarbuild;
pub mod whiteout;

pub use apply::{ApplyOptions, ApplyReport};
pub use whiteout::{DeleteInPlace, WhiteoutFormat};
