//! Any Mimeo resource, parsed from YAML with errors that name the file, the resource and the
//! field; and the set of resources one driver reconciles.

use std::collections::BTreeMap;

use chrono::TimeDelta;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use serde::de::DeserializeOwned;

use super::error::{Result, SpecError};
use super::validate::{
    self, FieldError, SelectionRules, check_dns_label, check_dns_subdomain, validate_references,
};
use super::*;

/// One resource of any kind Mimeo reads.
#[derive(Clone, Debug)]
pub enum Resource {
    /// A MediaClass.
    MediaClass(MediaClass),
    /// A BackupTrail.
    BackupTrail(BackupTrail),
    /// A DuplicationTrail.
    DuplicationTrail(DuplicationTrail),
    /// A DuplicationPolicy.
    DuplicationPolicy(DuplicationPolicy),
    /// A Restore.
    Restore(Restore),
    /// A CatalogEntry (written by Mimeo only).
    CatalogEntry(CatalogEntry),
    /// A core/v1 Secret holding S3 credentials.
    Secret(Secret),
}

/// Kinds in the order they are reconciled.
pub const KINDS: [&str; 6] = [
    "MediaClass",
    "BackupTrail",
    "DuplicationTrail",
    "DuplicationPolicy",
    "Restore",
    "CatalogEntry",
];

impl Resource {
    /// The `kind` of the resource.
    pub fn kind(&self) -> &'static str {
        match self {
            Resource::MediaClass(_) => "MediaClass",
            Resource::BackupTrail(_) => "BackupTrail",
            Resource::DuplicationTrail(_) => "DuplicationTrail",
            Resource::DuplicationPolicy(_) => "DuplicationPolicy",
            Resource::Restore(_) => "Restore",
            Resource::CatalogEntry(_) => "CatalogEntry",
            Resource::Secret(_) => "Secret",
        }
    }

    /// `metadata.name`.
    pub fn name(&self) -> String {
        match self {
            Resource::MediaClass(r) => r.name_any(),
            Resource::BackupTrail(r) => r.name_any(),
            Resource::DuplicationTrail(r) => r.name_any(),
            Resource::DuplicationPolicy(r) => r.name_any(),
            Resource::Restore(r) => r.name_any(),
            Resource::CatalogEntry(r) => r.name_any(),
            Resource::Secret(r) => r.name_any(),
        }
    }

    /// Parses one YAML document. `source_name` (a file name) prefixes every error.
    pub fn from_yaml(doc: serde_yaml::Value, source_name: &str) -> Result<Resource> {
        let parse_err = |message: String| SpecError::Parse {
            source_name: source_name.to_string(),
            message,
        };
        let kind = doc
            .get("kind")
            .and_then(|k| k.as_str())
            .ok_or_else(|| parse_err("document has no kind".into()))?
            .to_string();
        let api_version = doc
            .get("apiVersion")
            .and_then(|k| k.as_str())
            .unwrap_or_default()
            .to_string();
        let name = doc
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(|n| n.as_str())
            .unwrap_or_default()
            .to_string();
        let invalid = |field: String, message: String| SpecError::Invalid {
            source_name: source_name.to_string(),
            kind: kind.clone(),
            name: name.clone(),
            field,
            message,
        };
        if kind == "Secret" {
            if api_version != "v1" {
                return Err(invalid("apiVersion".into(), "a Secret must be v1".into()));
            }
            let r = Resource::Secret(typed(doc, &kind, &invalid)?);
            return match r.validate().into_iter().next() {
                Some(e) => Err(invalid(e.field, e.message)),
                None => Ok(r),
            };
        }
        if !KINDS.contains(&kind.as_str()) {
            return Err(parse_err(format!(
                "unknown kind {kind:?} (expected one of {}, or Secret)",
                KINDS.join(", ")
            )));
        }
        if api_version != API_VERSION {
            return Err(invalid(
                "apiVersion".into(),
                format!("must be {API_VERSION}, found {api_version:?}"),
            ));
        }
        if name.is_empty() {
            return Err(invalid("metadata.name".into(), "is required".into()));
        }
        let r = match kind.as_str() {
            "MediaClass" => Resource::MediaClass(typed(doc, &kind, &invalid)?),
            "BackupTrail" => Resource::BackupTrail(typed(doc, &kind, &invalid)?),
            "DuplicationTrail" => Resource::DuplicationTrail(typed(doc, &kind, &invalid)?),
            "DuplicationPolicy" => Resource::DuplicationPolicy(typed(doc, &kind, &invalid)?),
            "Restore" => {
                // `spec.source` is a keyword or `{trail}`: its schema cannot refuse other keys.
                if let Some(key) = doc
                    .get("spec")
                    .and_then(|s| s.get("source"))
                    .and_then(|s| s.as_mapping())
                    .and_then(|m| m.keys().find(|k| k.as_str() != Some("trail")))
                {
                    let key = key.as_str().unwrap_or("?");
                    return Err(invalid(
                        format!("spec.source.{key}"),
                        format!(
                            "unknown field {key:?}; spec.source is a keyword or {{trail: NAME}}"
                        ),
                    ));
                }
                Resource::Restore(typed(doc, &kind, &invalid)?)
            }
            _ => Resource::CatalogEntry(typed(doc, &kind, &invalid)?),
        };
        if let Some(e) = r.validate().into_iter().next() {
            return Err(invalid(e.field, e.message));
        }
        Ok(r)
    }

    /// Field checks that need no other resource. Names come first: they become file and
    /// object names (a Mimeo kind's name also prefixes volume, entry and Job names, hence a
    /// DNS label of at most 63 characters).
    pub fn validate(&self) -> Vec<FieldError> {
        let name = self.name();
        let rule = match self {
            Resource::Secret(_) | Resource::CatalogEntry(_) => check_dns_subdomain(&name),
            _ => check_dns_label(&name),
        };
        let mut errors: Vec<FieldError> = rule
            .err()
            .map(|m| FieldError {
                field: "metadata.name".into(),
                message: m.to_string(),
            })
            .into_iter()
            .collect();
        errors.extend(self.validate_spec());
        errors
    }

    fn validate_spec(&self) -> Vec<FieldError> {
        match self {
            Resource::MediaClass(r) => r.spec.validate(),
            Resource::BackupTrail(r) => r.spec.validate(),
            Resource::DuplicationTrail(r) => r.spec.validate(),
            Resource::DuplicationPolicy(r) => r.spec.validate(),
            Resource::Restore(r) => r.spec.validate(),
            Resource::CatalogEntry(_) | Resource::Secret(_) => Vec::new(),
        }
    }
}

