//! The DuplicationPolicy reconciler: one run at a time, numbered; its Jobs followed to the end.

use super::*;

/// Reconciles a DuplicationPolicy: gathers how its run in flight goes (its numbered Jobs),
/// lets [`policy::decide`] say what to do, and carries that out. A run is planned from the
/// catalog (uncopied instances by default) when new instances appear or the schedule is due.
pub async fn reconcile_policy(p: Arc<DuplicationPolicy>, ctx: Arc<Context>) -> Result<Action> {
    let ns = p.namespace().unwrap_or_default();
    let name = p.name_any();
    let old = p.status.clone();
    let recorder = Recorder::new(ctx.client.clone(), "mimeo-operator".into());
    let set = ctx.resource_set(&ns);
    let problem = set.first_problem(&Resource::DuplicationPolicy((*p).clone()));
    // Gather: the Jobs of the run in flight, named by its number.
    let runs = old.as_ref().map_or(0, |s| s.runs);
    let prefix = run_name("copy", &name, &format!("{runs}-"));
    let jobs: Vec<Arc<Job>> = jobs_of(&ctx, &ns, &prefix).collect();
    let states: Vec<JobState> = jobs.iter().map(|j| job_state(j)).collect();
    let seen = if jobs.is_empty() || states.contains(&JobState::Running) {
        PolicyRun::Running
    } else {
        let failures = states.into_iter().filter_map(|s| match s {
            JobState::Failed(m) => Some(m),
            _ => None,
        });
        PolicyRun::Ended {
            failures: failures.collect(),
        }
    };
    let d = policy::decide(&p, problem, seen, Utc::now());
    let mut st = d.status;
    let catalog = ctx.catalog(&ns);
    let media = ctx.media(&set);
    let plan_ctx = PlanContext {
        set: &set,
        media: &media,
        catalog: &catalog,
        now: Utc::now(),
    };
    // Carry out. A run the decision found ended is counted once, as it is recorded.
    if policy::in_flight(old.as_ref().unwrap_or(&st)) && !policy::in_flight(&st) {
        run_ended(&ctx, &ns, &name, st.last_run.as_ref().expect("ended"));
    }
    for e in &d.events {
        event(&recorder, p.as_ref(), e.warning, e.reason, e.note.clone()).await;
    }
    let token = match d.step {
        PolicyStep::Wait => {
            write_status(&ctx, p.as_ref(), old.as_ref(), &st).await?;
            return Ok(Action::await_change());
        }
        PolicyStep::Follow => {
            // Not created yet (or still running): make sure every planned Job exists.
            let (work, _) = for_workers(&set, &p, plan_ctx.plan_duplication(&p)?)?;
            start_run(&ctx, &p, work, st.runs).await?;
            let mut changed = false;
            for job in jobs.iter().filter(|j| job_state(j) == JobState::Running) {
                changed |= report_retries(&recorder, p.as_ref(), &mut st.conditions, job).await;
            }
            if changed {
                write_status(&ctx, p.as_ref(), old.as_ref(), &st).await?;
            }
            return Ok(Action::requeue(Duration::from_secs(300)));
        }
        PolicyStep::WakeAt(next) => {
            write_status(&ctx, p.as_ref(), old.as_ref(), &st).await?;
            return Ok(Action::requeue(until(next)));
        }
        PolicyStep::Plan { token } => token,
    };
    let mut tasks = plan_ctx.plan_duplication(&p)?;
    if !tasks.is_empty() {
        // The watch may not show the last run's commits yet: plan again on the target trails'
        // entries as the API server has them, so no copy is ever run twice.
        let mut fresh = (*catalog).clone();
        fresh.extend(trail_entries(&ctx, &ns, &p.spec.targets).await?);
        tasks = PlanContext {
            catalog: &fresh,
            ..plan_ctx
        }
        .plan_duplication(&p)?;
    }
    let (work, left) = for_workers(&set, &p, tasks)?;
    let size = policy::run_size(work.iter().map(|(t, _)| t));
    let (st, events) = policy::planned(st, token, size, left, Utc::now());
    // The run's number names its Jobs: record it first, so a retry creates the same ones.
    write_status(&ctx, p.as_ref(), old.as_ref(), &st).await?;
    if !policy::in_flight(&st) {
        return Ok(Action::await_change());
    }
    start_run(&ctx, &p, work, st.runs).await?;
    for e in &events {
        event(&recorder, p.as_ref(), e.warning, e.reason, e.note.clone()).await;
    }
    Ok(Action::requeue(Duration::from_secs(300)))
}

/// The metrics of a run that ended.
fn run_ended(ctx: &Context, ns: &str, name: &str, last: &RunSummary) {
    let seconds = last.end.map(|e| (e - last.start).as_seconds_f64());
    ctx.metrics.finished("copy", &last.outcome, seconds);
    if last.outcome == "Succeeded" {
        ctx.metrics.bytes_copied.inc_by(last.bytes);
        ctx.metrics
            .last_success
            .get_or_create(&ResourceLabels {
                namespace: ns.to_owned(),
                name: name.to_owned(),
            })
            .set(Utc::now().timestamp());
    }
}

/// A task as a worker gets it, with the claims its pod mounts.
type WorkerTask = (Task, Vec<PvcMount>);

/// A run's tasks as its workers get them: their media mounted, each cut to what its ConfigMap
/// holds ([`fit`]); and how many instances were left for the next run.
fn for_workers(
    set: &ResourceSet,
    p: &DuplicationPolicy,
    tasks: Vec<Task>,
) -> Result<(Vec<WorkerTask>, u64)> {
    let mut left = 0;
    let mut work = Vec::with_capacity(tasks.len());
    for mut task in tasks {
        let mounts = media_mounts(set, &mut task);
        left += fit(&mut task, &format!("policy {}", p.name_any()))?;
        work.push((task, mounts));
    }
    Ok((work, left))
}

async fn start_run(
    ctx: &Context,
    p: &DuplicationPolicy,
    work: Vec<WorkerTask>,
    run: u64,
) -> Result<()> {
    for (i, (task, mounts)) in work.into_iter().enumerate() {
        create_run(
            ctx,
            &WorkerRun {
                name: run_name("copy", &p.name_any(), &format!("{run}-{i}")),
                namespace: p.namespace().unwrap_or_default(),
                owner: owner_ref(p),
                kind: "copy".into(),
                task,
                mounts,
            },
        )
        .await?;
    }
    Ok(())
}
