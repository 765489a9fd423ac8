//! Worker Jobs, built purely from a task: a ConfigMap holding the task and a Job that runs
//! `mimeo worker` on it. No client here, so every field is checked by unit tests.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{
    Job, JobSpec, PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement, PodFailurePolicyRule,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, PersistentVolumeClaimVolumeSource, PodSecurityContext, PodSpec, PodTemplateSpec,
    ResourceRequirements, SeccompProfile, SecretKeySelector, SecurityContext, Toleration, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::engine::error::EngineError;
use crate::engine::task::Task;
use crate::error::{Error, Result};

/// User id of worker containers (the distroless `nonroot` user).
pub const WORKER_UID: i64 = 65532;
/// Where the task ConfigMap is mounted.
pub const TASK_DIR: &str = "/etc/mimeo/task";
/// File name of the task in the ConfigMap.
pub const TASK_FILE: &str = "task.json";
/// Label on every object the operator creates for a run.
pub const LABEL_RUN: &str = "mimeo.dev/run";
/// Label naming the kind of run (backup, copy, restore, expire).
pub const LABEL_RUN_KIND: &str = "mimeo.dev/run-kind";

/// Worker defaults (from the chart's values).
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Image with the `mimeo` binary.
    pub image: String,
    /// Service account of worker pods.
    pub service_account: String,
    /// Upper bound on a run.
    pub active_deadline_seconds: i64,
    /// Retries of a failed pod (a retried worker resumes).
    pub backoff_limit: i32,
    /// Finished Jobs are removed after this.
    pub ttl_seconds_after_finished: i32,
    /// Container resources.
    pub resources: Option<ResourceRequirements>,
    /// Image pull policy (the cluster's default when `None`).
    pub image_pull_policy: Option<String>,
    /// Node selector of worker pods, e.g. to keep them near the media.
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations of worker pods.
    pub tolerations: Vec<Toleration>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            image: "ghcr.io/mimeo-dev/mimeo:latest".into(),
            service_account: "mimeo-worker".into(),
            active_deadline_seconds: 6 * 3600,
            backoff_limit: 3,
            ttl_seconds_after_finished: 3600,
            resources: None,
            image_pull_policy: None,
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
        }
    }
}

/// A PersistentVolumeClaim mounted into the worker pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PvcMount {
    /// Claim name.
    pub claim: String,
    /// Mount path in the pod.
    pub mount_path: String,
    /// Read-only (backup sources, media read by restores).
    pub read_only: bool,
}

/// One run to execute in a worker pod.
#[derive(Clone, Debug)]
pub struct WorkerRun {
    /// Deterministic name of the Job and its ConfigMap (see [`run_name`]).
    pub name: String,
    /// Namespace of the resource the run belongs to.
    pub namespace: String,
    /// Owner of the run (the BackupTrail, DuplicationPolicy, Restore...).
    pub owner: OwnerReference,
    /// Run kind label value.
    pub kind: String,
    /// The task, with PVC paths already pointing at `mounts`.
    pub task: Task,
    /// Claims to mount.
    pub mounts: Vec<PvcMount>,
}

/// Makes the task ConfigMap owned by its Job, so the garbage collector removes it with the Job
/// (after `ttlSecondsAfterFinished`) instead of keeping one ConfigMap per run forever.
pub fn owned_by_job(config_map: &mut ConfigMap, job: &Job) -> Result<()> {
    let uid = job
        .metadata
        .uid
        .clone()
        .ok_or_else(|| Error::MissingField {
            object: format!("Job {}", run_job_name(job)),
            field: "metadata.uid",
        })?;
    config_map.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "batch/v1".into(),
        kind: "Job".into(),
        name: run_job_name(job),
        uid,
        controller: Some(true),
        block_owner_deletion: Some(true),
    }]);
    Ok(())
}

fn run_job_name(job: &Job) -> String {
    job.metadata.name.clone().unwrap_or_default()
}

/// Deterministic object name for run `run` of `kind`/`owner`: re-reconciling or restarting the
/// operator yields the same name, so a second Job for the same run is never created.
pub fn run_name(kind: &str, owner: &str, run: &str) -> String {
    let full = format!("mimeo-{kind}-{owner}-{run}");
    if full.len() <= 63 {
        return full;
    }
    let hash = crate::base::hash::name_hash(&full);
    format!("{}-{:08x}", &full[..50].trim_end_matches('-'), hash as u32)
}

