//! Trying to break `mimeo local` as a careless user and as an attacker would (issue 11): media
//! that cannot be reached, damaged copies and their repair, rescans, hostile names, overlapping
//! paths, symlinks planted in the media tree, unknown fields, unbounded values, duplicates in
//! a batch, and a copy whose stream fails its digest. Each test names the class it covers.
mod common;

use std::fs;
use std::path::Path;

use common::cli::*;
use common::tree::{assert_same_tree, make_sample_tree};
use serde_json::Value;

const API: &str = "apiVersion: mimeo.dev/v1alpha1";

/// A backup trail `nightly` of work items `a` and `b` on `disk`, copied to `vault-7y` on
/// `vault`; applied once.
fn backed_up(env: &Env) -> std::path::PathBuf {
    make_sample_tree(&env.path("data/a"));
    random_file(&env.path("data/b/b.bin"), 300 << 10, 7);
    let base = env.yaml(
        "base.yaml",
        &[
            media_class("disk", &env.path("media/disk"), "4Mi", "64Ki", true),
            media_class("vault", &env.path("media/vault"), "8Mi", "64Ki", true),
            backup_trail(
                "nightly",
                "disk",
                2,
                &[("a", env.path("data/a")), ("b", env.path("data/b"))],
            ),
            duplication_trail("vault-7y", "vault", "7y", "Sequential"),
            duplication_policy("to-vault", "nightly", "vault-7y"),
        ]
        .join("---\n"),
    );
    env.apply(&[&base]).expect_ok("backup and copy");
    assert_eq!(env.entry_names(None, "Valid").len(), 4);
    base
}

fn entry<'a>(entries: &'a [Value], trail: &str, item: &str) -> &'a Value {
    entries
        .iter()
        .find(|e| e["spec"]["trail"] == trail && e["spec"]["workItem"] == item)
        .unwrap_or_else(|| panic!("no entry of {item} on {trail}: {entries:?}"))
}

/// Overwrites 8 bytes in the middle of the first extent of `item`'s copy on `trail`.
fn damage(env: &Env, media: &str, trail: &str, item: &str) {
    let entries = env.entries();
    let x = &entry(&entries, trail, item)["spec"]["extents"][0];
    let seg = env.path(&format!(
        "media/{media}/{trail}/{}/{:05}.seg",
        x["volume"].as_str().unwrap(),
        x["segment"].as_u64().unwrap()
    ));
    let at = x["offset"].as_u64().unwrap() + x["length"].as_u64().unwrap() / 2;
    let mut bytes = fs::read(&seg).unwrap();
    bytes[at as usize..at as usize + 8].copy_from_slice(b"DAMAGED!");
    fs::write(&seg, bytes).unwrap();
}

/// Gives `item`'s copy on `trail` a digest its (intact) blocks do not have: the stream read back
/// is not the one the catalog recorded, as with a same-length forged stream with valid CRCs.
fn forge_digest(env: &Env, trail: &str, item: &str) {
    let entries = env.entries();
    let mut e = entry(&entries, trail, item).clone();
    let name = e["metadata"]["name"].as_str().unwrap().to_owned();
    e["spec"]["digest"] = format!("sha256:{}", "0".repeat(64)).into();
    fs::write(
        env.state().join(format!("catalog/{name}.json")),
        serde_json::to_vec(&e).unwrap(),
    )
    .unwrap();
}

fn du(dir: &Path) -> u64 {
    files_below(dir)
        .iter()
        .map(|f| fs::metadata(f).unwrap().len())
        .sum()
}

// ---------------------------------------------------------------------------------------------
// Unreachable media are never damaged
// ---------------------------------------------------------------------------------------------

