//! Authorization by SubjectAccessReview, with the request attributes the
//! kube-apiserver would derive from the same path (its RequestInfo rules),
//! so RBAC rules written for prometheus-adapter apply unchanged.

use super::authn::UserInfo;
use super::cache::ReviewCache;
use super::AuthError;
use k8s_openapi::api::authorization::v1::{NonResourceAttributes, ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
use std::time::Duration;

/// What a request asks to do, as a SubjectAccessReview describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attributes {
    Resource { verb: String, group: String, version: String, resource: String, subresource: String, name: String, namespace: String },
    NonResource { verb: String, path: String },
}

impl Attributes {
    /// Derives attributes as `k8s.io/apiserver` RequestInfoFactory does:
    /// `/apis/{group}/{version}/[namespaces/{ns}/]{resource}[/{name}[/{subresource}]]`
    /// is a resource request; everything else (discovery, /metrics) is not.
    pub fn of(method: &str, path: &str) -> Self {
        let http_verb = method.to_ascii_lowercase();
        let non_resource = || Attributes::NonResource { verb: http_verb.clone(), path: path.to_owned() };
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let ["apis", group, version, rest @ ..] = parts.as_slice() else { return non_resource() };
        if rest.is_empty() {
            return non_resource();
        }
        let (namespace, rest) = match rest {
            ["namespaces", namespace, rest @ ..] if !rest.is_empty() && !matches!(rest[0], "status" | "finalize") => (*namespace, rest),
            ["namespaces", namespace] => ("", &["namespaces", *namespace][..]),
            _ => ("", rest),
        };
        let part = |i: usize| rest.get(i).copied().unwrap_or("").to_owned();
        let name = part(1);
        let verb = match http_verb.as_str() {
            "get" | "head" if name.is_empty() => "list".to_owned(),
            "head" => "get".to_owned(),
            other => other.to_owned(),
        };
        Attributes::Resource {
            verb,
            group: (*group).to_owned(),
            version: (*version).to_owned(),
            resource: part(0),
            subresource: part(2),
            name,
            namespace: namespace.to_owned(),
        }
    }

    /// "cannot get resource "deployments.apps/m" in API group ... in the
    /// namespace ...", as the kube-apiserver words a 403.
    pub fn describe(&self) -> String {
        match self {
            Attributes::Resource { verb, group, resource, subresource, namespace, .. } => {
                let resource = if subresource.is_empty() { resource.clone() } else { format!("{resource}/{subresource}") };
                let scope =
                    if namespace.is_empty() { "at the cluster scope".to_owned() } else { format!("in the namespace {namespace:?}") };
                format!("cannot {verb} resource {resource:?} in API group {group:?} {scope}")
            }
            Attributes::NonResource { verb, path } => format!("cannot {verb} path {path:?}"),
        }
    }
}

pub struct Authorizer {
    client: kube::Client,
    cache: ReviewCache<String, bool, AuthError>,
    allowed_ttl: Duration,
    denied_ttl: Duration,
}

impl Authorizer {
    pub fn new(client: kube::Client, allowed_ttl: Duration, denied_ttl: Duration) -> Self {
        Authorizer { client, cache: ReviewCache::new(), allowed_ttl, denied_ttl }
    }

    /// Ok if allowed; Forbidden if denied; ReviewUnavailable if the review
    /// could not be made (never allowed on error).
    pub async fn authorize(&self, user: &UserInfo, attributes: &Attributes) -> Result<(), AuthError> {
        let spec = review_spec(user, attributes);
        let key = serde_json::to_string(&spec).unwrap_or_default();
        let allowed = self.cache.get_or_review(&key, || self.ask(spec)).await?;
        if allowed {
            Ok(())
        } else {
            Err(AuthError::Forbidden(format!("user {:?} {}", user.name, attributes.describe())))
        }
    }

    async fn ask(&self, spec: SubjectAccessReviewSpec) -> Result<(bool, Duration), AuthError> {
        let api: kube::Api<SubjectAccessReview> = kube::Api::all(self.client.clone());
        let review = SubjectAccessReview { spec, ..Default::default() };
        let answer = api.create(&Default::default(), &review).await.map_err(|e| {
            tracing::error!(error = %e, "SubjectAccessReview failed; refusing the request");
            AuthError::ReviewUnavailable("authorization review".into())
        })?;
        let allowed = answer.status.is_some_and(|s| s.allowed && s.denied != Some(true));
        Ok((allowed, if allowed { self.allowed_ttl } else { self.denied_ttl }))
    }
}

