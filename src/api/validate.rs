//! The one validation layer: every caller (local mode, operator, tests) checks resources here,
//! so a bad quantity, duration, cron, glob or reference gets the same message everywhere.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};

use super::*;

/// One problem with one field of a resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// JSON path of the field, e.g. `spec.volumeCapacity`.
    pub field: String,
    /// What is wrong and what is expected.
    pub message: String,
}

impl FieldError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A value of a field that does not parse or is out of range: what validation reports (as a
/// [`FieldError`] message) and what the typed accessors return.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("{value:?} is not a quantity: unknown suffix {suffix:?} (use e.g. 64Mi, 10Gi, 500M)")]
    QuantitySuffix { value: String, suffix: String },
    #[error("{value:?} is not a quantity (use e.g. 64Mi, 10Gi, 500M)")]
    Quantity { value: String },
    #[error("{value:?} is out of range: must be between 1 byte and 1Ei")]
    QuantityRange { value: String },
    #[error("{value:?} is not a duration (use e.g. 30d, 7y, 168h, 1h30m)")]
    Duration { value: String },
    #[error("{value:?} is out of range: durations are at most 100y")]
    DurationRange { value: String },
    #[error("{value:?} is not a cron expression: {detail}")]
    Cron { value: String, detail: String },
    #[error("{value:?} is not a glob: {detail}")]
    Glob { value: String, detail: String },
    #[error(
        "{value:?} must be a DNS label: lowercase letters, digits and '-', at most 63 characters"
    )]
    DnsLabel { value: String },
    #[error(
        "{value:?} must be a DNS subdomain: lowercase letters, digits, '-' and '.', at most 253 characters"
    )]
    DnsSubdomain { value: String },
    #[error(
        "{value:?} must be an absolute path (a relative one changes with the directory a command runs from)"
    )]
    RelativePath { value: String },
    #[error("{value:?} must not contain '..'")]
    ParentPath { value: String },
}

/// Parses a Kubernetes quantity (`64Mi`, `1Gi`, `500M`, `1048576`) into bytes.
pub fn parse_quantity(s: &str) -> Result<u64, ValueError> {
    let s = s.trim();
    let text = || s.to_owned();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let mult: u64 = match suffix {
        "" => 1,
        "k" => 1000,
        "M" => 1000u64.pow(2),
        "G" => 1000u64.pow(3),
        "T" => 1000u64.pow(4),
        "P" => 1000u64.pow(5),
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        _ => {
            return Err(ValueError::QuantitySuffix {
                value: text(),
                suffix: suffix.to_owned(),
            });
        }
    };
    let value: f64 = num
        .parse()
        .map_err(|_| ValueError::Quantity { value: text() })?;
    let bytes = value * mult as f64;
    if !(bytes.is_finite() && bytes >= 1.0 && bytes <= MAX_QUANTITY as f64) {
        return Err(ValueError::QuantityRange { value: text() });
    }
    Ok(bytes.round() as u64)
}

/// The longest duration accepted (100 years): every date Mimeo computes from one (backup time
/// plus retention, now minus `olderThan`) stays far inside what a timestamp can hold.
const MAX_DURATION_SECS: i64 = 100 * 365 * 86_400;

/// The largest quantity accepted (1Ei): sizes stay far inside `u64` arithmetic.
const MAX_QUANTITY: u64 = 1 << 60;

/// Parses a duration such as `30d`, `7y`, `168h`, `1h30m`, `45s` (units s, m, h, d, w, y=365d).
pub fn parse_duration(s: &str) -> Result<TimeDelta, ValueError> {
    let bad = || ValueError::Duration {
        value: s.to_owned(),
    };
    let mut total: i64 = 0;
    let mut num = String::new();
    for c in s.trim().chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit: i64 = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            'y' => 365 * 86_400,
            _ => return Err(bad()),
        };
        let n: i64 = num.parse().map_err(|_| bad())?;
        num.clear();
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
    }
    if !num.is_empty() || total <= 0 {
        return Err(bad());
    }
    if total > MAX_DURATION_SECS {
        return Err(ValueError::DurationRange {
            value: s.to_owned(),
        });
    }
    TimeDelta::try_seconds(total).ok_or_else(bad)
}

