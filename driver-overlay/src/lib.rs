//! driver-overlay
