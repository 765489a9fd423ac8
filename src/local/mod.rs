//! The embedded default: the same resources as in a cluster, reconciled from YAML files, with
//! the catalog in a local state directory and tasks run by the executor in-process.

pub mod apply;
pub mod delete;
pub mod describe;
pub mod get;
mod progress;
pub mod state;

pub use apply::{ApplyReport, Input, Local, read_inputs};
