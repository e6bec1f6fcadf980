//! Any bytes on a topic: every decoder returns an error or a value, never
//! panics, aborts or allocates without bound.
#![no_main]
use libfuzzer_sys::fuzz_target;
use meter_model::{Aggregate, DeadLetter, EventCodec, EventKind, PeriodControl};

fuzz_target!(|data: &[u8]| {
    for kind in EventKind::ALL {
        if let Ok(event) = EventCodec::decode_event(kind, data) {
            // A decoded event is checked, and re-encodes.
            let _ = event.validate();
            let _ = EventCodec::encode_event(&event);
        }
        // The aggregator's decoder accepts nothing the codec refuses, and
        // reads the same event (it may refuse more: overflowing varints).
        if let Ok(fast) = meter_model::fast_decode::decode_event(kind, data) {
            assert_eq!(Some(fast), EventCodec::decode_event(kind, data).ok());
        }
    }
    let _ = EventCodec::decode::<Aggregate>(data);
    let _ = EventCodec::decode::<DeadLetter>(data);
    let _ = EventCodec::decode::<PeriodControl>(data);
});
