//! The JSON log sink: one line per processed Event on stdout, for log shippers that scrape container output.
//!
//! Keys are the OpenTelemetry names (`k8s.namespace.name`, `k8s.event.reason`, ...) that the OTLP sink uses,
//! with the same values (both come from [`super::shape`]), so a Loki query works on either path. Lines are written with serde directly, not through `tracing`:
//! the record shape is fixed, and herald's own diagnostics stay on stderr. Writing is async and batched; when
//! stdout blocks (nobody reads the pipe) this sink's ring fills and drops, counted, while the other sinks go on.

use std::sync::Arc;

use metrics::Counter;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use jiff::Timestamp;

use super::Shared;
use super::shape::{self, Identity, Value};
use crate::health::SinkHealth;
use crate::record::LogEntry;
use crate::ring::Ring;
use crate::telemetry::{self, Telemetry};

/// Append one JSON line for `r` to `out`: the OTLP log record's fields, then its resource and log
/// attributes flattened under their OpenTelemetry keys.
pub fn write_line(out: &mut Vec<u8>, r: LogEntry<'_>, id: &Identity) {
    write_object(out, r, id);
    out.push(b'\n');
}

/// Append the JSON object of [`write_line`] without the newline (the webhook and Kafka sinks' records).
///
/// Written by hand rather than through serde_json's serializer: the keys are fixed and the values are
/// strings, integers, booleans and timestamps, and serde_json's per-byte escaping loop and per-entry
/// calls were the largest item of the JSON sink's profile. The bytes are the ones serde_json writes (the
/// tests compare the two).
pub fn write_object(out: &mut Vec<u8>, entry: LogEntry<'_>, id: &Identity) {
    let r = entry.event;
    let mut obj = Object::open(out);
    // The OTLP record's time, `null` exactly where OTLP says 0 (unknown).
    obj.timestamp("timestamp", shape::record_time(r));
    obj.timestamp("observed_timestamp", Some(r.observed));
    if let (Some(text), Some(n)) = (shape::severity_text(r), shape::severity_number(&r.type_)) {
        obj.str("severity_text", text);
        obj.int("severity_number", n.into());
    }
    obj.str("body", &r.message);
    shape::agent_attributes(id, |k, v| obj.str(k, v));
    for (k, v) in shape::object_attributes(r) {
        obj.str(k, v);
    }
    shape::log_attributes(entry, |k, v| match v {
        Value::Str(s) => obj.str(k, s),
        Value::Owned(s) => obj.str(k, &s),
        Value::Int(i) => obj.int(k, i),
        Value::Bool(b) => obj.bool(k, b),
    });
    obj.close();
}

/// A JSON object being appended to a buffer; keys are written as given (herald's keys need no escaping).
struct Object<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Object<'a> {
    fn open(out: &'a mut Vec<u8>) -> Object<'a> {
        out.push(b'{');
        Object { out, first: true }
    }

    /// herald's keys are literals (`&'static str`) that need no escaping, so they are copied as they are.
    fn key(&mut self, key: &'static str) {
        debug_assert_eq!(next_escape(key.as_bytes()), None, "{key}");
        if !std::mem::take(&mut self.first) {
            self.out.push(b',');
        }
        self.out.push(b'"');
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    fn str(&mut self, key: &'static str, value: &str) {
        self.key(key);
        string(self.out, value);
    }

    fn int(&mut self, key: &'static str, value: i64) {
        self.key(key);
        self.out
            .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
    }

    fn bool(&mut self, key: &'static str, value: bool) {
        self.key(key);
        self.out
            .extend_from_slice(if value { b"true" } else { b"false" });
    }

    /// RFC 3339 in UTC, as the timestamp's `Display` (and so its serde form) writes it; `null` for `None`.
    fn timestamp(&mut self, key: &'static str, value: Option<Timestamp>) {
        self.key(key);
        let Some(t) = value else {
            self.out.extend_from_slice(b"null");
            return;
        };
        self.out.push(b'"');
        match shape::DateTime::utc(t, b'T') {
            Some(d) => {
                self.out.extend_from_slice(d.as_bytes());
                self.out.push(b'Z');
            }
            None => {
                use std::io::Write;
                // Writing into a Vec cannot fail.
                let _ = write!(self.out, "{t}");
            }
        }
        self.out.push(b'"');
    }

    fn close(self) {
        self.out.push(b'}');
    }
}

/// Append `s` as a JSON string, escaped as serde_json escapes: `"` and `\\`, the short forms `\b \f \n \r
/// \t`, other control characters as `\u00XX` (lowercase hex), everything else as it is.
fn string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut clean = 0;
    // Most values need no escaping at all: find the next byte that does a word at a time.
    while let Some(at) = next_escape(&bytes[clean..]) {
        let at = clean + at;
        out.extend_from_slice(&bytes[clean..at]);
        let b = bytes[at];
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
            }
        }
        clean = at + 1;
    }
    out.extend_from_slice(&bytes[clean..]);
    out.push(b'"');
}

