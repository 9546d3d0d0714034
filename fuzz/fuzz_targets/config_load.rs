//! Any text as herald's configuration file: it loads, or fails with one `key: reason` line; never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Err(e) = herald::config::Config::from_yaml(text, "fuzz.yaml")
    {
        assert!(!e.to_string().is_empty());
    }
});
