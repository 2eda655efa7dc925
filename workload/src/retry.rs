//! Retrying a call with capped exponential backoff while what it needs (the
//! Pravega controller) is not up yet, until it succeeds or the process is
//! asked to stop.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;
use tokio::sync::watch;

const FIRST_DELAY: Duration = Duration::from_millis(500);
const MAX_DELAY: Duration = Duration::from_secs(30);

/// Runs `attempt` until it succeeds (`Some`) or `stopped` turns true
/// (`None`), logging each failure as `what` failed.
pub async fn with_backoff<T, E: Display, F: Future<Output = Result<T, E>>>(
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

    #[tokio::test(start_paused = true)]
    async fn retries_with_growing_delays_until_success() {
        let (_stop, mut stopped) = watch::channel(false);
        let attempts = Cell::new(0);
        let started = Instant::now();
        let value = with_backoff("test", &mut stopped, || {
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
        with_backoff("test", &mut stopped, || {
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
        let retrying = with_backoff("test", &mut stopped, || async { Err::<(), _>("down") });
        let (value, ()) = tokio::join!(retrying, stopper);
        assert_eq!(value, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_interrupts_a_hanging_attempt() {
        let (stop, mut stopped) = watch::channel(false);
        stop.send(true).unwrap();
        let value = with_backoff("test", &mut stopped, std::future::pending::<Result<(), &str>>).await;
        assert_eq!(value, None);
    }
}