#[test]
fn unreachable_filesystem_media_are_not_damaged_and_free_nothing() {
    let env = Env::new();
    let base = backed_up(&env);
    let valid = env.entry_names(None, "Valid");
    // An unmounted filesystem: the media directory is there, and empty.
    let media = env.path("media/disk");
    let away = env.path("media/disk-away");
    fs::rename(&media, &away).unwrap();
    fs::create_dir(&media).unwrap();
    let r = env
        .run(&["verify"])
        .expect_fail("verify with the media gone");
    assert!(r.stdout.contains("media not reachable"), "{r}");
    assert!(!r.stdout.contains("DAMAGED"), "{r}");
    assert_eq!(
        env.entry_names(None, "Valid"),
        valid,
        "a copy became Missing"
    );
    // Nor does a catalog rebuilt from media that are not there lose anything; it says so.
    let r = env
        .run(&["rescan"])
        .expect_fail("rescan with the media gone");
    assert!(r.stdout.contains("hold no manifest at all"), "{r}");
    assert_eq!(
        env.entry_names(None, "Valid"),
        valid,
        "rescan dropped or marked entries"
    );
    // The next apply, media still away, frees nothing; with the media back, nothing either.
    env.apply(&[&base]);
    fs::remove_dir(&media).unwrap();
    fs::rename(&away, &media).unwrap();
    let segments = segments_below(&media);
    let r = env.apply(&[&base]).expect_ok("apply with the media back");
    assert!(!r.stdout.contains("freed"), "{r}");
    assert_eq!(segments_below(&media), segments);
    assert_eq!(env.entry_names(None, "Valid"), valid);
    env.run(&["verify"]).expect_ok("verify with the media back");
}

#[test]
fn a_restore_passes_over_unreachable_media_without_marking_them() {
    let env = Env::new();
    backed_up(&env);
    let valid = env.entry_names(None, "Valid");
    // The vault, which Auto prefers, is an empty mount point now.
    let vault = env.path("media/vault");
    fs::rename(&vault, env.path("media/vault-away")).unwrap();
    fs::create_dir(&vault).unwrap();
    let target = env.path("restore/a");
    let file = env.yaml("r.yaml", &restore("r", "a", "Auto", &target));
    let r = env
        .apply(&[&file])
        .expect_ok("the restore reads the original");
    assert_eq!(
        env.get_one("restore", "r")["status"]["restoredFrom"]["role"],
        "Original",
        "{r}"
    );
    assert!(
        r.all().contains("not readable"),
        "the pass-over is not said: {r}"
    );
    assert_same_tree(&env.path("data/a"), &target);
    assert_eq!(
        env.entry_names(None, "Valid"),
        valid,
        "an unreachable copy was marked"
    );
}

#[test]
fn a_restore_target_that_is_a_symlink_is_refused() {
    let env = Env::new();
    backed_up(&env);
    let elsewhere = env.path("elsewhere");
    fs::create_dir_all(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, env.path("target-link")).unwrap();
    let file = env.yaml(
        "r.yaml",
        &restore("r", "a", "Auto", &env.path("target-link")),
    );
    let r = env.apply(&[&file]).expect_fail("a symlinked target");
    assert!(r.all().contains("not a directory"), "{r}");
    assert!(
        files_below(&elsewhere).is_empty(),
        "written through the link: {r}"
    );
}

