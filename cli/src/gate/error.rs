//! Why `strata bench` failed, as the exit code its caller maps it to (docs/ci.md).

use driver_core::Error;

#[cfg(test)]
use crate::failure::Failure;

/// A failed bench, by kind: the command exits 1, 2 or 3 for it ([`BenchError::exit_code`]).
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Figures regressed against the baseline (exit 1): each one's line.
    #[error("{} figure(s) regressed: {}", .0.len(), .0.join("; "))]
    Regressed(Vec<String>),
    /// The inputs cannot be used (exit 2): a baseline of another host or workload, a
    /// file that is not a bench run, an `--image` that cannot be read or pulled.
    #[error(transparent)]
    Inputs(Error),
    /// The bench could not measure (exit 3): nothing ran, or a target that ran in the
    /// baseline did not run now, or a phase failed.
    #[error(transparent)]
    Unmeasured(Error),
}

impl BenchError {
    /// 1 a regression, 2 usage or inputs, 3 could not measure.
    pub fn exit_code(&self) -> u8 {
        match self {
            BenchError::Regressed(_) => 1,
            BenchError::Inputs(_) => 2,
            BenchError::Unmeasured(_) => 3,
        }
    }

    /// The bench's own failure under this one, if it is one (not a driver's, say).
    #[cfg(test)]
    pub fn failure(&self) -> Option<&Failure> {
        match self {
            BenchError::Inputs(e) | BenchError::Unmeasured(e) => Failure::of(e),
            BenchError::Regressed(_) => None,
        }
    }
}

/// What fails inside a measurement fails the bench as "could not measure".
impl From<Error> for BenchError {
    fn from(e: Error) -> Self {
        BenchError::Unmeasured(e)
    }
}
