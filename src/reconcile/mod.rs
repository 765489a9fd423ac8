//! The reconcile core: per kind, the rules both drivers apply (the operator in a cluster,
//! local mode on a state directory), so that the same YAML behaves the same in both. Pure:
//! nothing here calls an API server, touches the media or reads the clock.

pub mod backup;
pub mod policy;
pub mod restore;
pub mod schedule;
pub mod trail;
