//! One run: pages through the task list from the stored position, maps the
//! new tasks of a page, publishes them, then notes the page durably.

use collector_runtime::{InternalEvent, SourceSucceeded};
use std::collections::{HashMap, HashSet};

use collector_runtime::{CollectorMetrics, Publisher};
use meter_config::MeterConfig;
use rdkafka::producer::FutureProducer;

use crate::client::GlpiClient;
use crate::config::GlpiCollectorConfig;
use crate::mapping::Mapping;
use crate::publish::publish_page;
use crate::report::GlpiReport;
use crate::state::{self, Position};
use crate::tasks::{ListedTask, Run};
use crate::{GlpiError, MAX_LIST_REQUESTS, METRIC_SOURCE};

/// Publishes every GLPI task changed since the last run (see the module
/// documentation), and returns what happened.
pub async fn collect_once(
    meter: &MeterConfig,
    glpi: &GlpiCollectorConfig,
    producer: &FutureProducer,
    metrics: &CollectorMetrics,
) -> Result<GlpiReport, GlpiError> {
    let config_error = |message: String| GlpiError::Config { path: "the GLPI collector configuration".into(), message };
    glpi.check().map_err(config_error)?;
    let zone = glpi.time_zone();
    let mapping = Mapping::load(&glpi.mapping_file)?;
    let position = state::load(&glpi.state_file)?;
    let mut run = Run {
        glpi,
        mapping: &mapping,
        zone,
        client: GlpiClient::new(glpi)?,
        tickets: HashMap::new(),
        categories: HashMap::new(),
    };
    let mut report = GlpiReport { source: glpi.source.clone(), position: position.clone(), ..Default::default() };
    let result = run_pages(meter, &mut run, producer, metrics, &mut report).await;
    run.client.kill_session().await;
    report.sessions = run.client.session_inits;
    match result {
        Ok(()) => {
            SourceSucceeded { source: METRIC_SOURCE }.emit(&metrics);
            tracing::info!(source = %glpi.source, pages = report.pages, tasks = report.tasks_read, published = report.published,
                skipped = report.skipped, rejected = report.rejections.len(), sessions = report.sessions,
                requests = run.client.requests, "GLPI collected");
            Ok(report)
        }
        Err(e) => {
            tracing::error!(source = %glpi.source, pages_done = report.pages, published = report.published, error = %e,
                "GLPI collection stopped; the next run resumes after the last complete page");
            Err(e)
        }
    }
}

async fn run_pages(
    meter: &MeterConfig,
    run: &mut Run<'_>,
    producer: &FutureProducer,
    metrics: &CollectorMetrics,
    report: &mut GlpiReport,
) -> Result<(), GlpiError> {
    let page_size = u64::from(run.glpi.page_size);
    let publisher = Publisher::new(meter, producer.clone(), metrics.clone(), METRIC_SOURCE);
    let mut position = report.position.clone();
    let mut offset = position.as_ref().map_or(0, |p| p.next_offset);
    let mut step_back = 1u64;
    // Tasks without a readable (date_mod, id) cannot be positioned: remember
    // them for this run so that an overlap does not dead-letter them twice.
    let mut unpositioned_seen: HashSet<Vec<u8>> = HashSet::new();
    let mut list_requests = 0u64;
    loop {
        list_requests += 1;
        if list_requests > MAX_LIST_REQUESTS {
            return Err(GlpiError::Protocol { url: run.glpi.url.to_string(), message: "too many task-list requests in one run".into() });
        }
        let page = run.client.tasks(offset, offset + page_size - 1).await?;
        let listed: Vec<ListedTask> = page.items.into_iter().map(|(original, value)| ListedTask::new(original, value)).collect();
        // Nothing before `offset` may be unhandled: the first positioned task
        // there must already be covered, else tasks left the handled prefix
        // since the offset was noted; step back (doubling) and look again.
        if offset > 0 {
            let first = listed.iter().find_map(|t| t.key);
            let verified = match (first, &position) {
                (Some((date_mod, id)), Some(p)) => p.covers(date_mod, id),
                (Some(_), None) => true,
                (None, _) => !listed.is_empty(),
            };
            if !verified {
                let back = offset.saturating_sub(step_back);
                tracing::debug!(offset, back, "tasks moved since the offset was noted; stepping back");
                offset = back;
                step_back = step_back.saturating_mul(2);
                continue;
            }
        }
        step_back = 1;
        let count = listed.len() as u64;

        // Map the new tasks of the page (GLPI lookups) before publishing any.
        let mut page_position = position.clone();
        let mut outcomes = Vec::new();
        for task in &listed {
            match task.key {
                Some((date_mod, id)) if page_position.as_ref().is_some_and(|p| p.covers(date_mod, id)) => continue,
                None if !unpositioned_seen.insert(task.original.clone()) => continue,
                _ => {}
            }
            let outcome = run.handle(&task.value).await?;
            if let Some((date_mod, id)) = task.key {
                match page_position.as_mut() {
                    Some(p) => p.advance(date_mod, id),
                    None => page_position = Some(Position::new(date_mod, id)),
                }
            }
            outcomes.push((task, outcome));
        }

        let (published, skipped, rejected) = publish_page(&publisher, run.glpi, outcomes, report).await?;
        let handled = published + skipped + rejected;

        // The page is done: note it durably.
        let end = offset + count;
        if let Some(p) = page_position.as_mut() {
            // The next look starts at this page's last task (one task of overlap).
            p.next_offset = end.saturating_sub(1);
            if count > 0 {
                state::save(&run.glpi.state_file, p)?;
            }
        }
        position = page_position;
        report.pages += 1;
        report.tasks_read += handled;
        report.published += published;
        report.skipped += skipped;
        report.position = position.clone();
        tracing::info!(source = %run.glpi.source, offset, tasks = count, new = handled, published, skipped, rejected,
            total = ?page.total, position = ?position.as_ref().map(|p| (p.date_mod, p.last_task_id)), "GLPI page collected");

        let done = match page.total {
            Some(total) => end >= total,
            None => count < page_size,
        };
        if done || count == 0 {
            return Ok(());
        }
        offset = end.saturating_sub(1).max(offset + 1);
    }
}

