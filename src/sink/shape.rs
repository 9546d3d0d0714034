//! The record shape every log sink writes: attribute keys and values of the OpenTelemetry collector's
//! `k8seventsreceiver`, plus herald's own (documented) additions.
//!
//! One list, used by both the OTLP sink and the JSON line sink, so a Loki query written against one path works
//! on the other and the two cannot drift. Values borrow from the record; nothing is allocated except the few
//! values that need formatting (timestamps, the fingerprint).

use jiff::Timestamp;

use crate::record::EventRecord;

/// One attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    Str(&'a str),
    Owned(String),
    Int(i64),
    Bool(bool),
}

/// herald's identity, the same on every record it sends.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Identity {
    /// `k8s.cluster.name`, from the configuration; omitted when empty.
    pub cluster_name: String,
    /// The node herald runs on (`NODE_NAME` from the downward API); omitted when empty.
    pub agent_node: String,
}

pub const SERVICE_NAME: &str = "herald";
pub const SERVICE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// OTLP severity number for an Event type, matched case-insensitively like the receiver does:
/// Normal → INFO (9), Warning → WARN (13), Error → ERROR (17), Critical → FATAL (21), anything else unset.
pub fn severity_number(type_: &str) -> Option<i32> {
    [
        ("normal", 9),
        ("warning", 13),
        ("error", 17),
        ("critical", 21),
    ]
    .into_iter()
    .find(|(name, _)| type_.eq_ignore_ascii_case(name))
    .map(|(_, n)| n)
}

/// Resource attributes that depend on the record: the involved object and the reporting node, exactly the
/// receiver's set. They decide which `ResourceLogs` a record goes into.
pub fn object_attributes(r: &EventRecord) -> [(&'static str, &str); 7] {
    let o = &r.regarding;
    [
        ("k8s.node.name", &r.host),
        ("k8s.object.kind", &o.kind),
        ("k8s.object.name", &o.name),
        ("k8s.object.uid", &o.uid),
        ("k8s.object.fieldpath", &o.field_path),
        ("k8s.object.api_version", &o.api_version),
        ("k8s.object.resource_version", &o.resource_version),
    ]
}

/// Resource attributes that describe herald itself.
pub fn agent_attributes(id: &Identity, mut put: impl FnMut(&'static str, &str)) {
    put("service.name", SERVICE_NAME);
    put("service.version", SERVICE_VERSION);
    if !id.cluster_name.is_empty() {
        put("k8s.cluster.name", &id.cluster_name);
    }
    if !id.agent_node.is_empty() {
        put("herald.agent.node", &id.agent_node);
    }
}

/// `k8s.event.start_time` the way the receiver writes it: Go's `time.Time.String()` of the creation time,
/// e.g. `2024-03-01 10:00:00 +0000 UTC`.
pub fn go_time_string(t: Timestamp) -> String {
    t.strftime("%Y-%m-%d %H:%M:%S%.f +0000 UTC").to_string()
}

/// Log record attributes: the receiver's, then herald's additions. Empty optional values are left out.
pub fn log_attributes<'a>(r: &'a EventRecord, mut put: impl FnMut(&'static str, Value<'a>)) {
    put("k8s.event.reason", Value::Str(&r.reason));
    put("k8s.event.action", Value::Str(&r.action));
    if let Some(t) = r.creation_timestamp {
        put("k8s.event.start_time", Value::Owned(go_time_string(t)));
    }
    put("k8s.event.name", Value::Str(&r.name));
    put("k8s.event.uid", Value::Str(&r.uid));
    // The receiver takes the namespace of the involved object, not of the Event.
    put("k8s.namespace.name", Value::Str(&r.regarding.namespace));
    if r.count != 0 {
        put("k8s.event.count", Value::Int(r.count.into()));
    }

    // herald's additions.
    put("k8s.event.namespace", Value::Str(&r.namespace));
    put("k8s.event.api_version", Value::Str(r.api.api_version()));
    put("k8s.event.reporting_controller", Value::Str(&r.component));
    if !r.reporting_instance.is_empty() {
        put(
            "k8s.event.reporting_instance",
            Value::Str(&r.reporting_instance),
        );
    }
    if let Some(n) = r.series_count {
        put("k8s.event.series.count", Value::Int(n.into()));
    }
    if let Some(t) = r.series_last_observed {
        put(
            "k8s.event.series.last_observed_time",
            Value::Owned(t.to_string()),
        );
    }
    if let Some(rel) = &r.related {
        put("k8s.event.related.kind", Value::Str(&rel.kind));
        put("k8s.event.related.name", Value::Str(&rel.name));
        put("k8s.event.related.namespace", Value::Str(&rel.namespace));
        put("k8s.event.related.uid", Value::Str(&rel.uid));
    }
    if let Some(vm) = &r.vm {
        put("kubevirt.transition", Value::Str(vm.transition));
        put("kubevirt.vm.name", Value::Str(&vm.vm));
        put("kubevirt.status.before", Value::Str(&vm.before));
        put("kubevirt.status.after", Value::Str(&vm.after));
        for (key, node) in [
            ("kubevirt.node", &vm.node),
            ("kubevirt.source_node", &vm.source_node),
            ("kubevirt.target_node", &vm.target_node),
        ] {
            if !node.is_empty() {
                put(key, Value::Str(node));
            }
        }
        if let Some((start, end, _)) = vm.span {
            let seconds = end.duration_since(start).as_secs_f64().max(0.0);
            put(
                "kubevirt.duration_ms",
                Value::Int((seconds * 1000.0) as i64),
            );
        }
    }
    put("herald.occurrences", Value::Int(r.delta.into()));
    put("herald.severity", Value::Str(r.severity.as_str()));
    put("herald.repeated", Value::Bool(r.repeated));
    if r.truncated {
        put("herald.truncated", Value::Bool(true));
    }
    put(
        "herald.fingerprint",
        Value::Owned(format!("{:016x}", r.fingerprint)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severity_numbers_follow_the_receiver() {
        assert_eq!(severity_number("Normal"), Some(9));
        assert_eq!(severity_number("warning"), Some(13));
        assert_eq!(severity_number("Error"), Some(17));
        assert_eq!(severity_number("Critical"), Some(21));
        assert_eq!(severity_number("Weird"), None);
    }

    #[test]
    fn start_time_matches_go_formatting() {
        let t: Timestamp = "2024-03-01T10:00:00Z".parse().unwrap();
        assert_eq!(go_time_string(t), "2024-03-01 10:00:00 +0000 UTC");
        let t: Timestamp = "2024-03-01T10:00:00.5Z".parse().unwrap();
        assert_eq!(go_time_string(t), "2024-03-01 10:00:00.5 +0000 UTC");
    }

    #[test]
    fn optional_attributes_are_left_out_when_empty() {
        let mut r = EventRecord::for_test("default", "Pod", "web", "Started", "Normal");
        r.count = 0;
        let mut keys = Vec::new();
        log_attributes(&r, |k, _| keys.push(k));
        assert!(!keys.contains(&"k8s.event.count"));
        assert!(!keys.contains(&"k8s.event.start_time"));
        assert!(!keys.contains(&"k8s.event.related.kind"));
        assert!(keys.contains(&"herald.occurrences"));
    }
}
