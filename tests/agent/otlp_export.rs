//! OTLP export end to end: herald (a child process) watches the simulator and exports to a real OTLP receiver
//! that decodes the protobuf over gRPC or HTTP. Asserts that every record is the collector's k8seventsreceiver
//! record on every key it writes (the receiver's mapping is written out here, over the project's fixtures and
//! the shared real ones), severity mapping, grouping, gzip and headers, and the behaviour when the receiver is
//! down, slow or refusing.

use crate::common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::otlp::{Answer, Attr, Receiver};
use common::*;
use herald_sim::{RunningSim, SimOptions};
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, PostParams};
use serde_json::Value;

/// herald's configuration for these tests; `extra` is more `sinks.otlp` keys (batch_interval defaults to 50ms).
fn otlp_config(endpoint: &str, protocol: &str, extra: &str) -> String {
    let interval = if extra.contains("batch_interval") {
        ""
    } else {
        "    batch_interval: 50ms\n"
    };
    format!(
        "source:\n  events:\n    startup: replay\nsinks:\n  json:\n    enabled: false\n  otlp:\n    endpoint: {endpoint}\n    protocol: {protocol}\n{interval}{extra}"
    )
}

fn event(name: &str, pod: &str, type_: &str) -> Event {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "default"},
        "involvedObject": {"kind": "Pod", "name": pod, "namespace": "default", "apiVersion": "v1", "uid": format!("uid-{pod}"), "resourceVersion": "7"},
        "reason": format!("Tested{type_}"), "message": format!("{type_} about {pod}"), "type": type_, "count": 1,
        "source": {"component": "kubelet", "host": "node-1"},
        "lastTimestamp": jiff::Timestamp::now().to_string(),
    }))
    .unwrap()
}

// ---------------------------------------------------------------------------------------------------------
// The collector's k8seventsreceiver, written out from its mapping (`k8s_event_to_logdata.go`, the version whose
// e2e golden writes `k8s.event.reporting_controller`/`reporting_instance`), over the Event as the API server
// serves it through core/v1 (the API the receiver watches). Nothing here calls herald's code.
// ---------------------------------------------------------------------------------------------------------

/// The record the receiver writes for one Event.
#[derive(Debug, PartialEq)]
struct Expected {
    resource: BTreeMap<String, Attr>,
    attributes: BTreeMap<String, Attr>,
    severity_number: i32,
    severity_text: String,
    body: String,
    time_unix_nano: u64,
}