/// Checks a standard 5-field cron expression.
pub fn parse_cron(s: &str) -> Result<croner::Cron, ValueError> {
    s.parse::<croner::Cron>().map_err(|e| ValueError::Cron {
        value: s.to_owned(),
        detail: e.to_string(),
    })
}

/// Compiles work item globs (`finance-*`, `db?`).
pub fn parse_glob(s: &str) -> Result<globset::GlobMatcher, ValueError> {
    globset::Glob::new(s)
        .map(|g| g.compile_matcher())
        .map_err(|e| ValueError::Glob {
            value: s.to_owned(),
            detail: e.to_string(),
        })
}

/// A policy's selection, parsed once by validation: what the planner matches instances with.
/// The default selects every instance.
#[derive(Clone, Debug, Default)]
pub struct SelectionRules {
    /// Work item globs to include (all when empty).
    pub include: Vec<globset::GlobMatcher>,
    /// Work item globs to exclude.
    pub exclude: Vec<globset::GlobMatcher>,
    /// Only instances backed up at least this long ago.
    pub older_than: Option<TimeDelta>,
    /// Only instances backed up at most this long ago.
    pub newer_than: Option<TimeDelta>,
    /// Only the newest instance of each work item.
    pub latest_only: bool,
}

impl SelectionRules {
    /// Whether an instance of `work_item` backed up at `backup_time` is selected at `now`
    /// (before `latest_only`, which looks at all of them).
    pub fn picks(&self, work_item: &str, backup_time: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        self.picks_name(work_item) && self.picks_age(backup_time, now)
    }

    /// The name part of [`SelectionRules::picks`]: the globs. A planner over a large catalog
    /// asks it once per work item, not once per instance.
    pub fn picks_name(&self, work_item: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|g| g.is_match(work_item)))
            && !self.exclude.iter().any(|g| g.is_match(work_item))
    }

    /// The age part of [`SelectionRules::picks`].
    pub fn picks_age(&self, backup_time: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        self.older_than.is_none_or(|d| backup_time <= now - d)
            && self.newer_than.is_none_or(|d| backup_time >= now - d)
    }
}

impl Selection {
    /// The selection parsed, or every field that does not parse.
    pub fn rules(&self) -> Result<SelectionRules, Vec<FieldError>> {
        let mut c = Checker::default();
        let globs = |c: &mut Checker, field: &str, globs: &[String]| -> Vec<_> {
            globs
                .iter()
                .enumerate()
                .filter_map(|(i, g)| c.check(format!("spec.selection.{field}[{i}]"), parse_glob(g)))
                .collect()
        };
        let include = globs(&mut c, "workItems", &self.work_items);
        let exclude = globs(&mut c, "exclude", &self.exclude);
        let mut age = |field: &str, d: &Option<String>| {
            d.as_deref()
                .and_then(|d| c.check(format!("spec.selection.{field}"), parse_duration(d)))
        };
        let older_than = age("olderThan", &self.older_than);
        let newer_than = age("newerThan", &self.newer_than);
        if !c.errors.is_empty() {
            return Err(c.errors);
        }
        Ok(SelectionRules {
            include,
            exclude,
            older_than,
            newer_than,
            latest_only: self.latest_only,
        })
    }
}

/// Checks a DNS-1123 label (work item names become parts of object names).
pub fn check_dns_label(s: &str) -> Result<(), ValueError> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(ValueError::DnsLabel {
            value: s.to_owned(),
        })
    }
}

/// Checks a DNS-1123 subdomain (Secret and CatalogEntry names: dot-separated labels, at most
/// 253 characters), so that no name can climb out of a directory.
pub fn check_dns_subdomain(s: &str) -> Result<(), ValueError> {
    let ok = s.len() <= 253 && s.split('.').all(|l| check_dns_label(l).is_ok());
    if ok {
        Ok(())
    } else {
        Err(ValueError::DnsSubdomain {
            value: s.to_owned(),
        })
    }
}

/// Checks a directory path: absolute (a relative one would depend on where a command runs),
/// without `..` (so that overlap checks on the text are sound).
pub fn check_abs_path(p: &str) -> Result<(), ValueError> {
    if !p.starts_with('/') {
        return Err(ValueError::RelativePath {
            value: p.to_owned(),
        });
    }
    check_no_parent(p)
}

