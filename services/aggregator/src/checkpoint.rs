//! Per-partition checkpoints: the partition's state and the offset it ends
//! at, saved after the aggregates it produced were acknowledged by the broker.
//!
//! A checkpoint is a **snapshot** (the whole state, binary, CRC-checked,
//! written to a temporary file, fsynced and renamed) and a **log** of the
//! changes since (one CRC-framed record per flush, appended and fsynced).
//! A flush writes only what changed, so its cost follows the input rate, not
//! the size of the state. When the log outgrows twice the snapshot, or something
//! was removed (a month closed), the next save writes a new snapshot and
//! starts a new log. Reading takes the snapshot and the records of its log
//! up to the last whole one: a record torn by a crash is cut off, and the
//! partition resumes from the offset the last whole record holds (replayed
//! records emit identical revisions).
//!
//! Files, in `aggregator.state_dir`, per input partition:
//! `<topic>-<partition>.snapshot`, `<topic>-<partition>.<generation>.log`,
//! `<topic>-<partition>.owner` (ownership epoch). A `<topic>-<partition>.json`
//! checkpoint of earlier versions is read once and replaced by a snapshot.
//!
//! The directory must be shared by the aggregator instances of a group (a
//! local folder on one host, a shared volume across hosts), since a
//! partition's next owner resumes from its checkpoint.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::engine::{Changes, Delta, PartitionState};

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint {path}: {source} (check aggregator.state_dir exists and is writable)")]
    Io { path: String, source: std::io::Error },
    #[error("checkpoint {path} is corrupt: {reason} (move it away to rebuild the partition from the topic's start)")]
    Corrupt { path: String, reason: String },
    #[error("partition {partition} was taken over by a newer owner (epoch {newer} > {ours}): this instance keeps its hands off")]
    Fenced { partition: String, ours: u64, newer: u64 },
}

/// First bytes of a snapshot file.
const SNAPSHOT_MAGIC: &[u8; 8] = b"meter-ck";
/// Format of snapshots and log records (1 was the JSON checkpoint).
const FORMAT: u32 = 2;
/// A log may grow to this many times its snapshot before a new snapshot:
/// every byte of state is written about 1 + 1/2 times, and a restart reads
/// at most three times the snapshot's size.
const LOG_TO_SNAPSHOT: u64 = 2;
/// A log shorter than this never triggers a snapshot.
const MIN_LOG_BYTES: u64 = 16 << 20;
/// Largest log record accepted when reading (a damaged length is not an allocation).
const MAX_RECORD_BYTES: u32 = 1 << 30;

pub struct CheckpointStore {
    dir: PathBuf,
}

/// What one save wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Saved {
    Snapshot { bytes: u64 },
    Delta { bytes: u64, records: usize },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io { path: path.display().to_string(), source }
}

impl CheckpointStore {
    pub fn new(dir: &Path) -> Result<Self, CheckpointError> {
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        Ok(CheckpointStore { dir: dir.to_path_buf() })
    }

    /// The folder of the checkpoints.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn base(&self, topic: &str, partition: i32) -> String {
        format!("{topic}-{partition}")
    }

    fn owner_path(&self, topic: &str, partition: i32) -> PathBuf {
        self.dir.join(format!("{}.owner", self.base(topic, partition)))
    }

    fn owner_epoch(&self, topic: &str, partition: i32) -> u64 {
        read_epoch(&self.owner_path(topic, partition))
    }

    /// Takes ownership of a partition's checkpoint: the epoch returned is
    /// above every earlier owner's, whose later saves are then refused (a
    /// member the group already replaced cannot overwrite its successor).
    pub fn claim(&self, topic: &str, partition: i32) -> Result<u64, CheckpointError> {
        let epoch = self.owner_epoch(topic, partition) + 1;
        let path = self.owner_path(topic, partition);
        let tmp = path.with_extension(format!("owner.tmp.{}", std::process::id()));
        std::fs::write(&tmp, epoch.to_string()).map_err(io_error(&path))?;
        std::fs::rename(&tmp, &path).map_err(io_error(&path))?;
        Ok(epoch)
    }

    /// The saved state (an empty one starting at offset 0 if there is none),
    /// ready to record its changes, and the handle that saves it.
    pub fn open(&self, topic: &str, partition: i32) -> Result<(PartitionState, PartitionCheckpoint), CheckpointError> {
        let base = self.base(topic, partition);
        let mut disk = Disk {
            dir: self.dir.clone(),
            snapshot: self.dir.join(format!("{base}.snapshot")),
            legacy: self.dir.join(format!("{base}.json")),
            base,
            generation: 0,
            log: None,
            log_bytes: 0,
            snapshot_bytes: 0,
            snapshot_due: true,
            record_buffer: Vec::new(),
        };
        let mut state = disk.read()?;
        state.restore_derived();
        state.track_changes();
        let checkpoint =
            PartitionCheckpoint { partition: format!("{topic}/{partition}"), owner: self.owner_path(topic, partition), disk: Some(disk), pending: None };
        Ok((state, checkpoint))
    }

    /// The saved state of a partition (tools and tests).
    pub fn load(&self, topic: &str, partition: i32) -> Result<PartitionState, CheckpointError> {
        self.open(topic, partition).map(|(state, _)| state)
    }
}

