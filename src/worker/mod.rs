//! The executor: runs one task. A worker pod deserialises a task and calls [`execute`]; the
//! local mode calls the very same function in-process.

pub mod sink;

use crate::engine::error::EngineError;
use crate::engine::task::{Task, TaskOutcome};
use crate::engine::{backup, catalog, duplicate, expire, restore};
use crate::error::Result;

/// Runs a task to completion. Its error is the engine's, so a driver can tell a damaged copy
/// from the rest without unwrapping its own.
pub async fn execute(task: &Task) -> Result<TaskOutcome, EngineError> {
    match task {
        Task::Backup(t) => backup::run_backup(t).await,
        Task::Copy(t) => duplicate::run_copy(t).await,
        Task::MediaCopy(t) => duplicate::run_media_copy(t).await,
        Task::Restore(t) => restore::run_restore(t).await,
        Task::Verify(t) => restore::run_verify(t).await,
        Task::Scratch(t) => expire::run_scratch(t).await,
        Task::Rescan(t) => catalog::run_rescan(t).await,
    }
}

/// Short description of a task for logs and progress lines.
pub fn describe(task: &Task) -> String {
    match task {
        Task::Backup(t) => format!("backup of {} work items to {}", t.items.len(), t.trail),
        Task::Copy(t) => format!(
            "logical copy of {} instances to {} ({:?})",
            t.items.len(),
            t.trail,
            t.layout
        ),
        Task::MediaCopy(t) => format!("media copy of {} to {}", t.source_trail, t.trail),
        Task::Restore(t) => format!("restore {} ({} links)", t.restore, t.links.len()),
        Task::Verify(t) => format!("verify of {} copies", t.links.len()),
        Task::Scratch(t) => format!("expiry sweep of {}", t.trail),
        Task::Rescan(t) => format!("rescan of {}", t.trail),
    }
}

/// Runs a task in a worker pod: executes it, then records the entries it committed as
/// CatalogEntries in `namespace`. Entries are written only after the manifest that commits
/// them is on the media, so none is Valid for data that is not durable. An entry the cluster
/// knows keeps its state (a retried worker or a rescan never revives an Expired or Missing one).
///
/// A restore that finds a copy damaged marks it Missing (with the error, which names volume,
/// offset and work item) before it fails, so the operator's next plan reads another copy.
pub async fn run_in_pod(task: &Task, namespace: &str) -> Result<TaskOutcome> {
    let outcome = match execute(task).await {
        Ok(o) => o,
        Err(err) => {
            if let Task::Restore(t) = task
                && let (bad, true) = restore::unreadable_links(&t.links, &err)
            {
                let names: Vec<String> = bad.iter().map(|l| l.entry.object_name()).collect();
                let client = kube::Client::try_default().await?;
                sink::mark_missing(&client, namespace, &names, &err.to_string()).await?;
            }
            return Err(err.into());
        }
    };
    if !outcome.entries.is_empty() {
        let client = kube::Client::try_default().await?;
        sink::publish_entries(&client, namespace, &outcome.entries).await?;
    }
    for n in &outcome.notes {
        tracing::warn!("{}: {n}", describe(task));
    }
    if !outcome.failed.is_empty() {
        // The others are committed and recorded; a retry would not do better.
        return Err(EngineError::ItemsFailed(outcome.failed.join("; ")).into());
    }
    Ok(outcome)
}
