//! generator: writes events into a Pravega stream at a rate following a
//! sinusoid, or with `--simulate` models the stream's auto-scaling and
//! serves a Pravega-controller `/prometheus` endpoint without any Pravega.
//! Built without the `pravega` feature, it runs only `--simulate`.

#[cfg_attr(not(feature = "pravega"), path = "without_pravega.rs")]
mod pravega;

use clap::Parser;
use generator::rate::Sinusoid;
use generator::simulate::{ScalingPolicy, StreamModel};
use pravega_workload::{http, process};
use prom_text::{Counter, Exposition, Gauge, Timer};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Parser)]
#[command(name = "generator", version, about = "Sinusoidal event load into a Pravega stream (or a simulated controller).")]
pub struct Args {
    /// Pravega controller gRPC endpoint.
    #[arg(long, visible_alias = "uri", env = "GENERATOR_CONTROLLER_URI", default_value = "tcp://127.0.0.1:9090")]
    pub controller_uri: String,
    #[arg(long, env = "GENERATOR_SCOPE", default_value = "test")]
    pub scope: String,
    #[arg(long, env = "GENERATOR_STREAM", default_value = "stream")]
    pub stream: String,
    /// Scaling policy: events/s per segment above which segments split
    /// (0: a fixed number of segments, --min-segments).
    #[arg(long, env = "GENERATOR_SCALING_RATE", default_value_t = 800)]
    pub scaling_rate: u32,
    /// Scaling policy: segments a hot segment splits into.
    #[arg(long, env = "GENERATOR_SCALE_FACTOR", default_value_t = 2)]
    pub scale_factor: u32,
    /// Scaling policy: the stream never has fewer segments.
    #[arg(long, env = "GENERATOR_MIN_SEGMENTS", default_value_t = 1)]
    pub min_segments: u32,
    /// Lowest event rate of the sinusoid (events/s).
    #[arg(long, env = "GENERATOR_MIN_RATE", default_value_t = 100.0)]
    pub min_rate: f64,
    /// Highest event rate of the sinusoid (events/s).
    #[arg(long, env = "GENERATOR_MAX_RATE", default_value_t = 8000.0)]
    pub max_rate: f64,
    /// Period of the sinusoid (e.g. 10m, 120s).
    #[arg(long, env = "GENERATOR_PERIOD", value_parser = humantime::parse_duration, default_value = "10m")]
    pub period: Duration,
    /// Bytes per event (at least the 16-byte header).
    #[arg(long, env = "GENERATOR_EVENT_SIZE", default_value_t = 100)]
    pub event_size: usize,
    /// Distinct routing keys, used in turn so segments share the load.
    #[arg(long, env = "GENERATOR_ROUTING_KEYS", default_value_t = 1000)]
    pub routing_keys: u32,
    /// Address for /metrics, /livez, /readyz (and /prometheus with --simulate).
    #[arg(long, env = "GENERATOR_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// No Pravega: model the stream's auto-scaling and serve it at /prometheus
    /// in the Pravega controller's format.
    #[arg(long, env = "GENERATOR_SIMULATE")]
    pub simulate: bool,
    /// With --simulate: how long a segment must stay hot (or cold) before the
    /// simulated controller splits (or merges).
    #[arg(long, env = "GENERATOR_SCALE_HOLD", value_parser = humantime::parse_duration, default_value = "30s")]
    pub scale_hold: Duration,
    /// With --simulate: when the simulated stream is created; until then the
    /// controller reports no series for it, as before a createStream.
    #[arg(long, env = "GENERATOR_CREATE_AFTER", value_parser = humantime::parse_duration, default_value = "0s")]
    pub create_after: Duration,
}

impl Args {
    pub fn shape(&self) -> Sinusoid {
        Sinusoid { min: self.min_rate, max: self.max_rate, period: self.period }
    }

    fn validate(&self) -> Result<(), String> {
        if !(self.min_rate >= 0.0 && self.max_rate >= self.min_rate) {
            return Err(format!("need 0 <= --min-rate ({}) <= --max-rate ({})", self.min_rate, self.max_rate));
        }
        if self.period.is_zero() || self.scale_factor < 2 || self.min_segments == 0 {
            return Err("--period and --min-segments must be positive, --scale-factor at least 2".into());
        }
        if self.simulate && self.scaling_rate == 0 {
            return Err("--simulate models scaling by rate: --scaling-rate must be positive".into());
        }
        Ok(())
    }
}

/// What the generator reports at /metrics.
#[derive(Default)]
pub struct Metrics {
    pub target_rate: Gauge,
    pub actual_rate: Gauge,
    pub events_written: Counter,
    pub write_errors: Counter,
    pub write_latency: Timer,
    pub segments: Gauge,
}

