//! A TTL cache for review results (TokenReview, SubjectAccessReview) that
//! a steady stream of requests never sees expire.
//!
//! At thousands of requests per second, an entry that simply expired sent
//! every request arriving during the next review to the API server with a
//! review of its own: a burst of connections and reviews that stalled
//! serving for tens of milliseconds every TTL. So an entry in the last
//! quarter of its TTL is renewed by one request while the others keep
//! using it, and requests that find no entry share one review.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::OnceCell;
// Tokio's clock, which tests can pause and advance.
use tokio::time::Instant;

/// Entries beyond this trigger a sweep of expired ones, bounding memory
/// under a flood of distinct keys.
const SWEEP_ABOVE: usize = 10_000;

pub struct ReviewCache<K, V, E> {
    entries: Mutex<HashMap<K, Entry<V>>>,
    /// Reviews in flight for keys with no entry; requests for the same key
    /// wait for the same review and share its result, error included.
    flights: Mutex<HashMap<K, Flight<V, E>>>,
}

/// A review in flight: set once, by whichever waiting request runs it.
type Flight<V, E> = Arc<OnceCell<Result<V, E>>>;

struct Entry<V> {
    value: V,
    renew_from: Instant,
    expires: Instant,
    /// One request is renewing the entry; the others use it meanwhile.
    renewing: bool,
}

enum Lookup<V> {
    Fresh(V),
    /// Still valid, and this caller is the one to renew it.
    Renew(V),
    Missing,
}

impl<K: Hash + Eq + Clone, V: Clone, E: Clone + std::fmt::Display> ReviewCache<K, V, E> {
    pub fn new() -> Self {
        ReviewCache { entries: Mutex::new(HashMap::new()), flights: Mutex::new(HashMap::new()) }
    }

    /// The cached value for `key`, or the value `review` returns along with
    /// how long to cache it (zero: not cached).
    pub async fn get_or_review<F, Fut>(&self, key: &K, review: F) -> Result<V, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(V, Duration), E>>,
    {
        match self.lookup(key) {
            Lookup::Fresh(value) => Ok(value),
            Lookup::Renew(cached) => {
                let mut renewal = Renewal { cache: self, key, done: false };
                let renewed = review().await;
                renewal.done = true;
                match renewed {
                    Ok((value, ttl)) => {
                        self.insert(key.clone(), value.clone(), ttl);
                        Ok(value)
                    }
                    Err(error) => {
                        // The entry is still valid: serve it, and let a later
                        // request try again.
                        tracing::warn!(%error, "renewing a cached review failed; using the cached result until it expires");
                        self.renewal_abandoned(key);
                        Ok(cached)
                    }
                }
            }
            Lookup::Missing => {
                let flight = self.flights.lock().unwrap_or_else(PoisonError::into_inner).entry(key.clone()).or_default().clone();
                let waiter = Waiter { cache: self, key, flight: Some(flight) };
                let result = waiter
                    .flight()
                    .get_or_init(|| async {
                        let (value, ttl) = review().await?;
                        self.insert(key.clone(), value.clone(), ttl);
                        Ok(value)
                    })
                    .await
                    .clone();
                result
            }
        }
    }

    fn lookup(&self, key: &K) -> Lookup<V> {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        match entries.get_mut(key) {
            Some(entry) if now < entry.expires => {
                if now >= entry.renew_from && !entry.renewing {
                    entry.renewing = true;
                    Lookup::Renew(entry.value.clone())
                } else {
                    Lookup::Fresh(entry.value.clone())
                }
            }
            _ => Lookup::Missing,
        }
    }

    fn renewal_abandoned(&self, key: &K) {
        if let Some(entry) = self.entries.lock().unwrap_or_else(PoisonError::into_inner).get_mut(key) {
            entry.renewing = false;
        }
    }

    /// Stores `value` for `ttl`; a zero TTL stores nothing.
    fn insert(&self, key: K, value: V, ttl: Duration) {
        if ttl.is_zero() {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if entries.len() >= SWEEP_ABOVE {
            entries.retain(|_, entry| now < entry.expires);
            if entries.len() >= SWEEP_ABOVE {
                entries.clear();
            }
        }
        entries.insert(key, Entry { value, renew_from: now + ttl * 3 / 4, expires: now + ttl, renewing: false });
    }
}

/// Hands the renewal on to a later request if the renewing one is dropped
/// (its client went away) before the review lands.
struct Renewal<'a, K: Hash + Eq + Clone, V: Clone, E: Clone + std::fmt::Display> {
    cache: &'a ReviewCache<K, V, E>,
    key: &'a K,
    done: bool,
}

