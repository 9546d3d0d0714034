//! The pipeline: one worker takes records off the ingest ring, classifies, filters, deduplicates and redacts
//! them, and hands each to every sink's own ring.

pub mod classify;
pub mod dedup;
pub mod filter;
pub mod redact;
pub mod ring;
