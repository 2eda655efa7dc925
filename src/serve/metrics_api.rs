//! Bodies of the custom and external metrics APIs and their discovery
//! documents, computed from the merged view.

use super::quantity;
use super::routes::{ApiVersion, ObjectQuery, CUSTOM_GROUP, EXTERNAL_GROUP};
use super::scopes::Visible;
use super::selector::Selector;
use super::status::ApiError;
use crate::clock::Moment;
use crate::controller_api::SEGMENTS_FAMILY;
use crate::store::{LabelSet, MergedView, Verdict, SCOPE_LABEL, STREAM_LABEL};
use serde::{Serialize, Serializer};
use serde_json::{json, Value};
use std::time::{Duration, SystemTime};

/// Resources advertised in custom-metrics discovery for every metric. Any
/// described object can be queried; these are the ones an HPA on a Flink
/// deployment uses (`namespaces` for `.../namespaces/{ns}/metrics/{m}`).
const ADVERTISED_RESOURCES: [(&str, bool); 3] = [("namespaces", false), ("deployments.apps", true), ("statefulsets.apps", true)];

/// A metrics answer, serialized, and when the oldest data behind it was
/// scraped.
#[derive(Debug)]
pub struct Served {
    pub body: String,
    pub oldest: Option<Moment>,
    /// Why the answer is empty though streams match: they are named here.
    pub withheld: Option<String>,
}

/// One stream's served value.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub labels: LabelSet,
    pub value: f64,
    pub at: Moment,
}

/// The `segments_count` streams a query selects, decided stream by stream
/// by the inventory: every one with a value, or why not.
#[derive(Debug)]
pub enum Resolution {
    Whole(Vec<Resolved>),
    /// At least one of the `selected` streams has no value that can be
    /// vouched for.
    Withheld {
        why: String,
        selected: usize,
    },
    /// An External list selecting this many streams, over the list limit:
    /// refused before any is decided.
    TooMany(usize),
}

/// The sum of a metric over the streams a selector selects.
#[derive(Debug, Clone, PartialEq)]
pub enum Total {
    /// Every selected stream has a value: their sum, and the scrape (or
    /// answer) time of the oldest.
    Sum { value: f64, oldest: Moment },
    /// Not every selected stream has a value; these have none.
    Withheld(String),
    /// No stream matches.
    NoStream,
}

/// A selected series: its labels, value and the time of that value.
struct Item<'a> {
    labels: &'a LabelSet,
    value: f64,
    at: Moment,
}

/// What a query selects: every stream with a value, or why not and how
/// many streams it selects.
enum Selected<'a> {
    Whole(Vec<Item<'a>>),
    Withheld { why: String, selected: usize },
}

/// Undecided streams named in a withheld answer at most.
const NAMED_UNDECIDED: usize = 8;

/// "a/b (why), c/d (why) and 3 more".
pub fn name_undecided(undecided: &[String]) -> String {
    let mut text = undecided.iter().take(NAMED_UNDECIDED).cloned().collect::<Vec<_>>().join(", ");
    if undecided.len() > NAMED_UNDECIDED {
        text += &format!(" and {} more", undecided.len() - NAMED_UNDECIDED);
    }
    text
}

/// What every answer needs besides the view.
pub struct Answer<'a> {
    pub view: &'a MergedView,
    /// Ages are measured on the monotonic clock; `wall_now` is the wall
    /// time of `now`, for the timestamps the answer carries.
    pub now: Moment,
    pub wall_now: SystemTime,
    /// Data scraped longer ago than this is never served.
    pub max_age: Duration,
    /// Reported as the metric window: the scrape interval.
    pub window: Duration,
    /// The inventory's decisions for a `segments_count` query; `None`
    /// without an inventory, or for other metrics: then the metrics alone
    /// decide.
    pub segments: Option<&'a Resolution>,
    /// The Pravega scopes the request sees.
    pub visible: Visible<'a>,
    /// Most items an external list may hold; a larger one is refused.
    pub max_list_items: usize,
}

