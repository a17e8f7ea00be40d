//! vfs runs the shared conformance suite unchanged.

use driver_core::conformance;
use driver_vfs::VfsDriver;

#[test]
fn vfs_passes_the_conformance_suite() {
    // Devices, owners and capabilities need root.
    if !nix::unistd::geteuid().is_root() {
        assert!(
            std::env::var("STRATA_REQUIRE_PRIVILEGED").as_deref() != Ok("1"),
            "the vfs conformance suite needs root"
        );
        eprintln!("skipped: the vfs conformance suite needs root");
        return;
    }
    let base = tempfile::tempdir().unwrap();
    conformance::run("vfs", base.path(), &|root| Ok(Box::new(VfsDriver::new(root)?)));
}
