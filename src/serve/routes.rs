//! Request paths of the metrics APIs, parsed into [`Route`]s.
//!
//! The custom metrics paths are those of `k8s.io/metrics` clients:
//! `{group}/{version}/namespaces/{ns}/{resource}/{name}/{metric}` for
//! namespaced objects, `{group}/{version}/{resource}/{name}/{metric}` for
//! root-scoped objects and `{group}/{version}/namespaces/{ns}/metrics/{metric}`
//! for a namespace itself; external metrics are
//! `{group}/{version}/namespaces/{ns}/{metric}`.

use super::status::ApiError;
use crate::auth::authz::RequestInfo;

pub const CUSTOM_GROUP: &str = "custom.metrics.k8s.io";
pub const EXTERNAL_GROUP: &str = "external.metrics.k8s.io";

/// The served group-versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiVersion {
    CustomV1Beta1,
    CustomV1Beta2,
    ExternalV1Beta1,
}

impl ApiVersion {
    pub const ALL: [ApiVersion; 3] = [ApiVersion::CustomV1Beta1, ApiVersion::CustomV1Beta2, ApiVersion::ExternalV1Beta1];

    pub fn group(self) -> &'static str {
        match self {
            ApiVersion::CustomV1Beta1 | ApiVersion::CustomV1Beta2 => CUSTOM_GROUP,
            ApiVersion::ExternalV1Beta1 => EXTERNAL_GROUP,
        }
    }

    pub fn version(self) -> &'static str {
        match self {
            ApiVersion::CustomV1Beta1 | ApiVersion::ExternalV1Beta1 => "v1beta1",
            ApiVersion::CustomV1Beta2 => "v1beta2",
        }
    }

    pub fn group_version(self) -> &'static str {
        match self {
            ApiVersion::CustomV1Beta1 => "custom.metrics.k8s.io/v1beta1",
            ApiVersion::CustomV1Beta2 => "custom.metrics.k8s.io/v1beta2",
            ApiVersion::ExternalV1Beta1 => "external.metrics.k8s.io/v1beta1",
        }
    }

    fn find(group: &str, version: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.group() == group && v.version() == version)
    }
}

/// A custom metric of one described object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectQuery {
    pub version: ApiVersion,
    /// `None` for root-scoped objects (including namespaces themselves).
    pub namespace: Option<String>,
    /// As requested, possibly group-qualified (`deployments.apps`).
    pub resource: String,
    /// An object name, or `*` for "all objects matching labelSelector".
    pub name: String,
    pub metric: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Livez,
    Readyz,
    Healthz,
    /// The adapter's own Prometheus metrics.
    SelfMetrics,
    OpenApiV2,
    /// `/apis`: the APIGroupList.
    Apis,
    /// `/apis/{group}`: one APIGroup.
    Group(&'static str),
    /// `/apis/{group}/{version}`: the APIResourceList.
    Resources(ApiVersion),
    Object(ObjectQuery),
    External {
        namespace: String,
        metric: String,
    },
}

impl Route {
    /// A short, bounded name for logs and the adapter's own metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Route::Livez | Route::Readyz | Route::Healthz => "health",
            Route::SelfMetrics => "metrics",
            Route::OpenApiV2 => "openapi",
            Route::Apis | Route::Group(_) | Route::Resources(_) => "discovery",
            Route::Object(_) => "custom",
            Route::External { .. } => "external",
        }
    }
}

