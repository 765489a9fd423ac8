//! `mimeo local get`: resources with their status, as `kubectl get` prints them.

use kube::ResourceExt;
use serde::Serialize;
use serde_json::Value;

use super::state::StateDir;
use crate::api::*;
use crate::error::{Error, Result};

/// Output format, as kubectl's `-o`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// A table.
    Table,
    /// YAML: the object asked for by name, else a `List` of them.
    Yaml,
    /// JSON: the object asked for by name, else a `List` of them (`apply -f` takes it back).
    Json,
    /// `KIND.mimeo.dev/NAME`, one per line.
    Name,
}

/// One requirement of an equality-based label selector, as kubectl takes them.
#[derive(Debug, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    Differs(String, String),
    Exists(String),
    Absent(String),
}

/// Parses `a=b,c!=d,e,!f`; refuses what it does not understand instead of matching nothing.
fn parse_selector(selector: &str) -> Result<Vec<Requirement>> {
    let bad = |why: &str| Error::Usage(format!("label selector {selector:?}: {why}"));
    let key = |k: &str| {
        let k = k.trim();
        if k.is_empty() || k.contains(|c: char| c.is_whitespace() || "!=(),".contains(c)) {
            Err(bad(&format!("{k:?} is not a label key")))
        } else {
            Ok(k.to_owned())
        }
    };
    selector
        .split(',')
        .map(|term| {
            let term = term.trim();
            if term.contains(" in ") || term.contains(" notin ") || term.contains('(') {
                return Err(bad("set-based requirements (in, notin) are not supported"));
            }
            if let Some((k, v)) = term.split_once("!=") {
                Ok(Requirement::Differs(key(k)?, v.trim().to_owned()))
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                Ok(Requirement::Equals(key(k)?, v.trim().to_owned()))
            } else if let Some(k) = term.strip_prefix('!') {
                Ok(Requirement::Absent(key(k)?))
            } else {
                Ok(Requirement::Exists(key(term)?))
            }
        })
        .collect()
}

/// Whether an object's labels meet every requirement (`!=` also matches an absent label).
fn selected(object: &Value, requirements: &[Requirement]) -> bool {
    let labels = &object["metadata"]["labels"];
    requirements.iter().all(|r| match r {
        Requirement::Equals(k, v) => labels[k] == v.as_str(),
        Requirement::Differs(k, v) => labels[k] != v.as_str(),
        Requirement::Exists(k) => labels.get(k).is_some(),
        Requirement::Absent(k) => labels.get(k).is_none(),
    })
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

/// The canonical kind named by `kind`, or an error listing the kinds.
pub(super) fn canonical_kind(kind: &str) -> Result<&'static str> {
    kind_of(kind).ok_or_else(|| {
        Error::Usage(format!(
            "unknown kind {kind:?}: use mediaclasses, backuptrails, duplicationtrails, duplicationpolicies, restores or catalogentries"
        ))
    })
}

/// Every object of a canonical kind, as JSON with `apiVersion` and `kind`.
pub(super) fn objects(state: &StateDir, canonical: &str) -> Result<Vec<Value>> {
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
                .into_iter()
                .map(|(_, e)| std::sync::Arc::unwrap_or_clone(e)),
        ),
    };
    for v in values.iter_mut() {
        if let Some(o) = v.as_object_mut() {
            o.insert("apiVersion".into(), API_VERSION.into());
            o.insert("kind".into(), canonical.into());
        }
    }
    Ok(values)
}

/// Prints resources of `kind` (optionally one `name`, optionally filtered by `label=value`).
pub fn get(
    state: &StateDir,
    kind: &str,
    name: Option<&str>,
    selector: Option<&str>,
    output: Output,
) -> Result<String> {
    let canonical = canonical_kind(kind)?;
    let mut values = objects(state, canonical)?;
    if let Some(n) = name {
        values.retain(|v| v["metadata"]["name"] == n);
        if values.is_empty() {
            return Err(Error::ResourceNotFound {
                kind: canonical.to_lowercase(),
                name: n.to_owned(),
            });
        }
    }
    if let Some(sel) = selector {
        let requirements = parse_selector(sel)?;
        values.retain(|v| selected(v, &requirements));
    }
    // One object asked for by name is printed as itself; anything else as a List.
    let document = match name {
        Some(n) => values.first().cloned().ok_or_else(|| {
            Error::Usage(format!(
                "{} {n:?} does not match the selector",
                canonical.to_lowercase()
            ))
        })?,
        None => serde_json::json!({
            "apiVersion": "v1",
            "kind": "List",
            "items": values,
            "metadata": {"resourceVersion": ""},
        }),
    };
    Ok(match output {
        Output::Json => serde_json::to_string_pretty(&document).expect("json") + "\n",
        Output::Yaml => serde_yaml::to_string(&document).expect("yaml"),
        Output::Name => values
            .iter()
            .map(|v| {
                format!(
                    "{}.mimeo.dev/{}\n",
                    canonical.to_lowercase(),
                    cell(v, "metadata.name")
                )
            })
            .collect(),
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
                        .chain(cols.iter().map(|c| {
                            match c.0 {
                                "BYTES" => cell(v, c.1)
                                    .parse()
                                    .map_or_else(|_| cell(v, c.1), human_bytes),
                                _ => cell(v, c.1),
                            }
                        }))
                        .collect(),
                );
            }
            format_table(&rows)
        }
    })
}

/// A byte count as people read it: `512 B`, `1.5 KiB`, `12.0 MiB` (binary units, one decimal).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts_read_as_people_read_them() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(12 << 20), "12.0 MiB");
        assert_eq!(human_bytes(3 << 40), "3.0 TiB");
        assert_eq!(human_bytes(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn label_selectors_take_what_kubectl_takes_and_refuse_the_rest() {
        use Requirement::*;
        assert_eq!(
            parse_selector("a=b, c==d,e!=f,g,!h").unwrap(),
            [
                Equals("a".into(), "b".into()),
                Equals("c".into(), "d".into()),
                Differs("e".into(), "f".into()),
                Exists("g".into()),
                Absent("h".into()),
            ]
        );
        for bad in ["", "a=b,", "env in (x)", "=b", "!", "a b"] {
            assert!(parse_selector(bad).is_err(), "{bad:?} accepted");
        }
        let object = serde_json::json!({"metadata": {"labels": {"a": "b", "g": "1"}}});
        let yes = |s: &str| selected(&object, &parse_selector(s).unwrap());
        assert!(yes("a=b,g"));
        assert!(yes("a!=c,!h,x!=y"), "!= matches an absent label");
        assert!(!yes("a=b,!g"));
        assert!(!yes("a!=b"));
    }
}
