//! The BackupTrail and DuplicationTrail reconcilers: backups, rescans, expiry sweeps and the
//! trail's counts.

use super::*;

/// Rebuilds a trail's catalog entries from its media when the `mimeo.dev/rescan` annotation
/// carries a new token: one worker Job per token, which adds the entries the cluster lacks.
async fn rescan_if_asked<K>(
    ctx: &Context,
    trail: &K,
    st: &mut TrailStatus,
    recorder: &Recorder,
) -> Result<()>
where
    K: kube::Resource<DynamicType = ()>,
{
    let Some(token) = trail
        .meta()
        .annotations
        .as_ref()
        .and_then(|a| a.get(RESCAN_ANNOTATION))
    else {
        return Ok(());
    };
    if st.last_rescan.as_ref() == Some(token) {
        return Ok(());
    }
    let ns = trail.meta().namespace.clone().unwrap_or_default();
    let name = trail.meta().name.clone().unwrap_or_default();
    let run = format!("{:x}", crate::base::hash::name_hash(token) as u16);
    let job_name = run_name("rescan", &name, &run);
    if let Some(job) = jobs_of(ctx, &ns, &job_name).find(|j| j.name_any() == job_name) {
        let (ok, reason, msg) = match job_state(&job) {
            JobState::Running => return Ok(()),
            JobState::Succeeded => (
                true,
                "Rescanned",
                format!("catalog rebuilt from the media of {name}"),
            ),
            JobState::Failed(m) => (false, "RescanFailed", m),
        };
        st.last_rescan = Some(token.clone());
        event(recorder, trail, !ok, reason, msg).await;
        return Ok(());
    }
    let set = ctx.resource_set(&ns);
    let media = ctx.media(&set);
    let Some(m) = set.trail_media_class(&name).and_then(|c| media.get(c)) else {
        return Err(SpecError::Invalid {
            source_name: "rescan".into(),
            kind: K::kind(&()).to_string(),
            name: name.clone(),
            field: "spec.mediaClassName".into(),
            message: "names no usable media class to rescan".into(),
        }
        .into());
    };
    let mut task = Task::Rescan(RescanTask {
        trail: name.clone(),
        media: m.clone(),
    });
    let mounts = media_mounts(&set, &mut task);
    create_run(
        ctx,
        &WorkerRun {
            name: job_name,
            namespace: ns,
            owner: trail.controller_owner_ref(&()).expect("uid"),
            kind: "rescan".into(),
            task,
            mounts,
        },
    )
    .await?;
    event(
        recorder,
        trail,
        false,
        "RescanStarted",
        format!("rescanning the media of {name}"),
    )
    .await;
    Ok(())
}

/// Instances, bytes and volumes of a trail, from the catalog.
fn count_trail(st: &mut TrailStatus, catalog: &Catalog, trail: &str) {
    let valid: Vec<&CatalogEntrySpec> = catalog.valid_on(trail).collect();
    st.instances = valid.len() as u64;
    st.bytes = valid.iter().map(|e| e.bytes).sum();
    st.volumes = catalog.volumes(trail);
}

