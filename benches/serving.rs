//! End-to-end serving benchmark: the release adapter over HTTPS (bearer
//! token, reviews answered by a stub API and cached) in front of three fake
//! controller replicas.
//!
//! `cargo bench --bench serving [-- --streams 1,100,10000 --rate 5000 --seconds 10]`
//!
//! For each stream count it reports the adapter's RSS, the CPU of one scrape
//! round (3 replicas, scraped every second with no queries; each scrape
//! changes a value, so each round pays for a full merge), the TokenReviews
//! and SubjectAccessReviews the load caused (warm-up included), and the
//! latency of an open-loop query load (latency counted from each request's scheduled
//! send time, so a stall is not hidden), with the CPU the hypervisor stole
//! from the machine meanwhile (a run with steal has the host's tail, not the
//! server's) and how long the adapter's serving threads were runnable but
//! waiting for a core (the scheduler's share of the tail), and how late the
//! generator itself sent its requests (p99; its share). It then measures freshness with
//! default flags: how long a controller's change takes to be served to a
//! client polling every 200 ms, and the age of served data as the adapter's
//! own `pravega_adapter_served_value_age_seconds` histogram records it.
//! The same load against `/livez` and an API discovery path gives the floor
//! that the HTTPS stack alone sets on the machine.
//! Results go to stdout as Markdown tables; stderr says, per loaded run,
//! how many requests took over 1 ms in each second of it.
//!
//! `BENCH_ADAPTER_ARGS="--max-staleness 5s"` passes extra adapter flags to
//! the loaded rows (memory and query latency), for trying a flag's effect.

use std::fmt::Write as _;
use std::time::Duration;
use test_support::adapter_binary;
use test_support::bench::load;
use test_support::bench::measure::{change_to_served, loaded_run, nearest_rank, LoadedRun};
use test_support::bench::options::{options, Options};
use test_support::bench::process_stats::idle_cpu_per_second;
use test_support::bench::setup::{segments_query, served_value, Bench, TOKEN};
use test_support::exposition::many_streams;

async fn scale_row(bench: &Bench, streams: usize, options: &Options, out: &mut String) {
    let controllers = bench.replicas(streams).await;
    let body_bytes = many_streams(streams, 0).len();

    // Scrape CPU: rounds every second, nothing else going on.
    let adapter = bench.adapter(&controllers, &["--scrape-interval", "1s", "--scrape-timeout", "900ms"]).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let per_round = idle_cpu_per_second(adapter.pid()).await;
    drop(adapter);

    // Memory and query latency with default flags, or BENCH_ADAPTER_ARGS.
    let extra = std::env::var("BENCH_ADAPTER_ARGS").unwrap_or_default();
    let extra: Vec<&str> = extra.split_whitespace().collect();
    let adapter = bench.adapter(&controllers, &extra).await;
    let reviews = bench.reviews();
    let run = loaded_run(adapter.pid(), &bench.load_target(&adapter), streams, options, segments_query).await;
    report_slow(&format!("{streams} streams"), &run);
    let reviews = bench.reviews() - reviews;
    let (rss, hwm) = run.memory;
    let _ = writeln!(
        out,
        "| {streams} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {reviews} |",
        body_bytes as f64 / 1e6,
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0,
        per_round.as_secs_f64() * 1000.0,
        load_cells(&run)
    );
    println!("{}", out.lines().last().unwrap_or_default());
}

/// When in the run the slow requests were due, on stderr: a tail made of
/// one stall shows as one busy second, a steady tail as every second.
fn report_slow(label: &str, run: &LoadedRun) {
    let per_second: Vec<String> = run.result.slow_per_second.iter().map(u32::to_string).collect();
    eprintln!("{label}: requests over {:?}, per second of the run: {}", load::SLOW, per_second.join(" "));
}

/// A Markdown table's header row and the delimiter row matching it.
fn table_header<'a>(out: &mut String, columns: impl IntoIterator<Item = &'a &'a str>) {
    let columns: Vec<&str> = columns.into_iter().copied().collect();
    let _ = writeln!(out, "| {} |\n|{}", columns.join(" | "), "---|".repeat(columns.len()));
}

