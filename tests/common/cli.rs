//! Driving the `mimeo` binary in local mode from integration tests: a temp directory with a
//! state dir, YAML written on the fly, and JSON views of `get`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use tempfile::TempDir;

/// Path of the binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_mimeo")
}

/// Result of one `mimeo` run, with its output as text.
#[derive(Debug)]
pub struct Run {
    /// Exit status.
    pub status: std::process::ExitStatus,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    fn from(o: Output) -> Run {
        Run {
            status: o.status,
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// True when the process exited with 0.
    pub fn ok(&self) -> bool {
        self.status.success()
    }

    /// Both streams, for messages and searching.
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// Panics with the output unless the run succeeded.
    pub fn expect_ok(self, what: &str) -> Run {
        assert!(self.ok(), "{what}: expected success, got {self}");
        self
    }

    /// Panics with the output if the run succeeded.
    pub fn expect_fail(self, what: &str) -> Run {
        assert!(!self.ok(), "{what}: expected failure, got {self}");
        self
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// One test's world: a temp dir holding the state dir, YAML files, data and media.
pub struct Env {
    /// Keeps the directory alive.
    pub tmp: TempDir,
}

impl Env {
    /// A fresh temp dir.
    pub fn new() -> Env {
        Env {
            tmp: tempfile::Builder::new()
                .prefix("mimeo-cli-")
                .tempdir()
                .unwrap(),
        }
    }

    /// The temp dir.
    pub fn root(&self) -> &Path {
        self.tmp.path()
    }

    /// A path inside the temp dir.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root().join(rel)
    }

    /// The state directory.
    pub fn state(&self) -> PathBuf {
        self.path("state")
    }

    /// Writes `text` to `yaml/NAME` and returns its path.
    pub fn yaml(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path("yaml").join(name);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, text).unwrap();
        p
    }

    /// A `mimeo local --state STATE ...` command, not yet run.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.arg("local").arg("--state").arg(self.state()).args(args);
        c.env_remove("MIMEO_LOG");
        c
    }

    /// Runs `mimeo local --state STATE ARGS...`.
    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(self.command(args).output().expect("mimeo runs"))
    }

