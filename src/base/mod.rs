//! Helpers beneath every layer: the retry loop with backoff, and the stable name hash.

pub mod backoff;
pub mod hash;
