//! Real objects into the simulator: `--load` files (YAML or JSON; one object, a `List`/`EventList` as kubectl
//! prints them, or several YAML documents) and `--replay` NDJSON watch streams applied in order.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::convert;
use super::http::VmKind;
use super::store::{ChangeKind, Store};

/// A file that could not be used: which file, where, and why.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {detail}")]
pub struct LoadError {
    pub path: PathBuf,
    pub detail: String,
}

/// Every object in a YAML or JSON file, Lists expanded.
pub fn read_objects(path: &Path) -> Result<Vec<Value>, LoadError> {
    let fail = |detail: String| LoadError {
        path: path.to_path_buf(),
        detail,
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read: {e}")))?;
    let docs: Vec<Value> = if text.trim_start().starts_with(['{', '[']) {
        vec![serde_json::from_str(&text).map_err(|e| fail(format!("invalid JSON: {e}")))?]
    } else {
        serde_saphyr::from_multiple::<Value>(&text)
            .map_err(|e| fail(format!("invalid YAML: {e}")))?
    };
    let mut out = Vec::new();
    for (i, doc) in docs.into_iter().enumerate() {
        match doc {
            Value::Null => {}
            Value::Object(ref o) if o.get("items").is_some_and(Value::is_array) => {
                if let Some(Value::Array(items)) = o.get("items") {
                    out.extend(items.iter().cloned());
                }
            }
            Value::Object(_) => out.push(doc),
            _ => return Err(fail(format!("document {}: expected an object", i + 1))),
        }
    }
    Ok(out)
}

/// Store an object as given (an events.k8s.io/v1 object is converted); returns its namespace/name.
fn put(store: &Store, obj: &Value) -> Result<(), String> {
    let core = if obj["apiVersion"] == "events.k8s.io/v1" {
        convert::to_core(obj)
    } else {
        obj.clone()
    };
    let ns = core["metadata"]["namespace"]
        .as_str()
        .filter(|s| !s.is_empty())
        .unwrap_or("default")
        .to_string();
    let mut clean = core;
    // The store assigns its own resourceVersion, like a restore into a new cluster.
    if let Some(m) = clean["metadata"].as_object_mut() {
        m.remove("resourceVersion");
        m.remove("managedFields");
        m.remove("selfLink");
    }
    store
        .restore(&ns, clean)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Where an object of a captured file belongs: the Event store, or the store of a KubeVirt kind; anything
/// else (a Pod from a captured Pod watch) is refused by kind, never served as an Event.
fn route(obj: &Value) -> Result<Option<VmKind>, String> {
    let kind = obj["kind"].as_str().unwrap_or("Event");
    let api_version = obj["apiVersion"].as_str().unwrap_or("v1");
    match (api_version, kind) {
        ("v1" | "events.k8s.io/v1", "Event") => Ok(None),
        ("kubevirt.io/v1", kind) => match VmKind::from_kind(kind) {
            Some(k) => Ok(Some(k)),
            None => Err(format!("unknown KubeVirt kind {kind:?}")),
        },
        (api_version, kind) => Err(format!(
            "kind {kind} ({api_version}) is not served by herald sim, which serves Events (v1 and \
             events.k8s.io/v1) and KubeVirt's VirtualMachine, VirtualMachineInstance and \
             VirtualMachineInstanceMigration"
        )),
    }
}

/// Load every file's Events into the store; a kind the simulator does not serve fails the load, naming it.
pub fn load_files(store: &Store, paths: &[PathBuf]) -> Result<usize, LoadError> {
    let mut n = 0;
    for path in paths {
        for (i, obj) in read_objects(path)?.iter().enumerate() {
            let fail = |detail: String| LoadError {
                path: path.clone(),
                detail: format!("object {}: {detail}", i + 1),
            };
            match route(obj).map_err(fail)? {
                Some(_) => continue,
                None => put(store, obj).map_err(fail)?,
            }
            n += 1;
        }
    }
    Ok(n)
}

/// Load the KubeVirt objects of every file into the store of their kind (`VmKind` order).
pub fn load_vm_files(stores: &[Arc<Store>; 3], paths: &[PathBuf]) -> Result<usize, LoadError> {
    let mut n = 0;
    for path in paths {
        for (i, obj) in read_objects(path)?.iter().enumerate() {
            let fail = |detail: String| LoadError {
                path: path.clone(),
                detail: format!("object {}: {detail}", i + 1),
            };
            if let Some(k) = route(obj).map_err(fail)? {
                put(&stores[k as usize], obj).map_err(fail)?;
                n += 1;
            }
        }
    }
    Ok(n)
}

/// What one usable line of a captured watch stream does.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// ADDED, MODIFIED or DELETED of an object, in the store of `kind` (None: Events).
    Write {
        change: ChangeKind,
        kind: Option<VmKind>,
        object: Value,
    },
    /// A BOOKMARK or an ERROR (its Status object), sent to the open watches of `kind`'s store, the store of
    /// the stream's objects.
    Signal {
        change: ChangeKind,
        kind: Option<VmKind>,
        object: Value,
    },
}

/// A captured NDJSON watch stream: its usable steps in order, and the lines that could not be used
/// (`line N: why`).
#[derive(Debug, Default)]
pub struct Stream {
    pub steps: Vec<Step>,
    pub skipped: Vec<String>,
}

/// Parse a captured watch stream (`kubectl get --raw '/api/v1/events?watch=1'`). Every line is used as it
/// was captured, BOOKMARK and ERROR included; a line that cannot be used is kept in `skipped` with its line
/// number, to be reported once.
pub fn parse_stream(text: &str) -> Stream {
    let mut out = Stream::default();
    // BOOKMARK and ERROR lines go to the watches of the objects around them (Events until one says otherwise).
    let mut current: Option<VmKind> = None;
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let n = i + 1;
        let v: Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => {
                out.skipped.push(format!("line {n}: not JSON ({e})"));
                continue;
            }
        };
        let Some(kind) = v["type"].as_str() else {
            out.skipped.push(format!(
                "line {n}: no \"type\" (a watch line is {{\"type\": ADDED|MODIFIED|DELETED|BOOKMARK|ERROR, \"object\": ...}})"
            ));
            continue;
        };
        if !v["object"].is_object() {
            out.skipped
                .push(format!("line {n}: {kind} without an \"object\" object"));
            continue;
        }
        let object = v["object"].clone();
        let change = match kind {
            "ADDED" => ChangeKind::Added,
            "MODIFIED" => ChangeKind::Modified,
            "DELETED" => ChangeKind::Deleted,
            "BOOKMARK" | "ERROR" => {
                let change = if kind == "BOOKMARK" {
                    ChangeKind::Bookmark
                } else {
                    ChangeKind::Error
                };
                out.steps.push(Step::Signal {
                    change,
                    kind: current,
                    object,
                });
                continue;
            }
            other => {
                out.skipped
                    .push(format!("line {n}: unknown watch event type {other:?}"));
                continue;
            }
        };
        match route(&object) {
            Ok(k) => {
                current = k;
                out.steps.push(Step::Write {
                    change,
                    kind: k,
                    object,
                });
            }
            Err(why) => out.skipped.push(format!("line {n}: {why}")),
        }
    }
    out
}

