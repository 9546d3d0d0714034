//! herald's own diagnostics as OTLP logs (`log.otlp: true`, off by default): a `tracing` layer that copies
//! herald's own events (target `herald…`, at info or above) into a bounded queue, and a task
//! that batches them to the collector over the OTLP sink's transport.
//!
//! Only herald's targets are taken: the HTTP, gRPC and TLS crates under the exporter log about the export
//! itself, and forwarding those would feed back into the queue. A full queue drops (counted in
//! `herald_queue_dropped_total{queue="diagnostics"}`); logging never waits for the collector.

use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics::Counter;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use tokio::sync::mpsc;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

use super::{Export, Settings, Transport};
use crate::sink::shape::{self, Identity};
use crate::telemetry::{self, Telemetry};

const QUEUE: usize = 1024;
const BATCH: usize = 256;

/// One diagnostic line, as captured.
#[derive(Debug)]
pub struct Diagnostic {
    time_unix_nano: u64,
    level: Level,
    target: String,
    message: String,
    fields: Vec<(String, String)>,
}

/// The `tracing` side: cheap, never blocks.
pub struct DiagnosticsLayer {
    tx: mpsc::Sender<Diagnostic>,
    min: Level,
    /// Set once the agent's metrics exist; drops before that are not counted.
    dropped: Arc<OnceLock<Counter>>,
}

/// The collector side, started by the agent when the OTLP sink is configured.
pub struct DiagnosticsQueue {
    rx: mpsc::Receiver<Diagnostic>,
    dropped: Arc<OnceLock<Counter>>,
}

/// A layer and its queue; `min` is the lowest level forwarded.
pub fn layer(min: Level) -> (DiagnosticsLayer, DiagnosticsQueue) {
    let (tx, rx) = mpsc::channel(QUEUE);
    let dropped = Arc::new(OnceLock::new());
    (
        DiagnosticsLayer {
            tx,
            min,
            dropped: dropped.clone(),
        },
        DiagnosticsQueue { rx, dropped },
    )
}

#[derive(Default)]
struct Fields {
    message: String,
    fields: Vec<(String, String)>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let mut text = String::new();
        let _ = write!(text, "{value:?}");
        if field.name() == "message" {
            self.message = text;
        } else {
            self.fields.push((field.name().to_string(), text));
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.fields
                .push((field.name().to_string(), value.to_string()));
        }
    }
}

impl<S: Subscriber> Layer<S> for DiagnosticsLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        // tracing's levels compare by verbosity: ERROR < WARN < INFO.
        if *meta.level() > self.min || !meta.target().starts_with("herald") {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let d = Diagnostic {
            time_unix_nano: u64::try_from(jiff::Timestamp::now().as_nanosecond()).unwrap_or(0),
            level: *meta.level(),
            target: meta.target().to_string(),
            message: fields.message,
            fields: fields.fields,
        };
        if self.tx.try_send(d).is_err()
            && let Some(c) = self.dropped.get()
        {
            c.increment(1);
        }
    }
}

fn severity(level: Level) -> (i32, &'static str) {
    match level {
        Level::ERROR => (17, "ERROR"),
        Level::WARN => (13, "WARN"),
        Level::INFO => (9, "INFO"),
        Level::DEBUG => (5, "DEBUG"),
        Level::TRACE => (1, "TRACE"),
    }
}

fn string(s: String) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(any_value::Value::StringValue(s)),
    })
}

/// One request for a batch of diagnostics: resource herald itself, scope `herald.diagnostics`.
pub fn request(batch: Vec<Diagnostic>, id: &Identity) -> ExportLogsServiceRequest {
    let mut resource = Vec::new();
    shape::agent_attributes(id, |k, v| {
        resource.push(KeyValue {
            key: k.to_string(),
            value: string(v.to_string()),
            ..Default::default()
        })
    });
    let records = batch
        .into_iter()
        .map(|d| {
            let (number, text) = severity(d.level);
            let mut attributes = vec![KeyValue {
                key: "code.namespace".into(),
                value: string(d.target),
                ..Default::default()
            }];
            attributes.extend(d.fields.into_iter().map(|(k, v)| KeyValue {
                key: k,
                value: string(v),
                ..Default::default()
            }));
            LogRecord {
                time_unix_nano: d.time_unix_nano,
                observed_time_unix_nano: d.time_unix_nano,
                severity_number: number,
                severity_text: text.into(),
                body: string(d.message),
                attributes,
                ..Default::default()
            }
        })
        .collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: resource,
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: "herald.diagnostics".into(),
                    version: shape::SERVICE_VERSION.into(),
                    ..Default::default()
                }),
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

impl DiagnosticsQueue {
    /// Forward until the process ends. Failures are counted in `herald_sink_failures_total{sink="diagnostics"}`
    /// and not retried (diagnostics are best effort, and stderr has them too).
    pub async fn run(mut self, settings: Settings, telemetry: Arc<Telemetry>) {
        let labels = [("sink", "diagnostics")];
        let sent = telemetry.counter(telemetry::SINK_SENT, &labels);
        let failures = telemetry.counter(telemetry::SINK_FAILURES, &labels);
        let _ = self
            .dropped
            .set(telemetry.counter(telemetry::QUEUE_DROPPED, &[("queue", "diagnostics")]));
        let transport = match Transport::new(&settings) {
            Ok(t) => t,
            Err(_) => return,
        };
        let mut batch = Vec::with_capacity(BATCH);
        while let Some(first) = self.rx.recv().await {
            batch.push(first);
            let deadline =
                tokio::time::Instant::now() + settings.batch_interval.min(Duration::from_secs(5));
            while batch.len() < BATCH {
                tokio::select! {
                    next = self.rx.recv() => match next {
                        Some(d) => batch.push(d),
                        None => break,
                    },
                    _ = tokio::time::sleep_until(deadline) => break,
                }
            }
            let n = batch.len() as u64;
            let req = request(std::mem::take(&mut batch), &settings.identity);
            let req = prost::Message::encode_to_vec(&req).into();
            match transport.send(Export::Logs(req)).await {
                Ok(_) => sent.increment(n),
                Err(_) => failures.increment(n),
            }
        }
    }
}
