//! An `ExportLogsServiceRequest` written straight from the records as protobuf bytes.
//!
//! Why not build the `opentelemetry-proto` message and let prost encode it ([`super::encode::export_request`]):
//! each record has about 25 attributes, and the message owns every key and value as a `String`, so building it
//! costs about 50 allocations per record and was the largest cost on herald's hot path (BENCHMARKS.md). Here
//! keys and values are copied once, from the record into the output, and the only allocations are the output
//! and two scratch buffers per batch. The bytes decode to exactly the message `export_request` builds (a unit
//! test checks it on every Event of the project's fixtures in `tests/fixtures/events/`, and on edge records),
//! which stays the readable reference of the shape.

use crate::record::LogEntry;
use crate::sink::shape::{self, Identity, Value};

/// Protobuf wire types.
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn tag(out: &mut Vec<u8>, field: u8, wire: u8) {
    // Every field number here is below 16: one byte.
    out.push((field << 3) | wire);
}

/// A length-delimited field whose body is already in `body`.
fn message(out: &mut Vec<u8>, field: u8, body: &[u8]) {
    tag(out, field, LEN);
    varint(out, body.len() as u64);
    out.extend_from_slice(body);
}

/// A proto3 string field: left out when empty, as prost does.
fn string(out: &mut Vec<u8>, field: u8, s: &str) {
    if !s.is_empty() {
        message(out, field, s.as_bytes());
    }
}

