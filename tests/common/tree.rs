//! tree helpers (in progress).
