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
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use metrics::Counter;

use super::Shared;
use crate::health::SinkHealth;
use crate::record::LogEntry;
use crate::retry::Backoff;
use crate::ring::Ring;
use crate::telemetry::{self, Telemetry};

pub mod config;
pub mod diagnostics;
pub mod encode;
pub mod settings;
pub mod transport;
pub mod wire;

pub use settings::Settings;
pub use transport::{Export, Transport};

const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Export requests in flight at once: while one waits for the collector (or backs off before a retry), the
/// next batches still go out, so one slow round trip does not make the ring fill and drop.
pub const IN_FLIGHT: usize = 4;

pub struct OtlpSink {
    batch_size: usize,
    batch_interval: Duration,
    exporter: Arc<Exporter>,
    encoder: wire::Encoder,
}

/// What a delivery needs, shared by the exports in flight.
struct Exporter {
    settings: Settings,
    transport: Transport,
    logs: Delivery,
    spans: Delivery,
    health: Arc<SinkHealth>,
    /// The current outage was already logged: its first failure is logged at once (not only after every retry
    /// has run out, which takes about 15 s), then nothing until it recovers.
    outage_logged: std::sync::atomic::AtomicBool,
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
            batch_size: settings.batch_size,
            batch_interval: settings.batch_interval,
            encoder: wire::Encoder::default(),
            exporter: Arc::new(Exporter {
                transport: Transport::new(&settings)?,
                settings,
                logs: Delivery::new(telemetry, "otlp"),
                spans: Delivery::new(telemetry, "otlp_spans"),
                outage_logged: std::sync::atomic::AtomicBool::new(false),
                health,
            }),
        })
    }

    /// Drain the ring until it is closed and empty, exporting in batches, then wait for the exports.
    pub async fn run(mut self, ring: Arc<Ring<Shared>>) {
        let size = self.batch_size;
        let mut batch: Vec<Shared> = Vec::with_capacity(size);
        let mut in_flight = tokio::task::JoinSet::new();
        let mut open = true;
        while open {
            if !ring.ready(crate::sink::LINGER).await {
                break;
            }
            // A batch goes when full or `batch_interval` after its first record. Meanwhile the sink waits for
            // more the same lingering way, so a steady stream wakes it once per LINGER, not per record.
            let deadline = tokio::time::Instant::now() + self.batch_interval;
            loop {
                while batch.len() < size
                    && let Some(r) = ring.try_pop()
                {
                    batch.push(r);
                }
                if batch.len() >= size {
                    break;
                }
                tokio::select! {
                    more = ring.ready(crate::sink::LINGER) => if !more {
                        open = false;
                        break;
                    },
                    _ = tokio::time::sleep_until(deadline) => break,
                }
            }
            while in_flight.len() >= IN_FLIGHT {
                in_flight.join_next().await;
            }
            for (export, n) in self.encode(&batch) {
                in_flight.spawn(self.exporter.clone().deliver(export, n));
            }
            batch.clear();
        }
        while in_flight.join_next().await.is_some() {}
    }

    /// The batch's log records, and its spans if it has any, each with its item count.
    fn encode(&mut self, batch: &[Shared]) -> Vec<(Export, u64)> {
        let id = &self.exporter.settings.identity;
        // Checkpoint barriers never reach this sink ([`crate::sink::SinkQueue::offer`]).
        let records: Vec<LogEntry> = batch.iter().filter_map(|r| r.log_entry()).collect();
        let logs = self.encoder.logs(&records, id);
        let mut out = vec![(Export::Logs(logs.into()), records.len() as u64)];
        if let Some(spans) = encode::trace_request(records.iter().copied(), id) {
            let n = spans
                .resource_spans
                .iter()
                .flat_map(|r| &r.scope_spans)
                .map(|s| s.spans.len() as u64)
                .sum();
            out.push((
                Export::Traces(prost::Message::encode_to_vec(&spans).into()),
                n,
            ));
        }
        out
    }
}

impl Exporter {
    /// Send `n` items, retrying retryable failures with backoff, and count the outcome.
    async fn deliver(self: Arc<Exporter>, export: Export, n: u64) {
        let counters = match export {
            Export::Logs(_) => &self.logs,
            Export::Traces(_) => &self.spans,
        };
        let mut backoff = Backoff::new(FIRST_BACKOFF, MAX_BACKOFF);
        let mut attempt = 0;
        loop {
            match self.transport.send(export.clone()).await {
                Ok(rejected) => {
                    if rejected > 0 {
                        tracing::warn!(rejected, "the collector rejected part of a batch");
                    }
                    counters.sent.increment(n.saturating_sub(rejected));
                    counters.failures.increment(rejected.min(n));
                    if !self.health.accepting() || self.outage_logged.swap(false, Relaxed) {
                        tracing::info!(endpoint = %self.settings.shown_endpoint, "OTLP export recovered");
                    }
                    self.health.set_accepting(true);
                    return;
                }
                Err(e) if e.retryable && attempt < self.settings.max_retries => {
                    attempt += 1;
                    counters.retries.increment(1);
                    let wait = backoff.next_delay_or(e.retry_after);
                    if !self.outage_logged.swap(true, Relaxed) {
                        tracing::warn!(
                            endpoint = %self.settings.shown_endpoint,
                            error = %e.message,
                            max_retries = self.settings.max_retries,
                            "OTLP export failed; retrying with backoff (further retries are not logged until it recovers)"
                        );
                    } else {
                        tracing::debug!(error = %e.message, attempt, ?wait, "OTLP export failed, retrying");
                    }
                    tokio::time::sleep(wait).await;
                }
                Err(e) => {
                    counters.failures.increment(n);
                    // Logged once per outage, not once per batch.
                    if self.health.accepting() {
                        tracing::error!(
                            endpoint = %self.settings.shown_endpoint,
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
