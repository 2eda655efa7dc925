//! Accept loops: plain HTTP (loopback demo) and TLS with the peer's client
//! certificate chain attached to every request of the connection.

use crate::auth::authn::Peer;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tower::Layer;

/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn serve_tls(listener: TcpListener, tls: Arc<rustls::ServerConfig>, router: Router, shutdown: impl Future<Output = ()>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(connection) => connection,
                Err(error) => {
                    // E.g. out of file descriptors: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => return,
        };
        // Responses are small frames: do not let Nagle hold them back.
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let router = router.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => return tracing::debug!(%remote, %error, "TLS handshake failed"),
                Err(_) => return tracing::debug!(%remote, "TLS handshake timed out"),
            };
            let chain = tls.get_ref().1.peer_certificates().map(<[_]>::to_vec).unwrap_or_default();
            let service = axum::Extension(Arc::new(Peer::new(chain))).layer(router);
            let served =
                auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(tls), TowerToHyperService::new(service)).await;
            if let Err(error) = served {
                tracing::debug!(%remote, %error, "connection ended with an error");
            }
        });
    }
}
