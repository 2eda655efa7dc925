//! The HTTP side: routing, query handling and the adapter's own endpoints;
//! and KEDA's external scaler ([`keda`]), answered from the same values.

pub mod keda;
pub mod listen;
pub mod metrics_api;
pub mod quantity;
pub mod routes;
pub mod scopes;
pub mod selector;
pub mod status;

use crate::auth::authn::Peer;
use crate::auth::authz::{MalformedPath, RequestInfo};
use crate::auth::{AuthError, Guard};
use crate::clock::Moment;
use crate::controller_api::SEGMENTS_FAMILY;
use crate::inventory::{Decision, Inventory};
use crate::scrape::Pool;
use crate::store::{LabelSet, MergedView, Series, Store, SCOPE_LABEL, STREAM_LABEL};
use crate::telemetry::Telemetry;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use metrics_api::{Answer, Resolution, Resolved};
use routes::{ObjectQuery, Route};
use scopes::{ScopePolicy, Visible};
use selector::Selector;
use status::ApiError;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Longest query string accepted; selectors are short, so anything longer
/// is a mistake or an attack.
const MAX_QUERY_BYTES: usize = 8 * 1024;

/// Queries scanning more streams than this (about a millisecond of work; an
/// unfiltered list, never an HPA's query) are answered with the serving
/// thread's other requests handed to another thread.
const LONG_QUERY_STREAMS: usize = 1_000;

/// What the handlers share.
pub struct App {
    pub store: Arc<Store>,
    pub pool: Arc<Pool>,
    pub telemetry: Arc<Telemetry>,
    /// Every stream from the controllers' gRPC API, and what is served of
    /// it; `None` if no API endpoint is known.
    pub inventory: Option<Arc<Inventory>>,
    /// Authentication and authorization; `None` only on the loopback demo
    /// listener.
    pub guard: Option<Arc<Guard>>,
    pub scopes: Arc<ScopePolicy>,
    /// See [`Answer::max_list_items`].
    pub max_list_items: usize,
}

pub fn router(app: Arc<App>) -> Router {
    Router::new().fallback(handle).with_state(app)
}

impl From<MalformedPath> for ApiError {
    fn from(error: MalformedPath) -> Self {
        ApiError::BadRequest(error.to_string())
    }
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::Unauthenticated => ApiError::Unauthorized,
            AuthError::Forbidden(message) => ApiError::Forbidden(message),
            AuthError::ReviewUnavailable(_) => ApiError::ServiceUnavailable(error.to_string()),
        }
    }
}

async fn handle(State(app): State<Arc<App>>, request: Request) -> Response {
    let started = Instant::now();
    let (parts, _body) = request.into_parts();
    let mut kind = "unknown";
    let response = answer(&app, &parts, &mut kind).await.unwrap_or_else(IntoResponse::into_response);
    let elapsed = started.elapsed();
    app.telemetry.request(kind, response.status().as_u16(), elapsed);
    tracing::debug!(method = %parts.method, path = %parts.uri.path(), status = response.status().as_u16(), ?elapsed, "request");
    response
}

