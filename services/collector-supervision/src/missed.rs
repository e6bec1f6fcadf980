//! Publishing MISSED runs: the runs seen are read back from the check-result
//! topic itself (from every source: a check recorded by hand through the
//! file collector counts too), so a restart, a second instance or a cron run
//! of `--once-missed` sees the same runs. MISSED events this source already
//! published are read back the same way and not published again (and would
//! count once anyway: their ids are derived from check and deadline).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use collector_runtime::CollectorMetrics;
use meter_config::{KafkaConfig, MeterConfig};
use meter_model::{CheckResult, CheckStatus, Event, EventCodec, EventKind};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::ClientConfig;

use crate::config::Settings;
use crate::app::AppState;
use crate::publish::Publisher;
use crate::schedule::{missed_runs, Schedule, SeenRun};
use crate::SupervisionError;

/// The runs of scheduled checks and the MISSED events of this source found
/// on the check-result topic, kept up to date by [`RunLog::catch_up`].
pub struct RunLog {
    consumer: BaseConsumer,
    topic: String,
    source: String,
    /// (tenant, check id, host) of the scheduled checks.
    tracked: HashSet<(String, String, String)>,
    /// Next offset to read, per partition.
    next: HashMap<i32, i64>,
    runs: HashSet<SeenRun>,
    published_missed: HashSet<String>,
}

fn topic_error(topic: &str, e: impl std::fmt::Display) -> SupervisionError {
    SupervisionError::Topic { topic: topic.to_string(), message: e.to_string() }
}

impl RunLog {
    /// A reader of `topic` from its beginning (nothing read yet).
    pub fn open(kafka: &KafkaConfig, topic: &str, schedule: &Schedule) -> Result<Self, SupervisionError> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &kafka.brokers)
            .set("group.id", format!("meter-supervision-missed-{}", schedule.source))
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest");
        for (k, v) in &kafka.properties {
            config.set(k, v);
        }
        let consumer: BaseConsumer = config.create().map_err(|e| topic_error(topic, e))?;
        Ok(RunLog {
            consumer,
            topic: topic.to_string(),
            source: schedule.source.clone(),
            tracked: schedule.checks.iter().map(|c| (c.tenant.clone(), c.check_id.clone(), c.host.clone())).collect(),
            next: HashMap::new(),
            runs: HashSet::new(),
            published_missed: HashSet::new(),
        })
    }

    /// Reads what was added to the topic up to its end as of now. Blocking.
    pub fn catch_up(&mut self, timeout: Duration) -> Result<u64, SupervisionError> {
        let topic = self.topic.clone();
        let deadline = Instant::now() + timeout;
        let metadata = self.consumer.fetch_metadata(Some(&topic), timeout).map_err(|e| topic_error(&topic, e))?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .filter(|t| t.name() == topic)
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if partitions.is_empty() {
            return Err(topic_error(&topic, "the topic does not exist (scripts/stack.sh up creates it)"));
        }
        let mut ends = HashMap::new();
        let mut list = rdkafka::TopicPartitionList::new();
        for p in &partitions {
            let (low, high) = self.consumer.fetch_watermarks(&topic, *p, timeout).map_err(|e| topic_error(&topic, e))?;
            let from = self.next.get(p).copied().unwrap_or(low).max(low);
            self.next.insert(*p, from);
            if high > from {
                ends.insert(*p, high);
                list.add_partition_offset(&topic, *p, rdkafka::Offset::Offset(from)).map_err(|e| topic_error(&topic, e))?;
            }
        }
        if ends.is_empty() {
            return Ok(0);
        }
        self.consumer.assign(&list).map_err(|e| topic_error(&topic, e))?;
        let mut read = 0;
        while !ends.is_empty() {
            if Instant::now() > deadline {
                return Err(topic_error(&topic, format!("reading to the end timed out after {timeout:?}")));
            }
            match self.consumer.poll(Duration::from_millis(500)) {
                Some(Ok(m)) => {
                    read += 1;
                    let (p, offset) = (m.partition(), m.offset());
                    self.next.insert(p, offset + 1);
                    // Control records (the aggregator's clock, period closes) are not runs.
                    let control = meter_kafka::is_control(&m);
                    let decoded = m.payload().filter(|_| !control).and_then(|payload| match EventCodec::decode_event(EventKind::CheckResult, payload) {
                        Ok(Event::CheckResult(c)) => Some(c),
                        _ => None,
                    });
                    if let Some(c) = decoded {
                        self.record(&c);
                    }
                    if ends.get(&p).is_some_and(|end| offset + 1 >= *end) {
                        ends.remove(&p);
                    }
                }
                Some(Err(e)) => return Err(topic_error(&topic, e)),
                None => {}
            }
        }
        self.consumer.unassign().map_err(|e| topic_error(&topic, e))?;
        Ok(read)
    }

    /// Takes a check result into account (read back, or just published).
    pub fn record(&mut self, c: &CheckResult) {
        if c.status == CheckStatus::Missed {
            if c.header.source == self.source {
                self.published_missed.insert(c.header.event_id.clone());
            }
        } else if self.tracked.contains(&(c.header.tenant.clone(), c.check_id.clone(), c.target.clone())) {
            if let Some(run) = SeenRun::of(c) {
                self.runs.insert(run);
            }
        }
    }

    pub fn runs(&self) -> Vec<SeenRun> {
        self.runs.iter().cloned().collect()
    }

    pub fn already_published(&self, event_id: &str) -> bool {
        self.published_missed.contains(event_id)
    }

    /// Forgets runs executed before `before` (no window needs them any more).
    pub fn prune(&mut self, before: DateTime<Utc>) {
        self.runs.retain(|r| r.executed_time >= before);
    }
}

