//! Mimeo: logical duplication of backup data.
//!
//! Data flows one way: resources → reconcile (the rules of each kind, shared by both drivers)
//! → planner → task → executor → engine → media → catalog.

pub mod api;
pub mod base;
pub mod beneath;
pub mod demo;
pub mod engine;
pub mod error;
pub mod local;
pub mod media;
pub mod operator;
pub mod reconcile;
pub mod worker;

pub use error::{Error, Result};
