//! Validation lists every problem of an event, in fixed words: collectors
//! print them to users, dead letters carry them as their reason, and tests
//! elsewhere match on them. Each rule has a case here with its exact message,
//! so that a faster validation cannot change what users read.

use chrono::{DateTime, Duration, TimeZone, Utc};
use meter_model::*;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().to_utc()
}

fn header() -> EventHeader {
    EventHeader {
        event_id: "e-1".into(),
        source: "glpi".into(),
        tenant: "acme".into(),
        subsidiary: "acme-fr".into(),
        domain: "infrastructure".into(),
        event_time: at("2026-01-12T10:45:00Z"),
        ingest_time: at("2026-01-12T10:46:00Z"),
        version: 3,
        deleted: false,
    }
}

fn vm() -> VmUsage {
    VmUsage {
        header: header(),
        vm_id: "vm-1".into(),
        vcpu: 4,
        ram_mib: 8192,
        storage_gb: 100,
        bandwidth_mbps: 200,
        guaranteed_bandwidth: false,
        public_ips: 1,
        sla_tier: SlaTier::Sla99_9,
        options: vec!["backup".into()],
        datacenter: "PAR1".into(),
        transition: VmTransition::Sample,
        sample_interval_seconds: 300,
    }
}

fn check() -> CheckResult {
    CheckResult {
        header: header(),
        check_id: "c-1".into(),
        check_name: "Backup jobs".into(),
        target: "srv-01".into(),
        frequency: CheckFrequency::Daily,
        scheduled_time: Some(at("2026-01-12T10:00:00Z")),
        executed_time: Some(at("2026-01-12T10:05:00Z")),
        status: CheckStatus::Ok,
        ticket_ref: Some("T-1".into()),
        time_spent_minutes: 5,
        output: Some("OK - 3 jobs".into()),
    }
}

fn ticket() -> TicketTime {
    TicketTime {
        header: header(),
        ticket_id: "T-42".into(),
        task_id: "7".into(),
        ticket_type: TicketType::Incident,
        category_path: vec!["RUN".into(), "MCO".into(), "backups".into()],
        in_scope: true,
        requester: "marie.dupont".into(),
        technician: "bob".into(),
        technician_profile: TechnicianProfile::Engineer,
        application: Some("Sage".into()),
        country: Some("FR".into()),
        minutes_worked: 165,
        start_time: at("2026-01-12T08:00:00Z"),
    }
}

fn problems(event: Event) -> Vec<String> {
    match event.validate() {
        Ok(()) => Vec::new(),
        Err(e) => e.problems,
    }
}

fn long(n: usize) -> String {
    "x".repeat(n)
}

#[test]
fn valid_events_have_no_problem() {
    for event in [Event::VmUsage(vm()), Event::CheckResult(check()), Event::TicketTime(ticket())] {
        assert_eq!(problems(event), Vec::<String>::new());
    }
    // At the limits, still valid.
    let mut t = ticket();
    t.header.event_id = long(256);
    t.category_path = vec!["RUN".into(); 16];
    t.minutes_worked = 1440;
    t.start_time = t.header.event_time;
    assert_eq!(problems(Event::TicketTime(t)), Vec::<String>::new());
    let mut c = check();
    c.output = Some(long(4096));
    c.ticket_ref = None;
    c.scheduled_time = None;
    assert_eq!(problems(Event::CheckResult(c)), Vec::<String>::new());
    let mut c = check();
    c.status = CheckStatus::Missed;
    c.executed_time = None;
    assert_eq!(problems(Event::CheckResult(c)), Vec::<String>::new());
    let mut v = vm();
    v.transition = VmTransition::Stop;
    v.sample_interval_seconds = 0;
    v.vcpu = 4096;
    v.options = Vec::new();
    assert_eq!(problems(Event::VmUsage(v)), Vec::<String>::new());
    let mut h = ticket();
    h.header.event_time = at("2000-01-01T00:00:00Z");
    h.header.ingest_time = at("2099-12-31T23:59:59Z");
    h.start_time = h.header.event_time;
    assert_eq!(problems(Event::TicketTime(h)), Vec::<String>::new());
}