/// What one evaluation of the schedule did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissedReport {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// Scheduled runs found missed in the window.
    pub missed: usize,
    /// Of those, published now (the others were on the topic already).
    pub published: usize,
    /// Messages read from the check-result topic.
    pub messages_read: u64,
}

impl std::fmt::Display for MissedReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "deadlines from {} to {}: {} missed runs, {} published now, {} already published",
            self.from.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            self.to.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            self.missed,
            self.published,
            self.missed - self.published
        )
    }
}

const READ_TIMEOUT: Duration = Duration::from_secs(120);

/// Catches up with the topic, then publishes the runs missed with a deadline
/// in the lookback window before `now` that are not published yet.
async fn evaluate(
    log: RunLog,
    settings: &Settings,
    publisher: &Publisher,
    now: DateTime<Utc>,
) -> (Option<RunLog>, Result<MissedReport, SupervisionError>) {
    let topic = log.topic.clone();
    let (mut log, read) = match tokio::task::spawn_blocking(move || {
        let mut log = log;
        let read = log.catch_up(READ_TIMEOUT);
        (log, read)
    })
    .await
    {
        Ok(done) => done,
        Err(e) => return (None, Err(topic_error(&topic, format!("the topic reader stopped: {e}")))),
    };
    let messages_read = match read {
        Ok(n) => n,
        Err(e) => return (Some(log), Err(e)),
    };
    let from = now - chrono::Duration::hours(settings.missed.lookback_hours as i64);
    let all = missed_runs(&settings.schedule, &log.runs(), from, now);
    let missed = all.len();
    let fresh: Vec<CheckResult> = all.into_iter().filter(|m| !log.already_published(&m.header.event_id)).collect();
    let published = fresh.len();
    if let Err(e) = publisher.publish(fresh.clone()).await {
        return (Some(log), Err(e.into()));
    }
    for m in &fresh {
        log.record(m);
        tracing::warn!(tenant = %m.header.tenant, check_id = %m.check_id, host = %m.target,
            deadline = %m.header.event_time.to_rfc3339(), "scheduled check missed");
    }
    if let Some(oldest) = settings.schedule.earliest_window_start(from) {
        log.prune(oldest);
    }
    (Some(log), Ok(MissedReport { from, to: now, missed, published, messages_read }))
}

/// One evaluation, for tests and cron (`meter collect supervision --once-missed --now T`).
pub async fn publish_missed_once(
    meter: &MeterConfig,
    settings: &Settings,
    metrics: &CollectorMetrics,
    now: DateTime<Utc>,
) -> Result<MissedReport, SupervisionError> {
    let producer = meter_kafka::producer(&meter.kafka)?;
    let publisher = Publisher::new(meter, producer, metrics.clone());
    let log = RunLog::open(&meter.kafka, &meter.topics.check_result, &settings.schedule)?;
    evaluate(log, settings, &publisher, now).await.1
}

/// Evaluates the schedule every `missed.interval_seconds`, forever; errors
/// (broker down) are logged and the next tick tries again.
pub async fn run_periodically(meter: MeterConfig, state: AppState) {
    let settings = state.settings();
    if settings.schedule.checks.is_empty() || !settings.missed.enabled {
        return std::future::pending().await;
    }
    let mut log = None;
    let mut ticks = tokio::time::interval(Duration::from_secs(settings.missed.interval_seconds));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let current = match log.take() {
            Some(l) => l,
            None => match RunLog::open(&meter.kafka, &meter.topics.check_result, &settings.schedule) {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the check-result topic; missed runs not evaluated");
                    continue;
                }
            },
        };
        let (back, result) = evaluate(current, settings, state.publisher(), Utc::now()).await;
        log = back;
        match result {
            Ok(report) if report.published > 0 => tracing::info!(%report, "missed runs published"),
            Ok(report) => tracing::debug!(%report, "schedule evaluated"),
            Err(e) => tracing::error!(error = %e, "missed runs not evaluated; next try in one interval"),
        }
    }
}
