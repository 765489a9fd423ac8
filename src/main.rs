//! The `mimeo` binary: local mode, demo, worker, crdgen.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use kube::CustomResourceExt;

use mimeo::api::*;
use mimeo::local::delete::{delete, targets_from_args, targets_from_inputs};
use mimeo::local::describe::describe;
use mimeo::local::get::{Output, get};
use mimeo::local::{Local, read_inputs};

/// What `mimeo` and `mimeo local` exit with, for scripts (shown by `--help`).
const EXIT_CODES: &str = "Exit codes:
  0  everything succeeded
  1  an operation failed (each failure is listed on stderr), or a transient error stopped the
     command (media or API server unreachable): running it again may succeed
  2  the command line is wrong (an unknown flag or kind, a bad selector, a name that is none)
  3  a permanent error stopped the command (invalid input, damaged media, a refused target):
     running it again will not help until the cause is fixed";

/// Logical duplication of backup data.
#[derive(Parser)]
#[command(name = "mimeo", version, about, after_help = EXIT_CODES)]
struct Cli {
    /// Log as JSON lines.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of the operator's flags does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// The embedded default: reconcile YAML resources without a cluster.
    #[command(after_help = EXIT_CODES)]
    Local {
        /// State directory (resources, status, catalog); before or after the verb.
        #[arg(long, global = true, default_value = ".mimeo")]
        state: PathBuf,
        #[command(subcommand)]
        command: LocalCommand,
    },
    /// Back up, duplicate and restore sample data, and print a summary. No arguments needed.
    Demo {
        /// Directory for data, media and state (default /tmp/mimeo-example).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Run one task (JSON) with the executor, as a worker pod does.
    Worker {
        /// Task file (JSON); `-` for standard input.
        #[arg(long)]
        task: PathBuf,
    },
    /// Print the CustomResourceDefinitions as YAML.
    Crdgen,
    /// Run the Kubernetes operator (in cluster, or out of cluster with a kubeconfig).
    Operator {
        /// Address of /metrics, /healthz and /readyz.
        #[arg(long, default_value = "0.0.0.0:8080")]
        metrics_addr: std::net::SocketAddr,
        /// Watch only these namespaces (all when empty).
        #[arg(long, env = "MIMEO_WATCH_NAMESPACES", value_delimiter = ',')]
        namespaces: Vec<String>,
        /// Image of worker pods.
        #[arg(long, env = "MIMEO_WORKER_IMAGE")]
        worker_image: String,
        /// Service account of worker pods.
        #[arg(
            long,
            env = "MIMEO_WORKER_SERVICE_ACCOUNT",
            default_value = "mimeo-worker"
        )]
        worker_service_account: String,
        /// Upper bound on one worker run, seconds.
        #[arg(
            long,
            env = "MIMEO_WORKER_ACTIVE_DEADLINE_SECONDS",
            default_value_t = 21600
        )]
        worker_active_deadline_seconds: i64,
        /// Retries of a failed worker pod.
        #[arg(long, env = "MIMEO_WORKER_BACKOFF_LIMIT", default_value_t = 3)]
        worker_backoff_limit: i32,
        /// Finished worker Jobs are removed after this many seconds.
        #[arg(
            long,
            env = "MIMEO_WORKER_TTL_SECONDS_AFTER_FINISHED",
            default_value_t = 3600
        )]
        worker_ttl_seconds_after_finished: i32,
        /// Image pull policy of worker pods.
        #[arg(long, env = "MIMEO_WORKER_IMAGE_PULL_POLICY")]
        worker_image_pull_policy: Option<String>,
        /// Resources of worker containers, as JSON (`{"requests":{"cpu":"100m"}}`).
        #[arg(long, env = "MIMEO_WORKER_RESOURCES", value_parser = json_arg::<ResourceRequirements>)]
        worker_resources: Option<Json<ResourceRequirements>>,
        /// Node selector of worker pods, as a JSON object.
        #[arg(long, env = "MIMEO_WORKER_NODE_SELECTOR", value_parser = json_arg::<BTreeMap<String, String>>)]
        worker_node_selector: Option<Json<BTreeMap<String, String>>>,
        /// Tolerations of worker pods, as a JSON list.
        #[arg(long, env = "MIMEO_WORKER_TOLERATIONS", value_parser = json_arg::<Vec<Toleration>>)]
        worker_tolerations: Option<Json<Vec<Toleration>>>,
        /// Namespace of the Lease that keeps one operator active (the pod's namespace); no
        /// Lease when unset, e.g. out of cluster.
        #[arg(long, env = "POD_NAMESPACE")]
        lease_namespace: Option<String>,
        /// This operator's identity in the Lease (the pod's name).
        #[arg(long, env = "POD_NAME", default_value = "mimeo-operator")]
        lease_holder: String,
        /// Seconds the Lease stays valid without renewal.
        #[arg(long, default_value_t = 15)]
        lease_duration_seconds: u64,
        /// Seconds an Expired catalog entry stays visible before it is deleted.
        #[arg(
            long,
            env = "MIMEO_EXPIRED_ENTRY_RETENTION_SECONDS",
            default_value_t = 86400
        )]
        expired_entry_retention_seconds: u64,
    },
}

