//! What one run did.

use std::collections::BTreeMap;
use std::fmt;

use crate::state::Position;

/// A task that was not published, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRejection {
    pub task_id: Option<u64>,
    pub reason: &'static str,
    pub error: String,
}

/// The outcome of one run.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GlpiReport {
    pub source: String,
    /// Pages fully handled (their position written).
    pub pages: u64,
    /// New tasks handled (published, skipped or rejected).
    pub tasks_read: u64,
    pub published: u64,
    /// Tasks without time (`actiontime` 0).
    pub skipped: u64,
    pub rejections: Vec<TaskRejection>,
    /// GLPI sessions opened (more than 1 when one expired during the run).
    pub sessions: u32,
    /// The position after the run.
    pub position: Option<Position>,
}

impl GlpiReport {
    pub fn rejected_by_reason(&self) -> BTreeMap<&'static str, u64> {
        collector_runtime::count_by_reason(self.rejections.iter().map(|r| r.reason))
    }
}

impl fmt::Display for GlpiReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} pages, {} tasks read, {} published, {} skipped (no time), {} rejected",
            self.source,
            self.pages,
            self.tasks_read,
            self.published,
            self.skipped,
            self.rejections.len()
        )?;
        collector_runtime::write_reason_counts(f, &self.rejected_by_reason())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_line_lists_rejections_by_reason() {
        let report = GlpiReport {
            source: "glpi-main".into(),
            pages: 3,
            tasks_read: 10,
            published: 6,
            skipped: 1,
            rejections: vec![
                TaskRejection { task_id: Some(4), reason: "unmapped_entity", error: String::new() },
                TaskRejection { task_id: Some(6), reason: "malformed_task", error: String::new() },
                TaskRejection { task_id: Some(9), reason: "unmapped_entity", error: String::new() },
            ],
            sessions: 2,
            position: None,
        };
        assert_eq!(
            report.to_string(),
            "glpi-main: 3 pages, 10 tasks read, 6 published, 1 skipped (no time), 3 rejected (malformed_task: 1, unmapped_entity: 2)"
        );
    }
}
