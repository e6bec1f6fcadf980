//! The compose deployment (docker-compose.yml, Dockerfile, deploy/compose,
//! deploy/grafana) checked without Docker: no engine runs here, so what can
//! be wrong in those files is checked against the code instead.
//!
//! - the services and images are those of the deployment (Kafka in KRaft);
//! - each service of our image runs a real `meter` subcommand (`--help` of
//!   its exact command line succeeds);
//! - each of their `METER_*` variables is a real configuration key, and
//!   `meter config check` shows it applied (a misspelled section would be
//!   silently ignored otherwise);
//! - bind-mounted paths exist, named volumes are declared, `depends_on`
//!   conditions fit the services they wait for;
//! - kafka-init creates every configured topic, the aggregate topic compacted;
//! - Prometheus scrapes the ports the services listen on, Grafana's
//!   provisioning names the data sources and the dashboards folder mounted.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use aggregator::pricing::PriceBook;
use meter_tests::{meter_bin, repo_root};
use serde_yaml::Value;

/// Host paths compose may bind-mount without them being in the repository.
const GENERATED_BIND_SOURCES: [&str; 1] = ["./demo-data"];

// ---------------------------------------------------------------- helpers --

fn compose() -> Value {
    let path = repo_root().join("docker-compose.yml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut value: Value = serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()));
    // `<<: *anchor` merge keys are not expanded by serde_yaml 0.9 on its own.
    value.apply_merge().expect("merge keys of docker-compose.yml apply");
    value
}

fn services(compose: &Value) -> BTreeMap<String, Value> {
    compose["services"]
        .as_mapping()
        .expect("docker-compose.yml has a services mapping")
        .iter()
        .map(|(k, v)| (k.as_str().expect("service names are strings").to_string(), v.clone()))
        .collect()
}

fn service<'a>(services: &'a BTreeMap<String, Value>, name: &str) -> &'a Value {
    services.get(name).unwrap_or_else(|| panic!("docker-compose.yml has no service {name:?}"))
}

/// Compose interpolation with an empty environment: `${NAME:-default}` and
/// `${NAME-default}` give the default, `${NAME}`, `$NAME` and a required
/// `${NAME:?message}` nothing, `$$` a `$`.
fn interpolate(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        if let Some(r) = rest.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(r) = rest.strip_prefix('{') {
            let end = r.find('}').unwrap_or_else(|| panic!("unclosed ${{ in {s:?}"));
            let expr = &r[..end];
            if expr.contains('?') {
                // Required: compose refuses to start without it.
            } else if let Some((_, default)) = expr.split_once(":-").or_else(|| expr.split_once('-')) {
                out.push_str(default);
            }
            rest = &r[end + 1..];
        } else {
            let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
            rest = &rest[end..];
        }
    }
    out.push_str(rest);
    out
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => interpolate(s),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Null => String::new(),
        other => panic!("expected a scalar, got {other:?}"),
    }
}

/// A string or a list of strings (command, entrypoint, profiles).
fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::Null => Vec::new(),
        Value::String(s) => interpolate(s).split_whitespace().map(String::from).collect(),
        Value::Sequence(items) => items.iter().map(scalar).collect(),
        other => panic!("expected a string or a list, got {other:?}"),
    }
}

/// A service's environment, as a mapping or a list of `KEY=VALUE`.
fn env_of(service: &Value) -> BTreeMap<String, String> {
    match &service["environment"] {
        Value::Null => BTreeMap::new(),
        Value::Mapping(m) => m.iter().map(|(k, v)| (scalar(k), scalar(v))).collect(),
        Value::Sequence(items) => items
            .iter()
            .map(|item| {
                let item = scalar(item);
                let (k, v) = item.split_once('=').unwrap_or((&item, ""));
                (k.to_string(), v.to_string())
            })
            .collect(),
        other => panic!("environment must be a mapping or a list, got {other:?}"),
    }
}

/// (source, target) of a service's volumes, short or long syntax.
fn volumes_of(service: &Value) -> Vec<(String, String)> {
    let Some(items) = service["volumes"].as_sequence() else { return Vec::new() };
    items
        .iter()
        .map(|item| match item {
            Value::String(s) => {
                let s = interpolate(s);
                let mut parts = s.splitn(3, ':');
                let source = parts.next().unwrap_or_default().to_string();
                let target = parts.next().unwrap_or_else(|| panic!("volume {s:?} has no target")).to_string();
                (source, target)
            }
            Value::Mapping(_) => (scalar(&item["source"]), scalar(&item["target"])),
            other => panic!("unexpected volume {other:?}"),
        })
        .collect()
}

fn is_bind_source(source: &str) -> bool {
    source.starts_with("./") || source.starts_with("../") || source.starts_with('/') || source == "."
}