#[test]
fn unreachable_s3_media_are_not_damaged() {
    let env = Env::new();
    backed_up(&env);
    // The vault moves to an S3 server that does not answer (a closed loopback port).
    let dead = env.yaml(
        "dead.yaml",
        &format!(
            "{}apiVersion: v1
kind: Secret
metadata: {{name: s3-creds}}
stringData: {{AWS_ACCESS_KEY_ID: a, AWS_SECRET_ACCESS_KEY: b}}
---
{API}
kind: DuplicationTrail
metadata: {{name: gone-7y}}
spec: {{mediaClassName: dead, retention: 7y}}
",
            s3_media("http://127.0.0.1:9", "dead", "bucket", "p", "8Mi", "64Ki")
        ),
    );
    // Its trail cannot be swept: the apply fails, and stores the resources.
    let r = env.apply(&[&dead]);
    assert!(r.stdout.contains("mediaclass/dead created"), "{r}");
    // A catalog entry that claims a copy on it.
    let entries = env.entries();
    let mut fake = entry(&entries, "vault-7y", "a").clone();
    let instance = fake["spec"]["instanceId"].as_str().unwrap().to_owned();
    fake["spec"]["trail"] = "gone-7y".into();
    fake["metadata"]["name"] = format!("gone-7y.{instance}").into();
    fs::write(
        env.state().join(format!("catalog/gone-7y.{instance}.json")),
        serde_json::to_vec(&fake).unwrap(),
    )
    .unwrap();
    let r = env.run(&["verify", "gone-7y"]).expect_fail("verify");
    assert!(r.stdout.contains("NOT READ"), "{r}");
    assert_eq!(env.entry_names(Some("gone-7y"), "Valid").len(), 1, "{r}");
    // rescan cannot read its manifests: it says so and keeps the entry.
    let r = env.run(&["rescan"]).expect_fail("rescan");
    assert!(
        r.stdout.contains("trail/gone-7y: manifests not read"),
        "{r}"
    );
    assert_eq!(env.entry_names(Some("gone-7y"), "Valid").len(), 1, "{r}");
    // A restore asked for that copy alone fails naming the unreachable server and marks
    // nothing; with Auto it reads another copy.
    let target = env.path("restore/only-gone");
    let only = env.yaml("r1.yaml", &restore("r1", "a", "{trail: gone-7y}", &target));
    let r = env
        .apply(&[&only])
        .expect_fail("a restore from an unreachable server");
    assert!(
        r.all().contains("127.0.0.1:9"),
        "the server is not named: {r}"
    );
    assert_eq!(env.entry_names(Some("gone-7y"), "Valid").len(), 1, "{r}");
    let target = env.path("restore/auto");
    let auto = env.yaml("r2.yaml", &restore("r2", "a", "Auto", &target));
    // (The apply as a whole still fails: the dead trail cannot be swept.)
    let r = env.apply(&[&auto]);
    let status = &env.get_one("restore", "r2")["status"];
    assert_eq!(status["phase"], "Succeeded", "{r}");
    assert_ne!(status["restoredFrom"]["trail"], "gone-7y", "{r}");
    assert_same_tree(&env.path("data/a"), &target);
    assert_eq!(env.entry_names(Some("gone-7y"), "Valid").len(), 1);
}

// ---------------------------------------------------------------------------------------------
// A damaged copy is repaired once; rescan keeps what verify learned
// ---------------------------------------------------------------------------------------------

#[test]
fn a_damaged_duplicate_is_repaired_once_and_rescan_keeps_what_verify_learned() {
    let env = Env::new();
    let base = backed_up(&env);
    damage(&env, "vault", "vault-7y", "a");
    let r = env.run(&["verify"]).expect_fail("verify finds the damage");
    assert!(r.stdout.contains("DAMAGED"), "{r}");
    let missing = env.entry_names(None, "Missing");
    assert_eq!(missing.len(), 1, "{missing:?}");
    // A rescan now does not bring the damaged copy back.
    env.run(&["rescan"]).expect_ok("rescan");
    assert_eq!(
        env.entry_names(None, "Missing"),
        missing,
        "rescan revived it"
    );
    // One repair copy, recorded as replacing the damaged one.
    let r = env.apply(&[&base]).expect_ok("apply repairs");
    assert!(r.stdout.contains("repaired by a new copy"), "{r}");
    let entries = env.entries();
    let repaired = entry(&entries, "vault-7y", "a");
    assert_eq!(repaired["status"]["state"], "Valid");
    assert!(
        !repaired["spec"]["replaces"].as_array().unwrap().is_empty(),
        "{repaired}"
    );
    let size = du(&env.path("media/vault"));
    for _ in 0..3 {
        env.apply(&[&base]).expect_ok("apply again");
    }
    assert_eq!(du(&env.path("media/vault")), size, "copied again");
    env.run(&["verify"]).expect_ok("the repair verifies");
    // A catalog rebuilt from the media alone points at the repair copy, not the damaged one.
    fs::remove_dir_all(env.state().join("catalog")).unwrap();
    env.run(&["rescan"]).expect_ok("rescan from nothing");
    let entries = env.entries();
    let rebuilt = entry(&entries, "vault-7y", "a");
    assert_eq!(rebuilt["spec"]["extents"], repaired["spec"]["extents"]);
    env.run(&["verify"]).expect_ok("verify after rescan");
}