/// Refuses `..` components.
fn check_no_parent(p: &str) -> Result<(), ValueError> {
    if p.split('/').any(|c| c == "..") {
        return Err(ValueError::ParentPath {
            value: p.to_owned(),
        });
    }
    Ok(())
}

/// True when one of two slash-separated paths is the other or lies beneath it (`.` and empty
/// components ignored).
pub fn paths_overlap(a: &str, b: &str) -> bool {
    let parts = |p: &str| -> Vec<String> {
        p.split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .map(String::from)
            .collect()
    };
    let (a, b) = (parts(a), parts(b));
    let n = a.len().min(b.len());
    a[..n] == b[..n]
}

/// A restore target never lies inside or above a media class's volumes: a restore that
/// clears its target must not be able to remove a trail.
fn target_clear_of_media(c: &mut Checker, target: &DataLocation, set: &ResourceSet) {
    for (name, mc) in &set.media_classes {
        let b = &mc.spec.backend;
        let clash = match (target, b) {
            (
                DataLocation { path: Some(t), .. },
                Backend {
                    filesystem: Some(fs),
                    ..
                },
            ) => paths_overlap(t, &fs.path).then(|| ("spec.target.path", fs.path.clone())),
            (DataLocation { pvc: Some(t), .. }, Backend { pvc: Some(m), .. })
                if t.claim_name == m.claim_name =>
            {
                let (tp, mp) = (t.path.as_deref(), m.sub_path.as_deref());
                paths_overlap(tp.unwrap_or(""), mp.unwrap_or("")).then(|| {
                    let shown = format!("claim {}, {}", m.claim_name, mp.unwrap_or("/"));
                    ("spec.target.pvc", shown)
                })
            }
            (DataLocation { s3: Some(t), .. }, Backend { s3: Some(m), .. }) => {
                let same_bucket = t.media_class_name.as_deref() == Some(name.as_str())
                    || (t.bucket.as_deref() == Some(m.bucket.as_str()) && t.endpoint == m.endpoint);
                let media_prefix = m.prefix.as_deref().unwrap_or("");
                let target_prefix = match &t.media_class_name {
                    Some(_) => format!("{media_prefix}/{}", t.prefix),
                    None => t.prefix.clone(),
                };
                // A bucket holds other data beside media: only the trails' prefixes count.
                set.trail_names()
                    .into_iter()
                    .filter(|tr| set.trail_media_class(tr) == Some(name.as_str()))
                    .map(|tr| format!("{media_prefix}/{tr}"))
                    .find(|media| same_bucket && paths_overlap(&target_prefix, media))
                    .map(|media| {
                        let shown = format!("bucket {}, prefix {media:?}", m.bucket);
                        ("spec.target.s3", shown)
                    })
            }
            _ => None,
        };
        if let Some((field, at)) = clash {
            c.fail(
                field,
                format!("overlaps the media of MediaClass {name} ({at}): a restore never writes into or above media"),
            );
        }
    }
}

/// Collects field errors for one resource.
#[derive(Default)]
struct Checker {
    errors: Vec<FieldError>,
}

impl Checker {
    fn check<T>(&mut self, field: impl Into<String>, r: Result<T, ValueError>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(m) => {
                self.errors.push(FieldError::new(field, m.to_string()));
                None
            }
        }
    }

    fn fail(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError::new(field, message));
    }

    fn expiry_percent(&mut self, percent: Option<u32>) {
        if percent.is_some_and(|p| p == 0 || p > 100) {
            self.fail("spec.maxExpiryPercent", "must be between 1 and 100");
        }
    }

    fn exactly_one(&mut self, field: &str, set: &[(&str, bool)]) {
        let names: Vec<&str> = set.iter().filter(|(_, on)| *on).map(|(n, _)| *n).collect();
        let all: Vec<&str> = set.iter().map(|(n, _)| *n).collect();
        if names.len() != 1 {
            self.fail(
                field,
                format!(
                    "exactly one of {} must be set, found {}",
                    all.join(", "),
                    if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.join(" and ")
                    }
                ),
            );
        }
    }

    fn location(&mut self, field: &str, loc: &DataLocation) {
        self.exactly_one(
            field,
            &[
                ("path", loc.path.is_some()),
                ("pvc", loc.pvc.is_some()),
                ("s3", loc.s3.is_some()),
            ],
        );
        if let Some(s3) = &loc.s3
            && s3.media_class_name.is_none()
            && s3.bucket.is_none()
        {
            self.fail(
                format!("{field}.s3"),
                "name a mediaClassName or give a bucket",
            );
        }
        if let Some(p) = &loc.path {
            self.check(format!("{field}.path"), check_abs_path(p));
        }
        if let Some(p) = loc.pvc.as_ref().and_then(|p| p.path.as_deref()) {
            self.check(format!("{field}.pvc.path"), check_no_parent(p));
        }
    }
}

