//! vfs runs the shared conformance suite unchanged, one test per case.

use driver_core::conformance::Backing;
use driver_vfs::VfsDriver;

driver_core::conformance_tests!("vfs", Backing::TempDir, |root| Ok(Box::new(VfsDriver::new(root)?)));
