//! The HTTP side: routing, query handling and the adapter's own endpoints.

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
use crate::controller_api::{ControllerApi, Truths, SEGMENTS_FAMILY};
use crate::scrape::Pool;
use crate::store::{MergedView, Store, SCOPE_LABEL, STREAM_LABEL};
use crate::telemetry::Telemetry;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use metrics_api::Answer;
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
    /// Asked for segment counts the metrics cannot decide; `None` if no
    /// endpoint is known.
    pub controller_api: Option<Arc<ControllerApi>>,
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
        Route::SelfMetrics => return Ok(text(StatusCode::OK, app.telemetry.render(&app.store))),
        Route::OpenApiV2 => metrics_api::openapi_v2().to_string(),
        Route::Apis => metrics_api::group_list().to_string(),
        Route::Group(group) => metrics_api::group(group).to_string(),
        Route::Resources(version) => {
            with_view(app, &app.store.view(), &Truths::default(), Visible::All, |a| a.resources(version)).to_string()
        }
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
            let truths = truths(app, &view, visible, &object.metric, &selector).await;
            served(app, &view, &truths, visible, &selector, |a| a.object(&object, &selector))?
        }
        Route::External { namespace, metric } => {
            let selector = selector_param(query, "labelSelector")?;
            app.pool.refresh_stale().await;
            let visible = app.scopes.visible(Some(&namespace));
            let view = app.store.view();
            let truths = truths(app, &view, visible, &metric, &selector).await;
            served(app, &view, &truths, visible, &selector, |a| a.external(&metric, &selector))?
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
    text(StatusCode::OK, "ok".into())
}

fn text(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

fn with_view<T>(app: &App, view: &MergedView, truths: &Truths, visible: Visible<'_>, f: impl FnOnce(&Answer<'_>) -> T) -> T {
    let answer = Answer {
        view,
        now: SystemTime::now(),
        max_age: app.store.max_age(),
        window: app.pool.settings().interval,
        truths,
        visible,
        max_list_items: app.max_list_items,
    };
    f(&answer)
}

/// The controller API's segment counts for the streams of `view` selected
/// that the metrics cannot decide (none for other metrics). The answer is
/// computed from the same view, whose verdicts these follow.
async fn truths(app: &App, view: &MergedView, visible: Visible<'_>, metric: &str, selector: &Selector) -> Truths {
    match &app.controller_api {
        Some(api) if metric == SEGMENTS_FAMILY => {
            let (scope, stream) = (selector.pinned(SCOPE_LABEL), selector.pinned(STREAM_LABEL));
            let oldest = SystemTime::now().checked_sub(app.store.max_age()).unwrap_or(SystemTime::UNIX_EPOCH);
            let selected = |s: &crate::store::Series<'_>| metrics_api::selected(visible, selector, s.labels);
            api.resolve(view, scope, stream, oldest, selected).await
        }
        _ => Truths::default(),
    }
}

/// Answers a metrics query and records how old the data behind it was.
fn served(
    app: &App,
    view: &MergedView,
    truths: &Truths,
    visible: Visible<'_>,
    selector: &Selector,
    f: impl FnOnce(&Answer<'_>) -> Result<metrics_api::Served, ApiError>,
) -> Result<String, ApiError> {
    let served = with_view(app, view, truths, visible, |answer| match answer.streams_scanned(selector) > LONG_QUERY_STREAMS {
        true => crate::resources::run_long(|| f(answer)),
        false => f(answer),
    })?;
    if let Some(oldest) = served.oldest {
        app.telemetry.served_age(SystemTime::now().duration_since(oldest).unwrap_or(Duration::ZERO));
    }
    Ok(served.body)
}

fn selector_param(query: &str, name: &str) -> Result<Selector, ApiError> {
    // The last occurrence wins, as in net/url.
    let value = form_urlencoded::parse(query.as_bytes()).filter(|(k, _)| k == name).last().map(|(_, v)| v);
    Selector::parse(value.as_deref().unwrap_or("")).map_err(|e| ApiError::BadRequest(e.to_string()))
}
