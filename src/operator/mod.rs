//! The Kubernetes operator: worker Jobs now; controllers build on them.

pub mod jobs;
