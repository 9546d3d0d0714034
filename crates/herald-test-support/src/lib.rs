//! What herald's tests and harnesses share to observe a running agent from the outside: a minimal HTTP probe,
//! a reader of the Prometheus text format and `/proc` sampling ([`probe`]), the inputs and tools that live
//! outside the repository, which a test must never pretend to have checked when they are missing
//! ([`fixtures`]), the collector and the endpoint herald sends to ([`otlp`], [`webhook`]), the one accept loop
//! of every in-process test server ([`serve`]) and the task it runs on ([`server`]), and child processes with
//! a free port, a readiness wait and a kill on drop ([`process`]). It is never a dependency of the agent
//! itself (only of its tests and harnesses), and it must not know herald's types: it reads what a scraper, a
//! collector or an operator would.
//!
//! The OTLP receiver and the accept loop themselves are the simulator's (`herald_sim::otlp_receiver`,
//! `herald_sim::serve`): the simulator and `herald demo --otlp-console` serve with them in the `demo` build,
//! which must not pull this crate. This crate adds only what tests need on top (gRPC, recording, faults), so
//! each exists once.

// A harness, not the agent: a broken invariant here fails a test or a measurement, loudly, which is what a panic does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod fixtures;
pub mod otlp;
pub mod probe;
pub mod process;
pub mod server;
pub mod webhook;

pub use herald_sim::serve;
