//! What the serving and baseline benchmarks measure, the same way for any
//! server process: command-line options, memory and CPU from /proc, the
//! open-loop query load, and how long a controller's change takes to be
//! served.

use crate::common::FakeController;
use crate::exposition::exposition;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Options {
    pub streams: Vec<usize>,
    pub rate: u64,
    pub seconds: u64,
}

/// `--streams 1,100,10000 --rate 5000 --seconds 10`; `bench` names the
/// benchmark in the usage message.
pub fn options(bench: &str) -> Options {
    let mut options = Options { streams: vec![1, 100, 10_000], rate: 5_000, seconds: 10 };
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    for pair in args.chunks(2) {
        match (pair[0].as_str(), pair.get(1)) {
            ("--streams", Some(v)) => options.streams = v.split(',').map(|n| n.parse().expect("--streams 1,100")).collect(),
            ("--rate", Some(v)) => options.rate = v.parse().expect("--rate N"),
            ("--seconds", Some(v)) => options.seconds = v.parse().expect("--seconds N"),
            _ => panic!("usage: {bench} [--streams 1,100,10000] [--rate 5000] [--seconds 10]"),
        }
    }
    options
}

/// The scope and stream names of synthetic stream `i`, as `exposition`
/// writes them.
pub fn stream_labels(i: usize) -> (String, String) {
    (format!("scope-{}", i % 20), format!("stream-{i}"))
}

/// (VmRSS, VmHWM) in KiB.
pub fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field =
        |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap_or(0);
    (field("VmRSS:"), field("VmHWM:"))
}

/// User + system CPU time of a process.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let field = |i: usize| after.split_whitespace().nth(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    let ticks = field(11) + field(12);
    Duration::from_secs_f64(ticks as f64 / 100.0) // USER_HZ is 100 on Linux
}

/// The CPU a process spends per second over the next 10 s while nobody
/// queries it: the cost of its background scraping. Clock ticks make its
/// resolution 1 ms per s.
pub async fn idle_cpu_per_second(pid: u32) -> Duration {
    const WINDOW_SECONDS: u32 = 10;
    let before = cpu_time(pid);
    tokio::time::sleep(Duration::from_secs(WINDOW_SECONDS.into())).await;
    (cpu_time(pid) - before) / WINDOW_SECONDS
}

