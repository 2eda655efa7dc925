//! End-to-end serving benchmark: the release adapter over HTTPS (bearer
//! token, reviews answered by a stub API and cached) in front of three fake
//! controller replicas.
//!
//! `cargo bench --bench serving [-- --streams 1,100,10000 --rate 5000 --seconds 10]`
//!
//! For each stream count it reports the adapter's RSS, the CPU of one scrape
//! round (3 replicas, scraped every second with no queries; each scrape
//! changes a value, so each round pays for a full merge), and the latency
//! of an open-loop query load (latency counted from each request's scheduled
//! send time, so a stall is not hidden). It then measures freshness with
//! default flags: how long a controller's change takes to be served to a
//! client polling every 200 ms, and the age of served data as the adapter's
//! own `pravega_adapter_served_value_age_seconds` histogram records it.
//! Results go to stdout as Markdown tables.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "common/exposition.rs"]
mod exposition;

use common::kube_stub::{client, write_kubeconfig, Ca, StubApi};
use common::{free_port, Adapter, FakeController};
use exposition::exposition;
use rcgen::ExtendedKeyUsagePurpose;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SEGMENTS: &str = "pravega_controller_segments_count";

struct Options {
    streams: Vec<usize>,
    rate: u64,
    seconds: u64,
}

fn options() -> Options {
    let mut options = Options { streams: vec![1, 100, 10_000], rate: 5_000, seconds: 10 };
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    for pair in args.chunks(2) {
        match (pair[0].as_str(), pair.get(1)) {
            ("--streams", Some(v)) => options.streams = v.split(',').map(|n| n.parse().expect("--streams 1,100")).collect(),
            ("--rate", Some(v)) => options.rate = v.parse().expect("--rate N"),
            ("--seconds", Some(v)) => options.seconds = v.parse().expect("--seconds N"),
            _ => panic!("usage: serving [--streams 1,100,10000] [--rate 5000] [--seconds 10]"),
        }
    }
    options
}

struct Bench {
    controllers: tokio::runtime::Runtime,
    pki_dir: PathBuf,
    kubeconfig: PathBuf,
    serving_ca: Ca,
    _api: Arc<StubApi>,
}

impl Bench {
    async fn new() -> Self {
        let pki_dir = std::env::temp_dir().join(format!("adapter-bench-{}", std::process::id()));
        std::fs::create_dir_all(&pki_dir).unwrap();
        let serving_ca = Ca::new("bench-serving-ca");
        let (cert, key) = serving_ca.leaf("adapter", &[], &["localhost", "127.0.0.1"], ExtendedKeyUsagePurpose::ServerAuth);
        std::fs::write(pki_dir.join("tls.crt"), cert).unwrap();
        std::fs::write(pki_dir.join("tls.key"), key).unwrap();
        let api = Arc::new(StubApi { allowed: vec!["*"], ..Default::default() });
        let address = api.serve(&Ca::new("front-proxy"), &Ca::new("client")).await;
        let kubeconfig = pki_dir.join("kubeconfig");
        write_kubeconfig(&kubeconfig, address);
        let controllers = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .on_thread_start(pravega_metrics_adapter::resources::lower_thread_priority)
            .enable_all()
            .build()
            .unwrap();
        Bench { controllers, pki_dir, kubeconfig, serving_ca, _api: api }
    }

    async fn adapter(&self, controllers: &[FakeController], extra: &[&str]) -> Adapter {
        let port = free_port();
        let mut args: Vec<String> = vec![
            "--secure-port".into(),
            port.to_string(),
            "--bind-address".into(),
            "127.0.0.1".into(),
            "--tls-cert-file".into(),
            self.pki_dir.join("tls.crt").display().to_string(),
            "--tls-private-key-file".into(),
            self.pki_dir.join("tls.key").display().to_string(),
            "--kubeconfig".into(),
            self.kubeconfig.display().to_string(),
        ];
        for c in controllers {
            args.extend(["--controller-url".into(), c.url()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        Adapter::start_secure(&args, port, self.client()).await
    }

    fn client(&self) -> reqwest::Client {
        client(&self.serving_ca, None)
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.pki_dir);
    }
}

/// (VmRSS, VmHWM) in KiB.
fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field =
        |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap_or(0);
    (field("VmRSS:"), field("VmHWM:"))
}

/// User + system CPU time of a process.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let field = |i: usize| after.split_whitespace().nth(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    let ticks = field(11) + field(12);
    Duration::from_secs_f64(ticks as f64 / 100.0) // USER_HZ is 100 on Linux
}

