//! End-to-end round trips through the `mimeo` binary in local mode: real directory trees are
//! backed up, logically duplicated onto other media (filesystem and a real S3 server), restored,
//! and compared byte for byte with their sources; the catalog's layout claims are checked too.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde_json::Value;

use common::cli::s3_media;
use common::s3server::S3Server;
use common::tree::{
    assert_same_tree, copy_system_tree, make_sample_tree, pseudo_random_bytes, tree_stats,
};

/// A big system directory with thousands of files: /usr/share/doc, else another one.
fn system_tree() -> PathBuf {
    [
        "/usr/share/doc",
        "/usr/share/man",
        "/usr/share/locale",
        "/usr/lib",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.is_dir())
    .expect("a big system directory to copy")
}

/// One scratch directory with a state directory; runs the binary against it.
struct Env {
    dir: tempfile::TempDir,
    applies: std::cell::Cell<usize>,
}

impl Env {
    fn new() -> Env {
        Env {
            dir: tempfile::tempdir().expect("temp dir"),
            applies: std::cell::Cell::new(0),
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn p(&self, rel: &str) -> String {
        self.path(rel).display().to_string()
    }

    fn mimeo(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mimeo"));
        cmd.arg("local").arg("--state").arg(self.path("state"));
        cmd
    }

    /// Applies `yaml` and panics (with the output) unless every resource and task succeeded.
    fn apply(&self, yaml: &str) -> String {
        let n = self.applies.get() + 1;
        self.applies.set(n);
        let file = self.path(&format!("apply-{n}.yaml"));
        fs::write(&file, yaml).unwrap();
        let started = Instant::now();
        let out = self
            .mimeo()
            .args(["apply", "-f"])
            .arg(&file)
            .output()
            .expect("mimeo runs");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "apply #{n} failed ({}):\n--- yaml\n{yaml}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
            out.status
        );
        eprintln!(
            "apply #{n} took {:.1}s:\n{stdout}",
            started.elapsed().as_secs_f64()
        );
        stdout
    }

    /// `get KIND -o json`.
    fn get(&self, kind: &str) -> Vec<Value> {
        let out = self
            .mimeo()
            .args(["get", kind, "-o", "json"])
            .output()
            .expect("mimeo runs");
        assert!(
            out.status.success(),
            "get {kind} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let list: Value = serde_json::from_slice(&out.stdout).expect("get prints JSON");
        list["items"].as_array().expect("get prints a List").clone()
    }

    fn get_one(&self, kind: &str, name: &str) -> Value {
        self.get(kind)
            .into_iter()
            .find(|v| v["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("{kind}/{name} not found"))
    }

    /// Specs of the catalog entries, each with its `state` copied in.
    fn entries(&self) -> Vec<Value> {
        self.get("catalogentries")
            .into_iter()
            .map(|v| {
                let mut spec = v["spec"].clone();
                spec["state"] = v["status"]["state"].clone();
                spec
            })
            .collect()
    }
}

fn s(v: &Value) -> &str {
    v.as_str()
        .unwrap_or_else(|| panic!("expected a string, got {v}"))
}

fn fs_media(name: &str, path: &str, capacity: &str, block: &str) -> String {
    format!(
        "apiVersion: mimeo.dev/v1alpha1
kind: MediaClass
metadata: {{name: {name}}}
spec:
  backend: {{filesystem: {{path: {path}}}}}
  volumeCapacity: {capacity}
  blockSize: {block}
---
"
    )
}

/// A BackupTrail over `items` (name, source path).
fn backup_trail(
    name: &str,
    media: &str,
    streams: u32,
    incremental: bool,
    run_now: Option<&str>,
    items: &[(String, String)],
) -> String {
    let annotations = run_now
        .map(|t| format!("\n  annotations: {{mimeo.dev/run-now: \"{t}\"}}"))
        .unwrap_or_default();
    let mut y = format!(
        "apiVersion: mimeo.dev/v1alpha1
kind: BackupTrail
metadata:
  name: {name}{annotations}
spec:
  mediaClassName: {media}
  retention: 30d
  streams: {streams}
  incremental: {incremental}
  workItems:
"
    );
    for (w, path) in items {
        y.push_str(&format!("    - {{name: {w}, source: {{path: {path}}}}}\n"));
    }
    y.push_str("---\n");
    y
}

fn dup_trail(name: &str, media: &str, layout: &str) -> String {
    format!(
        "apiVersion: mimeo.dev/v1alpha1
kind: DuplicationTrail
metadata: {{name: {name}}}
spec:
  mediaClassName: {media}
  retention: 1y
  layout: {layout}
---
"
    )
}

fn policy(name: &str, sources: &[&str], targets: &[&str], extra: &str) -> String {
    format!(
        "apiVersion: mimeo.dev/v1alpha1
kind: DuplicationPolicy
metadata: {{name: {name}}}
spec:
  sourceTrails: [{}]
  targets: [{}]
{extra}---
",
        sources.join(", "),
        targets.join(", ")
    )
}

/// A Restore of the latest instance of `work_item`; `source` is YAML (`Auto`, `{trail: x}`).
fn restore(name: &str, work_item: &str, source: &str, target: &str) -> String {
    format!(
        "apiVersion: mimeo.dev/v1alpha1
kind: Restore
metadata: {{name: {name}}}
spec:
  workItem: {work_item}
  source: {source}
  target: {{path: {target}}}
---
"
    )
}

/// Copies `src` into `n` work item directories `root/item-<i>`, spreading its top-level entries
/// round robin. Returns (work item name, path) pairs.
fn split_tree(src: &Path, root: &Path, n: usize) -> Vec<(String, String)> {
    let whole = root.join("whole");
    fs::create_dir_all(root).unwrap();
    copy_system_tree(src, &whole);
    let mut names: Vec<_> = fs::read_dir(&whole)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    let items: Vec<(String, PathBuf)> = (0..n)
        .map(|i| (format!("item-{i}"), root.join(format!("item-{i}"))))
        .collect();
    for (_, dir) in &items {
        fs::create_dir_all(dir).unwrap();
    }
    for (i, name) in names.iter().enumerate() {
        fs::rename(whole.join(name), items[i % n].1.join(name)).unwrap();
    }
    fs::remove_dir(&whole).unwrap();
    items
        .into_iter()
        .map(|(w, p)| (w, p.display().to_string()))
        .collect()
}

/// Removes regular files larger than `max` below `root` (to keep S3 tests quick).
fn drop_big_files(root: &Path, max: u64) {
    for entry in fs::read_dir(root).unwrap() {
        let path = entry.unwrap().path();
        let meta = fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            drop_big_files(&path, max);
        } else if meta.is_file() && meta.len() > max {
            fs::remove_file(&path).unwrap();
        }
    }
}

/// A small tree of pseudo-random files, different for every `seed`.
fn small_tree(root: &Path, seed: u64) {
    for i in 0..6u64 {
        let dir = root.join(format!("dir-{}", i % 3));
        fs::create_dir_all(&dir).unwrap();
        let len = 1000 + ((seed * 7919 + i * 104_729) % 300_000) as usize;
        fs::write(
            dir.join(format!("file-{i}.bin")),
            pseudo_random_bytes(len, seed * 100 + i + 1),
        )
        .unwrap();
    }
}

fn restores_yaml(items: &[(String, String)], env: &Env, prefix: &str) -> String {
    items
        .iter()
        .map(|(w, _)| {
            restore(
                &format!("{prefix}-{w}"),
                w,
                "Auto",
                &env.p(&format!("restored/{prefix}/{w}")),
            )
        })
        .collect()
}

/// Checks each restore of `items` succeeded from a Duplicate on `trail` and matches its source.
fn check_restores(env: &Env, items: &[(String, String)], prefix: &str, trail: &str) {
    for (w, src) in items {
        let r = env.get_one("restores", &format!("{prefix}-{w}"));
        assert_eq!(r["status"]["phase"], "Succeeded", "restore of {w}: {r:#}");
        let from = &r["status"]["restoredFrom"];
        assert_eq!(from["role"], "Duplicate", "restore of {w}: {r:#}");
        assert_eq!(from["trail"], trail, "restore of {w}: {r:#}");
        assert_same_tree(Path::new(src), &env.path(&format!("restored/{prefix}/{w}")));
    }
}

/// Every Original on `backup` has exactly one Valid Duplicate on `dup` with the same digest and
/// size; returns the number of instances.
fn check_duplicates(entries: &[Value], backup: &str, dup: &str) -> usize {
    let originals: Vec<&Value> = entries
        .iter()
        .filter(|e| e["trail"] == backup && e["role"] == "Original")
        .collect();
    assert!(!originals.is_empty(), "no originals on {backup}");
    for o in &originals {
        assert_eq!(o["state"], "Valid", "{o:#}");
        let copies: Vec<&Value> = entries
            .iter()
            .filter(|e| e["trail"] == dup && e["instanceId"] == o["instanceId"])
            .collect();
        assert_eq!(
            copies.len(),
            1,
            "instance {} has {} copies on {dup}",
            o["instanceId"],
            copies.len()
        );
        let c = copies[0];
        assert_eq!(c["role"], "Duplicate", "{c:#}");
        assert_eq!(c["state"], "Valid", "{c:#}");
        assert_eq!(c["digest"], o["digest"], "copy digest differs: {c:#}");
        assert_eq!(c["bytes"], o["bytes"], "copy size differs: {c:#}");
        assert_eq!(c["workItem"], o["workItem"]);
    }
    originals.len()
}

fn extents(e: &Value) -> &Vec<Value> {
    e["extents"].as_array().expect("extents is a list")
}

/// Extents of all entries of `trail` must not overlap on a volume (segment).
fn check_no_overlap(entries: &[Value], trail: &str) {
    // (volume, segment) → [(start, end, instance)]
    type Spans = Vec<(u64, u64, String)>;
    let mut by_volume: BTreeMap<(String, u64), Spans> = BTreeMap::new();
    for e in entries.iter().filter(|e| e["trail"] == trail) {
        for x in extents(e) {
            let (off, len) = (x["offset"].as_u64().unwrap(), x["length"].as_u64().unwrap());
            assert!(len > 0, "empty extent in {e:#}");
            by_volume
                .entry((
                    s(&x["volume"]).to_owned(),
                    x["segment"].as_u64().unwrap_or(0),
                ))
                .or_default()
                .push((off, off + len, s(&e["instanceId"]).to_owned()));
        }
    }
    for (vol, mut xs) in by_volume {
        xs.sort();
        for w in xs.windows(2) {
            assert!(
                w[0].1 <= w[1].0,
                "extents overlap on {vol:?}: {:?} and {:?}",
                w[0],
                w[1]
            );
        }
    }
}

fn trail_volumes(trail: &Value) -> usize {
    trail["status"]["volumes"].as_array().map_or(0, |v| v.len())
}

#[test]
fn filesystem_round_trip_of_a_real_tree() {
    let started = Instant::now();
    let env = Env::new();
    let items = split_tree(&system_tree(), &env.path("src"), 4);
    make_sample_tree(&Path::new(&items[0].1).join("zz-sample"));
    make_sample_tree(&Path::new(&items[3].1).join("zz-sample"));
    let stats = tree_stats(&env.path("src"));
    assert!(stats.0 > 1000, "source tree too small: {stats:?}");

    let mut yaml = fs_media("disk", &env.p("media/disk"), "16Mi", "64Ki");
    yaml += &fs_media("vault", &env.p("media/vault"), "256Mi", "1Mi");
    yaml += &backup_trail("nightly", "disk", 4, false, None, &items);
    yaml += &dup_trail("vault-seq", "vault", "Sequential");
    yaml += &policy("to-vault", &["nightly"], &["vault-seq"], "");
    env.apply(&yaml);

    let bt = env.get_one("backuptrails", "nightly");
    assert!(
        trail_volumes(&bt) > 1,
        "expected several volumes: {:#}",
        bt["status"]
    );
    let entries = env.entries();
    assert_eq!(check_duplicates(&entries, "nightly", "vault-seq"), 4);
    check_no_overlap(&entries, "nightly");
    check_no_overlap(&entries, "vault-seq");

    env.apply(&restores_yaml(&items, &env, "fs"));
    check_restores(&env, &items, "fs", "vault-seq");
    eprintln!(
        "filesystem round trip of {stats:?} in {:.1}s",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn sequential_duplicate_is_contiguous_and_original_interleaved() {
    let env = Env::new();
    let items: Vec<(String, String)> = (0..4)
        .map(|i| {
            let dir = env.path(&format!("src/w{i}"));
            make_sample_tree(&dir);
            small_tree(&dir.join("extra"), i + 1);
            (format!("w{i}"), dir.display().to_string())
        })
        .collect();
    let mut yaml = fs_media("disk", &env.p("media/disk"), "16Mi", "64Ki");
    yaml += &fs_media("small", &env.p("media/small"), "4Mi", "256Ki");
    yaml += &backup_trail("nightly", "disk", 4, false, None, &items);
    yaml += &dup_trail("seq", "small", "Sequential");
    yaml += &policy("to-seq", &["nightly"], &["seq"], "");
    yaml += &dup_trail("inter", "small", "Interleaved");
    yaml += &policy("to-inter", &["nightly"], &["inter"], "  parallelism: 4\n");
    env.apply(&yaml);

    let entries = env.entries();
    assert_eq!(check_duplicates(&entries, "nightly", "seq"), 4);
    assert_eq!(check_duplicates(&entries, "nightly", "inter"), 4);
    check_no_overlap(&entries, "nightly");
    check_no_overlap(&entries, "seq");
    check_no_overlap(&entries, "inter");

    let mut spanning = 0;
    for e in entries
        .iter()
        .filter(|e| e["trail"] == "seq" && e["role"] == "Duplicate")
    {
        let mut per_volume: BTreeMap<&str, usize> = BTreeMap::new();
        for x in extents(e) {
            *per_volume.entry(s(&x["volume"])).or_default() += 1;
        }
        assert!(!per_volume.is_empty(), "duplicate without extents: {e:#}");
        assert!(
            per_volume.values().all(|&n| n <= 1),
            "Sequential copy of {} is fragmented: {per_volume:?}",
            e["workItem"]
        );
        if per_volume.len() > 1 {
            spanning += 1;
        }
    }
    assert!(
        spanning > 0,
        "no copy spans volumes on 4Mi volumes; the check above proves little"
    );
    let seq = env.get_one("duplicationtrails", "seq");
    assert!(trail_volumes(&seq) > 1, "{:#}", seq["status"]);

    let interleaved: Vec<&Value> = entries
        .iter()
        .filter(|e| e["trail"] == "nightly" && e["role"] == "Original")
        .filter(|e| {
            let volumes: BTreeSet<&str> = extents(e).iter().map(|x| s(&x["volume"])).collect();
            extents(e).len() > volumes.len()
        })
        .collect();
    assert!(
        !interleaved.is_empty(),
        "4 streams on one trail should interleave, yet every original is contiguous per volume"
    );

    // The interleaved original and the contiguous copy restore the same tree.
    let w = s(&interleaved[0]["workItem"]).to_owned();
    let src = items.iter().find(|(n, _)| *n == w).unwrap().1.clone();
    let yaml = restore("orig", &w, "Original", &env.p("restored/orig"))
        + &restore("seq", &w, "{trail: seq}", &env.p("restored/seq"))
        + &restore("inter", &w, "{trail: inter}", &env.p("restored/inter"))
        + &restore("auto", &w, "Auto", &env.p("restored/auto"));
    env.apply(&yaml);
    for (name, role, trail) in [
        ("orig", "Original", "nightly"),
        ("seq", "Duplicate", "seq"),
        ("inter", "Duplicate", "inter"),
    ] {
        let r = env.get_one("restores", name);
        assert_eq!(r["status"]["phase"], "Succeeded", "{r:#}");
        assert_eq!(r["status"]["restoredFrom"]["role"], role, "{r:#}");
        assert_eq!(r["status"]["restoredFrom"]["trail"], trail, "{r:#}");
        assert_same_tree(Path::new(&src), &env.path(&format!("restored/{name}")));
    }
    // Auto reads the least fragmented duplicate.
    let r = env.get_one("restores", "auto");
    assert_eq!(r["status"]["phase"], "Succeeded", "{r:#}");
    assert_eq!(r["status"]["restoredFrom"]["role"], "Duplicate", "{r:#}");
    let fewest = entries
        .iter()
        .filter(|e| e["instanceId"] == interleaved[0]["instanceId"] && e["role"] == "Duplicate")
        .map(|e| extents(e).len())
        .min()
        .unwrap();
    let chosen = entries
        .iter()
        .find(|e| {
            e["instanceId"] == interleaved[0]["instanceId"]
                && e["trail"] == r["status"]["restoredFrom"]["trail"]
        })
        .unwrap();
    assert_eq!(extents(chosen).len(), fewest, "Auto chose {chosen:#}");
    assert_same_tree(Path::new(&src), &env.path("restored/auto"));
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_round_trip() {
    let started = Instant::now();
    let server = S3Server::start();
    server.create_bucket("mimeo-primary");
    server.create_bucket("mimeo-vault");
    let env = Env::new();
    let items = split_tree(&system_tree(), &env.path("src"), 2);
    for (_, dir) in &items {
        drop_big_files(Path::new(dir), 256 << 10);
    }
    make_sample_tree(&Path::new(&items[1].1).join("zz-sample"));
    let stats = tree_stats(&env.path("src"));
    assert!(stats.0 > 1000, "source tree too small: {stats:?}");

    let mut yaml = server.secret_yaml();
    yaml += &s3_media(
        &server.endpoint,
        "s3-disk",
        "mimeo-primary",
        "backups",
        "16Mi",
        "64Ki",
    );
    yaml += &s3_media(
        &server.endpoint,
        "s3-vault",
        "mimeo-vault",
        "copies",
        "64Mi",
        "1Mi",
    );
    yaml += &backup_trail("nightly", "s3-disk", 4, false, None, &items);
    yaml += &dup_trail("vault-seq", "s3-vault", "Sequential");
    yaml += &policy("to-vault", &["nightly"], &["vault-seq"], "");
    env.apply(&yaml);

    let bt = env.get_one("backuptrails", "nightly");
    assert!(trail_volumes(&bt) > 1, "{:#}", bt["status"]);
    let entries = env.entries();
    assert_eq!(check_duplicates(&entries, "nightly", "vault-seq"), 2);
    check_no_overlap(&entries, "nightly");
    check_no_overlap(&entries, "vault-seq");
    // The data really is in the buckets, under the prefixes.
    for (bucket, prefix) in [("mimeo-primary", "backups"), ("mimeo-vault", "copies")] {
        let listed = server
            .client()
            .list_objects_v2()
            .bucket(bucket)
            .send()
            .await
            .unwrap();
        let keys: Vec<&str> = listed.contents().iter().filter_map(|o| o.key()).collect();
        assert!(!keys.is_empty(), "bucket {bucket} is empty");
        assert!(
            keys.iter().all(|k| k.starts_with(&format!("{prefix}/"))),
            "keys outside {prefix}/ in {bucket}: {keys:?}"
        );
    }

    env.apply(&restores_yaml(&items, &env, "s3"));
    check_restores(&env, &items, "s3", "vault-seq");
    eprintln!(
        "S3 round trip of {stats:?} in {:.1}s",
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn mixed_media() {
    let server = S3Server::start();
    server.create_bucket("mimeo-offsite");
    let env = Env::new();
    let mut items: Vec<(String, String)> = Vec::new();
    for i in 0..3u64 {
        let dir = env.path(&format!("src/m{i}"));
        make_sample_tree(&dir);
        small_tree(&dir.join("extra"), 10 + i);
        items.push((format!("m{i}"), dir.display().to_string()));
    }
    let mut yaml = server.secret_yaml();
    yaml += &fs_media("disk", &env.p("media/disk"), "8Mi", "64Ki");
    yaml += &s3_media(
        &server.endpoint,
        "offsite",
        "mimeo-offsite",
        "",
        "32Mi",
        "512Ki",
    );
    yaml += &backup_trail("nightly", "disk", 2, false, None, &items);
    yaml += &dup_trail("offsite-seq", "offsite", "Sequential");
    yaml += &policy("to-offsite", &["nightly"], &["offsite-seq"], "");
    env.apply(&yaml);

    let entries = env.entries();
    assert_eq!(check_duplicates(&entries, "nightly", "offsite-seq"), 3);
    let dt = env.get_one("duplicationtrails", "offsite-seq");
    assert!(trail_volumes(&dt) >= 1, "{:#}", dt["status"]);

    env.apply(&restores_yaml(&items, &env, "mixed"));
    check_restores(&env, &items, "mixed", "offsite-seq");

    // The offsite media are away: Auto falls back to the original, and says so.
    let away = s3_media(
        &server.endpoint,
        "offsite",
        "mimeo-offsite",
        "",
        "32Mi",
        "512Ki",
    )
    .replace(
        "blockSize: 512Ki\n",
        "blockSize: 512Ki\n  available: false\n",
    );
    env.apply(&(away + &restore("away", "m1", "Auto", &env.p("restored/away"))));
    let r = env.get_one("restores", "away");
    assert_eq!(r["status"]["phase"], "Succeeded", "{r:#}");
    assert_eq!(r["status"]["restoredFrom"]["role"], "Original", "{r:#}");
    assert_eq!(r["status"]["restoredFrom"]["trail"], "nightly", "{r:#}");
    assert!(
        s(&r["status"]["reason"]).contains("unavailable"),
        "the reason names the unavailable duplicate: {r:#}"
    );
    assert_same_tree(Path::new(&items[1].1), &env.path("restored/away"));

    // Asking for the duplicate explicitly fails with a reason instead of reading the original.
    let out = {
        let file = env.path("dup-only.yaml");
        fs::write(
            &file,
            restore("dup-only", "m2", "Duplicate", &env.p("restored/dup-only")),
        )
        .unwrap();
        env.mimeo()
            .args(["apply", "-f"])
            .arg(&file)
            .output()
            .unwrap()
    };
    assert!(
        !out.status.success(),
        "a restore with no usable copy must fail"
    );
    let r = env.get_one("restores", "dup-only");
    assert_eq!(r["status"]["phase"], "Failed", "{r:#}");
    assert!(!s(&r["status"]["reason"]).is_empty(), "{r:#}");
    assert!(!env.path("restored/dup-only/README").exists());
}

#[test]
fn incremental_chain_restores_across_trails() {
    let env = Env::new();
    let src = env.path("src/home");
    make_sample_tree(&src);
    small_tree(&src.join("work"), 3);
    let items = vec![("home".to_owned(), src.display().to_string())];

    let mut base = fs_media("disk", &env.p("media/disk"), "8Mi", "64Ki");
    base += &fs_media("vault", &env.p("media/vault"), "64Mi", "1Mi");
    base += &dup_trail("vault-seq", "vault", "Sequential");
    let yaml = base.clone()
        + &backup_trail("nightly", "disk", 2, true, None, &items)
        + &policy("to-vault", &["nightly"], &["vault-seq"], "");
    env.apply(&yaml);
    let first = env.entries();
    assert_eq!(check_duplicates(&first, "nightly", "vault-seq"), 1);
    let full = first
        .iter()
        .find(|e| e["role"] == "Original")
        .unwrap()
        .clone();

    // Change the source: modify (other size), delete, add.
    fs::write(src.join("etc/app.conf"), b"level = 4\nverbose = true\n").unwrap();
    fs::remove_file(src.join("data/random.bin")).unwrap();
    fs::write(
        src.join("data/new-file.txt"),
        b"added after the full backup\n",
    )
    .unwrap();
    fs::create_dir_all(src.join("new-dir/sub")).unwrap();
    fs::write(
        src.join("new-dir/sub/deep.bin"),
        pseudo_random_bytes(70_000, 9),
    )
    .unwrap();
    // Hard links: the linked pair changes (through one name); an unchanged file gets a new name.
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(src.join("links/original"))
        .unwrap();
    std::io::Write::write_all(&mut f, b"appended through one name\n").unwrap();
    drop(f);
    fs::hard_link(
        src.join("data/nested/deeper/leaf.txt"),
        src.join("links/leaf-second-name"),
    )
    .unwrap();
    // Harder changes: a whole directory goes, a file becomes a symlink, a mode changes alone.
    fs::remove_dir_all(src.join("bin")).unwrap();
    fs::remove_file(src.join("data/zero-length")).unwrap();
    std::os::unix::fs::symlink("nested/deeper/leaf.txt", src.join("data/zero-length")).unwrap();
    fs::set_permissions(
        src.join("README"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();

    // Backup 2 with the policy suspended, so only the full backup has a duplicate.
    let yaml = backup_trail("nightly", "disk", 2, true, Some("second"), &items)
        + &policy(
            "to-vault",
            &["nightly"],
            &["vault-seq"],
            "  suspend: true\n",
        );
    env.apply(&yaml);
    let second = env.entries();
    let originals: Vec<&Value> = second
        .iter()
        .filter(|e| e["trail"] == "nightly" && e["role"] == "Original")
        .collect();
    assert_eq!(originals.len(), 2, "run-now should add a second backup");
    let incr = originals
        .iter()
        .find(|e| e["instanceId"] != full["instanceId"])
        .unwrap();
    assert_eq!(
        incr["parent"], full["instanceId"],
        "the second backup is an incremental on the first: {incr:#}"
    );
    assert!(
        incr["bytes"].as_u64().unwrap() < full["bytes"].as_u64().unwrap() / 4,
        "the incremental should be much smaller than the full ({} vs {})",
        incr["bytes"],
        full["bytes"]
    );
    assert!(
        !second
            .iter()
            .any(|e| e["trail"] == "vault-seq" && e["instanceId"] == incr["instanceId"]),
        "a suspended policy copied the incremental"
    );

    env.apply(&restore(
        "latest",
        "home",
        "Auto",
        &env.p("restored/latest"),
    ));
    let r = env.get_one("restores", "latest");
    assert_eq!(r["status"]["phase"], "Succeeded", "{r:#}");
    let chain = r["status"]["chain"].as_array().expect("status.chain");
    let roles: Vec<&str> = chain.iter().map(|l| s(&l["role"])).collect();
    assert_eq!(roles, ["Duplicate", "Original"], "{r:#}");
    assert_eq!(chain[0]["trail"], "vault-seq");
    assert_eq!(chain[0]["instanceId"], full["instanceId"]);
    assert_eq!(chain[1]["trail"], "nightly");
    assert_eq!(chain[1]["instanceId"], incr["instanceId"]);
    assert!(!env.path("restored/latest/data/random.bin").exists());
    assert_same_tree(&src, &env.path("restored/latest"));

    // The full instance alone still restores the old tree (minus what changed).
    let yaml = format!(
        "apiVersion: mimeo.dev/v1alpha1
kind: Restore
metadata: {{name: first-by-id}}
spec:
  workItem: home
  instance: {}
  target: {{path: {}}}
",
        s(&full["instanceId"]),
        env.p("restored/first-by-id")
    );
    env.apply(&yaml);
    let r = env.get_one("restores", "first-by-id");
    assert_eq!(r["status"]["phase"], "Succeeded", "{r:#}");
    assert_eq!(r["status"]["chain"].as_array().map(Vec::len), Some(1));
    let old = env.path("restored/first-by-id");
    assert!(old.join("data/random.bin").is_file());
    assert!(!old.join("data/new-file.txt").exists());
    assert_eq!(
        fs::read(old.join("etc/app.conf")).unwrap(),
        b"level = 3\n",
        "the full instance holds the old content"
    );
}

#[test]
fn distribute_and_n_targets() {
    let env = Env::new();
    let items: Vec<(String, String)> = (0..4u64)
        .map(|i| {
            let dir = env.path(&format!("src/d{i}"));
            small_tree(&dir, 20 + i);
            (format!("d{i}"), dir.display().to_string())
        })
        .collect();
    let mut yaml = fs_media("disk", &env.p("media/disk"), "8Mi", "64Ki");
    yaml += &fs_media("other", &env.p("media/other"), "16Mi", "128Ki");
    yaml += &backup_trail("nightly", "disk", 2, false, None, &items);
    for t in ["both-a", "both-b", "spread-a", "spread-b"] {
        yaml += &dup_trail(t, "other", "Sequential");
    }
    yaml += &policy("both", &["nightly"], &["both-a", "both-b"], "");
    yaml += &policy(
        "spread",
        &["nightly"],
        &["spread-a", "spread-b"],
        "  distribute: true\n",
    );
    env.apply(&yaml);

    let entries = env.entries();
    assert_eq!(check_duplicates(&entries, "nightly", "both-a"), 4);
    assert_eq!(check_duplicates(&entries, "nightly", "both-b"), 4);
    let mut per_target: BTreeMap<&str, usize> = BTreeMap::new();
    for o in entries
        .iter()
        .filter(|e| e["trail"] == "nightly" && e["role"] == "Original")
    {
        let on: Vec<&str> = entries
            .iter()
            .filter(|e| e["instanceId"] == o["instanceId"] && e["role"] == "Duplicate")
            .map(|e| s(&e["trail"]))
            .filter(|t| t.starts_with("spread-"))
            .collect();
        assert_eq!(
            on.len(),
            1,
            "{} is on {on:?}; distribute puts it on exactly one target",
            o["workItem"]
        );
        *per_target.entry(on[0]).or_default() += 1;
    }
    assert_eq!(per_target.len(), 2, "both targets get some: {per_target:?}");
    for e in entries.iter().filter(|e| e["role"] == "Duplicate") {
        assert_eq!(e["state"], "Valid", "{e:#}");
    }

    // A second apply copies nothing more (everything is on its targets already).
    env.apply(&policy("both", &["nightly"], &["both-a", "both-b"], ""));
    assert_eq!(env.entries().len(), entries.len());

    // Restore an item from the spread target that holds it.
    let d = entries
        .iter()
        .find(|e| e["trail"] == "spread-b")
        .expect("something on spread-b");
    let w = s(&d["workItem"]).to_owned();
    env.apply(&restore(
        "from-b",
        &w,
        "{trail: spread-b}",
        &env.p("restored/from-b"),
    ));
    let r = env.get_one("restores", "from-b");
    assert_eq!(r["status"]["phase"], "Succeeded", "{r:#}");
    assert_eq!(r["status"]["restoredFrom"]["trail"], "spread-b", "{r:#}");
    let src = &items.iter().find(|(n, _)| *n == w).unwrap().1;
    assert_same_tree(Path::new(src), &env.path("restored/from-b"));
}

/// DESIGN.md: "if the duplicate is unavailable (media offline, ...) it falls back to the
/// original". Here the S3 server holding the duplicate is down while its MediaClass still says
/// `available: true`; the planner picks the duplicate anyway and the restore fails.
#[tokio::test(flavor = "multi_thread")]
async fn restore_falls_back_when_duplicate_media_are_offline() {
    let server = S3Server::start();
    server.create_bucket("mimeo-offsite");
    let env = Env::new();
    let dir = env.path("src/m0");
    make_sample_tree(&dir);
    let items = vec![("m0".to_owned(), dir.display().to_string())];
    let mut yaml = server.secret_yaml();
    yaml += &fs_media("disk", &env.p("media/disk"), "8Mi", "64Ki");
    yaml += &s3_media(
        &server.endpoint,
        "offsite",
        "mimeo-offsite",
        "",
        "32Mi",
        "512Ki",
    );
    yaml += &backup_trail("nightly", "disk", 1, false, None, &items);
    yaml += &dup_trail("offsite-seq", "offsite", "Sequential");
    yaml += &policy("to-offsite", &["nightly"], &["offsite-seq"], "");
    env.apply(&yaml);
    assert_eq!(
        check_duplicates(&env.entries(), "nightly", "offsite-seq"),
        1
    );

    drop(server);
    let file = env.path("offline.yaml");
    fs::write(
        &file,
        restore("offline", "m0", "Auto", &env.p("restored/offline")),
    )
    .unwrap();
    // The apply may report the unreachable trail; the restore itself must succeed.
    let _ = env
        .mimeo()
        .args(["apply", "-f"])
        .arg(&file)
        .output()
        .unwrap();
    let r = env.get_one("restores", "offline");
    assert_eq!(r["status"]["phase"], "Succeeded", "{r:#}");
    assert_eq!(r["status"]["restoredFrom"]["role"], "Original", "{r:#}");
    assert_same_tree(&dir, &env.path("restored/offline"));
}