/// Environment variable that carries `key` of Secret `secret` into a worker.
pub fn secret_env(secret: &str, key: &str) -> String {
    let clean: String = secret
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("MIMEO_SECRET_{clean}_{key}")
}

/// The largest task a ConfigMap carries, with room for its metadata under the 1 MiB limit.
const TASK_LIMIT: usize = 900 * 1024;

/// A task as its ConfigMap carries it.
fn task_body<T: serde::Serialize>(task: &T, run: &str) -> Result<String> {
    Ok(
        serde_json::to_string(task).map_err(|e| EngineError::Encode {
            what: format!("task of run {run}"),
            detail: e.to_string(),
        })?,
    )
}

/// Cuts copy task `task` of run `run` to what its ConfigMap holds: the instances first in it
/// (the planner puts the oldest first) that fit, at least one. Returns how many were left
/// out, for the policy's next run. An instance of an interleaved backup lists hundreds of
/// extents, so a run over a backlog of some dozens of them would not fit at all.
pub fn fit(task: &mut Task, run: &str) -> Result<u64> {
    if task_body(task, run)?.len() <= TASK_LIMIT {
        return Ok(0);
    }
    let Task::Copy(copy) = task else {
        return Ok(0); // too large, as [`build`] will say
    };
    let items = std::mem::take(&mut copy.items);
    // The body with no items, then each item and its comma: the same bytes as the whole.
    let mut size = task_body(task, run)?.len();
    let mut keep = 0;
    for item in &items {
        let n = task_body(item, run)?.len() + usize::from(keep > 0);
        if keep > 0 && size + n > TASK_LIMIT {
            break;
        }
        size += n;
        keep += 1;
    }
    let left = (items.len() - keep) as u64;
    let Task::Copy(copy) = task else {
        unreachable!("matched above")
    };
    copy.items = items;
    copy.items.truncate(keep);
    Ok(left)
}

/// Entry `entry` of Secret `secret` as a worker sees it (environment set by [`build`]).
pub fn secret_from_env(secret: &str, entry: &str) -> Result<String, EngineError> {
    let var = secret_env(secret, entry);
    std::env::var(&var).map_err(|_| EngineError::Secret {
        secret: secret.to_owned(),
        detail: format!("entry {entry} is not in the environment ({var})"),
    })
}

