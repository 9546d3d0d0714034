//! Any bytes as one line of a watch stream: an event, a Status error, or undecodable; never a panic. The
//! objects in it are normalised while they are decoded, like the agent's.
#![no_main]

use herald::source::decode::{CoreV1, LeanEvent};
use herald::source::watch::{Line, Versioned, decode_line};
use kube::api::WatchEvent;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Line::Event(WatchEvent::Added(ev) | WatchEvent::Modified(ev) | WatchEvent::Deleted(ev))) =
        decode_line::<LeanEvent<CoreV1>>(data)
    {
        let _ = ev.resource_version();
        let _ = ev.into_record();
    }
});
