//! Any bytes as an Event object from the API (both Events APIs): the lenient decoder and the normaliser
//! must give a record or a named reason, never panic.
#![no_main]

use herald::source::decode::{CoreV1, EventsV1, LeanEvent};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(ev) = serde_json::from_slice::<LeanEvent<CoreV1>>(data) {
        let _ = ev.key();
        let _ = ev.into_record();
    }
    if let Ok(ev) = serde_json::from_slice::<LeanEvent<EventsV1>>(data) {
        let _ = ev.key();
        let _ = ev.into_record();
    }
});