/// A flag given as JSON (the chart passes structured worker settings as JSON in env vars). A
/// newtype, so clap takes a JSON list as one value.
#[derive(Clone, Debug)]
struct Json<T>(T);

fn json_arg<T: serde::de::DeserializeOwned>(s: &str) -> Result<Json<T>, String> {
    serde_json::from_str(s)
        .map(Json)
        .map_err(|e| format!("not valid JSON for this setting: {e}"))
}

#[derive(Subcommand)]
enum LocalCommand {
    /// Apply resources and reconcile everything to completion.
    Apply {
        /// File or directory of YAML (repeatable).
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
    },
    /// Print resources with their status.
    Get {
        /// Kind (mediaclasses, backuptrails, duplicationtrails, duplicationpolicies, restores,
        /// catalogentries, or their short names).
        kind: String,
        /// One resource.
        name: Option<String>,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: Output,
        /// Label selector `key=value`.
        #[arg(short = 'l', long)]
        selector: Option<String>,
    },
    /// Delete resources (`KIND NAME...`, `KIND/NAME...` or `-f FILE`). What they made stays:
    /// catalog entries, media data, restored files.
    Delete {
        /// Kind and names, or KIND/NAME pairs.
        args: Vec<String>,
        /// File or directory of YAML whose resources are deleted (repeatable).
        #[arg(short = 'f', long = "filename")]
        files: Vec<PathBuf>,
        /// Say nothing of resources that are not there.
        #[arg(long)]
        ignore_not_found: bool,
    },
    /// Show one resource in plain words: spec, status, conditions, and a trail's catalog.
    Describe {
        /// Kind (as for `get`).
        kind: String,
        /// Name.
        name: String,
    },
    /// Rebuild the catalog from the manifests on the media.
    Rescan,
    /// Re-read every Valid copy and check digests; damaged copies become Missing.
    Verify {
        /// Only this trail.
        trail: Option<String>,
    },
}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MIMEO_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn crds() -> String {
    [
        serde_yaml::to_string(&MediaClass::crd()),
        serde_yaml::to_string(&BackupTrail::crd()),
        serde_yaml::to_string(&DuplicationTrail::crd()),
        serde_yaml::to_string(&DuplicationPolicy::crd()),
        serde_yaml::to_string(&Restore::crd()),
        serde_yaml::to_string(&CatalogEntry::crd()),
    ]
    .into_iter()
    .map(|r| r.expect("CRDs serialize"))
    .collect::<Vec<_>>()
    .join("---\n")
}

fn report(r: mimeo::local::ApplyReport) -> ExitCode {
    if r.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!("{} failure(s):", r.failures.len());
        for f in r.failures {
            eprintln!("  {f}");
        }
        ExitCode::FAILURE
    }
}