/// A string field as Go decodes it into a struct: missing or null is `""`.
fn go_str(v: &Value, path: &[&str]) -> String {
    path.iter()
        .fold(v, |v, k| &v[*k])
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn go_time(v: &Value, key: &str) -> Option<jiff::Timestamp> {
    v[key].as_str().map(|s| s.parse().unwrap())
}

/// `metav1.Time.String()`: Go's `2006-01-02 15:04:05.999999999 -0700 MST` in the collector's zone (UTC in its
/// container image); an unset time prints Go's zero time.
fn go_time_string(t: Option<jiff::Timestamp>) -> String {
    let Some(t) = t else {
        return "0001-01-01 00:00:00 +0000 UTC".to_string();
    };
    let mut out = t.strftime("%Y-%m-%d %H:%M:%S").to_string();
    if t.subsec_nanosecond() != 0 {
        let frac = format!(".{:09}", t.subsec_nanosecond());
        out.push_str(frac.trim_end_matches('0'));
    }
    out + " +0000 UTC"
}

/// The receiver's record for `ev` (a core/v1 object as served).
fn receiver_record(ev: &Value) -> Expected {
    let s = |path: &[&str]| Attr::Str(go_str(ev, path));
    let mut resource = BTreeMap::new();
    resource.insert("k8s.node.name".into(), s(&["source", "host"]));
    for (key, field) in [
        ("k8s.object.kind", "kind"),
        ("k8s.object.name", "name"),
        ("k8s.object.uid", "uid"),
        ("k8s.object.fieldpath", "fieldPath"),
        ("k8s.object.api_version", "apiVersion"),
        ("k8s.object.resource_version", "resourceVersion"),
    ] {
        resource.insert(key.into(), s(&["involvedObject", field]));
    }
    let mut attributes = BTreeMap::new();
    for (key, path) in [
        ("k8s.event.reason", &["reason"][..]),
        ("k8s.event.action", &["action"]),
        ("k8s.event.name", &["metadata", "name"]),
        ("k8s.event.uid", &["metadata", "uid"]),
        ("k8s.namespace.name", &["involvedObject", "namespace"]),
        ("k8s.event.reporting_controller", &["reportingComponent"]),
        ("k8s.event.reporting_instance", &["reportingInstance"]),
    ] {
        attributes.insert(key.into(), s(path));
    }
    attributes.insert(
        "k8s.event.start_time".into(),
        Attr::Str(go_time_string(go_time(
            &ev["metadata"],
            "creationTimestamp",
        ))),
    );
    // "Count" is 0 when the object has none, and then left out.
    let count = ev["count"].as_i64().unwrap_or(0);
    if count != 0 {
        attributes.insert("k8s.event.count".into(), Attr::Int(count));
    }
    // Known types only, matched in any case; the text is the type as written.
    let type_ = go_str(ev, &["type"]);
    let severity_number = match type_.to_lowercase().as_str() {
        "normal" => 9,
        "warning" => 13,
        "error" => 17,
        "critical" => 21,
        _ => 0,
    };
    let severity_text = if severity_number == 0 {
        String::new()
    } else {
        type_
    };
    // EventTime > LastTimestamp > FirstTimestamp. The receiver drops an Event without any (older than its
    // start) and overflows past 2262 (Go's UnixNano); herald writes 0, "unknown", in both cases.
    let time = go_time(ev, "eventTime")
        .or(go_time(ev, "lastTimestamp"))
        .or(go_time(ev, "firstTimestamp"));
    let time_unix_nano = time
        .and_then(|t| i64::try_from(t.as_nanosecond()).ok())
        .and_then(|n| u64::try_from(n).ok())
        .unwrap_or(0);
    Expected {
        resource,
        attributes,
        severity_number,
        severity_text,
        body: go_str(ev, &["message"]),
        time_unix_nano,
    }
}

/// Keys herald may add beside the receiver's: its own namespace, the OpenTelemetry service keys, the cluster.
fn herald_key(key: &str) -> bool {
    key.starts_with("herald.") || key.starts_with("service.") || key == "k8s.cluster.name"
}

fn split(map: &BTreeMap<String, Attr>) -> (BTreeMap<String, Attr>, Vec<String>) {
    let receiver = map
        .iter()
        .filter(|(k, _)| !herald_key(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let own = map.keys().filter(|k| herald_key(k)).cloned().collect();
    (receiver, own)
}

/// Compare what herald sent with the receiver's record: every receiver key with exactly its value, no receiver
/// key the receiver would not write, nothing else outside herald's own keys.
fn assert_receiver_shape(got: &common::otlp::Record, want: &Expected, what: &str) {
    let (resource, own_resource) = split(&got.resource);
    assert_eq!(resource, want.resource, "{what}: resource");
    let (attributes, own) = split(&got.attributes);
    assert_eq!(attributes, want.attributes, "{what}: log attributes");
    assert!(
        own_resource.iter().all(|k| k.starts_with("service.")
            || k == "k8s.cluster.name"
            || k == "herald.agent.node"),
        "{what}: {own_resource:?}"
    );
    assert!(
        own.iter().all(|k| k.starts_with("herald.")),
        "{what}: {own:?}"
    );
    assert_eq!(
        (
            got.record.severity_number,
            got.record.severity_text.as_str()
        ),
        (want.severity_number, want.severity_text.as_str()),
        "{what}: severity"
    );
    assert_eq!(got.body(), want.body, "{what}: body");
    assert_eq!(
        got.record.time_unix_nano, want.time_unix_nano,
        "{what}: time"
    );
}

/// The same comparison on a JSON line: same keys and values, severity only when OTLP has one, `timestamp` the
/// same instant (`null` where OTLP says 0).
fn assert_json_line(line: &Value, want: &Expected, what: &str) {
    let object = line.as_object().unwrap();
    let mut receiver_keys: Vec<&String> = object
        .keys()
        .filter(|k| {
            !herald_key(k)
                && ![
                    "timestamp",
                    "observed_timestamp",
                    "severity_text",
                    "severity_number",
                    "body",
                ]
                .contains(&k.as_str())
        })
        .collect();
    receiver_keys.sort();
    let mut want_keys: Vec<&String> = want.resource.keys().chain(want.attributes.keys()).collect();
    want_keys.sort();
    assert_eq!(receiver_keys, want_keys, "{what}: JSON keys");
    for (k, v) in want.resource.iter().chain(&want.attributes) {
        let json = match v {
            Attr::Str(s) => Value::from(s.as_str()),
            Attr::Int(i) => Value::from(*i),
            Attr::Bool(b) => Value::from(*b),
        };
        assert_eq!(line[k], json, "{what}: JSON {k}");
    }
    if want.severity_number == 0 {
        assert!(
            object.get("severity_text").is_none() && object.get("severity_number").is_none(),
            "{what}: {line}"
        );
    } else {
        assert_eq!(line["severity_text"], want.severity_text.as_str(), "{what}");
        assert_eq!(line["severity_number"], want.severity_number, "{what}");
    }
    assert_eq!(line["body"], want.body.as_str(), "{what}");
    if want.time_unix_nano == 0 {
        assert!(line["timestamp"].is_null(), "{what}: {line}");
    } else {
        let t: jiff::Timestamp = line["timestamp"].as_str().unwrap().parse().unwrap();
        assert_eq!(t.as_nanosecond() as u64, want.time_unix_nano, "{what}");
    }
}

fn project_fixtures() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/events");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json" || e == "yaml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 5,
        "project fixtures missing in {}",
        dir.display()
    );
    files
}

/// The Events as the simulator serves them through core/v1, by uid.
fn served_core_v1(sim: &RunningSim) -> BTreeMap<String, Value> {
    let (status, body) = http_get(sim.addr(), "/api/v1/events").unwrap();
    assert_eq!(status, 200);
    let list: Value = serde_json::from_str(&body).unwrap();
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ev| (go_str(ev, &["metadata", "uid"]), ev.clone()))
        .collect()
}

