//! The operations assets (deploy/, dashboards/, alerts/) checked with the real tools and a running herald.
//! Grouped into one binary to link once; each module is a former test file of the same name, so
//! a filter selects one: `cargo test --test ops ops_rbac::`.

// A test binary: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
mod common;

mod ops_assets;
mod ops_live;
mod ops_rbac;