#[test]
fn rescan_while_a_media_class_is_away_keeps_its_entries() {
    let env = Env::new();
    backed_up(&env);
    let before = env.entry_names(None, "Valid");
    let away = env.yaml(
        "away.yaml",
        &media_class("vault", &env.path("media/vault"), "8Mi", "64Ki", false),
    );
    env.apply(&[&away]).expect_ok("the vault goes away");
    let r = env
        .run(&["rescan"])
        .expect_fail("rescan reports the class it could not read");
    assert!(
        r.stdout.contains("trail/vault-7y") && r.stdout.contains("kept"),
        "{r}"
    );
    assert_eq!(env.entry_names(None, "Valid"), before);
}

// ---------------------------------------------------------------------------------------------
// Hostile names, overlapping paths, planted symlinks
// ---------------------------------------------------------------------------------------------

#[test]
fn hostile_names_are_refused_before_anything_is_written() {
    let env = Env::new();
    let long = "a".repeat(240);
    for name in ["../../../esc/x", "/abs", long.as_str(), "Upper", "a.b"] {
        let file = env.yaml(
            "bad.yaml",
            &media_class(name, &env.path("media/x"), "4Mi", "64Ki", true),
        );
        let r = env.apply(&[&file]).expect_fail(name);
        assert!(r.stderr.contains("metadata.name"), "{name}: {r}");
    }
    // A Secret name is a file name too.
    let file = env.yaml(
        "secret.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata: {name: ../../esc}\nstringData: {k: v}\n",
    );
    env.apply(&[&file]).expect_fail("secret name");
    assert!(env.resource_files().is_empty());
    assert!(!env.path("esc").exists() && !env.root().parent().unwrap().join("esc").exists());
}

#[test]
fn manifests_on_hostile_media_cannot_name_files_outside_the_state() {
    let env = Env::new();
    backed_up(&env);
    let entries = env.entries();
    let mut spec = entry(&entries, "nightly", "a")["spec"].clone();
    spec["instanceId"] = "../../../../escaped".into();
    let forged = serde_json::json!({"session": "forged", "entries": [spec]});
    fs::write(
        env.path("media/disk/nightly/manifests/forged.json"),
        serde_json::to_vec(&forged).unwrap(),
    )
    .unwrap();
    let r = env.run(&["rescan"]).expect_ok("rescan");
    assert!(
        files_below(env.root())
            .iter()
            .all(|f| !f.to_string_lossy().contains("escaped")),
        "{r}"
    );
    assert_eq!(env.entries().len(), 4);
}

#[test]
fn relative_paths_are_refused_naming_the_field() {
    // A relative media path would move with the directory a command runs from: the media
    // would look empty (unreachable) from anywhere else.
    let env = Env::new();
    let cases = [
        (
            media_class("disk", Path::new("media/disk"), "4Mi", "64Ki", true),
            "spec.backend.filesystem.path",
        ),
        (
            format!(
                "{}---\n{}",
                media_class("disk", &env.path("media/disk"), "4Mi", "64Ki", true),
                backup_trail("nightly", "disk", 1, &[("a", Path::new("data/a"))])
            ),
            "spec.workItems[0].source.path",
        ),
        (
            restore("r", "a", "Auto", Path::new("restore/a")),
            "spec.target.path",
        ),
    ];
    for (yaml, field) in cases {
        let file = env.yaml("relative.yaml", &yaml);
        let r = env.apply(&[&file]).expect_fail(field);
        assert!(
            r.stderr.contains(field) && r.stderr.contains("must be an absolute path"),
            "{field}: {r}"
        );
    }
    assert!(
        !env.path("media").exists() && env.entries().is_empty(),
        "something was written"
    );
}