/// Deserializes with the path of the failing field in the error. Unknown fields are refused
/// and named, with a did-you-mean from the kind's schema where a known field is close, as
/// kubectl's strict field validation does: a misspelt `encrpytion:` must not leave a media
/// class in the clear.
fn typed<T: DeserializeOwned>(
    doc: serde_yaml::Value,
    kind: &str,
    invalid: &dyn Fn(String, String) -> SpecError,
) -> Result<T> {
    let mut unknown: Vec<Vec<Seg>> = Vec::new();
    let mut note = |path: serde_ignored::Path| {
        let mut segs = Vec::new();
        segments(&path, &mut segs);
        // Checked before, and not fields of the typed object.
        if !matches!(&segs[..], [Seg::Key(k)] if k == "apiVersion" || k == "kind") {
            unknown.push(segs);
        }
    };
    let de = serde_ignored::Deserializer::new(doc, &mut note);
    let result = serde_path_to_error::deserialize(de);
    // A misspelt field is the cause of the "missing field" it leaves behind: named first.
    if let Some(segs) = unknown.first() {
        return Err(invalid(show(segs), unknown_field(kind, segs)));
    }
    result.map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { "spec".into() } else { path };
        let message = e.into_inner().to_string();
        // serde names a missing field in the message; the error names it as the field.
        match message
            .strip_prefix("missing field `")
            .and_then(|m| m.split('`').next())
        {
            Some(missing) => invalid(format!("{field}.{missing}"), "is required".into()),
            None => invalid(field, message),
        }
    })
}

/// One step of a field path.
enum Seg {
    Key(String),
    Index(usize),
}

