//! Any JSON document posted to the ingest API.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = ingest_api::cloudevents::claimed_tenant(&value);
        let _ = ingest_api::cloudevents::to_event(&value);
    }
});
