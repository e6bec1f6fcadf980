//! One GLPI task into a ticket-time event: its fields read, its ticket and
//! category looked up (cached for the run), mapped with the mapping file.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDateTime, Utc};
use chrono_tz::Tz;
use meter_model::codec::to_millis;
use meter_model::{Event, EventHeader, TicketTime, TicketType};
use serde_json::Value;

use crate::client::{GlpiClient, Item};
use crate::config::GlpiCollectorConfig;
use crate::mapping::Mapping;
use crate::{convert, GlpiError};

/// What becomes of one task.
pub(crate) enum Outcome {
    Publish(Box<Event>),
    Skip,
    Reject { reason: &'static str, error: String },
}

/// A task as listed, with what is needed to order it.
pub(crate) struct ListedTask {
    /// The task as GLPI sent it.
    pub(crate) original: Vec<u8>,
    pub(crate) value: Value,
    /// `(date_mod, id)` when both are readable.
    pub(crate) key: Option<(NaiveDateTime, u64)>,
    pub(crate) id: Option<u64>,
}

impl ListedTask {
    pub(crate) fn new(original: Vec<u8>, value: Value) -> Self {
        let id = uint(&value, "id").ok();
        let date_mod = text(&value, "date_mod").ok().and_then(|t| convert::parse_glpi_datetime(t).ok());
        let key = date_mod.zip(id);
        ListedTask { original, value, key, id }
    }
}

fn uint(item: &Value, field: &str) -> Result<u64, String> {
    match item.get(field) {
        Some(Value::Number(n)) => n.as_u64().ok_or_else(|| format!("{field} must be a whole number >= 0, got {n}")),
        Some(Value::String(s)) => s.trim().parse().map_err(|_| format!("{field} must be a whole number >= 0, got {s:?}")),
        None | Some(Value::Null) => Err(format!("{field} is missing")),
        Some(other) => Err(format!("{field} must be a whole number, got {other}")),
    }
}

/// A foreign key: absent, null or 0 mean none.
fn key_or_zero(item: &Value, field: &str) -> Result<u64, String> {
    match item.get(field) {
        None | Some(Value::Null) => Ok(0),
        _ => uint(item, field),
    }
}

fn int(item: &Value, field: &str) -> Result<i64, String> {
    match item.get(field) {
        Some(Value::Number(n)) => n.as_i64().ok_or_else(|| format!("{field} must be a whole number, got {n}")),
        Some(Value::String(s)) => s.trim().parse().map_err(|_| format!("{field} must be a whole number, got {s:?}")),
        None | Some(Value::Null) => Err(format!("{field} is missing")),
        Some(other) => Err(format!("{field} must be a whole number, got {other}")),
    }
}

fn text<'a>(item: &'a Value, field: &str) -> Result<&'a str, String> {
    match item.get(field) {
        Some(Value::String(s)) => Ok(s),
        None | Some(Value::Null) => Err(format!("{field} is missing")),
        Some(other) => Err(format!("{field} must be a string, got {other}")),
    }
}

/// What one run needs while handling tasks.
pub(crate) struct Run<'a> {
    pub(crate) glpi: &'a GlpiCollectorConfig,
    pub(crate) mapping: &'a Mapping,
    pub(crate) zone: Tz,
    pub(crate) client: GlpiClient,
    pub(crate) tickets: HashMap<u64, Item>,
    pub(crate) categories: HashMap<u64, Option<Vec<String>>>,
}

