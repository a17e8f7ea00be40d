//! overlay runs the shared conformance suite unchanged a second time with metacopy on
//! as well as redirect_dir, forced (`STRATA_OVERLAY_COPY_UP=metacopy`; by default a
//! container takes it only over layers whose paths fit redirect_max, so not in the
//! deep cases): chmod'd lower files are metacopy stubs, and the diff must still be the
//! naive walk's.

use driver_overlay::features::CopyUp;
use strata_testkit::conformance::Backing;

strata_testkit::conformance_tests!("overlay-metacopy", Backing::TempDir, |root| Ok(Box::new(
    driver_overlay::open_copying_up(root, CopyUp::Metacopy)?
)));
