//! The corpus of invalid resources (`tests/invalid/resources.yaml`, one wrong field per
//! document, named by its `test.mimeo.dev/field` annotation): `mimeo local apply` refuses every
//! one with an error naming the resource and the field, and stores nothing. The e2e suite
//! sends the same corpus to the API server (`e2e/scenarios.sh invalid`).

mod common;

use serde::Deserialize;
use serde_json::Value;

use common::cli::*;

const CORPUS: &str = include_str!("invalid/resources.yaml");

/// The corpus documents, each as YAML text with its kind, name and expected field.
fn corpus() -> Vec<(String, String, String, String)> {
    serde_yaml::Deserializer::from_str(CORPUS)
        .map(|doc| {
            let v = Value::deserialize(doc).expect("corpus document parses");
            let s = |p: &str| {
                v.pointer(p)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            };
            let field = s("/metadata/annotations/test.mimeo.dev~1field");
            assert!(!field.is_empty(), "corpus document without a field: {v}");
            (
                serde_yaml::to_string(&v).unwrap(),
                s("/kind"),
                s("/metadata/name"),
                field,
            )
        })
        .collect()
}

#[test]
fn every_invalid_resource_is_refused_naming_its_field() {
    let env = Env::new();
    let base = env.yaml(
        "base.yaml",
        &[
            media_class("disk", &env.path("media/disk"), "8Mi", "64Ki", true),
            backup_trail("nightly", "disk", 1, &[] as &[(&str, &str)]),
            duplication_trail("vault", "disk", "7y", "Sequential"),
        ]
        .join("---\n"),
    );
    env.apply(&[&base]).expect_ok("base resources");
    let stored = env.resource_files();
    let docs = corpus();
    assert!(docs.len() >= 30, "corpus has only {} documents", docs.len());
    for (yaml, kind, name, field) in &docs {
        let file = env.yaml(&format!("bad-{name}.yaml"), yaml);
        let r = env.apply(&[&file]).expect_fail(&format!("{kind}/{name}"));
        let named = r
            .stderr
            .lines()
            .any(|l| l.starts_with("error:") && l.contains(field.as_str()));
        assert!(named, "{kind}/{name}: no error names {field}: {r}");
        assert_eq!(env.resource_files(), stored, "{kind}/{name} was stored");
    }
    eprintln!(
        "INVALID CORPUS: {} resources refused, each naming its field",
        docs.len()
    );
}
