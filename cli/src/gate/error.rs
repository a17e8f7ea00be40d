//! Why `strata bench` failed, as the exit code its caller maps it to (docs/ci.md).

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
    Inputs(Failure),
    /// The bench could not measure (exit 3): nothing ran, or a target that ran in the
    /// baseline did not run now, or a phase failed.
    #[error(transparent)]
    Unmeasured(Failure),
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

    /// The failure under this one (none for a regression).
    pub fn failure(&self) -> Option<&Failure> {
        match self {
            BenchError::Inputs(f) | BenchError::Unmeasured(f) => Some(f),
            BenchError::Regressed(_) => None,
        }
    }

    /// The OS error under this one (ENOSPC, EACCES, ...), if any.
    pub fn raw_os_error(&self) -> Option<i32> {
        self.failure().and_then(Failure::raw_os_error)
    }
}

/// What fails inside a measurement fails the bench as "could not measure".
impl From<Failure> for BenchError {
    fn from(f: Failure) -> Self {
        BenchError::Unmeasured(f)
    }
}

/// ... a driver's error too (a layer operation, an io error at a path).
impl From<driver_core::Error> for BenchError {
    fn from(e: driver_core::Error) -> Self {
        BenchError::Unmeasured(e.into())
    }
}
