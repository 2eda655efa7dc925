//! The TLS accept loop, with the peer's client certificate chain attached
//! to every request of the connection, and the limits that keep clients
//! from holding connections or memory: a cap on connections of which
//! unauthenticated ones have a smaller budget and are shed first
//! ([`admission`]), handshake, header-read and idle timeouts, HTTP/2 pings
//! and a maximum connection age.

pub mod admission;

use crate::auth::authn::Peer;
use admission::{Admission, AdmissionLimits, Ticket};
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

/// How long requests in flight may take to finish once their connection is
/// being closed for age or idleness (the kube-apiserver's request timeout).
const CLOSE_GRACE: Duration = Duration::from_secs(60);

/// Pause after a failed accept (e.g. out of file descriptors with no
/// unauthenticated connection to shed), instead of retrying at once.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Least time between two warnings of one kind about connections.
const WARNING_EVERY: Duration = Duration::from_secs(10);

/// Connection limits; a zero duration disables the limit, except for the
/// handshake timeout.
#[derive(Debug, Clone)]
pub struct Limits {
    pub admission: AdmissionLimits,
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
    let admission = Admission::new(fit_to_open_files(limits.admission, crate::resources::open_files_limit()));
    let limits = Arc::new(limits);
    let mut warnings = Warnings::default();
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = async {
                admission.room().await;
                listener.accept().await
            } => match accepted {
                Ok(connection) => connection,
                Err(error) => {
                    let out_of_descriptors = matches!(error.raw_os_error(), Some(libc::EMFILE | libc::ENFILE));
                    if out_of_descriptors && admission.shed_one() {
                        warnings.shed_for_descriptors(1);
                        // Its descriptor is free once its task has closed it.
                        let _ = tokio::time::timeout(ACCEPT_BACKOFF, admission.closed()).await;
                    } else {
                        warnings.accept_failed(&error);
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                    continue;
                }
            },
            _ = &mut shutdown => return,
        };
        let ticket = match admission.admit(remote.ip()) {
            Ok((ticket, made)) => {
                warnings.shed_for_budget(made.shed, admission.limits());
                ticket
            }
            Err(refused) => {
                warnings.refused(&refused);
                drop(stream);
                continue;
            }
        };
        // Responses are small frames: do not let Nagle hold them back.
        let _ = stream.set_nodelay(true);
        let (acceptor, router, builder, limits) = (acceptor.clone(), router.clone(), builder.clone(), limits.clone());
        tokio::spawn(async move { serve_connection(stream, remote, ticket, acceptor, router, &builder, &limits).await });
    }
}

/// File descriptors kept for the adapter's own files and connections (to
/// controllers and the Kubernetes API) when the open-files limit caps the
/// connections served.
const OWN_DESCRIPTORS: u64 = 128;

/// `limits` with `max_connections` (and the budgets within it) kept below
/// `open_files` less [`OWN_DESCRIPTORS`], so that served connections cannot
/// take the descriptors scrapes and reviews need.
fn fit_to_open_files(limits: AdmissionLimits, open_files: Option<u64>) -> AdmissionLimits {
    let Some(room) = open_files.map(|n| usize::try_from(n.saturating_sub(OWN_DESCRIPTORS).max(1)).unwrap_or(usize::MAX)) else {
        return limits;
    };
    if room >= limits.max_connections {
        return limits;
    }
    tracing::warn!(
        max_connections = limits.max_connections,
        open_files,
        serving = room,
        "the open-files limit is below --max-connections; serving fewer connections"
    );
    AdmissionLimits {
        max_connections: room,
        max_unauthenticated: limits.max_unauthenticated.min(room),
        max_unauthenticated_per_source: limits.max_unauthenticated_per_source.min(room),
    }
}

fn enabled(limit: Duration) -> Option<Duration> {
    Some(limit).filter(|l| !l.is_zero())
}

/// Warnings about connections shed, refused or not accepted, each kind at
/// most every [`WARNING_EVERY`] with the count since the last one.
#[derive(Default)]
struct Warnings {
    shed_for_budget: RateBound,
    shed_for_descriptors: RateBound,
    refused: RateBound,
    accept_failed: RateBound,
}

#[derive(Default)]
struct RateBound {
    since_warning: u64,
    warned: Option<Instant>,
}

