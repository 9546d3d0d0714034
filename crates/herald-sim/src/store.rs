//! The simulator's storage, shaped like etcd behind an API server: one ordered map of core/v1 Events, one
//! global resourceVersion bumped by every write, a bounded history of changes (older watches get 410), list
//! snapshots for `continue`, and the ground truth of occurrences every write adds.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::broadcast;

/// A write refused, in the API server's terms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
/// The resource is named as the API server names it in messages (`events`, `virtualmachines.kubevirt.io`).
pub enum StoreError {
    #[error("{resource} \"{name}\" not found")]
    NotFound {
        resource: &'static str,
        name: String,
    },
    #[error("{resource} \"{name}\" already exists")]
    AlreadyExists {
        resource: &'static str,
        name: String,
    },
    #[error(
        "Operation cannot be fulfilled on {resource} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
    )]
    Conflict {
        resource: &'static str,
        name: String,
    },
    #[error("{0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Added,
    Modified,
    Deleted,
    /// A replayed BOOKMARK: open watches that allow bookmarks send one at their resourceVersion.
    Bookmark,
    /// A replayed ERROR: open watches send the captured Status and end, as the API server ends them.
    Error,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Added => "ADDED",
            ChangeKind::Modified => "MODIFIED",
            ChangeKind::Deleted => "DELETED",
            ChangeKind::Bookmark => "BOOKMARK",
            ChangeKind::Error => "ERROR",
        }
    }
}

/// One write, as watchers see it.
#[derive(Debug)]
pub struct Change {
    pub rv: u64,
    pub kind: ChangeKind,
    pub object: Arc<Value>,
}

/// Occurrences by namespace/kind/reason/type, as the simulator created them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Truth {
    #[serde(rename = "resourceVersion")]
    pub resource_version: String,
    pub objects: usize,
    pub occurrences_total: u64,
    pub occurrences: Vec<TruthRow>,
    /// Faults injected since the simulator started, by kind (disconnect, gone, error_500, error_429, stall,
    /// garbage). Faults change delivery, never the occurrences above.
    #[serde(default)]
    pub faults_injected: std::collections::BTreeMap<String, u64>,
    #[serde(default)]
    pub faults_injected_total: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TruthRow {
    pub namespace: String,
    pub kind: String,
    pub reason: String,
    #[serde(rename = "type")]
    pub type_: String,
    pub count: u64,
}

type Key = (String, String);

/// Paged lists in progress (or abandoned) whose snapshots are kept for `continue`.
pub const MAX_SNAPSHOTS: usize = 8;

/// The items of one paged list, as of its first page.
pub type Snapshot = Arc<Vec<Arc<Value>>>;

/// The resourceVersion a watch asked for is older than the history window.
#[derive(Debug, Clone, Copy)]
pub struct Gone {
    pub requested: u64,
    pub oldest: u64,
}

/// Where a watch starts.
pub struct WatchStart {
    /// Changes up to this resourceVersion are covered by `objects`/`replay`.
    pub rv: u64,
    pub objects: Vec<Arc<Value>>,
    pub replay: Vec<Arc<Change>>,
    pub rx: broadcast::Receiver<Arc<Change>>,
}

pub struct Store {
    /// `apiVersion` and `kind` written on every stored object.
    type_meta: (&'static str, &'static str),
    /// The resource as error messages name it.
    resource: &'static str,
    inner: Mutex<Inner>,
    tx: broadcast::Sender<Arc<Change>>,
}

struct Inner {
    objects: BTreeMap<Key, Arc<Value>>,
    rv: u64,
    history: VecDeque<Arc<Change>>,
    history_cap: usize,
    /// Highest resourceVersion no longer in the history.
    compacted: u64,
    truth: BTreeMap<(String, String, String, String), u64>,
    /// Per object, the highest count the truth has taken: a count that goes down and up again adds only
    /// what exceeds it (herald's rule: counts never go backwards, so a stale or reset count cannot count twice).
    high_water: BTreeMap<Key, u64>,
    snapshots: VecDeque<(u64, u64, Snapshot)>,
    next_id: u64,
}

/// Occurrences an Event object stands for: `series.count`, else `count`, else 1.
pub fn count_of(obj: &Value) -> u64 {
    let positive = |v: &Value| v.as_i64().filter(|c| *c > 0).map(|c| c as u64);
    positive(&obj["series"]["count"])
        .or_else(|| positive(&obj["count"]))
        .unwrap_or(1)
}