fn review_spec(user: &UserInfo, attributes: &Attributes) -> SubjectAccessReviewSpec {
    let (resource_attributes, non_resource_attributes) = match attributes.clone() {
        Attributes::Resource { verb, group, version, resource, subresource, name, namespace } => (
            Some(ResourceAttributes {
                verb: Some(verb),
                group: Some(group),
                version: Some(version),
                resource: Some(resource),
                subresource: Some(subresource).filter(|s| !s.is_empty()),
                name: Some(name).filter(|s| !s.is_empty()),
                namespace: Some(namespace).filter(|s| !s.is_empty()),
                ..Default::default()
            }),
            None,
        ),
        Attributes::NonResource { verb, path } => (None, Some(NonResourceAttributes { verb: Some(verb), path: Some(path) })),
    };
    SubjectAccessReviewSpec {
        user: Some(user.name.clone()),
        uid: user.uid.clone(),
        groups: Some(user.groups.clone()),
        extra: Some(user.extra.clone().into_iter().collect()).filter(|e: &std::collections::BTreeMap<_, _>| !e.is_empty()),
        resource_attributes,
        non_resource_attributes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(verb: &str, version: &str, resource: &str, sub: &str, name: &str, ns: &str, group: &str) -> Attributes {
        Attributes::Resource {
            verb: verb.into(),
            group: group.into(),
            version: version.into(),
            resource: resource.into(),
            subresource: sub.into(),
            name: name.into(),
            namespace: ns.into(),
        }
    }

    #[test]
    fn attributes_follow_request_info_rules() {
        let c = "custom.metrics.k8s.io";
        assert_eq!(
            Attributes::of("GET", "/apis/custom.metrics.k8s.io/v1beta2/namespaces/p/deployments.apps/tm/m"),
            resource("get", "v1beta2", "deployments.apps", "m", "tm", "p", c)
        );
        assert_eq!(
            Attributes::of("GET", "/apis/custom.metrics.k8s.io/v1beta1/namespaces/p/metrics/m"),
            resource("get", "v1beta1", "metrics", "", "m", "p", c)
        );
        assert_eq!(
            Attributes::of("GET", "/apis/custom.metrics.k8s.io/v1beta1/nodes/n/m"),
            resource("get", "v1beta1", "nodes", "m", "n", "", c)
        );
        assert_eq!(
            Attributes::of("GET", "/apis/external.metrics.k8s.io/v1beta1/namespaces/p/m"),
            resource("list", "v1beta1", "m", "", "", "p", "external.metrics.k8s.io")
        );
        assert_eq!(
            Attributes::of("GET", "/apis/custom.metrics.k8s.io/v1beta1"),
            Attributes::NonResource { verb: "get".into(), path: "/apis/custom.metrics.k8s.io/v1beta1".into() }
        );
        assert_eq!(Attributes::of("GET", "/metrics"), Attributes::NonResource { verb: "get".into(), path: "/metrics".into() });
        assert_eq!(Attributes::of("GET", "/apis"), Attributes::NonResource { verb: "get".into(), path: "/apis".into() });
    }

    #[test]
    fn forbidden_message_names_verb_and_resource() {
        let a = Attributes::of("GET", "/apis/custom.metrics.k8s.io/v1beta2/namespaces/p/deployments.apps/tm/m");
        assert_eq!(
            a.describe(),
            "cannot get resource \"deployments.apps/m\" in API group \"custom.metrics.k8s.io\" in the namespace \"p\""
        );
    }

    #[test]
    fn review_spec_carries_the_user_and_attributes() {
        let user = UserInfo {
            name: "system:serviceaccount:kube-system:horizontal-pod-autoscaler".into(),
            groups: vec!["system:serviceaccounts".into()],
            ..Default::default()
        };
        let spec = review_spec(&user, &Attributes::of("GET", "/apis/external.metrics.k8s.io/v1beta1/namespaces/p/m"));
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(json["user"], user.name);
        assert_eq!(json["resourceAttributes"]["resource"], "m");
        assert_eq!(json["resourceAttributes"]["verb"], "list");
        assert_eq!(json["resourceAttributes"]["namespace"], "p");
        assert!(json.get("extra").is_none());
    }
}
