//! Mimeo: logical duplication of backup data.
//!
//! Data flows one way: resources → planner → task → executor → engine → media → catalog.

pub mod api;
pub mod beneath;
pub mod demo;
pub mod engine;
pub mod error;
pub mod local;
pub mod media;
pub mod operator;
pub mod worker;

pub use error::{Error, Result};