fn read_epoch(path: &Path) -> u64 {
    std::fs::read_to_string(path).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0)
}

/// Saves one partition's state: deltas appended to the log, snapshots when
/// due. The state's changes are taken and encoded on the caller's thread;
/// with [`PartitionCheckpoint::begin_save_owned`] the file writes and their
/// fsync run on a thread of their own while the caller goes on, and the
/// next save (or [`PartitionCheckpoint::finish`]) waits for them first.
pub struct PartitionCheckpoint {
    partition: String,
    owner: PathBuf,
    /// The files, here while no write is in flight.
    disk: Option<Disk>,
    pending: Option<std::thread::JoinHandle<(Disk, Result<Saved, CheckpointError>)>>,
}

/// The files of one partition's checkpoint and what is known of them.
struct Disk {
    dir: PathBuf,
    base: String,
    snapshot: PathBuf,
    legacy: PathBuf,
    generation: u64,
    log: Option<File>,
    log_bytes: u64,
    snapshot_bytes: u64,
    /// The next save writes a snapshot (no snapshot yet, a legacy one, or a
    /// failed save whose changes are no longer recorded).
    snapshot_due: bool,
    /// The last log record's buffer, reused by the next: a fresh one per
    /// flush made the allocator map and zero new pages each time.
    record_buffer: Vec<u8>,
}

/// One save, encoded, for the files.
enum Encoded {
    Record { bytes: Vec<u8>, records: usize },
    Snapshot { bytes: Vec<u8> },
}

fn corrupt(path: &Path, reason: impl Into<String>) -> CheckpointError {
    CheckpointError::Corrupt { path: path.display().to_string(), reason: reason.into() }
}

impl PartitionCheckpoint {
    /// Saves what changed if `epoch` still owns the partition, and waits
    /// for the files to be written.
    pub fn save_owned(&mut self, state: &mut PartitionState, epoch: u64) -> Result<Saved, CheckpointError> {
        let (mut disk, encoded) = self.take_and_encode(state, epoch)?;
        let result = disk.write(encoded);
        self.put_back(disk, result.is_err());
        result
    }

    /// Takes and encodes what changed if `epoch` still owns the partition
    /// (after the previous write has completed) and writes it on another
    /// thread. Its outcome comes with the next save or [`Self::finish`].
    pub fn begin_save_owned(&mut self, state: &mut PartitionState, epoch: u64) -> Result<(), CheckpointError> {
        let (mut disk, encoded) = self.take_and_encode(state, epoch)?;
        let spawned = std::thread::Builder::new().name("checkpoint".into()).spawn(move || {
            let result = disk.write(encoded);
            (disk, result)
        });
        match spawned {
            Ok(handle) => {
                self.pending = Some(handle);
                Ok(())
            }
            Err(source) => Err(CheckpointError::Io { path: self.partition.clone(), source }),
        }
    }

    /// The files (once the write in flight is done) and what changed,
    /// encoded, if `epoch` still owns the partition.
    fn take_and_encode(&mut self, state: &mut PartitionState, epoch: u64) -> Result<(Disk, Encoded), CheckpointError> {
        self.finish()?;
        let newer = read_epoch(&self.owner);
        if newer > epoch {
            return Err(CheckpointError::Fenced { partition: self.partition.clone(), ours: epoch, newer });
        }
        let Some(mut disk) = self.disk.take() else {
            // Only a writer thread that panicked or never started loses them.
            return Err(CheckpointError::Io { path: self.partition.clone(), source: std::io::Error::other("the checkpoint files are unknown after a failed write") });
        };
        match disk.encode(state) {
            Ok(encoded) => Ok((disk, encoded)),
            Err(e) => {
                self.put_back(disk, true);
                Err(e)
            }
        }
    }

    /// Keeps the files for the next save; after a failure the changes taken
    /// are not on disk, so only a snapshot is whole then.
    fn put_back(&mut self, mut disk: Disk, failed: bool) {
        if failed {
            disk.snapshot_due = true;
        }
        self.disk = Some(disk);
    }

