use super::*;
use crate::engine::{EngineSettings, PartitionState};
use crate::pricing::PriceBook;
use chrono::{DateTime, Duration, TimeZone, Utc};
use meter_model::*;

fn book() -> PriceBook {
    PriceBook::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/price-book.toml")).unwrap()
}

fn task(i: u32, at: DateTime<Utc>) -> Event {
    Event::TicketTime(TicketTime {
        header: EventHeader {
            event_id: format!("t-{i}"),
            source: "glpi".into(),
            tenant: "acme".into(),
            subsidiary: "acme-fr".into(),
            domain: "infrastructure".into(),
            event_time: at,
            ingest_time: at,
            version: 0,
            deleted: false,
        },
        ticket_id: "T-1".into(),
        task_id: i.to_string(),
        ticket_type: TicketType::Incident,
        category_path: vec!["RUN".into()],
        in_scope: true,
        requester: format!("user{}", i % 3),
        technician: "bob".into(),
        technician_profile: TechnicianProfile::Engineer,
        application: None,
        country: None,
        minutes_worked: 12,
        start_time: at - Duration::minutes(12),
    })
}

fn fill(state: &mut PartitionState, from: u32, to: u32) {
    let settings = EngineSettings::from_config(&meter_config::MeterConfig::default());
    let book = book();
    for i in from..to {
        let at = Utc.with_ymd_and_hms(2026, 1, 5, 8, 0, 0).unwrap() + Duration::minutes(i64::from(i));
        state.apply(i64::from(i), at, &task(i, at), &settings, &book);
    }
    state.take_emissions(&book);
}

#[test]
fn a_missing_checkpoint_is_an_empty_state_and_saves_are_a_snapshot_then_deltas() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::new(dir.path()).unwrap();
    let (mut state, mut checkpoint) = store.open("t", 0).unwrap();
    assert_eq!(state.next_offset, 0);
    assert_eq!(state.open_aggregates(), 0);
    fill(&mut state, 0, 10);
    assert!(matches!(checkpoint.save_owned(&mut state, 1).unwrap(), Saved::Snapshot { .. }), "the first save writes a snapshot");
    fill(&mut state, 10, 20);
    let Saved::Delta { records, .. } = checkpoint.save_owned(&mut state, 1).unwrap() else { panic!("a delta") };
    assert!(records >= 10, "the new events and the aggregates they changed: {records}");
    fill(&mut state, 20, 21);
    checkpoint.save_owned(&mut state, 1).unwrap();
    assert_eq!(store.load("t", 0).unwrap(), state);
    assert_eq!(store.load("t", 0).unwrap().next_offset, 21);
}

#[test]
fn a_close_writes_a_snapshot_and_the_old_log_goes() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::new(dir.path()).unwrap();
    let (mut state, mut checkpoint) = store.open("t", 0).unwrap();
    fill(&mut state, 0, 5);
    checkpoint.save_owned(&mut state, 1).unwrap();
    fill(&mut state, 5, 8);
    checkpoint.save_owned(&mut state, 1).unwrap();
    assert!(dir.path().join("t-0.1.log").exists());
    let settings = EngineSettings::from_config(&meter_config::MeterConfig::default());
    let clock = PeriodControl {
        action: PeriodAction::Clock,
        clock: Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap(),
        tenant: String::new(),
        month: String::new(),
        requested_by: "test".into(),
        reason: "test".into(),
    };
    state.apply_control(8, &clock, &settings, &book());
    // Three scopes: their day, week and month close; the year stays open.
    assert_eq!(state.take_emissions(&book()).iter().filter(|a| a.is_final).count(), 3 * 3, "January's finals");
    assert!(matches!(checkpoint.save_owned(&mut state, 1).unwrap(), Saved::Snapshot { .. }));
    assert!(!dir.path().join("t-0.1.log").exists());
    let back = store.load("t", 0).unwrap();
    assert_eq!(back, state);
    assert_eq!(back.open_aggregates(), 3);
}

#[test]
fn a_damaged_snapshot_is_reported_and_a_damaged_log_record_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::new(dir.path()).unwrap();
    let (mut state, mut checkpoint) = store.open("t", 0).unwrap();
    fill(&mut state, 0, 5);
    checkpoint.save_owned(&mut state, 1).unwrap();
    let snapshot_state = store.load("t", 0).unwrap();
    fill(&mut state, 5, 9);
    checkpoint.save_owned(&mut state, 1).unwrap();
    // A bit flipped in the log record: its checksum fails, the state is the snapshot's.
    let log = dir.path().join("t-0.1.log");
    let mut bytes = std::fs::read(&log).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    std::fs::write(&log, &bytes).unwrap();
    let back = store.load("t", 0).unwrap();
    assert_eq!(back, snapshot_state);
    assert_eq!(back.next_offset, 5);
    assert_eq!(std::fs::metadata(&log).unwrap().len(), 0, "the damaged record is cut off");
    // A damaged snapshot says so, with what to do.
    let snapshot = dir.path().join("t-0.snapshot");
    let mut bytes = std::fs::read(&snapshot).unwrap();
    bytes[40] ^= 0xff;
    std::fs::write(&snapshot, &bytes).unwrap();
    let Err(e) = store.load("t", 0) else { panic!("a corrupt snapshot loads") };
    assert!(matches!(e, CheckpointError::Corrupt { .. }), "{e}");
    assert!(e.to_string().contains("move it away"), "{e}");
}

