//! The aggregator's steady path allocates nothing: decoding a stream of one
//! kind into one reused event (`fast_decode::decode_event_into`), once its
//! buffers have grown to the stream's sizes, and validating valid events.
//! A counting global allocator (its own test binary) counts the allocations
//! of the measuring thread only, so other tests' threads do not disturb it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use apache_avro::types::Value;
use apache_avro::Schema;
use chrono::{DateTime, Duration, Utc};
use meter_model::codec::schema_texts;
use meter_model::fast_decode::{decode_event, decode_event_into};
use meter_model::*;

struct CountingAllocator;

thread_local! {
    // Const-initialised cells without destructors: reading them allocates nothing.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn note_allocation() {
    // `try_with`: a thread's locals are gone while it exits.
    let _ = COUNTING.try_with(|counting| {
        if counting.get() {
            let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        }
    });
}

// SAFETY: every call is passed on to the system allocator unchanged.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// How many allocations (and reallocations) `f` makes on this thread.
fn allocations_in(f: impl FnOnce()) -> usize {
    ALLOCATIONS.with(|n| n.set(0));
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    ALLOCATIONS.with(|n| n.get())
}

fn at(i: usize) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").unwrap().to_utc() + Duration::seconds(i as i64 * 13)
}

fn header(i: usize) -> EventHeader {
    EventHeader {
        event_id: format!("event-{i}"),
        source: "glpi-main".into(),
        tenant: ["acme", "globex", "initech-holdings"][i % 3].into(),
        subsidiary: ["acme-fr", "acme-de", "acme-it"][i % 3].into(),
        domain: "infrastructure".into(),
        event_time: at(i),
        ingest_time: at(i) + Duration::seconds(30),
        version: (i % 5) as i64,
        deleted: i.is_multiple_of(11),
    }
}

/// Tickets as GLPI sends them: optional fields and path lengths that change
/// from one task to the next.
fn ticket(i: usize) -> Event {
    Event::TicketTime(TicketTime {
        header: header(i),
        ticket_id: format!("T{}", i / 4),
        task_id: i.to_string(),
        ticket_type: if i.is_multiple_of(3) { TicketType::Request } else { TicketType::Incident },
        category_path: ["RUN", "MCO", "servers", "backups"][..1 + i % 4].iter().map(|s| s.to_string()).collect(),
        in_scope: !i.is_multiple_of(7),
        requester: format!("user{}", i % 50),
        technician: format!("tech{}", i % 8),
        technician_profile: TechnicianProfile::VARIANTS[i % 4],
        application: (i.is_multiple_of(4)).then(|| "Sage".to_string()),
        country: (i % 3 != 1).then(|| "FR".to_string()),
        minutes_worked: 1 + (i % 120) as i32,
        start_time: at(i) - Duration::minutes(5),
    })
}

fn check(i: usize) -> Event {
    let missed = i.is_multiple_of(6);
    Event::CheckResult(CheckResult {
        header: header(i),
        check_id: format!("check-{}", i % 40),
        check_name: "Backup jobs".into(),
        target: format!("srv-{:02}", i % 12),
        frequency: CheckFrequency::VARIANTS[i % 5],
        scheduled_time: (i.is_multiple_of(2)).then(|| at(i) - Duration::minutes(1)),
        executed_time: (!missed).then(|| at(i)),
        status: if missed { CheckStatus::Missed } else { CheckStatus::VARIANTS[i % 4] },
        ticket_ref: (i.is_multiple_of(5)).then(|| format!("T-{i}")),
        time_spent_minutes: (i % 30) as i32,
        output: (!i.is_multiple_of(3)).then(|| "OK - 3 jobs, last 02:14, 120 GB ".repeat(1 + i % 8)),
    })
}

fn vm(i: usize) -> Event {
    let sample = i.is_multiple_of(2);
    Event::VmUsage(VmUsage {
        header: header(i),
        vm_id: format!("vm-{}", i % 30),
        vcpu: 1 + (i % 16) as i32,
        ram_mib: 1024 * (1 + i % 64) as i64,
        storage_gb: 10 * (1 + i % 100) as i64,
        bandwidth_mbps: 100,
        guaranteed_bandwidth: i % 2 == 1,
        public_ips: (i % 3) as i32,
        sla_tier: SlaTier::VARIANTS[i % 3],
        options: ["backup", "monitoring", "antivirus", "snapshot", "gpu"][..i % 6].iter().map(|s| s.to_string()).collect(),
        datacenter: ["PAR1", "PAR2", "FRA1"][i % 3].into(),
        transition: if sample { VmTransition::Sample } else { VmTransition::VARIANTS[1 + i % 5] },
        sample_interval_seconds: if sample { 300 } else { 0 },
    })
}

