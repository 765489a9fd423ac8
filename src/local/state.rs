//! The local state directory: applied resources (with their status) and the catalog, one file
//! per object, each replaced atomically, so a killed run leaves every file whole.

use std::path::{Path, PathBuf};

use kube::ResourceExt;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::*;
use crate::engine::catalog::Catalog;
use crate::error::{Error, Result};

/// A state directory.
#[derive(Clone, Debug)]
pub struct StateDir {
    root: PathBuf,
}

fn write_atomic(path: &Path, body: &[u8]) -> Result<()> {
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
    serde_yaml::from_str(&text).map_err(|e| Error::Parse {
        source_name: path.display().to_string(),
        message: e.to_string(),
    })
}

impl StateDir {
    /// Opens (without creating) a state directory.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        StateDir { root: root.into() }
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
        let body = serde_yaml::to_string(obj).map_err(|e| Error::Other(e.to_string()))?;
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
            c.entries.insert(e.name_any(), std::sync::Arc::new(e));
        }
        Ok(c)
    }

    /// Writes one catalog entry.
    pub fn save_entry(&self, e: &CatalogEntry) -> Result<()> {
        let body = serde_json::to_vec_pretty(e).map_err(|e| Error::Other(e.to_string()))?;
        write_atomic(
            &self.catalog_dir().join(format!("{}.json", e.name_any())),
            &body,
        )
    }
}