/// Services built from our Dockerfile.
fn meter_services(services: &BTreeMap<String, Value>) -> Vec<(String, Value)> {
    let ours: Vec<_> = services.iter().filter(|(_, s)| !s["build"].is_null()).map(|(n, s)| (n.clone(), s.clone())).collect();
    assert!(!ours.is_empty(), "no service is built from the Dockerfile");
    ours
}

fn is_one_shot(service: &Value) -> bool {
    matches!(scalar(&service["restart"]).as_str(), "" | "no")
}

/// The final stage of the Dockerfile: instruction lines, continuations joined,
/// comments dropped.
fn dockerfile_final_stage() -> Vec<String> {
    let path = repo_root().join("Dockerfile");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
        } else {
            current.push_str(trimmed);
            lines.push(std::mem::take(&mut current));
        }
    }
    let last_from = lines.iter().rposition(|l| l.to_ascii_uppercase().starts_with("FROM ")).expect("the Dockerfile has a FROM");
    lines.split_off(last_from)
}

fn instruction<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let (head, rest) = line.split_once(char::is_whitespace)?;
    head.eq_ignore_ascii_case(name).then_some(rest.trim())
}

/// `ENV` of the image's final stage.
fn image_env() -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for line in dockerfile_final_stage() {
        let Some(rest) = instruction(&line, "ENV") else { continue };
        if rest.split_whitespace().next().is_some_and(|t| t.contains('=')) {
            for token in rest.split_whitespace() {
                let (k, v) = token.split_once('=').unwrap_or_else(|| panic!("ENV token {token:?} is not KEY=VALUE"));
                env.insert(k.to_string(), v.trim_matches('"').to_string());
            }
        } else if let Some((k, v)) = rest.split_once(char::is_whitespace) {
            env.insert(k.to_string(), v.trim().trim_matches('"').to_string());
        }
    }
    env
}

/// The image's `ENTRYPOINT` (exec form).
fn image_entrypoint() -> Vec<String> {
    let line = dockerfile_final_stage()
        .into_iter()
        .rfind(|l| instruction(l, "ENTRYPOINT").is_some())
        .expect("the final stage of the Dockerfile has an ENTRYPOINT");
    let json = instruction(&line, "ENTRYPOINT").unwrap();
    serde_json::from_str(json).unwrap_or_else(|e| panic!("ENTRYPOINT {json:?} is not the exec (JSON) form: {e}"))
}

/// Where the image's folders come from in the repository: `COPY src dst` of
/// the final stage (not `--from` another stage), as (dst, src).
fn image_copies() -> Vec<(String, PathBuf)> {
    dockerfile_final_stage()
        .iter()
        .filter_map(|l| instruction(l, "COPY"))
        .filter(|rest| !rest.contains("--from"))
        .filter_map(|rest| {
            let args: Vec<&str> = rest.split_whitespace().filter(|a| !a.starts_with("--")).collect();
            (args.len() == 2).then(|| (args[1].to_string(), repo_root().join(args[0])))
        })
        .collect()
}

/// The repository file that ends up at `path` in the image, if it is copied there.
fn repo_file_of_image_path(path: &str) -> Option<PathBuf> {
    image_copies().into_iter().find_map(|(dst, src)| {
        let dst = dst.trim_end_matches('/');
        path.strip_prefix(dst).and_then(|rest| rest.strip_prefix('/')).map(|rest| src.join(rest))
    })
}

/// The full command line a service of our image runs: entrypoint + command.
fn argv_of(service: &Value) -> Vec<String> {
    let entrypoint = if service["entrypoint"].is_null() { image_entrypoint() } else { strings(&service["entrypoint"]) };
    let mut argv = entrypoint;
    argv.extend(strings(&service["command"]));
    argv
}

/// `meter` with no `METER_*` variable of the test's own environment.
fn meter() -> Command {
    let mut cmd = Command::new(meter_bin());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("METER_") {
            cmd.env_remove(key);
        }
    }
    cmd.current_dir(repo_root());
    cmd
}

/// The environment the service's process sees: the image's `ENV`, then the
/// service's `environment`; `METER_*` only.
fn meter_env_of(service: &Value) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = image_env().into_iter().filter(|(k, _)| k.starts_with("METER_")).collect();
    env.extend(env_of(service).into_iter().filter(|(k, _)| k.starts_with("METER_")));
    env
}

