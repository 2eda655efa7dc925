//! Scraping: one task per controller replica, on an interval and on demand.
//!
//! Each task fetches its target's exposition (through [`Fetch`]: HTTP in
//! the adapter) with a timeout and a body-size cap, scans it chunk by
//! chunk into a new snapshot and publishes it to the store. A scrape is
//! published only if its body is a whole, well-formed exposition: text of
//! the exposition format's content type, ending at a line boundary, with
//! at least one sample of a wanted family. Anything else (an error page, a
//! body cut short, a restarting controller that reports nothing yet) is a
//! failed scrape, which keeps the previous snapshot until the store's max
//! age drops it. Queries call [`Pool::refresh_stale`] so that a value is
//! never older than `max_staleness` (three of its slowest recent scrape
//! rounds, for a target whose rounds are slower) when a fresh one can be
//! had within the scrape timeout; concurrent queries share the scrape in
//! flight.

use crate::clock::Moment;
use crate::parse::{ParseStats, Scanner};
use crate::store::{LimitExceeded, SnapshotBuilder, Store, TargetSnapshot};
use crate::telemetry::Telemetry;
use regex::Regex;
use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio::task::AbortHandle;
use tokio::time::Instant;

/// One controller replica's metrics endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Stable identity: the URL for static targets, `namespace/pod` for pods.
    pub id: Arc<str>,
    pub url: String,
}

impl Target {
    /// Found through discovery rather than given as a URL.
    pub fn is_discovered(&self) -> bool {
        *self.id != self.url
    }
}

#[derive(Debug, Clone)]
pub struct ScrapeSettings {
    pub interval: Duration,
    pub timeout: Duration,
    pub max_body_bytes: u64,
    /// Queries refresh targets whose last scrape started longer ago.
    pub max_staleness: Duration,
    /// Metric names to keep (the scanner skips every other family).
    pub allow: Regex,
}

/// Where a scrape's bytes come from: the controller's HTTP endpoint
/// ([`Http`]) in the adapter, a scripted source in the pool's tests.
/// Whatever the source, the pool applies the size cap and publishes only a
/// whole exposition.
pub trait Fetch: Send + Sync + 'static {
    type Response: Chunks;

    /// Asks `target` for its exposition; fails if the answer is not one to
    /// read (a request error, an error status, a content type that is not
    /// text).
    fn fetch(&self, target: &Target) -> impl Future<Output = Result<Self::Response, ScrapeError>> + Send;
}

/// A fetched exposition, read as it arrives.
pub trait Chunks: Send {
    /// The length the source announced, if any.
    fn content_length(&self) -> Option<u64>;

    /// The next piece of the body; `None` once it is complete.
    fn chunk(&mut self) -> impl Future<Output = Result<Option<bytes::Bytes>, ScrapeError>> + Send;
}

/// Fetches over HTTP with the adapter's controller client.
pub struct Http {
    client: reqwest::Client,
    /// Sent as `Authorization: Bearer`, re-read every scrape so rotated
    /// tokens are picked up.
    bearer_token_file: Option<PathBuf>,
}

impl Http {
    pub fn new(client: reqwest::Client, bearer_token_file: Option<PathBuf>) -> Self {
        Http { client, bearer_token_file }
    }
}

impl Fetch for Http {
    type Response = reqwest::Response;

    async fn fetch(&self, target: &Target) -> Result<reqwest::Response, ScrapeError> {
        let mut request = self.client.get(&target.url).header(reqwest::header::ACCEPT, "text/plain;version=0.0.4");
        if let Some(path) = &self.bearer_token_file {
            let token = tokio::fs::read_to_string(path).await.map_err(|source| ScrapeError::Token { path: path.clone(), source })?;
            request = request.bearer_auth(token.trim());
        }
        let response = request.send().await?;
        if !response.status().is_success() {
            return Err(ScrapeError::Status(response.status()));
        }
        check_content_type(response.headers())?;
        Ok(response)
    }
}

impl Chunks for reqwest::Response {
    fn content_length(&self) -> Option<u64> {
        reqwest::Response::content_length(self)
    }

