//! Records → one OTLP `ExportLogsServiceRequest`, one `ResourceLogs` per involved object.
//!
//! The receiver's shape puts the involved object in the *resource*, so records about the same object share a
//! resource and records about different objects cannot. Grouping uses a hash map keyed by the resource
//! attribute values (borrowed from the records), so a batch costs one look-up per record.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

use crate::record::LogEntry;
use crate::sink::shape::{self, Identity, Value};

fn string(s: &str) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(any_value::Value::StringValue(s.to_string())),
    })
}

fn key_value(key: &str, value: Value<'_>) -> KeyValue {
    let value = match value {
        Value::Str(s) => any_value::Value::StringValue(s.to_string()),
        Value::Owned(s) => any_value::Value::StringValue(s),
        Value::Int(i) => any_value::Value::IntValue(i),
        Value::Bool(b) => any_value::Value::BoolValue(b),
    };
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn nanos(t: jiff::Timestamp) -> u64 {
    shape::unix_nanos(t).unwrap_or(0)
}

/// One log record, without its resource.
pub fn log_record(entry: LogEntry<'_>) -> LogRecord {
    let mut attributes = Vec::with_capacity(20);
    shape::log_attributes(entry, |k, v| attributes.push(key_value(k, v)));
    let r = entry.event;
    LogRecord {
        time_unix_nano: shape::record_time(r).map(nanos).unwrap_or(0),
        observed_time_unix_nano: nanos(r.observed),
        severity_number: shape::severity_number(&r.type_).unwrap_or(0),
        severity_text: shape::severity_text(r).unwrap_or_default().to_string(),
        body: string(&r.message),
        attributes,
        ..Default::default()
    }
}

/// Build the request for a batch, grouping records by their resource.
pub fn export_request<'a>(
    records: impl IntoIterator<Item = LogEntry<'a>>,
    id: &Identity,
) -> ExportLogsServiceRequest {
    let mut agent = Vec::with_capacity(4);
    shape::agent_attributes(id, |k, v| agent.push(key_value(k, Value::Str(v))));
    let scope = InstrumentationScope {
        name: shape::SERVICE_NAME.to_string(),
        version: shape::SERVICE_VERSION.to_string(),
        ..Default::default()
    };

    let mut index: ahash::HashMap<[&str; 7], usize> = ahash::HashMap::default();
    let mut resource_logs: Vec<ResourceLogs> = Vec::new();
    for r in records {
        let object = shape::object_attributes(r.event);
        let key = object.map(|(_, v)| v);
        let i = *index.entry(key).or_insert_with(|| {
            let mut attributes = Vec::with_capacity(object.len() + agent.len());
            attributes.extend(object.iter().map(|(k, v)| key_value(k, Value::Str(v))));
            attributes.extend(agent.iter().cloned());
            resource_logs.push(ResourceLogs {
                resource: Some(Resource {
                    attributes,
                    ..Default::default()
                }),
                scope_logs: vec![ScopeLogs {
                    scope: Some(scope.clone()),
                    ..Default::default()
                }],
                ..Default::default()
            });
            resource_logs.len() - 1
        });
        resource_logs[i].scope_logs[0]
            .log_records
            .push(log_record(r));
    }
    ExportLogsServiceRequest { resource_logs }
}

/// The spans of a batch: one per VM start and per migration (records whose lifecycle has a duration), all of
/// a VM's spans in one trace derived from the VM's uid. `None` when the batch has none.
pub fn trace_request<'a>(
    records: impl IntoIterator<Item = LogEntry<'a>>,
    id: &Identity,
) -> Option<ExportTraceServiceRequest> {
    let spans: Vec<Span> = records
        .into_iter()
        .filter_map(|entry| {
            let (r, vm) = (entry.event, entry.vm?);
            let (start, end, failed) = vm.span?;
            let name = match vm.transition {
                "started" | "failed" => "vm.start",
                "migration_succeeded" | "migration_failed" => "vm.migration",
                _ => return None,
            };
            let mut attributes = Vec::with_capacity(12);
            attributes.push(key_value("k8s.namespace.name", Value::Str(&r.namespace)));
            shape::log_attributes(entry, |k, v| {
                if k.starts_with("kubevirt.") {
                    attributes.push(key_value(k, v));
                }
            });
            attributes.push(key_value("kubevirt.vm.uid", Value::Str(&vm.vm_uid)));
            Some(Span {
                trace_id: trace_id(&r.namespace, &vm.vm, &vm.vm_uid).to_vec(),
                span_id: span_id(&r.regarding.uid, vm.transition, start).to_vec(),
                name: name.to_string(),
                kind: SpanKind::Internal as i32,
                start_time_unix_nano: nanos(start),
                end_time_unix_nano: nanos(end.max(start)),
                attributes,
                status: Some(Status {
                    code: if failed {
                        StatusCode::Error
                    } else {
                        StatusCode::Ok
                    } as i32,
                    message: if failed {
                        r.message.clone()
                    } else {
                        String::new()
                    },
                }),
                ..Default::default()
            })
        })
        .collect();
    if spans.is_empty() {
        return None;
    }
    let mut attributes = Vec::with_capacity(4);
    shape::agent_attributes(id, |k, v| attributes.push(key_value(k, Value::Str(v))));
    Some(ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes,
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: shape::SERVICE_NAME.to_string(),
                    version: shape::SERVICE_VERSION.to_string(),
                    ..Default::default()
                }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    })
}

