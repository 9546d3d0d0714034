//! The OTLP log sink: Events as OpenTelemetry log records, in the shape of the collector's `k8seventsreceiver`.
//!
//! Why not the SDK's `LoggerProvider` + `opentelemetry-otlp` exporter: the SDK fixes one resource per
//! provider, while the receiver's shape (which users' Loki queries rely on) puts the *involved object* in the
//! resource, one per record. So herald builds the OTLP protobuf messages itself (`opentelemetry-proto`, the
//! types the SDK exporter uses) and sends them over tonic or hyper.
//!
//! Like every sink it drains its own bounded ring: batches up to `batch_size` records or `batch_interval`,
//! retries a retryable failure a bounded number of times with exponential backoff (honouring Retry-After),
//! then counts the batch as failed and moves on. While it waits, only its own ring fills and drops (counted
//! by the fan-out); the pipeline and the other sinks never wait for the collector.

use std::sync::Arc;
use std::time::Duration;

use metrics::Counter;

use super::Shared;
use crate::health::SinkHealth;
use crate::pipeline::ring::Ring;
use crate::telemetry::{self, Telemetry};

pub mod diagnostics;
pub mod encode;
pub mod settings;
pub mod transport;

pub use settings::Settings;
pub use transport::{Export, Transport};

const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

pub struct OtlpSink {
    settings: Settings,
    transport: Transport,
    logs: Delivery,
    spans: Delivery,
    health: Arc<SinkHealth>,
}

/// Counters of one signal (`sink="otlp"` for log records, `sink="otlp_spans"` for spans).
struct Delivery {
    sent: Counter,
    failures: Counter,
    retries: Counter,
}

impl Delivery {
    fn new(telemetry: &Telemetry, sink: &'static str) -> Delivery {
        let labels = [("sink", sink)];
        Delivery {
            sent: telemetry.counter(telemetry::SINK_SENT, &labels),
            failures: telemetry.counter(telemetry::SINK_FAILURES, &labels),
            retries: telemetry.counter(telemetry::SINK_RETRIES, &labels),
        }
    }
}

impl OtlpSink {
    pub fn new(
        settings: Settings,
        telemetry: &Telemetry,
        health: Arc<SinkHealth>,
    ) -> Result<OtlpSink, transport::Error> {
        Ok(OtlpSink {
            transport: Transport::new(&settings)?,
            settings,
            logs: Delivery::new(telemetry, "otlp"),
            spans: Delivery::new(telemetry, "otlp_spans"),
            health,
        })
    }

    /// Drain the ring until it is closed and empty, exporting in batches.
    pub async fn run(mut self, ring: Arc<Ring<Shared>>) {
        let size = self.settings.batch_size;
        let mut batch: Vec<Shared> = Vec::with_capacity(size);
        let mut open = true;
        while open {
            match ring.pop().await {
                Some(first) => batch.push(first),
                None => break,
            }
            let deadline = tokio::time::Instant::now() + self.settings.batch_interval;
            while batch.len() < size {
                if let Some(r) = ring.try_pop() {
                    batch.push(r);
                    continue;
                }
                tokio::select! {
                    next = ring.pop() => match next {
                        Some(r) => batch.push(r),
                        None => { open = false; break; }
                    },
                    _ = tokio::time::sleep_until(deadline) => break,
                }
            }
            self.export(&batch).await;
            batch.clear();
        }
    }

    async fn export(&mut self, batch: &[Shared]) {
        let id = &self.settings.identity;
        let logs = encode::export_request(batch.iter().map(|r| &**r), id);
        let spans = encode::trace_request(batch.iter().map(|r| &**r), id);
        self.deliver(Export::Logs(logs), batch.len() as u64).await;
        if let Some(spans) = spans {
            let n = spans
                .resource_spans
                .iter()
                .flat_map(|r| &r.scope_spans)
                .map(|s| s.spans.len() as u64)
                .sum();
            self.deliver(Export::Traces(spans), n).await;
        }
    }

    /// Send `n` items, retrying retryable failures with backoff, and count the outcome.
    async fn deliver(&mut self, export: Export, n: u64) {
        let counters = match export {
            Export::Logs(_) => &self.logs,
            Export::Traces(_) => &self.spans,
        };
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 0;
        loop {
            match self.transport.send(export.clone()).await {
                Ok(rejected) => {
                    if rejected > 0 {
                        tracing::warn!(rejected, "the collector rejected part of a batch");
                    }
                    counters.sent.increment(n.saturating_sub(rejected));
                    counters.failures.increment(rejected.min(n));
                    if !self.health.accepting() {
                        tracing::info!(endpoint = %self.settings.endpoint, "OTLP export recovered");
                    }
                    self.health.set_accepting(true);
                    return;
                }
                Err(e) if e.retryable && attempt < self.settings.max_retries => {
                    attempt += 1;
                    counters.retries.increment(1);
                    let wait = e.retry_after.unwrap_or(backoff).min(MAX_BACKOFF);
                    tracing::debug!(error = %e.message, attempt, ?wait, "OTLP export failed, retrying");
                    tokio::time::sleep(wait).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Err(e) => {
                    counters.failures.increment(n);
                    // Logged once per outage, not once per batch.
                    if self.health.accepting() {
                        tracing::error!(
                            endpoint = %self.settings.endpoint,
                            error = %e.message,
                            items = n,
                            "OTLP export failed; counting in herald_sink_failures_total until it recovers"
                        );
                    }
                    self.health.set_accepting(false);
                    return;
                }
            }
        }
    }
}