fn segments(path: &serde_ignored::Path, out: &mut Vec<Seg>) {
    use serde_ignored::Path;
    match path {
        Path::Root => {}
        Path::Seq { parent, index } => {
            segments(parent, out);
            out.push(Seg::Index(*index));
        }
        Path::Map { parent, key } => {
            segments(parent, out);
            out.push(Seg::Key(key.clone()));
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => segments(parent, out),
    }
}

/// `spec.workItems[0].source`.
fn show(segs: &[Seg]) -> String {
    let mut out = String::new();
    for s in segs {
        match s {
            Seg::Key(k) if out.is_empty() => out.push_str(k),
            Seg::Key(k) => out.push_str(&format!(".{k}")),
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// "unknown field", with the closest known field of the kind's schema at that place.
fn unknown_field(kind: &str, segs: &[Seg]) -> String {
    let known: Vec<String> = kind_schema(kind)
        .and_then(|schema| {
            let mut at = &schema;
            for s in &segs[..segs.len().saturating_sub(1)] {
                at = match s {
                    Seg::Key(k) => at.get("properties")?.get(k)?,
                    Seg::Index(_) => at.get("items")?,
                };
            }
            Some(at.get("properties")?.as_object()?.keys().cloned().collect())
        })
        .unwrap_or_default();
    let Some(Seg::Key(name)) = segs.last() else {
        return "unknown field".into();
    };
    let closest = known
        .iter()
        .map(|k| (strsim::damerau_levenshtein(name, k), k))
        .min()
        .filter(|(d, _)| *d <= 2.max(name.len() / 3));
    match (closest, known.is_empty()) {
        (Some((_, k)), _) => format!("unknown field {name:?}; did you mean {k:?}?"),
        (None, false) => format!("unknown field {name:?}; known fields: {}", known.join(", ")),
        (None, true) => format!("unknown field {name:?}"),
    }
}

/// The OpenAPI schema of a Mimeo kind (the CRD's), for did-you-mean hints.
fn kind_schema(kind: &str) -> Option<serde_json::Value> {
    use kube::CustomResourceExt;
    let crd = match kind {
        "MediaClass" => MediaClass::crd(),
        "BackupTrail" => BackupTrail::crd(),
        "DuplicationTrail" => DuplicationTrail::crd(),
        "DuplicationPolicy" => DuplicationPolicy::crd(),
        "Restore" => Restore::crd(),
        "CatalogEntry" => CatalogEntry::crd(),
        _ => return None,
    };
    let version = crd.spec.versions.into_iter().next()?;
    serde_json::to_value(version.schema?.open_api_v3_schema?).ok()
}

/// Parses a multi-document YAML text into resources; the first error stops the parse.
pub fn parse_documents(text: &str, source_name: &str) -> Result<Vec<Resource>> {
    use serde::Deserialize;
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let value = serde_yaml::Value::deserialize(doc).map_err(|e| SpecError::Parse {
            source_name: source_name.to_string(),
            message: format!("malformed YAML: {e}"),
        })?;
        if value.is_null() {
            continue;
        }
        // A `List` (what `get -o json` prints for several objects) stands for its items.
        if value.get("kind").and_then(|k| k.as_str()) == Some("List") {
            let items = value
                .get("items")
                .and_then(|i| i.as_sequence())
                .ok_or_else(|| SpecError::Parse {
                    source_name: source_name.to_string(),
                    message: "a List needs a list of items".into(),
                })?;
            for item in items {
                out.push(Resource::from_yaml(item.clone(), source_name)?);
            }
            continue;
        }
        out.push(Resource::from_yaml(value, source_name)?);
    }
    Ok(out)
}

/// A BackupTrail or a DuplicationTrail: the fields both kinds have.
#[derive(Clone, Copy, Debug)]
pub enum TrailRef<'a> {
    Backup(&'a BackupTrail),
    Duplication(&'a DuplicationTrail),
}

impl<'a> TrailRef<'a> {
    pub fn media_class_name(self) -> &'a str {
        match self {
            TrailRef::Backup(t) => &t.spec.media_class_name,
            TrailRef::Duplication(t) => &t.spec.media_class_name,
        }
    }

    pub fn max_expiry_percent(self) -> Option<u32> {
        match self {
            TrailRef::Backup(t) => t.spec.max_expiry_percent,
            TrailRef::Duplication(t) => t.spec.max_expiry_percent,
        }
    }
}

/// Every resource a driver knows, by kind and name.
#[derive(Clone, Debug, Default)]
pub struct ResourceSet {
    /// MediaClasses by name.
    pub media_classes: BTreeMap<String, MediaClass>,
    /// BackupTrails by name.
    pub backup_trails: BTreeMap<String, BackupTrail>,
    /// DuplicationTrails by name.
    pub duplication_trails: BTreeMap<String, DuplicationTrail>,
    /// DuplicationPolicies by name.
    pub policies: BTreeMap<String, DuplicationPolicy>,
    /// Restores by name.
    pub restores: BTreeMap<String, Restore>,
    /// Secrets by name.
    pub secrets: BTreeMap<String, Secret>,
    /// Retention of each trail (both kinds) whose `spec.retention` parses: parsed once, when
    /// the trail is inserted. A trail with a bad retention has none, so nothing expires by it
    /// and nothing is written to it (its controller reports the field).
    pub retentions: BTreeMap<String, TimeDelta>,
    /// Selection of each policy whose selection parses, likewise.
    pub selections: BTreeMap<String, SelectionRules>,
}

impl FromIterator<Resource> for ResourceSet {
    /// A set of the resources, each taken by [`ResourceSet::insert`].
    fn from_iter<I: IntoIterator<Item = Resource>>(resources: I) -> Self {
        let mut set = ResourceSet::default();
        for r in resources {
            set.insert(r);
        }
        set
    }
}

impl ResourceSet {
    /// Adds or replaces a resource. CatalogEntries are not user input and are ignored here.
    pub fn insert(&mut self, r: Resource) {
        let name = r.name();
        match r {
            Resource::MediaClass(x) => _ = self.media_classes.insert(name, x),
            Resource::BackupTrail(x) => {
                self.typed_retention(&name, &x.spec.retention);
                self.backup_trails.insert(name, x);
            }
            Resource::DuplicationTrail(x) => {
                self.typed_retention(&name, &x.spec.retention);
                self.duplication_trails.insert(name, x);
            }
            Resource::DuplicationPolicy(x) => {
                match x.spec.selection.rules() {
                    Ok(rules) => _ = self.selections.insert(name.clone(), rules),
                    Err(_) => _ = self.selections.remove(&name),
                }
                self.policies.insert(name, x);
            }
            Resource::Restore(x) => _ = self.restores.insert(name, x),
            Resource::Secret(x) => _ = self.secrets.insert(name, x),
            Resource::CatalogEntry(_) => {}
        }
    }

    fn typed_retention(&mut self, trail: &str, retention: &str) {
        match validate::parse_duration(retention) {
            Ok(d) => _ = self.retentions.insert(trail.to_owned(), d),
            Err(_) => _ = self.retentions.remove(trail),
        }
    }

    /// A trail of either kind, by name.
    pub fn trail(&self, name: &str) -> Option<TrailRef<'_>> {
        self.backup_trails
            .get(name)
            .map(TrailRef::Backup)
            .or_else(|| self.duplication_trails.get(name).map(TrailRef::Duplication))
    }

    /// The S3 backend of media class `name`, which a data location names for its bucket.
    pub fn s3_backend(&self, name: &str) -> Result<&S3Backend> {
        self.media_classes
            .get(name)
            .and_then(|c| c.spec.backend.s3.as_ref())
            .ok_or_else(|| SpecError::Invalid {
                source_name: "location".into(),
                kind: "MediaClass".into(),
                name: name.to_owned(),
                field: "spec.backend.s3".into(),
                message: "a location names this class for S3, but it has no s3 backend".into(),
            })
    }

    /// Media class name of a trail of either kind.
    pub fn trail_media_class(&self, trail: &str) -> Option<&str> {
        self.trail(trail).map(TrailRef::media_class_name)
    }

    /// Backend type (`filesystem`, `pvc`, `s3`) of a trail's media class.
    pub fn trail_backend_kind(&self, trail: &str) -> Option<&'static str> {
        let mc = self.media_classes.get(self.trail_media_class(trail)?)?;
        let b = &mc.spec.backend;
        if b.filesystem.is_some() {
            Some("filesystem")
        } else if b.pvc.is_some() {
            Some("pvc")
        } else {
            b.s3.as_ref().map(|_| "s3")
        }
    }

    /// The Secret with the encryption key of a trail's media class, if it encrypts.
    pub fn trail_key_secret(&self, trail: &str) -> Option<&str> {
        let mc = self.media_classes.get(self.trail_media_class(trail)?)?;
        Some(mc.spec.encryption.as_ref()?.key_secret_ref.name.as_str())
    }

    /// Reference errors of `r` against this set.
    pub fn check_references(&self, r: &Resource) -> Vec<FieldError> {
        validate_references(r, self)
    }

    /// The first thing wrong with `r`, on its own or against this set, as `field F: message`:
    /// what a controller reports as InvalidSpec.
    pub fn first_problem(&self, r: &Resource) -> Option<String> {
        r.validate()
            .into_iter()
            .chain(self.check_references(r))
            .next()
            .map(|e| format!("field {}: {}", e.field, e.message))
    }

    /// Names of the trails of both kinds.
    pub fn trail_names(&self) -> Vec<String> {
        self.backup_trails
            .keys()
            .chain(self.duplication_trails.keys())
            .cloned()
            .collect()
    }
}
