//! What the running task is moving, for a progress display: bytes of logical stream written
//! or read, and the work item most recently started. Process-wide on purpose: a process runs
//! one task at a time (a worker pod; local mode's executor, task after task), and the data
//! path only adds to a relaxed atomic, which costs nothing measurable per chunk.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

static BYTES: AtomicU64 = AtomicU64::new(0);
static ITEM: Mutex<String> = Mutex::new(String::new());

/// Starts counting for a new task.
pub fn reset() {
    BYTES.store(0, Ordering::Relaxed);
    set_item("");
}

/// Counts `n` bytes moved.
pub fn add(n: usize) {
    BYTES.fetch_add(n as u64, Ordering::Relaxed);
}

/// Names the work item (or volume) being moved now.
pub fn set_item(item: &str) {
    let mut current = ITEM.lock().unwrap_or_else(|e| e.into_inner());
    current.clear();
    current.push_str(item);
}

/// Bytes moved so far and the current work item.
pub fn snapshot() -> (u64, String) {
    let item = ITEM.lock().unwrap_or_else(|e| e.into_inner()).clone();
    (BYTES.load(Ordering::Relaxed), item)
}
