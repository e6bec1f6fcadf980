//! Any line of a JSON-lines input file, for each kind.
#![no_main]
use libfuzzer_sys::fuzz_target;
use meter_model::EventKind;

fuzz_target!(|data: &[u8]| {
    if let Ok(line) = std::str::from_utf8(data) {
        for kind in EventKind::ALL {
            let _ = collector_file::parse_line(kind, line);
        }
    }
});
