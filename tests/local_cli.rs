//! `mimeo local` end to end through the binary: input errors, restore choice, damaged media,
//! a killed apply, expiry and rescan, a full target filesystem. Every test works in its own temp dir.
mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::cli::*;
use common::tree::{assert_same_tree, make_sample_tree};
use serde_json::Value;

const API: &str = "apiVersion: mimeo.dev/v1alpha1";

// ---------------------------------------------------------------------------------------------
// 1. Bad input
// ---------------------------------------------------------------------------------------------

/// Applies `text` as one file in a fresh state dir; expects failure with exactly one error line
/// containing every string of `wants`, and nothing stored.
fn rejected(text: &str, wants: &[&str]) {
    let env = Env::new();
    let file = env.yaml("input.yaml", text);
    let r = env.apply(&[&file]).expect_fail("bad input");
    let errors: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect();
    assert_eq!(errors.len(), 1, "exactly one error expected: {r}");
    let line = errors[0];
    for w in wants {
        assert!(line.contains(w), "error line lacks {w:?}: {line}\n{r}");
    }
    assert!(
        !r.stdout.contains("configured"),
        "nothing may be configured: {r}"
    );
    assert!(
        env.resource_files().is_empty(),
        "bad input stored resources: {:?}",
        env.resource_files()
    );
    assert!(files_below(&env.state().join("catalog")).is_empty());
}

fn good_media(env: &Env) -> String {
    media_class("disk", &env.path("media"), "8Mi", "64Ki", true)
}

#[test]
fn malformed_yaml_is_rejected() {
    let env = Env::new();
    let file = env.yaml(
        "input.yaml",
        &format!("{API}\nkind: MediaClass\nmetadata:\n  name: [unclosed\n"),
    );
    let file_name = file.display().to_string();
    let r = env.apply(&[&file]).expect_fail("malformed YAML");
    let errors: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{r}");
    assert!(errors[0].contains(&file_name), "{r}");
    assert!(errors[0].contains("malformed YAML"), "{r}");
    assert!(env.resource_files().is_empty());
}

#[test]
fn unknown_kind_is_rejected() {
    let env = Env::new();
    let file = env.yaml(
        "input.yaml",
        &format!("{API}\nkind: TapeLibrary\nmetadata:\n  name: robot\nspec: {{}}\n"),
    );
    let name = file.display().to_string();
    let r = env.apply(&[&file]).expect_fail("unknown kind");
    let errors: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{r}");
    assert!(errors[0].contains(&name), "{r}");
    assert!(errors[0].contains("unknown kind \"TapeLibrary\""), "{r}");
    assert!(env.resource_files().is_empty());
}

#[test]
fn field_errors_name_file_resource_and_field() {
    // Validation of one resource on its own: the error is `FILE: Kind/name: field F: message`.
    let cases: [(&str, String, &str, &str); 5] = [
        (
            "bad quantity",
            media_class("disk", Path::new("/nowhere"), "64MB", "64Ki", true),
            "MediaClass/disk",
            "field spec.volumeCapacity",
        ),
        (
            "bad duration",
            format!(
                "{API}\nkind: DuplicationTrail\nmetadata:\n  name: vault\nspec:\n  mediaClassName: disk\n  retention: 3x\n"
            ),
            "DuplicationTrail/vault",
            "field spec.retention",
        ),
        (
            "bad cron",
            format!(
                "{API}\nkind: BackupTrail\nmetadata:\n  name: nightly\nspec:\n  mediaClassName: disk\n  retention: 30d\n  schedule: \"every day\"\n"
            ),
            "BackupTrail/nightly",
            "field spec.schedule",
        ),
        (
            "two backends",
            format!(
                "{API}\nkind: MediaClass\nmetadata:\n  name: both\nspec:\n  backend:\n    filesystem: {{path: /nowhere}}\n    s3: {{bucket: my-bucket}}\n  volumeCapacity: 8Mi\n"
            ),
            "MediaClass/both",
            "field spec.backend",
        ),
        (
            "bad quantity in block size",
            media_class("disk", Path::new("/nowhere"), "8Mi", "lots", true),
            "MediaClass/disk",
            "field spec.blockSize",
        ),
    ];
    for (what, text, resource, field) in cases {
        let env = Env::new();
        let file = env.yaml("input.yaml", &text);
        let file_name = file.display().to_string();
        let r = env.apply(&[&file]).expect_fail(what);
        let errors: Vec<&str> = r
            .stderr
            .lines()
            .filter(|l| l.starts_with("error:"))
            .collect();
        assert_eq!(errors.len(), 1, "{what}: exactly one error expected: {r}");
        let line = errors[0];
        let prefix = format!("error: {file_name}: {resource}: {field}: ");
        assert!(
            line.starts_with(&prefix),
            "{what}: expected {prefix:?}...: {r}"
        );
        assert!(
            line.len() > prefix.len() + 10,
            "{what}: message too short: {line}"
        );
        assert!(
            env.resource_files().is_empty(),
            "{what}: stored {:?}",
            env.resource_files()
        );
    }
    // Specific messages say what is wrong and what is expected.
    rejected(
        &media_class("disk", Path::new("/nowhere"), "64MB", "64Ki", true),
        &["spec.volumeCapacity", "\"64MB\"", "unknown suffix", "64Mi"],
    );
    rejected(
        &format!(
            "{API}\nkind: MediaClass\nmetadata:\n  name: both\nspec:\n  backend:\n    filesystem: {{path: /nowhere}}\n    s3: {{bucket: my-bucket}}\n  volumeCapacity: 8Mi\n"
        ),
        &["spec.backend", "filesystem and s3"],
    );
}