async fn sim_with(files: Vec<PathBuf>) -> RunningSim {
    RunningSim::start(
        SimOptions {
            load: files,
            ..SimOptions::quiet()
        },
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .unwrap()
}

/// herald reading `api` from `sim`, exporting to a new receiver and writing JSON lines to a pipe.
async fn export_all(sim: &RunningSim, api: &str) -> (Receiver, Herald, Arc<Mutex<Vec<Value>>>) {
    let rx = Receiver::start(true, SocketAddr::from(([127, 0, 0, 1], 0))).await;
    let config = format!(
        "{}dedup:\n  enabled: false\n",
        otlp_config(&rx.url(), "grpc", "    cluster_name: test-cluster\n")
            .replace("json:\n    enabled: false", "json:\n    enabled: true")
    );
    let mut herald = start_herald_with(
        &sim.url(),
        &config,
        Stdio::piped(),
        &["--events-api", api],
        &[("NODE_NAME", "agent-node")],
    );
    let lines = Arc::new(Mutex::new(Vec::new()));
    let stdout = herald.child.stdout.take().unwrap();
    let out = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            out.lock()
                .unwrap()
                .push(serde_json::from_str::<Value>(&line).unwrap());
        }
    });
    (rx, herald, lines)
}

/// Every Event of `sim`, read through `api` by herald, arrives with the receiver's record (and the JSON line
/// carries the same). Returns the records by uid for spot checks.
async fn check_every_event(sim: &RunningSim, api: &str) -> BTreeMap<String, common::otlp::Record> {
    let served = served_core_v1(sim);
    assert!(!served.is_empty());
    let (rx, _herald, lines) = export_all(sim, api).await;
    rx.wait_records(served.len()).await;
    // A short grace period: nothing more may arrive.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let records = rx.records();
    assert_eq!(records.len(), served.len(), "one record per Event ({api})");
    let by_uid: BTreeMap<String, common::otlp::Record> = records
        .into_iter()
        .map(|r| (r.str("k8s.event.uid").to_string(), r))
        .collect();
    for (uid, ev) in &served {
        let what = format!("{api} {}", go_str(ev, &["metadata", "name"]));
        let want = receiver_record(ev);
        let got = by_uid
            .get(uid)
            .unwrap_or_else(|| panic!("{what}: no record"));
        assert_receiver_shape(got, &want, &what);
        assert_eq!(
            got.resource["k8s.cluster.name"],
            Attr::Str("test-cluster".into())
        );
        let api_version = if api == "core/v1" { "v1" } else { api };
        assert_eq!(got.str("herald.event.api_version"), api_version);
    }
    wait_until(Duration::from_secs(10), "every JSON line", || {
        lines.lock().unwrap().len() >= served.len()
    });
    let lines = lines.lock().unwrap();
    assert_eq!(lines.len(), served.len());
    for (uid, ev) in &served {
        let what = format!("JSON {api} {}", go_str(ev, &["metadata", "name"]));
        let line = lines
            .iter()
            .find(|l| l["k8s.event.uid"] == uid.as_str())
            .unwrap_or_else(|| panic!("{what}: no line"));
        assert_json_line(line, &receiver_record(ev), &what);
    }
    by_uid
}

