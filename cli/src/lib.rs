//! The library half of the `strata` command: what the bench shares with the tests.
//! The command itself is `src/main.rs`.

pub mod drivers;
pub mod workload;
