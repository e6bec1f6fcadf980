//! The Grafana dashboards (dashboards/*.json) and the Prometheus alert rules
//! (deploy/prometheus/rules/*.yml) checked against the code, without Grafana
//! or Prometheus running:
//!
//! - every dashboard parses, has a uid (unique across files), a title and a
//!   schemaVersion; its panels (also those nested in rows) have unique ids and
//!   a gridPos inside the 24-column grid; every query target has a unique refId
//!   and uses a data source that deploy/grafana/provisioning provisions;
//! - every PromQL expression (Prometheus panels and variables, alert rules)
//!   parses (promql-parser) and selects only metrics of the services'
//!   catalogues (`METRICS` of each crate, `meter_telemetry::MetricFamily`; a
//!   histogram only as its `_bucket`, `_sum` and `_count` series), Prometheus'
//!   `up` and `ALERTS`, and recorded rules, with label matchers naming only the
//!   family's labels and, for closed labels (reasons), only their values; the
//!   catalogue itself is checked against what the services register;
//! - every ClickHouse query (panels, variables, SQL quoted in alert
//!   annotations) reads only `meter.<relation>`s that a migration in
//!   services/sink-clickhouse/migrations creates, a ReplacingMergeTree table
//!   always with FINAL (a view never: it cannot take it), and names only
//!   columns of the relations it reads and its own aliases; queries are
//!   parsed by sqlparser's ClickHouse dialect (Grafana macros replaced
//!   first). The migrations' own DDL is still read by a small scanner:
//!   sqlparser 0.59 does not parse ClickHouse's `ALL LEFT JOIN` in views;
//! - every alert has severity page or ticket, a summary and a description,
//!   and the metrics its annotations cite exist; every alert has a promtool
//!   test case where it fires and one where it must not
//!   (deploy/prometheus/tests/*.yml).
//!
//! The checkers are themselves tested on wrong input (a misspelled metric, a
//! histogram without suffix, a missing FINAL, an unknown column), so that they
//! cannot pass by checking nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use meter_tests::repo_root;
use serde_json::Value as Json;
use serde_yaml::Value as Yaml;

// ------------------------------------------------------------------ files --

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn rel(path: &Path) -> String {
    path.strip_prefix(repo_root()).unwrap_or(path).display().to_string()
}

/// Files of `dir` (not recursive) whose name ends with `suffix`, sorted.
fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.is_file() && p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with(suffix)))
        .collect();
    out.sort();
    out
}

fn dashboards() -> Vec<(PathBuf, Json)> {
    files(&repo_root().join("dashboards"), ".json")
        .into_iter()
        .map(|path| {
            let json: Json = serde_json::from_str(&read(&path)).unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", rel(&path)));
            (path, json)
        })
        .collect()
}

fn rule_files() -> Vec<(PathBuf, Yaml)> {
    files(&repo_root().join("deploy/prometheus/rules"), ".yml")
        .into_iter()
        .map(|path| {
            let yaml: Yaml = serde_yaml::from_str(&read(&path)).unwrap_or_else(|e| panic!("{} does not parse: {e}", rel(&path)));
            (path, yaml)
        })
        .collect()
}

// ------------------------------------------------------ exported metrics --

/// Names the rules record (`record:`): expressions may use them too.
fn recorded_names() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (_, yaml) in rule_files() {
        for group in yaml["groups"].as_sequence().into_iter().flatten() {
            for rule in group["rules"].as_sequence().into_iter().flatten() {
                if let Some(name) = rule["record"].as_str() {
                    names.insert(name.to_string());
                }
            }
        }
    }
    names
}

struct Known {
    /// Every series name an expression may select.
    metrics: BTreeSet<String>,
    /// The catalogued families by series name (labels and closed values).
    families: BTreeMap<String, meter_telemetry::MetricFamily>,
    schema: Schema,
}

/// The metric families the services declare (their `METRICS` catalogues).
fn catalogue() -> Vec<meter_telemetry::MetricFamily> {
    [
        meter_telemetry::METRICS,
        collector_runtime::internal_events::METRICS,
        ingest_api::api::METRICS,
        aggregator::internal_events::METRICS,
        sink_clickhouse::internal_events::METRICS,
        sink_clickhouse::contract_metrics::METRICS,
        sink_clickhouse::capacity::METRICS,
    ]
    .concat()
}

fn known() -> Known {
    let mut families = BTreeMap::new();
    for family in catalogue() {
        for name in family.exported_names() {
            families.insert(name, family);
        }
    }
    let mut metrics: BTreeSet<String> = families.keys().cloned().collect();
    metrics.extend(recorded_names());
    metrics.insert("up".into());
    metrics.insert("ALERTS".into());
    Known { metrics, families, schema: schema() }
}

// ---------------------------------------------------------------- PromQL --