    async fn chunk(&mut self) -> Result<Option<bytes::Bytes>, ScrapeError> {
        Ok(reqwest::Response::chunk(self).await?)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    #[error("request failed: {0}")]
    Request(#[from] reqwest::Error),
    #[error("answered HTTP {0}")]
    Status(reqwest::StatusCode),
    #[error("body exceeds the {0}-byte cap")]
    TooLarge(u64),
    #[error("no complete answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot read bearer token file {path}: {source}")]
    Token { path: PathBuf, source: std::io::Error },
    #[error("the parser thread stopped unexpectedly")]
    ParserStopped,
    #[error("content type {0:?} is not the Prometheus text format")]
    ContentType(String),
    #[error("the body is not text: it holds a NUL byte")]
    NotText,
    #[error("the body does not end at a line boundary: it was cut short")]
    Truncated,
    #[error("the body holds no well-formed sample of a wanted family ({malformed} malformed lines)")]
    NothingWanted { malformed: u64 },
    #[error(transparent)]
    OverLimit(#[from] LimitExceeded),
}

impl ScrapeError {
    /// A short word for the adapter's own metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            ScrapeError::Request(_) => "request",
            ScrapeError::Status(_) => "status",
            ScrapeError::TooLarge(_) => "too_large",
            ScrapeError::Timeout(_) => "timeout",
            ScrapeError::Token { .. } => "token",
            ScrapeError::ParserStopped => "parser",
            ScrapeError::ContentType(_) => "content_type",
            ScrapeError::NotText => "not_text",
            ScrapeError::Truncated => "truncated",
            ScrapeError::NothingWanted { .. } => "nothing_wanted",
            ScrapeError::OverLimit(limit) => limit.reason(),
        }
    }
}

/// Content types of the text exposition formats, before any parameters.
const TEXT_FORMATS: [&str; 2] = ["text/plain", "application/openmetrics-text"];

/// Longest content type quoted in an error.
const MAX_QUOTED_CONTENT_TYPE: usize = 64;

/// Accepts a response without a content type, or with a text format's.
fn check_content_type(headers: &reqwest::header::HeaderMap) -> Result<(), ScrapeError> {
    let Some(value) = headers.get(reqwest::header::CONTENT_TYPE) else { return Ok(()) };
    let text = String::from_utf8_lossy(value.as_bytes());
    let media_type = text.split(';').next().unwrap_or("").trim();
    if TEXT_FORMATS.iter().any(|format| media_type.eq_ignore_ascii_case(format)) {
        return Ok(());
    }
    Err(ScrapeError::ContentType(text.chars().take(MAX_QUOTED_CONTENT_TYPE).collect()))
}

/// Body bytes handed to the parser thread but not yet parsed, per scrape;
/// beyond them the reader holds at most the rest of one chunk (hyper reads
/// up to 400 KiB at once). So a slow parser holds back the controller's
/// TCP stream instead of piling up the body in memory.
const BYTES_IN_FLIGHT: u32 = 256 * 1024;

/// The reader hands the body on in copies of at most this size. hyper
/// cuts each chunk out of its read buffer, so while a chunk is held it
/// reads the next into a fresh buffer of up to 400 KiB; above the 64 KiB
/// mmap threshold (see [`crate::resources::tune_allocator`]) that is a new
/// mapping whose every page faults.
/// Copied at once into pieces the allocator recycles, a chunk is dropped
/// before hyper reads on, and hyper reuses its buffer.
const PIECE_BYTES: usize = 32 * 1024;

/// What the reader hands the parser thread.
enum Body {
    /// The permit returns the piece's share of [`BYTES_IN_FLIGHT`] once parsed.
    Chunk(bytes::Bytes, tokio::sync::OwnedSemaphorePermit),
    /// The whole body arrived: the snapshot may be published.
    Complete,
}

/// A scrape that landed in the store.
struct Landed {
    generation: u64,
    series: usize,
    stats: ParseStats,
}

/// Bytes parsed between offers of the core to serving threads (a fraction
/// of a millisecond of work).
const PARSE_SLICE: usize = 64 * 1024;

/// Scans the body as it arrives into the target's next snapshot and
/// publishes it once the body is complete and whole; publishes nothing if
/// the reader gives up (error, size cap, timeout: `None`), the body is
/// not a whole exposition, or it goes over a limit of the store (then at
/// once, which stops the reader too). Runs on a background thread, which
/// therefore also pays for freeing the replaced snapshot.
fn parse_and_publish(
    mut incoming: tokio::sync::mpsc::UnboundedReceiver<Body>,
    allow: &Regex,
    mut builder: SnapshotBuilder,
    publish: impl FnOnce(TargetSnapshot) -> Result<u64, LimitExceeded>,
) -> Option<Result<Landed, ScrapeError>> {
    let mut scanner = Scanner::new(|name: &str| allow.is_match(name));
    let (mut last_byte, mut text) = (None, true);
    while let Body::Chunk(chunk, _in_flight) = incoming.blocking_recv()? {
        text &= memchr::memchr(0, &chunk).is_none();
        last_byte = chunk.last().copied().or(last_byte);
        for slice in chunk.chunks(PARSE_SLICE) {
            scanner.feed(slice, &mut |sample| builder.push(sample));
            if let Some(limit) = builder.exceeded() {
                return Some(Err(limit.into()));
            }
            crate::resources::make_way();
        }
    }
    let mut stats = scanner.finish(&mut |sample| builder.push(sample));
    if let Some(limit) = builder.exceeded() {
        return Some(Err(limit.into()));
    }
    stats.malformed += builder.rejected();
    if !text {
        return Some(Err(ScrapeError::NotText));
    }
    if last_byte.is_some_and(|byte| byte != b'\n') {
        return Some(Err(ScrapeError::Truncated));
    }
    if stats.samples == 0 {
        return Some(Err(ScrapeError::NothingWanted { malformed: stats.malformed }));
    }
    let snapshot = builder.finish();
    let series = snapshot.series_count();
    Some(publish(snapshot).map(|generation| Landed { generation, series, stats }).map_err(ScrapeError::from))
}

/// Progress of a target's scrape loop, watched by waiting queries.
#[derive(Debug, Clone, Copy, Default)]
struct Rounds {
    completed: u64,
    last_started: Option<Instant>,
    /// From the start of the last round until its data was served.
    last_duration: Duration,
    /// The longest of the last [`RECENT_ROUNDS`] rounds.
    slowest_recent: Duration,
}

/// How many rounds a slow round keeps the staleness bound up (see
/// [`staleness_bound`]).
const RECENT_ROUNDS: usize = 8;

struct TargetState {
    target: Target,
    refresh: Notify,
    rounds: watch::Sender<Rounds>,
    /// A round runs, or a query has asked for one.
    in_flight: AtomicBool,
    task: std::sync::OnceLock<AbortHandle>,
}

/// What every scrape task shares.
struct Scraper<F> {
    fetch: F,
    settings: ScrapeSettings,
    store: Arc<Store>,
    telemetry: Arc<Telemetry>,
}

/// The set of scraped targets, kept in line with discovery.
pub struct Pool<F = Http> {
    scraper: Arc<Scraper<F>>,
    /// Where the scrape tasks run (see [`crate::resources::background_runtime`]).
    runtime: tokio::runtime::Handle,
    targets: RwLock<BTreeMap<Arc<str>, Arc<TargetState>>>,
    /// Discovery has delivered its first complete target list.
    synced: AtomicBool,
    /// Latched once every initial target has completed a scrape.
    ready: AtomicBool,
}

impl<F: Fetch> Pool<F> {
    /// Scrape tasks fetch through `fetch` and run on `runtime`.
    pub fn new(fetch: F, settings: ScrapeSettings, store: Arc<Store>, telemetry: Arc<Telemetry>, runtime: tokio::runtime::Handle) -> Self {
        Pool {
            scraper: Arc::new(Scraper { fetch, settings, store, telemetry }),
            runtime,
            targets: RwLock::default(),
            synced: AtomicBool::new(false),
            ready: AtomicBool::new(false),
        }
    }

