//! Helpers for integration tests: the local stack, an isolated namespace per
//! test (topics, database, consumer groups, state folder), the `meter`
//! binary as a separate process, and readers for topics and ClickHouse.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use meter_config::MeterConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::ClientConfig;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// Starts the local stack once per test binary (idempotent when it runs).
pub fn ensure_stack() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        let status = Command::new("bash")
            .arg(repo_root().join("scripts/stack.sh"))
            .arg("up")
            .stdout(Stdio::null())
            .status()
            .expect("bash runs scripts/stack.sh");
        assert!(status.success(), "scripts/stack.sh up failed: read .stack/logs/*.log");
    });
}

/// The `meter` binary built by `cargo build` (scripts/test.sh builds it first).
pub fn meter_bin() -> PathBuf {
    if let Ok(path) = std::env::var("METER_BIN") {
        return PathBuf::from(path);
    }
    let target = std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| repo_root().join("target"));
    let bin = target.join("debug/meter");
    assert!(bin.exists(), "{} is missing: run `cargo build --bin meter` first", bin.display());
    bin
}

/// An isolated namespace on the shared servers.
pub struct TestEnv {
    pub name: String,
    pub dir: tempfile::TempDir,
    pub config: MeterConfig,
    pub config_path: PathBuf,
}

impl TestEnv {
    /// Creates topics (3 partitions each) and a config file for this test.
    pub async fn new(label: &str) -> TestEnv {
        ensure_stack();
        let unique = format!(
            "{label}_{}_{}",
            std::process::id(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis() % 1_000_000_000
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = MeterConfig::default();
        let t = &mut config.topics;
        for (topic, suffix) in [
            (&mut t.vm_usage, "events.vm-usage"),
            (&mut t.check_result, "events.check-result"),
            (&mut t.ticket_time, "events.ticket-time"),
            (&mut t.dead_letters, "dead-letters"),
            (&mut t.late_events, "late-events"),
            (&mut t.aggregates, "aggregates"),
        ] {
            *topic = format!("test.{unique}.{suffix}");
        }
        config.clickhouse.database = format!("test_{unique}");
        config.aggregator.group_id = format!("test.{unique}.aggregator");
        config.aggregator.state_dir = dir.path().join("state");
        config.aggregator.flush_interval_ms = 300;
        config.aggregator.metrics_listen = String::new();
        config.sink.group_id = format!("test.{unique}.sink");
        config.sink.metrics_listen = String::new();
        config.sink.flush_interval_ms = 300;
        config.sink.max_backoff_ms = 2000;
        config.collector.metrics_listen = String::new();
        config.price_book = repo_root().join("config/price-book.toml");
        config.tenants.insert("acme".into(), meter_config::TenantConfig { time_zone: "Europe/Paris".into() });
        create_topics(&config).await;
        let config_path = dir.path().join("meter.toml");
        std::fs::write(&config_path, toml::to_string(&config).expect("config serializes")).expect("write config");
        TestEnv { name: unique, dir, config, config_path }
    }

    /// Runs `meter ARGS` with this test's config and waits for it.
    pub fn meter(&self, args: &[&str]) -> Output {
        let output = Command::new(meter_bin())
            .arg("--config")
            .arg(&self.config_path)
            .args(args)
            .env("RUST_LOG", "warn")
            .current_dir(repo_root())
            .output()
            .expect("meter runs");
        if !output.status.success() {
            panic!(
                "meter {args:?} failed ({}):\n{}\n{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        output
    }

    /// Starts `meter ARGS` in the background.
    pub fn spawn_meter(&self, args: &[&str]) -> Child {
        Command::new(meter_bin())
            .arg("--config")
            .arg(&self.config_path)
            .args(args)
            .env("RUST_LOG", "warn")
            .current_dir(repo_root())
            .stdout(Stdio::null())
            .spawn()
            .expect("meter starts")
    }

    pub fn clickhouse(&self) -> clickhouse::Client {
        sink_clickhouse::client(&self.config.clickhouse).with_database(&self.config.clickhouse.database)
    }

    /// Every message on a topic, from the beginning: (key, payload, headers).
    pub fn read_topic(&self, topic: &str) -> Vec<(Option<String>, Vec<u8>, Vec<(String, String)>)> {
        read_all(&self.config, topic)
    }
}

async fn create_topics(config: &MeterConfig) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &config.kafka.brokers)
        .create()
        .expect("admin client");
    let t = &config.topics;
    let names = [&t.vm_usage, &t.check_result, &t.ticket_time, &t.dead_letters, &t.late_events, &t.aggregates];
    let topics: Vec<NewTopic> = names.iter().map(|n| NewTopic::new(n, 3, TopicReplication::Fixed(1))).collect();
    let results = admin.create_topics(&topics, &AdminOptions::new()).await.expect("create topics");
    for r in results {
        if let Err((topic, code)) = r {
            assert_eq!(code, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists, "creating {topic}");
        }
    }
}

/// Reads a topic from the start to its current end.
pub fn read_all(config: &MeterConfig, topic: &str) -> Vec<(Option<String>, Vec<u8>, Vec<(String, String)>)> {
    use rdkafka::message::Headers;
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &config.kafka.brokers)
        .set("group.id", format!("reader.{topic}.{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("reader");
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).expect("metadata");
    let partitions: Vec<i32> = metadata.topics()[0].partitions().iter().map(|p| p.id()).collect();
    let mut list = rdkafka::TopicPartitionList::new();
    let mut ends = Vec::new();
    for p in &partitions {
        let (low, high) = consumer.fetch_watermarks(topic, *p, Duration::from_secs(10)).expect("watermarks");
        if high > low {
            list.add_partition_offset(topic, *p, rdkafka::Offset::Offset(low)).expect("partition");
            ends.push((*p, high));
        }
    }
    let mut out = Vec::new();
    if ends.is_empty() {
        return out;
    }
    consumer.assign(&list).expect("assign");
    let mut remaining: std::collections::HashMap<i32, i64> = ends.into_iter().collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !remaining.is_empty() && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(500)) {
            let headers = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| (h.key.to_string(), String::from_utf8_lossy(h.value.unwrap_or_default()).to_string()))
                        .collect()
                })
                .unwrap_or_default();
            out.push((m.key().map(|k| String::from_utf8_lossy(k).to_string()), m.payload().unwrap_or_default().to_vec(), headers));
            if let Some(end) = remaining.get(&m.partition()) {
                if m.offset() + 1 >= *end {
                    remaining.remove(&m.partition());
                }
            }
        }
    }
    assert!(remaining.is_empty(), "timed out reading {topic}: partitions {remaining:?} not read to the end");
    out
}
