//! The sink's CPU work per batch, without servers: decode N aggregates and N
//! events (Avro single-object, as on the topics) and build their ClickHouse
//! rows. Prints rows per second, best of three rounds, on one core.
//!
//! Run: `cargo bench -p sink-clickhouse --bench sink [-- N]` (default 200000).

mod common;

use std::hint::black_box;
use std::time::Instant;

use meter_model::aggregate_decode::decode_aggregate;
use meter_model::fast_decode::decode_event;
use meter_model::{Aggregate, EventCodec, Limits};
use sink_clickhouse::details::{Accounting, DetailBatch};
use sink_clickhouse::writer::AggregateRow;

/// Best of three rounds of `round` on what `setup` prepares (not timed).
fn best_of_three_with<S>(label: &str, rows: usize, mut setup: impl FnMut() -> S, mut round: impl FnMut(S) -> usize) {
    let mut best = f64::MAX;
    for _ in 0..3 {
        let input = setup();
        let started = Instant::now();
        assert_eq!(black_box(round(input)), rows, "{label}: every message gives a row");
        best = best.min(started.elapsed().as_secs_f64());
    }
    println!("{label:<48} {:>12.0} rows/s  ({rows} rows in {:.3} s)", rows as f64 / best, best);
}

/// Runs `f` on every item, its result kept from the optimizer; the count.
fn each<I: Iterator, T>(items: I, mut f: impl FnMut(I::Item) -> T) -> usize {
    let mut n = 0;
    for item in items {
        black_box(f(item));
        n += 1;
    }
    n
}

fn best_of_three(label: &str, rows: usize, mut round: impl FnMut() -> usize) {
    best_of_three_with(label, rows, || (), |()| round());
}

fn main() {
    let n: usize = std::env::args().skip(1).find_map(|s| s.parse().ok()).unwrap_or(200_000);
    let aggregates: Vec<Vec<u8>> = (0..n).map(|i| EventCodec::encode(&common::aggregate(i)).expect("encodes")).collect();
    let events: Vec<(meter_model::EventKind, Vec<u8>)> = (0..n)
        .map(|i| {
            let e = common::event(i);
            (e.kind(), EventCodec::encode_event(&e).expect("encodes"))
        })
        .collect();
    let limits = Limits::default();
    let tz = chrono_tz::Europe::Paris;
    println!("sink CPU bench: {n} aggregates and {n} events (one third of each kind), one core");

    // What the sink did before issue 11: the codec's generic Value path, rows by copy.
    let before = || {
        let mut batch = Vec::with_capacity(n);
        for b in &aggregates {
            let a = EventCodec::decode::<Aggregate>(b).expect("decodes");
            batch.push(AggregateRow::from_aggregate(&a).expect("fits"));
        }
        let mut details = DetailBatch::default();
        for (kind, b) in &events {
            let e = EventCodec::decode_event(*kind, b).expect("decodes");
            e.validate_with(&limits).expect("valid");
            details.push(&e, tz, Accounting::Counted);
        }
        batch.len() + details.len()
    };
    // What it does now: straight into the structs, strings moved into the rows.
    let now = || {
        let mut batch = Vec::with_capacity(n);
        for b in &aggregates {
            batch.push(AggregateRow::from_owned(decode_aggregate(b).expect("decodes")).expect("fits"));
        }
        let mut details = DetailBatch::default();
        for (kind, b) in &events {
            let e = decode_event(*kind, b).expect("decodes");
            e.validate_with(&limits).expect("valid");
            details.push_owned(e, tz, Accounting::Counted);
        }
        batch.len() + details.len()
    };
    best_of_three("aggregates: decode, EventCodec (before)", n, || {
        each(aggregates.iter(), |b| EventCodec::decode::<Aggregate>(b).expect("decodes"))
    });
    best_of_three("aggregates: decode, aggregate_decode (now)", n, || {
        each(aggregates.iter(), |b| decode_aggregate(b).expect("decodes"))
    });
    let decoded: Vec<Aggregate> = aggregates.iter().map(|b| decode_aggregate(b).expect("decodes")).collect();
    best_of_three_with("aggregates: row, copied (before)", n, || (), |()| {
        each(decoded.iter(), |a| AggregateRow::from_aggregate(a).expect("fits"))
    });
    best_of_three_with("aggregates: row, moved (now)", n, || decoded.clone(), |owned| {
        each(owned.into_iter(), |a| AggregateRow::from_owned(a).expect("fits"))
    });
    best_of_three("events: decode, EventCodec (before)", n, || {
        each(events.iter(), |(k, b)| EventCodec::decode_event(*k, b).expect("decodes"))
    });
    best_of_three("events: decode, fast_decode (now)", n, || each(events.iter(), |(k, b)| decode_event(*k, b).expect("decodes")));
    best_of_three("whole, before: decode + validate + rows", 2 * n, before);
    best_of_three("whole, now: decode + validate + rows", 2 * n, now);
}