/// The index of the first byte JSON needs escaped (a control character, `"` or `\\`).
fn next_escape(bytes: &[u8]) -> Option<usize> {
    let needs = |b: u8| b < 0x20 || b == b'"' || b == b'\\';
    // Eight bytes at a time without a branch per byte: the loop over a chunk has no early exit, so the
    // compiler turns it into vector compares.
    let mut chunks = bytes.chunks_exact(8);
    let mut offset = 0;
    for chunk in &mut chunks {
        if chunk.iter().fold(false, |any, &b| any | needs(b)) {
            return chunk.iter().position(|&b| needs(b)).map(|i| offset + i);
        }
        offset += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| needs(b))
        .map(|i| offset + i)
}

pub struct JsonSink<W> {
    out: W,
    sent: Counter,
    failures: Counter,
    health: Arc<SinkHealth>,
    identity: Identity,
}

/// Most lines written between flushes. Each write is handed to tokio's blocking pool and the sink waits
/// for it; on the runtime's one thread the pipeline hands over up to an ingest ring (1024 records) per turn,
/// so a smaller batch let a 200k list overflow this sink's ring (20-56 % dropped at 256 lines, none at
/// 1024; BENCHMARKS.md). The buffer grows to about 1.2 MB on such a burst.
const BATCH: usize = 1024;

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

    /// The object as serde_json writes it, entry by entry in the same order: the independent model the hand
    /// writer must match byte for byte.
    fn serde_object(entry: LogEntry<'_>, id: &Identity) -> Vec<u8> {
        use serde::ser::{SerializeMap, Serializer};
        let r = entry.event;
        let mut out = Vec::new();
        let mut ser = serde_json::Serializer::new(&mut out);
        let mut map = ser.serialize_map(None).unwrap();
        map.serialize_entry("timestamp", &shape::record_time(r))
            .unwrap();
        map.serialize_entry("observed_timestamp", &r.observed)
            .unwrap();
        if let (Some(text), Some(n)) = (shape::severity_text(r), shape::severity_number(&r.type_)) {
            map.serialize_entry("severity_text", text).unwrap();
            map.serialize_entry("severity_number", &n).unwrap();
        }
        map.serialize_entry("body", &r.message).unwrap();
        shape::agent_attributes(id, |k, v| map.serialize_entry(k, v).unwrap());
        for (k, v) in shape::object_attributes(r) {
            map.serialize_entry(k, v).unwrap();
        }
        shape::log_attributes(entry, |k, v| match v {
            Value::Str(s) => map.serialize_entry(k, s).unwrap(),
            Value::Owned(s) => map.serialize_entry(k, &s).unwrap(),
            Value::Int(i) => map.serialize_entry(k, &i).unwrap(),
            Value::Bool(b) => map.serialize_entry(k, &b).unwrap(),
        });
        map.end().unwrap();
        out
    }

    #[test]
    fn objects_are_what_serde_json_writes() {
        let t = |s: &str| s.parse::<Timestamp>().unwrap();
        let mut r = EventRecord::for_test("default", "Pod", "web-1", "BackOff", "Warning");
        r.message =
            "quote \" backslash \\ tab\t nl\n cr\r bell\u{7} del\u{7f} é 日本 \u{1F600}".into();
        r.last_timestamp = Some(t("2024-12-02T10:13:09.123456789Z"));
        r.creation_timestamp = Some(t("2024-12-02T10:13:00.5Z"));
        r.series_count = Some(4);
        r.series_last_observed = Some(t("2024-12-02T10:14:00Z"));
        r.related = Some(crate::record::ObjectRef {
            kind: "Node".into(),
            name: "n\"1".into(),
            ..Default::default()
        });
        r.count = 7;
        r.reported_count = -3;
        r.truncated = true;
        let id = Identity {
            cluster_name: "prod".into(),
            agent_node: "node-a".into(),
        };
        let details = crate::record::VmDetails {
            transition: "migration_succeeded",
            vm: "vm-1".into(),
            vm_uid: "u".into(),
            node: String::new(),
            source_node: "a".into(),
            target_node: "b".into(),
            before: "Running".into(),
            after: "Succeeded".into(),
            span: Some((
                t("2024-12-02T10:00:00Z"),
                t("2024-12-02T10:00:01.25Z"),
                false,
            )),
        };
        let plain = EventRecord::for_test("", "", "", "", "");
        for entry in [
            LogEntry::from(&r),
            LogEntry {
                event: &r,
                vm: Some(&details),
            },
            LogEntry::from(&plain),
        ] {
            let mut ours = Vec::new();
            write_object(&mut ours, entry, &id);
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                String::from_utf8(serde_object(entry, &id)).unwrap()
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn timestamps_are_what_jiff_writes(
            seconds in Timestamp::MIN.as_second()..Timestamp::MAX.as_second(),
            nanos in proptest::prop_oneof![proptest::strategy::Just(0i32), 0i32..1_000_000_000, proptest::strategy::Strategy::prop_map(0i32..1000, |m| m * 1_000_000)],
        ) {
            let t = Timestamp::new(seconds, nanos).unwrap();
            let mut ours = Vec::new();
            Object::open(&mut ours).timestamp("t", Some(t));
            proptest::prop_assert_eq!(String::from_utf8(ours).unwrap(), format!("{{\"t\":\"{t}\""));
        }

        #[test]
        fn strings_are_escaped_as_serde_json_escapes(s in "\\PC*|[\\x00-\\x7f]{0,40}") {
            let mut ours = Vec::new();
            string(&mut ours, &s);
            proptest::prop_assert_eq!(ours, serde_json::to_vec(&s).unwrap());
        }
    }
}