    /// Waits for the write in flight, if any: what it saved, or why it failed.
    pub fn finish(&mut self) -> Result<Option<Saved>, CheckpointError> {
        let Some(handle) = self.pending.take() else { return Ok(None) };
        match handle.join() {
            Ok((disk, result)) => {
                self.put_back(disk, result.is_err());
                result.map(Some)
            }
            // The thread only writes files; its files are now unknown, and
            // the partition's next owner reads what is whole.
            Err(_) => Err(CheckpointError::Io { path: self.partition.clone(), source: std::io::Error::other("the checkpoint writer panicked") }),
        }
    }
}

impl Drop for PartitionCheckpoint {
    fn drop(&mut self) {
        // A partition handed over (or a process stopping) leaves its files whole.
        if let Err(e) = self.finish() {
            tracing::warn!(partition = %self.partition, error = %e, "the last checkpoint write failed: the partition resumes from the one before");
        }
    }
}

impl Disk {
    fn log_path(&self, generation: u64) -> PathBuf {
        self.dir.join(format!("{}.{generation}.log", self.base))
    }

    fn read(&mut self) -> Result<PartitionState, CheckpointError> {
        let bytes = match std::fs::read(&self.snapshot) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return self.read_legacy(),
            Err(e) => return Err(io_error(&self.snapshot)(e)),
        };
        let (generation, mut state) = decode_snapshot(&bytes).map_err(|reason| corrupt(&self.snapshot, reason))?;
        self.generation = generation;
        self.snapshot_bytes = bytes.len() as u64;
        self.snapshot_due = false;
        let log_path = self.log_path(generation);
        match File::open(&log_path) {
            Ok(mut file) => {
                let mut log = Vec::new();
                file.read_to_end(&mut log).map_err(io_error(&log_path))?;
                let mut at = 0usize;
                while let Some((delta, next)) = decode_record(&log, at) {
                    state.apply_delta(delta);
                    at = next;
                }
                if at < log.len() {
                    // A record torn by a crash: its flush never completed.
                    tracing::warn!(path = %log_path.display(), kept = at, dropped = log.len() - at, "checkpoint log ends with a torn record: cut off");
                    let file = OpenOptions::new().write(true).open(&log_path).map_err(io_error(&log_path))?;
                    file.set_len(at as u64).map_err(io_error(&log_path))?;
                    file.sync_all().map_err(io_error(&log_path))?;
                }
                self.log_bytes = at as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(&log_path)(e)),
        }
        Ok(state)
    }

    fn read_legacy(&mut self) -> Result<PartitionState, CheckpointError> {
        self.snapshot_due = true;
        match std::fs::read(&self.legacy) {
            Ok(bytes) => {
                let state = crate::engine::legacy::upgrade(&bytes).map_err(|reason| corrupt(&self.legacy, reason))?;
                tracing::info!(path = %self.legacy.display(), next_offset = state.next_offset, "JSON checkpoint read; the next save replaces it with a snapshot");
                Ok(state)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(PartitionState::default()),
            Err(e) => Err(io_error(&self.legacy)(e)),
        }
    }

    /// What changed as a log record, or the whole state when a snapshot is
    /// due or the log would outgrow the snapshot.
    fn encode(&mut self, state: &mut PartitionState) -> Result<Encoded, CheckpointError> {
        match state.take_changes() {
            Changes::Delta(delta) if !self.snapshot_due => {
                let bytes = encode_record(&delta, std::mem::take(&mut self.record_buffer))
                    .map_err(|reason| corrupt(&self.log_path(self.generation), reason))?;
                if self.log_bytes + bytes.len() as u64 <= (LOG_TO_SNAPSHOT * self.snapshot_bytes).max(MIN_LOG_BYTES) {
                    return Ok(Encoded::Record { bytes, records: delta.len() });
                }
                self.record_buffer = bytes;
            }
            _ => {}
        }
        let bytes = encode_snapshot(self.generation + 1, state, self.snapshot_bytes as usize).map_err(|reason| corrupt(&self.snapshot, reason))?;
        Ok(Encoded::Snapshot { bytes })
    }

    fn write(&mut self, write: Encoded) -> Result<Saved, CheckpointError> {
        match write {
            Encoded::Record { bytes, records } => {
                let appended = self.append(&bytes);
                let saved = Saved::Delta { bytes: bytes.len() as u64, records };
                self.record_buffer = bytes;
                appended.map(|()| saved)
            }
            Encoded::Snapshot { bytes } => self.write_snapshot(&bytes),
        }
    }

    fn append(&mut self, record: &[u8]) -> Result<(), CheckpointError> {
        let path = self.log_path(self.generation);
        if self.log.is_none() {
            let file = OpenOptions::new().create(true).append(true).open(&path).map_err(io_error(&path))?;
            self.log = Some(file);
        }
        let Some(file) = self.log.as_mut() else { return Ok(()) };
        file.write_all(record).map_err(io_error(&path))?;
        file.sync_data().map_err(io_error(&path))?;
        self.log_bytes += record.len() as u64;
        Ok(())
    }

    /// Writes a snapshot of generation `self.generation + 1`.
    fn write_snapshot(&mut self, bytes: &[u8]) -> Result<Saved, CheckpointError> {
        let generation = self.generation + 1;
        let tmp = self.snapshot.with_extension(format!("snapshot.tmp.{}", std::process::id()));
        {
            let mut file = File::create(&tmp).map_err(io_error(&tmp))?;
            file.write_all(bytes).map_err(io_error(&tmp))?;
            file.sync_all().map_err(io_error(&tmp))?;
        }
        std::fs::rename(&tmp, &self.snapshot).map_err(io_error(&self.snapshot))?;
        if let Ok(dir) = File::open(&self.dir) {
            let _ = dir.sync_all();
        }
        // The new snapshot holds everything: the old log and a legacy
        // checkpoint are no longer read.
        let old_log = self.log_path(self.generation);
        self.log = None;
        self.generation = generation;
        self.log_bytes = 0;
        self.snapshot_bytes = bytes.len() as u64;
        self.snapshot_due = false;
        let _ = std::fs::remove_file(old_log);
        let _ = std::fs::remove_file(self.log_path(generation));
        if self.legacy.exists() {
            let _ = std::fs::rename(&self.legacy, self.legacy.with_extension("json.migrated"));
        }
        Ok(Saved::Snapshot { bytes: bytes.len() as u64 })
    }
}

