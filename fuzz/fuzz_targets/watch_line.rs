//! Any bytes as one line of a watch stream: an event, a Status error, or undecodable; never a panic. The
//! objects in it then go through the normaliser like the agent's.
#![no_main]

use herald::record::{EventApi, Interner};
use herald::source::decode::{CoreV1, LeanEvent};
use herald::source::events::normalise;
use herald::source::watch::{Line, decode_line};
use kube::api::WatchEvent;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Line::Event(WatchEvent::Added(ev) | WatchEvent::Modified(ev) | WatchEvent::Deleted(ev))) =
        decode_line::<LeanEvent<CoreV1>>(data)
    {
        let _ = normalise(ev, EventApi::CoreV1, &mut Interner::new(64));
    }
});