#[test]
fn header_problems_are_worded_as_before() {
    let mut t = ticket();
    t.header.event_id = " ".into();
    t.header.source = String::new();
    t.header.tenant = "\t".into();
    t.header.subsidiary = String::new();
    t.header.domain = String::new();
    assert_eq!(
        problems(Event::TicketTime(t)),
        [
            "event_id must not be empty",
            "source must not be empty",
            "tenant must not be empty",
            "subsidiary must not be empty",
            "domain must not be empty",
        ]
    );

    let mut t = ticket();
    t.header.tenant = long(257);
    t.header.domain = long(300);
    assert_eq!(
        problems(Event::TicketTime(t)),
        ["tenant is 257 bytes, more than the 256 allowed", "domain is 300 bytes, more than the 256 allowed"]
    );

    let mut t = ticket();
    t.header.event_time = at("1999-12-31T23:59:59Z");
    t.header.ingest_time = at("2100-01-01T00:00:00Z");
    t.start_time = t.header.event_time;
    assert_eq!(
        problems(Event::TicketTime(t)),
        [
            "event_time 1999-12-31 23:59:59 UTC is outside [2000-01-01 00:00:00 UTC, 2100-01-01 00:00:00 UTC)",
            "ingest_time 2100-01-01 00:00:00 UTC is outside [2000-01-01 00:00:00 UTC, 2100-01-01 00:00:00 UTC)",
        ]
    );

    let mut t = ticket();
    t.header.event_time = t.header.ingest_time + Duration::seconds(3601);
    t.header.version = -1;
    assert_eq!(
        problems(Event::TicketTime(t)),
        [
            "event_time 2026-01-12 11:46:01 UTC is more than 3600 s ahead of its ingest_time 2026-01-12 10:46:00 UTC (a wrong clock, or a unit mistake)",
            "version must not be negative, got -1",
        ]
    );
    // Exactly the allowed skew is fine; a configured one replaces the default.
    let mut t = ticket();
    t.header.event_time = t.header.ingest_time + Duration::seconds(3600);
    assert!(Event::TicketTime(t.clone()).validate().is_ok());
    let strict = Limits { max_clock_skew: Duration::seconds(60) };
    assert_eq!(
        Event::TicketTime(t).validate_with(&strict).unwrap_err().problems,
        ["event_time 2026-01-12 11:46:00 UTC is more than 60 s ahead of its ingest_time 2026-01-12 10:46:00 UTC (a wrong clock, or a unit mistake)"]
    );

    // Unstamped (a file line before publishing): against the current time.
    let mut t = ticket();
    t.header.ingest_time = DateTime::<Utc>::UNIX_EPOCH;
    t.header.event_time = Utc.with_ymd_and_hms(2099, 1, 1, 0, 0, 0).unwrap();
    let found = problems(Event::TicketTime(t));
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].starts_with("event_time 2099-01-01 00:00:00 UTC is more than 3600 s ahead of now "), "{}", found[0]);
    assert!(found[0].ends_with(" (a wrong clock, or a unit mistake)"), "{}", found[0]);
}

#[test]
fn vm_problems_are_worded_as_before() {
    let mut v = vm();
    v.vm_id = " ".into();
    v.datacenter = long(257);
    v.options = vec![long(1), long(258)];
    v.vcpu = -1;
    assert_eq!(
        problems(Event::VmUsage(v)),
        [
            "datacenter is 257 bytes, more than the 256 allowed",
            "options[] is 258 bytes, more than the 256 allowed",
            "vm_id must not be empty",
            "resources (vcpu, ram_mib, storage_gb, bandwidth_mbps, public_ips) must not be negative",
        ]
    );

    let mut v = vm();
    v.vcpu = 4097;
    v.ram_mib = 64 * 1024 * 1024 + 1;
    v.storage_gb = 1_000_001;
    v.bandwidth_mbps = 1_000_001;
    v.public_ips = 65_537;
    v.sample_interval_seconds = 31 * 86_400 + 1;
    v.options = vec!["o".into(); 17];
    assert_eq!(
        problems(Event::VmUsage(v)),
        [
            "vcpu 4097 is above the maximum 4096",
            "ram_mib 67108865 is above the maximum 67108864",
            "storage_gb 1000001 is above the maximum 1000000",
            "bandwidth_mbps 1000001 is above the maximum 1000000",
            "public_ips 65537 is above the maximum 65536",
            "sample_interval_seconds 2678401 is above the maximum 2678400",
            "options has 17 items, more than the 16 allowed",
        ]
    );

    let mut v = vm();
    v.sample_interval_seconds = 0;
    assert_eq!(problems(Event::VmUsage(v)), ["a SAMPLE needs sample_interval_seconds > 0"]);
    let mut v = vm();
    v.transition = VmTransition::Start;
    assert_eq!(problems(Event::VmUsage(v)), ["a lifecycle transition must have sample_interval_seconds = 0"]);
}