/// Reconciles a BackupTrail: gathers how its due run went (its Job, the entries its worker
/// recorded), lets [`backup::decide`] say what to do, and carries that out: the run's Job,
/// the events, the status; when no run is in flight, the expiry sweep.
pub async fn reconcile_backup(t: Arc<BackupTrail>, ctx: Arc<Context>) -> Result<Action> {
    let ns = t.namespace().unwrap_or_default();
    let name = t.name_any();
    let old = t.status.clone();
    let recorder = Recorder::new(ctx.client.clone(), "mimeo-operator".into());
    let catalog = ctx.catalog(&ns);
    let set = ctx.resource_set(&ns);
    let now = Utc::now();
    let problem = set.first_problem(&Resource::BackupTrail((*t).clone()));
    // Gather: the due run's Job and, once it ended, what its worker recorded.
    let job = backup::due_run(&t, now).and_then(|run| {
        let job_name = run_name("backup", &name, &run);
        let job = jobs_of(&ctx, &ns, &job_name).find(|j| j.name_any() == job_name)?;
        let state = job_state(&job);
        Some((run, job, state))
    });
    let seen = match &job {
        None => BackupRun::NotStarted,
        Some((_, _, JobState::Running)) => BackupRun::Running,
        Some((run, job, ended)) => {
            let started = job
                .status
                .as_ref()
                .and_then(|s| s.start_time.as_ref())
                .and_then(|t| chrono::DateTime::from_timestamp(t.0.as_second(), 0));
            // As the API server has them: the watch may lag behind the worker.
            let recorded = trail_entries(&ctx, &ns, std::slice::from_ref(&name)).await?;
            let notes = run_notes(
                recorded
                    .entries()
                    .values()
                    .map(|e| &e.spec)
                    .filter(|e| started.is_none_or(|s| e.created_at >= s)),
            );
            match ended {
                JobState::Failed(message) => BackupRun::Failed {
                    message: message.clone(),
                    notes,
                },
                _ => BackupRun::Succeeded {
                    message: format!("backup run {run} done"),
                    notes,
                },
            }
        }
    };
    let running = seen == BackupRun::Running;
    let mut d = backup::decide(&t, problem, seen, now);
    // Nothing due, nothing in flight, nothing to report: the time to sweep expired entries.
    let idle = !running && d.start.is_none() && d.events.is_empty();
    let st = &mut d.status;
    count_trail(st, &catalog, &name);
    rescan_if_asked(&ctx, t.as_ref(), st, &recorder).await?;
    // Carry out: the run, the events, the status.
    match &job {
        Some((_, job, JobState::Running)) => {
            report_retries(&recorder, t.as_ref(), &mut st.conditions, job).await;
        }
        Some((_, job, ended)) => {
            let outcome = match ended {
                JobState::Succeeded => "Succeeded",
                _ => "Failed",
            };
            ctx.metrics.finished("backup", outcome, job_seconds(job));
        }
        None => {}
    }
    if let Some(run) = d.start.take() {
        match backup_run(&ctx, &t, &set, &catalog, &run) {
            Ok(worker) => create_run(&ctx, &worker).await?,
            Err(e) => d.events = vec![backup::unplanned(st, t.metadata.generation, &e)],
        }
    }
    for e in &d.events {
        event(&recorder, t.as_ref(), e.warning, e.reason, e.note.clone()).await;
    }
    if !idle {
        write_status(&ctx, t.as_ref(), old.as_ref(), &d.status).await?;
        return Ok(Action::await_change());
    }
    let expiry = sweep_expiry(&ctx, t.as_ref(), &mut d.status, &catalog, &recorder).await?;
    write_status(&ctx, t.as_ref(), old.as_ref(), &d.status).await?;
    // Wake up for the next scheduled backup or the next expiry, whichever is sooner.
    Ok(wake_after([d.wake.map(until), expiry]))
}

/// Plans the backup run `run` of `t` as a worker run (the same Job name on a retry).
fn backup_run(
    ctx: &Context,
    t: &BackupTrail,
    set: &ResourceSet,
    catalog: &Catalog,
    run: &str,
) -> Result<WorkerRun> {
    let media = ctx.media(set);
    let mut mounts: BTreeMap<String, PvcMount> = BTreeMap::new();
    let resolve = |loc: &DataLocation| {
        resolve_for_pod(set, loc, true).map(|(d, m)| {
            if let Some(m) = m {
                mounts.insert(m.claim.clone(), m);
            }
            d
        })
    };
    let resolve = std::cell::RefCell::new(resolve);
    let task = PlanContext {
        set,
        media: &media,
        catalog,
        now: Utc::now(),
    }
    .plan_backup(t, &|loc| (resolve.borrow_mut())(loc))?;
    let mut task = Task::Backup(task);
    let mut all_mounts: Vec<PvcMount> = mounts.into_values().collect();
    all_mounts.extend(media_mounts(set, &mut task));
    Ok(WorkerRun {
        name: run_name("backup", &t.name_any(), run),
        namespace: t.namespace().unwrap_or_default(),
        owner: owner_ref(t),
        kind: "backup".into(),
        task,
        mounts: all_mounts,
    })
}