impl<K: Hash + Eq + Clone, V: Clone, E: Clone + std::fmt::Display> Drop for Renewal<'_, K, V, E> {
    fn drop(&mut self) {
        if !self.done {
            self.cache.renewal_abandoned(self.key);
        }
    }
}

/// One request waiting on a flight. When it goes, landed or dropped (its
/// client went away), the flight leaves the map if it has landed (later
/// requests find the entry, or start a new review if this one failed) or if
/// no other request waits on it: a flight nobody waits for would otherwise
/// stay forever, one per distinct key (random bearer tokens).
struct Waiter<'a, K: Hash + Eq + Clone, V: Clone, E: Clone + std::fmt::Display> {
    cache: &'a ReviewCache<K, V, E>,
    key: &'a K,
    flight: Option<Flight<V, E>>,
}

impl<K: Hash + Eq + Clone, V: Clone, E: Clone + std::fmt::Display> Waiter<'_, K, V, E> {
    fn flight(&self) -> &OnceCell<Result<V, E>> {
        self.flight.as_ref().expect("a waiter holds its flight until dropped")
    }
}

impl<K: Hash + Eq + Clone, V: Clone, E: Clone + std::fmt::Display> Drop for Waiter<'_, K, V, E> {
    fn drop(&mut self) {
        let mut flights = self.cache.flights.lock().unwrap_or_else(PoisonError::into_inner);
        // Every clone of a flight is made, and each waiter's dropped, under
        // this lock, so the count is exact: two means the map and this waiter.
        let Some(flight) = self.flight.take() else { return };
        let last_or_landed = flight.initialized() || Arc::strong_count(&flight) == 2;
        if last_or_landed && flights.get(self.key).is_some_and(|f| Arc::ptr_eq(f, &flight)) {
            flights.remove(self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    type Cache = ReviewCache<&'static str, u32, String>;

    const TTL: Duration = Duration::from_secs(10);
    /// How long the slow reviews take.
    const DELAY: Duration = Duration::from_millis(50);

    /// A review that counts its calls and answers `value` after `delay`.
    async fn review(
        calls: &AtomicUsize,
        value: Result<u32, &'static str>,
        ttl: Duration,
        delay: Duration,
    ) -> Result<(u32, Duration), String> {
        calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(delay).await;
        value.map(|v| (v, ttl)).map_err(str::to_owned)
    }

    #[tokio::test(start_paused = true)]
    async fn entries_expire_and_zero_ttl_is_not_cached() {
        let (cache, calls) = (Cache::new(), AtomicUsize::new(0));
        assert_eq!(cache.get_or_review(&"a", || review(&calls, Ok(1), TTL, Duration::ZERO)).await, Ok(1));
        assert_eq!(cache.get_or_review(&"a", || review(&calls, Ok(2), TTL, Duration::ZERO)).await, Ok(1));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        tokio::time::advance(TTL).await;
        assert_eq!(cache.get_or_review(&"a", || review(&calls, Ok(3), TTL, Duration::ZERO)).await, Ok(3), "expired");
        for value in [4, 5] {
            assert_eq!(cache.get_or_review(&"b", || review(&calls, Ok(value), Duration::ZERO, Duration::ZERO)).await, Ok(value));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn requests_that_find_no_entry_share_one_review_and_its_error() {
        let (cache, calls) = (Cache::new(), AtomicUsize::new(0));
        let waiting = (0..20).map(|_| cache.get_or_review(&"a", || review(&calls, Ok(7), TTL, DELAY)));
        assert!(futures::future::join_all(waiting).await.into_iter().all(|r| r == Ok(7)));
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        let failing = (0..5).map(|_| cache.get_or_review(&"b", || review(&calls, Err("down"), TTL, DELAY)));
        assert!(futures::future::join_all(failing).await.into_iter().all(|r| r == Err("down".to_owned())));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        // A failure is not cached: the next request reviews again.
        assert_eq!(cache.get_or_review(&"b", || review(&calls, Ok(8), TTL, DELAY)).await, Ok(8));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    /// A cache whose entry for "a" (1) is 8 s into its 10 s TTL.
    async fn near_expiry(calls: &AtomicUsize) -> Cache {
        let cache = Cache::new();
        cache.get_or_review(&"a", || review(calls, Ok(1), TTL, Duration::ZERO)).await.unwrap();
        tokio::time::advance(Duration::from_secs(8)).await;
        cache
    }

    #[tokio::test(start_paused = true)]
    async fn one_request_renews_an_entry_near_expiry_while_the_others_use_it() {
        let calls = AtomicUsize::new(0);
        let cache = near_expiry(&calls).await;
        let renewing = cache.get_or_review(&"a", || review(&calls, Ok(2), TTL, DELAY));
        let others = async {
            // While the renewal is in flight, nobody waits and nobody else reviews.
            tokio::task::yield_now().await;
            let now = tokio::time::Instant::now();
            let seen: Vec<_> =
                futures::future::join_all((0..10).map(|_| cache.get_or_review(&"a", || review(&calls, Ok(3), TTL, DELAY)))).await;
            assert_eq!(now.elapsed(), Duration::ZERO);
            seen
        };
        let (renewed, seen) = tokio::join!(renewing, others);
        assert_eq!(renewed, Ok(2));
        assert!(seen.iter().all(|r| *r == Ok(1)), "{seen:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        // Renewed for a full TTL from then: still cached 7 s later.
        tokio::time::advance(Duration::from_secs(7)).await;
        assert_eq!(cache.get_or_review(&"a", || review(&calls, Ok(4), TTL, Duration::ZERO)).await, Ok(2));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_or_dropped_renewal_keeps_the_entry_and_lets_a_later_request_renew() {
        let calls = AtomicUsize::new(0);
        let cache = near_expiry(&calls).await;
        assert_eq!(cache.get_or_review(&"a", || review(&calls, Err("down"), TTL, Duration::ZERO)).await, Ok(1));
        // Dropped before its review lands, as when the client goes away.
        let dropped = cache.get_or_review(&"a", || review(&calls, Ok(2), TTL, Duration::from_secs(1)));
        assert!(tokio::time::timeout(Duration::from_millis(10), dropped).await.is_err());
        assert_eq!(cache.get_or_review(&"a", || review(&calls, Ok(3), TTL, Duration::ZERO)).await, Ok(3));
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn dropped_requests_leave_no_flight_behind() {
        let (cache, calls) = (Cache::new(), AtomicUsize::new(0));
        // Every request for "a" goes away before its review lands.
        for _ in 0..3 {
            let dropped = cache.get_or_review(&"a", || review(&calls, Ok(1), TTL, Duration::from_secs(1)));
            assert!(tokio::time::timeout(Duration::from_millis(10), dropped).await.is_err());
        }
        assert!(cache.flights.lock().unwrap().is_empty(), "a flight nobody waits for is forgotten");

        // One of two waiters goes away: the other still gets the review.
        let kept = cache.get_or_review(&"b", || review(&calls, Ok(2), TTL, DELAY));
        let dropped = cache.get_or_review(&"b", || review(&calls, Ok(3), TTL, DELAY));
        let (kept, dropped) = tokio::join!(kept, tokio::time::timeout(DELAY / 2, dropped));
        assert_eq!(kept, Ok(2));
        assert!(dropped.is_err());
        assert!(cache.flights.lock().unwrap().is_empty());
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        assert_eq!(cache.get_or_review(&"b", || review(&calls, Ok(4), TTL, DELAY)).await, Ok(2), "its result is cached");
    }

    #[tokio::test]
    async fn size_stays_bounded() {
        let cache: ReviewCache<usize, usize, String> = ReviewCache::new();
        for i in 0..(SWEEP_ABOVE * 3) {
            cache.get_or_review(&i, || async move { Ok((i, Duration::from_secs(60))) }).await.unwrap();
        }
        assert!(cache.entries.lock().unwrap().len() <= SWEEP_ABOVE);
        assert!(cache.flights.lock().unwrap().is_empty());
    }
}
