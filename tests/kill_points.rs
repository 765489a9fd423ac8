//! Processes killed with SIGKILL at 50 random points, then run again: a backup and a
//! duplication, on filesystem media and on S3 (s3s-fs and MinIO on loopback). Each trial starts from
//! scratch (its own directory, its own prefix in the buckets), kills `mimeo local apply` at a
//! random moment of its run, applies again, and compares the outcome with an uninterrupted run:
//! the same catalog (one Valid entry per work item and trail, same sizes and digests), every
//! Valid copy reads back and verifies, no temporary file is left on the media, and no
//! multipart upload is left open on S3 (on MinIO, none at all: ListMultipartUploads finds
//! even those a kill left before Mimeo recorded them). The figures are printed
//! (`cargo test --test kill_points -- --nocapture`).

mod common;

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::cli::*;
use common::s3server::{Flavor, S3Server};
use common::tree::assert_same_tree;

const TRIALS: usize = 50;
const ITEMS: usize = 6;

/// Where a test's media live.
#[derive(Clone, Copy)]
enum Media<'a> {
    /// Directories of each world.
    Fs,
    /// Buckets `disk` and `copy` ([`BUCKETS`]) of one server; each world has its own prefix.
    /// Volumes are large enough for segments of several 8 MiB parts (multipart uploads).
    S3(&'a S3Server),
}

/// The buckets of [`Media::S3`], named as the media classes that use them.
const BUCKETS: [&str; 2] = ["disk", "copy"];

/// Held by the test that runs its trials (see [`trials`]).
static ALONE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Numbers the worlds of a test run, for their S3 prefixes.
static WORLDS: AtomicUsize = AtomicUsize::new(0);

/// One trial's world: source data, the media and the YAML for a backup and a duplication.
struct World<'a> {
    env: Env,
    media: Media<'a>,
    /// The world's prefix in the buckets (S3 media).
    prefix: String,
    backup: PathBuf,
    duplication: PathBuf,
}

