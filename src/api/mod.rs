//! The public API: custom resources of group `mimeo.dev/v1alpha1`, and the one validation layer
//! that every caller (local mode, operator, admission tests) shares.

// kube-derive takes one `printcolumn(...)` attribute per column.
#![allow(clippy::duplicated_attributes)]

mod catalog;
mod common;
pub mod error;
mod media_class;
mod policy;
mod resource;
mod restore;
mod trails;
pub mod validate;

pub use catalog::*;
pub use common::*;
pub use error::SpecError;
pub use media_class::*;
pub use policy::*;
pub use resource::*;
pub use restore::*;
pub use trails::*;

/// API group of every Mimeo kind.
pub const GROUP: &str = "mimeo.dev";
/// API version of every Mimeo kind.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` value of every Mimeo kind.
pub const API_VERSION: &str = "mimeo.dev/v1alpha1";
/// Annotation that asks for a run now; its value is a token (e.g. a timestamp), and each new
/// token triggers one run.
pub const RUN_NOW_ANNOTATION: &str = "mimeo.dev/run-now";
/// Annotation on a trail that asks for its catalog entries to be rebuilt from the manifests
/// on its media (after the catalog was lost); each new token triggers one rescan.
pub const RESCAN_ANNOTATION: &str = "mimeo.dev/rescan";
/// Annotation on a trail that lets one expiry sweep through the mass-expiry breaker (see
/// `maxExpiryPercent`); each new token lets one halted sweep proceed.
pub const ALLOW_MASS_EXPIRY_ANNOTATION: &str = "mimeo.dev/allow-mass-expiry";
