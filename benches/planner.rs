//! Planner scale: how long the pure planner takes over large synthetic catalogs.
//!
//! `cargo bench --bench planner` times
//! `PlanContext::select` and `PlanContext::plan_duplication` (plus `plan_restore` and
//! `plan_expiry`, for context, and the catalog's index, built once per change of the catalog) over 10,000, 100,000 and 1,000,000 catalog entries (years of
//! nightly copies: 100 work items x 365 days x 3 copies is 110,000 a year) and prints the median,
//! min and max of several runs. `MIMEO_PLANNER_SIZES=10000,50000` chooses other sizes,
//! `MIMEO_PLANNER_RUNS` the runs, and `MIMEO_PLANNER_LIMIT_S` (60) how long one operation may
//! take before the benchmark reports it unfinished and stops.
//! Each result is also printed as one `BENCH {json}` line for `bench/run.sh`.
//!
//! Without `--bench` (as `cargo test --all-targets` runs bench targets) it plans one small
//! catalog once and exits, so the test suite stays fast.
//!
//! The synthetic catalog: `entries / 100` work items, each with 67 daily originals on the
//! backup trail `nightly` and duplicates of its 33 oldest instances on the duplication trail
//! `vault`; every entry has 4 extents. The policy copies every `app-*` item except one in ten
//! (`app-*9`) from `nightly` to `vault`, uncopied instances only: `select` picks 60% of the
//! entries (the originals of 9 in 10 items), `plan_duplication` plans the 30% not yet copied.

use std::collections::BTreeMap;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use mimeo::api::{
    CatalogEntrySpec, DuplicationPolicy, Extent, ResourceSet, Restore, Role, parse_documents,
};
use mimeo::engine::catalog::Catalog;
use mimeo::engine::planner::PlanContext;
use mimeo::engine::task::{MediaSpec, Task};

const RESOURCES: &str = r#"
apiVersion: mimeo.dev/v1alpha1
kind: MediaClass
metadata: {name: disk}
spec: {backend: {filesystem: {path: /bench/disk}}, volumeCapacity: 512Mi}
---
apiVersion: mimeo.dev/v1alpha1
kind: MediaClass
metadata: {name: vault}
spec: {backend: {filesystem: {path: /bench/vault}}, volumeCapacity: 10Gi, blockSize: 4Mi}
---
apiVersion: mimeo.dev/v1alpha1
kind: BackupTrail
metadata: {name: nightly}
spec: {mediaClassName: disk, retention: 90d, streams: 4}
---
apiVersion: mimeo.dev/v1alpha1
kind: DuplicationTrail
metadata: {name: vault}
spec: {mediaClassName: vault, retention: 7y, layout: Sequential}
---
apiVersion: mimeo.dev/v1alpha1
kind: DuplicationPolicy
metadata: {name: to-vault}
spec:
  sourceTrails: [nightly]
  targets: [vault]
  selection: {workItems: ["app-*"], exclude: ["app-*9"]}
---
apiVersion: mimeo.dev/v1alpha1
kind: Restore
metadata: {name: one}
spec: {workItem: app-00042, target: {path: /bench/restore}}
"#;

/// Originals per work item; the oldest [`COPIED`] of them also have a duplicate.
const ORIGINALS: i64 = 67;
const COPIED: i64 = 33;

struct Fixture {
    set: ResourceSet,
    media: BTreeMap<String, MediaSpec>,
    catalog: Catalog,
    now: DateTime<Utc>,
}

fn entry(
    trail: &str,
    role: Role,
    work_item: &str,
    day: i64,
    now: DateTime<Utc>,
) -> CatalogEntrySpec {
    let backup_time = now - TimeDelta::days(day) - TimeDelta::hours(1);
    let instance_id = format!("{work_item}-{}", backup_time.format("%Y%m%d-%H%M%S-%3f"));
    let extents = (0..4)
        .map(|i| Extent {
            volume: format!("{trail}-{:05}", day % 97 + 1),
            segment: 0,
            offset: i * (64 << 20),
            length: 16 << 20,
        })
        .collect();
    CatalogEntrySpec {
        work_item: work_item.into(),
        instance_id,
        backup_time,
        backup_trail: "nightly".into(),
        trail: trail.into(),
        role,
        copy_of: (role == Role::Duplicate).then(|| format!("nightly.{work_item}")),
        parent: None,
        extents,
        replaces: Vec::new(),
        bytes: 64 << 20,
        file_bytes: Some(64 << 20),
        notes: Vec::new(),
        digest: format!("sha256:{day:064x}"),
        created_at: backup_time,
        expires_at: backup_time + TimeDelta::days(90),
    }
}

fn fixture(entries: usize) -> Fixture {
    let now = Utc::now();
    let mut set = ResourceSet::default();
    for r in parse_documents(RESOURCES, "bench.yaml").expect("bench resources parse") {
        set.insert(r);
    }
    let media = set
        .media_classes
        .iter()
        .map(|(n, mc)| (n.clone(), MediaSpec::from_class(mc).expect("media")))
        .collect();
    let mut catalog = Catalog::default();
    let per_item = (ORIGINALS + COPIED) as usize;
    let items = entries.div_ceil(per_item);
    let mut n = 0;
    'fill: for w in 0..items {
        let work_item = format!("app-{w:05}");
        for day in 0..ORIGINALS {
            for (trail, role) in [("nightly", Role::Original), ("vault", Role::Duplicate)] {
                if role == Role::Duplicate && day < ORIGINALS - COPIED {
                    continue;
                }
                if n == entries {
                    break 'fill;
                }
                catalog.import(entry(trail, role, &work_item, day, now));
                n += 1;
            }
        }
    }
    assert_eq!(catalog.entries().len(), entries, "synthetic catalog size");
    Fixture {
        set,
        media,
        catalog,
        now,
    }
}

