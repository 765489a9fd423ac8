//! A real S3 server for tests: `s3s-fs` on loopback, with a fresh data directory, killed on drop.
//!
//! The binary is found via `MIMEO_S3S_FS`, then `PATH`, then `$HOME/.cargo/bin/s3s-fs`;
//! `scripts/install-test-tools.sh` installs it.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use mimeo::media::s3::{S3Config, S3Credentials};

/// A running `s3s-fs`; dropping it kills the server and removes its data.
pub struct S3Server {
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
    child: Child,
    /// Holds the data directory (`data/`) and the server's output (`server.log`).
    dir: tempfile::TempDir,
}

impl S3Server {
    /// Starts a server on a free loopback port and waits until it accepts connections.
    pub fn start() -> S3Server {
        let binary = find_binary();
        let dir = tempfile::tempdir().expect("create temp dir for s3s-fs");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("create s3s-fs data dir");
        let (access_key, secret_key) = ("mimeo-test".to_owned(), "mimeo-test-secret".to_owned());
        // The free port can be taken between probing and binding; try a few.
        for _ in 0..5 {
            let port = free_port();
            let log = std::fs::File::create(dir.path().join("server.log")).expect("create log");
            let mut child = Command::new(&binary)
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--access-key", &access_key, "--secret-key", &secret_key])
                .arg(&data)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("clone log handle"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
            if wait_ready(&mut child, SocketAddr::from(([127, 0, 0, 1], port))) {
                return S3Server {
                    endpoint: format!("http://127.0.0.1:{port}"),
                    access_key,
                    secret_key,
                    child,
                    dir,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
        panic!("s3s-fs did not start; its output:\n{log}");
    }

    /// The Secret `s3-creds` with this server's keys, as YAML for `mimeo apply`.
    pub fn secret_yaml(&self) -> String {
        format!(
            "apiVersion: v1
kind: Secret
metadata: {{name: s3-creds}}
stringData:
  AWS_ACCESS_KEY_ID: {}
  AWS_SECRET_ACCESS_KEY: {}
---
",
            self.access_key, self.secret_key
        )
    }

    /// Every file the server keeps (objects and its own bookkeeping), below its data dir.
    pub fn data_files(&self) -> Vec<PathBuf> {
        super::cli::files_below(&self.dir.path().join("data"))
    }

    /// The names of [`S3Server::data_files`]: objects, and s3s-fs's own `.upload-ID.json`
    /// (an open multipart upload) and `.upload_id-ID.part-N` (a part).
    pub fn data_file_names(&self) -> Vec<String> {
        self.data_files()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    }

    /// A plain SDK client on this server, to look behind the store's back.
    pub fn client(&self) -> aws_sdk_s3::Client {
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(&self.endpoint)
            .region(Region::from_static("us-east-1"))
            .credentials_provider(Credentials::new(
                &self.access_key,
                &self.secret_key,
                None,
                None,
                "test",
            ))
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    /// Creates a bucket (names need at least 3 characters).
    pub async fn create_bucket(&self, name: &str) {
        self.client()
            .create_bucket()
            .bucket(name)
            .send()
            .await
            .unwrap_or_else(|e| panic!("create bucket {name}: {e:?}"));
    }

    /// A store configuration for `bucket` and `prefix` on this server.
    pub fn config(&self, bucket: &str, prefix: &str) -> S3Config {
        S3Config {
            endpoint: Some(self.endpoint.clone()),
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
            region: Some("us-east-1".to_owned()),
            force_path_style: true,
            credentials: Some(S3Credentials {
                access_key_id: self.access_key.clone(),
                secret_access_key: self.secret_key.clone(),
            }),
            track_uploads: true,
        }
    }

    /// The server's root directory (buckets are its subdirectories).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A failing test shows what the server said.
        if std::thread::panicking() {
            let log =
                std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            eprintln!("--- last lines of the s3s-fs log\n{}", tail.join("\n"));
        }
    }
}

fn find_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("MIMEO_S3S_FS") {
        return PathBuf::from(path);
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("s3s-fs"));
    let in_cargo_home =
        std::env::var_os("HOME").map(|home| Path::new(&home).join(".cargo/bin/s3s-fs"));
    on_path
        .chain(in_cargo_home)
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "s3s-fs not found (MIMEO_S3S_FS, PATH, ~/.cargo/bin); \
                 run scripts/install-test-tools.sh"
            )
        })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("find a free port")
        .port()
}

/// Waits until `addr` accepts connections; false if the server exited (port taken) or is slow.
fn wait_ready(child: &mut Child, addr: SocketAddr) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return false;
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}
