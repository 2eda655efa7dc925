//! Request paths of the metrics APIs, parsed into [`Route`]s.
//!
//! The custom metrics paths are those of `k8s.io/metrics` clients:
//! `{group}/{version}/namespaces/{ns}/{resource}/{name}/{metric}` for
//! namespaced objects, `{group}/{version}/{resource}/{name}/{metric}` for
//! root-scoped objects and `{group}/{version}/namespaces/{ns}/metrics/{metric}`
//! for a namespace itself; external metrics are
//! `{group}/{version}/namespaces/{ns}/{metric}`.

use super::status::ApiError;

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

pub fn route(path: &str) -> Result<Route, ApiError> {
    let not_found = || ApiError::NotFound(format!("the server could not find the requested resource {path:?}"));
    let trimmed = path.strip_suffix('/').filter(|p| !p.is_empty()).unwrap_or(path);
    match trimmed {
        "/livez" => return Ok(Route::Livez),
        "/readyz" => return Ok(Route::Readyz),
        "/healthz" => return Ok(Route::Healthz),
        "/metrics" => return Ok(Route::SelfMetrics),
        "/openapi/v2" => return Ok(Route::OpenApiV2),
        "/apis" => return Ok(Route::Apis),
        _ => {}
    }
    let rest = trimmed.strip_prefix("/apis/").ok_or_else(not_found)?;
    let segments = rest.split('/').map(decode_segment).collect::<Result<Vec<_>, _>>()?;
    if segments.iter().any(String::is_empty) {
        return Err(not_found());
    }
    let group = match segments[0].as_str() {
        CUSTOM_GROUP => CUSTOM_GROUP,
        EXTERNAL_GROUP => EXTERNAL_GROUP,
        _ => return Err(not_found()),
    };
    let Some(version) = segments.get(1) else { return Ok(Route::Group(group)) };
    let version = ApiVersion::find(group, version).ok_or_else(not_found)?;
    let object = |namespace: Option<&String>, resource: &String, name: &String, metric: &String| {
        Route::Object(ObjectQuery {
            version,
            namespace: namespace.cloned(),
            resource: resource.clone(),
            name: name.clone(),
            metric: metric.clone(),
        })
    };
    let namespaces = "namespaces".to_owned();
    match (version, &segments[2..]) {
        (_, []) => Ok(Route::Resources(version)),
        (ApiVersion::ExternalV1Beta1, [ns_word, namespace, metric]) if *ns_word == namespaces => {
            Ok(Route::External { namespace: namespace.clone(), metric: metric.clone() })
        }
        (ApiVersion::ExternalV1Beta1, _) => Err(not_found()),
        (_, [ns_word, namespace, metrics_word, metric]) if *ns_word == namespaces && metrics_word == "metrics" => {
            Ok(object(None, &namespaces, namespace, metric))
        }
        (_, [ns_word, namespace, resource, name, metric]) if *ns_word == namespaces => Ok(object(Some(namespace), resource, name, metric)),
        (_, [resource, name, metric]) => Ok(object(None, resource, name, metric)),
        _ => Err(not_found()),
    }
}

/// Percent-decodes one path segment.
fn decode_segment(segment: &str) -> Result<String, ApiError> {
    if !segment.contains('%') {
        return Ok(segment.to_owned());
    }
    let bad = || ApiError::BadRequest(format!("malformed percent-encoding in path segment {segment:?}"));
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = segment.get(i + 1..i + 3).ok_or_else(bad)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(matches!(route("/apis/custom.metrics.k8s.io/v1beta1/pods/a%zz/m"), Err(ApiError::BadRequest(_))));
        assert!(matches!(route("/apis/custom.metrics.k8s.io/v1beta1/pods/a%ff/m"), Err(ApiError::BadRequest(_))));
        assert_eq!(
            route("/apis/custom.metrics.k8s.io/v1beta1/pods/a%2Ab/m"),
            Ok(object(ApiVersion::CustomV1Beta1, None, "pods", "a*b", "m"))
        );
    }
}