/// The route of a request, read from the same parse of its path as its
/// authorization ([`RequestInfo`]), so a request is served as what was
/// reviewed. Paths the kube-apiserver would review as something else than
/// what they would be served as are not routed.
pub fn route(info: &RequestInfo) -> Result<Route, ApiError> {
    // kube-apiserver's own wording, without the path.
    let not_found = || ApiError::NotFound("the server could not find the requested resource".into());
    match info {
        RequestInfo::NonResource { path } => {
            let trimmed = path.strip_suffix('/').filter(|p| !p.is_empty()).unwrap_or(path);
            match trimmed {
                "/livez" => Ok(Route::Livez),
                "/readyz" => Ok(Route::Readyz),
                "/healthz" => Ok(Route::Healthz),
                "/metrics" => Ok(Route::SelfMetrics),
                "/openapi/v2" => Ok(Route::OpenApiV2),
                "/apis" => Ok(Route::Apis),
                _ => {
                    let segments: Vec<&str> = trimmed.strip_prefix("/apis/").ok_or_else(not_found)?.split('/').collect();
                    match segments.as_slice() {
                        [group] => known_group(group).map(Route::Group).ok_or_else(not_found),
                        [group, version] => ApiVersion::find(group, version).map(Route::Resources).ok_or_else(not_found),
                        _ => Err(not_found()),
                    }
                }
            }
        }
        RequestInfo::Resource { group, version, namespace, resource, name, subresource, rest } => {
            let version = ApiVersion::find(group, version).ok_or_else(not_found)?;
            if !rest.is_empty() || resource.is_empty() {
                return Err(not_found());
            }
            let route = match (version, namespace.as_str(), resource.as_str(), name.as_str(), subresource.as_str()) {
                (ApiVersion::ExternalV1Beta1, namespace, metric, "", "") if !namespace.is_empty() => {
                    Route::External { namespace: namespace.to_owned(), metric: metric.to_owned() }
                }
                (ApiVersion::ExternalV1Beta1, ..) => return Err(not_found()),
                // The namespace itself: `namespaces/{ns}/metrics/{metric}`.
                (_, namespace, "metrics", metric, "") if !namespace.is_empty() && !metric.is_empty() => Route::Object(ObjectQuery {
                    version,
                    namespace: None,
                    resource: "namespaces".to_owned(),
                    name: namespace.to_owned(),
                    metric: metric.to_owned(),
                }),
                // Namespaces are served only as above: what else reads as
                // the resource `namespaces` is their status or finalize.
                (_, _, "namespaces", ..) => return Err(not_found()),
                (_, namespace, resource, name, metric) if !name.is_empty() && !metric.is_empty() => Route::Object(ObjectQuery {
                    version,
                    namespace: Some(namespace.to_owned()).filter(|n| !n.is_empty()),
                    resource: resource.to_owned(),
                    name: name.to_owned(),
                    metric: metric.to_owned(),
                }),
                _ => return Err(not_found()),
            };
            // A decoded name with `%` in it was encoded twice; no metric has one.
            if let Route::External { metric, .. } | Route::Object(ObjectQuery { metric, .. }) = &route {
                if metric.contains('%') {
                    return Err(ApiError::BadRequest("metric names cannot contain '%'".into()));
                }
            }
            Ok(route)
        }
    }
}

