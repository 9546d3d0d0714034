//! Real objects into the simulator: `--load` files (YAML or JSON; one object, a `List`/`EventList` as kubectl
//! prints them, or several YAML documents) and `--replay` NDJSON watch streams applied in order.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::convert;
use super::store::Store;

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
        .create(&ns, clean)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Load every file's objects into the store.
pub fn load_files(store: &Store, paths: &[PathBuf]) -> Result<usize, LoadError> {
    let mut n = 0;
    for path in paths {
        for (i, obj) in read_objects(path)?.iter().enumerate() {
            if obj["apiVersion"] == "kubevirt.io/v1" {
                continue;
            }
            put(store, obj).map_err(|detail| LoadError {
                path: path.clone(),
                detail: format!("object {}: {detail}", i + 1),
            })?;
            n += 1;
        }
    }
    Ok(n)
}

/// Load the KubeVirt objects of every file into the store of their kind (`VmKind` order).
pub fn load_vm_files(
    stores: &[std::sync::Arc<Store>; 3],
    paths: &[PathBuf],
) -> Result<usize, LoadError> {
    let mut n = 0;
    for path in paths {
        for (i, obj) in read_objects(path)?.iter().enumerate() {
            if obj["apiVersion"] != "kubevirt.io/v1" {
                continue;
            }
            let kind = obj["kind"].as_str().unwrap_or_default();
            let Some(k) = super::http::VmKind::from_kind(kind) else {
                return Err(LoadError {
                    path: path.clone(),
                    detail: format!("object {}: unknown KubeVirt kind {kind:?}", i + 1),
                });
            };
            put(&stores[k as usize], obj).map_err(|detail| LoadError {
                path: path.clone(),
                detail: format!("object {}: {detail}", i + 1),
            })?;
            n += 1;
        }
    }
    Ok(n)
}

/// Read an NDJSON watch stream; malformed lines are reported with their line number and skipped.
pub fn read_stream(path: &Path) -> Result<Vec<(String, Value)>, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|e| LoadError {
        path: path.to_path_buf(),
        detail: format!("cannot read: {e}"),
    })?;
    let mut out = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        match serde_json::from_str::<Value>(line) {
            Ok(v) => {
                let kind = v["type"].as_str().unwrap_or_default().to_string();
                if matches!(kind.as_str(), "ADDED" | "MODIFIED" | "DELETED") {
                    out.push((kind, v["object"].clone()));
                }
            }
            Err(e) => {
                tracing::warn!(file = %path.display(), line = i + 1, error = %e, "skipping malformed watch line")
            }
        }
    }
    Ok(out)
}

/// Apply recorded watch events in order, `rate` per second.
pub async fn replay(
    store: Arc<Store>,
    events: Vec<(String, Value)>,
    rate: f64,
    stop: CancellationToken,
) {
    let gap = Duration::from_secs_f64(1.0 / rate.max(0.001));
    for (kind, obj) in events {
        let ns = obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_string();
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let result = match kind.as_str() {
            "ADDED" => put(&store, &obj),
            "MODIFIED" => {
                let mut o = obj.clone();
                if let Some(m) = o["metadata"].as_object_mut() {
                    m.remove("resourceVersion");
                }
                store
                    .update(&ns, &name, o, None)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
            _ => store
                .delete(&ns, &name)
                .map(|_| ())
                .map_err(|e| e.to_string()),
        };
        if let Err(error) = result {
            tracing::warn!(%error, namespace = %ns, name = %name, "replay step skipped");
        }
        tokio::select! {
            _ = tokio::time::sleep(gap) => {}
            _ = stop.cancelled() => return,
        }
    }
}