/// 16 bytes: the VM uid itself when it is a UUID (as Kubernetes uids are), else a stable hash of
/// namespace/name/uid.
pub fn trace_id(namespace: &str, vm: &str, vm_uid: &str) -> [u8; 16] {
    let hex: String = vm_uid.chars().filter(|c| *c != '-').collect();
    let mut out = [0u8; 16];
    if hex.len() == 32
        && hex.chars().all(|c| c.is_ascii_hexdigit())
        && hex != "00000000000000000000000000000000"
    {
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap_or(0);
        }
        return out;
    }
    let a = stable_hash(&[namespace, vm, vm_uid, "a"]);
    let b = stable_hash(&[namespace, vm, vm_uid, "b"]);
    out[..8].copy_from_slice(&a.to_be_bytes());
    out[8..].copy_from_slice(&b.to_be_bytes());
    out
}

fn span_id(uid: &str, transition: &str, start: jiff::Timestamp) -> [u8; 8] {
    let start = start.as_nanosecond().to_string();
    stable_hash(&[uid, transition, &start]).max(1).to_be_bytes()
}

/// A hash that is the same in every process and release (fixed seeds), so ids are deterministic.
fn stable_hash(parts: &[&str]) -> u64 {
    use std::hash::{BuildHasher, Hash, Hasher};
    let mut h = ahash::RandomState::with_seeds(0x6865_7261, 0x6c64_7472, 0x6163_6573, 0x7370_616e)
        .build_hasher();
    for p in parts {
        p.hash(&mut h);
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::EventRecord;

    #[test]
    fn trace_ids_come_from_the_vm_uid() {
        let id = trace_id("ns", "vm1", "0fea47ca-d9c6-4b0f-94cc-8bc03350d09a");
        assert_eq!(id[0], 0x0f);
        assert_eq!(id[15], 0x9a);
        let a = trace_id("ns", "vm1", "");
        assert_eq!(a, trace_id("ns", "vm1", ""));
        assert_ne!(a, trace_id("ns", "vm2", ""));
    }

    #[test]
    fn records_about_one_object_share_a_resource() {
        let a1 = EventRecord::for_test("default", "Pod", "a", "Pulled", "Normal");
        let b = EventRecord::for_test("default", "Pod", "b", "Pulled", "Normal");
        let a2 = EventRecord::for_test("default", "Pod", "a", "Started", "Warning");
        let req = export_request([&a1, &b, &a2].map(LogEntry::from), &Identity::default());
        assert_eq!(req.resource_logs.len(), 2);
        let first = &req.resource_logs[0];
        assert_eq!(first.scope_logs[0].log_records.len(), 2);
        assert_eq!(first.scope_logs[0].log_records[1].severity_number, 13);
        assert_eq!(first.scope_logs[0].scope.as_ref().unwrap().name, "herald");
        let names: Vec<_> = first
            .resource
            .as_ref()
            .unwrap()
            .attributes
            .iter()
            .map(|kv| kv.key.as_str())
            .collect();
        assert_eq!(
            names,
            [
                "k8s.node.name",
                "k8s.object.kind",
                "k8s.object.name",
                "k8s.object.uid",
                "k8s.object.fieldpath",
                "k8s.object.api_version",
                "k8s.object.resource_version",
                "service.name",
                "service.version"
            ]
        );
    }
}