impl RateBound {
    /// Counts `n` events; the count since the last warning if one is due.
    fn count(&mut self, n: usize) -> Option<u64> {
        self.since_warning += n as u64;
        if self.since_warning == 0 || self.warned.is_some_and(|at| at.elapsed() < WARNING_EVERY) {
            return None;
        }
        self.warned = Some(Instant::now());
        Some(std::mem::take(&mut self.since_warning))
    }
}

impl Warnings {
    fn shed_for_budget(&mut self, shed: usize, limits: AdmissionLimits) {
        if let Some(shed) = self.shed_for_budget.count(shed) {
            tracing::warn!(
                shed,
                max_unauthenticated = limits.max_unauthenticated,
                per_source = limits.max_unauthenticated_per_source,
                max_connections = limits.max_connections,
                "too many unauthenticated connections; closing the oldest to let new ones in \
                 (--max-unauthenticated-connections, --max-unauthenticated-connections-per-source, --max-connections)"
            );
        }
    }

    fn shed_for_descriptors(&mut self, shed: usize) {
        if let Some(shed) = self.shed_for_descriptors.count(shed) {
            tracing::warn!(shed, "out of file descriptors; closing unauthenticated connections to accept new ones");
        }
    }

    fn refused(&mut self, refused: &admission::AllAuthenticated) {
        if let Some(refused_count) = self.refused.count(1) {
            tracing::warn!(refused = refused_count, "too many connections: {refused}; closing new ones");
        }
    }

    fn accept_failed(&mut self, error: &std::io::Error) {
        if let Some(failures) = self.accept_failed.count(1) {
            tracing::warn!(%error, failures, "accept failed");
        }
    }
}

async fn serve_connection(
    stream: TcpStream,
    remote: std::net::SocketAddr,
    mut ticket: Ticket,
    acceptor: tokio_rustls::TlsAcceptor,
    router: Router,
    builder: &auto::Builder<TokioExecutor>,
    limits: &Limits,
) {
    let handshake = tokio::time::timeout(limits.tls_handshake_timeout, acceptor.accept(stream));
    let tls = tokio::select! {
        done = handshake => match done {
            Ok(Ok(tls)) => tls,
            Ok(Err(error)) => return tracing::debug!(%remote, %error, "TLS handshake failed"),
            Err(_) => return tracing::debug!(%remote, "TLS handshake timed out"),
        },
        _ = ticket.shed() => return tracing::debug!(%remote, "shed before its TLS handshake completed"),
    };
    ticket.handshake_done();
    let chain = tls.get_ref().1.peer_certificates().map(<[_]>::to_vec).unwrap_or_default();
    let peer = Arc::new(Peer::new(chain));
    let service = axum::Extension(peer.clone()).layer(router);
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
    tokio::pin!(close);
    let authenticated = peer.authenticated();
    tokio::pin!(authenticated);
    let mut trusted = false;
    let served = loop {
        tokio::select! {
            served = connection.as_mut() => break served,
            _ = &mut authenticated, if !trusted => {
                ticket.authenticated();
                trusted = true;
            }
            _ = ticket.shed(), if !trusted => return tracing::debug!(%remote, "unauthenticated connection shed"),
            reason = &mut close => {
                tracing::debug!(%remote, reason, "closing the connection gracefully");
                connection.as_mut().graceful_shutdown();
                match tokio::time::timeout(CLOSE_GRACE, connection.as_mut()).await {
                    Ok(served) => break served,
                    Err(_) => return tracing::debug!(%remote, "requests did not finish in time; connection closed"),
                }
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

    #[test]
    fn connections_stay_below_the_open_files_limit() {
        let limits = AdmissionLimits { max_connections: 1000, max_unauthenticated: 200, max_unauthenticated_per_source: 20 };
        assert_eq!(fit_to_open_files(limits, None), limits);
        assert_eq!(fit_to_open_files(limits, Some(20_000)), limits);
        let fitted = AdmissionLimits { max_connections: 128, max_unauthenticated: 128, max_unauthenticated_per_source: 20 };
        assert_eq!(fit_to_open_files(limits, Some(256)), fitted);
        assert_eq!(fit_to_open_files(limits, Some(10)).max_connections, 1);
    }

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
