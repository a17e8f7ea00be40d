//! The core of strata: the [`Driver`] trait that every storage driver implements, the
//! error type, the layer metadata store, the tar engine (safe apply with whiteouts,
//! naive diff, gzip/zstd) and the conformance suite that every driver runs unchanged.
//!
//! Nothing in this crate knows a driver by name: drivers plug in a [`WhiteoutMode`]
//! and their own way of making, mounting and diffing a layer.

pub mod apply;
pub mod compress;
pub mod conformance;
pub mod diff;
pub mod driver;
pub mod error;
pub mod hostile;
pub mod hostile_images;
pub mod image;
pub mod images;
pub mod interrupt;
pub mod readahead;
pub mod scratch;
pub mod store;
pub mod sys;
pub mod tarbuild;
pub mod tree;
pub mod workload;

pub use apply::{ApplyOptions, ApplyReport, WhiteoutMode};
pub use driver::{Change, ChangeKind, Driver, LayerInfo, Status, Usage};
pub use error::{Cause, Context, Error, Result};
