//! The test kit of strata: the conformance suite every driver runs ([`conformance`],
//! one named test per case per driver through [`conformance_tests!`]), the hostile tar
//! and image corpora ([`hostile`], [`hostile_images`]) and tree capture and comparison
//! ([`tree`]), and simulated power cuts at the block layer ([`powercut`]).
//!
//! Only ever a `[dev-dependency]`: nothing in production depends on it.

pub mod conformance;
pub mod hostile;
pub mod hostile_images;
pub mod powercut;
pub mod tree;
