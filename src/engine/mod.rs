//! The engine: backup, duplication, restore, expiry and verify. No Kubernetes in here.

pub mod archive;