impl<'a> World<'a> {
    fn new(media: Media<'a>) -> World<'a> {
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
        let prefix = format!("w{}", WORLDS.fetch_add(1, Ordering::Relaxed));
        let classes = match media {
            Media::Fs => [
                media_class("disk", &env.path("media/disk"), "2Mi", "64Ki", true),
                media_class("copy", &env.path("media/copy"), "4Mi", "128Ki", true),
            ]
            .join("---\n"),
            Media::S3(server) => {
                let url = server.endpoint.as_str();
                server.secret_yaml()
                    + &s3_media(url, "disk", "disk", &prefix, "32Mi", "64Ki")
                    + &s3_media(url, "copy", "copy", &prefix, "64Mi", "128Ki")
            }
        };
        let backup = env.yaml(
            "backup.yaml",
            &[classes, backup_trail("nightly", "disk", 4, &items)].join("---\n"),
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
            media,
            prefix,
            backup,
            duplication,
        }
    }

    /// Whether anything of this world is on the media class `class`: a file, an object or an
    /// open upload.
    fn wrote_to(&self, class: &str) -> bool {
        match self.media {
            Media::Fs => !files_below(&self.env.path(&format!("media/{class}"))).is_empty(),
            Media::S3(server) => {
                let prefix = format!("{}/", self.prefix);
                !server.object_keys(class, &prefix).is_empty()
                    || server.flavor == Flavor::Minio
                        && !server.open_uploads(class, &prefix).is_empty()
            }
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
    /// state, bytes, digest) per entry, one row per entry (a second backup of an item is a
    /// second row), sorted. Checks on the way that every duplicate is of an instance the
    /// catalog holds an original of (by instance id).
    fn catalog(&self) -> Vec<(String, String, String, String, u64, String)> {
        let entries = self.env.entries();
        let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
        let originals: BTreeSet<String> = entries
            .iter()
            .filter(|e| e["spec"]["role"] == "Original")
            .map(|e| s(&e["spec"]["instanceId"]))
            .collect();
        for e in entries.iter().filter(|e| e["spec"]["role"] == "Duplicate") {
            assert!(
                originals.contains(&s(&e["spec"]["instanceId"])),
                "a duplicate of no original: {e}"
            );
        }
        let mut rows: Vec<_> = entries
            .iter()
            .map(|e| {
                (
                    s(&e["spec"]["trail"]),
                    s(&e["spec"]["role"]),
                    s(&e["spec"]["workItem"]),
                    s(&e["status"]["state"]),
                    e["spec"]["bytes"].as_u64().unwrap(),
                    s(&e["spec"]["digest"]),
                )
            })
            .collect();
        rows.sort();
        rows
    }

    /// Every Valid copy reads back and matches its digest; nothing temporary is left; on S3,
    /// no upload Mimeo recorded is left open (see [`S3Leftovers`]).
    fn check_media(&self, trial: usize, s3: &mut S3Leftovers) {
        let r = self.env.run(&["verify"]).expect_ok("verify");
        assert!(!r.stdout.contains("Missing"), "trial {trial}: {r}");
        let leftovers: Vec<PathBuf> = files_below(&self.env.path("media"))
            .into_iter()
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "trial {trial}: {leftovers:?}");
        if let Media::S3(server) = self.media {
            match server.flavor {
                Flavor::S3sFs => s3.check(server, trial),
                Flavor::Minio => {
                    let open: Vec<_> = BUCKETS
                        .iter()
                        .flat_map(|b| server.open_uploads(b, &format!("{}/", self.prefix)))
                        .collect();
                    assert!(
                        open.is_empty(),
                        "trial {trial}: uploads left open: {open:?}"
                    );
                }
            }
        }
    }
}

/// What a trial left on the S3 server, counted once across trials: on MinIO, what the kills
/// left for the re-runs to sweep; on s3s-fs, what nothing can sweep.
#[derive(Default)]
struct S3Leftovers {
    /// MinIO: uploads open after a kill, and those of them without a marker (only the
    /// listing finds these).
    killed_open: usize,
    killed_unmarked: usize,
    seen: BTreeSet<String>,
    /// Uploads open without a marker: started by a run killed between CreateMultipartUpload
    /// and writing its marker, before any part. s3s-fs lacks ListMultipartUploads, so nothing
    /// can find them, but they hold no data (on S3 and MinIO the listing removes them).
    unmarked: usize,
    /// Parts of uploads s3s-fs no longer knows: it forgets the upload first when it completes
    /// one, and stops when the client goes away (killed mid-complete). S3 completes atomically.
    abandoned_by_server: usize,
}

impl S3Leftovers {
    /// MinIO, after a kill: counts the uploads open under the world's prefix.
    fn count_killed(&mut self, server: &S3Server, world: &World) {
        for bucket in BUCKETS {
            let markers = server.object_keys(bucket, &format!("{}/.uploads/", world.prefix));
            for (_, id) in server.open_uploads(bucket, &format!("{}/", world.prefix)) {
                self.killed_open += 1;
                let digest = format!("@{}", marker_digest(&id));
                if !markers.iter().any(|m| m.ends_with(&digest)) {
                    self.killed_unmarked += 1;
                }
            }
        }
    }

    /// Checks the server after a re-run: an upload whose marker (`.uploads/KEY@DIGEST(ID)`)
    /// exists should have been aborted, and no open upload may hold a part.
    fn check(&mut self, server: &S3Server, trial: usize) {
        let names = server.data_file_names();
        let open: BTreeSet<&str> = names
            .iter()
            .filter_map(|n| n.strip_prefix(".upload-")?.strip_suffix(".json"))
            .collect();
        for id in &open {
            let marker = format!("@{}", marker_digest(id));
            assert!(
                !names.iter().any(|n| n.ends_with(&marker)),
                "trial {trial}: upload {id} has a marker but was not aborted"
            );
            if self.seen.insert(id.to_string()) {
                self.unmarked += 1;
            }
        }
        for part in names.iter().filter_map(|n| n.strip_prefix(".upload_id-")) {
            let (id, _) = part.split_once(".part-").unwrap();
            assert!(
                !open.contains(id),
                "trial {trial}: open upload {id} holds parts"
            );
            if self.seen.insert(id.to_owned()) {
                self.abandoned_by_server += 1;
            }
        }
    }
}

/// The suffix of an upload's marker: 16 hex digits of the SHA-256 of its id.
fn marker_digest(upload_id: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(upload_id)
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Runs `TRIALS` killed-and-rerun trials of the apply of `files` after `prepare`, each killed
/// at a random moment of its uninterrupted duration (measured first, and shortened whenever a
/// run ends before its kill), past its first tenth. Most of them must
/// really be killed mid-run, and half of all after they had written to the media class
/// `class`.
fn trials(
    what: &str,
    media: Media,
    class: &str,
    prepare: fn(&World),
    files: fn(&World) -> Vec<PathBuf>,
) {
    // One test at a time: kills are timed from the uninterrupted runs, and another test's
    // load coming or going between those and the trials would move every kill.
    let _alone = ALONE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // Three uninterrupted runs, and the median of their times: the first run on a fresh
    // server can be much slower than the rest (MinIO), one run can be unusually quick, and
    // kills timed from either would mostly land after the runs ended, or before they wrote.
    let mut s3 = S3Leftovers::default();
    let mut times = Vec::new();
    let mut want = None;
    for _ in 0..3 {
        let reference = World::new(media);
        prepare(&reference);
        let fs = files(&reference);
        times.push(reference.apply(&fs.iter().map(PathBuf::as_path).collect::<Vec<_>>()));
        let catalog = reference.catalog();
        assert_eq!(*want.get_or_insert_with(|| catalog.clone()), catalog);
        reference.check_media(0, &mut s3);
    }
    times.sort();
    let mut took = times[1];
    let want = want.unwrap();
    let seed = 0x6b11_u64 ^ what.len() as u64;
    let mut rng = fastrand::Rng::with_seed(seed);
    let (mut killed, mut mid_write) = (0, 0);
    // Kills after the backup's entries were saved, before its end was (the run is still
    // recorded as started): the re-run must find that commit, not back everything up again.
    let mut after_commit = 0;
    let started = Instant::now();
    for trial in 1..=TRIALS {
        let w = World::new(media);
        prepare(&w);
        let fs = files(&w);
        let fs: Vec<&Path> = fs.iter().map(PathBuf::as_path).collect();
        // Past the first tenth of the run (starting the process, reading the YAML), where
        // nothing is written yet.
        let at = took.mul_f64(0.1 + 0.9 * rng.f64());
        if !w.apply_killed(&fs, at) {
            // The run ended before its kill: runs have become quicker than measured (a warm
            // server, less load), so aim earlier from now on.
            took = took.mul_f64(0.85);
        } else {
            killed += 1;
            if w.wrote_to(class) {
                mid_write += 1;
            }
            let run_open = w.env.state().join("runs/nightly.json").exists();
            if run_open && !w.env.entry_names(Some("nightly"), "Valid").is_empty() {
                after_commit += 1;
            }
        }
        if let Media::S3(
            server @ S3Server {
                flavor: Flavor::Minio,
                ..
            },
        ) = media
        {
            s3.count_killed(server, &w);
        }
        w.apply(&fs);
        assert_eq!(
            w.catalog(),
            want,
            "{what}, trial {trial}, killed at {at:?} of {took:?}"
        );
        w.check_media(trial, &mut s3);
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
        "KILL POINTS: {what}: {TRIALS} trials (seed {seed:#x}), {killed} killed mid-run ({mid_write} after writing to the media, {after_commit} after the backup's commit and before its end was saved), uninterrupted run {:.2}s (kills aimed within {:.2}s at the end), all {TRIALS} re-runs equal to it, {:.0}s",
        times[1].as_secs_f64(),
        took.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    match media {
        Media::S3(S3Server {
            flavor: Flavor::Minio,
            ..
        }) => eprintln!(
            "KILL POINTS: {what}: the kills left {} uploads open ({} before their marker), the re-runs aborted all of them",
            s3.killed_open, s3.killed_unmarked
        ),
        Media::S3(_) => eprintln!(
            "KILL POINTS: {what}: no upload Mimeo recorded left open; {} empty uploads open (killed before their marker); {} uploads whose parts s3s-fs kept after a complete cut short",
            s3.unmarked, s3.abandoned_by_server
        ),
        Media::Fs => {}
    }

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

fn backup(what: &str, media: Media) {
    trials(what, media, "disk", |_| {}, |w| vec![w.backup.clone()]);
}

fn duplication(what: &str, media: Media) {
    trials(
        what,
        media,
        "copy",
        |w| {
            w.apply(&[&w.backup]);
        },
        |w| vec![w.backup.clone(), w.duplication.clone()],
    );
}

/// `server` with the buckets of [`Media::S3`].
fn with_buckets(server: S3Server) -> S3Server {
    for bucket in BUCKETS {
        server.create_bucket(bucket);
    }
    server
}

#[test]
fn backup_killed_at_50_points_then_rerun_equals_an_uninterrupted_run() {
    backup("backup", Media::Fs);
}

#[test]
fn duplication_killed_at_50_points_then_rerun_equals_an_uninterrupted_run() {
    duplication("duplication", Media::Fs);
}

#[test]
fn s3_backup_killed_at_50_points_then_rerun_equals_an_uninterrupted_run() {
    backup("backup on S3", Media::S3(&with_buckets(S3Server::start())));
}

#[test]
fn s3_duplication_killed_at_50_points_then_rerun_equals_an_uninterrupted_run() {
    duplication(
        "duplication on S3",
        Media::S3(&with_buckets(S3Server::start())),
    );
}

#[test]
fn minio_backup_killed_at_50_points_then_rerun_equals_an_uninterrupted_run() {
    backup(
        "backup on MinIO",
        Media::S3(&with_buckets(S3Server::minio())),
    );
}

#[test]
fn minio_duplication_killed_at_50_points_then_rerun_equals_an_uninterrupted_run() {
    duplication(
        "duplication on MinIO",
        Media::S3(&with_buckets(S3Server::minio())),
    );
}
