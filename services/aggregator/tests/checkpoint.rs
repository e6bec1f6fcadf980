//! Checkpoints against the engine: a state saved, torn, reloaded and resumed
//! emits exactly what an uninterrupted run emits, and a JSON checkpoint of
//! the previous format resumes as if nothing had changed.

mod scenario;

use std::collections::BTreeMap;
use std::path::Path;

use aggregator::checkpoint::CheckpointStore;
use aggregator::engine::{EngineSettings, PartitionState};
use aggregator::pricing::PriceBook;
use meter_model::*;
use proptest::prelude::*;
use scenario::Record;

fn book() -> PriceBook {
    PriceBook::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/price-book.toml")).unwrap()
}

/// The settings the fixture was written with.
fn settings() -> EngineSettings {
    let mut config = meter_config::MeterConfig::default();
    config.aggregator.default_period_grace_days = 5;
    config.tenants.insert("acme".into(), meter_config::TenantConfig { time_zone: "Europe/Paris".parse().expect("an IANA zone"), period_grace_days: None });
    EngineSettings::from_config(&config)
}

fn apply(state: &mut PartitionState, offset: i64, record: &Record, settings: &EngineSettings, book: &PriceBook) {
    match record {
        Record::Event(e) => {
            state.apply(offset, e.header().ingest_time, e, settings, book);
        }
        Record::Clock(at) => {
            let c = PeriodControl { action: PeriodAction::Clock, clock: *at, tenant: String::new(), month: String::new(), requested_by: "test".into(), reason: "test".into() };
            state.apply_control(offset, &c, settings, book);
        }
    }
}

type Emitted = BTreeMap<(String, i64), Aggregate>;

fn collect(into: &mut Emitted, aggregates: Vec<Aggregate>) {
    for a in aggregates {
        into.insert((a.aggregate_id.clone(), a.revision), a);
    }
}

fn records() -> Vec<Record> {
    scenario::first_part().into_iter().chain(scenario::second_part()).collect()
}

/// An uninterrupted run, flushed after each record in `flush_after`.
fn reference(records: &[Record], flush_after: &[usize]) -> Emitted {
    let (settings, book) = (settings(), book());
    let mut state = PartitionState::default();
    let mut out = Emitted::new();
    for (i, r) in records.iter().enumerate() {
        apply(&mut state, i as i64, r, &settings, &book);
        if flush_after.contains(&i) {
            collect(&mut out, state.take_emissions(&book));
        }
    }
    collect(&mut out, state.take_emissions(&book));
    out
}

/// The latest revision of each aggregate.
fn latest(emitted: &Emitted) -> BTreeMap<String, Aggregate> {
    let mut out = BTreeMap::new();
    for ((id, _), a) in emitted {
        out.insert(id.clone(), a.clone());
    }
    out
}

#[test]
fn a_json_checkpoint_of_the_previous_format_resumes_exactly() {
    let (settings, book) = (settings(), book());
    let first = scenario::first_part().len();
    let all = records();
    let expected = reference(&all, &[first - 1, first + 10]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/checkpoint-v1.json"), dir.path().join("t-0.json")).unwrap();
    let store = CheckpointStore::new(dir.path()).unwrap();
    let (mut state, mut checkpoint) = store.open("t", 0).unwrap();
    assert_eq!(state.next_offset, first as i64, "the fixture holds the first part");
    assert_eq!(state.open_events(), 64);
    let mut resumed = Emitted::new();
    for (i, r) in all.iter().enumerate().skip(first) {
        apply(&mut state, i as i64, r, &settings, &book);
        if i == first + 10 {
            collect(&mut resumed, state.take_emissions(&book));
            checkpoint.save_owned(&mut state, 1).unwrap();
        }
    }
    collect(&mut resumed, state.take_emissions(&book));
    assert!(resumed.values().any(|a| a.is_final), "January closed after the checkpoint");
    // Every revision made after the checkpoint is the uninterrupted run's, byte for byte.
    for (key, a) in &resumed {
        assert_eq!(expected.get(key), Some(a), "revision {key:?}");
    }
    let expected_latest = latest(&expected);
    for (id, a) in latest(&resumed) {
        assert_eq!(expected_latest.get(&id), Some(&a));
    }
    assert!(dir.path().join("t-0.json.migrated").exists() && !dir.path().join("t-0.json").exists(), "the JSON file is replaced by a snapshot");
    assert_eq!(store.load("t", 0).unwrap().next_offset, (first + 11) as i64);
}

#[derive(Debug, Clone)]
enum Step {
    /// Flush and save after this record.
    Save,
    /// Save, then a torn next record (a crash while appending), then restart.
    SaveTornRestart(u8),
    /// Crash: what was not saved is lost; resume from the checkpoint.
    Restart,
    Nothing,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => Just(Step::Nothing),
        3 => Just(Step::Save),
        1 => any::<u8>().prop_map(Step::SaveTornRestart),
        1 => Just(Step::Restart),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Saves at any points, crashes between them (unsaved work lost and
    /// redone from the checkpoint's offset, as the runner does) and records
    /// torn in the log: every revision emitted is the uninterrupted run's,
    /// and the last one of every aggregate is reached.
    #[test]
    fn crashes_and_torn_logs_change_no_revision(steps in proptest::collection::vec(step(), 130)) {
        let (settings, book) = (settings(), book());
        let all = records();
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::new(dir.path()).unwrap();
        let (mut state, mut checkpoint) = store.open("t", 0).unwrap();
        let mut emitted = Emitted::new();
        let mut saves = Vec::new();
        let mut offset = 0usize;
        let mut restarts = 0;
        while offset < all.len() {
            apply(&mut state, offset as i64, &all[offset], &settings, &book);
            match steps.get(offset).cloned().unwrap_or(Step::Nothing) {
                Step::Nothing => {}
                Step::Save => {
                    collect(&mut emitted, state.take_emissions(&book));
                    checkpoint.save_owned(&mut state, 1).unwrap();
                    saves.push(offset);
                }
                Step::SaveTornRestart(garbage) => {
                    collect(&mut emitted, state.take_emissions(&book));
                    checkpoint.save_owned(&mut state, 1).unwrap();
                    saves.push(offset);
                    let logs: Vec<_> = std::fs::read_dir(dir.path()).unwrap().filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "log")).collect();
                    for log in logs {
                        let mut bytes = std::fs::read(&log).unwrap();
                        bytes.extend(std::iter::repeat_n(garbage, 1 + usize::from(garbage % 40)));
                        std::fs::write(&log, bytes).unwrap();
                    }
                    let before = state.clone();
                    (state, checkpoint) = store.open("t", 0).unwrap();
                    prop_assert_eq!(&state, &before, "the reloaded state is the saved one");
                    restarts += 1;
                }
                Step::Restart if restarts < 6 => {
                    (state, checkpoint) = store.open("t", 0).unwrap();
                    offset = state.next_offset as usize;
                    restarts += 1;
                    continue;
                }
                Step::Restart => {}
            }
            offset += 1;
        }
        collect(&mut emitted, state.take_emissions(&book));
        let expected = reference(&all, &saves);
        for (key, a) in &emitted {
            prop_assert_eq!(expected.get(key), Some(a), "revision {:?}", key);
        }
        prop_assert_eq!(latest(&emitted), latest(&expected));
    }
}

