//! A page's outcomes published with the collectors' publisher.

use collector_runtime::{InternalEvent, RecordsRead, RecordsSkipped};
use collector_runtime::Publisher;
use meter_model::DeadLetter;

use crate::config::GlpiCollectorConfig;
use crate::report::{GlpiReport, TaskRejection};
use crate::tasks::{ListedTask, Outcome};
use crate::{GlpiError, COMPONENT, KIND, SKIP_NO_TIME};

/// Publishes the outcomes of one page's tasks and waits for every
/// acknowledgement: events published, tasks without time skipped, refused
/// tasks dead-lettered (the task as GLPI sent it); counts them.
/// Returns (published, skipped, rejected).
pub(crate) async fn publish_page(
    publisher: &Publisher,
    glpi: &GlpiCollectorConfig,
    outcomes: Vec<(&ListedTask, Outcome)>,
    report: &mut GlpiReport,
) -> Result<(u64, u64, u64), GlpiError> {
    let (mut skipped, mut rejected) = (0u64, 0u64);
    let mut batch = publisher.batch();
    for (task, outcome) in outcomes {
        match outcome {
            Outcome::Publish(event) => batch.push(*event).await?,
            Outcome::Skip => skipped += 1,
            Outcome::Reject { reason, error } => {
                rejected += 1;
                let location = match task.id {
                    Some(id) => format!("{}/TicketTask/{id}", glpi.url.as_str().trim_end_matches('/')),
                    None => format!("{}/TicketTask/", glpi.url.as_str().trim_end_matches('/')),
                };
                let letter = DeadLetter::from_request(COMPONENT, &location, None, reason, error.clone(), task.original.clone());
                publisher.dead_letter(&letter.of_kind(KIND)).await?;
                report.rejections.push(TaskRejection { task_id: task.id, reason, error });
            }
        }
    }
    let published = batch.finish().await?;
    let metrics = publisher.metrics();
    RecordsRead { kind: KIND.slug(), count: published + skipped + rejected }.emit(&metrics);
    // Tasks without time bill nothing: not dead-lettered, counted.
    RecordsSkipped { kind: KIND.slug(), reason: SKIP_NO_TIME, count: skipped }.emit(&metrics);
    Ok((published, skipped, rejected))
}

