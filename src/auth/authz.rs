//! Authorization by SubjectAccessReview, with the request attributes the
//! kube-apiserver would derive from the same path (its RequestInfo rules),
//! so RBAC rules written for prometheus-adapter apply unchanged.

use super::authn::UserInfo;
use super::cache::ReviewCache;
use super::AuthError;
use k8s_openapi::api::authorization::v1::{NonResourceAttributes, ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
use std::time::Duration;

/// A request path as the kube-apiserver's RequestInfoFactory reads it:
/// percent-decoded once, then split at `/`. Authorization and routing both
/// read this one parse, so what is reviewed is what is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestInfo {
    /// Discovery, `/openapi/v2`, `/metrics`, probes: the decoded path.
    NonResource { path: String },
    /// `/apis/{group}/{version}/[namespaces/{namespace}/]{resource}[/{name}[/{subresource}[/{rest}]]]`;
    /// `rest` (parts past the subresource, which the apiserver ignores) is
    /// kept so that routing can refuse it.
    Resource { group: String, version: String, namespace: String, resource: String, name: String, subresource: String, rest: Vec<String> },
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("malformed percent-encoding in the request path")]
pub struct MalformedPath;

impl RequestInfo {
    pub fn parse(raw_path: &str) -> Result<Self, MalformedPath> {
        let path = percent_decode(raw_path)?;
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let ["apis", group, version, rest @ ..] = parts.as_slice() else { return Ok(RequestInfo::NonResource { path }) };
        if rest.is_empty() {
            return Ok(RequestInfo::NonResource { path });
        }
        // `namespaces/{ns}` sets the namespace; what follows is the resource
        // unless it is a subresource of the namespace itself.
        let (namespace, rest) = match rest {
            ["namespaces", namespace, tail @ ..] if !tail.is_empty() && !matches!(tail[0], "status" | "finalize") => (*namespace, tail),
            ["namespaces", namespace, ..] => (*namespace, rest),
            _ => ("", rest),
        };
        let part = |i: usize| rest.get(i).copied().unwrap_or("").to_owned();
        Ok(RequestInfo::Resource {
            group: (*group).to_owned(),
            version: (*version).to_owned(),
            namespace: namespace.to_owned(),
            resource: part(0),
            name: part(1),
            subresource: part(2),
            rest: rest.iter().skip(3).map(|p| (*p).to_owned()).collect(),
        })
    }
}

/// Decodes `%XX` escapes as Go's `url.URL.Path` does; malformed escapes and
/// bytes that are not UTF-8 are refused.
fn percent_decode(raw: &str) -> Result<String, MalformedPath> {
    if !raw.contains('%') {
        return Ok(raw.to_owned());
    }
    String::from_utf8(path_unescape(raw).ok_or(MalformedPath)?).map_err(|_| MalformedPath)
}

/// The bytes `raw` stands for, as Go's `url.PathUnescape` decodes them:
/// `%XX` is a byte, `+` stays `+`; `None` if a `%` is not followed by two
/// hexadecimal digits.
pub(super) fn path_unescape(raw: &str) -> Option<Vec<u8>> {
    let hex = |digit: u8| char::from(digit).to_digit(16).and_then(|d| u8::try_from(d).ok());
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let (high, low) = (hex(*bytes.get(i + 1)?)?, hex(*bytes.get(i + 2)?)?);
            out.push(high << 4 | low);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

/// What a request asks to do, as a SubjectAccessReview describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attributes {
    Resource { verb: String, group: String, version: String, resource: String, subresource: String, name: String, namespace: String },
    NonResource { verb: String, path: String },
}

