//! The inventory of streams: which streams exist in the served scopes and
//! each one's current segment count, from the controllers' gRPC API, kept
//! fresh in the background within a call budget; and the rule that decides
//! what is served for a stream.
//!
//! Pravega's metrics are a signal of change, not an inventory: a stream's
//! gauges are evicted a few minutes after its last scale, and nothing is
//! cleared when a stream is deleted. So every stream of the served scopes
//! is listed (`listScopes`, `listStreamsInScope`) and asked
//! (`getCurrentSegments`) in turn, each at least every
//! [`InventorySettings::refresh`] while the budget allows, sooner once its
//! metrics show a scale, and at once when a query needs it.
//!
//! A stream's `segments_count` is served from the metrics only when they
//! prove it current: a replica at the stream's high-water mark of scale
//! events reports it and the adapter watched that mark rise since the
//! stream entered the inventory. Otherwise the API's answer is served if
//! it is recent enough, else nothing. A current metric that the API
//! contradicts once the scale has settled is withheld until the next scale:
//! one of the two is wrong, and neither is trusted silently.

use crate::clock::Moment;
use crate::controller_api::{ControllerApi, ControllerApiError, Fault, SEGMENTS_FAMILY};
use crate::store::{MergedView, Series, Store, Verdict};
use crate::telemetry::Telemetry;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct InventorySettings {
    /// The scopes listed; `None`: every scope the API lists.
    pub scopes: Option<Vec<String>>,
    /// Background calls per second, listing included.
    pub calls_per_second: f64,
    /// How often each stream is asked while the budget allows.
    pub refresh: Duration,
    /// How often the scopes' stream lists are read again.
    pub list_interval: Duration,
    /// How long after a scale the API is asked to confirm the metrics.
    pub settle: Duration,
    /// Streams held at most; past it new streams are not taken in.
    pub max_streams: usize,
}

/// What is served for one stream.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    /// This value, as of this time.
    Serve { segments: f64, at: Moment },
    /// The stream exists (or may), but no value can be vouched for.
    Withhold(Withheld),
    /// The stream does not exist: its scope's listing lacks it.
    Absent,
}

/// Why a stream's value is withheld.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Withheld {
    /// No recent answer from the API, and the metrics cannot tell.
    Unknown,
    /// The API refused to answer for this stream, or answered implausibly.
    Refused,
    /// The metrics watched a scale and the API contradicts it.
    Disputed,
}

impl Withheld {
    pub fn reason(self) -> &'static str {
        match self {
            Withheld::Unknown => "unknown",
            Withheld::Refused => "refused",
            Withheld::Disputed => "disputed",
        }
    }
}

type Key = (String, String);

fn key(scope: &str, stream: &str) -> Key {
    (scope.to_owned(), stream.to_owned())
}

#[derive(Debug, Clone, Copy)]
struct Answer {
    segments: u32,
    asked: Instant,
    at: Moment,
}

#[derive(Debug)]
struct Entry {
    answer: Option<Answer>,
    /// The last ask was refused for this stream.
    refused: bool,
    /// When the stream is next asked in the background.
    due: Instant,
    /// The metrics' mark when the stream entered the inventory (NaN: none):
    /// only a mark past it is a scale the adapter watched.
    baseline: f64,
    /// The highest mark and the last value the metrics showed, and when
    /// either last changed (None: not since the stream entered the
    /// inventory): an API answer asked before that is outdated.
    mark: f64,
    value: f64,
    changed: Option<Instant>,
    /// A mark at which current metrics and the API disagreed after the
    /// scale settled: withheld until the mark rises past it.
    disputed: Option<f64>,
    /// The mark of the last stale gauge reported, so each is told once.
    reported_stale: Option<f64>,
}

impl Entry {
    fn new(baseline: f64, now: Instant) -> Self {
        Entry {
            answer: None,
            refused: false,
            due: now,
            baseline,
            mark: baseline,
            value: f64::NAN,
            changed: None,
            disputed: None,
            reported_stale: None,
        }
    }

