//! End-to-end tests of the agent: herald as a real process against the simulator, one module per area.
//! Grouped into one binary to link once; each module is a former test file of the same name, so
//! a filter selects one: `cargo test --test agent kubevirt::`.

// A test binary: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
mod common;

mod agent_events;
mod agent_shutdown;
mod bad_input;
mod bounds;
mod cli_config;
mod config_reload;
mod fuzz_inputs;
mod kafka;
mod kubevirt;
mod leader_election;
mod otlp_export;
mod redaction;
mod restart;
mod self_events;
mod server_abuse;
mod server_mtls;
mod server_tls;
mod source_fixtures;
mod storm;
mod watch_faults;
mod webhook;
mod webhook_formats;