/// Runs `meter config check` with the service's `METER_*` environment, paths
/// of the image's /etc/meter replaced by the repository files copied there.
/// Returns the effective configuration and the variables applied.
fn effective_config(name: &str, service: &Value) -> (toml::Value, BTreeMap<String, String>) {
    let mut env = meter_env_of(service);
    let config_file = match env.remove("METER_CONFIG") {
        Some(path) => {
            let file = repo_file_of_image_path(&path)
                .unwrap_or_else(|| panic!("{name}: METER_CONFIG={path} is not a file the Dockerfile copies into the image"));
            assert!(file.is_file(), "{name}: METER_CONFIG={path} would be {}, which does not exist", file.display());
            file
        }
        None => repo_root().join("config/meter.toml"),
    };
    for value in env.values_mut() {
        if let Some(file) = repo_file_of_image_path(value) {
            assert!(file.exists(), "{name}: {value} would be {}, which does not exist", file.display());
            *value = file.to_string_lossy().into_owned();
        }
    }
    let out = meter()
        .arg("--config")
        .arg(&config_file)
        .args(["config", "check"])
        .envs(&env)
        .output()
        .expect("meter runs");
    assert!(
        out.status.success(),
        "{name}: `meter config check` refuses its environment {env:?}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let config: toml::Value = toml::from_str(&stdout).unwrap_or_else(|e| panic!("{name}: config check printed no TOML ({e}):\n{stdout}"));
    (config, env)
}

fn toml_scalar(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The configuration section a meter service's command runs as.
fn section_of_command(args: &[String]) -> Option<&'static str> {
    match args.first().map(String::as_str) {
        Some("aggregate") => Some("aggregator"),
        Some("sink") => Some("sink"),
        Some("collect") => Some("collector"),
        Some("contracts") => Some("contracts"),
        _ => None,
    }
}

fn port_of(listen: &str) -> (String, u16) {
    let (host, port) = listen.rsplit_once(':').unwrap_or_else(|| panic!("{listen:?} is not HOST:PORT"));
    (host.to_string(), port.parse().unwrap_or_else(|_| panic!("{listen:?} has no port number")))
}

fn yaml_file(relative: &str) -> Value {
    let path = repo_root().join(relative);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()))
}

/// job name -> targets of a Prometheus configuration.
fn scrape_targets(config: &Value) -> BTreeMap<String, Vec<String>> {
    config["scrape_configs"]
        .as_sequence()
        .expect("scrape_configs is a list")
        .iter()
        .map(|job| {
            let targets = job["static_configs"]
                .as_sequence()
                .into_iter()
                .flatten()
                .flat_map(|sc| strings(&sc["targets"]))
                .collect();
            (scalar(&job["job_name"]), targets)
        })
        .collect()
}

// ------------------------------------------------------------------ tests --

#[test]
fn the_deployment_has_its_services_with_the_right_images() {
    let compose = compose();
    let services = services(&compose);
    let image = |name: &str| scalar(&service(&services, name)["image"]);

    assert!(image("kafka").starts_with("apache/kafka:"), "kafka runs {}", image("kafka"));
    let kafka = env_of(service(&services, "kafka"));
    let roles: BTreeSet<&str> = kafka.get("KAFKA_PROCESS_ROLES").map(|r| r.split(',').map(str::trim).collect()).unwrap_or_default();
    assert!(roles.contains("broker") && roles.contains("controller"), "Kafka must run in KRaft mode as broker and controller: {roles:?}");
    for key in ["KAFKA_NODE_ID", "KAFKA_LISTENERS", "KAFKA_CONTROLLER_LISTENER_NAMES", "KAFKA_CONTROLLER_QUORUM_VOTERS", "CLUSTER_ID"] {
        assert!(kafka.contains_key(key), "kafka sets no {key}");
    }
    for key in ["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] {
        assert_eq!(kafka.get(key).map(String::as_str), Some("1"), "single broker: {key} must be 1");
    }
    assert_eq!(kafka.get("KAFKA_AUTO_CREATE_TOPICS_ENABLE").map(String::as_str), Some("false"), "topics come from kafka-init only");
    assert!(!service(&services, "kafka")["healthcheck"].is_null(), "kafka needs a healthcheck (kafka-init waits on it)");
    assert_eq!(image("kafka-init"), image("kafka"), "kafka-init uses the broker's image (its kafka-topics.sh)");

    assert!(image("clickhouse").starts_with("clickhouse/clickhouse-server:"), "clickhouse runs {}", image("clickhouse"));
    assert!(image("prometheus").starts_with("prom/prometheus:"), "prometheus runs {}", image("prometheus"));
    assert!(image("grafana").starts_with("grafana/grafana:"), "grafana runs {}", image("grafana"));

    // Our services, from one image.
    let ours = meter_services(&services);
    let names: BTreeSet<&str> = ours.iter().map(|(n, _)| n.as_str()).collect();
    for name in ["meter-migrate", "meter-aggregator", "meter-sink-clickhouse", "meter-collector"] {
        assert!(names.contains(name), "{name} is not built from the Dockerfile");
    }
    let images: BTreeSet<String> = ours.iter().map(|(_, s)| scalar(&s["image"])).collect();
    assert_eq!(images.len(), 1, "every meter service runs the same image: {images:?}");
    for (name, s) in &ours {
        let context = match &s["build"] {
            Value::String(c) => c.clone(),
            b => scalar(&b["context"]),
        };
        assert_eq!(context.trim_end_matches('/'), ".", "{name} is built from the repository root");
        let profiles = strings(&s["profiles"]);
        if name == "meter-collector" {
            assert_eq!(profiles, ["demo"], "the example collector only starts with --profile demo");
        } else {
            assert!(profiles.is_empty(), "{name} must start by default");
        }
    }
    for name in ["meter-aggregator", "meter-sink-clickhouse"] {
        let s = service(&services, name);
        assert_eq!(scalar(&s["restart"]), "unless-stopped", "{name} is long-running");
        // The services flush and checkpoint on Ctrl-C only (tokio::signal::ctrl_c).
        assert_eq!(scalar(&s["stop_signal"]), "SIGINT", "{name} stops cleanly on SIGINT only");
    }
    assert!(is_one_shot(service(&services, "meter-migrate")), "meter-migrate is one-shot");

    // The meter services reach the servers as configured.
    let clickhouse = env_of(service(&services, "clickhouse"));
    for (name, s) in &ours {
        let env = env_of(s);
        assert_eq!(
            env.get("METER_KAFKA__BROKERS"),
            kafka
                .get("KAFKA_ADVERTISED_LISTENERS")
                .and_then(|l| l.split(',').find_map(|l| l.trim().strip_prefix("CLIENT://")).map(str::to_string))
                .as_ref(),
            "{name}: brokers must be Kafka's advertised listener"
        );
        assert_eq!(env.get("METER_CLICKHOUSE__URL").map(String::as_str), Some("http://clickhouse:8123"), "{name}");
        assert_eq!(env.get("METER_CLICKHOUSE__USER"), clickhouse.get("CLICKHOUSE_USER"), "{name}: ClickHouse user");
        assert_eq!(env.get("METER_CLICKHOUSE__PASSWORD"), clickhouse.get("CLICKHOUSE_PASSWORD"), "{name}: ClickHouse password");
    }
}