impl Answer<'_> {
    /// How many streams a query with `selector` scans: one if it names a
    /// scope and a stream (as an HPA's does), every stream if it names no
    /// scope.
    pub fn streams_scanned(&self, selector: &Selector) -> usize {
        self.view.narrowed_rows(selector.pinned(SCOPE_LABEL), selector.pinned(STREAM_LABEL))
    }

    /// Every series of `metric` that `selector` selects, each with a value
    /// that can be served, or why the answer is withheld.
    fn select(&self, metric: &str, selector: &Selector) -> Result<Selected<'_>, ApiError> {
        if let (SEGMENTS_FAMILY, Some(resolution)) = (metric, self.segments) {
            return Ok(match resolution {
                Resolution::Whole(streams) => {
                    Selected::Whole(streams.iter().map(|s| Item { labels: &s.labels, value: s.value, at: s.at }).collect())
                }
                Resolution::Withheld { why, selected } => Selected::Withheld { why: why.clone(), selected: *selected },
                Resolution::TooMany(streams) => return self.within_list_limit(*streams).map(|()| Selected::Whole(Vec::new())),
            });
        }
        // Discovery lists the metrics served to those allowed to read it.
        let Some(family) = self.view.family(metric) else {
            return Err(ApiError::NotFound(format!("no fresh data for metric {metric:?}")));
        };
        let (mut items, mut undecided) = (Vec::new(), Vec::new());
        for s in family.narrowed(selector.pinned(SCOPE_LABEL), selector.pinned(STREAM_LABEL)) {
            if !selected(self.visible, selector, s.labels) {
                continue;
            }
            let fresh = self.now.since(s.scraped_at) <= self.max_age;
            // A segment count is served from the metrics alone only for a
            // scale the adapter watched.
            let vouched = metric != SEGMENTS_FAMILY || s.verdict == Verdict::Current;
            match (s.value.is_nan(), fresh, vouched) {
                (false, true, true) => items.push(Item { labels: s.labels, value: s.value, at: s.scraped_at }),
                (true, _, _) => undecided.push(format!("{} (undecided)", stream_name(s.labels))),
                (_, false, _) => undecided.push(format!("{} (too old)", stream_name(s.labels))),
                (_, _, false) => undecided.push(format!("{} (unconfirmed)", stream_name(s.labels))),
            }
        }
        Ok(match undecided.is_empty() {
            true => Selected::Whole(items),
            false => Selected::Withheld { why: name_undecided(&undecided), selected: items.len() + undecided.len() },
        })
    }

    /// Custom metric of one object: the sum over the selected streams (a
    /// job reading several streams needs the total of their segments).
    pub fn object(&self, query: &ObjectQuery, metric_selector: &Selector) -> Result<Served, ApiError> {
        if query.name == "*" {
            return Err(ApiError::NotFound(format!(
                "{:?} is a per-stream Pravega metric, not a per-object one: it is served for a single named object \
                 (HPA type Object) and as an external metric (HPA type External), not for {}/*",
                query.metric, query.resource
            )));
        }
        let (total, oldest) = match self.total(&query.metric, metric_selector)? {
            Total::Sum { value, oldest } => (value, oldest),
            Total::Withheld(why) => {
                return Err(ApiError::NotFound(format!(
                    "{:?} is withheld for metricLabelSelector {:?}: a sum must include every selected stream, and these have no \
                     value that can be vouched for: {why}",
                    query.metric,
                    metric_selector.to_string()
                )))
            }
            Total::NoStream => {
                return Err(ApiError::NotFound(format!(
                    "no stream of metric {:?} matches metricLabelSelector {:?}",
                    query.metric,
                    metric_selector.to_string()
                )))
            }
        };
        let value =
            quantity::format(total).ok_or_else(|| ApiError::NotFound(format!("the sum of {:?} is not a finite number", query.metric)))?;
        let selector = (!metric_selector.is_empty()).then(|| metric_selector.to_label_selector());
        let item = ObjectValue {
            described_object: described_object(query),
            metric: match query.version {
                ApiVersion::CustomV1Beta1 => MetricIdentity::V1Beta1 { metric_name: &query.metric, selector },
                _ => MetricIdentity::V1Beta2 { metric: MetricId { name: &query.metric, selector } },
            },
            timestamp: self.timestamp(oldest),
            window: Window::of(query.version, self.window),
            value,
        };
        Ok(Served { body: list("MetricValueList", query.version, &[item]), oldest: Some(oldest), withheld: None })
    }

    /// The sum of `metric` over the streams `selector` selects, whole or
    /// withheld, as an Object query and KEDA's scaler serve it.
    pub fn total(&self, metric: &str, selector: &Selector) -> Result<Total, ApiError> {
        Ok(match self.select(metric, selector)? {
            Selected::Withheld { why, .. } => Total::Withheld(why),
            Selected::Whole(series) if series.is_empty() => Total::NoStream,
            Selected::Whole(series) => {
                Total::Sum { value: series.iter().map(|s| s.value).sum(), oldest: series.iter().map(|s| s.at).min().unwrap_or(self.now) }
            }
        })
    }

    /// External metric: one item per selected stream.
    /// Withheld, the list is empty: the HPA then holds its replicas.
    pub fn external(&self, metric: &str, selector: &Selector) -> Result<Served, ApiError> {
        let (series, withheld) = match self.select(metric, selector)? {
            Selected::Whole(series) => {
                self.within_list_limit(series.len())?;
                (series, None)
            }
            Selected::Withheld { why, selected } => {
                self.within_list_limit(selected)?;
                (Vec::new(), Some(why))
            }
        };
        let oldest = series.iter().map(|s| s.at).min();
        let items: Vec<ExternalValue<'_>> = series
            .iter()
            .filter_map(|s| {
                Some(ExternalValue {
                    metric_name: metric,
                    metric_labels: Labels(s.labels),
                    timestamp: self.timestamp(s.at),
                    window: self.window.as_secs(),
                    value: quantity::format(s.value)?,
                })
            })
            .collect();
        Ok(Served { body: list("ExternalMetricValueList", ApiVersion::ExternalV1Beta1, &items), oldest, withheld })
    }

    /// The wall-clock time of `at`, as an answer states it.
    fn timestamp(&self, at: Moment) -> Rfc3339 {
        Rfc3339(at.wall_time(self.now, self.wall_now))
    }

    /// Refuses a list of `items` over [`Answer::max_list_items`] before it
    /// is built: an unselective list of every stream would cost memory in
    /// proportion to all streams, and an HPA needs only the streams its
    /// selector names.
    fn within_list_limit(&self, items: usize) -> Result<(), ApiError> {
        if items <= self.max_list_items {
            return Ok(());
        }
        Err(ApiError::TooManyItems(format!(
            "the labelSelector matches {items} streams, more than the {} one answer lists (--max-list-items); \
             narrow the labelSelector, e.g. to scope=<scope>,stream=<stream>",
            self.max_list_items
        )))
    }

    /// `APIResourceList` of one group-version: every metric served now.
    pub fn resources(&self, version: ApiVersion) -> Value {
        let metrics = self.view.family_names();
        let resource = |name: String, namespaced: bool, kind: &str| json!({ "name": name, "singularName": "", "namespaced": namespaced, "kind": kind, "verbs": ["get"] });
        let resources: Vec<Value> = match version {
            ApiVersion::ExternalV1Beta1 => metrics.map(|m| resource(m.to_owned(), true, "ExternalMetricValueList")).collect(),
            _ => metrics
                .flat_map(|m| {
                    ADVERTISED_RESOURCES.iter().map(move |(r, namespaced)| resource(format!("{r}/{m}"), *namespaced, "MetricValueList"))
                })
                .collect(),
        };
        json!({
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": version.group_version(),
            "resources": resources,
        })
    }
}

