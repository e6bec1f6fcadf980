//! Logging and metrics plumbing shared by the services.
//!
//! Metric names follow `meter_<noun>_<verb>_total`; labels are bounded
//! (kind, reason code, topic, partition), never tenant ids or event ids.

mod internal_event;

use std::net::SocketAddr;

pub use internal_event::{InternalEvent, LabelValues, MetricFamily, MetricType, BUILD_INFO, METRICS};

use meter_config::{ListenAddr, LogConfig, LogFormat};
use prometheus::{Encoder, Registry, TextEncoder};
use tracing_subscriber::EnvFilter;

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot listen for /metrics on {addr}: {source} (is another service using the port? change metrics_listen)")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("metric registration: {0}")]
    Prometheus(#[from] prometheus::Error),
}

/// Installs the global tracing subscriber: JSON or text, filtered by
/// `RUST_LOG` when set, else by the configured level.
pub fn init_logging(config: &LogConfig) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match config.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// A registry with the `meter_build_info` gauge already in it.
pub fn registry(service: &str) -> Result<Registry, TelemetryError> {
    let registry = Registry::new();
    let build = BUILD_INFO.register_gauge_vec(&registry)?;
    build.with_label_values(&[service, env!("CARGO_PKG_VERSION")]).set(1);
    Ok(registry)
}

/// Renders the registry in the Prometheus text format.
pub fn render(registry: &Registry) -> String {
    let mut buffer = Vec::new();
    let _ = TextEncoder::new().encode(&registry.gather(), &mut buffer);
    String::from_utf8(buffer).unwrap_or_default()
}

/// Serves `GET /metrics` in the background, unless the address is disabled.
pub async fn serve_metrics(listen: ListenAddr, registry: Registry) -> Result<Option<SocketAddr>, TelemetryError> {
    let Some(addr) = listen.addr() else {
        return Ok(None);
    };
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| TelemetryError::Bind { addr, source })?;
    let bound = listener.local_addr().map_err(|source| TelemetryError::Bind { addr, source })?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let registry = registry.clone();
            async move { render(&registry) }
        }),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics endpoint stopped");
        }
    });
    tracing::info!(%bound, "serving /metrics");
    Ok(Some(bound))
}
