//! Per-partition checkpoints: the partition's whole state and the offset it
//! ends at, written atomically (temporary file, fsync, rename) after the
//! aggregates it produced were acknowledged by the broker.
//!
//! The directory must be shared by the aggregator instances of a group (a
//! local folder on one host, a shared volume across hosts), since a
//! partition's next owner resumes from its checkpoint.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::engine::PartitionState;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint {path}: {source} (check aggregator.state_dir exists and is writable)")]
    Io { path: String, source: std::io::Error },
    #[error("checkpoint {path} is corrupt: {source} (move it away to rebuild the partition from the topic's start)")]
    Corrupt { path: String, source: serde_json::Error },
    #[error("partition {partition} was taken over by a newer owner (epoch {newer} > {ours}): this instance keeps its hands off")]
    Fenced { partition: String, ours: u64, newer: u64 },
}

pub struct CheckpointStore {
    dir: PathBuf,
}

impl CheckpointStore {
    pub fn new(dir: &Path) -> Result<Self, CheckpointError> {
        std::fs::create_dir_all(dir).map_err(|source| CheckpointError::Io { path: dir.display().to_string(), source })?;
        Ok(CheckpointStore { dir: dir.to_path_buf() })
    }

    /// The folder of the checkpoints.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, topic: &str, partition: i32) -> PathBuf {
        self.dir.join(format!("{topic}-{partition}.json"))
    }

    fn owner_path(&self, topic: &str, partition: i32) -> PathBuf {
        self.dir.join(format!("{topic}-{partition}.owner"))
    }

    fn owner_epoch(&self, topic: &str, partition: i32) -> u64 {
        std::fs::read_to_string(self.owner_path(topic, partition)).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0)
    }

    /// Takes ownership of a partition's checkpoint: the epoch returned is
    /// above every earlier owner's, whose later saves are then refused (a
    /// member the group already replaced cannot overwrite its successor).
    pub fn claim(&self, topic: &str, partition: i32) -> Result<u64, CheckpointError> {
        let epoch = self.owner_epoch(topic, partition) + 1;
        let path = self.owner_path(topic, partition);
        let io = |source| CheckpointError::Io { path: path.display().to_string(), source };
        let tmp = path.with_extension(format!("owner.tmp.{}", std::process::id()));
        std::fs::write(&tmp, epoch.to_string()).map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        Ok(epoch)
    }

    /// Saves the state if `epoch` still owns the partition.
    pub fn save_owned(&self, topic: &str, partition: i32, state: &PartitionState, epoch: u64) -> Result<(), CheckpointError> {
        let newer = self.owner_epoch(topic, partition);
        if newer > epoch {
            return Err(CheckpointError::Fenced { partition: format!("{topic}/{partition}"), ours: epoch, newer });
        }
        self.save(topic, partition, state)
    }

    /// The saved state, or an empty one starting at offset 0.
    pub fn load(&self, topic: &str, partition: i32) -> Result<PartitionState, CheckpointError> {
        let path = self.path(topic, partition);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|source| CheckpointError::Corrupt { path: path.display().to_string(), source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(PartitionState::default()),
            Err(source) => Err(CheckpointError::Io { path: path.display().to_string(), source }),
        }
    }

    pub fn save(&self, topic: &str, partition: i32, state: &PartitionState) -> Result<(), CheckpointError> {
        let path = self.path(topic, partition);
        let io = |source| CheckpointError::Io { path: path.display().to_string(), source };
        let bytes = serde_json::to_vec(state).map_err(|source| CheckpointError::Corrupt { path: path.display().to_string(), source })?;
        let tmp = path.with_extension(format!("json.tmp.{}", std::process::id()));
        {
            let mut file = std::fs::File::create(&tmp).map_err(io)?;
            file.write_all(&bytes).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, &path).map_err(io)?;
        if let Ok(dir) = std::fs::File::open(&self.dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_state_loads_back_and_missing_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::new(dir.path()).unwrap();
        assert_eq!(store.load("t", 0).unwrap(), PartitionState::default());
        let mut state = PartitionState::default();
        state.next_offset = 42;
        state.closed_events.insert(
            meter_model::EventKey { tenant: "acme".into(), source: "glpi".into(), event_id: "7".into() },
            (3, chrono::DateTime::from_timestamp(1_767_225_600, 0).unwrap_or_default()),
        );
        store.save("t", 0, &state).unwrap();
        assert_eq!(store.load("t", 0).unwrap(), state);
        std::fs::write(dir.path().join("t-1.json"), b"{truncated").unwrap();
        assert!(matches!(store.load("t", 1), Err(CheckpointError::Corrupt { .. })));
    }

    #[test]
    fn an_old_owner_cannot_overwrite_a_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::new(dir.path()).unwrap();
        let old = store.claim("t", 0).unwrap();
        let mut state = PartitionState::default();
        state.next_offset = 10;
        store.save_owned("t", 0, &state, old).unwrap();
        let new = store.claim("t", 0).unwrap();
        assert!(new > old);
        state.next_offset = 99;
        assert!(matches!(store.save_owned("t", 0, &state, old), Err(CheckpointError::Fenced { .. })));
        assert_eq!(store.load("t", 0).unwrap().next_offset, 10);
        store.save_owned("t", 0, &state, new).unwrap();
        assert_eq!(store.load("t", 0).unwrap().next_offset, 99);
    }
}
