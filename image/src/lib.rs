//! OCI images for strata: layouts and archives, verification, chain IDs ([`image`]),
//! the images a driver holds and unpacking an image into its layers ([`images`]), and
//! the registry client ([`registry`]).
//!
//! Depends on the contract (`driver-core`) and the tar engine (`strata-archive`).

pub mod chain;
pub mod check;
pub mod commit;
pub mod content;
pub mod df;
pub mod digest;
pub mod error;
pub mod image;
pub mod images;
pub mod inspect;
pub mod layout;
pub mod media;
pub mod names;
pub mod platform;
pub mod prune;
pub mod reference;
pub mod registry;
pub mod resolve;
pub mod save;
pub mod source;
pub mod stream;
#[cfg(test)]
mod testdriver;
pub mod verify;

pub use digest::Digest;
pub use error::{Error, Result};
