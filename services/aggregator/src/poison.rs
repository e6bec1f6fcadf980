//! Finds the input record that kills the process.
//!
//! A record that makes processing panic is caught and dead-lettered by the
//! runner. One that aborts the process (an allocation failure, a stack
//! overflow, a bug in a C library) cannot be caught: the process dies, and a
//! restart would die on it again, forever. So, per partition, the offset
//! being processed and how many starts already tried it are written into a
//! memory-mapped file beside the checkpoint before each record (two memory
//! writes, no system call: the kernel keeps the page when the process dies).
//! A restart reads it back, and after [`MAX_ATTEMPTS`] tries the record is
//! dead-lettered (`processing_aborted`) instead of processed.

use std::fs::OpenOptions;
use std::path::Path;

use memmap2::MmapMut;

/// Starts that may try one record before it is set aside.
pub const MAX_ATTEMPTS: i64 = 3;

const LEN: u64 = 16;

pub struct InFlight {
    map: MmapMut,
    /// The record the previous process died on, and how many starts tried it.
    suspect: Option<(i64, i64)>,
}

/// What to do with the next record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    Process,
    /// It killed the process this many times: dead-letter it.
    SetAside { attempts: i64 },
}

impl InFlight {
    pub fn open(dir: &Path, topic: &str, partition: i32) -> std::io::Result<InFlight> {
        let path = dir.join(format!("{topic}-{partition}.inflight"));
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path)?;
        if file.metadata()?.len() != LEN {
            file.set_len(LEN)?;
            let mut map = unsafe_map(&file)?;
            map[..8].copy_from_slice(&(-1i64).to_le_bytes());
            map[8..].copy_from_slice(&0i64.to_le_bytes());
            return Ok(InFlight { map, suspect: None });
        }
        let map = unsafe_map(&file)?;
        let mut out = InFlight { map, suspect: None };
        let (offset, attempts) = out.read();
        if offset >= 0 && attempts > 0 {
            out.suspect = Some((offset, attempts));
        }
        Ok(out)
    }

    fn read(&self) -> (i64, i64) {
        let mut a = [0u8; 8];
        let mut b = [0u8; 8];
        a.copy_from_slice(&self.map[..8]);
        b.copy_from_slice(&self.map[8..16]);
        (i64::from_le_bytes(a), i64::from_le_bytes(b))
    }

    fn write(&mut self, offset: i64, attempts: i64) {
        self.map[..8].copy_from_slice(&offset.to_le_bytes());
        self.map[8..16].copy_from_slice(&attempts.to_le_bytes());
    }

    /// Marks `offset` as being processed, unless it already killed
    /// [`MAX_ATTEMPTS`] - 1 starts.
    pub fn begin(&mut self, offset: i64) -> Attempt {
        let attempts = match self.suspect {
            Some((o, n)) if o == offset => n + 1,
            _ => 1,
        };
        if attempts >= MAX_ATTEMPTS {
            self.suspect = None;
            self.write(-1, 0);
            return Attempt::SetAside { attempts: attempts - 1 };
        }
        self.write(offset, attempts);
        Attempt::Process
    }

    /// The record was handled (the process survived it).
    pub fn end(&mut self, offset: i64) {
        if self.suspect.is_some_and(|(o, _)| o == offset) {
            self.suspect = None;
        }
        self.write(-1, 0);
    }
}

/// Maps the 16-byte marker file.
fn unsafe_map(file: &std::fs::File) -> std::io::Result<MmapMut> {
    // SAFETY: the file is this partition's own marker, written only through
    // this map by the one process that owns the partition (other instances
    // own other partitions); its length is fixed at 16 bytes above.
    unsafe { MmapMut::map_mut(file) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_that_kills_every_start_is_set_aside_on_the_third() {
        let dir = tempfile::tempdir().unwrap();
        // Start 1: records 0..4 pass, 5 kills the process (no end()).
        let mut f = InFlight::open(dir.path(), "t", 0).unwrap();
        for o in 0..5 {
            assert_eq!(f.begin(o), Attempt::Process);
            f.end(o);
        }
        assert_eq!(f.begin(5), Attempt::Process);
        drop(f);
        // Start 2: replays from the checkpoint (offset 3), dies on 5 again.
        let mut f = InFlight::open(dir.path(), "t", 0).unwrap();
        for o in 3..5 {
            assert_eq!(f.begin(o), Attempt::Process);
            f.end(o);
        }
        assert_eq!(f.begin(5), Attempt::Process);
        drop(f);
        // Start 3: 5 is set aside, 6 goes on.
        let mut f = InFlight::open(dir.path(), "t", 0).unwrap();
        for o in 3..5 {
            assert_eq!(f.begin(o), Attempt::Process);
            f.end(o);
        }
        assert_eq!(f.begin(5), Attempt::SetAside { attempts: 2 });
        assert_eq!(f.begin(6), Attempt::Process);
        f.end(6);
        drop(f);
        // A clean history is not a suspect.
        let mut f = InFlight::open(dir.path(), "t", 0).unwrap();
        assert_eq!(f.begin(5), Attempt::Process);
    }

    #[test]
    fn one_kill_at_a_random_moment_sets_nothing_aside() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = InFlight::open(dir.path(), "t", 1).unwrap();
        assert_eq!(f.begin(9), Attempt::Process);
        drop(f); // SIGKILL while processing 9
        let mut f = InFlight::open(dir.path(), "t", 1).unwrap();
        assert_eq!(f.begin(9), Attempt::Process, "a second try");
        f.end(9);
    }
}
