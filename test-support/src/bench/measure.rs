//! What the serving and baseline benchmarks measure, the same way for any
//! server process: what a query load cost, and how long a controller's
//! change takes to be served.

use super::load::{self, LoadResult, Target};
use super::options::Options;
use super::process_stats::{cpu_time, memory, serving_threads_waiting, steal_time};
use crate::exposition::many_streams;
use crate::fake_controller::FakeController;
use std::future::Future;
use std::time::{Duration, Instant};

/// The element at nearest-rank percentile `p` (0 < p <= 1) of a sorted,
/// non-empty slice.
pub fn nearest_rank<T: Copy>(sorted: &[T], p: f64) -> T {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// A query load against one server process and what it cost.
pub struct LoadedRun {
    pub result: LoadResult,
    /// CPU of the server and of this (load generating) process, % of one core.
    pub server_busy: f64,
    pub generator_busy: f64,
    /// Steal time during the run (see [`steal_time`]).
    pub host_steal: Duration,
    /// How long the server's serving threads waited for a core during the
    /// run (see [`serving_threads_waiting`]).
    pub serving_wait: Duration,
    /// (VmRSS, VmHWM) of the server in KiB, right after the load.
    pub memory: (u64, u64),
}

/// [`load::run`] at the options' rate for their seconds against `target`,
/// served by process `pid`, after a short light load that fills the
/// server's caches (authentication reviews, query caches).
pub async fn loaded_run<P>(pid: u32, target: &Target, streams: usize, options: &Options, path: P) -> LoadedRun
where
    P: Fn(usize) -> String + Clone + Send + 'static,
{
    load::run(target.clone(), streams, 200, 2, path.clone()).await;
    let (server_cpu, own_cpu, steal, waited) = (cpu_time(pid), cpu_time(std::process::id()), steal_time(), serving_threads_waiting(pid));
    let result = load::run(target.clone(), streams, options.rate, options.seconds, path).await;
    let host_steal = steal_time() - steal;
    let serving_wait = serving_threads_waiting(pid).saturating_sub(waited);
    let busy = |before: Duration, after: Duration| 100.0 * (after - before).as_secs_f64() / result.elapsed.as_secs_f64();
    let server_busy = busy(server_cpu, cpu_time(pid));
    let generator_busy = busy(own_cpu, cpu_time(std::process::id()));
    LoadedRun { server_busy, generator_busy, host_steal, serving_wait, memory: memory(pid), result }
}

/// How long each of 20 changes by a controller replica takes to be served
/// to a client polling every 200 ms, sorted (`Duration::MAX`: not within
/// 40 s). `controllers` serve `many_streams(streams, _)`; `served()` returns
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
        let body = many_streams(streams, 0).replacen(
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
