//! The local state directory: applied resources (with their status) and the catalog, one file
//! per object, each replaced atomically, so a killed run leaves every file whole.

use std::path::{Path, PathBuf};

use kube::ResourceExt;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::validate::check_dns_subdomain;
use crate::api::*;
use crate::engine::catalog::Catalog;
use crate::engine::error::EngineError;
use crate::error::{Error, Result};

/// A backup run as it started: what makes a run killed after its commit, before its trail's
/// status was saved, find that commit when it runs again (the same session, whose manifest is
/// on the media, and the same backup time, hence the same instance ids) instead of backing
/// everything up a second time. The operator keeps a Job's whole task for the same reason.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartedRun {
    /// The run ([`crate::reconcile::backup::BackupDue::Now`]).
    pub run: String,
    /// Its write session.
    pub session: String,
    /// Its backup time.
    pub backup_time: chrono::DateTime<chrono::Utc>,
}

/// A state directory.
#[derive(Clone, Debug)]
pub struct StateDir {
    root: PathBuf,
}

/// Replaces `path` with `body` atomically and durably, unless it already holds exactly that:
/// an apply saves every resource, and an fsync per unchanged file was most of the fixed cost of
/// a run on a disk.
fn write_atomic(path: &Path, body: &[u8]) -> Result<()> {
    if std::fs::read(path).is_ok_and(|old| old == body) {
        return Ok(());
    }
    let dir = path.parent().expect("state files live in a directory");
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| Error::io(dir, e))?;
    std::io::Write::write_all(&mut tmp, body).map_err(|e| Error::io(path, e))?;
    tmp.as_file().sync_all().map_err(|e| Error::io(path, e))?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    match std::fs::read_dir(dir) {
        Ok(rd) => {
            for e in rd {
                let p = e.map_err(|e| Error::io(dir, e))?.path();
                if p.extension().is_some_and(|x| x == "yaml" || x == "json") {
                    out.push(p);
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(dir, e)),
    }
    out.sort();
    Ok(out)
}

fn load_yaml<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    Ok(serde_yaml::from_str(&text).map_err(|e| SpecError::Parse {
        source_name: path.display().to_string(),
        message: e.to_string(),
    })?)
}