#[test]
fn restore_targets_never_overlap_media_or_state() {
    let env = Env::new();
    backed_up(&env);
    let segments = segments_below(&env.path("media"));
    // As written: inside the media, and above them.
    for (i, target) in [env.path("media/vault/restored"), env.path("media")]
        .iter()
        .enumerate()
    {
        let file = env.yaml("r.yaml", &restore(&format!("r{i}"), "a", "Auto", target));
        let r = env.apply(&[&file]).expect_fail("restore into media");
        assert!(
            r.stderr.contains("spec.target.path") && r.stderr.contains("overlaps"),
            "{r}"
        );
    }
    // Through a symlink, and into the state directory.
    std::os::unix::fs::symlink(env.path("media/vault"), env.path("link")).unwrap();
    for (name, target) in [
        ("via-link", env.path("link/x")),
        ("state", env.state().join("x")),
    ] {
        let file = env.yaml("r.yaml", &restore(name, "a", "Auto", &target));
        let r = env.apply(&[&file]).expect_fail(name);
        assert!(r.all().contains("overlaps"), "{name}: {r}");
        assert_eq!(env.get_one("restore", name)["status"]["phase"], "Failed");
    }
    assert_eq!(segments_below(&env.path("media")), segments);
    env.run(&["verify"]).expect_ok("the media are whole");
}

#[test]
fn a_restore_never_removes_what_is_in_its_target() {
    let env = Env::new();
    backed_up(&env);
    let target = env.path("restore/busy");
    random_file(&target.join("mine/keep.bin"), 1000, 3);
    let file = env.yaml("r.yaml", &restore("busy", "a", "Auto", &target));
    let r = env.apply(&[&file]).expect_fail("a non-empty target");
    assert!(r.all().contains("not empty"), "{r}");
    assert_eq!(fs::read_dir(&target).unwrap().count(), 1);
    assert_eq!(
        fs::metadata(target.join("mine/keep.bin")).unwrap().len(),
        1000
    );
}