/// Header: magic, format, generation, body length, CRC-32 of the body.
const SNAPSHOT_HEADER: usize = 8 + 4 + 8 + 8 + 4;

/// `size_hint` is the previous snapshot's size: reserved up front, the body
/// is encoded in place rather than grown by doubling (a copy each time) and
/// copied once more behind the header.
fn encode_snapshot(generation: u64, state: &PartitionState, size_hint: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(size_hint + size_hint / 8 + SNAPSHOT_HEADER);
    out.extend_from_slice(SNAPSHOT_MAGIC);
    out.extend_from_slice(&FORMAT.to_le_bytes());
    out.extend_from_slice(&generation.to_le_bytes());
    out.extend_from_slice(&[0; 12]);
    let mut out = postcard::to_extend(state, out).map_err(|e| e.to_string())?;
    let len = (out.len() - SNAPSHOT_HEADER) as u64;
    let crc = crc32fast::hash(&out[SNAPSHOT_HEADER..]);
    out[20..28].copy_from_slice(&len.to_le_bytes());
    out[28..32].copy_from_slice(&crc.to_le_bytes());
    Ok(out)
}

fn decode_snapshot(bytes: &[u8]) -> Result<(u64, PartitionState), String> {
    let header = SNAPSHOT_HEADER;
    if bytes.len() < header || &bytes[..8] != SNAPSHOT_MAGIC {
        return Err("not a meter snapshot (bad header)".into());
    }
    let word = |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    let long = |at: usize| u64::from_le_bytes(std::array::from_fn(|i| bytes[at + i]));
    let format = word(8);
    if format != FORMAT {
        return Err(format!("snapshot format {format}, this version reads {FORMAT}"));
    }
    let generation = long(12);
    let len = long(20);
    let body = &bytes[header..];
    if body.len() as u64 != len {
        return Err(format!("snapshot body is {} bytes, its header says {len}", body.len()));
    }
    if crc32fast::hash(body) != word(28) {
        return Err("snapshot checksum mismatch".into());
    }
    let state = postcard::from_bytes(body).map_err(|e| e.to_string())?;
    Ok((generation, state))
}

/// A log record: length, CRC-32 of the body, body; written into `buffer`
/// (cleared first, its capacity kept).
fn encode_record(delta: &Delta, mut buffer: Vec<u8>) -> Result<Vec<u8>, String> {
    buffer.clear();
    buffer.extend_from_slice(&[0; 8]);
    let mut out = postcard::to_extend(delta, buffer).map_err(|e| e.to_string())?;
    let len = u32::try_from(out.len() - 8).map_err(|_| "delta too large".to_string())?;
    let crc = crc32fast::hash(&out[8..]);
    out[..4].copy_from_slice(&len.to_le_bytes());
    out[4..8].copy_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// The record at `at` and where the next starts, or None if it is not whole.
fn decode_record(log: &[u8], at: usize) -> Option<(Delta, usize)> {
    let head = log.get(at..at + 8)?;
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if len > MAX_RECORD_BYTES {
        return None;
    }
    let end = at + 8 + len as usize;
    let body = log.get(at + 8..end)?;
    if crc32fast::hash(body) != crc {
        return None;
    }
    postcard::from_bytes(body).ok().map(|delta| (delta, end))
}

#[cfg(test)]
mod tests;
