//! overlay runs the shared conformance suite unchanged, one test per case.

use driver_overlay::OverlayDriver;
use strata_testkit::conformance::Backing;

strata_testkit::conformance_tests!("overlay", Backing::TempDir, |root| Ok(Box::new(OverlayDriver::new(root)?)));
