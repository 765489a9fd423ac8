//! The Restore reconciler: gathers the view, lets `reconcile::restore::decide` choose, and
//! carries the decision out (events, the worker Job, the status).

use super::*;

/// The worker Job of a restore's generation; after damaged copies, one more per copy.
pub(super) fn restore_job_name(restore: &str, generation: i64, damaged: usize) -> String {
    match damaged {
        0 => run_name("restore", restore, &generation.to_string()),
        n => run_name("restore", restore, &format!("{generation}-{n}")),
    }
}

/// The links of a restore's chain that its worker found damaged, as `ROLE on TRAIL damaged:
/// WHY` (the why names volume, offset and work item): marked Missing, or already replaced by a
/// repair copy made after `since` (the Job's start), which is how a policy answers a Missing
/// copy; the worker read the damaged one either way.
pub(super) fn damaged_links(
    catalog: &Catalog,
    chain: &[RestoredFrom],
    since: Option<chrono::DateTime<Utc>>,
) -> Vec<String> {
    chain
        .iter()
        .filter_map(|l| {
            let e = catalog.entries().get(&l.entry_name())?;
            let why = match Catalog::state(e) {
                EntryState::Missing => e.status.as_ref().map_or("", |s| s.message.as_str()),
                EntryState::Valid if since.is_some_and(|t| e.spec.created_at > t) => {
                    e.spec.replaces.last()?.damage.as_str()
                }
                _ => return None,
            };
            Some(format!(
                "{} on {} damaged: {why}",
                e.spec.role_word(),
                l.trail
            ))
        })
        .collect()
}

/// The catalog entries of a restore's chain, as the API server has them now.
async fn chain_entries(ctx: &Context, ns: &str, chain: &[RestoredFrom]) -> Result<Catalog> {
    let api: Api<CatalogEntry> = Api::namespaced(ctx.client.clone(), ns);
    let mut catalog = Catalog::default();
    for l in chain {
        let name = l.entry_name();
        if let Some(e) = api.get_opt(&name).await? {
            catalog.insert(name, Arc::new(e));
        }
    }
    Ok(catalog)
}

/// Reconciles a Restore: gathers the view (the Job of its current run, the chain's entries as
/// the API server has them after a failure, the target), lets [`restore::decide`] choose, and
/// carries the decision out: events, a worker Job for a run, the status. A worker that finds
/// its copy damaged marks it Missing and fails; the decision then reads the next best copy.
pub async fn reconcile_restore(r: Arc<Restore>, ctx: Arc<Context>) -> Result<Action> {
    let ns = r.namespace().unwrap_or_default();
    let name = r.name_any();
    let generation = r.metadata.generation.unwrap_or(0);
    let old = r.status.clone();
    let st = old.clone().unwrap_or_default();
    let current = st.observed_generation == Some(generation);
    if matches!(st.phase, RestorePhase::Succeeded | RestorePhase::Failed) && current {
        return Ok(Action::await_change());
    }
    let recorder = Recorder::new(ctx.client.clone(), "mimeo-operator".into());
    let mut catalog = ctx.catalog(&ns);
    // Fetch: how the current run's Job ended.
    let job_name = restore_job_name(&name, generation, st.damaged.len());
    let job = (st.phase == RestorePhase::Running && current)
        .then(|| jobs_of(&ctx, &ns, &job_name).find(|j| j.name_any() == job_name))
        .flatten();
    let last_run = match job.as_deref().map(job_state) {
        None => LastRun::None,
        Some(JobState::Running) => LastRun::Running,
        Some(JobState::Succeeded) => LastRun::Succeeded {
            seconds: job.as_deref().and_then(job_seconds),
        },
        Some(JobState::Failed(message)) => {
            // Read from the API server, not the watch: the worker marked its damaged copy
            // before it exited, but that change may reach the watch after the Job's.
            let fresh = chain_entries(&ctx, &ns, &st.chain).await?;
            let started = job
                .as_ref()
                .and_then(|j| j.metadata.creation_timestamp.as_ref())
                .and_then(|t| chrono::DateTime::from_timestamp(t.0.as_second(), 0));
            let damaged = damaged_links(&fresh, &st.chain, started);
            Arc::make_mut(&mut catalog).extend(fresh);
            LastRun::Failed {
                message,
                damaged,
                unreadable: Vec::new(),
            }
        }
    };
    let set = ctx.resource_set(&ns);
    let media = ctx.media(&set);
    let target = resolve_for_pod(&set, &r.spec.target, false);
    let decide = |catalog: &Catalog| {
        restore::decide(
            &r,
            &RestoreView {
                plan: PlanContext {
                    set: &set,
                    media: &media,
                    catalog,
                    now: Utc::now(),
                },
                target_problem: target.as_ref().err().map(|e| (e.reason(), e.to_string())),
                last_run: last_run.clone(),
            },
        )
    };
    let mut decision = decide(&catalog);
    if decision.no_copy() {
        // Validate: a restore fails for want of a copy only on the API server's word. The
        // watch can lag behind it (after an API server restart the CatalogEntry watch came
        // back seconds after the Restore watch, and a restore of the instance just backed up
        // failed with "no instance matches").
        let fresh = listed_entries(
            &ctx,
            &ns,
            &format!("{LABEL_WORK_ITEM}={}", r.spec.work_item),
        )
        .await?;
        Arc::make_mut(&mut catalog).extend(fresh);
        decision = decide(&catalog);
    }
    let mut st = decision.status;
    match &last_run {
        LastRun::Running => {
            if let Some(job) = &job {
                report_retries(&recorder, r.as_ref(), &mut st.conditions, job).await;
            }
        }
        LastRun::Succeeded { seconds } => ctx.metrics.finished("restore", "Succeeded", *seconds),
        LastRun::Failed { .. } => {
            let seconds = job.as_deref().and_then(job_seconds);
            ctx.metrics.finished("restore", "Failed", seconds);
        }
        LastRun::None => {}
    }
    // Apply: the events, then the run, then the status.
    for e in &decision.events {
        tracing::info!(restore = %name, namespace = %ns, reason = e.reason, "{}", e.note);
        event(&recorder, r.as_ref(), e.warning, e.reason, e.note.clone()).await;
    }
    if let (Some(plan), Ok((target, target_mount))) = (decision.run, target) {
        let mut task = Task::Restore(RestoreTask {
            restore: name.clone(),
            links: plan.links,
            target,
        });
        let mut mounts = media_mounts(&set, &mut task);
        mounts.extend(target_mount);
        create_run(
            &ctx,
            &WorkerRun {
                name: restore_job_name(&name, generation, st.damaged.len()),
                namespace: ns,
                owner: owner_ref(r.as_ref()),
                kind: "restore".into(),
                task,
                mounts,
            },
        )
        .await?;
    }
    write_status(&ctx, r.as_ref(), old.as_ref(), &st).await?;
    Ok(match decision.waiting {
        // New catalog entries wake it (a watch); this is the fallback.
        true => Action::requeue(Duration::from_secs(60)),
        false => Action::await_change(),
    })
}
