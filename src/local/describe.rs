//! `mimeo local describe`: one resource in plain words, as `kubectl describe` shows it: names,
//! labels and annotations, spec and status, conditions as a table; for a trail, what its catalog
//! holds; for a restore, the copies it passed over.

use serde_json::Value;

use super::get::{canonical_kind, format_table, objects};
use super::state::StateDir;
use crate::error::{Error, Result};

/// `key=value` pairs of a label or annotation map, one per line, or `<none>`.
fn pairs(map: &Value, indent: &str) -> String {
    match map.as_object().filter(|m| !m.is_empty()) {
        None => "<none>".into(),
        Some(m) => m
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
            .collect::<Vec<_>>()
            .join(&format!("\n{indent}")),
    }
}

/// A YAML block, indented by two spaces under its heading.
fn block(v: &Value) -> String {
    serde_yaml::to_string(v)
        .expect("yaml")
        .lines()
        .map(|l| format!("  {l}\n"))
        .collect()
}

fn text(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
}

/// Describes the resource `name` of `kind`.
pub fn describe(state: &StateDir, kind: &str, name: &str) -> Result<String> {
    let canonical = canonical_kind(kind)?;
    let object = objects(state, canonical)?
        .into_iter()
        .find(|v| v["metadata"]["name"] == name)
        .ok_or_else(|| Error::ResourceNotFound {
            kind: canonical.to_lowercase(),
            name: name.to_owned(),
        })?;
    let meta = &object["metadata"];
    let pad = " ".repeat(14);
    let mut out = format!(
        "Name:         {name}\nKind:         {canonical}\nLabels:       {}\nAnnotations:  {}\n",
        pairs(&meta["labels"], &pad),
        pairs(&meta["annotations"], &pad)
    );
    out += "Spec:\n";
    out += &block(&object["spec"]);
    let mut status = object["status"].clone();
    let conditions = status
        .as_object_mut()
        .and_then(|s| s.remove("conditions"))
        .unwrap_or(Value::Null);
    if status.as_object().is_some_and(|s| !s.is_empty()) {
        out += "Status:\n";
        out += &block(&status);
    }
    if let Some(cs) = conditions.as_array().filter(|c| !c.is_empty()) {
        out += "Conditions:\n";
        let mut rows = vec![
            ["TYPE", "STATUS", "REASON", "MESSAGE"]
                .map(String::from)
                .to_vec(),
        ];
        rows.extend(cs.iter().map(|c| {
            ["type", "status", "reason", "message"]
                .map(|f| text(&c[f]))
                .to_vec()
        }));
        out += &indent(&format_table(&rows));
    }
    if matches!(canonical, "BackupTrail" | "DuplicationTrail") {
        out += &catalog_of(state, name)?;
    }
    Ok(out)
}

fn indent(table: &str) -> String {
    table.lines().map(|l| format!("  {l}\n")).collect()
}

/// A trail's catalog entries: counts by state, then one row each.
fn catalog_of(state: &StateDir, trail: &str) -> Result<String> {
    let entries: Vec<Value> = objects(state, "CatalogEntry")?
        .into_iter()
        .filter(|e| e["spec"]["trail"] == trail)
        .collect();
    let count = |s: &str| {
        entries
            .iter()
            .filter(|e| e["status"]["state"].as_str().unwrap_or("Valid") == s)
            .count()
    };
    let mut out = format!(
        "Catalog:      {} entries: {} Valid, {} Missing, {} Expired\n",
        entries.len(),
        count("Valid"),
        count("Missing"),
        count("Expired")
    );
    if !entries.is_empty() {
        let mut rows = vec![
            ["WORK ITEM", "INSTANCE", "ROLE", "STATE", "EXPIRES"]
                .map(String::from)
                .to_vec(),
        ];
        rows.extend(entries.iter().map(|e| {
            vec![
                text(&e["spec"]["workItem"]),
                text(&e["spec"]["instanceId"]),
                text(&e["spec"]["role"]),
                e["status"]["state"].as_str().unwrap_or("Valid").to_owned(),
                text(&e["spec"]["expiresAt"]),
            ]
        }));
        out += &indent(&format_table(&rows));
    }
    Ok(out)
}
