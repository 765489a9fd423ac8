//! Property test: any sequence of backups, duplications, expiries and restores keeps the
//! catalog consistent with the media. A model tracks what each backup instance holds; after
//! every step `verify` must pass (every Valid copy reads back and matches its digest), the
//! catalog must hold one Valid original per backup and at most one Valid copy per instance,
//! expired copies must be exactly those past their retention, restores must return the
//! model's content, and a catalog rebuilt from the media alone (`rescan`) must agree.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use proptest::prelude::*;

use common::cli::*;
use common::tree::assert_same_tree;

const ITEMS: [&str; 3] = ["alpha", "beta", "gamma"];

#[derive(Clone, Debug)]
enum Op {
    /// Changes some items (bitmask over ITEMS) and backs everything up.
    Backup { changed: u8, size_kib: u16 },
    /// Runs the duplication policy.
    Duplicate,
    /// Waits until the copies made so far are past the duplication trail's 3 s retention.
    Expire,
    /// Restores the newest instance of one item (from whatever copy Auto picks).
    Restore { item: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1u8..8, 1u16..600).prop_map(|(changed, size_kib)| Op::Backup { changed, size_kib }),
        2 => Just(Op::Duplicate),
        1 => Just(Op::Expire),
        2 => (0..ITEMS.len()).prop_map(|item| Op::Restore { item }),
    ]
}

/// The world of one sequence: sources, media, and the YAML that drives it.
struct World {
    env: Env,
    /// Backups applied so far (each a new run-now token).
    backups: usize,
    /// Content generation of each item (what its files were written from).
    generation: BTreeMap<&'static str, u64>,
    /// Restores done so far.
    restores: usize,
    /// When the last apply started: its expiry sweep ran after this.
    applied_at: chrono::DateTime<chrono::Utc>,
}

impl World {
    fn new() -> World {
        World {
            env: Env::new(),
            backups: 0,
            generation: ITEMS.iter().map(|i| (*i, 0)).collect(),
            restores: 0,
            applied_at: chrono::Utc::now(),
        }
    }

    fn source(&self, item: &str) -> std::path::PathBuf {
        self.env.path(&format!("data/{item}"))
    }

    /// Everything but the policy; the backup trail carries the current run-now token.
    fn base(&self) -> String {
        let items: Vec<(&str, std::path::PathBuf)> =
            ITEMS.iter().map(|i| (*i, self.source(i))).collect();
        let trail = backup_trail("nightly", "disk", 2, &items).replace(
            "  name: nightly\n",
            &format!(
                "  name: nightly\n  annotations: {{mimeo.dev/run-now: \"{}\"}}\n",
                self.backups
            ),
        );
        let copies =
            duplication_trail("copies", "copy", "3s", "Sequential") + "  maxExpiryPercent: 100\n";
        [
            media_class("disk", &self.env.path("media/disk"), "1Mi", "64Ki", true),
            media_class("copy", &self.env.path("media/copy"), "2Mi", "128Ki", true),
            trail,
            copies,
        ]
        .join("---\n")
    }

    fn apply(&mut self, name: &str, yaml: &str) {
        let file = self.env.yaml(name, yaml);
        self.applied_at = chrono::Utc::now();
        self.env.apply(&[&file]).expect_ok(name);
    }

    fn step(&mut self, op: &Op) {
        match op {
            Op::Backup { changed, size_kib } => {
                for (i, item) in ITEMS.iter().enumerate() {
                    if changed & (1 << i) != 0 {
                        let g = self.generation[item] + 1;
                        self.generation.insert(item, g);
                        let dir = self.source(item);
                        let _ = std::fs::remove_dir_all(&dir);
                        random_file(
                            &dir.join("data.bin"),
                            *size_kib as usize * 1024 + i,
                            g * 10 + i as u64,
                        );
                        random_file(&dir.join("sub/note.txt"), 100 + g as usize, g);
                    }
                }
                self.backups += 1;
                let base = self.base();
                self.apply("base.yaml", &base);
            }
            Op::Duplicate => {
                let policy = duplication_policy("copy-all", "nightly", "copies");
                let yaml = format!("{}---\n{policy}", self.base());
                self.apply("dup.yaml", &yaml);
            }
            Op::Expire => {
                std::thread::sleep(Duration::from_millis(3100));
                let base = self.base();
                self.apply("base.yaml", &base);
            }
            Op::Restore { item } => {
                let item = ITEMS[*item];
                self.restores += 1;
                let out = self.env.path(&format!("out/{}", self.restores));
                let name = format!("r{}", self.restores);
                let yaml = restore(&name, item, "Auto", &out);
                self.apply(&format!("{name}.yaml"), &yaml);
                let r = self.env.get_one("restores", &name);
                assert_eq!(r["status"]["phase"], "Succeeded", "{r:#}");
                assert_same_tree(&self.source(item), &out);
            }
        }
    }

