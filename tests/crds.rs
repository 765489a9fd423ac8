//! The committed CRD YAML must be what `mimeo crdgen` generates from the Rust types.

#[test]
fn committed_crds_match_crdgen() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mimeo"))
        .arg("crdgen")
        .output()
        .expect("mimeo crdgen runs");
    assert!(out.status.success());
    let generated = String::from_utf8(out.stdout).unwrap();
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/crds/crds.yaml"))
        .expect("crds/crds.yaml exists");
    assert!(
        generated == committed,
        "crds/crds.yaml is stale: run `cargo run -- crdgen > crds/crds.yaml`"
    );
    for kind in [
        "MediaClass",
        "BackupTrail",
        "DuplicationTrail",
        "DuplicationPolicy",
        "Restore",
        "CatalogEntry",
    ] {
        assert!(
            generated.contains(&format!("kind: {kind}\n")),
            "{kind} missing"
        );
    }
}
