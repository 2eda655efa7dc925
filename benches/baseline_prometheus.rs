//! Baseline for the serving benchmark: Prometheus alone (the Debian package,
//! 2.42) against the adapter, in one run, on the same fake controller
//! replicas and the same open-loop query load.
//!
//! `cargo bench --bench baseline_prometheus [-- --streams 1,100,10000 --rate 5000 --seconds 10]`
//! (`make bench-baseline-serving` installs Prometheus first.)
//!
//! This is Prometheus without prometheus-adapter under a heavy open-loop
//! load: a lower bound on the serving cost of the Prometheus +
//! prometheus-adapter stack. The whole chain, prometheus-adapter and the
//! aggregator included, is `make bench-baseline` (benches/baseline/run.sh).
//! For each stream count both servers scrape
//! three replicas every second; the table reports memory, idle scraping CPU,
//! and the latency of an external-metrics query against the adapter and of
//! the PromQL prometheus-adapter would issue for it against Prometheus. A
//! freshness table follows: how long a controller's change takes to reach a
//! client polling every 200 ms. Results go to stdout as Markdown.

use std::fmt::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use test_support::adapter::wait_ready;
use test_support::adapter_binary;
use test_support::bench::load::Target;
use test_support::bench::measure::{change_to_served, loaded_run, nearest_rank, LoadedRun};
use test_support::bench::options::{options, Options};
use test_support::bench::process_stats::{idle_cpu_per_second, memory};
use test_support::bench::setup::{segments_query, served_value, Bench};
use test_support::exposition::{many_streams, stream_labels, MERGES, SEGMENTS, SPLITS};
use test_support::fake_controller::FakeController;
use test_support::net::{free_port, http};
use test_support::queries::encode;

/// Before measuring an idle server: Prometheus's head block then holds 15
/// samples per series, and both servers are past their start-up.
const WARM_UP: Duration = Duration::from_secs(15);
/// Requests in flight to Prometheus at most, each on an HTTP/1.1 connection
/// of its own: half its `--web.max-connections` default (512), as a margin
/// for the connections the client's pool opens in a race and keeps idle.
/// Past the limit Prometheus stops accepting connections, and a request
/// on one it has not accepted waits for an idle one to time out (minutes).
const PROMETHEUS_IN_FLIGHT: usize = 256;
/// How many streams' values are compared between the two servers.
const CHECKED_STREAMS: usize = 10;
/// Both servers scrape every second while idle: Prometheus by its config,
/// the adapter by these flags (its default is 10 s plus a refresh on query).
const ADAPTER_SCRAPING_EVERY_SECOND: [&str; 4] = ["--scrape-interval", "1s", "--scrape-timeout", "900ms"];

/// The PromQL prometheus-adapter would issue for an external-metrics query
/// of one stream's segment count, with the adapter's semantics. The usual
/// rule, `sum(pravega_controller_segments_count{scope=..,stream=..})`, adds
/// the replicas' values, but each replica only knows the count as of the
/// last scale *it* performed, so the adapter serves the value of the
/// replica that has seen the most scale events (splits + merges). This
/// selects that replica per stream; it differs from the adapter only on
/// ties (the adapter then takes the most recent change, `topk` any) and for
/// a replica reporting just one of the two counters (`+` drops it, the
/// adapter counts the missing one as 0), neither of which the synthetic
/// expositions contain. `max` would answer the same here, by coincidence of
/// the synthetic values.
fn replica_selecting_promql(scope: &str, stream: &str) -> String {
    let matchers = format!("{{scope=\"{scope}\",stream=\"{stream}\"}}");
    format!("{SEGMENTS}{matchers} and on (instance, scope, stream) topk by (scope, stream) (1, {SPLITS}{matchers} + {MERGES}{matchers})")
}

