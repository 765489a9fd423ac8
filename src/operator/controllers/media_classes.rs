//! The MediaClass reconciler: reachability of the media, and what the class holds.

use super::*;

/// Why a class's media cannot be used now: the Ready condition's message.
#[derive(Debug, thiserror::Error)]
enum Unready {
    /// The spec, a Secret's contents or the store (the engine's error wraps all three).
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("Secret {0:?} not found")]
    SecretMissing(String),
    #[error("PersistentVolumeClaim {0:?} not found")]
    ClaimMissing(String),
    #[error("PersistentVolumeClaim {claim:?} is {phase}")]
    ClaimUnbound { claim: String, phase: String },
    #[error("a filesystem backend is only reachable in local mode")]
    LocalOnly,
}

/// Can a class's media be used: do its Secrets hold credentials and a valid key, does the
/// bucket answer, is the claim bound? The inner error says what is wrong; the outer one is
/// the API server's.
async fn probe_media_class(
    ctx: &Context,
    ns: &str,
    mc: &MediaClass,
) -> Result<std::result::Result<(), Unready>> {
    let mut spec = match MediaSpec::from_class(mc) {
        Ok(s) => s,
        Err(e) => return Ok(Err(Unready::Engine(e.into()))),
    };
    let api: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(ctx.client.clone(), ns);
    let names: std::collections::BTreeSet<String> =
        spec.secret_entries().into_iter().map(|(s, _)| s).collect();
    let mut secrets = BTreeMap::new();
    for name in names {
        match api.get_opt(&name).await? {
            None => return Ok(Err(Unready::SecretMissing(name))),
            Some(s) => _ = secrets.insert(name, s),
        }
    }
    let lookup = |secret: &str, entry: &str| {
        let s = secrets.get(secret).ok_or_else(|| EngineError::Secret {
            secret: secret.to_owned(),
            detail: "not found".into(),
        })?;
        secret_value(s, entry)
    };
    if let Err(e) = spec.fill_secrets(&lookup) {
        return Ok(Err(e.into()));
    }
    let b = &mc.spec.backend;
    Ok(if b.s3.is_some() {
        match spec.open().await {
            Err(e) => Err(e.into()),
            Ok(m) => m.store.probe().await.map_err(|e| Unready::Engine(e.into())),
        }
    } else if let Some(p) = &b.pvc {
        let pvcs: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
            Api::namespaced(ctx.client.clone(), ns);
        match pvcs.get_opt(&p.claim_name).await? {
            None => Err(Unready::ClaimMissing(p.claim_name.clone())),
            Some(c) => match c.status.and_then(|s| s.phase).as_deref() {
                Some("Bound") => Ok(()),
                phase => Err(Unready::ClaimUnbound {
                    claim: p.claim_name.clone(),
                    phase: phase.unwrap_or("Pending").to_owned(),
                }),
            },
        }
    } else {
        Err(Unready::LocalOnly)
    })
}

/// Reconciles a MediaClass: is its backend reachable (S3 bucket answers with the referenced
/// Secret's credentials; PVC exists and is bound)? `available: false` is reported as such.
pub async fn reconcile_media_class(mc: Arc<MediaClass>, ctx: Arc<Context>) -> Result<Action> {
    let ns = mc.namespace().unwrap_or_default();
    let probe = probe_media_class(&ctx, &ns, &mc).await?;
    let catalog = ctx.catalog(&ns);
    let set = ctx.resource_set(&ns);
    let name = mc.name_any();
    let on_class = |e: &&CatalogEntrySpec| set.trail_media_class(&e.trail) == Some(name.as_str());
    let (st, events) = media_class::decide(
        &mc,
        probe.map_err(|e| e.to_string()),
        catalog.valid().filter(on_class),
    );
    let recorder = Recorder::new(ctx.client.clone(), "mimeo-operator".into());
    for e in &events {
        event(&recorder, mc.as_ref(), e.warning, e.reason, e.note.clone()).await;
    }
    write_status(&ctx, mc.as_ref(), mc.status.as_ref(), &st).await?;
    // Reachability changes without any object changing: probe again in a while.
    Ok(Action::requeue(Duration::from_secs(300)))
}
