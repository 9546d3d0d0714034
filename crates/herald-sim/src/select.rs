//! Label and field selectors, as far as herald and kubectl use them on Events.

use serde_json::Value;

/// One `key op value` requirement.
#[derive(Debug, Clone, PartialEq)]
enum Req {
    Eq(String, String),
    Ne(String, String),
    Exists(String),
    NotExists(String),
}

/// A parsed selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Selector(Vec<Req>);

/// Field paths a field selector may use, per API (like the API server, others are a 400).
const CORE_FIELDS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
];
const V1_FIELDS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "regarding.kind",
    "regarding.namespace",
    "regarding.name",
    "regarding.uid",
    "regarding.apiVersion",
    "regarding.resourceVersion",
    "regarding.fieldPath",
    "reason",
    "reportingController",
    "type",
];

impl Selector {
    /// Parse a label selector (`a=b`, `a==b`, `a!=b`, `a`, `!a`).
    pub fn labels(s: &str) -> Result<Selector, String> {
        Self::parse(s, None)
    }

    /// Parse a field selector (`=`, `==`, `!=`) for the core (`v1 = false`) or events.k8s.io API.
    pub fn fields(s: &str, v1: bool) -> Result<Selector, String> {
        Self::parse(s, Some(if v1 { V1_FIELDS } else { CORE_FIELDS }))
    }

    fn parse(s: &str, allowed: Option<&[&str]>) -> Result<Selector, String> {
        let mut reqs = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let req = if let Some((k, v)) = part.split_once("!=") {
                Req::Ne(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                Req::Eq(k.trim().into(), v.trim().into())
            } else if allowed.is_some() {
                return Err(format!("invalid field selector: {part:?}"));
            } else if let Some(k) = part.strip_prefix('!') {
                Req::NotExists(k.trim().into())
            } else if part.contains(' ') {
                return Err(format!("unsupported label selector: {part:?}"));
            } else {
                Req::Exists(part.into())
            };
            if let (Some(allowed), Req::Eq(k, _) | Req::Ne(k, _)) = (allowed, &req)
                && !allowed.contains(&k.as_str())
            {
                return Err(format!("field label not supported: {k}"));
            }
            reqs.push(req);
        }
        Ok(Selector(reqs))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Match the object's labels.
    pub fn matches_labels(&self, obj: &Value) -> bool {
        let labels = &obj["metadata"]["labels"];
        self.0.iter().all(|r| match r {
            Req::Eq(k, v) => labels[k].as_str() == Some(v),
            Req::Ne(k, v) => labels[k].as_str() != Some(v),
            Req::Exists(k) => labels.get(k).is_some(),
            Req::NotExists(k) => labels.get(k).is_none(),
        })
    }

    /// Match fields of the object as served (dotted paths; `source` is `source.component`).
    pub fn matches_fields(&self, obj: &Value) -> bool {
        self.0.iter().all(|r| match r {
            Req::Eq(k, v) => field(obj, k) == v,
            Req::Ne(k, v) => field(obj, k) != v,
            Req::Exists(_) | Req::NotExists(_) => true,
        })
    }
}

fn field<'a>(obj: &'a Value, path: &str) -> &'a str {
    let path = if path == "source" {
        "source.component"
    } else {
        path
    };
    let mut v = obj;
    for p in path.split('.') {
        v = &v[p];
    }
    v.as_str().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn labels_and_fields() {
        let obj = json!({"metadata": {"name": "a", "labels": {"app": "web"}}, "involvedObject": {"kind": "Pod"}, "type": "Warning", "source": {"component": "kubelet"}});
        assert!(Selector::labels("app=web").unwrap().matches_labels(&obj));
        assert!(!Selector::labels("app!=web").unwrap().matches_labels(&obj));
        assert!(Selector::labels("app,!tier").unwrap().matches_labels(&obj));
        let f = Selector::fields("involvedObject.kind=Pod,type!=Normal", false).unwrap();
        assert!(f.matches_fields(&obj));
        assert!(
            Selector::fields("source=kubelet", false)
                .unwrap()
                .matches_fields(&obj)
        );
        assert!(
            !Selector::fields("metadata.name==b", false)
                .unwrap()
                .matches_fields(&obj)
        );
        assert_eq!(
            Selector::fields("spec.x=1", false).unwrap_err(),
            "field label not supported: spec.x"
        );
        assert!(Selector::fields("involvedObject.kind=Pod", true).is_err());
    }
}