async fn run(cli: Cli) -> mimeo::Result<ExitCode> {
    match cli.command {
        Command::Crdgen => {
            print!("{}", crds());
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo { dir } => mimeo::demo::run(dir).await.map(|_| ExitCode::SUCCESS),
        Command::Operator {
            metrics_addr,
            namespaces,
            worker_image,
            worker_service_account,
            worker_active_deadline_seconds,
            worker_backoff_limit,
            worker_ttl_seconds_after_finished,
            worker_image_pull_policy,
            worker_resources,
            worker_node_selector,
            worker_tolerations,
            lease_namespace,
            lease_holder,
            lease_duration_seconds,
            expired_entry_retention_seconds,
        } => {
            let worker = mimeo::operator::jobs::WorkerConfig {
                image: worker_image,
                service_account: worker_service_account,
                active_deadline_seconds: worker_active_deadline_seconds,
                backoff_limit: worker_backoff_limit,
                ttl_seconds_after_finished: worker_ttl_seconds_after_finished,
                resources: worker_resources.map(|j| j.0),
                image_pull_policy: worker_image_pull_policy.filter(|p| !p.is_empty()),
                node_selector: worker_node_selector.map(|j| j.0).unwrap_or_default(),
                tolerations: worker_tolerations.map(|j| j.0).unwrap_or_default(),
            };
            let lease = lease_namespace.map(|namespace| mimeo::operator::lease::LeaseConfig {
                namespace,
                holder: lease_holder,
                duration: std::time::Duration::from_secs(lease_duration_seconds),
            });
            if lease.is_none() {
                tracing::warn!("no POD_NAMESPACE or --lease-namespace: running without a Lease");
            }
            mimeo::operator::run(mimeo::operator::OperatorArgs {
                metrics_addr,
                namespaces,
                worker,
                lease,
                expired_entry_retention: std::time::Duration::from_secs(
                    expired_entry_retention_seconds,
                ),
            })
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Worker { task } => {
            let text = if task.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).map_err(|e| mimeo::Error::io("-", e))?
            } else {
                std::fs::read_to_string(&task).map_err(|e| mimeo::Error::io(&task, e))?
            };
            let mut task: mimeo::engine::task::Task = serde_json::from_str(&text).map_err(|e| {
                mimeo::engine::error::EngineError::Decode {
                    what: "task".into(),
                    detail: e.to_string(),
                }
            })?;
            task.fill_secrets(&mimeo::operator::jobs::secret_from_env)?;
            // In a pod the operator sets MIMEO_NAMESPACE: the results go to the catalog there.
            let outcome = match std::env::var("MIMEO_NAMESPACE") {
                Ok(ns) if !ns.is_empty() => mimeo::worker::run_in_pod(&task, &ns).await?,
                _ => mimeo::worker::execute(&task).await?,
            };
            // The entries are in the catalog (or the manifest); the log gets the figures.
            let names: Vec<String> = outcome.entries.iter().map(|e| e.object_name()).collect();
            println!(
                "{}",
                serde_json::json!({
                    "entries": names,
                    "bytesRead": outcome.bytes_read,
                    "bytesWritten": outcome.bytes_written,
                    "seconds": outcome.seconds,
                    "notes": outcome.notes,
                })
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Local { state, command } => {
            let mut local = Local::new(state.clone());
            match command {
                LocalCommand::Apply { files } => {
                    let inputs = read_inputs(&files)?;
                    let _lock = local.state.lock()?;
                    Ok(report(local.apply(inputs).await?))
                }
                LocalCommand::Get {
                    kind,
                    name,
                    output,
                    selector,
                } => {
                    print!(
                        "{}",
                        get(
                            &local.state,
                            &kind,
                            name.as_deref(),
                            selector.as_deref(),
                            output
                        )?
                    );
                    Ok(ExitCode::SUCCESS)
                }
                LocalCommand::Delete {
                    args,
                    files,
                    ignore_not_found,
                } => {
                    let mut targets = targets_from_inputs(&read_inputs(&files)?);
                    if !args.is_empty() || files.is_empty() {
                        targets.extend(targets_from_args(&args)?);
                    }
                    let _lock = local.state.lock()?;
                    let done = delete(&local.state, &targets, ignore_not_found)?;
                    for line in &done.lines {
                        println!("{line}");
                    }
                    for line in &done.not_found {
                        eprintln!("{line}");
                    }
                    Ok(match done.not_found.is_empty() {
                        true => ExitCode::SUCCESS,
                        false => ExitCode::FAILURE,
                    })
                }
                LocalCommand::Describe { kind, name } => {
                    print!("{}", describe(&local.state, &kind, &name)?);
                    Ok(ExitCode::SUCCESS)
                }
                LocalCommand::Rescan => {
                    let _lock = local.state.lock()?;
                    Ok(report(local.rescan().await?))
                }
                LocalCommand::Verify { trail } => {
                    let _lock = local.state.lock()?;
                    Ok(report(local.verify(trail.as_deref()).await?))
                }
            }
        }
    }
}

/// Tunes glibc's malloc for a process that moves 1-2 MiB buffers all day:
/// - at most 2 arenas: by default glibc gives each busy thread its own (up to 8 per core), and
///   block buffers allocated on one runtime thread and freed on another stayed cached across
///   many of them, so peak RSS varied from run to run and grew with the size of a work item;
/// - buffers up to 32 MiB come from the heap, and up to 128 MiB of free heap is kept rather than
///   given back: otherwise each buffer was a fresh mmap whose pages the kernel faulted in and
///   zeroed, and munmapped again (perf: page faults and page clearing were a fifth of a Media
///   copy's samples; 60,000-90,000 minor faults per 512 MiB copied, 7,500-9,000 after). Peak
///   RSS grows by about 10 MiB, as much as the buffers in flight.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_malloc() {
    // SAFETY: runs first in main, before any other thread exists; mallopt only tunes malloc.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_malloc() {}

fn main() -> ExitCode {
    tune_malloc();
    // kube (ring) and the AWS SDK (aws-lc-rs) both bring a rustls crypto provider: pick one
    // for the process, or rustls cannot choose and panics on the first TLS connection.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    init_tracing(cli.log_json);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            if matches!(e, mimeo::Error::Usage(_)) {
                ExitCode::from(mimeo::error::EXIT_USAGE)
            } else if e.is_permanent() {
                ExitCode::from(mimeo::error::EXIT_PERMANENT)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_lists_the_exit_codes_and_state_follows_the_verb() {
        for args in [vec!["mimeo", "--help"], vec!["mimeo", "local", "--help"]] {
            let Err(help) = Cli::try_parse_from(&args) else {
                panic!("{args:?} printed no help");
            };
            let help = help.to_string();
            assert!(
                help.contains("Exit codes:") && help.contains("  3  a permanent error"),
                "{args:?}: {help}"
            );
        }
        let cli = Cli::try_parse_from(["mimeo", "local", "get", "restores", "--state", "/tmp/s"])
            .unwrap();
        let Command::Local { state, .. } = cli.command else {
            panic!("not local");
        };
        assert_eq!(state, PathBuf::from("/tmp/s"));
    }

    #[test]
    fn structured_worker_settings_parse_as_json() {
        let cli = Cli::try_parse_from([
            "mimeo",
            "operator",
            "--worker-image=mimeo:1",
            r#"--worker-tolerations=[{"key":"media","operator":"Exists"},{"key":"b"}]"#,
            r#"--worker-node-selector={"disk":"fast"}"#,
            r#"--worker-resources={"limits":{"memory":"256Mi"}}"#,
        ])
        .unwrap();
        let Command::Operator {
            worker_tolerations,
            worker_node_selector,
            worker_resources,
            ..
        } = cli.command
        else {
            panic!("not the operator command");
        };
        assert_eq!(worker_tolerations.unwrap().0.len(), 2);
        assert_eq!(worker_node_selector.unwrap().0["disk"], "fast");
        assert!(
            worker_resources
                .unwrap()
                .0
                .limits
                .unwrap()
                .contains_key("memory")
        );
        let bad = Cli::try_parse_from([
            "mimeo",
            "operator",
            "--worker-image=x",
            "--worker-tolerations=[{",
        ]);
        assert!(bad.err().unwrap().to_string().contains("not valid JSON"));
    }
}
