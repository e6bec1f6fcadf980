//! Any bytes on a topic: every decoder returns an error or a value, never
//! panics, aborts or allocates without bound.
#![no_main]
use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use meter_model::fast_decode::{decode_event, decode_event_into};
use meter_model::{Aggregate, DeadLetter, Event, EventCodec, EventKind, PeriodControl};

thread_local! {
    // The aggregator reuses one event from message to message: so does this
    // target, across inputs (of any kind, after errors too).
    static REUSED: RefCell<Option<Event>> = const { RefCell::new(None) };
}

fuzz_target!(|data: &[u8]| {
    for kind in EventKind::ALL {
        if let Ok(event) = EventCodec::decode_event(kind, data) {
            // A decoded event is checked, and re-encodes.
            let _ = event.validate();
            let _ = EventCodec::encode_event(&event);
        }
        // The aggregator's decoder accepts nothing the codec refuses, and
        // reads the same event (it may refuse more: overflowing varints).
        let fast = decode_event(kind, data);
        if let Ok(fast) = &fast {
            assert_eq!(Some(fast), EventCodec::decode_event(kind, data).ok().as_ref());
        }
        // Into a reused event: the same answer.
        REUSED.with(|reused| {
            let mut reused = reused.borrow_mut();
            match (reused.as_mut(), &fast) {
                (Some(target), _) => {
                    let into = decode_event_into(kind, data, target);
                    assert_eq!(into.is_ok(), fast.is_ok());
                    if let Ok(fast) = &fast {
                        assert_eq!(&*target, fast);
                    }
                }
                (None, Ok(fast)) => *reused = Some(fast.clone()),
                (None, Err(_)) => {}
            }
        });
    }
    let _ = EventCodec::decode::<Aggregate>(data);
    let _ = EventCodec::decode::<DeadLetter>(data);
    let _ = EventCodec::decode::<PeriodControl>(data);
});
