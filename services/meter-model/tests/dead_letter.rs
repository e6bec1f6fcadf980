//! Each dead-letter constructor fills the location of its origin and nothing else.

use meter_model::{DeadLetter, EventKind};

#[test]
fn a_file_line_letter_names_the_file_and_line() {
    let l = DeadLetter::from_file_line("collector-file", "a.jsonl", 7, "malformed_json", "bad", b"{x".as_slice())
        .of_kind(EventKind::TicketTime);
    assert_eq!((l.component.as_str(), l.error_kind.as_str(), l.error.as_str()), ("collector-file", "malformed_json", "bad"));
    assert_eq!(l.original, b"{x");
    assert_eq!(l.event_kind.as_deref(), Some("ticket-time"));
    assert_eq!((l.source_file.as_deref(), l.source_line), (Some("a.jsonl"), Some(7)));
    assert_eq!((l.source_topic, l.source_partition, l.source_offset), (None, None, None));
    assert_eq!(l.failed_at.timestamp_subsec_nanos() % 1_000_000, 0, "millisecond precision, as Avro keeps it");
}

#[test]
fn a_topic_letter_names_the_topic_position_only() {
    let l = DeadLetter::from_topic_position("aggregator", "meter.vm-usage", 3, 42, "avro_decode", "short", vec![1, 2]);
    assert_eq!((l.source_topic.as_deref(), l.source_partition, l.source_offset), (Some("meter.vm-usage"), Some(3), Some(42)));
    assert_eq!((l.source_file, l.source_line, l.event_kind), (None, None, None));
}

#[test]
fn a_request_letter_names_where_it_came_from_and_its_position_when_given() {
    let l = DeadLetter::from_request("collector-supervision", "POST /nrdp/", Some(2), "unknown_host", "no host", b"{}".as_slice());
    assert_eq!((l.source_file.as_deref(), l.source_line), (Some("POST /nrdp/"), Some(2)));
    let l = DeadLetter::from_request("collector-vm", "http://vm:9177/metrics", None, "unmapped_vm", "no rule", Vec::new());
    assert_eq!((l.source_file.as_deref(), l.source_line, l.source_topic), (Some("http://vm:9177/metrics"), None, None));
}
