//! Waiting for the signals that ask a process to stop: SIGTERM (Kubernetes
//! stopping the pod) and SIGINT (Ctrl-C), so servers can drain and writers
//! flush before the process exits.

/// Resolves on SIGTERM or SIGINT and logs which one came. If the SIGTERM
/// handler cannot be installed, that is logged as an error and only SIGINT
/// ends the wait.
pub async fn wait() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = terminate => tracing::info!("SIGTERM received, shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received, shutting down"),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[tokio::test]
    async fn sigterm_ends_the_wait() {
        let mut waiting = Box::pin(super::wait());
        // The first poll installs the handlers.
        assert!(tokio::time::timeout(Duration::from_millis(50), &mut waiting).await.is_err(), "resolved with no signal");
        let kill = std::process::Command::new("kill").args(["-TERM", &std::process::id().to_string()]).status();
        assert!(kill.as_ref().is_ok_and(|status| status.success()), "{kill:?}");
        tokio::time::timeout(Duration::from_secs(5), waiting).await.expect("SIGTERM ends the wait");
    }
}