/// `count` and `series.count` are int32 in the API: larger values are refused, as a real API server does.
fn check_counts(obj: &Value) -> Result<(), StoreError> {
    for (path, value) in [
        ("count", &obj["count"]),
        ("series.count", &obj["series"]["count"]),
    ] {
        if value.as_i64().is_some_and(|c| c > i64::from(i32::MAX))
            || value.as_u64().is_some_and(|c| c > i32::MAX as u64)
        {
            return Err(StoreError::Invalid(format!(
                "{path}: Invalid value: must be at most 2147483647"
            )));
        }
    }
    Ok(())
}

fn str_at<'a>(obj: &'a Value, path: &[&str]) -> &'a str {
    let mut v = obj;
    for p in path {
        v = &v[*p];
    }
    v.as_str().unwrap_or_default()
}

impl Store {
    /// A store of core/v1 Events.
    pub fn new(history_cap: usize) -> Store {
        Store::of_kind("v1", "Event", history_cap)
    }

    /// A store of another kind (KubeVirt's), stamped with its own apiVersion and kind.
    pub fn of_kind(api_version: &'static str, kind: &'static str, history_cap: usize) -> Store {
        let (tx, _) = broadcast::channel(16 * 1024);
        let resource = match kind {
            "VirtualMachine" => "virtualmachines.kubevirt.io",
            "VirtualMachineInstance" => "virtualmachineinstances.kubevirt.io",
            "VirtualMachineInstanceMigration" => "virtualmachineinstancemigrations.kubevirt.io",
            _ => "events",
        };
        Store {
            type_meta: (api_version, kind),
            resource,
            inner: Mutex::new(Inner {
                objects: BTreeMap::new(),
                // Start where a young cluster might be, not at 0 ("0" means "any" to clients).
                rv: 1000,
                history: VecDeque::new(),
                history_cap: history_cap.max(1),
                compacted: 1000,
                truth: BTreeMap::new(),
                high_water: BTreeMap::new(),
                snapshots: VecDeque::new(),
                next_id: 1,
            }),
            tx,
        }
    }

