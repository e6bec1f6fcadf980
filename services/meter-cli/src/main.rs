//! `meter`: one command, one subcommand per service or tool. Each service
//! (`collect`, `aggregate`, `sink clickhouse`) runs as its own process.

mod analytics_cmd;
mod bench_cmd;
mod backfill;
mod demo;
mod forecast_cmd;
mod periods_cmd;
mod reprocess_cmd;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use meter_config::MeterConfig;
use meter_model::EventKind;

// The system allocator on purpose: mimalloc made the hot-path bench faster but `meter aggregate`
// end to end slower (0.72 x raw consume against 0.88 x) with a larger RSS (bench/run.sh, 2026-12-05).

#[derive(Parser)]
#[command(name = "meter", version, about = "Usage metering pipeline: collectors -> Kafka -> aggregator -> aggregate topic -> ClickHouse.")]
struct Cli {
    /// Configuration file (every key and default: config/meter.toml).
    /// Default: config/meter.toml when it exists, else built-in defaults.
    #[arg(long, global = true, env = "METER_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The local stack of real servers (Tansu broker, ClickHouse, Prometheus) on loopback.
    Stack {
        #[command(subcommand)]
        action: StackAction,
    },
    /// Apply the ClickHouse schema migrations not applied yet.
    Migrate,
    /// Collectors: read a source and publish its events to the event topics.
    Collect {
        #[command(subcommand)]
        source: CollectSource,
    },
    /// The aggregator: window, deduplicate and rate events; emit aggregate revisions.
    Aggregate {
        /// Stop once no input arrived for this many seconds and all is flushed
        /// (batch runs). Default: run until Ctrl-C.
        #[arg(long, value_name = "SECONDS")]
        until_idle: Option<u64>,
    },
    /// Sinks: write the aggregate topic to a store.
    Sink {
        #[command(subcommand)]
        target: SinkTarget,
    },
    /// The HTTP ingest API: collectors POST CloudEvents 1.0 (one event or a batch) to /v1/events
    /// with a bearer token; every event is checked before any is published, and the answer comes
    /// once the broker acknowledged them all. /metrics on the settings' metrics_listen.
    IngestApi {
        /// TOML file with the API settings (listen, metrics_listen, limits, collector tokens and
        /// tenants; example: services/ingest-api/ingest-api.example.toml). Kafka settings come from --config.
        #[arg(long)]
        api_config: PathBuf,
    },
    /// Deprecated: `meter collect file --rate N` (the same code).
    #[command(hide = true)]
    Replay {
        /// The kind of event in the files.
        #[arg(long, value_enum)]
        kind: KindArg,
        /// Events sent per second at most.
        #[arg(long, value_name = "EVENTS_PER_SEC")]
        rate: std::num::NonZeroU32,
        /// Show a progress bar (default: when stderr is a terminal).
        #[arg(long)]
        progress: bool,
        /// Exit with status 2 when any line was rejected.
        #[arg(long)]
        strict: bool,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Re-rate a tenant's closed period from the raw events (late ones
    /// included) and record who asked and why.
    Reprocess(reprocess_cmd::ReprocessArgs),
    /// Billing months: list open and closed ones, close one on record.
    Periods {
        #[command(subcommand)]
        action: periods_cmd::PeriodsAction,
    },
    /// Contracts: what each tenant bought (days, euros or tickets a year).
    Contracts {
        #[command(subcommand)]
        action: analytics_cmd::ContractsAction,
    },
    /// Budget forecast: per tenant and contract, the next 12 months of consumption and cost, the remaining budget and the day it runs out (`--help`: the method).
    ///
    /// Consumption is in the contract's unit (days, euros or tickets). The method is the one of the
    /// ClickHouse views consumption_forecast and budget_forecast:
    ///   - The forecast starts at the current month, or at the month after the tenant's last data if earlier.
    ///   - With 12 months of history or more (method 'seasonal'), month M = level x average(M) / sum of
    ///     the 12 averages: level is the consumption of the last 12 months, average(M) the mean of the
    ///     months M of earlier years. A January that was high in earlier years is forecast high, at the
    ///     recent level.
    ///   - With less than 12 months (method 'flat'), every month is the mean month of the history;
    ///     without a month of history, no forecast.
    ///   - Budget: the contract's amounts (with their revisions) minus what was consumed before the
    ///     forecast start; each month's forecast is spread evenly over its days inside the contract; the
    ///     run-out date is the first day the forecast consumption reaches the budget (none if it does not
    ///     within the contract and the 12 months).
    #[command(verbatim_doc_comment)]
    Forecast(forecast_cmd::ForecastArgs),
    /// Capacity installed per datacenter, for the provider fill rate (IaaS).
    Capacity {
        #[command(subcommand)]
        action: analytics_cmd::CapacityAction,
    },
    /// Tenants: their own ClickHouse database and read-only user for BI tools.
    Tenants {
        #[command(subcommand)]
        action: analytics_cmd::TenantsAction,
    },
    /// Benchmarks against the real servers.
    Bench {
        #[command(subcommand)]
        target: BenchTarget,
    },
    /// Exports for finance tools.
    Export {
        #[command(subcommand)]
        format: ExportFormat,
    },
    /// Demo data built from the figures in DOMAIN.md.
    Demo {
        #[command(subcommand)]
        action: DemoAction,
    },
    /// Inspect the configuration.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
}

#[derive(Subcommand)]
enum StackAction {
    /// Install what is missing, start every server, create topics, apply migrations.
    Up,
    /// Stop every server (data is kept).
    Down,
    /// Say what runs where.
    Status,
    /// Restart only the broker (its data survives).
    RestartBroker,
    /// Stop everything and delete the local data.
    Reset,
}

#[derive(Clone, Copy, ValueEnum)]
enum KindArg {
    VmUsage,
    CheckResult,
    TicketTime,
}

impl From<KindArg> for EventKind {
    fn from(k: KindArg) -> Self {
        match k {
            KindArg::VmUsage => EventKind::VmUsage,
            KindArg::CheckResult => EventKind::CheckResult,
            KindArg::TicketTime => EventKind::TicketTime,
        }
    }
}

#[derive(Subcommand)]
enum CollectSource {
    /// JSON-lines files, one event per line, one kind per file (format: README "Input files").
    /// Bad lines are reported with their number, dead-lettered, and skipped.
    File {
        /// The kind of event in the files.
        #[arg(long, value_enum)]
        kind: KindArg,
        /// Show a progress bar (default: when stderr is a terminal).
        #[arg(long)]
        progress: bool,
        /// Exit with status 2 when any line was rejected.
        #[arg(long)]
        strict: bool,
        /// History import: events of closed billing months are counted too
        /// (their months' days, weeks, months and years are re-rated from all
        /// raw events and re-emitted final), recorded in reprocess_log.
        #[arg(long, requires_all = ["requested_by", "reason"])]
        backfill: bool,
        /// Replay history at a bounded rate: at most this many events a second
        /// (bursts of a tenth of a second), an event repeated in the files sent
        /// once (dead letters of component `replay`); prints one summary.
        #[arg(long, value_name = "EVENTS_PER_SEC", conflicts_with = "backfill")]
        rate: Option<std::num::NonZeroU32>,
        /// With --backfill: who asks (recorded).
        #[arg(long)]
        requested_by: Option<String>,
        /// With --backfill: why (recorded), e.g. "history of a new customer".
        #[arg(long)]
        reason: Option<String>,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Poll the GLPI REST API for ticket tasks changed since the last run and publish them as ticket time
    Glpi {
        /// TOML file with the GLPI settings (url, tokens, source, page_size, state_file,
        /// mapping_file, server_time_zone; example: services/collector-glpi/glpi.example.toml).
        #[arg(long)]
        glpi_config: PathBuf,
    },
    /// Receive supervision check results (Icinga 2 process-check-result, Nagios NRDP, the Icinga 2
    /// event stream) and publish them as check results; publish MISSED runs of the scheduled checks.
    /// Runs until Ctrl-C, or with --once-missed evaluates the schedule once and exits (cron, tests).
    Supervision {
        /// TOML file with the settings, tokens, host/check mapping and schedule
        /// (example with every key: config/supervision.example.toml).
        #[arg(long)]
        supervision_config: PathBuf,
        /// Only publish the runs missed with a deadline in the lookback window, then exit.
        #[arg(long)]
        once_missed: bool,
        /// With --once-missed: the instant to evaluate at (RFC 3339). Default: now.
        #[arg(long, value_name = "RFC3339", requires = "once_missed")]
        now: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// CSV files of ticket tasks from other ticketing tools, published as ticket time.
    /// Bad rows are reported with their line number, dead-lettered, and skipped.
    ///
    /// Header: ticket_id,task_id,ticket_type,category_path,entity,requester,technician,technician_profile,application,country,start_time,minutes_worked,modified_at
    Csv {
        /// The GLPI mapping file (entities, domains, technicians; config/glpi-mapping.example.toml).
        #[arg(long)]
        mapping: PathBuf,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Scrape a Prometheus exposition endpoint (libvirt exporter, node-level exporter) every
    /// interval_seconds and publish one vm-usage SAMPLE per running, mapped VM. Runs until Ctrl-C,
    /// or with --once scrapes once and exits.
    VmScrape {
        /// TOML file with the endpoint, metric names and VM mapping
        /// (example with every key: services/collector-vm/vm.example.toml).
        #[arg(long)]
        vm_config: PathBuf,
        /// Scrape once (the first sample of each VM covers interval_seconds), then exit.
        #[arg(long)]
        once: bool,
    },
    /// CSV files of VM lifecycle events and samples, published as vm usage.
    /// Bad rows are reported with their line number, dead-lettered, and skipped.
    ///
    /// Header: event_id,source,tenant,subsidiary,domain,event_time,vm_id,vcpu,ram_mib,storage_gb,bandwidth_mbps,guaranteed_bandwidth,public_ips,sla_tier,options,datacenter,transition,sample_interval_seconds
    /// (options ";"-separated; transition SAMPLE, CREATE, START, RESIZE, STOP, DELETE).
    VmCsv {
        /// Exit with status 2 when any row was rejected.
        #[arg(long)]
        strict: bool,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(Subcommand)]
enum SinkTarget {
    /// Write aggregate revisions to ClickHouse (idempotent; retries while ClickHouse is down).
    Clickhouse {
        /// Stop once no input arrived for this many seconds and all is written.
        #[arg(long, value_name = "SECONDS")]
        until_idle: Option<u64>,
    },
}

#[derive(Subcommand)]
enum BenchTarget {
    /// Load years of aggregates for many tenants into a separate database and time the analyst views.
    Clickhouse(bench_cmd::BenchArgs),
}

#[derive(Subcommand)]
enum ExportFormat {
    /// Daily cost rows of a tenant in the FinOps FOCUS columns, as CSV.
    Focus(analytics_cmd::FocusArgs),
}

#[derive(Subcommand)]
enum DemoAction {
    /// Write demo input files (ticket-time, check-result, vm-usage .jsonl) to a folder.
    Generate {
        #[arg(long, default_value = ".stack/demo")]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Print the built-in defaults as TOML.
    Defaults,
    /// Load the configuration (file + METER_* overrides), check it and print it.
    Check,
}

fn load_config(path: Option<&Path>) -> Result<MeterConfig> {
    let default = Path::new("config/meter.toml");
    let path = path.or(default.exists().then_some(default));
    Ok(MeterConfig::load(path)?)
}

fn repo_script(name: &str) -> Result<PathBuf> {
    let mut dir = std::env::current_dir()?;
    loop {
        let candidate = dir.join("scripts").join(name);
        if candidate.exists() {
            return Ok(candidate);
        }
        if !dir.pop() {
            bail!("scripts/{name} not found above the current directory: run meter from the repository");
        }
    }
}

/// `meter collect file --rate N`: replays the files, serving the collector
/// metrics on `collector.metrics_listen`; prints the summary and the first
/// rejections.
async fn replay_files(
    config: &MeterConfig,
    kind: EventKind,
    rate: std::num::NonZeroU32,
    progress: bool,
    strict: bool,
    files: &[PathBuf],
) -> Result<ExitCode> {
    let registry = metrics_registry("replay", config.collector.metrics_listen).await?;
    let metrics = collector_runtime::CollectorMetrics::register(&registry)?;
    let producer = meter_kafka::producer(&config.kafka)?;
    let options = collector_file::ReplayOptions {
        show_progress: progress || std::io::IsTerminal::is_terminal(&std::io::stderr()),
        ..collector_file::ReplayOptions::new(rate)
    };
    let summary = collector_file::replay(config, &producer, &metrics, kind, files, &options).await?;
    println!("{summary}");
    for r in summary.rejections.iter().take(20) {
        println!("  {}:{}: {} ({})", r.file, r.line, r.reason, r.error);
    }
    if summary.rejections.len() > 20 {
        println!("  ... {} more (all are on the dead-letter topic {})", summary.rejections.len() - 20, config.topics.dead_letters);
    }
    Ok(if strict && !summary.rejections.is_empty() { ExitCode::from(2) } else { ExitCode::SUCCESS })
}

async fn metrics_registry(service: &str, listen: meter_config::ListenAddr) -> Result<prometheus::Registry> {
    let registry = meter_telemetry::registry(service)?;
    meter_telemetry::serve_metrics(listen, registry.clone()).await?;
    Ok(registry)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Config { action: ConfigAction::Defaults } => {
            print!("{}", MeterConfig::defaults_toml());
            return Ok(ExitCode::SUCCESS);
        }
        Command::Stack { action } => {
            let script = repo_script("stack.sh")?;
            let verb = match action {
                StackAction::Up => "up",
                StackAction::Down => "down",
                StackAction::Status => "status",
                StackAction::RestartBroker => "restart-broker",
                StackAction::Reset => "reset",
            };
            let status = tokio::process::Command::new("bash").arg(&script).arg(verb).status().await?;
            if !status.success() {
                bail!("{} {verb} failed ({status})", script.display());
            }
            if matches!(action, StackAction::Up) {
                let config = load_config(cli.config.as_deref())?;
                migrate(&config).await?;
            }
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    let config = load_config(cli.config.as_deref())?;
    meter_telemetry::init_logging(&config.log);
    match cli.command {
        Command::Config { action: ConfigAction::Check } => {
            print!("{}", toml::to_string_pretty(&config.redacted())?);
        }
        Command::Migrate => migrate(&config).await?,
        Command::Collect { source: CollectSource::File { kind, progress, strict, rate: Some(rate), files, .. } } => {
            return replay_files(&config, kind.into(), rate, progress, strict, &files).await;
        }
        Command::Collect { source: CollectSource::File { kind, progress, strict, backfill, requested_by, reason, rate: None, files } } => {
            let registry = metrics_registry("collector-file", config.collector.metrics_listen).await?;
            let metrics = collector_runtime::CollectorMetrics::register(&registry)?;
            let producer = meter_kafka::producer(&config.kafka)?;
            let options = collector_file::CollectOptions {
                show_progress: progress || std::io::IsTerminal::is_terminal(&std::io::stderr()),
                keep_published: backfill,
                ..Default::default()
            };
            let mut rejected = 0usize;
            let mut published = Vec::new();
            for file in &files {
                let report = collector_file::collect_file(&config, &producer, &metrics, kind.into(), file, &options)
                    .await
                    .with_context(|| format!("collecting {}", file.display()))?;
                println!(
                    "{}: {} lines read, {} published, {} rejected",
                    file.display(),
                    report.lines_read,
                    report.published,
                    report.rejections.len()
                );
                for r in report.rejections.iter().take(20) {
                    println!("  line {}: {} ({})", r.line, r.reason, r.error);
                }
                if report.rejections.len() > 20 {
                    println!("  ... {} more (all are on the dead-letter topic {})", report.rejections.len() - 20, config.topics.dead_letters);
                }
                rejected += report.rejections.len();
                published.extend(report.published_events);
            }
            if backfill {
                let (Some(requested_by), Some(reason)) = (requested_by, reason) else { bail!("--backfill needs --requested-by and --reason") };
                backfill::run(&config, &published, &requested_by, &reason).await?;
            }
            if strict && rejected > 0 {
                return Ok(ExitCode::from(2));
            }
        }
        Command::Collect { source: CollectSource::Glpi { glpi_config } } => {
            let glpi = collector_glpi::GlpiCollectorConfig::load(&glpi_config)?;
            let registry = metrics_registry("collector-glpi", config.collector.metrics_listen).await?;
            let metrics = collector_runtime::CollectorMetrics::register(&registry)?;
            let producer = meter_kafka::producer(&config.kafka)?;
            let report = collector_glpi::collect_once(&config, &glpi, &producer, &metrics).await.context("collecting from GLPI")?;
            println!("{report}");
            for r in report.rejections.iter().take(20) {
                println!("  task {}: {} ({})", r.task_id.map_or("?".to_string(), |id| id.to_string()), r.reason, r.error);
            }
        }
        Command::Collect { source: CollectSource::Supervision { supervision_config, once_missed, now } } => {
            let settings = collector_supervision::Settings::load(&supervision_config, &config)?;
            let registry = metrics_registry("collector-supervision", config.collector.metrics_listen).await?;
            let metrics = collector_runtime::CollectorMetrics::register(&registry)?;
            if once_missed {
                let now = now.unwrap_or_else(chrono::Utc::now);
                let report = collector_supervision::publish_missed_once(&config, &settings, &metrics, now).await?;
                println!("{report}");
            } else {
                collector_supervision::run(&config, settings, metrics).await?;
            }
        }
        Command::Collect { source: CollectSource::Csv { mapping, files } } => {
            let mapping = collector_glpi::mapping::Mapping::load(&mapping)?;
            let registry = metrics_registry("collector-csv", config.collector.metrics_listen).await?;
            let metrics = collector_runtime::CollectorMetrics::register(&registry)?;
            let producer = meter_kafka::producer(&config.kafka)?;
            for file in &files {
                let report = collector_glpi::publish_csv(&config, &producer, &metrics, &mapping, file)
                    .await
                    .with_context(|| format!("collecting {}", file.display()))?;
                println!(
                    "{}: {} rows read, {} published, {} skipped, {} rejected",
                    file.display(),
                    report.rows,
                    report.published,
                    report.skipped,
                    report.rejections.len()
                );
                for r in report.rejections.iter().take(20) {
                    println!("  line {}: {} ({})", r.line, r.reason, r.error);
                }
            }
        }
        Command::Collect { source: CollectSource::VmScrape { vm_config, once } } => {
            let settings = collector_vm::Settings::load(&vm_config)?;
            let registry = metrics_registry("collector-vm", config.collector.metrics_listen).await?;
            let metrics = collector_runtime::CollectorMetrics::register(&registry)?;
            if once {
                let producer = meter_kafka::producer(&config.kafka)?;
                let state = collector_vm::ScrapeState::default();
                let report = collector_vm::scrape_once(&config, &settings, &producer, &metrics, &state, chrono::Utc::now())
                    .await
                    .context("scraping VMs")?;
                println!("{report}");
                for vm in &report.unmapped {
                    println!("  unmapped VM (not published): {vm}");
                }
                for (vm, why) in &report.incomplete {
                    println!("  VM {vm} skipped: {why}");
                }
            } else {
                collector_vm::run(&config, &settings, &metrics).await?;
            }
        }
        Command::Collect { source: CollectSource::VmCsv { strict, files } } => {
            let registry = metrics_registry("collector-vm-csv", config.collector.metrics_listen).await?;
            let metrics = collector_runtime::CollectorMetrics::register(&registry)?;
            let producer = meter_kafka::producer(&config.kafka)?;
            let mut rejected = 0usize;
            for file in &files {
                let report = collector_vm::publish_csv(&config, &producer, &metrics, file)
                    .await
                    .with_context(|| format!("collecting {}", file.display()))?;
                println!("{}: {} rows read, {} published, {} rejected", file.display(), report.rows, report.published, report.rejections.len());
                for r in report.rejections.iter().take(20) {
                    println!("  line {}: {} ({})", r.line, r.reason, r.error);
                }
                rejected += report.rejections.len();
            }
            if strict && rejected > 0 {
                return Ok(ExitCode::from(2));
            }
        }
        Command::Aggregate { until_idle } => {
            let registry = metrics_registry("aggregator", config.aggregator.metrics_listen).await?;
            let metrics = aggregator::runner::AggregatorMetrics::register(&registry)?;
            let book = aggregator::pricing::PriceBook::load(&config.price_book)?;
            aggregator::runner::run(
                &config,
                book,
                metrics,
                aggregator::runner::RunOptions { until_idle: until_idle.map(Duration::from_secs) },
            )
            .await?;
        }
        Command::Sink { target: SinkTarget::Clickhouse { until_idle } } => {
            let registry = metrics_registry("sink-clickhouse", config.sink.metrics_listen).await?;
            let metrics = sink_clickhouse::writer::SinkMetrics::register(&registry)?;
            sink_clickhouse::writer::run(
                &config,
                metrics,
                sink_clickhouse::writer::SinkOptions { until_idle: until_idle.map(Duration::from_secs) },
            )
            .await?;
        }
        Command::IngestApi { api_config } => ingest_api::run_service(&config, &api_config).await?,
        Command::Replay { kind, rate, progress, strict, files } => {
            eprintln!("warning: `meter replay` is deprecated: use `meter collect file --kind KIND --rate N FILE...`");
            return replay_files(&config, kind.into(), rate, progress, strict, &files).await;
        }
        Command::Reprocess(args) => reprocess_cmd::run(&config, args).await?,
        Command::Periods { action } => periods_cmd::run(&config, action).await?,
        Command::Contracts { action } => analytics_cmd::contracts(&config, action).await?,
        Command::Tenants { action } => analytics_cmd::tenants(&config, action).await?,
        Command::Forecast(args) => forecast_cmd::run(&config, args).await?,
        Command::Capacity { action } => analytics_cmd::capacity(&config, action).await?,
        Command::Bench { target: BenchTarget::Clickhouse(args) } => bench_cmd::run(&config, args).await?,
        Command::Export { format: ExportFormat::Focus(args) } => analytics_cmd::export_focus(&config, args).await?,
        Command::Demo { action: DemoAction::Generate { out } } => {
            let written = demo::generate(&out)?;
            for (kind, path, lines) in written {
                println!("{kind}: {lines} events in {}", path.display());
            }
        }
        Command::Config { action: ConfigAction::Defaults } | Command::Stack { .. } => {}
    }
    Ok(ExitCode::SUCCESS)
}

async fn migrate(config: &MeterConfig) -> Result<()> {
    let client = sink_clickhouse::client(&config.clickhouse);
    let applied = sink_clickhouse::migrations::migrate(&client, &config.clickhouse.url, &config.clickhouse.database).await?;
    if applied.is_empty() {
        println!("ClickHouse schema {} is up to date", config.clickhouse.database);
    } else {
        println!("ClickHouse schema {}: applied migrations {applied:?}", config.clickhouse.database);
    }
    Ok(())
}