/// Builds the task ConfigMap and the worker Job of a run.
pub fn build(run: &WorkerRun, cfg: &WorkerConfig) -> Result<(ConfigMap, Job)> {
    let labels: BTreeMap<String, String> = [
        ("app.kubernetes.io/name", "mimeo".to_string()),
        ("app.kubernetes.io/component", "worker".to_string()),
        ("app.kubernetes.io/managed-by", "mimeo-operator".to_string()),
        (LABEL_RUN, run.name.clone()),
        (LABEL_RUN_KIND, run.kind.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let meta = ObjectMeta {
        name: Some(run.name.clone()),
        namespace: Some(run.namespace.clone()),
        labels: Some(labels.clone()),
        owner_references: Some(vec![run.owner.clone()]),
        ..Default::default()
    };
    let body = task_body(&run.task, &run.name)?;
    if body.len() > TASK_LIMIT {
        return Err(Error::TooLarge {
            what: format!("task of run {}", run.name),
            size: body.len(),
            limit: TASK_LIMIT,
            hint: match run.task {
                Task::Copy(_) => {
                    "a ConfigMap holds at most 1 MiB, and a copy run carries at least one instance: this one lists too many extents"
                }
                _ => "a ConfigMap holds at most 1 MiB",
            },
        });
    }
    let config_map = ConfigMap {
        metadata: meta.clone(),
        data: Some([(TASK_FILE.to_string(), body)].into()),
        ..Default::default()
    };

    let mut task = run.task.clone();
    let env: Vec<EnvVar> = task
        .secret_entries()
        .into_iter()
        .map(|(secret, key)| EnvVar {
            name: secret_env(&secret, key),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: secret,
                    key: key.into(),
                    optional: Some(false),
                }),
                ..Default::default()
            }),
            ..Default::default()
        })
        .chain(std::iter::once(EnvVar {
            name: "MIMEO_NAMESPACE".into(),
            value: Some(run.namespace.clone()),
            ..Default::default()
        }))
        .collect();

    let mut volumes = vec![
        Volume {
            name: "task".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: run.name.clone(),
                ..Default::default()
            }),
            ..Default::default()
        },
        Volume {
            name: "tmp".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        },
    ];
    let mut mounts = vec![
        VolumeMount {
            name: "task".into(),
            mount_path: TASK_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        },
        VolumeMount {
            name: "tmp".into(),
            mount_path: "/tmp".into(),
            ..Default::default()
        },
    ];
    for (i, m) in run.mounts.iter().enumerate() {
        let name = format!("pvc-{i}");
        volumes.push(Volume {
            name: name.clone(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: m.claim.clone(),
                read_only: Some(m.read_only),
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name,
            mount_path: m.mount_path.clone(),
            read_only: Some(m.read_only),
            ..Default::default()
        });
    }

    let container = Container {
        name: "worker".into(),
        image: Some(cfg.image.clone()),
        image_pull_policy: cfg.image_pull_policy.clone(),
        args: Some(vec![
            "worker".into(),
            "--task".into(),
            format!("{TASK_DIR}/{TASK_FILE}"),
            "--log-json".into(),
        ]),
        env: Some(env),
        volume_mounts: Some(mounts),
        resources: cfg.resources.clone(),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let job = Job {
        metadata: meta,
        spec: Some(JobSpec {
            backoff_limit: Some(cfg.backoff_limit),
            // Damaged media or a wrong key stay so: fail the Job on the first such exit.
            pod_failure_policy: Some(PodFailurePolicy {
                rules: vec![PodFailurePolicyRule {
                    action: "FailJob".into(),
                    on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                        container_name: Some("worker".into()),
                        operator: "In".into(),
                        values: vec![i32::from(crate::error::EXIT_PERMANENT)],
                    }),
                    on_pod_conditions: None,
                }],
            }),
            active_deadline_seconds: Some(cfg.active_deadline_seconds),
            ttl_seconds_after_finished: Some(cfg.ttl_seconds_after_finished),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    service_account_name: Some(cfg.service_account.clone()),
                    automount_service_account_token: Some(true),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(WORKER_UID),
                        run_as_group: Some(WORKER_UID),
                        fs_group: Some(WORKER_UID),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    containers: vec![container],
                    volumes: Some(volumes),
                    node_selector: (!cfg.node_selector.is_empty())
                        .then(|| cfg.node_selector.clone()),
                    tolerations: (!cfg.tolerations.is_empty()).then(|| cfg.tolerations.clone()),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    };
    Ok((config_map, job))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Backend, PvcBackend, S3Backend, SecretRef};
    use crate::engine::task::*;

    fn media(name: &str, backend: Backend) -> MediaSpec {
        MediaSpec {
            name: name.into(),
            backend,
            block_size: 1 << 20,
            capacity: 64 << 20,
            mount_path: None,
            key_secret: None,
            credentials: None,
            key: None,
        }
    }

    fn run() -> WorkerRun {
        let s3 = media(
            "tapes",
            Backend {
                s3: Some(S3Backend {
                    bucket: "tapes".into(),
                    credentials_secret_ref: Some(SecretRef {
                        name: "minio-creds".into(),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        let mut disk = media(
            "disk",
            Backend {
                pvc: Some(PvcBackend {
                    claim_name: "media".into(),
                    sub_path: None,
                }),
                ..Default::default()
            },
        );
        disk.mount_path = Some("/mnt/media/disk".into());
        disk.key_secret = Some("vault-key".into());
        WorkerRun {
            name: run_name("copy", "to-vault", "7"),
            namespace: "team-a".into(),
            owner: OwnerReference {
                api_version: "mimeo.dev/v1alpha1".into(),
                kind: "DuplicationPolicy".into(),
                name: "to-vault".into(),
                uid: "uid-1".into(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            },
            kind: "copy".into(),
            task: Task::MediaCopy(MediaCopyTask {
                policy: "to-vault".into(),
                source_trail: "nightly".into(),
                source_media: s3,
                trail: "vault".into(),
                media: disk,
                retention_secs: 60,
                session: "s1".into(),
                entries: Vec::new(),
            }),
            mounts: vec![PvcMount {
                claim: "media".into(),
                mount_path: "/mnt/media/disk".into(),
                read_only: false,
            }],
        }
    }

    #[test]
    fn job_is_deterministic_owned_and_restricted() {
        let (cm, job) = build(&run(), &WorkerConfig::default()).unwrap();
        assert_eq!(job.metadata.name.as_deref(), Some("mimeo-copy-to-vault-7"));
        assert_eq!(cm.metadata.name, job.metadata.name);
        assert_eq!(
            job.metadata.owner_references.as_ref().unwrap()[0].name,
            "to-vault"
        );
        let spec = job.spec.as_ref().unwrap();
        assert_eq!(spec.backoff_limit, Some(3));
        let rule = &spec.pod_failure_policy.as_ref().unwrap().rules[0];
        let codes = rule.on_exit_codes.as_ref().unwrap();
        assert_eq!(
            (rule.action.as_str(), codes.operator.as_str(), &codes.values),
            ("FailJob", "In", &vec![3])
        );
        assert!(
            spec.active_deadline_seconds.is_some() && spec.ttl_seconds_after_finished.is_some()
        );
        let pod = spec.template.spec.as_ref().unwrap();
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        assert_eq!(pod.service_account_name.as_deref(), Some("mimeo-worker"));
        let psc = pod.security_context.as_ref().unwrap();
        assert_eq!(
            (psc.run_as_non_root, psc.run_as_user),
            (Some(true), Some(WORKER_UID))
        );
        assert_eq!(
            psc.seccomp_profile.as_ref().unwrap().type_,
            "RuntimeDefault"
        );
        let c = &pod.containers[0];
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(
            sc.capabilities.as_ref().unwrap().drop.as_deref(),
            Some(&["ALL".to_string()][..])
        );
        // The read-only root still has a writable /tmp.
        let mounts = c.volume_mounts.as_ref().unwrap();
        assert!(
            mounts
                .iter()
                .any(|m| m.mount_path == "/tmp" && m.read_only.is_none())
        );
        assert!(mounts.iter().any(|m| m.mount_path == "/mnt/media/disk"));
    }

    #[test]
    fn task_config_map_goes_with_its_job() {
        let (mut cm, mut job) = build(&run(), &WorkerConfig::default()).unwrap();
        assert!(
            owned_by_job(&mut cm, &job).is_err(),
            "no uid before the Job exists"
        );
        job.metadata.uid = Some("u-1".into());
        owned_by_job(&mut cm, &job).unwrap();
        let owner = &cm.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
            ("Job", "mimeo-copy-to-vault-7", "u-1")
        );
        assert_eq!(owner.controller, Some(true));
    }

    #[test]
    fn secrets_come_from_secret_refs_never_from_the_task() {
        let (cm, job) = build(&run(), &WorkerConfig::default()).unwrap();
        let body = &cm.data.as_ref().unwrap()[TASK_FILE];
        assert!(!body.to_lowercase().contains("secret_access_key"));
        let env = job.spec.unwrap().template.spec.unwrap().containers[0]
            .env
            .clone()
            .unwrap();
        // Every variable the task needs, as (Secret, entry) it refers to.
        let refs: BTreeMap<&str, (&str, &str)> = env
            .iter()
            .filter_map(|e| {
                let r = e.value_from.as_ref()?.secret_key_ref.as_ref()?;
                Some((e.name.as_str(), (r.name.as_str(), r.key.as_str())))
            })
            .collect();
        let want: BTreeMap<&str, (&str, &str)> = [
            (
                "MIMEO_SECRET_MINIO_CREDS_AWS_ACCESS_KEY_ID",
                ("minio-creds", "AWS_ACCESS_KEY_ID"),
            ),
            (
                "MIMEO_SECRET_MINIO_CREDS_AWS_SECRET_ACCESS_KEY",
                ("minio-creds", "AWS_SECRET_ACCESS_KEY"),
            ),
            (
                "MIMEO_SECRET_VAULT_KEY_MIMEO_ENCRYPTION_KEY",
                ("vault-key", "MIMEO_ENCRYPTION_KEY"),
            ),
        ]
        .into();
        assert_eq!(refs, want);
        // The worker reads them back by the same names and fills the task.
        let key = "ab".repeat(32);
        let values: BTreeMap<String, String> = [
            ("MIMEO_SECRET_MINIO_CREDS_AWS_ACCESS_KEY_ID", "a"),
            ("MIMEO_SECRET_MINIO_CREDS_AWS_SECRET_ACCESS_KEY", "b"),
            ("MIMEO_SECRET_VAULT_KEY_MIMEO_ENCRYPTION_KEY", key.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let mut task: Task = serde_json::from_str(body).unwrap();
        let lookup = |s: &str, e: &str| {
            let var = secret_env(s, e);
            values
                .get(&var)
                .cloned()
                .ok_or_else(|| EngineError::Secret {
                    secret: s.to_owned(),
                    detail: var,
                })
        };
        task.fill_secrets(&lookup).unwrap();
        let Task::MediaCopy(t) = task else {
            unreachable!()
        };
        assert_eq!(t.source_media.credentials.unwrap().access_key_id, "a");
        assert_eq!(
            t.media.key.unwrap().id(),
            crate::media::crypt::BlockKey::parse(&key).unwrap().id()
        );
        assert!(t.source_media.key.is_none());
        assert_eq!(t.media.mount_path.as_deref(), Some("/mnt/media/disk"));
    }

    #[test]
    fn long_names_stay_valid_and_distinct() {
        let a = run_name("restore", &"x".repeat(80), "1");
        let b = run_name("restore", &"x".repeat(80), "2");
        assert!(a.len() <= 63 && b.len() <= 63);
        assert_ne!(a, b);
    }

    /// A backlog of interleaved instances (hundreds of extents each) is cut to the oldest that
    /// fit a ConfigMap, as many as fit; what fits is left alone.
    #[test]
    fn a_copy_task_is_cut_to_what_its_config_map_holds() {
        use crate::api::{CatalogEntrySpec, Extent, Role};
        let item = |i: usize| CopyItem {
            source: CatalogEntrySpec {
                work_item: "db".into(),
                instance_id: format!("db-{i:05}"),
                backup_time: chrono::Utc::now(),
                backup_trail: "nightly".into(),
                trail: "nightly".into(),
                role: Role::Original,
                copy_of: None,
                parent: None,
                extents: (0..257)
                    .map(|x| Extent {
                        volume: format!("nightly-v{:05}", x / 64),
                        segment: 0,
                        offset: x * 1_048_632,
                        length: 1_048_632,
                    })
                    .collect(),
                replaces: Vec::new(),
                bytes: 1 << 28,
                file_bytes: None,
                notes: Vec::new(),
                digest: "blake3:00".into(),
                created_at: chrono::Utc::now(),
                expires_at: chrono::Utc::now(),
            },
            source_media: "tapes".into(),
        };
        let copy = |n: usize| {
            Task::Copy(CopyTask {
                policy: "to-vault".into(),
                trail: "vault".into(),
                media: media("vault", Backend::default()),
                layout: crate::api::Layout::Sequential,
                parallelism: 1,
                retention_secs: 60,
                session: "s1".into(),
                sources: vec![media("tapes", Backend::default())],
                items: (0..n).map(item).collect(),
            })
        };
        let ids = |t: &Task| match t {
            Task::Copy(c) => c
                .items
                .iter()
                .map(|i| i.source.instance_id.clone())
                .collect(),
            _ => Vec::new(),
        };
        let mut small = copy(3);
        assert_eq!(fit(&mut small, "r").unwrap(), 0);
        assert_eq!(ids(&small).len(), 3);

        let mut big = copy(200);
        let left = fit(&mut big, "r").unwrap();
        let kept = ids(&big);
        assert!(
            left > 0 && kept.len() > 10,
            "kept {}, left {left}",
            kept.len()
        );
        assert_eq!(kept.len() as u64 + left, 200);
        assert_eq!(kept, ids(&copy(kept.len())), "the first ones, in order");
        assert!(task_body(&big, "r").unwrap().len() <= TASK_LIMIT);
        assert!(
            task_body(&copy(kept.len() + 1), "r").unwrap().len() > TASK_LIMIT,
            "as many as fit"
        );
    }
}
