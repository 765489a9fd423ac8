//! Mimeo: logical duplication of backup data.
//!
//! Data flows one way: resources → planner → task → executor → engine → media → catalog.

pub mod api;
pub mod engine;
pub mod error;
pub mod local;
pub mod media;

pub use error::{Error, Result};
