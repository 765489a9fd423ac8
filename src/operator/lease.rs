//! One active operator: a `coordination.k8s.io` Lease, held and renewed while the controllers
//! run. The chart also runs one replica with `Recreate`; the Lease guards against a second
//! operator (started by hand, or an upgrade gone wrong) starting worker Jobs for the same runs.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::{Client, ResourceExt};

use crate::error::{Error, Result};

/// Name of the Lease (the chart's RBAC allows this name only).
pub const LEASE_NAME: &str = "mimeo-operator";

/// Who holds which Lease for how long.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Namespace of the Lease (the operator's own).
    pub namespace: String,
    /// This operator's identity (its pod name).
    pub holder: String,
    /// How long the Lease stays valid without renewal.
    pub duration: Duration,
}

/// Whether `holder` may take `spec` at `now`: it is free, ours, or its holder stopped renewing.
pub fn can_take(spec: Option<&LeaseSpec>, holder: &str, now: Timestamp) -> bool {
    let Some(spec) = spec else { return true };
    match spec.holder_identity.as_deref() {
        None | Some("") => true,
        Some(h) if h == holder => true,
        Some(_) => {
            let renewed = spec.renew_time.as_ref().or(spec.acquire_time.as_ref());
            let secs = spec.lease_duration_seconds.unwrap_or(0);
            renewed.is_none_or(|t| t.0 + SignedDuration::from_secs(secs.into()) < now)
        }
    }
}

/// The Lease as `holder` writes it: taken over (new acquire time, one more transition) or
/// renewed.
fn held(old: Option<&LeaseSpec>, cfg: &LeaseConfig, now: Timestamp) -> LeaseSpec {
    let ours = old.and_then(|s| s.holder_identity.as_deref()) == Some(cfg.holder.as_str());
    let transitions = old.and_then(|s| s.lease_transitions).unwrap_or(0);
    LeaseSpec {
        holder_identity: Some(cfg.holder.clone()),
        lease_duration_seconds: Some(cfg.duration.as_secs() as i32),
        acquire_time: if ours {
            old.and_then(|s| s.acquire_time.clone())
        } else {
            Some(MicroTime(now))
        },
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(if ours { transitions } else { transitions + 1 }),
        ..Default::default()
    }
}

/// One attempt to take or renew the Lease; `Ok(false)` while someone else holds it. Writes
/// carry the resourceVersion read, so two candidates never both win. A conflict is an error,
/// not a loss: the Lease changed since it was read (perhaps by our own renewal whose answer
/// was lost), and the next attempt reads who holds it.
async fn try_hold(api: &Api<Lease>, cfg: &LeaseConfig) -> Result<bool> {
    let now = Timestamp::now();
    match api.get_opt(LEASE_NAME).await? {
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(LEASE_NAME.into()),
                    ..Default::default()
                },
                spec: Some(held(None, cfg, now)),
            };
            api.create(&PostParams::default(), &lease).await?;
            Ok(true)
        }
        Some(mut lease) => {
            if !can_take(lease.spec.as_ref(), &cfg.holder, now) {
                return Ok(false);
            }
            lease.spec = Some(held(lease.spec.as_ref(), cfg, now));
            api.replace(&lease.name_any(), &PostParams::default(), &lease)
                .await?;
            Ok(true)
        }
    }
}

/// Waits until this operator holds the Lease.
pub async fn acquire(client: &Client, cfg: &LeaseConfig) -> Result<()> {
    let api: Api<Lease> = Api::namespaced(client.clone(), &cfg.namespace);
    let mut waiting = false;
    loop {
        match try_hold(&api, cfg).await {
            Ok(true) => {
                tracing::info!(holder = %cfg.holder, "holding Lease {}/{LEASE_NAME}", cfg.namespace);
                return Ok(());
            }
            Ok(false) if !waiting => {
                waiting = true;
                tracing::info!(
                    "Lease {}/{LEASE_NAME} is held by another operator: waiting",
                    cfg.namespace
                );
            }
            Ok(false) => {}
            Err(e) => tracing::warn!("cannot take Lease {}/{LEASE_NAME}: {e}", cfg.namespace),
        }
        tokio::time::sleep(cfg.duration / 5).await;
    }
}

/// Renews the Lease until it cannot be renewed within its duration; then returns an error, so
/// the operator stops before another one may take over.
pub async fn keep(client: &Client, cfg: &LeaseConfig) -> Result<()> {
    let api: Api<Lease> = Api::namespaced(client.clone(), &cfg.namespace);
    let mut last = tokio::time::Instant::now();
    let mut pause = cfg.duration / 3;
    loop {
        tokio::time::sleep(pause).await;
        // After a failed renewal, try again soon: many attempts fit in the Lease's duration.
        pause = cfg.duration / 15;
        match try_hold(&api, cfg).await {
            Ok(true) => {
                last = tokio::time::Instant::now();
                pause = cfg.duration / 3;
            }
            Ok(false) => {
                return Err(Error::Operator(format!(
                    "Lease {}/{LEASE_NAME} was taken by another operator",
                    cfg.namespace
                )));
            }
            Err(e) => tracing::warn!("cannot renew Lease {}/{LEASE_NAME}: {e}", cfg.namespace),
        }
        if last.elapsed() >= cfg.duration {
            return Err(Error::Operator(format!(
                "Lease {}/{LEASE_NAME} not renewed for {:?}: stopping",
                cfg.namespace, cfg.duration
            )));
        }
    }
}

/// Gives the Lease up on a clean shutdown, so a successor need not wait for it to expire.
pub async fn release(client: &Client, cfg: &LeaseConfig) {
    let api: Api<Lease> = Api::namespaced(client.clone(), &cfg.namespace);
    if let Ok(Some(mut lease)) = api.get_opt(LEASE_NAME).await
        && let Some(spec) = lease.spec.as_mut()
        && spec.holder_identity.as_deref() == Some(cfg.holder.as_str())
    {
        spec.holder_identity = None;
        if let Err(e) = api
            .replace(LEASE_NAME, &PostParams::default(), &lease)
            .await
        {
            tracing::warn!("cannot release Lease {}/{LEASE_NAME}: {e}", cfg.namespace);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> LeaseConfig {
        LeaseConfig {
            namespace: "mimeo-system".into(),
            holder: "me".into(),
            duration: Duration::from_secs(15),
        }
    }

    #[test]
    fn free_own_and_expired_leases_can_be_taken() {
        let now = Timestamp::now();
        assert!(can_take(None, "me", now));
        let theirs = held(
            None,
            &LeaseConfig {
                holder: "other".into(),
                ..cfg()
            },
            now,
        );
        assert!(!can_take(Some(&theirs), "me", now));
        assert!(!can_take(
            Some(&theirs),
            "me",
            now + SignedDuration::from_secs(14)
        ));
        assert!(can_take(
            Some(&theirs),
            "me",
            now + SignedDuration::from_secs(16)
        ));
        let mine = held(Some(&theirs), &cfg(), now);
        assert!(can_take(Some(&mine), "me", now));
        assert_eq!(mine.lease_transitions, Some(2));
        // Renewing keeps the acquire time and the transition count.
        let later = now + SignedDuration::from_secs(5);
        let renewed = held(Some(&mine), &cfg(), later);
        assert_eq!(renewed.acquire_time, mine.acquire_time);
        assert_eq!(renewed.renew_time, Some(MicroTime(later)));
        assert_eq!(renewed.lease_transitions, Some(2));
        let released = LeaseSpec {
            holder_identity: None,
            ..theirs
        };
        assert!(can_take(Some(&released), "me", now));
    }
}