/// The usual prometheus-adapter rule's query, shown for contrast.
fn summing_promql(scope: &str, stream: &str) -> String {
    format!("sum({SEGMENTS}{{scope=\"{scope}\",stream=\"{stream}\"}})")
}

/// The path of an instant query of `promql(scope, stream)` for one
/// synthetic stream.
fn query_path(promql: fn(&str, &str) -> String, stream: usize) -> String {
    let (scope, stream) = stream_labels(stream);
    format!("/api/v1/query?query={}", encode(&promql(&scope, &stream)))
}

/// A Prometheus process scraping the given replicas every second, with its
/// config and TSDB in a temporary directory; killed on drop.
struct Prometheus {
    child: Child,
    dir: PathBuf,
    /// `http://127.0.0.1:port`.
    base: String,
}

impl Prometheus {
    /// The binary from PATH or the Debian package's location.
    fn binary() -> Option<PathBuf> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .map(|dir| dir.join("prometheus"))
            .chain([PathBuf::from("/usr/bin/prometheus")])
            .find(|candidate| candidate.is_file())
    }

    fn version(binary: &Path) -> String {
        let output = Command::new(binary).arg("--version").output().expect("run prometheus --version");
        String::from_utf8_lossy(&output.stdout).lines().next().unwrap_or_default().to_owned()
    }

    async fn start(binary: &Path, controllers: &[FakeController]) -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("prometheus-baseline-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let targets: Vec<String> = controllers.iter().map(|c| format!("'{}'", c.address)).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n\
             scrape_configs:\n  - job_name: pravega-controller\n    metrics_path: /prometheus\n    \
             static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        );
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let mut command = Command::new(binary);
        // SAFETY: prctl is async-signal-safe and touches no memory of ours.
        // It stops Prometheus when the thread that started it exits, so an
        // interrupted benchmark leaves no Prometheus behind; this runs on
        // the thread that blocks on the whole benchmark.
        unsafe {
            command.pre_exec(|| match libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            });
        }
        let child = command
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
            .spawn()
            .expect("start prometheus");
        let mut prometheus = Prometheus { child, dir, base: format!("http://127.0.0.1:{port}") };
        let ready = format!("{}/-/ready", prometheus.base);
        wait_ready("prometheus", &mut prometheus.child, http(), &ready, &prometheus.dir.join("prometheus.log")).await;
        prometheus
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// An instant query (GET /api/v1/query, plain HTTP) of `promql(scope,
    /// stream)` for one synthetic stream.
    fn query(&self, promql: fn(&str, &str) -> String) -> impl Fn(usize) -> reqwest::RequestBuilder {
        let base = self.base.clone();
        move |stream| http().get(format!("{base}{}", query_path(promql, stream)))
    }

    /// Where a query load against Prometheus goes: plain HTTP/1.1, at most
    /// `PROMETHEUS_IN_FLIGHT` connections.
    fn load_target(&self) -> Target {
        Target::http1(&self.base, PROMETHEUS_IN_FLIGHT)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The value of the first series of an instant query's answer.
async fn prometheus_value(request: reqwest::RequestBuilder) -> Option<String> {
    let text = request.send().await.ok()?.text().await.ok()?;
    let body: serde_json::Value = serde_json::from_str(&text).ok()?;
    body["data"]["result"][0]["value"][1].as_str().map(str::to_owned)
}

/// What one server cost and how it answered.
struct Figures {
    /// KiB, after the warm-up, and after the idle window that follows it.
    warm_rss: u64,
    idle_rss: u64,
    idle_cpu: Duration,
    run: LoadedRun,
    /// KiB, the largest VmHWM of the server's processes.
    peak_rss: u64,
    /// Values served for the first `CHECKED_STREAMS` streams.
    values: Vec<Option<String>>,
}

async fn adapter_figures(bench: &Bench, controllers: &[FakeController], streams: usize, options: &Options) -> Figures {
    let adapter = bench.adapter(controllers, &ADAPTER_SCRAPING_EVERY_SECOND).await;
    tokio::time::sleep(WARM_UP).await;
    let (warm_rss, _) = memory(adapter.pid());
    let idle_cpu = idle_cpu_per_second(adapter.pid()).await;
    let (idle_rss, idle_peak) = memory(adapter.pid());
    drop(adapter);

    // Query load with default flags, as the serving benchmark runs it.
    let adapter = bench.adapter(controllers, &[]).await;
    let query = bench.external_query(&adapter);
    let mut values = Vec::new();
    for stream in 0..streams.min(CHECKED_STREAMS) {
        values.push(served_value(query(stream)).await);
    }
    let run = loaded_run(adapter.pid(), &bench.load_target(&adapter), streams, options, segments_query).await;
    Figures { warm_rss, idle_rss, idle_cpu, peak_rss: idle_peak.max(run.memory.1), run, values }
}

/// Prometheus's figures under the replica-selecting query, and what the
/// usual summing rule answers and costs.
struct Baseline {
    figures: Figures,
    summing_values: Vec<Option<String>>,
    summing_run: LoadedRun,
}

async fn prometheus_figures(binary: &Path, controllers: &[FakeController], streams: usize, options: &Options) -> Baseline {
    let prometheus = Prometheus::start(binary, controllers).await;
    tokio::time::sleep(WARM_UP).await;
    let (warm_rss, _) = memory(prometheus.pid());
    let idle_cpu = idle_cpu_per_second(prometheus.pid()).await;
    let (idle_rss, _) = memory(prometheus.pid());
    let (query, summing) = (prometheus.query(replica_selecting_promql), prometheus.query(summing_promql));
    let (mut values, mut summing_values) = (Vec::new(), Vec::new());
    for stream in 0..streams.min(CHECKED_STREAMS) {
        values.push(prometheus_value(query(stream)).await);
        summing_values.push(prometheus_value(summing(stream)).await);
    }
    let target = prometheus.load_target();
    let run = loaded_run(prometheus.pid(), &target, streams, options, |stream| query_path(replica_selecting_promql, stream)).await;
    let summing_run = loaded_run(prometheus.pid(), &target, streams, options, |stream| query_path(summing_promql, stream)).await;
    let peak_rss = summing_run.memory.1;
    Baseline { figures: Figures { warm_rss, idle_rss, idle_cpu, peak_rss, run, values }, summing_values, summing_run }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn ratio(adapter: f64, prometheus: f64) -> String {
    if adapter > 0.0 && adapter.is_finite() && prometheus.is_finite() {
        format!("{:.1}", prometheus / adapter)
    } else {
        "-".to_owned()
    }
}

fn row(out: &mut String, metric: &str, adapter: f64, prometheus: f64, decimals: usize) {
    let _ = writeln!(out, "| {metric} | {adapter:.decimals$} | {prometheus:.decimals$} | {} |", ratio(adapter, prometheus));
}

/// The rows of one query load against each server.
fn load_rows(out: &mut String, load: &str, adapter: &LoadedRun, prometheus: &LoadedRun) {
    let (a, p) = (&adapter.result, &prometheus.result);
    let _ = writeln!(out, "| {load}: errors / sent | {} / {} | {} / {} | - |", a.errors, a.sent, p.errors, p.sent);
    row(out, &format!("{load}: achieved req/s"), a.achieved(), p.achieved(), 0);
    for (name, quantile) in [("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999), ("max", 1.0)] {
        row(out, &format!("{load}: {name} ms"), a.percentile(quantile), p.percentile(quantile), 2);
    }
    row(out, &format!("{load}: server CPU, % of one core"), adapter.server_busy, prometheus.server_busy, 0);
    row(out, &format!("{load}: load generator CPU, % of one core"), adapter.generator_busy, prometheus.generator_busy, 0);
    let (a, p) = (adapter.host_steal.as_millis(), prometheus.host_steal.as_millis());
    let _ = writeln!(out, "| {load}: host steal during the run, ms | {a} | {p} | - |");
}

async fn compare(bench: &Bench, binary: &Path, streams: usize, options: &Options, out: &mut String) {
    let controllers = bench.replicas(streams).await;
    let adapter = adapter_figures(bench, &controllers, streams, options).await;
    let Baseline { figures: prometheus, summing_values, summing_run } = prometheus_figures(binary, &controllers, streams, options).await;

    let mib = |kib: u64| kib as f64 / 1024.0;
    let _ = writeln!(
        out,
        "\n### Streams: {streams} ({:.1} MB exposition per replica, 3 replicas)\n",
        many_streams(streams, 0).len() as f64 / 1e6
    );
    let _ = writeln!(out, "| metric | adapter | Prometheus | ratio (Prometheus/adapter) |\n|---|---|---|---|");
    let warm_up = WARM_UP.as_secs();
    row(out, &format!("RSS idle-scraping every 1 s, after {warm_up} s, MiB"), mib(adapter.warm_rss), mib(prometheus.warm_rss), 1);
    let idle_seconds = warm_up + 10;
    row(out, &format!("RSS idle-scraping every 1 s, after {idle_seconds} s, MiB"), mib(adapter.idle_rss), mib(prometheus.idle_rss), 1);
    row(
        out,
        &format!("CPU idle-scraping every 1 s, {warm_up} s to {idle_seconds} s, ms per s (± 1)"),
        ms(adapter.idle_cpu),
        ms(prometheus.idle_cpu),
        0,
    );
    load_rows(out, "query load", &adapter.run, &prometheus.run);
    row(out, "RSS after query load, MiB", mib(adapter.run.memory.0), mib(prometheus.run.memory.0), 1);
    load_rows(out, "same load, Prometheus queried with `sum(...)`", &adapter.run, &summing_run);
    row(out, "peak RSS, MiB", mib(adapter.peak_rss), mib(prometheus.peak_rss), 1);

    let equal = adapter.values.iter().zip(&prometheus.values).filter(|(a, p)| a.is_some() && a == p).count();
    let shown = |values: &[Option<String>]| values.iter().map(|v| v.as_deref().unwrap_or("none")).collect::<Vec<_>>().join(" ");
    let _ = writeln!(
        out,
        "\nValues of the first {} stream(s): {} equal{}; adapter `{}`, Prometheus (replica-selecting PromQL) `{}`, `sum(...)` `{}`.",
        adapter.values.len(),
        equal,
        if equal == adapter.values.len() { "" } else { " (MISMATCH: the comparison is not like for like)" },
        shown(&adapter.values),
        shown(&prometheus.values),
        shown(&summing_values),
    );
    println!("{}", out.rsplit("\n### ").next().map(|section| format!("### {section}")).unwrap_or_default());
}

/// Change-to-served delays for both servers, each on fresh replicas of 100
/// streams with the adapter's default flags and Prometheus scraping every 1 s.
async fn freshness(bench: &Bench, binary: &Path, out: &mut String) {
    let streams = 100;
    let controllers = bench.replicas(streams).await;
    let adapter = bench.adapter(&controllers, &[]).await;
    let query = bench.external_query(&adapter);
    let adapter_delays = change_to_served(&controllers, streams, || served_value(query(0))).await;
    drop(adapter);

    let controllers = bench.replicas(streams).await;
    let prometheus = Prometheus::start(binary, &controllers).await;
    let query = prometheus.query(replica_selecting_promql);
    // Changes count from the first scrape on, as they do for the adapter,
    // which is ready only once it has scraped.
    while prometheus_value(query(0)).await.is_none() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let prometheus_delays = change_to_served(&controllers, streams, || prometheus_value(query(0))).await;

    let _ = writeln!(out, "\n### Freshness: controller change -> served, client polling every 200 ms, 100 streams, 20 changes\n");
    let _ = writeln!(out, "| metric | adapter | Prometheus | ratio (Prometheus/adapter) |\n|---|---|---|---|");
    for (name, quantile) in [("p50", 0.5), ("p99", 0.99), ("max", 1.0)] {
        let pick = |delays: &[Duration]| nearest_rank(delays, quantile).as_secs_f64();
        row(out, &format!("{name} s"), pick(&adapter_delays), pick(&prometheus_delays), 2);
    }
}

fn cpu_model() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    cpuinfo.lines().find_map(|l| l.strip_prefix("model name")?.split_once(':').map(|(_, m)| m.trim().to_owned())).unwrap_or_default()
}

fn main() {
    let Some(binary) = Prometheus::binary() else {
        eprintln!(
            "baseline_prometheus: no prometheus binary in PATH or at /usr/bin/prometheus.\n\
             Install it with `sudo apt-get install -y prometheus` (Debian/Ubuntu), or run `make bench-baseline`, which does."
        );
        std::process::exit(1);
    };
    let options = options("baseline_prometheus");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let bench = runtime.block_on(Bench::new(adapter_binary!()));
    let arguments: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let command = if arguments.is_empty() {
        "cargo bench --bench baseline_prometheus".to_owned()
    } else {
        format!("cargo bench --bench baseline_prometheus -- {}", arguments.join(" "))
    };
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());

    let mut out = String::new();
    let _ = writeln!(out, "## Baseline: the adapter vs Prometheus alone\n");
    let _ = writeln!(out, "Machine: {cores} CPUs ({}). Command: `{command}`. {}.\n", cpu_model(), Prometheus::version(&binary));
    let notes = [
        "Prometheus alone is a **lower bound** on the cost of Prometheus + prometheus-adapter: prometheus-adapter's own \
         process (memory, CPU, its HTTPS, authentication and authorization) and its hop to Prometheus come on top."
            .to_owned(),
        format!(
            "Query load: {} req/s for {} s, open loop, latency from each request's scheduled send time. The adapter is \
             queried over HTTPS (HTTP/2, bearer token, reviews cached), Prometheus over plain HTTP/1.1 without \
             authentication, which favours Prometheus. Prometheus keeps its default query concurrency (20) and \
             connection limit (512); the load generator keeps at most {PROMETHEUS_IN_FLIGHT} requests in flight to it, \
             each on a connection of its own.",
            options.rate, options.seconds
        ),
        format!(
            "Both scrape the same 3 fake replicas every 1 s while idle (adapter `{}`; Prometheus `scrape_interval: 1s`, \
             `scrape_timeout: 900ms`), after a {} s warm-up. Under query load the adapter runs with default flags \
             (background scrape every 10 s, refreshed on query when older than 0.5 s: about 2 rounds/s) while Prometheus \
             keeps scraping every 1 s. The 1 s interval makes Prometheus's freshness comparable to the adapter's; \
             prometheus-adapter deployments usually scrape every 30 s to 1 min.",
            ADAPTER_SCRAPING_EVERY_SECOND.join(" "),
            WARM_UP.as_secs()
        ),
        format!(
            "Prometheus is queried with `{}` for stream S of scope C: the value of the replica that has seen the most \
             scale events, as the adapter serves it. The `sum(...)` rows run the same load with the usual \
             prometheus-adapter rule's cheaper `{}`, which adds stale replicas' values (see the values line), \
             against the same adapter run.",
            replica_selecting_promql("C", "S"),
            summing_promql("C", "S")
        ),
    ];
    for note in notes {
        let _ = writeln!(out, "- {note}");
    }
    println!("{out}");
    runtime.block_on(async {
        for &streams in &options.streams {
            compare(&bench, &binary, streams, &options, &mut out).await;
        }
        freshness(&bench, &binary, &mut out).await;
    });
    println!("\n{out}");
}
