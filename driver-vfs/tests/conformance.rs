//! vfs runs the shared conformance suite unchanged, one test per case.

use driver_vfs::VfsDriver;
use strata_testkit::conformance::Backing;

strata_testkit::conformance_tests!("vfs", Backing::TempDir, |root| Ok(Box::new(
    VfsDriver::new(root)?.reserving(&strata_testkit::hostile::reserved_xattrs())
)));