impl Fixture {
    fn ctx(&self) -> PlanContext<'_> {
        PlanContext {
            set: &self.set,
            media: &self.media,
            catalog: &self.catalog,
            now: self.now,
        }
    }

    fn policy(&self) -> &DuplicationPolicy {
        &self.set.policies["to-vault"]
    }

    fn restore(&self) -> &Restore {
        &self.set.restores["one"]
    }
}

/// Times `f` `runs` times; returns the durations and the last result's size. At least 3 runs,
/// more only while within `budget`; but a first run that alone exceeds `budget` is not repeated
/// (it is reported with `runs: 1`): it is far off any target, and repeating it would take minutes.
fn time_runs(runs: usize, budget: Duration, mut f: impl FnMut() -> usize) -> (Vec<f64>, usize) {
    let mut times = Vec::new();
    let mut size = 0;
    let started = Instant::now();
    for i in 0..runs {
        let t = Instant::now();
        size = std::hint::black_box(f());
        times.push(t.elapsed().as_secs_f64());
        let spent = started.elapsed();
        if spent > budget && i != 1 {
            break;
        }
    }
    (times, size)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let mid = s.len() / 2;
    if s.len() & 1 == 1 {
        s[mid]
    } else {
        (s[mid - 1] + s[mid]) / 2.0
    }
}

fn copy_items(tasks: &[Task]) -> usize {
    tasks
        .iter()
        .map(|t| match t {
            Task::Copy(c) => c.items.len(),
            _ => 0,
        })
        .sum()
}

fn report(entries: usize, op: &str, times: &[f64], result: usize) {
    let min = times.iter().copied().fold(f64::INFINITY, f64::min);
    let max = times.iter().copied().fold(0.0, f64::max);
    let med = median(times);
    let runs = times.len();
    println!(
        "{entries:>8} entries  {op:<18} median {med:>10.4} s  (min {min:.4}, max {max:.4}, {runs} runs)  result {result}"
    );
    println!(
        "BENCH {{\"bench\":\"planner\",\"entries\":{entries},\"op\":\"{op}\",\"median_s\":{med},\"min_s\":{min},\"max_s\":{max},\"runs\":{runs},\"result\":{result}}}"
    );
}

/// The timed operations, cheapest first: after one that does not finish within the limit,
/// the rest are not measured.
type Op = fn(&Fixture) -> usize;
const OPS: [(&str, Op); 4] = [
    ("select", |fx| fx.ctx().select(fx.policy()).unwrap().len()),
    ("plan_restore", |fx| {
        fx.ctx()
            .plan_restore(fx.restore())
            .map_or(0, |p| p.links.len())
    }),
    ("plan_expiry", |fx| fx.ctx().plan_expiry().expire.len()),
    ("plan_duplication", |fx| {
        copy_items(&fx.ctx().plan_duplication(fx.policy()).unwrap())
    }),
];

/// Builds a catalog of each size and times the planner on it. An operation still running after
/// `limit` is reported as such (its thread is abandoned; it ends with the process).
fn run(sizes: &[usize], runs: usize, budget: Duration, limit: Duration) {
    for &entries in sizes {
        let t = Instant::now();
        let fx = Arc::new(fixture(entries));
        println!(
            "{entries:>8} entries  (catalog built in {:.2} s)",
            t.elapsed().as_secs_f64()
        );
        // The index by trail and work item is built on the first plan after a change, once for
        // all the plans that follow (the operator's reconciles share it): timed on its own.
        let t = Instant::now();
        let items = fx.catalog.items_on("nightly").count();
        report(entries, "index", &[t.elapsed().as_secs_f64()], items);
        for (op, f) in OPS {
            let fx = fx.clone();
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                let _ = tx.send(time_runs(runs, budget, || f(&fx)));
            });
            match rx.recv_timeout(limit) {
                Ok((times, n)) => report(entries, op, &times, n),
                Err(_) => {
                    let s = limit.as_secs_f64();
                    println!(
                        "{entries:>8} entries  {op:<18} not finished after {s:.0} s; stopping"
                    );
                    println!(
                        "BENCH {{\"bench\":\"planner\",\"entries\":{entries},\"op\":\"{op}\",\"median_s\":{s},\"min_s\":{s},\"max_s\":{s},\"runs\":0,\"result\":0,\"timed_out\":true}}"
                    );
                    return;
                }
            }
        }
    }
}

fn sizes_from_env(default: &[usize]) -> Vec<usize> {
    match std::env::var("MIMEO_PLANNER_SIZES") {
        Ok(s) => s.split(',').filter_map(|x| x.trim().parse().ok()).collect(),
        Err(_) => default.to_vec(),
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(default)
}

fn full() {
    run(
        &sizes_from_env(&[10_000, 100_000, 1_000_000]),
        env_number("MIMEO_PLANNER_RUNS", 5) as usize,
        Duration::from_secs(20),
        Duration::from_secs(env_number("MIMEO_PLANNER_LIMIT_S", 60)),
    );
}

fn smoke() {
    run(&[1_000], 1, Duration::ZERO, Duration::from_secs(600));
}

fn main() {
    if std::env::args().any(|a| a == "--bench") {
        full();
    } else {
        smoke();
    }
}