#[test]
fn every_meter_service_runs_a_real_subcommand() {
    let compose = compose();
    let services = services(&compose);
    for (name, s) in meter_services(&services) {
        let argv = argv_of(&s);
        let program = argv.first().unwrap_or_else(|| panic!("{name} runs nothing"));
        assert!(
            Path::new(program).file_name().is_some_and(|f| f == "meter"),
            "{name} runs {program:?}, not the meter binary (Dockerfile ENTRYPOINT + command)"
        );
        let args = &argv[1..];
        assert!(!args.is_empty(), "{name} has no meter subcommand");
        let out = meter().args(args).arg("--help").output().expect("meter runs");
        assert!(
            out.status.success(),
            "{name}: `meter {} --help` fails, so `meter {}` is not a valid command line:\n{}",
            args.join(" "),
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("Usage:"), "{name}: no usage printed");
    }
}

#[test]
fn every_meter_variable_is_a_real_configuration_key_and_applies() {
    let compose = compose();
    let services = services(&compose);
    for (name, s) in meter_services(&services) {
        let (config, env) = effective_config(&name, &s);
        let sections = config.as_table().expect("the configuration is a table");
        for (var, expected) in &env {
            let key = var.trim_start_matches("METER_").to_ascii_lowercase();
            let path: Vec<&str> = key.split("__").collect();
            assert!(
                sections.contains_key(path[0]),
                "{name}: {var} names no configuration section or key ({:?} is not one of {:?})",
                path[0],
                sections.keys().collect::<Vec<_>>()
            );
            let mut value = &config;
            for part in &path {
                value = value.get(part).unwrap_or_else(|| panic!("{name}: {var} is not a configuration key"));
            }
            // URLs are parsed when the file is read: `http://host:8123` prints as `http://host:8123/`.
            let same = |a: &str| a.trim_end_matches('/').to_string();
            assert_eq!(same(&toml_scalar(value)), same(expected), "{name}: {var} was not applied by `meter config check`");
        }
        // The price book the image points at loads.
        if let Some(book) = env.get("METER_PRICE_BOOK") {
            PriceBook::load(Path::new(book)).unwrap_or_else(|e| panic!("{name}: price book {book}: {e}"));
        }
    }
}

#[test]
fn the_image_runs_meter_with_the_repository_configuration() {
    assert_eq!(image_entrypoint(), ["/usr/local/bin/meter"], "the image's ENTRYPOINT is the meter binary");
    let env = image_env();
    for var in ["METER_CONFIG", "METER_PRICE_BOOK"] {
        let path = env.get(var).unwrap_or_else(|| panic!("the Dockerfile sets no {var}"));
        let file = repo_file_of_image_path(path).unwrap_or_else(|| panic!("{var}={path} is not copied into the image"));
        assert!(file.is_file(), "{var}={path} would be {}, which does not exist", file.display());
    }
    let ignore = std::fs::read_to_string(repo_root().join(".dockerignore")).expect(".dockerignore exists");
    let ignored: BTreeSet<&str> = ignore.lines().map(|l| l.trim().trim_matches('/')).collect();
    for path in ["target", ".stack", ".git"] {
        assert!(ignored.contains(path), ".dockerignore must leave out {path}");
    }
}