/// Authenticates, then parses the path once for authorization and
/// routing, authorizes, and only then routes: an unauthenticated caller
/// learns nothing about paths, and a denied one nothing about what exists.
/// `kind` is set to the route's once it is known.
async fn answer(app: &App, request: &Parts, kind: &mut &'static str) -> Result<Response, ApiError> {
    let parsed = RequestInfo::parse(request.uri.path());
    if let Some(guard) = &app.guard {
        let peer = request.extensions.get::<Arc<Peer>>().map(|p| &**p);
        if let Some(user) = guard.authenticate(peer, parsed.as_ref().ok(), &request.headers).await? {
            guard.authorize(&user, request.method.as_str(), parsed.as_ref().map_err(Clone::clone)?).await?;
        }
    }
    let path = parsed?;
    if request.method != Method::GET && request.method != Method::HEAD {
        return Err(ApiError::MethodNotAllowed(format!("{} is not supported; the metrics APIs are read-only", request.method)));
    }
    let route = routes::route(&path)?;
    *kind = route.kind();
    let query = request.uri.query().unwrap_or("");
    if query.len() > MAX_QUERY_BYTES {
        return Err(ApiError::BadRequest(format!("query string longer than {MAX_QUERY_BYTES} bytes")));
    }
    let body = match route {
        Route::Livez | Route::Healthz => return Ok(text(StatusCode::OK, "ok".into())),
        Route::Readyz => return Ok(readiness(app)),
        Route::SelfMetrics => {
            return Ok(text(StatusCode::OK, app.telemetry.render(&app.store, app.inventory.as_ref().map_or(0, |i| i.len()))))
        }
        Route::OpenApiV2 => metrics_api::openapi_v2().to_string(),
        Route::Apis => metrics_api::group_list().to_string(),
        Route::Group(group) => metrics_api::group(group).to_string(),
        Route::Resources(version) => with_view(app, &app.store.view(), None, Visible::All, |a| a.resources(version)).to_string(),
        Route::Object(object) => {
            let selector = selector_param(query, "metricLabelSelector")?;
            app.pool.refresh_stale().await;
            // A namespace's own metrics are in that namespace.
            let namespace = match &object {
                ObjectQuery { namespace: None, resource, name, .. } if resource == "namespaces" => Some(name.as_str()),
                ObjectQuery { namespace, .. } => namespace.as_deref(),
            };
            let visible = app.scopes.visible(namespace);
            let view = app.store.view();
            let segments = resolve(app, &view, visible, &object.metric, &selector, None).await;
            served(app, &view, segments.as_ref(), visible, &selector, "custom", |a| a.object(&object, &selector))?
        }
        Route::External { namespace, metric } => {
            let selector = selector_param(query, "labelSelector")?;
            app.pool.refresh_stale().await;
            let visible = app.scopes.visible(Some(&namespace));
            let view = app.store.view();
            let segments = resolve(app, &view, visible, &metric, &selector, Some(app.max_list_items)).await;
            served(app, &view, segments.as_ref(), visible, &selector, "external", |a| a.external(&metric, &selector))?
        }
    };
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

fn readiness(app: &App) -> Response {
    if !app.pool.is_ready() {
        return text(StatusCode::SERVICE_UNAVAILABLE, "waiting for the first scrape round".into());
    }
    if app.guard.as_ref().is_some_and(|g| !g.is_ready()) {
        return text(StatusCode::SERVICE_UNAVAILABLE, "waiting for the authentication configuration".into());
    }
    match app.inventory {
        Some(_) => text(StatusCode::OK, "ok".into()),
        None => text(StatusCode::OK, "ok (no controller API: quiet streams cannot be served)".into()),
    }
}

fn text(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

fn with_view<T>(app: &App, view: &MergedView, segments: Option<&Resolution>, visible: Visible<'_>, f: impl FnOnce(&Answer<'_>) -> T) -> T {
    let answer = Answer {
        view,
        now: Moment::now(),
        wall_now: SystemTime::now(),
        max_age: app.store.max_age(),
        window: app.pool.settings().interval,
        segments,
        visible,
        max_list_items: app.max_list_items,
    };
    f(&answer)
}

/// The inventory's decision for every `segments_count` stream the query
/// selects (`None` without an inventory, or for other metrics). Streams
/// the inventory does not hold yet, or holds without a recent answer, are
/// asked all together first; scopes whose listing is not complete are
/// listed. A stream without a value withholds the whole answer. A list
/// (`list_limit`) selecting more streams than it may hold is refused before
/// any is asked.
async fn resolve(
    app: &App,
    view: &MergedView,
    visible: Visible<'_>,
    metric: &str,
    selector: &Selector,
    list_limit: Option<usize>,
) -> Option<Resolution> {
    let inventory = app.inventory.as_ref().filter(|_| metric == SEGMENTS_FAMILY)?;
    let (scope, stream) = (selector.pinned(SCOPE_LABEL), selector.pinned(STREAM_LABEL));
    let covered: Option<Vec<String>> = match (scope, visible) {
        (Some(scope), _) => Some(vec![scope.to_owned()]),
        (None, Visible::All) => None,
        (None, Visible::Only(scopes)) => Some(scopes.to_vec()),
        (None, Visible::One(scope)) => Some(vec![scope.to_owned()]),
        (None, Visible::Nothing) => Some(Vec::new()),
    };
    let pinned = scope.zip(stream);
    if pinned.is_none() && !inventory.covers(covered.as_deref()) {
        inventory.list_now(covered.as_deref()).await;
    }
    let selects = |labels: &LabelSet| metrics_api::selected(visible, selector, labels);
    // Every candidate stream once, by (scope, stream): the view's series
    // first, then the streams only the inventory holds.
    let mut candidates: std::collections::BTreeMap<(String, String), (LabelSet, Option<Series<'_>>)> = Default::default();
    for series in view.family_or_undecided(SEGMENTS_FAMILY).streams(scope, stream).filter(|s| selects(s.labels)) {
        let (scope, stream) = series.labels.scope_and_stream();
        let key = (scope.to_owned(), stream.to_owned());
        candidates.entry(key).or_insert_with(|| (series.labels.clone(), Some(series)));
    }
    let known = inventory.streams(scope, stream).into_iter().chain(pinned.map(|(scope, stream)| (scope.to_owned(), stream.to_owned())));
    for key in known {
        let labels = LabelSet::of_stream(&key.0, &key.1);
        if selects(&labels) {
            candidates.entry(key).or_insert((labels, None));
        }
    }
    if list_limit.is_some_and(|limit| candidates.len() > limit) {
        return Some(Resolution::TooMany(candidates.len()));
    }
    let wanted: Vec<((String, String), Option<Series<'_>>)> = candidates.iter().map(|(key, (_, series))| (key.clone(), *series)).collect();
    inventory.ask_now(&wanted).await;
    let oldest = Moment::now().saturating_sub(app.store.max_age());
    let (mut resolved, mut undecided) = (Vec::new(), Vec::new());
    for ((scope, stream), (labels, series)) in candidates {
        let fresh = series.is_some_and(|s| s.scraped_at >= oldest);
        match inventory.decide(&scope, &stream, series.as_ref(), fresh) {
            Decision::Serve { segments, at } => resolved.push(Resolved { labels, value: segments, at }),
            Decision::Withhold(why) => undecided.push(format!("{scope}/{stream} ({})", why.reason())),
            Decision::Absent => {}
        }
    }
    if pinned.is_none() && !inventory.covers(covered.as_deref()) {
        undecided.push("the stream lists of the selected scopes (the controller API cannot list them now)".into());
    }
    Some(match undecided.is_empty() {
        true => Resolution::Whole(resolved),
        false => Resolution::Withheld { why: metrics_api::name_undecided(&undecided), selected: resolved.len() + undecided.len() },
    })
}

/// Answers a metrics query and records how old the data behind it was;
/// a withheld answer is counted and logged at a bounded rate.
fn served(
    app: &App,
    view: &MergedView,
    segments: Option<&Resolution>,
    visible: Visible<'_>,
    selector: &Selector,
    route: &'static str,
    f: impl FnOnce(&Answer<'_>) -> Result<metrics_api::Served, ApiError>,
) -> Result<String, ApiError> {
    let served = with_view(app, view, segments, visible, |answer| match answer.streams_scanned(selector) > LONG_QUERY_STREAMS {
        true => crate::resources::run_long(|| f(answer)),
        false => f(answer),
    });
    let withheld = match &served {
        Ok(served) => served.withheld.clone(),
        Err(ApiError::NotFound(message)) if message.contains("is withheld") => Some(message.clone()),
        Err(_) => None,
    };
    if let Some(why) = withheld {
        app.telemetry.withheld(route);
        if WITHHELD_LOG.allow() {
            tracing::warn!(route, selector = %selector.to_string(), undecided = %why, "answer withheld: not every selected stream has a value");
        }
    }
    let served = served?;
    if let Some(oldest) = served.oldest {
        app.telemetry.served_age(Moment::now().since(oldest));
    }
    Ok(served.body)
}

/// Withheld answers are logged at most once per this interval.
static WITHHELD_LOG: crate::escape::RateLimit = crate::escape::RateLimit::per(Duration::from_secs(10));

fn selector_param(query: &str, name: &str) -> Result<Selector, ApiError> {
    // The last occurrence wins, as in net/url.
    let value = form_urlencoded::parse(query.as_bytes()).filter(|(k, _)| k == name).last().map(|(_, v)| v);
    Selector::parse(value.as_deref().unwrap_or("")).map_err(|e| ApiError::BadRequest(e.to_string()))
}