    /// (trail, role, instance) -> state, for every catalog entry.
    fn catalog(&self) -> BTreeMap<(String, String, String), String> {
        self.env
            .entries()
            .iter()
            .map(|e| {
                let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
                (
                    (
                        s(&e["spec"]["trail"]),
                        s(&e["spec"]["role"]),
                        s(&e["spec"]["instanceId"]),
                    ),
                    s(&e["status"]["state"]),
                )
            })
            .collect()
    }

    fn check(&self, ops: &[Op]) {
        self.env.run(&["verify"]).expect_ok("verify");
        let catalog = self.catalog();
        let valid = |trail: &str| {
            catalog
                .iter()
                .filter(|((t, _, _), s)| t == trail && *s == "Valid")
                .count()
        };
        // One Valid original per item per backup run.
        assert_eq!(
            valid("nightly"),
            ITEMS.len() * self.backups,
            "{ops:?}\n{catalog:#?}"
        );
        // Nothing is Missing, every copy has its original.
        for ((trail, role, instance), state) in &catalog {
            assert_ne!(state, "Missing", "{ops:?}: {trail}/{instance}");
            if trail == "copies" {
                assert_eq!(role, "Duplicate");
                assert!(
                    catalog.contains_key(&("nightly".into(), "Original".into(), instance.clone())),
                    "{ops:?}: copy of an unknown instance {instance}"
                );
            }
        }
        // Expiry: the last apply's sweep expired every copy whose retention had passed when it
        // started, and only copies past their retention are Expired.
        let now = chrono::Utc::now();
        for e in self.env.entries() {
            let expires: chrono::DateTime<chrono::Utc> =
                e["spec"]["expiresAt"].as_str().unwrap().parse().unwrap();
            let name = &e["metadata"]["name"];
            match e["status"]["state"].as_str().unwrap() {
                "Expired" => assert!(expires <= now, "{ops:?}: {name} expired early"),
                "Valid" => assert!(
                    expires > self.applied_at,
                    "{ops:?}: {name} is past its retention ({expires}) and still Valid"
                ),
                _ => {}
            }
        }
        // A catalog rebuilt from the media alone agrees on what is Valid.
        let rebuilt = Env {
            tmp: tempfile::tempdir().unwrap(),
        };
        let state = rebuilt.state();
        copy_dir(
            &self.env.state().join("resources"),
            &state.join("resources"),
        );
        rebuilt.run(&["rescan"]).expect_ok("rescan");
        let again = rebuilt
            .entries()
            .iter()
            .filter(|e| e["status"]["state"] == "Valid")
            .map(|e| {
                (
                    e["spec"]["trail"].as_str().unwrap().to_owned(),
                    e["spec"]["instanceId"].as_str().unwrap().to_owned(),
                )
            })
            .collect::<std::collections::BTreeSet<_>>();
        let mine = catalog
            .iter()
            .filter(|(_, s)| *s == "Valid")
            .map(|((t, _, i), _)| (t.clone(), i.clone()))
            .collect::<std::collections::BTreeSet<_>>();
        // Originals (30 d) agree exactly; a copy may pass its 3 s retention between the two.
        let on = |set: &std::collections::BTreeSet<(String, String)>, trail: &str| {
            set.iter()
                .filter(|(t, _)| t == trail)
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(
            on(&again, "nightly"),
            on(&mine, "nightly"),
            "{ops:?}: rescan disagrees"
        );
        assert!(
            on(&again, "copies").iter().all(|c| mine.contains(c)),
            "{ops:?}: rescan found copies the catalog does not hold Valid: {again:?} / {mine:?}"
        );
    }
}

fn copy_dir(from: &Path, to: &Path) {
    for f in files_below(from) {
        let dest = to.join(f.strip_prefix(from).unwrap());
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(&f, &dest).unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, max_shrink_iters: 20, ..ProptestConfig::default() })]

    #[test]
    fn any_sequence_keeps_the_catalog_consistent_with_the_media(ops in proptest::collection::vec(op(), 2..7)) {
        let mut w = World::new();
        w.step(&Op::Backup { changed: 7, size_kib: 100 });
        for (i, op) in ops.iter().enumerate() {
            w.step(op);
            w.check(&ops[..=i]);
        }
    }
}
