//! The DuplicationPolicy reconciler: one run at a time, numbered; its Jobs followed to the end.

use super::*;

/// Reconciles a DuplicationPolicy: one run at a time; a run is planned from the catalog
/// (uncopied instances by default) when new instances appear or the schedule is due.
pub async fn reconcile_policy(p: Arc<DuplicationPolicy>, ctx: Arc<Context>) -> Result<Action> {
    let ns = p.namespace().unwrap_or_default();
    let name = p.name_any();
    let generation = p.metadata.generation;
    let old = p.status.clone();
    let mut st = old.clone().unwrap_or_default();
    let recorder = Recorder::new(ctx.client.clone(), "mimeo-operator".into());
    st.observed_generation = generation;
    let due = policy::due(&p, &st, Utc::now());
    if due == Ok(PolicyDue::Suspended) {
        set_condition(
            &mut st.conditions,
            Condition::new(
                "Ready",
                true,
                "Suspended",
                "spec.suspend is true: no new runs",
            ),
        );
        write_status(&ctx, p.as_ref(), old.as_ref(), &st).await?;
        return Ok(Action::await_change());
    }
    let set = ctx.resource_set(&ns);
    let problem = set.first_problem(&Resource::DuplicationPolicy((*p).clone()));
    if let Some(msg) = problem {
        set_condition(
            &mut st.conditions,
            Condition::new("Ready", false, "InvalidSpec", msg.clone()),
        );
        event(&recorder, p.as_ref(), true, "InvalidSpec", msg.clone()).await;
        write_status(&ctx, p.as_ref(), old.as_ref(), &st).await?;
        return Ok(Action::await_change());
    }
    let prefix = run_name("copy", &name, &format!("{}-", st.runs));
    let running = st.last_run.as_ref().is_some_and(|r| r.outcome == "Running");
    let catalog = ctx.catalog(&ns);
    let media = ctx.media(&set);
    let plan_ctx = PlanContext {
        set: &set,
        media: &media,
        catalog: &catalog,
        now: Utc::now(),
    };
    if running {
        let jobs: Vec<Arc<Job>> = jobs_of(&ctx, &ns, &prefix).collect();
        let states: Vec<JobState> = jobs.iter().map(|j| job_state(j)).collect();
        if jobs.is_empty() || states.contains(&JobState::Running) {
            // Not created yet (or still running): make sure every planned Job exists.
            start_run(&ctx, &p, &set, plan_ctx.plan_duplication(&p)?, st.runs).await?;
            let mut changed = false;
            for job in jobs.iter().filter(|j| job_state(j) == JobState::Running) {
                changed |= report_retries(&recorder, p.as_ref(), &mut st.conditions, job).await;
            }
            if changed {
                write_status(&ctx, p.as_ref(), old.as_ref(), &st).await?;
            }
            return Ok(Action::requeue(Duration::from_secs(300)));
        }
        let failures: Vec<String> = states
            .into_iter()
            .filter_map(|s| match s {
                JobState::Failed(m) => Some(m),
                _ => None,
            })
            .collect();
        let last = st.last_run.as_mut().expect("running");
        last.end = Some(Utc::now());
        let ok = failures.is_empty();
        last.outcome = if ok { "Succeeded" } else { "Failed" }.into();
        last.message = failures.join("; ");
        let seconds = last.end.map(|e| (e - last.start).as_seconds_f64());
        ctx.metrics.finished("copy", &last.outcome, seconds);
        if ok {
            ctx.metrics.bytes_copied.inc_by(last.bytes);
            ctx.metrics
                .last_success
                .get_or_create(&ResourceLabels {
                    namespace: ns.clone(),
                    name: name.clone(),
                })
                .set(Utc::now().timestamp());
        }
        let (reason, msg) = if ok {
            (
                "RunSucceeded",
                format!("{} instances, {} bytes", last.instances, last.bytes),
            )
        } else {
            ("RunFailed", last.message.clone())
        };
        set_condition(
            &mut st.conditions,
            Condition::new("Ready", ok, reason, msg.clone()),
        );
        event(&recorder, p.as_ref(), !ok, reason, msg).await;
        write_status(&ctx, p.as_ref(), old.as_ref(), &st).await?;
        return Ok(Action::await_change());
    }
    let token = match due.map_err(|e| e.of("DuplicationPolicy", &p.name_any()))? {
        PolicyDue::At(next) => {
            st.next_run = Some(next);
            write_status(&ctx, p.as_ref(), old.as_ref(), &st).await?;
            return Ok(Action::requeue(until(next)));
        }
        PolicyDue::Now { token } => token,
        PolicyDue::Suspended => return Ok(Action::await_change()), // written above
    };
    let mut tasks = plan_ctx.plan_duplication(&p)?;
    if !tasks.is_empty() {
        // The watch may not show the last run's commits yet: plan again on the target trails'
        // entries as the API server has them, so no copy is ever run twice.
        let mut fresh = catalog.clone();
        fresh
            .entries
            .extend(trail_entries(&ctx, &ns, &p.spec.targets).await?.entries);
        tasks = PlanContext {
            catalog: &fresh,
            ..plan_ctx
        }
        .plan_duplication(&p)?;
    }
    if token.is_some() {
        st.last_run_now = token;
    }
    if tasks.is_empty() {
        // Up to date: say so (and which generation was seen), once.
        let last = st.last_run.as_ref().map(|r| r.outcome.as_str());
        if last != Some("Failed") {
            set_condition(
                &mut st.conditions,
                Condition::new("Ready", true, "UpToDate", "nothing to copy"),
            );
        }
        write_status(&ctx, p.as_ref(), old.as_ref(), &st).await?;
        return Ok(Action::await_change());
    }
    let (instances, bytes) = tasks.iter().fold((0u64, 0u64), |(n, b), t| match t {
        Task::Copy(c) => (
            n + c.items.len() as u64,
            b + c.items.iter().map(|i| i.source.bytes).sum::<u64>(),
        ),
        Task::MediaCopy(m) => (n + m.entries.len() as u64, b),
        _ => (n, b),
    });
    // Record the run first: its number names the Jobs, so a retry creates the same ones.
    st.runs += 1;
    st.last_run = Some(RunSummary {
        start: Utc::now(),
        end: None,
        instances,
        bytes,
        outcome: "Running".into(),
        message: String::new(),
    });
    set_condition(
        &mut st.conditions,
        Condition::new(
            "Ready",
            true,
            "Running",
            format!("run {} copies {instances} instances", st.runs),
        ),
    );
    write_status(&ctx, p.as_ref(), old.as_ref(), &st).await?;
    start_run(&ctx, &p, &set, tasks, st.runs).await?;
    event(
        &recorder,
        p.as_ref(),
        false,
        "RunStarted",
        format!("run {}: {instances} instances", st.runs),
    )
    .await;
    Ok(Action::requeue(Duration::from_secs(300)))
}

async fn start_run(
    ctx: &Context,
    p: &DuplicationPolicy,
    set: &ResourceSet,
    tasks: Vec<Task>,
    run: u64,
) -> Result<()> {
    for (i, mut task) in tasks.into_iter().enumerate() {
        let mounts = media_mounts(set, &mut task);
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
