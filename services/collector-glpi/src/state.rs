//! The collector's durable position in GLPI's task list.
//!
//! Tasks are listed in `date_mod` order. The position is the `date_mod` of
//! the last task handled (published, skipped or dead-lettered) and the ids
//! of the tasks with that very `date_mod` already handled: a later run skips
//! tasks modified before that instant and those ids, and handles the rest.
//! Keeping the ids (not only the greatest) stays right when GLPI returns tasks
//! of the same second in any order. The file is replaced atomically (temp
//! file, fsync, rename) once every event of a page is acknowledged by the
//! broker, so a crash anywhere leaves the last fully published page's
//! position.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;

use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};

use crate::GlpiError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Position {
    /// `date_mod` of the last handled task, in the GLPI server's local time.
    pub date_mod: NaiveDateTime,
    /// Ids of the handled tasks with exactly that `date_mod`.
    pub task_ids: BTreeSet<u64>,
    /// The greatest of `task_ids` (for people reading the file).
    pub last_task_id: u64,
    /// Offset in the date_mod-ordered list where the next run starts looking.
    /// Only a hint: the run checks that the task found there is already
    /// handled and steps back otherwise (tasks modified or purged since move
    /// out of the handled prefix and shift it).
    pub next_offset: u64,
}

impl Position {
    pub fn new(date_mod: NaiveDateTime, task_id: u64) -> Position {
        Position { date_mod, task_ids: BTreeSet::from([task_id]), last_task_id: task_id, next_offset: 0 }
    }

    /// Whether the task (as last modified at `date_mod`) was already handled.
    pub fn covers(&self, date_mod: NaiveDateTime, task_id: u64) -> bool {
        date_mod < self.date_mod || (date_mod == self.date_mod && self.task_ids.contains(&task_id))
    }

    /// Records a handled task.
    pub fn advance(&mut self, date_mod: NaiveDateTime, task_id: u64) {
        if date_mod > self.date_mod {
            self.date_mod = date_mod;
            self.task_ids.clear();
        }
        if date_mod == self.date_mod {
            self.task_ids.insert(task_id);
            self.last_task_id = self.task_ids.last().copied().unwrap_or(task_id);
        }
    }
}

/// Reads the position; `None` when the file does not exist (first run).
pub fn load(path: &Path) -> Result<Option<Position>, GlpiError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(GlpiError::Read { path: path.display().to_string(), source }),
    };
    serde_json::from_str(&text).map(Some).map_err(|e| GlpiError::Config {
        path: path.display().to_string(),
        message: format!("corrupt GLPI position file ({e}); move it away to collect every task again (events count once)"),
    })
}

/// Replaces the position file atomically.
pub fn save(path: &Path, position: &Position) -> Result<(), GlpiError> {
    let error = |source: std::io::Error| GlpiError::State { path: path.display().to_string(), source };
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(error)?;
    let mut temp = path.as_os_str().to_owned();
    temp.push(".tmp");
    let temp = std::path::PathBuf::from(temp);
    let json = serde_json::to_vec_pretty(position).map_err(|e| error(std::io::Error::other(e)))?;
    {
        let mut file = std::fs::File::create(&temp).map_err(error)?;
        file.write_all(&json).map_err(error)?;
        file.sync_all().map_err(error)?;
    }
    std::fs::rename(&temp, path).map_err(error)?;
    // Make the rename itself durable.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> NaiveDateTime {
        crate::convert::parse_glpi_datetime(s).unwrap()
    }

    #[test]
    fn covers_earlier_instants_and_the_ids_of_the_same_instant() {
        let mut p = Position::new(t("2026-01-12 11:45:00"), 8);
        p.advance(t("2026-01-12 11:45:00"), 3);
        assert!(p.covers(t("2026-01-12 11:44:59"), 99));
        assert!(p.covers(t("2026-01-12 11:45:00"), 3));
        assert!(p.covers(t("2026-01-12 11:45:00"), 8));
        assert!(!p.covers(t("2026-01-12 11:45:00"), 5), "same second, not handled yet, smaller id");
        assert!(!p.covers(t("2026-01-12 11:45:01"), 1));
        assert_eq!(p.last_task_id, 8);
        p.advance(t("2026-01-12 12:00:00"), 2);
        assert_eq!(p.task_ids, BTreeSet::from([2]));
        p.advance(t("2026-01-12 11:00:00"), 77);
        assert_eq!((p.date_mod, p.last_task_id), (t("2026-01-12 12:00:00"), 2), "never moves back");
    }

    #[test]
    fn saves_atomically_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/glpi.json");
        assert_eq!(load(&path).unwrap(), None);
        let mut p = Position::new(t("2026-01-12 11:45:00"), 8);
        p.next_offset = 41;
        save(&path, &p).unwrap();
        assert_eq!(load(&path).unwrap(), Some(p));
        assert!(!dir.path().join("sub/glpi.json.tmp").exists());
        std::fs::write(&path, "{").unwrap();
        assert!(load(&path).unwrap_err().to_string().contains("corrupt"));
    }
}
