//! The reconcile core: per kind, the rules both drivers apply (the operator in a cluster,
//! local mode on a state directory), so that the same YAML behaves the same in both. Pure:
//! nothing here calls an API server, touches the media or reads the clock.

pub mod backup;
pub mod media_class;
pub mod policy;
pub mod restore;
pub mod schedule;
pub mod trail;

/// An Event a decision asks for. The operator sends it as a Kubernetes Event on the object;
/// local mode prints it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Warning (something needs attention) or Normal.
    pub warning: bool,
    /// CamelCase reason, e.g. `CopyDamaged`.
    pub reason: &'static str,
    /// What happened, in words.
    pub note: String,
}

impl Event {
    pub fn normal(reason: &'static str, note: String) -> Event {
        Event {
            warning: false,
            reason,
            note,
        }
    }

    pub fn warning(reason: &'static str, note: String) -> Event {
        Event {
            warning: true,
            reason,
            note,
        }
    }
}