    pub fn settings(&self) -> &ScrapeSettings {
        &self.scraper.settings
    }

    /// Makes `targets` the scraped set: starts tasks for new targets, stops
    /// those of vanished ones (and drops their data).
    pub fn set_targets(&self, targets: Vec<Target>) {
        let mut current = self.targets.write().unwrap_or_else(PoisonError::into_inner);
        let wanted: BTreeMap<Arc<str>, Target> = targets.into_iter().map(|t| (t.id.clone(), t)).collect();
        let stale: Vec<Arc<str>> =
            current.iter().filter(|(id, state)| wanted.get(*id) != Some(&state.target)).map(|(id, _)| id.clone()).collect();
        for id in stale {
            if let Some(state) = current.remove(&id) {
                if let Some(task) = state.task.get() {
                    task.abort();
                }
                self.scraper.store.remove(&id);
                self.scraper.telemetry.forget_target(&id);
                tracing::info!(target_id = %id, url = %state.target.url, "stopped scraping");
            }
        }
        for (id, target) in wanted {
            if current.contains_key(&id) {
                continue;
            }
            tracing::info!(target_id = %id, url = %target.url, "scraping");
            let state = Arc::new(TargetState {
                target,
                refresh: Notify::new(),
                rounds: watch::Sender::new(Rounds::default()),
                in_flight: AtomicBool::new(false),
                task: std::sync::OnceLock::new(),
            });
            let task = self.runtime.spawn(self.scraper.clone().run(state.clone()));
            let _ = state.task.set(task.abort_handle());
            current.insert(id, state);
        }
        self.synced.store(true, Ordering::Release);
    }

    /// The hosts of the discovered targets.
    pub fn discovered_hosts(&self) -> Vec<String> {
        let targets = self.targets.read().unwrap_or_else(PoisonError::into_inner);
        targets
            .values()
            .filter(|state| state.target.is_discovered())
            .filter_map(|state| reqwest::Url::parse(&state.target.url).ok()?.host_str().map(|h| h.trim_matches(['[', ']']).to_owned()))
            .collect()
    }

    /// Ready once discovery has synced and every target it found has been
    /// scraped once (successfully or not: an unreachable Pravega must not
    /// take the metrics APIs down with it). Stays ready afterwards.
    pub fn is_ready(&self) -> bool {
        if self.ready.load(Ordering::Acquire) {
            return true;
        }
        let done = self.synced.load(Ordering::Acquire)
            && self.targets.read().unwrap_or_else(PoisonError::into_inner).values().all(|t| t.rounds.borrow().completed > 0);
        if done {
            self.ready.store(true, Ordering::Release);
        }
        done
    }

