//! Any bytes as an Event object from the API (both Events APIs): the lenient decoder and the normaliser
//! must give a record or a named reason, never panic.
#![no_main]

use herald::record::{EventApi, Interner};
use herald::source::decode::{CoreV1, EventsV1, LeanEvent};
use herald::source::events::normalise;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut interner = Interner::new(64);
    if let Ok(ev) = serde_json::from_slice::<LeanEvent<CoreV1>>(data) {
        let _ = normalise(ev, EventApi::CoreV1, &mut interner);
    }
    if let Ok(ev) = serde_json::from_slice::<LeanEvent<EventsV1>>(data) {
        let _ = normalise(ev, EventApi::EventsV1, &mut interner);
    }
});
