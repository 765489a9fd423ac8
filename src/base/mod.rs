//! Helpers beneath every layer: the retry loop with backoff, the stable name hash, and the
//! failures every layer can meet.

pub mod backoff;
pub mod failure;
pub mod hash;