    /// The kind stored here (`Event`, `VirtualMachine`, ...).
    pub fn kind(&self) -> &'static str {
        self.type_meta.1
    }

    /// 404 for `name`, in the API server's words.
    pub fn not_found(&self, name: &str) -> StoreError {
        StoreError::NotFound {
            resource: self.resource,
            name: name.to_string(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes sent but not yet taken by every watch stream (0 when nobody watches).
    pub fn backlog(&self) -> usize {
        self.tx.len()
    }

    pub fn resource_version(&self) -> u64 {
        self.lock().rv
    }

    fn commit(&self, inner: &mut Inner, kind: ChangeKind, object: Arc<Value>) {
        let change = Arc::new(Change {
            rv: inner.rv,
            kind,
            object,
        });
        inner.history.push_back(change.clone());
        while inner.history.len() > inner.history_cap {
            if let Some(old) = inner.history.pop_front() {
                inner.compacted = old.rv;
            }
        }
        // No receivers is fine: nobody is watching.
        let _ = self.tx.send(change);
    }

    fn add_truth(inner: &mut Inner, obj: &Value, n: u64) {
        if n == 0 {
            return;
        }
        let key = (
            str_at(obj, &["metadata", "namespace"]).to_string(),
            str_at(obj, &["involvedObject", "kind"]).to_string(),
            str_at(obj, &["reason"]).to_string(),
            str_at(obj, &["type"]).to_string(),
        );
        *inner.truth.entry(key).or_default() += n;
    }

    /// Create a core/v1 Event in `namespace`.
    pub fn create(&self, namespace: &str, obj: Value) -> Result<Arc<Value>, StoreError> {
        self.create_or_try(namespace, obj, false, false)
    }

    /// Store a captured object (`--load`, `--replay`) as it was, its UID included, so that the captured
    /// stream's later lines and the objects' ownerReferences still point at it. A client's create gets the
    /// server's UID instead.
    pub fn restore(&self, namespace: &str, obj: Value) -> Result<Arc<Value>, StoreError> {
        self.create_or_try(namespace, obj, false, true)
    }

    /// What `create` would store (`dryRun=All`), refused as it would be, without storing anything: no
    /// resourceVersion, no change, no occurrence.
    pub fn create_dry_run(&self, namespace: &str, obj: Value) -> Result<Arc<Value>, StoreError> {
        self.create_or_try(namespace, obj, true, false)
    }

    /// 409 Conflict for `name`, in the API server's words.
    pub fn conflict(&self, name: &str) -> StoreError {
        StoreError::Conflict {
            resource: self.resource,
            name: name.to_string(),
        }
    }

    fn create_or_try(
        &self,
        namespace: &str,
        mut obj: Value,
        dry_run: bool,
        keep_uid: bool,
    ) -> Result<Arc<Value>, StoreError> {
        let mut inner = self.lock();
        if !obj.is_object() {
            return Err(StoreError::Invalid("body must be a JSON object".into()));
        }
        let (version, kind) = self.type_meta;
        check_counts(&obj)?;
        let meta = obj
            .as_object_mut()
            .and_then(|o| {
                // An absent or empty `metadata:` is no name, as the API server decodes it.
                let m = o
                    .entry("metadata")
                    .or_insert_with(|| Value::Object(Default::default()));
                if m.is_null() {
                    *m = Value::Object(Default::default());
                }
                m.as_object_mut()
            })
            .ok_or_else(|| {
                StoreError::Invalid(format!(
                    "{kind} in version \"{version}\" cannot be handled as a {kind}: metadata: expected an object"
                ))
            })?;
        let name = match meta.get("name").and_then(Value::as_str) {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => match meta.get("generateName").and_then(Value::as_str) {
                Some(prefix) => format!("{prefix}{:05x}", inner.next_id),
                None => {
                    return Err(StoreError::Invalid(format!(
                        "{kind} \"\" is invalid: metadata.name: Required value: name or generateName is required"
                    )));
                }
            },
        };
        let key = (namespace.to_string(), name.clone());
        if inner.objects.contains_key(&key) {
            return Err(StoreError::AlreadyExists {
                resource: self.resource,
                name,
            });
        }
        let id = inner.next_id + 1;
        if !dry_run {
            inner.rv += 1;
            inner.next_id += 1;
            meta.insert("resourceVersion".into(), inner.rv.to_string().into());
        }
        meta.insert("name".into(), name.into());
        meta.insert("namespace".into(), namespace.into());
        // An Event a client creates gets the server's UID, as from a real API server (a client cannot give two
        // Events one UID). A captured object restored as it was keeps its own, and so do KubeVirt objects a
        // test writes (their ownerReferences name their owners' UIDs); without one, the server's.
        let client_uid = meta.get("uid").is_some_and(Value::is_string);
        if !client_uid || (kind == "Event" && !keep_uid) {
            meta.insert(
                "uid".into(),
                format!("{:08x}-5157-4e00-8000-{:012x}", id >> 16, id).into(),
            );
        }
        if !meta.get("creationTimestamp").is_some_and(Value::is_string) {
            meta.insert(
                "creationTimestamp".into(),
                jiff::Timestamp::now()
                    .strftime("%Y-%m-%dT%H:%M:%SZ")
                    .to_string()
                    .into(),
            );
        }
        if let Some(o) = obj.as_object_mut() {
            o.insert("apiVersion".into(), self.type_meta.0.into());
            o.insert("kind".into(), self.type_meta.1.into());
        }
        if dry_run {
            return Ok(Arc::new(obj));
        }
        Self::add_truth(&mut inner, &obj, count_of(&obj));
        inner.high_water.insert(key.clone(), count_of(&obj));
        let obj = Arc::new(obj);
        inner.objects.insert(key, obj.clone());
        self.commit(&mut inner, ChangeKind::Added, obj.clone());
        Ok(obj)
    }

    /// Send a BOOKMARK or ERROR to every open watch, as a captured stream had it. Not a write: no
    /// resourceVersion, no history. An ERROR with code 410 also compacts the history, so a watch resumed from
    /// an older resourceVersion is told 410 too and the client relists, as after a real compaction.
    pub fn signal(&self, kind: ChangeKind, object: Value) {
        let mut inner = self.lock();
        if kind == ChangeKind::Error && object["code"].as_i64() == Some(410) {
            inner.history.clear();
            inner.compacted = inner.rv;
        }
        let _ = self.tx.send(Arc::new(Change {
            rv: inner.rv,
            kind,
            object: Arc::new(object),
        }));
    }

    /// Replace an Event; `expected_rv` (when set) must match the stored one.
    pub fn update(
        &self,
        namespace: &str,
        name: &str,
        mut obj: Value,
        expected_rv: Option<&str>,
    ) -> Result<Arc<Value>, StoreError> {
        let mut inner = self.lock();
        let key = (namespace.to_string(), name.to_string());
        let old = inner
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| self.not_found(name))?;
        check_counts(&obj)?;
        if let Some(rv) = expected_rv
            && !rv.is_empty()
            && rv != str_at(&old, &["metadata", "resourceVersion"])
        {
            return Err(StoreError::Conflict {
                resource: self.resource,
                name: name.into(),
            });
        }
        inner.rv += 1;
        let rv = inner.rv;
        let old_meta = old["metadata"].clone();
        if let Some(o) = obj.as_object_mut() {
            let meta = o
                .entry("metadata")
                .or_insert_with(|| Value::Object(Default::default()));
            if let Some(m) = meta.as_object_mut() {
                m.insert("name".into(), name.into());
                m.insert("namespace".into(), namespace.into());
                m.insert("resourceVersion".into(), rv.to_string().into());
                for k in ["uid", "creationTimestamp"] {
                    if let Some(v) = old_meta.get(k) {
                        m.insert(k.into(), v.clone());
                    }
                }
            }
            o.insert("apiVersion".into(), self.type_meta.0.into());
            o.insert("kind".into(), self.type_meta.1.into());
        } else {
            return Err(StoreError::Invalid("body must be a JSON object".into()));
        }
        let high = inner
            .high_water
            .get(&key)
            .copied()
            .unwrap_or_else(|| count_of(&old));
        let increase = count_of(&obj).saturating_sub(high);
        inner
            .high_water
            .insert(key.clone(), high.max(count_of(&obj)));
        Self::add_truth(&mut inner, &obj, increase);
        let obj = Arc::new(obj);
        inner.objects.insert(key, obj.clone());
        self.commit(&mut inner, ChangeKind::Modified, obj.clone());
        Ok(obj)
    }

    /// JSON merge patch (RFC 7386); strategic merge patches on Events reduce to the same.
    pub fn patch(
        &self,
        namespace: &str,
        name: &str,
        patch: &Value,
    ) -> Result<Arc<Value>, StoreError> {
        let current = self
            .get(namespace, name)
            .ok_or_else(|| self.not_found(name))?;
        let mut merged = (*current).clone();
        merge(&mut merged, patch);
        let rv = str_at(&current, &["metadata", "resourceVersion"]).to_string();
        self.update(namespace, name, merged, Some(&rv))
    }

    pub fn delete(&self, namespace: &str, name: &str) -> Result<Arc<Value>, StoreError> {
        let mut inner = self.lock();
        let key = (namespace.to_string(), name.to_string());
        let old = inner
            .objects
            .remove(&key)
            .ok_or_else(|| self.not_found(name))?;
        inner.high_water.remove(&key);
        inner.rv += 1;
        let mut gone = (*old).clone();
        gone["metadata"]["resourceVersion"] = inner.rv.to_string().into();
        let gone = Arc::new(gone);
        self.commit(&mut inner, ChangeKind::Deleted, gone.clone());
        Ok(gone)
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<Value>> {
        self.lock()
            .objects
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// Every object (of one namespace) and the resourceVersion they are current at.
    pub fn snapshot(&self, namespace: Option<&str>) -> (u64, Vec<Arc<Value>>) {
        let inner = self.lock();
        let items = match namespace {
            Some(ns) => inner
                .objects
                .range((ns.to_string(), String::new())..)
                .take_while(|((n, _), _)| n == ns)
                .map(|(_, v)| v.clone())
                .collect(),
            None => inner.objects.values().cloned().collect(),
        };
        (inner.rv, items)
    }

    /// Keep a list snapshot for `continue`; returns its id. A snapshot goes when its list has served its last
    /// page ([`Store::drop_snapshot`]); of the lists abandoned before that (a failed page restarts a client's
    /// list), the oldest go beyond [`MAX_SNAPSHOTS`]. Each snapshot pins the objects it listed, even once they
    /// are deleted, so abandoned ones must not pile up.
    pub fn keep_snapshot(&self, rv: u64, items: Snapshot) -> u64 {
        let mut inner = self.lock();
        let id = inner.next_id;
        inner.next_id += 1;
        inner.snapshots.push_back((id, rv, items));
        while inner.snapshots.len() > MAX_SNAPSHOTS {
            inner.snapshots.pop_front();
        }
        id
    }

    /// The snapshot of a continue token; None if it is unknown or was dropped.
    pub fn find_snapshot(&self, id: u64) -> Option<(u64, Snapshot)> {
        let inner = self.lock();
        inner
            .snapshots
            .iter()
            .find(|(i, _, _)| *i == id)
            .map(|(_, rv, items)| (*rv, items.clone()))
    }

    /// The list of this snapshot is complete.
    pub fn drop_snapshot(&self, id: u64) {
        self.lock().snapshots.retain(|(i, _, _)| *i != id);
    }

    /// Subscribe to changes after `from`, with what to send first: for `None` ("now") every current object,
    /// for a resourceVersion the changes after it. Taken under one lock, so nothing falls between the two.
    pub fn watch_from(&self, from: Option<u64>) -> Result<WatchStart, Gone> {
        let inner = self.lock();
        let rx = self.tx.subscribe();
        match from {
            None => Ok(WatchStart {
                rv: inner.rv,
                objects: inner.objects.values().cloned().collect(),
                replay: Vec::new(),
                rx,
            }),
            Some(rv) if rv < inner.compacted => Err(Gone {
                requested: rv,
                oldest: inner.compacted + 1,
            }),
            Some(rv) => Ok(WatchStart {
                rv,
                objects: Vec::new(),
                replay: inner
                    .history
                    .iter()
                    .filter(|c| c.rv > rv)
                    .cloned()
                    .collect(),
                rx,
            }),
        }
    }

    pub fn truth(&self) -> Truth {
        let inner = self.lock();
        let occurrences: Vec<TruthRow> = inner
            .truth
            .iter()
            .map(|((namespace, kind, reason, type_), count)| TruthRow {
                namespace: namespace.clone(),
                kind: kind.clone(),
                reason: reason.clone(),
                type_: type_.clone(),
                count: *count,
            })
            .collect();
        Truth {
            resource_version: inner.rv.to_string(),
            objects: inner.objects.len(),
            occurrences_total: occurrences.iter().map(|r| r.count).sum(),
            occurrences,
            faults_injected: Default::default(),
            faults_injected_total: 0,
        }
    }
}

/// RFC 7386 JSON merge patch.
pub fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Default::default());
            }
            if let Value::Object(t) = target {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(name: &str, count: i64) -> Value {
        json!({"metadata": {"name": name}, "involvedObject": {"kind": "Pod"}, "reason": "BackOff", "type": "Warning", "count": count})
    }

    #[test]
    fn writes_bump_versions_and_truth() {
        let s = Store::new(100);
        let a = s.create("ns", ev("a", 3)).unwrap();
        assert_eq!(a["metadata"]["resourceVersion"], "1001");
        assert!(a["metadata"]["uid"].is_string());
        assert_eq!(
            s.create("ns", ev("a", 1)),
            Err(StoreError::AlreadyExists {
                resource: "events",
                name: "a".into()
            })
        );
        s.patch("ns", "a", &json!({"count": 5})).unwrap();
        s.patch("ns", "a", &json!({"count": 4})).unwrap();
        // Down to 4 and up to 6: only what exceeds the earlier 5 counts.
        s.patch("ns", "a", &json!({"count": 6})).unwrap();
        assert_eq!(s.truth().occurrences_total, 6);
        assert!(matches!(
            s.patch("ns", "a", &json!({"count": 4_294_967_295_u64})),
            Err(StoreError::Invalid(_))
        ));
        let mut forged = ev("b", 1);
        forged["metadata"]["uid"] = json!("uid-of-a");
        let b = s.create("ns", forged).unwrap();
        assert_ne!(b["metadata"]["uid"], "uid-of-a", "the server assigns UIDs");
        s.delete("ns", "b").unwrap();
        s.delete("ns", "a").unwrap();
        let t = s.truth();
        assert_eq!(t.occurrences_total, 7);
        assert_eq!(t.objects, 0);
        assert_eq!(t.resource_version, "1007");
        assert_eq!(
            s.update("ns", "a", ev("a", 1), None),
            Err(StoreError::NotFound {
                resource: "events",
                name: "a".into()
            })
        );
    }

    #[test]
    fn history_window_and_gone() {
        let s = Store::new(2);
        for i in 0..4 {
            s.create("ns", ev(&format!("e{i}"), 1)).unwrap();
        }
        // Changes 1001..1004; the window keeps 1003 and 1004.
        let replay = s.watch_from(Some(1002)).unwrap().replay;
        assert_eq!(
            replay.iter().map(|c| c.rv).collect::<Vec<_>>(),
            [1003, 1004]
        );
        assert!(s.watch_from(Some(1001)).is_err());
    }

    #[test]
    fn snapshots_go_when_done_or_abandoned_for_newer_ones() {
        let s = Store::new(2);
        s.create("ns", ev("a", 1)).unwrap();
        let keep = || {
            let (rv, items) = s.snapshot(None);
            s.keep_snapshot(rv, Arc::new(items))
        };
        let done = keep();
        let abandoned = keep();
        assert!(s.find_snapshot(done).is_some());
        s.drop_snapshot(done);
        assert!(
            s.find_snapshot(done).is_none(),
            "its list served the last page"
        );
        for _ in 0..4 {
            s.create("ns", ev(&format!("e{}", s.resource_version()), 1))
                .unwrap();
        }
        assert!(
            s.find_snapshot(abandoned).is_some(),
            "a continue token outlives the watch history, as on an API server until compaction"
        );
        let newer: Vec<u64> = (0..MAX_SNAPSHOTS).map(|_| keep()).collect();
        assert!(s.find_snapshot(abandoned).is_none(), "the oldest goes");
        assert!(newer.iter().all(|id| s.find_snapshot(*id).is_some()));
    }

    #[test]
    fn conflict_on_stale_update() {
        let s = Store::new(10);
        s.create("ns", ev("a", 1)).unwrap();
        assert!(matches!(
            s.update("ns", "a", ev("a", 2), Some("1")),
            Err(StoreError::Conflict { .. })
        ));
    }

    #[test]
    fn messages_name_the_resource_and_the_missing_name_as_the_api_server_does() {
        let s = Store::of_kind("kubevirt.io/v1", "VirtualMachineInstanceMigration", 10);
        s.create("ns", json!({"metadata": {"name": "m"}})).unwrap();
        let e = s
            .update("ns", "m", json!({"metadata": {}}), Some("1"))
            .unwrap_err();
        assert!(
            e.to_string().starts_with(
                "Operation cannot be fulfilled on virtualmachineinstancemigrations.kubevirt.io \"m\""
            ),
            "{e}"
        );
        let events = Store::new(10);
        for body in [json!({"reason": "x"}), json!({"metadata": null})] {
            let e = events.create("ns", body).unwrap_err().to_string();
            assert_eq!(
                e,
                "Event \"\" is invalid: metadata.name: Required value: name or generateName is required"
            );
        }
    }

    #[test]
    fn a_dry_run_create_changes_nothing() {
        let s = Store::new(10);
        let tried = s.create_dry_run("ns", ev("a", 3)).unwrap();
        assert_eq!(tried["metadata"]["namespace"], "ns");
        assert!(tried["metadata"]["uid"].is_string());
        assert!(tried["metadata"].get("resourceVersion").is_none());
        assert_eq!(s.resource_version(), 1000);
        assert_eq!(s.truth().occurrences_total, 0);
        assert!(s.get("ns", "a").is_none());
        s.create("ns", ev("a", 3)).unwrap();
        assert!(matches!(
            s.create_dry_run("ns", ev("a", 3)),
            Err(StoreError::AlreadyExists { .. })
        ));
    }

    #[test]
    fn merge_patch_rules() {
        let mut t = json!({"a": 1, "b": {"c": 2, "d": 3}});
        merge(&mut t, &json!({"a": null, "b": {"c": 5}, "e": [1]}));
        assert_eq!(t, json!({"b": {"c": 5, "d": 3}, "e": [1]}));
    }
}
