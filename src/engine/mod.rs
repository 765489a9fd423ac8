//! The engine: backup, duplication, restore, expiry and verify. No Kubernetes in here.

pub mod archive;
pub mod backup;
pub mod catalog;
pub mod duplicate;
pub mod error;
pub mod expire;
mod mux;
pub mod pipe;
pub mod planner;
pub mod progress;
pub mod records;
pub mod restore;
pub mod task;