#[test]
fn mounts_exist_and_named_volumes_are_declared() {
    let compose = compose();
    let services = services(&compose);
    let declared: BTreeSet<String> =
        compose["volumes"].as_mapping().map(|m| m.keys().map(scalar).collect()).unwrap_or_default();
    for (name, s) in &services {
        for (source, target) in volumes_of(s) {
            if is_bind_source(&source) {
                if GENERATED_BIND_SOURCES.contains(&source.as_str()) {
                    continue;
                }
                let host = repo_root().join(&source);
                assert!(host.exists(), "{name} mounts {source} at {target}, but {} does not exist", host.display());
            } else {
                assert!(declared.contains(&source), "{name} uses the volume {source:?}, which is not declared under volumes:");
            }
        }
    }
    let aggregator = service(&services, "meter-aggregator");
    let (config, _) = effective_config("meter-aggregator", aggregator);
    let state_dir = toml_scalar(&config["aggregator"]["state_dir"]);
    assert!(
        volumes_of(aggregator).iter().any(|(source, target)| target == &state_dir && !is_bind_source(source)),
        "meter-aggregator keeps its state in {state_dir}, which must be a named volume"
    );
}

#[test]
fn depends_on_waits_for_what_each_service_offers() {
    let compose = compose();
    let services = services(&compose);
    for (name, s) in &services {
        let Some(deps) = s["depends_on"].as_mapping() else { continue };
        for (dep, cond) in deps {
            let dep = scalar(dep);
            let target = service(&services, &dep);
            match scalar(&cond["condition"]).as_str() {
                "service_healthy" => assert!(!target["healthcheck"].is_null(), "{name} waits for {dep} healthy, which has no healthcheck"),
                "service_completed_successfully" => assert!(is_one_shot(target), "{name} waits for {dep} to complete, which restarts"),
                "service_started" | "" => {}
                other => panic!("{name}: unknown depends_on condition {other:?}"),
            }
        }
    }
    let condition = |name: &str, dep: &str| scalar(&service(&services, name)["depends_on"][dep]["condition"]);
    assert_eq!(condition("kafka-init", "kafka"), "service_healthy");
    assert_eq!(condition("meter-migrate", "clickhouse"), "service_healthy");
    assert_eq!(condition("meter-aggregator", "kafka-init"), "service_completed_successfully");
    assert_eq!(condition("meter-sink-clickhouse", "kafka-init"), "service_completed_successfully");
    assert_eq!(condition("meter-sink-clickhouse", "meter-migrate"), "service_completed_successfully");
}

#[test]
fn kafka_init_creates_every_configured_topic() {
    let compose = compose();
    let services = services(&compose);
    let init = service(&services, "kafka-init");
    let mut script = strings(&init["entrypoint"]).join(" ");
    for part in match &init["command"] {
        Value::Sequence(items) => items.iter().map(scalar).collect::<Vec<_>>(),
        other => vec![scalar(other)],
    } {
        script.push('\n');
        script.push_str(&part);
    }
    let script = script.replace("\\\n", " ");
    let (config, env) = effective_config("meter-aggregator", service(&services, "meter-aggregator"));
    let brokers = env.get("METER_KAFKA__BROKERS").expect("meter services set METER_KAFKA__BROKERS");

    // topic -> (partitions, --config values)
    let mut created: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    for line in script.lines().filter(|l| l.contains("kafka-topics.sh") && l.contains("--create")) {
        let tokens: Vec<&str> = line.split_whitespace().collect();
        let after = |flag: &str| tokens.iter().position(|t| *t == flag).and_then(|i| tokens.get(i + 1)).map(|t| t.to_string());
        let topic = after("--topic").unwrap_or_else(|| panic!("no --topic in {line:?}"));
        assert!(tokens.contains(&"--if-not-exists"), "{topic}: kafka-init must be re-runnable (--if-not-exists)");
        assert_eq!(after("--bootstrap-server").as_ref(), Some(brokers), "{topic}: kafka-init talks to another broker");
        let configs = tokens.windows(2).filter(|w| w[0] == "--config").map(|w| w[1].to_string()).collect();
        created.insert(topic, (after("--partitions").unwrap_or_default(), configs));
    }
    let topics = config["topics"].as_table().expect("[topics]");
    for (key, topic) in topics {
        let topic = toml_scalar(topic);
        let (partitions, configs) = created.get(&topic).unwrap_or_else(|| panic!("kafka-init does not create topics.{key} = {topic}"));
        assert_eq!(partitions, "3", "{topic}: 3 partitions");
        let compacted = configs.iter().any(|c| c == "cleanup.policy=compact");
        assert_eq!(compacted, key == "aggregates", "{topic}: only the aggregate topic is compacted (latest revision per key)");
    }
}

