//! The CEL rules in the CRDs, evaluated client-side with kube's CEL engine: each rule rejects
//! the bad spec it is written for, with a message naming the field, and accepts a good one.
//! (The e2e suite proves the same rules against a real API server.)

use kube::core::cel::{validate_cel, validate_cel_update};
use mimeo::api::*;
use serde::de::DeserializeOwned;

fn parse<T: DeserializeOwned>(yaml: &str) -> T {
    serde_yaml::from_str(yaml).expect("test YAML parses")
}

fn media_class(spec: &str) -> MediaClass {
    parse(&format!(
        "apiVersion: mimeo.dev/v1alpha1\nkind: MediaClass\nmetadata: {{name: m}}\nspec: {spec}\n"
    ))
}

fn rejected<T: kube::CustomResourceExt + serde::Serialize>(obj: &T, wants: &[&str]) {
    let err = validate_cel(obj)
        .expect_err("rule should reject")
        .to_string();
    for w in wants {
        assert!(err.contains(w), "error {err:?} lacks {w:?}");
    }
}

#[test]
fn media_class_rules() {
    let good =
        media_class("{backend: {filesystem: {path: /x}}, volumeCapacity: 64Mi, blockSize: 1Mi}");
    validate_cel(&good).expect("good MediaClass accepted");
    rejected(
        &media_class(
            "{backend: {filesystem: {path: /x}, s3: {bucket: abc}}, volumeCapacity: 64Mi}",
        ),
        &["exactly one of filesystem, pvc, s3"],
    );
    rejected(
        &media_class("{backend: {}, volumeCapacity: 64Mi}"),
        &["exactly one of filesystem, pvc, s3"],
    );
    rejected(
        &media_class("{backend: {filesystem: {path: /x}}, volumeCapacity: 1Mi, blockSize: 4Mi}"),
        &["volumeCapacity must be at least spec.blockSize"],
    );
    rejected(
        &media_class("{backend: {filesystem: {path: /x}}, volumeCapacity: lots}"),
        &["positive quantity"],
    );
}

#[test]
fn media_class_encryption_is_immutable() {
    let spec = |enc: &str| {
        media_class(&format!(
            "{{backend: {{filesystem: {{path: /x}}}}, volumeCapacity: 64Mi{enc}}}"
        ))
    };
    let plain = spec("");
    let key_a = spec(", encryption: {keySecretRef: {name: a}}");
    let key_b = spec(", encryption: {keySecretRef: {name: b}}");
    for (new, old) in [(&key_a, &plain), (&plain, &key_a), (&key_b, &key_a)] {
        let err = validate_cel_update(new, old).expect_err("encryption changed");
        assert!(
            err.to_string().contains("spec.encryption is immutable"),
            "{err}"
        );
    }
    validate_cel_update(&key_a, &key_a).expect("unchanged key accepted");
    validate_cel_update(&plain, &plain).expect("unchanged plain class accepted");
}

fn trail(spec: &str) -> BackupTrail {
    parse(&format!(
        "apiVersion: mimeo.dev/v1alpha1\nkind: BackupTrail\nmetadata: {{name: t}}\nspec: {spec}\n"
    ))
}

#[test]
fn trail_rules() {
    let good = trail("{mediaClassName: disk, retention: 30d}");
    validate_cel(&good).expect("good trail accepted");
    for bad in ["0d", "30", "3x", "-1d"] {
        rejected(
            &trail(&format!("{{mediaClassName: disk, retention: '{bad}'}}")),
            &["positive duration"],
        );
    }
    let moved = trail("{mediaClassName: other, retention: 30d}");
    let err = validate_cel_update(&moved, &good).expect_err("media class is immutable");
    assert!(err.to_string().contains("is immutable"), "{err}");
    validate_cel_update(&good, &good).expect("unchanged media class accepted");
}

fn policy(spec: &str) -> DuplicationPolicy {
    parse(&format!(
        "apiVersion: mimeo.dev/v1alpha1\nkind: DuplicationPolicy\nmetadata: {{name: p}}\nspec: {spec}\n"
    ))
}

#[test]
fn policy_rules() {
    validate_cel(&policy("{sourceTrails: [a], targets: [b]}")).expect("good policy accepted");
    rejected(
        &policy("{sourceTrails: [a], targets: []}"),
        &["spec.targets must name"],
    );
    rejected(
        &policy("{sourceTrails: [a], targets: [b], distribute: true, mode: Media}"),
        &["spec.distribute cannot be used with mode Media"],
    );
}
