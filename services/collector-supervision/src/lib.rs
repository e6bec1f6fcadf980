//! The supervision collector (`meter collect supervision
//! --supervision-config FILE`): supervision check results become
//! check-result events, and scheduled runs that never reported become
//! MISSED events.
//!
//! Inputs, each mapped the same way ([`results::to_event`]):
//! - `POST /v1/actions/process-check-result`: Icinga 2's action body
//!   ([`icinga::parse_action`]), `Authorization: Bearer TOKEN`;
//! - `POST /nrdp/`: Nagios NRDP `submitcheck` with `XMLDATA` or `JSONDATA`
//!   ([`nrdp`]), form field `token`;
//! - optionally the Icinga 2 event stream (`[icinga]`, [`icinga::follow`]).
//!
//! Mapping (file format: `config/supervision.example.toml`): the host gives
//! tenant, subsidiary and domain (`[hosts]`, else `[[host_groups]]`
//! patterns); the service gives check id, name and frequency (`[checks]`);
//! exit status 0/1/2/3 is OK/WARNING/KO/UNKNOWN (hosts: UP is OK, DOWN and
//! UNREACHABLE are KO); the output is kept as the event's `output` without
//! its performance data, which is parsed and checked ([`perfdata`]); the
//! ticket is the payload's `ticket`, else what `ticket_pattern` finds in the
//! output. `event_id = run-<hash(source, host!service, execution time)>`:
//! the same run sent twice counts once. `executed_time = event_time` is the
//! execution end, else start, else the reception time (then a retry is a new
//! run: send execution times, or NRDP `checktime`); `scheduled_time` is the
//! deadline of the period the run counts for, when the check is scheduled.
//!
//! Each request is answered after the broker acknowledged what it published
//! (codes: [`http`]). Every minute, the schedule ([`schedule`]) is evaluated
//! over the lookback window against the runs on the check-result topic, and
//! missed runs are published ([`missed`]).

pub mod app;
pub mod config;
pub mod event_ids;
pub mod http;
pub mod icinga;
pub mod missed;
pub mod nrdp;
pub mod perfdata;
pub mod publish;
pub mod results;
pub mod schedule;

use std::net::SocketAddr;

use collector_runtime::CollectorMetrics;
use meter_config::MeterConfig;
use meter_kafka::KafkaError;

pub use config::{Settings, SupervisionConfig};
pub use app::AppState;
pub use http::{router, serve};
pub use publish::{Location, Publisher};
pub use missed::{publish_missed_once, MissedReport};
pub use schedule::{missed_runs, Schedule, ScheduledCheck, SeenRun};

/// The dead-letter component of this collector.
pub const COMPONENT: &str = "collector-supervision";
/// `source` label of `meter_collector_last_success_timestamp_seconds`.
pub const METRIC_SOURCE: &str = "supervision";

#[derive(Debug, thiserror::Error)]
pub enum SupervisionError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("invalid {path}: {message}")]
    Config { path: String, message: String },
    #[error("cannot listen on {addr}: {source} (is another process using the port? change `listen`)")]
    Bind { addr: String, source: std::io::Error },
    #[error("the HTTP endpoint stopped: {0}")]
    Serve(std::io::Error),
    #[error("Icinga request {url} failed: {source} (is Icinga reachable? check icinga.url and the TLS settings)")]
    Http { url: String, source: reqwest::Error },
    #[error("Icinga answered {status} to {url}: {body}")]
    Icinga { url: String, status: u16, body: String },
    #[error("reading {topic}: {message}")]
    Topic { topic: String, message: String },
    #[error(transparent)]
    Kafka(#[from] KafkaError),
}

/// Runs the collector until Ctrl-C: the HTTP endpoint on `listen`, the
/// missed-run evaluation every `missed.interval_seconds`, and the Icinga
/// event stream when `[icinga]` is set.
pub async fn run(meter: &MeterConfig, settings: Settings, metrics: CollectorMetrics) -> Result<(), SupervisionError> {
    let addr: SocketAddr = settings.listen.parse().map_err(|_| SupervisionError::Config {
        path: "the supervision configuration".into(),
        message: format!("listen must be host:port, got {:?}", settings.listen),
    })?;
    let producer = meter_kafka::producer(&meter.kafka)?;
    let publisher = Publisher::new(meter, producer, metrics);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| SupervisionError::Bind { addr: settings.listen.clone(), source })?;
    let bound = listener.local_addr().map_err(|source| SupervisionError::Bind { addr: settings.listen.clone(), source })?;
    let state = AppState::new(settings, publisher);
    tracing::info!(%bound, source = %state.settings().source, scheduled_checks = state.settings().schedule.checks.len(),
        icinga = ?state.settings().icinga.as_ref().map(|i| i.url.clone()), "supervision collector listening");
    let stream_state = state.clone();
    let stream = async move {
        if stream_state.settings().icinga.is_some() {
            icinga::follow(stream_state, std::future::pending()).await;
        }
        std::future::pending::<()>().await
    };
    tokio::select! {
        r = serve(listener, state.clone()) => r.map_err(SupervisionError::Serve),
        _ = missed::run_periodically(meter.clone(), state.clone()) => Ok(()),
        _ = stream => Ok(()),
        _ = tokio::signal::ctrl_c() => {
            tracing::info!("stopping");
            Ok(())
        }
    }
}
