use clap::Parser;
use pravega_metrics_adapter::config::{Config, LogFormat};
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let config = Config::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let subscriber = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Json => subscriber.json().init(),
        LogFormat::Text => subscriber.init(),
    }
    // ring is the one provider built in; installing it explicitly keeps any
    // other provider a dependency may enable from being picked at random.
    if rustls::crypto::ring::default_provider().install_default().is_err() {
        tracing::error!("a rustls crypto provider was already installed");
        return ExitCode::FAILURE;
    }
    pravega_metrics_adapter::resources::tune_allocator();
    let runtime =
        match tokio::runtime::Builder::new_multi_thread().worker_threads(config.serving.serving_threads.into()).enable_all().build() {
            Ok(runtime) => runtime,
            Err(error) => {
                tracing::error!(%error, "cannot start the Tokio runtime");
                return ExitCode::FAILURE;
            }
        };
    match runtime.block_on(pravega_metrics_adapter::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // The error and each of its causes, outermost first.
            let mut message = error.to_string();
            let mut cause = std::error::Error::source(&error);
            while let Some(inner) = cause {
                message.push_str(": ");
                message.push_str(&inner.to_string());
                cause = inner.source();
            }
            tracing::error!(error = %message, "exiting");
            ExitCode::FAILURE
        }
    }
}
