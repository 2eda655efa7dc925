//! What the serving and baseline benchmarks measure, the same way for any
//! server process: command-line options, memory and CPU from /proc, what a
//! query load cost, and how long a controller's change takes to be served.
#![allow(dead_code)] // each benchmark uses a different part of this module

use crate::common::FakeController;
use crate::exposition::exposition;
use crate::load::{self, LoadResult, Target};
use std::future::Future;
use std::time::{Duration, Instant};

pub struct Options {
    pub streams: Vec<usize>,
    pub rate: u64,
    pub seconds: u64,
}

/// `--streams 1,100,10000 --rate 5000 --seconds 10`; `bench` names the
/// benchmark in the usage message. `--help` prints the usage; a bad
/// argument prints it with the reason and exits with status 2.
pub fn options(bench: &str) -> Options {
    let usage = format!("usage: {bench} [--streams 1,100,10000] [--rate 5000] [--seconds 10]");
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{usage}");
        std::process::exit(0);
    }
    parse_options(&args).unwrap_or_else(|reason| {
        eprintln!("{bench}: {reason}\n{usage}");
        std::process::exit(2);
    })
}

fn parse_options(args: &[String]) -> Result<Options, String> {
    fn positive<T: std::str::FromStr + Default + PartialOrd>(flag: &str, value: &str) -> Result<T, String> {
        match value.parse::<T>() {
            Ok(n) if n > T::default() => Ok(n),
            _ => Err(format!("{flag} takes a positive whole number, not {value:?}")),
        }
    }
    let mut options = Options { streams: vec![1, 100, 10_000], rate: 5_000, seconds: 10 };
    for pair in args.chunks(2) {
        match (pair[0].as_str(), pair.get(1)) {
            ("--streams", Some(v)) => options.streams = v.split(',').map(|n| positive("--streams", n)).collect::<Result<_, _>>()?,
            ("--rate", Some(v)) => options.rate = positive("--rate", v)?,
            ("--seconds", Some(v)) => options.seconds = positive("--seconds", v)?,
            (flag, None) => return Err(format!("{flag} needs a value")),
            (flag, Some(_)) => return Err(format!("unknown argument {flag:?}")),
        }
    }
    Ok(options)
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

/// CPU time the hypervisor gave to others while this machine's CPUs had
/// work (steal time, all CPUs together). On a shared virtual machine a
/// stolen slice stalls whatever thread it hits, so a run with steal has a
/// tail that says more about the host than about the server.
pub fn steal_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    // "cpu  user nice system idle iowait irq softirq steal ...", in USER_HZ.
    let steal = stat.lines().next().and_then(|total| total.split_whitespace().nth(8)?.parse::<u64>().ok()).unwrap_or(0);
    Duration::from_millis(steal * 10)
}

/// How long the Tokio worker threads of process `pid` (the threads that
/// serve requests) have been runnable but waiting for a core, summed
/// (Linux schedstat). A request arriving meanwhile waits as long; the
/// difference over a run shows how much of its tail is the scheduler's.
pub fn serving_threads_waiting(pid: u32) -> Duration {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Duration::ZERO };
    let waited_ns: u64 = tasks
        .flatten()
        .filter(|task| std::fs::read_to_string(task.path().join("comm")).is_ok_and(|comm| comm.starts_with("tokio-rt-worker")))
        .filter_map(|task| {
            // "time on CPU, time waiting on a run queue, timeslices", in ns.
            std::fs::read_to_string(task.path().join("schedstat")).ok()?.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .sum();
    Duration::from_nanos(waited_ns)
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
