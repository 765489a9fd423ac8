//! Processes killed with SIGKILL at 50 random points, then run again: a backup and a
//! duplication. Each trial starts from scratch in its own directory, kills `mimeo local apply`
//! at a random moment of its run, applies again, and compares the outcome with an uninterrupted
//! run: the same catalog (one Valid entry per work item and trail, same sizes and digests),
//! every Valid copy reads back and verifies, no temporary file is left on the media.
//! The figures are printed (`cargo test --test kill_points -- --nocapture`).

mod common;

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::cli::*;
use common::tree::assert_same_tree;

const TRIALS: usize = 50;
const ITEMS: usize = 6;

/// One trial's world: source data, the media and the YAML for a backup and a duplication.
struct World {
    env: Env,
    backup: PathBuf,
    duplication: PathBuf,
}

impl World {
    fn new() -> World {
        let env = Env::new();
        let items: Vec<(String, PathBuf)> = (0..ITEMS)
            .map(|i| {
                let dir = env.path(&format!("data/item-{i}"));
                random_file(&dir.join("blob.bin"), (3 << 20) + i * 300_000, 7 + i as u64);
                random_file(&dir.join("small/a.txt"), 1000 + i, 70 + i as u64);
                (format!("item-{i}"), dir)
            })
            .collect();
        // The same times everywhere, so that every world's backups have the same digests.
        let when = filetime::FileTime::from_unix_time(1_700_000_000, 0);
        for p in files_below(&env.path("data")) {
            filetime::set_file_times(&p, when, when).unwrap();
            filetime::set_file_times(p.parent().unwrap(), when, when).unwrap();
        }
        filetime::set_file_times(env.path("data"), when, when).unwrap();
        let backup = env.yaml(
            "backup.yaml",
            &[
                media_class("disk", &env.path("media/disk"), "2Mi", "64Ki", true),
                media_class("copy", &env.path("media/copy"), "4Mi", "128Ki", true),
                backup_trail("nightly", "disk", 4, &items),
            ]
            .join("---\n"),
        );
        let duplication = env.yaml(
            "duplication.yaml",
            &[
                duplication_trail("copies", "copy", "30d", "Sequential"),
                duplication_policy("copy-all", "nightly", "copies"),
            ]
            .join("---\n"),
        );
        World {
            env,
            backup,
            duplication,
        }
    }

    fn args(files: &[&Path]) -> Vec<String> {
        let mut args = vec!["apply".to_owned()];
        for f in files {
            args.push("-f".into());
            args.push(f.display().to_string());
        }
        args
    }

    /// Runs an apply to the end; returns how long it took.
    fn apply(&self, files: &[&Path]) -> Duration {
        let args = Self::args(files);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let started = Instant::now();
        self.env.run(&args).expect_ok("apply");
        started.elapsed()
    }

    /// Starts an apply and SIGKILLs it after `after`; true if it was still running then.
    fn apply_killed(&self, files: &[&Path], after: Duration) -> bool {
        let args = Self::args(files);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut child = self
            .env
            .command(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mimeo runs");
        std::thread::sleep(after);
        let _ = child.kill();
        let status = child.wait().unwrap();
        status.signal() == Some(libc::SIGKILL)
    }

    /// What a run leaves in the catalog, without names and times: (trail, role, work item,
    /// state, bytes, digest) per entry.
    fn catalog(&self) -> BTreeSet<(String, String, String, String, u64, String)> {
        self.env
            .entries()
            .iter()
            .map(|e| {
                let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
                (
                    s(&e["spec"]["trail"]),
                    s(&e["spec"]["role"]),
                    s(&e["spec"]["workItem"]),
                    s(&e["status"]["state"]),
                    e["spec"]["bytes"].as_u64().unwrap(),
                    s(&e["spec"]["digest"]),
                )
            })
            .collect()
    }

    /// Every Valid copy reads back and matches its digest; nothing temporary is left.
    fn check_media(&self, trial: usize) {
        let r = self.env.run(&["verify"]).expect_ok("verify");
        assert!(!r.stdout.contains("Missing"), "trial {trial}: {r}");
        let leftovers: Vec<PathBuf> = files_below(&self.env.path("media"))
            .into_iter()
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "trial {trial}: {leftovers:?}");
    }
}

/// Runs `TRIALS` killed-and-rerun trials of the apply of `files` after `prepare`, each killed
/// at a random moment of its uninterrupted duration (measured first). Most of them must
/// really be killed mid-run, and half of all after they had written to `media` (a directory
/// below `media/`).
fn trials(what: &str, media: &str, prepare: fn(&World), files: fn(&World) -> Vec<PathBuf>) {
    let reference = World::new();
    prepare(&reference);
    let fs = files(&reference);
    let took = reference.apply(&fs.iter().map(PathBuf::as_path).collect::<Vec<_>>());
    let want = reference.catalog();
    reference.check_media(0);
    let seed = 0x6b11_u64 ^ what.len() as u64;
    let mut rng = fastrand::Rng::with_seed(seed);
    let (mut killed, mut mid_write) = (0, 0);
    let started = Instant::now();
    for trial in 1..=TRIALS {
        let w = World::new();
        prepare(&w);
        let fs = files(&w);
        let fs: Vec<&Path> = fs.iter().map(PathBuf::as_path).collect();
        let at = took.mul_f64(rng.f64());
        if w.apply_killed(&fs, at) {
            killed += 1;
            if !files_below(&w.env.path(&format!("media/{media}"))).is_empty() {
                mid_write += 1;
            }
        }
        w.apply(&fs);
        assert_eq!(
            w.catalog(),
            want,
            "{what}, trial {trial}, killed at {at:?} of {took:?}"
        );
        w.check_media(trial);
        if trial == TRIALS {
            // The last trial's data also restores byte for byte.
            let out = w.env.path("out/item-0");
            let rst = w
                .env
                .yaml("restore.yaml", &restore("back", "item-0", "Auto", &out));
            w.apply(&[&rst]);
            assert_same_tree(&w.env.path("data/item-0"), &out);
        }
    }
    eprintln!(
        "KILL POINTS: {what}: {TRIALS} trials (seed {seed:#x}), {killed} killed mid-run ({mid_write} after writing to the media), uninterrupted run {:.2}s, all {TRIALS} re-runs equal to it, {:.0}s",
        took.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    // The kills must land in the run, most of them while it writes, or the trials prove little.
    assert!(
        killed >= TRIALS * 3 / 4,
        "only {killed} runs were killed mid-run"
    );
    assert!(
        mid_write >= TRIALS / 2,
        "only {mid_write} kills hit the writing"
    );
}

#[test]
fn backup_killed_at_50_points_then_rerun_equals_an_uninterrupted_run() {
    trials("backup", "disk", |_| {}, |w| vec![w.backup.clone()]);
}

#[test]
fn duplication_killed_at_50_points_then_rerun_equals_an_uninterrupted_run() {
    trials(
        "duplication",
        "copy",
        |w| {
            w.apply(&[&w.backup]);
        },
        |w| vec![w.backup.clone(), w.duplication.clone()],
    );
}