impl MediaClassSpec {
    /// Checks the spec on its own.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut c = Checker::default();
        let b = &self.backend;
        c.exactly_one(
            "spec.backend",
            &[
                ("filesystem", b.filesystem.is_some()),
                ("pvc", b.pvc.is_some()),
                ("s3", b.s3.is_some()),
            ],
        );
        if let Some(fs) = &b.filesystem {
            c.check("spec.backend.filesystem.path", check_abs_path(&fs.path));
        }
        if let Some(p) = b.pvc.as_ref().and_then(|p| p.sub_path.as_deref()) {
            c.check("spec.backend.pvc.subPath", check_no_parent(p));
        }
        if let Some(s3) = &b.s3
            && s3.bucket.len() < 3
        {
            c.fail(
                "spec.backend.s3.bucket",
                "bucket names have at least 3 characters",
            );
        }
        let cap = c.check("spec.volumeCapacity", parse_quantity(&self.volume_capacity));
        let block = c.check("spec.blockSize", self.block_size_bytes());
        if let (Some(cap), Some(block)) = (cap, block) {
            if block < 4096 {
                c.fail("spec.blockSize", "must be at least 4Ki");
            }
            if block > 64 << 20 {
                c.fail("spec.blockSize", "must be at most 64Mi");
            }
            if cap < block.saturating_mul(2) {
                c.fail(
                    "spec.volumeCapacity",
                    format!("must be at least twice spec.blockSize ({block} bytes)"),
                );
            }
        }
        c.errors
    }

    /// Block size in bytes (default 1Mi).
    pub fn block_size_bytes(&self) -> Result<u64, ValueError> {
        self.block_size
            .as_deref()
            .map_or(Ok(1 << 20), parse_quantity)
    }

    /// Volume capacity in bytes.
    pub fn capacity_bytes(&self) -> Result<u64, ValueError> {
        parse_quantity(&self.volume_capacity)
    }
}

impl BackupTrailSpec {
    /// Checks the spec on its own.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut c = Checker::default();
        if self.media_class_name.is_empty() {
            c.fail("spec.mediaClassName", "must name a MediaClass");
        }
        c.check("spec.retention", parse_duration(&self.retention));
        if self.streams == 0 || self.streams > 64 {
            c.fail("spec.streams", "must be between 1 and 64");
        }
        c.expiry_percent(self.max_expiry_percent);
        if let Some(s) = &self.schedule {
            c.check("spec.schedule", parse_cron(s));
        }
        let mut seen = BTreeMap::new();
        for (i, w) in self.work_items.iter().enumerate() {
            let f = format!("spec.workItems[{i}]");
            c.check(format!("{f}.name"), check_dns_label(&w.name));
            if let Some(j) = seen.insert(w.name.clone(), i) {
                c.fail(
                    format!("{f}.name"),
                    format!(
                        "duplicate work item name {:?} (also spec.workItems[{j}])",
                        w.name
                    ),
                );
            }
            c.location(&format!("{f}.source"), &w.source);
        }
        c.errors
    }
}

impl DuplicationTrailSpec {
    /// Checks the spec on its own.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut c = Checker::default();
        if self.media_class_name.is_empty() {
            c.fail("spec.mediaClassName", "must name a MediaClass");
        }
        c.check("spec.retention", parse_duration(&self.retention));
        c.expiry_percent(self.max_expiry_percent);
        c.errors
    }
}

