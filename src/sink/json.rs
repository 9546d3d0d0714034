//! The JSON log sink: one line per processed Event on stdout, for log shippers that scrape container output.
//!
//! Keys are the OpenTelemetry names (`k8s.namespace.name`, `k8s.event.reason`, ...) that the OTLP sink uses,
//! with the same values (both come from [`super::shape`]), so a Loki query works on either path. Lines are written with serde directly, not through `tracing`:
//! the record shape is fixed, and herald's own diagnostics stay on stderr. Writing is async and batched; when
//! stdout blocks (nobody reads the pipe) this sink's ring fills and drops, counted, while the other sinks go on.

use std::sync::Arc;

use metrics::Counter;
use serde::ser::{SerializeMap, Serializer};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::Shared;
use super::shape::{self, Identity, Value};
use crate::health::SinkHealth;
use crate::record::LogEntry;
use crate::ring::Ring;
use crate::telemetry::{self, Telemetry};

/// Append one JSON line for `r` to `out`: the OTLP log record's fields, then its resource and log
/// attributes flattened under their OpenTelemetry keys.
pub fn write_line(out: &mut Vec<u8>, r: LogEntry<'_>, id: &Identity) {
    if write_object(out, r, id) {
        out.push(b'\n');
    }
}

/// Append the JSON object of [`write_line`] without the newline (the webhook sink's records); `false` when
/// nothing was written.
pub fn write_object(out: &mut Vec<u8>, entry: LogEntry<'_>, id: &Identity) -> bool {
    let r = entry.event;
    let start = out.len();
    let mut ser = serde_json::Serializer::new(&mut *out);
    // Serialising strings and numbers into a Vec cannot fail; a failure would only cut this one line.
    let written = (|| {
        let mut map = ser.serialize_map(None)?;
        // The OTLP record's time, `null` exactly where OTLP says 0 (unknown).
        map.serialize_entry("timestamp", &shape::record_time(r))?;
        map.serialize_entry("observed_timestamp", &r.observed)?;
        if let (Some(text), Some(n)) = (shape::severity_text(r), shape::severity_number(&r.type_)) {
            map.serialize_entry("severity_text", text)?;
            map.serialize_entry("severity_number", &n)?;
        }
        map.serialize_entry("body", &r.message)?;
        let mut result = Ok(());
        shape::agent_attributes(id, |k, v| {
            if result.is_ok() {
                result = map.serialize_entry(k, v);
            }
        });
        for (k, v) in shape::object_attributes(r) {
            result = result.and_then(|()| map.serialize_entry(k, v));
        }
        shape::log_attributes(entry, |k, v| {
            if result.is_ok() {
                result = match v {
                    Value::Str(s) => map.serialize_entry(k, s),
                    Value::Owned(s) => map.serialize_entry(k, &s),
                    Value::Int(i) => map.serialize_entry(k, &i),
                    Value::Bool(b) => map.serialize_entry(k, &b),
                };
            }
        });
        result?;
        map.end()
    })();
    if written.is_err() {
        out.truncate(start);
        return false;
    }
    true
}

pub struct JsonSink<W> {
    out: W,
    sent: Counter,
    failures: Counter,
    health: Arc<SinkHealth>,
    identity: Identity,
}

/// Most lines written between flushes.
const BATCH: usize = 256;

impl<W: AsyncWrite + Unpin> JsonSink<W> {
    pub fn new(
        out: W,
        identity: Identity,
        telemetry: &Telemetry,
        health: Arc<SinkHealth>,
    ) -> JsonSink<W> {
        JsonSink {
            out,
            sent: telemetry.counter(telemetry::SINK_SENT, &[("sink", "json")]),
            failures: telemetry.counter(telemetry::SINK_FAILURES, &[("sink", "json")]),
            health,
            identity,
        }
    }

    /// Drain the ring until it is closed and empty.
    pub async fn run(mut self, ring: Arc<Ring<Shared>>) {
        let mut buf = Vec::with_capacity(64 * 1024);
        while ring.ready(super::LINGER).await {
            buf.clear();
            let mut lines = 0;
            while lines < BATCH {
                match ring.try_pop() {
                    Some(r) => {
                        // Checkpoint barriers never reach this sink ([`super::SinkQueue::offer`]).
                        if let Some(entry) = r.log_entry() {
                            write_line(&mut buf, entry, &self.identity);
                            lines += 1;
                        }
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
    use crate::record::EventRecord;

    #[test]
    fn line_uses_otel_keys() {
        let mut r = EventRecord::for_test("default", "Pod", "web-1", "BackOff", "Warning");
        r.message = "Back-off restarting failed container".into();
        r.count = 10;
        r.delta = 3;
        r.fingerprint = 0xabc;
        let mut out = Vec::new();
        let id = Identity {
            cluster_name: "prod".into(),
            agent_node: String::new(),
        };
        write_line(&mut out, (&r).into(), &id);
        assert_eq!(out.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["k8s.namespace.name"], "default");
        assert_eq!(v["k8s.object.kind"], "Pod");
        assert_eq!(v["k8s.object.name"], "web-1");
        assert_eq!(v["k8s.event.reason"], "BackOff");
        assert_eq!(v["severity_text"], "Warning");
        assert_eq!(v["severity_number"], 13);
        assert_eq!(v["k8s.event.count"], 1, "the object's own count");
        assert_eq!(v["herald.event.count"], 10);
        assert_eq!(v["herald.occurrences"], 3);
        assert_eq!(v["herald.fingerprint"], "0000000000000abc");
        assert_eq!(v["body"], "Back-off restarting failed container");
        assert_eq!(v["k8s.cluster.name"], "prod");
        assert_eq!(v["service.name"], "herald");
        assert!(v.get("herald.agent.node").is_none());
        assert!(v["timestamp"].is_null(), "no timestamp on the object");
    }

    /// The line carries what the OTLP record carries: same time (also when out of range), same severity.
    #[test]
    fn line_and_otlp_record_agree() {
        let mut r = EventRecord::for_test("default", "Pod", "web-1", "Odd", "Bizarre");
        r.last_timestamp = Some("2024-12-02T10:13:09Z".parse().unwrap());
        let id = Identity::default();
        let line = |r: &EventRecord| {
            let mut out = Vec::new();
            write_line(&mut out, r.into(), &id);
            serde_json::from_slice::<serde_json::Value>(&out).unwrap()
        };
        let otlp = super::super::otlp::encode::log_record((&r).into());
        let v = line(&r);
        assert_eq!(v["timestamp"], "2024-12-02T10:13:09Z");
        assert_eq!(otlp.time_unix_nano, 1_733_134_389_000_000_000);
        assert!(v.get("severity_text").is_none() && v.get("severity_number").is_none());
        assert_eq!((otlp.severity_text.as_str(), otlp.severity_number), ("", 0));
        assert_eq!(v["herald.event.type"], "Bizarre");

        r.event_time = Some("2958-01-01T00:00:00Z".parse().unwrap());
        assert!(line(&r)["timestamp"].is_null());
        assert_eq!(
            super::super::otlp::encode::log_record((&r).into()).time_unix_nano,
            0
        );
    }
}
