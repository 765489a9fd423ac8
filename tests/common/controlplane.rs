//! A real Kubernetes control plane for Rust tests: `e2e/bin/mimeo-controlplane` (etcd,
//! kube-apiserver, kube-controller-manager; no node) on loopback with a fresh data directory,
//! Mimeo's CRDs applied, stopped on drop. `scripts/install-test-tools.sh` builds it (with
//! kubectl) from Go modules, as the e2e suite does.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kube::config::{KubeConfigOptions, Kubeconfig};

/// A running control plane; dropping it stops it (SIGTERM) and removes its data.
pub struct ControlPlane {
    pub kubeconfig: PathBuf,
    child: Child,
    dir: tempfile::TempDir,
}

fn tool(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("e2e/bin")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/install-test-tools.sh (it builds it from Go modules)",
        path.display()
    );
    path
}

impl ControlPlane {
    /// Starts the control plane, waits until it is ready, and applies `crds/crds.yaml`.
    pub fn start() -> ControlPlane {
        let dir = tempfile::tempdir().expect("create the control plane's data dir");
        let out = dir.path().join("controlplane.out");
        let child = Command::new(tool("mimeo-controlplane"))
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--port", "0"])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mimeo-controlplane");
        let mut cp = ControlPlane {
            kubeconfig: dir.path().join("admin.kubeconfig"),
            child,
            dir,
        };
        let started = Instant::now();
        loop {
            let text = std::fs::read_to_string(&out).unwrap_or_default();
            if text.lines().any(|l| l == "ready") {
                break;
            }
            if let Ok(Some(status)) = cp.child.try_wait() {
                panic!("mimeo-controlplane exited ({status}) before ready:\n{text}");
            }
            assert!(
                started.elapsed() < Duration::from_secs(300),
                "control plane not ready in 300 s:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let crds = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds/crds.yaml");
        cp.kubectl(&["apply", "--server-side", "-f", crds.to_str().unwrap()]);
        cp.kubectl(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd",
            "--all",
        ]);
        cp
    }

    /// Runs kubectl against the control plane; panics with its output on failure.
    pub fn kubectl(&self, args: &[&str]) -> String {
        let out = Command::new(tool("kubectl"))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .expect("run kubectl");
        assert!(
            out.status.success(),
            "kubectl {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A client of the control plane, as its admin.
    pub async fn client(&self) -> kube::Client {
        // The crypto provider the binary installs in main.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig).expect("read admin.kubeconfig");
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .expect("client config");
        kube::Client::try_from(config).expect("client")
    }

    /// The control plane's data directory (component logs are `*.log` in it).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