/// A message as a producer of the older schema `text` wrote it (the fields
/// that schema has), with its legacy fingerprint when `legacy`.
fn written_with(text: &str, event: &Event, legacy: bool) -> Vec<u8> {
    let schema = Schema::parse_str(text).unwrap();
    let Schema::Record(record) = &schema else { panic!("event schemas are records") };
    let value = match event {
        Event::VmUsage(e) => e.to_avro(),
        Event::CheckResult(e) => e.to_avro(),
        Event::TicketTime(e) => e.to_avro(),
    };
    let Ok(Value::Record(mut fields)) = value else { panic!("events are records") };
    fields.retain(|(name, _)| record.fields.iter().any(|f| f.name == *name));
    let mut bytes = if legacy {
        use apache_avro::headers::HeaderBuilder;
        apache_avro::headers::RabinFingerprintHeader::from_schema(&schema).build_header()
    } else {
        meter_model::fingerprint::single_object_header(text).unwrap().to_vec()
    };
    bytes.extend(apache_avro::to_avro_datum(&schema, Value::Record(fields)).unwrap());
    bytes
}

/// A stream of one kind: mostly current messages, some from every older
/// schema version and with the legacy fingerprint.
fn stream(kind: EventKind, make: fn(usize) -> Event) -> Vec<Vec<u8>> {
    let older: Vec<&str> =
        schema_texts().filter(|(record, _, current)| *record == kind.spec().record && !current).map(|(_, t, _)| t).collect();
    (0..600)
        .map(|i| {
            let event = make(i);
            match i % 10 {
                3 => written_with(older[i % older.len()], &event, i % 20 == 3),
                7 => written_with(kind.spec().schema, &event, true),
                _ => EventCodec::encode_event(&event).unwrap(),
            }
        })
        .collect()
}

#[test]
fn a_stream_decoded_into_one_event_and_validated_allocates_nothing() {
    let limits = Limits::default();
    for (kind, make) in [(EventKind::TicketTime, ticket as fn(usize) -> Event), (EventKind::CheckResult, check), (EventKind::VmUsage, vm)] {
        let messages = stream(kind, make);
        // The counter counts: the allocating decoder allocates.
        assert!(allocations_in(|| drop(decode_event(kind, &messages[0]))) > 0);

        let mut target = decode_event(kind, &messages[0]).unwrap();
        // One pass grows the buffers (and the reserve) to the stream's sizes.
        for m in &messages {
            decode_event_into(kind, m, &mut target).unwrap();
        }
        let mut decoded = 0;
        let allocations = allocations_in(|| {
            for m in &messages {
                let read = decode_event_into(kind, m, &mut target).is_ok();
                let valid = target.validate_with(&limits).is_ok();
                decoded += usize::from(read && valid);
            }
        });
        assert_eq!(decoded, messages.len(), "{kind}: every message decodes to a valid event");
        assert_eq!(allocations, 0, "{kind}: allocations while decoding and validating {} messages", messages.len());
        // And the reused target holds what the allocating decoder reads.
        for m in messages.iter().step_by(37) {
            decode_event_into(kind, m, &mut target).unwrap();
            assert_eq!(target, decode_event(kind, m).unwrap());
        }
    }
}

#[test]
fn validating_valid_events_allocates_nothing() {
    let events: Vec<Event> = (0..300).flat_map(|i| [ticket(i), check(i), vm(i)]).collect();
    let limits = Limits::default();
    let mut valid = 0;
    let allocations = allocations_in(|| valid = events.iter().filter(|e| e.validate_with(&limits).is_ok()).count());
    assert_eq!(valid, events.len());
    assert_eq!(allocations, 0);
    // An invalid one lists its problems (allocating is fine then).
    let mut bad = ticket(1);
    bad.header_mut().tenant.clear();
    assert!(allocations_in(|| assert!(bad.validate_with(&limits).is_err())) > 0);
}