/// Marks a trail's entries Expired once their retention passed (a Valid incremental keeps its
/// parent, `minCopies` holds the last copies a policy wants), frees the trail's volumes that
/// hold no Valid entry in a worker, and requeues at the next expiry, so nothing is polled on a
/// timer. A sweep that trips the mass-expiry breaker does nothing but set `ExpiryHalted` in
/// `st` and warn, until the trail's `mimeo.dev/allow-mass-expiry` token changes.
async fn sweep_expiry<K>(
    ctx: &Context,
    trail: &K,
    st: &mut TrailStatus,
    catalog: &Catalog,
    recorder: &Recorder,
) -> Result<Option<Duration>>
where
    K: kube::Resource<DynamicType = ()>,
{
    let ns = trail.meta().namespace.clone().unwrap_or_default();
    let name = trail.meta().name.clone().unwrap_or_default();
    let set = ctx.resource_set(&ns);
    let media = ctx.media(&set);
    let now = Utc::now();
    let api: Api<CatalogEntry> = Api::namespaced(ctx.client.clone(), &ns);
    if let Some(retention) = set.retentions.get(&name) {
        let entries = catalog.entries().values().map(|e| &**e);
        write_expiry_dates(&api, &trail::expiry_dates(&name, *retention, entries)).await?;
    }
    let plan = PlanContext {
        set: &set,
        media: &media,
        catalog,
        now,
    };
    let mine = plan.plan_expiry().of_trail(catalog, &name);
    let ack = trail
        .meta()
        .annotations
        .as_ref()
        .and_then(|a| a.get(ALLOW_MASS_EXPIRY_ANNOTATION))
        .cloned();
    let sweep = trail::sweep(st, &mine, plan.mass_expiry(&name, &mine), ack);
    for e in &sweep.events {
        event(recorder, trail, e.warning, e.reason, e.note.clone()).await;
    }
    if sweep.halted {
        return Ok(None);
    }
    let expired = write_expired(&api, catalog, &sweep.expire).await?;
    let changed_meanwhile = expired.len() < sweep.expire.len();
    if !expired.is_empty() {
        // The store does not show the new states yet: the expired entries are named.
        let keep = plan.volumes_in_use(&name, &expired);
        if let Some(m) = set.trail_media_class(&name).and_then(|c| media.get(c)) {
            let mut task = Task::Scratch(ScratchTask {
                trail: name.clone(),
                media: m.clone(),
                keep,
            });
            let mounts = media_mounts(&set, &mut task);
            let run = format!("{}", now.timestamp());
            create_run(
                ctx,
                &WorkerRun {
                    name: run_name("expire", &name, &run),
                    namespace: ns.clone(),
                    owner: trail.controller_owner_ref(&()).expect("uid"),
                    kind: "expire".into(),
                    task,
                    mounts,
                },
            )
            .await?;
        }
        ctx.metrics.finished("expire", "Succeeded", None);
        let e = trail::expired(expired.len());
        event(recorder, trail, e.warning, e.reason, e.note).await;
    }
    // Expired entries stay visible for a while (`kubectl get` shows what expiry did), then
    // go, so the catalog does not grow without bound.
    let keep = chrono::TimeDelta::from_std(ctx.expired_entry_retention).unwrap_or_default();
    for e in catalog
        .entries()
        .values()
        .filter(|e| e.spec.trail == name && Catalog::state(e) == EntryState::Expired)
        .filter(|e| e.spec.expires_at + keep <= now)
    {
        match api.delete(&e.name_any(), &Default::default()).await {
            Ok(_) => tracing::info!(entry = %e.name_any(), "expired catalog entry removed"),
            Err(kube::Error::Api(a)) if a.code == 404 => {}
            Err(err) => return Err(err.into()),
        }
    }
    // Wake up at the next expiry or removal on this trail.
    let next = catalog
        .entries()
        .values()
        .filter(|e| e.spec.trail == name && !expired.iter().any(|x| x.0 == e.name_any()))
        .filter_map(|e| match Catalog::state(e) {
            EntryState::Valid | EntryState::Missing => Some(e.spec.expires_at),
            EntryState::Expired => Some(e.spec.expires_at + keep).filter(|t| *t > now),
        })
        .min();
    Ok(match next {
        _ if changed_meanwhile => Some(Duration::from_secs(1)),
        Some(t) if t > now => Some(until(t)),
        Some(_) => Some(Duration::from_secs(60)),
        None => None,
    })
}

/// Reconciles a DuplicationTrail: status from the catalog, and expiry.
pub async fn reconcile_duplication_trail(
    t: Arc<DuplicationTrail>,
    ctx: Arc<Context>,
) -> Result<Action> {
    let ns = t.namespace().unwrap_or_default();
    let name = t.name_any();
    let old = t.status.clone();
    let mut st = old.clone().unwrap_or_default();
    let catalog = ctx.catalog(&ns);
    count_trail(&mut st, &catalog, &name);
    st.last_run = catalog.valid_on(&name).map(|e| e.created_at).max();
    st.observed_generation = t.metadata.generation;
    let ready = ctx
        .resource_set(&ns)
        .media_classes
        .contains_key(&t.spec.media_class_name);
    let (reason, msg) = if ready {
        ("Ready", format!("{} copies", st.instances))
    } else {
        (
            "MediaClassNotFound",
            format!(
                "field spec.mediaClassName: MediaClass {:?} not found",
                t.spec.media_class_name
            ),
        )
    };
    set_condition(
        &mut st.conditions,
        Condition::new("Ready", ready, reason, msg),
    );
    let recorder = Recorder::new(ctx.client.clone(), "mimeo-operator".into());
    rescan_if_asked(&ctx, t.as_ref(), &mut st, &recorder).await?;
    let expiry = sweep_expiry(&ctx, t.as_ref(), &mut st, &catalog, &recorder).await?;
    write_status(&ctx, t.as_ref(), old.as_ref(), &st).await?;
    Ok(wake_after([expiry]))
}
