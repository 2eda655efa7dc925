//! Reaching the Pravega controller, for both binaries: a client
//! configuration from a checked URI (the client panics on a malformed one),
//! and retries with capped exponential backoff while the controller is not
//! up yet, until the call succeeds or the process is asked to stop.

use pravega_client_config::{ClientConfig, ClientConfigBuilder};
use std::fmt::Display;
use std::future::Future;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
#[error("invalid controller URI {uri:?}: {reason}")]
pub struct InvalidUri {
    uri: String,
    reason: String,
}

/// The client configuration for a controller at `[scheme://]host:port`.
pub fn client_config(uri: &str) -> Result<ClientConfig, InvalidUri> {
    let invalid = |reason: &str| InvalidUri { uri: uri.to_owned(), reason: reason.to_owned() };
    let (scheme, endpoint) = uri.split_once("://").unwrap_or(("", uri));
    if !scheme.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(invalid("the scheme must be alphanumeric (tcp, tls)"));
    }
    let (host, port) = endpoint.rsplit_once(':').ok_or_else(|| invalid("expected host:port"))?;
    port.parse::<u16>().map_err(|_| invalid("the port must be a number up to 65535"))?;
    let bracketed_ipv6 = host.len() > 2 && host.starts_with('[') && host.ends_with(']');
    if !bracketed_ipv6 && (host.is_empty() || !host.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')) {
        return Err(invalid("the host must be a DNS name, an IPv4 address or a bracketed IPv6 address"));
    }
    if TLS_SCHEMES.contains(&scheme) {
        // The client reads its CA certificates from this file or directory
        // when the configuration is built, and panics if it is missing.
        let certs = std::env::var(TLS_CERTS_ENV).unwrap_or_else(|_| "./certs".to_owned());
        if std::fs::metadata(&certs).is_err() {
            return Err(invalid(&format!("TLS needs the controller's CA certificates at {certs:?} (set {TLS_CERTS_ENV})")));
        }
    }
    ClientConfigBuilder::default().controller_uri(uri).build().map_err(|reason| invalid(&reason))
}

/// Schemes the client treats as TLS, and where it looks for CA certificates.
const TLS_SCHEMES: [&str; 4] = ["tls", "ssl", "tcps", "pravegas"];
const TLS_CERTS_ENV: &str = "pravega_client_tls_cert_path";

const FIRST_DELAY: Duration = Duration::from_millis(500);
const MAX_DELAY: Duration = Duration::from_secs(30);

/// Runs `attempt` until it succeeds (`Some`) or `stopped` turns true
/// (`None`), logging each failure as `what` failed.
pub async fn retry<T, E: Display, F: Future<Output = Result<T, E>>>(
    what: &str,
    stopped: &mut watch::Receiver<bool>,
    mut attempt: impl FnMut() -> F,
) -> Option<T> {
    let mut delay = FIRST_DELAY;
    loop {
        let outcome = tokio::select! {
            outcome = attempt() => outcome,
            _ = stopped.wait_for(|stop| *stop) => return None,
        };
        match outcome {
            Ok(value) => return Some(value),
            Err(error) => tracing::warn!(%error, retry_in = ?delay, "{what} failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stopped.wait_for(|stop| *stop) => return None,
        }
        delay = (delay * 2).min(MAX_DELAY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use tokio::time::Instant;

    #[test]
    fn accepts_the_uris_pravega_deployments_use() {
        for uri in ["tcp://pravega-pravega-controller:9090", "127.0.0.1:9090", "tcp://[::1]:9090"] {
            let config = client_config(uri).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(config.controller_uri.to_string(), uri);
        }
    }

    #[test]
    fn rejects_what_would_panic_inside_the_client() {
        for (uri, reason) in [
            ("pravega-controller", "host:port"),
            ("tcp://controller:90900", "port"),
            ("tcp://controller:", "port"),
            ("tcp://:9090", "host"),
            ("tcp://contr oller:9090", "host"),
            ("tc-p://controller:9090", "scheme"),
            ("tls://controller:9090", "CA certificates at \"./certs\""),
        ] {
            let error = client_config(uri).unwrap_err().to_string();
            assert!(error.contains(reason) && error.contains(uri), "{uri}: {error}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_with_growing_delays_until_success() {
        let (_stop, mut stopped) = watch::channel(false);
        let attempts = Cell::new(0);
        let started = Instant::now();
        let value = retry("test", &mut stopped, || {
            attempts.set(attempts.get() + 1);
            let n = attempts.get();
            async move {
                if n < 4 {
                    Err(format!("attempt {n}"))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(value, Some(4));
        // 0.5 + 1 + 2 seconds of backoff before the fourth attempt.
        assert_eq!(started.elapsed(), Duration::from_millis(3500));
    }

    #[tokio::test(start_paused = true)]
    async fn delays_are_capped() {
        let (_stop, mut stopped) = watch::channel(false);
        let attempts = Cell::new(0);
        let started = Instant::now();
        retry("test", &mut stopped, || {
            attempts.set(attempts.get() + 1);
            let n = attempts.get();
            async move {
                if n < 10 {
                    Err("down")
                } else {
                    Ok(())
                }
            }
        })
        .await;
        // 0.5 + 1 + 2 + 4 + 8 + 16, then 30 s three times.
        assert_eq!(started.elapsed(), Duration::from_millis(31_500 + 90_000));
    }

    #[tokio::test(start_paused = true)]
    async fn stopping_ends_the_retries() {
        let (stop, mut stopped) = watch::channel(false);
        let stopper = async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            stop.send(true).unwrap();
        };
        let retrying = retry("test", &mut stopped, || async { Err::<(), _>("down") });
        let (value, ()) = tokio::join!(retrying, stopper);
        assert_eq!(value, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_interrupts_a_hanging_attempt() {
        let (stop, mut stopped) = watch::channel(false);
        stop.send(true).unwrap();
        let value = retry("test", &mut stopped, std::future::pending::<Result<(), &str>>).await;
        assert_eq!(value, None);
    }
}
