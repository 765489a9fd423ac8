//! The MediaClass reconciler: reachability of the media, and what the class holds.

use super::*;

/// Can a class's media be used: do its Secrets hold credentials and a valid key, does the
/// bucket answer, is the claim bound? `Err(message)` says what is wrong.
async fn probe_media_class(
    ctx: &Context,
    ns: &str,
    mc: &MediaClass,
) -> Result<std::result::Result<(), String>> {
    let mut spec = match MediaSpec::from_class(mc) {
        Ok(s) => s,
        Err(e) => return Ok(Err(e.to_string())),
    };
    let api: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(ctx.client.clone(), ns);
    let names: std::collections::BTreeSet<String> =
        spec.secret_entries().into_iter().map(|(s, _)| s).collect();
    let mut secrets = BTreeMap::new();
    for name in names {
        match api.get_opt(&name).await? {
            None => return Ok(Err(format!("Secret {name:?} not found"))),
            Some(s) => _ = secrets.insert(name, s),
        }
    }
    let lookup = |secret: &str, entry: &str| {
        let s = secrets.get(secret).ok_or_else(|| Error::NotFound {
            store: "Secrets".into(),
            key: secret.to_owned(),
        })?;
        secret_value(s, entry)
    };
    if let Err(e) = spec.fill_secrets(&lookup) {
        return Ok(Err(e.to_string()));
    }
    let b = &mc.spec.backend;
    Ok(if b.s3.is_some() {
        match spec.open().await {
            Err(e) => Err(e.to_string()),
            Ok(m) => m.store.probe().await.map_err(|e| e.to_string()),
        }
    } else if let Some(p) = &b.pvc {
        let pvcs: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
            Api::namespaced(ctx.client.clone(), ns);
        match pvcs.get_opt(&p.claim_name).await? {
            None => Err(format!(
                "PersistentVolumeClaim {:?} not found",
                p.claim_name
            )),
            Some(c) => match c.status.and_then(|s| s.phase).as_deref() {
                Some("Bound") => Ok(()),
                phase => Err(format!(
                    "PersistentVolumeClaim {:?} is {}",
                    p.claim_name,
                    phase.unwrap_or("Pending")
                )),
            },
        }
    } else {
        Err("a filesystem backend is only reachable in local mode".into())
    })
}

/// Reconciles a MediaClass: is its backend reachable (S3 bucket answers with the referenced
/// Secret's credentials; PVC exists and is bound)? `available: false` is reported as such.
pub async fn reconcile_media_class(mc: Arc<MediaClass>, ctx: Arc<Context>) -> Result<Action> {
    let ns = mc.namespace().unwrap_or_default();
    let old = mc.status.clone();
    let mut st = old.clone().unwrap_or_default();
    st.observed_generation = mc.metadata.generation;
    let probe = probe_media_class(&ctx, &ns, &mc).await?;
    st.reachable = Some(probe.is_ok());
    let catalog = ctx.catalog(&ns);
    let set = ctx.resource_set(&ns);
    let on_class =
        |e: &&CatalogEntrySpec| set.trail_media_class(&e.trail) == Some(mc.name_any().as_str());
    let entries: Vec<&CatalogEntrySpec> = catalog.valid().filter(on_class).collect();
    st.bytes = entries.iter().map(|e| e.bytes).sum();
    st.volumes = entries
        .iter()
        .flat_map(|e| {
            e.extents
                .iter()
                .map(|x| (e.trail.clone(), x.volume.clone()))
        })
        .collect::<std::collections::BTreeSet<_>>()
        .len() as u64;
    let (ok, reason, msg) = match (&probe, mc.spec.available) {
        (_, false) => (
            false,
            "Unavailable",
            "spec.available is false: media are away and are not read".to_string(),
        ),
        (Ok(()), true) => (true, "Reachable", "backend answered".to_string()),
        (Err(e), true) => (false, "Unreachable", e.clone()),
    };
    set_condition(
        &mut st.conditions,
        Condition::new("Ready", ok, reason, msg.clone()),
    );
    if old.as_ref().and_then(|o| o.reachable) != st.reachable && !ok {
        let recorder = Recorder::new(ctx.client.clone(), "mimeo-operator".into());
        event(&recorder, mc.as_ref(), true, reason, msg).await;
    }
    write_status(&ctx, mc.as_ref(), old.as_ref(), &st).await?;
    // Reachability changes without any object changing: probe again in a while.
    Ok(Action::requeue(Duration::from_secs(300)))
}