    /// Takes in the metrics' mark and value: a rise of the mark is a scale,
    /// and a new value at the same mark a change too (a stream recreated
    /// under a deleted one's name counts from 0 again). Either makes any
    /// answer asked before it outdated: the API is asked at once, and again
    /// once the scale has settled to confirm the metrics.
    fn observe(&mut self, series: &Series<'_>, now: Instant) {
        let rose = crate::store::rose(series.mark, self.mark);
        let new_value = !series.value.is_nan() && !self.value.is_nan() && series.value != self.value;
        if rose {
            self.mark = series.mark;
            if self.disputed.is_some_and(|disputed| series.mark > disputed) {
                self.disputed = None;
            }
        }
        if rose || new_value {
            self.changed = Some(now);
            self.due = now;
        }
        if !series.value.is_nan() {
            self.value = series.value;
        }
    }

    /// The API's answer if it was asked within `max_age` and after the
    /// last scale the metrics showed.
    fn recent_answer(&self, max_age: Duration) -> Option<Answer> {
        self.answer.filter(|a| a.asked.elapsed() <= max_age && self.changed.is_none_or(|changed| a.asked >= changed))
    }

    /// Whether the metrics' series is a scale the adapter watched since
    /// the stream entered the inventory.
    fn watched(&self, series: &Series<'_>) -> bool {
        series.verdict == Verdict::Current && !series.value.is_nan() && past(series.mark, self.baseline)
    }
}

#[derive(Default)]
struct State {
    streams: HashMap<Key, Entry>,
    /// Scopes whose stream lists are complete, and since when.
    listed: HashMap<String, Instant>,
    /// Every scope has been listed (with `scopes: None`), at this time.
    all_listed: Option<Instant>,
    last_list: Option<Instant>,
    /// Streams the API answered NOT_FOUND for, and when: not asked again
    /// until the next listing interval (bounded like `streams`).
    gone: HashMap<Key, Instant>,
    /// Streams not taken in for [`InventorySettings::max_streams`].
    over_capacity: bool,
}

/// Every stream of the served scopes and what the API said of it.
pub struct Inventory {
    api: Arc<ControllerApi>,
    settings: InventorySettings,
    store: Arc<Store>,
    state: Mutex<State>,
    telemetry: Arc<Telemetry>,
    /// Bumped when an answer changes what may be served: a count that
    /// differs from the last, a refusal, a stream entering or leaving.
    changes: tokio::sync::watch::Sender<u64>,
}

impl Inventory {
    pub fn new(api: Arc<ControllerApi>, settings: InventorySettings, store: Arc<Store>, telemetry: Arc<Telemetry>) -> Self {
        Inventory { api, settings, store, state: Mutex::default(), telemetry, changes: tokio::sync::watch::Sender::new(0) }
    }

    /// Changes whenever the API's answers change what may be served.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// How long one round over every stream takes within the budget.
    fn period(&self, streams: usize) -> Duration {
        let budgeted = Duration::from_secs_f64(streams as f64 / self.settings.calls_per_second.max(0.001));
        self.settings.refresh.max(budgeted)
    }

    /// How old an API answer may be and still be served: two rounds, so
    /// that one failed ask does not withhold a stream.
    fn answer_max_age(&self, streams: usize) -> Duration {
        self.period(streams) * 2 + self.api.timeout() * 2
    }