    /// Runs `apply -f F...`.
    pub fn apply(&self, files: &[&Path]) -> Run {
        let mut args: Vec<String> = vec!["apply".into()];
        for f in files {
            args.push("-f".into());
            args.push(f.display().to_string());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.run(&args)
    }

    /// `get KIND [NAME] -o json`, parsed.
    pub fn get(&self, kind: &str, name: Option<&str>) -> Vec<Value> {
        let mut args = vec!["get", kind];
        if let Some(n) = name {
            args.push(n);
        }
        args.extend(["-o", "json"]);
        let r = self.run(&args).expect_ok("get");
        let v = serde_json::from_str::<Value>(&r.stdout)
            .unwrap_or_else(|e| panic!("get {kind} -o json is not JSON ({e}): {}", r.stdout));
        // One object by name, else a List, as kubectl prints them.
        match name {
            Some(_) => vec![v],
            None => {
                assert_eq!(v["kind"], "List", "get {kind} -o json: {v}");
                v["items"].as_array().expect("a List's items").clone()
            }
        }
    }

    /// One resource by name, as JSON.
    pub fn get_one(&self, kind: &str, name: &str) -> Value {
        let mut v = self.get(kind, Some(name));
        assert_eq!(v.len(), 1, "get {kind} {name}: {v:?}");
        v.remove(0)
    }

    /// Catalog entries as JSON.
    pub fn entries(&self) -> Vec<Value> {
        self.get("catalogentries", None)
    }

    /// Names of the catalog entries in `state` (e.g. `Valid`), optionally on one trail, sorted.
    pub fn entry_names(&self, trail: Option<&str>, state: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .entries()
            .iter()
            .filter(|e| trail.is_none_or(|t| e["spec"]["trail"] == t))
            .filter(|e| e["status"]["state"] == state)
            .map(|e| e["metadata"]["name"].as_str().unwrap().to_string())
            .collect();
        out.sort();
        out
    }

    /// Every file below the state dir's `resources` directory (empty if there is none).
    pub fn resource_files(&self) -> Vec<PathBuf> {
        files_below(&self.state().join("resources"))
    }
}

impl Default for Env {
    fn default() -> Self {
        Env::new()
    }
}

/// Every regular file below `dir`, sorted; empty if `dir` does not exist.
pub fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(dir) else {
        return out;
    };
    for e in rd {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_below(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// Segment files (`*.seg`) below `dir`, sorted.
pub fn segments_below(dir: &Path) -> Vec<PathBuf> {
    files_below(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect()
}

/// A MediaClass with a filesystem backend.
pub fn media_class(
    name: &str,
    path: &Path,
    capacity: &str,
    block: &str,
    available: bool,
) -> String {
    format!(
        "apiVersion: mimeo.dev/v1alpha1
kind: MediaClass
metadata:
  name: {name}
spec:
  backend:
    filesystem:
      path: {path}
  volumeCapacity: {capacity}
  blockSize: {block}
  available: {available}
",
        path = path.display()
    )
}

/// A BackupTrail over `(work item, source dir)` pairs.
pub fn backup_trail<N: AsRef<str>, P: AsRef<Path>>(
    name: &str,
    media: &str,
    streams: u32,
    items: &[(N, P)],
) -> String {
    let mut s = format!(
        "apiVersion: mimeo.dev/v1alpha1
kind: BackupTrail
metadata:
  name: {name}
spec:
  mediaClassName: {media}
  retention: 30d
  streams: {streams}
  workItems:
"
    );
    for (w, p) in items {
        s.push_str(&format!(
            "    - {{name: {}, source: {{path: {}}}}}\n",
            w.as_ref(),
            p.as_ref().display()
        ));
    }
    s
}

/// A DuplicationTrail.
pub fn duplication_trail(name: &str, media: &str, retention: &str, layout: &str) -> String {
    format!(
        "apiVersion: mimeo.dev/v1alpha1
kind: DuplicationTrail
metadata:
  name: {name}
spec:
  mediaClassName: {media}
  retention: {retention}
  layout: {layout}
"
    )
}

/// A DuplicationPolicy copying everything of `source` to `target`.
pub fn duplication_policy(name: &str, source: &str, target: &str) -> String {
    format!(
        "apiVersion: mimeo.dev/v1alpha1
kind: DuplicationPolicy
metadata:
  name: {name}
spec:
  sourceTrails: [{source}]
  targets: [{target}]
"
    )
}

/// A Restore of the latest instance of `work_item` to `target`; `source` is a keyword.
pub fn restore(name: &str, work_item: &str, source: &str, target: &Path) -> String {
    format!(
        "apiVersion: mimeo.dev/v1alpha1
kind: Restore
metadata:
  name: {name}
spec:
  workItem: {work_item}
  source: {source}
  target:
    path: {}
",
        target.display()
    )
}

/// Writes `len` pseudo-random bytes to `path` (creating its directory).
pub fn random_file(path: &Path, len: usize, seed: u64) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, super::tree::pseudo_random_bytes(len, seed)).unwrap();
}

/// A MediaClass on an S3 bucket at `endpoint`, with the credentials of the Secret `s3-creds`
/// ([`super::s3server::S3Server::secret_yaml`]).
pub fn s3_media(
    endpoint: &str,
    name: &str,
    bucket: &str,
    prefix: &str,
    capacity: &str,
    block: &str,
) -> String {
    format!(
        "apiVersion: mimeo.dev/v1alpha1
kind: MediaClass
metadata: {{name: {name}}}
spec:
  backend:
    s3:
      endpoint: {endpoint}
      bucket: {bucket}
      prefix: {prefix}
      region: us-east-1
      forcePathStyle: true
      credentialsSecretRef: {{name: s3-creds}}
  volumeCapacity: {capacity}
  blockSize: {block}
---
"
    )
}