/// Errors, throughput, CPU and latency of a run, as table cells.
fn load_cells(run: &LoadedRun) -> String {
    let result = &run.result;
    format!(
        "{} / {} | {:.0} | {:.0} | {:.0} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1}",
        result.errors,
        result.sent,
        result.achieved(),
        run.server_busy,
        run.generator_busy,
        run.host_steal.as_millis(),
        run.serving_wait.as_millis(),
        result.sent_late(0.99),
        result.percentile(0.50),
        result.percentile(0.99),
        result.percentile(0.999),
        result.percentile(1.0),
    )
}

/// The same load against requests that skip the metrics query: what the
/// HTTPS stack (and authentication) alone cost on this machine, the floor
/// under the query latency above.
async fn floor_rows(bench: &Bench, options: &Options, out: &mut String) {
    let controllers = bench.replicas(1).await;
    let adapter = bench.adapter(&controllers, &[]).await;
    for (path, what) in [
        ("/livez", "`/livez`: TLS and HTTP/2 only (no authentication)"),
        (
            "/apis/external.metrics.k8s.io/v1beta1",
            "`/apis/external.metrics.k8s.io/v1beta1`: plus authentication, authorization, a JSON body",
        ),
    ] {
        let run = loaded_run(adapter.pid(), &bench.load_target(&adapter), 1, options, move |_| path.to_owned()).await;
        report_slow(path, &run);
        let _ = writeln!(out, "| {what} | {} |", load_cells(&run));
        println!("{}", out.lines().last().unwrap_or_default());
    }
}

/// Time until a polling client sees a controller's change, and the
/// served-age histogram, with default flags.
async fn freshness(bench: &Bench, out: &mut String) {
    let streams = 100;
    let controllers = bench.replicas(streams).await;
    let adapter = bench.adapter(&controllers, &[]).await;
    let query = bench.external_query(&adapter);
    let delays = change_to_served(&controllers, streams, || served_value(query(0))).await;
    let pick = |p: f64| nearest_rank(&delays, p).as_secs_f64();
    let _ = writeln!(
        out,
        "| change -> served, client polling every 200 ms | {} | {:.2} | {:.2} | {:.2} |",
        delays.len(),
        pick(0.5),
        pick(0.99),
        pick(1.0)
    );

    let client = bench.client();
    let metrics = client.get(format!("{}/metrics", adapter.base)).bearer_auth(TOKEN).send().await.unwrap().text().await.unwrap();
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
    let options = options("serving");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let bench = runtime.block_on(Bench::new(adapter_binary!()));
    runtime.block_on(async {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Query load: {} req/s for {} s over HTTPS (HTTP/2, bearer token), open loop; 3 controller replicas.\n",
            options.rate, options.seconds
        );
        let load_columns = [
            "errors / sent",
            "achieved req/s",
            "adapter CPU %",
            "load generator CPU %",
            "host steal ms",
            "serving threads waiting for a core ms",
            "sent late p99 ms",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "max ms",
        ];
        let scale_columns = ["streams", "exposition MB/replica", "RSS MiB", "peak RSS MiB", "scrape round CPU ms"];
        table_header(&mut out, scale_columns.iter().chain(&load_columns).chain(&["security reviews"]));
        println!("{out}");
        for &streams in &options.streams {
            scale_row(&bench, streams, &options, &mut out).await;
        }
        let _ = writeln!(out, "\nThe same load without the metrics query (floor of the serving stack on this machine):\n");
        table_header(&mut out, ["requests"].iter().chain(&load_columns));
        floor_rows(&bench, &options, &mut out).await;
        let _ = writeln!(out, "\nFreshness with default flags (100 streams, 3 replicas):\n");
        table_header(&mut out, &["measure", "samples", "p50 s", "p99 s", "max s"]);
        freshness(&bench, &mut out).await;
        println!("\n{out}");
    });
}