    pub fn len(&self) -> usize {
        self.lock().streams.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether every stream of `scope` is known (its listing is complete).
    fn scope_listed(state: &State, scope: &str) -> bool {
        state.listed.contains_key(scope)
    }

    /// Whether the streams of `scopes` (every scope for `None`) are all
    /// known.
    pub fn covers(&self, scopes: Option<&[String]>) -> bool {
        let state = self.lock();
        match scopes {
            None => self.settings.scopes.is_none() && state.all_listed.is_some(),
            Some(scopes) => scopes.iter().all(|scope| Self::scope_listed(&state, scope)),
        }
    }

    /// The streams held in `scope` (all for `None`), narrowed to `stream`.
    pub fn streams(&self, scope: Option<&str>, stream: Option<&str>) -> Vec<Key> {
        let state = self.lock();
        match (scope, stream) {
            (Some(scope), Some(stream)) => state.streams.get_key_value(&key(scope, stream)).map(|(k, _)| k.clone()).into_iter().collect(),
            _ => state.streams.keys().filter(|(sc, _)| scope.is_none_or(|scope| scope == sc)).cloned().collect(),
        }
    }

    /// Lists the streams of `scopes` now (every scope for `None`), so a
    /// query over them can be answered whole.
    pub async fn list_now(&self, scopes: Option<&[String]>) {
        let scopes = match scopes {
            Some(scopes) => Some(scopes.to_vec()),
            None => self.settings.scopes.clone(),
        };
        self.list(scopes).await;
    }

    /// Asks the API now for the streams that need it: not held, or held
    /// without a recent answer.
    pub async fn ask_now(&self, wanted: &[(Key, Option<Series<'_>>)]) {
        let asks: Vec<&Key> = {
            let now = Instant::now();
            let mut state = self.lock();
            let max_age = self.answer_max_age(state.streams.len());
            let mut asks = Vec::new();
            for (key, series) in wanted {
                let gone = self.recently_gone(&state, key);
                let ask = match state.streams.get_mut(key) {
                    // A stream created since the last listing is asked;
                    // one found gone is not, until the next listing.
                    None => !gone,
                    Some(entry) => {
                        if let Some(series) = series {
                            entry.observe(series, now);
                        }
                        // Even where the metrics vouch now, their data may
                        // be too old to serve by the time it is decided.
                        entry.recent_answer(max_age).is_none()
                    }
                };
                if ask && asks.len() < MAX_ASKS_PER_QUERY {
                    asks.push(key);
                }
            }
            asks
        };
        let view = self.store.view();
        futures::future::join_all(asks.into_iter().map(|key| self.ask(key, &view))).await;
    }

    /// What is served for `scope`/`stream`, given its `segments_count`
    /// series in the view, if any, and whether that series is recent
    /// enough to serve.
    pub fn decide(&self, scope: &str, stream: &str, series: Option<&Series<'_>>, fresh: bool) -> Decision {
        let now = Instant::now();
        let mut state = self.lock();
        let max_age = self.answer_max_age(state.streams.len());
        let listed = Self::scope_listed(&state, scope);
        let key = key(scope, stream);
        let gone = self.recently_gone(&state, &key);
        let Some(entry) = state.streams.get_mut(&key) else {
            if listed || gone {
                return Decision::Absent;
            }
            // The API cannot be reached: as without one, only a scale the
            // adapter watched is served.
            return match series.filter(|s| fresh && s.verdict == Verdict::Current && !s.value.is_nan()) {
                Some(series) => Decision::Serve { segments: series.value, at: series.scraped_at },
                None => Decision::Withhold(Withheld::Unknown),
            };
        };
        if let Some(series) = series {
            entry.observe(series, now);
        }
        let answer = entry.recent_answer(max_age);
        // A sealed stream has no current segments and never scales again:
        // the metrics cannot show it.
        if let Some(sealed) = answer.filter(|a| a.segments == 0) {
            return Decision::Serve { segments: 0.0, at: sealed.at };
        }
        if let Some(series) = series.filter(|s| fresh && entry.watched(s)) {
            // The API is a check on the metrics once the scale settled.
            let settled = entry.changed.map(|changed| changed + self.settings.settle);
            let contradicted = answer.filter(|a| settled.is_none_or(|settled| a.asked >= settled) && f64::from(a.segments) != series.value);
            if let Some(answer) = contradicted.filter(|_| entry.disputed.is_none()) {
                entry.disputed = Some(series.mark);
                tracing::warn!(
                    scope,
                    stream,
                    metrics = series.value,
                    controller_api = answer.segments,
                    "the metrics watched this stream scale and the controller API disagrees: withholding it until its next scale \
                     (check --controller-api-url and the controller pods' API port)"
                );
                self.telemetry.disputed_stream();
            }
            if entry.disputed.is_some() {
                return Decision::Withhold(Withheld::Disputed);
            }
            return Decision::Serve { segments: series.value, at: series.scraped_at };
        }
        if entry.disputed.is_some() {
            return Decision::Withhold(Withheld::Disputed);
        }
        match answer {
            Some(answer) => {
                if let Some(series) = series.filter(|s| !s.value.is_nan() && s.value != f64::from(answer.segments)) {
                    let mark = series.mark;
                    if entry.reported_stale.is_none_or(|reported| reported.to_bits() != mark.to_bits()) {
                        entry.reported_stale = Some(mark);
                        tracing::warn!(
                            scope,
                            stream,
                            gauge = series.value,
                            served = answer.segments,
                            "stale segments_count gauge: serving the controller API's count instead"
                        );
                        self.telemetry.stale_gauge();
                    }
                }
                Decision::Serve { segments: f64::from(answer.segments), at: answer.at }
            }
            None if entry.refused => Decision::Withhold(Withheld::Refused),
            None => Decision::Withhold(Withheld::Unknown),
        }
    }

    fn recently_gone(&self, state: &State, key: &Key) -> bool {
        state.gone.get(key).is_some_and(|at| at.elapsed() < self.settings.list_interval)
    }

    /// Asks one stream and records the answer.
    async fn ask(&self, key: &Key, view: &MergedView) {
        let asked = Instant::now();
        let outcome = self.api.current_segments(&key.0, &key.1).await;
        self.record(key, asked, outcome, view);
    }

    fn record(&self, key: &Key, asked: Instant, outcome: Result<u32, ControllerApiError>, view: &MergedView) {
        let mut state = self.lock();
        let period = self.period(state.streams.len());
        match outcome {
            Ok(segments) => {
                let settle = self.settings.settle;
                let Some(entry) = Self::entry(&mut state, key, view, &self.settings) else { return };
                let changed = entry.refused || entry.answer.is_none_or(|a| a.segments != segments);
                entry.answer = Some(Answer { segments, asked, at: Moment::now() });
                entry.refused = false;
                // Asked before the last scale settled: asked again then, to
                // confirm the metrics.
                entry.due = match entry.changed.map(|changed| changed + settle).filter(|settled| asked < *settled) {
                    Some(settled) => settled.min(asked + period),
                    None => asked + period,
                };
                if changed {
                    self.changed();
                }
            }
            Err(error) => match error.fault() {
                Fault::Gone => {
                    let now = Instant::now();
                    let list_interval = self.settings.list_interval;
                    state.gone.retain(|_, at| now.duration_since(*at) < list_interval);
                    if state.gone.len() < self.settings.max_streams {
                        state.gone.insert(key.clone(), now);
                    }
                    if state.streams.remove(key).is_some() {
                        tracing::info!(scope = %key.0, stream = %key.1, "stream deleted: it leaves the inventory");
                        self.store.forget_marks(&key.0, &key.1);
                        self.changed();
                    }
                }
                Fault::Refused => {
                    tracing::warn!(scope = %key.0, stream = %key.1, %error, "the controller API refused this stream");
                    // Soon again: Pravega refuses a stream still being
                    // created, for a moment.
                    if let Some(entry) = state.streams.get_mut(key) {
                        if !entry.refused || entry.answer.is_some() {
                            self.changed();
                        }
                        entry.answer = None;
                        entry.refused = true;
                        entry.due = asked + period.min(RETRY);
                    }
                }
                Fault::Unreachable => {
                    if let Some(entry) = state.streams.get_mut(key) {
                        entry.due = asked + period.min(RETRY);
                    }
                }
            },
        }
    }

    /// The entry of `key`, made if missing and there is room.
    fn entry<'s>(state: &'s mut State, key: &Key, view: &MergedView, settings: &InventorySettings) -> Option<&'s mut Entry> {
        if !state.streams.contains_key(key) {
            if state.streams.len() >= settings.max_streams {
                if !state.over_capacity {
                    state.over_capacity = true;
                    tracing::error!(
                        max = settings.max_streams,
                        "the inventory is full: further streams are not served (--inventory-max-streams)"
                    );
                }
                return None;
            }
            state.streams.insert(key.clone(), Entry::new(mark_of(view, &key.0, &key.1), Instant::now()));
        }
        state.streams.get_mut(key)
    }

    /// Lists `scopes` (every scope for `None`) and takes the listings in:
    /// new streams enter, streams no longer listed leave.
    async fn list(&self, scopes: Option<Vec<String>>) -> usize {
        let mut calls = 0;
        let all = scopes.is_none();
        let scopes = match scopes {
            Some(scopes) => scopes,
            None => {
                calls += 1;
                match self.api.list_scopes().await {
                    Ok(scopes) => scopes,
                    Err(error) => {
                        tracing::debug!(%error, "cannot list the scopes");
                        return calls;
                    }
                }
            }
        };
        let mut complete = true;
        for scope in scopes.iter().filter(|scope| !scope.starts_with('_')) {
            calls += 1;
            let listed = match self.api.list_streams(scope).await {
                Ok(streams) => streams,
                Err(error) if error.fault() == Fault::Gone => Vec::new(),
                Err(error) => {
                    tracing::debug!(scope, %error, "cannot list the streams of a scope");
                    complete = false;
                    continue;
                }
            };
            self.take_listing(scope, listed);
        }
        let mut state = self.lock();
        state.last_list = Some(Instant::now());
        if all {
            // Scopes gone from the listing take their streams with them.
            let gone: Vec<Key> = state.streams.keys().filter(|(scope, _)| !scopes.contains(scope)).cloned().collect();
            for key in &gone {
                state.streams.remove(key);
                self.store.forget_marks(&key.0, &key.1);
            }
            if !gone.is_empty() {
                self.changed();
            }
            state.listed.retain(|scope, _| scopes.contains(scope));
            if complete {
                state.all_listed = Some(Instant::now());
            }
        }
        calls
    }

    fn take_listing(&self, scope: &str, streams: Vec<String>) {
        let view = self.store.view();
        let mut state = self.lock();
        let listed: std::collections::HashSet<&str> = streams.iter().map(String::as_str).filter(|s| !s.starts_with('_')).collect();
        let gone: Vec<Key> = state.streams.keys().filter(|(sc, st)| sc == scope && !listed.contains(st.as_str())).cloned().collect();
        let mut changed = !gone.is_empty() || !Self::scope_listed(&state, scope);
        for key in gone {
            tracing::info!(scope = %key.0, stream = %key.1, "stream no longer listed: it leaves the inventory");
            state.streams.remove(&key);
            self.store.forget_marks(&key.0, &key.1);
        }
        // A stream that enters a scope listed before was created since:
        // any marks its name still has are a deleted stream's.
        let relisted = Self::scope_listed(&state, scope);
        for stream in listed {
            let key = key(scope, stream);
            state.gone.remove(&key);
            if !state.streams.contains_key(&key) {
                if relisted {
                    self.store.forget_marks(&key.0, &key.1);
                }
                changed |= Self::entry(&mut state, &key, &view, &self.settings).is_some();
            }
        }
        state.listed.insert(scope.to_owned(), Instant::now());
        if changed {
            self.changed();
        }
    }

    /// Keeps the inventory fresh: lists the scopes every list interval and
    /// asks the streams that are due, oldest first, within the budget.
    pub async fn keep_fresh(self: Arc<Self>) {
        let mut tokens = 1.0f64;
        let per_tick = self.settings.calls_per_second * TICK.as_secs_f64();
        let burst = self.settings.calls_per_second.max(1.0);
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut observed: Option<Arc<MergedView>> = None;
        loop {
            tick.tick().await;
            tokens = (tokens + per_tick).min(burst);
            let list_due = self.lock().last_list.is_none_or(|at| at.elapsed() >= self.settings.list_interval);
            if list_due && tokens >= 1.0 {
                tokens -= self.list(self.settings.scopes.clone()).await as f64;
                continue;
            }
            let view = self.store.view();
            // A view is merged after scrapes that change something: its
            // marks and values are taken in once.
            if !observed.as_ref().is_some_and(|seen| Arc::ptr_eq(seen, &view)) {
                self.observe(&view);
                observed = Some(view.clone());
            }
            let due = self.due(tokens.floor() as usize);
            tokens -= due.len() as f64;
            futures::future::join_all(due.iter().map(|key| self.ask(key, &view))).await;
        }
    }

    /// Takes in the marks and values of `view`, so that a scale makes its
    /// stream due.
    fn observe(&self, view: &MergedView) {
        let now = Instant::now();
        let mut state = self.lock();
        for series in view.family_or_undecided(SEGMENTS_FAMILY).streams(None, None) {
            let (scope, stream) = series.labels.scope_and_stream();
            if let Some(entry) = state.streams.get_mut(&key(scope, stream)) {
                entry.observe(&series, now);
            }
        }
    }

    /// Up to `n` streams due for an ask, the most overdue first.
    fn due(&self, n: usize) -> Vec<Key> {
        if n == 0 {
            return Vec::new();
        }
        let now = Instant::now();
        let state = self.lock();
        let mut due: Vec<(Instant, &Key)> = state.streams.iter().filter(|(_, e)| e.due <= now).map(|(k, e)| (e.due, k)).collect();
        // The n most overdue, without sorting every due stream.
        if due.len() > n {
            due.select_nth_unstable(n);
            due.truncate(n);
        }
        due.sort_unstable();
        due.into_iter().map(|(_, key)| key.clone()).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Streams one query asks at once at most; the background asks the rest
/// within the budget, so a later query finds them answered.
const MAX_ASKS_PER_QUERY: usize = 256;

/// How often the background loop looks for due streams.
const TICK: Duration = Duration::from_millis(200);

/// How soon a stream whose ask found no endpoint, or was refused, is asked
/// again.
const RETRY: Duration = Duration::from_secs(5);

/// Whether `mark` is past `baseline`: any mark is past no baseline (NaN),
/// and no mark (NaN, a stream that never scaled) is past none either.
fn past(mark: f64, baseline: f64) -> bool {
    baseline.is_nan() || mark > baseline
}

/// The stream's mark in the view (NaN if none).
fn mark_of(view: &MergedView, scope: &str, stream: &str) -> f64 {
    view.family_or_undecided(SEGMENTS_FAMILY).streams(Some(scope), Some(stream)).map(|s| s.mark).fold(f64::NAN, f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller_api::ControllerApiSettings;
    use test_support::controller_api::FakeControllerApi;

    #[tokio::test]
    async fn answers_that_change_what_may_be_served_notify_and_the_same_answer_does_not() {
        let fake = FakeControllerApi::default();
        fake.set("test", "s", 1);
        let endpoints = vec![format!("http://{}", fake.start().await)];
        let timeout = Duration::from_secs(2);
        let settings =
            ControllerApiSettings { endpoints, port: 0, tls: false, ca_pem: None, bearer_token_file: None, timeout, concurrency: 2 };
        let telemetry = Arc::new(Telemetry::default());
        let api = Arc::new(ControllerApi::new(settings, Vec::new, telemetry.clone()));
        let store = Arc::new(Store::new(Duration::from_secs(30)));
        let every = Duration::from_secs(10);
        let settings = InventorySettings {
            scopes: None,
            calls_per_second: 20.0,
            refresh: every,
            list_interval: every,
            settle: every,
            max_streams: 100,
        };
        let inventory = Inventory::new(api, settings, store.clone(), telemetry);
        let mut changes = inventory.changes();
        let (view, key) = (store.view(), key("test", "s"));
        inventory.ask(&key, &view).await;
        assert!(changes.has_changed().unwrap(), "a first answer");
        changes.mark_unchanged();
        inventory.ask(&key, &view).await;
        assert!(!changes.has_changed().unwrap(), "the same count again");
        fake.set("test", "s", 3);
        inventory.ask(&key, &view).await;
        assert!(changes.has_changed().unwrap(), "a new count");
        changes.mark_unchanged();
        fake.delete("test", "s");
        inventory.ask(&key, &view).await;
        assert!(changes.has_changed().unwrap(), "the stream is gone");
    }
}
