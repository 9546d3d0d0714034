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

pub mod encode;
pub mod settings;
pub mod transport;

pub use settings::Settings;
pub use transport::Transport;

const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

pub struct OtlpSink {
    settings: Settings,
    transport: Transport,
    sent: Counter,
    failures: Counter,
    retries: Counter,
    health: Arc<SinkHealth>,
}

impl OtlpSink {
    pub fn new(
        settings: Settings,
        telemetry: &Telemetry,
        health: Arc<SinkHealth>,
    ) -> Result<OtlpSink, transport::Error> {
        let labels = [("sink", "otlp")];
        Ok(OtlpSink {
            transport: Transport::new(&settings)?,
            settings,
            sent: telemetry.counter(telemetry::SINK_SENT, &labels),
            failures: telemetry.counter(telemetry::SINK_FAILURES, &labels),
            retries: telemetry.counter(telemetry::SINK_RETRIES, &labels),
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
        let request = encode::export_request(batch.iter().map(|r| &**r), &self.settings.identity);
        let n = batch.len() as u64;
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 0;
        loop {
            match self.transport.send(request.clone()).await {
                Ok(rejected) => {
                    if rejected > 0 {
                        tracing::warn!(rejected, "the collector rejected part of a batch");
                    }
                    self.sent.increment(n.saturating_sub(rejected));
                    self.failures.increment(rejected.min(n));
                    if !self.health.accepting() {
                        tracing::info!(endpoint = %self.settings.endpoint, "OTLP export recovered");
                    }
                    self.health.set_accepting(true);
                    return;
                }
                Err(e) if e.retryable && attempt < self.settings.max_retries => {
                    attempt += 1;
                    self.retries.increment(1);
                    let wait = e.retry_after.unwrap_or(backoff).min(MAX_BACKOFF);
                    tracing::debug!(error = %e.message, attempt, ?wait, "OTLP export failed, retrying");
                    tokio::time::sleep(wait).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Err(e) => {
                    self.failures.increment(n);
                    // Logged once per outage, not once per batch.
                    if self.health.accepting() {
                        tracing::error!(
                            endpoint = %self.settings.endpoint,
                            error = %e.message,
                            records = n,
                            "OTLP export failed; counting records in herald_sink_failures_total until it recovers"
                        );
                    }
                    self.health.set_accepting(false);
                    return;
                }
            }
        }
    }
}