impl DuplicationPolicySpec {
    /// Checks the spec on its own.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut c = Checker::default();
        if self.source_trails.is_empty() {
            c.fail("spec.sourceTrails", "must name at least one trail");
        }
        if self.targets.is_empty() {
            c.fail("spec.targets", "must name at least one DuplicationTrail");
        }
        if self.parallelism == 0 || self.parallelism > 64 {
            c.fail("spec.parallelism", "must be between 1 and 64");
        }
        if self.min_copies == 0 || self.min_copies > 16 {
            c.fail("spec.minCopies", "must be between 1 and 16");
        }
        if self.distribute && self.mode == DuplicationMode::Media {
            c.fail("spec.distribute", "cannot distribute with mode Media");
        }
        if let Err(errors) = self.selection.rules() {
            c.errors.extend(errors);
        }
        if let Some(s) = &self.schedule {
            c.check("spec.schedule", parse_cron(s));
        }
        c.errors
    }
}

impl RestoreSpec {
    /// Checks the spec on its own.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut c = Checker::default();
        if self.work_item.is_empty() {
            c.fail("spec.workItem", "must name a work item");
        }
        if self.instance.is_empty() {
            c.fail(
                "spec.instance",
                "use latest, an RFC 3339 time or an instance id",
            );
        }
        if let SourceChoice::Invalid(v) = &self.source {
            c.fail(
                "spec.source",
                format!("must be Auto, Original, Duplicate or {{trail: NAME}}, not {v}"),
            );
        }
        c.location("spec.target", &self.target);
        c.errors
    }
}