#[test]
fn check_problems_are_worded_as_before() {
    let mut c = check();
    c.check_name = String::new();
    c.target = long(257);
    c.ticket_ref = Some(long(259));
    c.output = Some(long(4097));
    c.time_spent_minutes = -5;
    c.status = CheckStatus::Missed;
    assert_eq!(
        problems(Event::CheckResult(c)),
        [
            "target is 257 bytes, more than the 256 allowed",
            "ticket_ref is 259 bytes, more than the 256 allowed",
            // The output's own limit is 4096 bytes; the message names the general one.
            "output is 4097 bytes, more than the 256 allowed",
            "check_id and check_name must not be empty",
            "time_spent_minutes must not be negative",
            "a MISSED run must not have an executed_time",
        ]
    );

    let mut c = check();
    c.check_id = long(257);
    c.check_name = long(258);
    c.executed_time = None;
    assert_eq!(
        problems(Event::CheckResult(c)),
        [
            "check_id is 257 bytes, more than the 256 allowed",
            "check_name is 258 bytes, more than the 256 allowed",
            "a run that is not MISSED needs an executed_time",
        ]
    );
}

#[test]
fn ticket_problems_are_worded_as_before() {
    let mut t = ticket();
    t.ticket_id = String::new();
    t.task_id = long(257);
    t.requester = long(258);
    t.technician = long(259);
    t.category_path = vec!["RUN".into(), " ".into(), long(260)];
    t.application = Some(long(261));
    t.country = Some(long(262));
    t.minutes_worked = 0;
    t.start_time = t.header.event_time + Duration::seconds(1);
    assert_eq!(
        problems(Event::TicketTime(t)),
        [
            "task_id is 257 bytes, more than the 256 allowed",
            "requester is 258 bytes, more than the 256 allowed",
            "technician is 259 bytes, more than the 256 allowed",
            "category_path[] is 260 bytes, more than the 256 allowed",
            "application is 261 bytes, more than the 256 allowed",
            "country is 262 bytes, more than the 256 allowed",
            "ticket_id and task_id must not be empty",
            "category_path needs at least one non-empty level",
            "minutes_worked must be between 1 and 1440, got 0",
            "start_time must not be after event_time",
        ]
    );

    let mut t = ticket();
    t.ticket_id = long(300);
    t.category_path = Vec::new();
    t.minutes_worked = 1441;
    assert_eq!(
        problems(Event::TicketTime(t)),
        [
            "ticket_id is 300 bytes, more than the 256 allowed",
            "category_path needs at least one non-empty level",
            "minutes_worked must be between 1 and 1440, got 1441",
        ]
    );

    let mut t = ticket();
    t.category_path = vec!["RUN".into(); 17];
    assert_eq!(problems(Event::TicketTime(t)), ["category_path has 17 levels, more than the 16 allowed"]);
}

#[test]
fn the_error_joins_every_problem() {
    let mut t = ticket();
    t.header.tenant = String::new();
    t.minutes_worked = 0;
    let error = Event::TicketTime(t).validate().unwrap_err();
    assert_eq!(error.to_string(), "invalid event: tenant must not be empty; minutes_worked must be between 1 and 1440, got 0");
}

#[test]
fn a_stamp_at_the_end_of_time_is_a_problem_not_a_panic() {
    // The largest instant a message's `ingest_time` can decode to: adding the
    // allowed skew to it overflows.
    let mut t = ticket();
    t.header.ingest_time = DateTime::<Utc>::MAX_UTC;
    assert_eq!(
        problems(Event::TicketTime(t)),
        ["ingest_time +262142-12-31 23:59:59.999999999 UTC is outside [2000-01-01 00:00:00 UTC, 2100-01-01 00:00:00 UTC)"]
    );
    let mut t = ticket();
    t.header.ingest_time = DateTime::<Utc>::MIN_UTC;
    t.header.event_time = DateTime::<Utc>::MIN_UTC;
    t.start_time = DateTime::<Utc>::MIN_UTC;
    let negative = Limits { max_clock_skew: Duration::seconds(-1) };
    let found = Event::TicketTime(t).validate_with(&negative).unwrap_err().problems;
    assert_eq!(found.len(), 3, "{found:?}");
    assert!(found[2].contains("is more than -1 s ahead of its ingest_time"), "{found:?}");
}
