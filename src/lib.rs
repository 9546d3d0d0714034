//! herald: a lean Kubernetes-aware observability agent.
//!
//! The data path reads top to bottom: [`source`] watches the API server, [`pipeline`] decides about each
//! record (filter, dedup, classify, redact) and fans it out, [`sink`] turns records into signals. [`server`]
//! serves `/metrics`, `/healthz` and `/readyz`; [`config`] is the one typed configuration tree. The simulated
//! cluster (`herald-sim`), the harnesses (`herald-bench`) and what the tests share (`herald-test-support`) are
//! crates of their own beside this one: nothing here depends on them, so the agent builds without them.

pub mod agent;
pub mod checkpoint;
pub mod config;
pub mod health;
pub mod leader;
pub mod pipeline;
pub mod record;
pub mod reload;
pub mod retry;
pub mod ring;
pub mod self_events;
pub mod server;
pub mod sink;
pub mod source;
pub mod tasks;
pub mod telemetry;
pub mod wakes;
