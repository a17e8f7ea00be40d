//! overlay runs the shared conformance suite unchanged, one test per case.

use driver_core::conformance::Backing;
use driver_overlay::OverlayDriver;

driver_core::conformance_tests!("overlay", Backing::TempDir, |root| Ok(Box::new(OverlayDriver::new(root)?)));