impl Run<'_> {
    async fn ticket(&mut self, id: u64) -> Result<Item, GlpiError> {
        if let Some(t) = self.tickets.get(&id) {
            return Ok(t.clone());
        }
        let t = self.client.item("Ticket", id).await?;
        self.tickets.insert(id, t.clone());
        Ok(t)
    }

    async fn category(&mut self, id: u64) -> Result<Option<Vec<String>>, GlpiError> {
        if let Some(c) = self.categories.get(&id) {
            return Ok(c.clone());
        }
        let path = match self.client.item("ITILCategory", id).await? {
            Item::Found(c) => c.get("completename").and_then(Value::as_str).map(convert::category_levels),
            Item::Missing | Item::Forbidden => None,
        }
        .filter(|levels| !levels.is_empty());
        self.categories.insert(id, path.clone());
        Ok(path)
    }

    fn time(&self, task: &Value, field: &str) -> Result<DateTime<Utc>, String> {
        let t = text(task, field)?;
        convert::glpi_time_to_utc(t, self.zone).map_err(|e| format!("{field}: {e}"))
    }

    /// Maps one task to its event (or why not). Errors are GLPI failures
    /// that end the run.
    pub(crate) async fn handle(&mut self, task: &Value) -> Result<Outcome, GlpiError> {
        let malformed = |error: String| Ok(Outcome::Reject { reason: "malformed_task", error });
        let id = match uint(task, "id") {
            Ok(id) => id,
            Err(e) => return malformed(e),
        };
        let seconds = match int(task, "actiontime") {
            Ok(s) => s,
            Err(e) => return malformed(e),
        };
        let Some(minutes) = convert::minutes_billed(seconds) else {
            return malformed(format!("actiontime must not be negative, got {seconds}"));
        };
        if minutes == 0 {
            return Ok(Outcome::Skip);
        }
        // The work happened at `date`; `date_mod` only says which edit this is,
        // so an edited task replaces its earlier version in the same windows.
        let (start_time, event_time, modified) = match (self.time(task, "date"), self.time(task, "date_mod")) {
            (Ok(s), Ok(m)) => (s, s, m),
            (Err(e), _) | (_, Err(e)) => return malformed(e),
        };
        let ticket_id = match uint(task, "tickets_id") {
            Ok(t) => t,
            Err(e) => return malformed(e),
        };
        let technician_id = match (key_or_zero(task, "users_id_tech"), key_or_zero(task, "users_id")) {
            (Ok(tech), _) if tech > 0 => tech,
            (Ok(_), Ok(author)) => author,
            (Err(e), _) | (_, Err(e)) => return malformed(e),
        };
        let ticket = match self.ticket(ticket_id).await? {
            Item::Found(ticket) => ticket,
            Item::Missing => {
                return Ok(Outcome::Reject { reason: "missing_ticket", error: format!("ticket {ticket_id} of task {id} is not in GLPI") })
            }
            Item::Forbidden => {
                return Ok(Outcome::Reject {
                    reason: "ticket_not_readable",
                    error: format!("the GLPI API user may not read ticket {ticket_id} of task {id} (give it read access to the ticket's entity)"),
                })
            }
        };
        let fields = (|| -> Result<(i64, u64, u64, u64), String> {
            Ok((
                int(&ticket, "type")?,
                uint(&ticket, "entities_id")?,
                key_or_zero(&ticket, "itilcategories_id")?,
                key_or_zero(&ticket, "users_id_recipient")?,
            ))
        })();
        let (ticket_type, entity, category_id, recipient) = match fields {
            Ok(f) => f,
            Err(e) => return Ok(Outcome::Reject { reason: "malformed_ticket", error: format!("ticket {ticket_id}: {e}") }),
        };
        let Some(target) = self.mapping.entity(&entity.to_string()) else {
            return Ok(Outcome::Reject {
                reason: "unmapped_entity",
                error: format!(
                    "GLPI entity {entity} of ticket {ticket_id} is not in the mapping file {} (add it under [entities])",
                    self.glpi.mapping_file.display()
                ),
            });
        };
        let target = target.clone();
        let ticket_type = match ticket_type {
            1 => TicketType::Incident,
            2 => TicketType::Request,
            other => {
                return Ok(Outcome::Reject {
                    reason: "unknown_ticket_type",
                    error: format!("ticket {ticket_id} has type {other} (GLPI: 1 = incident, 2 = request)"),
                })
            }
        };
        let category_path = match category_id {
            0 => None,
            c => self.category(c).await?,
        }
        .unwrap_or_else(|| self.mapping.uncategorized());
        let (technician, technician_profile) = self.mapping.technician(&technician_id.to_string());
        let requester = if recipient == 0 { "unknown".to_string() } else { self.mapping.requester(&recipient.to_string()) };
        let event = Event::TicketTime(TicketTime {
            header: EventHeader {
                event_id: format!("glpi-task-{id}"),
                source: self.glpi.source.clone(),
                tenant: target.tenant,
                subsidiary: target.subsidiary,
                domain: self.mapping.domain(Some(category_id).filter(|c| *c > 0), &category_path),
                event_time: to_millis(event_time),
                ingest_time: DateTime::<Utc>::UNIX_EPOCH,
                version: modified.timestamp_millis(),
                deleted: false,
            },
            ticket_id: ticket_id.to_string(),
            task_id: id.to_string(),
            ticket_type,
            in_scope: self.mapping.in_scope(&category_path),
            application: self.mapping.application(&category_path),
            category_path,
            requester,
            technician,
            technician_profile,
            country: target.country,
            minutes_worked: i32::try_from(minutes).unwrap_or(i32::MAX),
            start_time: to_millis(start_time),
        });
        match event.validate() {
            Ok(()) => Ok(Outcome::Publish(Box::new(event))),
            Err(e) => Ok(Outcome::Reject { reason: "invalid_event", error: e.to_string() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_tasks_are_keyed_by_date_mod_and_id_whatever_the_number_format() {
        let t = ListedTask::new(Vec::new(), serde_json::json!({"id": "7", "date_mod": "2026-01-12 11:45:00"}));
        assert_eq!(t.key.map(|k| k.1), Some(7));
        let t = ListedTask::new(Vec::new(), serde_json::json!({"id": 7, "date_mod": "yesterday"}));
        assert_eq!((t.key, t.id), (None, Some(7)));
        assert_eq!(key_or_zero(&serde_json::json!({"users_id_tech": null}), "users_id_tech"), Ok(0));
        assert!(int(&serde_json::json!({"actiontime": "lots"}), "actiontime").is_err());
    }
}
