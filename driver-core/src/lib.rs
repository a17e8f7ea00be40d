//! The contract of strata: the [`Driver`] trait that every storage driver implements,
//! layer ids, the error type, the layer metadata store, the syscall boundary and the
//! interrupt flag.
//!
//! The tar engine is `strata-archive`, images are `strata-image`, and the conformance
//! suite every driver runs is `strata-testkit`. Nothing in this crate knows a driver by
//! name.

pub mod digest;
pub mod driver;
pub mod durability;
pub mod error;
pub mod holds;
pub mod interrupt;
pub mod json;
pub mod lifecycle;
pub mod readahead;
pub mod record;
pub mod reserved;
pub mod store;
pub mod sys;
pub mod syscall;
pub mod writeback;

pub use driver::{Change, ChangeKind, Driver, LayerDir, LayerDirKind, LayerInfo, Status, Usage};
pub use durability::Durability;
pub use error::{Cause, Context, Error, Result};
pub use reserved::ReservedXattrs;