/// The project's fixtures (new-style, old-style, scheduler and events.k8s.io/v1 Events in the shapes real API
/// servers return): the record herald sends, over either Events API, is the receiver's record on every key it
/// writes, and the JSON line carries the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn project_fixtures_arrive_exactly_as_the_receiver_writes_them() {
    let sim = sim_with(project_fixtures()).await;
    let core = check_every_event(&sim, "core/v1").await;
    let v1 = check_every_event(&sim, "events.k8s.io/v1").await;
    assert_eq!(core.len(), v1.len());

    // The cases the receiver's mapping decides, written out literally.
    let s = |v: &str| Attr::Str(v.to_string());
    // Old style: no reporting fields; the receiver writes "" (not `source.component`), herald keeps its fallback.
    let backoff = &core["0b6f3d52-7a1e-4c3b-9d2f-5e8a1c4b7f30"];
    assert_eq!(backoff.attributes["k8s.event.reporting_controller"], s(""));
    assert_eq!(backoff.attributes["k8s.event.reporting_instance"], s(""));
    assert_eq!(backoff.attributes["k8s.event.count"], Attr::Int(27));
    assert_eq!(backoff.attributes["herald.event.component"], s("kubelet"));
    assert_eq!(
        backoff.attributes["k8s.event.start_time"],
        s("2021-06-14 09:21:07 +0000 UTC")
    );
    let last: jiff::Timestamp = "2021-06-14T09:26:41Z".parse().unwrap();
    assert_eq!(backoff.record.time_unix_nano, last.as_nanosecond() as u64);
    // Scheduler: `eventTime` only, no `count` (the key is left out), `source: {}` (node name "").
    let scheduled = &core["2f6c0b8e-94d1-4a3e-b7c5-8d1e0f9a6b24"];
    assert!(scheduled.attr("k8s.event.count").is_none());
    assert_eq!(scheduled.attributes["herald.event.count"], Attr::Int(1));
    assert_eq!(scheduled.resource["k8s.node.name"], s(""));
    assert_eq!(
        scheduled.attributes["k8s.event.reporting_controller"],
        s("default-scheduler")
    );
    let at: jiff::Timestamp = "2026-03-02T16:40:05.318274Z".parse().unwrap();
    assert_eq!(scheduled.record.time_unix_nano, at.as_nanosecond() as u64);
    // A series without `count`: no `k8s.event.count`; the series is herald's own.
    let failed = &core["b93e5f20-1c7d-48a6-9e3b-0f4a8d2c6e71"];
    assert!(failed.attr("k8s.event.count").is_none());
    assert_eq!(failed.attributes["herald.event.series.count"], Attr::Int(6));
    // Both `count` and `series.count`: the receiver writes `count`; lower-case type kept verbatim.
    let both = &core["6d2b8f4e-0a9c-4e17-93b5-f1c7e3a0d982"];
    assert_eq!(both.attributes["k8s.event.count"], Attr::Int(4));
    assert_eq!(both.attributes["herald.event.count"], Attr::Int(9));
    assert_eq!(
        (
            both.record.severity_number,
            both.record.severity_text.as_str()
        ),
        (13, "warning")
    );
    // Unknown type: no severity at all; the type is kept under herald's key.
    let info = &core["0e9d4b7c-3a1f-42c8-95e6-b8f2a0d7c164"];
    assert_eq!(
        (
            info.record.severity_number,
            info.record.severity_text.as_str()
        ),
        (0, "")
    );
    assert_eq!(info.attributes["herald.event.type"], s("Info"));
    // A Node Event whose involvedObject has no apiVersion nor namespace.
    let node = &core["e3a9c1d4-58b2-4f07-a6e1-2c9d8b7f0a15"];
    assert_eq!(node.resource["k8s.object.api_version"], s(""));
    assert_eq!(node.attributes["k8s.namespace.name"], s(""));
    assert_eq!(node.attributes["herald.event.namespace"], s("default"));
    // events.k8s.io/v1 as written: `reportingController`; legacy seen through v1: "" and `deprecatedCount`.
    let scaled = &v1["3c8e1f6a-d4b9-4072-8a5e-c0f7b2d9e148"];
    assert_eq!(
        scaled.attributes["k8s.event.reporting_controller"],
        s("deployment-controller")
    );
    assert!(scaled.attr("k8s.event.count").is_none());
    assert_eq!(
        scaled.attributes["herald.event.related.name"],
        s("frontend-5c7b9d8f6")
    );
    let pulling = &v1["9a5d2e7f-b1c8-4e36-8f04-d6a3c9e1b752"];
    assert_eq!(pulling.attributes["k8s.event.reporting_controller"], s(""));
    assert_eq!(pulling.attributes["k8s.event.count"], Attr::Int(1));
    assert_eq!(pulling.resource["k8s.node.name"], s("worker-a3"));
    assert_eq!(pulling.attributes["herald.event.component"], s("kubelet"));
    sim.shutdown().await;
}

