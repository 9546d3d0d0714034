//! The JSON log sink: one line per processed Event on stdout, for log shippers that scrape container output.
//!
//! Keys are the OpenTelemetry names (`k8s.namespace.name`, `k8s.event.reason`, ...) that the OTLP sink uses,
//! so a Loki query works on either path. Lines are written with serde directly, not through `tracing`:
//! the record shape is fixed, and herald's own diagnostics stay on stderr. Writing is async and batched; when
//! stdout blocks (nobody reads the pipe) this sink's ring fills and drops, counted, while the other sinks go on.

use std::sync::Arc;

use jiff::Timestamp;
use metrics::Counter;
use serde::Serialize;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::Shared;
use crate::health::SinkHealth;
use crate::pipeline::ring::Ring;
use crate::record::EventRecord;
use crate::telemetry::{self, Telemetry};

/// OTLP severity number for an Event type (the collector's k8seventsreceiver mapping).
pub fn severity_number(type_: &str) -> Option<u8> {
    match type_ {
        "Normal" => Some(9),
        "Warning" => Some(13),
        "Error" => Some(17),
        "Critical" => Some(21),
        _ => None,
    }
}

#[derive(Serialize)]
struct Line<'a> {
    timestamp: Option<Timestamp>,
    observed_timestamp: Timestamp,
    severity_text: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    severity_number: Option<u8>,
    body: &'a str,
    #[serde(rename = "k8s.namespace.name")]
    namespace: &'a str,
    #[serde(rename = "k8s.event.name")]
    name: &'a str,
    #[serde(rename = "k8s.event.uid")]
    uid: &'a str,
    #[serde(rename = "k8s.event.reason")]
    reason: &'a str,
    #[serde(rename = "k8s.event.action")]
    action: &'a str,
    #[serde(
        rename = "k8s.event.start_time",
        skip_serializing_if = "Option::is_none"
    )]
    start_time: Option<Timestamp>,
    #[serde(rename = "k8s.event.count", skip_serializing_if = "is_zero")]
    count: u32,
    #[serde(rename = "k8s.event.reporting_controller")]
    reporting_controller: &'a str,
    #[serde(rename = "k8s.event.reporting_instance")]
    reporting_instance: &'a str,
    #[serde(rename = "k8s.node.name")]
    node: &'a str,
    #[serde(rename = "k8s.object.kind")]
    object_kind: &'a str,
    #[serde(rename = "k8s.object.name")]
    object_name: &'a str,
    #[serde(rename = "k8s.object.uid")]
    object_uid: &'a str,
    #[serde(rename = "k8s.object.fieldpath")]
    object_fieldpath: &'a str,
    #[serde(rename = "k8s.object.api_version")]
    object_api_version: &'a str,
    #[serde(rename = "k8s.object.resource_version")]
    object_resource_version: &'a str,
    #[serde(rename = "herald.occurrences")]
    occurrences: u32,
    #[serde(rename = "herald.severity")]
    severity: &'a str,
    #[serde(rename = "herald.repeated")]
    repeated: bool,
    #[serde(rename = "herald.fingerprint")]
    fingerprint: String,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// Append one JSON line for `r` to `out`.
pub fn write_line(out: &mut Vec<u8>, r: &EventRecord) {
    let line = Line {
        timestamp: r.timestamp(),
        observed_timestamp: r.observed,
        severity_text: &r.type_,
        severity_number: severity_number(&r.type_),
        body: &r.message,
        namespace: &r.namespace,
        name: &r.name,
        uid: &r.uid,
        reason: &r.reason,
        action: &r.action,
        start_time: r.creation_timestamp,
        count: r.count,
        reporting_controller: &r.component,
        reporting_instance: &r.reporting_instance,
        node: &r.host,
        object_kind: &r.regarding.kind,
        object_name: &r.regarding.name,
        object_uid: &r.regarding.uid,
        object_fieldpath: &r.regarding.field_path,
        object_api_version: &r.regarding.api_version,
        object_resource_version: &r.regarding.resource_version,
        occurrences: r.delta,
        severity: r.severity.as_str(),
        repeated: r.repeated,
        fingerprint: format!("{:016x}", r.fingerprint),
    };
    // Serialising plain strings and numbers into a Vec cannot fail.
    if serde_json::to_writer(&mut *out, &line).is_ok() {
        out.push(b'\n');
    }
}

pub struct JsonSink<W> {
    out: W,
    sent: Counter,
    failures: Counter,
    health: Arc<SinkHealth>,
}

/// Most lines written between flushes.
const BATCH: usize = 256;

impl<W: AsyncWrite + Unpin> JsonSink<W> {
    pub fn new(out: W, telemetry: &Telemetry, health: Arc<SinkHealth>) -> JsonSink<W> {
        JsonSink {
            out,
            sent: telemetry.counter(telemetry::SINK_SENT, &[("sink", "json")]),
            failures: telemetry.counter(telemetry::SINK_FAILURES, &[("sink", "json")]),
            health,
        }
    }

    /// Drain the ring until it is closed and empty.
    pub async fn run(mut self, ring: Arc<Ring<Shared>>) {
        let mut buf = Vec::with_capacity(64 * 1024);
        while let Some(first) = ring.pop().await {
            buf.clear();
            write_line(&mut buf, &first);
            let mut lines = 1;
            while lines < BATCH {
                match ring.try_pop() {
                    Some(r) => {
                        write_line(&mut buf, &r);
                        lines += 1;
                    }
                    None => break,
                }
            }
            let result = async {
                self.out.write_all(&buf).await?;
                self.out.flush().await
            }
            .await;
            match result {
                Ok(()) => {
                    self.sent.increment(lines as u64);
                    self.health.set_accepting(true);
                }
                Err(error) => {
                    self.failures.increment(lines as u64);
                    if self.health.accepting() {
                        tracing::error!(%error, "cannot write JSON lines to stdout");
                    }
                    self.health.set_accepting(false);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_uses_otel_keys() {
        let mut r = EventRecord::for_test("default", "Pod", "web-1", "BackOff", "Warning");
        r.message = "Back-off restarting failed container".into();
        r.count = 10;
        r.delta = 3;
        r.fingerprint = 0xabc;
        let mut out = Vec::new();
        write_line(&mut out, &r);
        assert_eq!(out.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["k8s.namespace.name"], "default");
        assert_eq!(v["k8s.object.kind"], "Pod");
        assert_eq!(v["k8s.object.name"], "web-1");
        assert_eq!(v["k8s.event.reason"], "BackOff");
        assert_eq!(v["severity_text"], "Warning");
        assert_eq!(v["severity_number"], 13);
        assert_eq!(v["k8s.event.count"], 10);
        assert_eq!(v["herald.occurrences"], 3);
        assert_eq!(v["herald.fingerprint"], "0000000000000abc");
        assert_eq!(v["body"], "Back-off restarting failed container");
    }
}
