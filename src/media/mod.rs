//! Media: the volume format, trails of volumes, and the object stores they live on.

pub mod crypt;
pub mod digest;
pub mod error;
pub mod factory;
pub mod format;
pub mod fs;
pub mod manifest;
pub mod retry;
pub mod s3;
pub mod store;
pub mod trail;
