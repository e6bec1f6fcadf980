//! Helpers for integration tests: the local stack, an isolated namespace per
//! test (topics, database, consumer groups, state folder), the `meter`
//! binary as a separate process, and readers for topics and ClickHouse.

pub mod scenario;

use std::collections::BTreeMap;
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
        // Test data is dated (DOMAIN.md's Januaries, 2024 scenarios): its
        // months stay open unless a test closes them (`meter periods close`,
        // or a shorter grace).
        config.aggregator.default_period_grace_days = 36_500;
        config.aggregator.flush_interval_ms = 300;
        config.aggregator.metrics_listen = meter_config::ListenAddr::disabled();
        config.sink.group_id = format!("test.{unique}.sink");
        config.sink.metrics_listen = meter_config::ListenAddr::disabled();
        config.sink.flush_interval_ms = 300;
        config.retry.max_delay_ms = 2000;
        config.collector.metrics_listen = meter_config::ListenAddr::disabled();
        config.price_book = repo_root().join("config/price-book.toml");
        config.tenants.insert("acme".into(), meter_config::TenantConfig { time_zone: "Europe/Paris".parse().expect("an IANA zone"), period_grace_days: None });
        create_topics(&config).await;
        let config_path = dir.path().join("meter.toml");
        std::fs::write(&config_path, toml::to_string(&config).expect("config serializes")).expect("write config");
        TestEnv { name: unique, dir, config, config_path }
    }

    /// Writes `self.config` back to the file the `meter` processes read.
    pub fn save_config(&self) {
        std::fs::write(&self.config_path, toml::to_string(&self.config).expect("config serializes")).expect("write config");
    }

    /// Runs `meter ARGS` with this test's config and waits for it, whatever its exit status.
    pub fn meter_status(&self, args: &[&str]) -> Output {
        Command::new(meter_bin())
            .arg("--config")
            .arg(&self.config_path)
            .args(args)
            .env("RUST_LOG", "warn")
            .current_dir(repo_root())
            .output()
            .expect("meter runs")
    }

    /// Runs `meter ARGS` with this test's config and waits for it.
    pub fn meter(&self, args: &[&str]) -> Output {
        let output = self.meter_status(args);
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

    /// Latest revision of each daily aggregate in ClickHouse, summed per
    /// (tenant, subsidiary, domain, kind, day), must equal `expected`.
    pub async fn assert_clickhouse_day_totals(&self, expected: &scenario::DayTotals) {
        let rows: Vec<(String, String, String, String, String, String, String, u64)> = self
            .clickhouse()
            .query(
                "SELECT tenant, subsidiary, domain, kind, toString(window_date), toString(sum(quantity)), toString(sum(cost)), sum(event_count) \
                 FROM aggregates FINAL WHERE period = 'DAY' GROUP BY tenant, subsidiary, domain, kind, window_date",
            )
            .fetch_all()
            .await
            .expect("query ClickHouse");
        let got: scenario::DayTotals = rows
            .into_iter()
            .map(|(t, s, d, k, day, q, c, n)| ((t, s, d, k, day), (q.parse().expect("decimal"), c.parse().expect("decimal"), n as i64)))
            .collect();
        compare_day_totals("ClickHouse", &got, expected);
    }

    /// The latest revision of each daily aggregate on the aggregate topic,
    /// summed per cell, must equal `expected`.
    pub fn assert_topic_day_totals(&self, expected: &scenario::DayTotals) {
        let mut latest: BTreeMap<String, meter_model::Aggregate> = BTreeMap::new();
        for (key, payload, _) in self.read_topic(&self.config.topics.aggregates) {
            let a: meter_model::Aggregate = meter_model::EventCodec::decode(&payload).expect("aggregate decodes");
            assert_eq!(key.as_deref(), Some(a.aggregate_id.as_str()), "aggregates are keyed by their id");
            match latest.get(&a.aggregate_id) {
                Some(b) if (b.revision, b.is_final) > (a.revision, a.is_final) => {}
                Some(b) if (b.revision, b.is_final) == (a.revision, a.is_final) => {
                    assert_eq!((b.quantity, b.cost, b.event_count), (a.quantity, a.cost, a.event_count),
                        "a repeated revision must carry the same content");
                }
                _ => {
                    latest.insert(a.aggregate_id.clone(), a);
                }
            }
        }
        let mut got = scenario::DayTotals::new();
        for a in latest.values().filter(|a| a.period == meter_model::Period::Day) {
            let e = got
                .entry((a.tenant.clone(), a.subsidiary.clone(), a.domain.clone(), a.kind.symbol().to_string(), a.window_label.clone()))
                .or_default();
            e.0 += a.quantity;
            e.1 += a.cost;
            e.2 += a.event_count;
        }
        compare_day_totals("the aggregate topic", &got, expected);
    }

    /// Every message on a topic, from the beginning: (key, payload, headers).
    /// Every message of `topic`, control records (the aggregator's clock,
    /// period closes on event topics) left out.
    pub fn read_topic(&self, topic: &str) -> Vec<(Option<String>, Vec<u8>, Vec<(String, String)>)> {
        read_all(&self.config, topic).into_iter().filter(|(_, _, headers)| !headers.iter().any(|(k, _)| k == meter_model::CONTROL_HEADER)).collect()
    }
}