#[test]
fn prometheus_scrapes_the_ports_the_services_listen_on() {
    let compose = compose();
    let services = services(&compose);
    let prometheus = service(&services, "prometheus");
    let mounts = volumes_of(prometheus);
    let mounted_at = |target: &str| mounts.iter().find(|(_, t)| t == target).map(|(s, _)| s.clone());
    let config_source = mounted_at("/etc/prometheus/prometheus.yml").expect("prometheus mounts its configuration file");
    assert_eq!(config_source, "./deploy/compose/prometheus.yml");
    let config = yaml_file("deploy/compose/prometheus.yml");
    let jobs = scrape_targets(&config);

    // Rules: the folder mounted is the one rule_files reads.
    let rules_mount = mounts
        .iter()
        .find(|(s, _)| s.trim_end_matches('/') == "./deploy/prometheus/rules")
        .map(|(_, t)| t.clone())
        .expect("prometheus mounts ./deploy/prometheus/rules");
    let rule_files = strings(&config["rule_files"]);
    assert!(
        rule_files.iter().any(|r| r.starts_with(&format!("{}/", rules_mount.trim_end_matches('/')))),
        "rule_files {rule_files:?} do not read the mounted rules folder {rules_mount}"
    );

    let local_jobs = scrape_targets(&yaml_file("deploy/local/prometheus/prometheus.yml"));
    let mut scraped = 0;
    for (name, s) in meter_services(&services) {
        if is_one_shot(&s) {
            continue;
        }
        let args = argv_of(&s)[1..].to_vec();
        let section = section_of_command(&args).unwrap_or_else(|| panic!("{name}: which metrics does `meter {}` serve?", args.join(" ")));
        let (config, _) = effective_config(&name, &s);
        let listen = toml_scalar(&config[section]["metrics_listen"]);
        let (host, port) = port_of(&listen);
        assert!(
            matches!(host.as_str(), "0.0.0.0" | "[::]" | "::"),
            "{name} serves /metrics on {listen}, which Prometheus in another container cannot reach"
        );
        let exposed = strings(&s["expose"]).iter().chain(strings(&s["ports"]).iter()).any(|p| p.split(['/', ':']).any(|x| x == port.to_string()));
        assert!(exposed, "{name} does not expose its metrics port {port}");
        let target = format!("{name}:{port}");
        let job = jobs
            .iter()
            .find(|(_, targets)| targets.contains(&target))
            .map(|(job, _)| job.clone())
            .unwrap_or_else(|| panic!("Prometheus does not scrape {target} ({name}'s {section}.metrics_listen = {listen}): {jobs:?}"));
        // Same job name as the local stack, so alert rules match both.
        if let Some((local_job, _)) = local_jobs.iter().find(|(_, targets)| targets.iter().any(|t| port_of(t).1 == port)) {
            assert_eq!(&job, local_job, "{target} is scraped as job {job}, the local stack calls it {local_job}");
        }
        scraped += 1;
    }
    assert!(scraped >= 2, "the aggregator and the sink are scraped");
    assert!(jobs.values().flatten().any(|t| t == "localhost:9090"), "Prometheus scrapes itself");
}