impl Metrics {
    fn render(&self) -> String {
        Exposition::default()
            .gauge("generator_target_rate", "Events per second the sinusoid asks for now.", self.target_rate.get())
            .gauge("generator_actual_rate", "Events per second acknowledged over the last second.", self.actual_rate.get())
            .counter("generator_events_written_total", "Events acknowledged by Pravega.", &self.events_written)
            .counter("generator_write_errors_total", "Events Pravega failed to write.", &self.write_errors)
            .timer("generator_write_latency_seconds", "Time from write to acknowledgement.", &self.write_latency)
            .gauge("generator_simulated_segments", "Segments of the simulated stream (--simulate only).", self.segments.get())
            .finish()
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    process::main(|| run(args))
}

async fn run(args: Args) -> process::Outcome {
    args.validate()?;
    let client_config = if args.simulate { None } else { Some(pravega::client_config(&args.controller_uri)?) };
    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(AtomicBool::new(args.simulate));
    let render = {
        let m = metrics.clone();
        move || m.render()
    };
    let mut router = http::router(render, ready.clone());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let writer = match client_config {
        None => {
            let simulation = Arc::new(Mutex::new(StreamModel::new(
                ScalingPolicy {
                    target_rate: f64::from(args.scaling_rate),
                    scale_factor: args.scale_factor,
                    min_segments: args.min_segments,
                },
                args.scale_hold,
            )));
            let started = Instant::now();
            let (scope, stream, model, create_after) = (args.scope.clone(), args.stream.clone(), simulation.clone(), args.create_after);
            let host = generator::simulate::host_tag();
            router = router.route(
                "/prometheus",
                axum::routing::get(move || {
                    let uptime = started.elapsed();
                    let body =
                        model.lock().map(|m| m.exposition(&scope, &stream, &host, uptime, uptime >= create_after)).unwrap_or_default();
                    http::text(body)
                }),
            );
            tokio::spawn(simulate(args.clone(), simulation, metrics.clone(), started, stopped.clone()));
            tracing::info!(scope = %args.scope, stream = %args.stream, "simulating a Pravega controller at /prometheus");
            None
        }
        Some(config) => {
            let (args, metrics, ready, stopped, stop) = (args.clone(), metrics.clone(), ready.clone(), stopped.clone(), stop.clone());
            Some(tokio::spawn(async move {
                let written = pravega::write(config, &args, &metrics, &ready, stopped).await;
                let _ = stop.send(true);
                written
            }))
        }
    };
    let server = tokio::spawn(http::serve(args.listen, router, stopped.clone()));
    let mut writer_stopped = stopped.clone();
    tokio::select! {
        _ = shutdown_signal::wait() => {}
        _ = writer_stopped.wait_for(|v| *v) => {}
    }
    let _ = stop.send(true);
    // The writer's flush finishes before the process exits.
    let written = match writer {
        Some(writer) => writer.await?,
        None => Ok(()),
    };
    server.await??;
    Ok(written?)
}

/// Drives the simulated stream with the sinusoidal rate.
async fn simulate(
    args: Args,
    model: Arc<Mutex<StreamModel>>,
    metrics: Arc<Metrics>,
    started: Instant,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let shape = args.shape();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped.wait_for(|v| *v) => return,
        }
        let now = started.elapsed();
        let rate = shape.rate_at(now);
        metrics.target_rate.set(rate);
        metrics.actual_rate.set(rate);
        let Ok(mut model) = model.lock() else { return };
        if let Some(event) = model.observe(now, rate) {
            tracing::info!(?event, rate = rate.round(), segments = model.segments(), "simulated scale");
        }
        metrics.segments.set(f64::from(model.segments()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(flags: &[&str]) -> Args {
        Args::parse_from(std::iter::once(&"generator").chain(flags))
    }

    #[test]
    fn flag_checks() {
        assert_eq!(args(&[]).validate(), Ok(()));
        assert_eq!(args(&["--scaling-rate", "0", "--min-segments", "4"]).validate(), Ok(()), "fixed segments");
        for bad in [
            &["--min-rate", "10", "--max-rate", "5"][..],
            &["--min-rate=-1"],
            &["--max-rate", "NaN"],
            &["--scale-factor", "1"],
            &["--period", "0s"],
            &["--min-segments", "0"],
            &["--simulate", "--scaling-rate", "0"],
        ] {
            assert!(args(bad).validate().is_err(), "{bad:?} accepted");
        }
    }
}
