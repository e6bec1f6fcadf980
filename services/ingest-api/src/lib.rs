//! The ingest API (issue 4, "Ingest API").
//!
//! - [`api`]: `meter ingest-api --api-config FILE`, an HTTP service taking
//!   CloudEvents 1.0 in JSON ([`cloudevents`]: one event, or a batch) from
//!   collectors with bearer tokens ([`config`]), checking every event of a
//!   request before publishing any, and answering once the broker has
//!   acknowledged them all. Steps and status codes: [`api`].
//!
//! It publishes with the collectors' publisher (`collector-runtime`): Avro
//! single-object encoding on the kind's event topic, keyed by tenant, with
//! the idempotent producer, counted in the `meter_collector_*` metrics (kind
//! label). Replays of history are `meter collect file --rate N`.

pub mod api;
pub mod cloudevents;
pub mod config;

use std::future::Future;
use std::net::SocketAddr;

use meter_config::MeterConfig;
use tokio::net::TcpListener;

pub use api::{router, AppState, IngestMetrics};
pub use config::IngestApiConfig;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("invalid {path}: {message} (every key is documented in services/ingest-api/ingest-api.example.toml)")]
    Config { path: String, message: String },
    #[error("cannot listen on {addr}: {source} (is another service using the port? change `listen`)")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("the ingest API stopped: {0}")]
    Serve(std::io::Error),
    #[error(transparent)]
    Kafka(#[from] meter_kafka::KafkaError),
    #[error(transparent)]
    Telemetry(#[from] meter_telemetry::TelemetryError),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// Serves the API on `listener` until the process ends.
pub async fn serve(listener: TcpListener, state: AppState) -> Result<(), IngestError> {
    axum::serve(listener, router(state)).await.map_err(IngestError::Serve)
}

/// Serves the API until `shutdown` completes, then lets requests in progress
/// finish (their events acknowledged and answered).
pub async fn serve_until(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), IngestError> {
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown).await.map_err(IngestError::Serve)
}

/// `meter ingest-api`: loads the API settings, serves /metrics and the API
/// until Ctrl-C or SIGTERM.
pub async fn run_service(config: &MeterConfig, api_config_path: &std::path::Path) -> Result<(), IngestError> {
    let api = IngestApiConfig::load(api_config_path)?;
    let registry = meter_telemetry::registry("ingest-api")?;
    meter_telemetry::serve_metrics(api.metrics_listen, registry.clone()).await?;
    let metrics = IngestMetrics::register(&registry)?;
    let producer = meter_kafka::producer(&config.kafka)?;
    let state = AppState::new(config, &api, producer, metrics)
        .map_err(|e| match e {
            IngestError::Config { message, .. } => IngestError::Config { path: api_config_path.display().to_string(), message },
            other => other,
        })?;
    let addr = api.listen;
    let listener = TcpListener::bind(addr).await.map_err(|source| IngestError::Bind { addr, source })?;
    let bound = listener.local_addr().map_err(|source| IngestError::Bind { addr, source })?;
    tracing::info!(%bound, collectors = api.collectors.len(), "ingest API listening (POST /v1/events)");
    serve_until(listener, state, shutdown_signal()).await?;
    tracing::info!("ingest API stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
