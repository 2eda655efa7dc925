//! The TLS accept loop, with the peer's client certificate chain attached
//! to every request of the connection, and the limits that keep clients
//! from holding connections or memory: a cap on connections, handshake,
//! header-read and idle timeouts, HTTP/2 pings and a maximum connection age.

use crate::auth::authn::Peer;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

/// How long requests in flight may take to finish once their connection is
/// being closed for age or idleness (the kube-apiserver's request timeout).
const CLOSE_GRACE: Duration = Duration::from_secs(60);

/// Pause after a failed accept (e.g. out of file descriptors), instead of
/// retrying at once in a loop.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Least time between two warnings about refused connections.
const REFUSAL_WARNING_EVERY: Duration = Duration::from_secs(10);

/// Connection limits; a zero duration disables the limit, except for the
/// handshake timeout.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections: usize,
    pub tls_handshake_timeout: Duration,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub http2_keepalive_interval: Duration,
    pub http2_keepalive_timeout: Duration,
    pub max_connection_age: Duration,
}

pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(enabled(limits.header_read_timeout));
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(enabled(limits.http2_keepalive_interval))
        .keep_alive_timeout(limits.http2_keepalive_timeout);
    let builder = Arc::new(builder);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let limits = Arc::new(limits);
    let mut refused = Refusals::default();
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(connection) => connection,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            _ = &mut shutdown => return,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(stream);
            refused.count(limits.max_connections);
            continue;
        };
        // Responses are small frames: do not let Nagle hold them back.
        let _ = stream.set_nodelay(true);
        let (acceptor, router, builder, limits) = (acceptor.clone(), router.clone(), builder.clone(), limits.clone());
        tokio::spawn(async move {
            serve_connection(stream, remote, acceptor, router, &builder, &limits).await;
            drop(slot);
        });
    }
}

fn enabled(limit: Duration) -> Option<Duration> {
    Some(limit).filter(|l| !l.is_zero())
}

/// Connections closed for being over the cap, warned about at most every
/// [`REFUSAL_WARNING_EVERY`].
#[derive(Default)]
struct Refusals {
    since_warning: u64,
    warned: Option<Instant>,
}

impl Refusals {
    fn count(&mut self, max_connections: usize) {
        self.since_warning += 1;
        if self.warned.is_none_or(|at| at.elapsed() >= REFUSAL_WARNING_EVERY) {
            tracing::warn!(max_connections, refused = self.since_warning, "too many connections; closing new ones (--max-connections)");
            self.since_warning = 0;
            self.warned = Some(Instant::now());
        }
    }
}

async fn serve_connection(
    stream: TcpStream,
    remote: std::net::SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
    router: Router,
    builder: &auto::Builder<TokioExecutor>,
    limits: &Limits,
) {
    let tls = match tokio::time::timeout(limits.tls_handshake_timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => return tracing::debug!(%remote, %error, "TLS handshake failed"),
        Err(_) => return tracing::debug!(%remote, "TLS handshake timed out"),
    };
    let chain = tls.get_ref().1.peer_certificates().map(<[_]>::to_vec).unwrap_or_default();
    let service = axum::Extension(Arc::new(Peer::new(chain))).layer(router);
    let activity = Arc::new(Activity::new());
    let tracked = activity.clone();
    let service = tower::service_fn(move |request| {
        let busy = tracked.begin();
        let call = service.clone().oneshot(request);
        async move {
            let response = call.await;
            drop(busy);
            response
        }
    });
    let connection = builder.serve_connection(TokioIo::new(tls), TowerToHyperService::new(service));
    tokio::pin!(connection);
    let close = async {
        tokio::select! {
            _ = activity.idle_for(limits.idle_timeout) => "idle",
            _ = after(limits.max_connection_age) => "max age",
        }
    };
    let served = tokio::select! {
        served = connection.as_mut() => served,
        reason = close => {
            tracing::debug!(%remote, reason, "closing the connection gracefully");
            connection.as_mut().graceful_shutdown();
            match tokio::time::timeout(CLOSE_GRACE, connection.as_mut()).await {
                Ok(served) => served,
                Err(_) => return tracing::debug!(%remote, "requests did not finish in time; connection closed"),
            }
        }
    };
    if let Err(error) = served {
        tracing::debug!(%remote, %error, "connection ended with an error");
    }
}

/// Resolves after `limit`; never if it is zero.
async fn after(limit: Duration) {
    match enabled(limit) {
        Some(limit) => tokio::time::sleep(limit).await,
        None => std::future::pending().await,
    }
}

/// Requests in flight on a connection, and when the last one ended.
struct Activity {
    state: Mutex<(usize, Instant)>,
}

/// One request in flight; its end is recorded when dropped.
struct Busy(Arc<Activity>);

impl Activity {
    fn new() -> Self {
        Activity { state: Mutex::new((0, Instant::now())) }
    }

    fn begin(self: &Arc<Self>) -> Busy {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).0 += 1;
        Busy(self.clone())
    }

    /// Resolves once no request has been in flight for `timeout`; never if
    /// it is zero.
    async fn idle_for(&self, timeout: Duration) {
        if timeout.is_zero() {
            return std::future::pending().await;
        }
        loop {
            let (in_flight, since) = *self.state.lock().unwrap_or_else(PoisonError::into_inner);
            let idle = if in_flight == 0 { since.elapsed() } else { Duration::ZERO };
            if idle >= timeout {
                return;
            }
            tokio::time::sleep(timeout - idle).await;
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let mut state = self.0.state.lock().unwrap_or_else(PoisonError::into_inner);
        *state = (state.0 - 1, Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_means_no_request_in_flight_for_the_whole_timeout() {
        let activity = Arc::new(Activity::new());
        let timeout = Duration::from_secs(10);
        let start = Instant::now();
        let busy = activity.begin();
        let release = async {
            tokio::time::sleep(Duration::from_secs(25)).await;
            drop(busy);
        };
        tokio::join!(activity.idle_for(timeout), release);
        assert_eq!(start.elapsed(), Duration::from_secs(35), "idle from the end of the last request");
        assert!(tokio::time::timeout(Duration::from_secs(3600), activity.idle_for(Duration::ZERO)).await.is_err(), "zero never ends");
    }
}