/// The same contract over the real objects in `../shared/fixtures` (an extra layer: skipped with a visible
/// note when the folder is absent, failing under CI). Core/v1 files are read through core/v1, the
/// events.k8s.io/v1 files through that API, each folder in its own simulator (the fuzz objects share a name).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_fixtures_arrive_exactly_as_the_receiver_writes_them() {
    let Some(dir) = common::fixtures::shared_fixtures() else {
        return;
    };
    for (folder, api) in [("events", "core/v1"), ("events-v1", "events.k8s.io/v1")] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join(folder))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{folder} is empty");
        let sim = sim_with(files).await;
        let records = check_every_event(&sim, api).await;
        assert!(records.len() >= 2, "{folder}");
        sim.shutdown().await;
    }
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_protobuf_with_gzip_headers_severities_and_grouping() {
    let sim = quiet_sim().await;
    let api: Api<Event> = Api::namespaced(client(&sim), "default");
    let pp = PostParams::default();
    // Created before herald starts and replayed, so they arrive in one batch.
    for (name, pod, type_) in [
        ("a-normal", "web", "Normal"),
        ("b-warning", "web", "Warning"),
        ("c-error", "db", "Error"),
        ("d-critical", "db", "Critical"),
        ("e-other", "db", "Unusual"),
    ] {
        api.create(&pp, &event(name, pod, type_)).await.unwrap();
    }
    let rx = Receiver::start(false, SocketAddr::from(([127, 0, 0, 1], 0))).await;
    let dir = tempfile::tempdir().unwrap();
    let headers_file = dir.path().join("token");
    std::fs::write(&headers_file, "authorization=Bearer from-file\n").unwrap();
    let extra = format!(
        "    compression: gzip\n    batch_interval: 1s\n    headers_file: {}\n    headers: {{X-Scope-OrgID: team-a}}\n",
        headers_file.display()
    );
    let config = otlp_config(&rx.url(), "http/protobuf", &extra);
    let _herald = start_herald_with(
        &sim.url(),
        &config,
        Stdio::null(),
        &[],
        &[("OTEL_EXPORTER_OTLP_HEADERS", "x-extra=from%20env")],
    );
    rx.wait_records(5).await;

    let requests = rx.requests();
    assert_eq!(requests.len(), 1, "one batch");
    let req = &requests[0];
    assert!(req.gzip);
    assert_eq!(req.headers["authorization"], "Bearer from-file");
    assert_eq!(req.headers["x-scope-orgid"], "team-a");
    assert_eq!(req.headers["x-extra"], "from env");
    // Two involved objects: two resources.
    assert_eq!(req.request.resource_logs.len(), 2);
    let severities: Vec<(String, i32)> = rx
        .records()
        .iter()
        .map(|r| (r.record.severity_text.clone(), r.record.severity_number))
        .collect();
    for want in [
        ("Normal", 9),
        ("Warning", 13),
        ("Error", 17),
        ("Critical", 21),
        ("", 0),
    ] {
        assert!(
            severities.contains(&(want.0.to_string(), want.1)),
            "{severities:?}"
        );
    }
    sim.shutdown().await;
}

