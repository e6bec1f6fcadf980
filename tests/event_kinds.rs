//! The kinds table (`meter_model::KINDS`) is the one place an event kind is
//! described. What cannot be derived from it at run time (a shell script, the
//! compose file, SQL migrations, the example configuration) is checked here:
//! a kind added to the table and missing from one of them fails this test,
//! with the file to edit.

use std::path::Path;

use meter_model::{EventKind, KINDS};

fn repo_file(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// The topics `scripts/stack.sh` creates on the local broker.
fn stack_script_topics() -> Vec<String> {
    let script = repo_file("scripts/stack.sh");
    let start = script.find("TOPICS=(").expect("scripts/stack.sh has a TOPICS=( ... ) list");
    let end = start + script[start..].find(')').expect("the TOPICS list is closed");
    script[start + "TOPICS=(".len()..end].split_whitespace().map(str::to_string).collect()
}

/// The topics the compose file's kafka-init creates.
fn compose_topics() -> Vec<String> {
    let compose = repo_file("docker-compose.yml");
    compose
        .lines()
        .filter(|l| l.contains("kafka-topics.sh") && l.contains("--create"))
        .filter_map(|l| l.split("--topic ").nth(1)?.split_whitespace().next().map(str::to_string))
        .collect()
}

#[test]
fn every_kind_has_its_topic_on_the_local_stack_and_in_compose() {
    let stack = stack_script_topics();
    let compose = compose_topics();
    assert!(stack.len() >= KINDS.len() && compose.len() >= KINDS.len(), "parsed {stack:?} and {compose:?}");
    for spec in &KINDS {
        assert!(stack.iter().any(|t| t == spec.default_topic), "scripts/stack.sh TOPICS lacks {} ({:?})", spec.default_topic, spec.kind);
        assert!(compose.iter().any(|t| t == spec.default_topic), "docker-compose.yml kafka-init does not create {}", spec.default_topic);
        // The collectors', aggregator's and sink's ACLs are prefixed on meter.events.
        assert!(spec.default_topic.starts_with("meter.events."), "{}: the compose ACLs cover meter.events.* only", spec.default_topic);
    }
    let defaults = meter_config::TopicsConfig::default();
    for kind in EventKind::ALL {
        assert_eq!(defaults.event(kind), kind.spec().default_topic);
        assert_eq!(defaults.kind_of(kind.spec().default_topic), Some(kind));
    }
}

#[test]
fn every_kind_has_its_detail_table_in_the_migrations_and_the_tenant_copies() {
    let migrations: String = sink_clickhouse::migrations::MIGRATIONS.iter().map(|m| m.sql).collect::<Vec<_>>().join("\n");
    let tenant_tables = sink_clickhouse::tenants::tenant_tables();
    for spec in &KINDS {
        let created = format!("CREATE TABLE IF NOT EXISTS {{db}}.{}\n", spec.detail_table);
        assert!(
            migrations.contains(&created),
            "no migration in services/sink-clickhouse/migrations creates {} ({:?})",
            spec.detail_table,
            spec.kind
        );
        assert!(tenant_tables.contains(&spec.detail_table), "{} is not copied into tenant databases", spec.detail_table);
    }
}

#[test]
fn every_kind_is_documented_where_users_look() {
    let example = repo_file("config/meter.toml");
    let readme = repo_file("README.md");
    let ingest_example = repo_file("services/ingest-api/README.md");
    for spec in &KINDS {
        let key = spec.slug.replace('-', "_");
        assert!(example.contains(&format!("{key} = \"{}\"", spec.default_topic)), "config/meter.toml lacks topics.{key}");
        assert!(readme.contains(spec.slug), "README.md never names the kind {}", spec.slug);
        assert!(ingest_example.contains(spec.cloudevents_type), "services/ingest-api/README.md lacks the type {}", spec.cloudevents_type);
        assert!(Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(format!("schemas/{key}.avsc")).exists(), "schemas/{key}.avsc");
    }
}
