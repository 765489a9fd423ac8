//! A real S3 server for tests on loopback, with a fresh data directory, killed on drop:
//! `s3s-fs` (small and fast, for most tests) or MinIO (the server users name; it lists
//! multipart uploads, so the sweep of orphaned uploads meets a real listing).
//!
//! `s3s-fs` is found via `MIMEO_S3S_FS`, then `PATH`, then `$HOME/.cargo/bin/s3s-fs`; MinIO via
//! `MIMEO_MINIO`, then `e2e/bin/minio`. `scripts/install-test-tools.sh` installs both (MinIO is
//! built from its Go module by `e2e/tools.sh`; AGPL, a test server only).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use mimeo::media::s3::{S3Config, S3Credentials};

/// Which S3 server runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    S3sFs,
    Minio,
}

/// A running S3 server; dropping it kills the server and removes its data.
pub struct S3Server {
    pub flavor: Flavor,
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
    child: Child,
    /// Holds the data directory (`data/`) and the server's output (`server.log`).
    dir: tempfile::TempDir,
}

impl S3Server {
    /// Starts `s3s-fs` on a free loopback port and waits until it accepts connections.
    pub fn start() -> S3Server {
        S3Server::launch(Flavor::S3sFs)
    }

    /// Starts MinIO (one drive) on a free loopback port and waits until it is ready.
    pub fn minio() -> S3Server {
        S3Server::launch(Flavor::Minio)
    }

    fn launch(flavor: Flavor) -> S3Server {
        let dir = tempfile::tempdir().expect("create temp dir for the S3 server");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("create the S3 server's data dir");
        let (access_key, secret_key) = ("mimeo-test".to_owned(), "mimeo-test-secret".to_owned());
        // The free port can be taken between probing and binding; try a few.
        for _ in 0..5 {
            let port = free_port();
            let log = std::fs::File::create(dir.path().join("server.log")).expect("create log");
            let mut command = match flavor {
                Flavor::S3sFs => {
                    let mut c = Command::new(find_s3s_fs());
                    c.args(["--host", "127.0.0.1", "--port", &port.to_string()])
                        .args(["--access-key", &access_key, "--secret-key", &secret_key])
                        .arg(&data);
                    c
                }
                Flavor::Minio => {
                    let mut c = Command::new(find_minio());
                    c.arg("server")
                        .arg(&data)
                        .args(["--address", &format!("127.0.0.1:{port}"), "--quiet"])
                        .arg("--certs-dir")
                        .arg(dir.path().join("certs"))
                        .env("MINIO_ROOT_USER", &access_key)
                        .env("MINIO_ROOT_PASSWORD", &secret_key)
                        .env("MINIO_BROWSER", "off")
                        .env("MINIO_UPDATE", "off");
                    c
                }
            };
            let mut child = command
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("clone log handle"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run the {flavor:?} server: {e}"));
            if wait_ready(&mut child, flavor, SocketAddr::from(([127, 0, 0, 1], port))) {
                return S3Server {
                    flavor,
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
        panic!("{flavor:?} did not start; its output:\n{log}");
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
    /// Only `s3s-fs` keeps one file per object; MinIO's layout is its own.
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
    pub fn create_bucket(&self, name: &str) {
        blocking(self.client().create_bucket().bucket(name).send())
            .unwrap_or_else(|e| panic!("create bucket {name}: {e:?}"));
    }

    /// The keys of the objects under `prefix` in `bucket`, listed by the server.
    pub fn object_keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let client = self.client();
        blocking(async move {
            let mut keys = Vec::new();
            let mut pages = client
                .list_objects_v2()
                .bucket(bucket)
                .prefix(prefix)
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                let page = page.unwrap_or_else(|e| panic!("list {bucket}/{prefix}: {e:?}"));
                keys.extend(
                    page.contents()
                        .iter()
                        .filter_map(|o| o.key().map(String::from)),
                );
            }
            keys
        })
    }

    /// The multipart uploads open under `prefix` in `bucket`: (key, upload id). MinIO lists
    /// the uploads of one exact key or of the whole bucket, so the bucket is listed and
    /// filtered here. `s3s-fs` cannot list them (see [`S3Server::data_file_names`]).
    pub fn open_uploads(&self, bucket: &str, prefix: &str) -> Vec<(String, String)> {
        assert_eq!(
            self.flavor,
            Flavor::Minio,
            "s3s-fs lacks ListMultipartUploads"
        );
        let client = self.client();
        blocking(async move {
            let mut open = Vec::new();
            let (mut key_marker, mut id_marker) = (None, None);
            loop {
                let page = client
                    .list_multipart_uploads()
                    .bucket(bucket)
                    .set_key_marker(key_marker.take())
                    .set_upload_id_marker(id_marker.take())
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("list uploads in {bucket}: {e:?}"));
                for u in page.uploads() {
                    if let (Some(key), Some(id)) = (u.key(), u.upload_id())
                        && key.starts_with(prefix)
                    {
                        open.push((key.to_owned(), id.to_owned()));
                    }
                }
                if page.is_truncated() != Some(true) {
                    return open;
                }
                key_marker = page.next_key_marker().map(String::from);
                id_marker = page.next_upload_id_marker().map(String::from);
            }
        })
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

    /// The server's root directory (with `s3s-fs`, buckets are its subdirectories).
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
            eprintln!(
                "--- last lines of the {:?} log\n{}",
                self.flavor,
                tail.join("\n")
            );
        }
    }
}

/// Runs `future` to its end on a runtime of its own, on a thread of its own: callable from
/// plain tests and from inside a test's runtime alike.
fn blocking<F: std::future::Future + Send>(future: F) -> F::Output
where
    F::Output: Send,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime for the test's S3 calls")
                    .block_on(future)
            })
            .join()
            .expect("the S3 call's thread")
    })
}

fn find_minio() -> PathBuf {
    let path = std::env::var_os("MIMEO_MINIO").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("e2e/bin/minio"),
        PathBuf::from,
    );
    assert!(
        path.is_file(),
        "MinIO not found at {} (MIMEO_MINIO, e2e/bin/minio); run scripts/install-test-tools.sh",
        path.display()
    );
    path
}

fn find_s3s_fs() -> PathBuf {
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

/// Waits until the server at `addr` serves requests (MinIO: its readiness check answers 200);
/// false if the server exited (port taken) or is slow.
fn wait_ready(child: &mut Child, flavor: Flavor, addr: SocketAddr) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return false;
        }
        if let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            match flavor {
                Flavor::S3sFs => return true,
                Flavor::Minio if minio_ready(&mut stream, addr) => return true,
                Flavor::Minio => {}
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Asks MinIO's readiness endpoint over `stream`; true on `200`.
fn minio_ready(stream: &mut TcpStream, addr: SocketAddr) -> bool {
    use std::io::{Read, Write};
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET /minio/health/ready HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    let mut answer = [0u8; 12];
    stream.write_all(request.as_bytes()).is_ok()
        && stream.read_exact(&mut answer).is_ok()
        && answer.ends_with(b" 200")
}