/// Down at start, refusing with UNAVAILABLE and 429, going down mid-stream, slow: herald never crashes,
/// counts what it could not deliver, and recovers by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outages_and_refusals_are_retried_counted_and_recovered() {
    for grpc in [true, false] {
        let sim = quiet_sim().await;
        let api: Api<Event> = Api::namespaced(client(&sim), "default");
        let pp = PostParams::default();
        let addr = free_addr();
        let protocol = if grpc { "grpc" } else { "http/protobuf" };
        let config = otlp_config(
            &format!("http://{addr}"),
            protocol,
            "    max_retries: 2\n    timeout: 1s\n",
        );
        let herald = start_herald(&sim.url(), &config, Stdio::null(), &[]);
        let sink = [("sink", "otlp")];

        // Each record is about its own pod, so none is a duplicate of another.
        // Down at start: retries, then the batch is counted as failed; herald stays up.
        api.create(&pp, &event("lost-1", "lost-1", "Warning"))
            .await
            .unwrap();
        wait_until(Duration::from_secs(20), "failure counted", || {
            herald.metric("herald_sink_failures_total", &sink) == 1.0
        });
        assert!(herald.metric("herald_sink_retries_total", &sink) >= 2.0);
        assert!(matches!(herald.get("/healthz"), Some((200, _))));

        // The collector comes up: the next record is delivered without a restart.
        let mut rx = Receiver::start(grpc, addr).await;
        api.create(&pp, &event("ok-1", "ok-1", "Normal"))
            .await
            .unwrap();
        rx.wait_records(1).await;
        herald.wait_metric("herald_sink_sent_total", &sink, 1.0);
        herald.wait_ready();

        // UNAVAILABLE then 429 (Retry-After 1s): retried within the budget, delivered once.
        rx.answer_next(&[Answer::Unavailable, Answer::TooMany { retry_after: 1 }]);
        api.create(&pp, &event("ok-2", "ok-2", "Normal"))
            .await
            .unwrap();
        rx.wait_records(2).await;
        herald.wait_metric("herald_sink_sent_total", &sink, 2.0);
        assert_eq!(rx.refused(), 2);

        // Slow collector (under the timeout): delivered.
        rx.set_delay(Duration::from_millis(300));
        api.create(&pp, &event("ok-3", "ok-3", "Normal"))
            .await
            .unwrap();
        rx.wait_records(3).await;
        rx.set_delay(Duration::ZERO);

        // Down mid-stream: counted as failed, then recovers when it is back.
        rx.stop().await;
        api.create(&pp, &event("lost-2", "lost-2", "Warning"))
            .await
            .unwrap();
        wait_until(Duration::from_secs(20), "second failure counted", || {
            herald.metric("herald_sink_failures_total", &sink) == 2.0
        });
        let rx = Receiver::start_with(grpc, addr, rx.state.clone()).await;
        api.create(&pp, &event("ok-4", "ok-4", "Normal"))
            .await
            .unwrap();
        rx.wait_records(4).await;
        herald.wait_metric("herald_sink_sent_total", &sink, 4.0);
        let names: Vec<String> = rx
            .records()
            .iter()
            .map(|r| r.str("k8s.event.name").to_string())
            .collect();
        assert_eq!(names, ["ok-1", "ok-2", "ok-3", "ok-4"], "{protocol}");
        // The other sinks never noticed.
        assert_eq!(
            herald.metric("herald_queue_dropped_total", &[("queue", "metrics")]),
            0.0
        );
        assert_eq!(herald.metric("herald_event_occurrences_total", &[]), 6.0);
        sim.shutdown().await;
    }
}

/// `log.otlp: true` also sends herald's own diagnostics, under the scope `herald.diagnostics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_diagnostics_can_go_to_the_collector_too() {
    let sim = quiet_sim().await;
    let rx = Receiver::start(true, SocketAddr::from(([127, 0, 0, 1], 0))).await;
    let config = format!("{}log:\n  otlp: true\n", otlp_config(&rx.url(), "grpc", ""));
    let _herald = start_herald_with(
        &sim.url(),
        &config,
        Stdio::null(),
        &[],
        &[("HERALD_LOG_LEVEL", "info")],
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let started = rx.requests().iter().any(|req| {
            req.request.resource_logs.iter().flat_map(|r| &r.scope_logs).any(|s| {
                s.scope.as_ref().is_some_and(|sc| sc.name == "herald.diagnostics")
                    && s.log_records.iter().any(|l| {
                        l.severity_text == "INFO"
                            && matches!(&l.body, Some(b) if format!("{b:?}").contains("herald started"))
                    })
            })
        });
        if started {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no diagnostics arrived"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sim.shutdown().await;
}