#[test]
fn grafana_provisions_both_data_sources_and_the_dashboards_folder() {
    let compose = compose();
    let services = services(&compose);
    let grafana = service(&services, "grafana");
    let env = env_of(grafana);
    assert!(env.get("GF_INSTALL_PLUGINS").is_some_and(|p| p.contains("grafana-clickhouse-datasource")), "Grafana installs the ClickHouse plugin");
    let mounts = volumes_of(grafana);
    let source_of = |target: &str| mounts.iter().find(|(_, t)| t.trim_end_matches('/') == target).map(|(s, _)| s.clone());
    assert_eq!(source_of("/etc/grafana/provisioning").as_deref(), Some("./deploy/grafana/provisioning"));
    let dashboards_dir = mounts
        .iter()
        .find(|(s, _)| s.trim_end_matches('/') == "./dashboards")
        .map(|(_, t)| t.clone())
        .expect("grafana mounts ./dashboards");

    let datasources = yaml_file("deploy/grafana/provisioning/datasources/datasources.yml");
    let by_uid: BTreeMap<String, Value> = datasources["datasources"]
        .as_sequence()
        .expect("datasources is a list")
        .iter()
        .map(|d| (scalar(&d["uid"]), d.clone()))
        .collect();
    let prometheus = by_uid.get("prometheus").expect("a data source with uid prometheus");
    assert_eq!(scalar(&prometheus["type"]), "prometheus");
    assert_eq!(scalar(&prometheus["url"]), "http://prometheus:9090");
    let clickhouse = by_uid.get("clickhouse").expect("a data source with uid clickhouse");
    assert_eq!(scalar(&clickhouse["type"]), "grafana-clickhouse-datasource");
    let json = &clickhouse["jsonData"];
    assert_eq!(scalar(&json["host"]), "clickhouse");
    assert!(services.contains_key("clickhouse"));
    assert_eq!(scalar(&json["port"]), "8123");
    assert_eq!(scalar(&json["protocol"]), "http");
    assert_eq!(scalar(&json["defaultDatabase"]), toml_scalar(&effective_config("meter-sink-clickhouse", service(&services, "meter-sink-clickhouse")).0["clickhouse"]["database"]));
    // ${CLICKHOUSE_USER} / ${CLICKHOUSE_PASSWORD} are Grafana's own environment.
    let raw = |v: &Value| v.as_str().unwrap_or_default().to_string();
    for (field, var) in [(raw(&json["username"]), "CLICKHOUSE_USER"), (raw(&clickhouse["secureJsonData"]["password"]), "CLICKHOUSE_PASSWORD")] {
        if field.contains('$') {
            assert!(field.contains(var) && env.contains_key(var), "the ClickHouse data source reads {var}, which grafana does not set");
            assert_eq!(env.get(var), env_of(service(&services, "clickhouse")).get(var), "grafana's {var} differs from clickhouse's");
        }
    }

    let providers = yaml_file("deploy/grafana/provisioning/dashboards/dashboards.yml");
    let paths: Vec<String> = providers["providers"]
        .as_sequence()
        .expect("providers is a list")
        .iter()
        .filter(|p| scalar(&p["type"]) == "file")
        .map(|p| scalar(&p["options"]["path"]))
        .collect();
    assert!(
        paths.iter().any(|p| p.trim_end_matches('/') == dashboards_dir.trim_end_matches('/')),
        "no dashboard provider reads {dashboards_dir}, where ./dashboards is mounted: {paths:?}"
    );
}

/// Every `${NAME...}` of a text with its default (`None`: no default).
fn variables(text: &str) -> Vec<(String, Option<String>, bool)> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("${") {
        let r = &rest[i + 2..];
        let end = r.find('}').unwrap_or(r.len());
        let expr = &r[..end];
        let name_end = expr.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(expr.len());
        let (name, tail) = expr.split_at(name_end);
        let required = tail.starts_with(":?") || tail.starts_with('?');
        let default = tail.strip_prefix(":-").or_else(|| tail.strip_prefix('-')).map(str::to_string);
        out.push((name.to_string(), default, required));
        rest = &r[end.min(r.len())..];
    }
    out
}

#[test]
fn no_secret_has_a_default_value_and_passwords_are_required() {
    let text = std::fs::read_to_string(repo_root().join("docker-compose.yml")).expect("docker-compose.yml");
    let vars = variables(&text);
    let secret = |name: &str| ["PASSWORD", "SECRET", "TOKEN", "KEY"].iter().any(|k| name.contains(k));
    for (name, default, required) in &vars {
        if secret(name) {
            assert!(default.is_none(), "{name} has the default {default:?}: generate it or require it");
            assert!(*required, "{name} must be required (${{{name}:?message}}): compose then refuses to start without it");
        }
    }
    for needed in ["CLICKHOUSE_PASSWORD", "GRAFANA_ADMIN_PASSWORD"] {
        assert!(vars.iter().any(|(n, _, r)| n == needed && *r), "{needed} is required");
    }
    // No literal password either.
    let services = services(&compose());
    for (name, s) in &services {
        for (key, value) in env_of(s) {
            if secret(&key) {
                assert!(value.is_empty(), "{name}: {key} has a literal or default value {value:?}");
            }
        }
    }
}

#[test]
fn published_ports_listen_on_loopback_by_default() {
    let services = services(&compose());
    let mut published = 0;
    for (name, s) in &services {
        for port in strings(&s["ports"]) {
            published += 1;
            let port = interpolate(&port);
            let parts: Vec<&str> = port.split(':').collect();
            assert!(
                parts.len() == 3 && (parts[0] == "127.0.0.1" || parts[0] == "[::1]"),
                "{name} publishes {port:?}: bind it to 127.0.0.1 (host:port:container), not 0.0.0.0"
            );
        }
    }
    assert!(published >= 2, "Prometheus and Grafana are published (on loopback)");
}

/// The kafka-init script as lines.
fn kafka_init_script(services: &BTreeMap<String, Value>) -> String {
    let init = service(services, "kafka-init");
    match &init["command"] {
        Value::Sequence(items) => items.iter().map(scalar).collect::<Vec<_>>().join("\n"),
        other => scalar(other),
    }
}

