//! driver-vfs