// The answers are serialized from these types directly: building a
// `serde_json::Value` first allocated every key and map node of every
// answer, on the path of every HPA query.

/// A `MetricValueList` or `ExternalMetricValueList`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct List<'a, T> {
    kind: &'static str,
    api_version: &'static str,
    metadata: Empty,
    items: &'a [T],
}

#[derive(Serialize)]
struct Empty {}

fn list<T: Serialize>(kind: &'static str, version: ApiVersion, items: &[T]) -> String {
    let list = List { kind, api_version: version.group_version(), metadata: Empty {}, items };
    // Serializing these types cannot fail: no maps with non-string keys, no
    // failing Serialize impls.
    serde_json::to_string(&list).unwrap_or_default()
}

/// One item of a `MetricValueList` (`custom.metrics.k8s.io`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ObjectValue<'a> {
    described_object: ObjectReference<'a>,
    #[serde(flatten)]
    metric: MetricIdentity<'a>,
    timestamp: Rfc3339,
    #[serde(flatten)]
    window: Window,
    value: String,
}

/// How each version names the metric: v1beta1 by name, with a selector
/// that may be null; v1beta2 by a `MetricIdentifier`.
#[derive(Serialize)]
#[serde(untagged, rename_all_fields = "camelCase")]
enum MetricIdentity<'a> {
    V1Beta1 { metric_name: &'a str, selector: Option<Value> },
    V1Beta2 { metric: MetricId<'a> },
}

#[derive(Serialize)]
struct MetricId<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    selector: Option<Value>,
}