#[test]
fn kafka_authenticates_every_client_and_acls_limit_each_service_to_its_topics() {
    let services = services(&compose());
    let kafka = env_of(service(&services, "kafka"));
    // Clients only on the SASL listener; the broker's own listeners on loopback.
    let protocols: BTreeMap<&str, &str> =
        kafka["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(',').filter_map(|p| p.trim().split_once(':')).collect();
    for listener in kafka["KAFKA_LISTENERS"].split(',') {
        let (name, address) = listener.trim().split_once("://").expect("NAME://host:port");
        if protocols[name] == "PLAINTEXT" {
            assert!(address.starts_with("localhost:") || address.starts_with("127.0.0.1:"), "{name} is unauthenticated: loopback only");
        } else {
            assert_eq!(protocols[name], "SASL_PLAINTEXT", "{name}");
        }
    }
    assert!(kafka["KAFKA_LISTENER_NAME_CLIENT_SASL_ENABLED_MECHANISMS"].contains("SCRAM-SHA-512"));
    assert_eq!(kafka["KAFKA_AUTHORIZER_CLASS_NAME"], "org.apache.kafka.metadata.authorizer.StandardAuthorizer");
    assert_eq!(kafka["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"], "false", "nothing allowed without an ACL");

    // Each meter service that talks to Kafka has its own SCRAM user and a
    // required password.
    let script = kafka_init_script(&services);
    let mut users = BTreeMap::new();
    for (name, kind) in [("meter-aggregator", "aggregator"), ("meter-sink-clickhouse", "sink"), ("meter-collector", "collector")] {
        let env = env_of(service(&services, name));
        assert_eq!(env.get("METER_KAFKA__SECURITY_PROTOCOL").map(String::as_str), Some("sasl_plaintext"), "{name}");
        let user = env.get("METER_KAFKA__SASL_USERNAME").cloned().unwrap_or_else(|| panic!("{name}: no SASL user"));
        assert!(env.get("METER_KAFKA__SASL_PASSWORD").is_some_and(String::is_empty), "{name}: the password is required from the environment");
        assert!(script.contains(&format!("user {user} ")), "{name}: kafka-init creates no SCRAM user {user}");
        users.insert(kind, user);
    }
    assert_eq!(users.values().collect::<BTreeSet<_>>().len(), 3, "one user per service: {users:?}");

    // ACLs: user -> [(operations, resource)]
    let mut acls: BTreeMap<String, Vec<(Vec<String>, String)>> = BTreeMap::new();
    for line in script.lines().map(str::trim).filter(|l| l.starts_with("acl ")) {
        let tokens: Vec<&str> = line.split_whitespace().collect();
        let ops: Vec<String> = tokens.windows(2).filter(|w| w[0] == "--operation").map(|w| w[1].to_string()).collect();
        let resource = tokens
            .windows(2)
            .find(|w| w[0] == "--topic" || w[0] == "--group")
            .map(|w| format!("{} {}", w[0], w[1]))
            .unwrap_or_else(|| "--cluster".into());
        acls.entry(tokens[1].to_string()).or_default().push((ops, resource));
    }
    let can = |user: &str, op: &str, resource: &str| {
        acls.get(user).is_some_and(|list| list.iter().any(|(ops, r)| ops.iter().any(|o| o == op) && (r == resource || (r.ends_with('.') && resource.starts_with(r.as_str())))))
    };
    let (collector, aggregator, sink) = (&users["collector"], &users["aggregator"], &users["sink"]);
    // Collectors may only write event topics (and dead letters).
    assert!(can(collector, "Write", "--topic meter.events.ticket-time"));
    assert!(!acls[collector.as_str()].iter().any(|(ops, _)| ops.iter().any(|o| o == "Read")), "collectors read nothing");
    assert!(!can(collector, "Write", "--topic meter.aggregates"), "collectors cannot forge aggregates");
    // The aggregator reads events and writes aggregates (and its clock records).
    assert!(can(aggregator, "Read", "--topic meter.events.vm-usage") && can(aggregator, "Write", "--topic meter.events.vm-usage"));
    assert!(can(aggregator, "Write", "--topic meter.aggregates") && can(aggregator, "Read", "--group meter-aggregator"));
    // The sink reads; the billing system may only read aggregates.
    assert!(can(sink, "Read", "--topic meter.aggregates") && !can(sink, "Write", "--topic meter.aggregates"));
    for (ops, resource) in &acls["billing"] {
        assert!(ops.iter().all(|o| o == "Read" || o == "Describe"), "billing: {ops:?} on {resource}");
        assert!(resource == "--topic meter.aggregates" || resource.starts_with("--group billing"), "billing reaches {resource}");
    }
    // Nobody but the admin gets administrative operations.
    for (user, list) in &acls {
        for (ops, resource) in list {
            assert!(!ops.iter().any(|o| ["All", "Alter", "AlterConfigs", "Delete", "Create"].contains(&o.as_str())), "{user}: {ops:?} on {resource}");
        }
    }
}
