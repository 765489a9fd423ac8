//! Local mode.