    /// Scrapes every target whose data is older than its staleness bound
    /// (see [`staleness_bound`]; from its slowest recent round) and waits
    /// (at most the scrape timeout) for those scrapes to land.
    ///
    /// Data past half the bound of its last round is refreshed without
    /// waiting: under a steady stream of queries it never reaches the
    /// bound, so no query waits, while a lone HPA query every 15 s waits
    /// for fresh data.
    pub async fn refresh_stale(&self) {
        let waits: Vec<_> = {
            let targets = self.targets.read().unwrap_or_else(PoisonError::into_inner);
            targets
                .values()
                .filter_map(|state| {
                    let rounds = *state.rounds.borrow();
                    let max_staleness = self.scraper.settings.max_staleness;
                    let age = rounds.last_started.map(|s| s.elapsed());
                    if age.is_some_and(|age| age <= staleness_bound(max_staleness, rounds.last_duration) / 2) {
                        return None;
                    }
                    // A round in flight or asked for started recently
                    // enough: share it. Else ask for one, once for all
                    // concurrent queries.
                    if state.in_flight.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                        state.refresh.notify_one();
                    }
                    if age.is_some_and(|age| age <= staleness_bound(max_staleness, rounds.slowest_recent)) {
                        return None;
                    }
                    let mut updates = state.rounds.subscribe();
                    Some(async move {
                        let _ = updates.wait_for(|r| r.completed > rounds.completed).await;
                    })
                })
                .collect()
        };
        if !waits.is_empty() {
            let _ = tokio::time::timeout(self.scraper.settings.timeout, futures::future::join_all(waits)).await;
        }
    }
}

/// `--max-staleness`, or three times `round` if that is longer.
///
/// A round that takes longer than half the bound cannot land before the
/// bound is reached, so with a fixed bound every query would wait for the
/// next round and throughput would collapse. Under steady queries the next
/// round starts when the data is half the bound old and lands one round
/// later: with a bound of two rounds every round slower than the last would
/// make queries wait, with three rounds only a round 1.5 times slower does
/// (rounds of very large expositions vary that much on busy cores). So a
/// query waits only for data older than
/// the bound of the slowest recent round, while it starts a refresh at half
/// the bound of the last round, which keeps data as fresh as that allows.
fn staleness_bound(max_staleness: Duration, round: Duration) -> Duration {
    max_staleness.max(round.saturating_mul(3))
}

impl<F: Fetch> Scraper<F> {
    async fn run(self: Arc<Self>, state: Arc<TargetState>) {
        let target = &state.target;
        let mut failing = false;
        let mut slow = false;
        let mut recent = [Duration::ZERO; RECENT_ROUNDS];
        loop {
            let started = Instant::now();
            state.in_flight.store(true, Ordering::Release);
            let scraped_at = Moment::now();
            let outcome = tokio::time::timeout(self.settings.timeout, self.scrape(target, scraped_at)).await;
            let outcome = outcome.unwrap_or(Err(ScrapeError::Timeout(self.settings.timeout)));
            let elapsed = started.elapsed();
            match outcome {
                Ok(Landed { generation, series, stats }) => {
                    if failing {
                        tracing::info!(url = %target.url, "scrape recovered");
                        failing = false;
                    }
                    if let Some(line) = &stats.first_malformed {
                        tracing::warn!(url = %target.url, malformed = stats.malformed, first = %crate::escape::for_log(line.as_bytes()), "skipped malformed lines");
                    }
                    self.telemetry.scrape(&target.id, None, elapsed, stats.malformed);
                    tracing::debug!(url = %target.url, series, ?elapsed, "scraped");
                    // Queries waiting for this round must see it merged.
                    self.store.merged(generation).await;
                }
                Err(error) => {
                    tracing::warn!(url = %target.url, %error, reason = error.reason(), "scrape failed; keeping previous data until it is too old");
                    failing = true;
                    self.telemetry.scrape(&target.id, Some(error.reason()), elapsed, 0);
                    let generation = self.store.expire();
                    self.store.merged(generation).await;
                }
            }
            state.in_flight.store(false, Ordering::Release);
            let round = started.elapsed();
            let bound = staleness_bound(self.settings.max_staleness, round);
            let slow_now = bound > self.settings.max_staleness;
            if slow_now && !slow {
                tracing::warn!(url = %target.url, ?round, staleness_bound = ?bound,
                    "a scrape round takes over half of --max-staleness; queries wait only for data older than three of its slowest recent rounds");
            } else if slow && !slow_now {
                tracing::info!(url = %target.url, ?round, "scrape rounds fit in --max-staleness again");
            }
            slow = slow_now;
            recent.rotate_right(1);
            recent[0] = round;
            let slowest_recent = recent.iter().copied().max().unwrap_or(round);
            state.rounds.send_modify(|r| {
                r.completed += 1;
                r.last_started = Some(started);
                r.last_duration = round;
                r.slowest_recent = slowest_recent;
            });
            tokio::select! {
                _ = tokio::time::sleep_until(started + self.settings.interval) => {}
                _ = state.refresh.notified() => {}
            }
        }
    }