/// Index just past the bracket closing the one at `open` (quotes respected).
fn skip_balanced(chars: &[char], open: usize) -> usize {
    let (opening, closing) = match chars[open] {
        '(' => ('(', ')'),
        '[' => ('[', ']'),
        _ => ('{', '}'),
    };
    let mut depth = 0;
    let mut i = open;
    while i < chars.len() {
        match chars[i] {
            '"' | '\'' | '`' => i = skip_quoted(chars, i) - 1,
            c if c == opening => depth += 1,
            c if c == closing => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    chars.len()
}

/// Index just past the string literal starting at `open`.
fn skip_quoted(chars: &[char], open: usize) -> usize {
    let quote = chars[open];
    let mut i = open + 1;
    while i < chars.len() {
        if chars[i] == '\\' && quote != '`' {
            i += 2;
            continue;
        }
        if chars[i] == quote {
            return i + 1;
        }
        i += 1;
    }
    chars.len()
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Grafana's interval variables, replaced by a duration so that the
/// expression parses (other variables only appear inside label strings).
const GRAFANA_INTERVALS: [&str; 4] = ["$__rate_interval", "$__interval", "$__range", "${__rate_interval}"];

/// A selector of the expression: metric name and label matchers (name, op, value).
struct Selector {
    name: String,
    matchers: Vec<(String, promql_parser::label::MatchOp, String)>,
}

struct Selectors(Vec<Selector>);

impl promql_parser::util::ExprVisitor for Selectors {
    type Error = String;

    fn pre_visit(&mut self, expr: &promql_parser::parser::Expr) -> Result<bool, String> {
        use promql_parser::parser::Expr;
        let selector = match expr {
            Expr::VectorSelector(vs) => vs,
            Expr::MatrixSelector(ms) => &ms.vs,
            _ => return Ok(true),
        };
        let matchers: Vec<_> = selector.matchers.matchers.iter().map(|m| (m.name.clone(), m.op.clone(), m.value.clone())).collect();
        let name = selector
            .name
            .clone()
            .or_else(|| matchers.iter().find(|(n, _, _)| n == "__name__").map(|(_, _, v)| v.clone()))
            .unwrap_or_default();
        self.0.push(Selector { name, matchers });
        Ok(true)
    }
}

/// The selectors of a PromQL expression, parsed by promql-parser.
fn promql_selectors(expr: &str) -> Result<Vec<Selector>, String> {
    let mut text = expr.to_string();
    for variable in GRAFANA_INTERVALS {
        text = text.replace(variable, "5m");
    }
    let parsed = promql_parser::parser::parse(&text).map_err(|e| format!("does not parse as PromQL ({e}): {expr:?}"))?;
    let mut selectors = Selectors(Vec::new());
    promql_parser::util::walk_expr(&mut selectors, &parsed)?;
    Ok(selectors.0)
}

/// Labels every scraped series has besides its own.
const TARGET_LABELS: [&str; 3] = ["job", "instance", "__name__"];

/// Errors of a PromQL expression: metrics that nothing exports, labels a
/// metric does not have, values outside a label's closed set.
fn check_promql(expr: &str, known: &Known) -> Vec<String> {
    let selectors = match promql_selectors(expr) {
        Ok(s) => s,
        Err(e) => return vec![e],
    };
    let mut errors = Vec::new();
    for Selector { name, matchers } in selectors {
        if !known.metrics.contains(&name) {
            let hint = if known.metrics.contains(&format!("{name}_bucket")) { " (a histogram: use its _bucket, _sum or _count series)" } else { "" };
            errors.push(format!("`{name}` is not a metric the services export{hint}: {expr:?}"));
            continue;
        }
        let Some(family) = known.families.get(&name) else { continue };
        for (label, op, value) in matchers {
            let histogram_le = family.metric_type == meter_telemetry::MetricType::Histogram && label == "le";
            if !family.labels.contains(&label.as_str()) && !TARGET_LABELS.contains(&label.as_str()) && !histogram_le {
                errors.push(format!("`{name}` has no label `{label}` (it has {:?}): {expr:?}", family.labels));
            }
            let closed = family.closed_labels.iter().find(|l| l.label == label);
            if let (Some(closed), promql_parser::label::MatchOp::Equal) = (closed, &op) {
                if !closed.values.contains(&value.as_str()) {
                    errors.push(format!("`{name}{{{label}=\"{value}\"}}` never exists: {label} is one of {:?}: {expr:?}", closed.values));
                }
            }
        }
    }
    errors
}

// ------------------------------------------------------------ ClickHouse --

#[derive(Debug)]
struct Relation {
    columns: BTreeSet<String>,
    view: bool,
    /// ReplacingMergeTree: read with FINAL to get the latest revision.
    replacing: bool,
}

#[derive(Debug)]
struct Schema {
    relations: BTreeMap<String, Relation>,
}

/// Removes `-- ...` comments (the migrations have no `--` inside strings).
fn strip_sql_comments(sql: &str) -> String {
    sql.lines().map(|line| line.split("--").next().unwrap_or("")).collect::<Vec<_>>().join("\n")
}

/// Splits at the commas outside brackets and quotes.
fn split_top_level(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut parts = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '(' | '[' => {
                i = skip_balanced(&chars, i);
                continue;
            }
            '\'' | '"' | '`' => {
                i = skip_quoted(&chars, i);
                continue;
            }
            ',' => {
                parts.push(chars[start..i].iter().collect::<String>().trim().to_string());
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    parts.push(chars[start..].iter().collect::<String>().trim().to_string());
    parts.into_iter().filter(|p| !p.is_empty()).collect()
}

/// Byte position of `word` (ASCII, any case, whole word) in `text` from `from`.
fn find_word(text: &str, word: &str, from: usize) -> Option<usize> {
    let upper = text.to_ascii_uppercase();
    let word = word.to_ascii_uppercase();
    let mut at = from;
    while let Some(pos) = upper[at..].find(&word) {
        let start = at + pos;
        let end = start + word.len();
        let before_ok = start == 0 || !is_ident_char(upper.as_bytes()[start - 1] as char);
        let after_ok = end >= upper.len() || !is_ident_char(upper.as_bytes()[end] as char);
        if before_ok && after_ok {
            return Some(start);
        }
        at = end;
    }
    None
}

fn leading_ident(text: &str) -> String {
    let text = text.trim_start().trim_start_matches(['`', '"']);
    text.chars().take_while(|c| is_ident_char(*c)).collect()
}

/// The relations the migrations create, with their columns.
fn schema() -> Schema {
    let dir = repo_root().join("services/sink-clickhouse/migrations");
    let mut relations = BTreeMap::new();
    for path in files(&dir, ".sql") {
        let sql = strip_sql_comments(&read(&path));
        for statement in sql.split(';') {
            for (kind, view) in [("TABLE", false), ("VIEW", true)] {
                let Some(create) = find_word(statement, "CREATE", 0) else { continue };
                let head = format!("CREATE {kind} IF NOT EXISTS {{db}}.");
                let normalized: String = statement[create..].split_whitespace().collect::<Vec<_>>().join(" ");
                if !normalized.to_ascii_uppercase().starts_with(&head.to_ascii_uppercase()) {
                    continue;
                }
                let rest = &normalized[head.len()..];
                let name = leading_ident(rest);
                let after_name = &rest[name.len()..];
                let columns: BTreeSet<String> = if view {
                    let select = find_word(after_name, "SELECT", 0).unwrap_or_else(|| panic!("{}: view {name} has no SELECT", rel(&path)));
                    let body = &after_name[select + "SELECT".len()..];
                    let chars: Vec<char> = body.chars().collect();
                    // FROM at depth 0.
                    let mut i = 0;
                    let mut from = body.len();
                    while i < chars.len() {
                        match chars[i] {
                            '(' => {
                                i = skip_balanced(&chars, i);
                                continue;
                            }
                            '\'' => {
                                i = skip_quoted(&chars, i);
                                continue;
                            }
                            _ => {}
                        }
                        let prefix: String = chars[i..].iter().take(5).collect();
                        let boundary = i == 0 || !is_ident_char(chars[i - 1]);
                        if boundary && prefix.eq_ignore_ascii_case("FROM ") {
                            from = chars[..i].iter().collect::<String>().len();
                            break;
                        }
                        i += 1;
                    }
                    split_top_level(&body[..from])
                        .iter()
                        .map(|item| {
                            let chars: Vec<char> = item.chars().collect();
                            // The alias after the last top-level AS, else the column itself.
                            let mut alias = None;
                            let mut i = 0;
                            while i < chars.len() {
                                match chars[i] {
                                    '(' | '[' => {
                                        i = skip_balanced(&chars, i);
                                        continue;
                                    }
                                    '\'' => {
                                        i = skip_quoted(&chars, i);
                                        continue;
                                    }
                                    _ => {}
                                }
                                let rest: String = chars[i..].iter().collect();
                                if (i == 0 || chars[i - 1].is_whitespace()) && rest.len() > 3 && rest[..3].eq_ignore_ascii_case("AS ") {
                                    alias = Some(leading_ident(&rest[3..]));
                                }
                                i += 1;
                            }
                            alias.unwrap_or_else(|| item.rsplit('.').next().unwrap_or(item).trim().to_string())
                        })
                        .collect()
                } else {
                    let open = after_name.find('(').unwrap_or_else(|| panic!("{}: table {name} has no column list", rel(&path)));
                    let chars: Vec<char> = after_name[open..].chars().collect();
                    let close = skip_balanced(&chars, 0);
                    let list: String = chars[1..close - 1].iter().collect();
                    split_top_level(&list)
                        .iter()
                        .map(|item| leading_ident(item))
                        .filter(|c| !["INDEX", "CONSTRAINT", "PROJECTION"].contains(&c.to_ascii_uppercase().as_str()))
                        .collect()
                };
                let replacing = !view && normalized.contains("ReplacingMergeTree");
                relations.insert(name, Relation { columns, view, replacing });
            }
        }
    }
    // Guard against a parser that silently finds nothing.
    let aggregates = relations.get("aggregates").expect("a migration creates {db}.aggregates");
    assert!(
        aggregates.replacing && !aggregates.view && aggregates.columns.contains("window_date") && aggregates.columns.contains("inserted_at"),
        "migrations: aggregates parsed wrong: {aggregates:?}"
    );
    let daily = relations.get("daily_totals").expect("a migration creates {db}.daily_totals");
    assert!(
        daily.view && daily.columns.contains("day") && daily.columns.contains("dimensions") && !daily.columns.contains("window_date"),
        "migrations: daily_totals parsed wrong: {daily:?}"
    );
    relations.values().for_each(|r| assert!(!r.columns.is_empty()));
    Schema { relations }
}

/// The query with Grafana's macros and variables replaced so that it parses:
/// `$__dateFilter(col)` / `$__timeFilter(col)` become a comparison on their
/// column (which is then checked like any other), `${var}` and `$var` a
/// literal.
fn without_grafana_variables(sql: &str) -> String {
    let chars: Vec<char> = sql.chars().collect();
    let mut out = String::with_capacity(sql.len());
    let mut i = 0;
    while i < chars.len() {
        if chars[i] != '$' {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        i += 1;
        if chars.get(i) == Some(&'{') {
            i = skip_balanced(&chars, i);
            out.push('0');
            continue;
        }
        let start = i;
        while i < chars.len() && is_ident_char(chars[i]) {
            i += 1;
        }
        let name: String = chars[start..i].iter().collect();
        if name.starts_with("__") && chars.get(i) == Some(&'(') {
            let close = skip_balanced(&chars, i);
            let argument: String = chars[i + 1..close.saturating_sub(1)].iter().collect();
            out.push_str(&format!("({argument} >= today())"));
            i = close;
        } else {
            out.push('0');
        }
    }
    out
}

/// What a query reads and names, collected from its syntax tree.
#[derive(Default)]
struct SqlNames {
    /// Relations of FROM and JOIN: (name parts, whether FINAL follows).
    relations: Vec<(Vec<String>, bool)>,
    /// Column references (the last part of a qualified one).
    columns: Vec<String>,
    /// Names the query defines: `AS` aliases of expressions and tables, CTEs.
    aliases: BTreeSet<String>,
}

impl SqlNames {
    fn select_aliases(&mut self, body: &sqlparser::ast::SetExpr) {
        use sqlparser::ast::{SelectItem, SetExpr};
        match body {
            SetExpr::Select(select) => {
                for item in &select.projection {
                    if let SelectItem::ExprWithAlias { alias, .. } = item {
                        self.aliases.insert(alias.value.clone());
                    }
                }
            }
            SetExpr::SetOperation { left, right, .. } => {
                self.select_aliases(left);
                self.select_aliases(right);
            }
            SetExpr::Query(query) => self.select_aliases(&query.body),
            _ => {}
        }
    }
}

impl sqlparser::ast::Visitor for SqlNames {
    type Break = ();

    fn pre_visit_query(&mut self, query: &sqlparser::ast::Query) -> std::ops::ControlFlow<()> {
        self.select_aliases(&query.body);
        for cte in query.with.iter().flat_map(|w| &w.cte_tables) {
            self.aliases.insert(cte.alias.name.value.clone());
        }
        std::ops::ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &sqlparser::ast::TableFactor) -> std::ops::ControlFlow<()> {
        use sqlparser::ast::TableFactor;
        match factor {
            TableFactor::Table { name, alias, .. } => {
                let parts = name.0.iter().map(|p| p.to_string().trim_matches('"').trim_matches('`').to_string()).collect();
                // sqlparser 0.59 reads ClickHouse's `FINAL` modifier as the table's alias.
                let is_final = alias.as_ref().is_some_and(|a| a.name.value.eq_ignore_ascii_case("FINAL"));
                if let Some(alias) = alias.as_ref().filter(|_| !is_final) {
                    self.aliases.insert(alias.name.value.clone());
                }
                self.relations.push((parts, is_final));
            }
            TableFactor::Derived { alias: Some(alias), .. } => {
                self.aliases.insert(alias.name.value.clone());
            }
            _ => {}
        }
        std::ops::ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &sqlparser::ast::Expr) -> std::ops::ControlFlow<()> {
        use sqlparser::ast::Expr;
        match expr {
            Expr::Identifier(ident) => self.columns.push(ident.value.clone()),
            Expr::CompoundIdentifier(parts) => {
                if let Some(last) = parts.last() {
                    self.columns.push(last.value.clone());
                }
            }
            Expr::Lambda(lambda) => self.aliases.extend(lambda.params.iter().map(|p| p.value.clone())),
            _ => {}
        }
        std::ops::ControlFlow::Continue(())
    }
}

/// Errors of a ClickHouse query against the migrated schema; the query is
/// parsed by sqlparser's ClickHouse dialect.
fn check_sql(sql: &str, schema: &Schema) -> Vec<String> {
    use sqlparser::ast::Visit;
    let text = without_grafana_variables(sql);
    let statements = match sqlparser::parser::Parser::parse_sql(&sqlparser::dialect::ClickHouseDialect {}, &text) {
        Ok(statements) => statements,
        Err(e) => return vec![format!("does not parse as ClickHouse SQL ({e}): {sql:?}")],
    };
    let [statement @ sqlparser::ast::Statement::Query(_)] = statements.as_slice() else {
        return vec![format!("expected one SELECT query: {sql:?}")];
    };
    let mut names = SqlNames::default();
    let _ = statement.visit(&mut names);
    let mut errors = Vec::new();
    let mut columns = BTreeSet::new();
    if names.relations.is_empty() {
        errors.push(format!("the query reads no meter.<relation>: {sql:?}"));
    }
    for (parts, is_final) in &names.relations {
        if names.aliases.contains(parts.join(".").as_str()) {
            continue; // a CTE
        }
        let [db, name] = parts.as_slice() else {
            errors.push(format!("FROM/JOIN must name a meter.<relation> (or a subquery), not {}: {sql:?}", parts.join(".")));
            continue;
        };
        if db != "meter" {
            errors.push(format!("FROM/JOIN must name a meter.<relation>, not {db}.{name}: {sql:?}"));
            continue;
        }
        match schema.relations.get(name) {
            None => errors.push(format!(
                "meter.{name} is created by no migration (services/sink-clickhouse/migrations; known: {:?}): {sql:?}",
                schema.relations.keys().collect::<Vec<_>>()
            )),
            Some(relation) => {
                columns.extend(relation.columns.iter().cloned());
                if relation.replacing && !is_final {
                    errors.push(format!("meter.{name} (ReplacingMergeTree) must be read with FINAL, or older revisions count too: {sql:?}"));
                }
                if relation.view && *is_final {
                    errors.push(format!("meter.{name} is a view, which ClickHouse cannot read with FINAL: {sql:?}"));
                }
            }
        }
    }
    for word in names.columns {
        if !columns.contains(&word) && !names.aliases.contains(&word) {
            errors.push(format!("`{word}` is neither a column of the relations read ({columns:?}) nor an alias: {sql:?}"));
        }
    }
    errors
}

// ------------------------------------------------------------ dashboards --

/// Panels of a dashboard, those nested in (collapsed) rows included.
fn all_panels(dashboard: &Json) -> Vec<&Json> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        out.push(panel);
        out.extend(panel["panels"].as_array().into_iter().flatten());
    }
    out
}

/// Provisioned data sources: uid -> type.
fn provisioned_datasources() -> BTreeMap<String, String> {
    let path = repo_root().join("deploy/grafana/provisioning/datasources/datasources.yml");
    let yaml: Yaml = serde_yaml::from_str(&read(&path)).unwrap_or_else(|e| panic!("{} does not parse: {e}", rel(&path)));
    yaml["datasources"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|ds| Some((ds["uid"].as_str()?.to_string(), ds["type"].as_str()?.to_string())))
        .collect()
}

#[derive(PartialEq)]
enum Lang {
    PromQL,
    ClickHouse,
}

/// The query language of a target (or variable), from its data source or the panel's.
fn language(own: &Json, panel: &Json, datasources: &BTreeMap<String, String>, at: &str, errors: &mut Vec<String>) -> Option<Lang> {
    let ds = if own["datasource"].is_object() { &own["datasource"] } else { &panel["datasource"] };
    let Some(uid) = ds["uid"].as_str() else {
        errors.push(format!("{at}: no datasource uid (provisioned: {:?})", datasources.keys().collect::<Vec<_>>()));
        return None;
    };
    let Some(kind) = datasources.get(uid) else {
        errors.push(format!("{at}: datasource uid {uid:?} is not provisioned (deploy/grafana/provisioning: {datasources:?})"));
        return None;
    };
    if let Some(declared) = ds["type"].as_str() {
        if declared != kind {
            errors.push(format!("{at}: datasource {uid:?} has type {kind:?}, not {declared:?}"));
        }
    }
    match kind.as_str() {
        "prometheus" => Some(Lang::PromQL),
        "grafana-clickhouse-datasource" => Some(Lang::ClickHouse),
        other => {
            errors.push(format!("{at}: no check for data source type {other:?}"));
            None
        }
    }
}

fn check_query(lang: Lang, query: Option<&str>, field: &str, known: &Known, at: &str, errors: &mut Vec<String>) {
    match query.map(str::trim).filter(|q| !q.is_empty()) {
        None => errors.push(format!("{at}: empty or missing `{field}`")),
        Some(q) => {
            let found = match lang {
                Lang::PromQL => check_promql(q, known),
                Lang::ClickHouse => check_sql(q, &known.schema),
            };
            errors.extend(found.into_iter().map(|e| format!("{at}: {e}")));
        }
    }
}

/// Everything wrong with one dashboard.
fn dashboard_errors(name: &str, dashboard: &Json, known: &Known, datasources: &BTreeMap<String, String>) -> Vec<String> {
    let mut errors = Vec::new();
    for key in ["uid", "title"] {
        if dashboard[key].as_str().is_none_or(|s| s.trim().is_empty()) {
            errors.push(format!("{name}: no {key}"));
        }
    }
    if dashboard["schemaVersion"].as_u64().is_none() {
        errors.push(format!("{name}: no schemaVersion"));
    }
    let panels = all_panels(dashboard);
    if panels.is_empty() {
        errors.push(format!("{name}: no panels"));
    }
    let mut ids = BTreeSet::new();
    for panel in &panels {
        let title = panel["title"].as_str().unwrap_or("?");
        let at = format!("{name}: panel {title:?}");
        match panel["id"].as_u64() {
            None => errors.push(format!("{at}: no numeric id")),
            Some(id) if !ids.insert(id) => errors.push(format!("{at}: id {id} is used by another panel")),
            Some(_) => {}
        }
        if panel["type"].as_str().is_none() {
            errors.push(format!("{at}: no type"));
        }
        let grid = &panel["gridPos"];
        match (grid["x"].as_u64(), grid["y"].as_u64(), grid["w"].as_u64(), grid["h"].as_u64()) {
            (Some(x), Some(_), Some(w), Some(h)) if w > 0 && h > 0 && x + w <= 24 => {}
            _ => errors.push(format!("{at}: gridPos must have x, y, w > 0, h > 0 within 24 columns: {grid}")),
        }
        if panel["type"] == "row" {
            continue;
        }
        let targets = panel["targets"].as_array().map(Vec::as_slice).unwrap_or_default();
        if targets.is_empty() {
            errors.push(format!("{at}: no targets"));
        }
        let mut ref_ids = BTreeSet::new();
        for target in targets {
            let Some(ref_id) = target["refId"].as_str().filter(|r| !r.is_empty()) else {
                errors.push(format!("{at}: a target has no refId"));
                continue;
            };
            if !ref_ids.insert(ref_id) {
                errors.push(format!("{at}: refId {ref_id} is used twice"));
            }
            let at = format!("{at}, target {ref_id}");
            match language(target, panel, datasources, &at, &mut errors) {
                Some(Lang::PromQL) => check_query(Lang::PromQL, target["expr"].as_str(), "expr", known, &at, &mut errors),
                Some(Lang::ClickHouse) => check_query(Lang::ClickHouse, target["rawSql"].as_str(), "rawSql", known, &at, &mut errors),
                None => {}
            }
        }
    }
    for variable in dashboard["templating"]["list"].as_array().into_iter().flatten() {
        if variable["type"] != "query" {
            continue;
        }
        let at = format!("{name}: variable {}", variable["name"]);
        let query = variable["query"].as_str().or_else(|| variable["query"]["query"].as_str());
        if let Some(lang) = language(variable, &Json::Null, datasources, &at, &mut errors) {
            let query = query.map(|q| q.trim_start_matches("query_result(").trim_end_matches(')'));
            check_query(lang, query, "query", known, &at, &mut errors);
        }
    }
    errors
}

#[test]
fn dashboards_parse_and_query_only_what_exists() {
    let known = known();
    let datasources = provisioned_datasources();
    let dashboards = dashboards();
    let names: BTreeSet<String> =
        dashboards.iter().map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    for expected in ["meter-sre.json", "meter-analysts.json"] {
        assert!(names.contains(expected), "dashboards/{expected} is missing (found {names:?})");
    }
    let mut errors = Vec::new();
    let mut uids = BTreeMap::new();
    let mut languages = BTreeSet::new();
    for (path, dashboard) in &dashboards {
        let name = rel(path);
        if let Some(uid) = dashboard["uid"].as_str() {
            if let Some(other) = uids.insert(uid.to_string(), name.clone()) {
                errors.push(format!("{name}: uid {uid:?} is also the uid of {other}"));
            }
        }
        errors.extend(dashboard_errors(&name, dashboard, &known, &datasources));
        for panel in all_panels(dashboard) {
            for target in panel["targets"].as_array().into_iter().flatten() {
                if target["expr"].is_string() {
                    languages.insert("promql");
                }
                if target["rawSql"].is_string() {
                    languages.insert("sql");
                }
            }
        }
    }
    assert!(errors.is_empty(), "dashboards/ has {} problem(s):\n  {}", errors.len(), errors.join("\n  "));
    assert_eq!(languages.len(), 2, "expected both Prometheus and ClickHouse panels, found {languages:?}");
}

// ----------------------------------------------------------------- rules --

/// `meter_...` words in free text (annotations).
fn metric_words(text: &str) -> Vec<String> {
    text.split(|c: char| !(is_ident_char(c)))
        .filter(|w| w.starts_with("meter_") && w.len() > "meter_".len())
        .map(str::to_string)
        .collect()
}

/// Backquoted SQL (`SELECT ...`) in free text.
fn quoted_sql(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|s| s.trim_start().get(..7).is_some_and(|w| w.eq_ignore_ascii_case("SELECT ")))
        .map(str::to_string)
        .collect()
}

fn alert_names() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (_, yaml) in rule_files() {
        for group in yaml["groups"].as_sequence().into_iter().flatten() {
            for rule in group["rules"].as_sequence().into_iter().flatten() {
                if let Some(name) = rule["alert"].as_str() {
                    names.insert(name.to_string());
                }
            }
        }
    }
    names
}

#[test]
fn alert_rules_name_only_exported_metrics_and_say_what_to_do() {
    let known = known();
    let mut errors = Vec::new();
    let mut alerts = 0;
    for (path, yaml) in rule_files() {
        let file = rel(&path);
        let Some(groups) = yaml["groups"].as_sequence() else {
            errors.push(format!("{file}: no `groups` list"));
            continue;
        };
        for group in groups {
            for rule in group["rules"].as_sequence().into_iter().flatten() {
                let name = rule["alert"].as_str().or_else(|| rule["record"].as_str()).unwrap_or("?");
                let at = format!("{file}: {name}");
                match rule["expr"].as_str() {
                    None => errors.push(format!("{at}: no expr")),
                    Some(expr) => errors.extend(check_promql(expr, &known).into_iter().map(|e| format!("{at}: {e}"))),
                }
                if rule["alert"].is_null() {
                    continue;
                }
                alerts += 1;
                let severity = rule["labels"]["severity"].as_str();
                if !matches!(severity, Some("page") | Some("ticket")) {
                    errors.push(format!("{at}: labels.severity must be page or ticket, not {severity:?}"));
                }
                for key in ["summary", "description"] {
                    match rule["annotations"][key].as_str().filter(|s| !s.trim().is_empty()) {
                        None => errors.push(format!("{at}: no annotations.{key}")),
                        Some(text) => {
                            for metric in metric_words(text) {
                                if !known.metrics.contains(&metric) {
                                    errors.push(format!("{at}: annotations.{key} cites {metric}, which no service exports"));
                                }
                            }
                            for sql in quoted_sql(text) {
                                errors.extend(check_sql(&sql, &known.schema).into_iter().map(|e| format!("{at}: annotations.{key}: {e}")));
                            }
                        }
                    }
                }
            }
        }
    }
    assert!(errors.is_empty(), "deploy/prometheus/rules has {} problem(s):\n  {}", errors.len(), errors.join("\n  "));
    assert!(alerts > 0, "deploy/prometheus/rules defines no alert");
}

#[test]
fn every_alert_has_promtool_cases_where_it_fires_and_where_it_does_not() {
    let dir = repo_root().join("deploy/prometheus/tests");
    let mut fires = BTreeSet::new();
    let mut silent = BTreeSet::new();
    let mut errors = Vec::new();
    for path in files(&dir, ".yml") {
        let yaml: Yaml = serde_yaml::from_str(&read(&path)).unwrap_or_else(|e| panic!("{} does not parse: {e}", rel(&path)));
        for rule_file in yaml["rule_files"].as_sequence().into_iter().flatten() {
            let rule_file = rule_file.as_str().unwrap_or_default();
            if !path.parent().unwrap().join(rule_file).is_file() {
                errors.push(format!("{}: rule_files entry {rule_file:?} is no file (paths are relative to the test file)", rel(&path)));
            }
        }
        for group in yaml["tests"].as_sequence().into_iter().flatten() {
            for case in group["alert_rule_test"].as_sequence().into_iter().flatten() {
                let Some(name) = case["alertname"].as_str() else { continue };
                match case["exp_alerts"].as_sequence() {
                    Some(alerts) if !alerts.is_empty() => fires.insert(name.to_string()),
                    _ => silent.insert(name.to_string()),
                };
            }
        }
    }
    for alert in alert_names() {
        if !fires.contains(&alert) {
            errors.push(format!("{alert}: no promtool case where it fires (exp_alerts with labels and annotations)"));
        }
        if !silent.contains(&alert) {
            errors.push(format!("{alert}: no promtool case where it must not fire (exp_alerts: [])"));
        }
    }
    assert!(errors.is_empty(), "deploy/prometheus/tests:\n  {}", errors.join("\n  "));
}

// ---------------------------------------------- the checkers catch errors --

#[test]
fn promql_check_catches_wrong_metric_names() {
    let known = known();
    let ok = "histogram_quantile(0.99, sum by (le) (rate(meter_sink_insert_duration_seconds_bucket{job=~\"meter-.*\"}[$__rate_interval])))";
    assert_eq!(check_promql(ok, &known), Vec::<String>::new());
    let ok = "time() - max by (topic, partition) (meter_aggregator_watermark_timestamp_seconds offset 5m) > bool 1e3 and on (job) up == 0 or ALERTS";
    assert_eq!(check_promql(ok, &known), Vec::<String>::new());
    for wrong in [
        "sum(rate(meter_sink_rows_insertd_total[5m]))",              // misspelled
        "rate(meter_sink_insert_duration_seconds[5m])",              // histogram without suffix
        "process_cpu_seconds_total",                                 // not exported
        "sum by (kind) (meter_aggregator_events_consumed) > 0",     // missing _total
        "sum(rate(meter_sink_rows_inserted_total[5m])) / meter_x",   // unknown second metric
        "meter_aggregator_events_late_total{reason=\"too_late\"}",  // a reason that does not exist
        "meter_aggregator_events_late_total{tenant=\"acme\"}",      // a label it does not have
        "sum(rate(meter_sink_rows_inserted_total[5m])",              // does not parse
    ] {
        assert!(!check_promql(wrong, &known).is_empty(), "the PromQL check accepts {wrong:?}");
    }
}

#[test]
fn sql_check_catches_unknown_relations_columns_and_missing_final() {
    let schema = schema();
    let ok = "SELECT toDateTime(day) AS time, domain, sum(quantity) AS minutes FROM meter.daily_totals \
              WHERE tenant = '${tenant}' AND $__dateFilter(day) AND day > today() - INTERVAL 7 DAY GROUP BY time, domain";
    assert_eq!(check_sql(ok, &schema), Vec::<String>::new());
    for wrong in [
        "SELECT sum(cost) FROM meter.aggregates WHERE tenant = 'acme'",                 // no FINAL
        "SELECT sum(cost) FROM meter.aggregate FINAL",                                  // no such relation
        "SELECT sum(cost) FROM meter.daily_totals FINAL",                               // FINAL on a view
        "SELECT window_dat, sum(cost) FROM meter.aggregates FINAL GROUP BY window_dat", // misspelled column
        "SELECT day, sum(cost) FROM meter.aggregates FINAL GROUP BY day",               // a view column on the table
        "SELECT window_date FROM meter.daily_totals",                                   // a table column on the view
        "SELECT sum(cost) FROM aggregates FINAL",                                       // not meter.<relation>
        "SELECT sum(cost) FROM meter.aggregates FINAL WHERE",                           // does not parse
    ] {
        assert!(!check_sql(wrong, &schema).is_empty(), "the SQL check accepts {wrong:?}");
    }
}

#[test]
fn the_catalogue_is_exactly_what_the_services_register() {
    let registry = meter_telemetry::registry("catalogue-check").expect("build info registers");
    let collector = collector_runtime::CollectorMetrics::register(&registry).expect("collector families");
    ingest_api::api::IngestMetrics::with_collector_metrics(collector, &registry).expect("ingest families");
    aggregator::runner::AggregatorMetrics::register(&registry).expect("aggregator families");
    sink_clickhouse::writer::SinkMetrics::register(&registry).expect("sink families");
    sink_clickhouse::contract_metrics::ContractGauges::register(&registry).expect("contract families");
    sink_clickhouse::capacity::FillGauges::register(&registry).expect("fill-rate families");
    // A family without a sample yet is still described by its help text.
    let registered: BTreeSet<String> = registry.gather().iter().map(|f| f.name().to_string()).collect();
    let catalogued: BTreeSet<String> = catalogue().iter().map(|f| f.name.to_string()).collect();
    let vec_families_without_samples: BTreeSet<String> = catalogued.difference(&registered).cloned().collect();
    // Label-vector families show up in a scrape only once a label set is used:
    // each of those must at least be a labelled family.
    for name in &vec_families_without_samples {
        let family = catalogue().into_iter().find(|f| f.name == name).expect("catalogued");
        assert!(!family.labels.is_empty(), "{name} is catalogued but no service registers it");
    }
    assert!(registered.is_subset(&catalogued), "registered but not catalogued: {:?}", registered.difference(&catalogued).collect::<Vec<_>>());
    for family in catalogue() {
        assert!(family.name.starts_with("meter_"), "{}", family.name);
        if family.metric_type == meter_telemetry::MetricType::Counter {
            assert!(family.name.ends_with("_total"), "a counter is named meter_<noun>_<verb>_total: {}", family.name);
        }
    }
}