#[test]
fn missing_reference_is_rejected_and_nothing_is_written() {
    let env = Env::new();
    let file = env.yaml(
        "trail.yaml",
        &backup_trail("nightly", "no-such-class", 1, &[("a", &env.path("data"))]),
    );
    let r = env.apply(&[&file]).expect_fail("missing reference");
    let errors: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{r}");
    for w in [
        "BackupTrail/nightly",
        "field spec.mediaClassName",
        "\"no-such-class\" not found",
    ] {
        assert!(errors[0].contains(w), "lacks {w:?}: {r}");
    }
    assert!(env.resource_files().is_empty());

    // With an existing state, a bad batch leaves it byte for byte as it was.
    let media = env.yaml("media.yaml", &good_media(&env));
    env.apply(&[&media]).expect_ok("media");
    let before: BTreeMap<PathBuf, Vec<u8>> = env
        .resource_files()
        .into_iter()
        .map(|p| {
            let b = fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    assert_eq!(before.len(), 1);
    let mixed = env.yaml(
        "mixed.yaml",
        &format!(
            "{}---\n{}",
            duplication_trail("copies", "disk", "7d", "Sequential"),
            backup_trail("nightly", "no-such-class", 1, &[("a", &env.path("data"))])
        ),
    );
    env.apply(&[&mixed]).expect_fail("mixed batch");
    let after: BTreeMap<PathBuf, Vec<u8>> = env
        .resource_files()
        .into_iter()
        .map(|p| {
            let b = fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    assert_eq!(before, after, "a rejected batch changed the state");
}

/// A DuplicationTrail named like a BackupTrail would share its catalog entries and volumes:
/// refused by name, and nothing is written.
#[test]
fn trails_of_both_kinds_may_not_share_a_name() {
    let env = Env::new();
    let file = env.yaml(
        "twins.yaml",
        &format!(
            "{}---\n{}---\n{}",
            good_media(&env),
            backup_trail("nightly", "disk", 1, &[("a", &env.path("data"))]),
            duplication_trail("nightly", "disk", "7d", "Sequential"),
        ),
    );
    let r = env.apply(&[&file]).expect_fail("two trails named nightly");
    assert!(r.stderr.contains("field metadata.name"), "{r}");
    assert!(
        r.stderr.contains("trails of both kinds share one catalog"),
        "{r}"
    );
    assert!(env.resource_files().is_empty());
}

#[test]
fn reference_errors_name_the_file() {
    let env = Env::new();
    let file = env.yaml(
        "trail.yaml",
        &backup_trail("nightly", "no-such-class", 1, &[("a", &env.path("data"))]),
    );
    let r = env.apply(&[&file]).expect_fail("missing reference");
    let want = format!(
        "error: {}: BackupTrail/nightly: field spec.mediaClassName: ",
        file.display()
    );
    assert!(r.stderr.contains(&want), "expected {want:?}: {r}");
}

#[test]
fn pvc_source_needs_the_operator() {
    let env = Env::new();
    let file = env.yaml(
        "all.yaml",
        &format!(
            "{}---\n{API}\nkind: BackupTrail\nmetadata:\n  name: nightly\nspec:\n  mediaClassName: disk\n  retention: 30d\n  workItems:\n    - {{name: db, source: {{pvc: {{claimName: db-data}}}}}}\n",
            good_media(&env)
        ),
    );
    let r = env.apply(&[&file]).expect_fail("pvc source");
    assert!(r.stderr.contains("backuptrail/nightly"), "{r}");
    assert!(r.stderr.contains("db-data"), "{r}");
    assert!(r.stderr.contains("needs the operator"), "{r}");
    assert!(env.entries().is_empty(), "no backup may be cataloged");
    let trail = env.get_one("backuptrails", "nightly");
    let ready = &trail["status"]["conditions"][0];
    assert_eq!(ready["status"], "False", "{trail}");
    assert_eq!(ready["reason"], "Unsupported", "{trail}");
}

// ---------------------------------------------------------------------------------------------
// 2. Restore choice
// ---------------------------------------------------------------------------------------------

fn restore_status(env: &Env, name: &str) -> Value {
    env.get_one("restores", name)["status"].clone()
}

#[test]
fn restore_prefers_an_available_duplicate_then_falls_back() {
    let env = Env::new();
    let src = env.path("data/finance");
    make_sample_tree(&src);
    let base = env.yaml(
        "base.yaml",
        &[
            media_class("disk", &env.path("media/disk"), "4Mi", "64Ki", true),
            media_class("vault", &env.path("media/vault"), "64Mi", "1Mi", true),
            backup_trail("nightly", "disk", 2, &[("finance", &src)]),
            duplication_trail("vault-7y", "vault", "7y", "Sequential"),
            duplication_policy("to-vault", "nightly", "vault-7y"),
        ]
        .join("---\n"),
    );
    env.apply(&[&base]).expect_ok("backup and copy");
    assert_eq!(env.entry_names(Some("nightly"), "Valid").len(), 1);
    assert_eq!(env.entry_names(Some("vault-7y"), "Valid").len(), 1);

    // Default source: the duplicate.
    let r1 = env.yaml(
        "r1.yaml",
        &restore("r1", "finance", "Auto", &env.path("out/r1")),
    );
    env.apply(&[&r1]).expect_ok("restore r1");
    let st = restore_status(&env, "r1");
    assert_eq!(st["phase"], "Succeeded", "{st}");
    assert_eq!(st["restoredFrom"]["role"], "Duplicate", "{st}");
    assert_eq!(st["restoredFrom"]["trail"], "vault-7y", "{st}");
    assert_same_tree(&src, &env.path("out/r1"));

    // The vault goes away: the original is read, and the reason says why.
    let vault_away = env.yaml(
        "vault-away.yaml",
        &media_class("vault", &env.path("media/vault"), "64Mi", "1Mi", false),
    );
    let r2 = env.yaml(
        "r2.yaml",
        &restore("r2", "finance", "Auto", &env.path("out/r2")),
    );
    env.apply(&[&vault_away, &r2]).expect_ok("restore r2");
    let st = restore_status(&env, "r2");
    assert_eq!(st["phase"], "Succeeded", "{st}");
    assert_eq!(st["restoredFrom"]["role"], "Original", "{st}");
    assert_eq!(st["restoredFrom"]["trail"], "nightly", "{st}");
    let reason = st["reason"].as_str().unwrap();
    assert!(reason.contains("unavailable"), "{st}");
    assert!(reason.contains("vault"), "{st}");
    assert_same_tree(&src, &env.path("out/r2"));
    // The earlier restore keeps its result.
    assert_eq!(
        restore_status(&env, "r1")["restoredFrom"]["role"],
        "Duplicate"
    );

    // Both away: the restore fails with a reason, and the apply says so.
    let disk_away = env.yaml(
        "disk-away.yaml",
        &media_class("disk", &env.path("media/disk"), "4Mi", "64Ki", false),
    );
    let r3 = env.yaml(
        "r3.yaml",
        &restore("r3", "finance", "Auto", &env.path("out/r3")),
    );
    let r = env
        .apply(&[&vault_away, &disk_away, &r3])
        .expect_fail("restore r3");
    assert!(r.stderr.contains("restore/r3"), "{r}");
    let st = restore_status(&env, "r3");
    assert_eq!(st["phase"], "Failed", "{st}");
    let reason = st["reason"].as_str().unwrap();
    assert!(reason.contains("disk unavailable"), "{st}");
    assert!(reason.contains("vault unavailable"), "{st}");
    assert!(st.get("restoredFrom").is_none(), "{st}");
    assert!(!env.path("out/r3").join("README").exists());
}

// ---------------------------------------------------------------------------------------------
// 3. Damaged media
// ---------------------------------------------------------------------------------------------

enum Damage {
    FlipByte,
    Truncate,
    Delete,
    /// The segment replaced by one of another volume (a tape in the wrong slot).
    WrongVolume,
}

/// Backs up 3 MiB of random data onto 1 MiB volumes and damages the first segment of the second
/// volume. Returns the environment, the damaged volume, the entry name and the word the error
/// must contain.
fn damaged_backup(damage: &Damage) -> (Env, &'static str, String, &'static str) {
    let env = Env::new();
    let src = env.path("data/ledger");
    random_file(&src.join("big.bin"), 3 << 20, 0xdead_beef);
    fs::write(src.join("small.txt"), "small\n").unwrap();
    let media_root = env.path("media/disk");
    let base = env.yaml(
        "base.yaml",
        &[
            media_class("disk", &media_root, "1Mi", "64Ki", true),
            backup_trail("daily", "disk", 1, &[("ledger", &src)]),
        ]
        .join("---\n"),
    );
    env.apply(&[&base]).expect_ok("backup");
    let entry = env.entry_names(Some("daily"), "Valid");
    assert_eq!(entry.len(), 1);
    let volume = "daily-00002";
    let segs = segments_below(&media_root.join("daily").join(volume));
    assert!(!segs.is_empty(), "no segment on {volume}");
    let seg = &segs[0];
    let len = fs::metadata(seg).unwrap().len();
    assert!(len > 128 << 10, "segment too small: {len}");
    let expect = match damage {
        Damage::FlipByte => {
            let mut b = fs::read(seg).unwrap();
            let at = b.len() / 2 + 1000;
            b[at] ^= 0x40;
            fs::write(seg, b).unwrap();
            "corrupt media"
        }
        Damage::Truncate => {
            let f = fs::OpenOptions::new().write(true).open(seg).unwrap();
            f.set_len(len / 2 + 100).unwrap();
            "truncated"
        }
        Damage::Delete => {
            fs::remove_file(seg).unwrap();
            "missing"
        }
        Damage::WrongVolume => {
            let other = &segments_below(&media_root.join("daily").join("daily-00001"))[0];
            fs::copy(other, seg).unwrap();
            "wrong volume label"
        }
    };
    (env, volume, entry[0].clone(), expect)
}

/// A restore and `verify` both refuse damaged data with a precise message, and the damaged copy
/// is marked Missing.
fn damaged_segment(damage: Damage) {
    // A restore from the original reads the damage and fails.
    let (env, volume, entry, expect) = damaged_backup(&damage);
    let rst = env.yaml(
        "restore.yaml",
        &restore("back", "ledger", "Original", &env.path("out")),
    );
    let r = env.apply(&[&rst]).expect_fail("restore of damaged data");
    let st = restore_status(&env, "back");
    assert_eq!(st["phase"], "Failed", "{st}\n{r}");
    let reason = st["reason"].as_str().unwrap();
    for w in [volume, "offset", "work item ledger", expect] {
        assert!(reason.contains(w), "restore reason lacks {w:?}: {st}");
        assert!(r.stderr.contains(w), "apply stderr lacks {w:?}: {r}");
    }
    assert_eq!(env.entry_names(None, "Missing"), [entry]);

    // verify names the volume, an offset and the work item, and marks the copy Missing.
    let (env, volume, entry, expect) = damaged_backup(&damage);
    let r = env.run(&["verify"]).expect_fail("verify");
    let out = r.all();
    for w in [
        "DAMAGED",
        volume,
        "offset",
        "work item ledger",
        expect,
        &entry,
    ] {
        assert!(out.contains(w), "verify output lacks {w:?}: {r}");
    }
    assert!(
        out.contains("verify: 0 ok, 1 damaged, 0 not read, 0 skipped"),
        "{r}"
    );
    assert!(env.entry_names(None, "Valid").is_empty());
    assert_eq!(env.entry_names(None, "Missing"), [entry]);
    // Nothing Valid is left to verify.
    env.run(&["verify"]).expect_ok("second verify");
    // A trail that does not exist is an error, not "nothing to verify".
    let r = env
        .run(&["verify", "dialy"])
        .expect_fail("verify of a typo");
    assert!(
        r.stderr.contains("no trail \"dialy\"") && r.stderr.contains("daily"),
        "{r}"
    );
}

#[test]
fn damaged_duplicate_falls_back_to_the_original() {
    let env = Env::new();
    let src = env.path("data/ledger");
    random_file(&src.join("big.bin"), 3 << 20, 7);
    let vault = env.path("media/vault");
    let base = env.yaml(
        "base.yaml",
        &[
            media_class("disk", &env.path("media/disk"), "64Mi", "64Ki", true),
            media_class("vault", &vault, "64Mi", "1Mi", true),
            backup_trail("daily", "disk", 1, &[("ledger", &src)]),
            duplication_trail("vault-7y", "vault", "7y", "Sequential"),
            duplication_policy("to-vault", "daily", "vault-7y"),
        ]
        .join("---\n"),
    );
    env.apply(&[&base]).expect_ok("backup and copy");
    let seg = &segments_below(&vault)[0];
    let mut b = fs::read(seg).unwrap();
    let at = b.len() / 2;
    b[at] ^= 1;
    fs::write(seg, b).unwrap();
    let rst = env.yaml("r.yaml", &restore("r", "ledger", "Auto", &env.path("out")));
    env.apply(&[&rst]).expect_ok("restore falls back");
    let st = restore_status(&env, "r");
    assert_eq!(st["phase"], "Succeeded", "{st}");
    assert_eq!(st["restoredFrom"]["role"], "Original", "{st}");
    let reason = st["reason"].as_str().unwrap();
    assert!(reason.contains("duplicate on vault-7y damaged"), "{st}");
    // The copy passed over is listed, with where the damage is.
    let damaged = st["damaged"].as_array().expect("status.damaged");
    assert_eq!(damaged.len(), 1, "{st}");
    for w in [
        "duplicate on vault-7y damaged",
        "vault-7y-00001",
        "offset",
        "ledger",
    ] {
        assert!(damaged[0].as_str().unwrap().contains(w), "{w}: {st}");
    }
    assert_eq!(env.entry_names(Some("vault-7y"), "Missing").len(), 1);
    assert_eq!(
        fs::read(env.path("out/big.bin")).unwrap(),
        fs::read(src.join("big.bin")).unwrap()
    );
}

/// The operator's limit holds in local mode too: a restore passes over at most four damaged
/// copies, then fails, naming each, rather than read every trail there is.
#[test]
fn a_restore_passes_over_at_most_four_damaged_copies() {
    let env = Env::new();
    let src = env.path("data/ledger");
    random_file(&src.join("big.bin"), 1 << 20, 11);
    let mut docs = vec![
        media_class("disk", &env.path("media/disk"), "64Mi", "64Ki", true),
        backup_trail("daily", "disk", 1, &[("ledger", &src)]),
    ];
    for v in 1..=5 {
        let media = format!("vault{v}");
        docs.push(media_class(
            &media,
            &env.path(&format!("media/{media}")),
            "64Mi",
            "64Ki",
            true,
        ));
        docs.push(duplication_trail(
            &format!("copy{v}"),
            &media,
            "7y",
            "Sequential",
        ));
        docs.push(duplication_policy(
            &format!("to-copy{v}"),
            "daily",
            &format!("copy{v}"),
        ));
    }
    let base = env.yaml("base.yaml", &docs.join("---\n"));
    env.apply(&[&base]).expect_ok("backup and five copies");
    assert_eq!(env.entry_names(None, "Valid").len(), 6);
    for v in 1..=5 {
        let seg = &segments_below(&env.path(&format!("media/vault{v}")))[0];
        let mut b = fs::read(seg).unwrap();
        let at = b.len() / 2;
        b[at] ^= 1;
        fs::write(seg, b).unwrap();
    }
    let rst = env.yaml(
        "r.yaml",
        &restore("r", "ledger", "Duplicate", &env.path("out")),
    );
    let r = env.apply(&[&rst]).expect_fail("five damaged duplicates");
    let st = restore_status(&env, "r");
    assert_eq!(st["phase"], "Failed", "{st}\n{r}");
    assert_eq!(st["damaged"].as_array().map(Vec::len), Some(4), "{st}");
    assert_eq!(r.stdout.matches("reading the next copy").count(), 4, "{r}");
    // The fifth damaged copy was read (and marked) too: that read is what failed the restore.
    assert_eq!(env.entry_names(None, "Missing").len(), 5, "{st}");
    assert!(!env.path("out/big.bin").exists(), "nothing restored");
}

/// Schedules and run-now tokens follow the operator's rules: a scheduled BackupTrail backs up
/// at its first occurrence after creation (not at once), and a new `mimeo.dev/run-now` token
/// runs a backup, or a policy's run, once.
#[test]
fn schedules_and_run_now_tokens_follow_the_operators_rules() {
    let env = Env::new();
    let src = env.path("data/app");
    random_file(&src.join("a.bin"), 100_000, 5);
    let daily = |yaml: String, token: Option<&str>| {
        let mut yaml = yaml.replacen(
            "  retention: 30d\n",
            "  retention: 30d\n  schedule: \"0 2 * * *\"\n",
            1,
        );
        if !yaml.contains("schedule:") {
            yaml += "  schedule: \"0 2 * * *\"\n";
        }
        match token {
            Some(t) => yaml.replacen(
                "metadata:\n",
                &format!("metadata:\n  annotations: {{mimeo.dev/run-now: {t}}}\n"),
                1,
            ),
            None => yaml,
        }
    };
    let media = [
        media_class("disk", &env.path("media/disk"), "64Mi", "64Ki", true),
        media_class("vault", &env.path("media/vault"), "64Mi", "64Ki", true),
        duplication_trail("copies", "vault", "7y", "Sequential"),
    ]
    .join("---\n");
    let file = |name: &str, trail: Option<&str>, policy: Option<&str>| {
        let trail = daily(backup_trail("daily", "disk", 1, &[("app", &src)]), trail);
        let policy = daily(duplication_policy("to-vault", "daily", "copies"), policy);
        env.yaml(name, &[media.clone(), trail, policy].join("---\n"))
    };

    let r = env
        .apply(&[&file("1.yaml", None, None)])
        .expect_ok("scheduled");
    assert!(
        r.stdout.contains("backuptrail/daily: next backup at"),
        "{r}"
    );
    assert!(env.entries().is_empty(), "nothing is due yet: {r}");
    let policy = env.get_one("duplicationpolicies", "to-vault");
    assert!(policy["status"]["nextRun"].is_string(), "{policy}");

    env.apply(&[&file("2.yaml", Some("t1"), None)])
        .expect_ok("run now");
    assert_eq!(env.entry_names(Some("daily"), "Valid").len(), 1);
    assert!(
        env.entry_names(Some("copies"), "Valid").is_empty(),
        "the policy waits for 02:00"
    );
    env.apply(&[&file("3.yaml", Some("t1"), None)])
        .expect_ok("same token");
    assert_eq!(env.entries().len(), 1, "a token runs once");

    env.apply(&[&file("4.yaml", Some("t1"), Some("p1"))])
        .expect_ok("policy run now");
    assert_eq!(env.entry_names(Some("copies"), "Valid").len(), 1);
    let policy = env.get_one("duplicationpolicies", "to-vault");
    assert_eq!(policy["status"]["lastRunNow"], "p1", "{policy}");
}

#[test]
fn flipped_byte_is_detected() {
    damaged_segment(Damage::FlipByte);
}

#[test]
fn wrong_volume_label_is_detected() {
    damaged_segment(Damage::WrongVolume);
}

#[test]
fn truncated_segment_is_detected() {
    damaged_segment(Damage::Truncate);
}

#[test]
fn missing_segment_is_detected() {
    damaged_segment(Damage::Delete);
}

// ---------------------------------------------------------------------------------------------
// 4. Killed apply
// ---------------------------------------------------------------------------------------------

fn has_segment_or_temp(dir: &Path) -> bool {
    files_below(dir).iter().any(|p| {
        let name = p.file_name().unwrap().to_string_lossy();
        name.ends_with(".seg") || name.starts_with(".tmp-")
    })
}

#[test]
fn killed_duplication_is_completed_by_the_next_apply() {
    const ITEMS: usize = 8;
    const SIZE: usize = 24 << 20;
    let env = Env::new();
    let items: Vec<(String, PathBuf)> = (0..ITEMS)
        .map(|i| {
            let dir = env.path(&format!("data/item-{i}"));
            random_file(&dir.join("blob.bin"), SIZE, 1000 + i as u64);
            fs::write(dir.join("name.txt"), format!("item {i}\n")).unwrap();
            (format!("item-{i}"), dir)
        })
        .collect();
    let copy_root = env.path("media/copy");
    let base = env.yaml(
        "base.yaml",
        &[
            media_class("disk", &env.path("media/disk"), "32Mi", "1Mi", true),
            media_class("copy", &copy_root, "16Mi", "256Ki", true),
            backup_trail("nightly", "disk", 4, &items),
        ]
        .join("---\n"),
    );
    env.apply(&[&base]).expect_ok("backup");
    assert_eq!(env.entry_names(Some("nightly"), "Valid").len(), ITEMS);

    let dup = env.yaml(
        "dup.yaml",
        &[
            duplication_trail("copies", "copy", "30d", "Sequential"),
            duplication_policy("copy-all", "nightly", "copies"),
        ]
        .join("---\n"),
    );
    let mut args: Vec<String> = vec!["apply".into()];
    for f in [&base, &dup] {
        args.push("-f".into());
        args.push(f.display().to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut child = env
        .command(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("apply finished ({status}) before any copy data appeared: make the data larger");
        }
        if has_segment_or_temp(&copy_root) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no copy data after 60s"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "killed apply exited cleanly: {status}");
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "the apply was not killed mid-run (it exited with {status}): make the data larger"
    );
    let copied_before = env.entry_names(Some("copies"), "Valid").len();
    assert!(
        copied_before < ITEMS,
        "every item was already copied before the kill"
    );

    env.apply(&[&base, &dup]).expect_ok("apply after the kill");
    let entries = env.entries();
    let mut per_item: BTreeMap<String, usize> = BTreeMap::new();
    for e in &entries {
        if e["spec"]["trail"] == "copies" && e["status"]["state"] == "Valid" {
            *per_item
                .entry(e["spec"]["workItem"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
    }
    let want: BTreeMap<String, usize> = items.iter().map(|(n, _)| (n.clone(), 1)).collect();
    assert_eq!(
        per_item, want,
        "each item needs exactly one Valid copy (had {copied_before} before the kill)"
    );
    for e in entries.iter().filter(|e| e["spec"]["trail"] == "copies") {
        assert_eq!(e["spec"]["role"], "Duplicate", "{e}");
    }

    let r = env
        .run(&["verify", "copies"])
        .expect_ok("verify the copies");
    assert_eq!(r.stdout.matches(": ok (").count(), ITEMS, "{r}");

    for i in [0, ITEMS - 1] {
        let (name, dir) = &items[i];
        let out = env.path(&format!("out/{name}"));
        let rst = env.yaml(
            &format!("restore-{i}.yaml"),
            &restore(&format!("back-{i}"), name, "Duplicate", &out),
        );
        env.apply(&[&rst]).expect_ok("restore from the copy");
        let st = restore_status(&env, &format!("back-{i}"));
        assert_eq!(st["phase"], "Succeeded", "{st}");
        assert_eq!(st["restoredFrom"]["trail"], "copies", "{st}");
        assert_same_tree(dir, &out);
    }
}

// ---------------------------------------------------------------------------------------------
// 5. Expiry
// ---------------------------------------------------------------------------------------------

#[test]
fn expired_copies_free_their_volumes() {
    let env = Env::new();
    let src = env.path("data/logs");
    random_file(&src.join("a.bin"), 3 << 20, 7);
    let short_root = env.path("media/short");
    let base = env.yaml(
        "base.yaml",
        &[
            media_class("disk", &env.path("media/disk"), "8Mi", "64Ki", true),
            media_class("short", &short_root, "1Mi", "64Ki", true),
            backup_trail("nightly", "disk", 1, &[("logs", &src)]),
            duplication_trail("brief", "short", "2s", "Sequential"),
            duplication_policy("copy", "nightly", "brief"),
        ]
        .join("---\n"),
    );
    env.apply(&[&base]).expect_ok("backup and copy");
    let copies = env.entry_names(Some("brief"), "Valid");
    assert_eq!(copies.len(), 1, "{:?}", env.entries());
    let trail = env.get_one("duplicationtrails", "brief");
    let full = trail["status"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["state"] == "Full")
        .count();
    assert!(full >= 1, "no sealed volume: {trail}");
    assert!(!segments_below(&short_root.join("brief")).is_empty());

    std::thread::sleep(Duration::from_secs(3));
    // Everything on the trail would go at once: the mass-expiry breaker halts the sweep.
    let r = env
        .apply(&[&base])
        .expect_ok("apply that trips the breaker");
    assert!(r.stdout.contains("expiry halted"), "{r}");
    assert_eq!(env.entry_names(Some("brief"), "Valid"), copies);
    let halted = &env.get_one("duplicationtrails", "brief")["status"]["conditions"];
    assert!(
        halted
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "ExpiryHalted" && c["status"] == "True"),
        "{halted}"
    );
    // Acknowledged with the annotation: the sweep proceeds, once.
    let acked = env.yaml(
        "base.yaml",
        &std::fs::read_to_string(&base).unwrap().replace(
            "  name: brief\n",
            "  name: brief\n  annotations: {mimeo.dev/allow-mass-expiry: \"1\"}\n",
        ),
    );
    let r = env.apply(&[&acked]).expect_ok("acknowledged apply");
    assert!(r.stdout.contains("Expired"), "{r}");
    let trail = env.get_one("duplicationtrails", "brief");
    assert_eq!(trail["status"]["lastMassExpiryAck"], "1", "{trail}");
    assert!(
        !trail["status"]["conditions"]
            .to_string()
            .contains("ExpiryHalted"),
        "{trail}"
    );

    assert_eq!(env.entry_names(Some("brief"), "Expired"), copies);
    assert!(env.entry_names(Some("brief"), "Valid").is_empty());
    // The original keeps its own retention.
    assert_eq!(env.entry_names(Some("nightly"), "Valid").len(), 1);

    let trail = env.get_one("duplicationtrails", "brief");
    let volumes = trail["status"]["volumes"].as_array().unwrap();
    let scratch = volumes.iter().filter(|v| v["state"] == "Scratch").count();
    assert!(scratch >= full, "sealed volumes were not freed: {trail}");
    assert!(
        volumes
            .iter()
            .all(|v| v["state"] != "Full" && (v["state"] != "Scratch" || v["bytesUsed"] == 0)),
        "{trail}"
    );
    for v in volumes.iter().filter(|v| v["state"] == "Scratch") {
        let dir = short_root.join("brief").join(v["name"].as_str().unwrap());
        assert!(
            dir.is_dir(),
            "scratch volume {} has no directory",
            dir.display()
        );
        assert!(
            segments_below(&dir).is_empty(),
            "segments left on scratch volume {}",
            dir.display()
        );
    }
    // No volume of the expired trail is still sealed; only the open volume may hold data.
    assert!(
        !files_below(&short_root.join("brief"))
            .iter()
            .any(|p| p.ends_with("sealed")),
        "a sealed volume survived expiry"
    );
    let filling = volumes.iter().filter(|v| v["state"] == "Filling").count();
    assert!(filling <= 1, "{trail}");
}

// ---------------------------------------------------------------------------------------------
// 6. Rescan
// ---------------------------------------------------------------------------------------------

#[test]
fn rescan_rebuilds_the_catalog_from_the_media() {
    let env = Env::new();
    let a = env.path("data/a");
    let b = env.path("data/b");
    make_sample_tree(&a);
    random_file(&b.join("b.bin"), 1 << 20, 99);
    let base = env.yaml(
        "base.yaml",
        &[
            media_class("disk", &env.path("media/disk"), "2Mi", "64Ki", true),
            media_class("vault", &env.path("media/vault"), "8Mi", "128Ki", true),
            backup_trail("nightly", "disk", 2, &[("a", &a), ("b", &b)]),
            duplication_trail("vault-7y", "vault", "7y", "Interleaved"),
            duplication_policy("to-vault", "nightly", "vault-7y"),
        ]
        .join("---\n"),
    );
    env.apply(&[&base]).expect_ok("backup and copy");
    let before = env.entry_names(None, "Valid");
    assert_eq!(before.len(), 4, "{before:?}");
    let specs_before: BTreeMap<String, Value> = env
        .entries()
        .into_iter()
        .map(|e| {
            (
                e["metadata"]["name"].as_str().unwrap().into(),
                e["spec"].clone(),
            )
        })
        .collect();

    fs::remove_dir_all(env.state().join("catalog")).unwrap();
    assert!(env.entries().is_empty());
    let r = env.run(&["rescan"]).expect_ok("rescan");
    assert!(r.stdout.contains("4 entries"), "{r}");
    assert_eq!(env.entry_names(None, "Valid"), before);
    let specs_after: BTreeMap<String, Value> = env
        .entries()
        .into_iter()
        .map(|e| {
            (
                e["metadata"]["name"].as_str().unwrap().into(),
                e["spec"].clone(),
            )
        })
        .collect();
    assert_eq!(specs_before, specs_after, "rescan changed entry specs");
    // The rebuilt catalog is usable: everything verifies, and nothing is copied again.
    env.run(&["verify"]).expect_ok("verify after rescan");
    let r = env.apply(&[&base]).expect_ok("apply after rescan");
    assert!(!r.stdout.contains("instances, "), "copied again: {r}");
    assert_eq!(env.entry_names(None, "Valid"), before);
}

// ---------------------------------------------------------------------------------------------
// 7. A full target filesystem
// ---------------------------------------------------------------------------------------------

#[test]
fn full_target_filesystem_is_reported_and_the_catalog_stays_consistent() {
    let env = Env::new();
    let items: Vec<(String, PathBuf)> = (0..4)
        .map(|i| {
            let dir = env.path(&format!("data/item-{i}"));
            random_file(&dir.join("blob.bin"), 1 << 20, 40 + i as u64);
            (format!("item-{i}"), dir)
        })
        .collect();
    let media = env.path("media/small");
    fs::create_dir_all(&media).unwrap();
    let base = env.yaml(
        "base.yaml",
        &[
            media_class("small", &media, "1Mi", "64Ki", true),
            backup_trail("nightly", "small", 1, &items),
        ]
        .join("---\n"),
    );
    // In a private mount namespace the media directory is a 2.5 MiB tmpfs: 4 MiB do not fit.
    // The apply, the catalog listing and verify all run there, while the tmpfs exists.
    let mimeo = format!("{} local --state {}", bin(), env.state().display());
    let json = env.path("catalog.json");
    let script = format!(
        "mount -t tmpfs -o size=2560k tmpfs {media} || exit 99
         {mimeo} apply -f {base}; echo APPLY=$?
         {mimeo} get catalogentries -o json > {json}
         {mimeo} verify; echo VERIFY=$?",
        media = media.display(),
        base = base.display(),
        json = json.display(),
    );
    let out = std::process::Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "sh", "-c", &script])
        .output()
        .expect("unshare (util-linux) runs");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(99), "no tmpfs: {text}");
    // The failure names the trail, the volume and the cause.
    assert!(text.contains("APPLY=1"), "{text}");
    assert!(text.contains("No space left on device"), "{text}");
    assert!(text.contains("nightly/nightly-0000"), "{text}");
    // What the catalog holds Valid reads back; what did not fit is not Valid.
    assert!(text.contains("VERIFY=0"), "{text}");
    let list: Value = serde_json::from_str(&fs::read_to_string(&json).unwrap()).unwrap();
    let valid = list["items"]
        .as_array()
        .expect("a List")
        .iter()
        .filter(|e| e["status"]["state"] == "Valid")
        .count();
    assert!(valid < items.len(), "everything fit: {text}");
}

/// `apply` says what it did, as kubectl does: `created`, `unchanged`, `configured`.
#[test]
fn apply_says_created_unchanged_or_configured() {
    let env = Env::new();
    let class = |capacity: &str| media_class("disk", &env.path("media"), capacity, "64Ki", true);
    let a = env.yaml("a.yaml", &class("8Mi"));
    let r = env.apply(&[&a]).expect_ok("first");
    assert!(r.stdout.contains("mediaclass/disk created"), "{r}");
    let r = env.apply(&[&a]).expect_ok("again");
    assert!(r.stdout.contains("mediaclass/disk unchanged"), "{r}");
    let b = env.yaml("b.yaml", &class("16Mi"));
    let r = env.apply(&[&b]).expect_ok("changed");
    assert!(r.stdout.contains("mediaclass/disk configured"), "{r}");
}

/// `get` prints as kubectl does: one object by name, a `List` otherwise, which `apply -f` (a
/// file or `-`, standard input) takes back unchanged; `-o name`; label selectors with `,`,
/// `!=` and `!key`, and a clear error for one it cannot read.
#[test]
fn get_prints_objects_and_lists_that_apply_takes_back() {
    let env = Env::new();
    let src = env.path("data/app");
    random_file(&src.join("a.bin"), 50_000, 3);
    let base = env.yaml(
        "base.yaml",
        &[
            media_class("disk", &env.path("media"), "8Mi", "64Ki", true),
            backup_trail("daily", "disk", 1, &[("app", &src)]),
            restore("r1", "app", "Auto", &env.path("out1")),
            restore("r2", "app", "Auto", &env.path("out2")).replacen(
                "metadata:\n",
                "metadata:\n  labels: {team: blue}\n",
                1,
            ),
        ]
        .join("---\n"),
    );
    env.apply(&[&base]).expect_ok("backup and restores");

    let one: Value = serde_json::from_str(
        &env.run(&["get", "restore", "r1", "-o", "json"])
            .expect_ok("get one")
            .stdout,
    )
    .unwrap();
    assert_eq!(one["kind"], "Restore");
    assert_eq!(one["metadata"]["name"], "r1");
    let list = env
        .run(&["get", "restores", "-o", "json"])
        .expect_ok("get list")
        .stdout;
    let v: Value = serde_json::from_str(&list).unwrap();
    assert_eq!(
        (v["kind"].as_str(), v["items"].as_array().map(Vec::len)),
        (Some("List"), Some(2))
    );

    // The List goes back in, through a file and through standard input: nothing changes.
    let file = env.yaml("list.json", &list);
    let r = env.apply(&[&file]).expect_ok("apply the List");
    assert!(
        r.stdout.contains("restore/r1 unchanged") && r.stdout.contains("restore/r2 unchanged"),
        "{r}"
    );
    let mut child = env
        .command(&["apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(list.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("restore/r2 unchanged"));
    assert_eq!(
        env.get_one("restores", "r1")["status"]["phase"],
        "Succeeded"
    );

    let names = |selector: &str| {
        env.run(&["get", "rst", "-o", "name", "-l", selector])
            .expect_ok("get -l")
            .stdout
    };
    assert_eq!(names("team=blue"), "restore.mimeo.dev/r2\n");
    assert_eq!(names("team!=blue"), "restore.mimeo.dev/r1\n");
    assert_eq!(names("!team"), "restore.mimeo.dev/r1\n");
    assert_eq!(names("team,team=blue"), "restore.mimeo.dev/r2\n");
    assert_eq!(names("team=red"), "");
    let r = env
        .run(&["get", "rst", "-l", "team in (blue)"])
        .expect_fail("set-based selector");
    assert!(r.stderr.contains("not supported"), "{r}");
}

/// Two applies on one state directory at once do not interleave: the second waits for the
/// first (and says so), then finds the backup done. `--state` may follow the verb.
#[test]
fn concurrent_applies_wait_for_each_other() {
    let env = Env::new();
    let src = env.path("data/big");
    random_file(&src.join("big.bin"), 96 << 20, 9);
    let file = env.yaml(
        "base.yaml",
        &[
            media_class("disk", &env.path("media"), "1Gi", "1Mi", true),
            backup_trail("daily", "disk", 1, &[("big", &src)]),
        ]
        .join("---\n"),
    );
    let mut first = env
        .command(&["apply", "-f", &file.display().to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The second starts once the first holds the state lock (a fixed pause was too long on a
    // fast machine: the first had finished).
    let lock = env.state().join(".lock");
    loop {
        if let Ok(f) = std::fs::File::open(&lock)
            && let Err(std::fs::TryLockError::WouldBlock) = f.try_lock()
        {
            break;
        }
        assert!(
            first.try_wait().unwrap().is_none(),
            "the first apply ended before it was seen holding the lock"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let state = env.state().display().to_string();
    let second = std::process::Command::new(bin())
        .args([
            "local",
            "apply",
            "-f",
            &file.display().to_string(),
            "--state",
            &state,
        ])
        .output()
        .unwrap();
    let first = first.wait_with_output().unwrap();
    assert!(first.status.success(), "{first:?}");
    assert!(second.status.success(), "{second:?}");
    let waited = String::from_utf8_lossy(&second.stderr);
    assert!(
        waited.contains("waiting for another mimeo"),
        "the second did not wait: {waited}"
    );
    assert_eq!(env.entries().len(), 1, "one backup, not two");
    env.run(&["verify"]).expect_ok("verify");
}

/// An edit that changes nothing a backup reads (the retention, the streams) starts no backup,
/// and a retention edit moves the `expiresAt` of the trail's entries to backup time + the
/// new retention (the sweep already used it); adding a work item backs up again.
#[test]
fn retention_edits_move_expiry_dates_and_start_no_backup() {
    let env = Env::new();
    let src = env.path("data/app");
    random_file(&src.join("a.bin"), 20_000, 5);
    let media = media_class("disk", &env.path("media"), "8Mi", "64Ki", true);
    let trail = backup_trail("daily", "disk", 1, &[("app", &src)]);
    let first = env.yaml("a.yaml", &format!("{media}---\n{trail}"));
    env.apply(&[&first]).expect_ok("first backup");
    let expiry = |env: &Env| -> Vec<(String, String)> {
        env.entries()
            .iter()
            .map(|e| {
                let backup: chrono::DateTime<chrono::Utc> =
                    e["spec"]["backupTime"].as_str().unwrap().parse().unwrap();
                let expires: chrono::DateTime<chrono::Utc> =
                    e["spec"]["expiresAt"].as_str().unwrap().parse().unwrap();
                (
                    e["spec"]["instanceId"].as_str().unwrap().to_owned(),
                    format!("{}d", (expires - backup).num_days()),
                )
            })
            .collect()
    };
    let before = expiry(&env);
    assert_eq!(before.len(), 1);
    assert_eq!(before[0].1, "30d");

    let edited = trail
        .replace("retention: 30d", "retention: 90d")
        .replace("streams: 1", "streams: 2");
    let second = env.yaml("b.yaml", &format!("{media}---\n{edited}"));
    let r = env.apply(&[&second]).expect_ok("retention edit");
    assert!(r.stdout.contains("backuptrail/daily configured"), "{r}");
    assert!(
        !r.stdout.contains("backed up"),
        "an edit of the retention backed up:\n{r}"
    );
    let after = expiry(&env);
    assert_eq!(after, [(before[0].0.clone(), "90d".to_owned())]);

    random_file(&env.path("data/db/b.bin"), 10_000, 6);
    let more = edited.replace(
        "  workItems:\n",
        &format!(
            "  workItems:\n    - {{name: db, source: {{path: {}}}}}\n",
            env.path("data/db").display()
        ),
    );
    let third = env.yaml("c.yaml", &format!("{media}---\n{more}"));
    let r = env.apply(&[&third]).expect_ok("work item added");
    assert!(r.stdout.contains("backed up 2 work items"), "{r}");
}

/// `delete` by name, by `KIND/NAME` and by file, as kubectl does; what a deleted resource made
/// stays (the catalog, the restored files); a name that is not there is an error unless
/// `--ignore-not-found`; a name that is a path is refused. `describe` shows a trail's catalog.
#[test]
fn delete_and_describe_work_like_kubectl() {
    let env = Env::new();
    let src = env.path("data/app");
    random_file(&src.join("a.bin"), 20_000, 7);
    let base = env.yaml(
        "base.yaml",
        &[
            media_class("disk", &env.path("media"), "8Mi", "64Ki", true),
            backup_trail("daily", "disk", 1, &[("app", &src)]),
            restore("r1", "app", "Auto", &env.path("out")),
        ]
        .join("---\n"),
    );
    env.apply(&[&base]).expect_ok("backup and restore");
    assert!(env.path("out/a.bin").exists());

    let d = env
        .run(&["describe", "bt", "daily"])
        .expect_ok("describe")
        .stdout;
    assert!(d.contains("Name:         daily"), "{d}");
    assert!(d.contains("Kind:         BackupTrail"), "{d}");
    assert!(d.contains("retention: 30d"), "{d}");
    assert!(
        d.contains("Catalog:      1 entries: 1 Valid, 0 Missing, 0 Expired"),
        "{d}"
    );
    let r = env.run(&["describe", "bt", "nope"]).expect_fail("unknown");
    assert!(r.stderr.contains("\"nope\" not found"), "{r}");
    assert_eq!(r.status.code(), Some(3), "not found is permanent: {r}");
    let r = env
        .run(&["describe", "tapes", "x"])
        .expect_fail("unknown kind");
    assert_eq!(r.status.code(), Some(2), "a wrong command line: {r}");

    let r = env
        .run(&["delete", "restore", "r1"])
        .expect_ok("delete by name");
    assert_eq!(r.stdout, "restore.mimeo.dev \"r1\" deleted\n");
    assert!(env.get("restores", None).is_empty());
    assert!(
        env.path("out/a.bin").exists(),
        "a deleted restore removed its files"
    );
    let r = env.run(&["delete", "restore", "r1"]).expect_fail("again");
    assert!(
        r.stderr.contains("restore.mimeo.dev \"r1\" not found"),
        "{r}"
    );
    env.run(&["delete", "restore", "r1", "--ignore-not-found"])
        .expect_ok("ignored");
    let r = env
        .run(&["delete", "restore", "../../resources/BackupTrail/daily"])
        .expect_fail("a path");
    assert!(r.stderr.contains("daily"), "{r}");
    assert_eq!(r.status.code(), Some(2), "a wrong command line: {r}");
    assert_eq!(env.get("backuptrails", None).len(), 1);

    let file = env.yaml("r2.yaml", &restore("r2", "app", "Auto", &env.path("out2")));
    env.apply(&[&file]).expect_ok("another restore");
    let r = env
        .run(&["delete", "-f", file.to_str().unwrap()])
        .expect_ok("by file");
    assert_eq!(r.stdout, "restore.mimeo.dev \"r2\" deleted\n");
    let r = env.run(&["delete", "bt/daily"]).expect_ok("KIND/NAME");
    assert_eq!(r.stdout, "backuptrail.mimeo.dev \"daily\" deleted\n");
    assert!(env.get("backuptrails", None).is_empty());
    assert_eq!(env.entries().len(), 1, "the catalog stays");
    env.run(&["delete"]).expect_fail("nothing named");
}

/// A restore gives its target the source root's mode and modification time, as it gives every
/// other directory its own (the stream records the root as `./`).
#[test]
fn a_restore_sets_the_top_directory_mode_and_time() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let src = env.path("data/app");
    random_file(&src.join("sub/a.bin"), 10_000, 8);
    fs::set_permissions(&src, fs::Permissions::from_mode(0o750)).unwrap();
    let then = filetime::FileTime::from_unix_time(1_600_000_000, 123_456_789);
    filetime::set_file_mtime(&src, then).unwrap();
    let base = env.yaml(
        "base.yaml",
        &[
            media_class("disk", &env.path("media"), "8Mi", "64Ki", true),
            backup_trail("daily", "disk", 1, &[("app", &src)]),
            restore("r1", "app", "Auto", &env.path("out")),
        ]
        .join("---\n"),
    );
    env.apply(&[&base]).expect_ok("backup and restore");
    let meta = fs::metadata(env.path("out")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o750);
    assert_eq!(filetime::FileTime::from_last_modification_time(&meta), then);
    assert_same_tree(&src, &env.path("out"));
}