fn compare_day_totals(place: &str, got: &scenario::DayTotals, expected: &scenario::DayTotals) {
    for (cell, want) in expected {
        let have = got.get(cell).unwrap_or_else(|| panic!("{cell:?} missing in {place}"));
        assert_eq!(have.0.normalize(), want.0.normalize(), "quantity of {cell:?} in {place}");
        assert_eq!(have.1.normalize(), want.1.normalize(), "cost of {cell:?} in {place}");
        assert_eq!(have.2, want.2, "event count of {cell:?} in {place}");
    }
    let extra: Vec<_> = got.keys().filter(|k| !expected.contains_key(*k)).collect();
    assert!(extra.is_empty(), "{place} has cells no event produced: {extra:?}");
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

/// A `meter` service process that a test kills and restarts at will, like a
/// supervisor (systemd, Kubernetes) would.
pub struct Supervised {
    args: Vec<String>,
    config_path: PathBuf,
    child: Option<Child>,
    pub starts: u32,
    pub kills: u32,
}

impl Supervised {
    pub fn start(env: &TestEnv, args: &[&str]) -> Supervised {
        let mut s = Supervised {
            args: args.iter().map(|a| a.to_string()).collect(),
            config_path: env.config_path.clone(),
            child: None,
            starts: 0,
            kills: 0,
        };
        s.ensure_running();
        s
    }

    /// Restarts the process if it exited (crashed or stopped).
    pub fn ensure_running(&mut self) {
        let exited = match self.child.as_mut() {
            None => true,
            Some(child) => child.try_wait().map(|s| s.is_some()).unwrap_or(true),
        };
        if exited {
            let child = Command::new(meter_bin())
                .arg("--config")
                .arg(&self.config_path)
                .args(&self.args)
                // METER_TEST_SERVICE_LOG=info shows the services' logs when a test needs looking into.
                .env("RUST_LOG", std::env::var("METER_TEST_SERVICE_LOG").unwrap_or_else(|_| "warn".into()))
                .current_dir(repo_root())
                .stdout(Stdio::null())
                .spawn()
                .expect("meter starts");
            self.child = Some(child);
            self.starts += 1;
        }
    }

    /// SIGKILL: no flush, no goodbye.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            self.kills += 1;
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs a stack.sh subcommand (e.g. `restart-broker`, `stop clickhouse`).
pub fn stack(args: &[&str]) {
    let status = Command::new("bash")
        .arg(repo_root().join("scripts/stack.sh"))
        .args(args)
        .stdout(Stdio::null())
        .status()
        .expect("bash runs scripts/stack.sh");
    assert!(status.success(), "scripts/stack.sh {args:?} failed");
}

/// What a publishing thread needs of a [`TestEnv`].
pub struct PublishTarget {
    pub config_path: PathBuf,
    pub dir: PathBuf,
}

/// Publishes JSON lines in `chunks` files, one collector process per chunk,
/// retrying a chunk whose collector failed (the broker may be restarting):
/// a re-sent chunk is harmless since events count once.
pub fn publish_in_chunks(env: &PublishTarget, kind: &str, lines: &[String], chunks: usize, pause: Duration) -> u32 {
    let mut retries = 0;
    let size = lines.len().div_ceil(chunks.max(1)).max(1);
    for (i, chunk) in lines.chunks(size).enumerate() {
        let path = env.dir.join(format!("{kind}-chunk-{i}.jsonl"));
        std::fs::write(&path, chunk.join("\n") + "\n").expect("write chunk");
        let mut attempts = 0;
        loop {
            let output = Command::new(meter_bin())
                .arg("--config")
                .arg(&env.config_path)
                .args(["collect", "file", "--kind", kind])
                .arg(&path)
                .env("RUST_LOG", "error")
                .current_dir(repo_root())
                .output()
                .expect("collector runs");
            if output.status.success() {
                break;
            }
            attempts += 1;
            retries += 1;
            assert!(attempts < 30, "collector kept failing on {}: {}", path.display(), String::from_utf8_lossy(&output.stderr));
            std::thread::sleep(Duration::from_secs(1));
        }
        std::thread::sleep(pause);
    }
    retries
}

/// Waits until consumer group `group` has committed, on every partition of
/// `topics`, the end of the partition, and the ends stayed the same between
/// two looks. Panics after `timeout`.
pub fn wait_caught_up(config: &MeterConfig, group: &str, topics: &[&str], timeout: Duration) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &config.kafka.brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("probe consumer");
    let deadline = std::time::Instant::now() + timeout;
    let mut previous: Option<Vec<(String, i32, i64)>> = None;
    loop {
        let mut ends = Vec::new();
        let mut list = rdkafka::TopicPartitionList::new();
        for topic in topics {
            let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).expect("metadata");
            for p in metadata.topics()[0].partitions() {
                let (_, high) = consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(10)).unwrap_or((0, -1));
                ends.push((topic.to_string(), p.id(), high));
                list.add_partition(topic, p.id());
            }
        }
        let committed = consumer.committed_offsets(list, Duration::from_secs(10)).ok();
        let caught_up = committed.as_ref().is_some_and(|c| {
            ends.iter().all(|(t, p, high)| {
                *high <= 0
                    || c.find_partition(t, *p).is_some_and(|e| matches!(e.offset(), rdkafka::Offset::Offset(o) if o >= *high))
            })
        });
        if caught_up && previous.as_ref() == Some(&ends) {
            return;
        }
        previous = Some(ends.clone());
        assert!(std::time::Instant::now() < deadline, "group {group} did not catch up on {topics:?} in {timeout:?}: ends {ends:?}, committed {committed:?}");
        std::thread::sleep(Duration::from_millis(1500));
    }
}
