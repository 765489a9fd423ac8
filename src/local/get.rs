//! `mimeo local get`: resources with their status, as `kubectl get` prints them.

use kube::ResourceExt;
use serde::Serialize;
use serde_json::Value;

use super::state::StateDir;
use crate::api::*;
use crate::error::{Error, Result};

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// A table.
    Table,
    /// YAML documents.
    Yaml,
    /// A JSON list.
    Json,
}

/// Canonical kind for a name, plural or short name (`bt`, `backuptrails`, `BackupTrail`).
pub fn kind_of(s: &str) -> Option<&'static str> {
    let l = s.to_lowercase();
    let table: [(&str, &[&str]); 6] = [
        ("MediaClass", &["mediaclass", "mediaclasses", "mc"]),
        ("BackupTrail", &["backuptrail", "backuptrails", "bt"]),
        (
            "DuplicationTrail",
            &["duplicationtrail", "duplicationtrails", "dt"],
        ),
        (
            "DuplicationPolicy",
            &["duplicationpolicy", "duplicationpolicies", "dp"],
        ),
        ("Restore", &["restore", "restores", "rst"]),
        ("CatalogEntry", &["catalogentry", "catalogentries", "ce"]),
    ];
    table
        .iter()
        .find(|(_, names)| names.contains(&l.as_str()))
        .map(|(k, _)| *k)
}

/// Columns of each kind: header and JSON path (the CRD printer columns).
fn columns(kind: &str) -> &'static [(&'static str, &'static str)] {
    match kind {
        "MediaClass" => &[
            ("CAPACITY", "spec.volumeCapacity"),
            ("BLOCK", "spec.blockSize"),
            ("LOCATION", "spec.location"),
            ("AVAILABLE", "spec.available"),
            ("REACHABLE", "status.reachable"),
            ("VOLUMES", "status.volumes"),
            ("BYTES", "status.bytes"),
        ],
        "BackupTrail" => &[
            ("MEDIA", "spec.mediaClassName"),
            ("RETENTION", "spec.retention"),
            ("INSTANCES", "status.instances"),
            ("VOLUMES", "status.volumes"),
            ("BYTES", "status.bytes"),
            ("LAST BACKUP", "status.lastRun"),
        ],
        "DuplicationTrail" => &[
            ("MEDIA", "spec.mediaClassName"),
            ("RETENTION", "spec.retention"),
            ("LAYOUT", "spec.layout"),
            ("COPIES", "status.instances"),
            ("VOLUMES", "status.volumes"),
            ("BYTES", "status.bytes"),
        ],
        "DuplicationPolicy" => &[
            ("MODE", "spec.mode"),
            ("OUTCOME", "status.lastRun.outcome"),
            ("INSTANCES", "status.lastRun.instances"),
            ("BYTES", "status.lastRun.bytes"),
            ("LAST RUN", "status.lastRun.end"),
        ],
        "Restore" => &[
            ("WORK ITEM", "spec.workItem"),
            ("PHASE", "status.phase"),
            ("FROM", "status.restoredFrom.trail"),
            ("ROLE", "status.restoredFrom.role"),
            ("BYTES", "status.bytes"),
            ("REASON", "status.reason"),
        ],
        _ => &[
            ("WORK ITEM", "spec.workItem"),
            ("TRAIL", "spec.trail"),
            ("ROLE", "spec.role"),
            ("BYTES", "spec.bytes"),
            ("EXTENTS", "spec.extents"),
            ("STATE", "status.state"),
            ("EXPIRES", "spec.expiresAt"),
        ],
    }
}

fn cell(v: &Value, path: &str) -> String {
    let mut cur = v;
    for part in path.split('.') {
        match cur.get(part) {
            Some(x) => cur = x,
            None => return "<none>".into(),
        }
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Array(a) => a.len().to_string(),
        Value::Null => "<none>".into(),
        other => other.to_string(),
    }
}

fn to_values<T: Serialize + ResourceExt>(items: impl Iterator<Item = T>) -> Vec<Value> {
    items
        .map(|o| serde_json::to_value(&o).expect("resources serialize"))
        .collect()
}

/// Prints resources of `kind` (optionally one `name`, optionally filtered by `label=value`).
pub fn get(
    state: &StateDir,
    kind: &str,
    name: Option<&str>,
    selector: Option<&str>,
    output: Output,
) -> Result<String> {
    let canonical = kind_of(kind).ok_or_else(|| {
        Error::Other(format!(
            "unknown kind {kind:?}: use mediaclasses, backuptrails, duplicationtrails, duplicationpolicies, restores or catalogentries"
        ))
    })?;
    let set = state.load_resources()?;
    let mut values = match canonical {
        "MediaClass" => to_values(set.media_classes.into_values()),
        "BackupTrail" => to_values(set.backup_trails.into_values()),
        "DuplicationTrail" => to_values(set.duplication_trails.into_values()),
        "DuplicationPolicy" => to_values(set.policies.into_values()),
        "Restore" => to_values(set.restores.into_values()),
        _ => to_values(
            state
                .load_catalog()?
                .entries
                .into_values()
                .map(std::sync::Arc::unwrap_or_clone),
        ),
    };
    for v in values.iter_mut() {
        if let Some(o) = v.as_object_mut() {
            o.insert("apiVersion".into(), API_VERSION.into());
            o.insert("kind".into(), canonical.into());
        }
    }
    if let Some(n) = name {
        values.retain(|v| v["metadata"]["name"] == n);
        if values.is_empty() {
            return Err(Error::Other(format!(
                "{} {n:?} not found",
                canonical.to_lowercase()
            )));
        }
    }
    if let Some(sel) = selector {
        let (k, want) = sel
            .split_once('=')
            .ok_or_else(|| Error::Other(format!("selector {sel:?} must be key=value")))?;
        values.retain(|v| v["metadata"]["labels"][k] == want);
    }
    Ok(match output {
        Output::Json => serde_json::to_string_pretty(&values).expect("json"),
        Output::Yaml => values
            .iter()
            .map(|v| serde_yaml::to_string(v).expect("yaml"))
            .collect::<Vec<_>>()
            .join("---\n"),
        Output::Table => {
            let cols = columns(canonical);
            let mut rows = vec![
                std::iter::once("NAME".to_string())
                    .chain(cols.iter().map(|c| c.0.to_string()))
                    .collect::<Vec<_>>(),
            ];
            for v in &values {
                rows.push(
                    std::iter::once(cell(v, "metadata.name"))
                        .chain(cols.iter().map(|c| cell(v, c.1)))
                        .collect(),
                );
            }
            format_table(&rows)
        }
    })
}

/// Left-aligned columns separated by three spaces, as kubectl prints them.
pub fn format_table(rows: &[Vec<String>]) -> String {
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..n)
        .map(|i| {
            rows.iter()
                .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        out.push_str(line.join("   ").trim_end());
        out.push('\n');
    }
    out
}
