//! Small objects herald reads and writes but never watches: `coordination.k8s.io/v1` Leases (leader election)
//! and `v1` ConfigMaps (the daemonset leader's Event checkpoint). Get, create and update with optimistic
//! concurrency (a stale `resourceVersion` is 409 Conflict) and the API server's 1 MiB limit on a ConfigMap's
//! data, as the API server does. Kept apart from the Event store: they must not show up in the ground truth.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde_json::{Value, json};

/// Why a Lease write was refused, as an HTTP status and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
}

/// The last resourceVersion handed out, and the objects by (namespace, name).
type State = (u64, BTreeMap<(String, String), Value>);

/// Which kind of object a store holds.
#[derive(Debug, Clone, Copy)]
pub struct Kind {
    pub api_version: &'static str,
    pub kind: &'static str,
    /// As the API server names it in messages: `leases.coordination.k8s.io`, `configmaps`.
    pub resource: &'static str,
    /// The limit on `data` plus `binaryData` (bytes of values, base64-decoded), if any.
    pub max_data_bytes: Option<usize>,
}

pub const LEASE: Kind = Kind {
    api_version: "coordination.k8s.io/v1",
    kind: "Lease",
    resource: "leases.coordination.k8s.io",
    max_data_bytes: None,
};

pub const CONFIG_MAP: Kind = Kind {
    api_version: "v1",
    kind: "ConfigMap",
    resource: "configmaps",
    max_data_bytes: Some(1024 * 1024),
};

pub struct Objects {
    kind: Kind,
    inner: Mutex<State>,
}

impl Objects {
    pub fn new(kind: Kind) -> Objects {
        Objects {
            kind,
            inner: Mutex::default(),
        }
    }

    /// 422 when the object's data is over the kind's limit.
    fn check_size(&self, body: &Value) -> Result<(), Refused> {
        let Some(max) = self.kind.max_data_bytes else {
            return Ok(());
        };
        let len = |field: &str, decoded: bool| -> usize {
            body[field].as_object().map_or(0, |m| {
                m.values()
                    .filter_map(Value::as_str)
                    .map(|v| if decoded { v.len() / 4 * 3 } else { v.len() })
                    .sum()
            })
        };
        let size = len("data", false) + len("binaryData", true);
        if size > max {
            return Err(Refused {
                code: 422,
                reason: "Invalid",
                message: format!(
                    "{} {:?} is invalid: []: Too long: must have at most {max} bytes",
                    self.kind.kind,
                    body["metadata"]["name"].as_str().unwrap_or_default()
                ),
            });
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, ns: &str, name: &str) -> Result<Value, Refused> {
        self.lock()
            .1
            .get(&(ns.to_string(), name.to_string()))
            .cloned()
            .ok_or_else(|| self.not_found(name))
    }

    pub fn create(&self, ns: &str, mut body: Value) -> Result<Value, Refused> {
        let name = body["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if name.is_empty() {
            return Err(Refused {
                code: 422,
                reason: "Invalid",
                message: "metadata.name: Required value".into(),
            });
        }
        self.check_size(&body)?;
        let mut guard = self.lock();
        let (rv, map) = &mut *guard;
        let key = (ns.to_string(), name.clone());
        if map.contains_key(&key) {
            return Err(Refused {
                code: 409,
                reason: "AlreadyExists",
                message: format!("{} \"{name}\" already exists", self.kind.resource),
            });
        }
        *rv += 1;
        body["apiVersion"] = json!(self.kind.api_version);
        body["kind"] = json!(self.kind.kind);
        body["metadata"]["namespace"] = json!(ns);
        body["metadata"]["resourceVersion"] = json!(rv.to_string());
        body["metadata"]["uid"] = json!(format!("{}-{ns}-{name}", self.kind.kind.to_lowercase()));
        map.insert(key, body.clone());
        Ok(body)
    }

    pub fn update(&self, ns: &str, name: &str, mut body: Value) -> Result<Value, Refused> {
        self.check_size(&body)?;
        let mut guard = self.lock();
        let (rv, map) = &mut *guard;
        let key = (ns.to_string(), name.to_string());
        let Some(current) = map.get(&key) else {
            return Err(self.not_found(name));
        };
        let sent = body["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or_default();
        if !sent.is_empty()
            && sent
                != current["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or_default()
        {
            return Err(Refused {
                code: 409,
                reason: "Conflict",
                message: format!(
                    "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                    self.kind.resource
                ),
            });
        }
        *rv += 1;
        body["apiVersion"] = json!(self.kind.api_version);
        body["kind"] = json!(self.kind.kind);
        body["metadata"]["namespace"] = json!(ns);
        body["metadata"]["name"] = json!(name);
        body["metadata"]["uid"] = current["metadata"]["uid"].clone();
        body["metadata"]["resourceVersion"] = json!(rv.to_string());
        map.insert(key, body.clone());
        Ok(body)
    }
}

impl Objects {
    fn not_found(&self, name: &str) -> Refused {
        Refused {
            code: 404,
            reason: "NotFound",
            message: format!("{} \"{name}\" not found", self.kind.resource),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_updates_conflict() {
        let l = Objects::new(LEASE);
        let a = l
            .create("ns", json!({"metadata": {"name": "herald"}, "spec": {}}))
            .unwrap();
        assert_eq!(l.create("ns", a.clone()).unwrap_err().code, 409);
        let b = l.update("ns", "herald", a.clone()).unwrap();
        assert_ne!(
            a["metadata"]["resourceVersion"],
            b["metadata"]["resourceVersion"]
        );
        assert_eq!(l.update("ns", "herald", a).unwrap_err().reason, "Conflict");
        assert_eq!(l.get("ns", "other").unwrap_err().code, 404);
    }

    #[test]
    fn config_maps_over_one_mebibyte_are_refused() {
        let c = Objects::new(CONFIG_MAP);
        let big = "x".repeat(1024 * 1024 + 1);
        let e = c
            .create("ns", json!({"metadata": {"name": "s"}, "data": {"k": big}}))
            .unwrap_err();
        assert_eq!((e.code, e.reason), (422, "Invalid"));
        assert!(e.message.contains("Too long"), "{}", e.message);
        c.create("ns", json!({"metadata": {"name": "s"}, "data": {"k": "v"}}))
            .unwrap();
    }
}
