//! Publishes the sink benchmark's input: N aggregates on the aggregate topic
//! (keyed by id) and N events on the event topics (keyed by tenant, one third
//! of each kind), from `benches/common`. Reads the configuration as every
//! service does (`--config FILE` or `METER_CONFIG`, then `METER_*`), so point
//! it at a benchmark broker, never at a shared one.
//!
//!   cargo run --release -p sink-clickhouse --example publish_sink_input -- [--config FILE] AGGREGATES [EVENTS]

#[path = "../benches/common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::time::Instant;

use futures::stream::{self, StreamExt};
use meter_model::EventCodec;
use rdkafka::producer::FutureRecord;

/// Messages awaiting the broker's acknowledgement at once.
const IN_FLIGHT: usize = 2000;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1).peekable();
    let mut config_path = std::env::var_os("METER_CONFIG").map(PathBuf::from);
    let mut counts = Vec::new();
    while let Some(arg) = args.next() {
        if arg == "--config" {
            config_path = args.next().map(PathBuf::from);
        } else {
            counts.push(arg.parse::<usize>()?);
        }
    }
    let aggregates = counts.first().copied().unwrap_or(200_000);
    let events = counts.get(1).copied().unwrap_or(aggregates);
    let config = meter_config::MeterConfig::load(config_path.as_deref())?;
    let producer = meter_kafka::producer(&config.kafka)?;
    let started = Instant::now();
    let messages = (0..aggregates)
        .map(|i| {
            let a = common::aggregate(i);
            (config.topics.aggregates.clone(), a.aggregate_id.clone(), EventCodec::encode(&a))
        })
        .chain((0..events).map(|i| {
            let e = common::event(i);
            (config.topics.event(e.kind()).to_string(), e.header().tenant.clone(), EventCodec::encode_event(&e))
        }));
    let producer = &producer;
    let mut sent = stream::iter(messages)
        .map(|(topic, key, payload)| async move {
            let payload = payload?;
            producer
                .send(FutureRecord::to(&topic).key(&key).payload(&payload), std::time::Duration::from_secs(120))
                .await
                .map_err(|(e, _)| format!("publishing to {topic}: {e}"))?;
            Ok::<(), Box<dyn std::error::Error>>(())
        })
        .buffer_unordered(IN_FLIGHT);
    let mut done = 0usize;
    while let Some(result) = sent.next().await {
        result?;
        done += 1;
    }
    eprintln!(
        "published {aggregates} aggregates and {events} events to {} in {:.1} s",
        config.kafka.brokers,
        started.elapsed().as_secs_f64()
    );
    assert_eq!(done, aggregates + events);
    Ok(())
}