/// Read a captured watch stream file; lines it cannot use are logged once each, with their line number.
pub fn read_stream(path: &Path) -> Result<Vec<Step>, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|e| LoadError {
        path: path.to_path_buf(),
        detail: format!("cannot read: {e}"),
    })?;
    let stream = parse_stream(&text);
    for why in &stream.skipped {
        tracing::warn!(file = %path.display(), "replay: skipping {why}");
    }
    Ok(stream.steps)
}

/// Apply a captured stream in order, `rate` steps per second, after `start_after`: writes go to the stores
/// (a MODIFIED of an object not yet stored creates it, as a stream captured mid-way has them; an ADDED of a
/// stored one updates it), BOOKMARK and ERROR lines go to the open watches as they were captured.
pub async fn replay(
    store: Arc<Store>,
    vm_stores: [Arc<Store>; 3],
    steps: Vec<Step>,
    rate: f64,
    start_after: Duration,
    stop: CancellationToken,
) {
    let gap = Duration::from_secs_f64(1.0 / rate.max(0.001));
    tokio::select! {
        _ = tokio::time::sleep(start_after) => {}
        _ = stop.cancelled() => return,
    }
    let store_of = |k: Option<VmKind>| match k {
        None => &store,
        Some(k) => &vm_stores[k as usize],
    };
    for step in steps {
        match step {
            Step::Signal {
                change,
                kind,
                object,
            } => store_of(kind).signal(change, object),
            Step::Write {
                change,
                kind,
                object,
            } => {
                let target = store_of(kind);
                let ns = object["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("default")
                    .to_string();
                let name = object["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let result = match change {
                    // A stream opened without a resourceVersion starts with every existing object as ADDED,
                    // so an ADDED of a stored object (from --load) is an update, as for a relisting client.
                    ChangeKind::Added | ChangeKind::Modified
                        if target.get(&ns, &name).is_some() =>
                    {
                        let mut o = if object["apiVersion"] == "events.k8s.io/v1" {
                            convert::to_core(&object)
                        } else {
                            object.clone()
                        };
                        if let Some(m) = o["metadata"].as_object_mut() {
                            m.remove("resourceVersion");
                        }
                        target
                            .update(&ns, &name, o, None)
                            .map(|_| ())
                            .map_err(|e| e.to_string())
                    }
                    ChangeKind::Added | ChangeKind::Modified => put(target, &object),
                    _ => target
                        .delete(&ns, &name)
                        .map(|_| ())
                        .map_err(|e| e.to_string()),
                };
                if let Err(error) = result {
                    tracing::warn!(%error, namespace = %ns, name = %name, "replay step skipped");
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(gap) => {}
            _ = stop.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_keep_bookmarks_and_errors_and_name_the_lines_they_cannot_use() {
        let text = [
            r#"{"type":"ADDED","object":{"kind":"Event","apiVersion":"v1","metadata":{"name":"a"}}}"#,
            r#"{"type":"BOOKMARK","object":{"kind":"Pod","apiVersion":"v1","metadata":{"resourceVersion":"3845"}}}"#,
            "",
            r#"{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","code":410,"reason":"Expired"}}"#,
            r#"{"object":{"kind":"Event","metadata":{"name":"b"}}}"#,
            r#"{"type":"ADDED","object":{"kind":"Pod","apiVersion":"v1","metadata":{"name":"p"}}}"#,
            "not json",
            r#"{"type":"ADDED","object":{"kind":"VirtualMachine","apiVersion":"kubevirt.io/v1","metadata":{"name":"vm"}}}"#,
            r#"{"type":"BOOKMARK","object":{"kind":"VirtualMachine","apiVersion":"kubevirt.io/v1","metadata":{}}}"#,
        ]
        .join("\n");
        let s = parse_stream(&text);
        let kinds: Vec<(ChangeKind, Option<VmKind>)> = s
            .steps
            .iter()
            .map(|st| match st {
                Step::Write { change, kind, .. } | Step::Signal { change, kind, .. } => {
                    (*change, *kind)
                }
            })
            .collect();
        assert_eq!(
            kinds,
            [
                (ChangeKind::Added, None),
                (ChangeKind::Bookmark, None),
                (ChangeKind::Error, None),
                (ChangeKind::Added, Some(VmKind::Vm)),
                (ChangeKind::Bookmark, Some(VmKind::Vm)),
            ]
        );
        assert_eq!(s.skipped.len(), 3, "{:?}", s.skipped);
        assert!(s.skipped[0].starts_with("line 5: no \"type\""));
        assert!(s.skipped[1].starts_with("line 6: kind Pod (v1) is not served"));
        assert!(s.skipped[2].starts_with("line 7: not JSON"));
    }

    #[test]
    fn loading_a_pod_is_refused_by_kind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pods.yaml");
        std::fs::write(
            &path,
            "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Event\n  metadata: {name: e}\n  involvedObject: {kind: Pod}\n- apiVersion: v1\n  kind: Pod\n  metadata: {name: web}\n",
        )
        .unwrap();
        let e = load_files(&Store::new(10), std::slice::from_ref(&path))
            .unwrap_err()
            .to_string();
        assert!(
            e.ends_with("object 2: kind Pod (v1) is not served by herald sim, which serves Events (v1 and events.k8s.io/v1) and KubeVirt's VirtualMachine, VirtualMachineInstance and VirtualMachineInstanceMigration"),
            "{e}"
        );
    }
}
