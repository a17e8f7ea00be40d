//! driver-btrfs