fn fixed64(out: &mut Vec<u8>, field: u8, v: u64) {
    if v != 0 {
        tag(out, field, FIXED64);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// `AnyValue` holding `value` (a oneof: written even when it is the default).
fn any_value_len(value: &Value<'_>) -> usize {
    match value {
        Value::Str(s) => 1 + varint_len(s.len() as u64) + s.len(),
        Value::Owned(s) => 1 + varint_len(s.len() as u64) + s.len(),
        Value::Int(i) => 1 + varint_len(*i as u64),
        Value::Bool(_) => 2,
    }
}

fn any_value(out: &mut Vec<u8>, value: &Value<'_>) {
    match value {
        Value::Str(s) => message(out, 1, s.as_bytes()),
        Value::Owned(s) => message(out, 1, s.as_bytes()),
        Value::Int(i) => {
            tag(out, 3, VARINT);
            varint(out, *i as u64);
        }
        Value::Bool(b) => {
            tag(out, 2, VARINT);
            out.push(u8::from(*b));
        }
    }
}

/// A `KeyValue` as field `field` of its parent.
fn key_value(out: &mut Vec<u8>, field: u8, key: &str, value: &Value<'_>) {
    let any = any_value_len(value);
    let body = 1 + varint_len(key.len() as u64) + key.len() + 1 + varint_len(any as u64) + any;
    tag(out, field, LEN);
    varint(out, body as u64);
    message(out, 1, key.as_bytes());
    tag(out, 2, LEN);
    varint(out, any as u64);
    any_value(out, value);
}

fn nanos(t: jiff::Timestamp) -> u64 {
    shape::unix_nanos(t).unwrap_or(0)
}

/// One `LogRecord` body (without its own tag and length).
fn log_record(out: &mut Vec<u8>, entry: LogEntry<'_>) {
    let r = entry.event;
    fixed64(out, 1, shape::record_time(r).map(nanos).unwrap_or(0));
    if let Some(n) = shape::severity_number(&r.type_) {
        tag(out, 2, VARINT);
        varint(out, n as u64);
    }
    string(out, 3, shape::severity_text(r).unwrap_or_default());
    tag(out, 5, LEN);
    let body = Value::Str(&r.message);
    varint(out, any_value_len(&body) as u64);
    any_value(out, &body);
    shape::log_attributes(entry, |k, v| key_value(out, 6, k, &v));
    fixed64(out, 11, nanos(r.observed));
}

/// Scratch buffers kept between batches, so steady-state encoding does not allocate.
#[derive(Default)]
pub struct Encoder {
    record: Vec<u8>,
    resource: Vec<u8>,
    members: Vec<Vec<usize>>,
}

impl Encoder {
    /// The request for a batch, grouping records by their resource (the involved object) in order of first
    /// appearance, as [`super::encode::export_request`] does.
    pub fn logs(&mut self, records: &[LogEntry<'_>], id: &Identity) -> Vec<u8> {
        for m in &mut self.members {
            m.clear();
        }
        let mut groups: ahash::HashMap<[&str; 7], usize> = ahash::HashMap::default();
        for (i, r) in records.iter().enumerate() {
            let key = shape::object_attributes(r.event).map(|(_, v)| v);
            let next = groups.len();
            let g = *groups.entry(key).or_insert(next);
            if g == self.members.len() {
                self.members.push(Vec::new());
            }
            self.members[g].push(i);
        }
        let used = groups.len();

        let mut agent = Vec::new();
        shape::agent_attributes(id, |k, v| key_value(&mut agent, 1, k, &Value::Str(v)));
        let mut scope = Vec::new();
        string(&mut scope, 1, shape::SERVICE_NAME);
        string(&mut scope, 2, shape::SERVICE_VERSION);

        let mut out = Vec::with_capacity(records.len() * 1024);
        let mut scope_logs = Vec::new();
        for members in &self.members[..used] {
            let first = records[members[0]];
            // Resource
            self.record.clear();
            for (k, v) in shape::object_attributes(first.event) {
                key_value(&mut self.record, 1, k, &Value::Str(v));
            }
            self.record.extend_from_slice(&agent);
            self.resource.clear();
            message(&mut self.resource, 1, &self.record);
            // ScopeLogs: the scope, then the records.
            scope_logs.clear();
            message(&mut scope_logs, 1, &scope);
            for &i in members {
                self.record.clear();
                log_record(&mut self.record, records[i]);
                message(&mut scope_logs, 2, &self.record);
            }
            message(&mut self.resource, 2, &scope_logs);
            message(&mut out, 1, &self.resource);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::EventRecord;
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use prost::Message;

    #[test]
    fn varint_lengths() {
        for v in [0u64, 1, 127, 128, 16_383, 16_384, u32::MAX as u64, u64::MAX] {
            let mut out = Vec::new();
            varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v), "{v}");
        }
    }

    /// The bytes decode to exactly the message the reference builder makes.
    fn check(records: &[EventRecord], id: &Identity) {
        let refs: Vec<LogEntry> = records.iter().map(LogEntry::from).collect();
        let bytes = Encoder::default().logs(&refs, id);
        let decoded = ExportLogsServiceRequest::decode(&bytes[..]).unwrap();
        let reference = super::super::encode::export_request(refs.iter().copied(), id);
        assert_eq!(decoded, reference);
    }

    #[test]
    fn same_message_as_the_reference_builder() {
        let a1 = EventRecord::for_test("default", "Pod", "a", "Pulled", "Normal");
        let b = EventRecord::for_test("default", "Pod", "b", "Pulled", "Normal");
        let mut a2 = EventRecord::for_test("default", "Pod", "a", "Started", "Warning");
        a2.message = "Back-off restarting failed container ü".repeat(20);
        a2.count = 300;
        a2.delta = 2;
        a2.truncated = true;
        a2.creation_timestamp = Some("2024-03-01T10:00:00Z".parse().unwrap());
        a2.event_time = Some("2024-03-01T10:00:01.5Z".parse().unwrap());
        a2.related = Some(a1.regarding.clone());
        let mut odd = EventRecord::for_test("x", "Node", "n", "Weird", "Unusual");
        odd.count = 0;
        odd.message.clear();
        let id = Identity {
            cluster_name: "prod".into(),
            agent_node: "node-1".into(),
        };
        check(&[a1.clone(), b.clone(), a2.clone(), odd.clone()], &id);
        check(&[odd], &Identity::default());
        check(&[], &id);
    }

    /// Every Event of the project's fixtures, decoded and normalised as the source does, one batch.
    #[test]
    fn same_message_on_every_fixture() {
        use crate::source::decode::{CoreV1, EventsV1, LeanEvent};

        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/events");
        let mut records = Vec::new();
        let mut files = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            files += 1;
            let doc: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            // A list's items do not repeat the list's apiVersion.
            let api_version = doc["apiVersion"].as_str().unwrap_or_default().to_string();
            let objects = match doc["items"].as_array() {
                Some(items) => items.clone(),
                None => vec![doc],
            };
            for object in objects {
                let r = if api_version == "events.k8s.io/v1" {
                    let ev: LeanEvent<EventsV1> = serde_json::from_value(object).unwrap();
                    ev.into_record()
                } else {
                    let ev: LeanEvent<CoreV1> = serde_json::from_value(object).unwrap();
                    ev.into_record()
                };
                let r = r.unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
                records.push(r.log_entry().unwrap().event.clone());
            }
        }
        assert!(
            files >= 5 && records.len() >= 10,
            "{files} files, {} records",
            records.len()
        );
        let id = Identity {
            cluster_name: "prod".into(),
            agent_node: "node-1".into(),
        };
        check(&records, &id);
        for r in &records {
            check(std::slice::from_ref(r), &Identity::default());
        }
    }
}
