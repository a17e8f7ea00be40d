//! overlay runs the shared conformance suite unchanged.

use driver_core::conformance;
use driver_overlay::OverlayDriver;

#[test]
fn overlay_passes_the_conformance_suite() {
    if !driver_core::scratch::privileged("the overlay conformance suite") {
        return;
    }
    let base = tempfile::tempdir().unwrap();
    conformance::run("overlay", base.path(), &|root| Ok(Box::new(OverlayDriver::new(root)?)));
}