impl Attributes {
    /// The attributes the kube-apiserver derives for `method` on `info`:
    /// GET of a resource without a name is `list`, with one `get`.
    pub fn of(method: &str, info: &RequestInfo) -> Self {
        let http_verb = method.to_ascii_lowercase();
        match info {
            RequestInfo::NonResource { path } => Attributes::NonResource { verb: http_verb, path: path.clone() },
            RequestInfo::Resource { group, version, namespace, resource, name, subresource, .. } => {
                let verb = match http_verb.as_str() {
                    "get" | "head" if name.is_empty() => "list".to_owned(),
                    "head" => "get".to_owned(),
                    _ => http_verb,
                };
                Attributes::Resource {
                    verb,
                    group: group.clone(),
                    version: version.clone(),
                    resource: resource.clone(),
                    subresource: subresource.clone(),
                    name: name.clone(),
                    namespace: namespace.clone(),
                }
            }
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

    fn of(method: &str, path: &str) -> Attributes {
        Attributes::of(method, &RequestInfo::parse(path).unwrap())
    }

    #[test]
    fn attributes_follow_request_info_rules() {
        let c = "custom.metrics.k8s.io";
        assert_eq!(
            of("GET", "/apis/custom.metrics.k8s.io/v1beta2/namespaces/p/deployments.apps/tm/m"),
            resource("get", "v1beta2", "deployments.apps", "m", "tm", "p", c)
        );
        assert_eq!(
            of("GET", "/apis/custom.metrics.k8s.io/v1beta1/namespaces/p/metrics/m"),
            resource("get", "v1beta1", "metrics", "", "m", "p", c)
        );
        assert_eq!(of("GET", "/apis/custom.metrics.k8s.io/v1beta1/nodes/n/m"), resource("get", "v1beta1", "nodes", "m", "n", "", c));
        assert_eq!(
            of("GET", "/apis/external.metrics.k8s.io/v1beta1/namespaces/p/m"),
            resource("list", "v1beta1", "m", "", "", "p", "external.metrics.k8s.io")
        );
        assert_eq!(
            of("HEAD", "/apis/custom.metrics.k8s.io/v1beta1/namespaces/p/status/x"),
            resource("get", "v1beta1", "namespaces", "status", "p", "p", c)
        );
        assert_eq!(
            of("GET", "/apis/custom.metrics.k8s.io/v1beta1"),
            Attributes::NonResource { verb: "get".into(), path: "/apis/custom.metrics.k8s.io/v1beta1".into() }
        );
        assert_eq!(of("GET", "/metrics"), Attributes::NonResource { verb: "get".into(), path: "/metrics".into() });
        assert_eq!(of("GET", "/apis"), Attributes::NonResource { verb: "get".into(), path: "/apis".into() });
    }

    #[test]
    fn the_path_is_decoded_before_it_is_split() {
        // What is reviewed is what the apiserver would review: the decoded path.
        assert_eq!(
            of("GET", "/apis/custom.metrics.k8s.io/v1beta1/nodes/n/%70ravega_m"),
            resource("get", "v1beta1", "nodes", "pravega_m", "n", "", "custom.metrics.k8s.io")
        );
        let Ok(RequestInfo::Resource { name, subresource, rest, .. }) = RequestInfo::parse("/apis/g/v/nodes/a%2Fb/m") else { panic!() };
        assert_eq!((name.as_str(), subresource.as_str(), rest), ("a", "b", vec!["m".to_owned()]));
        assert_eq!(RequestInfo::parse("/apis/g/v/nodes/a%zz/m"), Err(MalformedPath));
        assert_eq!(RequestInfo::parse("/apis/g/v/nodes/a%ff/m"), Err(MalformedPath));
        // Two hexadecimal digits, no sign (Rust's integer parsing takes `+f`).
        assert_eq!(RequestInfo::parse("/apis/g/v/nodes/a%+f/m"), Err(MalformedPath));
        assert_eq!(RequestInfo::parse("/apis/g/v/nodes/a%4"), Err(MalformedPath));
        assert_eq!(RequestInfo::parse("/%6detrics"), Ok(RequestInfo::NonResource { path: "/metrics".into() }));
    }

    #[test]
    fn forbidden_message_names_verb_and_resource() {
        let a = of("GET", "/apis/custom.metrics.k8s.io/v1beta2/namespaces/p/deployments.apps/tm/m");
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
        let spec = review_spec(&user, &of("GET", "/apis/external.metrics.k8s.io/v1beta1/namespaces/p/m"));
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(json["user"], user.name);
        assert_eq!(json["resourceAttributes"]["resource"], "m");
        assert_eq!(json["resourceAttributes"]["verb"], "list");
        assert_eq!(json["resourceAttributes"]["namespace"], "p");
        assert!(json.get("extra").is_none());
    }
}