fn known_group(name: &str) -> Option<&'static str> {
    [CUSTOM_GROUP, EXTERNAL_GROUP].into_iter().find(|g| *g == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(path: &str) -> Result<Route, ApiError> {
        super::route(&RequestInfo::parse(path).map_err(|e| ApiError::BadRequest(e.to_string()))?)
    }

    fn object(version: ApiVersion, namespace: Option<&str>, resource: &str, name: &str, metric: &str) -> Route {
        Route::Object(ObjectQuery {
            version,
            namespace: namespace.map(str::to_owned),
            resource: resource.to_owned(),
            name: name.to_owned(),
            metric: metric.to_owned(),
        })
    }

    #[test]
    fn fixed_paths() {
        assert_eq!(route("/livez"), Ok(Route::Livez));
        assert_eq!(route("/readyz"), Ok(Route::Readyz));
        assert_eq!(route("/healthz"), Ok(Route::Healthz));
        assert_eq!(route("/metrics"), Ok(Route::SelfMetrics));
        assert_eq!(route("/openapi/v2"), Ok(Route::OpenApiV2));
        assert_eq!(route("/apis"), Ok(Route::Apis));
        assert_eq!(route("/apis/"), Ok(Route::Apis));
        assert_eq!(route("/apis/custom.metrics.k8s.io"), Ok(Route::Group(CUSTOM_GROUP)));
        assert_eq!(route("/apis/external.metrics.k8s.io/"), Ok(Route::Group(EXTERNAL_GROUP)));
    }

    #[test]
    fn discovery_for_every_group_version() {
        assert_eq!(route("/apis/custom.metrics.k8s.io/v1beta1"), Ok(Route::Resources(ApiVersion::CustomV1Beta1)));
        assert_eq!(route("/apis/custom.metrics.k8s.io/v1beta2/"), Ok(Route::Resources(ApiVersion::CustomV1Beta2)));
        assert_eq!(route("/apis/external.metrics.k8s.io/v1beta1"), Ok(Route::Resources(ApiVersion::ExternalV1Beta1)));
        assert!(route("/apis/external.metrics.k8s.io/v1beta2").is_err());
        assert!(route("/apis/custom.metrics.k8s.io/v1").is_err());
        for version in ApiVersion::ALL {
            assert_eq!(version.group_version(), format!("{}/{}", version.group(), version.version()));
        }
    }

    #[test]
    fn object_metric_paths() {
        let v2 = ApiVersion::CustomV1Beta2;
        assert_eq!(
            route("/apis/custom.metrics.k8s.io/v1beta2/namespaces/pravega/deployments.apps/flink-taskmanager/pravega_controller_segments_count"),
            Ok(object(v2, Some("pravega"), "deployments.apps", "flink-taskmanager", "pravega_controller_segments_count"))
        );
        assert_eq!(
            route("/apis/custom.metrics.k8s.io/v1beta1/namespaces/pravega/metrics/m"),
            Ok(object(ApiVersion::CustomV1Beta1, None, "namespaces", "pravega", "m"))
        );
        assert_eq!(route("/apis/custom.metrics.k8s.io/v1beta2/nodes/n1/m"), Ok(object(v2, None, "nodes", "n1", "m")));
        assert_eq!(route("/apis/custom.metrics.k8s.io/v1beta2/namespaces/ns/pods/*/m"), Ok(object(v2, Some("ns"), "pods", "*", "m")));
    }

    #[test]
    fn external_metric_paths() {
        assert_eq!(
            route("/apis/external.metrics.k8s.io/v1beta1/namespaces/default/pravega_controller_segments_count"),
            Ok(Route::External { namespace: "default".into(), metric: "pravega_controller_segments_count".into() })
        );
        assert!(route("/apis/external.metrics.k8s.io/v1beta1/namespaces/default").is_err());
        assert!(route("/apis/external.metrics.k8s.io/v1beta1/namespaces/default/a/b").is_err());
    }

    #[test]
    fn unsupported_and_malformed_paths() {
        for path in [
            "/",
            "/api/v1",
            "/apis/apps/v1",
            "/apis/custom.metrics.k8s.io/v1beta1/namespaces",
            "/apis/custom.metrics.k8s.io/v1beta1/namespaces/ns/pods/a/b/c",
            "/apis/custom.metrics.k8s.io/v1beta1//x/y",
            "/livez/extra",
        ] {
            assert!(matches!(route(path), Err(ApiError::NotFound(_))), "{path}");
        }
        assert_eq!(
            route("/apis/custom.metrics.k8s.io/v1beta1/pods/a%2Ab/m"),
            Ok(object(ApiVersion::CustomV1Beta1, None, "pods", "a*b", "m"))
        );
    }

    #[test]
    fn paths_are_served_as_they_are_reviewed() {
        // Decoded before routing, as before authorization.
        assert_eq!(
            route("/apis/custom.metrics.k8s.io/v1beta1/nodes/n/%70ravega_m"),
            Ok(object(ApiVersion::CustomV1Beta1, None, "nodes", "n", "pravega_m"))
        );
        // `%2F` splits, as in the apiserver: one part too many.
        assert!(matches!(route("/apis/custom.metrics.k8s.io/v1beta1/nodes/n%2Fx/m"), Err(ApiError::NotFound(_))));
        // Encoded twice: the name still has a `%`.
        assert!(matches!(route("/apis/custom.metrics.k8s.io/v1beta1/nodes/n/%2570ravega_m"), Err(ApiError::BadRequest(_))));
        assert!(matches!(route("/apis/external.metrics.k8s.io/v1beta1/namespaces/d/m%25"), Err(ApiError::BadRequest(_))));
        // Reviewed as a list of `m` in `p`, never served as the namespace `p`.
        assert!(matches!(route("/apis/custom.metrics.k8s.io/v1beta1/namespaces/p/m"), Err(ApiError::NotFound(_))));
        assert!(matches!(route("/apis/custom.metrics.k8s.io/v1beta1/namespaces/p/status/m"), Err(ApiError::NotFound(_))));
        let Err(ApiError::NotFound(message)) = route("/apis/custom.metrics.k8s.io/v1beta1/secret-path") else { panic!() };
        assert!(!message.contains("secret-path"), "the path is not echoed: {message}");
    }
}
