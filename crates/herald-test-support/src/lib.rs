//! What herald's tests and harnesses share to observe a running agent from the outside: a minimal HTTP probe,
//! a reader of the Prometheus text format and `/proc` sampling ([`probe`]), and the inputs and tools that live
//! outside the repository, which a test must never pretend to have checked when they are missing
//! ([`fixtures`]). It is never a dependency of the agent itself (only of its tests), and it must not know
//! herald's types: it reads what a scraper or an operator would.

// A harness, not the agent: a broken invariant here fails a test or a measurement, loudly, which is what a panic does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod fixtures;
pub mod probe;
