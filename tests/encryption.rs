//! Encryption at rest, in local mode: an encrypted media class holds no plaintext, restores
//! and verifies with its key; a wrong key is named (key ids) and never marks the copy Missing;
//! a tampered block whose CRC was made to match is still refused, reported and fallen back
//! from.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::cli::*;
use common::tree::{assert_same_tree, make_sample_tree};
use serde_json::Value;

const KEY: &str = "5f1c0a7d9e2b4c6f8a1d3e5b7c9f0a2e4d6b8c1f3a5e7d9b0c2f4a6e8d1b3c5f";
const OTHER_KEY: &str = "0000000000000000000000000000000000000000000000000000000000000001";
/// Text that must not appear on encrypted media.
const MARKER: &str = "MIMEO-PLAINTEXT-MARKER-7d1e";
const HEADER_LEN: usize = 56;

fn key_secret(key: &str) -> String {
    format!(
        "apiVersion: v1
kind: Secret
metadata:
  name: vault-key
stringData:
  MIMEO_ENCRYPTION_KEY: \"{key}\"
"
    )
}

fn encrypted(class: String) -> String {
    format!("{class}  encryption:\n    keySecretRef:\n      name: vault-key\n")
}

/// A plain `disk` with a trail `daily` backing up `src`, and an encrypted `vault` (volumes of
/// `vault_capacity`) with a trail `vault-7y`.
fn trails(env: &Env, src: &Path, vault_capacity: &str) -> String {
    let vault = media_class(
        "vault",
        &env.path("media/vault"),
        vault_capacity,
        "64Ki",
        true,
    );
    [
        media_class("disk", &env.path("media/disk"), "64Mi", "64Ki", true),
        encrypted(vault),
        backup_trail("daily", "disk", 1, &[("ledger", src)]),
        duplication_trail("vault-7y", "vault", "7y", "Sequential"),
    ]
    .join("---\n")
}

