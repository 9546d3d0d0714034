//! Inputs shared by the benches: real Event objects from the shared fixtures (`../shared/fixtures`, or
//! `HERALD_FIXTURES`), read at run time, with an inline hand-written fallback when the folder is missing.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// Written for the benches (not from a fixture): a typical kubelet Warning.
pub const INLINE_EVENT: &str = r#"{"apiVersion":"v1","kind":"Event","metadata":{"name":"web-7d4b9c-x2k9p.1812a3b4c5d6e7f8","namespace":"shop","uid":"0b6e3c1a-2f4d-4e5a-9b7c-1d2e3f4a5b6c","resourceVersion":"918273","creationTimestamp":"2025-03-04T10:00:00Z"},"involvedObject":{"apiVersion":"v1","kind":"Pod","name":"web-7d4b9c-x2k9p","namespace":"shop","uid":"5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d","resourceVersion":"918100","fieldPath":"spec.containers{web}"},"reason":"BackOff","message":"Back-off restarting failed container web in pod web-7d4b9c-x2k9p_shop(5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d)","source":{"component":"kubelet","host":"node-3"},"firstTimestamp":"2025-03-04T10:00:00Z","lastTimestamp":"2025-03-04T10:05:00Z","count":12,"type":"Warning","eventTime":null,"reportingComponent":"kubelet","reportingInstance":"node-3"}"#;

/// The fixtures folder, or `None` with a message saying the inline sample is used.
pub fn fixtures() -> Option<PathBuf> {
    let dir = std::env::var_os("HERALD_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures"));
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "fixtures folder {} not found (set HERALD_FIXTURES): using the inline sample Event",
            dir.display()
        );
        None
    }
}

fn read(p: &Path) -> Option<String> {
    match std::fs::read_to_string(p) {
        Ok(text) => Some(text),
        Err(error) => {
            eprintln!(
                "cannot read {}: {error}; using the inline sample",
                p.display()
            );
            None
        }
    }
}

/// Compact a pretty-printed JSON object so it is one line, as on the wire.
fn compact(json: &str) -> Option<String> {
    serde_json::from_str::<serde_json::Value>(json)
        .ok()
        .map(|v| v.to_string())
}

/// A real watch line carrying a core/v1 Event, and the Event object alone.
pub struct Inputs {
    pub watch_line: String,
    /// The AKS 2024 kubelet Warning (`events/aks-2024-FailedToRetrieveImagePullSecret-count5.json`).
    pub object: String,
    /// Every core/v1 Event found in the fixtures (at least the inline one), as JSON objects: `object`, then
    /// the objects of the watch fixture's ADDED lines.
    pub objects: Vec<String>,
}

pub fn inputs() -> Inputs {
    let inline = || Inputs {
        watch_line: format!(r#"{{"type":"ADDED","object":{INLINE_EVENT}}}"#),
        object: INLINE_EVENT.to_owned(),
        objects: vec![INLINE_EVENT.to_owned()],
    };
    let Some(dir) = fixtures() else {
        return inline();
    };
    let (Some(lines), Some(object)) = (
        read(&dir.join("watch/minikube-2019-curl-api-v1-watch-events.jsonl")),
        read(&dir.join("events/aks-2024-FailedToRetrieveImagePullSecret-count5.json")),
    ) else {
        return inline();
    };
    let lines: Vec<&str> = lines.lines().filter(|l| l.contains("\"ADDED\"")).collect();
    let Some(first) = lines.first() else {
        eprintln!("no ADDED line in the watch fixture; using the inline sample");
        return inline();
    };
    let Some(object) = compact(&object) else {
        return inline();
    };
    let mut objects = vec![object.clone()];
    for line in &lines {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(line)
            && let Some(o) = v.get("object")
        {
            objects.push(o.to_string());
        }
    }
    eprintln!(
        "using fixtures from {} ({} core/v1 Events)",
        dir.display(),
        objects.len()
    );
    Inputs {
        watch_line: (*first).to_owned(),
        object,
        objects,
    }
}

/// The real events.k8s.io/v1 Event of the fixtures (kind cluster, 2023, read through events.k8s.io/v1),
/// compacted; `None` (with a message) without the fixtures.
pub fn events_v1_object() -> Option<String> {
    let dir = fixtures()?;
    let text = read(&dir.join("events-v1/k8s-openapi-test-2023-Scheduled-eventTime-null.json"))?;
    let object = compact(&text);
    if object.is_none() {
        eprintln!("the events.k8s.io/v1 fixture is not JSON; skipping its benches");
    }
    object
}
