//! `coordination.k8s.io/v1` Leases for leader election: get, create and update with optimistic concurrency
//! (a stale `resourceVersion` is 409 Conflict), as the API server does. Kept apart from the Event store:
//! Leases are few, never watched by herald, and must not show up in the Event ground truth.

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

/// The last resourceVersion handed out, and the Leases by (namespace, name).
type State = (u64, BTreeMap<(String, String), Value>);

#[derive(Default)]
pub struct Leases {
    inner: Mutex<State>,
}

impl Leases {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, ns: &str, name: &str) -> Result<Value, Refused> {
        self.lock()
            .1
            .get(&(ns.to_string(), name.to_string()))
            .cloned()
            .ok_or_else(|| not_found(name))
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
        let mut guard = self.lock();
        let (rv, map) = &mut *guard;
        let key = (ns.to_string(), name.clone());
        if map.contains_key(&key) {
            return Err(Refused {
                code: 409,
                reason: "AlreadyExists",
                message: format!("leases.coordination.k8s.io \"{name}\" already exists"),
            });
        }
        *rv += 1;
        body["apiVersion"] = json!("coordination.k8s.io/v1");
        body["kind"] = json!("Lease");
        body["metadata"]["namespace"] = json!(ns);
        body["metadata"]["resourceVersion"] = json!(rv.to_string());
        body["metadata"]["uid"] = json!(format!("lease-{ns}-{name}"));
        map.insert(key, body.clone());
        Ok(body)
    }

    pub fn update(&self, ns: &str, name: &str, mut body: Value) -> Result<Value, Refused> {
        let mut guard = self.lock();
        let (rv, map) = &mut *guard;
        let key = (ns.to_string(), name.to_string());
        let Some(current) = map.get(&key) else {
            return Err(not_found(name));
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
                    "Operation cannot be fulfilled on leases.coordination.k8s.io \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
                ),
            });
        }
        *rv += 1;
        body["apiVersion"] = json!("coordination.k8s.io/v1");
        body["kind"] = json!("Lease");
        body["metadata"]["namespace"] = json!(ns);
        body["metadata"]["name"] = json!(name);
        body["metadata"]["uid"] = current["metadata"]["uid"].clone();
        body["metadata"]["resourceVersion"] = json!(rv.to_string());
        map.insert(key, body.clone());
        Ok(body)
    }
}

fn not_found(name: &str) -> Refused {
    Refused {
        code: 404,
        reason: "NotFound",
        message: format!("leases.coordination.k8s.io \"{name}\" not found"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_updates_conflict() {
        let l = Leases::default();
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
}