/// The element at nearest-rank percentile `p` (0 < p <= 1) of a sorted,
/// non-empty slice.
pub fn nearest_rank<T: Copy>(sorted: &[T], p: f64) -> T {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

pub struct LoadResult {
    pub sent: u64,
    pub errors: u64,
    pub latencies_us: Vec<u64>,
    pub elapsed: Duration,
}

impl LoadResult {
    /// Latency percentile in ms.
    pub fn percentile(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        nearest_rank(&self.latencies_us, p) as f64 / 1000.0
    }

    /// Successful requests per second.
    pub fn achieved(&self) -> f64 {
        self.latencies_us.len() as f64 / self.elapsed.as_secs_f64()
    }
}

/// Open-loop load: request `i` is due at `start + i / rate`; its latency
/// runs from then, not from when it was actually sent. A dedicated thread
/// paces the sends (Tokio's timer ticks in whole milliseconds, which would
/// batch them and add up to 1 ms to every measurement). `request(stream)`
/// builds the query for one synthetic stream; streams are visited in a
/// scattered order so that no cache of recent answers helps. A request
/// succeeds when it answers 200 and its body arrives. `max_in_flight` caps
/// the requests in flight, as a client's connection limit does: over
/// HTTP/1.1 each needs a connection of its own, and a server that stops
/// accepting connections past a limit would otherwise leave the excess
/// waiting behind idle kept-alive ones. Requests held back still count
/// their latency from their due time.
pub async fn load<R>(streams: usize, rate: u64, seconds: u64, max_in_flight: Option<usize>, request: R) -> LoadResult
where
    R: Fn(usize) -> reqwest::RequestBuilder + Send + 'static,
{
    let total = rate * seconds;
    let errors = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(std::sync::Mutex::new(Vec::with_capacity(total as usize)));
    let start = Instant::now() + Duration::from_millis(50);
    let runtime = tokio::runtime::Handle::current();
    let (errors_in, latencies_in) = (errors.clone(), latencies.clone());
    let in_flight = max_in_flight.map(|limit| Arc::new(tokio::sync::Semaphore::new(limit)));
    let pacer = std::thread::spawn(move || {
        let mut tasks = Vec::with_capacity(total as usize);
        for i in 0..total {
            let due = start + Duration::from_nanos(i * 1_000_000_000 / rate);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let request = request((i as usize * 7919) % streams);
            let (errors, latencies, in_flight) = (errors_in.clone(), latencies_in.clone(), in_flight.clone());
            tasks.push(runtime.spawn(async move {
                let _permit = match in_flight {
                    Some(slots) => Some(slots.acquire_owned().await.unwrap()),
                    None => None,
                };
                let ok = match request.send().await {
                    Ok(r) if r.status() == 200 => r.bytes().await.is_ok(),
                    _ => false,
                };
                if ok {
                    latencies.lock().unwrap().push(due.elapsed().as_micros() as u64);
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        tasks
    });
    let tasks = tokio::task::spawn_blocking(move || pacer.join().unwrap()).await.unwrap();
    for task in tasks {
        let _ = task.await;
    }
    let mut latencies_us = std::mem::take(&mut *latencies.lock().unwrap());
    latencies_us.sort_unstable();
    LoadResult { sent: total, errors: errors.load(Ordering::Relaxed), latencies_us, elapsed: start.elapsed() }
}

/// A query load against one server process and what it cost.
pub struct LoadedRun {
    pub result: LoadResult,
    /// CPU of the server and of this (load generating) process, % of one core.
    pub server_busy: f64,
    pub generator_busy: f64,
    /// (VmRSS, VmHWM) of the server in KiB, right after the load.
    pub memory: (u64, u64),
}

/// `load` at the options' rate for their seconds against the server
/// process `pid`, after a short light load that opens connections and
/// fills the server's caches (authentication reviews, query caches).
pub async fn loaded_run<R>(pid: u32, streams: usize, options: &Options, max_in_flight: Option<usize>, request: R) -> LoadedRun
where
    R: Fn(usize) -> reqwest::RequestBuilder + Clone + Send + 'static,
{
    load(streams, 200, 2, max_in_flight, request.clone()).await;
    let (server_cpu, own_cpu) = (cpu_time(pid), cpu_time(std::process::id()));
    let result = load(streams, options.rate, options.seconds, max_in_flight, request).await;
    let busy = |before: Duration, after: Duration| 100.0 * (after - before).as_secs_f64() / result.elapsed.as_secs_f64();
    let server_busy = busy(server_cpu, cpu_time(pid));
    let generator_busy = busy(own_cpu, cpu_time(std::process::id()));
    LoadedRun { server_busy, generator_busy, memory: memory(pid), result }
}

/// How long each of 20 changes by a controller replica takes to be served
/// to a client polling every 200 ms, sorted (`Duration::MAX`: not within
/// 40 s). `controllers` serve `exposition(streams, _)`; `served()` returns
/// the value currently served for `scope-0/stream-0`'s segment count.
pub async fn change_to_served<S, F>(controllers: &[FakeController], streams: usize, served: S) -> Vec<Duration>
where
    S: Fn() -> F,
    F: Future<Output = Option<String>>,
{
    let mut delays = Vec::new();
    for change in 0..20u32 {
        // Desynchronise the change from the server's scrape schedule.
        tokio::time::sleep(Duration::from_millis(300 + u64::from(change * 137 % 700))).await;
        let value = 100 + change;
        // Replica 0 scales stream-0: its splits count becomes the largest.
        let body = exposition(streams, 0).replacen(
            "pravega_controller_segments_count{scope=\"scope-0\",stream=\"stream-0\",} 1.0",
            &format!("pravega_controller_segments_count{{scope=\"scope-0\",stream=\"stream-0\",}} {value}.0"),
            1,
        );
        let body = body.replacen(
            "pravega_controller_segment_splits{scope=\"scope-0\",stream=\"stream-0\",} 1.0",
            &format!("pravega_controller_segment_splits{{scope=\"scope-0\",stream=\"stream-0\",}} {}.0", 1000 + change),
            1,
        );
        controllers[0].set_body(body);
        let changed = Instant::now();
        loop {
            if served().await.as_deref() == Some(value.to_string().as_str()) {
                delays.push(changed.elapsed());
                break;
            }
            if changed.elapsed() > Duration::from_secs(40) {
                delays.push(Duration::MAX);
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    delays.sort();
    delays
}
