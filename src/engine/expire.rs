//! Expiry on the media: a sealed volume that no Valid entry references any more becomes Scratch
//! (its segments are deleted, its label kept for reuse); leftovers of interrupted writes go too.

use std::time::Instant;

use super::task::{ScratchTask, TaskOutcome};
use crate::engine::error::Result;
use crate::media::trail::{scan_trail, scratch_volume};

/// Frees the sealed volumes of a trail that are not in `task.keep`.
pub async fn run_scratch(task: &ScratchTask) -> Result<TaskOutcome> {
    let started = Instant::now();
    let media = task.media.open().await?;
    let mut outcome = TaskOutcome::default();
    // Writes interrupted (a killed worker) more than an hour ago will never finish.
    let stale = chrono::Utc::now() - chrono::TimeDelta::hours(1);
    // Not every S3 server lists multipart uploads: a failed purge is reported, not fatal.
    match media
        .store
        .purge_incomplete(&format!("{}/", task.trail), stale)
        .await
    {
        Ok(0) => {}
        Ok(n) => outcome
            .notes
            .push(format!("{n} interrupted writes removed")),
        Err(e) => outcome
            .notes
            .push(format!("interrupted writes not purged: {e}")),
    }
    for v in scan_trail(media.store.as_ref(), &task.trail).await? {
        if v.sealed && !task.keep.contains(&v.name) {
            scratch_volume(media.store.as_ref(), &task.trail, &v).await?;
            outcome.notes.push(format!(
                "volume {} freed ({} bytes)",
                v.name,
                v.bytes_used()
            ));
        }
    }
    outcome.seconds = started.elapsed().as_secs_f64();
    Ok(outcome)
}
