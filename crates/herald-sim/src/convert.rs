//! The events.k8s.io/v1 view of a core/v1 Event and back, as the API server converts them: one stored
//! object, two APIs. Field mapping (from the Kubernetes conversion): note↔message, regarding↔involvedObject,
//! reportingController↔reportingComponent, deprecatedSource↔source, deprecatedFirstTimestamp↔firstTimestamp,
//! deprecatedLastTimestamp↔lastTimestamp, deprecatedCount↔count; the rest keep their names.

use serde_json::{Map, Value};

/// `(core name, events.k8s.io/v1 name)` of the renamed fields.
const RENAMED: &[(&str, &str)] = &[
    ("message", "note"),
    ("involvedObject", "regarding"),
    ("reportingComponent", "reportingController"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
];

fn rename(obj: &Value, api_version: &str, to_v1: bool) -> Value {
    let mut out = Map::new();
    if let Value::Object(map) = obj {
        for (k, v) in map {
            let key = RENAMED
                .iter()
                .find_map(|(core, v1)| {
                    if to_v1 && k == core {
                        Some(*v1)
                    } else if !to_v1 && k == v1 {
                        Some(*core)
                    } else {
                        None
                    }
                })
                .unwrap_or(k);
            out.insert(key.to_string(), v.clone());
        }
    }
    out.insert("apiVersion".into(), Value::String(api_version.into()));
    out.insert("kind".into(), Value::String("Event".into()));
    Value::Object(out)
}

/// The stored core/v1 object as events.k8s.io/v1 serves it.
pub fn to_events_v1(core: &Value) -> Value {
    rename(core, "events.k8s.io/v1", true)
}

/// An events.k8s.io/v1 object (a write through that API) as stored.
pub fn to_core(v1: &Value) -> Value {
    rename(v1, "v1", false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_names() {
        let core = serde_json::json!({
            "apiVersion": "v1", "kind": "Event", "metadata": {"name": "a"},
            "message": "m", "involvedObject": {"kind": "Pod"}, "count": 3,
            "source": {"component": "kubelet"}, "reason": "BackOff", "reportingComponent": "kubelet"
        });
        let v1 = to_events_v1(&core);
        assert_eq!(v1["apiVersion"], "events.k8s.io/v1");
        assert_eq!(v1["note"], "m");
        assert_eq!(v1["regarding"]["kind"], "Pod");
        assert_eq!(v1["deprecatedCount"], 3);
        assert_eq!(v1["deprecatedSource"]["component"], "kubelet");
        assert_eq!(v1["reportingController"], "kubelet");
        assert_eq!(v1["reason"], "BackOff");
        assert!(v1.get("message").is_none());
        assert_eq!(to_core(&v1), core);
    }
}
