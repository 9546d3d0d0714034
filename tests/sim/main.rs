//! The simulator checked as kubectl and herald's client reach it.
//! Grouped into one binary to link once; each module is a former test file of the same name, so
//! a filter selects one: `cargo test --test sim sim_kubectl::`.

// A test binary: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
mod common;

mod sim_kubectl;
mod sim_protocol;
