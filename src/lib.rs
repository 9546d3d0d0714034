//! herald: a lean Kubernetes-aware observability agent.
//!
//! The data path reads top to bottom: [`source`] watches the API server, [`pipeline`] decides about each
//! record (filter, dedup, classify, redact) and fans it out, [`sink`] turns records into signals. [`server`]
//! serves `/metrics`, `/healthz` and `/readyz`; [`config`] is the one typed configuration tree; [`sim`] is the
//! protocol-faithful local API server used by `herald demo`, the tests and the benchmarks;
//! [`bench`] is the load harness behind `herald bench load`.

pub mod agent;
pub mod bench;
pub mod checkpoint;
pub mod config;
pub mod health;
pub mod leader;
pub mod pipeline;
pub mod record;
pub mod reload;
pub mod self_events;
pub mod server;
pub mod sim;
pub mod sink;
pub mod source;
pub mod tasks;
pub mod telemetry;