struct LoadResult {
    sent: u64,
    errors: u64,
    latencies_us: Vec<u64>,
    elapsed: Duration,
}

impl LoadResult {
    fn percentile(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies_us.len() as f64 * p).ceil() as usize).clamp(1, self.latencies_us.len()) - 1;
        self.latencies_us[i] as f64 / 1000.0
    }
}

/// Open-loop load: request `i` is due at `start + i / rate`; its latency
/// runs from then, not from when it was actually sent. A dedicated thread
/// paces the sends (Tokio's timer ticks in whole milliseconds, which would
/// batch them and add up to 1 ms to every measurement).
async fn load(client: &reqwest::Client, base: &str, streams: usize, rate: u64, seconds: u64) -> LoadResult {
    let total = rate * seconds;
    let errors = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(std::sync::Mutex::new(Vec::with_capacity(total as usize)));
    let start = Instant::now() + Duration::from_millis(50);
    let runtime = tokio::runtime::Handle::current();
    let (client, base, errors_in, latencies_in) = (client.clone(), base.to_owned(), errors.clone(), latencies.clone());
    let pacer = std::thread::spawn(move || {
        let mut tasks = Vec::with_capacity(total as usize);
        for i in 0..total {
            let due = start + Duration::from_nanos(i * 1_000_000_000 / rate);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let stream = (i as usize * 7919) % streams;
            let url = format!(
                "{base}/apis/external.metrics.k8s.io/v1beta1/namespaces/default/{SEGMENTS}?labelSelector=scope%3Dscope-{}%2Cstream%3Dstream-{stream}",
                stream % 20
            );
            let (client, errors, latencies) = (client.clone(), errors_in.clone(), latencies_in.clone());
            tasks.push(runtime.spawn(async move {
                let ok = match client.get(url).bearer_auth("good-token").send().await {
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

/// Starts the three fake replicas on `runtime`, whose threads only get CPU
/// nobody else wants: real controllers run on other machines, and serving
/// their expositions must not slow the load generator or the adapter down.
async fn replicas(runtime: &tokio::runtime::Runtime, streams: usize) -> Vec<FakeController> {
    let mut controllers = Vec::new();
    for r in 0..3 {
        let body = exposition(streams, r);
        let controller = runtime.spawn(FakeController::start(body)).await.unwrap();
        // Every scrape changes a value, so every round costs a full merge.
        controller.churn();
        controllers.push(controller);
    }
    controllers
}

async fn scale_row(bench: &Bench, streams: usize, options: &Options, out: &mut String) {
    let controllers = replicas(&bench.controllers, streams).await;
    let body_bytes = exposition(streams, 0).len();

    // Scrape CPU: rounds every second, nothing else going on.
    let adapter = bench.adapter(&controllers, &["--scrape-interval", "1s", "--scrape-timeout", "900ms"]).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = cpu_time(adapter.pid());
    tokio::time::sleep(Duration::from_secs(10)).await;
    let per_round = (cpu_time(adapter.pid()) - before) / 10;
    drop(adapter);

    // Memory and query latency with default flags.
    let extra = std::env::var("BENCH_ADAPTER_ARGS").unwrap_or_default();
    let extra: Vec<&str> = extra.split_whitespace().collect();
    let adapter = bench.adapter(&controllers, &extra).await;
    let client = bench.client();
    load(&client, &adapter.base, streams, 200, 2).await; // warm-up: connections, review caches
    let (adapter_cpu, own_cpu) = (cpu_time(adapter.pid()), cpu_time(std::process::id()));
    let result = load(&client, &adapter.base, streams, options.rate, options.seconds).await;
    let busy = |before: Duration, after: Duration| 100.0 * (after - before).as_secs_f64() / result.elapsed.as_secs_f64();
    let adapter_busy = busy(adapter_cpu, cpu_time(adapter.pid()));
    let load_busy = busy(own_cpu, cpu_time(std::process::id()));
    let (rss, hwm) = memory(adapter.pid());

    let achieved = result.latencies_us.len() as f64 / result.elapsed.as_secs_f64();
    let _ = writeln!(
        out,
        "| {streams} | {:.1} | {:.1} | {:.1} | {:.1} | {} / {} | {:.0} | {adapter_busy:.0} | {load_busy:.0} | {:.2} | {:.2} | {:.2} | {:.1} |",
        body_bytes as f64 / 1e6,
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0,
        per_round.as_secs_f64() * 1000.0,
        result.errors,
        result.sent,
        achieved,
        result.percentile(0.50),
        result.percentile(0.99),
        result.percentile(0.999),
        result.percentile(1.0),
    );
    println!("{}", out.lines().last().unwrap_or_default());
}

/// Time until a polling client sees a controller's change, and the
/// served-age histogram, with default flags.
async fn freshness(bench: &Bench, out: &mut String) {
    let streams = 100;
    let controllers = replicas(&bench.controllers, streams).await;
    let adapter = bench.adapter(&controllers, &[]).await;
    let client = bench.client();
    let url = format!(
        "{}/apis/external.metrics.k8s.io/v1beta1/namespaces/default/{SEGMENTS}?labelSelector=scope%3Dscope-0%2Cstream%3Dstream-0",
        adapter.base
    );
    let served = || async {
        let text = client.get(&url).bearer_auth("good-token").send().await.ok()?.text().await.ok()?;
        let body: serde_json::Value = serde_json::from_str(&text).ok()?;
        body["items"][0]["value"].as_str().map(str::to_owned)
    };
    let mut delays = Vec::new();
    for change in 0..20u32 {
        // Desynchronise the change from the adapter's scrape schedule.
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
    let pick = |p: f64| delays[((delays.len() as f64 * p).ceil() as usize).clamp(1, delays.len()) - 1].as_secs_f64();
    let _ = writeln!(
        out,
        "| change -> served, client polling every 200 ms | {} | {:.2} | {:.2} | {:.2} |",
        delays.len(),
        pick(0.5),
        pick(0.99),
        pick(1.0)
    );

    let metrics = client.get(format!("{}/metrics", adapter.base)).bearer_auth("good-token").send().await.unwrap().text().await.unwrap();
    let buckets: Vec<(f64, f64)> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("pravega_adapter_served_value_age_seconds_bucket{le=\""))
        .filter_map(|l| {
            let (le, count) = l.split_once("\"} ")?;
            Some((if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? }, count.parse().ok()?))
        })
        .collect();
    let total = buckets.last().map_or(0.0, |b| b.1);
    let bound = |p: f64| buckets.iter().find(|(_, c)| *c >= total * p).map_or(f64::NAN, |(le, _)| *le);
    let _ =
        writeln!(out, "| age of served data (adapter histogram, bucket bound) | {total} | <= {} | <= {} | - |", bound(0.5), bound(0.99));
}

fn main() {
    let options = options();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let bench = runtime.block_on(Bench::new());
    runtime.block_on(async {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Query load: {} req/s for {} s over HTTPS (HTTP/2, bearer token), open loop; 3 controller replicas.\n",
            options.rate, options.seconds
        );
        let _ = writeln!(out, "| streams | exposition MB/replica | RSS MiB | peak RSS MiB | scrape round CPU ms | errors / sent | achieved req/s | adapter CPU % | load generator CPU % | p50 ms | p99 ms | p99.9 ms | max ms |");
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        println!("{out}");
        for &streams in &options.streams {
            scale_row(&bench, streams, &options, &mut out).await;
        }
        let _ = writeln!(out, "\nFreshness with default flags (100 streams, 3 replicas):\n");
        let _ = writeln!(out, "| measure | samples | p50 s | p99 s | max s |");
        let _ = writeln!(out, "|---|---|---|---|---|");
        freshness(&bench, &mut out).await;
        println!("\n{out}");
    });
}