#[test]
fn symlinks_planted_in_the_media_tree_are_not_followed() {
    let env = Env::new();
    make_sample_tree(&env.path("data/a"));
    let outside = env.path("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::create_dir_all(env.path("media/disk")).unwrap();
    std::os::unix::fs::symlink(&outside, env.path("media/disk/nightly")).unwrap();
    let file = env.yaml(
        "base.yaml",
        &[
            media_class("disk", &env.path("media/disk"), "4Mi", "64Ki", true),
            backup_trail("nightly", "disk", 1, &[("a", env.path("data/a"))]),
        ]
        .join("---\n"),
    );
    let r = env
        .apply(&[&file])
        .expect_fail("a symlinked trail directory");
    assert!(r.all().contains("symlink"), "{r}");
    assert!(
        files_below(&outside).is_empty(),
        "media written through the link: {r}"
    );
}

// ---------------------------------------------------------------------------------------------
// Strict input
// ---------------------------------------------------------------------------------------------

#[test]
fn unknown_fields_are_refused_by_name_in_every_kind() {
    let env = Env::new();
    let fs_backend = format!("{{filesystem: {{path: {}}}}}", env.path("m").display());
    let cases = [
        (
            format!(
                "{API}\nkind: MediaClass\nmetadata: {{name: m}}\nspec: {{backend: {fs_backend}, volumeCapacity: 4Mi, encrpytion: {{keySecretRef: {{name: k}}}}}}\n"
            ),
            "spec.encrpytion",
            "did you mean \"encryption\"",
        ),
        (
            format!(
                "{API}\nkind: MediaClass\nmetadata: {{name: m}}\nspec: {{backend: {fs_backend}, volumeCapacity: 4Mi, availble: false}}\n"
            ),
            "spec.availble",
            "did you mean \"available\"",
        ),
        (
            format!(
                "{API}\nkind: MediaClass\nmetadata: {{name: m}}\nspec: {{backend: {{filesystem: {{path: /m, mode: x}}}}, volumeCapacity: 4Mi}}\n"
            ),
            "spec.backend.filesystem.mode",
            "unknown field",
        ),
        (
            format!(
                "{API}\nkind: BackupTrail\nmetadata: {{name: t}}\nspec: {{mediaClassName: m, retention: 1d, workItems: [{{name: a, source: {{path: /a}}, sorce: x}}]}}\n"
            ),
            "spec.workItems[0].sorce",
            "did you mean \"source\"",
        ),
        (
            format!(
                "{API}\nkind: DuplicationTrail\nmetadata: {{name: d}}\nspec: {{mediaClassName: m, retension: 1d}}\n"
            ),
            "spec.retension",
            "did you mean \"retention\"",
        ),
        (
            format!(
                "{API}\nkind: DuplicationPolicy\nmetadata: {{name: p}}\nspec: {{sourceTrails: [t], targets: [d], selection: {{latestonly: true}}}}\n"
            ),
            "spec.selection.latestonly",
            "did you mean \"latestOnly\"",
        ),
        (
            format!(
                "{API}\nkind: Restore\nmetadata: {{name: r}}\nspec: {{workItem: a, target: {{paht: /r}}}}\n"
            ),
            "spec.target.paht",
            "did you mean \"path\"",
        ),
        (
            format!(
                "{API}\nkind: Restore\nmetadata: {{name: r}}\nspec: {{workItem: a, source: {{trail: d, mode: x}}, target: {{path: /r}}}}\n"
            ),
            "spec.source.mode",
            "unknown field",
        ),
        (
            "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstrngData: {k: v}\n".to_string(),
            "strngData",
            "unknown field",
        ),
    ];
    for (text, field, message) in cases {
        let file = env.yaml("u.yaml", &text);
        let r = env.apply(&[&file]).expect_fail(field);
        assert!(
            r.stderr.contains(&format!("field {field}:")) && r.stderr.contains(message),
            "{field}: {r}"
        );
    }
    assert!(env.resource_files().is_empty());
}

#[test]
fn durations_and_quantities_are_bounded_and_never_panic() {
    let env = Env::new();
    let media = env.path("media/disk");
    for (text, field) in [
        (
            media_class("m", &media, "4Mi", "64Ki", true)
                + "---\n"
                + &backup_trail("t", "m", 1, &[("a", env.path("a"))]).replace("30d", "300000y"),
            "spec.retention",
        ),
        (
            media_class("m", &media, "100Ei", "64Ki", true),
            "spec.volumeCapacity",
        ),
        (
            media_class("m", &media, "4Mi", "64Ki", true)
                + "---\n"
                + &duplication_policy("p", "t", "d").replace(
                    "targets",
                    "selection: {olderThan: 99999999999999999999d}\n  targets",
                ),
            "spec.selection.olderThan",
        ),
    ] {
        let file = env.yaml("b.yaml", &text);
        let r = env.apply(&[&file]).expect_fail(field);
        assert!(r.stderr.contains(field), "{field}: {r}");
        assert!(!r.stderr.contains("panicked"), "{r}");
    }
}

#[test]
fn two_resources_of_one_kind_and_name_in_a_batch_are_refused() {
    let env = Env::new();
    let one = env.yaml(
        "one.yaml",
        &media_class("m", &env.path("media/a"), "4Mi", "64Ki", true),
    );
    let two = env.yaml(
        "two.yaml",
        &media_class("m", &env.path("media/b"), "4Mi", "64Ki", true),
    );
    let r = env.apply(&[&one, &two]).expect_fail("the same name twice");
    assert!(
        r.stderr.contains("twice") && r.stderr.contains("one.yaml"),
        "{r}"
    );
    assert!(env.resource_files().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Nothing unverified lands
// ---------------------------------------------------------------------------------------------

#[test]
fn a_copy_that_fails_its_digest_leaves_nothing_in_the_target() {
    let env = Env::new();
    backed_up(&env);
    forge_digest(&env, "vault-7y", "a");
    let only_dup = env.path("restore/dup");
    let file = env.yaml("r.yaml", &restore("dup", "a", "Duplicate", &only_dup));
    let r = env
        .apply(&[&file])
        .expect_fail("the only copy allowed fails its digest");
    assert!(r.all().contains("digest"), "{r}");
    let left: Vec<_> = fs::read_dir(&only_dup)
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "unverified data left in the target: {left:?}"
    );
    // Auto falls back to the original into a clean target: exactly the source tree.
    let auto = env.path("restore/auto");
    let file = env.yaml("r.yaml", &restore("auto", "a", "Auto", &auto));
    env.apply(&[&file]).expect_ok("fallback to the original");
    assert_same_tree(&env.path("data/a"), &auto);
}

/// Sets what the catalog says `item`'s copy on `trail` holds in files: a stream that claims
/// more is then as forged as one whose holes were widened on the media.
fn forge_file_bytes(env: &Env, trail: &str, item: &str, file_bytes: u64) {
    let entries = env.entries();
    let mut e = entry(&entries, trail, item).clone();
    let name = e["metadata"]["name"].as_str().unwrap().to_owned();
    e["spec"]["fileBytes"] = file_bytes.into();
    fs::write(
        env.state().join(format!("catalog/{name}.json")),
        serde_json::to_vec(&e).unwrap(),
    )
    .unwrap();
}

#[test]
fn a_stream_claiming_more_than_the_catalog_recorded_writes_nothing() {
    let env = Env::new();
    backed_up(&env);
    // Backup and copy record what the files hold, the copy the same as its source.
    let entries = env.entries();
    let tree_bytes: u64 = files_below(&env.path("data/b"))
        .iter()
        .map(|f| fs::metadata(f).unwrap().len())
        .sum();
    for trail in ["nightly", "vault-7y"] {
        assert_eq!(
            entry(&entries, trail, "b")["spec"]["fileBytes"],
            tree_bytes,
            "{trail}"
        );
    }
    forge_file_bytes(&env, "vault-7y", "b", tree_bytes - 1);
    let target = env.path("restore/b");
    let file = env.yaml("r.yaml", &restore("b", "b", "Duplicate", &target));
    let r = env
        .apply(&[&file])
        .expect_fail("the stream claims more than its catalog entry");
    assert!(r.all().contains("this restore allows"), "{r}");
    let left: Vec<_> = fs::read_dir(&target)
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "data of a refused stream landed: {left:?}");
}

// ---------------------------------------------------------------------------------------------
// A copy that is not a clean snapshot says so
// ---------------------------------------------------------------------------------------------

#[test]
fn what_a_backup_skipped_is_in_its_entry_and_the_trails_status() {
    let env = Env::new();
    make_sample_tree(&env.path("data/a"));
    let fifo = env.path("data/a/pipe");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let file = env.yaml(
        "base.yaml",
        &[
            media_class("disk", &env.path("media/disk"), "4Mi", "64Ki", true),
            backup_trail("nightly", "disk", 1, &[("a", env.path("data/a"))]),
        ]
        .join("---\n"),
    );
    let r = env.apply(&[&file]).expect_ok("a backup with a FIFO in it");
    assert!(
        r.all().contains("a: skipped pipe"),
        "not in the output: {r}"
    );
    let entries = env.entries();
    let notes = &entry(&entries, "nightly", "a")["spec"]["notes"];
    assert!(
        notes.to_string().contains("skipped pipe"),
        "entry notes: {notes}"
    );
    let trail = env.get_one("backuptrails", "nightly");
    let st = &trail["status"];
    assert!(
        st["lastRunNotes"].to_string().contains("a: skipped pipe"),
        "{st}"
    );
    let ready = st["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap();
    assert!(
        ready["message"].as_str().unwrap().contains("lastRunNotes"),
        "{ready}"
    );
}

/// Objects under `prefix` of bucket `bucket` on `server`, by key.
async fn objects(server: &common::s3server::S3Server, bucket: &str, prefix: &str) -> Vec<String> {
    let out = server
        .client()
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .send()
        .await
        .unwrap();
    out.contents()
        .iter()
        .filter_map(|o| o.key().map(String::from))
        .collect()
}

#[tokio::test]
async fn an_s3_restore_target_is_never_overwritten_and_keeps_nothing_unverified() {
    let server = common::s3server::S3Server::start();
    server.create_bucket("restores");
    let env = Env::new();
    backed_up(&env);
    let s3_restore = |name: &str, source: &str, prefix: &str| {
        format!(
            "{}{API}
kind: Restore
metadata: {{name: {name}}}
spec:
  workItem: a
  source: {source}
  target: {{s3: {{endpoint: \"{}\", bucket: restores, prefix: {prefix}, region: us-east-1, forcePathStyle: true, credentialsSecretRef: {{name: s3-creds}}}}}}
",
            server.secret_yaml(),
            server.endpoint
        )
    };
    let file = env.yaml("r.yaml", &s3_restore("first", "Auto", "busy"));
    env.apply(&[&file])
        .expect_ok("a restore into an empty prefix");
    let written = objects(&server, "restores", "busy/").await;
    assert!(!written.is_empty());
    for key in &written {
        let got = server
            .client()
            .get_object()
            .bucket("restores")
            .key(key)
            .send()
            .await
            .unwrap();
        let got = got.body.collect().await.unwrap().into_bytes();
        let source = env.path("data/a").join(key.strip_prefix("busy/").unwrap());
        assert_eq!(got.as_ref(), fs::read(&source).unwrap(), "{key}");
    }
    // The same prefix again: refused, and what is there stays.
    let file = env.yaml("r.yaml", &s3_restore("again", "Auto", "busy"));
    let r = env
        .apply(&[&file])
        .expect_fail("a restore into a prefix in use");
    assert!(r.all().contains("not empty"), "{r}");
    assert_eq!(objects(&server, "restores", "busy/").await, written);
    // A copy that fails its digest: what it wrote is removed again.
    forge_digest(&env, "vault-7y", "a");
    let file = env.yaml("r.yaml", &s3_restore("forged", "Duplicate", "forged"));
    let r = env.apply(&[&file]).expect_fail("the digest fails");
    assert!(r.all().contains("digest"), "{r}");
    assert_eq!(
        objects(&server, "restores", "forged/").await,
        Vec::<String>::new(),
        "{r}"
    );
}

#[tokio::test]
async fn a_restore_killed_while_it_writes_to_s3_leaves_its_prefix_empty() {
    let server = common::s3server::S3Server::start();
    server.create_bucket("restores");
    let env = Env::new();
    for i in 0..24 {
        random_file(&env.path(&format!("data/big/f{i:02}")), 2 << 20, i);
    }
    let base = env.yaml(
        "base.yaml",
        &[
            media_class("disk", &env.path("media/disk"), "64Mi", "1Mi", true),
            backup_trail("nightly", "disk", 1, &[("big", env.path("data/big"))]),
        ]
        .join("---\n"),
    );
    env.apply(&[&base]).expect_ok("backup");
    let file = env.yaml(
        "r.yaml",
        &format!(
            "{}{API}
kind: Restore
metadata: {{name: big}}
spec:
  workItem: big
  target: {{s3: {{endpoint: \"{}\", bucket: restores, prefix: killed, region: us-east-1, forcePathStyle: true, credentialsSecretRef: {{name: s3-creds}}}}}}
",
            server.secret_yaml(),
            server.endpoint
        ),
    );
    let before = server.data_files();
    let mut child = env
        .command(&["apply", "-f", file.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Killed once the data of a few files reached the server.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while server.data_files().len() < before.len() + 4 {
        assert!(std::time::Instant::now() < deadline, "no data reached S3");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "the restore finished before it could be killed"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        objects(&server, "restores", "killed/").await,
        Vec::<String>::new(),
        "a killed restore left unverified objects"
    );
    // The prefix is still usable: the next restore fills it, byte for byte.
    env.apply(&[&file]).expect_ok("the restore again");
    let restored = objects(&server, "restores", "killed/").await;
    assert_eq!(restored.len(), 24);
    for key in restored {
        let got = server
            .client()
            .get_object()
            .bucket("restores")
            .key(&key)
            .send()
            .await
            .unwrap();
        let got = got.body.collect().await.unwrap().into_bytes();
        let source = env
            .path("data/big")
            .join(key.strip_prefix("killed/").unwrap());
        assert_eq!(got.as_ref(), fs::read(&source).unwrap(), "{key}");
    }
}