    async fn scrape(&self, target: &Target, scraped_at: Moment) -> Result<Landed, ScrapeError> {
        let mut response = self.fetch.fetch(target).await?;
        let cap = self.settings.max_body_bytes;
        if response.content_length().is_some_and(|len| len > cap) {
            return Err(ScrapeError::TooLarge(cap));
        }
        // Parsing runs on a low-priority thread, fed chunk by chunk, so
        // that serving never waits behind it.
        let (chunks, incoming) = tokio::sync::mpsc::unbounded_channel();
        let budget = Arc::new(tokio::sync::Semaphore::new(BYTES_IN_FLIGHT as usize));
        let (allow, builder) = (self.settings.allow.clone(), self.store.builder(&target.id));
        let (store, id) = (self.store.clone(), target.id.clone());
        let publish = move |snapshot| store.publish(&id, snapshot, scraped_at);
        let landed = crate::resources::run_in_background(c"scrape-parse", move || parse_and_publish(incoming, &allow, builder, publish));
        let mut received: u64 = 0;
        let read = async {
            while let Some(chunk) = response.chunk().await? {
                received += chunk.len() as u64;
                if received > cap {
                    return Err(ScrapeError::TooLarge(cap));
                }
                let pieces: Vec<bytes::Bytes> = chunk.chunks(PIECE_BYTES).map(bytes::Bytes::copy_from_slice).collect();
                drop(chunk);
                for piece in pieces {
                    let share = piece.len() as u32; // at most PIECE_BYTES
                    let permit = budget.clone().acquire_many_owned(share).await.map_err(|_| ScrapeError::ParserStopped)?;
                    chunks.send(Body::Chunk(piece, permit)).map_err(|_| ScrapeError::ParserStopped)?;
                }
            }
            chunks.send(Body::Complete).map_err(|_| ScrapeError::ParserStopped)
        }
        .await;
        drop(chunks);
        let landed = landed.await.flatten();
        // A parser that stopped early says why; the reader then only saw
        // its channel close.
        if let Some(Err(error)) = landed {
            return Err(error);
        }
        read?;
        landed.unwrap_or(Err(ScrapeError::ParserStopped))
    }
}

#[cfg(test)]
mod tests {
    //! The pool's timing under paused Tokio time, with a scripted source in
    //! place of HTTP. Parsing and merging still run on the background
    //! threads, so each test holds off auto-advance (see [`Harness`]): the
    //! clock moves only when the test advances it, and a scrape's CPU work
    //! takes no time on it. Every figure below is therefore exact.

    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Mutex;
    use test_support::exposition::{stream_exposition, SEGMENTS};
    use tokio::time::advance;

    const TARGET: &str = "http://controller/prometheus";

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    /// test/s with `segments` segments, as the one controller reports it.
    fn exposition(segments: u32) -> Result<bytes::Bytes, reqwest::StatusCode> {
        Ok(stream_exposition("test", "s", segments, segments, 0).into())
    }

    /// A source that answers each fetch after a delay, counting the
    /// fetches and how many run at once.
    struct Script {
        /// The delay and answer of the next fetch, read as it starts.
        next: Mutex<(Duration, Result<bytes::Bytes, reqwest::StatusCode>)>,
        /// When each fetch so far started.
        starts: watch::Sender<Vec<Instant>>,
        running: AtomicUsize,
        most_running: AtomicUsize,
    }

    impl Script {
        fn answer(&self, delay: Duration, answer: Result<bytes::Bytes, reqwest::StatusCode>) {
            *self.next.lock().unwrap() = (delay, answer);
        }
    }

