//! Records → one OTLP `ExportLogsServiceRequest`, one `ResourceLogs` per involved object.
//!
//! The receiver's shape puts the involved object in the *resource*, so records about the same object share a
//! resource and records about different objects cannot. Grouping uses a hash map keyed by the resource
//! attribute values (borrowed from the records), so a batch costs one look-up per record.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;

use crate::record::EventRecord;
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
    u64::try_from(t.as_nanosecond()).unwrap_or(0)
}

/// One log record, without its resource.
pub fn log_record(r: &EventRecord) -> LogRecord {
    let mut attributes = Vec::with_capacity(20);
    shape::log_attributes(r, |k, v| attributes.push(key_value(k, v)));
    LogRecord {
        time_unix_nano: r.timestamp().map(nanos).unwrap_or(0),
        observed_time_unix_nano: nanos(r.observed),
        severity_number: shape::severity_number(&r.type_).unwrap_or(0),
        severity_text: r.type_.to_string(),
        body: string(&r.message),
        attributes,
        ..Default::default()
    }
}

/// Build the request for a batch, grouping records by their resource.
pub fn export_request<'a>(
    records: impl IntoIterator<Item = &'a EventRecord>,
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
        let object = shape::object_attributes(r);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_about_one_object_share_a_resource() {
        let a1 = EventRecord::for_test("default", "Pod", "a", "Pulled", "Normal");
        let b = EventRecord::for_test("default", "Pod", "b", "Pulled", "Normal");
        let a2 = EventRecord::for_test("default", "Pod", "a", "Started", "Warning");
        let req = export_request([&a1, &b, &a2], &Identity::default());
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