/// `window` in v1beta1, `windowSeconds` in v1beta2.
#[derive(Serialize)]
#[serde(untagged)]
enum Window {
    V1Beta1 {
        window: u64,
    },
    V1Beta2 {
        #[serde(rename = "windowSeconds")]
        window_seconds: u64,
    },
}

impl Window {
    fn of(version: ApiVersion, window: Duration) -> Self {
        match version {
            ApiVersion::CustomV1Beta2 => Window::V1Beta2 { window_seconds: window.as_secs() },
            _ => Window::V1Beta1 { window: window.as_secs() },
        }
    }
}

/// One item of an `ExternalMetricValueList`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ExternalValue<'a> {
    metric_name: &'a str,
    metric_labels: Labels<'a>,
    timestamp: Rfc3339,
    window: u64,
    value: String,
}

/// A stream's labels as a JSON object.
struct Labels<'a>(&'a LabelSet);

impl Serialize for Labels<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.pairs())
    }
}

/// A time as RFC 3339 in whole seconds, written without an intermediate
/// string.
struct Rfc3339(SystemTime);

impl Serialize for Rfc3339 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&humantime::format_rfc3339_seconds(self.0))
    }
}

/// `ObjectReference` of the described object. Kind and apiVersion are filled
/// in for the built-in resources an HPA targets and left out otherwise
/// rather than guessed; the HPA does not read them.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ObjectReference<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    api_version: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<&'a str>,
    name: &'a str,
}

fn described_object(query: &ObjectQuery) -> ObjectReference<'_> {
    let (resource, group) = query.resource.split_once('.').unwrap_or((&query.resource, ""));
    let known = match (resource, group) {
        ("namespaces", "") => Some(("Namespace", "v1")),
        ("pods", "") => Some(("Pod", "v1")),
        ("services", "") => Some(("Service", "v1")),
        ("nodes", "") => Some(("Node", "v1")),
        ("deployments", "apps") => Some(("Deployment", "apps/v1")),
        ("statefulsets", "apps") => Some(("StatefulSet", "apps/v1")),
        ("replicasets", "apps") => Some(("ReplicaSet", "apps/v1")),
        ("jobs", "batch") => Some(("Job", "batch/v1")),
        _ => None,
    };
    ObjectReference {
        kind: known.map(|(kind, _)| kind),
        api_version: known.map(|(_, api_version)| api_version),
        namespace: query.namespace.as_deref(),
        name: &query.name,
    }
}

/// `/apis`: both groups, custom preferring v1beta2.
pub fn group_list() -> Value {
    json!({
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [group_body(CUSTOM_GROUP), group_body(EXTERNAL_GROUP)],
    })
}

/// `/apis/{group}`.
pub fn group(name: &str) -> Value {
    let mut body = group_body(name);
    body["kind"] = "APIGroup".into();
    body["apiVersion"] = "v1".into();
    body
}

fn group_body(name: &str) -> Value {
    // Newest first: discovery clients take the first as preferred.
    let versions: Vec<Value> = ApiVersion::ALL
        .iter()
        .rev()
        .filter(|v| v.group() == name)
        .map(|v| json!({ "groupVersion": v.group_version(), "version": v.version() }))
        .collect();
    json!({ "name": name, "preferredVersion": versions[0].clone(), "versions": versions })
}

/// A minimal, valid Swagger 2.0 document: the aggregator fetches it from
/// every APIService backend and logs errors when it is missing.
pub fn openapi_v2() -> Value {
    json!({
        "swagger": "2.0",
        "info": { "title": "pravega-metrics-adapter", "version": env!("CARGO_PKG_VERSION") },
        "paths": {},
        "definitions": {},
    })
}