    /// Counts a fetch as running until dropped (when it ends or times out).
    struct Running<'a>(&'a AtomicUsize);

    impl Drop for Running<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }

    impl Fetch for Arc<Script> {
        type Response = Scripted;

        async fn fetch(&self, _target: &Target) -> Result<Scripted, ScrapeError> {
            let (delay, answer) = self.next.lock().unwrap().clone();
            self.starts.send_modify(|starts| starts.push(Instant::now()));
            let running = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            let _running = Running(&self.running);
            self.most_running.fetch_max(running, Ordering::SeqCst);
            tokio::time::sleep(delay).await;
            answer.map(|body| Scripted(Some(body))).map_err(ScrapeError::Status)
        }
    }

    /// A scripted body, in one chunk.
    struct Scripted(Option<bytes::Bytes>);

    impl Chunks for Scripted {
        fn content_length(&self) -> Option<u64> {
            self.0.as_ref().map(|body| body.len() as u64)
        }

        async fn chunk(&mut self) -> Result<Option<bytes::Bytes>, ScrapeError> {
            Ok(self.0.take())
        }
    }

    /// The log lines the pool writes on the test's thread.
    #[derive(Clone, Default)]
    struct Log(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Log {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Log {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
        }
    }

    /// A pool of one scripted target, its store merged as in the adapter.
    struct Harness {
        pool: Pool<Arc<Script>>,
        script: Arc<Script>,
        store: Arc<Store>,
        telemetry: Arc<Telemetry>,
        rounds: watch::Receiver<Rounds>,
        /// When the pool started.
        t0: Instant,
        log: Log,
        _log_guard: tracing::subscriber::DefaultGuard,
        /// Keeps a blocking task waiting, which holds off auto-advance
        /// until the harness is dropped: otherwise the paused clock would
        /// jump to the next timer whenever the runtime waits for a
        /// background thread.
        _frozen: std::sync::mpsc::Sender<()>,
    }

    impl Harness {
        /// Starts scraping a target whose first fetch answers 3 segments
        /// after `delay`; the paused clock stands still until the test
        /// advances it.
        fn new(interval: Duration, timeout: Duration, max_staleness: Duration, delay: Duration) -> Self {
            let (frozen, thaw) = std::sync::mpsc::channel::<()>();
            tokio::task::spawn_blocking(move || thaw.recv());
            let log = Log::default();
            let writer = log.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_writer(move || writer.clone())
                .with_ansi(false)
                .without_time()
                .with_max_level(tracing::Level::INFO)
                .finish();
            let log_guard = tracing::subscriber::set_default(subscriber);
            let store = Arc::new(Store::new(Duration::from_secs(3600)));
            tokio::spawn(store.clone().keep_merged());
            let telemetry = Arc::new(Telemetry::default());
            let script = Arc::new(Script {
                next: Mutex::new((delay, exposition(3))),
                starts: watch::Sender::new(Vec::new()),
                running: AtomicUsize::new(0),
                most_running: AtomicUsize::new(0),
            });
            let allow = Regex::new("^pravega_controller_").unwrap();
            let settings = ScrapeSettings { interval, timeout, max_body_bytes: 1 << 20, max_staleness, allow };
            let pool = Pool::new(script.clone(), settings, store.clone(), telemetry.clone(), tokio::runtime::Handle::current());
            let t0 = Instant::now();
            pool.set_targets(vec![Target { id: TARGET.into(), url: TARGET.to_owned() }]);
            let rounds = pool.targets.read().unwrap()[TARGET].rounds.subscribe();
            Harness { pool, script, store, telemetry, rounds, t0, log, _log_guard: log_guard, _frozen: frozen }
        }

        /// A pool scraping every minute, ready: its first round took
        /// `delay`.
        async fn ready(timeout: Duration, max_staleness: Duration, delay: Duration) -> Self {
            let harness = Harness::new(Duration::from_secs(60), timeout, max_staleness, delay);
            harness.fetches_started(1).await;
            advance(delay).await;
            harness.rounds_completed(1).await;
            assert_eq!(harness.served(), Some(3.0));
            harness
        }

        /// Waits until `n` fetches have started.
        async fn fetches_started(&self, n: usize) {
            let mut starts = self.script.starts.subscribe();
            eventually(format!("fetch {n}"), async move {
                let _ = starts.wait_for(|starts| starts.len() >= n).await;
            })
            .await;
        }

        /// Waits until `n` rounds have completed and their data is served.
        async fn rounds_completed(&self, n: u64) {
            let mut rounds = self.rounds.clone();
            eventually(format!("round {n}"), async move {
                let _ = rounds.wait_for(|rounds| rounds.completed >= n).await;
            })
            .await;
        }

        fn fetches(&self) -> usize {
            self.script.starts.borrow().len()
        }

        /// When each fetch started, from the pool's start.
        fn starts(&self) -> Vec<Duration> {
            self.script.starts.borrow().iter().map(|start| *start - self.t0).collect()
        }

        /// The segment count served for test/s.
        fn served(&self) -> Option<f64> {
            let view = self.store.view();
            let value = view.family(SEGMENTS)?.narrowed(Some("test"), Some("s")).next().map(|series| series.value);
            value
        }

        /// Queries as the API does; returns how long the query waited.
        async fn query(&self) -> Duration {
            let asked = Instant::now();
            eventually("query".to_owned(), self.pool.refresh_stale()).await;
            asked.elapsed()
        }

        /// Queries while `n` fetches start and then `by` passes; returns
        /// how long the query waited.
        async fn query_while(&self, n: usize, by: Duration) -> Duration {
            let (waited, ()) = tokio::join!(self.query(), async {
                self.fetches_started(n).await;
                advance(by).await;
            });
            waited
        }

        /// Scrapes counted as failed for `reason`.
        fn failures(&self, reason: &str) -> u64 {
            let text = self.telemetry.render(&self.store, 0);
            let line = text.lines().find(|l| l.starts_with("pravega_adapter_scrapes_total") && l.contains(&format!("result=\"{reason}\"")));
            line.and_then(|l| l.rsplit(' ').next()?.parse().ok()).unwrap_or(0)
        }
    }

    /// Lets every task that is ready run.
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    /// Awaits `work`, failing the test after 10 s of real time: with
    /// auto-advance held off, no Tokio timer can.
    async fn eventually<T>(what: String, work: impl Future<Output = T>) -> T {
        let (_done, wait) = std::sync::mpsc::channel::<()>();
        let watchdog = tokio::task::spawn_blocking(move || wait.recv_timeout(Duration::from_secs(10)));
        tokio::select! {
            value = work => value,
            _ = watchdog => panic!("{what} did not happen"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_query_refreshes_data_by_its_age() {
        let h = Harness::ready(Duration::from_secs(5), Duration::from_secs(1), Duration::ZERO).await;
        h.script.answer(ms(200), exposition(4));
        // Within half of --max-staleness: answered, nothing scraped.
        advance(ms(400)).await;
        assert_eq!(h.query().await, Duration::ZERO);
        settle().await;
        assert_eq!((h.fetches(), h.served()), (1, Some(3.0)));
        // Past half of it: answered at once from what is there, and a
        // round starts behind the answer.
        advance(ms(200)).await;
        assert_eq!(h.query().await, Duration::ZERO);
        assert_eq!(h.served(), Some(3.0));
        h.fetches_started(2).await;
        advance(ms(200)).await;
        h.rounds_completed(2).await;
        assert_eq!(h.served(), Some(4.0));
        // Past --max-staleness (the round started 1.2 s ago): the query
        // waits for the round it starts.
        h.script.answer(ms(200), exposition(5));
        advance(ms(1000)).await;
        assert_eq!(h.query_while(3, ms(200)).await, ms(200));
        assert_eq!((h.fetches(), h.served()), (3, Some(5.0)));
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_stale_queries_share_one_round() {
        let h = Harness::ready(Duration::from_secs(5), Duration::from_secs(1), Duration::ZERO).await;
        h.script.answer(ms(300), exposition(4));
        advance(Duration::from_secs(2)).await;
        let queries = futures::future::join_all((0..40).map(|_| h.query()));
        let (waited, ()) = tokio::join!(queries, async {
            h.fetches_started(2).await;
            advance(ms(300)).await;
        });
        assert_eq!(waited, [ms(300); 40]);
        assert_eq!(h.served(), Some(4.0));
        settle().await;
        assert_eq!(h.fetches(), 2, "40 concurrent stale queries: one round for all of them, none after");
    }

    /// A round longer than half of --max-staleness cannot deliver data that
    /// fresh: the bound becomes three of the target's slowest recent rounds,
    /// so queries are answered at once instead of each waiting for the next
    /// slow round; once the last [`RECENT_ROUNDS`] rounds are fast, the
    /// bound is --max-staleness again.
    #[tokio::test(start_paused = true)]
    async fn a_slow_round_stretches_the_bound_to_three_rounds_until_fast_rounds_follow() {
        let h = Harness::ready(Duration::from_secs(5), ms(300), Duration::from_secs(1)).await;
        assert!(h.log.text().contains("over half of --max-staleness"), "{}", h.log.text());
        h.script.answer(Duration::ZERO, exposition(4));
        // 1.4 s old: past --max-staleness, within half of three rounds.
        advance(ms(400)).await;
        assert_eq!(h.query().await, Duration::ZERO);
        settle().await;
        assert_eq!((h.fetches(), h.served()), (1, Some(3.0)));
        // 1.6 s old: refreshed behind the answer.
        advance(ms(200)).await;
        assert_eq!(h.query().await, Duration::ZERO);
        assert_eq!(h.served(), Some(3.0));
        h.rounds_completed(2).await;
        assert_eq!(h.served(), Some(4.0));
        assert!(h.log.text().contains("fit in --max-staleness again"), "{}", h.log.text());
        // Fast rounds, each started by a query 400 ms after the last.
        for round in 3..=RECENT_ROUNDS as u64 {
            advance(ms(400)).await;
            h.query().await;
            h.rounds_completed(round).await;
        }
        h.script.answer(Duration::ZERO, exposition(5));
        advance(ms(400)).await;
        assert_eq!(h.query().await, Duration::ZERO);
        assert_eq!(h.served(), Some(4.0), "answered without waiting while the slow round is recent");
        h.rounds_completed(RECENT_ROUNDS as u64 + 1).await;
        // The slow round has left the window: 400 ms is past the bound.
        h.script.answer(Duration::ZERO, exposition(6));
        advance(ms(400)).await;
        h.query().await;
        assert_eq!((h.fetches(), h.served()), (RECENT_ROUNDS + 2, Some(6.0)));
    }

    /// Under steady queries a slow target is scraped again once its data is
    /// half the bound old, so a round somewhat slower than the one before
    /// lands after twice the previous round: that alone must not make
    /// queries wait.
    #[tokio::test(start_paused = true)]
    async fn a_round_slower_than_the_last_does_not_hold_queries() {
        let h = Harness::ready(Duration::from_secs(5), ms(100), Duration::from_secs(1)).await;
        h.script.answer(ms(1300), exposition(4));
        // 1.6 s old, past half the bound of 3 s: starts a 1.3 s round and
        // answers from what is there.
        advance(ms(600)).await;
        assert_eq!(h.query().await, Duration::ZERO);
        assert_eq!(h.served(), Some(3.0));
        h.fetches_started(2).await;
        // 2.1 s old: older than two rounds, within three: no wait.
        advance(ms(500)).await;
        assert_eq!(h.query().await, Duration::ZERO, "the query waited for the round in flight");
        assert_eq!((h.fetches(), h.served()), (2, Some(3.0)));
        // The round lands 1.3 s after it started.
        advance(ms(800)).await;
        h.rounds_completed(2).await;
        assert_eq!(h.served(), Some(4.0));
    }

    /// A fast round between slow ones does not bring back waiting for the
    /// next slow one: queries wait only for data older than three of the
    /// slowest recent rounds.
    #[tokio::test(start_paused = true)]
    async fn a_fast_round_does_not_make_queries_wait_for_the_next_slow_one() {
        let h = Harness::ready(Duration::from_secs(5), ms(100), Duration::from_secs(1)).await;
        h.script.answer(ms(100), exposition(3));
        // 1.7 s old, over half of three rounds: starts a 100 ms round.
        advance(ms(700)).await;
        assert_eq!(h.query().await, Duration::ZERO);
        h.fetches_started(2).await;
        advance(ms(100)).await;
        h.rounds_completed(2).await;
        h.script.answer(ms(900), exposition(4));
        // The fast round's data is 450 ms old: over three of its rounds, so
        // this starts a 900 ms round, but under three of the first round's.
        advance(ms(350)).await;
        assert_eq!(h.query().await, Duration::ZERO, "the query waited for the round in flight");
        assert_eq!(h.served(), Some(3.0));
        h.fetches_started(3).await;
        advance(ms(900)).await;
        h.rounds_completed(3).await;
        assert_eq!(h.served(), Some(4.0));
    }

    /// A round slower than the interval is followed at once by the next,
    /// never overlapped by it, and the rounds it delayed are not made up
    /// afterwards.
    #[tokio::test(start_paused = true)]
    async fn rounds_slower_than_the_interval_do_not_pile_up() {
        let h = Harness::new(ms(100), Duration::from_secs(5), Duration::from_secs(1), ms(350));
        for fetch in 1..=4 {
            h.fetches_started(fetch).await;
            advance(ms(350)).await;
        }
        h.fetches_started(5).await;
        h.script.answer(Duration::ZERO, exposition(4));
        advance(ms(350)).await;
        h.rounds_completed(6).await;
        for fetch in 7..=8 {
            advance(ms(100)).await;
            h.fetches_started(fetch).await;
        }
        assert_eq!(h.starts(), [0, 350, 700, 1050, 1400, 1750, 1850, 1950].map(ms));
        assert_eq!(h.script.most_running.load(Ordering::SeqCst), 1, "rounds overlapped");
        assert_eq!(h.served(), Some(4.0));
    }

    /// A scrape that times out or fails keeps the previous data (until the
    /// store's max age), and a query waits for it at most the scrape
    /// timeout.
    #[tokio::test(start_paused = true)]
    async fn a_failed_scrape_keeps_the_data_and_holds_a_query_at_most_the_timeout() {
        let h = Harness::ready(ms(300), ms(100), Duration::ZERO).await;
        h.script.answer(Duration::from_secs(1), exposition(4));
        advance(ms(150)).await;
        assert_eq!(h.query_while(2, ms(300)).await, ms(300));
        h.rounds_completed(2).await;
        assert_eq!((h.served(), h.failures("timeout")), (Some(3.0), 1));
        // The 300 ms round stretched the bound to 900 ms.
        h.script.answer(Duration::ZERO, Err(reqwest::StatusCode::INTERNAL_SERVER_ERROR));
        advance(Duration::from_secs(1)).await;
        h.query().await;
        assert_eq!((h.fetches(), h.served(), h.failures("status")), (3, Some(3.0), 1));
        h.script.answer(Duration::ZERO, exposition(5));
        advance(Duration::from_secs(1)).await;
        h.query().await;
        assert_eq!((h.fetches(), h.served()), (4, Some(5.0)));
        assert!(h.log.text().contains("scrape recovered"), "{}", h.log.text());
    }
}