impl StateDir {
    /// Opens (without creating) a state directory.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        StateDir { root: root.into() }
    }

    /// Takes the state directory for this process until the returned file is dropped: two
    /// runs at once would interleave their writes (one run's volumes under the other's
    /// catalog). Waits, saying so, while another process holds it; the kernel releases it when
    /// the holder ends, however it ends. Readers (`get`) need no lock: every file is replaced
    /// atomically.
    pub fn lock(&self) -> Result<std::fs::File> {
        std::fs::create_dir_all(&self.root).map_err(|e| Error::io(&self.root, e))?;
        let path = self.root.join(".lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => eprintln!(
                "waiting for another mimeo that uses {}",
                self.root.display()
            ),
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&path, e)),
        }
        file.lock().map_err(|e| Error::io(&path, e))?;
        Ok(file)
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn kind_dir(&self, kind: &str) -> PathBuf {
        self.root.join("resources").join(kind)
    }

    fn catalog_dir(&self) -> PathBuf {
        self.root.join("catalog")
    }

    fn run_path(&self, trail: &str) -> PathBuf {
        self.root.join("runs").join(format!("{trail}.json"))
    }

    /// Records that a backup run of `trail` starts (see [`StartedRun`]).
    pub fn save_run(&self, trail: &str, run: &StartedRun) -> Result<()> {
        let body = serde_json::to_vec_pretty(run).map_err(|e| encode("a started run", e))?;
        write_atomic(&self.run_path(trail), &body)
    }

    /// The run of `trail` recorded as started, if it is `run`.
    pub fn started_run(&self, trail: &str, run: &str) -> Result<Option<StartedRun>> {
        let path = self.run_path(trail);
        let body = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&path, e)),
        };
        let started: StartedRun =
            serde_json::from_slice(&body).map_err(|e| EngineError::Decode {
                what: path.display().to_string(),
                detail: e.to_string(),
            })?;
        Ok((started.run == run).then_some(started))
    }

    /// Forgets the started run of `trail`: its end is saved in the trail's status.
    pub fn clear_run(&self, trail: &str) -> Result<()> {
        let path = self.run_path(trail);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(&path, e)),
            _ => Ok(()),
        }
    }

    /// Removes the resource `name` of a canonical `kind` (`Secret` and `CatalogEntry`
    /// included); false when there was none. A deleted BackupTrail's started run goes with it.
    pub fn delete(&self, kind: &str, name: &str) -> Result<bool> {
        // The name becomes a file name: only a DNS name can be one here, never a path.
        check_dns_subdomain(name).map_err(|m| Error::Usage(format!("{kind} {name:?}: {m}")))?;
        let path = match kind {
            "CatalogEntry" => self.catalog_dir().join(format!("{name}.json")),
            _ => self.kind_dir(kind).join(format!("{name}.yaml")),
        };
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(Error::io(&path, e)),
        }
        if kind == "BackupTrail" {
            self.clear_run(name)?;
        }
        Ok(true)
    }

    /// Loads every applied resource.
    pub fn load_resources(&self) -> Result<ResourceSet> {
        let mut set = ResourceSet::default();
        for kind in [
            "Secret",
            "MediaClass",
            "BackupTrail",
            "DuplicationTrail",
            "DuplicationPolicy",
            "Restore",
        ] {
            for path in read_dir_sorted(&self.kind_dir(kind))? {
                let value: serde_yaml::Value = load_yaml(&path)?;
                set.insert(Resource::from_yaml(value, &path.display().to_string())?);
            }
        }
        Ok(set)
    }

    fn save<T: Serialize + ResourceExt>(&self, kind: &str, obj: &T) -> Result<()> {
        let body = serde_yaml::to_string(obj).map_err(|e| encode(kind, e))?;
        let path = self.kind_dir(kind).join(format!("{}.yaml", obj.name_any()));
        write_atomic(&path, body.as_bytes())
    }

    /// Saves every resource of a set (with status).
    pub fn save_resources(&self, set: &ResourceSet) -> Result<()> {
        for o in set.secrets.values() {
            self.save("Secret", o)?;
        }
        for o in set.media_classes.values() {
            self.save("MediaClass", o)?;
        }
        for o in set.backup_trails.values() {
            self.save("BackupTrail", o)?;
        }
        for o in set.duplication_trails.values() {
            self.save("DuplicationTrail", o)?;
        }
        for o in set.policies.values() {
            self.save("DuplicationPolicy", o)?;
        }
        for o in set.restores.values() {
            self.save("Restore", o)?;
        }
        Ok(())
    }

    /// Loads the catalog.
    pub fn load_catalog(&self) -> Result<Catalog> {
        let mut c = Catalog::default();
        for path in read_dir_sorted(&self.catalog_dir())? {
            let e: CatalogEntry = load_yaml(&path)?;
            c.insert(e.name_any(), std::sync::Arc::new(e));
        }
        Ok(c)
    }

    /// Writes one catalog entry.
    pub fn save_entry(&self, e: &CatalogEntry) -> Result<()> {
        let body = serde_json::to_vec_pretty(e).map_err(|e| encode("CatalogEntry", e))?;
        write_atomic(
            &self.catalog_dir().join(format!("{}.json", e.name_any())),
            &body,
        )
    }
}

fn encode(what: &str, e: impl std::fmt::Display) -> Error {
    EngineError::Encode {
        what: what.to_owned(),
        detail: e.to_string(),
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// A file that already holds the bytes is left alone (same inode: not replaced, so not
    /// fsynced again); other bytes replace it.
    #[test]
    fn only_changed_files_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kind").join("x.yaml");
        write_atomic(&path, b"a: 1\n").unwrap();
        let first = std::fs::metadata(&path).unwrap().ino();
        write_atomic(&path, b"a: 1\n").unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().ino(), first);
        write_atomic(&path, b"a: 2\n").unwrap();
        assert_ne!(std::fs::metadata(&path).unwrap().ino(), first);
        assert_eq!(std::fs::read(&path).unwrap(), b"a: 2\n");
    }
}
