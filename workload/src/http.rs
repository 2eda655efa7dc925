//! The workload binaries' HTTP endpoints: `/metrics`, `/livez`, `/readyz`,
//! plus whatever else the binary adds (the simulator's `/prometheus`).

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::watch;

/// Health and metrics routes; `metrics` renders the exposition on demand.
pub fn router(metrics: impl Fn() -> String + Clone + Send + Sync + 'static, ready: Arc<AtomicBool>) -> Router {
    Router::new().route("/metrics", get(move || text(metrics()))).route("/livez", get(|| async { "ok" })).route(
        "/readyz",
        get(move || async move {
            if ready.load(Ordering::Relaxed) {
                (StatusCode::OK, "ok")
            } else {
                (StatusCode::SERVICE_UNAVAILABLE, "not ready")
            }
        }),
    )
}

/// A Prometheus text response.
pub async fn text(body: String) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body)
}

/// Serves `router` on `address` until `stopped` turns true.
pub async fn serve(address: SocketAddr, router: Router, mut stopped: watch::Receiver<bool>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    tracing::info!(%address, "serving /metrics, /livez, /readyz");
    let shutdown = async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await
}