/// Whether a request that sees the `visible` scopes selects the stream of
/// `labels` with `selector`. Pravega's own streams (its `_system` scope, and
/// the reader-group `_RG...` and watermark `_MARK...` streams it creates in
/// users' scopes: names starting with `_`) are never selected: a Kubernetes
/// label selector cannot name them (label values start with a letter or
/// digit), and a selector of a user's scope alone must not add its reader
/// groups' streams into a job's value.
/// `scope/stream` of a label set, for messages.
pub(crate) fn stream_name(labels: &LabelSet) -> String {
    let (scope, stream) = labels.scope_and_stream();
    format!("{scope}/{stream}")
}

pub(crate) fn selected(visible: Visible<'_>, selector: &Selector, labels: &LabelSet) -> bool {
    let (scope, stream) = labels.scope_and_stream();
    visible.allows(scope) && !scope.starts_with('_') && !stream.starts_with('_') && selector.matches(|name| labels.get(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::Scanner;
    use crate::store::Store;

    const SCRAPED: Duration = Duration::from_secs(1_700_000_000);

    fn view(text: &str) -> std::sync::Arc<MergedView> {
        let store = Store::new(Duration::from_secs(30));
        let at = Moment::START + SCRAPED;
        let mut builder = store.builder("t");
        Scanner::scan_all(|_: &str| true, text.as_bytes(), |s| builder.push(s));
        store.publish("t", builder.finish(), at).unwrap();
        store.remerge(at);
        store.view()
    }

    fn answer(view: &MergedView, age: u64) -> Answer<'_> {
        Answer {
            view,
            now: Moment::START + SCRAPED + Duration::from_secs(age),
            wall_now: SystemTime::UNIX_EPOCH + SCRAPED + Duration::from_secs(age),
            max_age: Duration::from_secs(30),
            window: Duration::from_secs(10),
            segments: None,
            visible: Visible::All,
            max_list_items: 10_000,
        }
    }

    const TWO_STREAMS: &str =
        "m{scope=\"test\",stream=\"a\",} 3.0\nm{scope=\"test\",stream=\"b\",} 2.5\nm{scope=\"other\",stream=\"a\",} 7.0\n";

    fn query(version: ApiVersion, name: &str) -> ObjectQuery {
        ObjectQuery {
            version,
            namespace: Some("pravega".into()),
            resource: "deployments.apps".into(),
            name: name.into(),
            metric: "m".into(),
        }
    }

    fn selector(s: &str) -> Selector {
        Selector::parse(s).unwrap()
    }

    #[test]
    fn streams_scanned_is_what_the_scope_and_stream_narrow_to() {
        let view = view(TWO_STREAMS);
        let scanned = |s: &str| answer(&view, 0).streams_scanned(&selector(s));
        assert_eq!(scanned(""), 3);
        assert_eq!(scanned("stream=a"), 3, "a stream alone does not narrow");
        assert_eq!(scanned("scope=test"), 2);
        assert_eq!(scanned("scope=test,stream=a"), 1);
        assert_eq!(scanned("scope=test,stream in (a,b)"), 2);
        assert_eq!(scanned("scope=none"), 0);
    }

    impl Served {
        fn json(&self) -> Value {
            serde_json::from_str(&self.body).unwrap()
        }
    }

    #[test]
    fn object_metric_sums_the_selected_streams() {
        let v = view(TWO_STREAMS);
        let body = answer(&v, 1).object(&query(ApiVersion::CustomV1Beta2, "tm"), &selector("scope=test")).unwrap().json();
        assert_eq!(body["kind"], "MetricValueList");
        assert_eq!(body["apiVersion"], "custom.metrics.k8s.io/v1beta2");
        let item = &body["items"][0];
        assert_eq!(item["value"], "5500m");
        assert_eq!(item["windowSeconds"], 10);
        assert_eq!(item["timestamp"], "2023-11-14T22:13:20Z");
        assert_eq!(item["metric"], json!({"name": "m", "selector": {"matchLabels": {"scope": "test"}}}));
        assert_eq!(item["describedObject"], json!({"kind": "Deployment", "apiVersion": "apps/v1", "namespace": "pravega", "name": "tm"}));
        let one = answer(&v, 1).object(&query(ApiVersion::CustomV1Beta1, "tm"), &selector("scope=test,stream=a")).unwrap().json();
        let item = &one["items"][0];
        assert_eq!(item["value"], "3");
        assert_eq!(item["metricName"], "m");
        assert_eq!(item["window"], 10);
        assert_eq!(item["selector"], json!({"matchLabels": {"scope": "test", "stream": "a"}}));
        assert_eq!(one["apiVersion"], "custom.metrics.k8s.io/v1beta1");
    }

    #[test]
    fn object_metric_items_have_exactly_the_fields_of_their_version() {
        let v = view(TWO_STREAMS);
        let mut root_scoped = query(ApiVersion::CustomV1Beta1, "node-1");
        (root_scoped.namespace, root_scoped.resource) = (None, "widgets.example.com".into());
        let v1 = answer(&v, 1).object(&root_scoped, &selector("")).unwrap().json();
        let item = v1["items"][0].as_object().unwrap();
        let keys: Vec<&str> = item.keys().map(String::as_str).collect();
        // v1beta1's selector is not omitempty: an empty one is null.
        assert_eq!(keys, ["describedObject", "metricName", "selector", "timestamp", "value", "window"]);
        assert_eq!(item["selector"], Value::Null);
        assert_eq!(item["value"], "12500m");
        assert_eq!(item["describedObject"], json!({"name": "node-1"}), "unknown kinds are not guessed");

        let v2 = answer(&v, 1).object(&query(ApiVersion::CustomV1Beta2, "tm"), &selector("")).unwrap().json();
        let item = v2["items"][0].as_object().unwrap();
        let keys: Vec<&str> = item.keys().map(String::as_str).collect();
        assert_eq!(keys, ["describedObject", "metric", "timestamp", "value", "windowSeconds"]);
        assert_eq!(item["metric"], json!({"name": "m"}));
        assert_eq!(v2["metadata"], json!({}));
    }

    #[test]
    fn object_metric_errors() {
        let v = view(TWO_STREAMS);
        let a = answer(&v, 1);
        let err = a.object(&query(ApiVersion::CustomV1Beta2, "tm"), &selector("scope=none")).unwrap_err();
        assert!(matches!(&err, ApiError::NotFound(m) if m.contains("scope=none")), "{err}");
        let err = a.object(&query(ApiVersion::CustomV1Beta2, "*"), &selector("")).unwrap_err();
        assert!(matches!(&err, ApiError::NotFound(m) if m.contains("External")), "{err}");
        let mut unknown = query(ApiVersion::CustomV1Beta2, "tm");
        unknown.metric = "nope".into();
        let err = a.object(&unknown, &selector("")).unwrap_err();
        assert!(matches!(&err, ApiError::NotFound(m) if m.contains("\"nope\"") && !m.contains("\"m\"")), "no list of metrics: {err}");
    }

    #[test]
    fn internal_streams_are_never_served() {
        let v = view(
            "m{scope=\"test\",stream=\"stream\"} 3\n\
             m{scope=\"test\",stream=\"_RGreaders\"} 1\n\
             m{scope=\"test\",stream=\"_MARKstream\"} 1\n\
             m{scope=\"_system\",stream=\"_requeststream\"} 2\n",
        );
        let a = answer(&v, 1);
        let streams = |s: &str| -> Vec<String> {
            let body = a.external("m", &selector(s)).unwrap().json();
            body["items"].as_array().unwrap().iter().map(|i| i["metricLabels"]["stream"].as_str().unwrap().to_owned()).collect()
        };
        assert_eq!(streams(""), ["stream"]);
        assert_eq!(streams("scope=test"), ["stream"], "a job's scope does not pull in its reader group's stream");
        assert!(Selector::parse("scope=test,stream=_RGreaders").is_err(), "no Kubernetes selector can name them");
        let object = a.object(&query(ApiVersion::CustomV1Beta2, "tm"), &selector("scope=test")).unwrap().json();
        assert_eq!(object["items"][0]["value"], "3");
    }

    #[test]
    fn external_metric_lists_each_stream() {
        let v = view(TWO_STREAMS);
        let body = answer(&v, 1).external("m", &selector("stream=a")).unwrap().json();
        assert_eq!(body["kind"], "ExternalMetricValueList");
        let items = body["items"].as_array().unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0]["metricLabels"], json!({"scope": "other", "stream": "a"}));
        assert_eq!(items[0]["value"], "7");
        assert_eq!(items[1]["metricLabels"], json!({"scope": "test", "stream": "a"}));
        let all = answer(&v, 1).external("m", &selector("")).unwrap().json();
        assert_eq!(all["items"].as_array().unwrap().len(), 3);
        let none = answer(&v, 1).external("m", &selector("scope=zzz")).unwrap().json();
        assert_eq!(none["items"], json!([]));
    }

    #[test]
    fn a_list_over_the_item_limit_is_refused_with_a_way_to_narrow_it() {
        let v = view(TWO_STREAMS);
        let a = Answer { max_list_items: 2, ..answer(&v, 1) };
        let Err(refused) = a.external("m", &selector("")) else { panic!("three items listed") };
        assert_eq!(refused.code(), axum::http::StatusCode::PAYLOAD_TOO_LARGE);
        assert!(refused.to_string().contains("narrow the labelSelector"), "{refused}");
        assert_eq!(a.external("m", &selector("stream=a")).unwrap().json()["items"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn streams_outside_the_visible_scopes_are_not_served() {
        let v = view(TWO_STREAMS);
        let only_other = ["other".to_owned()];
        let a = Answer { visible: Visible::Only(&only_other), ..answer(&v, 1) };
        let all = a.external("m", &selector("")).unwrap().json();
        assert_eq!(all["items"].as_array().unwrap().len(), 1, "{all}");
        assert_eq!(all["items"][0]["metricLabels"]["scope"], "other");
        assert_eq!(a.external("m", &selector("scope=test")).unwrap().json()["items"], json!([]));
        assert!(matches!(a.object(&query(ApiVersion::CustomV1Beta2, "tm"), &selector("scope=test")), Err(ApiError::NotFound(_))));
        assert_eq!(a.object(&query(ApiVersion::CustomV1Beta2, "tm"), &selector("")).unwrap().json()["items"][0]["value"], "7");
    }

    #[test]
    fn data_past_max_age_is_not_served() {
        let v = view(TWO_STREAMS);
        assert_eq!(answer(&v, 30).external("m", &selector("")).unwrap().json()["items"].as_array().unwrap().len(), 3);
        assert_eq!(answer(&v, 31).external("m", &selector("")).unwrap().json()["items"], json!([]));
        assert!(answer(&v, 31).object(&query(ApiVersion::CustomV1Beta2, "tm"), &selector("")).is_err());
    }

    #[test]
    fn ages_follow_the_monotonic_clock_and_timestamps_the_wall_clock() {
        let v = view(TWO_STREAMS);
        for wall_step in [-7200_i64, 7200] {
            let mut a = answer(&v, 5);
            a.wall_now = SystemTime::UNIX_EPOCH + Duration::from_secs((SCRAPED.as_secs() as i64 + 5 + wall_step) as u64);
            let items = a.external("m", &selector("")).unwrap().json()["items"].clone();
            assert_eq!(items.as_array().unwrap().len(), 3, "served 5 s after the scrape, whatever the wall clock says");
            let stated = humantime::format_rfc3339_seconds(a.wall_now - Duration::from_secs(5)).to_string();
            assert_eq!(items[0]["timestamp"], stated.as_str(), "the wall time now, less the data's age");
        }
    }

    #[test]
    fn discovery_documents() {
        let v = view(TWO_STREAMS);
        let custom = answer(&v, 0).resources(ApiVersion::CustomV1Beta1);
        let names: Vec<&str> = custom["resources"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["namespaces/m", "deployments.apps/m", "statefulsets.apps/m"]);
        assert_eq!(custom["resources"][1]["kind"], "MetricValueList");
        let external = answer(&v, 0).resources(ApiVersion::ExternalV1Beta1);
        assert_eq!(external["groupVersion"], "external.metrics.k8s.io/v1beta1");
        assert_eq!(external["resources"][0]["name"], "m");
        assert_eq!(external["resources"][0]["kind"], "ExternalMetricValueList");
        let groups = group_list();
        assert_eq!(groups["groups"][0]["preferredVersion"]["version"], "v1beta2");
        assert_eq!(groups["groups"][0]["versions"].as_array().unwrap().len(), 2);
        assert_eq!(group(EXTERNAL_GROUP)["preferredVersion"]["groupVersion"], "external.metrics.k8s.io/v1beta1");
    }
}
