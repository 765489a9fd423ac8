//! `mimeo local delete`: removes resources from the state directory, as `kubectl delete` removes
//! them from the API server. What they made stays, as in a cluster, where CatalogEntries have
//! no owner: a deleted trail's catalog entries and the data on its media are kept, and a
//! deleted Restore leaves its target as it is.

use super::apply::Input;
use super::get::canonical_kind;
use super::state::StateDir;
use crate::error::{Error, Result};

/// One resource to delete: a canonical kind and a name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub kind: &'static str,
    pub name: String,
}

/// The targets of a command line: `KIND NAME...` or `KIND/NAME...`, as kubectl takes them.
pub fn targets_from_args(args: &[String]) -> Result<Vec<Target>> {
    let kind = |k: &str| match k.to_lowercase().as_str() {
        "secret" | "secrets" => Ok("Secret"),
        _ => canonical_kind(k),
    };
    match args {
        [] => Err(Error::Usage(
            "nothing to delete: give KIND NAME..., KIND/NAME... or -f FILE".into(),
        )),
        [first, ..] if first.contains('/') => args
            .iter()
            .map(|a| {
                let (k, name) = a.split_once('/').ok_or_else(|| {
                    Error::Usage(format!(
                        "{a:?}: expected KIND/NAME, like the arguments before it"
                    ))
                })?;
                Ok(Target {
                    kind: kind(k)?,
                    name: name.to_owned(),
                })
            })
            .collect(),
        [_] => Err(Error::Usage(
            "no name given: delete KIND NAME... (local mode deletes no whole kind)".into(),
        )),
        [k, names @ ..] => {
            let kind = kind(k)?;
            Ok(names
                .iter()
                .map(|name| Target {
                    kind,
                    name: name.clone(),
                })
                .collect())
        }
    }
}

/// The targets of `-f` files: every resource they hold.
pub fn targets_from_inputs(inputs: &[Input]) -> Vec<Target> {
    inputs
        .iter()
        .map(|i| Target {
            kind: i.resource.kind(),
            name: i.resource.name(),
        })
        .collect()
}

/// What a delete did: the lines kubectl would print, and the targets that were not there.
#[derive(Debug, Default)]
pub struct Deleted {
    pub lines: Vec<String>,
    pub not_found: Vec<String>,
}

/// Deletes every target.
pub fn delete(state: &StateDir, targets: &[Target], ignore_not_found: bool) -> Result<Deleted> {
    let mut out = Deleted::default();
    for t in targets {
        let what = match t.kind {
            "Secret" => format!("secret {:?}", t.name),
            k => format!("{}.mimeo.dev {:?}", k.to_lowercase(), t.name),
        };
        if state.delete(t.kind, &t.name)? {
            out.lines.push(format!("{what} deleted"));
        } else if !ignore_not_found {
            out.not_found.push(format!("{what} not found"));
        }
    }
    Ok(out)
}
