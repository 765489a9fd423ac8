//! Planner scale: how long the pure planner takes over large synthetic catalogs.
//!
//! `cargo bench --bench planner` (with `harness = false` in Cargo.toml) times
//! `PlanContext::select` and `PlanContext::plan_duplication` (plus `plan_restore` and
//! `plan_expiry`, for context) over 10,000 and 100,000 catalog entries and prints the median,
//! min and max of several runs. `MIMEO_PLANNER_SIZES=10000,50000` chooses other sizes.
//! Each result is also printed as one `BENCH {json}` line for `bench/run.sh`.
//!
//! Without `--bench` (as `cargo test --all-targets` runs bench targets) it plans one small
//! catalog once and exits, so the test suite stays fast. Until Cargo.toml has the `[[bench]]`
//! entry, cargo builds this file with the libtest harness: then the `smoke` test is the quick
//! check and the ignored `full` test runs the benchmark
//! (`cargo test --release --bench planner -- --ignored --nocapture`).
//!
//! The synthetic catalog: `entries / 100` work items, each with 67 daily originals on the
//! backup trail `nightly` and duplicates of its 33 oldest instances on the duplication trail
//! `vault`; every entry has 4 extents. The policy copies every `app-*` item except one in ten
//! (`app-*9`) from `nightly` to `vault`, uncopied instances only: `select` picks 60% of the
//! entries (the originals of 9 in 10 items), `plan_duplication` plans the 30% not yet copied.

use std::collections::BTreeMap;
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
        bytes: 64 << 20,
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
        .map(|(n, mc)| (n.clone(), MediaSpec::from_class(mc, None).expect("media")))
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
    assert_eq!(catalog.entries.len(), entries, "synthetic catalog size");
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

/// Builds a catalog of each size and times the planner on it.
fn run(sizes: &[usize], runs: usize, budget: Duration) {
    for &entries in sizes {
        let t = Instant::now();
        let fx = fixture(entries);
        println!(
            "{entries:>8} entries  (catalog built in {:.2} s)",
            t.elapsed().as_secs_f64()
        );
        let ctx = fx.ctx();
        let (times, n) = time_runs(runs, budget, || ctx.select(fx.policy()).len());
        report(entries, "select", &times, n);
        let (times, n) = time_runs(runs, budget, || {
            copy_items(&ctx.plan_duplication(fx.policy()))
        });
        report(entries, "plan_duplication", &times, n);
        let (times, n) = time_runs(runs, budget, || {
            ctx.plan_restore(fx.restore()).map_or(0, |p| p.links.len())
        });
        report(entries, "plan_restore", &times, n);
        let (times, n) = time_runs(runs, budget, || ctx.plan_expiry().len());
        report(entries, "plan_expiry", &times, n);
    }
}

fn sizes_from_env(default: &[usize]) -> Vec<usize> {
    match std::env::var("MIMEO_PLANNER_SIZES") {
        Ok(s) => s.split(',').filter_map(|x| x.trim().parse().ok()).collect(),
        Err(_) => default.to_vec(),
    }
}

fn full() {
    let runs = std::env::var("MIMEO_PLANNER_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    run(
        &sizes_from_env(&[10_000, 100_000]),
        runs,
        Duration::from_secs(20),
    );
}

fn smoke() {
    run(&[1_000], 1, Duration::ZERO);
}

#[cfg_attr(test, allow(dead_code))]
fn main() {
    if std::env::args().any(|a| a == "--bench") {
        full();
    } else {
        smoke();
    }
}

#[cfg(test)]
mod harness {
    #[test]
    fn smoke() {
        super::smoke();
    }

    #[test]
    #[ignore = "the benchmark itself: run with --ignored in release mode"]
    fn full() {
        super::full();
    }
}
