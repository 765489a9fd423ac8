//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod cli;
pub mod controlplane;
pub mod fault_proxy;
pub mod s3server;
pub mod tree;
