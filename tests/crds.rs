//! The committed CRD YAML must be what `mimeo crdgen` generates from the Rust types.

#[test]
fn committed_crds_match_crdgen() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mimeo"))
        .arg("crdgen")
        .output()
        .expect("mimeo crdgen runs");
    assert!(out.status.success());
    let generated = String::from_utf8(out.stdout).unwrap();
    for path in ["crds/crds.yaml", "charts/mimeo/crds/crds.yaml"] {
        let committed =
            std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).expect(path);
        assert!(
            generated == committed,
            "{path} is stale: run `cargo run -- crdgen > {path}`"
        );
    }
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
