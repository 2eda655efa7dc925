//! Which Pravega scopes a request sees, by the Kubernetes namespace in its
//! path (`--namespace-scopes`, `--namespace-scope`): a stream outside them
//! is served to nobody in that namespace, whatever RBAC allows there.

use crate::config::{NamespaceScope, NamespaceScopes};
use std::collections::HashMap;

pub struct ScopePolicy {
    mode: NamespaceScopes,
    listed: HashMap<String, Vec<String>>,
}

/// The scopes one request sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visible<'a> {
    All,
    Only(&'a [String]),
    One(&'a str),
    Nothing,
}

impl Visible<'_> {
    pub fn allows(&self, scope: &str) -> bool {
        match self {
            Visible::All => true,
            Visible::Only(scopes) => scopes.iter().any(|s| s == scope),
            Visible::One(only) => *only == scope,
            Visible::Nothing => false,
        }
    }
}

impl ScopePolicy {
    pub fn new(mode: NamespaceScopes, listed: &[NamespaceScope]) -> Self {
        let mut by_namespace: HashMap<String, Vec<String>> = HashMap::new();
        for entry in listed {
            by_namespace.entry(entry.namespace.clone()).or_default().extend(entry.scopes.iter().cloned());
        }
        ScopePolicy { mode, listed: by_namespace }
    }

    /// What a request in `namespace` sees; `None` for root-scoped objects,
    /// which only `all` lets see anything (reading them takes cluster-wide
    /// RBAC).
    pub fn visible<'a>(&'a self, namespace: Option<&'a str>) -> Visible<'a> {
        match (namespace, self.mode) {
            (Some(namespace), mode) => match (self.listed.get(namespace), mode) {
                (Some(scopes), _) => Visible::Only(scopes),
                (None, NamespaceScopes::All) => Visible::All,
                (None, NamespaceScopes::Same) => Visible::One(namespace),
                (None, NamespaceScopes::Listed) => Visible::Nothing,
            },
            (None, NamespaceScopes::All) => Visible::All,
            (None, _) => Visible::Nothing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(mode: NamespaceScopes) -> ScopePolicy {
        let entry = |namespace: &str, scopes: &[&str]| NamespaceScope {
            namespace: namespace.into(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        };
        ScopePolicy::new(mode, &[entry("flink", &["a"]), entry("flink", &["b"])])
    }

    #[test]
    fn listed_namespaces_see_their_scopes_in_every_mode() {
        for mode in [NamespaceScopes::All, NamespaceScopes::Same, NamespaceScopes::Listed] {
            let p = policy(mode);
            let visible = p.visible(Some("flink"));
            assert!(visible.allows("a") && visible.allows("b") && !visible.allows("flink"), "{mode:?}");
        }
    }

    #[test]
    fn other_namespaces_follow_the_mode() {
        let (all, same, listed) = (policy(NamespaceScopes::All), policy(NamespaceScopes::Same), policy(NamespaceScopes::Listed));
        assert_eq!(all.visible(Some("ops")), Visible::All);
        assert_eq!(all.visible(None), Visible::All);
        assert!(same.visible(Some("ops")).allows("ops") && !same.visible(Some("ops")).allows("a"));
        assert_eq!(same.visible(None), Visible::Nothing);
        assert_eq!(listed.visible(Some("ops")), Visible::Nothing);
        assert_eq!(listed.visible(None), Visible::Nothing);
    }
}