#[test]
fn an_old_owner_cannot_overwrite_a_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::new(dir.path()).unwrap();
    let old = store.claim("t", 0).unwrap();
    let (mut state, mut checkpoint) = store.open("t", 0).unwrap();
    fill(&mut state, 0, 10);
    checkpoint.save_owned(&mut state, old).unwrap();
    let new = store.claim("t", 0).unwrap();
    assert!(new > old);
    fill(&mut state, 10, 20);
    assert!(matches!(checkpoint.save_owned(&mut state, old), Err(CheckpointError::Fenced { .. })));
    assert_eq!(store.load("t", 0).unwrap().next_offset, 10);
    let (mut newer, mut newer_checkpoint) = store.open("t", 0).unwrap();
    fill(&mut newer, 10, 20);
    newer_checkpoint.save_owned(&mut newer, new).unwrap();
    assert_eq!(store.load("t", 0).unwrap().next_offset, 20);
}

#[test]
fn writes_in_the_background_are_ordered_whole_and_reported_with_the_next_save() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::new(dir.path()).unwrap();
    let (mut state, mut checkpoint) = store.open("t", 0).unwrap();
    let mut saved = Vec::new();
    for round in 0..20u32 {
        fill(&mut state, round * 50, round * 50 + 50);
        // The state moves on while the previous write may still be in flight.
        checkpoint.begin_save_owned(&mut state, 1).unwrap();
        saved.push(state.clone());
    }
    assert!(checkpoint.finish().unwrap().is_some(), "the last write is reported");
    assert_eq!(checkpoint.finish().unwrap(), None, "and only once");
    assert_eq!(store.load("t", 0).unwrap(), *saved.last().unwrap());
    assert_eq!(store.load("t", 0).unwrap().next_offset, 1000);
    // Dropping the handle with a write in flight leaves the files whole.
    fill(&mut state, 1000, 1010);
    checkpoint.begin_save_owned(&mut state, 1).unwrap();
    drop(checkpoint);
    assert_eq!(store.load("t", 0).unwrap(), state);
}

#[test]
fn a_failed_background_write_is_the_next_saves_error_and_then_a_snapshot_is_due() {
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    let store = CheckpointStore::new(&state_dir).unwrap();
    let (mut state, mut checkpoint) = store.open("t", 0).unwrap();
    fill(&mut state, 0, 10);
    checkpoint.save_owned(&mut state, 1).unwrap();
    // The folder becomes unwritable: a file where the log would be opened.
    std::fs::remove_dir_all(&state_dir).unwrap();
    std::fs::write(&state_dir, b"not a folder").unwrap();
    fill(&mut state, 10, 20);
    checkpoint.begin_save_owned(&mut state, 1).unwrap();
    assert!(matches!(checkpoint.finish(), Err(CheckpointError::Io { .. })), "the write failed and says so");
    std::fs::remove_file(&state_dir).unwrap();
    std::fs::create_dir_all(&state_dir).unwrap();
    fill(&mut state, 20, 30);
    assert!(matches!(checkpoint.save_owned(&mut state, 1).unwrap(), Saved::Snapshot { .. }), "the lost delta is made up by a snapshot");
    assert_eq!(store.load("t", 0).unwrap(), state);
}

#[test]
fn a_reused_record_buffer_writes_the_same_record_as_a_fresh_one() {
    let mut state = PartitionState::default();
    state.track_changes();
    fill(&mut state, 0, 30);
    let Changes::Delta(delta) = state.take_changes() else { panic!("a delta is tracked") };
    let fresh = encode_record(&delta, Vec::new()).unwrap();
    // A longer earlier record left in the buffer must not show through.
    let reused = encode_record(&delta, vec![0xAB; fresh.len() * 3]).unwrap();
    assert_eq!(reused, fresh);
    let (decoded, end) = decode_record(&reused, 0).expect("the record reads back whole");
    assert_eq!(end, reused.len());
    assert_eq!(encode_record(&decoded, Vec::new()).unwrap(), fresh);
}

#[test]
fn a_snapshot_is_the_same_bytes_whatever_its_size_hint_and_reads_back() {
    let mut state = PartitionState::default();
    fill(&mut state, 0, 40);
    let unhinted = encode_snapshot(7, &state, 0).unwrap();
    for hint in [1, unhinted.len() / 2, unhinted.len(), unhinted.len() * 4] {
        assert_eq!(encode_snapshot(7, &state, hint).unwrap(), unhinted, "size hint {hint}");
    }
    // The body is what postcard writes for the state, behind the header.
    assert_eq!(unhinted[SNAPSHOT_HEADER..], postcard::to_stdvec(&state).unwrap()[..]);
    let (generation, read) = decode_snapshot(&unhinted).unwrap();
    assert_eq!((generation, read), (7, state));
}