/// A backup on plain `disk`, copied to the encrypted `vault`.
fn copied(env: &Env) -> PathBuf {
    let src = env.path("data/ledger");
    make_sample_tree(&src);
    fs::write(src.join("marked.txt"), MARKER.repeat(4000)).unwrap();
    random_file(&src.join("big.bin"), 3 << 20, 11);
    let base = env.yaml(
        "base.yaml",
        &[
            key_secret(KEY),
            trails(env, &src, "2Mi"),
            duplication_policy("to-vault", "daily", "vault-7y"),
        ]
        .join("---\n"),
    );
    let r = env.apply(&[&base]).expect_ok("backup and encrypted copy");
    assert!(!r.all().contains(KEY), "the key was printed: {r}");
    assert_eq!(env.entry_names(Some("vault-7y"), "Valid").len(), 1);
    src
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

fn restore_status(env: &Env, name: &str) -> Value {
    env.get_one("restores", name)["status"].clone()
}

#[test]
fn encrypted_copies_hold_no_plaintext_and_restore() {
    let env = Env::new();
    let src = copied(&env);
    let plain: Vec<u8> = segments_below(&env.path("media/disk"))
        .iter()
        .flat_map(|p| fs::read(p).unwrap())
        .collect();
    assert!(contains(&plain, MARKER), "the check cannot fail");
    let vault = segments_below(&env.path("media/vault"));
    assert!(vault.len() >= 2, "expected several volumes: {vault:?}");
    for seg in &vault {
        assert!(!contains(&fs::read(seg).unwrap(), MARKER), "{seg:?}");
    }
    let label = fs::read_to_string(env.path("media/vault/vault-7y/vault-7y-00001/label.json"))
        .expect("label");
    assert!(label.contains("\"keyId\""), "{label}");
    assert!(!label.contains(KEY));

    let rst = env.yaml(
        "r.yaml",
        &restore("r", "ledger", "Duplicate", &env.path("out")),
    );
    env.apply(&[&rst])
        .expect_ok("restore from the encrypted copy");
    let st = restore_status(&env, "r");
    assert_eq!(st["restoredFrom"]["trail"], "vault-7y", "{st}");
    assert_same_tree(&src, &env.path("out"));
    let r = env.run(&["verify"]).expect_ok("verify with the key");
    assert!(r.stdout.contains("ok"), "{r}");
    for kind in ["mediaclasses", "catalogentries", "restores"] {
        let text = serde_json::to_string(&env.get(kind, None)).unwrap();
        assert!(!text.contains(KEY), "{kind} shows the key");
    }
}

#[test]
fn a_wrong_key_is_named_and_the_copy_stays_valid() {
    let env = Env::new();
    let src = copied(&env);
    let wrong = env.yaml("wrong.yaml", &key_secret(OTHER_KEY));
    let rst = env.yaml(
        "r.yaml",
        &restore("dup", "ledger", "Duplicate", &env.path("out-dup")),
    );
    let r = env
        .apply(&[&wrong, &rst])
        .expect_fail("restore with a wrong key");
    let st = restore_status(&env, "dup");
    assert_eq!(st["phase"], "Failed", "{st}");
    let reason = st["reason"].as_str().unwrap();
    for w in [
        "cannot decrypt",
        "media class vault",
        "volume vault-7y-00001",
        "offset",
        "work item ledger",
        "encrypted with key",
    ] {
        assert!(reason.contains(w), "reason lacks {w:?}: {st}");
    }
    assert!(
        !r.all().contains(OTHER_KEY) && !r.all().contains(KEY),
        "{r}"
    );

    // Auto passes over the copy it cannot decrypt, restores the original, and the copy is
    // not called damaged.
    let auto = env.yaml(
        "auto.yaml",
        &restore("auto", "ledger", "Auto", &env.path("out-auto")),
    );
    env.apply(&[&wrong, &auto]).expect_ok("restore falls back");
    let st = restore_status(&env, "auto");
    assert_eq!(st["restoredFrom"]["role"], "Original", "{st}");
    let reason = st["reason"].as_str().unwrap();
    assert!(
        reason.contains("duplicate on vault-7y not readable"),
        "{st}"
    );
    assert_same_tree(&src, &env.path("out-auto"));

    let r = env.run(&["verify"]).expect_fail("verify with a wrong key");
    assert!(r.stdout.contains("NOT READ"), "{r}");
    assert_eq!(env.entry_names(Some("vault-7y"), "Valid").len(), 1);
    assert!(env.entry_names(None, "Missing").is_empty());

    // With the right key back, the copy reads again.
    let right = env.yaml("right.yaml", &key_secret(KEY));
    env.apply(&[&right]).expect_ok("key restored");
    env.run(&["verify"]).expect_ok("verify with the right key");
}

/// Where a tamper hits the second block (the first data block) of a segment.
enum Tamper {
    /// A ciphertext byte.
    Payload,
    /// The block index in the header (which the reader does not otherwise check).
    BlockIndex,
}

/// Changes the first data block of `seg` and recomputes its CRC, as an attacker would, so
/// only authentication can notice.
fn tamper(seg: &Path, how: Tamper) {
    let mut b = fs::read(seg).unwrap();
    let u32_at = |b: &[u8], i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
    let start = HEADER_LEN + u32_at(&b, 20) as usize; // after the label block
    let len = HEADER_LEN + u32_at(&b, start + 20) as usize;
    assert_eq!(b[start + 5], 2, "not a data block");
    match how {
        Tamper::Payload => b[start + HEADER_LEN + 100] ^= 0x01,
        Tamper::BlockIndex => b[start + 24] ^= 0x01,
    }
    let block = &mut b[start..start + len];
    let mut crc = crc32c::crc32c(&block[..48]);
    crc = crc32c::crc32c_append(crc, &[0; 4]);
    crc = crc32c::crc32c_append(crc, &block[52..]);
    block[48..52].copy_from_slice(&crc.to_le_bytes());
    fs::write(seg, b).unwrap();
}

fn tampered_block_is_refused(how: Tamper) {
    let env = Env::new();
    let src = copied(&env);
    let seg = env.path("media/vault/vault-7y/vault-7y-00001/00000.seg");
    tamper(&seg, how);
    let r = env.run(&["verify"]).expect_fail("verify a tampered copy");
    for w in [
        "DAMAGED",
        "vault-7y-00001",
        "offset",
        "authentication failed",
    ] {
        assert!(r.stdout.contains(w), "verify lacks {w:?}: {r}");
    }
    assert_eq!(env.entry_names(Some("vault-7y"), "Missing").len(), 1);

    // The next apply makes one repair copy, and the restore reads it.
    let rst = env.yaml("r.yaml", &restore("r", "ledger", "Auto", &env.path("out")));
    let r = env.apply(&[&rst]).expect_ok("repair, then restore");
    assert!(r.stdout.contains("repaired by a new copy"), "{r}");
    assert_eq!(env.entry_names(Some("vault-7y"), "Valid").len(), 1);
    assert_eq!(
        restore_status(&env, "r")["restoredFrom"]["role"],
        "Duplicate"
    );
    assert_same_tree(&src, &env.path("out"));
}

#[test]
fn tampered_ciphertext_is_refused() {
    tampered_block_is_refused(Tamper::Payload);
}

#[test]
fn tampered_control_data_is_refused() {
    tampered_block_is_refused(Tamper::BlockIndex);
}

#[test]
fn bad_keys_and_mixed_media_copies_are_refused() {
    let env = Env::new();
    let src = env.path("data/ledger");
    make_sample_tree(&src);
    let classes = trails(&env, &src, "64Mi");
    // No Secret at all: refused at validation, naming the field.
    let f = env.yaml("no-secret.yaml", &classes);
    let r = env.apply(&[&f]).expect_fail("missing key Secret");
    assert!(
        r.stderr.contains("spec.encryption.keySecretRef.name"),
        "{r}"
    );
    // A Secret whose value is not a key: the class is reported, the value is not.
    let short = "c0ffee".repeat(5);
    let f = env.yaml(
        "short.yaml",
        &format!("{}---\n{classes}", key_secret(&short)),
    );
    let r = env.apply(&[&f]);
    assert!(r.all().contains("mediaclass/vault"), "{r}");
    assert!(
        r.all()
            .contains("MIMEO_ENCRYPTION_KEY must be 32 random bytes"),
        "{r}"
    );
    assert!(!r.all().contains(&short), "{r}");
    // A raw media copy between a plain and an encrypted class would write plaintext there.
    let media_mode =
        duplication_policy("raw", "daily", "vault-7y").replace("spec:\n", "spec:\n  mode: Media\n");
    let f = env.yaml(
        "raw.yaml",
        &format!("{}---\n{classes}---\n{media_mode}", key_secret(KEY)),
    );
    let r = env.apply(&[&f]).expect_fail("Media mode across encryption");
    assert!(r.stderr.contains("spec.mode"), "{r}");
    assert!(r.stderr.contains("spec.encryption"), "{r}");
}