/// Checks that every name a resource refers to exists in `set`, with the right kind and
/// backend. `set` holds every resource that will exist once the batch is applied.
pub fn validate_references(r: &Resource, set: &ResourceSet) -> Vec<FieldError> {
    let mut c = Checker::default();
    let media = |c: &mut Checker, field: &str, name: &str| {
        if !set.media_classes.contains_key(name) {
            c.fail(field, format!("MediaClass {name:?} not found"));
        }
    };
    // Trails of both kinds share one namespace: catalog entries, volumes on the media and the
    // planner's typed values are all keyed by the trail's name alone.
    let twin = match r {
        Resource::BackupTrail(_) => set
            .duplication_trails
            .contains_key(&r.name())
            .then_some("DuplicationTrail"),
        Resource::DuplicationTrail(_) => set
            .backup_trails
            .contains_key(&r.name())
            .then_some("BackupTrail"),
        _ => None,
    };
    if let Some(other) = twin {
        c.fail(
            "metadata.name",
            format!(
                "a {other} is named {:?} too: trails of both kinds share one catalog, so their names must differ",
                r.name()
            ),
        );
    }
    match r {
        Resource::BackupTrail(t) => {
            media(&mut c, "spec.mediaClassName", &t.spec.media_class_name);
            for (i, w) in t.spec.work_items.iter().enumerate() {
                if let Some(m) = w
                    .source
                    .s3
                    .as_ref()
                    .and_then(|s| s.media_class_name.as_ref())
                {
                    media(
                        &mut c,
                        &format!("spec.workItems[{i}].source.s3.mediaClassName"),
                        m,
                    );
                }
            }
        }
        Resource::DuplicationTrail(t) => {
            media(&mut c, "spec.mediaClassName", &t.spec.media_class_name)
        }
        Resource::DuplicationPolicy(p) => {
            for (i, s) in p.spec.source_trails.iter().enumerate() {
                if !set.backup_trails.contains_key(s) && !set.duplication_trails.contains_key(s) {
                    c.fail(
                        format!("spec.sourceTrails[{i}]"),
                        format!("no BackupTrail or DuplicationTrail named {s:?}"),
                    );
                }
            }
            for (i, t) in p.spec.targets.iter().enumerate() {
                if !set.duplication_trails.contains_key(t) {
                    c.fail(
                        format!("spec.targets[{i}]"),
                        format!("DuplicationTrail {t:?} not found"),
                    );
                } else if p.spec.source_trails.contains(t) {
                    c.fail(
                        format!("spec.targets[{i}]"),
                        format!("{t:?} is also a source trail"),
                    );
                }
            }
            if p.spec.mode == DuplicationMode::Media {
                let ends: Vec<&String> =
                    p.spec.source_trails.iter().chain(&p.spec.targets).collect();
                let all_same = |of: &dyn Fn(&str) -> Option<String>| {
                    ends.windows(2).all(|w| of(w[0]) == of(w[1]))
                };
                if !all_same(&|t| set.trail_backend_kind(t).map(String::from)) {
                    c.fail(
                        "spec.mode",
                        "mode Media copies volumes raw and needs the same backend type on every source and target",
                    );
                }
                if !all_same(&|t| set.trail_key_secret(t).map(String::from)) {
                    c.fail(
                        "spec.mode",
                        "mode Media copies blocks as they are and needs the same spec.encryption on the media classes of every source and target",
                    );
                }
            }
        }
        Resource::Restore(rs) => {
            if let Some(b) = &rs.spec.backup_trail
                && !set.backup_trails.contains_key(b)
            {
                c.fail("spec.backupTrail", format!("BackupTrail {b:?} not found"));
            }
            if let SourceChoice::Trail { trail } = &rs.spec.source
                && !set.backup_trails.contains_key(trail)
                && !set.duplication_trails.contains_key(trail)
            {
                c.fail("spec.source.trail", format!("trail {trail:?} not found"));
            }
            if let Some(m) = rs
                .spec
                .target
                .s3
                .as_ref()
                .and_then(|s| s.media_class_name.as_ref())
            {
                media(&mut c, "spec.target.s3.mediaClassName", m);
            }
            target_clear_of_media(&mut c, &rs.spec.target, set);
        }
        Resource::MediaClass(m) => {
            let refs = [
                (
                    "spec.backend.s3.credentialsSecretRef.name",
                    m.spec
                        .backend
                        .s3
                        .as_ref()
                        .and_then(|s| s.credentials_secret_ref.as_ref()),
                ),
                (
                    "spec.encryption.keySecretRef.name",
                    m.spec.encryption.as_ref().map(|e| &e.key_secret_ref),
                ),
            ];
            for (field, r) in refs {
                if let Some(r) = r
                    && !set.secrets.contains_key(&r.name)
                {
                    c.fail(field, format!("Secret {:?} not found", r.name));
                }
            }
        }
        Resource::CatalogEntry(_) | Resource::Secret(_) => {}
    }
    c.errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("64Mi"), Ok(64 << 20));
        assert_eq!(parse_quantity("1Gi"), Ok(1 << 30));
        assert_eq!(parse_quantity("500M"), Ok(500_000_000));
        assert_eq!(parse_quantity("1.5Ki"), Ok(1536));
        assert_eq!(parse_quantity("4096"), Ok(4096));
        assert_eq!(
            parse_quantity("64MB"),
            Err(ValueError::QuantitySuffix {
                value: "64MB".into(),
                suffix: "MB".into()
            })
        );
        assert!(parse_quantity("lots").is_err());
        assert!(parse_quantity("0").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30d").unwrap().num_days(), 30);
        assert_eq!(parse_duration("7y").unwrap().num_days(), 7 * 365);
        assert_eq!(parse_duration("168h").unwrap().num_hours(), 168);
        assert_eq!(parse_duration("1h30m").unwrap().num_minutes(), 90);
        assert_eq!(parse_duration("2s").unwrap().num_seconds(), 2);
        for bad in ["", "30", "d", "3x", "0d", "-1d", "1.5d"] {
            assert!(parse_duration(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn cron_and_globs() {
        assert!(parse_cron("0 3 * * *").is_ok());
        assert!(parse_cron("61 * * * *").is_err());
        assert!(parse_cron("every day").is_err());
        assert!(parse_glob("fin*").unwrap().is_match("finance"));
        assert!(parse_glob("[").is_err());
    }

    #[test]
    fn media_class_rules_name_fields() {
        let spec = MediaClassSpec {
            backend: Backend {
                filesystem: Some(FilesystemBackend { path: "/x".into() }),
                s3: Some(S3Backend {
                    bucket: "bk".into(),
                    ..Default::default()
                }),
                pvc: None,
            },
            volume_capacity: "1Mi".into(),
            block_size: Some("1Mi".into()),
            tier: None,
            location: None,
            available: true,
            encryption: None,
        };
        let fields: Vec<String> = spec.validate().into_iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            [
                "spec.backend",
                "spec.backend.s3.bucket",
                "spec.volumeCapacity"
            ]
        );
    }

    #[test]
    fn dns_labels() {
        assert!(check_dns_label("finance-2").is_ok());
        assert!(check_dns_label("Finance").is_err());
        assert!(check_dns_label("-a").is_err());
        assert!(check_dns_label(&"a".repeat(64)).is_err());
    }
}
